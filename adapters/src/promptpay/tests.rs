//! PromptPay payload vectors: payloads of public generators reproduced byte for byte, CRC
//! checks, parsing of what we build and of malformed input. No I/O.

use super::*;
use proptest::prelude::*;

use FieldOrder::{CountryCurrencyAmount, CurrencyAmountCountry, CurrencyCountryAmount};
use Recipient::{EWallet, Mobile, NationalId};

/// Published payloads, byte for byte: (source, recipient, amount in satang, field order,
/// expected payload).
///
/// - promptpay-qr: https://github.com/dtinth/promptpay-qr/blob/master/index.test.js
/// - promptparse: https://github.com/maythiwat/promptparse/blob/main/src/index.test.ts
///   (its TrueMoney case is an e-wallet ID `14000` + phone digits; its BOT-barcode
///   conversions are bill payments)
/// - ThaiQR-Go: https://github.com/ThaiQR/ThaiQR-Go/blob/main/test/thaiqr_test.go
const BILL_SCB: BillPayment<'static> = BillPayment {
    biller_id: "0112233445566",
    ref1: "CUSTOMER001",
    ref2: Some("INV001"),
    ref3: Some("SCB"),
};
const BILL_BARCODE: BillPayment<'static> = BillPayment {
    biller_id: "099999999999990",
    ref1: "111222333444",
    ref2: None,
    ref3: None,
};
const BILL_BARCODE_REF2: BillPayment<'static> = BillPayment {
    biller_id: "099400016550100",
    ref1: "123456789012",
    ref2: Some("670429"),
    ref3: None,
};

