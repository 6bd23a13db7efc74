//! The paper's experiment files, exactly as shipped in experiments/, run to
//! completion on the real offline models over a small hh-rlhf sample (the
//! `--set` overrides a user would type), publish a report whose figures
//! exist, and rerun entirely from the cache.
//!
//! The samples are small so CI stays fast; the numbers themselves are checked
//! elsewhere (probes against numpy/scikit-learn, models against
//! transformers). What this guards is that every shipped file still parses,
//! wires its nodes correctly and produces every section it promises.

mod common;

use std::path::Path;

use common::{Run, lmgeo, statuses};

const HH_RLHF: &str = "data/hh-rlhf/harmless-base-test.jsonl.gz";

/// `lmgeo run` with the models folder the rest of the test suite uses (CI
/// keeps it outside the clone), which `common::lmgeo` would otherwise drop
/// with the other `LMGEO_*` variables.
fn run_shipped(file: &str, store: &Path, out: &Path, sets: &[String]) -> Run {
    let mut cmd = lmgeo();
    if let Some(models) = std::env::var_os("LMGEO_MODELS_DIR") {
        cmd.env("LMGEO_MODELS_DIR", models);
    }
    cmd.arg("--store")
        .arg(store)
        .args(["run", file, "--json", "--out"])
        .arg(out);
    for set in sets {
        cmd.args(["--set", set]);
    }
    Run {
        output: cmd.output().expect("lmgeo runs"),
    }
}

