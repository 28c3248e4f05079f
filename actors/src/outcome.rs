//! What a command came to: [`Applied`], what a successful one did, or [`Rejection`], why it was not
//! applied. One exhaustive enum each, so every caller (HTTP, AMQP) must decide what each case means for it,
//! and each rejection knows whether retrying can help.

use uuid::Uuid;

use crate::budget::Budget;
use crate::money::{Amount, Currency};
use crate::state::{Entry, Hold, HoldStatus, WalletState, WalletStatus};

/// What a successful command did.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a reply is moved once to its caller; boxing would only add an allocation"
)]
pub enum Applied {
    Posted(Entry),
    StatusChanged(WalletState),
    BudgetChanged(Budget),
    Transferred {
        out: Entry,
        incoming: Entry,
    },
    /// A hold placed (PENDING), or voided (VOIDED).
    Held(Hold),
    /// A capture: its DEBIT row and the hold after it.
    Captured {
        entry: Entry,
        hold: Hold,
    },
    /// Expired holds written (the sweep's nudge): how many.
    Swept(usize),
}

/// A command the engine did not apply. Business refusals are final; the rest are transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The wallet does not exist (or, for transfers, the destination does not).
    #[error("wallet not found")]
    WalletNotFound,
    /// A debit larger than the balance. Nothing changed.
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds { balance: Amount, requested: Amount },
    /// The wallet (or the transfer's other wallet) is FROZEN or CLOSED.
    #[error("wallet {wallet_id} is {status}")]
    WalletNotActive { wallet_id: Uuid, status: WalletStatus },
    /// A status change that is not allowed (CLOSED is final).
    #[error("wallet is CLOSED; a closed wallet cannot change status")]
    WalletClosed,
    /// A debit that would take an applicable budget's `used_amount` above its `total_amount`.
    #[error("budget {budget_id} would be exceeded by {exceeded_by}")]
    BudgetExceeded { budget_id: Uuid, exceeded_by: Amount },
    /// No such budget on this wallet (or it has expired).
    #[error("budget not found")]
    BudgetNotFound,
    /// A budget's total may not be set below what is already used.
    #[error("total_amount may not be below used_amount ({used})")]
    BudgetBelowUsed { used: Amount },
    /// A budget past its end date cannot be re-activated or changed.
    #[error("budget has expired")]
    BudgetExpired,
    /// The wallet already holds the most budgets allowed.
    #[error("the wallet already has the maximum number of budgets")]
    TooManyBudgets,
    /// A command that can never be valid (e.g. a transfer to the same wallet).
    #[error("invalid command: {0}")]
    Invalid(String),
    /// A transfer between wallets of different currencies.
    #[error("currency mismatch: {from} to {to}")]
    CurrencyMismatch { from: Currency, to: Currency },
    /// A credit that would take the balance above what `DECIMAL(15,2)` holds.
    #[error("balance would exceed the maximum amount")]
    BalanceOverflow,
    /// A transaction with the same wallet, reference type, reference id and type already exists: a booking
    /// is debited once and refunded at most once. `existing_txn_id` is the one that took effect.
    #[error("a transaction with this reference already exists ({existing_txn_id})")]
    DuplicateReference { existing_txn_id: Uuid },
    /// A refund (a CREDIT with the `reference_type` and `reference_id` of a DEBIT of the same wallet) of
    /// more than that debit took. Nothing changed. Judged by the store, where the debits are.
    #[error("a refund may not exceed its debit ({debited})")]
    RefundExceedsDebit { debited: Amount },
    /// No open hold with this id on the wallet, and the store knows none (see `HoldNotPending`).
    #[error("hold not found")]
    HoldNotFound,
    /// The hold is no longer PENDING or PARTIALLY_CAPTURED (captured, voided or expired): nothing changed.
    #[error("hold is {status}")]
    HoldNotPending { status: HoldStatus },
    /// A capture of more than the hold has left, beyond the over-capture tolerance.
    #[error("capture of {requested} exceeds what the hold allows ({allowed})")]
    HoldExceeded { requested: Amount, allowed: Amount },
    /// The wallet already has the most open holds allowed.
    #[error("the wallet already has the maximum number of open holds")]
    TooManyHolds,
    /// Too many commands are queued for this wallet; the caller should back off.
    #[error("too many commands queued for this wallet")]
    Overloaded,
    /// Not applied, and certain of it: the store could not be reached before anything was written, the
    /// commit was rolled back, or the command was dropped from the queue before it was planned. Safe to
    /// retry. The text is for logs, never for a client.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The command went into a commit whose outcome is not known (the connection broke during it, or the
    /// commit outlasted every bound). It may have been applied: retry with the same Idempotency-Key (the
    /// store fences the old attempt) or look the result up by reference.
    #[error("the outcome of the commit is unknown")]
    OutcomeUnknown,
    /// The request's Idempotency-Key was released or taken over by a retry before the commit: the commit
    /// was fenced off and nothing was applied.
    #[error("the idempotency claim was lost before the commit")]
    ClaimLost,
    /// The database refused this command's own data (it was isolated from its neighbours, which
    /// committed). Nothing was applied; retrying the same command cannot help.
    #[error("the database refused the command's data")]
    StoreRefused,
    /// The consumed event this command carries (`Origin::inbox_event`) was processed before: its effect, or
    /// its refusal, committed already. Nothing was applied; the event needs nothing more.
    #[error("the event was processed before")]
    EventProcessed,
}

