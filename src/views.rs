//! JSON shapes of the contract, shared by the HTTP replies, the idempotency records (which must replay a
//! reply byte for byte) and the event payloads. Amounts are decimal strings, never floats.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;
use wallet_actors::store::{HoldChange, HoldEvent};
use wallet_actors::{Budget, BudgetStatus, Entry, Hold, WalletState};

/// RFC 3339 with milliseconds and `Z`, the one timestamp format of every reply.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WalletView {
    pub wallet_id: Uuid,
    pub user_id: Uuid,
    #[schema(value_type = crate::schema::Money)]
    pub balance: String,
    /// The balance less what open holds reserve at this instant: what a debit, a transfer out or a new
    /// hold may use. `0 <= available_balance <= balance`.
    #[schema(value_type = crate::schema::Money)]
    pub available_balance: String,
    /// What open holds reserve at this instant (`balance - available_balance`).
    #[schema(value_type = crate::schema::Money)]
    pub held_amount: String,
    #[schema(value_type = crate::schema::enums::Currency)]
    pub currency: String,
    #[schema(value_type = crate::schema::enums::WalletStatus)]
    pub status: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl WalletView {
    /// The wallet as a reader sees it at `now` (holds past their expiry reserve nothing). Its JSON is what
    /// [`wallet_reply`] writes directly; this type is its schema and the test's reference.
    pub fn at(w: &WalletState, now: DateTime<Utc>) -> Self {
        WalletView {
            wallet_id: w.wallet_id,
            user_id: w.user_id,
            balance: w.balance.to_string(),
            available_balance: w.available_at(now).to_string(),
            held_amount: w.held_at(now).to_string(),
            currency: w.currency.to_string(),
            status: w.status.to_string(),
            created_at: ts(w.created_at),
            updated_at: ts(w.updated_at),
        }
    }
}

/// A transaction as `POST /wallets/{walletId}/transactions` answers it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionView {
    pub txn_id: Uuid,
    pub wallet_id: Uuid,
    #[schema(value_type = crate::schema::Money)]
    pub amount: String,
    #[schema(value_type = crate::schema::enums::TransactionType)]
    pub r#type: String,
    #[schema(value_type = crate::schema::enums::TransactionStatus)]
    pub status: String,
    #[schema(value_type = crate::schema::Money)]
    pub balance_after: String,
    pub description: Option<String>,
    pub reference_id: Option<String>,
    pub reference_type: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// The hold a capture came from (present on captures only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<Uuid>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&Entry> for TransactionView {
    fn from(e: &Entry) -> Self {
        TransactionView {
            txn_id: e.txn_id,
            wallet_id: e.wallet_id,
            amount: e.amount.to_string(),
            r#type: e.kind.to_string(),
            status: "COMPLETED".into(),
            balance_after: e.balance_after.to_string(),
            description: e.description.clone(),
            reference_id: e.reference_id.clone(),
            reference_type: e.reference_type.clone(),
            metadata: e.metadata.clone(),
            hold_id: e.hold_id,
            created_at: ts(e.created_at),
        }
    }
}

/// A hold as `POST /wallets/{walletId}/holds`, `GET /holds/{holdId}` and the void answer it. `status` and
/// `remaining_amount` are as of the instant of the reply: an open hold past `expires_at` is EXPIRED and
/// reserves nothing, whether or not the sweep has written that yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldView {
    pub hold_id: Uuid,
    pub wallet_id: Uuid,
    #[schema(value_type = crate::schema::Money)]
    pub amount: String,
    #[schema(value_type = crate::schema::Money)]
    pub captured_amount: String,
    #[schema(value_type = crate::schema::Money)]
    pub remaining_amount: String,
    #[schema(value_type = crate::schema::enums::HoldStatus)]
    pub status: String,
    pub reference_id: Option<String>,
    pub reference_type: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl HoldView {
    /// The hold as a reader sees it at `now`.
    pub fn at(h: &Hold, now: DateTime<Utc>) -> Self {
        HoldView {
            hold_id: h.hold_id,
            wallet_id: h.wallet_id,
            amount: h.amount.to_string(),
            captured_amount: h.captured.to_string(),
            remaining_amount: h.remaining_at(now).to_string(),
            status: h.status_at(now).to_string(),
            reference_id: h.reference_id.clone(),
            reference_type: h.reference_type.clone(),
            description: h.description.clone(),
            metadata: h.metadata.clone(),
            expires_at: ts(h.expires_at),
            created_at: ts(h.created_at),
            updated_at: ts(h.updated_at),
        }
    }
}

