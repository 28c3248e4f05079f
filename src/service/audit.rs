//! The tamper-evident ledger's use cases: verify (recompute the chains and the checkpoints, name the first
//! broken row) and checkpoints (create, read the latest). The CLI (`wallet-service audit ...`) and
//! `GET /admin/audit/verify` call these; the SQL is `store::audit`'s, the encoding `wallet_actors::chain`'s.
//!
//! What each tampering looks like to verify, walking a wallet's rows by seq from its anchor (the genesis
//! head, or with `--since` its head at that checkpoint):
//! - a row's content changed (amount, metadata, ...): its hash no longer matches its columns (`hash
//!   mismatch`);
//! - a row deleted: the seq after it is missing (`missing seq`), or, for the last row, the wallet's head
//!   names a row that is not there (`head mismatch`);
//! - two rows swapped (their seqs exchanged): a row no longer links to the row before it (`order`);
//! - a chain rewritten from the tampered row on, hashes recomputed and head updated (only a superuser who
//!   knows the encoding can): the heads the checkpoints recorded no longer match (`checkpoint mismatch`);
//! - a checkpoint edited: its root no longer matches its heads, or the next one's previous root.

use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;
use wallet_actors::StoreError;
use wallet_actors::chain::{self, GENESIS, Hash, Head};

use crate::store::audit::{AuditStore, Checkpoint, StoredRow, WalletHead};

/// How often a checkpoint is written (when some wallet head moved).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(300);

/// What is wrong with the first broken row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// The row's hash is not the hash of its columns after its `prev_hash`: its content was changed.
    HashMismatch,
    /// The seq before this row's is not on the chain: a row was deleted.
    MissingSeq { expected: i64 },
    /// The row does not link to the row before it (its `prev_hash` is another row's hash), or repeats a
    /// seq: rows were moved.
    Order,
    /// The wallet's stored head is not its last row: rows were deleted from the end, or the head edited.
    HeadMismatch { head_seq: i64, last_seq: i64 },
    /// A row that must be on the wallet's chain carries no link.
    Unchained,
    /// The row was hashed with an encoding this build does not know, or its hash columns are malformed.
    UnknownVersion,
    /// A checkpoint recorded another hash (or a seq beyond the chain) for this wallet at this seq.
    CheckpointMismatch { checkpoint_id: i64 },
    /// A checkpoint's root is not the root of its heads after its previous root, or it does not chain to
    /// the checkpoint before it.
    CheckpointRoot,
}

impl Fault {
    /// A stable name of the fault.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::HashMismatch => "hash_mismatch",
            Fault::MissingSeq { .. } => "missing_seq",
            Fault::Order => "order",
            Fault::HeadMismatch { .. } => "head_mismatch",
            Fault::Unchained => "unchained",
            Fault::UnknownVersion => "unknown_version",
            Fault::CheckpointMismatch { .. } => "checkpoint_mismatch",
            Fault::CheckpointRoot => "checkpoint_root",
        }
    }

    /// The words the CLI prints.
    pub fn describe(&self) -> String {
        match self {
            Fault::HashMismatch => "hash mismatch".into(),
            Fault::MissingSeq { expected } => format!("missing seq {expected}"),
            Fault::Order => "order".into(),
            Fault::HeadMismatch { head_seq, last_seq } => {
                format!("head mismatch (head seq {head_seq}, last row seq {last_seq})")
            }
            Fault::Unchained => "unchained row".into(),
            Fault::UnknownVersion => "unknown chain version".into(),
            Fault::CheckpointMismatch { checkpoint_id } => format!("checkpoint {checkpoint_id} mismatch"),
            Fault::CheckpointRoot => "checkpoint root mismatch".into(),
        }
    }
}

/// The first broken row: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    pub wallet_id: Option<Uuid>,
    pub seq: Option<i64>,
    /// `transactions`, `audit_log`, `wallets` (the head) or `audit_checkpoints`.
    pub table: &'static str,
    pub id: String,
    pub what: Fault,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        write!(
            f,
            "wallet {} seq {} {} {}: {}",
            opt(self.wallet_id.map(|w| w.to_string())),
            opt(self.seq.map(|s| s.to_string())),
            self.table,
            self.id,
            self.what.describe()
        )
    }
}

/// What a verify found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub ok: bool,
    pub wallets: u64,
    pub rows: u64,
    pub checkpoints: u64,
    /// The first broken row (`None` when `ok`).
    pub broken: Option<Broken>,
}

