//! Reports as use cases, served from the read pool (`store::reports`): so far a wallet's balance at an
//! instant, from its ledger.

use chrono::{DateTime, Utc};
use uuid::Uuid;
use wallet_actors::store::StoreError;

use super::Service;
use crate::store::{BalanceAt, BudgetReport};

impl Service {
    /// The wallet's balance as it stood at `at` (the ledger's `balance_after` at that instant).
    pub async fn balance_at(&self, wallet_id: Uuid, at: DateTime<Utc>) -> Result<BalanceAt, StoreError> {
        self.store.balance_at(wallet_id, at).await
    }

    /// The budgets of a company's wallets (or one user's) whose period holds `as_of`, highest utilisation
    /// first; `TooMany` rather than a partial report.
    pub async fn budget_report(
        &self,
        company_id: Uuid,
        user_id: Option<Uuid>,
        as_of: chrono::NaiveDate,
    ) -> Result<BudgetReport, StoreError> {
        self.store.budget_report(company_id, user_id, as_of).await
    }
}
