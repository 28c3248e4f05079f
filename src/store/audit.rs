//! The SQL of the tamper-evident ledger: chaining the rows written before chains existed (once, at start),
//! reading a wallet's chain back for verify, and the checkpoints over the wallets' heads.
//!
//! What is hashed and how is `wallet_actors::chain` (the one implementation); this module reads and writes
//! rows and calls it. The walk that judges a chain is the use case's (`service::audit`).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_actors::StoreError;
use wallet_actors::chain::{self, CheckpointLeaf, GENESIS, Hash, Head, Row};

use super::{Pool, col, head_from_row, to_hash, unavailable};

/// Transaction-level advisory lock key of the start-up chaining step and of checkpoint creation, so that
/// instances starting (or checkpointing) at once do it once and in turn.
const CHAIN_LOCK_KEY: i64 = 0x0043_4841_494e; // "CHAIN"
/// Wallets chained per transaction by the start-up step (each transaction locks them and both tables).
pub const CHAIN_STEP_WALLETS: i64 = 500;
/// Most wallet heads one checkpoint records; heads beyond wait for the next checkpoint (they still differ
/// from their last checkpointed head, so none is skipped).
pub const MAX_CHECKPOINT_WALLETS: i64 = 100_000;
/// Wallets read per page by a whole-database verify.
pub const VERIFY_PAGE_WALLETS: i64 = 1_000;

/// Audit actions whose APPLIED rows are on a wallet's chain.
const CHAINED_ACTIONS: &str = "('wallet.set_status', 'budget.create', 'budget.update', 'hold.place', 'hold.release')";
/// The wallet an unchained (pre-chain) audit row belongs to, as text: a status change targets the wallet,
/// budget and hold rows name it in their detail.
const AUDIT_WALLET: &str = "(CASE WHEN action = 'wallet.set_status' THEN target_id ELSE detail->>'wallet_id' END)";

/// Which table a chained row is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainTable {
    Transactions,
    AuditLog,
}

impl ChainTable {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainTable::Transactions => "transactions",
            ChainTable::AuditLog => "audit_log",
        }
    }
}

/// A row's hashed columns, as stored.
#[derive(Debug, Clone)]
pub enum StoredFields {
    Ledger {
        txn_id: Uuid,
        kind: String,
        amount: Decimal,
        status: String,
        balance_after: Decimal,
        description: Option<String>,
        reference_type: Option<String>,
        reference_id: Option<String>,
        metadata: Option<serde_json::Value>,
        actor_id: Option<Uuid>,
        actor_role: Option<String>,
        hold_id: Option<Uuid>,
        created_at: DateTime<Utc>,
    },
    Audit {
        audit_id: i64,
        action: String,
        target_type: String,
        target_id: String,
        outcome: String,
        detail: Option<serde_json::Value>,
        actor_id: Option<Uuid>,
        actor_role: String,
        at: DateTime<Utc>,
    },
}

/// One row of a wallet's chain as stored: its hashed columns and its chain columns (NULL when unchained).
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub wallet_id: Uuid,
    pub fields: StoredFields,
    pub seq: Option<i64>,
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Option<Vec<u8>>,
    pub version: Option<i16>,
}

impl StoredRow {
    pub fn table(&self) -> ChainTable {
        match self.fields {
            StoredFields::Ledger { .. } => ChainTable::Transactions,
            StoredFields::Audit { .. } => ChainTable::AuditLog,
        }
    }

    /// The row's id in its table (txn id, audit id), as text.
    pub fn id(&self) -> String {
        match &self.fields {
            StoredFields::Ledger { txn_id, .. } => txn_id.to_string(),
            StoredFields::Audit { audit_id, .. } => audit_id.to_string(),
        }
    }

    fn instant(&self) -> DateTime<Utc> {
        match &self.fields {
            StoredFields::Ledger { created_at, .. } => *created_at,
            StoredFields::Audit { at, .. } => *at,
        }
    }

