//! PromptPay (Thailand) QR payloads: building the EMVCo merchant-presented-mode string that a
//! payer's banking app scans, and parsing/validating such strings (TLV structure, CRC and the
//! PromptPay fields) for callbacks and tests.
//!
//! This module does not own rendering the string as an image ([`crate::qr`] does), talking to
//! any bank or PromptPay API, confirming that a payment arrived (that comes from the
//! acquiring bank's callback or statement, never from the QR), or storing merchant IDs. It
//! handles no secrets.
//!
//! # Wire format
//!
//! A payload is a sequence of `ID LEN VALUE` fields (two-digit ID, two-digit decimal length,
//! value), following the EMVCo QR Code Specification for Payment Systems (merchant-presented
//! mode) and the Bank of Thailand's Thai QR Code standard:
//!
//! | ID | content |
//! | --- | --- |
//! | `00` | payload format indicator, `01` |
//! | `01` | point of initiation: `11` static (payer types the amount), `12` dynamic (amount given) |
//! | `29` | PromptPay credit transfer: `00` AID `A000000677010111`, then `01` mobile (13 digits, `0066…`), `02` national ID / tax ID (13 digits) or `03` e-wallet ID (15 digits) |
//! | `30` | bill payment: `00` AID `A000000677010112`, `01` biller ID, `02` reference 1, `03` reference 2 (optional) |
//! | `53` | currency, `764` (THB) |
//! | `54` | amount, e.g. `100.00` (only when given) |
//! | `58` | country, `TH` |
//! | `62` | additional data; `07` carries a bill payment's reference 3 (optional) |
//! | `63` | CRC-16/CCITT-FALSE of everything before it including the literal `6304`, 4 uppercase hex digits |
//!
//! Scanners accept fields `53`/`54`/`58` in any order, and public generators differ on it, so
//! [`FieldOrder`] selects the layout; the default matches the widely used `promptpay-qr`
//! package byte for byte. Amounts are integer satang (minor units), never floats.

use std::fmt::Write as _;

use crc::{CRC_16_IBM_3740, Crc};

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0); the catalogue
/// calls it CRC-16/IBM-3740.
const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);

/// Application ID of a PromptPay credit transfer (merchant account field `29`).
pub const AID_PROMPTPAY: &str = "A000000677010111";

/// Application ID of a PromptPay bill payment (merchant account field `30`).
pub const AID_BILL_PAYMENT: &str = "A000000677010112";

/// Largest amount accepted, in satang (99,999,999.99 THB).
pub const MAX_AMOUNT_SATANG: u64 = 9_999_999_999;

/// Longest payload [`parse`] accepts. A PromptPay payload is well under 200 characters; EMVCo
/// caps the whole payload at 512.
pub const MAX_PAYLOAD_LEN: usize = 512;

/// Longest bill payment reference 1 and 2 (Thai QR Code standard: up to 20 characters).
pub const MAX_REFERENCE_LEN: usize = 20;

/// Longest bill payment reference 3 (EMVCo's limit for additional-data field `07`).
pub const MAX_REFERENCE3_LEN: usize = 25;

