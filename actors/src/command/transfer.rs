//! `Command::TransferOut`: the source leg of a transfer, planned by the source wallet's actor together with
//! the incoming leg. The store commits both in one transaction, locking the two wallets, and judges the
//! destination there (it exists, is active, has the same currency); here only the source is judged.

use chrono::Utc;
use uuid::Uuid;

use super::Direction;
use super::post::post;
use crate::money::Amount;
use crate::outcome::Rejection;
use crate::state::{Entry, Origin, TxnType, WalletState, new_txn_id};
use crate::store::TransferPlan;

/// Plans both legs of a transfer from `sim`, which it leaves alone: a transfer that goes ahead is
/// committed on its own, never in a batch.
pub(super) fn plan(
    sim: &WalletState,
    origin: &Origin,
    to_wallet_id: Uuid,
    amount: Amount,
    description: &Option<String>,
    reference_id: &Option<String>,
) -> Result<TransferPlan, Rejection> {
    let balance_after = if to_wallet_id == sim.wallet_id {
        Err(Rejection::Invalid("a transfer needs two different wallets".into()))
    } else {
        check_transfer(sim, amount)
    }?;
    let mut source_after = sim.clone();
    source_after.balance = balance_after;
    source_after.version += 1;
    source_after.updated_at = Utc::now();
    let (out_id, out_at) = new_txn_id();
    let (in_id, in_at) = new_txn_id();
    let mut out = Entry {
        txn_id: out_id,
        wallet_id: sim.wallet_id,
        kind: TxnType::TransferOut,
        amount,
        description: description.clone(),
        reference_id: reference_id.clone(),
        reference_type: reference_id.as_ref().map(|_| "TRANSFER".to_string()),
        metadata: None,
        balance_after,
        created_at: out_at,
        origin: origin.clone(),
        budgets: vec![],
        hold_id: None,
        link: None,
    };
    source_after.head = super::seal::chain_entry(sim.head, &mut out);
    let incoming = Entry {
        txn_id: in_id,
        wallet_id: to_wallet_id,
        kind: TxnType::TransferIn,
        // Filled in by the store from the destination's locked row.
        balance_after: Amount::ZERO,
        created_at: in_at,
        // Chained by the store on the destination's chain, under its row lock (see `TransferPlan`).
        link: None,
        ..out.clone()
    };
    Ok(TransferPlan {
        expected_version: sim.version,
        source_after,
        out,
        incoming,
    })
}

/// Validates the source leg of a transfer; returns the source balance after it.
pub(crate) fn check_transfer(sim: &WalletState, amount: Amount) -> Result<Amount, Rejection> {
    let mut s = sim.clone();
    post(&mut s, Direction::Debit, amount)
}
