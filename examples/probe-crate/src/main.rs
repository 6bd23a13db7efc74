//! `lmgeo-pr`: the lmgeo command line with one more node kind,
//! `participation_ratio`. Everything else (the built-in kinds, plugin
//! manifests, caching, results tables) is lmgeo's own.

use std::process::ExitCode;

fn main() -> ExitCode {
    lmgeo_nodes::model::keep_freed_buffers_for_reuse();
    match lmgeo_nodes::registry_with_plugins() {
        Ok(mut registry) => {
            registry.register(lmgeo_probe_example::ParticipationRatio);
            lmgeo_cli::main_with(registry)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
