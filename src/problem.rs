//! Errors as problem documents (`application/problem+json`, RFC 9457) with the contract's stable `code`s:
//! the catalogue, [`ApiError`] and its JSON text ([`ApiError::body`]), and what each failure of a use case
//! answers ([`Answer`]).
//!
//! Below `service` on purpose: a keyed operation records a refusal's problem document as its
//! Idempotency-Key's reply, and that must be the very text the client gets. `http::problem` adds the
//! HTTP side (headers, the response); [`ApiError::body`] is the one place an error becomes bytes, so every
//! error has the same shape and no internals leak into `detail`.

use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;
use wallet_actors::{Rejection, StoreError};

use crate::auth::AuthReason;
use crate::store::CreateWalletError;

/// The media type of every error reply.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// Seconds a client is asked to wait after 429/503 by default (a 503 while a Postgres breaker is open asks
/// for the rest of its open period: `http::problem::with_breaker_wait`).
pub const RETRY_AFTER_SECS: u64 = 1;
/// Where the problem types are documented: a problem's `type` is this prefix and the code's slug.
pub const PROBLEM_TYPE_PREFIX: &str = "/problems/";

/// One problem `code` of the contract, documented: the page behind its `type` URI and the enum of the
/// OpenAPI `Problem` schema are both made from [`CATALOGUE`].
#[derive(Debug, Clone, Copy)]
pub struct ProblemKind {
    pub code: &'static str,
    pub status: u16,
    pub title: &'static str,
    /// When it happens.
    pub when: &'static str,
    /// What the client should do.
    pub action: &'static str,
    /// Machine-readable members it carries beside the standard ones.
    pub members: &'static str,
}

impl ProblemKind {
    /// `INSUFFICIENT_FUNDS` → `insufficient-funds`.
    pub fn slug(&self) -> String {
        slug(self.code)
    }
}

fn slug(code: &str) -> String {
    code.to_ascii_lowercase().replace('_', "-")
}

