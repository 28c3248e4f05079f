//! `POST /transfers` against the real app and its own Postgres database.

use serde_json::{Value, json};
use uuid::Uuid;
use wallet_service::auth::Role;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::fixtures::token;
use crate::helpers::replies::{expect_problem, json_of};

async fn transfer(app: &TestApp, body: Value) -> reqwest::Response {
    app.http
        .post(app.url("/transfers"))
        .bearer_auth(&app.service_token)
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// Ledger rows posted since the wallets were opened (an opening balance is a ledger row too).
async fn rows(app: &TestApp) -> i64 {
    app.count(
        "SELECT count(*) FROM transactions WHERE reference_type IS DISTINCT FROM 'OPENING'",
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_answers_201_with_both_legs_and_moves_both_balances() {
    let app = spawn_app().await;
    let (_, _, from) = app.user_with_wallet("100.00", "EUR").await;
    let (to_user, _, to) = app.user_with_wallet("5.00", "EUR").await;
    // The destination's actor is alive here and holds 5.00 before the transfer.
    let (status, before) = json_of(app.get_as(&app.admin_token, &format!("/wallets/{to_user}")).await).await;
    assert_eq!((status, before["balance"].as_str()), (200, Some("5.00")));

    let res = transfer(
        &app,
        json!({"from_wallet_id": from, "to_wallet_id": to, "amount": "30.25", "description": "rent",
               "reference_id": "T-1"}),
    )
    .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["from_wallet_id"], from.to_string());
    assert_eq!(body["to_wallet_id"], to.to_string());
    assert_eq!(body["amount"], "30.25");
    assert_eq!(body["status"], "COMPLETED");
    let legs = body["transactions"].as_array().expect("transactions");
    assert_eq!(legs.len(), 2, "{body}");
    assert_eq!(legs[0]["type"], "TRANSFER_OUT");
    assert_eq!(legs[0]["wallet_id"], from.to_string());
    assert_eq!(legs[0]["amount"], "30.25");
    assert_eq!(legs[0]["balance_after"], "69.75");
    assert_eq!(legs[1]["type"], "TRANSFER_IN");
    assert_eq!(legs[1]["wallet_id"], to.to_string());
    assert_eq!(legs[1]["amount"], "30.25");
    assert_eq!(legs[1]["balance_after"], "35.25");

    assert_eq!(app.balance(from).await, "69.75");
    assert_eq!(app.balance(to).await, "35.25");
    let c = app.db.client().await;
    let stored = c
        .query(
            "SELECT wallet_id, type, amount::text, balance_after::text, status FROM transactions \
             WHERE reference_type IS DISTINCT FROM 'OPENING' ORDER BY type DESC",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].get::<_, Uuid>(0), from);
    assert_eq!(stored[0].get::<_, String>(1), "TRANSFER_OUT");
    assert_eq!(stored[0].get::<_, String>(3), "69.75");
    assert_eq!(stored[1].get::<_, Uuid>(0), to);
    assert_eq!(stored[1].get::<_, String>(1), "TRANSFER_IN");
    assert_eq!(stored[1].get::<_, String>(3), "35.25");
    assert!(
        stored
            .iter()
            .all(|r| r.get::<_, String>(2) == "30.25" && r.get::<_, String>(4) == "COMPLETED")
    );
    let events = app
        .count(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'TransactionCompleted'",
            &[],
        )
        .await;
    assert_eq!(events, 2 + 2, "the two legs and the two opening balances");

    // The destination's actor was told: reading it again shows the new balance.
    let (status, after) = json_of(app.get_as(&app.admin_token, &format!("/wallets/{to_user}")).await).await;
    assert_eq!((status, after["balance"].as_str()), (200, Some("35.25")), "{after}");
    // And the destination keeps working on the new balance.
    let res = app.post_txn(to, json!({"amount": "35.25", "type": "DEBIT"})).await;
    assert_eq!(res.status(), 201);
    assert_eq!(app.balance(to).await, "0.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_between_currencies_is_422_currency_mismatch() {
    let app = spawn_app().await;
    let (_, _, from) = app.user_with_wallet("100.00", "USD").await;
    let (_, _, to) = app.user_with_wallet("0.00", "GBP").await;
    let res = transfer(
        &app,
        json!({"from_wallet_id": from, "to_wallet_id": to, "amount": "1.00"}),
    )
    .await;
    expect_problem(res, 422, "CURRENCY_MISMATCH").await;
    assert_eq!(app.balance(from).await, "100.00");
    assert_eq!(app.balance(to).await, "0.00");
    assert_eq!(rows(&app).await, 0);
    let audited = app
        .count(
            "SELECT count(*) FROM audit_log WHERE action = 'wallet.transfer' AND outcome = 'CURRENCY_MISMATCH'",
            &[],
        )
        .await;
    assert_eq!(audited, 1);
    // The source still works afterwards (its actor did not keep a half-done transfer).
    assert_eq!(
        app.post_txn(from, json!({"amount": "100.00", "type": "DEBIT"}))
            .await
            .status(),
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_beyond_the_balance_is_422_insufficient_funds() {
    let app = spawn_app().await;
    let (_, _, from) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, to) = app.user_with_wallet("0.00", "USD").await;
    let res = transfer(
        &app,
        json!({"from_wallet_id": from, "to_wallet_id": to, "amount": "10.01"}),
    )
    .await;
    expect_problem(res, 422, "INSUFFICIENT_FUNDS").await;
    assert_eq!(app.balance(from).await, "10.00");
    assert_eq!(app.balance(to).await, "0.00");
    assert_eq!(rows(&app).await, 0);
    let res = transfer(
        &app,
        json!({"from_wallet_id": from, "to_wallet_id": to, "amount": "10.00"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_eq!(app.balance(from).await, "0.00");
    assert_eq!(app.balance(to).await, "10.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_or_from_a_frozen_wallet_is_409_wallet_not_active() {
    let app = spawn_app().await;
    let (_, _, from) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, to) = app.user_with_wallet("0.00", "USD").await;
    let freeze = |w: Uuid, status: &'static str| {
        let req = app
            .http
            .put(app.url(&format!("/wallets/{w}/status")))
            .bearer_auth(&app.admin_token)
            .json(&json!({"status": status}));
        async move { assert_eq!(req.send().await.unwrap().status(), 200) }
    };
    freeze(to, "FROZEN").await;
    let res = transfer(
        &app,
        json!({"from_wallet_id": from, "to_wallet_id": to, "amount": "1.00"}),
    )
    .await;
    expect_problem(res, 409, "WALLET_NOT_ACTIVE").await;
    freeze(to, "ACTIVE").await;
    freeze(from, "FROZEN").await;
    let res = transfer(
        &app,
        json!({"from_wallet_id": from, "to_wallet_id": to, "amount": "1.00"}),
    )
    .await;
    expect_problem(res, 409, "WALLET_NOT_ACTIVE").await;
    assert_eq!(app.balance(from).await, "10.00");
    assert_eq!(app.balance(to).await, "0.00");
    assert_eq!(rows(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_the_same_wallet_or_with_a_bad_body_is_400() {
    let app = spawn_app().await;
    let (_, _, from) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, to) = app.user_with_wallet("0.00", "USD").await;
    let cases = [
        (
            json!({"from_wallet_id": from, "to_wallet_id": from, "amount": "1.00"}),
            "to_wallet_id",
        ),
        (
            json!({"from_wallet_id": from, "to_wallet_id": to, "amount": "0.00"}),
            "amount",
        ),
        (
            json!({"from_wallet_id": from, "to_wallet_id": to, "amount": "-1.00"}),
            "amount",
        ),
        (
            json!({"from_wallet_id": from, "to_wallet_id": to, "amount": "1.005"}),
            "amount",
        ),
        (
            json!({"from_wallet_id": from, "to_wallet_id": to, "amount": "1.00", "currency": "USD"}),
            "currency",
        ),
        (json!({"from_wallet_id": from, "amount": "1.00"}), "to_wallet_id"),
        (
            json!({"from_wallet_id": "x", "to_wallet_id": to, "amount": "1.00"}),
            "from_wallet_id",
        ),
    ];
    for (body, field) in cases {
        let problem = expect_problem(transfer(&app, body.clone()).await, 400, "VALIDATION_FAILED").await;
        assert_eq!(problem["errors"][0]["field"], field, "{body} → {problem}");
    }
    assert_eq!(app.balance(from).await, "10.00");
    assert_eq!(rows(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_or_from_an_unknown_wallet_is_404() {
    let app = spawn_app().await;
    let (_, _, from) = app.user_with_wallet("10.00", "USD").await;
    let res = transfer(
        &app,
        json!({"from_wallet_id": from, "to_wallet_id": Uuid::new_v4(), "amount": "1.00"}),
    )
    .await;
    expect_problem(res, 404, "NOT_FOUND").await;
    let res = transfer(
        &app,
        json!({"from_wallet_id": Uuid::new_v4(), "to_wallet_id": from, "amount": "1.00"}),
    )
    .await;
    expect_problem(res, 404, "NOT_FOUND").await;
    assert_eq!(app.balance(from).await, "10.00");
    assert_eq!(rows(&app).await, 0);
    // The source still works afterwards.
    assert_eq!(
        app.post_txn(from, json!({"amount": "10.00", "type": "DEBIT"}))
            .await
            .status(),
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_managers_may_not_transfer_403() {
    let app = spawn_app().await;
    let (user, company, from) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, to) = app.user_with_wallet("0.00", "USD").await;
    for t in [
        token(Role::User, user, company),
        token(Role::Manager, Uuid::new_v4(), company),
    ] {
        let res = app
            .http
            .post(app.url("/transfers"))
            .bearer_auth(t)
            .json(&json!({"from_wallet_id": from, "to_wallet_id": to, "amount": "1.00"}))
            .send()
            .await
            .unwrap();
        expect_problem(res, 403, "FORBIDDEN").await;
    }
    assert_eq!(app.balance(from).await, "10.00");
    assert_eq!(rows(&app).await, 0);
}
