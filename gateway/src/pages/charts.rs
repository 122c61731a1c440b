//! Server-rendered SVG bar charts for the dashboard: no script, no external library, and
//! readable by screen readers (each chart is an `img` with a title listing every value).
//! Only presentation attributes are used (no `style`), so the strict CSP holds.
//!
//! Charts draw what they are given; the figures come from the engine's analytics.

use std::fmt::Write;

/// One bar: its label, its length relative to the others (`0..=scale`) and its printed value.
pub struct Bar {
    pub label: String,
    pub amount: u64,
    pub text: String,
}

/// Width of the drawing in user units (it scales to its container).
const WIDTH: u32 = 480;
const ROW: u32 = 28;
const LABEL_W: u32 = 150;
const TEXT_W: u32 = 110;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart; `scale` is the amount of a full-length bar (the largest amount
/// when `None`).
pub fn bars(title: &str, bars: &[Bar], scale: Option<u64>) -> String {
    let max = scale
        .unwrap_or_else(|| bars.iter().map(|b| b.amount).max().unwrap_or(0))
        .max(1);
    let height = ROW * (bars.len() as u32).max(1) + 4;
    let summary: Vec<String> = bars
        .iter()
        .map(|b| format!("{}: {}", b.label, b.text))
        .collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {height}" width="100%" aria-label="{t}"><title>{t}: {s}</title>"#,
        t = escape(title),
        s = escape(&summary.join("; ")),
    );
    if bars.is_empty() {
        let _ = write!(
            svg,
            r##"<text x="0" y="18" font-size="14" fill="#444">No data yet</text>"##
        );
    }
    let track = WIDTH - LABEL_W - TEXT_W;
    for (i, b) in bars.iter().enumerate() {
        let y = ROW * i as u32 + 4;
        let len = (u128::from(b.amount.min(max)) * u128::from(track) / u128::from(max)) as u32;
        let _ = write!(
            svg,
            r##"<text x="0" y="{ty}" font-size="14" fill="#222">{l}</text><rect x="{LABEL_W}" y="{y}" width="{track}" height="18" fill="#e8ecf2"/><rect x="{LABEL_W}" y="{y}" width="{len}" height="18" fill="#1f5fbf"/><text x="{tx}" y="{ty}" font-size="14" fill="#222">{v}</text>"##,
            ty = y + 14,
            tx = LABEL_W + track + 8,
            l = escape(&b.label),
            v = escape(&b.text),
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_scaled_to_the_largest_and_titled_for_screen_readers() {
        let svg = bars(
            "Revenue <today>",
            &[
                Bar {
                    label: "Alipay".into(),
                    amount: 200,
                    text: "¥2.00".into(),
                },
                Bar {
                    label: "WeChat".into(),
                    amount: 100,
                    text: "¥1.00".into(),
                },
            ],
            None,
        );
        assert!(svg.contains("<title>Revenue &lt;today&gt;: Alipay: ¥2.00; WeChat: ¥1.00</title>"));
        assert!(svg.contains(r##"width="220" height="18" fill="#1f5fbf""##));
        assert!(svg.contains(r##"width="110" height="18" fill="#1f5fbf""##));
        assert!(!svg.contains("style"));
    }
}
