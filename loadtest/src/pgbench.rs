//! The raw-SQL baseline: `pgbench` running the same debit as one guarded UPDATE plus one INSERT of the
//! transaction row, against the same database, spread over N wallets or on one.
//!
//! # Which rows it writes (the documented choice)
//! The baseline writes the *real* tables: `wallets` (fillfactor 70, same constraints) and the partitioned
//! `transactions` table with its indexes and its CHECK that `created_at` is the UUIDv7 time of `txn_id`.
//! PostgreSQL 15 has no `uuidv7()`, so the script builds a version-7 id in SQL from `clock_timestamp()`
//! and random bits, and derives `created_at` from it with the schema's own `wallet_uuid_v7_time`. A side
//! table would skip the partition routing, the CHECK and the real indexes, flattering the baseline.
//!
//! The baseline gets its own wallets (ids `TAG-0000-7000-8000-<n as 12 hex digits>`, so the script computes
//! them from an integer without a look-up), created by SQL before the run, so the engine's wallets and
//! actor caches are never touched. The UPDATE bumps `version` like the engine's does.
//!
//! The debit is one statement (a data-modifying CTE) in autocommit with prepared statements: one round
//! trip and one commit per debit, which is the fastest honest form of "update + insert in one commit".
//! It writes no outbox, audit or idempotency rows, which the engine's commits do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use uuid::Uuid;

use crate::books::BooksReport;
use crate::stats::{Summary, new_hist, record_latency, summarize};
use crate::target::connect;

/// The baseline's debit.
pub const DEBIT_SCRIPT: &str = r#"\set w random(1, :nwallets)
\set cents random(1, :maxcents)
WITH d AS (
    UPDATE wallets SET balance = balance - :cents::numeric * 0.01, version = version + 1, updated_at = now()
     WHERE wallet_id = (:tag::text || '-0000-7000-8000-' || lpad(to_hex(:w::bigint), 12, '0'))::uuid
       AND balance >= :cents::numeric * 0.01
    RETURNING wallet_id, balance
), id AS (
    SELECT (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') || '7'
            || substr(md5(random()::text), 1, 3) || to_hex(8 + floor(random() * 4)::int)
            || substr(md5(random()::text), 1, 15))::uuid AS txn_id
)
INSERT INTO transactions (txn_id, wallet_id, amount, type, balance_after, created_at, status)
SELECT id.txn_id, d.wallet_id, :cents::numeric * 0.01, 'DEBIT', d.balance, wallet_uuid_v7_time(id.txn_id), 'COMPLETED'
  FROM d, id;
"#;

/// The bulk baseline: `:batch` guarded debits in one statement (one round trip, one commit), on `:batch`
/// distinct wallets (a window of consecutive ones from a random start, so no wallet is updated twice in
/// one statement, which an `UPDATE ... FROM` would silently do once), each with its transaction row, the
/// txn id a UUIDv7 built per row as in [`DEBIT_SCRIPT`]. The ceiling `http-bulk` is measured against.
pub const BULK_DEBIT_SCRIPT: &str = r#"\set w random(0, :nwallets - 1)
WITH v AS (
    SELECT ((:w::int + g) % :nwallets::int) + 1 AS n, (1 + floor(random() * :maxcents::int))::int AS cents
      FROM generate_series(0, :batch::int - 1) AS g
), d AS (
    UPDATE wallets w SET balance = w.balance - v.cents * 0.01, version = w.version + 1, updated_at = now()
      FROM v
     WHERE w.wallet_id = (:tag::text || '-0000-7000-8000-' || lpad(to_hex(v.n::bigint), 12, '0'))::uuid
       AND w.balance >= v.cents * 0.01
    RETURNING w.wallet_id, w.balance, v.cents
), r AS (
    SELECT d.*, (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') || '7'
            || substr(md5(random()::text || d.wallet_id::text), 1, 3) || to_hex(8 + floor(random() * 4)::int)
            || substr(md5(random()::text || d.wallet_id::text), 1, 15))::uuid AS txn_id
      FROM d
)
INSERT INTO transactions (txn_id, wallet_id, amount, type, balance_after, created_at, status)
SELECT r.txn_id, r.wallet_id, r.cents * 0.01, 'DEBIT', r.balance, wallet_uuid_v7_time(r.txn_id), 'COMPLETED'
  FROM r;