impl Rejection {
    /// Whether the same command may succeed if simply retried later.
    pub fn transient(&self) -> bool {
        matches!(
            self,
            Rejection::Overloaded | Rejection::Unavailable(_) | Rejection::OutcomeUnknown | Rejection::ClaimLost
        )
    }

    /// The contract's stable error code for this rejection.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::WalletNotFound => "NOT_FOUND",
            Rejection::InsufficientFunds { .. } => "INSUFFICIENT_FUNDS",
            Rejection::WalletNotActive { .. } => "WALLET_NOT_ACTIVE",
            Rejection::WalletClosed => "WALLET_NOT_ACTIVE",
            Rejection::CurrencyMismatch { .. } => "CURRENCY_MISMATCH",
            Rejection::BudgetExceeded { .. } => "BUDGET_EXCEEDED",
            Rejection::BudgetNotFound => "NOT_FOUND",
            Rejection::BudgetBelowUsed { .. } => "BUDGET_EXCEEDED",
            Rejection::BudgetExpired => "CONFLICT",
            Rejection::TooManyBudgets => "CONFLICT",
            Rejection::Invalid(_) => "VALIDATION_FAILED",
            Rejection::BalanceOverflow => "VALIDATION_FAILED",
            Rejection::DuplicateReference { .. } => "CONFLICT",
            Rejection::RefundExceedsDebit { .. } => "REFUND_EXCEEDS_DEBIT",
            Rejection::HoldNotFound => "NOT_FOUND",
            Rejection::HoldNotPending { .. } => "HOLD_NOT_PENDING",
            Rejection::HoldExceeded { .. } => "HOLD_EXCEEDED",
            Rejection::TooManyHolds => "CONFLICT",
            Rejection::Overloaded => "UNAVAILABLE",
            Rejection::Unavailable(_) => "UNAVAILABLE",
            Rejection::OutcomeUnknown => "OUTCOME_UNKNOWN",
            Rejection::ClaimLost => "UNAVAILABLE",
            Rejection::StoreRefused => "INTERNAL",
            Rejection::EventProcessed => "CONFLICT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_overload_and_unavailability_are_transient() {
        assert!(Rejection::Overloaded.transient());
        assert!(Rejection::Unavailable("db".into()).transient());
        assert!(
            !Rejection::InsufficientFunds {
                balance: Amount::ZERO,
                requested: Amount::ZERO
            }
            .transient()
        );
        assert!(!Rejection::WalletNotFound.transient());
        assert!(Rejection::OutcomeUnknown.transient());
        assert!(Rejection::ClaimLost.transient());
        assert!(!Rejection::StoreRefused.transient());
        assert!(!Rejection::EventProcessed.transient());
        assert!(!Rejection::RefundExceedsDebit { debited: Amount::ZERO }.transient());
    }
}
