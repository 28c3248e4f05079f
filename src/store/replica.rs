//! Read-your-writes over a streaming replica (`DATABASE_READ_URL`).
//!
//! A replica replays the primary's WAL some time after the primary committed it, so a history read on it
//! right after a write could miss that write. The rule: a wallet's reads go to the replica only once the
//! replica's replay position (`pg_last_wal_replay_lsn()`) has passed the WAL position of that wallet's last
//! commit made by this process; otherwise, and whenever the replica cannot be reached, they go to the
//! primary (counted in `wallet_read_fallback_total{reason}`).
//!
//! - After a commit, the committing connection asks once for `pg_current_wal_lsn()` (after COMMIT returned,
//!   so the commit record is at or before it) and the position is kept per wallet, before the caller is
//!   answered. The group committer asks once per group, not per batch. Nothing of this runs without a
//!   replica: then there is no read pool to choose and the commit path has no extra statement.
//! - The map is bounded ([`MAX_TRACKED_WALLETS`]): when full it is emptied and its highest position becomes
//!   the floor every read must see, which is coarser but never wrong. The floor starts at the primary's
//!   position when the process started, so a client of a restarted process still reads its writes.
//! - A position that could not be read after a commit (the connection broke just after COMMIT and the
//!   primary did not answer again) sends that wallet's reads to the primary until its next commit.
//! - The replay position is read on the very replica connection the read then uses, so a
//!   `DATABASE_READ_URL` that spreads connections over several replicas stays correct.
//!
//! What holds across processes: this process knows only its own commits. A client that reads from the
//! instance it wrote to (the consistent-hash routing sends a wallet's requests to one instance) reads its
//! writes; a write made through another instance is seen once the replica has replayed it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use deadpool_postgres::{GenericClient, Object};
use tracing::warn;
use uuid::Uuid;
use wallet_actors::StoreError;

use super::{Pool, col, unavailable};

/// Wallets whose last commit position is kept; past this the map is emptied into the floor (a few MB).
pub const MAX_TRACKED_WALLETS: usize = 100_000;
/// How long a read waits for a replica connection before it goes to the primary.
pub const REPLICA_WAIT: Duration = Duration::from_millis(500);
/// After the replica failed, reads go straight to the primary for this long before it is tried again, so a
/// replica that is down costs one timeout per interval, not one per read.
pub const REPLICA_RETRY_AFTER: Duration = Duration::from_secs(2);

/// A commit whose position is not known: its wallet reads from the primary until its next commit.
const UNKNOWN: u64 = u64::MAX;

/// The primary's current WAL position, as a number (bytes since `0/0`).
const CURRENT_LSN: &str = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS lsn";
/// Whether the server is a standby, and how far it has replayed (NULL on a primary).
const REPLAY_LSN: &str = "SELECT pg_is_in_recovery() AS standby, \
                          (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS replayed";

/// Which wallets a read must see this process's writes of.
#[derive(Debug, Clone, Copy)]
pub enum ReadScope<'a> {
    /// The given wallets (a history, a wallet's report).
    Wallets(&'a [Uuid]),
    /// Every wallet (a company-wide report): the replica must have replayed this process's newest commit.
    Everything,
}

/// Where reads go, and what the replica must have replayed first (see the module docs).
pub struct ReadRouter {
    replica: Option<Pool>,
    commits: DashMap<Uuid, u64>,
    /// Every read must see at least this position.
    floor: AtomicU64,
    /// The highest known position noted.
    highest: AtomicU64,
    /// Wallets noted with an [`UNKNOWN`] position (they are kept when the map is emptied).
    unknown: AtomicUsize,
    /// Until when (ms since `epoch`) the replica is skipped after a failure; 0 when it is not.
    skip_until_ms: AtomicU64,
    epoch: Instant,
}

impl ReadRouter {
    /// No replica: every read goes to the primary and commits note nothing.
    pub fn primary_only() -> ReadRouter {
        ReadRouter::new(None, 0)
    }

    /// Reads go to `replica` when it has replayed what they must see; the floor is the primary's position
    /// now (what earlier processes wrote).
    pub async fn with_replica(primary: &Pool, replica: Pool) -> Result<ReadRouter, StoreError> {
        let c = primary.get().await.map_err(unavailable)?;
        let floor = current_lsn(&c).await?;
        Ok(ReadRouter::new(Some(replica), floor))
    }

