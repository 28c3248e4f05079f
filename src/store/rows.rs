//! What a commit writes besides the wallet row, each as one set-based statement (`unnest` of column
//! arrays) for all the batches of a group: ledger rows, reference keys, outbox events, idempotent replies,
//! inbox rows and audit rows.
//!
//! [`GroupRows`] derives those rows from a group's batches once; its column arrays feed both the
//! statements of the transactional path ([`insert_group_rows`]) and the committer's single statement
//! (`committer::write_plain_statement`), which keeps only the rows of the wallets whose update matched.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use rust_decimal::Decimal;
use serde_json::json;
use tokio_postgres::types::ToSql;
use tracing::warn;
use uuid::Uuid;
use wallet_actors::chain::{CHAIN_VERSION, Link};
use wallet_actors::store::AuditEvent;
use wallet_actors::store::{Batch, CommitError, HoldEvent};
use wallet_actors::{Amount, Entry, Origin, TxnType};

use super::{batch_err, commit_err, corrupt};

use crate::views::OutboxEvent;

/// A statement parameter.
pub(super) type Param<'a> = &'a (dyn ToSql + Sync);

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

impl From<&AuditEvent> for AuditRow {
    fn from(e: &AuditEvent) -> Self {
        AuditRow {
            actor_id: Some(e.actor_id),
            actor_role: e.actor_role.clone(),
            action: e.action.to_string(),
            target_type: e.target_type,
            target_id: e.target_id.clone(),
            outcome: e.outcome.to_string(),
            detail: e.detail.clone(),
        }
    }
}

/// Where an audit row sits on its wallet's chain: its instant (hashed, so written as planned) and link.
#[derive(Clone, Copy)]
pub(super) struct AuditChain {
    at: DateTime<Utc>,
    link: Option<Link>,
}

/// Ledger rows as column arrays. The row is the posting's audit record too: who asked, in which role
/// (see sql/V7).
pub(super) struct EntryCols<'a> {
    pub id: Vec<Uuid>,
    pub wallet: Vec<Uuid>,
    amount: Vec<Decimal>,
    kind: Vec<&'static str>,
    desc: Vec<Option<&'a str>>,
    rid: Vec<Option<&'a str>>,
    rtype: Vec<Option<&'a str>>,
    meta: Vec<Option<&'a serde_json::Value>>,
    after: Vec<Decimal>,
    at: Vec<DateTime<Utc>>,
    actor: Vec<Uuid>,
    role: Vec<&'a str>,
    hold: Vec<Option<Uuid>>,
    chain: ChainCols,
}

/// The chain columns of rows (`chain_seq`, `prev_hash`, `hash`, `chain_version`), NULL for a row without
/// a link (written before chains existed, chained later at start; or the chain switched off).
#[derive(Default)]
pub(super) struct ChainCols {
    seq: Vec<Option<i64>>,
    prev: Vec<Option<Vec<u8>>>,
    hash: Vec<Option<Vec<u8>>>,
    version: Vec<Option<i16>>,
}

impl ChainCols {
    fn push(&mut self, link: Option<&Link>) {
        self.seq.push(link.map(|l| l.seq));
        self.prev.push(link.map(|l| l.prev_hash.to_vec()));
        self.hash.push(link.map(|l| l.hash.to_vec()));
        self.version.push(link.map(|_| CHAIN_VERSION));
    }

    fn params(&self) -> [Param<'_>; 4] {
        [&self.seq, &self.prev, &self.hash, &self.version]
    }
}

impl<'a> EntryCols<'a> {
    /// The `unnest` of [`EntryCols::params`], as `AS alias(txn_id, wallet_id, amount, type, ...)`.
    pub const UNNEST: &'static str = "unnest($1::uuid[], $2::uuid[], $3::numeric[], $4::text[], $5::text[], \
         $6::text[], $7::text[], $8::jsonb[], $9::numeric[], $10::timestamptz[], $11::uuid[], $12::text[], \
         $13::int8[], $14::bytea[], $15::bytea[], $16::int2[])";
    pub const COLUMNS: &'static str = "txn_id, wallet_id, amount, type, description, reference_id, reference_type, \
         metadata, balance_after, created_at, actor_id, actor_role, chain_seq, prev_hash, hash, chain_version";

