//! Heatmaps: matrices as coloured cells, with a colour bar.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::axis::{CatAxis, NumAxis, format_number};
use crate::chrome::{self, Draw, draw_header, fit_text, text_width, truncate_chars};
use crate::error::FigureError;
use crate::figure::Heatmap;

/// Viridis at nine evenly spaced stops: perceptually uniform, readable in
/// grey scale and by colour-blind readers.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (0x44, 0x01, 0x54),
    (0x47, 0x2D, 0x7B),
    (0x3B, 0x52, 0x8B),
    (0x2C, 0x72, 0x8E),
    (0x21, 0x91, 0x8C),
    (0x28, 0xAE, 0x80),
    (0x5E, 0xC9, 0x62),
    (0xAD, 0xDC, 0x30),
    (0xFD, 0xE7, 0x25),
];

/// ColorBrewer RdBu, blue for negative, white at zero, red for positive.
const DIVERGING: [(u8, u8, u8); 9] = [
    (0x21, 0x66, 0xAC),
    (0x43, 0x93, 0xC3),
    (0x92, 0xC5, 0xDE),
    (0xD1, 0xE5, 0xF0),
    (0xF7, 0xF7, 0xF7),
    (0xFD, 0xDB, 0xC7),
    (0xF4, 0xA5, 0x82),
    (0xD6, 0x60, 0x4D),
    (0xB2, 0x18, 0x2B),
];

const NAN_COLOR: RGBColor = RGBColor(200, 200, 200);
/// Room right of the plot for the colour bar, its ticks and its title.
const COLORBAR_W: u32 = 100;
const COLORBAR_STRIP: i32 = 16;
/// Longest column label (often a token), in characters, before it is
/// shortened; row labels (method or model names) may be longer.
const MAX_COL_CHARS: usize = 16;
const MAX_ROW_CHARS: usize = 32;
const LABEL_SIZE: f64 = 12.0;
/// Most cells drawn along one axis; larger matrices are drawn as block means.
const MAX_CELLS_PER_AXIS: usize = 240;

/// Means of the finite values in blocks of `br` rows by `bc` columns (NaN
/// where a block has none).
fn block_means(values: &[Vec<f64>], br: usize, bc: usize) -> Vec<Vec<f64>> {
    let cols = values.first().map_or(0, Vec::len);
    values
        .chunks(br)
        .map(|block| {
            (0..cols.div_ceil(bc))
                .map(|j| {
                    let (mut sum, mut n) = (0.0, 0usize);
                    for row in block {
                        for &v in row.iter().skip(j * bc).take(bc) {
                            if v.is_finite() {
                                sum += v;
                                n += 1;
                            }
                        }
                    }
                    if n == 0 { f64::NAN } else { sum / n as f64 }
                })
                .collect()
        })
        .collect()
}

