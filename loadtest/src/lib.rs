//! Load harness for the wallet service (issue 6).
//!
//! `loadtest <scenario> [--spawn | --url URL --database-url URL --jwt-secret S] [options]`
//!
//! - Scenarios: `http-debits` (N wallets), `http-hot` (one wallet), `http-reads` (`GET /wallets/{userId}`),
//!   `mixed` (debits, credits and reads), `pgbench-baseline` (the same debit as raw SQL, spread and hot),
//!   `compare` (the engine and the baseline back to back, with their ratio), `chain-cost` (`--spawn`
//!   only: compare's spread and hot engine phases on services with the audit chain on and off, with
//!   the ratios; see [`chain_cost`]), `amqp-bookings` (booking events through RabbitMQ), `http-bulk`
//!   (`POST /transactions/batch` of `--batch-items` debits over `--wallets`, then the raw-SQL bulk
//!   baseline, `--batch-items` guarded debits per statement, with their ratio) and `http-holds` (place +
//!   capture pairs against `http-debits` over the same wallets) and `reports` (a month's spend report and
//!   point-in-time balances over a company with a long history, and debits with the report aggregates on
//!   and off; see [`reports`]).
//! - Pacing: open loop at `--rate` (latency from each request's *intended* send time, so queueing is not
//!   hidden) or closed loop (`--closed --concurrency C`, max throughput).
//! - Every run sets up its own users and wallets, then checks the books in SQL ([`books`]); a run whose
//!   books do not balance exits with status 2. Results go to `result.json` and `report.html`.
//!
//! Modules: [`broker`] (`broker-baseline`, RabbitMQ's own ceiling), [`bulk`] (the batch sender), [`sched`] (arrival schedule), [`stats`] (HDR histograms, timeline), [`books`] (invariants),
//! [`drive`] (sending), [`setup`] (fixtures, reading the books), [`pgbench`] (baseline), [`target`]
//! (service at a URL or in process), [`report`] (JSON and HTML), [`holds`] (`http-holds`: the pairs, their
//! books, their ratio to debits).

pub mod amqp;
pub mod books;
pub mod broker;
pub mod bulk;
pub mod drive;
pub mod h1;
pub mod holds;
pub mod pgbench;
pub mod report;
pub mod reports;
pub mod sched;
pub mod setup;
pub mod stats;
pub mod target;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use wallet_service::auth::Role;

use crate::books::{ClientLedger, cents_text};
use crate::drive::{Driver, Mix, Mode, Workload};
use crate::pgbench::PgbenchOpts;
use crate::report::{Comparison, EngineRun, Machine, RunResult, ServiceInfo, SetupInfo};
use crate::setup::Fixture;
use crate::target::{Target, TargetOpts};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    HttpDebits,
    HttpHot,
    HttpReads,
    Mixed,
    PgbenchBaseline,
    AmqpBookings,
    Compare,
    HttpBulk,
    HttpHolds,
    ChainCost,
    Reports,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::HttpDebits => "http-debits",
            Scenario::HttpHot => "http-hot",
            Scenario::HttpReads => "http-reads",
            Scenario::Mixed => "mixed",
            Scenario::PgbenchBaseline => "pgbench-baseline",
            Scenario::AmqpBookings => "amqp-bookings",
            Scenario::Compare => "compare",
            Scenario::HttpBulk => "http-bulk",
            Scenario::HttpHolds => "http-holds",
            Scenario::ChainCost => "chain-cost",
            Scenario::Reports => "reports",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SetupVia {
    Http,
    Sql,
}

/// Parses "20", "20s", "500ms" or "2m".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num.parse().map_err(|_| format!("not a duration: {s:?}"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("unknown unit in {s:?} (use ms, s or m)")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a money amount ("1000000.00") into cents.
pub fn parse_cents(s: &str) -> Result<i64, String> {
    let d: rust_decimal::Decimal = s.trim().parse().map_err(|_| format!("not an amount: {s:?}"))?;
    if d.is_sign_negative() || d.normalize().scale() > 2 {
        return Err(format!("amount must be ≥ 0 with at most 2 decimals: {s:?}"));
    }
    use rust_decimal::prelude::ToPrimitive;
    (d * rust_decimal::Decimal::ONE_HUNDRED)
        .to_i64()
        .ok_or_else(|| format!("amount too large: {s:?}"))
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    let parts: Vec<u32> = s
        .split(',')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--mix is DEBIT,CREDIT,READ weights, e.g. 70,10,20; got {s:?}"))?;
    match parts[..] {
        [debit, credit, read] if debit + credit + read > 0 => Ok(Mix { debit, credit, read }),
        _ => Err(format!("--mix is DEBIT,CREDIT,READ weights, e.g. 70,10,20; got {s:?}")),
    }
}

#[derive(Debug, Clone, Parser)]
#[command(name = "loadtest", about = "Load harness for the wallet service", version)]
pub struct Args {
    /// What to run.
    #[arg(value_enum)]
    pub scenario: Scenario,

    /// Start the service in this process over a fresh database (created and dropped here).
    #[arg(long)]
    pub spawn: bool,
    /// Base URL of a running service (instead of --spawn).
    #[arg(long)]
    pub url: Option<String>,
    /// The running service's database: needed for the books check and pgbench in --url mode.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where --spawn creates its database.
    #[arg(
        long,
        env = "TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub admin_database_url: String,
    /// The service's HS256 secret (random for --spawn when not given).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    #[arg(long, env = "JWT_ISSUER", default_value = "user-management")]
    pub jwt_issuer: String,
    #[arg(long, env = "JWT_AUDIENCE", default_value = "wallet-service")]
    pub jwt_audience: String,
    /// Connection pool of the in-process service.
    #[arg(long, default_value_t = wallet_service::config::DEFAULT_POOL_SIZE)]
    pub pool_size: usize,
    /// Runtime worker threads of the in-process service (default: the CPUs).
    #[arg(long)]
    pub service_threads: Option<usize>,
    /// Keep the --spawn database after the run.
    #[arg(long)]
    pub keep_db: bool,
    /// Process id of a --url service, to report its memory (RSS) after the run.
    #[arg(long)]
    pub service_pid: Option<u32>,

