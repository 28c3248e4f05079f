//! The wallet engine against `MemoryStore`: concurrency, group commit, durability before the reply,
//! conflicts with another writer, idle stop, restarts, back-pressure, references, consumed events, transfers and
//! statuses.
//!
//! Where a test needs several commands planned *together*, it parks a "blocker" command in a slow commit
//! (`commit_delay`), waits until the others hold queue tickets (`Engine::queued_commands`), and lets the
//! blocker finish: the waiting commands were all in the actor's mailbox before the commit reported back,
//! so they are planned in one batch.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use wallet_actors::memory::MemoryStore;
use wallet_actors::store::Batch;
use wallet_actors::{
    Amount, Applied, Command, CommitError, Currency, Direction, Engine, Entry, Hold, HoldStatus, InboxEvent, Limits,
    Origin, Rejection, Request, TxnType, WalletStatus, WalletStore,
};

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

fn amt(text: &str) -> Amount {
    Amount::parse(text).unwrap()
}

fn cents(c: u64) -> Amount {
    Amount::parse(&format!("{}.{:02}", c / 100, c % 100)).unwrap()
}

/// A fresh caller for every request, so a request can be found again by `origin.actor_id`.
fn origin() -> Origin {
    Origin {
        actor_id: Uuid::new_v4(),
        role: "user".into(),
        ..Default::default()
    }
}

fn request(command: Command) -> Request {
    Request {
        command,
        origin: origin(),
    }
}

fn post(direction: Direction, amount: &str) -> Request {
    request(Command::Post {
        direction,
        amount: amt(amount),
        description: None,
        reference_id: None,
        reference_type: None,
        metadata: None,
    })
}

fn debit(amount: &str) -> Request {
    post(Direction::Debit, amount)
}

fn credit(amount: &str) -> Request {
    post(Direction::Credit, amount)
}

fn post_ref(direction: Direction, amount: &str, reference_type: &str, reference_id: &str) -> Request {
    request(Command::Post {
        direction,
        amount: amt(amount),
        description: None,
        reference_id: Some(reference_id.into()),
        reference_type: Some(reference_type.into()),
        metadata: None,
    })
}

fn set_status(status: WalletStatus) -> Request {
    request(Command::SetStatus {
        status,
        reason: Some("test".into()),
    })
}

fn transfer(to_wallet_id: Uuid, amount: Amount) -> Request {
    request(Command::TransferOut {
        to_wallet_id,
        amount,
        description: None,
        reference_id: None,
    })
}

async fn start(store: &Arc<MemoryStore>, limits: Limits) -> Engine {
    let store: Arc<dyn WalletStore> = store.clone();
    Engine::start(store, limits).await.expect("engine starts")
}

fn set_commit_delay(store: &MemoryStore, delay: Duration) {
    *store.commit_delay.lock().unwrap() = delay;
}

fn batch_sizes(store: &MemoryStore) -> Vec<usize> {
    store.batch_sizes.lock().unwrap().clone()
}

fn posted(result: Result<Applied, Rejection>) -> Entry {
    match result {
        Ok(Applied::Posted(entry)) => entry,
        other => panic!("expected a posted entry, got {other:?}"),
    }
}

