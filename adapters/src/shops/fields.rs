//! Reading values out of shop platforms' JSON: text at a pointer, quantities, decimal amounts
//! in a currency's minor units, order lines and carrier codes. Shared by the platform modules;
//! which pointer holds what is each platform's business, not this module's.

use super::{Defaults, Mapped, ShopCustomer, ShopItem, ShopOrder};
use ipay_engine::engine::AmountInput;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::money::Currency;
use serde_json::Value;

/// A carrier code from a shipping method's name: its first word, upper case
/// (`PostNL Standard` → `POSTNL`, `dhl_express` → `DHL`).
pub fn carrier_code(name: &str) -> Option<String> {
    let first = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| !w.is_empty())?;
    (first.len() <= 32).then(|| first.to_ascii_uppercase())
}

/// Parses a decimal amount in major units (`12.50`, `12,5`, `1250`) into minor units of a
/// currency with `exp` decimals. No thousands separators, no signs, no exponents. Shop payloads
/// and bulk order files write amounts this way.
pub fn parse_major(s: &str, exp: u8) -> Result<i64, String> {
    let bad = || {
        format!(
            "`{}` is not an amount like 12.50",
            s.chars().take(40).collect::<String>()
        )
    };
    let s = s.trim();
    let (int, frac) = match s.find(['.', ',']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || int.len() > 15
    {
        return Err(bad());
    }
    if frac.len() > exp as usize {
        return Err(format!("has more than {exp} decimals for this currency"));
    }
    let mut v: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    for _ in 0..exp {
        v = v.checked_mul(10).ok_or_else(bad)?;
    }
    if !frac.is_empty() {
        let f: i64 = frac.parse().map_err(|_| bad())?;
        v = v
            .checked_add(f * 10i64.pow(u32::from(exp) - frac.len() as u32))
            .ok_or_else(bad)?;
    }
    Ok(v)
}

/// Text at a JSON pointer: strings as they are, numbers printed.
pub(crate) fn t(v: &Value, ptr: &str) -> Option<String> {
    match v.pointer(ptr)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Text at a JSON pointer, empty when absent.
pub(crate) fn ts(v: &Value, ptr: &str) -> String {
    t(v, ptr).unwrap_or_default()
}

/// The present parts, space-separated (first and last name, street and number).
pub(crate) fn join(parts: &[Option<String>]) -> String {
    parts
        .iter()
        .flatten()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A many2one-like value: `"EUR"`, `[1, "EUR"]` or `{"display_name": "EUR"}`.
pub(crate) fn name_of(v: &Value, ptr: &str) -> Option<String> {
    match v.pointer(ptr)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.get(1).and_then(Value::as_str).map(str::to_string),
        Value::Object(o) => o
            .get("display_name")
            .or_else(|| o.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// Minor units of a decimal amount written as a string or a JSON number in `currency`;
/// trailing zeros beyond the currency's exponent are allowed (`49.9500`).
pub(crate) fn minor(v: &Value, ptr: &str, currency: &str, field: &str) -> EngineResult<i64> {
    let Some(raw) = t(v, ptr) else {
        return Ok(0);
    };
    let exp = Currency::parse(currency).map(|c| c.exponent()).unwrap_or(2);
    let mut s = raw.clone();
    if let Some(dot) = s.find('.') {
        while s.len() > dot + 1 + exp as usize && s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    parse_major(&s, exp).map_err(|r| {
        EngineError::invalid(
            "webhook_payload_invalid",
            field.to_string(),
            format!("`{field}` {r}"),
        )
    })
}

/// A quantity written as a JSON number (whole) or a string; 0 when unreadable, which the
/// order validation refuses.
pub(crate) fn qty(v: &Value, ptr: &str) -> u32 {
    match v.pointer(ptr) {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .and_then(|q| u32::try_from(q).ok())
            .unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// Where one order line keeps its parts: `(sku, name, quantity, pointer of the unit price)`.
pub(crate) type LineParts = (String, String, u32, String);

/// The order lines of a JSON array; a line without a SKU uses its name.
pub(crate) fn items(
    list: Option<&Value>,
    currency: &str,
    f: &dyn Fn(&Value) -> LineParts,
) -> EngineResult<Vec<ShopItem>> {
    let mut out = Vec::new();
    for (i, it) in list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let (sku, name, q, price_ptr) = f(it);
        let unit_price = minor(it, &price_ptr, currency, &format!("items[{i}].unit_price"))?;
        out.push(ShopItem {
            sku: if sku.is_empty() { name.clone() } else { sku },
            name,
            qty: q,
            unit_price,
        });
    }
    Ok(out)
}

/// The carrier code of a shipping method's name, else the connection's default, else empty.
pub(crate) fn carrier(named: Option<String>, d: &Defaults<'_>) -> String {
    named
        .as_deref()
        .and_then(carrier_code)
        .or(d.carrier.map(str::to_string))
        .unwrap_or_default()
}

/// A mapped order from its parts.
pub(crate) fn order(
    external_id: Option<String>,
    customer: ShopCustomer,
    items: Vec<ShopItem>,
    value: i64,
    currency: String,
    carrier_code: String,
) -> Mapped {
    Mapped::Order(Box::new(ShopOrder {
        external_id,
        customer,
        items,
        amount: AmountInput { value, currency },
        carrier_code,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_amounts_parse_with_the_currency_exponent() {
        assert_eq!(parse_major("12.50", 2), Ok(1250));
        assert_eq!(parse_major("12,5", 2), Ok(1250));
        assert_eq!(parse_major("12", 2), Ok(1200));
        assert_eq!(parse_major("500", 0), Ok(500));
        assert_eq!(parse_major("1.250", 3), Ok(1250));
        assert!(parse_major("1.234", 2).is_err());
        assert!(parse_major("1,234.50", 2).is_err());
        assert!(parse_major("-3", 2).is_err());
        assert!(parse_major("abc", 2).is_err());
        assert!(parse_major(".", 2).is_err());
    }

    #[test]
    fn carrier_codes_come_from_the_first_word() {
        assert_eq!(carrier_code("PostNL Standaard").as_deref(), Some("POSTNL"));
        assert_eq!(carrier_code("dhl_express").as_deref(), Some("DHL"));
        assert_eq!(carrier_code("  ").as_deref(), None);
    }
}
