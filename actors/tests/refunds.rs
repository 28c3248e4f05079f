//! The refund rule as the engine settles it: a CREDIT with the reference of a DEBIT of the same wallet is a
//! refund of it and may not exceed it. The store judges it (`CommitError::RefundsExceedDebits`, nothing of
//! the batch written); the actor answers those refunds `RefundExceedsDebit` and re-plans the rest.
//!
//! Commands are planned together behind a slow commit, as in `engine.rs`: a blocker sits in a commit
//! (`commit_delay`) while the others queue; they are then planned in one batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use wallet_actors::memory::MemoryStore;
use wallet_actors::{
    Amount, Applied, Command, Currency, Direction, Engine, Entry, Limits, Origin, Rejection, Request, WalletStore,
};

fn amt(text: &str) -> Amount {
    Amount::parse(text).unwrap()
}

fn post(direction: Direction, amount: &str, reference: Option<&str>) -> Request {
    Request {
        command: Command::Post {
            direction,
            amount: amt(amount),
            description: None,
            reference_id: reference.map(str::to_string),
            reference_type: reference.map(|_| "BOOKING".to_string()),
            metadata: None,
        },
        origin: Origin {
            actor_id: Uuid::new_v4(),
            role: "service".into(),
            ..Default::default()
        },
    }
}

async fn start(store: &Arc<MemoryStore>) -> Engine {
    let store: Arc<dyn WalletStore> = store.clone();
    Engine::start(store, Limits::default()).await.expect("engine starts")
}

fn posted(result: Result<Applied, Rejection>) -> Entry {
    match result {
        Ok(Applied::Posted(entry)) => entry,
        other => panic!("expected a posted entry, got {other:?}"),
    }
}

/// Runs the requests in one batch: behind a blocker (a credit of 0.50) parked in a slow commit.
async fn in_one_batch(
    engine: &Engine,
    store: &MemoryStore,
    wallet: Uuid,
    requests: Vec<Request>,
) -> Vec<Result<Applied, Rejection>> {
    engine.get(wallet).await.expect("wallet loads");
    *store.commit_delay.lock().unwrap() = Duration::from_millis(200);
    let e = engine.clone();
    let blocker = tokio::spawn(async move { e.execute(wallet, post(Direction::Credit, "0.50", None)).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let n = requests.len();
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|r| {
            let e = engine.clone();
            tokio::spawn(async move { e.execute(wallet, r).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.queued_commands() < n + 1 {
        assert!(
            Instant::now() < deadline,
            "the commands did not queue behind the blocker"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    *store.commit_delay.lock().unwrap() = Duration::ZERO;
    posted(blocker.await.unwrap());
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_above_its_debit_is_refused_and_its_neighbours_commit() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("100.00"), Currency::Usd);
    let engine = start(&store).await;
    posted(engine.execute(w, post(Direction::Debit, "30.00", Some("b-1"))).await);

    let answers = in_one_batch(
        &engine,
        &store,
        w,
        vec![
            post(Direction::Credit, "10.00", None),
            post(Direction::Credit, "30.01", Some("b-1")),
            post(Direction::Debit, "5.00", None),
        ],
    )
    .await;
    assert_eq!(
        answers[1],
        Err(Rejection::RefundExceedsDebit { debited: amt("30.00") }),
        "{answers:?}"
    );
    let (credit, debit) = (posted(answers[0].clone()), posted(answers[2].clone()));
    assert_eq!((credit.amount, debit.amount), (amt("10.00"), amt("5.00")));
    // Nothing of the first batch was written; its other two commands were re-planned and committed together.
    assert_eq!(store.batch_sizes.lock().unwrap().last(), Some(&2));
    // 100 - 30 + 0.50 + 10 - 5: the refund moved nothing.
    assert_eq!(store.wallet(w).unwrap().balance, amt("75.50"));
    assert_eq!(store.replayed_balance(w), amt("75.50"));
    assert!(
        !store
            .entries(w)
            .iter()
            .any(|e| e.reference_id.is_some() && e.amount == amt("30.01"))
    );

    // The whole debit may be refunded, once.
    let refund = posted(engine.execute(w, post(Direction::Credit, "30.00", Some("b-1"))).await);
    assert_eq!(refund.balance_after, amt("105.50"));
    assert_eq!(
        engine.execute(w, post(Direction::Credit, "1.00", Some("b-1"))).await,
        Err(Rejection::DuplicateReference {
            existing_txn_id: refund.txn_id
        })
    );
    assert!(!Rejection::RefundExceedsDebit { debited: amt("1.00") }.transient());
    assert_eq!(
        Rejection::RefundExceedsDebit { debited: amt("1.00") }.code(),
        "REFUND_EXCEEDS_DEBIT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_and_its_refund_in_one_batch_are_judged_together() {
    let store = Arc::new(MemoryStore::new());
    let w = store.create_wallet(amt("100.00"), Currency::Usd);
    let engine = start(&store).await;
    let answers = in_one_batch(
        &engine,
        &store,
        w,
        vec![
            post(Direction::Debit, "20.00", Some("b-2")),
            post(Direction::Credit, "25.00", Some("b-2")),
            post(Direction::Debit, "20.00", Some("b-3")),
            post(Direction::Credit, "15.00", Some("b-3")),
        ],
    )
    .await;
    posted(answers[0].clone());
    assert_eq!(
        answers[1],
        Err(Rejection::RefundExceedsDebit { debited: amt("20.00") }),
        "{answers:?}"
    );
    posted(answers[2].clone());
    assert_eq!(store.batch_sizes.lock().unwrap().last(), Some(&3));
    // A partial refund is a refund too.
    assert_eq!(posted(answers[3].clone()).amount, amt("15.00"));
    // 100 + 0.50 - 20 - 20 + 15.
    assert_eq!(store.wallet(w).unwrap().balance, amt("75.50"));
    assert_eq!(store.replayed_balance(w), amt("75.50"));
}
