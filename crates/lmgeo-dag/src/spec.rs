//! Experiment files: parsing, command-line and environment overrides, and
//! the structural checks that need no knowledge of node kinds.
//!
//! ```toml
//! name = "demo"
//!
//! [grid]                    # experiment-wide axes, used as "${seed}"
//! seed = [1, 2, 3]
//!
//! [defaults.matrix_stats]   # default parameters for every node of a kind
//! center = true
//!
//! [nodes.data]
//! kind = "synthetic_matrix"
//! seed = "${seed}"
//! grid = { rank = [2, 8] }  # a node's own axes (cartesian product)
//!
//! [nodes.stats]
//! kind = "matrix_stats"
//! inputs = { matrix = "data.matrix" }          # one stats node per data node
//!
//! [nodes.summary]
//! kind = "summarize"
//! inputs = { values = "stats.metrics[rank]" }  # collect over `rank`
//! ```

use std::path::Path;
use std::sync::Arc;

use figment::Figment;
use figment::providers::Env;
use figment::value::{Dict, Value as FigValue};
use indexmap::IndexMap;
use toml::de::DeTable;

use crate::error::{SourceFile, SpecError, SpecErrors, valid_list_help};
use crate::execution::{DEFAULT_RESOURCES, ExecutorSettings, ResourceTables, Resources};
use crate::value::{Origin, SKind, STable, SValue, Scalar};

/// Keys allowed at the top of an experiment file.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "name",
    "description",
    "grid",
    "zip",
    "defaults",
    "nodes",
    "executor",
    "resources",
    "report",
    "max_instances",
];

/// Keys of a node table that are not parameters of its kind.
pub const NODE_RESERVED_KEYS: &[&str] = &["kind", "inputs", "grid", "zip", "description"];

/// A parsed experiment, before node kinds have checked their parameters.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub file: Arc<SourceFile>,
    pub name: String,
    pub description: Option<String>,
    /// Experiment-wide axes, referenced from parameters as `"${axis}"`.
    pub axes: Vec<AxisGroup>,
    /// Default parameters per kind.
    pub defaults: IndexMap<String, (Origin, SValue)>,
    pub nodes: IndexMap<String, NodeDecl>,
    /// `[executor]`: where misses run (never part of a key).
    pub executor: ExecutorSettings,
    /// `[resources.<default|kind|node>]`: what each node's task asks for.
    pub resources: ResourceTables,
    /// `[report]`: how the report introduces itself (never part of a key).
    pub report: ReportSettings,
    /// `max_instances = N`: how many node instances the sweeps may expand
    /// to (default [`crate::graph::DEFAULT_MAX_INSTANCES`]).
    pub max_instances: Option<u64>,
}

/// The `[report]` table of an experiment file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSettings {
    /// The report's opening paragraph: what the experiment asks and where
    /// its claims come from (a paper, a hypothesis). Without it the report
    /// says only how it was generated.
    pub intro: Option<String>,
}

/// Axes that vary together: one axis of a `grid`, or all axes of a `zip`.
/// The experiment's cells are the cartesian product of its groups' rows.
#[derive(Debug, Clone)]
pub struct AxisGroup {
    pub axes: Vec<(String, Origin)>,
    pub rows: Vec<Vec<(Scalar, Origin)>>,
}

#[derive(Debug, Clone)]
pub struct NodeDecl {
    pub name: String,
    pub origin: Origin,
    pub kind: String,
    pub kind_origin: Origin,
    pub description: Option<String>,
    pub inputs: Vec<InputDecl>,
    /// The node's own axes; each sets the parameter of the same name.
    pub axes: Vec<AxisGroup>,
    /// The parameter table (reserved keys removed), still unvalidated.
    pub params: SValue,
}

#[derive(Debug, Clone)]
pub struct InputDecl {
    pub port: String,
    pub port_origin: Origin,
    pub refs: Vec<Reference>,
}

