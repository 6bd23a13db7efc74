//! A `tokenizer.json` (the Hugging Face `tokenizers` format) behind [`TextTokenizer`].

use std::path::Path;

use crate::{ModelError, TextTokenizer};

/// Encodes like transformers' fast tokenizer called as `tokenizer(text)`: the
/// file's post-processor adds the special tokens (BERT's `[CLS] ... [SEP]`), and
/// any truncation or padding stored in the file is switched off, because
/// transformers applies those only when a call asks for them (all-MiniLM-L6-v2's
/// file, for one, stores truncation and padding to 128).
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
}

impl HfTokenizer {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no tokenizer file"),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self::from_tokenizer(inner))
    }

    pub fn from_tokenizer(mut inner: tokenizers::Tokenizer) -> Self {
        inner.with_padding(None);
        // Only fails for a stride incompatible with a max length; None has neither.
        let _ = inner.with_truncation(None);
        Self { inner }
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

impl TextTokenizer for HfTokenizer {
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Keeps special tokens, as transformers' `decode` does by default.
    fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Including added tokens, like `len(tokenizer)` in transformers.
    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
