//! Configuration from the environment, as the contract lists it, validated once at start.
//!
//! Layering: built-in defaults, then environment variables (env wins). Tests build a [`Config`] in code
//! (see `tests/api/helpers/app.rs`), so nothing here reads the environment except [`Config::from_env`].

use std::time::Duration;

use wallet_actors::{Amount, Currency};

use crate::auth::{AuthConfig, KeySource};

/// Default HTTP port (the design's).
pub const DEFAULT_PORT: u16 = 3003;
/// Default connections per instance (design 8.2).
pub const DEFAULT_POOL_SIZE: usize = 20;
/// Largest pool we accept from configuration; more would exhaust a typical Postgres.
pub const MAX_POOL_SIZE: usize = 500;
/// Default idle time after which a wallet actor stops.
pub const DEFAULT_ACTOR_IDLE: Duration = Duration::from_secs(60);

/// Default `MAX_INITIAL_BALANCE`: the largest opening balance `POST /wallets` accepts.
pub const DEFAULT_MAX_INITIAL_BALANCE: Amount = Amount::from_whole(1_000_000);

/// Why the configuration was refused at start. Only names and reasons: a value is quoted only where it is
/// no secret (never `JWT_SECRET`, `PII_ENCRYPTION_KEY` or a database or broker URL with its password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set; `hint` says what provides it.
    #[error("{var} is required ({hint})")]
    Missing { var: &'static str, hint: &'static str },
    /// A variable is set but unusable (or does not fit with another one); `reason` says what it must be.
    #[error("{var} {reason}")]
    Invalid { var: &'static str, reason: String },
    /// `DEFAULT_BUDGETS` does not parse (its text names the variable and the item).
    #[error(transparent)]
    DefaultBudgets(#[from] crate::service::budgets::DefaultBudgetsError),
}

impl ConfigError {
    fn invalid(var: &'static str, reason: impl std::fmt::Display) -> Self {
        ConfigError::Invalid {
            var,
            reason: reason.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// 0 picks a free port; the bound one is logged.
    pub port: u16,
    pub database_url: String,
    pub database_read_url: Option<String>,
    pub pool_size: usize,
    pub redis_url: Option<String>,
    pub amqp_url: Option<String>,
    pub auth: AuthConfig,
    /// Base64 of 32 bytes; `None` means the development key (with a warning).
    pub pii_key_b64: Option<String>,
    pub log_format: LogFormat,
    pub actor_idle_timeout: Duration,
    /// Live wallet actors beyond which idle ones stop after 1 s (`ACTOR_MAX_LIVE`): the memory bound.
    pub actor_max_live: usize,
    /// Currency of wallets created from `UserCreated` events.
    pub default_currency: Currency,
    /// `MAX_INITIAL_BALANCE`: the largest opening balance of a wallet created over HTTP (default
    /// [`DEFAULT_MAX_INITIAL_BALANCE`]); more is refused with 400. The opening balance is a ledger entry.
    pub max_initial_balance: Amount,
    /// `DEFAULT_BUDGETS`: budgets set up for new users by role (e.g. `user:MONTHLY:1000.00`); none by default.
    pub default_budgets: Vec<crate::service::budgets::DefaultBudget>,
    /// `BUDGET_ALERT_THRESHOLDS`: percentages announced once each with `BudgetExceeded` (default `80,100`).
    pub alert_thresholds: Vec<u8>,
    /// `HOLD_OVERCAPTURE_PERCENT`: how far past its amount a hold may be captured, in percent of the amount
    /// (a hotel's incidentals; default 0, at most `wallet_actors::command::hold::MAX_OVERCAPTURE_PERCENT`).
    pub hold_overcapture_percent: u8,
    /// `SUSPICIOUS_DEBITS_PER_MINUTE`, `SUSPICIOUS_REFUSED_RUN`, `SUSPICIOUS_AMOUNT_FACTOR`,
    /// `SUSPICIOUS_DISTINCT_CALLERS` (0 turns a rule's threshold to its default), `SUSPICIOUS_FREEZE`
    /// (`true`: a hit freezes the wallet), `SUSPICIOUS_MONITORING` (`false`: no rule is evaluated).
    pub monitor: wallet_actors::monitor::MonitorLimits,
    /// `AUDIT_CHAIN`: `on` (default) or `off`. FOR MEASUREMENT ONLY (what the hash chain costs, issue 13):
    /// off, the actors write their batches' rows unchained and leave the heads alone, and the start does
    /// not chain older rows, so a database written with it off does not verify. Never off in production.
    pub audit_chain: bool,
    /// `RATE_LIMIT_PER_SECOND`: requests per second allowed to one caller (JWT `sub`), with bursts of
    /// [`RATE_LIMIT_BURST_FACTOR`] times that; beyond it 429 `RATE_LIMITED`. Unset or 0: no limit.
    pub rate_limit_per_second: Option<std::num::NonZeroU32>,
    /// `AMQP_PREFETCH`: deliveries the booking consumer holds unacknowledged and processes at once
    /// (default [`crate::events::PREFETCH`], at most [`crate::events::MAX_PREFETCH`]). By Little's law the
    /// consumer's throughput is at most this divided by one booking's commit latency.
    pub amqp_prefetch: u16,
    /// `SPEND_FOLD_INTERVAL_SECS`: how often the spend aggregates are folded (default
    /// [`crate::service::reports::SPEND_FOLD_EVERY`], at most [`MAX_TIMEOUT`]): shorter keeps the reports'
    /// unfolded tail short, longer folds each busy wallet's postings of those seconds as one row.
    pub spend_fold_every: Duration,
    /// `GROUP_COMMITTERS`: committer tasks writing groups of wallet batches in parallel, each on its own
    /// pooled connection (default [`crate::store::GROUP_COMMITTERS`], 1..=[`crate::store::MAX_GROUP_COMMITTERS`]).
    /// More split waiting batches into more, smaller commits in flight at once.
    pub group_committers: usize,
    /// `BOOKING_SHARDS`: shard queues behind the consistent-hash booking exchange, 0..=
    /// [`crate::events::MAX_BOOKING_SHARDS`] (0, the default: none; see README "Scaling out").
    pub booking_shards: u16,
    /// How long each step of a request may take; together they bound every request and the drain.
    pub timeouts: Timeouts,
    /// `METRICS_PORT`, `TLS_CERT_FILE`, `TLS_KEY_FILE`: the metrics port and HTTPS.
    pub transport: Transport,
}

/// How the service listens besides `PORT` (see [`parse_transport`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transport {
    /// `METRICS_PORT`: `/metrics` is served on this port only (plain HTTP; `0` picks a free one) and the
    /// API port answers 404 for it, so exposing the API never exposes the metrics. Unset: `/metrics` on
    /// the API port.
    pub metrics_port: Option<u16>,
    /// `TLS_CERT_FILE` + `TLS_KEY_FILE`: the API port speaks HTTPS only, TLS 1.3 only ([`crate::tls`]).
    pub tls: Option<TlsFiles>,
}

/// PEM files of the API port's certificate chain and private key (read at start by [`crate::tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Reads `METRICS_PORT` (a port other than `port`, the API's, unless either is 0) and `TLS_CERT_FILE` /
/// `TLS_KEY_FILE` (both or neither: one alone would silently serve plain HTTP where HTTPS was meant).
pub fn parse_transport(var: &dyn Fn(&str) -> Option<String>, port: u16) -> Result<Transport, ConfigError> {
    let metrics_port = match var("METRICS_PORT") {
        None => None,
        Some(s) => {
            let p = s
                .trim()
                .parse::<u16>()
                .map_err(|_| ConfigError::invalid("METRICS_PORT", format!("must be a port number, got {s:?}")))?;
            if p != 0 && p == port {
                return Err(ConfigError::invalid(
                    "METRICS_PORT",
                    format!("must differ from PORT ({port}): metrics get a port of their own"),
                ));
            }
            Some(p)
        }
    };
    let tls = match (var("TLS_CERT_FILE"), var("TLS_KEY_FILE")) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                "TLS_KEY_FILE",
                "must be set when TLS_CERT_FILE is",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                "TLS_CERT_FILE",
                "must be set when TLS_KEY_FILE is",
            ));
        }
    };
    Ok(Transport { metrics_port, tls })
}

