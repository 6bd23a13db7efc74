//! Records that outlive a run and cross crates: an instance's [`Status`]
//! (and the one way it is put into words), and the [`RunRecord`] each run
//! leaves in the store's `runs/` folder, which `lmgeo gc` and `lmgeo status`
//! read back.
//!
//! The store's run record is `record.json`; the output folder's `run.json`
//! (written by the CLI for people and scripts) is a different file with a
//! different shape.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::graph::Graph;
use crate::scheduler::RunReport;
use crate::store::StoreError;

/// What happened to one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

    /// One word for counting: `cached`, `ran`, `failed`, `blocked`, `skipped`.
    pub fn word(&self) -> &'static str {
        match self {
            Status::Cached => "cached",
            Status::Ran => "ran",
            Status::Failed(_) => "failed",
            Status::Blocked { .. } => "blocked",
            Status::Skipped => "skipped",
        }
    }
}

/// The word, with the reason where there is one: `failed: <message>`,
/// `blocked by <upstream>`.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Failed(message) => write!(f, "failed: {message}"),
            Status::Blocked { upstream } => write!(f, "blocked by {upstream}"),
            other => f.write_str(other.word()),
        }
    }
}

/// One instance's line in a [`RunRecord`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub instance: String,
    pub kind: String,
    /// `None` when the instance could not be keyed (blocked, or failed
    /// before its inputs were known).
    pub key: Option<String>,
    pub status: Status,
    pub elapsed_ms: u64,
}

/// What a finished run leaves in its folder under the store's `runs/`: the
/// keys it used (what `gc` keeps for the last runs) and each instance's
/// status (what `status` shows). A run folder without one is a run in
/// progress or one that was killed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub experiment: String,
    pub file: PathBuf,
    pub finished_unix_ms: u128,
    pub instances: Vec<InstanceRecord>,
}

impl RunRecord {
    /// The record's file name inside a run folder.
    pub const FILE_NAME: &'static str = "record.json";
    /// What stores written before version 0.1 of the record called it.
    const LEGACY_FILE_NAME: &'static str = "run.json";

    pub fn of(graph: &Graph, report: &RunReport) -> Self {
        let instances = graph
            .instances
            .iter()
            .zip(&report.outcomes)
            .map(|(instance, outcome)| InstanceRecord {
                instance: instance.id.clone(),
                kind: instance.kind.name().to_string(),
                key: outcome.key.clone(),
                status: outcome.status.clone(),
                elapsed_ms: u64::try_from(outcome.elapsed.as_millis()).unwrap_or(u64::MAX),
            })
            .collect();
        Self {
            experiment: graph.experiment.name.clone(),
            file: graph.experiment.file.path.clone(),
            finished_unix_ms: now_unix_ms(),
            instances,
        }
    }

    /// Writes the record into `run_dir`, replacing it atomically.
    pub fn write(&self, run_dir: &Path) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(self).expect("a run record serializes");
        crate::store::replace_file(&run_dir.join(Self::FILE_NAME), &bytes)
    }

    /// The record of a finished run; `Ok(None)` when the run has not
    /// finished (or was killed). Records of older stores carry their keys
    /// only: their statuses read as [`Status::Skipped`].
    pub fn read(run_dir: &Path) -> Result<Option<Self>, StoreError> {
        let path = run_dir.join(Self::FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Record {
                    path,
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::read_legacy(run_dir),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Whether the run in `run_dir` finished and left its record.
    pub fn exists(run_dir: &Path) -> bool {
        run_dir.join(Self::FILE_NAME).is_file() || run_dir.join(Self::LEGACY_FILE_NAME).is_file()
    }

    /// Every key the run used.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.instances.iter().filter_map(|i| i.key.as_deref())
    }

    fn read_legacy(run_dir: &Path) -> Result<Option<Self>, StoreError> {
        #[derive(Deserialize)]
        struct LegacyInstance {
            instance: String,
            kind: String,
            key: Option<String>,
            #[serde(default)]
            elapsed_ms: u64,
        }
        #[derive(Deserialize)]
        struct Legacy {
            experiment: String,
            file: PathBuf,
            #[serde(default)]
            finished_unix_ms: u128,
            instances: Vec<LegacyInstance>,
        }
        let path = run_dir.join(Self::LEGACY_FILE_NAME);
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(None);
        };
        let legacy: Legacy = serde_json::from_slice(&bytes).map_err(|e| StoreError::Record {
            path,
            message: e.to_string(),
        })?;
        Ok(Some(Self {
            experiment: legacy.experiment,
            file: legacy.file,
            finished_unix_ms: legacy.finished_unix_ms,
            instances: legacy
                .instances
                .into_iter()
                .map(|i| InstanceRecord {
                    instance: i.instance,
                    kind: i.kind,
                    key: i.key,
                    status: Status::Skipped,
                    elapsed_ms: i.elapsed_ms,
                })
                .collect(),
        }))
    }
}

pub(crate) fn now_unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RunRecord {
        RunRecord {
            experiment: "demo".into(),
            file: "experiments/demo.toml".into(),
            finished_unix_ms: 1,
            instances: vec![
                InstanceRecord {
                    instance: "a".into(),
                    kind: "k".into(),
                    key: Some("ab12".into()),
                    status: Status::Ran,
                    elapsed_ms: 5,
                },
                InstanceRecord {
                    instance: "b".into(),
                    kind: "k".into(),
                    key: None,
                    status: Status::Blocked {
                        upstream: "a".into(),
                    },
                    elapsed_ms: 0,
                },
                InstanceRecord {
                    instance: "c".into(),
                    kind: "k".into(),
                    key: Some("cd34".into()),
                    status: Status::Failed("out of memory".into()),
                    elapsed_ms: 0,
                },
            ],
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!RunRecord::exists(dir.path()));
        assert_eq!(RunRecord::read(dir.path()).unwrap(), None);
        record().write(dir.path()).unwrap();
        assert!(RunRecord::exists(dir.path()));
        let read = RunRecord::read(dir.path()).unwrap().unwrap();
        assert_eq!(read, record());
        assert_eq!(read.keys().collect::<Vec<_>>(), ["ab12", "cd34"]);
    }

    #[test]
    fn a_legacy_record_gives_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = r#"{"experiment": "demo", "file": "x.toml", "finished_unix_ms": 3,
            "instances": [{"instance": "a", "kind": "k", "key": "ab12",
                           "status": "Failed(\"boom\")", "elapsed_ms": 7},
                          {"instance": "b", "kind": "k", "key": null, "status": "Skipped"}]}"#;
        std::fs::write(dir.path().join("run.json"), legacy).unwrap();
        assert!(RunRecord::exists(dir.path()));
        let read = RunRecord::read(dir.path()).unwrap().unwrap();
        assert_eq!(read.keys().collect::<Vec<_>>(), ["ab12"]);
        assert_eq!(read.instances[0].elapsed_ms, 7);
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RunRecord::FILE_NAME), "{").unwrap();
        let error = RunRecord::read(dir.path()).unwrap_err().to_string();
        assert!(error.contains("record.json"), "{error}");
    }

    #[test]
    fn statuses_read_as_words() {
        let words: Vec<String> = [
            Status::Cached,
            Status::Ran,
            Status::Failed("no GPU".into()),
            Status::Blocked {
                upstream: "load".into(),
            },
            Status::Skipped,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            words,
            [
                "cached",
                "ran",
                "failed: no GPU",
                "blocked by load",
                "skipped"
            ]
        );
        assert_eq!(Status::Failed("x".into()).word(), "failed");
    }
}
