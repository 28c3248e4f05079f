//! Hold SQL: loaded with the wallet (its open holds), written in the wallet's batch (same transaction as
//! its debits and its `reserved` total), and read for `GET /holds/...` and the expiry sweep.
//!
//! The *judging* lives in the wallet actor (`wallet_actors::command::hold`). Here a batch's hold changes are
//! written and guarded in SQL: a placed hold's reference is unique per wallet (a unique index, taken with
//! `ON CONFLICT DO NOTHING` so a repeat is told apart from a failure), and the budget work is relative
//! (`used_amount + delta`) so it composes with the batch's other budget writes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_actors::store::{Batch, HoldEvent, StoreError};
use wallet_actors::{Amount, Hold, HoldStatus};

use super::{PgStore, corrupt, unavailable};

/// Most holds the expiry sweep writes per pass (each through its wallet's actor).
pub const MAX_SWEEP_HOLDS: i64 = 500;

const HOLD_COLUMNS: &str = "hold_id, wallet_id, amount, captured_amount, status, reference_id, reference_type, \
     description, metadata, budgets, expires_at, created_by, created_at, updated_at";

fn hold_from_row(r: &tokio_postgres::Row) -> Result<Hold, StoreError> {
    let amount = |col: &str| -> Result<Amount, StoreError> {
        Amount::new(r.try_get::<_, Decimal>(col).map_err(corrupt)?).map_err(corrupt)
    };
    let status: &str = r.try_get("status").map_err(corrupt)?;
    Ok(Hold {
        hold_id: r.try_get("hold_id").map_err(corrupt)?,
        wallet_id: r.try_get("wallet_id").map_err(corrupt)?,
        amount: amount("amount")?,
        captured: amount("captured_amount")?,
        status: status.parse::<HoldStatus>().map_err(corrupt)?,
        reference_id: r.try_get("reference_id").map_err(corrupt)?,
        reference_type: r.try_get("reference_type").map_err(corrupt)?,
        description: r.try_get("description").map_err(corrupt)?,
        metadata: r.try_get("metadata").map_err(corrupt)?,
        budgets: r.try_get("budgets").map_err(corrupt)?,
        expires_at: r.try_get("expires_at").map_err(corrupt)?,
        created_by: r.try_get("created_by").map_err(corrupt)?,
        created_at: r.try_get("created_at").map_err(corrupt)?,
        updated_at: r.try_get("updated_at").map_err(corrupt)?,
    })
}

/// The wallet's open holds (PENDING, PARTIALLY_CAPTURED), for its actor. A partial index keeps this a
/// look-up that finds nothing for the wallets that hold nothing.
pub(crate) async fn load_open<C: GenericClient>(c: &C, wallet_id: Uuid) -> Result<Vec<Hold>, StoreError> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {HOLD_COLUMNS} FROM holds WHERE wallet_id = $1 AND status IN ('PENDING', 'PARTIALLY_CAPTURED') \
             ORDER BY created_at"
        ))
        .await
        .map_err(unavailable)?;
    let rows = c.query(&stmt, &[&wallet_id]).await.map_err(unavailable)?;
    rows.iter().map(hold_from_row).collect()
}

/// The open holds of several wallets (an atomic bulk posting's, `store::batch`; a group of reads',
/// `store::reader`), oldest first. Prepared once per connection: reads run it for every group of misses.
pub(super) async fn load_open_of<C: GenericClient>(c: &C, wallet_ids: &[Uuid]) -> Result<Vec<Hold>, StoreError> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {HOLD_COLUMNS} FROM holds WHERE wallet_id = ANY($1) \
               AND status IN ('PENDING', 'PARTIALLY_CAPTURED') ORDER BY created_at"
        ))
        .await
        .map_err(unavailable)?;
    let rows = c.query(&stmt, &[&wallet_ids]).await.map_err(unavailable)?;
    rows.iter().map(hold_from_row).collect()
}

