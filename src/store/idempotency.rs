//! Idempotency-Key records: claims, fenced completion, release, and resolution of unknown outcomes.
//!
//! # Why a retry can never move money twice
//! A claim writes a fresh `claim_token` into the key's row. The effect's commit locks that row and goes
//! ahead only while it still holds the token and no reply (see [`fence`] and the plain statement in
//! `committer`), and it writes the reply in the same commit. Everything else that touches an unfinished
//! claim — a release after a failure, a takeover by a retry after the lease — is a single-row statement
//! on the same row. Row locks order them, so exactly one of two things happens:
//! - the commit locked the row first: it commits the effect *and* the reply; a later release or takeover
//!   finds the reply and leaves it (the client gets the reply replayed);
//! - the release or takeover came first: the token is gone, the commit's fence finds nothing and the
//!   commit writes nothing for that request.
//!
//! So the lease ([`IDEMPOTENCY_LEASE_SECS`]) is about liveness only: how soon a key abandoned by a crashed
//! or stalled process can be retried. No timing makes a late commit land after its claim was given up.

use std::sync::LazyLock;

use deadpool_postgres::GenericClient;
use uuid::Uuid;
use wallet_actors::IdempotencyTicket;
use wallet_actors::store::StoreError;

use super::{PgStore, unavailable};

/// How long a claim protects a running request before a retry may take it over. A claim held by a
/// process that died is free this long after it was made at the latest. Safe at any length (see the
/// module docs); longer than a request normally takes (queue wait plus commit).
pub const IDEMPOTENCY_LEASE_SECS: i64 = 10;

/// An Idempotency-Key claim's outcome.
pub enum Claim {
    /// Ours to run, under this claim token.
    Claimed { token: Uuid },
    /// Finished before: replay this.
    Replay { status: u16, body: String },
    /// Another request with this key is running; its lease ends in this many seconds.
    InProgress { retry_after_secs: u64 },
    /// The key was used with another request.
    Mismatch,
}

/// What became of a claim whose commit's outcome was unknown.
pub enum Resolution {
    /// The claim was released (or had been taken over): the old attempt can no longer commit.
    NotApplied,
    /// The key has a reply: the attempt (or the retry that took the key over) committed it.
    Replied { status: u16, body: String },
}

impl PgStore {
    /// Claims an Idempotency-Key for a request, or says what happened to it before. An unfinished claim
    /// whose lease ended is taken over (with a new token, which fences the old holder's commit), but only
    /// by the same request: another body is a reuse of the key.
    pub async fn claim_idempotency(
        &self,
        caller: Uuid,
        endpoint: &str,
        key: &str,
        hash: &[u8],
    ) -> Result<Claim, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let token = Uuid::new_v4();
        let lease = IDEMPOTENCY_LEASE_SECS as f64;
        // A new key costs this one round trip (prepared once per connection). DO NOTHING never waits on the
        // row of a key whose commit is running (that commit holds its lock); a DO UPDATE would.
        let stmt = c
            .prepare_cached(
                "INSERT INTO idempotency_keys (caller, endpoint, key, request_hash, locked_until, claim_token) \
                 VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6) \
                 ON CONFLICT (caller, endpoint, key) DO NOTHING RETURNING 1",
            )
            .await
            .map_err(unavailable)?;
        let claimed = c
            .query_opt(&stmt, &[&caller, &endpoint, &key, &hash, &lease, &token])
            .await
            .map_err(unavailable)?;
        if claimed.is_some() {
            return Ok(Claim::Claimed { token });
        }
        let stmt = c
            .prepare_cached(
                "SELECT request_hash, response_status, response_body, locked_until < now() AS expired, \
                        GREATEST(1, CEIL(EXTRACT(EPOCH FROM locked_until - now())))::int8 AS retry_after \
                   FROM idempotency_keys WHERE caller = $1 AND endpoint = $2 AND key = $3",
            )
            .await
            .map_err(unavailable)?;
        let Some(row) = c
            .query_opt(&stmt, &[&caller, &endpoint, &key])
            .await
            .map_err(unavailable)?
        else {
            // Released between our insert and select: the caller may simply try again.
            return Ok(Claim::InProgress { retry_after_secs: 1 });
        };
        let stored: Vec<u8> = row.try_get("request_hash").map_err(unavailable)?;
        if stored != hash {
            return Ok(Claim::Mismatch);
        }
        let status: Option<i16> = row.try_get("response_status").map_err(unavailable)?;
        let body: Option<String> = row.try_get("response_body").map_err(unavailable)?;
        if let (Some(status), Some(body)) = (status, body) {
            return Ok(Claim::Replay {
                status: status as u16,
                body,
            });
        }
        if !row.try_get::<_, bool>("expired").map_err(unavailable)? {
            let secs: i64 = row.try_get("retry_after").map_err(unavailable)?;
            return Ok(Claim::InProgress {
                retry_after_secs: secs.max(1) as u64,
            });
        }
        // The lease ended without a reply (its holder died or stalled): take the claim over with a new
        // token, which fences the old holder's commit. SKIP LOCKED: if that commit is running right now it
        // holds the row, and its outcome is only moments away.
        let stmt = c
            .prepare_cached(
                "UPDATE idempotency_keys SET claim_token = $4, locked_until = now() + make_interval(secs => $5), \
                        created_at = now() \
                  WHERE (caller, endpoint, key) IN ( \
                        SELECT caller, endpoint, key FROM idempotency_keys \
                         WHERE caller = $1 AND endpoint = $2 AND key = $3 \
                           AND response_status IS NULL AND locked_until < now() \
                           FOR UPDATE SKIP LOCKED) \
                 RETURNING 1",
            )
            .await
            .map_err(unavailable)?;
        let taken = c
            .query_opt(&stmt, &[&caller, &endpoint, &key, &token, &lease])
            .await
            .map_err(unavailable)?;
        Ok(match taken {
            Some(_) => {
                metrics::counter!("idempotency_takeovers_total").increment(1);
                Claim::Claimed { token }
            }
            None => Claim::InProgress { retry_after_secs: 1 },
        })
    }

    /// Records the final reply of a request that moved nothing (a refusal), while the claim is still ours.
    pub async fn complete_idempotency(&self, t: &IdempotencyTicket, status: u16, body: &str) -> Result<(), StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        c.execute(
            "UPDATE idempotency_keys SET response_status = $5, response_body = $6 \
              WHERE caller = $1 AND endpoint = $2 AND key = $3 AND claim_token = $4 AND response_status IS NULL",
            &[&t.caller, &t.endpoint, &t.key, &t.token, &(status as i16), &body],
        )
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    /// Gives the claim back so a retry can run at once. True when it was released: from then on the old
    /// attempt's commit is fenced off. False when the claim is no longer ours as an unfinished one (it has
    /// a reply, or was taken over).
    pub async fn release_idempotency(&self, t: &IdempotencyTicket) -> Result<bool, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let n = c
            .execute(
                "DELETE FROM idempotency_keys \
                  WHERE caller = $1 AND endpoint = $2 AND key = $3 AND claim_token = $4 AND response_status IS NULL",
                &[&t.caller, &t.endpoint, &t.key, &t.token],
            )
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    /// After a commit with an unknown outcome: releases the claim, which fences the attempt off if it has
    /// not committed, or finds the reply it committed. Either answer is final and true.
    pub async fn resolve_idempotency(&self, t: &IdempotencyTicket) -> Result<Resolution, StoreError> {
        if self.release_idempotency(t).await? {
            return Ok(Resolution::NotApplied);
        }
        let c = self.pool.get().await.map_err(unavailable)?;
        let row = c
            .query_opt(
                "SELECT response_status, response_body FROM idempotency_keys \
                  WHERE caller = $1 AND endpoint = $2 AND key = $3",
                &[&t.caller, &t.endpoint, &t.key],
            )
            .await
            .map_err(unavailable)?;
        let reply = match &row {
            Some(r) => (
                r.try_get::<_, Option<i16>>("response_status").map_err(unavailable)?,
                r.try_get::<_, Option<String>>("response_body").map_err(unavailable)?,
            ),
            None => (None, None),
        };
        Ok(match reply {
            (Some(status), Some(body)) => Resolution::Replied {
                status: status as u16,
                body,
            },
            // Gone, or taken over by a retry that is still running: our token is not there, so the old
            // attempt cannot commit any more.
            _ => Resolution::NotApplied,
        })
    }
}

