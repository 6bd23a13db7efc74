//! Planning and running a graph against the store.
//!
//! The scheduler knows nothing of what nodes mean: it computes keys, finds
//! hits, runs misses in parallel on a rayon pool (with a separate bound for
//! heavy nodes), commits results, and stops the descendants of failures.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::graph::{Graph, METRICS_OUTPUT};
use crate::key::{FileKey, InputKey, Preimage, STORE_SCHEMA, digest_json, explain_difference};
use crate::node::{ChunkStore, InputArtifact, MetricRow, NodeError, Progress, RunContext};
use crate::store::{Action, BlobRef, NameRecord, Store, StoreError};

/// What happened to one instance.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Cached,
    Ran,
    Failed(String),
    /// Not run because an upstream instance failed or was blocked.
    Blocked {
        upstream: String,
    },
    /// Not started: the run stopped early (`--fail-fast` or an interrupt).
    Skipped,
}

impl Status {
    pub fn succeeded(&self) -> bool {
        matches!(self, Status::Cached | Status::Ran)
    }
}

/// The outcome of one instance in a run.
#[derive(Clone, Debug)]
pub struct NodeOutcome {
    pub status: Status,
    pub key: Option<String>,
    pub action: Option<Action>,
    pub metrics: Vec<MetricRow>,
    pub elapsed: Duration,
}

impl Default for NodeOutcome {
    fn default() -> Self {
        Self {
            status: Status::Skipped,
            key: None,
            action: None,
            metrics: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }
}

/// Hooks for progress display; every method has a no-op default.
pub trait Observer: Sync {
    fn started(&self, _instance: &str, _kind: &str) {}
    fn progress(&self, _progress: &Progress) {}
    fn finished(&self, _instance: &str, _outcome: &NodeOutcome) {}
}

/// An observer that shows nothing.
pub struct Silent;
impl Observer for Silent {}

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Instances running at once.
    pub jobs: usize,
    /// Heavy instances (model loads) running at once.
    pub max_heavy: usize,
    /// Keep running independent nodes after a failure (the default).
    pub keep_going: bool,
    /// Set to stop dispatching (e.g. on Ctrl-C); nodes see it too.
    pub cancel: Arc<AtomicBool>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_heavy: 1,
            keep_going: true,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// The result of a run, one outcome per instance in graph order.
#[derive(Debug)]
pub struct RunReport {
    pub outcomes: Vec<NodeOutcome>,
    pub run_dir: PathBuf,
}

impl RunReport {
    pub fn count(&self, pred: impl Fn(&Status) -> bool) -> usize {
        self.outcomes.iter().filter(|o| pred(&o.status)).count()
    }

