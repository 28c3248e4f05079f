//! Events in and out: RabbitMQ (or, without `AMQP_URL`, an in-process bus), exactly-once in effect.
//!
//! # Module map
//! - [`handler`]: what a consumed event *does* (BookingCreated → debit, BookingCancelled → refund,
//!   UserCreated → user + wallet + default budgets), as an [`handler::Outcome`]; no AMQP in it, so it can
//!   be called directly.
//! - [`consumer`]: the AMQP consumer: its own connection (behind the `rabbitmq_consumer` breaker), reconnect
//!   loop with capped exponential backoff (`resilience::backoff`),
//!   prefetch, per-delivery tasks, ack only after the effect committed, bounded retries, dead-lettering
//!   with the reason in the `x-death-reason` header.
//! - [`relay`]: the outbox relay: reads unpublished rows in `seq` order (one relay at a time per
//!   database through an advisory lock, so each wallet's events leave in order),
//!   publishes them with publisher confirms on its own connection (behind the `rabbitmq_publisher` breaker;
//!   or into the in-process bus), marks
//!   them published only after the broker's ack, and prunes published rows after [`relay::OUTBOX_RETENTION`].
//! - [`topology`]: the exchanges and queues, declared idempotently on every (re)connect; with
//!   `BOOKING_SHARDS`, the consistent-hash booking exchange and its single-active-consumer shard queues,
//!   which the consumer reads beside the shared queue (one wallet's bookings on one instance at a time).
//!
//! # Exactly-once effect
//! Delivery is at-least-once both ways; the *effect* is once:
//! - in: every effect's transaction also writes the event id into `processed_events` (the inbox). A
//!   delivery whose id is already there is acked with no effect (fast path). For bookings the hard
//!   guarantee is the reference key: a debit (and a refund) of a booking is unique per wallet, so a
//!   duplicate event with another id is refused by the store as `DuplicateReference` and acked. A
//!   delivery is acked only after its effect (or its refusal's `TransactionFailed` row) committed; a
//!   crash in between means a redelivery, which the inbox absorbs.
//! - out: the outbox row is written in the transaction of the change it reports; the relay marks it
//!   published after the broker confirmed it. A crash in between re-sends it: consumers dedup by
//!   `message_id` = `event_id`.
//!
//! # Refunds
//! A booking is refunded at most once (the contract's reference uniqueness): the first `BookingCancelled`
//! credits `refund_amount` (or the whole debit when absent) with `reference_id = booking_id`, so the
//! budget work can give it back to the budget the debit was charged to. Later cancellations of the same
//! booking are acked with no effect; a `refund_amount` above the debit is dead-lettered
//! (`REFUND_EXCEEDS_DEBIT`), never clamped.

pub mod consumer;
pub mod handler;
pub mod relay;
pub mod topology;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

/// Deliveries a consumer may hold unacknowledged (and process concurrently) unless `AMQP_PREFETCH` says
/// otherwise. Each delivery waits for its commit (a group commit, a few milliseconds to tens of
/// milliseconds under load), so the consumer's rate is at most prefetch ÷ commit latency: 64 capped it near
/// 2k bookings/s (docs/BENCHMARKS.md). Memory is one small message per slot.
pub const PREFETCH: u16 = 512;
/// The largest `AMQP_PREFETCH` accepted: beyond it a consumer would hold more work than the engine's
/// per-wallet queues and the connection pool can usefully absorb, and a crash would redeliver all of it.
pub const MAX_PREFETCH: u16 = 4096;
/// First wait before reconnecting to the broker after a failure.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Deliveries of one message (ours and the broker's count) before an event that keeps asking to be
/// retried (unknown user, cancellation before its booking) is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 6;
/// Wait before the first retry of such an event; doubled each attempt up to [`RETRY_DELAY_MAX`].
pub const RETRY_DELAY_MIN: Duration = Duration::from_millis(250);
/// Longest wait before a retry.
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(5);
/// Longest wait for a broker connection to open (a black-holed address must not stall start or stop).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Capacity of the in-process bus (a slow subscriber loses the oldest events, never blocks the relay).
pub const BUS_CAPACITY: usize = 4096;

