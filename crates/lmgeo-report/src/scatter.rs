//! The scaling-law figure: labelled points, a fitted power law and the band
//! of its exponent's confidence interval.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::axis::{NumAxis, format_number};
use crate::chrome::{
    self, BAND_ALPHA, Draw, LegendEntry, Swatch, draw_header, draw_legend, sample_polyline,
};
use crate::error::FigureError;
use crate::figure::{PowerLawFit, ScatterFit};
use crate::line::y_label_area;

const POINT_COLOR: RGBColor = chrome::PALETTE[0];
const FIT_COLOR: RGBColor = chrome::PALETTE[1];
/// Samples along the fitted curve; plenty for a smooth curve on linear axes.
const FIT_SAMPLES: usize = 200;

pub(crate) struct PreparedScatter {
    title: String,
    x_label: String,
    y_label: String,
    x: NumAxis,
    y: NumAxis,
    points: Vec<Placed>,
    fit: Option<PreparedFit>,
    pub(crate) notes: Vec<String>,
}

/// A kept point: x, y, its error bar as (lo, hi) already cut at the axis,
/// and its label.
type Placed = (f64, f64, Option<(f64, f64)>, String);

struct PreparedFit {
    curve: Vec<(f64, f64)>,
    /// (x, lo, hi) of the band of curves for b in its CI.
    band: Vec<(f64, f64, f64)>,
    legend: String,
    band_legend: Option<String>,
}

fn fit_legend(fit: &PowerLawFit) -> String {
    let r2 = if fit.r2.is_finite() {
        format_number(fit.r2)
    } else {
        "n/a".into()
    };
    format!(
        "fit y = a·x^b: a = {}, b = {}, R² = {}",
        format_number(fit.a),
        format_number(fit.b),
        r2
    )
}

/// `n` x positions from `lo` to `hi`, evenly spaced on the axis' scale.
fn spaced(lo: f64, hi: f64, n: usize, log: bool) -> Vec<f64> {
    (0..n)
        .map(|k| {
            let t = k as f64 / (n - 1) as f64;
            if log {
                (lo.ln() + t * (hi.ln() - lo.ln())).exp()
            } else {
                lo + t * (hi - lo)
            }
        })
        .collect()
}

pub(crate) fn prepare(spec: &ScatterFit) -> Result<PreparedScatter, FigureError> {
    if spec.points.is_empty() {
        return Err(FigureError::NoData {
            title: spec.title.clone(),
            what: "the scatter plot has no points".into(),
        });
    }
    let log = spec.log_log;
    let mut notes = Vec::new();
    let mut dropped_nan = Vec::new();
    let mut dropped_log = Vec::new();
    let mut clipped = Vec::new();
    let mut bad_err = Vec::new();
    let mut kept = Vec::new();
    for p in &spec.points {
        let name = chrome::one_line(&p.label);
        if !(p.x.is_finite() && p.y.is_finite()) {
            dropped_nan.push(name);
            continue;
        }
        if log && (p.x <= 0.0 || p.y <= 0.0) {
            dropped_log.push(name);
            continue;
        }
        let err = match p.y_err {
            Some(e) if e.is_finite() => {
                let e = e.abs();
                let (lo, hi) = (p.y - e, p.y + e);
                if log && lo <= 0.0 {
                    // The bar goes to the bottom of the axis; marked below.
                    clipped.push(name.clone());
                    Some((f64::NAN, hi))
                } else {
                    Some((lo, hi))
                }
            }
            Some(_) => {
                bad_err.push(name.clone());
                None
            }
            None => None,
        };
        kept.push((p.x, p.y, err, name));
    }
    let list = |v: &[String]| {
        let shown: Vec<&str> = v.iter().take(5).map(String::as_str).collect();
        let more = if v.len() > 5 {
            format!(" and {} more", v.len() - 5)
        } else {
            String::new()
        };
        format!("{}{}", shown.join(", "), more)
    };
    if !dropped_nan.is_empty() {
        notes.push(format!(
            "dropped {} point(s) with NaN/infinite values: {}",
            dropped_nan.len(),
            list(&dropped_nan)
        ));
    }
    if !dropped_log.is_empty() {
        notes.push(format!(
            "dropped {} point(s) with x ≤ 0 or y ≤ 0 (log-log axes): {}",
            dropped_log.len(),
            list(&dropped_log)
        ));
    }
    if !clipped.is_empty() {
        notes.push(format!(
            "error bars reaching y ≤ 0 are cut at the axis: {}",
            list(&clipped)
        ));
    }
    if !bad_err.is_empty() {
        notes.push(format!(
            "error bars not drawn (NaN/infinite): {}",
            list(&bad_err)
        ));
    }
    if kept.is_empty() {
        return Err(FigureError::NothingToPlot {
            title: spec.title.clone(),
            reason: if log {
                "every point is NaN, infinite, or ≤ 0 on the log-log axes".into()
            } else {
                "every point is NaN or infinite".into()
            },
        });
    }

    let xs: Vec<f64> = kept.iter().map(|p| p.0).collect();
    let x = NumAxis::covering(xs.iter().copied(), log, false)?;
    let x_min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let x_max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);

    let mut ys: Vec<f64> = Vec::new();
    for (_, y, err, _) in &kept {
        ys.push(*y);
        if let Some((lo, hi)) = err {
            ys.push(*lo);
            ys.push(*hi);
        }
    }

    let fit = match spec.fit {
        None => None,
        Some(f) => {
            let problem = if !(f.a.is_finite() && f.b.is_finite()) {
                Some("a or b is NaN/infinite")
            } else if log && f.a <= 0.0 {
                Some("a ≤ 0 cannot be drawn on log-log axes")
            } else {
                None
            };
            match problem {
                Some(p) => {
                    notes.push(format!("fit not drawn: {p}"));
                    None
                }
                None => prepare_fit(&f, x_min, x_max, &x, &xs, log, &mut notes),
            }
        }
    };
    if let Some(f) = &fit {
        ys.extend(f.curve.iter().map(|p| p.1));
        for &(_, lo, hi) in &f.band {
            ys.push(lo);
            ys.push(hi);
        }
    }
    let y = NumAxis::covering(ys, log, false)?;
    // Error bars cut at zero on a log axis end at the bottom of the frame.
    let points = kept
        .into_iter()
        .map(|(px, py, err, name)| {
            let err = err.map(|(lo, hi)| (if lo.is_nan() { y.lo() } else { lo }, hi));
            (px, py, err, name)
        })
        .collect();
    Ok(PreparedScatter {
        title: spec.title.clone(),
        x_label: spec.x_label.clone(),
        y_label: spec.y_label.clone(),
        x,
        y,
        points,
        fit,
        notes,
    })
}

