//! The books check after a run: what the database holds against what the clients were told.
//!
//! - every wallet's balance equals its initial balance plus its credits minus its debits, as rows;
//! - every 201 the harness received names a row that exists, on the right wallet, with the right amount
//!   and type (none lost), and no 201 names the same transaction twice;
//! - every row has a 201, except at most as many as requests on that wallet whose outcome the client
//!   could not learn (timeouts, dropped connections), so none is doubled;
//! - hence the number of 201s equals the number of rows written when no outcome was unknown.
//!
//! [`check`] is pure so it can be tested on made-up books; `db` reads the real ones.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use uuid::Uuid;

/// Violations listed in full in a report; the rest are counted.
pub const MAX_LISTED_VIOLATIONS: usize = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Kind {
    Debit,
    Credit,
}

impl Kind {
    pub fn as_db(self) -> &'static str {
        match self {
            Kind::Debit => "DEBIT",
            Kind::Credit => "CREDIT",
        }
    }
}

/// A write the client got a 201 for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub txn_id: Uuid,
    pub wallet_id: Uuid,
    pub cents: i64,
    pub kind: Kind,
}

/// A wallet row as stored, amounts in cents.
#[derive(Debug, Clone)]
pub struct DbWallet {
    pub wallet_id: Uuid,
    pub initial_cents: i64,
    pub balance_cents: i64,
}

/// A transaction row as stored.
#[derive(Debug, Clone)]
pub struct DbTxn {
    pub txn_id: Uuid,
    pub wallet_id: Uuid,
    pub cents: i64,
    /// CREDIT, DEBIT, TRANSFER_IN or TRANSFER_OUT.
    pub kind: String,
}

