//! Engine overhead of a no-op rerun of a 200-node experiment, in process:
//! parsing and validation, then a run where every node is a cache hit.
//! Prints figures; it asserts nothing about time.

use std::path::Path;
use std::time::{Duration, Instant};

use lmgeo_dag::scheduler::Silent;
use lmgeo_dag::{Overrides, RunOptions, Status, Store};

fn main() {
    let seeds: Vec<String> = (1..=100).map(|s| s.to_string()).collect();
    let text = format!(
        "name = \"bench200\"\n[grid]\nseed = [{}]\n[nodes.data]\nkind = \"synthetic_matrix\"\nseed = \"${{seed}}\"\nrows = 16\ncols = 8\n[nodes.stats]\nkind = \"matrix_stats\"\ninputs = {{ matrix = \"data.embeddings\" }}\n",
        seeds.join(", ")
    );
    let registry = lmgeo_nodes::builtin_registry();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let build = || {
        let experiment =
            lmgeo_dag::spec::parse(Path::new("bench200.toml"), &text, &Overrides::default())
                .expect("valid");
        lmgeo_dag::build(experiment, &registry).expect("valid")
    };
    let graph = build();
    assert_eq!(graph.instances.len(), 200);
    let first = lmgeo_dag::run(&graph, &store, &RunOptions::default(), &Silent).expect("runs");
    assert!(first.all_succeeded());

    let mut parse_times = Vec::new();
    let mut run_times = Vec::new();
    for _ in 0..25 {
        let started = Instant::now();
        let graph = build();
        parse_times.push(started.elapsed());
        let started = Instant::now();
        let report = lmgeo_dag::run(&graph, &store, &RunOptions::default(), &Silent).expect("runs");
        run_times.push(started.elapsed());
        assert_eq!(report.count(|s| *s == Status::Cached), 200);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    println!("engine, in process, 200-node no-op rerun (median of 25):");
    println!(
        "  parse + validate + expand: {:>7.2} ms",
        median(&mut parse_times)
    );
    println!(
        "  run (200 cache hits):      {:>7.2} ms",
        median(&mut run_times)
    );
}
