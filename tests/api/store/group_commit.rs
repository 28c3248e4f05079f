//! The shared committer: batches of several wallets committed together (plain ones as one statement, the
//! others each in a savepoint of one transaction), so a refused batch never fails its neighbours and every
//! accepted one is durable before its reply.
use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;
use wallet_actors::store::{Batch, CommitError};
use wallet_actors::{InboxEvent, Origin};
use wallet_service::store::GroupCommitter;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::lock::RowLock;

use super::{batch, committed, planned_debit};

/// A committer of the test's own with one committer task over the app's store, so that batches queue up
/// behind a parked one and form a group.
fn single_committer(app: &TestApp) -> GroupCommitter {
    committer_of(app, 1)
}

/// A committer of the test's own with `tasks` committer tasks over the app's store.
fn committer_of(app: &TestApp, tasks: usize) -> GroupCommitter {
    let store = app.store();
    GroupCommitter::with_committers(
        store.pool.clone(),
        store.cache.clone(),
        store.outbox_written.clone(),
        store.reads.clone(),
        tasks,
    )
}

/// Two committer tasks whose groups form behind a commit in flight for as long as it lasts (up to a minute),
/// so a parked commit shows the forming.
fn patient_committers(app: &TestApp) -> GroupCommitter {
    let store = app.store();
    GroupCommitter::with_forming_wait(
        store.pool.clone(),
        store.cache.clone(),
        store.outbox_written.clone(),
        store.reads.clone(),
        2,
        std::time::Duration::from_secs(60),
    )
}

/// A one-debit batch planned against the wallet's current state (or a given version).
async fn debit_batch(app: &TestApp, wallet: Uuid, value: &str, version: Option<i64>, reference: Option<&str>) -> Batch {
    let origin = Origin {
        actor_id: Uuid::new_v4(),
        role: "service".into(),
        ..Default::default()
    };
    let mut b = planned_debit(app, wallet, value, origin).await;
    if let Some(v) = version {
        b.expected_version = v;
    }
    b.entries[0].reference_id = reference.map(str::to_string);
    b.entries[0].reference_type = reference.map(|_| "BOOKING".to_string());
    b
}

