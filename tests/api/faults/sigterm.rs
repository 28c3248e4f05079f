//! Issue 10, defect 2: SIGTERM while a commit is stalled. A wallet row is held `FOR UPDATE` for 20 s, a
//! keyed debit arrives and stalls behind it, and the process gets SIGTERM 2 s later. The process must exit
//! (with 0) within its drain deadline (`SHUTDOWN_DRAIN_SECS`), and nothing may commit after it exited: the
//! books are read when it has exited and again once the lock is gone. Then the service is started again and
//! the client, which has kept retrying with the same key all along, gets its final answer: one effect.
//!
//! 20 s rather than the issue's ~15 s: before issue 10 the reply timeout is a hard-wired 15 s, and a lock
//! of the same length makes the late commit race the exit; 20 s puts it clearly after the exit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::json;

use super::{KEY_ANSWERABLE_WITHIN, audit_context, conclude, ms};
use crate::helpers::audit::{Auditor, Effect, Operation, tag};
use crate::helpers::client::RetryingClient;
use crate::helpers::database::TestDatabase;
use crate::helpers::fixtures::{Bank, service_token};
use crate::helpers::lock::RowLock;
use crate::helpers::service::{SHUTDOWN_DRAIN, ServiceConfig, ServiceProcess};
use crate::helpers::within;

const ROW_LOCK: Duration = Duration::from_secs(20);
const SIGTERM_AFTER: Duration = Duration::from_secs(2);
/// Slack on the drain deadline for the process's own exit.
const EXIT_SLACK: Duration = Duration::from_secs(2);
/// After the lock is gone, how long a commit still under way in Postgres may take to land.
const SETTLE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_stalled_commit_then_restart_and_retry_moves_money_once() {
    within(Duration::from_secs(150), "the SIGTERM test", async {
        let started = Instant::now();
        let db = TestDatabase::create().await;
        let mut svc = ServiceProcess::start("sigterm", ServiceConfig::new(&db.url)).await;
        let wallet = Bank::new(&svc.base_url()).open_wallet("1000.00").await.wallet_id;
        let auditor = Auditor::connect(&db.url).await;
        let client = Arc::new(RetryingClient::new(&svc.base_url(), &service_token()).with_budget(Duration::from_secs(90)));
        let effect = Effect::Debit {
            wallet,
            amount: Decimal::new(1000, 2),
        };
        let request = effect.request(None);
        let tagged = tag(&request.key);
        let rows = || async {
            auditor
                .count("SELECT count(*) FROM transactions WHERE description = $1", &[&tagged])
                .await
        };

        let lock = RowLock::hold(&db.url, wallet, ROW_LOCK).await;
        // The client retries with the same key through the drain, the dead process and the restart.
        let retrying = {
            let client = client.clone();
            tokio::spawn(async move { client.until_final(request).await })
        };
        tokio::time::sleep(SIGTERM_AFTER).await;
        let term_at = Instant::now();
        svc.sigterm();
        let exit = svc.wait_exit(SHUTDOWN_DRAIN + EXIT_SLACK).await;
        let exit_after = term_at.elapsed();
        if exit.is_none() {
            svc.sigkill(); // past its deadline: the rest of the test still runs, and fails below
        }
        let rows_at_exit = rows().await;
        let released = lock.released().await;
        tokio::time::sleep(SETTLE.saturating_sub(released.elapsed())).await;
        let rows_after_lock = rows().await;

        let ready_in = svc.restart().await;
        let outcome = retrying.await.expect("the retrying client");
        let ops = vec![Operation { effect, outcome }];
        let replays = Auditor::replay_mismatches(&client, &ops).await;
        let report = auditor.audit(&ops, &replays, KEY_ANSWERABLE_WITHIN).await;
        let o = &ops[0].outcome;

        let mut figures = report.figures();
        figures["lock_ms"] = json!(ms(ROW_LOCK));
        figures["exit_ms"] = json!(exit.map(|_| ms(exit_after)));
        figures["exit_status"] = json!(exit.map(|s| s.to_string()));
        figures["drain_deadline_ms"] = json!(ms(SHUTDOWN_DRAIN));
        figures["rows_at_exit"] = json!(rows_at_exit);
        figures["rows_after_lock"] = json!(rows_after_lock);
        figures["recovery_ms"] = json!([ms(ready_in)]);
        figures["answers_in_order"] = json!(
            o.attempts
                .iter()
                .map(|a| a.answer.as_ref().map(|r| r.label()).unwrap_or_else(|_| "no-answer".into()))
                .collect::<Vec<_>>()
        );
        figures["elapsed_ms"] = json!(ms(started.elapsed()));

        let mut violations = report.violations();
        match exit {
            None => violations.push(format!("still running {exit_after:?} after SIGTERM (drain deadline {SHUTDOWN_DRAIN:?})")),
            Some(s) if !s.success() => violations.push(format!("exited with {s} after SIGTERM, not 0")),
            Some(_) => {}
        }
        if rows_after_lock != rows_at_exit {
            violations.push(format!(
                "committed after the process exited: {rows_at_exit} row(s) at exit, {rows_after_lock} once the lock was gone"
            ));
        }
        conclude("sigterm_during_a_stalled_commit_then_restart_and_retry_moves_money_once", figures, violations, audit_context(&report, &svc));
    })
    .await;
}
