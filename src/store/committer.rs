//! The shared group committer: the batches of many wallets' actors written together.
//!
//! A wallet's actor already folds its own queued commands into one batch; the committer folds the batches
//! of many wallets into one commit, which is what makes spread load faster than one commit per debit.
//!
//! # Two paths
//! - **Plain batches** (credits and debits with no budget work: the booking and debit traffic; holds placed
//!   without a reference or budget, their captures and releases, with the placement's chained audit row) of
//!   the whole group go to Postgres as **one statement in autocommit**: one round trip, one commit, one WAL flush
//!   ([`plain_statement`]). The version-guarded `UPDATE` of their wallets comes first, and every row the
//!   statement inserts is joined to the wallets that `UPDATE` returned, so a batch whose wallet moved on
//!   (or that repeats a reference already taken) writes nothing while its neighbours commit.
//! - **Other batches** (status changes, budgets, credits with a reference — refunds, which give back to
//!   budgets and may not exceed their debit —, holds with a reference or budgets, refusals alone) and plain ones the statement could not take
//!   (Postgres refused it: nothing of it committed) are written in one transaction, each in its own
//!   savepoint ([`write_batch`]), so one failing batch never fails another.
//!
//! Either way each caller is answered only after the commit holding its batch (or with the reason its
//! batch did not commit). Groups are sorted by wallet id, the order transfers lock rows in.
//!
//! # When a group starts
//! A free committer starts a group at once when no other commit is in flight. While one is, the next group
//! goes on forming until that commit finishes or [`MIN_OVERLAP_BATCHES`] wait (at most
//! [`MAX_FORMING_WAIT`], so a commit held up holds no one else for long): at a moderate rate each
//! posting would otherwise be a statement of its own, and a statement's fixed cost is most of a small
//! one's. Under load groups overlap as before, and a full group waiting wakes a surge committer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::Client;
use deadpool_postgres::GenericClient;
use tracing::warn;
use uuid::Uuid;
use wallet_actors::store::{Batch, CommitError, HoldEvent};
use wallet_actors::{Entry, TxnType};

use super::idempotency::{CLAIM_HELD, fence};
use super::replica::ReadRouter;
use super::rows::{
    EntryCols, GroupRows, KeyCols, Param, claim_references, insert_group_rows, refunds_over_debits, rollback,
    root_cause,
};
use super::{Pool, batch_err, commit_err};
use wallet_actors::IdempotencyTicket;

/// Default committer tasks working in parallel (`GROUP_COMMITTERS`; each holds one pooled connection while
/// it commits a group). Two keep a commit in flight while the next group forms (a second commit starts
/// beside one in flight only with [`MIN_OVERLAP_BATCHES`] waiting); more split the waiting batches into
/// smaller groups, i.e. more statements for the same rows (measured on 2 cores: 2 beat 4 by ~10% for single
/// debits, 4 beat 2 by ~35% for 1,000-item bulk batches; docs/BENCHMARKS.md).
pub const GROUP_COMMITTERS: usize = 2;
/// Most committer tasks `GROUP_COMMITTERS` may ask for (each holds a pooled connection while it commits).
pub const MAX_GROUP_COMMITTERS: usize = 8;
/// Most wallet batches in one commit.
pub const MAX_GROUP_BATCHES: usize = 64;
/// Committer tasks that join the `GROUP_COMMITTERS` only while at least a full group ([`MAX_GROUP_BATCHES`])
/// waits in the queue: a bulk posting's thousand items, a burst. They commit only full groups, so they add
/// statements in flight when there is work for them without splitting small groups into smaller ones (four
/// committers for everything were ~10% slower for single debits; as surge committers the bulk A/B in
/// docs/BENCHMARKS.md "Surge committers" gained without that cost).
pub const SURGE_COMMITTERS: usize = 2;
/// Fewest batches a group starts its commit with while another group's commit is in flight. Below it the
/// group goes on forming until that commit finishes: at a moderate rate a free second committer would
/// otherwise take each batch alone, and Postgres' cost at such rates is per statement (executor start-up,
/// constraint set-up), not per row — so two statements of one posting cost nearly twice one of two
/// (docs/BENCHMARKS.md "Groups that form behind a commit in flight"). Under load this many wait at once
/// and the committers overlap as before.
pub const MIN_OVERLAP_BATCHES: usize = 8;
/// Longest a group goes on forming behind a commit in flight. A commit takes about a millisecond; one held
/// up (a row locked by another process, a slow WAL flush) must not hold every other wallet's postings for
/// as long as it lasts, so after this the group starts beside it as it did before.
pub const MAX_FORMING_WAIT: Duration = Duration::from_millis(10);
/// Batches waiting for a committer before new ones wait for room (back-pressure on the actors).
pub const MAX_PENDING_BATCHES: usize = 4096;

