//! The node contract: what a node kind declares and what it gets when it runs.
//!
//! Built-in probes, model steps and plugins all implement the same traits, so
//! the engine treats them alike: it validates their parameters, keys their
//! results, schedules them and collects their metrics without knowing what
//! they compute.

use std::any::Any;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::value::{self, SValue, Scalar, ValueError};

/// How many upstream values an input port takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly one value, from a mapped reference (`node.output`).
    One,
    /// Zero or one value.
    Optional,
    /// A list, usually from a collecting reference (`node.output[*]`).
    Many,
}

#[derive(Clone, Debug)]
pub struct InputPort {
    pub name: String,
    pub arity: Arity,
    pub doc: String,
}

impl InputPort {
    pub fn one(name: &str, doc: &str) -> Self {
        Self {
            name: name.into(),
            arity: Arity::One,
            doc: doc.into(),
        }
    }
    pub fn optional(name: &str, doc: &str) -> Self {
        Self {
            name: name.into(),
            arity: Arity::Optional,
            doc: doc.into(),
        }
    }
    pub fn many(name: &str, doc: &str) -> Self {
        Self {
            name: name.into(),
            arity: Arity::Many,
            doc: doc.into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct OutputPort {
    pub name: String,
    pub doc: String,
    /// Copied into the run's output folder (per-text tables); heavy
    /// intermediates such as embeddings stay in the store only.
    pub publish: bool,
    /// File extension when published (`parquet` unless said otherwise).
    pub extension: String,
}

impl OutputPort {
    pub fn published(name: &str, doc: &str) -> Self {
        Self {
            name: name.into(),
            doc: doc.into(),
            publish: true,
            extension: "parquet".into(),
        }
    }
    pub fn internal(name: &str, doc: &str) -> Self {
        Self {
            name: name.into(),
            doc: doc.into(),
            publish: false,
            extension: "parquet".into(),
        }
    }
    pub fn with_extension(mut self, extension: &str) -> Self {
        self.extension = extension.into();
        self
    }
}

/// A file outside the store that a node reads; its content is part of the
/// node's cache key.
#[derive(Clone, Debug, PartialEq)]
pub struct ExternalFile {
    pub path: PathBuf,
    /// A digest known without reading the file (e.g. a registry model that is
    /// fetched on first use). When absent the engine hashes the file (or every
    /// file of a folder), with a stat cache.
    pub known_digest: Option<String>,
}

/// What one configured node reads, writes and needs.
#[derive(Clone, Debug, Default)]
pub struct Interface {
    pub inputs: Vec<InputPort>,
    pub outputs: Vec<OutputPort>,
    /// Heavy nodes (model loads) run under a separate concurrency bound.
    pub heavy: bool,
    pub files: Vec<ExternalFile>,
    /// Facts about the environment that change results (library versions,
    /// a digest of a plugin's script); part of the key.
    pub environment: Vec<(String, String)>,
}

/// A parameter problem found by a kind after the values parsed, e.g. a
/// combination of values that cannot work.
#[derive(Clone, Debug)]
pub struct ParamError {
    /// The offending parameter, so the error points at it; `None` for the
    /// node as a whole.
    pub field: Option<String>,
    pub message: String,
}

impl ParamError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
        }
    }
    pub fn node(message: impl Into<String>) -> Self {
        Self {
            field: None,
            message: message.into(),
        }
    }
}

/// Parameters after parsing: canonical JSON for the key and the results, and
/// the kind's own typed value for `run`.
#[derive(Clone)]
pub struct Configured {
    pub params: serde_json::Value,
    pub interface: Interface,
    pub typed: Arc<dyn Any + Send + Sync>,
}

impl fmt::Debug for Configured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Configured")
            .field("params", &self.params)
            .field("interface", &self.interface)
            .finish()
    }
}

