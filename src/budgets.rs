//! Budgets on the service side: their SQL (loaded with the wallet, written in the wallet's batch), the
//! expiry sweep, and default budgets for new users.
//!
//! The *check* lives in the wallet actor (`wallet_actors::wallet`), in the same serialized step as the
//! balance check. Here the batch's budget work is written in the same transaction as its debits, and
//! guarded in SQL: `used_amount <= total_amount` is a CHECK constraint, and the wallet row's version guard
//! means a second process cannot interleave its own budget writes for this wallet.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use deadpool_postgres::GenericClient;
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;
use wallet_actors::store::{Batch, StoreError};
use wallet_actors::{Amount, Budget, BudgetStatus, Engine, PeriodType, TxnType};

use crate::store::{corrupt, unavailable};
use crate::views::{OutboxEvent, ts};

/// How often budgets past their end are marked EXPIRED (correctness does not depend on it: the actor
/// treats a budget past its end as expired at use).
pub const EXPIRY_SWEEP_EVERY: Duration = Duration::from_secs(300);

pub(crate) const BUDGET_COLUMNS: &str = "budget_id, wallet_id, total_amount, used_amount, period_type, start_date, end_date, \
     status, created_by, alerted_thresholds, created_at, updated_at";

pub(crate) fn budget_from_row(r: &tokio_postgres::Row) -> Result<Budget, StoreError> {
    let amount = |col: &str| -> Result<Amount, StoreError> {
        Amount::new(r.try_get::<_, Decimal>(col).map_err(corrupt)?).map_err(corrupt)
    };
    let alerted: Vec<i16> = r.try_get("alerted_thresholds").map_err(corrupt)?;
    Ok(Budget {
        budget_id: r.try_get("budget_id").map_err(corrupt)?,
        wallet_id: r.try_get("wallet_id").map_err(corrupt)?,
        total: amount("total_amount")?,
        used: amount("used_amount")?,
        period: r
            .try_get::<_, &str>("period_type")
            .map_err(corrupt)?
            .parse()
            .map_err(corrupt)?,
        start_date: r.try_get("start_date").map_err(corrupt)?,
        end_date: r.try_get("end_date").map_err(corrupt)?,
        status: r
            .try_get::<_, &str>("status")
            .map_err(corrupt)?
            .parse()
            .map_err(corrupt)?,
        created_by: r.try_get("created_by").map_err(corrupt)?,
        alerted: alerted.into_iter().filter_map(|t| u8::try_from(t).ok()).collect(),
        created_at: r.try_get("created_at").map_err(corrupt)?,
        updated_at: r.try_get("updated_at").map_err(corrupt)?,
    })
}

/// The wallet's budgets that are not EXPIRED, for its actor.
pub(crate) async fn load_live<C: GenericClient>(c: &C, wallet_id: Uuid) -> Result<Vec<Budget>, StoreError> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {BUDGET_COLUMNS} FROM budgets WHERE wallet_id = $1 AND status <> 'EXPIRED' ORDER BY created_at"
        ))
        .await
        .map_err(unavailable)?;
    let rows = c.query(&stmt, &[&wallet_id]).await.map_err(unavailable)?;
    rows.iter().map(budget_from_row).collect()
}

/// `BudgetExceeded` event data.
#[derive(Serialize)]
struct Exceeded {
    budget_id: Uuid,
    wallet_id: Uuid,
    user_id: Uuid,
    exceeded_amount: String,
    threshold_percentage: u8,
}

