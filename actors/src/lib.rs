//! The wallet engine: one [ractor] actor per active wallet, serializing that wallet's credits, debits,
//! transfers and status changes, validating them against its in-memory state and committing them through
//! a store before it answers.
//!
//! This crate knows money and wallets and nothing of HTTP, AMQP or Redis: the service reaches it through
//! [`Engine`] and gives it a database through the [`WalletStore`] trait.
//!
//! # Module map
//! From the bottom up. After `→`, the modules each one names (imports and doc links alike); each names only
//! modules listed before it, so no import circles. `tests/module_map.rs` checks this list against the sources.
//! - [`money`]: `Amount` (exact, two decimals, bounded by `DECIMAL(15,2)`) and `Currency`.
//! - [`chain`]: the per-wallet hash chain: `canonical_v1` (the one encoding of a chained row), `link`,
//!   `Head`, the Merkle root of checkpoints. Pure; SHA-256 only.
//! - [`budget`]: `Budget`, periods (ISO week, month, quarter, year), threshold crossings. → money
//! - [`monitor`]: suspicious-activity rules on the wallet's recent debits (velocity, refused runs,
//!   outliers, many callers), a bounded sketch kept by the actor. → money
//! - [`state`]: `WalletState` (the committed row, with its open holds and the available balance at an
//!   instant, and its chain head), `Hold`, `Entry` (one transaction row, with its link), `Origin` (who
//!   asked). → money, chain, budget
//! - [`outcome`]: `Applied`, what a command did, and `Rejection`, every reason a command is not applied,
//!   with `transient()` and `code()`. → money, budget, state
//! - [`store`]: the `WalletStore` trait (load, commit a batch, commit a transfer) and its batch types
//!   (the chained `AuditEvent` among them). → money, chain, budget, state, outcome
//! - [`limits`]: `Limits`, the engine's bounds and settings, each with a named default. → budget, monitor
//! - [`command`]: `Command` and `Request`, and one file per command (post, transfer, status, budget
//!   create and update, holds: place, capture, void and expiry), each planning itself against the
//!   simulated wallet into a draft batch, sealed for the chain when closed; `plan_opening`, a new wallet's
//!   opening credit; and `plan_postings`, a posting's planning as a pure function for callers that write a
//!   batch in a transaction of their own (atomic bulk postings).
//!   → money, chain, budget, monitor, state, outcome, store, limits
//! - [`messages`]: the actor's mailbox `WalletMsg`, and what travels through it: reply ports, queue
//!   tickets, a command's `Fate`, the flight a commit task reports back.
//!   → monitor, state, outcome, store, command
//! - [`registry`]: live wallets and their queued counts, the idle race, `RetireHandle`.
//!   → outcome, limits, messages
//! - [`wallet`]: `WalletActor`: the queue, group commit, settling a commit's result, conflict re-planning.
//!   → monitor, state, outcome, store, limits, command, messages, registry
//! - [`supervisor`]: `Engine`: find-or-spawn, the per-wallet queue bound, restarts, idle sweeps, drain;
//!   `execute_many`, several commands of one wallet queued together in order (bulk postings).
//!   → state, outcome, store, limits, messages, registry, wallet
//! - [`memory`]: an in-memory `WalletStore` for tests of the engine. → money, chain, state, outcome, store
//!
//! # A command's path
//! `Engine::execute` → registry slot (queue ticket, bound) → the wallet's actor (spawned from the store on
//! first use) → `pending` → each command plans itself (`command/`) with its neighbours into a `Batch` →
//! `WalletStore::commit` on a task (guarded by the row's version) → `CommitDone` → each caller answered.

pub mod budget;
pub mod chain;
pub mod command;
pub mod limits;
pub mod memory;
pub mod messages;
pub mod money;
pub mod monitor;
pub mod outcome;
pub mod registry;
pub mod state;
pub mod store;
pub mod supervisor;
pub mod wallet;

pub use budget::{Budget, BudgetAlert, BudgetStatus, PeriodType};
pub use command::{Command, Direction, Request};
pub use limits::Limits;
pub use money::{Amount, AmountError, Currency, UnknownName};
pub use outcome::{Applied, Rejection};
pub use state::{Entry, Hold, HoldStatus, IdempotencyTicket, InboxEvent, Origin, TxnType, WalletState, WalletStatus};
pub use store::{Batch, CommitError, StoreError, TransferError, TransferPlan, WalletStore};
pub use supervisor::{Engine, EngineStartError};
