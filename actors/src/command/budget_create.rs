//! `Command::CreateBudget`: a new budget on the wallet, ACTIVE from the start, nothing used yet.

use chrono::{NaiveDate, Utc};
use uuid::Uuid;

use super::{Draft, Planned};
use crate::budget::{Budget, BudgetStatus, MAX_BUDGETS_PER_WALLET, PeriodType};
use crate::money::Amount;
use crate::outcome::Rejection;
use crate::state::{Origin, WalletState, WalletStatus};
use crate::store::BudgetCreate;

/// Plans the new budget; debits after it in the batch are charged to it too. `dates` are its start and
/// (inclusive) end.
pub(super) fn plan(
    draft: &mut Draft,
    origin: &Origin,
    budget_id: Uuid,
    total: Amount,
    period: PeriodType,
    dates: (NaiveDate, NaiveDate),
) -> Result<Planned, Rejection> {
    let (start_date, end_date) = dates;
    admit(&draft.sim, start_date, end_date)?;
    let now = Utc::now();
    let budget = Budget {
        budget_id,
        wallet_id: draft.sim.wallet_id,
        total,
        used: Amount::ZERO,
        held: Amount::ZERO,
        period,
        start_date,
        end_date,
        status: BudgetStatus::Active,
        created_by: origin.actor_id,
        alerted: vec![],
        created_at: now,
        updated_at: now,
    };
    draft.sim.budgets.push(budget.clone());
    draft.budget_creates.push(BudgetCreate {
        budget,
        origin: origin.clone(),
    });
    Ok(Planned::Budget(budget_id))
}

/// Whether the wallet may take one more budget with these dates. A closed wallet takes none; a frozen one
/// may still be given budgets for when it is unfrozen.
fn admit(sim: &WalletState, start_date: NaiveDate, end_date: NaiveDate) -> Result<(), Rejection> {
    let live = sim.budgets.iter().filter(|b| b.status != BudgetStatus::Expired).count();
    if sim.status == WalletStatus::Closed {
        Err(Rejection::WalletNotActive {
            wallet_id: sim.wallet_id,
            status: sim.status,
        })
    } else if live >= MAX_BUDGETS_PER_WALLET {
        Err(Rejection::TooManyBudgets)
    } else if end_date <= start_date {
        Err(Rejection::Invalid("end_date must be after start_date".into()))
    } else {
        Ok(())
    }
}
