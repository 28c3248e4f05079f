//! Postgres behind the engine ([`WalletStore`]) and behind the HTTP reads.
//!
//! Every money write is guarded in SQL so that correctness never depends on there being one process:
//! the wallet row is updated only if its `version` is the one the batch was planned against, the row's
//! `CHECK (balance >= 0)` refuses an overdraft whatever the caller believed, and references are unique
//! in `transaction_references`. A batch writes its rows with set-based `unnest` inserts, so the number
//! of statements per commit does not grow with the batch.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{GenericClient, Pool, Transaction};
use rust_decimal::Decimal;
use serde_json::json;
use tracing::{error, warn};
use uuid::Uuid;
use wallet_actors::store::{Batch, CommitError, StoreError, TransferError, TransferPlan, WalletStore};
use wallet_actors::{Amount, Currency, Entry, Origin, Rejection, TxnType, WalletState, WalletStatus};

use crate::views::{OutboxEvent, TransactionView, TransferView, WalletView};

/// The Postgres store: `pool` for writes and engine loads, `read` for history queries (a replica when
/// `DATABASE_READ_URL` is set).
#[derive(Clone)]
pub struct PgStore {
    pub pool: Pool,
    pub read: Pool,
    /// Commits batches of many wallets together (see [`GroupCommitter`]).
    pub committer: GroupCommitter,
    /// Notified after a commit that wrote outbox rows, so the relay publishes without waiting for its poll.
    pub outbox_written: std::sync::Arc<tokio::sync::Notify>,
    /// Written through after every commit and load (see [`crate::cache`]).
    pub cache: std::sync::Arc<crate::cache::WalletCache>,
}

fn unavailable<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError(e.to_string())
}

fn commit_err<E: std::fmt::Display>(e: E) -> CommitError {
    CommitError::Unavailable {
        reason: e.to_string(),
        outcome_unknown: false,
    }
}

const WALLET_COLUMNS: &str =
    "w.wallet_id, w.user_id, u.company_id, w.balance, w.currency, w.status, w.version, w.created_at, w.updated_at";

fn wallet_from_row(row: &tokio_postgres::Row) -> Result<WalletState, StoreError> {
    let balance: Decimal = row.try_get("balance").map_err(unavailable)?;
    let currency: String = row.try_get("currency").map_err(unavailable)?;
    let status: String = row.try_get("status").map_err(unavailable)?;
    Ok(WalletState {
        wallet_id: row.try_get("wallet_id").map_err(unavailable)?,
        user_id: row.try_get("user_id").map_err(unavailable)?,
        company_id: row.try_get("company_id").map_err(unavailable)?,
        balance: Amount::new(balance).map_err(|e| StoreError(format!("stored balance invalid: {e}")))?,
        currency: currency.parse::<Currency>().map_err(StoreError)?,
        status: status.parse::<WalletStatus>().map_err(StoreError)?,
        version: row.try_get("version").map_err(unavailable)?,
        created_at: row.try_get("created_at").map_err(unavailable)?,
        updated_at: row.try_get("updated_at").map_err(unavailable)?,
        budgets: vec![],
    })
}

/// One audit row.
pub struct AuditRow {
    pub actor_id: Option<Uuid>,
    pub actor_role: String,
    pub action: String,
    pub target_type: &'static str,
    pub target_id: String,
    pub outcome: String,
    pub detail: serde_json::Value,
}

impl AuditRow {
    fn from_origin(
        origin: &Origin,
        action: &str,
        target_type: &'static str,
        target_id: String,
        outcome: &str,
        detail: serde_json::Value,
    ) -> Self {
        AuditRow {
            actor_id: Some(origin.actor_id),
            actor_role: origin.role.clone(),
            action: action.to_string(),
            target_type,
            target_id,
            outcome: outcome.to_string(),
            detail,
        }
    }
}

