//! QR code images: rendering any payload string (e.g. a [`crate::promptpay`] payload) as an
//! SVG document or a PNG image, with the standard 4-module quiet zone and a chosen module
//! size in pixels.
//!
//! This module does not own what the payload says (the channel modules build and validate
//! payloads), caching or serving images (the gateway does), or decoding QR codes. Payload
//! length, module size and image size are bounded, and every bad input is an error rather
//! than a panic.
//!
//! Codes use error-correction level M (15 % recovery), what the public PromptPay generators
//! use, and the smallest QR version that fits. The SVG comes from the `qrcode` crate's
//! renderer; the PNG is drawn here from the module matrix as 8-bit grayscale (black modules on
//! white) and encoded with the `png` crate.

use qrcode::render::svg;
use qrcode::{Color, QrCode};

/// Longest payload accepted, in bytes. PromptPay payloads are under 200 bytes; a 1 KiB
/// payload already needs a dense version-27 code that phone cameras struggle with.
pub const MAX_PAYLOAD_LEN: usize = 1024;

/// Largest module size accepted, in pixels.
pub const MAX_MODULE_PX: u32 = 32;

/// Width of the light border around the code, in modules (the QR standard's quiet zone).
pub const QUIET_ZONE_MODULES: u32 = 4;

/// Largest image side accepted, in pixels (quiet zone included).
pub const MAX_IMAGE_PX: u32 = 4096;

/// Why a QR image could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QrError {
    /// The payload is empty.
    #[error("QR payload is empty")]
    EmptyPayload,
    /// The payload exceeds [`MAX_PAYLOAD_LEN`].
    #[error("QR payload is {len} bytes; at most {max} are accepted")]
    PayloadTooLong {
        /// Payload length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The module size is 0 or exceeds [`MAX_MODULE_PX`].
    #[error("QR module size must be 1 to {max} pixels, got {got}")]
    InvalidModuleSize {
        /// The requested module size.
        got: u32,
        /// The limit.
        max: u32,
    },
    /// The image would exceed [`MAX_IMAGE_PX`] on a side; use a smaller module size.
    #[error("QR image would be {side} pixels wide; at most {max} are allowed")]
    ImageTooLarge {
        /// The side the image would have.
        side: u32,
        /// The limit.
        max: u32,
    },
    /// The `qrcode` crate could not encode the payload.
    #[error("payload cannot be encoded as a QR code: {0}")]
    Encode(qrcode::types::QrError),
    /// The `png` crate failed to encode the image.
    #[error("PNG encoding failed: {0}")]
    Png(String),
}

/// Renders `payload` as a standalone SVG document: black modules on a white background,
/// `module_px` user units per module, quiet zone included, with a matching `viewBox`.
pub fn svg(payload: &str, module_px: u32) -> Result<String, QrError> {
    let (code, _side) = encode(payload, module_px)?;
    Ok(code
        .render::<svg::Color<'_>>()
        .quiet_zone(true)
        .module_dimensions(module_px, module_px)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

/// Renders `payload` as a PNG: 8-bit grayscale, `module_px` pixels per module, black (0)
/// modules on white (255) with a 4-module quiet zone, so the image is
/// `(modules + 8) * module_px` pixels square.
pub fn png(payload: &str, module_px: u32) -> Result<Vec<u8>, QrError> {
    let (code, side) = encode(payload, module_px)?;
    let modules = code.width();
    let colors = code.to_colors();

    let side_px = side as usize;
    let module = module_px as usize;
    let offset = QUIET_ZONE_MODULES as usize * module;
    let mut pixels = vec![u8::MAX; side_px * side_px];
    for (y, row) in colors.chunks_exact(modules).enumerate() {
        let top = offset + y * module;
        // Draw the module row once, then copy it to the module's remaining pixel rows.
        let first_line = top * side_px;
        for (x, color) in row.iter().enumerate() {
            if *color == Color::Dark {
                let left = first_line + offset + x * module;
                pixels[left..left + module].fill(0);
            }
        }
        for line in 1..module {
            pixels.copy_within(
                first_line..first_line + side_px,
                first_line + line * side_px,
            );
        }
    }

    let mut out = Vec::with_capacity(1024 + side_px * side_px / 16);
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| QrError::Png(e.to_string()))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| QrError::Png(e.to_string()))?;
    writer.finish().map_err(|e| QrError::Png(e.to_string()))?;
    Ok(out)
}

