//! Building the application from configuration and running it until shutdown.
//!
//! `App::build(config)` binds the listener (port 0 picks a free one, which tests use) and starts the
//! engine; `App::run(shutdown)` starts the events (consumer and outbox relay, [`crate::events`]), serves
//! until the future resolves, then drains in-flight requests and messages, stops the engine and flushes
//! the outbox. `main` passes SIGTERM/SIGINT; tests pass a oneshot.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tracing::{info, warn};
use uuid::Uuid;
use wallet_actors::{Currency, Engine, Limits};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::crypto::PiiCipher;
use crate::http::problem::ApiError;
use crate::money::Ledger;
use crate::store::PgStore;

/// Most user → wallet ids remembered (the mapping never changes, so entries never go stale).
pub const MAX_CACHED_USER_WALLETS: usize = 1_000_000;

/// What every handler needs.
pub struct Ctx {
    pub auth: Authenticator,
    pub ledger: Ledger,
    pub pii: PiiCipher,
    pub default_currency: Currency,
    /// The largest opening balance of a wallet (`MAX_INITIAL_BALANCE`).
    pub max_initial_balance: wallet_actors::Amount,
    /// Budgets set up for new users (`DEFAULT_BUDGETS`).
    pub default_budgets: Vec<crate::budgets::DefaultBudget>,
    /// Per-caller request limit (`RATE_LIMIT_PER_SECOND`), when configured.
    pub rate_limiter: Option<governor::DefaultKeyedRateLimiter<Uuid>>,
    /// user id → wallet id; a wallet's owner never changes.
    pub user_wallets: DashMap<Uuid, Uuid>,
    /// The event consumer's state (readiness) and the in-process bus.
    pub events: Arc<crate::events::EventsState>,
    /// Whether the database was seen to hold this binary's newest migration (checked by readiness until
    /// it was; a migrated database does not become unmigrated).
    migrated: AtomicBool,
    metrics: PrometheusHandle,
}

/// How often histogram samples are folded into their buckets/summaries when nobody scrapes `/metrics`.
pub const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// HTTP request latency, by route, method and status: a Prometheus histogram (operators add the buckets of
/// every pod; summaries' quantiles cannot be aggregated).
pub const REQUEST_LATENCY_METRIC: &str = "http_request_duration_seconds";
/// Bucket upper bounds of [`REQUEST_LATENCY_METRIC`], in seconds: 1 ms to 10 s.
pub const REQUEST_LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// A wallet batch's commit latency (written by the wallet actor), by outcome: a histogram.
pub const COMMIT_LATENCY_METRIC: &str = "wallet_commit_duration_seconds";
/// Bucket upper bounds of [`COMMIT_LATENCY_METRIC`], in seconds: 0.5 ms to 5 s.
pub const COMMIT_LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The recorder's builder: histograms (not summaries) for the latencies above.
fn metrics_builder() -> PrometheusBuilder {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in [
        (REQUEST_LATENCY_METRIC, &REQUEST_LATENCY_BUCKETS[..]),
        (COMMIT_LATENCY_METRIC, &COMMIT_LATENCY_BUCKETS[..]),
    ] {
        // Only an empty bucket list is refused, and these are non-empty constants: the fallback (plain
        // summaries) is never taken.
        builder = builder
            .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full(name.into()), buckets)
            .unwrap_or_else(|e| {
                warn!(metric = name, error = %e, "histogram buckets refused; latencies stay summaries");
                PrometheusBuilder::new()
            });
    }
    builder
}

fn metrics_handle() -> PrometheusHandle {
    // One recorder per process (tests build many apps in one process).
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_builder().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                warn!("a metrics recorder was already installed; /metrics shows this one's view only");
            }
            // The recorder keeps every histogram sample until upkeep drains it, which a render does and
            // nothing else: unscraped, a few samples per request grew the heap ~0.4 MiB/s at 6.5k debits/s.
            // A plain thread, so the upkeep does not depend on any one runtime (tests run many).
            let upkeep = handle.clone();
            let started = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = started {
                warn!(error = %e, "cannot start the metrics upkeep thread; histograms drain only when scraped");
            }
            handle
        })
        .clone()
}

