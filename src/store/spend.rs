//! Spend: the report's SQL, the fold that keeps its aggregates, and their recomputation from the ledger.
//!
//! The aggregates (`spend_daily`, `spend_monthly`) are folded from the ledger off the commit path by
//! `spend_fold_run()` (`sql/V12`): each run folds the rows whose writing transaction id (`xact`) lies between
//! the last horizon and the `xmin` of its own snapshot, so a row is folded once, after its transaction
//! finished, whatever order commits land in. A report reads in one snapshot the aggregates, the horizon and
//! the rows at or above it (the tail, through a BRIN index on `xact`): exact to the last commit, never
//! scanning the ledger beyond that tail.

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_actors::store::StoreError;

use super::read::col;
use super::replica::ReadScope;
use super::reports::{MAX_REPORT_ROWS, Report, ReportScope, bounded};
use super::{PgStore, unavailable};

/// How long one fold may run: after an outage the backlog is folded in one statement, longer than the request
/// path's statement timeout allows (a report stays exact meanwhile: it reads the longer tail).
pub const FOLD_STATEMENT_TIMEOUT_MS: u32 = 120_000;

/// How `GET /reports/spend` groups its rows (the row's `key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendGrouping {
    /// `2026-12-06`.
    Day,
    /// ISO week, `2026-W49`.
    Week,
    /// `2026-12`.
    Month,
    /// The wallet owner's user id.
    User,
    /// `DEBIT`, `CREDIT`, `REFUND`, `TRANSFER_IN`, `TRANSFER_OUT`.
    Type,
}

impl SpendGrouping {
    /// Every grouping, by its name in the query string.
    pub const ALL: [(&'static str, SpendGrouping); 5] = [
        ("day", SpendGrouping::Day),
        ("week", SpendGrouping::Week),
        ("month", SpendGrouping::Month),
        ("user", SpendGrouping::User),
        ("type", SpendGrouping::Type),
    ];

    /// The SQL of the row key over `src` (one figure: day or month, wallet, kind) joined to `ws` (the scope's
    /// wallets), and of its text from that value `g` (computed once a group, not once a row). Fixed texts per
    /// variant (never input).
    fn key_sql(self) -> (&'static str, &'static str) {
        match self {
            SpendGrouping::Day => ("src.day", "to_char(g, 'YYYY-MM-DD')"),
            SpendGrouping::Week => ("date_trunc('week', src.day)::date", "to_char(g, 'IYYY-\"W\"IW')"),
            SpendGrouping::Month => ("date_trunc('month', src.day)::date", "to_char(g, 'YYYY-MM')"),
            SpendGrouping::User => ("ws.user_id", "g::text"),
            SpendGrouping::Type => ("src.kind", "g::text"),
        }
    }

    /// Whether a whole month's figures may come from `spend_monthly` (the key does not need the day).
    fn months_suffice(self) -> bool {
        match self {
            SpendGrouping::Day | SpendGrouping::Week => false,
            SpendGrouping::Month | SpendGrouping::User | SpendGrouping::Type => true,
        }
    }
}

/// The whole calendar months inside `from..=to`: `[first, end)` as first days of months, or `None`.
pub fn whole_months(from: NaiveDate, to: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
    let first_of = |d: NaiveDate| d.with_day(1);
    let next_month = |d: NaiveDate| first_of(d)?.checked_add_months(chrono::Months::new(1));
    let first = if from.day() == 1 { Some(from) } else { next_month(from) }?;
    let end = first_of(to.succ_opt()?)?;
    (first < end).then_some((first, end))
}

/// One row of the spend report: one key in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendRow {
    pub key: String,
    pub currency: String,
    /// DEBIT and TRANSFER_OUT rows: money that left the wallets.
    pub debits: Decimal,
    /// CREDIT rows that are not refunds, and TRANSFER_IN rows.
    pub credits: Decimal,
    /// CREDIT rows that carry a debit's reference.
    pub refunds: Decimal,
    /// Ledger rows counted.
    pub count: i64,
}