/// Every problem `code` the service answers with.
pub const CATALOGUE: &[ProblemKind] = &[
    ProblemKind {
        code: "VALIDATION_FAILED",
        status: 400,
        title: "Validation failed",
        when: "The request is malformed: JSON that does not parse, an unknown or missing field, a value of the wrong \
               type or out of range (an amount with more than 2 decimals, zero or negative, above 9999999999999.99), \
               a bad query parameter or header (an Idempotency-Key that is not 1-255 visible ASCII characters).",
        action: "Fix the request; `errors` names each failing field. A request refused with 400 does not consume its \
                 Idempotency-Key, so the corrected request may reuse it.",
        members: "errors: [{field, message}]",
    },
    ProblemKind {
        code: "UNAUTHENTICATED",
        status: 401,
        title: "Unauthenticated",
        when: "No bearer token, or one that is not valid for this service. `reason` says which check failed: MISSING, \
               MALFORMED, BAD_SIGNATURE, EXPIRED, NOT_YET_VALID, WRONG_ISSUER, WRONG_AUDIENCE or ALGORITHM.",
        action: "Send `Authorization: Bearer <JWT>` with a token from the identity provider; get a new token when it \
                 has expired.",
        members: "reason",
    },
    ProblemKind {
        code: "FORBIDDEN",
        status: 403,
        title: "Forbidden",
        when: "The caller may see the resource but not change it (for example a user asking to post a transaction, or \
               a manager acting on another company's wallet they can see).",
        action: "Use a caller with the needed role; repeating the request will not help.",
        members: "",
    },
    ProblemKind {
        code: "NOT_FOUND",
        status: 404,
        title: "Not found",
        when: "No such resource, or one the caller may not see (the two are answered alike, so ids reveal nothing).",
        action: "Check the id and that the caller may see the resource.",
        members: "",
    },
    ProblemKind {
        code: "METHOD_NOT_ALLOWED",
        status: 405,
        title: "Method not allowed",
        when: "The path exists, but not with this method.",
        action: "Use one of the methods listed in the `Allow` header.",
        members: "",
    },
    ProblemKind {
        code: "WALLET_NOT_ACTIVE",
        status: 409,
        title: "Wallet not active",
        when: "The wallet (or the other wallet of a transfer) is FROZEN or CLOSED: it refuses debits and credits, and a \
               CLOSED wallet cannot change status again.",
        action: "Ask a manager to set the wallet ACTIVE (not possible once CLOSED).",
        members: "",
    },
    ProblemKind {
        code: "WALLET_EXISTS",
        status: 409,
        title: "Wallet exists",
        when: "The user already has a wallet; a user has one.",
        action: "Use the existing wallet (GET /wallets/{userId}).",
        members: "",
    },
    ProblemKind {
        code: "IDEMPOTENCY_IN_PROGRESS",
        status: 409,
        title: "Idempotent request in progress",
        when: "A request with the same Idempotency-Key is still being processed.",
        action: "Retry the same request with the same key a little later; it then answers with the first outcome.",
        members: "",
    },
    ProblemKind {
        code: "CONFLICT",
        status: 409,
        title: "Conflict",
        when: "The request conflicts with the resource's state: a transaction with the same reference_type, \
               reference_id and type already exists on the wallet (a booking is debited once and refunded at most \
               once), a budget has expired, or the wallet holds the most budgets allowed.",
        action: "For a repeated reference nothing more is needed: `txn_id` names the transaction that took effect.",
        members: "txn_id (a repeated reference)",
    },
    ProblemKind {
        code: "PAYLOAD_TOO_LARGE",
        status: 413,
        title: "Payload too large",
        when: "The request body exceeds 64 KiB (16 MB for POST /transactions/batch, which holds up to 1,000 items).",
        action: "Send a smaller body (split a batch in two).",
        members: "",
    },
    ProblemKind {
        code: "INSUFFICIENT_FUNDS",
        status: 422,
        title: "Insufficient funds",
        when: "A debit, transfer or hold larger than the wallet's available balance (its balance less what open \
               holds reserve). Nothing changed.",
        action: "Credit the wallet first or debit less; `balance` (the available balance the request was judged \
                 against) and `requested` give the amounts.",
        members: "balance, requested",
    },
    ProblemKind {
        code: "BUDGET_EXCEEDED",
        status: 422,
        title: "Budget exceeded",
        when: "A debit would take an ACTIVE budget's used_amount above its total_amount, or a budget's total_amount \
               would be set below what is already used. Nothing changed.",
        action: "Debit at most the budget's remaining amount, or ask a manager to raise the budget. `budget_id` names \
                 the budget; `excess` is by how much a debit would exceed it; `used_amount` what a budget has used.",
        members: "budget_id, excess (a refused debit), used_amount (a total below it)",
    },
    ProblemKind {
        code: "REFUND_EXCEEDS_DEBIT",
        status: 422,
        title: "Refund exceeds debit",
        when: "A CREDIT with the reference_type and reference_id of a DEBIT on the same wallet is a refund of that \
               debit, and it would give back more than the debit took. Nothing changed.",
        action: "Refund at most the debited amount, given in `debited` (a debit is refunded at most once).",
        members: "debited",
    },
    ProblemKind {
        code: "HOLD_EXCEEDED",
        status: 422,
        title: "Capture exceeds the hold",
        when: "A capture of more than the hold has left, beyond the over-capture tolerance \
               (HOLD_OVERCAPTURE_PERCENT of the hold's amount). Nothing changed.",
        action: "Capture at most `allowed`; charge the rest as a separate debit.",
        members: "requested, allowed",
    },
    ProblemKind {
        code: "HOLD_NOT_PENDING",
        status: 409,
        title: "Hold not pending",
        when: "The hold was already captured in full, voided, or has expired (a hold past its expires_at is \
               EXPIRED at that instant). Nothing changed.",
        action: "Read the hold (GET /holds/{holdId}); `hold_status` says what became of it. Place a new hold or \
                 debit the wallet instead.",
        members: "hold_status",
    },
    ProblemKind {
        code: "BATCH_REFUSED",
        status: 422,
        title: "Batch refused",
        when: "An atomic bulk posting (POST /transactions/batch with `atomic: true`) holds at least one item that a \
               single posting would have refused (insufficient funds, budget exceeded, wallet not active or not \
               found, a repeated reference, a refund over its debit). The batch is all or nothing: nothing was \
               applied.",
        action: "Fix or drop the items named in `results` (each with its `index`, the `status` a single posting would \
                 have answered and that posting's problem document in `error`) and send the batch again, or send it \
                 with `atomic: false` to apply the others.",
        members: "results: [{index, status, error}]",
    },
    ProblemKind {
        code: "IDEMPOTENCY_KEY_REUSED",
        status: 422,
        title: "Idempotency key reused",
        when: "The Idempotency-Key was used before by this caller on this endpoint with a different request.",
        action: "Use a new key for a new request.",
        members: "",
    },
    ProblemKind {
        code: "CURRENCY_MISMATCH",
        status: 422,
        title: "Currency mismatch",
        when: "A transfer between wallets of different currencies.",
        action: "Transfer only between wallets of one currency.",
        members: "",
    },
    ProblemKind {
        code: "RATE_LIMITED",
        status: 429,
        title: "Rate limited",
        when: "The caller sent more requests than its per-second limit allows.",
        action: "Wait for the `Retry-After` seconds, then retry.",
        members: "",
    },
    ProblemKind {
        code: "INTERNAL",
        status: 500,
        title: "Internal error",
        when: "An unexpected failure in the service. The details are in the service's log, never in the reply.",
        action: "Retry later with the same Idempotency-Key; report it if it persists.",
        members: "",
    },
    ProblemKind {
        code: "UNAVAILABLE",
        status: 503,
        title: "Service unavailable",
        when: "A dependency (the database) is down, the wallet is overloaded, or the request waited too long in the \
               wallet's queue and was dropped unplanned; nothing was applied.",
        action: "Safe to retry after the `Retry-After` seconds, with the same Idempotency-Key.",
        members: "",
    },
    ProblemKind {
        code: "OUTCOME_UNKNOWN",
        status: 504,
        title: "Outcome unknown",
        when: "The request went into a commit whose outcome the service could not learn: the connection to the \
               database broke during the commit and the database did not answer again within 5 seconds. The \
               request may or may not have been applied.",
        action: "Retry after the `Retry-After` seconds with the same Idempotency-Key: the retry replays the reply if \
                 it was applied, and applies it exactly once if it was not. Without a key, look the transaction up \
                 by its reference_id before trying again.",
        members: "",
    },
];

