//! Reports as use cases, served from the read pool (`store::reports`): who a report may cover (the visibility
//! of wallet reads), a wallet's balance at an instant (the ledger's `balance_after`), the company's budgets,
//! spend from the aggregates (folded off the commit path, the newest rows read from the ledger), the latest transactions, wallets by
//! status, and the audit that recomputes the aggregates from the ledger.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;
use wallet_actors::store::StoreError;

use super::Service;
use crate::auth::{Caller, Role};
use crate::store::{
    AggregateMismatch, BalanceAt, BudgetReport, Fold, LatestTxn, Report, ReportScope, SpendGrouping, SpendRow,
    WalletReportRow,
};

/// Most days between `from` and `to` of a spend report (inclusive: a leap year).
pub const MAX_SPEND_REPORT_DAYS: i64 = 366;
/// How often each instance folds new ledger rows into the spend aggregates (one instance at a time does;
/// the others find the fold busy). A report reads the rows since the last fold from the ledger: this bounds
/// that tail to about this long's postings. Longer folds fewer times the same wallet-day rows: at 2 s over
/// 10,000 busy wallets the fold upserted about as many aggregate rows as there were postings (one run: on ÷
/// off 0.76); at 10 s a wallet's postings of those seconds are one upsert (three runs pooled: 1.02).
pub const SPEND_FOLD_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Most rows of the latest-transactions report.
pub const MAX_LATEST_TRANSACTIONS: i64 = 100;

/// Why a report's scope was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// Admin and service callers name the company they ask about.
    #[error("company_id is required for admin and service callers")]
    CompanyRequired,
    /// A company or user the caller may not see (answered exactly as a missing one).
    #[error("{0} not found")]
    NotVisible(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Service {
    /// Who a report asked for by `caller` covers: a user their own data, a manager their company (or one
    /// user of it), an admin or service caller the company they name. Anything else is `NotVisible`.
    pub async fn report_scope(
        &self,
        caller: &Caller,
        company_id: Option<Uuid>,
        user_id: Option<Uuid>,
    ) -> Result<ReportScope, ScopeError> {
        let company_id = match caller.role {
            Role::Admin | Role::Service => company_id.ok_or(ScopeError::CompanyRequired)?,
            Role::Manager | Role::User => match company_id {
                Some(c) if c != caller.company_id => return Err(ScopeError::NotVisible("company")),
                _ => caller.company_id,
            },
        };
        let user_id = match (caller.role, user_id) {
            (Role::User, Some(u)) if u != caller.user_id => return Err(ScopeError::NotVisible("user")),
            (Role::User, _) => Some(caller.user_id),
            (_, None) => None,
            (_, Some(u)) => {
                // A named user outside the company would make a silently empty report: 404 instead.
                let user = self.store.get_user(u).await?;
                if user.is_none_or(|row| row.company_id != company_id) {
                    return Err(ScopeError::NotVisible("user"));
                }
                Some(u)
            }
        };
        Ok(ReportScope { company_id, user_id })
    }

    /// The budget alert thresholds in force (`BUDGET_ALERT_THRESHOLDS`, percentages), for reports to mark.
    pub fn alert_thresholds(&self) -> &[u8] {
        &self.engine.limits().alert_thresholds
    }

    /// The wallet's balance as it stood at `at` (the ledger's `balance_after` at that instant).
    pub async fn balance_at(&self, wallet_id: Uuid, at: DateTime<Utc>) -> Result<BalanceAt, StoreError> {
        self.store.balance_at(wallet_id, at).await
    }

    /// The budgets of a company's wallets (or one user's) whose period holds `as_of`, highest utilisation
    /// first; `TooMany` rather than a partial report.
    pub async fn budget_report(&self, scope: ReportScope, as_of: NaiveDate) -> Result<BudgetReport, StoreError> {
        self.store.budget_report(scope.company_id, scope.user_id, as_of).await
    }

    /// Spend between two UTC dates (inclusive), grouped; from the aggregates and the ledger's unfolded tail.
    pub async fn spend_report(
        &self,
        scope: ReportScope,
        from: NaiveDate,
        to: NaiveDate,
        grouping: SpendGrouping,
    ) -> Result<Report<SpendRow>, StoreError> {
        assert!(from <= to, "the adapter checks the range");
        self.store.spend_report(scope, from, to, grouping).await
    }

    /// The newest ledger rows of the scope, newest first.
    pub async fn latest_transactions(&self, scope: ReportScope, limit: i64) -> Result<Vec<LatestTxn>, StoreError> {
        assert!(
            (1..=MAX_LATEST_TRANSACTIONS).contains(&limit),
            "the adapter bounds the limit"
        );
        self.store.latest_transactions(scope, limit).await
    }

    /// The scope's wallets with one of the statuses.
    pub async fn wallet_report(
        &self,
        scope: ReportScope,
        statuses: &[&str],
    ) -> Result<Report<WalletReportRow>, StoreError> {
        self.store.wallet_report(scope, statuses).await
    }

    /// Every spend aggregate (or one wallet's) recomputed from the ledger after a fold: the differences,
    /// none when they agree to the cent.
    pub async fn audit_spend_aggregates(&self, wallet_id: Option<Uuid>) -> Result<Vec<AggregateMismatch>, StoreError> {
        self.auditor().reports(wallet_id).await
    }

    /// Folds the ledger rows of every transaction finished since the last fold into the spend aggregates
    /// (`Busy` when another instance is folding). Reports are exact without it; it keeps their tail short.
    pub async fn fold_spend(&self) -> Result<Fold, StoreError> {
        crate::store::fold_spend(&self.store.pool).await
    }
}

impl From<ScopeError> for crate::problem::ApiError {
    fn from(e: ScopeError) -> Self {
        use crate::problem::ApiError;
        match e {
            ScopeError::CompanyRequired => {
                ApiError::validation("company_id", "is required for admin and service callers")
            }
            ScopeError::NotVisible(what) => ApiError::not_found(what),
            ScopeError::Store(e) => e.into(),
        }
    }
}
