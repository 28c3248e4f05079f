//! `Idempotency-Key` semantics of the money-moving POSTs, against the real app and its own database.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;
use wallet_service::auth::Role;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::eventually;
use crate::helpers::fixtures::token;
use crate::helpers::lock::RowLock;
use crate::helpers::replies::{expect_problem, json_of};

/// A reply kept whole: status, content type and the exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Raw {
    status: u16,
    content_type: String,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

async fn send_keyed(app: &TestApp, token: &str, path: &str, key: &str, body: &Value) -> Raw {
    let res = app
        .http
        .post(app.url(path))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    Raw {
        status,
        content_type,
        body: res.text().await.expect("body"),
    }
}

async fn post_keyed(app: &TestApp, wallet: Uuid, key: &str, body: &Value) -> Raw {
    send_keyed(
        app,
        &app.service_token,
        &format!("/wallets/{wallet}/transactions"),
        key,
        body,
    )
    .await
}

/// Ledger rows posted to the wallet since it was opened (its opening balance is a ledger row too).
async fn rows(app: &TestApp, wallet: Uuid) -> i64 {
    app.count(
        "SELECT count(*) FROM transactions WHERE wallet_id = $1 AND reference_type IS DISTINCT FROM 'OPENING'",
        &[&wallet],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_returns_the_same_status_and_byte_identical_body_without_a_second_effect() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let body = json!({"amount": "12.34", "type": "DEBIT", "description": "taxi", "metadata": {"k": [1, 2.50, "x"]}});
    let first = post_keyed(&app, wallet, "key-1", &body).await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.json()["balance_after"], "87.66");
    for _ in 0..3 {
        let again = post_keyed(&app, wallet, "key-1", &body).await;
        assert_eq!(again, first, "status, content type and bytes are the same");
    }
    assert_eq!(app.balance(wallet).await, "87.66");
    assert_eq!(rows(&app, wallet).await, 1);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'TransactionCompleted'",
            &[]
        )
        .await,
        2,
        "the debit's and the opening balance's"
    );
    // A new key is a new request.
    let other = post_keyed(&app, wallet, "key-2", &body).await;
    assert_eq!(other.status, 201);
    assert_ne!(other.json()["txn_id"], first.json()["txn_id"]);
    assert_eq!(app.balance(wallet).await, "75.32");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_with_another_body_is_422_idempotency_key_reused() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let first = post_keyed(&app, wallet, "k", &json!({"amount": "10.00", "type": "DEBIT"})).await;
    assert_eq!(first.status, 201);
    let other = post_keyed(&app, wallet, "k", &json!({"amount": "11.00", "type": "DEBIT"})).await;
    assert_eq!(
        (other.status, other.code()),
        (422, "IDEMPOTENCY_KEY_REUSED".to_string()),
        "{other:?}"
    );
    assert_eq!(other.content_type, "application/problem+json");
    // The same key on another wallet (same endpoint) is another request too.
    let (_, _, wallet2) = app.user_with_wallet("100.00", "USD").await;
    let elsewhere = post_keyed(&app, wallet2, "k", &json!({"amount": "10.00", "type": "DEBIT"})).await;
    assert_eq!(
        (elsewhere.status, elsewhere.code()),
        (422, "IDEMPOTENCY_KEY_REUSED".to_string())
    );
    assert_eq!(app.balance(wallet).await, "90.00");
    assert_eq!(app.balance(wallet2).await, "100.00");
    // The original is still replayed.
    let again = post_keyed(&app, wallet, "k", &json!({"amount": "10.00", "type": "DEBIT"})).await;
    assert_eq!(again, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_have_exactly_one_effect() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let body = json!({"amount": "7.00", "type": "DEBIT"});
    let replies = futures_util::future::join_all((0..10).map(|_| post_keyed(&app, wallet, "same", &body))).await;
    let created: Vec<&Raw> = replies.iter().filter(|r| r.status == 201).collect();
    assert!(!created.is_empty(), "{replies:?}");
    assert!(
        created.iter().all(|r| *r == created[0]),
        "every 201 is the same reply: {replies:?}"
    );
    for r in replies.iter().filter(|r| r.status != 201) {
        assert_eq!(
            (r.status, r.code()),
            (409, "IDEMPOTENCY_IN_PROGRESS".to_string()),
            "{r:?}"
        );
    }
    assert_eq!(app.balance(wallet).await, "93.00");
    assert_eq!(rows(&app, wallet).await, 1);
    // Afterwards the key replays the one effect.
    assert_eq!(post_keyed(&app, wallet, "same", &body).await, *created[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_request_is_still_running_answers_409_idempotency_in_progress() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let body = json!({"amount": "5.00", "type": "DEBIT"});
    // Hold the wallet row so the first request's commit waits.
    let lock = RowLock::take(&app.db.url, wallet).await;
    let first = tokio::spawn({
        let (http, url, token, body) = (
            app.http.clone(),
            app.url(&format!("/wallets/{wallet}/transactions")),
            app.service_token.clone(),
            body.clone(),
        );
        async move {
            let res = http
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", "slow")
                .json(&body)
                .send()
                .await;
            let res = res.expect("request");
            (res.status().as_u16(), res.text().await.expect("body"))
        }
    });
    let reached = eventually(Duration::from_secs(10), || async { app.engine().queued_commands() > 0 }).await;
    assert!(reached, "the first request never reached the wallet");
    let second = post_keyed(&app, wallet, "slow", &body).await;
    assert_eq!(
        (second.status, second.code()),
        (409, "IDEMPOTENCY_IN_PROGRESS".to_string()),
        "{second:?}"
    );
    // Another body with the running key is still a reuse.
    let other = post_keyed(&app, wallet, "slow", &json!({"amount": "6.00", "type": "DEBIT"})).await;
    assert_eq!(
        (other.status, other.code()),
        (422, "IDEMPOTENCY_KEY_REUSED".to_string())
    );
    lock.release().await;
    let (status, first_body) = first.await.unwrap();
    assert_eq!(status, 201, "{first_body}");
    let replay = post_keyed(&app, wallet, "slow", &body).await;
    assert_eq!((replay.status, replay.body), (201, first_body));
    assert_eq!(app.balance(wallet).await, "95.00");
    assert_eq!(rows(&app, wallet).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_with_400_does_not_consume_its_key() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let bad = post_keyed(&app, wallet, "retry-me", &json!({"amount": "1.001", "type": "DEBIT"})).await;
    assert_eq!((bad.status, bad.code()), (400, "VALIDATION_FAILED".to_string()));
    let bad = post_keyed(
        &app,
        wallet,
        "retry-me",
        &json!({"amount": "1.00", "type": "DEBIT", "x": 1}),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        app.count("SELECT count(*) FROM idempotency_keys WHERE key = 'retry-me'", &[])
            .await,
        0
    );
    let good = post_keyed(&app, wallet, "retry-me", &json!({"amount": "1.00", "type": "DEBIT"})).await;
    assert_eq!(good.status, 201, "{good:?}");
    assert_eq!(app.balance(wallet).await, "99.00");
    // The same for transfers.
    let (_, _, to) = app.user_with_wallet("0.00", "USD").await;
    let bad = send_keyed(
        &app,
        &app.service_token,
        "/transfers",
        "t-1",
        &json!({"from_wallet_id": wallet, "to_wallet_id": wallet, "amount": "1.00"}),
    )
    .await;
    assert_eq!(bad.status, 400);
    let good = send_keyed(
        &app,
        &app.service_token,
        "/transfers",
        "t-1",
        &json!({"from_wallet_id": wallet, "to_wallet_id": to, "amount": "1.00"}),
    )
    .await;
    assert_eq!(good.status, 201, "{good:?}");
    assert_eq!(app.balance(to).await, "1.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_debit_replays_as_the_same_422_even_after_funds_arrive() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("5.00", "USD").await;
    let body = json!({"amount": "8.00", "type": "DEBIT"});
    let refused = post_keyed(&app, wallet, "poor", &body).await;
    assert_eq!(
        (refused.status, refused.code()),
        (422, "INSUFFICIENT_FUNDS".to_string())
    );
    assert_eq!(refused.content_type, "application/problem+json");
    assert_eq!(
        app.post_txn(wallet, json!({"amount": "10.00", "type": "CREDIT"}))
            .await
            .status(),
        201
    );
    let again = post_keyed(&app, wallet, "poor", &body).await;
    assert_eq!(again, refused, "the first answer is the answer");
    assert_eq!(app.balance(wallet).await, "15.00");
    assert_eq!(rows(&app, wallet).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_per_caller() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let body = json!({"amount": "10.00", "type": "DEBIT"});
    let other_service = token(Role::Service, Uuid::new_v4(), Uuid::new_v4());
    let path = format!("/wallets/{wallet}/transactions");
    let a = send_keyed(&app, &app.service_token, &path, "shared", &body).await;
    let b = send_keyed(&app, &other_service, &path, "shared", &body).await;
    assert_eq!((a.status, b.status), (201, 201));
    assert_ne!(a.json()["txn_id"], b.json()["txn_id"], "each caller had its own effect");
    assert_eq!(app.balance(wallet).await, "80.00");
    assert_eq!(rows(&app, wallet).await, 2);
    // Each still replays its own.
    assert_eq!(send_keyed(&app, &other_service, &path, "shared", &body).await, b);
    assert_eq!(send_keyed(&app, &app.service_token, &path, "shared", &body).await, a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_must_have_1_to_255_characters() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let body = json!({"amount": "1.00", "type": "DEBIT"});
    let long = post_keyed(&app, wallet, &"k".repeat(256), &body).await;
    assert_eq!((long.status, long.code()), (400, "VALIDATION_FAILED".to_string()));
    assert_eq!(long.json()["errors"][0]["field"], "Idempotency-Key");
    let empty = post_keyed(&app, wallet, "", &body).await;
    assert_eq!((empty.status, empty.code()), (400, "VALIDATION_FAILED".to_string()));
    assert_eq!(app.balance(wallet).await, "100.00");
    let max = post_keyed(&app, wallet, &"k".repeat(255), &body).await;
    assert_eq!(max.status, 201, "{max:?}");
    assert_eq!(app.balance(wallet).await, "99.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_and_wallet_creation_replay_under_their_keys() {
    let app = spawn_app().await;
    let (_, _, from) = app.user_with_wallet("50.00", "USD").await;
    let (_, _, to) = app.user_with_wallet("0.00", "USD").await;
    let body = json!({"from_wallet_id": from, "to_wallet_id": to, "amount": "20.00"});
    let first = send_keyed(&app, &app.service_token, "/transfers", "tr", &body).await;
    assert_eq!(first.status, 201, "{first:?}");
    let again = send_keyed(&app, &app.service_token, "/transfers", "tr", &body).await;
    assert_eq!(again, first);
    assert_eq!(app.balance(from).await, "30.00");
    assert_eq!(app.balance(to).await, "20.00");
    // The two legs and the opening balance of `from`.
    assert_eq!(app.count("SELECT count(*) FROM transactions", &[]).await, 3);
    // The same key on another endpoint is another key.
    let debit = post_keyed(&app, from, "tr", &json!({"amount": "1.00", "type": "DEBIT"})).await;
    assert_eq!(debit.status, 201);

    let user = Uuid::new_v4();
    assert_eq!(app.put_user(user, Uuid::new_v4(), "user").await.status(), 200);
    let create = json!({"user_id": user, "initial_balance": "3.00", "currency": "EUR"});
    let first = send_keyed(&app, &app.admin_token, "/wallets", "w", &create).await;
    assert_eq!(first.status, 201, "{first:?}");
    let again = send_keyed(&app, &app.admin_token, "/wallets", "w", &create).await;
    assert_eq!(again, first, "a replay, not 409 WALLET_EXISTS");
    let unkeyed = app.create_wallet_as(&app.admin_token, create).await;
    expect_problem(unkeyed, 409, "WALLET_EXISTS").await;
    assert_eq!(
        app.count("SELECT count(*) FROM wallets WHERE user_id = $1", &[&user])
            .await,
        1
    );
    let (status, _) = json_of(app.get_as(&app.admin_token, &format!("/wallets/{user}")).await).await;
    assert_eq!(status, 200);
}
