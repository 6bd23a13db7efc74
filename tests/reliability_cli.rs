//! Reliability through the `lmgeo` binary (RELIABILITY.md): `lmgeo verify`,
//! concurrent runs of one experiment on one store (each key computed once,
//! counted by a command node that appends to a log), `gc` while a run is in
//! progress, a store on a filesystem that fills up, and a store that is or
//! becomes read-only. The last two mount a tmpfs and a read-only bind mount;
//! where mounting is not permitted they print why and skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Run, run, run_experiment};

const DEMO: &str = "experiments/demo.toml";

fn results_csv(out: &Path) -> String {
    std::fs::read_to_string(out.join("results.csv")).expect("results.csv written")
}

fn verify(store: &Path) -> Run {
    run(&["--store", store.to_str().unwrap(), "verify"])
}

/// An experiment whose `count` node is a command that appends its instance
/// id to `$COUNT_LOG` each time it computes (and sleeps `sleep` seconds, so
/// that concurrent runs really overlap); `seeds` instances of each node.
fn counting_experiment(dir: &Path, seeds: usize, sleep: f64) -> PathBuf {
    let script = dir.join("count.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -eu\nprintf '%s\\n' \"$LMGEO_NODE\" >> \"$COUNT_LOG\"\nsleep {sleep}\nprintf '[{{\"metric\": \"counted\", \"value\": 1}}]' > \"$LMGEO_OUTPUT_DIR/metrics.json\"\n"
        ),
    )
    .unwrap();
    let seeds: Vec<String> = (1..=seeds).map(|s| s.to_string()).collect();
    let file = dir.join("count.toml");
    std::fs::write(
        &file,
        format!(
            r#"name = "count"
[grid]
seed = [{}]

[nodes.data]
kind = "synthetic_matrix"
seed = "${{seed}}"
rows = 32
cols = 16
texts = 2

[nodes.stats]
kind = "matrix_stats"
inputs = {{ matrix = "data.embeddings" }}

[nodes.count]
kind = "command"
command = ["sh", "{}"]
version = 1
ports = {{ table = "one" }}
inputs = {{ table = "data.embeddings" }}
timeout = 60

[nodes.all]
kind = "summarize"
inputs = {{ values = "stats.metrics[*]" }}
"#,
            seeds.join(", "),
            script.display()
        ),
    )
    .unwrap();
    file
}

/// A running `lmgeo`, killed if the test fails before waiting for it.
struct Running(Option<Child>);

