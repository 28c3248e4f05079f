//! `POST /wallets/{walletId}/transactions`, `GET /wallets/{walletId}/transactions`, the routing edges
//! (413, 405, unknown routes) and the audit trail, against the real app and its own Postgres database.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;
use wallet_service::auth::Role;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::fixtures::token;
use crate::helpers::replies::{expect_problem, json_of};

async fn post_raw(app: &TestApp, wallet: Uuid, body: &str) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/wallets/{wallet}/transactions")))
        .bearer_auth(&app.service_token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request")
}

async fn history(app: &TestApp, token: &str, wallet: Uuid, query: &str) -> reqwest::Response {
    app.get_as(token, &format!("/wallets/{wallet}/transactions{query}"))
        .await
}

/// Ledger rows posted to the wallet since it was opened (its opening balance is a ledger row too).
async fn txn_rows(app: &TestApp, wallet: Uuid) -> i64 {
    app.count(
        "SELECT count(*) FROM transactions WHERE wallet_id = $1 AND reference_type IS DISTINCT FROM 'OPENING'",
        &[&wallet],
    )
    .await
}

/// Posts and expects 201; returns the reply.
async fn posted(app: &TestApp, wallet: Uuid, body: Value) -> Value {
    let (status, reply) = json_of(app.post_txn(wallet, body).await).await;
    assert_eq!(status, 201, "{reply}");
    reply
}

