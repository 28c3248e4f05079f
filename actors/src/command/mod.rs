//! What a wallet can be asked ([`Command`], sent as a [`Request`]) and how each command plans itself, one
//! file per command (mini-redis's `cmd/` style):
//!
//! - `post.rs`: credits and debits; a debit is charged to the budgets that apply today.
//! - `transfer.rs`: the source leg of a transfer, planned with its incoming leg; it flies alone.
//! - `status.rs`: freezing, unfreezing and closing a wallet.
//! - `budget_create.rs`, `budget_update.rs`: a wallet's budgets.
//! - `hold.rs`: holds placed, captured and voided, and the expiry each batch writes for holds whose time
//!   is up.
//! - `open.rs`: a new wallet's opening balance ([`plan_opening`]); no command, as no actor exists yet.
//! - here: [`plan_postings`], credits and debits planned by these same rules outside the actor, for a
//!   caller that writes the batch in a transaction of its own (an atomic bulk posting).
//! - `draft.rs`: the `Draft` they plan into, and what each became in it (`Planned`, `Step`).
//! - `seal.rs`: closing a batch for the hash chain: the audit rows of its non-money changes, and the
//!   link (seq, prev_hash, hash) of each of its chained rows after the wallet's head.
//!
//! Each judges its command against the simulated wallet in a `Draft` (the batch being planned) and adds
//! its rows there, or says why not with a [`Rejection`]; the refusal is then recorded for the audit log in
//! one place, `Request::plan`'s. Nothing here waits, sends or writes: the wallet actor decides which
//! queued commands go into a batch and in what order, and commits what they planned.

mod budget_create;
mod budget_update;
mod draft;
pub mod hold;
mod open;
mod post;
mod seal;
mod status;
mod transfer;

use uuid::Uuid;

use crate::budget::{BudgetStatus, PeriodType};
use crate::limits::Limits;
use crate::money::Amount;
use crate::outcome::Rejection;
use crate::state::{Origin, TxnType, WalletState, WalletStatus};
use crate::store::{Batch, Refusal};

pub(crate) use draft::{Draft, Planned, Step};
pub use open::{OPENING_DESCRIPTION, OPENING_REFERENCE_TYPE, plan_opening};
pub(crate) use transfer::check_transfer;

/// What [`plan_postings`] made of a list of requests: the batch to write, and for each request (in order)
/// the index of its entry in `batch.entries`, or why it was refused (recorded in `batch.refusals` too).
#[derive(Debug, Clone)]
pub struct PlannedPostings {
    pub batch: Batch,
    pub outcomes: Vec<Result<usize, Rejection>>,
}

