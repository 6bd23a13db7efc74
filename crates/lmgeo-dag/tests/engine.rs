//! The engine end to end with toy node kinds: sweeps, collection, caching,
//! invalidation, failures and corruption.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use lmgeo_dag::node::Node;
use lmgeo_dag::scheduler::Silent;
use lmgeo_dag::{
    InputPort, Interface, MetricRow, NodeError, OutputPort, Overrides, ParamError, Registry,
    RunContext, RunOptions, Status, Store,
};
use serde::{Deserialize, Serialize};

/// Counts executions per instance id, so tests can assert exactly what ran.
static EXECUTIONS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn count(ctx: &RunContext<'_>) {
    *EXECUTIONS
        .lock()
        .unwrap()
        .entry(ctx.node_id().to_string())
        .or_default() += 1;
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NumberParams {
    value: f64,
    #[serde(default)]
    tag: String,
}

struct Number;
impl Node for Number {
    type Params = NumberParams;
    const KIND: &'static str = "number";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "writes a number";
    fn interface(&self, p: &NumberParams) -> Result<Interface, ParamError> {
        if !p.value.is_finite() {
            return Err(ParamError::field("value", "must be finite"));
        }
        Ok(Interface {
            outputs: vec![
                OutputPort::published("value", "the number as text").with_extension("txt"),
            ],
            ..Interface::default()
        })
    }
    fn run(&self, p: &NumberParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        count(ctx);
        std::fs::write(ctx.output_path("value")?, p.value.to_string())?;
        ctx.emit(MetricRow::new("value", p.value));
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SumParams {
    #[serde(default)]
    scale: Option<f64>,
}

struct Sum;
impl Node for Sum {
    type Params = SumParams;
    const KIND: &'static str = "sum";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "adds its inputs";
    fn interface(&self, _: &SumParams) -> Result<Interface, ParamError> {
        Ok(Interface {
            inputs: vec![InputPort::many("values", "numbers to add")],
            outputs: vec![OutputPort::published("total", "the sum").with_extension("txt")],
            ..Interface::default()
        })
    }
    fn run(&self, p: &SumParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        count(ctx);
        let mut total = 0.0;
        for input in ctx.input("values") {
            let text = std::fs::read_to_string(&input.path)?;
            total += text.trim().parse::<f64>().map_err(NodeError::msg)?;
        }
        total *= p.scale.unwrap_or(1.0);
        std::fs::write(ctx.output_path("total")?, total.to_string())?;
        ctx.emit(MetricRow::new("total", total).dim("n", ctx.input("values").len()));
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

struct Fail;
impl Node for Fail {
    type Params = NoParams;
    const KIND: &'static str = "fail";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "always fails";
    fn interface(&self, _: &NoParams) -> Result<Interface, ParamError> {
        Ok(Interface {
            inputs: vec![InputPort::optional("value", "ignored")],
            outputs: vec![OutputPort::published("value", "never written")],
            ..Interface::default()
        })
    }
    fn run(&self, _: &NoParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        count(ctx);
        Err(NodeError::msg("deliberate failure"))
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Number).register(Sum).register(Fail);
    r
}

fn graph(text: &str, set: &[&str]) -> Result<lmgeo_dag::Graph, String> {
    let overrides = Overrides {
        set: set.iter().map(|s| s.to_string()).collect(),
        env: false,
    };
    let experiment = lmgeo_dag::spec::parse(Path::new("exp.toml"), text, &overrides)
        .map_err(|e| e.to_string())?;
    lmgeo_dag::build(experiment, &registry()).map_err(|e| e.to_string())
}

fn executions_of(prefix: &str) -> BTreeMap<String, usize> {
    EXECUTIONS
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

const SWEEP: &str = r#"
name = "sweep"
[grid]
seed = [1, 2]

[nodes.a]
kind = "number"
value = "${seed}"
grid = { tag = ["x", "y"] }

[nodes.per_seed]
kind = "sum"
inputs = { values = "a.value[tag]" }

[nodes.all]
kind = "sum"
inputs = { values = "per_seed.total[*]" }
"#;

#[test]
fn sweeps_expand_and_collect() {
    let g = graph(SWEEP, &[]).unwrap();
    let ids: Vec<&str> = g.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "a[seed=1,tag=x]",
            "a[seed=1,tag=y]",
            "a[seed=2,tag=x]",
            "a[seed=2,tag=y]",
            "per_seed[seed=1]",
            "per_seed[seed=2]",
            "all"
        ]
    );
    let per_seed_2 = &g.instances[5];
    let bound: Vec<usize> = per_seed_2.inputs[0].1.iter().map(|b| b.instance).collect();
    assert_eq!(bound, [2, 3]);
    assert_eq!(g.instances[6].inputs[0].1.len(), 2);
}

#[test]
fn second_run_is_cached_and_a_change_reruns_only_descendants() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let text = SWEEP
        .replace("name = \"sweep\"", "name = \"rerun\"")
        .replace("nodes.a]", "nodes.ra]")
        .replace("\"a.value[tag]\"", "\"ra.value[tag]\"");
    let g = graph(&text, &[]).unwrap();
    let first = lmgeo_dag::run(&g, &store, &RunOptions::default(), &Silent).unwrap();
    assert_eq!(first.count(|s| *s == Status::Ran), 7);
    // 1+1 + 2+2 ... per seed s: s + s; all: 2 + 4 = 6
    let total = first.outcomes[6].metrics[0].value;
    assert_eq!(total, 6.0);

    let second = lmgeo_dag::run(&g, &store, &RunOptions::default(), &Silent).unwrap();
    assert_eq!(second.count(|s| *s == Status::Cached), 7);

    let changed = graph(&text, &["per_seed.scale=2"]).unwrap();
    let plan = lmgeo_dag::plan(&changed, &store);
    let will_run: Vec<&str> = plan
        .iter()
        .filter(|e| !matches!(e.status, lmgeo_dag::PlanStatus::Cached))
        .map(|e| e.instance.as_str())
        .collect();
    assert_eq!(will_run, ["per_seed[seed=1]", "per_seed[seed=2]", "all"]);
    let third = lmgeo_dag::run(&changed, &store, &RunOptions::default(), &Silent).unwrap();
    let ran: Vec<&str> = changed
        .instances
        .iter()
        .zip(&third.outcomes)
        .filter(|(_, o)| o.status == Status::Ran)
        .map(|(i, _)| i.id.as_str())
        .collect();
    assert_eq!(ran, ["per_seed[seed=1]", "per_seed[seed=2]", "all"]);
    assert_eq!(third.outcomes[6].metrics[0].value, 12.0);
}

#[test]
fn identical_output_stops_invalidation() {
    // Changing `tag` on a number node changes its key but not its output
    // bytes; the consumer's key depends on the bytes, so it stays cached.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let text = r#"
name = "cutoff"
[nodes.n]
kind = "number"
value = 3
tag = "first"
[nodes.s]
kind = "sum"
inputs = { values = "n.value" }
"#;
    let g = graph(text, &[]).unwrap();
    lmgeo_dag::run(&g, &store, &RunOptions::default(), &Silent).unwrap();
    let g2 = graph(text, &["n.tag=second"]).unwrap();
    let report = lmgeo_dag::run(&g2, &store, &RunOptions::default(), &Silent).unwrap();
    assert_eq!(report.outcomes[0].status, Status::Ran);
    // The consumer also sees the upstream's parameters, so it reruns: it
    // could read them, and a key must cover everything a node can read.
    assert_eq!(report.outcomes[1].status, Status::Ran);
}

#[test]
fn a_failure_blocks_descendants_and_the_rest_continue() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let text = r#"
name = "failing"
[nodes.ok]
kind = "number"
value = 1
[nodes.bad]
kind = "fail"
[nodes.after_bad]
kind = "sum"
inputs = { values = "bad.value" }
[nodes.after_ok]
kind = "sum"
inputs = { values = "ok.value" }
"#;
    let g = graph(text, &[]).unwrap();
    let report = lmgeo_dag::run(&g, &store, &RunOptions::default(), &Silent).unwrap();
    let by_id: BTreeMap<&str, &Status> = g
        .instances
        .iter()
        .map(|i| i.id.as_str())
        .zip(report.outcomes.iter().map(|o| &o.status))
        .collect();
    assert_eq!(by_id["ok"], &Status::Ran);
    assert_eq!(by_id["after_ok"], &Status::Ran);
    assert_eq!(by_id["bad"], &Status::Failed("deliberate failure".into()));
    assert_eq!(
        by_id["after_bad"],
        &Status::Blocked {
            upstream: "bad".into()
        }
    );
    assert!(!report.all_succeeded());
}

#[test]
fn fail_fast_skips_what_has_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let text = r#"
name = "failfast"
[nodes.bad]
kind = "fail"
[nodes.later]
kind = "number"
value = 5
[nodes.after_later]
kind = "sum"
inputs = { values = "later.value" }
"#;
    let g = graph(text, &[]).unwrap();
    let options = RunOptions {
        jobs: 1,
        keep_going: false,
        ..RunOptions::default()
    };
    let report = lmgeo_dag::run(&g, &store, &options, &Silent).unwrap();
    assert!(matches!(report.outcomes[0].status, Status::Failed(_)));
    assert_eq!(report.outcomes[1].status, Status::Skipped);
    assert_eq!(report.outcomes[2].status, Status::Skipped);
}

#[test]
fn a_corrupt_blob_is_detected_and_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let text = r#"
name = "corrupt"
[nodes.cn]
kind = "number"
value = 4
[nodes.cs]
kind = "sum"
inputs = { values = "cn.value" }
"#;
    let g = graph(text, &[]).unwrap();
    let first = lmgeo_dag::run(&g, &store, &RunOptions::default(), &Silent).unwrap();
    let blob = &first.outcomes[0].action.as_ref().unwrap().outputs["value"];
    // Flip one byte of the upstream's output.
    let path = store.blob_path(&blob.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    // Invalidate the consumer too, so it has to read the corrupt input.
    let sum_key = first.outcomes[1].key.clone().unwrap();
    store.invalidate(&sum_key);

    let before = executions_of("cn");
    let second = lmgeo_dag::run(&g, &store, &RunOptions::default(), &Silent).unwrap();
    assert_eq!(
        second.outcomes[0].status,
        Status::Ran,
        "the corrupt upstream is recomputed"
    );
    assert_eq!(second.outcomes[1].status, Status::Ran);
    assert_eq!(second.outcomes[1].metrics[0].value, 4.0);
    assert_eq!(executions_of("cn")["cn"], before["cn"] + 1);
    assert!(store.read_verified(blob).is_ok(), "the blob is whole again");
}

#[test]
fn a_corrupt_metrics_blob_of_a_hit_means_a_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let text = "name = \"corrupt-metrics\"\n[nodes.mn]\nkind = \"number\"\nvalue = 7\n";
    let g = graph(text, &[]).unwrap();
    let first = lmgeo_dag::run(&g, &store, &RunOptions::default(), &Silent).unwrap();
    let blob = &first.outcomes[0].action.as_ref().unwrap().outputs["metrics"];
    let path = store.blob_path(&blob.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    let second = lmgeo_dag::run(&g, &store, &RunOptions::default(), &Silent).unwrap();
    assert_eq!(second.outcomes[0].status, Status::Ran);
    assert_eq!(second.outcomes[0].metrics[0].value, 7.0);
}

#[test]
fn concurrent_runs_compute_each_node_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let text = r#"
name = "concurrent"
[nodes.conc_n]
kind = "number"
value = 1
grid = { tag = ["a", "b", "c", "d", "e", "f"] }
[nodes.conc_t]
kind = "sum"
inputs = { values = "conc_n.value[*]" }
"#;
    let g = graph(text, &[]).unwrap();
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                let report = lmgeo_dag::run(&g, &store, &RunOptions::default(), &Silent).unwrap();
                assert!(report.all_succeeded());
                assert_eq!(report.outcomes.last().unwrap().metrics[0].value, 6.0);
            });
        }
    });
    let counts = executions_of("conc_");
    assert_eq!(counts.len(), 7);
    assert!(counts.values().all(|&c| c == 1), "{counts:?}");
}

