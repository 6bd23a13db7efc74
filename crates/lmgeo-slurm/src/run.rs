//! What a run on the cluster leaves in its run folder (`runs/<id>/` in the
//! store), for its tasks and for `lmgeo status`:
//!
//! ```text
//! runs/<id>/
//!   spec.json            the experiment as submitted (RunSpec)
//!   progress.json        counts, job ids, failures; rewritten every poll
//!   record.json          the final record (`lmgeo_dag::RunRecord`), as for a local run
//!   slurm/array-<n>.sh   the task script of one array
//!   slurm/array-<n>.jsonl  its manifest: line i is task i's instance and key
//!   slurm/logs/<job>_<task>.out
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The experiment exactly as the driver loaded it, so that every task
/// rebuilds the same graph even if the file is edited while jobs wait.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSpec {
    pub run_id: String,
    /// Where the file was (relative paths in it resolve from here).
    pub experiment_file: PathBuf,
    pub experiment_text: String,
    /// `--set` overrides.
    pub set: Vec<String>,
    /// The `LMGEO_<NODE>__<PARAM>` overrides in force at submission.
    pub env_overrides: Vec<(String, String)>,
    /// The driver's working folder; tasks run there.
    pub cwd: PathBuf,
}

/// One task's line of a manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestLine {
    pub instance: String,
    /// The key the driver computed; `None` when it depends on outputs of an
    /// earlier wave (detached mode), so the task computes it.
    pub key: Option<String>,
}

/// A failed task, for the progress record and `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub instance: String,
    pub job: String,
    pub state: String,
    pub log: PathBuf,
    pub log_tail: String,
}

/// Counts and jobs of a run in progress (or ended).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub run_id: String,
    pub experiment: String,
    pub mode: String,
    pub finished: bool,
    pub updated_unix_ms: u128,
    pub cached: usize,
    pub pending: usize,
    pub running: usize,
    pub done: usize,
    pub failed: usize,
    pub blocked: usize,
    pub waiting: usize,
    pub jobs: Vec<String>,
    pub failures: Vec<TaskFailure>,
    /// Slurm commands issued so far, by command.
    pub commands: std::collections::BTreeMap<String, usize>,
}

impl Progress {
    pub const FILE: &'static str = "progress.json";

    pub fn read(run_dir: &Path) -> Option<Progress> {
        serde_json::from_slice(&fs::read(run_dir.join(Self::FILE)).ok()?).ok()
    }

    /// Replaces the record atomically (readers never see half of it).
    pub fn write(&self, run_dir: &Path) -> std::io::Result<()> {
        let temp = run_dir.join(format!(".{}.tmp", Self::FILE));
        fs::write(&temp, serde_json::to_vec_pretty(self).expect("serializes"))?;
        fs::rename(temp, run_dir.join(Self::FILE))
    }

    /// One line for a terminal.
    pub fn line(&self) -> String {
        format!(
            "{} pending, {} running, {} done, {} failed{}{} (jobs {})",
            self.pending,
            self.running,
            self.done + self.cached,
            self.failed,
            if self.blocked > 0 {
                format!(", {} blocked", self.blocked)
            } else {
                String::new()
            },
            if self.waiting > 0 {
                format!(", {} waiting on inputs", self.waiting)
            } else {
                String::new()
            },
            if self.jobs.is_empty() {
                "none".to_string()
            } else {
                self.jobs.join(", ")
            }
        )
    }
}

impl RunSpec {
    pub const FILE: &'static str = "spec.json";

    pub fn write(&self, run_dir: &Path) -> std::io::Result<()> {
        fs::write(
            run_dir.join(Self::FILE),
            serde_json::to_vec_pretty(self).expect("serializes"),
        )
    }

    pub fn read(run_dir: &Path) -> Result<RunSpec, String> {
        let path = run_dir.join(Self::FILE);
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a run spec: {e}", path.display()))
    }
}

/// Reads line `index` (from 0) of a manifest.
pub fn manifest_line(manifest: &Path, index: usize) -> Result<ManifestLine, String> {
    let text = fs::read_to_string(manifest)
        .map_err(|e| format!("cannot read the manifest {}: {e}", manifest.display()))?;
    let line = text.lines().nth(index).ok_or_else(|| {
        format!(
            "the manifest {} has no line {index} (it has {})",
            manifest.display(),
            text.lines().count()
        )
    })?;
    serde_json::from_str(line)
        .map_err(|e| format!("line {index} of {} is not a task: {e}", manifest.display()))
}

/// The last `lines` lines of a task's log (empty if it has none yet).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Quotes a string for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