"#;

#[derive(Debug, Clone)]
pub struct PgbenchOpts {
    pub clients: usize,
    pub threads: usize,
    pub duration: Duration,
    pub max_cents: i64,
    pub initial_cents: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PgbenchRun {
    pub name: String,
    pub wallets: usize,
    pub clients: usize,
    pub threads: usize,
    pub duration_s: f64,
    pub transactions: u64,
    pub failed: u64,
    /// pgbench's own "tps = ... (without initial connection time)".
    pub tps: f64,
    /// From pgbench's per-transaction log.
    pub latency: Summary,
    /// Transactions per second from pgbench's progress lines.
    pub timeline: Vec<(f64, f64)>,
    pub command: String,
    pub books: BooksReport,
}

fn wallet_id(tag: &str, n: usize) -> Uuid {
    Uuid::parse_str(&format!("{tag}-0000-7000-8000-{n:012x}")).expect("well-formed id")
}

fn user_id(tag: &str, n: usize) -> Uuid {
    Uuid::parse_str(&format!("{tag}-0000-4000-8000-{n:012x}")).expect("well-formed id")
}

/// Creates the baseline's `n` wallets; returns their tag.
pub async fn prepare(database_url: &str, n: usize, initial_cents: i64) -> anyhow::Result<String> {
    let tag = format!("{:08x}", rand_u32());
    let db = connect(database_url).await?;
    let company = Uuid::new_v4();
    let initial = rust_decimal::Decimal::new(initial_cents, 2);
    let ids: Vec<usize> = (1..=n).collect();
    for chunk in ids.chunks(crate::setup::SQL_CHUNK) {
        let users: Vec<Uuid> = chunk.iter().map(|i| user_id(&tag, *i)).collect();
        let wallets: Vec<Uuid> = chunk.iter().map(|i| wallet_id(&tag, *i)).collect();
        db.execute(
            "INSERT INTO users (user_id, email_encrypted, email_hash, company_id, role) \
             SELECT u, '\\x00'::bytea, sha256(u::text::bytea), $2, 'user' FROM unnest($1::uuid[]) AS u",
            &[&users, &company],
        )
        .await
        .context("inserting baseline users")?;
        db.execute(
            "INSERT INTO wallets (wallet_id, user_id, balance, initial_balance, currency) \
             SELECT w, u, $3, $3, 'USD' FROM unnest($1::uuid[], $2::uuid[]) AS t(u, w)",
            &[&users, &wallets, &initial],
        )
        .await
        .context("inserting baseline wallets")?;
    }
    db.batch_execute("ANALYZE wallets").await.ok();
    Ok(tag)
}

fn rand_u32() -> u32 {
    (Uuid::new_v4().as_u128() >> 32) as u32
}

/// Splits a postgres URL into libpq environment variables (pgbench takes the database as its argument).
fn libpq_env(url: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    let cfg: tokio_postgres::Config = url.parse().context("parsing the database URL")?;
    let mut env = Vec::new();
    if let Some(h) = cfg.get_hosts().first() {
        match h {
            tokio_postgres::config::Host::Tcp(s) => env.push(("PGHOST", s.clone())),
            tokio_postgres::config::Host::Unix(p) => env.push(("PGHOST", p.display().to_string())),
        }
    }
    if let Some(p) = cfg.get_ports().first() {
        env.push(("PGPORT", p.to_string()));
    }
    if let Some(u) = cfg.get_user() {
        env.push(("PGUSER", u.to_string()));
    }
    if let Some(p) = cfg.get_password() {
        env.push(("PGPASSWORD", String::from_utf8_lossy(p).into_owned()));
    }
    let Some(db) = cfg.get_dbname() else {
        bail!("the database URL names no database")
    };
    env.push(("PGDATABASE", db.to_string()));
    Ok(env)
}

/// Runs the baseline on `n` wallets (1 = hot) and checks its books.
pub async fn run(database_url: &str, name: &str, n: usize, o: &PgbenchOpts) -> anyhow::Result<PgbenchRun> {
    run_script(database_url, name, n, o, ("DEBIT_SCRIPT", DEBIT_SCRIPT), 1).await
}

/// Runs the bulk baseline ([`BULK_DEBIT_SCRIPT`], `batch` debits per statement) on `n` wallets (at least
/// `batch`) and checks its books. Its `tps` is statements per second: rows per second is `tps × batch`.
pub async fn run_bulk(
    database_url: &str,
    name: &str,
    n: usize,
    batch: usize,
    o: &PgbenchOpts,
) -> anyhow::Result<PgbenchRun> {
    if n < batch {
        bail!("the bulk baseline needs at least {batch} wallets (one statement debits {batch} distinct ones)");
    }
    run_script(
        database_url,
        name,
        n,
        o,
        ("BULK_DEBIT_SCRIPT", BULK_DEBIT_SCRIPT),
        batch,
    )
    .await
}

async fn run_script(
    database_url: &str,
    name: &str,
    n: usize,
    o: &PgbenchOpts,
    (script_name, script_text): (&str, &str),
    rows_per_txn: usize,
) -> anyhow::Result<PgbenchRun> {
    if n == 0 {
        bail!("pgbench needs at least one wallet");
    }
    let tag = prepare(database_url, n, o.initial_cents).await?;
    let dir = tempfile::Builder::new().prefix("loadtest-pgbench-").tempdir()?;
    let script = dir.path().join("debit.sql");
    std::fs::write(&script, script_text)?;
    let env = libpq_env(database_url)?;
    let args: Vec<String> = vec![
        "--no-vacuum".into(),
        "--protocol=prepared".into(),
        format!("--client={}", o.clients),
        format!("--jobs={}", o.threads.min(o.clients).max(1)),
        format!("--time={}", o.duration.as_secs().max(1)),
        "--progress=1".into(),
        "--log".into(),
        format!("--log-prefix={}", dir.path().join("txlog").display()),
        format!("--define=nwallets={n}"),
        format!("--define=maxcents={}", o.max_cents),
        format!("--define=tag={tag}"),
        format!("--define=batch={rows_per_txn}"),
        format!("--file={}", script.display()),
    ];
    let command = format!("pgbench {}", args.join(" "));
    let out = tokio::task::spawn_blocking(move || Command::new("pgbench").args(&args).envs(env).output())
        .await?
        .context("running pgbench (is it installed? apt-get install postgresql-contrib / postgresql-client)")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("pgbench failed ({}):\n{stdout}\n{stderr}", out.status);
    }
    let parsed = parse_output(&stdout, &stderr)?;
    let latency = read_logs(dir.path())?;
    // A statement pgbench counts as failed is an outcome the client could not learn (as an HTTP timeout is):
    // its rows may exist. The balances must still equal the rows exactly.
    let committed = (parsed.transactions - parsed.failed) * rows_per_txn as u64;
    let at_most = parsed.transactions * rows_per_txn as u64;
    let books = check_books(database_url, &tag, n, committed..=at_most).await?;
    Ok(PgbenchRun {
        name: name.into(),
        wallets: n,
        clients: o.clients,
        threads: o.threads.min(o.clients).max(1),
        duration_s: o.duration.as_secs().max(1) as f64,
        transactions: parsed.transactions,
        failed: parsed.failed,
        tps: parsed.tps,
        latency,
        timeline: parsed.timeline,
        command: format!("{command}  (script: loadtest/src/pgbench.rs {script_name})"),
        books,
    })
}

