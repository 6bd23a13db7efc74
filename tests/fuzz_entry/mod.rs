//! The entry points the fuzz targets drive (fuzz/fuzz_targets/*.rs include
//! this file), shared with tests/fuzz_regressions.rs so that every input the
//! fuzzers found is replayed on stable through the very same code.
//!
//! Each returns `Ok(())` when the input was accepted and `Err(message)` with
//! the text a user would see when it was refused. A panic is the bug.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lmgeo_dag::{Overrides, Registry};

/// Fewer instances than the default limit, so that one fuzz input cannot
/// spend seconds configuring a legitimate but large sweep.
const FUZZ_MAX_INSTANCES: u64 = 10_000;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(lmgeo_nodes::builtin_registry)
}

/// What `lmgeo plan FILE` does before it opens the store: parse with
/// overrides, validate and expand the graph against the built-in kinds, and
/// render either the graph (as `lmgeo dag` does) or the errors (as the CLI
/// prints them, source excerpt included).
fn load_and_build(path: &Path, text: &str, set: Vec<String>) -> Result<(), String> {
    let overrides = Overrides { set, env: false };
    let built = lmgeo_dag::spec::parse(path, text, &overrides).and_then(|experiment| {
        let options = lmgeo_dag::graph::BuildOptions {
            max_instances: Some(FUZZ_MAX_INSTANCES),
        };
        lmgeo_dag::graph::build_with(experiment, registry(), &options)
    });
    match built {
        Ok(graph) => {
            let _ = graph.to_dot();
            let _ = graph.to_mermaid();
            let _ = graph.upstreams();
            Ok(())
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an Err without any error");
            let plain = errors.to_string();
            let rendered = lmgeo_cli::render_spec_errors(&errors, false);
            assert!(rendered.contains("nothing was run"));
            Err(plain)
        }
    }
}

/// (a) An experiment file: the bytes are the file (not UTF-8: refused as
/// the CLI's `read_to_string` refuses it).
pub fn spec(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    load_and_build(Path::new("fuzz.toml"), text, Vec::new())
}

/// A valid experiment that the `set` target overrides: model-free nodes,
/// a corpus and an extraction (configured, never run), experiment and node
/// sweeps, so that `--set` reaches every kind of value.
pub const SET_BASE: &str = r#"
name = "fuzz-set"

[grid]
seed = [1, 2]

[nodes.texts]
kind = "corpus"
format = "builtin"
n = 4

[nodes.hidden]
kind = "extract"
inputs = { texts = "texts.texts" }
model = "smollm2-135m"

[nodes.entropy]
kind = "entropy"
inputs = { embeddings = "hidden.embeddings" }

[nodes.data]
kind = "synthetic_matrix"
seed = "${seed}"
grid = { rank = [2, 8] }

[nodes.stats]
kind = "matrix_stats"
inputs = { matrix = "data.embeddings" }

[nodes.overall]
kind = "summarize"
inputs = { values = "stats.metrics[*]" }
"#;

/// (b) `--set` arguments, one per line (at most 16), over [`SET_BASE`].
/// Command-line arguments are UTF-8 by the time clap hands them over.
pub fn set(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let set: Vec<String> = text.split('\n').take(16).map(str::to_string).collect();
    load_and_build(Path::new("fuzz-set.toml"), SET_BASE, set)
}

/// A folder with the files a manifest may name (`probe.py`, `helper.py`),
/// so that `files = [...]` can succeed as well as fail.
fn plugin_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("lmgeo-fuzz-plugin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        for file in ["probe.py", "helper.py"] {
            std::fs::write(dir.join(file), "print()\n").expect("a temporary file");
        }
        dir
    })
}

/// (c) A `plugin.toml`: read and checked; a manifest that reads is then
/// registered as a kind (as the binary does at start-up) and used by a
/// one-node experiment with no parameters, so its declared defaults,
/// choices and ports go through `configure` and graph building.
pub fn manifest(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let path = plugin_dir().join("plugin.toml");
    let manifest = match lmgeo_nodes::plugin::Manifest::parse(&path, text) {
        Ok(manifest) => manifest,
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("plugin.toml"),
                "a manifest error must name the file: {message}"
            );
            return Err(message);
        }
    };
    let kind = manifest.name.clone();
    let mut registry = Registry::new();
    registry.register_dyn(std::sync::Arc::new(lmgeo_nodes::plugin::ManifestKind::new(
        manifest,
    )));
    let experiment = format!("name = \"fuzz-plugin\"\n[nodes.p]\nkind = \"{kind}\"\n");
    let parsed = lmgeo_dag::spec::parse(
        Path::new("uses-plugin.toml"),
        &experiment,
        &Overrides::default(),
    )
    .map_err(|e| e.to_string())?;
    match lmgeo_dag::build(parsed, &registry) {
        Ok(_) => Ok(()),
        Err(errors) => {
            let _ = lmgeo_cli::render_spec_errors(&errors, false);
            Err(errors.to_string())
        }
    }
}