#[rustfmt::skip]
    const PUBLISHED: &[(&str, Recipient<'static>, Option<u64>, FieldOrder, &str)] = &[
        ("promptpay-qr: Local phone number", Mobile("0801234567"), None, CountryCurrencyAmount,
         "00020101021129370016A000000677010111011300668012345675802TH530376463046197"),
        ("promptpay-qr: Dashed local phone number", Mobile("080-123-4567"), None, CountryCurrencyAmount,
         "00020101021129370016A000000677010111011300668012345675802TH530376463046197"),
        ("promptpay-qr: Dashed phone number", Mobile("+66-89-123-4567"), None, CountryCurrencyAmount,
         "00020101021129370016A000000677010111011300668912345675802TH5303764630429C1"),
        ("promptpay-qr: National ID number", NationalId("1111111111111"), None, CountryCurrencyAmount,
         "00020101021129370016A000000677010111021311111111111115802TH530376463047B5A"),
        ("promptpay-qr: Dashed national ID number", NationalId("1-1111-11111-11-1"), None, CountryCurrencyAmount,
         "00020101021129370016A000000677010111021311111111111115802TH530376463047B5A"),
        ("promptpay-qr: Tax ID number", NationalId("0123456789012"), None, CountryCurrencyAmount,
         "00020101021129370016A000000677010111021301234567890125802TH530376463040CBD"),
        ("promptpay-qr: eWallet ID", EWallet("012345678901234"), None, CountryCurrencyAmount,
         "00020101021129390016A00000067701011103150123456789012345802TH530376463049781"),
        ("promptpay-qr: Amount (4.22)", Mobile("000-000-0000"), Some(422), CountryCurrencyAmount,
         "00020101021229370016A000000677010111011300660000000005802TH530376454044.226304E469"),
        ("promptparse: Generate Any ID", Mobile("0812223333"), None, CurrencyCountryAmount,
         "00020101021129370016A0000006770101110113006681222333353037645802TH63041DCF"),
        ("promptparse: Generate Any ID with amount (30)", Mobile("0812223333"), Some(3000), CurrencyCountryAmount,
         "00020101021229370016A0000006770101110113006681222333353037645802TH540530.0063043CAD"),
        ("promptparse: Generate TrueMoney QR", EWallet("140000801111111"), None, CurrencyCountryAmount,
         "00020101021129390016A000000677010111031514000080111111153037645802TH63047C0F"),
        ("promptparse: Generate Bill Payment with Ref.3", Recipient::BillPayment(BILL_SCB), None, CurrencyCountryAmount,
         "00020101021130620016A000000677010112011301122334455660211CUSTOMER0010306INV00153037645802TH62070703SCB6304780E"),
        ("promptparse: BOT Barcode to Bill Payment", Recipient::BillPayment(BILL_BARCODE), None, CurrencyCountryAmount,
         "00020101021130550016A0000006770101120115099999999999990021211122233344453037645802TH63043EE7"),
        ("promptparse: BOT Barcode to Bill Payment, Ref.2 and amount (3649.22)", Recipient::BillPayment(BILL_BARCODE_REF2), Some(364_922), CurrencyCountryAmount,
         "00020101021230650016A00000067701011201150994000165501000212123456789012030667042953037645802TH54073649.2263044534"),
        ("ThaiQR-Go: MerchantPromptpayQRGenerate (100.00)", Mobile("0912345678"), Some(10_000), CurrencyAmountCountry,
         "00020101021229370016A0000006770101110113006691234567853037645406100.005802TH6304D803"),
    ];

#[test]
fn published_payloads_are_reproduced_byte_for_byte() {
    for (source, recipient, amount, order, expected) in PUBLISHED {
        let built = build_with_order(recipient, *amount, *order)
            .unwrap_or_else(|e| panic!("{source}: {e}"));
        assert_eq!(built, *expected, "{source}");
        assert!(crc_is_valid(expected), "{source}");
        let parsed = parse(expected).unwrap_or_else(|e| panic!("{source}: {e}"));
        assert_eq!(parsed.amount_satang, *amount, "{source}");
    }
}

#[test]
fn default_order_is_promptpay_qr() {
    for (source, recipient, amount, order, expected) in PUBLISHED {
        if *order == CountryCurrencyAmount {
            assert_eq!(build(recipient, *amount).unwrap(), *expected, "{source}");
        }
    }
}

#[test]
fn published_payload_parses_to_its_fields() {
    // promptparse src/index.test.ts, "Parse payload (strict) with valid checksum".
    let parsed = parse(
        "00020101021229370016A0000006770101110113006680111111153037645802TH540520.15630442BE",
    )
    .unwrap();
    assert_eq!(
        parsed,
        Parsed {
            initiation: Initiation::Dynamic,
            recipient: ParsedRecipient::Mobile("0066801111111".into()),
            amount_satang: Some(2015),
        }
    );
    // The same payload with the CRC replaced by FFFF (same test file) is rejected.
    assert_eq!(
        parse(
            "00020101021229370016A0000006770101110113006680111111153037645802TH540520.156304FFFF"
        ),
        Err(PromptPayError::ChecksumMismatch { computed: 0x42BE })
    );
    let bill = parse(PUBLISHED[11].4).unwrap();
    assert_eq!(
        bill.recipient,
        ParsedRecipient::BillPayment {
            biller_id: "0112233445566".into(),
            ref1: "CUSTOMER001".into(),
            ref2: Some("INV001".into()),
            ref3: Some("SCB".into()),
        }
    );
    assert_eq!(bill.initiation, Initiation::Static);
    assert_eq!(
        parse(PUBLISHED[6].4).unwrap().recipient,
        ParsedRecipient::EWallet("012345678901234".into())
    );
    assert_eq!(
        parse(PUBLISHED[3].4).unwrap().recipient,
        ParsedRecipient::NationalId("1111111111111".into())
    );
}

#[test]
fn published_bill_payment_with_merchant_name_parses() {
    // ThaiQR-Go test/thaiqr_test.go, TestMerchantBillpaymentQRGenerate: ascending field
    // order plus a merchant name (59), which we do not generate but skip when parsing.
    let published = "00020101021230710016A00000067701011201150112345678912330212REF1234567890312REF98765432153037645406200.005802TH5906THAIQR6304F528";
    let parsed = parse(published).unwrap();
    assert_eq!(parsed.initiation, Initiation::Dynamic);
    assert_eq!(parsed.amount_satang, Some(20_000));
    assert_eq!(
        parsed.recipient,
        ParsedRecipient::BillPayment {
            biller_id: "011234567891233".into(),
            ref1: "REF123456789".into(),
            ref2: Some("REF987654321".into()),
            ref3: None,
        }
    );
    // Flipping it to static (010211) without recomputing the CRC is caught; 30E1 is the
    // CRC of the flipped contents (checked with Python's binascii.crc_hqx).
    let flipped = published.replacen("010212", "010211", 1);
    assert_eq!(
        parse(&flipped),
        Err(PromptPayError::ChecksumMismatch { computed: 0x30E1 })
    );
}

#[test]
fn crc_is_ccitt_false() {
    // The catalogue check value of CRC-16/CCITT-FALSE (a.k.a. CRC-16/IBM-3740):
    // https://reveng.sourceforge.io/crc-catalogue/16.htm
    assert_eq!(crc16(b"123456789"), 0x29B1);
    assert_eq!(upper_hex4(0x0A0F), *b"0A0F");
}

#[test]
fn amounts_are_formatted_from_satang() {
    let cases = [
        (1, "0.01"),
        (10, "0.10"),
        (100, "1.00"),
        (12_345, "123.45"),
        (MAX_AMOUNT_SATANG, "99999999.99"),
    ];
    for (satang, text) in cases {
        let payload = build(&Mobile("0812345678"), Some(satang)).unwrap();
        let field = format!("54{:02}{text}", text.len());
        assert!(payload.contains(&field), "{payload} lacks {field}");
        assert!(payload.starts_with("000201010212"));
        assert_eq!(parse(&payload).unwrap().amount_satang, Some(satang));
    }
    let static_qr = build(&Mobile("0812345678"), None).unwrap();
    assert!(static_qr.starts_with("000201010211") && !static_qr.contains("5802TH54"));
    for bad in [0, MAX_AMOUNT_SATANG + 1, u64::MAX] {
        assert_eq!(
            build(&Mobile("0812345678"), Some(bad)),
            Err(PromptPayError::AmountOutOfRange(bad))
        );
    }
}

#[test]
fn parse_accepts_amount_forms_scanners_see() {
    for (text, satang) in [
        ("100", 10_000),
        ("100.5", 10_050),
        ("100.50", 10_050),
        ("0.01", 1),
    ] {
        let mut payload = format!(
            "00020101021229370016A000000677010111011300668123456785303764540{}{text}5802TH6304",
            text.len()
        );
        payload.extend(upper_hex4(crc16(payload.as_bytes())).map(char::from));
        assert_eq!(
            parse(&payload).unwrap().amount_satang,
            Some(satang),
            "{text}"
        );
    }
    for text in ["1.234", ".50", "1,00", "-1.00", "0.00", "1e3"] {
        let mut payload = format!(
            "00020101021229370016A000000677010111011300668123456785303764540{}{text}5802TH6304",
            text.len()
        );
        payload.extend(upper_hex4(crc16(payload.as_bytes())).map(char::from));
        assert!(parse(&payload).is_err(), "{text}");
    }
}

#[test]
fn mobile_forms_follow_the_generators() {
    let wire = |input| match parse(&build(&Mobile(input), None)?)?.recipient {
        ParsedRecipient::Mobile(w) => Ok(w),
        other => panic!("{other:?}"),
    };
    for ok in [
        "0812345678",
        "081-234-5678",
        "081 234 5678",
        "66812345678",
        "+66812345678",
        "+66 81 234 5678",
    ] {
        assert_eq!(wire(ok), Ok("0066812345678".to_string()), "{ok}");
    }
    for bad in [
        "",
        "081234567",
        "08123456789",
        "1812345678",
        "+0812345678x",
        "0812345678x",
        "(081)2345678",
        "6681234567",
        "67812345678",
        "0066812345678",
        "++66812345678",
        "٠812345678",
    ] {
        assert_eq!(wire(bad), Err(PromptPayError::InvalidMobile), "{bad}");
    }
}

#[test]
fn id_validation() {
    assert_eq!(
        build(&NationalId("111111111111"), None),
        Err(PromptPayError::InvalidNationalId)
    );
    assert_eq!(
        build(&NationalId("11111111111111"), None),
        Err(PromptPayError::InvalidNationalId)
    );
    assert_eq!(
        build(&NationalId("+1111111111111"), None),
        Err(PromptPayError::InvalidNationalId)
    );
    assert_eq!(
        build(&NationalId("111111111111a"), None),
        Err(PromptPayError::InvalidNationalId)
    );
    assert_eq!(
        build(&EWallet("01234567890123"), None),
        Err(PromptPayError::InvalidEWalletId)
    );
    assert_eq!(
        build(&EWallet("0123456789012345"), None),
        Err(PromptPayError::InvalidEWalletId)
    );
    fn bill(
        biller_id: &str,
        ref1: &str,
        ref2: Option<&str>,
        ref3: Option<&str>,
    ) -> Result<String, PromptPayError> {
        let bill = BillPayment {
            biller_id,
            ref1,
            ref2,
            ref3,
        };
        build(&Recipient::BillPayment(bill), None)
    }
    assert!(bill("0112233445566", "A1", None, None).is_ok());
    assert!(bill("011223344556677", "A1", Some("B2"), Some("C3")).is_ok());
    for biller in [
        "01122334455",
        "01122334455667",
        "0112233445566a",
        "0112-233445566",
    ] {
        assert_eq!(
            bill(biller, "A1", None, None),
            Err(PromptPayError::InvalidBillerId),
            "{biller}"
        );
    }
    let ref_err = |field, max| Err(PromptPayError::InvalidReference { field, max });
    assert_eq!(bill("0112233445566", "", None, None), ref_err("ref1", 20));
    assert_eq!(
        bill("0112233445566", "lower", None, None),
        ref_err("ref1", 20)
    );
    assert_eq!(
        bill("0112233445566", "A B", None, None),
        ref_err("ref1", 20)
    );
    assert_eq!(
        bill("0112233445566", &"A".repeat(21), None, None),
        ref_err("ref1", 20)
    );
    assert!(bill("0112233445566", &"A".repeat(20), None, None).is_ok());
    assert_eq!(
        bill("0112233445566", "A", Some(""), None),
        ref_err("ref2", 20)
    );
    assert_eq!(
        bill("0112233445566", "A", None, Some(&"9".repeat(26))),
        ref_err("ref3", 25)
    );
    assert!(bill("0112233445566", "A", None, Some(&"9".repeat(25))).is_ok());
}

#[test]
fn malformed_payloads_are_rejected() {
    use PromptPayError::{Malformed, NotPromptPay};
    // Re-CRC a payload so that only its structure or content is wrong.
    let with_crc = |body: &str| {
        let mut p = format!("{body}6304");
        p.extend(upper_hex4(crc16(p.as_bytes())).map(char::from));
        p
    };
    let transfer = "29370016A00000067701011101130066812345678";
    let tail = "5802TH5303764";
    let cases: Vec<(String, PromptPayError)> = vec![
        (String::new(), Malformed("payload is empty")),
        ("6304".into(), Malformed("field length runs past the end")),
        (
            "000201".into(),
            Malformed("no 4-character CRC field (6304….) at the end"),
        ),
        (
            "0".repeat(MAX_PAYLOAD_LEN + 1),
            Malformed("payload is too long"),
        ),
        (
            "0002016305ABCD".into(),
            Malformed("field length runs past the end"),
        ),
        ("00020163".into(), Malformed("truncated field header")),
        (with_crc("0X0201"), Malformed("field ID is not two digits")),
        (
            with_crc("000X01"),
            Malformed("field length is not two digits"),
        ),
        (
            with_crc("000201010011"),
            Malformed("field with zero length"),
        ),
        (
            with_crc(&format!("010211000201{transfer}{tail}")),
            Malformed("the payload format indicator (00) is not first"),
        ),
        (
            with_crc(&format!("000202010211{transfer}{tail}")),
            Malformed("payload format indicator is not 01"),
        ),
        (
            with_crc(&format!("000201010211010211{transfer}{tail}")),
            Malformed("a field appears twice"),
        ),
        (
            format!(
                "{}5802TH",
                with_crc(&format!("000201010211{transfer}5303764"))
            ),
            Malformed("the CRC field (63) is not last"),
        ),
        (
            with_crc(&format!("000201010213{transfer}{tail}")),
            Malformed("point of initiation method is neither 11 nor 12"),
        ),
        (
            with_crc(&format!("000201{transfer}{tail}")),
            Malformed("no point of initiation method (01)"),
        ),
        (
            with_crc(&format!("000201010211{transfer}5802TH5303840")),
            NotPromptPay("transaction currency is not THB (764)"),
        ),
        (
            with_crc(&format!("000201010211{transfer}5802LA5303764")),
            NotPromptPay("country code is not TH"),
        ),
        (
            with_crc(&format!("000201010211{transfer}5802TH")),
            NotPromptPay("no transaction currency (53)"),
        ),
        (
            with_crc(&format!("000201010211{transfer}5303764")),
            NotPromptPay("no country code (58)"),
        ),
        (
            with_crc(&format!("000201010211{tail}")),
            NotPromptPay("no PromptPay merchant account field (29 or 30)"),
        ),
        (
            with_crc(&format!(
                "00020101021129370016A00000067701011901130066812345678{tail}"
            )),
            NotPromptPay("field 29 does not carry the PromptPay AID"),
        ),
        (
            with_crc(&format!("00020101021129200016A000000677010111{tail}")),
            NotPromptPay("field 29 must carry exactly one mobile, national ID or e-wallet ID"),
        ),
        (
            with_crc(&format!(
                "00020101021129370016A00000067701011104130066812345678{tail}"
            )),
            NotPromptPay("unsupported PromptPay proxy type in field 29"),
        ),
        (
            with_crc(&format!(
                "00020101021129360016A0000006770101110112006681234567{tail}"
            )),
            NotPromptPay("mobile number is not 13 digits"),
        ),
        (
            with_crc(&format!(
                "00020101021129370016A000000677010111011300668123456780{tail}"
            )),
            Malformed("field length runs past the end"),
        ),
        (
            with_crc(&format!(
                "000201010211{transfer}30250016A0000006770101120201X{tail}"
            )),
            NotPromptPay("both a credit transfer (29) and a bill payment (30)"),
        ),
        (
            with_crc(&format!("00020101021130250016A0000006770101120201X{tail}")),
            NotPromptPay("bill payment without a biller ID"),
        ),
        (
            with_crc(&format!("000201010212{transfer}{tail}54030.0")),
            PromptPayError::AmountOutOfRange(0),
        ),
    ];
    for (payload, expected) in cases {
        assert_eq!(parse(&payload), Err(expected), "{payload:?}");
    }
}

#[test]
fn unknown_fields_are_skipped() {
    let mut payload = String::from(
        "00020101021129370016A00000067701011101130066812345678520458125802TH5303764\
             5907MERCHNT6007BANGKOK6304",
    );
    payload.extend(upper_hex4(crc16(payload.as_bytes())).map(char::from));
    assert_eq!(
        parse(&payload).unwrap().recipient,
        ParsedRecipient::Mobile("0066812345678".into())
    );
}

#[test]
fn error_messages_are_clear() {
    assert_eq!(
        PromptPayError::ChecksumMismatch { computed: 0x42BE }.to_string(),
        "EMVCo QR payload CRC does not match its contents (computed 42BE)"
    );
    assert_eq!(
        PromptPayError::InvalidReference {
            field: "ref2",
            max: 20
        }
        .to_string(),
        "invalid bill payment ref2: expected 1 to 20 uppercase letters or digits"
    );
}

/// An owned recipient, for property tests.
#[derive(Debug, Clone)]
enum Input {
    Mobile(String),
    NationalId(String),
    EWallet(String),
    Bill(String, String, Option<String>, Option<String>),
}

impl Input {
    fn recipient(&self) -> Recipient<'_> {
        match self {
            Input::Mobile(s) => Mobile(s),
            Input::NationalId(s) => NationalId(s),
            Input::EWallet(s) => EWallet(s),
            Input::Bill(biller_id, ref1, ref2, ref3) => Recipient::BillPayment(BillPayment {
                biller_id,
                ref1,
                ref2: ref2.as_deref(),
                ref3: ref3.as_deref(),
            }),
        }
    }

    fn expected(&self) -> ParsedRecipient {
        match self {
            Input::Mobile(s) if s.starts_with('0') => {
                ParsedRecipient::Mobile(format!("0066{}", &s[1..]))
            }
            Input::Mobile(s) => ParsedRecipient::Mobile(format!("00{s}")),
            Input::NationalId(s) => ParsedRecipient::NationalId(s.clone()),
            Input::EWallet(s) => ParsedRecipient::EWallet(s.clone()),
            Input::Bill(biller_id, ref1, ref2, ref3) => ParsedRecipient::BillPayment {
                biller_id: biller_id.clone(),
                ref1: ref1.clone(),
                ref2: ref2.clone(),
                ref3: ref3.clone(),
            },
        }
    }
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        "0[0-9]{9}".prop_map(Input::Mobile),
        "66[0-9]{9}".prop_map(Input::Mobile),
        "[0-9]{13}".prop_map(Input::NationalId),
        "[0-9]{15}".prop_map(Input::EWallet),
        (
            "[0-9]{13}|[0-9]{15}",
            "[A-Z0-9]{1,20}",
            proptest::option::of("[A-Z0-9]{1,20}"),
            proptest::option::of("[A-Z0-9]{1,25}"),
        )
            .prop_map(|(b, r1, r2, r3)| Input::Bill(b, r1, r2, r3)),
    ]
}