/// The object-safe form of a node kind, as the registry holds it. Most kinds
/// implement [`Node`] instead and are registered through [`Typed`].
pub trait NodeKind: Send + Sync {
    fn name(&self) -> &str;
    /// Bumped whenever the kind's results change for the same inputs; part of
    /// every key, so a bump reruns the kind's nodes.
    fn version(&self) -> u32;
    fn summary(&self) -> &str;
    /// Parses the node's parameter table (without `kind`, `inputs`, `grid`,
    /// `zip`), fills defaults and declares the interface.
    fn configure(&self, params: &SValue) -> Result<Configured, ConfigureError>;
    fn run(&self, node: &Configured, ctx: &mut RunContext<'_>) -> Result<(), NodeError>;
}

/// Why a node's parameters were rejected.
#[derive(Clone, Debug)]
pub enum ConfigureError {
    /// A parse error located at a key or value.
    Value(ValueError),
    /// A kind-level check that failed.
    Param(ParamError),
}

/// A node kind with typed parameters: the easy way to write one.
///
/// ```ignore
/// #[derive(serde::Deserialize, serde::Serialize)]
/// #[serde(deny_unknown_fields)]
/// struct Params { #[serde(default = "one")] scale: f64 }
///
/// struct Scale;
/// impl Node for Scale {
///     type Params = Params;
///     const KIND: &'static str = "scale";
///     const VERSION: u32 = 1;
///     const SUMMARY: &'static str = "multiplies a table by a constant";
///     fn interface(&self, _: &Params) -> Result<Interface, ParamError> { ... }
///     fn run(&self, params: &Params, ctx: &mut RunContext) -> Result<(), NodeError> { ... }
/// }
/// registry.register(Scale);
/// ```
pub trait Node: Send + Sync + 'static {
    /// Use `#[serde(deny_unknown_fields)]` so misspelt keys are errors.
    type Params: DeserializeOwned + Serialize + Send + Sync + 'static;
    const KIND: &'static str;
    const VERSION: u32;
    const SUMMARY: &'static str;

    fn interface(&self, params: &Self::Params) -> Result<Interface, ParamError>;
    fn run(&self, params: &Self::Params, ctx: &mut RunContext<'_>) -> Result<(), NodeError>;
}

/// Adapts a [`Node`] to the object-safe [`NodeKind`].
pub struct Typed<N>(pub N);

impl<N: Node> NodeKind for Typed<N> {
    fn name(&self) -> &str {
        N::KIND
    }

    fn version(&self) -> u32 {
        N::VERSION
    }

    fn summary(&self) -> &str {
        N::SUMMARY
    }

    fn configure(&self, params: &SValue) -> Result<Configured, ConfigureError> {
        let typed: N::Params = value::deserialize(params).map_err(ConfigureError::Value)?;
        let interface = self.0.interface(&typed).map_err(ConfigureError::Param)?;
        let canonical = serde_json::to_value(&typed).map_err(|e| {
            ConfigureError::Param(ParamError::node(format!(
                "parameters cannot be recorded as JSON: {e}"
            )))
        })?;
        Ok(Configured {
            params: canonical,
            interface,
            typed: Arc::new(typed),
        })
    }

    fn run(&self, node: &Configured, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let params = node
            .typed
            .downcast_ref::<N::Params>()
            .expect("configured by this kind");
        self.0.run(params, ctx)
    }
}

/// Sweep coordinates of a node instance, in axis order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Coords(pub Vec<(String, Scalar)>);

impl Coords {
    pub fn get(&self, axis: &str) -> Option<&Scalar> {
        self.0.iter().find(|(a, _)| a == axis).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(String, Scalar)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }
}

/// `axis=value` pairs joined by commas, as in instance ids
/// (`model=a,seed=1`); the alternate form (`{:#}`) puts a space after each
/// comma, for prose and titles.
impl fmt::Display for Coords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let separator = if f.alternate() { ", " } else { "," };
        for (i, (axis, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(separator)?;
            }
            write!(f, "{axis}={value}")?;
        }
        Ok(())
    }
}

/// One upstream output handed to a running node, already verified.
#[derive(Clone, Debug)]
pub struct InputArtifact {
    pub node: String,
    pub kind: String,
    pub output: String,
    pub coords: Coords,
    /// The upstream node's canonical parameters.
    pub params: serde_json::Value,
    pub path: PathBuf,
    pub digest: String,
}

/// One tidy result row: a metric, its value, and the extra dimensions it is
/// indexed by (layer, text, k, statistic...). The engine adds the experiment,
/// node, kind, sweep coordinates and parameters.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct MetricRow {
    pub metric: String,
    #[serde(with = "non_finite_as_text")]
    pub value: f64,
    #[serde(default)]
    pub dims: Vec<(String, Scalar)>,
}

