//! The booking and user events as use cases, decided without AMQP: the adapter (`crate::events`) turns
//! the [`Outcome`] into an ack, a delayed requeue or a dead letter.
//!
//! Every money effect goes through the wallet's actor ([`Service::post`]), with
//! `Origin { role: "system", inbox_event: Some(InboxEvent { id, event_type }) }` so that the inbox row commits with the
//! effect, and a commit carrying an event already in the inbox writes nothing (`Rejection::EventProcessed`,
//! a duplicate). A booking debit refused for a business reason is a final outcome: `TransactionFailed` is
//! written to the outbox together with the inbox row, in one transaction, once (`store::bookings`).

use serde::Deserialize;
use serde_json::json;
use tracing::{debug, info};
use uuid::Uuid;
use wallet_actors::messages::{MAX_DESCRIPTION_LEN, MAX_REFERENCE_ID_LEN};
use wallet_actors::{Amount, Currency, Direction, InboxEvent, Origin, Rejection, StoreError, WalletState};

use super::holds::NewHold;
use super::{Posting, Service};
use crate::auth::Role;
pub use crate::store::{BOOKING_REFERENCE_TYPE, BOOKING_REFUSED_ACTION, SYSTEM_ACTOR};
use crate::store::{CreateWalletError, RefusedBooking};
use wallet_actors::command::hold::DEFAULT_HOLD_TTL_SECS;
use wallet_actors::{Hold, HoldStatus};

/// Longest e-mail accepted from `UserCreated` (as over HTTP).
pub const MAX_EMAIL_LEN: usize = 254;

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Final: ack.
    Done(Done),
    /// May succeed later (unknown user, cancellation before its booking, wallet frozen for a refund):
    /// retried a bounded number of times, then dead-lettered with this reason (`CODE: detail`).
    Retry(String),
    /// Can never succeed (malformed, impossible): dead-lettered with this reason.
    Poison(String),
    /// A dependency failed (database down, engine overloaded): retried with backoff, never dead-lettered
    /// for this reason alone.
    Transient(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// The effect committed now.
    Applied,
    /// Already done before (same event id, or the same booking's debit/refund under another id).
    Duplicate,
    /// A booking debit refused for a business reason; `TransactionFailed` written with this code.
    Refused(&'static str),
    /// Nothing to do (e.g. cancellation of a booking whose debit was refused).
    NothingToDo,
}

#[derive(Debug, Deserialize)]
pub struct BookingCreated {
    #[serde(deserialize_with = "text_id")]
    booking_id: String,
    user_id: Uuid,
    amount: Amount,
    currency: String,
    #[serde(default)]
    description: Option<String>,
    /// Place a hold (captured by `BookingConfirmed`) instead of debiting now.
    #[serde(default)]
    hold: bool,
}

#[derive(Debug, Deserialize)]
pub struct BookingConfirmed {
    #[serde(deserialize_with = "text_id")]
    booking_id: String,
    user_id: Uuid,
    /// What to charge (default: the held amount); the rest is released.
    #[serde(default)]
    amount: Option<Amount>,
}

#[derive(Debug, Deserialize)]
pub struct BookingCancelled {
    #[serde(deserialize_with = "text_id")]
    booking_id: String,
    user_id: Uuid,
    #[serde(default)]
    refund_amount: Option<Amount>,
}

#[derive(Debug, Deserialize)]
pub struct UserCreated {
    user_id: Uuid,
    email: String,
    company_id: Uuid,
    role: String,
}

/// A booking id as a string, from a JSON string or integer.
fn text_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        _ => Err(serde::de::Error::custom("booking_id must be a string")),
    }
}

fn origin(event_id: Uuid, event_type: &'static str) -> Origin {
    Origin {
        actor_id: SYSTEM_ACTOR,
        role: "system".into(),
        idempotency: None,
        inbox_event: Some(InboxEvent {
            id: event_id,
            event_type,
        }),
    }
}

fn transient<E: std::fmt::Display>(e: E) -> Outcome {
    Outcome::Transient(e.to_string())
}

