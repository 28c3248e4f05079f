//! Properties of `Amount`'s text form: every value `DECIMAL(15,2)` holds survives parse and format exactly,
//! and nothing it cannot hold (or would have to round) gets in.

use proptest::prelude::*;
use rust_decimal::Decimal;
use wallet_actors::{Amount, AmountError};

/// Hundredths in the largest amount, 9999999999999.99.
const MAX_CENTS: i64 = 999_999_999_999_999;

fn text(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_amount_in_range_formats_back_to_its_own_text(cents in 0..=MAX_CENTS) {
        let t = text(cents);
        let a = Amount::parse(&t).unwrap();
        prop_assert_eq!(a.to_string(), t);
        prop_assert_eq!(a.value(), Decimal::new(cents, 2));
        prop_assert_eq!(Amount::new(Decimal::new(cents, 2)), Ok(a));
        // Through JSON, as a string and as a number, it is the same amount.
        let json = serde_json::to_string(&a).unwrap();
        prop_assert_eq!(serde_json::from_str::<Amount>(&json).unwrap(), a);
        prop_assert_eq!(serde_json::from_str::<Amount>(&text(cents)).unwrap(), a);
    }

    #[test]
    fn other_spellings_of_an_amount_parse_to_the_same_amount(cents in 0..=MAX_CENTS, zeros in 0usize..24) {
        let canonical = Amount::parse(&text(cents)).unwrap();
        let int = format!("{}{}", "0".repeat(zeros), cents / 100);
        // Leading zeros are not significant, up to the 32-character limit on the text.
        let expect = |spelled: &str| if spelled.len() <= 32 { Ok(canonical) } else { Err(AmountError::NotANumber) };
        let padded = format!("{int}.{:02}", cents % 100);
        prop_assert_eq!(Amount::parse(&padded), expect(&padded));
        prop_assert_eq!(Amount::parse(&format!("+{}", text(cents))), Ok(canonical));
        if cents % 100 == 0 {
            prop_assert_eq!(Amount::parse(&int), expect(&int));
        }
        if cents % 10 == 0 {
            let one_decimal = format!("{int}.{}", cents % 100 / 10);
            prop_assert_eq!(Amount::parse(&one_decimal), expect(&one_decimal));
        }
    }

    #[test]
    fn more_than_two_decimals_are_refused_not_rounded(int in 0..=MAX_CENTS / 100, frac in "[0-9]{3,12}") {
        prop_assert_eq!(Amount::parse(&format!("{int}.{frac}")), Err(AmountError::TooManyDecimals));
    }

    #[test]
    fn a_decimal_with_more_than_two_places_is_refused(cents in 0..=MAX_CENTS, extra in 1i64..=9) {
        // cents.xx plus a third non-zero digit: not representable in NUMERIC(15,2) without rounding.
        let value = Decimal::new(cents * 10 + extra, 3);
        prop_assert_eq!(Amount::new(value), Err(AmountError::TooManyDecimals));
    }

    #[test]
    fn amounts_above_the_maximum_are_refused(cents in MAX_CENTS + 1..=i64::MAX) {
        prop_assert_eq!(Amount::parse(&text(cents)), Err(AmountError::TooLarge));
        prop_assert_eq!(Amount::new(Decimal::new(cents, 2)), Err(AmountError::TooLarge));
    }

    #[test]
    fn negative_amounts_are_refused(cents in 1..=i64::MAX) {
        let parsed = Amount::parse(&format!("-{}", text(cents)));
        if cents <= MAX_CENTS {
            prop_assert_eq!(parsed, Err(AmountError::Negative));
        } else {
            // Both reasons apply; the length check comes first.
            prop_assert_eq!(parsed, Err(AmountError::TooLarge));
        }
        prop_assert_eq!(Amount::new(Decimal::new(-cents, 2)), Err(AmountError::Negative));
    }

    #[test]
    fn sums_and_differences_stay_exact_and_in_range(a in 0..=MAX_CENTS, b in 0..=MAX_CENTS) {
        let (x, y) = (Amount::new(Decimal::new(a, 2)).unwrap(), Amount::new(Decimal::new(b, 2)).unwrap());
        match x.checked_add(y) {
            Some(sum) => prop_assert_eq!(sum.value(), Decimal::new(a + b, 2)),
            None => prop_assert!(a + b > MAX_CENTS),
        }
        match x.checked_sub(y) {
            Some(diff) => prop_assert_eq!(diff.value(), Decimal::new(a - b, 2)),
            None => prop_assert!(b > a),
        }
    }
}
