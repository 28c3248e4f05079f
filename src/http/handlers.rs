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

use super::Body;
use super::idempotency::{self, Begin};
use super::problem::{ApiError, json_response};
use crate::app::Ctx;
use crate::auth::{AuthError, Caller, Role};
use crate::money::Posting;
use crate::store::{AuditRow, CreateWalletError, HistoryFilter};
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

/// The caller of an authenticated request: a valid token (401 otherwise), within its rate limit (429).
pub(crate) fn authenticate(ctx: &Ctx, header: Option<String>) -> Result<Caller, ApiError> {
    let caller = ctx.auth.authenticate(header.as_deref()).map_err(|e| {
        if let AuthError::Invalid(reason) = &e {
            tracing::info!(%reason, "token refused");
        }
        ApiError::unauthenticated()
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

fn optional_text(field: &str, v: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.chars().count() > max => {
            Err(ApiError::validation(field, format!("must be at most {max} characters")))
        }
        Some(s) if s.trim().is_empty() => Err(ApiError::validation(field, "must not be blank")),
        other => Ok(other),
    }
}

fn positive(field: &str, a: Amount) -> Result<Amount, ApiError> {
    if a.is_zero() {
        Err(ApiError::validation(field, "must be greater than zero"))
    } else {
        Ok(a)
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

/// Runs an effect under an Idempotency-Key: replays, or runs and settles the key on error.
async fn idempotent<F, Fut>(
    ctx: &Ctx,
    caller: &Caller,
    endpoint: &str,
    key: Option<String>,
    path: &str,
    raw: &[u8],
    run: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Option<IdempotencyTicket>) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    match idempotency::begin(&ctx.ledger.store, caller.user_id, endpoint, key, path, raw).await? {
        Begin::Replay(r) => Ok(r),
        Begin::Run(ticket) => {
            let result = run(ticket.clone()).await;
            if let Err(e) = &result {
                idempotency::finish_error(&ctx.ledger.store, &ticket, e).await;
            }
            result
        }
    }
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "{\"status\":\"ok\"}")))]
pub fn health() -> Response {
    json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// Readiness: Postgres answers, migrations are applied and (with AMQP_URL) the consumer is attached.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, description = "{\"status\":\"ready\"}"), (status = 503, description = "UNAVAILABLE with the reason", body = super::problem::Problem)))]
pub async fn ready(ctx: Arc<Ctx>) -> Response {
    match ctx.readiness().await {
        Ok(()) => json_response(StatusCode::OK, &serde_json::json!({"status": "ready"})),
        Err(reason) => ApiError::unavailable(format!("not ready: {reason}")).into_response(),
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
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
    pub email: String,
    pub company_id: Uuid,
    #[schema(value_type = String, example = "user")]
    pub role: Role,
}

/// Records or updates a user (operators' back-fill; `UserCreated` does the same).
#[utoipa::path(put, path = "/users/{userId}", tag = "users", request_body = UserBody,
    params(("userId" = Uuid, Path, description = "the user's id")),
    responses((status = 200, body = UserView), (status = 400, body = super::problem::Problem), (status = 401, body = super::problem::Problem),
              (status = 403, body = super::problem::Problem), (status = 413, body = super::problem::Problem)),
    security(("bearer" = [])))]
pub async fn put_user(ctx: Arc<Ctx>, auth: Option<String>, user_id: Uuid, body: Body) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    if !caller.can_upsert_users() {
        return Err(ApiError::forbidden("only admin or service callers may record users"));
    }
    let (b, _) = parse::<UserBody>(body)?;
    let email = b.email.trim().to_string();
    if email.len() > MAX_EMAIL_LEN || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(ApiError::validation("email", "must be an e-mail address"));
    }
    let user = crate::users::upsert(&ctx, user_id, &email, b.company_id, b.role, &origin(&caller, None)).await?;
    Ok(json_response(StatusCode::OK, &user))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWalletBody {
    pub user_id: Uuid,
    /// Decimal string or number; default 0.00.
    #[schema(value_type = Option<String>, example = "100.00")]
    pub initial_balance: Option<Amount>,
    /// Default USD.
    #[schema(value_type = Option<String>, example = "USD")]
    pub currency: Option<Currency>,
}