/// What the clients of a run learnt.
#[derive(Debug, Default, Clone)]
pub struct ClientLedger {
    pub acked: Vec<Acked>,
    /// Writes per wallet whose outcome is unknown (no HTTP answer, or a 5xx that may have committed).
    pub unknown: HashMap<Uuid, u64>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct BooksReport {
    pub wallets_checked: u64,
    pub rows_in_db: u64,
    pub acked_201: u64,
    pub unknown_outcomes: u64,
    /// Rows without a 201 that an unknown outcome accounts for.
    pub rows_from_unknown_outcomes: u64,
    pub lost: u64,
    pub doubled: u64,
    pub balance_mismatches: u64,
    pub violation_count: u64,
    pub violations: Vec<String>,
    pub ok: bool,
}

impl BooksReport {
    pub(crate) fn violate(&mut self, what: String) {
        self.violation_count += 1;
        if self.violations.len() < MAX_LISTED_VIOLATIONS {
            self.violations.push(what);
        }
    }
}

fn signed(kind: &str, cents: i64) -> Option<i64> {
    match kind {
        "CREDIT" | "TRANSFER_IN" => Some(cents),
        "DEBIT" | "TRANSFER_OUT" => Some(-cents),
        _ => None,
    }
}

/// Checks the books. `rows` must be all transaction rows of `wallets` (and only theirs).
pub fn check(wallets: &[DbWallet], rows: &[DbTxn], client: &ClientLedger) -> BooksReport {
    let mut r = BooksReport {
        acked_201: client.acked.len() as u64,
        unknown_outcomes: client.unknown.values().sum(),
        ..BooksReport::default()
    };
    check_balances(wallets, rows, &mut r);
    // 2. every 201 names a matching row, once.
    let by_id: HashMap<Uuid, &DbTxn> = rows.iter().map(|t| (t.txn_id, t)).collect();
    if by_id.len() != rows.len() {
        r.violate(format!(
            "{} rows share a txn_id with another row",
            rows.len() - by_id.len()
        ));
    }
    let mut seen: HashSet<Uuid> = HashSet::with_capacity(client.acked.len());
    for a in &client.acked {
        if !seen.insert(a.txn_id) {
            r.doubled += 1;
            r.violate(format!("txn {} was acknowledged twice", a.txn_id));
            continue;
        }
        match by_id.get(&a.txn_id) {
            None => {
                r.lost += 1;
                r.violate(format!(
                    "txn {} ({} {} on wallet {}) got a 201 but is not in the database",
                    a.txn_id,
                    a.kind.as_db(),
                    cents_text(a.cents),
                    a.wallet_id
                ));
            }
            Some(t) if t.wallet_id != a.wallet_id || t.cents != a.cents || t.kind != a.kind.as_db() => {
                r.violate(format!(
                    "txn {}: acknowledged as {} {} on {}, stored as {} {} on {}",
                    a.txn_id,
                    a.kind.as_db(),
                    cents_text(a.cents),
                    a.wallet_id,
                    t.kind,
                    cents_text(t.cents),
                    t.wallet_id
                ));
            }
            Some(_) => {}
        }
    }

    // 3. rows without a 201: only as many as unknown outcomes on their wallet.
    let mut unacked: HashMap<Uuid, u64> = HashMap::new();
    for t in rows {
        if !seen.contains(&t.txn_id) {
            *unacked.entry(t.wallet_id).or_default() += 1;
        }
    }
    let mut unacked_wallets: Vec<_> = unacked.into_iter().collect();
    unacked_wallets.sort();
    for (w, n) in unacked_wallets {
        let allowed = client.unknown.get(&w).copied().unwrap_or(0);
        r.rows_from_unknown_outcomes += n.min(allowed);
        if n > allowed {
            r.doubled += n - allowed;
            r.violate(format!(
                "wallet {w}: {n} rows without a 201 but only {allowed} requests with an unknown outcome"
            ));
        }
    }
    r.ok = r.violation_count == 0;
    r
}

/// The books of writes made without HTTP replies (the pgbench baseline): balances against rows, and
/// exactly `committed` rows.
pub fn check_sql(wallets: &[DbWallet], rows: &[DbTxn], committed: std::ops::RangeInclusive<u64>) -> BooksReport {
    let mut r = BooksReport::default();
    check_balances(wallets, rows, &mut r);
    let n = rows.len() as u64;
    if !committed.contains(&n) {
        if committed.start() == committed.end() {
            r.violate(format!("{} debits committed but {n} rows exist", committed.start()));
        } else {
            r.violate(format!(
                "{} to {} debits committed (some outcomes unknown) but {n} rows exist",
                committed.start(),
                committed.end()
            ));
        }
    }
    r.ok = r.violation_count == 0;
    r
}

/// Every wallet's balance is its initial balance plus its signed rows, never negative; every row belongs
/// to one of the wallets.
pub(crate) fn check_balances(wallets: &[DbWallet], rows: &[DbTxn], r: &mut BooksReport) {
    r.wallets_checked = wallets.len() as u64;
    r.rows_in_db = rows.len() as u64;
    let mut net: HashMap<Uuid, i64> = HashMap::with_capacity(wallets.len());
    for t in rows {
        match signed(&t.kind, t.cents) {
            Some(v) => *net.entry(t.wallet_id).or_default() += v,
            None => r.violate(format!("row {} has unknown type {:?}", t.txn_id, t.kind)),
        }
    }
    let known: HashSet<Uuid> = wallets.iter().map(|w| w.wallet_id).collect();
    for w in wallets {
        let expected = w.initial_cents + net.get(&w.wallet_id).copied().unwrap_or(0);
        if w.balance_cents != expected {
            r.balance_mismatches += 1;
            r.violate(format!(
                "wallet {}: balance {} but initial {} + rows {} = {}",
                w.wallet_id,
                cents_text(w.balance_cents),
                cents_text(w.initial_cents),
                cents_text(expected - w.initial_cents),
                cents_text(expected)
            ));
        }
        if w.balance_cents < 0 {
            r.violate(format!(
                "wallet {}: negative balance {}",
                w.wallet_id,
                cents_text(w.balance_cents)
            ));
        }
    }
    for t in rows {
        if !known.contains(&t.wallet_id) {
            r.violate(format!(
                "row {} belongs to wallet {} outside the run",
                t.txn_id, t.wallet_id
            ));
        }
    }
}

/// Cents as a decimal text ("-12.05").
pub fn cents_text(c: i64) -> String {
    let sign = if c < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", c.unsigned_abs() / 100, c.unsigned_abs() % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn wallet(n: u128, initial: i64, balance: i64) -> DbWallet {
        DbWallet {
            wallet_id: id(n),
            initial_cents: initial,
            balance_cents: balance,
        }
    }

    fn row(t: u128, w: u128, cents: i64, kind: &str) -> DbTxn {
        DbTxn {
            txn_id: id(t),
            wallet_id: id(w),
            cents,
            kind: kind.into(),
        }
    }

    fn ack(t: u128, w: u128, cents: i64, kind: Kind) -> Acked {
        Acked {
            txn_id: id(t),
            wallet_id: id(w),
            cents,
            kind,
        }
    }

    fn balanced() -> (Vec<DbWallet>, Vec<DbTxn>, ClientLedger) {
        let wallets = vec![wallet(1, 10_000, 9_650), wallet(2, 500, 600)];
        let rows = vec![
            row(100, 1, 250, "DEBIT"),
            row(101, 1, 100, "DEBIT"),
            row(102, 2, 100, "CREDIT"),
        ];
        let client = ClientLedger {
            acked: vec![
                ack(100, 1, 250, Kind::Debit),
                ack(101, 1, 100, Kind::Debit),
                ack(102, 2, 100, Kind::Credit),
            ],
            unknown: HashMap::new(),
        };
        (wallets, rows, client)
    }

