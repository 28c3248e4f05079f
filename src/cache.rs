//! The wallet cache: committed wallet states, written through by the store after every commit and every
//! load, read by `GET /wallets/{userId}` and the visibility checks of other reads.
//!
//! With `REDIS_URL` it is shared by all instances (Redis, or a Redis Cluster when `REDIS_URL` lists two or
//! more nodes, comma-separated); without, it lives in this process. Each entry carries the wallet row's
//! `version`, and a write only replaces an older version (a Lua compare-and-set in Redis), so a slow writer
//! can never put an old balance back over a newer one. Entries expire after [`CACHE_TTL`] (the design's 5
//! minutes).
//!
//! Redis being down costs speed, never a failed request: a cache failure is a miss (reads fall back to
//! Postgres), and Redis sits behind a circuit breaker ([`crate::resilience`], dependency `redis`): after
//! repeated failures the cache is skipped entirely — no waiting on Redis — until a probe finds it again.
//! Wallets whose write-through was skipped or failed meanwhile are remembered (up to [`MAX_MISSED_WRITES`])
//! and their entries deleted once Redis answers again, so a Redis that kept its data does not serve their
//! old balances.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Cmd, Pipeline, RedisFuture, Value};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use wallet_actors::{Amount, Currency, WalletState, WalletStatus};

use crate::resilience::{Breaker, BreakerPolicy, BreakerState};

/// How long a cached wallet lives in Redis without being written again (the design's 5 minutes): every
/// instance writes through to Redis, so entries there are never stale for longer than a write takes.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a wallet lives in the in-process cache. Short, because without Redis another instance's
/// commits cannot reach this cache: a multi-instance deployment without `REDIS_URL` reads balances at
/// most this stale (set `REDIS_URL` for instance-wide freshness).
pub const LOCAL_CACHE_TTL: Duration = Duration::from_secs(2);
/// Most wallets the in-process cache holds. When it is full, expired entries are swept out first (a walk over
/// many wallets would otherwise fill it once with entries that stay expired forever and cache nothing more);
/// only when it is full of live entries is a new wallet left uncached.
pub const MAX_LOCAL_ENTRIES: usize = 200_000;
/// Longest a Redis operation (read, write, delete) may take before it counts as a failure (a read: a miss).
pub const CACHE_TIMEOUT: Duration = Duration::from_millis(250);
/// How long Redis may take to answer at start (the service starts anyway, without the cache, if it does
/// not), and how long a connection to a Redis Cluster may take to be set up.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most wallets remembered whose write-through to Redis was skipped or failed; past it, the others' entries
/// are left to expire within [`CACHE_TTL`] (logged).
pub const MAX_MISSED_WRITES: usize = 100_000;
/// Retries of a Redis Cluster request inside the cluster client: how it follows `MOVED`/`ASK` redirections
/// while slots move (resharding, a failover). Each request stays bounded by [`CACHE_TIMEOUT`]; a failure is a
/// miss, and the breaker paces what comes after.
pub const CLUSTER_REDIRECTS: u32 = 2;
/// The breaker's `dependency` label.
pub const REDIS_DEPENDENCY: &str = "redis";
/// Lookups of the wallet cache, labelled `outcome`: `hit`, `miss`, `error` (a miss because Redis failed)
/// and `bypassed` (a miss because Redis' breaker is open: Postgres was read without trying Redis).
pub const LOOKUPS_METRIC: &str = "wallet_cache_lookups_total";
/// Writes and deletes not sent to Redis because its breaker was open.
pub const WRITES_SKIPPED_METRIC: &str = "wallet_cache_writes_skipped_total";

/// Why the Redis cache could not be set up at start: only a malformed `REDIS_URL` (a Redis that does not
/// answer is not fatal).
#[derive(Debug, thiserror::Error)]
pub enum CacheConnectError {
    #[error("REDIS_URL: {0}")]
    InvalidUrl(redis::RedisError),
}

/// The nodes `REDIS_URL` lists: comma-separated `redis://host:port` URLs, blanks ignored.
pub fn redis_nodes(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).filter(|n| !n.is_empty()).collect()
}

