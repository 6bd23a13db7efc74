//! Where an experiment runs: the `[executor]` table and the `[resources.*]`
//! tables of an experiment file (or of the user's configuration).
//!
//! ```toml
//! [executor]
//! kind = "slurm"            # or "local" (the default)
//! poll_seconds = 10
//! array_throttle = 20       # at most 20 tasks of one array at once
//!
//! [resources.default]       # every node
//! time = "0:30:00"
//!
//! [resources.extract]       # a node kind, or a node by name (wins)
//! gpus = 1
//! mem = "16G"
//! time = "2:00:00"
//! partition = "gpu"
//! cpus = 4
//! sbatch_args = ["--constraint=a100"]
//! ```
//!
//! Nothing here enters a cache key: where a node ran never changes what it
//! computed.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// Which executor runs the nodes that miss the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    #[default]
    Local,
    Slurm,
}

impl std::fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Slurm => "slurm",
        })
    }
}

/// The `[executor]` table. Every field is optional so that a user
/// configuration, the experiment file and the command line can layer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSettings {
    pub kind: Option<ExecutorKind>,
    /// Seconds between two polls of the queue (attached mode).
    pub poll_seconds: Option<f64>,
    /// Seconds a task may be gone from the queue without a committed result
    /// before it counts as failed: the time a shared filesystem may take to
    /// show another host's writes.
    pub grace_seconds: Option<f64>,
    /// At most this many tasks of one array run at once (`%N`).
    pub array_throttle: Option<u32>,
    /// Submit every wave with dependencies and return at once.
    pub detach: Option<bool>,
    /// The `lmgeo` binary as the compute nodes see it (default: this one).
    pub lmgeo: Option<String>,
    /// The job name prefix (default `lmgeo`).
    pub job_prefix: Option<String>,
    /// Extra `sbatch` arguments for every job.
    pub sbatch_args: Option<Vec<String>>,
}

impl ExecutorSettings {
    /// `self` with the fields `over` sets replaced.
    pub fn layered(&self, over: &ExecutorSettings) -> ExecutorSettings {
        ExecutorSettings {
            kind: over.kind.or(self.kind),
            poll_seconds: over.poll_seconds.or(self.poll_seconds),
            grace_seconds: over.grace_seconds.or(self.grace_seconds),
            array_throttle: over.array_throttle.or(self.array_throttle),
            detach: over.detach.or(self.detach),
            lmgeo: over.lmgeo.clone().or_else(|| self.lmgeo.clone()),
            job_prefix: over.job_prefix.clone().or_else(|| self.job_prefix.clone()),
            sbatch_args: over
                .sbatch_args
                .clone()
                .or_else(|| self.sbatch_args.clone()),
        }
    }

    /// Checks values serde cannot: returns the first problem, as a message
    /// naming the field.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [
            ("poll_seconds", self.poll_seconds),
            ("grace_seconds", self.grace_seconds),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!(
                    "`{name}` must be a number of seconds ≥ 0, found {v}"
                ));
            }
        }
        if self.array_throttle == Some(0) {
            return Err("`array_throttle` must be at least 1 (leave it out for no limit)".into());
        }
        if let Some(prefix) = &self.job_prefix
            && (prefix.is_empty()
                || !prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(format!(
                "`job_prefix` `{prefix}` must be letters, digits, `-` or `_`"
            ));
        }
        Ok(())
    }
}

/// What one node's task asks of the cluster. Unset fields are left to the
/// cluster's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpus: Option<u32>,
    pub gpus: Option<u32>,
    pub mem: Option<Memory>,
    pub time: Option<TimeLimit>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Raw `sbatch` arguments, appended after everything lmgeo sets.
    pub sbatch_args: Option<Vec<String>>,
}

impl Resources {
    /// `self` with the fields `over` sets replaced; `sbatch_args` add up.
    pub fn layered(&self, over: &Resources) -> Resources {
        let mut args = self.sbatch_args.clone().unwrap_or_default();
        args.extend(over.sbatch_args.clone().unwrap_or_default());
        Resources {
            cpus: over.cpus.or(self.cpus),
            gpus: over.gpus.or(self.gpus),
            mem: over.mem.clone().or_else(|| self.mem.clone()),
            time: over.time.clone().or_else(|| self.time.clone()),
            partition: over.partition.clone().or_else(|| self.partition.clone()),
            account: over.account.clone().or_else(|| self.account.clone()),
            qos: over.qos.clone().or_else(|| self.qos.clone()),
            sbatch_args: (!args.is_empty()).then_some(args),
        }
    }
}

/// A memory size as Slurm's `--mem` takes it: a whole number with an
/// optional unit K, M, G or T (megabytes when none).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Memory(String);

