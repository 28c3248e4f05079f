//! `Idempotency-Key` handling: claim before the effect, replay after.
//!
//! The claim is a row in `idempotency_keys`. The effect's own transaction writes the reply into it (see
//! the store), so "committed" and "reply recorded" cannot disagree. A refusal (4xx) moves nothing and is
//! recorded afterwards; a failure (5xx) releases the key so the client can retry with it.

use http::StatusCode;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use wallet_actors::IdempotencyTicket;
use warp::reply::Response;

use super::problem::{ApiError, raw_json};
use crate::store::{Claim, PgStore};

/// Longest key accepted (the contract's 1–255).
pub const MAX_KEY_LEN: usize = 255;

pub enum Begin {
    /// Go ahead; carry the ticket (if a key was given) into the effect.
    Run(Option<IdempotencyTicket>),
    /// Answer with the recorded reply.
    Replay(Response),
}

/// Validates the key, then claims it or finds its earlier outcome. Call only after the request has been
/// validated: a request refused with 400 does not consume its key.
pub async fn begin(
    store: &PgStore,
    caller: Uuid,
    endpoint: &str,
    key: Option<String>,
    path: &str,
    body: &[u8],
) -> Result<Begin, ApiError> {
    let Some(key) = key else { return Ok(Begin::Run(None)) };
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ApiError::validation(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_LEN} characters"),
        ));
    }
    let mut h = Sha256::new();
    h.update(path.as_bytes());
    h.update([0]);
    h.update(body);
    let hash = h.finalize().to_vec();
    match store.claim_idempotency(caller, endpoint, &key, &hash).await? {
        Claim::Claimed => Ok(Begin::Run(Some(IdempotencyTicket {
            caller,
            endpoint: endpoint.into(),
            key,
        }))),
        Claim::Replay { status, body } => {
            let status = StatusCode::from_u16(status).map_err(ApiError::internal)?;
            Ok(Begin::Replay(raw_json(status, body)))
        }
        Claim::InProgress => Err(ApiError::new(
            StatusCode::CONFLICT,
            "IDEMPOTENCY_IN_PROGRESS",
            "a request with this Idempotency-Key is still being processed",
        )),
        Claim::Mismatch => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
            "this Idempotency-Key was used with a different request",
        )),
    }
}

/// After a refusal or failure: record a 4xx (it is the request's final answer), release on 5xx.
pub async fn finish_error(store: &PgStore, ticket: &Option<IdempotencyTicket>, error: &ApiError) {
    let Some(t) = ticket else { return };
    let result = if error.status.is_server_error() {
        store.release_idempotency(t.caller, &t.endpoint, &t.key).await
    } else {
        store
            .complete_idempotency(t.caller, &t.endpoint, &t.key, error.status.as_u16(), &error.body())
            .await
    };
    if let Err(e) = result {
        // The key stays claimed until its lease ends; the client then may retry it.
        tracing::warn!(error = %e, "could not settle an idempotency key");
    }
}