/// What one fold did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// Folded `rows` ledger rows; every row of a transaction id below `horizon` is now in the aggregates.
    Folded { rows: i64, horizon: i64 },
    /// Another folder held the fold's lock: it is doing this work.
    Busy,
}

/// Which aggregate table a mismatch is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregatePeriod {
    /// `spend_daily`: `day` is the UTC day.
    Day,
    /// `spend_monthly`: `day` is the first day of the month.
    Month,
}

/// An aggregate that differs from what the ledger rows it covers add up to (`None`: no such row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateMismatch {
    pub period: AggregatePeriod,
    pub wallet_id: Uuid,
    pub day: NaiveDate,
    pub kind: String,
    /// What the ledger adds up to: (amount, rows).
    pub ledger: Option<(Decimal, i64)>,
    /// What the aggregate holds.
    pub aggregate: Option<(Decimal, i64)>,
}

/// Most mismatches one recomputation lists per period (the first ones, in wallet, day and kind order).
pub const MAX_AGGREGATE_MISMATCHES: i64 = 100;

impl PgStore {
    /// The spend report: whole months from `spend_monthly` where the key allows, other days from
    /// `spend_daily`, and the rows not folded yet from the ledger's tail, all in one snapshot.
    pub async fn spend_report(
        &self,
        scope: ReportScope,
        from: NaiveDate,
        to: NaiveDate,
        grouping: SpendGrouping,
    ) -> Result<Report<SpendRow>, StoreError> {
        let (group, text) = grouping.key_sql();
        let months = whole_months(from, to).filter(|_| grouping.months_suffice());
        let (use_months, (m_from, m_end)) = (months.is_some(), months.unwrap_or((from, from)));
        let mut c = self.read_client(ReadScope::Everything).await?;
        // One snapshot for the horizon and the figures: a fold committing between two reads would otherwise
        // count its rows twice (in the aggregates and in the tail) or not at all.
        // Planned for the horizon's value, which the planner then knows lies past the ledger's statistics: a
        // generic plan would guess a third of the ledger and scan it.
        let tx = snapshot(&mut c, "SET LOCAL plan_cache_mode = force_custom_plan").await?;
        let horizon: i64 = col(
            &tx.query_one("SELECT horizon FROM spend_fold", &[])
                .await
                .map_err(unavailable)?,
            "horizon",
        )?;
        let stmt = tx
            .prepare_cached(&format!(
                "WITH ws AS MATERIALIZED ( \
                     SELECT w.wallet_id, w.user_id, w.currency::text AS currency \
                       FROM users u JOIN wallets w ON w.user_id = u.user_id \
                      WHERE u.company_id = $1 AND ($2::uuid IS NULL OR u.user_id = $2)), \
                 src AS ( \
                     SELECT s.wallet_id, s.month AS day, s.kind::text AS kind, s.amount, s.count \
                       FROM ws JOIN spend_monthly s ON s.wallet_id = ws.wallet_id \
                      WHERE $7 AND s.month >= $8 AND s.month < $9 \
                     UNION ALL \
                     SELECT s.wallet_id, s.day, s.kind::text, s.amount, s.count \
                       FROM ws JOIN spend_daily s ON s.wallet_id = ws.wallet_id \
                      WHERE s.day BETWEEN $3 AND $4 AND NOT ($7 AND s.day >= $8 AND s.day < $9) \
                     UNION ALL \
                     SELECT t.wallet_id, (t.created_at AT TIME ZONE 'UTC')::date, \
                            spend_kind(t.wallet_id, t.type, t.reference_type, t.reference_id, t.created_at), \
                            t.amount, 1 \
                       FROM transactions t JOIN ws ON ws.wallet_id = t.wallet_id \
                      WHERE t.xact >= $6 AND t.status = 'COMPLETED' \
                        AND t.created_at >= ($3::date)::timestamp AT TIME ZONE 'UTC' \
                        AND t.created_at < ($4::date + 1)::timestamp AT TIME ZONE 'UTC'), \
                 k AS (SELECT {group} AS g, ws.currency, src.kind, sum(src.amount) AS amount, sum(src.count) AS n \
                         FROM src JOIN ws ON ws.wallet_id = src.wallet_id GROUP BY 1, 2, 3) \
                 SELECT {text} AS key, currency, \
                        coalesce(sum(amount) FILTER (WHERE kind IN ('DEBIT', 'TRANSFER_OUT')), 0) AS debits, \
                        coalesce(sum(amount) FILTER (WHERE kind IN ('CREDIT', 'TRANSFER_IN')), 0) AS credits, \
                        coalesce(sum(amount) FILTER (WHERE kind = 'REFUND'), 0) AS refunds, \
                        sum(n)::int8 AS count \
                   FROM k GROUP BY g, currency ORDER BY 1, 2 LIMIT $5"
            ))
            .await
            .map_err(unavailable)?;
        let limit = MAX_REPORT_ROWS + 1;
        let rows = tx
            .query(
                &stmt,
                &[
                    &scope.company_id,
                    &scope.user_id,
                    &from,
                    &to,
                    &limit,
                    &horizon,
                    &use_months,
                    &m_from,
                    &m_end,
                ],
            )
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        bounded(&rows, MAX_REPORT_ROWS, |r| {
            Ok(SpendRow {
                key: col(r, "key")?,
                currency: col(r, "currency")?,
                debits: col(r, "debits")?,
                credits: col(r, "credits")?,
                refunds: col(r, "refunds")?,
                count: col(r, "count")?,
            })
        })
    }
}