    /// The row as the chain encodes it.
    pub fn chain_row(&self) -> Row<'_> {
        match &self.fields {
            StoredFields::Ledger {
                txn_id,
                kind,
                amount,
                status,
                balance_after,
                description,
                reference_type,
                reference_id,
                metadata,
                actor_id,
                actor_role,
                hold_id,
                created_at,
            } => Row::Ledger(chain::LedgerRow {
                txn_id: *txn_id,
                wallet_id: self.wallet_id,
                kind,
                amount: *amount,
                status,
                balance_after: *balance_after,
                description: description.as_deref(),
                reference_type: reference_type.as_deref(),
                reference_id: reference_id.as_deref(),
                metadata: metadata.as_ref(),
                actor_id: *actor_id,
                actor_role: actor_role.as_deref(),
                hold_id: *hold_id,
                created_at: *created_at,
            }),
            StoredFields::Audit {
                action,
                target_type,
                target_id,
                outcome,
                detail,
                actor_id,
                actor_role,
                at,
                ..
            } => Row::Audit(chain::AuditRow {
                wallet_id: self.wallet_id,
                action,
                target_type,
                target_id,
                outcome,
                detail: detail.as_ref(),
                actor_id: *actor_id,
                actor_role,
                at: *at,
            }),
        }
    }
}

const LEDGER_COLUMNS: &str = "txn_id, wallet_id, type, amount, status, balance_after, description, reference_type, \
     reference_id, metadata, actor_id, actor_role, hold_id, created_at, chain_seq, prev_hash, hash, chain_version";
const AUDIT_COLUMNS: &str = "audit_id, action, target_type, target_id, outcome, detail, actor_id, actor_role, at, \
     chain_seq, prev_hash, hash, chain_version";

fn ledger_row(r: &tokio_postgres::Row) -> Result<StoredRow, StoreError> {
    Ok(StoredRow {
        wallet_id: col(r, "wallet_id")?,
        fields: StoredFields::Ledger {
            txn_id: col(r, "txn_id")?,
            kind: col(r, "type")?,
            amount: col(r, "amount")?,
            status: col(r, "status")?,
            balance_after: col(r, "balance_after")?,
            description: col(r, "description")?,
            reference_type: col(r, "reference_type")?,
            reference_id: col(r, "reference_id")?,
            metadata: col(r, "metadata")?,
            actor_id: col(r, "actor_id")?,
            actor_role: col(r, "actor_role")?,
            hold_id: col(r, "hold_id")?,
            created_at: col(r, "created_at")?,
        },
        seq: col(r, "chain_seq")?,
        prev_hash: col(r, "prev_hash")?,
        hash: col(r, "hash")?,
        version: col(r, "chain_version")?,
    })
}

fn audit_row(r: &tokio_postgres::Row, wallet_id: Uuid) -> Result<StoredRow, StoreError> {
    Ok(StoredRow {
        wallet_id,
        fields: StoredFields::Audit {
            audit_id: col(r, "audit_id")?,
            action: col(r, "action")?,
            target_type: col(r, "target_type")?,
            target_id: col(r, "target_id")?,
            outcome: col(r, "outcome")?,
            detail: col(r, "detail")?,
            actor_id: col(r, "actor_id")?,
            actor_role: col(r, "actor_role")?,
            at: col(r, "at")?,
        },
        seq: col(r, "chain_seq")?,
        prev_hash: col(r, "prev_hash")?,
        hash: col(r, "hash")?,
        version: col(r, "chain_version")?,
    })
}

/// A wallet as verify starts from it: its stored head.
#[derive(Debug, Clone, Copy)]
pub struct WalletHead {
    pub wallet_id: Uuid,
    pub head: Head,
}

/// A checkpoint as stored, with the heads it records.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub checkpoint_id: i64,
    pub at: DateTime<Utc>,
    pub prev_root: Vec<u8>,
    pub root: Vec<u8>,
    pub wallets: i32,
    pub chain_version: i16,
}

/// The store side of the audit use cases.
pub struct AuditStore<'a> {
    pool: &'a Pool,
}

impl<'a> AuditStore<'a> {
    pub fn new(pool: &'a Pool) -> Self {
        AuditStore { pool }
    }