/// Default [`Timeouts::shutdown_drain`]: below Kubernetes' default `terminationGracePeriodSeconds` (30).
pub const DEFAULT_SHUTDOWN_DRAIN: Duration = Duration::from_secs(25);
/// Longest any of the timeouts may be set to.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// The bounds that make every answer true in time (README "How money stays right"): a command waits at
/// most `reply` in its wallet's queue, then is dropped unplanned (503, not applied) or is already in a
/// commit, which Postgres ends within `db_statement` (and `db_lock` for a row lock); the caller waits for
/// that commit at most [`wallet_actors::supervisor::COMMIT_WAIT`] more. The drain at SIGTERM outlasts all
/// of it, so every accepted command is answered before the process exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// `REPLY_TIMEOUT_MS`: queue wait before a command is dropped unplanned.
    pub reply: Duration,
    /// `DB_STATEMENT_TIMEOUT_MS`: Postgres `statement_timeout` of the service's connections.
    pub db_statement: Duration,
    /// `DB_LOCK_TIMEOUT_MS`: Postgres `lock_timeout` of the service's connections.
    pub db_lock: Duration,
    /// `SHUTDOWN_DRAIN_SECS`: how long SIGTERM waits for accepted work before the process exits.
    pub shutdown_drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            reply: wallet_actors::supervisor::REPLY_TIMEOUT,
            db_statement: crate::store::db::DEFAULT_DB_STATEMENT_TIMEOUT,
            db_lock: crate::store::db::DEFAULT_DB_LOCK_TIMEOUT,
            shutdown_drain: DEFAULT_SHUTDOWN_DRAIN,
        }
    }
}