impl MetricRow {
    pub fn new(metric: impl Into<String>, value: f64) -> Self {
        Self {
            metric: metric.into(),
            value,
            dims: Vec::new(),
        }
    }

    pub fn dim(mut self, name: impl Into<String>, value: impl Into<Scalar>) -> Self {
        self.dims.push((name.into(), value.into()));
        self
    }

    /// Rows as a node's `metrics` output stores them (JSON).
    pub fn write_all(rows: &[MetricRow]) -> Vec<u8> {
        serde_json::to_vec(rows).expect("metric rows serialize")
    }

    /// Rows from a `metrics` output's bytes.
    pub fn read_all(bytes: &[u8]) -> Result<Vec<MetricRow>, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// JSON has no NaN or infinity (serde_json writes them as `null`, which
/// then does not read back as a number): they are written as the strings
/// `"NaN"`, `"inf"` and `"-inf"`, and `null` reads as NaN.
mod non_finite_as_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            serializer.serialize_f64(*value)
        } else if value.is_nan() {
            serializer.serialize_str("NaN")
        } else if *value > 0.0 {
            serializer.serialize_str("inf")
        } else {
            serializer.serialize_str("-inf")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Number {
            Finite(f64),
            Text(String),
            Null(()),
        }
        match Number::deserialize(deserializer)? {
            Number::Finite(value) => Ok(value),
            Number::Null(()) => Ok(f64::NAN),
            Number::Text(text) => match text.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!(
                    "`{other}` is not a metric value (a number, \"NaN\", \"inf\" or \"-inf\")"
                ))),
            },
        }
    }
}

impl From<&str> for Scalar {
    fn from(s: &str) -> Self {
        Scalar::String(s.to_string())
    }
}
impl From<String> for Scalar {
    fn from(s: String) -> Self {
        Scalar::String(s)
    }
}
impl From<i64> for Scalar {
    fn from(i: i64) -> Self {
        Scalar::Integer(i)
    }
}
impl From<usize> for Scalar {
    fn from(i: usize) -> Self {
        Scalar::Integer(i as i64)
    }
}
impl From<u32> for Scalar {
    fn from(i: u32) -> Self {
        Scalar::Integer(i64::from(i))
    }
}
impl From<f64> for Scalar {
    fn from(x: f64) -> Self {
        Scalar::Float(x)
    }
}
impl From<bool> for Scalar {
    fn from(b: bool) -> Self {
        Scalar::Bool(b)
    }
}

impl Serialize for Scalar {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scalar::String(v) => s.serialize_str(v),
            Scalar::Integer(v) => s.serialize_i64(*v),
            Scalar::Float(v) => s.serialize_f64(*v),
            Scalar::Bool(v) => s.serialize_bool(*v),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Scalar::from_json(&value)
            .ok_or_else(|| serde::de::Error::custom("expected a string, number or boolean"))
    }
}

/// Why a node failed. Any error converts into it, so kinds can use `?`.
pub struct NodeError {
    pub message: String,
}

impl NodeError {
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }

    /// Adds what was being done when the error happened.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Self {
            message: format!("{what}: {}", self.message),
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for NodeError {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = cause.source();
        }
        NodeError::msg(message)
    }
}

impl fmt::Debug for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Progress a node reports while it runs (texts done of total, say).
#[derive(Clone, Debug)]
pub struct Progress {
    pub node: String,
    pub done: u64,
    pub total: Option<u64>,
    pub unit: String,
}

/// Resumable pieces of one node's work (e.g. chunks of an extraction): each
/// piece is committed to the store as soon as it is done, so an interrupted
/// run picks up where it stopped.
pub trait ChunkStore: Send + Sync {
    /// The stored file of piece `chunk` of the node keyed `node_key`, producing
    /// it with `produce` (which writes to the given path) when missing.
    fn chunk(
        &self,
        node_key: &str,
        chunk: &str,
        produce: &mut dyn FnMut(&Path) -> Result<(), NodeError>,
    ) -> Result<PathBuf, NodeError>;
}

