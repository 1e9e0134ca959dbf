//! `train --plot`: a PNG of a run's curves, drawn with plotters.
//!
//! Top left: train loss (blue) and test loss (red) per epoch; top right:
//! test accuracy (green) per epoch. Bottom, the whole width: the training
//! loss of every step this process ran (blue, from the step after the one
//! resumed from), with each injected fault and its recovery marked at its
//! step by a vertical line, coloured by what failed ([`target_color`]), so
//! that a glance shows whether a recovery left a trace in the curve.
//!
//! What to draw is worked out apart from how: [`step_panel`] turns a
//! report into points, axis ranges and markers (unit-tested), and the
//! functions after it make the plotters calls.
//!
//! Text (titles, axis labels, legends, the markers' labels) needs a
//! TrueType font, which plotters' `ab_glyph` backend reads from a file: the
//! one named by `ZBMD_PLOT_FONT`, else the first of a few well-known system
//! fonts. Without one the curves and markers are drawn in their colours,
//! each panel framed, without text, and the note returned says which colour is which.

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use zbmd_ml::train::{EpochInfo, FaultTarget, RecoveryInfo, TrainReport};

/// The plot's size in pixels: two 640×440 panels side by side over one
/// 1280×440 panel.
const SIZE_PX: (u32, u32) = (1280, 880);

/// Fonts looked for when `ZBMD_PLOT_FONT` is not set (Debian/Ubuntu, Fedora,
/// Arch, macOS, Windows).
const FONT_PATHS: [&str; 7] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Rows the markers' labels are staggered over, from the top of the step
/// panel down, so that faults a few steps apart keep readable labels.
const LABEL_ROWS: usize = 3;

/// Registers a font for plotters' "sans-serif" family once; whether one was
/// found.
fn font_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let from_env = std::env::var_os("ZBMD_PLOT_FONT");
        let candidates = from_env
            .iter()
            .map(|path| Path::new(path).to_path_buf())
            .chain(FONT_PATHS.iter().map(|path| Path::new(path).to_path_buf()));
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            // plotters keeps fonts for the life of the process; this leaks one
            // font file, once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
        false
    })
}

/// What a plot is drawn from: a finished run's report, or a per-epoch
/// history alone (the step panel then stays empty).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    history: &'a [EpochInfo],
    report: Option<&'a TrainReport>,
}

impl<'a> From<&'a TrainReport> for Source<'a> {
    fn from(report: &'a TrainReport) -> Self {
        Source { history: &report.history, report: Some(report) }
    }
}

impl<'a> From<&'a Vec<EpochInfo>> for Source<'a> {
    fn from(history: &'a Vec<EpochInfo>) -> Self {
        Source { history, report: None }
    }
}

/// Draws a run's curves into a PNG at `path`: pass the whole
/// [`TrainReport`] for the per-step panel with its fault markers. Returns a
/// note for the user: empty, or how to read a plot drawn without text.
pub fn write_png<'a>(path: &Path, source: impl Into<Source<'a>>) -> Result<String, String> {
    let source = source.into();
    let steps = match source.report {
        Some(report) => step_panel(report.resumed_from, &report.losses, &report.recoveries),
        None => step_panel(0, &[], &[]),
    };
    let text = font_available();
    draw(path, source.history, &steps, text)?;
    Ok(if text { String::new() } else { color_key(&steps) })
}

/// How to read a plot drawn without text: which colour is which.
fn color_key(steps: &StepPanel) -> String {
    let mut key = " (no font found, set ZBMD_PLOT_FONT to a .ttf file for labels: top left train \
                   loss blue and test loss red, top right test accuracy green, bottom the loss \
                   of each step blue"
        .to_string();
    let targets = steps.targets();
    if !targets.is_empty() {
        let names: Vec<String> = targets
            .iter()
            .map(|&target| format!("{} {}", target.name(), color_name(target)))
            .collect();
        key.push_str(&format!(", faults marked by vertical lines: {}", names.join(", ")));
    }
    key.push(')');
    key
}

// --- what to draw ------------------------------------------------------------

/// The per-step panel as data: what to draw, apart from how.
#[derive(Debug, Clone, PartialEq)]
struct StepPanel {
    /// `(step, loss)` for each step run in this process whose loss is
    /// finite, from step `resumed_from + 1`.
    points: Vec<(f64, f64)>,
    /// The x axis: from the first step run in this process to the last step
    /// run or marked, at least one step wide.
    steps: Range<f64>,
    /// The y axis: from 0 to 5% above the highest loss (0 to 1 without one).
    loss: Range<f64>,
    /// One per fault and its recovery, in the report's order.
    markers: Vec<Marker>,
}

