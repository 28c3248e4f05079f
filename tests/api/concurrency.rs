//! Money under concurrency: many debits on one wallet, and two app instances (two engines, each with its
//! own wallet actors) moving money over one database.

use std::collections::HashMap;

use futures_util::StreamExt;
use rand::Rng;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::replies::json_of;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_debits_on_150_succeed_exactly_150_times() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("150.00", "USD").await;
    let replies = futures_util::future::join_all(
        (0..200)
            .map(|_| async { json_of(app.post_txn(wallet, json!({"amount": "1.00", "type": "DEBIT"})).await).await }),
    )
    .await;
    let mut created = 0;
    let mut refused = 0;
    let mut balances_after = Vec::new();
    for (status, body) in &replies {
        match (*status, body["code"].as_str()) {
            (201, _) => {
                created += 1;
                balances_after.push(body["balance_after"].as_str().unwrap().to_string());
            }
            (422, Some("INSUFFICIENT_FUNDS")) => refused += 1,
            other => panic!("unexpected reply {other:?}: {body}"),
        }
    }
    assert_eq!((created, refused), (150, 50));
    // Each success saw its own balance: 149.00 down to 0.00, each once.
    balances_after.sort_by_key(|b| b.parse::<Decimal>().unwrap());
    let expected: Vec<String> = (0..150).map(|i| format!("{i}.00")).collect();
    assert_eq!(balances_after, expected);
    assert_eq!(app.balance(wallet).await, "0.00");
    let rows = app
        .count(
            "SELECT count(*) FROM transactions WHERE wallet_id = $1 AND type = 'DEBIT' AND status = 'COMPLETED'",
            &[&wallet],
        )
        .await;
    assert_eq!(rows, 150);
    let refusals = app
        .count(
            "SELECT count(*) FROM audit_log WHERE target_id = $1 AND outcome = 'INSUFFICIENT_FUNDS'",
            &[&wallet.to_string()],
        )
        .await;
    assert_eq!(refusals, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_on_one_instance_sees_a_credit_made_through_another() {
    let app1 = spawn_app().await;
    let app2 = app1.another().spawn().await;
    let (_, _, wallet) = app1.user_with_wallet("0.00", "USD").await;
    // app1's actor holds the wallet at 0.00.
    let res = app1.post_txn(wallet, json!({"amount": "1.00", "type": "DEBIT"})).await;
    assert_eq!(res.status(), 422);
    let res = app2
        .post_txn(wallet, json!({"amount": "10.00", "type": "CREDIT"}))
        .await;
    assert_eq!(res.status(), 201);
    // app1 must not refuse on its stale view: the refusal is re-judged on the committed row.
    let (status, body) = json_of(app1.post_txn(wallet, json!({"amount": "4.00", "type": "DEBIT"})).await).await;
    assert_eq!((status, body["balance_after"].as_str()), (201, Some("6.00")), "{body}");
    // And app2's actor, now stale, cannot overdraw: the guarded write makes it reload.
    let res = app2.post_txn(wallet, json!({"amount": "10.00", "type": "DEBIT"})).await;
    assert_eq!(res.status(), 422);
    let (status, body) = json_of(app2.post_txn(wallet, json!({"amount": "6.00", "type": "DEBIT"})).await).await;
    assert_eq!((status, body["balance_after"].as_str()), (201, Some("0.00")), "{body}");
    assert_eq!(app1.balance(wallet).await, "0.00");
}

/// What became of one transfer request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    Done,
    NoFunds,
    Busy,
}