/// Who receives the money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient<'a> {
    /// A mobile number registered with PromptPay: `0812345678`, or `66812345678` /
    /// `+66 81 234 5678`; spaces and dashes are ignored. Encoded as 13 digits, `0066…`.
    Mobile(&'a str),
    /// A 13-digit national ID or tax ID (dashes and spaces ignored).
    NationalId(&'a str),
    /// A 15-digit e-wallet ID (dashes and spaces ignored).
    EWallet(&'a str),
    /// A bill payment to a registered biller (field `30`).
    BillPayment(BillPayment<'a>),
}

/// A bill payment: biller and references, as printed on a bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillPayment<'a> {
    /// Biller ID: 13 digits (tax ID) or 15 digits (tax ID and a 2-digit suffix).
    pub biller_id: &'a str,
    /// Reference 1: 1 to 20 uppercase letters or digits (e.g. the customer number).
    pub ref1: &'a str,
    /// Reference 2: 1 to 20 uppercase letters or digits (e.g. the invoice number).
    pub ref2: Option<&'a str>,
    /// Reference 3 (additional data field `07`): 1 to 25 uppercase letters or digits.
    pub ref3: Option<&'a str>,
}

/// Order of the currency (`53`), amount (`54`) and country (`58`) fields. All are valid
/// EMVCo; each matches a public generator byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldOrder {
    /// `58 53 54`: the `promptpay-qr` npm package (github.com/dtinth/promptpay-qr).
    #[default]
    CountryCurrencyAmount,
    /// `53 58 54`: the `promptparse` npm package (github.com/maythiwat/promptparse).
    CurrencyCountryAmount,
    /// `53 54 58`, ascending IDs: ThaiQR-Go (github.com/ThaiQR/ThaiQR-Go).
    CurrencyAmountCountry,
}

/// Whether the QR is reusable (no amount) or for one payment of a given amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiation {
    /// `11`: static, the payer enters the amount.
    Static,
    /// `12`: dynamic, the amount is in the payload.
    Dynamic,
}

/// A recipient as read back from a payload, in wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedRecipient {
    /// Mobile number in wire form, 13 digits (`0066812345678`).
    Mobile(String),
    /// National ID or tax ID, 13 digits.
    NationalId(String),
    /// E-wallet ID, 15 digits.
    EWallet(String),
    /// Bill payment fields.
    BillPayment {
        /// Biller ID.
        biller_id: String,
        /// Reference 1.
        ref1: String,
        /// Reference 2, when present.
        ref2: Option<String>,
        /// Reference 3 (additional data `07`), when present.
        ref3: Option<String>,
    },
}

/// The PromptPay content of a payload whose structure and CRC were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Static or dynamic QR (field `01`).
    pub initiation: Initiation,
    /// Who receives the money (field `29` or `30`).
    pub recipient: ParsedRecipient,
    /// Amount in satang (field `54`), when present.
    pub amount_satang: Option<u64>,
}

