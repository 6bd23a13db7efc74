//! The driver: plans against the store, submits the instances that miss
//! it as job arrays, and follows them.
//!
//! The store, not Slurm, decides success: an instance is done when its
//! action record is committed, whatever state its job ended in; a task that
//! left the queue without one is a failure once the grace period (for a
//! shared filesystem to show another host's writes) has passed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lmgeo_dag::Graph;
use lmgeo_dag::execution::{ResourceTables, Resources};
use lmgeo_dag::scheduler::{NodeOutcome, RunReport, Status, cached_outcome, key_for};
use lmgeo_dag::store::{Action, NameRecord, Store, StoreError};

use crate::commands::{JobState, Slurm, SlurmError, Submission};
use crate::run::{ManifestLine, Progress, TaskFailure, log_tail, shell_quote};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Slurm(#[from] SlurmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot submit: {0}")]
    Plan(String),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> DriverError + '_ {
    move |source| DriverError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How the driver behaves.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// The run's id: the job name of all its arrays.
    pub run_id: String,
    /// The run's folder in the store (holds `spec.json` already).
    pub run_dir: PathBuf,
    pub poll: Duration,
    pub grace: Duration,
    pub throttle: Option<u32>,
    /// The `lmgeo` binary the tasks run.
    pub lmgeo: PathBuf,
    /// Where tasks run (the driver's working folder).
    pub cwd: PathBuf,
    pub extra_args: Vec<String>,
    /// Keep following independent instances after a failure.
    pub keep_going: bool,
    /// Set on Ctrl-C: cancel our jobs and stop.
    pub cancel: Arc<AtomicBool>,
}

/// Where each instance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    Submitted,
    Done,
    Failed,
}

#[derive(Clone, Debug)]
struct Task {
    key: String,
    job: String,
    index: u32,
    log: PathBuf,
    submitted_unix_ms: u128,
    /// When the queue first stopped showing it alive.
    gone_since: Option<Instant>,
    state: String,
}

/// One array to submit: instances of the same resources.
struct Batch {
    resources: Resources,
    lines: Vec<(usize, ManifestLine)>,
}

struct Submitter<'a> {
    graph: &'a Graph,
    store: &'a Store,
    slurm: &'a dyn Slurm,
    options: &'a DriverOptions,
    max_array: usize,
    arrays: usize,
    jobs: Vec<String>,
}

impl<'a> Submitter<'a> {
    /// Reads the cluster's `MaxArraySize` once.
    fn new(
        graph: &'a Graph,
        store: &'a Store,
        slurm: &'a dyn Slurm,
        options: &'a DriverOptions,
    ) -> Result<Self, DriverError> {
        Ok(Submitter {
            graph,
            store,
            slurm,
            options,
            max_array: slurm.max_array_size()?.max(1) as usize,
            arrays: 0,
            jobs: Vec::new(),
        })
    }

    /// Groups instances by resources and submits one array per group (more
    /// where a group exceeds `MaxArraySize`). Returns, per instance, its
    /// job id, task index and log path.
    fn submit(
        &mut self,
        resources: &ResourceTables,
        lines: Vec<(usize, ManifestLine)>,
        after: &[String],
    ) -> Result<Vec<(usize, String, u32, PathBuf)>, DriverError> {
        let mut groups: BTreeMap<Resources, Vec<(usize, ManifestLine)>> = BTreeMap::new();
        for (index, line) in lines {
            let instance = &self.graph.instances[index];
            groups
                .entry(resources.for_node(&instance.node, instance.kind.name()))
                .or_default()
                .push((index, line));
        }
        let mut placed = Vec::new();
        for (resources, lines) in groups {
            for chunk in lines.chunks(self.max_array) {
                let batch = Batch {
                    resources: resources.clone(),
                    lines: chunk.to_vec(),
                };
                placed.extend(self.submit_array(&batch, after)?);
            }
        }
        Ok(placed)
    }

