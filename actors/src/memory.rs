//! An in-memory [`WalletStore`] with the same guards as the Postgres one (version check, non-negative
//! balance, unique references, an event consumed once, no refund above its debit), for testing the engine
//! without a database. Not for production: nothing is durable.
//!
//! Not modelled: holds' own reference keys (`DuplicateHolds`) and lost Idempotency-Key claims
//! (`ClaimsLost`); the engine's handling of those is tested against Postgres (`tests/api`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use uuid::Uuid;

use crate::money::{Amount, Currency};
use crate::outcome::Rejection;
use crate::state::{Entry, TxnType, WalletState, WalletStatus};
use crate::store::{Batch, CommitError, Refusal, StoreError, TransferError, TransferPlan, WalletStore};

type RefKey = (Uuid, String, String, &'static str);

#[derive(Default)]
struct Data {
    wallets: HashMap<Uuid, WalletState>,
    initial: HashMap<Uuid, Amount>,
    entries: Vec<Entry>,
    /// Each reference key with the transaction that holds it and its amount.
    references: HashMap<RefKey, (Uuid, Amount)>,
    /// The inbox: consumed events whose effect is committed (Postgres' `processed_events`).
    inbox: HashSet<Uuid>,
    refusals: Vec<Refusal>,
}

/// See the module docs. Test hooks make failures happen on demand.
#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<Data>,
    /// Each commit sleeps this long first, so commands pile up behind it (group commit tests).
    pub commit_delay: Mutex<Duration>,
    /// The next `load` panics (actor restart tests).
    pub panic_on_next_load: AtomicBool,
    /// The next `commit` panics before writing anything.
    pub panic_on_next_commit: AtomicBool,
    /// The next this-many commits fail as unavailable.
    pub fail_next_commits: AtomicUsize,
    /// Sizes of the batches committed (entries + status changes + refusals), in order.
    pub batch_sizes: Mutex<Vec<usize>>,
    pub loads: AtomicUsize,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        // A poisoned lock means a test panicked mid-write; the data is still usable for inspection.
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a wallet directly (wallet creation does not go through an actor).
    pub fn create_wallet(&self, balance: Amount, currency: Currency) -> Uuid {
        let id = Uuid::now_v7();
        let now = Utc::now();
        let w = WalletState {
            wallet_id: id,
            user_id: Uuid::new_v4(),
            company_id: Uuid::new_v4(),
            balance,
            currency,
            status: WalletStatus::Active,
            version: 1,
            created_at: now,
            updated_at: now,
            budgets: vec![],
            holds: vec![],
            head: crate::chain::Head::default(),
        };
        let mut d = self.lock();
        d.wallets.insert(id, w);
        d.initial.insert(id, balance);
        id
    }

    pub fn wallet(&self, id: Uuid) -> Option<WalletState> {
        self.lock().wallets.get(&id).cloned()
    }

    pub fn entries(&self, id: Uuid) -> Vec<Entry> {
        self.lock()
            .entries
            .iter()
            .filter(|e| e.wallet_id == id)
            .cloned()
            .collect()
    }

    pub fn refusals(&self) -> Vec<Refusal> {
        self.lock().refusals.clone()
    }

    /// Whether consumed event `id` is in the inbox.
    pub fn processed(&self, id: Uuid) -> bool {
        self.lock().inbox.contains(&id)
    }

    /// Simulates another process committing the effect of consumed event `id` (a redelivery taken by
    /// another consumer): the event goes into the inbox behind the engine's back.
    pub fn external_processed(&self, id: Uuid) {
        self.lock().inbox.insert(id);
    }

    /// Simulates another process writing the row: a debit of `amount` behind the engine's back.
    pub fn external_debit(&self, id: Uuid, amount: Amount) {
        let mut d = self.lock();
        if let Some(w) = d.wallets.get_mut(&id) {
            w.balance = w.balance.checked_sub(amount).expect("external debit within balance");
            w.version += 1;
        }
    }

    /// Balance recomputed from the initial balance and the rows, for invariant checks.
    pub fn replayed_balance(&self, id: Uuid) -> Amount {
        let d = self.lock();
        let mut b = d.initial.get(&id).copied().unwrap_or_default().value();
        for e in d.entries.iter().filter(|e| e.wallet_id == id) {
            if e.kind.is_outflow() {
                b -= e.amount.value();
            } else {
                b += e.amount.value();
            }
        }
        Amount::new(b).expect("replayed balance is a valid amount")
    }

    /// The credits of `entries` (by index) that refund a debit with their reference, committed or earlier
    /// in the batch, for more than it took; with the amount debited.
    fn refunds_over_debits(d: &Data, entries: &[Entry]) -> Vec<(usize, Amount)> {
        let debit_of = |e: &Entry| {
            let mut k = Self::ref_key(e)?;
            k.3 = TxnType::Debit.as_str();
            d.references.get(&k).map(|(_, a)| *a).or_else(|| {
                entries
                    .iter()
                    .find(|x| x.kind == TxnType::Debit && Self::ref_key(x).as_ref() == Some(&k))
                    .map(|x| x.amount)
            })
        };
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind == TxnType::Credit)
            .filter_map(|(i, e)| {
                debit_of(e)
                    .filter(|debited| e.amount > *debited)
                    .map(|debited| (i, debited))
            })
            .collect()
    }

    fn ref_key(e: &Entry) -> Option<RefKey> {
        // A capture shares its hold's reference with the hold's other captures (Postgres adds them up
        // under one key); this store keeps no key for them.
        if e.hold_id.is_some() {
            return None;
        }
        Some((
            e.wallet_id,
            e.reference_type.clone()?,
            e.reference_id.clone()?,
            e.kind.as_str(),
        ))
    }
}

