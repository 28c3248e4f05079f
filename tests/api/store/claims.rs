//! The claim fence: an Idempotency-Key's effect commits only while its claim token holds, so a released or
//! taken-over claim can never commit late, and an unknown outcome is resolved through the key. Also: a
//! command Postgres refuses for its own data fails alone, its neighbours on the same wallet commit.
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;
use wallet_actors::store::{Batch, CommitError};
use wallet_actors::{Direction, IdempotencyTicket, Origin, Rejection, WalletStore};
use wallet_service::store::{Claim, Resolution};

use crate::helpers::app::{Posting, TestApp, spawn_app};
use crate::helpers::lock::RowLock;

use super::{amount, planned_debit};

const ENDPOINT: &str = "POST /wallets/{walletId}/transactions";

/// Claims `key` as a fresh caller and returns its ticket.
async fn claim(app: &TestApp, caller: Uuid, key: &str) -> IdempotencyTicket {
    match app
        .store()
        .claim_idempotency(caller, ENDPOINT, key, b"body")
        .await
        .unwrap()
    {
        Claim::Claimed { token } => IdempotencyTicket {
            caller,
            endpoint: ENDPOINT.into(),
            key: key.into(),
            token,
        },
        _ => panic!("expected a fresh claim of {key}"),
    }
}

/// A one-debit batch of 1.00 under `ticket`, planned against the wallet's committed state.
async fn keyed_debit(app: &TestApp, wallet: Uuid, ticket: &IdempotencyTicket) -> Batch {
    let origin = Origin {
        actor_id: ticket.caller,
        role: "service".into(),
        idempotency: Some(ticket.clone()),
        inbox_event: None,
    };
    planned_debit(app, wallet, "1.00", origin).await
}

