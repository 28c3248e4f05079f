//! Structured logs with `tracing`: JSON lines when `LOG_FORMAT=json` (for log shippers), text otherwise.

use tracing_subscriber::EnvFilter;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::warn;

use crate::config::LogFormat;

/// Installs the global subscriber once. `RUST_LOG` filters (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// How often histogram samples are folded into their buckets/summaries when nobody scrapes `/metrics`.
pub const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// HTTP request latency, by route, method and status: a Prometheus histogram (operators add the buckets of
/// every pod; summaries' quantiles cannot be aggregated).
pub const REQUEST_LATENCY_METRIC: &str = "http_request_duration_seconds";
/// Bucket upper bounds of [`REQUEST_LATENCY_METRIC`], in seconds: 1 ms to 10 s.
pub const REQUEST_LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// A wallet batch's commit latency (written by the wallet actor), by outcome: a histogram.
pub const COMMIT_LATENCY_METRIC: &str = "wallet_commit_duration_seconds";
/// Bucket upper bounds of [`COMMIT_LATENCY_METRIC`], in seconds: 0.5 ms to 5 s.
pub const COMMIT_LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How long one fold of the spend aggregates took (`store::spend`), by outcome: a histogram.
pub const SPEND_FOLD_METRIC: &str = "wallet_spend_fold_duration_seconds";
/// Bucket upper bounds of [`SPEND_FOLD_METRIC`], in seconds: 5 ms to its 120 s statement bound.
pub const SPEND_FOLD_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0];

/// The recorder's builder: histograms (not summaries) for the latencies above.
fn metrics_builder() -> PrometheusBuilder {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in [
        (REQUEST_LATENCY_METRIC, &REQUEST_LATENCY_BUCKETS[..]),
        (COMMIT_LATENCY_METRIC, &COMMIT_LATENCY_BUCKETS[..]),
        (SPEND_FOLD_METRIC, &SPEND_FOLD_BUCKETS[..]),
    ] {
        // Only an empty bucket list is refused, and these are non-empty constants: the fallback (plain
        // summaries) is never taken.
        builder = builder
            .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full(name.into()), buckets)
            .unwrap_or_else(|e| {
                warn!(metric = name, error = %e, "histogram buckets refused; latencies stay summaries");
                PrometheusBuilder::new()
            });
    }
    builder
}

pub fn metrics_handle() -> PrometheusHandle {
    // One recorder per process (tests build many apps in one process).
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_builder().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                warn!("a metrics recorder was already installed; /metrics shows this one's view only");
            }
            // The recorder keeps every histogram sample until upkeep drains it, which a render does and
            // nothing else: unscraped, a few samples per request grew the heap ~0.4 MiB/s at 6.5k debits/s.
            // A plain thread, so the upkeep does not depend on any one runtime (tests run many).
            let upkeep = handle.clone();
            let started = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = started {
                warn!(error = %e, "cannot start the metrics upkeep thread; histograms drain only when scraped");
            }
            handle
        })
        .clone()
}