/// Why a verify could not run (not a verdict on the chains).
#[derive(Debug, Clone, thiserror::Error)]
pub enum VerifyError {
    #[error("no such wallet")]
    WalletNotFound,
    #[error("no such checkpoint")]
    CheckpointNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to verify.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope {
    /// One wallet's chain (and the checkpointed heads of it), or every wallet and every checkpoint.
    pub wallet: Option<Uuid>,
    /// Trust the database up to this checkpoint: each wallet's rows are verified from its head as of it.
    pub since: Option<i64>,
}

/// Recomputes the chains (and, for the whole database, the checkpoints) and names the first broken row.
pub async fn verify(store: &AuditStore<'_>, scope: Scope) -> Result<Verified, VerifyError> {
    let mut seen = Verified {
        ok: true,
        wallets: 0,
        rows: 0,
        checkpoints: 0,
        broken: None,
    };
    let checkpoints = store.checkpoints().await?;
    if let Some(since) = scope.since
        && !checkpoints.iter().any(|c| c.checkpoint_id == since)
    {
        return Err(VerifyError::CheckpointNotFound);
    }
    if scope.wallet.is_none() {
        seen.checkpoints = checkpoints.len() as u64;
        if let Some(b) = verify_checkpoints(store, &checkpoints).await? {
            return Ok(failed(seen, b));
        }
    }
    if let Some(wallet_id) = scope.wallet {
        let w = store.wallet_head(wallet_id).await?.ok_or(VerifyError::WalletNotFound)?;
        let (rows, broken) = verify_wallet(store, w, scope.since).await?;
        seen.wallets = 1;
        seen.rows = rows;
        return Ok(match broken {
            Some(b) => failed(seen, b),
            None => seen,
        });
    }
    let mut after = None;
    loop {
        let page = store.wallet_heads(after).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.wallet_id);
        for w in page {
            let (rows, broken) = verify_wallet(store, w, scope.since).await?;
            seen.wallets += 1;
            seen.rows += rows;
            if let Some(b) = broken {
                return Ok(failed(seen, b));
            }
        }
    }
    Ok(seen)
}

fn failed(mut seen: Verified, broken: Broken) -> Verified {
    seen.ok = false;
    seen.broken = Some(broken);
    seen
}

/// Each checkpoint's root recomputed from its heads and the previous checkpoint's root.
async fn verify_checkpoints(store: &AuditStore<'_>, checkpoints: &[Checkpoint]) -> Result<Option<Broken>, StoreError> {
    let mut prev: Hash = GENESIS;
    for c in checkpoints {
        let leaves = store.checkpoint_leaves(c.checkpoint_id).await?;
        let good = c.chain_version == chain::CHAIN_VERSION
            && c.prev_root[..] == prev[..]
            && usize::try_from(c.wallets).ok() == Some(leaves.len())
            && c.root[..] == chain::checkpoint_root(&prev, &leaves)[..];
        if !good {
            return Ok(Some(Broken {
                wallet_id: None,
                seq: None,
                table: "audit_checkpoints",
                id: c.checkpoint_id.to_string(),
                what: Fault::CheckpointRoot,
            }));
        }
        prev = crate::store::to_hash(&c.root)?;
    }
    Ok(None)
}

/// One wallet's chain from its anchor; returns the rows walked and the first broken one.
async fn verify_wallet(
    store: &AuditStore<'_>,
    w: WalletHead,
    since: Option<i64>,
) -> Result<(u64, Option<Broken>), StoreError> {
    let checkpointed = store.checkpointed_heads(w.wallet_id).await?;
    let anchor = since
        .and_then(|s| checkpointed.iter().rev().find(|(id, _)| *id <= s).map(|(_, h)| *h))
        .unwrap_or_default();
    let rows = store.chain_rows(w.wallet_id, anchor.seq).await?;
    let later: Vec<(i64, Head)> = checkpointed.into_iter().filter(|(_, h)| h.seq > anchor.seq).collect();
    Ok((rows.len() as u64, walk(w, anchor, &rows, &later)))
}