/// `node.output`, `node.output[*]` or `node.output[axis, ...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub node: String,
    /// `None` when the reference names only the node: allowed when that
    /// node's kind has exactly one output.
    pub output: Option<String>,
    pub collect: Collect,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Collect {
    /// One upstream instance per downstream instance.
    No,
    /// Every upstream instance.
    All,
    /// Gather over these axes; match on the others.
    Over(Vec<String>),
}

/// How the command line and environment change an experiment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `node.param=value` (or `grid.axis=[...]`): values parse as TOML, and
    /// fall back to a plain string.
    pub set: Vec<String>,
    /// Read `LMGEO_<NODE>__<PARAM>=value` variables.
    pub env: bool,
}

/// Reads, overrides and structurally checks an experiment file.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Experiment, SpecErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let file = Arc::new(SourceFile {
            path: path.to_path_buf(),
            text: "".into(),
        });
        SpecError::new(
            &file,
            &Origin::Generated("reading the file".into()),
            format!("cannot read the experiment file: {e}"),
        )
    })?;
    parse(path, &text, overrides)
}

/// Like [`load`], from text already in memory.
pub fn parse(path: &Path, text: &str, overrides: &Overrides) -> Result<Experiment, SpecErrors> {
    let file = Arc::new(SourceFile {
        path: path.to_path_buf(),
        text: text.into(),
    });
    let document = DeTable::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        SpecError::new(&file, &Origin::File(span), "invalid TOML")
            .with_help(e.message().trim().to_string())
    })?;
    let mut root = SValue::from_toml_document(document.get_ref(), document.span())
        .map_err(|(message, span)| SpecError::new(&file, &Origin::File(span), message))?;
    apply_overrides(&file, &mut root, overrides)?;
    Parser {
        file: file.clone(),
        errors: Vec::new(),
    }
    .experiment(&root)
}

fn override_path(path: &str) -> String {
    let first = path.split('.').next().unwrap_or_default();
    if TOP_LEVEL_KEYS.contains(&first) {
        path.to_string()
    } else {
        format!("nodes.{path}")
    }
}

/// A `--set` argument as a figment provider, so command-line values layer
/// over environment values with figment's merge rules and keep their origin.
struct SetArgument {
    text: String,
    path: String,
    value: FigValue,
}

impl figment::Provider for SetArgument {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(format!("--set {}", self.text))
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, Dict>, figment::Error> {
        let mut value = self.value.clone();
        for segment in self.path.rsplit('.') {
            let mut dict = Dict::new();
            dict.insert(segment.to_string(), value);
            value = FigValue::from(dict);
        }
        let dict = value.into_dict().expect("built as a dict");
        Ok(figment::Profile::Default.collect(dict))
    }
}

fn parse_set_argument(file: &Arc<SourceFile>, text: &str) -> Result<SetArgument, SpecError> {
    let origin = Origin::CommandLine(format!("--set {text}"));
    let Some((path, raw)) = text.split_once('=') else {
        return Err(SpecError::new(file, &origin, "expected `node.param=value`")
            .with_help("e.g. --set entropy.eps=0.05 or --set grid.model='[\"a\", \"b\"]'"));
    };
    let path = path.trim();
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(SpecError::new(
            file,
            &origin,
            format!("`{path}` is not a key path"),
        ));
    }
    let parsed = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    let value = match parsed {
        Some(v) => FigValue::serialize(&v).expect("TOML values serialize"),
        None => FigValue::from(raw.to_string()),
    };
    Ok(SetArgument {
        text: text.to_string(),
        path: override_path(path),
        value,
    })
}