    pub fn of(entries: &[&'a Entry]) -> Self {
        EntryCols {
            id: entries.iter().map(|e| e.txn_id).collect(),
            wallet: entries.iter().map(|e| e.wallet_id).collect(),
            amount: entries.iter().map(|e| e.amount.value()).collect(),
            kind: entries.iter().map(|e| e.kind.as_str()).collect(),
            desc: entries.iter().map(|e| e.description.as_deref()).collect(),
            rid: entries.iter().map(|e| e.reference_id.as_deref()).collect(),
            rtype: entries.iter().map(|e| e.reference_type.as_deref()).collect(),
            meta: entries.iter().map(|e| e.metadata.as_ref()).collect(),
            after: entries.iter().map(|e| e.balance_after.value()).collect(),
            at: entries.iter().map(|e| e.created_at).collect(),
            actor: entries.iter().map(|e| e.origin.actor_id).collect(),
            role: entries.iter().map(|e| e.origin.role.as_str()).collect(),
            hold: entries.iter().map(|e| e.hold_id).collect(),
            chain: {
                let mut c = ChainCols::default();
                for e in entries {
                    c.push(e.link.as_ref());
                }
                c
            },
        }
    }

    /// The hold each row captures (`hold_id`), beside [`EntryCols::params`].
    pub fn holds(&self) -> Param<'_> {
        &self.hold
    }

    pub fn params(&self) -> [Param<'_>; 16] {
        let [seq, prev, hash, version] = self.chain.params();
        [
            &self.id,
            &self.wallet,
            &self.amount,
            &self.kind,
            &self.desc,
            &self.rid,
            &self.rtype,
            &self.meta,
            &self.after,
            &self.at,
            &self.actor,
            &self.role,
            seq,
            prev,
            hash,
            version,
        ]
    }
}

/// Reference keys of the entries that carry one, as column arrays; `index[i]` is the entry's position in
/// the slice they were taken from.
pub(super) struct KeyCols<'a> {
    pub index: Vec<usize>,
    pub wallet: Vec<Uuid>,
    pub rtype: Vec<&'a str>,
    pub rid: Vec<&'a str>,
    pub kind: Vec<&'static str>,
    pub txn: Vec<Uuid>,
    amount: Vec<Decimal>,
}

