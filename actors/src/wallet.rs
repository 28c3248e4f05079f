//! `WalletActor`: one per active wallet. It serializes every command of its wallet, validates each against
//! the committed state, and commits through the store before replying.
//!
//! How each command is judged lives in `command` (one file per command); this module decides which queued
//! commands go into the next commit, runs it, and settles its result with their callers.
//!
//! # Group commit
//! The actor never awaits a commit inside `handle`: it hands the batch to a task and keeps taking messages.
//! Commands that arrive while a commit is in flight wait in `pending`; when the commit reports back, the
//! waiting commands are validated *in order* against the new committed state and go out together as the
//! next batch (at most [`Limits::max_batch`]). Each caller is answered only after the transaction holding
//! its command has committed; a refused command is refused on its own and never fails its neighbours.
//! Replies go through oneshot channels whose send fails only when the caller has gone (its request was
//! cancelled); those failures are ignored on purpose: what committed stays committed.
//!
//! # Two processes, one wallet
//! The in-memory state is a cache of the row. Batches are guarded by the row's version in SQL; on a
//! conflict the actor reloads and re-plans the same commands (bounded by
//! [`Limits::max_conflict_retries`]), so a second process can slow us down but never make us overdraw.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, warn};

use crate::command::{Command, Draft, Planned, Step, check_transfer};
use crate::limits::Limits;
use crate::messages::{Applied, CommitReport, Flight, Pending, WalletMsg};
use crate::outcome::Rejection;
use crate::registry::RetireHandle;
use crate::state::{Entry, TxnType, WalletState};
use crate::store::{Batch, CommitError, HoldEvent, ReleaseReason, TransferError, TransferPlan, WalletStore};

/// The actor itself carries no state; see [`WalletActorState`].
pub struct WalletActor;

/// What a wallet actor starts from: the state the engine just loaded, and its collaborators.
pub struct WalletArgs {
    pub state: WalletState,
    pub store: Arc<dyn WalletStore>,
    pub limits: Limits,
    pub retire: RetireHandle,
}

pub struct WalletActorState {
    wallet: WalletState,
    /// Set when the row may have changed behind our back (transfer in, unknown commit outcome, conflict).
    stale: bool,
    pending: VecDeque<Pending>,
    in_flight: bool,
    conflict_retries: u32,
    /// Suspicious-activity sketch of the committed history (a batch's copy is adopted when it commits).
    monitor: crate::monitor::Monitor,
    store: Arc<dyn WalletStore>,
    limits: Limits,
    retire: RetireHandle,
}

impl Actor for WalletActor {
    type Msg = WalletMsg;
    type State = WalletActorState;
    type Arguments = WalletArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WalletMsg>,
        args: WalletArgs,
    ) -> Result<WalletActorState, ActorProcessingErr> {
        Ok(WalletActorState {
            wallet: args.state,
            stale: false,
            pending: VecDeque::new(),
            in_flight: false,
            conflict_retries: 0,
            monitor: crate::monitor::Monitor::default(),
            store: args.store,
            limits: args.limits,
            retire: args.retire,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<WalletMsg>,
        msg: WalletMsg,
        state: &mut WalletActorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WalletMsg::Execute(request, reply, ticket, fate) => {
                state.pending.push_back(Pending {
                    request,
                    reply,
                    _ticket: ticket,
                    fate,
                    solo: false,
                });
                state.pump(&myself).await;
            }
            WalletMsg::ExecuteMany(queued) => {
                for (request, reply, ticket, fate) in queued {
                    state.pending.push_back(Pending {
                        request,
                        reply,
                        _ticket: ticket,
                        fate,
                        solo: false,
                    });
                }
                state.pump(&myself).await;
            }
            WalletMsg::Get(reply, _ticket) => {
                if state.stale && !state.in_flight {
                    state.reload().await;
                }
                let answer = if state.stale {
                    Err(Rejection::Unavailable("wallet state could not be reloaded".into()))
                } else {
                    Ok(state.wallet.clone())
                };
                let _ = reply.send(answer);
            }
            WalletMsg::Invalidate => {
                state.stale = true;
            }
            WalletMsg::IdleCheck => {
                state.retire.check_read();
                if !state.in_flight && state.pending.is_empty() && state.retire.try_retire() {
                    debug!(wallet_id = %state.wallet.wallet_id, "idle wallet actor stops");
                    myself.stop(Some("idle".into()));
                }
            }
            WalletMsg::CommitDone(CommitReport(flight)) => {
                state.in_flight = false;
                state.settle(flight);
                state.pump(&myself).await;
            }
        }
        Ok(())
    }
}

