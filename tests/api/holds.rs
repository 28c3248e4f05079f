//! Holds (authorize, then capture or void) against the real app and its own Postgres database. Several
//! tests are named after a failure other ledgers' users reported, which must be impossible here.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::amqp::envelope;
use crate::helpers::app::{Done, Outcome, TestApp, spawn_app};
use crate::helpers::replies::{expect_problem, json_of};
use crate::helpers::wait_until;

async fn place_with(app: &TestApp, wallet: Uuid, key: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url(&format!("/wallets/{wallet}/holds")))
        .bearer_auth(&app.service_token)
        .json(&body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    req.send().await.expect("request")
}

async fn place(app: &TestApp, wallet: Uuid, body: Value) -> reqwest::Response {
    place_with(app, wallet, None, body).await
}

/// Places a hold of `amount` and expects 201; returns its id.
async fn held(app: &TestApp, wallet: Uuid, amount: &str) -> Uuid {
    let (status, body) = json_of(place(app, wallet, json!({"amount": amount})).await).await;
    assert_eq!(status, 201, "{body}");
    Uuid::parse_str(body["hold_id"].as_str().expect("hold_id")).expect("uuid")
}

async fn capture_with(app: &TestApp, hold: Uuid, key: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url(&format!("/holds/{hold}/capture")))
        .bearer_auth(&app.service_token)
        .json(&body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    req.send().await.expect("request")
}

async fn capture(app: &TestApp, hold: Uuid, body: Value) -> reqwest::Response {
    capture_with(app, hold, None, body).await
}

async fn void(app: &TestApp, hold: Uuid) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/holds/{hold}/void")))
        .bearer_auth(&app.service_token)
        .send()
        .await
        .expect("request")
}

