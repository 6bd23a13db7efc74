//! The `lmgeo` binary: the command line with every built-in node kind.

fn main() -> std::process::ExitCode {
    lmgeo_cli::main_with(lmgeo_nodes::builtin_registry())
}
