//! Report SQL, on the read pool: a wallet's balance at an instant, from its ledger.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_actors::store::StoreError;

use super::read::col;
use super::{PgStore, unavailable};

/// What a wallet held at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalanceAt {
    /// No such wallet.
    NoWallet,
    /// The instant is before the wallet existed.
    BeforeCreation { created_at: DateTime<Utc> },
    /// The balance after the last ledger row at or before the instant (or the initial balance before any).
    Balance(Decimal),
}

impl PgStore {
    /// The wallet's balance as it stood at `at`: the `balance_after` of its last ledger row at or before it,
    /// found through the `(wallet_id, created_at DESC, txn_id DESC)` index (one row read, however long the
    /// history), never a sum.
    pub async fn balance_at(&self, wallet_id: Uuid, at: DateTime<Utc>) -> Result<BalanceAt, StoreError> {
        let c = self.read.get().await.map_err(unavailable)?;
        let wallet = c
            .prepare_cached("SELECT initial_balance, created_at FROM wallets WHERE wallet_id = $1")
            .await
            .map_err(unavailable)?;
        let last = c
            .prepare_cached(
                "SELECT balance_after FROM transactions WHERE wallet_id = $1 AND created_at <= $2 \
                 ORDER BY created_at DESC, txn_id DESC LIMIT 1",
            )
            .await
            .map_err(unavailable)?;
        let one: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&wallet_id];
        let two: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&wallet_id, &at];
        let (w, row) = tokio::join!(c.query_opt(&wallet, &one), c.query_opt(&last, &two));
        let Some(w) = w.map_err(unavailable)? else {
            return Ok(BalanceAt::NoWallet);
        };
        if let Some(r) = row.map_err(unavailable)? {
            return Ok(BalanceAt::Balance(col(&r, "balance_after")?));
        }
        let created_at: Option<DateTime<Utc>> = col(&w, "created_at")?;
        if let Some(created_at) = created_at.filter(|c| at < *c) {
            return Ok(BalanceAt::BeforeCreation { created_at });
        }
        Ok(BalanceAt::Balance(col(&w, "initial_balance")?))
    }
}