async fn insert_audit<C: GenericClient>(c: &C, rows: &[AuditRow]) -> Result<(), tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let actor: Vec<Option<Uuid>> = rows.iter().map(|r| r.actor_id).collect();
    let role: Vec<&str> = rows.iter().map(|r| r.actor_role.as_str()).collect();
    let action: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    let ttype: Vec<&str> = rows.iter().map(|r| r.target_type).collect();
    let tid: Vec<&str> = rows.iter().map(|r| r.target_id.as_str()).collect();
    let outcome: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
    let detail: Vec<&serde_json::Value> = rows.iter().map(|r| &r.detail).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO audit_log (actor_id, actor_role, action, target_type, target_id, outcome, detail) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])",
        )
        .await?;
    c.execute(&stmt, &[&actor, &role, &action, &ttype, &tid, &outcome, &detail])
        .await?;
    Ok(())
}

/// Writes outbox rows (in the caller's transaction: the change they report commits with them).
pub(crate) async fn insert_outbox<C: GenericClient>(
    c: &C,
    events: &[OutboxEvent],
) -> Result<(), tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let id: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let et: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    let rk: Vec<&str> = events.iter().map(|e| e.routing_key).collect();
    let agg: Vec<Uuid> = events.iter().map(|e| e.aggregate_id).collect();
    let payload: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO outbox (event_id, event_type, routing_key, aggregate_id, payload) \
             SELECT e, t, r, a, p::json FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[]) AS u(e, t, r, a, p)",
        )
        .await?;
    c.execute(&stmt, &[&id, &et, &rk, &agg, &payload]).await?;
    Ok(())
}

async fn insert_entries<C: GenericClient>(c: &C, entries: &[&Entry]) -> Result<(), tokio_postgres::Error> {
    let id: Vec<Uuid> = entries.iter().map(|e| e.txn_id).collect();
    let wallet: Vec<Uuid> = entries.iter().map(|e| e.wallet_id).collect();
    let amount: Vec<Decimal> = entries.iter().map(|e| e.amount.value()).collect();
    let kind: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    let desc: Vec<Option<&str>> = entries.iter().map(|e| e.description.as_deref()).collect();
    let rid: Vec<Option<&str>> = entries.iter().map(|e| e.reference_id.as_deref()).collect();
    let rtype: Vec<Option<&str>> = entries.iter().map(|e| e.reference_type.as_deref()).collect();
    let meta: Vec<Option<&serde_json::Value>> = entries.iter().map(|e| e.metadata.as_ref()).collect();
    let after: Vec<Decimal> = entries.iter().map(|e| e.balance_after.value()).collect();
    let at: Vec<DateTime<Utc>> = entries.iter().map(|e| e.created_at).collect();
    // The row is the posting's audit record too: who asked, in which role (see sql/V7).
    let actor: Vec<Uuid> = entries.iter().map(|e| e.origin.actor_id).collect();
    let role: Vec<&str> = entries.iter().map(|e| e.origin.role.as_str()).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO transactions (txn_id, wallet_id, amount, type, description, reference_id, reference_type, \
                                       metadata, balance_after, created_at, actor_id, actor_role, status) \
             SELECT t.*, 'COMPLETED' FROM unnest($1::uuid[], $2::uuid[], $3::numeric[], $4::text[], $5::text[], \
                                                 $6::text[], $7::text[], $8::jsonb[], $9::numeric[], $10::timestamptz[], \
                                                 $11::uuid[], $12::text[]) AS t",
        )
        .await?;
    c.execute(
        &stmt,
        &[
            &id, &wallet, &amount, &kind, &desc, &rid, &rtype, &meta, &after, &at, &actor, &role,
        ],
    )
    .await?;
    Ok(())
}