/// A fault and its recovery, at the step that was in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marker {
    step: u64,
    target: FaultTarget,
}

impl StepPanel {
    /// The targets that have markers, each once, in [`FaultTarget::ALL`]'s
    /// order (the legend's).
    fn targets(&self) -> Vec<FaultTarget> {
        FaultTarget::ALL
            .into_iter()
            .filter(|&target| self.markers.iter().any(|marker| marker.target == target))
            .collect()
    }
}

/// Turns a run's per-step losses (`losses[i]` is step `resumed_from + 1 +
/// i`'s) and recoveries into the step panel. A recovery before the first
/// step run here (which a report does not hold) would be off the axis and
/// gets no marker.
fn step_panel(resumed_from: u64, losses: &[f32], recoveries: &[RecoveryInfo]) -> StepPanel {
    let first = resumed_from.saturating_add(1);
    let points: Vec<(f64, f64)> = (0u64..)
        .zip(losses)
        .map(|(i, &loss)| (first.saturating_add(i) as f64, f64::from(loss)))
        .filter(|(_, loss)| loss.is_finite())
        .collect();
    let markers: Vec<Marker> = recoveries
        .iter()
        .filter(|recovery| recovery.step >= first)
        .map(|recovery| Marker { step: recovery.step, target: recovery.target })
        .collect();
    let last_run = first.saturating_add(losses.len() as u64).saturating_sub(1);
    let last_marked = markers.iter().map(|marker| marker.step).max().unwrap_or(first);
    let last = last_run.max(last_marked).max(first.saturating_add(1));
    let loss_max = points.iter().map(|&(_, loss)| loss).fold(0.0_f64, f64::max);
    let loss_top = if loss_max > 0.0 { loss_max * 1.05 } else { 1.0 };
    StepPanel { points, steps: first as f64..last as f64, loss: 0.0..loss_top, markers }
}

/// The epoch axis: from the first epoch in `history` to the last (from 1,
/// a resumed run's from the first it ran), at least one epoch wide.
fn epoch_axis(history: &[EpochInfo]) -> Range<f64> {
    let numbers = || history.iter().map(|info| info.epoch.saturating_add(1));
    let first = numbers().min().unwrap_or(1);
    let last = numbers().max().unwrap_or(first).max(first.saturating_add(1));
    first as f64..last as f64
}

/// Each target's colour, apart from the loss curves' blue, red and green.
fn target_color(target: FaultTarget) -> RGBColor {
    match target {
        FaultTarget::Model => RGBColor(230, 0, 0),
        FaultTarget::Optimizer => RGBColor(240, 140, 0),
        FaultTarget::Loader => RGBColor(140, 60, 200),
        FaultTarget::Checkpointer => RGBColor(130, 80, 30),
        FaultTarget::Metrics => RGBColor(0, 150, 150),
        FaultTarget::DeviceLost => RGBColor(220, 0, 150),
        FaultTarget::DeviceOom => RGBColor(120, 120, 120),
    }
}

/// [`target_color`]'s colour, in words, for a plot without text.
fn color_name(target: FaultTarget) -> &'static str {
    match target {
        FaultTarget::Model => "red",
        FaultTarget::Optimizer => "orange",
        FaultTarget::Loader => "purple",
        FaultTarget::Checkpointer => "brown",
        FaultTarget::Metrics => "teal",
        FaultTarget::DeviceLost => "magenta",
        FaultTarget::DeviceOom => "grey",
    }
}

// --- how to draw it ----------------------------------------------------------

/// Where a panel is drawn: a part of the PNG.
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// A chart of f64 against f64, as every panel here is.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws the plot, with text or without.
fn draw(path: &Path, history: &[EpochInfo], steps: &StepPanel, text: bool) -> Result<(), String> {
    if history.is_empty() && steps.points.is_empty() {
        return Err("no step or epoch completed, nothing to plot".to_string());
    }
    let (width, height) = SIZE_PX;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE_PX).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(height / 2);
        epoch_panels(&top, history, text)?;
        step_chart(&bottom, steps, text)?;
        root.present().map_err(|e| e.to_string())?;
    }
    save_png(path, &rgb, SIZE_PX)
}

