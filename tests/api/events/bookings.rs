//! BookingCreated → debit, BookingCancelled → refund, through a real RabbitMQ (a vhost per test) and a
//! real Postgres: once each, whatever the broker redelivers.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::amqp::{app_on_vhost, envelope};
use crate::helpers::app::{Done, Outcome, TestApp, fast_events};
use crate::helpers::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_booking_is_debited_once_and_announced_with_transaction_completed() {
    let (_vhost, mut app, broker) = app_on_vhost(TestApp::builder().events(fast_events())).await;
    let tap = broker.tap().await;
    let (user, _, wallet) = app.user_with_wallet("100.00", "USD").await;

    // The same event, delivered three times.
    let event = Uuid::now_v7();
    let data = json!({"booking_id": "bk-1", "user_id": user, "amount": "25.50", "currency": "USD"});
    for _ in 0..3 {
        broker.publish_event(event, "BookingCreated", data.clone()).await;
    }
    let completed = tap
        .wait_for("TransactionCompleted", |p| {
            p.body["event_type"] == "TransactionCompleted" && p.body["data"]["type"] == "DEBIT"
        })
        .await;
    assert_eq!(completed.routing_key, "transaction.completed");
    assert_eq!(completed.content_type.as_deref(), Some("application/json"));
    assert_eq!(completed.delivery_mode, Some(2), "persistent");
    assert_eq!(completed.message_id.as_deref(), completed.body["event_id"].as_str());
    let d = &completed.body["data"];
    assert_eq!(d["wallet_id"], wallet.to_string());
    assert_eq!(d["amount"], "25.50");
    assert_eq!(d["type"], "DEBIT");
    assert_eq!(d["reference_id"], "bk-1");
    assert_eq!(d["new_balance"], "74.50");
    assert!(Uuid::parse_str(d["txn_id"].as_str().unwrap()).is_ok());
    assert!(completed.body["timestamp"].is_string());

    // A consumer crash between commit and ack: the effect committed, the broker delivers again.
    let crashed = Uuid::now_v7();
    let body = envelope(
        crashed,
        "BookingCreated",
        json!({"booking_id": "bk-2", "user_id": user, "amount": "10.00", "currency": "USD"}),
    );
    let bytes = body.to_string().into_bytes();
    assert_eq!(
        app.handle_event(&bytes, "booking.created").await,
        Outcome::Done(Done::Applied)
    );
    broker
        .publish_event(crashed, "BookingCreated", body["data"].clone())
        .await;
    // Another event id for an already debited booking: the reference keeps it to one debit.
    broker.booking_created("bk-1", user, "25.50", "USD").await;

    wait_until("both bookings debited", || async {
        app.balance(wallet).await == "64.50"
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.booking_rows(wallet, "bk-1").await,
        vec![("DEBIT".into(), "25.50".into())]
    );
    assert_eq!(
        app.booking_rows(wallet, "bk-2").await,
        vec![("DEBIT".into(), "10.00".into())]
    );
    assert_eq!(app.balance(wallet).await, "64.50");
    wait_until("every outbox row is published", || async {
        app.unpublished().await == 0
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Besides the opening balance's (a ledger entry like any credit).
    assert_eq!(tap.of_type("TransactionCompleted").len(), 3, "one event per debit");
    assert!(broker.dead_letters().await.is_empty());
    let c = app.db.client().await;
    let inbox: Vec<String> = c
        .query(
            "SELECT event_type FROM processed_events WHERE event_id = ANY($1)",
            &[&vec![event, crashed]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        inbox,
        ["BookingCreated", "BookingCreated"],
        "the inbox records the event's type, not the posting's direction"
    );
    app.stop().await;
    assert_eq!(broker.ready_in_queue().await, 0, "every delivery was acked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancellation_refunds_once_and_partial_refunds_never_exceed_the_debit() {
    let (_vhost, mut app, broker) = app_on_vhost(TestApp::builder().events(fast_events())).await;
    let tap = broker.tap().await;
    let (user, _, wallet) = app.user_with_wallet("500.00", "EUR").await;

    broker.booking_created("full", user, "100.00", "EUR").await;
    broker.booking_created("partial", user, "100.00", "EUR").await;
    broker.booking_created("too-much", user, "100.00", "EUR").await;
    wait_until("three debits", || async { app.balance(wallet).await == "200.00" }).await;

    // Full refund, cancelled twice (two event ids) and one event delivered twice.
    let cancel = broker.booking_cancelled("full", user, None).await;
    broker.booking_cancelled("full", user, None).await;
    broker
        .publish_event(
            cancel,
            "BookingCancelled",
            json!({"booking_id": "full", "user_id": user}),
        )
        .await;
    // Partial refund, then a second (larger) one that must not add to it. (Deliveries are handled
    // concurrently: of two cancellations in flight at once, the first to commit wins.)
    broker.booking_cancelled("partial", user, Some("30.00")).await;
    wait_until("the partial refund", || async {
        app.booking_rows(wallet, "partial").await.len() == 2
    })
    .await;
    broker.booking_cancelled("partial", user, Some("80.00")).await;
    // More than was debited: refused, dead-lettered, no effect.
    broker.booking_cancelled("too-much", user, Some("100.01")).await;

    wait_until("the refunds", || async { app.balance(wallet).await == "330.00" }).await;
    wait_until("the dead letter", || async {
        broker.ready_count(&broker.topology.dead_letter_queue).await == 1
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.booking_rows(wallet, "full").await,
        vec![("DEBIT".into(), "100.00".into()), ("CREDIT".into(), "100.00".into())]
    );
    assert_eq!(
        app.booking_rows(wallet, "partial").await,
        vec![("DEBIT".into(), "100.00".into()), ("CREDIT".into(), "30.00".into())]
    );
    assert_eq!(
        app.booking_rows(wallet, "too-much").await,
        vec![("DEBIT".into(), "100.00".into())]
    );
    assert_eq!(app.balance(wallet).await, "330.00");

    let dead = broker.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].reason.as_deref().unwrap().starts_with("REFUND_EXCEEDS_DEBIT"),
        "{dead:?}"
    );
    assert_eq!(dead[0].original_routing_key.as_deref(), Some("booking.cancelled"));

    wait_until("every outbox row is published", || async {
        app.unpublished().await == 0
    })
    .await;
    let credits = || {
        tap.of_type("TransactionCompleted")
            .into_iter()
            .filter(|p| p.body["data"]["type"] == "CREDIT" && p.body["data"]["reference_id"] != wallet.to_string())
            .count()
    };
    wait_until("the refunds' events", || async { credits() == 2 }).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(credits(), 2, "one TransactionCompleted per refund");
    let c = app.db.client().await;
    let cancel_type: String = c
        .query_one(
            "SELECT event_type FROM processed_events WHERE event_id = $1",
            &[&cancel],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cancel_type, "BookingCancelled");
    app.stop().await;
    assert_eq!(broker.ready_in_queue().await, 0, "every delivery was acked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_debit_is_acked_and_announced_with_transaction_failed() {
    let (_vhost, mut app, broker) = app_on_vhost(TestApp::builder().events(fast_events())).await;
    let tap = broker.tap().await;
    let (user, _, wallet) = app.user_with_wallet("10.00", "USD").await;

    let event = broker.booking_created("big", user, "50.00", "USD").await;
    let failed = tap
        .wait_for("TransactionFailed", |p| p.body["event_type"] == "TransactionFailed")
        .await;
    assert_eq!(failed.routing_key, "transaction.failed");
    assert_eq!(failed.message_id.as_deref(), failed.body["event_id"].as_str());
    let d = &failed.body["data"];
    assert_eq!(d["wallet_id"], wallet.to_string());
    assert_eq!(d["user_id"], user.to_string());
    assert_eq!(d["amount"], "50.00");
    assert_eq!(d["reference_id"], "big");
    assert_eq!(d["reason"], "INSUFFICIENT_FUNDS");

    // Redelivered: no second TransactionFailed. Other currency: refused too.
    broker
        .publish_event(
            event,
            "BookingCreated",
            json!({"booking_id": "big", "user_id": user, "amount": "50.00", "currency": "USD"}),
        )
        .await;
    broker.booking_created("euros", user, "1.00", "EUR").await;
    tap.wait_for("the currency refusal", |p| {
        p.body["data"]["reason"] == "CURRENCY_MISMATCH"
    })
    .await;
    // Cancelling a refused booking: nothing to refund, acked (not dead-lettered).
    broker.booking_cancelled("big", user, None).await;

    let c = app.db.client().await;
    wait_until("the cancellation is processed", || async {
        app.count(
            "SELECT count(*) FROM processed_events WHERE event_type = 'BookingCancelled'",
            &[],
        )
        .await
            == 1
    })
    .await;
    assert_eq!(app.balance(wallet).await, "10.00", "nothing debited");
    assert!(app.booking_rows(wallet, "big").await.is_empty());
    assert!(broker.dead_letters().await.is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(tap.of_type("TransactionFailed").len(), 2);
    let inbox: i64 = c
        .query_one("SELECT count(*) FROM processed_events WHERE event_id = $1", &[&event])
        .await
        .unwrap()
        .get(0);
    assert_eq!(inbox, 1, "the refusal recorded the event in the inbox");
    app.stop().await;
    assert_eq!(broker.ready_in_queue().await, 0, "every delivery was acked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_booking_is_captured_by_booking_confirmed_through_the_broker_and_announced() {
    let (_vhost, mut app, broker) = app_on_vhost(TestApp::builder().events(fast_events())).await;
    let tap = broker.tap().await;
    let (user, _, wallet) = app.user_with_wallet("400.00", "USD").await;
    let held = json!({"booking_id": "h-1", "user_id": user, "amount": "150.00", "currency": "USD", "hold": true});
    let event = broker
        .publish_event(Uuid::now_v7(), "BookingCreated", held.clone())
        .await;
    // Delivered again: one hold.
    broker.publish_event(event, "BookingCreated", held).await;
    let placed = tap
        .wait_for("HoldPlaced", |p| p.body["event_type"] == "HoldPlaced")
        .await;
    assert_eq!(placed.routing_key, "hold.placed");
    assert_eq!(placed.body["data"]["amount"], "150.00");
    assert_eq!(placed.body["data"]["reference_id"], "h-1");
    assert_eq!(app.balance(wallet).await, "400.00", "a hold moves no money");

    broker
        .publish_event(
            Uuid::now_v7(),
            "BookingConfirmed",
            json!({"booking_id": "h-1", "user_id": user, "amount": "140.00"}),
        )
        .await;
    let captured = tap
        .wait_for("HoldCaptured", |p| p.body["event_type"] == "HoldCaptured")
        .await;
    assert_eq!(captured.routing_key, "hold.captured");
    assert_eq!(captured.body["data"]["amount"], "140.00");
    let released = tap
        .wait_for("HoldReleased", |p| p.body["event_type"] == "HoldReleased")
        .await;
    assert_eq!(released.body["data"]["reason"], "FINAL_CAPTURE");
    assert_eq!(released.body["data"]["amount"], "10.00");
    wait_until("the capture", || async { app.balance(wallet).await == "260.00" }).await;
    assert_eq!(
        app.booking_rows(wallet, "h-1").await,
        vec![("DEBIT".into(), "140.00".into())]
    );
    assert_eq!(
        app.count("SELECT count(*) FROM processed_events", &[]).await,
        2,
        "one inbox row per event id"
    );
    app.stop().await;
}

/// The consumer does not look a booking up in the inbox before its debit: the commit's inbox guard is what
/// keeps a refused booking from being debited when it comes again after a credit — in the group's one
/// statement (a plain wallet), batch by batch (a wallet with a budget), and for a hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_booking_redelivered_after_a_credit_is_acked_as_a_duplicate_and_never_debited() {
    let app = crate::helpers::app::spawn_app().await;
    let (plain_user, _, plain) = app.user_with_wallet("10.00", "USD").await;
    let (budget_user, _, budgeted) = app.user_with_wallet("10.00", "USD").await;
    app.monthly_budget(budgeted, "10000.00").await;
    let (hold_user, _, held) = app.user_with_wallet("10.00", "USD").await;

    let cases = [
        ("debit", plain_user, plain, false),
        ("debit charged to a budget", budget_user, budgeted, false),
        ("hold", hold_user, held, true),
    ];
    for (case, user, wallet, hold) in cases {
        let id = Uuid::now_v7();
        let data = json!({"booking_id": "trip", "user_id": user, "amount": "50.00", "currency": "USD", "hold": hold});
        let body = envelope(id, "BookingCreated", data).to_string().into_bytes();
        assert_eq!(
            app.handle_event(&body, "booking.created").await,
            Outcome::Done(Done::Refused("INSUFFICIENT_FUNDS")),
            "{case}"
        );
        let credit = app
            .post_txn(wallet, json!({"amount": "100.00", "type": "CREDIT"}))
            .await;
        assert_eq!(credit.status(), 201);

        assert_eq!(
            app.handle_event(&body, "booking.created").await,
            Outcome::Done(Done::Duplicate),
            "the same event again, now affordable ({case})"
        );
        assert_eq!(app.balance(wallet).await, "110.00", "{case}");
        assert!(app.booking_rows(wallet, "trip").await.is_empty(), "{case}");
        let holds = app
            .count("SELECT count(*) FROM holds WHERE wallet_id = $1", &[&wallet])
            .await;
        assert_eq!(holds, 0, "no hold placed ({case})");
        let refusals = app
            .count(
                "SELECT count(*) FROM audit_log WHERE action = 'booking.debit_refused' AND detail->>'wallet_id' = $1",
                &[&wallet.to_string()],
            )
            .await;
        assert_eq!(refusals, 1, "the refusal recorded once: one TransactionFailed ({case})");
    }
}
