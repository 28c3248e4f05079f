mod common;

use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_is_committed_and_answered_with_201() {
    let app = common::spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let res = app.post_txn(wallet, json!({"amount": "25.50", "type": "DEBIT"})).await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["balance_after"], "74.50");
    assert_eq!(app.balance(wallet).await, "74.50");
}