    /// The wallet's stored head, or `None` if there is no such wallet.
    pub async fn wallet_head(&self, wallet_id: Uuid) -> Result<Option<WalletHead>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let row = c
            .query_opt(
                "SELECT wallet_id, head_seq, head_hash FROM wallets WHERE wallet_id = $1",
                &[&wallet_id],
            )
            .await
            .map_err(unavailable)?;
        row.map(|r| {
            Ok(WalletHead {
                wallet_id: col(&r, "wallet_id")?,
                head: head_from_row(&r, "head_seq", "head_hash")?,
            })
        })
        .transpose()
    }

    /// A page of wallets (by id, after `after`) with their stored heads.
    pub async fn wallet_heads(&self, after: Option<Uuid>) -> Result<Vec<WalletHead>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let rows = c
            .query(
                "SELECT wallet_id, head_seq, head_hash FROM wallets \
                 WHERE $1::uuid IS NULL OR wallet_id > $1 ORDER BY wallet_id LIMIT $2",
                &[&after, &VERIFY_PAGE_WALLETS],
            )
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(WalletHead {
                    wallet_id: col(r, "wallet_id")?,
                    head: head_from_row(r, "head_seq", "head_hash")?,
                })
            })
            .collect()
    }

    /// The wallet's chained rows after `after_seq`, and every row of it that should be chained and is
    /// not, ordered by seq (unchained first). Ledger rows come through the (wallet, created_at) index and
    /// are sorted here (see sql/V10).
    pub async fn chain_rows(&self, wallet_id: Uuid, after_seq: i64) -> Result<Vec<StoredRow>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let ledger = format!(
            "SELECT {LEDGER_COLUMNS} FROM transactions WHERE wallet_id = $1 AND (chain_seq IS NULL OR chain_seq > $2)"
        );
        let audit = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE wallet_id = $1 AND (chain_seq IS NULL OR chain_seq > $2)"
        );
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&wallet_id, &after_seq];
        let (ledger, audit) = tokio::join!(c.query(&ledger, &params), c.query(&audit, &params));
        let mut rows = Vec::new();
        for r in &ledger.map_err(unavailable)? {
            rows.push(ledger_row(r)?);
        }
        for r in &audit.map_err(unavailable)? {
            rows.push(audit_row(r, wallet_id)?);
        }
        rows.sort_by_key(|r| r.seq);
        Ok(rows)
    }

    /// The heads recorded for the wallet by the checkpoints, oldest first, as `(checkpoint_id, head)`.
    pub async fn checkpointed_heads(&self, wallet_id: Uuid) -> Result<Vec<(i64, Head)>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let rows = c
            .query(
                "SELECT checkpoint_id, head_seq, head_hash FROM audit_checkpoint_heads WHERE wallet_id = $1 \
                 ORDER BY checkpoint_id",
                &[&wallet_id],
            )
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| Ok((col(r, "checkpoint_id")?, head_from_row(r, "head_seq", "head_hash")?)))
            .collect()
    }

    /// Every checkpoint, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let rows = c
            .query(
                "SELECT checkpoint_id, at, prev_root, root, wallets, chain_version FROM audit_checkpoints \
                 ORDER BY checkpoint_id",
                &[],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    /// The heads one checkpoint records.
    pub async fn checkpoint_leaves(&self, checkpoint_id: i64) -> Result<Vec<CheckpointLeaf>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let rows = c
            .query(
                "SELECT wallet_id, head_seq, head_hash FROM audit_checkpoint_heads WHERE checkpoint_id = $1",
                &[&checkpoint_id],
            )
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(CheckpointLeaf {
                    wallet_id: col(r, "wallet_id")?,
                    head: head_from_row(r, "head_seq", "head_hash")?,
                })
            })
            .collect()
    }

    /// The newest checkpoint, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let row = c
            .query_opt(
                "SELECT checkpoint_id, at, prev_root, root, wallets, chain_version FROM audit_checkpoints \
                 ORDER BY checkpoint_id DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(unavailable)?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    /// Writes a checkpoint over the heads that moved since the last one (at most
    /// [`MAX_CHECKPOINT_WALLETS`]), chained to the last one's root; `None` when no head moved. Under a
    /// transaction-level advisory lock, so two instances never chain two checkpoints to one predecessor.
    pub async fn create_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let mut c = self.pool.get().await.map_err(unavailable)?;
        let tx = c.transaction().await.map_err(unavailable)?;
        tx.batch_execute("SET LOCAL statement_timeout = 0")
            .await
            .map_err(unavailable)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK_KEY])
            .await
            .map_err(unavailable)?;
        let last = tx
            .query_opt(
                "SELECT root FROM audit_checkpoints ORDER BY checkpoint_id DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(unavailable)?;
        let prev_root: Hash = match &last {
            Some(r) => to_hash(&col::<Vec<u8>>(r, "root")?)?,
            None => GENESIS,
        };
        let moved = tx
            .query(
                "SELECT w.wallet_id, w.head_seq, w.head_hash FROM wallets w \
                 WHERE w.head_seq > 0 AND NOT EXISTS ( \
                     SELECT 1 FROM (SELECT h.head_seq, h.head_hash FROM audit_checkpoint_heads h \
                                     WHERE h.wallet_id = w.wallet_id ORDER BY h.checkpoint_id DESC LIMIT 1) last \
                      WHERE last.head_seq = w.head_seq AND last.head_hash = w.head_hash) \
                 ORDER BY w.wallet_id LIMIT $1",
                &[&MAX_CHECKPOINT_WALLETS],
            )
            .await
            .map_err(unavailable)?;
        if moved.is_empty() {
            super::rollback(tx).await;
            return Ok(None);
        }
        let leaves: Vec<CheckpointLeaf> = moved
            .iter()
            .map(|r| {
                Ok(CheckpointLeaf {
                    wallet_id: col(r, "wallet_id")?,
                    head: head_from_row(r, "head_seq", "head_hash")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let root = chain::checkpoint_root(&prev_root, &leaves);
        let count = i32::try_from(leaves.len()).unwrap_or(i32::MAX);
        let row = tx
            .query_one(
                "INSERT INTO audit_checkpoints (prev_root, root, wallets, chain_version) VALUES ($1, $2, $3, $4) \
                 RETURNING checkpoint_id, at, prev_root, root, wallets, chain_version",
                &[&&prev_root[..], &&root[..], &count, &chain::CHAIN_VERSION],
            )
            .await
            .map_err(unavailable)?;
        let checkpoint = checkpoint_from_row(&row)?;
        let wallet: Vec<Uuid> = leaves.iter().map(|l| l.wallet_id).collect();
        let seq: Vec<i64> = leaves.iter().map(|l| l.head.seq).collect();
        let hash: Vec<&[u8]> = leaves.iter().map(|l| &l.head.hash[..]).collect();
        tx.execute(
            "INSERT INTO audit_checkpoint_heads (checkpoint_id, wallet_id, head_seq, head_hash) \
             SELECT $1, * FROM unnest($2::uuid[], $3::int8[], $4::bytea[])",
            &[&checkpoint.checkpoint_id, &wallet, &seq, &hash],
        )
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(checkpoint))
    }
}

fn checkpoint_from_row(r: &tokio_postgres::Row) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        checkpoint_id: col(r, "checkpoint_id")?,
        at: col(r, "at")?,
        prev_root: col(r, "prev_root")?,
        root: col(r, "root")?,
        wallets: col(r, "wallets")?,
        chain_version: col(r, "chain_version")?,
    })
}