/// The header a booking publisher sets (to the booking's `user_id`, whose wallet it debits) when it publishes
/// to [`Topology::sharded_exchange`]: RabbitMQ's consistent-hash exchange hashes it to one of the
/// `BOOKING_SHARDS` shard queues, so one wallet's bookings are consumed by one instance at a time.
pub const SHARD_KEY_HEADER: &str = "wallet-shard-key";
/// Most shard queues (`BOOKING_SHARDS`): each is a quorum queue with a consumer per instance.
pub const MAX_BOOKING_SHARDS: u16 = 64;

/// Names of everything the service declares on the broker. Defaults are the contract's exchanges and
/// the service's own queue; tests use their own vhost (or their own names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Consumed topic exchange of bookings (`booking.created`, `booking.cancelled`).
    pub booking_exchange: String,
    /// Consumed topic exchange of users (`user.created`).
    pub user_exchange: String,
    /// Published topic exchange.
    pub wallet_exchange: String,
    /// The service's durable (quorum) queue.
    pub queue: String,
    /// Where dead letters go (fanout), ours and the broker's (`x-delivery-limit`).
    pub dead_letter_exchange: String,
    /// The dead-letter queue, bound to [`Topology::dead_letter_exchange`].
    pub dead_letter_queue: String,
    /// With `BOOKING_SHARDS`: the consistent-hash exchange (plugin `rabbitmq_consistent_hash_exchange`)
    /// booking publishers may publish to instead, with [`SHARD_KEY_HEADER`] set.
    pub sharded_exchange: String,
}

impl Topology {
    /// The name of shard queue `i` (`<queue>.shard.<i>`).
    pub fn shard_queue(&self, i: u16) -> String {
        format!("{}.shard.{i}", self.queue)
    }
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            booking_exchange: "booking.events".into(),
            user_exchange: "user.events".into(),
            wallet_exchange: "wallet.events".into(),
            queue: "wallet-service.events".into(),
            dead_letter_exchange: "wallet-service.events.dlx".into(),
            dead_letter_queue: "wallet-service.events.dlq".into(),
            sharded_exchange: "wallet-service.bookings.sharded".into(),
        }
    }
}

/// How an event that may succeed later is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries before dead-lettering (see [`MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    pub delay_min: Duration,
    pub delay_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: MAX_ATTEMPTS,
            delay_min: RETRY_DELAY_MIN,
            delay_max: RETRY_DELAY_MAX,
        }
    }
}

/// What the AMQP adapter shares: the use-case layer (the only way events reach money) and the consumer's
/// readiness state.
pub struct Ctx {
    pub service: Arc<crate::service::Service>,
    pub events: Arc<EventsState>,
}

/// Everything about events that is not the broker's URL (that is `AMQP_URL` in [`crate::config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    pub topology: Topology,
    pub retry: RetryPolicy,
    pub prefetch: u16,
    /// `BOOKING_SHARDS`: shard queues behind [`Topology::sharded_exchange`]; 0 declares none (default).
    pub booking_shards: u16,
    /// How often the relay looks for new outbox rows when it found none.
    pub relay_interval: Duration,
    /// Prefix of the AMQP connection names (`<prefix> consumer`, `<prefix> publisher`), as the broker's
    /// management UI shows them.
    pub connection_name: String,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            topology: Topology::default(),
            retry: RetryPolicy::default(),
            prefetch: PREFETCH,
            booking_shards: 0,
            relay_interval: relay::RELAY_INTERVAL,
            connection_name: "wallet-service".into(),
        }
    }
}

/// An event as the relay hands it to the in-process bus (without a broker).
#[derive(Debug, Clone, PartialEq)]
pub struct BusEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub routing_key: String,
    /// The envelope `{event_id, event_type, timestamp, data}`.
    pub payload: serde_json::Value,
}

/// What the rest of the service sees of events: readiness and the in-process bus.
pub struct EventsState {
    amqp: bool,
    consumer_attached: AtomicBool,
    bus: broadcast::Sender<BusEvent>,
}

impl EventsState {
    pub fn new(amqp: bool) -> Self {
        let (bus, _) = broadcast::channel(BUS_CAPACITY);
        EventsState {
            amqp,
            consumer_attached: AtomicBool::new(false),
            bus,
        }
    }

    /// Whether the service consumes from RabbitMQ (`AMQP_URL` set).
    pub fn uses_broker(&self) -> bool {
        self.amqp
    }

