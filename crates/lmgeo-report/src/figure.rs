//! Figure specifications: plain data in, SVG and PNG out.

use serde::{Deserialize, Serialize};

use crate::chrome::render_both;
use crate::error::FigureError;

/// Default canvas size in pixels (SVG user units and PNG pixels alike).
pub const DEFAULT_SIZE: (u32, u32) = (900, 560);

/// Curves against a common x: per-layer entropy per model, information gain
/// per position, removal curves with random-seed bands, overlap against k.
///
/// Points of each series are drawn in order of x. Non-finite values are
/// dropped and break the line there; on a log axis, so are non-positive
/// values. Each drop is stated under the title and in [`Rendered::notes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    pub y_log: bool,
    pub series: Vec<Series>,
}

/// One named curve of a [`LinePlot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// A shaded band, as `(x, lo, hi)`: a confidence interval, or the spread
    /// over random seeds.
    pub band: Option<Vec<(f64, f64, f64)>>,
    pub style: SeriesStyle,
}

impl Series {
    /// A series drawn as a line.
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
            band: None,
            style: SeriesStyle::Line,
        }
    }

    /// Adds a shaded band `(x, lo, hi)`.
    pub fn with_band(mut self, band: Vec<(f64, f64, f64)>) -> Series {
        self.band = Some(band);
        self
    }

    pub fn with_style(mut self, style: SeriesStyle) -> Series {
        self.style = style;
        self
    }
}

/// How a [`Series`] is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeriesStyle {
    Line,
    Points,
    LineAndPoints,
}

/// The scaling-law figure: one point per model, the fitted power law
/// `y = a x^b` over the range of x, and a band for the confidence interval
/// of `b`.
///
/// The band is the set of curves `y = a x_g^b (x / x_g)^b'` for `b'` in the
/// interval, where `x_g` is the geometric mean of the plotted x. A
/// least-squares line in log-log space passes through the mean of log x, so
/// the uncertainty of the slope alone pivots there; the band does not show
/// the (separate) uncertainty of `a`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScatterFit {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_log: bool,
    pub points: Vec<LabeledPoint>,
    pub fit: Option<PowerLawFit>,
}

/// A measured point with an optional symmetric error bar and a text label
/// (the model's name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabeledPoint {
    pub x: f64,
    pub y: f64,
    pub y_err: Option<f64>,
    pub label: String,
}

/// `y = a x^b`, its coefficient of determination (on the fitted scale) and
/// an optional confidence interval for `b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerLawFit {
    pub a: f64,
    pub b: f64,
    pub r2: f64,
    pub b_ci: Option<(f64, f64)>,
}

impl PowerLawFit {
    /// The value of the fitted law at `x`.
    pub fn eval(&self, x: f64) -> f64 {
        self.a * x.powf(self.b)
    }
}

/// A matrix of values as coloured cells: distance matrices between texts, or
/// tokens (columns) against selection methods (rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heatmap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// One per row of `values`, top to bottom; empty for row numbers.
    pub row_labels: Vec<String>,
    /// One per column; empty for column numbers. Tokens are shown with
    /// visible whitespace, rotated and shortened when they do not fit.
    pub col_labels: Vec<String>,
    /// Rows of equal length. NaN cells are drawn grey and counted in a note.
    pub values: Vec<Vec<f64>>,
    /// What the colour means (shown by the colour bar), e.g. "Bures distance".
    pub color_label: String,
    /// A diverging colour scale centred on zero (signed values such as
    /// differences); otherwise a sequential scale from min to max.
    pub symmetric: bool,
    /// Divide each row by its largest absolute value, so rows on different
    /// scales (Lasso |β| against attention weights) are each readable.
    pub normalize_rows: bool,
}

/// One bar: `(label, value, Some((lo, hi)))`, the error bar spanning lo to
/// hi (a confidence interval; it need not be symmetric).
pub type Bar = (String, f64, Option<(f64, f64)>);

/// Bars with optional error bars: e.g. ROC AUC per distance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub bars: Vec<Bar>,
    /// A dashed horizontal reference line with its label, e.g. chance level
    /// `(0.5, "chance")` for an AUC.
    pub reference: Option<(f64, String)>,
}

/// Any figure this crate draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Figure {
    Line(LinePlot),
    Scatter(ScatterFit),
    Heatmap(Heatmap),
    Bar(BarChart),
}

/// A rendered figure.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// A complete `<svg>` document (with a `viewBox`, so it scales).
    pub svg: String,
    /// PNG file bytes (8-bit RGB).
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// What was dropped, clipped or adjusted, also written under the title.
    pub notes: Vec<String>,
}

impl Figure {
    pub fn title(&self) -> &str {
        match self {
            Figure::Line(f) => &f.title,
            Figure::Scatter(f) => &f.title,
            Figure::Heatmap(f) => &f.title,
            Figure::Bar(f) => &f.title,
        }
    }

    /// Renders at [`DEFAULT_SIZE`].
    pub fn render(&self) -> Result<Rendered, FigureError> {
        self.render_sized(DEFAULT_SIZE.0, DEFAULT_SIZE.1)
    }

    /// Renders at `width` x `height` pixels.
    pub fn render_sized(&self, width: u32, height: u32) -> Result<Rendered, FigureError> {
        let (svg, png, notes) = match self {
            Figure::Line(f) => {
                let p = crate::line::prepare(f)?;
                let (svg, png) = render_both(&p, width, height)?;
                (svg, png, p.notes)
            }
            Figure::Scatter(f) => {
                let p = crate::scatter::prepare(f)?;
                let (svg, png) = render_both(&p, width, height)?;
                (svg, png, p.notes)
            }
            Figure::Heatmap(f) => {
                let p = crate::heatmap::prepare(f)?;
                let (svg, png) = render_both(&p, width, height)?;
                (svg, png, p.notes)
            }
            Figure::Bar(f) => {
                let p = crate::bar::prepare(f)?;
                let (svg, png) = render_both(&p, width, height)?;
                (svg, png, p.notes)
            }
        };
        Ok(Rendered {
            svg,
            png,
            width,
            height,
            notes,
        })
    }
}

impl From<LinePlot> for Figure {
    fn from(f: LinePlot) -> Self {
        Figure::Line(f)
    }
}

impl From<ScatterFit> for Figure {
    fn from(f: ScatterFit) -> Self {
        Figure::Scatter(f)
    }
}

impl From<Heatmap> for Figure {
    fn from(f: Heatmap) -> Self {
        Figure::Heatmap(f)
    }
}

impl From<BarChart> for Figure {
    fn from(f: BarChart) -> Self {
        Figure::Bar(f)
    }
}
