//! What every figure shares: the embedded font, rendering one drawing to
//! both SVG and PNG, the title block with its notes, colours, and a legend
//! that goes where it hides the least data.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::FigureError;
use crate::raster::PngBackend;

/// Registered with plotters' ab_glyph renderer under this family name, which
/// is also what the SVG asks the viewer for.
pub(crate) const FONT: &str = "sans-serif";

pub(crate) static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

pub(crate) const TITLE_SIZE: f64 = 22.0;
pub(crate) const NOTE_SIZE: f64 = 13.0;
pub(crate) const AXIS_DESC_SIZE: f64 = 16.0;
pub(crate) const TICK_SIZE: f64 = 13.0;
pub(crate) const LEGEND_SIZE: f64 = 13.0;

/// Smallest canvas on which title, axes and legend still fit.
pub(crate) const MIN_WIDTH: u32 = 320;
pub(crate) const MIN_HEIGHT: u32 = 240;

/// At most this many note lines go under the title; the rest are summarised
/// there and listed in full in `Rendered::notes`.
const MAX_NOTE_LINES: usize = 4;

fn ensure_font() -> Result<(), FigureError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(FigureError::Internal(
            "the embedded DejaVu Sans font could not be parsed".into(),
        ))
    }
}

/// A figure laid out and checked, ready to be drawn on any backend.
pub(crate) trait Draw {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), FigureError>
    where
        DB::ErrorType: 'static;
}

/// Draws `figure` twice, once per backend, so SVG and PNG show the same thing.
pub(crate) fn render_both<D: Draw>(
    figure: &D,
    width: u32,
    height: u32,
) -> Result<(String, Vec<u8>), FigureError> {
    if width < MIN_WIDTH || height < MIN_HEIGHT {
        return Err(FigureError::TooSmall {
            width,
            height,
            min_width: MIN_WIDTH,
            min_height: MIN_HEIGHT,
        });
    }
    ensure_font()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        figure.draw(&root)?;
        root.present()?;
    }
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let root = PngBackend::new(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        figure.draw(&root)?;
        root.present()?;
    }
    let png = encode_png(&rgb, width, height)?;
    Ok((svg, png))
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, FigureError> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(rgb)?;
        writer.finish()?;
    }
    Ok(out)
}

pub(crate) fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).color(&BLACK)
}

pub(crate) fn grey_font(size: f64) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).color(&RGBColor(90, 90, 90))
}

/// Text as one line: control characters would make the SVG invalid XML and
/// line breaks are not rendered by plotters anyway.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// A token string made visible: line breaks, tabs and other control
/// characters become symbols, and leading/trailing spaces (which matter for
/// tokens) become middle dots.
pub(crate) fn visible_token(s: &str) -> String {
    let mapped: Vec<char> = s
        .chars()
        .filter(|&c| c != '\r')
        .map(|c| match c {
            '\n' => '↵',
            '\t' => '→',
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect();
    let lead = mapped.iter().take_while(|&&c| c == ' ').count();
    if lead == mapped.len() {
        return "·".repeat(mapped.len().clamp(1, 3));
    }
    let trail = mapped.iter().rev().take_while(|&&c| c == ' ').count();
    let mut out: String = "·".repeat(lead);
    out.extend(&mapped[lead..mapped.len() - trail]);
    out.push_str(&"·".repeat(trail));
    out
}

/// At most `max` characters, an ellipsis marking the cut.
pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub(crate) fn text_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
) -> i32 {
    area.estimate_text_size(text, style)
        .map(|(w, _)| w as i32)
        .unwrap_or((text.chars().count() as f64 * style.font.get_size() * 0.6) as i32)
}

/// Shortens `text` until it fits in `max_px`.
pub(crate) fn fit_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
    max_px: i32,
) -> String {
    if text_width(area, text, style) <= max_px {
        return text.to_string();
    }
    // Binary search on the number of characters kept: a pasted paragraph
    // as a title must not cost one measurement per character.
    let (mut fits, mut too_long) = (0usize, text.chars().count());
    while too_long - fits > 1 {
        let mid = (fits + too_long) / 2;
        if text_width(area, &truncate_chars(text, mid), style) <= max_px {
            fits = mid;
        } else {
            too_long = mid;
        }
    }
    if fits > 1 {
        return truncate_chars(text, fits);
    }
    "…".into()
}

