//! `broker-baseline`: the AMQP round trip a booking makes, without the service — RabbitMQ's own ceiling for
//! this shape of work on this machine, measured in the same run as `amqp-bookings`.
//!
//! A closed loop of `concurrency` outstanding messages: a persistent, confirmed publish into a durable
//! quorum queue (as booking services publish `BookingCreated`); a worker consuming it with the service's
//! prefetch that, per delivery, publishes a persistent reply to a topic exchange with publisher confirms and
//! acks the delivery once confirmed (what the consumer and the outbox relay do around a commit); and a tap
//! consuming the replies (as `amqp-bookings` listens for `TransactionCompleted`). Latency runs from the
//! publish to the reply's arrival at the tap. No database, no HTTP: only the broker and its clients.
//!
//! After an open-loop `amqp-bookings` the baseline runs open loop at the same rate (at most `max_in_flight`
//! outstanding), latency from each message's intended publish time as there: the broker's own latency at
//! that rate, which the bookings' open-loop percentiles are read against.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::drive::{DRAIN_TIMEOUT, Mode};
use crate::sched::RateSchedule;
use crate::stats::{Outcome, Recorder, RunStats};

struct Names {
    inbound: String,
    queue: String,
    outbound: String,
}

async fn declare(ch: &Channel, n: &Names) -> anyhow::Result<()> {
    for ex in [&n.inbound, &n.outbound] {
        ch.exchange_declare(
            ex.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring {ex}"))?;
    }
    ch.queue_declare(
        n.queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        crate::amqp::quorum_queue_args(),
    )
    .await
    .context("declaring the quorum queue")?;
    ch.queue_bind(
        n.queue.as_str().into(),
        n.inbound.as_str().into(),
        "booking.created".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

async fn delete(ch: &Channel, n: &Names) {
    // Best effort: a leftover of an interrupted run is named by its tag and harms nothing.
    let _ = ch
        .queue_delete(n.queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    for ex in [&n.inbound, &n.outbound] {
        let _ = ch
            .exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}

/// The worker: per delivery, a confirmed persistent reply, then the ack (the service's order: the effect is
/// durable before the delivery is let go).
fn spawn_worker(reply_ch: Channel, mut deliveries: lapin::Consumer, outbound: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Ok(d)) = deliveries.next().await {
            let (ch, outbound) = (reply_ch.clone(), outbound.clone());
            tokio::spawn(async move {
                let props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into());
                let published = ch
                    .basic_publish(
                        outbound.as_str().into(),
                        "transaction.completed".into(),
                        BasicPublishOptions::default(),
                        &d.data,
                        props,
                    )
                    .await;
                if let Ok(confirm) = published
                    && matches!(confirm.await, Ok(c) if c.is_ack())
                {
                    let _ = d.ack(BasicAckOptions::default()).await;
                }
            });
        }
    })
}

/// How the baseline publishes: the bookings run's mode, and for an open loop the bound on outstanding messages.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub mode: Mode,
    pub max_in_flight: usize,
    /// The replies' tap, as the bookings run's.
    pub tap_queue: crate::amqp::TapQueue,
}

/// Runs the baseline for `duration` under `load` with the worker's `prefetch`.
pub async fn run(amqp_url: &str, load: Load, prefetch: u16, duration: Duration) -> anyhow::Result<RunStats> {
    let conn = Connection::connect(
        amqp_url,
        ConnectionProperties::default().with_connection_name("loadtest broker-baseline".into()),
    )
    .await
    .context("connecting to RabbitMQ (--amqp-url)")?;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let names = Names {
        inbound: format!("lt-base-{tag}.bookings"),
        queue: format!("lt-base-{tag}.queue"),
        outbound: format!("lt-base-{tag}.wallet"),
    };
    let admin = conn.create_channel().await?;
    declare(&admin, &names).await?;
    let result = measure(&conn, &names, load, prefetch, duration).await;
    delete(&admin, &names).await;
    let _ = conn.close(200, "done".into()).await;
    result
}

