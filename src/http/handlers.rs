//! Thin handlers: authenticate, validate, check who may see/do what, call the ledger or store, render.
//! Each returns `Result<Response, ApiError>`; the router renders the error case.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use http::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;
use uuid::Uuid;
use wallet_actors::messages::{MAX_DESCRIPTION_LEN, MAX_REFERENCE_ID_LEN, MAX_REFERENCE_TYPE_LEN};
use wallet_actors::{Amount, Currency, Direction, IdempotencyTicket, Origin, TxnType, WalletState, WalletStatus};
use warp::reply::Response;

use super::idempotency::{self, key_request};
use super::problem::{ApiError, json_response, raw_json};
use super::{Body, RawHeader};
use crate::auth::{AuthError, AuthReason, Caller, Role};
use crate::http::Ctx;
use crate::service::Posting;
use crate::store::{HistoryCursor, HistoryFilter};
use crate::views::{HistoryPage, Pagination, TransactionView, TransferView, UserView, WalletView};

/// Default and largest page size of history queries.
pub const DEFAULT_PAGE_LIMIT: u32 = 20;
pub const MAX_PAGE_LIMIT: u32 = 100;
/// Highest page number accepted (keeps OFFSET bounded).
pub const MAX_PAGE: u32 = 100_000;
/// Longest e-mail address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest status-change reason kept.
pub const MAX_REASON_LEN: usize = 500;
/// Reference type given to a reference id that came without one.
pub const DEFAULT_REFERENCE_TYPE: &str = "EXTERNAL";

/// The caller of an authenticated request: a valid token (401 with its `reason` otherwise), within its
/// rate limit (429). A header that is not visible ASCII is MALFORMED (no token is).
pub(crate) fn authenticate(ctx: &Ctx, header: RawHeader) -> Result<Caller, ApiError> {
    let text = match &header {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::unauthenticated(AuthReason::Malformed))?,
        ),
    };
    let caller = ctx.auth.authenticate(text).map_err(|e| {
        if let AuthError::Invalid(_, why) = &e {
            tracing::info!(reason = %e.reason(), %why, "token refused");
        }
        ApiError::unauthenticated(e.reason())
    })?;
    if let Some(limiter) = &ctx.rate_limiter
        && limiter.check_key(&caller.user_id).is_err()
    {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "too many requests from this caller; retry after the Retry-After interval",
        ));
    }
    Ok(caller)
}

/// The `Idempotency-Key` as text: 400 for a value that is not visible ASCII (its length is checked
/// where it is claimed).
pub(crate) fn idempotency_key(key: RawHeader) -> Result<Option<String>, ApiError> {
    key.map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| ApiError::validation("Idempotency-Key", "must be 1 to 255 visible ASCII characters"))
}

/// Parses a JSON body strictly ([`crate::decode::strict`]): one document, unknown fields refused, no NUL
/// in any string or key, numbers read exactly, the failing field named.
pub(crate) fn parse<T: DeserializeOwned>(body: Body) -> Result<(T, Bytes), ApiError> {
    let bytes = match body {
        Body::Ok(b) => b,
        Body::TooLarge => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("the body exceeds {} bytes", super::MAX_BODY_BYTES),
            ));
        }
        Body::Broken => return Err(ApiError::validation("body", "the body could not be read")),
    };
    match crate::decode::strict::<T>(&bytes) {
        Ok(v) => Ok((v, bytes)),
        Err(e) => Err(ApiError::validation(&e.field, e.message)),
    }
}

pub(crate) fn origin(caller: &Caller, idempotency: Option<IdempotencyTicket>) -> Origin {
    Origin {
        actor_id: caller.user_id,
        role: caller.role.as_str().into(),
        idempotency,
        inbox_event: None,
    }
}

pub(crate) fn optional_text(field: &str, v: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.chars().count() > max => {
            Err(ApiError::validation(field, format!("must be at most {max} characters")))
        }
        Some(s) if s.trim().is_empty() => Err(ApiError::validation(field, "must not be blank")),
        other => Ok(other),
    }
}

