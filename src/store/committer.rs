//! The shared group committer: the batches of many wallets' actors written in one commit.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;
use wallet_actors::store::{Batch, CommitError};
use wallet_actors::{Entry, Origin, TxnType};

use super::commit_err;
use super::rows::{
    AuditRow, claim_references, complete_idempotency, insert_audit, insert_entries, insert_outbox, record_inbox,
    rollback, to_json_body,
};
use crate::views::{OutboxEvent, TransactionView};

/// Writes one wallet's batch inside the caller's transaction (or savepoint): the guarded wallet update,
/// its reference keys, rows, budget work, outbox events, idempotent replies, inbox rows and audit rows.
/// On any error the caller rolls back what this wrote. Statements that do not depend on each other are
/// pipelined (tokio-postgres sends them on the connection without waiting for each answer).
pub(super) async fn write_batch<C: GenericClient + Sync>(tx: &C, batch: &Batch) -> Result<(), CommitError> {
    let entries: Vec<&Entry> = batch.entries.iter().collect();
    if batch.changes_wallet() {
        let stmt = tx
            .prepare_cached(
                "UPDATE wallets SET balance = $2, status = $3, version = $4, updated_at = $5 \
                 WHERE wallet_id = $1 AND version = $6",
            )
            .await
            .map_err(commit_err)?;
        let a = &batch.after;
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
                ],
            )
            .await
            .map_err(commit_err)?;
        if n == 0 {
            return Err(CommitError::VersionConflict);
        }
        let dups = claim_references(tx, &entries).await.map_err(commit_err)?;
        if !dups.is_empty() {
            return Err(CommitError::DuplicateReferences(dups));
        }
    } else {
        // Refusals only: they were judged on the state of `expected_version`; if the row moved on (another
        // process credited or unfroze it), the engine must re-judge them on fresh state.
        let stmt = tx
            .prepare_cached("SELECT version FROM wallets WHERE wallet_id = $1")
            .await
            .map_err(commit_err)?;
        let current: Option<i64> = tx
            .query_opt(&stmt, &[&batch.wallet_id])
            .await
            .map_err(commit_err)?
            .map(|r| r.get(0));
        if current != Some(batch.expected_version) {
            return Err(CommitError::VersionConflict);
        }
    }
    let this = [batch];
    tokio::try_join!(crate::budgets::write_batch(tx, batch), insert_batch_rows(tx, &this)).map_err(commit_err)?;
    Ok(())
}

/// Batches of *different* wallets committed together: one database transaction (one WAL flush) for many
/// wallets, which is what makes spread load faster than one commit per debit.
///
/// A wallet's actor already folds its own queued commands into one batch; the committer folds the batches
/// of many wallets into one transaction. Each batch runs inside its own savepoint, so a version conflict or
/// a duplicate reference in one batch rolls back that batch alone and never fails its neighbours. The
/// group is written in wallet-id order, the same order transfers lock rows in, so groups and transfers
/// cannot deadlock each other. Every caller is answered only after the transaction holding its batch has
/// committed (or with the reason its batch did not).
#[derive(Clone)]
pub struct GroupCommitter {
    jobs: tokio::sync::mpsc::Sender<CommitJob>,
}

struct CommitJob {
    batch: Batch,
    reply: tokio::sync::oneshot::Sender<Result<(), CommitError>>,
}

/// Committer tasks working in parallel (each holds one pooled connection while it commits a group).
pub const GROUP_COMMITTERS: usize = 4;
/// Most wallet batches in one transaction.
pub const MAX_GROUP_BATCHES: usize = 64;
/// Batches waiting for a committer before new ones wait for room (back-pressure on the actors).
pub const MAX_PENDING_BATCHES: usize = 4096;

impl GroupCommitter {
    /// Starts the committer tasks; they stop when the last handle is dropped.
    pub fn start(
        pool: Pool,
        cache: std::sync::Arc<crate::cache::WalletCache>,
        outbox_written: std::sync::Arc<tokio::sync::Notify>,
    ) -> Self {
        Self::with_committers(pool, cache, outbox_written, GROUP_COMMITTERS)
    }

