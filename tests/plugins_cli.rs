//! Out-of-process plugins through the `lmgeo` binary: the Python example
//! over extracted embeddings (swept, cached, rerun on edit, its rows beside
//! the built-in probes'), the shell example, the `command` kind, every
//! failure mode with its message and an untouched store, and manifest and
//! parameter errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Run;
use lmgeo_tables::{Cell, EmbeddingReader, Record};

fn lmgeo_with_plugins(plugin_path: &Path) -> Command {
    let mut cmd = common::lmgeo();
    cmd.env("LMGEO_PLUGIN_PATH", plugin_path);
    cmd
}

fn run_with_plugins(
    plugin_path: &Path,
    file: &Path,
    store: &Path,
    out: &Path,
    extra: &[&str],
) -> Run {
    let output = common::run_args(
        &mut lmgeo_with_plugins(plugin_path),
        file,
        store,
        out,
        extra,
    )
    .output()
    .expect("lmgeo runs");
    Run { output }
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Instance ids whose status in run.json is `status`.
fn with_status(out: &Path, status: &str) -> Vec<String> {
    common::statuses(out)
        .into_iter()
        .filter(|(_, s)| s == status)
        .map(|(n, _)| n)
        .collect()
}

/// run.json's status line of one instance.
fn status_of(out: &Path, node: &str) -> String {
    common::statuses(out)
        .into_iter()
        .find(|(n, _)| n == node)
        .unwrap_or_else(|| panic!("no node {node} in run.json"))
        .1
}

/// The stored blob of an instance's output, found through the run record
/// and the store's action record (as a user could, by hand).
fn stored_output(out: &Path, store: &Path, node: &str, output: &str) -> PathBuf {
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let key = run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node)
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let action: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            store
                .join("actions")
                .join(&key[..2])
                .join(format!("{key}.json")),
        )
        .unwrap(),
    )
    .unwrap();
    let digest = action["outputs"][output]["digest"].as_str().unwrap();
    store.join("objects").join(&digest[..2]).join(digest)
}

fn text(record: &Record, column: &str) -> Option<String> {
    record
        .iter()
        .find(|(k, _)| k == column)
        .and_then(|(_, v)| match v {
            Cell::Str(s) => Some(s.clone()),
            _ => None,
        })
}

fn number(record: &Record, column: &str) -> Option<f64> {
    record
        .iter()
        .find(|(k, _)| k == column)
        .and_then(|(_, v)| match v {
            Cell::Float(x) => Some(*x),
            Cell::Int(i) => Some(*i as f64),
            _ => None,
        })
}

/// Mean cosine over all pairs of distinct nonzero rows, pair by pair: the
/// definition, not the plugin's one-pass identity.
fn mean_pairwise_cosine(rows: &[Vec<f64>], center: bool) -> f64 {
    let mut rows = rows.to_vec();
    if center {
        let n = rows.len() as f64;
        let d = rows[0].len();
        let mean: Vec<f64> = (0..d)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        for r in &mut rows {
            for (v, m) in r.iter_mut().zip(&mean) {
                *v -= m;
            }
        }
    }
    let norm = |r: &Vec<f64>| r.iter().map(|v| v * v).sum::<f64>().sqrt();
    let rows: Vec<&Vec<f64>> = rows.iter().filter(|r| norm(r) > 0.0).collect();
    let mut sum = 0.0;
    let mut pairs = 0usize;
    for i in 0..rows.len() {
        for j in i + 1..rows.len() {
            let dot: f64 = rows[i].iter().zip(rows[j]).map(|(a, b)| a * b).sum();
            sum += dot / (norm(rows[i]) * norm(rows[j]));
            pairs += 1;
        }
    }
    sum / pairs as f64
}

/// The example's venv (examples/plugins/.venv), made or reused by its own
/// setup script, once per test process (tests run on parallel threads).
fn example_venv() -> PathBuf {
    static VENV: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    VENV.get_or_init(|| {
        let root = common::repo_root();
        let status = Command::new("bash")
            .arg(root.join("examples/plugins/setup-venv.sh"))
            .status()
            .expect("bash runs");
        assert!(
            status.success(),
            "examples/plugins/setup-venv.sh failed (it needs python3 with venv and pip, and PyPI)"
        );
        root.join("examples/plugins/.venv")
    })
    .clone()
}

