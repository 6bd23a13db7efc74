//! The `lmgeo` binary: the command line with every built-in node kind and
//! the plugins found in `./plugins` and `LMGEO_PLUGIN_PATH`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match lmgeo_nodes::registry_with_plugins() {
        Ok(registry) => lmgeo_cli::main_with(registry),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