fn apply_overrides(
    file: &Arc<SourceFile>,
    root: &mut SValue,
    overrides: &Overrides,
) -> Result<(), SpecErrors> {
    if overrides.set.is_empty() && !overrides.env {
        return Ok(());
    }
    let mut figment = Figment::new();
    if overrides.env {
        // Only `__`-separated names are overrides; plain LMGEO_* variables
        // (LMGEO_MODELS_DIR, ...) configure lmgeo itself.
        figment = figment.merge(
            Env::prefixed("LMGEO_")
                .filter(|key| key.as_str().contains("__"))
                .split("__")
                .map(|key| override_path(key.as_str()).into()),
        );
    }
    let mut errors = Vec::new();
    for text in &overrides.set {
        match parse_set_argument(file, text) {
            Ok(provider) => figment = figment.merge(provider),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(SpecErrors(errors));
    }
    let merged: Dict = figment.extract().map_err(|e| {
        SpecError::new(
            file,
            &Origin::Generated("overrides".into()),
            format!("cannot read overrides: {e}"),
        )
    })?;
    let mut leaves = Vec::new();
    collect_leaves(&merged, &mut Vec::new(), &mut leaves);
    for (path, value) in leaves {
        let joined = path.join(".");
        let metadata = figment.find_metadata(&joined);
        let origin = match metadata {
            Some(m) if m.name.starts_with("--set") => Origin::CommandLine(m.name.to_string()),
            _ => Origin::Env(format!(
                "LMGEO_{}",
                path.iter()
                    .skip(usize::from(path.first().is_some_and(|p| p == "nodes")))
                    .map(|p| p.to_ascii_uppercase())
                    .collect::<Vec<_>>()
                    .join("__")
            )),
        };
        let converted = from_figment(&value, &origin);
        set_path(file, root, &path, converted, &origin)?;
    }
    Ok(())
}

fn collect_leaves(dict: &Dict, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, FigValue)>) {
    for (key, value) in dict {
        prefix.push(key.clone());
        match value {
            FigValue::Dict(_, inner) => collect_leaves(inner, prefix, out),
            other => out.push((prefix.clone(), other.clone())),
        }
        prefix.pop();
    }
}

fn from_figment(value: &FigValue, origin: &Origin) -> SValue {
    let kind = match value {
        FigValue::String(_, s) => SKind::String(s.clone()),
        FigValue::Char(_, c) => SKind::String(c.to_string()),
        FigValue::Bool(_, b) => SKind::Bool(*b),
        FigValue::Num(_, n) => match n.to_i128() {
            Some(i)
                if i64::try_from(i).is_ok()
                    && !matches!(n, figment::value::Num::F32(_) | figment::value::Num::F64(_)) =>
            {
                SKind::Integer(i as i64)
            }
            _ => SKind::Float(n.to_f64().unwrap_or(f64::NAN)),
        },
        FigValue::Empty(_, _) => SKind::String(String::new()),
        FigValue::Dict(_, dict) => {
            let mut table = STable::default();
            for (k, v) in dict {
                table.insert(k.clone(), origin.clone(), from_figment(v, origin));
            }
            SKind::Table(table)
        }
        FigValue::Array(_, items) => {
            SKind::Array(items.iter().map(|v| from_figment(v, origin)).collect())
        }
    };
    SValue::new(kind, origin.clone())
}

fn set_path(
    file: &Arc<SourceFile>,
    root: &mut SValue,
    path: &[String],
    value: SValue,
    origin: &Origin,
) -> Result<(), SpecError> {
    if path.len() >= 2 && path[0] == "nodes" {
        let nodes = root
            .as_table()
            .and_then(|t| t.get("nodes"))
            .and_then(SValue::as_table);
        let exists = nodes.is_some_and(|n| n.get(&path[1]).is_some());
        if !exists {
            let names: Vec<&str> = nodes.map(|n| n.keys().collect()).unwrap_or_default();
            return Err(SpecError::new(
                file,
                origin,
                format!("there is no node `{}` to override", path[1]),
            )
            .with_help(valid_list_help(&path[1], "nodes", names.iter().copied())));
        }
    }
    let mut current = root;
    for (depth, segment) in path.iter().enumerate() {
        let is_last = depth + 1 == path.len();
        let type_name = current.type_name();
        let Some(table) = current.as_table_mut() else {
            return Err(SpecError::new(
                file,
                origin,
                format!(
                    "cannot set `{}`: `{}` is {type_name}, not a table",
                    path.join("."),
                    path[..depth].join(".")
                ),
            ));
        };
        if is_last {
            table.insert(segment.clone(), origin.clone(), value);
            return Ok(());
        }
        if table.get(segment).is_none() {
            table.insert(
                segment.clone(),
                origin.clone(),
                SValue::new(SKind::Table(STable::default()), origin.clone()),
            );
        }
        current = &mut table
            .entries
            .get_mut(segment)
            .expect("inserted above")
            .value;
    }
    Ok(())
}