const EXTRACT_AND_PROBE: &str = r#"
name = "plugin-e2e"
[nodes.texts]
kind = "corpus"
format = "jsonl"
path = "tests/fixtures/tiny-corpus.jsonl"
name = "tiny"
id_field = "id"

[nodes.hidden]
kind = "extract"
inputs = { texts = "texts.texts" }
model = "tests/fixtures/tiny-neox"
final_norm = true

[nodes.aniso]
kind = "anisotropy"
inputs = { embeddings = "hidden.embeddings" }
grid = { center = [false, true] }

[nodes.entropy]
kind = "entropy"
inputs = { embeddings = "hidden.embeddings" }
"#;

#[test]
fn python_plugin_over_extracted_embeddings_is_swept_cached_and_rerun_when_edited() {
    let venv = example_venv();
    let tmp = tempfile::tempdir().unwrap();
    // A copy of the example, so that editing its script touches nothing in
    // the repository; its venv is shared through a link.
    let plugins = tmp.path().join("plugins");
    let plugin = plugins.join("anisotropy");
    std::fs::create_dir_all(&plugin).unwrap();
    let example = common::repo_root().join("examples/plugins/anisotropy");
    for file in ["plugin.toml", "probe.py"] {
        std::fs::copy(example.join(file), plugin.join(file)).unwrap();
    }
    std::os::unix::fs::symlink(&venv, plugins.join(".venv")).unwrap();

    let file = tmp.path().join("e2e.toml");
    std::fs::write(&file, EXTRACT_AND_PROBE).unwrap();
    let store = tmp.path().join("store");
    let out = tmp.path().join("out");

    let first = run_with_plugins(&plugins, &file, &store, &out, &[]);
    assert!(first.success(), "{}", first.stderr());
    assert_eq!(first.summary()["ran"], 5, "{}", first.stderr());

    // The plugin's per-text values against the definition, computed here
    // from the stored embedding table.
    let table = stored_output(&out, &store, "hidden", "embeddings");
    let matrices: Vec<_> = EmbeddingReader::open(&table)
        .unwrap()
        .map(|m| m.unwrap())
        .collect();
    assert!(matrices.len() >= 6 * 4, "{} matrices", matrices.len());
    let results = lmgeo_tables::read_records(&out.join("results.parquet")).unwrap();
    for center in [false, true] {
        let node = format!("aniso[center={center}]");
        let per_text =
            lmgeo_tables::read_records(&out.join("nodes").join(&node).join("per_text.parquet"))
                .unwrap();
        assert_eq!(per_text.len(), matrices.len(), "{node}");
        let mut by_layer: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
        for m in &matrices {
            let rows: Vec<Vec<f64>> = (0..m.rows)
                .map(|i| m.row(i).iter().map(|&v| f64::from(v)).collect())
                .collect();
            let expected = mean_pairwise_cosine(&rows, center);
            let row = per_text
                .iter()
                .find(|r| {
                    text(r, "text_id").as_deref() == Some(m.text_id.as_str())
                        && number(r, "layer") == Some(f64::from(m.layer))
                })
                .unwrap_or_else(|| panic!("{node}: no row for {} layer {}", m.text_id, m.layer));
            let got = number(row, "anisotropy").unwrap();
            assert!(
                (got - expected).abs() < 1e-9,
                "{node} {} layer {}: {got} vs {expected}",
                m.text_id,
                m.layer
            );
            assert_eq!(number(row, "tokens"), Some(m.rows as f64));
            by_layer
                .entry(i64::from(m.layer))
                .or_default()
                .push(expected);
        }
        // Its metric rows sit in results.parquet with the sweep coordinate.
        for (layer, values) in by_layer {
            let expected = values.iter().sum::<f64>() / values.len() as f64;
            let row = results
                .iter()
                .find(|r| {
                    text(r, "node").as_deref() == Some(node.as_str())
                        && text(r, "metric").as_deref() == Some("anisotropy")
                        && text(r, "stat").as_deref() == Some("mean")
                        && number(r, "layer") == Some(layer as f64)
                })
                .unwrap_or_else(|| panic!("no anisotropy mean for {node} layer {layer}"));
            assert_eq!(text(row, "kind").as_deref(), Some("anisotropy"));
            assert!(
                row.contains(&("center".to_string(), Cell::Bool(center))),
                "{row:?}"
            );
            assert!((number(row, "value").unwrap() - expected).abs() < 1e-9);
        }
    }
    // ... beside the built-in probe's rows, in the same table.
    assert!(
        results
            .iter()
            .any(|r| text(r, "kind").as_deref() == Some("entropy")
                && text(r, "metric").as_deref() == Some("effective_rank")),
        "no entropy rows"
    );

    let second = run_with_plugins(&plugins, &file, &store, &out, &[]);
    assert!(second.success(), "{}", second.stderr());
    assert_eq!(second.summary()["ran"], 0);
    assert_eq!(second.summary()["cached"], 5);

    // An edit to the script reruns exactly the plugin's nodes.
    let script = plugin.join("probe.py");
    let mut source = std::fs::read_to_string(&script).unwrap();
    source.push_str("\n# an edit that changes no result\n");
    std::fs::write(&script, source).unwrap();
    let explain = lmgeo_with_plugins(&plugins)
        .arg("--store")
        .arg(&store)
        .args(["explain", file.to_str().unwrap(), "aniso[center=true]"])
        .output()
        .unwrap();
    let explained = String::from_utf8_lossy(&explain.stdout);
    assert!(
        explained.contains("probe.py changed (content digest"),
        "{explained}"
    );
    let third = run_with_plugins(&plugins, &file, &store, &out, &[]);
    assert!(third.success(), "{}", third.stderr());
    assert_eq!(
        with_status(&out, "ran"),
        ["aniso[center=false]", "aniso[center=true]"]
    );
    assert_eq!(third.summary()["cached"], 3);

    // So does a new declared version, and `plan` says why.
    let manifest = plugin.join("plugin.toml");
    let declared = std::fs::read_to_string(&manifest).unwrap();
    assert!(declared.contains("version = \"1.0.0\""));
    std::fs::write(
        &manifest,
        declared.replace("version = \"1.0.0\"", "version = \"1.0.1\""),
    )
    .unwrap();
    let plan = lmgeo_with_plugins(&plugins)
        .arg("--store")
        .arg(&store)
        .arg("plan")
        .arg(&file)
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("environment `plugin_version` changed: 1.0.0 → 1.0.1"),
        "{plan}"
    );
    assert!(plan.contains("5 nodes: 3 cached, 2 will run"), "{plan}");
}

