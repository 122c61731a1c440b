//! Foreign exchange for settlement: the daily rate table (loaded from a JSON file or URL),
//! the conversion of a payer amount into the settlement currency, and the
//! [`IntentSettlement`] a succeeded intent carries.
//!
//! Conversion: `settlement_minor = round_half_even(payer_minor × rate × 10^(e_to − e_from))`,
//! where `e` are the currencies' ISO 4217 exponents, all in exact integer arithmetic. It does
//! not decide which currency a merchant settles in (that is [`super::Settlement`]) nor fees.

use super::amount::{Dec, div_round};
use crate::clock::Timestamp;
use crate::money::{Currency, Money};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Source name of the identity rate used when payer and settlement currency are the same.
pub const IDENTITY_SOURCE: &str = "identity";
/// Largest rates document accepted, bytes.
pub const MAX_RATES_BYTES: usize = 1024 * 1024;

/// What a succeeded intent settles as: `{value, currency, rate}` as the merchant API shows it,
/// plus where the rate came from and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IntentSettlement {
    /// Minor units of `currency` (rounded half to even).
    pub value: i64,
    #[schema(value_type = String, example = "USD")]
    pub currency: Currency,
    /// Settlement-currency units per payer-currency unit, exact as published.
    #[schema(value_type = f64, example = 0.1416)]
    pub rate: Dec,
    /// Who published the rate (`identity` when no conversion was needed).
    pub rate_source: String,
    /// When the rate was published (the rate table's `as_of`).
    #[schema(value_type = String, format = DateTime)]
    pub rate_timestamp: Timestamp,
}

/// A rates document as stored in a file or served at a URL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatesDocument {
    /// `true` for made-up rates (the shipped sample); logged loudly at start.
    #[serde(default)]
    pub sample: bool,
    /// Free text for people reading the file.
    #[serde(default)]
    pub note: Option<String>,
    /// Publisher of the rates, recorded on every settlement.
    pub source: String,
    /// When the rates were published (RFC 3339).
    pub as_of: Timestamp,
    /// `"FROM/TO": rate`, e.g. `"CNY/USD": "0.1416"` (string or JSON number, parsed exactly).
    pub rates: HashMap<String, Dec>,
}

/// The rates in force.
#[derive(Debug, Clone)]
pub struct RateTable {
    source: String,
    as_of: Timestamp,
    sample: bool,
    pairs: HashMap<(Currency, Currency), Dec>,
}

impl RateTable {
    /// A table with no rates: only same-currency settlement works.
    pub fn empty() -> RateTable {
        RateTable {
            source: IDENTITY_SOURCE.into(),
            as_of: Timestamp(0),
            sample: false,
            pairs: HashMap::new(),
        }
    }

    /// Parses and checks a rates document (JSON): known currency codes, non-zero rates.
    pub fn from_json(bytes: &[u8]) -> Result<RateTable, String> {
        if bytes.len() > MAX_RATES_BYTES {
            return Err(format!(
                "rates document is larger than {MAX_RATES_BYTES} bytes"
            ));
        }
        let doc: RatesDocument =
            serde_json::from_slice(bytes).map_err(|e| format!("rates document: {e}"))?;
        if doc.source.is_empty() || doc.source.len() > 200 {
            return Err("rates document: `source` must be 1 to 200 characters".into());
        }
        let mut pairs = HashMap::with_capacity(doc.rates.len());
        for (pair, rate) in doc.rates {
            let (from, to) = pair
                .split_once('/')
                .ok_or_else(|| format!("rates document: `{pair}` is not FROM/TO"))?;
            let from = Currency::parse(from).map_err(|e| format!("rates document: {e}"))?;
            let to = Currency::parse(to).map_err(|e| format!("rates document: {e}"))?;
            if rate.is_zero() {
                return Err(format!("rates document: the rate of {pair} is zero"));
            }
            pairs.insert((from, to), rate);
        }
        Ok(RateTable {
            source: doc.source,
            as_of: doc.as_of,
            sample: doc.sample,
            pairs,
        })
    }

    /// Whether these are sample rates.
    pub fn is_sample(&self) -> bool {
        self.sample
    }

