//! Money as the engine sees it: exact decimals with two minor digits, and the four currencies.
//!
//! Why a newtype: a bare `Decimal` can hold `1.005` or `10^20`, and Postgres `NUMERIC(15,2)` would round the
//! first silently and fail on the second. Every amount that reaches the engine went through
//! [`Amount::parse`] (or [`Amount::new`]), so the database never sees a value it would alter.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Minor digits of every supported currency (USD, EUR, INR, GBP all have 2).
pub const MINOR_DIGITS: u32 = 2;

/// The largest amount `DECIMAL(15,2)` holds: 9,999,999,999,999.99 (999_999_999_999_999 hundredths,
/// split into the 32-bit words `from_parts` takes).
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(2_764_472_319, 232_830, 0, false, 2);

/// Longest textual amount we even try to parse; anything longer is refused before parsing.
const MAX_AMOUNT_TEXT_LEN: usize = 32;

/// Why an amount was refused. Every variant is a caller error (400), never transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("is not a decimal number")]
    NotANumber,
    #[error("has more than {MINOR_DIGITS} decimal places")]
    TooManyDecimals,
    #[error("must be greater than zero")]
    NotPositive,
    #[error("must not be negative")]
    Negative,
    #[error("exceeds the maximum of 9999999999999.99")]
    TooLarge,
}

/// A non-negative amount with at most two decimals and at most `MAX_AMOUNT`.
///
/// Positivity is not part of the type because balances and initial balances may be zero; use
/// [`Amount::parse_positive`] where the contract asks for a positive amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(Decimal);

impl Amount {
    pub const ZERO: Amount = Amount(Decimal::ZERO);
    /// The largest amount, [`MAX_AMOUNT`].
    pub const MAX: Amount = Amount(MAX_AMOUNT);

    /// A whole number of currency units (`from_whole(5)` is 5.00), for named constants: any `u32` is
    /// within `MAX_AMOUNT`.
    pub const fn from_whole(units: u32) -> Amount {
        let hundredths = units as u64 * 100;
        Amount(Decimal::from_parts(
            hundredths as u32,
            (hundredths >> 32) as u32,
            0,
            false,
            MINOR_DIGITS,
        ))
    }

    /// Validates a decimal already in hand (e.g. read back from Postgres).
    pub fn new(value: Decimal) -> Result<Self, AmountError> {
        if value.is_sign_negative() && !value.is_zero() {
            return Err(AmountError::Negative);
        }
        if value.normalize().scale() > MINOR_DIGITS {
            return Err(AmountError::TooManyDecimals);
        }
        if value > MAX_AMOUNT {
            return Err(AmountError::TooLarge);
        }
        let mut v = value;
        v.rescale(MINOR_DIGITS);
        Ok(Amount(v))
    }

    /// Parses the exact text of a request value: no float, no exponent, at most two decimals.
    ///
    /// The text is what the client wrote (`"125.50"` or the digits of a JSON number), so `1.005` is
    /// refused instead of being rounded.
    pub fn parse(text: &str) -> Result<Self, AmountError> {
        let text = text.trim();
        if text.is_empty() || text.len() > MAX_AMOUNT_TEXT_LEN {
            return Err(AmountError::NotANumber);
        }
        // Only plain decimal notation: optional sign, digits, optional fraction. No exponent, no '_'.
        let body = text.strip_prefix(['-', '+']).unwrap_or(text);
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits_ok(int) || frac.is_some_and(|f| f.is_empty() || !digits_ok(f)) {
            return Err(AmountError::NotANumber);
        }
        if frac.is_some_and(|f| f.len() > MINOR_DIGITS as usize) {
            return Err(AmountError::TooManyDecimals);
        }
        // Significant digits only: "0012.50" is 12.50, not too large.
        if int.trim_start_matches('0').len() > 13 {
            return Err(AmountError::TooLarge);
        }
        let value = Decimal::from_str_exact(text).map_err(|_| AmountError::NotANumber)?;
        Self::new(value)
    }