/// Creates the wallet of a known user.
#[utoipa::path(post, path = "/wallets", tag = "wallets", request_body = CreateWalletBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 chars; replays the first reply")),
    responses((status = 201, body = WalletView), (status = 400, body = super::problem::Problem), (status = 401, body = super::problem::Problem),
              (status = 403, body = super::problem::Problem), (status = 404, body = super::problem::Problem),
              (status = 409, description = "WALLET_EXISTS or IDEMPOTENCY_IN_PROGRESS", body = super::problem::Problem),
              (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = super::problem::Problem)),
    security(("bearer" = [])))]
pub async fn create_wallet(
    ctx: Arc<Ctx>,
    auth: Option<String>,
    key: Option<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let (b, raw) = parse::<CreateWalletBody>(body)?;
    let user = ctx.ledger.store.get_user(b.user_id).await?;
    let Some(user) = user.filter(|u| caller.can_view(u.user_id, u.company_id)) else {
        return Err(ApiError::not_found("user"));
    };
    if !caller.can_manage(user.company_id) {
        return Err(ApiError::forbidden(
            "only a manager of the user's company or an admin may create wallets",
        ));
    }
    let initial = b.initial_balance.unwrap_or(Amount::ZERO);
    let currency = b.currency.unwrap_or(ctx.default_currency);
    idempotent(&ctx, &caller, "POST /wallets", key, "/wallets", &raw, |ticket| async {
        let o = origin(&caller, ticket);
        match ctx.ledger.store.create_wallet(b.user_id, initial, currency, &o).await {
            Ok(w) => {
                ctx.user_wallets.insert(w.user_id, w.wallet_id);
                Ok(json_response(StatusCode::CREATED, &WalletView::from(&w)))
            }
            Err(CreateWalletError::UserNotFound) => Err(ApiError::not_found("user")),
            Err(CreateWalletError::Exists(id)) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "WALLET_EXISTS",
                format!("the user already has wallet {id}"),
            )),
            Err(CreateWalletError::Store(e)) => Err(e.into()),
        }
    })
    .await
}

/// The wallet of a user.
#[utoipa::path(get, path = "/wallets/{userId}", tag = "wallets",
    params(("userId" = Uuid, Path, description = "the owner's user id")),
    responses((status = 200, body = WalletView), (status = 401, body = super::problem::Problem), (status = 404, body = super::problem::Problem)),
    security(("bearer" = [])))]
pub async fn get_wallet(ctx: Arc<Ctx>, auth: Option<String>, user_id: Uuid) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let Some(wallet_id) = ctx.wallet_of_user(user_id).await? else {
        return Err(ApiError::not_found("wallet"));
    };
    let w = ctx.wallet_for_read(wallet_id).await?;
    visible(&caller, &w)?;
    Ok(json_response(StatusCode::OK, &WalletView::from(&w)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    #[schema(value_type = String, example = "FROZEN")]
    pub status: WalletStatus,
    pub reason: Option<String>,
}

/// Freezes, unfreezes or closes a wallet (CLOSED is final).
#[utoipa::path(put, path = "/wallets/{walletId}/status", tag = "wallets", request_body = StatusBody,
    params(("walletId" = Uuid, Path)),
    responses((status = 200, body = WalletView), (status = 400, body = super::problem::Problem), (status = 401, body = super::problem::Problem),
              (status = 403, body = super::problem::Problem), (status = 404, body = super::problem::Problem),
              (status = 409, description = "WALLET_NOT_ACTIVE: the wallet is CLOSED", body = super::problem::Problem)),
    security(("bearer" = [])))]
pub async fn set_status(
    ctx: Arc<Ctx>,
    auth: Option<String>,
    wallet_id: Uuid,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let (b, _) = parse::<StatusBody>(body)?;
    let reason = optional_text("reason", b.reason, MAX_REASON_LEN)?;
    let w = ctx.ledger.wallet(wallet_id).await?;
    visible(&caller, &w)?;
    if !caller.can_manage(w.company_id) {
        return Err(ApiError::forbidden(
            "only a manager of the wallet's company or an admin may change its status",
        ));
    }
    let w = ctx
        .ledger
        .set_status(wallet_id, b.status, reason, origin(&caller, None))
        .await?;
    Ok(json_response(StatusCode::OK, &WalletView::from(&w)))
}

