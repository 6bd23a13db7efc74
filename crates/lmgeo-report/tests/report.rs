//! Reports write a Markdown file with figure files beside it and a
//! self-contained HTML file, with all user text escaped.

mod common;

use std::path::Path;

use base64::Engine as _;
use common::{check_svg, decode_png};
use lmgeo_report::*;

const EVIL: &str = "<script>alert('x')</script>";

fn entropy_figure(title: &str) -> LinePlot {
    LinePlot {
        title: title.into(),
        x_label: "layer".into(),
        y_label: "entropy".into(),
        x_log: false,
        y_log: false,
        series: vec![Series::line(
            "pythia-70m",
            (0..7).map(|l| (l as f64, 0.5 + 0.01 * l as f64)).collect(),
        )],
    }
}

fn auc() -> BarChart {
    BarChart {
        title: "AUC".into(),
        y_label: "AUC".into(),
        bars: vec![
            ("Frobenius".into(), 0.6, Some((0.55, 0.65))),
            ("Bures".into(), f64::NAN, None),
        ],
        reference: Some((0.5, "chance".into())),
    }
}

fn sample() -> Report {
    Report::new(format!("Geometry report {EVIL}"))
        .intro(format!("First paragraph.\n\nSecond paragraph with {EVIL}."))
        .setting("model", "pythia-70m")
        .setting("digest", "blake3:abc123 | <tag>")
        .section(
            Section::new(
                "Entropy & scale",
                "Entropy follows a power law in model size.",
                Verdict::Supported,
                "R^2 = 0.97, b = -0.12 [-0.15, -0.09]",
            )
            .figure(NamedFigure::new(
                "entropy_layers",
                format!("Entropy per layer {EVIL}"),
                entropy_figure(&format!("Entropy {EVIL}")),
            ))
            .table(Table {
                columns: vec!["model".into(), "b".into(), "note".into()],
                rows: vec![
                    vec!["pythia-70m".into(), "-0.12".into(), "a | b".into()],
                    vec!["pythia-160m".into(), "-0.11".into(), EVIL.into()],
                ],
            })
            .note(format!("A note with {EVIL}")),
        )
        .section(
            Section::new(
                format!("Distances {EVIL}"),
                "Same-prompt pairs are closer than random pairs.",
                Verdict::Partly,
                "AUC 0.6",
            )
            .figure(NamedFigure::new("auc", "ROC AUC per distance.", auc())),
        )
        .section(Section::new(
            "Information gain",
            "Later tokens carry less new information.",
            Verdict::Inconclusive,
            "Not measured yet.",
        ))
}

/// Whether Markdown holds a `<script` that a renderer would take as HTML
/// (one not preceded by a backslash).
fn has_raw_tag(md: &str) -> bool {
    let lower = md.to_lowercase();
    lower
        .match_indices("<script")
        .any(|(i, _)| i == 0 || lower.as_bytes()[i - 1] != b'\\')
}

/// Unescaped `|` characters in a Markdown table line.
fn pipes(line: &str) -> usize {
    let mut n = 0;
    let mut escaped = false;
    for c in line.chars() {
        if c == '|' && !escaped {
            n += 1;
        }
        escaped = c == '\\' && !escaped;
    }
    n
}

#[test]
fn report_writes_markdown_html_and_figure_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let written = sample().write(&out).unwrap();
    assert_eq!(written.markdown, out.join("report.md"));
    assert_eq!(written.html, out.join("report.html"));
    for name in ["entropy_layers", "auc"] {
        let svg = std::fs::read_to_string(out.join(format!("figures/{name}.svg"))).unwrap();
        check_svg(&svg);
        let png = std::fs::read(out.join(format!("figures/{name}.png"))).unwrap();
        let img = decode_png(&png);
        assert_eq!((img.width, img.height), DEFAULT_SIZE);
        let json = std::fs::read_to_string(out.join(format!("figures/{name}.json"))).unwrap();
        let _: serde_json::Value = serde_json::from_str(&json).unwrap();
    }
    assert_eq!(written.figure_files.len(), 2 * 3);
    assert!(written.figure_files.iter().all(|p| p.exists()));
    // No temporary files are left behind.
    let leftovers: Vec<_> = walk(&out)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn markdown_references_the_figure_files_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let written = sample().write(dir.path()).unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    let mut referenced = 0;
    for part in md.split("](").skip(1) {
        let target = &part[..part.find(')').unwrap()];
        assert!(target.starts_with("figures/"), "{target}");
        assert!(dir.path().join(target).exists(), "{target} not written");
        referenced += 1;
    }
    // Each figure: image (SVG), PNG link, data link.
    assert_eq!(referenced, 2 * 3);
    for t in [
        "Entropy \\& scale",
        "Information gain",
        "Verdict: Partly supported",
    ] {
        assert!(md.contains(t), "missing {t:?}");
    }
    assert!(!has_raw_tag(&md), "raw HTML in Markdown");
    assert!(md.contains(r"\<script\>"));
    // The NaN bar's note is carried into the report.
    assert!(md.contains("Figure note: no value (NaN/infinite), shown as n/a: Bures"));
}

#[test]
fn markdown_tables_have_the_right_number_of_columns() {
    let md = sample().build().unwrap().markdown;
    let table_lines: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    // Summary (header, rule, 3 rows), settings (header, rule, 2 rows),
    // section table (header, rule, 2 rows).
    assert_eq!(table_lines.len(), 5 + 4 + 4);
    let section_table: Vec<&&str> = table_lines
        .iter()
        .skip_while(|l| !l.starts_with("| model | b |"))
        .collect();
    assert_eq!(section_table.len(), 4);
    for l in section_table {
        assert_eq!(pipes(l), 3 + 1, "wrong column count in {l:?}");
    }
    let settings = table_lines.iter().find(|l| l.contains("digest")).unwrap();
    assert_eq!(pipes(settings), 2 + 1, "{settings}");
}

