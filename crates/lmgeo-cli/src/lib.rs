//! The `lmgeo` command line, as a library so that a plugin crate can build
//! its own binary with extra node kinds in one line:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     lmgeo_nodes::model::keep_freed_buffers_for_reuse(); // as `lmgeo` does
//!     let mut registry = lmgeo_nodes::builtin_registry();
//!     registry.register(my_probe::ParticipationRatio);
//!     lmgeo_cli::main_with(registry)
//! }
//! ```

mod cluster;
mod diagnostics;
mod progress;
mod publish;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand, ValueEnum};
use lmgeo_dag::scheduler::PlanEntry;
use lmgeo_dag::{Graph, Overrides, PlanStatus, Registry, RunOptions, RunRecord, Status, Store};

pub use publish::{RunSummary, collect_results};

/// Validation errors as `lmgeo` prints them: each `file:line:col: message`
/// line, the source with the span underlined, and the help.
pub fn render_spec_errors(errors: &lmgeo_dag::SpecErrors, color: bool) -> String {
    diagnostics::render(errors, color)
}

/// Declarative, cached experiments on the geometry of LLM representations.
#[derive(Parser, Debug)]
#[command(name = "lmgeo", version, about, long_about = None)]
pub struct Cli {
    /// The store of cached results.
    #[arg(long, global = true, env = "LMGEO_STORE", default_value = "cache")]
    pub store: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ExperimentArgs {
    /// The experiment file.
    pub file: PathBuf,
    /// Override a parameter: `node.param=value` (values parse as TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Ignore `LMGEO_<NODE>__<PARAM>` environment overrides.
    #[arg(long)]
    pub no_env: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run an experiment: cached nodes are reused, the rest computed.
    Run {
        #[command(flatten)]
        experiment: ExperimentArgs,
        /// Output folder (default: results/<experiment name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print a machine-readable summary on stdout.
        #[arg(long)]
        json: bool,
        /// Nodes running at once (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Heavy nodes (model loads) running at once.
        #[arg(long, default_value_t = 1)]
        max_heavy: usize,
        /// Stop starting new nodes after the first failure (by default,
        /// nodes that do not depend on a failed one still run).
        #[arg(long)]
        fail_fast: bool,
        /// Where nodes that miss the cache run (default: `[executor] kind`
        /// of the experiment or user configuration, else local).
        #[arg(long, value_enum)]
        executor: Option<ExecutorArg>,
        /// Slurm: submit every wave with dependencies and return at once; a
        /// later `lmgeo run` collects the results.
        #[arg(long)]
        detach: bool,
    },
    /// Runs one node instance of a submitted run (what a Slurm task does).
    #[command(hide = true)]
    RunNode {
        /// The run folder (holds spec.json).
        #[arg(long)]
        run: PathBuf,
        /// The array's manifest.
        #[arg(long)]
        manifest: PathBuf,
        /// The manifest line (the array task id).
        #[arg(long)]
        line: usize,
    },
    /// Show recent runs: executor, counts, Slurm jobs and failed tasks.
    Status {
        /// How many recent runs to show.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Show what a run would do: each node cached, to run (and why) or blocked.
    Plan {
        #[command(flatten)]
        experiment: ExperimentArgs,
    },
    /// Explain one node: its key, what it depends on, why it would rerun.
    Explain {
        #[command(flatten)]
        experiment: ExperimentArgs,
        /// The node instance, e.g. `entropy[model=smollm2-135m]` (or a node
        /// name, for all its instances).
        node: String,
    },
    /// Print the graph of node instances.
    Dag {
        #[command(flatten)]
        experiment: ExperimentArgs,
        #[arg(long, value_enum, default_value_t = DagFormat::Mermaid)]
        format: DagFormat,
    },
    /// Pretty-print a result table (a Parquet file or a results folder).
    Show {
        path: PathBuf,
        /// Rows to print.
        #[arg(long, default_value_t = 40)]
        rows: usize,
        /// Keep rows whose `metric` column equals this.
        #[arg(long)]
        metric: Option<String>,
        /// Also print the `experiment` and `params` columns.
        #[arg(long)]
        all_columns: bool,
    },
    /// Remove store entries that no experiment and no recent run reaches.
    Gc {
        /// Experiment files whose results to keep (default: experiments/*.toml).
        experiments: Vec<PathBuf>,
        /// Also keep everything the last N runs used.
        #[arg(long, default_value_t = 10)]
        keep_runs: usize,
        /// List what would be deleted, with sizes, and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Collect even while a run on this host is in progress (it may then
        /// lose inputs it has not read yet).
        #[arg(long)]
        force: bool,
    },
    /// Check the store: every committed action's blobs exist and match
    /// their blake3 digests, every object hashes to its name, every record
    /// parses. Exits 1 and lists the problems otherwise.
    Verify,
    /// List the node kinds this binary knows.
    Kinds,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorArg {
    Local,
    Slurm,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum DagFormat {
    Mermaid,
    Dot,
}

/// Runs the command line with the given node kinds; returns the exit code.
pub fn main_with(registry: Registry) -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    match dispatch(cli, &registry) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line, `a: b: c`, leaving out a cause
/// whose text its parent already shows (`StoreError::Io` prints its
/// `io::Error`, which is also its source).
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// Refuses an `--out` that cannot become the results folder, before
/// anything runs: otherwise the run computes everything and fails when it
/// publishes.
fn check_out_folder(out: &Path) -> Result<(), String> {
    if out.exists() && !out.is_dir() {
        return Err(format!(
            "--out {} is a file, not a folder: results are written as a folder; choose another --out (or remove the file)",
            out.display()
        ));
    }
    if let Some(file) = out
        .ancestors()
        .skip(1)
        .find(|a| !a.as_os_str().is_empty() && a.exists() && !a.is_dir())
    {
        return Err(format!(
            "--out {}: {} is a file, so no folder can be made under it; choose another --out",
            out.display(),
            file.display()
        ));
    }
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LMGEO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Exit code for an experiment that failed validation.
pub(crate) const INVALID: u8 = 2;

/// Exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub(crate) const INTERRUPTED: u8 = 130;

/// The first Ctrl-C (or SIGINT) sets `cancel`: no new node starts and
/// running nodes stop at their next resumable piece, so everything computed
/// so far is stored and a rerun resumes from it. A second one exits at once.
/// Installing the handler also overrides an inherited "ignore SIGINT" (as
/// background jobs of a non-interactive shell have), so an interrupt always
/// means the same thing.
pub(crate) fn interrupt_gracefully(cancel: &Arc<AtomicBool>) {
    let cancel = Arc::clone(cancel);
    let installed = ctrlc::set_handler(move || {
        if cancel.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(INTERRUPTED));
        }
        eprintln!(
            "interrupted: stopping after the pieces in progress (stored work is kept; Ctrl-C again to quit now)"
        );
    });
    if let Err(e) = installed {
        tracing::warn!("cannot handle Ctrl-C gracefully: {e}");
    }
}

pub(crate) fn load_graph(args: &ExperimentArgs, registry: &Registry) -> Result<Graph, ExitCode> {
    let overrides = Overrides {
        set: args.set.clone(),
        env: !args.no_env,
    };
    let experiment = lmgeo_dag::load(&args.file, &overrides).map_err(|e| {
        diagnostics::report(&e);
        ExitCode::from(INVALID)
    })?;
    lmgeo_dag::build(experiment, registry).map_err(|e| {
        diagnostics::report(&e);
        ExitCode::from(INVALID)
    })
}

fn dispatch(cli: Cli, registry: &Registry) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            experiment,
            out,
            json,
            jobs,
            max_heavy,
            fail_fast,
            executor,
            detach,
        } => {
            let graph = match load_graph(&experiment, registry) {
                Ok(g) => g,
                Err(code) => return Ok(code),
            };
            let out = out.unwrap_or_else(|| Path::new("results").join(&graph.experiment.name));
            if let Err(message) = check_out_folder(&out) {
                eprintln!("error: {message}");
                return Ok(ExitCode::from(INVALID));
            }
            let store = Store::open(&cli.store)?;
            if let Err(unwritable) = store.check_writable() {
                return serve_from_unwritable_store(
                    &graph,
                    &store,
                    &unwritable,
                    &out,
                    &experiment.set,
                    json,
                );
            }
            let user = match cluster::UserConfig::load() {
                Ok(u) => u,
                Err(message) => {
                    eprintln!("error: {message}");
                    return Ok(ExitCode::from(INVALID));
                }
            };
            let settings = cluster::settings(&user, &graph, executor, detach);
            if settings.kind == Some(lmgeo_dag::execution::ExecutorKind::Slurm) {
                return cluster::run_on_slurm(
                    &graph,
                    &store,
                    &user,
                    &settings,
                    &experiment,
                    &out,
                    json,
                    !fail_fast,
                );
            }
            if detach {
                eprintln!("error: --detach needs the Slurm executor (--executor slurm)");
                return Ok(ExitCode::from(INVALID));
            }
            let mut options = RunOptions {
                max_heavy,
                keep_going: !fail_fast,
                ..RunOptions::default()
            };
            if let Some(jobs) = jobs {
                options.jobs = jobs;
            }
            interrupt_gracefully(&options.cancel);
            let observer =
                progress::ProgressObserver::new(std::io::stdout().is_terminal() && !json);
            let report = lmgeo_dag::run(&graph, &store, &options, &observer)?;
            observer.clear();
            let summary = publish::collect_results(&graph, &store, &report, &out, &experiment.set)?;
            print_run_summary(&graph, &report, &summary, json);
            Ok(if options.cancel.load(Ordering::SeqCst) {
                ExitCode::from(INTERRUPTED)
            } else if report.all_succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::RunNode {
            run,
            manifest,
            line,
        } => Ok(cluster::run_node(
            &cli.store, &run, &manifest, line, registry,
        )),
        Command::Status { runs } => cluster::status(&cli.store, runs),
        Command::Plan { experiment } => {
            let graph = match load_graph(&experiment, registry) {
                Ok(g) => g,
                Err(code) => return Ok(code),
            };
            let store = Store::open(&cli.store)?;
            let plan = lmgeo_dag::plan(&graph, &store);
            print_plan(&plan);
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { experiment, node } => {
            let graph = match load_graph(&experiment, registry) {
                Ok(g) => g,
                Err(code) => return Ok(code),
            };
            let store = Store::open(&cli.store)?;
            explain(&graph, &store, &node)
        }
        Command::Dag { experiment, format } => {
            let graph = match load_graph(&experiment, registry) {
                Ok(g) => g,
                Err(code) => return Ok(code),
            };
            match format {
                DagFormat::Mermaid => print!("{}", graph.to_mermaid()),
                DagFormat::Dot => print!("{}", graph.to_dot()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show {
            path,
            rows,
            metric,
            all_columns,
        } => {
            let file = if path.is_dir() {
                path.join("results.parquet")
            } else {
                path
            };
            let mut frame = lmgeo_tables::read_parquet(&file)?;
            if let Some(metric) = metric {
                frame = lmgeo_tables::filter_equal(&frame, "metric", &metric)?;
            }
            if !all_columns {
                // The experiment name repeats on every row and the parameter
                // JSON is long: both stay in the file, out of the way here.
                for column in ["experiment", "params"] {
                    if frame.column(column).is_ok() {
                        frame = frame.drop(column)?;
                    }
                }
            }
            println!("{}", lmgeo_tables::format_frame(&frame, rows));
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc {
            experiments,
            keep_runs,
            dry_run,
            force,
        } => gc(&cli.store, experiments, keep_runs, dry_run, force, registry),
        Command::Verify => verify_store(&cli.store),
        Command::Kinds => {
            let width = registry.names().map(str::len).max().unwrap_or(0);
            for kind in registry.kinds() {
                println!(
                    "{:width$}  v{}  {}",
                    kind.name(),
                    kind.version(),
                    kind.summary()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `lmgeo run` on a store this process cannot write (a shared store mounted
/// read-only): what is cached is published to `out` and nothing is written to
/// the store; anything not cached is an error naming the store and the cause.
fn serve_from_unwritable_store(
    graph: &Graph,
    store: &Store,
    unwritable: &std::io::Error,
    out: &Path,
    overrides: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    match lmgeo_dag::serve_cached(graph, store) {
        Ok(report) => {
            let summary = publish::collect_results(graph, store, &report, out, overrides)?;
            print_run_summary(graph, &report, &summary, json);
            eprintln!(
                "note: the store {} cannot be written ({unwritable}); every node was cached, so \
                 the results were served from it and no run record was kept",
                store.root().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(missing) => {
            eprintln!(
                "error: the store {} cannot be written ({unwritable}), and {} of {} nodes are not \
                 cached in it (first: `{}`); a store that cannot be written only serves cached \
                 results. Run on a writable store (--store DIR, e.g. a copy of this one), or where \
                 this store is mounted read-write",
                store.root().display(),
                missing.len(),
                graph.instances.len(),
                missing[0]
            );
            Ok(ExitCode::from(1))
        }
    }
}

pub(crate) fn print_run_summary(
    graph: &Graph,
    report: &lmgeo_dag::RunReport,
    summary: &RunSummary,
    json: bool,
) {
    let failed = report.count(|s| matches!(s, Status::Failed(_)));
    let blocked = report.count(|s| matches!(s, Status::Blocked { .. }));
    let skipped = report.count(|s| matches!(s, Status::Skipped));
    let cached = report.count(|s| *s == Status::Cached);
    let ran = report.count(|s| *s == Status::Ran);
    if json {
        let value = serde_json::json!({
            "nodes": graph.instances.len(),
            "cached": cached,
            "ran": ran,
            "failed": failed,
            "blocked": blocked,
            "skipped": skipped,
            "results": summary.results_parquet.display().to_string(),
        });
        println!("{value}");
    }
    for (instance, outcome) in graph.instances.iter().zip(&report.outcomes) {
        if !outcome.status.succeeded() {
            eprintln!("  {:<40} {}", instance.id, outcome.status);
        }
    }
    eprintln!(
        "{}: {} nodes, {ran} ran, {cached} cached, {failed} failed, {blocked} blocked, {skipped} skipped → {}",
        graph.experiment.name,
        graph.instances.len(),
        summary.out_dir.display()
    );
}

fn print_plan(plan: &[PlanEntry]) {
    let width = plan
        .iter()
        .map(|e| e.instance.len())
        .max()
        .unwrap_or(0)
        .min(60);
    for entry in plan {
        let (word, reasons) = match &entry.status {
            PlanStatus::Cached => ("cached", Vec::new()),
            PlanStatus::WillRun(reasons) => ("will run", reasons.clone()),
            PlanStatus::AfterUpstream(up) => (
                "will run",
                vec![format!("after its inputs: {}", up.join(", "))],
            ),
            PlanStatus::Blocked(reason) => ("blocked", vec![reason.clone()]),
        };
        let first = reasons.first().cloned().unwrap_or_default();
        println!(
            "{:width$}  {:<8}  {:<16}  {first}",
            entry.instance, word, entry.kind
        );
        for more in reasons.iter().skip(1) {
            println!("{:width$}  {:<8}  {:<16}  {more}", "", "", "");
        }
    }
    let count = |f: fn(&PlanStatus) -> bool| plan.iter().filter(|e| f(&e.status)).count();
    println!(
        "{} nodes: {} cached, {} will run, {} blocked",
        plan.len(),
        count(|s| matches!(s, PlanStatus::Cached)),
        count(|s| matches!(s, PlanStatus::WillRun(_) | PlanStatus::AfterUpstream(_))),
        count(|s| matches!(s, PlanStatus::Blocked(_)))
    );
}

fn explain(graph: &Graph, store: &Store, node: &str) -> anyhow::Result<ExitCode> {
    let plan = lmgeo_dag::plan(graph, store);
    let selected: Vec<usize> = graph
        .instances
        .iter()
        .enumerate()
        .filter(|(_, i)| i.id == node || i.node == node)
        .map(|(k, _)| k)
        .collect();
    if selected.is_empty() {
        let ids: Vec<&str> = graph.instances.iter().map(|i| i.id.as_str()).collect();
        eprintln!(
            "error: no node instance `{node}` in {}\n  help: {}",
            graph.experiment.name,
            lmgeo_dag::error::valid_list_help(node, "instances", ids.iter().copied())
        );
        return Ok(ExitCode::from(INVALID));
    }
    for index in selected {
        let instance = &graph.instances[index];
        let entry = &plan[index];
        println!(
            "{} ({} v{})",
            instance.id,
            instance.kind.name(),
            instance.kind.version()
        );
        match &entry.status {
            PlanStatus::Cached => println!("  status: cached"),
            PlanStatus::WillRun(reasons) => {
                println!("  status: will run, because:");
                for r in reasons {
                    println!("    - {r}");
                }
            }
            PlanStatus::AfterUpstream(up) => {
                println!("  status: will run after its inputs: {}", up.join(", "));
                println!("    (its key depends on their outputs, known once they have run)");
            }
            PlanStatus::Blocked(reason) => println!("  status: blocked: {reason}"),
        }
        if let Some(key) = &entry.key {
            println!("  key: {key}");
        }
        if let (Some(key), Some(preimage)) = (&entry.key, &entry.preimage)
            && let Some(previous) = store.name(&graph.experiment.name, &instance.id)
            && &previous.key != key
        {
            println!("  differs from the last run of this node in:");
            for line in lmgeo_dag::key::explain_difference(&previous.preimage, preimage) {
                println!("    - {line}");
            }
        }
        if !instance.coords.is_empty() {
            println!("  coordinates: {:#}", instance.coords);
        }
        println!("  parameters: {}", instance.configured.params);
        for (port, bindings) in &instance.inputs {
            let sources: Vec<String> = bindings
                .iter()
                .map(|b| format!("{}.{}", graph.instances[b.instance].id, b.output))
                .collect();
            println!("  input {port}: {}", sources.join(", "));
        }
        for file in &instance.configured.interface.files {
            println!("  reads: {}", file.path.display());
        }
        if let Some(previous) = store.name(&graph.experiment.name, &instance.id) {
            println!("  last run key: {}", previous.key);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn gc(
    store_path: &Path,
    experiments: Vec<PathBuf>,
    keep_runs: usize,
    dry_run: bool,
    force: bool,
    registry: &Registry,
) -> anyhow::Result<ExitCode> {
    let store = Store::open(store_path)?;
    // A run in progress reads cached inputs that no experiment file given
    // here may reach, and commits actions after `keep` is computed: collecting
    // under it could delete what it is about to read.
    let live = runs_in_progress(&store);
    if !live.is_empty() && !dry_run && !force {
        anyhow::bail!(
            "a run is in progress on this store ({}); run gc when it has ended, \
             or pass --dry-run to look, or --force",
            live.iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let files = if experiments.is_empty() {
        let mut found: Vec<PathBuf> = std::fs::read_dir("experiments")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        found.sort();
        found
    } else {
        experiments
    };
    let mut keep = std::collections::BTreeSet::new();
    for file in &files {
        let args = ExperimentArgs {
            file: file.clone(),
            set: Vec::new(),
            no_env: true,
        };
        let Ok(graph) = load_graph(&args, registry) else {
            anyhow::bail!(
                "{} does not validate; fix it or name the experiments to keep",
                file.display()
            );
        };
        for entry in lmgeo_dag::plan(&graph, &store) {
            if let (PlanStatus::Cached, Some(key)) = (&entry.status, entry.key) {
                keep.insert(key);
            }
        }
    }
    let runs = store.runs();
    for run in runs.iter().rev().take(keep_runs) {
        // A damaged record keeps nothing; its run is then one of the
        // `keep_runs` newest only by name.
        if let Ok(Some(record)) = RunRecord::read(run) {
            keep.extend(record.keys().map(str::to_string));
        }
    }
    // Under --force, what runs in progress have resolved or produced so far
    // is kept too (see RELIABILITY.md, "Concurrency", for what remains).
    let mut since: Option<std::time::SystemTime> = None;
    for run in &live {
        if let Ok(text) = std::fs::read_to_string(run.join(lmgeo_dag::scheduler::KEYS_LOG)) {
            keep.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
        }
        let started = run
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('-').next())
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(|ms| {
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
                    - std::time::Duration::from_secs(2)
            });
        if let Some(started) = started {
            since = Some(since.map_or(started, |s| s.min(started)));
        }
    }
    let report = store.collect_garbage_sparing(&keep, since, dry_run)?;
    if !dry_run {
        // A live run's folder holds its key list now and its record later.
        for run in runs.iter().rev().skip(keep_runs) {
            if !live.contains(run) {
                let _ = std::fs::remove_dir_all(run);
            }
        }
    }
    for (path, what, size) in &report.entries {
        if dry_run {
            println!("{:>10}  {what:<10} {}", human_bytes(*size), path.display());
        }
    }
    println!(
        "{} {} entries, {} ({} kept entries reachable from {} experiment(s) and the last {keep_runs} run(s))",
        if dry_run { "would delete" } else { "deleted" },
        report.entries.len(),
        human_bytes(report.total_bytes()),
        keep.len(),
        files.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn verify_store(path: &Path) -> anyhow::Result<ExitCode> {
    let store = match Store::open_existing(path) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(INVALID));
        }
    };
    let report = lmgeo_dag::verify::verify(&store);
    for problem in &report.problems {
        eprintln!("problem: {problem}");
    }
    println!(
        "{}: {} actions, {} objects ({} hashed), {} records; {} temporary entries and {} lock files (staging and locks of runs that ended or are running; never committed)",
        store.root().display(),
        report.actions,
        report.objects,
        human_bytes(report.bytes),
        report.records,
        report.temporary,
        report.locks,
    );
    if report.is_consistent() {
        println!("store is consistent");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: store {} is NOT consistent: {} problem(s) listed above; a run recomputes what it needs of them, `lmgeo gc` removes unreachable entries",
            store.root().display(),
            report.problems.len()
        );
        Ok(ExitCode::from(1))
    }
}

/// Run folders of this host whose process is still alive and that have not
/// written their record. The folder name ends in the process id. Detached
/// Slurm runs (the driver has exited) are not seen.
fn runs_in_progress(store: &Store) -> Vec<PathBuf> {
    store
        .runs()
        .into_iter()
        .filter(|run| !RunRecord::exists(run))
        .filter(|run| {
            run.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.rsplit('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| {
                    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
                })
        })
        .collect()
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
