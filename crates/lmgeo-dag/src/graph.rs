//! From a parsed experiment to the graph of node instances: kinds checked,
//! parameters validated, sweeps expanded, references resolved, cycles found.
//!
//! Sweep semantics: a node's instances are the natural join of
//! - the upstream instances it references, projected on the axes it inherits
//!   (all of a mapped reference's axes; none for `[*]`; all but the listed
//!   ones for `[axis, ...]`), and
//! - its own axes (its `grid`/`zip`, and the experiment axes its parameters
//!   use as `"${axis}"`).
//!
//! Each instance is named `node[axis=value,...]`, inherited axes first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use petgraph::algo::tarjan_scc;
use petgraph::graph::DiGraph;

use crate::error::{SpecError, SpecErrors, valid_list_help};
use crate::node::{Arity, ConfigureError, Configured, Coords, NodeKind};
use crate::registry::Registry;
use crate::spec::{AxisGroup, Collect, Experiment, NodeDecl, Reference};
use crate::value::{Origin, SKind, STable, SValue, Scalar};

/// The implicit output every node has: its tidy metric rows.
pub const METRICS_OUTPUT: &str = "metrics";

/// A validated, expanded experiment.
pub struct Graph {
    pub experiment: Experiment,
    /// In a topological order: every instance after all its inputs.
    pub instances: Vec<Instance>,
}

pub struct Instance {
    pub id: String,
    pub node: String,
    pub kind: Arc<dyn NodeKind>,
    pub coords: Coords,
    pub configured: Configured,
    /// Per input port, the upstream instances and outputs bound to it.
    pub inputs: Vec<(String, Vec<Binding>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Index of the upstream instance in [`Graph::instances`].
    pub instance: usize,
    pub output: String,
}

impl Graph {
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.instances.iter().position(|i| i.id == id)
    }

    /// Indices of instances that directly consume `index`.
    pub fn dependents(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.instances.len()];
        for (i, upstream) in self.upstreams().into_iter().enumerate() {
            for u in upstream {
                out[u].push(i);
            }
        }
        out
    }

    /// For each instance, the instances it reads from (sorted, no repeats).
    pub fn upstreams(&self) -> Vec<Vec<usize>> {
        self.instances
            .iter()
            .map(|instance| {
                let mut upstream: Vec<usize> = instance
                    .inputs
                    .iter()
                    .flat_map(|(_, b)| b.iter().map(|b| b.instance))
                    .collect();
                upstream.sort_unstable();
                upstream.dedup();
                upstream
            })
            .collect()
    }

    /// Graphviz DOT of the instance graph.
    pub fn to_dot(&self) -> String {
        let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n", self.experiment.name);
        for (i, instance) in self.instances.iter().enumerate() {
            out.push_str(&format!(
                "  n{i} [label=\"{}\\n({})\", shape=box];\n",
                instance.id.replace('"', "\\\""),
                instance.kind.name()
            ));
        }
        for (i, instance) in self.instances.iter().enumerate() {
            for (port, bindings) in &instance.inputs {
                for b in bindings {
                    out.push_str(&format!(
                        "  n{} -> n{i} [label=\"{}→{port}\"];\n",
                        b.instance, b.output
                    ));
                }
            }
        }
        out.push_str("}\n");
        out
    }

    /// Mermaid flowchart of the instance graph.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for (i, instance) in self.instances.iter().enumerate() {
            out.push_str(&format!(
                "  n{i}[\"{}<br/><i>{}</i>\"]\n",
                instance.id.replace('"', "#quot;"),
                instance.kind.name()
            ));
        }
        for (i, instance) in self.instances.iter().enumerate() {
            for (port, bindings) in &instance.inputs {
                for b in bindings {
                    out.push_str(&format!("  n{} -->|{}| n{i}\n", b.instance, port));
                }
            }
        }
        out
    }
}

/// Formats an instance id: `node` or `node[a=1,b=x]`.
pub fn instance_id(node: &str, coords: &Coords) -> String {
    if coords.is_empty() {
        node.to_string()
    } else {
        format!("{node}[{coords}]")
    }
}

/// The most node instances an experiment may expand to, all nodes together,
/// unless it sets `max_instances`. A sweep is a product of axes, so a few
/// short lists can ask for billions of instances; the count is checked
/// before any instance is made, and a larger experiment is refused with the
/// product spelled out. Every instance costs a configured parameter set, a
/// cache key and a store lookup, so a million is already a very large plan.
pub const DEFAULT_MAX_INSTANCES: u64 = 1_000_000;

