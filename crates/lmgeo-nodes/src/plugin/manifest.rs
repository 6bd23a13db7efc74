//! `plugin.toml`: what an out-of-process plugin declares about itself.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use lmgeo_dag::Arity;
use serde::Deserialize;

use super::PluginError;
use super::schema::{ColumnType, ParamSpec, ParamType};

/// A declared input port.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub arity: Arity,
    pub doc: String,
}

/// A declared output table and the columns it must have.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputSpec {
    pub name: String,
    pub doc: String,
    /// Copied to the run's `nodes/<instance>/` folder.
    pub publish: bool,
    /// Columns that must be present with these types; others may be too.
    pub columns: Vec<(String, ColumnType)>,
}

/// A plugin manifest, read and checked.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The `plugin.toml` file.
    pub path: PathBuf,
    /// Its folder, absolute: the plugin runs there.
    pub dir: PathBuf,
    pub name: String,
    pub version: String,
    pub summary: String,
    /// Program and arguments; a program with a `/` is relative to `dir`,
    /// a bare name is looked up on `PATH`.
    pub command: Vec<String>,
    pub timeout: Option<Duration>,
    /// Files whose content is part of the key, when the manifest lists them;
    /// otherwise the command's own files are found when a node is configured.
    pub files: Option<Vec<PathBuf>>,
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    pub params: Vec<ParamSpec>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawVersion {
    Text(String),
    Integer(i64),
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawArity {
    #[default]
    One,
    Optional,
    Many,
}

impl From<RawArity> for Arity {
    fn from(a: RawArity) -> Self {
        match a {
            RawArity::One => Arity::One,
            RawArity::Optional => Arity::Optional,
            RawArity::Many => Arity::Many,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    #[serde(default)]
    arity: RawArity,
    #[serde(default)]
    doc: String,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    #[serde(default)]
    doc: String,
    #[serde(default = "yes")]
    publish: bool,
    #[serde(default)]
    columns: IndexMap<String, ColumnType>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(rename = "type")]
    ty: ParamType,
    default: Option<toml::Value>,
    #[serde(default)]
    doc: String,
    choices: Option<Vec<toml::Value>>,
    min: Option<f64>,
    max: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: RawVersion,
    #[serde(default)]
    summary: String,
    command: Vec<String>,
    timeout: Option<f64>,
    files: Option<Vec<String>>,
    #[serde(default)]
    inputs: IndexMap<String, RawInput>,
    #[serde(default)]
    outputs: IndexMap<String, RawOutput>,
    #[serde(default)]
    params: IndexMap<String, RawParam>,
}

/// Names of kinds, ports, outputs and parameters: they become TOML keys,
/// file names and environment variable names, so keep them plain.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        Ok(())
    } else {
        Err(format!(
            "{what} `{name}` must start with a letter or `_` and hold only letters, digits, `_` and `-`"
        ))
    }
}

