//! `WalletActor`: one per active wallet. It serializes every command of its wallet, validates each against
//! the committed state, and commits through the store before replying.
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

use std::collections::{HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::Utc;
use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, warn};

use crate::budget::{Budget, BudgetAlert, BudgetStatus, MAX_BUDGETS_PER_WALLET, crossed};
use crate::messages::{Applied, Command, Direction, QueueTicket, Reply, Request, WalletMsg};
use crate::money::Amount;
use crate::outcome::Rejection;
use crate::state::{Entry, TxnType, WalletState, WalletStatus, new_txn_id};
use crate::store::{Batch, BudgetChange, CommitError, Refusal, StatusChange, TransferError, TransferPlan, WalletStore};
use crate::supervisor::{Limits, RetireHandle};

/// The actor itself carries no state; see [`WalletActorState`].
pub struct WalletActor;

/// What a wallet actor starts from: the state the engine just loaded, and its collaborators.
pub struct WalletArgs {
    pub state: WalletState,
    pub store: Arc<dyn WalletStore>,
    pub limits: Limits,
    pub retire: RetireHandle,
}

struct Pending {
    request: Request,
    reply: Reply<Applied>,
    _ticket: QueueTicket,
}

/// What one planned command became inside a batch.
enum Planned {
    Entry(usize),
    Status,
    Budget(uuid::Uuid),
    Refused(Rejection),
}

#[allow(
    clippy::large_enum_variant,
    reason = "one flight at a time per wallet, moved, never stored in bulk"
)]
enum Flight {
    Batch {
        batch: Arc<Batch>,
        items: Vec<(Pending, Planned)>,
        result: Result<(), CommitError>,
    },
    Transfer {
        plan: Arc<TransferPlan>,
        item: Pending,
        result: Result<Entry, TransferError>,
    },
}

/// The result of a commit, sent by the commit task back to its actor.
pub struct CommitReport(Flight);

