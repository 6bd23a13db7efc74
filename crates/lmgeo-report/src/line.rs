//! Line plots: curves with optional confidence bands.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::axis::NumAxis;
use crate::chrome::{
    self, BAND_ALPHA, Dash, Draw, LegendEntry, PALETTE, Swatch, dash_polyline, draw_header,
    draw_legend, palette, sample_polyline,
};
use crate::error::FigureError;
use crate::figure::{LinePlot, SeriesStyle};

pub(crate) struct PreparedLine {
    title: String,
    x_label: String,
    y_label: String,
    x: NumAxis,
    y: NumAxis,
    series: Vec<PreparedSeries>,
    pub(crate) notes: Vec<String>,
}

struct PreparedSeries {
    name: String,
    color: RGBColor,
    /// Series past the palette's length repeat its colours with dashes.
    dash: Dash,
    style: SeriesStyle,
    /// Stretches of consecutive drawable points; a dropped point ends one.
    runs: Vec<Vec<(f64, f64)>>,
    band_runs: Vec<Vec<(f64, f64, f64)>>,
}

/// Counts of what was dropped from one series, turned into one note.
#[derive(Default)]
struct Dropped {
    non_finite: usize,
    x_non_positive: usize,
    y_non_positive: usize,
    band: usize,
}

impl Dropped {
    fn note(&self, series: &str, x_log: bool, y_log: bool) -> Option<String> {
        let mut parts = Vec::new();
        let plural = |n: usize| if n == 1 { "point" } else { "points" };
        if self.non_finite > 0 {
            parts.push(format!(
                "{} NaN/infinite {}",
                self.non_finite,
                plural(self.non_finite)
            ));
        }
        if x_log && self.x_non_positive > 0 {
            parts.push(format!(
                "{} {} with x ≤ 0 (log x axis)",
                self.x_non_positive,
                plural(self.x_non_positive)
            ));
        }
        if y_log && self.y_non_positive > 0 {
            parts.push(format!(
                "{} {} with y ≤ 0 (log y axis)",
                self.y_non_positive,
                plural(self.y_non_positive)
            ));
        }
        let mut note = if parts.is_empty() {
            String::new()
        } else {
            format!(
                "series \"{series}\": dropped {} (line broken there)",
                parts.join(", ")
            )
        };
        if self.band > 0 {
            let band = format!(
                "{} band {} dropped (NaN{})",
                self.band,
                if self.band == 1 { "entry" } else { "entries" },
                if y_log || x_log {
                    " or ≤ 0 on a log axis"
                } else {
                    ""
                }
            );
            if note.is_empty() {
                note = format!("series \"{series}\": {band}");
            } else {
                note = format!("{note}; {band}");
            }
        }
        (!note.is_empty()).then_some(note)
    }
}

