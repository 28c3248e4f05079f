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
    paths(handlers::put_user, handlers::create_wallet, handlers::get_wallet, handlers::set_status, handlers::history,
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
