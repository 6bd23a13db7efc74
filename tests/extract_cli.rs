//! Extraction end to end: a tiny GPT-NeoX (tests/fixtures/tiny-neox, made by
//! scripts/golden/e2e_neox.py with transformers) over a small corpus,
//! extract → entropy → results, checked against the entropies the script
//! computed with numpy from transformers' hidden states; and an extraction
//! interrupted with SIGINT that resumes from its stored pieces.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::run_experiment;

const PIPELINE: &str = r#"
name = "tiny-extract"
[nodes.texts]
kind = "corpus"
format = "jsonl"
path = "tests/fixtures/tiny-corpus.jsonl"
name = "tiny"
id_field = "id"

[nodes.hidden]
kind = "extract"
inputs = { texts = "texts.texts" }
model = "tests/fixtures/tiny-neox"
final_norm = true
attention = "last"
chunk_texts = 2

[nodes.entropy]
kind = "entropy"
inputs = { embeddings = "hidden.embeddings" }
eps = 0.1
"#;

#[test]
fn extract_then_entropy_matches_transformers_and_numpy() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("pipeline.toml");
    std::fs::write(&file, PIPELINE).unwrap();
    let out = tmp.path().join("out");
    let run = run_experiment(&file, &tmp.path().join("store"), &out, &[]);
    assert!(run.success(), "{}", run.stderr());

    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/tiny-neox/golden.json").unwrap(),
    )
    .unwrap();
    let frame = lmgeo_tables::read_parquet(&out.join("nodes/entropy/per_text.parquet")).unwrap();
    let ids = frame.column("text_id").unwrap().str().unwrap().clone();
    let layers = frame.column("layer").unwrap().i64().unwrap().clone();
    let erank = frame
        .column("effective_rank")
        .unwrap()
        .f64()
        .unwrap()
        .clone();
    let coding = frame
        .column("normalised_coding_length")
        .unwrap()
        .f64()
        .unwrap()
        .clone();
    let mut compared = 0;
    for i in 0..frame.height() {
        let (id, layer) = (ids.get(i).unwrap(), layers.get(i).unwrap());
        let expected = &golden[id]["layers"][layer.to_string()];
        if expected.is_null() {
            // Layer L (the last block before the final norm) is not among
            // transformers' hidden states.
            assert_eq!(layer, 3, "unexpected layer {layer}");
            continue;
        }
        let e = expected["effective_rank"].as_f64().unwrap();
        let c = expected["normalised_coding_length"].as_f64().unwrap();
        // Hidden states agree to ~1e-5 in f32; entropies inherit that.
        assert!(
            (erank.get(i).unwrap() - e).abs() <= 1e-4 * e,
            "{id} layer {layer}: erank {} vs {e}",
            erank.get(i).unwrap()
        );
        assert!(
            (coding.get(i).unwrap() - c).abs() <= 1e-4 * c,
            "{id} layer {layer}: coding {} vs {c}",
            coding.get(i).unwrap()
        );
        compared += 1;
    }
    // 6 texts x 4 comparable layers (0, 1, 2 and the final norm).
    assert_eq!(compared, 24);

    // Token counts equal the reference tokenizer's.
    let tokens = lmgeo_tables::read_parquet(&out.join("nodes/hidden/tokens.parquet")).unwrap();
    let tid = tokens.column("text_id").unwrap().str().unwrap().clone();
    let count = tokens.column("tokens").unwrap().i64().unwrap().clone();
    for i in 0..tokens.height() {
        let expected = golden[tid.get(i).unwrap()]["ids"].as_array().unwrap().len() as i64;
        assert_eq!(count.get(i).unwrap(), expected);
    }
}

fn chunk_action_files(store: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    common::snapshot(&store.join("actions"))
        .into_iter()
        .filter(|(_, bytes)| String::from_utf8_lossy(bytes).contains("\"kind\": \"chunk\""))
        .collect()
}

fn chunk_actions(store: &Path) -> usize {
    chunk_action_files(store).len()
}