#[test]
fn html_is_self_contained_and_has_every_section() {
    let built = sample().build().unwrap();
    let h = &built.html;
    assert!(h.starts_with("<!DOCTYPE html>"));
    for title in [
        "Entropy &amp; scale",
        "Distances &lt;script&gt;",
        "Information gain",
    ] {
        assert!(h.contains(title), "missing section title {title:?}");
    }
    // A table of contents linking every section, and one badge per verdict
    // in the contents and in each heading.
    for i in 1..=3 {
        assert!(h.contains(&format!("href=\"#sec-{i}\"")));
        assert!(h.contains(&format!("<section id=\"sec-{i}\">")));
    }
    assert_eq!(h.matches("class=\"badge supported\"").count(), 2);
    assert_eq!(h.matches("class=\"badge partly\"").count(), 2);
    assert_eq!(h.matches("class=\"badge inconclusive\"").count(), 2);
    // Both figures inline, nothing loaded from elsewhere.
    assert_eq!(h.matches("<svg").count(), 2);
    for external in [
        "src=\"http",
        "href=\"http",
        "<link",
        "url(",
        "@import",
        "figures/",
    ] {
        assert!(!h.contains(external), "external reference {external:?}");
    }
    // The settings and the table are there, escaped.
    assert!(h.contains("blake3:abc123 | &lt;tag&gt;"));
    assert!(h.contains("<td>a | b</td>"));
}

#[test]
fn user_text_cannot_inject_script() {
    let built = sample().build().unwrap();
    let lower = built.html.to_lowercase();
    assert!(!lower.contains("<script"), "unescaped <script> in HTML");
    // It is shown as text instead: title, intro, caption, figure title,
    // table cell, note.
    assert!(built.html.matches("&lt;script&gt;").count() >= 6);
    assert!(!has_raw_tag(&built.markdown));
}

#[test]
fn large_figures_are_embedded_as_png() {
    let n = 200;
    let big = Heatmap {
        title: "200 x 200 distances".into(),
        x_label: "text".into(),
        y_label: "text".into(),
        row_labels: vec![],
        col_labels: vec![],
        values: (0..n)
            .map(|i| (0..n).map(|j| ((i * j) % 17) as f64).collect())
            .collect(),
        color_label: "distance".into(),
        symmetric: false,
        normalize_rows: false,
    };
    let report = Report::new("big").section(
        Section::new("Distances", "claim", Verdict::Supported, "evidence")
            .figure(NamedFigure::new("big", "A large heatmap.", big)),
    );
    let built = report.build().unwrap();
    assert!(
        built.figures[0].1.svg.len() > 1_500_000,
        "test needs a large SVG"
    );
    assert_eq!(built.html.matches("<svg").count(), 0);
    let marker = "src=\"data:image/png;base64,";
    let start = built.html.find(marker).expect("embedded PNG") + marker.len();
    let end = built.html[start..].find('"').unwrap() + start;
    let png = base64::engine::general_purpose::STANDARD
        .decode(&built.html[start..end])
        .unwrap();
    assert_eq!(png, built.figures[0].1.png);
    assert!(decode_png(&png).distinct_colours() > 10);
}

#[test]
fn bad_figure_names_and_tables_fail_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let dup = Report::new("t").section(
        Section::new("s", "c", Verdict::Supported, "e")
            .figure(NamedFigure::new("fig", "a", entropy_figure("a")))
            .figure(NamedFigure::new("FIG", "b", entropy_figure("b"))),
    );
    let err = dup.write(&out).unwrap_err();
    assert!(
        matches!(err, ReportError::DuplicateFigureName(ref n) if n == "FIG"),
        "{err}"
    );
    assert!(!out.exists(), "files written despite the error");

    let bad = Report::new("t").section(
        Section::new("s", "c", Verdict::Supported, "e").figure(NamedFigure::new(
            "../escape",
            "a",
            entropy_figure("a"),
        )),
    );
    assert!(matches!(
        bad.write(&out),
        Err(ReportError::BadFigureName(_))
    ));

    let ragged = Report::new("t").section(Section::new("s", "c", Verdict::Supported, "e").table(
        Table {
            columns: vec!["a".into(), "b".into()],
            rows: vec![vec!["1".into()]],
        },
    ));
    match ragged.write(&out) {
        Err(ReportError::RaggedTable { got, expected, .. }) => assert_eq!((got, expected), (1, 2)),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!out.exists());
}

#[test]
fn figure_errors_name_the_section_and_figure() {
    let mut empty = entropy_figure("x");
    empty.series.clear();
    let report = Report::new("t").section(
        Section::new("Scaling", "c", Verdict::Supported, "e")
            .figure(NamedFigure::new("scaling", "cap", empty)),
    );
    let err = report.build().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("scaling") && msg.contains("Scaling"), "{msg}");
    assert!(matches!(
        err,
        ReportError::Figure {
            source: FigureError::NoData { .. },
            ..
        }
    ));
}

#[test]
fn output_is_deterministic() {
    let a = sample().build().unwrap();
    let b = sample().build().unwrap();
    assert_eq!(a.html, b.html);
    assert_eq!(a.markdown, b.markdown);
    assert_eq!(a.figures[0].1.png, b.figures[0].1.png);
}

#[test]
fn written_figure_data_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    sample().write(dir.path()).unwrap();
    let json = std::fs::read_to_string(dir.path().join("figures/entropy_layers.json")).unwrap();
    let fig: Figure = serde_json::from_str(&json).unwrap();
    assert_eq!(
        fig,
        Figure::from(entropy_figure(&format!("Entropy {EVIL}")))
    );
}