pub(crate) fn positive(field: &str, a: Amount) -> Result<Amount, ApiError> {
    if a.is_zero() {
        Err(ApiError::validation(field, "must be greater than zero"))
    } else {
        Ok(a)
    }
}

/// A query string strictly (unknown parameters refused), the failing parameter named.
pub(crate) fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    serde_urlencoded::from_str(query).map_err(|e| {
        let msg = e.to_string();
        let field = msg.split('`').nth(1).unwrap_or("query").to_string();
        ApiError::validation(&field, msg)
    })
}

/// The free-text, reference and metadata fields every money request shares (a posting, a batch item, a
/// hold), validated by one set of rules: lengths, no blank text, `reference_type` only with a
/// `reference_id` (which defaults it to `EXTERNAL`), `metadata` a JSON object (`null` as absent).
/// `field` names a field in the request (`items[3].metadata`).
pub(crate) struct Annotations {
    pub description: Option<String>,
    pub reference_id: Option<String>,
    pub reference_type: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

impl Annotations {
    pub(crate) fn validate(
        field: impl Fn(&str) -> String,
        description: Option<String>,
        reference_id: Option<String>,
        reference_type: Option<String>,
        metadata: Option<serde_json::Value>,
    ) -> Result<Annotations, ApiError> {
        let description = optional_text(&field("description"), description, MAX_DESCRIPTION_LEN)?;
        let reference_id = optional_text(&field("reference_id"), reference_id, MAX_REFERENCE_ID_LEN)?;
        let reference_type = optional_text(&field("reference_type"), reference_type, MAX_REFERENCE_TYPE_LEN)?;
        let metadata = match metadata {
            None | Some(serde_json::Value::Null) => None,
            Some(m @ serde_json::Value::Object(_)) => Some(m),
            Some(_) => return Err(ApiError::validation(&field("metadata"), "must be a JSON object")),
        };
        if reference_type.is_some() && reference_id.is_none() {
            return Err(ApiError::validation(
                &field("reference_id"),
                "is required with reference_type",
            ));
        }
        let reference_type =
            reference_type.or_else(|| reference_id.as_ref().map(|_| DEFAULT_REFERENCE_TYPE.to_string()));
        Ok(Annotations {
            description,
            reference_id,
            reference_type,
            metadata,
        })
    }
}

/// 404 unless the caller may see the wallet.
pub(crate) fn visible(caller: &Caller, w: &WalletState) -> Result<(), ApiError> {
    if caller.can_view(w.user_id, w.company_id) {
        Ok(())
    } else {
        Err(ApiError::not_found("wallet"))
    }
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/health", tag = "operations", operation_id = "health",
    responses((status = 200, description = "The process is up: `{\"status\":\"ok\"}`", body = super::openapi::StatusReply)))]
pub fn health() -> Response {
    json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// Readiness: Postgres answers, migrations are applied and (with AMQP_URL) the consumer is attached.
#[utoipa::path(get, path = "/ready", tag = "operations", operation_id = "ready",
    responses((status = 200, description = "Ready: `{\"status\":\"ready\"}`", body = super::openapi::StatusReply),
              (status = 503, description = "UNAVAILABLE: not ready, with the reason")))]
pub async fn ready(ctx: Arc<Ctx>) -> Response {
    match ctx.readiness().await {
        Ok(()) => json_response(StatusCode::OK, &serde_json::json!({"status": "ready"})),
        Err(reason) => ApiError::unavailable(format!("not ready: {reason}")).into_response(),
    }
}

/// Prometheus metrics (text exposition format). With `METRICS_PORT` set they are served only on that port
/// (plain HTTP, for the monitoring namespace), and the API port answers 404 here.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)))]
pub fn metrics(ctx: Arc<Ctx>) -> Response {
    let mut r = Response::new(ctx.render_metrics().into());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    /// Stored encrypted.
    #[schema(format = Email, max_length = 254, example = "ada@example.com")]
    pub email: String,
    pub company_id: Uuid,
    #[schema(value_type = super::openapi::enums::Role)]
    pub role: Role,
}

