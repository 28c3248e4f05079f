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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_report_lists_a_companys_budgets_by_utilisation_with_their_holds_in_json_and_csv() {
    let app = spawn_app().await;
    let company = Uuid::new_v4();
    let manager = Uuid::new_v4();
    assert_eq!(app.put_user(manager, company, "manager").await.status(), 200);
    let mut wallets = Vec::new();
    for _ in 0..2 {
        let user = Uuid::new_v4();
        assert_eq!(app.put_user(user, company, "user").await.status(), 200);
        let res = app
            .create_wallet_as(
                &app.admin_token,
                json!({"user_id": user, "initial_balance": "1000.00", "currency": "USD"}),
            )
            .await;
        let (status, w) = json_of(res).await;
        assert_eq!(status, 201, "{w}");
        wallets.push((user, Uuid::parse_str(w["wallet_id"].as_str().unwrap()).unwrap()));
    }
    let mut budgets = Vec::new();
    for (_, wallet) in &wallets {
        let res = app
            .http
            .post(app.url("/budgets"))
            .bearer_auth(&app.admin_token)
            .json(&crate::helpers::fixtures::budget_body(*wallet, "200.00"))
            .send()
            .await
            .unwrap();
        let (status, b) = json_of(res).await;
        assert_eq!(status, 201, "{b}");
        budgets.push(b["budget_id"].as_str().unwrap().to_string());
    }
    // The first wallet spends 50 (25%), the second holds 150 (75%).
    assert_eq!(
        app.post_txn(wallets[0].1, json!({"amount": "50.00", "type": "DEBIT"}))
            .await
            .status(),
        201
    );
    let res = app
        .http
        .post(app.url(&format!("/wallets/{}/holds", wallets[1].1)))
        .bearer_auth(&app.service_token)
        .json(&json!({"amount": "150.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // A budget of another company is not in the report.
    let (_, _, stranger_wallet) = app.user_with_wallet("100.00", "USD").await;
    let res = app
        .http
        .post(app.url("/budgets"))
        .bearer_auth(&app.admin_token)
        .json(&crate::helpers::fixtures::budget_body(stranger_wallet, "10.00"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    let as_manager = token(Role::Manager, manager, company);
    let (status, report) = json_of(app.get_as(&as_manager, "/reports/budgets").await).await;
    assert_eq!(status, 200, "{report}");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    assert_eq!(rows[0]["budget_id"], budgets[1].as_str(), "highest utilisation first");
    assert_eq!(rows[0]["utilisation_percent"], "75.00");
    assert_eq!(rows[0]["held_amount"], "150.00");
    assert_eq!(rows[0]["used_amount"], "150.00");
    assert_eq!(rows[0]["user_id"], wallets[1].0.to_string());
    assert_eq!(rows[1]["utilisation_percent"], "25.00");
    assert_eq!(rows[1]["held_amount"], "0.00");

    let res = app
        .http
        .get(app.url("/reports/budgets"))
        .bearer_auth(&as_manager)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines[0],
        "budget_id,wallet_id,user_id,period_type,start_date,end_date,total_amount,used_amount,held_amount,utilisation_percent,status,currency"
    );
    assert_eq!(lines.len(), 3, "{body}");
    assert!(
        lines[1].starts_with(&budgets[1]) && lines[1].contains(",150.00,150.00,75.00,") && lines[1].ends_with(",USD"),
        "{body}"
    );

    // A user sees their own budgets only; a manager of another company, and an admin with no company, are refused.
    let user = token(Role::User, wallets[0].0, company);
    let (_, own) = json_of(app.get_as(&user, "/reports/budgets").await).await;
    assert_eq!(own["rows"].as_array().unwrap().len(), 1, "{own}");
    assert_eq!(own["rows"][0]["budget_id"], budgets[0].as_str());
    let other = token(Role::Manager, Uuid::new_v4(), Uuid::new_v4());
    expect_problem(
        app.get_as(&other, &format!("/reports/budgets?company_id={company}"))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    expect_problem(
        app.get_as(&app.admin_token, "/reports/budgets").await,
        400,
        "VALIDATION_FAILED",
    )
    .await;
    let (_, by_admin) = json_of(
        app.get_as(&app.admin_token, &format!("/reports/budgets?company_id={company}"))
            .await,
    )
    .await;
    assert_eq!(by_admin["rows"].as_array().unwrap().len(), 2);
    // As of a day outside every budget's period: none.
    let (_, none) = json_of(
        app.get_as(
            &app.admin_token,
            &format!("/reports/budgets?company_id={company}&as_of=2001-01-01"),
        )
        .await,
    )
    .await;
    assert_eq!(none["rows"].as_array().unwrap().len(), 0);
}
