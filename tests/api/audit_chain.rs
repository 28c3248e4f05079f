//! The tamper-evident ledger (issue 13) against real Postgres: every wallet's rows chained by its actor
//! (one by the store, a transfer's incoming leg), verified over HTTP (`GET /admin/audit/verify`) and by the
//! CLI (`wallet-service audit verify`); each tampering a superuser can do in SQL (the append-only trigger
//! disabled) is caught and named; checkpoints cover what a chain alone cannot see.

use serde_json::{Value, json};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::replies::{expect_problem, json_of};
use crate::helpers::service::audit_cli;

async fn verify(app: &TestApp, query: &str) -> Value {
    let (status, body) = json_of(
        app.get_as(&app.admin_token, &format!("/admin/audit/verify{query}"))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn post(app: &TestApp, wallet: Uuid, body: Value) {
    let res = app.post_txn(wallet, body).await;
    let status = res.status().as_u16();
    assert_eq!(status, 201, "{}", res.text().await.unwrap_or_default());
}

async fn send(app: &TestApp, method: reqwest::Method, path: &str, body: Value) -> Value {
    let (status, reply) = json_of(
        app.http
            .request(method, app.url(path))
            .bearer_auth(&app.admin_token)
            .json(&body)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert!((200..300).contains(&status), "{path}: {status} {reply}");
    reply
}

/// A wallet with an opening balance and a few debits (with metadata), so it has a chain of several rows.
async fn wallet_with_history(app: &TestApp) -> Uuid {
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    for (i, amount) in ["1.00", "2.00", "3.00"].iter().enumerate() {
        post(
            app,
            wallet,
            json!({"type": "DEBIT", "amount": amount, "metadata": {"n": i, "trip": "x"}}),
        )
        .await;
    }
    wallet
}

/// Runs SQL as a superuser would, with the append-only triggers off for the statement.
async fn tamper(c: &Client, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) {
    c.batch_execute(
        "ALTER TABLE transactions DISABLE TRIGGER transactions_no_update; \
         ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update",
    )
    .await
    .expect("disable the triggers");
    let n = c.execute(sql, params).await.expect("tampering");
    assert!(n > 0, "the tampering touched a row: {sql}");
    c.batch_execute(
        "ALTER TABLE transactions ENABLE TRIGGER transactions_no_update; \
         ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update",
    )
    .await
    .expect("enable the triggers");
}

/// The txn id of a wallet's ledger row at `seq`.
async fn txn_at(c: &Client, wallet: Uuid, seq: i64) -> Uuid {
    c.query_one(
        "SELECT txn_id FROM transactions WHERE wallet_id = $1 AND chain_seq = $2",
        &[&wallet, &seq],
    )
    .await
    .expect("a row at this seq")
    .get(0)
}

fn broken(v: &Value) -> &Value {
    assert_eq!(v["ok"], false, "{v}");
    &v["broken"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_database_verifies_after_postings_a_transfer_holds_status_and_budget_changes_from_two_instances() {
    let a = spawn_app().await;
    let b = a.another().spawn().await;
    let (_, _, one) = a.user_with_wallet("500.00", "USD").await;
    let (_, _, two) = b.user_with_wallet("50.00", "USD").await;

    // Both instances post to one wallet at once: its chain must not fork (the version guard re-plans).
    let debit = json!({"type": "DEBIT", "amount": "1.00", "metadata": {"z": 1, "a": [1.50, "x"]}});
    let mut tasks = Vec::new();
    for i in 0..20 {
        let app = if i % 2 == 0 { &a } else { &b };
        tasks.push(post(app, one, debit.clone()));
    }
    futures_util::future::join_all(tasks).await;
    post(&b, two, json!({"type": "CREDIT", "amount": "5.00"})).await;

    // A transfer: the source leg chained by one's actor, the incoming one by the store on two's chain.
    send(
        &a,
        reqwest::Method::POST,
        "/transfers",
        json!({"from_wallet_id": one, "to_wallet_id": two, "amount": "10.00"}),
    )
    .await;
    // Then two's own actor (on the other instance) extends the chain after the store's row.
    post(&b, two, json!({"type": "DEBIT", "amount": "2.00"})).await;

    // Holds: placed, captured (a DEBIT row), placed again and voided (a release).
    let hold = send(
        &a,
        reqwest::Method::POST,
        &format!("/wallets/{one}/holds"),
        json!({"amount": "20.00"}),
    )
    .await;
    let hold_id = hold["hold_id"].as_str().expect("hold id").to_string();
    send(
        &b,
        reqwest::Method::POST,
        &format!("/holds/{hold_id}/capture"),
        json!({"amount": "5.00"}),
    )
    .await;
    let hold = send(
        &b,
        reqwest::Method::POST,
        &format!("/wallets/{one}/holds"),
        json!({"amount": "7.00"}),
    )
    .await;
    let hold_id = hold["hold_id"].as_str().expect("hold id").to_string();
    send(&a, reqwest::Method::POST, &format!("/holds/{hold_id}/void"), json!({})).await;

    // Status and budget changes are on the chain too.
    send(
        &a,
        reqwest::Method::PUT,
        &format!("/wallets/{two}/status"),
        json!({"status": "FROZEN", "reason": "check"}),
    )
    .await;
    send(
        &b,
        reqwest::Method::PUT,
        &format!("/wallets/{two}/status"),
        json!({"status": "ACTIVE"}),
    )
    .await;
    let today = chrono::Utc::now().date_naive();
    let budget = send(
        &a,
        reqwest::Method::POST,
        "/budgets",
        json!({"wallet_id": one, "total_amount": "1000.00", "period_type": "MONTHLY",
               "start_date": today - chrono::Duration::days(1), "end_date": today + chrono::Duration::days(1)}),
    )
    .await;
    let budget_id = budget["budget_id"].as_str().expect("budget id").to_string();
    send(
        &b,
        reqwest::Method::PUT,
        &format!("/budgets/{budget_id}"),
        json!({"total_amount": "900.00", "change_reason": "trim"}),
    )
    .await;
    post(&a, one, json!({"type": "DEBIT", "amount": "3.00"})).await;

    let v = verify(&a, "").await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["wallets"], 2, "{v}");
    // one: opening, 20 debits, transfer out, capture, final debit; two: opening, credit, transfer in,
    // debit; audit rows: 2 placements, 2 releases (the final capture's rest, the void), 2 status changes,
    // budget create and update.
    let ledger = a.count("SELECT count(*) FROM transactions", &[]).await;
    assert_eq!(ledger, 28);
    let chained_audit = a
        .count("SELECT count(*) FROM audit_log WHERE chain_seq IS NOT NULL", &[])
        .await;
    assert_eq!(chained_audit, 8);
    assert_eq!(v["rows"], ledger + chained_audit, "{v}");
    assert_eq!(
        a.count("SELECT count(*) FROM transactions WHERE chain_seq IS NULL", &[])
            .await,
        0
    );
    // Each wallet's chain is 1..head with no gap or repeat, and its head is its last row.
    for w in [one, two] {
        let n = a
            .count(
                "SELECT count(DISTINCT s) FROM (SELECT chain_seq s FROM transactions WHERE wallet_id = $1 \
                 UNION ALL SELECT chain_seq FROM audit_log WHERE wallet_id = $1) x",
                &[&w],
            )
            .await;
        assert_eq!(
            a.count("SELECT head_seq FROM wallets WHERE wallet_id = $1", &[&w])
                .await,
            n
        );
        let v = verify(&b, &format!("?wallet_id={w}")).await;
        assert_eq!((v["ok"].clone(), v["wallets"].clone()), (json!(true), json!(1)), "{v}");
    }
    let (code, out) = audit_cli(&a.db.url, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: 2 wallets"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_rows_amount_in_sql_is_caught_and_named_as_a_hash_mismatch() {
    let app = spawn_app().await;
    let wallet = wallet_with_history(&app).await;
    let c = app.db.client().await;
    let victim = txn_at(&c, wallet, 3).await;
    tamper(
        &c,
        "UPDATE transactions SET amount = 0.01 WHERE txn_id = $1",
        &[&victim],
    )
    .await;

    let v = verify(&app, "").await;
    let b = broken(&v);
    assert_eq!(b["wallet_id"], json!(wallet));
    assert_eq!(
        (b["seq"].clone(), b["table"].clone()),
        (json!(3), json!("transactions")),
        "{v}"
    );
    assert_eq!(
        (b["id"].clone(), b["fault"].clone()),
        (json!(victim.to_string()), json!("hash_mismatch")),
        "{v}"
    );
    let (code, out) = audit_cli(&app.db.url, &["verify", "--wallet", &wallet.to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("wallet {wallet} seq 3 transactions {victim}: hash mismatch")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_row_is_caught_and_named_as_a_missing_seq() {
    let app = spawn_app().await;
    let wallet = wallet_with_history(&app).await;
    let c = app.db.client().await;
    let gone = txn_at(&c, wallet, 2).await;
    let next = txn_at(&c, wallet, 3).await;
    tamper(&c, "DELETE FROM transactions WHERE txn_id = $1", &[&gone]).await;

    let v = verify(&app, &format!("?wallet_id={wallet}")).await;
    let b = broken(&v);
    assert_eq!(
        (b["seq"].clone(), b["id"].clone()),
        (json!(3), json!(next.to_string())),
        "{v}"
    );
    assert_eq!(
        (b["fault"].clone(), b["what"].clone()),
        (json!("missing_seq"), json!("missing seq 2")),
        "{v}"
    );

    // The last row deleted leaves no gap: the wallet's head names it.
    let last = txn_at(&c, wallet, 4).await;
    tamper(&c, "DELETE FROM transactions WHERE txn_id = $1", &[&last]).await;
    tamper(&c, "DELETE FROM transactions WHERE txn_id = $1", &[&next]).await;
    let v = verify(&app, &format!("?wallet_id={wallet}")).await;
    let b = broken(&v);
    assert_eq!(
        (b["table"].clone(), b["fault"].clone()),
        (json!("wallets"), json!("head_mismatch")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_two_rows_order_is_caught_and_named_as_order() {
    let app = spawn_app().await;
    let wallet = wallet_with_history(&app).await;
    let c = app.db.client().await;
    let moved = txn_at(&c, wallet, 3).await;
    tamper(
        &c,
        "UPDATE transactions SET chain_seq = CASE chain_seq WHEN 2 THEN 3 ELSE 2 END \
          WHERE wallet_id = $1 AND chain_seq IN (2, 3)",
        &[&wallet],
    )
    .await;

    let v = verify(&app, "").await;
    let b = broken(&v);
    // The row now at seq 2 is sound in itself but links to the row after it.
    assert_eq!(
        (b["seq"].clone(), b["id"].clone()),
        (json!(2), json!(moved.to_string())),
        "{v}"
    );
    assert_eq!(b["fault"], "order", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_metadata_is_caught_and_named_as_a_hash_mismatch() {
    let app = spawn_app().await;
    let wallet = wallet_with_history(&app).await;
    let c = app.db.client().await;
    let victim = txn_at(&c, wallet, 2).await;
    // The same metadata in another key order and number form is the same metadata: still sound.
    tamper(
        &c,
        "UPDATE transactions SET metadata = '{\"trip\": \"x\", \"n\": 0.0}'::jsonb WHERE txn_id = $1",
        &[&victim],
    )
    .await;
    assert_eq!(verify(&app, "").await["ok"], true);

    tamper(
        &c,
        "UPDATE transactions SET metadata = metadata || '{\"trip\": \"y\"}' WHERE txn_id = $1",
        &[&victim],
    )
    .await;
    let v = verify(&app, "").await;
    let b = broken(&v);
    assert_eq!(
        (b["seq"].clone(), b["id"].clone()),
        (json!(2), json!(victim.to_string())),
        "{v}"
    );
    assert_eq!(b["fault"], "hash_mismatch", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_an_audit_rows_detail_is_caught_on_its_wallets_chain() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("10.00", "USD").await;
    send(
        &app,
        reqwest::Method::PUT,
        &format!("/wallets/{wallet}/status"),
        json!({"status": "FROZEN", "reason": "fraud check"}),
    )
    .await;
    let c = app.db.client().await;
    let audit_id: i64 = c
        .query_one(
            "SELECT audit_id FROM audit_log WHERE wallet_id = $1 AND action = 'wallet.set_status'",
            &[&wallet],
        )
        .await
        .expect("the status change's audit row is on the chain")
        .get(0);
    tamper(
        &c,
        "UPDATE audit_log SET detail = jsonb_set(detail, '{reason}', '\"routine\"') WHERE audit_id = $1",
        &[&audit_id],
    )
    .await;
    let v = verify(&app, "").await;
    let b = broken(&v);
    assert_eq!(
        (b["table"].clone(), b["id"].clone()),
        (json!("audit_log"), json!(audit_id.to_string())),
        "{v}"
    );
    assert_eq!(
        (b["seq"].clone(), b["fault"].clone()),
        (json!(2), json!("hash_mismatch")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_verifies_the_whole_database_and_catches_what_a_chain_alone_cannot() {
    let app = spawn_app().await;
    let wallet = wallet_with_history(&app).await;
    let other = wallet_with_history(&app).await;
    let url = app.db.url.clone();
    assert_eq!(audit_cli(&url, &["checkpoint"]), (0, "null\n".to_string()));
    let (code, out) = audit_cli(&url, &["checkpoint", "--create"]);
    assert_eq!(code, 0, "{out}");
    let first: Value = serde_json::from_str(&out).expect("the checkpoint as JSON");
    assert_eq!(first["wallets"], 2, "{first}");
    assert_eq!(first["prev_root"], "00".repeat(32), "{first}");

    // Only heads that moved go into the next checkpoint, chained to the first.
    post(&app, other, json!({"type": "CREDIT", "amount": "1.00"})).await;
    let (_, out) = audit_cli(&url, &["checkpoint", "--create"]);
    let second: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (second["wallets"].clone(), second["prev_root"].clone()),
        (json!(1), first["root"].clone())
    );
    let v = verify(&app, "").await;
    assert_eq!(
        (v["ok"].clone(), v["checkpoints"].clone()),
        (json!(true), json!(2)),
        "{v}"
    );
    let since = verify(&app, &format!("?since={}", second["checkpoint_id"])).await;
    assert_eq!(since["ok"], true, "{since}");

    // The last row deleted and the head set back to the row before: a consistent chain, but not the one
    // the first checkpoint recorded.
    let c = app.db.client().await;
    let last = txn_at(&c, wallet, 4).await;
    tamper(&c, "DELETE FROM transactions WHERE txn_id = $1", &[&last]).await;
    c.execute(
        "UPDATE wallets w SET head_seq = 3, head_hash = t.hash FROM transactions t \
          WHERE w.wallet_id = $1 AND t.wallet_id = $1 AND t.chain_seq = 3",
        &[&wallet],
    )
    .await
    .expect("head set back");
    let v = verify(&app, "").await;
    let b = broken(&v);
    assert_eq!(
        (b["wallet_id"].clone(), b["table"].clone()),
        (json!(wallet), json!("wallets")),
        "{v}"
    );
    assert_eq!(b["fault"], "checkpoint_mismatch", "{v}");
    let (code, out) = audit_cli(&url, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("checkpoint {} mismatch", first["checkpoint_id"])),
        "{out}"
    );

    // A checkpoint's root edited (its trigger off) breaks the checkpoints' own chain.
    c.batch_execute(
        "ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_no_update; \
         UPDATE audit_checkpoints SET root = decode(repeat('ab', 32), 'hex') WHERE checkpoint_id = (SELECT min(checkpoint_id) FROM audit_checkpoints); \
         ALTER TABLE audit_checkpoints ENABLE TRIGGER audit_checkpoints_no_update",
    )
    .await
    .expect("root edited");
    let v = verify(&app, "").await;
    let b = broken(&v);
    assert_eq!(
        (b["table"].clone(), b["fault"].clone()),
        (json!("audit_checkpoints"), json!("checkpoint_root")),
        "{v}"
    );
    assert_eq!(b["id"], first["checkpoint_id"].to_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_before_chains_are_chained_once_at_start_and_then_verify() {
    let app = spawn_app().await;
    let wallet = wallet_with_history(&app).await;
    send(
        &app,
        reqwest::Method::PUT,
        &format!("/wallets/{wallet}/status"),
        json!({"status": "FROZEN"}),
    )
    .await;
    // As before V10: no chain columns, no wallet on the audit row, the head at genesis.
    let c = app.db.client().await;
    tamper(
        &c,
        "UPDATE transactions SET chain_seq = NULL, prev_hash = NULL, hash = NULL, chain_version = NULL WHERE wallet_id = $1",
        &[&wallet],
    )
    .await;
    tamper(
        &c,
        "UPDATE audit_log SET wallet_id = NULL, chain_seq = NULL, prev_hash = NULL, hash = NULL, chain_version = NULL \
          WHERE wallet_id = $1",
        &[&wallet],
    )
    .await;
    c.execute(
        "UPDATE wallets SET head_seq = 0, head_hash = decode(repeat('00', 32), 'hex') WHERE wallet_id = $1",
        &[&wallet],
    )
    .await
    .expect("head reset");
    let v = verify(&app, &format!("?wallet_id={wallet}")).await;
    assert_eq!(
        broken(&v)["fault"],
        "unchained",
        "unchained rows are not on the chain: {v}"
    );

    // The next start chains them (under its lock, the triggers back on after), and the one after has nothing to do.
    let again = app.another().spawn().await;
    assert_eq!(
        again
            .count("SELECT count(*) FROM transactions WHERE chain_seq IS NULL", &[])
            .await,
        0
    );
    assert_eq!(
        again
            .count("SELECT head_seq FROM wallets WHERE wallet_id = $1", &[&wallet])
            .await,
        5
    );
    let v = verify(&again, "").await;
    assert_eq!(v["ok"], true, "{v}");
    let third = app.another().spawn().await;
    assert_eq!(
        third
            .count("SELECT head_seq FROM wallets WHERE wallet_id = $1", &[&wallet])
            .await,
        5
    );
    let still = c
        .execute("UPDATE transactions SET amount = 1 WHERE wallet_id = $1", &[&wallet])
        .await;
    assert!(still.is_err(), "the append-only trigger is back on");
    // The old instance's actor held the old head: its next write re-plans from the new one.
    send(
        &app,
        reqwest::Method::PUT,
        &format!("/wallets/{wallet}/status"),
        json!({"status": "ACTIVE"}),
    )
    .await;
    post(&app, wallet, json!({"type": "DEBIT", "amount": "1.00"})).await;
    assert_eq!(verify(&third, "").await["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_may_verify_the_chains() {
    let app = spawn_app().await;
    let res = app.get_as(&app.service_token, "/admin/audit/verify").await;
    expect_problem(res, 403, "FORBIDDEN").await;
    let res = app.get("/admin/audit/verify").await;
    expect_problem(res, 401, "UNAUTHENTICATED").await;
    let res = app
        .get_as(
            &app.admin_token,
            &format!("/admin/audit/verify?wallet_id={}", Uuid::new_v4()),
        )
        .await;
    expect_problem(res, 404, "NOT_FOUND").await;
    let res = app.get_as(&app.admin_token, "/admin/audit/verify?wallet=x").await;
    expect_problem(res, 400, "VALIDATION_FAILED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_chain_switched_off_postings_and_a_hold_commit_unchained_and_leave_the_head_alone() {
    // `AUDIT_CHAIN=off` is for measuring the chain's cost: writes must still commit, on the plain
    // single-statement path (a debit, a credit) and on the careful one (a hold's audit row).
    let app = TestApp::builder().configure(|c| c.audit_chain = false).spawn().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    post(&app, wallet, json!({"type": "DEBIT", "amount": "1.00"})).await;
    post(&app, wallet, json!({"type": "CREDIT", "amount": "2.00"})).await;
    send(
        &app,
        reqwest::Method::POST,
        &format!("/wallets/{wallet}/holds"),
        json!({"amount": "5.00"}),
    )
    .await;
    assert_eq!(app.balance(wallet).await, "101.00");
    let unchained = app
        .count(
            "SELECT count(*) FROM transactions WHERE wallet_id = $1 AND type IN ('DEBIT', 'CREDIT') \
               AND reference_type IS DISTINCT FROM 'OPENING' AND chain_seq IS NULL AND hash IS NULL",
            &[&wallet],
        )
        .await;
    assert_eq!(unchained, 2, "the debit and the credit carry no link");
    let hold_rows = app
        .count(
            "SELECT count(*) FROM audit_log WHERE action = 'hold.place' AND target_type = 'hold' \
               AND chain_seq IS NULL AND hash IS NULL",
            &[],
        )
        .await;
    assert_eq!(hold_rows, 1, "the hold's audit row is written, unchained");
    // The opening entry (committed on its own) is still the chain's first row; batches did not move it.
    let head = app
        .count("SELECT head_seq FROM wallets WHERE wallet_id = $1", &[&wallet])
        .await;
    assert_eq!(head, 1);
}
