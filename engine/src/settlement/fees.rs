//! Settlement fees per channel and merchant: a percentage of the settled amount plus a fixed
//! part, from the `[settlement]` configuration.
//!
//! `fee_centi = round_half_even(settlement_minor × percent)` (in hundredths of a minor unit)
//! `+ fixed_minor × 100`, capped at the settled amount so a payout is never negative. Refunds
//! carry no fee and return none (see `docs/settlement.md`). It does not convert currencies.

use super::amount::{Centi, Dec, div_round};
use serde::{Deserialize, Serialize};

/// One fee rule; the most specific rule matching a transaction applies (merchant and channel,
/// then merchant, then channel, then the default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeRule {
    /// Channel this rule is for; absent: every channel.
    #[serde(default)]
    pub channel: Option<String>,
    /// Merchant id (`m_…`) this rule is for; absent: every merchant.
    #[serde(default)]
    pub merchant: Option<String>,
    /// Percentage of the settled amount, as a decimal string (`"2.9"` = 2.9 %).
    pub percent: String,
    /// Fixed part, in minor units of the settlement currency.
    #[serde(default)]
    pub fixed_minor: i64,
}

/// A fee: percentage and fixed part, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fee {
    /// Percent (`3` = 3 %).
    pub percent: Dec,
    /// Minor units of the settlement currency.
    pub fixed_minor: i64,
}

impl Fee {
    /// No fee.
    pub fn zero() -> Fee {
        Fee {
            percent: Dec::zero(),
            fixed_minor: 0,
        }
    }

    /// Parses a percentage string (0 to 100) and a fixed part (0 to 10^12 minor units).
    pub fn parse(percent: &str, fixed_minor: i64) -> Result<Fee, String> {
        let p = Dec::parse(percent).map_err(|e| format!("fee percent: {e}"))?;
        let hundred = 100i128 * 10i128.pow(p.scale());
        if p.units() > hundred {
            return Err(format!("fee percent {p} is above 100"));
        }
        if !(0..=1_000_000_000_000).contains(&fixed_minor) {
            return Err("fee fixed_minor must be 0 to 10^12 minor units".into());
        }
        Ok(Fee {
            percent: p,
            fixed_minor,
        })
    }

    /// The fee on a settled amount of `settlement_minor` (≥ 0), never above it.
    pub fn on(&self, settlement_minor: i64) -> Centi {
        let s = i128::from(settlement_minor.max(0));
        // centi = minor × 100 × percent / 100 = minor × percent.
        let pct = div_round(s * self.percent.units(), 10i128.pow(self.percent.scale()));
        let fee = pct + i128::from(self.fixed_minor) * 100;
        Centi(fee.min(s * 100))
    }
}

/// Fee rules, checked once when the configuration is loaded.
#[derive(Debug, Clone)]
pub struct FeeSchedule {
    default: Fee,
    rules: Vec<(Option<String>, Option<String>, Fee)>,
}

impl FeeSchedule {
    /// Checks the default fee and every rule.
    pub fn new(default: Fee, rules: &[FeeRule]) -> Result<FeeSchedule, String> {
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let fee = Fee::parse(&r.percent, r.fixed_minor)
                .map_err(|e| format!("settlement.fees[{i}]: {e}"))?;
            out.push((r.merchant.clone(), r.channel.clone(), fee));
        }
        Ok(FeeSchedule {
            default,
            rules: out,
        })
    }

    /// No fees at all.
    pub fn none() -> FeeSchedule {
        FeeSchedule {
            default: Fee::zero(),
            rules: Vec::new(),
        }
    }

    /// The fee for one merchant's transaction on one channel.
    pub fn fee_for(&self, merchant: &str, channel: &str) -> Fee {
        let mut best: Option<(u8, Fee)> = None;
        for (m, c, fee) in &self.rules {
            let m_ok = m.as_deref().is_none_or(|m| m == merchant);
            let c_ok = c.as_deref().is_none_or(|c| c == channel);
            if !(m_ok && c_ok) {
                continue;
            }
            let rank = u8::from(m.is_some()) * 2 + u8::from(c.is_some());
            if best.is_none_or(|(r, _)| rank > r) {
                best = Some((rank, *fee));
            }
        }
        best.map_or(self.default, |(_, f)| f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_example_takes_2_97_of_99() {
        let fee = Fee::parse("3", 0).unwrap();
        assert_eq!(fee.on(99), Centi(297));
        assert_eq!(Centi::from_minor(99) - fee.on(99), Centi(9603));
    }

    #[test]
    fn fixed_parts_add_and_fees_never_exceed_the_settlement() {
        let fee = Fee::parse("2.9", 30).unwrap();
        // 1000 × 2.9 % = 29.00, + 30 = 59.00 minor units.
        assert_eq!(fee.on(1000), Centi(5900));
        assert_eq!(fee.on(10), Centi(1000));
        assert!(Fee::parse("100.5", 0).is_err());
        assert!(Fee::parse("3", -1).is_err());
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let rules = vec![
            FeeRule {
                channel: Some("alipay".into()),
                merchant: None,
                percent: "3".into(),
                fixed_minor: 0,
            },
            FeeRule {
                channel: None,
                merchant: Some("m_1".into()),
                percent: "1".into(),
                fixed_minor: 0,
            },
            FeeRule {
                channel: Some("alipay".into()),
                merchant: Some("m_1".into()),
                percent: "0.5".into(),
                fixed_minor: 0,
            },
        ];
        let s = FeeSchedule::new(Fee::parse("2", 0).unwrap(), &rules).unwrap();
        assert_eq!(s.fee_for("m_2", "wechat").percent.to_string(), "2");
        assert_eq!(s.fee_for("m_2", "alipay").percent.to_string(), "3");
        assert_eq!(s.fee_for("m_1", "wechat").percent.to_string(), "1");
        assert_eq!(s.fee_for("m_1", "alipay").percent.to_string(), "0.5");
    }
}
