//! Wallet & Budget service: HTTP (warp) in front of an engine of per-wallet actors (`wallet-actors`),
//! with PostgreSQL as the truth.
//!
//! # Module map
//! - [`app`]: `App::build(config)` and `App::run(shutdown)`; `Ctx`, what handlers share.
//! - [`cache`]: wallet states written through after each commit (Redis, or in process), versioned.
//! - [`config`]: environment variables of the contract, validated at start.
//! - [`telemetry`]: tracing subscriber (text or JSON).
//! - [`auth`]: JWT validation (pinned algorithm, exp/iss/aud/nbf; verified tokens remembered until their
//!   `exp`, bounded) and who-may-see-what rules.
//! - [`crypto`]: AES-256-GCM for PII (e-mails) and the keyed look-up hash.
//! - [`budgets`]: budget SQL written in the wallet's batch, the expiry sweep, default budgets, views.
//! - [`money`]: `Ledger`, the one path to money for HTTP and events.
//! - [`events`]: RabbitMQ in (bookings, users → ledger, with an inbox) and out (outbox relay with
//!   publisher confirms), or an in-process bus without `AMQP_URL`.
//! - [`users`]: recording users (`PUT /users` and `UserCreated`).
//! - [`store`]: Postgres: the engine's `WalletStore` (`store::committer`: the shared `GroupCommitter`, many
//!   wallets' guarded batches in one commit; `store::rows`: the rows a commit writes; transfers) and the
//!   HTTP reads.
//! - [`db`]: pools, migrations (`sql/`, under an advisory lock), partitions, pruning, readiness checks.
//! - [`decode`]: strict JSON for HTTP bodies and consumed events (one document, no NUL in any text).
//! - [`http`]: routes, thin handlers, idempotency, problem+json errors (with the problem catalogue), OpenAPI,
//!   the `/docs` viewer (Swagger UI, embedded by `build.rs`) and the `/problems` pages.
//! - [`views`]: the JSON shapes of replies, idempotent replays and events.
//!
//! # A debit's path
//! `http::routes` (body ≤ 64 KiB) → `handlers::post_transaction` (JWT → caller, strict JSON → posting,
//! role check, Idempotency-Key claim) → `money::Ledger::post` → `wallet_actors::Engine::execute` → the
//! wallet's actor validates it (balance, status, budgets) with the commands queued beside it and hands the
//! batch to `store::PgStore::commit` → `store::GroupCommitter` writes it with other wallets' batches in
//! one commit (plain credits and debits: one statement with the guarded UPDATE and the rows, references,
//! outbox, idempotent reply joined to it; others: savepoints with budget charges and audit) → the wallet
//! cache is written through → 201 after the commit.
//!
//! A booking event takes the same path from `events::handler` into `money::Ledger`, with its event id
//! written to the inbox in the same transaction, and is acked after the commit.

pub mod app;
pub mod auth;
pub mod budgets;
pub mod cache;
pub mod config;
pub mod crypto;
pub mod db;
pub mod decode;
pub mod events;
pub mod http;
pub mod money;
pub mod store;
pub mod telemetry;
pub mod users;
pub mod views;