/// Inserts the reference keys of `entries`; returns `(index, existing txn id)` for those already taken.
async fn claim_references<C: GenericClient>(
    c: &C,
    entries: &[&Entry],
) -> Result<Vec<(usize, Uuid)>, tokio_postgres::Error> {
    let with_ref: Vec<(usize, &Entry)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.reference_id.is_some() && e.reference_type.is_some())
        .map(|(i, e)| (i, *e))
        .collect();
    if with_ref.is_empty() {
        return Ok(vec![]);
    }
    let wallet: Vec<Uuid> = with_ref.iter().map(|(_, e)| e.wallet_id).collect();
    let rtype: Vec<&str> = with_ref
        .iter()
        .map(|(_, e)| e.reference_type.as_deref().unwrap_or_default())
        .collect();
    let rid: Vec<&str> = with_ref
        .iter()
        .map(|(_, e)| e.reference_id.as_deref().unwrap_or_default())
        .collect();
    let kind: Vec<&str> = with_ref.iter().map(|(_, e)| e.kind.as_str()).collect();
    let txn: Vec<Uuid> = with_ref.iter().map(|(_, e)| e.txn_id).collect();
    let amount: Vec<Decimal> = with_ref.iter().map(|(_, e)| e.amount.value()).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO transaction_references (wallet_id, reference_type, reference_id, type, txn_id, amount) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::numeric[]) \
             ON CONFLICT DO NOTHING RETURNING txn_id",
        )
        .await?;
    let inserted = c.query(&stmt, &[&wallet, &rtype, &rid, &kind, &txn, &amount]).await?;
    if inserted.len() == with_ref.len() {
        return Ok(vec![]);
    }
    let stmt = c
        .prepare_cached(
            "SELECT r.reference_type, r.reference_id, r.type, r.txn_id FROM transaction_references r \
             JOIN unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS k(w, rt, ri, ty) \
               ON r.wallet_id = k.w AND r.reference_type = k.rt AND r.reference_id = k.ri AND r.type = k.ty",
        )
        .await?;
    let existing = c.query(&stmt, &[&wallet, &rtype, &rid, &kind]).await?;
    let mut dups = Vec::new();
    for (i, e) in &with_ref {
        let found = existing.iter().find(|r| {
            r.get::<_, &str>(0) == e.reference_type.as_deref().unwrap_or_default()
                && r.get::<_, &str>(1) == e.reference_id.as_deref().unwrap_or_default()
                && r.get::<_, &str>(2) == e.kind.as_str()
        });
        if let Some(r) = found {
            let txn: Uuid = r.get(3);
            if txn != e.txn_id {
                dups.push((*i, txn));
            }
        }
    }
    Ok(dups)
}

/// Records the replies of idempotent requests in the transaction of their effect.
async fn complete_idempotency<C: GenericClient>(
    c: &C,
    done: &[(&Origin, u16, String)],
) -> Result<(), tokio_postgres::Error> {
    let done: Vec<_> = done
        .iter()
        .filter_map(|(o, s, b)| o.idempotency.as_ref().map(|t| (t, *s as i16, b)))
        .collect();
    if done.is_empty() {
        return Ok(());
    }
    let caller: Vec<Uuid> = done.iter().map(|(t, _, _)| t.caller).collect();
    let endpoint: Vec<&str> = done.iter().map(|(t, _, _)| t.endpoint.as_str()).collect();
    let key: Vec<&str> = done.iter().map(|(t, _, _)| t.key.as_str()).collect();
    let status: Vec<i16> = done.iter().map(|(_, s, _)| *s).collect();
    let body: Vec<&str> = done.iter().map(|(_, _, b)| b.as_str()).collect();
    let stmt = c
        .prepare_cached(
            "UPDATE idempotency_keys k SET response_status = v.s, response_body = v.b \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int2[], $5::text[]) AS v(c, e, k, s, b) \
             WHERE k.caller = v.c AND k.endpoint = v.e AND k.key = v.k",
        )
        .await?;
    c.execute(&stmt, &[&caller, &endpoint, &key, &status, &body]).await?;
    Ok(())
}

