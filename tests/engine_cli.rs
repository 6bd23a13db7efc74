//! The engine through the `lmgeo` binary on experiments/demo.toml: caching,
//! selective reruns, crash safety, corruption, concurrency and the
//! inspection commands.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{run, run_experiment, statuses};

const DEMO: &str = "experiments/demo.toml";
const DEMO_NODES: u64 = 15;

fn results_csv(out: &Path) -> String {
    std::fs::read_to_string(out.join("results.csv")).expect("results.csv written")
}

#[test]
fn demo_runs_then_is_cached_then_reruns_exactly_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = tmp.path().join("out");
    let first = run_experiment(Path::new(DEMO), &store, &out, &[]);
    assert!(first.success(), "{}", first.stderr());
    let summary = first.summary();
    assert_eq!(summary["nodes"], DEMO_NODES);
    assert_eq!(summary["ran"], DEMO_NODES);
    assert_eq!(summary["failed"], 0);
    assert_eq!(
        summary["results"],
        out.join("results.parquet").display().to_string()
    );
    let csv = results_csv(&out);
    assert!(
        csv.starts_with("experiment,node,kind,metric,value,"),
        "{csv}"
    );

    let second = run_experiment(Path::new(DEMO), &store, &out, &[]);
    assert!(second.success());
    assert_eq!(second.summary()["ran"], 0);
    assert_eq!(second.summary()["cached"], DEMO_NODES);
    assert_eq!(
        results_csv(&out),
        csv,
        "a cached run gives the same results"
    );

    let third = run_experiment(
        Path::new(DEMO),
        &store,
        &out,
        &["--set", "stats.center=false"],
    );
    assert!(third.success(), "{}", third.stderr());
    let ran: Vec<String> = statuses(&out)
        .into_iter()
        .filter(|(_, s)| s == "ran")
        .map(|(n, _)| n)
        .collect();
    let expected: Vec<String> = [
        "stats[seed=1,rank=2]",
        "stats[seed=1,rank=8]",
        "stats[seed=2,rank=2]",
        "stats[seed=2,rank=8]",
        "stats[seed=3,rank=2]",
        "stats[seed=3,rank=8]",
        "by_rank[rank=2]",
        "by_rank[rank=8]",
        "overall",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(ran, expected);

    // `explain` names the parameter that changed since the last run.
    let explain = run(&[
        "--store",
        store.to_str().unwrap(),
        "explain",
        DEMO,
        "stats[seed=1,rank=2]",
    ]);
    assert!(explain.success(), "{}", explain.stderr());
    assert!(
        explain
            .stdout()
            .contains("parameter `center` changed: false → true"),
        "{}",
        explain.stdout()
    );
}

#[test]
fn plan_dag_show_and_kinds() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = tmp.path().join("out");
    let plan = run(&["--store", store.to_str().unwrap(), "plan", DEMO]);
    assert!(plan.success(), "{}", plan.stderr());
    let text = plan.stdout();
    assert!(text.contains("data[seed=1,rank=2]"), "{text}");
    assert!(text.contains("never run in this experiment"), "{text}");
    assert!(
        text.contains("15 nodes: 0 cached, 15 will run, 0 blocked"),
        "{text}"
    );

    assert!(run_experiment(Path::new(DEMO), &store, &out, &[]).success());
    let plan = run(&["--store", store.to_str().unwrap(), "plan", DEMO]);
    assert!(
        plan.stdout().contains("15 nodes: 15 cached, 0 will run"),
        "{}",
        plan.stdout()
    );

    let dag = run(&["dag", DEMO]);
    assert!(dag.stdout().starts_with("flowchart LR"), "{}", dag.stdout());
    assert_eq!(dag.stdout().matches("-->").count(), 6 + 6 + 6);
    let dot = run(&["dag", DEMO, "--format", "dot"]);
    assert!(
        dot.stdout().starts_with("digraph \"demo\""),
        "{}",
        dot.stdout()
    );

    let show = run(&[
        "show",
        out.to_str().unwrap(),
        "--metric",
        "frobenius_norm_mean",
    ]);
    assert!(show.success(), "{}", show.stderr());
    assert!(
        show.stdout().contains("frobenius_norm_mean"),
        "{}",
        show.stdout()
    );
    assert!(
        !show.stdout().contains("frobenius_norm_max"),
        "{}",
        show.stdout()
    );

    let kinds = run(&["kinds"]);
    assert!(
        kinds.stdout().contains("synthetic_matrix"),
        "{}",
        kinds.stdout()
    );
}

#[test]
fn environment_overrides_apply_and_are_located() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let output = common::lmgeo()
        .args(["--store", store.to_str().unwrap(), "plan", DEMO])
        .env("LMGEO_STATS__CENTER", "\"yes\"")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("environment variable LMGEO_STATS__CENTER: node `stats` (matrix_stats): invalid type: string \"yes\", expected a boolean"),
        "{stderr}"
    );
    let output = common::lmgeo()
        .args([
            "--store",
            store.to_str().unwrap(),
            "explain",
            DEMO,
            "stats[seed=1,rank=2]",
        ])
        .env("LMGEO_STATS__CENTER", "false")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("\"center\":false"), "{stdout}");
}

