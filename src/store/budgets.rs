//! Budget SQL: loaded with the wallet, written in the wallet's batch (same transaction as its debits),
//! and the expiry sweep.
//!
//! The *check* lives in the wallet actor (`wallet_actors::command::post`), in the same serialized step as
//! the balance check. Here the batch's budget work is written in the same transaction as its debits, and
//! guarded in SQL: `used_amount <= total_amount` is a CHECK constraint, and the wallet row's version guard
//! means a second process cannot interleave its own budget writes for this wallet.

use deadpool_postgres::GenericClient;
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;
use wallet_actors::store::{Batch, StoreError};
use wallet_actors::{Amount, Budget, TxnType};

use super::{PgStore, corrupt, unavailable};
use crate::views::OutboxEvent;

pub(crate) const BUDGET_COLUMNS: &str = "budget_id, wallet_id, total_amount, used_amount, held_amount, period_type, start_date, end_date, \
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
        held: amount("held_amount")?,
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
        // A capture's budgets were charged when its hold was placed (see `holds::write_changes`).
        .filter(|e| e.kind == TxnType::Debit && e.hold_id.is_none())
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

impl PgStore {
    /// Marks budgets past their end as EXPIRED; returns the wallets whose actors must reload.
    pub async fn expire_budgets(&self) -> Result<Vec<Uuid>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let rows = c
            .query(
                "UPDATE budgets SET status = 'EXPIRED', updated_at = CURRENT_TIMESTAMP \
                 WHERE status IN ('ACTIVE', 'SUSPENDED') AND end_date < (now() AT TIME ZONE 'UTC')::date RETURNING wallet_id",
                &[],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(|r| super::col(r, "wallet_id")).collect()
    }
}
