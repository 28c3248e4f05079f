//! `/openapi.json`, generated from the handlers' annotations (utoipa), so it cannot drift from the code.

use http::StatusCode;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use warp::reply::Response;

use super::handlers;
use super::problem::{FieldError, Problem, json_response};
use crate::views::{HistoryItem, HistoryPage, Pagination, TransactionView, TransferView, UserView, WalletView};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Wallet & Budget Service", description = "Wallets, transactions and transfers for corporate travel. \
        Errors are application/problem+json with a stable `code`. Health: GET /health, GET /ready; metrics: GET /metrics."),
    paths(handlers::health, handlers::ready, handlers::metrics, handlers::put_user, handlers::create_wallet, handlers::get_wallet, handlers::set_status, handlers::history,
          handlers::post_transaction, handlers::transfer, super::budgets::list, super::budgets::create,
          super::budgets::update, super::budgets::history),
    components(schemas(Problem, FieldError, WalletView, TransactionView, TransferView, HistoryItem, HistoryPage, Pagination, UserView,
                       handlers::UserBody, handlers::CreateWalletBody, handlers::StatusBody, handlers::PostTransactionBody,
                       handlers::PostType, handlers::TransferBody, crate::budgets::BudgetView, crate::budgets::HistoryView,
                       super::budgets::CreateBudgetBody, super::budgets::UpdateBudgetBody)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub fn serve() -> Response {
    json_response(StatusCode::OK, &document())
}

/// `/docs`: a self-contained page listing every operation of the OpenAPI document (no scripts, no CDN,
/// so it works on a machine without internet), linking the full document at `/openapi.json`.
pub fn docs() -> Response {
    let api = document();
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut rows = String::new();
    for (path, item) in api.paths.paths.iter() {
        let ops = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let summary = op.summary.as_deref().or(op.description.as_deref()).unwrap_or("");
            let codes: Vec<String> = op.responses.responses.keys().cloned().collect();
            rows.push_str(&format!(
                "<tr><td><code>{method}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>\n",
                esc(path),
                esc(summary),
                esc(&codes.join(" "))
            ));
        }
    }
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;text-align:left;border-bottom:1px solid #ddd}}</style>\
         </head><body><h1>{title}</h1><p>{desc}</p><p>Full document: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1).</p>\
         <table><tr><th>method</th><th>path</th><th>summary</th><th>responses</th></tr>{rows}</table></body></html>",
        title = esc(&api.info.title),
        desc = esc(api.info.description.as_deref().unwrap_or("")),
    );
    let mut res = Response::new(html.into());
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res
}
