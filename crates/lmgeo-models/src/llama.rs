//! Llama-family decoder (SmolLM2 and kin): RMSNorm, half-split rotary,
//! grouped-query attention, SwiGLU feed-forward, optionally tied embeddings.
//!
//! Written against Hugging Face names and conventions (`LlamaForCausalLM`),
//! so that it loads GGUF files through [`crate::gguf::GgufWeights`], any
//! other `VarBuilder` (safetensors, random initialisation) the same way.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::decoder_ops::{
    Act, AttnSpec, HeadPrep, Proj, captured_queries, cpu_attention_fused, cpu_attention_split,
    gated, gated_pair, head_matrices, logit_positions, rotary_tables, to_matrix, validate,
};
use crate::gguf::{GgufFile, GgufNaming, GgufWeights, LoadOptions, WeightFormat};
use crate::tensor_ops::{self, DecoderAttention, Ops, Rotary};
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
        let arch = f.architecture()?;
        if arch != "llama" {
            return Err(ModelError::Unsupported(format!(
                "{}: architecture `{arch}` is not llama",
                f.path().display()
            )));
        }
        let key = |k: &str| format!("llama.{k}");
        let hidden_size = f.usize(&key("embedding_length"))?;
        let n_heads = f.usize(&key("attention.head_count"))?;
        let n_kv_heads = match f.u64_opt(&key("attention.head_count_kv"))? {
            Some(v) => v as usize,
            None => n_heads,
        };
        let head_dim = match f.u64_opt(&key("attention.key_length"))? {
            Some(v) => v as usize,
            None if n_heads > 0 => hidden_size / n_heads,
            None => 0,
        };
        if let Some(t) = f.str_opt(&key("rope.scaling.type"))?
            && t != "none"
        {
            return Err(ModelError::Unsupported(format!(
                "{}: rope scaling `{t}` is not implemented",
                f.path().display()
            )));
        }
        let vocab_size = match f.u64_opt(&key("vocab_size"))? {
            Some(v) => v as usize,
            None => f.str_array("tokenizer.ggml.tokens")?.len(),
        };
        let cfg = Self {
            vocab_size,
            hidden_size,
            intermediate_size: f.usize(&key("feed_forward_length"))?,
            n_layers: f.usize(&key("block_count"))?,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_norm_eps: f.f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: f.f64_opt(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            max_positions: f.usize(&key("context_length"))?,
            tie_word_embeddings: f.tensor_info("output.weight").is_none(),
            pad_token_id: f
                .u64_opt("tokenizer.ggml.padding_token_id")?
                .and_then(|v| u32::try_from(v).ok()),
            initializer_range: 0.02,
        };
        cfg.check().map_err(|message| ModelError::Config {
            path: f.path().to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    /// Consistency of the shape parameters.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
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
        Ok(())
    }

    fn per_layer_params(&self) -> u64 {
        let d = self.hidden_size as u64;
        let q = (self.n_heads * self.head_dim) as u64;
        let kv = (self.n_kv_heads * self.head_dim) as u64;
        let f = self.intermediate_size as u64;
        d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d
    }

    fn embedding_params(&self) -> u64 {
        let e = (self.vocab_size * self.hidden_size) as u64;
        if self.tie_word_embeddings { e } else { 2 * e }
    }

    /// All parameters, tied embeddings counted once (equals
    /// `sum(p.numel() for p in model.parameters())` in transformers).
    pub fn n_params(&self) -> u64 {
        self.embedding_params() + self.n_params_non_embedding()
    }

    /// Parameters outside the token embedding and the unembedding.
    pub fn n_params_non_embedding(&self) -> u64 {
        self.n_layers as u64 * self.per_layer_params() + self.hidden_size as u64
    }

    /// How Hugging Face's `LlamaPreTrainedModel` initialises a parameter:
    /// normal(0, initializer_range) for projections and embeddings, ones
    /// for RMSNorm scales. Passed as the hint of every `VarBuilder` lookup,
    /// so a random backend that honours hints reproduces that scheme. One
    /// detail a candle `Init` cannot say: the embedding row of
    /// [`Self::pad_token_id`] is zero in transformers.
    pub fn init_for(&self, hf_name: &str) -> Init {
        if hf_name.ends_with("norm.weight") {
            Init::Const(1.0)
        } else {
            Init::Randn {
                mean: 0.0,
                stdev: self.initializer_range,
            }
        }
    }
}

struct Block {
    input_norm: Tensor,
    qkv: Qkv,
    o_proj: Proj,
    post_attn_norm: Tensor,
    mlp: Mlp,
}

/// The Q, K and V projections: fused into one matmul when dense (one larger
/// product runs faster than three), separate when quantised (their block
/// formats may differ).
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
    Quant(Arc<candle_core::quantized::QTensor>),
}

