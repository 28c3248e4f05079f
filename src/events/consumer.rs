//! The AMQP consumer: its own connection (the relay has another), a reconnect loop with capped
//! exponential backoff, a prefetch of [`super::PREFETCH`] deliveries processed concurrently, and for each
//! delivery the decision of [`super::handler`] turned into broker actions:
//!
//! | outcome | action |
//! |---|---|
//! | `Done` (applied, duplicate, refused, nothing to do) | ack — only after the effect committed |
//! | `Transient` (database down, engine overloaded) | retried in process with backoff while the delivery is held; after [`TRANSIENT_TRIES`] tries, requeued |
//! | `Retry` (unknown user, cancellation before its booking) | requeued after a growing delay, until the attempt bound, then dead-lettered |
//! | `Poison` (malformed, impossible) | dead-lettered at once |
//!
//! Dead-lettering is done by the consumer: the message is republished (with confirms) to the
//! dead-letter exchange with its headers plus `x-death-reason`, `x-death-attempts`,
//! `x-original-exchange` and `x-original-routing-key`, and only then acked. The attempt of a delivery is
//! the larger of the quorum queue's `x-delivery-count` + 1 and this process's own count (RabbitMQ 4 no
//! longer counts requeues in `x-delivery-count`).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Ctx;
use super::handler::{self, Done, Outcome};
use super::{EventsConfig, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN};
use crate::resilience::{Breaker, BreakerPolicy, Call, Open, backoff};

/// The consumer's breaker's `dependency` label.
pub const CONSUMER_DEPENDENCY: &str = "rabbitmq_consumer";

/// In-process tries of a delivery whose handling failed transiently, before it is requeued.
pub const TRANSIENT_TRIES: u32 = 8;
/// First wait between in-process tries after a transient failure.
pub const TRANSIENT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between in-process tries.
pub const TRANSIENT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// At shutdown or after a lost connection, how long in-flight deliveries may take to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages whose attempts this process remembers (the map is cleared when it grows past this).
pub const MAX_REMEMBERED_ATTEMPTS: usize = 100_000;
/// The header that carries why a message was dead-lettered.
pub const DEATH_REASON_HEADER: &str = "x-death-reason";
/// The header that carries how many attempts a dead-lettered message had.
pub const DEATH_ATTEMPTS_HEADER: &str = "x-death-attempts";
/// Longest reason kept in the header.
const MAX_REASON_LEN: usize = 1000;

/// Why a consumer session ended (logged; the consumer reconnects with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("connect: timed out")]
    ConnectTimeout,
    #[error("connect: {0}")]
    Connect(lapin::Error),
    /// A broker operation of the session's setup or its consumer failed (`step` names it).
    #[error("{step}: {source}")]
    Broker { step: &'static str, source: lapin::Error },
    #[error("the broker cancelled the consumer")]
    Cancelled,
    /// The broker failed repeatedly; no connection is tried until the breaker's next probe.
    #[error(transparent)]
    BreakerOpen(#[from] Open),
}

/// What every delivery task shares.
struct Shared {
    ctx: Arc<Ctx>,
    config: Arc<EventsConfig>,
    /// Confirm-mode channel on the consumer's connection, for dead letters.
    dead_letters: Channel,
    /// Cancelled at shutdown and when the connection is lost: stop waiting, requeue.
    cancel: CancellationToken,
    attempts: Arc<DashMap<u64, u32>>,
}

/// Consumes until `stop` is cancelled, reconnecting after any failure.
pub async fn run(ctx: Arc<Ctx>, url: String, config: Arc<EventsConfig>, stop: CancellationToken) {
    let attempts: Arc<DashMap<u64, u32>> = Arc::new(DashMap::new());
    let breaker = Breaker::new(CONSUMER_DEPENDENCY, BreakerPolicy::default());
    let mut failures: u32 = 0;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let result = match breaker.admit() {
            Ok(call) => session(&ctx, &url, &config, &stop, &attempts, &mut failures, call).await,
            Err(open) => Err(open.into()),
        };
        ctx.events.set_attached(false);
        match result {
            Ok(()) => break,
            Err(e) => {
                let mut wait = backoff(failures, RECONNECT_BACKOFF_MIN, RECONNECT_BACKOFF_MAX);
                if let ConsumerError::BreakerOpen(open) = &e {
                    wait = wait.max(open.retry_in);
                }
                failures = failures.saturating_add(1);
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "event consumer disconnected; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => break,
                }
            }
        }
    }
    info!("event consumer stopped");
}

