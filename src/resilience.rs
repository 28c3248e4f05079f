//! Circuit breakers and the one retry backoff of the service.
//!
//! Every dependency (the Postgres primary, Redis, RabbitMQ's publisher and consumer connections) sits behind
//! a [`Breaker`]: after [`FAILURES_TO_OPEN`] failures in a row it opens, and calls fail at once (a counted
//! fast failure) instead of waiting on connect and pool timeouts; after an open period — capped exponential
//! backoff with jitter, [`OPEN_MIN`] doubling up to [`OPEN_MAX`] while probes keep failing — the next call is
//! let through alone as the probe (half-open) while the others still fail fast; its success closes the
//! breaker, its failure opens it again for a longer period. Nobody has to restart anything: whatever calls
//! next (a request, `/ready`, the outbox relay's poll) probes.
//!
//! Why our own and not a crate: `failsafe` (the maintained circuit breaker of crates.io; tower has none) lets
//! *every* call through while half-open, so a dependency that black-holes connections gets a stampede of
//! callers each waiting on its connect timeout at every probe — what a breaker is meant to prevent — and it
//! would bring a second `rand`. What we need (one probe, a state gauge, a fast-failure counter, our backoff)
//! is the small state machine below, tested here.
//!
//! [`backoff`] is the one capped exponential backoff with jitter: the breakers' open periods, the relay's and
//! the consumer's reconnects, the consumer's transient retries and the migrations' connect use it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Failures in a row (no success between them) that open a breaker.
pub const FAILURES_TO_OPEN: u32 = 5;
/// The first open period of a breaker (before jitter).
pub const OPEN_MIN: Duration = Duration::from_millis(500);
/// The longest open period: a dependency that stays down is probed at least this often.
pub const OPEN_MAX: Duration = Duration::from_secs(15);
/// A probe that has not reported by then is presumed lost (its task was cancelled mid-call), and the next
/// call probes instead: a breaker never stays half-open forever.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Spread of [`backoff`]'s jitter: each wait is its base times a factor in `1 ± JITTER`.
pub const JITTER: f64 = 0.2;

/// The gauge of each breaker's state, labelled `dependency`: 0 closed, 1 half-open, 2 open.
pub const STATE_METRIC: &str = "wallet_dependency_breaker_state";
/// Calls refused at once because the dependency's breaker was open, labelled `dependency`.
pub const FAST_FAILURES_METRIC: &str = "wallet_dependency_fast_failures_total";
/// Times a breaker opened (from closed or after a failed probe), labelled `dependency`.
pub const OPENED_METRIC: &str = "wallet_dependency_breaker_opened_total";

/// `min · 2^attempt`, capped at `max`, with ±[`JITTER`] so that many clients do not retry in step; never above
/// `max`. Attempt 0 is the first retry.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let base = min.saturating_mul(2u32.saturating_pow(attempt.min(20))).min(max);
    let jitter: f64 = rand::random_range((1.0 - JITTER)..(1.0 + JITTER));
    base.mul_f64(jitter).min(max)
}

/// A breaker's state as the metric shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// The gauge's value.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failures_to_open: u32,
    pub open_min: Duration,
    pub open_max: Duration,
    pub probe_timeout: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failures_to_open: FAILURES_TO_OPEN,
            open_min: OPEN_MIN,
            open_max: OPEN_MAX,
            probe_timeout: PROBE_TIMEOUT,
        }
    }
}

/// A call refused because the breaker is open: the dependency failed repeatedly and is not being tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{dependency} is failing; its circuit breaker is open")]
pub struct Open {
    pub dependency: &'static str,
    /// Until the next probe may go (a client's sensible wait).
    pub retry_in: Duration,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { since: Instant },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Open periods in a row (reset when the breaker closes): the exponent of the next open period.
    trips: u32,
}

/// A circuit breaker of one dependency. Cheap to share (`Arc`); its lock is held for a few instructions,
/// never across a call.
#[derive(Debug)]
pub struct Breaker {
    dependency: &'static str,
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker; its gauge is set to closed.
    pub fn new(dependency: &'static str, policy: BreakerPolicy) -> Arc<Breaker> {
        metrics::gauge!(STATE_METRIC, "dependency" => dependency).set(BreakerState::Closed.gauge());
        Arc::new(Breaker {
            dependency,
            policy,
            inner: Mutex::new(Inner {
                state: State::Closed { failures: 0 },
                trips: 0,
            }),
        })
    }

