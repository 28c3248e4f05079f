//! The engine's front door: finds or spawns a wallet's actor, bounds what queues for it, restarts it
//! after a failure and stops it when idle.
//!
//! Which wallets are live, and why a command can never be lost to an actor stopping while it is sent, is
//! [`crate::registry`]'s: the supervisor takes a queue ticket there before it sends, and spawns the actor
//! into the wallet's slot. A message that still finds a dead actor (it failed) comes back from
//! `send_message` and is sent again to a new one; it was never processed.
//!
//! # Restarts
//! Wallet actors are linked to a supervisor actor. When one fails (a panic, a store error it cannot
//! handle), the supervisor drops its slot; the next command for that wallet spawns a new actor from the
//! committed row. Commands that were waiting in the failed actor are answered `Unavailable` (their
//! outcome may be unknown; callers retry with their Idempotency-Key or reference).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, MessagingErr, SupervisionEvent};
use tracing::{info, warn};
use uuid::Uuid;

// The limits' defaults were defined here first; the service still names them through this module.
pub use crate::limits::{
    COMMIT_WAIT, DEFAULT_IDLE_TIMEOUT, Limits, MAX_BATCH, MAX_CONFLICT_RETRIES, MAX_LIVE_ACTORS, MAX_QUEUED_PER_WALLET,
    PRESSURE_IDLE_TIMEOUT, REPLY_TIMEOUT,
};
use crate::messages::{Applied, Fate, QueueTicket, Request, WalletMsg};
use crate::outcome::Rejection;
use crate::registry::{Registry, RetireHandle, Slot};
use crate::state::WalletState;
use crate::store::WalletStore;
use crate::wallet::{WalletActor, WalletArgs};

/// How often a caller past its reply timeout tries again to take its command out of the queue (it may be
/// back there after a version conflict).
const CANCEL_RETRY_PERIOD: Duration = Duration::from_millis(50);
/// How often shutdown looks whether every accepted command has been answered.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// Longest pause between two sweeps for idle actors.
const MAX_SWEEP_PERIOD: Duration = Duration::from_secs(1);
/// Pause between sweeps while more than `max_live_actors` are alive: a quarter of the pressure idle time,
/// so actors beyond the bound live at most ~1.25 s past their last use whatever the arrival rate.
const PRESSURE_SWEEP_PERIOD: Duration = Duration::from_millis(250);
/// Attempts to deliver one command when the actor found has just died.
const MAX_SEND_ATTEMPTS: usize = 3;

struct Inner {
    /// Held strongly here only: a wallet actor's `RetireHandle` is weak, so the registry goes with the engine.
    registry: Arc<Registry>,
    by_actor: DashMap<ActorId, (Uuid, Arc<Slot>)>,
    store: Arc<dyn WalletStore>,
    limits: Limits,
    supervisor: ActorRef<SetInner>,
    restarts: AtomicU64,
    /// Set by [`Engine::shutdown`]: new commands are refused (not applied) while accepted ones finish.
    closing: AtomicBool,
}

/// Handle to the engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Supervises wallet actors: a failed or stopped one loses its slot, so the next command starts afresh.
struct Supervisor;

impl Actor for Supervisor {
    type Msg = SetInner;
    type State = Weak<Inner>;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<SetInner>, _: ()) -> Result<Weak<Inner>, ActorProcessingErr> {
        Ok(Weak::new())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SetInner>,
        event: SupervisionEvent,
        state: &mut Weak<Inner>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(inner) = state.upgrade() else { return Ok(()) };
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some((_, (wallet_id, slot))) = inner.by_actor.remove(&cell.get_id()) {
                    inner.registry.forget(wallet_id, &slot);
                    inner.restarts.fetch_add(1, Ordering::Relaxed);
                    warn!(%wallet_id, %error, "wallet actor failed; the next command restarts it from the database");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some((_, (wallet_id, slot))) = inner.by_actor.remove(&cell.get_id()) {
                    inner.registry.forget(wallet_id, &slot);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<SetInner>,
        SetInner(inner): SetInner,
        state: &mut Weak<Inner>,
    ) -> Result<(), ActorProcessingErr> {
        *state = inner;
        Ok(())
    }
}

/// The supervisor's only message: its back-reference to the engine, set once the engine exists. (Weak, so
/// the engine and its supervisor do not keep each other alive.)
pub struct SetInner(Weak<Inner>);

/// Why the engine did not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineStartError {
    #[error("cannot start the wallet supervisor: {0}")]
    Spawn(ractor::SpawnErr),
    #[error("wallet supervisor stopped at start")]
    SupervisorStopped,
}

