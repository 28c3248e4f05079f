//! Periodic upkeep: partitions ahead, idempotency keys pruned after their retention (and not before).
mod common;

use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_older_than_the_retention_are_pruned_and_fresh_ones_kept() {
    let app = common::spawn_app().await;
    let c = app.db.as_ref().unwrap().client().await;
    let caller = Uuid::new_v4();
    for (key, age_hours) in [("old", 49), ("day-old", 25), ("fresh", 0)] {
        c.execute(
            "INSERT INTO idempotency_keys (caller, endpoint, key, request_hash, response_status, response_body, locked_until, created_at) \
             VALUES ($1, 'POST /transfers', $2, '\\x00', 201, '{}', now(), now() - make_interval(hours => $3))",
            &[&caller, &key, &age_hours],
        )
        .await
        .unwrap();
    }
    let pruned = wallet_service::db::prune_idempotency_keys(&app.ctx.ledger.store.pool)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let left: Vec<String> = c
        .query(
            "SELECT key FROM idempotency_keys WHERE caller = $1 ORDER BY key",
            &[&caller],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec!["day-old".to_string(), "fresh".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_partitions_exist_for_the_months_ahead() {
    let app = common::spawn_app().await;
    let c = app.db.as_ref().unwrap().client().await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'transactions'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(n >= 4, "this month, one back and three ahead: {n}");
    // Creating them again is a no-op.
    assert_eq!(
        wallet_service::db::ensure_partitions(&app.ctx.ledger.store.pool)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_rows_older_than_the_retention_are_pruned() {
    let app = common::spawn_app().await;
    let c = app.db.as_ref().unwrap().client().await;
    let (old, fresh) = (Uuid::new_v4(), Uuid::new_v4());
    c.execute(
        "INSERT INTO processed_events (event_id, event_type, processed_at) VALUES ($1, 'BookingCreated', now() - interval '15 days'), \
         ($2, 'BookingCreated', now())",
        &[&old, &fresh],
    )
    .await
    .unwrap();
    assert_eq!(
        wallet_service::db::prune_inbox(&app.ctx.ledger.store.pool)
            .await
            .unwrap(),
        1
    );
    let left: Vec<Uuid> = c
        .query("SELECT event_id FROM processed_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![fresh]);
}
