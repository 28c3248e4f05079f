//! The wallet actor's mailbox ([`WalletMsg`]) and what travels through it: each command with its caller's
//! [`Reply`] port, its [`QueueTicket`] and its [`Fate`]; and the [`CommitReport`] a commit task posts
//! back. A command's reply port moves with it (queue, flight, report), so only whoever holds the command
//! can answer its caller, and the commands of a commit come back in its report.
//!
//! What a command *is* lives in `command` (its answer in `outcome`); both are re-exported here, where they
//! were first defined, so older paths keep working.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use ractor::RpcReplyPort;

use crate::command::Planned;
pub use crate::command::{
    Command, Direction, MAX_DESCRIPTION_LEN, MAX_REFERENCE_ID_LEN, MAX_REFERENCE_TYPE_LEN, Request,
};
pub use crate::outcome::Applied;
use crate::outcome::Rejection;
use crate::state::{Entry, WalletState};
use crate::store::{Batch, CommitError, TransferError, TransferPlan};

pub type Reply<T> = RpcReplyPort<Result<T, Rejection>>;

/// Decrements the wallet's queued-command count when dropped, whether the command was answered or lost
/// with a stopped actor, so the bound can never leak.
#[derive(Debug)]
pub struct QueueTicket(pub(crate) Arc<AtomicUsize>);

impl Drop for QueueTicket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a command may still be dropped by the caller who sent it. Shared by that caller
/// (`Engine::execute`) and the wallet's actor, so that "the caller gave up" and "the command went
/// into a commit" can never both happen: a caller that stops waiting answers 503 only after it has taken the
/// command out of the queue for good; once the actor has planned a command, its caller waits for the commit.
#[derive(Debug, Clone, Default)]
pub struct Fate(Arc<AtomicU8>);

const QUEUED: u8 = 0;
const PLANNED: u8 = 1;
const CANCELLED: u8 = 2;

impl Fate {
    fn swap(&self, from: u8, to: u8) -> bool {
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

/// One command of [`WalletMsg::ExecuteMany`], with what [`WalletMsg::Execute`] carries for it.
pub type Queued = (Request, Reply<Applied>, QueueTicket, Fate);

/// The wallet actor's mailbox.
#[allow(
    clippy::large_enum_variant,
    reason = "messages are moved once into the mailbox; boxing would only add an allocation"
)]
pub enum WalletMsg {
    Execute(Request, Reply<Applied>, QueueTicket, Fate),
    /// Several commands of one caller, queued together in this order before any is planned, so the actor
    /// plans them side by side (one commit for many) and never lets another command in between them.
    ExecuteMany(Vec<Queued>),
    Get(Reply<WalletState>, QueueTicket),
    /// Another path (the destination leg of a transfer) changed the row: reload before the next command.
    Invalidate,
    /// The sweeper saw no use for the idle timeout: stop if still idle.
    IdleCheck,
    /// Internal: the store finished the commit that was in flight.
    CommitDone(CommitReport),
}

/// A command waiting for its wallet's actor, or in a flight: it holds its caller's reply port and ticket.
pub(crate) struct Pending {
    pub(crate) request: Request,
    pub(crate) reply: Reply<Applied>,
    pub(crate) _ticket: QueueTicket,
    /// Shared with the caller: a command whose caller gave up before it was planned is dropped unplanned.
    pub(crate) fate: Fate,
    /// Plan this command in a batch of its own: Postgres refused a batch holding it, and only alone can its
    /// own outcome be told from its neighbours'.
    pub(crate) solo: bool,
}

/// A commit in the air: what goes to the store, the commands in it, and (once it lands) the store's result.
#[allow(
    clippy::large_enum_variant,
    reason = "one flight at a time per wallet, moved, never stored in bulk"
)]
pub(crate) enum Flight {
    Batch {
        batch: Arc<Batch>,
        items: Vec<(Pending, Planned)>,
        result: Result<(), CommitError>,
        /// The suspicious-activity sketch after the batch, adopted if it commits.
        monitor: crate::monitor::Monitor,
    },
    Transfer {
        plan: Arc<TransferPlan>,
        item: Pending,
        result: Result<Entry, TransferError>,
    },
}

/// The result of a commit, sent by the commit task back to its actor.
pub struct CommitReport(pub(crate) Flight);