fn order() -> impl Strategy<Value = FieldOrder> {
    prop_oneof![
        Just(CountryCurrencyAmount),
        Just(CurrencyCountryAmount),
        Just(CurrencyAmountCountry),
    ]
}

proptest! {
    #[test]
    fn build_then_parse_round_trips(
        input in input(),
        amount in proptest::option::of(1..=MAX_AMOUNT_SATANG),
        order in order(),
    ) {
        let payload = build_with_order(&input.recipient(), amount, order).unwrap();
        prop_assert!(payload.is_ascii() && payload.len() <= MAX_PAYLOAD_LEN);
        prop_assert!(crc_is_valid(&payload));
        let parsed = parse(&payload).unwrap();
        prop_assert_eq!(parsed.recipient, input.expected());
        prop_assert_eq!(parsed.amount_satang, amount);
        let initiation = if amount.is_some() { Initiation::Dynamic } else { Initiation::Static };
        prop_assert_eq!(parsed.initiation, initiation);
    }

    #[test]
    fn any_single_character_change_breaks_the_payload(
        input in input(),
        amount in proptest::option::of(1..=MAX_AMOUNT_SATANG),
        order in order(),
        index in any::<proptest::sample::Index>(),
        replacement in 0x20u8..=0x7E,
    ) {
        let payload = build_with_order(&input.recipient(), amount, order).unwrap();
        let mut bytes = payload.into_bytes();
        let at = index.index(bytes.len());
        prop_assume!(bytes[at] != replacement);
        bytes[at] = replacement;
        let mutated = String::from_utf8(bytes).unwrap();
        prop_assert!(!crc_is_valid(&mutated), "{}", mutated);
        prop_assert!(parse(&mutated).is_err(), "{}", mutated);
    }
}
