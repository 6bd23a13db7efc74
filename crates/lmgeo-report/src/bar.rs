//! Bar charts with error bars and an optional reference line.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::axis::{CatAxis, NumAxis, format_number};
use crate::chrome::{self, Draw, dash_polyline, draw_header, wrap_text};
use crate::error::FigureError;
use crate::figure::{Bar, BarChart};
use crate::line::y_label_area;

const BAR_COLOR: RGBColor = chrome::PALETTE[0];
const REFERENCE_COLOR: RGBColor = RGBColor(120, 120, 120);
/// Fraction of its slot a bar fills, so neighbours stay apart.
const BAR_WIDTH: f64 = 0.64;
const CATEGORY_SIZE: f64 = 13.0;
const MAX_CATEGORY_LINES: usize = 3;

pub(crate) struct PreparedBars {
    title: String,
    y_label: String,
    y: NumAxis,
    /// Values that are not finite are NaN here and shown as "n/a".
    bars: Vec<Bar>,
    reference: Option<(f64, String)>,
    pub(crate) notes: Vec<String>,
}

pub(crate) fn prepare(spec: &BarChart) -> Result<PreparedBars, FigureError> {
    if spec.bars.is_empty() {
        return Err(FigureError::NoData {
            title: spec.title.clone(),
            what: "the bar chart has no bars".into(),
        });
    }
    let mut notes = Vec::new();
    let mut missing = Vec::new();
    let mut bad_err = Vec::new();
    let mut values = Vec::new();
    let mut bars = Vec::new();
    for (label, v, err) in &spec.bars {
        let label = chrome::one_line(label);
        let v = if v.is_finite() {
            values.push(*v);
            *v
        } else {
            missing.push(label.clone());
            f64::NAN
        };
        let err = match err {
            Some((a, b)) if a.is_finite() && b.is_finite() => {
                let (lo, hi) = (a.min(*b), a.max(*b));
                values.push(lo);
                values.push(hi);
                Some((lo, hi))
            }
            Some(_) => {
                bad_err.push(label.clone());
                None
            }
            None => None,
        };
        bars.push((label, v, err));
    }
    if !missing.is_empty() {
        notes.push(format!(
            "no value (NaN/infinite), shown as n/a: {}",
            missing.join(", ")
        ));
    }
    if !bad_err.is_empty() {
        notes.push(format!(
            "error bar not drawn (NaN/infinite bound): {}",
            bad_err.join(", ")
        ));
    }
    if bars.iter().all(|b| b.1.is_nan()) {
        return Err(FigureError::NothingToPlot {
            title: spec.title.clone(),
            reason: "every bar value is NaN or infinite".into(),
        });
    }
    let reference = match &spec.reference {
        Some((v, label)) if v.is_finite() => {
            values.push(*v);
            Some((*v, chrome::one_line(label)))
        }
        Some((_, label)) => {
            notes.push(format!(
                "reference line {label:?} not drawn: its value is NaN"
            ));
            None
        }
        None => None,
    };
    Ok(PreparedBars {
        title: spec.title.clone(),
        y_label: spec.y_label.clone(),
        y: NumAxis::covering(values, false, true)?,
        bars,
        reference,
        notes,
    })
}

