//! Postgres: pools (primary and read, each behind its circuit breaker: [`super::pool`]; the session settings
//! and lifetime of their connections), migrations under an advisory lock, partition upkeep, readiness.

use std::time::{Duration, Instant};

use deadpool_postgres::{Hook, HookError, ManagerConfig, PoolConfig, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tracing::{info, warn};
use wallet_actors::StoreError;

use super::{Pool, col, unavailable};
use crate::resilience::{Breaker, BreakerPolicy, backoff};

/// Why a pool could not be built or the migrations not applied (at start; the process stops). The text
/// names the host and port, never a password.
#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(tokio_postgres::Error),
    #[error("invalid database configuration: {0}")]
    InvalidPool(deadpool_postgres::BuildError),
    /// `cause` is the error's chain of sources (see [`causes`]).
    #[error("cannot connect to Postgres at {target} for migrations: {cause}")]
    Connect { target: String, cause: String },
    #[error("migration lock: {0}")]
    Lock(tokio_postgres::Error),
    #[error("migrations failed: {0}")]
    Migrations(refinery::Error),
}

mod embedded {
    refinery::embed_migrations!("sql");
}

/// Advisory lock key held while migrating, so several instances starting at once migrate once.
const MIGRATION_LOCK_KEY: i64 = 0x5741_4c4c_4554; // "WALLET"
/// How long a pool waits for a free connection (or a new one) before the request fails as unavailable.
pub const POOL_WAIT: Duration = Duration::from_secs(2);
/// How often Postgres checks, while it runs a statement of ours, that our connection is still there.
/// A statement of a process that died (kill -9) or exited is then cancelled (rolled back) within about
/// this long, instead of committing whenever the lock it waits for is released.
pub const CLIENT_CONNECTION_CHECK: Duration = Duration::from_secs(1);
/// TCP keepalive idle time of the service's connections (a half-open connection is noticed).
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Months of transaction partitions kept created ahead of now.
pub const PARTITION_MONTHS_AHEAD: i32 = 3;
/// How often partitions are checked.
pub const PARTITION_UPKEEP_EVERY: Duration = Duration::from_secs(6 * 3600);
/// Readiness probe's budget for `SELECT 1`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The server-side bounds of every statement on a pool's connections, and how long a connection lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementBounds {
    /// Postgres `statement_timeout`.
    pub db_statement: Duration,
    /// Postgres `lock_timeout`.
    pub db_lock: Duration,
    /// A connection this old is closed instead of reused (see [`CONNECTION_MAX_AGE`]).
    pub connection_max_age: Duration,
}

impl Default for StatementBounds {
    fn default() -> Self {
        StatementBounds {
            db_statement: DEFAULT_DB_STATEMENT_TIMEOUT,
            db_lock: DEFAULT_DB_LOCK_TIMEOUT,
            connection_max_age: CONNECTION_MAX_AGE,
        }
    }
}

/// A pooled connection is closed when it is taken from the pool past this age (less its spread, below),
/// and a new one is opened. Why: Postgres caches a generic plan of each prepared statement per session,
/// and without an ANALYZE of the table (autovacuum off, or a table that grows slower than its threshold)
/// nothing makes it plan again — a plan made while a table was small went on scanning it whole as it grew
/// (docs/BENCHMARKS.md, "A stale generic plan"). The hot statements are written so that no plan of them
/// can do that; this bounds how long any other plan, and a backend's caches, can last.
pub const CONNECTION_MAX_AGE: Duration = Duration::from_secs(30 * 60);
/// A pool's connections are mostly opened together (at start, in a surge). Each one's age limit is lowered
/// by its own share of up to 1/`CONNECTION_AGE_SPREAD` of the limit, so they are not replaced all at once.
pub const CONNECTION_AGE_SPREAD: u32 = 8;

/// The age at which the connection opened at `created` is replaced: `max_age` less a share of
/// `max_age / CONNECTION_AGE_SPREAD` drawn from the nanoseconds it was opened at (since `epoch`), which
/// differ between connections.
fn connection_age_limit(max_age: Duration, created: Instant, epoch: Instant) -> Duration {
    let seed = created.saturating_duration_since(epoch).as_nanos() as u64;
    let share = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54; // 0..1024
    let spread = max_age / CONNECTION_AGE_SPREAD;
    max_age.saturating_sub(spread * share as u32 / 1024)
}