/// Plans credits and debits against a wallet's committed state into one batch, in order, by the same
/// rules the wallet's actor applies (`Request::plan`): for callers that write the batch themselves inside
/// a transaction of their own (an atomic bulk posting locks its wallets and writes every batch in one
/// commit), so that the rules stay the engine's. Pure: nothing waits, sends or writes.
///
/// Two differences from the actor's loop, both because this batch is the only one: a request that repeats
/// the reference of an entry planned before it is refused here as a duplicate of that entry (the actor
/// would put it in its next batch, where the store reports it), and a command other than a posting is
/// refused as invalid (a transfer locks a second wallet; status and budget changes are not postings).
///
/// `committed` must carry the wallet's open holds (`WalletState::holds`): a debit is judged against the
/// available balance (balance less what live holds reserve), as in the actor. `limits` gives the budget
/// alert thresholds and the hold over-capture tolerance, the actor's own settings.
pub fn plan_postings(committed: &WalletState, limits: &Limits, requests: &[Request]) -> PlannedPostings {
    let mut draft = Draft::new(
        committed,
        limits.alert_thresholds.clone(),
        limits.hold_overcapture_percent,
    );
    let mut outcomes = Vec::with_capacity(requests.len());
    for request in requests {
        let repeat = match &request.command {
            Command::Post {
                direction,
                reference_id: Some(id),
                reference_type: Some(ty),
                ..
            } => draft
                .entries
                .iter()
                .find(|e| {
                    e.reference_id.as_deref() == Some(id.as_str())
                        && e.reference_type.as_deref() == Some(ty.as_str())
                        && matches!(
                            (e.kind, direction),
                            (TxnType::Credit, Direction::Credit) | (TxnType::Debit, Direction::Debit)
                        )
                })
                .map(|e| e.txn_id),
            Command::Post { .. } => None,
            _ => {
                let rejection = Rejection::Invalid("only credits and debits are planned together".into());
                request.refuse(&mut draft, rejection.clone());
                outcomes.push(Err(rejection));
                continue;
            }
        };
        if let Some(existing_txn_id) = repeat {
            let rejection = Rejection::DuplicateReference { existing_txn_id };
            request.refuse(&mut draft, rejection.clone());
            outcomes.push(Err(rejection));
            continue;
        }
        outcomes.push(match request.plan(&mut draft) {
            Step::Batch(Planned::Entry(i)) => Ok(i),
            Step::Batch(Planned::Refused(r)) => Err(r),
            // A posting plans into an entry or a refusal; nothing else.
            Step::Batch(_) | Step::Alone(_) => Err(Rejection::Invalid("not a posting".into())),
        });
    }
    PlannedPostings {
        batch: draft.into_batch(),
        outcomes,
    }
}

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
        period: PeriodType,
        start_date: chrono::NaiveDate,
        end_date: chrono::NaiveDate,
    },
    /// A change of a budget's total and/or status, with the reason kept in its history.
    UpdateBudget {
        budget_id: Uuid,
        total: Option<Amount>,
        status: Option<BudgetStatus>,
        reason: String,
    },
    /// Reserves money without moving it (validated by the caller: positive amount, expiry in range).
    PlaceHold {
        hold_id: Uuid,
        amount: Amount,
        description: Option<String>,
        reference_id: Option<String>,
        reference_type: Option<String>,
        metadata: Option<serde_json::Value>,
        /// From its creation, which the actor stamps (`expires_at = created_at + expires_in`).
        expires_in: std::time::Duration,
    },
    /// Charges a hold: a DEBIT of `amount` (default: what remains); `final_capture` releases the rest.
    CaptureHold {
        hold_id: Uuid,
        amount: Option<Amount>,
        final_capture: bool,
    },
    /// Releases what a hold still reserves.
    VoidHold { hold_id: Uuid },
    /// Writes the expiry of the wallet's holds whose time is up (the sweep's nudge; every batch does it).
    ExpireHolds,
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
            Command::PlaceHold { .. } => "hold.place",
            Command::CaptureHold { .. } => "hold.capture",
            Command::VoidHold { .. } => "hold.void",
            Command::ExpireHolds => "hold.expire",
        }
    }

    /// The amount a command asks for, kept with its refusal in the audit trail.
    fn audited_amount(&self) -> Option<Amount> {
        match self {
            Command::Post { amount, .. } | Command::TransferOut { amount, .. } | Command::PlaceHold { amount, .. } => {
                Some(*amount)
            }
            Command::CaptureHold { amount, .. } => *amount,
            Command::VoidHold { .. } | Command::ExpireHolds => None,
            Command::CreateBudget { total, .. } => Some(*total),
            Command::UpdateBudget { total, .. } => *total,
            Command::SetStatus { .. } => None,
        }
    }
}

/// A command and who sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub command: Command,
    pub origin: Origin,
}

impl Request {
    /// Plans this command into `draft`, after the commands already in it: what it became in the batch, a
    /// transfer to fly alone, or a refusal (recorded in the batch for the audit log, and nothing else).
    pub(crate) fn plan(&self, draft: &mut Draft) -> Step {
        let debit = match &self.command {
            Command::Post {
                direction: Direction::Debit,
                amount,
                ..
            } => Some(*amount),
            _ => None,
        };
        if let Some(amount) = debit {
            let hits = draft
                .monitor
                .debit_asked(&draft.monitor_limits, amount, self.origin.actor_id, draft.now);
            self.suspect(draft, hits);
        }
        let step = self.plan_command(draft);
        if debit.is_some()
            && let Step::Batch(planned) = &step
        {
            let refused = match planned {
                Planned::Refused(r) => Some(r.code()),
                _ => None,
            };
            let hits = draft.monitor.debit_judged(&draft.monitor_limits, refused, draft.now);
            self.suspect(draft, hits);
        }
        step
    }

