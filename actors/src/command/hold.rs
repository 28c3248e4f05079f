//! Holds: `Command::PlaceHold`, `Command::CaptureHold`, `Command::VoidHold`, and the expiry every batch
//! writes for the holds whose time is up.
//!
//! A hold is judged like a debit, against the *available* balance (balance minus what live holds reserve)
//! and against the budgets of its day, which it charges at once (their `used_amount` includes it, their
//! `held_amount` shows the held part). Because the wallet's actor plans holds beside its debits, in one
//! queue, two holds can never both take the same available money (the failure of Blnk #181), and a refused
//! hold never enters a batch (Blnk #182). Across processes the wallet row's version guards it all, and the
//! row's `reserved <= balance` CHECK holds the line in SQL as well.

use chrono::Utc;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::post::{Charge, charge_budgets};
use super::{Draft, Planned};
use crate::money::Amount;
use crate::outcome::Rejection;
use crate::state::{Entry, Hold, HoldStatus, Origin, TxnType, WalletStatus, new_txn_id};
use crate::store::{BudgetDelta, HoldChange, HoldEvent, ReleaseReason};

/// A hold lives this long unless it says otherwise (the contract's 7 days).
pub const DEFAULT_HOLD_TTL_SECS: u32 = 7 * 24 * 3600;
/// The longest a hold may live (the contract's 30 days).
pub const MAX_HOLD_TTL_SECS: u32 = 30 * 24 * 3600;
/// Open holds one wallet may have at once; each is kept in its actor's state and in its cache entry.
pub const MAX_OPEN_HOLDS: usize = 256;
/// The largest over-capture tolerance `HOLD_OVERCAPTURE_PERCENT` may set.
pub const MAX_OVERCAPTURE_PERCENT: u8 = 100;

/// A new hold, borrowed from its `Command::PlaceHold`.
pub(super) struct NewHold<'a> {
    pub(super) hold_id: Uuid,
    pub(super) amount: Amount,
    pub(super) description: &'a Option<String>,
    pub(super) reference_id: &'a Option<String>,
    pub(super) reference_type: &'a Option<String>,
    pub(super) metadata: &'a Option<serde_json::Value>,
    pub(super) expires_in: std::time::Duration,
}

/// Plans a new hold: the wallet must be active, have the amount available and fit every budget of today.
pub(super) fn place(draft: &mut Draft, origin: &Origin, h: NewHold<'_>) -> Result<Planned, Rejection> {
    let sim = &draft.sim;
    if sim.status != WalletStatus::Active {
        return Err(Rejection::WalletNotActive {
            wallet_id: sim.wallet_id,
            status: sim.status,
        });
    }
    if sim.holds.len() >= MAX_OPEN_HOLDS {
        return Err(Rejection::TooManyHolds);
    }
    let available = sim.available_at(draft.now);
    if h.amount > available {
        return Err(Rejection::InsufficientFunds {
            balance: available,
            requested: h.amount,
        });
    }
    let ttl = chrono::Duration::from_std(h.expires_in)
        .ok()
        .filter(|t| *t > chrono::Duration::zero())
        .ok_or_else(|| Rejection::Invalid("a hold's expiry must be in the future".into()))?;
    let budgets = charge_budgets(draft, h.amount, Charge::Held)?;
    let now = Utc::now();
    let hold = Hold {
        hold_id: h.hold_id,
        wallet_id: draft.sim.wallet_id,
        amount: h.amount,
        captured: Amount::ZERO,
        status: HoldStatus::Pending,
        reference_id: h.reference_id.clone(),
        reference_type: h.reference_type.clone(),
        description: h.description.clone(),
        metadata: h.metadata.clone(),
        expires_at: now + ttl,
        budgets: budgets.clone(),
        created_by: origin.actor_id,
        created_at: now,
        updated_at: now,
    };
    let budget_deltas = budgets
        .iter()
        .map(|&budget_id| BudgetDelta {
            budget_id,
            used: h.amount.value(),
            held: h.amount.value(),
            charged: Decimal::ZERO,
        })
        .collect();
    draft.sim.holds.push(hold.clone());
    if let (Some(ty), Some(id)) = (h.reference_type, h.reference_id) {
        draft.planned_hold_refs.insert((ty.clone(), id.clone()));
    }
    draft.hold_changes.push(HoldChange {
        hold,
        event: HoldEvent::Placed,
        origin: origin.clone(),
        budget_deltas,
    });
    Ok(Planned::Hold(draft.hold_changes.len() - 1))
}