/// Takes a row lock on `parked` and has `committer` commit a debit of it, which waits on the lock: the
/// committer task that took it is busy until the lock is released.
async fn park(
    app: &TestApp,
    committer: &GroupCommitter,
    parked: Uuid,
) -> (RowLock, tokio::task::JoinHandle<Result<(), CommitError>>) {
    let lock = RowLock::take(&app.db.url, parked).await;
    let first = debit_batch(app, parked, "1.00", None, None).await;
    let c0 = committer.clone();
    let parked_task = tokio::spawn(async move { c0.commit(first).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    (lock, parked_task)
}

/// A one-debit batch on each of `n` new wallets.
async fn fresh_debits(app: &TestApp, n: usize) -> Vec<Batch> {
    let mut batches = Vec::with_capacity(n);
    for _ in 0..n {
        let (_, _, w) = app.user_with_wallet("10.00", "USD").await;
        batches.push(debit_batch(app, w, "1.00", None, None).await);
    }
    batches
}

/// Parks `committer` on a row lock of `parked` (committing a debit of it), queues `batches` behind it so that
/// they form one group, releases the lock, and returns the group's outcomes in the order of `batches`.
async fn commit_as_one_group(
    app: &TestApp,
    committer: &GroupCommitter,
    parked: Uuid,
    batches: Vec<Batch>,
) -> Vec<Result<(), CommitError>> {
    let (lock, parked_task) = park(app, committer, parked).await;
    let tasks = commit_each(committer, batches);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    lock.release().await;
    assert_eq!(parked_task.await.unwrap(), Ok(()));
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_in_a_group_does_not_affect_the_others_and_accepted_ones_are_durable() {
    let app = spawn_app().await;
    let (_, _, parked) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, good) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, stale) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, dup) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, frozen) = app.user_with_wallet("10.00", "USD").await;
    assert_eq!(
        app.post_txn(
            dup,
            json!({"amount": "1.00", "type": "DEBIT", "reference_id": "bk-9", "reference_type": "BOOKING"})
        )
        .await
        .status(),
        201
    );

    // One committer, parked on a row lock, so the next three batches queue up and form one group.
    let committer = single_committer(&app);
    let db = &app.db;
    let lock = RowLock::take(&app.db.url, parked).await;

    let first = debit_batch(&app, parked, "1.00", None, None).await;
    let batches = vec![
        debit_batch(&app, good, "2.00", None, None).await,
        debit_batch(&app, stale, "2.00", Some(999), None).await,
        debit_batch(&app, dup, "2.00", None, Some("bk-9")).await,
        freeze_batch(&app, frozen).await,
    ];
    let c0 = committer.clone();
    let parked_task = tokio::spawn(async move { c0.commit(first).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut tasks = Vec::new();
    for b in batches {
        let c = committer.clone();
        let check = Arc::new(db.client().await);
        tasks.push(tokio::spawn(async move {
            let txn = b.entries.first().map(|e| e.txn_id).unwrap_or_default();
            let result = c.commit(b).await;
            // Durable before the reply: the row is visible to another connection right away.
            let rows: i64 = check
                .query_one("SELECT count(*) FROM transactions WHERE txn_id = $1", &[&txn])
                .await
                .unwrap()
                .get(0);
            (result, rows)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    lock.release().await;
    assert_eq!(parked_task.await.unwrap(), Ok(()));

    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(outcomes[0], (Ok(()), 1), "the good batch committed and is durable");
    assert_eq!(outcomes[1], (Err(CommitError::VersionConflict), 0));
    assert!(
        matches!(&outcomes[2], (Err(CommitError::DuplicateReferences(d)), 0) if d.len() == 1),
        "{:?}",
        outcomes[2]
    );
    assert_eq!(app.balance(good).await, "8.00");
    assert_eq!(app.balance(stale).await, "10.00");
    assert_eq!(app.balance(dup).await, "9.00");
    // The status change (not a plain batch: it took its own savepoint) committed in the same group.
    assert_eq!(outcomes[3], (Ok(()), 0));
    assert_eq!(committer.fallbacks(), 0, "the plain batches went out as one statement");
    let c = db.client().await;
    let status: String = c
        .query_one("SELECT status FROM wallets WHERE wallet_id = $1", &[&frozen])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "FROZEN");
}

/// A batch that freezes the wallet (goes through the savepoint path).
async fn freeze_batch(app: &TestApp, wallet: Uuid) -> Batch {
    let before = committed(app, wallet).await;
    let mut after = before.clone();
    after.status = wallet_actors::WalletStatus::Frozen;
    after.version = before.version + 1;
    let mut b = batch(&before, after);
    b.status_changes.push(wallet_actors::store::StatusChange {
        from: before.status,
        to: wallet_actors::WalletStatus::Frozen,
        reason: Some("test".into()),
        origin: Origin::default(),
    });
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_postgres_refuses_as_one_statement_is_written_batch_by_batch_and_the_good_ones_commit() {
    let app = spawn_app().await;
    let (_, _, parked) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, good) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, bad) = app.user_with_wallet("10.00", "USD").await;
    let committer = single_committer(&app);
    let good_batch = debit_batch(&app, good, "2.00", None, None).await;
    // A row the schema refuses (created_at is not its id's time): the whole statement fails.
    let mut bad_batch = debit_batch(&app, bad, "3.00", None, None).await;
    bad_batch.entries[0].created_at += chrono::Duration::milliseconds(1);

    let outcomes = commit_as_one_group(&app, &committer, parked, vec![good_batch, bad_batch]).await;
    assert_eq!(outcomes[0], Ok(()));
    assert!(
        matches!(outcomes[1], Err(CommitError::Refused { .. })),
        "the refused batch fails alone, known not to have committed, as refused for its own data"
    );
    assert_eq!(committer.fallbacks(), 1);
    assert_eq!(app.balance(good).await, "8.00");
    assert_eq!(app.balance(bad).await, "10.00");
    let rows = app
        .count("SELECT count(*) FROM transactions WHERE wallet_id = $1", &[&bad])
        .await;
    assert_eq!(rows, 1, "its opening balance only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_event_is_in_the_inbox_is_left_out_of_its_group_and_its_neighbours_commit() {
    let app = spawn_app().await;
    let (_, _, parked) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, seen) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, fresh) = app.user_with_wallet("10.00", "USD").await;
    let (old_event, new_event) = (Uuid::now_v7(), Uuid::now_v7());
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO processed_events (event_id, event_type) VALUES ($1, 'BookingCreated')",
            &[&old_event],
        )
        .await
        .unwrap();
    let with_event = |mut b: Batch, id: Uuid| {
        b.entries[0].origin.inbox_event = Some(InboxEvent {
            id,
            event_type: "BookingCreated",
        });
        b
    };
    let batches = vec![
        with_event(debit_batch(&app, seen, "2.00", None, Some("bk-seen")).await, old_event),
        with_event(
            debit_batch(&app, fresh, "3.00", None, Some("bk-fresh")).await,
            new_event,
        ),
    ];
    let committer = single_committer(&app);

    let outcomes = commit_as_one_group(&app, &committer, parked, batches).await;
    assert_eq!(outcomes[0], Err(CommitError::EventsProcessed(vec![old_event])));
    assert_eq!(outcomes[1], Ok(()));
    assert_eq!(committer.fallbacks(), 0, "decided inside the one statement");
    assert_eq!(
        app.balance(seen).await,
        "10.00",
        "nothing of the processed event's batch was written"
    );
    assert_eq!(app.balance(fresh).await, "7.00");
    let inbox = app
        .count(
            "SELECT count(*) FROM processed_events WHERE event_id = $1",
            &[&new_event],
        )
        .await;
    assert_eq!(inbox, 1, "the neighbour's inbox row committed with its debit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_accepts_every_variant_of_the_plain_statement() {
    let app = spawn_app().await;
    let c = app.db.client().await;
    let variants = wallet_service::store::all_plain_statements();
    assert_eq!(variants.len(), 64);
    for sql in variants {
        c.prepare(sql).await.unwrap_or_else(|e| panic!("{e:?}\n{sql}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_writes_its_events_as_one_outbox_row_with_only_the_committed_wallets_events() {
    let app = spawn_app().await;
    let (_, _, parked) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, a) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, b) = app.user_with_wallet("10.00", "USD").await;
    let (_, _, stale) = app.user_with_wallet("10.00", "USD").await;
    let committer = single_committer(&app);
    let batches = vec![
        debit_batch(&app, a, "2.00", None, None).await,
        debit_batch(&app, b, "3.00", None, None).await,
        debit_batch(&app, stale, "4.00", Some(999), None).await,
    ];
    let txns: Vec<String> = batches.iter().map(|b| b.entries[0].txn_id.to_string()).collect();
    let outcomes = commit_as_one_group(&app, &committer, parked, batches).await;
    assert_eq!(outcomes, vec![Ok(()), Ok(()), Err(CommitError::VersionConflict)]);
    assert_eq!(committer.fallbacks(), 0, "one statement");

    let c = app.db.client().await;
    let rows = c
        .query(
            "SELECT o.seq, o.event_count, e.payload->'data'->>'txn_id' \
               FROM outbox o JOIN outbox_events e USING (seq) \
              WHERE o.seq IN (SELECT seq FROM outbox_events WHERE payload->'data'->>'txn_id' = ANY($1)) \
              ORDER BY e.pos",
            &[&txns],
        )
        .await
        .unwrap();
    let seqs: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(seqs.len(), 1, "both committed wallets' events are one row");
    assert_eq!(rows[0].get::<_, i32>(1), 2, "the row counts its events");
    let in_row: Vec<String> = rows.iter().map(|r| r.get(2)).collect();
    assert_eq!(in_row, txns[..2].to_vec(), "the refused wallet's event is not written");
}

/// Commits `batches` each from its own task, for a committer busy elsewhere.
fn commit_each(
    committer: &GroupCommitter,
    batches: Vec<Batch>,
) -> Vec<tokio::task::JoinHandle<Result<(), CommitError>>> {
    batches
        .into_iter()
        .map(|batch| {
            let c = committer.clone();
            tokio::spawn(async move { c.commit(batch).await })
        })
        .collect()
}

/// Waits for every task's commit, at most ten seconds in all, and requires each to have succeeded.
async fn all_commit_within_ten_seconds(tasks: Vec<tokio::task::JoinHandle<Result<(), CommitError>>>, why: &str) {
    let all = async {
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        outcomes
    };
    let outcomes = tokio::time::timeout(std::time::Duration::from_secs(10), all)
        .await
        .expect(why);
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_group_waiting_behind_a_busy_committer_is_committed_by_a_surge_committer() {
    use wallet_service::store::MAX_GROUP_BATCHES;
    let app = spawn_app().await;
    let (_, _, parked) = app.user_with_wallet("10.00", "USD").await;
    let batches = fresh_debits(&app, MAX_GROUP_BATCHES).await;
    let committer = single_committer(&app);
    let (lock, parked_task) = park(&app, &committer, parked).await;

    // The only committer of GROUP_COMMITTERS waits on the lock; a full group queues behind it.
    let tasks = commit_each(&committer, batches);
    all_commit_within_ten_seconds(
        tasks,
        "the full group commits while the other committer is still parked",
    )
    .await;
    assert_eq!(committer.surge_groups(), 1);
    assert!(!parked_task.is_finished(), "the lock still holds the parked commit");
    lock.release().await;
    assert_eq!(parked_task.await.unwrap(), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_batches_than_a_group_wait_for_a_free_committer_rather_than_surge() {
    let app = spawn_app().await;
    let (_, _, parked) = app.user_with_wallet("10.00", "USD").await;
    let batches = fresh_debits(&app, 5).await;
    let committer = single_committer(&app);
    let (lock, parked_task) = park(&app, &committer, parked).await;
    let tasks = commit_each(&committer, batches);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "they wait for the parked committer"
    );
    assert_eq!(committer.surge_groups(), 0);
    lock.release().await;
    assert_eq!(parked_task.await.unwrap(), Ok(()));
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ok(()));
    }
    assert_eq!(committer.surge_groups(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_committer_lets_a_small_group_form_behind_a_commit_in_flight_and_commits_it_as_one() {
    use wallet_service::store::MIN_OVERLAP_BATCHES;
    let app = spawn_app().await;
    let (_, _, parked) = app.user_with_wallet("10.00", "USD").await;
    let batches = fresh_debits(&app, MIN_OVERLAP_BATCHES - 1).await;
    let committer = patient_committers(&app);
    let (lock, parked_task) = park(&app, &committer, parked).await;

    // One committer waits on the lock; the other is free but does not take the few batches one by one.
    let tasks = commit_each(&committer, batches);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "they wait for the commit in flight"
    );
    assert_eq!(committer.groups(), 1, "only the parked group has started");
    lock.release().await;
    assert_eq!(parked_task.await.unwrap(), Ok(()));
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ok(()));
    }
    assert_eq!(committer.groups(), 2, "the waiting batches went as one group");
    assert_eq!(committer.surge_groups(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enough_batches_behind_a_commit_in_flight_commit_beside_it_as_one_group() {
    use wallet_service::store::MIN_OVERLAP_BATCHES;
    let app = spawn_app().await;
    let (_, _, parked) = app.user_with_wallet("10.00", "USD").await;
    let batches = fresh_debits(&app, MIN_OVERLAP_BATCHES).await;
    let committer = patient_committers(&app);
    let (lock, parked_task) = park(&app, &committer, parked).await;

    let tasks = commit_each(&committer, batches);
    all_commit_within_ten_seconds(tasks, "they commit while the other commit is still parked").await;
    assert!(!parked_task.is_finished(), "the lock still holds the parked commit");
    assert_eq!(
        committer.groups(),
        2,
        "the parked group and one group of all the others"
    );
    assert_eq!(committer.surge_groups(), 0);
    lock.release().await;
    assert_eq!(parked_task.await.unwrap(), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_held_up_holds_a_small_group_behind_it_no_longer_than_the_forming_wait() {
    let app = spawn_app().await;
    let (_, _, parked) = app.user_with_wallet("10.00", "USD").await;
    let batches = fresh_debits(&app, 3).await;
    let committer = committer_of(&app, 2);
    let (lock, parked_task) = park(&app, &committer, parked).await;

    // The parked commit lasts until the lock goes; the few behind it start after MAX_FORMING_WAIT instead.
    let tasks = commit_each(&committer, batches);
    all_commit_within_ten_seconds(tasks, "they commit while the other commit is still parked").await;
    assert!(!parked_task.is_finished(), "the lock still holds the parked commit");
    lock.release().await;
    assert_eq!(parked_task.await.unwrap(), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_statement_probes_taken_references_and_claims_by_index_even_in_a_plan_made_on_empty_tables() {
    // A pooled connection plans each prepared statement once, generically, and keeps that plan until
    // something invalidates it. Made on a fresh database (these tables empty), a join of the group's keys
    // or replies to `transaction_references` or `idempotency_keys` was planned as a hash over a sequential
    // scan, and the plan kept scanning the whole table as it grew. Written as per-row sub-plans, no plan can.
    let app = spawn_app().await;
    let c = app.db.client().await;
    c.batch_execute("SET plan_cache_mode = force_generic_plan")
        .await
        .unwrap();
    for (i, sql) in wallet_service::store::all_plain_statements().into_iter().enumerate() {
        let params = c.prepare(sql).await.unwrap().params().len();
        c.batch_execute(&format!("PREPARE generic_{i} AS {sql}")).await.unwrap();
        let nulls = vec!["NULL"; params].join(", ");
        let plan: String = c
            .query(&format!("EXPLAIN EXECUTE generic_{i}({nulls})"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0) + "\n")
            .collect();
        assert!(plan.contains("Update on wallets"), "{plan}");
        for table in ["transaction_references", "idempotency_keys"] {
            assert!(!plan.contains(&format!("Seq Scan on {table}")), "{sql}\n{plan}");
        }
        if sql.contains("taken AS") {
            assert!(plan.contains("transaction_references_pkey"), "{plan}");
        }
        if sql.contains("fence AS") {
            assert!(plan.contains("idempotency_keys_pkey"), "{plan}");
        }
    }
}
