//! The outbox relay: from `outbox` rows (written in the transactions of the changes they report) to
//! RabbitMQ's `wallet.events`, or to the in-process bus.
//!
//! One pass: in one transaction, take the database's relay lock (`pg_try_advisory_xact_lock`: one relay
//! at a time per database, so rows leave in `seq` order and each wallet's events in the order they
//! committed — a wallet's rows are written under its row lock, so their `seq` order is their commit
//! order), read unpublished rows in `seq` order up to about [`RELAY_BATCH`] events (a row carries one
//! commit's events, in order: `sql/V13`), publish the events in that order with publisher confirms, and
//! set `published_at` on the rows whose every event is in the confirmed prefix, then commit. The rows are
//! not locked `FOR UPDATE`: the advisory lock already keeps other relays out, and a row lock would write
//! (and WAL-log) every outbox row once more before its `published_at` update writes it again. A crash or a
//! lost connection before that commit re-sends the rows later: at-least-once, with `message_id` =
//! `event_id` for consumers to dedup. A nacked event, the rest of its row and the rows after it are sent
//! again in the next pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{BusEvent, EventsConfig, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN};
use crate::resilience::{Breaker, BreakerPolicy, backoff};
use crate::store::Pool;

/// How often the relay looks for rows when the last pass found none.
pub const RELAY_INTERVAL: Duration = Duration::from_millis(100);
/// How long a published row is kept before it is pruned.
pub const OUTBOX_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often published rows are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Longest wait for one batch's publisher confirms.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);
/// At shutdown, how long the relay keeps publishing what is left in the outbox.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

pub use crate::store::outbox::{OutboxMessage, PRUNE_BATCH, RELAY_BATCH, RELAY_LOCK_KEY, fully_published, prune};

/// Why a relay pass stopped short (logged; the rows not marked published are sent again next pass).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Claiming or marking the outbox rows failed.
    #[error("outbox: {0}")]
    Store(#[from] wallet_actors::StoreError),
    /// The broker could not be reached (connect, channel, topology, confirm mode).
    #[error("RabbitMQ: {0}")]
    Connect(lapin::Error),
    /// The sink has no connection to publish on.
    #[error("not connected")]
    NotConnected,
    /// A publish was refused by the client library (the channel closed).
    #[error("publish: {0}")]
    Publish(lapin::Error),
    /// Waiting for a publisher confirm failed.
    #[error("confirm: {0}")]
    Confirm(lapin::Error),
    #[error("the broker nacked a message")]
    Nacked,
    #[error("publisher confirms timed out")]
    ConfirmTimeout,
    /// The broker failed repeatedly; nothing is tried until the breaker's next probe.
    #[error(transparent)]
    BreakerOpen(#[from] crate::resilience::Open),
    /// The column is `json`, so Postgres validated it; this would be a programmer error.
    #[error("outbox row {seq} is not JSON: {source}")]
    NotJson { seq: i64, source: serde_json::Error },
}

/// Where the relay publishes.
#[async_trait]
pub trait Sink: Send {
    /// Makes sure the destination is reachable before rows are claimed (so no transaction stays open
    /// while connecting).
    async fn ready(&mut self) -> Result<(), RelayError>;
    /// Publishes `rows` in order. Returns how many of them, from the first, the destination confirmed,
    /// and the error that stopped it, if any.
    async fn publish(&mut self, rows: &[OutboxMessage]) -> (usize, Option<RelayError>);
}

/// Drains the outbox into `sink` until `stop` is cancelled, then flushes what is left (bounded by
/// [`FLUSH_TIMEOUT`]). It passes again as soon as `wake` is notified (this process committed outbox
/// rows), and at least every `interval` (rows written by other instances).
pub async fn run<S: Sink>(
    pool: Pool,
    mut sink: S,
    interval: Duration,
    wake: std::sync::Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    let mut failures: u32 = 0;
    let mut last_prune = Instant::now();
    loop {
        if stop.is_cancelled() {
            break;
        }
        let wait = match pass(&pool, &mut sink).await {
            Ok(n) => {
                failures = 0;
                if n as i64 >= RELAY_BATCH {
                    continue;
                }
                interval
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let mut wait = backoff(failures, RECONNECT_BACKOFF_MIN, RECONNECT_BACKOFF_MAX);
                if let RelayError::BreakerOpen(open) = &e {
                    wait = wait.max(open.retry_in);
                }
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "outbox relay pass failed");
                wait
            }
        };
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            match prune(&pool, OUTBOX_RETENTION).await {
                Ok(0) => {}
                Ok(n) => info!(rows = n, "pruned published outbox rows"),
                Err(e) => warn!(error = %e, "outbox pruning failed; will retry"),
            }
        }
        // After a failure, wait out the backoff; otherwise a local commit wakes the relay at once.
        let woken = async {
            if failures == 0 {
                wake.notified().await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = woken => {}
            _ = stop.cancelled() => break,
        }
    }
    let flush = async {
        loop {
            match pass(&pool, &mut sink).await {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "outbox flush at shutdown failed; the rows stay for the next start");
                    return;
                }
            }
        }
    };
    if tokio::time::timeout(FLUSH_TIMEOUT, flush).await.is_err() {
        warn!("outbox flush at shutdown timed out; the rest is published at the next start");
    }
}

/// One claim–publish–mark pass; returns how many events were published.
pub async fn pass<S: Sink>(pool: &Pool, sink: &mut S) -> Result<usize, RelayError> {
    sink.ready().await?;
    let Some(pass) = crate::store::outbox::begin_pass(pool).await? else {
        return Ok(0); // another instance is relaying; it keeps the order
    };
    if pass.messages.is_empty() {
        pass.finish(&[]).await?;
        return Ok(0);
    }
    let (confirmed, error) = sink.publish(&pass.messages).await;
    let seqs = fully_published(&pass.messages, confirmed);
    pass.finish(&seqs).await?;
    if confirmed > 0 {
        metrics::counter!("events_published_total").increment(confirmed as u64);
        debug!(events = confirmed, rows = seqs.len(), "outbox events published");
    }
    match error {
        Some(e) => Err(e),
        None => Ok(confirmed),
    }
}