/// A read-only REPEATABLE READ transaction (one snapshot for several statements), with `settings` (fixed
/// `SET LOCAL` texts) applied.
async fn snapshot<'a>(
    c: &'a mut deadpool_postgres::Object,
    settings: &'static str,
) -> Result<deadpool_postgres::Transaction<'a>, StoreError> {
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(unavailable)?;
    tx.batch_execute(settings).await.map_err(unavailable)?;
    Ok(tx)
}

/// Folds the ledger rows of every finished transaction since the last fold into the aggregates (on the
/// primary). Several instances may call it at once: one folds, the others are `Busy`.
pub async fn fold_spend(pool: &super::Pool) -> Result<Fold, StoreError> {
    let mut c = pool.get().await.map_err(unavailable)?;
    let tx = c.transaction().await.map_err(unavailable)?;
    tx.batch_execute(&format!("SET LOCAL statement_timeout = {FOLD_STATEMENT_TIMEOUT_MS}"))
        .await
        .map_err(unavailable)?;
    let row = tx
        .query_one("SELECT rows_folded, new_horizon FROM spend_fold_run()", &[])
        .await
        .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    let horizon: Option<i64> = col(&row, "new_horizon")?;
    Ok(match horizon {
        Some(horizon) => Fold::Folded {
            rows: col(&row, "rows_folded")?,
            horizon,
        },
        None => Fold::Busy,
    })
}

