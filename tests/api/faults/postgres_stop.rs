//! Issue 10, defect 3: Postgres goes away under load. The service runs on a private cluster (never the
//! shared one) while six clients send keyed debits; the cluster is stopped with `pg_ctl stop -m immediate`
//! for 10 s and started again. Meanwhile the service answers 503 `UNAVAILABLE` (or 504 `OUTCOME_UNKNOWN` for
//! a commit in flight), always with `Retry-After`, and `/ready` answers 503; once Postgres is back, `/ready`
//! answers 200 again with no restart of the service, no key stays in progress past the lease, and the books
//! are exact by the audit rule.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{KEY_ANSWERABLE_WITHIN, audit_context, conclude, ms, seed};
use crate::helpers::audit::Auditor;
use crate::helpers::client::{Reply, RetryingClient};
use crate::helpers::cluster::PgCluster;
use crate::helpers::database::TestDatabase;
use crate::helpers::fixtures::{Bank, service_token};
use crate::helpers::load::{Load, Mix};
use crate::helpers::service::{ServiceConfig, ServiceProcess};
use crate::helpers::{eventually, within};

const OUTAGE: Duration = Duration::from_secs(10);
const WALLETS: usize = 5;
const WORKERS: usize = 6;
/// Operations answered before the stop, and after the recovery, before the next step.
const PROGRESS: usize = 20;
const PROGRESS_WITHIN: Duration = Duration::from_secs(15);
/// How long after Postgres is back `/ready` may take to answer 200.
const RECOVERY_WITHIN: Duration = Duration::from_secs(30);
const CLIENT_BUDGET: Duration = Duration::from_secs(45);

/// One of the contract's "retry later" answers.
fn retry_signalled(r: &Reply) -> bool {
    matches!(
        (r.status, r.code.as_deref()),
        (503, Some("UNAVAILABLE")) | (504, Some("OUTCOME_UNKNOWN")) | (409, Some("IDEMPOTENCY_IN_PROGRESS"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_for_ten_seconds_under_load_answers_503_then_recovers() {
    within(Duration::from_secs(170), "the Postgres-stop test", async {
        let started = Instant::now();
        let seed = seed();
        let mut cluster = PgCluster::start().await;
        let db = TestDatabase::create_on(&cluster.url("postgres")).await;
        let mut svc = ServiceProcess::start("postgres-stop", ServiceConfig::new(&db.url)).await;
        let wallets = Bank::new(&svc.base_url()).open_wallet_ids(WALLETS, "1000000.00").await;
        let client = Arc::new(RetryingClient::new(&svc.base_url(), &service_token()).with_budget(CLIENT_BUDGET));
        let load = Load::start(client.clone(), WORKERS, Mix::DEBITS, &wallets, seed);
        let warmed_up = eventually(PROGRESS_WITHIN, || async { load.answered() >= PROGRESS }).await;

        let stopped_at = Instant::now();
        cluster.stop_immediate().await;
        let mut ready_during_outage: BTreeMap<String, usize> = BTreeMap::new();
        while stopped_at.elapsed() < OUTAGE {
            let status = svc.ready_status().await.map_or("no-answer".into(), |s| s.to_string());
            *ready_during_outage.entry(status).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let restarting_at = Instant::now();
        cluster.start_again().await;
        let pg_up_at = Instant::now();
        let recovered = eventually(RECOVERY_WITHIN, || async { svc.ready_status().await == Some(200) }).await;
        let ready_again_after = restarting_at.elapsed();
        let still_the_same_process = svc.is_running() && svc.starts == 1;
        let before = load.answered();
        let flowing_again = eventually(PROGRESS_WITHIN, || async { load.answered() >= before + PROGRESS }).await;
        let ops = load.finish().await;

        // What the clients were told while Postgres was down: 503 UNAVAILABLE or 504 OUTCOME_UNKNOWN (or 409
        // IDEMPOTENCY_IN_PROGRESS for a key whose command is still under way), each with Retry-After; or a 2xx
        // of a commit that made it before the stop.
        let mut outage_answers: BTreeMap<String, usize> = BTreeMap::new();
        let mut bad_outage_answers = 0;
        for op in &ops {
            for a in op.outcome.attempts.iter().filter(|a| a.at >= stopped_at && a.at <= pg_up_at) {
                let (label, good) = match &a.answer {
                    Ok(r) if r.is_success() => (r.label(), true),
                    Ok(r) if retry_signalled(r) && r.retry_after.is_some() => (r.label(), true),
                    Ok(r) if r.retry_after.is_none() => (format!("{} without Retry-After", r.label()), false),
                    Ok(r) => (r.label(), false),
                    Err(_) => ("no-answer".into(), false),
                };
                *outage_answers.entry(label).or_default() += 1;
                if !good {
                    bad_outage_answers += 1;
                }
            }
        }
        let first_success_after_start = ops
            .iter()
            .flat_map(|op| op.outcome.answers())
            .filter(|(at, r)| *at >= pg_up_at && r.is_success())
            .map(|(at, _)| at - restarting_at)
            .min();

        let report = Auditor::replay_and_audit(&client, &db.url, &ops, KEY_ANSWERABLE_WITHIN).await;
        let mut figures = report.figures();
        figures["seed"] = json!(seed);
        figures["outage_ms"] = json!(ms(pg_up_at - stopped_at));
        figures["ready_during_outage"] = json!(ready_during_outage);
        figures["outage_answers"] = json!(outage_answers);
        figures["recovery_ms"] = json!([recovered.then(|| ms(ready_again_after))]);
        figures["first_2xx_after_postgres_start_ms"] = json!(first_success_after_start.map(ms));
        figures["service_restarted"] = json!(!still_the_same_process);
        figures["elapsed_ms"] = json!(ms(started.elapsed()));

        let mut violations = report.violations();
        if !warmed_up {
            violations.push(format!("fewer than {PROGRESS} operations answered before the stop"));
        }
        if ready_during_outage.keys().any(|k| k != "503") || ready_during_outage.is_empty() {
            violations.push(format!("/ready during the outage: {ready_during_outage:?}, expected 503 only"));
        }
        if bad_outage_answers > 0 {
            violations.push(format!(
                "{bad_outage_answers} answer(s) during the outage other than 503/504 (or 409 in progress) with Retry-After: {outage_answers:?}"
            ));
        }
        if !recovered {
            violations.push(format!("/ready not 200 within {RECOVERY_WITHIN:?} of Postgres' start"));
        }
        if !still_the_same_process {
            violations.push("the service process did not survive the outage".into());
        }
        if !flowing_again {
            violations.push(format!("fewer than {PROGRESS} operations answered after the recovery"));
        }
        conclude("postgres_stopped_for_ten_seconds_under_load_answers_503_then_recovers", figures, violations, format!("seed {seed}: {}", audit_context(&report, &svc)));
    })
    .await;
}
