//! Helpers for driving the `lmgeo` binary in end-to-end tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn lmgeo() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lmgeo"));
    cmd.current_dir(repo_root());
    // Tests must not pick up a developer's overrides.
    for (key, _) in std::env::vars() {
        if key.starts_with("LMGEO_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

pub struct Run {
    pub output: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).to_string()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).to_string()
    }
    pub fn success(&self) -> bool {
        self.output.status.success()
    }
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }
    /// The `--json` summary line.
    pub fn summary(&self) -> serde_json::Value {
        let stdout = self.stdout();
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| {
                panic!(
                    "no JSON summary in stdout:\n{stdout}\nstderr:\n{}",
                    self.stderr()
                )
            });
        serde_json::from_str(line).expect("valid JSON summary")
    }
}

pub fn run(args: &[&str]) -> Run {
    let output = lmgeo().args(args).output().expect("lmgeo runs");
    Run { output }
}

/// Adds `--store STORE run FILE --json --out OUT EXTRA...` to `cmd`.
pub fn run_args<'c>(
    cmd: &'c mut Command,
    file: &Path,
    store: &Path,
    out: &Path,
    extra: &[&str],
) -> &'c mut Command {
    cmd.arg("--store")
        .arg(store)
        .arg("run")
        .arg(file)
        .arg("--json")
        .arg("--out")
        .arg(out)
        .args(extra)
}

/// `lmgeo run FILE --json` with a store and output folder.
pub fn run_experiment(file: &Path, store: &Path, out: &Path, extra: &[&str]) -> Run {
    let output = run_args(&mut lmgeo(), file, store, out, extra)
        .output()
        .expect("lmgeo runs");
    Run { output }
}

/// Node statuses from a run's `run.json`.
pub fn statuses(out: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(out.join("run.json")).expect("run.json exists");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_string(),
                n["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every file under a folder with its bytes, for before/after comparisons.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}
