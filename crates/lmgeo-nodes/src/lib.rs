//! The built-in node kinds: each binds one probe, model step or data step to
//! the engine's [`lmgeo_dag::Node`] contract. Plugins register into the same
//! [`lmgeo_dag::Registry`]: Rust crates with [`lmgeo_dag::Registry::register`],
//! programs in other languages through [`plugin`] (the `command` kind and
//! `plugin.toml` manifests).

pub mod ablate;
pub mod common;
pub mod data;
pub mod demo;
mod metrics_io;
pub mod model;
mod npy;
pub mod plugin;
pub mod probes;
pub mod report;
pub mod verdicts;

pub use metrics_io::read_metrics;

use lmgeo_dag::Registry;

/// Every built-in kind, including `command` (no plugin manifests: those
/// depend on the working directory; see [`registry_with_plugins`]).
pub fn builtin_registry() -> Registry {
    let mut registry = Registry::new();
    demo::register(&mut registry);
    registry
        .register(data::CorpusNode)
        .register(model::Extract)
        .register(ablate::Ablate)
        .register(plugin::CommandKind);
    probes::register(&mut registry);
    registry
}

/// The built-in kinds and every plugin manifest found in `./plugins` and
/// `LMGEO_PLUGIN_PATH`: what the `lmgeo` binary runs with. A manifest that
/// does not read is an error naming its file.
pub fn registry_with_plugins() -> Result<Registry, plugin::PluginError> {
    let mut registry = builtin_registry();
    plugin::discover(&mut registry)?;
    Ok(registry)
}
