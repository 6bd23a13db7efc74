//! Out-of-process plugins: node kinds whose work is done by a program in any
//! language, which reads a JSON request and writes Parquet files.
//!
//! Two forms share one protocol (documented in `docs/plugins.md`):
//!
//! - **Manifests.** A folder with a `plugin.toml` (name, version, command,
//!   inputs, outputs with their columns, parameters with types and defaults)
//!   becomes a first-class kind: `kind = "<name>"` in an experiment, its
//!   parameters checked against the declaration with located errors, and
//!   swept like any built-in. [`discover`] finds manifests under `./plugins`
//!   and the folders of `LMGEO_PLUGIN_PATH`.
//! - **The `command` kind.** One node runs a program named in the
//!   experiment itself; its outputs, ports and a free `params` table are
//!   written there too. Handy for a one-off script.
//!
//! Either way the node's key covers the plugin's declared version and the
//! content of its script or executable (and of any `files` it lists), so
//! editing the script reruns its nodes and nothing else. The plugin runs in
//! its own process group with a timeout; its outputs are checked against
//! the declared columns before anything reaches the store, and any failure
//! is an error that names the plugin and quotes the end of its stderr.

mod exec;
mod manifest;
mod schema;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use lmgeo_dag::node::{ConfigureError, Configured};
use lmgeo_dag::value::{SValue, ValueError};
use lmgeo_dag::{
    ExternalFile, InputPort, Interface, Node, NodeError, NodeKind, OutputPort, ParamError,
    Registry, RunContext, Scalar,
};
use lmgeo_tables::Cell;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub use exec::{DEFAULT_TIMEOUT, PROTOCOL};
pub use manifest::{InputSpec, Manifest, OutputSpec};
pub use schema::{ColumnType, ParamSpec, ParamType, ScalarType};

use exec::Call;
use manifest::{check_name, join_clean};

/// The environment variable naming more folders to search for plugins,
/// separated like `PATH`.
pub const PLUGIN_PATH_VAR: &str = "LMGEO_PLUGIN_PATH";

/// The folder searched for plugins, relative to the working directory.
pub const PLUGIN_DIR: &str = "plugins";

/// Why plugins could not be loaded: each names the file or folder to fix.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin manifest {}: {message}", path.display())]
    Manifest { path: PathBuf, message: String },
    #[error("{0}")]
    Search(String),
}

pub(crate) fn cell_of(scalar: &Scalar) -> Cell {
    match scalar {
        Scalar::String(s) => Cell::Str(s.clone()),
        Scalar::Integer(i) => Cell::Int(*i),
        Scalar::Float(x) => Cell::Float(*x),
        Scalar::Bool(b) => Cell::Bool(*b),
    }
}

/// Files a command reads that can be found from the command line itself:
/// the program when it is a path (a script or a compiled plugin), and every
/// argument naming an existing file (`probe.py` in `python3 probe.py`).
fn command_files(command: &[String], base: Option<&Path>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for (i, word) in command.iter().enumerate() {
        if word.is_empty() || word.starts_with('-') {
            continue;
        }
        // A bare program name is looked up on PATH: an interpreter or a
        // system tool, not part of the plugin.
        if i == 0 && !word.contains('/') {
            continue;
        }
        let path = match base {
            Some(dir) => join_clean(dir, word),
            None => PathBuf::from(word),
        };
        if path.is_file() && !files.contains(&path) {
            files.push(path);
        }
    }
    files
}

fn resolve_program(program: &str, base: Option<&Path>) -> PathBuf {
    match base {
        Some(dir) if program.contains('/') => join_clean(dir, program),
        _ => PathBuf::from(program),
    }
}

fn external(files: Vec<PathBuf>) -> Vec<ExternalFile> {
    files
        .into_iter()
        .map(|path| ExternalFile {
            path,
            known_digest: None,
        })
        .collect()
}

fn output_ports(outputs: &[OutputSpec]) -> Vec<OutputPort> {
    outputs
        .iter()
        .map(|o| {
            let doc = if o.doc.is_empty() {
                "a table written by the plugin"
            } else {
                o.doc.as_str()
            };
            if o.publish {
                OutputPort::published(&o.name, doc)
            } else {
                OutputPort::internal(&o.name, doc)
            }
        })
        .collect()
}