/// Sets the value only when its version is newer than the cached one. KEYS[1] key; ARGV: json, version, ttl.
const SET_IF_NEWER: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, decoded = pcall(cjson.decode, cur)
  if ok and decoded['version'] and tonumber(decoded['version']) >= tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
return 1
"#;

/// What is cached of a wallet (its row, without budgets, with its version).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cached {
    wallet_id: Uuid,
    user_id: Uuid,
    company_id: Uuid,
    balance: Amount,
    currency: Currency,
    status: WalletStatus,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// The open holds (bounded by `MAX_OPEN_HOLDS`), so a read computes the available balance at its own
    /// instant. Absent in entries written before holds existed: none.
    #[serde(default)]
    holds: Vec<wallet_actors::Hold>,
}

impl From<&WalletState> for Cached {
    fn from(w: &WalletState) -> Self {
        Cached {
            wallet_id: w.wallet_id,
            user_id: w.user_id,
            company_id: w.company_id,
            balance: w.balance,
            currency: w.currency,
            status: w.status,
            version: w.version,
            created_at: w.created_at,
            updated_at: w.updated_at,
            holds: w.holds.clone(),
        }
    }
}

impl From<Cached> for WalletState {
    fn from(c: Cached) -> Self {
        WalletState {
            wallet_id: c.wallet_id,
            user_id: c.user_id,
            company_id: c.company_id,
            balance: c.balance,
            currency: c.currency,
            status: c.status,
            version: c.version,
            created_at: c.created_at,
            updated_at: c.updated_at,
            budgets: vec![],
            holds: c.holds,
            // Not cached: only a wallet's actor needs its chain head, and it loads it from the store.
            head: wallet_actors::chain::Head::default(),
        }
    }
}

/// The in-process cache: at most `capacity` entries, each fresh for `ttl`.
pub struct LocalCache {
    map: DashMap<Uuid, (Cached, Instant)>,
    lookups: Lookups,
    capacity: usize,
    ttl: Duration,
    /// When the expired entries were last swept out: at most one O(capacity) sweep per `ttl`, so a cache
    /// full of live entries does not sweep on every put.
    last_sweep: std::sync::Mutex<Option<Instant>>,
}

pub enum WalletCache {
    Local(LocalCache),
    Redis(RedisCache),
}

/// The shared cache in Redis (one server or a cluster), behind its breaker.
pub struct RedisCache {
    conn: RedisConn,
    prefix: String,
    script: redis::Script,
    breaker: Arc<Breaker>,
    missed: Arc<Missed>,
    lookups: Lookups,
}

/// The lookup counters, one handle per `outcome`, registered once: `metrics::counter!` with a label looks
/// the counter up in the recorder's registry on every call, about 1,000 of a wallet read's 45,000
/// instructions (callgrind). The recorder is installed before any cache is built (`app`), and keeps every
/// counter, so these stay the ones `/metrics` shows.
struct Lookups {
    hit: metrics::Counter,
    miss: metrics::Counter,
    bypassed: metrics::Counter,
    error: metrics::Counter,
}

impl Lookups {
    fn registered() -> Self {
        let outcome = |outcome: &'static str| metrics::counter!(LOOKUPS_METRIC, "outcome" => outcome);
        Lookups {
            hit: outcome("hit"),
            miss: outcome("miss"),
            bypassed: outcome("bypassed"),
            error: outcome("error"),
        }
    }

    /// Counts a lookup that Redis or the map answered.
    fn answered<T>(&self, found: &Option<T>) {
        match found {
            Some(_) => self.hit.increment(1),
            None => self.miss.increment(1),
        }
    }
}

/// Wallets whose entry in Redis may be older than their last commit (their write was skipped or failed).
#[derive(Default)]
struct Missed {
    ids: Mutex<HashSet<Uuid>>,
    /// Some were not remembered (more than [`MAX_MISSED_WRITES`]).
    overflowed: AtomicBool,
    /// Whether a task is deleting the remembered entries now.
    flushing: AtomicBool,
    /// Anything to delete? (checked after every successful operation, so kept outside the lock)
    pending: AtomicBool,
}

