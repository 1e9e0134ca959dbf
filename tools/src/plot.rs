//! `train --plot`: a PNG of the per-epoch curves, drawn with plotters.
//!
//! Left panel: train loss (blue) and test loss (red); right panel: test
//! accuracy (green), all against the epoch. Text (titles, axis labels and
//! legends) needs a TrueType font, which plotters' `ab_glyph` backend reads
//! from a file: the one named by `ZBMD_PLOT_FONT`, else the first of a few
//! well-known system fonts. Without one the curves, grid and colours are
//! drawn without text, and the note returned says which colour is which.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use zbmd_ml::train::EpochInfo;

/// The plot's size in pixels: two 640×480 panels side by side.
const SIZE_PX: (u32, u32) = (1280, 480);

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

/// Draws `history` into a PNG at `path`. Returns a note for the user: empty,
/// or how to read a plot drawn without text.
pub fn write_png(path: &Path, history: &[EpochInfo]) -> Result<String, String> {
    let text = font_available();
    draw(path, history, text)?;
    Ok(if text {
        String::new()
    } else {
        " (no font found, set ZBMD_PLOT_FONT to a .ttf file for labels: left panel train loss \
         blue and test loss red, right panel test accuracy green)"
            .to_string()
    })
}

/// Draws the plot, with text or without.
fn draw(path: &Path, history: &[EpochInfo], text: bool) -> Result<(), String> {
    if history.is_empty() {
        return Err("no epoch completed, nothing to plot".to_string());
    }
    let root = BitMapBackend::new(path, SIZE_PX).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(SIZE_PX.0 / 2);
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
    panel(&left, text, "loss", history.len(), 0.0..loss_top, &losses, upper)?;
    let accuracy =
        [Curve { label: "test accuracy", color: GREEN, points: epochs(|info| info.test_accuracy) }];
    let lower = SeriesLabelPosition::LowerRight;
    panel(&right, text, "accuracy", history.len(), 0.0..1.0, &accuracy, lower)?;
    root.present().map_err(|e| format!("cannot write the PNG: {e}"))
}

/// One line of a panel: (epoch, value) points.
struct Curve {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// One panel: `curves` against the epoch (1..=`epochs`), within `y`.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    text: bool,
    what: &str,
    epochs: usize,
    y: std::ops::Range<f64>,
    curves: &[Curve],
    legend: SeriesLabelPosition,
) -> Result<(), String> {
    let x = 1.0..(epochs.max(2) as f64);
    let mut builder = ChartBuilder::on(area);
    builder.margin(16);
    if text {
        builder
            .caption(format!("{what} per epoch"), ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(56);
    }
    let mut chart = builder.build_cartesian_2d(x, y).map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("epoch").y_desc(what).x_label_formatter(&|x| format!("{x:.0}"));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| e.to_string())?;
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
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(legend)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn writes_a_png_of_the_right_size() {
        let dir = std::env::temp_dir().join(format!("zbmd-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("curves.png");
        write_png(&path, &history()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, at bytes 16..24.
        let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((width, height), SIZE_PX);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_font_the_curves_are_drawn_without_text() {
        let dir = std::env::temp_dir().join(format!("zbmd-plot-plain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plain.png");
        draw(&path, &history(), false).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_history_is_an_error() {
        assert!(write_png(Path::new("unused.png"), &[]).is_err());
    }
}