impl<'a> KeyCols<'a> {
    pub fn of(entries: &[&'a Entry]) -> Self {
        let mut k = KeyCols {
            index: vec![],
            wallet: vec![],
            rtype: vec![],
            rid: vec![],
            kind: vec![],
            txn: vec![],
            amount: vec![],
        };
        for (i, e) in entries.iter().enumerate() {
            if let (Some(rid), Some(rtype)) = (e.reference_id.as_deref(), e.reference_type.as_deref()) {
                k.index.push(i);
                k.wallet.push(e.wallet_id);
                k.rtype.push(rtype);
                k.rid.push(rid);
                k.kind.push(e.kind.as_str());
                // A hold's captures share one key, held under the hold's id (see `claim_references`).
                k.txn.push(e.hold_id.unwrap_or(e.txn_id));
                k.amount.push(e.amount.value());
            }
        }
        k
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn params(&self) -> [Param<'_>; 6] {
        [
            &self.wallet,
            &self.rtype,
            &self.rid,
            &self.kind,
            &self.txn,
            &self.amount,
        ]
    }

    /// The keys (wallet, type, id, kind) already taken, with the transaction that holds each. Keys of the
    /// entries' own transactions are left out.
    pub async fn taken<C: GenericClient>(&self, c: &C) -> Result<Vec<(usize, Uuid)>, tokio_postgres::Error> {
        if self.is_empty() {
            return Ok(vec![]);
        }
        let stmt = c
            .prepare_cached(
                "SELECT r.wallet_id, r.reference_type, r.reference_id, r.type, r.txn_id FROM transaction_references r \
                 JOIN unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS k(w, rt, ri, ty) \
                   ON r.wallet_id = k.w AND r.reference_type = k.rt AND r.reference_id = k.ri AND r.type = k.ty",
            )
            .await?;
        let existing = c
            .query(&stmt, &[&self.wallet, &self.rtype, &self.rid, &self.kind])
            .await?;
        let mut taken = Vec::new();
        for (j, &i) in self.index.iter().enumerate() {
            let mut holder = None;
            for r in &existing {
                if r.try_get::<_, Uuid>("wallet_id")? == self.wallet[j]
                    && r.try_get::<_, &str>("reference_type")? == self.rtype[j]
                    && r.try_get::<_, &str>("reference_id")? == self.rid[j]
                    && r.try_get::<_, &str>("type")? == self.kind[j]
                {
                    holder = Some(r);
                    break;
                }
            }
            if let Some(r) = holder {
                let txn: Uuid = r.try_get("txn_id")?;
                if txn != self.txn[j] {
                    taken.push((i, txn));
                }
            }
        }
        Ok(taken)
    }
}

/// Everything committed batches write besides the wallet rows and reference keys, each row tagged with
/// the wallet whose batch it belongs to: ledger rows, outbox events (`TransactionCompleted`,
/// `BudgetExceeded`), idempotent replies, inbox rows, and audit rows (status changes, budgets created and
/// changed, refusals; a posting's own ledger row is its audit record).
pub(super) struct GroupRows<'a> {
    pub entries: Vec<&'a Entry>,
    events: Vec<OutboxEvent>,
    event_wallet: Vec<Uuid>,
    replies: Vec<(Uuid, &'a Origin, String)>,
    inbox: Vec<(Uuid, Uuid, &'static str)>,
    /// Each audit row with its batch's wallet, and its chain place when it is on the wallet's chain.
    audit: Vec<(Uuid, AuditRow, Option<AuditChain>)>,
}

impl<'a> GroupRows<'a> {
    pub fn of(batches: &[&'a Batch]) -> Self {
        let entries: Vec<&Entry> = batches.iter().flat_map(|b| b.entries.iter()).collect();
        let mut events = Vec::with_capacity(entries.len());
        let mut event_wallet = Vec::with_capacity(entries.len());
        for e in &entries {
            events.push(OutboxEvent::transaction_completed(e));
            event_wallet.push(e.wallet_id);
        }
        for b in batches {
            for ev in super::alert_events(b) {
                events.push(ev);
                event_wallet.push(b.wallet_id);
            }
            for ch in &b.hold_changes {
                events.push(OutboxEvent::hold_event(ch));
                event_wallet.push(b.wallet_id);
            }
            for s in &b.suspicious {
                events.push(OutboxEvent::suspicious_activity(&b.after, s));
                event_wallet.push(b.wallet_id);
            }
        }
        let mut replies: Vec<(Uuid, &Origin, String)> = entries
            .iter()
            .filter(|e| e.origin.idempotency.is_some())
            .map(|e| (e.wallet_id, &e.origin, crate::views::posting_reply(e)))
            .collect();
        // A capture's reply is its entry's (above); a placed hold's is the hold.
        for b in batches {
            for ch in b.hold_changes.iter().filter(|ch| ch.event == HoldEvent::Placed) {
                if ch.origin.idempotency.is_some() {
                    replies.push((b.wallet_id, &ch.origin, crate::views::hold_reply(&ch.hold)));
                }
            }
        }
        // A hold's placement and release carry their event's inbox row too (a capture's is its entry's;
        // the same event twice is written once: `ON CONFLICT DO NOTHING`).
        let inbox = entries
            .iter()
            .filter_map(|e| e.origin.inbox_event.map(|ev| (e.wallet_id, ev.id, ev.event_type)))
            .chain(batches.iter().flat_map(|b| {
                b.hold_changes
                    .iter()
                    .filter_map(|ch| ch.origin.inbox_event.map(|ev| (b.wallet_id, ev.id, ev.event_type)))
            }))
            .collect();
        let mut audit = Vec::new();
        for b in batches {
            // Status changes, budgets and holds: the engine built their rows, hashed on the wallet's chain.
            for ev in &b.audit {
                let chain = AuditChain {
                    at: ev.at,
                    link: ev.link,
                };
                audit.push((b.wallet_id, AuditRow::from(ev), Some(chain)));
            }
            for r in &b.refusals {
                let row = AuditRow::from_origin(
                    &r.origin,
                    r.action,
                    "wallet",
                    b.wallet_id.to_string(),
                    r.rejection.code(),
                    json!({"amount": r.amount.map(|a| a.to_string()), "detail": r.rejection.to_string()}),
                );
                audit.push((b.wallet_id, row, None));
            }
        }
        GroupRows {
            entries,
            events,
            event_wallet,
            replies,
            inbox,
            audit,
        }
    }

    pub fn events(&self) -> EventCols {
        EventCols::of(&self.events, Some(&self.event_wallet))
    }

    pub fn replies(&self) -> ReplyCols<'_> {
        ReplyCols::of(self.replies.iter().map(|(w, o, b)| (*w, *o, 201, b.as_str())))
    }

    pub fn inbox(&self) -> InboxCols {
        InboxCols {
            wallet: self.inbox.iter().map(|r| r.0).collect(),
            id: self.inbox.iter().map(|r| r.1).collect(),
            kind: self.inbox.iter().map(|r| r.2).collect(),
        }
    }

    pub fn audit(&self) -> AuditCols<'_> {
        AuditCols::of(self.audit.iter().map(|(w, r, c)| (*w, r, *c)))
    }
}

/// Outbox events as one JSON array per commit (`sql/V13`): for each wallet, its events' array elements
/// in the order they are published, joined by commas (`element[i]` with `count[i]` events belongs to
/// `wallet[i]`); the statement joins the elements of the wallets it updated into the commit's one row.
/// Without wallets (a transaction's own rows) there is one element of all the events.
/// [`write_outbox`] writes all elements as one row.
pub(super) struct EventCols {
    pub wallet: Vec<Uuid>,
    element: Vec<String>,
    count: Vec<i32>,
}

impl EventCols {
    fn of(events: &[OutboxEvent], wallet: Option<&[Uuid]>) -> Self {
        let mut cols = EventCols {
            wallet: Vec::new(),
            element: Vec::new(),
            count: Vec::new(),
        };
        for (i, e) in events.iter().enumerate() {
            let at = match wallet {
                // Few wallets per group, in a sorted group: a linear look-up from the end is the common hit.
                Some(w) => match cols.wallet.iter().rposition(|x| *x == w[i]) {
                    Some(at) => at,
                    None => cols.push(Some(w[i])),
                },
                None if cols.element.is_empty() => cols.push(None),
                None => 0,
            };
            let element = &mut cols.element[at];
            if !element.is_empty() {
                element.push(',');
            }
            e.write_array_element(element);
            cols.count[at] += 1;
        }
        cols
    }

    fn push(&mut self, wallet: Option<Uuid>) -> usize {
        self.wallet.extend(wallet);
        self.element.push(String::new());
        self.count.push(0);
        self.element.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.element.is_empty()
    }

    /// Elements and counts (the statement's wallet column is pushed by the caller).
    pub fn params(&self) -> [Param<'_>; 2] {
        [&self.element, &self.count]
    }
}

/// Idempotent replies as column arrays.
pub(super) struct ReplyCols<'a> {
    pub wallet: Vec<Uuid>,
    caller: Vec<Uuid>,
    endpoint: Vec<&'a str>,
    key: Vec<&'a str>,
    status: Vec<i16>,
    body: Vec<&'a str>,
    token: Vec<Uuid>,
}

impl<'a> ReplyCols<'a> {
    pub const UNNEST: &'static str = "unnest($1::uuid[], $2::text[], $3::text[], $4::int2[], $5::text[], $6::uuid[])";

