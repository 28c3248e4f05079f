//! HTTP: warp filters that extract what a request carries, thin handlers that call the ledger, and
//! problem+json for every error.
//!
//! Every route's filter chain ends in a handler that *always* produces a response (errors rendered by
//! [`problem::ApiError`]), and every extracting filter is infallible (headers that are not text reach the
//! handler, which refuses them as problems), so a request that matches no route falls through to
//! [`unmatched`]: 405 with `Allow` for a path that exists with other methods, 404 otherwise. That fallback
//! is infallible, so no rejection ever reaches warp's default rendering (which showed a rejection's
//! `Debug` text); there is no `recover` left to get wrong.

pub mod audit;
pub mod batch;
pub mod budgets;
pub mod dashboard;
pub mod docs;
pub mod handlers;
pub mod holds;
pub mod idempotency;
pub mod openapi;
pub mod problem;
pub mod reports;
mod state;

pub use state::Ctx;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::HeaderValue;
use http::Method;
use uuid::Uuid;
use warp::reply::Response;
use warp::{Filter, Rejection as WarpRejection};

use problem::ApiError;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A body read up to [`MAX_BODY_BYTES`], or the reason it was not.
pub enum Body {
    Ok(Bytes),
    TooLarge,
    Broken,
}

/// Reads the body with a hard cap of [`MAX_BODY_BYTES`], whether or not the client sent Content-Length.
fn body() -> impl Filter<Extract = (Body,), Error = WarpRejection> + Clone {
    body_up_to(MAX_BODY_BYTES)
}

/// Reads the body with a hard cap of `limit` bytes (a route of its own may have its own limit).
fn body_up_to(limit: usize) -> impl Filter<Extract = (Body,), Error = WarpRejection> + Clone {
    raw_header("content-length")
        .map(|v: Option<HeaderValue>| v.and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok()))
        .and(warp::body::stream())
        .then(move |declared, stream| collect_body(limit, declared, stream))
}

async fn collect_body<S, B>(limit: usize, declared: Option<u64>, stream: S) -> Body
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    if declared.is_some_and(|n| n > limit as u64) {
        return Body::TooLarge;
    }
    let mut stream = std::pin::pin!(stream);
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let Ok(mut chunk) = chunk else { return Body::Broken };
        while chunk.has_remaining() {
            let part = chunk.chunk();
            if buf.len() + part.len() > limit {
                return Body::TooLarge;
            }
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Body::Ok(buf.freeze())
}

fn with_ctx(ctx: Arc<Ctx>) -> impl Filter<Extract = (Arc<Ctx>,), Error = Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

/// A request header as sent, absent or not, text or not: never a rejection. (`warp::header::optional`
/// rejects a value that is not visible ASCII, which surfaced as a 405 or a 400 with `Debug` text.)
pub type RawHeader = Option<HeaderValue>;

fn raw_header(name: &'static str) -> impl Filter<Extract = (RawHeader,), Error = Infallible> + Clone {
    warp::header::value(name).map(Some).or(warp::any().map(|| None)).unify()
}

fn auth_header() -> impl Filter<Extract = (RawHeader,), Error = Infallible> + Clone {
    raw_header("authorization")
}

fn idem_header() -> impl Filter<Extract = (RawHeader,), Error = Infallible> + Clone {
    raw_header("idempotency-key")
}

fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// Turns a handler's result into a response.
fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(ApiError::into_response)
}

/// What [`reply`] answers with: the handler's future, boxed, mapped to its response.
type Reply<F> = futures_util::future::Map<std::pin::Pin<Box<F>>, fn(Result<Response, ApiError>) -> Response>;

/// A handler's future, boxed, answering with its response. Boxed because warp keeps a route chain's
/// pending request in one `EitherFuture` as large as its largest handler's future, and moves it whole on
/// every request (into each `.boxed()` layer): with callgrind, those moves were about 1,100 instructions
/// of `memcpy` per request on every route, where a box of the handler's own future is one allocation. The
/// handler's future goes into the box as it is (an `async` block around it would move it twice more,
/// which for a posting's large future cost more than the box saved).
fn reply<F>(handler: F) -> Reply<F>
where
    F: std::future::Future<Output = Result<Response, ApiError>> + Send + 'static,
{
    futures_util::FutureExt::map(Box::pin(handler), respond as fn(_) -> _)
}

/// Where `GET /metrics` is answered (`METRICS_PORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAt {
    /// On the API port, beside the API (no `METRICS_PORT`).
    ApiPort,
    /// On a port of its own ([`metrics_routes`]); the API port answers 404 for `/metrics`, whatever the
    /// method, so a route exposed to the world cannot leak them.
    OwnPort,
}