    /// Length of the measured run ("20s", "500ms", "2m").
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// An unmeasured run of this length first (warms actors and connections; its writes are still
    /// checked in the books).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Open loop: requests per second (default 1000; `compare` runs closed loop unless given).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Closed loop at max throughput with --concurrency clients.
    #[arg(long)]
    pub closed: bool,
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Open loop: most requests in flight; beyond it sends wait (and that wait counts as latency).
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Wallets of the run (http-hot always uses one).
    #[arg(long, default_value_t = 10_000)]
    pub wallets: usize,
    /// How the wallets are created: through the API, or in bulk by SQL (for a million).
    #[arg(long, value_enum, default_value = "http")]
    pub setup: SetupVia,
    #[arg(long, default_value_t = 32)]
    pub setup_concurrency: usize,
    /// Every wallet's initial balance.
    #[arg(long, default_value = "1000000000.00", value_parser = parse_cents)]
    pub initial_balance: i64,
    /// Amounts are 0.01 to this many cents / 100.
    #[arg(long, default_value_t = 100)]
    pub max_amount_cents: i64,
    /// `mixed`: weights of debits, credits and reads.
    #[arg(long, default_value = "70,10,20", value_parser = parse_mix)]
    pub mix: Mix,
    /// Send an Idempotency-Key with every write.
    #[arg(long)]
    pub idempotency_keys: bool,
    /// Walk the wallets in order (request i hits wallet i mod N) instead of at random: N requests touch
    /// all N wallets (the million-wallet memory run).
    #[arg(long)]
    pub sequential: bool,
    #[arg(long, default_value_t = 0x5EED)]
    pub seed: u64,
    /// Runtime worker threads of the load generator (default: the CPUs).
    #[arg(long)]
    pub client_threads: Option<usize>,

    /// `http-bulk`: items per batch (at most the service's 1,000), and per statement of its baseline.
    #[arg(long, default_value_t = bulk::DEFAULT_BATCH_ITEMS)]
    pub batch_items: usize,
    /// `http-bulk`: clients each sending one batch at a time.
    #[arg(long, default_value_t = 4)]
    pub bulk_clients: usize,

    /// `reports`: wallets of the company whose history is filled.
    #[arg(long, default_value_t = 1_000)]
    pub company_wallets: usize,
    /// `reports`: ledger rows of that history, spread over the past year.
    #[arg(long, default_value_t = 1_000_000)]
    pub ledger_rows: u64,
    /// `reports`: closed-loop clients of the report phases.
    #[arg(long, default_value_t = 4)]
    pub report_clients: usize,

    /// pgbench clients (connections).
    #[arg(long, default_value_t = 16)]
    pub pgbench_clients: usize,
    #[arg(long, default_value_t = 2)]
    pub pgbench_threads: usize,
    /// pgbench run length (default: --duration).
    #[arg(long, value_parser = parse_duration)]
    pub pgbench_duration: Option<Duration>,
    /// `amqp-bookings`: skip the `broker-baseline` phase (the same round trip through RabbitMQ alone).
    #[arg(long)]
    pub skip_broker_baseline: bool,
    /// `amqp-bookings` (and its `broker-baseline`): listen for the replies on a quorum queue, as a production
    /// subscriber would, so that each reply's publish is confirmed only after the broker's log flush (by
    /// default a private classic queue, confirmed without one).
    #[arg(long)]
    pub durable_tap: bool,
    /// `compare`, `http-reads`: skip the `http-floor` phase (`GET /health` with the harness's own client).
    #[arg(long)]
    pub skip_floor: bool,
    /// `pgbench-baseline`/`compare`: skip the one-wallet (hot) half.
    #[arg(long)]
    pub skip_hot: bool,
    /// `pgbench-baseline`/`compare`: skip the N-wallet (spread) half.
    #[arg(long)]
    pub skip_spread: bool,

    /// `amqp-bookings`: the broker (with --spawn the service uses it under names of its own run; with
    /// --url the service's default exchanges are used).
    #[arg(long, env = "TEST_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    /// `amqp-bookings --spawn`: the in-process consumer's prefetch (the service's `AMQP_PREFETCH`).
    #[arg(long, default_value_t = wallet_service::events::PREFETCH)]
    pub prefetch: u16,
    /// With --spawn: the service's `GROUP_COMMITTERS` (committer tasks writing groups in parallel).
    #[arg(long, default_value_t = wallet_service::store::GROUP_COMMITTERS, value_parser = group_committers)]
    pub group_committers: usize,
    /// With --spawn: the service's `SPEND_FOLD_INTERVAL_SECS` (seconds between folds of the spend aggregates).
    #[arg(long, default_value_t = wallet_service::service::reports::SPEND_FOLD_EVERY.as_secs())]
    pub spend_fold_secs: u64,