fn hh_sample(n: usize, extra: &[&str]) -> Vec<String> {
    let mut sets = vec![
        "texts.format=hh-rlhf".to_string(),
        format!("texts.path={HH_RLHF}"),
        format!("texts.n={n}"),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    sets
}

/// Runs `file` twice on `sets` and checks the report: every section has a
/// verdict, every figure it links exists, and the second run computes nothing.
fn runs_and_reports(file: &str, sets: &[String], sections: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = tmp.path().join("out");

    let first = run_shipped(file, &store, &out, sets);
    assert!(first.success(), "{file}: {}", first.stderr());
    let summary = first.summary();
    assert_eq!(summary["failed"], 0, "{file}: {summary}");
    let nodes = summary["nodes"].as_u64().unwrap();
    assert!(nodes > 0);
    for (node, status) in statuses(&out) {
        assert_ne!(status, "failed", "{file}: node {node} failed");
    }

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for section in sections {
        assert!(
            report.contains(section),
            "{file}: report lacks a section on `{section}`"
        );
    }
    let verdicts = report.matches("**Verdict: ").count();
    assert!(
        verdicts >= sections.len(),
        "{file}: {verdicts} verdicts for {} sections",
        sections.len()
    );
    let mut linked = 0;
    for piece in report.split("](figures/").skip(1) {
        let name = &piece[..piece.find(')').unwrap()];
        assert!(
            out.join("figures").join(name).is_file(),
            "{file}: report links figures/{name}, which was not written"
        );
        linked += 1;
    }
    assert!(linked >= sections.len(), "{file}: {linked} figure links");

    let results = lmgeo_tables::read_parquet(&out.join("results.parquet")).unwrap();
    assert!(results.height() > 0, "{file}: empty results table");
    let values = results.column("value").unwrap().f64().unwrap().clone();
    assert!(
        values.iter().flatten().any(f64::is_finite),
        "{file}: no finite result"
    );

    let second = run_shipped(file, &store, &out, sets);
    assert!(second.success(), "{file}: {}", second.stderr());
    let again = second.summary();
    assert_eq!(again["ran"], 0, "{file}: second run recomputed: {again}");
    assert_eq!(again["cached"].as_u64().unwrap(), nodes);
}

#[test]
fn scaling_law_runs_on_a_hh_rlhf_sample() {
    runs_and_reports(
        "experiments/scaling_law.toml",
        &hh_sample(6, &["hidden.max_tokens=24", "hidden_random.max_tokens=24"]),
        &[
            "normalised coding length against model size",
            "Diff-eRank",
            "Simulation",
        ],
    );
}

#[test]
fn info_gain_runs_on_a_hh_rlhf_sample() {
    runs_and_reports(
        "experiments/info_gain.toml",
        &hh_sample(4, &["hidden.max_tokens=24"]),
        &["GP = ridge identity", "centring trap"],
    );
}

#[test]
fn lasso_attention_runs_on_a_hh_rlhf_sample() {
    runs_and_reports(
        "experiments/lasso_attention.toml",
        &hh_sample(
            4,
            &[
                "hidden.max_tokens=32",
                "keep_top_k.max_tokens=32",
                "keep_top_k.random_seeds=2",
            ],
        ),
        &["Lasso against attention"],
    );
}

#[test]
fn token_removal_runs_on_a_hh_rlhf_sample() {
    runs_and_reports(
        "experiments/token_removal.toml",
        &hh_sample(
            4,
            &[
                "hidden.max_tokens=32",
                "removal.max_tokens=32",
                "removal.random_seeds=2",
            ],
        ),
        &["Token removal"],
    );
}

#[test]
fn sentence_distance_runs_on_a_hh_rlhf_sample() {
    runs_and_reports(
        "experiments/sentence_distance.toml",
        &hh_sample(6, &["hidden.max_tokens=32"]),
        &["Sentence-level distances"],
    );
}

/// Pythia's weights cannot be fetched here, so the paper's own file is only
/// validated and planned: every size of the family gets its extraction, its
/// random twin and the analyses downstream, without touching the network.
#[test]
fn pythia_paper_validates_and_plans_every_size() {
    let tmp = tempfile::tempdir().unwrap();
    let output = lmgeo()
        .arg("--store")
        .arg(tmp.path())
        .args(["plan", "experiments/pythia_paper.toml"])
        .output()
        .expect("lmgeo runs");
    let plan = Run { output };
    assert!(plan.success(), "{}", plan.stderr());
    let stdout = plan.stdout();
    for size in ["70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"] {
        for node in ["hidden", "hidden_random", "entropy"] {
            let id = format!("{node}[model=hf:EleutherAI/pythia-{size}]");
            let line = stdout
                .lines()
                .find(|l| l.split_whitespace().next() == Some(id.as_str()))
                .unwrap_or_else(|| panic!("plan lacks {id}:\n{stdout}"));
            assert!(line.contains("will run"), "{line}");
        }
    }
    assert!(stdout.contains("coding_length"), "{stdout}");
    assert!(
        !tmp.path().join("actions").exists()
            || std::fs::read_dir(tmp.path().join("actions"))
                .unwrap()
                .next()
                .is_none()
    );
}

/// A model revision is a sweep axis: each Pythia checkpoint is its own
/// extraction and analyses, planned without fetching anything.
#[test]
fn pythia_checkpoints_plan_one_extraction_per_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let output = lmgeo()
        .arg("--store")
        .arg(tmp.path())
        .args(["plan", "experiments/pythia_checkpoints.toml"])
        .output()
        .expect("lmgeo runs");
    let plan = Run { output };
    assert!(plan.success(), "{}", plan.stderr());
    let stdout = plan.stdout();
    for step in [
        "step1000",
        "step8000",
        "step33000",
        "step71000",
        "step143000",
    ] {
        for node in ["hidden", "geometry", "to_final"] {
            let id = format!("{node}[revision={step}]");
            let line = stdout
                .lines()
                .find(|l| l.split_whitespace().next() == Some(id.as_str()))
                .unwrap_or_else(|| panic!("plan lacks {id}:\n{stdout}"));
            assert!(line.contains("will run"), "{line}");
        }
    }
    assert!(
        stdout.contains("17 nodes: 0 cached, 17 will run"),
        "{stdout}"
    );
}
