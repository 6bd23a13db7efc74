//! `lmgeo run --executor slurm`, end to end.
//!
//! Two kinds of Slurm:
//! - the fake commands in `tests/fake-slurm/` (always): they print what a
//!   real Slurm 22.05 prints (`tests/fixtures/slurm/`), run array tasks
//!   locally, and can fail, lose, requeue or preempt chosen tasks;
//! - a real Slurm on localhost (`munged`, `slurmctld`, `slurmd` from
//!   Debian's packages, started by `scripts/slurm/start-local.sh`), when
//!   `LMGEO_TEST_SLURM=1`. `.ci/run` starts it and sets that; then these
//!   tests fail, never skip, if it is not there.
//!
//! In every case the results table must equal a local run's byte for byte.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Run, lmgeo, repo_root};

const DEMO: &str = "experiments/demo.toml";
const SLOW: &str = "tests/fixtures/slurm/slow.toml";

/// Fast polling and a short grace: the fakes share this machine's disk.
const FAST: [&str; 4] = [
    "--set",
    "executor.poll_seconds=0.2",
    "--set",
    "executor.grace_seconds=1.5",
];

fn fake_bin() -> PathBuf {
    repo_root().join("tests/fake-slurm")
}

/// `lmgeo` with the fake Slurm first on PATH and its state in `state`.
fn with_fake(state: &Path) -> Command {
    let mut cmd = lmgeo();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![fake_bin()];
    dirs.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(dirs).unwrap());
    cmd.env("FAKE_SLURM_DIR", state);
    for (key, _) in std::env::vars() {
        if key.starts_with("FAKE_SLURM_") && key != "FAKE_SLURM_DIR" {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn run_cmd(mut cmd: Command, store: &Path, file: &str, out: &Path, extra: &[&str]) -> Run {
    cmd.arg("--store")
        .arg(store)
        .args(["run", file, "--json", "--out"])
        .arg(out)
        .args(extra);
    Run {
        output: cmd.output().expect("lmgeo runs"),
    }
}

fn local(store: &Path, file: &str, out: &Path, extra: &[&str]) -> Run {
    let mut cmd = lmgeo();
    if let Some(models) = std::env::var_os("LMGEO_MODELS_DIR") {
        cmd.env("LMGEO_MODELS_DIR", models);
    }
    run_cmd(cmd, store, file, out, extra)
}

fn args<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--executor", "slurm"];
    all.extend_from_slice(base);
    all.extend_from_slice(more);
    all
}

fn results_csv(out: &Path) -> String {
    std::fs::read_to_string(out.join("results.csv")).expect("results.csv written")
}

/// Every Slurm command the fakes ran, as argument lists.
fn calls(state: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(state.join("calls.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let mut call = vec![v["cmd"].as_str().unwrap().to_string()];
            call.extend(
                v["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string()),
            );
            call
        })
        .collect()
}

fn program(call: &[String]) -> String {
    Path::new(&call[0])
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string()
}

/// Tasks over all `sbatch --array=0-N` calls.
fn array_tasks(calls: &[Vec<String>]) -> usize {
    calls
        .iter()
        .filter(|c| program(c) == "sbatch")
        .map(|c| {
            let array = c.iter().find_map(|a| a.strip_prefix("--array=0-")).unwrap();
            array.split('%').next().unwrap().parse::<usize>().unwrap() + 1
        })
        .sum()
}

fn count(calls: &[Vec<String>], name: &str) -> usize {
    calls.iter().filter(|c| program(c) == name).count()
}

/// `task computed <instance> <key>` lines in every task log of a store.
fn computed_keys(store: &Path) -> BTreeMap<String, usize> {
    let mut keys = BTreeMap::new();
    for log in files_under(&store.join("runs"), ".out") {
        for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
            if let Some(rest) = line.strip_prefix("lmgeo task: computed ") {
                let key = rest.split_whitespace().nth(1).unwrap().to_string();
                *keys.entry(key).or_default() += 1;
            }
        }
    }
    keys
}

fn files_under(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    file: &'static str,
    local_csv: String,
}

impl Setup {
    /// A temporary folder and the local run's results of `file`.
    fn new(file: &'static str, extra: &[&str]) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let run = local(
            &root.join("local-store"),
            file,
            &root.join("local-out"),
            extra,
        );
        assert!(run.success(), "local run: {}", run.stderr());
        let local_csv = results_csv(&root.join("local-out"));
        Setup {
            _tmp: tmp,
            root,
            file,
            local_csv,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `lmgeo run --executor slurm` of the setup's file on the fake Slurm
    /// (its state in `fake/`, the store in `store/`) into `out`, polling
    /// fast, with the fake's settings `env` and `more` arguments.
    fn on_fake(&self, out: &str, env: &[(&str, &str)], more: &[&str]) -> Run {
        let mut cmd = with_fake(&self.path("fake"));
        for (key, value) in env {
            cmd.env(key, value);
        }
        run_cmd(
            cmd,
            &self.path("store"),
            self.file,
            &self.path(out),
            &args(&FAST, more),
        )
    }
}

#[test]
fn demo_on_slurm_equals_the_local_run_and_reruns_from_the_store() {
    let s = Setup::new(DEMO, &[]);
    let state = s.path("fake");
    let run = s.on_fake("out", &[], &[]);
    assert!(run.success(), "{}", run.stderr());
    let summary = run.summary();
    assert_eq!(summary["ran"], 15, "{summary}");
    assert_eq!(results_csv(&s.path("out")), s.local_csv);
    assert!(
        run.stderr().contains("slurm lmgeo-demo-"),
        "progress is shown: {}",
        run.stderr()
    );

    let all = calls(&state);
    // Instances are submitted as their inputs commit: at least one array
    // per depth of the demo, and every instance in exactly one task.
    let arrays = count(&all, "sbatch");
    assert!((3..=15).contains(&arrays), "{all:?}");
    assert_eq!(array_tasks(&all), 15, "{all:?}");
    for call in all.iter().filter(|c| program(c) == "squeue") {
        assert!(
            call.iter().any(|a| a.starts_with("--name=lmgeo-demo-")),
            "{call:?}"
        );
        assert!(call.contains(&"--me".to_string()), "{call:?}");
    }
    assert_eq!(count(&all, "scontrol"), 1, "MaxArraySize is read once");

    // Every task noted its key in the run's folder before computing it:
    // what `gc --force` spares while the run is in progress.
    let computed = computed_keys(&s.path("store"));
    assert_eq!(computed.len(), 15, "{computed:?}");
    let noted: Vec<String> = files_under(&s.path("store").join("runs"), "/keys")
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    for key in computed.keys() {
        assert!(
            noted.contains(key),
            "{key} is not noted in the run: {noted:?}"
        );
    }

    let again = s.on_fake("out2", &[], &[]);
    assert!(again.success(), "{}", again.stderr());
    assert_eq!(again.summary()["cached"], 15);
    assert_eq!(
        count(&calls(&state), "sbatch"),
        arrays,
        "a cached run submits nothing"
    );
    assert_eq!(results_csv(&s.path("out2")), s.local_csv);
}

#[test]
fn arrays_are_split_to_respect_max_array_size() {
    let s = Setup::new(DEMO, &[]);
    let state = s.path("fake");
    let run = s.on_fake("out", &[("FAKE_SLURM_MAX_ARRAY_SIZE", "4")], &[]);
    assert!(run.success(), "{}", run.stderr());
    assert_eq!(results_csv(&s.path("out")), s.local_csv);
    let sbatch: Vec<Vec<String>> = calls(&state)
        .into_iter()
        .filter(|c| program(c) == "sbatch")
        .collect();
    // 6 data instances ready at once: 4 + 2.
    assert!(sbatch.len() >= 4, "{sbatch:?}");
    let mut tasks = 0;
    for call in &sbatch {
        let array = call
            .iter()
            .find_map(|a| a.strip_prefix("--array=0-"))
            .unwrap();
        let last: usize = array.split('%').next().unwrap().parse().unwrap();
        assert!(last <= 3, "index {last} exceeds MaxArraySize - 1: {call:?}");
        tasks += last + 1;
    }
    assert_eq!(tasks, 15);
    assert_eq!(computed_keys(&s.path("store")).values().sum::<usize>(), 15);
}

#[test]
fn a_failed_task_shows_its_log_blocks_its_descendants_and_a_rerun_completes() {
    let s = Setup::new(DEMO, &[]);
    let run = s.on_fake("out", &[("FAKE_SLURM_FAIL", "0")], &[]);
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    let summary = run.summary();
    assert!(summary["failed"].as_u64().unwrap() >= 1, "{summary}");
    assert!(summary["blocked"].as_u64().unwrap() >= 1, "{summary}");
    let stderr = run.stderr();
    assert!(stderr.contains("without committing a result"), "{stderr}");
    assert!(stderr.contains("failed: "), "{stderr}");
    assert!(stderr.contains("slurm/logs/"), "the log is named: {stderr}");

    let status = Run {
        output: lmgeo()
            .arg("--store")
            .arg(s.path("store"))
            .arg("status")
            .output()
            .unwrap(),
    };
    assert!(status.success(), "{}", status.stderr());
    assert!(
        status.stdout().contains("FAILED data["),
        "{}",
        status.stdout()
    );

    let before = computed_keys(&s.path("store")).len();
    let rerun = s.on_fake("out", &[], &[]);
    assert!(rerun.success(), "{}", rerun.stderr());
    assert_eq!(results_csv(&s.path("out")), s.local_csv);
    let counts = computed_keys(&s.path("store"));
    assert_eq!(counts.len(), 15);
    assert!(
        before >= 1 && counts.values().all(|&n| n == 1),
        "nothing computed twice: {counts:?}"
    );
}

#[test]
fn a_vanished_job_is_a_failure_after_the_grace_period() {
    let s = Setup::new(DEMO, &[]);
    let started = Instant::now();
    let run = s.on_fake("out", &[("FAKE_SLURM_VANISH", "1")], &[]);
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    assert!(run.stderr().contains("VANISHED"), "{}", run.stderr());
    assert!(started.elapsed() < Duration::from_secs(60));
    let rerun = s.on_fake("out", &[], &[]);
    assert!(rerun.success(), "{}", rerun.stderr());
    assert_eq!(results_csv(&s.path("out")), s.local_csv);
}

#[test]
fn requeued_and_preempted_tasks_still_give_the_local_results() {
    for scenario in ["FAKE_SLURM_REQUEUE", "FAKE_SLURM_PREEMPT"] {
        let s = Setup::new(SLOW, &["--set", "wait.params.seconds=1"]);
        let run = s.on_fake(
            "out",
            &[(scenario, "0,2"), ("FAKE_SLURM_KILL_AFTER", "0.5")],
            &["--set", "wait.params.seconds=1"],
        );
        assert!(run.success(), "{scenario}: {}", run.stderr());
        assert_eq!(results_csv(&s.path("out")), s.local_csv, "{scenario}");
        let counts = computed_keys(&s.path("store"));
        assert_eq!(counts.len(), 5, "{scenario}: {counts:?}");
        assert!(counts.values().all(|&n| n == 1), "{scenario}: {counts:?}");
    }
}

/// Waits until the fake queue has no pending or running task of `run_id`.
fn wait_for_queue(state: &Path, run_id: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let mut squeue = Command::new(fake_bin().join("squeue"));
        squeue
            .env("FAKE_SLURM_DIR", state)
            .args([
                "--me",
                &format!("--name={run_id}"),
                "--states=all",
                "--array",
                "--noheader",
                "--format=%i|%T|%r",
            ])
            .stderr(Stdio::inherit());
        let text = String::from_utf8(squeue.output().unwrap().stdout).unwrap();
        if !text
            .lines()
            .any(|l| l.contains("|PENDING|") || l.contains("|RUNNING|"))
        {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "the queue never drained:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_detached_run_returns_at_once_and_a_later_run_collects_it() {
    let s = Setup::new(DEMO, &[]);
    let state = s.path("fake");
    let run = s.on_fake("out", &[], &["--detach"]);
    assert!(run.success(), "{}", run.stderr());
    let summary = run.summary();
    assert_eq!(summary["submitted"], 15, "{summary}");
    let waves = summary["waves"].as_array().unwrap();
    assert_eq!(waves.len(), 3, "one wave per depth: {summary}");
    let sbatch: Vec<Vec<String>> = calls(&state)
        .into_iter()
        .filter(|c| program(c) == "sbatch")
        .collect();
    assert!(!sbatch[0].iter().any(|a| a.starts_with("--dependency")));
    for (call, previous) in sbatch[1..].iter().zip(waves) {
        let ids: Vec<&str> = previous
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            call.contains(&format!("--dependency=afterany:{}", ids.join(":"))),
            "{call:?}"
        );
        assert!(call.contains(&"--kill-on-invalid-dep=yes".to_string()));
    }
    let run_id = summary["run_id"].as_str().unwrap();
    wait_for_queue(&state, run_id, Duration::from_secs(120));
    let collect = local(&s.path("store"), DEMO, &s.path("out"), &[]);
    assert!(collect.success(), "{}", collect.stderr());
    assert_eq!(
        collect.summary()["ran"],
        0,
        "everything came from the cluster"
    );
    assert_eq!(results_csv(&s.path("out")), s.local_csv);
}

#[test]
fn a_detached_wave_after_a_failure_ends_instead_of_pending_forever() {
    let s = Setup::new(DEMO, &[]);
    let state = s.path("fake");
    let run = s.on_fake("out", &[("FAKE_SLURM_FAIL", "0")], &["--detach"]);
    assert!(run.success(), "{}", run.stderr());
    let run_id = run.summary()["run_id"].as_str().unwrap().to_string();
    // Drains: dependents of the failed task fail on their missing input.
    wait_for_queue(&state, &run_id, Duration::from_secs(120));
    let logs = files_under(&s.path("store").join("runs"), ".out");
    let text: String = logs
        .iter()
        .map(|l| std::fs::read_to_string(l).unwrap_or_default())
        .collect();
    assert!(text.contains("has no results in the store"), "{text}");
    // And a rerun finishes the job.
    let rerun = s.on_fake("out", &[], &[]);
    assert!(rerun.success(), "{}", rerun.stderr());
    assert_eq!(results_csv(&s.path("out")), s.local_csv);
}

#[test]
fn resources_reach_sbatch_and_bad_ones_are_located_errors() {
    let s = Setup::new(DEMO, &[]);
    let state = s.path("fake");
    let file = s.path("demo-resources.toml");
    let demo = std::fs::read_to_string(repo_root().join(DEMO)).unwrap();
    std::fs::write(
        &file,
        format!(
            "{demo}\n[resources.default]\ntime = \"0:10:00\"\n\n[resources.matrix_stats]\nmem = \"2G\"\ncpus = 2\n\n[resources.overall]\npartition = \"gpu\"\ngpus = 1\nsbatch_args = [\"--comment=overall\"]\n"
        ),
    )
    .unwrap();
    let run = run_cmd(
        with_fake(&state),
        &s.path("store"),
        file.to_str().unwrap(),
        &s.path("out"),
        &args(&FAST, &[]),
    );
    assert!(run.success(), "{}", run.stderr());
    assert_eq!(
        results_csv(&s.path("out")),
        s.local_csv,
        "resources are not part of keys"
    );
    let sbatch: Vec<Vec<String>> = calls(&state)
        .into_iter()
        .filter(|c| program(c) == "sbatch")
        .collect();
    assert!(
        sbatch
            .iter()
            .all(|c| c.contains(&"--time=0:10:00".to_string()))
    );
    assert!(sbatch.iter().any(
        |c| c.contains(&"--mem=2G".to_string()) && c.contains(&"--cpus-per-task=2".to_string())
    ));
    assert!(
        sbatch
            .iter()
            .any(|c| c.contains(&"--partition=gpu".to_string())
                && c.contains(&"--gres=gpu:1".to_string())
                && c.contains(&"--comment=overall".to_string()))
    );
    // `overall` never shares an array with `by_rank`: other resources.
    assert_eq!(array_tasks(&sbatch), 15, "{sbatch:?}");
    for call in &sbatch {
        let gpu = call.contains(&"--gres=gpu:1".to_string());
        let script = std::fs::read_to_string(call.last().unwrap()).unwrap();
        let manifest = script
            .split("--manifest '")
            .nth(1)
            .unwrap()
            .split('\'')
            .next()
            .unwrap();
        let lines = std::fs::read_to_string(manifest).unwrap();
        assert_eq!(gpu, lines.contains("\"overall\""), "{call:?}: {lines}");
    }

    std::fs::write(
        &file,
        format!("{demo}\n[resources.extract]\nmem = \"lots\"\n"),
    )
    .unwrap();
    let bad = run_cmd(
        with_fake(&state),
        &s.path("store"),
        file.to_str().unwrap(),
        &s.path("out"),
        &args(&FAST, &[]),
    );
    assert_eq!(bad.code(), Some(2));
    let stderr = bad.stderr();
    assert!(stderr.contains("resources.extract"), "{stderr}");
    assert!(stderr.contains("names no node and no kind"), "{stderr}");
    std::fs::write(
        &file,
        format!("{demo}\n[resources.stats]\nmem = \"lots\"\n"),
    )
    .unwrap();
    let bad = run_cmd(
        with_fake(&state),
        &s.path("store"),
        file.to_str().unwrap(),
        &s.path("out"),
        &args(&FAST, &[]),
    );
    assert_eq!(bad.code(), Some(2));
    assert!(
        bad.stderr().contains("is not a memory size"),
        "{}",
        bad.stderr()
    );
    assert!(
        bad.stderr().contains("demo-resources.toml:"),
        "located: {}",
        bad.stderr()
    );
}

// ---- a real Slurm on localhost -------------------------------------------

/// True when the real-Slurm tests must run; they then fail if Slurm is not up.
fn real_slurm() -> bool {
    if std::env::var("LMGEO_TEST_SLURM").as_deref() != Ok("1") {
        eprintln!(
            "LMGEO_TEST_SLURM is not 1: the real-Slurm test is not run (scripts/slurm/start-local.sh starts one)"
        );
        return false;
    }
    let sinfo = Command::new("sinfo").arg("--noheader").output();
    assert!(
        sinfo.as_ref().is_ok_and(|o| o.status.success()),
        "LMGEO_TEST_SLURM=1 but sinfo fails: {sinfo:?}"
    );
    true
}

fn with_real_slurm() -> Command {
    let mut cmd = lmgeo();
    for var in ["LMGEO_MODELS_DIR", "SLURM_CONF"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd
}

/// The real-Slurm tests share one 2-core node: one at a time.
static REAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn real_slurm_runs_the_demo_and_a_real_model_experiment_as_locally() {
    if !real_slurm() {
        return;
    }
    let _one = REAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new(DEMO, &[]);
    let run = run_cmd(
        with_real_slurm(),
        &s.path("store"),
        DEMO,
        &s.path("out"),
        &args(&["--set", "executor.poll_seconds=0.5"], &[]),
    );
    assert!(run.success(), "{}", run.stderr());
    assert_eq!(results_csv(&s.path("out")), s.local_csv);

    let sets = [
        "--set",
        "texts.format=hh-rlhf",
        "--set",
        "texts.path=data/hh-rlhf/harmless-base-test.jsonl.gz",
        "--set",
        "texts.n=4",
        "--set",
        "hidden.max_tokens=16",
        "--set",
        "hidden_random.max_tokens=16",
    ];
    let file = "experiments/scaling_law.toml";
    let m = Setup::new(file, &sets);
    let mut all = vec!["--set", "executor.poll_seconds=0.5"];
    all.extend_from_slice(&sets);
    let run = run_cmd(
        with_real_slurm(),
        &m.path("store"),
        file,
        &m.path("out"),
        &args(&all, &[]),
    );
    assert!(run.success(), "{}", run.stderr());
    assert_eq!(results_csv(&m.path("out")), m.local_csv);
}

#[test]
fn real_slurm_cancelled_task_loses_nothing_and_the_rerun_completes() {
    if !real_slurm() {
        return;
    }
    let _one = REAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new(SLOW, &["--set", "wait.params.seconds=4"]);
    let store = s.path("store");
    let mut cmd = with_real_slurm();
    cmd.arg("--store")
        .arg(&store)
        .args(["run", SLOW, "--json", "--out"])
        .arg(s.path("out"))
        .args(args(
            &[
                "--set",
                "executor.poll_seconds=0.5",
                "--set",
                "executor.grace_seconds=2",
                "--set",
                "wait.params.seconds=4",
            ],
            &[],
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let driver = cmd.spawn().unwrap();
    // Cancel the first task seen running, mid-run.
    let started = Instant::now();
    let cancelled = loop {
        let out = Command::new("squeue")
            .args([
                "--me",
                "--states=RUNNING",
                "--array",
                "--noheader",
                "--format=%i|%j",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if let Some(line) = text.lines().find(|l| l.contains("|lmgeo-slow-")) {
            let id = line.split('|').next().unwrap().to_string();
            std::thread::sleep(Duration::from_millis(500));
            assert!(Command::new("scancel").arg(&id).status().unwrap().success());
            break id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no task ever ran"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = driver.wait_with_output().unwrap();
    let run = Run { output };
    assert_eq!(
        run.code(),
        Some(1),
        "cancelled {cancelled}: {}",
        run.stderr()
    );
    assert!(run.stderr().contains("CANCELLED"), "{}", run.stderr());
    let survived = computed_keys(&store);
    assert!(
        !survived.is_empty(),
        "the other tasks committed their results"
    );

    let rerun = run_cmd(
        with_real_slurm(),
        &store,
        SLOW,
        &s.path("out"),
        &args(
            &[
                "--set",
                "executor.poll_seconds=0.5",
                "--set",
                "wait.params.seconds=4",
            ],
            &[],
        ),
    );
    assert!(rerun.success(), "{}", rerun.stderr());
    assert_eq!(results_csv(&s.path("out")), s.local_csv);
    let counts = computed_keys(&store);
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "nothing committed was recomputed: {counts:?}"
    );
}

#[test]
fn real_slurm_two_concurrent_runs_compute_each_key_once() {
    if !real_slurm() {
        return;
    }
    let _one = REAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new(SLOW, &["--set", "wait.params.seconds=2"]);
    let store = s.path("store");
    let spawn = |out: &str| {
        let mut cmd = with_real_slurm();
        cmd.arg("--store")
            .arg(&store)
            .args(["run", SLOW, "--json", "--out"])
            .arg(s.path(out))
            .args(args(
                &[
                    "--set",
                    "executor.poll_seconds=0.5",
                    "--set",
                    "wait.params.seconds=2",
                ],
                &[],
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    let a = spawn("out-a");
    let b = spawn("out-b");
    for (name, child) in [("a", a), ("b", b)] {
        let run = Run {
            output: child.wait_with_output().unwrap(),
        };
        assert!(run.success(), "run {name}: {}", run.stderr());
    }
    assert_eq!(results_csv(&s.path("out-a")), s.local_csv);
    assert_eq!(results_csv(&s.path("out-b")), s.local_csv);
    let counts = computed_keys(&store);
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "a key was computed twice: {counts:?}"
    );
}