struct Parser {
    file: Arc<SourceFile>,
    errors: Vec<SpecError>,
}

impl Parser {
    fn error(&mut self, origin: &Origin, message: impl Into<String>) -> &mut SpecError {
        self.errors
            .push(SpecError::new(&self.file, origin, message));
        self.errors.last_mut().expect("just pushed")
    }

    fn experiment(mut self, root: &SValue) -> Result<Experiment, SpecErrors> {
        let table = root.as_table().expect("a document is a table");
        for (key, entry) in table.iter() {
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                let help = valid_list_help(key, "top-level keys", TOP_LEVEL_KEYS.iter().copied());
                self.error(&entry.key_origin, format!("unknown top-level key `{key}`"))
                    .help = Some(help);
            }
        }
        let name = match table.get("name") {
            Some(v) => match v.as_str() {
                Some(s) if is_identifier(s) => s.to_string(),
                Some(s) => {
                    self.error(
                        &v.origin,
                        format!("experiment name `{s}` is not a plain name"),
                    )
                    .help = Some(
                        "use letters, digits, `_` and `-` (it names the results folder)".into(),
                    );
                    String::new()
                }
                None => {
                    self.error(
                        &v.origin,
                        format!("`name` must be a string, found {}", v.type_name()),
                    );
                    String::new()
                }
            },
            None => {
                self.error(&root.origin_start(), "missing `name`").help =
                    Some("add `name = \"my-experiment\"` at the top of the file".into());
                String::new()
            }
        };
        let description = self.optional_string(table, "description");
        let mut axes = Vec::new();
        if let Some(grid) = table.get("grid") {
            axes.extend(self.grid(grid, "grid"));
        }
        if let Some(zip) = table.get("zip") {
            axes.extend(self.zip(zip, "zip"));
        }
        let mut defaults = IndexMap::new();
        if let Some(value) = table.get("defaults") {
            match value.as_table() {
                Some(kinds) => {
                    for (kind, entry) in kinds.iter() {
                        if entry.value.as_table().is_none() {
                            self.error(
                                &entry.value.origin,
                                format!("`defaults.{kind}` must be a table of parameters"),
                            );
                            continue;
                        }
                        defaults.insert(
                            kind.clone(),
                            (entry.key_origin.clone(), entry.value.clone()),
                        );
                    }
                }
                None => {
                    self.error(
                        &value.origin,
                        "`defaults` must be a table keyed by node kind",
                    )
                    .help = Some("e.g. [defaults.entropy] eps = 0.1".into());
                }
            }
        }
        let mut nodes = IndexMap::new();
        match table.entry("nodes") {
            Some(entry) => match entry.value.as_table() {
                Some(decls) if !decls.is_empty() => {
                    for (name, entry) in decls.iter() {
                        if let Some(node) = self.node(name, entry) {
                            nodes.insert(name.clone(), node);
                        }
                    }
                }
                Some(_) => {
                    self.error(&entry.key_origin, "the experiment has no nodes");
                }
                None => {
                    self.error(
                        &entry.value.origin,
                        "`nodes` must be a table of node tables",
                    );
                }
            },
            None => {
                self.error(&root.origin_start(), "missing `[nodes.<name>]` tables")
                    .help = Some(
                    "add at least one node, e.g. [nodes.data] kind = \"synthetic_matrix\"".into(),
                );
            }
        }
        let executor = match table.get("executor") {
            Some(value) => self.typed::<ExecutorSettings>(value, "executor"),
            None => None,
        }
        .unwrap_or_default();
        if let Some(value) = table.get("executor")
            && let Err(message) = executor.check()
        {
            self.error(&value.origin, format!("in `[executor]`: {message}"));
        }
        let resources = self.resources(table, &nodes);
        let report = match table.get("report") {
            Some(value) => self.typed::<ReportSettings>(value, "report"),
            None => None,
        }
        .unwrap_or_default();
        let max_instances = table
            .get("max_instances")
            .and_then(|value| match value.kind {
                SKind::Integer(n) if n > 0 => Some(n as u64),
                ref other => {
                    let found = match other {
                        SKind::Integer(n) => n.to_string(),
                        _ => value.type_name().to_string(),
                    };
                    self.error(
                        &value.origin,
                        format!("`max_instances` must be a positive integer, found {found}"),
                    )
                    .help = Some(format!(
                        "e.g. max_instances = 2000000 (the default is {})",
                        crate::graph::DEFAULT_MAX_INSTANCES
                    ));
                    None
                }
            });
        if self.errors.is_empty() {
            Ok(Experiment {
                file: self.file,
                name,
                description,
                axes,
                defaults,
                nodes,
                executor,
                resources,
                report,
                max_instances,
            })
        } else {
            Err(SpecErrors(self.errors))
        }
    }

    /// A table read into a typed struct, its errors located in the file.
    fn typed<T: serde::de::DeserializeOwned>(&mut self, value: &SValue, what: &str) -> Option<T> {
        match crate::value::deserialize::<T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let origin = e.origin.clone().unwrap_or_else(|| value.origin.clone());
                self.error(&origin, format!("in `[{what}]`: {}", e.message));
                None
            }
        }
    }

    fn resources(&mut self, table: &STable, nodes: &IndexMap<String, NodeDecl>) -> ResourceTables {
        let mut tables = IndexMap::new();
        let Some(value) = table.get("resources") else {
            return ResourceTables(tables);
        };
        let Some(entries) = value.as_table() else {
            self.error(
                &value.origin,
                "`resources` must be a table keyed by node kind or node name",
            )
            .help = Some("e.g. [resources.extract] gpus = 1".into());
            return ResourceTables(tables);
        };
        let mut known: Vec<&str> = vec![DEFAULT_RESOURCES];
        known.extend(nodes.keys().map(String::as_str));
        known.extend(nodes.values().map(|n| n.kind.as_str()));
        for (key, entry) in entries.iter() {
            if !known.contains(&key.as_str()) {
                let help = valid_list_help(key, "node names and kinds", known.iter().copied());
                self.error(
                    &entry.key_origin,
                    format!("`resources.{key}` names no node and no kind of this experiment"),
                )
                .help = Some(help);
                continue;
            }
            if let Some(r) = self.typed::<Resources>(&entry.value, &format!("resources.{key}")) {
                tables.insert(key.clone(), r);
            }
        }
        ResourceTables(tables)
    }

    fn optional_string(&mut self, table: &STable, key: &str) -> Option<String> {
        let value = table.get(key)?;
        match value.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.error(
                    &value.origin,
                    format!("`{key}` must be a string, found {}", value.type_name()),
                );
                None
            }
        }
    }

    fn axis_values(
        &mut self,
        name: &str,
        value: &SValue,
        what: &str,
    ) -> Option<Vec<(Scalar, Origin)>> {
        let Some(items) = value.as_array() else {
            self.error(
                &value.origin,
                format!(
                    "`{what}.{name}` must be an array of values, found {}",
                    value.type_name()
                ),
            )
            .help = Some(format!("e.g. {name} = [1, 2, 3]"));
            return None;
        };
        if items.is_empty() {
            self.error(
                &value.origin,
                format!("`{what}.{name}` is empty: an axis needs at least one value"),
            );
            return None;
        }
        let mut values: Vec<(Scalar, Origin)> = Vec::new();
        let mut distinct: std::collections::HashSet<Scalar> = std::collections::HashSet::new();
        for item in items {
            match item.as_scalar() {
                Some(s) => {
                    if !distinct.insert(s.clone()) {
                        self.error(
                            &item.origin,
                            format!("`{what}.{name}` repeats the value `{s}`"),
                        );
                    }
                    values.push((s, item.origin.clone()));
                }
                None => {
                    self.error(
                        &item.origin,
                        format!(
                            "sweep values must be strings, numbers or booleans, found {}",
                            item.type_name()
                        ),
                    );
                }
            }
        }
        Some(values)
    }

    fn grid(&mut self, value: &SValue, what: &str) -> Vec<AxisGroup> {
        let Some(table) = value.as_table() else {
            self.error(&value.origin, format!("`{what}` must be a table of arrays"))
                .help = Some(format!("e.g. {what} = {{ layer = [0, 6, 12] }}"));
            return Vec::new();
        };
        let mut groups = Vec::new();
        for (name, entry) in table.iter() {
            if !is_identifier(name) {
                self.error(
                    &entry.key_origin,
                    format!("axis name `{name}` is not a plain name"),
                );
                continue;
            }
            if let Some(values) = self.axis_values(name, &entry.value, what) {
                groups.push(AxisGroup {
                    axes: vec![(name.clone(), entry.key_origin.clone())],
                    rows: values.into_iter().map(|v| vec![v]).collect(),
                });
            }
        }
        groups
    }

    fn zip(&mut self, value: &SValue, what: &str) -> Vec<AxisGroup> {
        let Some(table) = value.as_table() else {
            self.error(
                &value.origin,
                format!("`{what}` must be a table of arrays of equal length"),
            );
            return Vec::new();
        };
        let mut axes = Vec::new();
        let mut columns: Vec<Vec<(Scalar, Origin)>> = Vec::new();
        let mut first_len: Option<(usize, String)> = None;
        for (name, entry) in table.iter() {
            let Some(values) = self.axis_values(name, &entry.value, what) else {
                continue;
            };
            match &first_len {
                Some((len, first)) if *len != values.len() => {
                    self.error(
                        &entry.value.origin,
                        format!(
                            "`{what}.{name}` has {} values but `{what}.{first}` has {len}",
                            values.len()
                        ),
                    )
                    .help = Some("zipped axes are aligned lists: give them equal lengths, or use `grid` for every combination".into());
                    continue;
                }
                None => first_len = Some((values.len(), name.clone())),
                _ => {}
            }
            axes.push((name.clone(), entry.key_origin.clone()));
            columns.push(values);
        }
        if axes.is_empty() {
            return Vec::new();
        }
        let rows = (0..columns[0].len())
            .map(|i| columns.iter().map(|c| c[i].clone()).collect())
            .collect();
        vec![AxisGroup { axes, rows }]
    }

    fn node(&mut self, name: &str, entry: &crate::value::SEntry) -> Option<NodeDecl> {
        if !is_identifier(name) {
            self.error(
                &entry.key_origin,
                format!("node name `{name}` is not a plain name"),
            )
            .help = Some(
                "use letters, digits, `_` and `-`; dots and brackets are reserved for references"
                    .into(),
            );
            return None;
        }
        let Some(table) = entry.value.as_table() else {
            self.error(
                &entry.value.origin,
                format!("node `{name}` must be a table"),
            )
            .help = Some(format!("write it as [nodes.{name}] with a `kind` key"));
            return None;
        };
        let (kind, kind_origin) = match table.get("kind") {
            Some(v) => match v.as_str() {
                Some(s) => (s.to_string(), v.origin.clone()),
                None => {
                    self.error(
                        &v.origin,
                        format!("`kind` must be a string, found {}", v.type_name()),
                    );
                    return None;
                }
            },
            None => {
                self.error(&entry.key_origin, format!("node `{name}` has no `kind`"))
                    .help =
                    Some("add e.g. kind = \"entropy\"; `lmgeo kinds` lists them all".into());
                return None;
            }
        };
        let description = self.optional_string(table, "description");
        let mut inputs = Vec::new();
        if let Some(value) = table.get("inputs") {
            match value.as_table() {
                Some(ports) => {
                    for (port, entry) in ports.iter() {
                        let refs = self.references(port, &entry.value);
                        inputs.push(InputDecl {
                            port: port.clone(),
                            port_origin: entry.key_origin.clone(),
                            refs,
                        });
                    }
                }
                None => {
                    self.error(
                        &value.origin,
                        "`inputs` must be a table of port = \"node.output\"",
                    )
                    .help = Some("e.g. inputs = { matrix = \"data.matrix\" }".into());
                }
            }
        }
        let mut axes = Vec::new();
        if let Some(grid) = table.get("grid") {
            axes.extend(self.grid(grid, "grid"));
        }
        if let Some(zip) = table.get("zip") {
            axes.extend(self.zip(zip, "zip"));
        }
        let mut params = STable::default();
        for (key, entry) in table.iter() {
            if !NODE_RESERVED_KEYS.contains(&key.as_str()) {
                params.insert(key.clone(), entry.key_origin.clone(), entry.value.clone());
            }
        }
        for group in &axes {
            for (axis, origin) in &group.axes {
                if params.get(axis).is_some() {
                    self.error(
                        origin,
                        format!("`{axis}` is both a parameter and a sweep axis of node `{name}`"),
                    )
                    .help = Some("remove the fixed value or the sweep".into());
                }
            }
        }
        Some(NodeDecl {
            name: name.to_string(),
            origin: entry.key_origin.clone(),
            kind,
            kind_origin,
            description,
            inputs,
            axes,
            params: SValue::new(SKind::Table(params), entry.value.origin.clone()),
        })
    }

    fn references(&mut self, port: &str, value: &SValue) -> Vec<Reference> {
        let items: Vec<&SValue> = match &value.kind {
            SKind::String(_) => vec![value],
            SKind::Array(items) => items.iter().collect(),
            _ => {
                self.error(
                    &value.origin,
                    format!(
                        "input `{port}` must be a reference string or an array of them, found {}",
                        value.type_name()
                    ),
                )
                .help = Some(
                    "e.g. \"data.matrix\", \"entropy.metrics[*]\" or \"entropy.metrics[model]\""
                        .into(),
                );
                return Vec::new();
            }
        };
        let mut refs = Vec::new();
        for item in items {
            let Some(text) = item.as_str() else {
                self.error(
                    &item.origin,
                    format!("a reference must be a string, found {}", item.type_name()),
                );
                continue;
            };
            match parse_reference(text) {
                Ok((node, output, collect)) => refs.push(Reference {
                    node,
                    output,
                    collect,
                    origin: item.origin.clone(),
                }),
                Err(message) => {
                    self.error(&item.origin, message).help =
                        Some("write `node.output`, `node.output[*]` (all instances) or `node.output[axis,...]` (collect over axes)".into());
                }
            }
        }
        refs
    }
}

