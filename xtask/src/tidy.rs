//! Checks that keep the code and ARCHITECTURE.md telling the same story,
//! run by `cargo test --workspace` (like rust-analyzer's `xtask tidy`):
//!
//! - every crate's dependencies (direct and transitive, build and normal,
//!   from `cargo metadata`) respect its "May not depend on" line;
//! - every workspace member is in the code map;
//! - every source file opens with a module doc (`//!`) saying what it is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is one level below the root")
        .to_path_buf()
}

/// Package name → the package names it depends on, directly or not
/// (normal and build dependencies; dev-dependencies are not edges of the
/// shipped graph), for every workspace member.
fn dependency_closure() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let host = String::from_utf8(
        Command::new("rustc")
            .arg("-vV")
            .output()
            .expect("rustc runs")
            .stdout,
    )
    .expect("utf-8");
    let host = host
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string();
    let output = Command::new(cargo)
        .current_dir(root())
        .args(["metadata", "--format-version", "1", "--filter-platform"])
        .arg(&host)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let name_of: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in metadata["resolve"]["nodes"].as_array().expect("resolve") {
        let id = node["id"].as_str().unwrap();
        let shipped = node["deps"].as_array().unwrap().iter().filter(|d| {
            d["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].as_str() != Some("dev"))
        });
        edges.insert(id, shipped.map(|d| d["pkg"].as_str().unwrap()).collect());
    }
    let mut closure = BTreeMap::new();
    for member in metadata["workspace_members"].as_array().unwrap() {
        let member = member.as_str().unwrap();
        let mut seen = BTreeSet::new();
        let mut stack = vec![member];
        while let Some(id) = stack.pop() {
            for &dep in edges.get(id).into_iter().flatten() {
                if seen.insert(dep) {
                    stack.push(dep);
                }
            }
        }
        closure.insert(
            name_of[member].to_string(),
            seen.into_iter().map(|id| name_of[id].to_string()).collect(),
        );
    }
    closure
}

/// Each crate heading of the code map with its "May not depend on" terms.
fn forbidden_lists(architecture: &str) -> BTreeMap<String, Vec<String>> {
    let mut lists = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut sentence: Option<String> = None;
    for line in architecture.lines() {
        if let Some(heading) = line.strip_prefix("### `crates/") {
            current = heading.split('`').next().map(str::to_string);
            continue;
        }
        if let Some(rest) = line.strip_prefix("May not depend on:") {
            sentence = Some(rest.to_string());
        } else if let Some(text) = sentence.as_mut() {
            text.push(' ');
            text.push_str(line);
        }
        if let Some(text) = sentence.as_ref()
            && text.trim_end().ends_with('.')
        {
            let crate_name = current.clone().expect("a list under a crate heading");
            let terms = text
                .trim()
                .trim_end_matches('.')
                .split(", ")
                .map(|t| t.trim().to_string())
                .collect();
            lists.insert(crate_name, terms);
            sentence = None;
        }
    }
    lists
}

/// Whether `dependency` is what `term` forbids for `owner`. An unknown
/// term fails the check, so that every list stays machine-readable.
fn forbids(term: &str, owner: &str, dependency: &str) -> Result<bool, String> {
    let lmgeo = dependency.starts_with("lmgeo-") && dependency != owner;
    Ok(match term {
        "candle" => dependency.starts_with("candle-"),
        "polars" => dependency == "polars" || dependency.starts_with("polars-"),
        "arrow" => dependency == "arrow" || dependency.starts_with("arrow-"),
        "arrow/parquet" => {
            dependency == "arrow" || dependency.starts_with("arrow-") || dependency == "parquet"
        }
        "any lmgeo crate" | "any other lmgeo crate" => lmgeo,
        _ => {
            if let Some(allowed) = term.strip_prefix("any lmgeo crate but ") {
                lmgeo && dependency != allowed
            } else if term.starts_with("lmgeo-") {
                dependency == term
            } else {
                return Err(format!("`{term}` is not a term this check understands"));
            }
        }
    })
}

#[test]
fn crate_dependencies_respect_the_code_map() {
    let architecture = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let lists = forbidden_lists(&architecture);
    assert!(
        lists.len() >= 8,
        "only {} \"May not depend on\" lists found in ARCHITECTURE.md",
        lists.len()
    );
    let closure = dependency_closure();
    let mut violations = Vec::new();
    for (owner, terms) in &lists {
        let Some(dependencies) = closure.get(owner) else {
            violations.push(format!(
                "ARCHITECTURE.md has a list for `{owner}`, which is not a workspace member"
            ));
            continue;
        };
        for term in terms {
            for dependency in dependencies {
                match forbids(term, owner, dependency) {
                    Ok(true) => violations.push(format!(
                        "{owner} depends on {dependency}, which ARCHITECTURE.md forbids (\"{term}\")"
                    )),
                    Ok(false) => {}
                    Err(message) => {
                        violations.push(format!("{owner}: {message}"));
                        break;
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_checker_reads_the_lists_and_catches_a_forbidden_edge() {
    let text = "### `crates/lmgeo-a` — one\nMay not depend on: candle, any lmgeo crate but\nlmgeo-b.\n### `crates/lmgeo-b` — two\nMay not depend on: polars.\n";
    let lists = forbidden_lists(text);
    assert_eq!(lists["lmgeo-a"], ["candle", "any lmgeo crate but lmgeo-b"]);
    assert_eq!(lists["lmgeo-b"], ["polars"]);
    assert!(forbids("candle", "lmgeo-a", "candle-core").unwrap());
    assert!(forbids("any lmgeo crate but lmgeo-b", "lmgeo-a", "lmgeo-c").unwrap());
    assert!(!forbids("any lmgeo crate but lmgeo-b", "lmgeo-a", "lmgeo-b").unwrap());
    assert!(!forbids("polars", "lmgeo-b", "polar-bear").unwrap());
    assert!(forbids("rust", "lmgeo-a", "x").is_err());
}

#[test]
fn every_workspace_member_is_in_the_code_map() {
    let architecture = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let members: toml::Table = manifest.parse().unwrap();
    let missing: Vec<&str> = members["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .filter(|m| *m != ".")
        .filter(|m| !architecture.contains(&format!("`{m}")))
        .collect();
    assert!(
        missing.is_empty(),
        "workspace members without a place in ARCHITECTURE.md's code map: {missing:?}"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_says_what_it_is() {
    let root = root();
    let mut files = Vec::new();
    for dir in ["src", "xtask/src", "examples/probe-crate/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    for entry in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        rust_files(&entry.path().join("src"), &mut files);
    }
    assert!(files.len() > 50, "only {} source files found", files.len());
    let undocumented: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        undocumented.is_empty(),
        "source files without a module doc (`//!` first): {undocumented:#?}"
    );
}