#[test]
fn shell_plugin_reports_the_size_of_its_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    // A search path entry may be a plugin folder itself.
    let plugin = common::repo_root().join("examples/plugins/table-size");
    let file = tmp.path().join("sizes.toml");
    std::fs::write(
        &file,
        r#"
name = "sizes"
[nodes.data]
kind = "synthetic_matrix"
rows = 40
cols = 16
grid = { seed = [1, 2, 3] }

[nodes.size]
kind = "table_size"
inputs = { tables = "data.embeddings[*]" }
unit = "KiB"
"#,
    )
    .unwrap();
    // Relative store and output paths, as in everyday use: the plugin runs
    // in its own folder and must still find its inputs.
    let run = |extra: &[&str]| {
        let output = lmgeo_with_plugins(&plugin)
            .current_dir(tmp.path())
            .args([
                "--store",
                "cache",
                "run",
                "sizes.toml",
                "--json",
                "--out",
                "out",
            ])
            .args(extra)
            .output()
            .unwrap();
        Run { output }
    };
    let store = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let first = run(&[]);
    assert!(first.success(), "{}", first.stderr());
    let results = lmgeo_tables::read_records(&out.join("results.parquet")).unwrap();
    for (index, seed) in [1, 2, 3].iter().enumerate() {
        let blob = stored_output(&out, &store, &format!("data[seed={seed}]"), "embeddings");
        let expected = std::fs::metadata(&blob).unwrap().len() as f64 / 1024.0;
        let row = results
            .iter()
            .find(|r| {
                text(r, "node").as_deref() == Some("size")
                    && number(r, "input") == Some(index as f64)
            })
            .unwrap_or_else(|| panic!("no size row for input {index}"));
        assert_eq!(text(row, "metric").as_deref(), Some("size"));
        assert_eq!(text(row, "unit").as_deref(), Some("KiB"));
        let got = number(row, "value").unwrap();
        assert!(
            (got - expected).abs() < 1e-9 * expected,
            "{got} vs {expected}"
        );
    }

    let bad_unit = run(&["--set", "size.unit=GiB"]);
    assert_eq!(bad_unit.code(), Some(2));
    assert!(
        bad_unit.stderr().contains(
            "node `size` (table_size): `unit` is \"GiB\", which is not one of \"B\", \"KiB\", \"MiB\""
        ),
        "{}",
        bad_unit.stderr()
    );
}

