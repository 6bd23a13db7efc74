//! What a forward pass returns: the model's static facts and, per text, every
//! layer's hidden states, attention probabilities and logits.

use crate::F32Matrix;

/// Static facts about a loaded model, read from its config.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// `gpt_neox`, `llama`, `gemma3` or `bert`.
    pub architecture: String,
    /// Human-readable name (the source it was loaded from).
    pub name: String,
    pub n_layers: usize,
    pub hidden_size: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    /// Total parameter count computed from the config (tied embeddings counted once).
    pub n_params: u64,
    /// Parameters outside the token (and position) embeddings and the unembedding.
    pub n_params_non_embedding: u64,
    /// Decoder with a causal mask (true) or bidirectional encoder (false).
    pub causal: bool,
    /// Where it runs: `cpu` or `cuda:N`.
    pub device: String,
}

/// Which attention probabilities to return.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum AttentionCapture {
    #[default]
    None,
    /// Every query row of every layer and head.
    All,
    /// Only these query positions (0-based; out-of-range positions are an error).
    Queries(Vec<usize>),
}

/// Which positions' logits to return.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum LogitsCapture {
    #[default]
    None,
    Last,
    All,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ForwardRequest {
    pub attention: AttentionCapture,
    pub logits: LogitsCapture,
}

/// Everything one forward pass over one sequence of `n` tokens returns.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardOutput {
    /// Output of the embedding stage (after Gemma's sqrt(hidden) scaling, after
    /// BERT's embedding LayerNorm): `n x hidden`.
    pub embeddings: F32Matrix,
    /// Output of each transformer block, before any final norm: `n_layers`
    /// matrices of `n x hidden`.
    pub layers: Vec<F32Matrix>,
    /// The last block's output after the model's final norm, where the model
    /// has one (decoders); `None` for BERT.
    pub final_norm: Option<F32Matrix>,
    /// Per layer, per head: the attention probabilities of the captured query
    /// rows over all keys, `heads` matrices of `n_queries x n`. Empty when not
    /// requested.
    pub attentions: Vec<Vec<F32Matrix>>,
    /// The query positions the attention rows belong to.
    pub attention_queries: Vec<usize>,
    /// Logits for the requested positions: `n_positions x vocab`.
    pub logits: Option<F32Matrix>,
    /// Positions the logit rows belong to.
    pub logit_positions: Vec<usize>,
}