/// Query of `GET /wallets/{walletId}/transactions`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// 1-based page (default 1).
    pub page: Option<String>,
    /// Page size, 1..=100 (default 20).
    pub limit: Option<String>,
    /// ISO 8601 date (inclusive, from 00:00 UTC) or timestamp.
    pub start_date: Option<String>,
    /// ISO 8601 date (inclusive, whole day) or timestamp (inclusive).
    pub end_date: Option<String>,
    /// CREDIT, DEBIT, TRANSFER_IN or TRANSFER_OUT.
    pub r#type: Option<String>,
    /// PENDING, COMPLETED, FAILED or CANCELLED.
    pub status: Option<String>,
}

fn parse_bound(field: &str, v: &str, end: bool) -> Result<DateTime<Utc>, ApiError> {
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

fn parse_number(field: &str, v: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
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
#[utoipa::path(get, path = "/wallets/{walletId}/transactions", tag = "transactions",
    params(("walletId" = Uuid, Path), HistoryQuery),
    responses((status = 200, body = HistoryPage), (status = 400, body = super::problem::Problem), (status = 401, body = super::problem::Problem),
              (status = 404, body = super::problem::Problem)),
    security(("bearer" = [])))]
pub async fn history(
    ctx: Arc<Ctx>,
    auth: Option<String>,
    wallet_id: Uuid,
    query: String,
) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let q: HistoryQuery = serde_urlencoded::from_str(&query).map_err(|e| {
        let msg = e.to_string();
        let field = msg.split('`').nth(1).unwrap_or("query").to_string();
        ApiError::validation(&field, msg)
    })?;
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
    let w = ctx.ledger.wallet(wallet_id).await?;
    visible(&caller, &w)?;
    let (transactions, total) = ctx.ledger.store.history(wallet_id, &f).await?;
    Ok(json_response(
        StatusCode::OK,
        &HistoryPage {
            transactions,
            pagination: Pagination {
                page: f.page,
                limit: f.limit,
                total,
            },
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
    #[schema(value_type = String, example = "25.00")]
    pub amount: Amount,
    pub r#type: PostType,
    pub description: Option<String>,
    /// With `reference_type`, unique per wallet and type: a repeat has no second effect (409 CONFLICT).
    pub reference_id: Option<String>,
    pub reference_type: Option<String>,
    /// A JSON object (no NUL in any key or string); `null` is the same as absent.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// Credits or debits a wallet (service and admin callers). Answers after the commit.
#[utoipa::path(post, path = "/wallets/{walletId}/transactions", tag = "transactions", request_body = PostTransactionBody,
    params(("walletId" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "1-255 chars; replays the first reply")),
    responses((status = 201, body = TransactionView), (status = 400, body = super::problem::Problem), (status = 401, body = super::problem::Problem),
              (status = 403, body = super::problem::Problem), (status = 404, body = super::problem::Problem),
              (status = 409, description = "WALLET_NOT_ACTIVE, CONFLICT (reference repeated) or IDEMPOTENCY_IN_PROGRESS", body = super::problem::Problem),
              (status = 413, body = super::problem::Problem),
              (status = 422, description = "INSUFFICIENT_FUNDS or IDEMPOTENCY_KEY_REUSED", body = super::problem::Problem),
              (status = 503, description = "UNAVAILABLE (retry with the same key)", body = super::problem::Problem)),
    security(("bearer" = [])))]
pub async fn post_transaction(
    ctx: Arc<Ctx>,
    auth: Option<String>,
    wallet_id: Uuid,
    key: Option<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let (b, raw) = parse::<PostTransactionBody>(body)?;
    let amount = positive("amount", b.amount)?;
    let description = optional_text("description", b.description, MAX_DESCRIPTION_LEN)?;
    let reference_id = optional_text("reference_id", b.reference_id, MAX_REFERENCE_ID_LEN)?;
    let reference_type = optional_text("reference_type", b.reference_type, MAX_REFERENCE_TYPE_LEN)?;
    if reference_type.is_some() && reference_id.is_none() {
        return Err(ApiError::validation("reference_id", "is required with reference_type"));
    }
    let reference_type = reference_type.or_else(|| reference_id.as_ref().map(|_| DEFAULT_REFERENCE_TYPE.to_string()));
    // `null` is as good as absent; anything else must be an object (the contract's shape).
    let metadata = match b.metadata {
        None | Some(serde_json::Value::Null) => None,
        Some(m @ serde_json::Value::Object(_)) => Some(m),
        Some(_) => return Err(ApiError::validation("metadata", "must be a JSON object")),
    };
    if !caller.can_move_money() {
        let w = ctx.ledger.wallet(wallet_id).await?;
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
        description,
        reference_id,
        reference_type,
        metadata,
    };
    let path = format!("/wallets/{wallet_id}/transactions");
    idempotent(
        &ctx,
        &caller,
        "POST /wallets/{walletId}/transactions",
        key,
        &path,
        &raw,
        |ticket| async {
            let entry = ctx.ledger.post(wallet_id, posting, origin(&caller, ticket)).await?;
            Ok(json_response(StatusCode::CREATED, &TransactionView::from(&entry)))
        },
    )
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    pub from_wallet_id: Uuid,
    pub to_wallet_id: Uuid,
    #[schema(value_type = String, example = "30.00")]
    pub amount: Amount,
    pub description: Option<String>,
    pub reference_id: Option<String>,
}

/// Moves money between two wallets of one currency: a TRANSFER_OUT and a TRANSFER_IN row, atomically.
#[utoipa::path(post, path = "/transfers", tag = "transactions", request_body = TransferBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 chars; replays the first reply")),
    responses((status = 201, body = TransferView), (status = 400, body = super::problem::Problem), (status = 401, body = super::problem::Problem),
              (status = 403, body = super::problem::Problem), (status = 404, body = super::problem::Problem),
              (status = 409, description = "WALLET_NOT_ACTIVE, CONFLICT or IDEMPOTENCY_IN_PROGRESS", body = super::problem::Problem),
              (status = 422, description = "INSUFFICIENT_FUNDS, CURRENCY_MISMATCH or IDEMPOTENCY_KEY_REUSED", body = super::problem::Problem),
              (status = 503, body = super::problem::Problem)),
    security(("bearer" = [])))]
