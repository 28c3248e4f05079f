//! Suspicious-activity monitoring: each rule fires as stated, once per rule per window, with an audit row,
//! a `SuspiciousActivity` event and a metric; money is blocked only with `SUSPICIOUS_FREEZE`.

use serde_json::{Value, json};
use uuid::Uuid;
use wallet_actors::monitor::MonitorLimits;
use wallet_service::auth::Role;

use crate::helpers::app::TestApp;
use crate::helpers::fixtures::token;
use crate::helpers::replies::expect_problem;

async fn app_with(limits: MonitorLimits) -> TestApp {
    TestApp::builder().configure(move |c| c.monitor = limits).spawn().await
}

async fn debit_as(app: &TestApp, token: &str, wallet: Uuid, amount: &str) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/wallets/{wallet}/transactions")))
        .bearer_auth(token)
        .json(&json!({"amount": amount, "type": "DEBIT"}))
        .send()
        .await
        .expect("request")
}

/// `(rule, data)` of the `SuspiciousActivity` events in the outbox, oldest first.
async fn hits(app: &TestApp) -> Vec<(String, Value)> {
    let c = app.db.client().await;
    c.query(
        "SELECT payload->'data'->>'rule', (payload->'data')::text FROM outbox_events WHERE event_type = 'SuspiciousActivity' ORDER BY seq",
        &[],
    )
    .await
    .expect("outbox")
    .iter()
    .map(|r| (r.get(0), serde_json::from_str(r.get::<_, &str>(1)).expect("json")))
    .collect()
}

async fn audited(app: &TestApp, rule: &str) -> i64 {
    app.count(
        "SELECT count(*) FROM audit_log WHERE action = 'wallet.suspicious' AND outcome = $1",
        &[&rule],
    )
    .await
}

fn only(rule: impl FnOnce(&mut MonitorLimits)) -> MonitorLimits {
    let mut l = MonitorLimits {
        debits_per_minute: 10_000,
        refused_run: 10_000,
        amount_factor: 10_000,
        distinct_callers: 10_000,
        ..MonitorLimits::default()
    };
    rule(&mut l);
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_debits_in_a_minute_than_the_limit_are_reported_once_per_window_and_still_applied() {
    let app = app_with(only(|l| l.debits_per_minute = 3)).await;
    let (user, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    for _ in 0..6 {
        assert_eq!(debit_as(&app, &app.service_token, wallet, "1.00").await.status(), 201);
    }
    let found = hits(&app).await;
    assert_eq!(found.len(), 1, "once per window: {found:?}");
    assert_eq!(found[0].0, "VELOCITY");
    assert_eq!(found[0].1["wallet_id"], wallet.to_string());
    assert_eq!(found[0].1["user_id"], user.to_string());
    assert_eq!(found[0].1["detail"]["limit"], 3);
    assert_eq!(audited(&app, "VELOCITY").await, 1);
    assert_eq!(
        app.balance(wallet).await,
        "94.00",
        "monitoring alone never blocks money"
    );
    assert!(
        app.render_metrics()
            .lines()
            .any(|l| l.starts_with("wallet_suspicious_activity_total") && l.contains("VELOCITY")),
        "the hit is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_refused_debits_is_reported() {
    let app = app_with(only(|l| l.refused_run = 3)).await;
    let (_, _, wallet) = app.user_with_wallet("1.00", "USD").await;
    for _ in 0..2 {
        assert_eq!(debit_as(&app, &app.service_token, wallet, "5.00").await.status(), 422);
    }
    assert!(hits(&app).await.is_empty(), "two refusals are not a run of three");
    // An applied debit ends the run.
    assert_eq!(debit_as(&app, &app.service_token, wallet, "0.50").await.status(), 201);
    for _ in 0..3 {
        assert_eq!(debit_as(&app, &app.service_token, wallet, "5.00").await.status(), 422);
    }
    let found = hits(&app).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "REFUSED_RUN");
    assert_eq!(found[0].1["detail"]["last"], "INSUFFICIENT_FUNDS");
    assert_eq!(audited(&app, "REFUSED_RUN").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_far_above_the_wallets_typical_amount_is_reported() {
    let app = app_with(only(|l| l.amount_factor = 10)).await;
    let (_, _, wallet) = app.user_with_wallet("1000.00", "USD").await;
    for _ in 0..wallet_actors::monitor::MIN_SAMPLES {
        assert_eq!(debit_as(&app, &app.service_token, wallet, "2.00").await.status(), 201);
    }
    assert_eq!(debit_as(&app, &app.service_token, wallet, "20.00").await.status(), 201);
    assert!(hits(&app).await.is_empty(), "ten times is not more than ten times");
    assert_eq!(debit_as(&app, &app.service_token, wallet, "250.00").await.status(), 201);
    let found = hits(&app).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "OUTLIER");
    assert_eq!(found[0].1["detail"]["amount"], "250.00");
    assert_eq!(found[0].1["detail"]["typical"], "2.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_distinct_callers_on_one_wallet_are_reported() {
    let app = app_with(only(|l| l.distinct_callers = 2)).await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let callers: Vec<String> = (0..3)
        .map(|_| token(Role::Service, Uuid::new_v4(), Uuid::new_v4()))
        .collect();
    for t in &callers[..2] {
        assert_eq!(debit_as(&app, t, wallet, "1.00").await.status(), 201);
    }
    // The same two again: still two callers.
    assert_eq!(debit_as(&app, &callers[0], wallet, "1.00").await.status(), 201);
    assert!(hits(&app).await.is_empty());
    assert_eq!(debit_as(&app, &callers[2], wallet, "1.00").await.status(), 201);
    let found = hits(&app).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "MANY_CALLERS");
    assert_eq!(found[0].1["detail"]["distinct_callers"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_suspicious_freeze_a_hit_freezes_the_wallet_in_the_same_commit() {
    let app = app_with(only(|l| {
        l.debits_per_minute = 2;
        l.freeze = true;
    }))
    .await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    for _ in 0..2 {
        assert_eq!(debit_as(&app, &app.service_token, wallet, "1.00").await.status(), 201);
    }
    // The third is the one too many: the wallet is frozen with the hit, and the debit is judged frozen.
    expect_problem(
        debit_as(&app, &app.service_token, wallet, "1.00").await,
        409,
        "WALLET_NOT_ACTIVE",
    )
    .await;
    let c = app.db.client().await;
    let status: String = c
        .query_one("SELECT status FROM wallets WHERE wallet_id = $1", &[&wallet])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "FROZEN");
    assert_eq!(app.balance(wallet).await, "98.00");
    let reason: String = c
        .query_one(
            "SELECT detail->>'reason' FROM audit_log WHERE action = 'wallet.set_status' AND target_id = $1",
            &[&wallet.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason, "suspicious activity: VELOCITY");
    assert_eq!(audited(&app, "VELOCITY").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_monitoring_off_no_rule_fires() {
    let app = app_with(MonitorLimits {
        enabled: false,
        debits_per_minute: 1,
        refused_run: 1,
        ..MonitorLimits::default()
    })
    .await;
    let (_, _, wallet) = app.user_with_wallet("1.00", "USD").await;
    assert_eq!(debit_as(&app, &app.service_token, wallet, "0.50").await.status(), 201);
    assert_eq!(debit_as(&app, &app.service_token, wallet, "0.40").await.status(), 201);
    assert_eq!(debit_as(&app, &app.service_token, wallet, "5.00").await.status(), 422);
    assert!(hits(&app).await.is_empty());
}