    /// Skip the books check (e.g. --url without --database-url).
    #[arg(long)]
    pub no_books: bool,
    /// Output directory (default target/loadtest-results/<scenario>-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

/// What a run produced.
pub struct Outcome {
    pub result: RunResult,
    pub result_json: PathBuf,
    pub report_html: PathBuf,
}

fn progress_bar(quiet: bool, prefix: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {elapsed_precise} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

fn tap_queue(args: &Args) -> amqp::TapQueue {
    if args.durable_tap {
        amqp::TapQueue::Quorum
    } else {
        amqp::TapQueue::Private
    }
}

fn mode_label(mode: Mode) -> String {
    match mode {
        Mode::Open { rate } => format!("open loop {rate:.0}/s"),
        Mode::Closed { concurrency } => format!("closed loop, {concurrency} clients"),
    }
}

/// Runs a scenario; the caller turns `passed == false` into a failing exit status.
pub async fn run(args: Args, command_line: String) -> anyhow::Result<Outcome> {
    if args.max_amount_cents < 1 {
        bail!("--max-amount-cents must be at least 1");
    }
    if let Some(r) = args.rate {
        sched::RateSchedule::new(r).map_err(|e| anyhow!("--rate: {e}"))?;
    }
    let started_at = chrono::Utc::now();
    let machine = Machine::probe();
    let out_dir = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("target/loadtest-results").join(format!(
            "{}-{}",
            args.scenario.name(),
            started_at.format("%Y%m%dT%H%M%SZ")
        ))
    });
    let cpus = machine.cpus;
    let amqp = (args.scenario == Scenario::AmqpBookings).then(|| {
        let topology = if args.spawn {
            amqp::run_topology(&uuid::Uuid::new_v4().simple().to_string()[..10])
        } else {
            wallet_service::events::Topology::default()
        };
        (args.amqp_url.clone(), topology)
    });
    let opts = TargetOpts {
        url: args.url.clone(),
        database_url: args.database_url.clone(),
        spawn: args.spawn,
        admin_database_url: args.admin_database_url.clone(),
        pool_size: args.pool_size,
        prefetch: args.prefetch,
        group_committers: args.group_committers,
        spend_fold_every: Duration::from_secs(args.spend_fold_secs.max(1)),
        service_threads: args.service_threads.unwrap_or(cpus),
        keep_db: args.keep_db,
        jwt_secret: args.jwt_secret.clone(),
        jwt_issuer: args.jwt_issuer.clone(),
        jwt_audience: args.jwt_audience.clone(),
        events: amqp.clone().filter(|_| args.spawn),
        audit_chain: true,
    };
    let result = if args.scenario == Scenario::ChainCost {
        chain_cost(&args, &opts, &machine, started_at, command_line).await?
    } else {
        let target = Target::start(&opts).await?;
        let result = run_on(&args, &target, &machine, started_at, command_line, amqp).await;
        target.shutdown().await;
        result?
    };
    let (result_json, report_html) = report::write(&result, &out_dir)?;
    Ok(Outcome {
        result,
        result_json,
        report_html,
    })
}