/// Encodes an RGB image as PNG and writes it to `path` whole or not at all
/// (a temp file beside it, renamed over it), so that a full disk leaves no
/// truncated PNG and its error reads as the OS said it.
fn save_png(path: &Path, rgb: &[u8], (width, height): (u32, u32)) -> Result<(), String> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(rgb))
        .map_err(|error| format!("cannot encode the PNG: {error}"))?;
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = std::path::PathBuf::from(temp);
    let written = std::fs::write(&temp, &bytes).and_then(|()| std::fs::rename(&temp, path));
    written.map_err(|error| {
        let _ = std::fs::remove_file(&temp);
        error.to_string()
    })
}

/// The two per-epoch panels, side by side.
fn epoch_panels(area: &Area<'_>, history: &[EpochInfo], text: bool) -> Result<(), String> {
    let (left, right) = area.split_horizontally(SIZE_PX.0 / 2);
    let epochs = |value: fn(&EpochInfo) -> f32| -> Vec<(f64, f64)> {
        history
            .iter()
            .map(|info| (info.epoch as f64 + 1.0, f64::from(value(info))))
            .filter(|(_, y)| y.is_finite())
            .collect()
    };
    let losses = [
        Curve { label: "train loss", color: BLUE, points: epochs(|info| info.train_loss) },
        Curve { label: "test loss", color: RED, points: epochs(|info| info.test_loss) },
    ];
    let loss_max = losses
        .iter()
        .flat_map(|curve| curve.points.iter().map(|&(_, y)| y))
        .fold(0.0_f64, f64::max);
    let loss_top = if loss_max > 0.0 { loss_max * 1.05 } else { 1.0 };
    let upper = SeriesLabelPosition::UpperRight;
    let x = epoch_axis(history);
    panel(&left, text, "loss", x.clone(), 0.0..loss_top, &losses, upper)?;
    let accuracy =
        [Curve { label: "test accuracy", color: GREEN, points: epochs(|info| info.test_accuracy) }];
    let lower = SeriesLabelPosition::LowerRight;
    panel(&right, text, "accuracy", x, 0.0..1.0, &accuracy, lower)
}