impl WalletActorState {
    /// Re-reads the row. On failure the state stays stale and waiting commands are answered Unavailable.
    async fn reload(&mut self) {
        match self.store.load(self.wallet.wallet_id).await {
            Ok(Some(w)) => {
                self.wallet = w;
                self.stale = false;
            }
            Ok(None) => {
                // The row vanished (it is never deleted by this service); refuse what waits.
                self.fail_pending(Rejection::WalletNotFound);
            }
            Err(e) => {
                warn!(wallet_id = %self.wallet.wallet_id, error = %e, "reloading wallet failed");
                self.fail_pending(Rejection::Unavailable(e.to_string()));
            }
        }
    }

    fn fail_pending(&mut self, rejection: Rejection) {
        for p in self.pending.drain(..) {
            let _ = p.reply.send(Err(rejection.clone()));
        }
    }

    /// Starts the next commit if none is in flight and commands are waiting.
    async fn pump(&mut self, myself: &ActorRef<WalletMsg>) {
        if self.in_flight || self.pending.is_empty() {
            return;
        }
        if self.stale {
            self.reload().await;
            if self.stale {
                return;
            }
        }
        if let Some(flight) = self.plan() {
            self.launch(myself.clone(), flight);
        }
    }

    /// Packs waiting commands, in order, into the next flight: a batch of posts, status and budget changes
    /// and refusals, or one transfer on its own (it locks a second wallet, so it is not mixed with others).
    /// Each command plans itself against the draft (see `command`); this loop only decides what goes in.
    fn plan(&mut self) -> Option<Flight> {
        debug_assert!(!self.stale && !self.in_flight);
        let mut draft = Draft::new(
            &self.wallet,
            self.limits.alert_thresholds.clone(),
            self.limits.hold_overcapture_percent,
        )
        .watched(self.monitor.clone(), self.limits.monitor.clone());
        if !self.limits.audit_chain {
            draft = draft.unchained();
        }
        let mut items: Vec<(Pending, Planned)> = Vec::new();
        while items.len() < self.limits.max_batch {
            let Some(front) = self.pending.front() else { break };
            if front.solo && !items.is_empty() {
                break;
            }
            // A transfer that will go ahead flies alone; one that will be refused folds into this batch.
            if let Command::TransferOut { amount, .. } = &front.request.command
                && !items.is_empty()
                && check_transfer(draft.sim(), *amount).is_ok()
            {
                break;
            }
            // A repeat of a reference planned in this batch waits for the next (see `Draft::planned_refs`).
            if let Command::Post {
                direction,
                reference_id: Some(id),
                reference_type: Some(ty),
                ..
            } = &front.request.command
                && draft.has_planned_reference(ty, id, *direction)
            {
                break;
            }
            // So does a second change of a hold this batch already changes, or a second hold placed with
            // a reference planned in it: each hold row and reference key is written once per batch.
            match &front.request.command {
                Command::CaptureHold { hold_id, .. } | Command::VoidHold { hold_id }
                    if draft.touches_hold(*hold_id) =>
                {
                    break;
                }
                Command::PlaceHold {
                    reference_id: Some(id),
                    reference_type: Some(ty),
                    ..
                } if draft.has_planned_hold_reference(ty, id) => break,
                _ => {}
            }
            let Some(p) = self.pending.pop_front() else { break };
            if !p.fate.plan() {
                // Its caller stopped waiting and answered "not applied": it must never be. Dropped unanswered.
                continue;
            }
            let solo = p.solo;
            match p.request.plan(&mut draft) {
                Step::Batch(planned) => items.push((p, planned)),
                Step::Alone(plan) => {
                    debug_assert!(items.is_empty(), "a transfer always flies alone");
                    return Some(Flight::Transfer {
                        plan: Arc::new(plan),
                        item: p,
                        result: Err(TransferError::Commit(CommitError::VersionConflict)),
                    });
                }
            }
            if solo {
                break;
            }
        }
        if items.is_empty() {
            return None;
        }
        let monitor = std::mem::take(&mut draft.monitor);
        Some(Flight::Batch {
            batch: Arc::new(draft.into_batch()),
            items,
            result: Ok(()),
            monitor,
        })
    }