    /// Whether the AMQP consumer is attached to its queue now.
    pub fn consumer_attached(&self) -> bool {
        self.consumer_attached.load(Ordering::Acquire)
    }

    pub(crate) fn set_attached(&self, attached: bool) {
        self.consumer_attached.store(attached, Ordering::Release);
        metrics::gauge!("events_consumer_attached").set(if attached { 1.0 } else { 0.0 });
    }

    /// `/ready`'s part: with a broker, the consumer must be attached.
    pub fn readiness(&self) -> Result<(), crate::service::NotReady> {
        if self.amqp && !self.consumer_attached() {
            return Err(crate::service::NotReady::ConsumerDetached);
        }
        Ok(())
    }

    /// Events published by the relay when there is no broker (tests and the broker-less run command).
    pub fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.bus.subscribe()
    }

    pub(crate) fn bus(&self) -> broadcast::Sender<BusEvent> {
        self.bus.clone()
    }
}

/// The events' part of the configuration, kept by `App` until it runs.
#[derive(Debug, Clone)]
pub struct Setup {
    pub amqp_url: Option<String>,
    pub config: EventsConfig,
}

/// The running consumer and relay.
pub struct Running {
    consumer: Option<JoinHandle<()>>,
    relay: JoinHandle<()>,
    relay_stop: CancellationToken,
}

/// Starts the relay and, with a broker, the consumer. The consumer stops (and finishes its in-flight
/// messages) when `stop` is cancelled; the relay runs until [`Running::finish`], so that what the last
/// messages and requests wrote still gets published.
pub fn start(ctx: Arc<Ctx>, setup: Setup, stop: CancellationToken) -> Running {
    let config = Arc::new(setup.config);
    let relay_stop = CancellationToken::new();
    let pool = ctx.service.store().pool.clone();
    let (consumer, relay) = match setup.amqp_url {
        Some(url) => {
            info!(queue = %config.topology.queue, "events: consuming from and publishing to RabbitMQ");
            let consumer = tokio::spawn(consumer::run(ctx.clone(), url.clone(), config.clone(), stop));
            let sink = relay::AmqpSink::new(url, config.clone());
            let relay = tokio::spawn(relay::run(
                pool,
                sink,
                config.relay_interval,
                ctx.service.store().outbox_written.clone(),
                relay_stop.clone(),
            ));
            (Some(consumer), relay)
        }
        None => {
            info!("events: AMQP_URL is not set; the outbox is drained into the in-process bus");
            let sink = relay::BusSink::new(ctx.events.bus());
            let relay = tokio::spawn(relay::run(
                pool,
                sink,
                config.relay_interval,
                ctx.service.store().outbox_written.clone(),
                relay_stop.clone(),
            ));
            (None, relay)
        }
    };
    Running {
        consumer,
        relay,
        relay_stop,
    }
}

impl Running {
    /// Waits for the consumer to have stopped (after `stop` was cancelled) and finished its in-flight
    /// messages.
    pub async fn consumer_stopped(&mut self) {
        if let Some(h) = self.consumer.take()
            && let Err(e) = h.await
        {
            warn!(error = %e, "event consumer task failed");
        }
    }

    /// Publishes what is left in the outbox (bounded by [`relay::FLUSH_TIMEOUT`]) and stops the relay.
    pub async fn finish(mut self) {
        self.consumer_stopped().await;
        self.relay_stop.cancel();
        // A pass under way (connecting, awaiting confirms) is bounded by its own timeouts; this bounds
        // the whole. An interrupted pass rolls back: its rows are sent again at the next start.
        let limit = relay::FLUSH_TIMEOUT + CONNECT_TIMEOUT + relay::CONFIRM_TIMEOUT;
        let abort = self.relay.abort_handle();
        match tokio::time::timeout(limit, self.relay).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "outbox relay task failed"),
            Err(_) => {
                warn!("outbox relay did not stop in time; aborted");
                abort.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_the_consumer_only_with_a_broker() {
        assert!(EventsState::new(false).readiness().is_ok());
        let s = EventsState::new(true);
        assert!(s.readiness().is_err());
        s.set_attached(true);
        assert!(s.readiness().is_ok());
    }
}