/// How [`build_with`] expands an experiment.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// The instance limit, over the experiment's `max_instances` and
    /// [`DEFAULT_MAX_INSTANCES`].
    pub max_instances: Option<u64>,
}

/// Validates and expands an experiment against the registered kinds.
pub fn build(experiment: Experiment, registry: &Registry) -> Result<Graph, SpecErrors> {
    build_with(experiment, registry, &BuildOptions::default())
}

/// [`build`] with options.
pub fn build_with(
    experiment: Experiment,
    registry: &Registry,
    options: &BuildOptions,
) -> Result<Graph, SpecErrors> {
    let max_instances = options
        .max_instances
        .or(experiment.max_instances)
        .unwrap_or(DEFAULT_MAX_INSTANCES);
    let mut builder = Builder {
        experiment: &experiment,
        registry,
        errors: Vec::new(),
        seen: HashSet::new(),
        max_instances,
        planned: 0,
    };
    let instances = builder.build();
    if builder.errors.is_empty() {
        Ok(Graph {
            experiment,
            instances,
        })
    } else {
        Err(SpecErrors(builder.errors))
    }
}

struct Builder<'a> {
    experiment: &'a Experiment,
    registry: &'a Registry,
    errors: Vec<SpecError>,
    /// Errors already reported: one mistake in a swept node is reported once,
    /// not once per instance.
    seen: HashSet<(String, String)>,
    max_instances: u64,
    /// Instances of the nodes expanded so far.
    planned: u64,
}