/// `per_text(text_id: string, score: float); extra()`: the declared outputs
/// in one line, for the key and for `explain`.
fn describe_outputs(outputs: &[OutputSpec]) -> String {
    outputs
        .iter()
        .map(|o| {
            let columns: Vec<String> = o
                .columns
                .iter()
                .map(|(name, ty)| format!("{name}: {ty}"))
                .collect();
            format!("{}({})", o.name, columns.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A kind declared by a `plugin.toml`.
pub struct ManifestKind {
    manifest: Arc<Manifest>,
    summary: String,
    label: String,
}

impl ManifestKind {
    /// The kind a checked manifest declares; register it with
    /// [`Registry::register_dyn`] (what [`discover`] does).
    pub fn new(manifest: Manifest) -> Self {
        let summary = format!(
            "{}{}[plugin {}, {}]",
            manifest.summary,
            if manifest.summary.is_empty() { "" } else { " " },
            manifest.version,
            manifest.path.display()
        );
        let label = format!("plugin `{}` ({})", manifest.name, manifest.path.display());
        Self {
            manifest: Arc::new(manifest),
            summary,
            label,
        }
    }

    /// The manifest this kind was made from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn unknown_parameter(&self, key: &str, origin: &lmgeo_dag::value::Origin) -> ConfigureError {
        let names: Vec<&str> = self
            .manifest
            .params
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let help = if names.is_empty() {
            format!("plugin `{}` declares no parameters", self.manifest.name)
        } else {
            lmgeo_dag::error::valid_list_help(key, "parameters", names.iter().copied())
        };
        ConfigureError::Value(ValueError {
            message: format!("unknown parameter `{key}`; {help}"),
            origin: Some(origin.clone()),
        })
    }
}

impl NodeKind for ManifestKind {
    fn name(&self) -> &str {
        &self.manifest.name
    }

    fn version(&self) -> u32 {
        PROTOCOL
    }

    fn summary(&self) -> &str {
        &self.summary
    }

    fn configure(&self, params: &SValue) -> Result<Configured, ConfigureError> {
        let m = &self.manifest;
        let Some(table) = params.as_table() else {
            return Err(ConfigureError::Param(ParamError::node(
                "parameters must be a table",
            )));
        };
        let mut values: BTreeMap<String, Value> = BTreeMap::new();
        for (key, entry) in table.iter() {
            let Some(spec) = m.params.iter().find(|p| &p.name == key) else {
                return Err(self.unknown_parameter(key, &entry.key_origin));
            };
            let value = spec
                .check_located(&entry.value)
                .map_err(ConfigureError::Value)?;
            values.insert(key.clone(), value);
        }
        for spec in &m.params {
            if values.contains_key(&spec.name) {
                continue;
            }
            match &spec.default {
                Some(default) => {
                    values.insert(spec.name.clone(), default.clone());
                }
                None => {
                    let doc = if spec.doc.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", spec.doc)
                    };
                    return Err(ConfigureError::Param(ParamError::node(format!(
                        "missing parameter `{}` ({}){doc}",
                        spec.name, spec.ty
                    ))));
                }
            }
        }
        let canonical = Value::Object(values.into_iter().collect());
        let files = match &m.files {
            Some(files) => files.clone(),
            None => command_files(&m.command, Some(&m.dir)),
        };
        let interface = Interface {
            inputs: m
                .inputs
                .iter()
                .map(|i| InputPort {
                    name: i.name.clone(),
                    arity: i.arity,
                    doc: i.doc.clone(),
                })
                .collect(),
            outputs: output_ports(&m.outputs),
            heavy: false,
            files: external(files),
            environment: vec![
                ("plugin_version".into(), m.version.clone()),
                ("plugin_command".into(), m.command.join(" ")),
                // A changed promise about the outputs must be checked
                // again, not answered from results made under the old one.
                ("plugin_outputs".into(), describe_outputs(&m.outputs)),
            ],
        };
        let call = Call {
            label: self.label.clone(),
            name: m.name.clone(),
            version: m.version.clone(),
            program: resolve_program(&m.command[0], Some(&m.dir)),
            args: m.command[1..].to_vec(),
            cwd: Some(m.dir.clone()),
            timeout: m.timeout,
            ports: m.inputs.iter().map(|i| i.name.clone()).collect(),
            outputs: m.outputs.clone(),
            params: canonical.clone(),
        };
        Ok(Configured {
            params: canonical,
            interface,
            typed: Arc::new(call),
        })
    }

    fn run(&self, node: &Configured, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let call = node
            .typed
            .downcast_ref::<Call>()
            .ok_or_else(|| NodeError::msg("a plugin node was configured by another kind"))?;
        exec::run(call, ctx)
    }
}

/// How many values a `command` node's input port takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortArity {
    One,
    Optional,
    Many,
}

fn yes() -> bool {
    true
}

/// An output table of a `command` node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandOutput {
    /// Columns the table must have, with their types.
    #[serde(default)]
    pub columns: IndexMap<String, ColumnType>,
    /// Copy it to the run's `nodes/` folder.
    #[serde(default = "yes")]
    pub publish: bool,
    #[serde(default)]
    pub doc: String,
}

