//! The representation-geometry kinds (`layer_similarity`, `geometry`) end to
//! end on the tiny GPT-NeoX over 24 built-in texts, checked where mathematics
//! fixes the answer: a layer compared with itself has CKA 1 and mutual k-NN
//! 1, Procrustes distance 0, and is its own best match; Renyi entropy of
//! order 1 is the `entropy` kind's matrix entropy; a shuffled pairing of a
//! layer with itself is never as aligned as the true one.

mod common;

use common::run_experiment;
use lmgeo_tables::DataFrame;

const PIPELINE: &str = r#"
name = "tiny-geometry"
[nodes.texts]
kind = "corpus"
format = "builtin"
n = 24
seed = 3

[nodes.hidden]
kind = "extract"
inputs = { texts = "texts.texts" }
model = "tests/fixtures/tiny-neox"
max_tokens = 32

[nodes.similarity]
kind = "layer_similarity"
inputs = { a = "hidden.embeddings", b = "hidden.embeddings" }
measures = ["linear_cka", "mutual_knn", "procrustes", "unbiased_cka"]
k = 5
bootstrap = 20
permutations = 19

[nodes.geometry]
kind = "geometry"
inputs = { embeddings = "hidden.embeddings" }
alphas = [1.0, 2.0]
bootstrap = 10

[nodes.entropy]
kind = "entropy"
inputs = { embeddings = "hidden.embeddings" }
"#;

fn column_f64(frame: &DataFrame, name: &str) -> Vec<Option<f64>> {
    let c = frame.column(name).unwrap().f64().unwrap().clone();
    (0..c.len()).map(|i| c.get(i)).collect()
}

fn column_i64(frame: &DataFrame, name: &str) -> Vec<i64> {
    let c = frame.column(name).unwrap().i64().unwrap().clone();
    (0..c.len()).map(|i| c.get(i).unwrap()).collect()
}

fn column_str(frame: &DataFrame, name: &str) -> Vec<String> {
    let c = frame.column(name).unwrap().str().unwrap().clone();
    (0..c.len())
        .map(|i| c.get(i).unwrap().to_string())
        .collect()
}

#[test]
fn geometry_kinds_run_and_agree_with_mathematics() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("geometry.toml");
    std::fs::write(&file, PIPELINE).unwrap();
    let out = tmp.path().join("out");
    let run = run_experiment(&file, &tmp.path().join("store"), &out, &[]);
    assert!(run.success(), "{}", run.stderr());

    let matrix = lmgeo_tables::read_parquet(&out.join("nodes/similarity/matrix.parquet")).unwrap();
    let (la, lb) = (
        column_i64(&matrix, "layer_a"),
        column_i64(&matrix, "layer_b"),
    );
    let measure = column_str(&matrix, "measure");
    let value = column_f64(&matrix, "value");
    let (lo, hi, p) = (
        column_f64(&matrix, "ci_lower"),
        column_f64(&matrix, "ci_upper"),
        column_f64(&matrix, "p_value"),
    );
    // Embeddings and 3 blocks, every pair, four measures.
    assert_eq!(matrix.height(), 4 * 4 * 4);
    for i in 0..matrix.height() {
        let v = value[i].unwrap();
        let (l, u, pv) = (lo[i].unwrap(), hi[i].unwrap(), p[i].unwrap());
        assert!(l <= u, "row {i}: interval [{l}, {u}]");
        assert!(pv > 0.0 && pv <= 1.0, "row {i}: p = {pv}");
        if la[i] == lb[i] {
            match measure[i].as_str() {
                "procrustes" => assert!(v.abs() < 1e-9, "row {i}: {v}"),
                _ => assert!(
                    (v - 1.0).abs() < 1e-9,
                    "{} of a layer with itself: {v}",
                    measure[i]
                ),
            }
            // The identity pairing beats every shuffle: p = 1 / (1 + 19).
            assert!((pv - 0.05).abs() < 1e-12, "row {i}: p = {pv}");
        } else if measure[i] == "linear_cka" {
            assert!((0.0..=1.0 + 1e-12).contains(&v), "CKA {v}");
        }
    }

    let per_text =
        lmgeo_tables::read_parquet(&out.join("nodes/geometry/per_text.parquet")).unwrap();
    let entropy = lmgeo_tables::read_parquet(&out.join("nodes/entropy/per_text.parquet")).unwrap();
    let renyi = column_f64(&per_text, "renyi_entropy_alpha_1");
    let renyi2 = column_f64(&per_text, "renyi_entropy_alpha_2");
    let vn = column_f64(&entropy, "matrix_entropy");
    assert_eq!(
        (
            column_str(&per_text, "text_id"),
            column_i64(&per_text, "layer")
        ),
        (
            column_str(&entropy, "text_id"),
            column_i64(&entropy, "layer")
        )
    );
    for i in 0..renyi.len() {
        let (h1, h2, h) = (renyi[i].unwrap(), renyi2[i].unwrap(), vn[i].unwrap());
        assert!(
            (h1 - h).abs() <= 1e-9 * h.abs().max(1.0),
            "row {i}: {h1} vs {h}"
        );
        // Renyi entropy does not increase with its order.
        assert!(h2 <= h1 + 1e-12, "row {i}: alpha 2 {h2} above alpha 1 {h1}");
    }
    let per_layer =
        lmgeo_tables::read_parquet(&out.join("nodes/geometry/per_layer.parquet")).unwrap();
    let names = column_str(&per_layer, "measure");
    let linearity_layers = names.iter().filter(|n| *n == "linearity_to_next").count();
    assert_eq!(linearity_layers, 3, "one step between each of the 4 layers");
    let values = column_f64(&per_layer, "value");
    for (name, v) in names.iter().zip(&values) {
        let v = v.unwrap();
        match name.as_str() {
            "rankme" => assert!((1.0..=24.0).contains(&v), "RankMe {v}"),
            // Hundreds of stacked tokens against 64 dimensions: a real fit.
            "linearity_to_next" => assert!((0.0..=1.0 + 1e-9).contains(&v), "linearity {v}"),
            _ => assert!(v.is_finite() && v > 0.0, "{name} {v}"),
        }
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Layer similarity"), "{report}");
}

