//! Process-level fault tests (issue 10). Each starts the real binary, drives it from outside with keyed
//! requests retried until final, breaks something, and audits the books (see `helpers::audit`). Each test
//! emits its figures (`helpers::summary`) before it asserts, so a failing run still reports them.
//!
//! | test | fault |
//! |---|---|
//! | [`row_lock`] | a wallet row held `FOR UPDATE` longer than the reply timeout |
//! | [`sigterm`] | SIGTERM while a commit is stalled on a row lock, then a restart and the retry |
//! | [`kill_nine`] | SIGKILL three times under concurrent debits, credits and transfers |
//! | [`postgres_stop`] | Postgres (a private cluster) stopped `-m immediate` for 10 s under load |
//! | [`consumer_connection`] | the broker closes the consumer's connection twice during a stream of bookings |

use std::fmt::Display;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::audit::AuditReport;
use crate::helpers::service::{IDEMPOTENCY_LEASE, ServiceProcess};
use crate::helpers::summary;

mod consumer_connection;
mod kill_nine;
mod postgres_stop;
mod row_lock;
mod sigterm;

/// A key held by a process that died or stalled must be answerable (not 409 `IDEMPOTENCY_IN_PROGRESS`)
/// once its lease is over; one second of slack for the clocks and the request's own latency.
pub const KEY_ANSWERABLE_WITHIN: Duration = IDEMPOTENCY_LEASE.saturating_add(Duration::from_secs(1));

/// A seed for a test's randomness, printed in its summary so that a run can be replayed in shape.
pub fn seed() -> u64 {
    std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        })
}

/// Milliseconds, for summaries.
pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// How a fault test ends: its figures, with the rules it found broken, go to the summary; then it fails if
/// any rule was broken, saying which and `context`.
pub fn conclude(test: &str, mut figures: Value, violations: Vec<String>, context: impl Display) {
    figures["violations"] = json!(violations);
    summary::emit(test, figures);
    assert!(violations.is_empty(), "{violations:#?}\n{context}");
}

/// The context of a failed audit: examples of what broke, and the service's log.
pub fn audit_context(report: &AuditReport, svc: &ServiceProcess) -> String {
    format!(
        "examples: {:#?}\nservice log: {}",
        report.examples,
        svc.log_path().display()
    )
}