/// Everything a running node may touch: its inputs, its output paths, a
/// scratch folder, the metric sink, progress, and resumable chunks. It never
/// sees the store itself.
pub struct RunContext<'a> {
    pub(crate) node_id: &'a str,
    pub(crate) node_key: &'a str,
    pub(crate) coords: &'a Coords,
    pub(crate) inputs: &'a [(String, Vec<InputArtifact>)],
    pub(crate) outputs: &'a [OutputPort],
    pub(crate) staging: &'a Path,
    pub(crate) scratch: &'a Path,
    pub(crate) metrics: Vec<MetricRow>,
    pub(crate) progress: &'a (dyn Fn(Progress) + Sync),
    pub(crate) cancel: &'a AtomicBool,
    pub(crate) chunks: &'a dyn ChunkStore,
}

impl<'a> RunContext<'a> {
    pub fn node_id(&self) -> &str {
        self.node_id
    }

    pub fn coords(&self) -> &Coords {
        self.coords
    }

    /// All values bound to an input port (empty for an absent optional port).
    pub fn input(&self, port: &str) -> &[InputArtifact] {
        self.inputs
            .iter()
            .find(|(name, _)| name == port)
            .map_or(&[], |(_, values)| values.as_slice())
    }

    /// The single value of a port declared [`Arity::One`].
    pub fn single_input(&self, port: &str) -> Result<&InputArtifact, NodeError> {
        match self.input(port) {
            [one] => Ok(one),
            [] => Err(NodeError::msg(format!("input `{port}` is not bound"))),
            many => Err(NodeError::msg(format!(
                "input `{port}` has {} values where one is expected",
                many.len()
            ))),
        }
    }

    /// Where to write a declared output.
    pub fn output_path(&self, output: &str) -> Result<PathBuf, NodeError> {
        if self.outputs.iter().any(|o| o.name == output) {
            Ok(self.staging.join(output))
        } else {
            Err(NodeError::msg(format!(
                "output `{output}` is not declared by this node's kind"
            )))
        }
    }

    /// A folder for temporary files, removed after the node finishes.
    pub fn scratch_dir(&self) -> &Path {
        self.scratch
    }

    pub fn emit(&mut self, row: MetricRow) {
        self.metrics.push(row);
    }

    pub fn emit_all(&mut self, rows: impl IntoIterator<Item = MetricRow>) {
        self.metrics.extend(rows);
    }

    pub fn progress(&self, done: u64, total: Option<u64>, unit: &str) {
        (self.progress)(Progress {
            node: self.node_id.to_string(),
            done,
            total,
            unit: unit.to_string(),
        });
    }

    /// True once the run was asked to stop; long nodes should check it
    /// between pieces of work and return [`NodeError`] promptly.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// A resumable piece of this node's work: the stored file if an earlier
    /// (possibly interrupted) run already produced it, else `produce` writes
    /// it and it is committed at once.
    pub fn chunk(
        &self,
        chunk: &str,
        mut produce: impl FnMut(&Path) -> Result<(), NodeError>,
    ) -> Result<PathBuf, NodeError> {
        self.chunks.chunk(self.node_key, chunk, &mut produce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_rows_read_back_including_non_finite_values() {
        let rows = vec![
            MetricRow::new("slope", -1.25).dim("layer", 3i64),
            MetricRow::new("undefined", f64::NAN),
            MetricRow::new("up", f64::INFINITY),
            MetricRow::new("down", f64::NEG_INFINITY).dim("model", "a"),
        ];
        let read = MetricRow::read_all(&MetricRow::write_all(&rows)).unwrap();
        assert_eq!(read.len(), 4);
        assert_eq!(read[0], rows[0]);
        assert!(read[1].value.is_nan());
        assert_eq!(read[2].value, f64::INFINITY);
        assert_eq!(read[3], rows[3]);
    }

    #[test]
    fn coordinates_read_as_axis_value_pairs() {
        let coords = Coords(vec![
            ("model".into(), Scalar::String("a".into())),
            ("seed".into(), Scalar::Integer(1)),
        ]);
        assert_eq!(coords.to_string(), "model=a,seed=1");
        assert_eq!(format!("{coords:#}"), "model=a, seed=1");
        assert_eq!(Coords(Vec::new()).to_string(), "");
    }

    #[test]
    fn metrics_written_as_null_by_older_versions_read_as_nan() {
        let read = MetricRow::read_all(br#"[{"metric": "m", "value": null}]"#).unwrap();
        assert!(read[0].value.is_nan());
        let error = MetricRow::read_all(br#"[{"metric": "m", "value": "lots"}]"#).unwrap_err();
        assert!(error.to_string().contains("not a metric value"), "{error}");
    }
}
