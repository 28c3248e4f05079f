//! Bulk postings (`POST /transactions/batch`) as a use case: many credits and debits in one request, each
//! judged by every rule of a single posting, either independently or all-or-nothing.
//!
//! # Independent (the default)
//! Each item stands alone and is answered with what a single posting would have answered. The items go
//! through the engine: each wallet's items are handed to its actor together
//! ([`wallet_actors::Engine::execute_many`]), in batch order, so the actor plans them side by side (many in
//! one commit, through the group committer) and items on one wallet apply in their order. Wallets run
//! concurrently, at most [`BATCH_WALLET_CONCURRENCY`] at a time.
//!
//! # Atomic
//! One database transaction for every item ([`crate::store::PgStore::commit_atomic`]): the wallets are
//! locked in id order, each wallet's items are planned by the engine's own pure planning
//! ([`wallet_actors::command::plan_postings`]) and written with the store's batch writer. Any refusal rolls
//! everything back and the batch answers 422 `BATCH_REFUSED` naming each refused item's problem. After the
//! commit the wallets' actors drop their cached state (`Engine::invalidate`).
//!
//! # Exactly once under one Idempotency-Key
//! [`Service::post_batch_keyed`] runs the batch through the keyed machinery of every keyed operation
//! (`Service::keyed`, `service::idempotency`): the batch key is claimed first, a repeat replays its
//! record, and a failure of the batch as a whole settles the key as any keyed failure does (released when
//! not applied, resolved when the outcome is unknown). A batch that ran settles its key itself. Atomic: the
//! batch key's reply is written in the batch's own transaction, fenced by its claim token; a refused batch
//! records its 422. Independent: each item gets a
//! key of its own ([`item_key`], on [`ITEM_ENDPOINT`]), claimed in one statement after the batch key; the
//! item's entry carries that ticket, so the wallet's commit fences it and records the item's reply in the
//! item's own commit. A refused item's reply is recorded after it; an item that was not applied (503) has
//! its key released. When every item is settled, the batch key gets the whole response (replayed byte for
//! byte from then on); otherwise the batch key is released, and a retry replays the settled items from
//! their keys and runs the others. An item whose commit went silent is resolved through its key by the
//! same loop as a single keyed request (`Service::resolve`). A crash anywhere leaves each item applied at
//! most once: its effect and its reply commit together.
//!
//! Every problem an item or the batch answers is rendered here with [`Answer`] (`crate::problem`), the
//! very text the adapter would send, so what a key records is what a replay sends.

use std::collections::{BTreeMap, HashMap};

use futures_util::StreamExt;
use http::StatusCode;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use wallet_actors::command::plan_postings;
use wallet_actors::store::{CommitError, Refusal};
use wallet_actors::{Applied, Batch, Command, IdempotencyTicket, Origin, Rejection, Request, StoreError};

use super::idempotency::{KeyRequest, Keyed, KeyedError};
use super::{Posting, Service};
use crate::problem::{Answer, ApiError};
use crate::store::{AtomicError, AtomicOutcome, ItemClaim, Resolution};
use crate::views::{ItemResult, atomic_batch_reply, batch_reply, posting_reply, with_results};

/// Most items in one batch (more → 400).
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Wallets whose items are in the engine at once for one independent batch: enough to keep both group
/// committers full, few enough that one batch cannot flood the queues of every wallet it touches.
pub const BATCH_WALLET_CONCURRENCY: usize = 256;
/// The endpoint the batch key is scoped to.
pub const BATCH_ENDPOINT: &str = "POST /transactions/batch";
/// The endpoint the items' derived keys are scoped to (so they can never meet a client's own keys).
pub const ITEM_ENDPOINT: &str = "POST /transactions/batch#item";
/// Longest key the key column holds (`VARCHAR(255)`, the longest key a client may send); an item key that
/// would be longer is hashed.
const MAX_STORED_KEY_LEN: usize = super::idempotency::MAX_KEY_LEN;

/// One item: a posting on a wallet.
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub wallet_id: Uuid,
    pub posting: Posting,
}

/// A validated batch (1 to [`MAX_BATCH_ITEMS`] items).
#[derive(Debug, Clone)]
pub struct BatchPostings {
    pub atomic: bool,
    pub items: Vec<BatchItem>,
}

/// The batch's answer: its status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReply {
    pub status: u16,
    pub body: String,
}

