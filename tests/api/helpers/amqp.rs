//! RabbitMQ for one test: a vhost of its own (created through the management API, deleted with everything
//! in it when the guard drops, even after a panic), the broker closing a connection as a restart or a
//! network cut would, and a publisher of booking events that reads the dead-letter queue.
//!
//! `TEST_RABBITMQ_MGMT` (`http://user:pass@host:15672`) and `TEST_AMQP_HOST` (`host:5672`) point elsewhere
//! than the local defaults.

use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use uuid::Uuid;
use wallet_service::events::Topology;

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
        let (_, user, _) = management();
        let res = api(reqwest::Method::PUT, &format!("permissions/{name}/{user}"))
            .json(&json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .expect("set permissions");
        assert!(res.status().is_success(), "permissions on {name}: {}", res.status());
        Vhost { name }
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
            .header("X-Reason", "closed by a fault test")
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

/// `{event_id, event_type, timestamp, data}`.
pub fn envelope(event_id: Uuid, event_type: &str, data: Value) -> Value {
    json!({"event_id": event_id, "event_type": event_type, "timestamp": chrono::Utc::now().to_rfc3339(), "data": data})
}

/// A dead letter: its body and the service's reason header.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub body: Vec<u8>,
    pub reason: Option<String>,
}

/// The test's own connection: publishes as the booking service does (persistent, confirmed).
pub struct Publisher {
    _conn: Connection,
    ch: Channel,
    pub topology: Topology,
}

impl Publisher {
    pub async fn connect(vhost: &Vhost) -> Publisher {
        let conn = Connection::connect(
            &vhost.amqp_url(),
            ConnectionProperties::default().with_connection_name("fault test publisher".into()),
        )
        .await
        .expect("the test connects to RabbitMQ");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("publisher confirms");
        Publisher {
            _conn: conn,
            ch,
            topology: Topology::default(),
        }
    }

    /// Publishes `body` to the booking exchange with `key`, and waits for the broker's confirm.
    pub async fn publish_booking(&self, key: &str, body: &[u8], message_id: Option<Uuid>) {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        if let Some(id) = message_id {
            props = props.with_message_id(id.to_string().into());
        }
        let confirm = self
            .ch
            .basic_publish(
                self.topology.booking_exchange.as_str().into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "the broker confirms the test's message");
    }

    /// Messages ready in a queue (a passive declare: exact, no statistics lag).
    pub async fn ready(&self, queue: &str) -> u32 {
        let q = self
            .ch
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
        q.message_count()
    }

    /// Takes every message now in the dead-letter queue.
    pub async fn take_dead_letters(&self) -> Vec<DeadLetter> {
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
            let reason = m
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-death-reason").cloned())
                .map(|v| match v {
                    lapin::types::AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    lapin::types::AMQPValue::ShortString(s) => s.as_str().to_string(),
                    other => format!("{other:?}"),
                });
            out.push(DeadLetter {
                body: m.delivery.data.clone(),
                reason,
            });
        }
        out
    }
}
