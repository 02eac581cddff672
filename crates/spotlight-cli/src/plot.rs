//! Line charts and heatmaps as PNG (plotters), written next to the CSV/JSON they are drawn from.
//! Labels use DejaVu Sans, fetched and verified like the other assets on first use.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{CliError, Result};

/// One named line.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 16] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(174, 199, 232),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(197, 176, 213),
    RGBColor(247, 182, 210),
];

/// Registers the label font with plotters once per process.
fn font() -> Result<()> {
    static FONT: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| {
        let dir = crate::assets::ensure(&crate::assets::FONT, &mut |m| eprintln!("{m}"))
            .map_err(|e| e.to_string())?;
        let path = dir.join("DejaVuSans.ttf");
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // plotters keeps fonts for the whole process: the bytes live as long.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{}: not a usable font", path.display()))
    })
    .clone()
    .map_err(|e| CliError::Asset(format!("plot font: {e}")))
}

/// Draws `series` into a PNG file at `path`. `log_y` uses a logarithmic y axis.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    let err = |e: String| CliError::Io(format!("cannot draw {}: {e}", path.display()));
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        if !y.is_finite() || (log_y && y <= 0.0) {
            continue;
        }
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(err("no finite points".into()));
    }
    if x0 == x1 {
        x1 = x0 + 1.0;
    }
    if y0 == y1 {
        y1 = y0 + 1e-9_f64.max(y0.abs() * 0.1);
    }
    font()?;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .draw()
                .map_err(|e| err(e.to_string()))?;
            for (i, s) in series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                chart
                    .draw_series(LineSeries::new(
                        s.points
                            .iter()
                            .copied()
                            .filter(|p| p.1.is_finite() && (!log_y || p.1 > 0.0)),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| err(e.to_string()))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                // Markers where a series has few points (a lone point draws no line).
                if s.points.len() <= 24 {
                    chart
                        .draw_series(
                            s.points
                                .iter()
                                .copied()
                                .filter(|p| p.1.is_finite() && (!log_y || p.1 > 0.0))
                                .map(|p| Circle::new(p, 4, color.filled())),
                        )
                        .map_err(|e| err(e.to_string()))?;
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| err(e.to_string()))?;
        }};
    }
    macro_rules! builder {
        () => {{
            let mut b = ChartBuilder::on(&root);
            b.caption(title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(70);
            b
        }};
    }
    if log_y {
        draw!(builder!()
            .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
            .map_err(|e| err(e.to_string()))?);
    } else {
        let pad = (y1 - y0) * 0.05;
        draw!(builder!()
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(|e| err(e.to_string()))?);
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// A grid of `values[row][col]` in [0, 1] (e.g. pass rates) as coloured cells, red (0) to green (1),
/// each labelled with its value; row 0 is drawn at the bottom.
pub fn heatmap(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    cols: &[String],
    rows: &[String],
    values: &[Vec<f64>],
) -> Result<()> {
    let err = |e: String| CliError::Io(format!("cannot draw {}: {e}", path.display()));
    let (nx, ny) = (cols.len().max(1), rows.len().max(1));
    let width = (220 + 80 * nx as u32).max(12 * title.chars().count() as u32 / 2 + 40);
    font()?;
    let root = BitMapBackend::new(path, (width, 120 + 40 * ny as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 14))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(150)
        // A segmented range a..b has b − a + 1 segments.
        .build_cartesian_2d((0..nx - 1).into_segmented(), (0..ny - 1).into_segmented())
        .map_err(|e| err(e.to_string()))?;
    let name = |names: &[String], v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(nx)
        .y_labels(ny)
        .x_label_formatter(&|v| name(cols, v))
        .y_label_formatter(&|v| name(rows, v))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let cells = values
        .iter()
        .enumerate()
        .flat_map(|(r, row)| row.iter().enumerate().map(move |(c, &v)| (r, c, v)));
    chart
        .draw_series(cells.clone().map(|(r, c, v)| {
            let color = if v.is_finite() {
                let v = v.clamp(0.0, 1.0);
                RGBColor((220.0 * (1.0 - v)) as u8 + 30, (180.0 * v) as u8 + 40, 60)
            } else {
                RGBColor(200, 200, 200)
            };
            Rectangle::new(
                [
                    (SegmentValue::Exact(c), SegmentValue::Exact(r + 1)),
                    (SegmentValue::Exact(c + 1), SegmentValue::Exact(r)),
                ],
                color.filled(),
            )
        }))
        .map_err(|e| err(e.to_string()))?;
    let style = ("sans-serif", 13)
        .into_font()
        .color(&WHITE)
        .pos(Pos::new(HPos::Center, VPos::Center));
    chart
        .draw_series(cells.map(|(r, c, v)| {
            Text::new(
                format!("{v:.2}"),
                (SegmentValue::CenterOf(c), SegmentValue::CenterOf(r)),
                style.clone(),
            )
        }))
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