    fn submit_array(
        &mut self,
        batch: &Batch,
        after: &[String],
    ) -> Result<Vec<(usize, String, u32, PathBuf)>, DriverError> {
        let dir = self.options.run_dir.join("slurm");
        let logs = dir.join("logs");
        fs::create_dir_all(&logs).map_err(io_at(&logs))?;
        let n = self.arrays;
        self.arrays += 1;
        let manifest = dir.join(format!("array-{n}.jsonl"));
        let mut text = String::new();
        for (_, line) in &batch.lines {
            text.push_str(&serde_json::to_string(line).expect("serializes"));
            text.push('\n');
        }
        fs::write(&manifest, text).map_err(io_at(&manifest))?;
        let script = dir.join(format!("array-{n}.sh"));
        let body = format!(
            "#!/bin/sh\n# lmgeo task: runs line $SLURM_ARRAY_TASK_ID of the manifest; idempotent.\nexec {} --store {} run-node --run {} --manifest {} --line \"${{SLURM_ARRAY_TASK_ID:-0}}\"\n",
            shell_quote(&self.options.lmgeo.display().to_string()),
            shell_quote(&absolute(self.store.root()).display().to_string()),
            shell_quote(&self.options.run_dir.display().to_string()),
            shell_quote(&manifest.display().to_string()),
        );
        fs::write(&script, body).map_err(io_at(&script))?;
        let submission = Submission {
            job_name: self.options.run_id.clone(),
            count: batch.lines.len(),
            throttle: self.options.throttle,
            resources: batch.resources.clone(),
            after: after.to_vec(),
            output: logs.join("%A_%a.out"),
            chdir: self.options.cwd.clone(),
            extra_args: self.options.extra_args.clone(),
            script,
        };
        let job = self.slurm.submit(&submission)?;
        tracing::info!("submitted array {job} with {} tasks", batch.lines.len());
        self.jobs.push(job.clone());
        Ok(batch
            .lines
            .iter()
            .enumerate()
            .map(|(task, (index, _))| {
                let log = logs.join(format!("{job}_{task}.out"));
                (*index, job.clone(), task as u32, log)
            })
            .collect())
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Records the instance's key for `explain`, as a local run does.
fn remember(
    graph: &Graph,
    store: &Store,
    index: usize,
    key: &str,
    preimage: &lmgeo_dag::key::Preimage,
) {
    let _ = store.write_preimage(key, preimage);
    let _ = store.record_name(
        &graph.experiment.name,
        &graph.instances[index].id,
        &NameRecord {
            key: key.to_string(),
            preimage: preimage.clone(),
        },
    );
}

/// Runs the graph on Slurm and waits for it: every instance that misses
/// the store becomes an array task; instances become ready as their inputs
/// commit. `on_progress` sees the counts after every poll.
pub fn run_attached(
    graph: &Graph,
    store: &Store,
    resources: &ResourceTables,
    slurm: &dyn Slurm,
    options: &DriverOptions,
    on_progress: &dyn Fn(&Progress),
) -> Result<RunReport, DriverError> {
    let n = graph.instances.len();
    let upstreams = graph.upstreams();
    let dependents = graph.dependents();
    let mut state = vec![State::Waiting; n];
    let mut outcomes = vec![NodeOutcome::default(); n];
    let mut actions: Vec<Option<Action>> = vec![None; n];
    let mut tasks: HashMap<usize, Task> = HashMap::new();
    let mut recomputed = vec![false; n];
    let mut failures: Vec<TaskFailure> = Vec::new();
    let mut stopping = false;
    let mut queue_errors = 0u32;
    let mut submitter = Submitter::new(graph, store, slurm, options)?;
    let mut last_line = String::new();

    loop {
        // Key every instance whose inputs are committed; hits are done at
        // once. Instances are in topological order, so one pass settles
        // whole cached chains.
        let mut ready = Vec::new();
        for i in 0..n {
            if state[i] != State::Waiting || tasks.contains_key(&i) {
                continue;
            }
            if !upstreams[i].iter().all(|&u| state[u] == State::Done) {
                continue;
            }
            match key_for(graph, store, i, &actions) {
                Err(reason) => {
                    fail(graph, i, reason, &dependents, &mut state, &mut outcomes);
                    stopping |= !options.keep_going;
                }
                Ok((key, preimage)) => {
                    remember(graph, store, i, &key, &preimage);
                    if let Some(outcome) = cached_outcome(store, &key) {
                        actions[i] = outcome.action.clone();
                        outcomes[i] = outcome;
                        state[i] = State::Done;
                    } else if !stopping {
                        ready.push((
                            i,
                            ManifestLine {
                                instance: graph.instances[i].id.clone(),
                                key: Some(key),
                            },
                        ));
                    }
                }
            }
        }
        if !ready.is_empty() && !options.cancel.load(Ordering::SeqCst) {
            let submitted_at = now_ms();
            let keys: HashMap<usize, String> = ready
                .iter()
                .map(|(i, l)| (*i, l.key.clone().expect("attached lines have keys")))
                .collect();
            for (i, job, index, log) in submitter.submit(resources, ready, &[])? {
                state[i] = State::Submitted;
                tasks.insert(
                    i,
                    Task {
                        key: keys[&i].clone(),
                        job,
                        index,
                        log,
                        submitted_unix_ms: submitted_at,
                        gone_since: None,
                        state: "PENDING".into(),
                    },
                );
            }
        }
        let cancelled = options.cancel.load(Ordering::SeqCst);
        if cancelled {
            let live: Vec<String> = tasks
                .values()
                .map(|t| t.job.clone())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            if !live.is_empty()
                && let Err(e) = slurm.cancel(&live)
            {
                tracing::warn!("cannot cancel jobs {}: {e}", live.join(", "));
            }
            // What committed before the cancel is kept and counted.
            for (i, task) in std::mem::take(&mut tasks) {
                if let Some(outcome) = cached_outcome(store, &task.key) {
                    settle(i, outcome, &task, &mut actions, &mut outcomes, &mut state);
                }
            }
        }
        let finished = cancelled || tasks.is_empty();
        let progress = progress_of(
            graph,
            options,
            &state,
            &outcomes,
            &tasks,
            &submitter.jobs,
            &failures,
            slurm,
            finished,
        );
        let _ = progress.write(&options.run_dir);
        let line = progress.line();
        if finished || line != last_line {
            on_progress(&progress);
            last_line = line;
        }
        if finished {
            break;
        }

        // Wait one interval, but answer Ctrl-C at once.
        let wake = Instant::now() + options.poll;
        while Instant::now() < wake && !options.cancel.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50).min(options.poll));
        }
        if options.cancel.load(Ordering::SeqCst) {
            continue;
        }