impl Engine {
    /// Starts the supervisor and the idle sweeper.
    pub async fn start(store: Arc<dyn WalletStore>, limits: Limits) -> Result<Engine, EngineStartError> {
        assert!(
            limits.max_batch > 0 && limits.max_queued_per_wallet > 0,
            "limits must be positive"
        );
        let (supervisor, _) = Actor::spawn(None, Supervisor, ())
            .await
            .map_err(EngineStartError::Spawn)?;
        let inner = Arc::new(Inner {
            registry: Arc::new(Registry::new(&limits)),
            by_actor: DashMap::new(),
            store,
            limits,
            supervisor: supervisor.clone(),
            restarts: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        });
        supervisor
            .send_message(SetInner(Arc::downgrade(&inner)))
            .map_err(|_| EngineStartError::SupervisorStopped)?;
        spawn_idle_sweeper(Arc::downgrade(&inner));
        Ok(Engine { inner })
    }

    /// Runs a command on the wallet's actor and waits for its outcome (after commit).
    ///
    /// The answer is exact about what happened: `Ok` after the commit; a business [`Rejection`] that
    /// changed nothing but the audit; [`Rejection::Unavailable`] only when the command is certainly not
    /// applied (refused at the door, dropped from the queue unplanned, or its commit rolled back);
    /// [`Rejection::OutcomeUnknown`] when it went into a commit whose outcome could not be learnt.
    pub async fn execute(&self, wallet_id: Uuid, request: Request) -> Result<Applied, Rejection> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(Rejection::Unavailable("the engine is shutting down".into()));
        }
        let mut request = request;
        for _ in 0..MAX_SEND_ATTEMPTS {
            let (slot, actor, ticket) = self.acquire(wallet_id).await?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let fate = Fate::default();
            match actor.send_message(WalletMsg::Execute(request, tx.into(), ticket, fate.clone())) {
                Ok(()) => return self.await_command(rx, fate).await,
                Err(MessagingErr::SendErr(WalletMsg::Execute(r, _, _, _))) => {
                    // The actor died before our message got in: it was never processed, send it again.
                    self.inner.registry.forget(wallet_id, &slot);
                    request = r;
                }
                Err(_) => break,
            }
        }
        Err(Rejection::Unavailable("wallet actor unavailable".into()))
    }

    /// Runs several commands on one wallet's actor, in this order, and waits for each outcome (after its
    /// commit). All of them are queued in one message *before* any answer is awaited, so the actor plans
    /// them together in batch order (many in one commit) and no other command of the wallet gets between
    /// them. Each answer means exactly what [`Engine::execute`]'s does: every command has its own
    /// [`Fate`] and waits at most the reply timeout in the queue (all timers start when they are sent),
    /// so a 503 for one of them is as true as for a single command.
    ///
    /// Past the wallet's queue bound the rest are refused with `Overloaded` (never sent): a later command
    /// must not overtake an earlier one that was refused for room.
    pub async fn execute_many(&self, wallet_id: Uuid, requests: Vec<Request>) -> Vec<Result<Applied, Rejection>> {
        let n = requests.len();
        if n == 0 {
            return vec![];
        }
        if self.inner.closing.load(Ordering::Acquire) {
            return vec![Err(Rejection::Unavailable("the engine is shutting down".into())); n];
        }
        let mut requests = requests;
        for _ in 0..MAX_SEND_ATTEMPTS {
            let (slot, actor, first) = match self.acquire(wallet_id).await {
                Ok(found) => found,
                Err(rejection) => return vec![Err(rejection); n],
            };
            let mut tickets = Vec::with_capacity(n);
            tickets.push(first);
            while tickets.len() < requests.len() {
                match self
                    .inner
                    .registry
                    .enter(wallet_id, self.inner.limits.max_queued_per_wallet)
                {
                    Ok((_, ticket)) => tickets.push(ticket),
                    Err(_) => break,
                }
            }
            let beyond = requests.split_off(tickets.len());
            let mut queued = Vec::with_capacity(tickets.len());
            let mut waits = Vec::with_capacity(tickets.len());
            for (request, ticket) in requests.into_iter().zip(tickets) {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let fate = Fate::default();
                queued.push((request, tx.into(), ticket, fate.clone()));
                waits.push((rx, fate));
            }
            match actor.send_message(WalletMsg::ExecuteMany(queued)) {
                Ok(()) => {
                    let mut answers = futures_util::future::join_all(
                        waits.into_iter().map(|(rx, fate)| self.await_command(rx, fate)),
                    )
                    .await;
                    answers.extend(beyond.iter().map(|_| Err(Rejection::Overloaded)));
                    return answers;
                }
                Err(MessagingErr::SendErr(WalletMsg::ExecuteMany(back))) => {
                    // The actor died before our message got in: none was processed, send them again.
                    self.inner.registry.forget(wallet_id, &slot);
                    requests = back.into_iter().map(|(r, ..)| r).chain(beyond).collect();
                }
                Err(_) => break,
            }
        }
        vec![Err(Rejection::Unavailable("wallet actor unavailable".into())); n]
    }

    /// The engine's limits and settings (the budget alert thresholds, for planning outside an actor).
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The wallet's committed state, from its actor.
    pub async fn get(&self, wallet_id: Uuid) -> Result<WalletState, Rejection> {
        for _ in 0..MAX_SEND_ATTEMPTS {
            let (slot, actor, ticket) = self.acquire(wallet_id).await?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            match actor.send_message(WalletMsg::Get(tx.into(), ticket)) {
                Ok(()) => return self.await_reply(rx).await,
                Err(_) => self.inner.registry.forget(wallet_id, &slot),
            }
        }
        Err(Rejection::Unavailable("wallet actor unavailable".into()))
    }

    /// Tells a live actor that its row changed elsewhere (e.g. the incoming leg of a transfer).
    pub fn invalidate(&self, wallet_id: Uuid) {
        if let Some(actor) = self.inner.registry.actor(wallet_id) {
            // An actor that stopped meanwhile has no state left to invalidate.
            let _ = actor.send_message(WalletMsg::Invalidate);
        }
    }

    /// Wallet actors currently alive.
    pub fn live_actors(&self) -> usize {
        self.inner.by_actor.len()
    }

    /// Commands queued or in flight across all wallets.
    pub fn queued_commands(&self) -> usize {
        self.inner.registry.queued()
    }

    /// Actors that failed and were dropped for a restart, since start.
    pub fn restarts(&self) -> u64 {
        self.inner.restarts.load(Ordering::Relaxed)
    }

    /// Drains, then stops: new commands are refused from now on (not applied), every command already
    /// accepted is committed or refused and its caller answered, then the actors and the supervisor stop.
    /// Returns false when `deadline` passed first; commands still queued then are dropped unplanned by
    /// their callers' own timeouts, and a statement still running is bounded by the store's statement
    /// timeout, so nothing is left to commit long after the process exits.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        self.inner.closing.store(true, Ordering::Release);
        let until = Instant::now() + deadline;
        let mut drained = true;
        while self.queued_commands() > 0 {
            if Instant::now() >= until {
                drained = false;
                warn!(
                    queued = self.queued_commands(),
                    "drain deadline passed with commands still queued or in flight"
                );
                break;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let cell: ActorCell = self.inner.supervisor.get_cell();
        let left = until.saturating_duration_since(Instant::now()).max(DRAIN_POLL);
        cell.drain_children_and_wait(Some(left)).await;
        self.inner.supervisor.stop(Some("shutdown".into()));
        info!(drained, "wallet engine stopped");
        drained
    }

    /// Waits for a command's answer. Past the reply timeout the caller tries to take the command out of
    /// the queue: if it was not yet planned it never will be, and "not applied" is the truth. If it is in a
    /// commit, the caller waits for that commit (bounded by `commit_wait`, which the store's own timeouts
    /// keep out of reach), and past that answers "outcome unknown".
    async fn await_command(
        &self,
        mut rx: tokio::sync::oneshot::Receiver<Result<Applied, Rejection>>,
        fate: Fate,
    ) -> Result<Applied, Rejection> {
        let limits = &self.inner.limits;
        if let Ok(answer) = tokio::time::timeout(limits.reply_timeout, &mut rx).await {
            return answer.unwrap_or_else(|_| Err(Self::lost(&fate)));
        }
        let until = Instant::now() + limits.commit_wait;
        loop {
            if fate.cancel() {
                metrics::counter!("wallet_commands_dropped_unplanned_total").increment(1);
                return Err(Rejection::Unavailable(
                    "timed out in the wallet's queue; dropped unplanned".into(),
                ));
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!("a commit outlasted the commit wait; its outcome is unknown to the caller");
                return Err(Rejection::OutcomeUnknown);
            }
            if let Ok(answer) = tokio::time::timeout(left.min(CANCEL_RETRY_PERIOD), &mut rx).await {
                return answer.unwrap_or_else(|_| Err(Self::lost(&fate)));
            }
        }
    }

    /// The actor went away without answering: if the command was never planned it is not applied.
    fn lost(fate: &Fate) -> Rejection {
        if fate.cancel() {
            Rejection::Unavailable("the wallet actor stopped before planning the command".into())
        } else {
            Rejection::OutcomeUnknown
        }
    }

    async fn await_reply<T>(&self, rx: tokio::sync::oneshot::Receiver<Result<T, Rejection>>) -> Result<T, Rejection> {
        match tokio::time::timeout(self.inner.limits.reply_timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Rejection::Unavailable(
                "the wallet actor stopped before answering; the outcome is unknown, retry with the same key".into(),
            )),
            Err(_) => Err(Rejection::Unavailable("timed out waiting for the wallet".into())),
        }
    }

    /// Finds or spawns the wallet's actor and takes a queue ticket for one message.
    async fn acquire(&self, wallet_id: Uuid) -> Result<(Arc<Slot>, ActorRef<WalletMsg>, QueueTicket), Rejection> {
        let inner = &self.inner;
        let (slot, ticket) = inner.registry.enter(wallet_id, inner.limits.max_queued_per_wallet)?;
        let spawned = slot.actor.get_or_try_init(|| self.spawn(wallet_id, slot.clone())).await;
        match spawned {
            Ok(actor) => Ok((slot.clone(), actor.clone(), ticket)),
            Err(rejection) => {
                drop(ticket);
                inner.registry.forget_unstarted(wallet_id, &slot);
                Err(rejection)
            }
        }
    }

    async fn spawn(&self, wallet_id: Uuid, slot: Arc<Slot>) -> Result<ActorRef<WalletMsg>, Rejection> {
        let inner = &self.inner;
        let state = inner
            .store
            .load(wallet_id)
            .await
            .map_err(|e| Rejection::Unavailable(e.to_string()))?
            .ok_or(Rejection::WalletNotFound)?;
        let args = WalletArgs {
            state,
            store: inner.store.clone(),
            limits: inner.limits.clone(),
            retire: RetireHandle::new(&inner.registry, wallet_id, slot.clone()),
        };
        let (actor, _) = Actor::spawn_linked(None, WalletActor, args, inner.supervisor.get_cell())
            .await
            .map_err(|e| Rejection::Unavailable(format!("cannot start wallet actor: {e}")))?;
        inner.by_actor.insert(actor.get_id(), (wallet_id, slot));
        Ok(actor)
    }
}

/// Asks idle actors to stop. One task for the whole engine (not a timer per actor), so a million
/// passivated wallets cost nothing.
fn spawn_idle_sweeper(inner: Weak<Inner>) {
    tokio::spawn(async move {
        let period = match inner.upgrade() {
            Some(i) => (i.limits.idle_timeout / 4).clamp(Duration::from_millis(10), MAX_SWEEP_PERIOD),
            None => return,
        };
        let mut pause = period;
        loop {
            tokio::time::sleep(pause).await;
            let Some(inner) = inner.upgrade() else { return };
            if inner.supervisor.get_status() != ractor::ActorStatus::Running {
                return;
            }
            pause = if inner.registry.under_pressure() {
                period.min(PRESSURE_SWEEP_PERIOD)
            } else {
                period
            };
            inner.registry.send_idle_checks();
        }
    });
}
