//! Llama-family decoder (SmolLM2 and kin): RMSNorm before attention and
//! feed-forward, half-split rotary, grouped-query attention, SwiGLU
//! feed-forward, optionally tied embeddings.
//!
//! This file holds what is Llama's own: its config, read from GGUF metadata,
//! and the [`DecoderLayout`] that tells the shared decoder (`decoder.rs`) how
//! to run it, as Hugging Face's `LlamaForCausalLM` does.

use crate::ModelError;
use crate::activation::Activation;
use crate::decoder::{
    DecoderLayout, GgufDecoderKeys, LayerSpec, NormPlacement, Rope, decoder_model,
};
use crate::gguf::{GgufFile, GgufNaming};

/// The hyper-parameters of a Llama-family model, as in Hugging Face's
/// `LlamaConfig`.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_positions: usize,
    pub tie_word_embeddings: bool,
    /// The padding token, whose embedding row Hugging Face initialises to
    /// zero (`padding_idx`); from `tokenizer.ggml.padding_token_id`.
    pub pad_token_id: Option<u32>,
    /// Standard deviation of the normal initialisation of projections and
    /// embeddings (Hugging Face's `initializer_range`).
    pub initializer_range: f64,
}

impl LlamaConfig {
    /// Reads the `llama.*` metadata of a GGUF file. Embeddings are tied when
    /// the file has no separate `output.weight`.
    pub fn from_gguf(f: &GgufFile) -> Result<Self, ModelError> {
        let keys = GgufDecoderKeys::new(f, "llama")?;
        let hidden_size = keys.usize("embedding_length")?;
        let n_heads = keys.usize("attention.head_count")?;
        let n_kv_heads = keys.n_kv_heads(n_heads)?;
        let head_dim = match keys.usize_opt("attention.key_length")? {
            Some(v) => v,
            None if n_heads > 0 => hidden_size / n_heads,
            None => 0,
        };
        if let Some(t) = keys.rope_scaling()? {
            return Err(keys.unsupported_rope_scaling(t));
        }
        let cfg = Self {
            vocab_size: keys.vocab_size()?,
            hidden_size,
            intermediate_size: keys.usize("feed_forward_length")?,
            n_layers: keys.usize("block_count")?,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_norm_eps: keys.f64("attention.layer_norm_rms_epsilon")?,
            rope_theta: keys.f64_opt("rope.freq_base")?.unwrap_or(10_000.0),
            max_positions: keys.usize("context_length")?,
            tie_word_embeddings: keys.tie_word_embeddings(),
            pad_token_id: keys.pad_token_id()?,
            initializer_range: 0.02,
        };
        cfg.check().map_err(|m| keys.config_err(m))?;
        Ok(cfg)
    }

    /// What the shared decoder needs to run this model.
    pub(crate) fn layout(&self) -> DecoderLayout {
        DecoderLayout {
            architecture: "llama",
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            max_positions: self.max_positions,
            tie_word_embeddings: self.tie_word_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            norms: NormPlacement::Pre,
            norm_plus_one: false,
            qk_norm: false,
            activation: Activation::Silu,
            embedding_scale: None,
            attention_scale: (self.head_dim as f32).powf(-0.5),
            attention_softcap: None,
            final_softcap: None,
            ropes: vec![Rope {
                base: self.rope_theta,
                factor: 1.0,
            }],
            layers: vec![
                LayerSpec {
                    rope: 0,
                    window: None,
                };
                self.n_layers
            ],
            initializer_range: self.initializer_range,
            pad_token_id: self.pad_token_id,
        }
    }

    /// Consistency of the shape parameters.
    pub fn check(&self) -> Result<(), String> {
        self.layout().check(&[])
    }

    /// How the GGUF file names this model's tensors, and how llama.cpp's
    /// converter reordered its query and key rows.
    fn gguf_naming(&self) -> GgufNaming {
        GgufNaming::llama(self.n_heads, self.n_kv_heads)
    }
}

decoder_model!(
    /// A Llama-family model ready to run.
    Llama,
    LlamaConfig
);