    pub fn all_succeeded(&self) -> bool {
        self.outcomes.iter().all(|o| o.status.succeeded())
    }
}

/// A node's planned fate, for `plan` and `explain`.
#[derive(Clone, Debug, PartialEq)]
pub enum PlanStatus {
    Cached,
    /// Will run, with the reasons (what changed since the last run).
    WillRun(Vec<String>),
    /// Its key depends on outputs of upstream instances that will run first.
    AfterUpstream(Vec<String>),
    /// Cannot run as things stand (e.g. a file it reads is missing).
    Blocked(String),
}

#[derive(Clone, Debug)]
pub struct PlanEntry {
    pub instance: String,
    pub kind: String,
    pub status: PlanStatus,
    pub key: Option<String>,
    pub preimage: Option<Preimage>,
}

/// What a run would do, without running anything or writing to the store
/// (apart from the stat cache of file digests).
pub fn plan(graph: &Graph, store: &Store) -> Vec<PlanEntry> {
    let mut entries: Vec<PlanEntry> = Vec::with_capacity(graph.instances.len());
    let mut actions: Vec<Option<Action>> = Vec::with_capacity(graph.instances.len());
    for (index, instance) in graph.instances.iter().enumerate() {
        let mut waiting_on = Vec::new();
        let mut blocked_by = None;
        for (_, bindings) in &instance.inputs {
            for b in bindings {
                if actions[b.instance].is_none() {
                    let upstream = &graph.instances[b.instance].id;
                    if matches!(entries[b.instance].status, PlanStatus::Blocked(_)) {
                        blocked_by.get_or_insert_with(|| upstream.clone());
                    } else if !waiting_on.contains(upstream) {
                        waiting_on.push(upstream.clone());
                    }
                }
            }
        }
        let (status, key, preimage, action) = if let Some(upstream) = blocked_by {
            (
                PlanStatus::Blocked(format!("its input `{upstream}` is blocked")),
                None,
                None,
                None,
            )
        } else if !waiting_on.is_empty() {
            (PlanStatus::AfterUpstream(waiting_on), None, None, None)
        } else {
            match preimage_for(graph, store, index, &|u| actions[u].as_ref()) {
                Err(reason) => (PlanStatus::Blocked(reason), None, None, None),
                Ok(preimage) => {
                    let key = preimage.key();
                    match store.action(&key) {
                        Some(action) => {
                            (PlanStatus::Cached, Some(key), Some(preimage), Some(action))
                        }
                        None => {
                            let reasons = rerun_reasons(graph, store, index, &key, &preimage);
                            (
                                PlanStatus::WillRun(reasons),
                                Some(key),
                                Some(preimage),
                                None,
                            )
                        }
                    }
                }
            }
        };
        actions.push(action);
        entries.push(PlanEntry {
            instance: instance.id.clone(),
            kind: instance.kind.name().to_string(),
            status,
            key,
            preimage,
        });
    }
    entries
}

fn rerun_reasons(
    graph: &Graph,
    store: &Store,
    index: usize,
    key: &str,
    preimage: &Preimage,
) -> Vec<String> {
    let instance = &graph.instances[index];
    match store.name(&graph.experiment.name, &instance.id) {
        None => vec!["never run in this experiment".to_string()],
        Some(previous) if previous.key == key => {
            vec!["its cached results are missing or incomplete in the store".to_string()]
        }
        Some(previous) => {
            let lines = explain_difference(&previous.preimage, preimage);
            if lines.is_empty() {
                vec!["its key changed".to_string()]
            } else {
                lines
            }
        }
    }
}

/// The pre-image of an instance whose inputs all have actions.
fn preimage_for<'a>(
    graph: &Graph,
    store: &Store,
    index: usize,
    action_of: &dyn Fn(usize) -> Option<&'a Action>,
) -> Result<Preimage, String> {
    let instance = &graph.instances[index];
    let mut inputs = Vec::new();
    for (port, bindings) in &instance.inputs {
        for b in bindings {
            let upstream = &graph.instances[b.instance];
            let action = action_of(b.instance)
                .ok_or_else(|| format!("upstream `{}` has no results", upstream.id))?;
            let blob = action.outputs.get(&b.output).ok_or_else(|| {
                format!(
                    "upstream `{}` recorded no output `{}`",
                    upstream.id, b.output
                )
            })?;
            inputs.push(InputKey {
                port: port.clone(),
                node: upstream.id.clone(),
                output: b.output.clone(),
                coords: upstream.coords.to_json(),
                params_digest: digest_json(&upstream.configured.params),
                digest: blob.digest.clone(),
            });
        }
    }
    let mut files = Vec::new();
    for file in &instance.configured.interface.files {
        let digest = match &file.known_digest {
            Some(d) => d.clone(),
            None => store
                .file_digest(&file.path)
                .map_err(|e| unreadable_file(&file.path, &e))?,
        };
        files.push(FileKey {
            path: file.path.display().to_string(),
            digest,
        });
    }
    Ok(Preimage {
        schema: STORE_SCHEMA,
        kind: instance.kind.name().to_string(),
        kind_version: instance.kind.version(),
        params: instance.configured.params.clone(),
        inputs,
        files,
        environment: instance.configured.interface.environment.clone(),
    })
}

/// Why a file a node reads cannot be keyed, and where to fix it.
fn unreadable_file(path: &std::path::Path, e: &StoreError) -> String {
    let mut message = format!("cannot read {}: {}", path.display(), root_cause(e));
    if let StoreError::Io { source, .. } = e
        && source.kind() == std::io::ErrorKind::NotFound
    {
        message.push_str("; check the path in this node's parameters");
        if path.is_relative()
            && let Ok(cwd) = std::env::current_dir()
        {
            message.push_str(&format!(
                " (a relative path is read from the working folder, {})",
                cwd.display()
            ));
        }
    }
    message
}

