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
/// Path of domestic refunds (POST creates; `/{out_refund_no}` queries).
pub const REFUNDS_PATH: &str = "/v3/refund/domestic/refunds";
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

// ---------------------------------------------------------------------------------------------
// Domestic refunds
// ---------------------------------------------------------------------------------------------

/// A refund request: `out_refund_no` identifies the refund, so WeChat Pay refunds a repeated
/// request only once.
#[derive(Debug, Clone)]
pub struct RefundRequest<'a> {
    /// The paid order's number.
    pub out_trade_no: &'a str,
    /// Our refund id.
    pub out_refund_no: &'a str,
    /// Shown to the payer (at most 80 characters are sent).
    pub reason: Option<&'a str>,
    /// Where the refund notification goes.
    pub notify_url: &'a str,
    /// How much to refund, in fen (CNY).
    pub refund: Money,
    /// The order's total, in fen.
    pub total: Money,
}

#[derive(Serialize)]
struct RefundBody<'a> {
    out_trade_no: &'a str,
    out_refund_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    notify_url: &'a str,
    amount: RefundBodyAmount,
}

#[derive(Serialize)]
struct RefundBodyAmount {
    refund: i64,
    total: i64,
    currency: &'static str,
}

/// The JSON body of `POST /v3/refund/domestic/refunds`.
pub fn refund_body(req: &RefundRequest<'_>) -> Result<String, WechatError> {
    if req.refund.currency.code() != "CNY" || req.total.currency.code() != "CNY" {
        return Err(WechatError::InvalidField {
            field: "amount.currency",
            reason: "WeChat Pay domestic refunds are in CNY",
        });
    }
    if req.refund.value <= 0 || req.refund.value > req.total.value {
        return Err(WechatError::InvalidField {
            field: "amount.refund",
            reason: "must be positive and at most the order total",
        });
    }
    let body = RefundBody {
        out_trade_no: req.out_trade_no,
        out_refund_no: req.out_refund_no,
        reason: req
            .reason
            .map(|r| {
                r.chars()
                    .filter(|c| !c.is_control())
                    .take(80)
                    .collect::<String>()
            })
            .filter(|r| !r.is_empty()),
        notify_url: req.notify_url,
        amount: RefundBodyAmount {
            refund: req.refund.value,
            total: req.total.value,
            currency: "CNY",
        },
    };
    serde_json::to_string(&body).map_err(|e| WechatError::MalformedJson(e.to_string()))
}

/// Where a refund stands at WeChat Pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    /// Money returned.
    Success,
    /// Closed without refunding.
    Closed,
    /// Being processed.
    Processing,
    /// Failed at the payer's bank; the merchant must act in the merchant platform.
    Abnormal,
    /// A status this version does not know.
    #[serde(other)]
    Unknown,
}

/// A refund as the API answers it, or as a refund notification's decrypted `refund` resource.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Refund {
    /// WeChat Pay's refund id.
    pub refund_id: Option<String>,
    /// Our refund id.
    pub out_refund_no: String,
    /// The paid order's number.
    pub out_trade_no: Option<String>,
    /// The answer's status (`status` in API answers, `refund_status` in notifications).
    #[serde(alias = "refund_status")]
    pub status: RefundStatus,
    /// Merchant number (notifications).
    #[serde(default)]
    pub mchid: Option<String>,
}

/// Parses a refund answer (verify the answer's signature first).
pub fn parse_refund(body: &str) -> Result<Refund, WechatError> {
    serde_json::from_str(body).map_err(|e| WechatError::MalformedJson(e.to_string()))
}

impl ApiV3Key {
    /// Decrypts a `refund` resource (of a `REFUND.*` notification) and parses it.
    pub fn decrypt_refund(&self, resource: &EncryptedResource) -> Result<Refund, WechatError> {
        let plaintext = self.decrypt_resource(resource)?;
        parse_refund(&plaintext)
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
