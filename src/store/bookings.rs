//! The SQL of the booking and user events besides the wallet's own commits: the inbox look-up, inbox rows
//! of events that needed no effect, the record of a refused booking debit (`TransactionFailed`), what is
//! known of a booking on a wallet, and the lock that makes default budgets set up once.

use deadpool_postgres::{GenericClient, Object};
use serde_json::json;
use uuid::Uuid;
use wallet_actors::Amount;
use wallet_actors::store::StoreError;

use super::{PgStore, corrupt, unavailable};
use crate::views::OutboxEvent;

/// `reference_type` of booking debits and refunds.
pub const BOOKING_REFERENCE_TYPE: &str = "BOOKING";
/// The audit action recorded when a booking debit is refused (also how a later cancellation learns
/// that there is nothing to refund).
pub const BOOKING_REFUSED_ACTION: &str = "booking.debit_refused";
/// `actor_id` of changes made by consumed events (the system, not a person).
pub const SYSTEM_ACTOR: Uuid = Uuid::nil();
/// Namespace of the advisory locks that serialize default-budget set-up per wallet ("BUDG").
const DEFAULT_BUDGETS_LOCK: i32 = 0x4255_4447;

/// A booking debit refused for a business reason, to be recorded once.
pub struct RefusedBooking<'a> {
    pub event_id: Uuid,
    /// `BookingCreated`, or `BookingConfirmed` for a capture refused.
    pub event_type: &'static str,
    pub wallet_id: Uuid,
    pub user_id: Uuid,
    pub amount: Amount,
    pub booking_id: &'a str,
    pub code: &'static str,
    pub detail: &'a str,
}

/// What is known of a booking on a wallet.
pub struct BookingState {
    /// The amount of its debit, if it was debited.
    pub debited: Option<Amount>,
    /// Whether it has been refunded already.
    pub refunded: bool,
    /// Whether its debit was refused (`TransactionFailed`), when it was not debited.
    pub refused: bool,
}

/// A wallet's default-budget set-up, held exclusive (a transaction-level advisory lock on its own
/// connection) until [`DefaultBudgetsLock::release`]. Dropped unreleased, its connection is closed rather
/// than returned to the pool mid-transaction, which ends the transaction and the lock.
pub struct DefaultBudgetsLock {
    client: Option<Object>,
}

impl DefaultBudgetsLock {
    /// Commits the lock's transaction, which releases it.
    pub async fn release(mut self) -> Result<(), StoreError> {
        let c = self
            .client
            .take()
            .ok_or_else(|| StoreError::Other("lock already released".into()))?;
        c.batch_execute("COMMIT").await.map_err(unavailable)
    }
}

impl Drop for DefaultBudgetsLock {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            // Never back into the pool inside an open transaction holding the lock: close it instead.
            drop(Object::take(c));
        }
    }
}

