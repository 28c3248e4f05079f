//! `/openapi.json`: generated from the handlers' annotations (utoipa), so it cannot drift from the code,
//! then completed in one place ([`complete`]) with what every operation shares: problem responses as
//! `application/problem+json`, the 401/429/500/503 (and 413 for bodies) that any authenticated operation
//! may answer, with their headers, the bearer security scheme, the `Idempotency-Key` rules and the
//! `Problem` schema with every `code` of [`CATALOGUE`]. The result passes `openapi-spec-validator`, and
//! schemathesis checks the live service against it (`scripts/api-conformance.sh`).

use std::sync::OnceLock;

use bytes::Bytes;
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Map, Value, json};
use utoipa::openapi::{security::Http, security::HttpAuthScheme, security::SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use warp::reply::Response;

use super::handlers;
use super::idempotency::MAX_KEY_LEN;
use super::problem::{CATALOGUE, FieldError, PROBLEM_JSON, Problem};
use crate::auth::AuthReason;
use crate::views::{HistoryItem, HistoryPage, Pagination, TransactionView, TransferView, UserView, WalletView};

pub use crate::schema::*;

/// `{"status": …}` of `/health` and `/ready`.
#[derive(ToSchema)]
pub struct StatusReply {
    #[schema(example = "ok")]
    pub status: String,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        scheme.description = Some(
            "A JWT from the identity provider with `sub` (user UUID), `role` (user, manager, admin, service), \
             `company_id`, `exp`, `iss`, `aud` (and `nbf` when present), signed with the one algorithm the \
             service pins."
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Wallet & Budget Service", description = "Wallets, transactions, transfers and budgets for corporate travel.\n\n\
        Every endpoint but `/health`, `/ready`, `/metrics`, the documentation (`/openapi.json`, `/docs`, `/problems`) \
        and the `/dashboard` page (whose script asks for a token and calls the reports with it) needs `Authorization: Bearer <JWT>`. Amounts are decimal strings in every reply; requests accept a decimal \
        string or a JSON number, read exactly. Errors are `application/problem+json` (RFC 9457) with a stable `code`; \
        each problem's `type` URI (`/problems/{slug}`) documents it. Money-moving POSTs take an `Idempotency-Key`. \
        With `METRICS_PORT` set, `/metrics` is served only on that port and answers 404 here."),
    paths(handlers::health, handlers::ready, handlers::metrics, serve_doc, docs_doc, problems_doc, problem_doc, dashboard_doc,
          handlers::put_user, handlers::create_wallet, handlers::get_wallet, handlers::set_status, handlers::history,
          handlers::post_transaction, handlers::transfer, super::batch::post_batch, super::budgets::list, super::budgets::create,
          super::budgets::update, super::budgets::history, super::holds::place, super::holds::capture,
          super::holds::void, super::holds::get, super::holds::list, super::reports::balance_at, super::reports::budgets, super::reports::spend::spend, super::reports::spend::latest_transactions, super::reports::spend::wallets, super::audit::verify),
    components(schemas(Problem, FieldError, WalletView, TransactionView, TransferView, HistoryItem, HistoryPage, Pagination, UserView,
                       handlers::UserBody, handlers::CreateWalletBody, handlers::StatusBody, handlers::PostTransactionBody,
                       handlers::PostType, handlers::TransferBody, super::batch::BatchBody, super::batch::BatchItemBody,
                       super::batch::BatchItemResult, super::batch::BatchResults, crate::views::BudgetView, crate::views::HistoryView,
                       super::budgets::CreateBudgetBody, super::budgets::UpdateBudgetBody, StatusReply,
                       PositiveAmount, NonNegativeAmount, Money, enums::Currency, enums::WalletStatus, enums::PeriodType,
                       enums::BudgetStatus, enums::BudgetStatusChange, enums::TransactionType, enums::TransactionStatus,
                       enums::Role, enums::HoldStatus, super::reports::BalanceAtView, super::reports::BudgetReportView, super::reports::BudgetReportRowView, super::reports::spend::SpendReportView, super::reports::spend::SpendRowView, super::reports::spend::SpendFigures, super::reports::spend::LatestTxnsView, super::reports::spend::LatestTxnView, super::reports::spend::WalletReportView, super::reports::spend::WalletReportRowView, crate::views::HoldView, crate::views::HoldPage,
                       super::holds::PlaceHoldBody, super::holds::CaptureBody, crate::views::AuditVerifyView,
                       crate::views::BrokenRowView)),
    tags((name = "wallets"), (name = "transactions"), (name = "budgets"), (name = "users"),
         (name = "reports", description = "Figures from the ledger, on the read pool; JSON or CSV (`Accept: text/csv`)."),
         (name = "holds", description = "Authorize, then capture or void: money reserved without moving it."),
         (name = "audit", description = "The tamper-evident ledger: per-wallet hash chains and checkpoints (admin)."),
         (name = "operations", description = "Probes and metrics; no token."),
         (name = "documentation", description = "This document, its reference page, the problem types and the managers' dashboard page; no token.")),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "documentation", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
#[allow(dead_code)]
fn serve_doc() {}

/// The API reference, rendered from this document by Swagger UI (served by the service itself).
#[utoipa::path(get, path = "/docs", tag = "documentation", operation_id = "docs",
    responses((status = 200, description = "An HTML page", content_type = "text/html", body = String)))]
#[allow(dead_code)]
fn docs_doc() {}

/// Every problem `code`: what it means, when it happens, what to do.
#[utoipa::path(get, path = "/problems", tag = "documentation", operation_id = "problems",
    responses((status = 200, description = "An HTML page", content_type = "text/html", body = String)))]