/// `GET /wallets/{walletId}/holds`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldPage {
    pub holds: Vec<HoldView>,
    pub pagination: Pagination,
}

/// The reply to `POST /transfers`: both legs.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferView {
    pub from_wallet_id: Uuid,
    pub to_wallet_id: Uuid,
    #[schema(value_type = crate::schema::Money)]
    pub amount: String,
    #[schema(value_type = crate::schema::enums::TransactionStatus)]
    pub status: String,
    pub reference_id: Option<String>,
    pub description: Option<String>,
    /// The TRANSFER_OUT row, then the TRANSFER_IN row.
    pub transactions: Vec<TransactionView>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl TransferView {
    pub fn new(out: &Entry, incoming: &Entry) -> Self {
        TransferView {
            from_wallet_id: out.wallet_id,
            to_wallet_id: incoming.wallet_id,
            amount: out.amount.to_string(),
            status: "COMPLETED".into(),
            reference_id: out.reference_id.clone(),
            description: out.description.clone(),
            transactions: vec![TransactionView::from(out), TransactionView::from(incoming)],
            created_at: ts(out.created_at),
        }
    }
}

/// One row of `GET /wallets/{walletId}/transactions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    pub txn_id: Uuid,
    #[schema(value_type = crate::schema::Money)]
    pub amount: String,
    #[schema(value_type = crate::schema::enums::TransactionType)]
    pub r#type: String,
    pub description: Option<String>,
    pub reference_id: Option<String>,
    pub reference_type: Option<String>,
    #[schema(value_type = crate::schema::enums::TransactionStatus)]
    pub status: String,
    #[schema(value_type = crate::schema::Money)]
    pub balance_after: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Pagination {
    pub page: u32,
    pub limit: u32,
    /// How many rows match. A transaction history in cursor mode gives it on its first page only (counting
    /// a long history again for every page is what makes offset pages slow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    pub transactions: Vec<HistoryItem>,
    pub pagination: Pagination,
    /// Pass as `cursor` for the next page (older rows); `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub user_id: Uuid,
    pub email: String,
    pub company_id: Uuid,
    #[schema(value_type = crate::schema::enums::Role)]
    pub role: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// The body of every event: `{event_id, event_type, timestamp, data}`.
#[derive(Debug, Serialize)]
pub struct EventEnvelope<T: Serialize> {
    pub event_id: Uuid,
    pub event_type: &'static str,
    pub timestamp: String,
    pub data: T,
}

/// A row to write to the outbox in the same transaction as the change it reports.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub event_id: Uuid,
    pub event_type: &'static str,
    pub routing_key: &'static str,
    pub aggregate_id: Uuid,
    /// The JSON body, serialized once here and published byte for byte (the column is `json`).
    pub payload: String,
}

impl OutboxEvent {
    pub fn new<T: Serialize>(event_type: &'static str, routing_key: &'static str, aggregate_id: Uuid, data: T) -> Self {
        let event_id = Uuid::now_v7();
        let envelope = EventEnvelope {
            event_id,
            event_type,
            timestamp: ts(Utc::now()),
            data,
        };
        // Serializing our own plain structs cannot fail; a failure would be a programmer error.
        let payload = serde_json::to_string(&envelope).expect("event payloads serialize");
        OutboxEvent {
            event_id,
            event_type,
            routing_key,
            aggregate_id,
            payload,
        }
    }

