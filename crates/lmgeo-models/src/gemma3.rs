//! Gemma 3 text decoder (`Gemma3ForCausalLM`): embeddings scaled by
//! sqrt(hidden), RMSNorm with `1 + w` scales before and after both attention
//! and feed-forward, RMSNorm on every query and key head, GELU (tanh)
//! gating, sliding-window layers with their own rotary base interleaved with
//! global layers, optional logit soft-capping, tied embeddings.
//!
//! This file holds what is Gemma's own: its config, read from GGUF metadata,
//! and the [`DecoderLayout`] that tells the shared decoder (`decoder.rs`) how
//! to run it. Like Hugging Face, the decoder keeps norm weights as `w` and
//! applies `1 + w`; the GGUF loader subtracts the `1` that llama.cpp's
//! converter folds into the stored scales.

use candle_core::quantized::gguf_file::Value;

use crate::ModelError;
use crate::activation::Activation;
use crate::decoder::{
    DecoderLayout, GgufDecoderKeys, LayerSpec, NormPlacement, Rope, decoder_model,
};
use crate::gguf::{GgufFile, GgufNaming};

/// Whether a layer attends to a sliding window or to the whole prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerAttention {
    Sliding,
    Full,
}

/// The hyper-parameters of a Gemma 3 text model, as in Hugging Face's
/// `Gemma3TextConfig`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemma3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// Rotary base of the global (full-attention) layers.
    pub rope_theta: f64,
    /// Linear rotary scaling factor of the global layers (1 = none).
    pub rope_scaling_factor: f64,
    /// Rotary base of the sliding-window layers.
    pub rope_local_base_freq: f64,
    pub sliding_window: usize,
    pub layer_types: Vec<LayerAttention>,
    /// Attention scores are multiplied by `query_pre_attn_scalar^-0.5`.
    pub query_pre_attn_scalar: f64,
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    pub max_positions: usize,
    pub tie_word_embeddings: bool,
    /// The padding token, whose embedding row Hugging Face initialises to
    /// zero (`padding_idx`); from `tokenizer.ggml.padding_token_id`.
    pub pad_token_id: Option<u32>,
    pub initializer_range: f64,
}

/// Hugging Face's default when a config gives no explicit layer types: every
/// sixth layer is global.
pub const DEFAULT_SLIDING_WINDOW_PATTERN: usize = 6;