/// Checks the bounds and encodes; returns the code and the image side in pixels.
/// The module matrix of `payload` (same code as [`png`] and [`svg`], without the quiet zone):
/// the side in modules and, row by row, whether each module is dark. For drawing the code into
/// other documents (a label PDF).
pub fn modules(payload: &str) -> Result<(usize, Vec<bool>), QrError> {
    let (code, _) = encode(payload, 1)?;
    let dark = code.to_colors().iter().map(|c| *c == Color::Dark).collect();
    Ok((code.width(), dark))
}

fn encode(payload: &str, module_px: u32) -> Result<(QrCode, u32), QrError> {
    if payload.is_empty() {
        return Err(QrError::EmptyPayload);
    }
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(QrError::PayloadTooLong {
            len: payload.len(),
            max: MAX_PAYLOAD_LEN,
        });
    }
    if !(1..=MAX_MODULE_PX).contains(&module_px) {
        return Err(QrError::InvalidModuleSize {
            got: module_px,
            max: MAX_MODULE_PX,
        });
    }
    let code = QrCode::new(payload.as_bytes()).map_err(QrError::Encode)?;
    // At most 177 modules (version 40), so this cannot overflow.
    let modules = u32::try_from(code.width()).expect("a QR code is at most 177 modules wide");
    let side = (modules + 2 * QUIET_ZONE_MODULES) * module_px;
    if side > MAX_IMAGE_PX {
        return Err(QrError::ImageTooLarge {
            side,
            max: MAX_IMAGE_PX,
        });
    }
    Ok((code, side))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A published PromptPay payload (promptpay-qr's README/tests, phone 0801234567).
    const PROMPTPAY: &str =
        "00020101021129370016A000000677010111011300668012345675802TH530376463046197";

    struct Decoded {
        side: u32,
        pixels: Vec<u8>,
    }

    impl Decoded {
        fn at(&self, x: u32, y: u32) -> u8 {
            self.pixels[(y * self.side + x) as usize]
        }
    }

    fn decode(png_bytes: &[u8]) -> Decoded {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().expect("valid PNG header");
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).expect("valid PNG data");
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        assert_eq!(info.width, info.height);
        pixels.truncate(info.buffer_size());
        Decoded {
            side: info.width,
            pixels,
        }
    }

    fn modules(payload: &str) -> u32 {
        QrCode::new(payload).unwrap().width() as u32
    }

    #[test]
    fn png_has_the_expected_dimensions() {
        for module_px in [1, 2, 5, 8, 12] {
            let image = decode(&png(PROMPTPAY, module_px).unwrap());
            let n = modules(PROMPTPAY);
            assert_eq!(image.side, (n + 8) * module_px);
            assert_eq!(image.pixels.len() as u32, image.side * image.side);
        }
        // 74 characters, nearly all digits and uppercase letters, which the encoder packs into
        // numeric/alphanumeric segments: a version 3 code (29 modules) at level M.
        assert_eq!(modules(PROMPTPAY), 29);
    }

    #[test]
    fn png_matches_the_module_matrix_exactly() {
        let module_px = 3;
        let code = QrCode::new(PROMPTPAY).unwrap();
        let n = code.width() as u32;
        let colors = code.to_colors();
        let image = decode(&png(PROMPTPAY, module_px).unwrap());
        for y in 0..image.side {
            for x in 0..image.side {
                let (mx, my) = (x / module_px, y / module_px);
                let inside = (4..4 + n).contains(&mx) && (4..4 + n).contains(&my);
                let dark = inside && colors[((my - 4) * n + (mx - 4)) as usize] == Color::Dark;
                assert_eq!(
                    image.at(x, y),
                    if dark { 0 } else { 255 },
                    "pixel ({x}, {y})"
                );
            }
        }
    }

    #[test]
    fn finder_patterns_are_black_and_quiet_zone_white() {
        let px = 4;
        let n = modules(PROMPTPAY);
        let image = decode(&png(PROMPTPAY, px).unwrap());
        // Centre pixel of module (mx, my) of the code (quiet zone excluded).
        let module = |mx: u32, my: u32| image.at((4 + mx) * px + px / 2, (4 + my) * px + px / 2);
        // The three finder patterns: 7x7, dark ring, light ring, dark 3x3 centre.
        for (ox, oy) in [(0, 0), (n - 7, 0), (0, n - 7)] {
            for i in 0..7 {
                for (x, y) in [(i, 0), (i, 6), (0, i), (6, i)] {
                    assert_eq!(
                        module(ox + x, oy + y),
                        0,
                        "outer ring at ({ox}+{x}, {oy}+{y})"
                    );
                }
            }
            for i in 1..6 {
                for (x, y) in [(i, 1), (i, 5), (1, i), (5, i)] {
                    assert_eq!(
                        module(ox + x, oy + y),
                        255,
                        "inner ring at ({ox}+{x}, {oy}+{y})"
                    );
                }
            }
            for y in 2..5 {
                for x in 2..5 {
                    assert_eq!(module(ox + x, oy + y), 0, "centre at ({ox}+{x}, {oy}+{y})");
                }
            }
        }
        // The corner pixels of the code area itself are black (finder pattern corners).
        let first = 4 * px;
        let last = (4 + n) * px - 1;
        for (x, y) in [(first, first), (last, first), (first, last)] {
            assert_eq!(image.at(x, y), 0, "corner ({x}, {y})");
        }
        // Quiet zone: every pixel within 4 modules of the edge is white.
        let quiet = 4 * px;
        for y in 0..image.side {
            for x in 0..image.side {
                let in_border =
                    x < quiet || y < quiet || x >= image.side - quiet || y >= image.side - quiet;
                if in_border {
                    assert_eq!(image.at(x, y), 255, "quiet zone pixel ({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn svg_has_a_sensible_view_box() {
        for module_px in [1, 8, 10] {
            let doc = svg(PROMPTPAY, module_px).unwrap();
            let side = (modules(PROMPTPAY) + 8) * module_px;
            assert!(doc.contains("<svg"), "{doc}");
            assert!(
                doc.contains(&format!(r#"viewBox="0 0 {side} {side}""#)),
                "{doc}"
            );
            assert!(doc.contains(&format!(r#"width="{side}" height="{side}""#)));
            assert!(doc.contains(r##"fill="#000000""##) && doc.contains(r##"fill="#ffffff""##));
            assert!(doc.trim_end().ends_with("</svg>"));
            // The top-left module of the code (a finder corner) is drawn at the quiet zone.
            let q = 4 * module_px;
            assert!(doc.contains(&format!("M{q} {q}h")), "{doc}");
        }
    }

    #[test]
    fn bounds_give_errors_not_panics() {
        assert_eq!(png("", 4).unwrap_err(), QrError::EmptyPayload);
        assert_eq!(svg("", 4).unwrap_err(), QrError::EmptyPayload);
        let long = "A".repeat(MAX_PAYLOAD_LEN + 1);
        let too_long = QrError::PayloadTooLong {
            len: MAX_PAYLOAD_LEN + 1,
            max: MAX_PAYLOAD_LEN,
        };
        assert_eq!(png(&long, 4).unwrap_err(), too_long);
        assert_eq!(svg(&long, 4).unwrap_err(), too_long);
        for bad in [0, MAX_MODULE_PX + 1, u32::MAX] {
            let err = QrError::InvalidModuleSize {
                got: bad,
                max: MAX_MODULE_PX,
            };
            assert_eq!(png(PROMPTPAY, bad).unwrap_err(), err);
            assert_eq!(svg(PROMPTPAY, bad).unwrap_err(), err);
        }
        // The longest payload fits at a small module size but not at the largest.
        let longest = "x".repeat(MAX_PAYLOAD_LEN);
        assert!(png(&longest, 4).is_ok());
        assert!(matches!(
            png(&longest, MAX_MODULE_PX),
            Err(QrError::ImageTooLarge {
                max: MAX_IMAGE_PX,
                ..
            })
        ));
        assert!(matches!(
            svg(&longest, MAX_MODULE_PX),
            Err(QrError::ImageTooLarge { .. })
        ));
        // Non-ASCII payloads are byte-encoded, not rejected.
        assert!(png("พร้อมเพย์", 2).is_ok());
    }

    #[test]
    fn error_messages_are_clear() {
        assert_eq!(
            QrError::InvalidModuleSize { got: 0, max: 32 }.to_string(),
            "QR module size must be 1 to 32 pixels, got 0"
        );
        assert_eq!(
            QrError::Encode(qrcode::types::QrError::DataTooLong).to_string(),
            "payload cannot be encoded as a QR code: data too long"
        );
    }
}