/// A failing (or not) shell plugin reading one embedding table and
/// promising a table with `text_id` and a float `score`; no `timeout` line
/// when `timeout` is empty.
fn shell_plugin(plugins: &Path, name: &str, script: &str, timeout: &str) {
    let dir = plugins.join(name);
    let timeout = if timeout.is_empty() {
        String::new()
    } else {
        format!("timeout = {timeout}")
    };
    write_executable(&dir.join("run.sh"), &format!("#!/bin/sh\n{script}\n"));
    std::fs::write(
        dir.join("plugin.toml"),
        format!(
            r#"
name = "{name}"
version = "1"
command = ["./run.sh"]
{timeout}
[inputs.embeddings]
[outputs.per_text]
columns = {{ text_id = "string", score = "float" }}
"#
        ),
    )
    .unwrap();
}

fn table(path: &Path, columns: &[(&str, Cell)]) {
    let record: Record = columns
        .iter()
        .map(|(n, c)| (n.to_string(), c.clone()))
        .collect();
    let mut frame = lmgeo_tables::frame_from_records(&[record]).unwrap();
    lmgeo_tables::write_parquet(&mut frame, path).unwrap();
}

#[test]
fn every_plugin_failure_is_named_and_leaves_nothing_in_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    let copy = "cp ./table.parquet \"$LMGEO_OUTPUT_PER_TEXT\"";
    shell_plugin(
        &plugins,
        "crashy",
        "echo \"reading $LMGEO_INPUT_EMBEDDINGS\" >&2\necho 'ValueError: something broke' >&2\nexit 3",
        "30",
    );
    shell_plugin(
        &plugins,
        "sleepy",
        "sleep 300 &\necho $! > ./child.pid\nwait",
        "1",
    );
    // No timeout of its own: LMGEO_PLUGIN_TIMEOUT applies.
    shell_plugin(&plugins, "drowsy", "sleep 300", "");
    shell_plugin(&plugins, "silent", "exit 0", "30");
    shell_plugin(
        &plugins,
        "garbled",
        "echo 'text_id,score' > \"$LMGEO_OUTPUT_PER_TEXT\"",
        "30",
    );
    shell_plugin(&plugins, "short", copy, "30");
    shell_plugin(&plugins, "mistyped", copy, "30");
    shell_plugin(
        &plugins,
        "partial",
        "echo '[{\"metric\": \"m\", \"value\": 1}]' > \"$LMGEO_OUTPUT_DIR/metrics.json\"",
        "30",
    );
    shell_plugin(&plugins, "fine", copy, "30");
    table(
        &plugins.join("short/table.parquet"),
        &[("text_id", Cell::from("a")), ("value", Cell::Float(1.0))],
    );
    table(
        &plugins.join("mistyped/table.parquet"),
        &[("text_id", Cell::from("a")), ("score", Cell::from("high"))],
    );
    table(
        &plugins.join("fine/table.parquet"),
        &[("text_id", Cell::from("a")), ("score", Cell::Float(0.5))],
    );

    let names = [
        "crashy", "sleepy", "drowsy", "silent", "garbled", "short", "mistyped", "partial", "fine",
    ];
    let mut experiment =
        "name = \"failures\"\n[nodes.data]\nkind = \"synthetic_matrix\"\nrows = 4\ncols = 3\n"
            .to_string();
    for name in names {
        experiment.push_str(&format!(
            "[nodes.{name}]\nkind = \"{name}\"\ninputs = {{ embeddings = \"data.embeddings\" }}\n"
        ));
    }
    let file = tmp.path().join("failures.toml");
    std::fs::write(&file, experiment).unwrap();
    let store = tmp.path().join("store");
    let out = tmp.path().join("out");

    let started = Instant::now();
    let run = Run {
        output: lmgeo_with_plugins(&plugins)
            .env("LMGEO_PLUGIN_TIMEOUT", "1")
            .arg("--store")
            .arg(&store)
            .arg("run")
            .arg(&file)
            .arg("--json")
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap(),
    };
    let elapsed = started.elapsed();
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    assert!(
        elapsed < Duration::from_secs(60),
        "a 1 s timeout took {elapsed:?}"
    );
    assert_eq!(run.summary()["failed"], 8, "{}", run.stderr());
    assert_eq!(with_status(&out, "ran"), ["data", "fine"]);

    let manifest = |name: &str| {
        format!(
            "plugin `{name}` ({})",
            plugins.join(name).join("plugin.toml").display()
        )
    };
    let expectations = [
        (
            "crashy",
            format!(
                "{} exited with status 3; the end of its stderr:",
                manifest("crashy")
            ),
        ),
        ("crashy", "| ValueError: something broke".to_string()),
        (
            "sleepy",
            format!(
                "{} timed out after 1 s and was killed with its process group",
                manifest("sleepy")
            ),
        ),
        (
            "drowsy",
            format!(
                "{} timed out after 1 s and was killed with its process group",
                manifest("drowsy")
            ),
        ),
        (
            "silent",
            format!(
                "{} finished but wrote nothing: expected per_text.parquet in its output folder",
                manifest("silent")
            ),
        ),
        (
            "garbled",
            format!(
                "{}: output `per_text` is not a readable Parquet file",
                manifest("garbled")
            ),
        ),
        (
            "short",
            format!(
                "{}: output `per_text` lacks the declared column `score` (it has: text_id, value)",
                manifest("short")
            ),
        ),
        (
            "mistyped",
            format!(
                "{}: output `per_text` column `score` is string (",
                manifest("mistyped")
            ),
        ),
        ("mistyped", "), but float is declared".to_string()),
        (
            "partial",
            format!(
                "{} did not write its declared output `per_text`",
                manifest("partial")
            ),
        ),
    ];
    let stderr = run.stderr();
    for (node, message) in &expectations {
        let status = status_of(&out, node);
        assert!(status.starts_with("failed: "), "{node}: {status}");
        assert!(status.contains(message.as_str()), "{node}: {status}");
        assert!(
            stderr.contains(message.as_str()),
            "{node} not in:\n{stderr}"
        );
    }

    // The timed-out plugin's own child was killed with it.
    let pid = std::fs::read_to_string(plugins.join("sleepy/child.pid")).unwrap();
    assert!(
        process_ended(&pid),
        "the plugin's child {} is still running",
        pid.trim()
    );

    // Only `data` and `fine` reached the store: two actions, every blob one
    // of theirs, no leftovers in tmp/.
    let actions = common::snapshot(&store.join("actions"));
    assert_eq!(
        actions.len(),
        2,
        "{:?}",
        actions.iter().map(|a| &a.0).collect::<Vec<_>>()
    );
    let mut referenced: Vec<String> = Vec::new();
    for (_, bytes) in &actions {
        let action: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert!(["data", "fine"].contains(&action["node"].as_str().unwrap()));
        for blob in action["outputs"].as_object().unwrap().values() {
            referenced.push(blob["digest"].as_str().unwrap().to_string());
        }
    }
    for (path, _) in common::snapshot(&store.join("objects")) {
        let digest = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            referenced.contains(&digest),
            "stray blob {}",
            path.display()
        );
    }
    assert!(
        common::snapshot(&store.join("tmp")).is_empty(),
        "leftovers in the store's tmp/"
    );
    let plan = lmgeo_with_plugins(&plugins)
        .arg("--store")
        .arg(&store)
        .arg("plan")
        .arg(&file)
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("10 nodes: 2 cached, 8 will run, 0 blocked"),
        "{plan}"
    );
}