fn root_cause(e: &StoreError) -> String {
    match e {
        StoreError::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    Ready,
    Running,
    Done,
    Failed,
}

enum Execution {
    Finished(NodeOutcome),
    /// An input blob failed verification: rerun that upstream, then retry.
    CorruptInput {
        upstream: usize,
        outcome: NodeOutcome,
    },
}

/// Runs every instance of the graph.
pub fn run(
    graph: &Graph,
    store: &Store,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<RunReport, StoreError> {
    let n = graph.instances.len();
    let run_dir = store.new_run_dir(&graph.experiment.name)?;
    let dependents = graph.dependents();
    let upstreams = graph.upstreams();
    let mut state: Vec<State> = upstreams
        .iter()
        .map(|u| {
            if u.is_empty() {
                State::Ready
            } else {
                State::Waiting
            }
        })
        .collect();
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| state[i] == State::Ready).collect();
    let mut outcomes: Vec<NodeOutcome> = vec![NodeOutcome::default(); n];
    let mut reruns = vec![0u32; n];

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.jobs.max(1))
        .thread_name(|i| format!("lmgeo-node-{i}"))
        .build()
        .expect("a thread pool can be built");
    let (sender, receiver) = mpsc::channel::<(usize, Execution)>();
    let mut running = 0usize;
    let mut heavy_running = 0usize;
    let mut stopping = false;

    // Actions of finished instances, shared read-only with workers by
    // snapshot: a worker only needs its upstreams', which are final.
    let mut actions: Vec<Option<Action>> = vec![None; n];

    pool.in_place_scope(|scope| {
        loop {
            if options.cancel.load(Ordering::Relaxed) {
                stopping = true;
            }
            // Dispatch as many ready instances as the bounds allow.
            while !stopping && running < options.jobs.max(1) {
                let position = ready.iter().position(|&i| {
                    !graph.instances[i].configured.interface.heavy
                        || heavy_running < options.max_heavy.max(1)
                });
                let Some(position) = position else { break };
                let index = ready.remove(position).expect("position is valid");
                state[index] = State::Running;
                running += 1;
                let heavy = graph.instances[index].configured.interface.heavy;
                if heavy {
                    heavy_running += 1;
                }
                let upstream_actions: HashMap<usize, Action> = upstreams[index]
                    .iter()
                    .filter_map(|&u| actions[u].clone().map(|a| (u, a)))
                    .collect();
                let sender = sender.clone();
                let cancel = options.cancel.clone();
                scope.spawn(move |_| {
                    let result = execute(graph, store, index, &upstream_actions, observer, &cancel);
                    let _ = sender.send((index, result));
                });
            }
            if running == 0 {
                break;
            }
            let (index, execution) = receiver.recv().expect("workers report back");
            running -= 1;
            if graph.instances[index].configured.interface.heavy {
                heavy_running -= 1;
            }
            match execution {
                Execution::Finished(outcome) => {
                    let ok = outcome.status.succeeded();
                    observer.finished(&graph.instances[index].id, &outcome);
                    actions[index] = outcome.action.clone();
                    outcomes[index] = outcome;
                    if ok {
                        state[index] = State::Done;
                        for &d in &dependents[index] {
                            if state[d] == State::Waiting
                                && upstreams[d].iter().all(|&u| state[u] == State::Done)
                            {
                                state[d] = State::Ready;
                                ready.push_back(d);
                            }
                        }
                    } else {
                        state[index] = State::Failed;
                        block_descendants(
                            graph,
                            index,
                            &dependents,
                            &mut state,
                            &mut outcomes,
                            observer,
                        );
                        if !options.keep_going {
                            stopping = true;
                        }
                    }
                }
                Execution::CorruptInput { upstream, outcome } => {
                    // Recompute the upstream once; a second corruption of the
                    // same blob in one run is a failure, not a loop.
                    reruns[upstream] += 1;
                    if reruns[upstream] > 1 {
                        observer.finished(&graph.instances[index].id, &outcome);
                        outcomes[index] = NodeOutcome {
                            status: Status::Failed(format!(
                                "input from `{}` is corrupt again after recomputing it",
                                graph.instances[upstream].id
                            )),
                            ..outcome
                        };
                        state[index] = State::Failed;
                        block_descendants(
                            graph,
                            index,
                            &dependents,
                            &mut state,
                            &mut outcomes,
                            observer,
                        );
                    } else {
                        state[index] = State::Waiting;
                        state[upstream] = State::Ready;
                        actions[upstream] = None;
                        ready.push_front(upstream);
                    }
                }
            }
        }
    });

    let report = RunReport { outcomes, run_dir };
    write_run_record(graph, &report)?;
    Ok(report)
}