/// Plans a capture: a DEBIT row carrying the hold's id, of `amount` (default: what remains). More than
/// remains is allowed only within `overcapture_percent` of the hold's amount, and only if the excess fits
/// the available balance and the hold's budgets. A final capture (the default) releases the rest.
pub(super) fn capture(
    draft: &mut Draft,
    origin: &Origin,
    hold_id: Uuid,
    amount: Option<Amount>,
    final_capture: bool,
) -> Result<Planned, Rejection> {
    let hold = open_hold(draft, hold_id)?;
    if draft.sim.status != WalletStatus::Active {
        return Err(Rejection::WalletNotActive {
            wallet_id: draft.sim.wallet_id,
            status: draft.sim.status,
        });
    }
    let remaining = hold.remaining();
    let amount = amount.unwrap_or(remaining);
    let allowed = allowed_capture(&hold, draft.overcapture_percent);
    if amount.is_zero() || amount > allowed {
        return Err(Rejection::HoldExceeded {
            requested: amount,
            allowed,
        });
    }
    let from_hold = amount.min(remaining);
    let excess = amount.checked_sub(from_hold).unwrap_or(Amount::ZERO);
    let available = draft.sim.available_at(draft.now);
    if excess > available {
        return Err(Rejection::InsufficientFunds {
            balance: available,
            requested: excess,
        });
    }
    let excess_budgets = if excess.is_zero() {
        vec![]
    } else {
        charge_budgets(draft, excess, Charge::Excess(&hold.budgets))?
    };
    let balance_after = draft
        .sim
        .balance
        .checked_sub(amount)
        .ok_or(Rejection::InsufficientFunds {
            balance: draft.sim.balance,
            requested: amount,
        })?;
    draft.sim.balance = balance_after;

    let mut after = hold.clone();
    after.captured = hold.captured.checked_add(amount).unwrap_or(allowed);
    let done = final_capture || after.captured >= hold.amount;
    after.status = if done {
        HoldStatus::Captured
    } else {
        HoldStatus::PartiallyCaptured
    };
    after.updated_at = Utc::now();
    let rest = if done {
        remaining.checked_sub(from_hold).unwrap_or(Amount::ZERO)
    } else {
        Amount::ZERO
    };

    let (txn_id, created_at) = new_txn_id();
    draft.entries.push(Entry {
        txn_id,
        wallet_id: draft.sim.wallet_id,
        kind: TxnType::Debit,
        amount,
        description: hold.description.clone(),
        reference_id: hold.reference_id.clone(),
        reference_type: hold.reference_type.clone(),
        metadata: hold.metadata.clone(),
        balance_after,
        created_at,
        origin: origin.clone(),
        budgets: hold.budgets.clone(),
        hold_id: Some(hold_id),
        link: None,
    });
    let entry = draft.entries.len() - 1;
    let captured_deltas = hold
        .budgets
        .iter()
        .map(|&budget_id| {
            let extra = if excess_budgets.contains(&budget_id) {
                excess.value()
            } else {
                Decimal::ZERO
            };
            BudgetDelta {
                budget_id,
                used: extra,
                held: -from_hold.value(),
                charged: from_hold.value() + extra,
            }
        })
        .collect();
    move_held(draft, &hold.budgets, from_hold.value(), Decimal::ZERO);
    draft.hold_changes.push(HoldChange {
        hold: after.clone(),
        event: HoldEvent::Captured { txn_id, amount },
        origin: origin.clone(),
        budget_deltas: captured_deltas,
    });
    if !rest.is_zero() {
        release(draft, origin, &after, rest, ReleaseReason::FinalCapture);
    }
    replace_open(draft, after);
    Ok(Planned::Capture {
        entry,
        hold: draft.hold_changes.len() - 1,
    })
}

/// Plans a void: what the hold still reserves goes back to the balance and the budgets.
pub(super) fn void(draft: &mut Draft, origin: &Origin, hold_id: Uuid) -> Result<Planned, Rejection> {
    let hold = open_hold(draft, hold_id)?;
    let mut after = hold.clone();
    after.status = HoldStatus::Voided;
    after.updated_at = Utc::now();
    release(draft, origin, &after, hold.remaining(), ReleaseReason::Voided);
    replace_open(draft, after);
    Ok(Planned::Hold(draft.hold_changes.len() - 1))
}