impl Builder<'_> {
    fn error(&mut self, origin: &Origin, message: impl Into<String>, help: Option<String>) {
        let message = message.into();
        if self.seen.insert((format!("{origin:?}"), message.clone())) {
            let mut e = SpecError::new(&self.experiment.file, origin, message);
            e.help = help;
            self.errors.push(e);
        }
    }

    fn build(&mut self) -> Vec<Instance> {
        let experiment = self.experiment;
        for (kind, (origin, _)) in &experiment.defaults {
            if self.registry.get(kind).is_none() {
                let help = valid_list_help(kind, "kinds", self.registry.names());
                self.error(
                    origin,
                    format!("`defaults.{kind}`: unknown node kind `{kind}`"),
                    Some(help),
                );
            }
        }
        let mut kinds: HashMap<&str, Arc<dyn NodeKind>> = HashMap::new();
        for decl in experiment.nodes.values() {
            match self.registry.get(&decl.kind) {
                Some(kind) => {
                    kinds.insert(&decl.name, kind.clone());
                }
                None => {
                    let help = valid_list_help(&decl.kind, "kinds", self.registry.names());
                    self.error(
                        &decl.kind_origin,
                        format!("unknown node kind `{}`", decl.kind),
                        Some(help),
                    );
                }
            }
        }
        let node_names: Vec<&str> = experiment.nodes.keys().map(String::as_str).collect();
        for decl in experiment.nodes.values() {
            for input in &decl.inputs {
                for r in &input.refs {
                    if !experiment.nodes.contains_key(&r.node) {
                        let help = valid_list_help(&r.node, "nodes", node_names.iter().copied());
                        self.error(
                            &r.origin,
                            format!(
                                "input `{}` of node `{}` refers to an unknown node `{}`",
                                input.port, decl.name, r.node
                            ),
                            Some(help),
                        );
                    }
                }
            }
        }
        let Some(order) = self.topological_order() else {
            return Vec::new();
        };
        if !self.errors.is_empty() {
            return Vec::new();
        }

        let mut instances: Vec<Instance> = Vec::new();
        let mut by_node: HashMap<String, Vec<usize>> = HashMap::new();
        for name in order {
            let decl = &experiment.nodes[name.as_str()];
            let kind = kinds[name.as_str()].clone();
            let Some(created) = self.expand(decl, &kind, &instances, &by_node) else {
                // Over the instance limit: reported; expanding the nodes
                // below it would only repeat the error.
                return Vec::new();
            };
            self.planned += created.len() as u64;
            let mut indices = Vec::new();
            for instance in created {
                indices.push(instances.len());
                instances.push(instance);
            }
            by_node.insert(name.clone(), indices);
        }
        instances
    }

    /// Node names in dependency order, or `None` after reporting cycles.
    fn topological_order(&mut self) -> Option<Vec<String>> {
        let experiment = self.experiment;
        let mut graph = DiGraph::<&str, &Reference>::new();
        let mut index = HashMap::new();
        for name in experiment.nodes.keys() {
            index.insert(name.as_str(), graph.add_node(name.as_str()));
        }
        for decl in experiment.nodes.values() {
            for input in &decl.inputs {
                for r in &input.refs {
                    if let Some(&from) = index.get(r.node.as_str()) {
                        graph.add_edge(from, index[decl.name.as_str()], r);
                    }
                }
            }
        }
        // tarjan_scc yields components in reverse topological order.
        let components = tarjan_scc(&graph);
        let mut cyclic = false;
        for component in &components {
            let self_loop = component.len() == 1 && graph.contains_edge(component[0], component[0]);
            if component.len() > 1 || self_loop {
                cyclic = true;
                let members: HashSet<_> = component.iter().copied().collect();
                let mut names: Vec<&str> = component.iter().map(|&n| graph[n]).collect();
                names.sort_unstable();
                let edge = graph
                    .edge_indices()
                    .find(|&e| {
                        let (a, b) = graph.edge_endpoints(e).expect("edge exists");
                        members.contains(&a) && members.contains(&b)
                    })
                    .expect("a cycle has an edge");
                let origin = graph[edge].origin.clone();
                let cycle = names.join(" → ");
                self.error(
                    &origin,
                    format!("the nodes {cycle} form a cycle"),
                    Some(
                        "a node cannot depend on its own results; remove one of these references"
                            .into(),
                    ),
                );
            }
        }
        if cyclic {
            return None;
        }
        // Kahn's algorithm, taking ready nodes in file order, so instance
        // order (and thus ids, logs and tables) follows the file.
        let mut remaining: Vec<usize> = experiment
            .nodes
            .values()
            .map(|d| {
                d.inputs
                    .iter()
                    .flat_map(|i| &i.refs)
                    .filter(|r| experiment.nodes.contains_key(&r.node))
                    .count()
            })
            .collect();
        let mut done = vec![false; remaining.len()];
        let mut order = Vec::with_capacity(remaining.len());
        while order.len() < remaining.len() {
            let next = (0..remaining.len())
                .find(|&i| !done[i] && remaining[i] == 0)
                .expect("an acyclic graph always has a ready node");
            done[next] = true;
            let (name, _) = experiment.nodes.get_index(next).expect("index in range");
            order.push(name.clone());
            for (j, decl) in experiment.nodes.values().enumerate() {
                let uses = decl
                    .inputs
                    .iter()
                    .flat_map(|i| &i.refs)
                    .filter(|r| &r.node == name)
                    .count();
                remaining[j] -= uses;
            }
        }
        Some(order)
    }

    /// Refuses a join that would take the experiment over the instance
    /// limit, before it is made. `factors` are the sizes joined so far.
    fn within_limit(
        &mut self,
        decl: &NodeDecl,
        cells: &[Coords],
        rows: &[Coords],
        factors: &mut Vec<String>,
        what: String,
    ) -> bool {
        factors.push(format!("{what} ({})", rows.len()));
        let size = join_size(cells, rows);
        let total = self.planned.saturating_add(size);
        if total <= self.max_instances {
            return true;
        }
        let node_count = if size == u64::MAX {
            "more than 18446744073709551615".to_string()
        } else {
            size.to_string()
        };
        self.error(
            &decl.origin,
            format!(
                "node `{}` would expand to {node_count} instances, over the limit of {} for the whole experiment ({} before it)",
                decl.name, self.max_instances, self.planned
            ),
            Some(format!(
                "a sweep is the product of its axes: {}; narrow it, or raise the limit with `max_instances = N` at the top of the experiment file (or `--set max_instances=N`)",
                factors.join(" x ")
            )),
        );
        false
    }

    /// The node's instances, or `None` when there would be more than the
    /// limit allows (reported).
    fn expand(
        &mut self,
        decl: &NodeDecl,
        kind: &Arc<dyn NodeKind>,
        instances: &[Instance],
        by_node: &HashMap<String, Vec<usize>>,
    ) -> Option<Vec<Instance>> {
        // Start from one empty cell and join in every reference, then the
        // node's own axes.
        let mut cells: Vec<Coords> = vec![Coords::default()];
        let mut inherited: Vec<Vec<Vec<String>>> = Vec::new();
        let mut factors: Vec<String> = Vec::new();
        for input in &decl.inputs {
            let mut per_ref = Vec::new();
            for r in &input.refs {
                let upstream = &by_node[&r.node];
                if upstream.is_empty() {
                    // The upstream node was rejected; its error is reported.
                    return Some(Vec::new());
                }
                let upstream_axes: Vec<String> = instances[upstream[0]]
                    .coords
                    .iter()
                    .map(|(a, _)| a.clone())
                    .collect();
                let keep: Vec<String> = match &r.collect {
                    Collect::No => upstream_axes.clone(),
                    Collect::All => Vec::new(),
                    Collect::Over(axes) => {
                        for axis in axes {
                            if !upstream_axes.contains(axis) {
                                let help = if upstream_axes.is_empty() {
                                    format!(
                                        "node `{}` is not swept; use `[*]` or drop the brackets",
                                        r.node
                                    )
                                } else {
                                    valid_list_help(
                                        axis,
                                        &format!("axes of `{}`", r.node),
                                        upstream_axes.iter().map(String::as_str),
                                    )
                                };
                                self.error(
                                    &r.origin,
                                    format!("`{axis}` is not an axis of node `{}`", r.node),
                                    Some(help),
                                );
                            }
                        }
                        upstream_axes
                            .iter()
                            .filter(|a| !axes.contains(a))
                            .cloned()
                            .collect()
                    }
                };
                let mut projections: Vec<Coords> = Vec::new();
                let mut distinct: HashSet<Coords> = HashSet::new();
                for &u in upstream {
                    let projected = Coords(
                        instances[u]
                            .coords
                            .iter()
                            .filter(|(a, _)| keep.contains(a))
                            .cloned()
                            .collect(),
                    );
                    if distinct.insert(projected.clone()) {
                        projections.push(projected);
                    }
                }
                let what = format!("input `{}` from `{}`", input.port, r.node);
                if !self.within_limit(decl, &cells, &projections, &mut factors, what) {
                    return None;
                }
                cells = join(&cells, &projections);
                per_ref.push(keep);
            }
            inherited.push(per_ref);
        }
        if cells.is_empty() {
            self.error(
                &decl.origin,
                format!(
                    "node `{}` has no instance: its inputs' sweeps do not share any coordinates",
                    decl.name
                ),
                Some(
                    "references to swept nodes are matched on the axes they share; check the grids"
                        .into(),
                ),
            );
            return Some(Vec::new());
        }

        let used_axes = self.experiment_axes_used(decl);
        let mut own_groups: Vec<&AxisGroup> = Vec::new();
        for group in &self.experiment.axes {
            if group.axes.iter().any(|(a, _)| used_axes.contains(a)) {
                own_groups.push(group);
            }
        }
        own_groups.extend(decl.axes.iter());
        for group in own_groups {
            let rows: Vec<Coords> = group
                .rows
                .iter()
                .map(|row| {
                    Coords(
                        group
                            .axes
                            .iter()
                            .zip(row)
                            .map(|((a, _), (v, _))| (a.clone(), v.clone()))
                            .collect(),
                    )
                })
                .collect();
            let names: Vec<&str> = group.axes.iter().map(|(a, _)| a.as_str()).collect();
            let what = format!("`{}`", names.join("`, `"));
            if !self.within_limit(decl, &cells, &rows, &mut factors, what) {
                return None;
            }
            cells = join(&cells, &rows);
        }

        let mut created = Vec::new();
        for cell in cells {
            let Some(params) = self.instance_params(decl, &cell) else {
                continue;
            };
            let configured = match kind.configure(&params) {
                Ok(c) => c,
                Err(ConfigureError::Value(e)) => {
                    let origin = e
                        .origin
                        .clone()
                        .unwrap_or_else(|| decl.params.origin.clone());
                    self.error(
                        &origin,
                        format!("node `{}` ({}): {}", decl.name, kind.name(), e.message),
                        None,
                    );
                    continue;
                }
                Err(ConfigureError::Param(e)) => {
                    let origin = e
                        .field
                        .as_deref()
                        .and_then(|f| {
                            params
                                .as_table()
                                .and_then(|t| t.get(f))
                                .map(|v| v.origin.clone())
                        })
                        .unwrap_or_else(|| decl.origin.clone());
                    let message = match &e.field {
                        Some(f) => format!(
                            "node `{}` ({}): `{f}` {}",
                            decl.name,
                            kind.name(),
                            e.message
                        ),
                        None => format!("node `{}` ({}): {}", decl.name, kind.name(), e.message),
                    };
                    self.error(&origin, message, None);
                    continue;
                }
            };
            let Some(bindings) = self.bind_inputs(
                decl,
                kind,
                &configured,
                &cell,
                &inherited,
                instances,
                by_node,
            ) else {
                continue;
            };
            created.push(Instance {
                id: instance_id(&decl.name, &cell),
                node: decl.name.clone(),
                kind: kind.clone(),
                coords: cell,
                configured,
                inputs: bindings,
            });
        }
        Some(created)
    }

    /// Experiment axes that this node's parameters mention as `${axis}`.
    fn experiment_axes_used(&mut self, decl: &NodeDecl) -> Vec<String> {
        let known: Vec<&str> = self
            .experiment
            .axes
            .iter()
            .flat_map(|g| g.axes.iter().map(|(a, _)| a.as_str()))
            .collect();
        let mut used = Vec::new();
        let mut strings = Vec::new();
        collect_strings(&decl.params, &mut strings);
        for value in strings {
            let text = value.as_str().unwrap_or_default();
            for var in placeholders(text) {
                if known.contains(&var.as_str()) {
                    if !used.contains(&var) {
                        used.push(var);
                    }
                } else {
                    let help = if known.is_empty() {
                        "declare it in the experiment's [grid] or [zip] table".to_string()
                    } else {
                        valid_list_help(&var, "experiment axes", known.iter().copied())
                    };
                    self.error(
                        &value.origin,
                        format!("`${{{var}}}` is not an experiment axis"),
                        Some(help),
                    );
                }
            }
        }
        used
    }

    /// The instance's parameter table: kind defaults, then the node's own
    /// values, then its axis values and `${axis}` substitutions.
    fn instance_params(&mut self, decl: &NodeDecl, cell: &Coords) -> Option<SValue> {
        let mut table = STable::default();
        if let Some((_, defaults)) = self.experiment.defaults.get(&decl.kind)
            && let Some(defaults) = defaults.as_table()
        {
            for (k, e) in defaults.iter() {
                table.insert(k.clone(), e.key_origin.clone(), e.value.clone());
            }
        }
        for (k, e) in decl.params.as_table().expect("params are a table").iter() {
            table.insert(k.clone(), e.key_origin.clone(), substitute(&e.value, cell));
        }
        for group in &decl.axes {
            for (i, (axis, axis_origin)) in group.axes.iter().enumerate() {
                let value = cell.get(axis).expect("own axes are in the cell");
                let origin = group
                    .rows
                    .iter()
                    .find(|row| &row[i].0 == value)
                    .map(|row| row[i].1.clone())
                    .unwrap_or_else(|| axis_origin.clone());
                table.insert(
                    axis.clone(),
                    axis_origin.clone(),
                    SValue::from_scalar(value, origin),
                );
            }
        }
        Some(SValue::new(SKind::Table(table), decl.params.origin.clone()))
    }

    #[allow(clippy::too_many_arguments)]
    fn bind_inputs(
        &mut self,
        decl: &NodeDecl,
        kind: &Arc<dyn NodeKind>,
        configured: &Configured,
        cell: &Coords,
        inherited: &[Vec<Vec<String>>],
        instances: &[Instance],
        by_node: &HashMap<String, Vec<usize>>,
    ) -> Option<Vec<(String, Vec<Binding>)>> {
        let ports = &configured.interface.inputs;
        let mut ok = true;
        let mut bound = Vec::new();
        for (input, keeps) in decl.inputs.iter().zip(inherited) {
            let Some(port) = ports.iter().find(|p| p.name == input.port) else {
                let help = if ports.is_empty() {
                    format!("kind `{}` takes no inputs", kind.name())
                } else {
                    valid_list_help(
                        &input.port,
                        &format!("inputs of `{}`", kind.name()),
                        ports.iter().map(|p| p.name.as_str()),
                    )
                };
                self.error(
                    &input.port_origin,
                    format!("node `{}`: unknown input `{}`", decl.name, input.port),
                    Some(help),
                );
                ok = false;
                continue;
            };
            let mut bindings = Vec::new();
            for (r, keep) in input.refs.iter().zip(keeps) {
                let upstream = &by_node[&r.node];
                let Some(output) = self.resolve_output(r, &instances[upstream[0]]) else {
                    ok = false;
                    continue;
                };
                for &u in upstream {
                    let matches = instances[u]
                        .coords
                        .iter()
                        .filter(|(a, _)| keep.contains(a))
                        .all(|(a, v)| cell.get(a) == Some(v));
                    if matches {
                        bindings.push(Binding {
                            instance: u,
                            output: output.clone(),
                        });
                    }
                }
                if port.arity != Arity::Many && r.collect != Collect::No {
                    self.error(
                        &r.origin,
                        format!("input `{}` of `{}` takes one value, but this reference collects several", port.name, kind.name()),
                        Some(format!("drop the `[...]`, or map over the sweep of `{}`", r.node)),
                    );
                    ok = false;
                }
            }
            let count = bindings.len();
            if port.arity != Arity::Many && count > 1 {
                self.error(
                    &input.port_origin,
                    format!(
                        "input `{}` of `{}` takes one value but {count} are bound",
                        port.name,
                        kind.name()
                    ),
                    None,
                );
                ok = false;
            }
            bound.push((port.name.clone(), bindings));
        }
        for port in ports {
            if port.arity == Arity::One && !decl.inputs.iter().any(|i| i.port == port.name) {
                let help = format!(
                    "add inputs = {{ {} = \"<node>.<output>\" }} ({})",
                    port.name, port.doc
                );
                self.error(
                    &decl.origin,
                    format!(
                        "node `{}` ({}): missing input `{}`",
                        decl.name,
                        kind.name(),
                        port.name
                    ),
                    Some(help),
                );
                ok = false;
            }
        }
        ok.then_some(bound)
    }

    fn resolve_output(&mut self, r: &Reference, upstream: &Instance) -> Option<String> {
        let outputs: Vec<&str> = upstream
            .configured
            .interface
            .outputs
            .iter()
            .map(|o| o.name.as_str())
            .chain([METRICS_OUTPUT])
            .collect();
        match &r.output {
            Some(name) if outputs.contains(&name.as_str()) => Some(name.clone()),
            Some(name) => {
                let help = valid_list_help(
                    name,
                    &format!("outputs of `{}`", r.node),
                    outputs.iter().copied(),
                );
                self.error(
                    &r.origin,
                    format!("node `{}` has no output `{name}`", r.node),
                    Some(help),
                );
                None
            }
            None => {
                let declared = &upstream.configured.interface.outputs;
                if declared.len() == 1 {
                    Some(declared[0].name.clone())
                } else {
                    let help = format!("name one of: {}", outputs.join(", "));
                    self.error(
                        &r.origin,
                        format!("node `{}` has several outputs; say which", r.node),
                        Some(help),
                    );
                    None
                }
            }
        }
    }
}

