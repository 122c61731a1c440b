//! Alipay (支付宝) open-platform channel: the RSA2 signature scheme (SHA256withRSA, PKCS#1 v1.5)
//! over Alipay's sorted `k=v&k=v` strings, the form parameters of an `alipay.trade.precreate`
//! (QR code) request, verification of its synchronous answer, and verification of the
//! asynchronous notify (异步通知) that Alipay POSTs when a trade changes state.
//!
//! This module owns the wire format and the cryptography only: key parsing (PEM or Alipay's
//! bare base64 strings, at least 2048 bits), the string to sign, signing, verification, and the
//! form encoding of parameters. It does not own HTTP transport, retries, idempotency, key storage
//! or rotation, nor the business checks that follow a valid signature (that `app_id`,
//! `out_trade_no` and `total_amount` match our intent, and what each `trade_status` means for
//! it): those belong to the engine and the gateway.
//!
//! Sources (facts only, no code taken):
//! - Signing a request, "自行实现签名" (<https://opendocs.alipay.com/common/02kf5q>): all request
//!   parameters except `sign` (so `sign_type` *is* signed), empty values dropped, sorted by key
//!   in ASCII order, joined as `key=value` with `&`, values raw (not URL-encoded).
//! - Verifying the async notify, "异步通知验签" (<https://opendocs.alipay.com/common/02mse7>), also
//!   stated in Alipay's signature-mechanism page
//!   (<https://docs.antom.com/ac/app_cn/ds_mechanism>): drop `sign` *and* `sign_type`, URL-decode
//!   the rest, sort, join the same way, verify with the Alipay public key; answer the literal
//!   `success` once processed.
//! - Verifying a synchronous answer: the signature covers the exact text of the
//!   `<method>_response` value, braces and quotes included, as it appears in the body (Alipay
//!   developer Q&A, <https://developer.aliyun.com/ask/285102>); `sign` is its sibling.
//! - `alipay.trade.precreate` parameters (<https://opendocs.alipay.com/open/02ekfg>): `timestamp`
//!   is `yyyy-MM-dd HH:mm:ss` in Beijing time (GMT+8), `total_amount` in yuan with two decimals,
//!   0.01 to 100000000.00.

use std::borrow::Cow;
use std::fmt;

use ipay_engine::clock::Timestamp;
use ipay_engine::money::Money;

use crate::rsa2;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// Production gateway of the Alipay open platform.
pub const GATEWAY_URL: &str = "https://openapi.alipay.com/gateway.do";
/// Sandbox gateway of the Alipay open platform.
pub const SANDBOX_GATEWAY_URL: &str = "https://openapi-sandbox.dl.alipaydev.com/gateway.do";
/// API method name of the QR-code pre-order.
pub const PRECREATE_METHOD: &str = "alipay.trade.precreate";
/// API method name of a refund.
pub const REFUND_METHOD: &str = "alipay.trade.refund";
/// API method name of a refund status query.
pub const REFUND_QUERY_METHOD: &str = "alipay.trade.fastpay.refund.query";
/// The body to answer an async notify with once it has been verified and processed; anything
/// else makes Alipay retry the notification.
pub const NOTIFY_SUCCESS: &str = "success";
/// Smallest RSA modulus accepted for any key, in bits.
pub const MIN_KEY_BITS: usize = rsa2::MIN_KEY_BITS;
/// The `code` of a successful synchronous answer.
pub const SUCCESS_CODE: &str = "10000";

/// Largest `total_amount` Alipay accepts, in fen (100000000.00 CNY).
const MAX_AMOUNT_FEN: i64 = 10_000_000_000;