impl Gemma3Config {
    /// Reads the `gemma3.*` metadata of a GGUF file. What GGUF does not carry
    /// is filled in the way transformers fills it when loading the same file
    /// (layer pattern of period 6, local rotary base 10000).
    pub fn from_gguf(f: &GgufFile) -> Result<Self, ModelError> {
        let keys = GgufDecoderKeys::new(f, "gemma3")?;
        let hidden_size = keys.usize("embedding_length")?;
        let n_heads = keys.usize("attention.head_count")?;
        let n_layers = keys.usize("block_count")?;
        let head_dim = keys.usize_opt("attention.key_length")?.unwrap_or(256);
        let pattern = keys.key("attention.sliding_window_pattern");
        let layer_types = match f.metadata().get(&pattern) {
            None => default_layer_types(n_layers, DEFAULT_SLIDING_WINDOW_PATTERN),
            Some(Value::Array(flags)) => flags
                .iter()
                .map(|flag| match flag {
                    Value::Bool(true) => Ok(LayerAttention::Sliding),
                    Value::Bool(false) => Ok(LayerAttention::Full),
                    v => Err(keys.config_err(format!(
                        "sliding_window_pattern holds {:?}, not booleans",
                        v.value_type()
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => default_layer_types(n_layers, f.usize(&pattern)?),
        };
        let rope_scaling_factor = match keys.rope_scaling()? {
            None => 1.0,
            Some("linear") => keys.f64("rope.scaling.factor")?,
            Some(t) => return Err(keys.unsupported_rope_scaling(t)),
        };
        // GGUF has no key for the attention scale. Gemma 3 scales by
        // head_dim^-0.5 except the 27B model (62 layers), which uses
        // (hidden / heads)^-0.5; llama.cpp hard-codes the same rule.
        let query_pre_attn_scalar = if n_layers == 62 && n_heads > 0 {
            (hidden_size / n_heads) as f64
        } else {
            head_dim as f64
        };
        let cfg = Self {
            vocab_size: keys.vocab_size()?,
            hidden_size,
            intermediate_size: keys.usize("feed_forward_length")?,
            n_layers,
            n_heads,
            n_kv_heads: keys.n_kv_heads(n_heads)?,
            head_dim,
            rms_norm_eps: keys.f64("attention.layer_norm_rms_epsilon")?,
            rope_theta: keys.f64_opt("rope.freq_base")?.unwrap_or(1_000_000.0),
            rope_scaling_factor,
            rope_local_base_freq: keys.f64_opt("rope.freq_base_swa")?.unwrap_or(10_000.0),
            sliding_window: keys.usize("attention.sliding_window")?,
            layer_types,
            query_pre_attn_scalar,
            attn_logit_softcapping: keys.f64_opt("attn_logit_softcapping")?,
            final_logit_softcapping: keys.f64_opt("final_logit_softcapping")?,
            max_positions: keys.usize("context_length")?,
            tie_word_embeddings: keys.tie_word_embeddings(),
            pad_token_id: keys.pad_token_id()?,
            initializer_range: 0.02,
        };
        cfg.check().map_err(|m| keys.config_err(m))?;
        Ok(cfg)
    }

    /// What the shared decoder needs to run this model. Rotary 0 is the
    /// sliding layers', rotary 1 the global layers'.
    pub(crate) fn layout(&self) -> DecoderLayout {
        DecoderLayout {
            architecture: "gemma3",
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            max_positions: self.max_positions,
            tie_word_embeddings: self.tie_word_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            norms: NormPlacement::Sandwich,
            norm_plus_one: true,
            qk_norm: true,
            activation: Activation::GeluTanh,
            // sqrt(hidden) rounded to f32 first, as transformers does.
            embedding_scale: Some((self.hidden_size as f64).sqrt() as f32),
            attention_scale: self.query_pre_attn_scalar.powf(-0.5) as f32,
            attention_softcap: self.attn_logit_softcapping.map(|c| c as f32),
            final_softcap: self.final_logit_softcapping,
            ropes: vec![
                Rope {
                    base: self.rope_local_base_freq,
                    factor: 1.0,
                },
                Rope {
                    base: self.rope_theta,
                    factor: self.rope_scaling_factor,
                },
            ],
            layers: self
                .layer_types
                .iter()
                .map(|kind| match kind {
                    LayerAttention::Sliding => LayerSpec {
                        rope: 0,
                        window: Some(self.sliding_window),
                    },
                    LayerAttention::Full => LayerSpec {
                        rope: 1,
                        window: None,
                    },
                })
                .collect(),
            initializer_range: self.initializer_range,
            pad_token_id: self.pad_token_id,
        }
    }

    pub fn check(&self) -> Result<(), String> {
        if self.layer_types.len() != self.n_layers {
            // Checked first: the layout has one layer per layer type.
            if self.n_layers == 0 {
                return Err("n_layers must be positive".into());
            }
            return Err(format!(
                "{} layer types for {} layers",
                self.layer_types.len(),
                self.n_layers
            ));
        }
        self.layout()
            .check(&[("sliding_window", self.sliding_window)])?;
        if self.query_pre_attn_scalar <= 0.0 || self.rope_scaling_factor <= 0.0 {
            return Err("attention scalar and rope scaling must be positive".into());
        }
        Ok(())
    }

    /// How the GGUF file names this model's tensors (and stores its norm
    /// weights as `1 + w`).
    fn gguf_naming(&self) -> GgufNaming {
        GgufNaming::gemma3()
    }
}

fn default_layer_types(n_layers: usize, period: usize) -> Vec<LayerAttention> {
    (0..n_layers)
        .map(|i| {
            if period > 0 && (i + 1) % period == 0 {
                LayerAttention::Full
            } else {
                LayerAttention::Sliding
            }
        })
        .collect()
}

decoder_model!(
    /// A Gemma 3 text model ready to run.
    Gemma3,
    Gemma3Config
);
