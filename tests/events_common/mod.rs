//! Support for the event tests (`tests/events_*.rs`): a RabbitMQ vhost of its own per test (created
//! through the management API, deleted when the guard drops, even after a panic), an app wired to it,
//! a publisher of booking/user events, a tap on `wallet.events` and readers of the dead-letter queue.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;
use wallet_actors::{Amount, Currency, Origin};
use wallet_service::app::App;
use wallet_service::auth::Role;
use wallet_service::config::Config;
use wallet_service::events::{EventsConfig, RetryPolicy, Topology};
use wallet_service::http::Ctx;

use crate::common::{self, TestDb};

pub const MGMT: &str = "http://127.0.0.1:15672";
pub const AMQP_HOST: &str = "127.0.0.1:5672";
/// How long a test waits for something asynchronous before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The management API's base URL *without* credentials, and the credentials. `TEST_RABBITMQ_MGMT` may
/// carry them in the URL (`http://user:pass@host:15672`); reqwest would then send an Authorization header
/// of its own beside ours, and RabbitMQ answers 400 to a request with two.
fn mgmt() -> (String, String, String) {
    let raw = std::env::var("TEST_RABBITMQ_MGMT").unwrap_or_else(|_| MGMT.into());
    match reqwest::Url::parse(&raw) {
        Ok(mut url) if !url.username().is_empty() => {
            let user = url.username().to_string();
            let pass = url.password().unwrap_or_default().to_string();
            let _ = url.set_username("");
            let _ = url.set_password(None);
            (url.as_str().trim_end_matches('/').to_string(), user, pass)
        }
        _ => (raw.trim_end_matches('/').to_string(), "guest".into(), "guest".into()),
    }
}

fn mgmt_url() -> String {
    mgmt().0
}

/// Credentials for the management API.
fn mgmt_user() -> String {
    mgmt().1
}

fn mgmt_pass() -> String {
    mgmt().2
}