/// The catalogue entry of a code.
pub fn kind(code: &str) -> Option<&'static ProblemKind> {
    CATALOGUE.iter().find(|k| k.code == code)
}

/// The catalogue entry whose slug this is (`insufficient-funds`).
pub fn kind_by_slug(s: &str) -> Option<&'static ProblemKind> {
    CATALOGUE.iter().find(|k| k.slug() == s)
}
/// The `detail` of every 503 caused by a dependency: fixed, so that no database, library or operating
/// system message reaches a client (the cause is logged).
pub const UNAVAILABLE_DETAIL: &str = "the service is temporarily unavailable; retry with the same Idempotency-Key";
/// The `detail` of every 500.
pub const INTERNAL_DETAIL: &str = "an internal error occurred";

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Machine-readable members beside the standard ones, each present only where it applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Extra {
    /// 401: which check the token failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<AuthReason>,
    /// INSUFFICIENT_FUNDS: the balance the debit was checked against, and the amount asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// BUDGET_EXCEEDED: the budget, by how much a debit would exceed it, or what it has used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excess: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_amount: Option<String>,
    /// REFUND_EXCEEDS_DEBIT: the amount of the debit being refunded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debited: Option<String>,
    /// CONFLICT of a repeated reference: the transaction that took effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txn_id: Option<Uuid>,
    /// HOLD_EXCEEDED: the most the capture could take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<String>,
    /// HOLD_NOT_PENDING: what the hold is now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_status: Option<&'static str>,
}

