//! Report routes. Every report answers JSON, or CSV (a header row, then the same columns) to
//! `Accept: text/csv`. Visibility is that of wallet reads: a user their own, a manager their company's, an
//! admin any; 404 for what the caller may not see.

use std::sync::Arc;

use chrono::Utc;
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use warp::reply::Response;

use super::handlers::{authenticate, parse_bound, parse_query, visible};
use super::problem::{ApiError, json_response};
use super::{Ctx, RawHeader};
use crate::store::{BalanceAt, BudgetReport, MAX_BUDGET_REPORT_ROWS};

pub use spend::{latest_transactions, spend, wallets};

pub mod spend;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BalanceQuery {
    /// RFC 3339 timestamp (or an ISO 8601 date: its 00:00 UTC); default now. Not in the future.
    pub at: Option<String>,
}

/// `GET /wallets/{walletId}/balance`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceAtView {
    pub wallet_id: Uuid,
    #[schema(format = DateTime)]
    pub at: String,
    #[schema(value_type = crate::schema::Money)]
    pub balance: String,
}

/// Whether the caller asked for CSV.
fn wants_csv(accept: &RawHeader) -> bool {
    accept
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|m| m.trim().starts_with("text/csv")))
}

/// A CSV body: the header row and the rows, each field quoted when it needs it (RFC 4180).
fn csv(header: &[&str], rows: &[Vec<String>]) -> Response {
    let field = |f: &str| {
        if f.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", f.replace('"', "\"\""))
        } else {
            f.to_string()
        }
    };
    let mut out = header.join(",");
    out.push_str("\r\n");
    for r in rows {
        out.push_str(&r.iter().map(|f| field(f)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    let mut res = Response::new(out.into());
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    res
}

/// A report's view as a table: its CSV header row and its rows, the same columns as its JSON rows.
pub(crate) trait Tabular: Serialize {
    const COLUMNS: &'static [&'static str];
    fn rows(&self) -> Vec<Vec<String>>;
}

/// A report's reply: CSV to `Accept: text/csv`, JSON otherwise (one place for every report).
pub(crate) fn report_reply<V: Tabular>(accept: &RawHeader, view: &V) -> Response {
    if wants_csv(accept) {
        csv(V::COLUMNS, &view.rows())
    } else {
        json_response(StatusCode::OK, view)
    }
}

impl Tabular for BalanceAtView {
    const COLUMNS: &'static [&'static str] = &["wallet_id", "at", "balance"];

    fn rows(&self) -> Vec<Vec<String>> {
        vec![vec![self.wallet_id.to_string(), self.at.clone(), self.balance.clone()]]
    }
}

/// The wallet's balance as it stood at an instant, from the ledger (its last row's `balance_after`).
#[utoipa::path(get, path = "/wallets/{walletId}/balance", tag = "reports", operation_id = "balanceAt",
    params(("walletId" = Uuid, Path, description = "The wallet's id"), BalanceQuery),
    responses((status = 200, description = "The balance at that instant (JSON, or CSV to `Accept: text/csv`: \
                 `wallet_id,at,balance`)",
                 content((BalanceAtView = "application/json"), (String = "text/csv"))),
              (status = 400, description = "VALIDATION_FAILED: `at` is not a timestamp, is in the future, or is before the wallet existed"),
              (status = 404, description = "NOT_FOUND: no such wallet, or one the caller may not see")))]
pub async fn balance_at(
    ctx: Arc<Ctx>,
    auth: RawHeader,
    accept: RawHeader,
    wallet_id: Uuid,
    query: String,
) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let q: BalanceQuery = parse_query(&query)?;
    let now = Utc::now();
    let at = match q.at.as_deref() {
        Some(v) => parse_bound("at", v, false)?,
        None => now,
    };
    if at > now {
        return Err(ApiError::validation("at", "must not be in the future"));
    }
    let w = ctx
        .service
        .wallet_for_read(wallet_id)
        .await?
        .ok_or_else(|| ApiError::not_found("wallet"))?;
    visible(&caller, &w)?;
    let balance = match ctx.service.balance_at(wallet_id, at).await? {
        BalanceAt::Balance(b) => format!("{b:.2}"),
        BalanceAt::NoWallet => return Err(ApiError::not_found("wallet")),
        BalanceAt::BeforeCreation { created_at } => {
            return Err(ApiError::validation(
                "at",
                format!("is before the wallet existed ({})", crate::views::ts(created_at)),
            ));
        }
    };
    let view = BalanceAtView {
        wallet_id,
        at: crate::views::ts(at),
        balance,
    };
    Ok(report_reply(&accept, &view))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BudgetReportQuery {
    /// The company (required for admin and service callers; a manager's or user's own by default, and
    /// another company is 404 for them).
    pub company_id: Option<Uuid>,
    /// ISO 8601 date: the budgets whose period holds it (default today, UTC).
    pub as_of: Option<chrono::NaiveDate>,
}

