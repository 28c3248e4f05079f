//! Budgets: endpoints, checks in the wallet actor, refunds, thresholds (real Postgres).
use chrono::{Datelike, Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;
use wallet_service::auth::Role;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::fixtures::token;

fn today() -> chrono::NaiveDate {
    Utc::now().date_naive()
}

/// The first day of this month: a MONTHLY budget starting on it always has a default end after it (one
/// starting *today* has none on the last day of a month, and is refused with 400 then).
fn month_start() -> chrono::NaiveDate {
    today().with_day(1).unwrap()
}

async fn create_budget(app: &TestApp, token: &str, wallet: Uuid, body: Value) -> reqwest::Response {
    let mut body = body;
    body["wallet_id"] = json!(wallet);
    app.http
        .post(app.url("/budgets"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A budget over the current month (or an explicit window around today).
async fn budget_around_today(app: &TestApp, wallet: Uuid, total: &str, period: &str) -> Value {
    let start = today() - Duration::days(1);
    let end = today() + Duration::days(1);
    let res = create_budget(
        app,
        &app.admin_token,
        wallet,
        json!({"total_amount": total, "period_type": period, "start_date": start, "end_date": end}),
    )
    .await;
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

async fn used(app: &TestApp, budget: &str) -> String {
    let c = app.db.client().await;
    let id = Uuid::parse_str(budget).unwrap();
    c.query_one("SELECT used_amount::text FROM budgets WHERE budget_id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_is_created_listed_changed_and_its_history_kept() {
    let app = spawn_app().await;
    let (user, company, wallet) = app.user_with_wallet("500.00", "USD").await;
    let manager = token(Role::Manager, Uuid::new_v4(), company);
    let start = month_start();
    let res = create_budget(
        &app,
        &manager,
        wallet,
        json!({"total_amount": "300.00", "period_type": "MONTHLY", "start_date": start}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["total_amount"], "300.00");
    assert_eq!(b["used_amount"], "0.00");
    assert_eq!(b["remaining_amount"], "300.00");
    let expected_end = wallet_actors::PeriodType::Monthly.end_of(start);
    assert_eq!(b["end_date"], json!(expected_end));
    let id = b["budget_id"].as_str().unwrap().to_string();

    let own = token(Role::User, user, company);
    let list: Value = app
        .get_as(&own, &format!("/budgets/{user}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    let res = app
        .http
        .put(app.url(&format!("/budgets/{id}")))
        .bearer_auth(&manager)
        .json(&json!({"total_amount": "400.00", "change_reason": "more travel"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["total_amount"], "400.00");

    let hist: Value = app
        .get_as(&own, &format!("/budgets/{id}/history"))
        .await
        .json()
        .await
        .unwrap();
    let rows = hist.as_array().unwrap();
    assert_eq!(rows.len(), 2, "creation and one change: {hist}");
    assert_eq!(rows[0]["old_amount"], "300.00");
    assert_eq!(rows[0]["new_amount"], "400.00");
    assert_eq!(rows[0]["change_reason"], "more travel");
    assert_eq!(rows[1]["old_amount"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_endpoints_refuse_the_wrong_callers_and_bad_input() {
    let app = spawn_app().await;
    let (user, company, wallet) = app.user_with_wallet("500.00", "USD").await;
    let own = token(Role::User, user, company);
    let stranger = token(Role::Manager, Uuid::new_v4(), Uuid::new_v4());
    let good = json!({"total_amount": "100.00", "period_type": "MONTHLY", "start_date": month_start()});
    assert_eq!(create_budget(&app, &own, wallet, good.clone()).await.status(), 403);
    assert_eq!(create_budget(&app, &stranger, wallet, good.clone()).await.status(), 404);
    let bad = [
        json!({"total_amount": "0", "period_type": "MONTHLY", "start_date": month_start()}),
        json!({"total_amount": "1.001", "period_type": "MONTHLY", "start_date": month_start()}),
        json!({"total_amount": "10", "period_type": "DAILY", "start_date": month_start()}),
        json!({"total_amount": "10", "period_type": "MONTHLY", "start_date": today(), "end_date": today()}),
        // The last day of a month leaves no default end after it (the schema wants end_date > start_date).
        json!({"total_amount": "10", "period_type": "MONTHLY", "start_date": "2026-01-31"}),
        json!({"total_amount": "10", "period_type": "MONTHLY", "start_date": month_start(), "used_amount": "5"}),
    ];
    for body in bad {
        let res = create_budget(&app, &app.admin_token, wallet, body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["code"], "VALIDATION_FAILED");
    }
    let b = budget_around_today(&app, wallet, "100.00", "MONTHLY").await;
    let id = b["budget_id"].as_str().unwrap();
    let put = |token: String, body: Value| {
        let app = &app;
        async move {
            app.http
                .put(app.url(&format!("/budgets/{id}")))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        put(own.clone(), json!({"total_amount": "5", "change_reason": "x"}))
            .await
            .status(),
        403
    );
    assert_eq!(
        put(stranger.clone(), json!({"total_amount": "5", "change_reason": "x"}))
            .await
            .status(),
        404
    );
    assert_eq!(
        put(app.admin_token.clone(), json!({"total_amount": "5"}))
            .await
            .status(),
        400
    );
    assert_eq!(
        put(
            app.admin_token.clone(),
            json!({"status": "EXPIRED", "change_reason": "x"})
        )
        .await
        .status(),
        400
    );
    let missing = app
        .http
        .put(app.url(&format!("/budgets/{}", Uuid::new_v4())))
        .bearer_auth(&app.admin_token)
        .json(&json!({"total_amount": "5", "change_reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // Total below used: 422, nothing changes.
    assert_eq!(
        app.post_txn(wallet, json!({"amount": "60.00", "type": "DEBIT"}))
            .await
            .status(),
        201
    );
    let res = put(
        app.admin_token.clone(),
        json!({"total_amount": "50.00", "change_reason": "cut"}),
    )
    .await;
    assert_eq!(res.status(), 422);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["code"], "BUDGET_EXCEEDED");
    assert_eq!(used(&app, id).await, "60.00");
    let other_user = app.get_as(&stranger, &format!("/budgets/{user}")).await;
    assert_eq!(other_user.status(), 404);
    let hist = app.get_as(&stranger, &format!("/budgets/{id}/history")).await;
    assert_eq!(hist.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_debits_fill_a_budget_with_room_for_exactly_forty() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("1000.00", "USD").await;
    let b = budget_around_today(&app, wallet, "40.00", "MONTHLY").await;
    let id = b["budget_id"].as_str().unwrap().to_string();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let http = app.http.clone();
        let url = app.url(&format!("/wallets/{wallet}/transactions"));
        let token = app.service_token.clone();
        tasks.push(tokio::spawn(async move {
            let res = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"amount": "1.00", "type": "DEBIT"}))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            (status, body["code"].as_str().map(str::to_string))
        }));
    }
    let mut ok = 0;
    let mut exceeded = 0;
    for t in tasks {
        match t.await.unwrap() {
            (201, _) => ok += 1,
            (422, Some(code)) if code == "BUDGET_EXCEEDED" => exceeded += 1,
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert_eq!((ok, exceeded), (40, 60));
    assert_eq!(used(&app, &id).await, "40.00");
    assert_eq!(app.balance(wallet).await, "960.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_monthly_and_a_yearly_budget_the_tighter_one_refuses() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("1000.00", "USD").await;
    let monthly = budget_around_today(&app, wallet, "100.00", "MONTHLY").await;
    let yearly = budget_around_today(&app, wallet, "150.00", "YEARLY").await;
    assert_eq!(
        app.post_txn(wallet, json!({"amount": "90.00", "type": "DEBIT"}))
            .await
            .status(),
        201
    );
    let res = app.post_txn(wallet, json!({"amount": "20.00", "type": "DEBIT"})).await;
    assert_eq!(res.status(), 422);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["code"], "BUDGET_EXCEEDED");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains(monthly["budget_id"].as_str().unwrap()),
        "{p}"
    );
    assert!(
        p["detail"].as_str().unwrap().contains("10.00"),
        "reports by how much: {p}"
    );
    assert_eq!(used(&app, monthly["budget_id"].as_str().unwrap()).await, "90.00");
    assert_eq!(used(&app, yearly["budget_id"].as_str().unwrap()).await, "90.00");
    assert_eq!(app.balance(wallet).await, "910.00");
    // The refusal changed nothing but the audit log.
    let c = app.db.client().await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM audit_log WHERE outcome = 'BUDGET_EXCEEDED'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_after_the_period_ended_restores_the_budget_it_was_charged_to_once() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("1000.00", "USD").await;
    let b = budget_around_today(&app, wallet, "500.00", "MONTHLY").await;
    let id = b["budget_id"].as_str().unwrap().to_string();
    let debit = json!({"amount": "120.00", "type": "DEBIT", "reference_id": "bk-1", "reference_type": "BOOKING"});
    assert_eq!(app.post_txn(wallet, debit).await.status(), 201);
    assert_eq!(used(&app, &id).await, "120.00");
    // The period ends and the sweep expires it.
    let c = app.db.client().await;
    let budget_id = Uuid::parse_str(&id).unwrap();
    c.execute(
        "UPDATE budgets SET start_date = start_date - 40, end_date = $2 WHERE budget_id = $1",
        &[&budget_id, &(today() - Duration::days(1))],
    )
    .await
    .unwrap();
    wallet_service::service::budgets::sweep_expired(app.service())
        .await
        .unwrap();
    let status: String = c
        .query_one("SELECT status FROM budgets WHERE budget_id = $1", &[&budget_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "EXPIRED");
    let refund = json!({"amount": "50.00", "type": "CREDIT", "reference_id": "bk-1", "reference_type": "BOOKING"});
    assert_eq!(app.post_txn(wallet, refund.clone()).await.status(), 201);
    assert_eq!(used(&app, &id).await, "70.00");
    // The same refund again has no second effect.
    assert_eq!(app.post_txn(wallet, refund).await.status(), 409);
    assert_eq!(used(&app, &id).await, "70.00");
    assert_eq!(app.balance(wallet).await, "930.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_threshold_is_announced_once_in_the_outbox() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("1000.00", "USD").await;
    let b = budget_around_today(&app, wallet, "100.00", "MONTHLY").await;
    let id = Uuid::parse_str(b["budget_id"].as_str().unwrap()).unwrap();
    for amount in ["50.00", "35.00", "5.00", "10.00", "0.00"] {
        if amount != "0.00" {
            assert_eq!(
                app.post_txn(wallet, json!({"amount": amount, "type": "DEBIT"}))
                    .await
                    .status(),
                201
            );
        }
    }
    // 50 → 85 crosses 80 (by 5.00); 90; 100 crosses 100 (by 0.00). A refused debit adds one with the excess.
    let res = app.post_txn(wallet, json!({"amount": "7.00", "type": "DEBIT"})).await;
    assert_eq!(res.status(), 422);
    let c = app.db.client().await;
    let rows = c
        .query(
            "SELECT payload FROM outbox_events WHERE event_type = 'BudgetExceeded' AND payload->'data'->>'budget_id' = $1 ORDER BY seq",
            &[&id.to_string()],
        )
        .await
        .unwrap();
    let events: Vec<Value> = rows.iter().map(|r| r.get::<_, Value>(0)).collect();
    let summary: Vec<(i64, String)> = events
        .iter()
        .map(|e| {
            (
                e["data"]["threshold_percentage"].as_i64().unwrap(),
                e["data"]["exceeded_amount"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (80, "5.00".to_string()),
            (100, "0.00".to_string()),
            (100, "7.00".to_string())
        ]
    );
    assert_eq!(events[0]["event_type"], "BudgetExceeded");
    assert!(events[0]["data"]["user_id"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_budget_stops_limiting_and_the_actor_sees_changes_at_once() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("1000.00", "USD").await;
    let b = budget_around_today(&app, wallet, "10.00", "WEEKLY").await;
    let id = b["budget_id"].as_str().unwrap();
    assert_eq!(
        app.post_txn(wallet, json!({"amount": "20.00", "type": "DEBIT"}))
            .await
            .status(),
        422
    );
    let res = app
        .http
        .put(app.url(&format!("/budgets/{id}")))
        .bearer_auth(&app.admin_token)
        .json(&json!({"status": "SUSPENDED", "change_reason": "trip approved"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.post_txn(wallet, json!({"amount": "20.00", "type": "DEBIT"}))
            .await
            .status(),
        201
    );
    let res = app
        .http
        .put(app.url(&format!("/budgets/{id}")))
        .bearer_auth(&app.admin_token)
        .json(&json!({"status": "ACTIVE", "total_amount": "25.00", "change_reason": "back to normal"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Nothing was charged while suspended, so 25.00 of room remains.
    assert_eq!(
        app.post_txn(wallet, json!({"amount": "26.00", "type": "DEBIT"}))
            .await
            .status(),
        422
    );
    assert_eq!(
        app.post_txn(wallet, json!({"amount": "25.00", "type": "DEBIT"}))
            .await
            .status(),
        201
    );
}
