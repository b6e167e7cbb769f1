//! The graphing example's code (Ecosystem's RRD example on Weft), used by
//! `examples/stats_chart.rs` and `tests/stats_chart.rs`: sample a node's
//! statistics over the native protocol (`weft.stats.current`) and draw them
//! as a PNG line chart with `plotters` (bitmap backend, no text: no font
//! libraries needed).
#![allow(dead_code)] // each user takes part of it

use std::path::Path;
use std::time::{Duration, Instant};

use plotters::prelude::*;
use weft_net::Client;
use weft_queue::Snapshot;

/// Samples kept at most (a chart of a day at one per second is 86 400).
pub const MAX_SAMPLES: usize = 100_000;
pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 480;

/// One series: a statistic's values over time (seconds since the first sample).
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub key: String,
    pub points: Vec<(f64, f64)>,
}

/// The value of `key` in a snapshot. A key ending in `*` sums every numeric
/// statistic with that prefix and the same suffix after it, e.g.
/// `endpoint.*.calls` is the node's calls over all endpoints.
pub fn value(s: &Snapshot, key: &str) -> Option<f64> {
    match key.split_once('*') {
        None => s.values.get(key).and_then(|v| v.as_f64()),
        Some((pre, post)) => {
            let mut sum = None;
            for (k, v) in &s.values {
                if k.starts_with(pre)
                    && k.ends_with(post)
                    && k.len() >= pre.len() + post.len()
                    && let Some(x) = v.as_f64()
                {
                    *sum.get_or_insert(0.0) += x;
                }
            }
            sum
        }
    }
}

/// Take `n` samples of `keys`, one every `interval`.
pub async fn sample(client: &Client, keys: &[String], n: usize, interval: Duration) -> Result<Vec<Series>, weft_net::ClientError> {
    let mut series: Vec<Series> = keys.iter().map(|k| Series { key: k.clone(), points: vec![] }).collect();
    let start = Instant::now();
    let mut tick = tokio::time::interval(interval);
    for _ in 0..n.min(MAX_SAMPLES) {
        tick.tick().await;
        let snap: Snapshot = client.call("weft.stats.current", &()).await?;
        let t = start.elapsed().as_secs_f64();
        for s in &mut series {
            if let Some(v) = value(&snap, &s.key) {
                s.points.push((t, v));
            }
        }
    }
    Ok(series)
}

/// Draw the series as lines on a WIDTH x HEIGHT PNG at `out` (one colour
/// per series, in `keys` order; no text).
pub fn draw(series: &[Series], out: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (mut x_max, mut y_min, mut y_max) = (0.0f64, f64::MAX, f64::MIN);
    for s in series {
        for &(x, y) in &s.points {
            x_max = x_max.max(x);
            y_min = y_min.min(y);
            y_max = y_max.max(y);
        }
    }
    if y_min > y_max {
        (y_min, y_max) = (0.0, 1.0);
    }
    if y_max - y_min < 1e-9 {
        y_max = y_min + 1.0;
    }
    let x_max = x_max.max(1e-3);
    let root = BitMapBackend::new(out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let area = root.margin(20, 20, 20, 20);
    let mut chart = ChartBuilder::on(&area).build_cartesian_2d(0.0..x_max, y_min..y_max).map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(0)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let colour = Palette99::pick(i).stroke_width(2);
        chart.draw_series(LineSeries::new(s.points.iter().copied(), colour)).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