/// The route a path belongs to, with ids as `{id}`: one metrics label per route, not per wallet, and a
/// bounded set of them (a path no route serves is `other`, so a scan of random URLs cannot grow the
/// metrics without bound). Static strings: no allocation per request.
fn route_label(path: &str) -> &'static str {
    crate::http::route_of(path).map_or("other", |r| r.label)
}

/// The method as a static label (anything unusual is `OTHER`).
fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl Ctx {
    /// Why the service is not ready, in words safe for a client (causes are logged): Postgres does not
    /// answer, its migration history lacks this binary's newest migration, or (with `AMQP_URL`) the
    /// consumer is not attached. A positive migration check is remembered; a negative one is repeated.
    pub async fn readiness(&self) -> Result<(), String> {
        let pool = &self.ledger.store.pool;
        let unreachable = |e: wallet_actors::StoreError| {
            warn!(kind = e.kind(), cause = e.cause(), "not ready: database check failed");
            "database unreachable".to_string()
        };
        crate::db::ping(pool).await.map_err(unreachable)?;
        if !self.migrated.load(Ordering::Acquire) {
            if !crate::db::migrations_applied(pool).await.map_err(unreachable)? {
                return Err(format!(
                    "migrations not applied: the database lacks migration V{}",
                    crate::db::newest_migration()
                ));
            }
            self.migrated.store(true, Ordering::Release);
        }
        self.events.readiness()
    }

    pub fn render_metrics(&self) -> String {
        metrics::gauge!("wallet_live_actors").set(self.ledger.engine.live_actors() as f64);
        metrics::gauge!("wallet_queued_commands").set(self.ledger.engine.queued_commands() as f64);
        let status = self.ledger.store.pool.status();
        metrics::gauge!("db_pool_in_use").set((status.size - status.available) as f64);
        metrics::gauge!("db_pool_size").set(status.max_size as f64);
        self.metrics.render()
    }

    pub fn observe(&self, info: warp::log::Info<'_>) {
        metrics::histogram!(
            REQUEST_LATENCY_METRIC,
            "method" => method_label(info.method()),
            "route" => route_label(info.path()),
            "status" => info.status().as_str().to_owned(),
        )
        .record(info.elapsed().as_secs_f64());
    }

    /// A wallet's committed state for reads: the cache (shared through Redis when configured, written
    /// through after every commit), else Postgres. Budgets are not included.
    pub async fn wallet_for_read(&self, wallet_id: Uuid) -> Result<wallet_actors::WalletState, ApiError> {
        if let Some(w) = self.ledger.store.cache.get(wallet_id).await {
            return Ok(w);
        }
        use wallet_actors::WalletStore;
        match self.ledger.store.load(wallet_id).await {
            Ok(Some(w)) => Ok(w),
            Ok(None) => Err(ApiError::not_found("wallet")),
            Err(e) => Err(e.into()),
        }
    }

    /// The wallet id of a user, remembered once found.
    pub async fn wallet_of_user(&self, user_id: Uuid) -> Result<Option<Uuid>, ApiError> {
        if let Some(id) = self.user_wallets.get(&user_id) {
            return Ok(Some(*id));
        }
        let found = self.ledger.store.wallet_id_of_user(user_id).await?;
        if let Some(id) = found
            && self.user_wallets.len() < MAX_CACHED_USER_WALLETS
        {
            self.user_wallets.insert(user_id, id);
        }
        Ok(found)
    }
}

pub struct App {
    listener: TcpListener,
    ctx: Arc<Ctx>,
    events: crate::events::Setup,
    /// From SIGTERM to exit at most (`SHUTDOWN_DRAIN_SECS`).
    drain: Duration,
}

impl App {
    /// Connects, migrates, starts the engine and binds the port.
    pub async fn build(config: Config) -> Result<App, String> {
        let events = crate::events::EventsConfig {
            prefetch: config.amqp_prefetch,
            ..crate::events::EventsConfig::default()
        };
        Self::build_with_events(config, events).await
    }