impl Draw for PreparedBars {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), FigureError>
    where
        DB::ErrorType: 'static,
    {
        let area = draw_header(root, &self.title, &self.notes)?;
        let n = self.bars.len();
        let y_area = y_label_area(root, &self.y);
        let margin = 8;
        let slot_px = (area.dim_in_pixel().0 as i32 - y_area - margin - 24) / n as i32;
        let cat_style = chrome::font(CATEGORY_SIZE);
        let lines: Vec<Vec<String>> = self
            .bars
            .iter()
            .map(|(l, _, _)| {
                let mut w = wrap_text(root, l, &cat_style, (slot_px - 6).max(20));
                if w.len() > MAX_CATEGORY_LINES {
                    w.truncate(MAX_CATEGORY_LINES);
                    if let Some(last) = w.last_mut() {
                        last.push('…');
                    }
                }
                w
            })
            .collect();
        let max_lines = lines.iter().map(Vec::len).max().unwrap_or(1) as i32;
        let line_h = CATEGORY_SIZE as i32 + 3;

        let mut chart = ChartBuilder::on(&area)
            .margin(margin)
            .margin_right(24)
            .x_label_area_size(max_lines * line_h + 16)
            .y_label_area_size(y_area)
            .build_cartesian_2d(CatAxis::new(n, false), self.y.clone())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(chrome::one_line(&self.y_label))
            .axis_desc_style(chrome::font(chrome::AXIS_DESC_SIZE))
            .label_style(chrome::font(chrome::TICK_SIZE))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(240, 240, 240))
            .y_labels(20)
            .max_light_lines(5)
            .draw()?;

        let base = 0.0f64.clamp(self.y.lo(), self.y.hi());
        let gap = (1.0 - BAR_WIDTH) / 2.0;
        chart.draw_series(
            self.bars
                .iter()
                .enumerate()
                .filter(|b| !b.1.1.is_nan())
                .map(|(i, (_, v, _))| {
                    let x0 = i as f64 + gap;
                    Rectangle::new([(x0, base), (x0 + BAR_WIDTH, *v)], BAR_COLOR.filled())
                }),
        )?;
        let (px, py) = chart.plotting_area().get_pixel_range();
        let value_style = chrome::font(12.0);
        for (i, (_, v, err)) in self.bars.iter().enumerate() {
            let xc = i as f64 + 0.5;
            if let Some((lo, hi)) = err {
                let a = chart.backend_coord(&(xc, *lo));
                let b = chart.backend_coord(&(xc, *hi));
                let style = BLACK.stroke_width(2);
                root.draw(&PathElement::new(vec![a, b], style))?;
                for end in [a, b] {
                    root.draw(&PathElement::new(
                        vec![(end.0 - 6, end.1), (end.0 + 6, end.1)],
                        style,
                    ))?;
                }
            }
            // The value is printed past the end of the bar (or its error
            // bar), on the side away from zero.
            let (text, y_at, above) = if v.is_nan() {
                ("n/a".to_string(), base, true)
            } else {
                let reach = match err {
                    Some((_, hi)) if *v >= 0.0 => hi.max(*v),
                    Some((lo, _)) => lo.min(*v),
                    None => *v,
                };
                (format_number(*v), reach, *v >= 0.0)
            };
            let (x, y) = chart.backend_coord(&(xc, y_at));
            let (dy, vpos) = if above {
                (-4, VPos::Bottom)
            } else {
                (4, VPos::Top)
            };
            let y = (y + dy).clamp(py.start + 12, py.end - 2);
            root.draw(&Text::new(
                text,
                (x, y),
                value_style.pos(Pos::new(HPos::Center, vpos)),
            ))?;
        }
        for (i, l) in lines.iter().enumerate() {
            let (x, _) = chart.backend_coord(&(i as f64 + 0.5, base));
            for (k, line) in l.iter().enumerate() {
                root.draw(&Text::new(
                    line.clone(),
                    (x, py.end + 8 + k as i32 * line_h),
                    cat_style.pos(Pos::new(HPos::Center, VPos::Top)),
                ))?;
            }
        }
        if let Some((v, label)) = &self.reference {
            let (_, y) = chart.backend_coord(&(0.0, *v));
            for dash in dash_polyline(&[(px.start, y), (px.end, y)]) {
                root.draw(&PathElement::new(dash, REFERENCE_COLOR.stroke_width(2)))?;
            }
            if !label.is_empty() {
                // On a white box: the label may sit over a bar.
                let text = format!("{label} ({})", format_number(*v));
                let style = chrome::grey_font(12.0).pos(Pos::new(HPos::Right, VPos::Bottom));
                let w = chrome::text_width(root, &text, &style);
                let (x1, y1) = (px.end - 4, y - 3);
                root.draw(&Rectangle::new(
                    [(x1 - w - 4, y1 - 15), (x1 + 2, y1)],
                    WHITE.mix(0.85).filled(),
                ))?;
                root.draw(&Text::new(text, (x1, y1), style))?;
            }
        }
        Ok(())
    }
}