/// All routes of the API port.
pub fn routes(
    ctx: Arc<Ctx>,
    metrics_at: MetricsAt,
) -> impl Filter<Extract = (impl warp::Reply,), Error = WarpRejection> + Clone {
    let c = || with_ctx(ctx.clone());

    let health = warp::path!("health").and(warp::get()).map(handlers::health);
    let ready = warp::path!("ready").and(warp::get()).and(c()).then(handlers::ready);
    let metrics = match metrics_at {
        MetricsAt::ApiPort => warp::path!("metrics")
            .and(warp::get())
            .and(c())
            .map(handlers::metrics)
            .boxed(),
        MetricsAt::OwnPort => warp::path!("metrics")
            .map(|| ApiError::not_found("route").into_response())
            .boxed(),
    };
    let openapi = warp::path!("openapi.json").and(warp::get()).map(openapi::serve);
    let docs_page = warp::path!("docs").and(warp::get()).map(docs::page);
    let docs_asset = warp::path!("docs" / String)
        .and(warp::get())
        .map(|name: String| docs::asset(&name));
    let dashboard_page = warp::path!("dashboard").and(warp::get()).map(dashboard::page);
    let dashboard_asset = warp::path!("dashboard" / String)
        .and(warp::get())
        .map(|name: String| dashboard::asset(&name));
    let problems = warp::path!("problems").and(warp::get()).map(docs::problems);
    let problem = warp::path!("problems" / String)
        .and(warp::get())
        .map(|slug: String| docs::problem(&slug));

    let put_user = warp::path!("users" / Uuid)
        .and(warp::put())
        .and(c())
        .and(auth_header())
        .and(body())
        .then(|id, ctx, auth, body| reply(handlers::put_user(ctx, auth, id, body)));
    let create_wallet = warp::path!("wallets")
        .and(warp::post())
        .and(c())
        .and(auth_header())
        .and(idem_header())
        .and(body())
        .then(|ctx, auth, key, body| reply(handlers::create_wallet(ctx, auth, key, body)));
    let get_wallet = warp::path!("wallets" / Uuid)
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .then(|id, ctx, auth| reply(handlers::get_wallet(ctx, auth, id)));
    let set_status = warp::path!("wallets" / Uuid / "status")
        .and(warp::put())
        .and(c())
        .and(auth_header())
        .and(body())
        .then(|id, ctx, auth, body| reply(handlers::set_status(ctx, auth, id, body)));
    let history = warp::path!("wallets" / Uuid / "transactions")
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .and(raw_query())
        .then(|id, ctx, auth, q| reply(handlers::history(ctx, auth, id, q)));
    let post_txn = warp::path!("wallets" / Uuid / "transactions")
        .and(warp::post())
        .and(c())
        .and(auth_header())
        .and(idem_header())
        .and(body())
        .then(|id, ctx, auth, key, body| reply(handlers::post_transaction(ctx, auth, id, key, body)));
    let transfer = warp::path!("transfers")
        .and(warp::post())
        .and(c())
        .and(auth_header())
        .and(idem_header())
        .and(body())
        .then(|ctx, auth, key, body| reply(handlers::transfer(ctx, auth, key, body)));
    let post_batch = warp::path!("transactions" / "batch")
        .and(warp::post())
        .and(c())
        .and(auth_header())
        .and(idem_header())
        .and(body_up_to(batch::MAX_BATCH_BODY_BYTES))
        .then(|ctx, auth, key, body| reply(batch::post_batch(ctx, auth, key, body)));

    let balance_at = warp::path!("wallets" / Uuid / "balance")
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .and(raw_header("accept"))
        .and(raw_query())
        .then(|id, ctx, auth, accept, q| reply(reports::balance_at(ctx, auth, accept, id, q)));
    let place_hold = warp::path!("wallets" / Uuid / "holds")
        .and(warp::post())
        .and(c())
        .and(auth_header())
        .and(idem_header())
        .and(body())
        .then(|id, ctx, auth, key, body| reply(holds::place(ctx, auth, id, key, body)));
    let list_holds = warp::path!("wallets" / Uuid / "holds")
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .and(raw_query())
        .then(|id, ctx, auth, q| reply(holds::list(ctx, auth, id, q)));
    let get_hold = warp::path!("holds" / Uuid)
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .then(|id, ctx, auth| reply(holds::get(ctx, auth, id)));
    let capture_hold = warp::path!("holds" / Uuid / "capture")
        .and(warp::post())
        .and(c())
        .and(auth_header())
        .and(idem_header())
        .and(body())
        .then(|id, ctx, auth, key, body| reply(holds::capture(ctx, auth, id, key, body)));
    let void_hold = warp::path!("holds" / Uuid / "void")
        .and(warp::post())
        .and(c())
        .and(auth_header())
        .then(|id, ctx, auth| reply(holds::void(ctx, auth, id)));
    let budget_report = warp::path!("reports" / "budgets")
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .and(raw_header("accept"))
        .and(raw_query())
        .then(|ctx, auth, accept, q| reply(reports::budgets(ctx, auth, accept, q)));
    let spend_report = warp::path!("reports" / "spend")
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .and(raw_header("accept"))
        .and(raw_query())
        .then(|ctx, auth, accept, q| reply(reports::spend(ctx, auth, accept, q)));
    let latest_report = warp::path!("reports" / "transactions")
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .and(raw_header("accept"))
        .and(raw_query())
        .then(|ctx, auth, accept, q| reply(reports::latest_transactions(ctx, auth, accept, q)));
    let wallet_report = warp::path!("reports" / "wallets")
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .and(raw_header("accept"))
        .and(raw_query())
        .then(|ctx, auth, accept, q| reply(reports::wallets(ctx, auth, accept, q)));
    let report_routes = budget_report
        .or(spend_report)
        .unify()
        .or(latest_report)
        .unify()
        .or(wallet_report)
        .unify()
        .boxed();
    let hold_routes = report_routes
        .or(balance_at)
        .unify()
        .or(place_hold)
        .unify()
        .or(list_holds)
        .unify()
        .or(get_hold)
        .unify()
        .or(capture_hold)
        .unify()
        .or(void_hold)
        .unify()
        .boxed();

    let list_budgets = warp::path!("budgets" / Uuid)
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .then(|id, ctx, auth| reply(budgets::list(ctx, auth, id)));
    let create_budget = warp::path!("budgets")
        .and(warp::post())
        .and(c())
        .and(auth_header())
        .and(body())
        .then(|ctx, auth, body| reply(budgets::create(ctx, auth, body)));
    let update_budget = warp::path!("budgets" / Uuid)
        .and(warp::put())
        .and(c())
        .and(auth_header())
        .and(body())
        .then(|id, ctx, auth, body| reply(budgets::update(ctx, auth, id, body)));
    let budget_history = warp::path!("budgets" / Uuid / "history")
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .then(|id, ctx, auth| reply(budgets::history(ctx, auth, id)));
    let budget_routes = list_budgets
        .or(create_budget)
        .unify()
        .or(update_budget)
        .unify()
        .or(budget_history)
        .unify()
        .boxed();

    let audit_verify = warp::path!("admin" / "audit" / "verify")
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .and(raw_query())
        .then(|ctx, auth, q| reply(audit::verify(ctx, auth, q)))
        .boxed();

    let ops = health
        .or(ready)
        .unify()
        .or(metrics)
        .unify()
        .or(openapi)
        .unify()
        .or(docs_page)
        .unify()
        .or(docs_asset)
        .unify()
        .or(dashboard_page)
        .unify()
        .or(dashboard_asset)
        .unify()
        .or(problems)
        .unify()
        .or(problem)
        .unify()
        .boxed();
    let wallets = create_wallet
        .or(get_wallet)
        .unify()
        .or(set_status)
        .unify()
        .or(history)
        .unify()
        .or(post_txn)
        .unify()
        .boxed();
    let metrics_ctx = ctx.clone();
    ops.or(put_user)
        .unify()
        .or(wallets)
        .unify()
        .or(transfer)
        .unify()
        .or(post_batch)
        .unify()
        .or(budget_routes)
        .unify()
        .or(hold_routes)
        .unify()
        .or(audit_verify)
        .unify()
        .or(warp::path::full().and(warp::method()).map(unmatched))
        .unify()
        .map(move |res| problem::with_breaker_wait(res, || ctx.service.database_retry_in()))
        .with(warp::log::custom(move |info| metrics_ctx.observe(info)))
        .boxed()
}