/// One connection's life: connect, declare, consume until shutdown (`Ok`) or failure (`Err`). `call` is the
/// breaker's admission of this session: it succeeds once the consumer is attached, fails if it never is.
async fn session(
    ctx: &Arc<Ctx>,
    url: &str,
    config: &Arc<EventsConfig>,
    stop: &CancellationToken,
    attempts: &Arc<DashMap<u64, u32>>,
    failures: &mut u32,
    call: Call,
) -> Result<(), ConsumerError> {
    let mut call = Some(call);
    let result = attach_and_consume(ctx, url, config, stop, attempts, failures, &mut call).await;
    if let Some(call) = call {
        // Never attached: a failure of the broker, unless we were told to stop first.
        if result.is_err() {
            call.failure();
        } else {
            call.neutral();
        }
    }
    result
}

async fn attach_and_consume(
    ctx: &Arc<Ctx>,
    url: &str,
    config: &Arc<EventsConfig>,
    stop: &CancellationToken,
    attempts: &Arc<DashMap<u64, u32>>,
    failures: &mut u32,
    call: &mut Option<Call>,
) -> Result<(), ConsumerError> {
    let props =
        ConnectionProperties::default().with_connection_name(format!("{} consumer", config.connection_name).into());
    let connect = tokio::time::timeout(super::CONNECT_TIMEOUT, Connection::connect(url, props));
    let conn = tokio::select! {
        c = connect => c.map_err(|_| ConsumerError::ConnectTimeout)?.map_err(ConsumerError::Connect)?,
        _ = stop.cancelled() => return Ok(()),
    };
    let result = consume(ctx, &conn, config, stop, attempts, failures, call).await;
    // Closing is a courtesy to the broker; its error cannot change the result being returned.
    let _ = conn.close(200, "bye".into()).await;
    result
}

async fn consume(
    ctx: &Arc<Ctx>,
    conn: &Connection,
    config: &Arc<EventsConfig>,
    stop: &CancellationToken,
    attempts: &Arc<DashMap<u64, u32>>,
    failures: &mut u32,
    call: &mut Option<Call>,
) -> Result<(), ConsumerError> {
    let amqp = |step: &'static str| move |source: lapin::Error| ConsumerError::Broker { step, source };
    let ch = conn.create_channel().await.map_err(amqp("channel"))?;
    super::topology::declare_consumed(&ch, &config.topology)
        .await
        .map_err(amqp("declare topology"))?;
    ch.basic_qos(config.prefetch, BasicQosOptions::default())
        .await
        .map_err(amqp("qos"))?;
    let dead_letters = conn.create_channel().await.map_err(amqp("channel"))?;
    dead_letters
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(amqp("confirm_select"))?;
    super::topology::declare_sharded(&ch, &config.topology, config.booking_shards)
        .await
        .map_err(amqp("declare shards"))?;
    // The shared queue, then every shard queue (the broker makes one consumer of each shard active).
    let queues: Vec<String> = std::iter::once(config.topology.queue.clone())
        .chain((0..config.booking_shards).map(|i| config.topology.shard_queue(i)))
        .collect();
    let mut consumers = Vec::with_capacity(queues.len());
    for queue in &queues {
        let consumer = ch
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("consume"))?;
        consumers.push(consumer);
    }
    let tags: Vec<_> = consumers.iter().map(|c| c.tag()).collect();
    // One stream of every queue's deliveries; a broken channel ends (or errs) them all at once.
    let mut consumer = futures_util::stream::select_all(consumers);
    ctx.events.set_attached(true);
    *failures = 0;
    if let Some(call) = call.take() {
        call.success();
    }
    info!(queue = %config.topology.queue, shards = config.booking_shards, prefetch = config.prefetch, "event consumer attached");
    let shared = Arc::new(Shared {
        ctx: ctx.clone(),
        config: config.clone(),
        dead_letters,
        cancel: stop.child_token(),
        attempts: attempts.clone(),
    });
    let mut tasks = JoinSet::new();
    let result = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let shared = shared.clone();
                    tasks.spawn(async move { process(&shared, delivery).await });
                }
                Some(Err(e)) => break Err(amqp("consumer")(e)),
                None => break Err(ConsumerError::Cancelled),
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    error!(error = %e, "a delivery task failed");
                }
            }
        }
    };
    ctx.events.set_attached(false);
    if result.is_ok() {
        // Shutdown: no new deliveries; the ones in hand finish (their effects commit and are acked).
        for tag in tags {
            if let Err(e) = ch.basic_cancel(tag, BasicCancelOptions::default()).await {
                warn!(error = %e, "cancelling the consumer failed");
            }
        }
    }
    // Waits (retry delays, transient backoff) end now and requeue; effects under way finish.
    shared.cancel.cancel();
    let drain = async {
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                error!(error = %e, "a delivery task failed");
            }
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        warn!("in-flight deliveries did not finish in time; the broker will redeliver them");
        tasks.abort_all();
    }
    result
}