    /// Runs the flight's commit on its own task and reports back as a message, so the mailbox keeps
    /// filling the next batch meanwhile. A panic in the store is caught (on the same task, without a
    /// second spawn) and reported as an unknown outcome rather than leaving the actor waiting forever.
    fn launch(&mut self, myself: ActorRef<WalletMsg>, flight: Flight) {
        self.in_flight = true;
        let store = self.store.clone();
        tokio::spawn(async move {
            let unknown = |_panic| CommitError::Unavailable {
                reason: "the store panicked during the commit".into(),
                outcome_unknown: true,
            };
            let flight = match flight {
                Flight::Batch {
                    batch, items, monitor, ..
                } => {
                    let started = std::time::Instant::now();
                    let result = AssertUnwindSafe(store.commit(&batch))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|p| Err(unknown(p)));
                    let outcome = if result.is_ok() { "ok" } else { "error" };
                    metrics::histogram!("wallet_group_commit_batch_size").record(items.len() as f64);
                    metrics::histogram!("wallet_commit_duration_seconds", "outcome" => outcome)
                        .record(started.elapsed().as_secs_f64());
                    Flight::Batch {
                        batch,
                        items,
                        result,
                        monitor,
                    }
                }
                Flight::Transfer { plan, item, .. } => {
                    let result = AssertUnwindSafe(store.transfer(&plan))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|p| Err(TransferError::Commit(unknown(p))));
                    Flight::Transfer { plan, item, result }
                }
            };
            if myself
                .send_message(WalletMsg::CommitDone(CommitReport(flight)))
                .is_err()
            {
                // The actor is gone; dropping the report drops the reply ports, so callers learn the
                // outcome is unknown instead of hanging.
                warn!("wallet actor stopped while its commit was in flight");
            }
        });
    }

    /// Applies a finished flight: answer callers, or put commands back for another attempt.
    fn settle(&mut self, flight: Flight) {
        match flight {
            Flight::Batch {
                batch,
                items,
                result,
                monitor,
            } => {
                if result.is_ok() {
                    self.monitor = monitor;
                    for s in &batch.suspicious {
                        metrics::counter!("wallet_suspicious_activity_total", "rule" => s.rule).increment(1);
                    }
                }
                self.settle_batch(&batch, items, result)
            }
            Flight::Transfer { plan, item, result } => self.settle_transfer(&plan, item, result),
        }
    }

    /// A batch's commit came back: answer its commands, or requeue those another attempt can still apply.
    fn settle_batch(&mut self, batch: &Batch, items: Vec<(Pending, Planned)>, result: Result<(), CommitError>) {
        match result {
            Ok(()) => self.answer_committed(batch, items),
            Err(CommitError::VersionConflict) => {
                self.stale = true;
                self.retry_or_fail(items.into_iter().map(|(p, _)| p).collect());
            }
            Err(CommitError::DuplicateReferences(dups)) => self.refuse_items(items, |planned| {
                let i = planned_entry(planned)?;
                dups.iter()
                    .find(|(d, _)| *d == i)
                    .map(|(_, t)| Rejection::DuplicateReference { existing_txn_id: *t })
            }),
            Err(CommitError::DuplicateHolds(dups)) => self.refuse_items(items, |planned| {
                let Planned::Hold(j) = planned else { return None };
                dups.iter()
                    .find(|(d, _)| d == j)
                    .map(|(_, h)| Rejection::DuplicateReference { existing_txn_id: *h })
            }),
            Err(CommitError::RefundsExceedDebits(over)) => self.refuse_items(items, |planned| {
                let i = planned_entry(planned)?;
                over.iter()
                    .find(|(o, _)| *o == i)
                    .map(|(_, debited)| Rejection::RefundExceedsDebit { debited: *debited })
            }),
            Err(CommitError::EventsProcessed(done)) => self.refuse_items(items, |planned| {
                let origin = match planned {
                    Planned::Entry(i) | Planned::Capture { entry: i, .. } => &batch.entries[*i].origin,
                    Planned::Hold(j) => &batch.hold_changes[*j].origin,
                    _ => return None,
                };
                let event = origin.inbox_event?;
                done.contains(&event.id).then_some(Rejection::EventProcessed)
            }),
            Err(CommitError::ClaimsLost(lost)) => {
                // Indexes past the entries name hold changes (see `CommitError::ClaimsLost`).
                let entries = batch.entries.len();
                self.refuse_items(items, |planned| {
                    let keyed = match planned {
                        Planned::Entry(i) => *i,
                        Planned::Hold(j) | Planned::Capture { hold: j, .. } => entries + j,
                        _ => return None,
                    };
                    let capture_entry = match planned {
                        Planned::Capture { entry, .. } => lost.contains(entry),
                        _ => false,
                    };
                    (lost.contains(&keyed) || capture_entry).then_some(Rejection::ClaimLost)
                })
            }
            Err(CommitError::Refused { reason }) => {
                warn!(wallet_id = %self.wallet.wallet_id, %reason, commands = items.len(), "the database refused a batch; isolating its commands");
                metrics::counter!("wallet_commit_refusals_total").increment(1);
                if items.len() > 1 {
                    let again = items
                        .into_iter()
                        .map(|(mut p, _)| {
                            p.solo = true;
                            p
                        })
                        .collect();
                    self.requeue(again);
                } else {
                    for (p, _) in items {
                        let _ = p.reply.send(Err(Rejection::StoreRefused));
                    }
                }
            }
            Err(CommitError::Unavailable {
                reason,
                outcome_unknown,
            }) => {
                self.stale = true;
                warn!(wallet_id = %self.wallet.wallet_id, %reason, outcome_unknown, "commit failed");
                for (p, _) in items {
                    let _ = p.reply.send(Err(if outcome_unknown {
                        Rejection::OutcomeUnknown
                    } else {
                        Rejection::Unavailable(reason.clone())
                    }));
                }
            }
        }
    }

    /// Nothing of the batch was written because of some of its commands: answers those (`refusal` of what
    /// each planned) and puts the others back to be planned again.
    fn refuse_items(&mut self, items: Vec<(Pending, Planned)>, refusal: impl Fn(&Planned) -> Option<Rejection>) {
        let mut again = Vec::with_capacity(items.len());
        for (p, planned) in items {
            match refusal(&planned) {
                Some(r) => {
                    let _ = p.reply.send(Err(r));
                }
                None => again.push(p),
            }
        }
        self.requeue(again);
    }

    /// The batch committed: adopt its state and answer every command in it.
    fn answer_committed(&mut self, batch: &Batch, items: Vec<(Pending, Planned)>) {
        self.conflict_retries = 0;
        if batch.changes_wallet() {
            self.wallet = batch.after.clone();
            // A credit with a reference may refund a debit: the store gave the amount back to the budgets the
            // debit was charged to (in SQL, where the charges are), so reload them.
            if !self.wallet.budgets.is_empty()
                && batch
                    .entries
                    .iter()
                    .any(|e| e.kind == TxnType::Credit && e.reference_id.is_some())
            {
                self.stale = true;
            }
        }
        for (p, planned) in items {
            let answer = match planned {
                Planned::Entry(i) => Ok(Applied::Posted(batch.entries[i].clone())),
                Planned::Status => Ok(Applied::StatusChanged(batch.after.clone())),
                Planned::Budget(id) => batch
                    .budget_after(id)
                    .cloned()
                    .map(Applied::BudgetChanged)
                    .ok_or(Rejection::BudgetNotFound),
                Planned::Hold(j) => Ok(Applied::Held(batch.hold_changes[j].hold.clone())),
                Planned::Capture { entry, hold } => Ok(Applied::Captured {
                    entry: batch.entries[entry].clone(),
                    hold: final_state(batch, hold),
                }),
                Planned::Swept => Ok(Applied::Swept(
                    batch
                        .hold_changes
                        .iter()
                        .filter(|c| {
                            matches!(
                                c.event,
                                HoldEvent::Released {
                                    reason: ReleaseReason::Expired,
                                    ..
                                }
                            )
                        })
                        .count(),
                )),
                Planned::Refused(r) => Err(r),
            };
            let _ = p.reply.send(answer);
        }
    }

    /// A transfer's commit came back: answer its caller, or requeue it after a version conflict.
    fn settle_transfer(&mut self, plan: &TransferPlan, item: Pending, result: Result<Entry, TransferError>) {
        match result {
            Ok(incoming) => {
                self.conflict_retries = 0;
                self.wallet = plan.source_after.clone();
                let _ = item.reply.send(Ok(Applied::Transferred {
                    out: plan.out.clone(),
                    incoming,
                }));
            }
            Err(TransferError::Rejected(r)) => {
                let _ = item.reply.send(Err(r));
            }
            Err(TransferError::Commit(CommitError::VersionConflict)) => {
                self.stale = true;
                self.retry_or_fail(vec![item]);
            }
            Err(TransferError::Commit(CommitError::DuplicateReferences(d))) => {
                let existing_txn_id = d.first().map(|(_, t)| *t).unwrap_or_default();
                let _ = item.reply.send(Err(Rejection::DuplicateReference { existing_txn_id }));
            }
            Err(TransferError::Commit(CommitError::RefundsExceedDebits(over))) => {
                // Transfer legs are no refunds; answered as the store said all the same.
                let debited = over.first().map(|(_, d)| *d).unwrap_or_default();
                let _ = item.reply.send(Err(Rejection::RefundExceedsDebit { debited }));
            }
            Err(TransferError::Commit(CommitError::DuplicateHolds(_))) => {
                // A transfer places no hold; answered as the store said all the same.
                warn!(wallet_id = %self.wallet.wallet_id, "the store reported a hold reference for a transfer");
                let _ = item.reply.send(Err(Rejection::StoreRefused));
            }
            Err(TransferError::Commit(CommitError::ClaimsLost(_))) => {
                let _ = item.reply.send(Err(Rejection::ClaimLost));
            }
            Err(TransferError::Commit(CommitError::EventsProcessed(_))) => {
                let _ = item.reply.send(Err(Rejection::EventProcessed));
            }
            Err(TransferError::Commit(CommitError::Refused { reason })) => {
                warn!(wallet_id = %self.wallet.wallet_id, %reason, "the database refused a transfer");
                let _ = item.reply.send(Err(Rejection::StoreRefused));
            }
            Err(TransferError::Commit(CommitError::Unavailable {
                reason,
                outcome_unknown,
            })) => {
                self.stale = true;
                warn!(wallet_id = %self.wallet.wallet_id, %reason, outcome_unknown, "transfer commit failed");
                let _ = item.reply.send(Err(if outcome_unknown {
                    Rejection::OutcomeUnknown
                } else {
                    Rejection::Unavailable(reason)
                }));
            }
        }
    }

    /// After a version conflict: plan the same commands again on fresh state, a bounded number of times.
    fn retry_or_fail(&mut self, items: Vec<Pending>) {
        metrics::counter!("wallet_version_conflicts_total").increment(1);
        self.conflict_retries += 1;
        if self.conflict_retries > self.limits.max_conflict_retries {
            self.conflict_retries = 0;
            warn!(wallet_id = %self.wallet.wallet_id, "giving up after repeated version conflicts");
            for p in items {
                let _ = p
                    .reply
                    .send(Err(Rejection::Unavailable("wallet is contended; retry".into())));
            }
        } else {
            self.requeue(items);
        }
    }

    /// Puts commands back at the head of the queue, in their original order.
    fn requeue(&mut self, items: Vec<Pending>) {
        for p in items.into_iter().rev() {
            p.fate.unplan();
            self.pending.push_front(p);
        }
    }
}

/// The entry a planned command wrote, if it wrote one.
fn planned_entry(planned: &Planned) -> Option<usize> {
    match planned {
        Planned::Entry(i) | Planned::Capture { entry: i, .. } => Some(*i),
        _ => None,
    }
}

/// The hold of the change at `index` as the batch left it (a final capture's release comes after it).
fn final_state(batch: &Batch, index: usize) -> crate::state::Hold {
    let id = batch.hold_changes[index].hold.hold_id;
    batch
        .hold_changes
        .iter()
        .rev()
        .find(|c| c.hold.hold_id == id)
        .map(|c| c.hold.clone())
        .unwrap_or_else(|| batch.hold_changes[index].hold.clone())
}
