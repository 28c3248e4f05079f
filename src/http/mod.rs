//! HTTP: warp filters that extract what a request carries, thin handlers that call the ledger, and
//! problem+json for every error.
//!
//! Every route's filter chain ends in a handler that *always* produces a response (errors rendered by
//! [`problem::ApiError`]), so warp rejections only happen for requests that match no route; `recover`
//! turns those into 404/405 problems.

pub mod budgets;
pub mod handlers;
pub mod idempotency;
pub mod openapi;
pub mod problem;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::StatusCode;
use uuid::Uuid;
use warp::reply::Response;
use warp::{Filter, Rejection as WarpRejection};

use crate::app::Ctx;
use problem::ApiError;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A body read up to [`MAX_BODY_BYTES`], or the reason it was not.
pub enum Body {
    Ok(Bytes),
    TooLarge,
    Broken,
}

/// Reads the body with a hard cap, whether or not the client sent Content-Length.
fn body() -> impl Filter<Extract = (Body,), Error = WarpRejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .then(collect_body)
}

async fn collect_body<S, B>(declared: Option<u64>, stream: S) -> Body
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Body::TooLarge;
    }
    let mut stream = std::pin::pin!(stream);
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let Ok(mut chunk) = chunk else { return Body::Broken };
        while chunk.has_remaining() {
            let part = chunk.chunk();
            if buf.len() + part.len() > MAX_BODY_BYTES {
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

fn auth_header() -> impl Filter<Extract = (Option<String>,), Error = WarpRejection> + Clone {
    warp::header::optional::<String>("authorization")
}

fn idem_header() -> impl Filter<Extract = (Option<String>,), Error = WarpRejection> + Clone {
    warp::header::optional::<String>("idempotency-key")
}

fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// Turns a handler's result into a response.
fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(ApiError::into_response)
}

/// All routes.
pub fn routes(ctx: Arc<Ctx>) -> impl Filter<Extract = (impl warp::Reply,), Error = WarpRejection> + Clone {
    let c = || with_ctx(ctx.clone());

    let health = warp::path!("health").and(warp::get()).map(handlers::health);
    let ready = warp::path!("ready").and(warp::get()).and(c()).then(handlers::ready);
    let metrics = warp::path!("metrics").and(warp::get()).and(c()).map(handlers::metrics);
    let openapi = warp::path!("openapi.json").and(warp::get()).map(openapi::serve);
    let docs = warp::path!("docs").and(warp::get()).map(openapi::docs);

    let put_user = warp::path!("users" / Uuid)
        .and(warp::put())
        .and(c())
        .and(auth_header())
        .and(body())
        .then(|id, ctx, auth, body| async move { respond(handlers::put_user(ctx, auth, id, body).await) });
    let create_wallet = warp::path!("wallets")
        .and(warp::post())
        .and(c())
        .and(auth_header())
        .and(idem_header())
        .and(body())
        .then(|ctx, auth, key, body| async move { respond(handlers::create_wallet(ctx, auth, key, body).await) });
    let get_wallet = warp::path!("wallets" / Uuid)
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .then(|id, ctx, auth| async move { respond(handlers::get_wallet(ctx, auth, id).await) });
    let set_status = warp::path!("wallets" / Uuid / "status")
        .and(warp::put())
        .and(c())
        .and(auth_header())
        .and(body())
        .then(|id, ctx, auth, body| async move { respond(handlers::set_status(ctx, auth, id, body).await) });
    let history = warp::path!("wallets" / Uuid / "transactions")
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .and(raw_query())
        .then(|id, ctx, auth, q| async move { respond(handlers::history(ctx, auth, id, q).await) });
    let post_txn =
        warp::path!("wallets" / Uuid / "transactions")
            .and(warp::post())
            .and(c())
            .and(auth_header())
            .and(idem_header())
            .and(body())
            .then(|id, ctx, auth, key, body| async move {
                respond(handlers::post_transaction(ctx, auth, id, key, body).await)
            });
    let transfer = warp::path!("transfers")
        .and(warp::post())
        .and(c())
        .and(auth_header())
        .and(idem_header())
        .and(body())
        .then(|ctx, auth, key, body| async move { respond(handlers::transfer(ctx, auth, key, body).await) });

    let list_budgets = warp::path!("budgets" / Uuid)
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .then(|id, ctx, auth| async move { respond(budgets::list(ctx, auth, id).await) });
    let create_budget = warp::path!("budgets")
        .and(warp::post())
        .and(c())
        .and(auth_header())
        .and(body())
        .then(|ctx, auth, body| async move { respond(budgets::create(ctx, auth, body).await) });
    let update_budget = warp::path!("budgets" / Uuid)
        .and(warp::put())
        .and(c())
        .and(auth_header())
        .and(body())
        .then(|id, ctx, auth, body| async move { respond(budgets::update(ctx, auth, id, body).await) });
    let budget_history = warp::path!("budgets" / Uuid / "history")
        .and(warp::get())
        .and(c())
        .and(auth_header())
        .then(|id, ctx, auth| async move { respond(budgets::history(ctx, auth, id).await) });
    let budget_routes = list_budgets
        .or(create_budget)
        .unify()
        .or(update_budget)
        .unify()
        .or(budget_history)
        .unify()
        .boxed();

    let ops = health
        .or(ready)
        .unify()
        .or(metrics)
        .unify()
        .or(openapi)
        .unify()
        .or(docs)
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
        .or(budget_routes)
        .unify()
        .recover(unmatched)
        .unify()
        .with(warp::log::custom(move |info| metrics_ctx.observe(info)))
        .boxed()
}

/// Requests that matched no route: 404, or 405 when the path exists with another method.
async fn unmatched(r: WarpRejection) -> Result<Response, Infallible> {
    let e = if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "method not allowed on this path",
        )
    } else if r.is_not_found() {
        ApiError::not_found("route")
    } else {
        ApiError::validation("request", format!("{r:?}"))
    };
    // warp merges rejections of `or` chains, so a wrong method on a real path can surface as either; a
    // path that exists is never answered 404 by its method alone.
    Ok(e.into_response())
}