/// The key and pre-image of an instance whose upstream actions are known
/// (`actions[u]` for every upstream `u`), or why it cannot be keyed.
pub fn key_for(
    graph: &Graph,
    store: &Store,
    index: usize,
    actions: &[Option<Action>],
) -> Result<(String, Preimage), String> {
    let preimage = preimage_for(graph, store, index, &|u| actions[u].as_ref())?;
    Ok((preimage.key(), preimage))
}

/// The outcome of a key already in the store, or `None` on a miss (a hit
/// whose metrics no longer verify is a miss).
pub fn cached_outcome(store: &Store, key: &str) -> Option<NodeOutcome> {
    let action = store.action(key)?;
    let metrics = read_metrics(store, &action).ok()?;
    Some(NodeOutcome {
        status: Status::Cached,
        key: Some(key.to_string()),
        action: Some(action),
        metrics,
        elapsed: Duration::ZERO,
    })
}

/// Runs one instance the way a worker of another executor does (a Slurm
/// task): its inputs are whatever the store holds for its upstreams now.
///
/// Idempotent: if the key is already committed it returns `Cached`;
/// otherwise it takes the key's lock, checks again, computes and commits.
/// `expected_key` is the key the submitter computed: a different key here
/// means the experiment or an input changed since, and the instance fails
/// rather than compute something nobody asked for.
pub fn run_instance(
    graph: &Graph,
    store: &Store,
    index: usize,
    expected_key: Option<&str>,
    cancel: &AtomicBool,
    observer: &dyn Observer,
) -> NodeOutcome {
    let failed = |message: String, key: Option<String>| NodeOutcome {
        status: Status::Failed(message),
        key,
        ..NodeOutcome::default()
    };
    // Instances are in topological order, so one forward pass over the
    // ancestors resolves each from already resolved upstreams.
    let mut needed = vec![false; graph.instances.len()];
    let mut stack = vec![index];
    while let Some(i) = stack.pop() {
        for (_, bindings) in &graph.instances[i].inputs {
            for b in bindings {
                if !needed[b.instance] {
                    needed[b.instance] = true;
                    stack.push(b.instance);
                }
            }
        }
    }
    let mut actions: Vec<Option<Action>> = vec![None; graph.instances.len()];
    for upstream in (0..index).filter(|&u| needed[u]) {
        let known = graph.instances[upstream]
            .inputs
            .iter()
            .flat_map(|(_, b)| b)
            .all(|b| actions[b.instance].is_some());
        if known && let Ok((key, _)) = key_for(graph, store, upstream, &actions) {
            actions[upstream] = store.action(&key);
        }
    }
    let mut direct = HashMap::new();
    for (_, bindings) in &graph.instances[index].inputs {
        for b in bindings {
            match &actions[b.instance] {
                Some(action) => {
                    direct.insert(b.instance, action.clone());
                }
                None => {
                    return failed(
                        format!(
                            "its input `{}` has no results in the store (it failed, was cancelled or has not run)",
                            graph.instances[b.instance].id
                        ),
                        None,
                    );
                }
            }
        }
    }
    if let Some(expected) = expected_key {
        match preimage_for(graph, store, index, &|u| direct.get(&u)) {
            Ok(preimage) if preimage.key() != expected => {
                return failed(
                    format!(
                        "its key is now {} but {expected} was submitted: the experiment file or one of its inputs changed since submission",
                        preimage.key()
                    ),
                    Some(preimage.key()),
                );
            }
            Ok(_) => {}
            Err(reason) => return failed(reason, None),
        }
    }
    match execute(graph, store, index, &direct, observer, cancel) {
        Execution::Finished(outcome) => outcome,
        Execution::CorruptInput { upstream, outcome } => NodeOutcome {
            status: Status::Failed(format!(
                "its input from `{}` failed verification; that entry was discarded, so a rerun recomputes it",
                graph.instances[upstream].id
            )),
            ..outcome
        },
    }
}

fn block_descendants(
    graph: &Graph,
    failed: usize,
    dependents: &[Vec<usize>],
    state: &mut [State],
    outcomes: &mut [NodeOutcome],
    observer: &dyn Observer,
) {
    let mut stack = vec![failed];
    while let Some(i) = stack.pop() {
        for &d in &dependents[i] {
            if matches!(state[d], State::Waiting | State::Ready) {
                state[d] = State::Failed;
                outcomes[d].status = Status::Blocked {
                    upstream: graph.instances[failed].id.clone(),
                };
                observer.finished(&graph.instances[d].id, &outcomes[d]);
                stack.push(d);
            }
        }
    }
}