pub(crate) fn prepare(spec: &LinePlot) -> Result<PreparedLine, FigureError> {
    if spec.series.is_empty() {
        return Err(FigureError::NoData {
            title: spec.title.clone(),
            what: "the line plot has no series".into(),
        });
    }
    let mut notes = Vec::new();
    let mut series = Vec::new();
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for (i, s) in spec.series.iter().enumerate() {
        if s.points.is_empty() {
            return Err(FigureError::EmptySeries {
                title: spec.title.clone(),
                series: s.name.clone(),
            });
        }
        let mut dropped = Dropped::default();
        let x_ok = |x: f64| x.is_finite() && (!spec.x_log || x > 0.0);
        let y_ok = |y: f64| y.is_finite() && (!spec.y_log || y > 0.0);
        let mut placed: Vec<(f64, f64)> = Vec::with_capacity(s.points.len());
        for &(x, y) in &s.points {
            if !x_ok(x) {
                if x.is_finite() {
                    dropped.x_non_positive += 1;
                } else {
                    dropped.non_finite += 1;
                }
                continue;
            }
            placed.push((x, y));
        }
        // Sorting by x makes the line a function of x even when rows arrive
        // in another order (per-model tables joined in any order).
        placed.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut current = Vec::new();
        for (x, y) in placed {
            if y_ok(y) {
                current.push((x, y));
                xs.push(x);
                ys.push(y);
            } else {
                if y.is_finite() {
                    dropped.y_non_positive += 1;
                } else {
                    dropped.non_finite += 1;
                }
                if !current.is_empty() {
                    runs.push(std::mem::take(&mut current));
                }
            }
        }
        if !current.is_empty() {
            runs.push(current);
        }

        let mut band_runs = Vec::new();
        if let Some(band) = &s.band {
            let mut sorted: Vec<(f64, f64, f64)> = band.clone();
            sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut current = Vec::new();
            for (x, lo, hi) in sorted {
                // Checked before ordering the bounds: f64::min would quietly
                // replace a NaN bound with the other one.
                if x_ok(x) && y_ok(lo) && y_ok(hi) {
                    let (lo, hi) = (lo.min(hi), lo.max(hi));
                    current.push((x, lo, hi));
                    xs.push(x);
                    ys.push(lo);
                    ys.push(hi);
                } else {
                    dropped.band += 1;
                    if !current.is_empty() {
                        band_runs.push(std::mem::take(&mut current));
                    }
                }
            }
            // A stretch of one entry has no area to fill; it is still kept
            // and drawn as a vertical bar.
            if !current.is_empty() {
                band_runs.push(current);
            }
        }
        if let Some(note) = dropped.note(&s.name, spec.x_log, spec.y_log) {
            notes.push(note);
        }
        if runs.is_empty() {
            notes.push(format!("series \"{}\" has no drawable points left", s.name));
        }
        series.push(PreparedSeries {
            name: s.name.clone(),
            color: palette(i),
            dash: if (i / PALETTE.len()) % 2 == 1 {
                Dash::Dashed
            } else {
                Dash::Solid
            },
            style: s.style,
            runs,
            band_runs,
        });
    }
    if spec.series.len() > 2 * PALETTE.len() {
        notes.push(format!(
            "{} series: past {}, colours and dash styles repeat",
            spec.series.len(),
            2 * PALETTE.len()
        ));
    }
    if xs.is_empty() {
        return Err(FigureError::NothingToPlot {
            title: spec.title.clone(),
            reason: if spec.x_log || spec.y_log {
                "every point is NaN, infinite, or ≤ 0 on a log axis".into()
            } else {
                "every point is NaN or infinite".into()
            },
        });
    }
    Ok(PreparedLine {
        title: spec.title.clone(),
        x_label: spec.x_label.clone(),
        y_label: spec.y_label.clone(),
        x: NumAxis::covering(xs, spec.x_log, false)?,
        y: NumAxis::covering(ys, spec.y_log, false)?,
        series,
        notes,
    })
}

/// Pixels needed left of the plot for the y tick labels and the y title.
pub(crate) fn y_label_area<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    axis: &NumAxis,
) -> i32 {
    let style = chrome::font(chrome::TICK_SIZE);
    let widest = axis
        .major_ticks()
        .iter()
        .map(|&t| chrome::text_width(root, &axis.label(t), &style))
        .max()
        .unwrap_or(20);
    widest + chrome::AXIS_DESC_SIZE as i32 + 24
}

