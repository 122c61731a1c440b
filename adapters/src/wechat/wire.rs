//! WeChat Pay (微信支付) API v3 channel: the `Authorization` header that signs our requests
//! (SHA256withRSA, PKCS#1 v1.5), the body of a Native (QR code) order and its `code_url`
//! answer, verification of the signatures WeChat Pay puts on its answers and callbacks
//! (`Wechatpay-*` headers, platform key chosen by serial, timestamp tolerance), and the
//! AEAD_AES_256_GCM encryption of callback resources under the APIv3 key.
//!
//! This module owns the wire format and the cryptography only. It does not own HTTP transport,
//! retries, fetching or rotating platform keys and certificates (callers load the keys into
//! [`PlatformKeys`]; X.509 certificates are not parsed here, pass the public key they carry),
//! storage of the merchant key or APIv3 key, nor what a verified `trade_state` means for an
//! intent: those belong to the engine and the gateway.
//!
//! Sources (facts only, no code taken):
//! - Request signature: "签名生成" (<https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_0.shtml>,
//!   English: <https://pay.weixin.qq.com/doc/global/v3/en/4012357147>): five lines
//!   `METHOD\nURL\ntimestamp\nnonce\nbody\n`, each ending in `\n`, URL without the domain but with
//!   `?query`, body empty for GET; `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",
//!   nonce_str="…",signature="…",timestamp="…",serial_no="…"` (order free; the documented
//!   example order is used). Worked example with a test key and the expected signature:
//!   "请求参数里带Body参数, 如何计算签名"
//!   (<https://pay.weixin.qq.com/docs/partner/development/generate-request-signature-verification/request-body-parameters-signature.html>,
//!   also <https://pay.weixin.qq.com/doc/v3/merchant/4012365336>).
//! - Answer and callback signatures: "签名验证" — three lines `timestamp\nnonce\nbody\n` from
//!   `Wechatpay-Timestamp`, `Wechatpay-Nonce` and the raw body, signature in `Wechatpay-Signature`
//!   (base64), key named by `Wechatpay-Serial`; a 2xx answer without a valid signature is to be
//!   treated as forged (<https://pay.weixin.qq.com/doc/global/v3/en/4012357140>).
//! - Resource decryption: "证书和回调报文解密"
//!   (<https://pay.weixin.qq.com/docs/partner/products/platform-certificate/decryption-certificate.html>,
//!   <https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_2.shtml>): AEAD_AES_256_GCM
//!   (RFC 5116), key = the 32-byte APIv3 key, 12-byte `nonce` string, `associated_data` (may be
//!   empty), base64 `ciphertext` with the 16-byte tag at its end.
//! - Native order (<https://pay.weixin.qq.com/doc/v3/merchant/4012525171>): `POST
//!   /v3/pay/transactions/native` with `appid`, `mchid`, `description` (≤127 characters),
//!   `out_trade_no` (6–32 of `0-9 A-Z a-z _ - | *`), optional `time_expire` (RFC 3339),
//!   `notify_url` (≤255, no query), `amount {total (fen), currency}`; answer `{"code_url": …}`.

use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ipay_engine::clock::Timestamp;
use ipay_engine::money::Money;

use crate::rsa2;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Authentication scheme of the `Authorization` header.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";
/// Production API host.
pub const API_BASE_URL: &str = "https://api.mch.weixin.qq.com";
/// Path of the Native (QR code) order.
pub const NATIVE_ORDER_PATH: &str = "/v3/pay/transactions/native";
/// Header carrying the signing time (Unix seconds) of an answer or callback.
pub const HEADER_TIMESTAMP: &str = "Wechatpay-Timestamp";
/// Header carrying the nonce of an answer or callback.
pub const HEADER_NONCE: &str = "Wechatpay-Nonce";
/// Header carrying the base64 signature of an answer or callback.
pub const HEADER_SIGNATURE: &str = "Wechatpay-Signature";
/// Header naming the platform key (certificate serial or `PUB_KEY_ID_…`) that signed.
pub const HEADER_SERIAL: &str = "Wechatpay-Serial";
/// Default accepted clock skew between a signed timestamp and now, in seconds.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// The only resource encryption algorithm WeChat Pay uses.
pub const RESOURCE_ALGORITHM: &str = "AEAD_AES_256_GCM";
/// Smallest RSA modulus accepted for any key, in bits.
pub const MIN_KEY_BITS: usize = rsa2::MIN_KEY_BITS;
/// Length of the APIv3 key in bytes.
pub const API_V3_KEY_LEN: usize = 32;
/// Length of a resource nonce in bytes.
pub const RESOURCE_NONCE_LEN: usize = 12;

/// Length of the GCM tag appended to every ciphertext.
const TAG_LEN: usize = 16;
/// Largest amount accepted, in fen (the engine's own bound is lower still).
const MAX_AMOUNT_FEN: i64 = i32::MAX as i64;

/// What can go wrong signing, building, verifying or decrypting WeChat Pay messages. No variant
/// ever carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WechatError {
    /// The key text could not be parsed as the kind of key expected.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// The key parsed but its modulus is shorter than [`MIN_KEY_BITS`].
    #[error("RSA key of {bits} bits is too small: WeChat Pay needs at least {MIN_KEY_BITS} bits")]
    KeyTooSmall {
        /// Size of the rejected modulus.
        bits: usize,
    },
    /// The APIv3 key is not exactly 32 bytes.
    #[error("the APIv3 key must be {API_V3_KEY_LEN} bytes, got {0}")]
    InvalidApiV3KeyLength(usize),
    /// A request or header field is empty, too long or contains characters not allowed.
    #[error("invalid `{field}`: {reason}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// Only CNY orders are built here.
    #[error("WeChat Pay Native orders take CNY only, got {0}")]
    UnsupportedCurrency(String),
    /// The amount is not a positive number of fen WeChat Pay accepts.
    #[error("amount of {0} fen is out of range")]
    AmountOutOfRange(i64),
    /// RSA signing failed (should not happen with a validated key).
    #[error("RSA signing failed")]
    Signing,
    /// A `Wechatpay-*` header is missing.
    #[error("missing header `{0}`")]
    MissingHeader(&'static str),
    /// `Wechatpay-Timestamp` is not a Unix time in seconds.
    #[error("`Wechatpay-Timestamp` is not a Unix time in seconds")]
    InvalidTimestamp,
    /// The signed timestamp is too far from now (replay or clock trouble).
    #[error("signed timestamp is {skew_secs} s away from now, beyond the tolerance")]
    TimestampOutOfTolerance {
        /// Distance from now, in seconds.
        skew_secs: u64,
    },
    /// No platform key is known under the serial named in `Wechatpay-Serial`.
    #[error("no platform key with serial `{0}`")]
    UnknownSerial(String),
    /// `Wechatpay-Signature` is not base64 of a plausible RSA signature.
    #[error("signature is not valid base64 of an RSA signature")]
    InvalidSignatureEncoding,
    /// The signature does not match the message and key.
    #[error("signature verification failed")]
    BadSignature,
    /// The resource names an algorithm other than AEAD_AES_256_GCM.
    #[error("unsupported resource algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    /// The resource nonce is not 12 bytes.
    #[error("resource nonce must be {RESOURCE_NONCE_LEN} bytes, got {0}")]
    InvalidNonceLength(usize),
    /// The ciphertext is not base64, or too short to hold the tag.
    #[error("resource ciphertext is not base64 of at least {TAG_LEN} bytes")]
    InvalidCiphertext,
    /// Authentication failed: wrong APIv3 key, nonce or associated data, or a modified
    /// ciphertext.
    #[error("resource decryption failed")]
    DecryptionFailed,
    /// The decrypted resource is not UTF-8.
    #[error("decrypted resource is not UTF-8")]
    NotUtf8,
    /// A body is not the JSON WeChat Pay documents.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// WeChat Pay answered with an error object (`{"code": …, "message": …}`).
    #[error("WeChat Pay error {code}: {message}")]
    Api {
        /// Error code, e.g. `PARAM_ERROR`.
        code: String,
        /// Error message.
        message: String,
    },
}