    fn new(replica: Option<Pool>, floor: u64) -> ReadRouter {
        ReadRouter {
            replica,
            commits: DashMap::new(),
            floor: AtomicU64::new(floor),
            highest: AtomicU64::new(floor),
            unknown: AtomicUsize::new(0),
            skip_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether commits must note their position (a replica is configured).
    pub fn tracks(&self) -> bool {
        self.replica.is_some()
    }

    /// The replica's pool, if any.
    pub fn replica(&self) -> Option<&Pool> {
        self.replica.as_ref()
    }

    /// Notes that `wallets` committed, reading the position on `c` (the committing connection, after its
    /// COMMIT) or, if that fails, on a fresh connection of `primary`: any position read after the COMMIT
    /// returned is at or after it. Call before the writer's caller is answered.
    pub async fn note_commit<C: GenericClient + Sync>(&self, c: &C, primary: &Pool, wallets: &[Uuid]) {
        if !self.tracks() || wallets.is_empty() {
            return;
        }
        let lsn = match current_lsn(c).await {
            Ok(l) => l,
            Err(first) => match primary.get().await.map_err(unavailable) {
                Ok(fresh) => current_lsn(&fresh).await.unwrap_or(UNKNOWN),
                Err(_) => {
                    warn!(error = %first, "commit position unknown: these wallets read from the primary until their next commit");
                    UNKNOWN
                }
            },
        };
        self.note(wallets, lsn);
    }

    /// Records `lsn` as the last commit position of `wallets`.
    fn note(&self, wallets: &[Uuid], lsn: u64) {
        if lsn != UNKNOWN {
            self.highest.fetch_max(lsn, Ordering::AcqRel);
        }
        if self.commits.len() + wallets.len() > MAX_TRACKED_WALLETS {
            // Coarser but safe: every read now waits for the newest position noted so far.
            self.floor
                .fetch_max(self.highest.load(Ordering::Acquire), Ordering::AcqRel);
            self.commits.retain(|_, v| *v == UNKNOWN);
        }
        for w in wallets {
            let mut entry = self.commits.entry(*w).or_insert(0);
            let was_unknown = *entry == UNKNOWN;
            let now = if lsn == UNKNOWN || was_unknown {
                // A known position replaces an unknown one only when it comes later, which every note
                // after the unknown one does (positions only grow).
                lsn
            } else {
                (*entry).max(lsn)
            };
            *entry = now;
            match (was_unknown, now == UNKNOWN) {
                (false, true) => {
                    self.unknown.fetch_add(1, Ordering::AcqRel);
                }
                (true, false) => {
                    self.unknown.fetch_sub(1, Ordering::AcqRel);
                }
                _ => {}
            }
        }
    }

    /// The position the replica must have replayed for `scope`; `UNKNOWN` when only the primary will do.
    fn needed(&self, scope: ReadScope<'_>) -> u64 {
        let floor = self.floor.load(Ordering::Acquire);
        match scope {
            ReadScope::Wallets(ws) => ws
                .iter()
                .filter_map(|w| self.commits.get(w).map(|v| *v))
                .fold(floor, u64::max),
            ReadScope::Everything if self.unknown.load(Ordering::Acquire) > 0 => UNKNOWN,
            ReadScope::Everything => floor.max(self.highest.load(Ordering::Acquire)),
        }
    }

    fn skipping(&self) -> bool {
        let until = self.skip_until_ms.load(Ordering::Acquire);
        until != 0 && (self.epoch.elapsed().as_millis() as u64) < until
    }

    fn skip_for_a_while(&self) {
        let until = self.epoch.elapsed() + REPLICA_RETRY_AFTER;
        self.skip_until_ms.store(until.as_millis() as u64, Ordering::Release);
    }

    /// A connection to read `scope` from: the replica when it has replayed what `scope` must see, else the
    /// primary (counted as a fallback with its reason).
    pub async fn client(&self, primary: &Pool, scope: ReadScope<'_>) -> Result<Object, StoreError> {
        if let Some(replica) = &self.replica {
            match self.replica_client(replica, scope).await {
                Ok(c) => {
                    metrics::counter!("wallet_reads_total", "from" => "replica").increment(1);
                    return Ok(c);
                }
                Err(reason) => {
                    metrics::counter!("wallet_read_fallback_total", "reason" => reason).increment(1);
                }
            }
        }
        metrics::counter!("wallet_reads_total", "from" => "primary").increment(1);
        primary.get().await.map_err(unavailable)
    }

    /// The replica connection, or why not (the fallback's reason).
    async fn replica_client(&self, replica: &Pool, scope: ReadScope<'_>) -> Result<Object, &'static str> {
        let needed = self.needed(scope);
        if needed == UNKNOWN {
            return Err("unknown_commit");
        }
        if self.skipping() {
            return Err("unreachable");
        }
        let c = match tokio::time::timeout(REPLICA_WAIT, replica.get()).await {
            Ok(Ok(c)) => c,
            _ => {
                self.skip_for_a_while();
                return Err("unreachable");
            }
        };
        let row = match tokio::time::timeout(REPLICA_WAIT, c.query_one(REPLAY_LSN, &[])).await {
            Ok(Ok(row)) => row,
            _ => {
                self.skip_for_a_while();
                return Err("unreachable");
            }
        };
        let standby: bool = col(&row, "standby").map_err(|_| "unreachable")?;
        let replayed: Option<i64> = col(&row, "replayed").map_err(|_| "unreachable")?;
        match (standby, replayed) {
            // A primary behind the read URL (no replica in this deployment) has everything.
            (false, _) => Ok(c),
            (true, Some(r)) if r >= 0 && r as u64 >= needed => Ok(c),
            _ => Err("lagging"),
        }
    }
}

/// The server's current WAL position.
async fn current_lsn<C: GenericClient + Sync + ?Sized>(c: &C) -> Result<u64, StoreError> {
    let row = c.query_one(CURRENT_LSN, &[]).await.map_err(unavailable)?;
    let lsn: i64 = col(&row, "lsn")?;
    Ok(lsn.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(floor: u64) -> ReadRouter {
        ReadRouter::new(None, floor)
    }

    #[test]
    fn a_wallet_needs_its_last_commit_and_never_less_than_the_floor() {
        let r = router(100);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(r.needed(ReadScope::Wallets(&[a])), 100);
        r.note(&[a], 500);
        r.note(&[a], 300);
        assert_eq!(r.needed(ReadScope::Wallets(&[a])), 500, "positions only grow");
        assert_eq!(r.needed(ReadScope::Wallets(&[b])), 100);
        assert_eq!(r.needed(ReadScope::Wallets(&[a, b])), 500);
        assert_eq!(r.needed(ReadScope::Everything), 500);
    }

    #[test]
    fn an_unknown_commit_position_sends_reads_to_the_primary_until_the_next_commit() {
        let r = router(0);
        let a = Uuid::new_v4();
        r.note(&[a], 10);
        r.note(&[a], UNKNOWN);
        assert_eq!(r.needed(ReadScope::Wallets(&[a])), UNKNOWN);
        assert_eq!(r.needed(ReadScope::Everything), UNKNOWN);
        r.note(&[a], 20);
        assert_eq!(r.needed(ReadScope::Wallets(&[a])), 20);
        assert_eq!(r.needed(ReadScope::Everything), 20);
    }

    #[test]
    fn a_full_map_is_emptied_into_the_floor_and_keeps_unknown_positions() {
        let r = router(0);
        let lost = Uuid::new_v4();
        r.note(&[lost], UNKNOWN);
        let many: Vec<Uuid> = (0..MAX_TRACKED_WALLETS).map(|_| Uuid::new_v4()).collect();
        r.note(&many[..MAX_TRACKED_WALLETS - 1], 700);
        let first = many[0];
        assert_eq!(r.needed(ReadScope::Wallets(&[first])), 700);
        r.note(&many[MAX_TRACKED_WALLETS - 1..], 900);
        assert!(r.commits.len() <= MAX_TRACKED_WALLETS, "bounded");
        // Forgotten: the floor, the newest position noted (this very note's included), covers it.
        assert_eq!(r.needed(ReadScope::Wallets(&[first])), 900);
        assert_eq!(r.needed(ReadScope::Wallets(&[lost])), UNKNOWN);
    }
}
