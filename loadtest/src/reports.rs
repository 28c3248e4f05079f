//! `reports`: the reports on a company with a long history, and what keeping their aggregates costs debits.
//!
//! 1. A company of `--company-wallets` wallets gets `--ledger-rows` ledger rows spread over the past 365
//!    days, inserted in SQL (the API can only write rows dated now) with running `balance_after`s, stamped
//!    like postings and then folded into the spend aggregates by the service's own fold (`sql/V12`); the
//!    balances are set to what the rows add up to, and the books of that company are checked (balance =
//!    initial + rows).
//! 2. `spend-report`: closed-loop clients ask for the last full month's spend by user of that company.
//! 3. `balance-at`: closed-loop clients ask for a random wallet's balance at a random instant of the year.
//! 4. The debit throughput with the aggregates on and off: `http-debits` over fresh wallets four times,
//!    on/off/off/on (see [`AggregateSwitch`]: off is a measurement-only state that leaves the aggregates short
//!    of those phases' rows), each with its books check.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{Datelike, NaiveDate, Utc};
use uuid::Uuid;

use crate::drive::PathOf;
use crate::sched::pick;
use crate::setup::Fixture;

/// Wallets filled per statement (each gets its rows in one `INSERT … SELECT`).
pub const FILL_WALLETS_PER_STATEMENT: usize = 50;
/// Days of history the filled rows spread over.
pub const HISTORY_DAYS: i64 = 365;

/// Inserts `rows` ledger rows spread over the fixture's wallets and the past [`HISTORY_DAYS`] days: 90%
/// debits, 10% credits of 1.00–100.00, each with the running balance after it; then sets each wallet's
/// balance to its last `balance_after` (and its creation to before the history). Returns the seconds it took.
pub async fn fill(db_url: &str, fixture: &Fixture, rows: u64, seed: u64) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let db = crate::target::connect(db_url).await?;
    db.batch_execute("SET statement_timeout = 0; SELECT ensure_transaction_partitions(13, 3);")
        .await
        .context("creating the history's partitions")?;
    let per_wallet = (rows / fixture.wallets.len().max(1) as u64).max(1) as i64;
    let initial = rust_decimal::Decimal::new(fixture.initial_cents, 2);
    db.execute("SELECT setseed($1)", &[&(((seed % 1000) as f64) / 1000.0)])
        .await
        .context("seeding the history")?;
    for (n, chunk) in fixture.wallets.chunks(FILL_WALLETS_PER_STATEMENT).enumerate() {
        db.execute(
            "WITH g AS ( \
                 SELECT w, (floor(extract(epoch FROM now() - random() * make_interval(days => $3::int)) * 1000))::int8 AS ms, \
                        CASE WHEN random() < 0.9 THEN 'DEBIT' ELSE 'CREDIT' END AS kind, \
                        round((1 + random() * 99)::numeric, 2) AS amount \
                   FROM unnest($1::uuid[]) AS w, generate_series(1, $2::int8)), \
             ids AS ( \
                 SELECT w, kind, amount, (lpad(to_hex(ms), 12, '0') || '7' || substr(md5(random()::text), 1, 3) || '8' \
                        || substr(md5(random()::text), 1, 15))::uuid AS id FROM g), \
             rows AS ( \
                 SELECT id, w, kind, amount, wallet_uuid_v7_time(id) AS at, \
                        $4::numeric + sum(CASE kind WHEN 'CREDIT' THEN amount ELSE -amount END) \
                            OVER (PARTITION BY w ORDER BY wallet_uuid_v7_time(id), id) AS after FROM ids) \
             INSERT INTO transactions (txn_id, wallet_id, amount, type, description, status, balance_after, created_at) \
             SELECT id, w, amount, kind, 'loadtest history', 'COMPLETED', after, at FROM rows",
            &[&chunk, &per_wallet, &(HISTORY_DAYS as i32), &initial],
        )
        .await
        .with_context(|| format!("filling the history of wallets {}..", n * FILL_WALLETS_PER_STATEMENT))?;
    }
    db.execute(
        // The wallets existed before their history (a balance at an instant before a wallet existed is a 400).
        "UPDATE wallets w SET balance = w.initial_balance + t.net, version = w.version + 1, \
                created_at = now() - make_interval(days => $2::int + 1) \
           FROM (SELECT wallet_id, sum(CASE type WHEN 'CREDIT' THEN amount ELSE -amount END) AS net \
                   FROM transactions WHERE wallet_id = ANY($1) GROUP BY 1) t \
          WHERE w.wallet_id = t.wallet_id",
        &[&fixture.wallets, &(HISTORY_DAYS as i32)],
    )
    .await
    .context("setting the balances")?;
    // Vacuumed now rather than by autovacuum in the middle of a measured phase.
    // (One statement each: a multi-statement text runs as one transaction block, which VACUUM refuses.)
    for sql in [
        "VACUUM (ANALYZE) transactions",
        "VACUUM (ANALYZE) wallets",
        "CHECKPOINT",
    ] {
        db.batch_execute(sql).await.with_context(|| sql.to_string())?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// The company the fixture's users belong to.
pub async fn company_of(db_url: &str, fixture: &Fixture) -> anyhow::Result<Uuid> {
    let db = crate::target::connect(db_url).await?;
    let user = fixture.users.first().context("an empty fixture")?;
    let row = db
        .query_one("SELECT company_id FROM users WHERE user_id = $1", &[user])
        .await
        .context("the fixture's company")?;
    Ok(row.get(0))
}

/// The last full calendar month before today (UTC): its first and last day.
pub fn last_full_month(today: NaiveDate) -> (NaiveDate, NaiveDate) {
    let first_this = today.with_day(1).unwrap_or(today);
    let last = first_this.pred_opt().unwrap_or(first_this);
    (last.with_day(1).unwrap_or(last), last)
}

/// A spend report with at least one row of figures.
pub fn spend_has_rows(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["rows"].as_array().map(|r| !r.is_empty()))
        .unwrap_or(false)
}

