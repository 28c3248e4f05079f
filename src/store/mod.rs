//! Postgres behind the engine ([`WalletStore`]) and behind the HTTP reads.
//!
//! Every money write is guarded in SQL so that correctness never depends on there being one process:
//! the wallet row is updated only if its `version` is the one the batch was planned against, the row's
//! `CHECK (balance >= 0)` refuses an overdraft whatever the caller believed, and references are unique
//! in `transaction_references`. A batch writes its rows with set-based `unnest` inserts, so the number
//! of statements per commit does not grow with the batch.
//!
//! - `audit`: the tamper-evident ledger's SQL: chaining pre-chain rows at start, reading a wallet's chain
//!   for verify, checkpoints over the wallets' heads (what is hashed is `wallet_actors::chain`'s).
//! - `committer`: the shared [`GroupCommitter`]: the batches of many wallets in one commit.
//! - `reader`: [`WalletReader`]: wallet rows for `GET` on a cache miss, many misses in one round trip.
//! - `read`: `col`, a column read by name; a missing or mistyped one is `StoreError::Corrupt`, not a panic.
//! - `replica`: read-your-writes over a streaming replica: each wallet's last commit position, the
//!   replica's replay position, and the fallback to the primary ([`PgStore::read_client`]).
//! - `rows`: what a commit writes besides the wallet row (ledger rows, references, outbox, replies,
//!   inbox, audit), as set-based statements.
//! - `pool`: [`Pool`], a deadpool pool behind the circuit breaker of its server (fails fast while open).
//! - `batch`: bulk postings: the per-item Idempotency-Key claims of a keyed batch, and the one
//!   transaction of an atomic batch (wallets locked in id order, each written with `write_batch`).
//! - here: [`PgStore`] (the engine's `WalletStore`: loads, commits through the committer, transfers) and
//!   the reads and writes of the HTTP handlers (users, wallets, history, idempotency keys).

pub mod audit;
mod batch;
mod bookings;
mod budgets;
mod committer;
pub mod db;
mod holds;
mod idempotency;
pub mod outbox;
pub mod pool;
mod read;
mod reader;
mod replica;
mod reports;
mod rows;
mod spend;

pub use batch::{AtomicError, AtomicOutcome, ItemClaim};
pub use bookings::{
    BOOKING_REFERENCE_TYPE, BOOKING_REFUSED_ACTION, BookingState, DefaultBudgetsLock, RefusedBooking, SYSTEM_ACTOR,
};
pub(crate) use budgets::{alert_events, write_batch as write_budgets};
pub use committer::{
    GROUP_COMMITTERS, GroupCommitter, MAX_FORMING_WAIT, MAX_GROUP_BATCHES, MAX_GROUP_COMMITTERS, MAX_PENDING_BATCHES,
    MIN_OVERLAP_BATCHES, SURGE_COMMITTERS, all_plain_statements,
};
pub use holds::{HoldFilter, MAX_SWEEP_HOLDS};
pub use idempotency::{Claim, IDEMPOTENCY_LEASE_SECS, Resolution};
pub use pool::{Pool, PoolError};
pub(crate) use read::col;
pub use reader::{MAX_PENDING_READS, MAX_READ_GROUP, WALLET_READERS, WalletReader};
pub use replica::{MAX_TRACKED_WALLETS, REPLICA_RETRY_AFTER, REPLICA_WAIT, ReadRouter, ReadScope};
pub use reports::{
    BalanceAt, BudgetReport, BudgetReportRow, LatestTxn, MAX_BUDGET_REPORT_ROWS, MAX_REPORT_ROWS, Report, ReportScope,
    WalletReportRow,
};
pub use rows::AuditRow;
pub(crate) use rows::insert_outbox;
use rows::{claim_references, complete_idempotency, insert_audit, insert_entries, rollback};
pub use spend::{
    AggregateMismatch, AggregatePeriod, FOLD_STATEMENT_TIMEOUT_MS, Fold, MAX_AGGREGATE_MISMATCHES, SpendGrouping,
    SpendRow, fold_spend, recompute_spend_aggregates, whole_months,
};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::GenericClient;
use rust_decimal::Decimal;
use serde_json::json;
use tracing::warn;
use uuid::Uuid;
use wallet_actors::chain::{Hash, Head};
use wallet_actors::store::{Batch, CommitError, StoreError, TransferError, TransferPlan, WalletStore};
use wallet_actors::{Amount, Currency, Entry, Origin, Rejection, TxnType, WalletState, WalletStatus};

use crate::views::OutboxEvent;

