//! The trait through which the engine reaches the database. The service implements it over Postgres;
//! `memory::MemoryStore` implements it in memory for the engine's own tests.
//!
//! Every write is *guarded*: a batch names the wallet version it was planned against, and the store
//! applies it only if the row still has that version. That is what keeps two processes (two actors for
//! one wallet) from overdrawing or losing a write: the loser gets [`CommitError::VersionConflict`],
//! reloads and plans again.

use async_trait::async_trait;
use uuid::Uuid;

use crate::chain::Link;
use crate::money::Amount;
use crate::outcome::Rejection;
use crate::state::{Entry, Hold, Origin, WalletState, WalletStatus};

/// Why the store failed, by what failed. Each variant carries the underlying cause as text, for the
/// log only: it may name the database, a library or the operating system, so it never goes to a client
/// (the service turns a `StoreError` into a generic 503 or 500 in one place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached: no connection from the pool in time, the connection failed or
    /// closed, the server is shutting down or out of resources. Retrying later may succeed.
    #[error("database unreachable: {0}")]
    Unreachable(String),
    /// The database is up but could not run the statement now: a lock or statement timeout, a
    /// serialization failure or a deadlock. Retrying later may succeed.
    #[error("database busy: {0}")]
    Busy(String),
    /// The database refused a statement for the data it carried (SQLSTATE classes 22, 23, 54: a value it
    /// cannot store, a constraint, a limit). The same statement will be refused again.
    #[error("database refused the statement: {0}")]
    Refused(String),
    /// A stored value could not be read back (wrong type, out of range, unknown enum text).
    #[error("stored value unreadable: {0}")]
    Corrupt(String),
    /// Anything else (a statement the database does not understand, an unexpected reply).
    #[error("store failure: {0}")]
    Other(String),
}

impl StoreError {
    /// Whether the same call may succeed if simply retried later.
    pub fn transient(&self) -> bool {
        matches!(self, StoreError::Unreachable(_) | StoreError::Busy(_))
    }

    /// The underlying cause (for logs only).
    pub fn cause(&self) -> &str {
        match self {
            StoreError::Unreachable(c)
            | StoreError::Busy(c)
            | StoreError::Refused(c)
            | StoreError::Corrupt(c)
            | StoreError::Other(c) => c,
        }
    }

    /// A stable name of the variant, for log fields and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unreachable(_) => "unreachable",
            StoreError::Busy(_) => "busy",
            StoreError::Refused(_) => "refused",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Other(_) => "other",
        }
    }
}

/// A status change planned inside a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub from: WalletStatus,
    pub to: WalletStatus,
    pub reason: Option<String>,
    pub origin: Origin,
}

/// A refused command, written to the audit log (and nothing else) with the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub action: &'static str,
    pub origin: Origin,
    pub rejection: Rejection,
    /// Amount asked for, when the command moved money (for the audit trail).
    pub amount: Option<crate::money::Amount>,
}

/// Commands of one wallet, validated in order against its state, to be committed in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub wallet_id: Uuid,
    /// The version the batch was planned against; the write applies only if the row still has it. Checked
    /// for a batch that only carries refusals too (`VersionConflict`, nothing written): a refusal judged on a
    /// stale cache (another process credited or reactivated the wallet) must be re-planned, not answered.
    pub expected_version: i64,
    /// The wallet after the batch (balance, status, version = expected + 1). Unchanged when the batch only
    /// carries refusals.
    pub after: WalletState,
    pub entries: Vec<Entry>,
    pub status_changes: Vec<StatusChange>,
    pub refusals: Vec<Refusal>,
    /// Budgets created in this batch, each with who created it (for the audit log).
    pub budget_creates: Vec<BudgetCreate>,
    /// Budgets changed in this batch (total/status), each with a history row.
    pub budget_changes: Vec<BudgetChange>,
    /// `BudgetExceeded` events to publish (threshold crossings, and refusals over a hard limit).
    pub alerts: Vec<crate::budget::BudgetAlert>,
    /// Holds placed, captured and released in this batch, in order (a hold may appear more than once:
    /// its last change is its row's final state).
    pub hold_changes: Vec<HoldChange>,
    /// Suspicious activity seen while planning (`monitor`): a `SuspiciousActivity` event each (their audit
    /// rows are among `audit`, on the chain).
    pub suspicious: Vec<Suspicion>,
    /// The audit rows on the wallet's chain: one per status change, budget created or changed, hold placed
    /// or released, in that order (and one per suspicious-activity hit). Refusals are not on
    /// the chain: they change nothing (they are still audited, from `refusals`).
    pub audit: Vec<AuditEvent>,
}

