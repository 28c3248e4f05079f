//! The auditor: reads the books after the faults and holds them against what each client was told.
//!
//! Every operation's ledger rows carry its tag in `description` (`fault-op <Idempotency-Key>`), so its
//! effects are counted however often it was retried, by whichever process. The audit rule: for every
//! operation, the database holds exactly one effect iff the client's final answer was 2xx (a 2xx names the
//! very rows found, and its reply is recorded with the key); a replay of the final answer equals it byte
//! for byte; every wallet's balance equals its initial balance plus its ledger, and equals the initial
//! balance plus what the clients were acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use super::client::{Outcome, Request, RetryingClient};
use super::database;

/// What an operation does to the books.
#[derive(Clone, Copy, Debug)]
pub enum Effect {
    Credit { wallet: Uuid, amount: Decimal },
    Debit { wallet: Uuid, amount: Decimal },
    Transfer { from: Uuid, to: Uuid, amount: Decimal },
}

/// Booking debits (`reference_type = 'BOOKING'`) per booking id, to prove each booking applied exactly once.
pub async fn booking_debits(db: &tokio_postgres::Client) -> HashMap<String, i64> {
    db.query(
        "SELECT reference_id, count(*) FROM transactions WHERE reference_type = 'BOOKING' AND type = 'DEBIT' \
         GROUP BY reference_id",
        &[],
    )
    .await
    .expect("booking rows")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The `description` that tags an operation's ledger rows.
pub fn tag(key: &str) -> String {
    format!("fault-op {key}")
}

impl Effect {
    /// The keyed request that asks for this effect, with an optional `reference_id`.
    pub fn request(&self, reference_id: Option<&str>) -> Request {
        let key = Uuid::new_v4().to_string();
        let description = tag(&key);
        match *self {
            Effect::Credit { wallet, amount } | Effect::Debit { wallet, amount } => {
                let kind = if matches!(self, Effect::Credit { .. }) {
                    "CREDIT"
                } else {
                    "DEBIT"
                };
                let mut body = json!({"amount": amount.to_string(), "type": kind, "description": description});
                if let Some(r) = reference_id {
                    body["reference_id"] = json!(r);
                }
                Request::post(key, &format!("/wallets/{wallet}/transactions"), &body)
            }
            Effect::Transfer { from, to, amount } => {
                let mut body = json!({"from_wallet_id": from, "to_wallet_id": to, "amount": amount.to_string(),
                    "description": description});
                if let Some(r) = reference_id {
                    body["reference_id"] = json!(r);
                }
                Request::post(key, "/transfers", &body)
            }
        }
    }

    /// The ledger rows one application writes: (wallet, type, amount).
    fn legs(&self) -> Vec<(Uuid, &'static str, Decimal)> {
        match *self {
            Effect::Credit { wallet, amount } => vec![(wallet, "CREDIT", amount)],
            Effect::Debit { wallet, amount } => vec![(wallet, "DEBIT", amount)],
            Effect::Transfer { from, to, amount } => vec![(from, "TRANSFER_OUT", amount), (to, "TRANSFER_IN", amount)],
        }
    }

    /// What one application does to balances.
    fn deltas(&self) -> Vec<(Uuid, Decimal)> {
        match *self {
            Effect::Credit { wallet, amount } => vec![(wallet, amount)],
            Effect::Debit { wallet, amount } => vec![(wallet, -amount)],
            Effect::Transfer { from, to, amount } => vec![(from, -amount), (to, amount)],
        }
    }
}

/// One operation as a client lived it.
#[derive(Clone, Debug)]
pub struct Operation {
    pub effect: Effect,
    pub outcome: Outcome,
}

#[derive(Clone, Debug)]
struct LedgerRow {
    txn_id: Uuid,
    wallet_id: Uuid,
    kind: String,
    amount: Decimal,
}

/// The figures of an audit and what broke the rule.
#[derive(Debug, Default)]
pub struct AuditReport {
    pub operations: usize,
    /// Final answer 2xx.
    pub acknowledged: usize,
    /// Final answer other than 2xx (a refusal: 4xx, or 500).
    pub refused: usize,
    /// No final answer within the client's budget.
    pub unresolved: usize,
    /// Operations with at least one effect in the ledger.
    pub found: usize,
    /// More than one effect.
    pub doubled: usize,
    /// Acknowledged, no effect.
    pub lost: usize,
    /// An effect without a 2xx final answer (e.g. 503 "not applied", then it landed).
    pub phantom: usize,
    /// Rows of an operation that are not whole applications (one transfer leg without the other).
    pub torn: usize,
    /// A 2xx naming transactions that are not the ledger rows found.
    pub wrong_txn: usize,
    /// Acknowledged, but the key's recorded reply differs from the 2xx (or is missing).
    pub unrecorded_replies: usize,
    /// A replay of the final answer answered something else.
    pub replay_mismatches: usize,
    /// Keys seen `IDEMPOTENCY_IN_PROGRESS` for longer than the lease (or never answered).
    pub stuck_keys: usize,
    pub longest_in_progress: Duration,
    /// 503/504/409-in-progress answers without `Retry-After`.
    pub retry_without_retry_after: usize,
    /// Every answer a client saw, by `status/code`, and `no-answer`.
    pub answers: BTreeMap<String, usize>,
    /// Wallets whose balance is not initial + ledger.
    pub bank_breaks: Vec<String>,
    /// Wallets whose balance is not initial + what the clients were acknowledged.
    pub books_breaks: Vec<String>,
    /// One line per operation that broke the rule (the first few, for the failure message).
    pub examples: Vec<String>,
}

/// Examples kept in a report.
const MAX_EXAMPLES: usize = 12;

impl AuditReport {
    /// Everything that breaks the audit rule, empty if the books are right.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (n, what) in [
            (self.lost, "operation(s) acknowledged but not in the ledger"),
            (self.doubled, "operation(s) applied more than once"),
            (self.phantom, "operation(s) applied without a 2xx final answer"),
            (self.torn, "operation(s) with torn (partial) effects"),
            (
                self.wrong_txn,
                "2xx answer(s) naming other transactions than the ledger's",
            ),
            (self.unrecorded_replies, "2xx answer(s) not recorded with their key"),
            (self.replay_mismatches, "replay(s) different from the final answer"),
            (
                self.unresolved,
                "operation(s) without a final answer within the client's budget",
            ),
            (self.stuck_keys, "key(s) in progress longer than the lease"),
            (
                self.retry_without_retry_after,
                "503/504/409-in-progress answer(s) without Retry-After",
            ),
        ] {
            if n > 0 {
                v.push(format!("{n} {what}"));
            }
        }
        if !self.bank_breaks.is_empty() {
            v.push(format!("balance != initial + ledger: {:?}", self.bank_breaks));
        }
        if !self.books_breaks.is_empty() {
            v.push(format!("balance != initial + acknowledged: {:?}", self.books_breaks));
        }
        v
    }

    /// The report's figures for the summary line.
    pub fn figures(&self) -> Value {
        json!({
            "operations": self.operations,
            "acknowledged": self.acknowledged,
            "refused": self.refused,
            "unresolved": self.unresolved,
            "found": self.found,
            "doubled": self.doubled,
            "lost": self.lost,
            "phantom": self.phantom,
            "torn": self.torn,
            "wrong_txn": self.wrong_txn,
            "unrecorded_replies": self.unrecorded_replies,
            "replay_mismatches": self.replay_mismatches,
            "stuck_keys": self.stuck_keys,
            "longest_in_progress_ms": self.longest_in_progress.as_millis() as u64,
            "retry_without_retry_after": self.retry_without_retry_after,
            "answers": self.answers,
            "bank_breaks": self.bank_breaks.len(),
            "books_breaks": self.books_breaks.len(),
            "violations": self.violations(),
        })
    }

    fn example(&mut self, line: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(line);
        }
    }
}

