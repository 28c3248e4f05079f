//! Budgets on the service side: the expiry sweep and the default budgets of new users. Their SQL is in
//! `store::budgets`; their checks are in the wallet actor.

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;
use wallet_actors::store::StoreError;
use wallet_actors::{Amount, AmountError, Budget, PeriodType, UnknownName};

/// How often budgets past their end are marked EXPIRED (correctness does not depend on it: the actor
/// treats a budget past its end as expired at use).
pub const EXPIRY_SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Marks budgets past their end as EXPIRED and tells their wallets' actors to reload.
pub async fn sweep_expired(service: &super::Service) -> Result<u64, StoreError> {
    let wallets = service.store.expire_budgets().await?;
    for w in &wallets {
        service.engine.invalidate(*w);
    }
    Ok(wallets.len() as u64)
}

/// A default allocation: a budget of `total` per `period` for new users of a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultBudget {
    pub role: String,
    pub period: PeriodType,
    pub total: Amount,
}

/// Why `DEFAULT_BUDGETS` was refused (at start), naming the item that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefaultBudgetsError {
    #[error("DEFAULT_BUDGETS item {0:?} must be role:PERIOD:amount")]
    Shape(String),
    #[error("DEFAULT_BUDGETS role {0:?} is not a role")]
    Role(String),
    #[error("DEFAULT_BUDGETS amount {total:?} {reason}")]
    Amount { total: String, reason: AmountError },
    #[error("DEFAULT_BUDGETS: {0}")]
    Period(#[from] UnknownName),
}

/// Parses `DEFAULT_BUDGETS`, e.g. `user:MONTHLY:1000.00,manager:MONTHLY:5000.00` (role `*` for all).
pub fn parse_defaults(spec: &str) -> Result<Vec<DefaultBudget>, DefaultBudgetsError> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let parts: Vec<&str> = item.split(':').collect();
            let [role, period, total] = parts.as_slice() else {
                return Err(DefaultBudgetsError::Shape(item.to_string()));
            };
            if !["user", "manager", "admin", "service", "*"].contains(role) {
                return Err(DefaultBudgetsError::Role(role.to_string()));
            }
            let total = Amount::parse_positive(total).map_err(|reason| DefaultBudgetsError::Amount {
                total: total.to_string(),
                reason,
            })?;
            Ok(DefaultBudget {
                role: role.to_string(),
                period: period.parse()?,
                total,
            })
        })
        .collect()
}

/// Sets up the configured default budgets of a new user's wallet (starting with the current period).
/// Called by the `UserCreated` consumer; goes through the wallet's actor like any budget change.
pub async fn apply_defaults(
    service: &super::Service,
    defaults: &[DefaultBudget],
    wallet_id: Uuid,
    role: &str,
    origin: wallet_actors::Origin,
) -> Result<Vec<Budget>, wallet_actors::Rejection> {
    let today = Utc::now().date_naive();
    let mut created = Vec::new();
    for d in defaults.iter().filter(|d| d.role == role || d.role == "*") {
        let start = d.period.start_of(today);
        let end = d.period.end_of(today);
        created.push(
            service
                .create_budget(wallet_id, d.total, d.period, start, end, origin.clone())
                .await?,
        );
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_budgets_parse_roles_periods_and_amounts() {
        let d = parse_defaults("user:MONTHLY:1000.00, *:YEARLY:5000").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].period, PeriodType::Monthly);
        assert_eq!(d[1].total.to_string(), "5000.00");
        assert!(parse_defaults("user:DAILY:1").is_err());
        assert!(parse_defaults("boss:MONTHLY:1").is_err());
        assert!(parse_defaults("user:MONTHLY:0").is_err());
        assert!(parse_defaults("user:MONTHLY").is_err());
        assert!(parse_defaults("").unwrap().is_empty());
    }
}
