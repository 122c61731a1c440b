//! What each parcel is: which merchant ships it, where its order comes from, which channel the
//! EU payer uses and how its lifecycle ends. Choices are weighted and drawn from a hash of the
//! parcel's sequence number, so a run is reproducible and needs no shared random state.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::{Error, Result};

/// How an order reaches the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `POST /api/orders`, one order per request.
    Api,
    /// A signed Shopify `orders/create` webhook.
    Shopify,
    /// A signed WooCommerce `order.created` webhook.
    Woocommerce,
    /// A row of a bulk CSV upload (`POST /api/orders/upload`).
    Csv,
}

impl Source {
    /// Every source, in report order.
    pub const ALL: [Source; 4] = [
        Source::Api,
        Source::Shopify,
        Source::Woocommerce,
        Source::Csv,
    ];

    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Shopify => "shopify",
            Source::Woocommerce => "woocommerce",
            Source::Csv => "csv",
        }
    }
}

impl FromStr for Source {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Source::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                Error::new(format!(
                    "unknown order source `{s}` (api, shopify, woocommerce, csv)"
                ))
            })
    }
}

/// How a parcel's lifecycle is meant to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Paid through the PSP, OTP given to the driver, delivered.
    Paid,
    /// The payment expires unpaid at the PSP.
    Expired,
    /// The payer's payment fails at the PSP.
    Failed,
    /// The consumer refuses the parcel at the door: never paid, never delivered.
    Refused,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Paid,
        Outcome::Expired,
        Outcome::Failed,
        Outcome::Refused,
    ];

    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Paid => "paid",
            Outcome::Expired => "expired",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
        }
    }
}

impl FromStr for Outcome {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Outcome::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                Error::new(format!(
                    "unknown outcome `{s}` (paid, expired, failed, refused)"
                ))
            })
    }
}

/// A weighted choice among `T`s, parsed from `a=60,b=30,c=10`.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighted<T> {
    items: Vec<(T, u32)>,
    total: u64,
}

/// Largest single weight (keeps sums far from overflow).
const MAX_WEIGHT: u32 = 1_000_000;

impl<T: Copy + PartialEq> Weighted<T> {
    /// A choice from `(item, weight)` pairs; at least one weight must be positive.
    pub fn new(items: Vec<(T, u32)>) -> Result<Self> {
        let items: Vec<(T, u32)> = items.into_iter().filter(|(_, w)| *w > 0).collect();
        if items.iter().any(|(_, w)| *w > MAX_WEIGHT) {
            return Err(Error::new(format!("weights must be at most {MAX_WEIGHT}")));
        }
        let total: u64 = items.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return Err(Error::new("a mix needs at least one positive weight"));
        }
        Ok(Self { items, total })
    }

    /// The item `draw` (any 64-bit value) selects, in proportion to the weights.
    pub fn pick(&self, draw: u64) -> T {
        let mut x = draw % self.total;
        for (item, w) in &self.items {
            let w = u64::from(*w);
            if x < w {
                return *item;
            }
            x -= w;
        }
        // Unreachable: `x < total`, the sum of the weights.
        self.items[self.items.len() - 1].0
    }

    /// The items with a positive weight.
    pub fn items(&self) -> impl Iterator<Item = T> + '_ {
        self.items.iter().map(|(t, _)| *t)
    }
}

impl<T: fmt::Display> fmt::Display for Weighted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.items.iter().map(|(t, w)| format!("{t}={w}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// Parses `name=weight,name=weight` with `parse_name` for the names.
pub fn parse_weights<T>(
    text: &str,
    parse_name: impl Fn(&str) -> Result<T>,
) -> Result<Vec<(T, u32)>> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| Error::new(format!("`{part}`: expected name=weight")))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| Error::new(format!("`{part}`: the weight must be a whole number")))?;
        out.push((parse_name(name.trim())?, weight));
    }
    Ok(out)
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SplitMix64: a well-mixed 64-bit value from `seq` and a per-choice `salt`, so the choices of
/// one parcel are independent of each other.
pub fn draw(seq: u64, salt: u64) -> u64 {
    let mut z = seq
        .wrapping_add(salt.wrapping_mul(0xD6E8_FEB8_6659_FD93))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_follow_the_weights() {
        let w = Weighted::new(vec![(Outcome::Paid, 80), (Outcome::Refused, 20)]).expect("mix");
        let paid = (0..10_000u64)
            .filter(|i| w.pick(draw(*i, 1)) == Outcome::Paid)
            .count();
        assert!((7_700..=8_300).contains(&paid), "{paid}");
    }

    #[test]
    fn weights_parse_and_bad_ones_are_refused() {
        let w = parse_weights("api=60, csv=40", str::parse::<Source>).expect("parse");
        assert_eq!(w, vec![(Source::Api, 60), (Source::Csv, 40)]);
        assert!(parse_weights("api", str::parse::<Source>).is_err());
        assert!(parse_weights("fax=1", str::parse::<Source>).is_err());
        assert!(Weighted::new(vec![(Source::Api, 0)]).is_err());
    }
}
