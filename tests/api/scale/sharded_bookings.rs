//! Booking consumption sharded by wallet (`BOOKING_SHARDS`): three instances consume the shard queues of
//! RabbitMQ's consistent-hash exchange, each shard with a single active consumer, so one wallet's bookings
//! are planned by one instance at a time. Hot-wallet bookings published there with the shard header cause
//! no version conflict at all (with competing consumers on the shared queue the same load re-plans about a
//! third of them, docs/BENCHMARKS.md), and bookings published the old way, without the header, to the
//! booking exchange, still go through the shared queue. Every booking is debited exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;
use wallet_service::events::SHARD_KEY_HEADER;

use super::counter;
use crate::faults::{conclude, ms};
use crate::helpers::amqp::{Broker, Vhost, envelope};
use crate::helpers::audit::{Auditor, booking_debits};
use crate::helpers::database::TestDatabase;
use crate::helpers::fixtures::Bank;
use crate::helpers::service::{ServiceConfig, ServiceProcess};
use crate::helpers::{eventually, paths, within};

const INSTANCES: usize = 3;
/// Connections per process.
const POOL_SIZE: usize = 8;
const SHARDS: u16 = 4;
const HOT_WALLETS: usize = 3;
const HOT_BOOKINGS: usize = 240;
/// Wallets booked once each the old way (no header, the shared queue).
const PLAIN_BOOKINGS: usize = 12;
const SETTLE_WITHIN: Duration = Duration::from_secs(45);
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// Publishes a `BookingCreated` of 1.00 to `exchange`, with the shard header when `shard_key` is given.
async fn publish(broker: &Broker, exchange: &str, booking: &str, user: Uuid, shard_key: Option<Uuid>) {
    let event_id = Uuid::now_v7();
    let data = json!({"booking_id": booking, "user_id": user, "amount": "1.00", "currency": "USD"});
    let body = envelope(event_id, "BookingCreated", data).to_string();
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(event_id.to_string().into());
    if let Some(key) = shard_key {
        let mut headers = FieldTable::default();
        headers.insert(
            SHARD_KEY_HEADER.into(),
            AMQPValue::LongString(LongString::from(key.to_string().as_str())),
        );
        props = props.with_headers(headers);
    }
    let confirm = broker
        .ch
        .basic_publish(
            exchange.into(),
            "booking.created".into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "the broker confirms the booking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bookings_sharded_by_wallet_over_three_instances_are_applied_once_without_version_conflicts() {
    within(TEST_LIMIT, "the sharded-bookings test", async {
        let started = Instant::now();
        let vhost = Vhost::create().await;
        let db = TestDatabase::create().await;
        let mut config = ServiceConfig::new(&db.url).with_amqp(&vhost.amqp_url());
        config.env.push(("BOOKING_SHARDS".into(), SHARDS.to_string()));
        // Three processes on the shared server (100 connections, other tests beside): a small pool each.
        config.env.push(("DATABASE_POOL_SIZE".into(), POOL_SIZE.to_string()));
        let mut instances = Vec::with_capacity(INSTANCES);
        for i in 0..INSTANCES {
            instances.push(ServiceProcess::start(&format!("sharded-{i}"), config.clone()).await);
        }
        let bank = Bank::new(&instances[0].base_url());
        let hot = bank.open_wallets(HOT_WALLETS, "1000.00").await;
        let plain = bank.open_wallets(PLAIN_BOOKINGS, "1000.00").await;
        let broker = Arc::new(Broker::connect(&vhost).await);
        let sharded = wallet_service::events::Topology::default().sharded_exchange;
        let run = paths::unique();

        let published_at = Instant::now();
        let mut expected = Vec::with_capacity(HOT_BOOKINGS + PLAIN_BOOKINGS);
        for i in 0..HOT_BOOKINGS {
            // Runs of four per wallet: the shared queue's round robin over three consumers would hand one
            // wallet's consecutive bookings to different instances (i % 3 would align them by chance).
            let user = hot[(i / 4) % HOT_WALLETS].user_id;
            let booking = format!("hot-{run}-{i}");
            publish(&broker, &sharded, &booking, user, Some(user)).await;
            expected.push(booking);
        }
        let booking_exchange = broker.topology.booking_exchange.clone();
        for (i, w) in plain.iter().enumerate() {
            let booking = format!("plain-{run}-{i}");
            publish(&broker, &booking_exchange, &booking, w.user_id, None).await;
            expected.push(booking);
        }

        let auditor = Auditor::connect(&db.url).await;
        let all_booked = eventually(SETTLE_WITHIN, || async {
            auditor
                .count(
                    "SELECT count(*) FROM transactions WHERE reference_type = 'BOOKING' AND type = 'DEBIT'",
                    &[],
                )
                .await
                >= expected.len() as i64
        })
        .await;
        let booking_seconds = published_at.elapsed().as_secs_f64();
        let queues: Vec<String> = std::iter::once(broker.topology.queue.clone())
            .chain((0..SHARDS).map(|i| broker.topology.shard_queue(i)))
            .collect();
        let drained = eventually(SETTLE_WITHIN, || async {
            for q in &queues {
                if broker.ready_count(q).await != 0 || vhost.unacknowledged(q).await != Some(0) {
                    return false;
                }
            }
            true
        })
        .await;

        let per_booking = booking_debits(&db.client().await).await;
        let missing = expected.iter().filter(|b| !per_booking.contains_key(*b)).count();
        let doubled = per_booking.values().filter(|n| **n > 1).count();
        let mut balance_breaks = Vec::new();
        for w in &hot {
            let want = Decimal::from(1000 - (HOT_BOOKINGS / HOT_WALLETS) as i64);
            let got = auditor.balance(w.wallet_id).await;
            if got != want {
                balance_breaks.push(format!("{}: {got}, expected {want}", w.wallet_id));
            }
        }
        let bank_breaks = auditor.bank_breaks().await;
        let (mut conflicts, mut consumed) = (Vec::with_capacity(INSTANCES), Vec::with_capacity(INSTANCES));
        for svc in &instances {
            conflicts.push(counter(&svc.base_url(), "wallet_version_conflicts_total").await);
            consumed.push(counter(&svc.base_url(), "events_consumed_total").await);
        }
        let total_conflicts: f64 = conflicts.iter().sum();

        let figures = json!({
            "instances": INSTANCES,
            "shards": SHARDS,
            "hot_bookings": HOT_BOOKINGS,
            "plain_bookings": PLAIN_BOOKINGS,
            "found": per_booking.len(),
            "lost": missing,
            "doubled": doubled,
            "version_conflicts": conflicts,
            "consumed_per_instance": consumed,
            "bookings_per_s": ((expected.len() as f64 / booking_seconds) * 10.0).round() / 10.0,
            "elapsed_ms": ms(started.elapsed()),
        });
        let mut violations = Vec::new();
        for (ok, what) in [
            (all_booked, "not every booking was debited in time"),
            (drained, "the shared and shard queues did not drain"),
            (missing == 0, "bookings not debited"),
            (doubled == 0, "bookings debited more than once"),
            (
                balance_breaks.is_empty(),
                "hot wallets' balances differ from 1000.00 minus their bookings",
            ),
            (bank_breaks.is_empty(), "balance != initial + ledger"),
            (
                total_conflicts == 0.0,
                "version conflicts: two instances planned one wallet's bookings",
            ),
        ] {
            if !ok {
                violations.push(what.to_string());
            }
        }
        let logs: Vec<String> = instances.iter().map(|s| s.log_path().display().to_string()).collect();
        conclude(
            "bookings_sharded_by_wallet_over_three_instances_are_applied_once_without_version_conflicts",
            figures,
            violations,
            format!("balances {balance_breaks:?}, bank {bank_breaks:?}\nlogs {logs:?}"),
        );
    })
    .await;
}