fn key_of(d: &Delivery) -> u64 {
    let mut h = DefaultHasher::new();
    match d.properties.message_id() {
        Some(id) => id.as_str().hash(&mut h),
        None => d.data.hash(&mut h),
    }
    h.finish()
}

fn header_int(headers: &Option<FieldTable>, name: &str) -> Option<i64> {
    match headers.as_ref()?.inner().get(name)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        _ => None,
    }
}

/// Which attempt this delivery is (1 for the first).
fn attempt_of(shared: &Shared, d: &Delivery, key: u64) -> u32 {
    let broker = header_int(d.properties.headers(), "x-delivery-count")
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
        .saturating_add(1);
    let ours = shared.attempts.get(&key).map(|n| *n).unwrap_or(0).saturating_add(1);
    broker.max(ours)
}

fn remember_attempt(shared: &Shared, key: u64, attempt: u32) {
    if shared.attempts.len() >= MAX_REMEMBERED_ATTEMPTS {
        shared.attempts.clear();
    }
    shared.attempts.insert(key, attempt);
}

fn event_label(routing_key: &str) -> &'static str {
    match routing_key {
        super::topology::BOOKING_CREATED => "BookingCreated",
        super::topology::BOOKING_CANCELLED => "BookingCancelled",
        super::topology::BOOKING_CONFIRMED => "BookingConfirmed",
        super::topology::USER_CREATED => "UserCreated",
        _ => "other",
    }
}

async fn process(shared: &Shared, d: Delivery) {
    let routing_key = d.routing_key.as_str().to_string();
    let label = event_label(&routing_key);
    metrics::counter!("events_consumed_total", "event_type" => label).increment(1);
    let key = key_of(&d);
    let attempt = attempt_of(shared, &d, key);
    let mut transient_tries = 0;
    loop {
        // A handler that panics on a message would panic again on its redelivery: treat it as a
        // message to retry a bounded number of times, then dead-letter, instead of losing the delivery.
        let handled = AssertUnwindSafe(handler::handle(&shared.ctx.service, &d.data, &routing_key))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Outcome::Retry("PANIC: handling this message panicked".into()));
        match handled {
            Outcome::Done(done) => {
                let outcome = match done {
                    Done::Applied => "applied",
                    Done::Duplicate => "duplicate",
                    Done::Refused(_) => "refused",
                    Done::NothingToDo => "nothing_to_do",
                };
                shared.attempts.remove(&key);
                if ack(&d).await {
                    metrics::counter!("events_acked_total", "event_type" => label, "outcome" => outcome).increment(1);
                }
                return;
            }
            Outcome::Transient(reason) => {
                transient_tries += 1;
                if transient_tries >= TRANSIENT_TRIES {
                    warn!(%reason, routing_key, "event still failing transiently; requeued");
                    requeue(&d).await;
                    return;
                }
                let wait = backoff(transient_tries, TRANSIENT_BACKOFF_MIN, TRANSIENT_BACKOFF_MAX);
                warn!(%reason, routing_key, retry_in_ms = wait.as_millis() as u64, "event failed transiently; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shared.cancel.cancelled() => {
                        requeue(&d).await;
                        return;
                    }
                }
            }
            Outcome::Retry(reason) => {
                let retry = shared.config.retry;
                if attempt >= retry.max_attempts {
                    shared.attempts.remove(&key);
                    dead_letter(shared, &d, &reason, attempt).await;
                    return;
                }
                remember_attempt(shared, key, attempt);
                let wait = backoff(attempt - 1, retry.delay_min, retry.delay_max);
                info!(%reason, routing_key, attempt, retry_in_ms = wait.as_millis() as u64, "event cannot be applied yet; will retry");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shared.cancel.cancelled() => {}
                }
                requeue(&d).await;
                return;
            }
            Outcome::Poison(reason) => {
                shared.attempts.remove(&key);
                dead_letter(shared, &d, &reason, attempt).await;
                return;
            }
        }
    }
}

