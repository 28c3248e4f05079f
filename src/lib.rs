//! Wallet & Budget service: HTTP (warp) in front of an engine of per-wallet actors (`wallet-actors`),
//! with PostgreSQL as the truth.
//!
//! # Module map
//! Arrows run one way (adapters → use cases → store and engine; nothing below imports anything above):
//! `app` → `http`, `events` → `service` → `problem` → `store` → `cache`, `views` → `schema`; `config`,
//! `telemetry`, `tls` sit beside `app`; `auth`, `crypto`, `decode`, `resilience` are leaves for whoever needs them.
//! Every error is an enum (thiserror), and a store row is read by column name (`store::col`), never by a
//! panicking position.
//! - [`app`]: `App::build(config)` wires everything; `App::run(shutdown)` serves and drains (the API port,
//!   and with `METRICS_PORT` a metrics port of its own); `listen` binds them with `TCP_NODELAY`.
//! - [`tls`]: HTTPS for the API port, TLS 1.3 only (rustls on aws-lc-rs): PEM loading and the accept
//!   loop that hands each handshaken connection to the warp routes, with the same graceful drain.
//! - [`service`]: THE USE-CASE LAYER. `Service` alone holds the engine, the store and the cache and
//!   offers typed operations with enum errors: post, transfer, status, budgets (through the wallet's
//!   actor), wallets (the opening balance planned by the engine's `command::plan_opening`), users, reads,
//!   readiness; `service::idempotency` (the keyed operations `post_keyed`, `transfer_keyed`,
//!   `create_wallet_keyed`, `place_hold_keyed`, `capture_hold_keyed`: claim before, fenced commit, a
//!   refusal's problem recorded as the reply, resolution of unknown outcomes); `service::bookings` (booking
//!   and user events as use cases, inbox in the effect's commit: debits, holds, confirmations, refunds);
//!   `service::budgets` (expiry sweep, default budgets); `service::holds` (place, capture, void through the
//!   wallet's actor; hold reads; the expiry sweep); `service::batch` (bulk postings: independent items
//!   through `Engine::execute_many`, atomic ones in one transaction, per-item derived Idempotency-Keys);
//!   `service::audit` (verify of the hash chains and checkpoints naming the first broken row,
//!   checkpoints, the start-up chaining of pre-chain rows, the reports' aggregates recomputed from the
//!   ledger); `service::reports` (who a report may cover, balance at an instant, budgets, spend from the
//!   folded aggregates and the ledger's tail, the fold, latest transactions, wallets by status).
//! - [`problem`]: problem documents (RFC 9457): the catalogue of codes, `ApiError` and its JSON text, and
//!   `Answer`, what each failure of a use case answers (pure, so a recorded reply is the client's text).
//! - [`http`]: the HTTP adapter: `http::Ctx` (auth, service, rate limit, metrics), routes, thin handlers
//!   that parse, authorize, call one operation and render (`http::holds` for the hold routes,
//!   `http::batch` for `POST /transactions/batch` with its own body limit, `http::audit` for
//!   `GET /admin/audit/verify`, `http::reports` for the reports in JSON or CSV, `http::reports::spend`
//!   for spend, latest transactions and wallets by status); the
//!   Idempotency-Key header as a `KeyRequest` and a keyed outcome as a reply; problem+json responses
//!   (headers); OpenAPI; the `/docs` viewer (Swagger UI, embedded by `build.rs`) and the `/problems` pages;
//!   `http::dashboard`, the managers' page `GET /dashboard` (our files from `web/dashboard/` and Chart.js,
//!   embedded by `build.rs`; the page itself calls the reports with the token it asks for).
//! - [`events`]: the AMQP adapter: consumer (decode → `service` → ack), outbox relay with publisher
//!   confirms, topology, or an in-process bus without `AMQP_URL`; each connection behind its breaker.
//! - [`store`]: Postgres: the engine's `WalletStore` (`store::committer`: the shared `GroupCommitter`;
//!   `store::rows`: what a commit writes; `store::idempotency`: claims and their fence; `store::budgets`;
//!   `store::holds`: open holds loaded with the wallet, a batch's hold rows and budget deltas, hold reads;
//!   `store::bookings`: inbox, refused bookings, default-budget lock; `store::outbox`: the relay's pass;
//!   `store::batch`: item key claims of a bulk posting, the atomic batch's transaction;
//!   `store::audit`: the hash chains' and checkpoints' SQL, the start-up chaining step;
//!   `store::reports`: the reports' SQL on the read pool (balance at an instant, budgets, latest
//!   transactions, wallets by status); `store::spend`: the spend report (`spend_monthly`, `spend_daily` and
//!   the ledger's unfolded tail in one snapshot), the fold that keeps those aggregates off the commit path
//!   (`sql/V12`, run every 10 s by `app`), and their recomputation from the ledger;
//!   `store::reader`: cache misses of wallet reads, grouped into one round trip;
//!   `store::read`: `col`, a column by name (`Corrupt`, never a panic); `store::pool`: the pools behind
//!   their circuit breakers (fail fast while open, before any statement);
//!   `store::replica`: read-your-writes over `DATABASE_READ_URL` (each wallet's last commit WAL position,
//!   the replica's replay position, the fallback to the primary: `PgStore::read_client`);
//!   `store::db`: pools (statement and lock timeouts, no JIT, connections replaced after 30 minutes),
//!   migrations (`sql/`, under an advisory lock), partitions, pruning, readiness), users, wallets, history.
//!   Every SQL statement is under `store/`.
//! - [`cache`]: wallet states written through after each commit (Redis, a Redis Cluster, or in process),
//!   versioned; Redis behind its breaker, so Redis down costs speed, never a failed request.
//! - [`resilience`]: the circuit breaker of each dependency (Postgres, Redis, RabbitMQ's publisher and
//!   consumer: one probe when half-open, state gauge, fast-failure counter) and `backoff`, the one capped
//!   exponential backoff with jitter of every retry.
//! - [`views`]: the JSON shapes of replies, idempotent replays and events; [`schema`]: their
//!   documentation-only OpenAPI types.
//! - [`config`]: environment variables of the contract, validated at start (`config::Transport`: the
//!   metrics port and the TLS files); [`telemetry`]: logs, metrics.
//! - [`auth`]: JWT validation and who-may-see-what rules; [`crypto`]: AES-256-GCM for PII;
//!   [`decode`]: strict JSON (one document, no NUL in any text).
//!
//! # A debit's path
//! `http::routes` (body ≤ 64 KiB) → `handlers::post_transaction` (JWT → caller, strict JSON → posting,
//! role check, Idempotency-Key → `KeyRequest`) → `service::Service::post_keyed` (the key's claim with a
//! fence token) → `service::Service::post` →
//! `wallet_actors::Engine::execute` → the wallet's actor plans it (balance, status, budgets) with the
//! commands queued beside it and hands the batch to `store::PgStore::commit` → `store::GroupCommitter`
//! writes it with other wallets' batches in one commit (plain credits and debits: one statement with the
//! claim fence, the guarded UPDATE and the rows, references, outbox, idempotent reply joined to it;
//! others: savepoints) → the wallet cache is written through → 201 after the commit.
//!
//! A booking event takes the same path from `events::handler` into `service::bookings`, with its event id
//! written to the inbox in the same transaction, and is acked after the commit.

pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod crypto;
pub mod decode;
pub mod events;
pub mod http;
pub mod problem;
pub mod resilience;
pub mod schema;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod views;
