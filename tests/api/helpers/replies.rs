//! Reading the app's replies: the status and JSON body, and problem documents checked against the contract.

use serde_json::Value;

/// The status and JSON body of a reply.
pub async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, body)
}

/// Asserts an `application/problem+json` reply with this status and `code`; returns its body.
pub async fn expect_problem(res: reqwest::Response, status: u16, code: &str) -> Value {
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (got, body) = json_of(res).await;
    assert_eq!((got, body["code"].as_str()), (status, Some(code)), "reply: {body}");
    assert_eq!(content_type, "application/problem+json", "reply: {body}");
    assert_eq!(body["status"], status, "reply: {body}");
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}