/// The Postgres store: `pool` for writes and engine loads, `read` the replica's pool when
/// `DATABASE_READ_URL` is set (else the primary's). Reads of a wallet's data take their connection from
/// [`PgStore::read_client`], which uses the replica only once it holds this process's writes of them.
#[derive(Clone)]
pub struct PgStore {
    pub pool: Pool,
    pub read: Pool,
    /// Where reads go (see [`replica`]): what the replica must have replayed for each wallet.
    pub reads: std::sync::Arc<ReadRouter>,
    /// Commits batches of many wallets together (see [`GroupCommitter`]).
    pub committer: GroupCommitter,
    /// Notified after a commit that wrote outbox rows, so the relay publishes without waiting for its poll.
    pub outbox_written: std::sync::Arc<tokio::sync::Notify>,
    /// Written through after every commit and load (see [`crate::cache`]).
    pub cache: std::sync::Arc<crate::cache::WalletCache>,
    /// Reads wallet rows for `GET` in groups (see [`reader`]).
    pub reader: WalletReader,
}

/// A failure the store can say something about: what failed ([`StoreError`]'s variant) and its cause,
/// with the whole chain of sources (for the log only).
pub(crate) trait Classify {
    fn classify(&self) -> StoreError;
}

/// The error and its sources, `": "`-separated: tokio-postgres shows only `db error` at the top, the
/// server's message is its source.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The variant for a SQLSTATE (see the PostgreSQL manual's appendix A).
fn by_sqlstate(code: &str, cause: String) -> StoreError {
    match code {
        // Connection exceptions; too many connections and other insufficient resources; shutdown, crash
        // and "cannot connect now"; system errors (I/O).
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("58") => StoreError::Unreachable(cause),
        "57P01" | "57P02" | "57P03" => StoreError::Unreachable(cause),
        // Serialization failure, deadlock, lock not available, query cancelled (statement timeout),
        // object in use.
        "40001" | "40P01" | "55P03" | "57014" | "55006" => StoreError::Busy(cause),
        // Data exceptions (e.g. a NUL in text), integrity constraints, program limits (e.g. a value too
        // large for an index row).
        c if c.starts_with("22") || c.starts_with("23") || c.starts_with("54") => StoreError::Refused(cause),
        _ => StoreError::Other(cause),
    }
}

impl Classify for tokio_postgres::Error {
    fn classify(&self) -> StoreError {
        let cause = chain(self);
        if let Some(db) = self.as_db_error() {
            let cause = format!("{cause} (SQLSTATE {})", db.code().code());
            return by_sqlstate(db.code().code(), cause);
        }
        let io = std::error::Error::source(self).is_some_and(|s| s.is::<std::io::Error>());
        let top = self.to_string();
        if self.is_closed() || io || top.starts_with("timeout") || top.starts_with("error connecting") {
            StoreError::Unreachable(cause)
        } else if top.starts_with("error deserializing") {
            StoreError::Corrupt(cause)
        } else {
            StoreError::Other(cause)
        }
    }
}

impl Classify for deadpool_postgres::PoolError {
    /// No connection: the pool timed out, is closed, or could not open one.
    fn classify(&self) -> StoreError {
        StoreError::Unreachable(chain(self))
    }
}

impl Classify for tokio::time::error::Elapsed {
    fn classify(&self) -> StoreError {
        StoreError::Unreachable(format!("timed out: {self}"))
    }
}

impl Classify for wallet_actors::AmountError {
    /// An amount read back from a row that the type refuses.
    fn classify(&self) -> StoreError {
        StoreError::Corrupt(format!("stored amount {self}"))
    }
}

impl Classify for StoreError {
    fn classify(&self) -> StoreError {
        self.clone()
    }
}

impl Classify for str {
    fn classify(&self) -> StoreError {
        StoreError::Other(self.to_string())
    }
}

impl Classify for String {
    fn classify(&self) -> StoreError {
        StoreError::Other(self.clone())
    }
}

impl<T: Classify + ?Sized> Classify for &T {
    fn classify(&self) -> StoreError {
        (**self).classify()
    }
}

/// The store error for a failure (pool, connection, statement, row), classified.
pub(crate) fn unavailable<E: Classify>(e: E) -> StoreError {
    e.classify()
}

/// A value read back from a row that we cannot use.
pub(crate) fn corrupt<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// A commit that failed before it could have committed. The reason names the class of the failure (see
/// [`unavailable`]) and its cause, for the log.
pub(super) fn commit_err<E: Classify>(e: E) -> CommitError {
    CommitError::Unavailable {
        reason: e.classify().to_string(),
        outcome_unknown: false,
    }
}

/// A failed statement of a batch's own writes: Postgres refusing the batch's data (a data exception, a
/// constraint, a program limit) is [`CommitError::Refused`], so the engine isolates the command that caused
/// it; anything else (timeouts, lock waits, a lost connection before COMMIT) rolled back and is transient.
pub(super) fn batch_err(e: tokio_postgres::Error) -> CommitError {
    let refused = e
        .as_db_error()
        .is_some_and(|d| matches!(&d.code().code()[..2], "22" | "23" | "54"));
    if refused {
        CommitError::Refused { reason: describe(&e) }
    } else {
        commit_err(describe(&e))
    }
}

