//! What the tests of this binary share.
//!
//! | module | what |
//! |---|---|
//! | [`app`] | the app in-process on port 0 (`spawn_app`, `TestApp::builder`), and the only door to its internals |
//! | [`database`] | a database of its own per test, created from `TEST_DATABASE_URL` and dropped afterwards |
//! | [`fixtures`] | tokens, users and wallets over HTTP |
//! | [`replies`] | a reply's status and JSON body; a problem document checked |
//! | [`paths`] | the target directory, `target/faults/`, free ports |
//! | [`cluster`] | a private Postgres cluster (initdb, start, `stop -m immediate`, start again), removed afterwards |
//! | [`redis`] | a private `redis-server` (kill, start again) and a three-node Redis Cluster of them, removed afterwards |
//! | [`service`] | the real `wallet-service` binary as a child process: start, SIGTERM, SIGKILL, restart; an `audit` command run to its end |
//! | [`client`] | keyed requests retried with the same `Idempotency-Key` until a final answer |
//! | [`load`] | concurrent workers sending keyed debits, credits and transfers |
//! | [`audit`] | reads the books: one effect per acknowledged operation, none otherwise, balances = ledger |
//! | [`lock`] | holds a wallet row `FOR UPDATE` from a connection of its own |
//! | [`haproxy`] | a real HAProxy before service processes, routing by consistent hash on the wallet segment |
//! | [`amqp`] | a RabbitMQ vhost of its own, the test's publisher of events, a tap on `wallet.events`, dead letters |
//! | [`summary`] | the one-line JSON figures of a test, printed and appended to `target/faults/summary.jsonl` |

pub mod amqp;
pub mod app;
pub mod audit;
pub mod client;
pub mod cluster;
pub mod database;
pub mod fixtures;
pub mod haproxy;
pub mod load;
pub mod lock;
pub mod paths;
pub mod redis;
pub mod replies;
pub mod service;
pub mod summary;

use std::future::Future;
use std::time::Duration;

/// How long a test waits for something asynchronous (an event consumed, a row published) before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Runs a test body under a time limit, so that a hung fault test fails instead of hanging the suite.
pub async fn within<T>(limit: Duration, what: &str, body: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, body).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Polls `check` every 25 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// [`eventually`] within [`WAIT`], failing the test if `check` never held.
pub async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(eventually(WAIT, check).await, "timed out waiting until {what}");
}