fn check_booking_id(id: &str) -> Result<(), Outcome> {
    if id.trim().is_empty() || id.chars().count() > MAX_REFERENCE_ID_LEN {
        return Err(Outcome::Poison(format!(
            "MALFORMED: booking_id must be 1..={MAX_REFERENCE_ID_LEN} characters"
        )));
    }
    Ok(())
}

/// The user's wallet id, or a retry (the user may not be known yet: `UserCreated` can arrive later).
async fn wallet_of(ctx: &Service, user_id: Uuid) -> Result<Uuid, Outcome> {
    match ctx.wallet_of_user(user_id).await {
        Ok(Some(w)) => Ok(w),
        Ok(None) => Err(Outcome::Retry(format!("UNKNOWN_USER: user {user_id} has no wallet"))),
        Err(e) => Err(transient(e)),
    }
}

async fn booking_created(ctx: &Service, event_id: Uuid, b: BookingCreated) -> Outcome {
    if let Err(o) = check_booking_id(&b.booking_id) {
        return o;
    }
    if b.amount.is_zero() {
        return Outcome::Poison("MALFORMED: amount must be positive".into());
    }
    let currency: Currency = match b.currency.parse() {
        Ok(c) => c,
        Err(e) => return Outcome::Poison(format!("MALFORMED: {e}")),
    };
    let wallet_id = match wallet_of(ctx, b.user_id).await {
        Ok(w) => w,
        Err(o) => return o,
    };
    let wallet: WalletState = match ctx.wallet(wallet_id).await {
        Ok(w) => w,
        Err(r) if r.transient() => return transient(r),
        Err(r) => return Outcome::Retry(format!("WALLET_UNAVAILABLE: {r}")),
    };
    let refusal = Refused {
        event_id,
        event_type: "BookingCreated",
        wallet_id,
        user_id: b.user_id,
        amount: b.amount,
        booking_id: &b.booking_id,
    };
    if wallet.currency != currency {
        return refusal
            .record(
                ctx,
                "CURRENCY_MISMATCH",
                &format!("booking in {currency}, wallet in {}", wallet.currency),
            )
            .await;
    }
    let description = b
        .description
        .as_ref()
        .map(|d| d.chars().take(MAX_DESCRIPTION_LEN).collect::<String>());
    if b.hold {
        return hold_booking(ctx, event_id, &b, description, refusal).await;
    }
    let posting = Posting {
        direction: Direction::Debit,
        amount: b.amount,
        description,
        reference_id: Some(b.booking_id.clone()),
        reference_type: Some(BOOKING_REFERENCE_TYPE.into()),
        metadata: Some(json!({"event_id": event_id, "source": "BookingCreated"})),
    };
    match ctx.post(wallet_id, posting, origin(event_id, "BookingCreated")).await {
        Ok(e) => {
            debug!(%event_id, booking_id = %b.booking_id, txn_id = %e.txn_id, "booking debited");
            Outcome::Done(Done::Applied)
        }
        Err(Rejection::DuplicateReference { existing_txn_id }) => {
            info!(%event_id, booking_id = %b.booking_id, %existing_txn_id, "booking already debited");
            match ctx.store.mark_processed(event_id, "BookingCreated").await {
                Ok(()) => Outcome::Done(Done::Duplicate),
                Err(e) => transient(e),
            }
        }
        // Processed before (its effect or its refusal committed): the inbox guard of the commit.
        Err(Rejection::EventProcessed) => Outcome::Done(Done::Duplicate),
        Err(r) if r.transient() => transient(r),
        // Postgres refused this event's own data: it can never succeed.
        Err(Rejection::StoreRefused) => Outcome::Poison("MALFORMED: the ledger refused the event's data".into()),
        Err(Rejection::WalletNotFound) => Outcome::Retry(format!("WALLET_UNAVAILABLE: wallet {wallet_id} not found")),
        // Every other refusal is a business outcome (insufficient funds, wallet not active, budget
        // exceeded, …): final, announced as TransactionFailed.
        Err(r) => refusal.record(ctx, r.code(), &r.to_string()).await,
    }
}

