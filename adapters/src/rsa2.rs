//! SHA256withRSA (PKCS#1 v1.5) keys, shared by the channels that sign that way (Alipay RSA2,
//! WeChat Pay API v3): parsing from PEM or from bare base64 DER, a 2048-bit floor, signing and
//! verifying. It owns no channel's wording: each channel wraps these types and maps
//! [`KeyError`] and [`VerifyError`] into its own error enum.
//!
//! Two ways in, same signatures out (PKCS#1 v1.5 is deterministic):
//!
//! - **Message** ([`PublicKey::verify`], [`PublicKey::verify_parts`], [`PrivateKey::sign`],
//!   [`PrivateKey::sign_parts`]): `ring` hashes and checks. This is the fast path, about ten
//!   times faster than the pure-Rust `rsa` crate at verifying (see `docs/performance.md`), and
//!   the one callback verification should use.
//! - **Digest** ([`PublicKey::verify_digest`], [`PrivateKey::sign_digest`]): the caller streams
//!   the signed bytes into a `sha2::Sha256`. `ring` has no API for an already-hashed message,
//!   so this path stays on the `rsa` crate.
//!
//! Keys are parsed by the `rsa` crate (PEM, PKCS#1, PKCS#8, SubjectPublicKeyInfo, consistency
//! checks) and handed to `ring` as numbers (public) or PKCS#8 DER (private).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::der::zeroize::Zeroizing;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::rand_core::OsRng;
use rsa::signature::{DigestVerifier, RandomizedDigestSigner, SignatureEncoding};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents,
};

/// Smallest modulus accepted, in bits.
pub const MIN_KEY_BITS: usize = 2048;
/// Room for a decoded signature of up to an 8192-bit key.
const MAX_SIGNATURE_BYTES: usize = 1024;
/// Messages given in parts are joined on the stack up to this size (a typical notify or
/// callback body), on the heap beyond it: `ring` wants the message in one slice.
pub const INLINE_MESSAGE_BYTES: usize = 4096;

/// Why key text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not a key of the expected kind; the text says which.
    Invalid(&'static str),
    /// A valid key with a modulus below [`MIN_KEY_BITS`].
    TooSmall { bits: usize },
}

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// Not base64 of a plausible RSA signature.
    Encoding,
    /// Does not match the content and key.
    Mismatch,
}

/// A private key that signs SHA256withRSA. No `Debug`: wrappers print the size only.
#[derive(Clone)]
pub struct PrivateKey {
    signing: SigningKey<Sha256>,
    /// `None` when `ring` refuses a key the `rsa` crate accepts (`ring` signs with 2048 to
    /// 4096-bit keys only); signing then falls back to the `rsa` crate.
    ring: Option<Arc<RsaKeyPair>>,
    bits: usize,
}

/// A public key that verifies SHA256withRSA.
#[derive(Clone)]
pub struct PublicKey {
    verifying: VerifyingKey<Sha256>,
    /// Big-endian modulus and exponent, as `ring` takes them.
    ring: RsaPublicKeyComponents<Vec<u8>>,
    bits: usize,
}

/// A SHA-256 hasher primed with `message`: the input of [`PublicKey::verify_digest`] and
/// [`PrivateKey::sign_digest`] when the message is already in one piece (tests, benches).
pub fn digest_of(message: &[u8]) -> Sha256 {
    use sha2::Digest as _;
    Sha256::new_with_prefix(message)
}

fn ring_components(key: &RsaPublicKey) -> RsaPublicKeyComponents<Vec<u8>> {
    RsaPublicKeyComponents {
        n: key.n().to_bytes_be(),
        e: key.e().to_bytes_be(),
    }
}

fn check_bits(bits: usize) -> Result<(), KeyError> {
    if bits < MIN_KEY_BITS {
        return Err(KeyError::TooSmall { bits });
    }
    Ok(())
}

