//! The process around the API: draining on shutdown, readiness when Postgres goes away, liveness, the
//! OpenAPI document, metrics, and wallet actors that stop when idle.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::eventually;
use crate::helpers::lock::RowLock;
use crate::helpers::replies::{expect_problem, json_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_when_shutdown_is_signalled_complete() {
    const REQUESTS: usize = 50;
    let mut app = spawn_app().await;
    let (_, _, wallet) = app.user_with_wallet("30.00", "USD").await;

    // Hold the wallet's row so that the first commit waits: every request then stays in flight.
    let lock = RowLock::take(&app.db.url, wallet).await;

    let url = app.url(&format!("/wallets/{wallet}/transactions"));
    let requests: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let req = app
                .http
                .post(&url)
                .bearer_auth(&app.service_token)
                .json(&json!({"amount": "1.00", "type": "DEBIT"}));
            tokio::spawn(async move {
                let res = req.send().await.map_err(|e| format!("{e:?}"))?;
                let status = res.status().as_u16();
                let body = res.text().await.map_err(|e| format!("{e:?}"))?;
                Ok::<_, String>((status, body))
            })
        })
        .collect();
    // Every request has reached the wallet's actor (queued behind the blocked commit).
    let reached = eventually(Duration::from_secs(10), || async {
        app.engine().queued_commands() == REQUESTS
    })
    .await;
    assert!(reached, "timed out waiting until all requests reached the engine");

    app.signal_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!app.is_finished(), "the app must not stop while requests are in flight");
    lock.release().await;

    let mut created = 0;
    let mut refused = 0;
    for r in requests {
        match r.await.unwrap() {
            Ok((201, _)) => created += 1,
            Ok((422, body)) if body.contains("INSUFFICIENT_FUNDS") => refused += 1,
            other => panic!("a request in flight did not complete properly: {other:?}"),
        }
    }
    assert_eq!((created, refused), (30, 20));
    // The app then stops by itself.
    app.stopped(Duration::from_secs(15)).await;
    // And the database agrees with the replies.
    assert_eq!(app.balance(wallet).await, "0.00");
    assert_eq!(
        app.count("SELECT count(*) FROM transactions WHERE wallet_id = $1", &[&wallet])
            .await,
        30 + 1,
        "the 201s and the opening balance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_unavailable_while_postgres_is_unreachable_and_200_again_after() {
    let app = spawn_app().await;
    let res = app.get("/ready").await;
    assert_eq!(res.status(), 200);
    app.db.set_connections(false).await;
    let unavailable = async {
        let res = app.get("/ready").await;
        let retry_after = res.headers().get("retry-after").is_some();
        let body = expect_problem(res, 503, "UNAVAILABLE").await;
        assert!(retry_after, "503 carries Retry-After");
        // Asked again (no pooled connection left to fail on): still 503, now from failing to connect.
        let res = app.get("/ready").await;
        expect_problem(res, 503, "UNAVAILABLE").await;
        // Liveness does not depend on the database.
        assert_eq!(app.get("/health").await.status(), 200);
        body
    };
    let outcome = tokio::time::timeout(Duration::from_secs(20), unavailable).await;
    // Restore before asserting, so that the database can be dropped whatever happened.
    app.db.set_connections(true).await;
    let body = outcome.expect("/ready answers promptly while the database is away");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        !detail.contains("postgres://"),
        "no connection string in the reply: {detail}"
    );
    // Back to 200 once Postgres is (a pooled connection that died with the outage may cost one more 503).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = app.get("/ready").await;
        if res.status() == 200 {
            break;
        }
        let body = expect_problem(res, 503, "UNAVAILABLE").await;
        assert!(
            Instant::now() < deadline,
            "not ready again after Postgres came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_openapi_and_metrics_need_no_token() {
    let app = spawn_app().await;
    let (status, body) = json_of(app.get("/health").await).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = json_of(app.get("/ready").await).await;
    assert_eq!(status, 200, "{body}");

    let (status, doc) = json_of(app.get("/openapi.json").await).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/users/{userId}", "put"),
        ("/wallets", "post"),
        ("/wallets/{userId}", "get"),
        ("/wallets/{walletId}/status", "put"),
        ("/wallets/{walletId}/transactions", "get"),
        ("/wallets/{walletId}/transactions", "post"),
        ("/transfers", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing: {:?}",
            paths.keys()
        );
    }
    let post_txn = &paths["/wallets/{walletId}/transactions"]["post"]["responses"];
    for status in ["201", "400", "401", "403", "404", "409", "413", "422"] {
        assert!(post_txn.get(status).is_some(), "POST transactions documents {status}");
    }

    // Make a request of our own so the histogram has a sample from this app.
    let (user, _, _) = app.user_with_wallet("1.00", "USD").await;
    let res = app.get_as(&app.admin_token, &format!("/wallets/{user}")).await;
    assert_eq!(res.status(), 200);
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("http_request_duration_seconds"), "{text}");
    // Routes are labelled with `{id}`, never with a wallet's or user's id.
    assert!(!text.contains(&user.to_string()), "metrics carry ids");

    // Each (method, route, status) counts every request into its own series: more reads, and a 404, move
    // them by at least as much (other tests in this process share the recorder, so never by less).
    let read_ok = [r#"method="GET""#, r#"route="/wallets/{id}""#, r#"status="200""#];
    let read_missing = [r#"method="GET""#, r#"route="/wallets/{id}""#, r#"status="404""#];
    let before = (request_count(&text, &read_ok), request_count(&text, &read_missing));
    assert!(before.0 >= 1, "{text}");
    for _ in 0..3 {
        let res = app.get_as(&app.admin_token, &format!("/wallets/{user}")).await;
        assert_eq!(res.status(), 200);
    }
    let res = app
        .get_as(&app.admin_token, &format!("/wallets/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(res.status(), 404);
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(request_count(&text, &read_ok) >= before.0 + 3, "{text}");
    assert!(request_count(&text, &read_missing) > before.1, "{text}");
}

/// The sample count of the request-latency series with these labels (0 when there is none).
fn request_count(metrics: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("http_request_duration_seconds_count{") && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_wallet_actor_stops_and_the_next_request_reloads_the_balance_from_postgres() {
    let app = TestApp::builder()
        .configure(|cfg| cfg.actor_idle_timeout = Duration::from_millis(300))
        .spawn()
        .await;
    let (user, _, wallet) = app.user_with_wallet("100.00", "USD").await;
    let res = app.post_txn(wallet, json!({"amount": "10.00", "type": "DEBIT"})).await;
    assert_eq!(res.status(), 201);
    assert!(app.engine().live_actors() >= 1);
    let stopped = eventually(Duration::from_secs(10), || async { app.engine().live_actors() == 0 }).await;
    assert!(stopped, "timed out waiting until the idle actor stopped");

    // Change the row behind the app's back: only a reload can know.
    let c = app.db.client().await;
    let n = c
        .execute(
            "UPDATE wallets SET balance = balance - 10, version = version + 1 WHERE wallet_id = $1",
            &[&wallet],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    // GET is served from the wallet cache (written through on commits and loads, 5 minutes), which cannot
    // know about a change made behind the app's back; the next command goes through a fresh actor, which
    // loads the row. Its refusal names the balance it judged on.
    let res = app.post_txn(wallet, json!({"amount": "85.00", "type": "DEBIT"})).await;
    let problem = expect_problem(res, 422, "INSUFFICIENT_FUNDS").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("balance 80.00"),
        "judged on the reloaded balance: {problem}"
    );
    assert_eq!(app.engine().live_actors(), 1, "a new actor serves the wallet");
    // The load refreshed the cache, so reads show the database's balance again.
    let (status, body) = json_of(app.get_as(&app.admin_token, &format!("/wallets/{user}")).await).await;
    assert_eq!((status, body["balance"].as_str()), (200, Some("80.00")), "{body}");
    // And it keeps working from the reloaded state.
    let (status, body) = json_of(app.post_txn(wallet, json!({"amount": "80.00", "type": "DEBIT"})).await).await;
    assert_eq!((status, body["balance_after"].as_str()), (201, Some("0.00")), "{body}");
    let res = app.post_txn(wallet, json!({"amount": "0.01", "type": "DEBIT"})).await;
    expect_problem(res, 422, "INSUFFICIENT_FUNDS").await;
    assert_eq!(app.balance(wallet).await, "0.00");
}