impl Timeouts {
    /// The bounds a database pool applies to every statement.
    pub fn statements(&self) -> crate::store::db::StatementBounds {
        crate::store::db::StatementBounds {
            db_statement: self.db_statement,
            db_lock: self.db_lock,
            ..Default::default()
        }
    }

    /// Checks that the bounds nest: a lock wait ends within a statement, two statements (a group and its
    /// fallback) and a pool wait within the commit wait, and queue plus commit wait within the drain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let commit_wait = wallet_actors::supervisor::COMMIT_WAIT;
        if self.db_lock > self.db_statement {
            return Err(ConfigError::invalid(
                "DB_LOCK_TIMEOUT_MS",
                "must not exceed DB_STATEMENT_TIMEOUT_MS",
            ));
        }
        if self.db_statement * 2 + crate::store::db::POOL_WAIT >= commit_wait {
            return Err(ConfigError::invalid(
                "DB_STATEMENT_TIMEOUT_MS",
                format!(
                    "must be below {} ms (two statements and a pool wait within the {} s commit wait)",
                    (commit_wait - crate::store::db::POOL_WAIT).as_millis() / 2,
                    commit_wait.as_secs()
                ),
            ));
        }
        if self.reply + commit_wait >= self.shutdown_drain {
            return Err(ConfigError::invalid(
                "SHUTDOWN_DRAIN_SECS",
                format!(
                    "must exceed REPLY_TIMEOUT_MS plus the {} s commit wait",
                    commit_wait.as_secs()
                ),
            ));
        }
        Ok(())
    }
}

/// A duration from an environment variable in `unit`s, positive and at most [`MAX_TIMEOUT`].
fn duration_var(
    name: &'static str,
    value: Option<String>,
    unit: Duration,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    v.trim()
        .parse::<u32>()
        .ok()
        .map(|n| unit * n)
        .filter(|d| !d.is_zero() && *d <= MAX_TIMEOUT)
        .ok_or_else(|| {
            ConfigError::invalid(
                name,
                format!(
                    "must be a positive whole number of at most {} s, got {v:?}",
                    MAX_TIMEOUT.as_secs()
                ),
            )
        })
}

/// A caller may burst to this many seconds' worth of its rate limit.
pub const RATE_LIMIT_BURST_FACTOR: u32 = 2;

