//! Reports: `report.md` with figure files beside it, and a self-contained
//! `report.html`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::ReportError;
use crate::escape::{html, md_cell, md_paragraphs, md_text};
use crate::figure::{Figure, Rendered};

/// An SVG larger than this is embedded in the HTML as its PNG instead: a
/// 200x200 distance matrix makes a multi-megabyte SVG that slows browsers,
/// while its PNG stays small.
const MAX_INLINE_SVG: usize = 1_500_000;

/// How far the evidence bears out the paper's claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Supported,
    Partly,
    NotSupported,
    Inconclusive,
}

impl Verdict {
    /// The words shown in the badge.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Supported => "Supported",
            Verdict::Partly => "Partly supported",
            Verdict::NotSupported => "Not supported",
            Verdict::Inconclusive => "Inconclusive",
        }
    }

    fn css_class(self) -> &'static str {
        match self {
            Verdict::Supported => "supported",
            Verdict::Partly => "partly",
            Verdict::NotSupported => "not-supported",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// A figure with the file name it is written under and its caption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedFigure {
    /// File stem: letters, digits, `-`, `_` and `.`, not starting with `.`;
    /// unique within the report.
    pub name: String,
    pub caption: String,
    pub figure: Figure,
}

impl NamedFigure {
    pub fn new(
        name: impl Into<String>,
        caption: impl Into<String>,
        figure: impl Into<Figure>,
    ) -> NamedFigure {
        NamedFigure {
            name: name.into(),
            caption: caption.into(),
            figure: figure.into(),
        }
    }
}

/// A table of preformatted cells; every row has one cell per column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// One claim of the paper and what the experiments say about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub title: String,
    /// The paper's claim, in one sentence.
    pub claim: String,
    pub verdict: Verdict,
    /// A plain statement with numbers, e.g. "R^2 = 0.97, b = -0.12 [-0.15, -0.09]".
    pub evidence: String,
    pub figures: Vec<NamedFigure>,
    pub table: Option<Table>,
    pub notes: Vec<String>,
}

impl Section {
    /// The output through which a node hands its section to the report
    /// (a JSON file of this type).
    pub const OUTPUT: &'static str = "section";

    pub fn new(
        title: impl Into<String>,
        claim: impl Into<String>,
        verdict: Verdict,
        evidence: impl Into<String>,
    ) -> Section {
        Section {
            title: title.into(),
            claim: claim.into(),
            verdict,
            evidence: evidence.into(),
            figures: Vec::new(),
            table: None,
            notes: Vec::new(),
        }
    }

    pub fn figure(mut self, figure: NamedFigure) -> Section {
        self.figures.push(figure);
        self
    }

    pub fn table(mut self, table: Table) -> Section {
        self.table = Some(table);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Section {
        self.notes.push(note.into());
        self
    }
}

/// A report: title, introduction, the exact settings, and one section per
/// claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub title: String,
    /// Paragraphs separated by blank lines.
    pub intro: String,
    /// Exact settings, model digests, software versions, in display order.
    pub settings: Vec<(String, String)>,
    pub sections: Vec<Section>,
}

/// A report rendered in memory.
#[derive(Debug, Clone)]
pub struct BuiltReport {
    /// `report.md`; figures referenced as `figures/<name>.svg` and `.png`.
    pub markdown: String,
    /// `report.html`, self-contained.
    pub html: String,
    /// Every figure, in report order, with its name.
    pub figures: Vec<(String, Rendered)>,
}

