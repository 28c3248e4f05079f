//! Building the application from configuration and running it until shutdown.
//!
//! `App::build(config)` binds the listener (port 0 picks a free one, which tests use) and starts the
//! engine; `App::run(shutdown)` starts the events (consumer and outbox relay, [`crate::events`]), serves
//! until the future resolves, then drains in-flight requests and messages, stops the engine and flushes
//! the outbox. `main` passes SIGTERM/SIGINT; tests pass a oneshot.
//!
//! The API port speaks plain HTTP through warp, or HTTPS (TLS 1.3 only) through [`crate::tls`] when
//! `TLS_CERT_FILE`/`TLS_KEY_FILE` are set; with `METRICS_PORT`, `/metrics` has a plain-HTTP listener of its
//! own and the API port answers 404 for it. Every listener stops and drains on the same signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{debug, info, warn};
use wallet_actors::{Engine, Limits};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::crypto::PiiCipher;
use crate::http::Ctx;
use crate::service::{Service, Settings};
use crate::store::PgStore;

/// Why the application could not be built (the process logs it and exits).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("JWT configuration: {0}")]
    Auth(#[from] crate::auth::AuthConfigError),
    #[error("PII_ENCRYPTION_KEY: {0}")]
    PiiKey(crate::crypto::CryptoError),
    #[error(transparent)]
    Database(#[from] crate::store::db::DbSetupError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheConnectError),
    #[error("partitions: {0}")]
    Partitions(wallet_actors::StoreError),
    #[error("the primary's WAL position for read-your-writes over the replica: {0}")]
    ReadRouting(wallet_actors::StoreError),
    #[error("chaining the ledger rows written before chains: {0}")]
    Chain(wallet_actors::StoreError),
    #[error(transparent)]
    Engine(#[from] wallet_actors::EngineStartError),
    #[error("cannot bind port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("cannot bind METRICS_PORT {port}: {source}")]
    BindMetrics { port: u16, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

pub struct App {
    listener: TcpListener,
    /// `METRICS_PORT`'s listener; `None`: `/metrics` is on the API port.
    metrics_listener: Option<TcpListener>,
    /// `TLS_CERT_FILE`/`TLS_KEY_FILE`: the API port speaks TLS 1.3 only.
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<Ctx>,
    events: crate::events::Setup,
    /// From SIGTERM to exit at most (`SHUTDOWN_DRAIN_SECS`).
    drain: Duration,
    /// How often the spend aggregates are folded (`SPEND_FOLD_INTERVAL_SECS`).
    spend_fold_every: Duration,
}

impl App {
    /// Connects, migrates, starts the engine and binds the port.
    pub async fn build(config: Config) -> Result<App, BuildError> {
        let events = crate::events::EventsConfig {
            prefetch: config.amqp_prefetch,
            booking_shards: config.booking_shards,
            ..crate::events::EventsConfig::default()
        };
        Self::build_with_events(config, events).await
    }

    /// [`App::build`] with the events' names, retries, prefetch and intervals given (tests use their own;
    /// `events.prefetch` wins over `config.amqp_prefetch` here).
    pub async fn build_with_events(config: Config, events: crate::events::EventsConfig) -> Result<App, BuildError> {
        crate::auth::install_crypto_provider();
        // The recorder first: what is recorded while building (the breakers' initial states) is kept.
        let metrics = crate::telemetry::metrics_handle();
        let auth = Authenticator::new(&config.auth)?;
        // Before any connection is made: a certificate that cannot serve fails the start at once.
        let tls = config.transport.tls.as_ref().map(crate::tls::acceptor).transpose()?;
        let pii = match &config.pii_key_b64 {
            Some(k) => PiiCipher::from_base64(k).map_err(BuildError::PiiKey)?,
            None => {
                warn!("PII_ENCRYPTION_KEY is not set: using the insecure development key");
                PiiCipher::development()
            }
        };
        crate::store::db::migrate(&config.database_url).await?;
        let bounds = config.timeouts.statements();
        let pool = crate::store::db::pool(
            &config.database_url,
            config.pool_size,
            &bounds,
            crate::store::pool::PRIMARY,
        )?;
        let (read, reads) = match &config.database_read_url {
            Some(url) => {
                let replica = crate::store::db::pool(url, config.pool_size, &bounds, crate::store::pool::READ_REPLICA)?;
                let reads = crate::store::ReadRouter::with_replica(&pool, replica.clone())
                    .await
                    .map_err(BuildError::ReadRouting)?;
                (replica, reads)
            }
            None => (pool.clone(), crate::store::ReadRouter::primary_only()),
        };
        let reads = Arc::new(reads);
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
            reads: reads.clone(),
            committer: crate::store::GroupCommitter::with_committers(
                pool.clone(),
                cache.clone(),
                outbox_written.clone(),
                reads,
                config.group_committers,
            ),
            reader: crate::store::WalletReader::start(pool.clone(), cache.clone()),
            cache,
            outbox_written,
        };
        crate::store::db::ensure_partitions(&pool)
            .await
            .map_err(BuildError::Partitions)?;
        // Before any actor loads a head: rows written before chains existed are chained once (sql/V10).
        // With `AUDIT_CHAIN=off` (measurement only) nothing is chained, old rows included.
        if config.audit_chain {
            match crate::service::audit::Auditor::new(pool.clone())
                .chain_unchained()
                .await
            {
                Ok(0) => {}
                Ok(n) => info!(rows = n, "ledger rows written before chains are now chained"),
                Err(e) => return Err(BuildError::Chain(e)),
            }
        } else {
            warn!("AUDIT_CHAIN=off: rows are written unchained (for measurement only; this database will not verify)");
        }
        let limits = Limits {
            idle_timeout: config.actor_idle_timeout,
            max_live_actors: config.actor_max_live,
            alert_thresholds: Arc::from(config.alert_thresholds.as_slice()),
            hold_overcapture_percent: config.hold_overcapture_percent,
            monitor: config.monitor.clone(),
            audit_chain: config.audit_chain,
            reply_timeout: config.timeouts.reply,
            ..Limits::default()
        };
        let engine = Engine::start(Arc::new(store.clone()), limits).await?;
        let listener = listen(config.port).map_err(|source| BuildError::Bind {
            port: config.port,
            source,
        })?;
        let metrics_listener = match config.transport.metrics_port {
            Some(port) => Some(listen(port).map_err(|source| BuildError::BindMetrics { port, source })?),
            None => None,
        };
        let service = Arc::new(Service::new(
            engine,
            store,
            Settings {
                pii,
                default_currency: config.default_currency,
                default_budgets: config.default_budgets.clone(),
                max_initial_balance: config.max_initial_balance,
            },
        ));
        let ctx = Arc::new(Ctx {
            auth,
            service,
            rate_limiter: config.rate_limit_per_second.map(|rate| {
                let burst = rate.saturating_mul(
                    std::num::NonZeroU32::new(crate::config::RATE_LIMIT_BURST_FACTOR)
                        .unwrap_or(std::num::NonZeroU32::MIN),
                );
                governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
            }),
            events: Arc::new(crate::events::EventsState::new(config.amqp_url.is_some())),
            metrics,
            latencies: Default::default(),
        });
        let events = crate::events::Setup {
            amqp_url: config.amqp_url.clone(),
            config: events,
        };
        Ok(App {
            listener,
            metrics_listener,
            tls,
            ctx,
            events,
            drain: config.timeouts.shutdown_drain,
            spend_fold_every: config.spend_fold_every,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The bound `METRICS_PORT` (`None` without one: `/metrics` is on [`App::port`]).
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener
            .as_ref()
            .map(|l| l.local_addr().map(|a| a.port()).unwrap_or(0))
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
            metrics_listener,
            tls,
            ctx,
            events,
            drain,
            spend_fold_every,
        } = self;
        info!(
            port = listener.local_addr().map(|a| a.port()).unwrap_or(0),
            tls = tls.is_some(),
            metrics_port = metrics_listener
                .as_ref()
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.port()),
            "listening"
        );
        let upkeep = tokio::spawn(partition_upkeep(ctx.service.store().pool.clone()));
        let sweep = tokio::spawn(budget_expiry(ctx.clone()));
        let hold_sweep = tokio::spawn(hold_expiry(ctx.service.clone()));
        let checkpoints = tokio::spawn(audit_checkpoints(ctx.service.auditor()));
        let spend_fold = tokio::spawn(spend_fold(ctx.service.clone(), spend_fold_every));
        let stop = tokio_util::sync::CancellationToken::new();
        let adapter = Arc::new(crate::events::Ctx {
            service: ctx.service.clone(),
            events: ctx.events.clone(),
        });
        let mut events = crate::events::start(adapter, events, stop.clone());
        let server = serve_api(listener, tls, metrics_listener.is_some(), ctx.clone(), stop.clone());
        // Metrics on their own port stop with the API; a scrape in flight finishes within the drain.
        let metrics_server = metrics_listener.map(|l| {
            tokio::spawn(
                warp::serve(crate::http::metrics_routes(ctx.clone()))
                    .incoming(l)
                    .graceful(stop.clone().cancelled_owned())
                    .run(),
            )
        });
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
            if let Some(m) = metrics_server {
                // A metrics task that panicked has nothing left to drain.
                let _ = m.await;
            }
            events.consumer_stopped().await;
            info!("HTTP and events drained; stopping the engine");
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            ctx.service.shutdown(left).await
        })
        .await;
        if !matches!(drained, Ok(true)) {
            // What is still running is bounded on the server by statement_timeout, and cancelled once our
            // connections close (client_connection_check_interval): nothing commits long after exit.
            warn!("the drain deadline passed before all work finished; exiting anyway");
        }
        upkeep.abort();
        sweep.abort();
        hold_sweep.abort();
        checkpoints.abort();
        spend_fold.abort();
        events.finish().await;
    }
}

/// Connections the kernel queues on a listening socket before they are accepted (tokio's own default).
const LISTEN_BACKLOG: u32 = 1024;

/// A listening socket on every interface whose accepted connections have `TCP_NODELAY`. warp accepts the
/// connections itself, so the option is set on the listener, which Linux copies to every socket it accepts.
/// Without it, a reply written while the previous one on the connection is still unacknowledged — pipelined
/// HTTP/1.1 requests, concurrent HTTP/2 streams — waits for the client's delayed ACK, about 40 ms
/// (docs/BENCHMARKS.md, "Syscalls per request"); every reply is written whole, so nothing is gained by
/// holding one back.
pub fn listen(port: u16) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    // As `TcpListener::bind` does on Unix: a restarted process binds at once despite old connections.
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(SocketAddr::from(([0, 0, 0, 0], port)))?;
    socket.listen(LISTEN_BACKLOG)
}