pub struct WalletActorState {
    wallet: WalletState,
    /// Set when the row may have changed behind our back (transfer in, unknown commit outcome, conflict).
    stale: bool,
    pending: VecDeque<Pending>,
    in_flight: bool,
    conflict_retries: u32,
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
            WalletMsg::Execute(request, reply, ticket) => {
                state.pending.push_back(Pending {
                    request,
                    reply,
                    _ticket: ticket,
                });
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

    /// Validates waiting commands in order against a simulation of the committed state and packs them
    /// into the next flight: a batch of posts/status changes/refusals, or one transfer on its own (it
    /// locks a second wallet, so it is not mixed with others).
    fn plan(&mut self) -> Option<Flight> {
        debug_assert!(!self.stale && !self.in_flight);
        let mut sim = self.wallet.clone();
        let mut entries = Vec::new();
        let mut status_changes = Vec::new();
        let mut refusals = Vec::new();
        let mut budget_creates = Vec::new();
        let mut budget_changes = Vec::new();
        let mut alerts = Vec::new();
        let thresholds = self.limits.alert_thresholds.clone();
        let mut items: Vec<(Pending, Planned)> = Vec::new();
        // References of the entries planned so far. The store only knows committed references, and two rows
        // with one key in one transaction violate its unique key and fail the whole batch; so a repeat waits
        // for the next batch, where the store reports it as a duplicate of the one that took effect.
        let mut planned_refs: HashSet<(String, String, Direction)> = HashSet::new();

        while items.len() < self.limits.max_batch {
            let Some(front) = self.pending.front() else { break };
            // A transfer that will go ahead flies alone; one that will be refused folds into this batch.
            if let Command::TransferOut { amount, .. } = &front.request.command
                && !items.is_empty()
                && check_transfer(&sim, *amount).is_ok()
            {
                break;
            }
            if let Command::Post {
                direction,
                reference_id: Some(id),
                reference_type: Some(ty),
                ..
            } = &front.request.command
                && planned_refs.contains(&(ty.clone(), id.clone(), *direction))
            {
                break;
            }
            let Some(p) = self.pending.pop_front() else { break };
            let origin = p.request.origin.clone();
            let action = p.request.command.action();
            match &p.request.command {
                Command::Post {
                    direction,
                    amount,
                    description,
                    reference_id,
                    reference_type,
                    metadata,
                } => {
                    // The debit is judged as a whole: if a budget refuses it, the balance must not move.
                    let balance_before = sim.balance;
                    let judged = post(&mut sim, *direction, *amount).and_then(|after| {
                        let charged = match direction {
                            Direction::Debit => charge_budgets(&mut sim, *amount, &thresholds, &mut alerts)?,
                            Direction::Credit => vec![],
                        };
                        Ok((after, charged))
                    });
                    if judged.is_err() {
                        sim.balance = balance_before;
                    }
                    match judged {
                        Ok((balance_after, charged)) => {
                            let (txn_id, created_at) = new_txn_id();
                            entries.push(Entry {
                                txn_id,
                                wallet_id: sim.wallet_id,
                                kind: match direction {
                                    Direction::Credit => TxnType::Credit,
                                    Direction::Debit => TxnType::Debit,
                                },
                                amount: *amount,
                                description: description.clone(),
                                reference_id: reference_id.clone(),
                                reference_type: reference_type.clone(),
                                metadata: metadata.clone(),
                                balance_after,
                                created_at,
                                origin,
                                budgets: charged,
                            });
                            if let (Some(ty), Some(id)) = (reference_type, reference_id) {
                                planned_refs.insert((ty.clone(), id.clone(), *direction));
                            }
                            items.push((p, Planned::Entry(entries.len() - 1)));
                        }
                        Err(rejection) => {
                            if let Rejection::BudgetExceeded { budget_id, exceeded_by } = &rejection {
                                // A refusal over a hard limit is announced too, with the would-be excess.
                                alerts.push(BudgetAlert {
                                    budget_id: *budget_id,
                                    threshold: 100,
                                    exceeded_amount: exceeded_by.value(),
                                    refused: true,
                                });
                            }
                            refusals.push(Refusal {
                                action,
                                origin,
                                rejection: rejection.clone(),
                                amount: Some(*amount),
                            });
                            items.push((p, Planned::Refused(rejection)));
                        }
                    }
                }
                Command::CreateBudget {
                    budget_id,
                    total,
                    period,
                    start_date,
                    end_date,
                } => {
                    let live = sim.budgets.iter().filter(|b| b.status != BudgetStatus::Expired).count();
                    let refused = if sim.status == WalletStatus::Closed {
                        Some(Rejection::WalletNotActive {
                            wallet_id: sim.wallet_id,
                            status: sim.status,
                        })
                    } else if live >= MAX_BUDGETS_PER_WALLET {
                        Some(Rejection::TooManyBudgets)
                    } else if end_date <= start_date {
                        Some(Rejection::Invalid("end_date must be after start_date".into()))
                    } else {
                        None
                    };
                    match refused {
                        Some(rejection) => {
                            refusals.push(Refusal {
                                action,
                                origin,
                                rejection: rejection.clone(),
                                amount: Some(*total),
                            });
                            items.push((p, Planned::Refused(rejection)));
                        }
                        None => {
                            let now = Utc::now();
                            let b = Budget {
                                budget_id: *budget_id,
                                wallet_id: sim.wallet_id,
                                total: *total,
                                used: Amount::ZERO,
                                period: *period,
                                start_date: *start_date,
                                end_date: *end_date,
                                status: BudgetStatus::Active,
                                created_by: origin.actor_id,
                                alerted: vec![],
                                created_at: now,
                                updated_at: now,
                            };
                            let id = b.budget_id;
                            sim.budgets.push(b.clone());
                            budget_creates.push(b);
                            items.push((p, Planned::Budget(id)));
                        }
                    }
                }
                Command::UpdateBudget {
                    budget_id,
                    total,
                    status,
                    reason,
                } => match update_budget(&mut sim, *budget_id, *total, *status) {
                    Ok((before, after)) => {
                        let id = after.budget_id;
                        budget_changes.push(BudgetChange {
                            before,
                            after,
                            reason: reason.clone(),
                            origin,
                        });
                        items.push((p, Planned::Budget(id)));
                    }
                    Err(rejection) => {
                        refusals.push(Refusal {
                            action,
                            origin,
                            rejection: rejection.clone(),
                            amount: *total,
                        });
                        items.push((p, Planned::Refused(rejection)));
                    }
                },
                Command::SetStatus { status, reason } => {
                    if sim.status == WalletStatus::Closed {
                        let rejection = Rejection::WalletClosed;
                        refusals.push(Refusal {
                            action,
                            origin,
                            rejection: rejection.clone(),
                            amount: None,
                        });
                        items.push((p, Planned::Refused(rejection)));
                    } else {
                        status_changes.push(StatusChange {
                            from: sim.status,
                            to: *status,
                            reason: reason.clone(),
                            origin,
                        });
                        sim.status = *status;
                        items.push((p, Planned::Status));
                    }
                }
                Command::TransferOut {
                    to_wallet_id,
                    amount,
                    description,
                    reference_id,
                } => {
                    let checked = if *to_wallet_id == sim.wallet_id {
                        Err(Rejection::Invalid("a transfer needs two different wallets".into()))
                    } else {
                        check_transfer(&sim, *amount)
                    };
                    match checked {
                        Err(rejection) => {
                            refusals.push(Refusal {
                                action,
                                origin,
                                rejection: rejection.clone(),
                                amount: Some(*amount),
                            });
                            items.push((p, Planned::Refused(rejection)));
                        }
                        Ok(balance_after) => {
                            debug_assert!(items.is_empty(), "a transfer always flies alone");
                            let mut source_after = sim.clone();
                            source_after.balance = balance_after;
                            source_after.version += 1;
                            source_after.updated_at = Utc::now();
                            let (out_id, out_at) = new_txn_id();
                            let (in_id, in_at) = new_txn_id();
                            let reference_type = reference_id.as_ref().map(|_| "TRANSFER".to_string());
                            let plan = TransferPlan {
                                expected_version: sim.version,
                                out: Entry {
                                    txn_id: out_id,
                                    wallet_id: sim.wallet_id,
                                    kind: TxnType::TransferOut,
                                    amount: *amount,
                                    description: description.clone(),
                                    reference_id: reference_id.clone(),
                                    reference_type: reference_type.clone(),
                                    metadata: None,
                                    balance_after,
                                    created_at: out_at,
                                    origin: origin.clone(),
                                    budgets: vec![],
                                },
                                incoming: Entry {
                                    txn_id: in_id,
                                    wallet_id: *to_wallet_id,
                                    kind: TxnType::TransferIn,
                                    amount: *amount,
                                    description: description.clone(),
                                    reference_id: reference_id.clone(),
                                    reference_type,
                                    metadata: None,
                                    // Filled in by the store from the destination's locked row.
                                    balance_after: crate::money::Amount::ZERO,
                                    created_at: in_at,
                                    origin,
                                    budgets: vec![],
                                },
                                source_after,
                            };
                            return Some(Flight::Transfer {
                                plan: Arc::new(plan),
                                item: p,
                                result: Err(TransferError::Commit(CommitError::VersionConflict)),
                            });
                        }
                    }
                }
            }
        }
        if items.is_empty() {
            return None;
        }
        if !entries.is_empty() || !status_changes.is_empty() || !budget_creates.is_empty() || !budget_changes.is_empty()
        {
            sim.version = self.wallet.version + 1;
            sim.updated_at = Utc::now();
        }
        let batch = Batch {
            wallet_id: self.wallet.wallet_id,
            expected_version: self.wallet.version,
            after: sim,
            entries,
            status_changes,
            refusals,
            budget_creates,
            budget_changes,
            alerts,
        };

        Some(Flight::Batch {
            batch: Arc::new(batch),
            items,
            result: Ok(()),
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
                Flight::Batch { batch, items, .. } => {
                    let started = std::time::Instant::now();
                    let result = AssertUnwindSafe(store.commit(&batch))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|p| Err(unknown(p)));
                    let outcome = if result.is_ok() { "ok" } else { "error" };
                    metrics::histogram!("wallet_group_commit_batch_size").record(items.len() as f64);
                    metrics::histogram!("wallet_commit_duration_seconds", "outcome" => outcome)
                        .record(started.elapsed().as_secs_f64());
                    Flight::Batch { batch, items, result }
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
            Flight::Batch { batch, items, result } => match result {
                Ok(()) => {
                    self.conflict_retries = 0;
                    if batch.changes_wallet() {
                        self.wallet = batch.after.clone();
                        // A credit with a reference may refund a debit: the store gave the amount back to the
                        // budgets the debit was charged to (in SQL, where the charges are), so reload them.
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
                            Planned::Refused(r) => Err(r),
                        };
                        let _ = p.reply.send(answer);
                    }
                }
                Err(CommitError::VersionConflict) => {
                    self.stale = true;
                    self.retry_or_fail(items.into_iter().map(|(p, _)| p).collect());
                }
                Err(CommitError::DuplicateReferences(dups)) => {
                    let mut again = Vec::with_capacity(items.len());
                    for (p, planned) in items {
                        let dup = match planned {
                            Planned::Entry(i) => dups.iter().find(|(d, _)| *d == i).map(|(_, t)| *t),
                            _ => None,
                        };
                        match dup {
                            Some(existing_txn_id) => {
                                let _ = p.reply.send(Err(Rejection::DuplicateReference { existing_txn_id }));
                            }
                            None => again.push(p),
                        }
                    }
                    self.requeue(again);
                }
                Err(CommitError::Unavailable { reason, .. }) => {
                    self.stale = true;
                    for (p, _) in items {
                        let _ = p.reply.send(Err(Rejection::Unavailable(reason.clone())));
                    }
                }
            },
            Flight::Transfer { plan, item, result } => match result {
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
                Err(TransferError::Commit(CommitError::Unavailable { reason, .. })) => {
                    self.stale = true;
                    let _ = item.reply.send(Err(Rejection::Unavailable(reason)));
                }
            },
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
            self.pending.push_front(p);
        }
    }
}

/// Validates a credit or debit against the simulated state and applies it; returns the balance after.
fn post(
    sim: &mut WalletState,
    direction: Direction,
    amount: crate::money::Amount,
) -> Result<crate::money::Amount, Rejection> {
    if sim.status != WalletStatus::Active {
        return Err(Rejection::WalletNotActive {
            wallet_id: sim.wallet_id,
            status: sim.status,
        });
    }
    let after = match direction {
        Direction::Credit => sim.balance.checked_add(amount).ok_or(Rejection::BalanceOverflow)?,
        Direction::Debit => sim.balance.checked_sub(amount).ok_or(Rejection::InsufficientFunds {
            balance: sim.balance,
            requested: amount,
        })?,
    };
    sim.balance = after;
    Ok(after)
}

/// Validates the source leg of a transfer; returns the source balance after it.
fn check_transfer(sim: &WalletState, amount: crate::money::Amount) -> Result<crate::money::Amount, Rejection> {
    let mut s = sim.clone();
    post(&mut s, Direction::Debit, amount)
}

/// Checks a debit of `amount` against every budget that applies today and charges it to them; returns the
/// budgets charged. Thresholds crossed are added to `alerts` (and marked, so each is announced once).
fn charge_budgets(
    sim: &mut WalletState,
    amount: Amount,
    thresholds: &[u8],
    alerts: &mut Vec<BudgetAlert>,
) -> Result<Vec<uuid::Uuid>, Rejection> {
    let today = Utc::now().date_naive();
    for b in sim.budgets.iter().filter(|b| b.applies_on(today)) {
        let after = b.used.value() + amount.value();
        if after > b.total.value() {
            let exceeded_by = Amount::new(after - b.total.value()).unwrap_or(amount);
            return Err(Rejection::BudgetExceeded {
                budget_id: b.budget_id,
                exceeded_by,
            });
        }
    }
    let mut charged = Vec::new();
    for b in sim.budgets.iter_mut().filter(|b| b.applies_on(today)) {
        let before = b.used.value();
        // Within total (checked above), so within the amount range.
        b.used = b.used.checked_add(amount).unwrap_or(b.total);
        for alert in crossed(b, before, b.used.value(), thresholds) {
            b.alerted.push(alert.threshold);
            alerts.push(alert);
        }
        charged.push(b.budget_id);
    }
    Ok(charged)
}

/// Applies a change of total and/or status to a budget in the simulation; returns (before, after).
fn update_budget(
    sim: &mut WalletState,
    budget_id: uuid::Uuid,
    total: Option<Amount>,
    status: Option<BudgetStatus>,
) -> Result<(Budget, Budget), Rejection> {
    let today = Utc::now().date_naive();
    let b = sim
        .budgets
        .iter_mut()
        .find(|b| b.budget_id == budget_id)
        .ok_or(Rejection::BudgetNotFound)?;
    if b.status == BudgetStatus::Expired || b.end_date < today {
        return Err(Rejection::BudgetExpired);
    }
    let before = b.clone();
    if let Some(t) = total {
        if t < b.used {
            return Err(Rejection::BudgetBelowUsed { used: b.used });
        }
        b.total = t;
        // Thresholds no longer reached under the new total may be announced again when crossed.
        let used = b.used.value();
        let total = b.total.value();
        b.alerted
            .retain(|&th| used >= total * rust_decimal::Decimal::from(th) / rust_decimal::Decimal::from(100));
    }
    if let Some(s) = status {
        if s == BudgetStatus::Expired {
            return Err(Rejection::Invalid("status may only be ACTIVE or SUSPENDED".into()));
        }
        b.status = s;
    }
    b.updated_at = Utc::now();
    Ok((before, b.clone()))
}
