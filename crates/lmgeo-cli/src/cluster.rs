//! `run --executor slurm`, the task side (`run-node`) and `status`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indexmap::IndexMap;
use lmgeo_dag::execution::{ExecutorKind, ExecutorSettings, ResourceTables, Resources};
use lmgeo_dag::scheduler::{Silent, Status};
use lmgeo_dag::{Graph, Overrides, Registry, Store};
use lmgeo_slurm::{DriverOptions, Progress, RunSpec, SlurmCli};
use serde::Deserialize;

use crate::{ExecutorArg, ExperimentArgs, INTERRUPTED};

/// The user's own defaults: `[executor]` and `[resources.*]` as in an
/// experiment file, in `$LMGEO_CONFIG`, else
/// `$XDG_CONFIG_HOME/lmgeo/config.toml` (or `~/.config/lmgeo/config.toml`).
#[derive(Debug, Default)]
pub struct UserConfig {
    pub executor: ExecutorSettings,
    pub resources: ResourceTables,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UserConfigFile {
    #[serde(default)]
    executor: ExecutorSettings,
    #[serde(default)]
    resources: IndexMap<String, Resources>,
}

impl UserConfig {
    pub fn load() -> Result<UserConfig, String> {
        let path = match std::env::var_os("LMGEO_CONFIG") {
            Some(p) => Some(PathBuf::from(p)),
            None => std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))
                .map(|dir| dir.join("lmgeo").join("config.toml"))
                .filter(|p| p.is_file()),
        };
        let Some(path) = path else {
            return Ok(UserConfig::default());
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read the configuration {}: {e}", path.display()))?;
        let file: UserConfigFile = toml::from_str(&text).map_err(|e| {
            format!(
                "{}: {}\n  help: it takes `[executor]` and `[resources.<kind or node>]` tables as an experiment file does",
                path.display(),
                e.to_string().trim()
            )
        })?;
        file.executor
            .check()
            .map_err(|m| format!("{}: in `[executor]`: {m}", path.display()))?;
        Ok(UserConfig {
            executor: file.executor,
            resources: ResourceTables(file.resources),
        })
    }
}

/// User configuration, then the experiment file, then the command line.
pub fn settings(
    user: &UserConfig,
    graph: &Graph,
    executor: Option<ExecutorArg>,
    detach: bool,
) -> ExecutorSettings {
    let command_line = ExecutorSettings {
        kind: executor.map(|e| match e {
            ExecutorArg::Local => ExecutorKind::Local,
            ExecutorArg::Slurm => ExecutorKind::Slurm,
        }),
        detach: detach.then_some(true),
        ..ExecutorSettings::default()
    };
    user.executor
        .layered(&graph.experiment.executor)
        .layered(&command_line)
}

/// The `LMGEO_<NODE>__<PARAM>` variables, which tasks must see as the
/// driver did.
fn env_overrides(args: &ExperimentArgs) -> Vec<(String, String)> {
    if args.no_env {
        return Vec::new();
    }
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("LMGEO_") && k.contains("__"))
        .collect();
    vars.sort();
    vars
}

