//! The spend aggregates' fold (`sql/V12`, `store::spend`): a report is exact before and after its rows are
//! folded, a commit that finishes after later ones is folded once when it lands, and folds racing each other
//! and the postings count every row once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{Datelike, Duration, NaiveDate, Utc};
use serde_json::{Value, json};
use uuid::Uuid;
use wallet_service::auth::Role;

use super::{Company, by_key, company, posted, postings, range, report, row};
use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::audit::Auditor;
use crate::helpers::fixtures::token;

/// Ledger rows of the company's wallets at or above the fold's horizon: the reports' tail.
async fn unfolded(app: &TestApp, c: &Company) -> i64 {
    app.db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM transactions WHERE wallet_id = ANY($1) \
               AND xact >= (SELECT horizon FROM spend_fold)",
            &[&vec![c.a.1, c.b.1]],
        )
        .await
        .expect("tail count")
        .get(0)
}

async fn horizon(app: &TestApp) -> i64 {
    app.db
        .client()
        .await
        .query_one("SELECT horizon FROM spend_fold", &[])
        .await
        .expect("horizon")
        .get(0)
}

/// The newest stamp of the ledger.
pub(super) async fn newest_stamp(app: &TestApp) -> i64 {
    app.db
        .client()
        .await
        .query_one("SELECT max(xact) FROM transactions", &[])
        .await
        .expect("the newest stamp")
        .get(0)
}