#[derive(Debug, PartialEq)]
struct Parsed {
    tps: f64,
    transactions: u64,
    failed: u64,
    timeline: Vec<(f64, f64)>,
}

fn number_after<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|rest| rest.split_whitespace().next().unwrap_or(""))
}

fn parse_output(stdout: &str, stderr: &str) -> anyhow::Result<Parsed> {
    let tps = number_after(stdout, "tps =")
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no tps line in pgbench's output:\n{stdout}"))?;
    let transactions = number_after(stdout, "number of transactions actually processed:")
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.parse::<u64>().ok())
        .context("no transaction count in pgbench's output")?;
    let failed = number_after(stdout, "number of failed transactions:")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // progress: 1.0 s, 9876.5 tps, lat 1.617 ms stddev 0.845, 0 failed
    let timeline = stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("progress: ")?;
            let mut parts = rest.split(',');
            let t = parts.next()?.trim().strip_suffix(" s")?.parse::<f64>().ok()?;
            let tps = parts.next()?.trim().strip_suffix(" tps")?.parse::<f64>().ok()?;
            Some((t, tps))
        })
        .collect();
    Ok(Parsed {
        tps,
        transactions,
        failed,
        timeline,
    })
}

/// Latencies from pgbench's per-transaction logs (`client txn_no latency_us script epoch_s epoch_us`).
fn read_logs(dir: &Path) -> anyhow::Result<Summary> {
    let mut h = new_hist();
    let files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("txlog")))
        .collect();
    for f in files {
        for line in std::fs::read_to_string(&f)?.lines() {
            if let Some(us) = line.split_whitespace().nth(2).and_then(|v| v.parse::<u64>().ok()) {
                record_latency(&mut h, Duration::from_micros(us));
            }
        }
    }
    Ok(summarize(&h))
}

