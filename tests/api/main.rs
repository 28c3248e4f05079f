//! The service's integration tests as one test binary (`cargo test --test api`), zero-to-production style:
//! `helpers/` holds what every test needs (its own database, the app in-process or the real binary as a
//! process, tokens and fixtures, an auditor of the books), the other modules hold the tests. Each test has
//! a database of its own (and a RabbitMQ vhost of its own when it needs a broker), so tests run in
//! parallel (nextest runs each in a process of its own).
//!
//! The app in-process (`helpers::app`), over HTTP and SQL:
//! - `smoke`: a debit and the docs page, end to end.
//! - `dashboard`: the managers' page (`GET /dashboard`) in Debian's headless Chromium, driven by
//!   `tests/browser/dashboard.mjs` (playwright-core): its numbers against the API's, the period switch, the
//!   CSV, screenshots under `target/dashboard/`.
//! - `wallets`, `transactions`, `transfers`, `budgets`: the endpoints, their rules and who may call them.
//! - `auth`: every way a token can be wrong; `idempotency`: `Idempotency-Key` semantics;
//!   `strict_input`: what is refused at the edge; `surface`: docs, problem pages, headers, histograms.
//! - `batch`: bulk postings (`POST /transactions/batch`): independent and atomic, one key for the batch,
//!   a retry after a crash mid-batch, the limits, the books under bulk and single postings on two instances.
//! - `concurrency`: many requests on one wallet, two instances over one database; `cache_redis`: the
//!   shared wallet cache; `rate_limit`: 429s per caller.
//! - `audit_chain`: the per-wallet hash chains, verify (HTTP and CLI) and checkpoints; each tampering in
//!   SQL caught and named.
//! - `transport`: `/metrics` on `METRICS_PORT` only; HTTPS with TLS 1.3 only (self-signed certificates made
//!   per test): a TLS 1.3 exchange, a TLS 1.2 client and plain HTTP refused, the drain, bad files refused.
//! - `lifecycle`: draining, readiness, idle actors; `store_errors`: opaque 5xx when the database fails.
//! - `store`: the store driven directly: the claim fence (`store::claims`), the group committer
//!   (`store::group_commit`), upkeep (`store::upkeep`).
//! - `events`: bookings, users, poison, the outbox relay, stops and reconnects through a real RabbitMQ.
//!
//! `resilience`: the dependencies' circuit breakers against the real binary: Postgres stopped (fast 503s,
//! the breaker closing by itself), Redis killed under traffic (no failed request), a Redis Cluster.
//!
//! `faults`: process-level fault tests (issue 10). Each starts the real `wallet-service` binary, drives it
//! from outside as a booking service would (keyed requests retried with the same `Idempotency-Key` until a
//! final answer), breaks something (row locks, SIGTERM, SIGKILL, a Postgres stop, the broker closing the
//! consumer's connection) and audits the database: for every operation, exactly one effect iff the client's
//! final answer was 2xx, a 2xx replay equal to the first byte for byte, and every balance equal to its
//! ledger. Each prints a one-line JSON summary and appends it to `target/faults/summary.jsonl`.
//!
//! `scale`: scaling out (issue 15): three processes behind a real HAProxy routing by consistent hash on the
//! wallet, under HTTP load and booking events, one of them SIGKILLed and restarted; and a private primary with a
//! streaming replica behind `DATABASE_READ_URL`: reads served there, read-your-writes, the replica stopped.

mod audit_chain;
mod auth;
mod batch;
mod budgets;
mod cache_redis;
mod concurrency;
mod dashboard;
mod events;
mod faults;
mod gaps;
mod helpers;
mod holds;
mod idempotency;
mod lifecycle;
mod rate_limit;
mod reports;
mod resilience;
mod scale;
mod smoke;
mod spend;
mod store;
mod store_errors;
mod strict_input;
mod surface;
mod suspicious;
mod transactions;
mod transfers;
mod transport;
mod wallets;