/// The problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    pub r#type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Extra,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// Seconds for `Retry-After` when it is not the default (e.g. the rest of an idempotency lease).
    pub retry_after: Option<u64>,
    /// Boxed: most errors have none, and `Result<_, ApiError>` stays small.
    pub extra: Option<Box<Extra>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            errors: vec![],
            retry_after: None,
            extra: None,
        }
    }

    /// A 400 for `field`; `message` is a text or a caller error (its `Display` is the message).
    pub fn validation(field: &str, message: impl std::fmt::Display) -> Self {
        let message = message.to_string();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "VALIDATION_FAILED",
            detail: format!("{field}: {message}"),
            errors: vec![FieldError {
                field: field.into(),
                message,
            }],
            retry_after: None,
            extra: None,
        }
    }

    /// 401 with the stable `reason` (the only thing said about why; never a library's text).
    pub fn unauthenticated(reason: AuthReason) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            format!("a valid bearer token is required: {}", reason.describe()),
        );
        e.extra_mut().reason = Some(reason);
        e
    }

    /// The machine-readable members, created on first use.
    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// 405 for a path that exists with other methods (the router adds `Allow`).
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "method not allowed on this path; see the Allow header",
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("{what} not found"))
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", detail)
    }

    /// The request went into a commit whose outcome could not be learnt: it may have been applied.
    pub fn outcome_unknown() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "OUTCOME_UNKNOWN",
            "the outcome is not known yet: retry with the same Idempotency-Key, or look the transaction up by its reference_id",
        )
    }

    /// Sets the `Retry-After` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// A failure we do not explain to the client; the cause goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", INTERNAL_DETAIL)
    }

    fn title(&self) -> &'static str {
        kind(self.code).map_or("Error", |k| k.title)
    }

    /// The problem document's JSON text (also what an idempotency record stores).
    pub fn body(&self) -> String {
        let p = Problem {
            r#type: format!("{PROBLEM_TYPE_PREFIX}{}", slug(self.code)),
            title: self.title().into(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.into(),
            errors: self.errors.clone(),
            extra: self.extra.as_deref().cloned().unwrap_or_default(),
        };
        serde_json::to_string(&p).unwrap_or_default()
    }
}

/// The problem document a failure answers. Pure (no logging, no clock): the same failure always renders
/// to the same bytes, so a keyed operation can record a refusal's reply before the adapter renders it.
pub trait Answer {
    fn answer(&self) -> ApiError;
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match &r {
            Rejection::Unavailable(reason) => tracing::warn!(%reason, "request failed: dependency unavailable"),
            Rejection::StoreRefused => {
                tracing::error!(cause = "the database refused a command's data", "internal error")
            }
            _ => {}
        }
        r.answer()
    }
}

