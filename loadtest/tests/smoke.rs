//! Short runs of the harness against an in-process service over a fresh database (created from
//! `TEST_DATABASE_URL` and dropped afterwards). They assert behaviour — the books balance, every 201 is a
//! row, the report files exist — never speed.

use clap::Parser;
use loadtest::{Args, run};

fn args(extra: &[&str], out: &std::path::Path) -> Args {
    let mut v = vec!["loadtest"];
    v.extend_from_slice(extra);
    v.extend_from_slice(&["--spawn", "--quiet", "--out", out.to_str().expect("utf-8 temp path")]);
    Args::try_parse_from(v).expect("arguments parse")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_http_debits_run_balances_its_books_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let a = args(
        &[
            "http-debits",
            "--wallets",
            "8",
            "--rate",
            "40",
            "--duration",
            "3s",
            "--pool-size",
            "4",
            "--service-threads",
            "2",
        ],
        dir.path(),
    );
    let outcome = run(a, "loadtest http-debits (smoke test)".into())
        .await
        .expect("run completes");
    let r = &outcome.result;
    assert!(r.passed, "books: {:?}", r.engine_runs[0].books);
    let e = &r.engine_runs[0];
    assert_eq!(e.wallets, 8);
    assert_eq!(
        e.stats.sent, 120,
        "3 s at 40/s is 120 requests, sent open loop whatever the latency"
    );
    assert_eq!(e.stats.completed, e.stats.sent);
    let books = e.books.as_ref().expect("books checked");
    assert!(books.ok, "{books:?}");
    assert_eq!(books.wallets_checked, 8);
    assert_eq!(
        books.acked_201, e.stats.ok,
        "every 201 was checked against the database"
    );
    assert_eq!(books.rows_in_db, books.acked_201 + books.rows_from_unknown_outcomes);
    assert!(e.stats.ok > 0, "some debits succeeded: {:?}", e.stats.outcomes);
    assert!(e.stats.latency.p50_ms > 0.0 && e.stats.latency.max_ms >= e.stats.latency.p99_ms);
    assert!(!e.stats.timeline.is_empty());

    // The engine's metrics are exported: group-commit batch sizes and commit latency.
    let metrics = &r.service.as_ref().expect("service info").metrics;
    assert!(
        metrics.iter().any(|l| l.starts_with("wallet_group_commit_batch_size")),
        "{metrics:?}"
    );
    assert!(
        metrics.iter().any(|l| l.starts_with("wallet_commit_duration_seconds")),
        "{metrics:?}"
    );

    assert!(outcome.result_json.exists() && outcome.report_html.exists());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&outcome.result_json).unwrap()).unwrap();
    assert_eq!(json["scenario"], "http-debits");
    assert_eq!(json["passed"], true);
    assert!(json["engine_runs"][0]["stats"]["latency"]["p99_ms"].is_number());
    let html = std::fs::read_to_string(&outcome.report_html).unwrap();
    assert!(html.contains("<svg") && html.contains("Latency over time") && html.contains("balanced"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_run_with_credits_and_reads_balances_its_books() {
    let dir = tempfile::tempdir().unwrap();
    let a = args(
        &[
            "mixed",
            "--wallets",
            "4",
            "--closed",
            "--concurrency",
            "4",
            "--duration",
            "2s",
            "--mix",
            "5,3,2",
            "--idempotency-keys",
            "--initial-balance",
            "1.00",
            "--pool-size",
            "4",
        ],
        dir.path(),
    );
    let outcome = run(a, "loadtest mixed (smoke test)".into())
        .await
        .expect("run completes");
    let e = &outcome.result.engine_runs[0];
    let books = e.books.as_ref().expect("books checked");
    assert!(books.ok, "{books:?}");
    assert!(outcome.result.passed);
    assert!(e.stats.by_kind.contains_key("read") && e.stats.by_kind.contains_key("credit"));
    // Tiny balances: some debits are refused, individually, and the books still balance.
    assert!(
        e.stats.outcomes.keys().all(|k| k == "422 INSUFFICIENT_FUNDS"),
        "only refusals for funds expected: {:?}",
        e.stats.outcomes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pgbench_baseline_writes_balanced_rows() {
    if std::process::Command::new("pgbench").arg("--version").output().is_err() {
        eprintln!("pgbench is not installed: skipping the baseline smoke run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = args(
        &[
            "pgbench-baseline",
            "--wallets",
            "10",
            "--duration",
            "1s",
            "--pgbench-clients",
            "2",
        ],
        dir.path(),
    );
    let outcome = run(a, "loadtest pgbench-baseline (smoke test)".into())
        .await
        .expect("run completes");
    let runs = &outcome.result.pgbench_runs;
    assert_eq!(runs.len(), 2, "spread and hot");
    for p in runs {
        assert!(p.books.ok, "{}: {:?}", p.name, p.books);
        assert!(p.transactions > 0);
        assert_eq!(p.books.rows_in_db, p.transactions - p.failed);
    }
    assert_eq!(runs[1].wallets, 1);
    assert!(outcome.report_html.exists());
}

/// A short `amqp-bookings` run (and its broker baseline) at 20/s for 2 s, with `more` arguments: every
/// booking comes back as `TransactionCompleted`, the books balance, and the baseline's every message too.
async fn short_bookings_run(more: &[&str]) {
    // Needs RabbitMQ (scripts/test.sh starts it; TEST_AMQP_URL points elsewhere).
    let dir = tempfile::tempdir().unwrap();
    let mut argv = vec![
        "amqp-bookings",
        "--wallets",
        "4",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--pool-size",
        "4",
    ];
    argv.extend(more);
    let a = args(&argv, dir.path());
    let outcome = run(a, "loadtest amqp-bookings (smoke test)".into())
        .await
        .expect("run completes");
    let e = &outcome.result.engine_runs[0];
    assert_eq!(e.stats.sent, 40);
    assert_eq!(
        e.stats.ok, 40,
        "every booking came back as TransactionCompleted: {:?}",
        e.stats.outcomes
    );
    let books = e.books.as_ref().expect("books checked");
    assert!(books.ok, "{books:?}");
    assert_eq!(books.rows_in_db, 40);
    assert_eq!(books.acked_201, 40);
    // The broker's own round trip follows at the same rate, so the bookings' latency has its reference.
    let base = &outcome.result.engine_runs[1];
    assert_eq!(base.name, "broker-baseline");
    assert_eq!(base.mode, "open loop 20/s");
    assert_eq!((base.stats.sent, base.stats.ok), (40, 40), "{:?}", base.stats.outcomes);
    assert!(outcome.report_html.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_amqp_bookings_run_gets_every_booking_back_as_an_event_and_the_broker_alone_runs_at_its_rate() {
    short_bookings_run(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_durable_tap_every_booking_and_every_baseline_reply_still_comes_back() {
    // The replies go to a quorum queue of the run's own (deleted by the broker a minute after the run).
    short_bookings_run(&["--durable-tap"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_http_holds_run_captures_every_hold_it_places_and_balances_its_books() {
    let dir = tempfile::tempdir().unwrap();
    let a = args(
        &[
            "http-holds",
            "--wallets",
            "6",
            "--rate",
            "15",
            "--duration",
            "2s",
            "--idempotency-keys",
            "--pool-size",
            "4",
            "--service-threads",
            "2",
        ],
        dir.path(),
    );
    let outcome = run(a, "loadtest http-holds (smoke test)".into())
        .await
        .expect("run completes");
    let r = &outcome.result;
    assert!(r.passed, "books: {:?}", r.engine_runs);
    let [debits, holds] = &r.engine_runs[..] else {
        panic!("http-debits then http-holds: {:?}", r.engine_runs)
    };
    assert_eq!(
        (debits.name.as_str(), holds.name.as_str()),
        ("http-debits", "http-holds")
    );
    assert_eq!(
        debits.stats.sent, 60,
        "the debits run at twice the pair rate: 2 s at 30/s"
    );
    assert_eq!(holds.stats.sent, 30, "2 s at 15 pairs/s");
    assert_eq!(
        holds.stats.ok, 30,
        "every pair placed and captured: {:?}",
        holds.stats.outcomes
    );
    assert_eq!(holds.stats.by_kind["place"].ok, 30);
    assert_eq!(holds.stats.by_kind["capture"].ok, 30);
    assert!(holds.stats.by_kind["capture"].latency.p50_ms > 0.0);

    let books = holds.books.as_ref().expect("books checked");
    assert!(books.ok, "{books:?}");
    assert_eq!(
        books.acked_201, 60,
        "30 holds and 30 captures, each checked against the database"
    );
    assert_eq!(
        books.rows_in_db,
        debits.stats.ok + 30,
        "the debits' rows and one DEBIT row per capture"
    );
    let cmp = r.holds.as_ref().expect("the comparison with http-debits");
    let counts = cmp.books.as_ref().expect("hold counts");
    assert_eq!(
        (counts.holds_in_db, counts.captured_holds, counts.capture_rows),
        (30, 30, 30)
    );
    assert_eq!((counts.open_holds, counts.reserved_total.as_str()), (0, "0.00"));
    assert_eq!(cmp.judged_by, "latency (p50)", "open loop compares latencies");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&outcome.result_json).unwrap()).unwrap();
    assert_eq!(json["scenario"], "http-holds");
    assert!(json["holds"]["cost_per_request_in_debits"].is_number());
    let html = std::fs::read_to_string(&outcome.report_html).unwrap();
    assert!(html.contains("Holds vs debits"));
}
