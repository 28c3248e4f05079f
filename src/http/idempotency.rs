//! `Idempotency-Key` handling: claim before the effect, replay after, and an answer that is always true.
//!
//! The claim is a row in `idempotency_keys` with a fresh claim token. The effect's own transaction locks
//! that row, checks the token and writes the reply into it (see `store::idempotency`), so "committed" and
//! "reply recorded" cannot disagree, and a commit whose claim was released or taken over writes nothing.
//! After the effect:
//! - a refusal (4xx) moved nothing: it is recorded as the key's final reply;
//! - "not applied" (503, 500) releases the key, so a retry runs at once;
//! - "outcome unknown" (the commit's connection broke): the key is *resolved* — released, which fences
//!   the attempt off if it has not committed, or found with the reply it committed, which is replayed.
//!   Only when the database cannot be reached for [`RESOLVE_WINDOW`] does the client get 504
//!   `OUTCOME_UNKNOWN`; a retry with the same key is then still exactly-once.

use http::StatusCode;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use wallet_actors::IdempotencyTicket;
use warp::reply::Response;

use super::problem::{ApiError, raw_json};
use crate::service::Service;
use crate::store::{Claim, Resolution};

/// How long a request whose commit had an unknown outcome keeps trying to learn it before it answers 504.
pub const RESOLVE_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);
/// First pause between two attempts to resolve; doubled up to [`RESOLVE_MAX_PAUSE`].
const RESOLVE_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
const RESOLVE_MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

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
    service: &Service,
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
    match service.claim_idempotency(caller, endpoint, &key, &hash).await? {
        Claim::Claimed { token } => Ok(Begin::Run(Some(IdempotencyTicket {
            caller,
            endpoint: endpoint.into(),
            key,
            token,
        }))),
        Claim::Replay { status, body } => {
            let status = StatusCode::from_u16(status).map_err(ApiError::internal)?;
            Ok(Begin::Replay(raw_json(status, body)))
        }
        Claim::InProgress { retry_after_secs } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "IDEMPOTENCY_IN_PROGRESS",
            "a request with this Idempotency-Key is still being processed; retry after Retry-After seconds",
        )
        .retry_after(retry_after_secs)),
        Claim::Mismatch => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
            "this Idempotency-Key was used with a different request",
        )),
    }
}

/// After a refusal or failure of a keyed request: settles its key and returns the request's true answer.
pub async fn settle_failure(
    service: &Service,
    ticket: &Option<IdempotencyTicket>,
    error: ApiError,
) -> Result<Response, ApiError> {
    let Some(t) = ticket else { return Err(error) };
    if error.code == "OUTCOME_UNKNOWN" {
        return resolve(service, t, error).await;
    }
    let settled = if error.status.is_server_error() {
        service.release_idempotency(t).await.map(|_| ())
    } else {
        service
            .complete_idempotency(t, error.status.as_u16(), &error.body())
            .await
    };
    if let Err(e) = settled {
        // The key stays claimed until its lease ends; a retry then takes it over (fenced, so still
        // exactly once).
        tracing::warn!(error = %e, "could not settle an idempotency key");
    }
    Err(error)
}

/// Learns the outcome of a commit that went silent, through its key: releasing it fences the attempt off
/// (then "not applied" is true), or the key holds the reply the attempt committed (replayed).
async fn resolve(service: &Service, t: &IdempotencyTicket, unknown: ApiError) -> Result<Response, ApiError> {
    let until = std::time::Instant::now() + RESOLVE_WINDOW;
    let mut pause = RESOLVE_FIRST_PAUSE;
    loop {
        match service.resolve_idempotency(t).await {
            Ok(Resolution::NotApplied) => {
                metrics::counter!("idempotency_resolutions_total", "outcome" => "not_applied").increment(1);
                return Err(ApiError::unavailable(
                    "the request was not applied; retry it with the same Idempotency-Key",
                ));
            }
            Ok(Resolution::Replied { status, body }) => {
                metrics::counter!("idempotency_resolutions_total", "outcome" => "replied").increment(1);
                let status = StatusCode::from_u16(status).map_err(ApiError::internal)?;
                return Ok(raw_json(status, body));
            }
            Err(e) if std::time::Instant::now() + pause < until => {
                tracing::debug!(error = %e, "resolving an unknown outcome: database not reachable yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RESOLVE_MAX_PAUSE);
            }
            Err(e) => {
                metrics::counter!("idempotency_resolutions_total", "outcome" => "unknown").increment(1);
                tracing::warn!(error = %e, "the outcome of a keyed request could not be learnt in time");
                return Err(unknown);
            }
        }
    }
}
