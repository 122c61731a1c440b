//! The return label: a return parcel created at Sendcloud (the label PDF comes from there) and
//! the IPAY composite PDF — Sendcloud's label with an emerald IPAY band on its first page
//! holding a QR code of the return and a warning line — drawn with `lopdf` into the label's own
//! page, so the carrier's barcode stays exactly as Sendcloud made it.
//!
//! The QR code encodes `IPAY-RETURN:{return id}:{18-digit reference}`: what the merchant's
//! warehouse scans to match the parcel to its return. It is not a credential.

use super::{RETURN_BY_PARCEL, ReturnAction, ReturnCase, ReturnView, internal};
use crate::LastMile;
use crate::sessions::Actor;
use ipay_adapters::sendcloud::{ReturnFrom, ReturnParcelRequest, SendcloudClient, SendcloudError};
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::MerchantId;
use ipay_engine::store::WriteOp;
use lopdf::content::{Content, Operation};
use lopdf::{Document, Object, ObjectId, Stream, dictionary};
use serde::{Deserialize, Serialize};

/// `POST /api/labels/create` body: the merchant (JWT) names the return, the consumer gives
/// the portal token.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLabelRequest {
    #[serde(default)]
    pub return_id: Option<String>,
    #[serde(default)]
    pub return_token: Option<String>,
}

impl std::fmt::Debug for CreateLabelRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateLabelRequest")
            .field("return_id", &self.return_id)
            .field("return_token", &self.return_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A return's label.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReturnLabel {
    pub return_id: String,
    pub sendcloud_parcel_id: u64,
    pub tracking_number: String,
    /// Sendcloud's own label (needs the Sendcloud keys to download).
    pub label_url: String,
    /// What the QR code on the composite label encodes.
    pub qr_payload: String,
    /// The IPAY composite PDF (label + emerald band with QR and warning), base64.
    pub composite_pdf_base64: String,
}

/// The warning printed in the band.
const WARNING: &str = "IPAY RETURN - do not open. Scan the QR code on arrival to match the refund.";

fn sendcloud_error(e: SendcloudError) -> EngineError {
    EngineError::ChannelUnavailable {
        channel: "sendcloud".into(),
        message: format!("the return label could not be made: {e}"),
        retry_after_secs: 5,
        alternatives: vec![],
    }
}

/// The Sendcloud client of `[lastmile.returns]`, when both keys are set.
pub fn sendcloud_client(cfg: &super::ReturnsConfig) -> EngineResult<Option<SendcloudClient>> {
    let (Some(public_key), Some(secret_key)) = (
        cfg.sendcloud_public_key.clone(),
        cfg.sendcloud_secret_key.clone(),
    ) else {
        return Ok(None);
    };
    let keys = ipay_adapters::sendcloud::SendcloudKeys {
        public_key,
        secret_key,
    };
    SendcloudClient::new(&cfg.sendcloud_base_url, keys)
        .map(Some)
        .map_err(EngineError::Internal)
}

/// Who asks for a label.
pub enum LabelCaller {
    Merchant(MerchantId),
    Operator,
    Consumer,
}

impl LastMile {
    /// Creates the Sendcloud return label of an `opened` return (201: `true`), or answers the
    /// label it already has (`false`). 409 when the return is past the label without one.
    pub async fn create_return_label(
        &self,
        caller: LabelCaller,
        req: CreateLabelRequest,
    ) -> EngineResult<(ReturnLabel, ReturnView, bool)> {
        let r = match (&caller, &req.return_id, &req.return_token) {
            (LabelCaller::Consumer, _, Some(t)) => self.return_by_token(t).await?,
            (LabelCaller::Merchant(m), Some(id), None) => {
                self.return_for(Actor::Merchant(*m), id).await?
            }
            (LabelCaller::Operator, Some(id), None) => self.return_for(Actor::Operator, id).await?,
            _ => {
                return Err(EngineError::invalid(
                    "parameter_invalid",
                    "return_id",
                    "a merchant gives return_id (with its login); a consumer gives return_token",
                ));
            }
        };
        let client = self.sendcloud.as_ref().ok_or_else(|| {
            sendcloud_error(SendcloudError::Unavailable(
                "no Sendcloud keys are configured ([lastmile.returns])".into(),
            ))
        })?;
        let (r, created) = if r.sendcloud_parcel_id.is_some() {
            (r, false)
        } else {
            self.ret_mutate(&r.id, async |r, c| {
                if r.sendcloud_parcel_id.is_some() {
                    return Ok(false);
                }
                let now = self.engine.clock().now();
                r.apply(ReturnAction::CreateLabel, now, "sendcloud label".into())?;
                let parcel = client
                    .create_return(&self.return_parcel(r).await?)
                    .await
                    .map_err(sendcloud_error)?;
                r.sendcloud_parcel_id = Some(parcel.id);
                r.tracking_number = Some(parcel.tracking_number);
                r.label_url = Some(parcel.label_url);
                c.batch.push(WriteOp::PutRecord {
                    kind: RETURN_BY_PARCEL,
                    key: parcel.id.to_string(),
                    value: r.id.clone().into_bytes(),
                });
                c.touch();
                Ok(true)
            })
            .await?
        };
        let label = self.label_of(client, &r).await?;
        Ok((label, self.return_view(&r), created))
    }

