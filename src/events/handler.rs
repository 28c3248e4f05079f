//! What a consumed event does, decided without AMQP: the consumer turns the [`Outcome`] into an ack, a
//! delayed requeue or a dead letter.
//!
//! Every money effect goes through [`crate::money::Ledger`] (the wallet's actor), with
//! `Origin { role: "system", inbox_event: Some(InboxEvent { id, event_type }) }` so that the inbox row commits with the
//! effect. A booking debit refused for a business reason is a final outcome: `TransactionFailed` is
//! written to the outbox together with the inbox row, in one transaction.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use tracing::{debug, info, warn};
use uuid::Uuid;
use wallet_actors::messages::{MAX_DESCRIPTION_LEN, MAX_REFERENCE_ID_LEN};
use wallet_actors::{Amount, Currency, Direction, InboxEvent, Origin, Rejection, StoreError, WalletState};

use crate::app::Ctx;
use crate::auth::Role;
use crate::money::Posting;
use crate::store::{CreateWalletError, unavailable};
use crate::views::OutboxEvent;

/// `reference_type` of booking debits and refunds.
pub const BOOKING_REFERENCE_TYPE: &str = "BOOKING";
/// The audit action recorded when a booking debit is refused (also how a later cancellation learns
/// that there is nothing to refund).
pub const BOOKING_REFUSED_ACTION: &str = "booking.debit_refused";
/// `actor_id` of changes made by consumed events (the system, not a person).
pub const SYSTEM_ACTOR: Uuid = Uuid::nil();
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

