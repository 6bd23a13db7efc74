//! `cargo xtask reliability crash`: SIGKILL a real-model run at random
//! moments and check that the store stays consistent and a rerun gives the
//! reference results (RELIABILITY.md, "Crash safety").
//!
//! One reference run to completion in a fresh store gives the results table
//! and the duration D. Each trial then starts the same run in a fresh store,
//! kills it (SIGKILL) at a moment drawn uniformly from [0, D) (a fifth of the
//! trials kill a second, resumed run too), runs `lmgeo verify`, reruns to
//! completion and compares `results.csv` and `results.parquet` with the
//! reference byte for byte. Result files the killed run left in its output
//! folder must be absent or whole (equal to the reference), never torn. The
//! stage a kill hit is read from the store: the extraction's action not yet
//! committed = extraction; some probe's not yet = probes; all committed =
//! writing the results and the report. When uniform draws leave a stage with
//! fewer than three kills, extra trials wait until that stage begins (its
//! predecessors' actions are committed) and kill after a delay drawn
//! uniformly over the stage's length in the reference run; they are counted
//! separately.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

const WORKLOAD: &str = "tests/fixtures/reliability-crash.toml";
const STAGES: [&str; 3] = ["extraction", "probes", "report writing"];
const RESULT_FILES: [&str; 2] = ["results.csv", "results.parquet"];

