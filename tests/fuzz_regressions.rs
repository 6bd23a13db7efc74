//! Replays on stable, through the fuzz targets' own entry points
//! (tests/fuzz_entry), every input kept from fuzzing: the crashes found
//! (fixed since) and a minimised corpus. See RELIABILITY.md, "Fuzzing".
//!
//! A file named `invalid-*` must be refused (an `Err` with a message);
//! `valid-*` must be accepted; any other file (the minimised corpus) only
//! must not panic. Every file is run twice and must give the same answer.

mod common;
mod fuzz_entry;

use std::path::PathBuf;

type Entry = fn(&[u8]) -> Result<(), String>;

fn replay(target: &str, entry: Entry, at_least: usize) {
    let dir = common::repo_root()
        .join("tests/fuzz-regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= at_least,
        "{}: only {} files",
        dir.display(),
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let data = std::fs::read(file).unwrap();
        let first = std::panic::catch_unwind(|| entry(&data));
        let second = std::panic::catch_unwind(|| entry(&data));
        match (first, second) {
            (Ok(a), Ok(b)) => {
                if a != b {
                    failures.push(format!("{name}: two runs differ: {a:?} / {b:?}"));
                }
                if name.starts_with("invalid-") && a.is_ok() {
                    failures.push(format!("{name}: accepted, but it is invalid"));
                }
                if name.starts_with("valid-")
                    && let Err(e) = &a
                {
                    failures.push(format!("{name}: refused: {e}"));
                }
                if let Err(message) = &a
                    && message.trim().is_empty()
                {
                    failures.push(format!("{name}: refused with an empty message"));
                }
            }
            _ => failures.push(format!("{name}: panicked")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn experiment_files_found_by_fuzzing() {
    replay("spec", fuzz_entry::spec, 10);
}

#[test]
fn set_arguments_found_by_fuzzing() {
    replay("set", fuzz_entry::set, 10);
}

#[test]
fn plugin_manifests_found_by_fuzzing() {
    replay("manifest", fuzz_entry::manifest, 10);
}