/// A balance reply with a balance.
pub fn has_balance(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .is_some_and(|v| v["balance"].is_string())
}

/// The path of the spend report of `company` for `(from, to)` by user.
pub fn spend_path(company: Uuid, (from, to): (NaiveDate, NaiveDate)) -> PathOf {
    Arc::new(move |_| format!("/reports/spend?from={from}&to={to}&group_by=user&company_id={company}"))
}

/// The path of a balance at a random instant of the history for a random wallet of `wallets`.
pub fn balance_path(wallets: Arc<Vec<Uuid>>, seed: u64) -> PathOf {
    let now = Utc::now();
    Arc::new(move |i| {
        let w = wallets[pick(seed, i, 7, wallets.len() as u64) as usize];
        let back = pick(seed, i, 8, (HISTORY_DAYS * 86_400) as u64) as i64;
        let at = now - chrono::Duration::seconds(back);
        format!("/wallets/{w}/balance?at={}", at.format("%Y-%m-%dT%H:%M:%SZ"))
    })
}

/// The spend aggregates on or off (measurement only). On is the schema as migrated: every ledger row stamped
/// with its transaction id (`xact`), the BRIN index on it, and the service's fold running. Off: no stamp, no
/// index, and the fold's advisory lock held by this switch's own session, so the service's folds find it
/// busy. The rows written while off stay unstamped, so the aggregates stay short of them (their wallets are
/// the off phases' own fixtures; the company's report is not affected).
pub struct AggregateSwitch {
    db_url: String,
    /// The session holding the fold's lock while off.
    paused: Option<tokio_postgres::Client>,
}

/// The stamp and index of `sql/V12` (repeated here to put them back after an off phase).
const STAMP_ON: &str = "ALTER TABLE transactions ALTER COLUMN xact SET DEFAULT (pg_current_xact_id()::text)::bigint; \
     CREATE INDEX IF NOT EXISTS transactions_xact ON transactions USING brin (xact) WITH (autosummarize = on)";
const STAMP_OFF: &str =
    "ALTER TABLE transactions ALTER COLUMN xact DROP DEFAULT; DROP INDEX IF EXISTS transactions_xact";

impl AggregateSwitch {
    pub fn new(db_url: &str) -> AggregateSwitch {
        AggregateSwitch {
            db_url: db_url.to_string(),
            paused: None,
        }
    }

    pub async fn set(&mut self, on: bool) -> anyhow::Result<()> {
        let db = crate::target::connect(&self.db_url).await?;
        if on {
            db.batch_execute(STAMP_ON).await.context("stamping ledger rows again")?;
            self.paused = None; // closing the session releases the fold's lock
        } else if self.paused.is_none() {
            let lock = crate::target::connect(&self.db_url).await?;
            lock.batch_execute("SELECT pg_advisory_lock(spend_fold_lock_key())")
                .await
                .context("pausing the fold")?;
            self.paused = Some(lock);
            db.batch_execute(STAMP_OFF).await.context("unstamping ledger rows")?;
        }
        let stamped: bool = db
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid \
                                  AND a.attnum = d.adnum \
                                 WHERE d.adrelid = 'transactions'::regclass AND a.attname = 'xact') \
                    AND to_regclass('transactions_xact') IS NOT NULL",
                &[],
            )
            .await
            .context("reading the stamp's state")?
            .get(0);
        if stamped != on {
            bail!("the aggregates did not switch {}", if on { "on" } else { "off" });
        }
        Ok(())
    }
}

/// Folds every finished commit into the aggregates (as the service's fold does, without its time bound):
/// the filled history is folded before the reports are measured. Returns the rows folded.
pub async fn fold_all(db_url: &str) -> anyhow::Result<i64> {
    let db = crate::target::connect(db_url).await?;
    db.batch_execute("SET statement_timeout = 0").await?;
    let mut total = 0;
    loop {
        let row = db
            .query_one("SELECT rows_folded, new_horizon FROM spend_fold_run()", &[])
            .await
            .context("folding the history")?;
        match row.get::<_, Option<i64>>(1) {
            // Another folder (the service's) holds the lock: it is folding; wait for it.
            None => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            Some(_) => {
                let rows: i64 = row.get(0);
                total += rows;
                if rows == 0 {
                    return Ok(total);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_full_month_is_the_calendar_month_before_today() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).expect("a date");
        assert_eq!(last_full_month(d(2026, 12, 6)), (d(2026, 11, 1), d(2026, 11, 30)));
        assert_eq!(last_full_month(d(2026, 1, 31)), (d(2025, 12, 1), d(2025, 12, 31)));
        assert_eq!(last_full_month(d(2024, 3, 1)), (d(2024, 2, 1), d(2024, 2, 29)));
    }

    #[test]
    fn reply_checks_accept_only_real_figures() {
        assert!(spend_has_rows(br#"{"rows":[{"key":"k"}]}"#));
        assert!(!spend_has_rows(br#"{"rows":[]}"#));
        assert!(has_balance(br#"{"balance":"1.00"}"#));
        assert!(!has_balance(b"oops"));
    }
}