/// Writes a batch's budget work: new budgets and their first history row, changes and their history rows,
/// the debits' charges and `used_amount`, refunds of referenced credits, announced thresholds.
pub(crate) async fn write_batch<C: GenericClient>(c: &C, batch: &Batch) -> Result<(), tokio_postgres::Error> {
    for b in batch.budget_creates.iter().map(|c| &c.budget) {
        let stmt = c
            .prepare_cached(
                "INSERT INTO budgets (budget_id, wallet_id, total_amount, period_type, start_date, end_date, status, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'ACTIVE', $7)",
            )
            .await?;
        c.execute(
            &stmt,
            &[
                &b.budget_id,
                &b.wallet_id,
                &b.total.value(),
                &b.period.as_str(),
                &b.start_date,
                &b.end_date,
                &b.created_by,
            ],
        )
        .await?;
        history(c, b.budget_id, None, b.total, "created", b.created_by).await?;
    }
    for ch in &batch.budget_changes {
        let stmt = c
            .prepare_cached(
                "UPDATE budgets SET total_amount = $2, status = $3, alerted_thresholds = $4, updated_at = CURRENT_TIMESTAMP WHERE budget_id = $1",
            )
            .await?;
        let alerted: Vec<i16> = ch.after.alerted.iter().map(|t| i16::from(*t)).collect();
        c.execute(
            &stmt,
            &[
                &ch.after.budget_id,
                &ch.after.total.value(),
                &ch.after.status.as_str(),
                &alerted,
            ],
        )
        .await?;
        history(
            c,
            ch.after.budget_id,
            Some(ch.before.total),
            ch.after.total,
            &ch.reason,
            ch.origin.actor_id,
        )
        .await?;
    }
    // Debits: charges, then used_amount by the sum per budget.
    let charges: Vec<(Uuid, Uuid, Decimal)> = batch
        .entries
        .iter()
        .filter(|e| e.kind == TxnType::Debit)
        .flat_map(|e| e.budgets.iter().map(move |b| (e.txn_id, *b, e.amount.value())))
        .collect();
    if !charges.is_empty() {
        let txn: Vec<Uuid> = charges.iter().map(|c| c.0).collect();
        let budget: Vec<Uuid> = charges.iter().map(|c| c.1).collect();
        let amount: Vec<Decimal> = charges.iter().map(|c| c.2).collect();
        let stmt = c
            .prepare_cached(
                "WITH ch AS (INSERT INTO budget_charges (txn_id, budget_id, wallet_id, amount) \
                             SELECT t, b, $4, a FROM unnest($1::uuid[], $2::uuid[], $3::numeric[]) AS v(t, b, a) RETURNING budget_id, amount) \
                 UPDATE budgets SET used_amount = used_amount + s.total, updated_at = CURRENT_TIMESTAMP \
                 FROM (SELECT budget_id, sum(amount) AS total FROM ch GROUP BY budget_id) s WHERE budgets.budget_id = s.budget_id",
            )
            .await?;
        c.execute(&stmt, &[&txn, &budget, &amount, &batch.wallet_id]).await?;
    }
    // Refunds: a credit whose reference matches a debit gives its amount back to that debit's budgets,
    // never more than was charged and not yet given back, never below zero.
    let credits: Vec<_> = batch
        .entries
        .iter()
        .filter(|e| e.kind == TxnType::Credit && e.reference_id.is_some() && e.reference_type.is_some())
        .collect();
    if !credits.is_empty() {
        let rt: Vec<&str> = credits
            .iter()
            .map(|e| e.reference_type.as_deref().unwrap_or_default())
            .collect();
        let ri: Vec<&str> = credits
            .iter()
            .map(|e| e.reference_id.as_deref().unwrap_or_default())
            .collect();
        let amount: Vec<Decimal> = credits.iter().map(|e| e.amount.value()).collect();
        let stmt = c
            .prepare_cached(
                "WITH r AS (SELECT tr.txn_id AS debit, v.a AS amount FROM unnest($2::text[], $3::text[], $4::numeric[]) AS v(rt, ri, a) \
                            JOIN transaction_references tr ON tr.wallet_id = $1 AND tr.reference_type = v.rt \
                                 AND tr.reference_id = v.ri AND tr.type = 'DEBIT'), \
                      g AS (SELECT bc.txn_id, bc.budget_id, least(r.amount, bc.amount - bc.refunded) AS back \
                            FROM budget_charges bc JOIN r ON bc.txn_id = r.debit WHERE bc.amount > bc.refunded), \
                      u AS (UPDATE budget_charges bc SET refunded = bc.refunded + g.back FROM g \
                            WHERE bc.txn_id = g.txn_id AND bc.budget_id = g.budget_id RETURNING bc.budget_id) \
                 UPDATE budgets b SET used_amount = greatest(b.used_amount - s.back, 0), updated_at = CURRENT_TIMESTAMP \
                 FROM (SELECT budget_id, sum(back) AS back FROM g GROUP BY budget_id) s WHERE b.budget_id = s.budget_id",
            )
            .await?;
        c.execute(&stmt, &[&batch.wallet_id, &rt, &ri, &amount]).await?;
    }
    // Announced thresholds (refusal alerts do not mark anything).
    let mut marked: Vec<Uuid> = batch
        .alerts
        .iter()
        .filter(|a| !a.refused)
        .map(|a| a.budget_id)
        .collect();
    marked.dedup();
    for id in marked {
        if let Some(b) = batch.budget_after(id) {
            let alerted: Vec<i16> = b.alerted.iter().map(|t| i16::from(*t)).collect();
            let stmt = c
                .prepare_cached("UPDATE budgets SET alerted_thresholds = $2 WHERE budget_id = $1")
                .await?;
            c.execute(&stmt, &[&id, &alerted]).await?;
        }
    }
    Ok(())
}