async fn random_transfer(app: &TestApp, from: Uuid, to: Uuid, cents: i64) -> Outcome {
    let amount = Decimal::new(cents, 2).to_string();
    let res = app
        .http
        .post(app.url("/transfers"))
        .bearer_auth(&app.service_token)
        .json(&json!({"from_wallet_id": from, "to_wallet_id": to, "amount": amount}))
        .send()
        .await
        .expect("every request gets an answer");
    let (status, body): (u16, Value) = json_of(res).await;
    match (status, body["code"].as_str()) {
        (201, _) => {
            assert_eq!(body["transactions"][0]["wallet_id"], from.to_string());
            assert_eq!(body["transactions"][1]["wallet_id"], to.to_string());
            Outcome::Done
        }
        (422, Some("INSUFFICIENT_FUNDS")) => Outcome::NoFunds,
        (503, Some("UNAVAILABLE")) => Outcome::Busy,
        other => panic!("unexpected reply {other:?}: {body}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_moving_money_concurrently_keep_the_bank_invariant() {
    const WALLETS: usize = 20;
    const TRANSFERS: usize = 300;
    const IN_FLIGHT: usize = 16;
    let app1 = spawn_app().await;
    let app2 = app1.another().spawn().await;
    let mut wallets = Vec::with_capacity(WALLETS);
    for _ in 0..WALLETS {
        wallets.push(app1.user_with_wallet("100.00", "USD").await.2);
    }
    // Both instances know every wallet before the storm (each has its own actor per wallet).
    for (i, w) in wallets.iter().enumerate() {
        let app = if i % 2 == 0 { &app2 } else { &app1 };
        assert_eq!(
            app.post_txn(*w, json!({"amount": "0.01", "type": "CREDIT"}))
                .await
                .status(),
            201
        );
        let app = if i % 2 == 0 { &app1 } else { &app2 };
        assert_eq!(
            app.post_txn(*w, json!({"amount": "0.01", "type": "DEBIT"}))
                .await
                .status(),
            201
        );
    }

    let mut rng = rand::rng();
    let plan: Vec<(usize, usize, i64)> = (0..TRANSFERS)
        .map(|_| {
            let from = rng.random_range(0..WALLETS);
            let to = (from + rng.random_range(1..WALLETS)) % WALLETS;
            // Mostly small amounts, sometimes more than a wallet holds.
            let cents = if rng.random_bool(0.1) {
                rng.random_range(10_000..30_000)
            } else {
                rng.random_range(1..4_000)
            };
            (from, to, cents)
        })
        .collect();
    let outcomes: Vec<Outcome> = futures_util::stream::iter(plan.iter().enumerate())
        .map(|(i, &(from, to, cents))| {
            let app = if i % 2 == 0 { &app1 } else { &app2 };
            random_transfer(app, wallets[from], wallets[to], cents)
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut tally: HashMap<Outcome, usize> = HashMap::new();
    for o in &outcomes {
        *tally.entry(*o).or_default() += 1;
    }
    eprintln!("transfer outcomes: {tally:?}");
    let done = tally.get(&Outcome::Done).copied().unwrap_or(0);
    assert!(done >= TRANSFERS / 2, "most transfers go through: {tally:?}");

    let c = app1.db.client().await;
    let total: String = c
        .query_one("SELECT sum(balance)::text FROM wallets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, "2000.00", "money is neither created nor destroyed ({tally:?})");
    let negative: i64 = c
        .query_one("SELECT count(*) FROM wallets WHERE balance < 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(negative, 0);
    let drift = c
        .query(
            "SELECT w.wallet_id, w.balance::text, (w.initial_balance + COALESCE(sum(CASE \
                 WHEN t.type IN ('CREDIT', 'TRANSFER_IN') THEN t.amount \
                 WHEN t.type IN ('DEBIT', 'TRANSFER_OUT') THEN -t.amount END), 0))::text AS derived \
             FROM wallets w LEFT JOIN transactions t ON t.wallet_id = w.wallet_id AND t.status = 'COMPLETED' \
             GROUP BY w.wallet_id, w.balance, w.initial_balance \
             HAVING w.balance <> w.initial_balance + COALESCE(sum(CASE \
                 WHEN t.type IN ('CREDIT', 'TRANSFER_IN') THEN t.amount \
                 WHEN t.type IN ('DEBIT', 'TRANSFER_OUT') THEN -t.amount END), 0)",
            &[],
        )
        .await
        .unwrap();
    let drift: Vec<(Uuid, String, String)> = drift.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert!(
        drift.is_empty(),
        "balance differs from initial + credits - debits: {drift:?}"
    );
    // Every 201 is one TRANSFER_OUT and one TRANSFER_IN; a 422 or 503 left no row behind.
    let legs = c
        .query(
            "SELECT count(*) FILTER (WHERE type = 'TRANSFER_OUT'), count(*) FILTER (WHERE type = 'TRANSFER_IN') \
             FROM transactions",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (legs[0].get::<_, i64>(0), legs[0].get::<_, i64>(1)),
        (done as i64, done as i64),
        "{tally:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_debiting_the_same_wallets_concurrently_never_overdraw_or_lose_a_write() {
    const WALLETS: usize = 8;
    const DEBITS: usize = 400;
    const IN_FLIGHT: usize = 32;
    let app1 = spawn_app().await;
    let app2 = app1.another().spawn().await;
    let mut wallets = Vec::with_capacity(WALLETS);
    for _ in 0..WALLETS {
        wallets.push(app1.user_with_wallet("20.00", "USD").await.2);
    }
    let mut rng = rand::rng();
    let plan: Vec<(usize, i64, bool)> = (0..DEBITS)
        .map(|_| {
            (
                rng.random_range(0..WALLETS),
                rng.random_range(1..150),
                rng.random_bool(0.2),
            )
        })
        .collect();
    // Both instances hold an actor for each wallet and batch their debits; their commits race on the rows.
    let replies: Vec<(usize, u16, Value)> = futures_util::stream::iter(plan.iter().enumerate())
        .map(|(i, &(w, cents, credit))| {
            let app = if i % 2 == 0 { &app1 } else { &app2 };
            let kind = if credit { "CREDIT" } else { "DEBIT" };
            let amount = format!("{}.{:02}", cents / 100, cents % 100);
            let wallet = wallets[w];
            async move {
                let (status, body) = json_of(app.post_txn(wallet, json!({"amount": amount, "type": kind})).await).await;
                (w, status, body)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let c = app1.db.client().await;
    let mut expected = vec![Decimal::new(2000, 2); WALLETS];
    let mut created = 0;
    for (w, status, body) in &replies {
        match (*status, body["code"].as_str()) {
            (201, _) => {
                created += 1;
                let amount: Decimal = body["amount"].as_str().unwrap().parse().unwrap();
                match body["type"].as_str() {
                    Some("CREDIT") => expected[*w] += amount,
                    _ => expected[*w] -= amount,
                }
                // Every 201 is a committed row.
                let txn: Uuid = body["txn_id"].as_str().unwrap().parse().unwrap();
                let n: i64 = c
                    .query_one("SELECT count(*) FROM transactions WHERE txn_id = $1", &[&txn])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(n, 1, "{body}");
            }
            (422, Some("INSUFFICIENT_FUNDS")) => {}
            other => panic!("unexpected reply {other:?}: {body}"),
        }
    }
    for (w, want) in wallets.iter().zip(&expected) {
        let balance: Decimal = app1.balance(*w).await.parse().unwrap();
        assert_eq!(
            balance, *want,
            "wallet {w}: balance is initial + the 201s, no write lost or doubled"
        );
        assert!(balance >= Decimal::ZERO);
    }
    let rows = app1.count("SELECT count(*) FROM transactions", &[]).await;
    assert_eq!(
        rows,
        created + WALLETS as i64,
        "the 201s and each wallet's opening balance"
    );
    // The race was real: commits of one instance moved wallets under the other's batches.
    let metrics = app1.text("/metrics").await;
    let conflicts: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wallet_version_conflicts_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(conflicts > 0.0, "no version conflict happened:\n{metrics}");
    for app in [&app1, &app2] {
        assert_eq!(
            app.store().committer.fallbacks(),
            0,
            "version conflicts are re-planned, not refused statements"
        );
    }
}
