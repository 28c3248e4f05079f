//! A database of its own for one test: created on a server (the shared one of `TEST_DATABASE_URL`, or a
//! private cluster), dropped when the guard goes away, even after a panic.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

/// The shared server's maintenance database (`scripts/test.sh` exports it).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The URL with its database name replaced (query parameters kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a database URL has a path");
    let query = url.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    format!("{base}/{db}{query}")
}

/// A plain connection (its driver task spawned on the current runtime).
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

pub struct TestDatabase {
    pub name: String,
    pub url: String,
    server_url: String,
}

impl TestDatabase {
    /// On the shared server of `TEST_DATABASE_URL`.
    pub async fn create() -> TestDatabase {
        TestDatabase::create_on(&admin_url()).await
    }

    /// On the server whose maintenance database is `server_url`.
    pub async fn create_on(server_url: &str) -> TestDatabase {
        let name = format!("wallet_test_{}", uuid::Uuid::new_v4().simple());
        let client = connect(server_url)
            .await
            .unwrap_or_else(|e| panic!("{server_url} must reach a Postgres server (scripts/test.sh starts one): {e}"));
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        TestDatabase {
            url: with_database(server_url, &name),
            name,
            server_url: server_url.to_string(),
        }
    }

    pub async fn client(&self) -> Client {
        connect(&self.url).await.expect("connect to the test database")
    }

    /// A wallet's balance as its row holds it.
    pub async fn balance(&self, wallet: uuid::Uuid) -> String {
        let row = self
            .client()
            .await
            .query_one("SELECT balance::text FROM wallets WHERE wallet_id = $1", &[&wallet])
            .await
            .expect("wallet row");
        row.get(0)
    }

    /// Makes the database refuse new connections and cuts the open ones (the database is "down" for the
    /// app), or lets connections in again.
    pub async fn set_connections(&self, allowed: bool) {
        let server = connect(&self.server_url).await.expect("connect to the server");
        let name = &self.name;
        server
            .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {allowed}"))
            .await
            .expect("alter database");
        if !allowed {
            server
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[name],
                )
                .await
                .expect("terminate backends");
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (name, server) = (self.name.clone(), self.server_url.clone());
        // Drop may run on a runtime's thread: do the async work on a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                let drop_it = async {
                    if let Ok(client) = connect(&server).await {
                        let _ = client
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    }
                };
                // A server that is down (a private cluster already stopped) must not hold the test up.
                let _ = tokio::time::timeout(Duration::from_secs(10), drop_it).await;
            });
        })
        .join();
    }
}
