//! Validation errors rendered for people: a plain `file:line:col: message`
//! line (what scripts and tests match on), the offending source with the span
//! underlined, and what would be valid.

use std::io::IsTerminal;

use lmgeo_dag::SpecErrors;
use lmgeo_dag::value::Origin;
use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource};

pub fn report(errors: &SpecErrors) {
    let terminal = std::io::stderr().is_terminal();
    let theme = if terminal {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
    for error in &errors.0 {
        eprintln!("error: {}: {}", error.location(), error.message);
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
                eprintln!("{rendered}");
                continue;
            }
        }
        if let Some(help) = &error.help {
            eprintln!("  help: {help}");
        }
    }
    let n = errors.0.len();
    eprintln!(
        "{n} error{} in the experiment; nothing was run",
        if n == 1 { "" } else { "s" }
    );
}