/// The routes of the metrics port (`METRICS_PORT`): `GET /metrics`, and 404 for anything else (405 with
/// `Allow` for another method on `/metrics`).
pub fn metrics_routes(ctx: Arc<Ctx>) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_ctx(ctx))
        .map(handlers::metrics);
    let other = warp::path::full().map(|path: warp::path::FullPath| {
        if path.as_str() == "/metrics" {
            let mut res = ApiError::method_not_allowed().into_response();
            res.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static("GET"));
            res
        } else {
            ApiError::not_found("route").into_response()
        }
    });
    metrics.or(other).unify()
}

/// A path template the service serves: its metrics label (ids as `{id}`) and its methods (`Allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    pub label: &'static str,
    pub allow: &'static str,
}

/// The route a path belongs to, or `None` for a path no route serves. A bounded set of labels (a scan of
/// random URLs cannot grow the metrics) and static strings (no allocation per request).
pub fn route_of(path: &str) -> Option<RouteInfo> {
    let mut segs = path.trim_start_matches('/').split('/');
    let mut next = || segs.next().filter(|s| !s.is_empty());
    let id = |s: Option<&str>| s.is_some_and(|s| Uuid::parse_str(s).is_ok());
    let r = |label, allow| Some(RouteInfo { label, allow });
    match (next(), next(), next(), next()) {
        (Some("health"), None, _, _) => r("/health", "GET"),
        (Some("ready"), None, _, _) => r("/ready", "GET"),
        (Some("metrics"), None, _, _) => r("/metrics", "GET"),
        (Some("openapi.json"), None, _, _) => r("/openapi.json", "GET"),
        (Some("docs"), None, _, _) => r("/docs", "GET"),
        (Some("docs"), Some(_), None, _) => r("/docs/{asset}", "GET"),
        (Some("dashboard"), None, _, _) => r("/dashboard", "GET"),
        (Some("dashboard"), Some(_), None, _) => r("/dashboard/{asset}", "GET"),
        (Some("problems"), None, _, _) => r("/problems", "GET"),
        (Some("problems"), Some(_), None, _) => r("/problems/{slug}", "GET"),
        (Some("transfers"), None, _, _) => r("/transfers", "POST"),
        (Some("transactions"), Some("batch"), None, _) => r("/transactions/batch", "POST"),
        (Some("admin"), Some("audit"), Some("verify"), None) => r("/admin/audit/verify", "GET"),
        (Some("wallets"), None, _, _) => r("/wallets", "POST"),
        (Some("budgets"), None, _, _) => r("/budgets", "POST"),
        (Some("reports"), Some("budgets"), None, _) => r("/reports/budgets", "GET"),
        (Some("reports"), Some("spend"), None, _) => r("/reports/spend", "GET"),
        (Some("reports"), Some("transactions"), None, _) => r("/reports/transactions", "GET"),
        (Some("reports"), Some("wallets"), None, _) => r("/reports/wallets", "GET"),
        (Some("users"), u, None, _) if id(u) => r("/users/{id}", "PUT"),
        (Some("wallets"), w, None, _) if id(w) => r("/wallets/{id}", "GET"),
        (Some("wallets"), w, Some("status"), None) if id(w) => r("/wallets/{id}/status", "PUT"),
        (Some("wallets"), w, Some("transactions"), None) if id(w) => r("/wallets/{id}/transactions", "GET, POST"),
        (Some("wallets"), w, Some("holds"), None) if id(w) => r("/wallets/{id}/holds", "GET, POST"),
        (Some("wallets"), w, Some("balance"), None) if id(w) => r("/wallets/{id}/balance", "GET"),
        (Some("holds"), h, None, _) if id(h) => r("/holds/{id}", "GET"),
        (Some("holds"), h, Some("capture"), None) if id(h) => r("/holds/{id}/capture", "POST"),
        (Some("holds"), h, Some("void"), None) if id(h) => r("/holds/{id}/void", "POST"),
        (Some("budgets"), b, None, _) if id(b) => r("/budgets/{id}", "GET, PUT"),
        (Some("budgets"), b, Some("history"), None) if id(b) => r("/budgets/{id}/history", "GET"),
        _ => None,
    }
}

/// A request no route took: 405 with `Allow` when the path exists with other methods, 404 otherwise.
fn unmatched(path: warp::path::FullPath, _method: Method) -> Response {
    match route_of(path.as_str()) {
        Some(route) => {
            let mut res = ApiError::method_not_allowed().into_response();
            res.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static(route.allow));
            res
        }
        None => ApiError::not_found("route").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_bounded_label_and_its_methods() {
        let id = Uuid::new_v4();
        let allow = |p: &str| route_of(p).map(|r| r.allow);
        assert_eq!(allow(&format!("/wallets/{id}/transactions")), Some("GET, POST"));
        assert_eq!(allow(&format!("/budgets/{id}")), Some("GET, PUT"));
        assert_eq!(allow("/wallets"), Some("POST"));
        assert_eq!(allow("/wallets/not-an-id"), None);
        assert_eq!(allow("/problems/insufficient-funds"), Some("GET"));
        assert_eq!(allow("/dashboard"), Some("GET"));
        assert_eq!(allow("/dashboard/dashboard.js"), Some("GET"));
        assert_eq!(
            route_of("/problems/anything").map(|r| r.label),
            Some("/problems/{slug}")
        );
    }
}
