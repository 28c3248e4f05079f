//! `POST /transactions/batch`: independent items answered as single postings would be, in order per wallet;
//! atomic batches all or nothing; one Idempotency-Key for the whole batch, exactly once through retries and
//! crashes; the item and body limits; the books under concurrent bulk and single postings on two instances.

use std::collections::HashMap;

use rand::Rng;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sha2::Digest;
use uuid::Uuid;
use wallet_actors::{Amount, Direction, IdempotencyTicket, Origin};
use wallet_service::auth::Role;
use wallet_service::service::batch::{BATCH_ENDPOINT, BatchItem, ITEM_ENDPOINT, item_key, items_hash};
use wallet_service::store::{Claim, ItemClaim};

use crate::helpers::app::{Posting, TestApp, spawn_app};
use crate::helpers::audit::Auditor;
use crate::helpers::fixtures;
use crate::helpers::replies::{expect_problem, json_of};

/// `POST /transactions/batch` with this token, body and (optional) key; the status and the exact body text.
async fn send(app: &TestApp, token: &str, key: Option<&str>, body: &Value) -> (u16, String) {
    let mut req = app
        .http
        .post(app.url("/transactions/batch"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).expect("JSON"));
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.text().await.expect("body"))
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn statuses(body: &Value) -> Vec<u64> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results in {body}"))
        .iter()
        .map(|r| r["status"].as_u64().unwrap_or(0))
        .collect()
}