/// Greedy word wrap to lines of at most `max_px`.
pub(crate) fn wrap_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
    max_px: i32,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if line.is_empty() || text_width(area, &candidate, style) <= max_px {
            line = candidate;
        } else {
            lines.push(std::mem::take(&mut line));
            line = word.to_string();
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
        .into_iter()
        .map(|l| fit_text(area, &l, style, max_px))
        .collect()
}

/// Draws the title and the notes under it; returns the area left below.
pub(crate) fn draw_header<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    notes: &[String],
) -> Result<DrawingArea<DB, Shift>, FigureError>
where
    DB::ErrorType: 'static,
{
    let (w, _) = root.dim_in_pixel();
    let max_px = w as i32 - 40;
    let mut y = 10;
    let title = one_line(title);
    if !title.is_empty() {
        let style = font(TITLE_SIZE).pos(Pos::new(HPos::Center, VPos::Top));
        let text = fit_text(root, &title, &style, max_px);
        root.draw(&Text::new(text, (w as i32 / 2, y), style))?;
        y += TITLE_SIZE as i32 + 8;
    }
    if !notes.is_empty() {
        let style = grey_font(NOTE_SIZE).pos(Pos::new(HPos::Center, VPos::Top));
        let mut lines = Vec::new();
        for note in notes {
            lines.extend(wrap_text(root, &one_line(note), &style, max_px));
        }
        if lines.len() > MAX_NOTE_LINES {
            let hidden = lines.len() - (MAX_NOTE_LINES - 1);
            lines.truncate(MAX_NOTE_LINES - 1);
            lines.push(format!("(+{hidden} more lines of notes)"));
        }
        for line in lines {
            root.draw(&Text::new(line, (w as i32 / 2, y), style.clone()))?;
            y += NOTE_SIZE as i32 + 4;
        }
    }
    Ok(root.split_vertically(y + 6).1)
}

/// Colour-blind-safe categorical colours (Okabe–Ito, without its yellow,
/// which vanishes on white, plus three from Tol's muted set).
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(136, 34, 85),
    RGBColor(68, 170, 153),
    RGBColor(153, 153, 51),
];

pub(crate) fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// The mark drawn in front of a legend label: any of a shaded band, a
/// line (solid or dashed) and a marker, as the series is drawn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Swatch {
    pub color: RGBColor,
    pub band: bool,
    pub line: Option<Dash>,
    pub marker: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dash {
    Solid,
    Dashed,
}

impl Swatch {
    pub(crate) fn line(color: RGBColor) -> Swatch {
        Swatch {
            color,
            band: false,
            line: Some(Dash::Solid),
            marker: false,
        }
    }

    pub(crate) fn marker(color: RGBColor) -> Swatch {
        Swatch {
            color,
            band: false,
            line: None,
            marker: true,
        }
    }

