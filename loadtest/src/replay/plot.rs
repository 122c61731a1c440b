//! Plots of a replay's timeline with the `plotters` crate: throughput (arrivals and
//! deliveries per second) and lifecycle latency percentiles (p50/p90/p99 per second). SVG
//! carries titles and axis labels; PNG is drawn into a pixel buffer and encoded with `png`, so
//! it needs no system font or image library — and therefore has no text: read it with the SVG
//! next to it. It owns only the drawing, not the numbers.

use std::path::{Path, PathBuf};

use plotters::backend::{BitMapBackend, SVGBackend};
use plotters::prelude::*;

use super::stats::TimelinePoint;
use crate::error::{Error, Result};

const SIZE: (u32, u32) = (960, 480);

/// A named series of (second, value) points.
struct Series {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

fn throughput(timeline: &[TimelinePoint]) -> Vec<Series> {
    vec![
        Series {
            name: "arrivals/s (intended)",
            color: RGBColor(120, 120, 120),
            points: timeline
                .iter()
                .map(|p| (p.t as f64, p.started as f64))
                .collect(),
        },
        Series {
            name: "delivered/s",
            color: RGBColor(20, 110, 200),
            points: timeline
                .iter()
                .map(|p| (p.t as f64, p.completed as f64))
                .collect(),
        },
        Series {
            name: "ended unpaid (known)/s",
            color: RGBColor(230, 150, 20),
            points: timeline
                .iter()
                .map(|p| (p.t as f64, p.ended_known as f64))
                .collect(),
        },
        Series {
            name: "lost/s",
            color: RGBColor(210, 30, 30),
            points: timeline
                .iter()
                .map(|p| (p.t as f64, p.lost as f64))
                .collect(),
        },
    ]
}

fn latency(timeline: &[TimelinePoint]) -> Vec<Series> {
    let pick = |f: fn(&crate::report::LatencyMs) -> f64| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .filter_map(|p| p.lifecycle_ms.as_ref().map(|l| (p.t as f64, f(l))))
            .collect()
    };
    vec![
        Series {
            name: "p50 ms",
            color: RGBColor(20, 150, 60),
            points: pick(|l| l.p50),
        },
        Series {
            name: "p90 ms",
            color: RGBColor(230, 150, 20),
            points: pick(|l| l.p90),
        },
        Series {
            name: "p99 ms",
            color: RGBColor(210, 30, 30),
            points: pick(|l| l.p99),
        },
    ]
}

fn bounds(series: &[Series]) -> (f64, f64) {
    let x = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let y = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    (x + 1.0, y * 1.1)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
    text: bool,
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (x_max, y_max) = bounds(series);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(12);
    if text {
        builder
            .caption(title, ("sans-serif", 20))
            .x_label_area_size(36)
            .y_label_area_size(60);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.x_desc("seconds since start").y_desc(y_label);
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| e.to_string())?;
    for s in series {
        let color = s.color;
        let drawn = chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        if text {
            drawn.label(s.name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

fn write_svg(path: &Path, title: &str, y_label: &str, series: &[Series]) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    draw(root, title, y_label, series, true)
        .map_err(|e| Error::new(format!("cannot draw {}: {e}", path.display())))
}

fn write_png(path: &Path, title: &str, y_label: &str, series: &[Series]) -> Result<()> {
    let mut pixels = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        draw(root, title, y_label, series, false)
            .map_err(|e| Error::new(format!("cannot draw {}: {e}", path.display())))?;
    }
    let file = std::fs::File::create(path)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", path.display())))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), SIZE.0, SIZE.1);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    // Flat colours and thin lines: the slow settings shrink the file several times.
    enc.set_compression(png::Compression::Best);
    enc.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    let mut w = enc
        .write_header()
        .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))?;
    w.write_image_data(&pixels)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))?;
    Ok(())
}

/// Writes `{prefix}-throughput.{svg,png}` and `{prefix}-latency.{svg,png}` into `dir`;
/// returns the files written.
pub fn write_all(dir: &Path, prefix: &str, timeline: &[TimelinePoint]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    let plots = [
        (
            "throughput",
            "Replay: lifecycles per second",
            "per second",
            throughput(timeline),
        ),
        (
            "latency",
            "Replay: lifecycle latency (arrival → delivered)",
            "ms",
            latency(timeline),
        ),
    ];
    for (name, title, y, series) in plots {
        let svg = dir.join(format!("{prefix}-{name}.svg"));
        write_svg(&svg, title, y, &series)?;
        out.push(svg);
        let png = dir.join(format!("{prefix}-{name}.png"));
        write_png(&png, title, y, &series)?;
        out.push(png);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::LatencyMs;

    #[test]
    fn writes_svg_with_labels_and_png_without_fonts() {
        let dir = std::env::temp_dir().join(format!("ipay-replay-plot-{}", std::process::id()));
        let timeline: Vec<TimelinePoint> = (0..20)
            .map(|t| TimelinePoint {
                t,
                started: 10 + t,
                completed: 9 + t,
                ended_known: 1,
                lost: 0,
                lifecycle_ms: Some(LatencyMs {
                    p50: 5.0,
                    p90: 8.0,
                    p99: 12.0 + t as f64,
                    p999: 20.0,
                    max: 30.0,
                }),
            })
            .collect();
        let files = write_all(&dir, "test", &timeline).expect("plots");
        assert_eq!(files.len(), 4);
        let svg = std::fs::read_to_string(dir.join("test-latency.svg")).expect("svg");
        assert!(svg.contains("p99 ms"));
        let png = std::fs::read(dir.join("test-throughput.png")).expect("png");
        assert_eq!(&png[1..4], b"PNG");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