    /// [`App::build`] with the events' names, retries, prefetch and intervals given (tests use their own;
    /// `events.prefetch` wins over `config.amqp_prefetch` here).
    pub async fn build_with_events(config: Config, events: crate::events::EventsConfig) -> Result<App, String> {
        crate::auth::install_crypto_provider();
        let auth = Authenticator::new(&config.auth)?;
        let pii = match &config.pii_key_b64 {
            Some(k) => PiiCipher::from_base64(k).map_err(|e| format!("PII_ENCRYPTION_KEY: {e}"))?,
            None => {
                warn!("PII_ENCRYPTION_KEY is not set: using the insecure development key");
                PiiCipher::development()
            }
        };
        crate::db::migrate(&config.database_url).await?;
        let pool = crate::db::pool(&config.database_url, config.pool_size, &config.timeouts.statements())?;
        let read = match &config.database_read_url {
            Some(url) => crate::db::pool(url, config.pool_size, &config.timeouts.statements())?,
            None => pool.clone(),
        };
        // Instances over one database share one cache namespace: the cache mirrors that database.
        let db_name = config
            .database_url
            .parse::<tokio_postgres::Config>()
            .ok()
            .and_then(|c| c.get_dbname().map(str::to_string))
            .unwrap_or_default();
        let cache = match &config.redis_url {
            Some(url) => crate::cache::WalletCache::redis(url, &format!("wallet-service:{db_name}:")).await?,
            None => crate::cache::WalletCache::local(),
        };
        let cache = Arc::new(cache);
        let outbox_written = Arc::new(tokio::sync::Notify::new());
        let store = PgStore {
            pool: pool.clone(),
            read,
            committer: crate::store::GroupCommitter::start(pool.clone(), cache.clone(), outbox_written.clone()),
            cache,
            outbox_written,
        };
        crate::db::ensure_partitions(&pool)
            .await
            .map_err(|e| format!("partitions: {e}"))?;
        let limits = Limits {
            idle_timeout: config.actor_idle_timeout,
            max_live_actors: config.actor_max_live,
            alert_thresholds: Arc::from(config.alert_thresholds.as_slice()),
            reply_timeout: config.timeouts.reply,
            ..Limits::default()
        };
        let engine = Engine::start(Arc::new(store.clone()), limits).await?;
        let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], config.port)))
            .await
            .map_err(|e| format!("cannot bind port {}: {e}", config.port))?;
        let ctx = Arc::new(Ctx {
            auth,
            ledger: Ledger { engine, store },
            pii,
            default_currency: config.default_currency,
            max_initial_balance: config.max_initial_balance,
            default_budgets: config.default_budgets.clone(),
            user_wallets: DashMap::new(),
            rate_limiter: config.rate_limit_per_second.map(|rate| {
                let burst = rate.saturating_mul(
                    std::num::NonZeroU32::new(crate::config::RATE_LIMIT_BURST_FACTOR)
                        .unwrap_or(std::num::NonZeroU32::MIN),
                );
                governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
            }),
            events: Arc::new(crate::events::EventsState::new(config.amqp_url.is_some())),
            migrated: AtomicBool::new(false),
            metrics: metrics_handle(),
        });
        let events = crate::events::Setup {
            amqp_url: config.amqp_url.clone(),
            config: events,
        };
        Ok(App {
            listener,
            ctx,
            events,
            drain: config.timeouts.shutdown_drain,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn ctx(&self) -> Arc<Ctx> {
        self.ctx.clone()
    }

    /// Serves until `shutdown` resolves; then stops accepting and consuming, lets in-flight requests and
    /// messages finish, stops the engine and publishes what is left in the outbox.
    /// Serves until `shutdown` resolves, then drains within the drain deadline: the listener closes, HTTP
    /// requests and consumed messages in flight finish (each is bounded by the engine's and the store's
    /// timeouts, which the deadline outlasts), the engine answers every command it accepted and stops, and
    /// the outbox is flushed with what time is left.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let App {
            listener,
            ctx,
            events,
            drain,
        } = self;
        info!(port = listener.local_addr().map(|a| a.port()).unwrap_or(0), "listening");
        let upkeep = tokio::spawn(partition_upkeep(ctx.ledger.store.pool.clone()));
        let sweep = tokio::spawn(budget_expiry(ctx.clone()));
        let stop = tokio_util::sync::CancellationToken::new();
        let mut events = crate::events::start(ctx.clone(), events, stop.clone());
        let server = warp::serve(crate::http::routes(ctx.clone()))
            .incoming(listener)
            .graceful(stop.clone().cancelled_owned())
            .run();
        let mut server = std::pin::pin!(server);
        tokio::select! {
            () = &mut server => warn!("the HTTP server stopped by itself"),
            () = shutdown => {}
        }
        stop.cancel();
        let deadline = tokio::time::Instant::now() + drain;
        info!(drain_secs = drain.as_secs(), "draining");
        let drained = tokio::time::timeout_at(deadline, async {
            server.await;
            events.consumer_stopped().await;
            info!("HTTP and events drained; stopping the engine");
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            ctx.ledger.engine.shutdown(left).await
        })
        .await;
        if !matches!(drained, Ok(true)) {
            // What is still running is bounded on the server by statement_timeout, and cancelled once our
            // connections close (client_connection_check_interval): nothing commits long after exit.
            warn!("the drain deadline passed before all work finished; exiting anyway");
        }
        upkeep.abort();
        sweep.abort();
        events.finish().await;
    }
}