    #[test]
    fn balanced_books_pass() {
        let (w, r, c) = balanced();
        let rep = check(&w, &r, &c);
        assert!(rep.ok, "{rep:?}");
        assert_eq!((rep.wallets_checked, rep.rows_in_db, rep.acked_201), (2, 3, 3));
        assert_eq!(rep.violation_count, 0);
    }

    #[test]
    fn a_balance_that_does_not_match_its_rows_fails() {
        let (mut w, r, c) = balanced();
        w[0].balance_cents -= 1;
        let rep = check(&w, &r, &c);
        assert!(!rep.ok);
        assert_eq!(rep.balance_mismatches, 1);
        assert!(rep.violations[0].contains("balance 96.49"), "{:?}", rep.violations);
    }

    #[test]
    fn a_201_without_its_row_is_lost() {
        let (mut w, mut r, c) = balanced();
        r.remove(1);
        w[0].balance_cents += 100; // the balance agrees with the rows; the 201 is still lost
        let rep = check(&w, &r, &c);
        assert!(!rep.ok);
        assert_eq!(rep.lost, 1);
        assert_eq!(rep.balance_mismatches, 0);
    }

    #[test]
    fn a_row_without_a_201_is_doubled_unless_an_outcome_was_unknown() {
        let (mut w, mut r, mut c) = balanced();
        r.push(row(103, 1, 250, "DEBIT"));
        w[0].balance_cents -= 250;
        let rep = check(&w, &r, &c);
        assert!(!rep.ok);
        assert_eq!(rep.doubled, 1);

        c.unknown.insert(id(1), 1);
        let rep = check(&w, &r, &c);
        assert!(rep.ok, "{rep:?}");
        assert_eq!(rep.rows_from_unknown_outcomes, 1);
        assert_eq!(rep.unknown_outcomes, 1);

        // An unknown outcome on another wallet does not excuse it.
        c.unknown.clear();
        c.unknown.insert(id(2), 5);
        assert!(!check(&w, &r, &c).ok);
    }

    #[test]
    fn the_same_txn_acknowledged_twice_is_doubled() {
        let (w, r, mut c) = balanced();
        c.acked.push(c.acked[0].clone());
        let rep = check(&w, &r, &c);
        assert!(!rep.ok);
        assert_eq!(rep.doubled, 1);
    }

    #[test]
    fn an_ack_that_disagrees_with_its_row_fails() {
        let (w, r, mut c) = balanced();
        c.acked[0].cents = 251;
        assert!(!check(&w, &r, &c).ok);
        let (w, r, mut c) = balanced();
        c.acked[0].kind = Kind::Credit;
        assert!(!check(&w, &r, &c).ok);
    }

    #[test]
    fn negative_balances_and_strange_rows_fail() {
        let w = vec![wallet(1, 0, -100)];
        let r = vec![row(100, 1, 100, "DEBIT")];
        let c = ClientLedger {
            acked: vec![ack(100, 1, 100, Kind::Debit)],
            unknown: HashMap::new(),
        };
        let rep = check(&w, &r, &c);
        assert!(!rep.ok);
        assert!(rep.violations.iter().any(|v| v.contains("negative")));

        let w = vec![wallet(1, 0, 0)];
        let r = vec![row(100, 1, 100, "REFUND")];
        assert!(!check(&w, &r, &ClientLedger::default()).ok);
    }

    #[test]
    fn violations_are_capped_in_the_list_but_all_counted() {
        let w: Vec<_> = (0..100).map(|i| wallet(i, 100, 99)).collect();
        let rep = check(&w, &[], &ClientLedger::default());
        assert_eq!(rep.violation_count, 100);
        assert_eq!(rep.violations.len(), MAX_LISTED_VIOLATIONS);
    }

    #[test]
    fn sql_only_books_check_balances_and_the_row_count() {
        let (w, r, _) = balanced();
        assert!(check_sql(&w, &r, 3..=3).ok);
        let rep = check_sql(&w, &r, 4..=4);
        assert!(!rep.ok);
        assert!(rep.violations[0].contains("4 debits committed but 3 rows"));
        // Unknown outcomes widen the count, never the balances.
        assert!(check_sql(&w, &r, 2..=4).ok);
        assert!(!check_sql(&w, &r, 4..=6).ok);
        let (mut w, r, _) = balanced();
        w[1].balance_cents += 1;
        assert_eq!(check_sql(&w, &r, 2..=4).balance_mismatches, 1);
    }

    #[test]
    fn cents_are_printed_as_decimals() {
        assert_eq!(cents_text(0), "0.00");
        assert_eq!(cents_text(5), "0.05");
        assert_eq!(cents_text(-1205), "-12.05");
        assert_eq!(cents_text(100_000_000), "1000000.00");
    }
}