// ---------------------------------------------------------------------------------------------
// RSA keys
// ---------------------------------------------------------------------------------------------

/// An RSA private key: our merchant API key (`apiclient_key.pem`) for request signatures, or a
/// platform key in the PSP simulator and tests. `Debug` shows the key size only.
#[derive(Clone)]
pub struct WechatPrivateKey(rsa2::PrivateKey);

/// An RSA public key that verifies WeChat Pay signatures: the WeChat Pay public key
/// (`pub_key.pem`) or the key of a platform certificate.
#[derive(Clone)]
pub struct WechatPublicKey(rsa2::PublicKey);

fn key_error(e: rsa2::KeyError) -> WechatError {
    match e {
        rsa2::KeyError::Invalid(why) => WechatError::InvalidKey(why),
        rsa2::KeyError::TooSmall { bits } => WechatError::KeyTooSmall { bits },
    }
}

impl WechatPrivateKey {
    /// Parses a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, WechatError> {
        rsa2::PrivateKey::from_pem(pem).map(Self).map_err(key_error)
    }

    /// Parses a bare base64 DER private key (PKCS#8 or PKCS#1); whitespace is ignored.
    pub fn from_base64(text: &str) -> Result<Self, WechatError> {
        rsa2::PrivateKey::from_base64(text)
            .map(Self)
            .map_err(key_error)
    }

    /// Parses either form: PEM when the text starts with `-----BEGIN`, bare base64 otherwise.
    pub fn parse(text: &str) -> Result<Self, WechatError> {
        rsa2::PrivateKey::parse(text).map(Self).map_err(key_error)
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.0.bits()
    }

    /// The matching public key.
    pub fn public_key(&self) -> WechatPublicKey {
        WechatPublicKey(self.0.public_key())
    }

    /// Signs an answer or callback the way WeChat Pay does (`timestamp\nnonce\nbody\n`) and
    /// returns the base64 `Wechatpay-Signature`. For the PSP simulator and tests.
    pub fn sign_notification(
        &self,
        timestamp: i64,
        nonce: &str,
        body: &[u8],
    ) -> Result<String, WechatError> {
        let ts = timestamp.to_string();
        self.sign_digest(notification_digest(&ts, nonce, body))
    }

    fn sign_digest(&self, digest: Sha256) -> Result<String, WechatError> {
        self.0.sign_digest(digest).ok_or(WechatError::Signing)
    }
}

impl WechatPublicKey {
    /// Parses a PEM public key: SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`) or PKCS#1
    /// (`BEGIN RSA PUBLIC KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, WechatError> {
        if pem.trim().starts_with("-----BEGIN CERTIFICATE-----") {
            return Err(WechatError::InvalidKey(
                "X.509 certificates are not parsed here: pass the public key it carries",
            ));
        }
        rsa2::PublicKey::from_pem(pem).map(Self).map_err(key_error)
    }

    /// Parses a bare base64 DER public key (SubjectPublicKeyInfo or PKCS#1); whitespace is
    /// ignored.
    pub fn from_base64(text: &str) -> Result<Self, WechatError> {
        rsa2::PublicKey::from_base64(text)
            .map(Self)
            .map_err(key_error)
    }

    /// Parses either form: PEM when the text starts with `-----BEGIN`, bare base64 otherwise.
    pub fn parse(text: &str) -> Result<Self, WechatError> {
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

    /// Verifies with `ring` over the concatenated parts (the fast path).
    fn verify_parts<'a>(
        &self,
        parts: impl IntoIterator<Item = &'a [u8]>,
        signature_b64: &str,
    ) -> Result<(), WechatError> {
        self.0
            .verify_parts(parts, signature_b64)
            .map_err(|e| match e {
                rsa2::VerifyError::Encoding => WechatError::InvalidSignatureEncoding,
                rsa2::VerifyError::Mismatch => WechatError::BadSignature,
            })
    }

    fn verify_digest(&self, digest: Sha256, signature_b64: &str) -> Result<(), WechatError> {
        self.0
            .verify_digest(digest, signature_b64)
            .map_err(|e| match e {
                rsa2::VerifyError::Encoding => WechatError::InvalidSignatureEncoding,
                rsa2::VerifyError::Mismatch => WechatError::BadSignature,
            })
    }
}

impl fmt::Debug for WechatPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WechatPrivateKey(RSA-{}, redacted)", self.bits())
    }
}

impl fmt::Debug for WechatPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WechatPublicKey(RSA-{})", self.bits())
    }
}

// ---------------------------------------------------------------------------------------------
// Request signing
// ---------------------------------------------------------------------------------------------

/// Signs our requests: the merchant number, the serial of the merchant API certificate, and the
/// matching private key.
#[derive(Clone)]
pub struct MerchantSigner {
    mchid: String,
    serial_no: String,
    key: WechatPrivateKey,
}

impl fmt::Debug for MerchantSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerchantSigner")
            .field("mchid", &self.mchid)
            .field("serial_no", &self.serial_no)
            .field("key", &self.key)
            .finish()
    }
}

/// A value that goes between the quotes of the `Authorization` header.
fn check_header_value(field: &'static str, value: &str) -> Result<(), WechatError> {
    if value.is_empty() || value.len() > 64 {
        return Err(WechatError::InvalidField {
            field,
            reason: "must be 1 to 64 characters",
        });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b',')
    {
        return Err(WechatError::InvalidField {
            field,
            reason: "only printable ASCII without `\"`, `\\` or `,` is allowed",
        });
    }
    Ok(())
}

impl MerchantSigner {
    /// A signer for merchant `mchid` whose API certificate has serial `serial_no`.
    pub fn new(mchid: &str, serial_no: &str, key: WechatPrivateKey) -> Result<Self, WechatError> {
        check_header_value("mchid", mchid)?;
        check_header_value("serial_no", serial_no)?;
        Ok(MerchantSigner {
            mchid: mchid.to_owned(),
            serial_no: serial_no.to_owned(),
            key,
        })
    }

    /// The merchant number.
    pub fn mchid(&self) -> &str {
        &self.mchid
    }

