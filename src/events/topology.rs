//! The broker objects, declared idempotently (durable, same arguments every time) on every connect, so a
//! fresh broker, a restarted one and a deleted queue all come back to the same shape.
//!
//! Changing a queue's arguments (e.g. [`QUEUE_DELIVERY_LIMIT`]) needs the old queue deleted or a broker
//! policy: RabbitMQ refuses a re-declaration with other arguments (`PRECONDITION_FAILED`).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use super::Topology;

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
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(QUEUE_DELIVERY_LIMIT));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(t.dead_letter_exchange.as_str())),
    );
    ch.queue_declare(t.queue.as_str().into(), durable_queue(), args).await?;
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