#[test]
fn a_flipped_byte_in_any_blob_is_detected_and_recomputed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = tmp.path().join("out");
    assert!(run_experiment(Path::new(DEMO), &store, &out, &[]).success());
    let clean = results_csv(&out);
    let mut flipped = 0;
    for (path, mut bytes) in common::snapshot(&store.join("objects")) {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        std::fs::write(&path, bytes).unwrap();
        flipped += 1;
    }
    assert!(flipped > 0);
    let rerun = run_experiment(Path::new(DEMO), &store, &out, &[]);
    assert!(rerun.success(), "{}", rerun.stderr());
    assert!(rerun.summary()["ran"].as_u64().unwrap() > 0);
    assert_eq!(results_csv(&out), clean);
    // And the repaired store serves a clean, fully cached run.
    let again = run_experiment(Path::new(DEMO), &store, &out, &[]);
    assert_eq!(again.summary()["ran"], 0);
    assert_eq!(results_csv(&out), clean);
}

#[test]
fn two_processes_on_one_store_compute_each_node_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let spawn = |out: &Path| {
        common::lmgeo()
            .args([
                "--store",
                store.to_str().unwrap(),
                "run",
                DEMO,
                "--json",
                "--out",
                out.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out_a = tmp.path().join("a");
    let out_b = tmp.path().join("b");
    let a = spawn(&out_a);
    let b = spawn(&out_b);
    let a = common::Run {
        output: a.wait_with_output().unwrap(),
    };
    let b = common::Run {
        output: b.wait_with_output().unwrap(),
    };
    assert!(a.success(), "{}", a.stderr());
    assert!(b.success(), "{}", b.stderr());
    let ran = a.summary()["ran"].as_u64().unwrap() + b.summary()["ran"].as_u64().unwrap();
    assert_eq!(
        ran, DEMO_NODES,
        "each node is computed by exactly one process"
    );
    assert_eq!(results_csv(&out_a), results_csv(&out_b));
}

#[test]
fn a_run_killed_midway_leaves_no_corrupt_entry() {
    // A heavier variant of the demo so a kill lands while nodes write.
    let tmp = tempfile::tempdir().unwrap();
    let reference_store = tmp.path().join("reference");
    let reference_out = tmp.path().join("reference-out");
    let heavy = [
        "--set",
        "data.rows=256",
        "--set",
        "data.cols=256",
        "--set",
        "data.texts=24",
    ];
    let reference = run_experiment(Path::new(DEMO), &reference_store, &reference_out, &heavy);
    assert!(reference.success(), "{}", reference.stderr());
    let expected = results_csv(&reference_out);

    let store = tmp.path().join("store");
    let out = tmp.path().join("out");
    for delay_ms in [40u64, 120, 250, 400, 700] {
        let mut args = vec![
            "--store",
            store.to_str().unwrap(),
            "run",
            DEMO,
            "--json",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(heavy);
        let mut child = common::lmgeo()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
    }
    let rerun = run_experiment(Path::new(DEMO), &store, &out, &heavy);
    assert!(rerun.success(), "{}", rerun.stderr());
    assert_eq!(results_csv(&out), expected);
    let again = run_experiment(Path::new(DEMO), &store, &out, &heavy);
    assert_eq!(again.summary()["ran"], 0);
}

#[test]
fn gc_keeps_what_experiments_reach_and_removes_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = tmp.path().join("out");
    assert!(run_experiment(Path::new(DEMO), &store, &out, &[]).success());
    assert!(run_experiment(Path::new(DEMO), &store, &out, &["--set", "data.rows=32"]).success());
    let store_arg = store.to_str().unwrap();
    let dry = run(&[
        "--store",
        store_arg,
        "gc",
        DEMO,
        "--keep-runs",
        "0",
        "--dry-run",
    ]);
    assert!(dry.success(), "{}", dry.stderr());
    let listing = dry.stdout();
    // The rows=32 variant's 15 actions are unreachable from the file as written.
    assert!(listing.contains("would delete"), "{listing}");
    assert_eq!(
        listing.lines().filter(|l| l.contains(" action ")).count(),
        15,
        "{listing}"
    );
    let before = common::snapshot(&store.join("actions")).len();
    assert_eq!(before, 30);
    let real = run(&["--store", store_arg, "gc", DEMO, "--keep-runs", "0"]);
    assert!(real.success(), "{}", real.stderr());
    assert_eq!(common::snapshot(&store.join("actions")).len(), 15);
    let cached = run_experiment(Path::new(DEMO), &store, &out, &[]);
    assert_eq!(
        cached.summary()["ran"],
        0,
        "what the experiment reaches survives gc"
    );
}

/// gc refuses to collect while a run on the store is in progress, and says
/// how to proceed; a run folder whose process has ended does not block it.
#[test]
fn gc_waits_for_a_run_in_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    assert!(run_experiment(Path::new(DEMO), &store, &tmp.path().join("out"), &[]).success());
    // A run folder as `lmgeo run` makes it, for a live process (a sleeping
    // child) that has not yet written its record.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let live = store.join("runs").join(format!("1-demo-{}", child.id()));
    std::fs::create_dir_all(&live).unwrap();
    let store_arg = store.to_str().unwrap();
    let refused = run(&["--store", store_arg, "gc", DEMO]);
    assert!(!refused.success());
    assert!(
        refused.stderr().contains("in progress"),
        "{}",
        refused.stderr()
    );
    assert!(run(&["--store", store_arg, "gc", DEMO, "--dry-run"]).success());
    child.kill().unwrap();
    child.wait().unwrap();
    let after = run(&["--store", store_arg, "gc", DEMO]);
    assert!(after.success(), "{}", after.stderr());
}