impl Missed {
    fn remember(&self, id: Uuid) {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.len() < MAX_MISSED_WRITES {
            ids.insert(id);
            self.pending.store(true, Ordering::Release);
        } else {
            self.overflowed.store(true, Ordering::Release);
        }
    }

    fn take(&self) -> Vec<Uuid> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        self.pending.store(false, Ordering::Release);
        ids.drain().collect()
    }
}

/// A connection to one Redis server (the manager reconnects when a call finds it broken) or to a cluster
/// (slots followed by the cluster client; set up in the background, never while a request waits).
#[derive(Clone)]
enum RedisConn {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
}

struct LazyCluster {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
    connecting: AtomicBool,
}

/// No connection to use now.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("the Redis Cluster connection is not set up yet")]
    ClusterPending,
}

/// A connection in hand, of one kind or the other, usable wherever the redis crate wants one.
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisConn {
    /// A connection to use now. A cluster connection not set up yet is started in the background (one
    /// attempt at a time, bounded by [`REDIS_CONNECT_TIMEOUT`]) and this call fails at once.
    fn get(&self) -> Result<Conn, ConnError> {
        match self {
            RedisConn::Single(m) => Ok(Conn::Single(m.clone())),
            RedisConn::Cluster(lazy) => {
                if let Some(c) = lazy.conn.get() {
                    return Ok(Conn::Cluster(c.clone()));
                }
                if !lazy.connecting.swap(true, Ordering::AcqRel) {
                    let lazy = lazy.clone();
                    tokio::spawn(async move {
                        let connect = lazy.conn.get_or_try_init(|| lazy.client.get_async_connection());
                        match tokio::time::timeout(REDIS_CONNECT_TIMEOUT, connect).await {
                            Ok(Ok(_)) => tracing::info!("connected to the Redis Cluster"),
                            Ok(Err(e)) => tracing::warn!(error = %e, "cannot connect to the Redis Cluster yet"),
                            Err(_) => tracing::warn!("the Redis Cluster did not answer in time"),
                        }
                        lazy.connecting.store(false, Ordering::Release);
                    });
                }
                Err(ConnError::ClusterPending)
            }
        }
    }
}

impl WalletCache {
    pub fn local() -> Self {
        Self::local_bounded(MAX_LOCAL_ENTRIES, LOCAL_CACHE_TTL)
    }

    /// An in-process cache of other limits (tests use small ones).
    pub fn local_bounded(capacity: usize, ttl: Duration) -> Self {
        assert!(capacity > 0, "a cache of no entries is a configuration error");
        WalletCache::Local(LocalCache {
            map: DashMap::new(),
            lookups: Lookups::registered(),
            capacity,
            ttl,
            last_sweep: std::sync::Mutex::new(None),
        })
    }

    /// Entries held now, expired ones included (the in-process cache; Redis reports none).
    #[cfg(test)]
    fn local_len(&self) -> usize {
        match self {
            WalletCache::Local(local) => local.map.len(),
            WalletCache::Redis(_) => 0,
        }
    }