    /// Number of currency pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the table has no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Converts `payer` into `to`: the identity when the currencies match, else the published
    /// pair. `None` when the table has no rate for the pair.
    pub fn settle(&self, payer: Money, to: Currency) -> Option<IntentSettlement> {
        let (rate, source, at) = if payer.currency == to {
            (Dec::one(), IDENTITY_SOURCE.to_string(), self.as_of)
        } else {
            let r = *self.pairs.get(&(payer.currency, to))?;
            (r, self.source.clone(), self.as_of)
        };
        let value = convert(payer.value, payer.currency, to, rate)?;
        Some(IntentSettlement {
            value,
            currency: to,
            rate,
            rate_source: source,
            rate_timestamp: at,
        })
    }
}

/// `minor` units of `from` in minor units of `to` at `rate`, rounded half to even; `None` on
/// overflow (impossible within [`crate::money::MAX_MINOR_UNITS`] and the decimal limits).
/// Negative amounts (refund reversals) round symmetrically.
pub fn convert(minor: i64, from: Currency, to: Currency, rate: Dec) -> Option<i64> {
    let shift = i32::from(to.exponent()) - i32::from(from.exponent());
    let mut num = i128::from(minor).checked_mul(rate.units())?;
    let mut den = 10i128.checked_pow(rate.scale())?;
    if shift >= 0 {
        num = num.checked_mul(10i128.pow(shift as u32))?;
    } else {
        den = den.checked_mul(10i128.pow((-shift) as u32))?;
    }
    i64::try_from(div_round(num, den)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RateTable {
        RateTable::from_json(
            br#"{"source":"test","as_of":"2026-05-27T00:00:00Z",
                "rates":{"CNY/USD":"0.1416","USD/JPY":155.25,"JPY/KWD":"0.002"}}"#,
        )
        .unwrap()
    }

    #[test]
    fn the_seed_example_settles_699_cny_as_99_us_cents() {
        let s = table()
            .settle(
                Money::from_parts(699, "CNY").unwrap(),
                Currency::parse("USD").unwrap(),
            )
            .unwrap();
        assert_eq!(s.value, 99);
        assert_eq!(s.rate.to_string(), "0.1416");
        assert_eq!(s.rate_source, "test");
        assert_eq!(s.rate_timestamp.to_string(), "2026-05-27T00:00:00Z");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["rate"].to_string(), "0.1416");
    }

    #[test]
    fn conversion_follows_the_currencies_exponents() {
        let t = table();
        // 10.00 USD × 155.25 = 1552.5 JPY → 1552 (half to even).
        let s = t
            .settle(
                Money::from_parts(1000, "USD").unwrap(),
                Currency::parse("JPY").unwrap(),
            )
            .unwrap();
        assert_eq!(s.value, 1552);
        // 1000 JPY × 0.002 = 2.000 KWD = 2000 fils.
        let s = t
            .settle(
                Money::from_parts(1000, "JPY").unwrap(),
                Currency::parse("KWD").unwrap(),
            )
            .unwrap();
        assert_eq!(s.value, 2000);
    }

    #[test]
    fn same_currency_settles_at_one_and_missing_pairs_do_not_settle() {
        let t = table();
        let eur = Currency::parse("EUR").unwrap();
        let s = t
            .settle(Money::from_parts(1234, "EUR").unwrap(), eur)
            .unwrap();
        assert_eq!((s.value, s.rate_source.as_str()), (1234, IDENTITY_SOURCE));
        assert!(
            t.settle(Money::from_parts(1, "THB").unwrap(), eur)
                .is_none()
        );
    }

    #[test]
    fn bad_rate_documents_are_refused() {
        for bad in [
            &br#"{"source":"x","as_of":"2026-05-27T00:00:00Z","rates":{"CNYUSD":"1"}}"#[..],
            br#"{"source":"x","as_of":"2026-05-27T00:00:00Z","rates":{"CNY/XXX":"1"}}"#,
            br#"{"source":"x","as_of":"2026-05-27T00:00:00Z","rates":{"CNY/USD":"0"}}"#,
            br#"{"source":"x","as_of":"2026-05-27T00:00:00Z","rates":{"CNY/USD":"-1"}}"#,
            br#"{"source":"x","as_of":"yesterday","rates":{}}"#,
        ] {
            assert!(RateTable::from_json(bad).is_err());
        }
    }
}
