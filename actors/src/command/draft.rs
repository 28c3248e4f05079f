//! The batch being planned: the wallet as it will be after the commands planned so far, and the rows they
//! add. Commands plan against it in queue order, so each is judged after the ones before it.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use super::Direction;
use crate::budget::BudgetAlert;
use crate::monitor::{Monitor, MonitorLimits};
use crate::outcome::Rejection;
use crate::state::{Entry, WalletState};
use crate::store::{Batch, BudgetChange, BudgetCreate, HoldChange, Refusal, StatusChange, Suspicion, TransferPlan};

/// What one planned command became inside a batch: its caller's answer once the batch has committed.
pub(crate) enum Planned {
    /// The entry at this index of the batch's entries.
    Entry(usize),
    Status,
    Budget(Uuid),
    /// The hold change at this index of the batch's hold changes (a placement or a void).
    Hold(usize),
    /// A capture: its entry, and the index of its `Captured` hold change.
    Capture {
        entry: usize,
        hold: usize,
    },
    /// The sweep's nudge: answered with the number of expiries the batch wrote.
    Swept,
    Refused(Rejection),
}

/// What planning one command led to.
#[allow(
    clippy::large_enum_variant,
    reason = "one per planned command, moved straight into its batch or flight"
)]
pub(crate) enum Step {
    /// The command's part of the batch being planned.
    Batch(Planned),
    /// A transfer that will go ahead: it locks a second wallet, so it is committed on its own.
    Alone(TransferPlan),
}

/// See the module docs.
pub(crate) struct Draft {
    /// The version the batch is planned against: the store's guard.
    expected_version: i64,
    /// The wallet after the commands planned so far.
    pub(super) sim: WalletState,
    pub(super) entries: Vec<Entry>,
    pub(super) status_changes: Vec<StatusChange>,
    pub(super) refusals: Vec<Refusal>,
    pub(super) budget_creates: Vec<BudgetCreate>,
    pub(super) budget_changes: Vec<BudgetChange>,
    /// `BudgetExceeded` events to publish with the batch.
    pub(super) alerts: Vec<BudgetAlert>,
    /// References of the entries planned so far. The store only knows committed references, and two rows
    /// with one key in one transaction violate its unique key and fail the whole batch; so a repeat waits
    /// for the next batch, where the store reports it as a duplicate of the one that took effect.
    pub(super) planned_refs: HashSet<(String, String, Direction)>,
    /// Budget alert thresholds in percent, ascending.
    pub(super) thresholds: Arc<[u8]>,
    pub(super) hold_changes: Vec<HoldChange>,
    /// `(reference_type, reference_id)` of the holds placed so far in this batch (see `planned_refs`).
    pub(super) planned_hold_refs: HashSet<(String, String)>,
    /// The instant the batch is judged at: holds past their expiry reserve nothing from it on.
    pub(super) now: chrono::DateTime<Utc>,
    /// How far past its amount a hold may be captured, in percent (`HOLD_OVERCAPTURE_PERCENT`).
    pub(super) overcapture_percent: u8,
    /// The wallet's suspicious-activity sketch as the batch leaves it (kept only if the batch commits).
    pub(crate) monitor: Monitor,
    pub(super) monitor_limits: MonitorLimits,
    pub(super) suspicious: Vec<Suspicion>,
    /// Whether `into_batch` links the rows on the wallet's chain (`Limits::audit_chain`; off only to
    /// measure what the chain costs).
    chained: bool,
}