/// What can go wrong signing, building, parsing or verifying Alipay messages. No variant ever
/// carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlipayError {
    /// The key text could not be parsed as the kind of key expected.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// The key parsed but its modulus is shorter than [`MIN_KEY_BITS`].
    #[error("RSA key of {bits} bits is too small: Alipay RSA2 needs at least {MIN_KEY_BITS} bits")]
    KeyTooSmall {
        /// Size of the rejected modulus.
        bits: usize,
    },
    /// A message that must be signed carries no (or an empty) `sign`.
    #[error("missing `sign`")]
    MissingSign,
    /// `sign` is not base64 of a plausible RSA signature.
    #[error("`sign` is not valid base64 of an RSA signature")]
    InvalidSignatureEncoding,
    /// The signature does not match the content and key.
    #[error("signature verification failed")]
    BadSignature,
    /// `sign_type` names a scheme other than RSA2.
    #[error("unsupported sign_type `{0}` (only RSA2 is accepted)")]
    UnsupportedSignType(String),
    /// A parameter name occurs more than once.
    #[error("parameter `{0}` occurs more than once")]
    DuplicateParam(String),
    /// A request field is empty, too long or contains characters Alipay refuses.
    #[error("invalid `{field}`: {reason}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// Alipay collects CNY only through this API.
    #[error("Alipay precreate takes CNY only, got {0}")]
    UnsupportedCurrency(String),
    /// The amount is outside Alipay's 0.01..=100000000.00 range.
    #[error("amount of {0} fen is outside Alipay's range")]
    AmountOutOfRange(i64),
    /// RSA signing failed (should not happen with a validated key).
    #[error("RSA signing failed")]
    Signing,
    /// An `application/x-www-form-urlencoded` body could not be decoded.
    #[error("malformed form body: {0}")]
    MalformedForm(&'static str),
    /// A synchronous answer is not the JSON shape Alipay documents.
    #[error("malformed response: {0}")]
    MalformedResponse(String),
    /// Alipay answered with a business error (`code` other than `10000`).
    #[error("Alipay error {code} {msg}: {sub_code} {sub_msg}")]
    Business {
        /// Gateway code, e.g. `40004`.
        code: String,
        /// Gateway message.
        msg: String,
        /// Business error code, e.g. `ACQ.TRADE_HAS_SUCCESS`; empty when absent.
        sub_code: String,
        /// Business error message; empty when absent.
        sub_msg: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// Our application private key (应用私钥), used to sign requests. `Debug` shows the key size
/// only.
#[derive(Clone)]
pub struct AlipayPrivateKey(rsa2::PrivateKey);

/// A public key that verifies RSA2 signatures: Alipay's public key (支付宝公钥) for notifies and
/// answers, or our application public key in tests and in the PSP simulator.
#[derive(Clone)]
pub struct AlipayPublicKey(rsa2::PublicKey);

fn verify_error(e: rsa2::VerifyError) -> AlipayError {
    match e {
        rsa2::VerifyError::Encoding => AlipayError::InvalidSignatureEncoding,
        rsa2::VerifyError::Mismatch => AlipayError::BadSignature,
    }
}

fn key_error(e: rsa2::KeyError) -> AlipayError {
    match e {
        rsa2::KeyError::Invalid(why) => AlipayError::InvalidKey(why),
        rsa2::KeyError::TooSmall { bits } => AlipayError::KeyTooSmall { bits },
    }
}

impl AlipayPrivateKey {
    /// Parses a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, AlipayError> {
        rsa2::PrivateKey::from_pem(pem).map(Self).map_err(key_error)
    }

    /// Parses a bare base64 DER private key (PKCS#8 or PKCS#1); whitespace is ignored.
    pub fn from_base64(text: &str) -> Result<Self, AlipayError> {
        rsa2::PrivateKey::from_base64(text)
            .map(Self)
            .map_err(key_error)
    }

    /// Parses either form: PEM when the text starts with `-----BEGIN`, bare base64 otherwise.
    pub fn parse(text: &str) -> Result<Self, AlipayError> {
        rsa2::PrivateKey::parse(text).map(Self).map_err(key_error)
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.0.bits()
    }

    /// The matching public key.
    pub fn public_key(&self) -> AlipayPublicKey {
        AlipayPublicKey(self.0.public_key())
    }

    fn sign_digest(&self, digest: Sha256) -> Result<String, AlipayError> {
        self.0.sign_digest(digest).ok_or(AlipayError::Signing)
    }
}

impl AlipayPublicKey {
    /// Parses a PEM public key: SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`) or PKCS#1
    /// (`BEGIN RSA PUBLIC KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, AlipayError> {
        rsa2::PublicKey::from_pem(pem).map(Self).map_err(key_error)
    }

    /// Parses a bare base64 DER public key (SubjectPublicKeyInfo or PKCS#1); whitespace is
    /// ignored.
    pub fn from_base64(text: &str) -> Result<Self, AlipayError> {
        rsa2::PublicKey::from_base64(text)
            .map(Self)
            .map_err(key_error)
    }

    /// Parses either form: PEM when the text starts with `-----BEGIN`, bare base64 otherwise.
    pub fn parse(text: &str) -> Result<Self, AlipayError> {
        if text.trim_start().starts_with("-----BEGIN") {
            Self::from_pem(text)
        } else {
            Self::from_base64(text)
        }
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.0.bits()
    }

    #[cfg(test)]
    fn verify_digest(&self, digest: Sha256, signature_b64: &str) -> Result<(), AlipayError> {
        self.0
            .verify_digest(digest, signature_b64)
            .map_err(verify_error)
    }

    /// Verifies with `ring` over the concatenated parts (the fast path).
    fn verify_parts<'a>(
        &self,
        parts: impl IntoIterator<Item = &'a [u8]>,
        signature_b64: &str,
    ) -> Result<(), AlipayError> {
        self.0
            .verify_parts(parts, signature_b64)
            .map_err(verify_error)
    }
}