/// Why a payload could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptPayError {
    /// The mobile number is not in an accepted form.
    #[error(
        "invalid PromptPay mobile number: expected 10 digits starting with 0, or 66 followed by 9 digits"
    )]
    InvalidMobile,
    /// The national ID / tax ID is not 13 digits.
    #[error("invalid PromptPay national ID / tax ID: expected 13 digits")]
    InvalidNationalId,
    /// The e-wallet ID is not 15 digits.
    #[error("invalid PromptPay e-wallet ID: expected 15 digits")]
    InvalidEWalletId,
    /// The biller ID is not 13 or 15 digits.
    #[error("invalid PromptPay biller ID: expected 13 or 15 digits")]
    InvalidBillerId,
    /// A bill payment reference is empty, too long or has characters other than A-Z and 0-9.
    #[error("invalid bill payment {field}: expected 1 to {max} uppercase letters or digits")]
    InvalidReference {
        /// Which reference (`ref1`, `ref2`, `ref3`).
        field: &'static str,
        /// Its maximum length.
        max: usize,
    },
    /// The amount is zero or above [`MAX_AMOUNT_SATANG`].
    #[error("amount must be 1 to 9999999999 satang (0.01 to 99,999,999.99 THB), got {0}")]
    AmountOutOfRange(u64),
    /// The payload is not a well-formed EMVCo TLV string; the text says what is wrong.
    #[error("malformed EMVCo QR payload: {0}")]
    Malformed(&'static str),
    /// The CRC in field `63` does not match the payload.
    #[error("EMVCo QR payload CRC does not match its contents (computed {computed:04X})")]
    ChecksumMismatch {
        /// The CRC computed over the payload.
        computed: u16,
    },
    /// The payload is well formed but is not a PromptPay payment we understand.
    #[error("not a PromptPay payload: {0}")]
    NotPromptPay(&'static str),
}

/// Builds the payload for `recipient`, with an amount in satang (dynamic QR) or without
/// (static QR), in the default [`FieldOrder`] (identical to the `promptpay-qr` package).
pub fn build(
    recipient: &Recipient<'_>,
    amount_satang: Option<u64>,
) -> Result<String, PromptPayError> {
    build_with_order(recipient, amount_satang, FieldOrder::default())
}

/// Builds the payload like [`build`], with the currency/amount/country fields in `order`.
pub fn build_with_order(
    recipient: &Recipient<'_>,
    amount_satang: Option<u64>,
    order: FieldOrder,
) -> Result<String, PromptPayError> {
    let amount = amount_satang
        .map(|satang| {
            if (1..=MAX_AMOUNT_SATANG).contains(&satang) {
                Ok(format!("{}.{:02}", satang / 100, satang % 100))
            } else {
                Err(PromptPayError::AmountOutOfRange(satang))
            }
        })
        .transpose()?;

    let mut merchant = String::with_capacity(96);
    let mut ref3 = None;
    let merchant_id = match recipient {
        Recipient::Mobile(input) => {
            push_field(&mut merchant, 0, AID_PROMPTPAY);
            push_field(&mut merchant, 1, &mobile_wire_form(input)?);
            29
        }
        Recipient::NationalId(input) => {
            let id = digits_only(input, false).filter(|d| d.len() == 13);
            push_field(&mut merchant, 0, AID_PROMPTPAY);
            push_field(
                &mut merchant,
                2,
                &id.ok_or(PromptPayError::InvalidNationalId)?,
            );
            29
        }
        Recipient::EWallet(input) => {
            let id = digits_only(input, false).filter(|d| d.len() == 15);
            push_field(&mut merchant, 0, AID_PROMPTPAY);
            push_field(
                &mut merchant,
                3,
                &id.ok_or(PromptPayError::InvalidEWalletId)?,
            );
            29
        }
        Recipient::BillPayment(bill) => {
            let biller_ok = matches!(bill.biller_id.len(), 13 | 15)
                && bill.biller_id.bytes().all(|b| b.is_ascii_digit());
            if !biller_ok {
                return Err(PromptPayError::InvalidBillerId);
            }
            check_reference("ref1", bill.ref1, MAX_REFERENCE_LEN)?;
            push_field(&mut merchant, 0, AID_BILL_PAYMENT);
            push_field(&mut merchant, 1, bill.biller_id);
            push_field(&mut merchant, 2, bill.ref1);
            if let Some(ref2) = bill.ref2 {
                check_reference("ref2", ref2, MAX_REFERENCE_LEN)?;
                push_field(&mut merchant, 3, ref2);
            }
            if let Some(r3) = bill.ref3 {
                check_reference("ref3", r3, MAX_REFERENCE3_LEN)?;
                ref3 = Some(r3);
            }
            30
        }
    };

    let mut payload = String::with_capacity(160);
    push_field(&mut payload, 0, "01");
    push_field(&mut payload, 1, if amount.is_some() { "12" } else { "11" });
    push_field(&mut payload, merchant_id, &merchant);
    let amount = amount.as_deref();
    let tail: [(u8, Option<&str>); 3] = match order {
        FieldOrder::CountryCurrencyAmount => [(58, Some("TH")), (53, Some("764")), (54, amount)],
        FieldOrder::CurrencyCountryAmount => [(53, Some("764")), (58, Some("TH")), (54, amount)],
        FieldOrder::CurrencyAmountCountry => [(53, Some("764")), (54, amount), (58, Some("TH"))],
    };
    for (id, value) in tail {
        if let Some(value) = value {
            push_field(&mut payload, id, value);
        }
    }
    if let Some(ref3) = ref3 {
        let mut additional = String::with_capacity(4 + ref3.len());
        push_field(&mut additional, 7, ref3);
        push_field(&mut payload, 62, &additional);
    }
    payload.push_str("6304");
    let crc = crc16(payload.as_bytes());
    payload.extend(upper_hex4(crc).map(char::from));
    Ok(payload)
}

/// CRC-16/CCITT-FALSE of `data`, the checksum EMVCo QR payloads carry in field `63`.
pub fn crc16(data: &[u8]) -> u16 {
    CRC16.checksum(data)
}

/// Whether `payload` ends with `6304` and four uppercase hex digits equal to the CRC of
/// everything before them. Checks nothing else; [`parse`] checks everything.
pub fn crc_is_valid(payload: &str) -> bool {
    let bytes = payload.as_bytes();
    bytes.len() >= 8
        && &bytes[bytes.len() - 8..bytes.len() - 4] == b"6304"
        && bytes[bytes.len() - 4..] == upper_hex4(crc16(&bytes[..bytes.len() - 4]))
}

/// Parses and validates a PromptPay payload: TLV structure (two-digit IDs and lengths,
/// no empty or duplicate fields, `00` first and `63` last), the CRC, and the PromptPay
/// content (field `29` or `30` with the right AID, currency THB, country TH, amount).
/// Fields it does not interpret (merchant name, city, …) are allowed and skipped.
pub fn parse(payload: &str) -> Result<Parsed, PromptPayError> {
    use PromptPayError::{Malformed, NotPromptPay};

    let bytes = payload.as_bytes();
    if bytes.len() > MAX_PAYLOAD_LEN {
        return Err(Malformed("payload is too long"));
    }

    // Structure: walk every top-level field once, remembering the ones we interpret.
    let mut seen = 0u128;
    let mut initiation = None;
    let mut transfer = None;
    let mut bill = None;
    let mut currency = None;
    let mut amount = None;
    let mut country = None;
    let mut additional = None;
    let mut crc_at = None;
    for (index, field) in Fields::new(bytes).enumerate() {
        let (id, value, offset) = field?;
        if crc_at.is_some() {
            return Err(Malformed("the CRC field (63) is not last"));
        }
        if seen & (1u128 << id) != 0 {
            return Err(Malformed("a field appears twice"));
        }
        seen |= 1u128 << id;
        if index == 0 && id != 0 {
            return Err(Malformed("the payload format indicator (00) is not first"));
        }
        match id {
            0 if value != b"01" => return Err(Malformed("payload format indicator is not 01")),
            1 => initiation = Some(value),
            29 => transfer = Some(value),
            30 => bill = Some(value),
            53 => currency = Some(value),
            54 => amount = Some(value),
            58 => country = Some(value),
            62 => additional = Some(value),
            63 => crc_at = Some(offset),
            _ => {}
        }
    }
    if seen & 1 == 0 {
        return Err(Malformed("payload is empty"));
    }
    // The walk ended exactly at the end, so a CRC field starting 8 bytes before it is `6304….`.
    if crc_at.is_none_or(|at| at + 8 != bytes.len()) {
        return Err(Malformed("no 4-character CRC field (6304….) at the end"));
    }

    // Integrity.
    let computed = crc16(&bytes[..bytes.len() - 4]);
    if bytes[bytes.len() - 4..] != upper_hex4(computed) {
        return Err(PromptPayError::ChecksumMismatch { computed });
    }

    // Content.
    let initiation = match initiation {
        Some(b"11") => Initiation::Static,
        Some(b"12") => Initiation::Dynamic,
        Some(_) => return Err(Malformed("point of initiation method is neither 11 nor 12")),
        None => return Err(Malformed("no point of initiation method (01)")),
    };
    if currency.ok_or(NotPromptPay("no transaction currency (53)"))? != b"764" {
        return Err(NotPromptPay("transaction currency is not THB (764)"));
    }
    if country.ok_or(NotPromptPay("no country code (58)"))? != b"TH" {
        return Err(NotPromptPay("country code is not TH"));
    }
    let amount_satang = amount.map(parse_amount).transpose()?;
    let recipient = match (transfer, bill) {
        (Some(_), Some(_)) => {
            return Err(NotPromptPay(
                "both a credit transfer (29) and a bill payment (30)",
            ));
        }
        (None, None) => {
            return Err(NotPromptPay(
                "no PromptPay merchant account field (29 or 30)",
            ));
        }
        (Some(transfer), None) => parse_transfer(transfer)?,
        (None, Some(bill)) => parse_bill(bill, additional)?,
    };
    Ok(Parsed {
        initiation,
        recipient,
        amount_satang,
    })
}

/// Appends `ID LEN VALUE`; every value we write is under 100 bytes.
fn push_field(out: &mut String, id: u8, value: &str) {
    debug_assert!(id < 100 && value.len() < 100);
    write!(out, "{id:02}{:02}{value}", value.len()).expect("writing to a String cannot fail");
}

/// The digits of `input`, ignoring spaces and dashes (and one leading `+` when allowed);
/// `None` when anything else is present.
fn digits_only(input: &str, allow_plus: bool) -> Option<String> {
    let input = input.trim();
    let input = match input.strip_prefix('+') {
        Some(rest) if allow_plus => rest,
        _ => input,
    };
    let mut digits = String::with_capacity(input.len());
    for c in input.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' => {}
            _ => return None,
        }
    }
    Some(digits)
}