    pub(crate) fn band(color: RGBColor) -> Swatch {
        Swatch {
            color,
            band: true,
            line: None,
            marker: false,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LegendEntry {
    pub label: String,
    pub swatch: Swatch,
}

const SWATCH_W: i32 = 28;
const ROW_H: i32 = 20;
const PAD: i32 = 8;

/// Draws the legend in the corner of the plot (pixel ranges `px`, `py`)
/// that covers the fewest of the `occupied` points, given as fractions of
/// the plot (x to the right, y upwards).
pub(crate) fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    px: std::ops::Range<i32>,
    py: std::ops::Range<i32>,
    entries: &[LegendEntry],
    occupied: &[(f64, f64)],
) -> Result<(), FigureError>
where
    DB::ErrorType: 'static,
{
    if entries.is_empty() {
        return Ok(());
    }
    let style = font(LEGEND_SIZE).pos(Pos::new(HPos::Left, VPos::Center));
    let plot_w = px.end - px.start;
    let plot_h = py.end - py.start;
    let max_label = plot_w - SWATCH_W - 3 * PAD - 20;
    let labels: Vec<String> = entries
        .iter()
        .map(|e| fit_text(root, &one_line(&e.label), &style, max_label.max(40)))
        .collect();
    let text_w = labels
        .iter()
        .map(|l| text_width(root, l, &style))
        .max()
        .unwrap_or(0);
    let box_w = SWATCH_W + text_w + 3 * PAD;
    let box_h = ROW_H * entries.len() as i32 + PAD;
    let inset = 10;
    let left = px.start + inset;
    let right = px.end - inset - box_w;
    let top = py.start + inset;
    let bottom = py.end - inset - box_h;
    let centre = px.start + (plot_w - box_w) / 2;
    // Preference order on ties: where readers look for a legend first.
    let candidates = [
        (right, top),
        (left, top),
        (right, bottom),
        (left, bottom),
        (centre, top),
        (centre, bottom),
    ];
    let covered = |(x0, y0): (i32, i32)| {
        occupied
            .iter()
            .filter(|(fx, fy)| {
                let x = px.start as f64 + fx * plot_w as f64;
                let y = py.end as f64 - fy * plot_h as f64;
                x >= (x0 - 4) as f64
                    && x <= (x0 + box_w + 4) as f64
                    && y >= (y0 - 4) as f64
                    && y <= (y0 + box_h + 4) as f64
            })
            .count()
    };
    let mut best = candidates[0];
    let mut best_count = usize::MAX;
    for c in candidates {
        let n = covered(c);
        if n < best_count {
            best = c;
            best_count = n;
        }
    }
    let (x0, y0) = best;
    root.draw(&Rectangle::new(
        [(x0, y0), (x0 + box_w, y0 + box_h)],
        WHITE.mix(0.9).filled(),
    ))?;
    root.draw(&Rectangle::new(
        [(x0, y0), (x0 + box_w, y0 + box_h)],
        RGBColor(170, 170, 170).stroke_width(1),
    ))?;
    for (i, (entry, label)) in entries.iter().zip(labels).enumerate() {
        let cy = y0 + PAD / 2 + ROW_H * i as i32 + ROW_H / 2;
        let sx = x0 + PAD;
        draw_swatch(root, entry.swatch, sx, cy)?;
        root.draw(&Text::new(label, (sx + SWATCH_W + PAD, cy), style.clone()))?;
    }
    Ok(())
}

fn draw_swatch<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    swatch: Swatch,
    x: i32,
    cy: i32,
) -> Result<(), FigureError>
where
    DB::ErrorType: 'static,
{
    let c = swatch.color;
    if swatch.band {
        root.draw(&Rectangle::new(
            [(x, cy - 6), (x + SWATCH_W, cy + 6)],
            c.mix(BAND_ALPHA).filled(),
        ))?;
    }
    match swatch.line {
        Some(Dash::Solid) => {
            root.draw(&PathElement::new(
                vec![(x, cy), (x + SWATCH_W, cy)],
                c.stroke_width(2),
            ))?;
        }
        Some(Dash::Dashed) => {
            for piece in dash_polyline(&[(x, cy), (x + SWATCH_W, cy)]) {
                root.draw(&PathElement::new(piece, c.stroke_width(2)))?;
            }
        }
        None => {}
    }
    if swatch.marker {
        root.draw(&Circle::new((x + SWATCH_W / 2, cy), 4, c.filled()))?;
    }
    Ok(())
}

/// Opacity of confidence bands: light enough that overlapping bands of
/// several series stay distinguishable.
pub(crate) const BAND_ALPHA: f64 = 0.18;

/// Densifies a polyline given in plot fractions so that a legend box lying
/// across a line (but between its vertices) still counts as covering it.
pub(crate) fn sample_polyline(points: &[(f64, f64)], out: &mut Vec<(f64, f64)>) {
    out.extend_from_slice(points);
    for w in points.windows(2) {
        let (a, b) = (w[0], w[1]);
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        let steps = (len / 0.01).ceil().min(500.0) as usize;
        for k in 1..steps {
            let t = k as f64 / steps as f64;
            out.push((a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1)));
        }
    }
}

