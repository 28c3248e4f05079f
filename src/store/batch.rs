//! Bulk postings' SQL: the per-item Idempotency-Key claims of a keyed batch (claimed, settled and released
//! many at a time), and the one transaction of an atomic batch.
//!
//! # Item claims
//! A keyed batch gives each item a key of its own (derived from the batch key, on an endpoint of its own),
//! claimed here right after the batch key in one statement. The item's entry carries its ticket, so the
//! wallet's commit fences it and records the item's reply exactly as for a single posting
//! (`store::idempotency`): an item is applied at most once whatever happens to the batch around it. Only
//! the holder of the batch key claims its items, so an unfinished item claim is taken over at once (a new
//! token fences the old attempt's commit), without waiting for its lease.
//!
//! # Atomic batches
//! [`PgStore::commit_atomic`]: one transaction fences the batch key, locks every wallet of the batch
//! `FOR UPDATE` in wallet-id order (the order transfers and the group committer use), loads their state
//! (with their budgets and open holds, as the actor's load does), lets the caller plan (the engine's own rules), writes each wallet's batch with the committer's
//! [`write_batch`] (version guard, references, the refund rule, budgets, outbox, audit) and the batch
//! key's reply, and commits; any refusal rolls everything back.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use serde_json::json;
use uuid::Uuid;
use wallet_actors::store::{Batch, CommitError, Refusal, StoreError};
use wallet_actors::{IdempotencyTicket, Origin, WalletState};

use super::budgets::{BUDGET_COLUMNS, budget_from_row};
use super::committer::write_batch;
use super::idempotency::{IDEMPOTENCY_LEASE_SECS, fence};
use super::read::col;
use super::rows::{AuditRow, complete_idempotency, insert_audit, rollback};
use super::{PgStore, WALLET_COLUMNS, holds, unavailable, wallet_from_row};

/// What became of one item's key when the batch claimed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemClaim {
    /// Ours to run, under this claim token.
    Claimed { token: Uuid },
    /// Settled by an earlier attempt of the batch: its reply, to replay.
    Replay { status: u16, body: String },
    /// The key holds another request (only if the batch key's record was lost while its items' were not).
    Mismatch,
    /// Claimed by someone else between our statements (the key was released and claimed again meanwhile).
    InProgress,
}

/// Why an atomic batch did not commit, when not for its items.
#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    /// The batch key was released or taken over before the commit: nothing was written.
    #[error("the batch's idempotency claim was lost")]
    ClaimLost,
    /// The connection broke during COMMIT: the batch may or may not have committed.
    #[error("the outcome of the batch's commit is unknown")]
    OutcomeUnknown,
    /// Nothing was written (rolled back, or never begun).
    #[error(transparent)]
    Store(StoreError),
}

/// What an atomic batch came to.
pub enum AtomicOutcome<C, T> {
    /// Committed: each wallet's batch, and the planner's context.
    Committed { batches: Vec<Batch>, context: C },
    /// The planner refused it (its reason); nothing was written.
    Refused(T),
    /// The store refused some wallets' batches (by position in the planned batches): references already
    /// taken or refunds over their debits. Nothing was written.
    StoreRefused {
        refused: Vec<(usize, CommitError)>,
        context: C,
    },
}

