//! Talking to Slurm by its command-line tools, as Snakemake, Nextflow,
//! submitit and datatrove do: `sbatch --parsable`, one `squeue` per poll,
//! `scontrol show config`, `scancel`. No accounting (`sacct`) is needed.
//!
//! The parsers are pure functions over the text the tools print (Slurm
//! 22.05 formats, captured in `tests/fixtures/slurm/`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use lmgeo_dag::execution::Resources;

/// An error from a Slurm command.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("cannot run `{command}`: {source} (is Slurm's client installed and on PATH?)")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot read the output of `{command}`: {message}")]
    Parse { command: String, message: String },
}

/// One job's state as `squeue` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    pub job: String,
    /// The array task index; `None` for a job that is not an array.
    pub task: Option<u32>,
    pub state: JobState,
    pub reason: String,
}

/// Slurm job states, grouped by what they mean for a task's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting, running, or about to run again (requeued, preempted with
    /// requeue, suspended): its result may still come.
    Alive(String),
    /// Ended: its result, if any, is in the store.
    Ended(String),
}

impl JobState {
    pub fn parse(word: &str) -> JobState {
        let word = word.trim().to_ascii_uppercase();
        // Slurm may append `+` to a state when it is being changed.
        let base = word.trim_end_matches('+');
        match base {
            "COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT" | "OUT_OF_MEMORY" | "NODE_FAIL"
            | "BOOT_FAIL" | "DEADLINE" | "SPECIAL_EXIT" | "REVOKED" => JobState::Ended(word),
            _ => JobState::Alive(word),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            JobState::Alive(s) | JobState::Ended(s) => s,
        }
    }
}

/// The format the driver asks `squeue` for: job id (with `_task` for array
/// tasks), extended state, reason.
pub const SQUEUE_FORMAT: &str = "%i|%T|%r";

/// Parses `squeue --array --noheader --format=%i|%T|%r`. A pending array
/// whose tasks are not yet split prints as one line `123_[4-9%2]` (or
/// `123_[1,3,5-7]`); it is expanded to its tasks.
pub fn parse_squeue(text: &str) -> Result<Vec<QueueEntry>, String> {
    let mut entries = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut fields = line.splitn(3, '|');
        let (Some(id), Some(state), reason) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!("unexpected line `{line}`"));
        };
        let state = JobState::parse(state);
        let reason = reason.unwrap_or("").trim().to_string();
        let id = id.trim();
        match id.split_once('_') {
            None => entries.push(QueueEntry {
                job: id.to_string(),
                task: None,
                state,
                reason,
            }),
            Some((job, tasks)) => {
                for task in parse_task_list(tasks).ok_or_else(|| format!("bad job id `{id}`"))? {
                    entries.push(QueueEntry {
                        job: job.to_string(),
                        task: Some(task),
                        state: state.clone(),
                        reason: reason.clone(),
                    });
                }
            }
        }
    }
    Ok(entries)
}

/// `7`, or `[4-9%2]`, or `[1,3,5-7]`.
fn parse_task_list(text: &str) -> Option<Vec<u32>> {
    let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
        return text.parse().ok().map(|t| vec![t]);
    };
    let inner = inner.split('%').next()?;
    let mut tasks = Vec::new();
    for part in inner.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 10_000_000 {
                    return None;
                }
                tasks.extend(a..=b);
            }
            None => tasks.push(part.parse().ok()?),
        }
    }
    Some(tasks)
}

/// The job id printed by `sbatch --parsable`: `123` or `123;cluster`.
pub fn parse_sbatch_parsable(text: &str) -> Result<String, String> {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .ok_or("sbatch printed nothing")?;
    let id = line.split(';').next().unwrap_or(line).trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("`{line}` is not a job id"));
    }
    Ok(id.to_string())
}

/// `MaxArraySize` from `scontrol show config` (Slurm's default, 1001, when
/// the line is missing). It bounds the largest index, so an array holds at
/// most this many tasks numbered from 0.
pub fn parse_max_array_size(text: &str) -> u32 {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "MaxArraySize")
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(1001)
}

/// One array submission.
#[derive(Clone, Debug, Default)]
pub struct Submission {
    pub job_name: String,
    /// Tasks 0..count.
    pub count: usize,
    pub throttle: Option<u32>,
    pub resources: Resources,
    /// Job ids this array starts after (`afterany`: each task checks its
    /// inputs itself, so a failed upstream never leaves it pending).
    pub after: Vec<String>,
    pub output: PathBuf,
    pub chdir: PathBuf,
    pub extra_args: Vec<String>,
    pub script: PathBuf,
}