/// `0812345678` / `66812345678` → `0066812345678`, as the public generators encode it.
fn mobile_wire_form(input: &str) -> Result<String, PromptPayError> {
    let digits = digits_only(input, true).ok_or(PromptPayError::InvalidMobile)?;
    match (digits.len(), digits.as_bytes().first()) {
        (10, Some(b'0')) => Ok(format!("0066{}", &digits[1..])),
        (11, _) if digits.starts_with("66") => Ok(format!("00{digits}")),
        _ => Err(PromptPayError::InvalidMobile),
    }
}

fn check_reference(field: &'static str, value: &str, max: usize) -> Result<(), PromptPayError> {
    let ok = (1..=max).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(PromptPayError::InvalidReference { field, max })
    }
}

fn upper_hex4(value: u16) -> [u8; 4] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    [12, 8, 4, 0].map(|shift| HEX[usize::from((value >> shift) & 0xF)])
}

/// Iterator over `ID LEN VALUE` fields: yields `(id, value, offset of the field)`.
struct Fields<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8]) -> Self {
        Fields { data, at: 0 }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u8, &'a [u8], usize), PromptPayError>;

    fn next(&mut self) -> Option<Self::Item> {
        use PromptPayError::Malformed;
        let rest = &self.data[self.at..];
        if rest.is_empty() {
            return None;
        }
        let field = (|| {
            let header = rest.get(..4).ok_or(Malformed("truncated field header"))?;
            let id = two_digits(&header[..2]).ok_or(Malformed("field ID is not two digits"))?;
            let len =
                two_digits(&header[2..]).ok_or(Malformed("field length is not two digits"))?;
            if len == 0 {
                return Err(Malformed("field with zero length"));
            }
            let value = rest
                .get(4..4 + usize::from(len))
                .ok_or(Malformed("field length runs past the end"))?;
            Ok((id, value))
        })();
        match field {
            Ok((id, value)) => {
                let offset = self.at;
                self.at += 4 + value.len();
                Some(Ok((id, value, offset)))
            }
            Err(e) => {
                self.at = self.data.len();
                Some(Err(e))
            }
        }
    }
}