impl PgStore {
    /// Whether an event id is in the inbox (its effect committed, or it needed none).
    pub async fn already_processed(&self, event_id: Uuid) -> Result<bool, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        // Prepared once per connection: one round trip per event, not a parse and then the query.
        let stmt = c
            .prepare_cached("SELECT 1 FROM processed_events WHERE event_id = $1")
            .await
            .map_err(unavailable)?;
        let row = c.query_opt(&stmt, &[&event_id]).await.map_err(unavailable)?;
        Ok(row.is_some())
    }

    /// Records an event id whose effect committed under another event id (or that needed no effect).
    pub async fn mark_processed(&self, event_id: Uuid, event_type: &str) -> Result<(), StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        c.execute(
            "INSERT INTO processed_events (event_id, event_type) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&event_id, &event_type],
        )
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    /// Writes the inbox row, the `TransactionFailed` outbox row and an audit row of a refused booking debit,
    /// in one transaction. Nothing is written twice: if the inbox row exists (the event was processed before,
    /// or a concurrent duplicate got here first) or the booking has been debited meanwhile, only the inbox
    /// row is kept. Whether the refusal was recorded now.
    pub async fn record_refused_booking(&self, r: &RefusedBooking<'_>) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await.map_err(unavailable)?;
        let tx = c.transaction().await.map_err(unavailable)?;
        match write_refusal(&tx, r).await {
            Ok(recorded) => tx.commit().await.map(|()| recorded).map_err(unavailable),
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %rb, "rollback of a refusal failed");
                }
                Err(unavailable(e))
            }
        }
    }

    /// What is known of a booking on a wallet: its debit, whether it was refunded or refused.
    pub async fn booking_state(&self, wallet_id: Uuid, booking_id: &str) -> Result<BookingState, StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let rows = c
            .query(
                "SELECT type, amount FROM transaction_references WHERE wallet_id = $1 AND reference_type = $2 AND reference_id = $3",
                &[&wallet_id, &BOOKING_REFERENCE_TYPE, &booking_id],
            )
            .await
            .map_err(unavailable)?;
        let mut debited = None;
        let mut refunded = false;
        for r in &rows {
            match super::col::<&str>(r, "type")? {
                "DEBIT" => debited = Some(Amount::new(super::col(r, "amount")?).map_err(corrupt)?),
                "CREDIT" => refunded = true,
                _ => {}
            }
        }
        let refused = if debited.is_none() {
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
            debited,
            refunded,
            refused,
        })
    }

    /// Takes the wallet's default-budget lock: two concurrent deliveries of one `UserCreated` (two
    /// instances) cannot both create the defaults.
    pub async fn lock_default_budgets(&self, wallet_id: Uuid) -> Result<(DefaultBudgetsLock, Vec<String>), StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let lock = DefaultBudgetsLock { client: Some(c) };
        let client = lock
            .client
            .as_ref()
            .ok_or_else(|| StoreError::Other("no connection".into()))?;
        client.batch_execute("BEGIN").await.map_err(unavailable)?;
        client
            .execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&DEFAULT_BUDGETS_LOCK, &wallet_id.to_string()],
            )
            .await
            .map_err(unavailable)?;
        let rows = client
            .query(
                "SELECT DISTINCT period_type FROM budgets WHERE wallet_id = $1",
                &[&wallet_id],
            )
            .await
            .map_err(unavailable)?;
        let periods = rows
            .iter()
            .map(|r| super::col(r, "period_type"))
            .collect::<Result<_, _>>()?;
        Ok((lock, periods))
    }
}

async fn write_refusal<C: GenericClient>(tx: &C, r: &RefusedBooking<'_>) -> Result<bool, tokio_postgres::Error> {
    let inserted = tx
        .execute(
            "INSERT INTO processed_events (event_id, event_type) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&r.event_id, &r.event_type],
        )
        .await?;
    if inserted == 0 {
        return Ok(false);
    }
    // Locking the wallet row orders this outbox row after the wallet's committed events.
    tx.execute("SELECT 1 FROM wallets WHERE wallet_id = $1 FOR SHARE", &[&r.wallet_id])
        .await?;
    let debited = tx
        .query_opt(
            "SELECT 1 FROM transaction_references WHERE wallet_id = $1 AND reference_type = $2 \
             AND reference_id = $3 AND type = 'DEBIT'",
            &[&r.wallet_id, &BOOKING_REFERENCE_TYPE, &r.booking_id],
        )
        .await?;
    if debited.is_some() {
        return Ok(false);
    }
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
        r.wallet_id,
        Failed {
            wallet_id: r.wallet_id,
            user_id: r.user_id,
            amount: r.amount.to_string(),
            reference_id: r.booking_id,
            reason: r.code,
        },
    );
    super::insert_outbox(tx, std::slice::from_ref(&event)).await?;
    let audit = json!({
        "wallet_id": r.wallet_id, "event_id": r.event_id, "amount": r.amount.to_string(),
        "reason": r.code, "detail": r.detail, "transaction_failed_event_id": event.event_id,
    });
    tx.execute(
        "INSERT INTO audit_log (actor_id, actor_role, action, target_type, target_id, outcome, detail) \
         VALUES ($1, 'system', $2, 'booking', $3, $4, $5)",
        &[&SYSTEM_ACTOR, &BOOKING_REFUSED_ACTION, &r.booking_id, &r.code, &audit],
    )
    .await?;
    Ok(true)
}