    /// [`GroupCommitter::start`] with a given number of committer tasks (tests use one, to form groups).
    pub fn with_committers(
        pool: Pool,
        cache: std::sync::Arc<crate::cache::WalletCache>,
        outbox_written: std::sync::Arc<tokio::sync::Notify>,
        committers: usize,
    ) -> Self {
        assert!(committers > 0, "at least one committer");
        let (tx, rx) = tokio::sync::mpsc::channel(MAX_PENDING_BATCHES);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..committers {
            tokio::spawn(committer_loop(
                pool.clone(),
                cache.clone(),
                outbox_written.clone(),
                rx.clone(),
            ));
        }
        GroupCommitter { jobs: tx }
    }

    /// Commits a batch with others and answers after the transaction holding it committed.
    pub async fn commit(&self, batch: Batch) -> Result<(), CommitError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(CommitJob { batch, reply })
            .await
            .map_err(|_| CommitError::Unavailable {
                reason: "the committer has stopped".into(),
                outcome_unknown: false,
            })?;
        answer.await.unwrap_or_else(|_| {
            Err(CommitError::Unavailable {
                reason: "the committer stopped mid-commit".into(),
                outcome_unknown: true,
            })
        })
    }
}

async fn committer_loop(
    pool: Pool,
    cache: std::sync::Arc<crate::cache::WalletCache>,
    outbox_written: std::sync::Arc<tokio::sync::Notify>,
    rx: std::sync::Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<CommitJob>>>,
) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            jobs.push(first);
            while jobs.len() < MAX_GROUP_BATCHES {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
        }
        jobs.sort_by_key(|j| j.batch.wallet_id);
        metrics::histogram!("wallet_group_commit_wallets").record(jobs.len() as f64);
        let results = commit_group(&pool, &jobs).await;
        if results.iter().any(Result::is_ok) {
            outbox_written.notify_one();
        }
        for (job, result) in jobs.into_iter().zip(results) {
            if result.is_ok() && job.batch.changes_wallet() {
                cache.put(&job.batch.after);
            }
            let _ = job.reply.send(result);
        }
    }
}

/// Whether a batch is plain credits/debits that the set-based group path can write: no status or budget
/// work, no budget charges, and no credit that may refund a budgeted debit.
fn is_plain(b: &Batch) -> bool {
    !b.entries.is_empty()
        && b.status_changes.is_empty()
        && b.budget_creates.is_empty()
        && b.budget_changes.is_empty()
        && b.alerts.is_empty()
        && b.entries.iter().all(|e| {
            e.budgets.is_empty()
                && matches!(e.kind, TxnType::Debit | TxnType::Credit)
                && !(e.kind == TxnType::Credit && e.reference_id.is_some())
        })
}

