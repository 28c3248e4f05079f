//! What the engine knows about a wallet and about one money movement.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::{Amount, Currency, UnknownName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WalletStatus {
    Active,
    Frozen,
    /// Final: a closed wallet never changes status again.
    Closed,
}

impl WalletStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WalletStatus::Active => "ACTIVE",
            WalletStatus::Frozen => "FROZEN",
            WalletStatus::Closed => "CLOSED",
        }
    }
}

impl fmt::Display for WalletStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WalletStatus {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "ACTIVE" => Ok(WalletStatus::Active),
            "FROZEN" => Ok(WalletStatus::Frozen),
            "CLOSED" => Ok(WalletStatus::Closed),
            other => Err(UnknownName::WalletStatus(other.to_string())),
        }
    }
}

/// Transaction types, as stored in `transactions.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TxnType {
    Credit,
    Debit,
    TransferIn,
    TransferOut,
}

impl TxnType {
    pub fn as_str(self) -> &'static str {
        match self {
            TxnType::Credit => "CREDIT",
            TxnType::Debit => "DEBIT",
            TxnType::TransferIn => "TRANSFER_IN",
            TxnType::TransferOut => "TRANSFER_OUT",
        }
    }

    /// Whether this type takes money out of the wallet.
    pub fn is_outflow(self) -> bool {
        matches!(self, TxnType::Debit | TxnType::TransferOut)
    }
}

impl fmt::Display for TxnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TxnType {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "CREDIT" => Ok(TxnType::Credit),
            "DEBIT" => Ok(TxnType::Debit),
            "TRANSFER_IN" => Ok(TxnType::TransferIn),
            "TRANSFER_OUT" => Ok(TxnType::TransferOut),
            other => Err(UnknownName::TxnType(other.to_string())),
        }
    }
}

/// The committed state of one wallet, as last read from or written to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletState {
    pub wallet_id: Uuid,
    pub user_id: Uuid,
    /// The owner's company, so that visibility can be decided without another query.
    pub company_id: Uuid,
    pub balance: Amount,
    pub currency: Currency,
    pub status: WalletStatus,
    /// Bumped by every committed change; writes are guarded by it (optimistic concurrency in SQL).
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The wallet's budgets that are not EXPIRED (a debit must fit every one that applies on its day).
    pub budgets: Vec<crate::budget::Budget>,
}

/// Who asked for a change, carried to the store for the audit log and for exactly-once bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The caller's `sub` (or the system's id for events).
    pub actor_id: Uuid,
    /// The caller's role (`user`, `manager`, `admin`, `service`, or `system` for consumed events).
    pub role: String,
    /// Present when the request carried an Idempotency-Key; the store completes it in the same
    /// transaction as the effect.
    pub idempotency: Option<IdempotencyTicket>,
    /// Present for consumed events: the event goes into the inbox in the same transaction.
    pub inbox_event: Option<InboxEvent>,
}

/// A consumed event as the inbox (`processed_events`) records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxEvent {
    pub id: Uuid,
    /// The event's own type (`BookingCreated`, ...), not the posting's direction.
    pub event_type: &'static str,
}

/// A claimed Idempotency-Key: keys are scoped to the caller and the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyTicket {
    pub caller: Uuid,
    pub endpoint: String,
    pub key: String,
    /// Written into the key's row when it was claimed. The effect commits only while the row still holds
    /// this token (the store locks and checks it in the commit), so a claim that was released or taken over
    /// (after its lease) can never commit late.
    pub token: Uuid,
}

/// One money movement as it will be (or was) written: a `transactions` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// A UUIDv7: its timestamp *is* `created_at`, which lets the partitioned table keep txn ids unique.
    pub txn_id: Uuid,
    pub wallet_id: Uuid,
    pub kind: TxnType,
    pub amount: Amount,
    pub description: Option<String>,
    pub reference_id: Option<String>,
    pub reference_type: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub balance_after: Amount,
    pub created_at: DateTime<Utc>,
    pub origin: Origin,
    /// Budgets this debit is charged to (each by the full amount); a refund gives it back to them.
    pub budgets: Vec<Uuid>,
}

/// A new transaction id and its creation time, which is the id's own millisecond timestamp.
///
/// Why: `transactions` is partitioned by `created_at`, so its primary key must include it. Deriving
/// `created_at` from the id (and checking that in SQL) makes `(txn_id, created_at)` as unique as `txn_id`.
pub fn new_txn_id() -> (Uuid, DateTime<Utc>) {
    let id = Uuid::now_v7();
    (id, txn_time(id))
}

/// The creation time encoded in a UUIDv7 (millisecond precision).
pub fn txn_time(id: Uuid) -> DateTime<Utc> {
    let bytes = id.as_bytes();
    let mut ms: i64 = 0;
    for b in &bytes[..6] {
        ms = (ms << 8) | i64::from(*b);
    }
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_txn_id_carries_its_own_creation_millisecond() {
        let before = Utc::now().timestamp_millis();
        let (id, at) = new_txn_id();
        let after = Utc::now().timestamp_millis();
        assert!(at.timestamp_millis() >= before && at.timestamp_millis() <= after);
        assert_eq!(txn_time(id), at);
    }
}