/// The API port until `stop` is cancelled, then its drain: plain HTTP through warp, or TLS 1.3 through
/// [`crate::tls`] (the same routes either way).
async fn serve_api(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics_elsewhere: bool,
    ctx: Arc<Ctx>,
    stop: tokio_util::sync::CancellationToken,
) {
    use warp::{Filter, Reply};
    let metrics_at = if metrics_elsewhere {
        crate::http::MetricsAt::OwnPort
    } else {
        crate::http::MetricsAt::ApiPort
    };
    let routes = crate::http::routes(ctx, metrics_at);
    match tls {
        None => {
            warp::serve(routes)
                .incoming(listener)
                .graceful(stop.cancelled_owned())
                .run()
                .await
        }
        Some(acceptor) => {
            let routes = routes.map(Reply::into_response).boxed();
            crate::tls::serve(listener, acceptor, routes, stop.cancelled_owned()).await
        }
    }
}

async fn partition_upkeep(pool: crate::store::Pool) {
    let mut tick = tokio::time::interval(crate::store::db::PARTITION_UPKEEP_EVERY);
    tick.tick().await; // the first tick is immediate; build already ran it
    loop {
        tick.tick().await;
        match crate::store::db::ensure_partitions(&pool).await {
            Ok(n) if n > 0 => info!(created = n, "transaction partitions created"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "partition upkeep failed; will retry"),
        }
        match crate::store::db::prune_idempotency_keys(&pool).await {
            Ok(n) if n > 0 => info!(pruned = n, "old idempotency keys pruned"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "idempotency key pruning failed; will retry"),
        }
        match crate::store::db::prune_inbox(&pool).await {
            Ok(n) if n > 0 => info!(pruned = n, "old inbox rows pruned"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "inbox pruning failed; will retry"),
        }
    }
}

