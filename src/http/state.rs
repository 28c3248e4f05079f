//! What every HTTP handler shares: the authenticator, the use-case layer ([`Service`]), the per-caller
//! rate limiter, the events' readiness, and the metrics recorder. HTTP reaches money only through
//! `service`.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use uuid::Uuid;

use crate::auth::Authenticator;
use crate::events::EventsState;
use crate::service::Service;

/// The HTTP adapter's state.
pub struct Ctx {
    pub auth: Authenticator,
    pub service: Arc<Service>,
    /// Per-caller request limit (`RATE_LIMIT_PER_SECOND`), when configured.
    pub rate_limiter: Option<governor::DefaultKeyedRateLimiter<Uuid>>,
    /// The event consumer's state (readiness) and the in-process bus.
    pub events: Arc<EventsState>,
    pub metrics: PrometheusHandle,
    /// The request-latency histogram of each (method, route, status) seen, looked up once.
    pub latencies: RequestLatencies,
}

/// Most (method, route, status) histograms [`RequestLatencies`] keeps handles to. The labels are bounded by
/// construction (static method and route labels, the statuses this service answers), so this is a guard,
/// not a working limit: past it a request's histogram is found through the registry, as before.
pub const MAX_LATENCY_SERIES: usize = 1024;

/// Handles to the request-latency histograms. `metrics::histogram!` with labels builds a key (allocating the
/// status text), hashes it and searches the recorder's registry on every call: with callgrind, 2,900 of a
/// wallet read's 45,000 instructions went to recording its latency, 1,100 with a kept handle. A handle
/// found once is recorded into directly. The recorder is installed once per process and never forgets a
/// histogram (no idle timeout), so a kept handle stays the one `/metrics` renders.
#[derive(Default)]
pub struct RequestLatencies {
    handles: dashmap::DashMap<(&'static str, &'static str, u16), metrics::Histogram, foldhash::fast::RandomState>,
}

impl RequestLatencies {
    fn record(&self, method: &'static str, route: &'static str, status: http::StatusCode, seconds: f64) {
        let key = (method, route, status.as_u16());
        if let Some(h) = self.handles.get(&key) {
            h.record(seconds);
            return;
        }
        let h = metrics::histogram!(
            crate::telemetry::REQUEST_LATENCY_METRIC,
            "method" => method,
            "route" => route,
            "status" => status.as_str().to_owned(),
        );
        h.record(seconds);
        if self.handles.len() < MAX_LATENCY_SERIES {
            self.handles.insert(key, h);
        }
    }
}

/// The route a path belongs to, with ids as `{id}`: one metrics label per route, not per wallet, and a
/// bounded set of them (a path no route serves is `other`, so a scan of random URLs cannot grow the
/// metrics without bound). Static strings: no allocation per request.
fn route_label(path: &str) -> &'static str {
    crate::http::route_of(path).map_or("other", |r| r.label)
}

/// The method as a static label (anything unusual is `OTHER`).
fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl Ctx {
    /// Why the service is not ready, in words safe for a client (causes are logged): Postgres does not
    /// answer, its migration history lacks this binary's newest migration, or (with `AMQP_URL`) the
    /// consumer is not attached. A positive migration check is remembered; a negative one is repeated.
    pub async fn readiness(&self) -> Result<(), crate::service::NotReady> {
        self.service.readiness().await?;
        self.events.readiness()
    }

    pub fn render_metrics(&self) -> String {
        self.service.record_gauges();
        self.metrics.render()
    }

    pub fn observe(&self, info: warp::log::Info<'_>) {
        self.latencies.record(
            method_label(info.method()),
            route_label(info.path()),
            info.status(),
            info.elapsed().as_secs_f64(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_with_ids_replaced_and_unknown_paths_bounded() {
        let id = Uuid::new_v4();
        assert_eq!(
            route_label(&format!("/wallets/{id}/transactions")),
            "/wallets/{id}/transactions"
        );
        assert_eq!(route_label(&format!("/wallets/{id}")), "/wallets/{id}");
        assert_eq!(route_label(&format!("/budgets/{id}/history")), "/budgets/{id}/history");
        assert_eq!(route_label("/wallets"), "/wallets");
        assert_eq!(route_label("/health"), "/health");
        assert_eq!(route_label("/wallets/not-an-id"), "other");
        assert_eq!(route_label("/wp-admin/setup.php"), "other");
        assert_eq!(route_label(&format!("/wallets/{id}/transactions/extra")), "other");
        assert_eq!(method_label(&http::Method::POST), "POST");
        assert_eq!(method_label(&http::Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