fn default_version() -> String {
    "0".into()
}

/// A version written as a string or an integer.
fn version_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        Text(String),
        Integer(i64),
    }
    Ok(match V::deserialize(d)? {
        V::Text(s) => s,
        V::Integer(i) => i.to_string(),
    })
}

/// Parameters of the `command` kind.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    /// Program and arguments, relative to the working directory.
    pub command: Vec<String>,
    /// Bump it when results change for reasons the files do not show.
    #[serde(default = "default_version", deserialize_with = "version_text")]
    pub version: String,
    /// Input ports and how many values each takes (`one`, `optional`,
    /// `many`); bind them with `inputs` as for any node.
    #[serde(default)]
    pub ports: IndexMap<String, PortArity>,
    /// Output tables the program writes, with their required columns.
    #[serde(default)]
    pub outputs: IndexMap<String, CommandOutput>,
    /// Files whose content is part of the key (default: the program when it
    /// is a path, and every argument naming a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// Seconds before the program is killed; not part of the key.
    #[serde(default, skip_serializing)]
    pub timeout: Option<f64>,
    /// Passed to the program as the request's `params`.
    #[serde(default)]
    pub params: serde_json::Map<String, Value>,
}

/// Runs a program named in the experiment under the plugin protocol.
pub struct CommandKind;

impl CommandKind {
    fn call(&self, p: &CommandParams) -> Call {
        Call {
            label: format!("plugin command `{}`", p.command.join(" ")),
            name: "command".into(),
            version: p.version.clone(),
            program: resolve_program(&p.command[0], None),
            args: p.command[1..].to_vec(),
            cwd: None,
            timeout: p.timeout.map(Duration::from_secs_f64),
            ports: p.ports.keys().cloned().collect(),
            outputs: p
                .outputs
                .iter()
                .map(|(name, o)| OutputSpec {
                    name: name.clone(),
                    doc: o.doc.clone(),
                    publish: o.publish,
                    columns: o.columns.iter().map(|(c, t)| (c.clone(), *t)).collect(),
                })
                .collect(),
            params: Value::Object(p.params.clone()),
        }
    }
}

impl Node for CommandKind {
    type Params = CommandParams;
    const KIND: &'static str = "command";
    const VERSION: u32 = PROTOCOL;
    const SUMMARY: &'static str =
        "runs a program in any language: JSON request in, Parquet tables and metrics out";

