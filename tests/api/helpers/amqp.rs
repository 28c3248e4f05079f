//! RabbitMQ for one test: a vhost of its own (created through the management API, deleted with everything
//! in it when the guard drops, even after a panic), the broker closing a connection as a restart or a
//! network cut would, and the test's own connection: it publishes booking and user events as the other
//! services do, taps `wallet.events` and reads the dead-letter queue.
//!
//! `TEST_RABBITMQ_MGMT` (`http://user:pass@host:15672`) and `TEST_AMQP_HOST` (`host:5672`) point elsewhere
//! than the local defaults.

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
use tokio::task::JoinHandle;
use uuid::Uuid;
use wallet_service::events::Topology;

use super::WAIT;
use super::app::{AppBuilder, TestApp};

/// The management API's base URL without credentials, and the credentials (reqwest would send an
/// Authorization header of its own for credentials in the URL, beside ours, and RabbitMQ answers 400).
fn management() -> (String, String, String) {
    let raw = std::env::var("TEST_RABBITMQ_MGMT").unwrap_or_else(|_| "http://127.0.0.1:15672".into());
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

fn amqp_host() -> String {
    std::env::var("TEST_AMQP_HOST").unwrap_or_else(|_| "127.0.0.1:5672".into())
}

/// A request to the management API, authenticated.
fn api(method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    let (base, user, pass) = management();
    reqwest::Client::new()
        .request(method, format!("{base}/api/{path}"))
        .basic_auth(user, Some(pass))
}

/// Attempts to create a vhost before the test fails.
const VHOST_CREATE_ATTEMPTS: u64 = 5;

pub struct Vhost {
    pub name: String,
}

impl Vhost {
    pub async fn create() -> Vhost {
        let name = format!("wallet_test_{}", Uuid::new_v4().simple());
        let mut last = String::new();
        for attempt in 1..=VHOST_CREATE_ATTEMPTS {
            let res = api(reqwest::Method::PUT, &format!("vhosts/{name}"))
                .send()
                .await
                .expect("the RabbitMQ management API is reachable (scripts/test.sh enables it)");
            if res.status().is_success() {
                last.clear();
                break;
            }
            last = format!("{} {}", res.status(), res.text().await.unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
        }
        assert!(last.is_empty(), "create vhost {name}: {last}");
        let vhost = Vhost { name };
        vhost.grant().await;
        vhost
    }

    /// Lets the test's user (whom the service connects as) use the vhost.
    pub async fn grant(&self) {
        let (_, user, _) = management();
        let res = api(reqwest::Method::PUT, &format!("permissions/{}/{user}", self.name))
            .json(&json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .expect("set permissions");
        assert!(
            res.status().is_success(),
            "permissions on {}: {}",
            self.name,
            res.status()
        );
    }

    /// Takes the user's permissions on the vhost away: from then on every connection to it is refused, as
    /// to a broker that is down, while the vhost's queues and their messages stay.
    pub async fn revoke(&self) {
        let (_, user, _) = management();
        let res = api(reqwest::Method::DELETE, &format!("permissions/{}/{user}", self.name))
            .send()
            .await
            .expect("delete permissions");
        assert!(res.status().is_success(), "revoke on {}: {}", self.name, res.status());
    }

    /// The AMQP URL of this vhost, for the service (`AMQP_URL`) and the test's publisher.
    pub fn amqp_url(&self) -> String {
        let (_, user, pass) = management();
        format!("amqp://{user}:{pass}@{}/{}", amqp_host(), self.name)
    }

    /// The broker's names of the open connections whose client-given name contains `part`.
    pub async fn connections(&self, part: &str) -> Vec<String> {
        let Ok(res) = api(reqwest::Method::GET, &format!("vhosts/{}/connections", self.name))
            .send()
            .await
        else {
            return vec![];
        };
        let list: Value = res.json().await.unwrap_or(Value::Null);
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                c["client_properties"]["connection_name"]
                    .as_str()
                    .is_some_and(|n| n.contains(part))
            })
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect()
    }

    /// Closes a connection from the broker's side.
    pub async fn close_connection(&self, name: &str) {
        let (base, _, _) = management();
        let mut url = reqwest::Url::parse(&format!("{base}/api/connections/")).expect("url");
        url.path_segments_mut().expect("a base URL").pop_if_empty().push(name);
        let (_, user, pass) = management();
        let res = reqwest::Client::new()
            .delete(url)
            .basic_auth(user, Some(pass))
            .header("X-Reason", "closed by a test")
            .send()
            .await
            .expect("close the connection");
        assert!(
            res.status().is_success() || res.status() == 404,
            "close connection {name}: {}",
            res.status()
        );
    }

    /// Messages of a queue that are delivered and not yet acknowledged, as the management API reports them
    /// (its statistics lag by a few seconds).
    pub async fn unacknowledged(&self, queue: &str) -> Option<i64> {
        let res = api(reqwest::Method::GET, &format!("queues/{}/{queue}", self.name))
            .send()
            .await
            .ok()?;
        let q: Value = res.json().await.ok()?;
        q["messages_unacknowledged"].as_i64()
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
                let _ = api(reqwest::Method::DELETE, &format!("vhosts/{name}")).send().await;
            });
        })
        .join();
    }
}

