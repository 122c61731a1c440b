//! The signature schemes shop platforms authenticate webhooks with: computing a signature
//! ([`sign`], for simulated deliveries) and checking one in constant time ([`verify`]). Which
//! platform uses which scheme and header is in each platform's module; secrets are the
//! caller's to keep.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How a platform authenticates a delivery. The `&str` is the header carrying the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Base64 HMAC-SHA256 of the raw body.
    HmacBase64(&'static str),
    /// Hex HMAC-SHA256 of the raw body.
    HmacHex(&'static str),
    /// `sha256=` + hex HMAC-SHA256 of the raw body.
    HmacHexPrefixed(&'static str),
    /// Hex MD5 of the raw body followed by the secret (Lightspeed eCom).
    Md5BodySecret(&'static str),
    /// The secret itself as the `token` query parameter (platforms that cannot sign).
    UrlToken,
}

impl Scheme {
    /// The header carrying the signature, if any.
    pub fn header(&self) -> Option<&'static str> {
        match self {
            Scheme::HmacBase64(h)
            | Scheme::HmacHex(h)
            | Scheme::HmacHexPrefixed(h)
            | Scheme::Md5BodySecret(h) => Some(h),
            Scheme::UrlToken => None,
        }
    }
}

/// A header's value as trimmed text; `None` when absent or not visible ASCII.
pub fn header<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn hmac_sha256(secret: &[u8], body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(body);
    m.finalize().into_bytes().into()
}

/// Computes the signature header value a platform would send for `body` (used by simulate and
/// by tests; checking goes through [`verify`]).
pub fn sign(scheme: Scheme, secret: &str, body: &[u8]) -> String {
    match scheme {
        Scheme::HmacBase64(_) => {
            base64::engine::general_purpose::STANDARD.encode(hmac_sha256(secret.as_bytes(), body))
        }
        Scheme::HmacHex(_) => hex::encode(hmac_sha256(secret.as_bytes(), body)),
        Scheme::HmacHexPrefixed(_) => {
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(secret.as_bytes(), body))
            )
        }
        Scheme::Md5BodySecret(_) => {
            use md5::Digest as _;
            let mut h = md5::Md5::new();
            h.update(body);
            h.update(secret.as_bytes());
            hex::encode(h.finalize())
        }
        Scheme::UrlToken => secret.to_string(),
    }
}

/// Whether a delivery carries a valid signature (constant-time comparison): in the scheme's
/// header, or for [`Scheme::UrlToken`] in the `token` query parameter.
pub fn verify(
    scheme: Scheme,
    secret: &str,
    headers: &http::HeaderMap,
    token: Option<&str>,
    body: &[u8],
) -> bool {
    let given = match scheme {
        Scheme::UrlToken => token,
        Scheme::HmacBase64(h)
        | Scheme::HmacHex(h)
        | Scheme::HmacHexPrefixed(h)
        | Scheme::Md5BodySecret(h) => header(headers, h),
    };
    let Some(given) = given.filter(|g| !g.is_empty()) else {
        return false;
    };
    let expected = sign(scheme, secret, body);
    let (a, b) = match scheme {
        // Hex is case-insensitive.
        Scheme::HmacHex(_) | Scheme::HmacHexPrefixed(_) | Scheme::Md5BodySecret(_) => {
            (given.to_ascii_lowercase(), expected)
        }
        _ => (given.to_string(), expected),
    };
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Test helpers shared by the platform modules' vector tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The secret the vectors in `adapters/tests/fixtures/shops` were signed with.
    pub(crate) const SECRET: &str = "shop-secret-0123456789abcdef";

    /// Whether `sig` (as the platform would send it) verifies for `body` under `scheme`.
    pub(crate) fn accepts(scheme: Scheme, body: &[u8], sig: &str) -> bool {
        let mut h = http::HeaderMap::new();
        let mut token = None;
        match scheme.header() {
            Some(name) => {
                h.insert(name, http::HeaderValue::from_str(sig).unwrap());
            }
            None => token = Some(sig),
        }
        verify(scheme, SECRET, &h, token, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shopify_style_signature_matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = sign(
            Scheme::HmacHex("x"),
            "Jefe",
            b"what do ya want for nothing?",
        );
        assert_eq!(
            sig,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_missing_empty_or_altered_signature_is_refused() {
        let scheme = Scheme::HmacBase64("X-Sig");
        let body = b"{\"id\":1}";
        let good = sign(scheme, testing::SECRET, body);
        assert!(testing::accepts(scheme, body, &good));
        assert!(!testing::accepts(scheme, b"{\"id\":2}", &good));
        assert!(!testing::accepts(scheme, body, ""));
        assert!(!verify(
            scheme,
            testing::SECRET,
            &http::HeaderMap::new(),
            None,
            body
        ));
    }

    #[test]
    fn hex_signatures_compare_case_insensitively() {
        let scheme = Scheme::HmacHexPrefixed("X-Hub-Signature");
        let body = b"{}";
        let sig = sign(scheme, testing::SECRET, body).to_ascii_uppercase();
        assert!(testing::accepts(scheme, body, &sig));
    }
}