/// Chains, once, the rows that should be on a wallet's chain and are not: those written before chains
/// existed (sql/V10). Run at start after the migrations; idempotent (it looks for unchained rows through
/// indexes that are empty once it has run) and safe with several instances starting at once (a
/// transaction-level advisory lock per step). Each wallet's unchained rows are appended after its current
/// head in the order they were written (ledger rows first on a tie), and its head and version move, so an
/// actor of another instance holding the old head re-plans.
///
/// The ledger and the audit log are append-only by trigger: each step disables the two UPDATE triggers
/// explicitly, writes only the chain columns (and an audit row's `wallet_id`), and enables them again in
/// the same transaction, so no other session ever sees them disabled. Returns how many rows it chained.
pub async fn chain_unchained(pool: &Pool) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let mut c = pool.get().await.map_err(unavailable)?;
        let tx = c.transaction().await.map_err(unavailable)?;
        // The step may wait for the table locks behind live traffic, and writes many rows.
        tx.batch_execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '30s'")
            .await
            .map_err(unavailable)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK_KEY])
            .await
            .map_err(unavailable)?;
        let wallets: Vec<Uuid> = tx
            .query(
                &format!(
                    "SELECT w.wallet_id FROM wallets w WHERE w.wallet_id IN ( \
                         (SELECT DISTINCT wallet_id FROM transactions WHERE chain_seq IS NULL LIMIT $1) \
                         UNION \
                         (SELECT DISTINCT {AUDIT_WALLET}::uuid FROM audit_log \
                           WHERE chain_seq IS NULL AND outcome = 'APPLIED' AND action IN {CHAINED_ACTIONS} \
                             AND {AUDIT_WALLET} ~ '^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$' \
                           LIMIT $1)) \
                     ORDER BY w.wallet_id LIMIT $1 FOR UPDATE"
                ),
                &[&CHAIN_STEP_WALLETS],
            )
            .await
            .map_err(unavailable)?
            .iter()
            .map(|r| col(r, "wallet_id"))
            .collect::<Result<_, _>>()?;
        if wallets.is_empty() {
            tx.commit().await.map_err(unavailable)?;
            return Ok(total);
        }
        tx.batch_execute(
            "ALTER TABLE transactions DISABLE TRIGGER transactions_no_update; \
             ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update",
        )
        .await
        .map_err(unavailable)?;
        total += chain_step(&tx, &wallets).await?;
        tx.batch_execute(
            "ALTER TABLE transactions ENABLE TRIGGER transactions_no_update; \
             ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update",
        )
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
    }
}