impl Answer for Rejection {
    fn answer(&self) -> ApiError {
        let r = self.clone();
        let status = match &r {
            Rejection::WalletNotFound | Rejection::BudgetNotFound | Rejection::HoldNotFound => StatusCode::NOT_FOUND,
            Rejection::InsufficientFunds { .. }
            | Rejection::CurrencyMismatch { .. }
            | Rejection::BudgetExceeded { .. }
            | Rejection::BudgetBelowUsed { .. }
            | Rejection::RefundExceedsDebit { .. }
            | Rejection::HoldExceeded { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Rejection::WalletNotActive { .. }
            | Rejection::WalletClosed
            | Rejection::DuplicateReference { .. }
            | Rejection::BudgetExpired
            | Rejection::TooManyBudgets
            | Rejection::HoldNotPending { .. }
            | Rejection::TooManyHolds
            | Rejection::EventProcessed => StatusCode::CONFLICT,
            Rejection::BalanceOverflow | Rejection::Invalid(_) => StatusCode::BAD_REQUEST,
            Rejection::Overloaded | Rejection::Unavailable(_) | Rejection::ClaimLost => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::OutcomeUnknown => return ApiError::outcome_unknown(),
            Rejection::StoreRefused => {
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", INTERNAL_DETAIL);
            }
        };
        let detail = match &r {
            Rejection::WalletNotFound => "wallet not found".to_string(),
            Rejection::BudgetNotFound => "budget not found".to_string(),
            Rejection::HoldNotFound => "hold not found".to_string(),
            // Store details are for the log, not for the client.
            Rejection::Unavailable(_) => UNAVAILABLE_DETAIL.to_string(),
            Rejection::ClaimLost => {
                "the request's Idempotency-Key was released or taken over before it committed; nothing was applied"
                    .to_string()
            }
            other => other.to_string(),
        };
        let mut e = ApiError::new(status, r.code(), detail);
        match r {
            Rejection::BalanceOverflow => e.errors.push(FieldError {
                field: "amount".into(),
                message: "the balance would exceed 9999999999999.99".into(),
            }),
            Rejection::InsufficientFunds { balance, requested } => {
                e.extra_mut().balance = Some(balance.to_string());
                e.extra_mut().requested = Some(requested.to_string());
            }
            Rejection::BudgetExceeded { budget_id, exceeded_by } => {
                e.extra_mut().budget_id = Some(budget_id);
                e.extra_mut().excess = Some(exceeded_by.to_string());
            }
            Rejection::BudgetBelowUsed { used } => e.extra_mut().used_amount = Some(used.to_string()),
            Rejection::DuplicateReference { existing_txn_id } => e.extra_mut().txn_id = Some(existing_txn_id),
            Rejection::RefundExceedsDebit { debited } => e.extra_mut().debited = Some(debited.to_string()),
            Rejection::HoldExceeded { requested, allowed } => {
                e.extra_mut().requested = Some(requested.to_string());
                e.extra_mut().allowed = Some(allowed.to_string());
            }
            Rejection::HoldNotPending { status } => e.extra_mut().hold_status = Some(status.as_str()),
            _ => {}
        }
        e
    }
}

/// The one place a store failure becomes an HTTP error: transient (unreachable, busy) → 503
/// `UNAVAILABLE` with `Retry-After`, anything else → 500 `INTERNAL`. The cause is logged; the client gets a
/// fixed sentence.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.transient() {
            tracing::warn!(
                kind = e.kind(),
                cause = e.cause(),
                "request failed: database unavailable"
            );
        } else {
            tracing::error!(kind = e.kind(), cause = e.cause(), "request failed: store error");
        }
        e.answer()
    }
}

impl Answer for StoreError {
    fn answer(&self) -> ApiError {
        if self.transient() {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", UNAVAILABLE_DETAIL)
        } else {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", INTERNAL_DETAIL)
        }
    }
}

impl From<CreateWalletError> for ApiError {
    fn from(e: CreateWalletError) -> Self {
        match e {
            CreateWalletError::Refused(r) => r.into(),
            CreateWalletError::Store(e) => e.into(),
            other => other.answer(),
        }
    }
}

impl Answer for CreateWalletError {
    fn answer(&self) -> ApiError {
        match self {
            CreateWalletError::UserNotFound => ApiError::not_found("user"),
            CreateWalletError::Exists(id) => ApiError::new(
                StatusCode::CONFLICT,
                "WALLET_EXISTS",
                format!("the user already has wallet {id}"),
            ),
            CreateWalletError::Refused(r) => r.answer(),
            CreateWalletError::ClaimLost => Rejection::ClaimLost.answer(),
            CreateWalletError::OutcomeUnknown => ApiError::outcome_unknown(),
            CreateWalletError::Store(e) => e.answer(),
        }
    }
}