/// Writes the expiry of every open hold whose time is up (called as each batch is closed, so that any use
/// of the wallet also writes its expiries; until then they already reserve nothing, see
/// `WalletState::held_at`). Returns how many expired.
pub(super) fn expire_due(draft: &mut Draft) -> usize {
    let now = draft.now;
    let due: Vec<Hold> = draft
        .sim
        .holds
        .iter()
        .filter(|h| h.status.is_open() && h.expires_at <= now)
        .cloned()
        .collect();
    let origin = Origin {
        role: "system".into(),
        ..Origin::default()
    };
    for hold in &due {
        let mut after = hold.clone();
        after.status = HoldStatus::Expired;
        after.updated_at = Utc::now();
        release(draft, &origin, &after, hold.remaining(), ReleaseReason::Expired);
        replace_open(draft, after);
    }
    due.len()
}

/// The hold if it is open at the draft's instant, else why not.
fn open_hold(draft: &Draft, hold_id: Uuid) -> Result<Hold, Rejection> {
    let hold = draft.sim.hold(hold_id).ok_or(Rejection::HoldNotFound)?;
    if !hold.live_at(draft.now) {
        return Err(Rejection::HoldNotPending {
            status: hold.status_at(draft.now),
        });
    }
    Ok(hold.clone())
}

/// The most a capture of `hold` may take now: what remains, plus the tolerance on the hold's amount.
fn allowed_capture(hold: &Hold, overcapture_percent: u8) -> Amount {
    let ceiling = (hold.amount.value() * Decimal::from(100 + u32::from(overcapture_percent)) / Decimal::from(100))
        .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::ToZero);
    let left = (ceiling - hold.captured.value()).max(Decimal::ZERO);
    Amount::new(left).unwrap_or(Amount::ZERO)
}

/// Records the release of `amount` still reserved by `after` (whose status is already final).
fn release(draft: &mut Draft, origin: &Origin, after: &Hold, amount: Amount, reason: ReleaseReason) {
    let budget_deltas = after
        .budgets
        .iter()
        .map(|&budget_id| BudgetDelta {
            budget_id,
            used: -amount.value(),
            held: -amount.value(),
            charged: Decimal::ZERO,
        })
        .collect();
    move_held(draft, &after.budgets, amount.value(), amount.value());
    draft.hold_changes.push(HoldChange {
        hold: after.clone(),
        event: HoldEvent::Released { reason, amount },
        origin: origin.clone(),
        budget_deltas,
    });
}

/// Takes `held` off the held part of the (live) budgets, and `used` off their used amount.
fn move_held(draft: &mut Draft, budgets: &[Uuid], held: Decimal, used: Decimal) {
    for b in draft.sim.budgets.iter_mut().filter(|b| budgets.contains(&b.budget_id)) {
        b.held = Amount::new((b.held.value() - held).max(Decimal::ZERO)).unwrap_or(Amount::ZERO);
        b.used = Amount::new((b.used.value() - used).max(Decimal::ZERO)).unwrap_or(Amount::ZERO);
    }
}

/// Puts the hold's new state in the simulated wallet: kept while open, dropped once final.
fn replace_open(draft: &mut Draft, after: Hold) {
    draft.sim.holds.retain(|h| h.hold_id != after.hold_id);
    if after.status.is_open() {
        draft.sim.holds.push(after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(amount: &str, captured: &str) -> Hold {
        Hold {
            hold_id: Uuid::nil(),
            wallet_id: Uuid::nil(),
            amount: Amount::parse(amount).unwrap(),
            captured: Amount::parse(captured).unwrap(),
            status: HoldStatus::Pending,
            reference_id: None,
            reference_type: None,
            description: None,
            metadata: None,
            expires_at: Utc::now(),
            budgets: vec![],
            created_by: Uuid::nil(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn the_overcapture_tolerance_is_a_share_of_the_hold_amount_rounded_down() {
        assert_eq!(allowed_capture(&hold("100.00", "0"), 0).to_string(), "100.00");
        assert_eq!(allowed_capture(&hold("100.00", "0"), 15).to_string(), "115.00");
        assert_eq!(allowed_capture(&hold("33.33", "0"), 10).to_string(), "36.66");
        assert_eq!(allowed_capture(&hold("100.00", "60.00"), 15).to_string(), "55.00");
        assert_eq!(allowed_capture(&hold("100.00", "115.00"), 15).to_string(), "0.00");
    }
}
