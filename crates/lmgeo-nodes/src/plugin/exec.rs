//! Running one plugin process: the request it gets, the process it runs in,
//! and the checks its outputs pass before the engine may commit them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lmgeo_dag::graph::METRICS_OUTPUT;
use lmgeo_dag::{InputArtifact, MetricRow, NodeError, RunContext, Scalar};
use lmgeo_tables::{Cell, Record};
use serde_json::{Value, json};

use super::manifest::OutputSpec;

/// The plugin protocol's version: in the request, and the kind version of
/// every plugin kind, so a change in what lmgeo hands plugins reruns them.
pub const PROTOCOL: u32 = 1;

/// Used when neither the plugin nor `LMGEO_PLUGIN_TIMEOUT` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// How much of a failed plugin's stderr the error quotes.
const STDERR_TAIL_LINES: usize = 20;
const STDERR_TAIL_BYTES: usize = 4000;

/// One configured plugin node, ready to run.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    /// How errors name the plugin: `plugin `x` (path/plugin.toml)`.
    pub label: String,
    pub name: String,
    pub version: String,
    /// Resolved program (absolute when it was a path) and its arguments.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Where the process runs.
    pub cwd: Option<PathBuf>,
    pub timeout: Option<Duration>,
    pub ports: Vec<String>,
    pub outputs: Vec<OutputSpec>,
    pub params: Value,
}

fn timeout_of(call: &Call) -> Result<Duration, NodeError> {
    if let Some(t) = call.timeout {
        return Ok(t);
    }
    match std::env::var("LMGEO_PLUGIN_TIMEOUT") {
        Ok(text) if !text.trim().is_empty() => match text.trim().parse::<f64>() {
            Ok(s) if s > 0.0 && s.is_finite() && s < 1e9 => Ok(Duration::from_secs_f64(s)),
            _ => Err(NodeError::msg(format!(
                "LMGEO_PLUGIN_TIMEOUT=`{text}` is not a positive number of seconds"
            ))),
        },
        _ => Ok(DEFAULT_TIMEOUT),
    }
}

/// `LMGEO_PARAM_CENTER`, `LMGEO_INPUT_EMBEDDINGS`: names a shell can use.
fn env_name(prefix: &str, name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}{cleaned}")
}

fn env_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Upstream metrics are stored as JSON; plugins get them as a tidy Parquet
/// table (`metric`, `value`, one column per dimension) like everything else.
fn metrics_as_parquet(input: &InputArtifact, target: &Path) -> Result<(), NodeError> {
    let rows = crate::read_metrics(&input.path)?;
    if rows.is_empty() {
        let mut frame = polars::prelude::DataFrame::new(
            0,
            vec![
                polars::prelude::Column::new_empty(
                    "metric".into(),
                    &polars::prelude::DataType::String,
                ),
                polars::prelude::Column::new_empty(
                    "value".into(),
                    &polars::prelude::DataType::Float64,
                ),
            ],
        )
        .map_err(|e| NodeError::msg(e.to_string()))?;
        lmgeo_tables::write_parquet(&mut frame, target)?;
        return Ok(());
    }
    let records: Vec<Record> = rows
        .iter()
        .map(|row| {
            let mut record: Record = vec![
                ("metric".into(), Cell::Str(row.metric.clone())),
                ("value".into(), Cell::Float(row.value)),
            ];
            for (name, value) in &row.dims {
                if name != "metric" && name != "value" {
                    record.push((name.clone(), crate::plugin::cell_of(value)));
                }
            }
            record
        })
        .collect();
    let mut frame = lmgeo_tables::frame_from_records(&records)?;
    lmgeo_tables::set_column_type(&mut frame, "value", lmgeo_tables::ColumnKind::Float)?;
    lmgeo_tables::write_parquet(&mut frame, target)?;
    Ok(())
}

/// Kills the plugin's whole process group: a shell script's children or a
/// Python multiprocessing pool must not outlive it.
fn kill_group(child: &mut Child) {
    #[cfg(unix)]
    {
        // The child leads its own group (see `process_group(0)`), so the
        // group id is its pid.
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: killpg only sends a signal; a stale id fails with ESRCH.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    }
    let _ = child.kill();
}

fn describe_exit(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGBUS => " (SIGBUS)",
                _ => "",
            };
            return format!("was killed by signal {signal}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "exited abnormally".to_string(),
    }
}

/// The last lines of the plugin's stderr, indented, or a note that it is
/// empty: the first thing anyone needs to see when a plugin fails.
fn stderr_tail(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(STDERR_TAIL_BYTES);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    if lines.iter().all(|l| l.trim().is_empty()) {
        return "its stderr is empty".to_string();
    }
    let keep = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
    let mut out = String::from("the end of its stderr:");
    for line in keep {
        out.push_str("\n    | ");
        out.push_str(line);
    }
    out
}