/// Why one item was not applied: what a single posting would have answered.
#[derive(Debug, Clone, Copy)]
enum ItemProblem<'a> {
    /// What the engine (or the store through it) answered.
    Rejected(&'a Rejection),
    /// The item's key holds another request.
    KeyReused,
    /// The item's key is being run by someone else right now.
    InProgress,
}

impl Answer for ItemProblem<'_> {
    fn answer(&self) -> ApiError {
        match self {
            ItemProblem::Rejected(r) => r.answer(),
            ItemProblem::KeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                "this item's derived Idempotency-Key was used with a different request",
            ),
            ItemProblem::InProgress => ApiError::new(
                StatusCode::CONFLICT,
                "IDEMPOTENCY_IN_PROGRESS",
                "this item is being processed by another attempt of the batch; retry the batch",
            ),
        }
    }
}

/// An item's problem as its status and problem document (JSON text).
fn item_problem(problem: ItemProblem<'_>) -> (u16, String) {
    let e = problem.answer();
    (e.status.as_u16(), e.body())
}

/// The 422 `BATCH_REFUSED` document of an atomic batch, naming each refused item's problem.
fn batch_refused(refused: &[ItemResult]) -> (u16, String) {
    let e = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "BATCH_REFUSED",
        format!(
            "{} of the batch's items would be refused, so none was applied; `results` names each",
            refused.len()
        ),
    );
    (e.status.as_u16(), with_results(&e.body(), refused))
}

/// Why a batch as a whole failed (its items' own outcomes are in the reply).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The batch key was released or taken over before the commit: nothing was applied.
    #[error("the batch's Idempotency-Key was released or taken over before it committed")]
    ClaimLost,
    /// The atomic commit's outcome could not be learnt: it may have been applied.
    #[error("the outcome of the batch's commit is unknown")]
    OutcomeUnknown,
}

impl Answer for BatchError {
    fn answer(&self) -> ApiError {
        match self {
            BatchError::Store(e) => e.answer(),
            BatchError::ClaimLost => Rejection::ClaimLost.answer(),
            BatchError::OutcomeUnknown => ApiError::outcome_unknown(),
        }
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        match e {
            // Logged with its cause, as every store failure is.
            BatchError::Store(e) => e.into(),
            other => other.answer(),
        }
    }
}

/// The derived key of item `index` of the batch keyed `batch_key`: `"{batch_key}#{index}"`, or the batch
/// key's SHA-256 (hex) in its place when that would not fit the key column.
pub fn item_key(batch_key: &str, index: usize) -> String {
    let suffix = format!("#{index}");
    if batch_key.len() + suffix.len() <= MAX_STORED_KEY_LEN {
        format!("{batch_key}{suffix}")
    } else {
        format!("{}{suffix}", hex::encode(Sha256::digest(batch_key.as_bytes())))
    }
}

/// What every item key of a batch stores as its request: the batch's items, by content. One hash for all
/// of them: the batch key's own record already tells one request from another, this only keeps an item key
/// from ever replaying for another batch.
pub fn items_hash(items: &[BatchItem]) -> Vec<u8> {
    let mut h = Sha256::new();
    for item in items {
        let p = &item.posting;
        // Amounts as their two-decimal text, so "10" and "10.00" are one request.
        let text = format!(
            "{}|{:?}|{}|{:?}|{:?}|{:?}|{}",
            item.wallet_id,
            p.direction,
            p.amount,
            p.description,
            p.reference_id,
            p.reference_type,
            p.metadata.as_ref().map(|m| m.to_string()).unwrap_or_default()
        );
        h.update(text.as_bytes());
        h.update([0]);
    }
    h.finalize().to_vec()
}

fn post_command(p: &Posting) -> Command {
    Command::Post {
        direction: p.direction,
        amount: p.amount,
        description: p.description.clone(),
        reference_id: p.reference_id.clone(),
        reference_type: p.reference_type.clone(),
        metadata: p.metadata.clone(),
    }
}

/// How an item's outcome settles its key.
enum Settle {
    /// Its reply is recorded (applied, replayed, or refused and to be recorded).
    Done,
    /// Not applied, or not known: the batch is not settled.
    Open,
}

impl Service {
    /// [`Service::post_batch`] under the batch's Idempotency-Key (see the module docs). `origin` is the
    /// caller's (without a ticket).
    pub async fn post_batch_keyed(
        &self,
        batch: BatchPostings,
        origin: Origin,
        key: Option<KeyRequest>,
    ) -> Result<Keyed<BatchReply>, KeyedError<BatchError>> {
        self.keyed(key, |ticket| {
            self.post_batch(
                batch,
                Origin {
                    idempotency: ticket,
                    ..origin
                },
            )
        })
        .await
    }