    /// Replies of the origins that carry an Idempotency-Key (the others have no key to complete).
    fn of(replies: impl Iterator<Item = (Uuid, &'a Origin, u16, &'a str)>) -> Self {
        let mut c = ReplyCols {
            wallet: vec![],
            caller: vec![],
            endpoint: vec![],
            key: vec![],
            status: vec![],
            body: vec![],
            token: vec![],
        };
        for (w, o, status, body) in replies {
            if let Some(t) = &o.idempotency {
                c.wallet.push(w);
                c.caller.push(t.caller);
                c.endpoint.push(t.endpoint.as_str());
                c.key.push(t.key.as_str());
                c.status.push(status as i16);
                c.body.push(body);
                c.token.push(t.token);
            }
        }
        c
    }

    pub fn params(&self) -> [Param<'_>; 6] {
        [
            &self.caller,
            &self.endpoint,
            &self.key,
            &self.status,
            &self.body,
            &self.token,
        ]
    }
}

/// Inbox rows (consumed event ids) as column arrays.
pub(super) struct InboxCols {
    pub wallet: Vec<Uuid>,
    id: Vec<Uuid>,
    kind: Vec<&'static str>,
}

impl InboxCols {
    pub const UNNEST: &'static str = "unnest($1::uuid[], $2::text[])";

