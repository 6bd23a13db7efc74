//! Loading a Hugging Face model folder whose `model_type` is one of the
//! architectures read from folders (`gpt_neox`, `bert`): `config.json`, the
//! weights (read by [`crate::hf_weights`]) and an optional `tokenizer.json`.
//! This is the one module that knows both architectures; they know nothing of
//! it.

use std::path::Path;

use candle_core::Device;

use crate::bert::{Bert, BertConfig};
use crate::gpt_neox::{GptNeoX, GptNeoXConfig};
use crate::hf_common::read_json;
use crate::hf_tokenizer::HfTokenizer;
use crate::{LanguageModel, ModelError, TextTokenizer};

pub use crate::hf_weights::{WeightFiles, weight_files, weights_var_builder};

/// Which weights to put in a model read from a folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// The checkpoint's weights.
    Pretrained,
    /// transformers-style random initialisation of the same config (Diff-eRank's
    /// untrained baseline); only `config.json` is read.
    Random { seed: u64 },
}

/// The `model_type` of a folder's `config.json`.
pub fn model_type(dir: &Path) -> Result<String, ModelError> {
    let path = dir.join("config.json");
    let value = read_json(&path)?;
    value
        .get("model_type")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| ModelError::Config {
            path,
            message: "no `model_type`".into(),
        })
}

/// A model (and its tokenizer, when the folder has `tokenizer.json`) from a
/// Hugging Face folder whose `model_type` is `gpt_neox` or `bert`.
#[allow(clippy::type_complexity)]
pub fn load_hf_folder(
    dir: &Path,
    weights: Weights,
) -> Result<(Box<dyn LanguageModel>, Option<Box<dyn TextTokenizer>>), ModelError> {
    load_hf_folder_on(dir, weights, &Device::Cpu)
}

/// Like [`load_hf_folder`], with the weights on `device`.
#[allow(clippy::type_complexity)]
pub fn load_hf_folder_on(
    dir: &Path,
    weights: Weights,
    device: &Device,
) -> Result<(Box<dyn LanguageModel>, Option<Box<dyn TextTokenizer>>), ModelError> {
    let config_path = dir.join("config.json");
    let kind = model_type(dir)?;
    let label = dir.display().to_string();
    let model: Box<dyn LanguageModel> = match (kind.as_str(), weights) {
        ("gpt_neox", Weights::Pretrained) => Box::new(GptNeoX::from_folder_on(dir, device)?),
        ("gpt_neox", Weights::Random { seed }) => Box::new(
            GptNeoX::from_config_random_on(GptNeoXConfig::from_file(&config_path)?, seed, device)?
                .with_name(format!("{label} (random init, seed {seed})")),
        ),
        ("bert", Weights::Pretrained) => Box::new(Bert::from_folder_on(dir, device)?),
        ("bert", Weights::Random { seed }) => Box::new(
            Bert::from_config_random_on(BertConfig::from_file(&config_path)?, seed, device)?
                .with_name(format!("{label} (random init, seed {seed})")),
        ),
        (other, _) => {
            return Err(ModelError::Unsupported(format!(
                "model_type `{other}` in {}: this loader reads gpt_neox and bert folders",
                config_path.display()
            )));
        }
    };
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer: Option<Box<dyn TextTokenizer>> = if tokenizer_path.is_file() {
        Some(Box::new(HfTokenizer::from_file(&tokenizer_path)?))
    } else {
        None
    };
    Ok((model, tokenizer))
}