/// Default `statement_timeout`: a money statement Postgres has not finished by then is cancelled by the
/// server itself (rolled back), whatever became of the client.
pub const DEFAULT_DB_STATEMENT_TIMEOUT: Duration = Duration::from_millis(4_000);
/// Default `lock_timeout`: a statement waiting this long on a row lock (someone holding a wallet row) gives
/// up, rolled back, so a stalled lock turns into a clean 503 instead of a late commit.
pub const DEFAULT_DB_LOCK_TIMEOUT: Duration = Duration::from_millis(2_000);

/// Builds a pool of at most `size` connections behind a breaker labelled `dependency` (see
/// [`super::pool`]). Every connection runs with the statement and lock timeouts and the client-connection
/// check, so no statement of ours outlives its bounds on the server.
pub fn pool(
    url: &str,
    size: usize,
    timeouts: &StatementBounds,
    dependency: &'static str,
) -> Result<Pool, DbSetupError> {
    let mut pg: tokio_postgres::Config = url.parse().map_err(DbSetupError::InvalidUrl)?;
    let inherited = pg.get_options().map(|o| format!("{o} ")).unwrap_or_default();
    // `jit=off`: Postgres compiles a statement with LLVM when its estimated cost passes `jit_above_cost`,
    // which the spend fold's statement and the reports' queries over the ledger do. For the fold that
    // compilation was most of the cost: 4 passes spent 5.2 s compiling and 0.8 s executing
    // (`pg_stat_statements`; docs/BENCHMARKS.md, "JIT: the spend fold was mostly LLVM"). Nothing the service runs is long enough to
    // earn it back. It comes before the URL's own options, so an operator can turn it on again there; the
    // bounds come after them, so none can be loosened by accident.
    pg.options(format!(
        "-c jit=off {inherited}-c statement_timeout={} -c lock_timeout={} -c client_connection_check_interval={}",
        timeouts.db_statement.as_millis(),
        timeouts.db_lock.as_millis(),
        CLIENT_CONNECTION_CHECK.as_millis()
    ));
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(POOL_WAIT);
    }
    pg.keepalives(true).keepalives_idle(TCP_KEEPALIVE_IDLE);
    let manager = deadpool_postgres::Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let (max_age, epoch) = (timeouts.connection_max_age, Instant::now());
    deadpool_postgres::Pool::builder(manager)
        .pre_recycle(Hook::sync_fn(move |_, metrics| {
            if metrics.age() >= connection_age_limit(max_age, metrics.created, epoch) {
                return Err(HookError::message("connection past its age limit"));
            }
            Ok(())
        }))
        .config(PoolConfig {
            max_size: size,
            timeouts: deadpool_postgres::Timeouts {
                wait: Some(POOL_WAIT),
                create: Some(POOL_WAIT),
                recycle: Some(POOL_WAIT),
            },
            ..PoolConfig::new(size)
        })
        .runtime(Runtime::Tokio1)
        .build()
        .map(|inner| Pool::new(inner, Breaker::new(dependency, BreakerPolicy::default())))
        .map_err(DbSetupError::InvalidPool)
}