/// Chains the unchained rows of `wallets` (locked by the caller) after their heads.
async fn chain_step<C: GenericClient>(tx: &C, wallets: &[Uuid]) -> Result<u64, StoreError> {
    let heads = tx
        .query(
            "SELECT wallet_id, head_seq, head_hash FROM wallets WHERE wallet_id = ANY($1)",
            &[&wallets],
        )
        .await
        .map_err(unavailable)?;
    let ledger = tx
        .query(
            &format!(
                "SELECT {LEDGER_COLUMNS} FROM transactions WHERE chain_seq IS NULL AND wallet_id = ANY($1) \
                 ORDER BY created_at, txn_id"
            ),
            &[&wallets],
        )
        .await
        .map_err(unavailable)?;
    let texts: Vec<String> = wallets.iter().map(Uuid::to_string).collect();
    let audit = tx
        .query(
            &format!(
                "SELECT {AUDIT_COLUMNS}, {AUDIT_WALLET} AS owner FROM audit_log \
                 WHERE chain_seq IS NULL AND outcome = 'APPLIED' AND action IN {CHAINED_ACTIONS} \
                   AND {AUDIT_WALLET} = ANY($1) ORDER BY at, audit_id"
            ),
            &[&texts],
        )
        .await
        .map_err(unavailable)?;
    let mut rows: Vec<StoredRow> = Vec::with_capacity(ledger.len() + audit.len());
    for r in &ledger {
        rows.push(ledger_row(r)?);
    }
    for r in &audit {
        let owner: String = col(r, "owner")?;
        let wallet_id = owner.parse::<Uuid>().map_err(super::corrupt)?;
        rows.push(audit_row(r, wallet_id)?);
    }
    // In the order they were written; a stable sort keeps ledger rows before audit rows on a tie.
    rows.sort_by_key(|r| (r.wallet_id, r.instant()));

    let mut chained = 0;
    for h in &heads {
        let wallet_id: Uuid = col(h, "wallet_id")?;
        let mut head = head_from_row(h, "head_seq", "head_hash")?;
        let mut txn = (vec![], vec![], vec![], vec![], vec![]);
        let mut aud = (vec![], vec![], vec![], vec![], vec![]);
        for r in rows.iter().filter(|r| r.wallet_id == wallet_id) {
            let link = chain::link(head, &r.chain_row());
            head = link.head();
            match &r.fields {
                StoredFields::Ledger { txn_id, created_at, .. } => {
                    txn.0.push(*txn_id);
                    txn.1.push(*created_at);
                    txn.2.push(link.seq);
                    txn.3.push(link.prev_hash.to_vec());
                    txn.4.push(link.hash.to_vec());
                }
                StoredFields::Audit { audit_id, .. } => {
                    aud.0.push(*audit_id);
                    aud.1.push(wallet_id);
                    aud.2.push(link.seq);
                    aud.3.push(link.prev_hash.to_vec());
                    aud.4.push(link.hash.to_vec());
                }
            }
            chained += 1;
        }
        if !txn.0.is_empty() {
            tx.execute(
                "UPDATE transactions t SET chain_seq = u.s, prev_hash = u.ph, hash = u.h, chain_version = $6 \
                   FROM unnest($1::uuid[], $2::timestamptz[], $3::int8[], $4::bytea[], $5::bytea[]) AS u(id, at, s, ph, h) \
                  WHERE t.txn_id = u.id AND t.created_at = u.at",
                &[&txn.0, &txn.1, &txn.2, &txn.3, &txn.4, &chain::CHAIN_VERSION],
            )
            .await
            .map_err(unavailable)?;
        }
        if !aud.0.is_empty() {
            tx.execute(
                "UPDATE audit_log a SET wallet_id = u.w, chain_seq = u.s, prev_hash = u.ph, hash = u.h, chain_version = $6 \
                   FROM unnest($1::int8[], $2::uuid[], $3::int8[], $4::bytea[], $5::bytea[]) AS u(id, w, s, ph, h) \
                  WHERE a.audit_id = u.id",
                &[&aud.0, &aud.1, &aud.2, &aud.3, &aud.4, &chain::CHAIN_VERSION],
            )
            .await
            .map_err(unavailable)?;
        }
        tx.execute(
            "UPDATE wallets SET head_seq = $2, head_hash = $3, version = version + 1 WHERE wallet_id = $1",
            &[&wallet_id, &head.seq, &&head.hash[..]],
        )
        .await
        .map_err(unavailable)?;
    }
    Ok(chained)
}
