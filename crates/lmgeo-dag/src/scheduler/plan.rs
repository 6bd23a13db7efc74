//! What a run would do: each instance's key, whether the store holds it,
//! and if not, why it will run.

use crate::graph::Graph;
use crate::key::{FileKey, InputKey, Preimage, STORE_SCHEMA, digest_json, explain_difference};
use crate::store::{Action, Store, StoreError};

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
pub(super) fn preimage_for<'a>(
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