/// A Postgres error for the log: its SQLSTATE and message (tokio-postgres displays a server error as just
/// "db error").
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}: {}", d.severity(), d.code().code(), d.message()),
        None => e.to_string(),
    }
}

/// The columns of a wallet's row (aliases `w` wallets, `u` users), as a literal for `concat!`.
macro_rules! wallet_columns {
    () => {
        "w.wallet_id, w.user_id, u.company_id, w.balance, w.currency, w.status, w.version, \
         w.created_at, w.updated_at, w.head_seq, w.head_hash"
    };
}
const WALLET_COLUMNS: &str = wallet_columns!();
/// One wallet's row by id.
const WALLET_BY_ID: &str = concat!(
    "SELECT ",
    wallet_columns!(),
    " FROM wallets w JOIN users u USING (user_id) WHERE w.wallet_id = $1"
);
/// The rows of many wallets by id (see [`reader`]).
const WALLETS_BY_IDS: &str = concat!(
    "SELECT ",
    wallet_columns!(),
    " FROM wallets w JOIN users u USING (user_id) WHERE w.wallet_id = ANY($1)"
);

/// A chain head read from its `head_seq` and `head_hash` columns (any prefix: `head_` or none).
pub(crate) fn head_from_row(row: &tokio_postgres::Row, seq: &str, hash: &str) -> Result<Head, StoreError> {
    let bytes: Vec<u8> = col(row, hash)?;
    Ok(Head {
        seq: col(row, seq)?,
        hash: to_hash(&bytes)?,
    })
}

/// A stored SHA-256 digest (32 bytes), or `Corrupt`.
pub(crate) fn to_hash(bytes: &[u8]) -> Result<Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("a stored hash has {} bytes, not 32", bytes.len())))
}

fn wallet_from_row(row: &tokio_postgres::Row) -> Result<WalletState, StoreError> {
    let balance: Decimal = row.try_get("balance").map_err(corrupt)?;
    let currency: String = row.try_get("currency").map_err(corrupt)?;
    let status: String = row.try_get("status").map_err(corrupt)?;
    Ok(WalletState {
        wallet_id: row.try_get("wallet_id").map_err(corrupt)?,
        user_id: row.try_get("user_id").map_err(corrupt)?,
        company_id: row.try_get("company_id").map_err(corrupt)?,
        balance: Amount::new(balance).map_err(|e| StoreError::Corrupt(format!("stored balance invalid: {e}")))?,
        currency: currency.parse::<Currency>().map_err(corrupt)?,
        status: status.parse::<WalletStatus>().map_err(corrupt)?,
        version: row.try_get("version").map_err(corrupt)?,
        created_at: row.try_get("created_at").map_err(corrupt)?,
        updated_at: row.try_get("updated_at").map_err(corrupt)?,
        budgets: vec![],
        holds: vec![],
        head: head_from_row(row, "head_seq", "head_hash")?,
    })
}

