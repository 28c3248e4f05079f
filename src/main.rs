//! The `wallet-service` binary: `serve` (default), `dev-token`, or `audit verify` / `audit checkpoint` /
//! `audit reports`.

use std::time::Duration;

use clap::{Parser, Subcommand};
use uuid::Uuid;
use wallet_service::app::App;
use wallet_service::auth::{Caller, Role, mint_hs256};
use wallet_service::config::Config;

/// mimalloc instead of glibc malloc: under load the service allocates and frees many short-lived
/// buffers (HTTP bodies, JSON, SQL parameters) across threads, and glibc spent about a quarter of the
/// service's CPU in `malloc_consolidate`/`unlink_chunk` in the profile (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "wallet-service", about = "Wallet & Budget service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve HTTP on PORT (default 3003) until SIGTERM/SIGINT.
    Serve,
    /// Print a development JWT signed with JWT_SECRET (HS256), for curl and tests.
    DevToken {
        #[arg(long, default_value = "admin")]
        role: String,
        #[arg(long)]
        sub: Option<Uuid>,
        #[arg(long)]
        company: Option<Uuid>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// The tamper-evident ledger, on DATABASE_URL.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Recompute the hash chains (and checkpoints); exit non-zero naming the first broken row.
    Verify {
        /// Only this wallet's chain.
        #[arg(long)]
        wallet: Option<Uuid>,
        /// Trust the database up to this checkpoint id: verify each wallet's rows after its head as of it.
        #[arg(long)]
        since: Option<i64>,
    },
    /// Print the latest checkpoint (with --create, first write one over the heads that moved).
    Checkpoint {
        #[arg(long)]
        create: bool,
    },
    /// Recompute the reports' spend aggregates from the ledger rows; exit non-zero naming the first that differs.
    Reports {
        /// Only this wallet's aggregates.
        #[arg(long)]
        wallet: Option<Uuid>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::DevToken {
            role,
            sub,
            company,
            ttl,
        } => dev_token(&role, sub, company, ttl),
        Cmd::Serve => serve(),
        Cmd::Audit { command } => audit(command),
    }
}

/// `audit verify` exits 0 when every chain verifies, 1 naming the first broken row, 2 when it could not
/// run; `audit checkpoint` prints the latest checkpoint as JSON (`null` when there is none).
fn audit(command: AuditCmd) -> std::process::ExitCode {
    use std::process::ExitCode;
    use wallet_service::service::audit::{Auditor, Scope};
    let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.trim().is_empty()) else {
        eprintln!("audit needs DATABASE_URL");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let auditor = match Auditor::connect(&url) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        match command {
            AuditCmd::Verify { wallet, since } => match auditor.verify(Scope { wallet, since }).await {
                Ok(v) => match &v.broken {
                    None => {
                        println!(
                            "ok: {} wallets, {} rows, {} checkpoints verified",
                            v.wallets, v.rows, v.checkpoints
                        );
                        ExitCode::SUCCESS
                    }
                    Some(b) => {
                        println!("broken: {b}");
                        ExitCode::from(1)
                    }
                },
                Err(e) => {
                    eprintln!("verify could not run: {e}");
                    ExitCode::from(2)
                }
            },
            AuditCmd::Reports { wallet } => match auditor.reports(wallet).await {
                Ok(diff) if diff.is_empty() => {
                    println!("ok: every spend aggregate equals its ledger rows");
                    ExitCode::SUCCESS
                }
                Ok(diff) => {
                    for d in &diff {
                        println!("differs: {}", mismatch_line(d));
                    }
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("the reports audit could not run: {e}");
                    ExitCode::from(2)
                }
            },
            AuditCmd::Checkpoint { create } => {
                if create && let Err(e) = auditor.create_checkpoint().await {
                    eprintln!("checkpoint could not be written: {e}");
                    return ExitCode::from(2);
                }
                match auditor.latest_checkpoint().await {
                    Ok(c) => {
                        println!("{}", serde_json::to_string(&c).unwrap_or_default());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("checkpoint could not be read: {e}");
                        ExitCode::from(2)
                    }
                }
            }
        }
    })
}

/// One aggregate that differs from its ledger rows, as a line: wallet, day or month, kind, then both figures.
fn mismatch_line(d: &wallet_service::store::AggregateMismatch) -> String {
    let figure = |f: Option<(rust_decimal::Decimal, i64)>| match f {
        Some((amount, rows)) => format!("{amount} in {rows} rows"),
        None => "nothing".to_string(),
    };
    let period = match d.period {
        wallet_service::store::AggregatePeriod::Day => format!("day {}", d.day),
        wallet_service::store::AggregatePeriod::Month => format!("month {}", d.day.format("%Y-%m")),
    };
    format!(
        "wallet {} {} {}: ledger {}, aggregate {}",
        d.wallet_id,
        period,
        d.kind,
        figure(d.ledger),
        figure(d.aggregate)
    )
}

fn dev_token(role: &str, sub: Option<Uuid>, company: Option<Uuid>, ttl: u64) -> std::process::ExitCode {
    let Ok(secret) = std::env::var("JWT_SECRET") else {
        eprintln!("dev-token needs JWT_SECRET");
        return std::process::ExitCode::FAILURE;
    };
    let role: Role = match role.parse() {
        Ok(r) => r,
        Err(_) => {
            eprintln!("role must be user, manager, admin or service");
            return std::process::ExitCode::FAILURE;
        }
    };
    let issuer = std::env::var("JWT_ISSUER").unwrap_or_else(|_| "user-management".into());
    let audience = std::env::var("JWT_AUDIENCE").unwrap_or_else(|_| "wallet-service".into());
    let caller = Caller {
        user_id: sub.unwrap_or_else(Uuid::new_v4),
        role,
        company_id: company.unwrap_or_else(Uuid::new_v4),
    };
    println!(
        "{}",
        mint_hs256(secret.as_bytes(), &issuer, &audience, &caller, Duration::from_secs(ttl))
    );
    std::process::ExitCode::SUCCESS
}

fn serve() -> std::process::ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    wallet_service::telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let app = match App::build(config).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "start-up failed");
                return std::process::ExitCode::FAILURE;
            }
        };
        app.run(shutdown_signal()).await;
        tracing::info!("stopped");
        std::process::ExitCode::SUCCESS
    })
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop the service");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
    }
}