/// Writes one wallet's batch inside the caller's transaction (or savepoint): the guarded wallet update,
/// its reference keys (and the refund rule: a refund may not exceed its debit), rows, budget work, outbox
/// events, idempotent replies, inbox rows and audit rows. On any error the caller rolls back what this
/// wrote. Statements that do not depend on each other are pipelined (tokio-postgres sends them on the
/// connection without waiting for each answer).
pub(super) async fn write_batch<C: GenericClient + Sync>(tx: &C, batch: &Batch) -> Result<(), CommitError> {
    let entries: Vec<&Entry> = batch.entries.iter().collect();
    // The claim fence first (key rows, then the wallet row: the one lock order of every path).
    let lost = lost_claims(tx, batch).await.map_err(batch_err)?;
    if !lost.is_empty() {
        return Err(CommitError::ClaimsLost(lost));
    }
    if batch.changes_wallet() {
        // The chain head moves in the same guarded UPDATE: the version check is what stops two processes
        // that planned from one head from both committing (a fork of the wallet's chain).
        let stmt = tx
            .prepare_cached(
                "UPDATE wallets SET balance = $2, status = $3, version = $4, updated_at = $5, \
                        reserved = $7, hold_expires_at = $8, head_seq = $9, head_hash = $10 \
                 WHERE wallet_id = $1 AND version = $6",
            )
            .await
            .map_err(batch_err)?;
        let a = &batch.after;
        let head_hash = a.head.hash.to_vec();
        let n = tx
            .execute(
                &stmt,
                &[
                    &batch.wallet_id,
                    &a.balance.value(),
                    &a.status.as_str(),
                    &a.version,
                    &a.updated_at,
                    &batch.expected_version,
                    &a.reserved().value(),
                    &a.next_hold_expiry(),
                    &a.head.seq,
                    &head_hash,
                ],
            )
            .await
            .map_err(batch_err)?;
        if n == 0 {
            return Err(CommitError::VersionConflict);
        }
        let dups = claim_references(tx, &entries).await.map_err(batch_err)?;
        if !dups.is_empty() {
            return Err(CommitError::DuplicateReferences(dups));
        }
        let done = processed_events(tx, batch).await.map_err(batch_err)?;
        if !done.is_empty() {
            return Err(CommitError::EventsProcessed(done));
        }
        // The refund rule, for HTTP and events alike: after the keys, so a debit earlier in this batch counts.
        let over = refunds_over_debits(tx, &entries).await?;
        if !over.is_empty() {
            return Err(CommitError::RefundsExceedDebits(over));
        }
        let dup_holds = super::holds::claim_placed(tx, batch).await.map_err(batch_err)?;
        if !dup_holds.is_empty() {
            return Err(CommitError::DuplicateHolds(dup_holds));
        }
    } else {
        // Refusals only: they were judged on the state of `expected_version`; if the row moved on (another
        // process credited or unfroze it), the engine must re-judge them on fresh state.
        let stmt = tx
            .prepare_cached("SELECT version FROM wallets WHERE wallet_id = $1")
            .await
            .map_err(batch_err)?;
        let current: Option<i64> = tx
            .query_opt(&stmt, &[&batch.wallet_id])
            .await
            .map_err(batch_err)?
            .map(|r| super::col(&r, "version"))
            .transpose()
            .map_err(commit_err)?;
        if current != Some(batch.expected_version) {
            return Err(CommitError::VersionConflict);
        }
    }
    let rows = GroupRows::of(&[batch]);
    let (budgets, holds, rows) = tokio::join!(
        super::write_budgets(tx, batch),
        super::holds::write_changes(tx, batch),
        insert_group_rows(tx, &rows)
    );
    root_cause([budgets, holds, rows]).map_err(batch_err)?;
    Ok(())
}

/// Which of a batch's consumed events are in the inbox already (no statement when it carries none).
async fn processed_events<C: GenericClient>(c: &C, batch: &Batch) -> Result<Vec<Uuid>, tokio_postgres::Error> {
    let ids: Vec<Uuid> = batch.inbox_events().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = c
        .prepare_cached("SELECT event_id FROM processed_events WHERE event_id = ANY($1::uuid[])")
        .await?;
    let rows = c.query(&stmt, &[&ids]).await?;
    rows.iter().map(|r| r.try_get("event_id")).collect()
}

/// The keyed items of a batch whose Idempotency-Key claims are lost (entries by index, then placed holds at
/// `entries.len() + change index`, as `CommitError::ClaimsLost` reads them); locks the others' key rows.
async fn lost_claims<C: GenericClient>(c: &C, batch: &Batch) -> Result<Vec<usize>, tokio_postgres::Error> {
    let entries = batch.entries.len();
    let placed = batch
        .hold_changes
        .iter()
        .enumerate()
        .filter(|(_, ch)| ch.event == wallet_actors::store::HoldEvent::Placed)
        .filter_map(|(j, ch)| ch.origin.idempotency.as_ref().map(|t| (entries + j, t)));
    let (index, claims): (Vec<usize>, Vec<&IdempotencyTicket>) = batch
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.origin.idempotency.as_ref().map(|t| (i, t)))
        .chain(placed)
        .unzip();
    let lost = fence(c, &claims).await?;
    Ok(lost.into_iter().map(|j| index[j]).collect())
}

/// Batches of *different* wallets committed together (see the module docs).
#[derive(Clone)]
pub struct GroupCommitter {
    jobs: tokio::sync::mpsc::Sender<CommitJob>,
    /// Wakes a surge committer (a full group is waiting).
    surge: Arc<tokio::sync::Notify>,
    /// Wakes a group forming behind a commit in flight (a batch arrived).
    arrived: Arc<tokio::sync::Notify>,
    counters: Arc<Counters>,
}

/// What the committer tasks count, for tests and operators (also exported as metrics).
#[derive(Default)]
struct Counters {
    /// Groups of plain batches Postgres refused as one statement (written the careful way instead).
    fallbacks: AtomicU64,
    /// Batches written the careful way (a transaction with a savepoint each), whatever the reason.
    careful: AtomicU64,
    /// Groups committed by surge committers.
    surge_groups: AtomicU64,
    /// Groups committed by any committer.
    groups: AtomicU64,
}

