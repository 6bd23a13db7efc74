//! Writes sample figures (and, later, a sample report) for a visual check:
//! `cargo run -p lmgeo-report --example samples -- /tmp/lmgeo-samples`.

use std::path::PathBuf;

use lmgeo_report::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "lmgeo-samples".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let figs = samples();
    for (name, fig) in &figs {
        let r = fig.render()?;
        std::fs::write(dir.join(format!("{name}.svg")), &r.svg)?;
        std::fs::write(dir.join(format!("{name}.png")), &r.png)?;
        for n in &r.notes {
            println!("{name}: note: {n}");
        }
    }
    let fig = |name: &str| {
        let (n, f) = figs
            .iter()
            .find(|(n, _)| *n == name)
            .expect("sample exists");
        NamedFigure::new(*n, format!("Sample figure {n}."), f.clone())
    };
    let report = Report::new("lmgeo: The Information of Large Language Model Geometry <regenerated>")
        .intro(
            "Synthetic numbers, for checking the layout only.\n\n\
             Each section states one claim of Tan, Li & Huang (2024), the verdict, and the evidence.",
        )
        .setting("models", "pythia-70m, pythia-160m, pythia-410m")
        .setting("model digest pythia-70m", "blake3:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
        .setting("eps", "0.1")
        .setting("lmgeo-report", env!("CARGO_PKG_VERSION"))
        .section(
            Section::new(
                "Entropy grows with model size",
                "Representation entropy follows a power law in the number of parameters.",
                Verdict::Supported,
                "R^2 = 0.93, b = -0.012 [-0.016, -0.008] over 9 models.",
            )
            .figure(fig("scatter_scaling"))
            .figure(fig("line_entropy"))
            .table(Table {
                columns: vec!["model".into(), "N".into(), "entropy".into()],
                rows: vec![
                    vec!["pythia-70m".into(), "7.0e7".into(), "0.725".into()],
                    vec!["pythia-160m | *dedup*".into(), "1.6e8".into(), "0.732".into()],
                ],
            })
            .note("Bootstrap over 2312 texts, 1000 resamples."),
        )
        .section(
            Section::new(
                "Information is spread over the context",
                "Removing the tokens chosen by Lasso or attention changes the output little more than removing random tokens.",
                Verdict::Partly,
                "At k = 10 the change is 0.073 (Lasso) and 0.079 (attention) against 0.057 [0.040, 0.074] for random tokens.",
            )
            .figure(fig("line_removal"))
            .figure(fig("heatmap_tokens")),
        )
        .section(
            Section::new(
                "Chosen and rejected answers are close <script>alert(1)</script>",
                "Matrix distances separate same-prompt pairs from random pairs.",
                Verdict::NotSupported,
                "AUC 0.60 to 0.88.",
            )
            .figure(fig("bar_auc"))
            .figure(fig("heatmap_distance")),
        )
        .section(Section::new(
            "Information gain per position",
            "The information gain of a new token decreases with its position.",
            Verdict::Inconclusive,
            "Only one layer measured.",
        )
        .figure(fig("line_ig_log")));
    let written = report.write(dir.join("report"))?;
    println!("{}", written.html.display());
    Ok(())
}