#[allow(dead_code)]
fn problems_doc() {}

/// The page behind a problem's `type` URI.
#[utoipa::path(get, path = "/problems/{slug}", tag = "documentation", operation_id = "problem",
    params(("slug" = String, Path, description = "The code in lower case with dashes (`insufficient-funds`)")),
    responses((status = 200, description = "An HTML page", content_type = "text/html", body = String),
              (status = 404, description = "NOT_FOUND: no such problem type")))]
#[allow(dead_code)]
fn problem_doc() {}

/// The managers' dashboard: a page served by the service itself. Loading it needs no token; its script
/// asks for one (kept in `sessionStorage`) and calls the `reports` operations with it.
#[utoipa::path(get, path = "/dashboard", tag = "documentation", operation_id = "dashboard",
    responses((status = 200, description = "An HTML page", content_type = "text/html", body = String)))]
#[allow(dead_code)]
fn dashboard_doc() {}

/// Operations that need no token.
const PUBLIC: [&str; 8] = [
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/problems",
    "/problems/{slug}",
    "/dashboard",
];

fn problem_content() -> Value {
    json!({ PROBLEM_JSON: { "schema": { "$ref": "#/components/schemas/Problem" } } })
}

/// The codes a status may carry, for a response that does not list its own.
fn codes_of(status: u16) -> String {
    let codes: Vec<&str> = CATALOGUE
        .iter()
        .filter(|k| k.status == status)
        .map(|k| k.code)
        .collect();
    codes.join(", ")
}

fn default_description(status: &str) -> String {
    let n: u16 = status.parse().unwrap_or(0);
    match n {
        200 => "OK".into(),
        201 => "Created".into(),
        _ => {
            let reason = StatusCode::from_u16(n)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            match codes_of(n) {
                c if c.is_empty() => reason.into(),
                c => format!("{reason}: {c}"),
            }
        }
    }
}