impl fmt::Debug for AlipayPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlipayPrivateKey(RSA-{}, redacted)", self.bits())
    }
}

impl fmt::Debug for AlipayPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlipayPublicKey(RSA-{})", self.bits())
    }
}

// ---------------------------------------------------------------------------------------------
// The string to sign
// ---------------------------------------------------------------------------------------------

/// Which parameters a signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignScope {
    /// Requests we send: everything but `sign` (`sign_type` is signed).
    Request,
    /// Async notifies Alipay sends: everything but `sign` and `sign_type`.
    Notify,
}

/// The parameters a signature covers, sorted by key in byte (ASCII) order, empty values
/// dropped. Duplicate names are refused: they would make the signed string ambiguous.
fn signed_entries<K, V>(
    params: &[(K, V)],
    scope: SignScope,
) -> Result<Vec<(&str, &str)>, AlipayError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut entries: Vec<(&str, &str)> = Vec::with_capacity(params.len());
    for (k, v) in params {
        let (k, v) = (k.as_ref(), v.as_ref());
        let excluded = k == "sign" || (scope == SignScope::Notify && k == "sign_type");
        if !excluded {
            entries.push((k, v));
        }
    }
    // `str` orders by bytes, which is ASCII order for Alipay's (ASCII) parameter names.
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(AlipayError::DuplicateParam(w[0].0.to_owned()));
    }
    entries.retain(|(_, v)| !v.is_empty());
    Ok(entries)
}

/// Feeds `k=v&k=v…` into the hash without building the string.
fn hash_entries(entries: &[(&str, &str)]) -> Sha256 {
    let mut hasher = Sha256::new();
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            hasher.update(b"&");
        }
        hasher.update(k.as_bytes());
        hasher.update(b"=");
        hasher.update(v.as_bytes());
    }
    hasher
}

/// The bytes of `k=v&k=v…` as parts, for verifying without building the string.
fn entry_parts<'a>(entries: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = &'a [u8]> + 'a {
    entries.iter().enumerate().flat_map(|(i, (k, v))| {
        let separator: &[u8] = if i > 0 { b"&" } else { b"" };
        [separator, k.as_bytes(), b"=", v.as_bytes()]
    })
}

/// The exact string a signature covers (for logs and troubleshooting; signing and verification
/// hash the same bytes without building it).
pub fn string_to_sign<K, V>(params: &[(K, V)], scope: SignScope) -> Result<String, AlipayError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let entries = signed_entries(params, scope)?;
    let mut out = String::new();
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    Ok(out)
}

/// Signs request parameters with RSA2 and returns the base64 `sign`: every parameter except
/// `sign` (including `sign_type`), empty values skipped, sorted by key, joined `k=v&k=v` with
/// raw values. Works with `&[(&str, &str)]`, `Vec<(String, String)>`, or a map collected into
/// pairs.
pub fn sign_params<K, V>(params: &[(K, V)], key: &AlipayPrivateKey) -> Result<String, AlipayError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let entries = signed_entries(params, SignScope::Request)?;
    key.sign_digest(hash_entries(&entries))
}