#[test]
fn command_kind_runs_a_script_named_in_the_experiment() {
    let tmp = tempfile::tempdir().unwrap();
    let keep = tmp.path().join("keep");
    std::fs::create_dir_all(&keep).unwrap();
    table(
        &keep.join("fixture.parquet"),
        &[("text_id", Cell::from("a")), ("score", Cell::Float(0.5))],
    );
    let script = tmp.path().join("probe.sh");
    write_executable(
        &script,
        r#"#!/bin/sh
set -eu
cp "$LMGEO_REQUEST" "$PLUGIN_TEST_KEEP/request-$LMGEO_PARAM_TAG.json"
cp "$LMGEO_INPUT_VALUES" "$PLUGIN_TEST_KEEP/values-$LMGEO_PARAM_TAG.parquet"
cat > "$PLUGIN_TEST_KEEP/stdin-$LMGEO_PARAM_TAG.json"
cp "$PLUGIN_TEST_KEEP/fixture.parquet" "$LMGEO_OUTPUT_PER_TEXT"
printf '[{"metric": "echo", "value": %s, "tag": "%s"}]' "$LMGEO_PARAM_SCALE" "$LMGEO_PARAM_TAG" > "$LMGEO_OUTPUT_DIR/metrics.json"
"#,
    );
    let file = tmp.path().join("command.toml");
    std::fs::write(
        &file,
        format!(
            r#"
name = "command"
[grid]
scale = [2, 3]

[nodes.data]
kind = "synthetic_matrix"
rows = 5
cols = 4

[nodes.run]
kind = "command"
command = ["sh", "{}"]
version = 1
ports = {{ values = "one", table = "one" }}
inputs = {{ values = "data.metrics", table = "data.embeddings" }}
outputs.per_text = {{ columns = {{ text_id = "string", score = "float" }} }}
timeout = 30
params = {{ scale = "${{scale}}", tag = "t${{scale}}" }}
"#,
            script.display()
        ),
    )
    .unwrap();
    let store = tmp.path().join("store");
    let out = tmp.path().join("out");
    let run = |extra: &[&str]| {
        let output = common::lmgeo()
            .env("PLUGIN_TEST_KEEP", &keep)
            .arg("--store")
            .arg(&store)
            .arg("run")
            .arg(&file)
            .arg("--json")
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        Run { output }
    };
    let first = run(&[]);
    assert!(first.success(), "{}", first.stderr());
    assert_eq!(first.summary()["ran"], 3);

    let request: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keep.join("request-t2.json")).unwrap())
            .unwrap();
    let stdin = std::fs::read_to_string(keep.join("stdin-t2.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdin).unwrap(),
        request,
        "the request on stdin is the request file"
    );
    assert_eq!(request["protocol"], 1);
    assert_eq!(request["node"], "run[scale=2]");
    assert_eq!(request["coords"], serde_json::json!({ "scale": 2 }));
    assert_eq!(
        request["params"],
        serde_json::json!({ "scale": 2, "tag": "t2" })
    );
    assert_eq!(request["plugin"]["version"], "1");
    let table_input = &request["inputs"]["table"][0];
    assert_eq!(table_input["node"], "data");
    assert_eq!(table_input["output"], "embeddings");
    assert_eq!(table_input["params"]["rows"], 5);
    assert!(
        request["outputs"]["per_text"]
            .as_str()
            .unwrap()
            .ends_with("per_text.parquet")
    );

    // Upstream metrics arrive as a tidy Parquet table.
    let values = lmgeo_tables::read_records(&keep.join("values-t2.parquet")).unwrap();
    let metric = |name: &str| {
        values
            .iter()
            .find(|r| text(r, "metric").as_deref() == Some(name))
            .and_then(|r| number(r, "value"))
    };
    assert_eq!(metric("rows"), Some(5.0));
    assert_eq!(metric("cols"), Some(4.0));

    let results = lmgeo_tables::read_records(&out.join("results.parquet")).unwrap();
    for (scale, tag) in [(2.0, "t2"), (3.0, "t3")] {
        assert!(
            results
                .iter()
                .any(|r| text(r, "metric").as_deref() == Some("echo")
                    && number(r, "value") == Some(scale)
                    && text(r, "tag").as_deref() == Some(tag)
                    && text(r, "kind").as_deref() == Some("command")),
            "no echo row for {tag}"
        );
    }
    assert!(out.join("nodes/run[scale=3]/per_text.parquet").is_file());

    // The timeout is not part of the key; the script is.
    let longer = run(&["--set", "run.timeout=60"]);
    assert!(longer.success(), "{}", longer.stderr());
    assert_eq!(longer.summary()["cached"], 3);
    let mut source = std::fs::read_to_string(&script).unwrap();
    source.push_str("# edited\n");
    std::fs::write(&script, source).unwrap();
    let edited = run(&[]);
    assert!(edited.success(), "{}", edited.stderr());
    assert_eq!(with_status(&out, "ran"), ["run[scale=2]", "run[scale=3]"]);
}