#[async_trait]
impl WalletStore for PgStore {
    async fn load(&self, wallet_id: Uuid) -> Result<Option<WalletState>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let stmt = c.prepare_cached(WALLET_BY_ID).await.map_err(unavailable)?;
        // Both statements pipelined on the one connection: a cold wallet (the first booking of a user) costs
        // one round trip, not two. The budgets of a missing wallet are simply none.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&wallet_id];
        let (row, budgets, holds) = tokio::join!(
            c.query_opt(&stmt, &params),
            budgets::load_live(&c, wallet_id),
            holds::load_open(&c, wallet_id)
        );
        let row = row.map_err(unavailable)?;
        let Some(mut wallet) = row.as_ref().map(wallet_from_row).transpose()? else {
            return Ok(None);
        };
        wallet.budgets = budgets?;
        wallet.holds = holds?;
        self.cache.put(&wallet);
        Ok(Some(wallet))
    }

    async fn commit(&self, batch: &Batch) -> Result<(), CommitError> {
        self.committer.commit(batch.clone()).await
    }

    async fn transfer(&self, plan: &TransferPlan) -> Result<Entry, TransferError> {
        let fail = |e: tokio_postgres::Error| TransferError::Commit(commit_err(e));
        let mut c = self
            .pool
            .get()
            .await
            .map_err(|e| TransferError::Commit(commit_err(e)))?;
        let tx = c.transaction().await.map_err(fail)?;
        let claim: Vec<&wallet_actors::IdempotencyTicket> = plan.out.origin.idempotency.iter().collect();
        if !idempotency::fence(&tx, &claim).await.map_err(fail)?.is_empty() {
            rollback(tx).await;
            return Err(TransferError::Commit(CommitError::ClaimsLost(vec![0])));
        }
        let (src, dst) = (plan.out.wallet_id, plan.incoming.wallet_id);
        // Lock both rows in wallet-id order: two opposite transfers can never wait on each other in a cycle.
        let stmt = tx
            .prepare_cached(
                "SELECT wallet_id, balance, currency, status, version, head_seq, head_hash FROM wallets \
                 WHERE wallet_id = ANY($1) ORDER BY wallet_id FOR UPDATE",
            )
            .await
            .map_err(fail)?;
        let rows = tx.query(&stmt, &[&vec![src, dst]]).await.map_err(fail)?;
        let unreadable = |e: StoreError| TransferError::Commit(commit_err(e));
        let find = |id: Uuid| -> Result<Option<&tokio_postgres::Row>, TransferError> {
            for r in &rows {
                if col::<Uuid>(r, "wallet_id").map_err(unreadable)? == id {
                    return Ok(Some(r));
                }
            }
            Ok(None)
        };
        let refuse = |r: Rejection| Err::<Entry, _>(TransferError::Rejected(r));
        let outcome = async {
            let Some(s) = find(src)? else {
                return Err(TransferError::Commit(CommitError::VersionConflict));
            };
            if col::<i64>(s, "version").map_err(unreadable)? != plan.expected_version {
                return Err(TransferError::Commit(CommitError::VersionConflict));
            }
            let Some(d) = find(dst)? else {
                return refuse(Rejection::WalletNotFound);
            };
            let d_status: WalletStatus = col::<&str>(d, "status")
                .map_err(unreadable)?
                .parse()
                .map_err(|e: wallet_actors::UnknownName| TransferError::Commit(commit_err(corrupt(e))))?;
            if d_status != WalletStatus::Active {
                return refuse(Rejection::WalletNotActive {
                    wallet_id: dst,
                    status: d_status,
                });
            }
            let d_currency: Currency = col::<&str>(d, "currency")
                .map_err(unreadable)?
                .parse()
                .map_err(|e: wallet_actors::UnknownName| TransferError::Commit(commit_err(corrupt(e))))?;
            if d_currency != plan.source_after.currency {
                return refuse(Rejection::CurrencyMismatch {
                    from: plan.source_after.currency,
                    to: d_currency,
                });
            }
            let d_balance = Amount::new(col::<Decimal>(d, "balance").map_err(unreadable)?)
                .map_err(|e| TransferError::Commit(commit_err(e)))?;
            let Some(d_after) = d_balance.checked_add(plan.incoming.amount) else {
                return refuse(Rejection::BalanceOverflow);
            };
            let mut incoming = plan.incoming.clone();
            incoming.balance_after = d_after;
            // The one row chained outside its wallet's actor: the destination's row is locked above until
            // this transaction ends, so this is its chain's only writer now; the version bump below makes
            // its actor re-plan from the new head (see `TransferPlan::incoming`).
            let d_head = head_from_row(d, "head_seq", "head_hash").map_err(unreadable)?;
            let link = wallet_actors::chain::link(d_head, &wallet_actors::chain::Row::Ledger((&incoming).into()));
            incoming.link = Some(link);
            Ok(incoming)
        }
        .await;
        let incoming = match outcome {
            Ok(i) => i,
            Err(e) => {
                rollback(tx).await;
                if let TransferError::Rejected(r) = &e {
                    let row = AuditRow::from_origin(
                        &plan.out.origin,
                        "wallet.transfer",
                        "wallet",
                        src.to_string(),
                        r.code(),
                        json!({"to_wallet_id": dst, "amount": plan.out.amount.to_string(), "detail": r.to_string()}),
                    );
                    if let Ok(c) = self.pool.get().await
                        && let Err(err) = insert_audit(&c, &[row]).await
                    {
                        warn!(error = %err, "audit of a refused transfer failed");
                    }
                }
                return Err(e);
            }
        };
        let legs = [&plan.out, &incoming];
        let dups = claim_references(&tx, &legs).await.map_err(fail)?;
        if !dups.is_empty() {
            rollback(tx).await;
            return Err(TransferError::Commit(CommitError::DuplicateReferences(dups)));
        }
        let stmt = tx
            .prepare_cached(
                "UPDATE wallets SET balance = $2, version = version + 1, updated_at = $3, head_seq = $4, head_hash = $5 \
                 WHERE wallet_id = $1",
            )
            .await
            .map_err(fail)?;
        let now = plan.source_after.updated_at;
        let src_head = plan.source_after.head;
        let dst_head = incoming.link.map(|l| l.head()).unwrap_or_default();
        tx.execute(
            &stmt,
            &[
                &src,
                &plan.source_after.balance.value(),
                &now,
                &src_head.seq,
                &&src_head.hash[..],
            ],
        )
        .await
        .map_err(fail)?;
        tx.execute(
            &stmt,
            &[
                &dst,
                &incoming.balance_after.value(),
                &now,
                &dst_head.seq,
                &&dst_head.hash[..],
            ],
        )
        .await
        .map_err(fail)?;
        insert_entries(&tx, &legs).await.map_err(fail)?;
        let events = [
            OutboxEvent::transaction_completed(&plan.out),
            OutboxEvent::transaction_completed(&incoming),
        ];
        insert_outbox(&tx, &events).await.map_err(fail)?;
        let body = crate::views::transfer_reply(&plan.out, &incoming);
        complete_idempotency(&tx, &[(&plan.out.origin, 201, body)])
            .await
            .map_err(fail)?;
        let audit = [AuditRow::from_origin(
            &plan.out.origin,
            "wallet.transfer",
            "wallet",
            src.to_string(),
            "APPLIED",
            json!({"to_wallet_id": dst, "amount": plan.out.amount.to_string(), "out_txn_id": plan.out.txn_id, "in_txn_id": incoming.txn_id}),
        )];
        insert_audit(&tx, &audit).await.map_err(fail)?;
        tx.commit().await.map_err(|e| {
            TransferError::Commit(CommitError::Unavailable {
                reason: format!("commit failed: {e}"),
                outcome_unknown: true,
            })
        })?;
        self.reads.note_commit(&c, &self.pool, &[src, dst]).await;
        self.outbox_written.notify_one();
        self.cache.put(&plan.source_after);
        // The destination's full row is not at hand here; drop it so the next read goes to Postgres.
        self.cache.invalidate(dst);
        Ok(incoming)
    }
}