/// `BookingCreated` with `"hold": true`: a hold with the booking's reference, refused like its debit.
async fn hold_booking(
    ctx: &Service,
    event_id: Uuid,
    b: &BookingCreated,
    description: Option<String>,
    refusal: Refused<'_>,
) -> Outcome {
    let hold = NewHold {
        amount: b.amount,
        reference_id: Some(b.booking_id.clone()),
        reference_type: Some(BOOKING_REFERENCE_TYPE.into()),
        description,
        metadata: Some(json!({"event_id": event_id, "source": "BookingCreated"})),
        expires_in: std::time::Duration::from_secs(u64::from(DEFAULT_HOLD_TTL_SECS)),
    };
    match ctx
        .place_hold(refusal.wallet_id, hold, origin(event_id, "BookingCreated"))
        .await
    {
        Ok(h) => {
            debug!(%event_id, booking_id = %b.booking_id, hold_id = %h.hold_id, "booking held");
            Outcome::Done(Done::Applied)
        }
        Err(Rejection::DuplicateReference { existing_txn_id }) => {
            info!(%event_id, booking_id = %b.booking_id, hold_id = %existing_txn_id, "booking already held");
            mark(ctx, event_id, "BookingCreated", Done::Duplicate).await
        }
        // Processed before (its effect or its refusal committed): the inbox guard of the commit.
        Err(Rejection::EventProcessed) => Outcome::Done(Done::Duplicate),
        Err(r) if r.transient() => transient(r),
        Err(Rejection::StoreRefused) => Outcome::Poison("MALFORMED: the ledger refused the event's data".into()),
        Err(Rejection::WalletNotFound) => {
            Outcome::Retry(format!("WALLET_UNAVAILABLE: wallet {} not found", refusal.wallet_id))
        }
        Err(r) => refusal.record(ctx, r.code(), &r.to_string()).await,
    }
}

/// Records the event as processed with nothing (more) to do.
async fn mark(ctx: &Service, event_id: Uuid, event_type: &'static str, done: Done) -> Outcome {
    match ctx.store.mark_processed(event_id, event_type).await {
        Ok(()) => Outcome::Done(done),
        Err(e) => transient(e),
    }
}

/// `BookingConfirmed`: captures the booking's hold (all of it, or `amount`), releasing the rest.
async fn booking_confirmed(ctx: &Service, event_id: Uuid, b: BookingConfirmed) -> Outcome {
    if let Err(o) = check_booking_id(&b.booking_id) {
        return o;
    }
    if b.amount.is_some_and(Amount::is_zero) {
        return Outcome::Poison("MALFORMED: amount must be positive".into());
    }
    let wallet_id = match wallet_of(ctx, b.user_id).await {
        Ok(w) => w,
        Err(o) => return o,
    };
    let hold = match ctx
        .hold_by_reference(wallet_id, BOOKING_REFERENCE_TYPE, &b.booking_id)
        .await
    {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Outcome::Retry(format!(
                "BOOKING_NOT_HELD: no hold of booking {:?} on wallet {wallet_id} (confirmation before its booking?)",
                b.booking_id
            ));
        }
        Err(e) => return transient(e),
    };
    let refusal = Refused {
        event_id,
        event_type: "BookingConfirmed",
        wallet_id,
        user_id: b.user_id,
        amount: b.amount.unwrap_or(hold.amount),
        booking_id: &b.booking_id,
    };
    let origin = origin(event_id, "BookingConfirmed");
    match ctx.capture_hold(hold.hold_id, b.amount, true, origin).await {
        Ok((entry, _)) => {
            debug!(%event_id, booking_id = %b.booking_id, txn_id = %entry.txn_id, "booking hold captured");
            Outcome::Done(Done::Applied)
        }
        // Captured before (another delivery under another id): nothing more to do.
        Err(Rejection::HoldNotPending {
            status: HoldStatus::Captured,
        }) => mark(ctx, event_id, "BookingConfirmed", Done::Duplicate).await,
        // Processed before (its effect or its refusal committed): the inbox guard of the commit.
        Err(Rejection::EventProcessed) => Outcome::Done(Done::Duplicate),
        Err(r) if r.transient() => transient(r),
        Err(Rejection::StoreRefused) => Outcome::Poison("MALFORMED: the ledger refused the event's data".into()),
        // Voided, expired, over the hold, the balance or a budget: final, announced as TransactionFailed.
        Err(r) => refusal.record(ctx, r.code(), &r.to_string()).await,
    }
}

