//! The engine's front door: finds or spawns a wallet's actor, bounds what queues for it, restarts it
//! after a failure and stops it when idle.
//!
//! # Registry and the idle race
//! `registry` maps a wallet to its [`Slot`]. A sender takes a [`QueueTicket`] (increments the slot's
//! count) while holding the registry's shard lock; an idle actor retires by removing its slot under the
//! same lock *only if the count is zero*. So a command is either counted before the actor decides to
//! stop (and the actor stays) or finds no slot (and spawns a fresh actor): none is lost in a dying
//! mailbox. A message that still finds a dead actor (it failed) comes back from `send_message` and is
//! sent again to a new one; it was never processed.
//!
//! # Restarts
//! Wallet actors are linked to a supervisor actor. When one fails (a panic, a store error it cannot
//! handle), the supervisor drops its slot; the next command for that wallet spawns a new actor from the
//! committed row. Commands that were waiting in the failed actor are answered `Unavailable` (their
//! outcome may be unknown; callers retry with their Idempotency-Key or reference).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, MessagingErr, SupervisionEvent};
use tokio::sync::OnceCell;
use tracing::{info, warn};
use uuid::Uuid;

use crate::messages::{Applied, QueueTicket, Request, WalletMsg};
use crate::outcome::Rejection;
use crate::state::WalletState;
use crate::store::WalletStore;
use crate::wallet::{WalletActor, WalletArgs};

/// Commands queued for one wallet beyond which new ones are refused with `Overloaded` (ractor mailboxes
/// are unbounded; this is the bound).
pub const MAX_QUEUED_PER_WALLET: usize = 1024;
/// Commands committed together in one transaction at most.
pub const MAX_BATCH: usize = 128;
/// An actor unused this long stops (its state is in the database).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Re-plans after version conflicts before a command is answered `Unavailable`.
pub const MAX_CONFLICT_RETRIES: u32 = 16;
/// Longest a caller waits for its answer (covers the queue ahead and one commit).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// Live actors beyond which idle ones are passivated after [`PRESSURE_IDLE_TIMEOUT`] instead of the idle
/// timeout: a bound on memory when many distinct wallets are touched (each live actor costs ~11 KB, so
/// ~275 MB at this bound). Measured: 50,000 let a million-wallet walk at 6.5k new wallets/s peak at 1.1 GiB
/// RSS, over the 1 GiB pod limit. `ACTOR_MAX_LIVE` overrides it.
pub const MAX_LIVE_ACTORS: usize = 25_000;
/// Idle time after which an actor stops while more than `max_live_actors` are alive.
pub const PRESSURE_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest pause between two sweeps for idle actors.
const MAX_SWEEP_PERIOD: Duration = Duration::from_secs(1);
/// Pause between sweeps while more than `max_live_actors` are alive: a quarter of the pressure idle time,
/// so actors beyond the bound live at most ~1.25 s past their last use whatever the arrival rate.
const PRESSURE_SWEEP_PERIOD: Duration = Duration::from_millis(250);
/// Attempts to deliver one command when the actor found has just died.
const MAX_SEND_ATTEMPTS: usize = 3;

/// The engine's limits and settings, each with a named default above.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_queued_per_wallet: usize,
    pub max_batch: usize,
    pub idle_timeout: Duration,
    pub max_conflict_retries: u32,
    pub reply_timeout: Duration,
    /// Live actors beyond which idle ones stop after [`PRESSURE_IDLE_TIMEOUT`].
    pub max_live_actors: usize,
    /// Budget alert thresholds in percent, ascending (default 80 and 100).
    pub alert_thresholds: Arc<[u8]>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_queued_per_wallet: MAX_QUEUED_PER_WALLET,
            max_batch: MAX_BATCH,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_conflict_retries: MAX_CONFLICT_RETRIES,
            reply_timeout: REPLY_TIMEOUT,
            max_live_actors: MAX_LIVE_ACTORS,
            alert_thresholds: Arc::from(crate::budget::DEFAULT_ALERT_THRESHOLDS.as_slice()),
        }
    }
}

