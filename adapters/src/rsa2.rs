//! SHA256withRSA (PKCS#1 v1.5) keys, shared by the channels that sign that way (Alipay RSA2,
//! WeChat Pay API v3): parsing from PEM or from bare base64 DER, a 2048-bit floor, signing and
//! verifying a SHA-256 digest. It owns no channel's wording: each channel wraps these types and
//! maps [`KeyError`] and [`VerifyError`] into its own error enum.

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

/// Smallest modulus accepted, in bits.
pub const MIN_KEY_BITS: usize = 2048;
/// Room for a decoded signature of up to an 8192-bit key.
const MAX_SIGNATURE_BYTES: usize = 1024;

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

/// A private key that signs SHA-256 digests. No `Debug`: wrappers print the size only.
#[derive(Clone)]
pub struct PrivateKey {
    signing: SigningKey<Sha256>,
    bits: usize,
}

/// A public key that verifies SHA-256 digests.
#[derive(Clone)]
pub struct PublicKey {
    verifying: VerifyingKey<Sha256>,
    bits: usize,
}

fn check_bits(bits: usize) -> Result<(), KeyError> {
    if bits < MIN_KEY_BITS {
        return Err(KeyError::TooSmall { bits });
    }
    Ok(())
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
        Ok(PrivateKey {
            signing: SigningKey::new(key),
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
            verifying: VerifyingKey::new(public),
            bits: self.bits,
        }
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

    /// Checks a base64 signature over a digest, without allocating.
    pub fn verify_digest(&self, digest: Sha256, signature_b64: &str) -> Result<(), VerifyError> {
        let mut buf = [0u8; MAX_SIGNATURE_BYTES];
        let len = STANDARD
            .decode_slice(signature_b64.as_bytes(), &mut buf)
            .map_err(|_| VerifyError::Encoding)?;
        if len == 0 {
            return Err(VerifyError::Encoding);
        }
        let signature = Signature::try_from(&buf[..len]).map_err(|_| VerifyError::Encoding)?;
        // The padding check inside `rsa` compares the recovered encoding with the expected one;
        // nothing secret is compared here (the key is public).
        self.verifying
            .verify_digest(digest, &signature)
            .map_err(|_| VerifyError::Mismatch)
    }
}