/// Writes plain batches of many wallets with one statement per table, and tells each batch's outcome:
/// reference keys first (a batch repeating a taken one is left out, its other keys removed again), then
/// one version-guarded `UPDATE` of all their wallets (`RETURNING` says which matched; a batch whose wallet
/// moved on is left out the same way), then the rows of the batches that remain, pipelined.
/// An `Err` means the transaction itself failed; nothing of it may commit.
async fn write_plain_group<C: GenericClient + Sync>(
    tx: &C,
    batches: &[&Batch],
) -> Result<Vec<Result<(), CommitError>>, tokio_postgres::Error> {
    let mut outcomes: Vec<Result<(), CommitError>> = batches.iter().map(|_| Ok(())).collect();
    // 1. Reference keys.
    let keyed: Vec<(usize, usize, &Entry)> = batches
        .iter()
        .enumerate()
        .flat_map(|(b, batch)| batch.entries.iter().enumerate().map(move |(e, entry)| (b, e, entry)))
        .filter(|(_, _, e)| e.reference_id.is_some() && e.reference_type.is_some())
        .collect();
    let mut claimed: std::collections::HashSet<Uuid> = std::collections::HashSet::new();
    if !keyed.is_empty() {
        let entries: Vec<&Entry> = keyed.iter().map(|k| k.2).collect();
        let wallet: Vec<Uuid> = entries.iter().map(|e| e.wallet_id).collect();
        let rtype: Vec<&str> = entries
            .iter()
            .map(|e| e.reference_type.as_deref().unwrap_or_default())
            .collect();
        let rid: Vec<&str> = entries
            .iter()
            .map(|e| e.reference_id.as_deref().unwrap_or_default())
            .collect();
        let kind: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        let txn: Vec<Uuid> = entries.iter().map(|e| e.txn_id).collect();
        let amount: Vec<Decimal> = entries.iter().map(|e| e.amount.value()).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO transaction_references (wallet_id, reference_type, reference_id, type, txn_id, amount) \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::numeric[]) \
                 ON CONFLICT DO NOTHING RETURNING txn_id",
            )
            .await?;
        claimed = tx
            .query(&stmt, &[&wallet, &rtype, &rid, &kind, &txn, &amount])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if claimed.len() < keyed.len() {
            let stmt = tx
                .prepare_cached(
                    "SELECT r.wallet_id, r.reference_type, r.reference_id, r.type, r.txn_id FROM transaction_references r \
                     JOIN unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS k(w, rt, ri, ty) \
                       ON r.wallet_id = k.w AND r.reference_type = k.rt AND r.reference_id = k.ri AND r.type = k.ty",
                )
                .await?;
            let existing = tx.query(&stmt, &[&wallet, &rtype, &rid, &kind]).await?;
            let mut dups: std::collections::HashMap<usize, Vec<(usize, Uuid)>> = std::collections::HashMap::new();
            for (b, e, entry) in &keyed {
                if claimed.contains(&entry.txn_id) {
                    continue;
                }
                let holder = existing.iter().find(|r| {
                    r.get::<_, Uuid>(0) == entry.wallet_id
                        && r.get::<_, &str>(1) == entry.reference_type.as_deref().unwrap_or_default()
                        && r.get::<_, &str>(2) == entry.reference_id.as_deref().unwrap_or_default()
                        && r.get::<_, &str>(3) == entry.kind.as_str()
                });
                dups.entry(*b)
                    .or_default()
                    .push((*e, holder.map(|r| r.get::<_, Uuid>(4)).unwrap_or_default()));
            }
            for (b, d) in dups {
                outcomes[b] = Err(CommitError::DuplicateReferences(d));
            }
        }
    }
    // 2. The guarded update of every wallet still in.
    let live: Vec<usize> = (0..batches.len()).filter(|&b| outcomes[b].is_ok()).collect();
    if !live.is_empty() {
        let id: Vec<Uuid> = live.iter().map(|&b| batches[b].wallet_id).collect();
        let balance: Vec<Decimal> = live.iter().map(|&b| batches[b].after.balance.value()).collect();
        let version: Vec<i64> = live.iter().map(|&b| batches[b].after.version).collect();
        let expected: Vec<i64> = live.iter().map(|&b| batches[b].expected_version).collect();
        let at: Vec<DateTime<Utc>> = live.iter().map(|&b| batches[b].after.updated_at).collect();
        let stmt = tx
            .prepare_cached(
                "UPDATE wallets w SET balance = v.b, version = v.nv, updated_at = v.at \
                 FROM unnest($1::uuid[], $2::numeric[], $3::int8[], $4::int8[], $5::timestamptz[]) AS v(id, b, nv, ev, at) \
                 WHERE w.wallet_id = v.id AND w.version = v.ev RETURNING w.wallet_id",
            )
            .await?;
        let updated: std::collections::HashSet<Uuid> = tx
            .query(&stmt, &[&id, &balance, &version, &expected, &at])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for &b in &live {
            if !updated.contains(&batches[b].wallet_id) {
                outcomes[b] = Err(CommitError::VersionConflict);
            }
        }
    }
    // Keys claimed for batches that are out go again (they did not take effect).
    let orphaned: Vec<Uuid> = keyed
        .iter()
        .filter(|(b, _, e)| outcomes[*b].is_err() && claimed.contains(&e.txn_id))
        .map(|(_, _, e)| e.txn_id)
        .collect();
    if !orphaned.is_empty() {
        let stmt = tx
            .prepare_cached("DELETE FROM transaction_references WHERE txn_id = ANY($1)")
            .await?;
        tx.execute(&stmt, &[&orphaned]).await?;
    }
    // 3. The rows of the batches that took effect, one statement per table, pipelined.
    let done: Vec<&Batch> = (0..batches.len())
        .filter(|&b| outcomes[b].is_ok())
        .map(|b| batches[b])
        .collect();
    insert_batch_rows(tx, &done).await?;
    Ok(outcomes)
}

