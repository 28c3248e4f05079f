//! Errors as `application/problem+json` (RFC 9457) with the contract's stable `code`s.
//!
//! Handlers return `Result<Response, ApiError>`; [`ApiError::into_response`] is the one place an error
//! becomes bytes, so every error has the same shape and no internals leak into `detail`.

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use serde::Serialize;
use utoipa::ToSchema;
use wallet_actors::{Rejection, StoreError};
use warp::reply::Response;

pub const PROBLEM_JSON: &str = "application/problem+json";
/// Seconds a client is asked to wait after 429/503.
pub const RETRY_AFTER_SECS: u64 = 1;
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
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            errors: vec![],
        }
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "VALIDATION_FAILED",
            detail: format!("{field}: {message}"),
            errors: vec![FieldError {
                field: field.into(),
                message,
            }],
        }
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "a valid bearer token is required",
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

    /// A failure we do not explain to the client; the cause goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", INTERNAL_DETAIL)
    }

    fn title(&self) -> &'static str {
        match self.code {
            "VALIDATION_FAILED" => "Validation failed",
            "UNAUTHENTICATED" => "Unauthenticated",
            "FORBIDDEN" => "Forbidden",
            "NOT_FOUND" => "Not found",
            "WALLET_NOT_ACTIVE" => "Wallet not active",
            "WALLET_EXISTS" => "Wallet exists",
            "IDEMPOTENCY_IN_PROGRESS" => "Idempotent request in progress",
            "CONFLICT" => "Conflict",
            "PAYLOAD_TOO_LARGE" => "Payload too large",
            "INSUFFICIENT_FUNDS" => "Insufficient funds",
            "BUDGET_EXCEEDED" => "Budget exceeded",
            "IDEMPOTENCY_KEY_REUSED" => "Idempotency key reused",
            "CURRENCY_MISMATCH" => "Currency mismatch",
            "RATE_LIMITED" => "Rate limited",
            "UNAVAILABLE" => "Service unavailable",
            "METHOD_NOT_ALLOWED" => "Method not allowed",
            _ => "Internal error",
        }
    }

    /// The problem document's JSON text (also what an idempotency record stores).
    pub fn body(&self) -> String {
        let p = Problem {
            r#type: format!("/problems/{}", self.code.to_ascii_lowercase().replace('_', "-")),
            title: self.title().into(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.into(),
            errors: self.errors.clone(),
        };
        serde_json::to_string(&p).unwrap_or_default()
    }

    pub fn into_response(self) -> Response {
        let status = self.status.as_u16().to_string();
        metrics::counter!("http_rejections_total", "code" => self.code, "status" => status).increment(1);
        let mut res = Response::new(self.body().into());
        *res.status_mut() = self.status;
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wallet-service\""),
            );
        }
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            h.insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        res
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let status = match &r {
            Rejection::WalletNotFound | Rejection::BudgetNotFound => StatusCode::NOT_FOUND,
            Rejection::InsufficientFunds { .. }
            | Rejection::CurrencyMismatch { .. }
            | Rejection::BudgetExceeded { .. }
            | Rejection::BudgetBelowUsed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Rejection::WalletNotActive { .. }
            | Rejection::WalletClosed
            | Rejection::DuplicateReference { .. }
            | Rejection::BudgetExpired
            | Rejection::TooManyBudgets => StatusCode::CONFLICT,
            Rejection::BalanceOverflow | Rejection::Invalid(_) => StatusCode::BAD_REQUEST,
            Rejection::Overloaded | Rejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let detail = match &r {
            Rejection::WalletNotFound => "wallet not found".to_string(),
            Rejection::BudgetNotFound => "budget not found".to_string(),
            // Store details are for the log, not for the client.
            Rejection::Unavailable(reason) => {
                tracing::warn!(%reason, "request failed: dependency unavailable");
                UNAVAILABLE_DETAIL.to_string()
            }
            other => other.to_string(),
        };
        let mut e = ApiError::new(status, r.code(), detail);
        if let Rejection::BalanceOverflow = r {
            e.errors.push(FieldError {
                field: "amount".into(),
                message: "the balance would exceed 9999999999999.99".into(),
            });
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
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", UNAVAILABLE_DETAIL)
        } else {
            tracing::error!(kind = e.kind(), cause = e.cause(), "request failed: store error");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", INTERNAL_DETAIL)
        }
    }
}

/// JSON reply with a status.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_string(value).unwrap_or_default();
    raw_json(status, body)
}

/// A JSON body given as text (replays of idempotent replies must be byte for byte).
pub fn raw_json(status: StatusCode, body: String) -> Response {
    let content_type = if status.is_success() {
        "application/json"
    } else {
        PROBLEM_JSON
    };
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_becomes_503_or_500_with_a_fixed_detail() {
        let cause = "error connecting to server: Connection refused (os error 111)";
        for (e, status, code) in [
            (StoreError::Unreachable(cause.into()), 503, "UNAVAILABLE"),
            (StoreError::Busy(cause.into()), 503, "UNAVAILABLE"),
            (StoreError::Refused(cause.into()), 500, "INTERNAL"),
            (StoreError::Corrupt(cause.into()), 500, "INTERNAL"),
            (StoreError::Other(cause.into()), 500, "INTERNAL"),
        ] {
            let api = ApiError::from(e);
            assert_eq!((api.status.as_u16(), api.code), (status, code));
            let body = api.body();
            assert!(!body.contains("os error") && !body.contains("connecting"), "{body}");
            let res = api.into_response();
            assert_eq!(res.headers().contains_key(RETRY_AFTER), status == 503);
        }
        let api = ApiError::from(Rejection::Unavailable(cause.into()));
        assert_eq!(api.detail, UNAVAILABLE_DETAIL);
    }
}
