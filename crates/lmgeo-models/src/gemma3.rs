//! Gemma 3 text decoder (`Gemma3ForCausalLM`): embeddings scaled by
//! sqrt(hidden), RMSNorm with `1 + w` scales before and after both attention
//! and feed-forward, RMSNorm on every query and key head, GELU (tanh)
//! gating, sliding-window layers with their own rotary base interleaved with
//! global layers, optional logit soft-capping, tied embeddings.
//!
//! Like `llama.rs`, written against Hugging Face names and conventions (norm
//! weights are `w`, applied as `1 + w`); the GGUF loader subtracts the `1`
//! that llama.cpp's converter folds into the stored scales.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::decoder_ops::{
    Act, AttnSpec, HeadPrep, Proj, captured_queries, cpu_attention_fused, cpu_attention_split,
    gated, gated_pair, head_matrices, logit_positions, rotary_tables, to_matrix, validate,
};
use crate::gguf::{GgufFile, GgufNaming, GgufWeights, LoadOptions, WeightFormat};
use crate::tensor_ops::{self, DecoderAttention, Ops, Rotary};
use crate::{ForwardOutput, ForwardRequest, LanguageModel, ModelError, ModelInfo};

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
        let arch = f.architecture()?;
        if arch != "gemma3" {
            return Err(ModelError::Unsupported(format!(
                "{}: architecture `{arch}` is not gemma3",
                f.path().display()
            )));
        }
        let key = |k: &str| format!("gemma3.{k}");
        let config_err = |message: String| ModelError::Config {
            path: f.path().to_path_buf(),
            message,
        };
        let hidden_size = f.usize(&key("embedding_length"))?;
        let n_heads = f.usize(&key("attention.head_count"))?;
        let n_layers = f.usize(&key("block_count"))?;
        let head_dim = match f.u64_opt(&key("attention.key_length"))? {
            Some(v) => v as usize,
            None => 256,
        };
        let layer_types = match f.metadata().get(&key("attention.sliding_window_pattern")) {
            None => default_layer_types(n_layers, DEFAULT_SLIDING_WINDOW_PATTERN),
            Some(candle_core::quantized::gguf_file::Value::Array(flags)) => {
                let mut types = Vec::with_capacity(flags.len());
                for flag in flags {
                    match flag {
                        candle_core::quantized::gguf_file::Value::Bool(true) => {
                            types.push(LayerAttention::Sliding)
                        }
                        candle_core::quantized::gguf_file::Value::Bool(false) => {
                            types.push(LayerAttention::Full)
                        }
                        v => {
                            return Err(config_err(format!(
                                "sliding_window_pattern holds {:?}, not booleans",
                                v.value_type()
                            )));
                        }
                    }
                }
                types
            }
            Some(_) => {
                let period = f.usize(&key("attention.sliding_window_pattern"))?;
                default_layer_types(n_layers, period)
            }
        };
        let rope_scaling_factor = match f.str_opt(&key("rope.scaling.type"))? {
            None | Some("none") => 1.0,
            Some("linear") => f.f64(&key("rope.scaling.factor"))?,
            Some(t) => {
                return Err(ModelError::Unsupported(format!(
                    "{}: rope scaling `{t}` is not implemented",
                    f.path().display()
                )));
            }
        };
        // GGUF has no key for the attention scale. Gemma 3 scales by
        // head_dim^-0.5 except the 27B model (62 layers), which uses
        // (hidden / heads)^-0.5; llama.cpp hard-codes the same rule.
        let query_pre_attn_scalar = if n_layers == 62 && n_heads > 0 {
            (hidden_size / n_heads) as f64
        } else {
            head_dim as f64
        };
        let vocab_size = match f.u64_opt(&key("vocab_size"))? {
            Some(v) => v as usize,
            None => f.str_array("tokenizer.ggml.tokens")?.len(),
        };
        let cfg = Self {
            vocab_size,
            hidden_size,
            intermediate_size: f.usize(&key("feed_forward_length"))?,
            n_layers,
            n_heads,
            n_kv_heads: match f.u64_opt(&key("attention.head_count_kv"))? {
                Some(v) => v as usize,
                None => n_heads,
            },
            head_dim,
            rms_norm_eps: f.f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: f.f64_opt(&key("rope.freq_base"))?.unwrap_or(1_000_000.0),
            rope_scaling_factor,
            rope_local_base_freq: f.f64_opt(&key("rope.freq_base_swa"))?.unwrap_or(10_000.0),
            sliding_window: f.usize(&key("attention.sliding_window"))?,
            layer_types,
            query_pre_attn_scalar,
            attn_logit_softcapping: f.f64_opt(&key("attn_logit_softcapping"))?,
            final_logit_softcapping: f.f64_opt(&key("final_logit_softcapping"))?,
            max_positions: f.usize(&key("context_length"))?,
            tie_word_embeddings: f.tensor_info("output.weight").is_none(),
            pad_token_id: f
                .u64_opt("tokenizer.ggml.padding_token_id")?
                .and_then(|v| u32::try_from(v).ok()),
            initializer_range: 0.02,
        };
        cfg.check().map_err(config_err)?;
        Ok(cfg)
    }

    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("sliding_window", self.sliding_window),
            ("max_positions", self.max_positions),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(format!(
                "{} heads cannot be grouped over {} key/value heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim {} must be even for rotary",
                self.head_dim
            ));
        }
        if self.layer_types.len() != self.n_layers {
            return Err(format!(
                "{} layer types for {} layers",
                self.layer_types.len(),
                self.n_layers
            ));
        }
        if self.query_pre_attn_scalar <= 0.0 || self.rope_scaling_factor <= 0.0 {
            return Err("attention scalar and rope scaling must be positive".into());
        }
        Ok(())
    }

    fn per_layer_params(&self) -> u64 {
        let d = self.hidden_size as u64;
        let q = (self.n_heads * self.head_dim) as u64;
        let kv = (self.n_kv_heads * self.head_dim) as u64;
        let f = self.intermediate_size as u64;
        let hd = self.head_dim as u64;
        d * q + 2 * d * kv + q * d + 3 * d * f + 4 * d + 2 * hd
    }

    fn embedding_params(&self) -> u64 {
        let e = (self.vocab_size * self.hidden_size) as u64;
        if self.tie_word_embeddings { e } else { 2 * e }
    }

    /// All parameters, tied embeddings counted once.
    pub fn n_params(&self) -> u64 {
        self.embedding_params() + self.n_params_non_embedding()
    }

    /// Parameters outside the token embedding and the unembedding.
    pub fn n_params_non_embedding(&self) -> u64 {
        self.n_layers as u64 * self.per_layer_params() + self.hidden_size as u64
    }

    /// Hugging Face's initialisation: normal(0, initializer_range) for
    /// projections and embeddings, zeros for the norm weights (which act as
    /// `1 + w`). As for Llama, the embedding row of
    /// [`Self::pad_token_id`] is zero in transformers, which a candle `Init`
    /// cannot express.
    pub fn init_for(&self, hf_name: &str) -> Init {
        if hf_name.ends_with("norm.weight") {
            Init::Const(0.0)
        } else {
            Init::Randn {
                mean: 0.0,
                stdev: self.initializer_range,
            }
        }
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

/// Norm scales are stored as `1 + w`, ready to multiply.
struct Block {
    kind: LayerAttention,
    input_norm: Tensor,
    qkv: Qkv,
    q_norm: HeadNorm,
    k_norm: HeadNorm,
    o_proj: Proj,
    post_attn_norm: Tensor,
    pre_ffn_norm: Tensor,
    mlp: Mlp,
    post_ffn_norm: Tensor,
}

enum Qkv {
    Fused(Proj),
    Split(Proj, Proj, Proj),
}

enum Mlp {
    Fused { gate_up: Proj, down: Proj },
    Split { gate: Proj, up: Proj, down: Proj },
}

enum Embedding {
    Dense(Tensor),
    Quant(Arc<QTensor>),
}

/// A Gemma 3 text model ready to run.
pub struct Gemma3 {
    cfg: Gemma3Config,
    info: ModelInfo,
    embed: Embedding,
    blocks: Vec<Block>,
    final_norm: Tensor,
    lm_head: Proj,
    device: Device,
    ops: Ops,
}

impl std::fmt::Debug for Gemma3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemma3").field("info", &self.info).finish()
    }
}

