//! The `lmgeo` binary: the command line with every built-in node kind and
//! the plugins found in `./plugins` and `LMGEO_PLUGIN_PATH`.

use std::process::ExitCode;

fn main() -> ExitCode {
    lmgeo_nodes::model::keep_freed_buffers_for_reuse();
    match lmgeo_nodes::registry_with_plugins() {
        Ok(registry) => lmgeo_cli::main_with(registry),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