    pub fn params(&self) -> [Param<'_>; 2] {
        [&self.id, &self.kind]
    }
}

/// Audit rows as column arrays.
pub(super) struct AuditCols<'a> {
    pub wallet: Vec<Uuid>,
    actor: Vec<Option<Uuid>>,
    role: Vec<&'a str>,
    action: Vec<&'a str>,
    target_type: Vec<&'static str>,
    target_id: Vec<&'a str>,
    outcome: Vec<&'a str>,
    detail: Vec<&'a serde_json::Value>,
    /// The chain's columns: `wallet_id` and `at` are set only for rows on a wallet's chain (the others
    /// take the database's clock and no wallet).
    chained_wallet: Vec<Option<Uuid>>,
    at: Vec<Option<DateTime<Utc>>>,
    chain: ChainCols,
}

impl<'a> AuditCols<'a> {
    pub const UNNEST: &'static str = "unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::jsonb[], $8::uuid[], $9::timestamptz[], $10::int8[], $11::bytea[], $12::bytea[], $13::int2[])";

    fn of(rows: impl Iterator<Item = (Uuid, &'a AuditRow, Option<AuditChain>)>) -> Self {
        let mut c = AuditCols {
            wallet: vec![],
            actor: vec![],
            role: vec![],
            action: vec![],
            target_type: vec![],
            target_id: vec![],
            outcome: vec![],
            detail: vec![],
            chained_wallet: vec![],
            at: vec![],
            chain: ChainCols::default(),
        };
        for (w, r, chain) in rows {
            c.wallet.push(w);
            c.actor.push(r.actor_id);
            c.role.push(&r.actor_role);
            c.action.push(&r.action);
            c.target_type.push(r.target_type);
            c.target_id.push(&r.target_id);
            c.outcome.push(&r.outcome);
            c.detail.push(&r.detail);
            c.chained_wallet.push(chain.map(|_| w));
            c.at.push(chain.map(|ch| ch.at));
            c.chain.push(chain.and_then(|ch| ch.link).as_ref());
        }
        c
    }

    /// The chain's columns: the chained row's wallet, its instant, and its link.
    pub fn chain_params(&self) -> [Param<'_>; 6] {
        let [seq, prev, hash, version] = self.chain.params();
        [&self.chained_wallet, &self.at, seq, prev, hash, version]
    }

    pub fn params(&self) -> [Param<'_>; 7] {
        [
            &self.actor,
            &self.role,
            &self.action,
            &self.target_type,
            &self.target_id,
            &self.outcome,
            &self.detail,
        ]
    }
}

pub(super) async fn insert_audit<C: GenericClient>(c: &C, rows: &[AuditRow]) -> Result<(), tokio_postgres::Error> {
    write_audit(c, &AuditCols::of(rows.iter().map(|r| (Uuid::nil(), r, None)))).await
}

async fn write_audit<C: GenericClient>(c: &C, cols: &AuditCols<'_>) -> Result<(), tokio_postgres::Error> {
    if cols.actor.is_empty() {
        return Ok(());
    }
    let stmt = c
        .prepare_cached(&format!(
            "INSERT INTO audit_log (actor_id, actor_role, action, target_type, target_id, outcome, detail, \
                                    wallet_id, at, chain_seq, prev_hash, hash, chain_version) \
             SELECT a, r, ac, tt, ti, o, d, w, COALESCE(at, CURRENT_TIMESTAMP), s, ph, h, v \
               FROM {} AS x(a, r, ac, tt, ti, o, d, w, at, s, ph, h, v)",
            AuditCols::UNNEST
        ))
        .await?;
    let mut params: Vec<Param<'_>> = cols.params().to_vec();
    params.extend(cols.chain_params());
    c.execute(&stmt, &params).await?;
    Ok(())
}

/// Writes outbox rows (in the caller's transaction: the change they report commits with them).
pub(crate) async fn insert_outbox<C: GenericClient>(
    c: &C,
    events: &[OutboxEvent],
) -> Result<(), tokio_postgres::Error> {
    write_outbox(c, &EventCols::of(events, None)).await
}

/// One outbox row of all the events of `cols` (every wallet's), if there are any.
async fn write_outbox<C: GenericClient>(c: &C, cols: &EventCols) -> Result<(), tokio_postgres::Error> {
    if cols.is_empty() {
        return Ok(());
    }
    let (elements, count) = (cols.element.join(","), cols.count.iter().sum::<i32>());
    let stmt = c
        .prepare_cached("INSERT INTO outbox (events, event_count) VALUES (('[' || $1::text || ']')::json, $2)")
        .await?;
    c.execute(&stmt, &[&elements, &count]).await?;
    Ok(())
}

pub(super) async fn insert_entries<C: GenericClient>(c: &C, entries: &[&Entry]) -> Result<(), tokio_postgres::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let cols = EntryCols::of(entries);
    // The transactional path also writes `hold_id` (captures never take the committer's single statement).
    let stmt = c
        .prepare_cached(&format!(
            "INSERT INTO transactions ({}, hold_id, status) SELECT t.*, 'COMPLETED' FROM {} AS t",
            EntryCols::COLUMNS,
            EntryCols::UNNEST.replace("$16::int2[])", "$16::int2[], $17::uuid[])")
        ))
        .await?;
    let mut params: Vec<Param<'_>> = cols.params().to_vec();
    params.push(cols.holds());
    c.execute(&stmt, &params).await?;
    Ok(())
}

