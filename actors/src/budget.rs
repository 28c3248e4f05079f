//! Budgets as the wallet actor sees them: limits on spend over a period, checked in the same serialized
//! step as the balance.
//!
//! Periods are calendar periods in UTC: WEEKLY is the ISO week (Monday to Sunday), MONTHLY the calendar
//! month, QUARTERLY the calendar quarter, YEARLY the calendar year. `end_date` is inclusive, and when a
//! budget is created without one it is the last day of the period that holds `start_date`.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Duration, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::{Amount, UnknownName};

/// Most budgets one wallet may hold at once (ACTIVE or SUSPENDED); each debit checks all that apply.
pub const MAX_BUDGETS_PER_WALLET: usize = 32;
/// Default alert thresholds, in percent of `total_amount`.
pub const DEFAULT_ALERT_THRESHOLDS: [u8; 2] = [80, 100];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PeriodType {
    Weekly,
    Monthly,
    Quarterly,
    Yearly,
}

impl PeriodType {
    pub fn as_str(self) -> &'static str {
        match self {
            PeriodType::Weekly => "WEEKLY",
            PeriodType::Monthly => "MONTHLY",
            PeriodType::Quarterly => "QUARTERLY",
            PeriodType::Yearly => "YEARLY",
        }
    }

    /// First day of the period that holds `d`.
    pub fn start_of(self, d: NaiveDate) -> NaiveDate {
        let first = |y, m| NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(d);
        match self {
            PeriodType::Weekly => d - Duration::days(i64::from(d.weekday().num_days_from_monday())),
            PeriodType::Monthly => first(d.year(), d.month()),
            PeriodType::Quarterly => first(d.year(), (d.month() - 1) / 3 * 3 + 1),
            PeriodType::Yearly => first(d.year(), 1),
        }
    }

    /// Last day (inclusive) of the period that holds `d`.
    pub fn end_of(self, d: NaiveDate) -> NaiveDate {
        let start = self.start_of(d);
        let next = match self {
            PeriodType::Weekly => Some(start + Duration::days(7)),
            PeriodType::Monthly => start.checked_add_months(chrono::Months::new(1)),
            PeriodType::Quarterly => start.checked_add_months(chrono::Months::new(3)),
            PeriodType::Yearly => start.checked_add_months(chrono::Months::new(12)),
        };
        next.map(|n| n - Duration::days(1)).unwrap_or(d)
    }

    /// The first day of the period after the one holding `d` (for explicit rollover).
    pub fn next_start(self, d: NaiveDate) -> NaiveDate {
        self.end_of(d) + Duration::days(1)
    }
}

impl fmt::Display for PeriodType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PeriodType {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "WEEKLY" => Ok(PeriodType::Weekly),
            "MONTHLY" => Ok(PeriodType::Monthly),
            "QUARTERLY" => Ok(PeriodType::Quarterly),
            "YEARLY" => Ok(PeriodType::Yearly),
            other => Err(UnknownName::PeriodType(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BudgetStatus {
    Active,
    Expired,
    Suspended,
}

impl BudgetStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetStatus::Active => "ACTIVE",
            BudgetStatus::Expired => "EXPIRED",
            BudgetStatus::Suspended => "SUSPENDED",
        }
    }
}

impl fmt::Display for BudgetStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BudgetStatus {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "ACTIVE" => Ok(BudgetStatus::Active),
            "EXPIRED" => Ok(BudgetStatus::Expired),
            "SUSPENDED" => Ok(BudgetStatus::Suspended),
            other => Err(UnknownName::BudgetStatus(other.to_string())),
        }
    }
}

/// One budget of a wallet, as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub budget_id: Uuid,
    pub wallet_id: Uuid,
    pub total: Amount,
    /// Spent plus held: what debits and captures took, and what pending holds still reserve.
    pub used: Amount,
    /// The part of `used` that pending holds reserve (given back when they are released).
    pub held: Amount,
    pub period: PeriodType,
    pub start_date: NaiveDate,
    /// Inclusive.
    pub end_date: NaiveDate,
    pub status: BudgetStatus,
    pub created_by: Uuid,
    /// Thresholds (percent) whose crossing was already announced; each is announced once.
    pub alerted: Vec<u8>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl Budget {
    /// Whether this budget limits a debit made on `day`: ACTIVE and its period holds the day. A budget
    /// past its end is treated as expired here, whatever the sweep has written yet.
    pub fn applies_on(&self, day: NaiveDate) -> bool {
        self.status == BudgetStatus::Active && self.start_date <= day && day <= self.end_date
    }

    pub fn remaining(&self) -> Decimal {
        self.total.value() - self.used.value()
    }

    /// The amount at `threshold` percent of the total.
    pub fn threshold_amount(&self, threshold: u8) -> Decimal {
        self.total.value() * Decimal::from(threshold) / Decimal::from(100)
    }
}

/// A threshold crossing (or a refusal over the hard limit) to announce as `BudgetExceeded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetAlert {
    pub budget_id: Uuid,
    pub threshold: u8,
    /// How far past the threshold's amount (≥ 0); for a refusal, by how much the debit would exceed.
    pub exceeded_amount: Decimal,
    /// True when the alert reports a refused debit (it does not mark the threshold as announced).
    pub refused: bool,
}

/// Thresholds crossed by moving `used` from `before` to `after`, not yet announced.
pub fn crossed(b: &Budget, before: Decimal, after: Decimal, thresholds: &[u8]) -> Vec<BudgetAlert> {
    thresholds
        .iter()
        .filter(|t| !b.alerted.contains(t))
        .filter_map(|&t| {
            let at = b.threshold_amount(t);
            (before < at && after >= at).then(|| BudgetAlert {
                budget_id: b.budget_id,
                threshold: t,
                exceeded_amount: (after - at).max(Decimal::ZERO).round_dp(2),
                refused: false,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn periods_end_on_their_calendar_boundaries() {
        assert_eq!(PeriodType::Monthly.end_of(d(2024, 2, 10)), d(2024, 2, 29));
        assert_eq!(PeriodType::Monthly.end_of(d(2023, 2, 1)), d(2023, 2, 28));
        assert_eq!(PeriodType::Quarterly.end_of(d(2026, 11, 25)), d(2026, 12, 31));
        assert_eq!(PeriodType::Quarterly.start_of(d(2026, 5, 31)), d(2026, 4, 1));
        assert_eq!(PeriodType::Yearly.end_of(d(2026, 1, 1)), d(2026, 12, 31));
        // ISO week across the year end: 2026-12-31 is a Thursday; its week runs Mon 28 Dec to Sun 3 Jan.
        assert_eq!(PeriodType::Weekly.start_of(d(2026, 12, 31)), d(2026, 12, 28));
        assert_eq!(PeriodType::Weekly.end_of(d(2026, 12, 31)), d(2027, 1, 3));
    }
}