/// Runs the plugin for one node instance and hands its outputs and metrics
/// to the engine, or fails with an error that names the plugin.
pub(crate) fn run(call: &Call, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
    let timeout = timeout_of(call)?;
    let folders = Folders::create(ctx)?;
    let input_env = write_request(call, ctx, &folders)?;
    let stdout_path = folders.work.join("stdout.log");
    let stderr_path = folders.work.join("stderr.log");
    let mut command = command(call, ctx, &folders, &input_env, &stdout_path, &stderr_path)?;
    let mut child = command.spawn().map_err(|e| {
        NodeError::msg(format!(
            "{} cannot start `{}`: {e}",
            call.label,
            call.program.display()
        ))
    })?;
    let status = wait(call, ctx, &mut child, timeout, &stderr_path)?;
    // Whatever the plugin left running in its group goes too: it would write
    // into a folder that is about to be removed.
    kill_group(&mut child);
    if !status.success() {
        return Err(NodeError::msg(format!(
            "{} {}; {}",
            call.label,
            describe_exit(status),
            stderr_tail(&stderr_path)
        )));
    }
    if let Ok(stderr) = std::fs::read_to_string(&stderr_path)
        && !stderr.trim().is_empty()
    {
        tracing::debug!(node = ctx.node_id(), "{} stderr:\n{stderr}", call.label);
    }

    collect(call, ctx, &folders.out, &stderr_path)
}

/// The folders of one plugin run, under the node's scratch folder. Every
/// path handed over is absolute: a manifest plugin runs in its own folder,
/// where a relative store path (`cache/...`) means nothing.
struct Folders {
    /// The request and the logs.
    work: PathBuf,
    /// Where the plugin writes its outputs.
    out: PathBuf,
    /// The plugin's own scratch space.
    tmp: PathBuf,
    /// Upstream metrics converted to Parquet.
    inputs: PathBuf,
}

impl Folders {
    fn create(ctx: &RunContext<'_>) -> Result<Self, NodeError> {
        let work = std::path::absolute(ctx.scratch_dir())?;
        let folders = Folders {
            out: work.join("out"),
            tmp: work.join("tmp"),
            inputs: work.join("inputs"),
            work,
        };
        for dir in [&folders.out, &folders.tmp, &folders.inputs] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(folders)
    }

    fn request(&self) -> PathBuf {
        self.work.join("request.json")
    }
}

/// Writes `request.json` (the protocol's request: inputs, outputs,
/// parameters, folders) and returns the `LMGEO_INPUT_*` variables.
fn write_request(
    call: &Call,
    ctx: &RunContext<'_>,
    folders: &Folders,
) -> Result<Vec<(String, String)>, NodeError> {
    let mut inputs = serde_json::Map::new();
    let mut input_env: Vec<(String, String)> = Vec::new();
    for port in &call.ports {
        let mut values = Vec::new();
        let mut paths = Vec::new();
        for (i, artifact) in ctx.input(port).iter().enumerate() {
            let path = if artifact.output == METRICS_OUTPUT {
                let converted = folders.inputs.join(format!("{port}-{i}-metrics.parquet"));
                metrics_as_parquet(artifact, &converted).map_err(|e| {
                    e.context(format!("preparing input `{port}` for {}", call.label))
                })?;
                converted
            } else {
                std::path::absolute(&artifact.path)?
            };
            paths.push(path.display().to_string());
            values.push(json!({
                "path": path,
                "node": artifact.node,
                "kind": artifact.kind,
                "output": artifact.output,
                "coords": artifact.coords.to_json(),
                "params": artifact.params,
            }));
        }
        input_env.push((env_name("LMGEO_INPUT_", port), paths.join("\n")));
        inputs.insert(port.clone(), Value::Array(values));
    }
    let outputs: serde_json::Map<String, Value> = call
        .outputs
        .iter()
        .map(|o| {
            let path = folders.out.join(format!("{}.parquet", o.name));
            (o.name.clone(), json!(path))
        })
        .collect();
    let request = json!({
        "protocol": PROTOCOL,
        "plugin": { "name": call.name, "version": call.version },
        "node": ctx.node_id(),
        "coords": ctx.coords().to_json(),
        "params": call.params,
        "inputs": inputs,
        "outputs": outputs,
        "output_dir": folders.out,
        "scratch": folders.tmp,
    });
    std::fs::write(
        folders.request(),
        serde_json::to_vec_pretty(&request).map_err(|e| NodeError::msg(e.to_string()))?,
    )?;
    Ok(input_env)
}