/// Writes `run.json` into the run's folder: what `gc` keeps and `status` shows.
pub fn write_run_record(graph: &Graph, report: &RunReport) -> Result<(), StoreError> {
    let entries: Vec<serde_json::Value> = graph
        .instances
        .iter()
        .zip(&report.outcomes)
        .map(|(i, o)| {
            serde_json::json!({
                "instance": i.id,
                "kind": i.kind.name(),
                "key": o.key,
                "status": format!("{:?}", o.status),
                "elapsed_ms": o.elapsed.as_millis() as u64,
            })
        })
        .collect();
    let record = serde_json::json!({
        "experiment": graph.experiment.name,
        "file": graph.experiment.file.path.display().to_string(),
        "finished_unix_ms": now_ms(),
        "instances": entries,
    });
    let path = report.run_dir.join("run.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&record).expect("serializes"),
    )
    .map_err(|source| StoreError::Io {
        path: path.clone(),
        source,
    })
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn read_metrics(store: &Store, action: &Action) -> Result<Vec<MetricRow>, StoreError> {
    let Some(blob) = action.outputs.get(METRICS_OUTPUT) else {
        return Ok(Vec::new());
    };
    let bytes = store.read_verified(blob)?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Record {
        path: store.blob_path(&blob.digest),
        message: e.to_string(),
    })
}