/// One wallet's entry in the registry.
struct Slot {
    actor: OnceCell<ActorRef<WalletMsg>>,
    queued: Arc<AtomicUsize>,
    /// Milliseconds since the engine's epoch at last use; read by the idle sweeper.
    last_used_ms: AtomicU64,
    /// An `IdleCheck` is in the actor's mailbox. The sweeper sends at most one at a time: mailboxes are
    /// unbounded, and re-sending to every idle actor on every sweep (four a second under pressure) piled up
    /// millions of checks faster than busy actors could read them, so passivation fell ~15 s behind and
    /// memory grew (found by a million-wallet walk whose RSS crept up ~0.5 MiB/s).
    check_pending: AtomicBool,
}

struct Inner {
    registry: DashMap<Uuid, Arc<Slot>>,
    by_actor: DashMap<ActorId, (Uuid, Arc<Slot>)>,
    store: Arc<dyn WalletStore>,
    limits: Limits,
    supervisor: ActorRef<SetInner>,
    epoch: Instant,
    restarts: AtomicU64,
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// How long an actor must have been unused to stop: the idle timeout, or much less while more actors
    /// are alive than the limit allows (memory pressure).
    fn idle_threshold_ms(&self) -> u64 {
        let idle = if self.registry.len() > self.limits.max_live_actors {
            self.limits.idle_timeout.min(PRESSURE_IDLE_TIMEOUT)
        } else {
            self.limits.idle_timeout
        };
        idle.as_millis() as u64
    }

    /// Removes `slot` from the registry if it is still the registered one.
    fn forget(&self, wallet_id: Uuid, slot: &Arc<Slot>) {
        self.registry.remove_if(&wallet_id, |_, s| Arc::ptr_eq(s, slot));
    }
}

/// Lets an idle actor remove its own slot, only when nothing is queued for it.
pub struct RetireHandle {
    inner: Weak<Inner>,
    wallet_id: Uuid,
    slot: Arc<Slot>,
}

impl RetireHandle {
    /// The actor read its `IdleCheck`: the sweeper may send the next one.
    pub(crate) fn check_read(&self) {
        self.slot.check_pending.store(false, Ordering::Release);
    }

