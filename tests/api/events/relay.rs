//! The outbox relay: rows written while the broker is unreachable are published after a restart, in
//! order per wallet, with the contract's message properties; without a broker the outbox drains into
//! the in-process bus; published rows are pruned after the retention period; two relays over one
//! database publish every row once, in order; a row of many events is marked published only when all of
//! them are, and a pass claims rows by their events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;
use wallet_actors::{Amount, Direction, Origin};
use wallet_service::events::{relay, topology};

use crate::helpers::amqp::{Broker, Vhost, attached_on};
use crate::helpers::app::{Posting, TestApp, fast_events};
use crate::helpers::database::TestDatabase;
use crate::helpers::wait_until;

fn debit(amount: &str, reference: &str) -> Posting {
    Posting {
        direction: Direction::Debit,
        amount: Amount::parse(amount).unwrap(),
        description: None,
        reference_id: Some(reference.into()),
        reference_type: Some("TEST".into()),
        metadata: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_written_while_the_broker_is_unreachable_are_published_after_a_restart() {
    let vhost = Vhost::create().await;
    // First "process": its broker cannot be reached (nothing listens on port 1).
    let mut first = TestApp::builder()
        .amqp("amqp://guest:guest@127.0.0.1:1/%2f")
        .events(fast_events())
        .spawn()
        .await;
    let err = first.readiness().await.expect_err("not ready without its consumer");
    assert!(err.contains("consumer"), "{err}");
    let mut wallets = Vec::new();
    for _ in 0..3 {
        let (_, _, w) = first.user_with_wallet("100.00", "USD").await;
        for i in 0..5 {
            first
                .ledger()
                .post(w, debit("1.00", &format!("r{i}")), Origin::default())
                .await
                .expect("debit");
        }
        wallets.push(w);
    }
    first.stop().await;
    assert_eq!(
        first.unpublished().await,
        21,
        "3 WalletCreated + 18 TransactionCompleted (3 opening balances, 15 debits) wait in the outbox"
    );

    let broker = Broker::connect(&vhost).await;
    topology::declare_published(&broker.ch, &broker.topology).await.unwrap();
    let tap = broker.tap().await;
    let mut second = attached_on(&vhost, first.another().events(fast_events())).await;
    assert!(second.readiness().await.is_ok());
    wait_until("the restarted relay publishes everything", || async {
        second.unpublished().await == 0
    })
    .await;
    wait_until("the tap saw 21 events", || async { tap.all().len() >= 21 }).await;

    let c = second.db.client().await;
    let rows = c
        .query(
            "SELECT event_id, aggregate_id FROM outbox_events ORDER BY seq, pos",
            &[],
        )
        .await
        .unwrap();
    let seen = tap.all();
    let ids: HashSet<String> = seen.iter().filter_map(|p| p.message_id.clone()).collect();
    for r in &rows {
        assert!(
            ids.contains(&r.get::<_, Uuid>(0).to_string()),
            "every row was published"
        );
    }
    for p in &seen {
        assert_eq!(
            p.message_id.as_deref(),
            p.body["event_id"].as_str(),
            "message_id = event_id"
        );
        assert_eq!(p.delivery_mode, Some(2));
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
    }
    // Per wallet, the order of publication is the order of the outbox.
    let mut expected: HashMap<Uuid, Vec<String>> = HashMap::new();
    for r in &rows {
        expected
            .entry(r.get(1))
            .or_default()
            .push(r.get::<_, Uuid>(0).to_string());
    }
    for w in &wallets {
        let got: Vec<String> = seen
            .iter()
            .filter(|p| p.body["data"]["wallet_id"] == w.to_string())
            .filter_map(|p| p.message_id.clone())
            .collect();
        assert_eq!(&got, &expected[w], "wallet {w}'s events in order");
        let balances: Vec<&str> = seen
            .iter()
            .filter(|p| p.body["event_type"] == "TransactionCompleted" && p.body["data"]["wallet_id"] == w.to_string())
            .filter_map(|p| p.body["data"]["new_balance"].as_str())
            .collect();
        // The opening balance (a ledger entry), then the debits.
        assert_eq!(balances, vec!["100.00", "99.00", "98.00", "97.00", "96.00", "95.00"]);
    }
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_the_outbox_drains_into_the_in_process_bus() {
    let mut app = TestApp::builder().events(fast_events()).spawn().await;
    assert!(app.readiness().await.is_ok(), "no broker, nothing to attach");
    let mut bus = app.subscribe_events();
    let (user, _, wallet) = app.user_with_wallet("10.00", "INR").await;
    app.ledger()
        .post(wallet, debit("2.50", "bus-1"), Origin::default())
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(10), bus.recv())
            .await
            .expect("an event on the bus")
            .expect("bus open");
        got.push(e);
    }
    assert_eq!(got[0].event_type, "WalletCreated");
    assert_eq!(got[0].routing_key, "wallet.created");
    assert_eq!(got[0].payload["data"]["user_id"], user.to_string());
    assert_eq!(got[0].payload["data"]["currency"], "INR");
    // The opening balance, a ledger entry, then the debit.
    assert_eq!(got[1].event_type, "TransactionCompleted");
    assert_eq!(got[1].payload["data"]["new_balance"], "10.00");
    assert_eq!(got[2].event_type, "TransactionCompleted");
    assert_eq!(got[2].payload["data"]["new_balance"], "7.50");
    assert_eq!(got[2].payload["event_id"], got[2].event_id.to_string());
    wait_until("rows marked published", || async { app.unpublished().await == 0 }).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_rows_are_pruned_after_the_retention_period() {
    let app = TestApp::builder().events(fast_events()).spawn().await;
    let c = app.db.client().await;
    let insert = "INSERT INTO outbox (event_id, event_type, routing_key, payload, published_at) \
                  VALUES ($1, 'Test', 'test', '{}', now() - make_interval(days => $2))";
    let old = Uuid::now_v7();
    let recent = Uuid::now_v7();
    c.execute(insert, &[&old, &8]).await.unwrap();
    c.execute(insert, &[&recent, &6]).await.unwrap();
    let pruned = relay::prune(app.pool(), relay::OUTBOX_RETENTION).await.unwrap();
    assert_eq!(pruned, 1);
    let left: Vec<Uuid> = c
        .query(
            "SELECT event_id FROM outbox_events WHERE event_id = ANY($1)",
            &[&vec![old, recent]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![recent]);
}

/// Records what it is given, slowly enough that two relays' passes overlap.
struct RecordingSink {
    published: Arc<std::sync::Mutex<Vec<(i64, Uuid)>>>,
}

#[async_trait::async_trait]
impl relay::Sink for RecordingSink {
    async fn ready(&mut self) -> Result<(), relay::RelayError> {
        Ok(())
    }

    async fn publish(&mut self, rows: &[relay::OutboxMessage]) -> (usize, Option<relay::RelayError>) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut published = self.published.lock().unwrap();
        published.extend(rows.iter().map(|r| (r.seq, r.event_id)));
        (rows.len(), None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_over_one_database_publish_every_row_once_and_in_order() {
    // The relay reads rows without row locks: the database's advisory lock alone must keep a second relay
    // (another instance) from publishing the same rows or overtaking the first.
    let db = TestDatabase::create().await;
    wallet_service::store::db::migrate(&db.url).await.unwrap();
    let c = db.client().await;
    // Both forms of row (`sql/V13`): 1,200 rows of one event, then 400 rows of a commit's three events.
    const ROWS: i64 = 1_200;
    const ARRAYS: i64 = 400;
    const EVENTS: i64 = ROWS + 3 * ARRAYS;
    c.execute(
        "INSERT INTO outbox (event_id, event_type, routing_key, payload) \
         SELECT gen_random_uuid(), 'Test', 'test', '{}' FROM generate_series(1::bigint, $1)",
        &[&ROWS],
    )
    .await
    .unwrap();
    insert_arrays(&c, ARRAYS, 3).await;
    let published = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut relays = Vec::new();
    for _ in 0..2 {
        let pool =
            wallet_service::store::db::pool(&db.url, 2, &Default::default(), wallet_service::store::pool::PRIMARY)
                .unwrap();
        let mut sink = RecordingSink {
            published: published.clone(),
        };
        relays.push(tokio::spawn(async move {
            let mut idle_passes = 0;
            while idle_passes < 20 {
                match relay::pass(&pool, &mut sink).await.unwrap() {
                    0 => {
                        idle_passes += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    _ => idle_passes = 0,
                }
            }
        }));
    }
    for r in relays {
        r.await.unwrap();
    }
    let published = published.lock().unwrap().clone();
    let ids: HashSet<Uuid> = published.iter().map(|(_, id)| *id).collect();
    assert_eq!(published.len() as i64, EVENTS, "every event published exactly once");
    assert_eq!(ids.len() as i64, EVENTS);
    assert!(
        published.windows(2).all(|w| w[0].0 <= w[1].0),
        "rows left in seq order across both relays"
    );
    assert_eq!(
        published.iter().map(|(seq, _)| *seq).collect::<HashSet<_>>().len() as i64,
        ROWS + ARRAYS
    );
    let unpublished: i64 = c
        .query_one("SELECT count(*) FROM outbox_events WHERE published_at IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(unpublished, 0);
}

/// Inserts `rows` outbox rows of the array form, each of `per_row` test events; returns their event ids
/// in publish order.
async fn insert_arrays(c: &tokio_postgres::Client, rows: i64, per_row: i32) -> Vec<Uuid> {
    c.query(
        "WITH e AS (SELECT r, gen_random_uuid() AS id, i FROM generate_series(1::bigint, $1) r, \
                           generate_series(1, $2) i), \
              a AS (INSERT INTO outbox (events, event_count) \
                    SELECT json_agg(json_build_object('id', id, 'type', 'Test', 'key', 'test', \
                                                      'aggregate', id, 'body', json_build_object('i', i)) ORDER BY i), $2 \
                      FROM e GROUP BY r ORDER BY r RETURNING seq, events) \
         SELECT (x->>'id')::uuid FROM a, json_array_elements(a.events) x ORDER BY a.seq",
        &[&rows, &per_row],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Confirms only the first `cut` events of its first pass (as a broker that nacks one would), then all.
struct CuttingSink {
    cut: Option<usize>,
    published: Vec<(i64, Uuid, String)>,
}

#[async_trait::async_trait]
impl relay::Sink for CuttingSink {
    async fn ready(&mut self) -> Result<(), relay::RelayError> {
        Ok(())
    }

    async fn publish(&mut self, rows: &[relay::OutboxMessage]) -> (usize, Option<relay::RelayError>) {
        let n = self.cut.take().map_or(rows.len(), |cut| cut.min(rows.len()));
        self.published
            .extend(rows[..n].iter().map(|r| (r.seq, r.event_id, r.payload.clone())));
        (n, (n < rows.len()).then_some(relay::RelayError::Nacked))
    }
}

async fn unpublished_seqs(c: &tokio_postgres::Client) -> Vec<i64> {
    c.query("SELECT seq FROM outbox WHERE published_at IS NULL ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_of_many_events_is_marked_published_only_when_every_event_of_it_is_confirmed() {
    let db = TestDatabase::create().await;
    wallet_service::store::db::migrate(&db.url).await.unwrap();
    let c = db.client().await;
    let single = "INSERT INTO outbox (event_id, event_type, routing_key, payload) \
                  VALUES ($1, 'Test', 'test', '{\"one\": true}') RETURNING seq";
    let first = Uuid::now_v7();
    let first_seq: i64 = c.query_one(single, &[&first]).await.unwrap().get(0);
    let array = insert_arrays(&c, 1, 3).await;
    let last = Uuid::now_v7();
    let last_seq: i64 = c.query_one(single, &[&last]).await.unwrap().get(0);
    let pool =
        wallet_service::store::db::pool(&db.url, 2, &Default::default(), wallet_service::store::pool::PRIMARY).unwrap();

    // The broker confirms the single row's event and the first of the array's three, then nacks.
    let mut sink = CuttingSink {
        cut: Some(2),
        published: Vec::new(),
    };
    let err = relay::pass(&pool, &mut sink)
        .await
        .expect_err("the nack is the pass's error");
    assert!(matches!(err, relay::RelayError::Nacked), "{err}");
    let array_seq = sink.published[1].0;
    assert_eq!(
        unpublished_seqs(&c).await,
        vec![array_seq, last_seq],
        "the single row is published; the array, confirmed in part, is not, nor what follows it"
    );
    assert_ne!(first_seq, array_seq);

    // The next pass sends the array whole again (at-least-once), then the last row, and marks both.
    assert_eq!(relay::pass(&pool, &mut sink).await.unwrap(), 4);
    assert!(unpublished_seqs(&c).await.is_empty());
    let ids: Vec<Uuid> = sink.published.iter().map(|(_, id, _)| *id).collect();
    let mut expected = vec![first, array[0]];
    expected.extend(&array);
    expected.push(last);
    assert_eq!(ids, expected, "in order; the array's first event twice");
    // Each event's body is published as written: an array element's body, not the element.
    assert_eq!(sink.published[0].2, r#"{"one": true}"#);
    assert_eq!(sink.published[3].2, r#"{"i" : 2}"#);
    assert_eq!(sink.published[5].0, last_seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_claims_rows_while_the_events_before_them_are_fewer_than_its_batch() {
    let db = TestDatabase::create().await;
    wallet_service::store::db::migrate(&db.url).await.unwrap();
    let c = db.client().await;
    let per_row = 300;
    assert!((per_row as i64) < relay::RELAY_BATCH && 2 * (per_row as i64) >= relay::RELAY_BATCH);
    insert_arrays(&c, 3, per_row).await;
    let pool =
        wallet_service::store::db::pool(&db.url, 2, &Default::default(), wallet_service::store::pool::PRIMARY).unwrap();
    let mut sink = CuttingSink {
        cut: None,
        published: Vec::new(),
    };
    assert_eq!(
        relay::pass(&pool, &mut sink).await.unwrap(),
        2 * per_row as usize,
        "the second row starts below the batch, the third at or past it"
    );
    assert_eq!(unpublished_seqs(&c).await.len(), 1);
    assert_eq!(relay::pass(&pool, &mut sink).await.unwrap(), per_row as usize);
    assert!(unpublished_seqs(&c).await.is_empty());
}