/// Parses `BUDGET_ALERT_THRESHOLDS` (`80,100`): distinct percentages 1..=100, sorted.
pub fn parse_thresholds(spec: &str) -> Result<Vec<u8>, ConfigError> {
    let mut out = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u8>().ok().filter(|p| (1..=100).contains(p)).ok_or_else(|| {
                ConfigError::invalid(
                    "BUDGET_ALERT_THRESHOLDS",
                    format!("has {s:?}, which is not a percentage 1..=100"),
                )
            })
        })
        .collect::<Result<Vec<u8>, ConfigError>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Parses `MAX_INITIAL_BALANCE`: an amount (at most 2 decimals, at most 9999999999999.99); 0 allows no
/// opening balance at all.
pub fn parse_max_initial_balance(spec: &str) -> Result<Amount, ConfigError> {
    Amount::parse(spec).map_err(|e| {
        ConfigError::invalid(
            "MAX_INITIAL_BALANCE",
            format!("must be an amount of at most 2 decimals: {spec:?} {e}"),
        )
    })
}

/// An opening balance above `MAX_INITIAL_BALANCE` (its text is the message for the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("may be at most {max} (MAX_INITIAL_BALANCE)")]
pub struct OpeningOverMax {
    pub max: Amount,
}

/// The opening balance of a new wallet (none asked: 0.00), if it is within `max` (`MAX_INITIAL_BALANCE`).
pub fn opening_balance(asked: Option<Amount>, max: Amount) -> Result<Amount, OpeningOverMax> {
    let opening = asked.unwrap_or(Amount::ZERO);
    if opening > max {
        return Err(OpeningOverMax { max });
    }
    Ok(opening)
}

/// Parses `AMQP_PREFETCH`: a whole number 1..=[`crate::events::MAX_PREFETCH`].
pub fn parse_prefetch(spec: &str) -> Result<u16, ConfigError> {
    spec.trim()
        .parse::<u16>()
        .ok()
        .filter(|n| (1..=crate::events::MAX_PREFETCH).contains(n))
        .ok_or_else(|| {
            ConfigError::invalid(
                "AMQP_PREFETCH",
                format!("must be 1..={}, got {spec:?}", crate::events::MAX_PREFETCH),
            )
        })
}

/// Parses `GROUP_COMMITTERS`: a whole number 1..=[`crate::store::MAX_GROUP_COMMITTERS`].
pub fn parse_group_committers(spec: &str) -> Result<usize, ConfigError> {
    let max = crate::store::MAX_GROUP_COMMITTERS;
    spec.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ConfigError::invalid("GROUP_COMMITTERS", format!("must be 1..={max}, got {spec:?}")))
}

/// Parses `BOOKING_SHARDS`: a whole number 0..=[`crate::events::MAX_BOOKING_SHARDS`].
pub fn parse_booking_shards(spec: &str) -> Result<u16, ConfigError> {
    spec.trim()
        .parse::<u16>()
        .ok()
        .filter(|n| *n <= crate::events::MAX_BOOKING_SHARDS)
        .ok_or_else(|| {
            ConfigError::invalid(
                "BOOKING_SHARDS",
                format!("must be 0..={}, got {spec:?}", crate::events::MAX_BOOKING_SHARDS),
            )
        })
}