    fn interface(&self, p: &CommandParams) -> Result<Interface, ParamError> {
        if p.command.first().is_none_or(|c| c.is_empty()) {
            return Err(ParamError::field(
                "command",
                "must name a program, e.g. command = [\"python3\", \"probe.py\"]",
            ));
        }
        if let Some(t) = p.timeout
            && !(t > 0.0 && t.is_finite() && t < 1e9)
        {
            return Err(ParamError::field(
                "timeout",
                "must be a positive number of seconds",
            ));
        }
        for name in p.ports.keys() {
            check_name("port", name).map_err(|e| ParamError::field("ports", e))?;
        }
        for (name, o) in &p.outputs {
            check_name("output", name).map_err(|e| ParamError::field("outputs", e))?;
            if name == lmgeo_dag::graph::METRICS_OUTPUT {
                return Err(ParamError::field(
                    "outputs",
                    "declares `metrics`, which every node already has; write metrics.parquet or metrics.json instead",
                ));
            }
            if o.columns.keys().any(String::is_empty) {
                return Err(ParamError::field(
                    "outputs",
                    format!("`{name}` declares a column with an empty name"),
                ));
            }
        }
        let files = match &p.files {
            Some(files) => files.iter().map(PathBuf::from).collect(),
            None => command_files(&p.command, None),
        };
        let call = self.call(p);
        Ok(Interface {
            inputs: p
                .ports
                .iter()
                .map(|(name, arity)| match arity {
                    PortArity::One => InputPort::one(name, "an input of the command"),
                    PortArity::Optional => InputPort::optional(name, "an input of the command"),
                    PortArity::Many => InputPort::many(name, "inputs of the command"),
                })
                .collect(),
            outputs: output_ports(&call.outputs),
            heavy: false,
            files: external(files),
            environment: Vec::new(),
        })
    }

    fn run(&self, p: &CommandParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        exec::run(&self.call(p), ctx)
    }
}

/// The folders searched for plugins: `./plugins` (when it exists) and each
/// folder of `LMGEO_PLUGIN_PATH` (which must exist).
fn search_folders() -> Vec<(PathBuf, bool)> {
    let mut folders = vec![(PathBuf::from(PLUGIN_DIR), false)];
    if let Some(list) = std::env::var_os(PLUGIN_PATH_VAR) {
        for folder in std::env::split_paths(&list) {
            if !folder.as_os_str().is_empty() {
                folders.push((folder, true));
            }
        }
    }
    folders
}

