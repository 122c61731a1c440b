//! The statement as a PDF: a title, the merchant and period, the totals with the formula, and
//! the daily breakdown, on as many A4 pages as the days need. Drawn with `lopdf` in the
//! standard Helvetica font (no font file to ship); text is limited to ASCII, other characters
//! (a merchant name in another script) are written as `?`.

use super::{Statement, decimal};
use ipay_engine::error::{EngineError, EngineResult};
use lopdf::content::{Content, Operation};
use lopdf::{Document, Object, Stream, dictionary};

/// A4 in points.
const PAGE_W: i64 = 595;
const PAGE_H: i64 = 842;
const MARGIN: i64 = 56;
const LINE: i64 = 16;
/// Daily rows per page after the first.
const ROWS_PER_PAGE: usize = 44;

/// One line of text at a position, in a size.
struct Text {
    x: i64,
    y: i64,
    size: i64,
    s: String,
}

/// Renders the statement; the bytes are a complete PDF document.
pub fn statement_pdf(st: &Statement) -> EngineResult<Vec<u8>> {
    let pages = layout(st);
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
    });
    let mut kids = Vec::with_capacity(pages.len());
    for texts in &pages {
        let content = Content {
            operations: operations(texts),
        };
        let bytes = content
            .encode()
            .map_err(|e| EngineError::Internal(format!("pdf content: {e}")))?;
        let content_id = doc.add_object(Stream::new(dictionary! {}, bytes));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
        });
        kids.push(Object::from(page_id));
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids,
            "Count" => count,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), PAGE_W.into(), PAGE_H.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! {
        "Type" => "Catalog",
        "Pages" => pages_id,
    });
    doc.trailer.set("Root", catalog_id);
    doc.compress();
    let mut out = Vec::new();
    doc.save_to(&mut out)
        .map_err(|e| EngineError::Internal(format!("pdf: {e}")))?;
    Ok(out)
}

fn operations(texts: &[Text]) -> Vec<Operation> {
    let mut ops = Vec::with_capacity(texts.len() * 5);
    for t in texts {
        ops.push(Operation::new("BT", vec![]));
        ops.push(Operation::new("Tf", vec!["F1".into(), t.size.into()]));
        ops.push(Operation::new("Td", vec![t.x.into(), t.y.into()]));
        ops.push(Operation::new(
            "Tj",
            vec![Object::string_literal(ascii(&t.s))],
        ));
        ops.push(Operation::new("ET", vec![]));
    }
    ops
}

fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Splits the statement into pages of positioned text.
fn layout(st: &Statement) -> Vec<Vec<Text>> {
    let money = |v: i64| format!("{} {}", decimal(v, st.exponent), st.currency);
    let mut y = PAGE_H - MARGIN;
    let mut page = Vec::new();
    let put = |page: &mut Vec<Text>, y: &mut i64, x: i64, size: i64, s: String| {
        page.push(Text { x, y: *y, size, s });
        *y -= LINE;
    };
    put(
        &mut page,
        &mut y,
        MARGIN,
        18,
        "IPAY last-mile fee statement".into(),
    );
    y -= LINE / 2;
    for line in [
        format!("Merchant: {} ({})", st.merchant_name, st.merchant_id),
        format!("Period: {} to {} (UTC, inclusive)", st.start, st.end),
        format!("Generated: {}", st.generated_at),
        format!(
            "Fee per parcel: {} (source: {})",
            money(st.fee_per_parcel),
            st.fee_source
        ),
        String::new(),
        format!("Parcels: {}", st.parcels),
        format!("Gross: {}", money(st.gross)),
        format!("Fees: {}", money(st.fees)),
        format!("Net: {}", money(st.net)),
        format!(
            "Net = gross - parcels x fee per parcel = {} - {} x {}",
            decimal(st.gross, st.exponent),
            st.parcels,
            decimal(st.fee_per_parcel, st.exponent)
        ),
        format!(
            "Parcels paid in other currencies (not billed here): {}",
            st.other_currency_parcels
        ),
        String::new(),
    ] {
        put(&mut page, &mut y, MARGIN, 11, line);
    }
    let mut pages = Vec::new();
    let header = "Date        Parcels        Gross         Fees          Net";
    put(&mut page, &mut y, MARGIN, 10, header.into());
    for d in &st.days {
        if y < MARGIN {
            pages.push(std::mem::take(&mut page));
            y = PAGE_H - MARGIN;
            put(&mut page, &mut y, MARGIN, 10, header.into());
        }
        let row = format!(
            "{}  {:>7}  {:>11}  {:>11}  {:>11}",
            d.date,
            d.parcels,
            decimal(d.gross, st.exponent),
            decimal(d.fees, st.exponent),
            decimal(d.net, st.exponent)
        );
        put(&mut page, &mut y, MARGIN, 10, row);
    }
    pages.push(page);
    debug_assert!(pages.iter().skip(1).all(|p| p.len() <= ROWS_PER_PAGE + 2));
    pages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statements::StatementDay;
    use ipay_engine::clock::Timestamp;
    use ipay_engine::ids::MerchantId;

    fn statement(days: usize) -> Statement {
        Statement {
            merchant_id: MerchantId::new_at(1),
            merchant_name: "Bäckerei Ost".into(),
            start: "2026-05-01".into(),
            end: "2026-05-31".into(),
            currency: "EUR".into(),
            exponent: 2,
            fee_per_parcel: 150,
            fee_source: "merchant".into(),
            parcels: 3,
            gross: 3_000,
            fees: 450,
            net: 2_550,
            other_currency_parcels: 0,
            days: (0..days)
                .map(|i| StatementDay {
                    date: format!("2026-05-{:02}", i % 28 + 1),
                    parcels: 1,
                    gross: 1_000,
                    fees: 150,
                    net: 850,
                })
                .collect(),
            lines: vec![],
            generated_at: Timestamp(1_800_000_000_000),
        }
    }

    #[test]
    fn the_pdf_reads_back_with_its_totals() {
        let bytes = statement_pdf(&statement(3)).unwrap();
        assert!(bytes.starts_with(b"%PDF-1.5"));
        let doc = Document::load_mem(&bytes).unwrap();
        let text = doc.extract_text(&[1]).unwrap();
        for needle in [
            "IPAY last-mile fee statement",
            "Net: 25.50 EUR",
            "Fees: 4.50 EUR",
            "Gross: 30.00 EUR",
            "Parcels: 3",
            "B?ckerei Ost",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
        // A second, independent reader where it is installed: poppler's pdftotext.
        if let Some(text) = pdftotext(&bytes) {
            assert!(text.contains("Net: 25.50 EUR"), "{text:?}");
            assert!(text.contains("2026-05-01"), "{text:?}");
        }
    }

    /// The text poppler's `pdftotext` reads from `pdf`, or `None` when it is not installed.
    fn pdftotext(pdf: &[u8]) -> Option<String> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("pdftotext")
            .args(["-layout", "-", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(pdf).ok()?;
        let out = child.wait_with_output().ok()?;
        assert!(out.status.success(), "pdftotext failed on our PDF");
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn long_breakdowns_continue_on_further_pages() {
        let doc = Document::load_mem(&statement_pdf(&statement(120)).unwrap()).unwrap();
        let pages = doc.get_pages().len();
        assert!(pages >= 3, "{pages} pages");
    }
}