    /// Parses the text of a JSON number, which may use an exponent (`1.25e2`): exactly, through
    /// `Decimal::from_scientific`, never f64. The value must still have at most two decimals.
    pub fn parse_json_number(text: &str) -> Result<Self, AmountError> {
        if !text.contains(['e', 'E']) {
            return Self::parse(text);
        }
        let (mantissa, exponent) = text.split_once(['e', 'E']).ok_or(AmountError::NotANumber)?;
        // A bounded exponent: anything beyond ±28 is either too large or has too many decimals anyway.
        let exp: i32 = exponent.parse().map_err(|_| AmountError::NotANumber)?;
        if !(-28..=28).contains(&exp) || mantissa.is_empty() || text.len() > MAX_AMOUNT_TEXT_LEN {
            return Err(if exp > 0 {
                AmountError::TooLarge
            } else {
                AmountError::TooManyDecimals
            });
        }
        let value = Decimal::from_scientific(text).map_err(|_| AmountError::NotANumber)?;
        Self::new(value)
    }

    /// Parses an amount written as a JSON string in a request or an event, strictly: ASCII digits,
    /// optionally a point and one or two more digits (`12`, `12.5`, `012.50`), nothing else. No
    /// whitespace around it, no `+`, no exponent, no bare point (`12.`, `.5`); a `-` is refused as
    /// negative (`-0` too). [`Amount::parse`] stays the lenient form for configuration text.
    pub fn parse_strict(text: &str) -> Result<Self, AmountError> {
        let unsigned = text.strip_prefix('-').unwrap_or(text);
        let digit = |c: char| c.is_ascii_digit();
        if !unsigned.starts_with(digit) || !unsigned.ends_with(digit) {
            return Err(AmountError::NotANumber);
        }
        let a = Self::parse(text)?;
        if text.starts_with('-') {
            return Err(AmountError::Negative);
        }
        Ok(a)
    }

    /// [`Amount::parse`], and the value must be greater than zero.
    pub fn parse_positive(text: &str) -> Result<Self, AmountError> {
        let a = Self::parse(text)?;
        if a.is_zero() {
            return Err(AmountError::NotPositive);
        }
        Ok(a)
    }

    pub fn value(self) -> Decimal {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// Sum that stays within `MAX_AMOUNT`; `None` when it would not.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        Amount::new(self.0.checked_add(other.0)?).ok()
    }

    /// Difference that stays non-negative; `None` when it would go below zero.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        if other.0 > self.0 {
            return None;
        }
        Amount::new(self.0 - other.0).ok()
    }
}

/// Longest text of an amount: a `u64` of hundredths has at most 20 digits, plus the point.
const AMOUNT_TEXT_CAPACITY: usize = 21;

