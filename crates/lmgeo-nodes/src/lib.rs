//! The built-in node kinds: each binds one probe, model step or data step to
//! the engine's [`lmgeo_dag::Node`] contract. Plugins register into the same
//! [`lmgeo_dag::Registry`].

pub mod ablate;
pub mod common;
pub mod data;
pub mod demo;
mod metrics_io;
pub mod model;
mod npy;
pub mod probes;
pub mod report;

pub use metrics_io::read_metrics;

use lmgeo_dag::Registry;

/// Every built-in kind.
pub fn builtin_registry() -> Registry {
    let mut registry = Registry::new();
    demo::register(&mut registry);
    registry
        .register(data::CorpusNode)
        .register(model::Extract)
        .register(ablate::Ablate);
    probes::register(&mut registry);
    registry
}