    /// The Sendcloud parcel of a return: from the consumer's delivery address.
    async fn return_parcel(&self, r: &ReturnCase) -> EngineResult<ReturnParcelRequest> {
        let o = self.get_order(r.merchant_id, &r.order_id).await?;
        let a = &o.customer.address;
        let address = match &a.line2 {
            Some(l2) => format!("{} {l2}", a.line1),
            None => a.line1.clone(),
        };
        Ok(ReturnParcelRequest {
            from: ReturnFrom {
                name: o.customer.name.clone(),
                address,
                city: a.city.clone(),
                postal_code: a.postal_code.clone(),
                country: a.country.clone(),
                email: o.customer.email.clone(),
            },
            reference: r.id.clone(),
            weight_grams: self.ret_cfg().default_weight_grams.max(1),
        })
    }

    /// Downloads the label and draws the IPAY band on it.
    async fn label_of(
        &self,
        client: &SendcloudClient,
        r: &ReturnCase,
    ) -> EngineResult<ReturnLabel> {
        let (Some(id), Some(url)) = (r.sendcloud_parcel_id, r.label_url.clone()) else {
            return Err(internal("return without a label"));
        };
        let pdf = client.label_pdf(&url).await.map_err(sendcloud_error)?;
        let qr_payload = format!("IPAY-RETURN:{}:{}", r.id, r.reference);
        let composite = composite_pdf(&pdf, &qr_payload, WARNING)?;
        use base64::Engine as _;
        Ok(ReturnLabel {
            return_id: r.id.clone(),
            sendcloud_parcel_id: id,
            tracking_number: r.tracking_number.clone().unwrap_or_default(),
            label_url: url,
            qr_payload,
            composite_pdf_base64: base64::engine::general_purpose::STANDARD.encode(composite),
        })
    }
}

/// Side of the QR code on the label, points (about 28 mm: scannable from a phone).
const QR_SIDE_PT: f32 = 80.0;
/// Emerald (#10B981) as PDF RGB.
const EMERALD: [f32; 3] = [0.063, 0.725, 0.506];

/// The label with the IPAY band added to its first page: the page is made taller by the band's
/// height and the band drawn in the new strip below the label — an emerald strip, a white
/// square holding the QR code (dark modules, 4-module quiet zone), the warning in Helvetica —
/// so nothing of the label (the carrier's barcode) is covered. The label's content is untouched.
pub fn composite_pdf(label: &[u8], qr_payload: &str, warning: &str) -> EngineResult<Vec<u8>> {
    let bad = |e: lopdf::Error| EngineError::ChannelUnavailable {
        channel: "sendcloud".into(),
        message: format!("the label from Sendcloud is not a readable PDF: {e}"),
        retry_after_secs: 5,
        alternatives: vec![],
    };
    let mut doc = Document::load_mem(label).map_err(bad)?;
    let page = *doc
        .get_pages()
        .values()
        .next()
        .ok_or_else(|| internal("the label PDF has no page"))?;
    let mb = media_box(&doc, page);
    let band_h = QR_SIDE_PT + 16.0;
    extend_below(&mut doc, page, mb, band_h)?;
    let font = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    add_font(&mut doc, page, font)?;
    let ops = band_ops(qr_payload, warning, mb, band_h)?;
    let bytes = Content { operations: ops }
        .encode()
        .map_err(|e| internal(format!("pdf content: {e}")))?;
    let stream = doc.add_object(Stream::new(dictionary! {}, bytes));
    append_content(&mut doc, page, stream)?;
    let mut out = Vec::with_capacity(label.len() + 8_192);
    doc.save_to(&mut out)
        .map_err(|e| internal(format!("pdf save: {e}")))?;
    Ok(out)
}