/// The manifests of one search folder: the folder itself when it holds a
/// `plugin.toml`, else every direct subfolder that does (others, such as a
/// virtual environment, are skipped), in name order.
pub fn manifests_in(folder: &Path) -> Result<Vec<PathBuf>, PluginError> {
    let own = folder.join("plugin.toml");
    if own.is_file() {
        return Ok(vec![own]);
    }
    let entries = std::fs::read_dir(folder)
        .map_err(|e| PluginError::Search(format!("cannot list {}: {e}", folder.display())))?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path().join("plugin.toml"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    Ok(found)
}

/// Finds plugin manifests in `./plugins` and `LMGEO_PLUGIN_PATH` and
/// registers each as a kind. Fails on the first manifest that does not
/// read, or whose name is already a kind or another manifest's, naming the
/// file; returns the manifests registered.
pub fn discover(registry: &mut Registry) -> Result<Vec<PathBuf>, PluginError> {
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    let mut registered = Vec::new();
    for (folder, required) in search_folders() {
        if !folder.is_dir() {
            if required {
                return Err(PluginError::Search(format!(
                    "{PLUGIN_PATH_VAR} names {}, which is not a folder",
                    folder.display()
                )));
            }
            continue;
        }
        for path in manifests_in(&folder)? {
            // The same plugin reached twice (./plugins also on the path) is
            // one plugin, not a clash.
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if !seen.insert(canonical) {
                continue;
            }
            let manifest = Manifest::load(&path)?;
            if let Some(other) = names.get(&manifest.name) {
                return Err(PluginError::Manifest {
                    path: path.clone(),
                    message: format!(
                        "plugin `{}` is also declared by {}; rename one",
                        manifest.name,
                        other.display()
                    ),
                });
            }
            if registry.get(&manifest.name).is_some() {
                return Err(PluginError::Manifest {
                    path: path.clone(),
                    message: format!(
                        "plugin `{}` has the name of a kind this binary already has; rename the plugin",
                        manifest.name
                    ),
                });
            }
            names.insert(manifest.name.clone(), path.clone());
            registry.register_dyn(Arc::new(ManifestKind::new(manifest)));
            registered.push(path);
        }
    }
    Ok(registered)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters as an experiment would hand them over, with locations.
    fn params(text: &str) -> SValue {
        let doc = toml::de::DeTable::parse(text).unwrap();
        SValue::from_toml_document(doc.get_ref(), doc.span()).unwrap()
    }

    fn kind() -> (tempfile::TempDir, ManifestKind) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("probe.py"), "").unwrap();
        let path = dir.path().join("plugin.toml");
        std::fs::write(
            &path,
            r#"
name = "p"
version = "2"
command = ["python3", "probe.py"]
[inputs.embeddings]
[outputs.per_text]
columns = { text_id = "string" }
[params.k]
type = "int"
doc = "how many"
[params.layers]
type = "int[]"
default = []
[params.scale]
type = "float"
default = 1
"#,
        )
        .unwrap();
        let manifest = Manifest::load(&path).unwrap();
        (dir, ManifestKind::new(manifest))
    }

    #[test]
    fn manifest_kinds_fill_defaults_and_key_the_script() {
        let (dir, kind) = kind();
        let configured = kind.configure(&params("k = 3\n")).unwrap();
        assert_eq!(
            configured.params,
            serde_json::json!({ "k": 3, "layers": [], "scale": 1.0 })
        );
        let files: Vec<&Path> = configured
            .interface
            .files
            .iter()
            .map(|f| f.path.as_path())
            .collect();
        assert_eq!(files, [dir.path().join("probe.py")]);
        assert!(
            configured
                .interface
                .environment
                .contains(&("plugin_version".to_string(), "2".to_string()))
        );
        assert_eq!(configured.interface.inputs[0].name, "embeddings");
        assert!(configured.interface.outputs[0].publish);
    }

    #[test]
    fn manifest_parameter_errors_point_at_the_value() {
        let (_dir, kind) = kind();
        let text = "k = 3\nlayers = [1, \"two\"]\n";
        let Err(ConfigureError::Value(e)) = kind.configure(&params(text)) else {
            panic!("expected a located error");
        };
        assert_eq!(
            e.message,
            "`layers` element 2 must be an integer, found a string"
        );
        assert_eq!(&text[e.origin.unwrap().span().unwrap()], "\"two\"");

        let text = "k = 3\nskale = 2\n";
        let Err(ConfigureError::Value(e)) = kind.configure(&params(text)) else {
            panic!("expected a located error");
        };
        assert!(
            e.message
                .starts_with("unknown parameter `skale`; did you mean `scale`?"),
            "{}",
            e.message
        );
        assert_eq!(&text[e.origin.unwrap().span().unwrap()], "skale");

        let Err(ConfigureError::Param(e)) = kind.configure(&params("scale = 2\n")) else {
            panic!("expected a missing-parameter error");
        };
        assert_eq!(e.message, "missing parameter `k` (int): how many");
    }

    #[test]
    fn command_nodes_reject_a_metrics_output_and_keep_timeouts_out_of_the_key() {
        let parsed: CommandParams = lmgeo_dag::value::deserialize(&params(
            "command = [\"sh\", \"x.sh\"]\ntimeout = 5\noutputs.metrics = {}\n",
        ))
        .unwrap();
        let e = CommandKind.interface(&parsed).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("outputs"));
        assert!(e.message.contains("declares `metrics`"), "{}", e.message);

        let parsed: CommandParams = lmgeo_dag::value::deserialize(&params(
            "command = [\"sh\", \"x.sh\"]\ntimeout = 5\nversion = 3\n",
        ))
        .unwrap();
        assert_eq!(parsed.version, "3");
        let canonical = serde_json::to_value(&parsed).unwrap();
        assert!(canonical.get("timeout").is_none(), "{canonical}");
    }

    #[test]
    fn command_files_are_the_scripts_not_the_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("probe.py"), "").unwrap();
        std::fs::write(dir.path().join("run.sh"), "").unwrap();
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_files(
                &words(&["python3", "-u", "probe.py", "x"]),
                Some(dir.path())
            ),
            [dir.path().join("probe.py")]
        );
        assert_eq!(
            command_files(&words(&["./run.sh"]), Some(dir.path())),
            [dir.path().join("run.sh")]
        );
        // A bare name is a PATH lookup even when a file of that name is here.
        assert!(command_files(&words(&["run.sh"]), Some(dir.path())).is_empty());
    }
}
