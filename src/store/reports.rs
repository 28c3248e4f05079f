//! Report SQL, on the read pool: a wallet's balance at an instant, from its ledger; a company's budgets.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_actors::store::StoreError;

use super::read::col;
use super::{PgStore, unavailable};

/// What a wallet held at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalanceAt {
    /// No such wallet.
    NoWallet,
    /// The instant is before the wallet existed.
    BeforeCreation { created_at: DateTime<Utc> },
    /// The balance after the last ledger row at or before the instant (or the initial balance before any).
    Balance(Decimal),
}

impl PgStore {
    /// The wallet's balance as it stood at `at`: the `balance_after` of its last ledger row at or before it,
    /// found through the `(wallet_id, created_at DESC, txn_id DESC)` index (one row read, however long the
    /// history), never a sum.
    pub async fn balance_at(&self, wallet_id: Uuid, at: DateTime<Utc>) -> Result<BalanceAt, StoreError> {
        let c = self.read.get().await.map_err(unavailable)?;
        let wallet = c
            .prepare_cached("SELECT initial_balance, created_at FROM wallets WHERE wallet_id = $1")
            .await
            .map_err(unavailable)?;
        let last = c
            .prepare_cached(
                "SELECT balance_after FROM transactions WHERE wallet_id = $1 AND created_at <= $2 \
                 ORDER BY created_at DESC, txn_id DESC LIMIT 1",
            )
            .await
            .map_err(unavailable)?;
        let one: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&wallet_id];
        let two: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&wallet_id, &at];
        let (w, row) = tokio::join!(c.query_opt(&wallet, &one), c.query_opt(&last, &two));
        let Some(w) = w.map_err(unavailable)? else {
            return Ok(BalanceAt::NoWallet);
        };
        if let Some(r) = row.map_err(unavailable)? {
            return Ok(BalanceAt::Balance(col(&r, "balance_after")?));
        }
        let created_at: Option<DateTime<Utc>> = col(&w, "created_at")?;
        if let Some(created_at) = created_at.filter(|c| at < *c) {
            return Ok(BalanceAt::BeforeCreation { created_at });
        }
        Ok(BalanceAt::Balance(col(&w, "initial_balance")?))
    }
}

/// Most rows a budget report answers; a report that would have more is refused (never cut short).
pub const MAX_BUDGET_REPORT_ROWS: i64 = 10_000;

/// One row of the budget report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetReportRow {
    pub budget: wallet_actors::Budget,
    pub user_id: Uuid,
}

/// The budget report, or why it cannot be answered whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetReport {
    Rows(Vec<BudgetReportRow>),
    TooMany,
}

impl PgStore {
    /// The budgets of a company's wallets (or of one user's) whose period holds `as_of`, highest
    /// utilisation first.
    pub async fn budget_report(
        &self,
        company_id: Uuid,
        user_id: Option<Uuid>,
        as_of: chrono::NaiveDate,
    ) -> Result<BudgetReport, StoreError> {
        let c = self.read.get().await.map_err(unavailable)?;
        let columns: Vec<String> = super::budgets::BUDGET_COLUMNS
            .split(',')
            .map(|col| format!("b.{}", col.trim()))
            .collect();
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {}, w.user_id AS owner FROM budgets b JOIN wallets w USING (wallet_id) JOIN users u ON u.user_id = w.user_id \
                  WHERE u.company_id = $1 AND ($2::uuid IS NULL OR w.user_id = $2) AND b.start_date <= $3 AND b.end_date >= $3 \
                  ORDER BY b.used_amount / b.total_amount DESC, b.budget_id LIMIT $4",
                columns.join(", ")
            ))
            .await
            .map_err(unavailable)?;
        let limit = MAX_BUDGET_REPORT_ROWS + 1;
        let rows = c
            .query(&stmt, &[&company_id, &user_id, &as_of, &limit])
            .await
            .map_err(unavailable)?;
        if rows.len() as i64 > MAX_BUDGET_REPORT_ROWS {
            return Ok(BudgetReport::TooMany);
        }
        rows.iter()
            .map(|r| {
                Ok(BudgetReportRow {
                    budget: super::budgets::budget_from_row(r)?,
                    user_id: col(r, "owner")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()
            .map(BudgetReport::Rows)
    }
}