/// Why a wallet was not created.
#[derive(Debug, Clone)]
pub enum CreateWalletError {
    UserNotFound,
    Exists(Uuid),
    /// The engine refused the opening balance (see `wallet_actors::command::plan_opening`).
    Refused(Rejection),
    /// The Idempotency-Key was released or taken over before the commit: nothing was written.
    ClaimLost,
    /// The connection broke during COMMIT: the wallet may or may not exist.
    OutcomeUnknown,
    Store(StoreError),
}

/// A user as stored (email still encrypted).
pub struct UserRow {
    pub user_id: Uuid,
    pub email_encrypted: Vec<u8>,
    pub company_id: Uuid,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Filters of the history query, already validated.
#[derive(Debug, Default, Clone)]
pub struct HistoryFilter {
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub until: Option<DateTime<Utc>>,
    pub kind: Option<TxnType>,
    pub status: Option<String>,
    pub page: u32,
    pub limit: u32,
    /// Keyset paging: only rows after this one in the history's order (older, or as old with a smaller id);
    /// `page` is then ignored.
    pub after: Option<HistoryCursor>,
    /// Count the matching rows (a page request, or the first page of a cursor walk).
    pub count: bool,
}

/// Where a keyset walk of a history stands: the last row seen, in the order the history is listed
/// (`created_at DESC, txn_id DESC`, which the `(wallet_id, created_at DESC, txn_id DESC)` index serves).
/// Rows inserted during the walk are newer than any cursor, so a walk sees every row that existed when it
/// started exactly once, however long it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    pub created_at: DateTime<Utc>,
    pub txn_id: Uuid,
}

/// A text that is no cursor this service issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not a cursor this service issued (use the next_cursor of a reply)")]
pub struct BadCursor;

impl HistoryCursor {
    /// Opaque to clients: base64url of the row's microsecond timestamp and id.
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&self.created_at.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(self.txn_id.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str) -> Result<HistoryCursor, BadCursor> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| BadCursor)?;
        let (micros, id) = bytes.split_at_checked(8).ok_or(BadCursor)?;
        let micros = i64::from_be_bytes(micros.try_into().map_err(|_| BadCursor)?);
        Ok(HistoryCursor {
            created_at: DateTime::from_timestamp_micros(micros).ok_or(BadCursor)?,
            txn_id: Uuid::from_slice(id).map_err(|_| BadCursor)?,
        })
    }
}

/// A page of a history: its rows, how many match (when counted), and where the next page starts.
#[derive(Debug)]
pub struct HistoryPage {
    pub items: Vec<crate::views::HistoryItem>,
    pub total: Option<i64>,
    pub next: Option<HistoryCursor>,
}

impl PgStore {
    pub async fn upsert_user(
        &self,
        user_id: Uuid,
        email_encrypted: &[u8],
        email_hash: &[u8],
        company_id: Uuid,
        role: &str,
        audit: AuditRow,
    ) -> Result<UserRow, StoreError> {
        let mut c = self.pool.get().await.map_err(unavailable)?;
        let tx = c.transaction().await.map_err(unavailable)?;
        let row = tx
            .query_one(
                "INSERT INTO users (user_id, email_encrypted, email_hash, company_id, role) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (user_id) DO UPDATE SET email_encrypted = EXCLUDED.email_encrypted, email_hash = EXCLUDED.email_hash, \
                     company_id = EXCLUDED.company_id, role = EXCLUDED.role, updated_at = CURRENT_TIMESTAMP \
                 RETURNING user_id, email_encrypted, company_id, role, created_at, updated_at",
                &[&user_id, &email_encrypted, &email_hash, &company_id, &role],
            )
            .await
            .map_err(unavailable)?;
        insert_audit(&tx, &[audit]).await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        user_from_row(&row)
    }