fn shared_components() -> Value {
    let retry_after = json!({
        "description": "Seconds to wait before retrying (a 503 while the database's circuit breaker is open: the rest of its open period, 1-15)",
        "schema": { "type": "integer", "minimum": 1 }
    });
    let reasons: Vec<&str> = AuthReason::ALL.iter().map(|r| r.as_str()).collect();
    let codes: Vec<&str> = CATALOGUE.iter().map(|k| k.code).collect();
    let money = json!({ "$ref": "#/components/schemas/Money" });
    json!({
        "schemas": {
            "PositiveAmount": {
                "description": "A positive amount: a decimal string with at most 2 decimals, or a JSON number (read \
                    exactly from its text, never through a float), at most 9999999999999.99.",
                "oneOf": [
                    { "type": "string", "pattern": POSITIVE_AMOUNT_PATTERN, "maxLength": MAX_AMOUNT_TEXT.len(),
                      "example": "25.00" },
                    { "type": "number", "exclusiveMinimum": 0, "maximum": 9_999_999_999_999.99_f64,
                      "multipleOf": 0.01 }
                ]
            },
            "NonNegativeAmount": {
                "description": "An amount of zero or more: a decimal string with at most 2 decimals, or a JSON number \
                    read exactly, at most 9999999999999.99.",
                "oneOf": [
                    { "type": "string", "pattern": AMOUNT_PATTERN, "maxLength": MAX_AMOUNT_TEXT.len(),
                      "example": "100.00" },
                    { "type": "number", "minimum": 0, "maximum": 9_999_999_999_999.99_f64, "multipleOf": 0.01 }
                ]
            },
            "Money": {
                "description": "An amount as the service writes it: a decimal string with exactly 2 decimals.",
                "type": "string", "pattern": MONEY_PATTERN, "example": "125.50"
            },
            "Problem": {
                "description": "RFC 9457 problem details with the service's stable `code`; members beyond the standard \
                    ones appear only where they apply.",
                "type": "object",
                "required": ["type", "title", "status", "detail", "code"],
                "properties": {
                    "type": { "type": "string", "format": "uri-reference",
                              "description": "`/problems/{slug}`: the page documenting the code",
                              "example": "/problems/insufficient-funds" },
                    "title": { "type": "string" },
                    "status": { "type": "integer", "minimum": 400, "maximum": 599 },
                    "detail": { "type": "string" },
                    "code": { "type": "string", "enum": codes },
                    "errors": { "type": "array", "items": { "$ref": "#/components/schemas/FieldError" },
                                "description": "VALIDATION_FAILED: each failing field" },
                    "reason": { "type": "string", "enum": reasons,
                                "description": "UNAUTHENTICATED: which check the token failed" },
                    "balance": { "allOf": [money], "description": "INSUFFICIENT_FUNDS: the available balance the request was judged against" },
                    "requested": { "allOf": [money], "description": "INSUFFICIENT_FUNDS: the amount asked for" },
                    "budget_id": { "type": "string", "format": "uuid", "description": "BUDGET_EXCEEDED: the budget" },
                    "excess": { "allOf": [money], "description": "BUDGET_EXCEEDED: by how much a debit would exceed it" },
                    "used_amount": { "allOf": [money], "description": "BUDGET_EXCEEDED: what the budget has used" },
                    "debited": { "allOf": [money], "description": "REFUND_EXCEEDS_DEBIT: the debit being refunded" },
                    "txn_id": { "type": "string", "format": "uuid",
                                "description": "CONFLICT of a repeated reference: the transaction (or hold) that took effect" },
                    "allowed": { "allOf": [money], "description": "HOLD_EXCEEDED: the most the capture could take" },
                    "hold_status": { "type": "string", "enum": ["CAPTURED", "VOIDED", "EXPIRED"],
                                     "description": "HOLD_NOT_PENDING: what became of the hold" },
                    "results": { "type": "array",
                                 "items": { "$ref": "#/components/schemas/BatchItemResult" },
                                 "description": "BATCH_REFUSED: each refused item, with the problem a single posting would have answered" }
                }
            }
        },
        "responses": {
            "Unauthenticated": {
                "description": format!("UNAUTHENTICATED: no valid bearer token; `reason` is one of {}", reasons.join(", ")),
                "headers": { "WWW-Authenticate": { "description": "The Bearer challenge",
                                                   "schema": { "type": "string" } } },
                "content": problem_content()
            },
            "RateLimited": {
                "description": "RATE_LIMITED: too many requests from this caller (when RATE_LIMIT_PER_SECOND is set)",
                "headers": { "Retry-After": retry_after.clone() },
                "content": problem_content()
            },
            "PayloadTooLarge": {
                "description": "PAYLOAD_TOO_LARGE: the body exceeds 64 KiB",
                "content": problem_content()
            },
            "Internal": {
                "description": "INTERNAL: an unexpected failure (details only in the service's log)",
                "content": problem_content()
            },
            "Unavailable": {
                "description": "UNAVAILABLE: a dependency is down or the wallet is overloaded; nothing was applied, \
                    safe to retry (with the same Idempotency-Key)",
                "headers": { "Retry-After": retry_after.clone() },
                "content": problem_content()
            },
            "OutcomeUnknown": {
                "description": "OUTCOME_UNKNOWN: the commit's outcome could not be learnt (the database connection \
                    broke during it); it may have been applied. Retry with the same Idempotency-Key (exactly once), \
                    or look the transaction up by its reference_id",
                "headers": { "Retry-After": retry_after },
                "content": problem_content()
            }
        }
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        for (k, v) in from {
            match into.get_mut(&k) {
                Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                _ => {
                    into.insert(k, v);
                }
            }
        }
    }
}

/// Completes one operation (see the module docs).
fn complete_operation(path: &str, op: &mut Map<String, Value>) {
    let public = PUBLIC.contains(&path);
    let has_body = op.contains_key("requestBody");
    let keyed = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|ps| ps.iter().any(|p| p["name"] == "Idempotency-Key"));
    let responses = op.entry("responses").or_insert_with(|| json!({}));
    let Some(responses) = responses.as_object_mut() else {
        return;
    };
    for (status, response) in responses.iter_mut() {
        let Some(r) = response.as_object_mut() else { continue };
        if r.contains_key("$ref") {
            continue;
        }
        let missing = r.get("description").and_then(Value::as_str).is_none_or(str::is_empty);
        if missing {
            r.insert("description".into(), Value::String(default_description(status)));
        }
        if status.starts_with('4') || status.starts_with('5') {
            r.insert("content".into(), problem_content());
        }
        if status == "503" || status == "409" {
            r.insert(
                "headers".into(),
                json!({ "Retry-After": { "description": "Seconds to wait before retrying (a 503 while the database's circuit breaker is open: the rest of its open period, 1-15)",
                                         "schema": { "type": "integer", "minimum": 1 } } }),
            );
        }
    }
    let reference = |name: &str| json!({ "$ref": format!("#/components/responses/{name}") });
    if !public {
        for (status, name) in [
            ("401", "Unauthenticated"),
            ("429", "RateLimited"),
            ("500", "Internal"),
            ("503", "Unavailable"),
        ] {
            responses.entry(status).or_insert_with(|| reference(name));
        }
    }
    if path.contains('{') {
        // A path whose id is not a UUID matches no route.
        responses.entry("404").or_insert_with(
            || json!({ "description": "NOT_FOUND: the path's id is not a UUID", "content": problem_content() }),
        );
    }
    if keyed {
        responses.entry("504").or_insert_with(|| reference("OutcomeUnknown"));
    }
    if has_body {
        responses.entry("413").or_insert_with(|| reference("PayloadTooLarge"));
        responses.entry("400").or_insert_with(|| {
            json!({ "description": "VALIDATION_FAILED: malformed JSON, an unknown field or a bad value",
                    "content": problem_content() })
        });
    }
    op.insert(
        "security".into(),
        if public { json!([]) } else { json!([{ "bearer": [] }]) },
    );
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params {
            if p["name"] == "Idempotency-Key" {
                p["schema"] = json!({ "type": "string", "minLength": 1, "maxLength": MAX_KEY_LEN,
                                      "pattern": IDEMPOTENCY_KEY_PATTERN });
            }
        }
    }
}

