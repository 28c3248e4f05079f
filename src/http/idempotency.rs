//! The HTTP side of `Idempotency-Key`s: the header as a [`KeyRequest`] for a keyed operation of the
//! service (which claims, replays and settles the key: `service::idempotency`), and the operation's
//! outcome as a reply — a replay byte for byte, with its recorded status.

use http::StatusCode;
use warp::reply::Response;

use super::RawHeader;
use super::problem::{ApiError, raw_json};
pub use crate::service::idempotency::MAX_KEY_LEN;
use crate::service::idempotency::{KeyRequest, Keyed, KeyedError};

/// The request's key, if it has one: 400 for a header that is not visible ASCII or not 1–255 characters.
/// Call only after the request has been validated: a request refused with 400 does not consume its key.
pub fn key_request(
    caller: uuid::Uuid,
    endpoint: &'static str,
    header: RawHeader,
    path: &str,
    body: &[u8],
) -> Result<Option<KeyRequest>, ApiError> {
    let Some(key) = super::handlers::idempotency_key(header)? else {
        return Ok(None);
    };
    KeyRequest::new(caller, endpoint, key, path, body)
        .map(Some)
        .map_err(|e| ApiError::validation("Idempotency-Key", e))
}

/// A keyed operation's outcome as the reply: `render` for one that ran now, the recorded reply for a replay.
pub fn reply<T, E>(
    outcome: Result<Keyed<T>, KeyedError<E>>,
    render: impl FnOnce(T) -> Response,
) -> Result<Response, ApiError>
where
    ApiError: From<E>,
{
    match outcome? {
        Keyed::Ran(t) => Ok(render(t)),
        Keyed::Replay { status, body } => {
            let status = StatusCode::from_u16(status).map_err(ApiError::internal)?;
            Ok(raw_json(status, body))
        }
    }
}

impl<E> From<KeyedError<E>> for ApiError
where
    ApiError: From<E>,
{
    fn from(e: KeyedError<E>) -> Self {
        match e {
            KeyedError::InProgress { retry_after_secs } => ApiError::new(
                StatusCode::CONFLICT,
                "IDEMPOTENCY_IN_PROGRESS",
                "a request with this Idempotency-Key is still being processed; retry after Retry-After seconds",
            )
            .retry_after(retry_after_secs),
            KeyedError::Reused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                "this Idempotency-Key was used with a different request",
            ),
            KeyedError::Store(e) => e.into(),
            KeyedError::NotApplied => {
                ApiError::unavailable("the request was not applied; retry it with the same Idempotency-Key")
            }
            KeyedError::Failed(e) => e.into(),
        }
    }
}
