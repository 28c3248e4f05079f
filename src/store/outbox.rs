//! The outbox relay's SQL: an exclusive pass (one relay per database, by advisory lock, in `seq` order),
//! the published mark, and pruning of published rows.
//!
//! A row carries one event (rows from before `sql/V13`, or from an instance of the previous release during
//! a rolling deploy) or a commit's events as a JSON array (what the service writes now); a pass expands
//! both into [`OutboxMessage`]s in publish order and marks a row published only when all of its events were.

use std::time::Duration;

use deadpool_postgres::Object;
use uuid::Uuid;
use wallet_actors::StoreError;

use super::{Pool, col, unavailable};

/// Events claimed (and published) per pass: rows are claimed in `seq` order while the events before them
/// number fewer than this (so a pass holds at least one row, and at most one row's events beyond it).
pub const RELAY_BATCH: i64 = 500;
/// Rows looked at per pass (every row carries at least one event).
const RELAY_ROWS: i64 = RELAY_BATCH;
/// Rows deleted per prune statement (a prune loops until none are left).
pub const PRUNE_BATCH: i64 = 10_000;
/// Advisory lock key of the relay (per database): "WALOUT".
pub const RELAY_LOCK_KEY: i64 = 0x5741_4c4f_5554;

/// One event of a claimed outbox row, in publish order.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    /// The row that carries it (marked published when all of its events are).
    pub seq: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub routing_key: String,
    /// The JSON body as written (published byte for byte).
    pub payload: String,
}

/// An element of a row's `events` array (`sql/V13`).
#[derive(serde::Deserialize)]
struct ArrayElement<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    event_type: String,
    key: String,
    #[serde(borrow)]
    body: &'a serde_json::value::RawValue,
}

/// A row's events: its one event, or its array's (in order). A malformed array is reported, not skipped:
/// the column is `json` and the service writes it, so this would be a programmer error, and the relay
/// stops at it rather than publish past it.
fn expand(r: &tokio_postgres::Row, out: &mut Vec<OutboxMessage>) -> Result<(), StoreError> {
    let seq: i64 = col(r, "seq")?;
    let Some(events) = col::<Option<String>>(r, "events")? else {
        out.push(OutboxMessage {
            seq,
            event_id: col(r, "event_id")?,
            event_type: col(r, "event_type")?,
            routing_key: col(r, "routing_key")?,
            payload: col(r, "payload")?,
        });
        return Ok(());
    };
    let elements: Vec<ArrayElement<'_>> = serde_json::from_str(&events)
        .map_err(|e| StoreError::Other(format!("outbox row {seq}: events are not an array of events: {e}")))?;
    out.extend(elements.into_iter().map(|e| OutboxMessage {
        seq,
        event_id: e.id,
        event_type: e.event_type,
        routing_key: e.key,
        payload: e.body.get().to_string(),
    }));
    Ok(())
}

/// The seqs of the rows all of whose events are among the first `confirmed` of `messages` (a row whose
/// events were confirmed in part stays unpublished and is sent again whole).
pub fn fully_published(messages: &[OutboxMessage], confirmed: usize) -> Vec<i64> {
    assert!(confirmed <= messages.len(), "confirmed a prefix of what was published");
    let cut_row = messages.get(confirmed).map(|m| m.seq);
    let mut seqs: Vec<i64> = messages[..confirmed]
        .iter()
        .map(|m| m.seq)
        .filter(|s| Some(*s) != cut_row)
        .collect();
    seqs.dedup();
    seqs
}

/// A relay pass: the relay lock, held in a transaction on a connection of its own until [`OutboxPass::finish`],
/// and the unpublished rows it claimed. Dropped unfinished (a publish that panicked), its connection is
/// closed rather than returned to the pool mid-transaction: the transaction ends, the lock with it, and
/// the rows are sent again by the next pass (at-least-once).
pub struct OutboxPass {
    client: Option<Object>,
    pub messages: Vec<OutboxMessage>,
}

/// Starts a pass: `None` when another relay holds the lock (it keeps the order).
pub async fn begin_pass(pool: &Pool) -> Result<Option<OutboxPass>, StoreError> {
    let c = pool.get().await.map_err(unavailable)?;
    let mut pass = OutboxPass {
        client: Some(c),
        messages: vec![],
    };
    let c = pass
        .client
        .as_ref()
        .ok_or_else(|| StoreError::Other("no connection".into()))?;
    c.batch_execute("BEGIN").await.map_err(unavailable)?;
    // The published mark need not wait for its WAL flush: if a crash loses it, the rows are sent again,
    // which at-least-once delivery allows (consumers dedup by message_id). It saves a flush per pass that
    // would queue with the money commits' flushes.
    let locked: bool = c
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1) AS locked, set_config('synchronous_commit', 'off', true)",
            &[&RELAY_LOCK_KEY],
        )
        .await
        .map_err(unavailable)
        .and_then(|r| col(&r, "locked"))?;
    if !locked {
        pass.finish(&[]).await?;
        return Ok(None);
    }
    // Rows in `seq` order while the events of the rows before them are fewer than RELAY_BATCH.
    let stmt = c
        .prepare_cached(
            "SELECT seq, event_id, event_type, routing_key, payload::text AS payload, events::text AS events \
               FROM (SELECT u.*, sum(event_count) OVER (ORDER BY seq) - event_count AS before \
                       FROM (SELECT seq, event_id, event_type, routing_key, payload, events, event_count \
                               FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1) u) w \
              WHERE before < $2 ORDER BY seq",
        )
        .await
        .map_err(unavailable)?;
    let rows = c
        .query(&stmt, &[&RELAY_ROWS, &RELAY_BATCH])
        .await
        .map_err(unavailable)?;
    for r in &rows {
        expand(r, &mut pass.messages)?;
    }
    Ok(Some(pass))
}

impl OutboxPass {
    /// Marks the rows the broker confirmed as published and ends the pass (releasing the lock).
    pub async fn finish(mut self, published: &[i64]) -> Result<(), StoreError> {
        let c = self
            .client
            .take()
            .ok_or_else(|| StoreError::Other("pass already finished".into()))?;
        if !published.is_empty() {
            let stmt = c
                .prepare_cached("UPDATE outbox SET published_at = now() WHERE seq = ANY($1)")
                .await
                .map_err(unavailable)?;
            c.execute(&stmt, &[&published]).await.map_err(unavailable)?;
        }
        c.batch_execute("COMMIT").await.map_err(unavailable)
    }
}

impl Drop for OutboxPass {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            drop(Object::take(c));
        }
    }
}

/// Deletes rows published more than `retention` ago; returns how many.
pub async fn prune(pool: &Pool, retention: Duration) -> Result<u64, StoreError> {
    let c = pool.get().await.map_err(unavailable)?;
    let secs = retention.as_secs_f64();
    let mut total = 0;
    loop {
        // Oldest first by `seq` (the primary key), which is also the order rows age in.
        let n = c
            .execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE published_at IS NOT NULL \
                 AND published_at < now() - make_interval(secs => $1) ORDER BY seq LIMIT $2)",
                &[&secs, &PRUNE_BATCH],
            )
            .await
            .map_err(unavailable)?;
        total += n;
        if (n as i64) < PRUNE_BATCH {
            return Ok(total);
        }
    }
}
