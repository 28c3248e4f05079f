//! Report SQL, on the read pool (the replica once it has replayed what this process committed, see
//! `store::replica`; else the primary): a wallet's balance at an instant, from its ledger; a company's budgets.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_actors::store::StoreError;

use super::read::col;
use super::replica::ReadScope;
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
        let c = self.read_client(ReadScope::Wallets(&[wallet_id])).await?;
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
    /// The budget's wallet's currency (its amounts are in it).
    pub currency: String,
}

/// The budget report, or why it cannot be answered whole.
pub type BudgetReport = Report<BudgetReportRow>;

impl PgStore {
    /// The budgets of a company's wallets (or of one user's) whose period holds `as_of`, highest
    /// utilisation first.
    pub async fn budget_report(
        &self,
        company_id: Uuid,
        user_id: Option<Uuid>,
        as_of: chrono::NaiveDate,
    ) -> Result<BudgetReport, StoreError> {
        let c = self.read_client(ReadScope::Everything).await?;
        let columns: Vec<String> = super::budgets::BUDGET_COLUMNS
            .split(',')
            .map(|col| format!("b.{}", col.trim()))
            .collect();
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {}, w.user_id AS owner, w.currency::text AS wallet_currency FROM budgets b JOIN wallets w USING (wallet_id) JOIN users u ON u.user_id = w.user_id \
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
        bounded(&rows, MAX_BUDGET_REPORT_ROWS, |r| {
            Ok(BudgetReportRow {
                budget: super::budgets::budget_from_row(r)?,
                user_id: col(r, "owner")?,
                currency: col(r, "wallet_currency")?,
            })
        })
    }
}

/// Who a report covers: a company, or one user of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportScope {
    pub company_id: Uuid,
    pub user_id: Option<Uuid>,
}

/// Most rows a spend, transaction or wallet report answers; one that would have more is refused (never cut
/// short).
pub const MAX_REPORT_ROWS: i64 = 10_000;

/// A report's rows, or why it cannot be answered whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report<T> {
    Rows(Vec<T>),
    TooMany,
}

/// Rows read with a limit of one more than `max`: the report, or `TooMany` when that one more came back.
pub(super) fn bounded<T>(
    rows: &[tokio_postgres::Row],
    max: i64,
    row: impl Fn(&tokio_postgres::Row) -> Result<T, StoreError>,
) -> Result<Report<T>, StoreError> {
    if rows.len() as i64 > max {
        return Ok(Report::TooMany);
    }
    rows.iter().map(row).collect::<Result<Vec<_>, _>>().map(Report::Rows)
}

/// One ledger row of a company's latest transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestTxn {
    pub txn_id: Uuid,
    pub wallet_id: Uuid,
    pub user_id: Uuid,
    pub kind: String,
    pub amount: Decimal,
    pub currency: String,
    pub status: String,
    pub description: Option<String>,
    pub reference_id: Option<String>,
    pub reference_type: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// One wallet of the wallet report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletReportRow {
    pub wallet_id: Uuid,
    pub user_id: Uuid,
    pub status: String,
    pub balance: Decimal,
    pub currency: String,
    pub updated_at: Option<DateTime<Utc>>,
}

impl PgStore {
    /// A company's (or a user's) latest ledger rows, newest first: each wallet's newest `limit` rows through
    /// its `(wallet_id, created_at DESC, txn_id DESC)` index, merged.
    pub async fn latest_transactions(&self, scope: ReportScope, limit: i64) -> Result<Vec<LatestTxn>, StoreError> {
        let c = self.read_client(ReadScope::Everything).await?;
        let stmt = c
            .prepare_cached(
                "SELECT t.txn_id, t.wallet_id, w.user_id, t.type::text AS kind, t.amount, w.currency::text AS currency, \
                        t.status::text AS status, t.description, t.reference_id::text AS reference_id, \
                        t.reference_type::text AS reference_type, t.created_at \
                   FROM users u JOIN wallets w ON w.user_id = u.user_id \
                  CROSS JOIN LATERAL (SELECT * FROM transactions x WHERE x.wallet_id = w.wallet_id \
                                       ORDER BY x.created_at DESC, x.txn_id DESC LIMIT $3) t \
                  WHERE u.company_id = $1 AND ($2::uuid IS NULL OR u.user_id = $2) \
                  ORDER BY t.created_at DESC, t.txn_id DESC LIMIT $3",
            )
            .await
            .map_err(unavailable)?;
        let rows = c
            .query(&stmt, &[&scope.company_id, &scope.user_id, &limit])
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(LatestTxn {
                    txn_id: col(r, "txn_id")?,
                    wallet_id: col(r, "wallet_id")?,
                    user_id: col(r, "user_id")?,
                    kind: col(r, "kind")?,
                    amount: col(r, "amount")?,
                    currency: col(r, "currency")?,
                    status: col(r, "status")?,
                    description: col(r, "description")?,
                    reference_id: col(r, "reference_id")?,
                    reference_type: col(r, "reference_type")?,
                    created_at: col(r, "created_at")?,
                })
            })
            .collect()
    }

    /// A company's (or a user's) wallets whose status is one of `statuses`.
    pub async fn wallet_report(
        &self,
        scope: ReportScope,
        statuses: &[&str],
    ) -> Result<Report<WalletReportRow>, StoreError> {
        let c = self.read_client(ReadScope::Everything).await?;
        let stmt = c
            .prepare_cached(
                "SELECT w.wallet_id, w.user_id, w.status::text AS status, w.balance, w.currency::text AS currency, \
                        w.updated_at \
                   FROM users u JOIN wallets w ON w.user_id = u.user_id \
                  WHERE u.company_id = $1 AND ($2::uuid IS NULL OR u.user_id = $2) AND w.status = ANY($3::text[]) \
                  ORDER BY w.updated_at DESC NULLS LAST, w.wallet_id LIMIT $4",
            )
            .await
            .map_err(unavailable)?;
        let limit = MAX_REPORT_ROWS + 1;
        let rows = c
            .query(&stmt, &[&scope.company_id, &scope.user_id, &statuses, &limit])
            .await
            .map_err(unavailable)?;
        bounded(&rows, MAX_REPORT_ROWS, |r| {
            Ok(WalletReportRow {
                wallet_id: col(r, "wallet_id")?,
                user_id: col(r, "user_id")?,
                status: col(r, "status")?,
                balance: col(r, "balance")?,
                currency: col(r, "currency")?,
                updated_at: col(r, "updated_at")?,
            })
        })
    }
}