pub fn main(binary: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut trials = 50usize;
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut keep = false;
    let mut file = PathBuf::from(WORKLOAD);
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("crash") => {}
        _ => bail!(
            "usage: cargo xtask reliability crash [--trials N] [--seed S] [--file EXPERIMENT] [--keep]"
        ),
    }
    while let Some(arg) = it.next() {
        let mut value = || it.next().context("a value after the option");
        match arg.as_str() {
            "--trials" => trials = value()?.parse().context("--trials")?,
            "--seed" => seed = value()?.parse().context("--seed")?,
            "--file" => file = PathBuf::from(value()?),
            "--keep" => keep = true,
            other => bail!("unknown option `{other}`"),
        }
    }
    let work = super::target_dir()
        .join("reliability")
        .join(format!("crash-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    eprintln!(
        "crash trials: {} on {}, seed {seed}, work folder {}",
        trials,
        file.display(),
        work.display()
    );
    let lmgeo = Lmgeo {
        binary: binary.to_path_buf(),
        file,
    };

    // The reference: a fresh store, run to completion, timed.
    let reference_dir = work.join("reference");
    let started_ms = now_ms();
    let started = Instant::now();
    let reference = lmgeo.run(&reference_dir, &[])?;
    let duration = started.elapsed();
    if !reference.status.success() {
        bail!(
            "the reference run failed:\n{}",
            String::from_utf8_lossy(&reference.stderr)
        );
    }
    let expected: Vec<Vec<u8>> = RESULT_FILES
        .iter()
        .map(|f| std::fs::read(reference_dir.join("out").join(f)))
        .collect::<Result<_, _>>()
        .context("reading the reference results")?;
    let nodes = node_keys(&reference_dir.join("out"))?;
    let windows = stage_windows(&reference_dir.join("store"), &nodes, started_ms, duration)?;
    eprintln!(
        "reference: {:.1} s; stage windows {}",
        duration.as_secs_f64(),
        windows
            .iter()
            .zip(STAGES)
            .map(|((a, b), s)| format!("{s} {:.2}-{:.2} s", a.as_secs_f64(), b.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Where a stage begins, for targeted kills: the run's start, the
    // extraction's commit, every node's commit.
    let extraction_keys: Vec<String> = nodes
        .iter()
        .filter(|(kind, _)| is_extraction(kind))
        .map(|(_, key)| key.clone())
        .collect();
    let all_keys: Vec<String> = nodes.iter().map(|(_, key)| key.clone()).collect();
    let stage_starts = [Vec::new(), extraction_keys, all_keys];
    let mut rng = SplitMix(seed);
    let mut tally = Tally::default();
    let mut trial = 0usize;
    loop {
        // A uniform trial draws its moment over the whole reference run,
        // from the start; a targeted one over a thin stage's length in the
        // reference run, from the moment that stage begins in this run.
        let (uniform, after, span) = if trial < trials {
            (true, &stage_starts[0], duration)
        } else {
            let thin = (0..3).find(|&s| tally.kills_uniform[s] + tally.kills_targeted[s] < 3);
            match thin {
                Some(s) if trial < trials + 15 => {
                    (false, &stage_starts[s], windows[s].1 - windows[s].0)
                }
                _ => break,
            }
        };
        let dir = work.join(format!("trial-{trial:03}"));
        let rounds = if uniform && trial % 5 == 4 { 2 } else { 1 };
        let mut line = format!("trial {trial:3}:");
        let mut trial_ok = true;
        for round in 0..rounds {
            let at = span.mul_f64(rng.unit());
            let after = if round == 0 { after.as_slice() } else { &[] };
            let outcome = lmgeo.kill_at(&dir, after, at)?;
            match outcome {
                Killed::Finished => {
                    tally.finished_before_kill += 1;
                    line += &format!(" [{:.2} s: finished first]", at.as_secs_f64());
                }
                Killed::Killed => {
                    let stage = stage_of(&dir.join("store"), &nodes);
                    // Resumable pieces the extraction had committed: what
                    // the rerun starts from.
                    let pieces = stored_pieces(&dir.join("store"), &nodes);
                    if stage == 0 && pieces > 0 {
                        tally.extraction_kills_with_pieces += 1;
                    }
                    if uniform {
                        tally.kills_uniform[stage] += 1;
                    } else {
                        tally.kills_targeted[stage] += 1;
                    }
                    line += &format!(
                        " [kill{} at {:.2} s: {}, {pieces} pieces stored]",
                        if round == 1 {
                            " of the resumed run"
                        } else {
                            ""
                        },
                        at.as_secs_f64(),
                        STAGES[stage]
                    );
                }
            }
            // What the killed run left in its output folder is absent or whole.
            for (name, want) in RESULT_FILES.iter().zip(&expected) {
                if let Ok(bytes) = std::fs::read(dir.join("out").join(name))
                    && &bytes != want
                {
                    tally.torn_outputs += 1;
                    trial_ok = false;
                    line += &format!(" TORN {name} ({} bytes)", bytes.len());
                }
            }
            let verify = lmgeo.verify(&dir.join("store"))?;
            tally.verify_after_kill += 1;
            if !verify.status.success() {
                tally.verify_failures_after_kill += 1;
                trial_ok = false;
                line += &format!(
                    " VERIFY FAILED:\n{}",
                    String::from_utf8_lossy(&verify.stderr)
                );
            }
        }
        let rerun = lmgeo.run(&dir, &[])?;
        if !rerun.status.success() {
            tally.rerun_failures += 1;
            trial_ok = false;
            line += &format!(
                " RERUN FAILED ({:?}):\n{}",
                rerun.status.code(),
                String::from_utf8_lossy(&rerun.stderr)
            );
        } else {
            let summary = summary(&rerun.stdout);
            line += &format!(" rerun ran {} cached {}", summary["ran"], summary["cached"]);
            for (name, want) in RESULT_FILES.iter().zip(&expected) {
                let got = std::fs::read(dir.join("out").join(name)).unwrap_or_default();
                if &got != want {
                    tally.mismatches += 1;
                    trial_ok = false;
                    line += &format!(" MISMATCH {name}");
                }
            }
        }
        let verify = lmgeo.verify(&dir.join("store"))?;
        tally.verify_after_rerun += 1;
        if !verify.status.success() {
            tally.verify_failures_after_rerun += 1;
            trial_ok = false;
            line += " VERIFY FAILED AFTER THE RERUN";
        }
        eprintln!("{line}");
        if trial_ok && !keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        trial += 1;
    }

    println!("crash safety: {}, seed {seed}", lmgeo.file.display());
    println!("  reference run            {:.1} s", duration.as_secs_f64());
    println!(
        "  trials                   {trial} ({trials} uniform over the run, {} targeted at thin stages)",
        trial - trials
    );
    for (s, name) in STAGES.iter().enumerate() {
        println!(
            "  kills in {name:<16}{:>3} uniform + {} targeted",
            tally.kills_uniform[s], tally.kills_targeted[s]
        );
    }
    println!("  run finished before kill {}", tally.finished_before_kill);
    println!(
        "  extraction kills with stored pieces {} (the rerun resumes from them)",
        tally.extraction_kills_with_pieces
    );
    println!(
        "  verify after a kill      {} runs, {} failures",
        tally.verify_after_kill, tally.verify_failures_after_kill
    );
    println!(
        "  verify after the rerun   {} runs, {} failures",
        tally.verify_after_rerun, tally.verify_failures_after_rerun
    );
    println!("  torn result files        {}", tally.torn_outputs);
    println!("  reruns that failed       {}", tally.rerun_failures);
    println!("  result mismatches        {}", tally.mismatches);
    let failures = tally.verify_failures_after_kill
        + tally.verify_failures_after_rerun
        + tally.torn_outputs
        + tally.rerun_failures
        + tally.mismatches;
    if failures > 0 {
        bail!(
            "{failures} failure(s); the failing trials' folders are kept under {}",
            work.display()
        );
    }
    if !keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    kills_uniform: [usize; 3],
    kills_targeted: [usize; 3],
    finished_before_kill: usize,
    extraction_kills_with_pieces: usize,
    verify_after_kill: usize,
    verify_failures_after_kill: usize,
    verify_after_rerun: usize,
    verify_failures_after_rerun: usize,
    torn_outputs: usize,
    rerun_failures: usize,
    mismatches: usize,
}

enum Killed {
    Killed,
    Finished,
}

struct Lmgeo {
    binary: PathBuf,
    file: PathBuf,
}

impl Lmgeo {
    fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--store")
            .arg(dir.join("store"))
            .arg("run")
            .arg(&self.file)
            .arg("--json")
            .arg("--out")
            .arg(dir.join("out"));
        cmd
    }

    fn run(&self, dir: &Path, extra: &[&str]) -> anyhow::Result<std::process::Output> {
        self.command(dir)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .context("running lmgeo")
    }

    /// Starts a run and SIGKILLs it `at` after every key of `after` is
    /// committed in its store (after its start when `after` is empty).
    fn kill_at(&self, dir: &Path, after: &[String], at: Duration) -> anyhow::Result<Killed> {
        let mut child = self
            .command(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting lmgeo")?;
        let store = dir.join("store");
        while !after.iter().all(|key| committed(&store, key)) {
            if child.try_wait()?.is_some() {
                return Ok(Killed::Finished);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let started = Instant::now();
        // Poll so that a run that ends early is not reported as killed.
        while started.elapsed() < at {
            if child.try_wait()?.is_some() {
                return Ok(Killed::Finished);
            }
            std::thread::sleep((at - started.elapsed()).min(Duration::from_millis(5)));
        }
        if child.try_wait()?.is_some() {
            return Ok(Killed::Finished);
        }
        child.kill().context("SIGKILL")?;
        child.wait()?;
        Ok(Killed::Killed)
    }

    fn verify(&self, store: &Path) -> anyhow::Result<std::process::Output> {
        Command::new(&self.binary)
            .arg("--store")
            .arg(store)
            .arg("verify")
            .output()
            .context("running lmgeo verify")
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn summary(stdout: &[u8]) -> serde_json::Value {
    String::from_utf8_lossy(stdout)
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// `(kind, key)` of every node of the reference run, in graph order.
fn node_keys(out: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(out.join("run.json"))?;
    let run: serde_json::Value = serde_json::from_str(&text)?;
    run["nodes"]
        .as_array()
        .context("run.json has no nodes")?
        .iter()
        .map(|n| {
            Ok((
                n["kind"].as_str().context("kind")?.to_string(),
                n["key"].as_str().context("key")?.to_string(),
            ))
        })
        .collect()
}

fn is_extraction(kind: &str) -> bool {
    matches!(kind, "corpus" | "extract")
}

fn committed(store: &Path, key: &str) -> bool {
    store
        .join("actions")
        .join(&key[..2])
        .join(format!("{key}.json"))
        .is_file()
}

/// Action records in the store that are not a node's: the extraction's
/// committed pieces (`RunContext::chunk`).
fn stored_pieces(store: &Path, nodes: &[(String, String)]) -> usize {
    let nodes: std::collections::BTreeSet<String> =
        nodes.iter().map(|(_, key)| format!("{key}.json")).collect();
    std::fs::read_dir(store.join("actions"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|shard| {
            std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|e| !nodes.contains(&e.file_name().to_string_lossy().to_string()))
        .count()
}

/// Which stage a killed run was in, from what its store holds.
fn stage_of(store: &Path, nodes: &[(String, String)]) -> usize {
    let all_of = |extraction: bool| {
        nodes
            .iter()
            .filter(|(kind, _)| is_extraction(kind) == extraction)
            .all(|(_, key)| committed(store, key))
    };
    if !all_of(true) {
        0
    } else if !all_of(false) {
        1
    } else {
        2
    }
}

/// Each stage's span in the reference run, from its action records' commit
/// times (relative to the start of the process).
fn stage_windows(
    store: &Path,
    nodes: &[(String, String)],
    started_ms: u128,
    duration: Duration,
) -> anyhow::Result<[(Duration, Duration); 3]> {
    let mut ends: BTreeMap<bool, u128> = BTreeMap::new();
    for (kind, key) in nodes {
        let path = store
            .join("actions")
            .join(&key[..2])
            .join(format!("{key}.json"));
        let action: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        let created = action["created_unix_ms"]
            .as_u64()
            .context("created_unix_ms")? as u128;
        let end = ends.entry(is_extraction(kind)).or_default();
        *end = (*end).max(created.saturating_sub(started_ms));
    }
    let at = |ms: u128| Duration::from_millis(ms as u64).min(duration);
    let extraction = at(ends.get(&true).copied().unwrap_or(0));
    let probes = at(ends.get(&false).copied().unwrap_or(0)).max(extraction);
    Ok([
        (Duration::ZERO, extraction),
        (extraction, probes),
        (probes, duration),
    ])
}

/// splitmix64: a seeded, dependency-free source of kill moments.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}