impl Config {
    /// Reads the environment. `DATABASE_URL` and a JWT key are required (the README's run command sets
    /// both for development).
    pub fn from_env() -> Result<Config, ConfigError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let port = match var("PORT") {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| ConfigError::invalid("PORT", format!("must be a port number, got {p:?}")))?,
            None => DEFAULT_PORT,
        };
        let database_url = var("DATABASE_URL").ok_or(ConfigError::Missing {
            var: "DATABASE_URL",
            hint: "the README's run command starts a local cluster and sets it",
        })?;
        let pool_size = match var("DATABASE_POOL_SIZE") {
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_POOL_SIZE).contains(n))
                .ok_or_else(|| {
                    ConfigError::invalid("DATABASE_POOL_SIZE", format!("must be 1..={MAX_POOL_SIZE}, got {s:?}"))
                })?,
            None => DEFAULT_POOL_SIZE,
        };
        let issuer = var("JWT_ISSUER").unwrap_or_else(|| "user-management".into());
        let audience = var("JWT_AUDIENCE").unwrap_or_else(|| "wallet-service".into());
        let key = match (var("JWT_PUBLIC_KEY_FILE"), var("JWT_SECRET")) {
            (Some(path), _) => {
                let pem = std::fs::read(&path)
                    .map_err(|e| ConfigError::invalid("JWT_PUBLIC_KEY_FILE", format!("{path}: {e}")))?;
                let alg = match var("JWT_ALGORITHM").as_deref() {
                    None | Some("RS256") => jsonwebtoken::Algorithm::RS256,
                    Some("ES256") => jsonwebtoken::Algorithm::ES256,
                    Some(other) => {
                        return Err(ConfigError::invalid(
                            "JWT_ALGORITHM",
                            format!("must be RS256 or ES256, got {other:?}"),
                        ));
                    }
                };
                KeySource::PublicKeyPem { alg, pem }
            }
            (None, Some(secret)) => KeySource::Hs256Secret(secret.into_bytes()),
            (None, None) => {
                return Err(ConfigError::Missing {
                    var: "JWT_SECRET",
                    hint: "HS256; or JWT_PUBLIC_KEY_FILE for RS256/ES256",
                });
            }
        };
        let log_format = match var("LOG_FORMAT").as_deref() {
            Some("json") => LogFormat::Json,
            None | Some("text") => LogFormat::Text,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "LOG_FORMAT",
                    format!("must be json or text, got {other:?}"),
                ));
            }
        };
        let actor_idle_timeout = match var("ACTOR_IDLE_SECS") {
            Some(s) => Duration::from_secs(s.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError::invalid("ACTOR_IDLE_SECS", format!("must be a positive integer, got {s:?}"))
            })?),
            None => DEFAULT_ACTOR_IDLE,
        };
        let actor_max_live = match var("ACTOR_MAX_LIVE") {
            Some(s) => parse_max_live(&s)?,
            None => wallet_actors::supervisor::MAX_LIVE_ACTORS,
        };
        let default_currency = match var("DEFAULT_CURRENCY") {
            Some(c) => c
                .parse::<Currency>()
                .map_err(|e| ConfigError::invalid("DEFAULT_CURRENCY", e))?,
            None => Currency::Usd,
        };
        let max_initial_balance = match var("MAX_INITIAL_BALANCE") {
            Some(s) => parse_max_initial_balance(&s)?,
            None => DEFAULT_MAX_INITIAL_BALANCE,
        };
        let default_budgets = crate::service::budgets::parse_defaults(&var("DEFAULT_BUDGETS").unwrap_or_default())?;
        let alert_thresholds = match var("BUDGET_ALERT_THRESHOLDS") {
            Some(s) => parse_thresholds(&s)?,
            None => wallet_actors::budget::DEFAULT_ALERT_THRESHOLDS.to_vec(),
        };
        let hold_overcapture_percent = match var("HOLD_OVERCAPTURE_PERCENT") {
            Some(s) => parse_overcapture(&s)?,
            None => 0,
        };
        let monitor = parse_monitor(&var)?;
        let audit_chain = match var("AUDIT_CHAIN").as_deref().map(str::trim) {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "AUDIT_CHAIN",
                    format!("must be on or off (off only to measure the chain's cost), got {other:?}"),
                ));
            }
        };
        let rate_limit_per_second = match var("RATE_LIMIT_PER_SECOND") {
            Some(s) => std::num::NonZeroU32::new(s.parse::<u32>().map_err(|_| {
                ConfigError::invalid("RATE_LIMIT_PER_SECOND", format!("must be a whole number, got {s:?}"))
            })?),
            None => None,
        };
        let amqp_prefetch = match var("AMQP_PREFETCH") {
            Some(s) => parse_prefetch(&s)?,
            None => crate::events::PREFETCH,
        };
        let booking_shards = match var("BOOKING_SHARDS") {
            Some(s) => parse_booking_shards(&s)?,
            None => 0,
        };
        let spend_fold_every = duration_var(
            "SPEND_FOLD_INTERVAL_SECS",
            var("SPEND_FOLD_INTERVAL_SECS"),
            Duration::from_secs(1),
            crate::service::reports::SPEND_FOLD_EVERY,
        )?;
        let group_committers = match var("GROUP_COMMITTERS") {
            Some(s) => parse_group_committers(&s)?,
            None => crate::store::GROUP_COMMITTERS,
        };
        let ms = Duration::from_millis(1);
        let defaults = Timeouts::default();
        let timeouts = Timeouts {
            reply: duration_var("REPLY_TIMEOUT_MS", var("REPLY_TIMEOUT_MS"), ms, defaults.reply)?,
            db_statement: duration_var(
                "DB_STATEMENT_TIMEOUT_MS",
                var("DB_STATEMENT_TIMEOUT_MS"),
                ms,
                defaults.db_statement,
            )?,
            db_lock: duration_var("DB_LOCK_TIMEOUT_MS", var("DB_LOCK_TIMEOUT_MS"), ms, defaults.db_lock)?,
            shutdown_drain: duration_var(
                "SHUTDOWN_DRAIN_SECS",
                var("SHUTDOWN_DRAIN_SECS"),
                Duration::from_secs(1),
                defaults.shutdown_drain,
            )?,
        };
        timeouts.validate()?;
        let transport = parse_transport(&var, port)?;
        Ok(Config {
            port,
            database_url,
            database_read_url: var("DATABASE_READ_URL"),
            pool_size,
            redis_url: var("REDIS_URL"),
            amqp_url: var("AMQP_URL"),
            auth: AuthConfig { key, issuer, audience },
            pii_key_b64: var("PII_ENCRYPTION_KEY"),
            log_format,
            actor_idle_timeout,
            actor_max_live,
            default_currency,
            max_initial_balance,
            default_budgets,
            alert_thresholds,
            hold_overcapture_percent,
            monitor,
            audit_chain,
            rate_limit_per_second,
            amqp_prefetch,
            booking_shards,
            spend_fold_every,
            group_committers,
            timeouts,
            transport,
        })
    }
}