impl Draft {
    /// An empty batch on top of the committed state.
    pub(crate) fn new(committed: &WalletState, thresholds: Arc<[u8]>, overcapture_percent: u8) -> Draft {
        Draft {
            expected_version: committed.version,
            sim: committed.clone(),
            entries: Vec::new(),
            status_changes: Vec::new(),
            refusals: Vec::new(),
            budget_creates: Vec::new(),
            budget_changes: Vec::new(),
            alerts: Vec::new(),
            planned_refs: HashSet::new(),
            thresholds,
            hold_changes: Vec::new(),
            planned_hold_refs: HashSet::new(),
            now: Utc::now(),
            overcapture_percent,
            monitor: Monitor::default(),
            monitor_limits: MonitorLimits {
                enabled: false,
                ..MonitorLimits::default()
            },
            suspicious: Vec::new(),
            chained: true,
        }
    }

    /// A draft whose batch is sealed without linking its rows (`Limits::audit_chain` off: measurement only).
    pub(crate) fn unchained(mut self) -> Draft {
        self.chained = false;
        self
    }

    /// Watches the batch's debits with this sketch and these rules (the wallet actor's; a draft without it
    /// watches nothing).
    pub(crate) fn watched(mut self, monitor: Monitor, limits: MonitorLimits) -> Draft {
        self.monitor = monitor;
        self.monitor_limits = limits;
        self
    }

    /// The wallet as the next command would find it.
    pub(crate) fn sim(&self) -> &WalletState {
        &self.sim
    }

    /// Whether an entry with this reference is already planned in this batch (see `planned_refs`).
    pub(crate) fn has_planned_reference(&self, reference_type: &str, reference_id: &str, direction: Direction) -> bool {
        self.planned_refs
            .contains(&(reference_type.to_string(), reference_id.to_string(), direction))
    }

    /// Whether a hold placement with this reference is already planned in this batch.
    pub(crate) fn has_planned_hold_reference(&self, reference_type: &str, reference_id: &str) -> bool {
        self.planned_hold_refs
            .contains(&(reference_type.to_string(), reference_id.to_string()))
    }

    /// Whether this batch already changes the hold (a second change of one hold waits for the next batch,
    /// so that each row and reference key is written once per statement).
    pub(crate) fn touches_hold(&self, hold_id: Uuid) -> bool {
        self.hold_changes.iter().any(|c| c.hold.hold_id == hold_id)
    }

    /// The batch to commit, with the expiry of every hold whose time is up (any use of the wallet writes
    /// it), its audit rows, and every chained row linked after the wallet's head (`seal`). One that only
    /// carries refusals leaves the wallet as it was, version and head included.
    pub(crate) fn into_batch(mut self) -> Batch {
        super::hold::expire_due(&mut self);
        let changes_wallet = !self.entries.is_empty()
            || !self.status_changes.is_empty()
            || !self.budget_creates.is_empty()
            || !self.budget_changes.is_empty()
            || !self.hold_changes.is_empty()
            // A hit's audit row is on the wallet's chain: it moves the head, so it bumps the version.
            || !self.suspicious.is_empty();
        let mut after = self.sim;
        let mut entries = self.entries;
        let mut audit = super::seal::audit_events(&super::seal::Changes {
            wallet_id: after.wallet_id,
            status_changes: &self.status_changes,
            budget_creates: &self.budget_creates,
            budget_changes: &self.budget_changes,
            hold_changes: &self.hold_changes,
            suspicious: &self.suspicious,
        });
        if changes_wallet {
            after.version = self.expected_version + 1;
            after.updated_at = Utc::now();
        }
        // Unchained (measurement only), every row keeps `link: None` and the head stays: the store writes
        // NULL chain columns and the head it already has.
        if changes_wallet && self.chained {
            // The head the batch was planned from is the committed one: commands never move it.
            after.head = super::seal::chain_batch(after.head, after.wallet_id, &mut entries, &mut audit);
        }
        Batch {
            wallet_id: after.wallet_id,
            expected_version: self.expected_version,
            after,
            entries,
            status_changes: self.status_changes,
            refusals: self.refusals,
            budget_creates: self.budget_creates,
            budget_changes: self.budget_changes,
            alerts: self.alerts,
            hold_changes: self.hold_changes,
            suspicious: self.suspicious,
            audit,
        }
    }
}