/// An audited non-money event of the wallet, as its `audit_log` row will be written, with its place on the
/// wallet's chain. Built by the engine when it closes the batch (`command::seal`), so that what is hashed
/// is exactly what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: String,
    pub outcome: &'static str,
    pub detail: serde_json::Value,
    pub actor_id: Uuid,
    pub actor_role: String,
    /// In whole microseconds (`chain::stored_instant`), as `audit_log.at` keeps it.
    pub at: chrono::DateTime<chrono::Utc>,
    pub link: Option<Link>,
}

impl AuditEvent {
    /// The row as the chain encodes it.
    pub fn chain_row(&self, wallet_id: Uuid) -> crate::chain::AuditRow<'_> {
        crate::chain::AuditRow {
            wallet_id,
            action: self.action,
            target_type: self.target_type,
            target_id: &self.target_id,
            outcome: self.outcome,
            detail: Some(&self.detail),
            actor_id: Some(self.actor_id),
            actor_role: &self.actor_role,
            at: self.at,
        }
    }
}

/// A suspicious-activity hit, as the store writes its event.
#[derive(Debug, Clone, PartialEq)]
pub struct Suspicion {
    pub rule: &'static str,
    pub detail: serde_json::Value,
    /// Who sent the command that was judged when the rule fired.
    pub origin: Origin,
}

/// One change of a hold, with what it does to the budgets it is charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldChange {
    /// The hold after this change.
    pub hold: Hold,
    pub event: HoldEvent,
    pub origin: Origin,
    /// Relative changes of `(used_amount, held_amount)` per budget, written as `+ delta` in SQL so they
    /// compose with the other budget work of the batch.
    pub budget_deltas: Vec<BudgetDelta>,
}

/// What a [`HoldChange`] was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldEvent {
    Placed,
    /// The capture's DEBIT row is the batch entry with this txn id.
    Captured {
        txn_id: Uuid,
        amount: Amount,
    },
    /// What was still reserved is given back.
    Released {
        reason: ReleaseReason,
        amount: Amount,
    },
}

/// Why a hold's reservation ended (the `reason` of `HoldReleased`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    Voided,
    Expired,
    FinalCapture,
}

impl ReleaseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseReason::Voided => "VOIDED",
            ReleaseReason::Expired => "EXPIRED",
            ReleaseReason::FinalCapture => "FINAL_CAPTURE",
        }
    }
}

/// A relative change of one budget's `used_amount` and `held_amount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetDelta {
    pub budget_id: Uuid,
    pub used: rust_decimal::Decimal,
    pub held: rust_decimal::Decimal,
    /// Also charged to the budget for a later refund (`budget_charges` of the hold): a capture's amount.
    pub charged: rust_decimal::Decimal,
}

/// A budget created in a batch, and who asked: the row, its first `budget_history` row and its audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetCreate {
    pub budget: crate::budget::Budget,
    pub origin: Origin,
}

/// A budget's total and/or status change, for the row update, its `budget_history` row and its audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetChange {
    pub before: crate::budget::Budget,
    pub after: crate::budget::Budget,
    pub reason: String,
    pub origin: Origin,
}

impl Batch {
    /// Whether the batch changes the wallet row (otherwise only the audit log is written).
    pub fn changes_wallet(&self) -> bool {
        !self.entries.is_empty()
            || !self.status_changes.is_empty()
            || !self.budget_creates.is_empty()
            || !self.budget_changes.is_empty()
            || !self.hold_changes.is_empty()
            || !self.suspicious.is_empty()
    }

    /// The consumed events whose inbox rows this batch writes with its effect (its entries' and hold changes'
    /// `Origin::inbox_event`).
    pub fn inbox_events(&self) -> impl Iterator<Item = Uuid> + '_ {
        let entries = self.entries.iter().map(|e| &e.origin);
        let holds = self.hold_changes.iter().map(|ch| &ch.origin);
        entries.chain(holds).filter_map(|o| o.inbox_event.map(|ev| ev.id))
    }

    /// The committed state of a budget after this batch.
    pub fn budget_after(&self, budget_id: uuid::Uuid) -> Option<&crate::budget::Budget> {
        self.after.budgets.iter().find(|b| b.budget_id == budget_id)
    }
}

