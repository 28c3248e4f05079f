//! The store under the engine, driven directly (not over HTTP): the claim fence of Idempotency-Keys, the
//! shared group committer, the pool's connections (lifetime, session settings), the grouped wallet reads,
//! and the periodic upkeep (partitions, pruning).

mod claims;
mod group_commit;
mod pool;
mod reader;
mod upkeep;

use uuid::Uuid;
use wallet_actors::state::new_txn_id;
use wallet_actors::store::Batch;
use wallet_actors::{Amount, Entry, Origin, TxnType, WalletState, WalletStore};

use crate::helpers::app::TestApp;

fn amount(s: &str) -> Amount {
    Amount::parse(s).unwrap()
}

/// The wallet as the store has it committed.
async fn committed(app: &TestApp, wallet: Uuid) -> WalletState {
    app.store().load(wallet).await.unwrap().unwrap()
}

/// A batch planned against `before` that leaves the wallet as `after`, with nothing else in it yet.
fn batch(before: &WalletState, after: WalletState) -> Batch {
    Batch {
        wallet_id: before.wallet_id,
        expected_version: before.version,
        after,
        entries: vec![],
        status_changes: vec![],
        refusals: vec![],
        budget_creates: vec![],
        budget_changes: vec![],
        alerts: vec![],
        hold_changes: vec![],
        suspicious: vec![],
        audit: vec![],
    }
}

/// A one-debit batch of `value` by `origin`, planned against the wallet's committed state.
async fn planned_debit(app: &TestApp, wallet: Uuid, value: &str, origin: Origin) -> Batch {
    let before = committed(app, wallet).await;
    let mut after = before.clone();
    after.balance = before.balance.checked_sub(amount(value)).unwrap();
    after.version = before.version + 1;
    let (txn_id, created_at) = new_txn_id();
    let entry = Entry {
        txn_id,
        wallet_id: wallet,
        kind: TxnType::Debit,
        amount: amount(value),
        description: None,
        reference_id: None,
        reference_type: None,
        metadata: None,
        balance_after: after.balance,
        created_at,
        origin,
        budgets: vec![],
        hold_id: None,
        link: None,
    };
    let mut b = batch(&before, after);
    b.entries.push(entry);
    b
}