/// One line of a panel: (epoch, value) points.
struct Curve {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// One panel: `curves` against the epoch, within `x` and `y`.
fn panel(
    area: &Area<'_>,
    text: bool,
    what: &str,
    x: Range<f64>,
    y: Range<f64>,
    curves: &[Curve],
    legend: SeriesLabelPosition,
) -> Result<(), String> {
    let epochs = (x.end - x.start) as usize + 1;
    let mut builder = ChartBuilder::on(area);
    builder.margin(16);
    if text {
        builder
            .caption(format!("{what} per epoch"), ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(56);
    }
    let mut chart = builder.build_cartesian_2d(x.clone(), y.clone()).map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    if text {
        // As many labels as epochs, up to 10, so that they fall on whole
        // epochs rather than repeat one rounded (1, 1, 1, 2, ...).
        mesh.x_desc("epoch")
            .y_desc(what)
            .x_labels(epochs.clamp(2, 10))
            .x_label_formatter(&|x| format!("{x:.0}"));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    if !text {
        frame(&mut chart, x, y)?;
    }
    for Curve { label, color, points } in curves {
        let color = *color;
        let series = chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        if text {
            series.label(*label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
        if points.len() == 1 {
            chart
                .draw_series(points.iter().map(|&point| Circle::new(point, 4, color.filled())))
                .map_err(|e| e.to_string())?;
        }
    }
    if text {
        legend_box(&mut chart, legend)?;
    }
    Ok(())
}

/// The step panel: the loss of every step, and a vertical line per fault
/// at its step, labelled with what failed.
fn step_chart(area: &Area<'_>, steps: &StepPanel, text: bool) -> Result<(), String> {
    let mut builder = ChartBuilder::on(area);
    builder.margin(16);
    if text {
        let caption = if steps.points.is_empty() {
            "training loss per step: no step to show"
        } else {
            "training loss per step, faults and recoveries marked"
        };
        builder.caption(caption, ("sans-serif", 22)).x_label_area_size(40).y_label_area_size(56);
    }
    let mut chart = builder
        .build_cartesian_2d(steps.steps.clone(), steps.loss.clone())
        .map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    if text {
        // At most one label a step, so that none repeats a rounded step.
        let labels = ((steps.steps.end - steps.steps.start) as usize + 1).clamp(2, 12);
        mesh.x_desc("step")
            .y_desc("loss")
            .x_labels(labels)
            .x_label_formatter(&|x| format!("{x:.0}"));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    if !text {
        frame(&mut chart, steps.steps.clone(), steps.loss.clone())?;
    }
    // The curve's legend entry first, from an empty series; then the
    // markers; then the curve itself, on top of them.
    let no_points = std::iter::empty::<PathElement<(f64, f64)>>();
    let entry = chart.draw_series(no_points).map_err(|e| e.to_string())?;
    if text && !steps.points.is_empty() {
        entry
            .label("training loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    }
    fault_markers(&mut chart, steps, text)?;
    chart
        .draw_series(LineSeries::new(steps.points.iter().copied(), BLUE.stroke_width(2)))
        .map_err(|e| e.to_string())?;
    if steps.points.len() == 1 {
        chart
            .draw_series(steps.points.iter().map(|&point| Circle::new(point, 4, BLUE.filled())))
            .map_err(|e| e.to_string())?;
    }
    if text {
        // Middle right: clear of the markers' labels along the top, and
        // of the curve's start (a loss falls from the upper left).
        legend_box(&mut chart, SeriesLabelPosition::MiddleRight)?;
    }
    Ok(())
}

/// A vertical line per marker, one legend entry per target, and (with
/// text) each marker's target name by its line.
fn fault_markers(chart: &mut Chart<'_, '_>, steps: &StepPanel, text: bool) -> Result<(), String> {
    let (bottom, top) = (steps.loss.start, steps.loss.end);
    for target in steps.targets() {
        let color = target_color(target);
        let lines = steps.markers.iter().filter(|marker| marker.target == target).map(|marker| {
            let x = marker.step as f64;
            PathElement::new(vec![(x, bottom), (x, top)], color.stroke_width(2))
        });
        let series = chart.draw_series(lines).map_err(|e| e.to_string())?;
        if text {
            series.label(target.name()).legend(move |(x, y)| {
                PathElement::new(vec![(x + 10, y - 6), (x + 10, y + 6)], color.stroke_width(2))
            });
        }
    }
    if !text {
        return Ok(());
    }
    let mut order: Vec<&Marker> = steps.markers.iter().collect();
    order.sort_by_key(|marker| marker.step);
    let labels = order.iter().enumerate().map(|(i, marker)| {
        let row = (i % LABEL_ROWS) as f64;
        let y = top - (top - bottom) * (0.02 + 0.07 * row);
        let style = ("sans-serif", 15).into_font().color(&target_color(marker.target));
        EmptyElement::at((marker.step as f64, y)) + Text::new(marker.target.name(), (4, 0), style)
    });
    chart.draw_series(labels).map_err(|e| e.to_string())?;
    Ok(())
}

/// A frame around a chart drawn without text (which has no axes).
fn frame(chart: &mut Chart<'_, '_>, x: Range<f64>, y: Range<f64>) -> Result<(), String> {
    let edges = Rectangle::new([(x.start, y.start), (x.end, y.end)], BLACK.stroke_width(1));
    chart.draw_series(std::iter::once(edges)).map_err(|e| e.to_string())?;
    Ok(())
}

/// The legend of the series drawn with labels.
fn legend_box<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn history() -> Vec<EpochInfo> {
        (0..5)
            .map(|epoch| EpochInfo {
                epoch,
                train_loss: 2.0 / (epoch as f32 + 1.0),
                test_loss: 2.2 / (epoch as f32 + 1.0),
                test_accuracy: 0.5 + 0.09 * epoch as f32,
            })
            .collect()
    }

    fn losses(steps: usize) -> Vec<f32> {
        (0..steps).map(|i| 2.0 / (i as f32 + 1.0).sqrt()).collect()
    }

    fn recovery(target: FaultTarget, step: u64) -> RecoveryInfo {
        RecoveryInfo {
            target,
            step,
            action: "restarted".to_string(),
            recovery_time: Duration::from_millis(3),
        }
    }

    fn faulted() -> Vec<RecoveryInfo> {
        vec![
            recovery(FaultTarget::Model, 20),
            recovery(FaultTarget::Optimizer, 40),
            recovery(FaultTarget::DeviceLost, 60),
            recovery(FaultTarget::Model, 61),
        ]
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("zbmd-plot-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The PNG signature, and the width and height from its IHDR chunk.
    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, at bytes 16..24.
        let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        (width, height)
    }

    #[test]
    fn the_markers_land_at_the_recoveries_steps() {
        let panel = step_panel(0, &losses(100), &faulted());
        let steps: Vec<u64> = panel.markers.iter().map(|marker| marker.step).collect();
        assert_eq!(steps, [20, 40, 60, 61]);
        assert_eq!(panel.markers[2].target, FaultTarget::DeviceLost);
        // One legend entry per target, in FaultTarget::ALL's order.
        assert_eq!(
            panel.targets(),
            [FaultTarget::Model, FaultTarget::Optimizer, FaultTarget::DeviceLost]
        );
        assert_eq!(panel.steps, 1.0..100.0);
    }

    #[test]
    fn the_x_axis_starts_after_the_step_resumed_from() {
        let panel = step_panel(100, &losses(50), &[recovery(FaultTarget::Loader, 120)]);
        assert_eq!(panel.steps, 101.0..150.0);
        assert_eq!(panel.points.first().map(|&(step, _)| step), Some(101.0));
        assert_eq!(panel.points.last().map(|&(step, _)| step), Some(150.0));
        assert_eq!(panel.markers, [Marker { step: 120, target: FaultTarget::Loader }]);
    }

    #[test]
    fn no_recoveries_no_markers() {
        let panel = step_panel(0, &losses(10), &[]);
        assert!(panel.markers.is_empty());
        assert!(panel.targets().is_empty());
        assert_eq!(panel.points.len(), 10);
        // The axis reaches 5% above the highest loss.
        assert!((panel.loss.end - 2.0 * 1.05).abs() < 1e-9);
    }

    #[test]
    fn a_run_of_no_steps_gives_an_empty_panel() {
        let panel = step_panel(0, &[], &[]);
        assert!(panel.points.is_empty() && panel.markers.is_empty());
        assert_eq!((panel.steps, panel.loss), (1.0..2.0, 0.0..1.0));
        let panel = step_panel(u64::MAX, &[], &[recovery(FaultTarget::Model, 3)]);
        assert!(panel.markers.is_empty());
        assert!(panel.steps.start <= panel.steps.end);
        // Nothing at all to draw is an error, not a panic.
        let dir = temp_dir("empty");
        assert!(draw(&dir.join("empty.png"), &[], &step_panel(0, &[], &[]), false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_marker_after_the_last_step_widens_the_axis() {
        // A metrics record lost with no crash known is reported at the step
        // whose epoch end found the curve short, which may be the last.
        let panel = step_panel(0, &losses(30), &[recovery(FaultTarget::Metrics, 35)]);
        assert_eq!(panel.steps, 1.0..35.0);
    }

    #[test]
    fn non_finite_losses_are_left_out() {
        let panel = step_panel(0, &[1.0, f32::NAN, 0.5, f32::INFINITY], &[]);
        assert_eq!(panel.points, [(1.0, 1.0), (3.0, 0.5)]);
        assert_eq!(panel.steps, 1.0..4.0);
    }

    #[test]
    fn the_epoch_axis_spans_the_epochs_run() {
        assert_eq!(epoch_axis(&history()), 1.0..5.0);
        // A resumed run's history starts at the epoch it resumed in.
        assert_eq!(epoch_axis(&history()[3..]), 4.0..5.0);
        assert_eq!(epoch_axis(&history()[4..]), 5.0..6.0);
        assert_eq!(epoch_axis(&[]), 1.0..2.0);
    }

    #[test]
    fn writes_a_png_of_the_right_size() {
        let dir = temp_dir("sized");
        let path = dir.join("curves.png");
        write_png(&path, &history()).unwrap();
        assert_eq!(png_size(&path), SIZE_PX);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn draws_the_steps_and_markers_with_text_and_without() {
        let dir = temp_dir("steps");
        let panel = step_panel(0, &losses(100), &faulted());
        for text in [true, false] {
            // With text only where a font was found: plotters needs one.
            let text = text && font_available();
            let path = dir.join(format!("steps-{text}.png"));
            draw(&path, &history(), &panel, text).unwrap();
            assert_eq!(png_size(&path), SIZE_PX);
        }
        // A single step, and steps with no epoch completed.
        let one = step_panel(7, &losses(1), &[recovery(FaultTarget::DeviceOom, 8)]);
        draw(&dir.join("one.png"), &[], &one, false).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_font_the_note_names_the_colours() {
        let panel = step_panel(0, &losses(100), &faulted());
        let key = color_key(&panel);
        for expected in ["model red", "optimizer orange", "device_lost magenta", "each step blue"] {
            assert!(key.contains(expected), "{key}");
        }
        assert!(!color_key(&step_panel(0, &losses(5), &[])).contains("vertical lines"));
    }

    #[test]
    fn an_empty_history_is_an_error() {
        assert!(write_png(Path::new("unused.png"), &Vec::new()).is_err());
    }
}