/// Signs notify parameters the way Alipay does (everything except `sign` and `sign_type`). For
/// the PSP simulator and tests; production notifies are signed by Alipay.
pub fn sign_notify<K, V>(params: &[(K, V)], key: &AlipayPrivateKey) -> Result<String, AlipayError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let entries = signed_entries(params, SignScope::Notify)?;
    key.sign_digest(hash_entries(&entries))
}

/// Verifies an async notify. `params` are the form fields as received, already URL-decoded (see
/// [`parse_form`]). `sign` and `sign_type` are left out of the signed string, the rest is
/// sorted and joined, and `sign` is checked with the Alipay public key. A `sign_type` other than
/// `RSA2` is refused. Passing this proves the notify came from Alipay, nothing more: the caller
/// still checks `app_id`, `out_trade_no`, `total_amount` and `trade_status` against its own
/// records, and answers [`NOTIFY_SUCCESS`].
pub fn verify_notify<K, V>(
    params: &[(K, V)],
    alipay_public_key: &AlipayPublicKey,
) -> Result<(), AlipayError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut sign: Option<&str> = None;
    let mut sign_type: Option<&str> = None;
    for (k, v) in params {
        let slot = match k.as_ref() {
            "sign" => &mut sign,
            "sign_type" => &mut sign_type,
            _ => continue,
        };
        if slot.replace(v.as_ref()).is_some() {
            return Err(AlipayError::DuplicateParam(k.as_ref().to_owned()));
        }
    }
    let sign = sign
        .filter(|s| !s.is_empty())
        .ok_or(AlipayError::MissingSign)?;
    if let Some(t) = sign_type
        && t != "RSA2"
    {
        return Err(AlipayError::UnsupportedSignType(
            t.chars().take(16).collect(),
        ));
    }
    let entries = signed_entries(params, SignScope::Notify)?;
    alipay_public_key.verify_parts(entry_parts(&entries), sign)
}

/// Verifies a signed request the way Alipay's gateway does (everything but `sign` is covered,
/// `sign_type` included), with the application public key. For the PSP simulator and tests.
pub fn verify_request<K, V>(
    params: &[(K, V)],
    app_public_key: &AlipayPublicKey,
) -> Result<(), AlipayError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let sign = params
        .iter()
        .find(|(k, _)| k.as_ref() == "sign")
        .map(|(_, v)| v.as_ref())
        .filter(|s| !s.is_empty())
        .ok_or(AlipayError::MissingSign)?;
    let entries = signed_entries(params, SignScope::Request)?;
    app_public_key.verify_parts(entry_parts(&entries), sign)
}

/// Signs the exact text of a synchronous answer's `<method>_response` object, as Alipay does.
/// For the PSP simulator and tests.
pub fn sign_response_node(
    node_json: &str,
    alipay_private_key: &AlipayPrivateKey,
) -> Result<String, AlipayError> {
    alipay_private_key.sign_digest(Sha256::new_with_prefix(node_json.as_bytes()))
}

/// Decodes an `application/x-www-form-urlencoded` body (`+` is a space, `%XX` a byte, UTF-8)
/// and verifies it as an async notify; returns the decoded fields.
pub fn verify_notify_form(
    body: &str,
    alipay_public_key: &AlipayPublicKey,
) -> Result<Vec<(String, String)>, AlipayError> {
    let params = parse_form(body)?;
    verify_notify(&params, alipay_public_key)?;
    Ok(params)
}

// ---------------------------------------------------------------------------------------------
// Form encoding
// ---------------------------------------------------------------------------------------------

/// Decodes an `application/x-www-form-urlencoded` body into name/value pairs, in order.
pub fn parse_form(body: &str) -> Result<Vec<(String, String)>, AlipayError> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((form_decode(k)?, form_decode(v)?))
        })
        .collect()
}