#[test]
fn validation_errors_are_located() {
    let cases: &[(&str, &str)] = &[
        (
            "name = \"v\"\n[nodes.a]\nkind = \"numbr\"\n",
            "exp.toml:3:8: unknown node kind `numbr`",
        ),
        (
            "name = \"v\"\n[nodes.a]\nkind = \"number\"\nvalue = 1\nvalu = 2\n",
            "exp.toml:5:1: node `a` (number): unknown field `valu`",
        ),
        (
            "name = \"v\"\n[nodes.a]\nkind = \"number\"\nvalue = \"big\"\n",
            "exp.toml:4:9: node `a` (number): invalid type: string \"big\"",
        ),
        (
            "name = \"v\"\n[nodes.a]\nkind = \"number\"\nvalue = inf\n",
            "exp.toml:4:9: node `a` (number): `value` must be finite",
        ),
        (
            "name = \"v\"\n[nodes.s]\nkind = \"sum\"\ninputs = { values = \"b.total\" }\n",
            "exp.toml:4:21: input `values` of node `s` refers to an unknown node `b`",
        ),
        (
            "name = \"v\"\n[nodes.s]\nkind = \"sum\"\ninputs = { values = \"t.total\" }\n[nodes.t]\nkind = \"sum\"\ninputs = { values = \"s.total\" }\n",
            "form a cycle",
        ),
        (
            "name = \"v\"\n[nodes.a]\nkind = \"number\"\nvalue = 1\n[nodes.s]\nkind = \"sum\"\ninputs = { values = \"a.totl\" }\n",
            "exp.toml:7:21: node `a` has no output `totl`",
        ),
        (
            "name = \"v\"\n[nodes.a]\nkind = \"number\"\nvalue = \"${seed}\"\n",
            "exp.toml:4:9: `${seed}` is not an experiment axis",
        ),
    ];
    for (text, expected) in cases {
        let err = graph(text, &[])
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{text}"));
        assert!(err.contains(expected), "expected `{expected}` in:\n{err}");
    }
}
