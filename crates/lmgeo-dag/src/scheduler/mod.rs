//! Planning and running a graph against the store.
//!
//! The scheduler knows nothing of what nodes mean. Three concerns, one file
//! each:
//! - [`plan`]: keys, hits and why a miss will run, without running anything;
//! - `dispatch`: the local executor's loop ([`run`]: rayon, topological,
//!   a separate bound for heavy nodes, stopping the descendants of failures)
//!   and [`run_instance`], one instance as another executor's worker runs it;
//! - `execute`: one instance from its verified inputs to a committed action
//!   (and its metrics), under the key's lock.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::node::{MetricRow, Progress};
use crate::store::Action;

mod dispatch;
mod execute;
mod plan;

pub use crate::record::Status;
pub use dispatch::{run, run_instance, serve_cached};
pub use execute::{KEYS_LOG, cached_outcome, peak_rss_kib};
pub use plan::{PlanEntry, PlanStatus, key_for, plan};

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
    /// The run's folder in the store; `None` for a run served from a store
    /// that cannot be written ([`serve_cached`]).
    pub run_dir: Option<PathBuf>,
}

impl RunReport {
    pub fn count(&self, pred: impl Fn(&Status) -> bool) -> usize {
        self.outcomes.iter().filter(|o| pred(&o.status)).count()
    }

    pub fn all_succeeded(&self) -> bool {
        self.outcomes.iter().all(|o| o.status.succeeded())
    }
}