async fn run_on(
    args: &Args,
    target: &Target,
    machine: &Machine,
    started_at: chrono::DateTime<chrono::Utc>,
    command_line: String,
    amqp: Option<(String, wallet_service::events::Topology)>,
) -> anyhow::Result<RunResult> {
    let http = drive::http_client(args.max_in_flight.max(args.concurrency))?;
    setup::wait_healthy(&http, &target.base_url, Duration::from_secs(30)).await?;
    let mut result = RunResult {
        scenario: args.scenario.name().into(),
        started_at: started_at.to_rfc3339(),
        command_line,
        machine: machine.clone(),
        target: target.description.clone(),
        setup: None,
        engine_runs: vec![],
        pgbench_runs: vec![],
        comparisons: vec![],
        holds: None,
        service: None,
        notes: vec![],
        passed: true,
    };
    let books_db = if args.no_books {
        result.notes.push("books check skipped (--no-books)".into());
        None
    } else if let Some(db) = &target.database_url {
        Some(db.clone())
    } else {
        bail!("the books check needs the service's database: give --database-url, or --no-books to skip it");
    };
    let default_mode = |compare: bool| match (args.rate, args.closed || (compare && args.rate.is_none())) {
        (_, true) => Mode::Closed {
            concurrency: args.concurrency,
        },
        (Some(rate), false) => Mode::Open { rate },
        (None, false) => Mode::Open { rate: 1000.0 },
    };
    let pg_opts = PgbenchOpts {
        clients: args.pgbench_clients,
        threads: args.pgbench_threads,
        duration: args.pgbench_duration.unwrap_or(args.duration),
        max_cents: args.max_amount_cents,
        initial_cents: args.initial_balance,
    };
    match args.scenario {
        Scenario::HttpDebits | Scenario::HttpHot | Scenario::HttpReads | Scenario::Mixed => {
            let (wallets, mix) = match args.scenario {
                Scenario::HttpDebits => (args.wallets, Mix::DEBITS),
                Scenario::HttpHot => (1, Mix::DEBITS),
                Scenario::HttpReads => (args.wallets, Mix::READS),
                _ => (args.wallets, args.mix),
            };
            let fixture = make_fixture(args, target, &http, wallets, books_db.as_deref()).await?;
            result.setup = Some(setup_info(&fixture));
            let run = engine_run(
                args,
                target,
                &fixture,
                mix,
                default_mode(false),
                args.scenario.name(),
                books_db.as_deref(),
            )
            .await?;
            if args.scenario == Scenario::HttpReads && !args.skip_floor {
                let floor = http_floor(args, target).await?;
                result
                    .comparisons
                    .push(floor_row("wallet GET vs http-floor", &run, &floor));
                result.engine_runs.push(run);
                result.engine_runs.push(floor);
            } else {
                result.engine_runs.push(run);
            }
        }
        Scenario::PgbenchBaseline => {
            let db = target
                .database_url
                .clone()
                .context("pgbench-baseline needs the database: --spawn, or --url with --database-url")?;
            if !args.skip_spread {
                result
                    .pgbench_runs
                    .push(pg_run(&db, "spread", args.wallets, &pg_opts, args.quiet).await?);
            }
            if !args.skip_hot {
                result
                    .pgbench_runs
                    .push(pg_run(&db, "hot", 1, &pg_opts, args.quiet).await?);
            }
        }
        Scenario::Compare => {
            let db = target
                .database_url
                .clone()
                .context("compare needs the database: --spawn, or --url with --database-url")?;
            let mode = default_mode(true);
            let mut total_setup = None;
            if !args.skip_spread {
                let fixture = make_fixture(args, target, &http, args.wallets, books_db.as_deref()).await?;
                total_setup = Some(setup_info(&fixture));
                let e = engine_run(
                    args,
                    target,
                    &fixture,
                    Mix::DEBITS,
                    mode,
                    "http-debits",
                    books_db.as_deref(),
                )
                .await?;
                let p = pg_run(&db, "spread", args.wallets, &pg_opts, args.quiet).await?;
                result.comparisons.push(compare_row("spread", &e, &p));
                // The database's own ceiling: the same guarded debits, N per statement.
                for n in BATCHED_BASELINE_SIZES.into_iter().filter(|n| *n <= args.wallets) {
                    checkpoint_before_phase(Some(&db), args.quiet).await;
                    let b = pgbench::run_bulk(&db, &format!("batched-{n}"), args.wallets, n, &pg_opts).await?;
                    result
                        .comparisons
                        .push(batched_row(&format!("spread vs pgbench-batched({n})"), &e, &b, n));
                    result.pgbench_runs.push(b);
                }
                result.engine_runs.push(e);
                result.pgbench_runs.push(p);
            }
            if !args.skip_hot {
                let fixture = make_fixture(args, target, &http, 1, books_db.as_deref()).await?;
                total_setup.get_or_insert_with(|| setup_info(&fixture));
                let e = engine_run(
                    args,
                    target,
                    &fixture,
                    Mix::DEBITS,
                    mode,
                    "http-hot",
                    books_db.as_deref(),
                )
                .await?;
                let p = pg_run(&db, "hot", 1, &pg_opts, args.quiet).await?;
                result.comparisons.push(compare_row("hot", &e, &p));
                result.engine_runs.push(e);
                result.pgbench_runs.push(p);
            }
            result.setup = total_setup;
            if !args.skip_floor {
                let floor = http_floor(args, target).await?;
                for e in result.engine_runs.clone() {
                    result
                        .comparisons
                        .push(floor_row(&format!("{} vs http-floor", e.name), &e, &floor));
                }
                result.engine_runs.push(floor);
            }
            result.notes.push(
                "ratio = engine 201s per second ÷ pgbench tps, same database, run back to back, each measured \
                 phase right after a CHECKPOINT; the engine's commits also write outbox rows (and refusals' \
                 audit rows), the baseline's do not"
                    .into(),
            );
        }
        Scenario::Reports => reports_phases(args, target, &http, &mut result, books_db.as_deref()).await?,
        Scenario::HttpBulk => {
            let db = target
                .database_url
                .clone()
                .context("http-bulk needs the database for its baseline: --spawn, or --url with --database-url")?;
            let fixture = make_fixture(args, target, &http, args.wallets, books_db.as_deref()).await?;
            result.setup = Some(setup_info(&fixture));
            let fixture = Arc::new(fixture);
            checkpoint_before_phase(Some(&db), args.quiet).await;
            if !args.quiet {
                eprintln!(
                    "http-bulk: {} clients, batches of {} for {:.0} s over {} wallet(s)",
                    args.bulk_clients,
                    args.batch_items,
                    args.duration.as_secs_f64(),
                    fixture.wallets.len()
                );
            }
            let bar = progress_bar(args.quiet, "http-bulk");
            let run = bulk::run(
                &http,
                &target.base_url,
                &target.auth.token(Role::Service),
                fixture.clone(),
                args.bulk_clients,
                args.batch_items,
                args.max_amount_cents,
                args.seed,
                args.duration,
                &bar,
            )
            .await?;
            bar.finish_and_clear();
            let books = match books_db.as_deref() {
                Some(db) => {
                    let (ws, rows) = setup::read_books(db, &fixture.wallets).await?;
                    Some(books::check(&ws, &rows, &run.ledger))
                }
                None => None,
            };
            let e = EngineRun {
                name: "http-bulk".into(),
                mode: format!(
                    "closed loop, {} clients, batches of {}",
                    args.bulk_clients, args.batch_items
                ),
                wallets: fixture.wallets.len(),
                stats: run.stats,
                books,
            };
            result.notes.push(format!(
                "http-bulk: {} batches; batch latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; an item's latency is its batch's",
                run.batches, run.batch_latency.p50_ms, run.batch_latency.p99_ms, run.batch_latency.max_ms
            ));
            if !args.quiet {
                eprintln!(
                    "pgbench bulk: {} wallet(s), {} clients, {} debits per statement, {:.0} s",
                    args.wallets,
                    args.pgbench_clients,
                    args.batch_items,
                    pg_opts.duration.as_secs_f64()
                );
            }
            checkpoint_before_phase(Some(&db), args.quiet).await;
            let p = pgbench::run_bulk(&db, "bulk", args.wallets, args.batch_items, &pg_opts).await?;
            result.comparisons.push(batched_row("bulk", &e, &p, args.batch_items));
            result.notes.push(format!(
                "bulk ratio = engine items applied per second ÷ baseline rows per second (pgbench {:.1} statements/s × {} \
                 guarded debits each); the engine's commits also write outbox rows, the baseline's do not",
                p.tps, args.batch_items
            ));
            result.engine_runs.push(e);
            result.pgbench_runs.push(p);
        }
        Scenario::HttpHolds => {
            holds::run_scenario(
                args,
                target,
                &http,
                default_mode(false),
                books_db.as_deref(),
                &mut result,
            )
            .await?;
        }
        Scenario::ChainCost => unreachable!("chain-cost starts its own services (`chain_cost`)"),
        Scenario::AmqpBookings => {
            let (url, topology) = amqp.context("amqp-bookings needs the broker (--amqp-url)")?;
            let fixture = make_fixture(args, target, &http, args.wallets, books_db.as_deref()).await?;
            result.setup = Some(setup_info(&fixture));
            let mode = default_mode(false);
            if !args.quiet {
                eprintln!(
                    "amqp-bookings: {} for {:.0} s over {} wallet(s), exchange {}",
                    mode_label(mode),
                    args.duration.as_secs_f64(),
                    fixture.wallets.len(),
                    topology.booking_exchange
                );
            }
            let fixture = Arc::new(fixture);
            let workload = Workload {
                mix: Mix::DEBITS,
                seed: args.seed,
                max_cents: args.max_amount_cents,
                wallets: fixture.wallets.len(),
                sequential: args.sequential,
            };
            let bar = progress_bar(args.quiet, "bookings");
            let (stats, ledger) = amqp::run(
                &url,
                &topology,
                fixture.clone(),
                workload,
                mode,
                args.duration,
                args.max_in_flight,
                tap_queue(args),
                &bar,
            )
            .await?;
            bar.finish_and_clear();
            let books = match books_db.as_deref() {
                Some(db) => {
                    let (ws, rows) = setup::read_books(db, &fixture.wallets).await?;
                    Some(books::check(&ws, &rows, &ledger))
                }
                None => None,
            };
            result.engine_runs.push(EngineRun {
                name: "amqp-bookings".into(),
                mode: mode_label(mode),
                wallets: fixture.wallets.len(),
                stats,
                books,
            });
            if !args.skip_broker_baseline {
                let load = broker::Load {
                    mode,
                    max_in_flight: args.max_in_flight,
                    tap_queue: tap_queue(args),
                };
                let label = match mode {
                    Mode::Closed { concurrency } => format!("closed loop, {concurrency} outstanding"),
                    Mode::Open { .. } => mode_label(mode),
                };
                if !args.quiet {
                    eprintln!(
                        "broker-baseline: {label}, prefetch {}, {:.0} s",
                        args.prefetch,
                        args.duration.as_secs_f64()
                    );
                }
                let stats = broker::run(&args.amqp_url, load, args.prefetch, args.duration).await?;
                let base = EngineRun {
                    name: "broker-baseline".into(),
                    mode: label,
                    wallets: 0,
                    stats,
                    books: None,
                };
                let engine = result.engine_runs.last().context("the bookings run")?;
                result
                    .comparisons
                    .push(floor_row("amqp-bookings vs broker-baseline", engine, &base));
                result.engine_runs.push(base);
            }
            result.notes.push(
                "amqp-bookings latency: from the intended publish time of BookingCreated to the arrival of its \
                 TransactionCompleted (or TransactionFailed) on the wallet exchange, through the consumer, the \
                 engine, the commit and the outbox relay"
                    .into(),
            );
        }
    }
    result.service = Some(service_info(args, target, &http).await);
    result.passed = result.engine_runs.iter().all(|r| r.books.as_ref().is_none_or(|b| b.ok))
        && result.pgbench_runs.iter().all(|p| p.books.ok);
    Ok(result)
}

