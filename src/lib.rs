//! Wallet & Budget service: HTTP (warp) in front of an engine of per-wallet actors (`wallet-actors`),
//! with PostgreSQL as the truth.
//!
//! # Module map
//! - [`app`]: `App::build(config)` and `App::run(shutdown)`; `Ctx`, what handlers share.
//! - [`cache`]: wallet states written through after each commit (Redis, or in process), versioned.
//! - [`config`]: environment variables of the contract, validated at start.
//! - [`telemetry`]: tracing subscriber (text or JSON).
//! - [`auth`]: JWT validation (pinned algorithm, exp/iss/aud/nbf) and who-may-see-what rules.
//! - [`crypto`]: AES-256-GCM for PII (e-mails) and the keyed look-up hash.
//! - [`budgets`]: budget SQL written in the wallet's batch, the expiry sweep, default budgets, views.
//! - [`money`]: `Ledger`, the one path to money for HTTP and events.
//! - [`events`]: RabbitMQ in (bookings, users → ledger, with an inbox) and out (outbox relay with
//!   publisher confirms), or an in-process bus without `AMQP_URL`.
//! - [`users`]: recording users (HTTP now, `UserCreated` later).
//! - [`store`]: Postgres: the engine's `WalletStore` (guarded batch commits, transfers) and HTTP reads.
//! - [`db`]: pools, migrations (`sql/`, under an advisory lock), partition upkeep, readiness ping.
//! - [`http`]: routes, thin handlers, idempotency, problem+json errors, OpenAPI.
//! - [`views`]: the JSON shapes of replies, idempotent replays and events.
//!
//! # A debit's path
//! `http::routes` (body ≤ 64 KiB) → `handlers::post_transaction` (JWT → caller, strict JSON → posting,
//! role check, Idempotency-Key claim) → `money::Ledger::post` → `wallet_actors::Engine::execute` → the
//! wallet's actor validates and group-commits through `store::PgStore::commit` (guarded UPDATE, rows,
//! outbox, idempotent reply, audit — one transaction) → 201 after the commit.

pub mod app;
pub mod auth;
pub mod budgets;
pub mod cache;
pub mod config;
pub mod crypto;
pub mod db;
pub mod events;
pub mod http;
pub mod money;
pub mod store;
pub mod telemetry;
pub mod users;
pub mod views;