async fn freeze(app: &TestApp, wallet: Uuid) {
    let res = app
        .http
        .put(app.url(&format!("/wallets/{wallet}/status")))
        .bearer_auth(&app.admin_token)
        .json(&json!({"status": "FROZEN", "reason": "test"}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
}

async fn ledger_rows(app: &TestApp, wallet: Uuid) -> i64 {
    app.count("SELECT count(*) FROM transactions WHERE wallet_id = $1", &[&wallet])
        .await
}

/// Places a hold of `amount` on the wallet (`POST /wallets/{walletId}/holds`) and expects 201; its id.
async fn hold(app: &TestApp, wallet: Uuid, amount: &str) -> String {
    let res = app
        .http
        .post(app.url(&format!("/wallets/{wallet}/holds")))
        .bearer_auth(&app.service_token)
        .json(&json!({"amount": amount}))
        .send()
        .await
        .expect("request");
    let (status, h) = json_of(res).await;
    assert_eq!(status, 201, "{h}");
    h["hold_id"].as_str().expect("hold_id").to_string()
}

/// What the wallet row holds: (balance, reserved).
async fn balance_and_reserved(app: &TestApp, wallet: Uuid) -> (String, String) {
    let c = app.db.client().await;
    let r = c
        .query_one(
            "SELECT balance::text AS balance, reserved::text AS reserved FROM wallets WHERE wallet_id = $1",
            &[&wallet],
        )
        .await
        .expect("wallet row");
    (r.get("balance"), r.get("reserved"))
}

/// Captures the whole hold (`POST /holds/{holdId}/capture`); the status.
async fn capture_all(app: &TestApp, hold: &str) -> u16 {
    app.http
        .post(app.url(&format!("/holds/{hold}/capture")))
        .bearer_auth(&app.service_token)
        .json(&json!({}))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn an_independent_batch_answers_each_item_as_a_single_posting_would() {
    let app = spawn_app().await;
    let (_, _, a) = app.user_with_wallet("100.00", "USD").await;
    let (_, _, frozen) = app.user_with_wallet("100.00", "USD").await;
    freeze(&app, frozen).await;
    let unknown = Uuid::new_v4();
    let body = json!({"items": [
        {"wallet_id": a, "amount": "30.00", "type": "DEBIT"},
        {"wallet_id": a, "amount": "100.00", "type": "DEBIT"},
        {"wallet_id": frozen, "amount": "10.00", "type": "DEBIT"},
        {"wallet_id": unknown, "amount": "5.00", "type": "CREDIT"},
        {"wallet_id": a, "amount": "10.00", "type": "DEBIT", "reference_id": "bk-1", "reference_type": "BOOKING"},
        {"wallet_id": a, "amount": "10.00", "type": "DEBIT", "reference_id": "bk-1", "reference_type": "BOOKING"},
    ]});
    let (status, text) = send(&app, &app.service_token, None, &body).await;
    assert_eq!(status, 200, "{text}");
    let b = parsed(&text);
    assert_eq!(statuses(&b), vec![201, 422, 409, 404, 201, 409], "{b}");
    assert_eq!(
        (b["applied"].as_u64(), b["refused"].as_u64()),
        (Some(2), Some(4)),
        "{b}"
    );
    let r = &b["results"];
    for (i, item) in r.as_array().expect("results").iter().enumerate() {
        assert_eq!(item["index"], i, "{item}");
    }
    assert_eq!(r[0]["transaction"]["balance_after"], "70.00", "{b}");
    // Each error is the problem document a single posting answers, with its members.
    assert_eq!(r[1]["error"]["code"], "INSUFFICIENT_FUNDS");
    assert_eq!(
        (r[1]["error"]["balance"].as_str(), r[1]["error"]["requested"].as_str()),
        (Some("70.00"), Some("100.00"))
    );
    assert_eq!(r[1]["error"]["type"], "/problems/insufficient-funds");
    assert_eq!(r[2]["error"]["code"], "WALLET_NOT_ACTIVE");
    assert_eq!(r[3]["error"]["code"], "NOT_FOUND");
    assert_eq!(r[5]["error"]["code"], "CONFLICT");
    assert_eq!(
        r[5]["error"]["txn_id"], r[4]["transaction"]["txn_id"],
        "the repeat names the one that took effect"
    );
    assert!(r[1].get("transaction").is_none() && r[0].get("error").is_none());
    assert_eq!(app.balance(a).await, "60.00");
    assert_eq!(app.balance(frozen).await, "100.00");

    // The same refusal from a single posting has the same body.
    let single = app.post_txn(frozen, json!({"amount": "10.00", "type": "DEBIT"})).await;
    let single = expect_problem(single, 409, "WALLET_NOT_ACTIVE").await;
    assert_eq!(single, r[2]["error"]);
}

#[tokio::test]
async fn items_on_one_wallet_apply_in_their_order_in_the_batch() {
    let app = spawn_app().await;
    let (_, _, w) = app.user_with_wallet("0.00", "USD").await;
    let items: Vec<Value> = [
        ("50.00", "CREDIT"),
        ("30.00", "DEBIT"),
        ("30.00", "DEBIT"),
        ("10.00", "CREDIT"),
        ("30.00", "DEBIT"),
    ]
    .iter()
    .map(|(amount, ty)| json!({"wallet_id": w, "amount": amount, "type": ty}))
    .collect();
    let (status, text) = send(&app, &app.service_token, None, &json!({"items": items})).await;
    assert_eq!(status, 200, "{text}");
    let b = parsed(&text);
    assert_eq!(statuses(&b), vec![201, 201, 422, 201, 201], "{b}");
    let after: Vec<&str> = b["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["transaction"]["balance_after"].as_str())
        .collect();
    assert_eq!(after, vec!["50.00", "20.00", "30.00", "0.00"], "{b}");
    assert_eq!(b["results"][2]["error"]["balance"], "20.00");
    // The ledger holds them in batch order too.
    let c = app.db.client().await;
    let rows: Vec<String> = c
        .query(
            "SELECT balance_after::text FROM transactions WHERE wallet_id = $1 ORDER BY txn_id",
            &[&w],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, vec!["50.00", "20.00", "30.00", "0.00"]);
}

#[tokio::test]
async fn an_atomic_batch_with_one_bad_item_applies_nothing() {
    let app = spawn_app().await;
    let (_, _, a) = app.user_with_wallet("100.00", "USD").await;
    let (_, _, b) = app.user_with_wallet("100.00", "USD").await;
    let before = (ledger_rows(&app, a).await, ledger_rows(&app, b).await);
    let body = json!({"atomic": true, "items": [
        {"wallet_id": a, "amount": "10.00", "type": "DEBIT"},
        {"wallet_id": b, "amount": "10.00", "type": "CREDIT"},
        {"wallet_id": b, "amount": "500.00", "type": "DEBIT"},
        {"wallet_id": Uuid::new_v4(), "amount": "1.00", "type": "CREDIT"},
    ]});
    let res = app
        .http
        .post(app.url("/transactions/batch"))
        .bearer_auth(&app.service_token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let problem = expect_problem(res, 422, "BATCH_REFUSED").await;
    let refused = problem["results"].as_array().expect("results");
    assert_eq!(refused.len(), 2, "{problem}");
    assert_eq!(
        (refused[0]["index"].as_u64(), refused[0]["status"].as_u64()),
        (Some(2), Some(422))
    );
    assert_eq!(refused[0]["error"]["code"], "INSUFFICIENT_FUNDS");
    // Judged after the credit before it in the batch: 110.00.
    assert_eq!(refused[0]["error"]["balance"], "110.00");
    assert_eq!(
        (refused[1]["index"].as_u64(), refused[1]["status"].as_u64()),
        (Some(3), Some(404))
    );
    assert_eq!(
        (app.balance(a).await, app.balance(b).await),
        ("100.00".into(), "100.00".into())
    );
    assert_eq!(
        (ledger_rows(&app, a).await, ledger_rows(&app, b).await),
        before,
        "nothing was written"
    );

    // A repeated reference is refused in an atomic batch too (judged by the store), and nothing moves.
    let body = json!({"atomic": true, "items": [
        {"wallet_id": a, "amount": "10.00", "type": "DEBIT", "reference_id": "bk-9"},
        {"wallet_id": b, "amount": "10.00", "type": "DEBIT"},
    ]});
    assert_eq!(
        app.post_txn(a, json!({"amount": "1.00", "type": "DEBIT", "reference_id": "bk-9"}))
            .await
            .status(),
        201
    );
    let (status, text) = send(&app, &app.service_token, None, &body).await;
    assert_eq!(status, 422, "{text}");
    let p = parsed(&text);
    assert_eq!(p["results"][0]["error"]["code"], "CONFLICT", "{p}");
    assert_eq!(
        (app.balance(a).await, app.balance(b).await),
        ("99.00".into(), "100.00".into())
    );
}

#[tokio::test]
async fn an_atomic_batch_commits_every_item_in_one_transaction() {
    let app = spawn_app().await;
    let (_, _, a) = app.user_with_wallet("100.00", "USD").await;
    let (_, _, b) = app.user_with_wallet("5.00", "USD").await;
    // The actors know the wallets before the batch; they must not plan on their old state afterwards.
    assert_eq!(
        app.post_txn(a, json!({"amount": "1.00", "type": "CREDIT"}))
            .await
            .status(),
        201
    );
    let body = json!({"atomic": true, "items": [
        {"wallet_id": a, "amount": "40.00", "type": "DEBIT", "description": "hotel"},
        {"wallet_id": b, "amount": "40.00", "type": "CREDIT"},
        {"wallet_id": b, "amount": "45.00", "type": "DEBIT"},
    ]});
    let (status, text) = send(&app, &app.service_token, None, &body).await;
    assert_eq!(status, 201, "{text}");
    let r = parsed(&text);
    assert_eq!(statuses(&r), vec![201, 201, 201], "{r}");
    assert_eq!(r["results"][0]["transaction"]["balance_after"], "61.00");
    assert_eq!(r["results"][2]["transaction"]["balance_after"], "0.00");
    assert_eq!(
        (app.balance(a).await, app.balance(b).await),
        ("61.00".into(), "0.00".into())
    );
    // The engine sees the new balance at once.
    let (status, body) = json_of(app.post_txn(a, json!({"amount": "61.00", "type": "DEBIT"})).await).await;
    assert_eq!((status, body["balance_after"].as_str()), (201, Some("0.00")), "{body}");
    assert!(Auditor::connect(&app.db.url).await.bank_breaks().await.is_empty());
}

#[tokio::test]
async fn a_batch_replayed_under_its_key_returns_the_same_bytes_and_moves_nothing_twice() {
    let app = spawn_app().await;
    let (_, _, a) = app.user_with_wallet("50.00", "USD").await;
    let (_, _, b) = app.user_with_wallet("50.00", "USD").await;
    let body = json!({"items": [
        {"wallet_id": a, "amount": "20.00", "type": "DEBIT"},
        {"wallet_id": a, "amount": "40.00", "type": "DEBIT"},
        {"wallet_id": b, "amount": "5.00", "type": "CREDIT", "metadata": {"z": 1, "a": [true]}},
        {"wallet_id": Uuid::new_v4(), "amount": "5.00", "type": "CREDIT"},
    ]});
    let first = send(&app, &app.service_token, Some("batch-1"), &body).await;
    assert_eq!(first.0, 200, "{}", first.1);
    let again = send(&app, &app.service_token, Some("batch-1"), &body).await;
    assert_eq!(again, first, "a replay is the first reply, byte for byte");
    assert_eq!(
        (app.balance(a).await, app.balance(b).await),
        ("30.00".into(), "55.00".into())
    );
    assert_eq!(ledger_rows(&app, a).await, 2);

    // Atomic too: the reply written in the batch's transaction is replayed.
    let atomic = json!({"atomic": true, "items": [{"wallet_id": b, "amount": "5.00", "type": "DEBIT"}]});
    let first = send(&app, &app.service_token, Some("batch-2"), &atomic).await;
    assert_eq!(first.0, 201, "{}", first.1);
    assert_eq!(send(&app, &app.service_token, Some("batch-2"), &atomic).await, first);
    assert_eq!(app.balance(b).await, "50.00");
    // And a refused atomic batch's 422.
    let refused = json!({"atomic": true, "items": [{"wallet_id": b, "amount": "500.00", "type": "DEBIT"}]});
    let first = send(&app, &app.service_token, Some("batch-3"), &refused).await;
    assert_eq!(first.0, 422, "{}", first.1);
    assert_eq!(send(&app, &app.service_token, Some("batch-3"), &refused).await, first);
}

#[tokio::test]
async fn the_same_key_with_another_batch_is_refused_as_reused() {
    let app = spawn_app().await;
    let (_, _, a) = app.user_with_wallet("50.00", "USD").await;
    let one = json!({"items": [{"wallet_id": a, "amount": "1.00", "type": "DEBIT"}]});
    let other = json!({"items": [{"wallet_id": a, "amount": "2.00", "type": "DEBIT"}]});
    assert_eq!(send(&app, &app.service_token, Some("k"), &one).await.0, 200);
    let (status, text) = send(&app, &app.service_token, Some("k"), &other).await;
    assert_eq!(
        (status, parsed(&text)["code"].as_str()),
        (422, Some("IDEMPOTENCY_KEY_REUSED")),
        "{text}"
    );
    assert_eq!(app.balance(a).await, "49.00");
}

#[tokio::test]
async fn a_batch_of_1001_items_is_refused_and_1000_items_with_the_longest_fields_fit() {
    let app = spawn_app().await;
    let wallets = app.wallet_ids(10, "0.00").await;
    let item = |i: usize| {
        json!({"wallet_id": wallets[i % wallets.len()], "amount": "9999.99", "type": "CREDIT",
               "description": "d".repeat(500), "reference_id": format!("{i:0>100}"),
               "reference_type": "t".repeat(50), "metadata": {"i": i}})
    };
    let too_many: Vec<Value> = (0..1001).map(item).collect();
    let res = app
        .http
        .post(app.url("/transactions/batch"))
        .bearer_auth(&app.service_token)
        .header("Idempotency-Key", "big")
        .json(&json!({"items": too_many}))
        .send()
        .await
        .expect("request");
    let p = expect_problem(res, 400, "VALIDATION_FAILED").await;
    assert_eq!(p["errors"][0]["field"], "items", "{p}");

    let most: Vec<Value> = (0..1000).map(item).collect();
    let body = json!({"items": most});
    assert!(serde_json::to_vec(&body).expect("JSON").len() > wallet_service::http::MAX_BODY_BYTES * 10);
    // The 400 did not consume the key.
    let (status, text) = send(&app, &app.service_token, Some("big"), &body).await;
    assert_eq!(status, 200, "{}", &text[..text.len().min(2000)]);
    let b = parsed(&text);
    assert_eq!((b["applied"].as_u64(), b["refused"].as_u64()), (Some(1000), Some(0)));
    assert_eq!(app.balance(wallets[0]).await, "999999.00");
    // Every other route keeps its 64 KiB limit.
    let res = app
        .post_txn(
            wallets[0],
            json!({"amount": "1.00", "type": "CREDIT", "description": "d".repeat(70_000)}),
        )
        .await;
    expect_problem(res, 413, "PAYLOAD_TOO_LARGE").await;
}

#[tokio::test]
async fn only_service_and_admin_callers_post_batches() {
    let app = spawn_app().await;
    let (user, company, w) = app.user_with_wallet("10.00", "USD").await;
    let body = json!({"items": [{"wallet_id": w, "amount": "1.00", "type": "CREDIT"}]});
    let token = fixtures::token(Role::User, user, company);
    let (status, text) = send(&app, &token, None, &body).await;
    assert_eq!(
        (status, parsed(&text)["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "{text}"
    );
    let (status, text) = send(&app, &app.admin_token, None, &body).await;
    assert_eq!(status, 200, "{text}");
    // An invalid item refuses the whole batch, naming it.
    let bad = json!({"items": [
        {"wallet_id": w, "amount": "1.00", "type": "CREDIT"},
        {"wallet_id": w, "amount": "1.001", "type": "CREDIT"}]});
    let (status, text) = send(&app, &app.admin_token, None, &bad).await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(parsed(&text)["errors"][0]["field"], "items[1].amount", "{text}");
    let empty = json!({"items": []});
    assert_eq!(send(&app, &app.admin_token, None, &empty).await.0, 400);
    assert_eq!(app.balance(w).await, "11.00");
}

/// What one item of the crash test posts: the same posting the HTTP item below describes.
fn debit_item(wallet_id: Uuid) -> BatchItem {
    BatchItem {
        wallet_id,
        posting: Posting {
            direction: Direction::Debit,
            amount: Amount::parse_positive("10.00").expect("amount"),
            description: None,
            reference_id: None,
            reference_type: None,
            metadata: None,
        },
    }
}

#[tokio::test]
async fn a_batch_retried_after_a_crash_mid_batch_applies_nothing_twice() {
    let app = spawn_app().await;
    let (sub, company) = (Uuid::new_v4(), Uuid::new_v4());
    let token = fixtures::token(Role::Service, sub, company);
    let wallets = app.wallet_ids(3, "100.00").await;
    let body = json!({"items": wallets.iter().map(|w| json!({"wallet_id": w, "amount": "10.00", "type": "DEBIT"})).collect::<Vec<_>>()});
    let raw = serde_json::to_vec(&body).expect("JSON");
    let key = "crash-1";

    // A first attempt, by hand, as the service runs it: the batch key, then the items' keys in one go...
    let mut h = sha2::Sha256::new();
    h.update(b"/transactions/batch");
    h.update([0]);
    h.update(&raw);
    let service = app.service();
    let claim = app
        .store()
        .claim_idempotency(sub, BATCH_ENDPOINT, key, &h.finalize())
        .await
        .expect("claim");
    assert!(matches!(claim, Claim::Claimed { .. }));
    let items: Vec<BatchItem> = wallets.iter().map(|w| debit_item(*w)).collect();
    let keys: Vec<String> = (0..3).map(|i| item_key(key, i)).collect();
    let claims = app
        .store()
        .claim_batch_items(sub, ITEM_ENDPOINT, &keys, &items_hash(&items))
        .await
        .expect("item claims");
    // ... then items 0 and 1 commit (each with its reply in its own commit), and the process dies before
    // item 2 and before the batch's reply; its claims stay behind, the batch key's lease runs out.
    let mut committed = Vec::new();
    for i in 0..2 {
        let ItemClaim::Claimed { token: claim_token } = claims[i] else {
            panic!("{:?}", claims[i])
        };
        let origin = Origin {
            actor_id: sub,
            role: "service".into(),
            idempotency: Some(IdempotencyTicket {
                caller: sub,
                endpoint: ITEM_ENDPOINT.into(),
                key: keys[i].clone(),
                token: claim_token,
            }),
            inbox_event: None,
        };
        let entry = service
            .post(wallets[i], items[i].posting.clone(), origin)
            .await
            .expect("item commits");
        committed.push(entry.txn_id);
    }
    let c = app.db.client().await;
    c.execute(
        "UPDATE idempotency_keys SET locked_until = now() - interval '1 second' WHERE endpoint = $1 AND key = $2",
        &[&BATCH_ENDPOINT, &key],
    )
    .await
    .expect("the batch key's lease runs out");

    // The client retries with the same key: items 0 and 1 are replayed from their keys, item 2 runs once.
    let (status, text) = send(&app, &token, Some(key), &body).await;
    assert_eq!(status, 200, "{text}");
    let b = parsed(&text);
    assert_eq!(statuses(&b), vec![201, 201, 201], "{b}");
    for (i, txn) in committed.iter().enumerate() {
        assert_eq!(b["results"][i]["transaction"]["txn_id"], txn.to_string(), "{b}");
    }
    for w in &wallets {
        assert_eq!(app.balance(*w).await, "90.00");
        assert_eq!(ledger_rows(&app, *w).await, 2, "the opening credit and one debit");
    }
    // Settled now: the whole reply is the batch key's.
    assert_eq!(send(&app, &token, Some(key), &body).await, (status, text));
    assert!(Auditor::connect(&app.db.url).await.bank_breaks().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_books_balance_under_concurrent_bulk_and_single_postings_from_two_instances() {
    const WALLETS: usize = 12;
    const ROUNDS: usize = 12;
    let app1 = spawn_app().await;
    let app2 = app1.another().spawn().await;
    let wallets = app1.wallet_ids(WALLETS, "100.00").await;
    let token = app1.service_token.clone();

    let random_items = |n: usize| -> Vec<Value> {
        let mut rng = rand::rng();
        (0..n)
            .map(|_| {
                let w = wallets[rng.random_range(0..WALLETS)];
                let cents: i64 = rng.random_range(1..4_000);
                let ty = if rng.random_bool(0.6) { "DEBIT" } else { "CREDIT" };
                json!({"wallet_id": w, "amount": Decimal::new(cents, 2).to_string(), "type": ty})
            })
            .collect()
    };
    let mut tasks = Vec::new();
    for worker in 0..6usize {
        let app = if worker % 2 == 0 { &app1 } else { &app2 };
        let (http, url, token) = (app.http.clone(), app.url("/transactions/batch"), token.clone());
        let batches: Vec<Value> = (0..ROUNDS)
            .map(|r| json!({"atomic": (worker + r) % 3 == 0, "items": random_items(40)}))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut applied = 0u64;
            for (r, body) in batches.into_iter().enumerate() {
                let res = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("Idempotency-Key", format!("w{worker}-r{r}"))
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                let status = res.status().as_u16();
                let b: Value = res.json().await.expect("JSON");
                match status {
                    200 => applied += b["applied"].as_u64().unwrap_or(0),
                    201 => applied += b["results"].as_array().map_or(0, |r| r.len() as u64),
                    422 => assert_eq!(b["code"], "BATCH_REFUSED", "{b}"),
                    other => panic!("batch answered {other}: {b}"),
                }
            }
            applied
        }));
    }
    for worker in 0..4usize {
        let app = if worker % 2 == 0 { &app2 } else { &app1 };
        let (http, base, token) = (app.http.clone(), app.address.clone(), token.clone());
        let singles = random_items(ROUNDS * 8);
        tasks.push(tokio::spawn(async move {
            let mut applied = 0u64;
            for item in singles {
                let w = item["wallet_id"].as_str().expect("id").to_string();
                let res = http
                    .post(format!("{base}/wallets/{w}/transactions"))
                    .bearer_auth(&token)
                    .json(&json!({"amount": item["amount"], "type": item["type"]}))
                    .send()
                    .await
                    .expect("request");
                match res.status().as_u16() {
                    201 => applied += 1,
                    422 => {}
                    other => panic!("a single posting answered {other}"),
                }
            }
            applied
        }));
    }
    let mut applied = 0;
    for t in tasks {
        applied += t.await.expect("worker");
    }
    let auditor = Auditor::connect(&app1.db.url).await;
    assert_eq!(auditor.bank_breaks().await, Vec::<String>::new());
    let rows = auditor
        .count(
            "SELECT count(*) FROM transactions WHERE reference_type IS DISTINCT FROM 'OPENING'",
            &[],
        )
        .await;
    assert_eq!(
        rows as u64, applied,
        "every applied item is one ledger row, and only those"
    );
    let negative = auditor
        .count("SELECT count(*) FROM wallets WHERE balance < 0", &[])
        .await;
    assert_eq!(negative, 0);
    let mut by_wallet: HashMap<Uuid, Decimal> = HashMap::new();
    for w in &wallets {
        by_wallet.insert(*w, auditor.balance(*w).await);
    }
    assert!(applied > 0, "{by_wallet:?}");
    // Atomic batches are planned outside the actors and independent ones through them: every wallet's hash
    // chain still verifies.
    let (status, verify) = json_of(app1.get_as(&app1.admin_token, "/admin/audit/verify").await).await;
    assert_eq!(status, 200, "{verify}");
    assert_eq!(verify["ok"], true, "{verify}");
}

#[tokio::test]
async fn an_atomic_batch_cannot_debit_money_a_hold_reserves() {
    let app = spawn_app().await;
    let (_, _, w) = app.user_with_wallet("100.00", "USD").await;
    let held = hold(&app, w, "80.00").await;
    let before = ledger_rows(&app, w).await;

    // 100.00 on the wallet, 80.00 of it reserved: a debit of 30.00 would spend reserved money.
    let body = json!({"atomic": true, "items": [
        {"wallet_id": w, "amount": "30.00", "type": "DEBIT"},
    ]});
    let (status, text) = send(&app, &app.service_token, None, &body).await;
    assert_eq!(status, 422, "{text}");
    let p = parsed(&text);
    assert_eq!(p["code"], "BATCH_REFUSED", "{p}");
    assert_eq!(p["results"][0]["error"]["code"], "INSUFFICIENT_FUNDS", "{p}");
    assert_eq!(
        p["results"][0]["error"]["balance"], "20.00",
        "judged against the available balance: {p}"
    );
    assert_eq!(ledger_rows(&app, w).await, before, "nothing was written");

    // What is not reserved may be debited, and the commit leaves the reservation as it was.
    let body = json!({"atomic": true, "items": [
        {"wallet_id": w, "amount": "15.00", "type": "DEBIT"},
        {"wallet_id": w, "amount": "5.00", "type": "DEBIT"},
    ]});
    let (status, text) = send(&app, &app.service_token, None, &body).await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(balance_and_reserved(&app, w).await, ("80.00".into(), "80.00".into()));
    let (status, text) = send(
        &app,
        &app.service_token,
        None,
        &json!({"atomic": true, "items": [{"wallet_id": w, "amount": "0.01", "type": "DEBIT"}]}),
    )
    .await;
    assert_eq!(status, 422, "nothing is left that is not reserved: {text}");

    // The hold still has all it reserved: its capture takes it.
    assert_eq!(capture_all(&app, &held).await, 201);
    assert_eq!(balance_and_reserved(&app, w).await, ("0.00".into(), "0.00".into()));
    assert!(Auditor::connect(&app.db.url).await.bank_breaks().await.is_empty());
}

#[tokio::test]
async fn an_independent_batch_cannot_debit_money_a_hold_reserves() {
    let app = spawn_app().await;
    let (_, _, w) = app.user_with_wallet("100.00", "USD").await;
    let held = hold(&app, w, "80.00").await;
    let body = json!({"items": [
        {"wallet_id": w, "amount": "30.00", "type": "DEBIT"},
        {"wallet_id": w, "amount": "20.00", "type": "DEBIT"},
        {"wallet_id": w, "amount": "0.01", "type": "DEBIT"},
    ]});
    let (status, text) = send(&app, &app.service_token, None, &body).await;
    assert_eq!(status, 200, "{text}");
    let b = parsed(&text);
    assert_eq!(statuses(&b), vec![422, 201, 422], "{b}");
    assert_eq!(b["results"][0]["error"]["code"], "INSUFFICIENT_FUNDS", "{b}");
    assert_eq!(
        b["results"][0]["error"]["balance"], "20.00",
        "judged against the available balance: {b}"
    );
    assert_eq!(b["results"][2]["error"]["balance"], "0.00", "{b}");
    assert_eq!((b["applied"].as_u64(), b["refused"].as_u64()), (Some(1), Some(2)));
    assert_eq!(balance_and_reserved(&app, w).await, ("80.00".into(), "80.00".into()));
    assert_eq!(capture_all(&app, &held).await, 201);
    assert_eq!(balance_and_reserved(&app, w).await, ("0.00".into(), "0.00".into()));
}