/// The `reports` scenario (see [`reports`]): the filled company, the two report phases, then debits with the
/// aggregates on and off (on/off/off/on, `--spawn` only: the switch is an `ALTER TABLE` on the database).
async fn reports_phases(
    args: &Args,
    target: &Target,
    http: &reqwest::Client,
    result: &mut RunResult,
    books_db: Option<&str>,
) -> anyhow::Result<()> {
    let db = target
        .database_url
        .clone()
        .context("reports needs the database: --spawn, or --url with --database-url")?;
    let bar = progress_bar(args.quiet, "setup");
    bar.set_length(args.company_wallets as u64);
    let company = setup::via_sql(&db, args.company_wallets, args.initial_balance, &bar).await?;
    bar.finish_and_clear();
    if !args.quiet {
        eprintln!(
            "reports: filling {} ledger rows over {} wallets",
            args.ledger_rows, args.company_wallets
        );
    }
    let fill_s = reports::fill(&db, &company, args.ledger_rows, args.seed).await?;
    let fold_t0 = std::time::Instant::now();
    let folded = reports::fold_all(&db).await?;
    let fold_s = fold_t0.elapsed().as_secs_f64();
    for sql in [
        "VACUUM (ANALYZE) spend_daily",
        "VACUUM (ANALYZE) spend_monthly",
        "CHECKPOINT",
    ] {
        target::connect(&db)
            .await?
            .batch_execute(sql)
            .await
            .with_context(|| sql.to_string())?;
    }
    let (ws, rows) = setup::read_books(&db, &company.wallets).await?;
    let filled = rows.len() as u64;
    let company_books = books::check_sql(&ws, &rows, filled..=filled);
    drop(rows);
    result.setup = Some(setup_info(&company));
    result.notes.push(format!(
        "reports: {filled} ledger rows over {} wallets of one company, spread over the past {} days, filled in {fill_s:.0} s (SQL), folded into the aggregates {fold_s:.1} s later ({folded} rows by the harness's spend_fold_run(), the rest by the service's own fold meanwhile)",
        args.company_wallets,
        reports::HISTORY_DAYS
    ));
    let company_id = reports::company_of(&db, &company).await?;
    let client = Arc::new(h1::H1::new(&target.base_url, args.report_clients.max(1) * 2, drive::REQUEST_TIMEOUT).await?);
    let admin = target.auth.token(Role::Admin);
    let month = reports::last_full_month(chrono::Utc::now().date_naive());
    let phases: [(&'static str, drive::PathOf, drive::BodyCheck, String); 2] = [
        (
            "spend-report",
            reports::spend_path(company_id, month),
            reports::spend_has_rows,
            format!("{} to {} by user", month.0, month.1),
        ),
        (
            "balance-at",
            reports::balance_path(Arc::new(company.wallets.clone()), args.seed),
            reports::has_balance,
            "a random wallet at a random instant of the year".into(),
        ),
    ];
    let mut books = Some(company_books);
    for (name, path, check, what) in phases {
        checkpoint_before_phase(Some(&db), args.quiet).await;
        if !args.quiet {
            eprintln!(
                "{name}: {} clients for {:.0} s ({what})",
                args.report_clients,
                args.duration.as_secs_f64()
            );
        }
        let stats = drive::closed_gets(
            client.clone(),
            &admin,
            args.report_clients,
            args.duration,
            name,
            path,
            check,
        )
        .await;
        result.engine_runs.push(EngineRun {
            name: name.into(),
            mode: format!("closed loop, {} clients: {what}", args.report_clients),
            wallets: args.company_wallets,
            stats,
            books: books.take(),
        });
    }
    if !args.spawn {
        result
            .notes
            .push("reports: debits with the aggregates on and off need --spawn (not measured)".into());
        return Ok(());
    }
    let mode = match args.rate {
        Some(rate) if !args.closed => Mode::Open { rate },
        _ => Mode::Closed {
            concurrency: args.concurrency,
        },
    };
    let mut figures: Vec<(bool, f64, f64)> = vec![];
    let mut switch = reports::AggregateSwitch::new(&db);
    for (i, on) in CHAIN_COST_ORDER.into_iter().enumerate() {
        switch.set(on).await?;
        let fixture = make_fixture(args, target, http, args.wallets, books_db).await?;
        let name = format!("http-debits aggregates={} #{}", if on { "on" } else { "off" }, i + 1);
        let run = engine_run(args, target, &fixture, Mix::DEBITS, mode, &name, books_db).await;
        let run = match run {
            Ok(r) => r,
            Err(e) => {
                switch.set(true).await?;
                return Err(e);
            }
        };
        figures.push((on, run.stats.achieved_ok_per_s, run.stats.latency.p99_ms));
        result.engine_runs.push(run);
    }
    switch.set(true).await?;
    let mean = |on: bool, f: fn(&(bool, f64, f64)) -> f64| {
        let v: Vec<f64> = figures.iter().filter(|x| x.0 == on).map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let (on, off) = (mean(true, |x| x.1), mean(false, |x| x.1));
    let (on_p99, off_p99) = (mean(true, |x| x.2), mean(false, |x| x.2));
    result.notes.push(format!(
        "aggregates cost: debits/s on {on:.0}, off {off:.0} (means of two phases each, on/off/off/on), \
         on/off = {:.3}; p99 on {on_p99:.1} ms, off {off_p99:.1} ms",
        if off > 0.0 { on / off } else { 0.0 }
    ));
    Ok(())
}

/// `--group-committers`: the service's own rule for `GROUP_COMMITTERS`.
fn group_committers(spec: &str) -> Result<usize, String> {
    wallet_service::config::parse_group_committers(spec).map_err(|e| e.to_string())
}

/// The order of the `chain-cost` services: on, off, off, on (ABBA), so that a drift of the shared
/// machine's speed that is linear over the run weighs on both settings alike (each is the mean of an early
/// and a late service).
const CHAIN_COST_ORDER: [bool; 4] = [true, false, false, true];

/// `chain-cost` (issue 13, "Measured"): compare's spread and hot engine phases (the same `http-debits`
/// over `--wallets` wallets and over one, the same mode, each after its warm-up and a CHECKPOINT, books
/// checked) on four in-process services in [`CHAIN_COST_ORDER`], the audit chain on or off
/// (`AUDIT_CHAIN`). Each service gets a fresh database on the same server: one database shared by the
/// four would make later services run over bigger tables (a drift of its own), and a service started with
/// the chain on chains, at its start, every row an earlier one wrote with it off. Prints off ÷ on of
/// debits/s and of p99 for spread and hot.
async fn chain_cost(
    args: &Args,
    opts: &TargetOpts,
    machine: &Machine,
    started_at: chrono::DateTime<chrono::Utc>,
    command_line: String,
) -> anyhow::Result<RunResult> {
    if !args.spawn {
        bail!("chain-cost starts its own services: give --spawn");
    }
    let mode = match args.rate {
        Some(rate) if !args.closed => Mode::Open { rate },
        _ => Mode::Closed {
            concurrency: args.concurrency,
        },
    };
    let mut result = RunResult {
        scenario: args.scenario.name().into(),
        started_at: started_at.to_rfc3339(),
        command_line,
        machine: machine.clone(),
        target: String::new(),
        setup: None,
        engine_runs: vec![],
        pgbench_runs: vec![],
        comparisons: vec![],
        service: None,
        holds: None,
        notes: vec![],
        passed: true,
    };
    let http = drive::http_client(args.max_in_flight.max(args.concurrency))?;
    // (spread ok/s, spread p99, hot ok/s, hot p99) per service, in order.
    let mut figures: Vec<(bool, [f64; 4])> = Vec::new();
    for (i, &chain) in CHAIN_COST_ORDER.iter().enumerate() {
        let label = if chain { "on" } else { "off" };
        if !args.quiet {
            eprintln!(
                "chain-cost: service {} of {} with AUDIT_CHAIN={label}",
                i + 1,
                CHAIN_COST_ORDER.len()
            );
        }
        let target = Target::start(&TargetOpts {
            audit_chain: chain,
            ..opts.clone()
        })
        .await?;
        let phases = async {
            setup::wait_healthy(&http, &target.base_url, Duration::from_secs(30)).await?;
            let db = target.database_url.clone();
            let mut runs = Vec::new();
            for (scenario, wallets) in [("spread", args.wallets), ("hot", 1)] {
                let fixture = make_fixture(args, &target, &http, wallets, db.as_deref()).await?;
                result.setup.get_or_insert_with(|| setup_info(&fixture));
                let name = format!("{scenario} chain={label} #{}", i + 1);
                runs.push(engine_run(args, &target, &fixture, Mix::DEBITS, mode, &name, db.as_deref()).await?);
            }
            anyhow::Ok(runs)
        }
        .await;
        if result.target.is_empty() {
            result.target = format!(
                "{} (one per setting, {} in all)",
                target.description,
                CHAIN_COST_ORDER.len()
            );
        }
        target.shutdown().await;
        let runs = phases?;
        let f = |r: &EngineRun| (r.stats.achieved_ok_per_s, r.stats.latency.p99_ms);
        let ((so, sp), (ho, hp)) = (f(&runs[0]), f(&runs[1]));
        figures.push((chain, [so, sp, ho, hp]));
        result.engine_runs.extend(runs);
    }
    let mean = |on: bool, k: usize| {
        let v: Vec<f64> = figures.iter().filter(|(c, _)| *c == on).map(|(_, f)| f[k]).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    for (k, what) in [
        (0, "spread debits/s"),
        (1, "spread p99 ms"),
        (2, "hot debits/s"),
        (3, "hot p99 ms"),
    ] {
        let (on, off) = (mean(true, k), mean(false, k));
        let ratio = if on > 0.0 { off / on } else { 0.0 };
        result.notes.push(format!(
            "chain cost: {what}: chain off {off:.2}, chain on {on:.2} (means of {} services each), off/on = {ratio:.3}",
            CHAIN_COST_ORDER.len() / 2
        ));
    }
    result.passed = result.engine_runs.iter().all(|r| r.books.as_ref().is_none_or(|b| b.ok));
    Ok(result)
}

fn compare_row(name: &str, e: &EngineRun, p: &pgbench::PgbenchRun) -> Comparison {
    ratio_row(name, e, p.tps, p.latency.p99_ms)
}

/// The engine's 201s per second against a baseline's rate (and their p99s): every ratio the harness prints.
fn ratio_row(name: &str, e: &EngineRun, baseline_per_s: f64, baseline_p99_ms: f64) -> Comparison {
    Comparison {
        name: name.into(),
        engine_ok_per_s: e.stats.achieved_ok_per_s,
        pgbench_tps: baseline_per_s,
        ratio: if baseline_per_s > 0.0 {
            e.stats.achieved_ok_per_s / baseline_per_s
        } else {
            0.0
        },
        engine_p99_ms: e.stats.latency.p99_ms,
        pgbench_p99_ms: baseline_p99_ms,
    }
}

/// Debits per statement of the batched baselines `compare` runs beside the per-commit one.
pub const BATCHED_BASELINE_SIZES: [usize; 2] = [100, 1000];

/// The engine against a batched baseline: engine 201s per second ÷ the baseline's rows per second.
fn batched_row(name: &str, e: &EngineRun, b: &pgbench::PgbenchRun, per_statement: usize) -> Comparison {
    ratio_row(name, e, b.tps * per_statement as f64, b.latency.p99_ms)
}

/// A run against the HTTP floor (`GET /health` with the same client): requests per second ÷ the floor's.
fn floor_row(name: &str, e: &EngineRun, floor: &EngineRun) -> Comparison {
    ratio_row(name, e, floor.stats.achieved_ok_per_s, floor.stats.latency.p99_ms)
}

/// `http-floor`: `GET /health` in a closed loop with the harness's own client at `--concurrency`: what HTTP
/// alone costs on this box, the ceiling of any request the service answers.
async fn http_floor(args: &Args, target: &Target) -> anyhow::Result<EngineRun> {
    let client = Arc::new(
        h1::H1::new(
            &target.base_url,
            args.max_in_flight.max(args.concurrency),
            drive::REQUEST_TIMEOUT,
        )
        .await?,
    );
    if !args.quiet {
        eprintln!(
            "http-floor: GET /health, closed loop, {} clients for {:.0} s",
            args.concurrency,
            args.duration.as_secs_f64()
        );
    }
    let path: drive::PathOf = Arc::new(|_| "/health".to_string());
    let ok = |b: &[u8]| b.starts_with(b"{\"status\":\"ok\"");
    let stats = drive::closed_gets(client, "", args.concurrency, args.duration, "health", path, ok).await;
    Ok(EngineRun {
        name: "http-floor".into(),
        mode: format!("closed loop, {} clients", args.concurrency),
        wallets: 0,
        stats,
        books: None,
    })
}

fn setup_info(f: &Fixture) -> SetupInfo {
    SetupInfo {
        wallets: f.wallets.len(),
        via: f.via.into(),
        seconds: f.seconds,
        initial_balance: cents_text(f.initial_cents),
    }
}

async fn make_fixture(
    args: &Args,
    target: &Target,
    http: &reqwest::Client,
    n: usize,
    db: Option<&str>,
) -> anyhow::Result<Fixture> {
    if n == 0 {
        bail!("--wallets must be at least 1");
    }
    let bar = progress_bar(args.quiet, "setup");
    bar.set_length(n as u64);
    bar.set_message(format!("{n} wallets via {:?}", args.setup));
    let f = match args.setup {
        SetupVia::Http => {
            setup::via_http(
                http,
                &target.base_url,
                &target.auth.token(Role::Admin),
                n,
                args.initial_balance,
                args.setup_concurrency,
                &bar,
            )
            .await?
        }
        SetupVia::Sql => {
            let db = db
                .or(target.database_url.as_deref())
                .context("--setup sql needs the database (--database-url)")?;
            setup::via_sql(db, n, args.initial_balance, &bar).await?
        }
    };
    bar.finish_and_clear();
    if !args.quiet {
        eprintln!("set up {n} wallet(s) via {} in {:.1} s", f.via, f.seconds);
    }
    Ok(f)
}

#[allow(clippy::too_many_arguments)]
async fn engine_run(
    args: &Args,
    target: &Target,
    fixture: &Fixture,
    mix: Mix,
    mode: Mode,
    name: &str,
    books_db: Option<&str>,
) -> anyhow::Result<EngineRun> {
    let fixture = Arc::new(fixture.clone());
    let client = h1::H1::new(
        &target.base_url,
        args.max_in_flight.max(args.concurrency),
        drive::REQUEST_TIMEOUT,
    )
    .await?;
    let driver = Arc::new(Driver::new(
        client,
        &target.auth.token(Role::Service),
        &target.auth.token(Role::Admin),
        fixture.clone(),
        Workload {
            mix,
            seed: args.seed,
            max_cents: args.max_amount_cents,
            wallets: fixture.wallets.len(),
            sequential: args.sequential,
        },
        args.idempotency_keys,
    ));
    let mut ledger = ClientLedger::default();
    if !args.warmup.is_zero() {
        let bar = progress_bar(args.quiet, "warm-up");
        let (_, warm) = driver.run(mode, args.warmup, args.max_in_flight, &bar, false).await;
        bar.finish_and_clear();
        ledger = warm;
    }
    checkpoint_before_phase(target.database_url.as_deref(), args.quiet).await;
    if !args.quiet {
        eprintln!(
            "{name}: {} for {:.0} s over {} wallet(s)",
            mode_label(mode),
            args.duration.as_secs_f64(),
            fixture.wallets.len()
        );
    }
    let bar = progress_bar(args.quiet, name);
    let (stats, measured) = driver
        .run(mode, args.duration, args.max_in_flight, &bar, !args.quiet)
        .await;
    bar.finish_and_clear();
    ledger.acked.extend(measured.acked);
    for (w, n) in measured.unknown {
        *ledger.unknown.entry(w).or_default() += n;
    }
    let books = match books_db {
        Some(db) => {
            let (ws, rows) = setup::read_books(db, &fixture.wallets).await?;
            Some(books::check(&ws, &rows, &ledger))
        }
        None => None,
    };
    Ok(EngineRun {
        name: name.into(),
        mode: mode_label(mode),
        wallets: fixture.wallets.len(),
        stats,
        books,
    })
}

async fn pg_run(
    db: &str,
    name: &str,
    wallets: usize,
    o: &PgbenchOpts,
    quiet: bool,
) -> anyhow::Result<pgbench::PgbenchRun> {
    if !quiet {
        eprintln!(
            "pgbench {name}: {} wallet(s), {} clients, {:.0} s",
            wallets,
            o.clients,
            o.duration.as_secs_f64()
        );
    }
    let bar = progress_bar(quiet, &format!("pgbench {name}"));
    bar.enable_steady_tick(Duration::from_millis(250));
    bar.set_length(o.duration.as_secs());
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                bar.inc(1);
            }
        })
    };
    checkpoint_before_phase(Some(db), quiet).await;
    let r = pgbench::run(db, name, wallets, o).await;
    ticker.abort();
    bar.finish_and_clear();
    r
}

