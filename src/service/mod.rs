//! The use-case layer: the one room that holds the engine, the store and the cache, and the only way
//! HTTP (`crate::http`) and AMQP (`crate::events`) reach money, wallets, users and budgets.
//!
//! Every operation is typed and returns an enum error ([`Rejection`], [`StoreError`],
//! [`CreateWalletError`]); money operations return after the change is committed in Postgres (or refused).
//! The adapters parse, authorize, call one operation and render.
//!
//! - here: [`Service`] — money (post, transfer, status, budgets through the wallet's actor), wallets, users,
//!   reads (history, budgets), readiness and the engine's drain.
//! - [`audit`]: the tamper-evident ledger: verify (the chains and checkpoints, the first broken row named),
//!   checkpoints, the start-up chaining of pre-chain rows.
//! - [`bookings`]: the booking and user events as use cases (debit, refund, user + wallet + default budgets),
//!   each with its inbox row in the effect's commit.
//! - [`budgets`]: budget views, the expiry sweep and the default budgets of new users.
//! - [`batch`]: bulk postings (`POST /transactions/batch`): independent items through the engine
//!   (`Engine::execute_many`), atomic batches in one transaction, exactly once under one Idempotency-Key.
//! - [`holds`]: holds placed, captured and voided through the wallet's actor; hold reads; the expiry sweep.
//! - [`reports`]: reports from the read pool (a wallet's balance at an instant).
//! - [`idempotency`]: `Idempotency-Key`s inside the keyed operations (post, transfer, create wallet, place
//!   and capture a hold): claim, replay, the refusal's problem document recorded as the reply, release,
//!   resolution of unknown outcomes.

pub mod audit;
pub mod batch;
pub mod bookings;
pub mod budgets;
pub mod holds;
pub mod idempotency;
pub mod reports;

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::NaiveDate;
use dashmap::DashMap;
use uuid::Uuid;
use wallet_actors::{
    Amount, Applied, Budget, BudgetStatus, Command, Currency, Direction, Engine, Entry, Origin, PeriodType, Rejection,
    Request, StoreError, WalletState, WalletStatus,
};

use crate::auth::Role;
use crate::crypto::PiiCipher;
use crate::store::{AuditRow, CreateWalletError, HistoryFilter, PgStore, UserRow};
use crate::views::UserView;

/// Most user → wallet ids remembered (the mapping never changes, so entries never go stale).
pub const MAX_CACHED_USER_WALLETS: usize = 1_000_000;

/// What the service is configured with besides its engine and store.
pub struct Settings {
    pub pii: PiiCipher,
    /// Currency of wallets created from `UserCreated`.
    pub default_currency: Currency,
    /// Budgets set up for new users (`DEFAULT_BUDGETS`).
    pub default_budgets: Vec<budgets::DefaultBudget>,
    /// The largest opening balance of a wallet (`MAX_INITIAL_BALANCE`).
    pub max_initial_balance: Amount,
}

/// The use cases. Its engine and store are private: nothing outside reaches money except through it.
pub struct Service {
    engine: Engine,
    store: PgStore,
    settings: Settings,
    /// user id → wallet id; a wallet's owner never changes.
    user_wallets: DashMap<Uuid, Uuid>,
    /// hold id → wallet id (a hold's wallet never changes), so a capture or void finds its wallet's actor
    /// without a second read of the hold; cleared when it reaches `holds::MAX_CACHED_HOLD_WALLETS`.
    hold_wallets: DashMap<Uuid, Uuid>,
    /// Whether the database was seen to hold this binary's newest migration (checked by readiness until
    /// it was; a migrated database does not become unmigrated).
    migrated: AtomicBool,
}

/// Why the service is not ready (fixed words, for `/ready`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// Postgres did not answer the probe (its cause is logged, not told).
    #[error("database unreachable")]
    DatabaseUnreachable,
    /// The database's migration history lacks this binary's newest migration.
    #[error("migrations not applied: the database lacks migration V{0}")]
    MigrationsMissing(i64),
    /// With `AMQP_URL`, the consumer is not attached to the broker.
    #[error("event consumer not attached to RabbitMQ")]
    ConsumerDetached,
}

/// A credit or debit as callers describe it.
#[derive(Debug, Clone)]
pub struct Posting {
    pub direction: Direction,
    pub amount: Amount,
    pub description: Option<String>,
    pub reference_id: Option<String>,
    pub reference_type: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

fn unexpected(what: &str) -> Rejection {
    // The actor answers each command with its own kind of `Applied`; anything else is a programmer error.
    debug_assert!(false, "unexpected reply to {what}");
    Rejection::Unavailable(format!("unexpected reply to {what}"))
}

impl Service {
    pub fn new(engine: Engine, store: PgStore, settings: Settings) -> Self {
        Service {
            engine,
            store,
            settings,
            user_wallets: DashMap::new(),
            hold_wallets: DashMap::new(),
            migrated: AtomicBool::new(false),
        }
    }