/// The number of cells [`join`] would make, counted without making them
/// (saturating). Each list's cells share one set of axes (they come from
/// one node's instances or one axis group), so the join pairs the cells
/// that agree on the axes both sides have: counted by grouping `right` on
/// those axes. Lists whose axes vary get the product, an upper bound.
fn join_size(left: &[Coords], right: &[Coords]) -> u64 {
    let product = (left.len() as u64).saturating_mul(right.len() as u64);
    let (Some(l0), Some(r0)) = (left.first(), right.first()) else {
        return 0;
    };
    let axes = |c: &Coords| c.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>();
    let (left_axes, right_axes) = (axes(l0), axes(r0));
    let uniform = |cells: &[Coords], expected: &[String]| {
        cells.iter().all(|c| {
            c.0.len() == expected.len() && c.iter().zip(expected).all(|((a, _), e)| a == e)
        })
    };
    if !uniform(left, &left_axes) || !uniform(right, &right_axes) {
        return product;
    }
    let shared: Vec<&String> = right_axes
        .iter()
        .filter(|a| left_axes.contains(a))
        .collect();
    if shared.is_empty() {
        return product;
    }
    let key = |c: &Coords| -> Vec<Scalar> {
        shared
            .iter()
            .map(|a| c.get(a).expect("uniform axes").clone())
            .collect()
    };
    let mut groups: HashMap<Vec<Scalar>, u64> = HashMap::new();
    for r in right {
        *groups.entry(key(r)).or_default() += 1;
    }
    left.iter()
        .map(|l| groups.get(&key(l)).copied().unwrap_or(0))
        .fold(0u64, u64::saturating_add)
}