fn samples() -> Vec<(&'static str, Figure)> {
    let models = [
        ("pythia-70m", 6, 0.0),
        ("pythia-160m", 12, 0.05),
        ("pythia-410m", 24, 0.1),
    ];
    let entropy = LinePlot {
        title: "Representation entropy per layer".into(),
        x_label: "layer".into(),
        y_label: "normalised coding length".into(),
        x_log: false,
        y_log: false,
        series: models
            .iter()
            .map(|&(name, layers, off)| {
                let pts = (0..=layers)
                    .map(|l| {
                        let t = l as f64 / layers as f64;
                        (l as f64, 0.35 + off + 0.3 * (1.0 - (t - 0.6).powi(2)))
                    })
                    .collect();
                Series::line(name, pts).with_style(SeriesStyle::LineAndPoints)
            })
            .collect(),
    };
    let removal = LinePlot {
        title: "Change of the last hidden state after removing k tokens".into(),
        x_label: "k (tokens removed)".into(),
        y_label: "cosine distance".into(),
        x_log: false,
        y_log: false,
        series: vec![
            Series::line(
                "Lasso top-k",
                (1..=20)
                    .map(|k| (k as f64, 0.02 * (k as f64).sqrt() + 0.01))
                    .collect(),
            ),
            Series::line(
                "attention top-k",
                (1..=20)
                    .map(|k| (k as f64, 0.025 * (k as f64).sqrt()))
                    .collect(),
            ),
            Series::line(
                "random k (mean, 5–95% over 50 seeds)",
                (1..=20)
                    .map(|k| (k as f64, 0.018 * (k as f64).sqrt()))
                    .collect(),
            )
            .with_band(
                (1..=20)
                    .map(|k| {
                        let m = 0.018 * (k as f64).sqrt();
                        (k as f64, m * 0.7, m * 1.3)
                    })
                    .collect(),
            ),
        ],
    };
    let ig = LinePlot {
        title: "Information gain per position (log y, with a zero and a NaN)".into(),
        x_label: "position".into(),
        y_label: "IG (nats)".into(),
        x_log: false,
        y_log: true,
        series: vec![Series::line(
            "layer 6",
            (1..60)
                .map(|t| {
                    let y = if t == 17 {
                        0.0
                    } else if t == 30 {
                        f64::NAN
                    } else {
                        3.0 / (t as f64).sqrt()
                    };
                    (t as f64, y)
                })
                .collect(),
        )],
    };
    let sizes = [
        ("pythia-14m", 1.4e7),
        ("pythia-70m", 7.0e7),
        ("pythia-160m", 1.6e8),
        ("pythia-410m", 4.1e8),
        ("pythia-1b", 1.0e9),
        ("pythia-1.4b", 1.4e9),
        ("pythia-2.8b", 2.8e9),
        ("pythia-6.9b", 6.9e9),
        ("pythia-12b", 1.2e10),
    ];
    let scaling = ScatterFit {
        title: "Representation entropy against model size".into(),
        x_label: "parameters N".into(),
        y_label: "normalised coding length".into(),
        log_log: true,
        points: sizes
            .iter()
            .enumerate()
            .map(|(i, &(name, n))| LabeledPoint {
                x: n,
                y: 0.9 * n.powf(-0.012) * (1.0 + 0.01 * ((i * 7 % 5) as f64 - 2.0)),
                y_err: Some(0.004),
                label: name.into(),
            })
            .collect(),
        fit: Some(PowerLawFit {
            a: 0.9,
            b: -0.012,
            r2: 0.93,
            b_ci: Some((-0.016, -0.008)),
        }),
    };
    let names = [
        "Frobenius",
        "Bures–Wasserstein",
        "von Neumann relative entropy",
        "mean cosine",
        "mean Euclidean",
    ];
    let auc = BarChart {
        title: "Chosen/rejected pairs against random pairs: separation per distance".into(),
        y_label: "ROC AUC".into(),
        bars: names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.to_string(),
                    0.6 + 0.07 * i as f64,
                    Some((0.55 + 0.07 * i as f64, 0.65 + 0.07 * i as f64)),
                )
            })
            .collect(),
        reference: Some((0.5, "chance".into())),
    };
    let n = 24;
    let dist = Heatmap {
        title: "Bures distance between texts (chosen 0–11, rejected 12–23)".into(),
        x_label: "text".into(),
        y_label: "text".into(),
        row_labels: vec![],
        col_labels: vec![],
        values: (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        if i == j {
                            0.0
                        } else if i % 12 == j % 12 {
                            0.2
                        } else {
                            0.6 + 0.3 * (((i * 31 + j * 17) % 13) as f64 / 13.0)
                        }
                    })
                    .collect()
            })
            .collect(),
        color_label: "Bures distance".into(),
        symmetric: false,
        normalize_rows: false,
    };
    let tokens = [
        "\n\nHuman",
        ":",
        " What",
        " is",
        " the",
        " best",
        " way",
        " to",
        " make",
        " a",
        " cake",
        "?",
        "\n\nAssistant",
        ":",
        " You",
        " could",
        " start",
        " with",
        " flour",
        ",",
        " eggs",
        " and",
        " sugar",
        ".",
    ];
    let toks = Heatmap {
        title: "Which context tokens explain the last token (layer 6)".into(),
        x_label: "context token".into(),
        y_label: "method".into(),
        row_labels: vec!["Lasso |β|".into(), "attention (mean over heads)".into()],
        col_labels: tokens.iter().map(|t| t.to_string()).collect(),
        values: vec![
            (0..tokens.len())
                .map(|i| {
                    if i % 5 == 0 {
                        0.02 * i as f64
                    } else if i == 7 {
                        f64::NAN
                    } else {
                        0.0
                    }
                })
                .collect(),
            (0..tokens.len())
                .map(|i| 1.0 / (1.0 + (tokens.len() - i) as f64))
                .collect(),
        ],
        color_label: "weight".into(),
        symmetric: false,
        normalize_rows: true,
    };
    let diff = Heatmap {
        title: "Difference of distances (chosen-rejected minus random)".into(),
        x_label: "layer".into(),
        y_label: "model".into(),
        row_labels: sizes.iter().take(4).map(|s| s.0.to_string()).collect(),
        col_labels: (0..8).map(|l| l.to_string()).collect(),
        values: (0..4)
            .map(|m| {
                (0..8)
                    .map(|l| (l as f64 - 3.5) * 0.05 * (m + 1) as f64)
                    .collect()
            })
            .collect(),
        color_label: "Δ distance".into(),
        symmetric: true,
        normalize_rows: false,
    };
    vec![
        ("line_entropy", entropy.into()),
        ("line_removal", removal.into()),
        ("line_ig_log", ig.into()),
        ("scatter_scaling", scaling.into()),
        ("bar_auc", auc.into()),
        ("heatmap_distance", dist.into()),
        ("heatmap_tokens", toks.into()),
        ("heatmap_diverging", diff.into()),
        ("edge_single_point", LinePlot {
            title: "A single point".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_log: false,
            y_log: false,
            series: vec![Series::line("only", vec![(3.0, 0.5)])],
        }.into()),
        ("edge_many_series", LinePlot {
            title: "Twelve series, a very long title that goes on and on to test whether it gets shortened to fit the figure width".into(),
            x_label: "layer".into(),
            y_label: "value".into(),
            x_log: false,
            y_log: false,
            series: (0..12).map(|i| Series::line(format!("series {i}"), (0..10).map(|x| (x as f64, (x * (i + 1)) as f64)).collect())).collect(),
        }.into()),
        ("edge_scatter_log_zero", ScatterFit {
            title: "Scatter with bad points".into(),
            x_label: "N".into(),
            y_label: "y".into(),
            log_log: true,
            points: vec![
                LabeledPoint { x: 1e6, y: 0.0, y_err: None, label: "zero-y".into() },
                LabeledPoint { x: 1e7, y: 0.5, y_err: Some(0.6), label: "big error".into() },
                LabeledPoint { x: 1e8, y: 0.4, y_err: Some(f64::NAN), label: "nan error".into() },
                LabeledPoint { x: f64::NAN, y: 0.3, y_err: None, label: "nan x".into() },
                LabeledPoint { x: 1e9, y: 0.3, y_err: Some(0.01), label: "ok".into() },
            ],
            fit: Some(PowerLawFit { a: 2.0, b: -0.1, r2: f64::NAN, b_ci: Some((-0.05, -0.2)) }),
        }.into()),
        ("edge_bars_negative", BarChart {
            title: "Signed differences".into(),
            y_label: "Δ".into(),
            bars: vec![
                ("a".into(), -0.3, Some((-0.4, -0.2))),
                ("b".into(), 0.2, None),
                ("missing".into(), f64::NAN, None),
                ("d".into(), 0.05, Some((-0.05, 0.15))),
            ],
            reference: Some((0.0, "no difference".into())),
        }.into()),
        ("edge_heatmap_wide", Heatmap {
            title: "300 tokens".into(),
            x_label: "token".into(),
            y_label: "method".into(),
            row_labels: vec!["Lasso".into(), "attention".into()],
            col_labels: (0..300).map(|i| format!(" tok{i}")).collect(),
            values: vec![(0..300).map(|i| ((i * 7) % 11) as f64).collect(), (0..300).map(|i| i as f64).collect()],
            color_label: "weight".into(),
            symmetric: false,
            normalize_rows: true,
        }.into()),
    ]
}