struct CommitJob {
    batch: Batch,
    reply: tokio::sync::oneshot::Sender<Result<(), CommitError>>,
}

impl GroupCommitter {
    /// Starts `committers` committer tasks (`GROUP_COMMITTERS`; tests use one, to form groups); they stop
    /// when the last handle is dropped.
    pub fn with_committers(
        pool: Pool,
        cache: std::sync::Arc<crate::cache::WalletCache>,
        outbox_written: std::sync::Arc<tokio::sync::Notify>,
        reads: Arc<ReadRouter>,
        committers: usize,
    ) -> Self {
        Self::with_forming_wait(pool, cache, outbox_written, reads, committers, MAX_FORMING_WAIT)
    }

    /// [`Self::with_committers`] with a bound other than [`MAX_FORMING_WAIT`] (tests hold a commit in flight
    /// for longer than that to watch a group form behind it).
    pub fn with_forming_wait(
        pool: Pool,
        cache: std::sync::Arc<crate::cache::WalletCache>,
        outbox_written: std::sync::Arc<tokio::sync::Notify>,
        reads: Arc<ReadRouter>,
        committers: usize,
        forming_wait: Duration,
    ) -> Self {
        assert!(
            (1..=MAX_GROUP_COMMITTERS).contains(&committers),
            "the configuration bounds the committers"
        );
        let (tx, rx) = tokio::sync::mpsc::channel(MAX_PENDING_BATCHES);
        let surge = Arc::new(tokio::sync::Notify::new());
        let arrived = Arc::new(tokio::sync::Notify::new());
        let shared = Arc::new(Committers {
            pool,
            cache,
            outbox_written,
            reads,
            rx: tokio::sync::Mutex::new(rx),
            surge: surge.clone(),
            arrived: arrived.clone(),
            in_flight: AtomicUsize::new(0),
            finished: tokio::sync::Notify::new(),
            forming_wait,
            closed: std::sync::atomic::AtomicBool::new(false),
            counters: Arc::new(Counters::default()),
        });
        for _ in 0..committers {
            tokio::spawn(committer_loop(shared.clone()));
        }
        for _ in 0..SURGE_COMMITTERS {
            tokio::spawn(surge_loop(shared.clone()));
        }
        GroupCommitter {
            jobs: tx,
            surge,
            arrived,
            counters: shared.counters.clone(),
        }
    }

    /// Commits a batch with others and answers after the commit holding it.
    pub async fn commit(&self, batch: Batch) -> Result<(), CommitError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(CommitJob { batch, reply })
            .await
            .map_err(|_| CommitError::Unavailable {
                reason: "the committer has stopped".into(),
                outcome_unknown: false,
            })?;
        self.arrived.notify_one();
        if self.jobs.max_capacity() - self.jobs.capacity() >= MAX_GROUP_BATCHES {
            self.surge.notify_one();
        }
        answer.await.unwrap_or_else(|_| {
            Err(CommitError::Unavailable {
                reason: "the committer stopped mid-commit".into(),
                outcome_unknown: true,
            })
        })
    }

    /// Groups of plain batches that Postgres refused as one statement and that were written the careful
    /// way instead (each such group is also logged). Zero in a healthy system.
    pub fn fallbacks(&self) -> u64 {
        self.counters.fallbacks.load(Ordering::Relaxed)
    }

    /// Batches written the careful way (not in a group's single statement): budget and status work,
    /// transfers' legs, holds with references or budgets, refused groups. The plain ones never are.
    pub fn careful_batches(&self) -> u64 {
        self.counters.careful.load(Ordering::Relaxed)
    }

    /// Groups committed (each one statement on the plain path, one transaction on the careful one).
    pub fn groups(&self) -> u64 {
        self.counters.groups.load(Ordering::Relaxed)
    }

    /// Groups committed by [`SURGE_COMMITTERS`] (a full group was waiting).
    pub fn surge_groups(&self) -> u64 {
        self.counters.surge_groups.load(Ordering::Relaxed)
    }
}

/// What every committer task shares: the queue and where commits go.
struct Committers {
    pool: Pool,
    cache: std::sync::Arc<crate::cache::WalletCache>,
    outbox_written: std::sync::Arc<tokio::sync::Notify>,
    reads: Arc<ReadRouter>,
    rx: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<CommitJob>>,
    /// Wakes a surge committer (a full group is waiting), or all of them when the queue closes.
    surge: Arc<tokio::sync::Notify>,
    /// Signalled by every batch sent (see [`Committers::form_group`]).
    arrived: Arc<tokio::sync::Notify>,
    /// Groups being committed now.
    in_flight: AtomicUsize,
    /// Signalled when a group's commit finishes.
    finished: tokio::sync::Notify,
    /// Longest a group forms behind a commit in flight ([`MAX_FORMING_WAIT`]).
    forming_wait: Duration,
    /// Set when the queue has closed (every handle dropped) and drained.
    closed: std::sync::atomic::AtomicBool,
    counters: Arc<Counters>,
}

/// A committer of `GROUP_COMMITTERS`: takes whatever waits (up to a full group) as soon as it is free.
async fn committer_loop(shared: Arc<Committers>) {
    loop {
        // Counted in flight before the queue is let go, so the next committer sees it and lets its group form.
        let (jobs, in_flight) = {
            let mut rx = shared.rx.lock().await;
            let Some(first) = rx.recv().await else {
                // Every handle is gone and the queue is empty: the surge committers stop too.
                shared.closed.store(true, Ordering::Release);
                shared.surge.notify_waiters();
                return;
            };
            (shared.form_group(&mut rx, first).await, InFlight::count(&shared))
        };
        shared.commit(jobs, in_flight).await;
    }
}