impl Draw for PreparedLine {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), FigureError>
    where
        DB::ErrorType: 'static,
    {
        let area = draw_header(root, &self.title, &self.notes)?;
        let mut chart = ChartBuilder::on(&area)
            .margin(8)
            .margin_right(24)
            .x_label_area_size(50)
            .y_label_area_size(y_label_area(root, &self.y))
            .build_cartesian_2d(self.x.clone(), self.y.clone())?;
        let x_desc = chrome::one_line(&self.x_label);
        let y_desc = chrome::one_line(&self.y_label);
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .axis_desc_style(chrome::font(chrome::AXIS_DESC_SIZE))
            .label_style(chrome::font(chrome::TICK_SIZE))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(240, 240, 240))
            .x_labels(20)
            .y_labels(20)
            .max_light_lines(10)
            .draw()?;

        for s in &self.series {
            for run in &s.band_runs {
                if run.iter().all(|e| e.0 == run[0].0) {
                    // No width to fill: a thick translucent bar instead.
                    let (x, lo, hi) = run[0];
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(x, lo), (x, hi)],
                        s.color.mix(2.0 * BAND_ALPHA).stroke_width(8),
                    )))?;
                    continue;
                }
                let mut poly: Vec<(f64, f64)> = run.iter().map(|&(x, _, hi)| (x, hi)).collect();
                poly.extend(run.iter().rev().map(|&(x, lo, _)| (x, lo)));
                chart.draw_series(std::iter::once(Polygon::new(
                    poly,
                    s.color.mix(BAND_ALPHA).filled(),
                )))?;
            }
        }
        for s in &self.series {
            let lines = matches!(s.style, SeriesStyle::Line | SeriesStyle::LineAndPoints);
            let markers = matches!(s.style, SeriesStyle::Points | SeriesStyle::LineAndPoints);
            for run in &s.runs {
                if lines && run.len() > 1 {
                    match s.dash {
                        Dash::Solid => {
                            chart.draw_series(std::iter::once(PathElement::new(
                                run.clone(),
                                s.color.stroke_width(2),
                            )))?;
                        }
                        Dash::Dashed => {
                            let px: Vec<(i32, i32)> =
                                run.iter().map(|p| chart.backend_coord(p)).collect();
                            for dash in dash_polyline(&px) {
                                root.draw(&PathElement::new(dash, s.color.stroke_width(2)))?;
                            }
                        }
                    }
                }
                // A lone point of a line series would be invisible without
                // a marker.
                if markers || run.len() == 1 {
                    chart.draw_series(run.iter().map(|&p| Circle::new(p, 4, s.color.filled())))?;
                }
            }
        }

        let entries: Vec<LegendEntry> = self
            .series
            .iter()
            .filter(|s| !s.name.trim().is_empty())
            .map(|s| {
                let lines = matches!(s.style, SeriesStyle::Line | SeriesStyle::LineAndPoints);
                let lone = s.runs.iter().any(|r| r.len() == 1);
                LegendEntry {
                    label: s.name.clone(),
                    swatch: Swatch {
                        color: s.color,
                        band: !s.band_runs.is_empty(),
                        line: lines.then_some(s.dash),
                        marker: !matches!(s.style, SeriesStyle::Line) || lone,
                    },
                }
            })
            .collect();
        let (px, py) = chart.plotting_area().get_pixel_range();
        draw_legend(root, px, py, &entries, &self.occupied())?;
        Ok(())
    }
}

impl PreparedLine {
    /// Where the data lies, as plot fractions, for the legend placement.
    fn occupied(&self) -> Vec<(f64, f64)> {
        let at = |x: f64, y: f64| (self.x.fraction(x), self.y.fraction(y));
        let mut out = Vec::new();
        for s in &self.series {
            for run in &s.runs {
                let pts: Vec<(f64, f64)> = run.iter().map(|&(x, y)| at(x, y)).collect();
                if matches!(s.style, SeriesStyle::Points) {
                    out.extend(pts);
                } else {
                    sample_polyline(&pts, &mut out);
                }
            }
            for run in &s.band_runs {
                for &(x, lo, hi) in run {
                    for k in 0..=4 {
                        let t = f64::from(k) / 4.0;
                        let (fx, flo) = at(x, lo);
                        let (_, fhi) = at(x, hi);
                        out.push((fx, flo + t * (fhi - flo)));
                    }
                }
            }
        }
        out
    }
}
