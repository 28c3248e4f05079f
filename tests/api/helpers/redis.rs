//! Private Redis servers for tests that stop Redis or need a cluster (never the shared one on 6379):
//! `redis-server` started as a child process on a free port, with no persistence and its files under
//! `target/faults/redis/<id>`; killed (SIGKILL) and started again on the same port; a three-node Redis
//! Cluster made of such servers (`--cluster-enabled yes`, joined by `redis-cli --cluster create`, no
//! replicas). Killed and removed on drop, also after a panic. `redis-server` and `redis-cli` come with
//! Debian's `redis-server` and `redis-tools` packages, which `scripts/test.sh` installs when missing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, paths};

/// How long a started server may take to answer PING, and a new cluster to report `cluster_state:ok`.
const UP_WITHIN: Duration = Duration::from_secs(20);

pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    cluster: bool,
    child: Option<Child>,
}

fn tool(name: &str) -> &str {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{name} not found: install Debian's redis-server and redis-tools packages (scripts/test.sh does)"
    );
    name
}

/// Whether the server on `port` answers PING.
async fn answers(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
        return false;
    };
    let ping = async {
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut c).await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), ping).await, Ok(Some(_)))
}

impl PrivateRedis {
    /// A standalone server on a free port; returns once it answers.
    pub async fn start() -> PrivateRedis {
        Self::start_node(false).await
    }

    async fn start_node(cluster: bool) -> PrivateRedis {
        let dir = paths::faults_dir("redis").join(paths::unique());
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let mut redis = PrivateRedis {
            port: paths::free_port(),
            dir,
            cluster,
            child: None,
        };
        redis.spawn();
        redis.wait_up().await;
        redis
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let dir = self.dir.display().to_string();
        let log = self.dir.join("redis.log").display().to_string();
        let mut args = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
            "--logfile",
            &log,
        ];
        if self.cluster {
            args.extend([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ]);
        }
        let child = Command::new(tool("redis-server"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
    }

    async fn wait_up(&self) {
        let port = self.port;
        assert!(
            eventually(UP_WITHIN, || answers(port)).await,
            "redis-server on port {port} did not answer within {UP_WITHIN:?} (log in {})",
            self.dir.display()
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the server is gone at once (its data with it: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed server again on the same port; returns once it answers.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running already");
        self.spawn();
        self.wait_up().await;
    }

    /// Keys held by this server (one node of a cluster: its own slots only).
    pub async fn dbsize(&self) -> i64 {
        let client = redis::Client::open(self.url()).expect("url");
        let mut c = client.get_multiplexed_async_connection().await.expect("connect");
        redis::cmd("DBSIZE").query_async(&mut c).await.expect("DBSIZE")
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of private servers, each primary of a third of the slots.
pub struct RedisCluster {
    pub nodes: Vec<PrivateRedis>,
}

impl RedisCluster {
    /// `n` (≥ 3) nodes joined into a cluster without replicas; returns once every node reports it ok.
    pub async fn start(n: usize) -> RedisCluster {
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(PrivateRedis::start_node(true).await);
        }
        let addresses: Vec<String> = nodes.iter().map(|r| format!("127.0.0.1:{}", r.port)).collect();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(tool("redis-cli"))
                .args(["--cluster", "create"])
                .args(&addresses)
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .stdin(Stdio::null())
                .output()
                .expect("run redis-cli --cluster create")
        })
        .await
        .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        for node in &cluster.nodes {
            let url = node.url();
            let ok = eventually(UP_WITHIN, || async {
                let Ok(client) = redis::Client::open(url.as_str()) else {
                    return false;
                };
                let Ok(mut c) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            })
            .await;
            assert!(
                ok,
                "cluster node {url} did not report cluster_state:ok within {UP_WITHIN:?}"
            );
        }
        cluster
    }

    /// `REDIS_URL` for the cluster: every node, comma-separated.
    pub fn redis_url(&self) -> String {
        self.nodes.iter().map(PrivateRedis::url).collect::<Vec<_>>().join(",")
    }
}