/// The `BudgetExceeded` events of a batch's alerts, for the outbox (written with the batch).
pub(crate) fn alert_events(batch: &Batch) -> Vec<OutboxEvent> {
    batch
        .alerts
        .iter()
        .map(|a| {
            OutboxEvent::new(
                "BudgetExceeded",
                "budget.exceeded",
                batch.wallet_id,
                Exceeded {
                    budget_id: a.budget_id,
                    wallet_id: batch.wallet_id,
                    user_id: batch.after.user_id,
                    exceeded_amount: format!("{:.2}", a.exceeded_amount),
                    threshold_percentage: a.threshold,
                },
            )
        })
        .collect()
}

async fn history<C: GenericClient>(
    c: &C,
    budget_id: Uuid,
    old: Option<Amount>,
    new: Amount,
    reason: &str,
    by: Uuid,
) -> Result<(), tokio_postgres::Error> {
    let stmt = c
        .prepare_cached("INSERT INTO budget_history (budget_id, old_amount, new_amount, change_reason, changed_by) VALUES ($1, $2, $3, $4, $5)")
        .await?;
    c.execute(
        &stmt,
        &[&budget_id, &old.map(|a| a.value()), &new.value(), &reason, &by],
    )
    .await?;
    Ok(())
}

/// The budget's JSON shape (`GET /budgets/{userId}` and friends).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BudgetView {
    pub budget_id: Uuid,
    pub wallet_id: Uuid,
    #[schema(value_type = crate::http::openapi::Money)]
    pub total_amount: String,
    #[schema(value_type = crate::http::openapi::Money)]
    pub used_amount: String,
    #[schema(value_type = crate::http::openapi::Money)]
    pub remaining_amount: String,
    #[schema(value_type = crate::http::openapi::enums::PeriodType)]
    pub period_type: String,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    #[schema(value_type = crate::http::openapi::enums::BudgetStatus)]
    pub status: String,
    pub created_by: Uuid,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<&Budget> for BudgetView {
    fn from(b: &Budget) -> Self {
        // Past its end a budget is EXPIRED whether or not the sweep has written it yet.
        let status = if b.status == BudgetStatus::Active && b.end_date < Utc::now().date_naive() {
            BudgetStatus::Expired
        } else {
            b.status
        };
        let fmt = |d: Decimal| format!("{d:.2}");
        BudgetView {
            budget_id: b.budget_id,
            wallet_id: b.wallet_id,
            total_amount: b.total.to_string(),
            used_amount: b.used.to_string(),
            remaining_amount: fmt(b.remaining()),
            period_type: b.period.to_string(),
            start_date: b.start_date,
            end_date: b.end_date,
            status: status.to_string(),
            created_by: b.created_by,
            created_at: ts(b.created_at),
            updated_at: ts(b.updated_at),
        }
    }
}

