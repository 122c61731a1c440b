//! The 4-digit delivery OTP a driver asks for at the door.
//!
//! Owns deriving and checking OTPs. It does not own attempt limits, lock-out or logging of
//! attempts (`sessions.rs`), nor where the per-merchant key is kept (the ledger, see
//! `sessions.rs`). The OTP is never stored: it is recomputed whenever it is shown or checked.
//!
//! ```text
//! mac = HMAC-SHA256(merchant OTP key, "1" ‖ reference (18 ASCII digits) ‖ payment id)
//! otp = (first 8 bytes of mac as a big-endian u64) mod 10 000, written with 4 digits
//! ```
//!
//! - Bias: 2^64 is not a multiple of 10 000, so the lowest 7 296 values are each more likely by
//!   one in ≈1.8·10^15 — far below anything an attacker with 5 tries could exploit.
//! - Speed: the key's inner and outer pads are absorbed once ([`OtpKey::new`]) and the keyed
//!   state is cloned per use; the message is 48 bytes, so one derivation costs two SHA-256
//!   compressions.
//! - Checking compares the 4 digits with [`subtle::ConstantTimeEq`], so the time taken does
//!   not reveal how many leading digits of a guess were right.

use crate::reference::{IpayReference, LEN as REF_LEN};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Bytes of a per-merchant OTP key.
pub const KEY_LEN: usize = 32;

/// The domain/version tag in front of every OTP message; a new scheme gets a new tag.
const VERSION: u8 = b'1';

/// Longest payment id mixed in (ours are 29 bytes: `pi_` + 26).
const MAX_PAYMENT_ID: usize = 64;

/// A merchant's OTP key, with the HMAC pads already absorbed. Its `Debug` never shows it.
#[derive(Clone)]
pub struct OtpKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for OtpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtpKey(***)")
    }
}

/// A derived OTP: four ASCII digits. Its `Debug` never shows them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Otp([u8; 4]);

impl std::fmt::Debug for Otp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Otp(****)")
    }
}

impl Otp {
    /// The four digits, for showing to the paying consumer only.
    pub fn expose(&self) -> &str {
        // Always four ASCII digits by construction.
        std::str::from_utf8(&self.0).unwrap_or("0000")
    }
}

/// Whether `s` has the shape of an OTP: exactly four ASCII digits.
pub fn well_formed(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit())
}

impl OtpKey {
    /// A key from its secret bytes.
    pub fn new(secret: &[u8; KEY_LEN]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        OtpKey { mac }
    }

    /// A fresh random secret for a new merchant key.
    pub fn generate_secret() -> [u8; KEY_LEN] {
        rand::random()
    }

    /// The OTP for a paid session: its reference and the id of the payment that paid it.
    pub fn derive(&self, reference: &IpayReference, payment_id: &str) -> Otp {
        let mut digits = [0u8; REF_LEN];
        reference.write_digits(&mut digits);
        let mut mac = self.mac.clone();
        mac.update(&[VERSION]);
        mac.update(&digits);
        let pid = payment_id.as_bytes();
        mac.update(&pid[..pid.len().min(MAX_PAYMENT_ID)]);
        let tag = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag[..8]);
        let n = (u64::from_be_bytes(first) % 10_000) as u16;
        Otp([
            b'0' + (n / 1000) as u8,
            b'0' + (n / 100 % 10) as u8,
            b'0' + (n / 10 % 10) as u8,
            b'0' + (n % 10) as u8,
        ])
    }

    /// Whether `guess` is the OTP of this reference and payment, compared in constant time.
    /// A guess that is not four digits is simply wrong (callers reject it earlier).
    pub fn verify(&self, reference: &IpayReference, payment_id: &str, guess: &str) -> bool {
        let expected = self.derive(reference, payment_id);
        let g = guess.as_bytes();
        if g.len() != 4 {
            return false;
        }
        bool::from(expected.0.ct_eq(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent HMAC computation (different API path: one-shot over the joined message).
    fn reference_otp(secret: &[u8; KEY_LEN], r: &IpayReference, pid: &str) -> String {
        let msg = format!("1{r}{pid}");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap();
        mac.update(msg.as_bytes());
        let tag = mac.finalize().into_bytes();
        let n = u64::from_be_bytes(tag[..8].try_into().unwrap()) % 10_000;
        format!("{n:04}")
    }

    #[test]
    fn derive_matches_an_independent_hmac_computation() {
        for _ in 0..200 {
            let secret = OtpKey::generate_secret();
            let r = IpayReference::generate();
            let pid = ipay_engine::ids::PaymentIntentId::new_at(1_700_000_000_000).to_string();
            let key = OtpKey::new(&secret);
            assert_eq!(
                key.derive(&r, &pid).expose(),
                reference_otp(&secret, &r, &pid)
            );
        }
    }

    #[test]
    fn verify_accepts_the_otp_and_rejects_every_other_code() {
        let key = OtpKey::new(&OtpKey::generate_secret());
        let r = IpayReference::generate();
        let otp = key.derive(&r, "pi_x");
        assert!(key.verify(&r, "pi_x", otp.expose()));
        let wrong = (0..10_000)
            .map(|n| format!("{n:04}"))
            .filter(|g| key.verify(&r, "pi_x", g))
            .count();
        assert_eq!(wrong, 1, "exactly one code of 10 000 is right");
        assert!(!key.verify(&r, "pi_x", "12345"));
        assert!(!key.verify(&r, "pi_x", ""));
    }

    #[test]
    fn otp_depends_on_key_reference_and_payment() {
        let (a, b) = (
            OtpKey::new(&OtpKey::generate_secret()),
            OtpKey::new(&OtpKey::generate_secret()),
        );
        // Over many references, a different key / reference / payment gives a different OTP
        // about 9 999 times in 10 000; 200 equal in a row would mean it is ignored.
        let mut same = [0; 3];
        for _ in 0..200 {
            let r = IpayReference::generate();
            let r2 = IpayReference::generate();
            let o = a.derive(&r, "pi_1");
            same[0] += (o == b.derive(&r, "pi_1")) as usize;
            same[1] += (o == a.derive(&r2, "pi_1")) as usize;
            same[2] += (o == a.derive(&r, "pi_2")) as usize;
        }
        assert!(same.iter().all(|&s| s < 5), "{same:?}");
    }

    #[test]
    fn otps_are_spread_over_all_four_digit_codes() {
        let key = OtpKey::new(&OtpKey::generate_secret());
        let mut buckets = [0u32; 10];
        for _ in 0..20_000 {
            let o = key.derive(&IpayReference::generate(), "pi_1");
            buckets[(o.0[0] - b'0') as usize] += 1;
        }
        // 2 000 expected per leading digit; 1 700..2 300 is > 6 standard deviations wide.
        assert!(
            buckets.iter().all(|&n| (1_700..2_300).contains(&n)),
            "{buckets:?}"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let key = OtpKey::new(&[7; KEY_LEN]);
        let otp = key.derive(&IpayReference::generate(), "pi_1");
        assert_eq!(format!("{key:?}"), "OtpKey(***)");
        assert_eq!(format!("{otp:?}"), "Otp(****)");
    }

    #[test]
    fn well_formed_accepts_only_four_digits() {
        assert!(well_formed("0123"));
        for bad in ["123", "12345", "12a4", "", "１２３４"] {
            assert!(!well_formed(bad), "{bad}");
        }
    }
}
