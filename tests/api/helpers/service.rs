//! The real `wallet-service` binary as a child process: `serve` with its configuration in the environment
//! (nothing inherited but `PATH`), on a port chosen once so that a restarted process answers on the same
//! address. Its stdout and stderr go to `target/faults/logs/<name>-<id>.log` (appended across restarts)
//! for post-mortems. SIGTERM, SIGKILL and restart; killed on drop.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{fixtures, paths};

/// The service's reliability knobs, set explicitly to the contract's defaults (issue 10) so that the tests'
/// arithmetic and the service agree. A service that does not know one ignores it.
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(5_000);
pub const DB_STATEMENT_TIMEOUT: Duration = Duration::from_millis(4_000);
pub const DB_LOCK_TIMEOUT: Duration = Duration::from_millis(2_000);
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(25);
/// The service's `IDEMPOTENCY_LEASE_SECS` (a constant of the store, not a setting).
pub const IDEMPOTENCY_LEASE: Duration =
    Duration::from_secs(wallet_service::store::IDEMPOTENCY_LEASE_SECS.unsigned_abs());

/// How long a start may take until `/ready` answers 200.
const READY_WITHIN: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub database_url: String,
    pub amqp_url: Option<String>,
    /// More environment (after the defaults, so it wins).
    pub env: Vec<(String, String)>,
}

impl ServiceConfig {
    pub fn new(database_url: &str) -> ServiceConfig {
        ServiceConfig {
            database_url: database_url.to_string(),
            amqp_url: None,
            env: vec![],
        }
    }

    pub fn with_amqp(mut self, url: &str) -> ServiceConfig {
        self.amqp_url = Some(url.to_string());
        self
    }
}

pub struct ServiceProcess {
    config: ServiceConfig,
    port: u16,
    child: Option<Child>,
    log_path: PathBuf,
    /// Processes started so far (restarts included).
    pub starts: u32,
}

impl ServiceProcess {
    /// Starts the binary and waits until `/ready` answers 200.
    pub async fn start(name: &str, config: ServiceConfig) -> ServiceProcess {
        let log_path = paths::faults_dir("logs").join(format!("{name}-{}.log", paths::unique()));
        let mut svc = ServiceProcess {
            config,
            port: paths::free_port(),
            child: None,
            log_path,
            starts: 0,
        };
        svc.spawn();
        svc.wait_ready().await;
        svc
    }

    /// The port the process listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Whether the current process is still running (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "a process is running already");
        self.starts += 1;
        let log = self.log_file();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wallet-service"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
            .env("DATABASE_URL", &self.config.database_url)
            .env("JWT_SECRET", fixtures::JWT_SECRET)
            .env("PORT", self.port.to_string())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("REPLY_TIMEOUT_MS", REPLY_TIMEOUT.as_millis().to_string())
            .env("DB_STATEMENT_TIMEOUT_MS", DB_STATEMENT_TIMEOUT.as_millis().to_string())
            .env("DB_LOCK_TIMEOUT_MS", DB_LOCK_TIMEOUT.as_millis().to_string())
            .env("SHUTDOWN_DRAIN_SECS", SHUTDOWN_DRAIN.as_secs().to_string());
        if let Some(url) = &self.config.amqp_url {
            cmd.env("AMQP_URL", url);
        }
        for (k, v) in &self.config.env {
            cmd.env(k, v);
        }
        let out = log.try_clone().expect("log file handle");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(log));
        self.child = Some(cmd.spawn().expect("start the wallet-service binary"));
    }

    fn log_file(&self) -> File {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log_path.display()));
        let _ = writeln!(
            f,
            "==== test harness: start #{} on port {} ====",
            self.starts, self.port
        );
        f
    }

    /// The last `n` lines of the log (for failure messages).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `GET /ready` once: its status, or `None` when nothing answers.
    pub async fn ready_status(&self) -> Option<u16> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        http.get(format!("{}/ready", self.base_url()))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Waits until `/ready` answers 200; panics (with the log's tail) if the process exits or takes too long.
    async fn wait_ready(&mut self) -> Duration {
        let started = Instant::now();
        loop {
            if self.ready_status().await == Some(200) {
                return started.elapsed();
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "wallet-service exited ({status}) before it was ready; log {}:\n{}",
                    self.log_path.display(),
                    self.log_tail(40)
                );
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "wallet-service not ready within {READY_WITHIN:?}; log {}:\n{}",
                self.log_path.display(),
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM (a drain) without waiting.
    pub fn sigterm(&self) {
        let pid = self.child.as_ref().expect("a running process").id();
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet (so it cannot have been reused).
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM to {pid}: {}", std::io::Error::last_os_error());
    }

    /// SIGKILL, and reap the process.
    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `limit` for the process to exit; its exit status, or `None` if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.child.as_mut()?.try_wait().expect("try_wait");
            if let Some(status) = status {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the current process if it still runs, starts a new one on the same port and waits until it is
    /// ready; returns how long the new one took to become ready.
    pub async fn restart(&mut self) -> Duration {
        self.sigkill();
        self.spawn();
        self.wait_ready().await
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// Runs `wallet-service audit <args>` on `database_url` to its end; returns its exit code and stdout.
pub fn audit_cli(database_url: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wallet-service"))
        .arg("audit")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}