fn amounts(page: &Value) -> Vec<String> {
    page["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .map(|t| t["amount"].as_str().expect("amount is a string").to_string())
        .collect()
}

// ---- POST /wallets/{walletId}/transactions ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_answers_201_with_the_contract_fields_and_amounts_as_strings() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let res = app
        .post_txn(
            wallet,
            json!({"amount": "25.5", "type": "DEBIT", "description": "lunch", "reference_id": "B-1",
                   "reference_type": "BOOKING", "metadata": {"seat": "12A"}}),
        )
        .await;
    assert_eq!(res.headers()["content-type"], "application/json");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    let txn = Uuid::parse_str(body["txn_id"].as_str().unwrap()).unwrap();
    assert_eq!(body["wallet_id"], wallet.to_string());
    assert_eq!(body["amount"], "25.50");
    assert_eq!(body["type"], "DEBIT");
    assert_eq!(body["status"], "COMPLETED");
    assert_eq!(body["balance_after"], "74.50");
    assert_eq!(body["description"], "lunch");
    assert_eq!(body["reference_id"], "B-1");
    assert_eq!(body["reference_type"], "BOOKING");
    assert_eq!(body["metadata"], json!({"seat": "12A"}));
    assert!(body["created_at"].as_str().is_some_and(|s| s.ends_with('Z')), "{body}");

    // Committed before the reply: the row and the balance are there.
    let c = app.db.client().await;
    let row = c
        .query_one(
            "SELECT amount::text, type, status, balance_after::text, reference_id FROM transactions WHERE txn_id = $1",
            &[&txn],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "25.50");
    assert_eq!(row.get::<_, String>(1), "DEBIT");
    assert_eq!(row.get::<_, String>(2), "COMPLETED");
    assert_eq!(row.get::<_, String>(3), "74.50");
    assert_eq!(row.get::<_, String>(4), "B-1");
    assert_eq!(app.balance(wallet).await, "74.50");
    let event = app
        .count(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'TransactionCompleted' \
             AND payload->'data'->>'txn_id' = $1 AND payload->'data'->>'new_balance' = '74.50'",
            &[&txn.to_string()],
        )
        .await;
    assert_eq!(event, 1, "TransactionCompleted is in the outbox with the change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_number_amount_is_read_exactly_never_through_a_float() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("0.00", "USD").await;
    // 0.1 and 0.29 have no exact binary float; 1234567890123.47 loses cents as an f64.
    let (status, body) = json_of(post_raw(&app, wallet, r#"{"amount": 0.1, "type": "CREDIT"}"#).await).await;
    assert_eq!((status, body["amount"].as_str()), (201, Some("0.10")), "{body}");
    let (status, body) = json_of(post_raw(&app, wallet, r#"{"amount": 0.29, "type": "CREDIT"}"#).await).await;
    assert_eq!((status, body["balance_after"].as_str()), (201, Some("0.39")), "{body}");
    let (status, body) =
        json_of(post_raw(&app, wallet, r#"{"amount": 1234567890123.47, "type": "CREDIT"}"#).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["amount"], "1234567890123.47");
    assert_eq!(body["balance_after"], "1234567890123.86");
    let (status, body) = json_of(post_raw(&app, wallet, r#"{"amount": 0.30, "type": "DEBIT"}"#).await).await;
    assert_eq!((status, body["amount"].as_str()), (201, Some("0.30")), "{body}");
    assert_eq!(app.balance(wallet).await, "1234567890123.56");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_beyond_the_balance_is_refused_with_422_and_changes_nothing() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("10.00", "USD").await;
    let res = app.post_txn(wallet, json!({"amount": "10.01", "type": "DEBIT"})).await;
    expect_problem(res, 422, "INSUFFICIENT_FUNDS").await;
    assert_eq!(app.balance(wallet).await, "10.00");
    assert_eq!(txn_rows(&app, wallet).await, 0);
    // The whole balance can go.
    let body = posted(&app, wallet, json!({"amount": "10.00", "type": "DEBIT"})).await;
    assert_eq!(body["balance_after"], "0.00");
    let res = app.post_txn(wallet, json!({"amount": "0.01", "type": "DEBIT"})).await;
    expect_problem(res, 422, "INSUFFICIENT_FUNDS").await;
    assert_eq!(txn_rows(&app, wallet).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_amounts_and_unknown_fields_are_refused_with_400() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("50.00", "USD").await;
    let cases = [
        (r#"{"amount": "0", "type": "DEBIT"}"#, "amount"),
        (r#"{"amount": "0.00", "type": "CREDIT"}"#, "amount"),
        (r#"{"amount": 0, "type": "CREDIT"}"#, "amount"),
        (r#"{"amount": "-1.00", "type": "CREDIT"}"#, "amount"),
        (r#"{"amount": -5, "type": "DEBIT"}"#, "amount"),
        (r#"{"amount": "1.001", "type": "CREDIT"}"#, "amount"),
        (r#"{"amount": 1.001, "type": "CREDIT"}"#, "amount"),
        (r#"{"amount": "10000000000000.00", "type": "CREDIT"}"#, "amount"),
        (r#"{"amount": 10000000000000, "type": "CREDIT"}"#, "amount"),
        (r#"{"amount": "1e2", "type": "CREDIT"}"#, "amount"),
        (r#"{"amount": "NaN", "type": "CREDIT"}"#, "amount"),
        (r#"{"amount": null, "type": "CREDIT"}"#, "amount"),
        (r#"{"amount": "1.00", "type": "REFUND"}"#, "type"),
        (r#"{"amount": "1.00", "type": "TRANSFER_IN"}"#, "type"),
        (r#"{"amount": "1.00"}"#, "type"),
        (r#"{"type": "CREDIT"}"#, "amount"),
        (
            r#"{"amount": "1.00", "type": "CREDIT", "balance": "1000.00"}"#,
            "balance",
        ),
        (
            r#"{"amount": "1.00", "type": "CREDIT", "status": "COMPLETED"}"#,
            "status",
        ),
        (r#"{"amount": "1.00", "type": "CREDIT", "wallet_id": "x"}"#, "wallet_id"),
        (
            r#"{"amount": "1.00", "type": "CREDIT", "reference_type": "BOOKING"}"#,
            "reference_id",
        ),
    ];
    for (body, field) in cases {
        let problem = expect_problem(post_raw(&app, wallet, body).await, 400, "VALIDATION_FAILED").await;
        assert_eq!(problem["errors"][0]["field"], field, "{body} → {problem}");
    }
    // The largest amount passes validation (and is then refused for funds, not for its form).
    let res = app
        .post_txn(wallet, json!({"amount": "9999999999999.99", "type": "DEBIT"}))
        .await;
    expect_problem(res, 422, "INSUFFICIENT_FUNDS").await;
    for body in ["{", "[]", "\"amount\"", ""] {
        expect_problem(post_raw(&app, wallet, body).await, 400, "VALIDATION_FAILED").await;
    }
    assert_eq!(app.balance(wallet).await, "50.00");
    assert_eq!(txn_rows(&app, wallet).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_that_would_overflow_the_balance_is_refused_with_400() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("0.00", "USD").await;
    posted(&app, wallet, json!({"amount": "9999999999999.00", "type": "CREDIT"})).await;
    let res = app.post_txn(wallet, json!({"amount": "1.00", "type": "CREDIT"})).await;
    expect_problem(res, 400, "VALIDATION_FAILED").await;
    assert_eq!(app.balance(wallet).await, "9999999999999.00");
    let body = posted(&app, wallet, json!({"amount": "0.99", "type": "CREDIT"})).await;
    assert_eq!(body["balance_after"], "9999999999999.99");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_managers_may_not_post_transactions_403_and_others_see_404() {
    let app = spawn_app().await;
    let (user, company, wallet) = app.user_with_wallet("50.00", "USD").await;
    let body = json!({"amount": "1.00", "type": "CREDIT"});
    let send = |t: String| {
        let req = app
            .http
            .post(app.url(&format!("/wallets/{wallet}/transactions")))
            .bearer_auth(t)
            .json(&body);
        async move { req.send().await.expect("request") }
    };
    expect_problem(send(token(Role::User, user, company)).await, 403, "FORBIDDEN").await;
    expect_problem(
        send(token(Role::Manager, Uuid::new_v4(), company)).await,
        403,
        "FORBIDDEN",
    )
    .await;
    expect_problem(send(token(Role::User, Uuid::new_v4(), company)).await, 404, "NOT_FOUND").await;
    expect_problem(
        send(token(Role::Manager, Uuid::new_v4(), Uuid::new_v4())).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(app.balance(wallet).await, "50.00");
    // Admin may.
    let res = send(app.admin_token.clone()).await;
    assert_eq!(res.status(), 201);
    assert_eq!(app.balance(wallet).await, "51.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_on_an_unknown_wallet_is_404() {
    let app = spawn_app().await;
    let res = app
        .post_txn(Uuid::new_v4(), json!({"amount": "1.00", "type": "CREDIT"}))
        .await;
    expect_problem(res, 404, "NOT_FOUND").await;
    let res = app
        .http
        .post(app.url("/wallets/not-a-uuid/transactions"))
        .bearer_auth(&app.service_token)
        .json(&json!({"amount": "1.00", "type": "CREDIT"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 404, "NOT_FOUND").await;
    assert_eq!(app.count("SELECT count(*) FROM transactions", &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_64_kib_is_refused_with_413() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("50.00", "USD").await;
    let pad = "x".repeat(64 * 1024);
    let body = format!(r#"{{"amount": "1.00", "type": "CREDIT", "description": "{pad}"}}"#);
    expect_problem(post_raw(&app, wallet, &body).await, 413, "PAYLOAD_TOO_LARGE").await;

    // The same without Content-Length (chunked): the cap holds on what is read, not on what is declared.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let head = format!(
        "POST /wallets/{wallet}/transactions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.service_token
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.as_bytes().chunks(8 * 1024) {
        let sent = async {
            s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
            s.write_all(chunk).await?;
            s.write_all(b"\r\n").await
        };
        if sent.await.is_err() {
            break; // the server may answer and close before reading everything
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("PAYLOAD_TOO_LARGE"), "{reply}");

    assert_eq!(app.balance(wallet).await, "50.00");
    assert_eq!(txn_rows(&app, wallet).await, 0);
    // Just under the limit is fine.
    let pad = "y".repeat(1000);
    let body = format!(r#"{{"amount": "1.00", "type": "CREDIT", "metadata": {{"note": "{pad}"}}}}"#);
    assert_eq!(post_raw(&app, wallet, &body).await.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_is_405_and_an_unknown_route_is_404_both_problem_json() {
    let app = spawn_app().await;
    let wallet = Uuid::new_v4();
    for (method, path) in [
        (reqwest::Method::DELETE, format!("/wallets/{wallet}/transactions")),
        (reqwest::Method::PATCH, "/transfers".to_string()),
        (reqwest::Method::POST, "/health".to_string()),
        (reqwest::Method::DELETE, format!("/users/{wallet}")),
    ] {
        let res = app
            .http
            .request(method.clone(), app.url(&path))
            .bearer_auth(&app.service_token)
            .send()
            .await
            .unwrap();
        let body = expect_problem(res, 405, "METHOD_NOT_ALLOWED").await;
        assert_eq!(body["status"], 405, "{method} {path}");
    }
    for path in ["/nope", "/wallets/x/y/z", "/transfers/extra", "/"] {
        let res = app.get_as(&app.service_token, path).await;
        expect_problem(res, 404, "NOT_FOUND").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_booking_reference_debited_twice_has_one_effect() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let debit = json!({"amount": "30.00", "type": "DEBIT", "reference_id": "booking-7", "reference_type": "BOOKING"});
    let first = posted(&app, wallet, debit.clone()).await;
    let res = app.post_txn(wallet, debit.clone()).await;
    let problem = expect_problem(res, 409, "CONFLICT").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(first["txn_id"].as_str().unwrap()),
        "the conflict names the transaction that took effect: {problem}"
    );
    // Even with another amount: the booking was debited already.
    let res = app
        .post_txn(
            wallet,
            json!({"amount": "1.00", "type": "DEBIT", "reference_id": "booking-7", "reference_type": "BOOKING"}),
        )
        .await;
    expect_problem(res, 409, "CONFLICT").await;
    assert_eq!(app.balance(wallet).await, "70.00");
    let rows = app
        .count(
            "SELECT count(*) FROM transactions WHERE wallet_id = $1 AND reference_id = 'booking-7' AND type = 'DEBIT'",
            &[&wallet],
        )
        .await;
    assert_eq!(rows, 1);
    // Its refund is another type: allowed once.
    let refund = json!({"amount": "30.00", "type": "CREDIT", "reference_id": "booking-7", "reference_type": "BOOKING"});
    posted(&app, wallet, refund.clone()).await;
    expect_problem(app.post_txn(wallet, refund).await, 409, "CONFLICT").await;
    // Another reference type with the same id is another reference.
    posted(
        &app,
        wallet,
        json!({"amount": "1.00", "type": "DEBIT", "reference_id": "booking-7", "reference_type": "INVOICE"}),
    )
    .await;
    assert_eq!(app.balance(wallet).await, "99.00");
    assert_eq!(txn_rows(&app, wallet).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_debits_of_one_booking_have_one_effect() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let debit =
        json!({"amount": "10.00", "type": "DEBIT", "reference_id": "booking-race", "reference_type": "BOOKING"});
    let replies = futures_util::future::join_all((0..10).map(|_| app.post_txn(wallet, debit.clone()))).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(app.balance(wallet).await, "90.00");
    assert_eq!(txn_rows(&app, wallet).await, 1);
}

// ---- GET /wallets/{walletId}/transactions ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_newest_first_and_paginated() {
    let app = spawn_app().await;
    let (user, company, wallet) = app.user_with_wallet("0.00", "USD").await;
    for i in 1..=5 {
        posted(
            &app,
            wallet,
            json!({"amount": format!("{i}.00"), "type": "CREDIT", "description": format!("n{i}")}),
        )
        .await;
    }
    let own = token(Role::User, user, company);
    let (status, page) = json_of(history(&app, &own, wallet, "").await).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(amounts(&page), ["5.00", "4.00", "3.00", "2.00", "1.00"]);
    assert_eq!(page["pagination"], json!({"page": 1, "limit": 20, "total": 5}));
    let item = &page["transactions"][0];
    for field in [
        "txn_id",
        "amount",
        "type",
        "description",
        "reference_id",
        "reference_type",
        "status",
        "balance_after",
        "created_at",
    ] {
        assert!(item.get(field).is_some(), "{field} missing: {item}");
    }
    assert_eq!(item["balance_after"], "15.00");
    assert_eq!(item["status"], "COMPLETED");
    assert_eq!(item["type"], "CREDIT");
    assert_eq!(item["description"], "n5");

    let (_, page) = json_of(history(&app, &own, wallet, "?page=1&limit=2").await).await;
    assert_eq!(amounts(&page), ["5.00", "4.00"]);
    assert_eq!(page["pagination"], json!({"page": 1, "limit": 2, "total": 5}));
    let (_, page) = json_of(history(&app, &own, wallet, "?page=2&limit=2").await).await;
    assert_eq!(amounts(&page), ["3.00", "2.00"]);
    let (_, page) = json_of(history(&app, &own, wallet, "?page=3&limit=2").await).await;
    assert_eq!(amounts(&page), ["1.00"]);
    let (_, page) = json_of(history(&app, &own, wallet, "?page=4&limit=2").await).await;
    assert_eq!(amounts(&page), Vec::<String>::new());
    assert_eq!(page["pagination"]["total"], 5);
    let (status, _) = json_of(history(&app, &own, wallet, "?limit=100").await).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_refuses_bad_paging_dates_and_unknown_parameters_with_400() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("1.00", "USD").await;
    let t = app.admin_token.clone();
    for (query, field) in [
        ("?limit=101", "limit"),
        ("?limit=0", "limit"),
        ("?limit=-1", "limit"),
        ("?limit=ten", "limit"),
        ("?page=0", "page"),
        ("?page=1.5", "page"),
        ("?start_date=2024-13-01", "start_date"),
        ("?start_date=yesterday", "start_date"),
        ("?end_date=2024-02-30", "end_date"),
        ("?end_date=2024-01-01T25:00:00Z", "end_date"),
        ("?start_date=2024-02-01&end_date=2024-01-01", "end_date"),
        ("?type=REFUND", "type"),
        ("?status=DONE", "status"),
        ("?sort=asc", "sort"),
        ("?wallet_id=x", "wallet_id"),
    ] {
        let problem = expect_problem(history(&app, &t, wallet, query).await, 400, "VALIDATION_FAILED").await;
        assert_eq!(problem["errors"][0]["field"], field, "{query} → {problem}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_filters_by_type_and_status() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    posted(&app, wallet, json!({"amount": "1.00", "type": "DEBIT"})).await;
    posted(&app, wallet, json!({"amount": "2.00", "type": "CREDIT"})).await;
    posted(&app, wallet, json!({"amount": "3.00", "type": "DEBIT"})).await;
    let t = app.admin_token.clone();
    let (_, page) = json_of(history(&app, &t, wallet, "?type=DEBIT").await).await;
    assert_eq!(amounts(&page), ["3.00", "1.00"]);
    assert_eq!(page["pagination"]["total"], 2);
    let (_, page) = json_of(history(&app, &t, wallet, "?type=CREDIT&limit=1").await).await;
    assert_eq!(amounts(&page), ["2.00"]);
    // And the opening balance.
    assert_eq!(page["pagination"]["total"], 2);
    let (_, page) = json_of(history(&app, &t, wallet, "?type=TRANSFER_IN").await).await;
    assert_eq!(page["pagination"]["total"], 0);
    let (_, page) = json_of(history(&app, &t, wallet, "?status=COMPLETED").await).await;
    assert_eq!(page["pagination"]["total"], 4);
    let (_, page) = json_of(history(&app, &t, wallet, "?status=FAILED").await).await;
    assert_eq!(page["pagination"]["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_filters_by_dates_and_by_timestamps() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("0.00", "USD").await;
    let mut created = Vec::new();
    for i in 1..=4 {
        let body = posted(&app, wallet, json!({"amount": format!("{i}.00"), "type": "CREDIT"})).await;
        created.push(body["created_at"].as_str().unwrap().to_string());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = app.admin_token.clone();
    let today = chrono::Utc::now().date_naive();
    let first = created[0][..10].to_string();
    let q = |s: String| s.replace(':', "%3A").replace('+', "%2B");

    // Dates: a day is included whole, at either end.
    let (_, page) = json_of(history(&app, &t, wallet, &format!("?start_date={first}&end_date={first}")).await).await;
    let same_day = created.iter().filter(|c| c.starts_with(&first)).count();
    assert_eq!(page["pagination"]["total"], same_day as i64, "{page}");
    let tomorrow = today.succ_opt().unwrap();
    let (_, page) = json_of(history(&app, &t, wallet, &format!("?start_date={tomorrow}")).await).await;
    assert_eq!(page["pagination"]["total"], 0);
    let yesterday = today.pred_opt().unwrap();
    let (_, page) = json_of(
        history(
            &app,
            &t,
            wallet,
            &format!("?end_date={}", yesterday.pred_opt().unwrap()),
        )
        .await,
    )
    .await;
    assert_eq!(page["pagination"]["total"], 0);
    let (_, page) = json_of(history(&app, &t, wallet, &format!("?start_date={yesterday}")).await).await;
    assert_eq!(page["pagination"]["total"], 4);

    // Timestamps: both bounds inclusive.
    let (_, page) = json_of(history(&app, &t, wallet, &q(format!("?start_date={}", created[2]))).await).await;
    assert_eq!(amounts(&page), ["4.00", "3.00"], "{page}");
    let (_, page) = json_of(history(&app, &t, wallet, &q(format!("?end_date={}", created[1]))).await).await;
    assert_eq!(amounts(&page), ["2.00", "1.00"], "{page}");
    let (_, page) = json_of(
        history(
            &app,
            &t,
            wallet,
            &q(format!("?start_date={}&end_date={}", created[1], created[2])),
        )
        .await,
    )
    .await;
    assert_eq!(amounts(&page), ["3.00", "2.00"], "{page}");
    // A timestamp with an offset is the same instant.
    let instant = chrono::DateTime::parse_from_rfc3339(&created[3]).unwrap();
    let shifted = instant.with_timezone(&chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap());
    let (_, page) = json_of(history(&app, &t, wallet, &q(format!("?start_date={}", shifted.to_rfc3339()))).await).await;
    assert_eq!(amounts(&page), ["4.00"], "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_history_is_404_and_a_managers_own_company_is_visible() {
    let app = spawn_app().await;
    let (_, company, wallet) = app.user_with_wallet("1.00", "USD").await;
    let stranger = token(Role::User, Uuid::new_v4(), company);
    expect_problem(history(&app, &stranger, wallet, "").await, 404, "NOT_FOUND").await;
    let other_manager = token(Role::Manager, Uuid::new_v4(), Uuid::new_v4());
    expect_problem(history(&app, &other_manager, wallet, "").await, 404, "NOT_FOUND").await;
    let manager = token(Role::Manager, Uuid::new_v4(), company);
    assert_eq!(history(&app, &manager, wallet, "").await.status(), 200);
    expect_problem(
        history(&app, &app.admin_token, Uuid::new_v4(), "").await,
        404,
        "NOT_FOUND",
    )
    .await;
    let res = app.get(&format!("/wallets/{wallet}/transactions")).await;
    expect_problem(res, 401, "UNAUTHENTICATED").await;
}

// ---- audit ----

/// What a refused request must leave alone: the wallet's balance and version, rows, events, references.
async fn snapshot(c: &tokio_postgres::Client, wallet: Uuid) -> (String, i64, i64, i64) {
    let row = c
        .query_one(
            "SELECT (SELECT balance::text || '/' || version FROM wallets WHERE wallet_id = $1), \
                    (SELECT count(*) FROM transactions), (SELECT count(*) FROM outbox_events), \
                    (SELECT count(*) FROM transaction_references)",
            &[&wallet],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_debit_is_audited_and_changes_nothing_else() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("5.00", "USD").await;
    let c = app.db.client().await;
    let before = snapshot(&c, wallet).await;
    let res = app
        .post_txn(
            wallet,
            json!({"amount": "7.25", "type": "DEBIT", "reference_id": "b-1", "reference_type": "BOOKING"}),
        )
        .await;
    expect_problem(res, 422, "INSUFFICIENT_FUNDS").await;
    assert_eq!(
        snapshot(&c, wallet).await,
        before,
        "wallet, rows, events and references unchanged"
    );
    let rows = c
        .query(
            "SELECT actor_role, action, outcome, detail->>'amount' FROM audit_log \
             WHERE target_type = 'wallet' AND target_id = $1 AND outcome <> 'APPLIED'",
            &[&wallet.to_string()],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "service");
    assert_eq!(rows[0].get::<_, String>(1), "wallet.debit");
    assert_eq!(rows[0].get::<_, String>(2), "INSUFFICIENT_FUNDS");
    assert_eq!(rows[0].get::<_, Option<String>>(3).as_deref(), Some("7.25"));
    // The booking reference was not consumed by the refusal.
    let body = posted(
        &app,
        wallet,
        json!({"amount": "5.00", "type": "DEBIT", "reference_id": "b-1", "reference_type": "BOOKING"}),
    )
    .await;
    assert_eq!(body["balance_after"], "0.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_refuses_update_delete_and_truncate() {
    let app = spawn_app().await;
    app.user_with_wallet("5.00", "USD").await;
    let c = app.db.client().await;
    let before = app.count("SELECT count(*) FROM audit_log", &[]).await;
    assert!(before >= 1, "the wallet's creation is audited");
    for sql in [
        "UPDATE audit_log SET outcome = 'FORGED'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let err = c.batch_execute(sql).await.expect_err(sql);
        assert!(
            err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
            "{sql}: {err:?}"
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM audit_log", &[]).await, before);
    assert_eq!(
        app.count("SELECT count(*) FROM audit_log WHERE outcome = 'FORGED'", &[])
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_posting_is_audited_by_its_append_only_ledger_row() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("5.00", "USD").await;
    let body = posted(
        &app,
        wallet,
        json!({"amount": "1.25", "type": "DEBIT", "reference_id": "trip-9"}),
    )
    .await;
    let txn: Uuid = body["txn_id"].as_str().unwrap().parse().unwrap();
    let c = app.db.client().await;

    // The ledger row says who asked; the audit trail shows it with everything else.
    let row = c
        .query_one(
            "SELECT actor_role, actor_id IS NOT NULL FROM transactions WHERE txn_id = $1",
            &[&txn],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "service");
    assert!(row.get::<_, bool>(1));
    let trail = c
        .query(
            "SELECT action, outcome, actor_role, detail->>'amount', detail->>'reference_id' FROM audit_trail \
             WHERE target_type = 'wallet' AND target_id = $1 ORDER BY at",
            &[&wallet.to_string()],
        )
        .await
        .unwrap();
    let debit: Vec<_> = trail
        .iter()
        .filter(|r| r.get::<_, String>(0) == "wallet.debit")
        .collect();
    assert_eq!(debit.len(), 1, "one trail entry for the debit");
    assert_eq!(debit[0].get::<_, String>(1), "APPLIED");
    assert_eq!(debit[0].get::<_, String>(2), "service");
    assert_eq!(debit[0].get::<_, String>(3), "1.25");
    assert_eq!(debit[0].get::<_, String>(4), "trip-9");
    assert!(
        trail.iter().any(|r| r.get::<_, String>(0) == "wallet.create"),
        "the creation, from audit_log, is in the same trail"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM audit_log WHERE detail->>'txn_id' = $1",
            &[&txn.to_string()]
        )
        .await,
        0,
        "recorded once, in the ledger"
    );

    // Like the audit log, the ledger cannot be rewritten.
    for sql in [
        "UPDATE transactions SET amount = 0.01",
        "DELETE FROM transactions",
        "TRUNCATE transactions",
    ] {
        let err = c.batch_execute(sql).await.expect_err(sql);
        assert!(format!("{err:?}").contains("append-only"), "{sql}: {err:?}");
    }
    let amount: String = c
        .query_one("SELECT amount::text FROM transactions WHERE txn_id = $1", &[&txn])
        .await
        .unwrap()
        .get(0);
    assert_eq!(amount, "1.25");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_walk_of_a_100k_row_history_sees_every_row_once_while_rows_are_added() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("0.00", "USD").await;
    // 100,000 ledger rows written straight into the table (many share a millisecond: the walk must break
    // ties by id).
    let c = app.db.client().await;
    let mut written = std::collections::HashSet::new();
    for _ in 0..10 {
        let ids: Vec<(Uuid, chrono::DateTime<chrono::Utc>)> =
            (0..10_000).map(|_| wallet_actors::state::new_txn_id()).collect();
        let txn: Vec<Uuid> = ids.iter().map(|(id, _)| *id).collect();
        let at: Vec<chrono::DateTime<chrono::Utc>> = ids.iter().map(|(_, t)| *t).collect();
        c.execute(
            "INSERT INTO transactions (txn_id, wallet_id, amount, type, status, balance_after, created_at) \
             SELECT t, $1, 0.01, 'CREDIT', 'COMPLETED', 0.01, a FROM unnest($2::uuid[], $3::timestamptz[]) AS v(t, a)",
            &[&wallet, &txn, &at],
        )
        .await
        .expect("bulk insert");
        written.extend(txn);
    }
    let before: i64 = app
        .count("SELECT count(*) FROM transactions WHERE wallet_id = $1", &[&wallet])
        .await;
    let mut seen = std::collections::HashSet::new();
    let mut cursor = String::new();
    let mut pages = 0;
    let mut newest_first = true;
    let mut previous: Option<(String, String)> = None;
    loop {
        let (status, page) =
            json_of(history(&app, &app.admin_token, wallet, &format!("?limit=100&cursor={cursor}")).await).await;
        assert_eq!(status, 200, "{page}");
        if pages == 0 {
            assert_eq!(page["pagination"]["total"], before, "the first page counts");
        } else {
            assert!(
                page["pagination"].get("total").is_none(),
                "later pages do not count again"
            );
        }
        for t in page["transactions"].as_array().expect("transactions") {
            let id = t["txn_id"].as_str().unwrap().to_string();
            let at = t["created_at"].as_str().unwrap().to_string();
            if let Some((p_at, p_id)) = &previous {
                newest_first &= (at.as_str(), id.as_str()) < (p_at.as_str(), p_id.as_str());
            }
            previous = Some((at, id.clone()));
            assert!(seen.insert(id), "a row seen twice");
        }
        pages += 1;
        // A posting during the walk: newer than the cursor, so never in a later page.
        if pages % 250 == 0 {
            let res = app.post_txn(wallet, json!({"amount": "1.00", "type": "CREDIT"})).await;
            assert_eq!(res.status(), 201);
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert!(newest_first, "newest first, ties broken by id");
    assert_eq!(seen.len() as i64, before, "every row that existed at the start, once");
    assert!(written.iter().all(|id| seen.contains(&id.to_string())));
    assert_eq!(pages, (before as usize).div_ceil(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_cursor_or_a_cursor_with_a_page_answers_400() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("10.00", "USD").await;
    for q in ["?cursor=not-a-cursor", "?cursor=AAAA", "?cursor=&page=2"] {
        expect_problem(
            history(&app, &app.admin_token, wallet, q).await,
            400,
            "VALIDATION_FAILED",
        )
        .await;
    }
    // Page mode offers the next cursor too.
    for _ in 0..3 {
        assert_eq!(
            app.post_txn(wallet, json!({"amount": "1.00", "type": "DEBIT"}))
                .await
                .status(),
            201
        );
    }
    let (_, first) = json_of(history(&app, &app.admin_token, wallet, "?limit=2").await).await;
    let next = first["next_cursor"].as_str().expect("a next page").to_string();
    let (_, second) = json_of(history(&app, &app.admin_token, wallet, &format!("?limit=2&cursor={next}")).await).await;
    // 3 debits and the opening credit: 2 + 2.
    assert_eq!(second["transactions"].as_array().unwrap().len(), 2);
    assert!(second["next_cursor"].is_null());
}