/// A Llama-family model ready to run.
pub struct Llama {
    cfg: LlamaConfig,
    info: ModelInfo,
    embed: Embedding,
    blocks: Vec<Block>,
    final_norm: Tensor,
    lm_head: Proj,
    device: Device,
    ops: Ops,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama").field("info", &self.info).finish()
    }
}

fn layer_name(i: usize, rest: &str) -> String {
    format!("model.layers.{i}.{rest}")
}

/// Looks a dense tensor up with its Hugging Face init hint, turning candle's
/// stringly error into a typed one.
fn dense(
    vb: &VarBuilder,
    cfg_init: Init,
    name: &str,
    shape: (usize, usize),
) -> Result<Tensor, ModelError> {
    vb.get_with_hints(shape, name, cfg_init)
        .map_err(|e| ModelError::Unsupported(format!("weight `{name}`: {e}")))
}

fn dense1(vb: &VarBuilder, cfg_init: Init, name: &str, len: usize) -> Result<Tensor, ModelError> {
    vb.get_with_hints(len, name, cfg_init)
        .map_err(|e| ModelError::Unsupported(format!("weight `{name}`: {e}")))
}

impl Llama {
    /// Loads a GGUF file (`general.architecture = llama`).
    pub fn from_gguf(path: &Path, opts: &LoadOptions) -> Result<Self, ModelError> {
        let file = Arc::new(GgufFile::open(path)?);
        let cfg = LlamaConfig::from_gguf(&file)?;
        let weights = GgufWeights::new(file, GgufNaming::llama(cfg.n_heads, cfg.n_kv_heads));
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

    /// Builds the model from any `VarBuilder` serving Hugging Face names in
    /// `f32`: a GGUF file, a safetensors checkpoint, or random weights.
    pub fn load(vb: VarBuilder, cfg: LlamaConfig, name: &str) -> Result<Self, ModelError> {
        cfg.check()
            .map_err(|m| ModelError::Unsupported(format!("llama config: {m}")))?;
        let d = cfg.hidden_size;
        let q = cfg.n_heads * cfg.head_dim;
        let kv = cfg.n_kv_heads * cfg.head_dim;
        let f = cfg.intermediate_size;
        let get2 = |n: &str, s: (usize, usize)| dense(&vb, cfg.init_for(n), n, s);
        let get1 = |n: &str, len: usize| dense1(&vb, cfg.init_for(n), n, len);
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
                input_norm: get1(&l("input_layernorm.weight"), d)?,
                qkv: Qkv::Fused(Proj::dense(&Tensor::cat(&[wq, wk, wv], 0)?)?),
                o_proj: Proj::dense(&get2(&l("self_attn.o_proj.weight"), (d, q))?)?,
                post_attn_norm: get1(&l("post_attention_layernorm.weight"), d)?,
                mlp: Mlp::Fused {
                    gate_up: Proj::dense(&Tensor::cat(&[gate, up], 0)?)?,
                    down: Proj::dense(&get2(&l("mlp.down_proj.weight"), (d, f))?)?,
                },
            });
        }
        let final_norm = get1("model.norm.weight", d)?;
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
        cfg: LlamaConfig,
        name: &str,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let qm = |n: &str| -> Result<Proj, ModelError> {
            Ok(Proj::Quant(QMatMul::from_qtensor(w.quantized(n, device)?)?))
        };
        let norm = |n: &str| w.dense(n, device);
        let embed = Arc::new(w.quantized("model.embed_tokens.weight", device)?);
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let l = |r: &str| layer_name(i, r);
            blocks.push(Block {
                input_norm: norm(&l("input_layernorm.weight"))?,
                qkv: Qkv::Split(
                    qm(&l("self_attn.q_proj.weight"))?,
                    qm(&l("self_attn.k_proj.weight"))?,
                    qm(&l("self_attn.v_proj.weight"))?,
                ),
                o_proj: qm(&l("self_attn.o_proj.weight"))?,
                post_attn_norm: norm(&l("post_attention_layernorm.weight"))?,
                mlp: Mlp::Split {
                    gate: qm(&l("mlp.gate_proj.weight"))?,
                    up: qm(&l("mlp.up_proj.weight"))?,
                    down: qm(&l("mlp.down_proj.weight"))?,
                },
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
        cfg: LlamaConfig,
        name: &str,
        embed: Embedding,
        blocks: Vec<Block>,
        final_norm: Tensor,
        lm_head: Proj,
        device: Device,
    ) -> Self {
        let info = ModelInfo {
            architecture: "llama".into(),
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

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Runs every step in candle tensor ops, as on a GPU, even on the CPU:
    /// how the tests check the GPU path on a machine without one.
    pub fn with_tensor_ops(mut self) -> Self {
        self.ops = Ops::Tensor;
        self
    }

    fn embed(&self, tokens: &[u32]) -> Result<Tensor, ModelError> {
        let ids = Tensor::new(tokens, &self.device)?;
        Ok(match &self.embed {
            Embedding::Dense(e) => e.index_select(&ids, 0)?,
            Embedding::Quant(q) => q.embedding(&ids)?,
        })
    }

    fn run(&self, tokens: &[u32], request: &ForwardRequest) -> Result<ForwardOutput, ModelError> {
        validate(tokens, request, self.cfg.vocab_size, self.cfg.max_positions)?;
        let cfg = &self.cfg;
        let n = tokens.len();
        let eps = cfg.rms_norm_eps as f32;
        let (cos, sin) = rotary_tables(n, cfg.head_dim, cfg.rope_theta);
        let spec = AttnSpec {
            n,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            scale: (cfg.head_dim as f32).powf(-0.5),
            softcap: None,
            window: None,
        };
        let prep = HeadPrep {
            norm: None,
            cos: &cos,
            sin: &sin,
        };
        let keep = captured_queries(request, n).is_some();
        let q_width = cfg.n_heads * cfg.head_dim;
        let kv_width = cfg.n_kv_heads * cfg.head_dim;

        let mut x = self.embed(tokens)?;
        let embeddings = to_matrix(&x)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        let mut attentions = Vec::new();
        let rotary = match self.ops {
            Ops::Tensor => Some(Rotary::new(&cos, &sin, cfg.head_dim, &self.device)?),
            Ops::CpuKernels => None,
        };
        for block in &self.blocks {
            let h = candle_nn::ops::rms_norm(&x, &block.input_norm, eps)?;
            let (attn_out, probs) = match &rotary {
                None => match &block.qkv {
                    Qkv::Fused(w) => {
                        cpu_attention_fused(&w.forward(&h)?, &spec, &prep, &prep, keep)?
                    }
                    Qkv::Split(wq, wk, wv) => cpu_attention_split(
                        (&wq.forward(&h)?, &wk.forward(&h)?, &wv.forward(&h)?),
                        &spec,
                        &prep,
                        &prep,
                        keep,
                    )?,
                },
                Some(rotary) => {
                    let layer = DecoderAttention {
                        n_heads: cfg.n_heads,
                        n_kv_heads: cfg.n_kv_heads,
                        head_dim: cfg.head_dim,
                        scale: spec.scale as f64,
                        softcap: None,
                        window: None,
                        qk_norm: None,
                        rotary,
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
            x = (x + block.o_proj.forward(&attn_out)?)?;
            let h = candle_nn::ops::rms_norm(&x, &block.post_attn_norm, eps)?;
            let act = match &block.mlp {
                Mlp::Fused { gate_up, down } => {
                    down.forward(&gated(&gate_up.forward(&h)?, Act::Silu, self.ops)?)?
                }
                Mlp::Split { gate, up, down } => down.forward(&gated_pair(
                    &gate.forward(&h)?,
                    &up.forward(&h)?,
                    Act::Silu,
                    self.ops,
                )?)?,
            };
            x = (x + act)?;
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
            Some(to_matrix(&self.lm_head.forward(&rows)?)?)
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

impl LanguageModel for Llama {
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