/// Both legs of a transfer, planned by the source wallet's actor.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferPlan {
    pub expected_version: i64,
    /// The source wallet after the debit leg (its chain head after `out`).
    pub source_after: WalletState,
    /// The TRANSFER_OUT row (its `balance_after` and link are final).
    pub out: Entry,
    /// The TRANSFER_IN row; the store fills in `balance_after` from the destination's locked row, and its
    /// link on the destination's chain from that row's head (`chain::link`): the one row not chained by
    /// its own wallet's actor. It is still chained by the one writer of that chain at that instant: the
    /// transfer's transaction holds the destination row's lock (`FOR UPDATE`) from reading the head to
    /// writing the new one, and the destination's version moves with it, so its own actor re-plans.
    pub incoming: Entry,
}

/// Why a commit did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The wallet row's version is not the expected one: someone else wrote it. Nothing was written.
    #[error("wallet version changed under the batch")]
    VersionConflict,
    /// These entries (by index in `Batch::entries`) repeat a reference that already took effect, with the
    /// transaction that did. Nothing was written.
    #[error("duplicate references")]
    DuplicateReferences(Vec<(usize, Uuid)>),
    /// These credits (by index in `Batch::entries`) refund a debit of the wallet (a DEBIT with the same
    /// `reference_type` and `reference_id`) for more than it took; each with the amount debited. Nothing
    /// was written.
    #[error("refunds exceed their debits")]
    RefundsExceedDebits(Vec<(usize, crate::money::Amount)>),
    /// These hold changes (by index in `Batch::hold_changes`) place a hold whose `(reference_type,
    /// reference_id)` another hold of the wallet already has, with that hold's id. Nothing was written.
    #[error("duplicate hold references")]
    DuplicateHolds(Vec<(usize, Uuid)>),
    /// These keyed items' Idempotency-Keys no longer hold the claim token they were planned with (released
    /// after their caller gave up, or taken over by a retry after the lease): nothing was written.
    /// An index below `Batch::entries.len()` names an entry; one at or above it names the hold change at
    /// `index - entries.len()` (a hold placed or captured under a key).
    #[error("idempotency claims lost")]
    ClaimsLost(Vec<usize>),
    /// These consumed events (by id, from `Origin::inbox_event`) are in the inbox already: an effect or a
    /// recorded refusal of theirs committed before. Nothing was written. The consumer does not look the
    /// inbox up before a booking's debit (one statement per event saved), so this is what keeps a refused
    /// booking, redelivered after the wallet was credited, from being debited.
    #[error("events already processed")]
    EventsProcessed(Vec<Uuid>),
    /// Postgres refused the batch for its data (a data exception or constraint of the batch's own rows).
    /// Nothing was written; the engine isolates the command that caused it.
    #[error("refused by the database: {reason}")]
    Refused { reason: String },
    /// The store failed. When `outcome_unknown` the commit may or may not have happened (e.g. the
    /// connection dropped during COMMIT): the engine must reload before trusting its state.
    #[error("store unavailable: {reason}")]
    Unavailable { reason: String, outcome_unknown: bool },
}

/// Why a transfer did not happen: refused on the destination's state, or not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Rejected(Rejection),
    #[error(transparent)]
    Commit(CommitError),
}

#[async_trait]
pub trait WalletStore: Send + Sync + 'static {
    /// The wallet as committed, or `None` if there is no such wallet.
    async fn load(&self, wallet_id: Uuid) -> Result<Option<WalletState>, StoreError>;

    /// Commits a batch in one transaction: the guarded wallet update, its transaction rows, their
    /// reference keys, outbox events, idempotency completions, inbox rows and audit rows, or nothing.
    async fn commit(&self, batch: &Batch) -> Result<(), CommitError>;

    /// Commits both legs of a transfer in one transaction, locking the two wallets in a fixed order
    /// (no deadlock). Returns the TRANSFER_IN entry with its `balance_after`. A refusal on the destination's
    /// state (missing, not active, other currency) is written to the audit log.
    async fn transfer(&self, plan: &TransferPlan) -> Result<Entry, TransferError>;
}