/// Records or updates a user (operators' back-fill; `UserCreated` does the same).
#[utoipa::path(put, path = "/users/{userId}", tag = "users", request_body = UserBody, operation_id = "putUser",
    params(("userId" = Uuid, Path, description = "The user's id")),
    responses((status = 200, description = "The user as recorded", body = UserView),
              (status = 400, description = "VALIDATION_FAILED: a bad field (an e-mail must contain `@`)"),
              (status = 403, description = "FORBIDDEN: only admin or service callers record users")))]
pub async fn put_user(ctx: Arc<Ctx>, auth: RawHeader, user_id: Uuid, body: Body) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    if !caller.can_upsert_users() {
        return Err(ApiError::forbidden("only admin or service callers may record users"));
    }
    let (b, _) = parse::<UserBody>(body)?;
    let email = b.email.trim().to_string();
    if email.len() > MAX_EMAIL_LEN || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(ApiError::validation("email", "must be an e-mail address"));
    }
    let user = ctx
        .service
        .record_user(user_id, &email, b.company_id, b.role, &origin(&caller, None))
        .await?;
    Ok(json_response(StatusCode::OK, &user))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWalletBody {
    pub user_id: Uuid,
    /// Decimal string or number; default 0.00.
    #[schema(value_type = Option<super::openapi::NonNegativeAmount>)]
    pub initial_balance: Option<Amount>,
    /// Default USD.
    #[schema(value_type = Option<super::openapi::enums::Currency>)]
    pub currency: Option<Currency>,
}

/// Creates the wallet of a known user.
#[utoipa::path(post, path = "/wallets", tag = "wallets", request_body = CreateWalletBody, operation_id = "createWallet",
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters; a repeat replays the first reply")),
    responses((status = 201, description = "The new wallet", body = WalletView),
              (status = 400, description = "VALIDATION_FAILED: a bad field or Idempotency-Key"),
              (status = 403, description = "FORBIDDEN: only a manager of the user's company or an admin creates wallets"),
              (status = 404, description = "NOT_FOUND: the user is not known (or not visible to the caller)"),
              (status = 409, description = "WALLET_EXISTS or IDEMPOTENCY_IN_PROGRESS"),
              (status = 422, description = "IDEMPOTENCY_KEY_REUSED")))]
pub async fn create_wallet(ctx: Arc<Ctx>, auth: RawHeader, key: RawHeader, body: Body) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let (b, raw) = parse::<CreateWalletBody>(body)?;
    let user = ctx.service.user(b.user_id).await?;
    let Some(user) = user.filter(|u| caller.can_view(u.user_id, u.company_id)) else {
        return Err(ApiError::not_found("user"));
    };
    if !caller.can_manage(user.company_id) {
        return Err(ApiError::forbidden(
            "only a manager of the user's company or an admin may create wallets",
        ));
    }
    let initial = crate::config::opening_balance(b.initial_balance, ctx.service.max_initial_balance())
        .map_err(|m| ApiError::validation("initial_balance", m))?;
    let currency = b.currency.unwrap_or(ctx.service.default_currency());
    let key = key_request(caller.user_id, "POST /wallets", key, "/wallets", &raw)?;
    let created = ctx
        .service
        .create_wallet_keyed(b.user_id, initial, currency, origin(&caller, None), key)
        .await;
    idempotency::reply(created, |w| {
        raw_json(StatusCode::CREATED, crate::views::wallet_reply(&w))
    })
}

/// The wallet of a user.
#[utoipa::path(get, path = "/wallets/{userId}", tag = "wallets", operation_id = "getWallet",
    params(("userId" = Uuid, Path, description = "The owner's user id")),
    responses((status = 200, description = "The user's wallet", body = WalletView),
              (status = 404, description = "NOT_FOUND: no wallet, or one the caller may not see")))]