/// Natural join of two lists of coordinates.
fn join(left: &[Coords], right: &[Coords]) -> Vec<Coords> {
    let mut out = Vec::new();
    for l in left {
        for r in right {
            let agree = r.iter().all(|(a, v)| l.get(a).is_none_or(|lv| lv == v));
            if agree {
                let mut merged = l.0.clone();
                for (a, v) in r.iter() {
                    if l.get(a).is_none() {
                        merged.push((a.clone(), v.clone()));
                    }
                }
                out.push(Coords(merged));
            }
        }
    }
    out
}

fn collect_strings<'v>(value: &'v SValue, out: &mut Vec<&'v SValue>) {
    match &value.kind {
        SKind::String(_) => out.push(value),
        SKind::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        SKind::Table(t) => t.iter().for_each(|(_, e)| collect_strings(&e.value, out)),
        _ => {}
    }
}

/// Names inside `${...}` in a string.
fn placeholders(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                out.push(after[..end].trim().to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

/// Replaces `${axis}` by the cell's value: a whole-string placeholder takes
/// the value's own type, an embedded one is formatted into the string.
fn substitute(value: &SValue, cell: &Coords) -> SValue {
    match &value.kind {
        SKind::String(text) => {
            let vars = placeholders(text);
            if vars.is_empty() {
                return value.clone();
            }
            if vars.len() == 1 && text.trim() == format!("${{{}}}", vars[0]) {
                if let Some(v) = cell.get(&vars[0]) {
                    return SValue::from_scalar(v, value.origin.clone());
                }
                return value.clone();
            }
            let mut replaced = text.clone();
            for var in vars {
                if let Some(v) = cell.get(&var) {
                    replaced = replaced.replace(&format!("${{{var}}}"), &v.to_string());
                }
            }
            SValue::new(SKind::String(replaced), value.origin.clone())
        }
        SKind::Array(items) => SValue::new(
            SKind::Array(items.iter().map(|v| substitute(v, cell)).collect()),
            value.origin.clone(),
        ),
        SKind::Table(t) => {
            let mut out = STable::default();
            for (k, e) in t.iter() {
                out.insert(k.clone(), e.key_origin.clone(), substitute(&e.value, cell));
            }
            SValue::new(SKind::Table(out), value.origin.clone())
        }
        _ => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(rows: &[&[(&str, i64)]]) -> Vec<Coords> {
        rows.iter()
            .map(|row| {
                Coords(
                    row.iter()
                        .map(|(a, v)| (a.to_string(), Scalar::Integer(*v)))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn join_size_counts_what_join_makes() {
        // Disjoint axes: every pair.
        let seeds = cells(&[&[("seed", 1)], &[("seed", 2)], &[("seed", 3)]]);
        let ranks = cells(&[&[("rank", 2)], &[("rank", 8)]]);
        assert_eq!(join_size(&seeds, &ranks), 6);
        // Shared axis: seed 1 matches two rows, seed 2 one, seed 3 none.
        let pairs = cells(&[
            &[("seed", 1), ("layer", 0)],
            &[("seed", 1), ("layer", 1)],
            &[("seed", 2), ("layer", 0)],
            &[("seed", 9), ("layer", 0)],
        ]);
        assert_eq!(join_size(&seeds, &pairs), 3);
        // The one empty cell a node starts from, and empty sides.
        assert_eq!(join_size(&[Coords::default()], &ranks), 2);
        assert_eq!(join_size(&[], &ranks), 0);
        assert_eq!(join_size(&seeds, &[]), 0);
        for (l, r) in [(&seeds, &ranks), (&seeds, &pairs), (&pairs, &seeds)] {
            assert_eq!(join_size(l, r), join(l, r).len() as u64);
        }
    }

    #[test]
    fn join_size_saturates_instead_of_overflowing() {
        // Only the lengths matter for disjoint axes; the count must not
        // wrap around to a small number that would pass the limit.
        let big: Vec<Coords> = (0..1 << 16)
            .map(|i| Coords(vec![("a".into(), Scalar::Integer(i))]))
            .collect();
        let other: Vec<Coords> = (0..1 << 16)
            .map(|i| Coords(vec![("b".into(), Scalar::Integer(i))]))
            .collect();
        assert_eq!(join_size(&big, &other), 1 << 32);
    }
}