impl fmt::Display for Amount {
    /// Always two decimals: `125.50`, `0.00`.
    ///
    /// Written from the hundredths as digits, not through `Decimal`'s `Display` (which builds its text in
    /// a general loop and pads it): every wallet read and posting prints three amounts, and this takes
    /// about 420 instructions where that took about 1,000 (callgrind). An amount is never negative and
    /// within [`MAX_AMOUNT`], so
    /// its hundredths fit a `u64`; a value that somehow did not would print through `Decimal`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = self.0;
        v.rescale(MINOR_DIGITS);
        let Ok(mut hundredths) = u64::try_from(v.mantissa()) else {
            return write!(f, "{v}");
        };
        let mut text = [0u8; AMOUNT_TEXT_CAPACITY];
        let mut at = text.len();
        for place in 0.. {
            if place == MINOR_DIGITS {
                at -= 1;
                text[at] = b'.';
            }
            at -= 1;
            text[at] = b'0' + (hundredths % 10) as u8;
            hundredths /= 10;
            if hundredths == 0 && place >= MINOR_DIGITS {
                break;
            }
        }
        // Digits and a point only: always UTF-8.
        f.write_str(std::str::from_utf8(&text[at..]).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Amount {
    /// Accepts a string ([`Amount::parse_strict`]) or a JSON number, parsed from its text (an exponent
    /// allowed, a `-` refused as negative). The service enables serde_json's `arbitrary_precision`, so a
    /// number reaches us as its original digits, never through f64.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let parsed = match &v {
            serde_json::Value::String(s) => Amount::parse_strict(s),
            serde_json::Value::Number(n) => {
                let text = n.to_string();
                if text.starts_with('-') {
                    Err(AmountError::Negative)
                } else {
                    Amount::parse_json_number(&text)
                }
            }
            _ => return Err(serde::de::Error::custom("amount must be a decimal string or number")),
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

/// Supported currencies. All have [`MINOR_DIGITS`] minor digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Currency {
    Usd,
    Eur,
    Inr,
    Gbp,
}

impl Currency {
    pub const ALL: [Currency; 4] = [Currency::Usd, Currency::Eur, Currency::Inr, Currency::Gbp];

    pub fn as_str(self) -> &'static str {
        match self {
            Currency::Usd => "USD",
            Currency::Eur => "EUR",
            Currency::Inr => "INR",
            Currency::Gbp => "GBP",
        }
    }
}

/// A text that names none of an enum's values (a currency, a wallet status, a transaction type, a budget
/// period or status): which enum, and the text given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownName {
    #[error("unsupported currency {0:?}; expected one of USD, EUR, INR, GBP")]
    Currency(String),
    #[error("unknown wallet status {0:?}")]
    WalletStatus(String),
    #[error("unknown transaction type {0:?}")]
    TxnType(String),
    #[error("unknown period type {0:?}; expected WEEKLY, MONTHLY, QUARTERLY or YEARLY")]
    PeriodType(String),
    #[error("unknown budget status {0:?}")]
    BudgetStatus(String),
}