fn execute(
    graph: &Graph,
    store: &Store,
    index: usize,
    actions: &HashMap<usize, Action>,
    observer: &dyn Observer,
    cancel: &AtomicBool,
) -> Execution {
    let started = Instant::now();
    let instance = &graph.instances[index];
    let fail = |message: String, key: Option<String>| {
        Execution::Finished(NodeOutcome {
            status: Status::Failed(message),
            key,
            action: None,
            metrics: Vec::new(),
            elapsed: started.elapsed(),
        })
    };
    let preimage = match preimage_for(graph, store, index, &|u| actions.get(&u)) {
        Ok(p) => p,
        Err(reason) => return fail(reason, None),
    };
    let key = preimage.key();
    let record = || -> Result<(), StoreError> {
        store.write_preimage(&key, &preimage)?;
        store.record_name(
            &graph.experiment.name,
            &instance.id,
            &NameRecord {
                key: key.clone(),
                preimage: preimage.clone(),
            },
        )
    };
    if let Err(e) = record() {
        return fail(e.to_string(), Some(key));
    }
    let _lock = match store.lock(&key) {
        Ok(lock) => lock,
        Err(e) => return fail(e.to_string(), Some(key)),
    };
    if let Some(action) = store.action(&key) {
        match read_metrics(store, &action) {
            Ok(metrics) => {
                return Execution::Finished(NodeOutcome {
                    status: Status::Cached,
                    key: Some(key),
                    action: Some(action),
                    metrics,
                    elapsed: started.elapsed(),
                });
            }
            Err(_) => store.invalidate(&key),
        }
    }

    observer.started(&instance.id, instance.kind.name());
    let mut inputs: Vec<(String, Vec<InputArtifact>)> = Vec::new();
    for (port, bindings) in &instance.inputs {
        let mut artifacts = Vec::new();
        for b in bindings {
            let upstream = &graph.instances[b.instance];
            let action = &actions[&b.instance];
            let blob = &action.outputs[&b.output];
            match store.verified_blob(blob) {
                Ok(path) => artifacts.push(InputArtifact {
                    node: upstream.id.clone(),
                    kind: upstream.kind.name().to_string(),
                    output: b.output.clone(),
                    coords: upstream.coords.clone(),
                    params: upstream.configured.params.clone(),
                    path,
                    digest: blob.digest.clone(),
                }),
                Err(_) => {
                    store.invalidate(&action.key);
                    return Execution::CorruptInput {
                        upstream: b.instance,
                        outcome: NodeOutcome {
                            key: Some(key),
                            ..NodeOutcome::default()
                        },
                    };
                }
            }
        }
        inputs.push((port.clone(), artifacts));
    }

    let staging = match store.temp_dir(&format!("stage-{}", instance.node)) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string(), Some(key)),
    };
    let scratch = match store.temp_dir(&format!("scratch-{}", instance.node)) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string(), Some(key)),
    };
    let chunks = StoreChunks { store };
    let progress = |p: Progress| observer.progress(&p);
    let mut ctx = RunContext {
        node_id: &instance.id,
        node_key: &key,
        coords: &instance.coords,
        inputs: &inputs,
        outputs: &instance.configured.interface.outputs,
        staging: &staging,
        scratch: &scratch,
        metrics: Vec::new(),
        progress: &progress,
        cancel,
        chunks: &chunks,
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        instance.kind.run(&instance.configured, &mut ctx)
    }));
    let metrics = std::mem::take(&mut ctx.metrics);
    drop(ctx);
    let _ = std::fs::remove_dir_all(&scratch);
    let outcome = match result {
        Ok(Ok(())) => commit(store, instance, &key, &staging, metrics, started),
        Ok(Err(e)) => Err(e.message),
        Err(panic) => Err(format!("the node panicked: {}", panic_message(&panic))),
    };
    let _ = std::fs::remove_dir_all(&staging);
    match outcome {
        Ok(outcome) => Execution::Finished(outcome),
        Err(message) => fail(message, Some(key)),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

fn commit(
    store: &Store,
    instance: &crate::graph::Instance,
    key: &str,
    staging: &std::path::Path,
    metrics: Vec<MetricRow>,
    started: Instant,
) -> Result<NodeOutcome, String> {
    for row in &metrics {
        if row.metric.is_empty() {
            return Err("the node emitted a metric without a name".into());
        }
    }
    let mut outputs = BTreeMap::new();
    for output in &instance.configured.interface.outputs {
        let path = staging.join(&output.name);
        if !path.is_file() {
            return Err(format!(
                "the node did not write its declared output `{}`",
                output.name
            ));
        }
        let blob = store.put_file(&path).map_err(|e| e.to_string())?;
        outputs.insert(output.name.clone(), blob);
    }
    let metrics_bytes = serde_json::to_vec(&metrics).map_err(|e| e.to_string())?;
    let blob: BlobRef = store
        .put_bytes(&metrics_bytes, "metrics")
        .map_err(|e| e.to_string())?;
    outputs.insert(METRICS_OUTPUT.to_string(), blob);
    let action = Action {
        key: key.to_string(),
        kind: instance.kind.name().to_string(),
        node: instance.id.clone(),
        outputs,
        created_unix_ms: now_ms(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        peak_rss_kib: peak_rss_kib(),
        lmgeo_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    store.commit_action(&action).map_err(|e| e.to_string())?;
    Ok(NodeOutcome {
        status: Status::Ran,
        key: Some(key.to_string()),
        action: Some(action),
        metrics,
        elapsed: started.elapsed(),
    })
}

/// The process's peak resident set (VmHWM) where the platform reports it.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Chunks are small cache entries of their own, keyed by the node's key and
/// the chunk's name, committed one by one.
struct StoreChunks<'a> {
    store: &'a Store,
}

impl ChunkStore for StoreChunks<'_> {
    fn chunk(
        &self,
        node_key: &str,
        chunk: &str,
        produce: &mut dyn FnMut(&std::path::Path) -> Result<(), NodeError>,
    ) -> Result<PathBuf, NodeError> {
        let key = blake3::hash(format!("chunk\0{node_key}\0{chunk}").as_bytes())
            .to_hex()
            .to_string();
        let _lock = self.store.lock(&key)?;
        if let Some(action) = self.store.action(&key)
            && let Some(blob) = action.outputs.get("chunk")
        {
            match self.store.verified_blob(blob) {
                Ok(path) => return Ok(path),
                Err(_) => self.store.invalidate(&key),
            }
        }
        let dir = self.store.temp_dir("chunk")?;
        let path = dir.join("chunk");
        let produced = produce(&path);
        let result = produced.and_then(|()| {
            if !path.is_file() {
                return Err(NodeError::msg(format!("chunk `{chunk}` was not written")));
            }
            let blob = self.store.put_file(&path)?;
            let action = Action {
                key: key.clone(),
                kind: "chunk".into(),
                node: chunk.to_string(),
                outputs: [("chunk".to_string(), blob.clone())].into(),
                created_unix_ms: now_ms(),
                elapsed_ms: 0,
                peak_rss_kib: None,
                lmgeo_version: env!("CARGO_PKG_VERSION").to_string(),
            };
            self.store.commit_action(&action)?;
            Ok(self.store.blob_path(&blob.digest))
        });
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}