    /// The shared cache on `url`: one `redis://` URL, or two or more comma-separated ones for a Redis
    /// Cluster (its seed nodes; the client discovers the others). `prefix` namespaces the keys (tests use
    /// their own). Only a malformed URL fails: a Redis that does not answer now is logged, and the cache is
    /// skipped until it answers.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, CacheConnectError> {
        let nodes = redis_nodes(url);
        let conn = if nodes.len() > 1 {
            let client = ClusterClient::builder(nodes.iter().copied())
                .connection_timeout(CACHE_TIMEOUT)
                .response_timeout(CACHE_TIMEOUT)
                .retries(CLUSTER_REDIRECTS)
                .build()
                .map_err(CacheConnectError::InvalidUrl)?;
            RedisConn::Cluster(Arc::new(LazyCluster {
                client,
                conn: tokio::sync::OnceCell::new(),
                connecting: AtomicBool::new(false),
            }))
        } else {
            let client = redis::Client::open(url.trim()).map_err(CacheConnectError::InvalidUrl)?;
            // No retries inside the manager: a call that finds the connection broken fails (a miss) and
            // the manager reconnects once in the background; the breaker paces the calls after that.
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(0)
                .set_connection_timeout(Some(CACHE_TIMEOUT))
                .set_response_timeout(Some(CACHE_TIMEOUT));
            let manager =
                ConnectionManager::new_lazy_with_config(client, config).map_err(CacheConnectError::InvalidUrl)?;
            RedisConn::Single(manager)
        };
        let cache = RedisCache {
            conn,
            prefix: prefix.to_string(),
            script: redis::Script::new(SET_IF_NEWER),
            breaker: Breaker::new(REDIS_DEPENDENCY, BreakerPolicy::default()),
            missed: Arc::new(Missed::default()),
            lookups: Lookups::registered(),
        };
        cache.check_at_start().await;
        Ok(WalletCache::Redis(cache))
    }

    /// The state of Redis' breaker (`None` for the in-process cache).
    pub fn breaker_state(&self) -> Option<BreakerState> {
        match self {
            WalletCache::Local(_) => None,
            WalletCache::Redis(r) => Some(r.breaker.state()),
        }
    }

    /// The cached committed state, or `None` (miss, expired, or the cache failed or was skipped).
    pub async fn get(&self, id: Uuid) -> Option<WalletState> {
        match self {
            WalletCache::Local(LocalCache { map, ttl, lookups, .. }) => {
                let hit = map.get(&id).filter(|e| e.1.elapsed() < *ttl).map(|e| e.0.clone());
                lookups.answered(&hit);
                hit.map(WalletState::from)
            }
            WalletCache::Redis(r) => r.get(id).await,
        }
    }

    /// Writes a committed state unless a newer version is cached. Never blocks the caller on Redis.
    pub fn put(&self, w: &WalletState) {
        let value = Cached::from(w);
        match self {
            WalletCache::Local(LocalCache {
                map,
                capacity,
                ttl,
                last_sweep,
                ..
            }) => {
                if map.len() >= *capacity && !map.contains_key(&w.wallet_id) {
                    // Full: sweep the expired out, unless another put is sweeping or one did within `ttl`;
                    // still full, this wallet is not cached (a miss reads Postgres).
                    if let Ok(mut last) = last_sweep.try_lock()
                        && last.is_none_or(|at| at.elapsed() >= *ttl)
                    {
                        map.retain(|_, e| e.1.elapsed() < *ttl);
                        *last = Some(Instant::now());
                    }
                    if map.len() >= *capacity {
                        return;
                    }
                }
                let mut entry = map
                    .entry(w.wallet_id)
                    .or_insert_with(|| (value.clone(), Instant::now()));
                if entry.0.version <= value.version {
                    *entry = (value, Instant::now());
                }
            }
            WalletCache::Redis(r) => r.put(value),
        }
    }

    /// Forgets a wallet (its row changed where no full state is at hand, e.g. a transfer's destination).
    pub fn invalidate(&self, id: Uuid) {
        match self {
            WalletCache::Local(LocalCache { map, .. }) => {
                map.remove(&id);
            }
            WalletCache::Redis(r) => r.invalidate(id),
        }
    }
}

impl RedisCache {
    fn key(&self, id: Uuid) -> String {
        key(&self.prefix, id)
    }

