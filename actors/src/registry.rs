//! Which wallets have a live actor, how much is queued for each, and the one race that matters between a
//! new command and an idle actor stopping. The supervisor finds and spawns actors through it; a wallet
//! actor retires through its [`RetireHandle`]. Both halves of the race live here, below both of them.
//!
//! # The idle race
//! `Registry` maps a wallet to its `Slot`. A sender takes a [`QueueTicket`] (increments the slot's
//! count) while holding the registry's shard lock; an idle actor retires by removing its slot under the
//! same lock *only if the count is zero*. So a command is either counted before the actor decides to
//! stop (and the actor stays) or finds no slot (and spawns a fresh actor): none is lost in a dying
//! mailbox.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ractor::ActorRef;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::limits::{Limits, PRESSURE_IDLE_TIMEOUT};
use crate::messages::{QueueTicket, WalletMsg};
use crate::outcome::Rejection;

/// One wallet's entry in the registry.
pub(crate) struct Slot {
    /// Set once, by the supervisor, when the actor has been spawned from the committed row.
    pub(crate) actor: OnceCell<ActorRef<WalletMsg>>,
    queued: Arc<AtomicUsize>,
    /// Milliseconds since the engine's epoch at last use; read by the idle sweeper.
    last_used_ms: AtomicU64,
    /// An `IdleCheck` is in the actor's mailbox. The sweeper sends at most one at a time: mailboxes are
    /// unbounded, and re-sending to every idle actor on every sweep (four a second under pressure) piled up
    /// millions of checks faster than busy actors could read them, so passivation fell ~15 s behind and
    /// memory grew (found by a million-wallet walk whose RSS crept up ~0.5 MiB/s).
    check_pending: AtomicBool,
}

/// The live wallets of one engine and the idle policy that decides when their actors may stop.
pub(crate) struct Registry {
    slots: DashMap<Uuid, Arc<Slot>>,
    epoch: Instant,
    idle_timeout: Duration,
    max_live_actors: usize,
}

impl Registry {
    pub(crate) fn new(limits: &Limits) -> Registry {
        Registry {
            slots: DashMap::new(),
            epoch: Instant::now(),
            idle_timeout: limits.idle_timeout,
            max_live_actors: limits.max_live_actors,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// More actors are alive than the limit allows: idle ones stop much sooner (memory pressure).
    pub(crate) fn under_pressure(&self) -> bool {
        self.slots.len() > self.max_live_actors
    }

    /// How long an actor must have been unused to stop: the idle timeout, or much less under pressure.
    fn idle_threshold_ms(&self) -> u64 {
        let idle = if self.under_pressure() {
            self.idle_timeout.min(PRESSURE_IDLE_TIMEOUT)
        } else {
            self.idle_timeout
        };
        idle.as_millis() as u64
    }

    /// Finds or creates the wallet's slot and takes a ticket for one message, refusing with `Overloaded`
    /// past `max_queued`. The count goes up under the shard lock (never held across an await): that is
    /// the sender's half of the idle race.
    pub(crate) fn enter(&self, wallet_id: Uuid, max_queued: usize) -> Result<(Arc<Slot>, QueueTicket), Rejection> {
        let entry = self.slots.entry(wallet_id).or_insert_with(|| {
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
        slot.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
        if before >= max_queued {
            return Err(Rejection::Overloaded);
        }
        Ok((slot, ticket))
    }

    /// Removes `slot` if it is still the registered one (its actor failed or stopped).
    pub(crate) fn forget(&self, wallet_id: Uuid, slot: &Arc<Slot>) {
        self.slots.remove_if(&wallet_id, |_, s| Arc::ptr_eq(s, slot));
    }

    /// Removes a slot whose actor could not be spawned, unless another sender has queued on it meanwhile
    /// (that sender will try the spawn again).
    pub(crate) fn forget_unstarted(&self, wallet_id: Uuid, slot: &Arc<Slot>) {
        self.slots.remove_if(&wallet_id, |_, s| {
            Arc::ptr_eq(s, slot) && s.actor.get().is_none() && s.queued.load(Ordering::Acquire) == 0
        });
    }

    /// The wallet's live actor, if it has one.
    pub(crate) fn actor(&self, wallet_id: Uuid) -> Option<ActorRef<WalletMsg>> {
        self.slots.get(&wallet_id).and_then(|s| s.actor.get().cloned())
    }

    /// Commands queued or in flight across all wallets.
    pub(crate) fn queued(&self) -> usize {
        self.slots.iter().map(|s| s.queued.load(Ordering::Relaxed)).sum()
    }

    /// Sends an `IdleCheck` to every actor idle long enough with nothing queued, at most one in its mailbox.
    pub(crate) fn send_idle_checks(&self) {
        let idle_ms = self.idle_threshold_ms();
        let now = self.now_ms();
        for slot in self.slots.iter() {
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
}

/// Lets an idle actor remove its own slot, only when nothing is queued for it.
pub struct RetireHandle {
    /// Weak, so a wallet actor never keeps a dropped engine's registry alive.
    registry: Weak<Registry>,
    wallet_id: Uuid,
    slot: Arc<Slot>,
}

impl RetireHandle {
    pub(crate) fn new(registry: &Arc<Registry>, wallet_id: Uuid, slot: Arc<Slot>) -> RetireHandle {
        RetireHandle {
            registry: Arc::downgrade(registry),
            wallet_id,
            slot,
        }
    }

    /// The actor read its `IdleCheck`: the sweeper may send the next one.
    pub(crate) fn check_read(&self) {
        self.slot.check_pending.store(false, Ordering::Release);
    }

    /// True when the slot was removed: the actor may stop, no command can reach it any more. The actor's
    /// half of the idle race: removed under the shard lock only while the count is zero.
    pub(crate) fn try_retire(&self) -> bool {
        let Some(registry) = self.registry.upgrade() else {
            return true;
        };
        let idle_ms = registry.idle_threshold_ms();
        let now = registry.now_ms();
        registry
            .slots
            .remove_if(&self.wallet_id, |_, s| {
                Arc::ptr_eq(s, &self.slot)
                    && s.queued.load(Ordering::Acquire) == 0
                    && now.saturating_sub(s.last_used_ms.load(Ordering::Relaxed)) >= idle_ms
            })
            .is_some()
    }
}