/// Polls `condition` every few milliseconds; fails the test if it does not hold within `within`.
async fn eventually(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `request` on a task, so several commands can be in the engine at once.
fn spawn_execute(
    engine: &Engine,
    wallet: Uuid,
    request: Request,
) -> tokio::task::JoinHandle<Result<Applied, Rejection>> {
    let engine = engine.clone();
    tokio::spawn(async move { engine.execute(wallet, request).await })
}

/// Starts a command that will sit in a slow commit, and waits until it is surely in flight (the actor takes
/// it off its mailbox and launches the commit in microseconds; the commit itself takes `commit_delay`).
async fn park_blocker(engine: &Engine, wallet: Uuid) -> tokio::task::JoinHandle<Result<Applied, Rejection>> {
    // The actor must already exist, so that the blocker is the first command it plans.
    engine.get(wallet).await.expect("wallet loads");
    let blocker = spawn_execute(engine, wallet, credit("0.50"));
    tokio::time::sleep(Duration::from_millis(30)).await;
    blocker
}

// ---------------------------------------------------------------------------------------------------------
// 1. Serialization of concurrent debits
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_debits_on_150_leave_exactly_150_accepted() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("150.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;

    let tasks: Vec<_> = (0..200).map(|_| spawn_execute(&engine, w, debit("1.00"))).collect();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Applied::Posted(e)) => accepted.push(e),
            Err(Rejection::InsufficientFunds { balance, requested }) => {
                assert_eq!(balance, Amount::ZERO, "a 1.00 debit is only refused on an empty wallet");
                assert_eq!(requested, amt("1.00"));
                refused += 1;
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    assert_eq!(accepted.len(), 150);
    assert_eq!(refused, 50);
    // Serialized: every accepted debit saw a different balance, 149.00 down to 0.00.
    let afters: HashSet<Amount> = accepted.iter().map(|e| e.balance_after).collect();
    let expected: HashSet<Amount> = (0..150).map(|i| cents(i * 100)).collect();
    assert_eq!(afters, expected);
    assert_eq!(store.wallet(w).unwrap().balance, Amount::ZERO);
    assert_eq!(store.entries(w).len(), 150);
    assert_eq!(store.replayed_balance(w), store.wallet(w).unwrap().balance);
    assert_eq!(engine.get(w).await.unwrap().balance, Amount::ZERO);
    // A ticket is given back just after its reply is sent, so allow the actor a moment.
    let e = engine.clone();
    eventually("every queue ticket is given back", Duration::from_secs(5), || {
        e.queued_commands() == 0
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------
// 2. Group commit
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_queued_behind_a_commit_are_committed_together() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("100.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;
    set_commit_delay(&store, Duration::from_millis(50));

    let tasks: Vec<_> = (0..20).map(|_| spawn_execute(&engine, w, debit("1.00"))).collect();
    for t in tasks {
        posted(t.await.unwrap());
    }

    let sizes = batch_sizes(&store);
    assert_eq!(
        sizes.iter().sum::<usize>(),
        20,
        "every command was committed exactly once: {sizes:?}"
    );
    assert!(
        sizes.iter().any(|&n| n > 1),
        "no batch held more than one command: {sizes:?}"
    );
    assert!(sizes.len() < 20);
    assert_eq!(store.wallet(w).unwrap().balance, amt("80.00"));
    assert_eq!(
        store.wallet(w).unwrap().version,
        1 + sizes.len() as i64,
        "one version per batch"
    );
    assert_eq!(store.replayed_balance(w), amt("80.00"));
}

// ---------------------------------------------------------------------------------------------------------
// 3. A refusal inside a batch
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_in_a_batch_does_not_affect_its_neighbours() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;
    set_commit_delay(&store, Duration::from_millis(200));

    // 10.00 + 0.50 (blocker) + 0.50 = 11.00 at most: two debits of 4.00 fit, three never do.
    let blocker = park_blocker(&engine, w).await;
    let debits: Vec<_> = (0..3).map(|_| spawn_execute(&engine, w, debit("4.00"))).collect();
    let late_credit = spawn_execute(&engine, w, credit("0.50"));
    let (e, q) = (engine.clone(), Duration::from_secs(5));
    eventually("the four commands are queued behind the blocker", q, || {
        e.queued_commands() == 5
    })
    .await;

    let blocker_entry = posted(blocker.await.unwrap());
    let credit_entry = posted(late_credit.await.unwrap());
    let mut accepted = vec![blocker_entry, credit_entry];
    let mut refusals = Vec::new();
    for t in debits {
        match t.await.unwrap() {
            Ok(Applied::Posted(entry)) => accepted.push(entry),
            Err(r @ Rejection::InsufficientFunds { .. }) => refusals.push(r),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    assert_eq!(accepted.len(), 4);
    assert_eq!(refusals.len(), 1);
    // The blocker alone, then the three debits and the credit together (the refusal counts in the batch).
    assert_eq!(batch_sizes(&store), vec![1, 4]);
    let stored: HashSet<Uuid> = store.entries(w).iter().map(|e| e.txn_id).collect();
    for e in &accepted {
        assert!(stored.contains(&e.txn_id), "accepted {e:?} is missing from the store");
    }
    assert_eq!(stored.len(), 4);
    let audited = store.refusals();
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0].action, "wallet.debit");
    assert_eq!(audited[0].amount, Some(amt("4.00")));
    assert_eq!(audited[0].rejection, refusals[0]);
    assert_eq!(store.wallet(w).unwrap().balance, amt("3.00"));
    assert_eq!(store.replayed_balance(w), amt("3.00"));
}

// ---------------------------------------------------------------------------------------------------------
// 4. Durable before the reply
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_command_is_durable_before_its_reply() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;
    set_commit_delay(&store, Duration::from_millis(5));

    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let (engine, store) = (engine.clone(), store.clone());
            tokio::spawn(async move {
                let req = if i % 4 == 0 { credit("1.00") } else { debit("1.00") };
                let caller = req.origin.actor_id;
                let answer = engine.execute(w, req).await;
                // Checked the instant the reply arrives, before any other await.
                match &answer {
                    Ok(Applied::Posted(e)) => {
                        assert!(
                            store.entries(w).iter().any(|s| s.txn_id == e.txn_id),
                            "entry {} answered before it was committed",
                            e.txn_id
                        );
                    }
                    Err(Rejection::InsufficientFunds { .. }) => {
                        assert!(
                            store.refusals().iter().any(|r| r.origin.actor_id == caller),
                            "refusal answered before it was written to the audit log"
                        );
                    }
                    other => panic!("unexpected outcome {other:?}"),
                }
                answer.is_ok()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }

    assert_eq!(store.entries(w).len(), ok);
    assert_eq!(store.replayed_balance(w), store.wallet(w).unwrap().balance);
}

// ---------------------------------------------------------------------------------------------------------
// 5. Another writer
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_conflict_from_another_writer_is_replanned_not_overdrawn() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;
    assert_eq!(engine.get(w).await.unwrap().balance, amt("10.00"));

    // Another process takes 8.00; this engine's actor still believes 10.00.
    store.external_debit(w, amt("8.00"));

    let answer = engine.execute(w, debit("5.00")).await;
    assert_eq!(
        answer,
        Err(Rejection::InsufficientFunds {
            balance: amt("2.00"),
            requested: amt("5.00")
        })
    );
    assert_eq!(store.wallet(w).unwrap().balance, amt("2.00"));
    assert!(store.entries(w).is_empty());

    let e = posted(engine.execute(w, debit("2.00")).await);
    assert_eq!(e.balance_after, Amount::ZERO);
    assert_eq!(store.wallet(w).unwrap().balance, Amount::ZERO);
    assert_eq!(engine.get(w).await.unwrap(), store.wallet(w).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_judged_on_a_stale_balance_is_checked_against_the_store() {
    // Two processes over one database. Process 2 moves money in and unfreezes; process 1 is never told.
    let store = Arc::new(MemoryStore::new());
    let a = store.create_wallet(amt("100.00"), Currency::Usd);
    let b = store.create_wallet(Amount::ZERO, Currency::Usd);
    let p1 = start(&store, Limits::default()).await;
    let p2 = start(&store, Limits::default()).await;
    assert_eq!(p1.get(b).await.unwrap().balance, Amount::ZERO);

    assert!(matches!(
        p2.execute(a, transfer(b, amt("30.00"))).await,
        Ok(Applied::Transferred { .. })
    ));

    // Process 1's cache says 0.00; the database says 30.00. The debit must not be refused.
    let e = posted(p1.execute(b, debit("20.00")).await);
    assert_eq!(e.balance_after, amt("10.00"));
    assert_eq!(store.wallet(b).unwrap().balance, amt("10.00"));

    // Same with a status: process 1 saw FROZEN, process 2 reactivated the wallet.
    assert!(p1.execute(b, set_status(WalletStatus::Frozen)).await.is_ok());
    assert!(p2.execute(b, set_status(WalletStatus::Active)).await.is_ok());
    let e = posted(p1.execute(b, credit("1.00")).await);
    assert_eq!(e.balance_after, amt("11.00"));
    assert!(
        store.refusals().is_empty(),
        "nothing was refused: {:?}",
        store.refusals()
    );
}

// ---------------------------------------------------------------------------------------------------------
// 6. Idle stop
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_actor_stops_and_a_later_request_reloads_the_right_balance() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let engine = start(
        &store,
        Limits {
            idle_timeout: Duration::from_millis(200),
            ..Default::default()
        },
    )
    .await;

    posted(engine.execute(w, debit("1.00")).await);
    assert_eq!(engine.live_actors(), 1);
    let e = engine.clone();
    eventually("the idle actor stops", Duration::from_secs(5), || e.live_actors() == 0).await;

    store.external_debit(w, amt("2.00"));
    let state = engine.get(w).await.unwrap();
    assert_eq!(state.balance, amt("7.00"));
    assert_eq!(state, store.wallet(w).unwrap());
    assert_eq!(engine.live_actors(), 1);
    assert_eq!(
        posted(engine.execute(w, debit("7.00")).await).balance_after,
        Amount::ZERO
    );
}

// ---------------------------------------------------------------------------------------------------------
// 7. Restart after a panic
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_panicking_mid_commit_answers_outcome_unknown_and_the_wallet_keeps_working() {
    use std::sync::atomic::Ordering;

    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;
    store.panic_on_next_commit.store(true, Ordering::SeqCst);
    // A panic inside the commit leaves its outcome unknown: the caller must not be told "not applied".
    match engine.execute(w, debit("1.00")).await {
        Err(Rejection::OutcomeUnknown) => {}
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert!(
        !store.panic_on_next_commit.load(Ordering::SeqCst),
        "the injected panic happened"
    );
    assert!(store.entries(w).is_empty());
    // The actor did not die with the commit: it reloads (the outcome was unknown) and goes on.
    assert_eq!(engine.restarts(), 0);
    let entry = posted(engine.execute(w, debit("1.00")).await);
    assert_eq!(entry.balance_after, amt("9.00"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_actor_is_restarted_and_the_wallet_keeps_working() {
    use std::sync::atomic::Ordering;

    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;
    engine.get(w).await.unwrap();
    assert_eq!(engine.restarts(), 0);

    store.panic_on_next_load.store(true, Ordering::SeqCst);
    engine.invalidate(w);
    // The command is the one that makes the actor reload, so it dies with the actor before it was planned:
    // its caller knows it was not applied.
    match engine.execute(w, debit("1.00")).await {
        Err(Rejection::Unavailable(reason)) => {
            assert!(reason.contains("before planning"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        !store.panic_on_next_load.load(Ordering::SeqCst),
        "the injected panic happened"
    );
    assert!(store.entries(w).is_empty());

    let e = engine.clone();
    eventually("the supervisor sees the failure", Duration::from_secs(5), || {
        e.restarts() >= 1
    })
    .await;
    assert_eq!(engine.restarts(), 1);

    let entry = posted(engine.execute(w, debit("1.00")).await);
    assert_eq!(entry.balance_after, amt("9.00"));
    assert_eq!(store.wallet(w).unwrap().balance, amt("9.00"));
    assert_eq!(
        engine.live_actors(),
        1,
        "the failed actor is gone and one new actor serves the wallet"
    );
}

// ---------------------------------------------------------------------------------------------------------
// 8. Back-pressure
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_with_too_many_queued_commands_answers_overloaded() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("100.00"), Currency::Usd);
    let engine = start(
        &store,
        Limits {
            max_queued_per_wallet: 4,
            ..Default::default()
        },
    )
    .await;
    set_commit_delay(&store, Duration::from_millis(200));

    let tasks: Vec<_> = (0..20).map(|_| spawn_execute(&engine, w, debit("1.00"))).collect();
    let (mut ok, mut overloaded) = (0i64, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(Applied::Posted(_)) => ok += 1,
            Err(Rejection::Overloaded) => overloaded += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    assert!(overloaded > 0, "nothing was refused as overloaded");
    assert!(ok >= 4, "the first four commands fit the bound, only {ok} succeeded");
    assert_eq!(ok + overloaded, 20);
    assert_eq!(store.entries(w).len() as i64, ok);
    let e = engine.clone();
    eventually("every queue ticket is given back", Duration::from_secs(5), || {
        e.queued_commands() == 0
    })
    .await;
    set_commit_delay(&store, Duration::ZERO);
    posted(engine.execute(w, debit("1.00")).await);
}

// ---------------------------------------------------------------------------------------------------------
// 9. References
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_reference_debited_twice_has_one_effect() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("100.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;

    // One after the other.
    let first = posted(
        engine
            .execute(w, post_ref(Direction::Debit, "5.00", "BOOKING", "b-1"))
            .await,
    );
    let again = engine
        .execute(w, post_ref(Direction::Debit, "5.00", "BOOKING", "b-1"))
        .await;
    assert_eq!(
        again,
        Err(Rejection::DuplicateReference {
            existing_txn_id: first.txn_id
        })
    );
    // A refund is another type, so it is allowed once.
    let refund = posted(
        engine
            .execute(w, post_ref(Direction::Credit, "5.00", "BOOKING", "b-1"))
            .await,
    );
    let refund_again = engine
        .execute(w, post_ref(Direction::Credit, "5.00", "BOOKING", "b-1"))
        .await;
    assert_eq!(
        refund_again,
        Err(Rejection::DuplicateReference {
            existing_txn_id: refund.txn_id
        })
    );
    assert_eq!(store.wallet(w).unwrap().balance, amt("100.00"));

    // At the same time, planned in one batch behind a slow commit.
    set_commit_delay(&store, Duration::from_millis(200));
    let blocker = park_blocker(&engine, w).await;
    let twins: Vec<_> = (0..2)
        .map(|_| spawn_execute(&engine, w, post_ref(Direction::Debit, "5.00", "BOOKING", "b-2")))
        .collect();
    let (e, q) = (engine.clone(), Duration::from_secs(5));
    eventually("both twins are queued behind the blocker", q, || {
        e.queued_commands() == 3
    })
    .await;
    posted(blocker.await.unwrap());
    let mut answers = Vec::new();
    for t in twins {
        answers.push(t.await.unwrap());
    }

    let accepted: Vec<Entry> = answers
        .iter()
        .filter_map(|a| a.clone().ok())
        .map(|a| posted(Ok(a)))
        .collect();
    assert_eq!(accepted.len(), 1, "exactly one twin takes effect: {answers:?}");
    let dup = Err(Rejection::DuplicateReference {
        existing_txn_id: accepted[0].txn_id,
    });
    assert_eq!(answers.iter().filter(|a| **a == dup).count(), 1, "{answers:?}");
    let with_ref: Vec<Entry> = store
        .entries(w)
        .into_iter()
        .filter(|e| e.reference_id.as_deref() == Some("b-2"))
        .collect();
    assert_eq!(with_ref.len(), 1);
    assert_eq!(with_ref[0].txn_id, accepted[0].txn_id);
    assert_eq!(store.wallet(w).unwrap().balance, amt("95.50"));
    assert_eq!(store.replayed_balance(w), amt("95.50"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_refuses_a_batch_that_repeats_a_reference_like_a_unique_key() {
    let store = MemoryStore::new();
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let before = store.wallet(w).unwrap();
    let entry = |balance_after: &str| {
        let txn_id = Uuid::now_v7();
        Entry {
            txn_id,
            wallet_id: w,
            kind: TxnType::Debit,
            amount: amt("1.00"),
            description: None,
            reference_id: Some("b-1".into()),
            reference_type: Some("BOOKING".into()),
            metadata: None,
            balance_after: amt(balance_after),
            created_at: chrono::Utc::now(),
            origin: Origin::default(),
            budgets: vec![],
            hold_id: None,
            link: None,
        }
    };
    let mut after = before.clone();
    after.balance = amt("8.00");
    after.version += 1;
    let batch = Batch {
        wallet_id: w,
        expected_version: before.version,
        after,
        entries: vec![entry("9.00"), entry("8.00")],
        status_changes: vec![],
        refusals: vec![],
        budget_creates: vec![],
        budget_changes: vec![],
        alerts: vec![],
        hold_changes: vec![],
        suspicious: vec![],
        audit: vec![],
    };

    match store.commit(&batch).await {
        Err(CommitError::Unavailable {
            outcome_unknown: false, ..
        }) => {}
        other => panic!("expected the whole batch to fail, got {other:?}"),
    }
    assert_eq!(store.wallet(w).unwrap(), before, "nothing was written");
    assert!(store.entries(w).is_empty());
}

/// A debit carrying consumed event `event` (as the booking consumer sends it).
fn debit_for_event(amount: &str, event: Uuid) -> Request {
    let mut r = debit(amount);
    r.origin.inbox_event = Some(InboxEvent {
        id: event,
        event_type: "BookingCreated",
    });
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_whose_event_was_consumed_elsewhere_is_refused_and_its_batch_neighbours_commit() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;
    set_commit_delay(&store, Duration::from_millis(200));

    // Both debits are planned in one batch behind the blocker; meanwhile another consumer commits the
    // first one's event (its redelivery was taken elsewhere).
    let (consumed, fresh) = (Uuid::new_v4(), Uuid::new_v4());
    let blocker = park_blocker(&engine, w).await;
    let redelivered = spawn_execute(&engine, w, debit_for_event("4.00", consumed));
    let neighbour = spawn_execute(&engine, w, debit_for_event("1.00", fresh));
    let (e, q) = (engine.clone(), Duration::from_secs(5));
    eventually("both debits are queued behind the blocker", q, || {
        e.queued_commands() == 3
    })
    .await;
    store.external_processed(consumed);

    posted(blocker.await.unwrap());
    assert_eq!(redelivered.await.unwrap(), Err(Rejection::EventProcessed));
    let entry = posted(neighbour.await.unwrap());
    assert_eq!(entry.origin.inbox_event.map(|ev| ev.id), Some(fresh));
    assert!(
        store.processed(fresh),
        "the neighbour's event went into the inbox with its effect"
    );
    // The blocker, then the neighbour alone (the batch with both was refused whole, and wrote nothing).
    assert_eq!(batch_sizes(&store), vec![1, 1]);
    assert_eq!(store.wallet(w).unwrap().balance, amt("9.50"));
    assert_eq!(store.replayed_balance(w), amt("9.50"));

    // The neighbour's event delivered again: refused by the inbox, never debited twice.
    assert_eq!(
        engine.execute(w, debit_for_event("1.00", fresh)).await,
        Err(Rejection::EventProcessed)
    );
    assert_eq!(store.wallet(w).unwrap().balance, amt("9.50"));
}

// ---------------------------------------------------------------------------------------------------------
// 10. A failed commit
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_answers_unavailable_and_the_next_command_succeeds() {
    use std::sync::atomic::Ordering;

    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;
    store.fail_next_commits.store(1, Ordering::SeqCst);

    let answer = engine.execute(w, debit("1.00")).await;
    assert_eq!(answer, Err(Rejection::Unavailable("injected failure".into())));
    assert!(store.entries(w).is_empty());
    assert_eq!(store.wallet(w).unwrap().balance, amt("10.00"));

    let e = posted(engine.execute(w, debit("1.00")).await);
    assert_eq!(e.balance_after, amt("9.00"));
    assert_eq!(store.wallet(w).unwrap().balance, amt("9.00"));
    assert_eq!(store.replayed_balance(w), amt("9.00"));
}

// ---------------------------------------------------------------------------------------------------------
// 11. Transfers
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_moves_money_atomically_and_refreshes_the_destination() {
    let store = Arc::new(MemoryStore::new());
    let a = store.create_wallet(amt("100.00"), Currency::Usd);
    let b = store.create_wallet(Amount::ZERO, Currency::Usd);
    let eur = store.create_wallet(Amount::ZERO, Currency::Eur);
    let other = store.create_wallet(Amount::ZERO, Currency::Usd);
    let engine = start(&store, Limits::default()).await;
    assert_eq!(engine.get(b).await.unwrap().balance, Amount::ZERO);

    let (out, incoming) = match engine.execute(a, transfer(b, amt("30.00"))).await {
        Ok(Applied::Transferred { out, incoming }) => (out, incoming),
        other => panic!("expected a transfer, got {other:?}"),
    };
    assert_eq!(
        (out.kind, out.wallet_id, out.balance_after),
        (TxnType::TransferOut, a, amt("70.00"))
    );
    assert_eq!(
        (incoming.kind, incoming.wallet_id, incoming.balance_after),
        (TxnType::TransferIn, b, amt("30.00"))
    );
    assert_eq!(store.entries(a), vec![out.clone()]);
    assert_eq!(store.entries(b), vec![incoming.clone()]);
    // The engine does not refresh the destination's actor itself; the caller (the service) does.
    engine.invalidate(b);
    assert_eq!(engine.get(b).await.unwrap().balance, amt("30.00"));
    assert_eq!(engine.get(a).await.unwrap().balance, amt("70.00"));

    let ten = amt("10.00");
    assert_eq!(
        engine.execute(a, transfer(eur, ten)).await,
        Err(Rejection::CurrencyMismatch {
            from: Currency::Usd,
            to: Currency::Eur
        })
    );
    assert!(engine.execute(b, set_status(WalletStatus::Frozen)).await.is_ok());
    assert_eq!(
        engine.execute(a, transfer(b, ten)).await,
        Err(Rejection::WalletNotActive {
            wallet_id: b,
            status: WalletStatus::Frozen
        })
    );
    assert_eq!(
        engine.execute(a, transfer(other, amt("70.01"))).await,
        Err(Rejection::InsufficientFunds {
            balance: amt("70.00"),
            requested: amt("70.01")
        })
    );
    assert_eq!(
        engine.execute(a, transfer(Uuid::now_v7(), ten)).await,
        Err(Rejection::WalletNotFound)
    );

    // None of the refused transfers moved anything.
    assert_eq!(store.wallet(a).unwrap().balance, amt("70.00"));
    assert_eq!(store.wallet(b).unwrap().balance, amt("30.00"));
    assert_eq!(store.wallet(eur).unwrap().balance, Amount::ZERO);
    assert_eq!(store.wallet(other).unwrap().balance, Amount::ZERO);
    assert_eq!(store.entries(a).len(), 1);
    for w in [a, b, eur, other] {
        assert_eq!(store.replayed_balance(w), store.wallet(w).unwrap().balance);
    }
    // The source's actor is still in step with the store after the refusals.
    assert_eq!(
        posted(engine.execute(a, debit("70.00")).await).balance_after,
        Amount::ZERO
    );
}

// ---------------------------------------------------------------------------------------------------------
// 12. Statuses
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_wallet_never_changes_status_again() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;

    match engine.execute(w, set_status(WalletStatus::Closed)).await {
        Ok(Applied::StatusChanged(state)) => assert_eq!(state.status, WalletStatus::Closed),
        other => panic!("expected a status change, got {other:?}"),
    }
    for status in [WalletStatus::Active, WalletStatus::Frozen, WalletStatus::Closed] {
        assert_eq!(
            engine.execute(w, set_status(status)).await,
            Err(Rejection::WalletClosed)
        );
    }
    // Also after the actor reloads the row.
    engine.invalidate(w);
    assert_eq!(
        engine.execute(w, set_status(WalletStatus::Active)).await,
        Err(Rejection::WalletClosed)
    );
    assert_eq!(
        engine.execute(w, credit("1.00")).await,
        Err(Rejection::WalletNotActive {
            wallet_id: w,
            status: WalletStatus::Closed
        })
    );

    let stored = store.wallet(w).unwrap();
    assert_eq!(stored.status, WalletStatus::Closed);
    assert_eq!(stored.balance, amt("10.00"));
    assert_eq!(stored.version, 2, "only the closing changed the row");
    assert_eq!(
        store
            .refusals()
            .iter()
            .filter(|r| r.rejection == Rejection::WalletClosed)
            .count(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_wallet_refuses_debits_and_credits() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;

    assert!(engine.execute(w, set_status(WalletStatus::Frozen)).await.is_ok());
    let frozen = Err(Rejection::WalletNotActive {
        wallet_id: w,
        status: WalletStatus::Frozen,
    });
    assert_eq!(engine.execute(w, debit("1.00")).await, frozen);
    assert_eq!(engine.execute(w, credit("1.00")).await, frozen);
    assert_eq!(
        engine
            .execute(
                w,
                transfer(store.create_wallet(Amount::ZERO, Currency::Usd), amt("1.00"))
            )
            .await,
        frozen
    );
    assert_eq!(store.wallet(w).unwrap().balance, amt("10.00"));
    assert!(store.entries(w).is_empty());

    assert!(engine.execute(w, set_status(WalletStatus::Active)).await.is_ok());
    assert_eq!(
        posted(engine.execute(w, credit("1.00")).await).balance_after,
        amt("11.00")
    );
}

// ---------------------------------------------------------------------------------------------------------
// 13. Two processes, one bank
// ---------------------------------------------------------------------------------------------------------

/// xorshift64*: deterministic, dependency-free randomness for the bank test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_moving_money_at_random_never_create_or_lose_any() {
    const WALLETS: usize = 20;
    const TRANSFERS_PER_ENGINE: usize = 500;

    let store = Arc::new(MemoryStore::new());
    let wallets: Vec<Uuid> = (0..WALLETS)
        .map(|_| store.create_wallet(amt("100.00"), Currency::Usd))
        .collect();
    let engines = [
        start(&store, Limits::default()).await,
        start(&store, Limits::default()).await,
    ];

    let mut tasks = Vec::new();
    for (n, engine) in engines.iter().enumerate() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
        for _ in 0..TRANSFERS_PER_ENGINE {
            let from = wallets[rng.below(WALLETS as u64) as usize];
            let to = loop {
                let to = wallets[rng.below(WALLETS as u64) as usize];
                if to != from {
                    break to;
                }
            };
            let amount = cents(1 + rng.below(2000));
            tasks.push(spawn_execute(engine, from, transfer(to, amount)));
        }
    }

    let (mut moved, mut short, mut contended) = (Vec::new(), 0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(Applied::Transferred { out, incoming }) => moved.push((out, incoming)),
            Err(Rejection::InsufficientFunds { .. }) => short += 1,
            // Allowed by the contract after max_conflict_retries conflicts in a row; nothing was written.
            Err(Rejection::Unavailable(reason)) if reason.contains("contended") => contended += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    println!(
        "transfers: {} moved, {short} short of funds, {contended} contended",
        moved.len()
    );
    assert_eq!(moved.len() + short + contended, 2 * TRANSFERS_PER_ENGINE);
    assert!(
        moved.len() > TRANSFERS_PER_ENGINE,
        "too few transfers went through: {}",
        moved.len()
    );

    let mut total = rust_decimal::Decimal::ZERO;
    let mut outs = 0;
    for &w in &wallets {
        let state = store.wallet(w).unwrap();
        assert!(!state.balance.value().is_sign_negative());
        assert_eq!(
            store.replayed_balance(w),
            state.balance,
            "wallet {w} disagrees with its rows"
        );
        total += state.balance.value();
        outs += store
            .entries(w)
            .iter()
            .filter(|e| e.kind == TxnType::TransferOut)
            .count();
    }
    assert_eq!(total, amt("2000.00").value());
    assert_eq!(outs, moved.len(), "one TRANSFER_OUT row per accepted transfer");
    for (out, incoming) in &moved {
        assert!(store.entries(out.wallet_id).contains(out));
        assert!(store.entries(incoming.wallet_id).contains(incoming));
    }
    // Every engine's view, once refreshed, is the store's.
    for engine in &engines {
        for &w in &wallets {
            engine.invalidate(w);
            assert_eq!(engine.get(w).await.unwrap(), store.wallet(w).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_live_actor_limit_idle_actors_stop_long_before_the_idle_timeout() {
    let store = Arc::new(MemoryStore::new());
    let limits = Limits {
        idle_timeout: Duration::from_secs(3600),
        max_live_actors: 5,
        ..Limits::default()
    };
    let engine = Engine::start(store.clone(), limits).await.unwrap();
    let wallets: Vec<_> = (0..20)
        .map(|_| store.create_wallet(amt("10.00"), Currency::Usd))
        .collect();
    for w in &wallets {
        engine.get(*w).await.unwrap();
    }
    assert_eq!(engine.live_actors(), 20);
    // An hour-long idle timeout, but 20 > 5 live actors: they are passivated after about a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.live_actors() > 5 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(engine.live_actors() <= 5, "live actors: {}", engine.live_actors());
    // A passivated wallet comes back with its state.
    assert_eq!(engine.get(wallets[0]).await.unwrap().balance, amt("10.00"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_whose_commits_outlast_the_pressure_idle_time_are_passivated_once_idle() {
    let store = Arc::new(MemoryStore::new());
    let limits = Limits {
        idle_timeout: Duration::from_secs(3600),
        max_live_actors: 1,
        ..Limits::default()
    };
    let engine = Engine::start(store.clone(), limits).await.unwrap();
    let wallets: Vec<_> = (0..3)
        .map(|_| store.create_wallet(amt("10.00"), Currency::Usd))
        .collect();
    // Commits outlast the pressure idle time (1 s): by their last use the actors look idle while their
    // commit is in flight; the sweeper must leave them alone (a command is in flight) and stop them after.
    *store.commit_delay.lock().unwrap() = Duration::from_millis(1800);
    let debits = wallets.iter().map(|w| engine.execute(*w, debit("1.00")));
    for r in futures_util::future::join_all(debits).await {
        posted(r);
    }
    *store.commit_delay.lock().unwrap() = Duration::ZERO;
    assert_eq!(engine.live_actors(), 3);
    // All three answered and are durable; now idle, all but one are passivated.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.live_actors() > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(engine.live_actors() <= 1, "live actors: {}", engine.live_actors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_caller_gave_up_in_the_queue_is_answered_unavailable_and_never_applied() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let limits = Limits {
        reply_timeout: Duration::from_millis(100),
        ..Limits::default()
    };
    let engine = start(&store, limits).await;
    engine.get(w).await.unwrap();
    // The first commit takes longer than the second command may wait in the queue behind it.
    set_commit_delay(&store, Duration::from_millis(600));
    let first = tokio::spawn({
        let engine = engine.clone();
        async move { engine.execute(w, debit("1.00")).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    match engine.execute(w, debit("2.00")).await {
        Err(Rejection::Unavailable(reason)) => assert!(reason.contains("dropped unplanned"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered at its reply timeout, not after the commit"
    );
    // The first command was already in its commit: its caller waited past the reply timeout for the outcome.
    assert_eq!(posted(first.await.unwrap()).balance_after, amt("9.00"));
    set_commit_delay(&store, Duration::ZERO);
    let third = posted(engine.execute(w, debit("3.00")).await);
    assert_eq!(
        third.balance_after,
        amt("6.00"),
        "the dropped command never moved money"
    );
    let amounts: Vec<String> = store.entries(w).iter().map(|e| e.amount.to_string()).collect();
    assert_eq!(amounts, ["1.00", "3.00"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_waits_past_its_reply_timeout_for_a_commit_its_command_is_in() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let limits = Limits {
        reply_timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let engine = start(&store, limits).await;
    set_commit_delay(&store, Duration::from_millis(300));
    let entry = posted(engine.execute(w, debit("4.00")).await);
    assert_eq!(entry.balance_after, amt("6.00"));
    assert_eq!(store.entries(w).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_outlasting_the_commit_wait_is_answered_outcome_unknown_never_unavailable() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let limits = Limits {
        reply_timeout: Duration::from_millis(50),
        commit_wait: Duration::from_millis(100),
        ..Limits::default()
    };
    let engine = start(&store, limits).await;
    set_commit_delay(&store, Duration::from_millis(400));
    assert_eq!(engine.execute(w, debit("1.00")).await, Err(Rejection::OutcomeUnknown));
    // It did land: "unknown" was the only true answer.
    eventually("the slow commit lands", Duration::from_secs(2), || {
        store.entries(w).len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_every_accepted_command_before_the_engine_stops_and_refuses_new_ones() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("100.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;
    set_commit_delay(&store, Duration::from_millis(300));
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.execute(w, debit("1.00")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        engine.shutdown(Duration::from_secs(5)).await,
        "drained before the deadline"
    );
    for task in in_flight {
        posted(task.await.unwrap());
    }
    assert_eq!(
        store.entries(w).len(),
        5,
        "every accepted command committed before the engine stopped"
    );
    match engine.execute(w, debit("1.00")).await {
        Err(Rejection::Unavailable(reason)) => assert!(reason.contains("shutting down"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(store.entries(w).len(), 5);
}

// ---------------------------------------------------------------------------------------------------------
// Several commands of one caller (bulk postings)
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_sent_together_are_planned_together_in_their_order() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("0.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;
    engine.get(w).await.expect("wallet loads");
    let requests = vec![
        credit("50.00"),
        debit("30.00"),
        debit("30.00"),
        credit("10.00"),
        debit("30.00"),
    ];
    let answers = engine.execute_many(w, requests).await;
    assert!(
        matches!(answers[2], Err(Rejection::InsufficientFunds { .. })),
        "{answers:?}"
    );
    let afters: Vec<Amount> = answers
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, a)| posted(a).balance_after)
        .collect();
    assert_eq!(afters, vec![amt("50.00"), amt("20.00"), amt("30.00"), amt("0.00")]);
    // One message, queued before any was planned: one batch for all five (four entries and a refusal).
    assert_eq!(batch_sizes(&store), vec![5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_sent_together_past_the_queue_bound_are_refused_from_the_first_that_did_not_fit() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("100.00"), Currency::Usd);
    let limits = Limits {
        max_queued_per_wallet: 3,
        ..Limits::default()
    };
    let engine = start(&store, limits).await;
    let answers = engine
        .execute_many(
            w,
            vec![
                debit("1.00"),
                debit("1.00"),
                debit("1.00"),
                debit("1.00"),
                debit("1.00"),
            ],
        )
        .await;
    assert_eq!(answers.len(), 5);
    assert!(
        answers[..3].iter().all(|a| matches!(a, Ok(Applied::Posted(_)))),
        "{answers:?}"
    );
    assert!(
        answers[3..].iter().all(|a| matches!(a, Err(Rejection::Overloaded))),
        "{answers:?}"
    );
    assert_eq!(store.wallet(w).unwrap().balance, amt("97.00"));
}

#[tokio::test]
async fn commands_sent_together_to_a_missing_wallet_are_each_answered_not_found() {
    let store = Arc::new(MemoryStore::new());
    let engine = start(&store, Limits::default()).await;
    let answers = engine
        .execute_many(Uuid::new_v4(), vec![credit("1.00"), debit("1.00")])
        .await;
    assert_eq!(
        answers,
        vec![Err(Rejection::WalletNotFound), Err(Rejection::WalletNotFound)]
    );
}

#[test]
fn postings_planned_outside_the_actor_follow_its_rules_and_refuse_a_repeated_reference() {
    let store = MemoryStore::new();
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let state = store.wallet(w).unwrap();
    let requests = vec![
        debit("4.00"),
        debit("7.00"),
        post_ref(Direction::Debit, "1.00", "BOOKING", "b-1"),
        post_ref(Direction::Debit, "1.00", "BOOKING", "b-1"),
        set_status(WalletStatus::Frozen),
    ];
    let limits = Limits {
        alert_thresholds: Arc::from([80u8, 100].as_slice()),
        ..Limits::default()
    };
    let planned = wallet_actors::command::plan_postings(&state, &limits, &requests);
    let b = &planned.batch;
    assert_eq!(b.entries.len(), 2);
    assert_eq!(planned.outcomes[0], Ok(0));
    assert!(matches!(planned.outcomes[1], Err(Rejection::InsufficientFunds { .. })));
    assert_eq!(planned.outcomes[2], Ok(1));
    assert_eq!(
        planned.outcomes[3],
        Err(Rejection::DuplicateReference {
            existing_txn_id: b.entries[1].txn_id
        })
    );
    assert!(matches!(planned.outcomes[4], Err(Rejection::Invalid(_))));
    assert_eq!(b.refusals.len(), 3, "every refusal is kept for the audit log");
    assert_eq!(
        (b.expected_version, b.after.version),
        (state.version, state.version + 1)
    );
    assert_eq!(b.after.balance, amt("5.00"));
}

#[test]
fn postings_planned_outside_the_actor_cannot_debit_what_an_open_hold_reserves() {
    let store = MemoryStore::new();
    let w = store.create_wallet(amt("10.00"), Currency::Usd);
    let mut state = store.wallet(w).unwrap();
    let now = chrono::Utc::now();
    state.holds.push(Hold {
        hold_id: Uuid::new_v4(),
        wallet_id: w,
        amount: amt("8.00"),
        captured: Amount::ZERO,
        status: HoldStatus::Pending,
        reference_id: None,
        reference_type: None,
        description: None,
        metadata: None,
        expires_at: now + chrono::Duration::hours(1),
        budgets: vec![],
        created_by: Uuid::new_v4(),
        created_at: now,
        updated_at: now,
    });
    let planned = wallet_actors::command::plan_postings(&state, &Limits::default(), &[debit("3.00"), debit("2.00")]);
    assert_eq!(
        planned.outcomes[0],
        Err(Rejection::InsufficientFunds {
            balance: amt("2.00"),
            requested: amt("3.00")
        }),
        "judged against the available balance, 10.00 less the 8.00 held"
    );
    assert_eq!(planned.outcomes[1], Ok(0), "the 2.00 not held may be debited");
    assert_eq!(planned.batch.after.balance, amt("8.00"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actor_chains_every_row_of_its_wallet_after_the_head_it_holds() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("100.00"), Currency::Usd);
    let engine = start(&store, Limits::default()).await;
    // Several commands at once, so some share a batch: the links run on across batches.
    let tasks: Vec<_> = (0..6).map(|_| spawn_execute(&engine, w, debit("1.00"))).collect();
    for t in tasks {
        posted(t.await.unwrap());
    }
    engine.execute(w, set_status(WalletStatus::Frozen)).await.unwrap();

    let mut entries = store.entries(w);
    entries.sort_by_key(|e| e.link.map(|l| l.seq));
    let mut head = wallet_actors::chain::Head::default();
    for e in &entries {
        let link = e.link.expect("every entry is chained");
        assert_eq!((link.seq, link.prev_hash), (head.seq + 1, head.hash));
        let row = wallet_actors::chain::Row::Ledger(e.into());
        assert_eq!(wallet_actors::chain::hash(1, &link.prev_hash, &row), Some(link.hash));
        head = link.head();
    }
    // The status change's audit row is the last link: one past the last entry.
    let committed = store.wallet(w).unwrap();
    assert_eq!(committed.head.seq, head.seq + 1);
    assert_ne!(committed.head.hash, head.hash);
}
