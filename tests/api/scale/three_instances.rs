//! Three `wallet-service` processes over one database and one RabbitMQ vhost, behind a real HAProxy that
//! routes a wallet's requests to one instance by consistent hashing on the wallet segment of the path (the
//! Ingress's routing). Six clients send keyed debits, credits and transfers through HAProxy, each retried
//! with its key until final, while booking events for three hot wallets are published to the broker and
//! consumed by all three instances as competing consumers (with duplicates: the same event again). Then:
//! every balance equals its ledger, every acknowledged operation is in the ledger exactly once and nothing
//! else is, every booking is debited exactly once. The second test SIGKILLs one instance mid-run and
//! starts it again: the same must hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use super::counter;
use crate::faults::{KEY_ANSWERABLE_WITHIN, conclude, ms, seed};
use crate::helpers::amqp::{Broker, Vhost, envelope};
use crate::helpers::audit::{Auditor, booking_debits};
use crate::helpers::client::RetryingClient;
use crate::helpers::database::TestDatabase;
use crate::helpers::fixtures::{Bank, service_token};
use crate::helpers::haproxy::HaProxy;
use crate::helpers::load::{Load, Mix};
use crate::helpers::service::{ServiceConfig, ServiceProcess};
use crate::helpers::{eventually, paths, within};