/// What every operation shares, written once (see the module docs).
pub fn complete(doc: &mut Value) {
    if let Some(components) = doc.get_mut("components") {
        merge(components, shared_components());
        // Rules across fields that the derive cannot state.
        merge(
            components,
            json!({ "schemas": {
                "PostTransactionBody": { "dependentRequired": { "reference_type": ["reference_id"] } },
                "BatchItemBody": { "dependentRequired": { "reference_type": ["reference_id"] } },
                "UpdateBudgetBody": {
                    "anyOf": [
                        { "required": ["total_amount"], "properties": { "total_amount": { "not": { "type": "null" } } } },
                        { "required": ["status"], "properties": { "status": { "not": { "type": "null" } } } }
                    ],
                    "description": "total_amount and/or status, with the reason for the change"
                }
            } }),
        );
    }
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, op) in item.iter_mut() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            if let Some(op) = op.as_object_mut() {
                complete_operation(path, op);
            }
        }
    }
}

/// The full document.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    complete(&mut doc);
    doc
}

/// `GET /openapi.json`: built once, served as the same bytes.
pub fn serve() -> Response {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    let body = BODY.get_or_init(|| Bytes::from(serde_json::to_vec(&document()).unwrap_or_default()));
    let mut res = Response::new(body.clone().into());
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_response_has_a_description_and_errors_are_problem_json() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                for (status, r) in op["responses"].as_object().expect("responses") {
                    if r.get("$ref").is_some() {
                        continue;
                    }
                    assert!(
                        r["description"].as_str().is_some_and(|d| !d.is_empty()),
                        "{method} {path} {status}"
                    );
                    if status.starts_with('4') || status.starts_with('5') {
                        assert!(r["content"].get(PROBLEM_JSON).is_some(), "{method} {path} {status}");
                        assert!(
                            r["content"].get("application/json").is_none(),
                            "{method} {path} {status}"
                        );
                    }
                }
                let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
                assert_eq!(secured, !PUBLIC.contains(&path.as_str()), "{method} {path}");
            }
        }
    }

    #[test]
    fn the_amount_patterns_say_what_the_parser_accepts() {
        let positive = regex::Regex::new(POSITIVE_AMOUNT_PATTERN).expect("pattern");
        let any = regex::Regex::new(AMOUNT_PATTERN).expect("pattern");
        let money = regex::Regex::new(MONEY_PATTERN).expect("pattern");
        for s in [
            "0",
            "0.00",
            "0.01",
            "0.1",
            "0.10",
            "0.5",
            "1",
            "12.5",
            "100.00",
            "9999999999999.99",
            "1.001",
            "10000000000000",
            "01",
            "1.",
            ".5",
            "-1",
            "1e3",
            "",
        ] {
            // The patterns are the canonical forms the parser accepts (it also takes a few more spellings,
            // such as leading zeros, which the document does not advertise).
            if positive.is_match(s) {
                assert!(wallet_actors::Amount::parse_positive(s).is_ok(), "{s}");
            }
            if any.is_match(s) {
                assert!(wallet_actors::Amount::parse(s).is_ok(), "{s}");
            }
            if let Ok(a) = wallet_actors::Amount::parse(s) {
                assert!(money.is_match(&a.to_string()), "{s} is written as {a}");
            }
        }
        for s in ["0.01", "0.1", "0.10", "1", "12.5", "9999999999999.99"] {
            assert!(positive.is_match(s), "{s}");
        }
        for s in ["0", "0.00", "0.0", "1.001", "10000000000000", "01.5"] {
            assert!(!positive.is_match(s), "{s}");
        }
        let key = regex::Regex::new(IDEMPOTENCY_KEY_PATTERN).expect("pattern");
        assert!(key.is_match("order-1") && key.is_match("a b") && !key.is_match(" a") && !key.is_match("é"));
    }
}
