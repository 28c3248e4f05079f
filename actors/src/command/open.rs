//! A new wallet's opening balance: a CREDIT onto the balance of a wallet that is being created.
//!
//! Not a [`super::Command`]: the wallet does not exist before the transaction that creates it, so there is
//! no actor to ask and no queue to join. The service calls [`plan_opening`] with the wallet as the creation
//! transaction is about to insert it, and the store writes the entry in that same transaction.

use super::Direction;
use crate::money::Amount;
use crate::outcome::Rejection;
use crate::state::{Entry, Origin, TxnType, WalletState, new_txn_id};

/// `reference_type` of a wallet's opening balance (its `reference_id` is the wallet id).
pub const OPENING_REFERENCE_TYPE: &str = "OPENING";
/// `description` of a wallet's opening balance.
pub const OPENING_DESCRIPTION: &str = "Opening balance";

/// The ledger entry of `wallet`'s opening balance of `amount`: judged as any credit (the wallet must be
/// active, the balance must not overflow), referenced OPENING/wallet id, by whoever created the wallet.
/// No opening balance (zero) has no entry: the wallet's balance is the sum of its ledger rows. The entry is
/// the first row of the wallet's chain (the new head is `entry.link`).
pub fn plan_opening(wallet: &WalletState, amount: Amount, origin: &Origin) -> Result<Option<Entry>, Rejection> {
    if amount.is_zero() {
        return Ok(None);
    }
    let mut sim = wallet.clone();
    let balance_after = super::post::post(&mut sim, Direction::Credit, amount)?;
    let (txn_id, created_at) = new_txn_id();
    let mut entry = Entry {
        txn_id,
        wallet_id: wallet.wallet_id,
        kind: TxnType::Credit,
        amount,
        description: Some(OPENING_DESCRIPTION.into()),
        reference_id: Some(wallet.wallet_id.to_string()),
        reference_type: Some(OPENING_REFERENCE_TYPE.into()),
        metadata: None,
        balance_after,
        created_at,
        // Who asked; the wallet's reply completes the Idempotency-Key (and an event's inbox row is its
        // own), not the entry.
        origin: Origin {
            actor_id: origin.actor_id,
            role: origin.role.clone(),
            idempotency: None,
            inbox_event: None,
        },
        budgets: vec![],
        hold_id: None,
        link: None,
    };
    // The wallet's first chained row, after its (genesis) head; the store writes the new head with it.
    super::seal::chain_entry(wallet.head, &mut entry);
    Ok(Some(entry))
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::money::Currency;
    use crate::state::WalletStatus;

    fn fresh(status: WalletStatus) -> WalletState {
        let now = chrono::Utc::now();
        WalletState {
            wallet_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            company_id: Uuid::now_v7(),
            balance: Amount::ZERO,
            currency: Currency::Usd,
            status,
            version: 0,
            created_at: now,
            updated_at: now,
            budgets: vec![],
            holds: vec![],
            head: crate::chain::Head::default(),
        }
    }

    fn origin() -> Origin {
        Origin {
            actor_id: Uuid::now_v7(),
            role: "manager".into(),
            idempotency: None,
            inbox_event: None,
        }
    }

    #[test]
    fn an_opening_balance_is_a_credit_referenced_by_its_wallet() {
        let w = fresh(WalletStatus::Active);
        let amount = Amount::parse("250.50").unwrap();
        let e = plan_opening(&w, amount, &origin()).unwrap().expect("an entry");
        assert_eq!(e.kind, TxnType::Credit);
        assert_eq!((e.wallet_id, e.amount, e.balance_after), (w.wallet_id, amount, amount));
        assert_eq!(e.reference_type.as_deref(), Some(OPENING_REFERENCE_TYPE));
        assert_eq!(e.reference_id, Some(w.wallet_id.to_string()));
        assert_eq!(e.description.as_deref(), Some(OPENING_DESCRIPTION));
        assert!(e.origin.idempotency.is_none() && e.origin.inbox_event.is_none());
        let link = e.link.expect("the opening entry is chained");
        assert_eq!((link.seq, link.prev_hash), (1, crate::chain::GENESIS));
    }

    #[test]
    fn no_opening_balance_has_no_entry() {
        assert_eq!(
            plan_opening(&fresh(WalletStatus::Active), Amount::ZERO, &origin()),
            Ok(None)
        );
    }

    #[test]
    fn an_opening_balance_is_judged_as_a_credit() {
        let w = fresh(WalletStatus::Frozen);
        let refused = plan_opening(&w, Amount::parse("1.00").unwrap(), &origin());
        assert!(matches!(refused, Err(Rejection::WalletNotActive { .. })), "{refused:?}");
        let mut full = fresh(WalletStatus::Active);
        full.balance = Amount::parse("9999999999999.99").unwrap();
        let refused = plan_opening(&full, Amount::parse("0.01").unwrap(), &origin());
        assert_eq!(refused, Err(Rejection::BalanceOverflow));
    }
}