/// Publishes to the in-process bus (no broker). A bus without subscribers drops events, as an exchange
/// without bindings would.
pub struct BusSink {
    bus: broadcast::Sender<BusEvent>,
}

impl BusSink {
    pub fn new(bus: broadcast::Sender<BusEvent>) -> Self {
        BusSink { bus }
    }
}

#[async_trait]
impl Sink for BusSink {
    async fn ready(&mut self) -> Result<(), RelayError> {
        Ok(())
    }

    async fn publish(&mut self, rows: &[OutboxMessage]) -> (usize, Option<RelayError>) {
        // Nobody listening: the events are dropped as an exchange without bindings would drop them, without
        // parsing each body only to throw it away (about 4% of the service CPU of a bulk run went there).
        if self.bus.receiver_count() == 0 {
            return (rows.len(), None);
        }
        for (i, r) in rows.iter().enumerate() {
            let payload = match serde_json::from_str(&r.payload) {
                Ok(p) => p,
                Err(source) => return (i, Some(RelayError::NotJson { seq: r.seq, source })),
            };
            let _ = self.bus.send(BusEvent {
                event_id: r.event_id,
                event_type: r.event_type.clone(),
                routing_key: r.routing_key.clone(),
                payload,
            });
        }
        (rows.len(), None)
    }
}

/// Publishes to the `wallet.events` exchange on its own connection, with publisher confirms. The
/// connection is made (and the exchange declared) on first use and again after any failure. Connects and
/// publishes go through the publisher's breaker (dependency [`PUBLISHER_DEPENDENCY`]): while it is open, a
/// pass fails at once and the rows wait in the outbox.
pub struct AmqpSink {
    url: String,
    config: Arc<EventsConfig>,
    conn: Option<(Connection, Channel)>,
    breaker: Arc<Breaker>,
}

/// The publisher's breaker's `dependency` label.
pub const PUBLISHER_DEPENDENCY: &str = "rabbitmq_publisher";

impl AmqpSink {
    pub fn new(url: String, config: Arc<EventsConfig>) -> Self {
        AmqpSink {
            url,
            config,
            conn: None,
            breaker: Breaker::new(PUBLISHER_DEPENDENCY, BreakerPolicy::default()),
        }
    }

    async fn connect(&self) -> lapin::Result<(Connection, Channel)> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("{} publisher", self.config.connection_name).into());
        let conn = tokio::time::timeout(super::CONNECT_TIMEOUT, Connection::connect(&self.url, props))
            .await
            .map_err(|_| lapin::Error::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
        let ch = conn.create_channel().await?;
        super::topology::declare_published(&ch, &self.config.topology).await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        info!("outbox relay connected to RabbitMQ");
        Ok((conn, ch))
    }

    fn drop_connection(&mut self) {
        if let Some((conn, _)) = self.conn.take() {
            // Closing politely is best effort; the broker notices a dead socket anyway.
            tokio::spawn(async move {
                let _ = conn.close(200, "reconnecting".into()).await;
            });
        }
    }
}

/// The AMQP properties of a published event.
pub fn properties(row: &OutboxMessage) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(row.event_id.to_string().into())
        .with_type(row.event_type.as_str().into())
        .with_app_id("wallet-service".into())
        .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
}

#[async_trait]
impl Sink for AmqpSink {
    async fn ready(&mut self) -> Result<(), RelayError> {
        if let Some((conn, ch)) = &self.conn
            && conn.status().connected()
            && ch.status().connected()
        {
            return Ok(());
        }
        self.drop_connection();
        let call = self.breaker.admit()?;
        match self.connect().await {
            Ok(c) => {
                call.success();
                self.conn = Some(c);
                Ok(())
            }
            Err(e) => {
                call.failure();
                Err(RelayError::Connect(e))
            }
        }
    }

    async fn publish(&mut self, rows: &[OutboxMessage]) -> (usize, Option<RelayError>) {
        let Some((_, ch)) = &self.conn else {
            return (0, Some(RelayError::NotConnected));
        };
        let call = match self.breaker.admit() {
            Ok(c) => c,
            Err(open) => return (0, Some(open.into())),
        };
        let exchange = self.config.topology.wallet_exchange.as_str();
        let mut confirms = Vec::with_capacity(rows.len());
        let mut error = None;
        for r in rows {
            match ch
                .basic_publish(
                    exchange.into(),
                    r.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    r.payload.as_bytes(),
                    properties(r),
                )
                .await
            {
                Ok(confirm) => confirms.push(confirm),
                Err(e) => {
                    error = Some(RelayError::Publish(e));
                    break;
                }
            }
        }
        // Confirms resolve in publish order; count the acknowledged prefix.
        let mut confirmed = 0;
        let wait = async {
            for c in confirms {
                match c.await {
                    Ok(c) if c.is_ack() => confirmed += 1,
                    Ok(_) => return Some(RelayError::Nacked),
                    Err(e) => return Some(RelayError::Confirm(e)),
                }
            }
            None
        };
        let confirm_error = match tokio::time::timeout(CONFIRM_TIMEOUT, wait).await {
            Ok(e) => e,
            Err(_) => Some(RelayError::ConfirmTimeout),
        };
        let error = error.or(confirm_error);
        if error.is_some() {
            call.failure();
            self.drop_connection();
        } else {
            call.success();
        }
        (confirmed, error)
    }
}
