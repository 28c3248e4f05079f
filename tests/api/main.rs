//! The service's integration tests as one test binary (`cargo test --test api`), zero-to-production style:
//! `helpers/` holds what every test needs (its own database, the real binary as a process, clients, an
//! auditor of the books), the other modules hold the tests.
//!
//! - `faults`: process-level fault tests (issue 10). Each starts the real `wallet-service` binary, drives it
//!   from outside as a booking service would (keyed requests retried with the same `Idempotency-Key` until
//!   a final answer), breaks something (row locks, SIGTERM, SIGKILL, a Postgres stop, the broker closing the
//!   consumer's connection) and audits the database: for every operation, exactly one effect iff the
//!   client's final answer was 2xx, a 2xx replay equal to the first byte for byte, and every balance equal
//!   to its ledger. Each prints a one-line JSON summary and appends it to `target/faults/summary.jsonl`.

mod faults;
mod helpers;
