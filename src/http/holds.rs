//! Hold routes: place (`POST /wallets/{walletId}/holds`), capture and void (`POST /holds/{holdId}/...`),
//! and reads. Each parses, authorizes, calls one `Service` operation (`crate::service::holds`) and renders.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;
use wallet_actors::command::hold::{DEFAULT_HOLD_TTL_SECS, MAX_HOLD_TTL_SECS};
use wallet_actors::{Amount, Hold, HoldStatus};
use warp::reply::Response;

use super::handlers::{
    Annotations, DEFAULT_PAGE_LIMIT, MAX_PAGE, MAX_PAGE_LIMIT, authenticate, origin, parse, parse_number, parse_query,
    positive, visible,
};
use super::idempotency;
use super::problem::{ApiError, json_response, raw_json};
use super::{Body, Ctx, RawHeader};
use crate::auth::Caller;
use crate::service::holds::NewHold;
use crate::store::HoldFilter;
use crate::views::{HoldPage, HoldView, Pagination, TransactionView};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceHoldBody {
    /// Decimal string (or JSON number, read exactly), > 0, at most 2 decimals.
    #[schema(value_type = super::openapi::PositiveAmount)]
    pub amount: Amount,
    /// With `reference_type` (default `EXTERNAL`), unique among the wallet's holds: a repeat has no second
    /// effect (409 CONFLICT naming the hold that took effect in `txn_id`).
    #[schema(min_length = 1, max_length = 100, pattern = r"\S", example = "booking-42")]
    pub reference_id: Option<String>,
    /// Needs `reference_id`.
    #[schema(min_length = 1, max_length = 50, pattern = r"\S", example = "BOOKING")]
    pub reference_type: Option<String>,
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    pub description: Option<String>,
    /// Seconds until the hold expires (default 604800 = 7 days, at most 2592000 = 30 days).
    #[schema(minimum = 1, maximum = 2_592_000)]
    pub expires_in_seconds: Option<u32>,
    /// A JSON object (no NUL in any key or string); `null` is the same as absent.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureBody {
    /// What to capture (default: what remains). More than remains only within HOLD_OVERCAPTURE_PERCENT of
    /// the hold's amount.
    #[schema(value_type = Option<super::openapi::PositiveAmount>)]
    pub amount: Option<Amount>,
    /// Release whatever remains after this capture (default true). A non-final capture leaves the hold
    /// PARTIALLY_CAPTURED with the rest still reserved.
    pub r#final: Option<bool>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HoldQuery {
    /// Only holds with this status, as of now (an open hold past its expiry is EXPIRED).
    #[param(value_type = Option<super::openapi::enums::HoldStatus>)]
    pub status: Option<String>,
    /// 1-based page (default 1).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100_000)]
    pub page: Option<String>,
    /// Page size (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
}

/// 403 for callers that may not move money, after a 404 for what they may not see.
async fn may_move_money(ctx: &Ctx, caller: &Caller, wallet_id: Uuid) -> Result<(), ApiError> {
    if caller.can_move_money() {
        return Ok(());
    }
    let w = ctx.service.wallet(wallet_id).await?;
    visible(caller, &w)?;
    Err(ApiError::forbidden(
        "only service or admin callers may place, capture or void holds",
    ))
}

/// The hold, if the caller may see its wallet (404 otherwise, as for wallets).
async fn visible_hold(ctx: &Ctx, caller: &Caller, hold_id: Uuid) -> Result<Hold, ApiError> {
    let hold = ctx
        .service
        .hold(hold_id)
        .await?
        .ok_or_else(|| ApiError::not_found("hold"))?;
    let w = ctx
        .service
        .wallet_for_read(hold.wallet_id)
        .await?
        .ok_or_else(|| ApiError::not_found("hold"))?;
    visible(caller, &w).map_err(|_| ApiError::not_found("hold"))?;
    Ok(hold)
}