/// Records consumed event ids (inbox) in the transaction of their effect.
async fn record_inbox<C: GenericClient>(
    c: &C,
    origins: &[(&Origin, &'static str)],
) -> Result<(), tokio_postgres::Error> {
    let ids: Vec<(Uuid, &str)> = origins
        .iter()
        .filter_map(|(o, a)| o.inbox_event_id.map(|id| (id, *a)))
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let id: Vec<Uuid> = ids.iter().map(|(i, _)| *i).collect();
    let et: Vec<&str> = ids.iter().map(|(_, a)| *a).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO processed_events (event_id, event_type) SELECT * FROM unnest($1::uuid[], $2::text[]) ON CONFLICT DO NOTHING",
        )
        .await?;
    c.execute(&stmt, &[&id, &et]).await?;
    Ok(())
}

fn to_json_body<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| {
        error!(error = %e, "serializing a reply failed");
        String::new()
    })
}

async fn rollback(tx: Transaction<'_>) {
    if let Err(e) = tx.rollback().await {
        warn!(error = %e, "rollback failed (the connection drops the transaction anyway)");
    }
}

/// Writes one wallet's batch inside the caller's transaction (or savepoint): the guarded wallet update,
/// its reference keys, rows, budget work, outbox events, idempotent replies, inbox rows and audit rows.
/// On any error the caller rolls back what this wrote. Statements that do not depend on each other are
/// pipelined (tokio-postgres sends them on the connection without waiting for each answer).
async fn write_batch<C: GenericClient + Sync>(tx: &C, batch: &Batch) -> Result<(), CommitError> {
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

#[async_trait]
impl WalletStore for PgStore {
    async fn load(&self, wallet_id: Uuid) -> Result<Option<WalletState>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {WALLET_COLUMNS} FROM wallets w JOIN users u USING (user_id) WHERE w.wallet_id = $1"
            ))
            .await
            .map_err(unavailable)?;
        // Both statements pipelined on the one connection: a cold wallet (the first booking of a user) costs
        // one round trip, not two. The budgets of a missing wallet are simply none.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&wallet_id];
        let (row, budgets) = tokio::join!(c.query_opt(&stmt, &params), crate::budgets::load_live(&c, wallet_id));
        let row = row.map_err(unavailable)?;
        let Some(mut wallet) = row.as_ref().map(wallet_from_row).transpose()? else {
            return Ok(None);
        };
        wallet.budgets = budgets.map_err(StoreError)?;
        self.cache.put(&wallet);
        Ok(Some(wallet))
    }

    async fn commit(&self, batch: &Batch) -> Result<(), CommitError> {
        self.committer.commit(batch.clone()).await
    }

    async fn transfer(&self, plan: &TransferPlan) -> Result<Entry, TransferError> {
        let fail = |e: tokio_postgres::Error| TransferError::Commit(commit_err(e));
        let mut c = self
            .pool
            .get()
            .await
            .map_err(|e| TransferError::Commit(commit_err(e)))?;
        let tx = c.transaction().await.map_err(fail)?;
        let (src, dst) = (plan.out.wallet_id, plan.incoming.wallet_id);
        // Lock both rows in wallet-id order: two opposite transfers can never wait on each other in a cycle.
        let stmt = tx
            .prepare_cached(
                "SELECT wallet_id, balance, currency, status, version FROM wallets WHERE wallet_id = ANY($1) ORDER BY wallet_id FOR UPDATE",
            )
            .await
            .map_err(fail)?;
        let rows = tx.query(&stmt, &[&vec![src, dst]]).await.map_err(fail)?;
        let find = |id: Uuid| rows.iter().find(|r| r.get::<_, Uuid>(0) == id);
        let refuse = |r: Rejection| Err::<Entry, _>(TransferError::Rejected(r));
        let outcome = async {
            let Some(s) = find(src) else {
                return Err(TransferError::Commit(CommitError::VersionConflict));
            };
            if s.get::<_, i64>(4) != plan.expected_version {
                return Err(TransferError::Commit(CommitError::VersionConflict));
            }
            let Some(d) = find(dst) else {
                return refuse(Rejection::WalletNotFound);
            };
            let d_status: WalletStatus = d
                .get::<_, &str>(3)
                .parse()
                .map_err(|e: String| TransferError::Commit(commit_err(e)))?;
            if d_status != WalletStatus::Active {
                return refuse(Rejection::WalletNotActive {
                    wallet_id: dst,
                    status: d_status,
                });
            }
            let d_currency: Currency = d
                .get::<_, &str>(2)
                .parse()
                .map_err(|e: String| TransferError::Commit(commit_err(e)))?;
            if d_currency != plan.source_after.currency {
                return refuse(Rejection::CurrencyMismatch {
                    from: plan.source_after.currency,
                    to: d_currency,
                });
            }
            let d_balance = Amount::new(d.get::<_, Decimal>(1)).map_err(|e| TransferError::Commit(commit_err(e)))?;
            let Some(d_after) = d_balance.checked_add(plan.incoming.amount) else {
                return refuse(Rejection::BalanceOverflow);
            };
            let mut incoming = plan.incoming.clone();
            incoming.balance_after = d_after;
            Ok(incoming)
        }
        .await;
        let incoming = match outcome {
            Ok(i) => i,
            Err(e) => {
                rollback(tx).await;
                if let TransferError::Rejected(r) = &e {
                    let row = AuditRow::from_origin(
                        &plan.out.origin,
                        "wallet.transfer",
                        "wallet",
                        src.to_string(),
                        r.code(),
                        json!({"to_wallet_id": dst, "amount": plan.out.amount.to_string(), "detail": r.to_string()}),
                    );
                    if let Ok(c) = self.pool.get().await
                        && let Err(err) = insert_audit(&c, &[row]).await
                    {
                        warn!(error = %err, "audit of a refused transfer failed");
                    }
                }
                return Err(e);
            }
        };
        let legs = [&plan.out, &incoming];
        let dups = claim_references(&tx, &legs).await.map_err(fail)?;
        if !dups.is_empty() {
            rollback(tx).await;
            return Err(TransferError::Commit(CommitError::DuplicateReferences(dups)));
        }
        let stmt = tx
            .prepare_cached(
                "UPDATE wallets SET balance = $2, version = version + 1, updated_at = $3 WHERE wallet_id = $1",
            )
            .await
            .map_err(fail)?;
        let now = plan.source_after.updated_at;
        tx.execute(&stmt, &[&src, &plan.source_after.balance.value(), &now])
            .await
            .map_err(fail)?;
        tx.execute(&stmt, &[&dst, &incoming.balance_after.value(), &now])
            .await
            .map_err(fail)?;
        insert_entries(&tx, &legs).await.map_err(fail)?;
        let events = [
            OutboxEvent::transaction_completed(&plan.out),
            OutboxEvent::transaction_completed(&incoming),
        ];
        insert_outbox(&tx, &events).await.map_err(fail)?;
        let body = to_json_body(&TransferView::new(&plan.out, &incoming));
        complete_idempotency(&tx, &[(&plan.out.origin, 201, body)])
            .await
            .map_err(fail)?;
        let audit = [AuditRow::from_origin(
            &plan.out.origin,
            "wallet.transfer",
            "wallet",
            src.to_string(),
            "APPLIED",
            json!({"to_wallet_id": dst, "amount": plan.out.amount.to_string(), "out_txn_id": plan.out.txn_id, "in_txn_id": incoming.txn_id}),
        )];
        insert_audit(&tx, &audit).await.map_err(fail)?;
        tx.commit().await.map_err(|e| {
            TransferError::Commit(CommitError::Unavailable {
                reason: format!("commit failed: {e}"),
                outcome_unknown: true,
            })
        })?;
        self.outbox_written.notify_one();
        self.cache.put(&plan.source_after);
        // The destination's full row is not at hand here; drop it so the next read goes to Postgres.
        self.cache.invalidate(dst);
        Ok(incoming)
    }
}

