//! The run's own users and wallets, created through the HTTP API (as a client would) or, for very large
//! runs, inserted in bulk with SQL; and reading the books back afterwards.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use indicatif::ProgressBar;
use serde::Deserialize;
use uuid::Uuid;

use crate::books::{DbTxn, DbWallet};
use crate::target::connect;

/// Wallets set up for one run.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub users: Vec<Uuid>,
    pub wallets: Vec<Uuid>,
    pub initial_cents: i64,
    pub via: &'static str,
    pub seconds: f64,
}

/// Rows per statement of the SQL set-up and the books read-back.
pub const SQL_CHUNK: usize = 50_000;

#[derive(Deserialize)]
struct WalletReply {
    wallet_id: Uuid,
}

/// Creates `n` users and their wallets with `PUT /users/{id}` and `POST /wallets` (admin token),
/// `concurrency` at a time.
pub async fn via_http(
    http: &reqwest::Client,
    base: &str,
    admin_token: &str,
    n: usize,
    initial_cents: i64,
    concurrency: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Fixture> {
    let t0 = Instant::now();
    let company = Uuid::new_v4();
    let auth = format!("Bearer {admin_token}");
    let initial = crate::books::cents_text(initial_cents);
    let results: Vec<anyhow::Result<(Uuid, Uuid)>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let (auth, initial) = (auth.clone(), initial.clone());
            async move {
                let user = Uuid::now_v7();
                let res = http
                    .put(format!("{base}/users/{user}"))
                    .header("authorization", &auth)
                    .json(&serde_json::json!({
                        "email": format!("loadtest-{i}-{}@loadtest.invalid", user.simple()),
                        "company_id": company,
                        "role": "user",
                    }))
                    .send()
                    .await
                    .context("PUT /users")?;
                if !res.status().is_success() {
                    let s = res.status();
                    bail!("PUT /users/{user}: {s} {}", res.text().await.unwrap_or_default());
                }
                let res = http
                    .post(format!("{base}/wallets"))
                    .header("authorization", &auth)
                    .json(&serde_json::json!({"user_id": user, "initial_balance": initial, "currency": "USD"}))
                    .send()
                    .await
                    .context("POST /wallets")?;
                if res.status().as_u16() != 201 {
                    let s = res.status();
                    bail!("POST /wallets for {user}: {s} {}", res.text().await.unwrap_or_default());
                }
                let w: WalletReply = res.json().await.context("POST /wallets reply")?;
                bar.inc(1);
                Ok((user, w.wallet_id))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut users = Vec::with_capacity(n);
    let mut wallets = Vec::with_capacity(n);
    for r in results {
        let (u, w) = r?;
        users.push(u);
        wallets.push(w);
    }
    Ok(Fixture {
        users,
        wallets,
        initial_cents,
        via: "http",
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Inserts `n` users and wallets directly (much faster for a million). The users' e-mails are a
/// placeholder (they are never read by the scenarios) and no `WalletCreated` events are written.
pub async fn via_sql(database_url: &str, n: usize, initial_cents: i64, bar: &ProgressBar) -> anyhow::Result<Fixture> {
    let t0 = Instant::now();
    let db = connect(database_url).await?;
    let company = Uuid::new_v4();
    let users: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let wallets: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let initial = rust_decimal::Decimal::new(initial_cents, 2);
    for (u, w) in users.chunks(SQL_CHUNK).zip(wallets.chunks(SQL_CHUNK)) {
        db.execute(
            "INSERT INTO users (user_id, email_encrypted, email_hash, company_id, role) \
             SELECT u, '\\x00'::bytea, sha256(u::text::bytea), $2, 'user' FROM unnest($1::uuid[]) AS u",
            &[&u, &company],
        )
        .await
        .context("inserting users")?;
        db.execute(
            "INSERT INTO wallets (wallet_id, user_id, balance, initial_balance, currency) \
             SELECT w, u, $3, $3, 'USD' FROM unnest($1::uuid[], $2::uuid[]) AS t(u, w)",
            &[&u, &w, &initial],
        )
        .await
        .context("inserting wallets")?;
        bar.inc(u.len() as u64);
    }
    db.batch_execute("ANALYZE users; ANALYZE wallets;").await.ok();
    Ok(Fixture {
        users,
        wallets,
        initial_cents,
        via: "sql",
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Reads the wallets' rows and all their transaction rows, amounts in cents.
pub async fn read_books(database_url: &str, wallets: &[Uuid]) -> anyhow::Result<(Vec<DbWallet>, Vec<DbTxn>)> {
    let db = connect(database_url).await?;
    db.batch_execute("CREATE TEMP TABLE loadtest_run_wallets (wallet_id uuid PRIMARY KEY)")
        .await?;
    for chunk in wallets.chunks(SQL_CHUNK) {
        db.execute(
            "INSERT INTO loadtest_run_wallets SELECT DISTINCT unnest($1::uuid[])",
            &[&chunk],
        )
        .await?;
    }
    db.batch_execute("ANALYZE loadtest_run_wallets").await?;
    // What a wallet opened with: its initial balance, and the opening balance that POST /wallets writes as
    // a ledger entry (reference_type OPENING), which is then no row of the run.
    let ws = db
        .query(
            "SELECT w.wallet_id, ((w.initial_balance + COALESCE((SELECT sum(t.amount) FROM transactions t \
                 WHERE t.wallet_id = w.wallet_id AND t.type = 'CREDIT' AND t.reference_type = 'OPENING'), 0)) * 100)::bigint, \
                 (w.balance * 100)::bigint \
             FROM wallets w JOIN loadtest_run_wallets r USING (wallet_id)",
            &[],
        )
        .await
        .context("reading wallets")?;
    if ws.len() != wallets.len() {
        bail!(
            "{} of the run's {} wallets are missing from the database",
            wallets.len() - ws.len(),
            wallets.len()
        );
    }
    let rows = db
        .query(
            "SELECT t.txn_id, t.wallet_id, (t.amount * 100)::bigint, t.type \
             FROM transactions t JOIN loadtest_run_wallets r USING (wallet_id) \
             WHERE t.reference_type IS DISTINCT FROM 'OPENING'",
            &[],
        )
        .await
        .context("reading transactions")?;
    Ok((
        ws.iter()
            .map(|r| DbWallet {
                wallet_id: r.get(0),
                initial_cents: r.get(1),
                balance_cents: r.get(2),
            })
            .collect(),
        rows.iter()
            .map(|r| DbTxn {
                txn_id: r.get(0),
                wallet_id: r.get(1),
                cents: r.get(2),
                kind: r.get(3),
            })
            .collect(),
    ))
}

/// Waits until `GET /health` answers (a service just started by hand may still be migrating).
pub async fn wait_healthy(http: &reqwest::Client, base: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        match http.get(format!("{base}/ready")).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if Instant::now() >= deadline => bail!("{base}/ready answers {}", r.status()),
            Err(e) if Instant::now() >= deadline => bail!("{base}/ready: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