/// Inserts the reference keys of `entries`; returns `(index, existing txn id)` for those already taken.
///
/// The captures of a hold take the hold's reference as a DEBIT key once, under the hold's id, and add each
/// capture's amount to it: so the booking is "debited" by what was captured, a plain DEBIT of the same
/// reference is a repeat, and its refund is bounded by the captured total like any refund.
pub(super) async fn claim_references<C: GenericClient>(
    c: &C,
    entries: &[&Entry],
) -> Result<Vec<(usize, Uuid)>, tokio_postgres::Error> {
    type Indexed<'e> = Vec<(usize, &'e Entry)>;
    let (captures, plain): (Indexed<'_>, Indexed<'_>) = entries
        .iter()
        .copied()
        .enumerate()
        .partition(|(_, e)| e.hold_id.is_some());
    let mut taken = claim_plain_references(c, &plain.iter().map(|(_, e)| *e).collect::<Vec<_>>()).await?;
    for t in &mut taken {
        t.0 = plain[t.0].0;
    }
    if !captures.is_empty() {
        let own: Vec<&Entry> = captures.iter().map(|(_, e)| *e).collect();
        let keys = KeyCols::of(&own);
        if !keys.is_empty() {
            let stmt = c
                .prepare_cached(
                    "INSERT INTO transaction_references AS r (wallet_id, reference_type, reference_id, type, txn_id, amount) \
                     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::numeric[]) \
                     ON CONFLICT (wallet_id, reference_type, reference_id, type) \
                     DO UPDATE SET amount = r.amount + EXCLUDED.amount WHERE r.txn_id = EXCLUDED.txn_id RETURNING txn_id",
                )
                .await?;
            let written = c.query(&stmt, &keys.params()).await?;
            if written.len() < keys.index.len() {
                for (i, t) in keys.taken(c).await? {
                    taken.push((captures[i].0, t));
                }
            }
        }
    }
    Ok(taken)
}