    /// The base64 signature of a request: SHA256withRSA over
    /// `"{METHOD}\n{url}\n{timestamp}\n{nonce}\n{body}\n"`, where `url` is the path with its
    /// query string and `body` is empty for GET.
    pub fn sign_request(
        &self,
        method: &str,
        url_path_with_query: &str,
        timestamp: i64,
        nonce: &str,
        body: &str,
    ) -> Result<String, WechatError> {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(WechatError::InvalidField {
                field: "method",
                reason: "must be an upper-case HTTP method",
            });
        }
        if !url_path_with_query.starts_with('/')
            || url_path_with_query
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(WechatError::InvalidField {
                field: "url",
                reason: "must be an absolute path (with its query), without the domain",
            });
        }
        if timestamp < 0 {
            return Err(WechatError::InvalidField {
                field: "timestamp",
                reason: "must be Unix seconds",
            });
        }
        check_header_value("nonce_str", nonce)?;
        let ts = timestamp.to_string();
        let mut hasher = Sha256::new();
        for part in [method, url_path_with_query, &ts, nonce, body] {
            hasher.update(part.as_bytes());
            hasher.update(b"\n");
        }
        self.key.sign_digest(hasher)
    }

    /// The `Authorization` header value for a request:
    /// `WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",timestamp="…",serial_no="…"`.
    pub fn authorization_header(
        &self,
        method: &str,
        url_path_with_query: &str,
        timestamp: i64,
        nonce: &str,
        body: &str,
    ) -> Result<String, WechatError> {
        let signature = self.sign_request(method, url_path_with_query, timestamp, nonce, body)?;
        Ok(format!(
            "{AUTH_SCHEME} mchid=\"{}\",nonce_str=\"{nonce}\",signature=\"{signature}\",timestamp=\"{timestamp}\",serial_no=\"{}\"",
            self.mchid, self.serial_no
        ))
    }
}

/// Checks a request signature the way WeChat Pay's API does: SHA256withRSA over the five-line
/// string, with the merchant's public key. For the PSP simulator and tests.
pub fn verify_request_signature(
    merchant_public_key: &WechatPublicKey,
    method: &str,
    url_path_with_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &str,
    signature_b64: &str,
) -> Result<(), WechatError> {
    let mut hasher = Sha256::new();
    for part in [method, url_path_with_query, timestamp, nonce, body] {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    merchant_public_key.verify_digest(hasher, signature_b64)
}

/// The `key="value"` items of an `Authorization: WECHATPAY2-SHA256-RSA2048 …` header, or
/// `None` if the scheme differs. For the PSP simulator and tests.
pub fn parse_authorization(header: &str) -> Option<HashMap<&str, &str>> {
    let rest = header.strip_prefix(AUTH_SCHEME)?.trim_start();
    let mut items = HashMap::new();
    for item in rest.split(',') {
        let (k, v) = item.trim().split_once('=')?;
        let v = v.strip_prefix('"')?.strip_suffix('"')?;
        items.insert(k, v);
    }
    Some(items)
}

/// The exact five-line string a request signature covers (for logs and troubleshooting).
pub fn request_signing_string(
    method: &str,
    url_path_with_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{url_path_with_query}\n{timestamp}\n{nonce}\n{body}\n")
}

/// A fresh request nonce: 32 upper-case hex digits from the thread CSPRNG.
pub fn generate_nonce() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode_upper(bytes)
}

// ---------------------------------------------------------------------------------------------
// Answer and callback signatures
// ---------------------------------------------------------------------------------------------

/// Platform public keys by serial (`Wechatpay-Serial`): certificate serials, or the
/// `PUB_KEY_ID_…` of the WeChat Pay public key. Holding several allows rotation.
#[derive(Debug, Clone, Default)]
pub struct PlatformKeys {
    by_serial: HashMap<String, WechatPublicKey>,
}

impl PlatformKeys {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the key for `serial`; returns the replaced key.
    pub fn insert(&mut self, serial: &str, key: WechatPublicKey) -> Option<WechatPublicKey> {
        self.by_serial.insert(serial.to_owned(), key)
    }

    /// Removes the key for `serial`.
    pub fn remove(&mut self, serial: &str) -> Option<WechatPublicKey> {
        self.by_serial.remove(serial)
    }

    /// The key for `serial`, if known.
    pub fn get(&self, serial: &str) -> Option<&WechatPublicKey> {
        self.by_serial.get(serial)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_serial.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_serial.is_empty()
    }
}

/// The four `Wechatpay-*` headers of a signed answer or callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedHeaders<'a> {
    /// `Wechatpay-Timestamp`: Unix seconds.
    pub timestamp: &'a str,
    /// `Wechatpay-Nonce`.
    pub nonce: &'a str,
    /// `Wechatpay-Signature`: base64.
    pub signature: &'a str,
    /// `Wechatpay-Serial`: which platform key signed.
    pub serial: &'a str,
}

impl<'a> SignedHeaders<'a> {
    /// Collects the four headers through a lookup function (typically a case-insensitive
    /// header-map get); a missing one is [`WechatError::MissingHeader`].
    pub fn from_lookup<F>(get: F) -> Result<Self, WechatError>
    where
        F: Fn(&'static str) -> Option<&'a str>,
    {
        let need = |name| get(name).ok_or(WechatError::MissingHeader(name));
        Ok(SignedHeaders {
            timestamp: need(HEADER_TIMESTAMP)?,
            nonce: need(HEADER_NONCE)?,
            signature: need(HEADER_SIGNATURE)?,
            serial: need(HEADER_SERIAL)?,
        })
    }
}

fn notification_digest(timestamp: &str, nonce: &str, body: &[u8]) -> Sha256 {
    let mut hasher = Sha256::new();
    hasher.update(timestamp.as_bytes());
    hasher.update(b"\n");
    hasher.update(nonce.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hasher.update(b"\n");
    hasher
}

/// Verifies the signature on an answer or callback: the timestamp must be within
/// `tolerance_secs` of `now_secs` (see [`DEFAULT_TOLERANCE_SECS`]), the serial must name a known
/// platform key, and the signature must cover `"{timestamp}\n{nonce}\n{body}\n"` with `body` the
/// raw bytes as received. WeChat Pay's signature probes (`WECHATPAY/SIGNTEST/…`) fail here, as
/// they are meant to.
pub fn verify_signature(
    headers: &SignedHeaders<'_>,
    body: &[u8],
    keys: &PlatformKeys,
    now_secs: i64,
    tolerance_secs: u64,
) -> Result<(), WechatError> {
    let ts = headers.timestamp;
    if ts.is_empty() || ts.len() > 18 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WechatError::InvalidTimestamp);
    }
    let signed_at: i64 = ts.parse().map_err(|_| WechatError::InvalidTimestamp)?;
    let skew_secs = now_secs.abs_diff(signed_at);
    if skew_secs > tolerance_secs {
        return Err(WechatError::TimestampOutOfTolerance { skew_secs });
    }
    let key = keys
        .get(headers.serial)
        .ok_or_else(|| WechatError::UnknownSerial(headers.serial.chars().take(64).collect()))?;
    // `timestamp\nnonce\nbody\n`, joined on the stack for bodies up to 4 KiB.
    key.verify_parts(
        [
            ts.as_bytes(),
            b"\n",
            headers.nonce.as_bytes(),
            b"\n",
            body,
            b"\n",
        ],
        headers.signature,
    )
}

// ---------------------------------------------------------------------------------------------
// Native order
// ---------------------------------------------------------------------------------------------

/// A Native (QR code) order for `POST /v3/pay/transactions/native`.
#[derive(Debug, Clone)]
pub struct NativeOrder<'a> {
    /// The AppID bound to the merchant.
    pub appid: &'a str,
    /// The merchant number.
    pub mchid: &'a str,
    /// What the payer sees on the bill: 1 to 127 characters.
    pub description: &'a str,
    /// Our order number: 6 to 32 of `0-9 A-Z a-z _ - | *`.
    pub out_trade_no: &'a str,
    /// Where WeChat Pay sends the payment callback (no query string).
    pub notify_url: &'a str,
    /// The amount; must be CNY, sent as an integer number of fen.
    pub amount: Money,
    /// Payment deadline, sent as `time_expire` (RFC 3339, Beijing time) when set.
    pub expires_at: Option<Timestamp>,
}