impl Running {
    fn wait(mut self) -> Run {
        let child = self.0.take().expect("waited once");
        Run {
            output: child.wait_with_output().unwrap(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_run(file: &Path, store: &Path, out: &Path, log: &Path, extra: &[&str]) -> Running {
    let mut cmd = common::lmgeo();
    cmd.env("COUNT_LOG", log);
    let child = common::run_args(&mut cmd, file, store, out, extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lmgeo starts");
    Running(Some(child))
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn verify_passes_on_a_clean_store_and_lists_corrupt_and_missing_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = tmp.path().join("out");
    assert!(run_experiment(Path::new(DEMO), &store, &out, &[]).success());
    let clean = verify(&store);
    assert!(clean.success(), "{}{}", clean.stdout(), clean.stderr());
    assert!(
        clean.stdout().contains("store is consistent"),
        "{}",
        clean.stdout()
    );

    let mut objects: Vec<PathBuf> = common::snapshot(&store.join("objects"))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    objects.sort();
    let (flipped, deleted) = (&objects[0], &objects[1]);
    let mut bytes = std::fs::read(flipped).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(flipped, bytes).unwrap();
    std::fs::remove_file(deleted).unwrap();
    let broken = verify(&store);
    assert_eq!(broken.code(), Some(1), "{}", broken.stderr());
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().to_string();
    let stderr = broken.stderr();
    assert!(
        stderr.contains(&format!("blob {} does not match its digest", name(flipped))),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("blob {} is missing", name(deleted))),
        "{stderr}"
    );
    assert!(stderr.contains("is NOT consistent"), "{stderr}");

    // A run repairs what it needs; verify then passes again (the old,
    // now unreferenced records are replaced by the recomputed ones).
    let rerun = run_experiment(Path::new(DEMO), &store, &out, &[]);
    assert!(rerun.success(), "{}", rerun.stderr());
    let repaired = verify(&store);
    assert!(repaired.success(), "{}", repaired.stderr());

    let missing = verify(&tmp.path().join("no-such-store"));
    assert_eq!(missing.code(), Some(2));
    assert!(
        missing.stderr().contains("is not an lmgeo store"),
        "{}",
        missing.stderr()
    );
    assert!(
        !tmp.path().join("no-such-store").exists(),
        "verify creates nothing"
    );
}

/// `processes` runs of one experiment on one store at once: every run
/// succeeds with the same results, and every node is computed by exactly one
/// of them: the command node's log has one line per instance, and the runs'
/// `ran` counts add up to the number of nodes.
fn concurrent_runs_compute_each_key_once(processes: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let seeds = 6;
    let file = counting_experiment(tmp.path(), seeds, 0.3);
    let store = tmp.path().join("store");
    let log = tmp.path().join("count.log");
    let children: Vec<(PathBuf, Running)> = (0..processes)
        .map(|p| {
            let out = tmp.path().join(format!("out-{p}"));
            let child = spawn_run(&file, &store, &out, &log, &["--jobs", "2"]);
            (out, child)
        })
        .collect();
    let mut ran = 0;
    let mut csvs = Vec::new();
    for (out, child) in children {
        let result = child.wait();
        assert!(result.success(), "{}", result.stderr());
        ran += result.summary()["ran"].as_u64().unwrap();
        csvs.push(results_csv(&out));
    }
    let nodes = (3 * seeds + 1) as u64;
    assert_eq!(ran, nodes, "each node is computed by exactly one process");
    let mut lines = log_lines(&log);
    assert_eq!(lines.len(), seeds, "{lines:?}");
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), seeds, "no command instance ran twice");
    assert!(csvs.windows(2).all(|w| w[0] == w[1]));
    assert!(verify(&store).success());
    // And the store serves a fully cached run that computes nothing more.
    let again = spawn_run(&file, &store, &tmp.path().join("again"), &log, &[]).wait();
    assert_eq!(again.summary()["ran"], 0);
    assert_eq!(log_lines(&log).len(), seeds);
}

#[test]
fn two_concurrent_runs_compute_each_key_once() {
    concurrent_runs_compute_each_key_once(2);
}

#[test]
fn four_concurrent_runs_compute_each_key_once() {
    concurrent_runs_compute_each_key_once(4);
}

/// While a run is in progress, gc refuses (and deletes nothing); with
/// `--force` it collects unreachable entries but spares every key the live
/// run has resolved and every entry it has committed since it began: the
/// run completes without recomputing anything and the store verifies.
#[test]
fn gc_during_a_run_spares_what_the_run_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let seeds = 4;
    let file = counting_experiment(tmp.path(), seeds, 1.0);
    let store = tmp.path().join("store");
    let log = tmp.path().join("count.log");
    let store_arg = store.to_str().unwrap();
    // Something gc may collect: a demo variant no experiment named reaches.
    let old = run_experiment(
        Path::new(DEMO),
        &store,
        &tmp.path().join("old"),
        &["--set", "data.rows=16"],
    );
    assert!(old.success(), "{}", old.stderr());
    let old_actions = common::snapshot(&store.join("actions")).len();
    assert_eq!(old_actions, 15);
    // gc --force spares entries written since a live run began (less two
    // seconds for coarse clocks): the variant must be older than that.
    std::thread::sleep(Duration::from_millis(2500));

    let out = tmp.path().join("out");
    let child = spawn_run(&file, &store, &out, &log, &["--jobs", "1"]);
    let started = Instant::now();
    while log_lines(&log).len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run stalls"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let before = common::snapshot(&store.join("actions"));
    let refused = run(&["--store", store_arg, "gc", DEMO, "--keep-runs", "0"]);
    assert!(!refused.success(), "{}", refused.stdout());
    assert!(
        refused.stderr().contains("in progress"),
        "{}",
        refused.stderr()
    );
    let after_refusal = common::snapshot(&store.join("actions"));
    assert!(
        before.iter().all(|entry| after_refusal.contains(entry)),
        "a refused gc deletes nothing"
    );

    let forced = run(&[
        "--store",
        store_arg,
        "gc",
        DEMO,
        "--keep-runs",
        "0",
        "--force",
    ]);
    assert!(forced.success(), "{}", forced.stderr());
    assert!(
        forced.stdout().starts_with("deleted "),
        "{}",
        forced.stdout()
    );
    assert!(
        !forced.stdout().starts_with("deleted 0 "),
        "the unreachable demo variant is collected: {}",
        forced.stdout()
    );

    let result = child.wait();
    assert!(result.success(), "{}", result.stderr());
    let nodes = (3 * seeds + 1) as u64;
    assert_eq!(result.summary()["ran"], nodes, "nothing was computed twice");
    assert_eq!(log_lines(&log).len(), seeds, "no command instance reran");
    let check = verify(&store);
    assert!(check.success(), "{}", check.stderr());
    let again = spawn_run(&file, &store, &tmp.path().join("again"), &log, &[]).wait();
    assert_eq!(
        again.summary()["ran"],
        0,
        "the live run's entries survived gc"
    );
    assert_eq!(results_csv(&tmp.path().join("again")), results_csv(&out));
}

/// A mount made for one test, unmounted (lazily) when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], target: &Path) -> Result<Mount, String> {
    let output = Command::new("mount")
        .args(args)
        .arg(target)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if output.status.success() {
        Ok(Mount(target.to_path_buf()))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// Remounts with new options. Making a bind mount read-only fails (EBUSY)
/// while a file on it is open for writing, so this retries for a while.
fn remount(target: &Path, options: &str) {
    let started = Instant::now();
    loop {
        let output = Command::new("mount")
            .args(["-o", options])
            .arg(target)
            .output()
            .unwrap();
        if output.status.success() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "mount -o {options} {}: {}",
            target.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The demo, heavy enough (about 24 MiB of blobs) to fill a small tmpfs.
const HEAVY: [&str; 6] = [
    "--set",
    "data.rows=128",
    "--set",
    "data.cols=128",
    "--set",
    "data.texts=32",
];

fn assert_clean_failure(result: &Run, store: &Path, cause: &str) {
    let stderr = result.stderr();
    assert_ne!(result.code(), Some(101), "a panic: {stderr}");
    assert!(!result.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(cause), "the cause is named: {stderr}");
    assert!(
        stderr.contains(store.to_str().unwrap()),
        "the store is named: {stderr}"
    );
}

#[test]
fn a_store_that_fills_up_fails_clearly_and_stays_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = run_experiment(
        Path::new(DEMO),
        &tmp.path().join("reference"),
        &tmp.path().join("reference-out"),
        &HEAVY,
    );
    assert!(reference.success(), "{}", reference.stderr());
    let disk = tmp.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let _mount = match mount(&["-t", "tmpfs", "-o", "size=6m", "tmpfs"], &disk) {
        Ok(m) => m,
        Err(reason) => {
            eprintln!("SKIPPED: cannot mount a small tmpfs here ({reason})");
            return;
        }
    };
    let store = disk.join("store");
    let out = tmp.path().join("out");
    let full = run_experiment(Path::new(DEMO), &store, &out, &HEAVY);
    assert_clean_failure(&full, &store, "No space left on device");
    let check = verify(&store);
    assert!(check.success(), "{}{}", check.stdout(), check.stderr());

    // Space freed: the same store completes and gives the reference results.
    remount(&disk, "remount,size=256m");
    let rerun = run_experiment(Path::new(DEMO), &store, &out, &HEAVY);
    assert!(rerun.success(), "{}", rerun.stderr());
    assert_eq!(
        results_csv(&out),
        results_csv(&tmp.path().join("reference-out"))
    );
    assert!(verify(&store).success());
}

#[test]
fn a_read_only_store_serves_what_is_cached_fails_clearly_otherwise_and_stays_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    let store_mount = tmp.path().join("mounted");
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&store_mount).unwrap();
    let _mount = match mount(&["--bind", backing.to_str().unwrap()], &store_mount) {
        Ok(m) => m,
        Err(reason) => {
            eprintln!("SKIPPED: cannot bind-mount here ({reason})");
            return;
        }
    };
    let store = store_mount.join("store");
    let out = tmp.path().join("out");
    let log = tmp.path().join("count.log");
    let file = counting_experiment(tmp.path(), 6, 0.4);
    let first = run_experiment(Path::new(DEMO), &store, &out, &[]);
    assert!(first.success(), "{}", first.stderr());

    // Read-only from the start: a run whose nodes are all cached is served
    // from the store and writes nothing to it.
    remount(&store_mount, "remount,ro,bind");
    let runs_before = std::fs::read_dir(store.join("runs")).unwrap().count();
    let served_out = tmp.path().join("served");
    let served = run_experiment(Path::new(DEMO), &store, &served_out, &[]);
    assert!(served.success(), "{}", served.stderr());
    assert!(
        served.stderr().contains("no run record was kept"),
        "{}",
        served.stderr()
    );
    assert_eq!(served.summary()["ran"], 0, "{}", served.stdout());
    assert_eq!(results_csv(&served_out), results_csv(&out));
    assert_eq!(
        std::fs::read_dir(store.join("runs")).unwrap().count(),
        runs_before,
        "a served run left a run folder"
    );

    // A run that must compute fails at once.
    let ro = run_experiment(Path::new(DEMO), &store, &out, &["--set", "data.rows=32"]);
    assert_clean_failure(&ro, &store, "Read-only file system");
    assert!(verify(&store).success(), "verify reads only");

    // Read-only in the middle of a run.
    remount(&store_mount, "remount,rw,bind");
    let child = spawn_run(
        &file,
        &store,
        &tmp.path().join("count-out"),
        &log,
        &["--jobs", "1"],
    );
    let started = Instant::now();
    while log_lines(&log).len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run stalls"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    remount(&store_mount, "remount,ro,bind");
    let midway = child.wait();
    assert_clean_failure(&midway, &store, "Read-only file system");
    let check = verify(&store);
    assert!(check.success(), "{}{}", check.stdout(), check.stderr());

    // Writable again: the run completes from what was stored.
    remount(&store_mount, "remount,rw,bind");
    let rerun = spawn_run(&file, &store, &tmp.path().join("count-out"), &log, &[]).wait();
    assert!(rerun.success(), "{}", rerun.stderr());
    assert!(verify(&store).success());
}