/// `BookingCancelled` of a held booking: voids what the hold still reserves. Returns `None` when the
/// booking has captures to refund (the caller refunds them as it refunds a debit).
async fn cancel_hold(ctx: &Service, event_id: Uuid, hold: &Hold) -> Option<Outcome> {
    let now = chrono::Utc::now();
    let open = hold.status_at(now).is_open();
    if open {
        // With captures to refund after it, the void carries no inbox row: the refund's commit does.
        let o = if hold.captured.is_zero() {
            origin(event_id, "BookingCancelled")
        } else {
            Origin {
                inbox_event: None,
                ..origin(event_id, "BookingCancelled")
            }
        };
        match ctx.void_hold(hold.hold_id, o).await {
            Ok(_) if hold.captured.is_zero() => return Some(Outcome::Done(Done::Applied)),
            Ok(_) | Err(Rejection::HoldNotPending { .. }) => {}
            Err(Rejection::EventProcessed) => return Some(Outcome::Done(Done::Duplicate)),
            Err(r) if r.transient() => return Some(transient(r)),
            Err(r) => return Some(Outcome::Retry(format!("{}: void refused: {r}", r.code()))),
        }
    }
    if hold.captured.is_zero() {
        // Voided or expired before, nothing captured: nothing to give back.
        return Some(mark(ctx, event_id, "BookingCancelled", Done::NothingToDo).await);
    }
    None
}

/// A refused booking debit, to be recorded.
struct Refused<'a> {
    event_id: Uuid,
    /// The refused event's type, as its inbox row records it.
    event_type: &'static str,
    wallet_id: Uuid,
    user_id: Uuid,
    amount: Amount,
    booking_id: &'a str,
}

impl Refused<'_> {
    /// Writes the inbox row, the `TransactionFailed` outbox row and an audit row, once: a duplicate when the
    /// event was processed before or its booking was debited.
    async fn record(&self, ctx: &Service, code: &'static str, detail: &str) -> Outcome {
        let refused = RefusedBooking {
            event_id: self.event_id,
            event_type: self.event_type,
            wallet_id: self.wallet_id,
            user_id: self.user_id,
            amount: self.amount,
            booking_id: self.booking_id,
            code,
            detail,
        };
        match ctx.store.record_refused_booking(&refused).await {
            Ok(true) => {
                info!(event_id = %self.event_id, booking_id = %self.booking_id, reason = code, "booking debit refused");
                Outcome::Done(Done::Refused(code))
            }
            // The event was processed before (a redelivery of a refused booking, judged again), or the booking
            // was debited under another event: nothing more is written.
            Ok(false) => Outcome::Done(Done::Duplicate),
            Err(e) => transient(e),
        }
    }
}

