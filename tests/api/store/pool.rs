//! The pool's connections: their lifetime (`store::db::CONNECTION_MAX_AGE`: a connection past its age limit
//! is closed when it is next taken, so no session, and no plan Postgres cached on it, outlives the limit) and
//! their session settings.

use std::time::Duration;

use wallet_service::store::Pool;
use wallet_service::store::db::{self, StatementBounds};

use crate::helpers::app::spawn_app;

/// A pool of one connection to `url`, the way the service builds its pools.
fn one_connection(url: &str, bounds: &StatementBounds) -> Pool {
    db::pool(url, 1, bounds, wallet_service::store::pool::PRIMARY).unwrap()
}

/// The Postgres backend behind the connection the pool hands out next.
async fn backend(pool: &Pool) -> i32 {
    let c = pool.get().await.unwrap();
    c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_reused_until_its_age_limit_and_then_replaced_by_a_new_session() {
    let app = spawn_app().await;
    let young = one_connection(&app.db.url, &StatementBounds::default());
    let first = backend(&young).await;
    for _ in 0..3 {
        assert_eq!(backend(&young).await, first, "a young connection is reused");
    }

    let bounds = StatementBounds {
        connection_max_age: Duration::from_millis(200),
        ..Default::default()
    };
    let aging = one_connection(&app.db.url, &bounds);
    let before = backend(&aging).await;
    assert_eq!(backend(&aging).await, before, "reused while younger than its limit");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let after = backend(&aging).await;
    assert_ne!(after, before, "replaced once past its limit");
    // The old session is closed, not left open beside the new one (the pool holds one connection).
    let c = app.db.client().await;
    for _ in 0..50 {
        let open: i64 = c
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&before])
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the replaced session {before} is still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_connections_run_without_jit_unless_the_database_url_turns_it_on() {
    let app = spawn_app().await;
    let jit = |pool: Pool| async move {
        let c = pool.get().await.unwrap();
        let on: String = c.query_one("SHOW jit", &[]).await.unwrap().get(0);
        on
    };
    let plain = one_connection(&app.db.url, &StatementBounds::default());
    assert_eq!(jit(plain).await, "off");
    let sep = if app.db.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}options=-c%20jit%3Don", app.db.url);
    let asked = one_connection(&url, &StatementBounds::default());
    assert_eq!(jit(asked).await, "on");
}