/// Waits (folding, or letting `fold` be done by others when `None`) until the horizon is past `stamp`: a
/// transaction open anywhere in the cluster (another test's) holds it back meanwhile.
pub(super) async fn until_folded_past(app: &TestApp, auditor: Option<&Auditor>, stamp: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while horizon(app).await <= stamp {
        assert!(std::time::Instant::now() < deadline, "the horizon passed {stamp}");
        if let Some(auditor) = auditor {
            auditor.fold().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Ranges that read the tail, days only, a whole month (`spend_monthly` for user, type and month) and a
/// whole month beside part of another.
fn ranges() -> Vec<String> {
    let today = Utc::now().date_naive();
    let first = today.with_day(1).expect("a first day");
    let last = first
        .checked_add_months(chrono::Months::new(1))
        .and_then(|d| d.pred_opt())
        .expect("a last day");
    let previous: NaiveDate = first
        .checked_sub_months(chrono::Months::new(1))
        .expect("the previous month");
    vec![
        range(),
        format!("from={first}&to={last}"),
        format!("from={previous}&to={}", today + Duration::days(1)),
    ]
}

async fn every_report(app: &TestApp, manager: &str) -> Vec<Value> {
    let mut all = vec![];
    for r in ranges() {
        for group in ["day", "week", "month", "user", "type"] {
            all.push(report(app, manager, &format!("{r}&group_by={group}")).await);
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spend_report_is_the_same_whether_its_rows_are_still_in_the_ledger_or_folded() {
    let app = spawn_app().await;
    // The fold's lock held by this session, before the company's first row (its opening balances): the
    // instance's fold, which runs on its own clock, finds it busy until it is released.
    let lock = app.db.client().await;
    lock.execute("SELECT pg_advisory_lock(spend_fold_lock_key())", &[])
        .await
        .expect("the fold's lock");
    let c = company(&app).await;
    let manager = token(Role::Manager, c.manager, c.id);
    postings(&app, &c).await;
    assert_eq!(unfolded(&app, &c).await, 11, "every row of the postings is in the tail");
    let from_the_ledger = every_report(&app, &manager).await;
    let whole_month = &from_the_ledger[5 + 4];
    assert_eq!(
        by_key(whole_month)["DEBIT"],
        row("180.00", "0.00", "0.00", "-180.00", 4),
        "{whole_month}"
    );

    lock.execute("SELECT pg_advisory_unlock(spend_fold_lock_key())", &[])
        .await
        .expect("unlock");
    let auditor = Auditor::connect(&app.db.url).await;
    until_folded_past(&app, Some(&auditor), newest_stamp(&app).await).await;
    assert_eq!(unfolded(&app, &c).await, 0, "the fold took every finished commit");
    assert_eq!(every_report(&app, &manager).await, from_the_ledger);
    assert!(auditor.bank_breaks().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_finishes_after_later_ones_is_folded_once_when_it_lands() {
    let app = spawn_app().await;
    let c = company(&app).await;
    let manager = token(Role::Manager, c.manager, c.id);
    let auditor = Auditor::connect(&app.db.url).await;
    let mut late = app.db.client().await;
    let tx = late.transaction().await.expect("begin");
    let xid: i64 = tx
        .query_one("SELECT (pg_current_xact_id()::text)::bigint", &[])
        .await
        .expect("an id for the late transaction")
        .get(0);
    // Later transactions commit and are folded around it.
    postings(&app, &c).await;
    auditor.fold().await;
    assert!(
        horizon(&app).await <= xid,
        "the horizon never passes an open transaction"
    );
    let by_type = report(&app, &manager, &format!("{}&group_by=type", range())).await;
    assert_eq!(by_key(&by_type)["DEBIT"], row("180.00", "0.00", "0.00", "-180.00", 4));
    assert!(auditor.bank_breaks().await.is_empty());

    // The late transaction writes a debit of 7.00 on B (as a commit of the service does: the wallet row and
    // its ledger row) and commits last.
    let b = c.b.1;
    tx.execute(
        "UPDATE wallets SET balance = balance - 7, version = version + 1 WHERE wallet_id = $1",
        &[&b],
    )
    .await
    .expect("the late wallet update");
    tx.execute(
        "INSERT INTO transactions (txn_id, wallet_id, amount, type, status, balance_after, created_at) \
         SELECT $2, $1, 7.00, 'DEBIT', 'COMPLETED', w.balance, wallet_uuid_v7_time($2) \
           FROM wallets w WHERE w.wallet_id = $1",
        &[&b, &Uuid::now_v7()],
    )
    .await
    .expect("the late ledger row");
    tx.commit().await.expect("the late commit");

    let by_type = report(&app, &manager, &format!("{}&group_by=type", range())).await;
    assert_eq!(by_key(&by_type)["DEBIT"], row("187.00", "0.00", "0.00", "-187.00", 5));
    // Folded once the transactions older than it are done too (other tests share the cluster's ids).
    until_folded_past(&app, Some(&auditor), xid).await;
    assert_eq!(unfolded(&app, &c).await, 0);
    assert_eq!(
        report(&app, &manager, &format!("{}&group_by=type", range())).await,
        by_type
    );
    assert!(auditor.bank_breaks().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folds_racing_each_other_and_the_postings_count_every_row_once() {
    let app = Arc::new(spawn_app().await);
    let c = company(&app).await;
    let manager = token(Role::Manager, c.manager, c.id);
    let stop = Arc::new(AtomicBool::new(false));
    let mut folders = vec![];
    for _ in 0..2 {
        let (app, stop) = (app.clone(), stop.clone());
        folders.push(tokio::spawn(async move {
            let mut folded = 0;
            while !stop.load(Ordering::Relaxed) {
                if let wallet_service::store::Fold::Folded { rows, .. } =
                    app.service().fold_spend().await.expect("a fold")
                {
                    folded += rows;
                }
            }
            folded
        }));
    }
    let posts = (0..60).map(|i| {
        let app = app.clone();
        let wallet = if i % 2 == 0 { c.a.1 } else { c.b.1 };
        async move { posted(&app, wallet, json!({"amount": "1.25", "type": "DEBIT"})).await }
    });
    futures_util::future::join_all(posts).await;
    // The racing folds go on until they have passed every posting (a transaction open anywhere in the
    // cluster, another test's, holds the horizon back meanwhile).
    until_folded_past(&app, None, newest_stamp(&app).await).await;
    stop.store(true, Ordering::Relaxed);
    let mut folded = 0;
    for f in folders {
        folded += f.await.expect("a folder");
    }
    let auditor = Auditor::connect(&app.db.url).await;
    auditor.fold().await;
    assert!(folded > 0, "the racing folds folded rows");
    assert!(auditor.bank_breaks().await.is_empty());
    let by_type = report(&app, &manager, &format!("{}&group_by=type", range())).await;
    assert_eq!(by_key(&by_type)["DEBIT"], row("75.00", "0.00", "0.00", "-75.00", 60));
    // The instance's own fold (its first tick is at start) is timed for operators.
    assert!(
        crate::helpers::eventually(crate::helpers::WAIT, || async {
            app.text("/metrics")
                .await
                .contains("wallet_spend_fold_duration_seconds_bucket{outcome=\"folded\"")
        })
        .await,
        "the fold's duration histogram"
    );
}