/// The page's MediaBox `[x0 y0 x1 y1]` (its own, else A6 in points, Sendcloud's label size).
fn media_box(doc: &Document, page: ObjectId) -> [f32; 4] {
    let num = |o: &Object| {
        o.as_float()
            .ok()
            .or_else(|| o.as_i64().ok().map(|i| i as f32))
    };
    doc.get_dictionary(page)
        .ok()
        .and_then(|d| d.get(b"MediaBox").ok())
        .and_then(|b| b.as_array().ok())
        .and_then(|a| {
            let v: Vec<f32> = a.iter().filter_map(num).collect();
            <[f32; 4]>::try_from(v).ok()
        })
        .unwrap_or([0.0, 0.0, 297.0, 420.0])
}

/// Makes the page `band_h` points taller at the bottom (MediaBox, and CropBox dropped so the
/// new strip shows).
fn extend_below(doc: &mut Document, page: ObjectId, mb: [f32; 4], band_h: f32) -> EngineResult<()> {
    let p = doc
        .get_dictionary_mut(page)
        .map_err(|e| internal(format!("label page: {e}")))?;
    let bx: Vec<Object> = [mb[0], mb[1] - band_h, mb[2], mb[3]]
        .into_iter()
        .map(Object::Real)
        .collect();
    p.set("MediaBox", bx);
    p.remove(b"CropBox");
    Ok(())
}

/// Puts the font under `/IPAYF` in the page's resources (inline or referenced).
fn add_font(doc: &mut Document, page: ObjectId, font: ObjectId) -> EngineResult<()> {
    let res_ref = doc
        .get_dictionary(page)
        .map_err(|e| internal(format!("label page: {e}")))?
        .get(b"Resources")
        .ok()
        .and_then(|r| r.as_reference().ok());
    let res = match res_ref {
        Some(id) => doc.get_dictionary_mut(id),
        None => {
            let p = doc
                .get_dictionary_mut(page)
                .map_err(|e| internal(format!("label page: {e}")))?;
            if !p.has(b"Resources") {
                p.set("Resources", dictionary! {});
            }
            p.get_mut(b"Resources").and_then(Object::as_dict_mut)
        }
    }
    .map_err(|e| internal(format!("label resources: {e}")))?;
    if !res.has(b"Font") {
        res.set("Font", dictionary! {});
    }
    // A referenced font dictionary is left alone: the band's font goes inline next to it.
    match res.get_mut(b"Font").and_then(Object::as_dict_mut) {
        Ok(fonts) => fonts.set("IPAYF", font),
        Err(_) => res.set("Font", dictionary! { "IPAYF" => font }),
    }
    Ok(())
}

/// Appends a content stream to the page (its existing content is kept, drawn first).
fn append_content(doc: &mut Document, page: ObjectId, stream: ObjectId) -> EngineResult<()> {
    let p = doc
        .get_dictionary_mut(page)
        .map_err(|e| internal(format!("label page: {e}")))?;
    let contents = match p.get(b"Contents") {
        Ok(Object::Array(a)) => {
            let mut a = a.clone();
            a.push(Object::Reference(stream));
            a
        }
        Ok(other) => vec![other.clone(), Object::Reference(stream)],
        Err(_) => vec![Object::Reference(stream)],
    };
    p.set("Contents", contents);
    Ok(())
}