fn two_digits(b: &[u8]) -> Option<u8> {
    match b {
        [hi @ b'0'..=b'9', lo @ b'0'..=b'9'] => Some((hi - b'0') * 10 + (lo - b'0')),
        _ => None,
    }
}

/// Collects the sub-fields of a template (29, 30, 62) into a table indexed by ID.
fn sub_fields(template: &[u8]) -> Result<[Option<&[u8]>; 100], PromptPayError> {
    let mut table = [None; 100];
    for field in Fields::new(template) {
        let (id, value, _) = field?;
        if table[usize::from(id)].replace(value).is_some() {
            return Err(PromptPayError::Malformed("a sub-field appears twice"));
        }
    }
    Ok(table)
}

fn text(value: &[u8]) -> Result<String, PromptPayError> {
    std::str::from_utf8(value)
        .map(str::to_owned)
        .map_err(|_| PromptPayError::Malformed("field is not valid UTF-8"))
}

fn digits_field(value: &[u8], len: usize, what: &'static str) -> Result<String, PromptPayError> {
    if value.len() == len && value.iter().all(u8::is_ascii_digit) {
        text(value)
    } else {
        Err(PromptPayError::NotPromptPay(what))
    }
}

fn parse_transfer(template: &[u8]) -> Result<ParsedRecipient, PromptPayError> {
    use PromptPayError::NotPromptPay;
    let fields = sub_fields(template)?;
    if fields[0] != Some(AID_PROMPTPAY.as_bytes()) {
        return Err(NotPromptPay("field 29 does not carry the PromptPay AID"));
    }
    let proxies = fields[1..].iter().filter(|f| f.is_some()).count();
    if proxies != 1 {
        return Err(NotPromptPay(
            "field 29 must carry exactly one mobile, national ID or e-wallet ID",
        ));
    }
    if let Some(v) = fields[1] {
        Ok(ParsedRecipient::Mobile(digits_field(
            v,
            13,
            "mobile number is not 13 digits",
        )?))
    } else if let Some(v) = fields[2] {
        Ok(ParsedRecipient::NationalId(digits_field(
            v,
            13,
            "national ID / tax ID is not 13 digits",
        )?))
    } else if let Some(v) = fields[3] {
        Ok(ParsedRecipient::EWallet(digits_field(
            v,
            15,
            "e-wallet ID is not 15 digits",
        )?))
    } else {
        Err(NotPromptPay("unsupported PromptPay proxy type in field 29"))
    }
}

