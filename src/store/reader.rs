//! Wallet rows for reads, looked up in groups.
//!
//! `GET /wallets/{userId}` (and the visibility checks of other reads) answers from the cache; a miss reads
//! the wallet's row from Postgres. Under read load those misses arrive by the thousand per second, and for
//! a lookup by primary key the statement — its round trip, parse of the reply, executor start-up — costs
//! Postgres and this process far more than the row. So misses queue here and [`WALLET_READERS`] tasks take
//! whatever has queued while they were busy as one `WHERE wallet_id = ANY($1)` look-up (up to
//! [`MAX_READ_GROUP`] ids: the rows and their open holds, two prepared statements pipelined in one round
//! trip). A lone miss still goes at once: a reader that is free takes it alone; grouping
//! happens only when reads wait anyway. The wallets' open holds are read with them (the available balance
//! is the balance less what they reserve). Every wallet read is written through to the cache (under the
//! cache's version guard, so a read never puts an older balance over a newer one).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;
use wallet_actors::{StoreError, WalletState};

use super::rows::Param;
use super::{Pool, WALLETS_BY_IDS, holds, unavailable, wallet_from_row};
use crate::cache::WalletCache;

/// Statements in flight at once (each holds a pooled connection while it runs).
pub const WALLET_READERS: usize = 2;
/// Most wallets one statement reads.
pub const MAX_READ_GROUP: usize = 128;
/// Reads waiting for a reader before new ones wait for room.
pub const MAX_PENDING_READS: usize = 4096;

type Answer = Result<Option<WalletState>, StoreError>;

struct Job {
    wallet_id: Uuid,
    reply: oneshot::Sender<Answer>,
}

/// The handle: cheap to clone; the readers stop when the last handle is dropped.
#[derive(Clone)]
pub struct WalletReader {
    jobs: mpsc::Sender<Job>,
    statements: Arc<AtomicU64>,
}

impl WalletReader {
    /// Starts the dispatcher over `pool`; rows read are written through to `cache`.
    pub fn start(pool: Pool, cache: Arc<WalletCache>) -> Self {
        let (jobs, rx) = mpsc::channel(MAX_PENDING_READS);
        let statements = Arc::new(AtomicU64::new(0));
        tokio::spawn(dispatch(rx, pool, cache, statements.clone()));
        WalletReader { jobs, statements }
    }

    /// The wallet's committed row and open holds (no budgets), or `None` when there is no such wallet.
    pub async fn read(&self, wallet_id: Uuid) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { wallet_id, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Statements run so far (each answered one or more reads).
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }
}

fn stopped() -> StoreError {
    StoreError::Unreachable("the wallet reader stopped (shutting down)".into())
}

/// Takes a reader's permit, then the next read and whatever else queued, and runs them as one statement.
async fn dispatch(mut rx: mpsc::Receiver<Job>, pool: Pool, cache: Arc<WalletCache>, statements: Arc<AtomicU64>) {
    let readers = Arc::new(Semaphore::new(WALLET_READERS));
    loop {
        let Ok(permit) = readers.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < MAX_READ_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        statements.fetch_add(1, Ordering::Relaxed);
        let (pool, cache) = (pool.clone(), cache.clone());
        tokio::spawn(async move {
            answer(group, &pool, &cache).await;
            drop(permit);
        });
    }
}

/// Reads the group's wallets in one statement and answers each read (every read the same error when the
/// statement failed).
async fn answer(group: Vec<Job>, pool: &Pool, cache: &WalletCache) {
    let ids: Vec<Uuid> = group.iter().map(|j| j.wallet_id).collect();
    match read_rows(pool, cache, &ids).await {
        Ok(rows) => {
            for job in group {
                // A read whose caller gave up (timed out) has no one to answer: nothing to do.
                let _ = job.reply.send(Ok(rows.get(&job.wallet_id).cloned()));
            }
        }
        Err(e) => {
            for job in group {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

/// The rows of `ids` that exist, by wallet id, each written through to the cache.
async fn read_rows(pool: &Pool, cache: &WalletCache, ids: &[Uuid]) -> Result<HashMap<Uuid, WalletState>, StoreError> {
    debug_assert!(
        !ids.is_empty() && ids.len() <= MAX_READ_GROUP,
        "a group holds 1..=MAX_READ_GROUP reads"
    );
    let c = pool.get().await.map_err(unavailable)?;
    let stmt = c.prepare_cached(WALLETS_BY_IDS).await.map_err(unavailable)?;
    // Both pipelined on the one connection, as an actor's load is: the open holds are part of what a read
    // shows (the available balance) and of what the cache keeps.
    let params: [Param<'_>; 1] = [&ids];
    let (rows, holds) = tokio::join!(c.query(&stmt, &params), holds::load_open_of(&c, ids));
    let rows = rows.map_err(unavailable)?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        let w = wallet_from_row(row)?;
        found.insert(w.wallet_id, w);
    }
    for h in holds? {
        if let Some(w) = found.get_mut(&h.wallet_id) {
            w.holds.push(h);
        }
    }
    for w in found.values() {
        cache.put(w);
    }
    Ok(found)
}