    pub async fn get_user(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let row = c
            .query_opt("SELECT user_id, email_encrypted, company_id, role, created_at, updated_at FROM users WHERE user_id = $1", &[&user_id])
            .await
            .map_err(unavailable)?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Creates a wallet, its `WalletCreated` outbox row, its audit row and (if any) its idempotent reply,
    /// in one transaction. Its opening balance is the ledger entry `open` plans (the engine's, called by
    /// the service) for the wallet as it is about to be inserted (balance 0, active): it is written in this
    /// transaction like any credit, and the row starts with `initial_balance` 0, so its balance is the sum
    /// of its ledger rows. The bound (`MAX_INITIAL_BALANCE`) is the caller's to check.
    pub async fn create_wallet<F>(
        &self,
        user_id: Uuid,
        currency: Currency,
        origin: &Origin,
        open: F,
    ) -> Result<WalletState, CreateWalletError>
    where
        F: FnOnce(&WalletState) -> Result<Option<Entry>, Rejection> + Send,
    {
        let st = |e: tokio_postgres::Error| CreateWalletError::Store(unavailable(e));
        let mut c = self
            .pool
            .get()
            .await
            .map_err(|e| CreateWalletError::Store(unavailable(e)))?;
        let tx = c.transaction().await.map_err(st)?;
        let claim: Vec<&wallet_actors::IdempotencyTicket> = origin.idempotency.iter().collect();
        if !idempotency::fence(&tx, &claim).await.map_err(st)?.is_empty() {
            return Err(CreateWalletError::ClaimLost);
        }
        let Some(user) = tx
            .query_opt("SELECT company_id FROM users WHERE user_id = $1 FOR SHARE", &[&user_id])
            .await
            .map_err(st)?
        else {
            return Err(CreateWalletError::UserNotFound);
        };
        let company_id: Uuid = col(&user, "company_id").map_err(CreateWalletError::Store)?;
        let wallet_id = Uuid::now_v7();
        let now = Utc::now();
        let blank = WalletState {
            wallet_id,
            user_id,
            company_id,
            balance: Amount::ZERO,
            currency,
            status: WalletStatus::Active,
            version: 0,
            created_at: now,
            updated_at: now,
            budgets: vec![],
            holds: vec![],
            head: Head::default(),
        };
        let opening = open(&blank).map_err(CreateWalletError::Refused)?;
        let initial = opening.as_ref().map_or(Amount::ZERO, |e| e.amount);
        let balance = opening.as_ref().map_or(Amount::ZERO, |e| e.balance_after);
        // The opening entry is the chain's first row (the engine linked it after the genesis head).
        let head = opening
            .as_ref()
            .and_then(|e| e.link)
            .map(|l| l.head())
            .unwrap_or_default();
        let row = tx
            .query_opt(
                "INSERT INTO wallets (wallet_id, user_id, balance, initial_balance, currency, head_seq, head_hash) \
                 VALUES ($1, $2, $3, 0, $4, $6, $7) \
                 ON CONFLICT (user_id) DO NOTHING \
                 RETURNING wallet_id, user_id, $5::uuid AS company_id, balance, currency, status, version, created_at, \
                           updated_at, head_seq, head_hash",
                &[
                    &wallet_id,
                    &user_id,
                    &balance.value(),
                    &currency.as_str(),
                    &company_id,
                    &head.seq,
                    &&head.hash[..],
                ],
            )
            .await
            .map_err(st)?;
        let Some(row) = row else {
            let existing = tx
                .query_one("SELECT wallet_id FROM wallets WHERE user_id = $1", &[&user_id])
                .await
                .map_err(st)?;
            return Err(CreateWalletError::Exists(
                col(&existing, "wallet_id").map_err(CreateWalletError::Store)?,
            ));
        };
        let wallet = wallet_from_row(&row).map_err(CreateWalletError::Store)?;
        if let Some(entry) = &opening {
            let entries = [entry];
            // The wallet is new, so its opening reference cannot be taken.
            if !claim_references(&tx, &entries).await.map_err(st)?.is_empty() {
                return Err(CreateWalletError::Store(StoreError::Other(
                    "the opening balance's reference of a new wallet is taken".into(),
                )));
            }
            insert_entries(&tx, &entries).await.map_err(st)?;
        }
        #[derive(serde::Serialize)]
        struct Created {
            wallet_id: Uuid,
            user_id: Uuid,
            initial_balance: String,
            currency: &'static str,
        }
        let event = OutboxEvent::new(
            "WalletCreated",
            "wallet.created",
            wallet_id,
            Created {
                wallet_id,
                user_id,
                initial_balance: initial.to_string(),
                currency: currency.as_str(),
            },
        );
        let events: Vec<OutboxEvent> = std::iter::once(event)
            .chain(opening.iter().map(OutboxEvent::transaction_completed))
            .collect();
        insert_outbox(&tx, &events).await.map_err(st)?;
        complete_idempotency(&tx, &[(origin, 201, crate::views::wallet_reply(&wallet))])
            .await
            .map_err(st)?;
        let audit = AuditRow::from_origin(
            origin,
            "wallet.create",
            "wallet",
            wallet_id.to_string(),
            "APPLIED",
            json!({
                "user_id": user_id,
                "initial_balance": initial.to_string(),
                "currency": currency.as_str(),
                "opening_txn_id": opening.as_ref().map(|e| e.txn_id),
            }),
        );
        insert_audit(&tx, &[audit]).await.map_err(st)?;
        tx.commit().await.map_err(|e| {
            warn!(error = %e, "wallet creation: the commit's outcome is unknown");
            CreateWalletError::OutcomeUnknown
        })?;
        self.reads.note_commit(&c, &self.pool, &[wallet_id]).await;
        self.outbox_written.notify_one();
        Ok(wallet)
    }

    /// A wallet's row and open holds for a read (`GET /wallets/{userId}`), without the budgets an actor
    /// loads, read with other reads' misses in one round trip and written through to the cache (see
    /// [`reader`]).
    pub async fn wallet_row(&self, wallet_id: Uuid) -> Result<Option<WalletState>, StoreError> {
        self.reader.read(wallet_id).await
    }

    pub async fn wallet_id_of_user(&self, user_id: Uuid) -> Result<Option<Uuid>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let stmt = c
            .prepare_cached("SELECT wallet_id FROM wallets WHERE user_id = $1")
            .await
            .map_err(unavailable)?;
        c.query_opt(&stmt, &[&user_id])
            .await
            .map_err(unavailable)?
            .map(|r| col(&r, "wallet_id"))
            .transpose()
    }