const INSTANCES: usize = 3;
/// Connections per process.
const POOL_SIZE: usize = 8;
/// Wallets the HTTP clients move money between.
const WALLETS: usize = 12;
const WORKERS: usize = 6;
/// Wallets of the booking events: few, so that the three consumers compete for them.
const HOT_WALLETS: usize = 3;
const BOOKINGS: usize = 240;
/// Every `DUPLICATE_EVERY`th booking is published twice with the same event id (a redelivery).
const DUPLICATE_EVERY: usize = 8;
const BURST: usize = 20;
const PAUSE: Duration = Duration::from_millis(150);
/// Operations answered before the kill, and again after the restart (or in all, without a kill).
const PROGRESS: usize = 40;
/// How long the test waits for that progress: keys the dead process held may stay in progress for the
/// lease, then there must be time to answer them.
const PROGRESS_WITHIN: Duration = KEY_ANSWERABLE_WITHIN.saturating_add(Duration::from_secs(10));
const SETTLE_WITHIN: Duration = Duration::from_secs(45);
const CLIENT_BUDGET: Duration = Duration::from_secs(40);
const TEST_LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_behind_haproxy_keep_the_books_exact_under_http_load_and_bookings() {
    within(TEST_LIMIT, "the three-instance test", run(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_behind_haproxy_keep_the_books_exact_when_one_is_killed_and_restarted() {
    within(TEST_LIMIT, "the three-instance kill test", run(true)).await;
}

async fn run(kill: bool) {
    let test = if kill {
        "three_instances_behind_haproxy_keep_the_books_exact_when_one_is_killed_and_restarted"
    } else {
        "three_instances_behind_haproxy_keep_the_books_exact_under_http_load_and_bookings"
    };
    let started = Instant::now();
    let seed = seed();
    let vhost = Vhost::create().await;
    let db = TestDatabase::create().await;
    let mut config = ServiceConfig::new(&db.url).with_amqp(&vhost.amqp_url());
    // Three processes on the shared server (100 connections, other tests beside): a small pool each.
    config.env.push(("DATABASE_POOL_SIZE".into(), POOL_SIZE.to_string()));
    let mut instances = Vec::with_capacity(INSTANCES);
    for i in 0..INSTANCES {
        instances.push(ServiceProcess::start(&format!("scale-{i}"), config.clone()).await);
    }
    let ports: Vec<u16> = instances.iter().map(ServiceProcess::port).collect();
    let proxy = HaProxy::start(&ports).await;
    proxy.wait_routable().await;

    let bank = Bank::new(&proxy.base_url());
    let wallets = bank.open_wallet_ids(WALLETS, "1000.00").await;
    let hot = bank.open_wallets(HOT_WALLETS, "1000.00").await;
    let client = Arc::new(RetryingClient::new(&proxy.base_url(), &service_token()).with_budget(CLIENT_BUDGET));
    let mix = Mix {
        debit: 4,
        credit: 3,
        transfer: 3,
    };
    let load = Load::start(client.clone(), WORKERS, mix, &wallets, seed);

    // Booking events, published while the HTTP load runs.
    let run_id = paths::unique();
    let bookings: Vec<(String, Uuid, Uuid)> = (0..BOOKINGS)
        .map(|i| (format!("bk-{run_id}-{i}"), hot[i % HOT_WALLETS].user_id, Uuid::now_v7()))
        .collect();
    let publisher = Arc::new(Broker::connect(&vhost).await);
    let bookings_started = Instant::now();
    let sent = Arc::new(AtomicUsize::new(0));
    let publishing = {
        let (publisher, sent, bookings) = (publisher.clone(), sent.clone(), bookings.clone());
        tokio::spawn(async move {
            for (i, (booking, user, event_id)) in bookings.iter().enumerate() {
                let data = json!({"booking_id": booking, "user_id": user, "amount": "1.00", "currency": "USD",
                    "description": "Hotel"});
                let body = envelope(*event_id, "BookingCreated", data).to_string().into_bytes();
                let copies = if i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    publisher
                        .publish_booking("booking.created", &body, Some(*event_id))
                        .await;
                }
                sent.store(i + 1, Ordering::Release);
                if i % BURST == BURST - 1 {
                    tokio::time::sleep(PAUSE).await;
                }
            }
        })
    };

    let mut progress_stalled = 0;
    let mut killed = json!(null);
    if kill {
        if !eventually(PROGRESS_WITHIN, || async { load.answered() >= PROGRESS }).await {
            progress_stalled += 1;
        }
        let victim = seed as usize % INSTANCES;
        let killed_at = Instant::now();
        let at_answered = load.answered();
        let at_sent = sent.load(Ordering::Acquire);
        instances[victim].sigkill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        instances[victim].restart().await;
        killed = json!({"instance": victim, "at_answered": at_answered, "at_bookings_sent": at_sent,
            "back_ready_ms": ms(killed_at.elapsed())});
        let before = load.answered();
        if !eventually(PROGRESS_WITHIN, || async { load.answered() >= before + PROGRESS }).await {
            progress_stalled += 1;
        }
    } else if !eventually(PROGRESS_WITHIN, || async { load.answered() >= 2 * PROGRESS }).await {
        progress_stalled += 1;
    }
    let published = tokio::time::timeout(SETTLE_WITHIN, publishing)
        .await
        .is_ok_and(|r| r.is_ok());
    let auditor = Auditor::connect(&db.url).await;
    let booked = || async {
        auditor
            .count(
                "SELECT count(*) FROM transactions WHERE reference_type = 'BOOKING' AND type = 'DEBIT'",
                &[],
            )
            .await
    };
    let all_booked = eventually(SETTLE_WITHIN, || async { booked().await >= BOOKINGS as i64 }).await;
    let booking_seconds = bookings_started.elapsed().as_secs_f64();
    let ops = load.finish().await;
    let queue = publisher.topology.queue.clone();
    let drained = eventually(SETTLE_WITHIN, || async {
        publisher.ready_count(&queue).await == 0 && vhost.unacknowledged(&queue).await == Some(0)
    })
    .await;

    // Conflicts: the live processes' counters (a killed process's count died with it).
    let mut conflicts = Vec::with_capacity(INSTANCES);
    for svc in &instances {
        conflicts.push(counter(&svc.base_url(), "wallet_version_conflicts_total").await);
    }

    let mut report = Auditor::replay_and_audit(&client, &db.url, &ops, KEY_ANSWERABLE_WITHIN).await;
    // The hot wallets' debits are bookings, not the clients' operations: they are checked below.
    let hot_ids: Vec<String> = hot.iter().map(|w| w.wallet_id.to_string()).collect();
    report
        .books_breaks
        .retain(|b| !hot_ids.iter().any(|h| b.starts_with(h.as_str())));

    let per_booking = booking_debits(&db.client().await).await;
    let missing = bookings.iter().filter(|(b, _, _)| !per_booking.contains_key(b)).count();
    let doubled = per_booking.values().filter(|n| **n > 1).count();
    let mut hot_breaks = Vec::new();
    for w in &hot {
        let expected = Decimal::from(1000 - (BOOKINGS / HOT_WALLETS) as i64);
        let balance = auditor.balance(w.wallet_id).await;
        if balance != expected {
            hot_breaks.push(format!("{}: {balance}, expected {expected}", w.wallet_id));
        }
    }
    let served: Vec<Value> = instances
        .iter()
        .map(|s| json!(s.log_path().display().to_string()))
        .collect();

    let mut figures = report.figures();
    figures["seed"] = json!(seed);
    figures["instances"] = json!(INSTANCES);
    figures["routing"] = json!("balance uri path-only depth 2, hash-type consistent");
    figures["bookings"] = json!(BOOKINGS);
    figures["bookings_found"] = json!(per_booking.len());
    figures["bookings_missing"] = json!(missing);
    figures["bookings_doubled"] = json!(doubled);
    figures["bookings_per_s"] = json!((BOOKINGS as f64 / booking_seconds * 10.0).round() / 10.0);
    figures["version_conflicts"] = json!(conflicts);
    figures["killed"] = killed;
    figures["progress_stalled"] = json!(progress_stalled);
    figures["elapsed_ms"] = json!(ms(started.elapsed()));

    let mut violations = report.violations();
    for (ok, what) in [
        (published, "not every booking event was published in time"),
        (all_booked, "not every booking was debited in time"),
        (drained, "the booking queue did not drain"),
        (missing == 0, "bookings not debited"),
        (doubled == 0, "bookings debited more than once"),
        (
            hot_breaks.is_empty(),
            "hot wallets' balances differ from 1000.00 minus their bookings",
        ),
        (progress_stalled == 0, "the clients made no progress in time"),
    ] {
        if !ok {
            violations.push(what.to_string());
        }
    }
    conclude(
        test,
        figures,
        violations,
        format!(
            "seed {seed}: examples {:#?}\nhot wallets {hot_breaks:?}\nlogs {served:?}\nhaproxy {}",
            report.examples,
            proxy.config_path.display()
        ),
    );
}
