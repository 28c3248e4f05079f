//! The wallet reader: reads of wallet rows on a cache miss, grouped into one statement while others run.
use std::time::{Duration, Instant};

use uuid::Uuid;
use wallet_service::store::{MAX_READ_GROUP, WALLET_READERS};

use crate::helpers::app::spawn_app;
use crate::helpers::database;

/// Reads started while the readers are stuck; each wallet read this many times.
const READS_PER_WALLET: usize = 10;
/// Unknown ids read among them.
const UNKNOWN: usize = 20;

#[tokio::test]
async fn reads_queued_behind_busy_readers_are_answered_by_a_few_statements_each_with_its_own_row() {
    let app = spawn_app().await;
    let mut wallets = Vec::new();
    for i in 1..=12 {
        let (_, _, wallet) = app.user_with_wallet(&format!("{i}.00"), "USD").await;
        wallets.push((wallet, format!("{i}.00")));
    }
    let unknown: Vec<Uuid> = (0..UNKNOWN).map(|_| Uuid::now_v7()).collect();

    // Another session holds the table: the readers' statements wait on it, and every read started meanwhile
    // queues in the reader.
    let locker = database::connect(&app.db.url).await.unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE wallets IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let before = app.store().reader.statements();
    let mut reads = Vec::new();
    for _ in 0..READS_PER_WALLET {
        for (wallet, _) in &wallets {
            let store = app.store().clone();
            let wallet = *wallet;
            reads.push(tokio::spawn(async move { (wallet, store.wallet_row(wallet).await) }));
        }
    }
    for id in &unknown {
        let (store, id) = (app.store().clone(), *id);
        reads.push(tokio::spawn(async move { (id, store.wallet_row(id).await) }));
    }
    wait_for_blocked_readers(&locker, &app.db.name).await;
    locker.batch_execute("COMMIT").await.unwrap();

    for read in reads {
        let (id, answer) = read.await.unwrap();
        let row = answer.expect("a read answered");
        match wallets.iter().find(|(w, _)| *w == id) {
            Some((_, balance)) => {
                let row = row.expect("a known wallet's row");
                assert_eq!(row.wallet_id, id);
                assert_eq!(row.balance.to_string(), *balance);
            }
            None => assert!(row.is_none(), "an unknown id reads as no wallet"),
        }
    }
    let statements = app.store().reader.statements() - before;
    let total = wallets.len() * READS_PER_WALLET + UNKNOWN;
    // The readers' first statements went alone; everything after them queued and left in full groups.
    let most = (WALLET_READERS + total.div_ceil(MAX_READ_GROUP)) as u64;
    assert!(
        statements <= most,
        "{total} reads took {statements} statements (at most {most})"
    );
    let (first, balance) = &wallets[0];
    let cached = app.store().cache.get(*first).await.expect("a row read is cached");
    assert_eq!(cached.balance.to_string(), *balance);
}

/// Until the readers' statements wait for the table lock (all of them: `WALLET_READERS`).
async fn wait_for_blocked_readers(locker: &tokio_postgres::Client, db: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let blocked: i64 = locker
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' \
                 AND query LIKE '%wallet_id = ANY%'",
                &[&db],
            )
            .await
            .unwrap()
            .get(0);
        if blocked as usize >= WALLET_READERS {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the readers never reached the lock ({blocked} waiting)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