/// The plugin's command: the request on stdin, logs to files, the
/// `LMGEO_*` variables, its own process group, and (on Linux) death with
/// lmgeo.
fn command(
    call: &Call,
    ctx: &RunContext<'_>,
    folders: &Folders,
    input_env: &[(String, String)],
    stdout_path: &Path,
    stderr_path: &Path,
) -> Result<Command, NodeError> {
    let request_path = folders.request();
    let mut command = Command::new(&call.program);
    command
        .args(&call.args)
        // A file, not a pipe: the plugin may never read its stdin, and a
        // large request must not block lmgeo on a full pipe.
        .stdin(Stdio::from(File::open(&request_path)?))
        // Files too: nothing to drain while we wait, and a plugin's
        // leftover children cannot hold lmgeo up by keeping a pipe open.
        .stdout(Stdio::from(File::create(stdout_path)?))
        .stderr(Stdio::from(File::create(stderr_path)?))
        .env("LMGEO_REQUEST", &request_path)
        .env("LMGEO_OUTPUT_DIR", &folders.out)
        .env("LMGEO_SCRATCH", &folders.tmp)
        .env("LMGEO_NODE", ctx.node_id())
        // Python would otherwise write __pycache__ next to the plugin's
        // modules, changing a folder listed in `files` and so its key.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    if let Some(cwd) = &call.cwd {
        command.current_dir(cwd);
    }
    if let Value::Object(params) = &call.params {
        for (name, value) in params {
            command.env(env_name("LMGEO_PARAM_", name), env_value(value));
        }
    }
    for (name, value) in input_env {
        command.env(name, value);
    }
    for output in &call.outputs {
        command.env(
            env_name("LMGEO_OUTPUT_", &output.name),
            folders.out.join(format!("{}.parquet", output.name)),
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own group, so a timeout can kill everything it started...
        command.process_group(0);
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // ...which also keeps the terminal's Ctrl-C from reaching it, so it
        // must not outlive lmgeo: it is killed when lmgeo dies.
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe, as a pre_exec
        // hook requires.
        unsafe {
            command.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent {
                    // lmgeo died before the request to follow it was made.
                    return Err(std::io::Error::other("lmgeo exited"));
                }
                Ok(())
            });
        }
    }
    Ok(command)
}

/// Waits for the plugin with a growing pause (2 to 50 ms); kills its group
/// when the run is interrupted or the timeout passes.
fn wait(
    call: &Call,
    ctx: &RunContext<'_>,
    child: &mut Child,
    timeout: Duration,
    stderr_path: &Path,
) -> Result<ExitStatus, NodeError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => {
                kill_group(child);
                let _ = child.wait();
                return Err(NodeError::msg(format!(
                    "{} could not be waited for: {e}",
                    call.label
                )));
            }
        }
        if ctx.cancelled() {
            kill_group(child);
            let _ = child.wait();
            return Err(NodeError::msg(format!(
                "{} was stopped: the run was interrupted",
                call.label
            )));
        }
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            kill_group(child);
            let _ = child.wait();
            return Err(NodeError::msg(format!(
                "{} timed out after {} and was killed with its process group; {}\n  help: raise `timeout` (seconds) in the plugin's declaration, or LMGEO_PLUGIN_TIMEOUT for plugins that declare none",
                call.label,
                seconds(timeout),
                stderr_tail(stderr_path)
            )));
        }
        std::thread::sleep(pause.min(timeout - elapsed));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