/// Tries at folding while an instance's fold holds the lock (50 ms apart).
const FOLD_ATTEMPTS: usize = 200;

pub struct Auditor {
    db: tokio_postgres::Client,
}

impl Auditor {
    pub async fn connect(database_url: &str) -> Auditor {
        Auditor {
            db: database::connect(database_url).await.expect("the auditor connects"),
        }
    }

    /// Wallets whose balance differs from `initial_balance` + completed credits − debits (+ transfer legs),
    /// and spend aggregates (the reports' `spend_daily` and `spend_monthly`) that differ from the folded ledger
    /// rows of their wallet, UTC day or month and type (a REFUND is a CREDIT there: the split between them is
    /// checked by the reports tests).
    pub async fn bank_breaks(&self) -> Vec<String> {
        let mut breaks = self.balance_breaks().await;
        breaks.extend(self.aggregate_breaks().await);
        breaks
    }

    /// Daily and monthly aggregates against the ledger rows the fold has covered (every row of a
    /// transaction below its horizon; rows above it are the reports' tail, read from the ledger).
    async fn aggregate_breaks(&self) -> Vec<String> {
        self.fold().await;
        let mut breaks = Vec::new();
        for (table, key, bucket) in [
            ("spend_daily", "day", "(created_at AT TIME ZONE 'UTC')::date"),
            (
                "spend_monthly",
                "month",
                "date_trunc('month', created_at AT TIME ZONE 'UTC')::date",
            ),
        ] {
            let sql = format!(
                "WITH l AS (SELECT wallet_id, {bucket} AS day, type::text AS type, sum(amount) AS amount, count(*) AS n \
                              FROM transactions WHERE status = 'COMPLETED' \
                               AND (xact IS NULL OR xact < (SELECT horizon FROM spend_fold)) GROUP BY 1, 2, 3), \
                      a AS (SELECT wallet_id, {key} AS day, \
                                   CASE kind WHEN 'REFUND' THEN 'CREDIT' ELSE kind::text END AS type, \
                                   sum(amount) AS amount, sum(count) AS n \
                              FROM {table} GROUP BY 1, 2, 3) \
                 SELECT '{table} ' || coalesce(l.wallet_id, a.wallet_id)::text || ' ' || coalesce(l.day, a.day)::text \
                        || ' ' || coalesce(l.type, a.type) || ': ledger ' || coalesce(l.amount::text, '-') || '/' || \
                        coalesce(l.n::text, '-') || ', aggregate ' || coalesce(a.amount::text, '-') || '/' || \
                        coalesce(a.n::text, '-') \
                   FROM l FULL JOIN a ON a.wallet_id = l.wallet_id AND a.day = l.day AND a.type = l.type \
                  WHERE l.amount IS DISTINCT FROM a.amount OR l.n IS DISTINCT FROM a.n"
            );
            // One snapshot for the horizon and both sides (a fold may commit meanwhile).
            let rows = self.db.query(&sql, &[]).await.expect("aggregate query");
            breaks.extend(rows.iter().map(|r| r.get::<_, String>(0)));
        }
        breaks
    }