async fn claim_plain_references<C: GenericClient>(
    c: &C,
    entries: &[&Entry],
) -> Result<Vec<(usize, Uuid)>, tokio_postgres::Error> {
    let keys = KeyCols::of(entries);
    if keys.is_empty() {
        return Ok(vec![]);
    }
    let stmt = c
        .prepare_cached(
            "INSERT INTO transaction_references (wallet_id, reference_type, reference_id, type, txn_id, amount) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::numeric[]) \
             ON CONFLICT DO NOTHING RETURNING txn_id",
        )
        .await?;
    let inserted = c.query(&stmt, &keys.params()).await?;
    if inserted.len() == keys.index.len() {
        return Ok(vec![]);
    }
    keys.taken(c).await
}

/// The credits of `entries` (by index) that refund a debit of their wallet for more than it took, with the
/// amount debited: the refund rule of HTTP and events alike. A refund is a CREDIT with the `reference_type`
/// and `reference_id` of a DEBIT of the same wallet, as `transaction_references` holds them (committed, or
/// claimed earlier in this transaction: a debit in the same batch counts).
pub(super) async fn refunds_over_debits<C: GenericClient>(
    c: &C,
    entries: &[&Entry],
) -> Result<Vec<(usize, Amount)>, CommitError> {
    let mut index: Vec<i64> = vec![];
    let mut wallet: Vec<Uuid> = vec![];
    let mut rtype: Vec<&str> = vec![];
    let mut rid: Vec<&str> = vec![];
    let mut amount: Vec<Decimal> = vec![];
    for (i, e) in entries.iter().enumerate() {
        if let (TxnType::Credit, Some(rt), Some(ri)) = (e.kind, e.reference_type.as_deref(), e.reference_id.as_deref())
        {
            index.push(i as i64);
            wallet.push(e.wallet_id);
            rtype.push(rt);
            rid.push(ri);
            amount.push(e.amount.value());
        }
    }
    if index.is_empty() {
        return Ok(vec![]);
    }
    let stmt = c
        .prepare_cached(
            "SELECT k.i AS idx, r.amount FROM unnest($1::int8[], $2::uuid[], $3::text[], $4::text[], $5::numeric[]) AS k(i, w, rt, ri, a) \
               JOIN transaction_references r ON r.wallet_id = k.w AND r.reference_type = k.rt \
                AND r.reference_id = k.ri AND r.type = 'DEBIT' \
              WHERE k.a > r.amount ORDER BY k.i",
        )
        .await
        .map_err(batch_err)?;
    let rows = c
        .query(&stmt, &[&index, &wallet, &rtype, &rid, &amount])
        .await
        .map_err(batch_err)?;
    rows.iter()
        .map(|r| {
            let i = usize::try_from(super::col::<i64>(r, "idx").map_err(commit_err)?)
                .map_err(|e| commit_err(corrupt(e)))?;
            let debited = Amount::new(super::col::<Decimal>(r, "amount").map_err(commit_err)?).map_err(commit_err)?;
            Ok((i, debited))
        })
        .collect()
}

