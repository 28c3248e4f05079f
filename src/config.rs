//! Configuration from the environment, as the contract lists it, validated once at start.
//!
//! Layering: built-in defaults, then environment variables (env wins). Tests build a [`Config`] in code
//! (see `tests/common`), so nothing here reads the environment except [`Config::from_env`].

use std::time::Duration;

use wallet_actors::Currency;

use crate::auth::{AuthConfig, KeySource};

/// Default HTTP port (the design's).
pub const DEFAULT_PORT: u16 = 3003;
/// Default connections per instance (design 8.2).
pub const DEFAULT_POOL_SIZE: usize = 20;
/// Largest pool we accept from configuration; more would exhaust a typical Postgres.
pub const MAX_POOL_SIZE: usize = 500;
/// Default idle time after which a wallet actor stops.
pub const DEFAULT_ACTOR_IDLE: Duration = Duration::from_secs(60);

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
    /// `DEFAULT_BUDGETS`: budgets set up for new users by role (e.g. `user:MONTHLY:1000.00`); none by default.
    pub default_budgets: Vec<crate::budgets::DefaultBudget>,
    /// `BUDGET_ALERT_THRESHOLDS`: percentages announced once each with `BudgetExceeded` (default `80,100`).
    pub alert_thresholds: Vec<u8>,
    /// `RATE_LIMIT_PER_SECOND`: requests per second allowed to one caller (JWT `sub`), with bursts of
    /// [`RATE_LIMIT_BURST_FACTOR`] times that; beyond it 429 `RATE_LIMITED`. Unset or 0: no limit.
    pub rate_limit_per_second: Option<std::num::NonZeroU32>,
    /// `AMQP_PREFETCH`: deliveries the booking consumer holds unacknowledged and processes at once
    /// (default [`crate::events::PREFETCH`], at most [`crate::events::MAX_PREFETCH`]). By Little's law the
    /// consumer's throughput is at most this divided by one booking's commit latency.
    pub amqp_prefetch: u16,
}

/// A caller may burst to this many seconds' worth of its rate limit.
pub const RATE_LIMIT_BURST_FACTOR: u32 = 2;

/// Parses `BUDGET_ALERT_THRESHOLDS` (`80,100`): distinct percentages 1..=100, sorted.
pub fn parse_thresholds(spec: &str) -> Result<Vec<u8>, String> {
    let mut out = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u8>()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .ok_or(format!("BUDGET_ALERT_THRESHOLDS: {s:?} is not a percentage 1..=100"))
        })
        .collect::<Result<Vec<u8>, String>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Parses `AMQP_PREFETCH`: a whole number 1..=[`crate::events::MAX_PREFETCH`].
pub fn parse_prefetch(spec: &str) -> Result<u16, String> {
    spec.trim()
        .parse::<u16>()
        .ok()
        .filter(|n| (1..=crate::events::MAX_PREFETCH).contains(n))
        .ok_or(format!(
            "AMQP_PREFETCH must be 1..={}, got {spec:?}",
            crate::events::MAX_PREFETCH
        ))
}