/// Checks what the plugin wrote and moves it where the engine commits it.
fn collect(
    call: &Call,
    ctx: &mut RunContext<'_>,
    out_dir: &Path,
    stderr_path: &Path,
) -> Result<(), NodeError> {
    let written: Vec<String> = std::fs::read_dir(out_dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let metrics_parquet = out_dir.join("metrics.parquet");
    let metrics_json = out_dir.join("metrics.json");
    if written.is_empty() {
        let expected: Vec<String> = call
            .outputs
            .iter()
            .map(|o| format!("{}.parquet", o.name))
            .chain(
                call.outputs
                    .is_empty()
                    .then(|| "metrics.parquet or metrics.json".to_string()),
            )
            .collect();
        return Err(NodeError::msg(format!(
            "{} finished but wrote nothing: expected {} in its output folder (`output_dir` of the request); {}",
            call.label,
            expected.join(", "),
            stderr_tail(stderr_path)
        )));
    }
    for output in &call.outputs {
        let path = out_dir.join(format!("{}.parquet", output.name));
        if !path.is_file() {
            return Err(NodeError::msg(format!(
                "{} did not write its declared output `{}` (expected {}; it wrote: {})",
                call.label,
                output.name,
                path.display(),
                written.join(", ")
            )));
        }
        check_output(call, output, &path)?;
    }
    let mut rows = Vec::new();
    match (metrics_parquet.is_file(), metrics_json.is_file()) {
        (true, true) => {
            return Err(NodeError::msg(format!(
                "{} wrote both metrics.parquet and metrics.json; write one",
                call.label
            )));
        }
        (true, false) => {
            rows = metrics_from_parquet(&metrics_parquet)
                .map_err(|e| NodeError::msg(format!("{}: metrics.parquet: {e}", call.label)))?
        }
        (false, true) => {
            rows = metrics_from_json(&metrics_json)
                .map_err(|e| NodeError::msg(format!("{}: metrics.json: {e}", call.label)))?
        }
        (false, false) if call.outputs.is_empty() => {
            return Err(NodeError::msg(format!(
                "{} declares no outputs and wrote no metrics.parquet or metrics.json, so it produced nothing (it wrote: {})",
                call.label,
                written.join(", ")
            )));
        }
        (false, false) => {}
    }
    for output in &call.outputs {
        let from = out_dir.join(format!("{}.parquet", output.name));
        let to = ctx.output_path(&output.name)?;
        if std::fs::rename(&from, &to).is_err() {
            std::fs::copy(&from, &to)?;
        }
    }
    ctx.emit_all(rows);
    Ok(())
}

fn check_output(call: &Call, output: &OutputSpec, path: &Path) -> Result<(), NodeError> {
    let info = lmgeo_tables::parquet_info(path).map_err(|e| {
        NodeError::msg(format!(
            "{}: output `{}` is not a readable Parquet file ({e})",
            call.label, output.name
        ))
    })?;
    let have: Vec<&str> = info.columns.iter().map(|c| c.name.as_str()).collect();
    let missing: Vec<&str> = output
        .columns
        .iter()
        .filter(|(name, _)| info.column(name).is_none())
        .map(|(name, _)| name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(NodeError::msg(format!(
            "{}: output `{}` lacks the declared column{} `{}` (it has: {})",
            call.label,
            output.name,
            if missing.len() > 1 { "s" } else { "" },
            missing.join("`, `"),
            have.join(", ")
        )));
    }
    for (name, ty) in &output.columns {
        let column = info.column(name).expect("checked above");
        if !ty.accepts(column.class) {
            return Err(NodeError::msg(format!(
                "{}: output `{}` column `{name}` is {} ({}), but {ty} is declared",
                call.label, output.name, column.class, column.arrow_type
            )));
        }
    }
    Ok(())
}

fn scalar_of(cell: &Cell) -> Option<Scalar> {
    match cell {
        Cell::Null => None,
        Cell::Str(s) => Some(Scalar::String(s.clone())),
        Cell::Int(i) => Some(Scalar::Integer(*i)),
        Cell::Float(x) => Some(Scalar::Float(*x)),
        Cell::Bool(b) => Some(Scalar::Bool(*b)),
    }
}

/// A tidy table: `metric` (text), `value` (number; missing is NaN) and any
/// other columns as dimensions (a missing cell leaves the dimension out).
fn metrics_from_parquet(path: &Path) -> Result<Vec<MetricRow>, String> {
    let records = lmgeo_tables::read_records(path).map_err(|e| e.to_string())?;
    let info = lmgeo_tables::parquet_info(path).map_err(|e| e.to_string())?;
    for required in ["metric", "value"] {
        if info.column(required).is_none() {
            let have: Vec<&str> = info.columns.iter().map(|c| c.name.as_str()).collect();
            return Err(format!(
                "no `{required}` column (it has: {}); a metrics table has `metric`, `value` and dimension columns",
                have.join(", ")
            ));
        }
    }
    records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let mut metric = None;
            let mut value = f64::NAN;
            let mut dims = Vec::new();
            for (name, cell) in record {
                match (name.as_str(), cell) {
                    ("metric", Cell::Str(s)) if !s.is_empty() => metric = Some(s.clone()),
                    ("metric", other) => {
                        return Err(format!(
                            "row {}: `metric` must be a non-empty string, found {other:?}",
                            i + 1
                        ));
                    }
                    ("value", Cell::Float(x)) => value = *x,
                    ("value", Cell::Int(n)) => value = *n as f64,
                    ("value", Cell::Null) => {}
                    ("value", other) => {
                        return Err(format!(
                            "row {}: `value` must be a number, found {other:?}",
                            i + 1
                        ));
                    }
                    (dim, cell) => {
                        if let Some(scalar) = scalar_of(cell) {
                            dims.push((dim.to_string(), scalar));
                        }
                    }
                }
            }
            Ok(MetricRow {
                metric: metric.ok_or_else(|| format!("row {}: no metric name", i + 1))?,
                value,
                dims,
            })
        })
        .collect()
}

