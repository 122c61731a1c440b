//! Channel credentials at rest: AES-256-GCM under one master key, a fresh random 96-bit nonce
//! per encryption, and the record's identity (merchant, mode, channel) as associated data so a
//! ciphertext copied onto another merchant's record does not decrypt.
//!
//! This module owns the key and the sealed format; it knows nothing about channels or storage.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// The 32-byte master key. `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

/// A sealed value as stored: format version, nonce and ciphertext (with its tag), base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sealed {
    pub v: u8,
    pub nonce: String,
    pub ciphertext: String,
}

impl MasterKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    /// A new random key.
    pub fn generate() -> Self {
        MasterKey(rand::random())
    }

    /// Parses base64 of exactly 32 bytes. The error never contains the value.
    pub fn from_base64(s: &str) -> Result<Self, String> {
        let raw = B64
            .decode(s.trim())
            .map_err(|_| "channels.master_key is not valid base64".to_string())?;
        let bytes: [u8; 32] = raw.try_into().map_err(|v: Vec<u8>| {
            format!(
                "channels.master_key must decode to 32 bytes, not {}",
                v.len()
            )
        })?;
        Ok(MasterKey(bytes))
    }

    /// The key in `path` (base64), created there with a fresh random key and mode 0600 if the
    /// file does not exist. Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), String> {
        match std::fs::read_to_string(path) {
            Ok(s) => {
                let key =
                    MasterKey::from_base64(&s).map_err(|e| format!("{}: {e}", path.display()))?;
                Ok((key, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = MasterKey::generate();
                write_private(path, B64.encode(key.0).as_bytes())
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                Ok((key, true))
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.0))
    }

    /// Encrypts `plain`, bound to `aad`.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Sealed, String> {
        let nonce: [u8; 12] = rand::random();
        let ct = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| "encryption failed".to_string())?;
        Ok(Sealed {
            v: 1,
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ct),
        })
    }

    /// Decrypts what [`MasterKey::seal`] produced with the same `aad`; fails on any tampering,
    /// another key or another `aad`.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.v != 1 {
            return Err(format!("unknown sealed format version {}", sealed.v));
        }
        let nonce = B64
            .decode(&sealed.nonce)
            .ok()
            .filter(|n| n.len() == 12)
            .ok_or("sealed nonce is malformed")?;
        let ct = B64
            .decode(&sealed.ciphertext)
            .map_err(|_| "sealed ciphertext is malformed")?;
        self.cipher()
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ct, aad })
            .map_err(|_| {
                "stored credentials do not decrypt with this master key (was the key changed?)"
                    .to_string()
            })
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_associated_data() {
        let k = MasterKey::generate();
        let s = k.seal(b"topsecret", b"m1:live:alipay").unwrap();
        assert!(!s.ciphertext.contains("topsecret"));
        assert_eq!(k.open(&s, b"m1:live:alipay").unwrap(), b"topsecret");
        assert!(k.open(&s, b"m2:live:alipay").is_err());
        assert!(MasterKey::generate().open(&s, b"m1:live:alipay").is_err());
        let again = k.seal(b"topsecret", b"m1:live:alipay").unwrap();
        assert_ne!(again.nonce, s.nonce, "every seal uses a fresh nonce");
    }

    #[test]
    fn master_key_is_parsed_from_base64_of_32_bytes_only() {
        assert!(MasterKey::from_base64(&B64.encode([7u8; 32])).is_ok());
        let short = MasterKey::from_base64(&B64.encode([7u8; 16])).unwrap_err();
        assert!(short.contains("32 bytes"), "{short}");
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert_eq!(format!("{:?}", MasterKey::generate()), "MasterKey(***)");
    }

    #[cfg(unix)]
    #[test]
    fn a_generated_key_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("channels.key");
        let (k1, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (k2, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1.0, k2.0);
    }
}
