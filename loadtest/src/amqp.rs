//! `amqp-bookings`: publishes `BookingCreated` events at a rate (or keeps C outstanding) and measures
//! until the matching `TransactionCompleted` (or `TransactionFailed`) comes out of the service's outbox
//! relay on the wallet exchange. Latency counts from the intended publish time to the matching event.
//!
//! Bookings are debits with `reference_type = BOOKING`, `reference_id = booking_id`; the books check
//! then proves none lost (every completion is a row, every published booking is a row or a refusal) and
//! none doubled (one row per booking).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use indicatif::ProgressBar;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;
use wallet_service::events::Topology;

use crate::books::{Acked, ClientLedger, Kind};
use crate::drive::{DRAIN_TIMEOUT, Mode, Workload};
use crate::sched::RateSchedule;
use crate::setup::Fixture;
use crate::stats::{Outcome, Recorder, RunStats};

/// The broker objects of one in-process run: the contract's names with a unique prefix, so runs and
/// test suites sharing a broker never see each other's messages.
pub fn run_topology(tag: &str) -> Topology {
    let d = Topology::default();
    let p = |s: &str| format!("loadtest-{tag}.{s}");
    Topology {
        booking_exchange: p(&d.booking_exchange),
        user_exchange: p(&d.user_exchange),
        wallet_exchange: p(&d.wallet_exchange),
        queue: p(&d.queue),
        dead_letter_exchange: p(&d.dead_letter_exchange),
        dead_letter_queue: p(&d.dead_letter_queue),
        sharded_exchange: p(&d.sharded_exchange),
    }
}

/// Deletes a run's queues and exchanges (best effort).
pub async fn delete_topology(url: &str, t: &Topology) {
    let Ok(conn) = Connection::connect(url, ConnectionProperties::default()).await else {
        return;
    };
    if let Ok(ch) = conn.create_channel().await {
        for q in [&t.queue, &t.dead_letter_queue] {
            let _ = ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
        }
        for e in [
            &t.booking_exchange,
            &t.user_exchange,
            &t.wallet_exchange,
            &t.dead_letter_exchange,
        ] {
            let _ = ch
                .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = conn.close(200, "done".into()).await;
}

/// Where the harness listens for the events a run waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapQueue {
    /// A private, auto-deleted classic queue: the broker confirms a publish routed to it without a flush.
    Private,
    /// A quorum queue, as a production subscriber's would be: every publish routed to it is confirmed only
    /// once the queue's log is flushed (`--durable-tap`). Named for the run, deleted by the broker a minute
    /// after its last consumer (`x-expires`).
    Quorum,
}

/// The declare arguments of a quorum queue.
pub(crate) fn quorum_queue_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    args
}

/// Milliseconds a quorum tap outlives its consumer.
const TAP_EXPIRES_MS: i64 = 60_000;

