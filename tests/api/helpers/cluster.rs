//! A private PostgreSQL cluster for a test that stops Postgres (never the shared one): `initdb` into
//! `target/faults/pg/<id>` (or the system temp dir when the `postgres` user cannot reach the target
//! directory), started on a free port with its own socket directory; `stop -m immediate` (a crash, as far
//! as the service can tell) and start again on the same data directory and port. Removed on drop, also
//! after a panic. A streaming replica of such a cluster is made with `pg_basebackup -R` ([`PgCluster::replica_of`]).
//! As root the server tools run as the `postgres` OS user (`runuser`), as `scripts/dev-run.sh`
//! does; they come with Debian's `postgresql` package, which `scripts/test.sh` installs when missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::paths;

/// How long `pg_ctl start` may take.
const START_TIMEOUT_SECS: u32 = 60;

/// Where a cluster lives; cheap to clone onto a blocking thread.
#[derive(Clone)]
struct Layout {
    bin: PathBuf,
    base: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
}

pub struct PgCluster {
    layout: Layout,
    pub port: u16,
    running: bool,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`, `pg_ctl` and `postgres`.
fn server_bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().split('.').next()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|t| bin.join(t).is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).expect(
        "PostgreSQL server tools not found under /usr/lib/postgresql/*/bin: install the postgresql package \
         (scripts/test.sh does)",
    )
}

/// Runs a server tool, as `postgres` when we are root.
fn as_server_user(program: &Path, args: &[String]) -> Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    // The postgres user may not be allowed into the test's working directory.
    cmd.args(args)
        .current_dir("/")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

fn check(what: &str, out: Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory the server user owns; under the target dir if that user can reach it, else in /tmp.
fn server_owned_dir(id: &str) -> PathBuf {
    let preferred = paths::faults_dir("pg").join(id);
    for dir in [preferred, std::env::temp_dir().join(format!("wallet-faults-pg-{id}"))] {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        if !is_root() {
            return dir;
        }
        let chown = Command::new("chown").arg("postgres:postgres").arg(&dir).status();
        let reachable = Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-w"])
            .arg(&dir)
            .current_dir("/")
            .status();
        if chown.is_ok_and(|s| s.success()) && reachable.is_ok_and(|s| s.success()) {
            return dir;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    panic!("no directory the postgres user can write for a private cluster");
}

impl Layout {
    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data.display().to_string();
        let mut all = vec!["-D".to_string(), data];
        all.extend(args.iter().map(|a| a.to_string()));
        as_server_user(&self.bin.join("pg_ctl"), &all)
    }

    fn start_server(&self) {
        // fsync off: an immediate stop is a crash of the server, not of the machine; the page cache keeps
        // what was written, so crash recovery still runs and the test stays fast.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.socket_dir.display()
        );
        let log = self.log.display().to_string();
        let timeout = START_TIMEOUT_SECS.to_string();
        let out = self.pg_ctl(&["-o", &options, "-l", &log, "-t", &timeout, "-w", "start"]);
        if !out.status.success() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!(
                "the private cluster did not start ({}): {}\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn stop_immediate(&self) -> Output {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"])
    }
}

impl Layout {
    /// A new place for a cluster: a directory the server user owns, a short socket directory, a free port.
    fn fresh() -> Layout {
        let id = paths::unique();
        let base = server_owned_dir(&id);
        // Unix socket paths are limited to ~107 bytes: keep the socket directory short.
        let socket_dir = PathBuf::from(format!("/tmp/wfpg-{id}"));
        std::fs::create_dir_all(&socket_dir).expect("socket dir");
        if is_root() {
            let _ = Command::new("chown").arg("postgres:postgres").arg(&socket_dir).status();
        }
        Layout {
            bin: server_bin_dir(),
            data: base.join("data"),
            log: base.join("postgres.log"),
            base,
            socket_dir,
            port: paths::free_port(),
        }
    }
}

impl PgCluster {
    /// A streaming replica of `primary`: `pg_basebackup -R` (which writes `standby.signal` and
    /// `primary_conninfo`) into a directory of its own, started on a port of its own; returns once it
    /// accepts (read-only) connections.
    pub async fn replica_of(primary: &PgCluster) -> PgCluster {
        let primary_port = primary.port;
        let layout = tokio::task::spawn_blocking(move || {
            let layout = Layout::fresh();
            let args = [
                "-D".to_string(),
                layout.data.display().to_string(),
                "-R".into(),
                "-X".into(),
                "stream".into(),
                "-c".into(),
                "fast".into(),
                "-h".into(),
                "127.0.0.1".into(),
                "-p".into(),
                primary_port.to_string(),
                "-U".into(),
                "postgres".into(),
            ];
            check(
                "pg_basebackup",
                as_server_user(&layout.bin.join("pg_basebackup"), &args),
            );
            layout.start_server();
            layout
        })
        .await
        .expect("replica set-up");
        PgCluster {
            port: layout.port,
            layout,
            running: true,
        }
    }

    /// initdb and start; returns once the server accepts connections.
    pub async fn start() -> PgCluster {
        let layout = tokio::task::spawn_blocking(|| {
            let layout = Layout::fresh();
            let data = layout.data.display().to_string();
            let args = [
                "-D",
                &data,
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
            ];
            check(
                "initdb",
                as_server_user(&layout.bin.join("initdb"), &args.map(String::from)),
            );
            layout.start_server();
            layout
        })
        .await
        .expect("private cluster set-up");
        PgCluster {
            port: layout.port,
            layout,
            running: true,
        }
    }

    /// A URL of this cluster (the `postgres` superuser, trusted).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `pg_ctl stop -m immediate`: every backend is killed at once, nothing is flushed or answered.
    pub async fn stop_immediate(&mut self) {
        let layout = self.layout.clone();
        let out = tokio::task::spawn_blocking(move || layout.stop_immediate())
            .await
            .expect("pg_ctl stop");
        check("pg_ctl stop -m immediate", out);
        self.running = false;
    }

    /// Starts the stopped server again on the same data directory and port (crash recovery runs).
    pub async fn start_again(&mut self) {
        assert!(!self.running, "the cluster is running already");
        let layout = self.layout.clone();
        tokio::task::spawn_blocking(move || layout.start_server())
            .await
            .expect("pg_ctl start");
        self.running = true;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.layout.stop_immediate();
            // Let the postmaster's children go before their files are removed.
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = std::fs::remove_dir_all(&self.layout.base);
        let _ = std::fs::remove_dir_all(&self.layout.socket_dir);
    }
}