fn form_decode(s: &str) -> Result<String, AlipayError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| hex_value(*b));
                let lo = bytes.get(i + 2).and_then(|b| hex_value(*b));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push((hi << 4) | lo),
                    _ => return Err(AlipayError::MalformedForm("bad percent escape")),
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| AlipayError::MalformedForm("not UTF-8"))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Encodes name/value pairs as an `application/x-www-form-urlencoded` body (UTF-8; only
/// `A-Z a-z 0-9 - . _ *` stay literal, space becomes `+`).
pub fn encode_form<K, V>(params: &[(K, V)]) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = String::new();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        form_encode_into(&mut out, k.as_ref());
        out.push('=');
        form_encode_into(&mut out, v.as_ref());
    }
    out
}

fn form_encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 0x0f) as usize] as char);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// alipay.trade.precreate
// ---------------------------------------------------------------------------------------------

/// What we ask Alipay to pre-create: the order the QR code will pay.
#[derive(Debug, Clone)]
pub struct PrecreateOrder<'a> {
    /// Our order number (`out_trade_no`): 1 to 64 of `A-Z a-z 0-9 _`.
    pub out_trade_no: &'a str,
    /// The amount; must be CNY.
    pub amount: Money,
    /// Order title shown to the payer: 1 to 256 characters, without `/`, `=` or `&`.
    pub subject: &'a str,
    /// Absolute expiry, sent as `time_expire` (Beijing time) when set.
    pub expires_at: Option<Timestamp>,
}

#[derive(Serialize)]
struct PrecreateBizContent<'a> {
    out_trade_no: &'a str,
    total_amount: &'a str,
    subject: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_expire: Option<&'a str>,
}

/// A signed request, ready to be POSTed as a form to [`GATEWAY_URL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    params: Vec<(&'static str, String)>,
}

impl SignedRequest {
    /// All form parameters, `sign` last.
    pub fn params(&self) -> &[(&'static str, String)] {
        &self.params
    }

    /// One parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `application/x-www-form-urlencoded; charset=utf-8` body.
    pub fn to_form_body(&self) -> String {
        encode_form(&self.params)
    }
}

/// Formats an instant the way Alipay's `timestamp` and `time_expire` want it:
/// `yyyy-MM-dd HH:mm:ss` in Beijing time (UTC+8, no daylight saving).
pub fn beijing_time(at: Timestamp) -> String {
    at.plus_secs(8 * 3600)
        .to_datetime()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Formats a CNY amount in fen as Alipay's `total_amount` (`"6.99"`), with integer arithmetic
/// only.
pub fn format_total_amount(amount: Money) -> Result<String, AlipayError> {
    if amount.currency.code() != "CNY" {
        return Err(AlipayError::UnsupportedCurrency(
            amount.currency.code().to_owned(),
        ));
    }
    let fen = amount.value;
    if !(1..=MAX_AMOUNT_FEN).contains(&fen) {
        return Err(AlipayError::AmountOutOfRange(fen));
    }
    Ok(format!("{}.{:02}", fen / 100, fen % 100))
}

fn check_out_trade_no(value: &str) -> Result<(), AlipayError> {
    let field = "out_trade_no";
    if value.is_empty() || value.len() > 64 {
        return Err(AlipayError::InvalidField {
            field,
            reason: "must be 1 to 64 characters",
        });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(AlipayError::InvalidField {
            field,
            reason: "only letters, digits and `_` are allowed",
        });
    }
    Ok(())
}

fn check_subject(value: &str) -> Result<(), AlipayError> {
    let field = "subject";
    let chars = value.chars().count();
    if chars == 0 || chars > 256 {
        return Err(AlipayError::InvalidField {
            field,
            reason: "must be 1 to 256 characters",
        });
    }
    if value.contains(['/', '=', '&']) || value.chars().any(char::is_control) {
        return Err(AlipayError::InvalidField {
            field,
            reason: "`/`, `=`, `&` and control characters are not allowed",
        });
    }
    Ok(())
}

fn check_plain(field: &'static str, value: &str) -> Result<(), AlipayError> {
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(AlipayError::InvalidField {
            field,
            reason: "must be non-empty, without control characters",
        });
    }
    Ok(())
}

/// Builds and signs the form parameters of an `alipay.trade.precreate` request: `app_id`,
/// `method`, `format=JSON`, `charset=utf-8`, `sign_type=RSA2`, `timestamp` (Beijing time of
/// `now`), `version=1.0`, `notify_url` and `biz_content` (`out_trade_no`, `total_amount`,
/// `subject`, optional `time_expire`), then `sign`.
pub fn build_precreate_request(
    app_id: &str,
    notify_url: &str,
    order: &PrecreateOrder<'_>,
    now: Timestamp,
    key: &AlipayPrivateKey,
) -> Result<SignedRequest, AlipayError> {
    check_plain("app_id", app_id)?;
    check_plain("notify_url", notify_url)?;
    check_out_trade_no(order.out_trade_no)?;
    check_subject(order.subject)?;
    let total_amount = format_total_amount(order.amount)?;
    let time_expire = order.expires_at.map(beijing_time);
    let biz = PrecreateBizContent {
        out_trade_no: order.out_trade_no,
        total_amount: &total_amount,
        subject: order.subject,
        time_expire: time_expire.as_deref(),
    };
    let biz_content = serde_json::to_string(&biz).map_err(|_| AlipayError::InvalidField {
        field: "biz_content",
        reason: "could not be serialised",
    })?;
    let mut params: Vec<(&'static str, String)> = vec![
        ("app_id", app_id.to_owned()),
        ("method", PRECREATE_METHOD.to_owned()),
        ("format", "JSON".to_owned()),
        ("charset", "utf-8".to_owned()),
        ("sign_type", "RSA2".to_owned()),
        ("timestamp", beijing_time(now)),
        ("version", "1.0".to_owned()),
        ("notify_url", notify_url.to_owned()),
        ("biz_content", biz_content),
    ];
    let sign = sign_params(&params, key)?;
    params.push(("sign", sign));
    Ok(SignedRequest { params })
}

/// The useful part of a successful precreate answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrecreateResponse {
    /// Our order number, echoed.
    pub out_trade_no: String,
    /// The payload to render as a QR code (`https://qr.alipay.com/…`).
    pub qr_code: String,
}