/// The same rows as JSON: `[{"metric": "...", "value": 1.5, "layer": 3}]`.
fn metrics_from_json(path: &Path) -> Result<Vec<MetricRow>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err("must be a JSON array of rows".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(fields) = item else {
                return Err(format!("row {} is not an object", i + 1));
            };
            let metric = match fields.get("metric") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => {
                    return Err(format!(
                        "row {}: `metric` must be a non-empty string",
                        i + 1
                    ));
                }
            };
            let value = match fields.get("value") {
                Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
                Some(Value::Null) | None => f64::NAN,
                Some(other) => {
                    return Err(format!(
                        "row {}: `value` must be a number, found {}",
                        i + 1,
                        super::schema::json_type_name(other)
                    ));
                }
            };
            let mut dims = Vec::new();
            for (name, v) in fields {
                if name == "metric" || name == "value" || v.is_null() {
                    continue;
                }
                let scalar = Scalar::from_json(v).ok_or_else(|| {
                    format!(
                        "row {}: dimension `{name}` must be a string, number or boolean",
                        i + 1
                    )
                })?;
                dims.push((name.clone(), scalar));
            }
            Ok(MetricRow {
                metric,
                value,
                dims,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_json_rows_become_metric_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        std::fs::write(
            &path,
            r#"[{"metric": "bytes", "value": 12, "port": "table", "layer": 3},
                {"metric": "ratio", "value": null}]"#,
        )
        .unwrap();
        let rows = metrics_from_json(&path).unwrap();
        assert_eq!(
            rows[0],
            MetricRow::new("bytes", 12.0)
                .dim("port", "table")
                .dim("layer", 3i64)
        );
        assert_eq!(rows[1].metric, "ratio");
        assert!(rows[1].value.is_nan());

        std::fs::write(&path, r#"[{"value": 1}]"#).unwrap();
        assert_eq!(
            metrics_from_json(&path).unwrap_err(),
            "row 1: `metric` must be a non-empty string"
        );
        std::fs::write(&path, r#"[{"metric": "m", "value": "high"}]"#).unwrap();
        assert_eq!(
            metrics_from_json(&path).unwrap_err(),
            "row 1: `value` must be a number, found a string"
        );
    }

    #[test]
    fn metrics_parquet_rows_become_metric_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.parquet");
        let records: Vec<Record> = vec![
            vec![
                ("metric".into(), Cell::from("anisotropy")),
                ("value".into(), Cell::Float(0.25)),
                ("layer".into(), Cell::Int(2)),
            ],
            vec![
                ("metric".into(), Cell::from("count")),
                ("value".into(), Cell::Int(7)),
            ],
        ];
        let mut frame = lmgeo_tables::frame_from_records(&records).unwrap();
        lmgeo_tables::write_parquet(&mut frame, &path).unwrap();
        let rows = metrics_from_parquet(&path).unwrap();
        assert_eq!(
            rows,
            [
                MetricRow::new("anisotropy", 0.25).dim("layer", 2i64),
                MetricRow::new("count", 7.0),
            ]
        );

        let no_value: Vec<Record> = vec![vec![("metric".into(), Cell::from("m"))]];
        let mut frame = lmgeo_tables::frame_from_records(&no_value).unwrap();
        lmgeo_tables::write_parquet(&mut frame, &path).unwrap();
        assert!(
            metrics_from_parquet(&path)
                .unwrap_err()
                .starts_with("no `value` column (it has: metric)")
        );
    }

    #[test]
    fn environment_names_are_shell_friendly() {
        assert_eq!(
            env_name("LMGEO_PARAM_", "min-tokens"),
            "LMGEO_PARAM_MIN_TOKENS"
        );
        assert_eq!(env_value(&json!("x y")), "x y");
        assert_eq!(env_value(&json!([1, 2])), "[1,2]");
        assert_eq!(env_value(&json!(true)), "true");
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stderr.log");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = stderr_tail(&path);
        assert!(tail.contains("| line 30"), "{tail}");
        assert!(tail.contains("| line 11"), "{tail}");
        assert!(!tail.contains("| line 10\n"), "{tail}");
        std::fs::write(&path, "\n\n").unwrap();
        assert_eq!(stderr_tail(&path), "its stderr is empty");
    }
}