/// A surge committer: woken when a full group waits, it commits full groups while there are any.
async fn surge_loop(shared: Arc<Committers>) {
    loop {
        // Registered before the check, so a wake-up between the two is not lost.
        let woken = shared.surge.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        woken.await;
        loop {
            let (jobs, in_flight) = {
                let mut rx = shared.rx.lock().await;
                if rx.len() < MAX_GROUP_BATCHES {
                    break; // the others took it meanwhile
                }
                let jobs = take_group(&mut rx, Vec::with_capacity(MAX_GROUP_BATCHES));
                (jobs, InFlight::count(&shared))
            };
            shared.counters.surge_groups.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("wallet_group_commit_surge_groups_total").increment(1);
            shared.commit(jobs, in_flight).await;
        }
    }
}

/// Adds to `jobs` what waits in the queue, up to a full group.
fn take_group(rx: &mut tokio::sync::mpsc::Receiver<CommitJob>, mut jobs: Vec<CommitJob>) -> Vec<CommitJob> {
    while jobs.len() < MAX_GROUP_BATCHES {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
    jobs
}

impl Committers {
    /// The group `first` starts: at once when no other commit is in flight, else once that commit finishes,
    /// [`MIN_OVERLAP_BATCHES`] wait (see there) or `forming_wait` has passed.
    async fn form_group(&self, rx: &mut tokio::sync::mpsc::Receiver<CommitJob>, first: CommitJob) -> Vec<CommitJob> {
        let give_up = tokio::time::Instant::now() + self.forming_wait;
        loop {
            // Registered before the checks, so a signal between a check and the wait is not lost.
            let finished = self.finished.notified();
            let arrived = self.arrived.notified();
            tokio::pin!(finished, arrived);
            finished.as_mut().enable();
            arrived.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 || 1 + rx.len() >= MIN_OVERLAP_BATCHES {
                break;
            }
            tokio::select! {
                _ = finished => {}
                _ = arrived => {}
                _ = tokio::time::sleep_until(give_up) => break,
            }
        }
        take_group(rx, vec![first])
    }

    /// Commits a group and answers each of its callers; `_in_flight` (counted when the group was taken) ends
    /// with it.
    async fn commit(&self, mut jobs: Vec<CommitJob>, _in_flight: InFlight<'_>) {
        self.counters.groups.fetch_add(1, Ordering::Relaxed);
        jobs.sort_by_key(|j| j.batch.wallet_id);
        metrics::histogram!("wallet_group_commit_wallets").record(jobs.len() as f64);
        let results = commit_group(&self.pool, &jobs, &self.counters, &self.reads).await;
        if results.iter().any(Result::is_ok) {
            self.outbox_written.notify_one();
        }
        for (job, result) in jobs.into_iter().zip(results) {
            if result.is_ok() && job.batch.changes_wallet() {
                self.cache.put(&job.batch.after);
            }
            // A caller that went away (cancelled request) misses its answer; the commit stands either way.
            let _ = job.reply.send(result);
        }
    }
}

/// A group's commit counted in [`Committers::in_flight`] while it lives; dropping it (after the answers, or
/// on a panic) signals the groups forming behind it.
struct InFlight<'a>(&'a Committers);

impl<'a> InFlight<'a> {
    fn count(shared: &'a Committers) -> Self {
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.finished.notify_waiters();
    }
}

/// Whether a batch is plain enough for the single-statement path: credits, debits, and holds placed,
/// captured or released, with no status or budget work, no budget charges, no credit that may refund a
/// budgeted debit, no reference key a capture shares with its hold (that key is added to, not inserted),
/// no hold placed with a reference (its uniqueness is checked on the careful path), and no hold both placed
/// and changed in the batch (the statement's CTEs share one snapshot: an update would not see the insert).
/// The batch's chained audit rows (a hold's placement) are written by the statement too.
fn is_plain(b: &Batch) -> bool {
    b.changes_wallet()
        && b.status_changes.is_empty()
        && b.budget_creates.is_empty()
        && b.budget_changes.is_empty()
        && b.alerts.is_empty()
        && b.suspicious.is_empty()
        && b.entries.iter().all(|e| {
            e.budgets.is_empty()
                && matches!(e.kind, TxnType::Debit | TxnType::Credit)
                && !(e.kind == TxnType::Credit && e.reference_id.is_some())
                && !(e.hold_id.is_some() && e.reference_id.is_some())
        })
        && plain_holds(b)
}

fn plain_holds(b: &Batch) -> bool {
    let placed: HashSet<Uuid> = b
        .hold_changes
        .iter()
        .filter(|ch| ch.event == HoldEvent::Placed)
        .map(|ch| ch.hold.hold_id)
        .collect();
    b.hold_changes.iter().all(|ch| {
        ch.budget_deltas.is_empty()
            && ch.hold.budgets.is_empty()
            && match ch.event {
                HoldEvent::Placed => ch.hold.reference_id.is_none(),
                _ => !placed.contains(&ch.hold.hold_id),
            }
    })
}

/// `unnest($first::t0[], $first+1::t1[], ...)`.
fn unnest(types: &[&str], first: usize) -> String {
    let args: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", first + i))
        .collect();
    format!("unnest({})", args.join(", "))
}