async fn partition_upkeep(pool: deadpool_postgres::Pool) {
    let mut tick = tokio::time::interval(crate::db::PARTITION_UPKEEP_EVERY);
    tick.tick().await; // the first tick is immediate; build already ran it
    loop {
        tick.tick().await;
        match crate::db::ensure_partitions(&pool).await {
            Ok(n) if n > 0 => info!(created = n, "transaction partitions created"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "partition upkeep failed; will retry"),
        }
        match crate::db::prune_idempotency_keys(&pool).await {
            Ok(n) if n > 0 => info!(pruned = n, "old idempotency keys pruned"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "idempotency key pruning failed; will retry"),
        }
        match crate::db::prune_inbox(&pool).await {
            Ok(n) if n > 0 => info!(pruned = n, "old inbox rows pruned"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "inbox pruning failed; will retry"),
        }
    }
}

/// Marks budgets past their end EXPIRED, periodically (the actor also checks dates at use).
async fn budget_expiry(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(crate::budgets::EXPIRY_SWEEP_EVERY);
    loop {
        tick.tick().await;
        if let Some(limiter) = &ctx.rate_limiter {
            // Forget callers whose buckets are full again, so the limiter's memory stays bounded.
            limiter.retain_recent();
        }
        match crate::budgets::sweep_expired(&ctx.ledger.store.pool, &ctx.ledger.engine).await {
            Ok(n) if n > 0 => info!(expired = n, "budgets expired"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "budget expiry sweep failed; will retry"),
        }
    }
}

/// Engine limits from configuration, exposed for tests that need short idle times.
pub fn default_limits(idle: Duration) -> Limits {
    Limits {
        idle_timeout: idle,
        ..Limits::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_with_ids_replaced_and_unknown_paths_bounded() {
        let id = Uuid::new_v4();
        assert_eq!(
            route_label(&format!("/wallets/{id}/transactions")),
            "/wallets/{id}/transactions"
        );
        assert_eq!(route_label(&format!("/wallets/{id}")), "/wallets/{id}");
        assert_eq!(route_label(&format!("/budgets/{id}/history")), "/budgets/{id}/history");
        assert_eq!(route_label("/wallets"), "/wallets");
        assert_eq!(route_label("/health"), "/health");
        assert_eq!(route_label("/wallets/not-an-id"), "other");
        assert_eq!(route_label("/wp-admin/setup.php"), "other");
        assert_eq!(route_label(&format!("/wallets/{id}/transactions/extra")), "other");
        assert_eq!(method_label(&http::Method::POST), "POST");
        assert_eq!(method_label(&http::Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
