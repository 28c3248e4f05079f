//! A real HAProxy (Debian's `haproxy`, which `scripts/test.sh` installs) in front of service processes,
//! started by the test in the foreground on a free port with a generated configuration, and killed on drop.
//!
//! The consistent-hash routing is the one the Kubernetes Ingress does: `balance uri path-only depth 2`
//! hashes `/wallets/<id>` (the first two segments of the path, query string left out) and
//! `hash-type consistent` keeps a wallet on one instance while the set of instances changes, moving only
//! the wallets of an instance that went away. A path without a wallet (`/transfers`) hashes as it is.
//! HAProxy's own errors (no instance answered) carry `Retry-After`, like the service's 503s: a client
//! retries them with the same `Idempotency-Key`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::paths;

/// How long HAProxy may take to accept connections.
const LISTEN_WITHIN: Duration = Duration::from_secs(10);
/// Health checks (`GET /ready`): an instance killed is out after `FALL` checks `CHECK_EVERY` apart.
const CHECK_EVERY: Duration = Duration::from_millis(300);
const FALL: u32 = 2;
const RISE: u32 = 2;

/// A wallet's requests to one instance: consistent hash of `/wallets/<id>` (`scripts/scale-bench.sh` also
/// runs round robin, to measure what this buys).
const BALANCE: &str = "balance uri path-only depth 2\n    hash-type consistent";

/// The configuration for `backends` (ports on 127.0.0.1) behind `port`.
pub fn config(port: u16, backends: &[u16]) -> String {
    let error = |status: u16, title: &str| {
        format!(
            "    http-error status {status} content-type application/problem+json string \
             '{{\"title\":\"{title}\",\"status\":{status},\"code\":\"UPSTREAM_UNAVAILABLE\"}}' hdr retry-after 1\n"
        )
    };
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server s{i} 127.0.0.1:{p} check\n"))
        .collect();
    format!(
        "global\n    maxconn 4096\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n\
         \x20   retries 2\n    option redispatch 1\n    retry-on conn-failure\n{}{}{}\
         frontend api\n    bind 127.0.0.1:{port}\n    default_backend wallets\n\
         backend wallets\n    {}\n    option httpchk GET /ready\n    http-check expect status 200\n\
         \x20   default-server inter {}ms fall {FALL} rise {RISE}\n{servers}",
        error(502, "Bad Gateway"),
        error(503, "Service Unavailable"),
        error(504, "Gateway Timeout"),
        BALANCE,
        CHECK_EVERY.as_millis(),
    )
}

fn binary() -> PathBuf {
    ["/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("haproxy"))
}

pub struct HaProxy {
    child: Child,
    pub port: u16,
    pub config_path: PathBuf,
}

impl HaProxy {
    /// Writes the configuration, checks it (`haproxy -c`), starts HAProxy and waits until it listens.
    pub async fn start(backends: &[u16]) -> HaProxy {
        let port = paths::free_port();
        let dir = paths::faults_dir("haproxy");
        let id = paths::unique();
        let config_path = dir.join(format!("haproxy-{id}.cfg"));
        std::fs::write(&config_path, config(port, backends)).expect("write the HAProxy configuration");
        let check = Command::new(binary())
            .arg("-c")
            .arg("-f")
            .arg(&config_path)
            .output()
            .expect("haproxy runs (scripts/test.sh installs the haproxy package)");
        assert!(
            check.status.success(),
            "the generated HAProxy configuration is refused: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = std::fs::File::create(dir.join(format!("haproxy-{id}.log"))).expect("HAProxy log file");
        let child = Command::new(binary())
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start haproxy");
        let proxy = HaProxy {
            child,
            port,
            config_path,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < LISTEN_WITHIN, "HAProxy does not listen on {port}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        proxy
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until a request through HAProxy reaches an instance that is ready (its health checks ran).
    pub async fn wait_routable(&self) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let status = http
                .get(format!("{}/ready", self.base_url()))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok();
            if status == Some(200) {
                return;
            }
            assert!(
                started.elapsed() < LISTEN_WITHIN,
                "HAProxy routes nothing to a ready instance: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