/// Decodes a base64 signature into `buf`; the decoded bytes, never empty.
fn decode_signature<'b>(
    signature_b64: &str,
    buf: &'b mut [u8; MAX_SIGNATURE_BYTES],
) -> Result<&'b [u8], VerifyError> {
    let len = STANDARD
        .decode_slice(signature_b64.as_bytes(), buf)
        .map_err(|_| VerifyError::Encoding)?;
    if len == 0 {
        return Err(VerifyError::Encoding);
    }
    Ok(&buf[..len])
}

/// Calls `f` with `parts` joined into one slice: on the stack up to [`INLINE_MESSAGE_BYTES`],
/// in one heap buffer beyond.
fn with_joined<'a, R>(parts: impl IntoIterator<Item = &'a [u8]>, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut inline = [0u8; INLINE_MESSAGE_BYTES];
    let mut len = 0;
    let mut spilled: Option<Vec<u8>> = None;
    for part in parts {
        match &mut spilled {
            Some(heap) => heap.extend_from_slice(part),
            None if part.len() <= INLINE_MESSAGE_BYTES - len => {
                inline[len..len + part.len()].copy_from_slice(part);
                len += part.len();
            }
            None => {
                let mut heap = Vec::with_capacity(2 * (len + part.len()));
                heap.extend_from_slice(&inline[..len]);
                heap.extend_from_slice(part);
                spilled = Some(heap);
            }
        }
    }
    match &spilled {
        Some(heap) => f(heap),
        None => f(&inline[..len]),
    }
}

fn decode_bare_base64(text: &str) -> Result<Vec<u8>, KeyError> {
    let compact: Zeroizing<Vec<u8>> =
        Zeroizing::new(text.bytes().filter(|b| !b.is_ascii_whitespace()).collect());
    if compact.is_empty() {
        return Err(KeyError::Invalid("empty key"));
    }
    STANDARD
        .decode(&*compact)
        .map_err(|_| KeyError::Invalid("not base64"))
}

impl PrivateKey {
    /// PEM: PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let pem = pem.trim();
        let key = if pem.starts_with("-----BEGIN PRIVATE KEY-----") {
            RsaPrivateKey::from_pkcs8_pem(pem)
                .map_err(|_| KeyError::Invalid("not a PKCS#8 RSA private key"))?
        } else if pem.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
            RsaPrivateKey::from_pkcs1_pem(pem)
                .map_err(|_| KeyError::Invalid("not a PKCS#1 RSA private key"))?
        } else {
            return Err(KeyError::Invalid(
                "expected a `BEGIN PRIVATE KEY` or `BEGIN RSA PRIVATE KEY` PEM block",
            ));
        };
        Self::from_rsa(key)
    }

    /// Bare base64 DER (PKCS#8 or PKCS#1); whitespace is ignored.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let der = Zeroizing::new(decode_bare_base64(text)?);
        let key = RsaPrivateKey::from_pkcs8_der(&der)
            .or_else(|_| RsaPrivateKey::from_pkcs1_der(&der))
            .map_err(|_| KeyError::Invalid("not a PKCS#8 or PKCS#1 RSA private key"))?;
        Self::from_rsa(key)
    }

    /// PEM when the text starts with `-----BEGIN`, bare base64 otherwise.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        if text.trim_start().starts_with("-----BEGIN") {
            Self::from_pem(text)
        } else {
            Self::from_base64(text)
        }
    }

    fn from_rsa(key: RsaPrivateKey) -> Result<Self, KeyError> {
        key.validate()
            .map_err(|_| KeyError::Invalid("inconsistent RSA private key"))?;
        let bits = key.n().bits();
        check_bits(bits)?;
        let ring = rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&key)
            .ok()
            .and_then(|der| RsaKeyPair::from_pkcs8(der.as_bytes()).ok())
            .map(Arc::new);
        Ok(PrivateKey {
            signing: SigningKey::new(key),
            ring,
            bits,
        })
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let public: RsaPublicKey = self.signing.as_ref().to_public_key();
        PublicKey {
            ring: ring_components(&public),
            verifying: VerifyingKey::new(public),
            bits: self.bits,
        }
    }

    /// Base64 signature of `message`, signed by `ring` (with RSA blinding). `None` only if RSA
    /// itself fails, which a validated key does not.
    pub fn sign(&self, message: &[u8]) -> Option<String> {
        let Some(pair) = &self.ring else {
            let signature = rsa::signature::RandomizedSigner::try_sign_with_rng(
                &self.signing,
                &mut OsRng,
                message,
            )
            .ok()?;
            return Some(STANDARD.encode(signature.to_bytes()));
        };
        let mut buf = [0u8; MAX_SIGNATURE_BYTES];
        let out = buf.get_mut(..pair.public().modulus_len())?;
        pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, out)
            .ok()?;
        Some(STANDARD.encode(out))
    }

    /// [`PrivateKey::sign`] over the concatenation of `parts`.
    pub fn sign_parts<'a>(&self, parts: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
        with_joined(parts, |message| self.sign(message))
    }

    /// Base64 signature of a digest. `None` only if RSA itself fails, which a validated key
    /// does not.
    pub fn sign_digest(&self, digest: Sha256) -> Option<String> {
        // Randomized signer: the same deterministic PKCS#1 v1.5 signature, computed with RSA
        // blinding.
        let signature = self
            .signing
            .try_sign_digest_with_rng(&mut OsRng, digest)
            .ok()?;
        Some(STANDARD.encode(signature.to_bytes()))
    }
}