#[test]
fn manifests_are_found_and_their_mistakes_stop_startup_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();

    // ./plugins is searched from the working directory.
    let project = tmp.path().join("project");
    std::fs::create_dir_all(project.join("plugins/.venv")).unwrap();
    shell_plugin(&project.join("plugins"), "local_probe", "exit 0", "5");
    let kinds = common::lmgeo()
        .current_dir(&project)
        .arg("kinds")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&kinds.stdout);
    assert!(
        kinds.status.success(),
        "{}",
        String::from_utf8_lossy(&kinds.stderr)
    );
    assert!(listed.contains("local_probe"), "{listed}");
    assert!(listed.contains("command "), "{listed}");

    let broken = tmp.path().join("broken");
    let write = |name: &str, text: &str| {
        let dir = broken.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("plugin.toml"), text).unwrap();
        dir.join("plugin.toml")
    };
    let startup = |path: &Path| {
        let output = lmgeo_with_plugins(path).arg("kinds").output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };

    let typo = write(
        "typo",
        "name = \"typo\"\nversion = \"1\"\ncomand = [\"./x.sh\"]\n",
    );
    let (code, stderr) = startup(&broken);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("error: plugin manifest {}:", typo.display())),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `comand`"), "{stderr}");
    std::fs::remove_dir_all(broken.join("typo")).unwrap();

    let clash = write(
        "entropy",
        "name = \"entropy\"\nversion = \"1\"\ncommand = [\"./x.sh\"]\n",
    );
    let (code, stderr) = startup(&broken);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "plugin manifest {}: plugin `entropy` has the name of a kind this binary already has",
            clash.display()
        )),
        "{stderr}"
    );
    std::fs::remove_dir_all(broken.join("entropy")).unwrap();

    write(
        "a",
        "name = \"twice\"\nversion = \"1\"\ncommand = [\"./x.sh\"]\n",
    );
    let second = write(
        "b",
        "name = \"twice\"\nversion = \"1\"\ncommand = [\"./x.sh\"]\n",
    );
    let (code, stderr) = startup(&broken);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "plugin manifest {}: plugin `twice` is also declared by",
            second.display()
        )),
        "{stderr}"
    );

    let (code, stderr) = startup(&tmp.path().join("nowhere"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("LMGEO_PLUGIN_PATH names") && stderr.contains("which is not a folder"),
        "{stderr}"
    );
}

