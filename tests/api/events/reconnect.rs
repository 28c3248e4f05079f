//! The broker drops the service's connections (closed from the management API, as a broker restart or
//! a network cut would) twice while it works through a backlog of 1,000 bookings: afterwards every
//! booking is debited exactly once and every outbox row has been published (at least once; consumers
//! dedup by event_id).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::helpers::amqp::app_on_vhost;
use crate::helpers::app::{TestApp, fast_events};
use crate::helpers::{WAIT, wait_until};

const BOOKINGS: usize = 1_000;
const USERS: usize = 50;

/// Sum of a counter's samples in Prometheus text.
fn counter(metrics: &str, name: &str, filter: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_closed_by_the_broker_lose_nothing_and_double_nothing() {
    let started = Instant::now();
    let (vhost, mut app, broker) = app_on_vhost(TestApp::builder().events(fast_events())).await;
    let broker = Arc::new(broker);
    let tap = broker.tap().await;
    let mut users = Vec::new();
    for _ in 0..USERS {
        users.push(app.user_with_wallet("10000.00", "USD").await);
    }
    let c = app.db.client().await;
    let debits = || async {
        c.query_one(
            "SELECT count(*) FROM transactions WHERE reference_type = 'BOOKING' AND type = 'DEBIT'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };

    // A backlog: published faster than it is consumed.
    let bookings: Vec<(String, Uuid, String, &str)> = (0..BOOKINGS)
        .map(|i| (format!("bk-{i}"), users[i % USERS].0, "1.00".to_string(), "USD"))
        .collect();
    let publisher = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.bookings_burst(&bookings).await })
    };

    let mut kills = 0;
    for at in [BOOKINGS as i64 * 3 / 10, BOOKINGS as i64 * 7 / 10] {
        wait_until("bookings are being debited", || async { debits().await >= at }).await;
        let deadline = Instant::now() + WAIT;
        let names = loop {
            // The management API lists connections with a short delay after they open.
            let names = vhost.connections("wallet-service").await;
            if names.len() >= 2 {
                break names;
            }
            assert!(Instant::now() < deadline, "the service's connections are listed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let done = debits().await;
        for n in &names {
            vhost.close_connection(n).await;
        }
        kills += names.len();
        eprintln!(
            "closed {} connections with {done} of {BOOKINGS} bookings debited",
            names.len()
        );
    }
    publisher.await.expect("every booking published");
    assert!(kills >= 4, "consumer and publisher connections were closed twice");

    wait_until("every booking is debited", || async {
        debits().await == BOOKINGS as i64
    })
    .await;
    wait_until("the consumer is attached again", || async { app.consumer_attached() }).await;
    wait_until("every outbox row is published", || async {
        app.unpublished().await == 0
    })
    .await;

    // Exactly once per booking.
    let dup: i64 = c
        .query_one(
            "SELECT count(*) FROM (SELECT reference_id FROM transactions WHERE reference_type = 'BOOKING' \
             GROUP BY wallet_id, reference_id, type HAVING count(*) > 1) d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dup, 0, "no booking is debited twice");
    let per_wallet = format!("{}.00", 10_000 - BOOKINGS / USERS);
    for (_, _, wallet) in &users {
        assert_eq!(app.balance(*wallet).await, per_wallet);
    }
    // Every outbox row reached wallet.events (possibly more than once: dedup by message_id).
    let ids: Vec<Uuid> = c
        .query("SELECT event_id FROM outbox_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // A WalletCreated and an opening balance per user, a TransactionCompleted per booking.
    assert_eq!(ids.len(), BOOKINGS + 2 * USERS);
    wait_until("the tap saw every event", || async {
        let seen: HashSet<String> = tap.all().into_iter().filter_map(|p| p.message_id).collect();
        ids.iter().all(|id| seen.contains(&id.to_string()))
    })
    .await;
    let received = tap.all().len();
    let distinct: HashSet<String> = tap.all().into_iter().filter_map(|p| p.message_id).collect();
    let metrics = app.render_metrics();
    let consumed = counter(&metrics, "events_consumed_total", "");
    let duplicates = counter(&metrics, "events_acked_total", "outcome=\"duplicate\"");
    eprintln!(
        "{BOOKINGS} bookings, {kills} connections closed: {consumed} deliveries ({duplicates} absorbed as \
         duplicates); {received} messages published for {} events ({} re-sent); {:?}",
        distinct.len(),
        received - distinct.len(),
        started.elapsed()
    );
    assert!(consumed >= BOOKINGS as f64);
    assert!(broker.dead_letters().await.is_empty());
    app.stop().await;
    assert_eq!(broker.ready_in_queue().await, 0, "every delivery acked");
    assert!(started.elapsed() < Duration::from_secs(90));
}
