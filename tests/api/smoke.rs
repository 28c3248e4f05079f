use serde_json::{Value, json};

use crate::helpers::app::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_is_committed_and_answered_with_201() {
    let app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let res = app.post_txn(wallet, json!({"amount": "25.50", "type": "DEBIT"})).await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["balance_after"], "74.50");
    assert_eq!(app.balance(wallet).await, "74.50");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_renders_the_openapi_document_that_holds_every_operation() {
    let app = spawn_app().await;
    let api: Value = app.get("/openapi.json").await.json().await.unwrap();
    let paths = api["paths"].as_object().unwrap();
    for path in [
        "/health",
        "/ready",
        "/metrics",
        "/budgets/{id}",
        "/budgets/{budgetId}/history",
        "/transfers",
    ] {
        assert!(paths.contains_key(path), "{path} missing from openapi.json");
    }
    let res = app.get("/docs").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = res.text().await.unwrap();
    assert!(html.contains("/docs/init.js"), "{html}");
    let init = app.text("/docs/init.js").await;
    assert!(
        init.contains("url: \"/openapi.json\""),
        "the viewer reads the document: {init}"
    );
}