/// The claim fence's condition on a row `x` of claims (columns `c` caller, `e` endpoint, `k` key, `t` claim
/// token): its key row still holds that token with no reply, and is locked until the commit. One probe of the
/// primary key per claim, a sub-plan Postgres may not turn into a join (`OFFSET 0`): written as a join, a
/// generic plan made while `idempotency_keys` was small hashed a sequential scan of the whole table and kept
/// doing so as it grew (docs/BENCHMARKS.md, "The claim fence: a stale plan on keyed postings"). Shared by
/// [`fence`] and the group commit's plain statement.
pub(super) const CLAIM_HELD: &str = "EXISTS (SELECT 1 FROM idempotency_keys ik \
     WHERE ik.caller = x.c AND ik.endpoint = x.e AND ik.key = x.k \
       AND ik.claim_token = x.t AND ik.response_status IS NULL OFFSET 0 FOR UPDATE)";

/// [`fence`]'s statement: the positions (from 0) of the claims whose key rows do not hold them.
static FENCE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH x AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[]) \
                    WITH ORDINALITY AS x(c, e, k, t, i)), \
              held AS (SELECT x.i FROM x WHERE {CLAIM_HELD}) \
         SELECT (x.i - 1)::int8 AS idx FROM x WHERE x.i NOT IN (SELECT i FROM held)"
    )
});

/// Inside the effect's transaction: locks the key rows of these claims and returns the positions (in
/// `claims`) of those that no longer hold their token unfinished. The caller writes nothing for those;
/// the locks keep a release or takeover of the others waiting until the commit.
pub(super) async fn fence<C: GenericClient>(
    c: &C,
    claims: &[&IdempotencyTicket],
) -> Result<Vec<usize>, tokio_postgres::Error> {
    if claims.is_empty() {
        return Ok(vec![]);
    }
    let caller: Vec<Uuid> = claims.iter().map(|t| t.caller).collect();
    let endpoint: Vec<&str> = claims.iter().map(|t| t.endpoint.as_str()).collect();
    let key: Vec<&str> = claims.iter().map(|t| t.key.as_str()).collect();
    let token: Vec<Uuid> = claims.iter().map(|t| t.token).collect();
    let stmt = c.prepare_cached(&FENCE).await?;
    let rows = c.query(&stmt, &[&caller, &endpoint, &key, &token]).await?;
    rows.iter().map(|r| Ok(r.try_get::<_, i64>("idx")? as usize)).collect()
}
