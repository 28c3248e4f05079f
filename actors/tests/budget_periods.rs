//! Property tests of budget period arithmetic: quarter/year boundaries, leap years, ISO weeks across
//! the year end.

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use proptest::prelude::*;
use wallet_actors::PeriodType;

fn any_date() -> impl Strategy<Value = NaiveDate> {
    // 1990-01-01 .. ~2100: wide enough to cross many leap years and year ends.
    (0i64..40_000).prop_map(|d| NaiveDate::from_ymd_opt(1990, 1, 1).unwrap() + Duration::days(d))
}

fn any_period() -> impl Strategy<Value = PeriodType> {
    prop_oneof![
        Just(PeriodType::Weekly),
        Just(PeriodType::Monthly),
        Just(PeriodType::Quarterly),
        Just(PeriodType::Yearly)
    ]
}

proptest! {
    #[test]
    fn every_day_lies_in_exactly_one_period_whose_bounds_agree(d in any_date(), p in any_period()) {
        let (start, end) = (p.start_of(d), p.end_of(d));
        prop_assert!(start <= d && d <= end);
        prop_assert_eq!(p.start_of(start), start);
        prop_assert_eq!(p.end_of(end), end);
        prop_assert_eq!(p.start_of(end), start);
        // The next period starts the day after this one ends, and is its own start.
        let next = p.next_start(d);
        prop_assert_eq!(next, end + Duration::days(1));
        prop_assert_eq!(p.start_of(next), next);
        prop_assert!(p.start_of(start - Duration::days(1)) < start);
    }

    #[test]
    fn weeks_are_iso_weeks_from_monday_to_sunday(d in any_date()) {
        let (start, end) = (PeriodType::Weekly.start_of(d), PeriodType::Weekly.end_of(d));
        prop_assert_eq!(start.weekday(), Weekday::Mon);
        prop_assert_eq!(end.weekday(), Weekday::Sun);
        prop_assert_eq!(end - start, Duration::days(6));
        prop_assert_eq!(start.iso_week(), d.iso_week());
    }

    #[test]
    fn months_quarters_and_years_follow_the_calendar(d in any_date()) {
        let m = PeriodType::Monthly;
        prop_assert_eq!(m.start_of(d).day(), 1);
        prop_assert_eq!((m.end_of(d) + Duration::days(1)).day(), 1);
        prop_assert_eq!(m.end_of(d).month(), d.month());
        let q = PeriodType::Quarterly;
        prop_assert!([1, 4, 7, 10].contains(&q.start_of(d).month()));
        prop_assert_eq!((q.end_of(d) - q.start_of(d)).num_days() + 1 >= 90, true);
        prop_assert!([3, 6, 9, 12].contains(&q.end_of(d).month()));
        let y = PeriodType::Yearly;
        prop_assert_eq!(y.start_of(d), NaiveDate::from_ymd_opt(d.year(), 1, 1).unwrap());
        prop_assert_eq!(y.end_of(d), NaiveDate::from_ymd_opt(d.year(), 12, 31).unwrap());
    }
}

#[test]
fn february_ends_on_the_29th_in_leap_years_only() {
    let feb = |y| {
        PeriodType::Monthly
            .end_of(NaiveDate::from_ymd_opt(y, 2, 10).unwrap())
            .day()
    };
    assert_eq!(feb(2024), 29);
    assert_eq!(feb(2000), 29);
    assert_eq!(feb(1900 + 200), 28); // 2100 is not a leap year
    assert_eq!(feb(2026), 28);
}

#[test]
fn an_iso_week_can_span_the_year_end() {
    let d = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap(); // a Friday in ISO week 53 of 2026
    assert_eq!(
        PeriodType::Weekly.start_of(d),
        NaiveDate::from_ymd_opt(2026, 12, 28).unwrap()
    );
    assert_eq!(
        PeriodType::Weekly.end_of(d),
        NaiveDate::from_ymd_opt(2027, 1, 3).unwrap()
    );
}