fn parse_bill(
    template: &[u8],
    additional: Option<&[u8]>,
) -> Result<ParsedRecipient, PromptPayError> {
    use PromptPayError::NotPromptPay;
    let fields = sub_fields(template)?;
    if fields[0] != Some(AID_BILL_PAYMENT.as_bytes()) {
        return Err(NotPromptPay("field 30 does not carry the bill payment AID"));
    }
    let biller_id = fields[1].ok_or(NotPromptPay("bill payment without a biller ID"))?;
    let ref1 = fields[2].ok_or(NotPromptPay("bill payment without reference 1"))?;
    let ref3 = match additional {
        Some(additional) => sub_fields(additional)?[7].map(text).transpose()?,
        None => None,
    };
    Ok(ParsedRecipient::BillPayment {
        biller_id: text(biller_id)?,
        ref1: text(ref1)?,
        ref2: fields[3].map(text).transpose()?,
        ref3,
    })
}

/// `100`, `100.5`, `100.50` → satang.
fn parse_amount(value: &[u8]) -> Result<u64, PromptPayError> {
    let bad = PromptPayError::Malformed("amount (54) is not a decimal number");
    let (whole, fraction) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &b""[..]),
    };
    if whole.is_empty()
        || whole.len() > 11
        || fraction.len() > 2
        || !whole.iter().chain(fraction).all(u8::is_ascii_digit)
    {
        return Err(bad);
    }
    let digits = |d: &[u8]| {
        d.iter()
            .fold(0u64, |acc, &b| acc * 10 + u64::from(b - b'0'))
    };
    let fraction_satang = match fraction.len() {
        1 => digits(fraction) * 10, // "100.5" is 50 satang
        _ => digits(fraction),
    };
    let satang = digits(whole) * 100 + fraction_satang;
    if (1..=MAX_AMOUNT_SATANG).contains(&satang) {
        Ok(satang)
    } else {
        Err(PromptPayError::AmountOutOfRange(satang))
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
