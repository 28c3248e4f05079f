//! `Idempotency-Key`s inside the use cases: claim before the effect, replay after, and an answer that is
//! always true. A keyed operation ([`Service::post_keyed`], [`Service::transfer_keyed`],
//! [`Service::create_wallet_keyed`], `Service::post_batch_keyed`) is its plain operation run through
//! `Service::keyed`.
//!
//! The claim is a row in `idempotency_keys` with a fresh claim token. The effect's own transaction locks
//! that row, checks the token and writes the reply into it (see `store::idempotency`), so "committed" and
//! "reply recorded" cannot disagree, and a commit whose claim was released or taken over writes nothing.
//! After the effect:
//! - a refusal (4xx) moved nothing: its problem document ([`Answer`], the very text the client gets) is
//!   recorded as the key's final reply;
//! - "not applied" (503, 500) releases the key, so a retry runs at once;
//! - "outcome unknown" (the commit's connection broke): the key is *resolved* — released, which fences
//!   the attempt off if it has not committed, or found with the reply it committed, which is replayed.
//!   Only when the database cannot be reached for [`RESOLVE_WINDOW`] is the outcome left unknown (504
//!   `OUTCOME_UNKNOWN`); a retry with the same key is then still exactly-once.

use std::future::Future;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use uuid::Uuid;
use wallet_actors::{Amount, Currency, Entry, IdempotencyTicket, Origin, Rejection, StoreError, WalletState};

use super::{Posting, Service};
use crate::problem::Answer;
use crate::store::{Claim, CreateWalletError, Resolution};

/// How long a request whose commit had an unknown outcome keeps trying to learn it before it gives up.
pub const RESOLVE_WINDOW: Duration = Duration::from_secs(5);
/// First pause between two attempts to resolve; doubled up to [`RESOLVE_MAX_PAUSE`], with jitter
/// (`resilience::backoff`).
const RESOLVE_FIRST_PAUSE: Duration = Duration::from_millis(100);
const RESOLVE_MAX_PAUSE: Duration = Duration::from_secs(1);

/// Longest key accepted (the contract's 1–255).
pub const MAX_KEY_LEN: usize = 255;

/// A key as a keyed operation needs it: whose (the caller), for what (the endpoint), the key itself, and
/// the request's fingerprint (a hash of its path and body: the same key with another request is refused).
#[derive(Debug, Clone)]
pub struct KeyRequest {
    caller: Uuid,
    endpoint: &'static str,
    key: String,
    fingerprint: Vec<u8>,
}

/// A key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("must be 1 to {MAX_KEY_LEN} characters")]
    Length,
}

impl KeyRequest {
    /// Checks the key's length and fingerprints the request (`path` and raw `body`). Build it only after
    /// the request has been validated: a request refused with 400 does not consume its key.
    pub fn new(caller: Uuid, endpoint: &'static str, key: String, path: &str, body: &[u8]) -> Result<Self, KeyError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(KeyError::Length);
        }
        let mut h = Sha256::new();
        h.update(path.as_bytes());
        h.update([0]);
        h.update(body);
        Ok(KeyRequest {
            caller,
            endpoint,
            key,
            fingerprint: h.finalize().to_vec(),
        })
    }
}

/// What a keyed operation did: ran now, or answered with the reply recorded for its key (byte for byte).
#[derive(Debug)]
pub enum Keyed<T> {
    Ran(T),
    Replay { status: u16, body: String },
}

/// Why a keyed operation did not run or did not succeed.
#[derive(Debug)]
pub enum KeyedError<E> {
    /// A request with this key is still running; retry after this many seconds.
    InProgress { retry_after_secs: u64 },
    /// The key was used by this caller on this endpoint with another request.
    Reused,
    /// The key could not be claimed (the database); nothing ran.
    Store(StoreError),
    /// The effect's outcome was unknown and is now known: not applied (its key released).
    NotApplied,
    /// The operation failed; its key is settled (a refusal recorded as the reply, a failure released, an
    /// unknown outcome that could not be learnt left to its lease).
    Failed(E),
}