/// Column types of each section of the plain statement, in parameter order. A section's last column is
/// the wallet its row belongs to (wallet updates: the wallet itself).
const WALLET_TYPES: [&str; 10] = [
    "uuid",
    "numeric",
    "int8",
    "int8",
    "timestamptz",
    "int4",
    "int8",
    "bytea",
    "numeric",
    "timestamptz",
];
const KEY_TYPES: [&str; 6] = ["uuid", "text", "text", "text", "uuid", "numeric"];
const ENTRY_TYPES: [&str; 17] = [
    "uuid",
    "uuid",
    "numeric",
    "text",
    "text",
    "text",
    "text",
    "jsonb",
    "numeric",
    "timestamptz",
    "uuid",
    "text",
    "int8",
    "bytea",
    "bytea",
    "int2",
    "uuid",
];
/// Each wallet's outbox events as array elements, how many, and the wallet (`rows::EventCols`).
const EVENT_TYPES: [&str; 3] = ["text", "int4", "uuid"];
const REPLY_TYPES: [&str; 7] = ["uuid", "text", "text", "int2", "text", "uuid", "uuid"];
const INBOX_TYPES: [&str; 3] = ["uuid", "text", "uuid"];
const AUDIT_TYPES: [&str; 14] = [
    "uuid",
    "text",
    "text",
    "text",
    "text",
    "text",
    "jsonb",
    "uuid",
    "timestamptz",
    "int8",
    "bytea",
    "bytea",
    "int2",
    "uuid",
];
/// Holds placed: id, amount, description, metadata, expiry, placed by, at, wallet.
const PLACED_TYPES: [&str; 8] = [
    "uuid",
    "numeric",
    "text",
    "jsonb",
    "timestamptz",
    "uuid",
    "timestamptz",
    "uuid",
];
/// Holds changed (captured, released): id, captured so far, status, at, wallet.
const CHANGED_TYPES: [&str; 5] = ["uuid", "numeric", "text", "timestamptz", "uuid"];

/// Which optional sections a group needs. A section with no rows is left out of the statement rather than
/// run empty: each costs the opening and locking of its table and indexes, and a debit from HTTP needs
/// none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sections {
    keys: bool,
    replies: bool,
    inbox: bool,
    audit: bool,
    placed: bool,
    changed: bool,
}

impl Sections {
    fn index(self) -> usize {
        usize::from(self.keys)
            | usize::from(self.replies) << 1
            | usize::from(self.inbox) << 2
            | usize::from(self.audit) << 3
            | usize::from(self.placed) << 4
            | usize::from(self.changed) << 5
    }

    fn from_index(i: usize) -> Sections {
        Sections {
            keys: i & 1 != 0,
            replies: i & 2 != 0,
            inbox: i & 4 != 0,
            audit: i & 8 != 0,
            placed: i & 16 != 0,
            changed: i & 32 != 0,
        }
    }
}

/// One prepared text per combination of sections, built on first use.
const SECTION_COMBINATIONS: usize = 64;
static PLAIN_STATEMENTS: [OnceLock<String>; SECTION_COMBINATIONS] = [const { OnceLock::new() }; SECTION_COMBINATIONS];

