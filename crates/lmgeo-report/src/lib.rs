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
//!
//! ```
//! use lmgeo_report::{Figure, LinePlot, NamedFigure, Report, Section, Series, Verdict};
//!
//! let plot = LinePlot {
//!     title: "Entropy per layer".into(),
//!     x_label: "layer".into(),
//!     y_label: "normalised coding length".into(),
//!     x_log: false,
//!     y_log: false,
//!     series: vec![Series::line("pythia-70m", vec![(0.0, 0.61), (1.0, f64::NAN), (2.0, 0.66)])],
//! };
//! let rendered = Figure::from(plot.clone()).render()?;
//! assert!(rendered.svg.starts_with("<svg"));
//! assert!(rendered.png.starts_with(b"\x89PNG"));
//! assert_eq!(rendered.notes.len(), 1); // the NaN point, dropped and noted
//!
//! let report = Report::new("lmgeo report")
//!     .intro("What was run, and what came out.")
//!     .setting("eps", "0.1")
//!     .section(
//!         Section::new(
//!             "Representation entropy",
//!             "Entropy varies across layers.",
//!             Verdict::Inconclusive,
//!             "One model only.",
//!         )
//!         .figure(NamedFigure::new("entropy", "Entropy per layer.", plot)),
//!     );
//! let dir = std::env::temp_dir().join(format!("lmgeo-report-doc-{}", std::process::id()));
//! let written = report.write(&dir)?;
//! assert!(written.html.exists() && dir.join("figures/entropy.png").exists());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Figures are 900 x 560 by default ([`DEFAULT_SIZE`]); text in PNGs uses the
//! embedded DejaVu Sans (`assets/`, Bitstream Vera licence), and the SVG asks
//! the viewer for `sans-serif`.

mod axis;
mod bar;
mod chrome;
mod error;
mod escape;
mod figure;
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