/// Inserts the holds the batch places; returns `(hold change index, existing hold id)` for those whose
/// reference another hold of the wallet already has (nothing of theirs written: the caller rolls back).
pub(super) async fn claim_placed<C: GenericClient>(
    c: &C,
    batch: &Batch,
) -> Result<Vec<(usize, Uuid)>, tokio_postgres::Error> {
    let placed: Vec<(usize, &Hold)> = batch
        .hold_changes
        .iter()
        .enumerate()
        .filter(|(_, ch)| ch.event == HoldEvent::Placed)
        .map(|(i, ch)| (i, &ch.hold))
        .collect();
    if placed.is_empty() {
        return Ok(vec![]);
    }
    let col = |f: fn(&Hold) -> Decimal| placed.iter().map(|(_, h)| f(h)).collect::<Vec<_>>();
    let id: Vec<Uuid> = placed.iter().map(|(_, h)| h.hold_id).collect();
    let amount = col(|h| h.amount.value());
    let rid: Vec<Option<&str>> = placed.iter().map(|(_, h)| h.reference_id.as_deref()).collect();
    let rtype: Vec<Option<&str>> = placed.iter().map(|(_, h)| h.reference_type.as_deref()).collect();
    let desc: Vec<Option<&str>> = placed.iter().map(|(_, h)| h.description.as_deref()).collect();
    let meta: Vec<Option<&serde_json::Value>> = placed.iter().map(|(_, h)| h.metadata.as_ref()).collect();
    // Budgets as text (`{id,id}`): Postgres has no array of arrays of varying length.
    let budgets: Vec<String> = placed
        .iter()
        .map(|(_, h)| {
            let ids: Vec<String> = h.budgets.iter().map(Uuid::to_string).collect();
            format!("{{{}}}", ids.join(","))
        })
        .collect();
    let expires: Vec<DateTime<Utc>> = placed.iter().map(|(_, h)| h.expires_at).collect();
    let by: Vec<Uuid> = placed.iter().map(|(_, h)| h.created_by).collect();
    let at: Vec<DateTime<Utc>> = placed.iter().map(|(_, h)| h.created_at).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO holds (hold_id, wallet_id, amount, status, reference_id, reference_type, description, metadata, \
                                budgets, expires_at, created_by, created_at, updated_at) \
             SELECT h.id, $1, h.amount, 'PENDING', h.rid, h.rtype, h.descr, h.meta, h.budgets::uuid[], h.exp, h.by, h.at, h.at \
               FROM unnest($2::uuid[], $3::numeric[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::text[], \
                           $9::timestamptz[], $10::uuid[], $11::timestamptz[]) \
                    AS h(id, amount, rid, rtype, descr, meta, budgets, exp, by, at) \
             ON CONFLICT DO NOTHING RETURNING hold_id",
        )
        .await?;
    let inserted: Vec<Uuid> = c
        .query(
            &stmt,
            &[
                &batch.wallet_id,
                &id,
                &amount,
                &rid,
                &rtype,
                &desc,
                &meta,
                &budgets,
                &expires,
                &by,
                &at,
            ],
        )
        .await?
        .iter()
        .map(|r| r.try_get("hold_id"))
        .collect::<Result<_, _>>()?;
    if inserted.len() == placed.len() {
        return Ok(vec![]);
    }
    let mut dups = Vec::new();
    for (i, h) in placed.iter().filter(|(_, h)| !inserted.contains(&h.hold_id)) {
        let stmt = c
            .prepare_cached(
                "SELECT hold_id FROM holds WHERE wallet_id = $1 AND reference_type = $2 AND reference_id = $3",
            )
            .await?;
        let existing = c
            .query_opt(&stmt, &[&batch.wallet_id, &h.reference_type, &h.reference_id])
            .await?;
        // A repeated id with no reference is a conflict on the primary key: the same hold again.
        let holder = match existing {
            Some(r) => r.try_get("hold_id")?,
            None => h.hold_id,
        };
        dups.push((*i, holder));
    }
    Ok(dups)
}

/// Each hold the batch changed other than by placing it, in its last state (its row's state after the
/// batch), by id.
fn changed_holds(batch: &Batch) -> BTreeMap<Uuid, &Hold> {
    batch
        .hold_changes
        .iter()
        .filter(|ch| ch.event != HoldEvent::Placed)
        .map(|ch| (ch.hold.hold_id, &ch.hold))
        .collect()
}

/// The hold rows of plain batches (see `committer::is_plain`: no reference, no budgets) as column arrays
/// for the committer's single statement: holds placed, and the final state of holds changed.
pub(super) struct PlainHoldCols<'a> {
    placed_id: Vec<Uuid>,
    placed_amount: Vec<Decimal>,
    placed_desc: Vec<Option<&'a str>>,
    placed_meta: Vec<Option<&'a serde_json::Value>>,
    placed_expires: Vec<DateTime<Utc>>,
    placed_by: Vec<Uuid>,
    placed_at: Vec<DateTime<Utc>>,
    pub placed_wallet: Vec<Uuid>,
    changed_id: Vec<Uuid>,
    changed_captured: Vec<Decimal>,
    changed_status: Vec<&'static str>,
    changed_at: Vec<DateTime<Utc>>,
    pub changed_wallet: Vec<Uuid>,
}