impl Submission {
    /// The `sbatch` arguments, in a stable order (lmgeo's, then the
    /// executor's raw arguments, then the node's).
    pub fn arguments(&self) -> Vec<String> {
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", self.job_name),
            match self.throttle {
                Some(t) => format!("--array=0-{}%{t}", self.count.saturating_sub(1)),
                None => format!("--array=0-{}", self.count.saturating_sub(1)),
            },
            format!("--output={}", self.output.display()),
            format!("--chdir={}", self.chdir.display()),
            "--export=ALL".to_string(),
            // A preempted or failed node puts the task back in the queue:
            // safe, because publishing is atomic and idempotent.
            "--requeue".to_string(),
        ];
        if !self.after.is_empty() {
            args.push(format!("--dependency=afterany:{}", self.after.join(":")));
            args.push("--kill-on-invalid-dep=yes".to_string());
        }
        let r = &self.resources;
        if let Some(c) = r.cpus {
            args.push(format!("--cpus-per-task={c}"));
        }
        if let Some(g) = r.gpus {
            args.push(format!("--gres=gpu:{g}"));
        }
        if let Some(m) = &r.mem {
            args.push(format!("--mem={}", m.as_str()));
        }
        if let Some(t) = &r.time {
            args.push(format!("--time={}", t.as_str()));
        }
        for (flag, value) in [
            ("--partition", &r.partition),
            ("--account", &r.account),
            ("--qos", &r.qos),
        ] {
            if let Some(v) = value {
                args.push(format!("{flag}={v}"));
            }
        }
        args.extend(self.extra_args.iter().cloned());
        args.extend(r.sbatch_args.clone().unwrap_or_default());
        args.push(self.script.display().to_string());
        args
    }
}

/// What the driver needs from Slurm.
pub trait Slurm: Sync {
    /// Submits an array; returns its job id.
    fn submit(&self, submission: &Submission) -> Result<String, SlurmError>;
    /// Every job of ours with this name, in any state Slurm still reports.
    fn queue(&self, job_name: &str) -> Result<Vec<QueueEntry>, SlurmError>;
    /// The cluster's `MaxArraySize`.
    fn max_array_size(&self) -> Result<u32, SlurmError>;
    /// Cancels jobs (whole arrays).
    fn cancel(&self, jobs: &[String]) -> Result<(), SlurmError>;
    /// How many times each command ran (for the overhead benchmark).
    fn command_counts(&self) -> BTreeMap<String, usize>;
}

/// Slurm through its command-line tools on PATH.
#[derive(Default)]
pub struct SlurmCli {
    counts: Mutex<BTreeMap<String, usize>>,
}

impl SlurmCli {
    pub fn new() -> Self {
        Self::default()
    }

