//! The engine's limits and settings ([`Limits`]), each with a named default. A module of its own, below
//! both readers: the supervisor bounds queues and live actors with them, each wallet actor its batches and
//! conflict retries, and neither has to import the other to know a number.

use std::sync::Arc;
use std::time::Duration;

use crate::budget::DEFAULT_ALERT_THRESHOLDS;

/// Commands queued for one wallet beyond which new ones are refused with `Overloaded` (ractor mailboxes
/// are unbounded; this is the bound).
pub const MAX_QUEUED_PER_WALLET: usize = 1024;
/// Commands committed together in one transaction at most.
pub const MAX_BATCH: usize = 128;
/// An actor unused this long stops (its state is in the database).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Re-plans after version conflicts before a command is answered `Unavailable`.
pub const MAX_CONFLICT_RETRIES: u32 = 16;
/// Longest a command waits in its wallet's queue before its caller gives up on it. A command given up on
/// is taken out of the queue for good (see `messages::Fate`), so the caller's 503 is true: it was not
/// applied. `REPLY_TIMEOUT_MS` overrides it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a caller waits, past [`REPLY_TIMEOUT`], for a commit its command is already in. The store bounds
/// every statement well below this (statement and lock timeouts), so it is reached only when the commit's
/// outcome cannot be learnt (the caller then answers "outcome unknown", never "not applied").
pub const COMMIT_WAIT: Duration = Duration::from_secs(15);
/// Live actors beyond which idle ones are passivated after [`PRESSURE_IDLE_TIMEOUT`] instead of the idle
/// timeout: a bound on memory when many distinct wallets are touched (each live actor costs ~11 KB, so
/// ~275 MB at this bound). Measured: 50,000 let a million-wallet walk at 6.5k new wallets/s peak at 1.1 GiB
/// RSS, over the 1 GiB pod limit. `ACTOR_MAX_LIVE` overrides it.
pub const MAX_LIVE_ACTORS: usize = 25_000;
/// Idle time after which an actor stops while more than `max_live_actors` are alive.
pub const PRESSURE_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// The engine's limits and settings, each with a named default above (the service sets them from its
/// configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_queued_per_wallet: usize,
    pub max_batch: usize,
    pub idle_timeout: Duration,
    pub max_conflict_retries: u32,
    /// Queue wait before a caller gives up on an unplanned command ([`REPLY_TIMEOUT`]).
    pub reply_timeout: Duration,
    /// Further wait for a commit in flight ([`COMMIT_WAIT`]).
    pub commit_wait: Duration,
    /// Live actors beyond which idle ones stop after [`PRESSURE_IDLE_TIMEOUT`].
    pub max_live_actors: usize,
    /// Budget alert thresholds in percent, ascending (default 80 and 100).
    pub alert_thresholds: Arc<[u8]>,
    /// How far past its amount a hold may be captured, in percent of the amount (`HOLD_OVERCAPTURE_PERCENT`,
    /// default 0, at most `command::hold::MAX_OVERCAPTURE_PERCENT`).
    pub hold_overcapture_percent: u8,
    /// Suspicious-activity rules (`SUSPICIOUS_*`).
    pub monitor: crate::monitor::MonitorLimits,
    /// Whether the actor links each batch's rows on the wallet's hash chain (`AUDIT_CHAIN`, default on).
    /// Off is for measuring the chain's cost only: a batch's entries and audit rows are then written
    /// unchained and the head stays where it was, so a database written with it off does not verify.
    /// Openings and transfers, which commit on their own, stay chained.
    pub audit_chain: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_queued_per_wallet: MAX_QUEUED_PER_WALLET,
            max_batch: MAX_BATCH,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_conflict_retries: MAX_CONFLICT_RETRIES,
            reply_timeout: REPLY_TIMEOUT,
            commit_wait: COMMIT_WAIT,
            max_live_actors: MAX_LIVE_ACTORS,
            alert_thresholds: Arc::from(DEFAULT_ALERT_THRESHOLDS.as_slice()),
            hold_overcapture_percent: 0,
            monitor: crate::monitor::MonitorLimits::default(),
            audit_chain: true,
        }
    }
}
