//! What every channel's adapter shares: reading a merchant's credential JSON field by field
//! (errors name fields, never values), and turning callback fields into the engine's types
//! (intent ids, money, decimal amounts, the intent in a callback path, a form value).
//!
//! It owns no channel's wire format (each lives in its own folder, [`crate::alipay`],
//! [`crate::wechat`], …), no transport ([`crate::http`]) and no key handling ([`crate::rsa2`]).

use ipay_engine::channel::CallbackError;
use ipay_engine::ids::PaymentIntentId;
use ipay_engine::money::{Currency, Money};
use serde_json::{Map, Value};

/// Reads a merchant's credential object field by field, so error messages name fields and
/// never quote values.
pub(crate) struct Fields<'a> {
    channel: &'static str,
    obj: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// Checks that `value` is an object whose keys are all in `allowed`.
    pub(crate) fn new(
        channel: &'static str,
        value: &'a Value,
        allowed: &[&str],
    ) -> Result<Self, String> {
        let obj = value
            .as_object()
            .ok_or_else(|| format!("{channel} credentials must be a JSON object"))?;
        if let Some(unknown) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            let name: String = unknown.chars().take(40).collect();
            return Err(format!(
                "{channel} credentials: unknown field `{name}` (expected: {})",
                allowed.join(", ")
            ));
        }
        Ok(Fields { channel, obj })
    }

    /// A required, non-empty string field.
    pub(crate) fn req(&self, name: &str) -> Result<&'a str, String> {
        match self.obj.get(name) {
            None | Some(Value::Null) => {
                Err(format!("{} credentials: `{name}` is missing", self.channel))
            }
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.as_str()),
            Some(Value::String(_)) => {
                Err(format!("{} credentials: `{name}` is empty", self.channel))
            }
            Some(_) => Err(format!(
                "{} credentials: `{name}` must be a string",
                self.channel
            )),
        }
    }

    /// An error about field `name` (the reason must not contain the value).
    pub(crate) fn bad(&self, name: &str, reason: impl std::fmt::Display) -> String {
        format!("{} credentials: `{name}` {reason}", self.channel)
    }
}

/// Parses an intent id out of a callback field.
pub(crate) fn intent_id(field: &str, value: &str) -> Result<PaymentIntentId, CallbackError> {
    PaymentIntentId::parse(value)
        .map_err(|_| CallbackError::Malformed(format!("`{field}` is not a payment intent id")))
}

/// Money from a callback's minor units and currency code.
pub(crate) fn money(value: i64, currency: &str) -> Result<Money, CallbackError> {
    let currency = Currency::parse(&currency.to_ascii_uppercase())
        .map_err(|_| CallbackError::Malformed("unknown currency".into()))?;
    Money::new(value, currency).map_err(|_| CallbackError::Malformed("invalid amount".into()))
}

/// Parses a decimal amount with at most two decimals (`"6.99"`, `"100"`) into minor units,
/// without floats.
pub(crate) fn parse_decimal_2(text: &str) -> Option<i64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || whole.len() > 12
        || frac.len() > 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().ok()? * 10,
        _ => frac.parse().ok()?,
    };
    whole.checked_mul(100)?.checked_add(frac)
}

/// The `pi_…` id in the last segment of a callback's path, if any. Channels whose callbacks
/// name the intent only inside an encrypted body (WeChat Pay) put it there in the notify URL.
pub(crate) fn intent_from_path(path: &str) -> Option<&str> {
    let path = path.split('?').next().unwrap_or(path);
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    last.starts_with(PaymentIntentId::PREFIX).then_some(last)
}

/// Finds `name=value` in a form body without decoding anything else; the value is returned
/// only when it needs no decoding (intent ids never do).
pub(crate) fn form_value<'b>(body: &'b str, name: &str) -> Option<&'b str> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.contains(['%', '+'])).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_amounts_parse_without_floats() {
        assert_eq!(parse_decimal_2("6.99"), Some(699));
        assert_eq!(parse_decimal_2("6.9"), Some(690));
        assert_eq!(parse_decimal_2("100"), Some(10_000));
        assert_eq!(parse_decimal_2("0.01"), Some(1));
        for bad in ["", ".5", "1.234", "-1", "1e3", "1,00", " 1"] {
            assert_eq!(parse_decimal_2(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn intent_is_read_from_the_last_path_segment() {
        assert_eq!(intent_from_path(""), None);
        assert_eq!(
            intent_from_path("/callbacks/wechat/pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB"),
            Some("pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB")
        );
        assert_eq!(intent_from_path("/callbacks/wechat"), None);
    }

    #[test]
    fn credential_errors_name_fields_not_values() {
        let v = serde_json::json!({"api_key": 12, "secret_thing": "hunter2"});
        let err = Fields::new("x", &v, &["api_key"]).err().unwrap();
        assert!(err.contains("secret_thing") && !err.contains("hunter2"));
        let v = serde_json::json!({"api_key": 12});
        let f = Fields::new("x", &v, &["api_key"]).unwrap();
        assert!(f.req("api_key").unwrap_err().contains("must be a string"));
    }
}
