//! The chart `sbx bench --svg` writes: start→exit of every run per
//! isolation level on a log scale, with the p50 and p95 marked. plotters'
//! SVG backend only: text becomes `<text>` elements, so no font files or
//! font libraries are needed.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::Series;

const WIDTH: u32 = 800;
const HEIGHT: u32 = 480;

/// Colours per series, in order.
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

pub fn write_svg(path: &Path, title: &str, all: &[Series]) -> Result<(), String> {
    draw(path, title, all).map_err(|e| e.to_string())
}

fn draw(
    path: &Path,
    title: &str,
    all: &[Series],
) -> Result<(), Box<dyn std::error::Error + 'static>> {
    let values = all.iter().flat_map(|s| s.runs.iter().map(|r| r.ms));
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (1.0, 10.0) };
    let (lo, hi) = ((lo / 2.0).max(0.01), hi * 2.0);

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let names: Vec<&str> = all.iter().map(|s| s.isolation).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..all.len() as i32).into_segmented(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("isolation")
        .y_desc("start→exit (ms, log scale)")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                names.get(*i as usize).unwrap_or(&"").to_string()
            }
            SegmentValue::Last => String::new(),
        })
        .draw()?;

    for (i, s) in all.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let x = i as i32;
        chart
            .draw_series(s.runs.iter().map(|r| {
                Circle::new(
                    (SegmentValue::CenterOf(x), r.ms),
                    4,
                    colour.mix(0.6).filled(),
                )
            }))?
            .label(format!(
                "{}: p50 {:.1} ms, p95 {:.1} ms",
                s.isolation, s.p50_ms, s.p95_ms
            ))
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, colour.filled()));
        for (value, width) in [(s.p50_ms, 3), (s.p95_ms, 1)] {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![
                    (SegmentValue::Exact(x), value),
                    (SegmentValue::Exact(x + 1), value),
                ],
                colour.stroke_width(width),
            )))?;
        }
        chart.draw_series(std::iter::once(Text::new(
            format!("{} p50 {:.1} ms", s.isolation, s.p50_ms),
            (SegmentValue::Exact(x), s.p50_ms * 1.08),
            ("sans-serif", 14).into_font().color(&colour),
        )))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