/// Why a wallet was not created.
#[derive(Debug)]
pub enum CreateWalletError {
    UserNotFound,
    Exists(Uuid),
    Store(StoreError),
}

/// A user as stored (email still encrypted).
pub struct UserRow {
    pub user_id: Uuid,
    pub email_encrypted: Vec<u8>,
    pub company_id: Uuid,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Filters of the history query, already validated.
#[derive(Debug, Default, Clone)]
pub struct HistoryFilter {
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub until: Option<DateTime<Utc>>,
    pub kind: Option<TxnType>,
    pub status: Option<String>,
    pub page: u32,
    pub limit: u32,
}

/// An Idempotency-Key claim's outcome.
pub enum Claim {
    /// Ours to run.
    Claimed,
    /// Finished before: replay this.
    Replay { status: u16, body: String },
    /// Another request with this key is running.
    InProgress,
    /// The key was used with another request.
    Mismatch,
}

/// How long a claim protects a running request before another may take it over (a crashed process's
/// claim must not block the key forever). Longer than any request can take.
pub const IDEMPOTENCY_LEASE_SECS: i64 = 120;

impl PgStore {
    pub async fn upsert_user(
        &self,
        user_id: Uuid,
        email_encrypted: &[u8],
        email_hash: &[u8],
        company_id: Uuid,
        role: &str,
        audit: AuditRow,
    ) -> Result<UserRow, StoreError> {
        let mut c = self.pool.get().await.map_err(unavailable)?;
        let tx = c.transaction().await.map_err(unavailable)?;
        let row = tx
            .query_one(
                "INSERT INTO users (user_id, email_encrypted, email_hash, company_id, role) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (user_id) DO UPDATE SET email_encrypted = EXCLUDED.email_encrypted, email_hash = EXCLUDED.email_hash, \
                     company_id = EXCLUDED.company_id, role = EXCLUDED.role, updated_at = CURRENT_TIMESTAMP \
                 RETURNING user_id, email_encrypted, company_id, role, created_at, updated_at",
                &[&user_id, &email_encrypted, &email_hash, &company_id, &role],
            )
            .await
            .map_err(unavailable)?;
        insert_audit(&tx, &[audit]).await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(user_from_row(&row))
    }

