//! Redis (a private server) killed under traffic: reads and debits keep succeeding (the cache falls back to
//! Postgres), Redis' breaker opens and the cache is then skipped without waiting (counted as `bypassed`);
//! Redis started again: the breaker closes by itself and reads are served from the cache again.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{breaker_series, count, debit, metrics, sample};
use crate::helpers::database::TestDatabase;
use crate::helpers::fixtures::{Bank, Wallet, admin_token, service_token};
use crate::helpers::redis::PrivateRedis;
use crate::helpers::service::{ServiceConfig, ServiceProcess};
use crate::helpers::within;

const WALLETS: usize = 4;
/// Rounds of traffic (a debit and a read per wallet) in each phase.
const ROUNDS: usize = 5;
/// How long the breaker may take to open, and to close once Redis is back.
const WITHIN: Duration = Duration::from_secs(30);
const HITS: &str = "wallet_cache_lookups_total{outcome=\"hit\"}";
const BYPASSED: &str = "wallet_cache_lookups_total{outcome=\"bypassed\"}";

/// One round: a debit of 1.00 on each wallet, then its read; every answer must be a success, and the read
/// must show the debit. Returns the number of requests.
async fn round(http: &reqwest::Client, base: &str, wallets: &[Wallet], debited: &mut [u32], tag: &str) -> usize {
    let (service, admin) = (service_token(), admin_token());
    for (i, w) in wallets.iter().enumerate() {
        let key = format!("{tag}-{i}-{}", debited[i]);
        let res = debit(http, base, &service, w.wallet_id, "1.00", &key).await;
        assert_eq!(
            res.status(),
            201,
            "debit {key}: {}",
            res.text().await.unwrap_or_default()
        );
        debited[i] += 1;
        let res = http
            .get(format!("{base}/wallets/{}", w.user_id))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200, "read of wallet {i} ({tag})");
        let body: Value = res.json().await.expect("json");
        assert_eq!(
            body["balance"],
            format!("{}.00", 1000 - debited[i]),
            "wallet {i} ({tag}): {body}"
        );
    }
    wallets.len() * 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_every_request_still_succeeds_and_the_cache_is_used_again_once_it_returns() {
    within(Duration::from_secs(150), "the Redis outage test", async {
        let mut redis = PrivateRedis::start().await;
        let db = TestDatabase::create().await;
        let mut config = ServiceConfig::new(&db.url);
        config.env.push(("REDIS_URL".into(), redis.url()));
        let svc = ServiceProcess::start("redis-outage", config).await;
        let base = svc.base_url();
        let wallets = Bank::new(&base).open_wallets(WALLETS, "1000.00").await;
        let http = reqwest::Client::new();
        let mut debited = vec![0u32; WALLETS];

        for _ in 0..ROUNDS {
            round(&http, &base, &wallets, &mut debited, "up").await;
        }
        let before = metrics(&base).await;
        assert!(count(&before, HITS) > 0.0, "reads are served from Redis while it is up");
        assert_eq!(sample(&before, &breaker_series("redis")), Some(0.0));
        assert!(
            redis.dbsize().await >= WALLETS as i64,
            "the wallets are cached in Redis"
        );

        redis.kill();
        // Traffic goes on without a failed request (`round` asserts each answer) until the breaker opens.
        let deadline = Instant::now() + WITHIN;
        let mut requests = 0;
        loop {
            requests += round(&http, &base, &wallets, &mut debited, "down").await;
            if sample(&metrics(&base).await, &breaker_series("redis")) == Some(2.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Redis' breaker did not open within {WITHIN:?}; log {}",
                svc.log_path().display()
            );
        }
        let bypassed_before = count(&metrics(&base).await, BYPASSED);
        for _ in 0..ROUNDS {
            requests += round(&http, &base, &wallets, &mut debited, "open").await;
        }
        let during = metrics(&base).await;
        assert!(
            count(&during, BYPASSED) >= bypassed_before + WALLETS as f64,
            "reads skipped Redis while its breaker was open ({requests} requests): {:?}",
            sample(&during, BYPASSED)
        );

        redis.start_again().await;
        let hits_before = count(&metrics(&base).await, HITS);
        let deadline = Instant::now() + WITHIN;
        loop {
            round(&http, &base, &wallets, &mut debited, "back").await;
            let text = metrics(&base).await;
            // Entries are written again, read again, and stay: the deletion of the entries of wallets written
            // during the outage runs on a task of its own and may land after a round's writes, so the rounds go
            // on until Redis holds entries after one (the next round's writes follow the deletion).
            if sample(&text, &breaker_series("redis")) == Some(0.0)
                && count(&text, HITS) > hits_before
                && redis.dbsize().await > 0
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cache was not used again within {WITHIN:?} of Redis' return (breaker, hits or entries): {:?}, {}, {}",
                sample(&text, &breaker_series("redis")),
                count(&text, HITS) - hits_before,
                redis.dbsize().await
            );
        }
    })
    .await;
}