#[derive(Serialize)]
struct NativeOrderBody<'a> {
    appid: &'a str,
    mchid: &'a str,
    description: &'a str,
    out_trade_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_expire: Option<String>,
    notify_url: &'a str,
    amount: OrderAmount,
}

#[derive(Serialize)]
struct OrderAmount {
    total: i64,
    currency: &'static str,
}

/// Formats an instant as RFC 3339 in Beijing time (`2026-05-27T17:45:00+08:00`), the form of
/// `time_expire`.
pub fn rfc3339_beijing(at: Timestamp) -> String {
    at.plus_secs(8 * 3600)
        .to_datetime()
        .format("%Y-%m-%dT%H:%M:%S+08:00")
        .to_string()
}

fn invalid(field: &'static str, reason: &'static str) -> WechatError {
    WechatError::InvalidField { field, reason }
}

/// The JSON body of a Native order. Sign exactly these bytes (with
/// [`MerchantSigner::authorization_header`], `POST` and [`NATIVE_ORDER_PATH`]) and send them
/// unchanged.
pub fn native_order_body(order: &NativeOrder<'_>) -> Result<String, WechatError> {
    let plain = |field, value: &str, max| {
        if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
            return Err(invalid(
                field,
                "empty, too long, or with control characters",
            ));
        }
        Ok(())
    };
    plain("appid", order.appid, 32)?;
    plain("mchid", order.mchid, 32)?;
    plain("description", order.description, 127)?;
    plain("notify_url", order.notify_url, 255)?;
    if order.notify_url.contains('?') {
        return Err(invalid("notify_url", "must not carry a query string"));
    }
    let n = order.out_trade_no;
    if !(6..=32).contains(&n.len())
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*'))
    {
        return Err(invalid(
            "out_trade_no",
            "must be 6 to 32 of 0-9 A-Z a-z _ - | *",
        ));
    }
    if order.amount.currency.code() != "CNY" {
        return Err(WechatError::UnsupportedCurrency(
            order.amount.currency.code().to_owned(),
        ));
    }
    let total = order.amount.value;
    if !(1..=MAX_AMOUNT_FEN).contains(&total) {
        return Err(WechatError::AmountOutOfRange(total));
    }
    let body = NativeOrderBody {
        appid: order.appid,
        mchid: order.mchid,
        description: order.description,
        out_trade_no: n,
        time_expire: order.expires_at.map(rfc3339_beijing),
        notify_url: order.notify_url,
        amount: OrderAmount {
            total,
            currency: "CNY",
        },
    };
    serde_json::to_string(&body).map_err(|e| WechatError::MalformedJson(e.to_string()))
}

#[derive(Deserialize)]
struct NativeAnswer {
    code_url: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

/// Extracts `code_url` (the `weixin://wxpay/bizpayurl?pr=…` payload to render as a QR code)
/// from a Native order answer; an error object becomes [`WechatError::Api`]. Verify the
/// answer's signature with [`verify_signature`] before trusting it.
pub fn parse_native_response(body: &str) -> Result<String, WechatError> {
    let answer: NativeAnswer =
        serde_json::from_str(body).map_err(|e| WechatError::MalformedJson(e.to_string()))?;
    match answer {
        NativeAnswer {
            code_url: Some(url),
            ..
        } if !url.is_empty() => Ok(url),
        NativeAnswer {
            code: Some(code),
            message,
            ..
        } => Err(WechatError::Api {
            code,
            message: message.unwrap_or_default(),
        }),
        _ => Err(WechatError::MalformedJson("no `code_url`".to_owned())),
    }
}

// ---------------------------------------------------------------------------------------------
// Callback resources
// ---------------------------------------------------------------------------------------------

/// The encrypted `resource` of a callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    /// Always `AEAD_AES_256_GCM` today.
    pub algorithm: String,
    /// Base64 of ciphertext followed by the 16-byte tag.
    pub ciphertext: String,
    /// The 12-byte nonce, as a string.
    pub nonce: String,
    /// Associated data (may be empty).
    #[serde(default)]
    pub associated_data: String,
    /// Type of the encrypted object, e.g. `transaction`.
    #[serde(default)]
    pub original_type: String,
}

/// A payment callback as POSTed by WeChat Pay, before decryption.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CallbackNotification {
    /// Notification id.
    pub id: String,
    /// When the notification was created (RFC 3339).
    pub create_time: String,
    /// e.g. `TRANSACTION.SUCCESS`.
    pub event_type: String,
    /// `encrypt-resource`.
    pub resource_type: String,
    /// Human-readable summary.
    #[serde(default)]
    pub summary: String,
    /// The encrypted payload.
    pub resource: EncryptedResource,
}

/// Parses a callback body (verify it first with [`verify_signature`]).
pub fn parse_callback(body: &str) -> Result<CallbackNotification, WechatError> {
    serde_json::from_str(body).map_err(|e| WechatError::MalformedJson(e.to_string()))
}

/// State of a transaction as WeChat Pay reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeState {
    /// Paid.
    Success,
    /// Refunded (in part or whole).
    Refund,
    /// Not paid yet.
    Notpay,
    /// Closed.
    Closed,
    /// Revoked (payment-code payments).
    Revoked,
    /// Payer is entering a password.
    Userpaying,
    /// Payment failed.
    Payerror,
    /// A state this version does not know.
    #[serde(other)]
    Unknown,
}

/// Amount block of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TransactionAmount {
    /// Order total, in fen.
    pub total: i64,
    /// What the payer paid, in fen.
    pub payer_total: Option<i64>,
    /// Order currency.
    pub currency: String,
    /// Payer currency.
    pub payer_currency: Option<String>,
}

/// Payer block of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Payer {
    /// The payer's OpenID under `appid`.
    pub openid: Option<String>,
}

/// A decrypted `transaction` resource.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Transaction {
    /// AppID of the order.
    pub appid: Option<String>,
    /// Merchant number.
    pub mchid: Option<String>,
    /// Our order number.
    pub out_trade_no: String,
    /// WeChat Pay's transaction id.
    pub transaction_id: Option<String>,
    /// e.g. `NATIVE`.
    pub trade_type: Option<String>,
    /// State of the transaction.
    pub trade_state: TradeState,
    /// Description of the state.
    pub trade_state_desc: Option<String>,
    /// Paying bank.
    pub bank_type: Option<String>,
    /// Our `attach`, echoed.
    pub attach: Option<String>,
    /// When it was paid (RFC 3339).
    pub success_time: Option<String>,
    /// Who paid.
    pub payer: Option<Payer>,
    /// How much.
    pub amount: TransactionAmount,
}

/// The APIv3 key (32 bytes), holding the AES-256-GCM key schedule. `Debug` never shows it.
#[derive(Clone)]
pub struct ApiV3Key {
    cipher: Aes256Gcm,
}

impl fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV3Key(redacted)")
    }
}

impl ApiV3Key {
    /// The key as configured in the merchant platform: exactly 32 bytes (WeChat Pay's keys are
    /// 32 ASCII characters, used as their bytes).
    pub fn new(key: &[u8]) -> Result<Self, WechatError> {
        if key.len() != API_V3_KEY_LEN {
            return Err(WechatError::InvalidApiV3KeyLength(key.len()));
        }
        let cipher = Aes256Gcm::new_from_slice(key)
            .map_err(|_| WechatError::InvalidApiV3KeyLength(key.len()))?;
        Ok(ApiV3Key { cipher })
    }

