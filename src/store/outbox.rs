//! The outbox relay's SQL: an exclusive pass (one relay per database, by advisory lock, in `seq` order),
//! the published mark, and pruning of published rows.

use std::time::Duration;

use deadpool_postgres::Object;
use uuid::Uuid;
use wallet_actors::StoreError;

use super::{Pool, col, unavailable};

/// Rows claimed (and published) per pass.
pub const RELAY_BATCH: i64 = 500;
/// Rows deleted per prune statement (a prune loops until none are left).
pub const PRUNE_BATCH: i64 = 10_000;
/// Advisory lock key of the relay (per database): "WALOUT".
pub const RELAY_LOCK_KEY: i64 = 0x5741_4c4f_5554;

/// One claimed outbox row.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub routing_key: String,
    /// The JSON body as written (published byte for byte).
    pub payload: String,
}

/// A relay pass: the relay lock, held in a transaction on a connection of its own until [`OutboxPass::finish`],
/// and the unpublished rows it claimed. Dropped unfinished (a publish that panicked), its connection is
/// closed rather than returned to the pool mid-transaction: the transaction ends, the lock with it, and
/// the rows are sent again by the next pass (at-least-once).
pub struct OutboxPass {
    client: Option<Object>,
    pub rows: Vec<OutboxRow>,
}

/// Starts a pass: `None` when another relay holds the lock (it keeps the order).
pub async fn begin_pass(pool: &Pool) -> Result<Option<OutboxPass>, StoreError> {
    let c = pool.get().await.map_err(unavailable)?;
    let mut pass = OutboxPass {
        client: Some(c),
        rows: vec![],
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
    let stmt = c
        .prepare_cached(
            "SELECT seq, event_id, event_type, routing_key, payload::text AS payload FROM outbox \
             WHERE published_at IS NULL ORDER BY seq LIMIT $1",
        )
        .await
        .map_err(unavailable)?;
    let rows = c.query(&stmt, &[&RELAY_BATCH]).await.map_err(unavailable)?;
    pass.rows = rows
        .iter()
        .map(|r| {
            Ok(OutboxRow {
                seq: col(r, "seq")?,
                event_id: col(r, "event_id")?,
                event_type: col(r, "event_type")?,
                routing_key: col(r, "routing_key")?,
                payload: col(r, "payload")?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
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