    /// At start: is Redis there? Logged either way; a failure counts against the breaker like any other.
    async fn check_at_start(&self) {
        if let RedisConn::Cluster(lazy) = &self.conn {
            // Starts setting the cluster connection up, and gives it its time at start.
            let _ = self.conn.get();
            let set_up = async {
                while lazy.conn.get().is_none() && lazy.connecting.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            let _ = tokio::time::timeout(REDIS_CONNECT_TIMEOUT, set_up).await;
        }
        let ping = call(&self.breaker, &self.conn, |mut c| async move {
            redis::cmd("PING").query_async::<String>(&mut c).await
        })
        .await;
        match ping {
            Some(Ok(_)) => tracing::info!("wallet cache: Redis answers"),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "wallet cache: Redis does not answer; reads use Postgres until it does")
            }
            None => {}
        }
    }

    async fn get(&self, id: Uuid) -> Option<WalletState> {
        let key = self.key(id);
        let read = call(&self.breaker, &self.conn, |mut c| async move {
            c.get::<_, Option<String>>(key).await
        })
        .await;
        match read {
            None => {
                self.lookups.bypassed.increment(1);
                None
            }
            Some(Ok(found)) => {
                flush_missed(&self.breaker, &self.conn, &self.missed, &self.prefix);
                let hit = found.and_then(|json| serde_json::from_str::<Cached>(&json).ok());
                self.lookups.answered(&hit);
                hit.map(WalletState::from)
            }
            Some(Err(e)) => {
                self.lookups.error.increment(1);
                metrics::counter!("cache_errors_total", "op" => "get").increment(1);
                tracing::debug!(error = %e, "cache read failed; reading Postgres");
                None
            }
        }
    }

    /// Writes through on a task of its own (never blocks the caller on Redis).
    fn put(&self, value: Cached) {
        let Ok(json) = serde_json::to_string(&value) else {
            return;
        };
        let (id, version, script) = (value.wallet_id, value.version, self.script.clone());
        let key = self.key(id);
        self.background("put", id, move |mut c| async move {
            let mut invocation = script.key(key);
            invocation.arg(json).arg(version).arg(CACHE_TTL.as_secs());
            invocation.invoke_async::<i64>(&mut c).await
        });
    }

    fn invalidate(&self, id: Uuid) {
        let key = self.key(id);
        self.background("del", id, move |mut c| async move { c.del::<_, i64>(key).await });
    }

    /// A write or delete of wallet `id`'s entry, on a task of its own. Skipped while the breaker is open;
    /// skipped or failed, the wallet is remembered so that its entry is deleted once Redis answers.
    fn background<F, Fut>(&self, op: &'static str, id: Uuid, f: F)
    where
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = redis::RedisResult<i64>> + Send,
    {
        let (breaker, conn, missed, prefix) = (
            self.breaker.clone(),
            self.conn.clone(),
            self.missed.clone(),
            self.prefix.clone(),
        );
        tokio::spawn(async move {
            match call(&breaker, &conn, f).await {
                Some(Ok(_)) => flush_missed(&breaker, &conn, &missed, &prefix),
                Some(Err(e)) => {
                    metrics::counter!("cache_errors_total", "op" => op).increment(1);
                    tracing::debug!(error = %e, "cache write failed; the entry is deleted once Redis answers");
                    missed.remember(id);
                }
                None => {
                    metrics::counter!(WRITES_SKIPPED_METRIC).increment(1);
                    missed.remember(id);
                }
            }
        });
    }
}

fn key(prefix: &str, id: Uuid) -> String {
    format!("{prefix}wallet:{id}")
}

/// Runs one Redis operation under the breaker and [`CACHE_TIMEOUT`]: `None` when the breaker refused
/// (nothing was sent), `Some(Err(..))` when Redis failed or did not answer in time.
async fn call<T, F, Fut>(breaker: &Arc<Breaker>, conn: &RedisConn, op: F) -> Option<Result<T, String>>
where
    F: FnOnce(Conn) -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    let call = breaker.admit().ok()?;
    let conn = match conn.get() {
        Ok(c) => c,
        Err(e) => {
            call.failure();
            return Some(Err(e.to_string()));
        }
    };
    match tokio::time::timeout(CACHE_TIMEOUT, op(conn)).await {
        Ok(Ok(v)) => {
            call.success();
            Some(Ok(v))
        }
        Ok(Err(e)) => {
            call.failure();
            Some(Err(e.to_string()))
        }
        Err(_) => {
            call.failure();
            Some(Err("timed out".into()))
        }
    }
}