    /// A connection to read `scope` from: the replica once it has replayed this process's last commit of
    /// those wallets (read-your-writes), else the primary; the primary when there is no replica or it is
    /// down (see [`replica`]). Every read of wallet data takes its connection here.
    pub async fn read_client(&self, scope: ReadScope<'_>) -> Result<deadpool_postgres::Object, StoreError> {
        self.reads.client(&self.pool, scope).await
    }

    /// One page of a wallet's history, newest first, and the total matching.
    pub async fn history(&self, wallet_id: Uuid, f: &HistoryFilter) -> Result<HistoryPage, StoreError> {
        let c = self.read_client(ReadScope::Wallets(&[wallet_id])).await?;
        let kind = f.kind.map(|k| k.as_str());
        let offset = if f.after.is_some() {
            0
        } else {
            i64::from(f.page.saturating_sub(1)) * i64::from(f.limit)
        };
        // One row more than the page: whether there is a next page, without counting.
        let fetch = i64::from(f.limit) + 1;
        let (after_at, after_id) = (f.after.map(|a| a.created_at), f.after.map(|a| a.txn_id));
        let filter = "wallet_id = $1 AND ($2::timestamptz IS NULL OR created_at >= $2) AND ($3::timestamptz IS NULL OR created_at < $3) \
                      AND ($4::text IS NULL OR type = $4) AND ($5::text IS NULL OR status = $5)";
        let rows = c
            .query(
                &format!(
                    "SELECT txn_id, amount, type, description, reference_id, reference_type, status, balance_after, created_at \
                     FROM transactions WHERE {filter} AND ($8::timestamptz IS NULL OR (created_at, txn_id) < ($8, $9::uuid)) \
                     ORDER BY created_at DESC, txn_id DESC LIMIT $6 OFFSET $7"
                ),
                &[&wallet_id, &f.from, &f.until, &kind, &f.status, &fetch, &offset, &after_at, &after_id],
            )
            .await
            .map_err(unavailable)?;
        let total = if f.count {
            let row = c
                .query_one(
                    &format!("SELECT count(*) AS total FROM transactions WHERE {filter}"),
                    &[&wallet_id, &f.from, &f.until, &kind, &f.status],
                )
                .await
                .map_err(unavailable)?;
            Some(col(&row, "total")?)
        } else {
            None
        };
        let more = rows.len() > f.limit as usize;
        let mut items = Vec::with_capacity(rows.len());
        let mut last = None;
        for r in rows.iter().take(f.limit as usize) {
            let created_at: DateTime<Utc> = col(r, "created_at")?;
            let txn_id: Uuid = col(r, "txn_id")?;
            last = Some(HistoryCursor { created_at, txn_id });
            items.push(crate::views::HistoryItem {
                txn_id,
                amount: fmt_amount(col(r, "amount")?),
                r#type: col(r, "type")?,
                description: col(r, "description")?,
                reference_id: col(r, "reference_id")?,
                reference_type: col(r, "reference_type")?,
                status: col(r, "status")?,
                balance_after: fmt_amount(col(r, "balance_after")?),
                created_at: crate::views::ts(created_at),
            });
        }
        Ok(HistoryPage {
            items,
            total,
            next: if more { last } else { None },
        })
    }