    pub async fn get_user(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let row = c
            .query_opt("SELECT user_id, email_encrypted, company_id, role, created_at, updated_at FROM users WHERE user_id = $1", &[&user_id])
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(user_from_row))
    }

    /// Creates a wallet, its `WalletCreated` outbox row, its audit row and (if any) its idempotent reply,
    /// in one transaction.
    pub async fn create_wallet(
        &self,
        user_id: Uuid,
        initial: Amount,
        currency: Currency,
        origin: &Origin,
    ) -> Result<WalletState, CreateWalletError> {
        let st = |e: tokio_postgres::Error| CreateWalletError::Store(unavailable(e));
        let mut c = self
            .pool
            .get()
            .await
            .map_err(|e| CreateWalletError::Store(unavailable(e)))?;
        let tx = c.transaction().await.map_err(st)?;
        let Some(user) = tx
            .query_opt("SELECT company_id FROM users WHERE user_id = $1 FOR SHARE", &[&user_id])
            .await
            .map_err(st)?
        else {
            return Err(CreateWalletError::UserNotFound);
        };
        let company_id: Uuid = user.get(0);
        let wallet_id = Uuid::now_v7();
        let row = tx
            .query_opt(
                "INSERT INTO wallets (wallet_id, user_id, balance, initial_balance, currency) VALUES ($1, $2, $3, $3, $4) \
                 ON CONFLICT (user_id) DO NOTHING \
                 RETURNING wallet_id, user_id, $5::uuid AS company_id, balance, currency, status, version, created_at, updated_at",
                &[&wallet_id, &user_id, &initial.value(), &currency.as_str(), &company_id],
            )
            .await
            .map_err(st)?;
        let Some(row) = row else {
            let existing = tx
                .query_one("SELECT wallet_id FROM wallets WHERE user_id = $1", &[&user_id])
                .await
                .map_err(st)?;
            return Err(CreateWalletError::Exists(existing.get(0)));
        };
        let wallet = wallet_from_row(&row).map_err(CreateWalletError::Store)?;
        #[derive(serde::Serialize)]
        struct Created {
            wallet_id: Uuid,
            user_id: Uuid,
            initial_balance: String,
            currency: &'static str,
        }
        let event = OutboxEvent::new(
            "WalletCreated",
            "wallet.created",
            wallet_id,
            Created {
                wallet_id,
                user_id,
                initial_balance: initial.to_string(),
                currency: currency.as_str(),
            },
        );
        insert_outbox(&tx, &[event]).await.map_err(st)?;
        complete_idempotency(&tx, &[(origin, 201, to_json_body(&WalletView::from(&wallet)))])
            .await
            .map_err(st)?;
        let audit = AuditRow::from_origin(
            origin,
            "wallet.create",
            "wallet",
            wallet_id.to_string(),
            "APPLIED",
            json!({"user_id": user_id, "initial_balance": initial.to_string(), "currency": currency.as_str()}),
        );
        insert_audit(&tx, &[audit]).await.map_err(st)?;
        tx.commit().await.map_err(st)?;
        self.outbox_written.notify_one();
        Ok(wallet)
    }

