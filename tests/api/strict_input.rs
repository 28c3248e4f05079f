//! What comes in is refused at the edge when Postgres could not store it or when it is not exactly one
//! JSON document: a NUL character in any text field (400 naming the field, nothing changed, the
//! Idempotency-Key not consumed), trailing data after the document, amounts outside the strict grammar,
//! and `metadata` that is not an object. Real app, real Postgres.

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;
use wallet_service::auth::Role;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::fixtures::{budget_body, token};
use crate::helpers::replies::{expect_problem, json_of};

/// Sends a raw JSON body.
async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    key: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut req = app
        .http
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    req.send().await.expect("request")
}

async fn post_txn_raw(app: &TestApp, wallet: Uuid, key: Option<&str>, body: &str) -> reqwest::Response {
    let path = format!("/wallets/{wallet}/transactions");
    send(app, Method::POST, &path, &app.service_token, key, body).await
}

/// `POST /transfers` as the service caller, under the key `transfer-nul`.
async fn keyed_transfer(app: &TestApp, body: &str) -> reqwest::Response {
    send(
        app,
        Method::POST,
        "/transfers",
        &app.service_token,
        Some("transfer-nul"),
        body,
    )
    .await
}

async fn post_budget(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    send(app, Method::POST, "/budgets", token, None, &body.to_string()).await
}

/// Expects 400 `VALIDATION_FAILED` naming `field`; returns the problem.
async fn refused(res: reqwest::Response, field: &str) -> Value {
    let problem = expect_problem(res, 400, "VALIDATION_FAILED").await;
    assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    problem
}

