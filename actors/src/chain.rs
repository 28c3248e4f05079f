//! The per-wallet hash chain: every ledger row and every audited non-money event of a wallet is linked to
//! the wallet's previous one by `hash = SHA-256(prev_hash ‖ canonical_v1(row))`. This module is the ONE
//! implementation of the encoding: the wallet's actor chains the rows it plans, the store chains the one
//! row it writes for another wallet (a transfer's TRANSFER_IN, under that wallet's row lock), the start-up
//! step chains rows written before chains existed, and verify recomputes from stored columns — all here.
//!
//! Why per wallet, in the actor: a wallet has exactly one writer at a time (its actor, and across
//! processes the version-guarded UPDATE of its row), so extending its chain needs no lock and no round
//! trip: the head (`seq`, `hash`) lives in the actor's `WalletState` and moves with the batch. This module
//! depends on nothing else of the crate.
//!
//! # `canonical_v1`
//! `"wallet-chain/v1" 0x00`, then each field as `u32 big-endian length ‖ UTF-8 bytes` (an absent value,
//! SQL NULL, is the length `0xFFFF_FFFF` and no bytes), in this order:
//! - ledger row (`transactions`): `"transactions"`, txn_id, wallet_id, type, amount, status,
//!   balance_after, description, reference_type, reference_id, metadata, actor_id, actor_role, hold_id,
//!   created_at;
//! - audit row (`audit_log`): `"audit_log"`, wallet_id, action, target_type, target_id, outcome, detail,
//!   actor_id, actor_role, at.
//!
//! Ids are lowercase hyphenated UUIDs; amounts are decimal text with exactly two decimals; instants are
//! microseconds since the Unix epoch (UTC) as decimal text (what `timestamptz` keeps); JSON (metadata,
//! detail) is [`canonical_json`]: keys sorted, no spaces, numbers by value (`1.50`, `1.5` and `15e-1` are
//! one number, as `jsonb` may print any of them back). The row's `seq` is not hashed: the order is the
//! links (a moved row no longer links to its predecessor), and seq only numbers them (a gap is a deleted
//! row). A new encoding gets a new `chain_version` and a new function beside this one; stored rows keep
//! the version they were hashed with.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The encoding version written in `chain_version` by [`canonical_v1`].
pub const CHAIN_VERSION: i16 = 1;
/// A SHA-256 digest.
pub type Hash = [u8; 32];
/// The `prev_hash` of a wallet's first row (and the head of a wallet with no rows).
pub const GENESIS: Hash = [0; 32];
/// The status every ledger row is written with (the ledger is append-only; see sql/V2).
pub const COMPLETED: &str = "COMPLETED";

const PREFIX: &[u8] = b"wallet-chain/v1\0";
const NULL_LEN: u32 = u32::MAX;

/// A wallet's chain head: the seq and hash of its last chained row (0 and [`GENESIS`] before the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Head {
    pub seq: i64,
    pub hash: Hash,
}

impl Default for Head {
    fn default() -> Self {
        Head { seq: 0, hash: GENESIS }
    }
}

/// Where a row sits on its wallet's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Link {
    pub seq: i64,
    pub prev_hash: Hash,
    pub hash: Hash,
}

impl Link {
    /// The head once this row is the last.
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash,
        }
    }
}

/// A ledger row as the chain reads it (from a planned `Entry`, see `state`, or from a stored row).
#[derive(Debug, Clone, Copy)]
pub struct LedgerRow<'a> {
    pub txn_id: Uuid,
    pub wallet_id: Uuid,
    pub kind: &'a str,
    pub amount: Decimal,
    pub status: &'a str,
    pub balance_after: Decimal,
    pub description: Option<&'a str>,
    pub reference_type: Option<&'a str>,
    pub reference_id: Option<&'a str>,
    pub metadata: Option<&'a serde_json::Value>,
    pub actor_id: Option<Uuid>,
    pub actor_role: Option<&'a str>,
    pub hold_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// An audit row of a wallet's chain as the chain reads it.
#[derive(Debug, Clone, Copy)]
pub struct AuditRow<'a> {
    pub wallet_id: Uuid,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    pub outcome: &'a str,
    pub detail: Option<&'a serde_json::Value>,
    pub actor_id: Option<Uuid>,
    pub actor_role: &'a str,
    pub at: DateTime<Utc>,
}