fn prepare_fit(
    f: &PowerLawFit,
    x_min: f64,
    x_max: f64,
    x_axis: &NumAxis,
    xs: &[f64],
    log: bool,
    notes: &mut Vec<String>,
) -> Option<PreparedFit> {
    // Draw the law over the measured range only: extrapolating would
    // suggest evidence that is not there. A single x gets the axis range so
    // the fitted slope is still visible.
    let (mut lo, hi) = if x_max > x_min {
        (x_min, x_max)
    } else {
        (x_axis.lo(), x_axis.hi())
    };
    if lo <= 0.0 {
        if hi <= 0.0 {
            notes.push("fit not drawn: a power law needs x > 0".into());
            return None;
        }
        notes.push("fit drawn for x > 0 only".into());
        lo = hi * 1e-3;
    }
    let sample_x = spaced(lo, hi, FIT_SAMPLES, log || x_max / lo > 100.0);
    let curve: Vec<(f64, f64)> = sample_x
        .iter()
        .map(|&x| (x, f.eval(x)))
        .filter(|p| p.1.is_finite() && (!log || p.1 > 0.0))
        .collect();
    if curve.len() < 2 {
        notes.push("fit not drawn: the law has no finite values over the x range".into());
        return None;
    }
    let mut band = Vec::new();
    let mut band_legend = None;
    if let Some((c0, c1)) = f.b_ci {
        if c0.is_finite() && c1.is_finite() {
            let (b_lo, b_hi) = (c0.min(c1), c0.max(c1));
            if f.b < b_lo || f.b > b_hi {
                notes.push(format!(
                    "b = {} lies outside its CI [{}, {}]",
                    format_number(f.b),
                    format_number(b_lo),
                    format_number(b_hi)
                ));
            }
            let positive: Vec<f64> = xs.iter().copied().filter(|&x| x > 0.0).collect();
            let xg = if positive.is_empty() {
                lo
            } else {
                (positive.iter().map(|x| x.ln()).sum::<f64>() / positive.len() as f64).exp()
            };
            let pivot = f.eval(xg);
            for &(x, _) in &curve {
                let y1 = pivot * (x / xg).powf(b_lo);
                let y2 = pivot * (x / xg).powf(b_hi);
                if y1.is_finite() && y2.is_finite() {
                    band.push((x, y1.min(y2), y1.max(y2)));
                }
            }
            band_legend = Some(format!(
                "CI of b: [{}, {}] (pivot at the geometric mean of x)",
                format_number(b_lo),
                format_number(b_hi)
            ));
        } else {
            notes.push("CI of b not drawn: a bound is NaN/infinite".into());
        }
    }
    Some(PreparedFit {
        curve,
        band,
        legend: fit_legend(f),
        band_legend,
    })
}

