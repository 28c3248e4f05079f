//! The real app in-process: `App::build` and `run` on port 0, against a database of its own (dropped after
//! the test, even after a panic), with the tests' configuration. [`spawn_app`] starts the usual one;
//! [`TestApp::builder`] the variants (another instance over the same database, a broker, Redis, the events'
//! retries, any other setting). Without a broker the app's events go to its in-process bus.
//!
//! This file is the only door of the tests to the service's internals: [`config`] alone builds a
//! `Config` ([`fast_events`] the events' settings), and the `TestApp` methods under "internals" alone reach
//! into the app's context (the engine, the store, the event state). The test modules speak HTTP, SQL and
//! these methods.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;
use wallet_actors::Engine;
use wallet_service::app::App;
use wallet_service::auth::{AuthConfig, KeySource};
use wallet_service::config::{Config, LogFormat};
use wallet_service::events::handler;
use wallet_service::events::{BusEvent, EventsConfig, RetryPolicy};
use wallet_service::http::Ctx;
use wallet_service::service::Service;
use wallet_service::store::PgStore;
use wallet_service::store::Pool;

use super::database::TestDatabase;
use super::fixtures::{self, Bank};
use super::wait_until;

// The types of the internals' methods below, named here so that the test modules need not name their paths.
pub use wallet_service::events::handler::{Done, Outcome};
pub use wallet_service::service::Posting;

/// How long a graceful stop may take.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// The app's configuration in tests: port 0, this database, HS256 with the tests' secret, no Redis, no
/// broker (the in-process bus), text logs.
pub fn config(database_url: &str) -> Config {
    Config {
        port: 0,
        database_url: database_url.to_string(),
        database_read_url: None,
        pool_size: 10,
        redis_url: None,
        amqp_url: None,
        auth: AuthConfig {
            key: KeySource::Hs256Secret(fixtures::JWT_SECRET.as_bytes().to_vec()),
            issuer: fixtures::ISSUER.into(),
            audience: fixtures::AUDIENCE.into(),
        },
        pii_key_b64: None,
        log_format: LogFormat::Text,
        actor_idle_timeout: Duration::from_secs(60),
        actor_max_live: wallet_actors::supervisor::MAX_LIVE_ACTORS,
        default_currency: wallet_actors::Currency::Usd,
        default_budgets: vec![],
        max_initial_balance: wallet_service::config::DEFAULT_MAX_INITIAL_BALANCE,
        alert_thresholds: vec![80, 100],
        hold_overcapture_percent: 0,
        audit_chain: true,
        monitor: wallet_actors::monitor::MonitorLimits::default(),
        rate_limit_per_second: None,
        amqp_prefetch: wallet_service::events::PREFETCH,
        booking_shards: 0,
        group_committers: wallet_service::store::GROUP_COMMITTERS,
        spend_fold_every: wallet_service::service::reports::SPEND_FOLD_EVERY,
        timeouts: Default::default(),
        transport: Default::default(),
    }
}

/// The events' settings with short retry delays and relay interval, so that bounded retries end quickly.
pub fn fast_events() -> EventsConfig {
    EventsConfig {
        retry: RetryPolicy {
            max_attempts: 4,
            delay_min: Duration::from_millis(50),
            delay_max: Duration::from_millis(200),
        },
        relay_interval: Duration::from_millis(50),
        ..EventsConfig::default()
    }
}

/// Starts the app against a fresh database.
pub async fn spawn_app() -> TestApp {
    TestApp::builder().spawn().await
}

/// A change to [`config`] for one app.
type Configure = Box<dyn FnOnce(&mut Config)>;

/// An app to start: its database and what differs from [`config`].
#[must_use]
pub struct AppBuilder {
    db: Option<Arc<TestDatabase>>,
    redis_url: Option<String>,
    amqp_url: Option<String>,
    events: Option<EventsConfig>,
    configure: Option<Configure>,
}

impl AppBuilder {
    /// Over this database (another "process" of the same deployment) instead of a fresh one.
    pub fn database(mut self, db: &Arc<TestDatabase>) -> AppBuilder {
        self.db = Some(db.clone());
        self
    }

    /// With the shared wallet cache in this Redis.
    pub fn redis(mut self, url: &str) -> AppBuilder {
        self.redis_url = Some(url.to_string());
        self
    }

