//! Issue 10, defect 4: kill -9 under load. Eight clients send keyed debits, credits and transfers across 20
//! wallets, each retrying its operation until final; the process is killed with SIGKILL three times at
//! random moments and started again each time. Afterwards nothing acknowledged is lost, nothing is doubled,
//! every balance equals its ledger and what was acknowledged, and every key was answerable (not 409
//! `IDEMPOTENCY_IN_PROGRESS`) within the lease (10 s) after each restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{KEY_ANSWERABLE_WITHIN, audit_context, conclude, ms, seed};
use crate::helpers::audit::Auditor;
use crate::helpers::client::RetryingClient;
use crate::helpers::database::TestDatabase;
use crate::helpers::fixtures::{Bank, service_token};
use crate::helpers::load::{Load, Mix};
use crate::helpers::service::{IDEMPOTENCY_LEASE, ServiceConfig, ServiceProcess};
use crate::helpers::{eventually, within};

const WALLETS: usize = 20;
const WORKERS: usize = 8;
const KILLS: usize = 3;
/// Operations answered between kills (and after the last restart) before the next step.
const PROGRESS: usize = 20;
/// How long the test waits for that progress: keys the dead process held may be in progress for up to
/// the lease after a restart, and then there must be time to answer.
const PROGRESS_WITHIN: Duration = IDEMPOTENCY_LEASE.saturating_add(Duration::from_secs(8));
const CLIENT_BUDGET: Duration = Duration::from_secs(40);

struct Restart {
    killed_at: Instant,
    ready_at: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_three_times_under_load_loses_and_doubles_nothing() {
    within(Duration::from_secs(170), "the kill -9 test", async {
        let started = Instant::now();
        let seed = seed();
        let db = TestDatabase::create().await;
        let mut svc = ServiceProcess::start("kill-9", ServiceConfig::new(&db.url)).await;
        let wallets = Bank::new(&svc.base_url()).open_wallet_ids(WALLETS, "1000.00").await;
        let client = Arc::new(RetryingClient::new(&svc.base_url(), &service_token()).with_budget(CLIENT_BUDGET));
        let mix = Mix {
            debit: 4,
            credit: 3,
            transfer: 3,
        };
        let load = Load::start(client.clone(), WORKERS, mix, &wallets, seed);
        let mut rng = StdRng::seed_from_u64(seed.rotate_left(17));

        let mut restarts = Vec::new();
        let mut progress_stalled = 0;
        for _ in 0..KILLS {
            let before = load.answered();
            if !eventually(PROGRESS_WITHIN, || async { load.answered() >= before + PROGRESS }).await {
                progress_stalled += 1;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..2_000))).await;
            let killed_at = Instant::now();
            svc.sigkill();
            svc.restart().await;
            restarts.push(Restart {
                killed_at,
                ready_at: Instant::now(),
            });
        }
        let before = load.answered();
        if !eventually(PROGRESS_WITHIN, || async { load.answered() >= before + PROGRESS }).await {
            progress_stalled += 1;
        }
        let ops = load.finish().await;

        // A 409 in progress answered later than the lease after the restart before it: a key the dead
        // process held was not answerable in time.
        let late_keys = ops
            .iter()
            .filter(|op| {
                op.outcome.answers().any(|(at, r)| {
                    r.in_progress()
                        && restarts
                            .iter()
                            .rev()
                            .find(|s| s.ready_at <= at)
                            .is_some_and(|s| at - s.ready_at > KEY_ANSWERABLE_WITHIN)
                })
            })
            .count();
        // Per restart: kill -> ready, and kill -> the first 2xx the new process gave.
        let first_success_after = |s: &Restart| {
            ops.iter()
                .flat_map(|op| op.outcome.answers())
                .filter(|(at, r)| *at >= s.ready_at && r.is_success())
                .map(|(at, _)| at - s.killed_at)
                .min()
        };
        let recovery: Vec<_> = restarts.iter().map(|s| ms(s.ready_at - s.killed_at)).collect();
        let first_2xx: Vec<_> = restarts.iter().map(|s| first_success_after(s).map(ms)).collect();

        let report = Auditor::replay_and_audit(&client, &db.url, &ops, KEY_ANSWERABLE_WITHIN).await;
        let mut figures = report.figures();
        figures["seed"] = json!(seed);
        figures["wallets"] = json!(WALLETS);
        figures["workers"] = json!(WORKERS);
        figures["kills"] = json!(KILLS);
        figures["recovery_ms"] = json!(recovery);
        figures["first_2xx_after_kill_ms"] = json!(first_2xx);
        figures["late_keys"] = json!(late_keys);
        figures["progress_stalled"] = json!(progress_stalled);
        figures["elapsed_ms"] = json!(ms(started.elapsed()));

        let mut violations = report.violations();
        if late_keys > 0 {
            violations.push(format!(
                "{late_keys} key(s) answered 409 IDEMPOTENCY_IN_PROGRESS more than {KEY_ANSWERABLE_WITHIN:?} after a restart"
            ));
        }
        if progress_stalled > 0 {
            violations.push(format!(
                "{progress_stalled} time(s) fewer than {PROGRESS} operations were answered within {PROGRESS_WITHIN:?}"
            ));
        }
        conclude("kill_9_three_times_under_load_loses_and_doubles_nothing", figures, violations, format!("seed {seed}: {}", audit_context(&report, &svc)));
    })
    .await;
}