#[test]
fn plugin_parameters_are_checked_against_the_manifest_at_their_location() {
    let plugins = common::repo_root().join("examples/plugins");
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "centre = true",
            "bad.toml:7:1: node `aniso` (anisotropy): unknown parameter `centre`; did you mean `center`?",
        ),
        (
            "center = \"yes\"",
            "bad.toml:7:10: node `aniso` (anisotropy): `center` must be a boolean, found a string",
        ),
        (
            "min_tokens = 1",
            "bad.toml:7:14: node `aniso` (anisotropy): `min_tokens` is 1, below the minimum 2",
        ),
    ];
    for (line, expected) in cases {
        let file = tmp.path().join("bad.toml");
        std::fs::write(
            &file,
            format!(
                "name = \"bad\"\n[nodes.data]\nkind = \"synthetic_matrix\"\n[nodes.aniso]\nkind = \"anisotropy\"\ninputs = {{ embeddings = \"data.embeddings\" }}\n{line}\n"
            ),
        )
        .unwrap();
        let store = tmp.path().join("store");
        let output = lmgeo_with_plugins(&plugins)
            .arg("--store")
            .arg(&store)
            .arg("plan")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected `{expected}` in:\n{stderr}"
        );
        assert!(!store.exists(), "a rejected experiment touched the store");
    }
}

/// True once the process is gone (or a zombie nobody reaped yet).
fn process_ended(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim().chars().next();
    stat.is_empty() || state == Some('Z')
}