impl<'a> PlainHoldCols<'a> {
    pub fn of(batches: &[&'a Batch]) -> Self {
        let mut c = PlainHoldCols {
            placed_id: vec![],
            placed_amount: vec![],
            placed_desc: vec![],
            placed_meta: vec![],
            placed_expires: vec![],
            placed_by: vec![],
            placed_at: vec![],
            placed_wallet: vec![],
            changed_id: vec![],
            changed_captured: vec![],
            changed_status: vec![],
            changed_at: vec![],
            changed_wallet: vec![],
        };
        for b in batches {
            for ch in b.hold_changes.iter().filter(|ch| ch.event == HoldEvent::Placed) {
                let h = &ch.hold;
                c.placed_id.push(h.hold_id);
                c.placed_amount.push(h.amount.value());
                c.placed_desc.push(h.description.as_deref());
                c.placed_meta.push(h.metadata.as_ref());
                c.placed_expires.push(h.expires_at);
                c.placed_by.push(h.created_by);
                c.placed_at.push(h.created_at);
                c.placed_wallet.push(b.wallet_id);
            }
            for (id, h) in changed_holds(b) {
                c.changed_id.push(id);
                c.changed_captured.push(h.captured.value());
                c.changed_status.push(h.status.as_str());
                c.changed_at.push(h.updated_at);
                c.changed_wallet.push(b.wallet_id);
            }
        }
        c
    }

    pub fn placed_params(&self) -> [super::rows::Param<'_>; 8] {
        [
            &self.placed_id,
            &self.placed_amount,
            &self.placed_desc,
            &self.placed_meta,
            &self.placed_expires,
            &self.placed_by,
            &self.placed_at,
            &self.placed_wallet,
        ]
    }

    pub fn changed_params(&self) -> [super::rows::Param<'_>; 5] {
        [
            &self.changed_id,
            &self.changed_captured,
            &self.changed_status,
            &self.changed_at,
            &self.changed_wallet,
        ]
    }
}

/// Writes the rest of the batch's hold work: the final state of each hold it changed (other than by
/// placing it), the budgets' relative changes, and what captures charge to the budgets (kept under the
/// hold's id, which is the txn id of the hold's reference key, so a refund of a captured booking gives
/// back to exactly those budgets).
pub(super) async fn write_changes<C: GenericClient>(c: &C, batch: &Batch) -> Result<(), tokio_postgres::Error> {
    if batch.hold_changes.is_empty() {
        return Ok(());
    }
    let last = changed_holds(batch);
    if !last.is_empty() {
        let id: Vec<Uuid> = last.keys().copied().collect();
        let captured: Vec<Decimal> = last.values().map(|h| h.captured.value()).collect();
        let status: Vec<&str> = last.values().map(|h| h.status.as_str()).collect();
        let at: Vec<DateTime<Utc>> = last.values().map(|h| h.updated_at).collect();
        let stmt = c
            .prepare_cached(
                "UPDATE holds SET captured_amount = v.captured, status = v.status, updated_at = v.at \
                   FROM unnest($1::uuid[], $2::numeric[], $3::text[], $4::timestamptz[]) AS v(id, captured, status, at) \
                  WHERE holds.hold_id = v.id AND holds.wallet_id = $5",
            )
            .await?;
        c.execute(&stmt, &[&id, &captured, &status, &at, &batch.wallet_id])
            .await?;
    }
    let mut deltas: BTreeMap<Uuid, (Decimal, Decimal)> = BTreeMap::new();
    let mut charges: BTreeMap<(Uuid, Uuid), Decimal> = BTreeMap::new();
    for ch in &batch.hold_changes {
        for d in &ch.budget_deltas {
            let e = deltas.entry(d.budget_id).or_default();
            e.0 += d.used;
            e.1 += d.held;
            if d.charged > Decimal::ZERO {
                *charges.entry((ch.hold.hold_id, d.budget_id)).or_default() += d.charged;
            }
        }
    }
    deltas.retain(|_, (u, h)| !u.is_zero() || !h.is_zero());
    if !deltas.is_empty() {
        let id: Vec<Uuid> = deltas.keys().copied().collect();
        let used: Vec<Decimal> = deltas.values().map(|d| d.0).collect();
        let held: Vec<Decimal> = deltas.values().map(|d| d.1).collect();
        let stmt = c
            .prepare_cached(
                "UPDATE budgets SET used_amount = used_amount + v.used, held_amount = held_amount + v.held, \
                        updated_at = CURRENT_TIMESTAMP \
                   FROM unnest($1::uuid[], $2::numeric[], $3::numeric[]) AS v(id, used, held) \
                  WHERE budgets.budget_id = v.id",
            )
            .await?;
        c.execute(&stmt, &[&id, &used, &held]).await?;
    }
    if !charges.is_empty() {
        let hold: Vec<Uuid> = charges.keys().map(|k| k.0).collect();
        let budget: Vec<Uuid> = charges.keys().map(|k| k.1).collect();
        let amount: Vec<Decimal> = charges.values().copied().collect();
        let stmt = c
            .prepare_cached(
                "INSERT INTO budget_charges (txn_id, budget_id, wallet_id, amount) \
                 SELECT h, b, $4, a FROM unnest($1::uuid[], $2::uuid[], $3::numeric[]) AS v(h, b, a) \
                 ON CONFLICT (txn_id, budget_id) DO UPDATE SET amount = budget_charges.amount + EXCLUDED.amount",
            )
            .await?;
        c.execute(&stmt, &[&hold, &budget, &amount, &batch.wallet_id]).await?;
    }
    Ok(())
}

/// Which holds a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldFilter {
    /// As a reader sees it now (an open hold past its expiry is EXPIRED).
    pub status: Option<HoldStatus>,
    pub page: u32,
    pub limit: u32,
}