/// A `budget_history` row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryView {
    pub history_id: Uuid,
    pub budget_id: Uuid,
    #[schema(value_type = Option<crate::http::openapi::Money>)]
    pub old_amount: Option<String>,
    #[schema(value_type = crate::http::openapi::Money)]
    pub new_amount: String,
    pub change_reason: String,
    pub changed_by: Uuid,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// Marks budgets past their end as EXPIRED and tells their wallets' actors to reload.
pub async fn sweep_expired(pool: &deadpool_postgres::Pool, engine: &Engine) -> Result<u64, String> {
    let c = pool.get().await.map_err(|e| e.to_string())?;
    let rows = c
        .query(
            "UPDATE budgets SET status = 'EXPIRED', updated_at = CURRENT_TIMESTAMP \
             WHERE status IN ('ACTIVE', 'SUSPENDED') AND end_date < (now() AT TIME ZONE 'UTC')::date RETURNING wallet_id",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    for r in &rows {
        engine.invalidate(r.get(0));
    }
    Ok(rows.len() as u64)
}

/// A default allocation: a budget of `total` per `period` for new users of a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultBudget {
    pub role: String,
    pub period: PeriodType,
    pub total: Amount,
}

/// Parses `DEFAULT_BUDGETS`, e.g. `user:MONTHLY:1000.00,manager:MONTHLY:5000.00` (role `*` for all).
pub fn parse_defaults(spec: &str) -> Result<Vec<DefaultBudget>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let parts: Vec<&str> = item.split(':').collect();
            let [role, period, total] = parts.as_slice() else {
                return Err(format!("DEFAULT_BUDGETS item {item:?} must be role:PERIOD:amount"));
            };
            if !["user", "manager", "admin", "service", "*"].contains(role) {
                return Err(format!("DEFAULT_BUDGETS role {role:?} is not a role"));
            }
            let total = Amount::parse_positive(total).map_err(|e| format!("DEFAULT_BUDGETS amount {total:?} {e}"))?;
            Ok(DefaultBudget {
                role: role.to_string(),
                period: period.parse()?,
                total,
            })
        })
        .collect()
}

/// Sets up the configured default budgets of a new user's wallet (starting with the current period).
/// Called by the `UserCreated` consumer; goes through the wallet's actor like any budget change.
pub async fn apply_defaults(
    ledger: &crate::money::Ledger,
    defaults: &[DefaultBudget],
    wallet_id: Uuid,
    role: &str,
    origin: wallet_actors::Origin,
) -> Result<Vec<Budget>, wallet_actors::Rejection> {
    let today = Utc::now().date_naive();
    let mut created = Vec::new();
    for d in defaults.iter().filter(|d| d.role == role || d.role == "*") {
        let start = d.period.start_of(today);
        let end = d.period.end_of(today);
        created.push(
            ledger
                .create_budget(wallet_id, d.total, d.period, start, end, origin.clone())
                .await?,
        );
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_budgets_parse_roles_periods_and_amounts() {
        let d = parse_defaults("user:MONTHLY:1000.00, *:YEARLY:5000").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].period, PeriodType::Monthly);
        assert_eq!(d[1].total.to_string(), "5000.00");
        assert!(parse_defaults("user:DAILY:1").is_err());
        assert!(parse_defaults("boss:MONTHLY:1").is_err());
        assert!(parse_defaults("user:MONTHLY:0").is_err());
        assert!(parse_defaults("user:MONTHLY").is_err());
        assert!(parse_defaults("").unwrap().is_empty());
    }
}
