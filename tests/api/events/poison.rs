//! Messages that cannot be applied: malformed ones are dead-lettered at once, impossible ones (unknown
//! user, cancellation of a booking never debited) after the bounded retries, with the reason in the
//! `x-death-reason` header; the queue keeps flowing.

use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use crate::helpers::amqp::{app_on_vhost, envelope};
use crate::helpers::app::{TestApp, fast_events};
use crate::helpers::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_are_dead_lettered_with_their_reason_and_the_queue_keeps_flowing() {
    let events = fast_events();
    let max_attempts = events.retry.max_attempts;
    let (_vhost, mut app, broker) = app_on_vhost(TestApp::builder().events(events)).await;
    let (user, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let exchange = broker.topology.booking_exchange.clone();

    let started = Instant::now();
    // Not JSON at all; JSON but not an envelope; an envelope with a bad amount; an unknown event type.
    broker
        .publish_raw(&exchange, "booking.created", b"{not json", None)
        .await;
    broker
        .publish_raw(&exchange, "booking.created", br#"{"hello":"world"}"#, None)
        .await;
    broker
        .publish_event(
            Uuid::now_v7(),
            "BookingCreated",
            json!({"booking_id": "b-bad", "user_id": user, "amount": "1.005", "currency": "USD"}),
        )
        .await;
    let unknown = envelope(Uuid::now_v7(), "BookingTeleported", json!({}));
    broker
        .publish_raw(&exchange, "booking.created", unknown.to_string().as_bytes(), None)
        .await;
    // A user nobody announced: retried, then dead-lettered.
    let stranger = Uuid::new_v4();
    broker.booking_created("b-stranger", stranger, "5.00", "USD").await;
    // A cancellation of a booking that never comes: retried, then dead-lettered.
    broker.booking_cancelled("b-never", user, None).await;
    // And a good one behind them all.
    broker.booking_created("b-good", user, "5.00", "USD").await;

    wait_until("the good booking is debited", || async {
        app.balance(wallet).await == "95.00"
    })
    .await;
    let dlq = broker.topology.dead_letter_queue.clone();
    wait_until("six dead letters", || async { broker.ready_count(&dlq).await >= 6 }).await;
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dead = broker.dead_letters().await;
    let reasons: Vec<&str> = dead.iter().filter_map(|d| d.reason.as_deref()).collect();
    assert_eq!(dead.len(), 6, "{reasons:?}");
    let count = |code: &str| reasons.iter().filter(|r| r.starts_with(code)).count();
    assert_eq!(count("MALFORMED"), 3, "{reasons:?}");
    assert_eq!(count("UNKNOWN_USER"), 1, "{reasons:?}");
    assert_eq!(count("BOOKING_NOT_DEBITED"), 1, "{reasons:?}");
    assert_eq!(count("UNKNOWN_EVENT_TYPE"), 1, "{reasons:?}");
    for d in &dead {
        let reason = d.reason.as_deref().unwrap();
        if reason.starts_with("MALFORMED") || reason.starts_with("UNKNOWN_EVENT_TYPE") {
            assert_eq!(d.attempts, Some(1), "malformed is dead-lettered at once: {d:?}");
        } else {
            assert_eq!(
                d.attempts,
                Some(i64::from(max_attempts)),
                "retried up to the bound: {d:?}"
            );
        }
        assert!(d.original_routing_key.is_some());
    }
    assert!(
        elapsed < Duration::from_secs(10),
        "bounded retries end quickly ({elapsed:?})"
    );
    // The original body is kept for replay.
    assert!(dead.iter().any(|d| d.body == b"{not json"));
    assert!(app.booking_rows(wallet, "b-never").await.is_empty());
    app.stop().await;
    assert_eq!(broker.ready_in_queue().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancellation_before_its_booking_is_retried_until_the_booking_arrives() {
    let mut events = fast_events();
    events.retry.max_attempts = 20;
    let (_vhost, mut app, broker) = app_on_vhost(TestApp::builder().events(events)).await;
    let (user, _, wallet) = app.user_with_wallet("100.00", "USD").await;

    broker.booking_cancelled("late", user, Some("4.00")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.booking_created("late", user, "10.00", "USD").await;
    wait_until("debit then refund", || async {
        app.booking_rows(wallet, "late").await.len() == 2
    })
    .await;
    assert_eq!(app.balance(wallet).await, "94.00");
    assert!(broker.dead_letters().await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_booking_for_a_user_announced_later_is_decided_within_the_retries() {
    let mut events = fast_events();
    events.retry.max_attempts = 20;
    let (_vhost, mut app, broker) = app_on_vhost(TestApp::builder().events(events)).await;

    let user = Uuid::new_v4();
    broker.booking_created("early", user, "0.50", "USD").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The wallet is created by UserCreated with 0.00: the booking is then refused, not lost.
    broker
        .publish_event(
            Uuid::now_v7(),
            "UserCreated",
            json!({"user_id": user, "email": "late@example.com", "company_id": Uuid::new_v4(), "role": "user"}),
        )
        .await;
    wait_until("the booking's refusal is recorded", || async {
        app.count(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'TransactionFailed'",
            &[],
        )
        .await
            == 1
    })
    .await;
    assert!(broker.dead_letters().await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_with_a_nul_in_its_text_is_dead_lettered_at_once_and_changes_nothing() {
    let mut events = fast_events();
    // Were it taken for transient, it would be retried for a long time rather than dead-lettered.
    events.retry.max_attempts = 20;
    let (_vhost, mut app, broker) = app_on_vhost(TestApp::builder().events(events)).await;
    let (user, _, wallet) = app.user_with_wallet("100.00", "USD").await;

    let started = Instant::now();
    broker
        .publish_event(
            Uuid::now_v7(),
            "BookingCreated",
            json!({"booking_id": "b-nul-desc", "user_id": user, "amount": "5.00", "currency": "USD",
                   "description": "Hotel\u{0}Paris"}),
        )
        .await;
    broker
        .publish_event(
            Uuid::now_v7(),
            "BookingCreated",
            json!({"booking_id": "b-\u{0}", "user_id": user, "amount": "5.00", "currency": "USD"}),
        )
        .await;
    let stranger = Uuid::new_v4();
    broker
        .publish_event(
            Uuid::now_v7(),
            "UserCreated",
            json!({"user_id": stranger, "email": "nul\u{0}@example.com", "company_id": Uuid::new_v4(),
                   "role": "user"}),
        )
        .await;
    // And a good one behind them.
    broker.booking_created("b-fine", user, "5.00", "USD").await;

    wait_until("the good booking is debited", || async {
        app.balance(wallet).await == "95.00"
    })
    .await;
    let dlq = broker.topology.dead_letter_queue.clone();
    wait_until("three dead letters", || async { broker.ready_count(&dlq).await >= 3 }).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "dead-lettered at once, not after backoff"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dead = broker.dead_letters().await;
    assert_eq!(dead.len(), 3, "{dead:?}");
    let mut fields = Vec::new();
    for d in &dead {
        let reason = d.reason.as_deref().unwrap_or_default();
        assert!(reason.starts_with("MALFORMED") && reason.contains("NUL"), "{d:?}");
        assert_eq!(d.attempts, Some(1), "poison, dead-lettered on its first attempt: {d:?}");
        fields.push(reason.to_string());
    }
    for field in ["data.description", "data.booking_id", "data.email"] {
        assert!(fields.iter().any(|r| r.contains(field)), "{field} named in {fields:?}");
    }
    assert!(app.booking_rows(wallet, "b-nul-desc").await.is_empty());
    let c = app.db.client().await;
    let users: i64 = c
        .query_one("SELECT count(*) FROM users WHERE user_id = $1", &[&stranger])
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 0);
    app.stop().await;
    assert_eq!(broker.ready_in_queue().await, 0);
}
