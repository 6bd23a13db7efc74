//! Llama-family decoder (SmolLM2 and kin): RMSNorm before attention and
//! feed-forward, half-split rotary, grouped-query attention, SwiGLU
//! feed-forward, optionally tied embeddings.
//!
//! This file holds what is Llama's own: its config, read from GGUF metadata,
//! and the [`DecoderLayout`] that tells the shared decoder (`decoder.rs`) how
//! to run it, as Hugging Face's `LlamaForCausalLM` does.

use std::path::Path;
use std::sync::Arc;

use candle_nn::{Init, VarBuilder};

use crate::activation::Activation;
use crate::decoder::{Decoder, DecoderLayout, GgufDecoderKeys, LayerSpec, NormPlacement, Rope};
use crate::gguf::{GgufFile, GgufNaming, LoadOptions};
use crate::init::InitFn;
use crate::{ForwardOutput, ForwardRequest, LanguageModel, ModelError, ModelInfo};

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

    /// All parameters, tied embeddings counted once (equals
    /// `sum(p.numel() for p in model.parameters())` in transformers).
    pub fn n_params(&self) -> u64 {
        self.layout().n_params()
    }

    /// Parameters outside the token embedding and the unembedding.
    pub fn n_params_non_embedding(&self) -> u64 {
        self.layout().n_params_non_embedding()
    }

    /// How Hugging Face's `LlamaPreTrainedModel` initialises a parameter:
    /// normal(0, initializer_range) for projections and embeddings, ones
    /// for RMSNorm scales. Passed as the hint of every `VarBuilder` lookup,
    /// so a random backend that honours hints reproduces that scheme. One
    /// detail a candle `Init` cannot say: the embedding row of
    /// [`Self::pad_token_id`] is zero in transformers.
    pub fn init_for(&self, hf_name: &str) -> Init {
        self.layout().init_for(hf_name)
    }

    /// transformers' `LlamaPreTrainedModel` initialisation (norms one, the
    /// padding token's embedding row zero), for [`crate::random_var_builder`].
    pub fn init_rule(&self) -> InitFn {
        self.layout().init_rule()
    }
}

/// A Llama-family model ready to run.
pub struct Llama {
    cfg: LlamaConfig,
    decoder: Decoder,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama")
            .field("info", self.decoder.info())
            .finish()
    }
}

impl Llama {
    /// Loads a GGUF file (`general.architecture = llama`).
    pub fn from_gguf(path: &Path, opts: &LoadOptions) -> Result<Self, ModelError> {
        let file = Arc::new(GgufFile::open(path)?);
        let cfg = LlamaConfig::from_gguf(&file)?;
        let naming = GgufNaming::llama(cfg.n_heads, cfg.n_kv_heads);
        let decoder = Decoder::from_gguf(file, naming, cfg.layout(), opts)?;
        Ok(Self { cfg, decoder })
    }

    /// Builds the model from any `VarBuilder` serving Hugging Face names in
    /// `f32`: a GGUF file, a safetensors checkpoint, or random weights.
    pub fn load(vb: VarBuilder, cfg: LlamaConfig, name: &str) -> Result<Self, ModelError> {
        let decoder = Decoder::load(&vb, cfg.layout(), name)?;
        Ok(Self { cfg, decoder })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Runs every step in candle tensor ops, as on a GPU, even on the CPU:
    /// how the tests check the GPU path on a machine without one.
    pub fn with_tensor_ops(mut self) -> Self {
        self.decoder.use_tensor_ops();
        self
    }
}

impl LanguageModel for Llama {
    fn info(&self) -> &ModelInfo {
        self.decoder.info()
    }

    fn forward(
        &self,
        tokens: &[u32],
        request: &ForwardRequest,
    ) -> Result<ForwardOutput, ModelError> {
        self.decoder.run(tokens, request)
    }
}