    /// With its events on this broker (consumed from and published to it).
    pub fn amqp(mut self, url: &str) -> AppBuilder {
        self.amqp_url = Some(url.to_string());
        self
    }

    /// With these events' settings (names, retries, prefetch, intervals) instead of the defaults.
    pub fn events(mut self, events: EventsConfig) -> AppBuilder {
        self.events = Some(events);
        self
    }

    /// Any other setting.
    pub fn configure(mut self, f: impl FnOnce(&mut Config) + 'static) -> AppBuilder {
        self.configure = Some(Box::new(f));
        self
    }

    /// Builds the app and expects the build to fail (a configuration it must refuse); the error's text.
    pub async fn refused(self) -> String {
        let (_db, built) = self.build().await;
        match built {
            Ok(_) => panic!("the app built, but it should have refused its configuration"),
            Err(e) => e.to_string(),
        }
    }

    async fn build(self) -> (Arc<TestDatabase>, Result<App, wallet_service::app::BuildError>) {
        let db = match self.db {
            Some(db) => db,
            None => Arc::new(TestDatabase::create().await),
        };
        let mut cfg = config(&db.url);
        cfg.redis_url = self.redis_url;
        cfg.amqp_url = self.amqp_url;
        if let Some(f) = self.configure {
            f(&mut cfg);
        }
        let app = match self.events {
            Some(events) => App::build_with_events(cfg, events).await,
            None => App::build(cfg).await,
        };
        (db, app)
    }

