//! Consistency gaps of issue 11: one refund rule for HTTP and events (judged by the store), budget create
//! and update in the audit trail, and the opening balance as a bounded, audited ledger entry.
use std::sync::Arc;

use chrono::{Datelike, Utc};
use serde_json::{Value, json};
use uuid::Uuid;
use wallet_actors::store::{Batch, CommitError};
use wallet_actors::{Amount, Entry, Origin, TxnType, WalletStore, state::new_txn_id};
use wallet_service::auth::Role;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::audit::Auditor;
use crate::helpers::fixtures::token;
use crate::helpers::replies::{expect_problem, json_of};

fn amount(s: &str) -> Amount {
    Amount::parse(s).unwrap()
}

fn booking(kind: &str, value: &str, booking: &str) -> Value {
    json!({"amount": value, "type": kind, "reference_type": "BOOKING", "reference_id": booking})
}

async fn posted(app: &TestApp, wallet: Uuid, body: Value) -> Value {
    let (status, reply) = json_of(app.post_txn(wallet, body).await).await;
    assert_eq!(status, 201, "{reply}");
    reply
}

/// Ledger rows of a wallet with this reference and type.
async fn rows_with(app: &TestApp, wallet: Uuid, kind: &str, reference: &str) -> i64 {
    app.count(
        "SELECT count(*) FROM transactions WHERE wallet_id = $1 AND type = $2 AND reference_id = $3",
        &[&wallet, &kind, &reference],
    )
    .await
}

/// Wallets whose balance is not `initial_balance` + completed credits − debits (transfer legs included), and
/// spend aggregates that differ from their ledger rows (`helpers::audit::Auditor::bank_breaks`).
async fn bank_breaks(app: &TestApp) -> Vec<String> {
    Auditor::connect(&app.db.url).await.bank_breaks().await
}