/// Connection attempts of the migrations at start (an instance may start while Postgres is still coming
/// up) before the process gives up; waits between them follow [`backoff`].
pub const MIGRATION_CONNECT_TRIES: u32 = 5;
/// First wait between the migrations' connection attempts.
pub const MIGRATION_CONNECT_BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest wait between them.
pub const MIGRATION_CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Connects for the migrations, retrying with [`backoff`] up to [`MIGRATION_CONNECT_TRIES`] times.
async fn connect_for_migrations(
    cfg: &tokio_postgres::Config,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    DbSetupError,
> {
    let mut attempt = 0;
    loop {
        match cfg.connect(NoTls).await {
            Ok(c) => return Ok(c),
            Err(e) if attempt + 1 < MIGRATION_CONNECT_TRIES => {
                let wait = backoff(attempt, MIGRATION_CONNECT_BACKOFF_MIN, MIGRATION_CONNECT_BACKOFF_MAX);
                warn!(target = %target(cfg), error = %causes(&e), retry_in_ms = wait.as_millis() as u64,
                    "cannot connect to Postgres for migrations; retrying");
                attempt += 1;
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                return Err(DbSetupError::Connect {
                    target: target(cfg),
                    cause: causes(&e),
                });
            }
        }
    }
}

/// Applies `sql/` migrations, holding an advisory lock so that concurrent starts do it once.
pub async fn migrate(url: &str) -> Result<(), DbSetupError> {
    let mut cfg: tokio_postgres::Config = url.parse().map_err(DbSetupError::InvalidUrl)?;
    // refinery's `CREATE TABLE IF NOT EXISTS` would log a NOTICE ("already exists") at every start.
    let inherited = cfg.get_options().map(|o| format!("{o} ")).unwrap_or_default();
    cfg.options(format!("{inherited}-c client_min_messages=warning"));
    let (mut client, conn) = connect_for_migrations(&cfg).await?;
    let conn_task = tokio::spawn(conn);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(DbSetupError::Lock)?;
    let result = embedded::migrations::runner().run_async(&mut client).await;
    // The lock is the session's: it also ends when this connection closes just below.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    drop(client);
    conn_task.abort();
    let report = result.map_err(DbSetupError::Migrations)?;
    for m in report.applied_migrations() {
        info!(migration = %m.name(), version = m.version(), "migration applied");
    }
    Ok(())
}

/// `host:port` of a connection configuration, for messages (never its password).
pub fn target(cfg: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{}:{port}", hosts.join(","))
}

/// An error with its chain of causes ("error connecting to server: Connection refused (os error 111)").
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Creates missing monthly partitions of `transactions` around now.
pub async fn ensure_partitions(pool: &Pool) -> Result<i32, StoreError> {
    let client = pool.get().await.map_err(unavailable)?;
    let row = client
        .query_one(
            "SELECT ensure_transaction_partitions(1, $1) AS created",
            &[&PARTITION_MONTHS_AHEAD],
        )
        .await
        .map_err(unavailable)?;
    col(&row, "created")
}

/// How long Idempotency-Keys are kept (the contract promises at least 24 hours).
pub const IDEMPOTENCY_RETENTION_HOURS: i32 = 48;
/// Most keys deleted per statement, so pruning never holds long locks.
pub const PRUNE_BATCH: i64 = 10_000;

/// Deletes idempotency keys older than the retention, in bounded batches.
pub async fn prune_idempotency_keys(pool: &Pool) -> Result<u64, StoreError> {
    let client = pool.get().await.map_err(unavailable)?;
    let mut total = 0;
    loop {
        let n = client
            .execute(
                "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys                  WHERE created_at < now() - make_interval(hours => $1) LIMIT $2)",
                &[&IDEMPOTENCY_RETENTION_HOURS, &PRUNE_BATCH],
            )
            .await
            .map_err(unavailable)?;
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
pub async fn prune_inbox(pool: &Pool) -> Result<u64, StoreError> {
    let client = pool.get().await.map_err(unavailable)?;
    let mut total = 0;
    loop {
        let n = client
            .execute(
                "DELETE FROM processed_events WHERE event_id IN (SELECT event_id FROM processed_events \
                 WHERE processed_at < now() - make_interval(days => $1) LIMIT $2)",
                &[&INBOX_RETENTION_DAYS, &PRUNE_BATCH],
            )
            .await
            .map_err(unavailable)?;
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

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_migration_that_cannot_connect_names_the_host_the_port_and_the_cause() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let err = super::migrate(&format!("postgres://postgres:secret@127.0.0.1:{port}/x"))
            .await
            .expect_err("nothing listens there")
            .to_string();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(err.contains("refused"), "the cause is named: {err}");
        assert!(!err.contains("secret"), "no password in messages: {err}");
    }

    #[test]
    fn connection_age_limits_stay_within_the_spread_and_differ_between_connections() {
        use super::{CONNECTION_AGE_SPREAD, CONNECTION_MAX_AGE, connection_age_limit};
        use std::time::{Duration, Instant};
        let epoch = Instant::now();
        let max = CONNECTION_MAX_AGE;
        let lowest = max - max / CONNECTION_AGE_SPREAD;
        let limits: std::collections::BTreeSet<Duration> = (0..200u64)
            .map(|i| connection_age_limit(max, epoch + Duration::from_nanos(i * 7_919), epoch))
            .collect();
        assert!(limits.iter().all(|l| (lowest..=max).contains(l)), "{limits:?}");
        assert!(
            limits.len() > 150,
            "connections opened apart get different limits: {}",
            limits.len()
        );
        // A connection opened before the epoch (cannot happen in a pool; saturates) still gets a limit.
        assert!(connection_age_limit(max, epoch, epoch + Duration::from_secs(1)) <= max);
    }
}