#[test]
fn a_plugin_does_not_outlive_an_interrupted_lmgeo() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    // `exec`: the plugin's own process becomes the sleep.
    shell_plugin(
        &plugins,
        "lingering",
        "echo $$ > ./main.pid\nexec sleep 300",
        "600",
    );
    let file = tmp.path().join("long.toml");
    std::fs::write(
        &file,
        "name = \"long\"\n[nodes.data]\nkind = \"synthetic_matrix\"\n[nodes.wait]\nkind = \"lingering\"\ninputs = { embeddings = \"data.embeddings\" }\n",
    )
    .unwrap();
    let mut child = lmgeo_with_plugins(&plugins)
        .arg("--store")
        .arg(tmp.path().join("store"))
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = plugins.join("lingering/main.pid");
    let started = Instant::now();
    let pid = loop {
        if let Ok(pid) = std::fs::read_to_string(&pid_file)
            && !pid.trim().is_empty()
        {
            break pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the plugin never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!process_ended(&pid), "the plugin should be running");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!child.wait().unwrap().success());
    let started = Instant::now();
    while !process_ended(&pid) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "plugin process {} outlived lmgeo",
            pid.trim()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The code blocks of a Markdown file with their language.
fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(lang)) => current = Some((lang.trim().to_string(), String::new())),
            (Some(_), Some(_)) => blocks.push(current.take().unwrap()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

#[test]
fn the_tutorial_in_docs_plugins_md_runs_as_written() {
    let venv = example_venv();
    let doc = std::fs::read_to_string(common::repo_root().join("docs/plugins.md")).unwrap();
    let blocks = code_blocks(&doc);
    let find = |lang: &str, start: &str| -> String {
        blocks
            .iter()
            .find(|(l, text)| l == lang && text.starts_with(start))
            .unwrap_or_else(|| panic!("no {lang} block starting with {start:?}"))
            .1
            .clone()
    };
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path();
    let plugin = project.join("plugins/norms");
    std::fs::create_dir_all(&plugin).unwrap();
    std::fs::create_dir_all(project.join("experiments")).unwrap();
    std::os::unix::fs::symlink(&venv, project.join("plugins/.venv")).unwrap();
    let manifest = find("toml", "name = \"norms\"\nversion") + &find("toml", "[inputs.embeddings]");
    std::fs::write(plugin.join("plugin.toml"), manifest).unwrap();
    std::fs::write(plugin.join("probe.py"), find("python", "import json")).unwrap();
    std::fs::write(
        project.join("experiments/norms.toml"),
        find("toml", "name = \"norms\"\n\n[grid]"),
    )
    .unwrap();

    let run = || {
        let output = common::lmgeo()
            .current_dir(project)
            .args(["run", "experiments/norms.toml", "--json"])
            .output()
            .unwrap();
        Run { output }
    };
    let first = run();
    assert!(first.success(), "{}", first.stderr());
    assert_eq!(first.summary()["ran"], 6);
    assert_eq!(run().summary()["cached"], 6);

    // The metric is what the tutorial says: per layer, the mean over texts
    // of each matrix's mean row norm.
    let out = project.join("results/norms");
    let store = project.join("cache");
    let results = lmgeo_tables::read_records(&out.join("results.parquet")).unwrap();
    for seed in [1, 2] {
        let table = stored_output(&out, &store, &format!("data[seed={seed}]"), "embeddings");
        for center in [false, true] {
            let mut norms = Vec::new();
            for m in EmbeddingReader::open(&table).unwrap() {
                let m = m.unwrap();
                let rows: Vec<Vec<f64>> = (0..m.rows)
                    .map(|i| m.row(i).iter().map(|&v| f64::from(v)).collect())
                    .collect();
                let d = m.cols;
                let mean: Vec<f64> = (0..d)
                    .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / m.rows as f64)
                    .collect();
                let lengths: Vec<f64> = rows
                    .iter()
                    .map(|r| {
                        r.iter()
                            .zip(&mean)
                            .map(|(v, mu)| if center { v - mu } else { *v })
                            .map(|v| v * v)
                            .sum::<f64>()
                            .sqrt()
                    })
                    .collect();
                norms.push(lengths.iter().sum::<f64>() / lengths.len() as f64);
            }
            let expected = norms.iter().sum::<f64>() / norms.len() as f64;
            let node = format!("norms[seed={seed},center={center}]");
            let got = results
                .iter()
                .find(|r| text(r, "node").as_deref() == Some(node.as_str()))
                .and_then(|r| number(r, "value"))
                .unwrap_or_else(|| panic!("no row for {node}"));
            assert!((got - expected).abs() < 1e-9, "{node}: {got} vs {expected}");
        }
    }
}