#[async_trait]
impl WalletStore for MemoryStore {
    async fn load(&self, wallet_id: Uuid) -> Result<Option<WalletState>, StoreError> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        if self.panic_on_next_load.swap(false, Ordering::SeqCst) {
            panic!("injected panic while loading wallet {wallet_id}");
        }
        Ok(self.lock().wallets.get(&wallet_id).cloned())
    }

    async fn commit(&self, batch: &Batch) -> Result<(), CommitError> {
        if self.panic_on_next_commit.swap(false, Ordering::SeqCst) {
            panic!("injected panic while committing a batch of wallet {}", batch.wallet_id);
        }
        let delay = *self.commit_delay.lock().unwrap_or_else(|p| p.into_inner());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self
            .fail_next_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(CommitError::Unavailable {
                reason: "injected failure".into(),
                outcome_unknown: false,
            });
        }
        let mut d = self.lock();
        // Checked for a batch of refusals too: a refusal is only as good as the state it was judged on.
        let current = d.wallets.get(&batch.wallet_id).ok_or(CommitError::VersionConflict)?;
        if current.version != batch.expected_version {
            return Err(CommitError::VersionConflict);
        }
        if batch.changes_wallet() {
            let dups: Vec<(usize, Uuid)> = batch
                .entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| Self::ref_key(e).and_then(|k| d.references.get(&k).map(|(t, _)| (i, *t))))
                .collect();
            if !dups.is_empty() {
                return Err(CommitError::DuplicateReferences(dups));
            }
            // After the references, as Postgres checks them (`write_batch`).
            let done: Vec<Uuid> = batch.inbox_events().filter(|id| d.inbox.contains(id)).collect();
            if !done.is_empty() {
                return Err(CommitError::EventsProcessed(done));
            }
            // Two rows with one reference key in one transaction: Postgres's primary key on
            // transaction_references aborts the whole transaction, and nothing is written.
            let mut in_batch = std::collections::HashSet::new();
            if batch
                .entries
                .iter()
                .filter_map(Self::ref_key)
                .any(|k| !in_batch.insert(k))
            {
                return Err(CommitError::Unavailable {
                    reason: "duplicate reference within one batch (unique violation)".into(),
                    outcome_unknown: false,
                });
            }
            let over = Self::refunds_over_debits(&d, &batch.entries);
            if !over.is_empty() {
                return Err(CommitError::RefundsExceedDebits(over));
            }
            for e in &batch.entries {
                if let Some(k) = Self::ref_key(e) {
                    d.references.insert(k, (e.txn_id, e.amount));
                }
            }
            d.inbox.extend(batch.inbox_events());
            d.entries.extend(batch.entries.iter().cloned());
            d.wallets.insert(batch.wallet_id, batch.after.clone());
        }
        d.refusals.extend(batch.refusals.iter().cloned());
        drop(d);
        self.batch_sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(batch.entries.len() + batch.status_changes.len() + batch.refusals.len());
        Ok(())
    }

    async fn transfer(&self, plan: &TransferPlan) -> Result<Entry, TransferError> {
        let mut d = self.lock();
        let source = d
            .wallets
            .get(&plan.out.wallet_id)
            .ok_or(TransferError::Commit(CommitError::VersionConflict))?;
        if source.version != plan.expected_version {
            return Err(TransferError::Commit(CommitError::VersionConflict));
        }
        let Some(dest) = d.wallets.get(&plan.incoming.wallet_id).cloned() else {
            return Err(TransferError::Rejected(Rejection::WalletNotFound));
        };
        if dest.status != WalletStatus::Active {
            return Err(TransferError::Rejected(Rejection::WalletNotActive {
                wallet_id: dest.wallet_id,
                status: dest.status,
            }));
        }
        if dest.currency != plan.source_after.currency {
            return Err(TransferError::Rejected(Rejection::CurrencyMismatch {
                from: plan.source_after.currency,
                to: dest.currency,
            }));
        }
        if let Some(k) = Self::ref_key(&plan.out)
            && let Some((t, _)) = d.references.get(&k)
        {
            return Err(TransferError::Commit(CommitError::DuplicateReferences(vec![(0, *t)])));
        }
        let new_dest_balance = dest
            .balance
            .checked_add(plan.incoming.amount)
            .ok_or(TransferError::Rejected(Rejection::BalanceOverflow))?;
        let mut incoming = plan.incoming.clone();
        incoming.balance_after = new_dest_balance;
        let mut dest_after = dest;
        dest_after.balance = new_dest_balance;
        dest_after.version += 1;
        for e in [&plan.out, &incoming] {
            if let Some(k) = Self::ref_key(e) {
                d.references.insert(k, (e.txn_id, e.amount));
            }
        }
        d.entries.push(plan.out.clone());
        d.entries.push(incoming.clone());
        d.wallets.insert(plan.source_after.wallet_id, plan.source_after.clone());
        d.wallets.insert(dest_after.wallet_id, dest_after);
        Ok(incoming)
    }
}