    /// Appends this event as an element of an outbox row's `events` array (`sql/V13`):
    /// `{"id":…,"type":…,"key":…,"aggregate":…,"body":<payload>}`. The body is the serialized payload,
    /// embedded as it is, so the relay publishes exactly these bytes.
    pub fn write_array_element(&self, out: &mut String) {
        // Event types and routing keys are constants of this crate, never user text: nothing to escape.
        debug_assert!(
            !(self.event_type.contains(['"', '\\']) || self.routing_key.contains(['"', '\\'])),
            "event types and routing keys need no JSON escaping"
        );
        let mut id = Uuid::encode_buffer();
        out.push_str(r#"{"id":""#);
        out.push_str(self.event_id.hyphenated().encode_lower(&mut id));
        out.push_str(r#"","type":""#);
        out.push_str(self.event_type);
        out.push_str(r#"","key":""#);
        out.push_str(self.routing_key);
        out.push_str(r#"","aggregate":""#);
        out.push_str(self.aggregate_id.hyphenated().encode_lower(&mut id));
        out.push_str(r#"","body":"#);
        out.push_str(&self.payload);
        out.push('}');
    }

    /// `HoldPlaced`, `HoldCaptured` or `HoldReleased` for a committed hold change.
    pub fn hold_event(c: &HoldChange) -> Self {
        #[derive(Serialize)]
        struct Placed<'a> {
            hold_id: Uuid,
            wallet_id: Uuid,
            amount: String,
            reference_id: Option<&'a str>,
            reference_type: Option<&'a str>,
            expires_at: String,
        }
        #[derive(Serialize)]
        struct Captured {
            hold_id: Uuid,
            wallet_id: Uuid,
            txn_id: Uuid,
            amount: String,
            captured_amount: String,
            status: &'static str,
        }
        #[derive(Serialize)]
        struct Released {
            hold_id: Uuid,
            wallet_id: Uuid,
            amount: String,
            reason: &'static str,
        }
        let h = &c.hold;
        match &c.event {
            HoldEvent::Placed => OutboxEvent::new(
                "HoldPlaced",
                "hold.placed",
                h.wallet_id,
                Placed {
                    hold_id: h.hold_id,
                    wallet_id: h.wallet_id,
                    amount: h.amount.to_string(),
                    reference_id: h.reference_id.as_deref(),
                    reference_type: h.reference_type.as_deref(),
                    expires_at: ts(h.expires_at),
                },
            ),
            HoldEvent::Captured { txn_id, amount } => OutboxEvent::new(
                "HoldCaptured",
                "hold.captured",
                h.wallet_id,
                Captured {
                    hold_id: h.hold_id,
                    wallet_id: h.wallet_id,
                    txn_id: *txn_id,
                    amount: amount.to_string(),
                    captured_amount: h.captured.to_string(),
                    status: h.status.as_str(),
                },
            ),
            HoldEvent::Released { reason, amount } => OutboxEvent::new(
                "HoldReleased",
                "hold.released",
                h.wallet_id,
                Released {
                    hold_id: h.hold_id,
                    wallet_id: h.wallet_id,
                    amount: amount.to_string(),
                    reason: reason.as_str(),
                },
            ),
        }
    }

    /// `SuspiciousActivity` for a hit the wallet's actor recorded.
    pub fn suspicious_activity(w: &WalletState, s: &wallet_actors::store::Suspicion) -> Self {
        #[derive(Serialize)]
        struct Data<'a> {
            wallet_id: Uuid,
            user_id: Uuid,
            rule: &'static str,
            detail: &'a serde_json::Value,
        }
        OutboxEvent::new(
            "SuspiciousActivity",
            "suspicious.activity",
            w.wallet_id,
            Data {
                wallet_id: w.wallet_id,
                user_id: w.user_id,
                rule: s.rule,
                detail: &s.detail,
            },
        )
    }

    /// `TransactionCompleted` for a committed entry.
    pub fn transaction_completed(e: &Entry) -> Self {
        #[derive(Serialize)]
        struct Data<'a> {
            txn_id: Uuid,
            wallet_id: Uuid,
            amount: String,
            r#type: &'static str,
            reference_id: Option<&'a str>,
            new_balance: String,
        }
        OutboxEvent::new(
            "TransactionCompleted",
            "transaction.completed",
            e.wallet_id,
            Data {
                txn_id: e.txn_id,
                wallet_id: e.wallet_id,
                amount: e.amount.to_string(),
                r#type: e.kind.as_str(),
                reference_id: e.reference_id.as_deref(),
                new_balance: e.balance_after.to_string(),
            },
        )
    }
}

/// The budget's JSON shape (`GET /budgets/{userId}` and friends).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BudgetView {
    pub budget_id: Uuid,
    pub wallet_id: Uuid,
    #[schema(value_type = crate::schema::Money)]
    pub total_amount: String,
    #[schema(value_type = crate::schema::Money)]
    pub used_amount: String,
    #[schema(value_type = crate::schema::Money)]
    pub remaining_amount: String,
    /// The part of `used_amount` that open holds reserve (given back if they are voided or expire).
    #[schema(value_type = crate::schema::Money)]
    pub held_amount: String,
    #[schema(value_type = crate::schema::enums::PeriodType)]
    pub period_type: String,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    #[schema(value_type = crate::schema::enums::BudgetStatus)]
    pub status: String,
    pub created_by: Uuid,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<&Budget> for BudgetView {
    fn from(b: &Budget) -> Self {
        // Past its end a budget is EXPIRED whether or not the sweep has written it yet.
        let status = if b.status == BudgetStatus::Active && b.end_date < Utc::now().date_naive() {
            BudgetStatus::Expired
        } else {
            b.status
        };
        let fmt = |d: Decimal| format!("{d:.2}");
        BudgetView {
            budget_id: b.budget_id,
            wallet_id: b.wallet_id,
            total_amount: b.total.to_string(),
            used_amount: b.used.to_string(),
            remaining_amount: fmt(b.remaining()),
            held_amount: b.held.to_string(),
            period_type: b.period.to_string(),
            start_date: b.start_date,
            end_date: b.end_date,
            status: status.to_string(),
            created_by: b.created_by,
            created_at: ts(b.created_at),
            updated_at: ts(b.updated_at),
        }
    }
}

/// A `budget_history` row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryView {
    pub history_id: Uuid,
    pub budget_id: Uuid,
    #[schema(value_type = Option<crate::schema::Money>)]
    pub old_amount: Option<String>,
    #[schema(value_type = crate::schema::Money)]
    pub new_amount: String,
    pub change_reason: String,
    pub changed_by: Uuid,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A reply's JSON text. Serializing these views cannot fail (strings, numbers and ids only); should it
/// ever, the failure is logged and the body is empty rather than a request path panicking.
fn body_of<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| {
        tracing::error!(error = %e, "serializing a reply failed");
        String::new()
    })
}