pub async fn transfer(
    ctx: Arc<Ctx>,
    auth: Option<String>,
    key: Option<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let (b, raw) = parse::<TransferBody>(body)?;
    let amount = positive("amount", b.amount)?;
    if b.from_wallet_id == b.to_wallet_id {
        return Err(ApiError::validation("to_wallet_id", "must differ from from_wallet_id"));
    }
    let description = optional_text("description", b.description, MAX_DESCRIPTION_LEN)?;
    let reference_id = optional_text("reference_id", b.reference_id, MAX_REFERENCE_ID_LEN)?;
    if !caller.can_move_money() {
        let w = ctx.ledger.wallet(b.from_wallet_id).await?;
        visible(&caller, &w)?;
        return Err(ApiError::forbidden("only service or admin callers may transfer"));
    }
    idempotent(
        &ctx,
        &caller,
        "POST /transfers",
        key,
        "/transfers",
        &raw,
        |ticket| async {
            let (out, incoming) = ctx
                .ledger
                .transfer(
                    b.from_wallet_id,
                    b.to_wallet_id,
                    amount,
                    description,
                    reference_id,
                    origin(&caller, ticket),
                )
                .await?;
            Ok(json_response(StatusCode::CREATED, &TransferView::new(&out, &incoming)))
        },
    )
    .await
}

/// Audit row for a user record written over HTTP.
pub fn user_audit(o: &Origin, user_id: Uuid, company_id: Uuid, role: Role) -> AuditRow {
    AuditRow {
        actor_id: Some(o.actor_id),
        actor_role: o.role.clone(),
        action: "user.upsert".into(),
        target_type: "user",
        target_id: user_id.to_string(),
        outcome: "APPLIED".into(),
        detail: serde_json::json!({"company_id": company_id, "role": role.as_str()}),
    }
}

/// Renders a stored user.
pub fn user_view(ctx: &Ctx, u: &crate::store::UserRow) -> Result<UserView, ApiError> {
    let email = ctx.pii.decrypt(&u.email_encrypted).map_err(ApiError::internal)?;
    Ok(UserView {
        user_id: u.user_id,
        email,
        company_id: u.company_id,
        role: u.role.clone(),
        created_at: crate::views::ts(u.created_at),
        updated_at: crate::views::ts(u.updated_at),
    })
}
