//! Holds as use cases: place, capture, void, read, and the expiry sweep. Every change goes through the
//! wallet's actor (`wallet_actors::command::hold`), which judges it beside the wallet's debits; reads come
//! from the store and show each hold as it is at the instant of the read (an open hold past its
//! `expires_at` is EXPIRED and reserves nothing, before any sweep writes it).

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use wallet_actors::store::StoreError;
use wallet_actors::{Amount, Applied, Command, Entry, Hold, Origin, Rejection, Request};

use super::idempotency::{KeyRequest, Keyed, KeyedError};
use super::{Service, unexpected};
use crate::store::HoldFilter;

/// How often open holds past their expiry are written EXPIRED and released (correctness does not depend on
/// it: a hold stops reserving at its expiry, and every use of its wallet writes the expiry too).
pub const HOLD_SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Most hold → wallet ids remembered (holds are short-lived: past this the map starts over).
pub const MAX_CACHED_HOLD_WALLETS: usize = 100_000;

/// A hold to place (validated by the adapter: positive amount, lengths, expiry within bounds).
#[derive(Debug, Clone)]
pub struct NewHold {
    pub amount: Amount,
    pub reference_id: Option<String>,
    pub reference_type: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub expires_in: Duration,
}

impl Service {
    /// Reserves `h.amount` on the wallet through its actor, against the available balance and budgets.
    pub async fn place_hold(&self, wallet_id: Uuid, h: NewHold, origin: Origin) -> Result<Hold, Rejection> {
        let command = Command::PlaceHold {
            hold_id: Uuid::now_v7(),
            amount: h.amount,
            description: h.description,
            reference_id: h.reference_id,
            reference_type: h.reference_type,
            metadata: h.metadata,
            expires_in: h.expires_in,
        };
        match self.engine.execute(wallet_id, Request { command, origin }).await? {
            Applied::Held(hold) => {
                self.remember_hold(&hold);
                Ok(hold)
            }
            _ => Err(unexpected("a hold")),
        }
    }

    /// Captures `amount` of a hold (default: what remains); `final_capture` releases the rest. Returns the
    /// capture's DEBIT row and the hold after it.
    pub async fn capture_hold(
        &self,
        hold_id: Uuid,
        amount: Option<Amount>,
        final_capture: bool,
        origin: Origin,
    ) -> Result<(Entry, Hold), Rejection> {
        let wallet_id = self.wallet_of_hold(hold_id).await?;
        let command = Command::CaptureHold {
            hold_id,
            amount,
            final_capture,
        };
        match self.engine.execute(wallet_id, Request { command, origin }).await {
            Ok(Applied::Captured { entry, hold }) => Ok((entry, hold)),
            Ok(_) => Err(unexpected("a capture")),
            Err(Rejection::HoldNotFound) => Err(self.not_open(hold_id).await),
            Err(r) => Err(r),
        }
    }

    /// Releases what a hold still reserves (VOIDED).
    pub async fn void_hold(&self, hold_id: Uuid, origin: Origin) -> Result<Hold, Rejection> {
        let wallet_id = self.wallet_of_hold(hold_id).await?;
        let command = Command::VoidHold { hold_id };
        match self.engine.execute(wallet_id, Request { command, origin }).await {
            Ok(Applied::Held(hold)) => Ok(hold),
            Ok(_) => Err(unexpected("a void")),
            Err(Rejection::HoldNotFound) => Err(self.not_open(hold_id).await),
            Err(r) => Err(r),
        }
    }

    /// [`Service::place_hold`] under an Idempotency-Key. `origin` is the caller's (without a ticket).
    pub async fn place_hold_keyed(
        &self,
        wallet_id: Uuid,
        h: NewHold,
        origin: Origin,
        key: Option<KeyRequest>,
    ) -> Result<Keyed<Hold>, KeyedError<Rejection>> {
        self.keyed(key, |ticket| {
            let origin = Origin {
                idempotency: ticket,
                ..origin
            };
            self.place_hold(wallet_id, h, origin)
        })
        .await
    }