/// Recomputes every spend aggregate (or one wallet's) from the ledger rows it covers (every row of a
/// transaction below the fold's horizon, with the same `spend_kind`) and lists the first
/// [`MAX_AGGREGATE_MISMATCHES`] per table that differ, in both directions (an aggregate with no rows, rows
/// with no aggregate). One snapshot, on the primary: this is an audit of what was written.
pub async fn recompute_spend_aggregates(
    pool: &super::Pool,
    wallet_id: Option<Uuid>,
) -> Result<Vec<AggregateMismatch>, StoreError> {
    let mut c = pool.get().await.map_err(unavailable)?;
    // An audit scans the ledger by design; the request-path statement timeout would cut it short.
    let tx = snapshot(&mut c, "SET LOCAL statement_timeout = 0").await?;
    let mut found = Vec::new();
    for (period, table, key, bucket) in [
        (
            AggregatePeriod::Day,
            "spend_daily",
            "day",
            "(t.created_at AT TIME ZONE 'UTC')::date",
        ),
        (
            AggregatePeriod::Month,
            "spend_monthly",
            "month",
            "date_trunc('month', t.created_at AT TIME ZONE 'UTC')::date",
        ),
    ] {
        let stmt = tx
            .prepare_cached(&format!(
                "WITH ledger AS ( \
                    SELECT t.wallet_id, {bucket} AS day, \
                           spend_kind(t.wallet_id, t.type, t.reference_type, t.reference_id, t.created_at) AS kind, \
                           sum(t.amount) AS amount, count(*)::int8 AS count \
                      FROM transactions t \
                     WHERE t.status = 'COMPLETED' AND ($1::uuid IS NULL OR t.wallet_id = $1) \
                       AND (t.xact IS NULL OR t.xact < (SELECT horizon FROM spend_fold)) \
                     GROUP BY 1, 2, 3), \
                 agg AS (SELECT wallet_id, {key} AS day, kind::text AS kind, amount, count FROM {table} \
                          WHERE $1::uuid IS NULL OR wallet_id = $1) \
                 SELECT coalesce(l.wallet_id, a.wallet_id) AS wallet_id, coalesce(l.day, a.day) AS day, \
                        coalesce(l.kind, a.kind) AS kind, l.amount AS ledger_amount, l.count AS ledger_count, \
                        a.amount AS agg_amount, a.count AS agg_count \
                   FROM ledger l FULL JOIN agg a ON a.wallet_id = l.wallet_id AND a.day = l.day AND a.kind = l.kind \
                  WHERE l.amount IS DISTINCT FROM a.amount OR l.count IS DISTINCT FROM a.count \
                  ORDER BY 1, 2, 3 LIMIT $2"
            ))
            .await
            .map_err(unavailable)?;
        let rows = tx
            .query(&stmt, &[&wallet_id, &MAX_AGGREGATE_MISMATCHES])
            .await
            .map_err(unavailable)?;
        for r in &rows {
            found.push(mismatch(period, r)?);
        }
    }
    tx.commit().await.map_err(unavailable)?;
    Ok(found)
}

fn mismatch(period: AggregatePeriod, r: &tokio_postgres::Row) -> Result<AggregateMismatch, StoreError> {
    let pair = |a: &str, n: &str| -> Result<Option<(Decimal, i64)>, StoreError> {
        let amount: Option<Decimal> = col(r, a)?;
        let count: Option<i64> = col(r, n)?;
        Ok(amount.zip(count))
    };
    Ok(AggregateMismatch {
        period,
        wallet_id: col(r, "wallet_id")?,
        day: col(r, "day")?,
        kind: col(r, "kind")?,
        ledger: pair("ledger_amount", "ledger_count")?,
        aggregate: pair("agg_amount", "agg_count")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("a date")
    }

    #[test]
    fn whole_months_are_the_calendar_months_inside_the_range() {
        assert_eq!(
            whole_months(d(2026, 11, 1), d(2026, 11, 30)),
            Some((d(2026, 11, 1), d(2026, 12, 1)))
        );
        assert_eq!(
            whole_months(d(2026, 1, 15), d(2026, 4, 30)),
            Some((d(2026, 2, 1), d(2026, 5, 1)))
        );
        assert_eq!(
            whole_months(d(2026, 1, 1), d(2026, 3, 30)),
            Some((d(2026, 1, 1), d(2026, 3, 1)))
        );
        assert_eq!(
            whole_months(d(2025, 12, 1), d(2026, 12, 31)),
            Some((d(2025, 12, 1), d(2027, 1, 1)))
        );
        assert_eq!(
            whole_months(d(2024, 2, 1), d(2024, 2, 29)),
            Some((d(2024, 2, 1), d(2024, 3, 1)))
        );
        // No whole month inside.
        assert_eq!(whole_months(d(2026, 1, 2), d(2026, 1, 31)), None);
        assert_eq!(whole_months(d(2026, 1, 1), d(2026, 1, 30)), None);
        assert_eq!(whole_months(d(2026, 1, 15), d(2026, 2, 14)), None);
        assert_eq!(whole_months(d(2026, 3, 5), d(2026, 3, 5)), None);
    }
}
