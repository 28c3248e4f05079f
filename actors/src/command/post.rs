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
        hold_id: None,
        link: None,
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
        Direction::Debit => charge_budgets(draft, amount, Charge::Spent),
        Direction::Credit => Ok(vec![]),
    };
    match charged {
        Ok(charged) => Ok((balance_after, charged)),
        Err(rejection) => {
            draft.sim.balance = balance_before;
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
        Direction::Debit => {
            // Judged against the available balance: what live holds reserve is not there to take.
            let available = sim.available_at(Utc::now());
            if amount > available {
                return Err(Rejection::InsufficientFunds {
                    balance: available,
                    requested: amount,
                });
            }
            sim.balance.checked_sub(amount).ok_or(Rejection::InsufficientFunds {
                balance: available,
                requested: amount,
            })?
        }
    };
    sim.balance = after;
    Ok(after)
}

/// What a charge to the budgets is for, which decides the budgets it checks and what it moves.
pub(super) enum Charge<'a> {
    /// A debit: every budget that applies today; `used` grows.
    Spent,
    /// A new hold: every budget that applies today; `used` and its `held` part grow.
    Held,
    /// The part of a capture beyond what its hold reserved: the hold's own budgets (those still live).
    Excess(&'a [Uuid]),
}

impl Charge<'_> {
    fn covers(&self, b: &crate::budget::Budget, today: chrono::NaiveDate) -> bool {
        match self {
            Charge::Spent | Charge::Held => b.applies_on(today),
            Charge::Excess(ids) => ids.contains(&b.budget_id),
        }
    }
}

/// Checks a charge of `amount` against the budgets it covers and charges them; returns the budgets
/// charged. Thresholds crossed are added to the draft's alerts (and marked, so each is announced once); a
/// refusal over a hard limit is announced too, with the would-be excess, and charges nothing.
pub(super) fn charge_budgets(draft: &mut Draft, amount: Amount, charge: Charge<'_>) -> Result<Vec<Uuid>, Rejection> {
    let today = Utc::now().date_naive();
    for b in draft.sim.budgets.iter().filter(|b| charge.covers(b, today)) {
        let after = b.used.value() + amount.value();
        if after > b.total.value() {
            let exceeded_by = Amount::new(after - b.total.value()).unwrap_or(amount);
            draft.alerts.push(BudgetAlert {
                budget_id: b.budget_id,
                threshold: 100,
                exceeded_amount: exceeded_by.value(),
                refused: true,
            });
            return Err(Rejection::BudgetExceeded {
                budget_id: b.budget_id,
                exceeded_by,
            });
        }
    }
    let mut charged = Vec::new();
    for b in draft.sim.budgets.iter_mut().filter(|b| charge.covers(b, today)) {
        let before = b.used.value();
        // Within total (checked above), so within the amount range.
        b.used = b.used.checked_add(amount).unwrap_or(b.total);
        if matches!(charge, Charge::Held) {
            b.held = b.held.checked_add(amount).unwrap_or(b.used);
        }
        for alert in crossed(b, before, b.used.value(), &draft.thresholds) {
            b.alerted.push(alert.threshold);
            draft.alerts.push(alert);
        }
        charged.push(b.budget_id);
    }
    Ok(charged)
}