    /// Records suspicious-activity hits in the batch; with `SUSPICIOUS_FREEZE`, an active wallet is frozen in
    /// the same batch (this command and the ones after it are judged frozen).
    fn suspect(&self, draft: &mut Draft, hits: Vec<crate::monitor::Hit>) {
        if hits.is_empty() {
            return;
        }
        for hit in &hits {
            draft.suspicious.push(crate::store::Suspicion {
                rule: hit.rule.as_str(),
                detail: hit.detail.clone(),
                origin: self.origin.clone(),
            });
        }
        if draft.monitor_limits.freeze && draft.sim.status == WalletStatus::Active {
            let rules: Vec<&str> = hits.iter().map(|h| h.rule.as_str()).collect();
            draft.status_changes.push(crate::store::StatusChange {
                from: WalletStatus::Active,
                to: WalletStatus::Frozen,
                reason: Some(format!("suspicious activity: {}", rules.join(", "))),
                origin: crate::state::Origin {
                    role: "system".into(),
                    ..crate::state::Origin::default()
                },
            });
            draft.sim.status = WalletStatus::Frozen;
        }
    }

    /// The command's own planning (see [`Request::plan`]).
    fn plan_command(&self, draft: &mut Draft) -> Step {
        let origin = &self.origin;
        let planned = match &self.command {
            Command::Post {
                direction,
                amount,
                description,
                reference_id,
                reference_type,
                metadata,
            } => {
                let posting = post::Posting {
                    direction: *direction,
                    amount: *amount,
                    description,
                    reference_id,
                    reference_type,
                    metadata,
                };
                post::plan(draft, origin, posting).map(Step::Batch)
            }
            Command::TransferOut {
                to_wallet_id,
                amount,
                description,
                reference_id,
            } => transfer::plan(&draft.sim, origin, *to_wallet_id, *amount, description, reference_id).map(Step::Alone),
            Command::SetStatus { status, reason } => status::plan(draft, origin, *status, reason).map(Step::Batch),
            Command::CreateBudget {
                budget_id,
                total,
                period,
                start_date,
                end_date,
            } => budget_create::plan(draft, origin, *budget_id, *total, *period, (*start_date, *end_date))
                .map(Step::Batch),
            Command::UpdateBudget {
                budget_id,
                total,
                status,
                reason,
            } => budget_update::plan(draft, origin, *budget_id, *total, *status, reason).map(Step::Batch),
            Command::PlaceHold {
                hold_id,
                amount,
                description,
                reference_id,
                reference_type,
                metadata,
                expires_in,
            } => {
                let new = hold::NewHold {
                    hold_id: *hold_id,
                    amount: *amount,
                    description,
                    reference_id,
                    reference_type,
                    metadata,
                    expires_in: *expires_in,
                };
                hold::place(draft, origin, new).map(Step::Batch)
            }
            Command::CaptureHold {
                hold_id,
                amount,
                final_capture,
            } => hold::capture(draft, origin, *hold_id, *amount, *final_capture).map(Step::Batch),
            Command::VoidHold { hold_id } => hold::void(draft, origin, *hold_id).map(Step::Batch),
            Command::ExpireHolds => Ok(Step::Batch(Planned::Swept)),
        };
        planned.unwrap_or_else(|rejection| Step::Batch(self.refuse(draft, rejection)))
    }

    /// Records a refused command in the batch: the audit log keeps who asked, what and why not.
    fn refuse(&self, draft: &mut Draft, rejection: Rejection) -> Planned {
        draft.refusals.push(Refusal {
            action: self.command.action(),
            origin: self.origin.clone(),
            rejection: rejection.clone(),
            amount: self.command.audited_amount(),
        });
        Planned::Refused(rejection)
    }
}
