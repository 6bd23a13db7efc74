//! The lmgeo engine: experiment files, sweeps, cache keys, the
//! content-addressed store and the scheduler.
//!
//! It knows nothing of models, tensors or probes: node kinds plug in through
//! [`node::Node`] and a [`registry::Registry`], and everything they produce
//! is an opaque file to the engine (plus tidy [`node::MetricRow`]s).
//!
//! The flow is one-way:
//! `spec::load` (TOML + overrides) → `graph::build` (kinds, sweeps,
//! references) → `scheduler::plan` / `scheduler::run` (keys, hits, execution)
//! → outcomes with metrics for the results tables.

pub mod error;
pub mod execution;
pub mod graph;
pub mod key;
pub mod lock;
pub mod node;
pub mod record;
pub mod registry;
pub mod scheduler;
pub mod spec;
pub mod store;
pub mod value;
pub mod verify;

pub use error::{SpecError, SpecErrors};
pub use graph::{Graph, Instance, build};
pub use node::{
    Arity, Configured, Coords, ExternalFile, InputArtifact, InputPort, Interface, MetricRow, Node,
    NodeError, NodeKind, OutputPort, ParamError, Progress, RunContext,
};
pub use record::{RunRecord, Status};
pub use registry::Registry;
pub use scheduler::{
    NodeOutcome, Observer, PlanStatus, RunOptions, RunReport, plan, run, serve_cached,
};
pub use spec::{Experiment, Overrides, load};
pub use store::Store;
pub use value::Scalar;
