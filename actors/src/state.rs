//! What the engine knows about a wallet and about one money movement.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::chain::{Head, LedgerRow, Link};
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
    /// The wallet's holds that still reserve money as stored: PENDING or PARTIALLY_CAPTURED, including any
    /// past `expires_at` that no batch has expired yet (they reserve nothing from that instant on; see
    /// [`WalletState::held_at`]). At most `command::MAX_PENDING_HOLDS` (a new hold beyond is refused).
    pub holds: Vec<Hold>,
    /// The wallet's hash-chain head (`wallets.head_seq`, `head_hash`): the last chained row's seq and hash.
    /// Its actor extends it with every batch; the version guard of the row's UPDATE guards it too.
    pub head: Head,
}

impl WalletState {
    /// What the stored holds reserve: the wallet row's `reserved` column (expired-but-unswept included).
    pub fn reserved(&self) -> Amount {
        sum(self.holds.iter().map(Hold::remaining))
    }

    /// What the holds reserve at `now`: a hold stops counting at its `expires_at`, whether or not a sweep
    /// or a batch has written its expiry yet.
    pub fn held_at(&self, now: DateTime<Utc>) -> Amount {
        sum(self.holds.iter().filter(|h| h.live_at(now)).map(Hold::remaining))
    }

    /// The balance a debit, a transfer out or a new hold may use at `now`: balance minus what live holds
    /// reserve. Never negative and never above the balance (the holds were admitted against it).
    pub fn available_at(&self, now: DateTime<Utc>) -> Amount {
        self.balance.checked_sub(self.held_at(now)).unwrap_or(Amount::ZERO)
    }

    /// The soonest expiry among the stored holds (the wallet row's `hold_expires_at`): until then a reader
    /// may take `balance - reserved` as the available balance without looking at the holds.
    pub fn next_hold_expiry(&self) -> Option<DateTime<Utc>> {
        self.holds.iter().map(|h| h.expires_at).min()
    }

    /// The hold with this id among those that still reserve money.
    pub fn hold(&self, hold_id: Uuid) -> Option<&Hold> {
        self.holds.iter().find(|h| h.hold_id == hold_id)
    }
}

/// Sums amounts that are parts of one balance (so they cannot leave the `DECIMAL(15,2)` range).
fn sum(amounts: impl Iterator<Item = Amount>) -> Amount {
    amounts.fold(Amount::ZERO, |acc, a| acc.checked_add(a).unwrap_or(acc))
}

/// Where a hold is in its life. PENDING and PARTIALLY_CAPTURED reserve money; the rest are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HoldStatus {
    Pending,
    PartiallyCaptured,
    Captured,
    Voided,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Pending => "PENDING",
            HoldStatus::PartiallyCaptured => "PARTIALLY_CAPTURED",
            HoldStatus::Captured => "CAPTURED",
            HoldStatus::Voided => "VOIDED",
            HoldStatus::Expired => "EXPIRED",
        }
    }

    /// Whether a hold in this status still reserves money (until it expires).
    pub fn is_open(self) -> bool {
        matches!(self, HoldStatus::Pending | HoldStatus::PartiallyCaptured)
    }
}

impl fmt::Display for HoldStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that names no hold status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hold status {0:?}")]
pub struct UnknownHoldStatus(pub String);

impl FromStr for HoldStatus {
    type Err = UnknownHoldStatus;
    fn from_str(s: &str) -> Result<Self, UnknownHoldStatus> {
        match s {
            "PENDING" => Ok(HoldStatus::Pending),
            "PARTIALLY_CAPTURED" => Ok(HoldStatus::PartiallyCaptured),
            "CAPTURED" => Ok(HoldStatus::Captured),
            "VOIDED" => Ok(HoldStatus::Voided),
            "EXPIRED" => Ok(HoldStatus::Expired),
            other => Err(UnknownHoldStatus(other.to_string())),
        }
    }
}

/// An authorization: money reserved on a wallet without moving it, later captured (a DEBIT carrying the
/// hold's id) or released (voided, expired, or the rest after a final capture).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub hold_id: Uuid,
    pub wallet_id: Uuid,
    pub amount: Amount,
    /// Captured so far (may exceed `amount` by the over-capture tolerance).
    pub captured: Amount,
    /// As stored; see [`Hold::status_at`] for what a reader sees.
    pub status: HoldStatus,
    pub reference_id: Option<String>,
    pub reference_type: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub expires_at: DateTime<Utc>,
    /// Budgets charged with the hold at its creation (each by its full amount); captures keep their part
    /// charged, releases give the rest back.
    pub budgets: Vec<Uuid>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Hold {
    /// What the hold still reserves: its amount less what was captured (zero once captured in full, or
    /// once it is no longer open).
    pub fn remaining(&self) -> Amount {
        if !self.status.is_open() {
            return Amount::ZERO;
        }
        self.amount.checked_sub(self.captured).unwrap_or(Amount::ZERO)
    }

    /// Whether the hold reserves money at `now`.
    pub fn live_at(&self, now: DateTime<Utc>) -> bool {
        self.status.is_open() && now < self.expires_at
    }

    /// The status a reader sees at `now`: an open hold past its `expires_at` is EXPIRED at that instant.
    pub fn status_at(&self, now: DateTime<Utc>) -> HoldStatus {
        if self.status.is_open() && now >= self.expires_at {
            HoldStatus::Expired
        } else {
            self.status
        }
    }

    /// What a reader sees remaining at `now` (nothing once expired).
    pub fn remaining_at(&self, now: DateTime<Utc>) -> Amount {
        if self.live_at(now) {
            self.remaining()
        } else {
            Amount::ZERO
        }
    }
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
    /// The hold a capture's DEBIT came from (`None` for every other row).
    pub hold_id: Option<Uuid>,
    /// Its place on its wallet's hash chain, set when the batch is closed (`None` while planning, or when
    /// the chain is switched off for a measurement).
    pub link: Option<Link>,
}

impl<'a> From<&'a Entry> for LedgerRow<'a> {
    fn from(e: &'a Entry) -> Self {
        LedgerRow {
            txn_id: e.txn_id,
            wallet_id: e.wallet_id,
            kind: e.kind.as_str(),
            amount: e.amount.value(),
            status: crate::chain::COMPLETED,
            balance_after: e.balance_after.value(),
            description: e.description.as_deref(),
            reference_type: e.reference_type.as_deref(),
            reference_id: e.reference_id.as_deref(),
            metadata: e.metadata.as_ref(),
            actor_id: Some(e.origin.actor_id),
            actor_role: Some(e.origin.role.as_str()),
            hold_id: e.hold_id,
            created_at: e.created_at,
        }
    }
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