/// Paths of what [`Report::write`] wrote.
#[derive(Debug, Clone)]
pub struct WrittenReport {
    pub markdown: PathBuf,
    pub html: PathBuf,
    /// For each figure: its `.svg`, `.png` and `.json` (the figure's data).
    pub figure_files: Vec<PathBuf>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 120
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Report {
    pub fn new(title: impl Into<String>) -> Report {
        Report {
            title: title.into(),
            intro: String::new(),
            settings: Vec::new(),
            sections: Vec::new(),
        }
    }

    pub fn intro(mut self, text: impl Into<String>) -> Report {
        self.intro = text.into();
        self
    }

    pub fn setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Report {
        self.settings.push((key.into(), value.into()));
        self
    }

    pub fn section(mut self, section: Section) -> Report {
        self.sections.push(section);
        self
    }

    /// Checks names and tables before anything is rendered or written.
    fn validate(&self) -> Result<(), ReportError> {
        let mut seen = std::collections::HashSet::new();
        for s in &self.sections {
            for f in &s.figures {
                if !valid_name(&f.name) {
                    return Err(ReportError::BadFigureName(f.name.clone()));
                }
                // Case-insensitive: on macOS and Windows "A.svg" and "a.svg"
                // are the same file.
                if !seen.insert(f.name.to_ascii_lowercase()) {
                    return Err(ReportError::DuplicateFigureName(f.name.clone()));
                }
            }
            if let Some(t) = &s.table {
                for (i, row) in t.rows.iter().enumerate() {
                    if row.len() != t.columns.len() {
                        return Err(ReportError::RaggedTable {
                            section: s.title.clone(),
                            row: i,
                            got: row.len(),
                            expected: t.columns.len(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Renders every figure and both documents, in memory.
    pub fn build(&self) -> Result<BuiltReport, ReportError> {
        self.validate()?;
        let mut figures = Vec::new();
        for s in &self.sections {
            for f in &s.figures {
                let rendered = f.figure.render().map_err(|source| ReportError::Figure {
                    section: s.title.clone(),
                    name: f.name.clone(),
                    source,
                })?;
                figures.push((f.name.clone(), rendered));
            }
        }
        Ok(BuiltReport {
            markdown: self.markdown(&figures),
            html: self.html(&figures),
            figures,
        })
    }

    /// Writes `report.md`, `report.html` and `figures/` into `dir` (created
    /// if missing). Each file is written whole or not at all.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<WrittenReport, ReportError> {
        let dir = dir.as_ref();
        let built = self.build()?;
        let fig_dir = dir.join("figures");
        std::fs::create_dir_all(&fig_dir).map_err(|source| ReportError::Io {
            path: fig_dir.clone(),
            source,
        })?;
        let mut figure_files = Vec::new();
        let specs = self.sections.iter().flat_map(|s| &s.figures);
        for ((name, r), spec) in built.figures.iter().zip(specs) {
            let json =
                serde_json::to_string_pretty(&spec.figure).map_err(|source| ReportError::Json {
                    name: name.clone(),
                    source,
                })?;
            for (ext, bytes) in [
                ("svg", r.svg.as_bytes()),
                ("png", r.png.as_slice()),
                ("json", json.as_bytes()),
            ] {
                let path = fig_dir.join(format!("{name}.{ext}"));
                write_atomic(&path, bytes)?;
                figure_files.push(path);
            }
        }
        let markdown = dir.join("report.md");
        write_atomic(&markdown, built.markdown.as_bytes())?;
        let html = dir.join("report.html");
        write_atomic(&html, built.html.as_bytes())?;
        Ok(WrittenReport {
            markdown,
            html,
            figure_files,
        })
    }

    fn markdown(&self, figures: &[(String, Rendered)]) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# {}\n", md_text(&self.title));
        if !self.intro.trim().is_empty() {
            let _ = writeln!(md, "{}\n", md_paragraphs(&self.intro));
        }
        if !self.sections.is_empty() {
            md.push_str("## Summary\n\n| Section | Verdict |\n| --- | --- |\n");
            for (i, s) in self.sections.iter().enumerate() {
                let _ = writeln!(
                    md,
                    "| {}. {} | {} |",
                    i + 1,
                    md_cell(&s.title),
                    s.verdict.label()
                );
            }
            md.push('\n');
        }
        if !self.settings.is_empty() {
            md.push_str("## Settings\n\n| Setting | Value |\n| --- | --- |\n");
            for (k, v) in &self.settings {
                let _ = writeln!(md, "| {} | {} |", md_cell(k), md_cell(v));
            }
            md.push('\n');
        }
        let mut fig_no = 0;
        let mut rendered = figures.iter();
        for (i, s) in self.sections.iter().enumerate() {
            let _ = writeln!(md, "## {}. {}\n", i + 1, md_text(&s.title));
            let _ = writeln!(md, "**Verdict: {}**\n", s.verdict.label());
            let _ = writeln!(md, "**Claim.** {}\n", md_paragraphs(&s.claim));
            let _ = writeln!(md, "**Evidence.** {}\n", md_paragraphs(&s.evidence));
            for f in &s.figures {
                fig_no += 1;
                let notes = rendered
                    .next()
                    .map(|(_, r)| r.notes.as_slice())
                    .unwrap_or(&[]);
                let _ = writeln!(
                    md,
                    "![{}](figures/{}.svg)\n\n*Figure {fig_no}: {}* ([PNG](figures/{}.png), [data](figures/{}.json))\n",
                    md_text(&f.caption),
                    f.name,
                    md_text(&f.caption),
                    f.name,
                    f.name
                );
                for n in notes {
                    let _ = writeln!(md, "> Figure note: {}\n", md_text(n));
                }
            }
            if let Some(t) = &s.table {
                md.push_str(&md_table(t));
                md.push('\n');
            }
            if !s.notes.is_empty() {
                md.push_str("Notes:\n\n");
                for n in &s.notes {
                    let _ = writeln!(md, "- {}", md_text(n));
                }
                md.push('\n');
            }
        }
        md
    }

    fn html(&self, figures: &[(String, Rendered)]) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<main>\n",
            html(&self.title)
        );
        let _ = writeln!(h, "<h1>{}</h1>", html(&self.title));
        for p in paragraphs(&self.intro) {
            let _ = writeln!(h, "<p class=\"intro\">{}</p>", html(&p));
        }

        h.push_str("<nav class=\"toc\">\n<h2>Contents</h2>\n");
        // Settings stay out of the numbered list, so its numbers match the
        // section headings.
        if !self.settings.is_empty() {
            h.push_str("<p><a href=\"#settings\">Settings</a></p>\n");
        }
        h.push_str("<ol>\n");
        for (i, s) in self.sections.iter().enumerate() {
            let _ = writeln!(
                h,
                "<li><a href=\"#sec-{}\">{}</a> {}</li>",
                i + 1,
                html(&s.title),
                badge(s.verdict)
            );
        }
        h.push_str("</ol>\n</nav>\n");

        if !self.settings.is_empty() {
            h.push_str(
                "<section id=\"settings\">\n<h2>Settings</h2>\n<table class=\"settings\">\n<tbody>\n",
            );
            for (k, v) in &self.settings {
                let _ = writeln!(
                    h,
                    "<tr><th scope=\"row\">{}</th><td><code>{}</code></td></tr>",
                    html(k),
                    html(v)
                );
            }
            h.push_str("</tbody>\n</table>\n</section>\n");
        }

        let mut fig_no = 0;
        let mut rendered = figures.iter();
        for (i, s) in self.sections.iter().enumerate() {
            let _ = writeln!(
                h,
                "<section id=\"sec-{n}\">\n<h2>{n}. {} {}</h2>",
                html(&s.title),
                badge(s.verdict),
                n = i + 1
            );
            let _ = writeln!(
                h,
                "<p class=\"claim\"><strong>Claim.</strong> {}</p>",
                html(&s.claim)
            );
            let _ = writeln!(
                h,
                "<p class=\"evidence\"><strong>Evidence.</strong> {}</p>",
                html(&s.evidence)
            );
            for f in &s.figures {
                fig_no += 1;
                let Some((_, r)) = rendered.next() else {
                    break;
                };
                let _ = writeln!(
                    h,
                    "<figure id=\"fig-{}\">\n<div class=\"plot\">",
                    html(&f.name)
                );
                if r.svg.len() <= MAX_INLINE_SVG {
                    h.push_str(&r.svg);
                } else {
                    let _ = write!(
                        h,
                        "<img alt=\"{}\" width=\"{}\" height=\"{}\" src=\"data:image/png;base64,{}\">",
                        html(&f.caption),
                        r.width,
                        r.height,
                        base64::engine::general_purpose::STANDARD.encode(&r.png)
                    );
                }
                let _ = writeln!(
                    h,
                    "</div>\n<figcaption><strong>Figure {fig_no}.</strong> {}</figcaption>",
                    html(&f.caption)
                );
                if !r.notes.is_empty() {
                    h.push_str("<ul class=\"figure-notes\">\n");
                    for n in &r.notes {
                        let _ = writeln!(h, "<li>{}</li>", html(n));
                    }
                    h.push_str("</ul>\n");
                }
                h.push_str("</figure>\n");
            }
            if let Some(t) = &s.table {
                h.push_str("<table class=\"data\">\n<thead><tr>");
                for c in &t.columns {
                    let _ = write!(h, "<th scope=\"col\">{}</th>", html(c));
                }
                h.push_str("</tr></thead>\n<tbody>\n");
                for row in &t.rows {
                    h.push_str("<tr>");
                    for c in row {
                        let _ = write!(h, "<td>{}</td>", html(c));
                    }
                    h.push_str("</tr>\n");
                }
                h.push_str("</tbody>\n</table>\n");
            }
            if !s.notes.is_empty() {
                h.push_str("<ul class=\"notes\">\n");
                for n in &s.notes {
                    let _ = writeln!(h, "<li>{}</li>", html(n));
                }
                h.push_str("</ul>\n");
            }
            h.push_str("</section>\n");
        }
        let _ = write!(
            h,
            "<footer>Generated by lmgeo-report {}.</footer>\n</main>\n</body>\n</html>\n",
            env!("CARGO_PKG_VERSION")
        );
        h
    }
}

fn badge(v: Verdict) -> String {
    format!(
        "<span class=\"badge {}\">{}</span>",
        v.css_class(),
        v.label()
    )
}

/// Paragraphs of a text, split on blank lines, each on one line.
fn paragraphs(text: &str) -> Vec<String> {
    let text = text.replace("\r\n", "\n");
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect()
}

fn md_table(t: &Table) -> String {
    let mut out = String::new();
    let row = |cells: &[String]| {
        let inner: Vec<String> = cells.iter().map(|c| md_cell(c)).collect();
        format!("| {} |\n", inner.join(" | "))
    };
    if t.columns.is_empty() {
        return out;
    }
    out.push_str(&row(&t.columns));
    out.push_str(&format!("|{}\n", " --- |".repeat(t.columns.len())));
    for r in &t.rows {
        out.push_str(&row(r));
    }
    out
}

/// Writes through a temporary file in the same folder and renames it, so a
/// crash never leaves a half-written report behind.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let io = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

const CSS: &str = r#"body { margin: 0; background: #fafafa; color: #1f2328;
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
main { max-width: 980px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 1.9em; margin: 0.4em 0 0.5em; }
h2 { font-size: 1.35em; margin-top: 2em; padding-bottom: 0.25em; border-bottom: 1px solid #d8dee4; }
section { scroll-margin-top: 12px; }
p.intro { color: #3a3f45; }
nav.toc { background: #f6f8fa; border: 1px solid #d8dee4; border-radius: 6px; padding: 4px 18px 10px; }
nav.toc h2 { border: 0; margin-top: 0.6em; font-size: 1.1em; }
nav.toc li { margin: 4px 0; }
nav.toc p { margin: 6px 0; }
nav.toc a { color: #0550ae; text-decoration: none; }
.badge { display: inline-block; font-size: 0.72em; font-weight: 600; vertical-align: middle;
  padding: 2px 9px; border-radius: 999px; border: 1px solid; letter-spacing: 0.02em; }
.badge.supported { color: #116329; background: #dafbe1; border-color: #4ac26b; }
.badge.partly { color: #7d4e00; background: #fff8c5; border-color: #d4a72c; }
.badge.not-supported { color: #a40e26; background: #ffebe9; border-color: #ff8182; }
.badge.inconclusive { color: #424a53; background: #eaeef2; border-color: #afb8c1; }
p.claim, p.evidence { margin: 0.6em 0; }
p.evidence { font-variant-numeric: tabular-nums; }
figure { margin: 1.4em 0; }
figure .plot svg, figure .plot img { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 0.92em; color: #3a3f45; margin-top: 6px; }
ul.figure-notes { font-size: 0.85em; color: #6e7781; margin: 4px 0 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #d8dee4; padding: 4px 10px; text-align: left; vertical-align: top; }
thead th { background: #f6f8fa; }
table.data td { font-variant-numeric: tabular-nums; }
table.settings th { background: #f6f8fa; font-weight: 600; white-space: nowrap; }
code { font: 0.88em/1.4 ui-monospace, "DejaVu Sans Mono", monospace; word-break: break-all; }
ul.notes { color: #3a3f45; }
footer { margin-top: 3em; font-size: 0.85em; color: #6e7781; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_names_must_be_plain_file_names() {
        for good in ["entropy_per_layer", "fig-1", "a.b"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", ".hidden", "../x", "a/b", "a b", "ä", "a\\b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn paragraphs_split_on_blank_lines() {
        assert_eq!(
            paragraphs("one\ntwo\r\n\r\nthree\n\n\n"),
            vec!["one two".to_string(), "three".to_string()]
        );
    }
}