        // The store first: a committed action is success, whatever the queue says.
        let mut finished = Vec::new();
        for (&i, task) in &tasks {
            if let Some(outcome) = cached_outcome(store, &task.key) {
                finished.push((i, outcome));
            }
        }
        for (i, outcome) in finished {
            let task = tasks.remove(&i).expect("tracked");
            settle(i, outcome, &task, &mut actions, &mut outcomes, &mut state);
        }

        // Then one query for all our jobs.
        let queue = match slurm.queue(&options.run_id) {
            Ok(q) => {
                queue_errors = 0;
                Some(q)
            }
            Err(e) => {
                queue_errors += 1;
                tracing::warn!("squeue failed ({queue_errors} in a row): {e}");
                if queue_errors >= 20 {
                    return Err(e.into());
                }
                None
            }
        };
        if let Some(queue) = queue {
            let by_task: HashMap<(String, u32), &crate::commands::QueueEntry> = queue
                .iter()
                .filter_map(|e| e.task.map(|t| ((e.job.clone(), t), e)))
                .collect();
            let mut gone = Vec::new();
            for (&i, task) in tasks.iter_mut() {
                match by_task.get(&(task.job.clone(), task.index)) {
                    Some(entry) if matches!(entry.state, JobState::Alive(_)) => {
                        task.gone_since = None;
                        task.state = entry.state.name().to_string();
                    }
                    other => {
                        if let Some(entry) = other {
                            task.state = entry.state.name().to_string();
                        } else if task.gone_since.is_none() {
                            task.state = "VANISHED".into();
                        }
                        let since = *task.gone_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= options.grace {
                            gone.push(i);
                        }
                    }
                }
            }
            for i in gone {
                let task = tasks.remove(&i).expect("tracked");
                // A last look: the commit may have become visible just now.
                if let Some(outcome) = cached_outcome(store, &task.key) {
                    settle(i, outcome, &task, &mut actions, &mut outcomes, &mut state);
                    continue;
                }
                // An input whose entry was discarded (it failed to verify in
                // the task) is recomputed once, then this instance again.
                let lost: Vec<usize> = upstreams[i]
                    .iter()
                    .copied()
                    .filter(|&u| {
                        actions[u]
                            .as_ref()
                            .is_some_and(|a| store.action(&a.key).is_none())
                    })
                    .collect();
                if !lost.is_empty() && lost.iter().all(|&u| !recomputed[u]) {
                    for u in lost {
                        recomputed[u] = true;
                        state[u] = State::Waiting;
                        actions[u] = None;
                    }
                    state[i] = State::Waiting;
                    continue;
                }
                let tail = log_tail(&task.log, 15);
                let message = format!(
                    "Slurm task {}_{} ended {} without committing a result; log {}{}",
                    task.job,
                    task.index,
                    task.state,
                    task.log.display(),
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!(":\n{tail}")
                    }
                );
                failures.push(TaskFailure {
                    instance: graph.instances[i].id.clone(),
                    job: format!("{}_{}", task.job, task.index),
                    state: task.state.clone(),
                    log: task.log.clone(),
                    log_tail: tail,
                });
                outcomes[i].key = Some(task.key.clone());
                fail(graph, i, message, &dependents, &mut state, &mut outcomes);
                stopping |= !options.keep_going;
            }
        }
    }

    let report = RunReport {
        outcomes,
        run_dir: Some(options.run_dir.clone()),
    };
    lmgeo_dag::RunRecord::of(graph, &report).write(&options.run_dir)?;
    Ok(report)
}

