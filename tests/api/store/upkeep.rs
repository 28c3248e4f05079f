//! Periodic upkeep: partitions ahead, idempotency keys pruned after their retention (and not before).
use uuid::Uuid;

use crate::helpers::app::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_older_than_the_retention_are_pruned_and_fresh_ones_kept() {
    let app = spawn_app().await;
    let c = app.db.client().await;
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
    let pruned = wallet_service::store::db::prune_idempotency_keys(app.pool())
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
    let app = spawn_app().await;
    let c = app.db.client().await;
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
        wallet_service::store::db::ensure_partitions(app.pool()).await.unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_rows_older_than_the_retention_are_pruned() {
    let app = spawn_app().await;
    let c = app.db.client().await;
    let (old, fresh) = (Uuid::new_v4(), Uuid::new_v4());
    c.execute(
        "INSERT INTO processed_events (event_id, event_type, processed_at) VALUES ($1, 'BookingCreated', now() - interval '15 days'), \
         ($2, 'BookingCreated', now())",
        &[&old, &fresh],
    )
    .await
    .unwrap();
    assert_eq!(wallet_service::store::db::prune_inbox(app.pool()).await.unwrap(), 1);
    let left: Vec<Uuid> = c
        .query("SELECT event_id FROM processed_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![fresh]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_derives_a_transactions_time_from_its_id_exactly_as_the_engine_does() {
    let app = spawn_app().await;
    let c = app.db.client().await;
    // Fresh ids, and ids from the epoch to the year 2200. (The SQL multiplies a float8 count of milliseconds,
    // exact while ms × 1000 < 2^53, i.e. until the year 2255; the 48-bit field itself runs to 10889.)
    let mut ids: Vec<Uuid> = (0..500).map(|_| Uuid::now_v7()).collect();
    for ms in [
        0u64,
        1,
        999,
        1_000,
        86_399_999,
        1_700_000_000_123,
        4_102_444_799_999,
        7_258_118_400_001,
    ] {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        b[6] = 0x70;
        b[8] = 0x80;
        ids.push(Uuid::from_bytes(b));
    }
    let rows = c
        .query(
            "SELECT id, wallet_uuid_v7_time(id) FROM unnest($1::uuid[]) AS id",
            &[&ids],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), ids.len());
    for r in rows {
        let id: Uuid = r.get(0);
        let at: chrono::DateTime<chrono::Utc> = r.get(1);
        assert_eq!(at, wallet_actors::state::txn_time(id), "{id}");
    }
    // The ledger's CHECK (`sql/V14`) writes the same arithmetic out instead of calling the function (which
    // Postgres would inline again for every INSERT statement): its expression, evaluated over the same ids,
    // holds for each id's own time and for no other.
    let check: String = c
        .query_one(
            "SELECT pg_get_expr(conbin, conrelid) FROM pg_constraint \
              WHERE conrelid = 'transactions'::regclass AND conname = 'created_at_is_txn_id_time'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!check.contains("wallet_uuid_v7_time"), "{check}");
    let times: Vec<chrono::DateTime<chrono::Utc>> = ids.iter().map(|id| wallet_actors::state::txn_time(*id)).collect();
    let off_by_one: Vec<_> = times.iter().map(|t| *t + chrono::Duration::milliseconds(1)).collect();
    for (at, holds_for) in [(&times, ids.len()), (&off_by_one, 0)] {
        let held: i64 = c
            .query_one(
                &format!(
                    "SELECT count(*) FROM unnest($1::uuid[], $2::timestamptz[]) AS x(txn_id, created_at) \
                      WHERE {check}"
                ),
                &[&ids, at],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(held, holds_for as i64, "{check}");
    }
    // And the CHECK refuses a row whose created_at is not its id's time.
    let (_, _, wallet) = app.user_with_wallet("1.00", "USD").await;
    let id = Uuid::now_v7();
    let wrong = wallet_actors::state::txn_time(id) + chrono::Duration::milliseconds(1);
    let err = c
        .execute(
            "INSERT INTO transactions (txn_id, wallet_id, amount, type, balance_after, created_at, status) \
             VALUES ($1, $2, 1, 'CREDIT', 2, $3, 'COMPLETED')",
            &[&id, &wallet, &wrong],
        )
        .await
        .expect_err("created_at must be the id's time");
    assert!(format!("{err:?}").contains("created_at_is_txn_id_time"), "{err:?}");
}