pub async fn get_wallet(ctx: Arc<Ctx>, auth: RawHeader, user_id: Uuid) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let Some(wallet_id) = ctx.service.wallet_of_user(user_id).await? else {
        return Err(ApiError::not_found("wallet"));
    };
    let w = ctx
        .service
        .wallet_for_read(wallet_id)
        .await?
        .ok_or_else(|| ApiError::not_found("wallet"))?;
    visible(&caller, &w)?;
    Ok(raw_json(StatusCode::OK, crate::views::wallet_reply(&w)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    #[schema(value_type = super::openapi::enums::WalletStatus)]
    pub status: WalletStatus,
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    pub reason: Option<String>,
}

/// Freezes, unfreezes or closes a wallet (CLOSED is final).
#[utoipa::path(put, path = "/wallets/{walletId}/status", tag = "wallets", request_body = StatusBody, operation_id = "setWalletStatus",
    params(("walletId" = Uuid, Path, description = "The wallet's id")),
    responses((status = 200, description = "The wallet with its new status", body = WalletView),
              (status = 403, description = "FORBIDDEN: only a manager of the wallet's company or an admin"),
              (status = 404, description = "NOT_FOUND: no such wallet, or one the caller may not see"),
              (status = 409, description = "WALLET_NOT_ACTIVE: the wallet is CLOSED (final)")))]
pub async fn set_status(ctx: Arc<Ctx>, auth: RawHeader, wallet_id: Uuid, body: Body) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let (b, _) = parse::<StatusBody>(body)?;
    let reason = optional_text("reason", b.reason, MAX_REASON_LEN)?;
    let w = ctx.service.wallet(wallet_id).await?;
    visible(&caller, &w)?;
    if !caller.can_manage(w.company_id) {
        return Err(ApiError::forbidden(
            "only a manager of the wallet's company or an admin may change its status",
        ));
    }
    let w = ctx
        .service
        .set_status(wallet_id, b.status, reason, origin(&caller, None))
        .await?;
    Ok(raw_json(StatusCode::OK, crate::views::wallet_reply(&w)))
}

/// Query of `GET /wallets/{walletId}/transactions`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// 1-based page (default 1).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100_000)]
    pub page: Option<String>,
    /// Page size (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// ISO 8601 date (inclusive, from 00:00 UTC) or RFC 3339 timestamp.
    pub start_date: Option<String>,
    /// ISO 8601 date (inclusive, the whole day) or RFC 3339 timestamp (inclusive); not before start_date.
    pub end_date: Option<String>,
    /// Only transactions of this type.
    #[param(value_type = Option<super::openapi::enums::TransactionType>)]
    pub r#type: Option<String>,
    /// Only transactions with this status.
    #[param(value_type = Option<super::openapi::enums::TransactionStatus>)]
    pub status: Option<String>,
    /// Keyset paging instead of `page`: empty for the first page, then the reply's `next_cursor`. Stable under
    /// concurrent inserts (every row that existed when the walk began is seen exactly once) and as fast on
    /// the millionth row as on the first; `pagination.total` is given on the first page only.
    #[param(max_length = 64)]
    pub cursor: Option<String>,
}

pub(crate) fn parse_bound(field: &str, v: &str, end: bool) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        let day = if end {
            d.succ_opt()
                .ok_or_else(|| ApiError::validation(field, "date out of range"))?
        } else {
            d
        };
        return Ok(crate::store::day_start(day));
    }
    let t = DateTime::parse_from_rfc3339(v)
        .map_err(|_| ApiError::validation(field, "must be an ISO 8601 date or timestamp"))?;
    let t = t.with_timezone(&Utc);
    // An end timestamp is inclusive; the query's upper bound is exclusive.
    Ok(if end { t + chrono::Duration::microseconds(1) } else { t })
}

pub(crate) fn parse_number(field: &str, v: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::validation(field, format!("must be an integer from 1 to {max}"))),
    }
}

/// A wallet's transactions, newest first.
#[utoipa::path(get, path = "/wallets/{walletId}/transactions", tag = "transactions", operation_id = "listTransactions",
    params(("walletId" = Uuid, Path, description = "The wallet's id"), HistoryQuery),
    responses((status = 200, description = "A page of the wallet's transactions, newest first", body = HistoryPage),
              (status = 400, description = "VALIDATION_FAILED: a bad or unknown query parameter"),
              (status = 404, description = "NOT_FOUND: no such wallet, or one the caller may not see")))]
