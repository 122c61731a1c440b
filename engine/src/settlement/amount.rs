//! Exact decimals for settlement arithmetic: [`Dec`] (a rate or a fee percentage, parsed from
//! text, never from a float), [`Centi`] (an amount in hundredths of a minor unit, the
//! precision fees and payouts are carried at), and the one rounding rule every settlement
//! figure uses: **round half to even** ([`div_round`]).
//!
//! It owns no currency table (that is [`crate::money`]) and no business rule (conversion is
//! [`super::fx`], fees are [`super::fees`]).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Most fraction digits a [`Dec`] may have.
pub const MAX_SCALE: u32 = 12;
/// Most significant digits a [`Dec`] may have (keeps every product inside `i128`).
pub const MAX_DIGITS: usize = 18;

/// A non-negative decimal `units / 10^scale`, exact.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dec {
    units: i128,
    scale: u32,
}

impl Dec {
    /// Parses `123`, `0.1416`, `3.0`: digits, at most one point, no sign, no exponent.
    pub fn parse(s: &str) -> Result<Dec, String> {
        let bad = || {
            format!(
                "`{}` is not a plain non-negative decimal such as 0.1416",
                s.chars().take(40).collect::<String>()
            )
        };
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if s.ends_with('.') || frac.len() > MAX_SCALE as usize {
            return Err(bad());
        }
        let digits = format!("{int}{frac}");
        if digits.trim_start_matches('0').len() > MAX_DIGITS {
            return Err(format!(
                "`{s}` has more than {MAX_DIGITS} significant digits"
            ));
        }
        let units = digits.parse::<i128>().map_err(|_| bad())?;
        Ok(Dec {
            units,
            scale: frac.len() as u32,
        })
    }

    /// One.
    pub fn one() -> Dec {
        Dec { units: 1, scale: 0 }
    }

    /// Zero.
    pub fn zero() -> Dec {
        Dec { units: 0, scale: 0 }
    }

    /// The integer `units` of `10^-scale`.
    pub fn units(&self) -> i128 {
        self.units
    }

    /// Number of fraction digits.
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// Whether it is zero.
    pub fn is_zero(&self) -> bool {
        self.units == 0
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scale == 0 {
            return write!(f, "{}", self.units);
        }
        let div = 10i128.pow(self.scale);
        write!(
            f,
            "{}.{:0w$}",
            self.units / div,
            self.units % div,
            w = self.scale as usize
        )
    }
}

impl fmt::Debug for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// On the wire a JSON number written exactly as the decimal (`0.1416`), never through a float.
impl Serialize for Dec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        json_number(&self.to_string()).serialize(s)
    }
}

/// Accepts a JSON number or a string holding one; the text is parsed, never a float.
impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        let text = raw.get().trim().trim_matches('"');
        Dec::parse(text).map_err(D::Error::custom)
    }
}

/// A JSON number token with exactly this text (the text must be a valid JSON number).
pub fn json_number(text: &str) -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(text.to_string()).unwrap_or_else(|_| {
        // Only reachable with text that is not a number; say 0 rather than emit bad JSON.
        serde_json::value::RawValue::from_string("0".into()).unwrap_or_default()
    })
}

/// `num / den` rounded half to even. `den` must be positive; `num` may be negative (rounded
/// symmetrically, so a refund's figure is the exact negative of the same sale's).
pub fn div_round(num: i128, den: i128) -> i128 {
    debug_assert!(den > 0);
    let neg = num < 0;
    let n = num.unsigned_abs();
    let d = den.unsigned_abs();
    let q = n / d;
    let r = n % d;
    let up = match (2 * r).cmp(&d) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => q % 2 == 1,
    };
    let q = (q + u128::from(up)) as i128;
    if neg { -q } else { q }
}

/// An amount in hundredths of a minor unit (`297` = 2.97 cents). Fees and payouts are carried
/// at this precision, as the merchant API's reports print them; it may be negative (a refund
/// line, a debit).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Centi(pub i128);