async fn hold_of(app: &TestApp, hold: Uuid) -> Value {
    let (status, body) = json_of(app.get_as(&app.admin_token, &format!("/holds/{hold}")).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `GET /wallets/{userId}`: (balance, available_balance, held_amount).
async fn balances(app: &TestApp, user: Uuid) -> (String, String, String) {
    let (status, w) = json_of(app.get_as(&app.admin_token, &format!("/wallets/{user}")).await).await;
    assert_eq!(status, 200, "{w}");
    let s = |k: &str| w[k].as_str().unwrap_or_else(|| panic!("{k} in {w}")).to_string();
    (s("balance"), s("available_balance"), s("held_amount"))
}

/// What the wallet row holds: (balance, reserved).
async fn row(app: &TestApp, wallet: Uuid) -> (String, String) {
    let c = app.db.client().await;
    let r = c
        .query_one(
            "SELECT balance::text, reserved::text FROM wallets WHERE wallet_id = $1",
            &[&wallet],
        )
        .await
        .expect("wallet row");
    (r.get(0), r.get(1))
}

fn strs(v: &[&str]) -> (String, String, String) {
    (v[0].to_string(), v[1].to_string(), v[2].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_answers_201_pending_and_reserves_the_amount_without_moving_money() {
    let app = spawn_app().await;
    let (user, _, wallet) = app.user_with_wallet("500.00", "USD").await;
    let res = place(
        &app,
        wallet,
        json!({"amount": "120.5", "reference_id": "hotel-1", "reference_type": "BOOKING",
               "description": "Hotel", "expires_in_seconds": 3600, "metadata": {"nights": 2}}),
    )
    .await;
    let (status, h) = json_of(res).await;
    assert_eq!(status, 201, "{h}");
    assert_eq!(h["status"], "PENDING");
    assert_eq!(h["amount"], "120.50");
    assert_eq!(h["captured_amount"], "0.00");
    assert_eq!(h["remaining_amount"], "120.50");
    assert_eq!(h["reference_id"], "hotel-1");
    assert_eq!(h["reference_type"], "BOOKING");
    assert_eq!(h["wallet_id"], wallet.to_string());
    let created = chrono::DateTime::parse_from_rfc3339(h["created_at"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(h["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_seconds(), 3600);

    assert_eq!(balances(&app, user).await, strs(&["500.00", "379.50", "120.50"]));
    assert_eq!(row(&app, wallet).await, ("500.00".into(), "120.50".into()));
    // No money row; the placement is audited and announced.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM transactions WHERE wallet_id = $1 AND reference_type = 'BOOKING'",
            &[&wallet]
        )
        .await,
        0
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM audit_log WHERE action = 'hold.place' AND target_id = $1",
            &[&h["hold_id"].as_str().unwrap()]
        )
        .await,
        1
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'HoldPlaced'",
            &[]
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_holds_never_exceed_the_available_balance_blnk_181() {
    let app = spawn_app().await;
    let other = app.another().spawn().await;
    let (user, _, wallet) = app.user_with_wallet("5000.00", "USD").await;
    // Six holds of 1,000 on 5,000, at once, through two instances over one database.
    let attempts = (0..6).map(|i| {
        let target = if i % 2 == 0 { &app } else { &other };
        place(target, wallet, json!({"amount": "1000.00"}))
    });
    let statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 422).count(), 1, "{statuses:?}");
    assert_eq!(row(&app, wallet).await, ("5000.00".into(), "5000.00".into()));
    // Read through a third instance (without Redis each instance's cache only knows its own commits for
    // `LOCAL_CACHE_TTL`): it loads the wallet and its holds from the database.
    let reader = app.another().spawn().await;
    assert_eq!(balances(&reader, user).await, strs(&["5000.00", "0.00", "5000.00"]));
    assert_eq!(
        app.count(
            "SELECT count(*) FROM holds WHERE wallet_id = $1 AND status = 'PENDING'",
            &[&wallet]
        )
        .await,
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_hold_leaves_nothing_that_could_be_captured_blnk_182() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("50.00", "USD").await;
    let body = expect_problem(
        place_with(&app, wallet, Some("k-refused"), json!({"amount": "80.00"})).await,
        422,
        "INSUFFICIENT_FUNDS",
    )
    .await;
    assert_eq!(body["balance"], "50.00");
    assert_eq!(body["requested"], "80.00");
    assert_eq!(app.count("SELECT count(*) FROM holds", &[]).await, 0);
    assert_eq!(row(&app, wallet).await, ("50.00".into(), "0.00".into()));
    // The refusal is the key's final answer: a retry replays it and still places nothing.
    let again = expect_problem(
        place_with(&app, wallet, Some("k-refused"), json!({"amount": "80.00"})).await,
        422,
        "INSUFFICIENT_FUNDS",
    )
    .await;
    assert_eq!(again, body);
    assert_eq!(app.count("SELECT count(*) FROM holds", &[]).await, 0);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM audit_log WHERE action = 'hold.place' AND outcome = 'INSUFFICIENT_FUNDS'",
            &[]
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_and_a_transfer_are_judged_against_the_available_balance() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let (_, _, to) = app.user_with_wallet("0.00", "USD").await;
    held(&app, wallet, "70.00").await;
    let refused = expect_problem(
        app.post_txn(wallet, json!({"amount": "40.00", "type": "DEBIT"})).await,
        422,
        "INSUFFICIENT_FUNDS",
    )
    .await;
    assert_eq!(refused["balance"], "30.00", "the available balance: {refused}");
    let transfer = app
        .http
        .post(app.url("/transfers"))
        .bearer_auth(&app.service_token)
        .json(&json!({"from_wallet_id": wallet, "to_wallet_id": to, "amount": "31.00"}))
        .send()
        .await
        .expect("request");
    expect_problem(transfer, 422, "INSUFFICIENT_FUNDS").await;
    let (status, ok) = json_of(app.post_txn(wallet, json!({"amount": "30.00", "type": "DEBIT"})).await).await;
    assert_eq!(status, 201, "{ok}");
    assert_eq!(row(&app, wallet).await, ("70.00".into(), "70.00".into()));
    expect_problem(
        place(&app, wallet, json!({"amount": "0.01"})).await,
        422,
        "INSUFFICIENT_FUNDS",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_capture_then_a_final_one_charge_the_wallet_and_release_the_rest() {
    let app = spawn_app().await;
    let (user, _, wallet) = app.user_with_wallet("300.00", "USD").await;
    let hold = held(&app, wallet, "200.00").await;

    let (status, first) = json_of(capture(&app, hold, json!({"amount": "50.00", "final": false})).await).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["type"], "DEBIT");
    assert_eq!(first["amount"], "50.00");
    assert_eq!(first["balance_after"], "250.00");
    assert_eq!(first["hold_id"], hold.to_string());
    let h = hold_of(&app, hold).await;
    assert_eq!(h["status"], "PARTIALLY_CAPTURED");
    assert_eq!(h["captured_amount"], "50.00");
    assert_eq!(h["remaining_amount"], "150.00");
    assert_eq!(balances(&app, user).await, strs(&["250.00", "100.00", "150.00"]));

    // Final (the default), for less than remains: the rest goes back.
    let (status, last) = json_of(capture(&app, hold, json!({"amount": "100.00"})).await).await;
    assert_eq!(status, 201, "{last}");
    let h = hold_of(&app, hold).await;
    assert_eq!(h["status"], "CAPTURED");
    assert_eq!(h["captured_amount"], "150.00");
    assert_eq!(h["remaining_amount"], "0.00");
    assert_eq!(balances(&app, user).await, strs(&["150.00", "150.00", "0.00"]));
    assert_eq!(row(&app, wallet).await, ("150.00".into(), "0.00".into()));
    assert_eq!(
        app.count(
            "SELECT count(*) FROM transactions WHERE hold_id = $1 AND type = 'DEBIT'",
            &[&hold]
        )
        .await,
        2
    );
    let released = app
        .count(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'HoldReleased' AND payload->'data'->>'reason' = 'FINAL_CAPTURE' \
             AND payload->'data'->>'amount' = '50.00'",
            &[],
        )
        .await;
    assert_eq!(released, 1);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'HoldCaptured'",
            &[]
        )
        .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_without_reference_or_budget_take_the_groups_single_statement_and_verify_on_the_chain() {
    let app = spawn_app().await;
    let (user, _, wallet) = app.user_with_wallet("300.00", "USD").await;
    let committer = &app.store().committer;
    let hold = held(&app, wallet, "120.00").await;
    let (status, body) = json_of(capture(&app, hold, json!({"amount": "20.00", "final": false})).await).await;
    assert_eq!(status, 201, "{body}");
    let voided = held(&app, wallet, "30.00").await;
    assert_eq!(void(&app, voided).await.status(), 200);
    let (status, body) = json_of(capture(&app, hold, json!({"amount": "100.00"})).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        committer.careful_batches(),
        0,
        "placements, captures and the void were written by the single statement"
    );
    assert_eq!(balances(&app, user).await, strs(&["180.00", "180.00", "0.00"]));
    assert_eq!(row(&app, wallet).await, ("180.00".into(), "0.00".into()));
    assert_eq!(hold_of(&app, voided).await["status"], "VOIDED");
    let h = hold_of(&app, hold).await;
    assert_eq!(
        (h["status"].as_str(), h["captured_amount"].as_str()),
        (Some("CAPTURED"), Some("120.00"))
    );
    assert_eq!(
        app.count("SELECT count(*) FROM transactions WHERE hold_id = $1", &[&hold])
            .await,
        2,
        "each capture's DEBIT row carries its hold"
    );
    // The placements' audit rows are on the wallet's chain, linked as the engine hashed them.
    let chained = app
        .count(
            "SELECT count(*) FROM audit_log WHERE wallet_id = $1 AND action = 'hold.place' AND chain_seq IS NOT NULL",
            &[&wallet],
        )
        .await;
    assert_eq!(chained, 2);
    let verified = app
        .service()
        .auditor()
        .verify(wallet_service::service::audit::Scope {
            wallet: Some(wallet),
            since: None,
        })
        .await
        .expect("verify runs");
    assert_eq!(verified.broken, None);

    // A hold with a reference is checked for uniqueness on the careful path.
    let (status, body) = json_of(place(&app, wallet, json!({"amount": "5.00", "reference_id": "trip-9"})).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(committer.careful_batches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_with_no_body_takes_what_remains() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("90.00", "USD").await;
    let hold = held(&app, wallet, "60.00").await;
    let res = app
        .http
        .post(app.url(&format!("/holds/{hold}/capture")))
        .bearer_auth(&app.service_token)
        .send()
        .await
        .expect("request");
    let (status, txn) = json_of(res).await;
    assert_eq!(status, 201, "{txn}");
    assert_eq!(txn["amount"], "60.00");
    assert_eq!(hold_of(&app, hold).await["status"], "CAPTURED");
    assert_eq!(row(&app, wallet).await, ("30.00".into(), "0.00".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overcapture_is_refused_beyond_the_tolerance_and_allowed_within_it() {
    let app = TestApp::builder()
        .configure(|c| c.hold_overcapture_percent = 15)
        .spawn()
        .await;
    let (_, _, wallet) = app.user_with_wallet("500.00", "USD").await;
    let hold = held(&app, wallet, "100.00").await;
    let refused = expect_problem(
        capture(&app, hold, json!({"amount": "115.01"})).await,
        422,
        "HOLD_EXCEEDED",
    )
    .await;
    assert_eq!(refused["allowed"], "115.00");
    assert_eq!(refused["requested"], "115.01");
    assert_eq!(hold_of(&app, hold).await["status"], "PENDING");
    let (status, txn) = json_of(capture(&app, hold, json!({"amount": "115.00"})).await).await;
    assert_eq!(status, 201, "{txn}");
    assert_eq!(txn["amount"], "115.00");
    assert_eq!(row(&app, wallet).await, ("385.00".into(), "0.00".into()));

    // Without a tolerance (the default), a cent over the hold is refused.
    let strict = spawn_app().await;
    let (_, _, w2) = strict.user_with_wallet("500.00", "USD").await;
    let h2 = held(&strict, w2, "100.00").await;
    expect_problem(
        capture(&strict, h2, json!({"amount": "100.01"})).await,
        422,
        "HOLD_EXCEEDED",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voiding_twice_answers_409_the_second_time_and_releases_once_blnk_41() {
    let app = spawn_app().await;
    let (user, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let hold = held(&app, wallet, "40.00").await;
    let (status, v) = json_of(void(&app, hold).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "VOIDED");
    assert_eq!(v["remaining_amount"], "0.00");
    let again = expect_problem(void(&app, hold).await, 409, "HOLD_NOT_PENDING").await;
    assert_eq!(again["hold_status"], "VOIDED");
    assert_eq!(balances(&app, user).await, strs(&["100.00", "100.00", "0.00"]));
    assert_eq!(
        app.count(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'HoldReleased'",
            &[]
        )
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM audit_log WHERE action = 'hold.release'", &[])
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_after_a_void_after_a_final_capture_or_after_expiry_answers_409() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("300.00", "USD").await;
    let voided = held(&app, wallet, "10.00").await;
    assert_eq!(void(&app, voided).await.status(), 200);
    let b = expect_problem(capture(&app, voided, json!({})).await, 409, "HOLD_NOT_PENDING").await;
    assert_eq!(b["hold_status"], "VOIDED");

    let done = held(&app, wallet, "10.00").await;
    assert_eq!(capture(&app, done, json!({"amount": "5.00"})).await.status(), 201);
    let b = expect_problem(
        capture(&app, done, json!({"amount": "1.00"})).await,
        409,
        "HOLD_NOT_PENDING",
    )
    .await;
    assert_eq!(b["hold_status"], "CAPTURED");

    let (status, h) = json_of(place(&app, wallet, json!({"amount": "10.00", "expires_in_seconds": 1})).await).await;
    assert_eq!(status, 201, "{h}");
    let expiring = Uuid::parse_str(h["hold_id"].as_str().unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let b = expect_problem(capture(&app, expiring, json!({})).await, 409, "HOLD_NOT_PENDING").await;
    assert_eq!(b["hold_status"], "EXPIRED");
    // One capture of 5.00 in all.
    assert_eq!(row(&app, wallet).await, ("295.00".into(), "0.00".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_hold_stops_counting_at_its_expiry_before_any_sweep_tigerbeetle_2118() {
    let app = spawn_app().await;
    let (user, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let (status, h) = json_of(place(&app, wallet, json!({"amount": "60.00", "expires_in_seconds": 1})).await).await;
    assert_eq!(status, 201, "{h}");
    let hold = Uuid::parse_str(h["hold_id"].as_str().unwrap()).unwrap();
    assert_eq!(balances(&app, user).await, strs(&["100.00", "40.00", "60.00"]));
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Nothing has written the expiry yet (the row still says PENDING), and every read already sees it.
    let stored: String = app
        .db
        .client()
        .await
        .query_one("SELECT status FROM holds WHERE hold_id = $1", &[&hold])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "PENDING");
    assert_eq!(balances(&app, user).await, strs(&["100.00", "100.00", "0.00"]));
    let seen = hold_of(&app, hold).await;
    assert_eq!(seen["status"], "EXPIRED");
    assert_eq!(seen["remaining_amount"], "0.00");
    let (_, page) = json_of(
        app.get_as(&app.admin_token, &format!("/wallets/{wallet}/holds?status=EXPIRED"))
            .await,
    )
    .await;
    assert_eq!(page["pagination"]["total"], 1, "{page}");
    // The whole balance may be debited at once.
    let (status, d) = json_of(app.post_txn(wallet, json!({"amount": "100.00", "type": "DEBIT"})).await).await;
    assert_eq!(status, 201, "{d}");
    // That use of the wallet wrote the expiry with it, and its release.
    assert_eq!(row(&app, wallet).await, ("0.00".into(), "0.00".into()));
    let c = app.db.client().await;
    let stored: String = c
        .query_one("SELECT status FROM holds WHERE hold_id = $1", &[&hold])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "EXPIRED");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'HoldReleased' AND payload->'data'->>'reason' = 'EXPIRED'",
            &[]
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_writes_expiries_and_publishes_their_release() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let (status, h) = json_of(place(&app, wallet, json!({"amount": "25.00", "expires_in_seconds": 1})).await).await;
    assert_eq!(status, 201, "{h}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let swept = app.service().sweep_expired_holds().await.expect("sweep");
    assert_eq!(swept, 1);
    assert_eq!(row(&app, wallet).await, ("100.00".into(), "0.00".into()));
    assert_eq!(app.service().sweep_expired_holds().await.expect("sweep"), 0, "once");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'HoldReleased' AND payload->'data'->>'reason' = 'EXPIRED'",
            &[]
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_simultaneous_captures_of_one_hold_charge_it_once_midaz_1519() {
    let app = spawn_app().await;
    let other = app.another().spawn().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let hold = held(&app, wallet, "80.00").await;
    let (a, b) = tokio::join!(
        capture(&app, hold, json!({"amount": "80.00"})),
        capture(&other, hold, json!({"amount": "80.00"}))
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409]);
    assert_eq!(row(&app, wallet).await, ("20.00".into(), "0.00".into()));
    assert_eq!(
        app.count("SELECT count(*) FROM transactions WHERE hold_id = $1", &[&hold])
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_partial_captures_never_take_more_than_the_hold() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let hold = held(&app, wallet, "50.00").await;
    let tries = (0..8).map(|_| capture(&app, hold, json!({"amount": "10.00", "final": false})));
    let ok = futures_util::future::join_all(tries)
        .await
        .iter()
        .filter(|r| r.status().as_u16() == 201)
        .count();
    assert_eq!(ok, 5, "exactly one success per remaining 10.00");
    let h = hold_of(&app, hold).await;
    assert_eq!(h["captured_amount"], "50.00");
    assert_eq!(h["status"], "CAPTURED");
    assert_eq!(row(&app, wallet).await, ("50.00".into(), "0.00".into()));
}

/// The user's first budget: (used_amount, held_amount, remaining_amount).
async fn budget_of(app: &TestApp, user: Uuid) -> (String, String, String) {
    let (status, list) = json_of(app.get_as(&app.admin_token, &format!("/budgets/{user}")).await).await;
    assert_eq!(status, 200, "{list}");
    let b = &list[0];
    let s = |k: &str| b[k].as_str().unwrap_or_else(|| panic!("{k} in {b}")).to_string();
    (s("used_amount"), s("held_amount"), s("remaining_amount"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_count_a_pending_hold_as_used_and_get_it_back_on_void() {
    let app = spawn_app().await;
    let (user, _, wallet) = app.user_with_wallet("1000.00", "USD").await;
    app.monthly_budget(wallet, "300.00").await;
    let hold = held(&app, wallet, "200.00").await;
    assert_eq!(budget_of(&app, user).await, strs(&["200.00", "200.00", "100.00"]));
    // A hold is refused over the budget like a debit.
    let over = expect_problem(
        place(&app, wallet, json!({"amount": "150.00"})).await,
        422,
        "BUDGET_EXCEEDED",
    )
    .await;
    assert_eq!(over["excess"], "50.00");
    expect_problem(
        app.post_txn(wallet, json!({"amount": "150.00", "type": "DEBIT"})).await,
        422,
        "BUDGET_EXCEEDED",
    )
    .await;
    assert_eq!(void(&app, hold).await.status(), 200);
    assert_eq!(budget_of(&app, user).await, strs(&["0.00", "0.00", "300.00"]));

    // A capture keeps what it takes charged; a final capture gives the rest back.
    let hold = held(&app, wallet, "200.00").await;
    assert_eq!(capture(&app, hold, json!({"amount": "120.00"})).await.status(), 201);
    assert_eq!(budget_of(&app, user).await, strs(&["120.00", "0.00", "180.00"]));
    assert_eq!(row(&app, wallet).await, ("880.00".into(), "0.00".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_and_its_capture_under_an_idempotency_key_are_replayed_byte_for_byte_and_applied_once() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let first = place_with(&app, wallet, Some("h-1"), json!({"amount": "30.00"})).await;
    assert_eq!(first.status(), 201);
    let first = first.text().await.unwrap();
    let again = place_with(&app, wallet, Some("h-1"), json!({"amount": "30.00"})).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.text().await.unwrap(), first);
    assert_eq!(app.count("SELECT count(*) FROM holds", &[]).await, 1);
    expect_problem(
        place_with(&app, wallet, Some("h-1"), json!({"amount": "31.00"})).await,
        422,
        "IDEMPOTENCY_KEY_REUSED",
    )
    .await;

    let hold: Value = serde_json::from_str(&first).unwrap();
    let hold = Uuid::parse_str(hold["hold_id"].as_str().unwrap()).unwrap();
    let c1 = capture_with(&app, hold, Some("c-1"), json!({"amount": "10.00", "final": false})).await;
    assert_eq!(c1.status(), 201);
    let c1 = c1.text().await.unwrap();
    let c2 = capture_with(&app, hold, Some("c-1"), json!({"amount": "10.00", "final": false})).await;
    assert_eq!(c2.status(), 201);
    assert_eq!(c2.text().await.unwrap(), c1);
    assert_eq!(row(&app, wallet).await, ("90.00".into(), "20.00".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_reference_is_unique_among_the_wallets_holds() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let body = json!({"amount": "10.00", "reference_id": "trip-9", "reference_type": "BOOKING"});
    let (status, first) = json_of(place(&app, wallet, body.clone()).await).await;
    assert_eq!(status, 201, "{first}");
    let dup = expect_problem(place(&app, wallet, body).await, 409, "CONFLICT").await;
    assert_eq!(dup["txn_id"], first["hold_id"], "names the hold that took effect");
    assert_eq!(row(&app, wallet).await, ("100.00".into(), "10.00".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_routes_check_roles_fields_and_visibility() {
    let app = spawn_app().await;
    let (user, company, wallet) = app.user_with_wallet("100.00", "USD").await;
    let hold = held(&app, wallet, "10.00").await;
    let own = crate::helpers::fixtures::token(wallet_service::auth::Role::User, user, company);
    // The owner may read but not place, capture or void.
    assert_eq!(app.get_as(&own, &format!("/holds/{hold}")).await.status(), 200);
    assert_eq!(
        app.get_as(&own, &format!("/wallets/{wallet}/holds")).await.status(),
        200
    );
    let res = app
        .http
        .post(app.url(&format!("/holds/{hold}/void")))
        .bearer_auth(&own)
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "FORBIDDEN").await;
    // A stranger sees nothing.
    let stranger = crate::helpers::fixtures::token(wallet_service::auth::Role::User, Uuid::new_v4(), Uuid::new_v4());
    expect_problem(app.get_as(&stranger, &format!("/holds/{hold}")).await, 404, "NOT_FOUND").await;
    expect_problem(
        app.get_as(&app.admin_token, &format!("/holds/{}", Uuid::new_v4()))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    expect_problem(capture(&app, Uuid::new_v4(), json!({})).await, 404, "NOT_FOUND").await;
    // Bad fields are 400 and place nothing.
    for bad in [
        json!({"amount": "0"}),
        json!({"amount": "1.001"}),
        json!({"amount": "1.00", "expires_in_seconds": 2_592_001}),
        json!({"amount": "1.00", "expires_in_seconds": 0}),
        json!({"amount": "1.00", "metadata": [1]}),
        json!({"amount": "1.00", "reference_type": "BOOKING"}),
        json!({"amount": "1.00", "extra": true}),
    ] {
        expect_problem(place(&app, wallet, bad.clone()).await, 400, "VALIDATION_FAILED").await;
    }
    expect_problem(
        app.get_as(&app.admin_token, &format!("/wallets/{wallet}/holds?status=HELD"))
            .await,
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM holds", &[]).await, 1);
    let (_, page) = json_of(
        app.get_as(
            &app.admin_token,
            &format!("/wallets/{wallet}/holds?status=PENDING&limit=1"),
        )
        .await,
    )
    .await;
    assert_eq!(page["pagination"]["total"], 1, "{page}");
    assert_eq!(page["holds"][0]["hold_id"], hold.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_booking_is_held_confirmed_for_another_amount_and_refunded_on_cancellation() {
    let app = spawn_app().await;
    let (user, _, wallet) = app.user_with_wallet("500.00", "USD").await;
    let event = |event_type: &str, data: Value| {
        let id = Uuid::now_v7();
        (id, envelope(id, event_type, data).to_string().into_bytes())
    };
    let (_, created) = event(
        "BookingCreated",
        json!({"booking_id": "htl-1", "user_id": user, "amount": "200.00", "currency": "USD", "hold": true}),
    );
    assert_eq!(
        app.handle_event(&created, "booking.created").await,
        Outcome::Done(Done::Applied)
    );
    // A redelivery has no second effect.
    assert_eq!(
        app.handle_event(&created, "booking.created").await,
        Outcome::Done(Done::Duplicate)
    );
    assert_eq!(balances(&app, user).await, strs(&["500.00", "300.00", "200.00"]));

    // Confirmed at check-out for less than was held: charged 180, the rest released.
    let (_, confirmed) = event(
        "BookingConfirmed",
        json!({"booking_id": "htl-1", "user_id": user, "amount": "180.00"}),
    );
    assert_eq!(
        app.handle_event(&confirmed, "booking.confirmed").await,
        Outcome::Done(Done::Applied)
    );
    assert_eq!(
        app.handle_event(&confirmed, "booking.confirmed").await,
        Outcome::Done(Done::Duplicate)
    );
    assert_eq!(balances(&app, user).await, strs(&["320.00", "320.00", "0.00"]));
    assert_eq!(
        app.booking_rows(wallet, "htl-1").await,
        vec![("DEBIT".into(), "180.00".into())]
    );

    // Cancelled after the charge: refunded as a debit is, at most what was captured.
    let (_, cancelled) = event("BookingCancelled", json!({"booking_id": "htl-1", "user_id": user}));
    assert_eq!(
        app.handle_event(&cancelled, "booking.cancelled").await,
        Outcome::Done(Done::Applied)
    );
    assert_eq!(
        app.handle_event(&cancelled, "booking.cancelled").await,
        Outcome::Done(Done::Duplicate)
    );
    assert_eq!(
        app.booking_rows(wallet, "htl-1").await,
        vec![("DEBIT".into(), "180.00".into()), ("CREDIT".into(), "180.00".into())]
    );
    assert_eq!(balances(&app, user).await, strs(&["500.00", "500.00", "0.00"]));

    // A held booking cancelled before its confirmation is voided.
    let (_, created) = event(
        "BookingCreated",
        json!({"booking_id": "fl-2", "user_id": user, "amount": "100.00", "currency": "USD", "hold": true}),
    );
    assert_eq!(
        app.handle_event(&created, "booking.created").await,
        Outcome::Done(Done::Applied)
    );
    let (_, cancelled) = event("BookingCancelled", json!({"booking_id": "fl-2", "user_id": user}));
    assert_eq!(
        app.handle_event(&cancelled, "booking.cancelled").await,
        Outcome::Done(Done::Applied)
    );
    assert_eq!(balances(&app, user).await, strs(&["500.00", "500.00", "0.00"]));
    assert!(
        app.booking_rows(wallet, "fl-2").await.is_empty(),
        "a void writes no money row"
    );
    // Its confirmation after the void is refused and announced, never charged.
    let (late_id, late) = event("BookingConfirmed", json!({"booking_id": "fl-2", "user_id": user}));
    assert_eq!(
        app.handle_event(&late, "booking.confirmed").await,
        Outcome::Done(Done::Refused("HOLD_NOT_PENDING"))
    );
    let inbox = app
        .count(
            "SELECT count(*) FROM processed_events WHERE event_id = $1 AND event_type = 'BookingConfirmed'",
            &[&late_id],
        )
        .await;
    assert_eq!(inbox, 1, "the refusal's inbox row has the refused event's type");
    assert_eq!(balances(&app, user).await, strs(&["500.00", "500.00", "0.00"]));
    wait_until("the hold events are in the outbox", || async {
        app.count(
            "SELECT count(*) FROM outbox_events WHERE event_type IN ('HoldPlaced', 'HoldCaptured', 'HoldReleased')",
            &[],
        )
        .await
            == 5
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_over_the_balance_from_a_booking_event_is_announced_as_transaction_failed() {
    let app = spawn_app().await;
    let (user, _, _) = app.user_with_wallet("50.00", "USD").await;
    let id = Uuid::now_v7();
    let body = envelope(
        id,
        "BookingCreated",
        json!({"booking_id": "big-1", "user_id": user, "amount": "80.00", "currency": "USD", "hold": true}),
    )
    .to_string()
    .into_bytes();
    assert_eq!(
        app.handle_event(&body, "booking.created").await,
        Outcome::Done(Done::Refused("INSUFFICIENT_FUNDS"))
    );
    assert_eq!(app.count("SELECT count(*) FROM holds", &[]).await, 0);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'TransactionFailed'",
            &[]
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_of_a_captured_hold_gives_back_at_most_what_was_captured_and_to_its_budgets() {
    let app = spawn_app().await;
    let (user, _, wallet) = app.user_with_wallet("1000.00", "USD").await;
    app.monthly_budget(wallet, "300.00").await;
    let (status, h) = json_of(
        place(
            &app,
            wallet,
            json!({"amount": "200.00", "reference_id": "trip-1", "reference_type": "BOOKING"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{h}");
    let hold = Uuid::parse_str(h["hold_id"].as_str().unwrap()).unwrap();
    assert_eq!(capture(&app, hold, json!({"amount": "120.00"})).await.status(), 201);
    assert_eq!(budget_of(&app, user).await, strs(&["120.00", "0.00", "180.00"]));
    // A plain debit of the same booking is a repeat of the capture.
    let dup = expect_problem(
        app.post_txn(
            wallet,
            json!({"amount": "5.00", "type": "DEBIT", "reference_id": "trip-1", "reference_type": "BOOKING"}),
        )
        .await,
        409,
        "CONFLICT",
    )
    .await;
    assert_eq!(dup["txn_id"], hold.to_string());
    let over = expect_problem(
        app.post_txn(
            wallet,
            json!({"amount": "150.00", "type": "CREDIT", "reference_id": "trip-1", "reference_type": "BOOKING"}),
        )
        .await,
        422,
        "REFUND_EXCEEDS_DEBIT",
    )
    .await;
    assert_eq!(over["debited"], "120.00");
    let (status, refund) = json_of(
        app.post_txn(
            wallet,
            json!({"amount": "120.00", "type": "CREDIT", "reference_id": "trip-1", "reference_type": "BOOKING"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{refund}");
    assert_eq!(budget_of(&app, user).await, strs(&["0.00", "0.00", "300.00"]));
    assert_eq!(row(&app, wallet).await, ("1000.00".into(), "0.00".into()));
}