    /// Runs a bulk posting. `origin` carries the batch key's ticket when the request had an
    /// Idempotency-Key (claimed by [`Service::post_batch_keyed`]); a batch that runs settles that key
    /// itself (its reply recorded, or released for a retry), a failure of the whole batch leaves it to
    /// the keyed machinery.
    pub async fn post_batch(&self, batch: BatchPostings, origin: Origin) -> Result<BatchReply, BatchError> {
        if batch.atomic {
            self.post_atomic(batch.items, origin).await
        } else {
            self.post_independent(batch.items, origin).await
        }
    }

    async fn post_independent(&self, items: Vec<BatchItem>, origin: Origin) -> Result<BatchReply, BatchError> {
        let n = items.len();
        let batch_ticket = origin.idempotency.clone();
        let mut results: Vec<Option<(ItemResult, Settle)>> = (0..n).map(|_| None).collect();
        let mut tickets: Vec<Option<IdempotencyTicket>> = vec![None; n];
        if let Some(bt) = &batch_ticket {
            let keys: Vec<String> = (0..n).map(|i| item_key(&bt.key, i)).collect();
            let hash = items_hash(&items);
            // A failure here ran nothing: the keyed machinery releases the batch key.
            let claims = self
                .store
                .claim_batch_items(bt.caller, ITEM_ENDPOINT, &keys, &hash)
                .await?;
            for (i, (claim, key)) in claims.into_iter().zip(keys).enumerate() {
                let answered =
                    |(status, body): (u16, String), settle| Some((ItemResult { index: i, status, body }, settle));
                match claim {
                    ItemClaim::Claimed { token } => {
                        tickets[i] = Some(IdempotencyTicket {
                            caller: bt.caller,
                            endpoint: ITEM_ENDPOINT.into(),
                            key,
                            token,
                        })
                    }
                    ItemClaim::Replay { status, body } => results[i] = answered((status, body), Settle::Done),
                    ItemClaim::Mismatch => results[i] = answered(item_problem(ItemProblem::KeyReused), Settle::Done),
                    ItemClaim::InProgress => results[i] = answered(item_problem(ItemProblem::InProgress), Settle::Open),
                }
            }
        }

        // Each wallet's items, in batch order; wallets in order of first appearance.
        let mut groups: Vec<(Uuid, Vec<usize>)> = Vec::new();
        let mut group_of: HashMap<Uuid, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            if results[i].is_some() {
                continue;
            }
            let g = *group_of.entry(item.wallet_id).or_insert_with(|| {
                groups.push((item.wallet_id, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        let runs = futures_util::stream::iter(groups.into_iter().map(|(wallet_id, indexes)| {
            let requests: Vec<Request> = indexes
                .iter()
                .map(|&i| Request {
                    command: post_command(&items[i].posting),
                    origin: Origin {
                        idempotency: tickets[i].clone(),
                        ..origin.clone()
                    },
                })
                .collect();
            async move { (indexes, self.engine.execute_many(wallet_id, requests).await) }
        }))
        .buffer_unordered(BATCH_WALLET_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;

        let mut to_complete: Vec<(usize, u16, String)> = Vec::new();
        let mut to_release: Vec<usize> = Vec::new();
        for (indexes, answers) in runs {
            for (i, answer) in indexes.into_iter().zip(answers) {
                let (status, body, settle) = match answer {
                    Ok(Applied::Posted(e)) => (201, posting_reply(&e), Settle::Done),
                    Ok(_) => {
                        let (s, b) = item_problem(ItemProblem::Rejected(&super::unexpected("a bulk posting")));
                        to_release.push(i);
                        (s, b, Settle::Open)
                    }
                    Err(Rejection::OutcomeUnknown) if tickets[i].is_some() => {
                        // The same resolution as a single keyed request's.
                        let resolved = match tickets[i].as_ref() {
                            Some(t) => self.resolve(t).await,
                            None => None,
                        };
                        match resolved {
                            // The item's commit recorded its reply: that is its answer.
                            Some(Resolution::Replied { status, body }) => (status, body, Settle::Done),
                            // Released: fenced off, certainly not applied.
                            Some(Resolution::NotApplied) => {
                                let unavailable = Rejection::Unavailable("an item's commit went silent".into());
                                let (s, b) = item_problem(ItemProblem::Rejected(&unavailable));
                                (s, b, Settle::Open)
                            }
                            None => {
                                let (s, b) = item_problem(ItemProblem::Rejected(&Rejection::OutcomeUnknown));
                                (s, b, Settle::Open)
                            }
                        }
                    }
                    Err(r) => {
                        let (s, b) = item_problem(ItemProblem::Rejected(&r));
                        if s < 500 {
                            to_complete.push((i, s, b.clone()));
                            (s, b, Settle::Done)
                        } else {
                            if let Rejection::Unavailable(reason) = &r {
                                tracing::warn!(%reason, "a batch item was not applied: dependency unavailable");
                            }
                            to_release.push(i);
                            (s, b, Settle::Open)
                        }
                    }
                };
                results[i] = Some((ItemResult { index: i, status, body }, settle));
            }
        }

        let mut recorded = true;
        let done: Vec<(&IdempotencyTicket, u16, &str)> = to_complete
            .iter()
            .filter_map(|(i, s, b)| tickets[*i].as_ref().map(|t| (t, *s, b.as_str())))
            .collect();
        if let Err(e) = self.store.complete_batch_items(&done).await {
            // Those keys stay claimed unfinished; a retry of the batch takes them over and judges the items
            // again (a refusal moved nothing).
            tracing::warn!(error = %e, "could not record the replies of refused batch items");
            recorded = false;
        }
        let open: Vec<&IdempotencyTicket> = to_release.iter().filter_map(|i| tickets[*i].as_ref()).collect();
        if let Err(e) = self.store.release_batch_items(&open).await {
            tracing::warn!(error = %e, "could not release the keys of batch items that were not applied");
        }

        let mut settled = recorded;
        let results: Vec<ItemResult> = results
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r {
                Some((r, settle)) => {
                    settled &= matches!(settle, Settle::Done);
                    r
                }
                None => {
                    // Every item was answered above; an item left out would be a programmer error.
                    settled = false;
                    let (status, body) = item_problem(ItemProblem::Rejected(&super::unexpected("a bulk item")));
                    ItemResult { index: i, status, body }
                }
            })
            .collect();
        let body = batch_reply(&results);
        if let Some(bt) = &batch_ticket {
            if settled {
                if let Err(e) = self.store.complete_idempotency(bt, 200, &body).await {
                    // The items are settled in their own keys: a retry after the lease replays them all.
                    tracing::warn!(error = %e, "could not record a batch's reply");
                }
            } else {
                self.release_quietly(bt).await;
            }
        }
        Ok(BatchReply { status: 200, body })
    }

    async fn post_atomic(&self, items: Vec<BatchItem>, origin: Origin) -> Result<BatchReply, BatchError> {
        let ticket = origin.idempotency.clone();
        // The entries carry no key of their own: the batch key's reply commits with them.
        let entry_origin = Origin {
            idempotency: None,
            ..origin.clone()
        };
        let mut by_wallet: BTreeMap<Uuid, Vec<usize>> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            by_wallet.entry(item.wallet_id).or_default().push(i);
        }
        let wallet_ids: Vec<Uuid> = by_wallet.keys().copied().collect();
        let limits = self.engine.limits();

        // Planning, inside the transaction: one batch per wallet, and where each item's entry is in it.
        // Refused: each refused item with its rejection, and the refusals' audit rows.
        type Refused = (Vec<(usize, Rejection)>, Vec<(Uuid, Refusal)>);
        // Planned: one batch per wallet, and each item's (batch, entry) position.
        type Planned = (Vec<Batch>, Vec<(usize, usize)>);
        let plan = |states: &HashMap<Uuid, wallet_actors::WalletState>| -> Result<Planned, Refused> {
            let mut batches = Vec::with_capacity(by_wallet.len());
            let mut position = vec![(0, 0); items.len()];
            let mut refused = Vec::new();
            let mut audit = Vec::new();
            for (wallet_id, indexes) in &by_wallet {
                let Some(state) = states.get(wallet_id) else {
                    refused.extend(indexes.iter().map(|&i| (i, Rejection::WalletNotFound)));
                    continue;
                };
                let requests: Vec<Request> = indexes
                    .iter()
                    .map(|&i| Request {
                        command: post_command(&items[i].posting),
                        origin: entry_origin.clone(),
                    })
                    .collect();
                let planned = plan_postings(state, limits, &requests);
                for (k, outcome) in planned.outcomes.iter().enumerate() {
                    match outcome {
                        Ok(entry) => position[indexes[k]] = (batches.len(), *entry),
                        Err(r) => refused.push((indexes[k], r.clone())),
                    }
                }
                audit.extend(planned.batch.refusals.iter().map(|r| (*wallet_id, r.clone())));
                batches.push(planned.batch);
            }
            if refused.is_empty() {
                Ok((batches, position))
            } else {
                Err((refused, audit))
            }
        };
        let transactions = |batches: &[Batch], position: &Vec<(usize, usize)>| -> Vec<ItemResult> {
            position
                .iter()
                .enumerate()
                .map(|(i, &(b, e))| ItemResult {
                    index: i,
                    status: 201,
                    body: posting_reply(&batches[b].entries[e]),
                })
                .collect()
        };
        let outcome = self
            .store
            .commit_atomic(ticket.as_ref(), &wallet_ids, plan, |batches, position| {
                atomic_batch_reply(&transactions(batches, position))
            })
            .await;

        let refused = match outcome {
            Ok(AtomicOutcome::Committed { batches, context }) => {
                for b in &batches {
                    // Their actors (here) must not plan on the state they had before this commit.
                    self.engine.invalidate(b.wallet_id);
                }
                let body = atomic_batch_reply(&transactions(&batches, &context));
                return Ok(BatchReply { status: 201, body });
            }
            Ok(AtomicOutcome::Refused((refused, audit))) => {
                if let Err(e) = self.store.audit_refusals(&audit).await {
                    tracing::warn!(error = %e, "could not audit the refusals of an atomic batch");
                }
                refused
            }
            Ok(AtomicOutcome::StoreRefused { refused, context }) => {
                // Back from (batch, entry) to the item.
                let item_of: HashMap<(usize, usize), usize> =
                    context.iter().enumerate().map(|(i, &pos)| (pos, i)).collect();
                let mut out = Vec::new();
                for (b, e) in refused {
                    let per_entry: Vec<(usize, Rejection)> = match e {
                        CommitError::DuplicateReferences(d) => d
                            .into_iter()
                            .map(|(entry, existing_txn_id)| (entry, Rejection::DuplicateReference { existing_txn_id }))
                            .collect(),
                        CommitError::RefundsExceedDebits(o) => o
                            .into_iter()
                            .map(|(entry, debited)| (entry, Rejection::RefundExceedsDebit { debited }))
                            .collect(),
                        _ => vec![],
                    };
                    out.extend(
                        per_entry
                            .into_iter()
                            .filter_map(|(entry, r)| item_of.get(&(b, entry)).map(|&i| (i, r))),
                    );
                }
                out
            }
            // Nothing was written; the keyed machinery releases the batch key (or, for an unknown
            // outcome, resolves it: the reply the commit recorded, or fenced off and not applied).
            Err(AtomicError::ClaimLost) => return Err(BatchError::ClaimLost),
            Err(AtomicError::Store(e)) => return Err(e.into()),
            Err(AtomicError::OutcomeUnknown) => return Err(BatchError::OutcomeUnknown),
        };
        let mut refused: Vec<ItemResult> = refused
            .into_iter()
            .map(|(index, r)| {
                let (status, body) = item_problem(ItemProblem::Rejected(&r));
                ItemResult { index, status, body }
            })
            .collect();
        refused.sort_by_key(|r| r.index);
        refused.dedup_by_key(|r| r.index);
        let (status, body) = batch_refused(&refused);
        if let Some(t) = &ticket
            && let Err(e) = self.store.complete_idempotency(t, status, &body).await
        {
            // The key stays claimed until its lease ends; a retry then takes it over (nothing moved).
            tracing::warn!(error = %e, "could not record a refused batch's reply");
        }
        Ok(BatchReply { status, body })
    }

    /// Releases a claim after a failure; a failure to do so only delays a retry until the lease ends.
    async fn release_quietly(&self, t: &IdempotencyTicket) {
        if let Err(e) = self.store.release_idempotency(t).await {
            tracing::warn!(error = %e, "could not release a batch's Idempotency-Key");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_key_is_the_batch_key_and_its_index_and_always_fits_the_column() {
        assert_eq!(item_key("order-7", 3), "order-7#3");
        let long = "k".repeat(255);
        let derived = item_key(&long, 999);
        assert!(derived.len() <= MAX_STORED_KEY_LEN, "{}", derived.len());
        assert!(derived.ends_with("#999"));
        assert_ne!(item_key(&long, 1), item_key(&"k".repeat(254), 1));
    }
}