impl PgStore {
    /// Claims the keys of a batch's items (see the module docs), in order. The usual case, a batch seen
    /// for the first time, is one statement; a retry also takes over the unfinished claims and reads the
    /// settled ones.
    pub async fn claim_batch_items(
        &self,
        caller: Uuid,
        endpoint: &str,
        keys: &[String],
        hash: &[u8],
    ) -> Result<Vec<ItemClaim>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let lease = IDEMPOTENCY_LEASE_SECS as f64;
        let tokens: Vec<Uuid> = keys.iter().map(|_| Uuid::new_v4()).collect();
        let stmt = c
            .prepare_cached(
                "INSERT INTO idempotency_keys (caller, endpoint, key, request_hash, locked_until, claim_token) \
                 SELECT $1, $2, x.k, $3, now() + make_interval(secs => $4), x.t \
                   FROM unnest($5::text[], $6::uuid[]) AS x(k, t) \
                 ON CONFLICT (caller, endpoint, key) DO NOTHING RETURNING key",
            )
            .await
            .map_err(unavailable)?;
        let inserted = c
            .query(&stmt, &[&caller, &endpoint, &hash, &lease, &keys, &tokens])
            .await
            .map_err(unavailable)?;
        let mut claims: HashMap<&str, ItemClaim> = HashMap::with_capacity(keys.len());
        let by_key: HashMap<&str, Uuid> = keys.iter().map(String::as_str).zip(tokens.iter().copied()).collect();
        for row in &inserted {
            let key: &str = col(row, "key")?;
            if let Some((k, t)) = by_key.get_key_value(key) {
                claims.insert(k, ItemClaim::Claimed { token: *t });
            }
        }
        if claims.len() < keys.len() {
            let (rest, rest_tokens): (Vec<&str>, Vec<Uuid>) = keys
                .iter()
                .zip(&tokens)
                .filter(|(k, _)| !claims.contains_key(k.as_str()))
                .map(|(k, t)| (k.as_str(), *t))
                .unzip();
            // Unfinished: take over at once (we hold the batch key). A commit of the old attempt running now
            // holds the row; this waits for it (bounded by the lock timeout) and then sees its reply.
            let taken = c
                .query(
                    "UPDATE idempotency_keys ik SET claim_token = x.t, \
                            locked_until = now() + make_interval(secs => $3), created_at = now() \
                       FROM unnest($4::text[], $5::uuid[]) AS x(k, t) \
                      WHERE ik.caller = $1 AND ik.endpoint = $2 AND ik.key = x.k \
                        AND ik.response_status IS NULL AND ik.request_hash = $6 \
                     RETURNING ik.key AS key, x.t AS token",
                    &[&caller, &endpoint, &lease, &rest, &rest_tokens, &hash],
                )
                .await
                .map_err(unavailable)?;
            for row in &taken {
                let key: &str = col(row, "key")?;
                if let Some(k) = rest.iter().find(|k| **k == key) {
                    claims.insert(
                        k,
                        ItemClaim::Claimed {
                            token: col(row, "token")?,
                        },
                    );
                }
            }
            let unsettled: Vec<&str> = rest.into_iter().filter(|k| !claims.contains_key(k)).collect();
            if !unsettled.is_empty() {
                let rows = c
                    .query(
                        "SELECT key, request_hash, response_status, response_body FROM idempotency_keys \
                          WHERE caller = $1 AND endpoint = $2 AND key = ANY($3)",
                        &[&caller, &endpoint, &unsettled],
                    )
                    .await
                    .map_err(unavailable)?;
                for row in &rows {
                    let key: &str = col(row, "key")?;
                    let Some(k) = unsettled.iter().find(|k| **k == key) else {
                        continue;
                    };
                    let stored: Vec<u8> = col(row, "request_hash")?;
                    let status: Option<i16> = col(row, "response_status")?;
                    let body: Option<String> = col(row, "response_body")?;
                    let claim = match (stored == hash, status, body) {
                        (false, _, _) => ItemClaim::Mismatch,
                        (true, Some(status), Some(body)) => ItemClaim::Replay {
                            status: status as u16,
                            body,
                        },
                        _ => ItemClaim::InProgress,
                    };
                    claims.insert(k, claim);
                }
            }
        }
        Ok(keys
            .iter()
            .map(|k| claims.remove(k.as_str()).unwrap_or(ItemClaim::InProgress))
            .collect())
    }

    /// Records the final replies of refused items (nothing moved for them), while their claims are ours.
    pub async fn complete_batch_items(&self, done: &[(&IdempotencyTicket, u16, &str)]) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let origins: Vec<Origin> = done
            .iter()
            .map(|(t, _, _)| Origin {
                idempotency: Some((*t).clone()),
                ..Origin::default()
            })
            .collect();
        let replies: Vec<(&Origin, u16, String)> = origins
            .iter()
            .zip(done)
            .map(|(o, (_, status, body))| (o, *status, body.to_string()))
            .collect();
        let c = self.pool.get().await.map_err(unavailable)?;
        complete_idempotency(&c, &replies).await.map_err(unavailable)
    }

    /// Gives back the claims of items that were not applied, so a retry of the batch runs them at once. A
    /// released claim fences its commit off; a claim that has its reply meanwhile is left alone.
    pub async fn release_batch_items(&self, tickets: &[&IdempotencyTicket]) -> Result<(), StoreError> {
        if tickets.is_empty() {
            return Ok(());
        }
        let caller: Vec<Uuid> = tickets.iter().map(|t| t.caller).collect();
        let endpoint: Vec<&str> = tickets.iter().map(|t| t.endpoint.as_str()).collect();
        let key: Vec<&str> = tickets.iter().map(|t| t.key.as_str()).collect();
        let token: Vec<Uuid> = tickets.iter().map(|t| t.token).collect();
        let c = self.pool.get().await.map_err(unavailable)?;
        c.execute(
            "DELETE FROM idempotency_keys ik USING unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[]) AS x(c, e, k, t) \
              WHERE ik.caller = x.c AND ik.endpoint = x.e AND ik.key = x.k AND ik.claim_token = x.t \
                AND ik.response_status IS NULL",
            &[&caller, &endpoint, &key, &token],
        )
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    /// Commits an atomic batch (see the module docs). `wallet_ids` are the batch's wallets; `plan` gets
    /// their locked, committed state (a missing wallet is absent) and returns one batch per wallet it
    /// plans, with a context for `reply`, or its refusal; `reply` gives the batch key's 201 body, written
    /// in the same transaction. After the commit the wallet cache holds the new states.
    pub async fn commit_atomic<C, T>(
        &self,
        ticket: Option<&IdempotencyTicket>,
        wallet_ids: &[Uuid],
        plan: impl FnOnce(&HashMap<Uuid, WalletState>) -> Result<(Vec<Batch>, C), T>,
        reply: impl FnOnce(&[Batch], &C) -> String,
    ) -> Result<AtomicOutcome<C, T>, AtomicError> {
        let st = |e: tokio_postgres::Error| AtomicError::Store(unavailable(e));
        let mut client = self.pool.get().await.map_err(|e| AtomicError::Store(unavailable(e)))?;
        let tx = client.transaction().await.map_err(st)?;
        let claim: Vec<&IdempotencyTicket> = ticket.into_iter().collect();
        if !fence(&tx, &claim).await.map_err(st)?.is_empty() {
            rollback(tx).await;
            return Err(AtomicError::ClaimLost);
        }
        let states = match lock_wallets(&tx, wallet_ids).await {
            Ok(s) => s,
            Err(e) => {
                rollback(tx).await;
                return Err(AtomicError::Store(e));
            }
        };
        let (batches, context) = match plan(&states) {
            Ok(planned) => planned,
            Err(refusal) => {
                rollback(tx).await;
                return Ok(AtomicOutcome::Refused(refusal));
            }
        };
        let mut refused = Vec::new();
        for (i, batch) in batches.iter().enumerate() {
            match write_batch(&tx, batch).await {
                Ok(()) => {}
                // Judged by the store without a failed statement: the transaction is still usable, so the
                // other wallets are judged too and every refused item is named.
                Err(e @ (CommitError::DuplicateReferences(_) | CommitError::RefundsExceedDebits(_))) => {
                    refused.push((i, e))
                }
                Err(e) => {
                    rollback(tx).await;
                    return Err(AtomicError::Store(commit_failure(e)));
                }
            }
        }
        if !refused.is_empty() {
            rollback(tx).await;
            return Ok(AtomicOutcome::StoreRefused { refused, context });
        }
        if let Some(t) = ticket {
            let origin = Origin {
                idempotency: Some(t.clone()),
                ..Origin::default()
            };
            let body = reply(&batches, &context);
            complete_idempotency(&tx, &[(&origin, 201, body)]).await.map_err(st)?;
        }
        tx.commit().await.map_err(|e| {
            tracing::warn!(error = %e, "atomic batch: the commit's outcome is unknown");
            AtomicError::OutcomeUnknown
        })?;
        let wallets: Vec<Uuid> = batches.iter().map(|b| b.wallet_id).collect();
        self.reads.note_commit(&client, &self.pool, &wallets).await;
        self.outbox_written.notify_one();
        for b in &batches {
            if b.changes_wallet() {
                self.cache.put(&b.after);
            }
        }
        Ok(AtomicOutcome::Committed { batches, context })
    }

    /// Writes the audit rows of refused items (a refused posting changes nothing but the audit log).
    pub async fn audit_refusals(&self, refused: &[(Uuid, Refusal)]) -> Result<(), StoreError> {
        if refused.is_empty() {
            return Ok(());
        }
        let rows: Vec<AuditRow> = refused
            .iter()
            .map(|(wallet_id, r)| {
                AuditRow::from_origin(
                    &r.origin,
                    r.action,
                    "wallet",
                    wallet_id.to_string(),
                    r.rejection.code(),
                    json!({"amount": r.amount.map(|a| a.to_string()), "detail": r.rejection.to_string(), "batch": true}),
                )
            })
            .collect();
        let c = self.pool.get().await.map_err(unavailable)?;
        insert_audit(&c, &rows).await.map_err(unavailable)
    }
}