    /// Decrypts a resource and returns its plaintext JSON. One allocation: the decoded
    /// ciphertext buffer, decrypted in place.
    pub fn decrypt_resource(&self, resource: &EncryptedResource) -> Result<String, WechatError> {
        if resource.algorithm != RESOURCE_ALGORITHM {
            return Err(WechatError::UnsupportedAlgorithm(
                resource.algorithm.chars().take(32).collect(),
            ));
        }
        let nonce = resource.nonce.as_bytes();
        if nonce.len() != RESOURCE_NONCE_LEN {
            return Err(WechatError::InvalidNonceLength(nonce.len()));
        }
        let mut buf = STANDARD
            .decode(resource.ciphertext.as_bytes())
            .map_err(|_| WechatError::InvalidCiphertext)?;
        if buf.len() < TAG_LEN {
            return Err(WechatError::InvalidCiphertext);
        }
        self.cipher
            .decrypt_in_place(
                Nonce::from_slice(nonce),
                resource.associated_data.as_bytes(),
                &mut buf,
            )
            .map_err(|_| WechatError::DecryptionFailed)?;
        String::from_utf8(buf).map_err(|_| WechatError::NotUtf8)
    }

    /// Decrypts a `transaction` resource and parses it.
    pub fn decrypt_transaction(
        &self,
        resource: &EncryptedResource,
    ) -> Result<Transaction, WechatError> {
        let plaintext = self.decrypt_resource(resource)?;
        serde_json::from_str(&plaintext).map_err(|e| WechatError::MalformedJson(e.to_string()))
    }

    /// Encrypts a resource as WeChat Pay does, for the PSP simulator and tests. `nonce` must be
    /// 12 bytes and must never repeat under one key (see [`generate_resource_nonce`]).
    pub fn encrypt_resource(
        &self,
        plaintext: &str,
        nonce: &str,
        associated_data: &str,
        original_type: &str,
    ) -> Result<EncryptedResource, WechatError> {
        if nonce.len() != RESOURCE_NONCE_LEN {
            return Err(WechatError::InvalidNonceLength(nonce.len()));
        }
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext.as_bytes());
        self.cipher
            .encrypt_in_place(
                Nonce::from_slice(nonce.as_bytes()),
                associated_data.as_bytes(),
                &mut buf,
            )
            .map_err(|_| WechatError::InvalidCiphertext)?;
        Ok(EncryptedResource {
            algorithm: RESOURCE_ALGORITHM.to_owned(),
            ciphertext: STANDARD.encode(&buf),
            nonce: nonce.to_owned(),
            associated_data: associated_data.to_owned(),
            original_type: original_type.to_owned(),
        })
    }
}

