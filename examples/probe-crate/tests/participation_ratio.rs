//! The example crate's binary runs its probe in an experiment, swept and
//! cached like a built-in, and gets the participation ratio that the
//! spectrum of a hand-built matrix dictates.

use std::path::Path;
use std::process::{Command, Output};

/// Writes a float64 `.npy` file (numpy's format, version 1.0).
fn write_npy(path: &Path, rows: &[Vec<f64>]) {
    let (n, d) = (rows.len(), rows[0].len());
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({n}, {d}), }}");
    // Magic (6) + version (2) + length (2) + header + newline is a multiple
    // of 64, as numpy writes it.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for row in rows {
        for v in row {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::write(path, bytes).unwrap();
}

fn lmgeo_pr(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lmgeo-pr"));
    // Its own folder: no ./plugins, no stray results.
    cmd.current_dir(dir).args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("LMGEO_") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("lmgeo-pr runs")
}

fn summary(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no summary; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
        .to_string()
}

#[test]
fn participation_ratio_runs_in_an_experiment_and_matches_the_spectrum() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // Rows ±a_k e_k + c e_4 (k = 1, 2, 3) in R^5. Centred, the covariance
    // has eigenvalues a_k²/3: (Σa²)² / Σa⁴ = 14² / 98 = 2. Uncentred, the
    // mean c e_4 adds an eigenvalue c²: with a = (1, 2, 3) and c = 1 the
    // spectrum is (1/3, 4/3, 3, 1), so (17/3)² / (107/9) = 289/107.
    let (a, c) = ([1.0, 2.0, 3.0], 1.0);
    let mut rows = Vec::new();
    for (k, ak) in a.iter().enumerate() {
        for sign in [1.0, -1.0] {
            let mut row = vec![0.0; 5];
            row[k] = sign * ak;
            row[3] = c;
            rows.push(row);
        }
    }
    write_npy(&dir.join("matrix.npy"), &rows);
    std::fs::write(
        dir.join("pr.toml"),
        r#"
name = "pr"
[nodes.m]
kind = "load_matrix"
path = "matrix.npy"

[nodes.pr]
kind = "participation_ratio"
inputs = { embeddings = "m.embeddings" }
grid = { center = [true, false] }
"#,
    )
    .unwrap();

    let kinds = lmgeo_pr(dir, &["kinds"]);
    let listed = String::from_utf8_lossy(&kinds.stdout);
    assert!(listed.contains("participation_ratio"), "{listed}");
    assert!(listed.contains("entropy"), "the built-in kinds are kept");

    let args = [
        "--store", "store", "run", "pr.toml", "--json", "--out", "out",
    ];
    let first = lmgeo_pr(dir, &args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(summary(&first).contains("\"ran\":3"), "{}", summary(&first));

    let records = lmgeo_tables::read_records(&dir.join("out/results.parquet")).unwrap();
    let value = |node: &str| -> f64 {
        let row = records
            .iter()
            .find(|r| {
                r.iter()
                    .any(|(k, v)| k == "node" && *v == lmgeo_tables::Cell::from(node))
                    && r.iter().any(|(k, v)| {
                        k == "metric" && *v == lmgeo_tables::Cell::from("participation_ratio")
                    })
            })
            .unwrap_or_else(|| panic!("no participation_ratio row for {node}"));
        match row.iter().find(|(k, _)| k == "value").unwrap().1 {
            lmgeo_tables::Cell::Float(x) => x,
            ref other => panic!("value {other:?}"),
        }
    };
    let centred = value("pr[center=true]");
    let uncentred = value("pr[center=false]");
    assert!((centred - 2.0).abs() < 1e-9, "centred {centred}");
    assert!(
        (uncentred - 289.0 / 107.0).abs() < 1e-9,
        "uncentred {uncentred}"
    );
    assert!(
        dir.join("out/nodes/pr[center=true]/per_text.parquet")
            .is_file()
    );

    let second = lmgeo_pr(dir, &args);
    assert!(second.status.success());
    assert!(
        summary(&second).contains("\"cached\":3"),
        "{}",
        summary(&second)
    );
}