/// Ledger rows posted to the wallet since it was opened (its opening balance is a ledger row too).
async fn txn_rows(app: &TestApp, wallet: Uuid) -> i64 {
    app.count(
        "SELECT count(*) FROM transactions WHERE wallet_id = $1 AND reference_type IS DISTINCT FROM 'OPENING'",
        &[&wallet],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_any_text_of_a_posting_is_refused_with_400_and_does_not_consume_the_key() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let base = json!({"amount": "1.00", "type": "CREDIT"});
    let with = |extra: Value| {
        let mut b = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases = [
        (with(json!({"description": "a\u{0}b"})), "description"),
        (with(json!({"reference_id": "\u{0}"})), "reference_id"),
        (
            with(json!({"reference_id": "r-1", "reference_type": "BOOK\u{0}ING"})),
            "reference_type",
        ),
        (with(json!({"metadata": {"note": "x\u{0}"}})), "metadata.note"),
        (
            with(json!({"metadata": {"a": {"b": [1, "ok", "bad\u{0}"]}}})),
            "metadata.a.b[2]",
        ),
        (with(json!({"metadata": {"ke\u{0}y": "value"}})), "metadata"),
        (with(json!({"metadata": {"outer": {"ke\u{0}y": 1}}})), "metadata.outer"),
    ];
    for (i, (body, field)) in cases.iter().enumerate() {
        let text = serde_json::to_string(body).unwrap();
        assert!(text.contains("\\u0000"), "{text}");
        let key = format!("nul-{i}");
        let problem = refused(post_txn_raw(&app, wallet, Some(&key), &text).await, field).await;
        assert!(
            problem["errors"][0]["message"].as_str().unwrap().contains("NUL"),
            "{problem}"
        );
        // The key was not consumed: the same key with a good body is a fresh request.
        let good = json!({"amount": "1.00", "type": "CREDIT", "description": format!("good {i}")});
        let res = post_txn_raw(&app, wallet, Some(&key), &good.to_string()).await;
        let (status, reply) = json_of(res).await;
        assert_eq!(status, 201, "{reply}");
    }
    assert_eq!(txn_rows(&app, wallet).await, cases.len() as i64);
    assert_eq!(app.balance(wallet).await, format!("{}.00", 100 + cases.len()));
    // The text `\u0000` (an escaped backslash, not NUL) is ordinary text.
    let res = post_txn_raw(
        &app,
        wallet,
        None,
        r#"{"amount":"1.00","type":"CREDIT","description":"\\u0000"}"#,
    )
    .await;
    let (status, reply) = json_of(res).await;
    assert_eq!(
        (status, reply["description"].as_str()),
        (201, Some("\\u0000")),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_transfer_status_reason_budget_reason_or_user_field_is_refused_with_400() {
    let app = spawn_app().await;
    let (_, company, wallet) = app.user_with_wallet("100.00", "USD").await;
    let (_, _, other) = app.user_with_wallet("0.00", "USD").await;
    let manager = token(Role::Manager, Uuid::new_v4(), company);

    // Transfers: description and reference_id.
    for (extra, field) in [
        (json!({"description": "x\u{0}"}), "description"),
        (json!({"reference_id": "t\u{0}1"}), "reference_id"),
    ] {
        let mut body = json!({"from_wallet_id": wallet, "to_wallet_id": other, "amount": "5.00"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let res = keyed_transfer(&app, &body.to_string()).await;
        refused(res, field).await;
    }
    let body = json!({"from_wallet_id": wallet, "to_wallet_id": other, "amount": "5.00"});
    let res = keyed_transfer(&app, &body.to_string()).await;
    assert_eq!(res.status(), 201, "the key was not consumed by the refusals");

    // Wallet status: reason.
    let path = format!("/wallets/{wallet}/status");
    let body = json!({"status": "FROZEN", "reason": "fraud\u{0}check"}).to_string();
    refused(send(&app, Method::PUT, &path, &manager, None, &body).await, "reason").await;
    let status = app
        .count(
            "SELECT count(*) FROM wallets WHERE wallet_id = $1 AND status = 'ACTIVE'",
            &[&wallet],
        )
        .await;
    assert_eq!(status, 1, "the wallet is still ACTIVE");

    // Budgets: change_reason.
    let res = post_budget(&app, &manager, &budget_body(wallet, "50.00")).await;
    let (status, budget) = json_of(res).await;
    assert_eq!(status, 201, "{budget}");
    let budget_id = budget["budget_id"].as_str().unwrap().to_string();
    let path = format!("/budgets/{budget_id}");
    let body = json!({"total_amount": "60.00", "change_reason": "more\u{0}"}).to_string();
    refused(
        send(&app, Method::PUT, &path, &manager, None, &body).await,
        "change_reason",
    )
    .await;
    let id = Uuid::parse_str(&budget_id).unwrap();
    assert_eq!(
        app.count(
            "SELECT count(*) FROM budget_history WHERE budget_id = $1 AND new_amount = 60",
            &[&id]
        )
        .await,
        0
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM budgets WHERE budget_id = $1 AND total_amount = 50",
            &[&id]
        )
        .await,
        1
    );

    // Users: e-mail (and a NUL in a field that is then unknown is refused too).
    let user = Uuid::new_v4();
    let path = format!("/users/{user}");
    for (body, field) in [
        (
            json!({"email": "a\u{0}@example.com", "company_id": company, "role": "user"}),
            "email",
        ),
        (
            json!({"email": "a@example.com", "company_id": company, "role": "us\u{0}er"}),
            "role",
        ),
    ] {
        let res = send(&app, Method::PUT, &path, &app.admin_token, None, &body.to_string()).await;
        refused(res, field).await;
    }
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE user_id = $1", &[&user])
            .await,
        0
    );
    // Nothing moved.
    assert_eq!(app.balance(wallet).await, "95.00");
    assert_eq!(app.balance(other).await, "5.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_data_after_the_json_document_is_refused_on_every_body() {
    let app = spawn_app().await;
    let (_, company, wallet) = app.user_with_wallet("100.00", "USD").await;
    let manager = token(Role::Manager, Uuid::new_v4(), company);
    let two = |a: &str, b: &str| format!("{a}{b}");

    // Postings: the reported case, and other tails.
    let one = r#"{"amount":"0.01","type":"CREDIT"}"#;
    for tail in [r#"{"amount":"5","type":"CREDIT"}"#, " x", ",", "]", "null", "0"] {
        let body = two(one, tail);
        refused(post_txn_raw(&app, wallet, Some("tail"), &body).await, "body").await;
    }
    assert_eq!(txn_rows(&app, wallet).await, 0);
    // Whitespace after the document is fine (and the key was free).
    let res = post_txn_raw(&app, wallet, Some("tail"), &two(one, " \r\n\t")).await;
    assert_eq!(res.status(), 201);

    // Users.
    let user = Uuid::new_v4();
    let body = json!({"email": "t@example.com", "company_id": company, "role": "user"}).to_string();
    let path = format!("/users/{user}");
    let res = send(&app, Method::PUT, &path, &app.admin_token, None, &two(&body, &body)).await;
    refused(res, "body").await;
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE user_id = $1", &[&user])
            .await,
        0
    );

    // Wallets.
    let body = json!({"user_id": user}).to_string();
    let res = send(
        &app,
        Method::POST,
        "/wallets",
        &app.admin_token,
        None,
        &two(&body, "{}"),
    )
    .await;
    refused(res, "body").await;

    // Budgets: create, update.
    let body = budget_body(wallet, "50.00").to_string();
    let res = send(&app, Method::POST, "/budgets", &manager, None, &two(&body, &body)).await;
    refused(res, "body").await;
    assert_eq!(
        app.count("SELECT count(*) FROM budgets WHERE wallet_id = $1", &[&wallet])
            .await,
        0
    );
    let res = send(&app, Method::POST, "/budgets", &manager, None, &body).await;
    let (status, budget) = json_of(res).await;
    assert_eq!(status, 201, "{budget}");
    let path = format!("/budgets/{}", budget["budget_id"].as_str().unwrap());
    let update = json!({"total_amount": "70.00", "change_reason": "more"}).to_string();
    let res = send(&app, Method::PUT, &path, &manager, None, &two(&update, "x")).await;
    refused(res, "body").await;

    // Wallet status.
    let path = format!("/wallets/{wallet}/status");
    let body = json!({"status": "FROZEN"}).to_string();
    let res = send(&app, Method::PUT, &path, &manager, None, &two(&body, &body)).await;
    refused(res, "body").await;
    assert_eq!(
        app.count(
            "SELECT count(*) FROM wallets WHERE wallet_id = $1 AND status = 'ACTIVE'",
            &[&wallet]
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_amounts_follow_the_strict_grammar_and_numbers_keep_exponents() {
    let app = spawn_app().await;
    let (_, company, wallet) = app.user_with_wallet("100.00", "USD").await;
    for bad in [" 12", "12 ", "+12", "12.", ".5", "1e2", "\t1", "1 2", "-0", "１２"] {
        let body = json!({"amount": bad, "type": "CREDIT"}).to_string();
        refused(post_txn_raw(&app, wallet, None, &body).await, "amount").await;
    }
    assert_eq!(txn_rows(&app, wallet).await, 0);
    for (body, expect) in [
        (r#"{"amount":"12","type":"CREDIT"}"#, "12.00"),
        (r#"{"amount":"012.5","type":"CREDIT"}"#, "12.50"),
        (r#"{"amount":1e2,"type":"CREDIT"}"#, "100.00"),
        (r#"{"amount":1.25E1,"type":"CREDIT"}"#, "12.50"),
        (r#"{"amount":12,"type":"CREDIT"}"#, "12.00"),
    ] {
        let (status, reply) = json_of(post_txn_raw(&app, wallet, None, body).await).await;
        assert_eq!(
            (status, reply["amount"].as_str()),
            (201, Some(expect)),
            "{body} → {reply}"
        );
    }
    // The same grammar for every amount field.
    let user = Uuid::new_v4();
    assert_eq!(app.put_user(user, company, "user").await.status(), 200);
    let body = json!({"user_id": user, "initial_balance": " 10.00"}).to_string();
    let res = send(&app, Method::POST, "/wallets", &app.admin_token, None, &body).await;
    refused(res, "initial_balance").await;
    let manager = token(Role::Manager, Uuid::new_v4(), company);
    let res = post_budget(&app, &manager, &budget_body(wallet, "+50")).await;
    refused(res, "total_amount").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_must_be_a_json_object() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    for metadata in [json!([1, 2]), json!("note"), json!(12), json!(true), json!([])] {
        let body = json!({"amount": "1.00", "type": "CREDIT", "metadata": metadata}).to_string();
        let problem = refused(post_txn_raw(&app, wallet, Some("meta"), &body).await, "metadata").await;
        assert!(problem["detail"].as_str().unwrap().contains("object"), "{problem}");
    }
    assert_eq!(txn_rows(&app, wallet).await, 0);
    for metadata in [json!({"order": 7, "tags": ["a"]}), json!({}), Value::Null] {
        let body = json!({"amount": "1.00", "type": "CREDIT", "metadata": metadata}).to_string();
        let (status, reply) = json_of(post_txn_raw(&app, wallet, None, &body).await).await;
        assert_eq!(status, 201, "{reply}");
    }
    let stored = app
        .count(
            "SELECT count(*) FROM transactions WHERE wallet_id = $1 AND metadata->>'order' = '7'",
            &[&wallet],
        )
        .await;
    assert_eq!(stored, 1);
}