/// On the wire the report text as a JSON number (`96.03`).
impl Serialize for Centi {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Centi {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        Centi::parse_report(raw.get().trim().trim_matches('"')).map_err(D::Error::custom)
    }
}

impl Centi {
    /// Whole minor units.
    pub fn from_minor(minor: i64) -> Centi {
        Centi(i128::from(minor) * 100)
    }

    /// Whole minor units contained, rounded toward zero, and the rest.
    pub fn split_minor(self) -> (i64, Centi) {
        let whole = self.0 / 100;
        (whole as i64, Centi(self.0 - whole * 100))
    }

    /// As the reports print it: minor units with exactly two decimals (`96.03`, `-99.00`).
    pub fn to_report(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let a = self.0.unsigned_abs();
        format!("{sign}{}.{:02}", a / 100, a % 100)
    }

    /// Parses [`Centi::to_report`]'s text (`96.03`, `-99.00`, `99`).
    pub fn parse_report(s: &str) -> Result<Centi, String> {
        let (neg, body) = match s.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, s),
        };
        let d = Dec::parse(body)?;
        if d.scale() > 2 {
            return Err(format!("`{s}` has more than two decimals"));
        }
        let v = d.units() * 10i128.pow(2 - d.scale());
        Ok(Centi(if neg { -v } else { v }))
    }

    /// The report text as a JSON number.
    pub fn to_json(self) -> Box<serde_json::value::RawValue> {
        json_number(&self.to_report())
    }
}

impl std::ops::Add for Centi {
    type Output = Centi;
    fn add(self, o: Centi) -> Centi {
        Centi(self.0 + o.0)
    }
}

impl std::ops::Sub for Centi {
    type Output = Centi;
    fn sub(self, o: Centi) -> Centi {
        Centi(self.0 - o.0)
    }
}

impl std::iter::Sum for Centi {
    fn sum<I: Iterator<Item = Centi>>(it: I) -> Centi {
        it.fold(Centi(0), |a, b| a + b)
    }
}

impl fmt::Debug for Centi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_report())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly_and_print_as_written() {
        let r = Dec::parse("0.1416").unwrap();
        assert_eq!((r.units(), r.scale()), (1416, 4));
        assert_eq!(r.to_string(), "0.1416");
        assert_eq!(Dec::parse("3").unwrap().to_string(), "3");
        assert_eq!(Dec::parse("3.0").unwrap().to_string(), "3.0");
        for bad in [
            "",
            ".5",
            "5.",
            "-1",
            "1e3",
            "0.1.2",
            "1,5",
            "0.1234567890123",
        ] {
            assert!(Dec::parse(bad).is_err(), "{bad}");
        }
        assert!(Dec::parse("1234567890123456789").is_err());
    }

    #[test]
    fn a_rate_is_a_json_number_without_passing_through_a_float() {
        let r = Dec::parse("0.1416").unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "0.1416");
        let back: Dec = serde_json::from_str("0.1416").unwrap();
        assert_eq!(back, r);
        let s: Dec = serde_json::from_str("\"7.0621\"").unwrap();
        assert_eq!(s.to_string(), "7.0621");
    }

    #[test]
    fn rounding_is_half_to_even_and_symmetric() {
        assert_eq!(div_round(25, 10), 2);
        assert_eq!(div_round(35, 10), 4);
        assert_eq!(div_round(26, 10), 3);
        assert_eq!(div_round(-25, 10), -2);
        assert_eq!(div_round(-26, 10), -3);
        assert_eq!(div_round(989_784, 10_000), 99);
    }

    #[test]
    fn centi_amounts_print_with_two_decimals() {
        assert_eq!(Centi(9603).to_report(), "96.03");
        assert_eq!(Centi(-9900).to_report(), "-99.00");
        assert_eq!(Centi(5).to_report(), "0.05");
        assert_eq!(Centi(-250).split_minor(), (-2, Centi(-50)));
        for c in [Centi(9603), Centi(-9900), Centi(0), Centi(7)] {
            let back: Centi = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back, c);
        }
        assert_eq!(serde_json::to_string(&Centi(9603)).unwrap(), "96.03");
    }
}