async fn booking_cancelled(ctx: &Service, event_id: Uuid, b: BookingCancelled) -> Outcome {
    if let Err(o) = check_booking_id(&b.booking_id) {
        return o;
    }
    let wallet_id = match wallet_of(ctx, b.user_id).await {
        Ok(w) => w,
        Err(o) => return o,
    };
    match ctx
        .hold_by_reference(wallet_id, BOOKING_REFERENCE_TYPE, &b.booking_id)
        .await
    {
        Ok(Some(hold)) => {
            if let Some(done) = cancel_hold(ctx, event_id, &hold).await {
                return done;
            }
        }
        Ok(None) => {}
        Err(e) => return transient(e),
    }
    let state = match ctx.store.booking_state(wallet_id, &b.booking_id).await {
        Ok(s) => s,
        Err(e) => return transient(e),
    };
    let Some(debited) = state.debited else {
        if state.refused {
            // The booking's debit was refused (TransactionFailed): there is nothing to give back.
            return match ctx.store.mark_processed(event_id, "BookingCancelled").await {
                Ok(()) => Outcome::Done(Done::NothingToDo),
                Err(e) => transient(e),
            };
        }
        return Outcome::Retry(format!(
            "BOOKING_NOT_DEBITED: no debit of booking {:?} on wallet {wallet_id} (cancellation before its booking?)",
            b.booking_id
        ));
    };
    if state.refunded {
        return match ctx.store.mark_processed(event_id, "BookingCancelled").await {
            Ok(()) => Outcome::Done(Done::Duplicate),
            Err(e) => transient(e),
        };
    }
    let refund = b.refund_amount.unwrap_or(debited);
    if refund.is_zero() {
        return Outcome::Poison("MALFORMED: refund_amount must be positive".into());
    }
    if refund > debited {
        return Outcome::Poison(format!(
            "REFUND_EXCEEDS_DEBIT: refund {refund} of booking {:?} is more than its debit {debited}",
            b.booking_id
        ));
    }
    let posting = Posting {
        direction: Direction::Credit,
        amount: refund,
        description: Some(format!("Refund of booking {}", b.booking_id))
            .map(|d| d.chars().take(MAX_DESCRIPTION_LEN).collect()),
        reference_id: Some(b.booking_id.clone()),
        reference_type: Some(BOOKING_REFERENCE_TYPE.into()),
        metadata: Some(json!({"event_id": event_id, "source": "BookingCancelled"})),
    };
    match ctx.post(wallet_id, posting, origin(event_id, "BookingCancelled")).await {
        Ok(_) => Outcome::Done(Done::Applied),
        Err(Rejection::DuplicateReference { .. }) => match ctx.store.mark_processed(event_id, "BookingCancelled").await
        {
            Ok(()) => Outcome::Done(Done::Duplicate),
            Err(e) => transient(e),
        },
        // Processed before (its effect or its refusal committed): the inbox guard of the commit.
        Err(Rejection::EventProcessed) => Outcome::Done(Done::Duplicate),
        Err(r) if r.transient() => transient(r),
        Err(Rejection::StoreRefused) => Outcome::Poison("MALFORMED: the ledger refused the event's data".into()),
        // The store's refund rule (the authority; the check above only spares the engine a round trip).
        Err(r @ Rejection::RefundExceedsDebit { .. }) => Outcome::Poison(format!(
            "REFUND_EXCEEDS_DEBIT: refund {refund} of booking {:?}: {r}",
            b.booking_id
        )),
        // A refund the wallet cannot take now (frozen or closed wallet, balance ceiling): the money is
        // owed, so it is not dropped; after the retries it waits in the dead-letter queue.
        Err(r) => Outcome::Retry(format!("{}: refund refused: {r}", r.code())),
    }
}

