//! Where a model comes from, as written in an experiment file or on the command
//! line, and fetching Hugging Face Hub repositories into the local cache.
//!
//! Accepted spellings:
//! - `hf:<owner>/<name>` or `hf:<owner>/<name>@<revision>`: a Hub model
//!   repository (revision = branch, tag or commit; Pythia's `step1000`, ...);
//! - a path: anything with a `/` or `\`, starting with `.` or `~`, or ending in
//!   a weights or config extension (`./pythia-70m`, `/data/m.gguf`);
//! - otherwise a short registry name (`minilm-l6`, `smollm2-135m`), resolved by
//!   the model registry. Write `./name` for a folder in the working directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::ModelError;
use crate::hf_folder::Weights;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModelSource {
    /// A local folder (Hugging Face layout) or a single model file.
    Local(PathBuf),
    /// A Hugging Face Hub model repository.
    Hub {
        repo: String,
        revision: Option<String>,
    },
    /// A short name known to the model registry.
    Registry(String),
}

const FILE_EXTENSIONS: [&str; 5] = [".gguf", ".safetensors", ".bin", ".json", ".pt"];

impl ModelSource {
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        let s = text.trim();
        let err = |message: &str| ModelError::Source {
            source_name: text.to_string(),
            message: message.to_string(),
        };
        if s.is_empty() {
            return Err(err("empty model source"));
        }
        if let Some(rest) = s.strip_prefix("hf:") {
            let (repo, revision) = match rest.split_once('@') {
                Some((repo, rev)) => (repo, Some(rev)),
                None => (rest, None),
            };
            if !is_repo_id(repo) {
                return Err(err(
                    "expected `hf:<owner>/<name>[@<revision>]` with a Hub repository id \
                     (letters, digits, `-`, `_`, `.`)",
                ));
            }
            if let Some(rev) = revision
                && (rev.is_empty() || rev.chars().any(char::is_whitespace))
            {
                return Err(err("empty or blank revision after `@`"));
            }
            return Ok(Self::Hub {
                repo: repo.to_string(),
                revision: revision.map(str::to_string),
            });
        }
        let looks_like_path = s.contains('/')
            || s.contains('\\')
            || s.starts_with('.')
            || s.starts_with('~')
            || FILE_EXTENSIONS.iter().any(|ext| s.ends_with(ext));
        if looks_like_path {
            return Ok(Self::Local(expand_home(s)));
        }
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Ok(Self::Registry(s.to_string()));
        }
        Err(err(
            "not a path, an `hf:<owner>/<name>` id or a registry name; \
             write `./name` for a folder in the working directory",
        ))
    }
}

impl FromStr for ModelSource {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::Hub {
                repo,
                revision: None,
            } => write!(f, "hf:{repo}"),
            Self::Hub {
                repo,
                revision: Some(rev),
            } => write!(f, "hf:{repo}@{rev}"),
            Self::Registry(name) => write!(f, "{name}"),
        }
    }
}

fn is_repo_id(repo: &str) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(repo.split_once('/'), Some((owner, name)) if part_ok(owner) && part_ok(name))
}

fn expand_home(s: &str) -> PathBuf {
    if let Some(rest) = s.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return Path::new(&home).join(rest);
    }
    PathBuf::from(s)
}

/// How to reach the Hub.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubOptions {
    /// The hub cache; `None` uses the Hugging Face default (`HF_HUB_CACHE`,
    /// else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: Option<PathBuf>,
    /// Never touch the network; read only what is cached (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

impl HubOptions {
    /// Reads `HF_HUB_OFFLINE` (`1`, `true`, `yes`, `on`); the cache location is
    /// read when fetching (`HF_HUB_CACHE`, then `HF_HOME`, as the Python hub
    /// library does).
    pub fn from_env() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            })
            .unwrap_or(false);
        Self {
            cache_dir: None,
            offline,
        }
    }
}

