//! Reports from the spend aggregates: `GET /reports/spend` (every grouping, JSON and CSV, scoped like wallet
//! reads, refused rather than wrong), `GET /reports/transactions`, `GET /reports/wallets`, and the audit that
//! recomputes every aggregate from the ledger rows (`wallet-service audit reports`).

use std::collections::BTreeMap;

use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;
use wallet_service::auth::Role;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::fixtures::token;
use crate::helpers::replies::{expect_problem, json_of};
use crate::helpers::service::audit_cli;

mod fold;

/// A company with a manager and two users, A and B, each with a wallet of 1000.00 USD opened.
struct Company {
    id: Uuid,
    manager: Uuid,
    a: (Uuid, Uuid),
    b: (Uuid, Uuid),
}

async fn company(app: &TestApp) -> Company {
    let id = Uuid::new_v4();
    let manager = Uuid::new_v4();
    assert_eq!(app.put_user(manager, id, "manager").await.status(), 200);
    let mut wallets = vec![];
    for _ in 0..2 {
        let user = Uuid::new_v4();
        assert_eq!(app.put_user(user, id, "user").await.status(), 200);
        let (status, w) = json_of(
            app.create_wallet_as(
                &app.admin_token,
                json!({"user_id": user, "initial_balance": "1000.00", "currency": "USD"}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 201, "{w}");
        wallets.push((user, uuid(&w["wallet_id"])));
    }
    Company {
        id,
        manager,
        a: wallets[0],
        b: wallets[1],
    }
}

fn uuid(v: &Value) -> Uuid {
    Uuid::parse_str(v.as_str().expect("a uuid string")).expect("a uuid")
}

async fn posted(app: &TestApp, wallet: Uuid, body: Value) {
    let (status, reply) = json_of(app.post_txn(wallet, body).await).await;
    assert_eq!(status, 201, "{reply}");
}

async fn post_as(app: &TestApp, path: &str, body: Value) -> Value {
    let res = app
        .http
        .post(app.url(path))
        .bearer_auth(&app.service_token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let (status, reply) = json_of(res).await;
    assert!(status == 200 || status == 201, "{path}: {status} {reply}");
    reply
}

/// A: debit 100 (booking bk-1), debit 50, top-up 20, refund 30 of bk-1, transfer 40 to B.
/// B: a hold of 60 captured for 25; a credit of 5 with reference bk-late, then a debit of 5 taking it (the
/// earlier credit stays a credit: a refund refunds an earlier debit).
async fn postings(app: &TestApp, c: &Company) {
    let (a, b) = (c.a.1, c.b.1);
    posted(
        app,
        a,
        json!({"amount": "100.00", "type": "DEBIT", "reference_id": "bk-1"}),
    )
    .await;
    posted(app, a, json!({"amount": "50.00", "type": "DEBIT"})).await;
    posted(app, a, json!({"amount": "20.00", "type": "CREDIT"})).await;
    posted(
        app,
        a,
        json!({"amount": "30.00", "type": "CREDIT", "reference_id": "bk-1"}),
    )
    .await;
    post_as(
        app,
        "/transfers",
        json!({"from_wallet_id": a, "to_wallet_id": b, "amount": "40.00"}),
    )
    .await;
    let hold = post_as(app, &format!("/wallets/{b}/holds"), json!({"amount": "60.00"})).await;
    let hold = uuid(&hold["hold_id"]);
    post_as(
        app,
        &format!("/holds/{hold}/capture"),
        json!({"amount": "25.00", "final": true}),
    )
    .await;
    posted(
        app,
        b,
        json!({"amount": "5.00", "type": "CREDIT", "reference_id": "bk-late"}),
    )
    .await;
    // Txn ids carry milliseconds: the debit is later than the credit by more than the clock's grain.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    posted(
        app,
        b,
        json!({"amount": "5.00", "type": "DEBIT", "reference_id": "bk-late"}),
    )
    .await;
}

/// The report's rows by key: (debits, credits, refunds, net, count).
fn by_key(report: &Value) -> BTreeMap<String, (String, String, String, String, i64)> {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            assert_eq!(r["currency"], "USD", "{r}");
            let s = |k: &str| r[k].as_str().expect("a money string").to_string();
            (
                r["key"].as_str().expect("key").to_string(),
                (
                    s("debits"),
                    s("credits"),
                    s("refunds"),
                    s("net"),
                    r["count"].as_i64().expect("count"),
                ),
            )
        })
        .collect()
}

