//! What a commit writes besides the wallet row, each as one set-based statement (`unnest` of column
//! arrays) for all the batches of a group: ledger rows, reference keys, outbox events, idempotent replies,
//! inbox rows and audit rows.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use rust_decimal::Decimal;
use tracing::{error, warn};
use uuid::Uuid;
use wallet_actors::{Entry, Origin};

use crate::views::OutboxEvent;

/// One audit row.
pub struct AuditRow {
    pub actor_id: Option<Uuid>,
    pub actor_role: String,
    pub action: String,
    pub target_type: &'static str,
    pub target_id: String,
    pub outcome: String,
    pub detail: serde_json::Value,
}

impl AuditRow {
    pub(super) fn from_origin(
        origin: &Origin,
        action: &str,
        target_type: &'static str,
        target_id: String,
        outcome: &str,
        detail: serde_json::Value,
    ) -> Self {
        AuditRow {
            actor_id: Some(origin.actor_id),
            actor_role: origin.role.clone(),
            action: action.to_string(),
            target_type,
            target_id,
            outcome: outcome.to_string(),
            detail,
        }
    }
}

pub(super) async fn insert_audit<C: GenericClient>(c: &C, rows: &[AuditRow]) -> Result<(), tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let actor: Vec<Option<Uuid>> = rows.iter().map(|r| r.actor_id).collect();
    let role: Vec<&str> = rows.iter().map(|r| r.actor_role.as_str()).collect();
    let action: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    let ttype: Vec<&str> = rows.iter().map(|r| r.target_type).collect();
    let tid: Vec<&str> = rows.iter().map(|r| r.target_id.as_str()).collect();
    let outcome: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
    let detail: Vec<&serde_json::Value> = rows.iter().map(|r| &r.detail).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO audit_log (actor_id, actor_role, action, target_type, target_id, outcome, detail) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])",
        )
        .await?;
    c.execute(&stmt, &[&actor, &role, &action, &ttype, &tid, &outcome, &detail])
        .await?;
    Ok(())
}

/// Writes outbox rows (in the caller's transaction: the change they report commits with them).
pub(crate) async fn insert_outbox<C: GenericClient>(
    c: &C,
    events: &[OutboxEvent],
) -> Result<(), tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let id: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let et: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    let rk: Vec<&str> = events.iter().map(|e| e.routing_key).collect();
    let agg: Vec<Uuid> = events.iter().map(|e| e.aggregate_id).collect();
    let payload: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO outbox (event_id, event_type, routing_key, aggregate_id, payload) \
             SELECT e, t, r, a, p::json FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[]) AS u(e, t, r, a, p)",
        )
        .await?;
    c.execute(&stmt, &[&id, &et, &rk, &agg, &payload]).await?;
    Ok(())
}

pub(super) async fn insert_entries<C: GenericClient>(c: &C, entries: &[&Entry]) -> Result<(), tokio_postgres::Error> {
    let id: Vec<Uuid> = entries.iter().map(|e| e.txn_id).collect();
    let wallet: Vec<Uuid> = entries.iter().map(|e| e.wallet_id).collect();
    let amount: Vec<Decimal> = entries.iter().map(|e| e.amount.value()).collect();
    let kind: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    let desc: Vec<Option<&str>> = entries.iter().map(|e| e.description.as_deref()).collect();
    let rid: Vec<Option<&str>> = entries.iter().map(|e| e.reference_id.as_deref()).collect();
    let rtype: Vec<Option<&str>> = entries.iter().map(|e| e.reference_type.as_deref()).collect();
    let meta: Vec<Option<&serde_json::Value>> = entries.iter().map(|e| e.metadata.as_ref()).collect();
    let after: Vec<Decimal> = entries.iter().map(|e| e.balance_after.value()).collect();
    let at: Vec<DateTime<Utc>> = entries.iter().map(|e| e.created_at).collect();
    // The row is the posting's audit record too: who asked, in which role (see sql/V7).
    let actor: Vec<Uuid> = entries.iter().map(|e| e.origin.actor_id).collect();
    let role: Vec<&str> = entries.iter().map(|e| e.origin.role.as_str()).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO transactions (txn_id, wallet_id, amount, type, description, reference_id, reference_type, \
                                       metadata, balance_after, created_at, actor_id, actor_role, status) \
             SELECT t.*, 'COMPLETED' FROM unnest($1::uuid[], $2::uuid[], $3::numeric[], $4::text[], $5::text[], \
                                                 $6::text[], $7::text[], $8::jsonb[], $9::numeric[], $10::timestamptz[], \
                                                 $11::uuid[], $12::text[]) AS t",
        )
        .await?;
    c.execute(
        &stmt,
        &[
            &id, &wallet, &amount, &kind, &desc, &rid, &rtype, &meta, &after, &at, &actor, &role,
        ],
    )
    .await?;
    Ok(())
}