fn interpolate(stops: &[(u8, u8, u8)], t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let pos = t * (stops.len() - 1) as f64;
    let i = (pos.floor() as usize).min(stops.len() - 2);
    let f = pos - i as f64;
    let mix = |a: u8, b: u8| (f64::from(a) + f * (f64::from(b) - f64::from(a))).round() as u8;
    let (a, b) = (stops[i], stops[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

pub(crate) struct PreparedHeatmap {
    title: String,
    x_label: String,
    y_label: String,
    row_labels: Vec<String>,
    col_labels: Vec<String>,
    /// What the colour encodes (after row normalisation, if any).
    colors: Vec<Vec<f64>>,
    /// What the cell annotations show: the values as given.
    raw: Vec<Vec<f64>>,
    vmin: f64,
    vmax: f64,
    symmetric: bool,
    color_label: String,
    has_nan: bool,
    pub(crate) notes: Vec<String>,
}

pub(crate) fn prepare(spec: &Heatmap) -> Result<PreparedHeatmap, FigureError> {
    let shape = |problem: String| FigureError::Shape {
        title: spec.title.clone(),
        problem,
    };
    let rows = spec.values.len();
    let cols = spec.values.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return Err(FigureError::NoData {
            title: spec.title.clone(),
            what: "the heatmap has no cells".into(),
        });
    }
    if let Some((i, r)) = spec
        .values
        .iter()
        .enumerate()
        .find(|(_, r)| r.len() != cols)
    {
        return Err(shape(format!(
            "row {i} has {} values but row 0 has {cols}",
            r.len()
        )));
    }
    if !spec.row_labels.is_empty() && spec.row_labels.len() != rows {
        return Err(shape(format!(
            "{} row labels for {rows} rows",
            spec.row_labels.len()
        )));
    }
    if !spec.col_labels.is_empty() && spec.col_labels.len() != cols {
        return Err(shape(format!(
            "{} column labels for {cols} columns",
            spec.col_labels.len()
        )));
    }
    let numbered = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
    let row_labels = if spec.row_labels.is_empty() {
        numbered(rows)
    } else {
        spec.row_labels
            .iter()
            .map(|l| chrome::one_line(l))
            .collect()
    };
    // Column labels are often tokens, whose spaces and line breaks matter.
    let col_labels = if spec.col_labels.is_empty() {
        numbered(cols)
    } else {
        spec.col_labels
            .iter()
            .map(|l| chrome::visible_token(l))
            .collect()
    };

    let mut notes = Vec::new();
    let nan_cells = spec
        .values
        .iter()
        .flatten()
        .filter(|v| !v.is_finite())
        .count();
    if nan_cells == rows * cols {
        return Err(FigureError::NothingToPlot {
            title: spec.title.clone(),
            reason: "every cell is NaN or infinite".into(),
        });
    }
    if nan_cells > 0 {
        notes.push(format!(
            "{nan_cells} of {} cells are NaN/infinite (drawn grey)",
            rows * cols
        ));
    }
    let mut colors = spec.values.clone();
    if spec.normalize_rows {
        let mut zero_rows = 0;
        for row in &mut colors {
            let m = row
                .iter()
                .filter(|v| v.is_finite())
                .fold(0.0f64, |m, v| m.max(v.abs()));
            if m > 0.0 {
                row.iter_mut().for_each(|v| *v /= m);
            } else {
                zero_rows += 1;
            }
        }
        notes.push("colours: each row divided by its largest |value|".into());
        if zero_rows > 0 {
            notes.push(format!(
                "{zero_rows} row(s) are all zero or NaN and were not rescaled"
            ));
        }
    }
    // Past a few hundred cells per axis, cells are thinner than a pixel or
    // two and an SVG of one rect per cell runs to hundreds of megabytes (a
    // 2312 x 2312 distance matrix). Such matrices are drawn as block means.
    let (br, bc) = (
        rows.div_ceil(MAX_CELLS_PER_AXIS),
        cols.div_ceil(MAX_CELLS_PER_AXIS),
    );
    let (colors, raw, row_labels, col_labels) = if br > 1 || bc > 1 {
        notes.push(format!(
            "{rows}×{cols} matrix drawn as means of {br}×{bc} blocks (labels: first of each block)"
        ));
        (
            block_means(&colors, br, bc),
            block_means(&spec.values, br, bc),
            row_labels.into_iter().step_by(br).collect(),
            col_labels.into_iter().step_by(bc).collect(),
        )
    } else {
        (colors, spec.values.clone(), row_labels, col_labels)
    };
    let finite = colors.iter().flatten().copied().filter(|v| v.is_finite());
    let (mut vmin, mut vmax) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if spec.symmetric {
        let l = vmin.abs().max(vmax.abs());
        (vmin, vmax) = if l > 0.0 { (-l, l) } else { (-1.0, 1.0) };
    } else if vmax - vmin <= vmax.abs().max(vmin.abs()) * 1e-12 {
        notes.push(format!(
            "all values equal {}: one colour",
            format_number(vmin)
        ));
        let half = if vmin == 0.0 { 1.0 } else { vmin.abs() * 0.1 };
        (vmin, vmax) = (vmin - half, vmax + half);
    }
    if !(vmax - vmin).is_finite() {
        return Err(FigureError::RangeOverflow);
    }
    let mut color_label = chrome::one_line(&spec.color_label);
    if spec.normalize_rows {
        color_label = if color_label.is_empty() {
            "fraction of row max".into()
        } else {
            format!("{color_label} / row max")
        };
    }
    Ok(PreparedHeatmap {
        title: spec.title.clone(),
        x_label: spec.x_label.clone(),
        y_label: spec.y_label.clone(),
        row_labels,
        col_labels,
        colors,
        raw,
        vmin,
        vmax,
        symmetric: spec.symmetric,
        color_label,
        has_nan: nan_cells > 0,
        notes,
    })
}

impl PreparedHeatmap {
    fn color(&self, v: f64) -> RGBColor {
        if !v.is_finite() {
            return NAN_COLOR;
        }
        let t = (v - self.vmin) / (self.vmax - self.vmin);
        if self.symmetric {
            interpolate(&DIVERGING, t)
        } else {
            interpolate(&VIRIDIS, t)
        }
    }
}

/// Every `k`-th label, so labels of `label_px` fit in cells of `cell_px`.
fn label_stride(cell_px: f64, label_px: f64) -> usize {
    if cell_px <= 0.0 {
        return 1;
    }
    ((label_px / cell_px).ceil() as usize).max(1)
}

fn luminance(c: RGBColor) -> f64 {
    (0.2126 * f64::from(c.0) + 0.7152 * f64::from(c.1) + 0.0722 * f64::from(c.2)) / 255.0
}

impl Draw for PreparedHeatmap {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), FigureError>
    where
        DB::ErrorType: 'static,
    {
        let area = draw_header(root, &self.title, &self.notes)?;
        let (aw, ah) = area.dim_in_pixel();
        let rows = self.raw.len();
        let cols = self.raw[0].len();
        let label_style = chrome::font(LABEL_SIZE);
        let desc = chrome::AXIS_DESC_SIZE as i32;

        let row_text: Vec<String> = self
            .row_labels
            .iter()
            .map(|l| {
                let max_px = (f64::from(aw) * 0.3) as i32;
                fit_text(
                    root,
                    &truncate_chars(l, MAX_ROW_CHARS),
                    &label_style,
                    max_px,
                )
            })
            .collect();
        let col_text: Vec<String> = self
            .col_labels
            .iter()
            .map(|l| truncate_chars(l, MAX_COL_CHARS))
            .collect();
        let widest = |labels: &[String]| {
            labels
                .iter()
                .map(|l| text_width(root, l, &label_style))
                .max()
                .unwrap_or(0)
        };
        let row_w = widest(&row_text);
        let col_w = widest(&col_text);
        let y_area = row_w + desc + 22;
        let margin = 8;
        let flat_area = LABEL_SIZE as i32 + desc + 22;
        let upright_area = col_w.min((f64::from(ah) * 0.3) as i32) + desc + 22;
        let room_w = aw as i32 - COLORBAR_W as i32 - y_area - 2 * margin;
        let room_h = |x_area: i32| ah as i32 - x_area - 2 * margin;
        // A square matrix (texts against texts) gets square cells, so that
        // its symmetry shows; other matrices fill the width.
        let plot_w = |x_area: i32| {
            if rows == cols {
                room_w.min(room_h(x_area)).max(1)
            } else {
                room_w.max(1)
            }
        };
        // Column labels lie flat when they fit their cell, else stand upright.
        let upright = f64::from(col_w) + 4.0 > f64::from(plot_w(flat_area)) / cols as f64;
        let x_area = if upright { upright_area } else { flat_area };
        let used_w = y_area + plot_w(x_area) + 2 * margin;
        let left_pad = ((room_w + y_area + 2 * margin - used_w) / 2).max(0);
        let (_, centred) = area.split_horizontally(left_pad);
        let (main, bar_area) = centred.split_horizontally(used_w);

        let mut chart = ChartBuilder::on(&main)
            .margin(margin)
            .x_label_area_size(x_area)
            .y_label_area_size(y_area)
            .build_cartesian_2d(CatAxis::new(cols, false), CatAxis::new(rows, true))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(chrome::one_line(&self.x_label))
            .y_desc(chrome::one_line(&self.y_label))
            .axis_desc_style(chrome::font(chrome::AXIS_DESC_SIZE))
            .draw()?;

        let xa = CatAxis::new(cols, false);
        let ya = CatAxis::new(rows, true);
        for (r, row) in self.colors.iter().enumerate() {
            let y0 = ya.slot(r);
            chart.draw_series(row.iter().enumerate().map(|(c, &v)| {
                let x0 = xa.slot(c);
                Rectangle::new([(x0, y0), (x0 + 1.0, y0 + 1.0)], self.color(v).filled())
            }))?;
        }

        let (px, py) = chart.plotting_area().get_pixel_range();
        let cell_w = f64::from(px.end - px.start) / cols as f64;
        let cell_h = f64::from(py.end - py.start) / rows as f64;

        // Values in the cells when there is room for them.
        let value_style = chrome::font(11.0);
        let texts: Vec<Vec<String>> = self
            .raw
            .iter()
            .map(|row| row.iter().map(|&v| format_number(v)).collect())
            .collect();
        let fits = cell_h >= 16.0
            && texts
                .iter()
                .flatten()
                .all(|t| f64::from(text_width(root, t, &value_style)) + 4.0 <= cell_w);
        if fits {
            for (r, row) in texts.iter().enumerate() {
                for (c, t) in row.iter().enumerate() {
                    let (x, y) = chart.backend_coord(&(xa.slot(c) + 0.5, ya.slot(r) + 0.5));
                    let bg = self.color(self.colors[r][c]);
                    let fg = if luminance(bg) < 0.5 { WHITE } else { BLACK };
                    root.draw(&Text::new(
                        t.clone(),
                        (x, y),
                        value_style
                            .color(&fg)
                            .pos(Pos::new(HPos::Center, VPos::Center)),
                    ))?;
                }
            }
        }

        let row_stride = label_stride(cell_h, LABEL_SIZE + 2.0);
        for (r, l) in row_text.iter().enumerate().step_by(row_stride) {
            let (_, y) = chart.backend_coord(&(0.0, ya.slot(r) + 0.5));
            root.draw(&Text::new(
                l.clone(),
                (px.start - 6, y),
                label_style.pos(Pos::new(HPos::Right, VPos::Center)),
            ))?;
        }
        let max_upright = (x_area - desc - 22).max(20);
        let col_stride = if upright {
            label_stride(cell_w, LABEL_SIZE + 2.0)
        } else {
            1
        };
        for (c, l) in col_text.iter().enumerate().step_by(col_stride) {
            let (x, _) = chart.backend_coord(&(xa.slot(c) + 0.5, 0.0));
            if upright {
                let text = fit_text(root, l, &label_style, max_upright);
                root.draw(&Text::new(
                    text,
                    (x, py.end + 6),
                    label_style
                        .transform(FontTransform::Rotate270)
                        .pos(Pos::new(HPos::Right, VPos::Center)),
                ))?;
            } else {
                root.draw(&Text::new(
                    l.clone(),
                    (x, py.end + 6),
                    label_style.pos(Pos::new(HPos::Center, VPos::Top)),
                ))?;
            }
        }
        if row_stride > 1 || col_stride > 1 {
            // Not a note under the title: it is a matter of space, not data.
            let what = match (row_stride > 1, col_stride > 1) {
                (true, true) => {
                    format!("one row label in {row_stride}, one column label in {col_stride} shown")
                }
                (true, false) => format!("one row label in {row_stride} shown"),
                _ => format!("one column label in {col_stride} shown"),
            };
            root.draw(&Text::new(
                format!("({what})"),
                (px.end, py.end + x_area - 4),
                chrome::grey_font(11.0).pos(Pos::new(HPos::Right, VPos::Bottom)),
            ))?;
        }

        let bar_left = bar_area.get_base_pixel().0 + 6;
        self.draw_colorbar(root, bar_left, py.start, py.end)?;
        Ok(())
    }
}

impl PreparedHeatmap {
    /// The colour scale, drawn by hand between the plot's `top` and `bottom`
    /// (backend pixels) so that its ticks line up with the cells' extent.
    fn draw_colorbar<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        left: i32,
        top: i32,
        bottom: i32,
    ) -> Result<(), FigureError>
    where
        DB::ErrorType: 'static,
    {
        let scale = NumAxis::linear(self.vmin, self.vmax);
        let (x0, x1) = (left, left + COLORBAR_STRIP);
        let height = f64::from((bottom - top).max(1));
        let at = |v: f64| bottom - (scale.fraction(v) * height).round() as i32;
        let steps = (bottom - top).clamp(1, 256);
        for k in 0..steps {
            let ya = bottom - ((k as f64 / steps as f64) * height).round() as i32;
            let yb = bottom - (((k + 1) as f64 / steps as f64) * height).round() as i32;
            let v = self.vmin + (self.vmax - self.vmin) * (k as f64 + 0.5) / steps as f64;
            root.draw(&Rectangle::new(
                [(x0, yb), (x1, ya)],
                self.color(v).filled(),
            ))?;
        }
        root.draw(&Rectangle::new(
            [(x0, top), (x1, bottom)],
            RGBColor(120, 120, 120).stroke_width(1),
        ))?;
        let tick_style = chrome::font(11.0).pos(Pos::new(HPos::Left, VPos::Center));
        let mut widest = 0;
        for &t in scale.major_ticks() {
            let y = at(t);
            root.draw(&PathElement::new(
                vec![(x1, y), (x1 + 4, y)],
                BLACK.stroke_width(1),
            ))?;
            let label = scale.label(t);
            widest = widest.max(text_width(root, &label, &tick_style));
            root.draw(&Text::new(label, (x1 + 7, y), tick_style.clone()))?;
        }
        if !self.color_label.is_empty() {
            let style = chrome::font(chrome::TICK_SIZE)
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Center, VPos::Top));
            let text = fit_text(root, &self.color_label, &style, bottom - top);
            root.draw(&Text::new(
                text,
                (x1 + 12 + widest, (top + bottom) / 2),
                style,
            ))?;
        }
        if self.has_nan {
            let y = bottom + 8;
            root.draw(&Rectangle::new(
                [(x0, y), (x0 + 12, y + 12)],
                NAN_COLOR.filled(),
            ))?;
            root.draw(&Text::new(
                "NaN".to_string(),
                (x0 + 16, y + 6),
                chrome::font(11.0).pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_maps_hit_their_ends_and_middle() {
        assert_eq!(interpolate(&VIRIDIS, 0.0), RGBColor(0x44, 0x01, 0x54));
        assert_eq!(interpolate(&VIRIDIS, 1.0), RGBColor(0xFD, 0xE7, 0x25));
        assert_eq!(interpolate(&DIVERGING, 0.5), RGBColor(0xF7, 0xF7, 0xF7));
        // Out-of-range and NaN positions do not panic.
        assert_eq!(interpolate(&VIRIDIS, 7.0), RGBColor(0xFD, 0xE7, 0x25));
        let _ = interpolate(&VIRIDIS, f64::NAN);
    }

    #[test]
    fn block_means_skip_nan_and_cover_ragged_edges() {
        let v = vec![
            vec![1.0, 2.0, 3.0],
            vec![3.0, f64::NAN, 5.0],
            vec![f64::NAN, f64::NAN, 7.0],
        ];
        let m = block_means(&v, 2, 2);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0], vec![2.0, 4.0]);
        assert!(m[1][0].is_nan());
        assert_eq!(m[1][1], 7.0);
    }

    #[test]
    fn stride_thins_labels_only_when_needed() {
        assert_eq!(label_stride(20.0, 14.0), 1);
        assert_eq!(label_stride(5.0, 14.0), 3);
        assert_eq!(label_stride(0.0, 14.0), 1);
    }
}