pub async fn history(ctx: Arc<Ctx>, auth: RawHeader, wallet_id: Uuid, query: String) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let q: HistoryQuery = parse_query(&query)?;
    let mut f = HistoryFilter {
        page: parse_number("page", q.page.as_deref(), 1, MAX_PAGE)?,
        limit: parse_number("limit", q.limit.as_deref(), DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)?,
        ..Default::default()
    };
    f.from = q
        .start_date
        .as_deref()
        .map(|v| parse_bound("start_date", v, false))
        .transpose()?;
    f.until = q
        .end_date
        .as_deref()
        .map(|v| parse_bound("end_date", v, true))
        .transpose()?;
    if let (Some(a), Some(b)) = (f.from, f.until)
        && a >= b
    {
        return Err(ApiError::validation("end_date", "must not be before start_date"));
    }
    f.kind = q
        .r#type
        .as_deref()
        .map(|t| t.parse::<TxnType>().map_err(|e| ApiError::validation("type", e)))
        .transpose()?;
    if let Some(s) = q.status.as_deref() {
        if !["PENDING", "COMPLETED", "FAILED", "CANCELLED"].contains(&s) {
            return Err(ApiError::validation(
                "status",
                "must be PENDING, COMPLETED, FAILED or CANCELLED",
            ));
        }
        f.status = Some(s.to_string());
    }
    match q.cursor.as_deref() {
        Some(_) if q.page.is_some() => return Err(ApiError::validation("cursor", "give either page or cursor")),
        Some("") => f.count = true,
        Some(c) => {
            f.after = Some(HistoryCursor::decode(c).map_err(|e| ApiError::validation("cursor", e))?);
        }
        None => f.count = true,
    }
    let w = ctx.service.wallet(wallet_id).await?;
    visible(&caller, &w)?;
    let page = ctx.service.history(wallet_id, &f).await?;
    Ok(json_response(
        StatusCode::OK,
        &HistoryPage {
            transactions: page.items,
            pagination: Pagination {
                page: if f.after.is_some() { 1 } else { f.page },
                limit: f.limit,
                total: page.total,
            },
            next_cursor: page.next.map(|c| c.encode()),
        },
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum PostType {
    Credit,
    Debit,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostTransactionBody {
    /// Decimal string (or JSON number, read exactly), > 0, at most 2 decimals.
    #[schema(value_type = super::openapi::PositiveAmount)]
    pub amount: Amount,
    pub r#type: PostType,
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    pub description: Option<String>,
    /// With `reference_type` (default `EXTERNAL`), unique per wallet and type: a repeat has no second effect
    /// (409 CONFLICT naming the transaction that took effect).
    #[schema(min_length = 1, max_length = 100, pattern = r"\S", example = "booking-42")]
    pub reference_id: Option<String>,
    /// Needs `reference_id`.
    #[schema(min_length = 1, max_length = 50, pattern = r"\S", example = "BOOKING")]
    pub reference_type: Option<String>,
    /// A JSON object (no NUL in any key or string); `null` is the same as absent.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// Credits or debits a wallet (service and admin callers). Answers after the commit.
#[utoipa::path(post, path = "/wallets/{walletId}/transactions", tag = "transactions", request_body = PostTransactionBody,
    operation_id = "postTransaction",
    params(("walletId" = Uuid, Path, description = "The wallet's id"),
           ("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters; a repeat replays the first reply")),
    responses((status = 201, description = "The committed transaction", body = TransactionView),
              (status = 400, description = "VALIDATION_FAILED: a bad field or Idempotency-Key, or a credit that would take the balance above 9999999999999.99"),
              (status = 403, description = "FORBIDDEN: only service or admin callers post transactions"),
              (status = 404, description = "NOT_FOUND: no such wallet, or one the caller may not see"),
              (status = 409, description = "WALLET_NOT_ACTIVE, CONFLICT (the reference was used; `txn_id` names the transaction) or IDEMPOTENCY_IN_PROGRESS"),
              (status = 422, description = "INSUFFICIENT_FUNDS (`balance`, `requested`), BUDGET_EXCEEDED (`budget_id`, `excess`), REFUND_EXCEEDS_DEBIT (`debited`: a CREDIT with a debit's reference may give back at most that debit) or IDEMPOTENCY_KEY_REUSED")))]
pub async fn post_transaction(
    ctx: Arc<Ctx>,
    auth: RawHeader,
    wallet_id: Uuid,
    key: RawHeader,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let (b, raw) = parse::<PostTransactionBody>(body)?;
    let amount = positive("amount", b.amount)?;
    let a = Annotations::validate(
        str::to_string,
        b.description,
        b.reference_id,
        b.reference_type,
        b.metadata,
    )?;
    if !caller.can_move_money() {
        let w = ctx.service.wallet(wallet_id).await?;
        visible(&caller, &w)?;
        return Err(ApiError::forbidden(
            "only service or admin callers may post transactions",
        ));
    }
    let posting = Posting {
        direction: match b.r#type {
            PostType::Credit => Direction::Credit,
            PostType::Debit => Direction::Debit,
        },
        amount,
        description: a.description,
        reference_id: a.reference_id,
        reference_type: a.reference_type,
        metadata: a.metadata,
    };
    let path = format!("/wallets/{wallet_id}/transactions");
    let key = key_request(
        caller.user_id,
        "POST /wallets/{walletId}/transactions",
        key,
        &path,
        &raw,
    )?;
    let posted = ctx
        .service
        .post_keyed(wallet_id, posting, origin(&caller, None), key)
        .await;
    idempotency::reply(posted, |entry| {
        raw_json(StatusCode::CREATED, crate::views::posting_reply(&entry))
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    pub from_wallet_id: Uuid,
    pub to_wallet_id: Uuid,
    #[schema(value_type = super::openapi::PositiveAmount)]
    pub amount: Amount,
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    pub description: Option<String>,
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub reference_id: Option<String>,
}

/// Moves money between two wallets of one currency: a TRANSFER_OUT and a TRANSFER_IN row, atomically.
#[utoipa::path(post, path = "/transfers", tag = "transactions", request_body = TransferBody, operation_id = "transfer",
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters; a repeat replays the first reply")),
    responses((status = 201, description = "Both legs, committed together", body = TransferView),
              (status = 400, description = "VALIDATION_FAILED: a bad field or Idempotency-Key, the same wallet twice, or a balance above the maximum"),
              (status = 403, description = "FORBIDDEN: only service or admin callers transfer"),
              (status = 404, description = "NOT_FOUND: a wallet does not exist, or the caller may not see it"),
              (status = 409, description = "WALLET_NOT_ACTIVE, CONFLICT or IDEMPOTENCY_IN_PROGRESS"),
              (status = 422, description = "INSUFFICIENT_FUNDS (`balance`, `requested`), CURRENCY_MISMATCH or IDEMPOTENCY_KEY_REUSED")))]
pub async fn transfer(ctx: Arc<Ctx>, auth: RawHeader, key: RawHeader, body: Body) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let (b, raw) = parse::<TransferBody>(body)?;
    let amount = positive("amount", b.amount)?;
    if b.from_wallet_id == b.to_wallet_id {
        return Err(ApiError::validation("to_wallet_id", "must differ from from_wallet_id"));
    }
    let description = optional_text("description", b.description, MAX_DESCRIPTION_LEN)?;
    let reference_id = optional_text("reference_id", b.reference_id, MAX_REFERENCE_ID_LEN)?;
    if !caller.can_move_money() {
        let w = ctx.service.wallet(b.from_wallet_id).await?;
        visible(&caller, &w)?;
        return Err(ApiError::forbidden("only service or admin callers may transfer"));
    }
    let key = key_request(caller.user_id, "POST /transfers", key, "/transfers", &raw)?;
    let moved = ctx
        .service
        .transfer_keyed(
            b.from_wallet_id,
            b.to_wallet_id,
            amount,
            description,
            reference_id,
            origin(&caller, None),
            key,
        )
        .await;
    idempotency::reply(moved, |(out, incoming)| {
        raw_json(StatusCode::CREATED, crate::views::transfer_reply(&out, &incoming))
    })
}