/// `HF_HUB_CACHE`, which hf-hub does not read itself (it reads `HF_HOME`).
fn hub_cache_from_env() -> Option<PathBuf> {
    std::env::var_os("HF_HUB_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Downloads (or finds in the cache) what [`crate::load_hf_folder`] needs from a
/// Hub repository: `config.json`, the weights unless `weights` is random, and
/// `tokenizer.json` when the repository has one. Returns the snapshot folder.
pub fn fetch_hub_folder(
    repo: &str,
    revision: Option<&str>,
    weights: Weights,
    options: &HubOptions,
) -> Result<PathBuf, ModelError> {
    let label = match revision {
        Some(rev) => format!("hf:{repo}@{rev}"),
        None => format!("hf:{repo}"),
    };
    let source_err = |message: String| ModelError::Source {
        source_name: label.clone(),
        message,
    };
    if !is_repo_id(repo) {
        return Err(source_err("not an `<owner>/<name>` repository id".into()));
    }
    let cache = match options.cache_dir.clone().or_else(hub_cache_from_env) {
        Some(dir) => hf_hub::Cache::new(dir),
        None => hf_hub::Cache::from_env(),
    };
    let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone()).with_progress(false);
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    if let Ok(token) = std::env::var("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    let api = builder
        .build()
        .map_err(|e| source_err(format!("cannot set up the Hub client: {e}")))?;
    let spec = match revision {
        Some(rev) => {
            hf_hub::Repo::with_revision(repo.to_string(), hf_hub::RepoType::Model, rev.to_string())
        }
        None => hf_hub::Repo::model(repo.to_string()),
    };
    let hint = if options.offline {
        "offline mode (HF_HUB_OFFLINE) reads only the local Hugging Face cache, and the file is not there; \
         download the model where the Hub is reachable, or pass a local folder with config.json and the weights"
    } else {
        "the Hugging Face Hub could not be reached or refused the request; pass a local folder \
         (config.json, weights, tokenizer.json) instead, or set HF_HUB_OFFLINE=1 to use the cache"
    };
    // Ok(None): the file is not in the repository (or, offline, not cached).
    let fetch = |file: &str| -> Result<Option<PathBuf>, ModelError> {
        if options.offline {
            return Ok(cache.repo(spec.clone()).get(file));
        }
        match api.repo(spec.clone()).get(file) {
            Ok(path) => Ok(Some(path)),
            Err(hf_hub::api::sync::ApiError::RequestError(e))
                if matches!(*e, ureq::Error::StatusCode(404)) =>
            {
                Ok(None)
            }
            Err(e) => Err(source_err(format!("{file}: {e}; {hint}"))),
        }
    };
    let config = fetch("config.json")?
        .ok_or_else(|| source_err(format!("no config.json in {repo}; {hint}")))?;
    let dir = config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| source_err("odd cache path for config.json".into()))?;
    if weights == Weights::Pretrained {
        let mut found = false;
        for (index, single) in [
            ("model.safetensors.index.json", "model.safetensors"),
            ("pytorch_model.bin.index.json", "pytorch_model.bin"),
        ] {
            if let Some(index_path) = fetch(index)? {
                let value = crate::hf_common::read_json(&index_path)?;
                let mut shards: Vec<String> = value
                    .get("weight_map")
                    .and_then(|m| m.as_object())
                    .map(|m| {
                        m.values()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                shards.sort();
                shards.dedup();
                for shard in &shards {
                    fetch(shard)?.ok_or_else(|| {
                        source_err(format!(
                            "shard {shard} listed in {index} is missing; {hint}"
                        ))
                    })?;
                }
                found = true;
                break;
            }
            if fetch(single)?.is_some() {
                found = true;
                break;
            }
        }
        if !found {
            return Err(source_err(format!(
                "no safetensors or pytorch_model.bin weights in {repo}; {hint}"
            )));
        }
    }
    fetch("tokenizer.json")?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        let p = |s: &str| ModelSource::parse(s).unwrap();
        assert_eq!(
            p("hf:EleutherAI/pythia-70m"),
            ModelSource::Hub {
                repo: "EleutherAI/pythia-70m".into(),
                revision: None
            }
        );
        assert_eq!(
            p(" hf:EleutherAI/pythia-70m@step1000 "),
            ModelSource::Hub {
                repo: "EleutherAI/pythia-70m".into(),
                revision: Some("step1000".into())
            }
        );
        assert_eq!(p("./pythia"), ModelSource::Local("./pythia".into()));
        assert_eq!(
            p("/data/models/x"),
            ModelSource::Local("/data/models/x".into())
        );
        assert_eq!(p("models\\x"), ModelSource::Local("models\\x".into()));
        assert_eq!(p("smollm.gguf"), ModelSource::Local("smollm.gguf".into()));
        assert_eq!(p("minilm-l6"), ModelSource::Registry("minilm-l6".into()));
        assert_eq!(
            p("gemma3-270m"),
            ModelSource::Registry("gemma3-270m".into())
        );
        for s in [
            "hf:EleutherAI/pythia-70m@step1000",
            "hf:a/b",
            "minilm-l6",
            "./m",
        ] {
            assert_eq!(p(s).to_string(), s, "round trip");
        }
        for bad in [
            "",
            "hf:",
            "hf:pythia-70m",
            "hf:a/b/c",
            "hf:a/b@",
            "hf:/b",
            "weird name",
        ] {
            assert!(
                matches!(ModelSource::parse(bad), Err(ModelError::Source { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn offline_without_cache_names_the_repo_and_the_way_out() {
        let cache = tempfile::tempdir().unwrap();
        let options = HubOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            offline: true,
        };
        let err = fetch_hub_folder("EleutherAI/pythia-70m", None, Weights::Pretrained, &options)
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ModelError::Source { .. }));
        assert!(text.contains("hf:EleutherAI/pythia-70m"), "{text}");
        assert!(text.contains("local folder"), "{text}");
    }

    /// A hub cache laid out as huggingface_hub writes it (refs/<branch> holding the
    /// commit, files under snapshots/<commit>/) is found offline and loads.
    #[test]
    fn offline_reads_the_hub_cache() {
        let cache = tempfile::tempdir().unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let repo_dir = cache.path().join("models--tiny--neox");
        let snapshot = repo_dir.join("snapshots").join(commit);
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt_neox/parallel");
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(fixture.join(f), snapshot.join(f)).unwrap();
        }
        let options = HubOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            offline: true,
        };
        let dir = fetch_hub_folder("tiny/neox", None, Weights::Pretrained, &options).unwrap();
        assert_eq!(dir, snapshot);
        let (model, tokenizer) = crate::load_hf_folder(&dir, Weights::Pretrained).unwrap();
        assert_eq!(model.info().architecture, "gpt_neox");
        assert!(tokenizer.is_none());
        // A revision that was never cached is an error, not a silent fallback.
        let err = fetch_hub_folder("tiny/neox", Some("step1"), Weights::Pretrained, &options)
            .unwrap_err();
        assert!(err.to_string().contains("hf:tiny/neox@step1"), "{err}");
    }
}

#[cfg(test)]
mod network_tests {
    use super::*;

    /// Where the Hub cannot be reached (CI sandboxes), the error must say so and
    /// name the repository. Run by hand: `cargo test -p lmgeo-models -- --ignored`.
    #[test]
    #[ignore = "depends on the network being unavailable"]
    fn unreachable_hub_is_a_clear_error() {
        let cache = tempfile::tempdir().unwrap();
        let options = HubOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            offline: false,
        };
        let start = std::time::Instant::now();
        let err = fetch_hub_folder("EleutherAI/pythia-70m", None, Weights::Pretrained, &options)
            .unwrap_err();
        println!("after {:?}: {err}", start.elapsed());
        let text = err.to_string();
        assert!(text.contains("hf:EleutherAI/pythia-70m"), "{text}");
        assert!(text.contains("local folder"), "{text}");
    }
}