    pub fn dependency(&self) -> &'static str {
        self.dependency
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state is a few plain fields, each transition complete before the lock is released: a
        // panic elsewhere while holding it cannot leave it half-written, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state now (an open breaker whose period is over still reads open until a call probes).
    pub fn state(&self) -> BreakerState {
        match self.lock().state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How long a client should wait before calling again while the breaker refuses calls: the rest of the
    /// open period (zero when it is over and the next call will probe), `open_min` while a probe is out;
    /// `None` while closed.
    pub fn retry_in(&self) -> Option<Duration> {
        match self.lock().state {
            State::Closed { .. } => None,
            State::Open { until } => Some(until.saturating_duration_since(Instant::now())),
            State::HalfOpen { .. } => Some(self.policy.open_min),
        }
    }

    fn set(&self, inner: &mut Inner, state: State) {
        let shown = match state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        };
        inner.state = state;
        metrics::gauge!(STATE_METRIC, "dependency" => self.dependency).set(shown.gauge());
    }

    /// Asks to make a call. Closed: go. Open: refused at once ([`Open`], counted) — unless the open period
    /// is over, then this call goes alone as the probe (half-open). The call's outcome must be reported on
    /// the returned [`Call`]; one dropped unreported counts as neither (a dropped probe lets the next call
    /// probe).
    pub fn admit(self: &Arc<Self>) -> Result<Call, Open> {
        let now = Instant::now();
        let mut inner = self.lock();
        let probe = match inner.state {
            State::Closed { .. } => false,
            State::Open { until } if now >= until => {
                self.set(&mut inner, State::HalfOpen { since: now });
                true
            }
            State::HalfOpen { since } if now.duration_since(since) >= self.policy.probe_timeout => {
                self.set(&mut inner, State::HalfOpen { since: now });
                true
            }
            State::Open { until } => return Err(self.refuse(until.saturating_duration_since(now))),
            State::HalfOpen { .. } => return Err(self.refuse(self.policy.open_min)),
        };
        Ok(Call {
            breaker: self.clone(),
            probe,
            reported: false,
        })
    }

    fn refuse(&self, retry_in: Duration) -> Open {
        metrics::counter!(FAST_FAILURES_METRIC, "dependency" => self.dependency).increment(1);
        Open {
            dependency: self.dependency,
            retry_in,
        }
    }

    fn succeeded(&self) {
        let mut inner = self.lock();
        match inner.state {
            State::Closed { failures: 0 } => {}
            State::Closed { .. } => inner.state = State::Closed { failures: 0 },
            // A call admitted before the breaker opened may succeed after it: the dependency answers, so
            // close (the probe would have found the same).
            State::Open { .. } | State::HalfOpen { .. } => {
                inner.trips = 0;
                self.set(&mut inner, State::Closed { failures: 0 });
                tracing::info!(
                    dependency = self.dependency,
                    "dependency answers again; circuit breaker closed"
                );
            }
        }
    }

    fn failed(&self, probe: bool) {
        let mut inner = self.lock();
        let open = match inner.state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures < self.policy.failures_to_open {
                    inner.state = State::Closed { failures };
                    false
                } else {
                    true
                }
            }
            State::HalfOpen { .. } => probe,
            // Already open: a late failure of a call admitted earlier changes nothing.
            State::Open { .. } => false,
        };
        if open {
            let period = backoff(inner.trips, self.policy.open_min, self.policy.open_max);
            inner.trips = inner.trips.saturating_add(1);
            self.set(
                &mut inner,
                State::Open {
                    until: Instant::now() + period,
                },
            );
            metrics::counter!(OPENED_METRIC, "dependency" => self.dependency).increment(1);
            tracing::warn!(
                dependency = self.dependency,
                open_ms = period.as_millis() as u64,
                "dependency failing; circuit breaker open, calls fail fast until a probe succeeds"
            );
        }
    }

    /// A probe dropped without an outcome: the next call probes.
    fn abandoned(&self) {
        let mut inner = self.lock();
        if let State::HalfOpen { .. } = inner.state {
            self.set(&mut inner, State::Open { until: Instant::now() });
        }
    }
}

/// An admitted call: report how it went.
#[must_use = "report the call's outcome (success, failure or neutral)"]
pub struct Call {
    breaker: Arc<Breaker>,
    probe: bool,
    reported: bool,
}