fn amqp_host() -> String {
    std::env::var("TEST_AMQP_HOST").unwrap_or_else(|_| AMQP_HOST.into())
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// Attempts to create a test vhost before giving up.
const VHOST_CREATE_ATTEMPTS: usize = 5;

/// A RabbitMQ vhost for one test; everything in it goes with it.
pub struct Vhost {
    pub name: String,
}

impl Vhost {
    pub async fn new() -> Vhost {
        let name = format!("wallet_test_{}", Uuid::new_v4().simple());
        let c = http();
        // Creation is idempotent: a transient refusal of the management API is retried a bounded number of
        // times before the test fails (with the API's answer).
        let mut last = String::new();
        for attempt in 0..VHOST_CREATE_ATTEMPTS {
            let res = c
                .put(format!("{}/api/vhosts/{name}", mgmt_url()))
                .basic_auth(mgmt_user(), Some(mgmt_pass()))
                .send()
                .await
                .expect("RabbitMQ management API reachable");
            if res.status().is_success() {
                last.clear();
                break;
            }
            last = format!("{} {}", res.status(), res.text().await.unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(200 * (attempt as u64 + 1))).await;
        }
        assert!(last.is_empty(), "create vhost {name}: {last}");
        let res = c
            .put(format!("{}/api/permissions/{name}/guest", mgmt_url()))
            .basic_auth(mgmt_user(), Some(mgmt_pass()))
            .json(&json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .expect("set permissions");
        assert!(res.status().is_success(), "permissions: {}", res.status());
        Vhost { name }
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/{}", amqp_host(), self.name)
    }

    /// Names of the AMQP connections open on this vhost whose client-given name contains `part`.
    pub async fn connections(&self, part: &str) -> Vec<String> {
        let res = http()
            .get(format!("{}/api/vhosts/{}/connections", mgmt_url(), self.name))
            .basic_auth(mgmt_user(), Some(mgmt_pass()))
            .send()
            .await
            .expect("list connections");
        let list: Value = res.json().await.expect("json");
        list.as_array()
            .map(|a| {
                a.iter()
                    .filter(|c| {
                        c["client_properties"]["connection_name"]
                            .as_str()
                            .is_some_and(|n| n.contains(part))
                    })
                    .filter_map(|c| c["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Closes connections from the broker's side (as a broker restart or a network cut would).
    pub async fn close_connection(&self, name: &str) {
        let mut url = reqwest::Url::parse(&format!("{}/api/connections/", mgmt_url())).expect("url");
        url.path_segments_mut().expect("base").pop_if_empty().push(name);
        let res = http()
            .delete(url)
            .basic_auth(mgmt_user(), Some(mgmt_pass()))
            .header("X-Reason", "closed by an events test")
            .send()
            .await
            .expect("close connection");
        assert!(
            res.status().is_success() || res.status() == 404,
            "close connection: {}",
            res.status()
        );
    }

    /// `(ready, unacknowledged)` message counts of a queue, as the management API reports them.
    pub async fn queue_counts(&self, queue: &str) -> (i64, i64) {
        let res = http()
            .get(format!("{}/api/queues/{}/{}", mgmt_url(), self.name, queue))
            .basic_auth(mgmt_user(), Some(mgmt_pass()))
            .send()
            .await
            .expect("queue info");
        let q: Value = res.json().await.expect("json");
        (
            q["messages_ready"].as_i64().unwrap_or(-1),
            q["messages_unacknowledged"].as_i64().unwrap_or(-1),
        )
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                let _ = http()
                    .delete(format!("{}/api/vhosts/{name}", mgmt_url()))
                    .basic_auth(mgmt_user(), Some(mgmt_pass()))
                    .send()
                    .await;
            });
        })
        .join();
    }
}

/// Short retry delays so that bounded retries end quickly in tests.
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

/// A running app whose events go to `amqp_url` (or to the in-process bus).
pub struct EvApp {
    pub ctx: Arc<Ctx>,
    pub port: u16,
    pub db: Arc<TestDb>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

pub async fn start_app(db: Arc<TestDb>, amqp_url: Option<String>, events: EventsConfig) -> EvApp {
    start_app_with(db.clone(), config_for(&db, amqp_url), events).await
}

pub fn config_for(db: &TestDb, amqp_url: Option<String>) -> Config {
    let mut cfg = common::config(&db.url);
    cfg.amqp_url = amqp_url;
    cfg
}

pub async fn start_app_with(db: Arc<TestDb>, cfg: Config, events: EventsConfig) -> EvApp {
    let app = App::build_with_events(cfg, events).await.expect("app builds");
    let port = app.port();
    let ctx = app.ctx();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    EvApp {
        ctx,
        port,
        db,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl EvApp {
    /// Waits until the consumer is attached (the topology then exists).
    pub async fn attached(&self) {
        wait_until("the consumer attaches", || async {
            self.ctx.events.consumer_attached()
        })
        .await;
    }

    /// Graceful stop, as SIGTERM.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("the app stops in time")
                .expect("the app task ends cleanly");
        }
    }

    /// Records a user with a wallet holding `balance` in `currency`; returns (user_id, wallet_id).
    pub async fn user_with_wallet(&self, balance: &str, currency: Currency) -> (Uuid, Uuid) {
        let user = Uuid::new_v4();
        let origin = Origin {
            actor_id: Uuid::nil(),
            role: "admin".into(),
            ..Origin::default()
        };
        self.ctx
            .service
            .record_user(
                user,
                &format!("{user}@example.com"),
                Uuid::new_v4(),
                Role::User,
                &origin,
            )
            .await
            .expect("user recorded");
        let w = self
            .ctx
            .service
            .store()
            .create_wallet(user, Amount::parse(balance).expect("amount"), currency, &origin)
            .await
            .expect("wallet created");
        (user, w.wallet_id)
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        self.db.client().await
    }

    pub async fn balance(&self, wallet: Uuid) -> String {
        let c = self.client().await;
        c.query_one("SELECT balance::text FROM wallets WHERE wallet_id = $1", &[&wallet])
            .await
            .expect("wallet row")
            .get(0)
    }

    /// `(type, amount)` of the wallet's transactions with this reference, oldest first.
    pub async fn booking_rows(&self, wallet: Uuid, booking: &str) -> Vec<(String, String)> {
        let c = self.client().await;
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

    pub async fn unpublished(&self) -> i64 {
        let c = self.client().await;
        c.query_one("SELECT count(*) FROM outbox WHERE published_at IS NULL", &[])
            .await
            .expect("count")
            .get(0)
    }
}

impl Drop for EvApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// Polls `check` until it holds, failing the test after [`WAIT`].
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A test's own AMQP connection to the vhost: publishes events like the booking and user services.
pub struct Broker {
    pub conn: Connection,
    pub ch: Channel,
    pub topology: Topology,
}

impl Broker {
    pub async fn connect(vhost: &Vhost) -> Broker {
        let conn = Connection::connect(
            &vhost.amqp_url(),
            ConnectionProperties::default().with_connection_name("events test client".into()),
        )
        .await
        .expect("test connection to RabbitMQ");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        Broker {
            conn,
            ch,
            topology: Topology::default(),
        }
    }

    /// Publishes raw bytes with publisher confirms.
    pub async fn publish_raw(&self, exchange: &str, key: &str, body: &[u8], message_id: Option<String>) {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        let confirm = self
            .ch
            .basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, props)
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "the broker acked the test message");
    }

    /// Publishes an event envelope; returns its event id.
    pub async fn publish_event(&self, event_id: Uuid, event_type: &str, data: Value) -> Uuid {
        let (exchange, key) = match event_type {
            "BookingCreated" => (&self.topology.booking_exchange, "booking.created"),
            "BookingCancelled" => (&self.topology.booking_exchange, "booking.cancelled"),
            "UserCreated" => (&self.topology.user_exchange, "user.created"),
            other => panic!("unknown event type {other}"),
        };
        let body = envelope(event_id, event_type, data);
        self.publish_raw(exchange, key, body.to_string().as_bytes(), Some(event_id.to_string()))
            .await;
        event_id
    }

    pub async fn booking_created(&self, booking: &str, user: Uuid, amount: &str, currency: &str) -> Uuid {
        self.publish_event(
            Uuid::now_v7(),
            "BookingCreated",
            json!({"booking_id": booking, "user_id": user, "amount": amount, "currency": currency, "description": "Hotel"}),
        )
        .await
    }

    pub async fn booking_cancelled(&self, booking: &str, user: Uuid, refund: Option<&str>) -> Uuid {
        let mut data = json!({"booking_id": booking, "user_id": user});
        if let Some(r) = refund {
            data["refund_amount"] = json!(r);
        }
        self.publish_event(Uuid::now_v7(), "BookingCancelled", data).await
    }

    /// Publishes many BookingCreated `(booking_id, user, amount, currency)` without waiting between
    /// them (pipelined publisher confirms), then waits for every confirm.
    pub async fn bookings_burst(&self, bookings: &[(String, Uuid, String, &str)]) {
        let mut confirms = Vec::with_capacity(bookings.len());
        for (booking, user, amount, currency) in bookings {
            let event_id = Uuid::now_v7();
            let body = envelope(
                event_id,
                "BookingCreated",
                json!({"booking_id": booking, "user_id": user, "amount": amount, "currency": currency}),
            );
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(event_id.to_string().into());
            let confirm = self
                .ch
                .basic_publish(
                    self.topology.booking_exchange.as_str().into(),
                    "booking.created".into(),
                    BasicPublishOptions::default(),
                    body.to_string().as_bytes(),
                    props,
                )
                .await
                .expect("publish");
            confirms.push(confirm);
        }
        for c in confirms {
            assert!(c.await.expect("confirm").is_ack());
        }
    }

    /// A queue of the test's own bound to `wallet.events` (all keys), collecting what is published.
    pub async fn tap(&self) -> Tap {
        let ch = self.conn.create_channel().await.expect("channel");
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("tap queue");
        ch.queue_bind(
            q.name().clone(),
            self.topology.wallet_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind tap");
        let mut consumer = ch
            .basic_consume(
                q.name().clone(),
                "tap".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume tap");
        let seen: Arc<Mutex<Vec<Published>>> = Arc::default();
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let body: Value = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
                sink.lock().unwrap().push(Published {
                    routing_key: d.routing_key.as_str().to_string(),
                    message_id: d.properties.message_id().as_ref().map(|m| m.as_str().to_string()),
                    content_type: d.properties.content_type().as_ref().map(|m| m.as_str().to_string()),
                    delivery_mode: *d.properties.delivery_mode(),
                    body,
                });
            }
        });
        Tap { seen, _ch: ch, task }
    }

    /// Messages ready in a queue (passive declare: no statistics lag). Unacknowledged ones are not
    /// counted; once the app's connection is closed they would be ready again, so after `stop` a zero
    /// means every delivery was acked.
    pub async fn ready_count(&self, queue: &str) -> u32 {
        let ch = self.conn.create_channel().await.expect("channel");
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists");
        let _ = ch.close(200, "ok".into()).await;
        q.message_count()
    }

    /// Takes every message now in the dead-letter queue.
    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        let mut out = Vec::new();
        while let Some(m) = self
            .ch
            .basic_get(
                self.topology.dead_letter_queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic_get")
        {
            let headers = m.delivery.properties.headers().clone().unwrap_or_default();
            let text = |k: &str| match headers.inner().get(k) {
                Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
                Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_string()),
                _ => None,
            };
            let attempts = match headers.inner().get("x-death-attempts") {
                Some(AMQPValue::LongLongInt(n)) => Some(*n),
                _ => None,
            };
            out.push(DeadLetter {
                reason: text("x-death-reason"),
                attempts,
                original_routing_key: text("x-original-routing-key"),
                body: m.delivery.data.clone(),
            });
        }
        out
    }
}

/// A message seen on `wallet.events`.
#[derive(Debug, Clone)]
pub struct Published {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    pub delivery_mode: Option<u8>,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub reason: Option<String>,
    pub attempts: Option<i64>,
    pub original_routing_key: Option<String>,
    pub body: Vec<u8>,
}

pub struct Tap {
    seen: Arc<Mutex<Vec<Published>>>,
    _ch: Channel,
    task: JoinHandle<()>,
}

impl Tap {
    pub fn all(&self) -> Vec<Published> {
        self.seen.lock().unwrap().clone()
    }

    pub fn of_type(&self, event_type: &str) -> Vec<Published> {
        self.all()
            .into_iter()
            .filter(|p| p.body["event_type"] == event_type)
            .collect()
    }

    /// Waits for a message matching `pred` and returns it.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Published) -> bool) -> Published {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(p) = self.all().into_iter().find(|p| pred(p)) {
                return p;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `{event_id, event_type, timestamp, data}`.
pub fn envelope(event_id: Uuid, event_type: &str, data: Value) -> Value {
    json!({"event_id": event_id, "event_type": event_type, "timestamp": chrono::Utc::now().to_rfc3339(), "data": data})
}
