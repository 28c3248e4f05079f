//! `Command::UpdateBudget`: a change of a budget's total and/or status, kept with its reason in the
//! budget's history.

use chrono::Utc;
use uuid::Uuid;

use super::{Draft, Planned};
use crate::budget::{Budget, BudgetStatus};
use crate::money::Amount;
use crate::outcome::Rejection;
use crate::state::{Origin, WalletState};
use crate::store::BudgetChange;

/// Plans the change; debits after it in the batch are judged against the changed budget.
pub(super) fn plan(
    draft: &mut Draft,
    origin: &Origin,
    budget_id: Uuid,
    total: Option<Amount>,
    status: Option<BudgetStatus>,
    reason: &str,
) -> Result<Planned, Rejection> {
    let (before, after) = update_budget(&mut draft.sim, budget_id, total, status)?;
    draft.budget_changes.push(BudgetChange {
        before,
        after,
        reason: reason.to_string(),
        origin: origin.clone(),
    });
    Ok(Planned::Budget(budget_id))
}

/// Applies a change of total and/or status to a budget in the simulation; returns (before, after).
fn update_budget(
    sim: &mut WalletState,
    budget_id: Uuid,
    total: Option<Amount>,
    status: Option<BudgetStatus>,
) -> Result<(Budget, Budget), Rejection> {
    let today = Utc::now().date_naive();
    let b = sim
        .budgets
        .iter_mut()
        .find(|b| b.budget_id == budget_id)
        .ok_or(Rejection::BudgetNotFound)?;
    if b.status == BudgetStatus::Expired || b.end_date < today {
        return Err(Rejection::BudgetExpired);
    }
    let before = b.clone();
    if let Some(t) = total {
        if t < b.used {
            return Err(Rejection::BudgetBelowUsed { used: b.used });
        }
        b.total = t;
        // Thresholds no longer reached under the new total may be announced again when crossed.
        let used = b.used.value();
        let total = b.total.value();
        b.alerted
            .retain(|&th| used >= total * rust_decimal::Decimal::from(th) / rust_decimal::Decimal::from(100));
    }
    if let Some(s) = status {
        if s == BudgetStatus::Expired {
            return Err(Rejection::Invalid("status may only be ACTIVE or SUSPENDED".into()));
        }
        b.status = s;
    }
    b.updated_at = Utc::now();
    Ok((before, b.clone()))
}