/// Inserts the reference keys of `entries`; returns `(index, existing txn id)` for those already taken.
pub(super) async fn claim_references<C: GenericClient>(
    c: &C,
    entries: &[&Entry],
) -> Result<Vec<(usize, Uuid)>, tokio_postgres::Error> {
    let with_ref: Vec<(usize, &Entry)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.reference_id.is_some() && e.reference_type.is_some())
        .map(|(i, e)| (i, *e))
        .collect();
    if with_ref.is_empty() {
        return Ok(vec![]);
    }
    let wallet: Vec<Uuid> = with_ref.iter().map(|(_, e)| e.wallet_id).collect();
    let rtype: Vec<&str> = with_ref
        .iter()
        .map(|(_, e)| e.reference_type.as_deref().unwrap_or_default())
        .collect();
    let rid: Vec<&str> = with_ref
        .iter()
        .map(|(_, e)| e.reference_id.as_deref().unwrap_or_default())
        .collect();
    let kind: Vec<&str> = with_ref.iter().map(|(_, e)| e.kind.as_str()).collect();
    let txn: Vec<Uuid> = with_ref.iter().map(|(_, e)| e.txn_id).collect();
    let amount: Vec<Decimal> = with_ref.iter().map(|(_, e)| e.amount.value()).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO transaction_references (wallet_id, reference_type, reference_id, type, txn_id, amount) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::numeric[]) \
             ON CONFLICT DO NOTHING RETURNING txn_id",
        )
        .await?;
    let inserted = c.query(&stmt, &[&wallet, &rtype, &rid, &kind, &txn, &amount]).await?;
    if inserted.len() == with_ref.len() {
        return Ok(vec![]);
    }
    let stmt = c
        .prepare_cached(
            "SELECT r.reference_type, r.reference_id, r.type, r.txn_id FROM transaction_references r \
             JOIN unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS k(w, rt, ri, ty) \
               ON r.wallet_id = k.w AND r.reference_type = k.rt AND r.reference_id = k.ri AND r.type = k.ty",
        )
        .await?;
    let existing = c.query(&stmt, &[&wallet, &rtype, &rid, &kind]).await?;
    let mut dups = Vec::new();
    for (i, e) in &with_ref {
        let found = existing.iter().find(|r| {
            r.get::<_, &str>(0) == e.reference_type.as_deref().unwrap_or_default()
                && r.get::<_, &str>(1) == e.reference_id.as_deref().unwrap_or_default()
                && r.get::<_, &str>(2) == e.kind.as_str()
        });
        if let Some(r) = found {
            let txn: Uuid = r.get(3);
            if txn != e.txn_id {
                dups.push((*i, txn));
            }
        }
    }
    Ok(dups)
}

/// Records the replies of idempotent requests in the transaction of their effect.
pub(super) async fn complete_idempotency<C: GenericClient>(
    c: &C,
    done: &[(&Origin, u16, String)],
) -> Result<(), tokio_postgres::Error> {
    let done: Vec<_> = done
        .iter()
        .filter_map(|(o, s, b)| o.idempotency.as_ref().map(|t| (t, *s as i16, b)))
        .collect();
    if done.is_empty() {
        return Ok(());
    }
    let caller: Vec<Uuid> = done.iter().map(|(t, _, _)| t.caller).collect();
    let endpoint: Vec<&str> = done.iter().map(|(t, _, _)| t.endpoint.as_str()).collect();
    let key: Vec<&str> = done.iter().map(|(t, _, _)| t.key.as_str()).collect();
    let status: Vec<i16> = done.iter().map(|(_, s, _)| *s).collect();
    let body: Vec<&str> = done.iter().map(|(_, _, b)| b.as_str()).collect();
    let stmt = c
        .prepare_cached(
            "UPDATE idempotency_keys k SET response_status = v.s, response_body = v.b \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int2[], $5::text[]) AS v(c, e, k, s, b) \
             WHERE k.caller = v.c AND k.endpoint = v.e AND k.key = v.k",
        )
        .await?;
    c.execute(&stmt, &[&caller, &endpoint, &key, &status, &body]).await?;
    Ok(())
}

/// Records consumed event ids (inbox) in the transaction of their effect.
pub(super) async fn record_inbox<C: GenericClient>(
    c: &C,
    origins: &[(&Origin, &'static str)],
) -> Result<(), tokio_postgres::Error> {
    let ids: Vec<(Uuid, &str)> = origins
        .iter()
        .filter_map(|(o, a)| o.inbox_event_id.map(|id| (id, *a)))
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let id: Vec<Uuid> = ids.iter().map(|(i, _)| *i).collect();
    let et: Vec<&str> = ids.iter().map(|(_, a)| *a).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO processed_events (event_id, event_type) SELECT * FROM unnest($1::uuid[], $2::text[]) ON CONFLICT DO NOTHING",
        )
        .await?;
    c.execute(&stmt, &[&id, &et]).await?;
    Ok(())
}

pub(super) fn to_json_body<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| {
        error!(error = %e, "serializing a reply failed");
        String::new()
    })
}

pub(super) async fn rollback(tx: Transaction<'_>) {
    if let Err(e) = tx.rollback().await {
        warn!(error = %e, "rollback failed (the connection drops the transaction anyway)");
    }
}