/// Once Redis answers again: deletes the entries of the wallets whose writes were missed, one task at a
/// time; stops at the first failure, keeping the rest for the next time.
fn flush_missed(breaker: &Arc<Breaker>, conn: &RedisConn, missed: &Arc<Missed>, prefix: &str) {
    if !missed.pending.load(Ordering::Acquire) || missed.flushing.swap(true, Ordering::AcqRel) {
        return;
    }
    if missed.overflowed.swap(false, Ordering::AcqRel) {
        tracing::warn!(
            remembered = MAX_MISSED_WRITES,
            "more wallets changed while Redis was unreachable than are remembered; the others' entries expire \
             within the cache TTL"
        );
    }
    let (breaker, conn, missed, prefix) = (breaker.clone(), conn.clone(), missed.clone(), prefix.to_string());
    tokio::spawn(async move {
        let ids = missed.take();
        let mut deleted = 0;
        for id in &ids {
            let key = key(&prefix, *id);
            let del = call(&breaker, &conn, |mut c| async move { c.del::<_, i64>(key).await }).await;
            if !matches!(del, Some(Ok(_))) {
                break;
            }
            deleted += 1;
        }
        for id in &ids[deleted..] {
            missed.remember(*id);
        }
        tracing::info!(
            deleted,
            left = ids.len() - deleted,
            "entries of wallets written while Redis was unreachable deleted"
        );
        missed.flushing.store(false, Ordering::Release);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(version: i64, balance: &str) -> WalletState {
        state_of(Uuid::nil(), version, balance)
    }

    fn state_of(wallet_id: Uuid, version: i64, balance: &str) -> WalletState {
        let now = Utc::now();
        WalletState {
            wallet_id,
            user_id: Uuid::nil(),
            company_id: Uuid::nil(),
            balance: Amount::parse(balance).unwrap(),
            currency: Currency::Usd,
            status: WalletStatus::Active,
            version,
            created_at: now,
            updated_at: now,
            budgets: vec![],
            holds: vec![],
            head: wallet_actors::chain::Head::default(),
        }
    }

    #[test]
    fn redis_url_lists_the_cluster_nodes_comma_separated() {
        assert_eq!(redis_nodes("redis://a:6379"), vec!["redis://a:6379"]);
        assert_eq!(
            redis_nodes("redis://a:7000, redis://b:7001,,redis://c:7002 "),
            vec!["redis://a:7000", "redis://b:7001", "redis://c:7002"]
        );
    }

    #[tokio::test]
    async fn an_older_version_never_replaces_a_newer_one() {
        let cache = WalletCache::local();
        cache.put(&state(5, "50.00"));
        cache.put(&state(4, "40.00"));
        assert_eq!(cache.get(Uuid::nil()).await.unwrap().balance.to_string(), "50.00");
        cache.put(&state(6, "60.00"));
        assert_eq!(cache.get(Uuid::nil()).await.unwrap().version, 6);
        cache.invalidate(Uuid::nil());
        assert!(cache.get(Uuid::nil()).await.is_none());
    }

    #[tokio::test]
    async fn a_full_local_cache_sweeps_expired_entries_to_make_room() {
        let ttl = Duration::from_millis(50);
        let cache = WalletCache::local_bounded(2, ttl);
        let (a, b, c, d) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        cache.put(&state_of(a, 1, "1.00"));
        cache.put(&state_of(b, 1, "2.00"));
        // Full of live entries: a third wallet is not cached, the two are kept.
        cache.put(&state_of(c, 1, "3.00"));
        assert!(cache.get(c).await.is_none());
        assert_eq!(cache.local_len(), 2);
        // Once they expired, a new wallet takes their room instead of being refused forever.
        tokio::time::sleep(ttl * 2).await;
        cache.put(&state_of(d, 1, "4.00"));
        assert_eq!(
            cache.get(d).await.map(|w| w.balance.to_string()).as_deref(),
            Some("4.00")
        );
        assert_eq!(cache.local_len(), 1, "the expired entries were swept out");
    }
}