    /// The store, for the adapters' infrastructure (outbox relay, upkeep) and for tests; never for money.
    #[doc(hidden)]
    pub fn store(&self) -> &PgStore {
        &self.store
    }

    /// The audit use cases (verify, checkpoints) over the service's pool.
    pub fn auditor(&self) -> audit::Auditor {
        audit::Auditor::new(self.store.pool.clone())
    }

    /// The engine, for tests and metrics.
    #[doc(hidden)]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The PII cipher, for tests that check what is stored.
    #[doc(hidden)]
    pub fn pii(&self) -> &PiiCipher {
        &self.settings.pii
    }

    /// The largest opening balance a new wallet may have (`MAX_INITIAL_BALANCE`).
    pub fn max_initial_balance(&self) -> Amount {
        self.settings.max_initial_balance
    }

    pub fn default_currency(&self) -> Currency {
        self.settings.default_currency
    }

    /// Credits or debits a wallet through its actor.
    pub async fn post(&self, wallet_id: Uuid, p: Posting, origin: Origin) -> Result<Entry, Rejection> {
        let command = Command::Post {
            direction: p.direction,
            amount: p.amount,
            description: p.description,
            reference_id: p.reference_id,
            reference_type: p.reference_type,
            metadata: p.metadata,
        };
        match self.engine.execute(wallet_id, Request { command, origin }).await? {
            Applied::Posted(e) => Ok(e),
            _ => Err(unexpected("a posting")),
        }
    }

    /// Moves money between two wallets; both legs commit in one transaction.
    pub async fn transfer(
        &self,
        from: Uuid,
        to: Uuid,
        amount: Amount,
        description: Option<String>,
        reference_id: Option<String>,
        origin: Origin,
    ) -> Result<(Entry, Entry), Rejection> {
        let command = Command::TransferOut {
            to_wallet_id: to,
            amount,
            description,
            reference_id,
        };
        match self.engine.execute(from, Request { command, origin }).await? {
            Applied::Transferred { out, incoming } => {
                // The destination's actor (if alive here) must not serve its old balance.
                self.engine.invalidate(to);
                Ok((out, incoming))
            }
            _ => Err(unexpected("a transfer")),
        }
    }

    pub async fn set_status(
        &self,
        wallet_id: Uuid,
        status: WalletStatus,
        reason: Option<String>,
        origin: Origin,
    ) -> Result<WalletState, Rejection> {
        let command = Command::SetStatus { status, reason };
        match self.engine.execute(wallet_id, Request { command, origin }).await? {
            Applied::StatusChanged(w) => Ok(w),
            _ => Err(unexpected("a status change")),
        }
    }

    /// Creates a budget on a wallet, through its actor (so its checks see it at once).
    pub async fn create_budget(
        &self,
        wallet_id: Uuid,
        total: Amount,
        period: PeriodType,
        start_date: NaiveDate,
        end_date: NaiveDate,
        origin: Origin,
    ) -> Result<Budget, Rejection> {
        let command = Command::CreateBudget {
            budget_id: Uuid::now_v7(),
            total,
            period,
            start_date,
            end_date,
        };
        match self.engine.execute(wallet_id, Request { command, origin }).await? {
            Applied::BudgetChanged(b) => Ok(b),
            _ => Err(unexpected("a budget creation")),
        }
    }

    /// Changes a budget's total and/or status, through its wallet's actor, with a history row.
    pub async fn update_budget(
        &self,
        wallet_id: Uuid,
        budget_id: Uuid,
        total: Option<Amount>,
        status: Option<BudgetStatus>,
        reason: String,
        origin: Origin,
    ) -> Result<Budget, Rejection> {
        let command = Command::UpdateBudget {
            budget_id,
            total,
            status,
            reason,
        };
        match self.engine.execute(wallet_id, Request { command, origin }).await? {
            Applied::BudgetChanged(b) => Ok(b),
            _ => Err(unexpected("a budget change")),
        }
    }

    /// The wallet's committed state (from its actor).
    pub async fn wallet(&self, wallet_id: Uuid) -> Result<WalletState, Rejection> {
        self.engine.get(wallet_id).await
    }

    /// A wallet's committed state for reads: the cache (shared through Redis when configured, written
    /// through after every commit), else Postgres. Budgets are not included.
    pub async fn wallet_for_read(&self, wallet_id: Uuid) -> Result<Option<WalletState>, StoreError> {
        if let Some(w) = self.store.cache.get(wallet_id).await {
            return Ok(Some(w));
        }
        self.store.wallet_row(wallet_id).await
    }

    /// The wallet id of a user, remembered once found.
    pub async fn wallet_of_user(&self, user_id: Uuid) -> Result<Option<Uuid>, StoreError> {
        if let Some(id) = self.user_wallets.get(&user_id) {
            return Ok(Some(*id));
        }
        let found = self.store.wallet_id_of_user(user_id).await?;
        if let Some(id) = found
            && self.user_wallets.len() < MAX_CACHED_USER_WALLETS
        {
            self.user_wallets.insert(user_id, id);
        }
        Ok(found)
    }