/// The 201 body of a posting. Built here only: the store records it with the commit (for replays) and
/// HTTP sends the same text.
pub fn posting_reply(e: &Entry) -> String {
    body_of(&TransactionView::from(e))
}

/// The 201 body of a transfer (see [`posting_reply`]).
pub fn transfer_reply(out: &Entry, incoming: &Entry) -> String {
    body_of(&TransferView::new(out, incoming))
}

/// The 201 body of a hold placed (see [`posting_reply`]); the hold is PENDING at that instant.
pub fn hold_reply(h: &Hold) -> String {
    body_of(&HoldView::at(h, h.created_at))
}

/// Room for a wallet's JSON text without growing: two ids, three amounts, two timestamps and the names.
const WALLET_REPLY_CAPACITY: usize = 320;

/// The body of a wallet (201 on creation, 200 on reads; see [`posting_reply`]): [`WalletView`]'s JSON.
///
/// Written directly rather than serialized from a `WalletView`: this is the body of every wallet read,
/// and building the view's strings and then escape-checking each one cost about a fifth of a read's
/// instructions (callgrind). Every value is an id, an amount, an enum name or a timestamp — text with
/// nothing to escape — and `wallet_reply_is_the_views_serialization` keeps the two byte for byte equal.
pub fn wallet_reply(w: &WalletState) -> String {
    let mut out = String::with_capacity(WALLET_REPLY_CAPACITY);
    if let Err(e) = write_wallet(&mut out, w, Utc::now()) {
        tracing::error!(error = %e, "writing a wallet reply failed");
        return String::new();
    }
    out
}

fn write_wallet(out: &mut String, w: &WalletState, now: DateTime<Utc>) -> std::fmt::Result {
    use std::fmt::Write;
    write!(
        out,
        r#"{{"wallet_id":"{}","user_id":"{}","balance":"{}","available_balance":"{}","held_amount":"{}","currency":"{}","status":"{}","created_at":"{}","updated_at":"{}"}}"#,
        w.wallet_id,
        w.user_id,
        w.balance,
        w.available_at(now),
        w.held_at(now),
        w.currency.as_str(),
        w.status.as_str(),
        ts(w.created_at),
        ts(w.updated_at),
    )
}

/// One item's answer in a bulk posting: the HTTP status a single posting would have had, and its body (the
/// transaction for a 2xx, the problem document otherwise), as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemResult {
    pub index: usize,
    pub status: u16,
    pub body: String,
}