async fn measure(
    conn: &Connection,
    names: &Names,
    load: Load,
    prefetch: u16,
    duration: Duration,
) -> anyhow::Result<RunStats> {
    // The tap, bound before anything is published.
    let mut replies = crate::amqp::tap(conn, &names.outbound, &["transaction.completed"], load.tap_queue).await?;
    let work = conn.create_channel().await?;
    work.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let reply_ch = conn.create_channel().await?;
    reply_ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let deliveries = work
        .basic_consume(
            names.queue.as_str().into(),
            "worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let worker = spawn_worker(reply_ch, deliveries, names.outbound.clone());

    let start = Instant::now();
    let rec = Arc::new(Mutex::new(Recorder::new(start)));
    let pending: Arc<Mutex<HashMap<u64, (Instant, OwnedSemaphorePermit)>>> = Arc::default();
    let listener = {
        let (rec, pending) = (rec.clone(), pending.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = replies.next().await {
                let id = std::str::from_utf8(&d.data).ok().and_then(|s| s.parse::<u64>().ok());
                let Some((sent, _permit)) = id.and_then(|i| pending.lock().ok()?.remove(&i)) else {
                    continue;
                };
                let done = Instant::now();
                if let Ok(mut r) = rec.lock() {
                    r.record("round-trip", done - sent, done, Outcome::Ok);
                }
            }
        })
    };
    let publisher = conn.create_channel().await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    let (outstanding, sched) = match load.mode {
        Mode::Closed { concurrency } => (concurrency, None),
        Mode::Open { rate } => (
            load.max_in_flight,
            Some(RateSchedule::new(rate).map_err(anyhow::Error::msg)?),
        ),
    };
    let permits = Arc::new(Semaphore::new(outstanding.max(1)));
    let deadline = start + duration;
    let total = sched.map_or(u64::MAX, |s| s.total_for(duration));
    let mut confirms = tokio::task::JoinSet::new();
    let mut i = 0u64;
    while i < total && (sched.is_some() || Instant::now() < deadline) {
        // Open loop: due at its slot whatever came before, and timed from that slot (no coordinated omission).
        let intended = sched.map(|s| start + s.offset(i));
        if let Some(due) = intended {
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = permits.clone().acquire_owned().await.context("permits")?;
        let sent = intended.unwrap_or_else(Instant::now);
        if let Ok(mut p) = pending.lock() {
            p.insert(i, (sent, permit));
        }
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        let published = publisher
            .basic_publish(
                names.inbound.as_str().into(),
                "booking.created".into(),
                BasicPublishOptions::default(),
                i.to_string().as_bytes(),
                props,
            )
            .await;
        let (rec2, pending2) = (rec.clone(), pending.clone());
        let failed = move |why: &str| {
            if pending2.lock().ok().and_then(|mut p| p.remove(&i)).is_some()
                && let Ok(mut r) = rec2.lock()
            {
                r.count_failure(why.to_string());
            }
        };
        match published {
            Ok(confirm) => {
                confirms.spawn(async move {
                    if !matches!(confirm.await, Ok(c) if c.is_ack()) {
                        failed("publish not confirmed");
                    }
                });
            }
            Err(_) => failed("publish failed"),
        }
        while confirms.try_join_next().is_some() {}
        i += 1;
    }
    let window = start.elapsed();
    while confirms.join_next().await.is_some() {}
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    while Instant::now() < drain_until && pending.lock().map(|p| !p.is_empty()).unwrap_or(false) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    listener.abort();
    worker.abort();
    let missing = pending.lock().map(|mut p| p.drain().count()).unwrap_or(0);
    let mut rec = rec
        .lock()
        .map_err(|_| anyhow::anyhow!("the recorder's lock was poisoned"))?;
    for _ in 0..missing {
        rec.count_failure("no reply within the drain timeout".into());
    }
    Ok(rec.finish(i, None, window))
}
