//! Reports: `GET /wallets/{walletId}/balance?at=`, JSON and CSV, scoped like wallet reads.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;
use wallet_service::auth::Role;

use crate::helpers::app::spawn_app;
use crate::helpers::fixtures::token;
use crate::helpers::replies::{expect_problem, json_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balance_at_an_instant_is_the_ledgers_balance_then_in_json_and_csv() {
    let app = spawn_app().await;
    let (user, company, wallet) = app.user_with_wallet("100.00", "USD").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after_opening = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        app.post_txn(wallet, json!({"amount": "30.00", "type": "DEBIT"}))
            .await
            .status(),
        201
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after_debit = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        app.post_txn(wallet, json!({"amount": "5.50", "type": "CREDIT"}))
            .await
            .status(),
        201
    );
    // A hold moves no money: the ledger's balance stays.
    let res = app
        .http
        .post(app.url(&format!("/wallets/{wallet}/holds")))
        .bearer_auth(&app.service_token)
        .json(&json!({"amount": "10.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    let at = |t: chrono::DateTime<chrono::Utc>| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .replace('+', "%2B")
    };
    let own = token(Role::User, user, company);
    let (status, b) = json_of(
        app.get_as(&own, &format!("/wallets/{wallet}/balance?at={}", at(after_opening)))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["balance"], "100.00");
    assert_eq!(b["wallet_id"], wallet.to_string());
    let (_, b) = json_of(
        app.get_as(&own, &format!("/wallets/{wallet}/balance?at={}", at(after_debit)))
            .await,
    )
    .await;
    assert_eq!(b["balance"], "70.00");
    let (_, now) = json_of(app.get_as(&own, &format!("/wallets/{wallet}/balance")).await).await;
    assert_eq!(now["balance"], "75.50");

    let res = app
        .http
        .get(app.url(&format!("/wallets/{wallet}/balance?at={}", at(after_debit))))
        .bearer_auth(&own)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let body = res.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "wallet_id,at,balance");
    assert!(
        lines[1].starts_with(&format!("{wallet},")) && lines[1].ends_with(",70.00"),
        "{body}"
    );
    assert_eq!(lines.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_before_the_wallet_existed_in_the_future_or_of_a_wallet_one_may_not_see_is_refused() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("10.00", "USD").await;
    let admin = &app.admin_token;
    expect_problem(
        app.get_as(admin, &format!("/wallets/{wallet}/balance?at=2001-01-01T00:00:00Z"))
            .await,
        400,
        "VALIDATION_FAILED",
    )
    .await;
    expect_problem(
        app.get_as(admin, &format!("/wallets/{wallet}/balance?at=2999-01-01T00:00:00Z"))
            .await,
        400,
        "VALIDATION_FAILED",
    )
    .await;
    expect_problem(
        app.get_as(admin, &format!("/wallets/{wallet}/balance?at=yesterday"))
            .await,
        400,
        "VALIDATION_FAILED",
    )
    .await;
    expect_problem(
        app.get_as(admin, &format!("/wallets/{wallet}/balance?when=now")).await,
        400,
        "VALIDATION_FAILED",
    )
    .await;
    let stranger = token(Role::User, Uuid::new_v4(), Uuid::new_v4());
    expect_problem(
        app.get_as(&stranger, &format!("/wallets/{wallet}/balance")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    expect_problem(
        app.get_as(admin, &format!("/wallets/{}/balance", Uuid::new_v4())).await,
        404,
        "NOT_FOUND",
    )
    .await;
}