// ---- 1. One refund rule ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_above_its_debit_is_refused_422_and_nothing_moves() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    posted(&app, wallet, booking("DEBIT", "40.00", "bk-1")).await;
    assert_eq!(app.balance(wallet).await, "60.00");

    let res = app.post_txn(wallet, booking("CREDIT", "40.01", "bk-1")).await;
    let problem = expect_problem(res, 422, "REFUND_EXCEEDS_DEBIT").await;
    assert_eq!(problem["debited"], "40.00", "{problem}");
    assert_eq!(problem["type"], "/problems/refund-exceeds-debit");
    assert_eq!(app.balance(wallet).await, "60.00");
    assert_eq!(rows_with(&app, wallet, "CREDIT", "bk-1").await, 0);
    let refs = app
        .count(
            "SELECT count(*) FROM transaction_references WHERE wallet_id = $1 AND reference_id = 'bk-1' AND type = 'CREDIT'",
            &[&wallet],
        )
        .await;
    assert_eq!(refs, 0, "the refused refund claimed no reference");
    let events = app
        .count(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'TransactionCompleted' AND aggregate_id = $1 \
             AND payload->'data'->>'type' = 'CREDIT' AND payload->'data'->>'reference_id' = 'bk-1'",
            &[&wallet],
        )
        .await;
    assert_eq!(events, 0);

    // The whole debit may be refunded.
    let refund = posted(&app, wallet, booking("CREDIT", "40.00", "bk-1")).await;
    assert_eq!(refund["balance_after"], "100.00");
    // Once: a second refund is a repeat of the reference, as today.
    let res = app.post_txn(wallet, booking("CREDIT", "0.01", "bk-1")).await;
    let problem = expect_problem(res, 409, "CONFLICT").await;
    assert_eq!(problem["txn_id"], refund["txn_id"]);
    assert_eq!(app.balance(wallet).await, "100.00");
    assert_eq!(bank_breaks(&app).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_refund_is_201_and_a_second_refund_409() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    posted(&app, wallet, booking("DEBIT", "50.00", "bk-2")).await;
    let refund = posted(&app, wallet, booking("CREDIT", "20.00", "bk-2")).await;
    assert_eq!(refund["balance_after"], "70.00");
    // Even what remains of the debit is not refunded twice.
    let res = app.post_txn(wallet, booking("CREDIT", "30.00", "bk-2")).await;
    expect_problem(res, 409, "CONFLICT").await;
    assert_eq!(app.balance(wallet).await, "70.00");
    // A credit whose reference matches no debit is no refund: it is not bounded by one.
    posted(&app, wallet, booking("CREDIT", "500.00", "bk-none")).await;
    assert_eq!(app.balance(wallet).await, "570.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refund_with_an_idempotency_key_replays_its_422_and_leaves_the_budget_alone() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let start = Utc::now().date_naive().with_day(1).unwrap();
    let res = app
        .http
        .post(app.url("/budgets"))
        .bearer_auth(&app.admin_token)
        .json(&json!({"wallet_id": wallet, "total_amount": "80.00", "period_type": "MONTHLY", "start_date": start}))
        .send()
        .await
        .unwrap();
    let (status, budget) = json_of(res).await;
    assert_eq!(status, 201, "{budget}");
    posted(&app, wallet, booking("DEBIT", "30.00", "bk-3")).await;
    let send = || {
        app.http
            .post(app.url(&format!("/wallets/{wallet}/transactions")))
            .bearer_auth(&app.service_token)
            .header("Idempotency-Key", "refund-bk-3")
            .json(&booking("CREDIT", "31.00", "bk-3"))
            .send()
    };
    let first = expect_problem(send().await.unwrap(), 422, "REFUND_EXCEEDS_DEBIT").await;
    let again = expect_problem(send().await.unwrap(), 422, "REFUND_EXCEEDS_DEBIT").await;
    assert_eq!(first, again);
    let used = app
        .count(
            "SELECT (used_amount * 100)::bigint FROM budgets WHERE wallet_id = $1",
            &[&wallet],
        )
        .await;
    assert_eq!(used, 3000, "the budget keeps the debit's charge");
    assert_eq!(app.balance(wallet).await, "70.00");
    // The refund within the debit gives the charge back.
    posted(&app, wallet, booking("CREDIT", "30.00", "bk-3")).await;
    let used = app
        .count(
            "SELECT (used_amount * 100)::bigint FROM budgets WHERE wallet_id = $1",
            &[&wallet],
        )
        .await;
    assert_eq!(used, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_among_concurrent_credits_refuse_only_themselves() {
    let app = Arc::new(spawn_app().await);
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    posted(&app, wallet, booking("DEBIT", "10.00", "bk-4")).await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let app = app.clone();
        let body = if i == 6 {
            booking("CREDIT", "10.50", "bk-4")
        } else {
            json!({"amount": "1.00", "type": "CREDIT"})
        };
        tasks.push(tokio::spawn(async move {
            app.post_txn(wallet, body).await.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses[6], 422, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 11, "{statuses:?}");
    assert_eq!(app.balance(wallet).await, "101.00");
    assert_eq!(bank_breaks(&app).await, Vec::<String>::new());
}

/// A batch of a debit and its refund, planned against the wallet's committed state.
async fn debit_and_refund(app: &TestApp, wallet: Uuid, debit: &str, refund: &str) -> Batch {
    let before = app.store().load(wallet).await.unwrap().unwrap();
    let origin = Origin {
        actor_id: Uuid::new_v4(),
        role: "service".into(),
        ..Default::default()
    };
    let entry = |kind: TxnType, value: &str, after: Amount| {
        let (txn_id, created_at) = new_txn_id();
        Entry {
            txn_id,
            wallet_id: wallet,
            kind,
            amount: amount(value),
            description: None,
            reference_id: Some("bk-5".into()),
            reference_type: Some("BOOKING".into()),
            metadata: None,
            balance_after: after,
            created_at,
            origin: origin.clone(),
            budgets: vec![],
            hold_id: None,
            link: None,
        }
    };
    let after_debit = before.balance.checked_sub(amount(debit)).unwrap();
    let after_refund = after_debit.checked_add(amount(refund)).unwrap();
    let mut after = before.clone();
    after.balance = after_refund;
    after.version = before.version + 1;
    Batch {
        wallet_id: wallet,
        expected_version: before.version,
        entries: vec![
            entry(TxnType::Debit, debit, after_debit),
            entry(TxnType::Credit, refund, after_refund),
        ],
        after,
        status_changes: vec![],
        refusals: vec![],
        budget_creates: vec![],
        budget_changes: vec![],
        alerts: vec![],
        hold_changes: vec![],
        suspicious: vec![],
        audit: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_refuses_a_refund_above_a_debit_of_the_same_batch_and_writes_nothing() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let store = &app.store();
    let batch = debit_and_refund(&app, wallet, "20.00", "20.01").await;
    assert_eq!(
        store.commit(&batch).await,
        Err(CommitError::RefundsExceedDebits(vec![(1, amount("20.00"))]))
    );
    assert_eq!(app.balance(wallet).await, "100.00");
    assert_eq!(rows_with(&app, wallet, "DEBIT", "bk-5").await, 0);
    let batch = debit_and_refund(&app, wallet, "20.00", "20.00").await;
    assert_eq!(store.commit(&batch).await, Ok(()));
    assert_eq!(app.balance(wallet).await, "100.00");
    assert_eq!(rows_with(&app, wallet, "CREDIT", "bk-5").await, 1);
}

// ---- 2. Budgets in the audit trail ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_create_and_update_are_in_the_audit_trail_with_the_caller() {
    let app = spawn_app().await;
    let (_, company, wallet) = app.user_with_wallet("500.00", "USD").await;
    let manager = Uuid::new_v4();
    let t = token(Role::Manager, manager, company);
    let start = Utc::now().date_naive().with_day(1).unwrap();
    let res = app
        .http
        .post(app.url("/budgets"))
        .bearer_auth(&t)
        .json(&json!({"wallet_id": wallet, "total_amount": "300.00", "period_type": "MONTHLY", "start_date": start}))
        .send()
        .await
        .unwrap();
    let (status, budget) = json_of(res).await;
    assert_eq!(status, 201, "{budget}");
    let id = budget["budget_id"].as_str().unwrap().to_string();
    let res = app
        .http
        .put(app.url(&format!("/budgets/{id}")))
        .bearer_auth(&t)
        .json(&json!({"total_amount": "450.00", "status": "SUSPENDED", "change_reason": "quarter close"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let c = app.db.client().await;
    let rows = c
        .query(
            "SELECT action, actor_id, actor_role, outcome, target_type, detail FROM audit_trail \
             WHERE target_id = $1 ORDER BY at",
            &[&id],
        )
        .await
        .unwrap();
    let trail: Vec<(String, Uuid, String, String, String, Value)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    assert_eq!(trail.len(), 2, "{trail:?}");
    let (action, actor, role, outcome, target, detail) = &trail[0];
    assert_eq!(
        (
            action.as_str(),
            *actor,
            role.as_str(),
            outcome.as_str(),
            target.as_str()
        ),
        ("budget.create", manager, "manager", "APPLIED", "budget")
    );
    assert_eq!(detail["wallet_id"], json!(wallet));
    assert_eq!(detail["total_amount"], "300.00");
    assert_eq!(detail["period_type"], "MONTHLY");
    assert_eq!(detail["start_date"], json!(start));
    let (action, actor, role, outcome, _, detail) = &trail[1];
    assert_eq!(
        (action.as_str(), *actor, role.as_str(), outcome.as_str()),
        ("budget.update", manager, "manager", "APPLIED")
    );
    assert_eq!(
        detail,
        &json!({"wallet_id": wallet, "old_total": "300.00", "new_total": "450.00",
                "old_status": "ACTIVE", "new_status": "SUSPENDED", "reason": "quarter close"})
    );
}

// ---- 3. The opening balance is a ledger entry, bounded ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opening_balance_is_the_first_transaction_and_audited() {
    let app = spawn_app().await;
    let (user, company) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(app.put_user(user, company, "user").await.status(), 200);
    let manager = Uuid::new_v4();
    let res = app
        .create_wallet_as(
            &token(Role::Manager, manager, company),
            json!({"user_id": user, "initial_balance": "125.50", "currency": "EUR"}),
        )
        .await;
    let (status, created) = json_of(res).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["balance"], "125.50");
    let wallet = Uuid::parse_str(created["wallet_id"].as_str().unwrap()).unwrap();
    posted(&app, wallet, json!({"amount": "25.50", "type": "DEBIT"})).await;

    let res = app
        .http
        .get(app.url(&format!("/wallets/{wallet}/transactions")))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    let (status, page) = json_of(res).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["pagination"]["total"], 2, "{page}");
    // Newest first: the opening balance is the last row, the wallet's first transaction.
    let opening = &page["transactions"][1];
    assert_eq!(opening["type"], "CREDIT");
    assert_eq!(opening["amount"], "125.50");
    assert_eq!(opening["balance_after"], "125.50");
    assert_eq!(opening["description"], "Opening balance");
    assert_eq!(opening["reference_type"], "OPENING");
    assert_eq!(opening["reference_id"], wallet.to_string());
    assert_eq!(opening["status"], "COMPLETED");
    assert_eq!(page["transactions"][0]["balance_after"], "100.00");

    let c = app.db.client().await;
    let w = c
        .query_one(
            "SELECT initial_balance::text, balance::text FROM wallets WHERE wallet_id = $1",
            &[&wallet],
        )
        .await
        .unwrap();
    assert_eq!(
        (w.get::<_, String>(0), w.get::<_, String>(1)),
        ("0.00".into(), "100.00".into())
    );
    // In the audit trail with the caller who created the wallet.
    let credit = c
        .query_one(
            "SELECT actor_id, actor_role, detail->>'amount', detail->>'txn_id' FROM audit_trail \
             WHERE target_id = $1 AND action = 'wallet.credit'",
            &[&wallet.to_string()],
        )
        .await
        .unwrap();
    assert_eq!(credit.get::<_, Uuid>(0), manager);
    assert_eq!(credit.get::<_, String>(1), "manager");
    assert_eq!(credit.get::<_, String>(2), "125.50");
    let txn_id = opening["txn_id"].as_str().unwrap().to_string();
    assert_eq!(credit.get::<_, String>(3), txn_id);
    let created_row = c
        .query_one(
            "SELECT detail->>'initial_balance', detail->>'opening_txn_id' FROM audit_log \
             WHERE target_id = $1 AND action = 'wallet.create'",
            &[&wallet.to_string()],
        )
        .await
        .unwrap();
    assert_eq!(created_row.get::<_, String>(0), "125.50");
    assert_eq!(created_row.get::<_, String>(1), txn_id);
    // Its reference key, and its events: WalletCreated keeps `initial_balance`, then the credit.
    let refs = app
        .count(
            "SELECT count(*) FROM transaction_references WHERE wallet_id = $1 AND reference_type = 'OPENING' \
             AND reference_id = $2 AND type = 'CREDIT' AND amount = 125.50",
            &[&wallet, &wallet.to_string()],
        )
        .await;
    assert_eq!(refs, 1);
    let events = c
        .query(
            "SELECT event_type, payload->'data' FROM outbox_events WHERE aggregate_id = $1 ORDER BY seq",
            &[&wallet],
        )
        .await
        .unwrap();
    let events: Vec<(String, Value)> = events.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(events[0].0, "WalletCreated", "{events:?}");
    assert_eq!(events[0].1["initial_balance"], "125.50");
    assert_eq!(events[1].0, "TransactionCompleted", "{events:?}");
    assert_eq!(events[1].1["txn_id"], txn_id);
    assert_eq!(events[1].1["amount"], "125.50");
    assert_eq!(events[1].1["new_balance"], "125.50");
    assert_eq!(bank_breaks(&app).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_without_an_opening_balance_has_no_ledger_row() {
    let app = spawn_app().await;
    let (user, company) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(app.put_user(user, company, "user").await.status(), 200);
    let res = app.create_wallet_as(&app.admin_token, json!({"user_id": user})).await;
    let (status, created) = json_of(res).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(app.count("SELECT count(*) FROM transactions", &[]).await, 0);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'TransactionCompleted'",
            &[]
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opening_balance_above_the_default_maximum_is_400_and_creates_no_wallet() {
    let app = spawn_app().await;
    let (user, company) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(app.put_user(user, company, "user").await.status(), 200);
    let manager = token(Role::Manager, Uuid::new_v4(), company);
    let res = app
        .http
        .post(app.url("/wallets"))
        .bearer_auth(&manager)
        .header("Idempotency-Key", "open-1")
        .json(&json!({"user_id": user, "initial_balance": "1000000.01"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 400, "VALIDATION_FAILED").await;
    assert_eq!(problem["errors"][0]["field"], "initial_balance", "{problem}");
    assert!(
        problem["errors"][0]["message"].as_str().unwrap().contains("1000000.00"),
        "{problem}"
    );
    assert_eq!(app.count("SELECT count(*) FROM wallets", &[]).await, 0);
    assert_eq!(app.count("SELECT count(*) FROM transactions", &[]).await, 0);
    // The 400 did not consume the key: the corrected request may use it.
    let res = app
        .http
        .post(app.url("/wallets"))
        .bearer_auth(&manager)
        .header("Idempotency-Key", "open-1")
        .json(&json!({"user_id": user, "initial_balance": "1000000.00"}))
        .send()
        .await
        .unwrap();
    let (status, created) = json_of(res).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["balance"], "1000000.00");
    assert_eq!(bank_breaks(&app).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maximum_opening_balance_is_configurable() {
    let app = TestApp::builder()
        .configure(|cfg| cfg.max_initial_balance = amount("100.00"))
        .spawn()
        .await;
    let (user, company) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(app.put_user(user, company, "user").await.status(), 200);
    let res = app
        .create_wallet_as(&app.admin_token, json!({"user_id": user, "initial_balance": 100.01}))
        .await;
    let problem = expect_problem(res, 400, "VALIDATION_FAILED").await;
    assert_eq!(problem["errors"][0]["field"], "initial_balance");
    assert_eq!(app.count("SELECT count(*) FROM wallets", &[]).await, 0);
    let res = app
        .create_wallet_as(&app.admin_token, json!({"user_id": user, "initial_balance": 100}))
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(app.count("SELECT count(*) FROM transactions", &[]).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_invariant_holds_with_opening_balances_postings_and_transfers() {
    let app = spawn_app().await;
    let (_, _, a) = app.user_with_wallet("300.00", "USD").await;
    let (_, _, b) = app.user_with_wallet("0", "USD").await;
    let (_, _, c) = app.user_with_wallet("42.42", "USD").await;
    posted(&app, a, booking("DEBIT", "100.00", "bk-6")).await;
    posted(&app, a, booking("CREDIT", "60.00", "bk-6")).await;
    posted(&app, c, json!({"amount": "0.42", "type": "DEBIT"})).await;
    let res = app
        .http
        .post(app.url("/transfers"))
        .bearer_auth(&app.service_token)
        .json(&json!({"from_wallet_id": a, "to_wallet_id": b, "amount": "50.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(bank_breaks(&app).await, Vec::<String>::new());
    assert_eq!(
        app.count("SELECT count(*) FROM wallets WHERE initial_balance <> 0", &[])
            .await,
        0
    );
    // All money in the system came in through ledger rows.
    let total = app
        .count(
            "SELECT (sum(balance) * 100)::bigint FROM wallets WHERE wallet_id = ANY($1)",
            &[&vec![a, b, c]],
        )
        .await;
    assert_eq!(total, 30000 - 10000 + 6000 + 4242 - 42);
}
