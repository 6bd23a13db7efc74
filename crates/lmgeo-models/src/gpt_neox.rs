//! GPT-NeoX (the Pythia family), read from a Hugging Face folder or built with
//! random weights from its config.
//!
//! Follows transformers' `GPTNeoXForCausalLM`: pre-LayerNorm blocks with a
//! parallel (or, when `use_parallel_residual` is false, sequential) residual,
//! a fused QKV projection whose output is laid out per head as
//! `[q_h | k_h | v_h]`, rotary position embeddings on the first
//! `rotary_pct * head_dim` channels of each head (rotate-half convention), a
//! final LayerNorm and an untied (by default) unembedding `embed_out`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Embedding, LayerNorm, Module, VarBuilder};

use crate::activation::Activation;
use crate::attention::{QkvLayout, RopeInPlace, attend};
use crate::hf_common::{
    ConfigReader, RowSelection, Tensors, assemble, attention_rows, check_tokens, last_rows,
    pad_batch, read_json, split_sequences,
};
use crate::init::{InitFn, InitRule, random_var_builder};
use crate::kernels::with_f32;
use crate::packed_gemm::Dense;
use crate::tensor_ops::{self, Ops, Rotary, Visibility};
use crate::{
    F32Matrix, ForwardOutput, ForwardRequest, LanguageModel, LogitsCapture, ModelError, ModelInfo,
};

/// The subset of a GPT-NeoX `config.json` the forward pass depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct GptNeoXConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    /// Fraction of each head's channels that are rotated: `rotary_pct` in the
    /// hub's Pythia configs, `rope_parameters.partial_rotary_factor` in
    /// transformers 5.
    pub rotary_pct: f64,
    /// `rotary_emb_base` / `rope_parameters.rope_theta`.
    pub rotary_emb_base: f64,
    pub use_parallel_residual: bool,
    pub tie_word_embeddings: bool,
    /// Biases of the QKV and output projections (`attention_bias`, default true).
    pub attention_bias: bool,
    /// Standard deviation of transformers' weight init (used by random init).
    pub initializer_range: f64,
}

