//! `Command::Post`: a credit or a debit. A debit must fit the balance and every budget that applies today;
//! it is charged to those budgets, and the alert thresholds it crosses are announced.

use chrono::Utc;
use uuid::Uuid;

use super::{Direction, Draft, Planned};
use crate::budget::{BudgetAlert, crossed};
use crate::money::Amount;
use crate::outcome::Rejection;
use crate::state::{Entry, Origin, TxnType, WalletState, WalletStatus, new_txn_id};

/// A credit or debit, borrowed from its `Command::Post`.
pub(super) struct Posting<'a> {
    pub(super) direction: Direction,
    pub(super) amount: Amount,
    pub(super) description: &'a Option<String>,
    pub(super) reference_id: &'a Option<String>,
    pub(super) reference_type: &'a Option<String>,
    pub(super) metadata: &'a Option<serde_json::Value>,
}

/// Plans the posting's entry, or refuses it leaving the draft's balance and budgets as they were.
pub(super) fn plan(draft: &mut Draft, origin: &Origin, posting: Posting<'_>) -> Result<Planned, Rejection> {
    let (balance_after, charged) = judge(draft, posting.direction, posting.amount)?;
    let (txn_id, created_at) = new_txn_id();
    draft.entries.push(Entry {
        txn_id,
        wallet_id: draft.sim.wallet_id,
        kind: match posting.direction {
            Direction::Credit => TxnType::Credit,
            Direction::Debit => TxnType::Debit,
        },
        amount: posting.amount,
        description: posting.description.clone(),
        reference_id: posting.reference_id.clone(),
        reference_type: posting.reference_type.clone(),
        metadata: posting.metadata.clone(),
        balance_after,
        created_at,
        origin: origin.clone(),
        budgets: charged,
    });
    if let (Some(ty), Some(id)) = (posting.reference_type, posting.reference_id) {
        draft.planned_refs.insert((ty.clone(), id.clone(), posting.direction));
    }
    Ok(Planned::Entry(draft.entries.len() - 1))
}

/// Judges the posting as a whole: if a budget refuses a debit, the balance must not move. Returns the
/// balance after it and the budgets it is charged to.
fn judge(draft: &mut Draft, direction: Direction, amount: Amount) -> Result<(Amount, Vec<Uuid>), Rejection> {
    let balance_before = draft.sim.balance;
    // A refused `post` has not moved the balance; `charge_budgets` refuses before it charges anything.
    let balance_after = post(&mut draft.sim, direction, amount)?;
    let charged = match direction {
        Direction::Debit => charge_budgets(&mut draft.sim, amount, &draft.thresholds, &mut draft.alerts),
        Direction::Credit => Ok(vec![]),
    };
    match charged {
        Ok(charged) => Ok((balance_after, charged)),
        Err(rejection) => {
            draft.sim.balance = balance_before;
            if let Rejection::BudgetExceeded { budget_id, exceeded_by } = &rejection {
                // A refusal over a hard limit is announced too, with the would-be excess.
                draft.alerts.push(BudgetAlert {
                    budget_id: *budget_id,
                    threshold: 100,
                    exceeded_amount: exceeded_by.value(),
                    refused: true,
                });
            }
            Err(rejection)
        }
    }
}

/// Validates a credit or debit against the simulated state and applies it; returns the balance after.
pub(super) fn post(sim: &mut WalletState, direction: Direction, amount: Amount) -> Result<Amount, Rejection> {
    if sim.status != WalletStatus::Active {
        return Err(Rejection::WalletNotActive {
            wallet_id: sim.wallet_id,
            status: sim.status,
        });
    }
    let after = match direction {
        Direction::Credit => sim.balance.checked_add(amount).ok_or(Rejection::BalanceOverflow)?,
        Direction::Debit => sim.balance.checked_sub(amount).ok_or(Rejection::InsufficientFunds {
            balance: sim.balance,
            requested: amount,
        })?,
    };
    sim.balance = after;
    Ok(after)
}

/// Checks a debit of `amount` against every budget that applies today and charges it to them; returns the
/// budgets charged. Thresholds crossed are added to `alerts` (and marked, so each is announced once).
fn charge_budgets(
    sim: &mut WalletState,
    amount: Amount,
    thresholds: &[u8],
    alerts: &mut Vec<BudgetAlert>,
) -> Result<Vec<Uuid>, Rejection> {
    let today = Utc::now().date_naive();
    for b in sim.budgets.iter().filter(|b| b.applies_on(today)) {
        let after = b.used.value() + amount.value();
        if after > b.total.value() {
            let exceeded_by = Amount::new(after - b.total.value()).unwrap_or(amount);
            return Err(Rejection::BudgetExceeded {
                budget_id: b.budget_id,
                exceeded_by,
            });
        }
    }
    let mut charged = Vec::new();
    for b in sim.budgets.iter_mut().filter(|b| b.applies_on(today)) {
        let before = b.used.value();
        // Within total (checked above), so within the amount range.
        b.used = b.used.checked_add(amount).unwrap_or(b.total);
        for alert in crossed(b, before, b.used.value(), thresholds) {
            b.alerted.push(alert.threshold);
            alerts.push(alert);
        }
        charged.push(b.budget_id);
    }
    Ok(charged)
}