/// Any chained row.
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    Ledger(LedgerRow<'a>),
    Audit(AuditRow<'a>),
}

struct Encoder(Vec<u8>);

impl Encoder {
    fn field(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => {
                // A field longer than 4 GiB cannot be stored in a row either; clamp rather than panic.
                let len = u32::try_from(b.len()).unwrap_or(NULL_LEN - 1);
                self.0.extend_from_slice(&len.to_be_bytes());
                self.0.extend_from_slice(b);
            }
            None => self.0.extend_from_slice(&NULL_LEN.to_be_bytes()),
        }
    }
    fn text(&mut self, s: &str) {
        self.field(Some(s.as_bytes()));
    }
    fn opt_text(&mut self, s: Option<&str>) {
        self.field(s.map(str::as_bytes));
    }
    fn id(&mut self, id: Uuid) {
        self.text(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    }
    fn opt_id(&mut self, id: Option<Uuid>) {
        match id {
            Some(id) => self.id(id),
            None => self.field(None),
        }
    }
    fn money(&mut self, d: Decimal) {
        self.text(&money_text(d));
    }
    fn instant(&mut self, t: DateTime<Utc>) {
        self.text(&t.timestamp_micros().to_string());
    }
    fn json(&mut self, v: Option<&serde_json::Value>) {
        match v {
            Some(v) => self.text(&canonical_json(v)),
            None => self.field(None),
        }
    }
}

/// Decimal text with exactly two decimals (`DECIMAL(15,2)`'s own form).
fn money_text(d: Decimal) -> String {
    let mut d = d;
    d.rescale(2);
    d.to_string()
}

/// The versioned canonical bytes of a row (see the module docs).
pub fn canonical_v1(row: &Row<'_>) -> Vec<u8> {
    let mut e = Encoder(Vec::with_capacity(256));
    e.0.extend_from_slice(PREFIX);
    match row {
        Row::Ledger(r) => {
            e.text("transactions");
            e.id(r.txn_id);
            e.id(r.wallet_id);
            e.text(r.kind);
            e.money(r.amount);
            e.text(r.status);
            e.money(r.balance_after);
            e.opt_text(r.description);
            e.opt_text(r.reference_type);
            e.opt_text(r.reference_id);
            e.json(r.metadata);
            e.opt_id(r.actor_id);
            e.opt_text(r.actor_role);
            e.opt_id(r.hold_id);
            e.instant(r.created_at);
        }
        Row::Audit(r) => {
            e.text("audit_log");
            e.id(r.wallet_id);
            e.text(r.action);
            e.text(r.target_type);
            e.text(r.target_id);
            e.text(r.outcome);
            e.json(r.detail);
            e.opt_id(r.actor_id);
            e.text(r.actor_role);
            e.instant(r.at);
        }
    }
    e.0
}

/// `SHA-256(prev_hash ‖ canonical(row))` under the given encoding version (`None`: a version this build
/// does not know).
pub fn hash(version: i16, prev_hash: &Hash, row: &Row<'_>) -> Option<Hash> {
    match version {
        1 => {
            let mut h = Sha256::new();
            h.update(prev_hash);
            h.update(canonical_v1(row));
            Some(h.finalize().into())
        }
        _ => None,
    }
}

/// Chains `row` after `head` with the current encoding: its link, whose `head()` is the new head.
pub fn link(head: Head, row: &Row<'_>) -> Link {
    let mut h = Sha256::new();
    h.update(head.hash);
    h.update(canonical_v1(row));
    Link {
        seq: head.seq + 1,
        prev_hash: head.hash,
        hash: h.finalize().into(),
    }
}

/// An instant as `timestamptz` stores it (microseconds; Postgres' client library truncates the rest), so
/// that what is hashed is what is read back.
pub fn stored_instant(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// JSON with object keys sorted (by their UTF-8 bytes), no insignificant whitespace, strings escaped as
/// serde_json escapes them, and numbers by value: `[-]digits"e"exponent` with no leading or trailing zero
/// in `digits` (zero is `0`), so any text of one number gives one form, whatever `jsonb` prints it as.
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = String::with_capacity(64);
    write_json(&mut out, v);
    out
}

fn write_json(out: &mut String, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&canonical_number(&n.to_string())),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                if let Some(item) = map.get(k.as_str()) {
                    write_json(out, item);
                }
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    // serde_json's escaping of a string cannot fail; the fallback keeps the text distinct anyway.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => {
            out.push('"');
            out.push_str(s);
            out.push('"');
        }
    }
}

