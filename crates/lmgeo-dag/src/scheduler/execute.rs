//! One instance from its verified inputs to a committed action: under the
//! key's lock, check the store again, stage, run the node (a panic is a
//! failure, not a crash), move its outputs and metrics into the store and
//! commit.

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::plan::preimage_for;
use super::{NodeOutcome, Observer, Status};
use crate::graph::{Graph, Instance, METRICS_OUTPUT};
use crate::node::{InputArtifact, MetricRow, Progress, RunContext};
use crate::record::now_unix_ms;
use crate::store::{Action, BlobRef, NameRecord, Store, StoreError};

pub(super) enum Execution {
    Finished(NodeOutcome),
    /// An input blob failed verification: rerun that upstream, then retry.
    CorruptInput {
        upstream: usize,
        outcome: NodeOutcome,
    },
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

fn read_metrics(store: &Store, action: &Action) -> Result<Vec<MetricRow>, StoreError> {
    let Some(blob) = action.outputs.get(METRICS_OUTPUT) else {
        return Ok(Vec::new());
    };
    let bytes = store.read_verified(blob)?;
    MetricRow::read_all(&bytes).map_err(|e| StoreError::Record {
        path: store.blob_path(&blob.digest),
        message: e.to_string(),
    })
}

/// The file in a run's folder listing, one per line, every key the run has
/// resolved so far (cached or to compute), written before the key's entry
/// is read or computed: what `gc --force` keeps for a run in progress.
pub const KEYS_LOG: &str = "keys";

pub(super) fn log_key(keys_log: &Path, key: &str) {
    use std::io::Write;
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(keys_log)
        .and_then(|mut f| f.write_all(format!("{key}\n").as_bytes()));
    if let Err(e) = appended {
        tracing::warn!("cannot note key {key} in {}: {e}", keys_log.display());
    }
}

pub(super) fn execute(
    graph: &Graph,
    store: &Store,
    index: usize,
    actions: &HashMap<usize, Action>,
    observer: &dyn Observer,
    cancel: &AtomicBool,
    keys_log: Option<&Path>,
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
    if let Some(log) = keys_log {
        log_key(log, &key);
    }
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
        // The outputs published to the results folder are read by no node
        // downstream, so nothing else would notice them corrupt: checked
        // here (they are small), a corrupt one makes the entry a miss.
        let published_intact = instance
            .configured
            .interface
            .outputs
            .iter()
            .filter(|o| o.publish)
            .all(|o| {
                action
                    .outputs
                    .get(&o.name)
                    .is_some_and(|b| store.verified_blob(b).is_ok())
            });
        match read_metrics(store, &action) {
            Ok(metrics) if published_intact => {
                return Execution::Finished(NodeOutcome {
                    status: Status::Cached,
                    key: Some(key),
                    action: Some(action),
                    metrics,
                    elapsed: started.elapsed(),
                });
            }
            _ => store.invalidate(&key),
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
        chunks: store,
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        instance.kind.run(&instance.configured, &mut ctx)
    }));
    let metrics = std::mem::take(&mut ctx.metrics);
    drop(ctx);
    let _ = std::fs::remove_dir_all(&scratch);
    let outcome = match result {
        Ok(Ok(())) => commit(store, instance, &key, &staging, metrics, started),
        Ok(Err(e)) => Err(storage_context(store, e.message)),
        Err(panic) => Err(format!("the node panicked: {}", panic_message(&panic))),
    };
    let _ = std::fs::remove_dir_all(&staging);
    match outcome {
        Ok(outcome) => Execution::Finished(outcome),
        Err(message) => fail(message, Some(key)),
    }
}

/// A node writes its outputs into the store's staging folder, and its error
/// may not say where (a Parquet writer reports "No space left on device" and
/// nothing more): when the cause is the store's filesystem, say so.
fn storage_context(store: &Store, message: String) -> String {
    // ENOSPC, EROFS and EDQUOT as the OS words them.
    #[cfg(target_os = "linux")]
    const CAUSES: [(i32, &str); 3] = [
        (28, "is full"),
        (30, "is read-only"),
        (122, "is over its disk quota"),
    ];
    #[cfg(not(target_os = "linux"))]
    const CAUSES: [(i32, &str); 0] = [];
    let root = store.root().display().to_string();
    for (code, what) in CAUSES {
        if message.contains(&std::io::Error::from_raw_os_error(code).to_string())
            && !message.contains(&root)
        {
            return format!("{message} (writing into the store {root}, whose filesystem {what})");
        }
    }
    message
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
    instance: &Instance,
    key: &str,
    staging: &Path,
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
    let metrics_bytes = MetricRow::write_all(&metrics);
    let blob: BlobRef = store
        .put_bytes(&metrics_bytes, "metrics")
        .map_err(|e| e.to_string())?;
    outputs.insert(METRICS_OUTPUT.to_string(), blob);
    let action = Action {
        key: key.to_string(),
        kind: instance.kind.name().to_string(),
        node: instance.id.clone(),
        outputs,
        created_unix_ms: now_unix_ms(),
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
