//! A graceful stop in the middle of a backlog loses nothing (the next process finishes it, once); a
//! database that goes away makes the consumer retry with backoff, not dead-letter.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::helpers::amqp::{app_on_vhost, attached_on};
use crate::helpers::app::{TestApp, fast_events};
use crate::helpers::wait_until;

const BOOKINGS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_mid_stream_finishes_in_flight_messages_and_loses_nothing() {
    let (vhost, mut first, broker) = app_on_vhost(TestApp::builder().events(fast_events())).await;
    let mut users = Vec::new();
    for _ in 0..10 {
        users.push(first.user_with_wallet("1000.00", "USD").await);
    }
    let bookings: Vec<(String, Uuid, String, &str)> = (0..BOOKINGS)
        .map(|i| (format!("s-{i}"), users[i % users.len()].0, "2.00".to_string(), "USD"))
        .collect();
    broker.bookings_burst(&bookings).await;
    let c = first.db.client().await;
    let debits = || async {
        c.query_one(
            "SELECT count(*) FROM transactions WHERE reference_type = 'BOOKING'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    wait_until("some bookings are debited", || async { debits().await >= 50 }).await;
    let stopping = Instant::now();
    first.stop().await;
    let stop_took = stopping.elapsed();
    let at_stop = debits().await;
    assert!(
        stop_took < Duration::from_secs(10),
        "stop drains quickly ({stop_took:?})"
    );
    assert_eq!(first.unpublished().await, 0, "the outbox was flushed at stop");

    let mut second = attached_on(&vhost, first.another().events(fast_events())).await;
    wait_until("the rest is debited", || async { debits().await == BOOKINGS as i64 }).await;
    eprintln!("stopped in {stop_took:?} with {at_stop} of {BOOKINGS} debited; the second process did the rest");
    let per_user = format!("{}.00", 1000 - 2 * BOOKINGS / users.len());
    for (_, _, w) in &users {
        assert_eq!(second.balance(*w).await, per_user);
    }
    wait_until("every outbox row is published", || async {
        second.unpublished().await == 0
    })
    .await;
    assert!(broker.dead_letters().await.is_empty());
    second.stop().await;
    assert_eq!(broker.ready_in_queue().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_the_database_is_down_events_are_retried_not_dead_lettered() {
    let (_vhost, mut app, broker) = app_on_vhost(TestApp::builder().events(fast_events())).await;
    let (user, _, wallet) = app.user_with_wallet("50.00", "USD").await;

    app.db.set_connections(false).await;
    broker.booking_created("db-down", user, "5.00", "USD").await;
    // Longer than the whole retry bound of `fast_events` (4 attempts, ≤ 200 ms apart): a transient
    // failure does not count towards it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let err = app.readiness().await.expect_err("not ready without its database");
    assert!(err.contains("database"), "{err}");
    assert_eq!(broker.ready_count(&broker.topology.dead_letter_queue).await, 0);
    app.db.set_connections(true).await;

    wait_until("the booking is debited once the database is back", || async {
        app.booking_rows(wallet, "db-down").await.len() == 1
    })
    .await;
    assert_eq!(app.balance(wallet).await, "45.00");
    wait_until("its event is published", || async { app.unpublished().await == 0 }).await;
    assert!(broker.dead_letters().await.is_empty());
    app.stop().await;
    assert_eq!(broker.ready_in_queue().await, 0);
}