/// Starts a measured phase right after a `CHECKPOINT`, so that no phase pays for a checkpoint (and the
/// full-page writes after it) that an earlier phase's WAL set off: the engine and the baseline, run back to
/// back, start on equal terms. A phase of ~20 s writes far less WAL than triggers the next checkpoint.
/// Needs a superuser (or `pg_checkpoint`); without one the phase is measured anyway, with a note.
async fn checkpoint_before_phase(db: Option<&str>, quiet: bool) {
    let Some(db) = db else { return };
    let done = async { anyhow::Ok(target::connect(db).await?.batch_execute("CHECKPOINT").await?) }.await;
    if let Err(e) = done
        && !quiet
    {
        eprintln!("note: CHECKPOINT before the phase failed ({e:#}); measuring anyway");
    }
}

/// Engine figures from `/metrics` and the service's memory.
async fn service_info(args: &Args, target: &Target, http: &reqwest::Client) -> ServiceInfo {
    let mut info = ServiceInfo::default();
    let pid = if args.spawn {
        Some(std::process::id())
    } else {
        args.service_pid
    };
    if let Some(pid) = pid {
        info.pid = Some(pid);
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let kb = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            };
            info.rss_kb = kb("VmRSS:");
            info.peak_rss_kb = kb("VmHWM:");
        }
    }
    if let Ok(res) = http.get(format!("{}/metrics", target.base_url)).send().await
        && let Ok(text) = res.text().await
    {
        info.metrics = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                ["wallet_", "db_pool", "http_rejections"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .take(80)
            .map(str::to_string)
            .collect();
    }
    info
}