/// A write failure of an atomic batch as a store error (it rolled back, so nothing was applied).
fn commit_failure(e: CommitError) -> StoreError {
    match e {
        CommitError::Refused { reason } => StoreError::Refused(reason),
        CommitError::Unavailable { reason, .. } => StoreError::Unreachable(reason),
        other => StoreError::Other(other.to_string()),
    }
}

/// Locks the wallets' rows in wallet-id order and loads their state with their live budgets and open
/// holds (what `PgStore::load` loads for a wallet's actor).
async fn lock_wallets<C: GenericClient>(c: &C, ids: &[Uuid]) -> Result<HashMap<Uuid, WalletState>, StoreError> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let rows = c
        .query(
            &format!(
                "SELECT {WALLET_COLUMNS} FROM wallets w JOIN users u USING (user_id) \
                  WHERE w.wallet_id = ANY($1) ORDER BY w.wallet_id FOR UPDATE OF w"
            ),
            &[&ids],
        )
        .await
        .map_err(unavailable)?;
    let mut states = HashMap::with_capacity(rows.len());
    for row in &rows {
        let w = wallet_from_row(row)?;
        states.insert(w.wallet_id, w);
    }
    let budgets = c
        .query(
            &format!(
                "SELECT {BUDGET_COLUMNS} FROM budgets WHERE wallet_id = ANY($1) AND status <> 'EXPIRED' \
                 ORDER BY created_at"
            ),
            &[&ids],
        )
        .await
        .map_err(unavailable)?;
    for row in &budgets {
        let b = budget_from_row(row)?;
        if let Some(w) = states.get_mut(&b.wallet_id) {
            w.budgets.push(b);
        }
    }
    // The open holds too, as `PgStore::load` gives the actor: a debit is judged against the available
    // balance (balance less what they reserve), so without them a batch could spend reserved money. The
    // wallet rows are locked, so no hold of these wallets changes until the commit.
    for h in holds::load_open_of(c, &ids).await? {
        if let Some(w) = states.get_mut(&h.wallet_id) {
            w.holds.push(h);
        }
    }
    Ok(states)
}