/// The suspicious-activity rules from `SUSPICIOUS_*` (each threshold a whole number ≥ 1; flags `true` or
/// `false`), defaults from `wallet_actors::monitor`.
fn parse_monitor(var: &dyn Fn(&str) -> Option<String>) -> Result<wallet_actors::monitor::MonitorLimits, ConfigError> {
    let mut m = wallet_actors::monitor::MonitorLimits::default();
    let number = |name: &'static str, default: u32| -> Result<u32, ConfigError> {
        match var(name) {
            None => Ok(default),
            Some(s) => s
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=wallet_actors::monitor::MAX_VELOCITY).contains(n))
                .ok_or_else(|| {
                    ConfigError::invalid(
                        name,
                        format!(
                            "must be a whole number 1..={}, got {s:?}",
                            wallet_actors::monitor::MAX_VELOCITY
                        ),
                    )
                }),
        }
    };
    let flag = |name: &'static str, default: bool| -> Result<bool, ConfigError> {
        match var(name).as_deref().map(str::trim) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(ConfigError::invalid(
                name,
                format!("must be true or false, got {other:?}"),
            )),
        }
    };
    m.debits_per_minute = number("SUSPICIOUS_DEBITS_PER_MINUTE", m.debits_per_minute)?;
    m.refused_run = number("SUSPICIOUS_REFUSED_RUN", m.refused_run)?;
    m.amount_factor = number("SUSPICIOUS_AMOUNT_FACTOR", m.amount_factor)?;
    m.distinct_callers = number("SUSPICIOUS_DISTINCT_CALLERS", m.distinct_callers)?;
    m.freeze = flag("SUSPICIOUS_FREEZE", m.freeze)?;
    m.enabled = flag("SUSPICIOUS_MONITORING", m.enabled)?;
    Ok(m)
}

