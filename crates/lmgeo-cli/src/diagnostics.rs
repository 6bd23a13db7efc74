//! Validation errors rendered for people: a plain `file:line:col: message`
//! line (what scripts and tests match on), the offending source with the span
//! underlined, and what would be valid.

use std::fmt::Write as _;
use std::io::IsTerminal;

use lmgeo_dag::SpecErrors;
use lmgeo_dag::value::Origin;
use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource};

pub fn report(errors: &SpecErrors) {
    eprint!("{}", render(errors, std::io::stderr().is_terminal()));
}

/// What [`report`] prints, as text (`color` for a terminal). Public through
/// [`crate::render_spec_errors`] so the fuzz targets exercise the same
/// rendering as the command line.
pub fn render(errors: &SpecErrors, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
    let mut out = String::new();
    for error in &errors.0 {
        let _ = writeln!(out, "error: {}: {}", error.location(), error.message);
        if let Origin::File(span) = &error.origin
            && !error.file.text.is_empty()
        {
            let mut diagnostic = MietteDiagnostic::new(error.message.clone())
                .with_labels([LabeledSpan::at(span.clone(), "here")]);
            if let Some(help) = &error.help {
                diagnostic = diagnostic.with_help(help.clone());
            }
            let source = NamedSource::new(
                error.file.path.display().to_string(),
                error.file.text.to_string(),
            );
            let report = miette::Report::new(diagnostic).with_source_code(source);
            let mut rendered = String::new();
            if handler
                .render_report(&mut rendered, report.as_ref())
                .is_ok()
            {
                let _ = writeln!(out, "{rendered}");
                continue;
            }
        }
        if let Some(help) = &error.help {
            let _ = writeln!(out, "  help: {help}");
        }
    }
    let n = errors.0.len();
    let _ = writeln!(
        out,
        "{n} error{} in the experiment; nothing was run",
        if n == 1 { "" } else { "s" }
    );
    out
}