/// The baseline's books: every wallet's balance is its initial balance minus its rows, and there are as
/// many rows as pgbench committed transactions (each debit succeeds: balances are far above the load).
async fn check_books(
    database_url: &str,
    tag: &str,
    n: usize,
    committed: std::ops::RangeInclusive<u64>,
) -> anyhow::Result<BooksReport> {
    let wallets: Vec<Uuid> = (1..=n).map(|i| wallet_id(tag, i)).collect();
    let (ws, rows) = crate::setup::read_books(database_url, &wallets).await?;
    Ok(crate::books::check_sql(&ws, &rows, committed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_15_output() {
        let stdout = "pgbench (15.20 (Debian 15.20-0+deb12u1))\ntransaction type: /tmp/x/debit.sql\n\
            scaling factor: 1\nquery mode: prepared\nnumber of clients: 16\nnumber of threads: 2\n\
            maximum number of tries: 1\nduration: 10 s\nnumber of transactions actually processed: 98765\n\
            number of failed transactions: 0 (0.000%)\nlatency average = 1.617 ms\n\
            initial connection time = 12.345 ms\ntps = 9876.543210 (without initial connection time)\n";
        let stderr = "progress: 1.0 s, 9800.0 tps, lat 1.617 ms stddev 0.845, 0 failed\n\
            progress: 2.0 s, 9953.1 tps, lat 1.600 ms stddev 0.800, 0 failed\n";
        let p = parse_output(stdout, stderr).unwrap();
        assert_eq!(p.transactions, 98765);
        assert_eq!(p.failed, 0);
        assert!((p.tps - 9876.54321).abs() < 1e-6);
        assert_eq!(p.timeline, vec![(1.0, 9800.0), (2.0, 9953.1)]);
        assert!(parse_output("nothing", "").is_err());
    }

    #[test]
    fn baseline_ids_are_computed_like_the_script_does() {
        assert_eq!(
            wallet_id("0a0b0c0d", 255).to_string(),
            "0a0b0c0d-0000-7000-8000-0000000000ff"
        );
        assert_ne!(wallet_id("0a0b0c0d", 1), user_id("0a0b0c0d", 1));
    }

    #[test]
    fn database_urls_become_libpq_variables() {
        let env = libpq_env("postgres://bob:pw@db.local:6543/wallets").unwrap();
        assert!(env.contains(&("PGHOST", "db.local".into())));
        assert!(env.contains(&("PGPORT", "6543".into())));
        assert!(env.contains(&("PGUSER", "bob".into())));
        assert!(env.contains(&("PGPASSWORD", "pw".into())));
        assert!(env.contains(&("PGDATABASE", "wallets".into())));
    }
}