impl Service {
    /// Runs `run` under `key` (none: just runs it): claims the key, replays what it recorded, or runs the
    /// effect with the key's ticket (for the effect's commit to fence and complete) and settles the key
    /// when it fails.
    pub(crate) async fn keyed<T, E, F, Fut>(&self, key: Option<KeyRequest>, run: F) -> Result<Keyed<T>, KeyedError<E>>
    where
        E: Answer,
        F: FnOnce(Option<IdempotencyTicket>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let Some(k) = key else {
            return run(None).await.map(Keyed::Ran).map_err(KeyedError::Failed);
        };
        let claim = self
            .store
            .claim_idempotency(k.caller, k.endpoint, &k.key, &k.fingerprint)
            .await
            .map_err(KeyedError::Store)?;
        let ticket = match claim {
            Claim::Claimed { token } => IdempotencyTicket {
                caller: k.caller,
                endpoint: k.endpoint.into(),
                key: k.key,
                token,
            },
            Claim::Replay { status, body } => return Ok(Keyed::Replay { status, body }),
            Claim::InProgress { retry_after_secs } => return Err(KeyedError::InProgress { retry_after_secs }),
            Claim::Mismatch => return Err(KeyedError::Reused),
        };
        let error = match run(Some(ticket.clone())).await {
            Ok(t) => return Ok(Keyed::Ran(t)),
            Err(e) => e,
        };
        let problem = error.answer();
        if problem.code == "OUTCOME_UNKNOWN" {
            return match self.resolve(&ticket).await {
                Some(Resolution::NotApplied) => Err(KeyedError::NotApplied),
                Some(Resolution::Replied { status, body }) => Ok(Keyed::Replay { status, body }),
                None => Err(KeyedError::Failed(error)),
            };
        }
        let settled = if problem.status.is_server_error() {
            self.store.release_idempotency(&ticket).await.map(|_| ())
        } else {
            self.store
                .complete_idempotency(&ticket, problem.status.as_u16(), &problem.body())
                .await
        };
        if let Err(e) = settled {
            // The key stays claimed until its lease ends; a retry then takes it over (fenced, so still
            // exactly once).
            tracing::warn!(error = %e, "could not settle an idempotency key");
        }
        Err(KeyedError::Failed(error))
    }

    /// Learns the outcome of a commit that went silent, through its key: releasing it fences the attempt
    /// off (then "not applied" is true), or the key holds the reply the attempt committed. `None` when the
    /// database did not answer within [`RESOLVE_WINDOW`]. Also for the items of a bulk posting
    /// (`service::batch`), each under a key of its own.
    pub(crate) async fn resolve(&self, t: &IdempotencyTicket) -> Option<Resolution> {
        let until = Instant::now() + RESOLVE_WINDOW;
        let mut attempt = 0;
        loop {
            let pause = crate::resilience::backoff(attempt, RESOLVE_FIRST_PAUSE, RESOLVE_MAX_PAUSE);
            match self.store.resolve_idempotency(t).await {
                Ok(r) => {
                    let outcome = match r {
                        Resolution::NotApplied => "not_applied",
                        Resolution::Replied { .. } => "replied",
                    };
                    metrics::counter!("idempotency_resolutions_total", "outcome" => outcome).increment(1);
                    return Some(r);
                }
                Err(e) if Instant::now() + pause < until => {
                    tracing::debug!(error = %e, "resolving an unknown outcome: database not reachable yet");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => {
                    metrics::counter!("idempotency_resolutions_total", "outcome" => "unknown").increment(1);
                    tracing::warn!(error = %e, "the outcome of a keyed request could not be learnt in time");
                    return None;
                }
            }
        }
    }

    /// [`Service::post`] under an Idempotency-Key. `origin` is the caller's (without a ticket).
    pub async fn post_keyed(
        &self,
        wallet_id: Uuid,
        p: Posting,
        origin: Origin,
        key: Option<KeyRequest>,
    ) -> Result<Keyed<Entry>, KeyedError<Rejection>> {
        self.keyed(key, |ticket| {
            self.post(
                wallet_id,
                p,
                Origin {
                    idempotency: ticket,
                    ..origin
                },
            )
        })
        .await
    }

    /// [`Service::transfer`] under an Idempotency-Key. `origin` is the caller's (without a ticket).
    #[allow(clippy::too_many_arguments)]
    pub async fn transfer_keyed(
        &self,
        from: Uuid,
        to: Uuid,
        amount: Amount,
        description: Option<String>,
        reference_id: Option<String>,
        origin: Origin,
        key: Option<KeyRequest>,
    ) -> Result<Keyed<(Entry, Entry)>, KeyedError<Rejection>> {
        self.keyed(key, |ticket| {
            let origin = Origin {
                idempotency: ticket,
                ..origin
            };
            self.transfer(from, to, amount, description, reference_id, origin)
        })
        .await
    }

    /// [`Service::create_wallet`] under an Idempotency-Key. `origin` is the caller's (without a ticket).
    pub async fn create_wallet_keyed(
        &self,
        user_id: Uuid,
        initial: Amount,
        currency: Currency,
        origin: Origin,
        key: Option<KeyRequest>,
    ) -> Result<Keyed<WalletState>, KeyedError<CreateWalletError>> {
        self.keyed(key, |ticket| async move {
            let origin = Origin {
                idempotency: ticket,
                ..origin
            };
            self.create_wallet(user_id, initial, currency, &origin).await
        })
        .await
    }
}
