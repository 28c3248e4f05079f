//! The wallet cache: committed wallet states, written through by the store after every commit and every
//! load, read by `GET /wallets/{userId}` and the visibility checks of other reads.
//!
//! With `REDIS_URL` it is shared by all instances (Redis); without, it lives in this process. Each entry
//! carries the wallet row's `version`, and a write only replaces an older version (a Lua compare-and-set
//! in Redis), so a slow writer can never put an old balance back over a newer one. Entries expire after
//! [`CACHE_TTL`] (the design's 5 minutes). A cache failure is a miss: reads fall back to Postgres.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use wallet_actors::{Amount, Currency, WalletState, WalletStatus};

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
/// Longest a cache read may take before it counts as a miss.
pub const CACHE_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the first connection to Redis may take at start before the service gives up.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the Redis cache could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum CacheConnectError {
    #[error("REDIS_URL: {0}")]
    InvalidUrl(redis::RedisError),
    #[error("Redis did not answer in time")]
    Timeout,
    #[error("Redis: {0}")]
    Connect(redis::RedisError),
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
    capacity: usize,
    ttl: Duration,
    /// When the expired entries were last swept out: at most one O(capacity) sweep per `ttl`, so a cache
    /// full of live entries does not sweep on every put.
    last_sweep: std::sync::Mutex<Option<Instant>>,
}

pub enum WalletCache {
    Local(LocalCache),
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
        script: redis::Script,
    },
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
            WalletCache::Redis { .. } => 0,
        }
    }

    /// Connects to Redis; `prefix` namespaces the keys (tests use their own).
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, CacheConnectError> {
        let client = redis::Client::open(url).map_err(CacheConnectError::InvalidUrl)?;
        let conn = tokio::time::timeout(REDIS_CONNECT_TIMEOUT, client.get_connection_manager())
            .await
            .map_err(|_| CacheConnectError::Timeout)?
            .map_err(CacheConnectError::Connect)?;
        Ok(WalletCache::Redis {
            conn,
            prefix: prefix.to_string(),
            script: redis::Script::new(SET_IF_NEWER),
        })
    }

    fn key(prefix: &str, id: Uuid) -> String {
        format!("{prefix}wallet:{id}")
    }

    /// The cached committed state, or `None` (miss, expired, or the cache failed).
    pub async fn get(&self, id: Uuid) -> Option<WalletState> {
        match self {
            WalletCache::Local(LocalCache { map, ttl, .. }) => {
                let hit = map.get(&id).filter(|e| e.1.elapsed() < *ttl).map(|e| e.0.clone());
                hit.map(WalletState::from)
            }
            WalletCache::Redis { conn, prefix, .. } => {
                let mut conn = conn.clone();
                let read =
                    tokio::time::timeout(CACHE_TIMEOUT, conn.get::<_, Option<String>>(Self::key(prefix, id))).await;
                match read {
                    Ok(Ok(Some(json))) => serde_json::from_str::<Cached>(&json).ok().map(WalletState::from),
                    Ok(Ok(None)) => None,
                    Ok(Err(e)) => {
                        metrics::counter!("cache_errors_total", "op" => "get").increment(1);
                        tracing::debug!(error = %e, "cache read failed; reading Postgres");
                        None
                    }
                    Err(_) => {
                        metrics::counter!("cache_errors_total", "op" => "get_timeout").increment(1);
                        None
                    }
                }
            }
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
            WalletCache::Redis { conn, prefix, script } => {
                let Ok(json) = serde_json::to_string(&value) else {
                    return;
                };
                let (mut conn, script, key) = (conn.clone(), script.clone(), Self::key(prefix, w.wallet_id));
                tokio::spawn(async move {
                    let mut invocation = script.key(key);
                    invocation.arg(json).arg(value.version).arg(CACHE_TTL.as_secs());
                    if let Err(e) = invocation.invoke_async::<i64>(&mut conn).await {
                        metrics::counter!("cache_errors_total", "op" => "put").increment(1);
                        tracing::debug!(error = %e, "cache write failed; the entry expires on its own");
                    }
                });
            }
        }
    }

    /// Forgets a wallet (its row changed where no full state is at hand, e.g. a transfer's destination).
    pub fn invalidate(&self, id: Uuid) {
        match self {
            WalletCache::Local(LocalCache { map, .. }) => {
                map.remove(&id);
            }
            WalletCache::Redis { conn, prefix, .. } => {
                let mut conn = conn.clone();
                let key = Self::key(prefix, id);
                tokio::spawn(async move {
                    if let Err(e) = conn.del::<_, i64>(key).await {
                        metrics::counter!("cache_errors_total", "op" => "del").increment(1);
                        tracing::debug!(error = %e, "cache invalidation failed; the entry expires on its own");
                    }
                });
            }
        }
    }
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