    /// Folds every finished commit into the aggregates (`spend_fold_run()`, the service's own fold), so the
    /// comparison covers all of them; waits out a fold an instance is running.
    pub async fn fold(&self) {
        for _ in 0..FOLD_ATTEMPTS {
            let row = self
                .db
                .query_one("SELECT new_horizon FROM spend_fold_run()", &[])
                .await
                .expect("the fold runs");
            if row.get::<_, Option<i64>>(0).is_some() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the spend fold stayed busy");
    }

    async fn balance_breaks(&self) -> Vec<String> {
        self.db
            .query(
                "SELECT w.wallet_id, w.balance, w.initial_balance + COALESCE(sum(CASE \
                     WHEN t.type IN ('CREDIT', 'TRANSFER_IN') THEN t.amount \
                     WHEN t.type IN ('DEBIT', 'TRANSFER_OUT') THEN -t.amount END), 0) AS derived \
                 FROM wallets w LEFT JOIN transactions t ON t.wallet_id = w.wallet_id AND t.status = 'COMPLETED' \
                 GROUP BY w.wallet_id, w.balance, w.initial_balance",
                &[],
            )
            .await
            .expect("bank invariant query")
            .iter()
            .filter_map(|r| {
                let (wallet, balance, derived): (Uuid, Decimal, Decimal) = (r.get(0), r.get(1), r.get(2));
                (balance != derived).then(|| format!("{wallet}: balance {balance}, ledger says {derived}"))
            })
            .collect()
    }

    /// One `count(*)`-like bigint.
    pub async fn count(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
        self.db.query_one(sql, params).await.expect("count query").get(0)
    }

    pub async fn balance(&self, wallet: Uuid) -> Decimal {
        self.db
            .query_one("SELECT balance FROM wallets WHERE wallet_id = $1", &[&wallet])
            .await
            .expect("the wallet row")
            .get(0)
    }

    /// Ledger rows of each tagged operation.
    async fn tagged_rows(&self) -> HashMap<String, Vec<LedgerRow>> {
        let mut by_tag: HashMap<String, Vec<LedgerRow>> = HashMap::new();
        for r in self
            .db
            .query(
                "SELECT description, txn_id, wallet_id, type, amount FROM transactions \
                 WHERE description LIKE 'fault-op %'",
                &[],
            )
            .await
            .expect("ledger rows")
        {
            by_tag.entry(r.get(0)).or_default().push(LedgerRow {
                txn_id: r.get(1),
                wallet_id: r.get(2),
                kind: r.get(3),
                amount: r.get(4),
            });
        }
        by_tag
    }

    /// `key -> (status, body)` of the recorded replies.
    async fn recorded_replies(&self, keys: &[String]) -> HashMap<String, (Option<i16>, Option<String>)> {
        self.db
            .query(
                "SELECT key, response_status, response_body FROM idempotency_keys WHERE key = ANY($1)",
                &[&keys],
            )
            .await
            .expect("idempotency rows")
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect()
    }

    /// Sends every finally-answered operation once more (with its key, retried until final) and counts the
    /// replays that answer differently. Run this before [`Auditor::audit`], so that a replay that moves
    /// money shows in the books.
    /// Replays every final answer through `client` ([`Auditor::replay_mismatches`]), then audits the books
    /// of `database_url` ([`Auditor::audit`]).
    pub async fn replay_and_audit(
        client: &RetryingClient,
        database_url: &str,
        ops: &[Operation],
        lease: Duration,
    ) -> AuditReport {
        let replays = Auditor::replay_mismatches(client, ops).await;
        Auditor::connect(database_url).await.audit(ops, &replays, lease).await
    }

    pub async fn replay_mismatches(client: &RetryingClient, ops: &[Operation]) -> Vec<String> {
        futures_util::stream::iter(ops.iter().filter(|o| o.outcome.final_answer.is_some()))
            .map(|op| async move {
                let first = op.outcome.final_answer.as_ref().expect("answered");
                let again = client.until_final(op.outcome.request.clone()).await;
                match again.final_answer {
                    Some(r) if r.status == first.status && r.body == first.body => None,
                    other => Some(format!(
                        "key {}: first {} {}, replay {:?}",
                        op.outcome.request.key,
                        first.status,
                        first.body,
                        other.map(|r| (r.status, r.body))
                    )),
                }
            })
            .buffer_unordered(16)
            .filter_map(|m| async move { m })
            .collect()
            .await
    }

    /// Audits `ops` (given the replay mismatches found before) against the books; `lease` is how long a
    /// key may be seen in progress.
    pub async fn audit(&self, ops: &[Operation], replay_mismatches: &[String], lease: Duration) -> AuditReport {
        let mut report = AuditReport {
            operations: ops.len(),
            replay_mismatches: replay_mismatches.len(),
            ..AuditReport::default()
        };
        for m in replay_mismatches {
            report.example(format!("replay: {m}"));
        }
        let rows = self.tagged_rows().await;
        let keys: Vec<String> = ops.iter().map(|o| o.outcome.request.key.clone()).collect();
        let replies = self.recorded_replies(&keys).await;
        let mut acknowledged_deltas: HashMap<Uuid, Decimal> = HashMap::new();

        for op in ops {
            let o = &op.outcome;
            let key = &o.request.key;
            for a in &o.attempts {
                let label = a
                    .answer
                    .as_ref()
                    .map(|r| r.label())
                    .unwrap_or_else(|_| "no-answer".into());
                *report.answers.entry(label).or_default() += 1;
            }
            report.retry_without_retry_after += o.retry_answers_without_retry_after();
            let in_progress = o.longest_in_progress();
            report.longest_in_progress = report.longest_in_progress.max(in_progress);
            let acked = o.acknowledged();
            match &o.final_answer {
                None => {
                    report.unresolved += 1;
                    report.example(format!("key {key}: unresolved after {} attempts", o.attempts.len()));
                }
                Some(_) if acked => report.acknowledged += 1,
                Some(_) => report.refused += 1,
            }
            if in_progress > lease || (o.final_answer.is_none() && o.answers().any(|(_, r)| r.in_progress())) {
                report.stuck_keys += 1;
                report.example(format!("key {key}: in progress for {in_progress:?}"));
            }

            // Effects: how many times each expected leg is in the ledger.
            let mine = rows.get(&tag(key)).cloned().unwrap_or_default();
            let legs = op.effect.legs();
            let counts: Vec<usize> = legs
                .iter()
                .map(|(w, kind, amount)| {
                    mine.iter()
                        .filter(|r| r.wallet_id == *w && r.kind == *kind && r.amount == *amount)
                        .count()
                })
                .collect();
            let effects = counts.iter().copied().max().unwrap_or(0);
            let whole = counts.iter().all(|c| *c == effects) && mine.len() == effects * legs.len();
            if !whole {
                report.torn += 1;
                report.example(format!(
                    "key {key}: rows {mine:?} are not whole applications of {:?}",
                    op.effect
                ));
            }
            if effects > 0 {
                report.found += 1;
            }
            if effects > 1 {
                report.doubled += 1;
                report.example(format!("key {key}: applied {effects} times; answers {:?}", labels(o)));
            }
            if acked && effects == 0 {
                report.lost += 1;
                report.example(format!("key {key}: acknowledged, not in the ledger"));
            }
            if !acked && effects > 0 {
                report.phantom += 1;
                report.example(format!(
                    "key {key}: applied, final answer {:?}; answers {:?}",
                    o.final_answer.as_ref().map(|r| r.label()),
                    labels(o)
                ));
            }
            if acked {
                for (w, d) in op.effect.deltas() {
                    *acknowledged_deltas.entry(w).or_default() += d;
                }
                let success = o.first_success.as_ref().expect("acknowledged");
                let named = txn_ids(&success.json());
                let mut found: Vec<Uuid> = mine.iter().map(|r| r.txn_id).collect();
                let mut named_sorted = named.clone();
                found.sort();
                named_sorted.sort();
                if effects == 1 && named_sorted != found {
                    report.wrong_txn += 1;
                    report.example(format!("key {key}: 2xx names {named:?}, ledger has {found:?}"));
                }
                let recorded = replies.get(key);
                let expected = (Some(success.status as i16), Some(success.body.clone()));
                if recorded != Some(&expected) {
                    report.unrecorded_replies += 1;
                    report.example(format!("key {key}: recorded reply {recorded:?}"));
                }
            }
        }

        report.bank_breaks = self.bank_breaks().await;
        for r in self
            .db
            // What a wallet opened with: its opening balance is a ledger entry (reference_type OPENING).
            .query(
                "SELECT w.wallet_id, w.balance, w.initial_balance + COALESCE((SELECT sum(t.amount) FROM transactions t \
                   WHERE t.wallet_id = w.wallet_id AND t.type = 'CREDIT' AND t.reference_type = 'OPENING'), 0) \
                 FROM wallets w",
                &[],
            )
            .await
            .expect("wallets")
        {
            let (wallet, balance, initial): (Uuid, Decimal, Decimal) = (r.get(0), r.get(1), r.get(2));
            let expected = initial + acknowledged_deltas.get(&wallet).copied().unwrap_or_default();
            if balance != expected {
                report
                    .books_breaks
                    .push(format!("{wallet}: balance {balance}, acknowledged {expected}"));
            }
        }
        report
    }
}

/// The answers of an operation, in order, as labels.
fn labels(o: &Outcome) -> Vec<String> {
    o.attempts
        .iter()
        .map(|a| {
            a.answer
                .as_ref()
                .map(|r| r.label())
                .unwrap_or_else(|_| "no-answer".into())
        })
        .collect()
}

/// The transaction ids a 2xx names: a posting's `txn_id`, or a transfer's legs.
fn txn_ids(body: &Value) -> Vec<Uuid> {
    let one = |v: &Value| {
        v.get("txn_id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
    };
    match body.get("transactions").and_then(Value::as_array) {
        Some(legs) => legs.iter().filter_map(one).collect(),
        None => one(body).into_iter().collect(),
    }
}