/// Records a task whose result is committed: its instance is done.
fn settle(
    index: usize,
    outcome: NodeOutcome,
    task: &Task,
    actions: &mut [Option<Action>],
    outcomes: &mut [NodeOutcome],
    state: &mut [State],
) {
    actions[index] = outcome.action.clone();
    outcomes[index] = ran_or_cached(outcome, task);
    state[index] = State::Done;
}

/// A task's result counts as run by this run unless it was committed before
/// the task was submitted (by a concurrent run).
fn ran_or_cached(mut outcome: NodeOutcome, task: &Task) -> NodeOutcome {
    if let Some(action) = &outcome.action {
        if action.created_unix_ms >= task.submitted_unix_ms {
            outcome.status = Status::Ran;
        }
        outcome.elapsed = Duration::from_millis(action.elapsed_ms);
    }
    outcome
}

fn fail(
    graph: &Graph,
    index: usize,
    message: String,
    dependents: &[Vec<usize>],
    state: &mut [State],
    outcomes: &mut [NodeOutcome],
) {
    state[index] = State::Failed;
    outcomes[index].status = Status::Failed(message);
    let mut stack = vec![index];
    while let Some(i) = stack.pop() {
        for &d in &dependents[i] {
            if state[d] == State::Waiting {
                state[d] = State::Failed;
                outcomes[d].status = Status::Blocked {
                    upstream: graph.instances[index].id.clone(),
                };
                stack.push(d);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn progress_of(
    graph: &Graph,
    options: &DriverOptions,
    state: &[State],
    outcomes: &[NodeOutcome],
    tasks: &HashMap<usize, Task>,
    jobs: &[String],
    failures: &[TaskFailure],
    slurm: &dyn Slurm,
    finished: bool,
) -> Progress {
    let running = tasks
        .values()
        .filter(|t| t.state == "RUNNING" || t.state == "COMPLETING")
        .count();
    Progress {
        run_id: options.run_id.clone(),
        experiment: graph.experiment.name.clone(),
        mode: "attached".into(),
        finished,
        updated_unix_ms: now_ms(),
        cached: outcomes
            .iter()
            .filter(|o| o.status == Status::Cached)
            .count(),
        done: outcomes.iter().filter(|o| o.status == Status::Ran).count(),
        running,
        pending: tasks.len() - running,
        failed: outcomes
            .iter()
            .filter(|o| matches!(o.status, Status::Failed(_)))
            .count(),
        blocked: outcomes
            .iter()
            .filter(|o| matches!(o.status, Status::Blocked { .. }))
            .count(),
        waiting: state
            .iter()
            .enumerate()
            .filter(|(i, s)| **s == State::Waiting && !tasks.contains_key(i))
            .count(),
        jobs: jobs.to_vec(),
        failures: failures.to_vec(),
        commands: slurm.command_counts(),
    }
}

/// What a detached submission queued.
#[derive(Debug)]
pub struct Detached {
    pub cached: usize,
    pub submitted: usize,
    /// Job ids, wave by wave.
    pub waves: Vec<Vec<String>>,
}

/// Submits every instance that misses the store at once, one wave per
/// depth, each wave starting after the previous one ends (`afterany`, with
/// `--kill-on-invalid-dep=yes`); a task whose inputs did not commit fails
/// at once instead of waiting forever. Returns without waiting; a later
/// `lmgeo run` collects the results from the store.
pub fn submit_detached(
    graph: &Graph,
    store: &Store,
    resources: &ResourceTables,
    slurm: &dyn Slurm,
    options: &DriverOptions,
) -> Result<Detached, DriverError> {
    let n = graph.instances.len();
    let upstreams = graph.upstreams();
    let mut actions: Vec<Option<Action>> = vec![None; n];
    let mut depth: Vec<Option<usize>> = vec![None; n];
    let mut lines: Vec<Option<ManifestLine>> = vec![None; n];
    let mut cached = 0;
    for i in 0..n {
        let pending_inputs: Vec<usize> = upstreams[i]
            .iter()
            .copied()
            .filter(|&u| actions[u].is_none())
            .collect();
        let key = if pending_inputs.is_empty() {
            let (key, preimage) = key_for(graph, store, i, &actions).map_err(|reason| {
                DriverError::Plan(format!("`{}`: {reason}", graph.instances[i].id))
            })?;
            remember(graph, store, i, &key, &preimage);
            if let Some(outcome) = cached_outcome(store, &key) {
                actions[i] = outcome.action;
                cached += 1;
                continue;
            }
            Some(key)
        } else {
            None
        };
        depth[i] = Some(
            pending_inputs
                .iter()
                .filter_map(|&u| depth[u])
                .map(|d| d + 1)
                .max()
                .unwrap_or(0),
        );
        lines[i] = Some(ManifestLine {
            instance: graph.instances[i].id.clone(),
            key,
        });
    }
    let mut submitter = Submitter::new(graph, store, slurm, options)?;
    let deepest = depth.iter().flatten().max().copied();
    let mut waves: Vec<Vec<String>> = Vec::new();
    let mut submitted = 0;
    for d in 0..=deepest.unwrap_or(0) {
        if deepest.is_none() {
            break;
        }
        let wave: Vec<(usize, ManifestLine)> = (0..n)
            .filter(|&i| depth[i] == Some(d))
            .map(|i| (i, lines[i].clone().expect("has a line")))
            .collect();
        submitted += wave.len();
        let before = submitter.jobs.len();
        let after = waves.last().cloned().unwrap_or_default();
        submitter.submit(resources, wave, &after)?;
        waves.push(submitter.jobs[before..].to_vec());
    }
    let progress = Progress {
        run_id: options.run_id.clone(),
        experiment: graph.experiment.name.clone(),
        mode: "detached".into(),
        finished: false,
        updated_unix_ms: now_ms(),
        cached,
        pending: submitted,
        jobs: submitter.jobs.clone(),
        commands: slurm.command_counts(),
        ..Progress::default()
    };
    progress
        .write(&options.run_dir)
        .map_err(io_at(&options.run_dir))?;
    Ok(Detached {
        cached,
        submitted,
        waves,
    })
}