impl SValue {
    fn origin_start(&self) -> Origin {
        match &self.origin {
            Origin::File(_) => Origin::File(0..0),
            other => other.clone(),
        }
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse_reference(text: &str) -> Result<(String, Option<String>, Collect), String> {
    let text = text.trim();
    let (path, collect) = match text.find('[') {
        Some(open) => {
            let Some(inner) = text[open + 1..].strip_suffix(']') else {
                return Err(format!("reference `{text}` has an unclosed `[`"));
            };
            let inner = inner.trim();
            let collect = if inner == "*" {
                Collect::All
            } else {
                let axes: Vec<String> = inner.split(',').map(|a| a.trim().to_string()).collect();
                if axes.iter().any(|a| !is_identifier(a)) {
                    return Err(format!(
                        "`[{inner}]` in `{text}` is not `*` or a list of axis names"
                    ));
                }
                Collect::Over(axes)
            };
            (&text[..open], collect)
        }
        None => (text, Collect::No),
    };
    let mut parts = path.split('.');
    let node = parts.next().unwrap_or_default();
    let output = parts.next();
    if parts.next().is_some() || !is_identifier(node) || output.is_some_and(|o| !is_identifier(o)) {
        return Err(format!("`{text}` is not a reference"));
    }
    Ok((node.to_string(), output.map(str::to_string), collect))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Experiment {
        parse(Path::new("t.toml"), text, &Overrides::default()).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(Path::new("t.toml"), text, &Overrides::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn references_parse() {
        assert_eq!(
            parse_reference("a.b").unwrap(),
            ("a".into(), Some("b".into()), Collect::No)
        );
        assert_eq!(
            parse_reference("a.b[*]").unwrap(),
            ("a".into(), Some("b".into()), Collect::All)
        );
        assert_eq!(
            parse_reference("a.b[model, layer]").unwrap(),
            (
                "a".into(),
                Some("b".into()),
                Collect::Over(vec!["model".into(), "layer".into()])
            )
        );
        assert_eq!(
            parse_reference("a").unwrap(),
            ("a".into(), None, Collect::No)
        );
        assert!(parse_reference("a.b.c").is_err());
        assert!(parse_reference("a.b[").is_err());
        assert!(parse_reference("a.b[x y]").is_err());
    }

    #[test]
    fn a_full_experiment_parses() {
        let e = parse_ok(
            r#"
name = "demo"
[grid]
seed = [1, 2]
[zip]
model = ["a", "b"]
size = [10, 20]
[defaults.stats]
center = true
[nodes.data]
kind = "synthetic"
seed = "${seed}"
grid = { rank = [2, 4] }
[nodes.stats]
kind = "stats"
inputs = { matrix = "data.matrix", extra = ["data.matrix[*]"] }
"#,
        );
        assert_eq!(e.name, "demo");
        assert_eq!(e.axes.len(), 2);
        assert_eq!(e.axes[1].axes.len(), 2);
        assert_eq!(e.nodes["data"].axes[0].rows.len(), 2);
        assert_eq!(e.nodes["stats"].inputs[1].refs[0].collect, Collect::All);
        assert!(
            e.nodes["data"]
                .params
                .as_table()
                .unwrap()
                .get("seed")
                .is_some()
        );
        assert!(
            e.nodes["data"]
                .params
                .as_table()
                .unwrap()
                .get("kind")
                .is_none()
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let msg = parse_err("name = \"x\"\nnodez = 1\n");
        assert!(
            msg.contains("t.toml:2:1: unknown top-level key `nodez`"),
            "{msg}"
        );
        assert!(msg.contains("did you mean `nodes`"), "{msg}");
    }

    #[test]
    fn zip_lengths_must_agree() {
        let msg = parse_err("name = \"x\"\n[zip]\na = [1, 2]\nb = [1]\n[nodes.n]\nkind = \"k\"\n");
        assert!(
            msg.contains("t.toml:4:5: `zip.b` has 1 values but `zip.a` has 2"),
            "{msg}"
        );
    }

    #[test]
    fn set_overrides_replace_and_add_values_with_their_origin() {
        let e = parse(
            Path::new("t.toml"),
            "name = \"x\"\n[nodes.n]\nkind = \"k\"\neps = 0.1\n",
            &Overrides {
                set: vec![
                    "n.eps=0.2".into(),
                    "n.label=hello world".into(),
                    "grid.seed=[1,2]".into(),
                ],
                env: false,
            },
        )
        .unwrap();
        let params = e.nodes["n"].params.as_table().unwrap();
        assert!(matches!(params.get("eps").unwrap().kind, SKind::Float(x) if x == 0.2));
        assert_eq!(params.get("label").unwrap().as_str(), Some("hello world"));
        assert_eq!(
            params.get("eps").unwrap().origin,
            Origin::CommandLine("--set n.eps=0.2".into())
        );
        assert_eq!(e.axes[0].rows.len(), 2);
    }

    #[test]
    fn set_on_a_missing_node_is_an_error() {
        let err = parse(
            Path::new("t.toml"),
            "name = \"x\"\n[nodes.entropy]\nkind = \"k\"\n",
            &Overrides {
                set: vec!["entropi.eps=0.2".into()],
                env: false,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("there is no node `entropi`"), "{err}");
        assert!(err.contains("did you mean `entropy`"), "{err}");
    }
}
