//! The API surface as outside tools and people meet it: the `/docs` reference and its same-origin assets,
//! the problem `type` pages, the machine-readable members of problems, headers that are not text, `Allow`
//! on 405, and Prometheus histograms on `/metrics`.
use chrono::{Duration, Utc};
use reqwest::header::HeaderValue;
use serde_json::json;
use uuid::Uuid;
use wallet_service::http::problem::CATALOGUE;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::replies::{expect_problem, json_of};

/// Every `src="…"` and `href="…"` of a page.
fn references(html: &str) -> Vec<String> {
    let mut out = vec![];
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            if let Some(end) = part.find('"') {
                out.push(part[..end].to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_is_a_viewer_page_whose_assets_the_service_serves_itself() {
    let app = spawn_app().await;
    let res = app.get("/docs").await;
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = res.text().await.unwrap();
    let refs = references(&html);
    assert!(
        refs.iter().any(|r| r.ends_with(".js")),
        "the page loads the viewer: {html}"
    );
    for r in &refs {
        // Same origin only: an absolute path, never a scheme or a protocol-relative URL.
        assert!(r.starts_with('/') && !r.starts_with("//"), "{r} is not same-origin");
        let res = app.get(r).await;
        assert_eq!(res.status(), 200, "{r}");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
        if r.ends_with(".js") {
            assert!(content_type.starts_with("text/javascript"), "{r}: {content_type}");
            let js = res.text().await.unwrap();
            assert!(
                js.len() > 1000 || js.contains("/openapi.json"),
                "{r} is the viewer or its start"
            );
        } else if r.ends_with(".css") {
            assert!(content_type.starts_with("text/css"), "{r}: {content_type}");
        }
    }
    let init = app.get("/docs/init.js").await;
    let init = init.text().await.unwrap();
    assert!(
        init.contains("/openapi.json") && init.contains("validatorUrl: null"),
        "{init}"
    );
    let missing = app.get("/docs/nope.js").await;
    expect_problem(missing, 404, "NOT_FOUND").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_problem_type_uri_resolves_to_its_page() {
    let app = spawn_app().await;
    let (_, doc) = json_of(app.get("/openapi.json").await).await;
    let declared: Vec<String> = doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
        .as_array()
        .expect("the Problem schema declares its codes")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let catalogue: Vec<String> = CATALOGUE.iter().map(|k| k.code.to_string()).collect();
    assert_eq!(declared, catalogue);
    for k in CATALOGUE {
        let uri = format!("/problems/{}", k.slug());
        let res = app.get(&uri).await;
        assert_eq!(res.status(), 200, "{uri}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        let page = res.text().await.unwrap();
        assert!(page.contains(k.code) && page.contains("What to do"), "{uri}: {page}");
    }
    let index = app.get("/problems").await;
    assert_eq!(index.status(), 200);
    let index = index.text().await.unwrap();
    assert!(CATALOGUE.iter().all(|k| index.contains(k.code)));
    // The `type` of a real problem is one of them.
    let res = app.get("/wallets").await;
    let problem = expect_problem(res, 405, "METHOD_NOT_ALLOWED").await;
    let res = app.get(problem["type"].as_str().unwrap()).await;
    assert_eq!(res.status(), 200);
    let res = app.get("/problems/no-such-thing").await;
    expect_problem(res, 404, "NOT_FOUND").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_their_amounts_and_ids_as_members() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("50.00", "USD").await;

    let res = app.post_txn(wallet, json!({"amount": "80.00", "type": "DEBIT"})).await;
    let p = expect_problem(res, 422, "INSUFFICIENT_FUNDS").await;
    assert_eq!(
        (p["balance"].as_str(), p["requested"].as_str()),
        (Some("50.00"), Some("80.00")),
        "{p}"
    );

    let today = Utc::now().date_naive();
    let res = app
        .http
        .post(app.url("/budgets"))
        .bearer_auth(&app.admin_token)
        .json(
            &json!({"wallet_id": wallet, "total_amount": "10.00", "period_type": "MONTHLY",
                      "start_date": today - Duration::days(1), "end_date": today + Duration::days(1)}),
        )
        .send()
        .await
        .unwrap();
    let (status, budget) = json_of(res).await;
    assert_eq!(status, 201, "{budget}");
    let res = app.post_txn(wallet, json!({"amount": "12.50", "type": "DEBIT"})).await;
    let p = expect_problem(res, 422, "BUDGET_EXCEEDED").await;
    assert_eq!(p["budget_id"], budget["budget_id"], "{p}");
    assert_eq!(p["excess"], "2.50", "{p}");

    let debit = json!({"amount": "5.00", "type": "DEBIT", "reference_id": "booking-1", "reference_type": "BOOKING"});
    let res = app.post_txn(wallet, debit.clone()).await;
    let (status, first) = json_of(res).await;
    assert_eq!(status, 201, "{first}");
    let p = expect_problem(app.post_txn(wallet, debit).await, 409, "CONFLICT").await;
    assert_eq!(p["txn_id"], first["txn_id"], "{p}");

    // A total below what is used names the budget and the used amount.
    let res = app
        .http
        .put(app.url(&format!("/budgets/{}", budget["budget_id"].as_str().unwrap())))
        .bearer_auth(&app.admin_token)
        .json(&json!({"total_amount": "1.00", "change_reason": "cut"}))
        .send()
        .await
        .unwrap();
    let p = expect_problem(res, 422, "BUDGET_EXCEEDED").await;
    assert_eq!(
        (&p["budget_id"], &p["used_amount"]),
        (&budget["budget_id"], &json!("5.00")),
        "{p}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_that_is_not_ascii_is_400_and_moves_nothing() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("10.00", "USD").await;
    for raw in [&b"caf\xc3\xa9"[..], b"\xff\xfe"] {
        let res = app
            .http
            .post(app.url(&format!("/wallets/{wallet}/transactions")))
            .bearer_auth(&app.service_token)
            .header("Idempotency-Key", HeaderValue::from_bytes(raw).unwrap())
            .json(&json!({"amount": "1.00", "type": "CREDIT"}))
            .send()
            .await
            .unwrap();
        let p = expect_problem(res, 400, "VALIDATION_FAILED").await;
        assert_eq!(p["errors"][0]["field"], "Idempotency-Key", "{p}");
        assert!(!p.to_string().contains("Rejection"), "{p}");
    }
    let res = app
        .http
        .post(app.url("/transfers"))
        .bearer_auth(&app.service_token)
        .header("Idempotency-Key", HeaderValue::from_bytes(b"k\xe9y").unwrap())
        .json(&json!({"from_wallet_id": wallet, "to_wallet_id": Uuid::new_v4(), "amount": "1.00"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "VALIDATION_FAILED").await;
    assert_eq!(app.balance(wallet).await, "10.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_405_says_which_methods_the_path_has() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();
    for (method, path, allow) in [
        (
            reqwest::Method::DELETE,
            format!("/wallets/{id}/transactions"),
            "GET, POST",
        ),
        (reqwest::Method::GET, "/wallets".to_string(), "POST"),
        (reqwest::Method::PATCH, "/transfers".to_string(), "POST"),
        (reqwest::Method::POST, "/health".to_string(), "GET"),
        (reqwest::Method::DELETE, format!("/budgets/{id}"), "GET, PUT"),
        (reqwest::Method::GET, format!("/users/{id}"), "PUT"),
        (reqwest::Method::POST, "/problems/not-found".to_string(), "GET"),
        (reqwest::Method::PUT, "/docs".to_string(), "GET"),
    ] {
        let res = app
            .http
            .request(method.clone(), app.url(&path))
            .bearer_auth(&app.admin_token)
            .header("Idempotency-Key", HeaderValue::from_bytes(b"\xe9").unwrap())
            .send()
            .await
            .unwrap();
        let got = res.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
        expect_problem(res, 405, "METHOD_NOT_ALLOWED").await;
        assert_eq!(got.as_deref(), Some(allow), "{method} {path}");
    }
}

/// The `_bucket{` lines of one metric.
fn buckets<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
    let prefix = format!("{metric}_bucket{{");
    text.lines().filter(|l| l.starts_with(&prefix)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_commit_latencies_are_prometheus_histograms() {
    let app: TestApp = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("10.00", "USD").await;
    assert_eq!(
        app.post_txn(wallet, json!({"amount": "1.00", "type": "DEBIT"}))
            .await
            .status(),
        201
    );
    let text = app.text("/metrics").await;
    for (metric, bounds) in [
        (
            wallet_service::telemetry::REQUEST_LATENCY_METRIC,
            &wallet_service::telemetry::REQUEST_LATENCY_BUCKETS[..],
        ),
        (
            wallet_service::telemetry::COMMIT_LATENCY_METRIC,
            &wallet_service::telemetry::COMMIT_LATENCY_BUCKETS[..],
        ),
    ] {
        let lines = buckets(&text, metric);
        assert!(!lines.is_empty(), "{metric} has no buckets:\n{text}");
        assert!(lines.iter().any(|l| l.contains("le=\"+Inf\"")), "{metric}: {lines:?}");
        for b in bounds {
            assert!(
                lines.iter().any(|l| l.contains(&format!("le=\"{b}\""))),
                "{metric} le={b}: {lines:?}"
            );
        }
        assert!(
            !text.lines().any(|l| l.starts_with(metric) && l.contains("quantile=")),
            "{metric} is still a summary"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_must_be_an_object_as_the_document_says() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("10.00", "USD").await;
    for metadata in [json!([1, 2]), json!("note"), json!(7), json!(true)] {
        let res = app
            .post_txn(
                wallet,
                json!({"amount": "1.00", "type": "CREDIT", "metadata": metadata}),
            )
            .await;
        let p = expect_problem(res, 400, "VALIDATION_FAILED").await;
        assert_eq!(p["errors"][0]["field"], "metadata", "{p}");
    }
    let res = app
        .post_txn(wallet, json!({"amount": "1.00", "type": "CREDIT", "metadata": null}))
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(app.balance(wallet).await, "11.00");
}