#[derive(Deserialize)]
struct ResponseNode {
    code: String,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    sub_code: String,
    #[serde(default)]
    sub_msg: String,
    out_trade_no: Option<String>,
    qr_code: Option<String>,
}

/// Verifies a synchronous answer and returns the exact JSON text of its `<method>_response`
/// object (e.g. `alipay_trade_precreate_response` for `alipay.trade.precreate`). The signature
/// is checked over that text byte for byte as it appears in `body`, never over a re-serialised
/// form (Alipay escapes `/` as `\/`, for instance, and the signature covers the escapes).
///
/// When Alipay answers an error without a `sign` (it does for gateway-level errors), the error
/// is returned as [`AlipayError::Business`]; an unsigned success is [`AlipayError::MissingSign`].
pub fn verify_response<'a>(
    body: &'a str,
    method: &str,
    alipay_public_key: &AlipayPublicKey,
) -> Result<&'a str, AlipayError> {
    let node_name = format!("{}_response", method.replace('.', "_"));
    let mut de = serde_json::Deserializer::from_str(body);
    let envelope = EnvelopeSeed { node: &node_name }
        .deserialize(&mut de)
        .map_err(|e| AlipayError::MalformedResponse(e.to_string()))?;
    de.end()
        .map_err(|e| AlipayError::MalformedResponse(e.to_string()))?;
    let raw = envelope
        .node
        .or(envelope.error)
        .ok_or_else(|| AlipayError::MalformedResponse(format!("no `{node_name}` object")))?
        .get();
    match envelope.sign.as_deref() {
        Some(sign) if !sign.is_empty() => {
            alipay_public_key.verify_parts([raw.as_bytes()], sign)?;
            Ok(raw)
        }
        _ => {
            // Unsigned: only an error is acceptable, and it is reported as such.
            let node: ResponseNode = serde_json::from_str(raw)
                .map_err(|e| AlipayError::MalformedResponse(e.to_string()))?;
            if node.code == SUCCESS_CODE {
                Err(AlipayError::MissingSign)
            } else {
                Err(business_error(node))
            }
        }
    }
}