fn extract_digest(out: &Path, store: &Path) -> String {
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let node = run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "hidden")
        .unwrap();
    let key = node["key"].as_str().unwrap();
    let action = store
        .join("actions")
        .join(&key[..2])
        .join(format!("{key}.json"));
    let action: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(action).unwrap()).unwrap();
    action["outputs"]["embeddings"]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn an_interrupted_extraction_resumes_and_gives_the_same_bytes() {
    // The built-in corpus (72 texts) one text per piece, so there is time to
    // interrupt between pieces.
    let experiment = PIPELINE
        .replace("format = \"jsonl\"\npath = \"tests/fixtures/tiny-corpus.jsonl\"\nname = \"tiny\"\nid_field = \"id\"", "format = \"builtin\"")
        .replace("chunk_texts = 2", "chunk_texts = 1");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("long.toml");
    std::fs::write(&file, &experiment).unwrap();

    let reference_store = tmp.path().join("reference");
    let reference_out = tmp.path().join("reference-out");
    let reference = run_experiment(&file, &reference_store, &reference_out, &[]);
    assert!(reference.success(), "{}", reference.stderr());
    let pieces = chunk_actions(&reference_store);
    assert!(
        pieces >= 100,
        "expected 72 embedding and 72 attention pieces, found {pieces}"
    );

    let store = tmp.path().join("store");
    let out = tmp.path().join("out");
    let mut child = common::lmgeo()
        .args([
            "--store",
            store.to_str().unwrap(),
            "run",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while chunk_actions(&store) < 6 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the extraction made no progress"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    // A graceful stop: the pieces in progress are finished and stored, the
    // run reports the interruption with the shell's status for SIGINT.
    assert_eq!(exit.code(), Some(130), "the interrupted run: {exit:?}");
    let before = chunk_action_files(&store);
    let stored = before.len();
    assert!(
        stored >= 6 && stored < pieces,
        "interrupted with {stored} of {pieces} pieces stored"
    );

    let rerun = run_experiment(&file, &store, &out, &[]);
    assert!(rerun.success(), "{}", rerun.stderr());
    assert_eq!(chunk_actions(&store), pieces);
    // Every piece stored before the interruption was reused, not redone: a
    // recomputed piece would have a new action record (its time stamp).
    for (path, bytes) in &before {
        assert_eq!(
            &std::fs::read(path).unwrap(),
            bytes,
            "{} was recomputed",
            path.display()
        );
    }
    assert_eq!(
        extract_digest(&out, &store),
        extract_digest(&reference_out, &reference_store)
    );
}

#[test]
fn every_analysis_kind_runs_on_a_tiny_model_with_consistent_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = run_experiment(
        Path::new("tests/fixtures/all-kinds.toml"),
        &tmp.path().join("store"),
        &out,
        &[],
    );
    assert!(run.success(), "{}", run.stderr());
    assert_eq!(run.summary()["ran"], 6);

    // Removal: KL divergences are non-negative, cosine distances in [0, 2],
    // and every (text, method, k, seed) the parameters ask for was run.
    let runs = lmgeo_tables::read_parquet(&out.join("nodes/removal/per_run.parquet")).unwrap();
    let kl = runs.column("kl").unwrap().f64().unwrap().clone();
    let cos = runs
        .column("cosine_distance")
        .unwrap()
        .f64()
        .unwrap()
        .clone();
    assert!(kl.iter().all(|v| v.unwrap() >= 0.0));
    assert!(cos.iter().all(|v| (-1e-9..=2.0).contains(&v.unwrap())));
    let texts = runs.column("text_id").unwrap().str().unwrap().clone();
    let mut distinct: Vec<&str> = texts.iter().flatten().collect();
    distinct.sort_unstable();
    distinct.dedup();
    // lasso + attention once per k, random 3 seeds per k; every text here is
    // longer than 4 + 2 tokens.
    assert_eq!(runs.height(), distinct.len() * (2 + 3) * 3);

    // Distances: zero on the diagonal and symmetric.
    let matrix = lmgeo_tables::read_parquet(&out.join("nodes/distance/matrix.parquet")).unwrap();
    let a = matrix.column("text_a").unwrap().str().unwrap().clone();
    let b = matrix.column("text_b").unwrap().str().unwrap().clone();
    let d = matrix.column("distance").unwrap().str().unwrap().clone();
    let v = matrix.column("value").unwrap().f64().unwrap().clone();
    let mut values = std::collections::HashMap::new();
    for i in 0..matrix.height() {
        values.insert(
            (a.get(i).unwrap(), b.get(i).unwrap(), d.get(i).unwrap()),
            v.get(i).unwrap(),
        );
    }
    for ((x, y, name), value) in &values {
        if x == y {
            assert_eq!(*value, 0.0);
        }
        let mirror = values[&(*y, *x, *name)];
        assert!(
            (value - mirror).abs() <= 1e-9 * value.abs().max(1.0),
            "{name}({x}, {y}) = {value} but {mirror} reversed"
        );
    }

    // Every claim-testing node contributed a section with figures.
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for title in [
        "GP = ridge identity",
        "Lasso against attention",
        "Token removal",
        "Sentence-level distances",
    ] {
        assert!(report.contains(title), "missing section `{title}`");
    }
    let figures = std::fs::read_dir(out.join("figures")).unwrap().count();
    assert!(figures >= 3 * 7, "{figures} figure files");
}

/// `device` says where the model runs and nothing else: `"cpu"` (or `"auto"`
/// without a GPU) finds the default run's results in the cache; a misspelt
/// device is an error located in the file; `"cuda"` in a build without the
/// feature fails with how to rebuild, before anything is written.
#[test]
fn device_is_checked_and_is_not_part_of_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("pipeline.toml");
    std::fs::write(&file, PIPELINE).unwrap();
    let store = tmp.path().join("store");
    let first = run_experiment(&file, &store, &tmp.path().join("out1"), &[]);
    assert!(first.success(), "{}", first.stderr());
    assert_eq!(first.summary()["cached"], 0);
    assert_eq!(first.summary()["ran"], 3);

    for device in ["cpu", "auto"] {
        let with_device = PIPELINE.replace(
            "chunk_texts = 2",
            &format!("chunk_texts = 2\ndevice = \"{device}\""),
        );
        std::fs::write(&file, &with_device).unwrap();
        let again = run_experiment(&file, &store, &tmp.path().join("out2"), &[]);
        assert!(again.success(), "{}", again.stderr());
        if device == "cpu" || !cfg!(feature = "cuda") {
            assert_eq!(
                again.summary()["ran"],
                0,
                "device = {device} recomputed something"
            );
        }
    }

    let misspelt = PIPELINE.replace("chunk_texts = 2", "chunk_texts = 2\ndevice = \"cuda0\"");
    std::fs::write(&file, &misspelt).unwrap();
    let bad = run_experiment(&file, &store, &tmp.path().join("out3"), &[]);
    assert_eq!(bad.code(), Some(2), "{}", bad.stderr());
    let err = bad.stderr();
    assert!(
        err.contains("pipeline.toml") && err.contains("\"cuda:N\""),
        "{err}"
    );

    if !cfg!(feature = "cuda") {
        let gpu = run_experiment(
            &file,
            &tmp.path().join("store2"),
            &tmp.path().join("out4"),
            &["--set", "hidden.device=cuda"],
        );
        assert!(!gpu.success());
        assert!(gpu.stderr().contains("--features cuda"), "{}", gpu.stderr());
    }
}