/// The usual start of an event test: a vhost of its own, the app on it (as `app` says otherwise) with its
/// consumer attached, and the test's own connection to the vhost. Keep the vhost until the end of the test.
pub async fn app_on_vhost(app: AppBuilder) -> (Vhost, TestApp, Broker) {
    let vhost = Vhost::create().await;
    let app = attached_on(&vhost, app).await;
    let broker = Broker::connect(&vhost).await;
    (vhost, app, broker)
}

/// The app on this vhost, once its consumer is attached.
pub async fn attached_on(vhost: &Vhost, app: AppBuilder) -> TestApp {
    let app = app.amqp(&vhost.amqp_url()).spawn().await;
    app.attached().await;
    app
}

/// `{event_id, event_type, timestamp, data}`.
pub fn envelope(event_id: Uuid, event_type: &str, data: Value) -> Value {
    json!({"event_id": event_id, "event_type": event_type, "timestamp": chrono::Utc::now().to_rfc3339(), "data": data})
}

/// A message of the dead-letter queue: its body and the service's headers.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub reason: Option<String>,
    pub attempts: Option<i64>,
    pub original_routing_key: Option<String>,
    pub body: Vec<u8>,
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

/// The test's own connection to the vhost: publishes as the booking and user services do (persistent,
/// confirmed).
pub struct Broker {
    conn: Connection,
    pub ch: Channel,
    pub topology: Topology,
}

impl Broker {
    pub async fn connect(vhost: &Vhost) -> Broker {
        let conn = Connection::connect(
            &vhost.amqp_url(),
            ConnectionProperties::default().with_connection_name("test client".into()),
        )
        .await
        .expect("the test connects to RabbitMQ");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("publisher confirms");
        Broker {
            conn,
            ch,
            topology: Topology::default(),
        }
    }

    /// Publishes raw bytes and waits for the broker's confirm.
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
        assert!(confirm.is_ack(), "the broker confirms the test's message");
    }

    /// Publishes `body` to the booking exchange with `key`.
    pub async fn publish_booking(&self, key: &str, body: &[u8], message_id: Option<Uuid>) {
        let exchange = self.topology.booking_exchange.clone();
        self.publish_raw(&exchange, key, body, message_id.map(|id| id.to_string()))
            .await;
    }

    /// Publishes an event envelope; returns its event id.
    pub async fn publish_event(&self, event_id: Uuid, event_type: &str, data: Value) -> Uuid {
        let (exchange, key) = match event_type {
            "BookingCreated" => (&self.topology.booking_exchange, "booking.created"),
            "BookingCancelled" => (&self.topology.booking_exchange, "booking.cancelled"),
            "BookingConfirmed" => (&self.topology.booking_exchange, "booking.confirmed"),
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

    /// Messages ready in a queue (a passive declare on a channel of its own: exact, no statistics lag).
    /// Unacknowledged ones are not counted; once the app's connection is closed they would be ready again,
    /// so after a stop a zero means every delivery was acked.
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
            .expect("the queue exists");
        let _ = ch.close(200, "ok".into()).await;
        q.message_count()
    }

    /// Messages ready in the service's own queue ([`Broker::ready_count`]).
    pub async fn ready_in_queue(&self) -> u32 {
        self.ready_count(&self.topology.queue).await
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
                Some(other) => Some(format!("{other:?}")),
                None => None,
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

/// What a [`Broker::tap`] has seen on `wallet.events`.
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

    /// Waits for a message matching `pred` and returns it; fails the test after [`WAIT`].
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