impl Memory {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Memory {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let trimmed = text.trim();
        let digits = trimmed.trim_end_matches(|c: char| "KMGTkmgt".contains(c));
        let unit_len = trimmed.len() - digits.len();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || unit_len > 1 {
            return Err(format!(
                "`{text}` is not a memory size: use a whole number with K, M, G or T, e.g. \"16G\""
            ));
        }
        Ok(Memory(trimmed.to_ascii_uppercase()))
    }
}

impl From<Memory> for String {
    fn from(m: Memory) -> String {
        m.0
    }
}

/// A time limit in one of Slurm's forms: `minutes`, `minutes:seconds`,
/// `hours:minutes:seconds`, `days-hours`, `days-hours:minutes`,
/// `days-hours:minutes:seconds`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeLimit(String);

impl TimeLimit {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TimeLimit {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{text}` is not a time limit: use minutes (\"90\"), \"H:MM:SS\" (\"2:00:00\") or \"D-HH:MM:SS\" (\"1-12:00:00\")"
            )
        };
        let trimmed = text.trim();
        let (days, clock) = match trimmed.split_once('-') {
            Some((d, rest)) => (Some(d), rest),
            None => (None, trimmed),
        };
        let numeric = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        if days.is_some_and(|d| !numeric(d)) {
            return Err(bad());
        }
        let parts: Vec<&str> = clock.split(':').collect();
        if parts.len() > 3 || !parts.iter().all(|p| numeric(p)) {
            return Err(bad());
        }
        Ok(TimeLimit(trimmed.to_string()))
    }
}

impl From<TimeLimit> for String {
    fn from(t: TimeLimit) -> String {
        t.0
    }
}

/// The resource tables of an experiment, by the key they were given under:
/// `default`, a node kind, or a node name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceTables(pub IndexMap<String, Resources>);

/// The key of the resource table that applies to every node.
pub const DEFAULT_RESOURCES: &str = "default";

impl ResourceTables {
    /// What a node asks for: `default`, then its kind's table, then its own
    /// (by node name), each overriding the one before.
    pub fn for_node(&self, node: &str, kind: &str) -> Resources {
        let mut resources = Resources::default();
        for key in [DEFAULT_RESOURCES, kind, node] {
            if let Some(r) = self.0.get(key) {
                resources = resources.layered(r);
            }
        }
        resources
    }

    /// These tables with `over`'s laid on top, key by key.
    pub fn layered(&self, over: &ResourceTables) -> ResourceTables {
        let mut merged = self.0.clone();
        for (key, r) in &over.0 {
            let base = merged.get(key).cloned().unwrap_or_default();
            merged.insert(key.clone(), base.layered(r));
        }
        ResourceTables(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_follow_slurm() {
        for ok in ["16G", "512", "4000M", "1t", " 2G "] {
            assert!(Memory::try_from(ok.to_string()).is_ok(), "{ok}");
        }
        for bad in ["", "G", "16GB", "1.5G", "-1G", "lots"] {
            assert!(Memory::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_limits_follow_slurm() {
        for ok in ["90", "30:00", "2:00:00", "1-12", "1-12:00", "1-12:00:00"] {
            assert!(TimeLimit::try_from(ok.to_string()).is_ok(), "{ok}");
        }
        for bad in ["", "2h", "1:2:3:4", "-1", "1-", "a-1:00", "1.5"] {
            assert!(TimeLimit::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_tables_override_kind_tables_override_the_default() {
        let mut tables = IndexMap::new();
        tables.insert(
            "default".to_string(),
            Resources {
                time: Some(TimeLimit("10".into())),
                cpus: Some(1),
                sbatch_args: Some(vec!["--a".into()]),
                ..Resources::default()
            },
        );
        tables.insert(
            "extract".to_string(),
            Resources {
                cpus: Some(4),
                gpus: Some(1),
                sbatch_args: Some(vec!["--b".into()]),
                ..Resources::default()
            },
        );
        tables.insert(
            "big".to_string(),
            Resources {
                gpus: Some(2),
                ..Resources::default()
            },
        );
        let tables = ResourceTables(tables);
        let big = tables.for_node("big", "extract");
        assert_eq!(big.cpus, Some(4));
        assert_eq!(big.gpus, Some(2));
        assert_eq!(big.time.as_ref().map(TimeLimit::as_str), Some("10"));
        assert_eq!(big.sbatch_args, Some(vec!["--a".into(), "--b".into()]));
        let other = tables.for_node("stats", "entropy");
        assert_eq!(other.cpus, Some(1));
        assert_eq!(other.gpus, None);
    }
}
