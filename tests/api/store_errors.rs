//! When the database fails, the client learns *that* it failed (503 `UNAVAILABLE` with `Retry-After` when a
//! retry may help, 500 `INTERNAL` when it will not), never *how*: no database, library or operating
//! system text in the body. And `/ready` reports whether this binary's migrations are applied.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;

use serde_json::{Value, json};
use uuid::Uuid;
use wallet_service::auth::Role;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::fixtures::{budget_body, token};
use crate::helpers::replies::expect_problem;

/// Words of Postgres', tokio-postgres', deadpool's and the OS's messages that no 5xx body may hold.
const LEAKY: [&str; 11] = [
    "postgres",
    "connection",
    "error connecting",
    "os error",
    "sqlstate",
    "deadpool",
    "tokio",
    "db error",
    "relation",
    "constraint",
    "accepting",
];

/// Asserts a 5xx problem whose text names no internals; returns it.
async fn opaque(res: reqwest::Response, status: u16, code: &str) -> Value {
    let retry_after = res.headers().get("retry-after").is_some();
    let problem = expect_problem(res, status, code).await;
    let text = problem.to_string().to_lowercase();
    for word in LEAKY {
        assert!(!text.contains(word), "{word:?} leaked into {problem}");
    }
    assert_eq!(retry_after, status == 503, "Retry-After on 503 only: {problem}");
    problem
}

async fn send_json(app: &TestApp, method: reqwest::Method, path: &str, token: &str, body: Value) -> reqwest::Response {
    app.http
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("idempotency-key", Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// An app with a user's wallet of 100.00 USD and a budget on it; returns (app, user, company, wallet, budget).
async fn app_with_a_budget() -> (TestApp, Uuid, Uuid, Uuid, String) {
    let app = spawn_app().await;
    let (user, company, wallet) = app.user_with_wallet("100.00", "USD").await;
    let manager = token(Role::Manager, Uuid::new_v4(), company);
    let res = send_json(
        &app,
        reqwest::Method::POST,
        "/budgets",
        &manager,
        budget_body(wallet, "50.00"),
    )
    .await;
    let budget: Value = res.json().await.unwrap();
    let budget_id = budget["budget_id"].as_str().expect("budget created").to_string();
    (app, user, company, wallet, budget_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_while_the_database_refuses_connections_names_no_database_library_or_os_message() {
    let (app, user, company, wallet, budget_id) = app_with_a_budget().await;

    app.db.set_connections(false).await;
    let checks = async {
        // Each of these reaches Postgres through another path: the user → wallet look-up, the user upsert,
        // the user read of wallet creation, the Idempotency-Key claim and the commit of a posting, the
        // history read, the budget look-up, readiness.
        let stranger = Uuid::new_v4();
        opaque(
            app.get_as(&app.admin_token, &format!("/wallets/{stranger}")).await,
            503,
            "UNAVAILABLE",
        )
        .await;
        let body = json!({"email": "x@example.com", "company_id": company, "role": "user"});
        let res = send_json(
            &app,
            reqwest::Method::PUT,
            &format!("/users/{stranger}"),
            &app.admin_token,
            body,
        )
        .await;
        opaque(res, 503, "UNAVAILABLE").await;
        let res = send_json(
            &app,
            reqwest::Method::POST,
            "/wallets",
            &app.admin_token,
            json!({"user_id": user}),
        )
        .await;
        opaque(res, 503, "UNAVAILABLE").await;
        let path = format!("/wallets/{wallet}/transactions");
        let debit = json!({"amount": "1.00", "type": "DEBIT"});
        let res = send_json(&app, reqwest::Method::POST, &path, &app.service_token, debit.clone()).await;
        opaque(res, 503, "UNAVAILABLE").await;
        let res = app.post_txn(wallet, debit).await; // without a key: the commit itself fails
        opaque(res, 503, "UNAVAILABLE").await;
        opaque(app.get_as(&app.admin_token, &path).await, 503, "UNAVAILABLE").await;
        let path = format!("/budgets/{budget_id}/history");
        opaque(app.get_as(&app.admin_token, &path).await, 503, "UNAVAILABLE").await;
        let res = app.get("/ready").await;
        let ready = opaque(res, 503, "UNAVAILABLE").await;
        assert!(ready["detail"].as_str().unwrap().contains("database"), "{ready}");
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), AssertUnwindSafe(checks).catch_unwind()).await;
    // Restore before asserting, so that the database can be dropped whatever happened.
    app.db.set_connections(true).await;
    outcome.expect("replies came in time").expect("every reply was opaque");
    assert_eq!(app.balance(wallet).await, "100.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_from_a_statement_postgres_refuses_names_no_database_message() {
    let (app, _, company, _, budget_id) = app_with_a_budget().await;
    let c = app.db.client().await;
    // A statement Postgres cannot run (a missing relation) and one it refuses for its data (a
    // constraint): neither gets better by retrying, so both are 500, not 503.
    c.batch_execute(
        "ALTER TABLE budget_history RENAME TO budget_history_away; \
         ALTER TABLE users ADD CONSTRAINT no_managers_today CHECK (role <> 'manager') NOT VALID",
    )
    .await
    .unwrap();
    let path = format!("/budgets/{budget_id}/history");
    opaque(app.get_as(&app.admin_token, &path).await, 500, "INTERNAL").await;
    let body = json!({"email": "m@example.com", "company_id": company, "role": "manager"});
    let res = send_json(
        &app,
        reqwest::Method::PUT,
        &format!("/users/{}", Uuid::new_v4()),
        &app.admin_token,
        body,
    )
    .await;
    opaque(res, 500, "INTERNAL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_naming_migrations_while_the_newest_is_not_recorded_and_200_once_it_is() {
    let app = spawn_app().await;
    let c = app.db.client().await;
    let newest = wallet_service::store::db::newest_migration();
    // The history as an older binary would have left it: the newest migration missing.
    let removed = c
        .query(
            "DELETE FROM refinery_schema_history WHERE version::bigint = $1 RETURNING version, name, applied_on, checksum",
            &[&newest],
        )
        .await
        .unwrap();
    assert_eq!(removed.len(), 1, "the newest migration V{newest} was applied at start");
    for _ in 0..2 {
        let res = app.get("/ready").await;
        let problem = expect_problem(res, 503, "UNAVAILABLE").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("migrations"), "{problem}");
        assert!(detail.contains(&format!("V{newest}")), "{problem}");
    }
    // Recorded again: ready, and the positive answer is kept.
    c.execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES ($1, $2, $3, $4)",
        &[
            &removed[0].get::<_, i32>(0),
            &removed[0].get::<_, Option<String>>(1),
            &removed[0].get::<_, Option<String>>(2),
            &removed[0].get::<_, Option<String>>(3),
        ],
    )
    .await
    .unwrap();
    let res = app.get("/ready").await;
    assert_eq!(res.status(), 200);
    c.batch_execute("DROP TABLE refinery_schema_history").await.unwrap();
    let res = app.get("/ready").await;
    assert_eq!(res.status(), 200, "a migrated database stays migrated");

    // A database without any history is not ready.
    let second = spawn_app().await;
    let c2 = second.db.client().await;
    c2.batch_execute("DROP TABLE refinery_schema_history").await.unwrap();
    let res = second.get("/ready").await;
    let problem = expect_problem(res, 503, "UNAVAILABLE").await;
    assert!(problem["detail"].as_str().unwrap().contains("migrations"), "{problem}");
}
