//! The SVG plot: latency CDF per mode (left) and the per-node upload
//! distribution per mode (right), one file per scenario.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::report::Samples;

const COLOURS: [RGBColor; 3] = [RGBColor(0x1f, 0x77, 0xb4), RGBColor(0xd6, 0x27, 0x28), RGBColor(0x2c, 0xa0, 0x2c)];

/// Most points drawn per curve: keeps the SVG small (a 500-node run has
/// ~15,000 latency samples per mode).
const MAX_POINTS: usize = 400;

fn thin(v: &[f64]) -> Vec<(usize, f64)> {
    let step = v.len().div_ceil(MAX_POINTS).max(1);
    let mut out: Vec<(usize, f64)> = v.iter().copied().enumerate().step_by(step).collect();
    if let (Some(last), Some(&(i, _))) = (v.last(), out.last())
        && i + 1 != v.len()
    {
        out.push((v.len() - 1, *last));
    }
    out
}

/// Draws `modes` (name, samples) to `path`.
pub(crate) fn draw(path: &Path, title: &str, modes: &[(String, Samples)]) -> Result<()> {
    let e = |e: &dyn std::fmt::Display| anyhow!("plot {}: {e}", path.display());
    let root = SVGBackend::new(path, (1000, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (left, right) = root.split_horizontally(500);

    let max_lat = modes.iter().filter_map(|(_, s)| s.latency_ms.last()).fold(100.0_f64, |a, b| a.max(*b)) * 1.05;
    let mut c = ChartBuilder::on(&left)
        .caption(format!("{title}: publish → verified latency CDF"), ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(0.0..max_lat, 0.0..1.0)
        .map_err(|x| e(&x))?;
    c.configure_mesh().x_desc("latency, ms").y_desc("share of pairs").draw().map_err(|x| e(&x))?;
    for (i, (name, s)) in modes.iter().enumerate() {
        let n = s.latency_ms.len().max(1) as f64;
        let colour = COLOURS[i % COLOURS.len()];
        c.draw_series(LineSeries::new(thin(&s.latency_ms).into_iter().map(|(k, v)| (v, (k + 1) as f64 / n)), colour))
            .map_err(|x| e(&x))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    c.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|x| e(&x))?;

    let max_up = modes.iter().filter_map(|(_, s)| s.upload_factor.last()).fold(1.0_f64, |a, b| a.max(*b)) * 1.05;
    let mut c = ChartBuilder::on(&right)
        .caption(format!("{title}: per-node upload ÷ stream"), ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(0.0..1.0, 0.0..max_up)
        .map_err(|x| e(&x))?;
    c.configure_mesh().x_desc("share of nodes (sorted)").y_desc("upload ÷ stream bytes").draw().map_err(|x| e(&x))?;
    for (i, (name, s)) in modes.iter().enumerate() {
        let n = s.upload_factor.len().max(1) as f64;
        let colour = COLOURS[i % COLOURS.len()];
        c.draw_series(LineSeries::new(
            thin(&s.upload_factor).into_iter().map(|(k, v)| ((k + 1) as f64 / n, v)),
            colour,
        ))
        .map_err(|x| e(&x))?
        .label(name.clone())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