/// The whole write of a group of plain batches, as one statement. Data-modifying CTEs all run, once, on
/// one snapshot; `upd` is the version-guarded update, and every insert joins its rows to the wallets `upd`
/// returned. A wallet is left out of `upd` when its version moved on, or when one of its batch's
/// reference keys is already taken: any write that takes a key of a wallet also bumps that wallet's
/// version in the same transaction, so a key taken after our snapshot makes the version check fail, and
/// one taken before it is seen by `NOT EXISTS`. The same guarded `UPDATE` moves each wallet's chain head
/// (`head_seq`, `head_hash`) with its chained ledger rows, so no two processes extend one head (no fork).
/// The statement returns the wallets it updated. Parameters
/// come section by section, in the order of the `*_TYPES` above, present sections only.
fn plain_statement(with: Sections) -> &'static str {
    PLAIN_STATEMENTS[with.index()].get_or_init(|| {
        let mut n = 1;
        let mut next = |types: &[&str]| {
            let u = unnest(types, n);
            n += types.len();
            u
        };
        let wallets = next(&WALLET_TYPES);
        let keys = with.keys.then(|| next(&KEY_TYPES));
        let entries = next(&ENTRY_TYPES);
        let events = next(&EVENT_TYPES);
        let replies = with.replies.then(|| next(&REPLY_TYPES));
        let inbox = with.inbox.then(|| next(&INBOX_TYPES));
        let audit = with.audit.then(|| next(&AUDIT_TYPES));
        let placed = with.placed.then(|| next(&PLACED_TYPES));
        let changed = with.changed.then(|| next(&CHANGED_TYPES));
        let columns = EntryCols::COLUMNS;
        let mut ctes = Vec::new();
        if let Some(keys) = &keys {
            ctes.push(format!("keys AS (SELECT * FROM {keys} AS k(w, rt, ri, ty, txn, amt))"));
            // The wallets of this group with a reference key already taken: one index probe per key. The
            // probe is a sub-select Postgres may not turn into a join (`OFFSET 0`), so no plan of it can
            // hash the whole `transaction_references` table instead. As a join (`keys JOIN
            // transaction_references` inside `NOT EXISTS`) it was planned that way on each connection while
            // the table was small, and the cached generic plan went on scanning every reference on every
            // commit as the table grew (docs/BENCHMARKS.md, "A stale generic plan").
            ctes.push(
                "taken AS MATERIALIZED (SELECT DISTINCT k.w FROM keys k WHERE EXISTS ( \
                     SELECT 1 FROM transaction_references r \
                      WHERE r.wallet_id = k.w AND r.reference_type = k.rt \
                        AND r.reference_id = k.ri AND r.type = k.ty OFFSET 0))"
                    .to_string(),
            );
        }
        // The claim fence (see `store::idempotency`): the key rows of the replies are locked, and a wallet
        // is updated only if every one of its replies still holds its claim token unfinished (each reply
        // probes its key row, in the replies' order: the group's wallet order).
        let fenced = if let Some(replies) = &replies {
            ctes.push(format!("rep AS (SELECT * FROM {replies} AS x(c, e, k, s, b, t, w))"));
            ctes.push(format!("fence AS (SELECT x.w FROM rep x WHERE {CLAIM_HELD})"));
            " AND v.nr = (SELECT count(*) FROM fence f WHERE f.w = v.id)"
        } else {
            ""
        };
        let not_taken = if keys.is_some() {
            " AND NOT EXISTS (SELECT 1 FROM taken t WHERE t.w = v.id)"
        } else {
            ""
        };
        // The inbox guard: a wallet is left out when one of its batch's consumed events is in the inbox
        // already (its effect, or its refusal, committed before), probed per event like `taken` above. The
        // consumer does not look an event up before a booking's debit, so this is what stops a refused
        // booking redelivered after a credit from being debited. An event committed after our snapshot
        // was committed with a version bump of the same wallet (its effect) or makes no difference (a
        // refusal racing an acceptance, as when the consumer looked the inbox up first).
        if let Some(inbox) = &inbox {
            ctes.push(format!("inb AS (SELECT * FROM {inbox} AS x(i, t, w))"));
            ctes.push(
                "done AS MATERIALIZED (SELECT DISTINCT x.w FROM inb x WHERE EXISTS ( \
                     SELECT 1 FROM processed_events p WHERE p.event_id = x.i OFFSET 0))"
                    .to_string(),
            );
        }
        let not_done = if inbox.is_some() {
            " AND NOT EXISTS (SELECT 1 FROM done d WHERE d.w = v.id)"
        } else {
            ""
        };
        ctes.push(format!(
            "upd AS (UPDATE wallets w SET balance = v.b, version = v.nv, updated_at = v.at, \
                    head_seq = v.hs, head_hash = v.hh, reserved = v.rs, hold_expires_at = v.hx \
               FROM {wallets} AS v(id, b, nv, ev, at, nr, hs, hh, rs, hx) \
              WHERE w.wallet_id = v.id AND w.version = v.ev{not_taken}{not_done}{fenced} \
             RETURNING w.wallet_id)"
        ));
        if keys.is_some() {
            ctes.push(
                "refs AS (INSERT INTO transaction_references (wallet_id, reference_type, reference_id, type, txn_id, amount) \
                 SELECT k.w, k.rt, k.ri, k.ty, k.txn, k.amt FROM keys k JOIN upd ON upd.wallet_id = k.w)"
                    .to_string(),
            );
        }
        ctes.push(format!(
            "txns AS (INSERT INTO transactions ({columns}, hold_id, status) \
             SELECT t.*, 'COMPLETED' FROM {entries} AS t({columns}, hold_id) JOIN upd ON upd.wallet_id = t.wallet_id)"
        ));
        // The commit's events as one outbox row (`sql/V13`): the updated wallets' elements in one array.
        ctes.push(format!(
            "evts AS (INSERT INTO outbox (events, event_count) \
             SELECT ('[' || string_agg(x.p, ',') || ']')::json, sum(x.n) \
               FROM {events} AS x(p, n, w) JOIN upd ON upd.wallet_id = x.w HAVING count(*) > 0)"
        ));
        if replies.is_some() {
            ctes.push(
                "idem AS (UPDATE idempotency_keys ik SET response_status = x.s, response_body = x.b \
                   FROM rep x JOIN upd ON upd.wallet_id = x.w \
                  WHERE ik.caller = x.c AND ik.endpoint = x.e AND ik.key = x.k AND ik.claim_token = x.t)"
                    .to_string(),
            );
        }
        if inbox.is_some() {
            ctes.push(
                "inbox AS (INSERT INTO processed_events (event_id, event_type) \
                 SELECT x.i, x.t FROM inb x JOIN upd ON upd.wallet_id = x.w ON CONFLICT DO NOTHING)"
                    .to_string(),
            );
        }
        if let Some(audit) = audit {
            ctes.push(format!(
                "audit AS (INSERT INTO audit_log (actor_id, actor_role, action, target_type, target_id, outcome, detail, \
                                                  wallet_id, at, chain_seq, prev_hash, hash, chain_version) \
                 SELECT x.a, x.r, x.ac, x.tt, x.ti, x.o, x.d, x.cw, COALESCE(x.at, CURRENT_TIMESTAMP), x.s, x.ph, x.h, x.v \
                   FROM {audit} AS x(a, r, ac, tt, ti, o, d, cw, at, s, ph, h, v, w) JOIN upd ON upd.wallet_id = x.w)"
            ));
        }
        if let Some(placed) = placed {
            ctes.push(format!(
                "placed AS (INSERT INTO holds (hold_id, wallet_id, amount, status, description, metadata, budgets, \
                                               expires_at, created_by, created_at, updated_at) \
                 SELECT x.id, x.w, x.amount, 'PENDING', x.descr, x.meta, '{{}}', x.exp, x.by, x.at, x.at \
                   FROM {placed} AS x(id, amount, descr, meta, exp, by, at, w) JOIN upd ON upd.wallet_id = x.w)"
            ));
        }
        if let Some(changed) = changed {
            ctes.push(format!(
                "changed AS (UPDATE holds h SET captured_amount = x.captured, status = x.status, updated_at = x.at \
                   FROM {changed} AS x(id, captured, status, at, w) JOIN upd ON upd.wallet_id = x.w \
                  WHERE h.hold_id = x.id AND h.wallet_id = x.w)"
            ));
        }
        format!("WITH {} SELECT wallet_id FROM upd", ctes.join(", "))
    })
}