fn business_error(node: ResponseNode) -> AlipayError {
    AlipayError::Business {
        code: node.code,
        msg: node.msg,
        sub_code: node.sub_code,
        sub_msg: node.sub_msg,
    }
}

/// Verifies an `alipay.trade.precreate` answer (see [`verify_response`]) and extracts
/// `out_trade_no` and `qr_code`; a `code` other than `10000` is an [`AlipayError::Business`].
pub fn parse_precreate_response(
    body: &str,
    alipay_public_key: &AlipayPublicKey,
) -> Result<PrecreateResponse, AlipayError> {
    let raw = verify_response(body, PRECREATE_METHOD, alipay_public_key)?;
    let node: ResponseNode =
        serde_json::from_str(raw).map_err(|e| AlipayError::MalformedResponse(e.to_string()))?;
    if node.code != SUCCESS_CODE {
        return Err(business_error(node));
    }
    match (node.out_trade_no, node.qr_code) {
        (Some(out_trade_no), Some(qr_code)) if !qr_code.is_empty() => Ok(PrecreateResponse {
            out_trade_no,
            qr_code,
        }),
        _ => Err(AlipayError::MalformedResponse(
            "success without `out_trade_no` and `qr_code`".to_owned(),
        )),
    }
}

/// The top level of a synchronous answer: the raw text of the response node, of
/// `error_response`, and the `sign` sibling. Keys are matched after JSON unescaping.
struct Envelope<'a> {
    node: Option<&'a RawValue>,
    error: Option<&'a RawValue>,
    sign: Option<Cow<'a, str>>,
}

struct EnvelopeSeed<'n> {
    node: &'n str,
}

/// A string that borrows from the input when it has no escapes.
struct MaybeBorrowed<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for MaybeBorrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeBorrowed<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = Envelope<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an Alipay response object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let mut out = Envelope {
            node: None,
            error: None,
            sign: None,
        };
        while let Some(MaybeBorrowed(key)) = map.next_key::<MaybeBorrowed<'de>>()? {
            if key == self.node {
                if out.node.replace(map.next_value()?).is_some() {
                    return Err(A::Error::custom("duplicate response object"));
                }
            } else if key == "error_response" {
                if out.error.replace(map.next_value()?).is_some() {
                    return Err(A::Error::custom("duplicate `error_response`"));
                }
            } else if key == "sign" {
                let MaybeBorrowed(sign) = map.next_value()?;
                if out.sign.replace(sign).is_some() {
                    return Err(A::Error::custom("duplicate `sign`"));
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// alipay.trade.refund and alipay.trade.fastpay.refund.query
// ---------------------------------------------------------------------------------------------

/// A refund of (part of) a trade: `out_request_no` identifies the refund, so Alipay refunds a
/// repeated request only once.
#[derive(Debug, Clone)]
pub struct RefundOrder<'a> {
    /// The trade's order number (`out_trade_no`).
    pub out_trade_no: &'a str,
    /// Our refund id.
    pub out_request_no: &'a str,
    /// How much; must be CNY.
    pub amount: Money,
    /// Shown to the payer.
    pub reason: Option<&'a str>,
}

#[derive(Serialize)]
struct RefundBizContent<'a> {
    out_trade_no: &'a str,
    refund_amount: &'a str,
    out_request_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct RefundQueryBizContent<'a> {
    out_trade_no: &'a str,
    out_request_no: &'a str,
    query_options: [&'static str; 1],
}

/// Builds and signs an `alipay.trade.refund` request (the common parameters as for precreate,
/// without `notify_url`: Alipay answers a refund synchronously).
pub fn build_refund_request(
    app_id: &str,
    order: &RefundOrder<'_>,
    now: Timestamp,
    key: &AlipayPrivateKey,
) -> Result<SignedRequest, AlipayError> {
    check_out_trade_no(order.out_trade_no)?;
    check_out_trade_no(order.out_request_no)?;
    let refund_amount = format_total_amount(order.amount)?;
    let reason: Option<String> = order
        .reason
        .map(|r| r.chars().filter(|c| !c.is_control()).take(256).collect());
    let biz = RefundBizContent {
        out_trade_no: order.out_trade_no,
        refund_amount: &refund_amount,
        out_request_no: order.out_request_no,
        refund_reason: reason.as_deref().filter(|r| !r.is_empty()),
    };
    signed_request(app_id, REFUND_METHOD, &biz, now, key)
}

/// Builds and signs an `alipay.trade.fastpay.refund.query` request for one refund.
pub fn build_refund_query_request(
    app_id: &str,
    out_trade_no: &str,
    out_request_no: &str,
    now: Timestamp,
    key: &AlipayPrivateKey,
) -> Result<SignedRequest, AlipayError> {
    check_out_trade_no(out_trade_no)?;
    check_out_trade_no(out_request_no)?;
    let biz = RefundQueryBizContent {
        out_trade_no,
        out_request_no,
        query_options: ["gmt_refund_pay"],
    };
    signed_request(app_id, REFUND_QUERY_METHOD, &biz, now, key)
}

fn signed_request<B: Serialize>(
    app_id: &str,
    method: &str,
    biz: &B,
    now: Timestamp,
    key: &AlipayPrivateKey,
) -> Result<SignedRequest, AlipayError> {
    check_plain("app_id", app_id)?;
    let biz_content = serde_json::to_string(biz).map_err(|_| AlipayError::InvalidField {
        field: "biz_content",
        reason: "could not be serialised",
    })?;
    let mut params: Vec<(&'static str, String)> = vec![
        ("app_id", app_id.to_owned()),
        ("method", method.to_owned()),
        ("format", "JSON".to_owned()),
        ("charset", "utf-8".to_owned()),
        ("sign_type", "RSA2".to_owned()),
        ("timestamp", beijing_time(now)),
        ("version", "1.0".to_owned()),
        ("biz_content", biz_content),
    ];
    let sign = sign_params(&params, key)?;
    params.push(("sign", sign));
    Ok(SignedRequest { params })
}

/// What a verified refund (or refund query) answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundAnswer {
    /// The money moved (`fund_change=Y`, or a query's `refund_status=REFUND_SUCCESS`).
    Refunded {
        /// Alipay's trade number.
        trade_no: Option<String>,
    },
    /// Accepted, money not moved yet: ask again later.
    Processing,
    /// A query for a refund Alipay does not have.
    Unknown,
}