    pub async fn wallet_id_of_user(&self, user_id: Uuid) -> Result<Option<Uuid>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let stmt = c
            .prepare_cached("SELECT wallet_id FROM wallets WHERE user_id = $1")
            .await
            .map_err(unavailable)?;
        Ok(c.query_opt(&stmt, &[&user_id])
            .await
            .map_err(unavailable)?
            .map(|r| r.get(0)))
    }

    /// One page of a wallet's history, newest first, and the total matching.
    pub async fn history(
        &self,
        wallet_id: Uuid,
        f: &HistoryFilter,
    ) -> Result<(Vec<crate::views::HistoryItem>, i64), StoreError> {
        let c = self.read.get().await.map_err(unavailable)?;
        let kind = f.kind.map(|k| k.as_str());
        let offset = i64::from(f.page.saturating_sub(1)) * i64::from(f.limit);
        let limit = i64::from(f.limit);
        let filter = "wallet_id = $1 AND ($2::timestamptz IS NULL OR created_at >= $2) AND ($3::timestamptz IS NULL OR created_at < $3) \
                      AND ($4::text IS NULL OR type = $4) AND ($5::text IS NULL OR status = $5)";
        let rows = c
            .query(
                &format!(
                    "SELECT txn_id, amount, type, description, reference_id, reference_type, status, balance_after, created_at \
                     FROM transactions WHERE {filter} ORDER BY created_at DESC, txn_id DESC LIMIT $6 OFFSET $7"
                ),
                &[&wallet_id, &f.from, &f.until, &kind, &f.status, &limit, &offset],
            )
            .await
            .map_err(unavailable)?;
        let total: i64 = c
            .query_one(
                &format!("SELECT count(*) FROM transactions WHERE {filter}"),
                &[&wallet_id, &f.from, &f.until, &kind, &f.status],
            )
            .await
            .map_err(unavailable)?
            .get(0);
        let items = rows
            .iter()
            .map(|r| crate::views::HistoryItem {
                txn_id: r.get(0),
                amount: fmt_amount(r.get(1)),
                r#type: r.get(2),
                description: r.get(3),
                reference_id: r.get(4),
                reference_type: r.get(5),
                status: r.get(6),
                balance_after: fmt_amount(r.get(7)),
                created_at: crate::views::ts(r.get(8)),
            })
            .collect();
        Ok((items, total))
    }

    /// Claims an Idempotency-Key for a request, or says what happened to it before.
    pub async fn claim_idempotency(
        &self,
        caller: Uuid,
        endpoint: &str,
        key: &str,
        hash: &[u8],
    ) -> Result<Claim, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let claimed = c
            .query_opt(
                "INSERT INTO idempotency_keys (caller, endpoint, key, request_hash, locked_until) \
                 VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) \
                 ON CONFLICT (caller, endpoint, key) DO UPDATE \
                   SET request_hash = EXCLUDED.request_hash, locked_until = EXCLUDED.locked_until, created_at = now() \
                   WHERE idempotency_keys.response_status IS NULL AND idempotency_keys.locked_until < now() \
                 RETURNING 1",
                &[&caller, &endpoint, &key, &hash, &(IDEMPOTENCY_LEASE_SECS as f64)],
            )
            .await
            .map_err(unavailable)?;
        if claimed.is_some() {
            return Ok(Claim::Claimed);
        }
        let row = c
            .query_opt(
                "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE caller = $1 AND endpoint = $2 AND key = $3",
                &[&caller, &endpoint, &key],
            )
            .await
            .map_err(unavailable)?;
        let Some(row) = row else {
            // Released between our insert and select: the caller may simply try again.
            return Ok(Claim::InProgress);
        };
        let stored: Vec<u8> = row.get(0);
        if stored != hash {
            return Ok(Claim::Mismatch);
        }
        match (row.get::<_, Option<i16>>(1), row.get::<_, Option<String>>(2)) {
            (Some(status), Some(body)) => Ok(Claim::Replay {
                status: status as u16,
                body,
            }),
            _ => Ok(Claim::InProgress),
        }
    }

    /// Records a reply that no effect's transaction recorded (a refusal, which moves nothing).
    pub async fn complete_idempotency(
        &self,
        caller: Uuid,
        endpoint: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        c.execute(
            "UPDATE idempotency_keys SET response_status = $4, response_body = $5 WHERE caller = $1 AND endpoint = $2 AND key = $3 AND response_status IS NULL",
            &[&caller, &endpoint, &key, &(status as i16), &body],
        )
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    /// Gives a key back after a failure that did not commit, so a retry can run.
    pub async fn release_idempotency(&self, caller: Uuid, endpoint: &str, key: &str) -> Result<(), StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        c.execute(
            "DELETE FROM idempotency_keys WHERE caller = $1 AND endpoint = $2 AND key = $3 AND response_status IS NULL",
            &[&caller, &endpoint, &key],
        )
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    pub async fn audit(&self, row: AuditRow) -> Result<(), StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        insert_audit(&c, &[row]).await.map_err(unavailable)
    }
}