    pub async fn audit(&self, row: AuditRow) -> Result<(), StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        insert_audit(&c, &[row]).await.map_err(unavailable)
    }
}

fn user_from_row(row: &tokio_postgres::Row) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        user_id: col(row, "user_id")?,
        email_encrypted: col(row, "email_encrypted")?,
        company_id: col(row, "company_id")?,
        role: col(row, "role")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

fn fmt_amount(d: Decimal) -> String {
    let mut d = d;
    d.rescale(2);
    d.to_string()
}

/// Midnight UTC of a date (for `start_date`/`end_date` given as dates).
pub fn day_start(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// Most history rows returned for one budget (newest first).
pub const MAX_BUDGET_HISTORY_ROWS: i64 = 1000;

impl PgStore {
    pub async fn wallet_of_budget(&self, budget_id: Uuid) -> Result<Option<Uuid>, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let row = c
            .query_opt("SELECT wallet_id FROM budgets WHERE budget_id = $1", &[&budget_id])
            .await
            .map_err(unavailable)?;
        row.map(|r| col(&r, "wallet_id")).transpose()
    }

    /// A budget's history; `wallet_id` is the budget's wallet (whose writes the read must see).
    pub async fn budget_history(
        &self,
        wallet_id: Uuid,
        budget_id: Uuid,
    ) -> Result<Vec<crate::views::HistoryView>, StoreError> {
        let c = self.read_client(ReadScope::Wallets(&[wallet_id])).await?;
        let rows = c
            .query(
                "SELECT history_id, budget_id, old_amount, new_amount, change_reason, changed_by, created_at \
                 FROM budget_history WHERE budget_id = $1 ORDER BY created_at DESC, history_id DESC LIMIT $2",
                &[&budget_id, &MAX_BUDGET_HISTORY_ROWS],
            )
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(crate::views::HistoryView {
                    history_id: col(r, "history_id")?,
                    budget_id: col(r, "budget_id")?,
                    old_amount: col::<Option<Decimal>>(r, "old_amount")?.map(fmt_amount),
                    new_amount: fmt_amount(col(r, "new_amount")?),
                    change_reason: col(r, "change_reason")?,
                    changed_by: col(r, "changed_by")?,
                    created_at: crate::views::ts(col(r, "created_at")?),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_by_what_failed() {
        let class = |code: &str| by_sqlstate(code, String::new()).kind();
        // Unreachable: connection exceptions, resources, shutdown.
        for code in ["08006", "08001", "53300", "53100", "57P01", "57P03", "58030"] {
            assert_eq!(class(code), "unreachable", "{code}");
        }
        // Busy: contention and timeouts.
        for code in ["40001", "40P01", "55P03", "57014"] {
            assert_eq!(class(code), "busy", "{code}");
        }
        // Refused for its data: a NUL in text (22021 and 22P05), a check or unique constraint, a limit.
        for code in ["22021", "22P05", "22003", "23505", "23514", "54000"] {
            assert_eq!(class(code), "refused", "{code}");
        }
        // Anything else (a missing relation, a syntax error, a server bug) is no one's data and no outage.
        for code in ["42P01", "42601", "XX000", "25P02"] {
            assert_eq!(class(code), "other", "{code}");
        }
        assert!(by_sqlstate("57P01", "x".into()).transient());
        assert!(by_sqlstate("40001", "x".into()).transient());
        assert!(!by_sqlstate("22021", "x".into()).transient());
        assert!(!by_sqlstate("42P01", "x".into()).transient());
    }

    #[test]
    fn the_helpers_keep_the_cause_for_the_log() {
        let e = unavailable("batch left unwritten");
        assert_eq!(e, StoreError::Other("batch left unwritten".into()));
        assert_eq!(e.cause(), "batch left unwritten");
        let e = unavailable(wallet_actors::AmountError::Negative);
        assert_eq!(e.kind(), "corrupt");
        match commit_err(StoreError::Unreachable("pool timed out".into())) {
            CommitError::Unavailable {
                reason,
                outcome_unknown,
            } => {
                assert_eq!(reason, "database unreachable: pool timed out");
                assert!(!outcome_unknown);
            }
            other => panic!("{other:?}"),
        }
    }
}