impl ItemResult {
    pub fn applied(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// `[{index, status, transaction | error}, ...]`. Built as text around each item's own JSON text, so an
/// item replayed from its Idempotency-Key record keeps its bytes (re-serializing a parsed value would
/// reorder its members).
pub fn batch_results(results: &[ItemResult]) -> String {
    let mut out = String::with_capacity(results.iter().map(|r| r.body.len() + 48).sum::<usize>() + 2);
    out.push('[');
    for (n, r) in results.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let member = if r.applied() { "transaction" } else { "error" };
        out.push_str(&format!(
            "{{\"index\":{},\"status\":{},\"{member}\":{}}}",
            r.index, r.status, r.body
        ));
    }
    out.push(']');
    out
}

/// The 200 body of an independent bulk posting: `{results, applied, refused}` (`refused`: the items not
/// applied, whatever the reason).
pub fn batch_reply(results: &[ItemResult]) -> String {
    let applied = results.iter().filter(|r| r.applied()).count();
    format!(
        "{{\"results\":{},\"applied\":{applied},\"refused\":{}}}",
        batch_results(results),
        results.len() - applied
    )
}

/// The 201 body of an atomic bulk posting that committed: `{results}`, every item's transaction.
pub fn atomic_batch_reply(results: &[ItemResult]) -> String {
    format!("{{\"results\":{}}}", batch_results(results))
}

/// A problem document (JSON object text) with a `results` member added: `BATCH_REFUSED` names each
/// refused item's problem.
pub fn with_results(problem: &str, results: &[ItemResult]) -> String {
    match problem.trim_end().strip_suffix('}') {
        Some(head) if head.trim_end().ends_with('{') => format!("{head}\"results\":{}}}", batch_results(results)),
        Some(head) => format!("{head},\"results\":{}}}", batch_results(results)),
        None => problem.to_string(),
    }
}

/// The first broken row a verify found.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrokenRowView {
    pub wallet_id: Option<Uuid>,
    pub seq: Option<i64>,
    /// `transactions`, `audit_log`, `wallets` (the head) or `audit_checkpoints`.
    pub table: &'static str,
    /// The row's id in its table (txn id, audit id, wallet id, checkpoint id).
    pub id: String,
    /// `hash_mismatch`, `missing_seq`, `order`, `head_mismatch`, `unchained`, `unknown_version`,
    /// `checkpoint_mismatch` or `checkpoint_root`.
    pub fault: &'static str,
    /// The fault in words (`missing seq 3`).
    pub what: String,
}

/// `GET /admin/audit/verify`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditVerifyView {
    pub ok: bool,
    pub wallets: u64,
    pub rows: u64,
    pub checkpoints: u64,
    /// The first broken row; absent when `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<BrokenRowView>,
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use wallet_actors::chain::Head;
    use wallet_actors::{Amount, Currency, HoldStatus, WalletStatus};

    use super::*;

    fn wallet(balance: &str, currency: Currency, status: WalletStatus, holds: Vec<Hold>) -> WalletState {
        let created = Utc
            .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
            .single()
            .expect("a valid instant");
        WalletState {
            wallet_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            company_id: Uuid::new_v4(),
            balance: Amount::parse(balance).expect("an amount"),
            currency,
            status,
            version: 3,
            created_at: created,
            updated_at: created + Duration::milliseconds(1_234_567),
            budgets: vec![],
            holds,
            head: Head::default(),
        }
    }

    fn hold(wallet: &WalletState, amount: &str, captured: &str, expires_at: DateTime<Utc>) -> Hold {
        Hold {
            hold_id: Uuid::new_v4(),
            wallet_id: wallet.wallet_id,
            amount: Amount::parse(amount).expect("an amount"),
            captured: Amount::parse(captured).expect("an amount"),
            status: HoldStatus::Pending,
            reference_id: None,
            reference_type: None,
            description: None,
            metadata: None,
            expires_at,
            budgets: vec![],
            created_by: wallet.user_id,
            created_at: wallet.created_at,
            updated_at: wallet.created_at,
        }
    }

    #[test]
    fn wallet_reply_is_the_views_serialization() {
        let now = Utc::now();
        let mut with_holds = wallet("1250.50", Currency::Eur, WalletStatus::Frozen, vec![]);
        with_holds.holds = vec![
            hold(&with_holds, "100.25", "0", now + Duration::hours(1)),
            hold(&with_holds, "30", "10.5", now + Duration::hours(2)),
            // Past its expiry: reserves nothing at `now`.
            hold(&with_holds, "999", "0", now - Duration::seconds(1)),
        ];
        let wallets = [
            wallet("0", Currency::Usd, WalletStatus::Active, vec![]),
            wallet("9999999999999.99", Currency::Inr, WalletStatus::Closed, vec![]),
            wallet("0.07", Currency::Gbp, WalletStatus::Active, vec![]),
            with_holds,
        ];
        for w in &wallets {
            let mut written = String::new();
            write_wallet(&mut written, w, now).expect("writing to a String");
            let serialized = serde_json::to_string(&WalletView::at(w, now)).expect("serializable");
            assert_eq!(written, serialized);
            assert!(written.len() <= WALLET_REPLY_CAPACITY, "{} bytes", written.len());
        }
        let held: serde_json::Value = serde_json::from_str(&wallet_reply(&wallets[3])).expect("JSON");
        assert_eq!(held["held_amount"], "119.75");
        assert_eq!(held["available_balance"], "1130.75");
        assert_eq!(held["status"], "FROZEN");
    }
}