/// Mismatched text sets, and k not below the number of texts, are errors
/// that say what to change.
#[test]
fn layer_similarity_bad_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("geometry.toml");
    let other = PIPELINE
        .replace(
            "[nodes.similarity]",
            "[nodes.texts2]\nkind = \"corpus\"\nformat = \"builtin\"\nn = 20\nseed = 3\n\n\
         [nodes.hidden2]\nkind = \"extract\"\ninputs = { texts = \"texts2.texts\" }\n\
         model = \"tests/fixtures/tiny-neox\"\nmax_tokens = 32\n\n[nodes.similarity]",
        )
        .replace(
            "b = \"hidden.embeddings\" }",
            "b = \"hidden2.embeddings\" }",
        );
    std::fs::write(&file, &other).unwrap();
    let run = run_experiment(
        &file,
        &tmp.path().join("store"),
        &tmp.path().join("out"),
        &[],
    );
    assert!(!run.success());
    assert!(
        run.stderr().contains("must hold the same texts"),
        "{}",
        run.stderr()
    );

    std::fs::write(&file, PIPELINE.replace("k = 5", "k = 24")).unwrap();
    let run = run_experiment(
        &file,
        &tmp.path().join("store"),
        &tmp.path().join("out2"),
        &[],
    );
    assert!(!run.success());
    assert!(run.stderr().contains("lower `k`"), "{}", run.stderr());
}

/// The texts, the extraction and the `similarity` node of [`PIPELINE`].
fn pipeline_until_similarity() -> &'static str {
    PIPELINE.split("[nodes.geometry]").next().unwrap()
}

/// With room for about three layers at a time (the tiny model's pooled
/// layer is 6 KiB: groups of two layers of `a` against one of `b`),
/// `layer_similarity` takes the layers group by group and reads the tables
/// again for each; the matrix, rows in order, must be the one-pass one.
#[test]
fn layer_similarity_in_layer_groups_matches_one_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("similarity.toml");
    let until_similarity = pipeline_until_similarity();
    std::fs::write(&file, until_similarity).unwrap();
    let matrix = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        // A store each: the budget is not part of the key, so a shared store
        // would serve the second run from the first.
        let run = run_experiment(
            &file,
            &tmp.path().join(format!("{name}-store")),
            &out,
            extra,
        );
        assert!(run.success(), "{}", run.stderr());
        lmgeo_tables::read_parquet(&out.join("nodes/similarity/matrix.parquet")).unwrap()
    };
    let whole = matrix("whole", &[]);
    let grouped = matrix("grouped", &["--set", "similarity.max_pooled_mib=0.019"]);
    assert_eq!(whole.height(), 4 * 4 * 4);
    assert!(whole.equals_missing(&grouped), "{whole}\n{grouped}");
}

/// Two nodes that differ only in a setting outside the key share one cached
/// result, report section included (whichever of the two computed it names
/// the figures); the report still gets both, each named after its own node.
#[test]
fn nodes_sharing_one_result_publish_distinct_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("twice.toml");
    let until_similarity = pipeline_until_similarity();
    let similarity = until_similarity.split("[nodes.similarity]").nth(1).unwrap();
    std::fs::write(
        &file,
        format!("{until_similarity}\n[nodes.again]{similarity}max_pooled_mib = 64\n"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let run = run_experiment(&file, &tmp.path().join("store"), &out, &[]);
    assert!(run.success(), "{}", run.stderr());
    let figures: Vec<String> = std::fs::read_dir(out.join("figures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".svg"))
        .collect();
    for wanted in ["similarity-matrix.svg", "again-matrix.svg"] {
        assert!(
            figures.iter().any(|f| f == wanted),
            "{wanted} in {figures:?}"
        );
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for title in ["Layer similarity (similarity)", "Layer similarity (again)"] {
        assert!(report.contains(title), "{title} in {report}");
    }
}
