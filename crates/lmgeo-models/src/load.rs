//! One entry point from a model source to a model and its tokenizer.

use std::path::Path;

use crate::source::{HubOptions, ModelSource, fetch_hub_folder};
use crate::{LanguageModel, ModelError, TextTokenizer, Weights, load_hf_folder};

/// A loaded model with the tokenizer that goes with it.
pub struct LoadedModel {
    pub model: Box<dyn LanguageModel>,
    pub tokenizer: Box<dyn TextTokenizer>,
}

/// Loads a model from a local folder or file, a Hub id, or a registry name
/// (fetched into `models_dir` on first use).
pub fn load_model(
    source: &ModelSource,
    weights: Weights,
    models_dir: &Path,
) -> Result<LoadedModel, ModelError> {
    let label = source.to_string();
    let (model, tokenizer) = match source {
        ModelSource::Local(path) => load_path(path, weights)?,
        ModelSource::Hub { repo, revision } => {
            let dir =
                fetch_hub_folder(repo, revision.as_deref(), weights, &HubOptions::from_env())?;
            load_hf_folder(&dir, weights)?
        }
        ModelSource::Registry(name) => {
            let _ = models_dir;
            return Err(ModelError::Source {
                source_name: name.clone(),
                message: "registry models are not available in this build".into(),
            });
        }
    };
    let tokenizer = tokenizer.ok_or_else(|| ModelError::Source {
        source_name: label,
        message: "no tokenizer found (a Hugging Face folder needs tokenizer.json)".into(),
    })?;
    Ok(LoadedModel { model, tokenizer })
}

#[allow(clippy::type_complexity)]
fn load_path(
    path: &Path,
    weights: Weights,
) -> Result<(Box<dyn LanguageModel>, Option<Box<dyn TextTokenizer>>), ModelError> {
    if path.is_dir() {
        load_hf_folder(path, weights)
    } else if path.is_file() {
        Err(ModelError::Unsupported(format!(
            "{}: single-file models are not supported by this loader",
            path.display()
        )))
    } else {
        Err(ModelError::Source {
            source_name: path.display().to_string(),
            message: "no such file or folder".into(),
        })
    }
}

/// The recorded content digest of a registry model, known without fetching it.
pub fn registry_digest(name: &str) -> Result<String, ModelError> {
    Err(ModelError::Source {
        source_name: name.to_string(),
        message: "registry models are not available in this build".into(),
    })
}
