//! The one path to money. HTTP handlers and the event consumer both call [`Ledger`]; nothing else
//! moves a balance. Every method returns after the change is committed in Postgres (or refused).

use chrono::NaiveDate;
use uuid::Uuid;
use wallet_actors::{
    Amount, Applied, Budget, BudgetStatus, Command, Direction, Engine, Entry, Origin, PeriodType, Rejection, Request,
    WalletState, WalletStatus,
};

use crate::store::PgStore;

#[derive(Clone)]
pub struct Ledger {
    pub engine: Engine,
    pub store: PgStore,
}

/// A credit or debit as callers describe it.
#[derive(Debug, Clone)]
pub struct Posting {
    pub direction: Direction,
    pub amount: Amount,
    pub description: Option<String>,
    pub reference_id: Option<String>,
    pub reference_type: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

fn unexpected(what: &str) -> Rejection {
    // The actor answers each command with its own kind of `Applied`; anything else is a programmer error.
    debug_assert!(false, "unexpected reply to {what}");
    Rejection::Unavailable(format!("unexpected reply to {what}"))
}

impl Ledger {
    /// Credits or debits a wallet through its actor.
    pub async fn post(&self, wallet_id: Uuid, p: Posting, origin: Origin) -> Result<Entry, Rejection> {
        let command = Command::Post {
            direction: p.direction,
            amount: p.amount,
            description: p.description,
            reference_id: p.reference_id,
            reference_type: p.reference_type,
            metadata: p.metadata,
        };
        match self.engine.execute(wallet_id, Request { command, origin }).await? {
            Applied::Posted(e) => Ok(e),
            _ => Err(unexpected("a posting")),
        }
    }

    /// Moves money between two wallets; both legs commit in one transaction.
    pub async fn transfer(
        &self,
        from: Uuid,
        to: Uuid,
        amount: Amount,
        description: Option<String>,
        reference_id: Option<String>,
        origin: Origin,
    ) -> Result<(Entry, Entry), Rejection> {
        let command = Command::TransferOut {
            to_wallet_id: to,
            amount,
            description,
            reference_id,
        };
        match self.engine.execute(from, Request { command, origin }).await? {
            Applied::Transferred { out, incoming } => {
                // The destination's actor (if alive here) must not serve its old balance.
                self.engine.invalidate(to);
                Ok((out, incoming))
            }
            _ => Err(unexpected("a transfer")),
        }
    }

    pub async fn set_status(
        &self,
        wallet_id: Uuid,
        status: WalletStatus,
        reason: Option<String>,
        origin: Origin,
    ) -> Result<WalletState, Rejection> {
        let command = Command::SetStatus { status, reason };
        match self.engine.execute(wallet_id, Request { command, origin }).await? {
            Applied::StatusChanged(w) => Ok(w),
            _ => Err(unexpected("a status change")),
        }
    }

    /// Creates a budget on a wallet, through its actor (so its checks see it at once).
    pub async fn create_budget(
        &self,
        wallet_id: Uuid,
        total: Amount,
        period: PeriodType,
        start_date: NaiveDate,
        end_date: NaiveDate,
        origin: Origin,
    ) -> Result<Budget, Rejection> {
        let command = Command::CreateBudget {
            budget_id: Uuid::now_v7(),
            total,
            period,
            start_date,
            end_date,
        };
        match self.engine.execute(wallet_id, Request { command, origin }).await? {
            Applied::BudgetChanged(b) => Ok(b),
            _ => Err(unexpected("a budget creation")),
        }
    }

    /// Changes a budget's total and/or status, through its wallet's actor, with a history row.
    pub async fn update_budget(
        &self,
        wallet_id: Uuid,
        budget_id: Uuid,
        total: Option<Amount>,
        status: Option<BudgetStatus>,
        reason: String,
        origin: Origin,
    ) -> Result<Budget, Rejection> {
        let command = Command::UpdateBudget {
            budget_id,
            total,
            status,
            reason,
        };
        match self.engine.execute(wallet_id, Request { command, origin }).await? {
            Applied::BudgetChanged(b) => Ok(b),
            _ => Err(unexpected("a budget change")),
        }
    }

    /// The wallet's committed state (from its actor).
    pub async fn wallet(&self, wallet_id: Uuid) -> Result<WalletState, Rejection> {
        self.engine.get(wallet_id).await
    }
}