    /// [`Service::capture_hold`] under an Idempotency-Key. `origin` is the caller's (without a ticket).
    pub async fn capture_hold_keyed(
        &self,
        hold_id: Uuid,
        amount: Option<Amount>,
        final_capture: bool,
        origin: Origin,
        key: Option<KeyRequest>,
    ) -> Result<Keyed<(Entry, Hold)>, KeyedError<Rejection>> {
        self.keyed(key, |ticket| {
            let origin = Origin {
                idempotency: ticket,
                ..origin
            };
            self.capture_hold(hold_id, amount, final_capture, origin)
        })
        .await
    }

    /// One hold, as stored (see `Hold::status_at` for what a reader sees).
    pub async fn hold(&self, hold_id: Uuid) -> Result<Option<Hold>, StoreError> {
        let hold = self.store.hold(hold_id).await?;
        if let Some(h) = &hold {
            self.remember_hold(h);
        }
        Ok(hold)
    }

    fn remember_hold(&self, h: &Hold) {
        if self.hold_wallets.len() >= MAX_CACHED_HOLD_WALLETS {
            self.hold_wallets.clear();
        }
        self.hold_wallets.insert(h.hold_id, h.wallet_id);
    }

    /// A page of a wallet's holds, newest first, and how many match.
    pub async fn holds_of_wallet(
        &self,
        wallet_id: Uuid,
        filter: HoldFilter,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Hold>, i64), StoreError> {
        self.store.holds_of_wallet(wallet_id, filter, now).await
    }

    /// The hold of a wallet with this reference (a booking's hold), if any.
    pub async fn hold_by_reference(
        &self,
        wallet_id: Uuid,
        reference_type: &str,
        reference_id: &str,
    ) -> Result<Option<Hold>, StoreError> {
        self.store
            .hold_by_reference(wallet_id, reference_type, reference_id)
            .await
    }

    /// Writes the expiry of open holds past their `expires_at`, each through its wallet's actor (bounded
    /// per pass: `store::MAX_SWEEP_HOLDS`). Returns how many were written.
    pub async fn sweep_expired_holds(&self) -> Result<usize, StoreError> {
        let wallets = self.store.wallets_with_expired_holds(Utc::now()).await?;
        let mut expired = 0;
        for wallet_id in wallets {
            let request = Request {
                command: Command::ExpireHolds,
                origin: Origin {
                    role: "system".into(),
                    ..Origin::default()
                },
            };
            match self.engine.execute(wallet_id, request).await {
                Ok(Applied::Swept(n)) => expired += n,
                Ok(_) => {}
                // One busy wallet does not stop the sweep; it is found again next pass.
                Err(r) => tracing::warn!(%wallet_id, rejection = %r, "hold expiry: wallet not swept"),
            }
        }
        Ok(expired)
    }

    async fn wallet_of_hold(&self, hold_id: Uuid) -> Result<Uuid, Rejection> {
        if let Some(w) = self.hold_wallets.get(&hold_id) {
            return Ok(*w);
        }
        match self.hold(hold_id).await {
            Ok(Some(h)) => Ok(h.wallet_id),
            Ok(None) => Err(Rejection::HoldNotFound),
            Err(e) => Err(Rejection::Unavailable(e.to_string())),
        }
    }

    /// The actor has no open hold with this id: say what became of it.
    async fn not_open(&self, hold_id: Uuid) -> Rejection {
        match self.store.hold(hold_id).await {
            Ok(Some(h)) => match h.status_at(Utc::now()) {
                // Opened since the actor judged (another instance placed it): a retry will find it.
                s if s.is_open() => Rejection::Unavailable("the hold changed under the request".into()),
                status => Rejection::HoldNotPending { status },
            },
            Ok(None) => Rejection::HoldNotFound,
            Err(e) => Rejection::Unavailable(e.to_string()),
        }
    }
}