/// The band's drawing: saved graphics state, emerald strip, white square, QR modules, text.
fn band_ops(
    qr_payload: &str,
    warning: &str,
    mb: [f32; 4],
    band_h: f32,
) -> EngineResult<Vec<Operation>> {
    let (n, dark) =
        ipay_adapters::qr::modules(qr_payload).map_err(|e| internal(format!("QR: {e}")))?;
    let quiet = ipay_adapters::qr::QUIET_ZONE_MODULES as f32;
    let module = QR_SIDE_PT / (n as f32 + 2.0 * quiet);
    let (left, bottom, width) = (mb[0], mb[1] - band_h, mb[2] - mb[0]);
    let (x0, y0) = (left + width - QR_SIDE_PT - 8.0, bottom + 8.0);
    let f = |v: f32| Object::Real(v);
    let mut ops = vec![
        Operation::new("q", vec![]),
        Operation::new("rg", EMERALD.iter().map(|c| f(*c)).collect()),
        Operation::new("re", vec![f(left), f(bottom), f(width), f(band_h)]),
        Operation::new("f", vec![]),
        Operation::new("rg", vec![f(1.0), f(1.0), f(1.0)]),
        Operation::new("re", vec![f(x0), f(y0), f(QR_SIDE_PT), f(QR_SIDE_PT)]),
        Operation::new("f", vec![]),
        Operation::new("rg", vec![f(0.0), f(0.0), f(0.0)]),
    ];
    for (i, is_dark) in dark.iter().enumerate() {
        if !*is_dark {
            continue;
        }
        let (col, row) = ((i % n) as f32, (i / n) as f32);
        let x = x0 + (quiet + col) * module;
        // PDF's y axis points up; QR row 0 is the top row.
        let y = y0 + QR_SIDE_PT - (quiet + row + 1.0) * module;
        ops.push(Operation::new("re", vec![f(x), f(y), f(module), f(module)]));
    }
    ops.push(Operation::new("f", vec![]));
    ops.extend(warning_text(
        warning,
        x0 - left - 8.0,
        left,
        bottom + band_h,
    ));
    ops.push(Operation::new("Q", vec![]));
    Ok(ops)
}

/// The warning in white Helvetica, wrapped to the room left of the QR code.
fn warning_text(warning: &str, room: f32, left: f32, top: f32) -> Vec<Operation> {
    let size = 8.0_f32;
    // Helvetica averages about half an em per character.
    let per_line = ((room - 12.0) / (size * 0.5)).max(10.0) as usize;
    let mut lines: Vec<String> = vec![String::new()];
    for word in warning.split_whitespace() {
        let ascii: String = word
            .chars()
            .map(|c| if c.is_ascii() { c } else { '?' })
            .collect();
        let last = lines.last_mut().map(|l| l.len()).unwrap_or(0);
        if last > 0 && last + 1 + ascii.len() > per_line {
            lines.push(String::new());
        }
        if let Some(l) = lines.last_mut() {
            if !l.is_empty() {
                l.push(' ');
            }
            l.push_str(&ascii);
        }
    }
    let mut ops = vec![
        Operation::new(
            "rg",
            vec![Object::Real(1.0), Object::Real(1.0), Object::Real(1.0)],
        ),
        Operation::new("BT", vec![]),
        Operation::new("Tf", vec!["IPAYF".into(), Object::Real(size)]),
        Operation::new(
            "Td",
            vec![Object::Real(left + 8.0), Object::Real(top - 14.0)],
        ),
    ];
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            ops.push(Operation::new(
                "Td",
                vec![Object::Real(0.0), Object::Real(-size * 1.3)],
            ));
        }
        ops.push(Operation::new(
            "Tj",
            vec![Object::string_literal(l.as_str())],
        ));
    }
    ops.push(Operation::new("ET", vec![]));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keeps_the_label_and_adds_the_band() {
        let label = ipay_adapters::sendcloud::sim::label_pdf("3SRET0000000001");
        let out = composite_pdf(&label, "IPAY-RETURN:ret_1:123456789012345678", WARNING).unwrap();
        let doc = Document::load_mem(&out).unwrap();
        let page = *doc.get_pages().values().next().unwrap();
        let text = String::from_utf8_lossy(&doc.get_page_content(page)).to_string();
        assert!(
            text.contains("RETURN LABEL"),
            "the label's own content stays"
        );
        assert!(text.contains("IPAY RETURN"), "the warning is drawn");
        assert!(text.matches(" re").count() > 50, "QR modules are drawn");
        let mb = media_box(&doc, page);
        assert_eq!(
            mb,
            [0.0, -96.0, 297.0, 420.0],
            "the band is added below the label"
        );
    }

    #[test]
    fn a_label_that_is_not_a_pdf_is_refused() {
        let e = composite_pdf(b"not a pdf", "x", WARNING).unwrap_err();
        assert_eq!(e.code(), "channel_unavailable");
    }
}