/// Places a hold: reserves money on the wallet without moving it (service and admin callers).
#[utoipa::path(post, path = "/wallets/{walletId}/holds", tag = "holds", request_body = PlaceHoldBody,
    operation_id = "placeHold",
    params(("walletId" = Uuid, Path, description = "The wallet's id"),
           ("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters; a repeat replays the first reply")),
    responses((status = 201, description = "The hold, PENDING", body = HoldView),
              (status = 400, description = "VALIDATION_FAILED: a bad field or Idempotency-Key"),
              (status = 403, description = "FORBIDDEN: only service or admin callers place holds"),
              (status = 404, description = "NOT_FOUND: no such wallet, or one the caller may not see"),
              (status = 409, description = "WALLET_NOT_ACTIVE, CONFLICT (the reference has a hold; `txn_id` names it; or the wallet has the most open holds allowed) or IDEMPOTENCY_IN_PROGRESS"),
              (status = 422, description = "INSUFFICIENT_FUNDS (`balance` is the available balance, `requested`), BUDGET_EXCEEDED (`budget_id`, `excess`) or IDEMPOTENCY_KEY_REUSED")))]
pub async fn place(
    ctx: Arc<Ctx>,
    auth: RawHeader,
    wallet_id: Uuid,
    key: RawHeader,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let (b, raw) = parse::<PlaceHoldBody>(body)?;
    let amount = positive("amount", b.amount)?;
    let a = Annotations::validate(
        str::to_string,
        b.description,
        b.reference_id,
        b.reference_type,
        b.metadata,
    )?;
    let ttl = b.expires_in_seconds.unwrap_or(DEFAULT_HOLD_TTL_SECS);
    if !(1..=MAX_HOLD_TTL_SECS).contains(&ttl) {
        return Err(ApiError::validation(
            "expires_in_seconds",
            format!("must be from 1 to {MAX_HOLD_TTL_SECS} (30 days)"),
        ));
    }
    may_move_money(&ctx, &caller, wallet_id).await?;
    let hold = NewHold {
        amount,
        reference_id: a.reference_id,
        reference_type: a.reference_type,
        description: a.description,
        metadata: a.metadata,
        expires_in: Duration::from_secs(u64::from(ttl)),
    };
    let path = format!("/wallets/{wallet_id}/holds");
    let key = idempotency::key_request(caller.user_id, "POST /wallets/{walletId}/holds", key, &path, &raw)?;
    let placed = ctx
        .service
        .place_hold_keyed(wallet_id, hold, origin(&caller, None), key)
        .await;
    idempotency::reply(placed, |h| raw_json(StatusCode::CREATED, crate::views::hold_reply(&h)))
}

/// Captures a hold: a DEBIT of `amount` (default: what remains) carrying the hold's id.
#[utoipa::path(post, path = "/holds/{holdId}/capture", tag = "holds", request_body = CaptureBody,
    operation_id = "captureHold",
    params(("holdId" = Uuid, Path, description = "The hold's id"),
           ("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters; a repeat replays the first reply")),
    responses((status = 201, description = "The DEBIT transaction the capture wrote (with `hold_id`)", body = TransactionView),
              (status = 400, description = "VALIDATION_FAILED: a bad field or Idempotency-Key"),
              (status = 403, description = "FORBIDDEN: only service or admin callers capture holds"),
              (status = 404, description = "NOT_FOUND: no such hold, or one the caller may not see"),
              (status = 409, description = "HOLD_NOT_PENDING (`hold_status`: captured, voided or expired), WALLET_NOT_ACTIVE or IDEMPOTENCY_IN_PROGRESS"),
              (status = 422, description = "HOLD_EXCEEDED (`requested`, `allowed`), INSUFFICIENT_FUNDS or BUDGET_EXCEEDED (for the part beyond the hold), or IDEMPOTENCY_KEY_REUSED")))]