/// One row of `GET /reports/budgets`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetReportRowView {
    pub budget_id: Uuid,
    pub wallet_id: Uuid,
    pub user_id: Uuid,
    #[schema(value_type = crate::schema::enums::PeriodType)]
    pub period_type: String,
    pub start_date: chrono::NaiveDate,
    pub end_date: chrono::NaiveDate,
    #[schema(value_type = crate::schema::Money)]
    pub total_amount: String,
    #[schema(value_type = crate::schema::Money)]
    pub used_amount: String,
    #[schema(value_type = crate::schema::Money)]
    pub held_amount: String,
    /// `used_amount / total_amount`, in percent with two decimals (held money counts as used).
    #[schema(example = "83.33")]
    pub utilisation_percent: String,
    #[schema(value_type = crate::schema::enums::BudgetStatus)]
    pub status: String,
    /// The wallet's currency, the currency of the amounts (an extension of the contract's columns).
    #[schema(value_type = crate::schema::enums::Currency)]
    pub currency: String,
}

/// `GET /reports/budgets`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetReportView {
    pub as_of: chrono::NaiveDate,
    /// The budget alert thresholds in force (`BUDGET_ALERT_THRESHOLDS`), in percent of the total.
    #[schema(example = json!([80, 100]))]
    pub alert_thresholds: Vec<u8>,
    pub rows: Vec<BudgetReportRowView>,
}

/// A company's budgets whose period holds `as_of`, highest utilisation first.
#[utoipa::path(get, path = "/reports/budgets", tag = "reports", operation_id = "budgetReport",
    params(BudgetReportQuery),
    responses((status = 200, description = "The budgets, highest utilisation first (JSON, or CSV to `Accept: text/csv` \
                 with the row columns)",
                 content((BudgetReportView = "application/json"), (String = "text/csv"))),
              (status = 400, description = "VALIDATION_FAILED: a bad query parameter, no company_id from an admin, or a \
                 report of more than 10000 rows (narrow it: it is never cut short)"),
              (status = 404, description = "NOT_FOUND: a company the caller may not see")))]
pub async fn budgets(ctx: Arc<Ctx>, auth: RawHeader, accept: RawHeader, query: String) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let q: BudgetReportQuery = parse_query(&query)?;
    let scope = ctx.service.report_scope(&caller, q.company_id, None).await?;
    let today = Utc::now().date_naive();
    let as_of = q.as_of.unwrap_or(today);
    let rows = match ctx.service.budget_report(scope, as_of).await? {
        BudgetReport::Rows(rows) => rows,
        BudgetReport::TooMany => {
            return Err(ApiError::validation(
                "company_id",
                format!("the report would have more than {MAX_BUDGET_REPORT_ROWS} rows; it is never cut short"),
            ));
        }
    };
    let view = BudgetReportView {
        as_of,
        alert_thresholds: ctx.service.alert_thresholds().to_vec(),
        rows: rows
            .iter()
            .map(|r| {
                let b = crate::views::BudgetView::from(&r.budget);
                let pct = if r.budget.total.is_zero() {
                    rust_decimal::Decimal::ZERO
                } else {
                    r.budget.used.value() * rust_decimal::Decimal::ONE_HUNDRED / r.budget.total.value()
                };
                BudgetReportRowView {
                    budget_id: b.budget_id,
                    wallet_id: b.wallet_id,
                    user_id: r.user_id,
                    period_type: b.period_type,
                    start_date: b.start_date,
                    end_date: b.end_date,
                    total_amount: b.total_amount,
                    used_amount: b.used_amount,
                    held_amount: b.held_amount,
                    utilisation_percent: format!("{:.2}", pct.round_dp(2)),
                    status: b.status,
                    currency: r.currency.clone(),
                }
            })
            .collect(),
    };
    Ok(report_reply(&accept, &view))
}

impl Tabular for BudgetReportView {
    const COLUMNS: &'static [&'static str] = &[
        "budget_id",
        "wallet_id",
        "user_id",
        "period_type",
        "start_date",
        "end_date",
        "total_amount",
        "used_amount",
        "held_amount",
        "utilisation_percent",
        "status",
        "currency",
    ];

    fn rows(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|r| {
                vec![
                    r.budget_id.to_string(),
                    r.wallet_id.to_string(),
                    r.user_id.to_string(),
                    r.period_type.clone(),
                    r.start_date.to_string(),
                    r.end_date.to_string(),
                    r.total_amount.clone(),
                    r.used_amount.clone(),
                    r.held_amount.clone(),
                    r.utilisation_percent.clone(),
                    r.status.clone(),
                    r.currency.clone(),
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_the_fields_that_need_it() {
        let res = csv(&["a", "b"], &[vec!["x,y".into(), "say \"hi\"".into()]]);
        assert_eq!(res.headers()[CONTENT_TYPE], "text/csv; charset=utf-8");
        let accept = Some(HeaderValue::from_static("application/json, text/csv;q=0.9"));
        assert!(wants_csv(&accept));
        assert!(!wants_csv(&Some(HeaderValue::from_static("application/json"))));
        assert!(!wants_csv(&None));
    }
}