/// A JSON number's text by value (see [`canonical_json`]); text that is not a JSON number is kept as is.
fn canonical_number(text: &str) -> String {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, "0"),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let Ok(mut exp) = exponent.trim_start_matches('+').parse::<i64>() else {
        return text.to_string();
    };
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return text.to_string();
    }
    exp = exp.saturating_sub(i64::try_from(frac.len()).unwrap_or(i64::MAX));
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    if trimmed.is_empty() {
        return "0".to_string();
    }
    exp = exp.saturating_add(i64::try_from(digits.len() - trimmed.len()).unwrap_or(0));
    format!("{}{trimmed}e{exp}", if negative { "-" } else { "" })
}

/// One wallet's head as a checkpoint records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointLeaf {
    pub wallet_id: Uuid,
    pub head: Head,
}

/// The Merkle root over wallet heads (sorted by wallet id here, so the caller's order does not matter):
/// leaf = SHA-256(0x00 ‖ wallet id ‖ seq (8 bytes, big-endian) ‖ head hash), node = SHA-256(0x01 ‖ left ‖
/// right); an odd node at the end of a level moves up unchanged (never paired with itself, so two
/// different leaf sets never share a root). No leaves: SHA-256(0x02).
pub fn merkle_root(leaves: &[CheckpointLeaf]) -> Hash {
    let mut sorted: Vec<&CheckpointLeaf> = leaves.iter().collect();
    sorted.sort_unstable_by_key(|l| l.wallet_id);
    let mut level: Vec<Hash> = sorted
        .iter()
        .map(|l| {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(l.wallet_id.as_bytes());
            h.update(l.head.seq.to_be_bytes());
            h.update(l.head.hash);
            h.finalize().into()
        })
        .collect();
    if level.is_empty() {
        return Sha256::digest([2u8]).into();
    }
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => {
                    let mut h = Sha256::new();
                    h.update([1u8]);
                    h.update(l);
                    h.update(r);
                    h.finalize().into()
                }
                [one] => *one,
                _ => GENESIS,
            })
            .collect();
    }
    level[0]
}

