//! `PUT /users/{userId}`, `POST /wallets`, `GET /wallets/{userId}` and `PUT /wallets/{walletId}/status`
//! against the real app and its own Postgres database.

use serde_json::{Value, json};
use uuid::Uuid;
use wallet_service::auth::Role;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::fixtures::token;
use crate::helpers::replies::{expect_problem, json_of};

async fn put_user_as(app: &TestApp, token: &str, user: Uuid, body: Value) -> reqwest::Response {
    app.http
        .put(app.url(&format!("/users/{user}")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn get_wallet_as(app: &TestApp, token: &str, user: Uuid) -> reqwest::Response {
    app.get_as(token, &format!("/wallets/{user}")).await
}

async fn set_status_as(app: &TestApp, token: &str, wallet: Uuid, body: Value) -> reqwest::Response {
    app.http
        .put(app.url(&format!("/wallets/{wallet}/status")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// Records a user (no wallet yet); returns (user_id, company_id).
async fn known_user(app: &TestApp) -> (Uuid, Uuid) {
    let (user, company) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(app.put_user(user, company, "user").await.status(), 200);
    (user, company)
}

// ---- PUT /users/{userId} ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_service_record_users_with_200() {
    let app = spawn_app().await;
    let (user, company) = (Uuid::new_v4(), Uuid::new_v4());
    let res = put_user_as(
        &app,
        &app.admin_token,
        user,
        json!({"email": "ada@example.com", "company_id": company, "role": "manager"}),
    )
    .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], user.to_string());
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!(body["company_id"], company.to_string());
    assert_eq!(body["role"], "manager");
    assert!(body["created_at"].is_string() && body["updated_at"].is_string());

    // The service caller may update the same user (an upsert).
    let other_company = Uuid::new_v4();
    let res = put_user_as(
        &app,
        &app.service_token,
        user,
        json!({"email": "ada@example.org", "company_id": other_company, "role": "user"}),
    )
    .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["email"], "ada@example.org");
    let rows = app
        .count(
            "SELECT count(*) FROM users WHERE user_id = $1 AND company_id = $2 AND role = 'user'",
            &[&user, &other_company],
        )
        .await;
    assert_eq!(rows, 1);
    let audited = app
        .count(
            "SELECT count(*) FROM audit_log WHERE action = 'user.upsert' AND target_id = $1",
            &[&user.to_string()],
        )
        .await;
    assert_eq!(audited, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_managers_may_not_record_users_403() {
    let app = spawn_app().await;
    let company = Uuid::new_v4();
    let target = Uuid::new_v4();
    let body = json!({"email": "x@example.com", "company_id": company, "role": "user"});
    for role in [Role::User, Role::Manager] {
        let t = token(role, Uuid::new_v4(), company);
        expect_problem(put_user_as(&app, &t, target, body.clone()).await, 403, "FORBIDDEN").await;
    }
    // Not even for themselves.
    let t = token(Role::User, target, company);
    expect_problem(put_user_as(&app, &t, target, body).await, 403, "FORBIDDEN").await;
    assert_eq!(app.count("SELECT count(*) FROM users", &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_email_is_refused_with_400() {
    let app = spawn_app().await;
    let company = Uuid::new_v4();
    for email in [
        "not-an-email",
        "@example.com",
        "ada@",
        "",
        &format!("{}@example.com", "a".repeat(250)),
    ] {
        let res = put_user_as(
            &app,
            &app.admin_token,
            Uuid::new_v4(),
            json!({"email": email, "company_id": company, "role": "user"}),
        )
        .await;
        let body = expect_problem(res, 400, "VALIDATION_FAILED").await;
        assert_eq!(body["errors"][0]["field"], "email", "{email}: {body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM users", &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_field_or_role_in_the_user_body_is_refused_with_400() {
    let app = spawn_app().await;
    let company = Uuid::new_v4();
    let res = put_user_as(
        &app,
        &app.admin_token,
        Uuid::new_v4(),
        json!({"email": "a@example.com", "company_id": company, "role": "user", "is_admin": true}),
    )
    .await;
    let body = expect_problem(res, 400, "VALIDATION_FAILED").await;
    assert_eq!(body["errors"][0]["field"], "is_admin", "{body}");

    let res = put_user_as(
        &app,
        &app.admin_token,
        Uuid::new_v4(),
        json!({"email": "a@example.com", "company_id": company, "role": "root"}),
    )
    .await;
    expect_problem(res, 400, "VALIDATION_FAILED").await;

    let res = app
        .http
        .put(app.url(&format!("/users/{}", Uuid::new_v4())))
        .bearer_auth(&app.admin_token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "VALIDATION_FAILED").await;
    assert_eq!(app.count("SELECT count(*) FROM users", &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_email_is_stored_encrypted_and_never_in_plaintext() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let email = "grace.hopper@example.com";
    let res = put_user_as(
        &app,
        &app.admin_token,
        user,
        json!({"email": email, "company_id": Uuid::new_v4(), "role": "user"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let c = app.db.client().await;
    let row = c
        .query_one(
            "SELECT email_encrypted, email_hash, to_jsonb(u)::text FROM users u WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    let encrypted: Vec<u8> = row.get(0);
    let hash: Vec<u8> = row.get(1);
    let whole_row: String = row.get(2);
    let needle = email.as_bytes();
    let contains = |hay: &[u8], n: &[u8]| hay.windows(n.len()).any(|w| w == n);
    assert!(encrypted.len() > needle.len(), "ciphertext carries nonce and tag");
    assert!(!contains(&encrypted, needle), "the e-mail is stored in clear");
    assert!(
        !contains(&encrypted, b"grace.hopper"),
        "part of the e-mail is stored in clear"
    );
    assert!(!contains(&hash, b"grace"), "the look-up hash leaks the e-mail");
    assert!(
        !whole_row.contains("grace"),
        "the users row leaks the e-mail: {whole_row}"
    );
    // The audit trail does not carry it either.
    let audit = app
        .count("SELECT count(*) FROM audit_log WHERE detail::text LIKE '%grace%'", &[])
        .await;
    assert_eq!(audit, 0);
}

// ---- POST /wallets ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_wallet_answers_201_with_the_wallet() {
    let app = spawn_app().await;
    let (user, _) = known_user(&app).await;
    let res = app
        .create_wallet_as(
            &app.admin_token,
            json!({"user_id": user, "initial_balance": "125.50", "currency": "EUR"}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    let wallet = Uuid::parse_str(body["wallet_id"].as_str().unwrap()).unwrap();
    assert_eq!(body["user_id"], user.to_string());
    assert_eq!(body["balance"], "125.50");
    assert_eq!(body["currency"], "EUR");
    assert_eq!(body["status"], "ACTIVE");
    assert!(body["created_at"].is_string() && body["updated_at"].is_string());
    assert_eq!(app.balance(wallet).await, "125.50");
    let created = app
        .count(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'WalletCreated' AND aggregate_id = $1 \
             AND payload->'data'->>'initial_balance' = '125.50'",
            &[&wallet],
        )
        .await;
    assert_eq!(created, 1, "a WalletCreated event is in the outbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_without_balance_or_currency_starts_at_zero_in_usd() {
    let app = spawn_app().await;
    let (user, _) = known_user(&app).await;
    let (status, body) = json_of(app.create_wallet_as(&app.admin_token, json!({"user_id": user})).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["balance"], "0.00");
    assert_eq!(body["currency"], "USD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_wallet_for_the_same_user_is_refused_with_409_wallet_exists() {
    let app = spawn_app().await;
    let (user, _, wallet) = app.user_with_wallet("10.00", "USD").await;
    let res = app
        .create_wallet_as(
            &app.admin_token,
            json!({"user_id": user, "initial_balance": "99.00", "currency": "GBP"}),
        )
        .await;
    expect_problem(res, 409, "WALLET_EXISTS").await;
    assert_eq!(
        app.count("SELECT count(*) FROM wallets WHERE user_id = $1", &[&user])
            .await,
        1
    );
    assert_eq!(app.balance(wallet).await, "10.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_for_an_unknown_user_is_refused_with_404() {
    let app = spawn_app().await;
    let res = app
        .create_wallet_as(&app.admin_token, json!({"user_id": Uuid::new_v4(), "currency": "USD"}))
        .await;
    expect_problem(res, 404, "NOT_FOUND").await;
    assert_eq!(app.count("SELECT count(*) FROM wallets", &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_may_not_create_their_own_wallet_403() {
    let app = spawn_app().await;
    let (user, company) = known_user(&app).await;
    let t = token(Role::User, user, company);
    let res = app
        .create_wallet_as(&t, json!({"user_id": user, "initial_balance": "1000000.00"}))
        .await;
    expect_problem(res, 403, "FORBIDDEN").await;
    // The service caller moves money but does not administer accounts.
    let res = app.create_wallet_as(&app.service_token, json!({"user_id": user})).await;
    expect_problem(res, 403, "FORBIDDEN").await;
    assert_eq!(app.count("SELECT count(*) FROM wallets", &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_of_another_company_creating_a_wallet_gets_404() {
    let app = spawn_app().await;
    let (user, _) = known_user(&app).await;
    let t = token(Role::Manager, Uuid::new_v4(), Uuid::new_v4());
    let res = app.create_wallet_as(&t, json!({"user_id": user})).await;
    expect_problem(res, 404, "NOT_FOUND").await;
    assert_eq!(app.count("SELECT count(*) FROM wallets", &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_of_the_same_company_creates_a_wallet_201() {
    let app = spawn_app().await;
    let (user, company) = known_user(&app).await;
    let t = token(Role::Manager, Uuid::new_v4(), company);
    let res = app
        .create_wallet_as(&t, json!({"user_id": user, "initial_balance": 20, "currency": "INR"}))
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["balance"], "20.00");
    assert_eq!(body["currency"], "INR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_wallet_bodies_are_refused_with_400_naming_the_field() {
    let app = spawn_app().await;
    let (user, _) = known_user(&app).await;
    let cases = [
        (json!({"user_id": user, "currency": "JPY"}), "currency"),
        (json!({"user_id": user, "currency": "usd"}), "currency"),
        (json!({"user_id": user, "initial_balance": "10.001"}), "initial_balance"),
        (json!({"user_id": user, "initial_balance": 10.001}), "initial_balance"),
        (json!({"user_id": user, "initial_balance": "-5.00"}), "initial_balance"),
        (
            json!({"user_id": user, "initial_balance": "10000000000000.00"}),
            "initial_balance",
        ),
        (json!({"user_id": user, "initial_balance": "abc"}), "initial_balance"),
        (json!({"user_id": user, "balance": "100.00"}), "balance"),
        (json!({"user_id": user, "status": "ACTIVE"}), "status"),
        (json!({"user_id": "not-a-uuid"}), "user_id"),
        (json!({"currency": "USD"}), "user_id"),
    ];
    for (body, field) in cases {
        let res = app.create_wallet_as(&app.admin_token, body.clone()).await;
        let problem = expect_problem(res, 400, "VALIDATION_FAILED").await;
        assert_eq!(problem["errors"][0]["field"], field, "{body} → {problem}");
    }
    assert_eq!(app.count("SELECT count(*) FROM wallets", &[]).await, 0);
}

// ---- GET /wallets/{userId} ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reads_their_own_wallet_200() {
    let app = spawn_app().await;
    let (user, company, wallet) = app.user_with_wallet("42.10", "GBP").await;
    let (status, body) = json_of(get_wallet_as(&app, &token(Role::User, user, company), user).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["wallet_id"], wallet.to_string());
    assert_eq!(body["user_id"], user.to_string());
    assert_eq!(body["balance"], "42.10");
    assert_eq!(body["currency"], "GBP");
    assert_eq!(body["status"], "ACTIVE");
    for field in ["created_at", "updated_at"] {
        assert!(body[field].is_string(), "{field}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reading_another_users_wallet_gets_404_like_a_missing_one() {
    let app = spawn_app().await;
    let (owner, company, _) = app.user_with_wallet("5.00", "USD").await;
    // Same company, different user: still not theirs.
    let nosy = token(Role::User, Uuid::new_v4(), company);
    let hidden = expect_problem(get_wallet_as(&app, &nosy, owner).await, 404, "NOT_FOUND").await;
    let missing = expect_problem(get_wallet_as(&app, &nosy, Uuid::new_v4()).await, 404, "NOT_FOUND").await;
    assert_eq!(hidden, missing, "a hidden wallet answers exactly like a missing one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_reads_wallets_of_their_company_and_gets_404_for_others() {
    let app = spawn_app().await;
    let (user, company, wallet) = app.user_with_wallet("7.00", "USD").await;
    let same = token(Role::Manager, Uuid::new_v4(), company);
    let (status, body) = json_of(get_wallet_as(&app, &same, user).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["wallet_id"], wallet.to_string());
    let other = token(Role::Manager, Uuid::new_v4(), Uuid::new_v4());
    expect_problem(get_wallet_as(&app, &other, user).await, 404, "NOT_FOUND").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_wallet_without_a_token_is_401_with_www_authenticate() {
    let app = spawn_app().await;
    let (user, _, _) = app.user_with_wallet("1.00", "USD").await;
    let res = app.get(&format!("/wallets/{user}")).await;
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    expect_problem(res, 401, "UNAUTHENTICATED").await;
    assert!(
        challenge.is_some_and(|c| c.starts_with("Bearer")),
        "WWW-Authenticate: Bearer …"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_a_wallet_gets_404() {
    let app = spawn_app().await;
    let (user, _) = known_user(&app).await;
    expect_problem(get_wallet_as(&app, &app.admin_token, user).await, 404, "NOT_FOUND").await;
}

// ---- PUT /wallets/{walletId}/status ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_wallet_refuses_debits_and_credits_with_409_until_it_is_active_again() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("50.00", "USD").await;
    let res = set_status_as(
        &app,
        &app.admin_token,
        wallet,
        json!({"status": "FROZEN", "reason": "fraud check"}),
    )
    .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "FROZEN");
    assert_eq!(body["wallet_id"], wallet.to_string());
    assert_eq!(body["balance"], "50.00");

    let res = app.post_txn(wallet, json!({"amount": "1.00", "type": "DEBIT"})).await;
    expect_problem(res, 409, "WALLET_NOT_ACTIVE").await;
    let res = app.post_txn(wallet, json!({"amount": "1.00", "type": "CREDIT"})).await;
    expect_problem(res, 409, "WALLET_NOT_ACTIVE").await;
    assert_eq!(app.balance(wallet).await, "50.00");
    // Its opening balance only.
    assert_eq!(app.count("SELECT count(*) FROM transactions", &[]).await, 1);
    let status_row = app
        .count(
            "SELECT count(*) FROM wallets WHERE wallet_id = $1 AND status = 'FROZEN'",
            &[&wallet],
        )
        .await;
    assert_eq!(status_row, 1);
    let audited = app
        .count(
            "SELECT count(*) FROM audit_log WHERE action = 'wallet.set_status' AND target_id = $1 \
             AND detail->>'reason' = 'fraud check'",
            &[&wallet.to_string()],
        )
        .await;
    assert_eq!(audited, 1);

    let res = set_status_as(&app, &app.admin_token, wallet, json!({"status": "ACTIVE"})).await;
    let (status, body) = json_of(res).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ACTIVE")), "{body}");
    let res = app.post_txn(wallet, json!({"amount": "1.00", "type": "DEBIT"})).await;
    assert_eq!(res.status(), 201);
    assert_eq!(app.balance(wallet).await, "49.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_wallet_can_never_change_status_again() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("0.00", "USD").await;
    let res = set_status_as(
        &app,
        &app.admin_token,
        wallet,
        json!({"status": "CLOSED", "reason": "account ended"}),
    )
    .await;
    let (status, body) = json_of(res).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("CLOSED")), "{body}");
    for next in ["ACTIVE", "FROZEN", "CLOSED"] {
        let res = set_status_as(&app, &app.admin_token, wallet, json!({"status": next})).await;
        expect_problem(res, 409, "WALLET_NOT_ACTIVE").await;
    }
    let res = app.post_txn(wallet, json!({"amount": "1.00", "type": "CREDIT"})).await;
    expect_problem(res, 409, "WALLET_NOT_ACTIVE").await;
    let closed = app
        .count(
            "SELECT count(*) FROM wallets WHERE wallet_id = $1 AND status = 'CLOSED'",
            &[&wallet],
        )
        .await;
    assert_eq!(closed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_may_not_change_their_wallet_status_403() {
    let app = spawn_app().await;
    let (user, company, wallet) = app.user_with_wallet("3.00", "USD").await;
    let t = token(Role::User, user, company);
    let res = set_status_as(&app, &t, wallet, json!({"status": "FROZEN"})).await;
    expect_problem(res, 403, "FORBIDDEN").await;
    // Another user of the company does not even see it.
    let t = token(Role::User, Uuid::new_v4(), company);
    let res = set_status_as(&app, &t, wallet, json!({"status": "FROZEN"})).await;
    expect_problem(res, 404, "NOT_FOUND").await;
    assert_eq!(
        app.count("SELECT count(*) FROM wallets WHERE status = 'ACTIVE'", &[])
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_changes_status_in_their_company_and_gets_404_elsewhere() {
    let app = spawn_app().await;
    let (_, company, wallet) = app.user_with_wallet("3.00", "USD").await;
    let other = token(Role::Manager, Uuid::new_v4(), Uuid::new_v4());
    let res = set_status_as(&app, &other, wallet, json!({"status": "FROZEN"})).await;
    expect_problem(res, 404, "NOT_FOUND").await;
    assert_eq!(
        app.count("SELECT count(*) FROM wallets WHERE status = 'ACTIVE'", &[])
            .await,
        1
    );
    let same = token(Role::Manager, Uuid::new_v4(), company);
    let res = set_status_as(&app, &same, wallet, json!({"status": "FROZEN"})).await;
    assert_eq!(res.status(), 200);
    let res = set_status_as(&app, &app.admin_token, Uuid::new_v4(), json!({"status": "FROZEN"})).await;
    expect_problem(res, 404, "NOT_FOUND").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_status_body_is_refused_with_400() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("3.00", "USD").await;
    for body in [
        json!({"status": "DELETED"}),
        json!({"status": "frozen"}),
        json!({}),
        json!({"status": "FROZEN", "balance": "0.00"}),
        json!({"status": "FROZEN", "reason": "   "}),
        json!({"status": "FROZEN", "reason": "x".repeat(501)}),
    ] {
        let res = set_status_as(&app, &app.admin_token, wallet, body.clone()).await;
        let problem = expect_problem(res, 400, "VALIDATION_FAILED").await;
        assert!(problem["errors"][0]["field"].is_string(), "{body} → {problem}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM wallets WHERE status = 'ACTIVE'", &[])
            .await,
        1
    );
}