async fn user_created(ctx: &Service, event_id: Uuid, u: UserCreated) -> Outcome {
    let role: Role = match u.role.parse() {
        Ok(r) => r,
        Err(e) => return Outcome::Poison(format!("MALFORMED: role: {e}")),
    };
    let email = u.email.trim();
    if email.len() > MAX_EMAIL_LEN || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Outcome::Poison("MALFORMED: email must be an e-mail address".into());
    }
    let o = origin(event_id, "UserCreated");
    // Each step is idempotent, so a redelivery after a crash between them completes the rest: the
    // user record is an upsert, a second wallet is refused (`Exists`), default budgets are applied once
    // per wallet. The inbox row is written last.
    if let Err(e) = ctx.record_user(u.user_id, email, u.company_id, role, &o).await {
        return transient(e);
    }
    let wallet = match ctx
        .create_wallet(u.user_id, Amount::ZERO, ctx.settings.default_currency, &o)
        .await
    {
        Ok(w) => w.wallet_id,
        Err(CreateWalletError::Exists(w)) => w,
        Err(CreateWalletError::UserNotFound) => return Outcome::Transient("user vanished after upsert".into()),
        Err(CreateWalletError::Store(e)) => return transient(e),
        // No opening balance is planned for an event's wallet: nothing to refuse, ever.
        Err(CreateWalletError::Refused(r)) => return Outcome::Poison(format!("{}: {r}", r.code())),
        // No key on events (the inbox and the wallet's unique user make a redelivery converge).
        Err(CreateWalletError::ClaimLost) => return Outcome::Transient("idempotency claim lost".into()),
        Err(CreateWalletError::OutcomeUnknown) => {
            return Outcome::Transient("wallet creation: the commit's outcome is unknown".into());
        }
    };
    if let Err(e) = apply_default_budgets(ctx, event_id, wallet, role).await {
        return transient(e);
    }
    match ctx.store.mark_processed(event_id, "UserCreated").await {
        Ok(()) => Outcome::Done(Done::Applied),
        Err(e) => transient(e),
    }
}

/// Sets up the configured default budgets of a new user's wallet ([`super::budgets::apply_defaults`]),
/// once: a default whose period already has a budget on the wallet is skipped, so a redelivered
/// `UserCreated` (or one that failed half-way) completes the set without doubling it. A per-wallet lock
/// (`store::DefaultBudgetsLock`) keeps two concurrent deliveries (two instances) from both creating them.
/// Why the default budgets of a new user's wallet are not (all) in place yet; the delivery is retried.
#[derive(Debug, thiserror::Error)]
enum DefaultBudgetsFailed {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("default budgets: {0}")]
    Refused(Rejection),
}

async fn apply_default_budgets(
    ctx: &Service,
    event_id: Uuid,
    wallet_id: Uuid,
    role: Role,
) -> Result<(), DefaultBudgetsFailed> {
    let wanted: Vec<_> = ctx
        .settings
        .default_budgets
        .iter()
        .filter(|d| d.role == role.as_str() || d.role == "*")
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let (lock, existing) = ctx.store.lock_default_budgets(wallet_id).await?;
    let missing: Vec<super::budgets::DefaultBudget> = wanted
        .into_iter()
        .filter(|d| !existing.iter().any(|p| p.as_str() == d.period.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let mut o = origin(event_id, "UserCreated");
        // The inbox row is the UserCreated's own, written last.
        o.inbox_event = None;
        super::budgets::apply_defaults(ctx, &missing, wallet_id, role.as_str(), o)
            .await
            .map_err(DefaultBudgetsFailed::Refused)?;
    }
    Ok(lock.release().await?)
}

impl Service {
    /// `BookingCreated`: debits the booking's amount once (reference = booking id), or records the refusal.
    pub async fn booking_created(&self, event_id: Uuid, b: BookingCreated) -> Outcome {
        booking_created(self, event_id, b).await
    }

    /// `BookingConfirmed`: captures the booking's hold (all of it, or `amount`) and releases the rest.
    pub async fn booking_confirmed(&self, event_id: Uuid, b: BookingConfirmed) -> Outcome {
        booking_confirmed(self, event_id, b).await
    }

    /// `BookingCancelled`: voids the booking's hold, or refunds its debit or captures (all, or
    /// `refund_amount`), at most once.
    pub async fn booking_cancelled(&self, event_id: Uuid, b: BookingCancelled) -> Outcome {
        booking_cancelled(self, event_id, b).await
    }

    /// `UserCreated`: records the user, creates the wallet and the default budgets.
    pub async fn user_created(&self, event_id: Uuid, u: UserCreated) -> Outcome {
        user_created(self, event_id, u).await
    }

    /// Whether a consumed event's id is in the inbox already.
    pub async fn already_processed(&self, event_id: Uuid) -> Result<bool, StoreError> {
        self.store.already_processed(event_id).await
    }
}