#[allow(clippy::too_many_arguments)]
pub fn run_on_slurm(
    graph: &Graph,
    store: &Store,
    user: &UserConfig,
    settings: &ExecutorSettings,
    args: &ExperimentArgs,
    out: &Path,
    json: bool,
    keep_going: bool,
) -> anyhow::Result<ExitCode> {
    let run_dir = std::path::absolute(store.new_run_dir(&graph.experiment.name)?)?;
    let tag = &blake3::hash(run_dir.to_string_lossy().as_bytes()).to_hex()[..8];
    let prefix = settings
        .job_prefix
        .clone()
        .unwrap_or_else(|| "lmgeo".into());
    let run_id = format!("{prefix}-{}-{tag}", graph.experiment.name);
    let cwd = std::env::current_dir()?;
    let spec = RunSpec {
        run_id: run_id.clone(),
        experiment_file: std::path::absolute(&graph.experiment.file.path)?,
        experiment_text: graph.experiment.file.text.to_string(),
        set: args.set.clone(),
        env_overrides: env_overrides(args),
        cwd: cwd.clone(),
    };
    spec.write(&run_dir)?;
    let lmgeo = match &settings.lmgeo {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let options = DriverOptions {
        run_id: run_id.clone(),
        run_dir: run_dir.clone(),
        poll: Duration::from_secs_f64(settings.poll_seconds.unwrap_or(5.0)),
        grace: Duration::from_secs_f64(settings.grace_seconds.unwrap_or(60.0)),
        throttle: settings.array_throttle,
        lmgeo,
        cwd,
        extra_args: settings.sbatch_args.clone().unwrap_or_default(),
        keep_going,
        cancel: cancel.clone(),
    };
    let resources = user.resources.layered(&graph.experiment.resources);
    let slurm = SlurmCli::new();
    if settings.detach == Some(true) {
        let detached = lmgeo_slurm::submit_detached(graph, store, &resources, &slurm, &options)?;
        let jobs: Vec<String> = detached.waves.iter().map(|w| w.join(",")).collect();
        eprintln!(
            "{}: {} cached, {} submitted as {run_id} in {} wave(s): jobs {}",
            graph.experiment.name,
            detached.cached,
            detached.submitted,
            detached.waves.len(),
            if jobs.is_empty() {
                "none".into()
            } else {
                jobs.join(" then ")
            }
        );
        eprintln!(
            "  `lmgeo status` follows it; run the same `lmgeo run` again when it ends to collect the results from the store"
        );
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "run_id": run_id,
                    "cached": detached.cached,
                    "submitted": detached.submitted,
                    "waves": detached.waves,
                })
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    crate::interrupt_gracefully(&cancel);
    let show = |p: &Progress| eprintln!("slurm {run_id}: {}", p.line());
    let report = lmgeo_slurm::run_attached(graph, store, &resources, &slurm, &options, &show)?;
    let summary = crate::publish::collect_results(graph, store, &report, out, &args.set)?;
    crate::print_run_summary(graph, &report, &summary, json);
    Ok(if cancel.load(Ordering::SeqCst) {
        ExitCode::from(INTERRUPTED)
    } else if report.all_succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One Slurm task: rebuild the graph exactly as submitted, run one
/// instance idempotently, exit 0 if its key is committed.
pub fn run_node(
    store_path: &Path,
    run_dir: &Path,
    manifest: &Path,
    line: usize,
    registry: &Registry,
) -> ExitCode {
    let failed = |message: String| {
        eprintln!("lmgeo task: error: {message}");
        ExitCode::from(1)
    };
    let spec = match RunSpec::read(run_dir) {
        Ok(s) => s,
        Err(m) => return failed(m),
    };
    let task = match lmgeo_slurm::run::manifest_line(manifest, line) {
        Ok(t) => t,
        Err(m) => return failed(m),
    };
    // The task sees exactly the overrides the driver saw: the variables are
    // replaced before anything else runs (no other thread exists yet).
    for (key, _) in std::env::vars() {
        if key.starts_with("LMGEO_") && key.contains("__") {
            // SAFETY: single-threaded here; nothing reads the environment concurrently.
            unsafe { std::env::remove_var(&key) };
        }
    }
    for (key, value) in &spec.env_overrides {
        // SAFETY: as above.
        unsafe { std::env::set_var(key, value) };
    }
    let overrides = Overrides {
        set: spec.set.clone(),
        env: true,
    };
    let graph = lmgeo_dag::spec::parse(&spec.experiment_file, &spec.experiment_text, &overrides)
        .map_err(|e| e.to_string())
        .and_then(|experiment| lmgeo_dag::build(experiment, registry).map_err(|e| e.to_string()));
    let graph = match graph {
        Ok(g) => g,
        Err(m) => return failed(format!("the submitted experiment no longer builds: {m}")),
    };
    let Some(index) = graph.instances.iter().position(|i| i.id == task.instance) else {
        return failed(format!(
            "the experiment has no instance `{}` (was the binary changed since submission?)",
            task.instance
        ));
    };
    let store = match Store::open(store_path) {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    let cancel = Arc::new(AtomicBool::new(false));
    crate::interrupt_gracefully(&cancel);
    let job = std::env::var("SLURM_JOB_ID").unwrap_or_else(|_| "-".into());
    let host = lmgeo_dag::lock::hostname();
    eprintln!("lmgeo task: {} on {host} (job {job})", task.instance);
    let outcome = lmgeo_dag::scheduler::run_instance(
        &graph,
        &store,
        index,
        task.key.as_deref(),
        &cancel,
        &Silent,
        Some(&run_dir.join(lmgeo_dag::scheduler::KEYS_LOG)),
    );
    let key = outcome.key.clone().unwrap_or_else(|| "-".into());
    match &outcome.status {
        Status::Ran => {
            // Tests count these lines to check each key is computed once.
            println!(
                "lmgeo task: computed {} {key} in {:.1}s",
                task.instance,
                outcome.elapsed.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Status::Cached => {
            println!("lmgeo task: already in the store {} {key}", task.instance);
            ExitCode::SUCCESS
        }
        Status::Failed(m) => failed(format!("{}: {m}", task.instance)),
        other => failed(format!("{}: {other}", task.instance)),
    }
}

/// Recent runs, newest last.
pub fn status(store_path: &Path, runs: usize) -> anyhow::Result<ExitCode> {
    let store = Store::open(store_path)?;
    let all = store.runs();
    if all.is_empty() {
        println!("no runs in {}", store_path.display());
        return Ok(ExitCode::SUCCESS);
    }
    for run in all.iter().skip(all.len().saturating_sub(runs)) {
        let name = run
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if let Some(mut progress) = Progress::read(run) {
            if !progress.finished && progress.mode == "detached" {
                live_counts(&mut progress);
            }
            println!(
                "{name}  slurm ({}{})  {}",
                progress.mode,
                if progress.finished { ", ended" } else { "" },
                progress.line()
            );
            for f in &progress.failures {
                println!(
                    "  FAILED {} (task {}, {}), log {}",
                    f.instance,
                    f.job,
                    f.state,
                    f.log.display()
                );
                for line in f.log_tail.lines() {
                    println!("    | {line}");
                }
            }
        } else if let Ok(Some(record)) = lmgeo_dag::RunRecord::read(run) {
            let mut counts = std::collections::BTreeMap::<&str, usize>::new();
            for instance in &record.instances {
                *counts.entry(instance.status.word()).or_default() += 1;
            }
            let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
            println!("{name}  local  {}", counts.join(", "));
        } else {
            println!("{name}  running or interrupted (no record yet)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A detached run's counts from the queue, when `squeue` answers.
fn live_counts(progress: &mut Progress) {
    use lmgeo_slurm::Slurm;
    let Ok(queue) = SlurmCli::new().queue(&progress.run_id) else {
        return;
    };
    progress.pending = queue.iter().filter(|e| e.state.name() == "PENDING").count();
    progress.running = queue.iter().filter(|e| e.state.name() == "RUNNING").count();
    progress.done = queue
        .iter()
        .filter(|e| e.state.name() == "COMPLETED")
        .count();
    progress.failed = queue
        .iter()
        .filter(|e| {
            matches!(e.state, lmgeo_slurm::commands::JobState::Ended(_))
                && e.state.name() != "COMPLETED"
        })
        .count();
    progress.cached = 0;
}
