//! Error types. Figures and reports fail with a message that names the
//! figure and what is wrong with its data, never with a panic.

use std::path::PathBuf;

use plotters::drawing::DrawingAreaErrorKind;

/// Why a figure could not be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FigureError {
    /// The figure has no series, bars, points or cells at all.
    #[error("figure {title:?} has no data: {what}")]
    NoData { title: String, what: String },

    /// One series was given without any points.
    #[error("figure {title:?}: series {series:?} has no points")]
    EmptySeries { title: String, series: String },

    /// Every value was dropped (NaN, infinite, or non-positive on a log axis).
    #[error("figure {title:?}: nothing left to plot ({reason})")]
    NothingToPlot { title: String, reason: String },

    /// Heatmap rows of unequal length, or labels that do not match the data.
    #[error("heatmap {title:?}: {problem}")]
    Shape { title: String, problem: String },

    /// Values so extreme that the axis range overflows f64.
    #[error("values too extreme to draw: the axis range overflows f64")]
    RangeOverflow,

    /// Width or height too small to hold a figure.
    #[error("figure size {width}x{height} is too small (at least {min_width}x{min_height})")]
    TooSmall {
        width: u32,
        height: u32,
        min_width: u32,
        min_height: u32,
    },

    /// The drawing backend failed (a bug, or an out-of-memory condition).
    #[error("drawing failed: {0}")]
    Draw(String),

    /// PNG encoding failed.
    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),

    /// An invariant of this crate was broken; please report it.
    #[error("internal error in lmgeo-report: {0}")]
    Internal(String),
}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for FigureError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        FigureError::Draw(e.to_string())
    }
}

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// A figure failed to render.
    #[error("figure {name:?} in section {section:?}: {source}")]
    Figure {
        section: String,
        name: String,
        #[source]
        source: FigureError,
    },

    /// A figure name that is not usable as a file name.
    #[error(
        "figure name {0:?} is not a plain file name: use letters, digits, '-', '_' and '.', \
         not starting with '.'"
    )]
    BadFigureName(String),

    /// Two figures with the same name would overwrite each other's files.
    #[error("figure name {0:?} is used twice")]
    DuplicateFigureName(String),

    /// A table row with a different number of cells than columns.
    #[error("table in section {section:?}: row {row} has {got} cells, expected {expected}")]
    RaggedTable {
        section: String,
        row: usize,
        got: usize,
        expected: usize,
    },

    /// Writing a file failed.
    #[error("cannot write {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Serialising a figure's data failed.
    #[error("cannot serialise the data of figure {name:?}: {source}")]
    Json {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}