/// Every event body: `{event_id, event_type, timestamp, data}`.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub event_id: Uuid,
    pub event_type: String,
    #[serde(default)]
    pub timestamp: Option<serde_json::Value>,
    pub data: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct BookingCreated {
    #[serde(deserialize_with = "text_id")]
    booking_id: String,
    user_id: Uuid,
    amount: Amount,
    currency: String,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BookingCancelled {
    #[serde(deserialize_with = "text_id")]
    booking_id: String,
    user_id: Uuid,
    #[serde(default)]
    refund_amount: Option<Amount>,
}

#[derive(Debug, Deserialize)]
struct UserCreated {
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

/// Which event a message is: its `event_type` decides (the routing key only routes it here).
fn kind_of(event_type: &str) -> Option<&'static str> {
    ["BookingCreated", "BookingCancelled", "UserCreated"]
        .into_iter()
        .find(|k| *k == event_type)
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

/// Handles one message body (`routing_key` is only reported).
pub async fn handle(ctx: &Arc<Ctx>, body: &[u8], routing_key: &str) -> Outcome {
    // Strictly, as HTTP bodies: one document, and no NUL in any string or key (Postgres would refuse
    // it on every attempt, so such a message is poison, not transient).
    let envelope: Envelope = match crate::decode::strict(body) {
        Ok(e) => e,
        Err(e) => return Outcome::Poison(format!("MALFORMED: not an acceptable event envelope: {e}")),
    };
    let Some(kind) = kind_of(&envelope.event_type) else {
        return Outcome::Poison(format!(
            "UNKNOWN_EVENT_TYPE: {:?} (routing key {routing_key:?})",
            envelope.event_type
        ));
    };
    match already_processed(ctx, envelope.event_id).await {
        Ok(true) => return Outcome::Done(Done::Duplicate),
        Ok(false) => {}
        Err(e) => return transient(e),
    }
    let id = envelope.event_id;
    let data = envelope.data;
    match kind {
        "BookingCreated" => match serde_json::from_value::<BookingCreated>(data) {
            Ok(b) => booking_created(ctx, id, b).await,
            Err(e) => Outcome::Poison(format!("MALFORMED: BookingCreated data: {e}")),
        },
        "BookingCancelled" => match serde_json::from_value::<BookingCancelled>(data) {
            Ok(b) => booking_cancelled(ctx, id, b).await,
            Err(e) => Outcome::Poison(format!("MALFORMED: BookingCancelled data: {e}")),
        },
        _ => match serde_json::from_value::<UserCreated>(data) {
            Ok(u) => user_created(ctx, id, u).await,
            Err(e) => Outcome::Poison(format!("MALFORMED: UserCreated data: {e}")),
        },
    }
}

async fn already_processed(ctx: &Ctx, event_id: Uuid) -> Result<bool, StoreError> {
    let c = ctx.ledger.store.pool.get().await.map_err(unavailable)?;
    // Prepared once per connection: one round trip per event, not a parse and then the query.
    let stmt = c
        .prepare_cached("SELECT 1 FROM processed_events WHERE event_id = $1")
        .await
        .map_err(unavailable)?;
    let row = c.query_opt(&stmt, &[&event_id]).await.map_err(unavailable)?;
    Ok(row.is_some())
}

/// Records an event id whose effect committed under another event id (or that needed no effect).
async fn mark_processed(ctx: &Ctx, event_id: Uuid, event_type: &str) -> Result<(), StoreError> {
    let c = ctx.ledger.store.pool.get().await.map_err(unavailable)?;
    c.execute(
        "INSERT INTO processed_events (event_id, event_type) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&event_id, &event_type],
    )
    .await
    .map_err(unavailable)?;
    Ok(())
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
async fn wallet_of(ctx: &Ctx, user_id: Uuid) -> Result<Uuid, Outcome> {
    match ctx.wallet_of_user(user_id).await {
        Ok(Some(w)) => Ok(w),
        Ok(None) => Err(Outcome::Retry(format!("UNKNOWN_USER: user {user_id} has no wallet"))),
        Err(e) => Err(Outcome::Transient(e.detail)),
    }
}

async fn booking_created(ctx: &Arc<Ctx>, event_id: Uuid, b: BookingCreated) -> Outcome {
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
    let wallet: WalletState = match ctx.ledger.wallet(wallet_id).await {
        Ok(w) => w,
        Err(r) if r.transient() => return transient(r),
        Err(r) => return Outcome::Retry(format!("WALLET_UNAVAILABLE: {r}")),
    };
    let refusal = Refused {
        event_id,
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
        .map(|d| d.chars().take(MAX_DESCRIPTION_LEN).collect::<String>());
    let posting = Posting {
        direction: Direction::Debit,
        amount: b.amount,
        description,
        reference_id: Some(b.booking_id.clone()),
        reference_type: Some(BOOKING_REFERENCE_TYPE.into()),
        metadata: Some(json!({"event_id": event_id, "source": "BookingCreated"})),
    };
    match ctx
        .ledger
        .post(wallet_id, posting, origin(event_id, "BookingCreated"))
        .await
    {
        Ok(e) => {
            debug!(%event_id, booking_id = %b.booking_id, txn_id = %e.txn_id, "booking debited");
            Outcome::Done(Done::Applied)
        }
        Err(Rejection::DuplicateReference { existing_txn_id }) => {
            info!(%event_id, booking_id = %b.booking_id, %existing_txn_id, "booking already debited");
            match mark_processed(ctx, event_id, "BookingCreated").await {
                Ok(()) => Outcome::Done(Done::Duplicate),
                Err(e) => transient(e),
            }
        }
        Err(r) if r.transient() => transient(r),
        // Postgres refused this event's own data: it can never succeed.
        Err(Rejection::StoreRefused) => Outcome::Poison("MALFORMED: the ledger refused the event's data".into()),
        Err(Rejection::WalletNotFound) => Outcome::Retry(format!("WALLET_UNAVAILABLE: wallet {wallet_id} not found")),
        // Every other refusal is a business outcome (insufficient funds, wallet not active, budget
        // exceeded, …): final, announced as TransactionFailed.
        Err(r) => refusal.record(ctx, r.code(), &r.to_string()).await,
    }
}

/// A refused booking debit, to be recorded.
struct Refused<'a> {
    event_id: Uuid,
    wallet_id: Uuid,
    user_id: Uuid,
    amount: Amount,
    booking_id: &'a str,
}

impl Refused<'_> {
    /// Writes the inbox row, the `TransactionFailed` outbox row and an audit row in one transaction.
    /// Nothing is written twice: if the inbox row exists (a concurrent duplicate got here first) or the
    /// booking has been debited meanwhile, only the inbox row is kept.
    async fn record(&self, ctx: &Ctx, code: &'static str, detail: &str) -> Outcome {
        match self.write(ctx, code, detail).await {
            Ok(()) => {
                info!(event_id = %self.event_id, booking_id = %self.booking_id, reason = code, "booking debit refused");
                Outcome::Done(Done::Refused(code))
            }
            Err(e) => transient(e),
        }
    }

    async fn write(&self, ctx: &Ctx, code: &'static str, detail: &str) -> Result<(), StoreError> {
        let mut c = ctx.ledger.store.pool.get().await.map_err(unavailable)?;
        let tx = c.transaction().await.map_err(unavailable)?;
        let result = self.write_in(&tx, code, detail).await;
        match result {
            Ok(()) => tx.commit().await.map_err(unavailable),
            Err(e) => {
                if let Err(r) = tx.rollback().await {
                    warn!(error = %r, "rollback of a refusal failed");
                }
                Err(unavailable(e))
            }
        }
    }

    async fn write_in(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        code: &'static str,
        detail: &str,
    ) -> Result<(), tokio_postgres::Error> {
        let inserted = tx
            .execute(
                "INSERT INTO processed_events (event_id, event_type) VALUES ($1, 'BookingCreated') ON CONFLICT DO NOTHING",
                &[&self.event_id],
            )
            .await?;
        if inserted == 0 {
            return Ok(());
        }
        // Locking the wallet row orders this outbox row after the wallet's committed events.
        tx.execute(
            "SELECT 1 FROM wallets WHERE wallet_id = $1 FOR SHARE",
            &[&self.wallet_id],
        )
        .await?;
        let debited = tx
            .query_opt(
                "SELECT 1 FROM transaction_references WHERE wallet_id = $1 AND reference_type = $2 \
                 AND reference_id = $3 AND type = 'DEBIT'",
                &[&self.wallet_id, &BOOKING_REFERENCE_TYPE, &self.booking_id],
            )
            .await?;
        if debited.is_none() {
            #[derive(serde::Serialize)]
            struct Failed<'a> {
                wallet_id: Uuid,
                user_id: Uuid,
                amount: String,
                reference_id: &'a str,
                reason: &'a str,
            }
            let event = OutboxEvent::new(
                "TransactionFailed",
                "transaction.failed",
                self.wallet_id,
                Failed {
                    wallet_id: self.wallet_id,
                    user_id: self.user_id,
                    amount: self.amount.to_string(),
                    reference_id: self.booking_id,
                    reason: code,
                },
            );
            crate::store::insert_outbox(tx, std::slice::from_ref(&event)).await?;
            let audit = json!({
                "wallet_id": self.wallet_id, "event_id": self.event_id, "amount": self.amount.to_string(),
                "reason": code, "detail": detail, "transaction_failed_event_id": event.event_id,
            });
            tx.execute(
                "INSERT INTO audit_log (actor_id, actor_role, action, target_type, target_id, outcome, detail) \
                 VALUES ($1, 'system', $2, 'booking', $3, $4, $5)",
                &[&SYSTEM_ACTOR, &BOOKING_REFUSED_ACTION, &self.booking_id, &code, &audit],
            )
            .await?;
        }
        Ok(())
    }
}

/// What is known of a booking on a wallet.
struct BookingState {
    /// The amount of its debit, if it was debited.
    debited: Option<Amount>,
    /// Whether it has been refunded already.
    refunded: bool,
    /// Whether its debit was refused (`TransactionFailed`), when it was not debited.
    refused: bool,
}

async fn booking_state(ctx: &Ctx, wallet_id: Uuid, booking_id: &str) -> Result<BookingState, StoreError> {
    let c = ctx.ledger.store.pool.get().await.map_err(unavailable)?;
    let rows = c
        .query(
            "SELECT type, amount FROM transaction_references WHERE wallet_id = $1 AND reference_type = $2 AND reference_id = $3",
            &[&wallet_id, &BOOKING_REFERENCE_TYPE, &booking_id],
        )
        .await
        .map_err(unavailable)?;
    let mut debit = None;
    let mut refunded = false;
    for r in &rows {
        match r.get::<_, &str>(0) {
            "DEBIT" => debit = Some(Amount::new(r.get(1)).map_err(unavailable)?),
            "CREDIT" => refunded = true,
            _ => {}
        }
    }
    let refused = if debit.is_none() {
        c.query_opt(
            "SELECT 1 FROM audit_log WHERE target_type = 'booking' AND target_id = $1 AND action = $2 \
             AND detail->>'wallet_id' = $3 LIMIT 1",
            &[&booking_id, &BOOKING_REFUSED_ACTION, &wallet_id.to_string()],
        )
        .await
        .map_err(unavailable)?
        .is_some()
    } else {
        false
    };
    Ok(BookingState {
        debited: debit,
        refunded,
        refused,
    })
}

async fn booking_cancelled(ctx: &Arc<Ctx>, event_id: Uuid, b: BookingCancelled) -> Outcome {
    if let Err(o) = check_booking_id(&b.booking_id) {
        return o;
    }
    let wallet_id = match wallet_of(ctx, b.user_id).await {
        Ok(w) => w,
        Err(o) => return o,
    };
    let state = match booking_state(ctx, wallet_id, &b.booking_id).await {
        Ok(s) => s,
        Err(e) => return transient(e),
    };
    let Some(debited) = state.debited else {
        if state.refused {
            // The booking's debit was refused (TransactionFailed): there is nothing to give back.
            return match mark_processed(ctx, event_id, "BookingCancelled").await {
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
        return match mark_processed(ctx, event_id, "BookingCancelled").await {
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
    match ctx
        .ledger
        .post(wallet_id, posting, origin(event_id, "BookingCancelled"))
        .await
    {
        Ok(_) => Outcome::Done(Done::Applied),
        Err(Rejection::DuplicateReference { .. }) => match mark_processed(ctx, event_id, "BookingCancelled").await {
            Ok(()) => Outcome::Done(Done::Duplicate),
            Err(e) => transient(e),
        },
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

async fn user_created(ctx: &Arc<Ctx>, event_id: Uuid, u: UserCreated) -> Outcome {
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
    if let Err(e) = crate::users::upsert(ctx, u.user_id, email, u.company_id, role, &o).await {
        return Outcome::Transient(e.detail);
    }
    let wallet = match ctx
        .ledger
        .store
        .create_wallet(u.user_id, Amount::ZERO, ctx.default_currency, &o)
        .await
    {
        Ok(w) => {
            ctx.user_wallets.insert(w.user_id, w.wallet_id);
            w.wallet_id
        }
        Err(CreateWalletError::Exists(w)) => w,
        Err(CreateWalletError::UserNotFound) => return Outcome::Transient("user vanished after upsert".into()),
        Err(CreateWalletError::Store(e)) => return transient(e),
        // No key on events (the inbox and the wallet's unique user make a redelivery converge).
        Err(CreateWalletError::ClaimLost) => return Outcome::Transient("idempotency claim lost".into()),
        Err(CreateWalletError::OutcomeUnknown) => {
            return Outcome::Transient("wallet creation: the commit's outcome is unknown".into());
        }
    };
    if let Err(e) = apply_default_budgets(ctx, event_id, wallet, role).await {
        return Outcome::Transient(e);
    }
    match mark_processed(ctx, event_id, "UserCreated").await {
        Ok(()) => Outcome::Done(Done::Applied),
        Err(e) => transient(e),
    }
}

/// Namespace of the advisory locks that serialize default-budget set-up per wallet ("BUDG").
const DEFAULT_BUDGETS_LOCK: i32 = 0x4255_4447;

/// Sets up the configured default budgets of a new user's wallet ([`crate::budgets::apply_defaults`]),
/// once: a default whose period already has a budget on the wallet is skipped, so a redelivered
/// `UserCreated` (or one that failed half-way) completes the set without doubling it. A transaction-level
/// advisory lock per wallet keeps two concurrent deliveries (two instances) from both creating them.
async fn apply_default_budgets(ctx: &Ctx, event_id: Uuid, wallet_id: Uuid, role: Role) -> Result<(), String> {
    let wanted: Vec<_> = ctx
        .default_budgets
        .iter()
        .filter(|d| d.role == role.as_str() || d.role == "*")
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut c = ctx
        .ledger
        .store
        .pool
        .get()
        .await
        .map_err(|e| unavailable(e).to_string())?;
    let tx = c.transaction().await.map_err(|e| unavailable(e).to_string())?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&DEFAULT_BUDGETS_LOCK, &wallet_id.to_string()],
    )
    .await
    .map_err(|e| unavailable(e).to_string())?;
    let existing: Vec<String> = tx
        .query(
            "SELECT DISTINCT period_type FROM budgets WHERE wallet_id = $1",
            &[&wallet_id],
        )
        .await
        .map_err(|e| unavailable(e).to_string())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<crate::budgets::DefaultBudget> = wanted
        .into_iter()
        .filter(|d| !existing.iter().any(|p| p.as_str() == d.period.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let mut o = origin(event_id, "UserCreated");
        // The inbox row is the UserCreated's own, written last.
        o.inbox_event = None;
        crate::budgets::apply_defaults(&ctx.ledger, &missing, wallet_id, role.as_str(), o)
            .await
            .map_err(|r| format!("default budgets: {r}"))?;
    }
    // Releases the lock (a dropped transaction rolls back, which releases it too).
    tx.commit().await.map_err(|e| unavailable(e).to_string())
}
