//! The dependencies' circuit breakers and what an outage costs clients (issue 15), each against the real
//! binary (`helpers::service`) so that its `/metrics` are its own, and private servers that the test may stop
//! (`helpers::cluster` for Postgres, `helpers::redis` for Redis), never the shared ones; RabbitMQ is refused to the
//! service on a vhost of the test's own (`helpers::amqp`).
//!
//! | test | what |
//! |---|---|
//! | [`postgres_breaker`] | Postgres stopped: fast 503s with `Retry-After` and nothing applied, `/ready` 503, then the breaker closes by itself |
//! | [`redis_outage`] | Redis killed under traffic: no failed request, the cache bypassed and counted, used again once Redis returns |
//! | [`rabbitmq_outage`] | RabbitMQ refusing the service: debits still 201, both RabbitMQ breakers open, `/ready` 503; back: breakers closed, outbox drained, bookings consumed |
//! | [`redis_cluster`] | `REDIS_URL` listing a three-node Redis Cluster: entries spread over the nodes, reads served |

mod postgres_breaker;
mod rabbitmq_outage;
mod redis_cluster;
mod redis_outage;

use uuid::Uuid;

/// The body of the process' `/metrics`.
pub async fn metrics(base_url: &str) -> String {
    reqwest::get(format!("{base_url}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// The value of one series (`name{labels}` exactly as exposed), or `None` when it is not exposed (yet).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `sample`, absent read as 0 (a counter not incremented yet).
pub fn count(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or(0.0)
}

/// The breaker state gauge's series of a dependency.
pub fn breaker_series(dependency: &str) -> String {
    format!("wallet_dependency_breaker_state{{dependency=\"{dependency}\"}}")
}

/// `POST /wallets/{wallet}/transactions`: a debit of `amount` under `key`, as the service caller.
pub async fn debit(
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    wallet: Uuid,
    amount: &str,
    key: &str,
) -> reqwest::Response {
    http.post(format!("{base_url}/wallets/{wallet}/transactions"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&serde_json::json!({"amount": amount, "type": "DEBIT"}))
        .send()
        .await
        .expect("request")
}
