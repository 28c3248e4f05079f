//! `GET /reports/spend`, `GET /reports/transactions`, `GET /reports/wallets`: a company's (or a user's)
//! spend from the daily aggregates, its latest ledger rows, its wallets by status. JSON, or CSV with the
//! same columns to `Accept: text/csv`; scoped like wallet reads (`Service::report_scope`).

use std::collections::BTreeMap;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use warp::reply::Response;

use super::{Tabular, report_reply};
use crate::http::handlers::{authenticate, parse_query};
use crate::http::problem::ApiError;
use crate::http::{Ctx, RawHeader};
use crate::service::reports::{MAX_LATEST_TRANSACTIONS, MAX_SPEND_REPORT_DAYS};
use crate::store::{MAX_REPORT_ROWS, Report, SpendGrouping, SpendRow};

/// Rows of `GET /reports/transactions` when `limit` is not given.
const DEFAULT_LATEST_TRANSACTIONS: i64 = 20;
/// The wallet statuses `GET /reports/wallets` filters on.
const WALLET_STATUSES: [&str; 3] = ["ACTIVE", "FROZEN", "CLOSED"];

fn money(d: Decimal) -> String {
    format!("{:.2}", d.round_dp(2))
}

fn too_many() -> ApiError {
    ApiError::validation(
        "company_id",
        format!("the report would have more than {MAX_REPORT_ROWS} rows; narrow it (it is never cut short)"),
    )
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SpendQuery {
    /// First day covered (ISO 8601 date, UTC), inclusive.
    pub from: Option<chrono::NaiveDate>,
    /// Last day covered (ISO 8601 date, UTC), inclusive; at most 366 days after `from`.
    pub to: Option<chrono::NaiveDate>,
    /// `day`, `week` (ISO week, `2026-W49`), `month`, `user` or `type`.
    #[param(example = "month")]
    pub group_by: Option<String>,
    /// The company (required for admin and service callers; another company is 404 for managers and users).
    pub company_id: Option<Uuid>,
    /// One user of the company (a user may name only themselves).
    pub user_id: Option<Uuid>,
}

/// Figures of one key and currency (or the totals of one currency).
#[derive(Debug, Serialize, ToSchema)]
pub struct SpendFigures {
    #[schema(value_type = crate::schema::enums::Currency)]
    pub currency: String,
    /// DEBIT and TRANSFER_OUT rows: what left the wallets.
    #[schema(value_type = crate::schema::Money)]
    pub debits: String,
    /// CREDIT rows that are not refunds, and TRANSFER_IN rows.
    #[schema(value_type = crate::schema::Money)]
    pub credits: String,
    /// CREDIT rows carrying the reference of a debit of the same wallet.
    #[schema(value_type = crate::schema::Money)]
    pub refunds: String,
    /// `credits + refunds - debits`: what the rows moved the balances by (negative when more was spent).
    #[schema(example = "-125.50")]
    pub net: String,
    /// Ledger rows covered.
    pub count: i64,
}

/// One row of the spend report.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpendRowView {
    /// The day (`2026-12-06`), ISO week (`2026-W49`), month (`2026-12`), user id, or kind (`DEBIT`,
    /// `CREDIT`, `REFUND`, `TRANSFER_IN`, `TRANSFER_OUT`).
    pub key: String,
    #[serde(flatten)]
    pub figures: SpendFigures,
}

/// `GET /reports/spend`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpendReportView {
    pub from: chrono::NaiveDate,
    pub to: chrono::NaiveDate,
    pub group_by: String,
    pub rows: Vec<SpendRowView>,
    /// One per currency: the sums of the rows.
    pub totals: Vec<SpendFigures>,
}

#[derive(Default)]
struct Sums {
    debits: Decimal,
    credits: Decimal,
    refunds: Decimal,
    count: i64,
}

impl Sums {
    fn add(&mut self, r: &SpendRow) {
        self.debits += r.debits;
        self.credits += r.credits;
        self.refunds += r.refunds;
        self.count += r.count;
    }