    /// Builds the app (migrations included) and serves it on a task of its own.
    pub async fn spawn(self) -> TestApp {
        let (db, app) = self.build().await;
        let app = app.expect("app builds");
        let port = app.port();
        let metrics_port = app.metrics_port();
        let ctx = app.ctx();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        let address = format!("http://127.0.0.1:{port}");
        let admin_token = fixtures::admin_token();
        TestApp {
            bank: Bank::with_admin(&address, &admin_token),
            address,
            port,
            metrics_port,
            http: reqwest::Client::new(),
            db,
            admin_token,
            service_token: fixtures::service_token(),
            ctx,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }
}

/// A running app.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// `METRICS_PORT`'s bound port, when the app has one.
    pub metrics_port: Option<u16>,
    pub http: reqwest::Client,
    /// The app's database; it lives as long as the last app over it.
    pub db: Arc<TestDatabase>,
    pub admin_token: String,
    pub service_token: String,
    bank: Bank,
    ctx: Arc<Ctx>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestApp {
    /// An app to start, as [`spawn_app`] does unless told otherwise.
    pub fn builder() -> AppBuilder {
        AppBuilder {
            db: None,
            redis_url: None,
            amqp_url: None,
            events: None,
            configure: None,
        }
    }

    /// Another instance over this app's database.
    pub fn another(&self) -> AppBuilder {
        TestApp::builder().database(&self.db)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Signals shutdown (SIGTERM's equivalent) without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits until the event consumer is attached (its topology then exists).
    pub async fn attached(&self) {
        wait_until("the consumer attaches", || async { self.consumer_attached() }).await;
    }

    /// A graceful stop, as SIGTERM: signals shutdown and waits until the app has drained and stopped.
    pub async fn stop(&mut self) {
        self.signal_shutdown();
        self.stopped(STOP_WITHIN).await;
    }

    /// Whether the app's task has ended.
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits until the app, told to shut down, has stopped cleanly; fails the test after `limit`.
    pub async fn stopped(&mut self, limit: Duration) {
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(limit, h)
                .await
                .expect("the app stops in time")
                .expect("the app's task ends cleanly");
        }
    }

    // ---- HTTP ----

    /// `GET path` without a token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    /// `GET path` with this bearer token.
    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// The body of `GET path` (without a token) as text.
    pub async fn text(&self, path: &str) -> String {
        self.get(path).await.text().await.expect("body")
    }

    /// `PUT /users/{user}` as an admin.
    pub async fn put_user(&self, user: Uuid, company: Uuid, role: &str) -> reqwest::Response {
        self.bank.put_user(user, company, role).await
    }

    /// Records a user and creates their wallet; returns (user_id, company_id, wallet_id).
    pub async fn user_with_wallet(&self, balance: &str, currency: &str) -> (Uuid, Uuid, Uuid) {
        let w = self.bank.open_wallet_in(balance, currency).await;
        (w.user_id, w.company_id, w.wallet_id)
    }

    /// `n` users, each with a wallet of `balance` USD; their wallet ids.
    pub async fn wallet_ids(&self, n: usize, balance: &str) -> Vec<Uuid> {
        self.bank.open_wallet_ids(n, balance).await
    }

    /// Sets a MONTHLY budget of `total` on `wallet` as an admin (`fixtures::budget_body`); the created budget.
    pub async fn monthly_budget(&self, wallet: Uuid, total: &str) -> Value {
        let res = self
            .http
            .post(self.url("/budgets"))
            .bearer_auth(&self.admin_token)
            .json(&fixtures::budget_body(wallet, total))
            .send()
            .await
            .expect("request");
        let status = res.status();
        let body: Value = res.json().await.expect("a JSON body");
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Posts a credit/debit as the service caller.
    pub async fn post_txn(&self, wallet: Uuid, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/wallets/{wallet}/transactions")))
            .bearer_auth(&self.service_token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// `POST /wallets` with this token and body.
    pub async fn create_wallet_as(&self, token: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/wallets"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    // ---- the database ----

    /// The wallet's balance as its row holds it.
    pub async fn balance(&self, wallet: Uuid) -> String {
        self.db.balance(wallet).await
    }

    /// One `SELECT count(*) ...` (or any single bigint) on this app's database.
    pub async fn count(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
        let c = self.db.client().await;
        c.query_one(sql, params).await.expect("count query").get(0)
    }

    /// `(type, amount)` of the wallet's transactions with this booking reference, oldest first.
    pub async fn booking_rows(&self, wallet: Uuid, booking: &str) -> Vec<(String, String)> {
        let c = self.db.client().await;
        c.query(
            "SELECT type, amount::text FROM transactions WHERE wallet_id = $1 AND reference_type = 'BOOKING' \
             AND reference_id = $2 ORDER BY created_at",
            &[&wallet, &booking],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }

    /// Outbox rows not yet published.
    pub async fn unpublished(&self) -> i64 {
        self.count("SELECT count(*) FROM outbox_events WHERE published_at IS NULL", &[])
            .await
    }

    // ---- internals: the only places that reach into the app's context ----

    /// `/ready`'s verdict, as the app judges it.
    pub async fn readiness(&self) -> Result<(), String> {
        self.ctx.readiness().await.map_err(|e| e.to_string())
    }

    /// What `/metrics` would answer.
    pub fn render_metrics(&self) -> String {
        self.ctx.render_metrics()
    }

    /// Hands one delivery to the event handler directly, as the consumer would (without acking anything).
    pub async fn handle_event(&self, body: &[u8], routing_key: &str) -> Outcome {
        handler::handle(&self.ctx.service, body, routing_key).await
    }

    /// Whether the event consumer is attached to its queue.
    pub fn consumer_attached(&self) -> bool {
        self.ctx.events.consumer_attached()
    }

    /// The in-process bus the relay publishes to when there is no broker.
    pub fn subscribe_events(&self) -> broadcast::Receiver<BusEvent> {
        self.ctx.events.subscribe()
    }

    /// Decrypts a stored personal field (an e-mail) with the app's key.
    pub fn decrypt_pii(&self, encrypted: &[u8]) -> String {
        self.ctx
            .service
            .pii()
            .decrypt(encrypted)
            .expect("decrypts with the app's key")
    }

    /// The use-case layer, the one path to money (postings, transfers) as HTTP and events take it,
    /// bypassing their edges.
    pub fn ledger(&self) -> Arc<Service> {
        self.ctx.service.clone()
    }

    /// The use-case layer, borrowed.
    pub fn service(&self) -> &Service {
        &self.ctx.service
    }

    /// The wallet engine (its actors and their queues).
    pub fn engine(&self) -> &Engine {
        self.ctx.service.engine()
    }

    /// The Postgres store.
    pub fn store(&self) -> &PgStore {
        self.ctx.service.store()
    }

    /// The store's pool of connections to the app's database.
    pub fn pool(&self) -> &Pool {
        &self.store().pool
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.signal_shutdown();
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}