/// Parses `HOLD_OVERCAPTURE_PERCENT`: a whole percentage 0..=`MAX_OVERCAPTURE_PERCENT`.
fn parse_overcapture(s: &str) -> Result<u8, ConfigError> {
    let max = wallet_actors::command::hold::MAX_OVERCAPTURE_PERCENT;
    s.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
        ConfigError::invalid(
            "HOLD_OVERCAPTURE_PERCENT",
            format!("must be a whole percentage 0..={max}, got {s:?}"),
        )
    })
}

/// Most live actors an operator may allow (each costs ~11 KB; this is ~11 GB).
pub const MAX_ACTOR_MAX_LIVE: usize = 1_000_000;

fn parse_max_live(s: &str) -> Result<usize, ConfigError> {
    s.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_ACTOR_MAX_LIVE).contains(n))
        .ok_or_else(|| {
            ConfigError::invalid(
                "ACTOR_MAX_LIVE",
                format!("must be a whole number from 1 to {MAX_ACTOR_MAX_LIVE}, got {s:?}"),
            )
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_timeouts_nest() {
        assert_eq!(super::Timeouts::default().validate(), Ok(()));
    }

    #[test]
    fn timeouts_that_do_not_nest_are_refused_with_their_names() {
        use std::time::Duration;
        let lock_over_statement = super::Timeouts {
            db_lock: Duration::from_secs(5),
            ..Default::default()
        };
        assert!(
            lock_over_statement
                .validate()
                .unwrap_err()
                .to_string()
                .contains("DB_LOCK_TIMEOUT_MS")
        );
        let drain_too_short = super::Timeouts {
            shutdown_drain: Duration::from_secs(10),
            ..Default::default()
        };
        assert!(
            drain_too_short
                .validate()
                .unwrap_err()
                .to_string()
                .contains("SHUTDOWN_DRAIN_SECS")
        );
        let statement_too_long = super::Timeouts {
            db_statement: Duration::from_secs(9),
            db_lock: Duration::from_secs(1),
            ..Default::default()
        };
        assert!(
            statement_too_long
                .validate()
                .unwrap_err()
                .to_string()
                .contains("DB_STATEMENT_TIMEOUT_MS")
        );
    }

    #[test]
    fn a_duration_variable_must_be_a_positive_bounded_whole_number() {
        use std::time::Duration;
        let ms = Duration::from_millis(1);
        let d = Duration::from_secs(1);
        assert_eq!(super::duration_var("X", None, ms, d), Ok(d));
        assert_eq!(super::duration_var("X", Some("250".into()), ms, d), Ok(ms * 250));
        for bad in ["0", "-1", "1.5", "abc", "600001"] {
            assert!(
                super::duration_var("X", Some(bad.into()), ms, d)
                    .unwrap_err()
                    .to_string()
                    .contains('X'),
                "{bad}"
            );
        }
    }

    use super::*;

    #[test]
    fn max_live_actors_is_a_bounded_whole_number() {
        assert_eq!(parse_max_live("25000"), Ok(25_000));
        assert_eq!(parse_max_live(" 1 "), Ok(1));
        for bad in ["0", "-5", "many", "1000001", "2.5"] {
            let err = parse_max_live(bad).expect_err(bad).to_string();
            assert!(err.contains("ACTOR_MAX_LIVE"), "{err}");
        }
    }

    #[test]
    fn max_initial_balance_is_an_amount_and_bounds_the_opening_balance() {
        assert_eq!(DEFAULT_MAX_INITIAL_BALANCE.to_string(), "1000000.00");
        assert_eq!(
            parse_max_initial_balance(" 250.50 ").map(|a| a.to_string()),
            Ok("250.50".into())
        );
        assert_eq!(parse_max_initial_balance("0"), Ok(Amount::ZERO));
        for bad in ["-1", "1.001", "lots", "10000000000000", ""] {
            let err = parse_max_initial_balance(bad).expect_err(bad).to_string();
            assert!(err.contains("MAX_INITIAL_BALANCE"), "{err}");
        }
        let max = DEFAULT_MAX_INITIAL_BALANCE;
        assert_eq!(opening_balance(None, max), Ok(Amount::ZERO));
        assert_eq!(opening_balance(Some(max), max), Ok(max));
        let over = Amount::parse("1000000.01").unwrap();
        assert!(
            opening_balance(Some(over), max)
                .unwrap_err()
                .to_string()
                .contains("1000000.00")
        );
    }

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(name, _)| *name == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn without_transport_variables_metrics_stay_on_the_api_port_and_http_is_plain() {
        assert_eq!(parse_transport(&vars(&[]), 3003), Ok(Transport::default()));
    }

    #[test]
    fn metrics_port_must_be_a_port_other_than_the_api_port() {
        let t = parse_transport(&vars(&[("METRICS_PORT", "9090")]), 3003);
        assert_eq!(t.map(|t| t.metrics_port), Ok(Some(9090)));
        for bad in [
            &[("METRICS_PORT", "3003")][..],
            &[("METRICS_PORT", "lots")],
            &[("METRICS_PORT", "70000")],
        ] {
            let bad: &'static [(&str, &str)] = bad;
            let err = parse_transport(&vars(bad), 3003).unwrap_err().to_string();
            assert!(err.contains("METRICS_PORT"), "{err}");
        }
        // Port 0 on both sides means two free ports (tests), not the same one.
        assert_eq!(
            parse_transport(&vars(&[("METRICS_PORT", "0")]), 0).map(|t| t.metrics_port),
            Ok(Some(0))
        );
    }

    #[test]
    fn a_tls_certificate_without_its_key_or_a_key_without_its_certificate_is_refused() {
        let both = parse_transport(&vars(&[("TLS_CERT_FILE", "/c.pem"), ("TLS_KEY_FILE", "/k.pem")]), 3003);
        assert_eq!(
            both.map(|t| t.tls),
            Ok(Some(TlsFiles {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            }))
        );
        let err = parse_transport(&vars(&[("TLS_CERT_FILE", "/c.pem")]), 3003).unwrap_err();
        assert!(err.to_string().contains("TLS_KEY_FILE"), "{err}");
        let err = parse_transport(&vars(&[("TLS_KEY_FILE", "/k.pem")]), 3003).unwrap_err();
        assert!(err.to_string().contains("TLS_CERT_FILE"), "{err}");
    }

    #[test]
    fn prefetch_accepts_whole_numbers_within_its_bound() {
        assert_eq!(parse_prefetch("1"), Ok(1));
        assert_eq!(parse_prefetch(" 512 "), Ok(512));
        assert_eq!(parse_prefetch("4096"), Ok(crate::events::MAX_PREFETCH));
    }

    #[test]
    fn prefetch_outside_its_bound_or_not_a_number_is_refused_with_its_name() {
        for bad in ["0", "4097", "-1", "lots", "1.5", "70000"] {
            let err = parse_prefetch(bad).expect_err(bad).to_string();
            assert!(err.contains("AMQP_PREFETCH"), "{err}");
        }
    }

    #[test]
    fn group_committers_are_one_to_their_bound_and_anything_else_is_refused_with_its_name() {
        assert_eq!(parse_group_committers("1"), Ok(1));
        assert_eq!(parse_group_committers(" 4 "), Ok(4));
        assert_eq!(parse_group_committers("8"), Ok(crate::store::MAX_GROUP_COMMITTERS));
        for bad in ["0", "9", "-1", "two", "2.5"] {
            let err = parse_group_committers(bad).expect_err(bad).to_string();
            assert!(err.contains("GROUP_COMMITTERS"), "{err}");
        }
    }

    #[test]
    fn booking_shards_are_zero_to_their_bound_and_anything_else_is_refused_with_its_name() {
        assert_eq!(parse_booking_shards("0"), Ok(0));
        assert_eq!(parse_booking_shards(" 4 "), Ok(4));
        assert_eq!(parse_booking_shards("64"), Ok(crate::events::MAX_BOOKING_SHARDS));
        for bad in ["65", "-1", "some", "2.5"] {
            let err = parse_booking_shards(bad).expect_err(bad).to_string();
            assert!(err.contains("BOOKING_SHARDS"), "{err}");
        }
    }
}