/// Writes what committed batches leave behind besides the wallet row: their transaction rows, outbox
/// events (`TransactionCompleted`, `BudgetExceeded`), idempotent replies, inbox rows and audit rows
/// (status changes and refusals; a posting's own row is its audit record) — one statement per table for all the batches,
/// pipelined. Both the per-batch and the set-based path use it.
async fn insert_batch_rows<C: GenericClient + Sync>(tx: &C, batches: &[&Batch]) -> Result<(), tokio_postgres::Error> {
    let entries: Vec<&Entry> = batches.iter().flat_map(|b| b.entries.iter()).collect();
    let events: Vec<OutboxEvent> = entries
        .iter()
        .map(|e| OutboxEvent::transaction_completed(e))
        .chain(batches.iter().flat_map(|b| crate::budgets::alert_events(b)))
        .collect();
    // Applied postings are audited by their own ledger rows (actor and role, append-only: sql/V7); the
    // audit log gets what has no ledger row.
    let mut audit: Vec<AuditRow> = Vec::new();
    for b in batches {
        for s in &b.status_changes {
            audit.push(AuditRow::from_origin(
                &s.origin,
                "wallet.set_status",
                "wallet",
                b.wallet_id.to_string(),
                "APPLIED",
                json!({"from": s.from.as_str(), "to": s.to.as_str(), "reason": s.reason}),
            ));
        }
        for r in &b.refusals {
            audit.push(AuditRow::from_origin(
                &r.origin,
                r.action,
                "wallet",
                b.wallet_id.to_string(),
                r.rejection.code(),
                json!({"amount": r.amount.map(|a| a.to_string()), "detail": r.rejection.to_string()}),
            ));
        }
    }
    let replies: Vec<(&Origin, u16, String)> = entries
        .iter()
        .map(|e| (&e.origin, 201, to_json_body(&TransactionView::from(*e))))
        .collect();
    let inbox: Vec<(&Origin, &'static str)> = entries.iter().map(|e| (&e.origin, e.kind.as_str())).collect();
    let rows = async {
        if entries.is_empty() {
            return Ok(());
        }
        insert_entries(tx, &entries).await
    };
    tokio::try_join!(
        rows,
        insert_outbox(tx, &events),
        complete_idempotency(tx, &replies),
        record_inbox(tx, &inbox),
        insert_audit(tx, &audit),
    )?;
    Ok(())
}

/// Writes the group in one transaction; returns each batch's outcome, in order.
async fn commit_group(pool: &Pool, jobs: &[CommitJob]) -> Vec<Result<(), CommitError>> {
    let all = |e: CommitError| jobs.iter().map(|_| Err(e.clone())).collect::<Vec<_>>();
    let mut client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return all(commit_err(e)),
    };
    let mut tx = match client.transaction().await {
        Ok(t) => t,
        Err(e) => return all(commit_err(e)),
    };
    let mut results: Vec<Result<(), CommitError>> = Vec::with_capacity(jobs.len());
    if let [job] = jobs {
        // Alone: no savepoint needed, the transaction itself is the unit.
        results.push(write_batch(&tx, &job.batch).await);
    } else {
        // Plain credits and debits of many wallets go through one set of statements for the whole group;
        // everything else gets a savepoint of its own. Results are put back in the jobs' order.
        // One wallet appears at most once in the set-based statements (a second batch of it, which one
        // process never produces, would take the savepoint path).
        let mut seen = std::collections::HashSet::new();
        let (plain, other): (Vec<usize>, Vec<usize>) =
            (0..jobs.len()).partition(|&i| is_plain(&jobs[i].batch) && seen.insert(jobs[i].batch.wallet_id));
        let mut slots: Vec<Option<Result<(), CommitError>>> = (0..jobs.len()).map(|_| None).collect();
        if plain.len() > 1 {
            let batches: Vec<&Batch> = plain.iter().map(|&i| &jobs[i].batch).collect();
            match write_plain_group(&tx, &batches).await {
                Ok(outcomes) => {
                    for (&i, outcome) in plain.iter().zip(outcomes) {
                        slots[i] = Some(outcome);
                    }
                }
                Err(e) => return all(commit_err(e)),
            }
        }
        let rest: Vec<usize> = if plain.len() > 1 {
            other
        } else {
            (0..jobs.len()).filter(|i| slots[*i].is_none()).collect()
        };
        for i in rest {
            let job = &jobs[i];
            let outcome = match tx.savepoint("batch").await {
                Ok(sp) => {
                    let r = write_batch(&sp, &job.batch).await;
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
                Ok(r) => slots[i] = Some(r),
                Err(e) => {
                    // The transaction is unusable: nothing of the group will commit.
                    return all(e);
                }
            }
        }
        results = slots
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(commit_err("batch left unwritten"))))
            .collect();
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