/// Records the replies of idempotent requests in the transaction of their effect.
pub(super) async fn complete_idempotency<C: GenericClient>(
    c: &C,
    done: &[(&Origin, u16, String)],
) -> Result<(), tokio_postgres::Error> {
    let cols = ReplyCols::of(done.iter().map(|(o, s, b)| (Uuid::nil(), *o, *s, b.as_str())));
    write_replies(c, &cols).await
}

async fn write_replies<C: GenericClient>(c: &C, cols: &ReplyCols<'_>) -> Result<(), tokio_postgres::Error> {
    if cols.caller.is_empty() {
        return Ok(());
    }
    let stmt = c
        .prepare_cached(&format!(
            "UPDATE idempotency_keys k SET response_status = v.s, response_body = v.b \
             FROM {} AS v(c, e, k, s, b, t) \
             WHERE k.caller = v.c AND k.endpoint = v.e AND k.key = v.k AND k.claim_token = v.t",
            ReplyCols::UNNEST
        ))
        .await?;
    c.execute(&stmt, &cols.params()).await?;
    Ok(())
}

async fn write_inbox<C: GenericClient>(c: &C, cols: &InboxCols) -> Result<(), tokio_postgres::Error> {
    if cols.id.is_empty() {
        return Ok(());
    }
    let stmt = c
        .prepare_cached(&format!(
            "INSERT INTO processed_events (event_id, event_type) SELECT * FROM {} ON CONFLICT DO NOTHING",
            InboxCols::UNNEST
        ))
        .await?;
    c.execute(&stmt, &cols.params()).await?;
    Ok(())
}

/// Writes a group's [`GroupRows`] inside the caller's transaction (or savepoint): one statement per
/// table, pipelined (tokio-postgres sends them without waiting for each answer).
pub(super) async fn insert_group_rows<C: GenericClient + Sync>(
    tx: &C,
    rows: &GroupRows<'_>,
) -> Result<(), tokio_postgres::Error> {
    let (events, replies, inbox, audit) = (rows.events(), rows.replies(), rows.inbox(), rows.audit());
    let (a, b, c, d, e) = tokio::join!(
        insert_entries(tx, &rows.entries),
        write_outbox(tx, &events),
        write_replies(tx, &replies),
        write_inbox(tx, &inbox),
        write_audit(tx, &audit),
    );
    root_cause([a, b, c, d, e])
}

/// The error that failed a set of pipelined statements of one transaction. Once one fails, Postgres
/// answers the others "current transaction is aborted" (25P02); that one says nothing of the cause, so
/// the first other error is returned (it tells a refused row from a timeout).
pub(super) fn root_cause<const N: usize>(
    results: [Result<(), tokio_postgres::Error>; N],
) -> Result<(), tokio_postgres::Error> {
    let aborted =
        |e: &tokio_postgres::Error| e.code() == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION);
    let mut fallback = None;
    for r in results {
        match r {
            Ok(()) => {}
            Err(e) if aborted(&e) => fallback = fallback.or(Some(e)),
            Err(e) => return Err(e),
        }
    }
    fallback.map_or(Ok(()), Err)
}

pub(super) async fn rollback(tx: Transaction<'_>) {
    if let Err(e) = tx.rollback().await {
        warn!(error = %e, "rollback failed (the connection drops the transaction anyway)");
    }
}