    fn run(&self, program: &str, args: &[String]) -> Result<String, SlurmError> {
        *self
            .counts
            .lock()
            .expect("not poisoned")
            .entry(program.to_string())
            .or_default() += 1;
        let shown = format!("{program} {}", args.join(" "));
        let output = Command::new(program)
            .args(args)
            .output()
            .map_err(|source| SlurmError::Spawn {
                command: shown.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(SlurmError::Failed {
                command: shown,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Slurm for SlurmCli {
    fn submit(&self, submission: &Submission) -> Result<String, SlurmError> {
        let out = self.run("sbatch", &submission.arguments())?;
        parse_sbatch_parsable(&out).map_err(|message| SlurmError::Parse {
            command: "sbatch --parsable".into(),
            message,
        })
    }

    fn queue(&self, job_name: &str) -> Result<Vec<QueueEntry>, SlurmError> {
        let args = [
            "--me".to_string(),
            format!("--name={job_name}"),
            "--states=all".to_string(),
            "--array".to_string(),
            "--noheader".to_string(),
            format!("--format={SQUEUE_FORMAT}"),
        ];
        let out = self.run("squeue", &args)?;
        parse_squeue(&out).map_err(|message| SlurmError::Parse {
            command: "squeue".into(),
            message,
        })
    }

    fn max_array_size(&self) -> Result<u32, SlurmError> {
        let out = self.run("scontrol", &["show".to_string(), "config".to_string()])?;
        Ok(parse_max_array_size(&out))
    }

    fn cancel(&self, jobs: &[String]) -> Result<(), SlurmError> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.run("scancel", jobs).map(|_| ())
    }

    fn command_counts(&self) -> BTreeMap<String, usize> {
        self.counts.lock().expect("not poisoned").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_expand_to_tasks() {
        let text = "101_0|RUNNING|None\n101_[3-5%2]|PENDING|JobArrayTaskLimit\n102|COMPLETED|None\n103_[1,4,6-7]|PENDING|Dependency\n";
        let entries = parse_squeue(text).unwrap();
        let ids: Vec<(String, Option<u32>)> =
            entries.iter().map(|e| (e.job.clone(), e.task)).collect();
        assert_eq!(
            ids,
            vec![
                ("101".into(), Some(0)),
                ("101".into(), Some(3)),
                ("101".into(), Some(4)),
                ("101".into(), Some(5)),
                ("102".into(), None),
                ("103".into(), Some(1)),
                ("103".into(), Some(4)),
                ("103".into(), Some(6)),
                ("103".into(), Some(7)),
            ]
        );
        assert_eq!(entries[0].state, JobState::Alive("RUNNING".into()));
        assert_eq!(entries[1].reason, "JobArrayTaskLimit");
        assert_eq!(entries[4].state, JobState::Ended("COMPLETED".into()));
    }

    #[test]
    fn squeue_rejects_what_it_cannot_read() {
        assert!(parse_squeue("garbage").is_err());
        assert!(parse_squeue("12_[x]|PENDING|None").is_err());
        assert!(parse_squeue("").unwrap().is_empty());
    }

    #[test]
    fn states_that_may_still_produce_a_result_are_alive() {
        for alive in [
            "PENDING",
            "RUNNING",
            "REQUEUED",
            "REQUEUE_HOLD",
            "PREEMPTED",
            "SUSPENDED",
            "COMPLETING",
            "CONFIGURING",
        ] {
            assert!(
                matches!(JobState::parse(alive), JobState::Alive(_)),
                "{alive}"
            );
        }
        for ended in [
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "OUT_OF_MEMORY",
            "NODE_FAIL",
            "CANCELLED+",
        ] {
            assert!(
                matches!(JobState::parse(ended), JobState::Ended(_)),
                "{ended}"
            );
        }
    }

    #[test]
    fn sbatch_ids_with_and_without_cluster() {
        assert_eq!(parse_sbatch_parsable("4242\n").unwrap(), "4242");
        assert_eq!(parse_sbatch_parsable("4242;lmgeo-test\n").unwrap(), "4242");
        assert!(parse_sbatch_parsable("").is_err());
        assert!(parse_sbatch_parsable("Submitted batch job 12").is_err());
    }

    #[test]
    fn max_array_size_from_config_or_default() {
        assert_eq!(
            parse_max_array_size("MaxArraySize            = 40\nMaxJobCount = 10000\n"),
            40
        );
        assert_eq!(parse_max_array_size("MaxJobCount = 10000\n"), 1001);
    }

    #[test]
    fn submission_arguments_carry_resources_and_dependencies() {
        let submission = Submission {
            job_name: "lmgeo-x-1".into(),
            count: 12,
            throttle: Some(3),
            resources: Resources {
                gpus: Some(1),
                cpus: Some(4),
                mem: Some("16G".to_string().try_into().unwrap()),
                time: Some("2:00:00".to_string().try_into().unwrap()),
                partition: Some("gpu".into()),
                sbatch_args: Some(vec!["--constraint=a100".into()]),
                ..Resources::default()
            },
            after: vec!["7".into(), "8".into()],
            output: "/s/%A_%a.out".into(),
            chdir: "/w".into(),
            extra_args: vec!["--qos=high".into()],
            script: "/s/task.sh".into(),
        };
        let args = submission.arguments();
        for expected in [
            "--array=0-11%3",
            "--gres=gpu:1",
            "--cpus-per-task=4",
            "--mem=16G",
            "--time=2:00:00",
            "--partition=gpu",
            "--dependency=afterany:7:8",
            "--kill-on-invalid-dep=yes",
            "--constraint=a100",
            "--qos=high",
        ] {
            assert!(
                args.contains(&expected.to_string()),
                "{expected} in {args:?}"
            );
        }
        assert_eq!(args.last().unwrap(), "/s/task.sh");
    }
}
