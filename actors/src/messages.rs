//! Commands a wallet actor accepts and what it answers. Every reply is `Result<_, Rejection>`.

use ractor::RpcReplyPort;
use uuid::Uuid;

use crate::money::Amount;
use crate::outcome::Rejection;
use crate::state::{Entry, Origin, WalletState, WalletStatus};

/// Longest free-text description kept on a transaction.
pub const MAX_DESCRIPTION_LEN: usize = 500;
/// Longest reference id (the column is VARCHAR(100)).
pub const MAX_REFERENCE_ID_LEN: usize = 100;
/// Longest reference type (the column is VARCHAR(50)).
pub const MAX_REFERENCE_TYPE_LEN: usize = 50;

/// Credit or debit, as posted by a client or a consumed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Credit,
    Debit,
}

/// A change requested of one wallet.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Post {
        direction: Direction,
        amount: Amount,
        description: Option<String>,
        reference_id: Option<String>,
        reference_type: Option<String>,
        metadata: Option<serde_json::Value>,
    },
    SetStatus {
        status: WalletStatus,
        reason: Option<String>,
    },
    /// A new budget on this wallet (validated by the caller: positive total, end after start).
    CreateBudget {
        budget_id: Uuid,
        total: Amount,
        period: crate::budget::PeriodType,
        start_date: chrono::NaiveDate,
        end_date: chrono::NaiveDate,
    },
    /// A change of a budget's total and/or status, with the reason kept in its history.
    UpdateBudget {
        budget_id: Uuid,
        total: Option<Amount>,
        status: Option<crate::budget::BudgetStatus>,
        reason: String,
    },
    /// The source leg of a transfer; the actor of the source wallet commits both legs at once.
    TransferOut {
        to_wallet_id: Uuid,
        amount: Amount,
        description: Option<String>,
        reference_id: Option<String>,
    },
}

impl Command {
    /// A short name for logs, metrics and the audit log.
    pub fn action(&self) -> &'static str {
        match self {
            Command::Post {
                direction: Direction::Credit,
                ..
            } => "wallet.credit",
            Command::Post {
                direction: Direction::Debit,
                ..
            } => "wallet.debit",
            Command::SetStatus { .. } => "wallet.set_status",
            Command::TransferOut { .. } => "wallet.transfer",
            Command::CreateBudget { .. } => "budget.create",
            Command::UpdateBudget { .. } => "budget.update",
        }
    }
}

/// A command and who sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub command: Command,
    pub origin: Origin,
}

/// What a successful command did.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a reply is moved once to its caller; boxing would only add an allocation"
)]
pub enum Applied {
    Posted(Entry),
    StatusChanged(WalletState),
    BudgetChanged(crate::budget::Budget),
    Transferred { out: Entry, incoming: Entry },
}

pub type Reply<T> = RpcReplyPort<Result<T, Rejection>>;

/// Decrements the wallet's queued-command count when dropped, whether the command was answered or lost
/// with a stopped actor, so the bound can never leak.
#[derive(Debug)]
pub struct QueueTicket(pub(crate) std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for QueueTicket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Whether a command may still be dropped by the caller who sent it. Shared by that caller
/// ([`crate::Engine::execute`]) and the wallet's actor, so that "the caller gave up" and "the command went
/// into a commit" can never both happen: a caller that stops waiting answers 503 only after it has taken the
/// command out of the queue for good; once the actor has planned a command, its caller waits for the commit.
#[derive(Debug, Clone, Default)]
pub struct Fate(std::sync::Arc<std::sync::atomic::AtomicU8>);

const QUEUED: u8 = 0;
const PLANNED: u8 = 1;
const CANCELLED: u8 = 2;

impl Fate {
    fn swap(&self, from: u8, to: u8) -> bool {
        use std::sync::atomic::Ordering;
        self.0
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The actor takes the command into a batch. False when its caller has given up: drop it unplanned.
    pub(crate) fn plan(&self) -> bool {
        self.swap(QUEUED, PLANNED)
    }

    /// The command goes back to the queue (a version conflict): its caller may give up on it again.
    pub(crate) fn unplan(&self) {
        self.swap(PLANNED, QUEUED);
    }

    /// The caller stops waiting. True when the command was still queued: it will never be planned, so it
    /// is certainly not applied. False when it is in a commit (or was): the caller must wait for that.
    pub(crate) fn cancel(&self) -> bool {
        self.swap(QUEUED, CANCELLED)
    }
}

/// The wallet actor's mailbox.
#[allow(
    clippy::large_enum_variant,
    reason = "messages are moved once into the mailbox; boxing would only add an allocation"
)]
pub enum WalletMsg {
    Execute(Request, Reply<Applied>, QueueTicket, Fate),
    Get(Reply<WalletState>, QueueTicket),
    /// Another path (the destination leg of a transfer) changed the row: reload before the next command.
    Invalidate,
    /// The sweeper saw no use for the idle timeout: stop if still idle.
    IdleCheck,
    /// Internal: the store finished the commit that was in flight.
    CommitDone(crate::wallet::CommitReport),
}
