//! The two interfaces every model and tokenizer of this crate implements.

use crate::{ForwardOutput, ForwardRequest, ModelError, ModelInfo};

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
