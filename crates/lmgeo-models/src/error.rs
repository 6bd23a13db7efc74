//! The crate's one error type: every variant names the file or model at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("missing weight tensor `{name}` in {path}")]
    MissingTensor { name: String, path: PathBuf },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid request: {0}")]
    Request(String),
    #[error("model source `{source_name}`: {message}")]
    Source {
        source_name: String,
        message: String,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