/// Every variant of the plain statement (for a test that Postgres accepts them all).
#[doc(hidden)]
pub fn all_plain_statements() -> Vec<&'static str> {
    (0..SECTION_COMBINATIONS)
        .map(|i| plain_statement(Sections::from_index(i)))
        .collect()
}

/// Writes plain batches of many wallets (at most one batch per wallet) as one statement in autocommit
/// ([`plain_statement`]), and tells each batch's outcome. An `Err` with a database error means Postgres
/// refused the statement and nothing of it committed; any other `Err` leaves the outcome unknown.
async fn write_plain_statement(
    c: &Client,
    batches: &[&Batch],
) -> Result<Vec<Result<(), CommitError>>, tokio_postgres::Error> {
    let wallet_id: Vec<Uuid> = batches.iter().map(|b| b.wallet_id).collect();
    let balance: Vec<rust_decimal::Decimal> = batches.iter().map(|b| b.after.balance.value()).collect();
    let version: Vec<i64> = batches.iter().map(|b| b.after.version).collect();
    let expected: Vec<i64> = batches.iter().map(|b| b.expected_version).collect();
    let at: Vec<chrono::DateTime<chrono::Utc>> = batches.iter().map(|b| b.after.updated_at).collect();
    let head_seq: Vec<i64> = batches.iter().map(|b| b.after.head.seq).collect();
    let head_hash: Vec<&[u8]> = batches.iter().map(|b| &b.after.head.hash[..]).collect();
    let reserved: Vec<rust_decimal::Decimal> = batches.iter().map(|b| b.after.reserved().value()).collect();
    let hold_expiry: Vec<Option<chrono::DateTime<chrono::Utc>>> =
        batches.iter().map(|b| b.after.next_hold_expiry()).collect();
    let holds = super::holds::PlainHoldCols::of(batches);
    let rows = GroupRows::of(batches);
    let keys = KeyCols::of(&rows.entries);
    let entries = EntryCols::of(&rows.entries);
    let (events, replies, inbox, audit) = (rows.events(), rows.replies(), rows.inbox(), rows.audit());
    let replies_of: Vec<i32> = {
        let mut n: std::collections::HashMap<Uuid, i32> = std::collections::HashMap::new();
        for w in &replies.wallet {
            *n.entry(*w).or_default() += 1;
        }
        wallet_id.iter().map(|w| n.get(w).copied().unwrap_or(0)).collect()
    };
    let with = Sections {
        keys: !keys.is_empty(),
        replies: !replies.wallet.is_empty(),
        inbox: !inbox.wallet.is_empty(),
        audit: !audit.wallet.is_empty(),
        placed: !holds.placed_wallet.is_empty(),
        changed: !holds.changed_wallet.is_empty(),
    };

    let mut params: Vec<Param<'_>> = vec![
        &wallet_id,
        &balance,
        &version,
        &expected,
        &at,
        &replies_of,
        &head_seq,
        &head_hash,
        &reserved,
        &hold_expiry,
    ];
    if with.keys {
        params.extend(keys.params());
    }
    params.extend(entries.params());
    params.push(entries.holds());
    params.extend(events.params());
    params.push(&events.wallet);
    if with.replies {
        params.extend(replies.params());
        params.push(&replies.wallet);
    }
    if with.inbox {
        params.extend(inbox.params());
        params.push(&inbox.wallet);
    }
    if with.audit {
        params.extend(audit.params());
        params.extend(audit.chain_params());
        params.push(&audit.wallet);
    }
    if with.placed {
        params.extend(holds.placed_params());
    }
    if with.changed {
        params.extend(holds.changed_params());
    }
    let types = |on: bool, n: usize| if on { n } else { 0 };
    debug_assert_eq!(
        params.len(),
        WALLET_TYPES.len()
            + types(with.keys, KEY_TYPES.len())
            + ENTRY_TYPES.len()
            + EVENT_TYPES.len()
            + types(with.replies, REPLY_TYPES.len())
            + types(with.inbox, INBOX_TYPES.len())
            + types(with.audit, AUDIT_TYPES.len())
            + types(with.placed, PLACED_TYPES.len())
            + types(with.changed, CHANGED_TYPES.len())
    );

    let stmt = c.prepare_cached(plain_statement(with)).await?;
    let updated = c.query(&stmt, &params).await?;
    let updated: HashSet<Uuid> = updated
        .iter()
        .map(|r| r.try_get("wallet_id"))
        .collect::<Result<_, _>>()?;

    let mut outcomes = Vec::with_capacity(batches.len());
    for b in batches {
        if updated.contains(&b.wallet_id) {
            outcomes.push(Ok(()));
            continue;
        }
        // Left out: a reference already taken, an event already processed, a claim lost, or the wallet
        // moved on. (Read after the commit: a key taken or an event processed since then came with a
        // version bump, so "moved on" would be as true.)
        let entries: Vec<&Entry> = b.entries.iter().collect();
        let taken = KeyCols::of(&entries).taken(c).await?;
        let done = processed_events(c, b).await?;
        let lost = lost_claims(c, b).await?;
        outcomes.push(if !taken.is_empty() {
            Err(CommitError::DuplicateReferences(taken))
        } else if !done.is_empty() {
            Err(CommitError::EventsProcessed(done))
        } else if !lost.is_empty() {
            Err(CommitError::ClaimsLost(lost))
        } else {
            Err(CommitError::VersionConflict)
        });
    }
    Ok(outcomes)
}