async fn debits(app: &TestApp, wallet: Uuid) -> i64 {
    app.count(
        "SELECT count(*) FROM transactions WHERE wallet_id = $1 AND type = 'DEBIT'",
        &[&wallet],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_claim_was_released_writes_nothing() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("10.00", "USD").await;
    let store = app.store();
    let ticket = claim(&app, Uuid::new_v4(), "released").await;
    assert!(store.release_idempotency(&ticket).await.unwrap());
    let batch = keyed_debit(&app, wallet, &ticket).await;
    assert_eq!(store.commit(&batch).await, Err(CommitError::ClaimsLost(vec![0])));
    assert_eq!(debits(&app, wallet).await, 0);
    assert_eq!(app.balance(wallet).await, "10.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_taken_over_after_its_lease_fences_the_old_holder_and_the_new_one_commits() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("10.00", "USD").await;
    let store = app.store();
    let caller = Uuid::new_v4();
    let old = claim(&app, caller, "stalled").await;
    // While the lease runs, the key is in progress, with the rest of the lease as Retry-After.
    match store
        .claim_idempotency(caller, ENDPOINT, "stalled", b"body")
        .await
        .unwrap()
    {
        Claim::InProgress { retry_after_secs } => assert!((1..=10).contains(&retry_after_secs)),
        _ => panic!("expected in progress"),
    }
    let c = app.db.client().await;
    c.execute(
        "UPDATE idempotency_keys SET locked_until = now() - interval '1 second' WHERE key = 'stalled'",
        &[],
    )
    .await
    .unwrap();
    // Another body cannot take the key over, even after the lease.
    assert!(matches!(
        store
            .claim_idempotency(caller, ENDPOINT, "stalled", b"other")
            .await
            .unwrap(),
        Claim::Mismatch
    ));
    let new = match store
        .claim_idempotency(caller, ENDPOINT, "stalled", b"body")
        .await
        .unwrap()
    {
        Claim::Claimed { token } => IdempotencyTicket { token, ..old.clone() },
        _ => panic!("expected a takeover"),
    };
    assert_ne!(new.token, old.token);
    let late = keyed_debit(&app, wallet, &old).await;
    assert_eq!(store.commit(&late).await, Err(CommitError::ClaimsLost(vec![0])));
    assert_eq!(
        debits(&app, wallet).await,
        0,
        "the stalled holder's commit landed nothing"
    );
    store.commit(&keyed_debit(&app, wallet, &new).await).await.unwrap();
    assert_eq!(debits(&app, wallet).await, 1);
    assert!(
        matches!(
            store
                .claim_idempotency(caller, ENDPOINT, "stalled", b"body")
                .await
                .unwrap(),
            Claim::Replay { status: 201, .. }
        ),
        "the reply was recorded in the commit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolving_an_unknown_outcome_finds_the_committed_reply_or_fences_the_attempt_off() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("10.00", "USD").await;
    let store = app.store();
    let committed = claim(&app, Uuid::new_v4(), "committed").await;
    store
        .commit(&keyed_debit(&app, wallet, &committed).await)
        .await
        .unwrap();
    match store.resolve_idempotency(&committed).await.unwrap() {
        Resolution::Replied { status, body } => {
            assert_eq!(status, 201);
            assert!(body.contains("\"type\":\"DEBIT\""), "{body}");
        }
        Resolution::NotApplied => panic!("the committed attempt must be found"),
    }
    let silent = claim(&app, Uuid::new_v4(), "silent").await;
    let batch = keyed_debit(&app, wallet, &silent).await;
    assert!(matches!(
        store.resolve_idempotency(&silent).await.unwrap(),
        Resolution::NotApplied
    ));
    // The attempt wakes up after the resolution said "not applied": it must not land.
    assert_eq!(store.commit(&batch).await, Err(CommitError::ClaimsLost(vec![0])));
    assert_eq!(debits(&app, wallet).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_racing_a_commit_that_holds_the_key_waits_and_then_finds_its_reply() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("10.00", "USD").await;
    let store = app.store().clone();
    let ticket = claim(&app, Uuid::new_v4(), "racing").await;
    let batch = keyed_debit(&app, wallet, &ticket).await;
    // The wallet row is held, so the commit locks the key row (the fence comes first) and then waits.
    let lock = RowLock::take(&app.db.url, wallet).await;
    let commit = tokio::spawn({
        let store = store.clone();
        async move { store.commit(&batch).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let release = tokio::spawn({
        let (store, ticket) = (store.clone(), ticket.clone());
        async move { store.resolve_idempotency(&ticket).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.release().await;
    assert_eq!(commit.await.unwrap(), Ok(()));
    assert!(
        matches!(release.await.unwrap().unwrap(), Resolution::Replied { status: 201, .. }),
        "the release waited for the commit and left its reply"
    );
    assert_eq!(debits(&app, wallet).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_postgres_refuses_for_its_data_fails_alone_and_its_neighbours_on_the_wallet_commit() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let posting = |description: &str| Posting {
        direction: Direction::Debit,
        amount: amount("1.00"),
        description: Some(description.to_string()),
        reference_id: None,
        reference_type: None,
        metadata: None,
    };
    let origin = Origin {
        actor_id: Uuid::new_v4(),
        role: "service".into(),
        ..Default::default()
    };
    // A NUL character never passes the HTTP or event edge; here it goes to the engine directly, as a bug
    // would send it. Postgres refuses the text, and the batch it shares with good debits is split.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (ledger, origin) = (app.ledger(), origin.clone());
            let description = if i % 10 == 3 { "bad\u{0}text" } else { "good" };
            let p = posting(description);
            tokio::spawn(async move { (i % 10 == 3, ledger.post(wallet, p, origin).await) })
        })
        .collect();
    let (mut good, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (false, Ok(_)) => good += 1,
            (true, Err(Rejection::StoreRefused)) => refused += 1,
            (poisoned, other) => panic!("poisoned={poisoned}: unexpected {other:?}"),
        }
    }
    assert_eq!((good, refused), (36, 4));
    assert_eq!(debits(&app, wallet).await, 36);
    assert_eq!(app.balance(wallet).await, "64.00");
    // And over HTTP the wallet goes on as before.
    let res = app.post_txn(wallet, json!({"amount": "1.00", "type": "DEBIT"})).await;
    assert_eq!(res.status(), 201);
}