fn layer_name(i: usize, rest: &str) -> String {
    format!("model.layers.{i}.{rest}")
}

fn one_plus(t: Tensor) -> Result<Tensor, ModelError> {
    Ok((t + 1.0)?)
}

/// The RMSNorm weight of query and key heads, kept on the host for the CPU
/// kernels and on the model's device for tensor ops.
struct HeadNorm {
    host: Vec<f32>,
    tensor: Tensor,
}

fn head_norm(tensor: Tensor) -> Result<HeadNorm, ModelError> {
    let host = tensor.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
    Ok(HeadNorm { host, tensor })
}

impl Gemma3 {
    /// Loads a GGUF file (`general.architecture = gemma3`).
    pub fn from_gguf(path: &Path, opts: &LoadOptions) -> Result<Self, ModelError> {
        let file = Arc::new(GgufFile::open(path)?);
        let cfg = Gemma3Config::from_gguf(&file)?;
        let weights = GgufWeights::new(file, GgufNaming::gemma3());
        let name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match opts.format {
            WeightFormat::DequantizedF32 => {
                let vb = weights.var_builder(DType::F32, &opts.device);
                Self::load(vb, cfg, &name)
            }
            WeightFormat::Quantized => Self::load_quantized(&weights, cfg, &name, &opts.device),
        }
    }

