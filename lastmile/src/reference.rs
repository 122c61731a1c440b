//! The 18-digit IPAY reference that names a payment session on a parcel label, in the pay URL
//! and at the door.
//!
//! Owns the format, generation and checking of references. It does not own uniqueness across
//! sessions (the session store reserves each new reference, see `sessions.rs`) nor any meaning
//! of the digits: the 16 payload digits are random, so a reference reveals nothing and cannot
//! be guessed from its neighbours.
//!
//! # Scheme: ISO 7064 MOD 97-10 (the IBAN check)
//!
//! ```text
//!  d1 d2 … d16  c1 c2          d1 ≠ 0, so the number has exactly 18 digits
//!  └ payload ┘  └ check ┘       check = 98 − (payload × 100 mod 97), written as two digits
//! ```
//!
//! A reference is valid when the whole 18-digit number `N` satisfies `N mod 97 = 1`.
//!
//! Why this catches every single mistyped digit and every swap of two adjacent digits
//! (including the check digits themselves):
//! - replacing digit `a` by `b` at weight `10^k` changes `N` by `(b − a)·10^k`; 97 is prime,
//!   `0 < |b − a| < 97` and `10^k` is never a multiple of 97, so the change is never `0 mod 97`;
//! - swapping adjacent digits `a ≠ b` at weights `10^(k+1)`, `10^k` changes `N` by
//!   `9·(b − a)·10^k`, again a product of factors that 97 does not divide.
//!
//! The tests check both guarantees exhaustively for every position and every replacement on
//! random references. Two check digits also catch about 98.97 % of all other random errors.

use rand::Rng;
use std::fmt;

/// Number of digits in a reference.
pub const LEN: usize = 18;

const PAYLOAD_MIN: u64 = 1_000_000_000_000_000; // 10^15: payload has 16 digits, no leading 0
const PAYLOAD_END: u64 = 10_000_000_000_000_000; // 10^16

/// A valid 18-digit IPAY reference (check digits verified).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpayReference(u64);

/// Why a string is not a valid reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("an IPAY reference has 18 digits (spaces and dashes between them are allowed)")]
    Length,
    #[error("an IPAY reference contains only digits 0-9 (spaces and dashes are allowed)")]
    NotDigits,
    #[error("an IPAY reference does not start with 0")]
    LeadingZero,
    #[error("the check digits do not match; a digit was probably mistyped or two were swapped")]
    CheckDigits,
}

/// The two check digits for a 16-digit payload.
fn check_digits(payload: u64) -> u64 {
    98 - (payload % 97) * 100 % 97
}

impl IpayReference {
    /// A fresh random reference.
    pub fn generate() -> Self {
        Self::generate_with(&mut rand::rng())
    }

    /// A fresh reference drawn from `rng`.
    pub fn generate_with<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Self::from_payload(rng.random_range(PAYLOAD_MIN..PAYLOAD_END))
    }

    /// The reference with the given 16-digit payload (must be in `10^15..10^16`).
    fn from_payload(payload: u64) -> Self {
        debug_assert!((PAYLOAD_MIN..PAYLOAD_END).contains(&payload));
        let r = IpayReference(payload * 100 + check_digits(payload));
        debug_assert_eq!(r.0 % 97, 1);
        r
    }

    /// Parses and checks a reference typed by a person: 18 digits, optionally grouped with
    /// spaces or dashes (`1234 5678 9012 3456 78`).
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let mut n: u64 = 0;
        let mut digits = 0usize;
        for b in s.bytes() {
            match b {
                b'0'..=b'9' => {
                    if digits == LEN {
                        return Err(ReferenceError::Length);
                    }
                    if digits == 0 && b == b'0' {
                        return Err(ReferenceError::LeadingZero);
                    }
                    // 18 digits stay below 10^18 < 2^64: no overflow.
                    n = n * 10 + u64::from(b - b'0');
                    digits += 1;
                }
                b' ' | b'-' => {}
                _ => return Err(ReferenceError::NotDigits),
            }
        }
        if digits != LEN {
            return Err(ReferenceError::Length);
        }
        if n % 97 != 1 {
            return Err(ReferenceError::CheckDigits);
        }
        Ok(IpayReference(n))
    }

    /// The 18 digits.
    pub fn as_u64(&self) -> u64 {
        self.0
    }

    /// The digits grouped by four for printing on labels: `1234 5678 9012 3456 78`.
    pub fn grouped(&self) -> String {
        let s = self.to_string();
        let mut out = String::with_capacity(LEN + 4);
        for (i, c) in s.chars().enumerate() {
            if i > 0 && i % 4 == 0 {
                out.push(' ');
            }
            out.push(c);
        }
        out
    }

    /// Writes the 18 ASCII digits into `buf` without allocating (the OTP hot path).
    pub fn write_digits(&self, buf: &mut [u8; LEN]) {
        let mut n = self.0;
        for slot in buf.iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
}