async fn ack(d: &Delivery) -> bool {
    match d.acker.ack(BasicAckOptions::default()).await {
        Ok(true) => true,
        Ok(false) => {
            warn!("ack not sent (channel closed); the broker will redeliver, the inbox absorbs it");
            false
        }
        Err(e) => {
            warn!(error = %e, "ack failed; the broker will redeliver, the inbox absorbs it");
            false
        }
    }
}

async fn requeue(d: &Delivery) {
    let options = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    if let Err(e) = d.acker.nack(options).await {
        warn!(error = %e, "requeue failed; the broker will redeliver when the channel closes");
    }
}

/// Republishes the message to the dead-letter exchange with the reason, then acks it. If the dead
/// letter is not confirmed, the message is requeued instead (never dropped).
async fn dead_letter(shared: &Shared, d: &Delivery, reason: &str, attempt: u32) {
    let reason: String = reason.chars().take(MAX_REASON_LEN).collect();
    warn!(%reason, routing_key = %d.routing_key, attempt, "event dead-lettered");
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    headers.insert(
        DEATH_REASON_HEADER.into(),
        AMQPValue::LongString(LongString::from(reason.as_str())),
    );
    headers.insert(DEATH_ATTEMPTS_HEADER.into(), AMQPValue::LongLongInt(i64::from(attempt)));
    headers.insert(
        "x-original-exchange".into(),
        AMQPValue::LongString(LongString::from(d.exchange.as_str())),
    );
    headers.insert(
        "x-original-routing-key".into(),
        AMQPValue::LongString(LongString::from(d.routing_key.as_str())),
    );
    let mut props: BasicProperties = d.properties.clone().with_headers(headers).with_delivery_mode(2);
    if props.content_type().is_none() {
        props = props.with_content_type("application/json".into());
    }
    let published = async {
        shared
            .dead_letters
            .basic_publish(
                shared.config.topology.dead_letter_exchange.as_str().into(),
                d.routing_key.clone(),
                BasicPublishOptions::default(),
                &d.data,
                props,
            )
            .await?
            .await
    };
    match tokio::time::timeout(super::relay::CONFIRM_TIMEOUT, published).await {
        Ok(Ok(c)) if c.is_ack() => {
            if ack(d).await {
                let code = reason.split(':').next().unwrap_or("UNKNOWN").to_string();
                metrics::counter!("events_dead_lettered_total", "reason" => code).increment(1);
            }
        }
        Ok(Ok(_)) => {
            warn!("the broker nacked a dead letter; requeueing the message");
            requeue(d).await;
        }
        Ok(Err(e)) => {
            warn!(error = %e, "dead-lettering failed; requeueing the message");
            requeue(d).await;
        }
        Err(_) => {
            warn!("dead-letter confirm timed out; requeueing the message");
            requeue(d).await;
        }
    }
}
