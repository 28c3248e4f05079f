//! Postgres: pools (primary and read), migrations under an advisory lock, partition upkeep, readiness.

use std::time::Duration;

use deadpool_postgres::{ManagerConfig, Pool, PoolConfig, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tracing::info;
use wallet_actors::StoreError;

use crate::store::unavailable;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// Advisory lock key held while migrating, so several instances starting at once migrate once.
const MIGRATION_LOCK_KEY: i64 = 0x5741_4c4c_4554; // "WALLET"
/// How long a pool waits for a free connection before the request fails as unavailable.
pub const POOL_WAIT: Duration = Duration::from_secs(5);
/// Months of transaction partitions kept created ahead of now.
pub const PARTITION_MONTHS_AHEAD: i32 = 3;
/// How often partitions are checked.
pub const PARTITION_UPKEEP_EVERY: Duration = Duration::from_secs(6 * 3600);
/// Readiness probe's budget for `SELECT 1`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds a pool of at most `size` connections.
pub fn pool(url: &str, size: usize) -> Result<Pool, String> {
    let mut cfg = deadpool_postgres::Config::new();
    cfg.url = Some(url.to_string());
    cfg.manager = Some(ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    });
    let mut pc = PoolConfig::new(size);
    pc.timeouts.wait = Some(POOL_WAIT);
    pc.timeouts.create = Some(POOL_WAIT);
    cfg.pool = Some(pc);
    cfg.create_pool(Some(Runtime::Tokio1), NoTls)
        .map_err(|e| format!("invalid database configuration: {e}"))
}

/// Applies `sql/` migrations, holding an advisory lock so that concurrent starts do it once.
pub async fn migrate(url: &str) -> Result<(), String> {
    let (mut client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("connect for migrations: {e}"))?;
    let conn_task = tokio::spawn(conn);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(|e| format!("migration lock: {e}"))?;
    let result = embedded::migrations::runner().run_async(&mut client).await;
    // The lock is the session's: it also ends when this connection closes just below.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    drop(client);
    conn_task.abort();
    let report = result.map_err(|e| format!("migrations failed: {e}"))?;
    for m in report.applied_migrations() {
        info!(migration = %m.name(), version = m.version(), "migration applied");
    }
    Ok(())
}

/// Creates missing monthly partitions of `transactions` around now.
pub async fn ensure_partitions(pool: &Pool) -> Result<i32, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ensure_transaction_partitions(1, $1)",
            &[&PARTITION_MONTHS_AHEAD],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

/// How long Idempotency-Keys are kept (the contract promises at least 24 hours).
pub const IDEMPOTENCY_RETENTION_HOURS: i32 = 48;
/// Most keys deleted per statement, so pruning never holds long locks.
pub const PRUNE_BATCH: i64 = 10_000;

/// Deletes idempotency keys older than the retention, in bounded batches.
pub async fn prune_idempotency_keys(pool: &Pool) -> Result<u64, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let mut total = 0;
    loop {
        let n = client
            .execute(
                "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys                  WHERE created_at < now() - make_interval(hours => $1) LIMIT $2)",
                &[&IDEMPOTENCY_RETENTION_HOURS, &PRUNE_BATCH],
            )
            .await
            .map_err(|e| e.to_string())?;
        total += n;
        if (n as i64) < PRUNE_BATCH {
            return Ok(total);
        }
    }
}

/// How long consumed event ids are kept in the inbox. A redelivery older than this (the broker keeps
/// unacked messages, and publishers retry for minutes, not weeks) would not be recognised; bookings stay
/// protected by their unique reference regardless.
pub const INBOX_RETENTION_DAYS: i32 = 14;

/// Deletes inbox rows older than [`INBOX_RETENTION_DAYS`], in bounded batches.
pub async fn prune_inbox(pool: &Pool) -> Result<u64, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let mut total = 0;
    loop {
        let n = client
            .execute(
                "DELETE FROM processed_events WHERE event_id IN (SELECT event_id FROM processed_events \
                 WHERE processed_at < now() - make_interval(days => $1) LIMIT $2)",
                &[&INBOX_RETENTION_DAYS, &PRUNE_BATCH],
            )
            .await
            .map_err(|e| e.to_string())?;
        total += n;
        if (n as i64) < PRUNE_BATCH {
            return Ok(total);
        }
    }
}

/// Whether Postgres answers now (readiness).
pub async fn ping(pool: &Pool) -> Result<(), StoreError> {
    let check = async {
        let client = pool.get().await.map_err(unavailable)?;
        client.simple_query("SELECT 1").await.map_err(unavailable)?;
        Ok::<(), StoreError>(())
    };
    tokio::time::timeout(READY_TIMEOUT, check).await.map_err(unavailable)?
}

/// The version of the newest migration built into this binary (`sql/`).
pub fn newest_migration() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// Whether the database's migration history holds the newest migration of this binary (readiness).
/// No history table at all is `false`.
pub async fn migrations_applied(pool: &Pool) -> Result<bool, StoreError> {
    let newest = newest_migration();
    let check = async {
        let client = pool.get().await.map_err(unavailable)?;
        let found = client
            .query_opt(
                "SELECT 1 FROM refinery_schema_history WHERE version::bigint = $1",
                &[&newest],
            )
            .await;
        match found {
            Ok(row) => Ok(row.is_some()),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    };
    tokio::time::timeout(READY_TIMEOUT, check).await.map_err(unavailable)?
}