    /// Builds the model from any `VarBuilder` serving Hugging Face names and
    /// conventions in `f32`.
    pub fn load(vb: VarBuilder, cfg: Gemma3Config, name: &str) -> Result<Self, ModelError> {
        cfg.check()
            .map_err(|m| ModelError::Unsupported(format!("gemma3 config: {m}")))?;
        let d = cfg.hidden_size;
        let q = cfg.n_heads * cfg.head_dim;
        let kv = cfg.n_kv_heads * cfg.head_dim;
        let f = cfg.intermediate_size;
        let lookup_err =
            |n: &str, e: candle_core::Error| ModelError::Unsupported(format!("weight `{n}`: {e}"));
        let get2 = |n: &str, s: (usize, usize)| {
            vb.get_with_hints(s, n, cfg.init_for(n))
                .map_err(|e| lookup_err(n, e))
        };
        let get1 = |n: &str, len: usize| {
            vb.get_with_hints(len, n, cfg.init_for(n))
                .map_err(|e| lookup_err(n, e))
        };
        let embed = get2("model.embed_tokens.weight", (cfg.vocab_size, d))?;
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let l = |r: &str| layer_name(i, r);
            let wq = get2(&l("self_attn.q_proj.weight"), (q, d))?;
            let wk = get2(&l("self_attn.k_proj.weight"), (kv, d))?;
            let wv = get2(&l("self_attn.v_proj.weight"), (kv, d))?;
            let gate = get2(&l("mlp.gate_proj.weight"), (f, d))?;
            let up = get2(&l("mlp.up_proj.weight"), (f, d))?;
            blocks.push(Block {
                kind: cfg.layer_types[i],
                input_norm: one_plus(get1(&l("input_layernorm.weight"), d)?)?,
                qkv: Qkv::Fused(Proj::dense(&Tensor::cat(&[wq, wk, wv], 0)?)?),
                q_norm: head_norm(one_plus(get1(
                    &l("self_attn.q_norm.weight"),
                    cfg.head_dim,
                )?)?)?,
                k_norm: head_norm(one_plus(get1(
                    &l("self_attn.k_norm.weight"),
                    cfg.head_dim,
                )?)?)?,
                o_proj: Proj::dense(&get2(&l("self_attn.o_proj.weight"), (d, q))?)?,
                post_attn_norm: one_plus(get1(&l("post_attention_layernorm.weight"), d)?)?,
                pre_ffn_norm: one_plus(get1(&l("pre_feedforward_layernorm.weight"), d)?)?,
                mlp: Mlp::Fused {
                    gate_up: Proj::dense(&Tensor::cat(&[gate, up], 0)?)?,
                    down: Proj::dense(&get2(&l("mlp.down_proj.weight"), (d, f))?)?,
                },
                post_ffn_norm: one_plus(get1(&l("post_feedforward_layernorm.weight"), d)?)?,
            });
        }
        let final_norm = one_plus(get1("model.norm.weight", d)?)?;
        let lm_head = if cfg.tie_word_embeddings {
            Proj::AsStored(embed.clone())
        } else {
            Proj::AsStored(get2("lm_head.weight", (cfg.vocab_size, d))?)
        };
        Ok(Self::assemble(
            cfg,
            name,
            Embedding::Dense(embed),
            blocks,
            final_norm,
            lm_head,
            vb.device().clone(),
        ))
    }

    fn load_quantized(
        w: &GgufWeights,
        cfg: Gemma3Config,
        name: &str,
        device: &Device,
    ) -> Result<Self, ModelError> {
        cfg.check()
            .map_err(|m| ModelError::Unsupported(format!("gemma3 config: {m}")))?;
        let qm = |n: &str| -> Result<Proj, ModelError> {
            Ok(Proj::Quant(QMatMul::from_qtensor(w.quantized(n, device)?)?))
        };
        let norm = |n: &str| one_plus(w.dense(n, device)?);
        let embed = Arc::new(w.quantized("model.embed_tokens.weight", device)?);
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let l = |r: &str| layer_name(i, r);
            blocks.push(Block {
                kind: cfg.layer_types[i],
                input_norm: norm(&l("input_layernorm.weight"))?,
                qkv: Qkv::Split(
                    qm(&l("self_attn.q_proj.weight"))?,
                    qm(&l("self_attn.k_proj.weight"))?,
                    qm(&l("self_attn.v_proj.weight"))?,
                ),
                q_norm: head_norm(norm(&l("self_attn.q_norm.weight"))?)?,
                k_norm: head_norm(norm(&l("self_attn.k_norm.weight"))?)?,
                o_proj: qm(&l("self_attn.o_proj.weight"))?,
                post_attn_norm: norm(&l("post_attention_layernorm.weight"))?,
                pre_ffn_norm: norm(&l("pre_feedforward_layernorm.weight"))?,
                mlp: Mlp::Split {
                    gate: qm(&l("mlp.gate_proj.weight"))?,
                    up: qm(&l("mlp.up_proj.weight"))?,
                    down: qm(&l("mlp.down_proj.weight"))?,
                },
                post_ffn_norm: norm(&l("post_feedforward_layernorm.weight"))?,
            });
        }
        let final_norm = norm("model.norm.weight")?;
        let lm_head = if cfg.tie_word_embeddings {
            Proj::Quant(QMatMul::from_arc(embed.clone())?)
        } else {
            qm("lm_head.weight")?
        };
        Ok(Self::assemble(
            cfg,
            name,
            Embedding::Quant(embed),
            blocks,
            final_norm,
            lm_head,
            device.clone(),
        ))
    }

    fn assemble(
        cfg: Gemma3Config,
        name: &str,
        embed: Embedding,
        blocks: Vec<Block>,
        final_norm: Tensor,
        lm_head: Proj,
        device: Device,
    ) -> Self {
        let info = ModelInfo {
            architecture: "gemma3".into(),
            name: name.to_string(),
            n_layers: cfg.n_layers,
            hidden_size: cfg.hidden_size,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            vocab_size: cfg.vocab_size,
            max_positions: cfg.max_positions,
            n_params: cfg.n_params(),
            n_params_non_embedding: cfg.n_params_non_embedding(),
            causal: true,
            device: crate::device::device_label(&device),
        };
        Self {
            cfg,
            info,
            embed,
            blocks,
            final_norm,
            lm_head,
            ops: Ops::for_device(&device),
            device,
        }
    }

    /// Runs every step in candle tensor ops, as on a GPU, even on the CPU:
    /// how the tests check the GPU path on a machine without one.
    pub fn with_tensor_ops(mut self) -> Self {
        self.ops = Ops::Tensor;
        self
    }

    pub fn config(&self) -> &Gemma3Config {
        &self.cfg
    }

    /// Token embeddings times sqrt(hidden), the scale rounded to `f32` first
    /// as transformers does.
    fn embed(&self, tokens: &[u32]) -> Result<Tensor, ModelError> {
        let ids = Tensor::new(tokens, &self.device)?;
        let e = match &self.embed {
            Embedding::Dense(e) => e.index_select(&ids, 0)?,
            Embedding::Quant(q) => q.embedding(&ids)?,
        };
        let scale = (self.cfg.hidden_size as f64).sqrt() as f32;
        Ok((e * scale as f64)?)
    }

    fn run(&self, tokens: &[u32], request: &ForwardRequest) -> Result<ForwardOutput, ModelError> {
        let cfg = &self.cfg;
        validate(tokens, request, cfg.vocab_size, cfg.max_positions)?;
        let n = tokens.len();
        let eps = cfg.rms_norm_eps as f32;
        let (cos_local, sin_local) = rotary_tables(n, cfg.head_dim, cfg.rope_local_base_freq);
        let (cos_global, sin_global) = if cfg.rope_scaling_factor == 1.0 {
            rotary_tables(n, cfg.head_dim, cfg.rope_theta)
        } else {
            scaled_rotary_tables(n, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling_factor)
        };
        let keep = captured_queries(request, n).is_some();
        let q_width = cfg.n_heads * cfg.head_dim;
        let kv_width = cfg.n_kv_heads * cfg.head_dim;
        let scale = cfg.query_pre_attn_scalar.powf(-0.5) as f32;

        let mut x = self.embed(tokens)?;
        let embeddings = to_matrix(&x)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        let mut attentions = Vec::new();
        let rotary = match self.ops {
            Ops::Tensor => Some((
                Rotary::new(&cos_local, &sin_local, cfg.head_dim, &self.device)?,
                Rotary::new(&cos_global, &sin_global, cfg.head_dim, &self.device)?,
            )),
            Ops::CpuKernels => None,
        };
        for block in &self.blocks {
            let window = match block.kind {
                LayerAttention::Sliding => Some(cfg.sliding_window),
                LayerAttention::Full => None,
            };
            let spec = AttnSpec {
                n,
                n_heads: cfg.n_heads,
                n_kv_heads: cfg.n_kv_heads,
                head_dim: cfg.head_dim,
                scale,
                softcap: cfg.attn_logit_softcapping.map(|c| c as f32),
                window,
            };
            let h = candle_nn::ops::rms_norm(&x, &block.input_norm, eps)?;
            let (attn_out, probs) = match &rotary {
                None => {
                    let (cos, sin) = match block.kind {
                        LayerAttention::Sliding => (&cos_local, &sin_local),
                        LayerAttention::Full => (&cos_global, &sin_global),
                    };
                    let q_prep = HeadPrep {
                        norm: Some((&block.q_norm.host, eps)),
                        cos,
                        sin,
                    };
                    let k_prep = HeadPrep {
                        norm: Some((&block.k_norm.host, eps)),
                        cos,
                        sin,
                    };
                    match &block.qkv {
                        Qkv::Fused(w) => {
                            cpu_attention_fused(&w.forward(&h)?, &spec, &q_prep, &k_prep, keep)?
                        }
                        Qkv::Split(wq, wk, wv) => cpu_attention_split(
                            (&wq.forward(&h)?, &wk.forward(&h)?, &wv.forward(&h)?),
                            &spec,
                            &q_prep,
                            &k_prep,
                            keep,
                        )?,
                    }
                }
                Some((local, global)) => {
                    let layer = DecoderAttention {
                        n_heads: cfg.n_heads,
                        n_kv_heads: cfg.n_kv_heads,
                        head_dim: cfg.head_dim,
                        scale: spec.scale as f64,
                        softcap: spec.softcap.map(f64::from),
                        window,
                        qk_norm: Some((&block.q_norm.tensor, &block.k_norm.tensor, eps)),
                        rotary: match block.kind {
                            LayerAttention::Sliding => local,
                            LayerAttention::Full => global,
                        },
                    };
                    let (q, k, v) = match &block.qkv {
                        Qkv::Fused(w) => {
                            tensor_ops::split_fused_qkv(&w.forward(&h)?, q_width, kv_width)?
                        }
                        Qkv::Split(wq, wk, wv) => {
                            (wq.forward(&h)?, wk.forward(&h)?, wv.forward(&h)?)
                        }
                    };
                    tensor_ops::decoder_attention(&q, &k, &v, &layer, keep)?
                }
            };
            if keep {
                attentions.push(head_matrices(probs, n, request));
            }
            let o = block.o_proj.forward(&attn_out)?;
            x = (x + candle_nn::ops::rms_norm(&o, &block.post_attn_norm, eps)?)?;
            let h = candle_nn::ops::rms_norm(&x, &block.pre_ffn_norm, eps)?;
            let m = match &block.mlp {
                Mlp::Fused { gate_up, down } => {
                    down.forward(&gated(&gate_up.forward(&h)?, Act::GeluTanh, self.ops)?)?
                }
                Mlp::Split { gate, up, down } => down.forward(&gated_pair(
                    &gate.forward(&h)?,
                    &up.forward(&h)?,
                    Act::GeluTanh,
                    self.ops,
                )?)?,
            };
            x = (x + candle_nn::ops::rms_norm(&m, &block.post_ffn_norm, eps)?)?;
            layers.push(to_matrix(&x)?);
        }
        let normed = candle_nn::ops::rms_norm(&x, &self.final_norm, eps)?;
        let final_norm = to_matrix(&normed)?;
        let positions = logit_positions(request, n);
        let logits = if positions.is_empty() {
            None
        } else {
            let idx = Tensor::from_vec(
                positions.iter().map(|&p| p as u32).collect::<Vec<_>>(),
                positions.len(),
                &self.device,
            )?;
            let rows = normed.index_select(&idx, 0)?;
            let mut logits = self.lm_head.forward(&rows)?;
            if let Some(c) = cfg.final_logit_softcapping {
                logits = ((logits / c)?.tanh()? * c)?;
            }
            Some(to_matrix(&logits)?)
        };
        Ok(ForwardOutput {
            embeddings,
            layers,
            final_norm: Some(final_norm),
            attentions,
            attention_queries: captured_queries(request, n).unwrap_or_default(),
            logits,
            logit_positions: positions,
        })
    }
}

/// Linear rotary scaling: positions are divided by `factor`, i.e. every
/// inverse frequency is.
fn scaled_rotary_tables(n: usize, head_dim: usize, base: f64, factor: f64) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for i in 0..half {
            let inv = 1.0f32 / (base as f32).powf((2 * i) as f32 / head_dim as f32) / factor as f32;
            let angle = p as f32 * inv;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

impl LanguageModel for Gemma3 {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn forward(
        &self,
        tokens: &[u32],
        request: &ForwardRequest,
    ) -> Result<ForwardOutput, ModelError> {
        self.run(tokens, request)
    }
}
