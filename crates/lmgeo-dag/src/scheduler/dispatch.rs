//! Which instance runs when: the local executor's loop, and one instance
//! as another executor's worker runs it.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use super::execute::{Execution, KEYS_LOG, execute, log_key};
use super::plan::{key_for, preimage_for};
use super::{NodeOutcome, Observer, PlanStatus, RunOptions, RunReport, Status};
use crate::graph::Graph;
use crate::record::RunRecord;
use crate::store::{Action, Store, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    Ready,
    Running,
    Done,
    Failed,
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
                let keys_log = run_dir.join(KEYS_LOG);
                scope.spawn(move |_| {
                    let result = execute(
                        graph,
                        store,
                        index,
                        &upstream_actions,
                        observer,
                        &cancel,
                        Some(&keys_log),
                    );
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
            let outcome = match execution {
                Execution::Finished(outcome) => outcome,
                Execution::CorruptInput { upstream, outcome } => {
                    // Recompute the upstream once; a second corruption of the
                    // same blob in one run is a failure, not a loop.
                    reruns[upstream] += 1;
                    if reruns[upstream] == 1 {
                        state[index] = State::Waiting;
                        state[upstream] = State::Ready;
                        actions[upstream] = None;
                        ready.push_front(upstream);
                        continue;
                    }
                    NodeOutcome {
                        status: Status::Failed(format!(
                            "input from `{}` is corrupt again after recomputing it",
                            graph.instances[upstream].id
                        )),
                        ..outcome
                    }
                }
            };
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
    });

    let report = RunReport {
        outcomes,
        run_dir: Some(run_dir.clone()),
    };
    RunRecord::of(graph, &report).write(&run_dir)?;
    Ok(report)
}

/// A run that writes nothing to the store, for a store that can be read but
/// not written (a shared store mounted read-only): every instance must
/// already be cached, and no run folder, key note, name record or lock is
/// made. `Err` lists the instances that are not cached.
pub fn serve_cached(graph: &Graph, store: &Store) -> Result<RunReport, Vec<String>> {
    let entries = super::plan(graph, store);
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut missing = Vec::new();
    for entry in entries {
        let cached = match (&entry.status, &entry.key) {
            (PlanStatus::Cached, Some(key)) => super::cached_outcome(store, key),
            _ => None,
        };
        match cached {
            Some(outcome) => outcomes.push(outcome),
            None => missing.push(entry.instance),
        }
    }
    if missing.is_empty() {
        Ok(RunReport {
            outcomes,
            run_dir: None,
        })
    } else {
        Err(missing)
    }
}

/// Runs one instance the way a worker of another executor does (a Slurm
/// task): its inputs are whatever the store holds for its upstreams now.
///
/// Idempotent: if the key is already committed it returns `Cached`;
/// otherwise it takes the key's lock, checks again, computes and commits.
/// `expected_key` is the key the submitter computed: a different key here
/// means the experiment or an input changed since, and the instance fails
/// rather than compute something nobody asked for.
///
/// `keys_log` is the submitting run's [`KEYS_LOG`]: the instance notes there
/// its inputs' keys and its own before reading or computing them, as the
/// local executor does, so that `gc --force` spares them while the run is
/// in progress.
pub fn run_instance(
    graph: &Graph,
    store: &Store,
    index: usize,
    expected_key: Option<&str>,
    cancel: &AtomicBool,
    observer: &dyn Observer,
    keys_log: Option<&Path>,
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
            if let Some(log) = keys_log {
                log_key(log, &key);
            }
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
    match execute(graph, store, index, &direct, observer, cancel, keys_log) {
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