/// The walk itself (pure): `rows` sorted by seq (unchained first), from `anchor`, against the wallet's
/// stored head and the heads checkpoints recorded after the anchor.
pub fn walk(w: WalletHead, anchor: Head, rows: &[StoredRow], checkpointed: &[(i64, Head)]) -> Option<Broken> {
    let broken = |r: &StoredRow, what: Fault| Broken {
        wallet_id: Some(w.wallet_id),
        seq: r.seq,
        table: r.table().as_str(),
        id: r.id(),
        what,
    };
    let mut head = anchor;
    for r in rows {
        let Some(seq) = r.seq else {
            return Some(broken(r, Fault::Unchained));
        };
        let (Some(version), Some(prev), Some(stored)) = (r.version, r.prev_hash.as_deref(), r.hash.as_deref()) else {
            return Some(broken(r, Fault::UnknownVersion));
        };
        let Ok(prev) = <Hash>::try_from(prev) else {
            return Some(broken(r, Fault::UnknownVersion));
        };
        if seq <= head.seq {
            return Some(broken(r, Fault::Order));
        }
        if seq > head.seq + 1 {
            return Some(broken(r, Fault::MissingSeq { expected: head.seq + 1 }));
        }
        let Some(recomputed) = chain::hash(version, &prev, &r.chain_row()) else {
            return Some(broken(r, Fault::UnknownVersion));
        };
        if recomputed[..] != *stored {
            return Some(broken(r, Fault::HashMismatch));
        }
        if prev != head.hash {
            return Some(broken(r, Fault::Order));
        }
        head = Head { seq, hash: recomputed };
        if let Some((id, _)) = checkpointed.iter().find(|(_, h)| h.seq == seq && h.hash != recomputed) {
            return Some(broken(r, Fault::CheckpointMismatch { checkpoint_id: *id }));
        }
    }
    let at_head = |what: Fault| Broken {
        wallet_id: Some(w.wallet_id),
        seq: Some(w.head.seq),
        table: "wallets",
        id: w.wallet_id.to_string(),
        what,
    };
    if w.head != head {
        return Some(at_head(Fault::HeadMismatch {
            head_seq: w.head.seq,
            last_seq: head.seq,
        }));
    }
    if let Some((id, _)) = checkpointed.iter().find(|(_, h)| h.seq > head.seq) {
        return Some(at_head(Fault::CheckpointMismatch { checkpoint_id: *id }));
    }
    None
}

/// A checkpoint as told: its root and previous root in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointView {
    pub checkpoint_id: i64,
    pub at: String,
    pub root: String,
    pub prev_root: String,
    pub wallets: i32,
    pub chain_version: i16,
}

impl From<&Checkpoint> for CheckpointView {
    fn from(c: &Checkpoint) -> Self {
        CheckpointView {
            checkpoint_id: c.checkpoint_id,
            at: crate::views::ts(c.at),
            root: hex::encode(&c.root),
            prev_root: hex::encode(&c.prev_root),
            wallets: c.wallets,
            chain_version: c.chain_version,
        }
    }
}

/// The audit use cases over a pool: the service's (`Service::auditor`) or the CLI's own
/// ([`Auditor::connect`]).
#[derive(Clone)]
pub struct Auditor {
    pool: crate::store::Pool,
}

/// Connections of the CLI's pool (verify reads one wallet at a time).
pub const CLI_POOL_SIZE: usize = 2;
/// The CLI's statement timeout: one wallet's whole chain is one query, which may be long for a wallet
/// with a long history (the service's 4 s bound is for money statements).
pub const CLI_STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

impl Auditor {
    pub fn new(pool: crate::store::Pool) -> Self {
        Auditor { pool }
    }

    /// A pool of its own on `database_url` (for the CLI; no migration, no engine).
    pub fn connect(database_url: &str) -> Result<Auditor, crate::store::db::DbSetupError> {
        let bounds = crate::store::db::StatementBounds {
            db_statement: CLI_STATEMENT_TIMEOUT,
            ..Default::default()
        };
        Ok(Auditor {
            pool: crate::store::db::pool(database_url, CLI_POOL_SIZE, &bounds, crate::store::pool::PRIMARY)?,
        })
    }

    /// Folds what the ledger gained since the last fold (so the audit covers every finished commit), then
    /// recomputes the reports' spend aggregates from the ledger rows: the ones that differ (none when every
    /// figure matches to the cent).
    pub async fn reports(&self, wallet_id: Option<Uuid>) -> Result<Vec<crate::store::AggregateMismatch>, StoreError> {
        crate::store::fold_spend(&self.pool).await?;
        crate::store::recompute_spend_aggregates(&self.pool, wallet_id).await
    }

    pub async fn verify(&self, scope: Scope) -> Result<Verified, VerifyError> {
        verify(&AuditStore::new(&self.pool), scope).await
    }

    /// Writes a checkpoint over the heads that moved since the last one (`None`: none moved).
    pub async fn create_checkpoint(&self) -> Result<Option<CheckpointView>, StoreError> {
        let c = AuditStore::new(&self.pool).create_checkpoint().await?;
        Ok(c.as_ref().map(CheckpointView::from))
    }

    pub async fn latest_checkpoint(&self) -> Result<Option<CheckpointView>, StoreError> {
        let c = AuditStore::new(&self.pool).latest_checkpoint().await?;
        Ok(c.as_ref().map(CheckpointView::from))
    }

    /// Chains the rows written before chains existed (the start-up step; see `store::audit`).
    pub async fn chain_unchained(&self) -> Result<u64, StoreError> {
        crate::store::audit::chain_unchained(&self.pool).await
    }
}
