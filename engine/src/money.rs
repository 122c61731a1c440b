//! Money: integer minor units plus an ISO 4217 currency that knows its exponent.
//!
//! There are no floats anywhere in this module. An amount is a positive `i64` count of the
//! currency's minor unit (cents for EUR, yen for JPY, fils for KWD) and is bounded by
//! [`MAX_MINOR_UNITS`] so that sums of many amounts cannot overflow silently.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Largest amount accepted, in minor units (15 digits, as most PSPs allow).
pub const MAX_MINOR_UNITS: i64 = 999_999_999_999_999;

/// ISO 4217 alphabetic codes in active use, with their minor-unit exponent.
/// Codes not listed with 0, 3 or 4 use 2.
const CODES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP",
    "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF",
    "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD",
    "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP",
    "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR",
    "MVR", "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB",
    "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD",
    "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL",
    "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYI",
    "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF",
    "YER", "ZAR", "ZMW", "ZWG",
];
const EXPONENT_0: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];
const EXPONENT_3: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
const EXPONENT_4: &[&str] = &["CLF", "UYW"];

/// Why a currency or an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not an ISO 4217 currency code")]
    UnknownCurrency(String),
    #[error("amount must be a positive whole number of minor units, got {0}")]
    NotPositive(i64),
    #[error("amount {0} exceeds the maximum of {MAX_MINOR_UNITS} minor units")]
    TooLarge(i64),
    #[error("currencies differ: {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("arithmetic overflow")]
    Overflow,
}

/// An ISO 4217 currency. `Copy`, 4 bytes, compared by code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

impl Currency {
    /// Looks a code up (case-sensitive, upper case as ISO 4217 writes it).
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        let known = CODES.binary_search(&code).is_ok();
        if !known {
            return Err(MoneyError::UnknownCurrency(code.chars().take(16).collect()));
        }
        let exponent = if EXPONENT_0.contains(&code) {
            0
        } else if EXPONENT_3.contains(&code) {
            3
        } else if EXPONENT_4.contains(&code) {
            4
        } else {
            2
        };
        let b = code.as_bytes();
        Ok(Currency {
            code: [b[0], b[1], b[2]],
            exponent,
        })
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // Codes only ever come from the ASCII table above.
        std::str::from_utf8(&self.code).unwrap_or("XXX")
    }

    /// Number of decimal digits of the minor unit (JPY 0, EUR 2, KWD 3).
    pub fn exponent(&self) -> u8 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A positive amount of one currency, in minor units.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    /// Amount in the currency's minor unit (e.g. 699 = 6.99 CNY, 500 = ¥500).
    pub value: i64,
    /// ISO 4217 code.
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
}

impl Money {
    /// A validated amount: strictly positive and at most [`MAX_MINOR_UNITS`].
    pub fn new(value: i64, currency: Currency) -> Result<Money, MoneyError> {
        if value <= 0 {
            return Err(MoneyError::NotPositive(value));
        }
        if value > MAX_MINOR_UNITS {
            return Err(MoneyError::TooLarge(value));
        }
        Ok(Money { value, currency })
    }

    /// Parses a currency code and validates the amount.
    pub fn from_parts(value: i64, currency: &str) -> Result<Money, MoneyError> {
        Money::new(value, Currency::parse(currency)?)
    }

    /// Sum of two amounts of one currency; overflow past the bound is an error.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let v = self
            .value
            .checked_add(other.value)
            .ok_or(MoneyError::Overflow)?;
        Money::new(v, self.currency).map_err(|_| MoneyError::Overflow)
    }

    /// Difference of two amounts of one currency, as raw minor units (may be zero or negative).
    pub fn checked_sub_units(self, other: Money) -> Result<i64, MoneyError> {
        self.same_currency(other)?;
        self.value
            .checked_sub(other.value)
            .ok_or(MoneyError::Overflow)
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        Ok(())
    }
}

impl fmt::Display for Money {
    /// Major-unit rendering with the currency's exponent: `6.99 CNY`, `500 JPY`, `1.250 KWD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = self.currency.exponent() as u32;
        if exp == 0 {
            return write!(f, "{} {}", self.value, self.currency);
        }
        let div = 10i64.pow(exp);
        write!(
            f,
            "{}.{:0width$} {}",
            self.value / div,
            self.value % div,
            self.currency,
            width = exp as usize
        )
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn code_table_is_sorted_for_binary_search() {
        assert!(CODES.windows(2).all(|w| w[0] < w[1]));
        for c in EXPONENT_0.iter().chain(EXPONENT_3).chain(EXPONENT_4) {
            assert!(CODES.contains(c), "{c} missing from table");
        }
    }

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("EUR").unwrap().exponent(), 2);
        assert_eq!(Currency::parse("KWD").unwrap().exponent(), 3);
        assert_eq!(Currency::parse("CLF").unwrap().exponent(), 4);
    }

    #[test]
    fn unknown_and_lowercase_codes_are_rejected() {
        assert!(Currency::parse("XYZ").is_err());
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("").is_err());
        assert!(Currency::parse("EURO").is_err());
    }

    #[test]
    fn zero_negative_and_oversized_amounts_are_errors() {
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(Money::new(0, eur), Err(MoneyError::NotPositive(0)));
        assert_eq!(Money::new(-5, eur), Err(MoneyError::NotPositive(-5)));
        assert!(matches!(
            Money::new(i64::MAX, eur),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn display_uses_the_currency_exponent() {
        assert_eq!(
            Money::from_parts(699, "CNY").unwrap().to_string(),
            "6.99 CNY"
        );
        assert_eq!(
            Money::from_parts(500, "JPY").unwrap().to_string(),
            "500 JPY"
        );
        assert_eq!(
            Money::from_parts(1250, "KWD").unwrap().to_string(),
            "1.250 KWD"
        );
    }

    #[test]
    fn adding_different_currencies_is_an_error() {
        let a = Money::from_parts(1, "EUR").unwrap();
        let b = Money::from_parts(1, "USD").unwrap();
        assert!(matches!(
            a.checked_add(b),
            Err(MoneyError::CurrencyMismatch(..))
        ));
    }

    proptest! {
        #[test]
        fn valid_amounts_round_trip_through_json(v in 1i64..=MAX_MINOR_UNITS, i in 0usize..CODES.len()) {
            let m = Money::from_parts(v, CODES[i]).unwrap();
            let json = serde_json::to_string(&m).unwrap();
            let back: Money = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(m, back);
        }

        #[test]
        fn addition_never_exceeds_the_bound(a in 1i64..=MAX_MINOR_UNITS, b in 1i64..=MAX_MINOR_UNITS) {
            let eur = Currency::parse("EUR").unwrap();
            let r = Money::new(a, eur).unwrap().checked_add(Money::new(b, eur).unwrap());
            match r {
                Ok(m) => prop_assert_eq!(m.value, a + b),
                Err(e) => { prop_assert_eq!(e, MoneyError::Overflow); prop_assert!(a + b > MAX_MINOR_UNITS) }
            }
        }

        #[test]
        fn non_positive_amounts_are_always_refused(v in i64::MIN..=0) {
            prop_assert!(Money::from_parts(v, "USD").is_err());
        }
    }
}