#[derive(Deserialize)]
struct RefundNode {
    code: String,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    sub_code: String,
    #[serde(default)]
    sub_msg: String,
    #[serde(default)]
    fund_change: Option<String>,
    #[serde(default)]
    trade_no: Option<String>,
    #[serde(default)]
    refund_status: Option<String>,
    #[serde(default)]
    out_request_no: Option<String>,
}

/// Verifies an `alipay.trade.refund` or `alipay.trade.fastpay.refund.query` answer (`method`
/// says which) and reads its outcome; a `code` other than `10000` is an
/// [`AlipayError::Business`].
pub fn parse_refund_response(
    body: &str,
    method: &str,
    alipay_public_key: &AlipayPublicKey,
) -> Result<RefundAnswer, AlipayError> {
    let raw = verify_response(body, method, alipay_public_key)?;
    let node: RefundNode =
        serde_json::from_str(raw).map_err(|e| AlipayError::MalformedResponse(e.to_string()))?;
    if node.code != SUCCESS_CODE {
        return Err(AlipayError::Business {
            code: node.code,
            msg: node.msg,
            sub_code: node.sub_code,
            sub_msg: node.sub_msg,
        });
    }
    let answer = if method == REFUND_METHOD {
        match node.fund_change.as_deref() {
            Some("Y") => RefundAnswer::Refunded {
                trade_no: node.trade_no,
            },
            _ => RefundAnswer::Processing,
        }
    } else if node.out_request_no.as_deref().is_none_or(str::is_empty) {
        // Alipay answers a query for an unknown refund with success and no refund fields.
        RefundAnswer::Unknown
    } else if node.refund_status.as_deref() == Some("REFUND_SUCCESS") {
        RefundAnswer::Refunded {
            trade_no: node.trade_no,
        }
    } else {
        RefundAnswer::Processing
    };
    Ok(answer)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