fn row(d: &str, c: &str, r: &str, n: &str, count: i64) -> (String, String, String, String, i64) {
    (d.into(), c.into(), r.into(), n.into(), count)
}

fn range() -> String {
    let today = Utc::now().date_naive();
    format!(
        "from={}&to={}",
        today - chrono::Duration::days(1),
        today + chrono::Duration::days(1)
    )
}

async fn report(app: &TestApp, as_token: &str, query: &str) -> Value {
    let (status, body) = json_of(app.get_as(as_token, &format!("/reports/spend?{query}")).await).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spend_report_splits_debits_credits_refunds_and_transfers_and_its_totals_equal_the_ledger() {
    let app = spawn_app().await;
    let c = company(&app).await;
    postings(&app, &c).await;
    let manager = token(Role::Manager, c.manager, c.id);

    let by_type = report(&app, &manager, &format!("{}&group_by=type", range())).await;
    let expected: BTreeMap<String, _> = [
        ("CREDIT", row("0.00", "2025.00", "0.00", "2025.00", 4)),
        ("DEBIT", row("180.00", "0.00", "0.00", "-180.00", 4)),
        ("REFUND", row("0.00", "0.00", "30.00", "30.00", 1)),
        ("TRANSFER_IN", row("0.00", "40.00", "0.00", "40.00", 1)),
        ("TRANSFER_OUT", row("40.00", "0.00", "0.00", "-40.00", 1)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(by_key(&by_type), expected, "{by_type}");
    assert_eq!(
        by_type["totals"],
        json!([{"currency": "USD", "debits": "220.00", "credits": "2065.00", "refunds": "30.00",
                "net": "1875.00", "count": 11}])
    );
    // The net of all of a wallet's rows is its balance (opened at 0 plus an opening credit).
    assert_eq!(app.balance(c.a.1).await, "860.00");
    assert_eq!(app.balance(c.b.1).await, "1015.00");

    let by_user = report(&app, &manager, &format!("{}&group_by=user", range())).await;
    let expected: BTreeMap<String, _> = [
        (c.a.0.to_string(), row("190.00", "1020.00", "30.00", "860.00", 6)),
        (c.b.0.to_string(), row("30.00", "1045.00", "0.00", "1015.00", 5)),
    ]
    .into_iter()
    .collect();
    assert_eq!(by_key(&by_user), expected, "{by_user}");

    // Time groupings: keys of their shape, adding up to the same totals.
    for (group, shape) in [
        ("day", r"^\d{4}-\d{2}-\d{2}$"),
        ("week", r"^\d{4}-W\d{2}$"),
        ("month", r"^\d{4}-\d{2}$"),
    ] {
        let r = report(&app, &manager, &format!("{}&group_by={group}", range())).await;
        let shape = regex::Regex::new(shape).expect("regex");
        let rows = by_key(&r);
        assert!(rows.keys().all(|k| shape.is_match(k)), "{group}: {r}");
        let count: i64 = rows.values().map(|v| v.4).sum();
        let debits: Decimal = rows.values().map(|v| v.0.parse::<Decimal>().expect("money")).sum();
        assert_eq!((count, debits), (11, Decimal::new(22000, 2)), "{group}: {r}");
        assert_eq!(r["totals"], by_type["totals"], "{group}");
    }
    let today = Utc::now().date_naive();
    let week = report(&app, &manager, &format!("from={today}&to={today}&group_by=week")).await;
    if let Some(k) = week["rows"][0]["key"].as_str() {
        assert_eq!(k, today.format("%G-W%V").to_string(), "an ISO week key");
    }

    // CSV: the same rows, the same columns.
    let res = app
        .http
        .get(app.url(&format!("/reports/spend?{}&group_by=type", range())))
        .bearer_auth(&manager)
        .header("accept", "text/csv")
        .send()
        .await
        .expect("request");
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let body = res.text().await.expect("body");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "key,currency,debits,credits,refunds,net,count");
    assert_eq!(lines[1], "CREDIT,USD,0.00,2025.00,0.00,2025.00,4");
    assert_eq!(lines[3], "REFUND,USD,0.00,0.00,30.00,30.00,1");
    assert_eq!(lines.len(), 6, "{body}");

    // Every aggregate equals what its ledger rows add up to.
    assert_eq!(app.service().audit_spend_aggregates(None).await.expect("audit"), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spend_report_covers_what_the_caller_may_see_and_404s_the_rest() {
    let app = spawn_app().await;
    let c = company(&app).await;
    postings(&app, &c).await;
    let (stranger, stranger_company, _) = app.user_with_wallet("10.00", "USD").await;
    let q = format!("{}&group_by=user", range());

    // A user sees their own figures only, whatever they ask for.
    let as_a = token(Role::User, c.a.0, c.id);
    let own = report(&app, &as_a, &q).await;
    assert_eq!(
        by_key(&own).keys().cloned().collect::<Vec<_>>(),
        vec![c.a.0.to_string()]
    );
    for other in [c.b.0, stranger] {
        let res = app.get_as(&as_a, &format!("/reports/spend?{q}&user_id={other}")).await;
        expect_problem(res, 404, "NOT_FOUND").await;
    }
    // A manager: the company, or one user of it; another company or its user is 404.
    let manager = token(Role::Manager, c.manager, c.id);
    let one = report(&app, &manager, &format!("{q}&user_id={}", c.b.0)).await;
    assert_eq!(
        by_key(&one).keys().cloned().collect::<Vec<_>>(),
        vec![c.b.0.to_string()]
    );
    for query in [
        format!("{q}&company_id={stranger_company}"),
        format!("{q}&user_id={stranger}"),
    ] {
        expect_problem(
            app.get_as(&manager, &format!("/reports/spend?{query}")).await,
            404,
            "NOT_FOUND",
        )
        .await;
    }
    // An admin names the company.
    expect_problem(
        app.get_as(&app.admin_token, &format!("/reports/spend?{q}")).await,
        400,
        "VALIDATION_FAILED",
    )
    .await;
    let admin = report(&app, &app.admin_token, &format!("{q}&company_id={}", c.id)).await;
    assert_eq!(admin["rows"], report(&app, &manager, &q).await["rows"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spend_report_that_cannot_be_answered_as_asked_is_a_400_never_an_empty_report() {
    let app = spawn_app().await;
    let c = company(&app).await;
    let manager = token(Role::Manager, c.manager, c.id);
    for query in [
        "to=2026-01-31&group_by=day",
        "from=2026-01-01&group_by=day",
        "from=2026-01-01&to=2026-01-31",
        "from=2026-02-01&to=2026-01-31&group_by=day",
        "from=2025-01-01&to=2026-01-03&group_by=month",
        "from=2026-01-01&to=2026-01-31&group_by=year",
        "from=2026-01-01&to=2026-01-31&group_by=day&currency=USD",
        "from=yesterday&to=2026-01-31&group_by=day",
    ] {
        let res = app.get_as(&manager, &format!("/reports/spend?{query}")).await;
        expect_problem(res, 400, "VALIDATION_FAILED").await;
    }
    // A full leap year is one report.
    report(&app, &manager, "from=2024-01-01&to=2024-12-31&group_by=month").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reports_audit_recomputes_every_aggregate_from_the_ledger_and_names_a_tampered_one() {
    let app = spawn_app().await;
    let c = company(&app).await;
    postings(&app, &c).await;
    // Every posting folded first: what is tampered with below is their aggregates.
    let auditor = crate::helpers::audit::Auditor::connect(&app.db.url).await;
    fold::until_folded_past(&app, Some(&auditor), fold::newest_stamp(&app).await).await;
    let (code, out) = audit_cli(&app.db.url, &["reports"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok"), "{out}");

    let db = app.db.client().await;
    db.execute(
        "UPDATE spend_daily SET amount = amount + 0.01 WHERE wallet_id = $1 AND kind = 'DEBIT'",
        &[&c.a.1],
    )
    .await
    .expect("tamper");
    db.execute(
        "DELETE FROM spend_daily WHERE wallet_id = $1 AND kind = 'REFUND'",
        &[&c.a.1],
    )
    .await
    .expect("tamper");
    db.execute(
        "UPDATE spend_monthly SET count = count + 1 WHERE wallet_id = $1 AND kind = 'CREDIT'",
        &[&c.a.1],
    )
    .await
    .expect("tamper");
    let (code, out) = audit_cli(&app.db.url, &["reports", "--wallet", &c.a.1.to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("wallet {}", c.a.1))
            && out.contains("DEBIT: ledger 150.00 in 2 rows, aggregate 150.01 in 2 rows"),
        "{out}"
    );
    assert!(
        out.contains("REFUND: ledger 30.00 in 1 rows, aggregate nothing"),
        "{out}"
    );
    let month = Utc::now().format("month %Y-%m CREDIT: ledger 1020.00 in 2 rows, aggregate 1020.00 in 3 rows");
    assert!(out.contains(&month.to_string()), "{out}");
    // The other wallet is untouched.
    let (code, out) = audit_cli(&app.db.url, &["reports", "--wallet", &c.b.1.to_string()]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_transactions_and_the_frozen_wallets_of_a_company_are_reported() {
    let app = spawn_app().await;
    let c = company(&app).await;
    postings(&app, &c).await;
    let manager = token(Role::Manager, c.manager, c.id);

    let (status, latest) = json_of(app.get_as(&manager, "/reports/transactions?limit=3").await).await;
    assert_eq!(status, 200, "{latest}");
    let rows = latest["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    // Newest first: B's debit taking bk-late, then the credit before it.
    assert_eq!(rows[0]["type"], "DEBIT");
    assert_eq!(rows[0]["reference_id"], "bk-late");
    assert_eq!(rows[0]["user_id"], c.b.0.to_string());
    assert_eq!(rows[0]["currency"], "USD");
    assert_eq!(rows[1]["type"], "CREDIT");
    let times: Vec<&str> = rows.iter().map(|r| r["created_at"].as_str().expect("time")).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    for bad in ["limit=0", "limit=101", "limit=ten"] {
        expect_problem(
            app.get_as(&manager, &format!("/reports/transactions?{bad}")).await,
            400,
            "VALIDATION_FAILED",
        )
        .await;
    }

    let res = app
        .http
        .put(app.url(&format!("/wallets/{}/status", c.a.1)))
        .bearer_auth(&manager)
        .json(&json!({"status": "FROZEN", "reason": "lost card"}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let (status, frozen) = json_of(app.get_as(&manager, "/reports/wallets?status=FROZEN,CLOSED").await).await;
    assert_eq!(status, 200, "{frozen}");
    assert_eq!(
        frozen["rows"],
        json!([{"wallet_id": c.a.1, "user_id": c.a.0, "status": "FROZEN", "balance": "860.00", "currency": "USD",
                "updated_at": frozen["rows"][0]["updated_at"]}])
    );
    assert!(frozen["rows"][0]["updated_at"].is_string());
    let (_, all) = json_of(app.get_as(&manager, "/reports/wallets").await).await;
    assert_eq!(all["rows"].as_array().map(Vec::len), Some(2), "{all}");
    let res = app
        .http
        .get(app.url("/reports/wallets?status=FROZEN"))
        .bearer_auth(&manager)
        .header("accept", "text/csv")
        .send()
        .await
        .expect("request");
    let csv = res.text().await.expect("body");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "wallet_id,user_id,status,balance,currency,updated_at");
    assert!(
        lines[1].starts_with(&format!("{},{},FROZEN,860.00,USD,", c.a.1, c.a.0)),
        "{csv}"
    );
    expect_problem(
        app.get_as(&manager, "/reports/wallets?status=frozen").await,
        400,
        "VALIDATION_FAILED",
    )
    .await;
    // A user sees only their own wallet.
    let as_b = token(Role::User, c.b.0, c.id);
    let (_, own) = json_of(app.get_as(&as_b, "/reports/wallets").await).await;
    assert_eq!(own["rows"].as_array().map(Vec::len), Some(1), "{own}");
    assert_eq!(own["rows"][0]["wallet_id"], c.b.1.to_string());
}
