//! Test harness: each test gets its own database (created from `TEST_DATABASE_URL`, dropped when the
//! [`TestDb`] goes away, even after a panic) and its own app on port 0.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;
use wallet_service::app::App;
use wallet_service::auth::{AuthConfig, Caller, KeySource, Role, mint_hs256};
use wallet_service::config::{Config, LogFormat};
use wallet_service::http::Ctx;

pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";
pub const ISSUER: &str = "user-management";
pub const AUDIENCE: &str = "wallet-service";

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Replaces the database name of a URL.
fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database URL has a path");
    let query = url.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    format!("{base}/{db}{query}")
}

/// A database of its own for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = format!("wallet_test_{}", Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
            .await
            .expect("TEST_DATABASE_URL must reach a Postgres server (scripts/test.sh starts one)");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        TestDb {
            url: with_db(&admin_url(), &name),
            name,
        }
    }

    /// A plain connection to this test's database, for assertions on rows.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect test db");
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context guarantees; use a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

pub fn config(db_url: &str) -> Config {
    Config {
        port: 0,
        database_url: db_url.to_string(),
        database_read_url: None,
        pool_size: 10,
        redis_url: None,
        amqp_url: None,
        auth: AuthConfig {
            key: KeySource::Hs256Secret(SECRET.as_bytes().to_vec()),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
        },
        pii_key_b64: None,
        log_format: LogFormat::Text,
        actor_idle_timeout: Duration::from_secs(60),
        actor_max_live: wallet_actors::supervisor::MAX_LIVE_ACTORS,
        default_currency: wallet_actors::Currency::Usd,
        max_initial_balance: wallet_service::config::DEFAULT_MAX_INITIAL_BALANCE,
        default_budgets: vec![],
        alert_thresholds: vec![80, 100],
        rate_limit_per_second: None,
        amqp_prefetch: wallet_service::events::PREFETCH,
        timeouts: Default::default(),
    }
}

/// A running app on port 0.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub http: reqwest::Client,
    pub ctx: Arc<Ctx>,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: Option<JoinHandle<()>>,
    /// Keeps the database alive as long as the app (the first app of a database owns it).
    pub db: Option<Arc<TestDb>>,
    pub db_url: String,
    pub admin_token: String,
    pub service_token: String,
}

/// Starts the real app against a fresh database.
pub async fn spawn_app() -> TestApp {
    let db = Arc::new(TestDb::new().await);
    spawn_app_with(db.clone(), config(&db.url)).await
}

/// Starts another app (another "process") over the same database.
pub async fn spawn_app_with(db: Arc<TestDb>, cfg: Config) -> TestApp {
    let db_url = cfg.database_url.clone();
    let app = App::build(cfg).await.expect("app builds");
    let port = app.port();
    let ctx = app.ctx();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        http: reqwest::Client::new(),
        ctx,
        shutdown: Some(tx),
        handle: Some(handle),
        db: Some(db),
        db_url,
        admin_token: token(Role::Admin, Uuid::new_v4(), Uuid::new_v4()),
        service_token: token(Role::Service, Uuid::new_v4(), Uuid::new_v4()),
    }
}

/// A valid token for a caller.
pub fn token(role: Role, sub: Uuid, company: Uuid) -> String {
    mint_hs256(
        SECRET.as_bytes(),
        ISSUER,
        AUDIENCE,
        &Caller {
            user_id: sub,
            role,
            company_id: company,
        },
        Duration::from_secs(600),
    )
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Sends SIGTERM's equivalent and waits for the app to drain and stop.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
        }
    }

    /// Signals shutdown without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn put_user(&self, user_id: Uuid, company_id: Uuid, role: &str) -> reqwest::Response {
        self.http
            .put(self.url(&format!("/users/{user_id}")))
            .bearer_auth(&self.admin_token)
            .json(&json!({"email": format!("{user_id}@example.com"), "company_id": company_id, "role": role}))
            .send()
            .await
            .expect("request")
    }

    /// Records a user and creates their wallet; returns (user_id, company_id, wallet_id).
    pub async fn user_with_wallet(&self, balance: &str, currency: &str) -> (Uuid, Uuid, Uuid) {
        let (user, company) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(self.put_user(user, company, "user").await.status(), 200);
        let res = self
            .http
            .post(self.url("/wallets"))
            .bearer_auth(&self.admin_token)
            .json(&json!({"user_id": user, "initial_balance": balance, "currency": currency}))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.expect("json");
        let wallet = body["wallet_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .expect("wallet_id");
        (user, company, wallet)
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

    pub async fn balance(&self, wallet: Uuid) -> String {
        let c = self.db.as_ref().expect("db").client().await;
        let row = c
            .query_one("SELECT balance::text FROM wallets WHERE wallet_id = $1", &[&wallet])
            .await
            .expect("wallet row");
        row.get(0)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

// ---- helpers for the API tests (tests/api_*.rs) ----

/// The status and JSON body of a reply.
pub async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, body)
}

/// Asserts an `application/problem+json` reply with this status and `code`; returns its body.
pub async fn expect_problem(res: reqwest::Response, status: u16, code: &str) -> Value {
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (got, body) = json_of(res).await;
    assert_eq!((got, body["code"].as_str()), (status, Some(code)), "reply: {body}");
    assert_eq!(content_type, "application/problem+json", "reply: {body}");
    assert_eq!(body["status"], status, "reply: {body}");
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// A connection to the server's maintenance database (for ALTER/DROP DATABASE and pg_stat_activity).
pub async fn admin_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
        .await
        .expect("connect admin db");
    tokio::spawn(conn);
    client
}

impl TestApp {
    /// One `SELECT count(*) ...` (or any single bigint) on this app's database.
    pub async fn count(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
        let c = self.db.as_ref().expect("db").client().await;
        c.query_one(sql, params).await.expect("count query").get(0)
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
}