    /// Creates the wallet of a known user (with its opening balance), its `WalletCreated` event and audit
    /// row, and — under an Idempotency-Key — its reply, in one commit.
    pub async fn create_wallet(
        &self,
        user_id: Uuid,
        initial: Amount,
        currency: Currency,
        origin: &Origin,
    ) -> Result<WalletState, CreateWalletError> {
        // The wallet does not exist before the transaction that creates it, so no actor can be asked: the
        // engine's pure planning function judges the opening credit against the wallet about to be inserted.
        let open = |fresh: &WalletState| wallet_actors::command::plan_opening(fresh, initial, origin);
        let w = self.store.create_wallet(user_id, currency, origin, open).await?;
        self.user_wallets.insert(w.user_id, w.wallet_id);
        Ok(w)
    }

    /// Records or updates a user. The e-mail is PII: stored encrypted, with a keyed hash for look-ups.
    pub async fn record_user(
        &self,
        user_id: Uuid,
        email: &str,
        company_id: Uuid,
        role: Role,
        origin: &Origin,
    ) -> Result<UserView, StoreError> {
        let pii = &self.settings.pii;
        let audit = AuditRow {
            actor_id: Some(origin.actor_id),
            actor_role: origin.role.clone(),
            action: "user.upsert".into(),
            target_type: "user",
            target_id: user_id.to_string(),
            outcome: "APPLIED".into(),
            detail: serde_json::json!({"company_id": company_id, "role": role.as_str()}),
        };
        let row = self
            .store
            .upsert_user(
                user_id,
                &pii.encrypt(email),
                &pii.email_lookup_hash(email),
                company_id,
                role.as_str(),
                audit,
            )
            .await?;
        self.user_view(&row)
    }

    /// A stored user, if any.
    pub async fn user(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
        self.store.get_user(user_id).await
    }

    /// Renders a stored user, its e-mail decrypted.
    fn user_view(&self, u: &UserRow) -> Result<UserView, StoreError> {
        let email = self
            .settings
            .pii
            .decrypt(&u.email_encrypted)
            .map_err(|e| StoreError::Corrupt(format!("a stored e-mail cannot be decrypted: {e}")))?;
        Ok(UserView {
            user_id: u.user_id,
            email,
            company_id: u.company_id,
            role: u.role.clone(),
            created_at: crate::views::ts(u.created_at),
            updated_at: crate::views::ts(u.updated_at),
        })
    }

    /// A page of a wallet's history (read pool) and the total count.
    pub async fn history(
        &self,
        wallet_id: Uuid,
        filter: &HistoryFilter,
    ) -> Result<crate::store::HistoryPage, StoreError> {
        self.store.history(wallet_id, filter).await
    }

    /// The wallet a budget belongs to.
    pub async fn wallet_of_budget(&self, budget_id: Uuid) -> Result<Option<Uuid>, StoreError> {
        self.store.wallet_of_budget(budget_id).await
    }

    /// A budget's changes, newest first; `wallet_id` is the budget's wallet.
    pub async fn budget_history(
        &self,
        wallet_id: Uuid,
        budget_id: Uuid,
    ) -> Result<Vec<crate::views::HistoryView>, StoreError> {
        self.store.budget_history(wallet_id, budget_id).await
    }

    /// Readiness of the money path: Postgres answers and holds this binary's newest migration.
    pub async fn readiness(&self) -> Result<(), NotReady> {
        let pool = &self.store.pool;
        let unreachable = |e: StoreError| {
            tracing::warn!(kind = e.kind(), cause = e.cause(), "not ready: database check failed");
            NotReady::DatabaseUnreachable
        };
        crate::store::db::ping(pool).await.map_err(unreachable)?;
        if !self.migrated.load(Ordering::Acquire) {
            if !crate::store::db::migrations_applied(pool).await.map_err(unreachable)? {
                return Err(NotReady::MigrationsMissing(crate::store::db::newest_migration()));
            }
            self.migrated.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// While a Postgres breaker (the primary's or the read pool's) refuses connections, how long until it
    /// tries the server again — the longest of the open ones; `None` when both are closed. What a 503's
    /// `Retry-After` says, so that clients back off as long as the breaker does.
    pub fn database_retry_in(&self) -> Option<std::time::Duration> {
        self.store.pool.retry_in().max(self.store.read.retry_in())
    }

    /// Sets the engine's and the pool's gauges (before a `/metrics` render).
    pub fn record_gauges(&self) {
        metrics::gauge!("wallet_live_actors").set(self.engine.live_actors() as f64);
        metrics::gauge!("wallet_queued_commands").set(self.engine.queued_commands() as f64);
        let status = self.store.pool.status();
        metrics::gauge!("db_pool_in_use").set((status.size - status.available) as f64);
        metrics::gauge!("db_pool_size").set(status.max_size as f64);
    }

    /// Drains the engine (see [`Engine::shutdown`]).
    pub async fn shutdown(&self, deadline: std::time::Duration) -> bool {
        self.engine.shutdown(deadline).await
    }
}