/// Writes batches in one transaction, each in its own savepoint (one alone needs none); returns each
/// batch's outcome, in order.
async fn write_in_transaction(client: &mut Client, batches: &[&Batch]) -> Vec<Result<(), CommitError>> {
    let all = |e: CommitError| batches.iter().map(|_| Err(e.clone())).collect::<Vec<_>>();
    let mut tx = match client.transaction().await {
        Ok(t) => t,
        Err(e) => return all(commit_err(e)),
    };
    let mut results: Vec<Result<(), CommitError>> = Vec::with_capacity(batches.len());
    if let [batch] = batches {
        results.push(write_batch(&tx, batch).await);
    } else {
        for batch in batches {
            let outcome = match tx.savepoint("batch").await {
                Ok(sp) => {
                    let r = write_batch(&sp, batch).await;
                    let settled = if r.is_ok() {
                        sp.commit().await
                    } else {
                        sp.rollback().await
                    };
                    settled.map(|()| r).map_err(commit_err)
                }
                Err(e) => Err(commit_err(e)),
            };
            match outcome {
                Ok(r) => results.push(r),
                // The transaction is unusable: nothing of it will commit.
                Err(e) => return all(e),
            }
        }
    }
    if results.iter().any(Result::is_ok) {
        if let Err(e) = tx.commit().await {
            let unknown = CommitError::Unavailable {
                reason: format!("commit failed: {e}"),
                outcome_unknown: true,
            };
            return results.into_iter().map(|r| r.and(Err(unknown.clone()))).collect();
        }
    } else {
        rollback(tx).await;
    }
    results
}

/// Writes the group (sorted by wallet id); returns each batch's outcome, in order.
async fn commit_group(
    pool: &Pool,
    jobs: &[CommitJob],
    counters: &Counters,
    reads: &ReadRouter,
) -> Vec<Result<(), CommitError>> {
    let mut client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return jobs.iter().map(|_| Err(commit_err(&e))).collect(),
    };
    let mut slots: Vec<Option<Result<(), CommitError>>> = (0..jobs.len()).map(|_| None).collect();
    // One wallet appears at most once in the statement (a second batch of it, which one process never
    // produces, takes the careful path).
    let mut seen = HashSet::new();
    let (plain, mut careful): (Vec<usize>, Vec<usize>) =
        (0..jobs.len()).partition(|&i| is_plain(&jobs[i].batch) && seen.insert(jobs[i].batch.wallet_id));
    if !plain.is_empty() {
        let batches: Vec<&Batch> = plain.iter().map(|&i| &jobs[i].batch).collect();
        match write_plain_statement(&client, &batches).await {
            Ok(outcomes) => {
                for (&i, outcome) in plain.iter().zip(outcomes) {
                    slots[i] = Some(outcome);
                }
            }
            Err(e) if e.as_db_error().is_some() => {
                // Refused as a whole, nothing committed: write them the careful way, which tells each
                // batch its own outcome.
                counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("wallet_group_commit_fallbacks_total").increment(1);
                warn!(error = %e, batches = plain.len(), "plain group refused as one statement; writing it batch by batch");
                careful.extend(&plain);
                careful.sort_unstable();
            }
            Err(e) => {
                let unknown = CommitError::Unavailable {
                    reason: format!("commit failed: {e}"),
                    outcome_unknown: true,
                };
                for &i in &plain {
                    slots[i] = Some(Err(unknown.clone()));
                }
            }
        }
    }
    if !careful.is_empty() {
        counters.careful.fetch_add(careful.len() as u64, Ordering::Relaxed);
        metrics::counter!("wallet_group_commit_careful_batches_total").increment(careful.len() as u64);
        let batches: Vec<&Batch> = careful.iter().map(|&i| &jobs[i].batch).collect();
        for (&i, outcome) in careful.iter().zip(write_in_transaction(&mut client, &batches).await) {
            slots[i] = Some(outcome);
        }
    }
    // Before any caller is answered: a read that follows the answer must know what the replica needs.
    // Once per group (one statement for up to MAX_GROUP_BATCHES wallets), and only with a replica.
    let maybe_written = |r: &Option<Result<(), CommitError>>| {
        matches!(
            r,
            Some(Ok(()))
                | Some(Err(CommitError::Unavailable {
                    outcome_unknown: true,
                    ..
                }))
        )
    };
    if reads.tracks() && slots.iter().any(maybe_written) {
        let wallets: Vec<Uuid> = jobs.iter().map(|j| j.batch.wallet_id).collect();
        reads.note_commit(&client, pool, &wallets).await;
    }
    slots
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(commit_err("batch left unwritten"))))
        .collect()
}