impl FromStr for Currency {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Currency::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownName::Currency(s.to_string()))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn an_amount_prints_as_its_decimal_with_two_places(hundredths in 0u64..=999_999_999_999_999, scale in 0u32..=2) {
            // The same value written with 0, 1 or 2 decimals (`Amount::new` rescales it).
            let shift = 10u64.pow(MINOR_DIGITS - scale);
            let value = Decimal::from_i128_with_scale(i128::from(hundredths / shift), scale);
            let amount = Amount::new(value).expect("within the bounds");
            let mut expected = value;
            expected.rescale(MINOR_DIGITS);
            proptest::prop_assert_eq!(amount.to_string(), expected.to_string());
        }
    }

    #[test]
    fn amounts_print_with_two_places_and_no_sign() {
        for (text, shown) in [
            ("0", "0.00"),
            ("0.5", "0.50"),
            ("7", "7.00"),
            ("125.5", "125.50"),
            ("-0", "0.00"),
            ("9999999999999.99", "9999999999999.99"),
            ("0.01", "0.01"),
            ("10.10", "10.10"),
        ] {
            assert_eq!(Amount::parse(text).expect("valid").to_string(), shown, "{text}");
        }
        assert_eq!(Amount::MAX.to_string(), "9999999999999.99");
    }

    #[test]
    fn two_decimals_parse_and_format_back_exactly() {
        assert_eq!(Amount::parse("125.5").unwrap().to_string(), "125.50");
        assert_eq!(Amount::parse("0").unwrap().to_string(), "0.00");
        assert_eq!(Amount::parse("9999999999999.99").unwrap().value(), MAX_AMOUNT);
        assert_eq!(Amount::parse("9999999999999.99"), Ok(Amount::MAX));
    }

    #[test]
    fn whole_units_are_exact_amounts_up_to_the_largest_u32() {
        assert_eq!(Amount::from_whole(0), Amount::ZERO);
        assert_eq!(Amount::from_whole(1_000_000), Amount::parse("1000000.00").unwrap());
        assert_eq!(Amount::from_whole(1_000_000).to_string(), "1000000.00");
        let max = Amount::from_whole(u32::MAX);
        assert_eq!(max, Amount::parse("4294967295").unwrap());
        assert_eq!(Amount::new(max.value()), Ok(max));
    }

    #[test]
    fn three_decimals_exponents_and_overflow_are_refused() {
        assert_eq!(Amount::parse("1.005"), Err(AmountError::TooManyDecimals));
        assert_eq!(Amount::parse("1.500"), Err(AmountError::TooManyDecimals));
        assert_eq!(Amount::parse("1e3"), Err(AmountError::NotANumber));
        assert_eq!(Amount::parse("10000000000000"), Err(AmountError::TooLarge));
        assert_eq!(Amount::parse("-1"), Err(AmountError::Negative));
        assert_eq!(Amount::parse_positive("0.00"), Err(AmountError::NotPositive));
        assert_eq!(Amount::parse(""), Err(AmountError::NotANumber));
        assert_eq!(Amount::parse("1."), Err(AmountError::NotANumber));
        assert_eq!(Amount::parse(".5"), Err(AmountError::NotANumber));
    }

    #[test]
    fn json_numbers_are_read_from_their_text_not_through_f64() {
        let a: Amount = serde_json::from_str("0.1").unwrap();
        assert_eq!(a.to_string(), "0.10");
        let a: Amount = serde_json::from_str("\"9999999999999.99\"").unwrap();
        assert_eq!(a.value(), MAX_AMOUNT);
        // 9007199254740993 is not representable as f64; it must still be refused as too large, not rounded.
        assert!(serde_json::from_str::<Amount>("9007199254740993").is_err());
        assert!(serde_json::from_str::<Amount>("1.001").is_err());
        assert!(serde_json::from_str::<Amount>("true").is_err());
        // JSON numbers may use an exponent; the value is read exactly and must still fit two decimals.
        assert_eq!(serde_json::from_str::<Amount>("1e-1").unwrap().to_string(), "0.10");
        assert_eq!(serde_json::from_str::<Amount>("1.25E2").unwrap().to_string(), "125.00");
        assert!(serde_json::from_str::<Amount>("1e-3").is_err());
        assert!(serde_json::from_str::<Amount>("1e13").is_err());
        assert!(serde_json::from_str::<Amount>("1e400").is_err());
        // A decimal *string* stays plain decimal.
        assert!(serde_json::from_str::<Amount>("\"1e2\"").is_err());
    }

    #[test]
    fn amount_strings_in_json_follow_the_strict_grammar() {
        let strict = |t: &str| serde_json::from_value::<Amount>(serde_json::Value::String(t.into()));
        for ok in ["12", "12.5", "12.50", "012.50", "0", "0.01", "9999999999999.99"] {
            assert!(strict(ok).is_ok(), "{ok:?} is accepted");
        }
        assert_eq!(strict("012.50").unwrap().to_string(), "12.50");
        for (bad, why) in [
            (" 12", AmountError::NotANumber),
            ("12 ", AmountError::NotANumber),
            ("\t12", AmountError::NotANumber),
            ("+12", AmountError::NotANumber),
            ("12.", AmountError::NotANumber),
            (".5", AmountError::NotANumber),
            ("1e2", AmountError::NotANumber),
            ("1_000", AmountError::NotANumber),
            ("", AmountError::NotANumber),
            ("-", AmountError::NotANumber),
            ("--5", AmountError::NotANumber),
            ("-5", AmountError::Negative),
            ("-0", AmountError::Negative),
            ("1.005", AmountError::TooManyDecimals),
        ] {
            assert_eq!(Amount::parse_strict(bad), Err(why.clone()), "{bad:?}");
            assert!(strict(bad).is_err(), "{bad:?} is refused in JSON");
        }
        // Numbers keep their grammar (exponents allowed); a minus sign is negative, even on zero.
        assert_eq!(serde_json::from_str::<Amount>("1e2").unwrap().to_string(), "100.00");
        assert_eq!(serde_json::from_str::<Amount>("12").unwrap().to_string(), "12.00");
        assert!(serde_json::from_str::<Amount>("-0").is_err());
        assert!(serde_json::from_str::<Amount>("-1.5").is_err());
        // The lenient form (configuration) is unchanged.
        assert_eq!(Amount::parse(" +12 ").unwrap().to_string(), "12.00");
    }
}