/// `dir/relative` without `.` components, so paths in messages read well.
pub(crate) fn join_clean(dir: &Path, relative: &str) -> PathBuf {
    let relative = Path::new(relative);
    if relative.is_absolute() {
        return relative.to_path_buf();
    }
    let mut out = dir.to_path_buf();
    for component in relative.components() {
        match component {
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn toml_to_json(value: &toml::Value) -> Result<serde_json::Value, String> {
    serde_json::to_value(value).map_err(|e| e.to_string())
}

impl Manifest {
    /// Reads and checks `plugin.toml`. Every error names the file.
    pub fn load(path: &Path) -> Result<Manifest, PluginError> {
        let fail = |message: String| PluginError::Manifest {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Self::parse(path, &text)
    }

    /// Like [`Manifest::load`], from text already in memory; `path` names the
    /// manifest in errors and its folder is where `files` and the command
    /// are looked for.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, PluginError> {
        let fail = |message: String| PluginError::Manifest {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawManifest = toml::from_str(text).map_err(|e| fail(e.to_string()))?;
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = std::path::absolute(&dir).map_err(|e| fail(e.to_string()))?;
        Self::from_raw(raw, path, dir).map_err(fail)
    }

    fn from_raw(raw: RawManifest, path: &Path, dir: PathBuf) -> Result<Manifest, String> {
        check_name("plugin name", &raw.name)?;
        let version = match raw.version {
            RawVersion::Text(v) => v,
            RawVersion::Integer(i) => i.to_string(),
        };
        if version.trim().is_empty() {
            return Err("`version` is empty; give the plugin a version and bump it when its results change for reasons its files do not show".into());
        }
        if raw.command.first().is_none_or(|p| p.is_empty()) {
            return Err(
                "`command` must name a program, e.g. command = [\"python3\", \"probe.py\"]".into(),
            );
        }
        let timeout = match raw.timeout {
            None => None,
            Some(t) if t > 0.0 && t.is_finite() && t < 1e9 => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(format!(
                    "`timeout` must be a positive number of seconds, not {t}"
                ));
            }
        };
        let files = match raw.files {
            None => None,
            Some(list) => {
                let mut resolved = Vec::new();
                for file in list {
                    let full = join_clean(&dir, &file);
                    if !full.exists() {
                        return Err(format!(
                            "`files` lists `{file}`, which does not exist (looked for {})",
                            full.display()
                        ));
                    }
                    resolved.push(full);
                }
                Some(resolved)
            }
        };
        let mut inputs = Vec::new();
        for (name, input) in raw.inputs {
            check_name("input", &name)?;
            inputs.push(InputSpec {
                name,
                arity: input.arity.into(),
                doc: input.doc,
            });
        }
        let mut outputs = Vec::new();
        for (name, output) in raw.outputs {
            check_name("output", &name)?;
            if name == lmgeo_dag::graph::METRICS_OUTPUT {
                return Err("output `metrics` is reserved: every node has one; write metrics.parquet or metrics.json instead".into());
            }
            let mut columns = Vec::new();
            for (column, ty) in output.columns {
                if column.is_empty() {
                    return Err(format!(
                        "output `{name}` declares a column with an empty name"
                    ));
                }
                columns.push((column, ty));
            }
            outputs.push(OutputSpec {
                name,
                doc: output.doc,
                publish: output.publish,
                columns,
            });
        }
        let mut params = Vec::new();
        for (name, p) in raw.params {
            check_name("parameter", &name)?;
            let located = |e: String| format!("parameter `{name}`: {e}");
            let mut spec = ParamSpec {
                name: name.clone(),
                ty: p.ty,
                default: None,
                doc: p.doc,
                choices: None,
                min: p.min,
                max: p.max,
            };
            if let (Some(min), Some(max)) = (p.min, p.max)
                && min > max
            {
                return Err(located(format!("`min` ({min}) is above `max` ({max})")));
            }
            if let Some(choices) = p.choices {
                let scalar = match spec.ty {
                    ParamType::Scalar(s) | ParamType::List(s) => ParamType::Scalar(s),
                };
                let checker = ParamSpec {
                    ty: scalar,
                    choices: None,
                    ..spec.clone()
                };
                let mut checked = Vec::new();
                for choice in &choices {
                    let json = toml_to_json(choice).map_err(&located)?;
                    checked.push(
                        checker
                            .check(&json)
                            .map_err(|e| located(format!("choice {json} {e}")))?,
                    );
                }
                if checked.is_empty() {
                    return Err(located("`choices` is empty".into()));
                }
                spec.choices = Some(checked);
            }
            if let Some(default) = &p.default {
                let json = toml_to_json(default).map_err(&located)?;
                spec.default = Some(
                    spec.check(&json)
                        .map_err(|e| located(format!("the default {e}")))?,
                );
            }
            params.push(spec);
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            dir,
            name: raw.name,
            version,
            summary: raw.summary,
            command: raw.command,
            timeout,
            files,
            inputs,
            outputs,
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Manifest, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("probe.py"), "print()").unwrap();
        let path = dir.path().join("plugin.toml");
        std::fs::write(&path, text).unwrap();
        Manifest::load(&path).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
name = "aniso"
version = "0.1.0"
summary = "mean pairwise cosine"
command = ["python3", "probe.py"]
timeout = 30

[inputs.embeddings]
doc = "an embedding table"

[inputs.extra]
arity = "many"

[outputs.per_text]
columns = { text_id = "string", anisotropy = "float" }

[params.center]
type = "bool"
default = false
doc = "subtract the mean first"

[params.layers]
type = "int[]"
default = []

[params.stat]
type = "string"
choices = ["mean", "max"]
default = "mean"

[params.eps]
type = "float"
default = 1
min = 0
"#;

    #[test]
    fn a_complete_manifest_reads() {
        let m = load(GOOD).unwrap();
        assert_eq!(m.name, "aniso");
        assert_eq!(m.version, "0.1.0");
        assert_eq!(m.timeout, Some(Duration::from_secs(30)));
        assert!(m.dir.is_absolute());
        assert_eq!(m.inputs.len(), 2);
        assert_eq!(m.inputs[0].arity, Arity::One);
        assert_eq!(m.inputs[1].arity, Arity::Many);
        assert_eq!(
            m.outputs[0].columns,
            [
                ("text_id".to_string(), ColumnType::String),
                ("anisotropy".to_string(), ColumnType::Float)
            ]
        );
        assert!(m.outputs[0].publish);
        let eps = m.params.iter().find(|p| p.name == "eps").unwrap();
        assert!(eps.default.as_ref().unwrap().is_f64(), "1 becomes 1.0");
    }

    #[test]
    fn mistakes_are_reported_with_the_file_and_what_is_wrong() {
        let typo = load(&GOOD.replace("command =", "comand =")).unwrap_err();
        assert!(typo.contains("plugin.toml"), "{typo}");
        assert!(typo.contains("unknown field `comand`"), "{typo}");

        let bad_default = load(&GOOD.replace("default = false", "default = \"no\"")).unwrap_err();
        assert!(
            bad_default
                .contains("parameter `center`: the default must be a boolean, found a string"),
            "{bad_default}"
        );

        let bad_choice =
            load(&GOOD.replace("default = \"mean\"", "default = \"median\"")).unwrap_err();
        assert!(bad_choice.contains("not one of"), "{bad_choice}");

        let bad_type = load(&GOOD.replace("\"float\" }", "\"double\" }")).unwrap_err();
        assert!(
            bad_type.contains("unknown column type `double`"),
            "{bad_type}"
        );

        let reserved = load(&GOOD.replace("[outputs.per_text]", "[outputs.metrics]")).unwrap_err();
        assert!(
            reserved.contains("output `metrics` is reserved"),
            "{reserved}"
        );

        let missing = load(
            &format!("{GOOD}\n").replace("timeout = 30", "timeout = 30\nfiles = [\"helper.py\"]"),
        )
        .unwrap_err();
        assert!(
            missing.contains("`files` lists `helper.py`, which does not exist"),
            "{missing}"
        );

        let name = load(&GOOD.replace("name = \"aniso\"", "name = \"my probe\"")).unwrap_err();
        assert!(name.contains("plugin name `my probe` must start"), "{name}");

        let timeout = load(&GOOD.replace("timeout = 30", "timeout = 0")).unwrap_err();
        assert!(
            timeout.contains("`timeout` must be a positive"),
            "{timeout}"
        );
    }

    #[test]
    fn a_manifest_named_by_a_bare_file_name_reads() {
        // `plugin.toml` in the working folder: its parent is the empty path,
        // which std::path::absolute refuses; the folder is `.`.
        let m = Manifest::parse(Path::new("plugin.toml"), GOOD).unwrap();
        assert_eq!(m.dir, std::env::current_dir().unwrap());
    }

    #[test]
    fn paths_join_without_dot_components() {
        assert_eq!(
            join_clean(Path::new("/p/x"), "./probe.sh"),
            PathBuf::from("/p/x/probe.sh")
        );
        assert_eq!(
            join_clean(Path::new("/p/x"), "../.venv/bin/python"),
            PathBuf::from("/p/x/../.venv/bin/python")
        );
        assert_eq!(
            join_clean(Path::new("/p/x"), "/usr/bin/env"),
            PathBuf::from("/usr/bin/env")
        );
    }
}
