//! The wallet engine: one [ractor] actor per active wallet, serializing that wallet's credits, debits,
//! transfers and status changes, validating them against its in-memory state and committing them through
//! a store before it answers.
//!
//! This crate knows money and wallets and nothing of HTTP, AMQP or Redis: the service reaches it through
//! [`Engine`] and gives it a database through the [`WalletStore`] trait.
//!
//! # Module map
//! - [`money`]: `Amount` (exact, two decimals, bounded by `DECIMAL(15,2)`) and `Currency`.
//! - [`budget`]: `Budget`, periods (ISO week, month, quarter, year), threshold crossings.
//! - [`state`]: `WalletState` (the committed row), `Entry` (one transaction row), `Origin` (who asked).
//! - [`messages`]: `Command`, `Request`, `Applied` and the actor's mailbox `WalletMsg`.
//! - [`outcome`]: `Rejection`, every reason a command is not applied, with `transient()` and `code()`.
//! - [`store`]: the `WalletStore` trait (load, commit a batch, commit a transfer) and its batch types.
//! - [`wallet`]: `WalletActor`: validation, group commit, conflict re-planning.
//! - [`supervisor`]: `Engine`: find-or-spawn, the per-wallet queue bound, restarts, idle stop.
//! - [`memory`]: an in-memory `WalletStore` for tests of the engine.
//!
//! # A command's path
//! `Engine::execute` → registry slot (queue ticket, bound) → the wallet's actor (spawned from the store on
//! first use) → `pending` → planned with its neighbours into a `Batch` → `WalletStore::commit` on a task
//! (guarded by the row's version) → `CommitDone` → each caller answered.

pub mod budget;
pub mod memory;
pub mod messages;
pub mod money;
pub mod outcome;
pub mod state;
pub mod store;
pub mod supervisor;
pub mod wallet;

pub use budget::{Budget, BudgetAlert, BudgetStatus, PeriodType};
pub use messages::{Applied, Command, Direction, Request};
pub use money::{Amount, AmountError, Currency};
pub use outcome::Rejection;
pub use state::{Entry, IdempotencyTicket, InboxEvent, Origin, TxnType, WalletState, WalletStatus};
pub use store::{Batch, CommitError, StoreError, TransferError, TransferPlan, WalletStore};
pub use supervisor::{Engine, Limits};