impl Draw for PreparedScatter {
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
        chart
            .configure_mesh()
            .x_desc(chrome::one_line(&self.x_label))
            .y_desc(chrome::one_line(&self.y_label))
            .axis_desc_style(chrome::font(chrome::AXIS_DESC_SIZE))
            .label_style(chrome::font(chrome::TICK_SIZE))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(240, 240, 240))
            .x_labels(20)
            .y_labels(20)
            .max_light_lines(10)
            .draw()?;

        let mut entries = vec![LegendEntry {
            label: "measured".into(),
            swatch: Swatch::marker(POINT_COLOR),
        }];
        if let Some(fit) = &self.fit {
            if fit.band.len() > 1 {
                let mut poly: Vec<(f64, f64)> =
                    fit.band.iter().map(|&(x, _, hi)| (x, hi)).collect();
                poly.extend(fit.band.iter().rev().map(|&(x, lo, _)| (x, lo)));
                chart.draw_series(std::iter::once(Polygon::new(
                    poly,
                    FIT_COLOR.mix(BAND_ALPHA).filled(),
                )))?;
            }
            chart.draw_series(std::iter::once(PathElement::new(
                fit.curve.clone(),
                FIT_COLOR.stroke_width(2),
            )))?;
            entries.push(LegendEntry {
                label: fit.legend.clone(),
                swatch: Swatch::line(FIT_COLOR),
            });
            if let (Some(l), true) = (&fit.band_legend, fit.band.len() > 1) {
                entries.push(LegendEntry {
                    label: l.clone(),
                    swatch: Swatch::band(FIT_COLOR),
                });
            }
        }

        for &(x, _, err, _) in &self.points {
            if let Some((lo, hi)) = err {
                let a = chart.backend_coord(&(x, lo));
                let b = chart.backend_coord(&(x, hi));
                let style = POINT_COLOR.stroke_width(1);
                root.draw(&PathElement::new(vec![a, b], style))?;
                // A bar cut at the bottom of a log axis gets no cap there: it
                // does not end, it leaves the plot.
                let cut = lo <= self.y.lo();
                let ends = if cut { vec![b] } else { vec![a, b] };
                for end in ends {
                    root.draw(&PathElement::new(
                        vec![(end.0 - 4, end.1), (end.0 + 4, end.1)],
                        style,
                    ))?;
                }
            }
        }
        chart.draw_series(
            self.points
                .iter()
                .map(|&(x, y, _, _)| Circle::new((x, y), 5, POINT_COLOR.filled())),
        )?;

        // Labels sit to the upper right of their point, or to the upper left
        // near the right edge where they would leave the frame.
        let (px, py) = chart.plotting_area().get_pixel_range();
        let label_style = chrome::font(12.0);
        let mut occupied = self.occupied();
        for (x, y, _, name) in &self.points {
            if name.is_empty() {
                continue;
            }
            let (cx, cy) = chart.backend_coord(&(*x, *y));
            let w = chrome::text_width(root, name, &label_style);
            let right_room = px.end - cx;
            let on_right = right_room >= w + 12;
            let (anchor, tx) = if on_right {
                (HPos::Left, cx + 7)
            } else {
                (HPos::Right, cx - 7)
            };
            let ty = if cy - py.start > 20 { cy - 7 } else { cy + 14 };
            root.draw(&Text::new(
                name.clone(),
                (tx, ty),
                label_style.pos(Pos::new(anchor, VPos::Bottom)),
            ))?;
            let x0 = if on_right { tx } else { tx - w };
            let (pw, ph) = ((px.end - px.start) as f64, (py.end - py.start) as f64);
            for k in 0..=4 {
                let lx = (x0 + w * k / 4 - px.start) as f64 / pw;
                occupied.push((lx, (py.end - ty + 6) as f64 / ph));
            }
        }
        draw_legend(root, px, py, &entries, &occupied)?;
        Ok(())
    }
}

impl PreparedScatter {
    fn occupied(&self) -> Vec<(f64, f64)> {
        let at = |x: f64, y: f64| (self.x.fraction(x), self.y.fraction(y));
        let mut out: Vec<(f64, f64)> = self.points.iter().map(|p| at(p.0, p.1)).collect();
        if let Some(fit) = &self.fit {
            let curve: Vec<(f64, f64)> = fit.curve.iter().map(|&(x, y)| at(x, y)).collect();
            sample_polyline(&curve, &mut out);
            for &(x, lo, hi) in fit.band.iter().step_by(10) {
                out.push(at(x, lo));
                out.push(at(x, hi));
            }
        }
        out
    }
}
