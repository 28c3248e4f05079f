//! `DATABASE_READ_URL` on a real streaming replica: a private primary, a replica made from it with
//! `pg_basebackup -R`, and the service reading history there. Replay on the replica is paused
//! (`pg_wal_replay_pause()`) to make it lag on purpose:
//! - a write made through *another* process is unknown to the reading process, so its history and balance
//!   report come from the replica, which does not have the write yet: proof that reads are served there;
//! - a write made through the reading process itself is in its very next history read (read-your-writes:
//!   the replica has not replayed that wallet's commit, so the read goes to the primary, counted as a
//!   `lagging` fallback); once replay resumes and passes the commit, the wallet reads from the replica again;
//! - the replica stopped: reads fall back to the primary (`unreachable`) and answer in full.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::sum_of;
use crate::helpers::audit::Effect;
use crate::helpers::client::RetryingClient;
use crate::helpers::cluster::PgCluster;
use crate::helpers::database::{TestDatabase, connect};
use crate::helpers::fixtures::{Bank, admin_token, service_token};
use crate::helpers::service::{ServiceConfig, ServiceProcess};
use crate::helpers::{WAIT, eventually, within};

const TEST_LIMIT: Duration = Duration::from_secs(120);

/// `GET path` on `base` as the admin: status and JSON body.
async fn get(base: &str, path: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The amounts of a wallet's history, newest first.
async fn history(base: &str, wallet: Uuid) -> Vec<String> {
    let (status, body) = get(base, &format!("/wallets/{wallet}/transactions")).await;
    assert_eq!(status, 200, "history of {wallet}: {body}");
    body["transactions"]
        .as_array()
        .unwrap_or_else(|| panic!("a history page: {body}"))
        .iter()
        .map(|t| {
            format!(
                "{} {}",
                t["type"].as_str().unwrap_or("?"),
                t["amount"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

async fn balance_report(base: &str, wallet: Uuid) -> String {
    let (status, body) = get(base, &format!("/wallets/{wallet}/balance")).await;
    assert_eq!(status, 200, "balance report of {wallet}: {body}");
    body["balance"].as_str().unwrap_or_default().to_string()
}

/// The debits of a company's spend report (`GET /reports/spend`, yesterday to tomorrow, by type).
async fn spend_debits(base: &str, company: Uuid) -> String {
    let today = chrono::Utc::now().date_naive();
    let (from, to) = (today - chrono::Duration::days(1), today + chrono::Duration::days(1));
    let (status, body) = get(
        base,
        &format!("/reports/spend?from={from}&to={to}&group_by=type&company_id={company}"),
    )
    .await;
    assert_eq!(status, 200, "spend report of {company}: {body}");
    body["totals"][0]["debits"]
        .as_str()
        .unwrap_or_else(|| panic!("totals in {body}"))
        .to_string()
}

async fn metric(svc: &ServiceProcess, name: &str, label: Option<&str>) -> f64 {
    let text = reqwest::get(format!("{}/metrics", svc.base_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    sum_of(&text, name, label)
}

/// A keyed debit through `base`, retried until final; it must be acknowledged.
async fn debit(base: &str, wallet: Uuid, amount: &str) {
    let client = RetryingClient::new(base, &service_token());
    let effect = Effect::Debit {
        wallet,
        amount: amount.parse().expect("an amount"),
    };
    let outcome = client.until_final(effect.request(None)).await;
    assert!(
        outcome.acknowledged(),
        "the debit is acknowledged: {:?}",
        outcome.final_answer
    );
}

/// The replica's replay is paused or resumed.
async fn set_replay(replica: &tokio_postgres::Client, paused: bool) {
    let f = if paused {
        "pg_wal_replay_pause"
    } else {
        "pg_wal_replay_resume"
    };
    replica
        .batch_execute(&format!("SELECT {f}()"))
        .await
        .expect("replay control on the replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_and_reports_are_read_on_the_replica_but_never_older_than_the_readers_own_writes() {
    within(TEST_LIMIT, "the read-replica test", async {
        let primary = PgCluster::start().await;
        let mut replica = PgCluster::replica_of(&primary).await;
        let db = TestDatabase::create_on(&primary.url("postgres")).await;
        let replica_url = replica.url(&db.name);
        assert!(
            eventually(WAIT, || async { connect(&replica_url).await.is_ok() }).await,
            "the test database reaches the replica"
        );
        let reader = ServiceProcess::start(
            "replica-reader",
            ServiceConfig {
                env: vec![("DATABASE_READ_URL".into(), replica_url.clone())],
                ..ServiceConfig::new(&db.url)
            },
        )
        .await;
        // Another instance over the same primary: the reader does not know what it writes.
        let other = ServiceProcess::start("replica-other", ServiceConfig::new(&db.url)).await;
        let (r, o) = (reader.base_url(), other.base_url());

        let bank = Bank::new(&r);
        let mine = bank.open_wallet("100.00").await.wallet_id;
        let their_wallet = bank.open_wallet("100.00").await;
        let (theirs, their_company) = (their_wallet.wallet_id, their_wallet.company_id);
        debit(&r, mine, "1.00").await;
        let replica_sql = connect(&replica.url("postgres")).await.expect("connect to the replica");
        let replica_db = connect(&replica_url)
            .await
            .expect("connect to the replica's test database");
        let replayed_rows = || async {
            replica_db
                .query_one("SELECT count(*) FROM transactions", &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(0)
        };
        // Opening credits of both wallets and the debit.
        assert!(
            eventually(WAIT, || async { replayed_rows().await >= 3 }).await,
            "the replica replays"
        );
        assert_eq!(history(&r, theirs).await, ["CREDIT 100.00"]);

        set_replay(&replica_sql, true).await;
        // Served by the replica: a write through the other process is not in the reader's answers yet.
        debit(&o, theirs, "2.00").await;
        assert_eq!(
            history(&o, theirs).await,
            ["DEBIT 2.00", "CREDIT 100.00"],
            "the other process reads the primary"
        );
        let replica_reads = metric(&reader, "wallet_reads_total", Some("from=\"replica\"")).await;
        assert_eq!(
            history(&r, theirs).await,
            ["CREDIT 100.00"],
            "the reader's history comes from the paused replica"
        );
        assert_eq!(balance_report(&r, theirs).await, "100.00", "so does its balance report");
        assert_eq!(
            spend_debits(&o, their_company).await,
            "2.00",
            "the primary's spend report has it"
        );
        assert_eq!(
            spend_debits(&r, their_company).await,
            "0.00",
            "and the reader's spend report (aggregates, horizon and tail in one replica snapshot) not yet"
        );
        assert!(metric(&reader, "wallet_reads_total", Some("from=\"replica\"")).await > replica_reads);

        // Read-your-writes: the reader's own write is in its next read although the replica lags.
        let lagging = metric(&reader, "wallet_read_fallback_total", Some("reason=\"lagging\"")).await;
        debit(&r, mine, "3.00").await;
        assert_eq!(history(&r, mine).await, ["DEBIT 3.00", "DEBIT 1.00", "CREDIT 100.00"]);
        assert!(
            metric(&reader, "wallet_read_fallback_total", Some("reason=\"lagging\"")).await > lagging,
            "the lagging replica was passed over for the primary"
        );

        // Replay resumes: both writes arrive; the reader's wallet reads from the replica again.
        set_replay(&replica_sql, false).await;
        assert!(
            eventually(WAIT, || async { replayed_rows().await >= 5 }).await,
            "the replica catches up"
        );
        let replica_reads = metric(&reader, "wallet_reads_total", Some("from=\"replica\"")).await;
        assert_eq!(history(&r, mine).await, ["DEBIT 3.00", "DEBIT 1.00", "CREDIT 100.00"]);
        assert_eq!(history(&r, theirs).await, ["DEBIT 2.00", "CREDIT 100.00"]);
        assert!(metric(&reader, "wallet_reads_total", Some("from=\"replica\"")).await >= replica_reads + 2.0);
        assert_eq!(
            spend_debits(&r, their_company).await,
            "2.00",
            "the replica's spend report has it now"
        );

        // The replica down: reads go to the primary, in full.
        replica.stop_immediate().await;
        let unreachable = metric(&reader, "wallet_read_fallback_total", Some("reason=\"unreachable\"")).await;
        assert_eq!(history(&r, mine).await, ["DEBIT 3.00", "DEBIT 1.00", "CREDIT 100.00"]);
        assert_eq!(history(&r, theirs).await, ["DEBIT 2.00", "CREDIT 100.00"]);
        assert!(
            metric(&reader, "wallet_read_fallback_total", Some("reason=\"unreachable\"")).await >= unreachable + 2.0,
            "both reads fell back to the primary, counted"
        );
    })
    .await;
}