/// Marks budgets past their end EXPIRED, periodically (the actor also checks dates at use).
async fn budget_expiry(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(crate::service::budgets::EXPIRY_SWEEP_EVERY);
    loop {
        tick.tick().await;
        if let Some(limiter) = &ctx.rate_limiter {
            // Forget callers whose buckets are full again, so the limiter's memory stays bounded.
            limiter.retain_recent();
        }
        match crate::service::budgets::sweep_expired(&ctx.service).await {
            Ok(n) if n > 0 => info!(expired = n, "budgets expired"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "budget expiry sweep failed; will retry"),
        }
    }
}

/// Writes the expiry of holds past their `expires_at`, periodically (a hold already reserves nothing from
/// that instant on; this writes its status and release, and publishes `HoldReleased`).
async fn hold_expiry(service: Arc<crate::service::Service>) {
    let mut tick = tokio::time::interval(crate::service::holds::HOLD_SWEEP_EVERY);
    loop {
        tick.tick().await;
        match service.sweep_expired_holds().await {
            Ok(n) if n > 0 => info!(expired = n, "holds expired"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "hold expiry sweep failed; will retry"),
        }
    }
}

/// Folds new ledger rows into the spend aggregates periodically (see `store::spend`).
/// Metrics: `wallet_spend_fold_duration_seconds{outcome}` (`folded`, `busy`: another instance folds, `failed`)
/// and `wallet_spend_fold_rows_total`.
async fn spend_fold(service: Arc<crate::service::Service>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        let outcome = match service.fold_spend().await {
            Ok(crate::store::Fold::Folded { rows, horizon }) => {
                metrics::counter!("wallet_spend_fold_rows_total").increment(rows.unsigned_abs());
                if rows > 0 {
                    debug!(rows, horizon, "ledger rows folded into the spend aggregates");
                }
                "folded"
            }
            Ok(crate::store::Fold::Busy) => "busy",
            Err(e) => {
                warn!(error = %e, "spend fold failed; will retry");
                "failed"
            }
        };
        metrics::histogram!(crate::telemetry::SPEND_FOLD_METRIC, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
    }
}

/// Writes an audit checkpoint periodically: the Merkle root over the wallet heads that moved since the
/// last one (none written when none moved).
async fn audit_checkpoints(auditor: crate::service::audit::Auditor) {
    let mut tick = tokio::time::interval(crate::service::audit::CHECKPOINT_EVERY);
    tick.tick().await; // the first tick is immediate: a checkpoint at every start is noise
    loop {
        tick.tick().await;
        match auditor.create_checkpoint().await {
            Ok(Some(c)) => {
                info!(checkpoint_id = c.checkpoint_id, wallets = c.wallets, root = %c.root, "audit checkpoint written")
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "audit checkpoint failed; will retry"),
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
    #[tokio::test]
    async fn a_connection_accepted_on_the_api_listener_sends_small_replies_at_once() {
        let listener = super::listen(0).expect("binds a free port");
        let port = listener.local_addr().expect("bound").port();
        let _client = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connects");
        let (accepted, _) = listener.accept().await.expect("accepts");
        assert!(
            accepted.nodelay().expect("reads TCP_NODELAY"),
            "the accepted connection must not hold replies back for the client's ACK (Nagle)"
        );
    }
}
