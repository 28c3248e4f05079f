//! `REDIS_URL` listing the nodes of a Redis Cluster (three private `redis-server --cluster-enabled yes`,
//! joined by `redis-cli --cluster create`, no replicas): the wallets' entries are written across the
//! cluster's slots — every node holds some — and reads come back from it with the committed balances.

use std::time::Duration;

use serde_json::Value;

use super::{count, debit, metrics};
use crate::helpers::database::TestDatabase;
use crate::helpers::fixtures::{Bank, admin_token, service_token};
use crate::helpers::redis::RedisCluster;
use crate::helpers::service::{ServiceConfig, ServiceProcess};
use crate::helpers::{eventually, within};

/// Enough wallets that each of three nodes (a third of the slots each) holds some: all on two nodes
/// has a probability of about 3 · (2/3)^30 ≈ 2·10⁻⁵.
const WALLETS: usize = 30;
const HITS: &str = "wallet_cache_lookups_total{outcome=\"hit\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_in_redis_url_holds_the_wallet_entries_across_its_nodes_and_serves_reads() {
    within(Duration::from_secs(150), "the Redis Cluster test", async {
        let cluster = RedisCluster::start(3).await;
        let db = TestDatabase::create().await;
        let mut config = ServiceConfig::new(&db.url);
        config.env.push(("REDIS_URL".into(), cluster.redis_url()));
        let svc = ServiceProcess::start("redis-cluster", config).await;
        let base = svc.base_url();
        let wallets = Bank::new(&base).open_wallets(WALLETS, "50.00").await;
        let (http, service, admin) = (reqwest::Client::new(), service_token(), admin_token());
        for (i, w) in wallets.iter().enumerate() {
            let res = debit(&http, &base, &service, w.wallet_id, "5.00", &format!("cluster-{i}")).await;
            assert_eq!(res.status(), 201);
        }

        // Written through to the cluster, on every node.
        let spread = eventually(Duration::from_secs(10), || async {
            let mut total = 0;
            for node in &cluster.nodes {
                let n = node.dbsize().await;
                if n == 0 {
                    return false;
                }
                total += n;
            }
            total >= WALLETS as i64
        })
        .await;
        let sizes: Vec<i64> = futures_util::future::join_all(cluster.nodes.iter().map(|n| n.dbsize())).await;
        assert!(
            spread,
            "entries per node: {sizes:?} (expected every node to hold some, {WALLETS} in all)"
        );

        // Read back from the cluster with the committed balance.
        let hits_before = count(&metrics(&base).await, HITS);
        for w in &wallets {
            let res = http
                .get(format!("{base}/wallets/{}", w.user_id))
                .bearer_auth(&admin)
                .send()
                .await
                .expect("request");
            assert_eq!(res.status(), 200);
            let body: Value = res.json().await.expect("json");
            assert_eq!(body["balance"], "45.00", "{body}");
        }
        let hits = count(&metrics(&base).await, HITS) - hits_before;
        assert!(
            hits >= WALLETS as f64,
            "the reads were served from the cluster: {hits} hits"
        );
    })
    .await;
}