    /// True when the slot was removed: the actor may stop, no command can reach it any more.
    pub(crate) fn try_retire(&self) -> bool {
        let Some(inner) = self.inner.upgrade() else { return true };
        let idle_ms = inner.idle_threshold_ms();
        let now = inner.now_ms();
        inner
            .registry
            .remove_if(&self.wallet_id, |_, s| {
                Arc::ptr_eq(s, &self.slot)
                    && s.queued.load(Ordering::Acquire) == 0
                    && now.saturating_sub(s.last_used_ms.load(Ordering::Relaxed)) >= idle_ms
            })
            .is_some()
    }
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
                    inner.forget(wallet_id, &slot);
                    inner.restarts.fetch_add(1, Ordering::Relaxed);
                    warn!(%wallet_id, %error, "wallet actor failed; the next command restarts it from the database");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some((_, (wallet_id, slot))) = inner.by_actor.remove(&cell.get_id()) {
                    inner.forget(wallet_id, &slot);
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

impl Engine {
    /// Starts the supervisor and the idle sweeper.
    pub async fn start(store: Arc<dyn WalletStore>, limits: Limits) -> Result<Engine, String> {
        assert!(
            limits.max_batch > 0 && limits.max_queued_per_wallet > 0,
            "limits must be positive"
        );
        let (supervisor, _) = Actor::spawn(None, Supervisor, ())
            .await
            .map_err(|e| format!("cannot start the wallet supervisor: {e}"))?;
        let inner = Arc::new(Inner {
            registry: DashMap::new(),
            by_actor: DashMap::new(),
            store,
            limits,
            supervisor: supervisor.clone(),
            epoch: Instant::now(),
            restarts: AtomicU64::new(0),
        });
        supervisor
            .send_message(SetInner(Arc::downgrade(&inner)))
            .map_err(|_| "wallet supervisor stopped at start".to_string())?;
        spawn_idle_sweeper(Arc::downgrade(&inner));
        Ok(Engine { inner })
    }

    /// Runs a command on the wallet's actor and waits for its outcome (after commit).
    pub async fn execute(&self, wallet_id: Uuid, request: Request) -> Result<Applied, Rejection> {
        let mut request = request;
        for _ in 0..MAX_SEND_ATTEMPTS {
            let (slot, actor, ticket) = self.acquire(wallet_id).await?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            match actor.send_message(WalletMsg::Execute(request, tx.into(), ticket)) {
                Ok(()) => return self.await_reply(rx).await,
                Err(MessagingErr::SendErr(WalletMsg::Execute(r, _, _))) => {
                    // The actor died before our message got in: it was never processed, send it again.
                    self.inner.forget(wallet_id, &slot);
                    request = r;
                }
                Err(_) => break,
            }
        }
        Err(Rejection::Unavailable("wallet actor unavailable".into()))
    }

    /// The wallet's committed state, from its actor.
    pub async fn get(&self, wallet_id: Uuid) -> Result<WalletState, Rejection> {
        for _ in 0..MAX_SEND_ATTEMPTS {
            let (slot, actor, ticket) = self.acquire(wallet_id).await?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            match actor.send_message(WalletMsg::Get(tx.into(), ticket)) {
                Ok(()) => return self.await_reply(rx).await,
                Err(_) => self.inner.forget(wallet_id, &slot),
            }
        }
        Err(Rejection::Unavailable("wallet actor unavailable".into()))
    }

    /// Tells a live actor that its row changed elsewhere (e.g. the incoming leg of a transfer).
    pub fn invalidate(&self, wallet_id: Uuid) {
        let actor = self.inner.registry.get(&wallet_id).and_then(|s| s.actor.get().cloned());
        if let Some(actor) = actor {
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
        self.inner
            .registry
            .iter()
            .map(|s| s.queued.load(Ordering::Relaxed))
            .sum()
    }

    /// Actors that failed and were dropped for a restart, since start.
    pub fn restarts(&self) -> u64 {
        self.inner.restarts.load(Ordering::Relaxed)
    }

    /// Lets every actor finish what it has queued, then stops them and the supervisor.
    pub async fn shutdown(&self, timeout: Duration) {
        let cell: ActorCell = self.inner.supervisor.get_cell();
        cell.drain_children_and_wait(Some(timeout)).await;
        self.inner.supervisor.stop(Some("shutdown".into()));
        info!("wallet engine stopped");
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
        let (slot, ticket) = {
            // Held across the increment only (never across an await): see the module docs.
            let entry = inner.registry.entry(wallet_id).or_insert_with(|| {
                Arc::new(Slot {
                    actor: OnceCell::new(),
                    queued: Arc::new(AtomicUsize::new(0)),
                    last_used_ms: AtomicU64::new(0),
                    check_pending: AtomicBool::new(false),
                })
            });
            let slot = entry.value().clone();
            let before = slot.queued.fetch_add(1, Ordering::AcqRel);
            let ticket = QueueTicket(slot.queued.clone());
            slot.last_used_ms.store(inner.now_ms(), Ordering::Relaxed);
            if before >= inner.limits.max_queued_per_wallet {
                return Err(Rejection::Overloaded);
            }
            (slot, ticket)
        };
        let spawned = slot.actor.get_or_try_init(|| self.spawn(wallet_id, slot.clone())).await;
        match spawned {
            Ok(actor) => Ok((slot.clone(), actor.clone(), ticket)),
            Err(rejection) => {
                drop(ticket);
                inner.registry.remove_if(&wallet_id, |_, s| {
                    Arc::ptr_eq(s, &slot) && s.actor.get().is_none() && s.queued.load(Ordering::Acquire) == 0
                });
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
            retire: RetireHandle {
                inner: Arc::downgrade(inner),
                wallet_id,
                slot: slot.clone(),
            },
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
            let under_pressure = inner.registry.len() > inner.limits.max_live_actors;
            pause = if under_pressure {
                period.min(PRESSURE_SWEEP_PERIOD)
            } else {
                period
            };
            let idle_ms = inner.idle_threshold_ms();
            let now = inner.now_ms();
            for slot in inner.registry.iter() {
                let idle = now.saturating_sub(slot.last_used_ms.load(Ordering::Relaxed)) >= idle_ms;
                if idle
                    && slot.queued.load(Ordering::Relaxed) == 0
                    && let Some(actor) = slot.actor.get()
                    && !slot.check_pending.swap(true, Ordering::AcqRel)
                    && actor.send_message(WalletMsg::IdleCheck).is_err()
                {
                    // The actor is gone (its slot goes with the supervisor's event).
                    slot.check_pending.store(false, Ordering::Release);
                }
            }
        }
    });
}
