//! Draws `bench_results/actors.svg` from `bench_results/actors.json` (as
//! written by `benches/actors_report.py`): one panel per workload and case,
//! one bar per implementation, time per operation on a log scale.
//!
//! ```text
//! cargo run --release -p zbmd-benches --example actors_plot [IN.json] [OUT.svg]
//! ```

use std::collections::BTreeMap;
use std::error::Error;

use plotters::prelude::*;
use serde_json::Value;

/// The panels, in the order of the report.
const PANELS: [(&str, &str); 8] = [
    ("tell_100", "outside"),
    ("tell_100", "inside"),
    ("ping_pong", "same_shard"),
    ("ping_pong", "two_shards"),
    ("spawn_first_msg", "one_by_one"),
    ("spawn_first_msg", "burst"),
    ("ring_1000", ""),
    ("fan_in", ""),
];

/// Pixels per panel: wide enough for a label and its figure beside the bar.
const PANEL_SIZE: (u32, u32) = (640, 300);

/// One bar: implementation and nanoseconds per operation.
type Bar = (String, f64);

/// The bars of every panel, by (group, case).
type Panels = BTreeMap<(String, String), Vec<Bar>>;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let input = args.next().unwrap_or_else(|| "bench_results/actors.json".into());
    let output = args.next().unwrap_or_else(|| "bench_results/actors.svg".into());
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&input)?)?;
    let panels = collect(&report)?;
    let size = (PANEL_SIZE.0 * 2, PANEL_SIZE.1 * 4 + 40);
    let root = SVGBackend::new(&output, size).into_drawing_area();
    root.fill(&WHITE)?;
    let title = title(&report);
    let (top, body) = root.split_vertically(40);
    top.titled(&title, ("sans-serif", 18))?;
    for (area, (group, case)) in body.split_evenly((4, 2)).iter().zip(PANELS) {
        let bars = panels.get(&(group.to_string(), case.to_string())).cloned().unwrap_or_default();
        draw_panel(area, &panel_name(group, case), &bars)?;
    }
    root.present()?;
    println!("actors_plot: {input} -> {output}");
    Ok(())
}

/// Every result's time per operation, by (group, case), fastest first.
fn collect(report: &Value) -> Result<Panels, Box<dyn Error>> {
    let results = report["results"].as_array().ok_or("no \"results\" array")?;
    let mut panels = Panels::new();
    for r in results {
        let text = |key: &str| r[key].as_str().unwrap_or_default().to_string();
        let ns = r["ns_per_element"].as_f64().or_else(|| r["median_ns"].as_f64());
        let Some(ns) = ns else { continue };
        panels.entry((text("group"), text("type"))).or_default().push((text("impl"), ns));
    }
    for bars in panels.values_mut() {
        bars.sort_by(|a, b| a.1.total_cmp(&b.1));
    }
    Ok(panels)
}

fn title(report: &Value) -> String {
    let machine = &report["machine"];
    format!(
        "zbmd actors vs peers: median ns per operation (log scale) - {}, {} CPUs, {}",
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["nproc"].as_u64().unwrap_or(0),
        machine["date"].as_str().unwrap_or("?"),
    )
}

fn panel_name(group: &str, case: &str) -> String {
    if case.is_empty() { group.to_string() } else { format!("{group}/{case}") }
}

fn color(name: &str) -> RGBColor {
    match name {
        n if n.starts_with("zbmd") => RGBColor(200, 40, 40),
        "erlang" => RGBColor(40, 140, 60),
        "spsc-ring" => RGBColor(120, 120, 120),
        _ => RGBColor(50, 90, 170),
    }
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    name: &str,
    bars: &[Bar],
) -> Result<(), Box<dyn Error>> {
    let (lo, hi) = bars.iter().fold((f64::MAX, 0f64), |(lo, hi), b| (lo.min(b.1), hi.max(b.1)));
    // A decade of room on each side: bars start at the left edge, and the
    // longest bar's label still fits.
    let (lo, hi) = if bars.is_empty() { (1.0, 10.0) } else { (lo / 10.0, hi * 10.0) };
    let rows = bars.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(name, ("sans-serif", 16))
        .margin(8)
        .margin_right(28)
        .x_label_area_size(28)
        .y_label_area_size(8)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..rows)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("ns per operation")
        .x_labels(6)
        .x_label_formatter(&|ns| format!("{ns:.0}"))
        .draw()?;
    for (row, (label, ns)) in bars.iter().enumerate() {
        let y = rows - row as f64 - 1.0;
        let style = color(label).filled();
        chart.draw_series(std::iter::once(Rectangle::new(
            [(lo, y + 0.15), (*ns, y + 0.85)],
            style,
        )))?;
        let text = format!("{label}  {}", figure(*ns));
        chart.draw_series(std::iter::once(Text::new(
            text,
            (*ns * 1.1, y + 0.7),
            ("sans-serif", 13),
        )))?;
    }
    Ok(())
}

fn figure(ns: f64) -> String {
    match ns {
        ns if ns >= 1e6 => format!("{:.1} ms", ns / 1e6),
        ns if ns >= 1e4 => format!("{:.1} us", ns / 1e3),
        ns if ns >= 100.0 => format!("{ns:.0} ns"),
        ns => format!("{ns:.1} ns"),
    }
}