impl Config {
    /// Reads the environment. `DATABASE_URL` and a JWT key are required (the README's run command sets
    /// both for development).
    pub fn from_env() -> Result<Config, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let port = match var("PORT") {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("PORT must be a port number, got {p:?}"))?,
            None => DEFAULT_PORT,
        };
        let database_url = var("DATABASE_URL")
            .ok_or("DATABASE_URL is required (the README's run command starts a local cluster and sets it)")?;
        let pool_size = match var("DATABASE_POOL_SIZE") {
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_POOL_SIZE).contains(n))
                .ok_or(format!("DATABASE_POOL_SIZE must be 1..={MAX_POOL_SIZE}, got {s:?}"))?,
            None => DEFAULT_POOL_SIZE,
        };
        let issuer = var("JWT_ISSUER").unwrap_or_else(|| "user-management".into());
        let audience = var("JWT_AUDIENCE").unwrap_or_else(|| "wallet-service".into());
        let key = match (var("JWT_PUBLIC_KEY_FILE"), var("JWT_SECRET")) {
            (Some(path), _) => {
                let pem = std::fs::read(&path).map_err(|e| format!("JWT_PUBLIC_KEY_FILE {path}: {e}"))?;
                let alg = match var("JWT_ALGORITHM").as_deref() {
                    None | Some("RS256") => jsonwebtoken::Algorithm::RS256,
                    Some("ES256") => jsonwebtoken::Algorithm::ES256,
                    Some(other) => return Err(format!("JWT_ALGORITHM must be RS256 or ES256, got {other:?}")),
                };
                KeySource::PublicKeyPem { alg, pem }
            }
            (None, Some(secret)) => KeySource::Hs256Secret(secret.into_bytes()),
            (None, None) => return Err("JWT_SECRET (HS256) or JWT_PUBLIC_KEY_FILE (RS256/ES256) is required".into()),
        };
        let log_format = match var("LOG_FORMAT").as_deref() {
            Some("json") => LogFormat::Json,
            None | Some("text") => LogFormat::Text,
            Some(other) => return Err(format!("LOG_FORMAT must be json or text, got {other:?}")),
        };
        let actor_idle_timeout = match var("ACTOR_IDLE_SECS") {
            Some(s) => Duration::from_secs(
                s.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("ACTOR_IDLE_SECS must be a positive integer, got {s:?}"))?,
            ),
            None => DEFAULT_ACTOR_IDLE,
        };
        let actor_max_live = match var("ACTOR_MAX_LIVE") {
            Some(s) => parse_max_live(&s)?,
            None => wallet_actors::supervisor::MAX_LIVE_ACTORS,
        };
        let default_currency = match var("DEFAULT_CURRENCY") {
            Some(c) => c.parse::<Currency>()?,
            None => Currency::Usd,
        };
        let default_budgets = crate::budgets::parse_defaults(&var("DEFAULT_BUDGETS").unwrap_or_default())?;
        let alert_thresholds = match var("BUDGET_ALERT_THRESHOLDS") {
            Some(s) => parse_thresholds(&s)?,
            None => wallet_actors::budget::DEFAULT_ALERT_THRESHOLDS.to_vec(),
        };
        let rate_limit_per_second = match var("RATE_LIMIT_PER_SECOND") {
            Some(s) => std::num::NonZeroU32::new(
                s.parse::<u32>()
                    .map_err(|_| format!("RATE_LIMIT_PER_SECOND must be a whole number, got {s:?}"))?,
            ),
            None => None,
        };
        let amqp_prefetch = match var("AMQP_PREFETCH") {
            Some(s) => parse_prefetch(&s)?,
            None => crate::events::PREFETCH,
        };
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
            default_budgets,
            alert_thresholds,
            rate_limit_per_second,
            amqp_prefetch,
        })
    }
}

/// Most live actors an operator may allow (each costs ~11 KB; this is ~11 GB).
pub const MAX_ACTOR_MAX_LIVE: usize = 1_000_000;

fn parse_max_live(s: &str) -> Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_ACTOR_MAX_LIVE).contains(n))
        .ok_or(format!(
            "ACTOR_MAX_LIVE must be a whole number from 1 to {MAX_ACTOR_MAX_LIVE}, got {s:?}"
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_live_actors_is_a_bounded_whole_number() {
        assert_eq!(parse_max_live("25000"), Ok(25_000));
        assert_eq!(parse_max_live(" 1 "), Ok(1));
        for bad in ["0", "-5", "many", "1000001", "2.5"] {
            let err = parse_max_live(bad).expect_err(bad);
            assert!(err.contains("ACTOR_MAX_LIVE"), "{err}");
        }
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
            let err = parse_prefetch(bad).expect_err(bad);
            assert!(err.contains("AMQP_PREFETCH"), "{err}");
        }
    }
}