/// A fresh 12-character alphanumeric resource nonce from the thread CSPRNG.
pub fn generate_resource_nonce() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(RESOURCE_NONCE_LEN)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Published by WeChat Pay as a test key in "请求参数里带Body参数, 如何计算签名" (see the module
    // docs); its public half was derived with `openssl pkey -pubout`.
    const OFFICIAL_KEY_PEM: &str =
        include_str!("../../tests/fixtures/wechat/official_test_key.pem");
    const OFFICIAL_PUB_PEM: &str =
        include_str!("../../tests/fixtures/wechat/official_test_pub.pem");
    const OFFICIAL_MCHID: &str = "1900007291";
    const OFFICIAL_SERIAL: &str = "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB";
    const OFFICIAL_TIMESTAMP: i64 = 1_554_208_460;
    const OFFICIAL_NONCE: &str = "593BEC0C930BF1AFEB40B4A08C8FB242";
    const OFFICIAL_BODY: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1900007291","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#;
    /// Published expected signature of the JSAPI example (POST /v3/pay/transactions/jsapi);
    /// also reproduced with `openssl dgst -sha256 -sign official_test_key.pem` when this test
    /// was written.
    const OFFICIAL_SIGNATURE: &str = "jnks4dlrPw3ZX+ozVvSK39oa0t7OMBsg83BHAwd8BRdUFiVaQNTLTvci+wURgP1OQBbKYhFGvt7iqYpDSTQkp7Uq1sltaQKyncCyrA1g88m5bsKERQfPyT0ahSwKTYJ1CAn9QiJuSJRq1QsQs07eehbU/k9BCS51jTyc1Jpsi2H77HF9f/BnjXAOP3/sPObg6V5Ee4EzwLox684hhuMuIwHo7D8KFk3LIHOKDcNI4It1aCXydFWNpNK+SG86VUDe5kwoDpw4Ulqfu9z8OFDGbDs9TCxEv8iqQzbpxOlEVoOe2kalSYM5kApQb3nZcxdUtoE0liJGW3RGUNE0t4v01A==";
    /// Independent vector: `printf 'GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n'
    /// | openssl dgst -sha256 -sign official_test_key.pem | base64 -w0`.
    const OPENSSL_GET_SIGNATURE: &str = "JNEITrKv8DWEtBJGZtxG9ARa+eIZDIn1Ht3MQM5j9jP77TtHdfCqLjpwevfWftBuaGMfEdiu2sWYtLvnZIoLW3FH10OVCBzKncid5xClTwav8JX+uDeGBBX8w64iHvFyuQj8ukZT+F1AFJii8hmXLD8Os90thnL0bfJYLo/4K237TH4dEd44NTH9ElFb/ykrvv9RBs+mCNpy5IUe2Qxhba3d3RiMqhWK2sSr3tsVzQihJ0TPMnjWqoU2W5Y/v3rBFDmLhqe0ZW6A4vyvjmiR0v/8XEI25Py4PNyZXszsdl4j0zLqelUJxGEMUBhYg1LIoDPjYMlA9HV1yKD6+JYZJA==";

    // A platform key pair made with `openssl genrsa 2048` for these tests.
    const PLATFORM_KEY_PEM: &str =
        include_str!("../../tests/fixtures/wechat/platform_private_key.pem");
    const PLATFORM_PUB_PEM: &str =
        include_str!("../../tests/fixtures/wechat/platform_public_key.pem");
    const PLATFORM_SERIAL: &str = "PUB_KEY_ID_0114232134912410000000000000000000";
    const CALLBACK_BODY: &str = include_str!("../../tests/fixtures/wechat/callback_body.json");
    const CALLBACK_TIMESTAMP: &str = "1779874270";
    const CALLBACK_NONCE: &str = "c5ac7061fccab6bf3e254dcf98995b8c";
    /// Independent vector: `"{CALLBACK_TIMESTAMP}\n{CALLBACK_NONCE}\n{callback_body.json}\n"`
    /// signed with `openssl dgst -sha256 -sign platform_private_key.pem` (Python driver, when
    /// this test was written).
    const OPENSSL_CALLBACK_SIGNATURE: &str = "behYatcvMUXHPUyS7gj5B0yPtraH0kalgt6lxnAbm7dDf9ADNbJAKrBOqzfaH7VmUwliNN9UOKZQgn1pDMWG0FZz94vm8Fi8RvU2oci3gkZuKTzK/dcYUhWsiR/bMAwo0ywrfchHGSldvLY7U/tzIUEJC64i89it+5Wt0YHigduphTlF5wcJAKc3GUXiietJ9h1J5vKPLLiO4H+goKK39IeSMbWiaoSBAxDww5n+18Gl0c7LsgsyGN7qNcJlsnUa9Oph71FF7mp/BZKpOjI+1t6q9kteuopJ7kMn7SLeNKA7iapuK2HIBXDby2yovURnnsH2DchSIQwh2YQBIZzlwg==";

    const TRANSACTION_JSON: &str = include_str!("../../tests/fixtures/wechat/transaction.json");
    const API_V3_KEY: &[u8] = b"ipayTestApiV3Key0123456789abcdef";
    /// Independent vector, made with Python `cryptography` when this test was written:
    /// `base64(AESGCM(API_V3_KEY).encrypt(b"a1b2c3d4e5f6", transaction.json bytes,
    /// b"transaction"))` (ciphertext followed by the 16-byte tag).
    const PYTHON_CIPHERTEXT: &str = "PVwL6XI1/xNwUDemG7YGS40BPjt4D3g6lxnz6clEy+xhAmX2InFIHkKnKDGJYeuLDeySs9gp2dDAizsoatwQm2W6hJb7GBCaYw5oxoP3JbukP9ikMh4qxZADd/m4VmPsT/ARUEurklw2m2LOlDyMkj4xGWlj7mCRab10Rqrfc3D0SiPziAx7B5mSxuo8amKj6sNCYrMbg2RAZ6LfFph3EiHEzi6Qo57IPCj/vEpb8zK3ceDOTukfAhLrhn4pJDHPzIrEG3OzEZEpE4WHZlbfuaApJ7k+x/VVGhMBGtbBOueT7AlbUu+bipLXtZ2AklxwliB4DvyMMMtNTGpJFPtEMC0ggMlwqGlOZk3rBWMRoHJlMlcXdRlZmUj0OIFwyNYC35xaF5JiXLPQK28bV1ToO9bTA92mL4egjbztW3aa293w5ZCSg4NgfMqNzP5J6q163Mqm+KOUs/NzUu171YckyXZjf+MbxaJG1ByDVw77tNXJxryxaaLj3uafj6AzS5RT87aiWrDQ4R3WMcqR7DOLNIjupsS5BdTlauzT1LCO8yjMQxDosgl0lVqKBkyuZrVqsHR2lqdBaZrCDycEP3iO4QA=";

    fn official_signer() -> MerchantSigner {
        let key = WechatPrivateKey::from_pem(OFFICIAL_KEY_PEM).unwrap();
        MerchantSigner::new(OFFICIAL_MCHID, OFFICIAL_SERIAL, key).unwrap()
    }

    fn platform_keys() -> PlatformKeys {
        let mut keys = PlatformKeys::new();
        keys.insert(
            PLATFORM_SERIAL,
            WechatPublicKey::from_pem(PLATFORM_PUB_PEM).unwrap(),
        );
        keys
    }

    fn callback_headers() -> SignedHeaders<'static> {
        SignedHeaders {
            timestamp: CALLBACK_TIMESTAMP,
            nonce: CALLBACK_NONCE,
            signature: OPENSSL_CALLBACK_SIGNATURE,
            serial: PLATFORM_SERIAL,
        }
    }

    const NOW: i64 = 1_779_874_270 + 12;

    fn resource() -> EncryptedResource {
        parse_callback(CALLBACK_BODY).unwrap().resource
    }

    fn api_key() -> ApiV3Key {
        ApiV3Key::new(API_V3_KEY).unwrap()
    }

    #[test]
    fn request_signature_matches_the_published_example() {
        let signer = official_signer();
        let sig = signer
            .sign_request(
                "POST",
                "/v3/pay/transactions/jsapi",
                OFFICIAL_TIMESTAMP,
                OFFICIAL_NONCE,
                OFFICIAL_BODY,
            )
            .unwrap();
        assert_eq!(sig, OFFICIAL_SIGNATURE);
    }

    #[test]
    fn authorization_header_has_the_documented_shape() {
        let header = official_signer()
            .authorization_header(
                "POST",
                "/v3/pay/transactions/jsapi",
                OFFICIAL_TIMESTAMP,
                OFFICIAL_NONCE,
                OFFICIAL_BODY,
            )
            .unwrap();
        assert_eq!(
            header,
            format!(
                "WECHATPAY2-SHA256-RSA2048 mchid=\"1900007291\",nonce_str=\"{OFFICIAL_NONCE}\",signature=\"{OFFICIAL_SIGNATURE}\",timestamp=\"1554208460\",serial_no=\"{OFFICIAL_SERIAL}\""
            )
        );
    }

    #[test]
    fn get_request_signs_an_empty_body_line_like_openssl() {
        assert_eq!(
            request_signing_string(
                "GET",
                "/v3/certificates",
                OFFICIAL_TIMESTAMP,
                OFFICIAL_NONCE,
                ""
            ),
            "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
        );
        let sig = official_signer()
            .sign_request(
                "GET",
                "/v3/certificates",
                OFFICIAL_TIMESTAMP,
                OFFICIAL_NONCE,
                "",
            )
            .unwrap();
        assert_eq!(sig, OPENSSL_GET_SIGNATURE);
    }

    #[test]
    fn request_inputs_are_checked() {
        let s = official_signer();
        let sign = |m, u, t, n| s.sign_request(m, u, t, n, "");
        assert!(matches!(
            sign("post", "/v3/x", 1, "n"),
            Err(WechatError::InvalidField {
                field: "method",
                ..
            })
        ));
        assert!(matches!(
            sign("GET", "https://api/v3/x", 1, "n"),
            Err(WechatError::InvalidField { field: "url", .. })
        ));
        assert!(matches!(
            sign("GET", "/v3/x y", 1, "n"),
            Err(WechatError::InvalidField { field: "url", .. })
        ));
        assert!(matches!(
            sign("GET", "/v3/x", -1, "n"),
            Err(WechatError::InvalidField {
                field: "timestamp",
                ..
            })
        ));
        assert!(matches!(
            sign("GET", "/v3/x", 1, "a\"b"),
            Err(WechatError::InvalidField {
                field: "nonce_str",
                ..
            })
        ));
        let key = WechatPrivateKey::from_pem(OFFICIAL_KEY_PEM).unwrap();
        assert!(MerchantSigner::new("19\"00", OFFICIAL_SERIAL, key.clone()).is_err());
        assert!(MerchantSigner::new(OFFICIAL_MCHID, "", key).is_err());
        let nonce = generate_nonce();
        assert_eq!(nonce.len(), 32);
        assert!(
            nonce
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
        );
        assert_ne!(nonce, generate_nonce());
    }

    #[test]
    fn native_order_body_and_signature() {
        let order = NativeOrder {
            appid: "wxd678efh567hg6787",
            mchid: "1900007291",
            description: "Coffee 咖啡",
            out_trade_no: "pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB",
            notify_url: "https://pay.example.com/wechat/notify",
            amount: Money::from_parts(699, "CNY").unwrap(),
            expires_at: Some(Timestamp(1_779_874_200_000 + 900_000)),
        };
        let body = native_order_body(&order).unwrap();
        assert_eq!(
            body,
            r#"{"appid":"wxd678efh567hg6787","mchid":"1900007291","description":"Coffee 咖啡","out_trade_no":"pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB","time_expire":"2026-05-27T17:45:00+08:00","notify_url":"https://pay.example.com/wechat/notify","amount":{"total":699,"currency":"CNY"}}"#
        );
        // The signature over the exact body verifies with the published key's public half.
        let sig = official_signer()
            .sign_request("POST", NATIVE_ORDER_PATH, 1_779_874_200, "NONCE", &body)
            .unwrap();
        let public = WechatPublicKey::from_pem(OFFICIAL_PUB_PEM).unwrap();
        let digest = Sha256::new_with_prefix(
            request_signing_string("POST", NATIVE_ORDER_PATH, 1_779_874_200, "NONCE", &body)
                .as_bytes(),
        );
        public.verify_digest(digest, &sig).unwrap();
        let no_expiry = NativeOrder {
            expires_at: None,
            ..order.clone()
        };
        assert!(
            !native_order_body(&no_expiry)
                .unwrap()
                .contains("time_expire")
        );
    }

    #[test]
    fn native_order_inputs_are_checked() {
        let ok = NativeOrder {
            appid: "wx1",
            mchid: "1900007291",
            description: "d",
            out_trade_no: "order_1",
            notify_url: "https://n.example/notify",
            amount: Money::from_parts(1, "CNY").unwrap(),
            expires_at: None,
        };
        assert!(native_order_body(&ok).is_ok());
        for bad in ["short", "with space x", &"x".repeat(33), "a#bcdefg"] {
            let o = NativeOrder {
                out_trade_no: bad,
                ..ok.clone()
            };
            assert!(matches!(
                native_order_body(&o),
                Err(WechatError::InvalidField {
                    field: "out_trade_no",
                    ..
                })
            ));
        }
        let long = "长".repeat(128);
        let o = NativeOrder {
            description: &long,
            ..ok.clone()
        };
        assert!(native_order_body(&o).is_err());
        let o = NativeOrder {
            notify_url: "https://n/x?a=1",
            ..ok.clone()
        };
        assert!(native_order_body(&o).is_err());
        let o = NativeOrder {
            amount: Money::from_parts(1, "USD").unwrap(),
            ..ok.clone()
        };
        assert_eq!(
            native_order_body(&o),
            Err(WechatError::UnsupportedCurrency("USD".into()))
        );
    }

    #[test]
    fn native_answer_is_parsed() {
        assert_eq!(
            parse_native_response(r#"{"code_url":"weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}"#)
                .unwrap(),
            "weixin://wxpay/bizpayurl?pr=p4lpSuKzz"
        );
        assert_eq!(
            parse_native_response(r#"{"code":"PARAM_ERROR","message":"参数错误"}"#),
            Err(WechatError::Api {
                code: "PARAM_ERROR".into(),
                message: "参数错误".into()
            })
        );
        assert!(matches!(
            parse_native_response("{}"),
            Err(WechatError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_native_response("<html>"),
            Err(WechatError::MalformedJson(_))
        ));
    }

    #[test]
    fn callback_signed_by_openssl_verifies() {
        verify_signature(
            &callback_headers(),
            CALLBACK_BODY.as_bytes(),
            &platform_keys(),
            NOW,
            DEFAULT_TOLERANCE_SECS,
        )
        .unwrap();
        // Our simulator-side signer produces the very same signature.
        let platform = WechatPrivateKey::from_pem(PLATFORM_KEY_PEM).unwrap();
        assert_eq!(
            platform
                .sign_notification(1_779_874_270, CALLBACK_NONCE, CALLBACK_BODY.as_bytes())
                .unwrap(),
            OPENSSL_CALLBACK_SIGNATURE
        );
    }

    #[test]
    fn callback_headers_are_collected_by_name() {
        let lookup = |name: &str| match name {
            "Wechatpay-Timestamp" => Some(CALLBACK_TIMESTAMP),
            "Wechatpay-Nonce" => Some(CALLBACK_NONCE),
            "Wechatpay-Signature" => Some(OPENSSL_CALLBACK_SIGNATURE),
            "Wechatpay-Serial" => Some(PLATFORM_SERIAL),
            _ => None,
        };
        assert_eq!(
            SignedHeaders::from_lookup(lookup).unwrap(),
            callback_headers()
        );
        let missing = |name: &str| {
            if name == HEADER_SERIAL {
                None
            } else {
                lookup(name)
            }
        };
        assert_eq!(
            SignedHeaders::from_lookup(missing),
            Err(WechatError::MissingHeader("Wechatpay-Serial"))
        );
    }

    #[test]
    fn callback_timestamp_outside_tolerance_is_rejected() {
        let keys = platform_keys();
        let body = CALLBACK_BODY.as_bytes();
        let ts = 1_779_874_270;
        let check = |now, tol| verify_signature(&callback_headers(), body, &keys, now, tol);
        assert_eq!(
            check(ts + 301, 300),
            Err(WechatError::TimestampOutOfTolerance { skew_secs: 301 })
        );
        assert_eq!(
            check(ts - 301, 300),
            Err(WechatError::TimestampOutOfTolerance { skew_secs: 301 })
        );
        assert_eq!(check(ts + 300, 300), Ok(()));
        assert_eq!(check(ts + 600, 600), Ok(()));
        for bad in ["", "abc", "+1779874270", "-1", "17798742701779874270"] {
            let headers = SignedHeaders {
                timestamp: bad,
                ..callback_headers()
            };
            assert_eq!(
                verify_signature(&headers, body, &keys, NOW, 300),
                Err(WechatError::InvalidTimestamp)
            );
        }
    }

    #[test]
    fn callback_with_unknown_serial_wrong_key_or_tampering_is_rejected() {
        let keys = platform_keys();
        let headers = SignedHeaders {
            serial: "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
            ..callback_headers()
        };
        assert!(matches!(
            verify_signature(&headers, CALLBACK_BODY.as_bytes(), &keys, NOW, 300),
            Err(WechatError::UnknownSerial(_))
        ));
        let mut wrong = PlatformKeys::new();
        wrong.insert(
            PLATFORM_SERIAL,
            WechatPublicKey::from_pem(OFFICIAL_PUB_PEM).unwrap(),
        );
        assert_eq!(
            verify_signature(
                &callback_headers(),
                CALLBACK_BODY.as_bytes(),
                &wrong,
                NOW,
                300
            ),
            Err(WechatError::BadSignature)
        );
        let tampered = CALLBACK_BODY.replace("TRANSACTION.SUCCESS", "TRANSACTION.SUCCESs");
        assert_eq!(
            verify_signature(&callback_headers(), tampered.as_bytes(), &keys, NOW, 300),
            Err(WechatError::BadSignature)
        );
        let other_nonce = SignedHeaders {
            nonce: "c5ac7061fccab6bf3e254dcf98995b8d",
            ..callback_headers()
        };
        assert_eq!(
            verify_signature(&other_nonce, CALLBACK_BODY.as_bytes(), &keys, NOW, 300),
            Err(WechatError::BadSignature)
        );
        let probe = SignedHeaders {
            signature: "WECHATPAY/SIGNTEST/NvUydzGmXmnBI+k1HTxMB1sFdVc=",
            ..callback_headers()
        };
        assert!(verify_signature(&probe, CALLBACK_BODY.as_bytes(), &keys, NOW, 300).is_err());
        let garbage = SignedHeaders {
            signature: "%%%",
            ..callback_headers()
        };
        assert_eq!(
            verify_signature(&garbage, CALLBACK_BODY.as_bytes(), &keys, NOW, 300),
            Err(WechatError::InvalidSignatureEncoding)
        );
    }

    #[test]
    fn resource_made_by_python_decrypts() {
        let r = resource();
        assert_eq!(r.ciphertext, PYTHON_CIPHERTEXT);
        assert_eq!(api_key().decrypt_resource(&r).unwrap(), TRANSACTION_JSON);
        let tx = api_key().decrypt_transaction(&r).unwrap();
        assert_eq!(tx.out_trade_no, "pi_01JWQ8Z6Q0V3R2K9M5N7P4T1XB");
        assert_eq!(
            tx.transaction_id.as_deref(),
            Some("4200002345202605271234567890")
        );
        assert_eq!(tx.trade_state, TradeState::Success);
        assert_eq!(tx.amount.total, 699);
        assert_eq!(tx.amount.currency, "CNY");
        assert_eq!(
            tx.payer.unwrap().openid.as_deref(),
            Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
        );
    }

    #[test]
    fn our_encryption_matches_python() {
        let r = api_key()
            .encrypt_resource(
                TRANSACTION_JSON,
                "a1b2c3d4e5f6",
                "transaction",
                "transaction",
            )
            .unwrap();
        assert_eq!(r, resource());
    }

    #[test]
    fn wrong_key_tampering_or_wrong_associated_data_fail() {
        let r = resource();
        let other = ApiV3Key::new(b"ipayTestApiV3Key0123456789abcdeF").unwrap();
        assert_eq!(
            other.decrypt_resource(&r),
            Err(WechatError::DecryptionFailed)
        );

        let mut raw = STANDARD.decode(&r.ciphertext).unwrap();
        for i in [0, raw.len() / 2, raw.len() - 1] {
            raw[i] ^= 0x01;
            let t = EncryptedResource {
                ciphertext: STANDARD.encode(&raw),
                ..r.clone()
            };
            assert_eq!(
                api_key().decrypt_resource(&t),
                Err(WechatError::DecryptionFailed)
            );
            raw[i] ^= 0x01;
        }
        let t = EncryptedResource {
            associated_data: "transactiom".into(),
            ..r.clone()
        };
        assert_eq!(
            api_key().decrypt_resource(&t),
            Err(WechatError::DecryptionFailed)
        );
        let t = EncryptedResource {
            associated_data: String::new(),
            ..r.clone()
        };
        assert_eq!(
            api_key().decrypt_resource(&t),
            Err(WechatError::DecryptionFailed)
        );
        let t = EncryptedResource {
            nonce: "a1b2c3d4e5f7".into(),
            ..r.clone()
        };
        assert_eq!(
            api_key().decrypt_resource(&t),
            Err(WechatError::DecryptionFailed)
        );
    }

    #[test]
    fn malformed_resources_are_rejected() {
        let r = resource();
        let t = EncryptedResource {
            algorithm: "AEAD_AES_128_GCM".into(),
            ..r.clone()
        };
        assert!(matches!(
            api_key().decrypt_resource(&t),
            Err(WechatError::UnsupportedAlgorithm(_))
        ));
        let t = EncryptedResource {
            nonce: "short".into(),
            ..r.clone()
        };
        assert_eq!(
            api_key().decrypt_resource(&t),
            Err(WechatError::InvalidNonceLength(5))
        );
        let t = EncryptedResource {
            ciphertext: "not base64!".into(),
            ..r.clone()
        };
        assert_eq!(
            api_key().decrypt_resource(&t),
            Err(WechatError::InvalidCiphertext)
        );
        let t = EncryptedResource {
            ciphertext: STANDARD.encode([0u8; 15]),
            ..r.clone()
        };
        assert_eq!(
            api_key().decrypt_resource(&t),
            Err(WechatError::InvalidCiphertext)
        );
        assert!(
            api_key()
                .encrypt_resource("{}", "short", "", "transaction")
                .is_err()
        );
    }

    #[test]
    fn api_v3_key_length_is_enforced() {
        assert_eq!(
            ApiV3Key::new(b"0123456789abcdef0123456789abcde").unwrap_err(),
            WechatError::InvalidApiV3KeyLength(31)
        );
        assert_eq!(
            ApiV3Key::new(&[0u8; 33]).unwrap_err(),
            WechatError::InvalidApiV3KeyLength(33)
        );
        assert_eq!(
            ApiV3Key::new(b"").unwrap_err(),
            WechatError::InvalidApiV3KeyLength(0)
        );
    }

    #[test]
    fn keys_are_checked_and_redacted() {
        let weak = include_str!("../../tests/fixtures/alipay/weak_1024_private_key.pem");
        assert_eq!(
            WechatPrivateKey::from_pem(weak).unwrap_err(),
            WechatError::KeyTooSmall { bits: 1024 }
        );
        assert!(matches!(
            WechatPublicKey::from_pem(OFFICIAL_KEY_PEM),
            Err(WechatError::InvalidKey(_))
        ));
        assert!(matches!(
            WechatPublicKey::from_pem(
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
            ),
            Err(WechatError::InvalidKey(_))
        ));
        let bare: String = OFFICIAL_KEY_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let from_bare = WechatPrivateKey::parse(&bare).unwrap();
        assert_eq!(from_bare.bits(), 2048);
        let pub_bare: String = OFFICIAL_PUB_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert_eq!(WechatPublicKey::parse(&pub_bare).unwrap().bits(), 2048);
        let shown = format!(
            "{:?} {:?} {:?}",
            official_signer(),
            from_bare.public_key(),
            api_key()
        );
        assert_eq!(
            shown,
            "MerchantSigner { mchid: \"1900007291\", serial_no: \"408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB\", key: WechatPrivateKey(RSA-2048, redacted) } WechatPublicKey(RSA-2048) ApiV3Key(redacted)"
        );
    }

    #[test]
    fn resource_nonces_are_fresh() {
        let a = generate_resource_nonce();
        assert_eq!(a.len(), RESOURCE_NONCE_LEN);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, generate_resource_nonce());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn encrypt_then_decrypt_round_trips(
            key in proptest::array::uniform32(any::<u8>()),
            plaintext in "\\PC{0,600}",
            nonce in "[0-9A-Za-z]{12}",
            aad in "[ -~]{0,16}",
        ) {
            let key = ApiV3Key::new(&key).unwrap();
            let r = key.encrypt_resource(&plaintext, &nonce, &aad, "transaction").unwrap();
            prop_assert_eq!(key.decrypt_resource(&r).unwrap(), plaintext);
            let other = EncryptedResource { associated_data: format!("{aad}x"), ..r };
            prop_assert_eq!(key.decrypt_resource(&other), Err(WechatError::DecryptionFailed));
        }

        #[test]
        fn notification_sign_then_verify_round_trips(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            nonce in "[0-9a-f]{32}",
            ts in 1_500_000_000i64..2_000_000_000,
        ) {
            let platform = WechatPrivateKey::from_pem(PLATFORM_KEY_PEM).unwrap();
            let sig = platform.sign_notification(ts, &nonce, &body).unwrap();
            let ts_text = ts.to_string();
            let headers = SignedHeaders { timestamp: &ts_text, nonce: &nonce, signature: &sig, serial: PLATFORM_SERIAL };
            prop_assert_eq!(verify_signature(&headers, &body, &platform_keys(), ts, 300), Ok(()));
            let mut tampered = body.clone();
            tampered.push(b' ');
            prop_assert_eq!(
                verify_signature(&headers, &tampered, &platform_keys(), ts, 300),
                Err(WechatError::BadSignature)
            );
        }
    }
}
