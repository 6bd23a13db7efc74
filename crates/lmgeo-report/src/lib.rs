//! Figures and reports for lmgeo.
//!
//! Plain data in, files out: figure specifications ([`LinePlot`],
//! [`ScatterFit`], [`Heatmap`], [`BarChart`]) render to an SVG string and PNG
//! bytes, and a [`Report`] writes `report.md` and a self-contained
//! `report.html` with its figures. This crate never runs a model or a probe
//! and does not read result tables: callers hand it numbers.
//!
//! Bad data never panics: NaN and infinite values are dropped and the drop
//! is stated under the figure's title (and in [`Rendered::notes`]); log
//! axes drop non-positive values the same way; empty input is a
//! [`FigureError`].

mod axis;
mod bar;
mod error;
mod escape;
mod figure;
mod frame;
mod heatmap;
mod line;
mod raster;
mod report;
mod scatter;

pub use error::{FigureError, ReportError};
pub use figure::{
    Bar, BarChart, DEFAULT_SIZE, Figure, Heatmap, LabeledPoint, LinePlot, PowerLawFit, Rendered,
    ScatterFit, Series, SeriesStyle,
};
pub use report::{BuiltReport, NamedFigure, Report, Section, Table, Verdict, WrittenReport};