    fn figures(&self, currency: &str) -> SpendFigures {
        SpendFigures {
            currency: currency.to_string(),
            debits: money(self.debits),
            credits: money(self.credits),
            refunds: money(self.refunds),
            net: money(self.credits + self.refunds - self.debits),
            count: self.count,
        }
    }
}

fn grouping(v: Option<&str>) -> Result<(String, SpendGrouping), ApiError> {
    let v = v.ok_or_else(|| ApiError::validation("group_by", "is required: day, week, month, user or type"))?;
    SpendGrouping::ALL
        .iter()
        .find(|(name, _)| *name == v)
        .map(|(name, g)| (name.to_string(), *g))
        .ok_or_else(|| ApiError::validation("group_by", "must be one of day, week, month, user, type"))
}

/// Spend between two dates, grouped, from the folded aggregates and the ledger's unfolded tail.
#[utoipa::path(get, path = "/reports/spend", tag = "reports", operation_id = "spendReport",
    params(SpendQuery),
    responses((status = 200, description = "Spend by key and currency with per-currency totals (JSON, or CSV to \
                 `Accept: text/csv` with the row columns `key,currency,debits,credits,refunds,net,count`)",
                 content((SpendReportView = "application/json"), (String = "text/csv"))),
              (status = 400, description = "VALIDATION_FAILED: a missing or bad parameter, `to` before `from` or more than \
                 366 days after it, no company_id from an admin, or more than 10000 rows (never cut short)"),
              (status = 404, description = "NOT_FOUND: a company or user the caller may not see")))]
pub async fn spend(ctx: Arc<Ctx>, auth: RawHeader, accept: RawHeader, query: String) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let q: SpendQuery = parse_query(&query)?;
    let from = q
        .from
        .ok_or_else(|| ApiError::validation("from", "is required (a date)"))?;
    let to = q.to.ok_or_else(|| ApiError::validation("to", "is required (a date)"))?;
    if to < from {
        return Err(ApiError::validation("to", "must not be before from"));
    }
    if (to - from).num_days() > MAX_SPEND_REPORT_DAYS {
        return Err(ApiError::validation(
            "to",
            format!("must be at most {MAX_SPEND_REPORT_DAYS} days after from"),
        ));
    }
    let (group_by, g) = grouping(q.group_by.as_deref())?;
    let scope = ctx.service.report_scope(&caller, q.company_id, q.user_id).await?;
    let Report::Rows(rows) = ctx.service.spend_report(scope, from, to, g).await? else {
        return Err(too_many());
    };
    let mut totals: BTreeMap<&str, Sums> = BTreeMap::new();
    for r in &rows {
        totals.entry(r.currency.as_str()).or_default().add(r);
    }
    let view = SpendReportView {
        from,
        to,
        group_by,
        rows: rows
            .iter()
            .map(|r| {
                let mut one = Sums::default();
                one.add(r);
                SpendRowView {
                    key: r.key.clone(),
                    figures: one.figures(&r.currency),
                }
            })
            .collect(),
        totals: totals.iter().map(|(c, s)| s.figures(c)).collect(),
    };
    Ok(report_reply(&accept, &view))
}

impl Tabular for SpendReportView {
    const COLUMNS: &'static [&'static str] = &["key", "currency", "debits", "credits", "refunds", "net", "count"];

    fn rows(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|r| {
                let f = &r.figures;
                vec![
                    r.key.clone(),
                    f.currency.clone(),
                    f.debits.clone(),
                    f.credits.clone(),
                    f.refunds.clone(),
                    f.net.clone(),
                    f.count.to_string(),
                ]
            })
            .collect()
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LatestQuery {
    /// The company (required for admin and service callers).
    pub company_id: Option<Uuid>,
    /// One user of the company.
    pub user_id: Option<Uuid>,
    /// Rows, 1–100 (default 20).
    pub limit: Option<i64>,
}