/// The lines printed at the end of a run.
pub fn summary_text(o: &Outcome) -> String {
    let r = &o.result;
    let mut s = String::new();
    use std::fmt::Write as _;
    for e in &r.engine_runs {
        let l = &e.stats.latency;
        let _ = writeln!(
            s,
            "{:<12} {:<26} {:>8.0} ok/s  ok {:>8}  failed {:>6}  p50 {:>7.2}  p90 {:>7.2}  p99 {:>7.2}  p99.9 {:>7.2}  max {:>8.2} ms",
            e.name,
            e.mode,
            e.stats.achieved_ok_per_s,
            e.stats.ok,
            e.stats.failed,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms
        );
        for (k, v) in &e.stats.outcomes {
            let _ = writeln!(s, "{:<12}   failure {k}: {v}", "");
        }
        if let Some(b) = &e.books {
            let _ = writeln!(
                s,
                "{:<12}   books {}: {} wallets, {} rows, {} × 201, {} unknown, {} lost, {} doubled",
                "",
                if b.ok { "balance" } else { "DO NOT BALANCE" },
                b.wallets_checked,
                b.rows_in_db,
                b.acked_201,
                b.unknown_outcomes,
                b.lost,
                b.doubled
            );
        }
    }
    for p in &r.pgbench_runs {
        let _ = writeln!(
            s,
            "pgbench {:<6} {:>6} wallets, {:>3} clients {:>8.0} tps   p50 {:>7.2}  p99 {:>7.2}  max {:>8.2} ms   books {}",
            p.name,
            p.wallets,
            p.clients,
            p.tps,
            p.latency.p50_ms,
            p.latency.p99_ms,
            p.latency.max_ms,
            if p.books.ok { "balance" } else { "DO NOT BALANCE" }
        );
    }
    for c in &r.comparisons {
        let _ = writeln!(
            s,
            "RATIO {:<6} engine {:.0} ok/s ÷ baseline {:.0}/s = {:.2}×",
            c.name, c.engine_ok_per_s, c.pgbench_tps, c.ratio
        );
    }
    if let Some(h) = &r.holds {
        s.push_str(&holds::summary_text(h));
    }
    for n in r.notes.iter().filter(|n| n.starts_with("chain cost:")) {
        let _ = writeln!(s, "{n}");
    }
    if let Some(svc) = &r.service
        && let (Some(rss), Some(peak)) = (svc.rss_kb, svc.peak_rss_kb)
    {
        let _ = writeln!(
            s,
            "memory: RSS {} MiB, peak {} MiB (pid {:?})",
            rss / 1024,
            peak / 1024,
            svc.pid
        );
    }
    if !r.passed {
        let _ = writeln!(s, "\n*** THE BOOKS DO NOT BALANCE ***");
        for e in &r.engine_runs {
            if let Some(b) = e.books.as_ref().filter(|b| !b.ok) {
                for v in &b.violations {
                    let _ = writeln!(s, "  {}: {v}", e.name);
                }
            }
        }
        for p in r.pgbench_runs.iter().filter(|p| !p.books.ok) {
            for v in &p.books.violations {
                let _ = writeln!(s, "  pgbench {}: {v}", p.name);
            }
        }
    }
    let _ = writeln!(
        s,
        "result: {}\nreport: {}",
        o.result_json.display(),
        o.report_html.display()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("20").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn amounts_and_mixes_parse() {
        assert_eq!(parse_cents("1000.5").unwrap(), 100_050);
        assert_eq!(parse_cents("0").unwrap(), 0);
        assert!(parse_cents("1.001").is_err());
        assert!(parse_cents("-1").is_err());
        let m = parse_mix("70,10,20").unwrap();
        assert_eq!((m.debit, m.credit, m.read), (70, 10, 20));
        assert!(parse_mix("1,2").is_err());
        assert!(parse_mix("0,0,0").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        let a = Args::try_parse_from([
            "loadtest",
            "http-debits",
            "--spawn",
            "--wallets",
            "20",
            "--rate",
            "50",
            "--duration",
            "3s",
        ])
        .unwrap();
        assert_eq!(a.scenario, Scenario::HttpDebits);
        assert_eq!(a.wallets, 20);
        assert_eq!(a.rate, Some(50.0));
        assert!(Args::try_parse_from(["loadtest", "nope"]).is_err());
    }
}
