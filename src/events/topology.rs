//! The broker objects, declared idempotently (durable, same arguments every time) on every connect, so a
//! fresh broker, a restarted one and a deleted queue all come back to the same shape.
//!
//! Changing a queue's arguments (e.g. [`QUEUE_DELIVERY_LIMIT`]) needs the old queue deleted or a broker
//! policy: RabbitMQ refuses a re-declaration with other arguments (`PRECONDITION_FAILED`).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use super::{SHARD_KEY_HEADER, Topology};

/// Consumed routing keys: (exchange of the topology, key).
pub const BOOKING_CREATED: &str = "booking.created";
pub const BOOKING_CANCELLED: &str = "booking.cancelled";
/// `BookingConfirmed`: captures the booking's hold.
pub const BOOKING_CONFIRMED: &str = "booking.confirmed";
pub const USER_CREATED: &str = "user.created";

/// The broker's own bound on deliveries of one message in the quorum queue: a safety net far above
/// [`super::MAX_ATTEMPTS`] for messages that never reach a decision (e.g. one that crashes the process
/// every time). The broker dead-letters such a message itself (`x-death` reason `delivery_limit`).
pub const QUEUE_DELIVERY_LIMIT: i64 = 100;

fn durable() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// The published exchange (the relay's connection declares it).
pub async fn declare_published(ch: &Channel, t: &Topology) -> lapin::Result<()> {
    ch.exchange_declare(
        t.wallet_exchange.as_str().into(),
        ExchangeKind::Topic,
        durable(),
        FieldTable::default(),
    )
    .await
}

/// The consumed exchanges, the service's quorum queue and its bindings, the dead-letter exchange and
/// queue (the consumer's connection declares them), and the published exchange too, so that a consumer
/// started alone leaves a complete topology.
pub async fn declare_consumed(ch: &Channel, t: &Topology) -> lapin::Result<()> {
    for exchange in [&t.booking_exchange, &t.user_exchange] {
        ch.exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            durable(),
            FieldTable::default(),
        )
        .await?;
    }
    declare_published(ch, t).await?;
    ch.exchange_declare(
        t.dead_letter_exchange.as_str().into(),
        ExchangeKind::Fanout,
        durable(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        t.dead_letter_queue.as_str().into(),
        durable_queue(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        t.dead_letter_queue.as_str().into(),
        t.dead_letter_exchange.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(t.queue.as_str().into(), durable_queue(), queue_args(t))
        .await?;
    let bindings = [
        (&t.booking_exchange, BOOKING_CREATED),
        (&t.booking_exchange, BOOKING_CANCELLED),
        (&t.booking_exchange, BOOKING_CONFIRMED),
        (&t.user_exchange, USER_CREATED),
    ];
    for (exchange, key) in bindings {
        ch.queue_bind(
            t.queue.as_str().into(),
            exchange.as_str().into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// The arguments of the service's quorum queues: delivery limit and dead-letter exchange.
fn queue_args(t: &Topology) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(QUEUE_DELIVERY_LIMIT));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(t.dead_letter_exchange.as_str())),
    );
    args
}

/// With `shards` > 0: the consistent-hash exchange (hashing [`SHARD_KEY_HEADER`]) and its `shards` quorum
/// queues, each bound with weight 1 and **single active consumer**: every instance consumes every shard,
/// the broker delivers a shard to one of them at a time (another takes over when it goes away), so one
/// wallet's bookings are never planned by two instances at once. Needs the broker's
/// `rabbitmq_consistent_hash_exchange` plugin. Changing the number of shards re-hashes keys: drain the shard
/// queues first (a booking is idempotent by its reference either way).
pub async fn declare_sharded(ch: &Channel, t: &Topology, shards: u16) -> lapin::Result<()> {
    if shards == 0 {
        return Ok(());
    }
    let mut args = FieldTable::default();
    args.insert(
        "hash-header".into(),
        AMQPValue::LongString(LongString::from(SHARD_KEY_HEADER)),
    );
    ch.exchange_declare(
        t.sharded_exchange.as_str().into(),
        ExchangeKind::Custom("x-consistent-hash".into()),
        durable(),
        args,
    )
    .await?;
    for i in 0..shards {
        let queue = t.shard_queue(i);
        let mut args = queue_args(t);
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        ch.queue_declare(queue.as_str().into(), durable_queue(), args).await?;
        // The routing key of a consistent-hash binding is the queue's weight.
        ch.queue_bind(
            queue.as_str().into(),
            t.sharded_exchange.as_str().into(),
            "1".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}