impl Call {
    /// Whether this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The dependency answered.
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.succeeded();
    }

    /// The dependency failed (unreachable, timed out).
    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.failed(self.probe);
    }

    /// The outcome says nothing about the dependency (e.g. a refusal of our own data): no change; a probe
    /// hands over to the next call.
    pub fn neutral(self) {
        drop(self);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.abandoned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(open: Duration) -> BreakerPolicy {
        BreakerPolicy {
            failures_to_open: 3,
            open_min: open,
            open_max: open * 2,
            probe_timeout: Duration::from_secs(60),
        }
    }

    fn trip(b: &Arc<Breaker>) {
        for _ in 0..3 {
            b.admit().expect("closed").failure();
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        assert!(backoff(0, min, max) <= Duration::from_millis(120));
        assert!(backoff(0, min, max) >= Duration::from_millis(80));
        assert!(backoff(3, min, max) >= Duration::from_millis(640));
        for a in [5, 10, 40, u32::MAX] {
            assert!(backoff(a, min, max) <= max);
            assert!(backoff(a, min, max) >= max.mul_f64(1.0 - JITTER));
        }
    }

    #[test]
    fn backoff_is_jittered() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(60));
        let waits: std::collections::BTreeSet<Duration> = (0..20).map(|_| backoff(4, min, max)).collect();
        assert!(waits.len() > 1, "twenty waits were all {waits:?}");
    }

    #[test]
    fn a_breaker_opens_after_failures_in_a_row_only() {
        let b = Breaker::new("test-a", policy(Duration::from_secs(60)));
        b.admit().unwrap().failure();
        b.admit().unwrap().failure();
        b.admit().unwrap().success();
        b.admit().unwrap().failure();
        b.admit().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Closed, "a success in between resets the count");
        b.admit().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        let refused = b.admit().err().expect("open refuses");
        assert_eq!(refused.dependency, "test-a");
        assert!(refused.retry_in > Duration::ZERO && refused.retry_in <= Duration::from_secs(120));
    }

    #[test]
    fn the_wait_it_advises_is_the_rest_of_the_open_period_and_none_once_closed() {
        let b = Breaker::new("test-f", policy(Duration::from_secs(60)));
        assert_eq!(b.retry_in(), None, "closed: no wait");
        trip(&b);
        let wait = b.retry_in().expect("open: a wait");
        let refused = b.admit().err().expect("open refuses");
        assert!(
            wait > Duration::from_secs(40) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        assert!(
            refused.retry_in <= wait,
            "the wait only shrinks: {refused:?} after {wait:?}"
        );

        let b = Breaker::new("test-g", policy(Duration::from_millis(20)));
        trip(&b);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.retry_in(), Some(Duration::ZERO), "period over: the next call probes");
        let probe = b.admit().expect("probe");
        assert_eq!(b.retry_in(), Some(Duration::from_millis(20)), "a probe out: open_min");
        probe.success();
        assert_eq!(b.retry_in(), None);
    }

    #[test]
    fn after_the_open_period_one_probe_goes_and_its_success_closes_the_breaker() {
        let b = Breaker::new("test-b", policy(Duration::from_millis(20)));
        trip(&b);
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(60));
        let probe = b.admit().expect("the open period is over: a probe");
        assert!(probe.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit().is_err(), "only one probe at a time");
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.admit().unwrap().is_probe());
    }

    #[test]
    fn a_failed_probe_opens_the_breaker_again_for_longer() {
        let b = Breaker::new("test-c", policy(Duration::from_millis(20)));
        trip(&b);
        std::thread::sleep(Duration::from_millis(60));
        b.admit().expect("probe").failure();
        assert_eq!(b.state(), BreakerState::Open);
        let refused = b.admit().err().expect("open again");
        // The second period is 2 × 20 ms (± jitter, capped at 40 ms): longer than the first's upper bound.
        assert!(refused.retry_in > Duration::from_millis(24), "{refused:?}");
    }

    #[test]
    fn a_dropped_probe_lets_the_next_call_probe() {
        let b = Breaker::new("test-d", policy(Duration::from_millis(20)));
        trip(&b);
        std::thread::sleep(Duration::from_millis(60));
        drop(b.admit().expect("probe"));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit().expect("next probe").is_probe());
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced_after_the_probe_timeout() {
        let b = Breaker::new(
            "test-e",
            BreakerPolicy {
                probe_timeout: Duration::from_millis(30),
                ..policy(Duration::from_millis(10))
            },
        );
        trip(&b);
        std::thread::sleep(Duration::from_millis(30));
        let stuck = b.admit().expect("probe");
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(50));
        assert!(b.admit().expect("a new probe").is_probe());
        stuck.neutral();
    }
}
