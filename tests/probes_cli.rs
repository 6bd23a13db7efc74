//! Probe kinds through the binary on inputs whose answers are known from
//! mathematics: six orthonormal rows in R^16 (tests/fixtures, made by numpy).

mod common;

use std::path::Path;

use common::run_experiment;

/// (metric, stat, layer) -> value from results.csv.
fn metric(out: &Path, node: &str, metric: &str, stat: Option<&str>) -> f64 {
    let frame = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let mut lines = frame.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    for line in lines {
        // No quoted commas in these rows' leading columns; params (last) may
        // hold commas, so only look at the fields before it.
        let fields: Vec<&str> = line.split(',').collect();
        let node_ok = fields[col("node").unwrap()].trim_matches('"') == node;
        let metric_ok = fields[col("metric").unwrap()] == metric;
        let stat_ok = match (stat, col("stat")) {
            (Some(s), Some(c)) => fields[c] == s,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if node_ok && metric_ok && stat_ok {
            return fields[col("value").unwrap()].parse().unwrap();
        }
    }
    panic!("no {metric} ({stat:?}) for {node} in results.csv");
}

#[test]
fn entropy_and_information_gain_match_closed_forms() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("exact.toml");
    std::fs::write(
        &file,
        r#"
name = "exact"
[nodes.m]
kind = "load_matrix"
path = "tests/fixtures/orthonormal_6x16.npy"

[nodes.h]
kind = "entropy"
inputs = { embeddings = "m.embeddings" }
preprocess = "none"
eps = 0.5

[nodes.g]
kind = "info_gain"
inputs = { embeddings = "m.embeddings" }
preprocess = "none"
sigma = 0.1
"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    let run = run_experiment(&file, &tmp.path().join("store"), &out, &[]);
    assert!(run.success(), "{}", run.stderr());

    // Six orthonormal rows: the covariance has six eigenvalues 1/6.
    let (r, d, eps) = (6.0f64, 16.0f64, 0.5f64);
    let erank = metric(&out, "h", "effective_rank", Some("mean"));
    assert!((erank - r).abs() < 1e-5, "erank {erank}");
    let entropy = metric(&out, "h", "matrix_entropy", Some("mean"));
    assert!((entropy - r.ln()).abs() < 1e-6, "H {entropy}");
    let expected = r * (1.0 + d / (r * eps * eps)).ln() / (d * (1.0 + 1.0 / (eps * eps)).ln());
    let coding = metric(&out, "h", "normalised_coding_length", Some("mean"));
    assert!((coding - expected).abs() < 1e-6, "{coding} vs {expected}");

    // The last row is orthogonal to its context: posterior variance 1.
    let gain = metric(&out, "g", "information_gain", Some("mean"));
    let expected_gain = 0.5 * (1.0f64 + 1.0 / 0.01).ln();
    assert!(
        (gain - expected_gain).abs() < 1e-5,
        "{gain} vs {expected_gain}"
    );
    let difference = metric(&out, "g", "gp_ridge_relative_difference", Some("max"));
    assert!(
        difference < 1e-9,
        "GP and ridge routes differ by {difference}"
    );

    // The published per-text table is there and readable.
    assert!(out.join("nodes/h/per_text.parquet").is_file());
    assert!(out.join("report.html").is_file());
}