const DASH_PX: f64 = 7.0;
const GAP_PX: f64 = 5.0;

/// Cuts a polyline in backend pixels into dashes. The pattern runs on
/// across vertices, so short segments (a densely sampled curve) still show
/// dashes rather than a solid line.
pub(crate) fn dash_polyline(points: &[(i32, i32)]) -> Vec<Vec<(i32, i32)>> {
    let period = DASH_PX + GAP_PX;
    let mut out: Vec<Vec<(i32, i32)>> = Vec::new();
    let mut current: Vec<(i32, i32)> = Vec::new();
    // Distance travelled since the pattern started.
    let mut s = 0.0f64;
    let on = |s: f64| s.rem_euclid(period) < DASH_PX;
    let round = |x: f64, y: f64| (x.round() as i32, y.round() as i32);
    for w in points.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (dx, dy) = (f64::from(b.0 - a.0), f64::from(b.1 - a.1));
        let len = (dx * dx + dy * dy).sqrt();
        if len == 0.0 {
            continue;
        }
        let at = |t: f64| round(f64::from(a.0) + dx * t / len, f64::from(a.1) + dy * t / len);
        let mut t = 0.0;
        while t < len {
            // Next change of the pattern, or the end of this segment.
            let phase = s.rem_euclid(period);
            let to_switch = if phase < DASH_PX {
                DASH_PX - phase
            } else {
                period - phase
            };
            let step = to_switch.min(len - t).max(1e-9);
            if on(s) {
                if current.is_empty() {
                    current.push(at(t));
                }
                current.push(at(t + step));
            } else if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            t += step;
            s += step;
        }
    }
    if current.len() > 1 {
        out.push(current);
    }
    out.retain(|d| d.len() > 1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_made_visible() {
        assert_eq!(visible_token(" the"), "·the");
        assert_eq!(visible_token("\n\nHuman"), "↵↵Human");
        assert_eq!(visible_token("a\u{0}b"), "a\u{FFFD}b");
        assert_eq!(visible_token("  "), "··");
        assert_eq!(visible_token(""), "·");
        assert_eq!(one_line("two\nlines\u{7}"), "two lines");
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate_chars("abcdef", 4), "abc…");
        assert_eq!(truncate_chars("abc", 4), "abc");
        assert_eq!(truncate_chars("ééééé", 3), "éé…");
    }

    #[test]
    fn dashes_follow_the_pattern_across_vertices() {
        let d = dash_polyline(&[(0, 0), (100, 0)]);
        // 100 px at a 12 px period: 9 dashes, the last one partial.
        assert_eq!(d.len(), 9);
        assert_eq!(d[0], vec![(0, 0), (7, 0)]);
        assert_eq!(d[1], vec![(12, 0), (19, 0)]);
        // Many 2 px segments still dash (no segment is drawn solid).
        let wiggle: Vec<(i32, i32)> = (0..=50).map(|i| (2 * i, 0)).collect();
        let d = dash_polyline(&wiggle);
        assert_eq!(d.len(), 9);
        assert_eq!(d[1].first(), Some(&(12, 0)));
        assert_eq!(d[1].last(), Some(&(19, 0)));
        assert!(dash_polyline(&[(5, 5)]).is_empty());
        assert!(dash_polyline(&[(5, 5), (5, 5)]).is_empty());
    }
}