impl fmt::Display for IpayReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:018}", self.0)
    }
}

impl fmt::Debug for IpayReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for IpayReference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        Self::parse(s)
    }
}

impl serde::Serialize for IpayReference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for IpayReference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[test]
    fn generated_references_have_18_digits_and_pass_the_check() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..10_000 {
            let r = IpayReference::generate_with(&mut rng);
            let s = r.to_string();
            assert_eq!(s.len(), LEN);
            assert_ne!(s.as_bytes()[0], b'0');
            assert_eq!(IpayReference::parse(&s), Ok(r));
            assert_eq!(IpayReference::parse(&r.grouped()), Ok(r));
        }
    }

    #[test]
    fn extreme_payloads_are_valid() {
        for p in [PAYLOAD_MIN, PAYLOAD_END - 1] {
            let r = IpayReference::from_payload(p);
            assert_eq!(IpayReference::parse(&r.to_string()), Ok(r));
        }
    }

    #[test]
    fn malformed_input_is_named() {
        assert_eq!(IpayReference::parse("12345"), Err(ReferenceError::Length));
        assert_eq!(
            IpayReference::parse("1234567890123456789"),
            Err(ReferenceError::Length)
        );
        assert_eq!(
            IpayReference::parse("12345678901234567x"),
            Err(ReferenceError::NotDigits)
        );
        assert_eq!(
            IpayReference::parse("012345678901234567"),
            Err(ReferenceError::LeadingZero)
        );
        assert_eq!(IpayReference::parse(""), Err(ReferenceError::Length));
    }

    /// Every single-digit substitution and every adjacent swap of `s`, each must be rejected.
    fn assert_all_errors_caught(s: &str) {
        let digits: Vec<u8> = s.bytes().collect();
        for i in 0..LEN {
            for d in b'0'..=b'9' {
                if d == digits[i] {
                    continue;
                }
                let mut m = digits.clone();
                m[i] = d;
                let t = String::from_utf8(m).unwrap();
                assert!(
                    IpayReference::parse(&t).is_err(),
                    "substitution at {i} in {s} gives valid {t}"
                );
            }
            if i + 1 < LEN && digits[i] != digits[i + 1] {
                let mut m = digits.clone();
                m.swap(i, i + 1);
                let t = String::from_utf8(m).unwrap();
                assert!(
                    IpayReference::parse(&t).is_err(),
                    "swap at {i} in {s} gives valid {t}"
                );
            }
        }
    }

    #[test]
    fn every_single_digit_error_and_adjacent_swap_is_caught_exhaustively() {
        // The algebra (see the module docs) does not depend on the payload; this checks all
        // 18 × 9 substitutions and all 17 swaps on 20 000 references anyway.
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        for _ in 0..20_000 {
            assert_all_errors_caught(&IpayReference::generate_with(&mut rng).to_string());
        }
    }

    #[test]
    fn the_error_terms_are_never_multiples_of_97() {
        // The proof itself, checked exhaustively: for every weight 10^k (k < 18) and every
        // digit difference 1..=9, neither d·10^k nor 9·d·10^k is divisible by 97.
        let mut w: u64 = 1;
        for _ in 0..LEN {
            for d in 1..=9u64 {
                assert_ne!((d * (w % 97)) % 97, 0);
                assert_ne!((9 * d * (w % 97)) % 97, 0);
            }
            w *= 10;
        }
    }

    proptest! {
        #[test]
        fn any_payload_round_trips_and_catches_errors(p in PAYLOAD_MIN..PAYLOAD_END) {
            let r = IpayReference::from_payload(p);
            prop_assert_eq!(r.as_u64() / 100, p);
            assert_all_errors_caught(&r.to_string());
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = IpayReference::parse(&s);
        }
    }

    #[test]
    fn write_digits_matches_display() {
        let r = IpayReference::generate();
        let mut buf = [0u8; LEN];
        r.write_digits(&mut buf);
        assert_eq!(std::str::from_utf8(&buf).unwrap(), r.to_string());
    }
}
