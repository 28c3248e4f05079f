//! Postgres (a private cluster) stopped: once the breaker is open, every request that needs Postgres is
//! answered 503 `UNAVAILABLE` with `Retry-After` within [`FAST_FAIL`] of wall time measured by the client —
//! instead of the pool's and the connect timeouts (seconds) — with nothing of the database, the libraries
//! or the OS in the body, and nothing applied; `/ready` answers 503; the longer the breaker stays open, the
//! longer the `Retry-After` it asks for. Started again: `/ready` 200, a debit
//! 201 and the breaker closed, with no restart of the service.
//!
//! [`FAST_FAIL`] is a behavioural bound of the breaker, not a benchmark: a refused call does no I/O at all,
//! so its answer costs a local HTTP round trip (about a millisecond), while waiting on Postgres would cost
//! at least the pool's wait (2 s). 50 ms leaves a loaded two-core machine room for scheduling delays and
//! still fails if any request waited on a connection attempt.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{breaker_series, count, debit, metrics, sample};
use crate::helpers::cluster::PgCluster;
use crate::helpers::database::TestDatabase;
use crate::helpers::fixtures::{Bank, admin_token, service_token};
use crate::helpers::service::{ServiceConfig, ServiceProcess};
use crate::helpers::{eventually, within};

/// Longest a refused request may take, measured by the client.
const FAST_FAIL: Duration = Duration::from_millis(50);
/// Requests measured while the breaker is open.
const MEASURED: usize = 20;
/// How long the breaker may take to open once Postgres is gone, and `/ready` to answer 200 once it is back.
const WITHIN: Duration = Duration::from_secs(30);
/// The breaker's longest open period (`resilience::OPEN_MAX`), the most a `Retry-After` may ask.
const OPEN_MAX_SECS: u64 = 15;
/// Words of the dependencies' own messages that must never reach a client.
const LEAKS: [&str; 9] = [
    "postgres",
    "sqlstate",
    "refused",
    "os error",
    "deadpool",
    "tokio",
    "breaker",
    "error connecting",
    "db error",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_stopped_requests_fail_fast_with_503_and_the_breaker_closes_by_itself_when_it_returns() {
    within(Duration::from_secs(150), "the Postgres breaker test", async {
        let mut cluster = PgCluster::start().await;
        let db = TestDatabase::create_on(&cluster.url("postgres")).await;
        let svc = ServiceProcess::start("postgres-breaker", ServiceConfig::new(&db.url)).await;
        let base = svc.base_url();
        let bank = Bank::new(&base);
        let wallet = bank.open_wallet("100.00").await;
        let (http, token) = (reqwest::Client::new(), service_token());
        assert_eq!(
            debit(&http, &base, &token, wallet.wallet_id, "1.00", "before")
                .await
                .status(),
            201
        );
        assert_eq!(
            sample(&metrics(&base).await, &breaker_series("postgres")),
            Some(0.0),
            "closed at first"
        );

        cluster.stop_immediate().await;
        // Failed connection attempts open the breaker.
        let mut attempt = 0;
        let opened = eventually(WITHIN, || {
            attempt += 1;
            let (http, token, base) = (http.clone(), token.clone(), base.clone());
            async move {
                let _ = debit(
                    &http,
                    &base,
                    &token,
                    wallet.wallet_id,
                    "1.00",
                    &format!("trip-{attempt}"),
                )
                .await;
                sample(&metrics(&base).await, &breaker_series("postgres")) == Some(2.0)
            }
        })
        .await;
        assert!(
            opened,
            "the breaker did not open within {WITHIN:?}; log {}",
            svc.log_path().display()
        );
        let fast_before = count(
            &metrics(&base).await,
            "wallet_dependency_fast_failures_total{dependency=\"postgres\"}",
        );

        let mut refused_keys = vec![];
        for i in 0..MEASURED {
            let key = format!("refused-{i}");
            let started = Instant::now();
            // Alternately a keyed debit and a wallet read: both need Postgres.
            let res = if i % 2 == 0 {
                debit(&http, &base, &token, wallet.wallet_id, "1.00", &key).await
            } else {
                http.get(format!("{base}/wallets/{}", Uuid::new_v4()))
                    .bearer_auth(admin_token())
                    .send()
                    .await
                    .expect("request")
            };
            let status = res.status().as_u16();
            let retry_after = res.headers().get("retry-after").cloned();
            let body = res.text().await.expect("body");
            let took = started.elapsed();
            assert_eq!(status, 503, "request {i}: {body}");
            assert!(retry_after.is_some(), "request {i} without Retry-After");
            let problem: serde_json::Value = serde_json::from_str(&body).expect("a problem document");
            assert_eq!(problem["code"], "UNAVAILABLE", "{body}");
            let lower = body.to_lowercase();
            for word in LEAKS {
                assert!(!lower.contains(word), "request {i}'s body names {word:?}: {body}");
            }
            assert!(took < FAST_FAIL, "request {i} took {took:?} with the breaker open");
            if i % 2 == 0 {
                refused_keys.push(key);
            }
        }
        let text = metrics(&base).await;
        assert!(
            count(&text, "wallet_dependency_fast_failures_total{dependency=\"postgres\"}")
                >= fast_before + MEASURED as f64,
            "each refused request is counted as a fast failure"
        );
        assert_eq!(svc.ready_status().await, Some(503), "/ready while Postgres is down");

        // Each failed probe opens the breaker for longer, and a 503's `Retry-After` says how long: requests
        // go on until one asks for at least two seconds (the third open period is about two), and none asks
        // for more than the longest period.
        let (mut asked, deadline) = (vec![], Instant::now() + WITHIN);
        let longer = loop {
            let res = http
                .get(format!("{base}/wallets/{}", Uuid::new_v4()))
                .bearer_auth(admin_token())
                .send()
                .await
                .expect("request");
            assert_eq!(res.status(), 503);
            let secs: u64 = res.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            asked.push(secs);
            if secs >= 2 || Instant::now() >= deadline {
                break secs >= 2;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            longer,
            "Retry-After never grew with the breaker's open period: {asked:?}"
        );
        assert!(asked.iter().all(|s| (1..=OPEN_MAX_SECS).contains(s)), "{asked:?}");

        cluster.start_again().await;
        let ready = eventually(WITHIN, || async { svc.ready_status().await == Some(200) }).await;
        assert!(ready, "/ready not 200 within {WITHIN:?} of Postgres' start");
        assert_eq!(
            debit(&http, &base, &token, wallet.wallet_id, "2.00", "after")
                .await
                .status(),
            201
        );
        assert_eq!(
            sample(&metrics(&base).await, &breaker_series("postgres")),
            Some(0.0),
            "closed again"
        );

        // A fast 503 meant "not applied": only the debits before and after moved money, and a refused key's
        // retry applies it once.
        assert_eq!(db.balance(wallet.wallet_id).await, "97.00");
        assert_eq!(
            debit(&http, &base, &token, wallet.wallet_id, "1.00", &refused_keys[0])
                .await
                .status(),
            201
        );
        assert_eq!(
            debit(&http, &base, &token, wallet.wallet_id, "1.00", &refused_keys[0])
                .await
                .status(),
            201
        );
        assert_eq!(db.balance(wallet.wallet_id).await, "96.00");
        assert!(svc.starts == 1, "the service was not restarted");
    })
    .await;
}