impl PgStore {
    /// One hold, as stored (the caller computes what a reader sees at an instant).
    pub async fn hold(&self, hold_id: Uuid) -> Result<Option<Hold>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let stmt = c
            .prepare_cached(&format!("SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = $1"))
            .await
            .map_err(unavailable)?;
        let row = c.query_opt(&stmt, &[&hold_id]).await.map_err(unavailable)?;
        row.as_ref().map(hold_from_row).transpose()
    }

    /// The hold of a wallet with this reference, if any (a booking's hold).
    pub async fn hold_by_reference(
        &self,
        wallet_id: Uuid,
        reference_type: &str,
        reference_id: &str,
    ) -> Result<Option<Hold>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {HOLD_COLUMNS} FROM holds WHERE wallet_id = $1 AND reference_type = $2 AND reference_id = $3"
            ))
            .await
            .map_err(unavailable)?;
        let row = c
            .query_opt(&stmt, &[&wallet_id, &reference_type, &reference_id])
            .await
            .map_err(unavailable)?;
        row.as_ref().map(hold_from_row).transpose()
    }

    /// A page of a wallet's holds, newest first, with the total that match. The status filter is the
    /// status a reader sees at `now`, so EXPIRED finds open holds past their expiry too.
    pub async fn holds_of_wallet(
        &self,
        wallet_id: Uuid,
        filter: HoldFilter,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Hold>, i64), StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let seen =
            "CASE WHEN status IN ('PENDING', 'PARTIALLY_CAPTURED') AND expires_at <= $2 THEN 'EXPIRED' ELSE status END";
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {HOLD_COLUMNS}, count(*) OVER () AS total FROM holds \
                  WHERE wallet_id = $1 AND ($3::text IS NULL OR {seen} = $3) \
                  ORDER BY created_at DESC, hold_id DESC LIMIT $4 OFFSET $5"
            ))
            .await
            .map_err(unavailable)?;
        let status = filter.status.map(HoldStatus::as_str);
        let limit = i64::from(filter.limit);
        let offset = i64::from(filter.page.saturating_sub(1)) * limit;
        let rows = c
            .query(&stmt, &[&wallet_id, &now, &status, &limit, &offset])
            .await
            .map_err(unavailable)?;
        let total = match rows.first() {
            Some(r) => r.try_get("total").map_err(corrupt)?,
            None => self.count_holds(wallet_id, status, now).await?,
        };
        let holds = rows.iter().map(hold_from_row).collect::<Result<_, _>>()?;
        Ok((holds, total))
    }

    /// How many holds match (for a page past the end, which has no row to carry the count).
    async fn count_holds(&self, wallet_id: Uuid, status: Option<&str>, now: DateTime<Utc>) -> Result<i64, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let stmt = c
            .prepare_cached(
                "SELECT count(*) AS total FROM holds WHERE wallet_id = $1 AND ($3::text IS NULL OR \
                 (CASE WHEN status IN ('PENDING', 'PARTIALLY_CAPTURED') AND expires_at <= $2 THEN 'EXPIRED' ELSE status END) = $3)",
            )
            .await
            .map_err(unavailable)?;
        let row = c
            .query_one(&stmt, &[&wallet_id, &now, &status])
            .await
            .map_err(unavailable)?;
        row.try_get("total").map_err(corrupt)
    }

    /// Wallets with open holds past their expiry, oldest expiry first (at most [`MAX_SWEEP_HOLDS`] holds).
    pub async fn wallets_with_expired_holds(&self, now: DateTime<Utc>) -> Result<Vec<Uuid>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let stmt = c
            .prepare_cached(
                "SELECT DISTINCT wallet_id FROM (SELECT wallet_id FROM holds \
                  WHERE status IN ('PENDING', 'PARTIALLY_CAPTURED') AND expires_at <= $1 \
                  ORDER BY expires_at LIMIT $2) due",
            )
            .await
            .map_err(unavailable)?;
        let rows = c.query(&stmt, &[&now, &MAX_SWEEP_HOLDS]).await.map_err(unavailable)?;
        rows.iter().map(|r| r.try_get("wallet_id").map_err(corrupt)).collect()
    }
}