impl PublicKey {
    /// PEM: SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`) or PKCS#1 (`BEGIN RSA PUBLIC KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let pem = pem.trim();
        let key = if pem.starts_with("-----BEGIN PUBLIC KEY-----") {
            RsaPublicKey::from_public_key_pem(pem)
                .map_err(|_| KeyError::Invalid("not an RSA SubjectPublicKeyInfo"))?
        } else if pem.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
            RsaPublicKey::from_pkcs1_pem(pem)
                .map_err(|_| KeyError::Invalid("not a PKCS#1 RSA public key"))?
        } else {
            return Err(KeyError::Invalid(
                "expected a `BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY` PEM block",
            ));
        };
        Self::from_rsa(key)
    }

    /// Bare base64 DER (SubjectPublicKeyInfo or PKCS#1); whitespace is ignored.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let der = decode_bare_base64(text)?;
        let key = RsaPublicKey::from_public_key_der(&der)
            .or_else(|_| RsaPublicKey::from_pkcs1_der(&der))
            .map_err(|_| KeyError::Invalid("not an RSA public key"))?;
        Self::from_rsa(key)
    }

    /// PEM when the text starts with `-----BEGIN`, bare base64 otherwise.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        if text.trim_start().starts_with("-----BEGIN") {
            Self::from_pem(text)
        } else {
            Self::from_base64(text)
        }
    }

    fn from_rsa(key: RsaPublicKey) -> Result<Self, KeyError> {
        let bits = key.n().bits();
        check_bits(bits)?;
        Ok(PublicKey {
            ring: ring_components(&key),
            verifying: VerifyingKey::new(key),
            bits,
        })
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// The underlying RSA key (re-encoding in tests and tools).
    pub fn as_rsa(&self) -> &RsaPublicKey {
        self.verifying.as_ref()
    }

    /// Checks a base64 signature over `message` with `ring`, without allocating. The fast
    /// path: prefer it (or [`PublicKey::verify_parts`]) to [`PublicKey::verify_digest`].
    pub fn verify(&self, message: &[u8], signature_b64: &str) -> Result<(), VerifyError> {
        let mut buf = [0u8; MAX_SIGNATURE_BYTES];
        let signature = decode_signature(signature_b64, &mut buf)?;
        // `ring` refuses a signature whose length differs from the modulus, any padding but
        // PKCS#1 v1.5 with the SHA-256 DigestInfo, and moduli outside 2048..=8192 bits.
        self.ring
            .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
            .map_err(|_| VerifyError::Mismatch)
    }

    /// [`PublicKey::verify`] over the concatenation of `parts` (joined on the stack up to
    /// [`INLINE_MESSAGE_BYTES`], in one heap buffer beyond).
    pub fn verify_parts<'a>(
        &self,
        parts: impl IntoIterator<Item = &'a [u8]>,
        signature_b64: &str,
    ) -> Result<(), VerifyError> {
        // Decode first: a malformed signature costs no copying.
        let mut buf = [0u8; MAX_SIGNATURE_BYTES];
        let signature = decode_signature(signature_b64, &mut buf)?;
        with_joined(parts, |message| {
            self.ring
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .map_err(|_| VerifyError::Mismatch)
        })
    }

    /// Checks a base64 signature over a digest the caller streamed, without allocating. Runs
    /// on the pure-Rust `rsa` crate (`ring` cannot take a digest), about ten times slower than
    /// [`PublicKey::verify`].
    pub fn verify_digest(&self, digest: Sha256, signature_b64: &str) -> Result<(), VerifyError> {
        let mut buf = [0u8; MAX_SIGNATURE_BYTES];
        let signature = decode_signature(signature_b64, &mut buf)?;
        let signature = Signature::try_from(signature).map_err(|_| VerifyError::Encoding)?;
        // The padding check inside `rsa` compares the recovered encoding with the expected one;
        // nothing secret is compared here (the key is public).
        self.verifying
            .verify_digest(digest, &signature)
            .map_err(|_| VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    const APP_PRIVATE_PKCS8: &str = include_str!("../tests/fixtures/alipay/app_private_key.pem");
    const APP_PRIVATE_PKCS1: &str =
        include_str!("../tests/fixtures/alipay/app_private_key_pkcs1.pem");
    const APP_PUBLIC: &str = include_str!("../tests/fixtures/alipay/app_public_key.pem");
    const WEAK_PRIVATE: &str = include_str!("../tests/fixtures/alipay/weak_1024_private_key.pem");
    const WEAK_PUBLIC: &str = include_str!("../tests/fixtures/alipay/weak_1024_public_key.pem");
    const WECHAT_OFFICIAL_PUBLIC: &str =
        include_str!("../tests/fixtures/wechat/official_test_pub.pem");

    const MESSAGE: &[u8] =
        b"app_id=2014072300007148&biz_content={\"out_trade_no\":\"1\"}&charset=UTF-8";

    fn private() -> PrivateKey {
        PrivateKey::from_pem(APP_PRIVATE_PKCS8).unwrap()
    }

    fn public() -> PublicKey {
        PublicKey::from_pem(APP_PUBLIC).unwrap()
    }

    #[test]
    fn ring_signature_is_byte_identical_to_the_rsa_crate_digest_signature() {
        let key = private();
        assert!(key.ring.is_some(), "ring accepts a 2048-bit PKCS#8 key");
        let by_ring = key.sign(MESSAGE).unwrap();
        let by_rsa = key.sign_digest(Sha256::new_with_prefix(MESSAGE)).unwrap();
        assert_eq!(by_ring, by_rsa);
    }

    #[test]
    fn pkcs1_and_pkcs8_private_keys_sign_the_same() {
        let pkcs1 = PrivateKey::from_pem(APP_PRIVATE_PKCS1).unwrap();
        assert_eq!(pkcs1.sign(MESSAGE), private().sign(MESSAGE));
    }

    #[test]
    fn message_and_digest_paths_accept_each_others_signatures() {
        let key = private();
        let public = public();
        let signature = key.sign(MESSAGE).unwrap();
        public.verify(MESSAGE, &signature).unwrap();
        public
            .verify_digest(Sha256::new_with_prefix(MESSAGE), &signature)
            .unwrap();
        let digest_signature = key.sign_digest(Sha256::new_with_prefix(MESSAGE)).unwrap();
        public.verify(MESSAGE, &digest_signature).unwrap();
    }

    #[test]
    fn derived_public_key_verifies_like_the_parsed_one() {
        let signature = private().sign(MESSAGE).unwrap();
        private().public_key().verify(MESSAGE, &signature).unwrap();
    }

    #[test]
    fn verify_parts_joins_parts_in_order() {
        let public = public();
        let signature = private().sign(MESSAGE).unwrap();
        let (a, b) = MESSAGE.split_at(10);
        let (b, c) = b.split_at(7);
        public.verify_parts([a, b, &[][..], c], &signature).unwrap();
        assert_eq!(
            public.verify_parts([b, a, c], &signature),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            private().sign_parts([a, b, c]).unwrap(),
            signature,
            "PKCS#1 v1.5 is deterministic"
        );
    }

    #[test]
    fn verify_parts_spills_long_messages_to_the_heap() {
        let long: Vec<u8> = (0..3 * INLINE_MESSAGE_BYTES + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        let signature = private().sign(&long).unwrap();
        let public = public();
        // Fits inline, then overflows in the middle of a part, then continues on the heap.
        let parts = long.chunks(INLINE_MESSAGE_BYTES - 5);
        public.verify_parts(parts, &signature).unwrap();
        public
            .verify_parts(
                [&long[..INLINE_MESSAGE_BYTES], &long[INLINE_MESSAGE_BYTES..]],
                &signature,
            )
            .unwrap();
        let mut tampered = long.clone();
        tampered[2 * INLINE_MESSAGE_BYTES] ^= 1;
        assert_eq!(
            public.verify_parts(tampered.chunks(1000), &signature),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn tampered_message_or_signature_is_a_mismatch() {
        let public = public();
        let signature = private().sign(MESSAGE).unwrap();
        assert_eq!(
            public.verify(b"app_id=2014072300007149", &signature),
            Err(VerifyError::Mismatch)
        );
        let mut raw = STANDARD.decode(&signature).unwrap();
        raw[100] ^= 0x40;
        assert_eq!(
            public.verify(MESSAGE, &STANDARD.encode(&raw)),
            Err(VerifyError::Mismatch)
        );
        // A signature shorter than the modulus is refused, not padded.
        assert_eq!(
            public.verify(MESSAGE, &STANDARD.encode(&raw[1..])),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn bad_base64_or_empty_signature_is_an_encoding_error() {
        let public = public();
        assert_eq!(
            public.verify(MESSAGE, "not base64!"),
            Err(VerifyError::Encoding)
        );
        assert_eq!(public.verify(MESSAGE, ""), Err(VerifyError::Encoding));
        let too_long = STANDARD.encode([7u8; MAX_SIGNATURE_BYTES + 1]);
        assert_eq!(
            public.verify(MESSAGE, &too_long),
            Err(VerifyError::Encoding)
        );
        assert_eq!(
            public.verify_parts([MESSAGE], "%%%"),
            Err(VerifyError::Encoding)
        );
    }

    #[test]
    fn another_keys_signature_is_a_mismatch() {
        let other = PublicKey::from_pem(WECHAT_OFFICIAL_PUBLIC).unwrap();
        let signature = private().sign(MESSAGE).unwrap();
        assert_eq!(
            other.verify(MESSAGE, &signature),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn keys_below_2048_bits_are_still_refused() {
        assert_eq!(
            PublicKey::from_pem(WEAK_PUBLIC).err(),
            Some(KeyError::TooSmall { bits: 1024 })
        );
        assert_eq!(
            PrivateKey::from_pem(WEAK_PRIVATE).err(),
            Some(KeyError::TooSmall { bits: 1024 })
        );
    }
}
