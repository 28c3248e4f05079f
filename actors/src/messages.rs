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

/// The wallet actor's mailbox.
#[allow(
    clippy::large_enum_variant,
    reason = "messages are moved once into the mailbox; boxing would only add an allocation"
)]
pub enum WalletMsg {
    Execute(Request, Reply<Applied>, QueueTicket),
    Get(Reply<WalletState>, QueueTicket),
    /// Another path (the destination leg of a transfer) changed the row: reload before the next command.
    Invalidate,
    /// The sweeper saw no use for the idle timeout: stop if still idle.
    IdleCheck,
    /// Internal: the store finished the commit that was in flight.
    CommitDone(crate::wallet::CommitReport),
}