/// A checkpoint's root: SHA-256("wallet-checkpoint/v1" 0x00 ‖ previous checkpoint's root ‖ Merkle root of
/// its heads), so checkpoints chain too (the first one's previous root is [`GENESIS`]).
pub fn checkpoint_root(prev_root: &Hash, leaves: &[CheckpointLeaf]) -> Hash {
    let mut h = Sha256::new();
    h.update(b"wallet-checkpoint/v1\0");
    h.update(prev_root);
    h.update(merkle_root(leaves));
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ledger<'a>(meta: Option<&'a serde_json::Value>, amount: &str) -> LedgerRow<'a> {
        LedgerRow {
            txn_id: Uuid::from_u128(1),
            wallet_id: Uuid::from_u128(2),
            kind: "DEBIT",
            amount: amount.parse().unwrap(),
            status: COMPLETED,
            balance_after: "10".parse().unwrap(),
            description: None,
            reference_type: Some("BOOKING"),
            reference_id: Some("b-1"),
            metadata: meta,
            actor_id: Some(Uuid::from_u128(3)),
            actor_role: Some("service"),
            hold_id: None,
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
        }
    }

    #[test]
    fn json_is_canonical_whatever_the_key_order_and_number_text() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b": 1.50, "a": [1e2, "x"], "c": {"z": 0, "y": -0.0}}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"c":{"y":0,"z":0.00},"a":[100,"x"],"b":15e-1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":[1e2,"x"],"b":15e-1,"c":{"y":0,"z":0}}"#);
        assert_ne!(canonical_json(&json!({"a": 1})), canonical_json(&json!({"a": "1"})));
    }

    #[test]
    fn numbers_keep_their_value_and_sign() {
        assert_eq!(canonical_number("0"), "0");
        assert_eq!(canonical_number("120"), "12e1");
        assert_eq!(canonical_number("-0.012"), "-12e-3");
        assert_eq!(canonical_number("1.2E+3"), "12e2");
        assert_ne!(canonical_number("12"), canonical_number("-12"));
    }

    #[test]
    fn an_amount_is_hashed_with_two_decimals_so_its_scale_does_not_matter() {
        let a = canonical_v1(&Row::Ledger(ledger(None, "5")));
        let b = canonical_v1(&Row::Ledger(ledger(None, "5.00")));
        assert_eq!(a, b);
        assert_ne!(a, canonical_v1(&Row::Ledger(ledger(None, "5.01"))));
    }

    #[test]
    fn an_absent_field_differs_from_an_empty_one() {
        let mut r = ledger(None, "5");
        let none = canonical_v1(&Row::Ledger(r));
        r.description = Some("");
        assert_ne!(none, canonical_v1(&Row::Ledger(r)));
    }

    #[test]
    fn every_field_of_a_row_is_in_its_hash() {
        let meta = json!({"k": "v"});
        let other = json!({"k": "w"});
        let base = ledger(Some(&meta), "5");
        let h = |r: LedgerRow<'_>| link(Head::default(), &Row::Ledger(r)).hash;
        let variants = [
            LedgerRow {
                txn_id: Uuid::from_u128(9),
                ..base
            },
            LedgerRow {
                wallet_id: Uuid::from_u128(9),
                ..base
            },
            LedgerRow { kind: "CREDIT", ..base },
            LedgerRow {
                status: "FAILED",
                ..base
            },
            LedgerRow {
                balance_after: "11".parse().unwrap(),
                ..base
            },
            LedgerRow {
                description: Some("d"),
                ..base
            },
            LedgerRow {
                reference_type: None,
                ..base
            },
            LedgerRow {
                reference_id: Some("b-2"),
                ..base
            },
            LedgerRow {
                metadata: Some(&other),
                ..base
            },
            LedgerRow { actor_id: None, ..base },
            LedgerRow {
                actor_role: Some("admin"),
                ..base
            },
            LedgerRow {
                hold_id: Some(Uuid::from_u128(9)),
                ..base
            },
            LedgerRow {
                created_at: base.created_at + chrono::Duration::microseconds(1),
                ..base
            },
        ];
        for v in variants {
            assert_ne!(h(v), h(base), "{v:?}");
        }
    }

    #[test]
    fn a_link_extends_the_head_and_binds_the_previous_hash() {
        let row = Row::Ledger(ledger(None, "5"));
        let first = link(Head::default(), &row);
        assert_eq!((first.seq, first.prev_hash), (1, GENESIS));
        assert_eq!(hash(CHAIN_VERSION, &GENESIS, &row), Some(first.hash));
        let second = link(first.head(), &row);
        assert_eq!((second.seq, second.prev_hash), (2, first.hash));
        assert_ne!(
            second.hash, first.hash,
            "the same row after another head hashes differently"
        );
        assert_eq!(hash(99, &GENESIS, &row), None);
    }

    #[test]
    fn audit_rows_and_ledger_rows_never_share_an_encoding() {
        let audit = AuditRow {
            wallet_id: Uuid::from_u128(2),
            action: "wallet.set_status",
            target_type: "wallet",
            target_id: "x",
            outcome: "APPLIED",
            detail: None,
            actor_id: None,
            actor_role: "admin",
            at: DateTime::from_timestamp_micros(0).unwrap(),
        };
        assert_ne!(
            canonical_v1(&Row::Audit(audit)),
            canonical_v1(&Row::Ledger(ledger(None, "5")))
        );
    }

    #[test]
    fn the_merkle_root_ignores_order_and_sees_every_head() {
        let leaf = |w: u128, seq: i64, b: u8| CheckpointLeaf {
            wallet_id: Uuid::from_u128(w),
            head: Head { seq, hash: [b; 32] },
        };
        let three = [leaf(1, 1, 1), leaf(2, 5, 2), leaf(3, 2, 3)];
        let shuffled = [three[2], three[0], three[1]];
        assert_eq!(merkle_root(&three), merkle_root(&shuffled));
        assert_ne!(
            merkle_root(&three),
            merkle_root(&[leaf(1, 1, 1), leaf(2, 5, 2), leaf(3, 2, 4)])
        );
        assert_ne!(
            merkle_root(&three),
            merkle_root(&[leaf(1, 1, 1), leaf(2, 6, 2), leaf(3, 2, 3)])
        );
        assert_ne!(merkle_root(&three[..2]), merkle_root(&three));
        // An odd leaf is not paired with itself: [a, b, c] and [a, b, c, c] differ.
        assert_ne!(
            merkle_root(&three),
            merkle_root(&[three[0], three[1], three[2], leaf(3, 2, 3)])
        );
        assert_ne!(checkpoint_root(&GENESIS, &three), checkpoint_root(&[1; 32], &three));
    }

    #[test]
    fn stored_instants_are_whole_microseconds() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(stored_instant(t).timestamp_subsec_nanos(), 123_456_000);
    }
}