/// One row of `GET /reports/transactions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatestTxnView {
    pub txn_id: Uuid,
    pub wallet_id: Uuid,
    pub user_id: Uuid,
    #[serde(rename = "type")]
    #[schema(value_type = crate::schema::enums::TransactionType)]
    pub kind: String,
    #[schema(value_type = crate::schema::Money)]
    pub amount: String,
    #[schema(value_type = crate::schema::enums::Currency)]
    pub currency: String,
    pub status: String,
    pub description: Option<String>,
    pub reference_id: Option<String>,
    pub reference_type: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `GET /reports/transactions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatestTxnsView {
    pub rows: Vec<LatestTxnView>,
}

/// The newest ledger rows of a company (or a user), newest first.
#[utoipa::path(get, path = "/reports/transactions", tag = "reports", operation_id = "latestTransactions",
    params(LatestQuery),
    responses((status = 200, description = "The newest ledger rows, newest first (JSON, or CSV to `Accept: text/csv` \
                 with the row columns)",
                 content((LatestTxnsView = "application/json"), (String = "text/csv"))),
              (status = 400, description = "VALIDATION_FAILED: a bad parameter, or no company_id from an admin"),
              (status = 404, description = "NOT_FOUND: a company or user the caller may not see")))]
pub async fn latest_transactions(
    ctx: Arc<Ctx>,
    auth: RawHeader,
    accept: RawHeader,
    query: String,
) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let q: LatestQuery = parse_query(&query)?;
    let limit = q.limit.unwrap_or(DEFAULT_LATEST_TRANSACTIONS);
    if !(1..=MAX_LATEST_TRANSACTIONS).contains(&limit) {
        return Err(ApiError::validation(
            "limit",
            format!("must be between 1 and {MAX_LATEST_TRANSACTIONS}"),
        ));
    }
    let scope = ctx.service.report_scope(&caller, q.company_id, q.user_id).await?;
    let rows = ctx.service.latest_transactions(scope, limit).await?;
    let view = LatestTxnsView {
        rows: rows
            .into_iter()
            .map(|t| LatestTxnView {
                txn_id: t.txn_id,
                wallet_id: t.wallet_id,
                user_id: t.user_id,
                kind: t.kind,
                amount: money(t.amount),
                currency: t.currency,
                status: t.status,
                description: t.description,
                reference_id: t.reference_id,
                reference_type: t.reference_type,
                created_at: crate::views::ts(t.created_at),
            })
            .collect(),
    };
    Ok(report_reply(&accept, &view))
}

impl Tabular for LatestTxnsView {
    const COLUMNS: &'static [&'static str] = &[
        "txn_id",
        "wallet_id",
        "user_id",
        "type",
        "amount",
        "currency",
        "status",
        "description",
        "reference_id",
        "reference_type",
        "created_at",
    ];

    fn rows(&self) -> Vec<Vec<String>> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        self.rows
            .iter()
            .map(|r| {
                vec![
                    r.txn_id.to_string(),
                    r.wallet_id.to_string(),
                    r.user_id.to_string(),
                    r.kind.clone(),
                    r.amount.clone(),
                    r.currency.clone(),
                    r.status.clone(),
                    opt(&r.description),
                    opt(&r.reference_id),
                    opt(&r.reference_type),
                    r.created_at.clone(),
                ]
            })
            .collect()
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WalletReportQuery {
    /// The company (required for admin and service callers).
    pub company_id: Option<Uuid>,
    /// One user of the company.
    pub user_id: Option<Uuid>,
    /// Comma-separated statuses (`ACTIVE`, `FROZEN`, `CLOSED`); default all three.
    #[param(example = "FROZEN,CLOSED")]
    pub status: Option<String>,
}

/// One row of `GET /reports/wallets`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WalletReportRowView {
    pub wallet_id: Uuid,
    pub user_id: Uuid,
    #[schema(value_type = crate::schema::enums::WalletStatus)]
    pub status: String,
    #[schema(value_type = crate::schema::Money)]
    pub balance: String,
    #[schema(value_type = crate::schema::enums::Currency)]
    pub currency: String,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

/// `GET /reports/wallets`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WalletReportView {
    pub rows: Vec<WalletReportRowView>,
}

fn statuses(v: Option<&str>) -> Result<Vec<&'static str>, ApiError> {
    let Some(v) = v else {
        return Ok(WALLET_STATUSES.to_vec());
    };
    let mut out = vec![];
    for s in v.split(',').map(str::trim) {
        let known = WALLET_STATUSES
            .iter()
            .find(|k| **k == s)
            .ok_or_else(|| ApiError::validation("status", "must list ACTIVE, FROZEN or CLOSED, comma-separated"))?;
        if !out.contains(known) {
            out.push(*known);
        }
    }
    Ok(out)
}

/// A company's (or a user's) wallets with the given statuses, most recently changed first.
#[utoipa::path(get, path = "/reports/wallets", tag = "reports", operation_id = "walletReport",
    params(WalletReportQuery),
    responses((status = 200, description = "The wallets (JSON, or CSV to `Accept: text/csv` with the row columns)",
                 content((WalletReportView = "application/json"), (String = "text/csv"))),
              (status = 400, description = "VALIDATION_FAILED: a bad parameter, no company_id from an admin, or more than \
                 10000 rows (never cut short)"),
              (status = 404, description = "NOT_FOUND: a company or user the caller may not see")))]
pub async fn wallets(ctx: Arc<Ctx>, auth: RawHeader, accept: RawHeader, query: String) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let q: WalletReportQuery = parse_query(&query)?;
    let wanted = statuses(q.status.as_deref())?;
    let scope = ctx.service.report_scope(&caller, q.company_id, q.user_id).await?;
    let Report::Rows(rows) = ctx.service.wallet_report(scope, &wanted).await? else {
        return Err(too_many());
    };
    let view = WalletReportView {
        rows: rows
            .into_iter()
            .map(|w| WalletReportRowView {
                wallet_id: w.wallet_id,
                user_id: w.user_id,
                status: w.status,
                balance: money(w.balance),
                currency: w.currency,
                updated_at: w.updated_at.map(crate::views::ts),
            })
            .collect(),
    };
    Ok(report_reply(&accept, &view))
}

impl Tabular for WalletReportView {
    const COLUMNS: &'static [&'static str] = &["wallet_id", "user_id", "status", "balance", "currency", "updated_at"];

    fn rows(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|r| {
                vec![
                    r.wallet_id.to_string(),
                    r.user_id.to_string(),
                    r.status.clone(),
                    r.balance.clone(),
                    r.currency.clone(),
                    r.updated_at.clone().unwrap_or_default(),
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_list_is_checked_and_deduplicated() {
        assert_eq!(statuses(None).ok(), Some(WALLET_STATUSES.to_vec()));
        assert_eq!(
            statuses(Some("FROZEN, CLOSED,FROZEN")).ok(),
            Some(vec!["FROZEN", "CLOSED"])
        );
        assert!(statuses(Some("frozen")).is_err());
        assert!(statuses(Some("")).is_err());
    }

    #[test]
    fn net_is_what_the_rows_moved_the_balances_by() {
        let mut s = Sums::default();
        s.add(&SpendRow {
            key: "k".into(),
            currency: "USD".into(),
            debits: Decimal::new(12550, 2),
            credits: Decimal::new(10000, 2),
            refunds: Decimal::new(550, 2),
            count: 3,
        });
        let f = s.figures("USD");
        assert_eq!((f.debits.as_str(), f.net.as_str(), f.count), ("125.50", "-20.00", 3));
    }

    #[test]
    fn group_by_names_one_of_five_groupings() {
        assert_eq!(grouping(Some("week")).ok().map(|g| g.1), Some(SpendGrouping::Week));
        assert!(grouping(Some("year")).is_err());
        assert!(grouping(None).is_err());
    }
}