fn user_from_row(row: &tokio_postgres::Row) -> UserRow {
    UserRow {
        user_id: row.get(0),
        email_encrypted: row.get(1),
        company_id: row.get(2),
        role: row.get(3),
        created_at: row.get(4),
        updated_at: row.get(5),
    }
}

fn fmt_amount(d: Decimal) -> String {
    let mut d = d;
    d.rescale(2);
    d.to_string()
}

/// Midnight UTC of a date (for `start_date`/`end_date` given as dates).
pub fn day_start(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// Most history rows returned for one budget (newest first).
pub const MAX_BUDGET_HISTORY_ROWS: i64 = 1000;

impl PgStore {
    pub async fn wallet_of_budget(&self, budget_id: Uuid) -> Result<Option<Uuid>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let row = c
            .query_opt("SELECT wallet_id FROM budgets WHERE budget_id = $1", &[&budget_id])
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn budget_history(&self, budget_id: Uuid) -> Result<Vec<crate::budgets::HistoryView>, StoreError> {
        let c = self.read.get().await.map_err(unavailable)?;
        let rows = c
            .query(
                "SELECT history_id, budget_id, old_amount, new_amount, change_reason, changed_by, created_at \
                 FROM budget_history WHERE budget_id = $1 ORDER BY created_at DESC, history_id DESC LIMIT $2",
                &[&budget_id, &MAX_BUDGET_HISTORY_ROWS],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| crate::budgets::HistoryView {
                history_id: r.get(0),
                budget_id: r.get(1),
                old_amount: r.get::<_, Option<Decimal>>(2).map(fmt_amount),
                new_amount: fmt_amount(r.get(3)),
                change_reason: r.get(4),
                changed_by: r.get(5),
                created_at: crate::views::ts(r.get(6)),
            })
            .collect())
    }
}
