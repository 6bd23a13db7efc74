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
    #[error(
        "{path} is truncated: it has {actual} bytes, but {what} ends at byte {needed}; the download or copy was probably cut short: delete the file and fetch it again"
    )]
    Truncated {
        path: PathBuf,
        what: String,
        needed: u64,
        actual: u64,
    },
    #[error("{}", candle_message(.0))]
    Candle(#[from] candle_core::Error),
}

/// A candle error's message without the backtrace candle appends when
/// `RUST_BACKTRACE` is set: a user reads what went wrong, not 40 frames of
/// the library's stack.
pub fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error;
    match e {
        Error::WithBacktrace { inner, .. } => candle_message(inner),
        Error::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        Error::WithPath { inner, path } => {
            format!("{}: {}", path.display(), candle_message(inner))
        }
        other => other.to_string(),
    }
}