pub async fn capture(
    ctx: Arc<Ctx>,
    auth: RawHeader,
    hold_id: Uuid,
    key: RawHeader,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let (b, raw) = match body {
        // An empty body is `{}`: capture what remains, finally.
        Body::Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => (CaptureBody::default(), bytes),
        other => parse::<CaptureBody>(other)?,
    };
    let amount = b.amount.map(|a| positive("amount", a)).transpose()?;
    let hold = visible_hold(&ctx, &caller, hold_id).await?;
    may_move_money(&ctx, &caller, hold.wallet_id).await?;
    let path = format!("/holds/{hold_id}/capture");
    let key = idempotency::key_request(caller.user_id, "POST /holds/{holdId}/capture", key, &path, &raw)?;
    let captured = ctx
        .service
        .capture_hold_keyed(hold_id, amount, b.r#final.unwrap_or(true), origin(&caller, None), key)
        .await;
    idempotency::reply(captured, |(entry, _)| {
        raw_json(StatusCode::CREATED, crate::views::posting_reply(&entry))
    })
}

/// Voids a hold: what it still reserves goes back to the available balance and the budgets.
#[utoipa::path(post, path = "/holds/{holdId}/void", tag = "holds", operation_id = "voidHold",
    params(("holdId" = Uuid, Path, description = "The hold's id")),
    responses((status = 200, description = "The hold, VOIDED", body = HoldView),
              (status = 403, description = "FORBIDDEN: only service or admin callers void holds"),
              (status = 404, description = "NOT_FOUND: no such hold, or one the caller may not see"),
              (status = 409, description = "HOLD_NOT_PENDING (`hold_status`): captured, voided or expired; nothing changed")))]
pub async fn void(ctx: Arc<Ctx>, auth: RawHeader, hold_id: Uuid) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let hold = visible_hold(&ctx, &caller, hold_id).await?;
    may_move_money(&ctx, &caller, hold.wallet_id).await?;
    let voided = ctx.service.void_hold(hold_id, origin(&caller, None)).await?;
    Ok(json_response(StatusCode::OK, &HoldView::at(&voided, Utc::now())))
}

/// One hold, as it is now.
#[utoipa::path(get, path = "/holds/{holdId}", tag = "holds", operation_id = "getHold",
    params(("holdId" = Uuid, Path, description = "The hold's id")),
    responses((status = 200, description = "The hold as of now (an open hold past its expiry is EXPIRED)", body = HoldView),
              (status = 404, description = "NOT_FOUND: no such hold, or one the caller may not see")))]
pub async fn get(ctx: Arc<Ctx>, auth: RawHeader, hold_id: Uuid) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let hold = visible_hold(&ctx, &caller, hold_id).await?;
    Ok(json_response(StatusCode::OK, &HoldView::at(&hold, Utc::now())))
}

/// A wallet's holds, newest first.
#[utoipa::path(get, path = "/wallets/{walletId}/holds", tag = "holds", operation_id = "listHolds",
    params(("walletId" = Uuid, Path, description = "The wallet's id"), HoldQuery),
    responses((status = 200, description = "A page of the wallet's holds, newest first", body = HoldPage),
              (status = 400, description = "VALIDATION_FAILED: a bad or unknown query parameter"),
              (status = 404, description = "NOT_FOUND: no such wallet, or one the caller may not see")))]
pub async fn list(ctx: Arc<Ctx>, auth: RawHeader, wallet_id: Uuid, query: String) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let q: HoldQuery = parse_query(&query)?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            s.parse::<HoldStatus>().map_err(|_| {
                ApiError::validation(
                    "status",
                    "must be PENDING, PARTIALLY_CAPTURED, CAPTURED, VOIDED or EXPIRED",
                )
            })
        })
        .transpose()?;
    let filter = HoldFilter {
        status,
        page: parse_number("page", q.page.as_deref(), 1, MAX_PAGE)?,
        limit: parse_number("limit", q.limit.as_deref(), DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)?,
    };
    let w = ctx
        .service
        .wallet_for_read(wallet_id)
        .await?
        .ok_or_else(|| ApiError::not_found("wallet"))?;
    visible(&caller, &w)?;
    let now = Utc::now();
    let (holds, total) = ctx.service.holds_of_wallet(wallet_id, filter, now).await?;
    Ok(json_response(
        StatusCode::OK,
        &HoldPage {
            holds: holds.iter().map(|h| HoldView::at(h, now)).collect(),
            pagination: Pagination {
                page: filter.page,
                limit: filter.limit,
                total: Some(total),
            },
        },
    ))
}
