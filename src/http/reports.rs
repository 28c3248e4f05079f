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

use super::handlers::{authenticate, parse_bound, visible};
use super::problem::{ApiError, json_response};
use super::{Ctx, RawHeader};
use crate::store::BalanceAt;

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
    let q: BalanceQuery = serde_urlencoded::from_str(&query).map_err(|e| {
        let msg = e.to_string();
        let field = msg.split('`').nth(1).unwrap_or("query").to_string();
        ApiError::validation(&field, msg)
    })?;
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
    if wants_csv(&accept) {
        return Ok(csv(
            &["wallet_id", "at", "balance"],
            &[vec![view.wallet_id.to_string(), view.at, view.balance]],
        ));
    }
    Ok(json_response(StatusCode::OK, &view))
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