/// A queue bound to `exchange` with `keys` (`kind`), consumed without acks: where the harness listens for
/// the events a run is waiting for.
pub(crate) async fn tap(
    conn: &Connection,
    exchange: &str,
    keys: &[&str],
    kind: TapQueue,
) -> anyhow::Result<lapin::Consumer> {
    let ch = conn.create_channel().await?;
    let (name, options, args) = match kind {
        TapQueue::Private => (
            String::new(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
        TapQueue::Quorum => {
            let mut args = quorum_queue_args();
            args.insert("x-expires".into(), lapin::types::AMQPValue::LongLongInt(TAP_EXPIRES_MS));
            (
                format!("loadtest.tap.{}", uuid::Uuid::new_v4().simple()),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
        }
    };
    let q = ch.queue_declare(name.as_str().into(), options, args).await?;
    for key in keys {
        ch.queue_bind(
            q.name().clone(),
            exchange.into(),
            (*key).into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(ch
        .basic_consume(
            q.name().clone(),
            "loadtest".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?)
}

#[derive(Deserialize)]
struct Envelope {
    event_type: String,
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct CompletedData {
    txn_id: Uuid,
    wallet_id: Uuid,
    reference_id: Option<String>,
}

#[derive(Deserialize)]
struct FailedData {
    reference_id: Option<String>,
    reason: Option<String>,
}

struct Pending {
    intended: Instant,
    wallet: usize,
    cents: i64,
    _permit: OwnedSemaphorePermit,
}

struct Shared {
    rec: Mutex<Recorder>,
    ledger: Mutex<ClientLedger>,
    pending: Mutex<HashMap<String, Pending>>,
    sent: AtomicU64,
    fixture: Arc<Fixture>,
}

impl Shared {
    fn complete(&self, booking: &str, outcome: Outcome, txn: Option<(Uuid, Uuid)>) {
        let Some(p) = self.pending.lock().expect("pending lock").remove(booking) else {
            return;
        };
        let done = Instant::now();
        if let Some((txn_id, wallet_id)) = txn {
            self.ledger.lock().expect("ledger lock").acked.push(Acked {
                txn_id,
                wallet_id,
                cents: p.cents,
                kind: Kind::Debit,
            });
            if wallet_id != self.fixture.wallets[p.wallet] {
                self.rec
                    .lock()
                    .expect("recorder lock")
                    .count_failure("completion names another wallet".into());
            }
        }
        self.rec
            .lock()
            .expect("recorder lock")
            .record("booking", done - p.intended, done, outcome);
    }

    fn on_event(&self, prefix: &str, body: &[u8]) {
        let Ok(env) = serde_json::from_slice::<Envelope>(body) else {
            return;
        };
        match env.event_type.as_str() {
            "TransactionCompleted" => {
                if let Ok(d) = serde_json::from_value::<CompletedData>(env.data)
                    && let Some(r) = d.reference_id.filter(|r| r.starts_with(prefix))
                {
                    self.complete(&r, Outcome::Ok, Some((d.txn_id, d.wallet_id)));
                }
            }
            "TransactionFailed" => {
                if let Ok(d) = serde_json::from_value::<FailedData>(env.data)
                    && let Some(r) = d.reference_id.filter(|r| r.starts_with(prefix))
                {
                    let why = d.reason.unwrap_or_else(|| "-".into());
                    self.complete(&r, Outcome::Failed(format!("TransactionFailed {why}")), None);
                }
            }
            _ => {}
        }
    }
}

/// Publishes bookings for `duration` and waits for their outcomes. Returns the measurements and the
/// ledger for the books check (bookings that never got an event count as unknown outcomes).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    amqp_url: &str,
    topology: &Topology,
    fixture: Arc<Fixture>,
    workload: Workload,
    mode: Mode,
    duration: Duration,
    max_in_flight: usize,
    tap_queue: TapQueue,
    bar: &ProgressBar,
) -> anyhow::Result<(RunStats, ClientLedger)> {
    let conn = Connection::connect(
        amqp_url,
        ConnectionProperties::default().with_connection_name("loadtest amqp-bookings".into()),
    )
    .await
    .context("connecting to RabbitMQ (--amqp-url)")?;
    // The tap: a private queue on the wallet exchange, bound before anything is published.
    let mut consumer = tap(
        &conn,
        &topology.wallet_exchange,
        &["transaction.completed", "transaction.failed"],
        tap_queue,
    )
    .await
    .with_context(|| {
        format!(
            "binding to {} (is the service's relay running?)",
            topology.wallet_exchange
        )
    })?;
    let publisher = conn.create_channel().await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;

    let start = Instant::now();
    let shared = Arc::new(Shared {
        rec: Mutex::new(Recorder::new(start)),
        ledger: Mutex::new(ClientLedger::default()),
        pending: Mutex::new(HashMap::new()),
        sent: AtomicU64::new(0),
        fixture: fixture.clone(),
    });
    let tag = Uuid::new_v4().simple().to_string()[..10].to_string();
    let prefix = format!("lt-{tag}-");
    let listener = {
        let (shared, prefix) = (shared.clone(), prefix.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                shared.on_event(&prefix, &d.data);
            }
        })
    };
    bar.set_length(duration.as_millis() as u64);
    let stop_ticker = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (shared, bar, stop) = (shared.clone(), bar.clone(), stop_ticker.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let r = shared.rec.lock().expect("recorder lock");
                let pending = shared.pending.lock().expect("pending lock").len();
                bar.set_position(start.elapsed().as_millis().min(duration.as_millis()) as u64);
                bar.set_message(format!(
                    "published {} done {} failed {} waiting {pending}",
                    shared.sent.load(Ordering::Relaxed),
                    r.ok(),
                    r.failed()
                ));
            }
        })
    };

    let permits = Arc::new(Semaphore::new(match mode {
        Mode::Open { .. } => max_in_flight.max(1),
        Mode::Closed { concurrency } => concurrency.max(1),
    }));
    let sched = match mode {
        Mode::Open { rate } => Some(RateSchedule::new(rate).map_err(anyhow::Error::msg)?),
        Mode::Closed { .. } => None,
    };
    let total = sched.map_or(u64::MAX, |s| s.total_for(duration));
    let deadline = start + duration;
    let mut confirms = tokio::task::JoinSet::new();
    let mut i = 0u64;
    while i < total {
        let intended = match sched {
            Some(s) => {
                let due = start + s.offset(i);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                due
            }
            None => Instant::now(),
        };
        let permit = permits.clone().acquire_owned().await.expect("semaphore never closed");
        let intended = if sched.is_some() { intended } else { Instant::now() };
        if sched.is_none() && intended >= deadline {
            break;
        }
        let crate::drive::Op::Write { wallet, cents, .. } = workload.op(i) else {
            unreachable!("booking workloads are debits only")
        };
        let booking = format!("{prefix}{i}");
        let event_id = Uuid::now_v7();
        let body = serde_json::json!({
            "event_id": event_id,
            "event_type": "BookingCreated",
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "data": {
                "booking_id": booking,
                "user_id": fixture.users[wallet],
                "amount": crate::books::cents_text(cents),
                "currency": "USD",
            },
        });
        shared.pending.lock().expect("pending lock").insert(
            booking.clone(),
            Pending {
                intended,
                wallet,
                cents,
                _permit: permit,
            },
        );
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(event_id.to_string().into());
        let sent = publisher
            .basic_publish(
                topology.booking_exchange.as_str().into(),
                "booking.created".into(),
                BasicPublishOptions::default(),
                body.to_string().as_bytes(),
                props,
            )
            .await;
        let shared2 = shared.clone();
        match sent {
            Ok(confirm) => {
                confirms.spawn(async move {
                    let ok = matches!(confirm.await, Ok(c) if c.is_ack());
                    if !ok {
                        shared2.complete(&booking, Outcome::Failed("publish not confirmed".into()), None);
                    }
                });
            }
            Err(_) => shared2.complete(&booking, Outcome::Failed("publish failed".into()), None),
        }
        while confirms.try_join_next().is_some() {}
        i += 1;
    }
    let window = start.elapsed();
    while confirms.join_next().await.is_some() {}
    // Wait for the outstanding bookings' events.
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    while Instant::now() < drain_until && !shared.pending.lock().expect("pending lock").is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_ticker.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    listener.abort();
    let _ = conn.close(200, "done".into()).await;

    let mut ledger = std::mem::take(&mut *shared.ledger.lock().expect("ledger lock"));
    let missing: Vec<(String, Pending)> = shared.pending.lock().expect("pending lock").drain().collect();
    let mut rec = shared.rec.lock().expect("recorder lock");
    for (_, p) in &missing {
        // No event within the drain timeout: the outcome is unknown to the harness (the books decide).
        *ledger.unknown.entry(fixture.wallets[p.wallet]).or_default() += 1;
        rec.count_failure("no event within the drain timeout".into());
    }
    let stats = rec.finish(shared.sent.load(Ordering::Relaxed), sched.map(|s| s.rate()), window);
    Ok((stats, ledger))
}