impl GptNeoXConfig {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let value = read_json(path)?;
        Self::from_value(&value, path)
    }

    /// Parses a config object; `origin` only labels errors.
    pub fn from_value(value: &serde_json::Value, origin: &Path) -> Result<Self, ModelError> {
        let r = ConfigReader {
            value,
            path: origin.to_path_buf(),
        };
        let model_type = r.str_or("model_type", "gpt_neox")?;
        if model_type != "gpt_neox" {
            return Err(r.error(format!("model_type is `{model_type}`, not `gpt_neox`")));
        }
        // transformers 5 folds the rotary settings into `rope_parameters`; the hub's
        // Pythia configs spell them `rotary_pct` and `rotary_emb_base`. The defaults
        // are transformers' (0.25 and 10000).
        let rope = value
            .get("rope_parameters")
            .or_else(|| value.get("rope_scaling"))
            .filter(|v| !v.is_null());
        let (mut rotary_pct, mut base) = (r.f64_or("rotary_pct", 0.25)?, 10000.0);
        base = r.f64_or("rotary_emb_base", base)?;
        if let Some(rope) = rope {
            let rr = ConfigReader {
                value: rope,
                path: r.path.clone(),
            };
            let kind = rope
                .get("rope_type")
                .or_else(|| rope.get("type"))
                .and_then(|k| k.as_str())
                .unwrap_or("default");
            if kind != "default" {
                return Err(ModelError::Unsupported(format!(
                    "{}: rope type `{kind}` (only the default rotary embedding is implemented)",
                    origin.display()
                )));
            }
            rotary_pct = rr.f64_or("partial_rotary_factor", rotary_pct)?;
            base = rr.f64_or("rope_theta", base)?;
        }
        let config = Self {
            vocab_size: r.usize("vocab_size")?,
            hidden_size: r.usize("hidden_size")?,
            num_hidden_layers: r.usize("num_hidden_layers")?,
            num_attention_heads: r.usize("num_attention_heads")?,
            intermediate_size: r.usize("intermediate_size")?,
            max_position_embeddings: r.usize_or("max_position_embeddings", Some(2048))?,
            hidden_act: r.activation("hidden_act", "gelu")?,
            layer_norm_eps: r.f64_or("layer_norm_eps", 1e-5)?,
            rotary_pct,
            rotary_emb_base: base,
            use_parallel_residual: r.bool_or("use_parallel_residual", true)?,
            tie_word_embeddings: r.bool_or("tie_word_embeddings", false)?,
            attention_bias: r.bool_or("attention_bias", true)?,
            initializer_range: r.f64_or("initializer_range", 0.02)?,
        };
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &Path) -> Result<(), ModelError> {
        let err = |message: String| ModelError::Config {
            path: origin.to_path_buf(),
            message,
        };
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.vocab_size == 0 || self.num_hidden_layers == 0 || self.intermediate_size == 0 {
            return Err(err(
                "vocab_size, num_hidden_layers and intermediate_size must be positive".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.rotary_pct) {
            return Err(err(format!(
                "rotary_pct {} is not in [0, 1]",
                self.rotary_pct
            )));
        }
        if !self.rotary_ndims().is_multiple_of(2) {
            return Err(err(format!(
                "{} rotary channels per head: must be even",
                self.rotary_ndims()
            )));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// transformers' `GPTNeoXPreTrainedModel._init_weights`: every `nn.Linear`
    /// and `nn.Embedding` weight (including the untied `embed_out`)
    /// `N(0, initializer_range)`, biases zero, LayerNorm weight one and bias zero.
    pub fn init_rule(&self) -> InitFn {
        let std = self.initializer_range;
        Box::new(move |name: &str, _shape: &[usize]| {
            let is_norm = name.contains("layernorm") || name.contains("layer_norm");
            match (is_norm, name.ends_with(".bias")) {
                (true, false) => InitRule::Ones,
                (_, true) => InitRule::Zeros,
                (false, false) => InitRule::Normal { std },
            }
        })
    }

    /// Rotated channels per head; truncated like transformers' `int(head_dim * pct)`.
    pub fn rotary_ndims(&self) -> usize {
        (self.head_dim() as f64 * self.rotary_pct) as usize
    }

    /// All parameters of `GPTNeoXForCausalLM`, the tied unembedding counted once.
    pub fn n_params(&self) -> u64 {
        let (h, v) = (self.hidden_size as u64, self.vocab_size as u64);
        let unembedding = if self.tie_word_embeddings { 0 } else { v * h };
        self.n_params_non_embedding() + v * h + unembedding
    }

    /// Parameters outside `embed_in` and `embed_out` (the count the Pythia
    /// paper's tables call non-embedding).
    pub fn n_params_non_embedding(&self) -> u64 {
        let (h, i) = (self.hidden_size as u64, self.intermediate_size as u64);
        let attn_bias = if self.attention_bias { 1 } else { 0 };
        let norms = 2 * 2 * h;
        let attention = 3 * h * h + 3 * h * attn_bias + h * h + h * attn_bias;
        let mlp = h * i + i + i * h + h;
        self.num_hidden_layers as u64 * (norms + attention + mlp) + 2 * h
    }
}

struct Block {
    input_norm: LayerNorm,
    post_attention_norm: LayerNorm,
    qkv: Dense,
    dense: Dense,
    mlp_in: Dense,
    mlp_out: Dense,
}

/// Per-forward tensors shared by all blocks.
struct Context<'a> {
    /// `(n, rotary_ndims / 2)` tables, row-major.
    cos: &'a [f32],
    sin: &'a [f32],
    lengths: &'a [usize],
    /// The probability rows to return; `None` keeps none.
    capture: Option<&'a RowSelection>,
    /// The rotary tables on the model's device, when it runs tensor ops.
    rotary: Option<Rotary>,
}

/// A GPT-NeoX causal language model.
pub struct GptNeoX {
    config: GptNeoXConfig,
    info: ModelInfo,
    embed_in: Embedding,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
    /// The unembedding transposed, `(hidden, vocab)` and contiguous (a plain
    /// row-major product for gemm); `None` for a bare `GPTNeoXModel` checkpoint.
    unembedding_t: Option<Tensor>,
    device: Device,
    ops: Ops,
}

impl GptNeoX {
    /// Loads weights from a Hugging Face folder (config.json plus safetensors,
    /// sharded safetensors or PyTorch `.bin` files).
    pub fn from_folder(dir: &Path) -> Result<Self, ModelError> {
        Self::from_folder_on(dir, &Device::Cpu)
    }

    /// Like [`Self::from_folder`], with the weights on `device`.
    pub fn from_folder_on(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let config = GptNeoXConfig::from_file(&dir.join("config.json"))?;
        let vb = crate::hf_weights::weights_var_builder(dir, DType::F32, device)?;
        Self::from_var_builder(config, vb, dir, &dir.display().to_string())
    }

    /// A model of this config with transformers-style random weights: every tensor
    /// is drawn from `(seed, tensor name)` (see [`crate::init`]).
    pub fn from_config_random(config: GptNeoXConfig, seed: u64) -> Result<Self, ModelError> {
        Self::from_config_random_on(config, seed, &Device::Cpu)
    }

    /// Like [`Self::from_config_random`], with the weights on `device`.
    pub fn from_config_random_on(
        config: GptNeoXConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let vb = random_var_builder(seed, DType::F32, device, config.init_rule());
        let name = format!("gpt_neox (random, seed {seed})");
        Self::from_var_builder(config, vb, Path::new("<random>"), &name)
    }

    /// Builds the model from any tensor source that uses transformers' names
    /// (`gpt_neox.layers.0.attention.query_key_value.weight`, ...; the prefix may
    /// be absent for a bare `GPTNeoXModel`).
    pub fn from_var_builder(
        config: GptNeoXConfig,
        vb: VarBuilder<'_>,
        origin: &Path,
        name: &str,
    ) -> Result<Self, ModelError> {
        let t = Tensors {
            vb,
            origin: origin.to_path_buf(),
        };
        let (h, v) = (config.hidden_size, config.vocab_size);
        let base = if t.contains("gpt_neox.embed_in.weight") || !t.contains("embed_in.weight") {
            "gpt_neox."
        } else {
            ""
        };
        let embed_weight = t.get((v, h), &format!("{base}embed_in.weight"))?;
        let embed_in = Embedding::new(embed_weight.clone(), h);
        let eps = config.layer_norm_eps;
        let bias = config.attention_bias;
        let i = config.intermediate_size;
        let blocks = (0..config.num_hidden_layers)
            .map(|l| {
                let p = format!("{base}layers.{l}");
                Ok(Block {
                    input_norm: t.layer_norm(h, eps, &format!("{p}.input_layernorm"))?,
                    post_attention_norm: t.layer_norm(
                        h,
                        eps,
                        &format!("{p}.post_attention_layernorm"),
                    )?,
                    qkv: t.linear(h, 3 * h, &format!("{p}.attention.query_key_value"), bias)?,
                    dense: t.linear(h, h, &format!("{p}.attention.dense"), bias)?,
                    mlp_in: t.linear(h, i, &format!("{p}.mlp.dense_h_to_4h"), true)?,
                    mlp_out: t.linear(i, h, &format!("{p}.mlp.dense_4h_to_h"), true)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let final_norm = t.layer_norm(h, eps, &format!("{base}final_layer_norm"))?;
        // Pythia checkpoints name the unembedding `embed_out`; transformers 5 calls the
        // module `lm_head` (and maps the name on load), so accept either.
        let unembedding: Option<Tensor> = if config.tie_word_embeddings {
            Some(embed_weight)
        } else if t.contains("embed_out.weight") {
            Some(t.get((v, h), "embed_out.weight")?)
        } else if t.contains("lm_head.weight") {
            Some(t.get((v, h), "lm_head.weight")?)
        } else if base.is_empty() {
            None
        } else {
            return Err(ModelError::MissingTensor {
                name: "embed_out.weight".into(),
                path: t.origin.clone(),
            });
        };
        let unembedding_t = unembedding.map(|w| w.t()?.contiguous()).transpose()?;
        let info = ModelInfo {
            architecture: "gpt_neox".into(),
            name: name.to_string(),
            n_layers: config.num_hidden_layers,
            hidden_size: h,
            n_heads: config.num_attention_heads,
            n_kv_heads: config.num_attention_heads,
            vocab_size: v,
            max_positions: config.max_position_embeddings,
            n_params: config.n_params(),
            n_params_non_embedding: config.n_params_non_embedding(),
            causal: true,
            device: crate::device::device_label(t.vb.device()),
        };
        Ok(Self {
            config,
            info,
            embed_in,
            blocks,
            final_norm,
            unembedding_t,
            ops: Ops::for_device(t.vb.device()),
            device: t.vb.device().clone(),
        })
    }

    pub fn config(&self) -> &GptNeoXConfig {
        &self.config
    }

    /// Runs every step in candle tensor ops, as on a GPU, even on the CPU:
    /// how the tests check the GPU path on a machine without one.
    pub fn with_tensor_ops(mut self) -> Self {
        self.ops = Ops::Tensor;
        self
    }

    /// Replaces the human-readable name reported in [`ModelInfo::name`].
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.info.name = name.into();
        self
    }

    /// cos and sin tables `(n, rotary_ndims / 2)`: the rotated slice of a
    /// head is an ordinary rotary head of `rotary_ndims` dimensions.
    fn rotary_tables(&self, n: usize) -> (Vec<f32>, Vec<f32>) {
        crate::attention::rotary_tables(
            n,
            self.config.rotary_ndims(),
            self.config.rotary_emb_base,
            1.0,
        )
    }

    fn block_forward(
        &self,
        block: &Block,
        x: &Tensor,
        ctx: &Context<'_>,
    ) -> candle_core::Result<(Tensor, Vec<Vec<F32Matrix>>)> {
        let (b, n, h) = x.dims3()?;
        let layout = QkvLayout {
            batch: b,
            n,
            heads: self.config.num_attention_heads,
            head_dim: self.config.head_dim(),
            per_head_interleaved: true,
        };
        let qkv = block
            .qkv
            .forward(&block.input_norm.forward(x)?)?
            .contiguous()?;
        let scale = 1.0 / (layout.head_dim as f32).sqrt();
        let (context, probs) = match self.ops {
            Ops::CpuKernels => {
                // `qkv` is a fresh tensor, so rotating its q and k channels in place is safe.
                if self.config.rotary_ndims() > 0 {
                    qkv.inplace_op1(&RopeInPlace {
                        layout,
                        cos: ctx.cos,
                        sin: ctx.sin,
                    })?;
                }
                let attended = with_f32(&qkv, |data| {
                    attend(data, layout, ctx.lengths, true, scale, ctx.capture)
                })?;
                let context = Tensor::from_vec(attended.context, (b, n, h), &self.device)?;
                (context, attended.probs)
            }
            Ops::Tensor => {
                let visibility = Visibility {
                    causal: true,
                    window: None,
                    lengths: ctx.lengths,
                };
                tensor_ops::fused_attention(
                    &qkv,
                    layout,
                    &visibility,
                    scale as f64,
                    ctx.rotary.as_ref(),
                    ctx.capture,
                )?
            }
        };
        let attn = block.dense.forward(&context)?;
        let mlp = |y: &Tensor| {
            block.mlp_out.forward(
                &self
                    .config
                    .hidden_act
                    .apply_with(block.mlp_in.forward(y)?, self.ops)?,
            )
        };
        let out = if self.config.use_parallel_residual {
            let m = mlp(&block.post_attention_norm.forward(x)?)?;
            ((m + attn)? + x)?
        } else {
            let y = (attn + x)?;
            (mlp(&block.post_attention_norm.forward(&y)?)? + y)?
        };
        Ok((out, probs))
    }

    fn run(
        &self,
        batch: &[&[u32]],
        request: &ForwardRequest,
    ) -> Result<Vec<ForwardOutput>, ModelError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        for tokens in batch {
            // Rotary positions have no table to run off, so longer inputs are allowed
            // (as in transformers), though Pythia was trained on 2048.
            check_tokens(tokens, self.config.vocab_size, None)?;
        }
        if request.logits != LogitsCapture::None && self.unembedding_t.is_none() {
            return Err(ModelError::Request(
                "this GPT-NeoX checkpoint has no unembedding (embed_out), so no logits".into(),
            ));
        }
        let (ids, lengths) = pad_batch(batch, 0, &self.device)?;
        let selection = attention_rows(&request.attention, &lengths)?;
        let n_max = ids.dim(1)?;
        let (cos, sin) = self.rotary_tables(n_max);
        // Right padding needs no key mask: causality already hides every later
        // (padded) key from the real queries, and padded queries are skipped.
        let ctx = Context {
            cos: &cos,
            sin: &sin,
            lengths: &lengths,
            capture: selection.as_ref(),
            rotary: match self.ops {
                Ops::Tensor if self.config.rotary_ndims() > 0 => Some(Rotary::new(
                    &cos,
                    &sin,
                    self.config.rotary_ndims(),
                    &self.device,
                )?),
                _ => None,
            },
        };

        let mut x = self.embed_in.forward(&ids)?;
        let embeddings = split_sequences(&x, &lengths)?;
        let mut layers = Vec::with_capacity(self.blocks.len());
        let mut attentions = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (out, probs) = self.block_forward(block, &x, &ctx)?;
            layers.push(split_sequences(&out, &lengths)?);
            if selection.is_some() {
                attentions.push(probs);
            }
            x = out;
        }
        let normed = self.final_norm.forward(&x)?;
        let final_norm = split_sequences(&normed, &lengths)?;
        let logits = match (&request.logits, &self.unembedding_t) {
            (LogitsCapture::None, _) | (_, None) => None,
            (LogitsCapture::Last, Some(w)) => {
                let last = last_rows(&normed, &lengths)?.matmul(w)?;
                Some(split_sequences(
                    &last.unsqueeze(1)?,
                    &vec![1; lengths.len()],
                )?)
            }
            (LogitsCapture::All, Some(w)) => {
                let (b, n, h) = normed.dims3()?;
                let all = normed.reshape((b * n, h))?.matmul(w)?;
                Some(split_sequences(&all.reshape((b, n, ()))?, &lengths)?)
            }
        };
        Ok(assemble(
            embeddings,
            layers,
            Some(final_norm),
            attentions,
            selection.as_ref(),
            logits,
            &request.logits,
            &lengths,
        ))
    }
}

impl LanguageModel for GptNeoX {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn forward(
        &self,
        tokens: &[u32],
        request: &ForwardRequest,
    ) -> Result<ForwardOutput, ModelError> {
        let mut out = self.run(&[tokens], request)?;
        Ok(out.remove(0))
    }

    fn forward_batch(
        &self,
        batch: &[&[u32]],
        request: &ForwardRequest,
    ) -> Result<Vec<ForwardOutput>, ModelError> {
        self.run(batch, request)
    }
}
