//! The shared wallet cache over a real Redis: two instances over one database see each other's commits
//! through it, and an older version never overwrites a newer one.
use redis::AsyncCommands;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::app::{TestApp, spawn_app};

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `GET /wallets/{user}` as the app's admin.
async fn wallet_of(app: &TestApp, user: Uuid) -> Value {
    app.get_as(&app.admin_token, &format!("/wallets/{user}"))
        .await
        .json()
        .await
        .unwrap()
}

/// A wallet of 100.00 that `a` has read (and cached) and `b` has then debited by 10.00; (user, wallet).
async fn read_on_one_debit_on_the_other(a: &TestApp, b: &TestApp) -> (Uuid, Uuid) {
    let (user, _, wallet) = a.user_with_wallet("100.00", "USD").await;
    assert_eq!(wallet_of(a, user).await["balance"], "100.00");
    assert_eq!(
        b.post_txn(wallet, json!({"amount": "10.00", "type": "DEBIT"}))
            .await
            .status(),
        201
    );
    (user, wallet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_on_one_instance_is_read_from_the_shared_cache_by_another() {
    let a = TestApp::builder().redis(&redis_url()).spawn().await;
    let b = a.another().redis(&redis_url()).spawn().await;
    let db = a.db.clone();
    let (user, wallet) = read_on_one_debit_on_the_other(&a, &b).await;

    // B's commit wrote the new state to Redis under the database's namespace.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("wallet-service:{}:wallet:{wallet}", db.name);
    let mut cached: Option<String> = None;
    for _ in 0..50 {
        cached = conn.get(&key).await.unwrap();
        if cached.as_deref().is_some_and(|c| c.contains("\"90.00\"")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let cached: Value = serde_json::from_str(&cached.expect("cached entry")).unwrap();
    assert_eq!(cached["balance"], "90.00");
    assert_eq!(wallet_of(&a, user).await["balance"], "90.00");

    // Reads are served from the cache: a change made behind the service's back is not seen until the
    // next commit writes a newer version.
    let c = db.client().await;
    c.execute("UPDATE wallets SET balance = 1.00 WHERE wallet_id = $1", &[&wallet])
        .await
        .unwrap();
    assert_eq!(wallet_of(&a, user).await["balance"], "90.00");

    let keys: Vec<String> = conn.keys(format!("wallet-service:{}:*", db.name)).await.unwrap();
    if !keys.is_empty() {
        let _: i64 = conn.del(keys).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_another_instances_commit_is_seen_once_the_local_entry_expires() {
    let a = spawn_app().await;
    let b = a.another().spawn().await;
    let (user, _) = read_on_one_debit_on_the_other(&a, &b).await;
    tokio::time::sleep(wallet_service::cache::LOCAL_CACHE_TTL + std::time::Duration::from_millis(200)).await;
    assert_eq!(wallet_of(&a, user).await["balance"], "90.00");
}
