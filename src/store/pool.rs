//! A Postgres pool behind its circuit breaker ([`crate::resilience`]): every connection the service takes
//! passes [`Pool::get`], so when Postgres has failed repeatedly a request fails at once with
//! `StoreError::Unreachable` (503 `UNAVAILABLE` + `Retry-After`) instead of waiting on the pool's and the
//! connect timeouts.
//!
//! A refusal happens before a connection is taken, so before any statement: a fast 503 always means "not
//! applied" (an Idempotency-Key is not even claimed), and exactly-once is unchanged.

use std::sync::Arc;

use deadpool_postgres::{Object, PoolError as DeadpoolError, Status, TimeoutType};
use wallet_actors::StoreError;

use super::Classify;
use crate::resilience::{Breaker, BreakerState, Open};

/// The breaker's `dependency` label of the primary's pool (and of the read pool when it is the same).
pub const PRIMARY: &str = "postgres";
/// The breaker's `dependency` label of the read pool on `DATABASE_READ_URL`.
pub const READ_REPLICA: &str = "postgres_read";

/// Why no connection was handed out.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The breaker is open: Postgres failed repeatedly and is not tried until the next probe.
    #[error(transparent)]
    Open(#[from] Open),
    /// The pool could not give one (timed out, could not connect).
    #[error(transparent)]
    Pool(#[from] DeadpoolError),
}

impl Classify for PoolError {
    fn classify(&self) -> StoreError {
        match self {
            PoolError::Open(open) => StoreError::Unreachable(open.to_string()),
            PoolError::Pool(e) => e.classify(),
        }
    }
}

/// A deadpool pool and the breaker of the server behind it. Clones share both.
#[derive(Clone)]
pub struct Pool {
    inner: deadpool_postgres::Pool,
    breaker: Arc<Breaker>,
}

impl Pool {
    pub fn new(inner: deadpool_postgres::Pool, breaker: Arc<Breaker>) -> Self {
        Pool { inner, breaker }
    }

    /// A connection, or at once [`PoolError::Open`] while the breaker is open. A failure to connect counts
    /// against the breaker, any connection handed out for it. A wait for a free connection that timed out
    /// counts as neither: the pool was saturated by our own load, which a breaker opening would turn from a
    /// slowdown into an outage (a server that stopped answering shows as failed connects once keepalive
    /// has closed the stuck connections).
    pub async fn get(&self) -> Result<Object, PoolError> {
        let call = self.breaker.admit()?;
        match self.inner.get().await {
            Ok(c) => {
                call.success();
                Ok(c)
            }
            Err(e) => {
                match &e {
                    DeadpoolError::Timeout(TimeoutType::Create | TimeoutType::Recycle)
                    | DeadpoolError::Backend(_)
                    | DeadpoolError::PostCreateHook(_) => call.failure(),
                    // Saturated by our own load (see above); closed at shutdown; a configuration error:
                    // nothing said about the server.
                    DeadpoolError::Timeout(TimeoutType::Wait)
                    | DeadpoolError::Closed
                    | DeadpoolError::NoRuntimeSpecified => call.neutral(),
                }
                Err(PoolError::Pool(e))
            }
        }
    }

    /// The pool's size and idle connections (for the gauges).
    pub fn status(&self) -> Status {
        self.inner.status()
    }

    /// While the breaker refuses connections, how long until it tries the server again (see
    /// [`crate::resilience::Breaker::retry_in`]); `None` while it is closed.
    pub fn retry_in(&self) -> Option<std::time::Duration> {
        self.breaker.retry_in()
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }
}
