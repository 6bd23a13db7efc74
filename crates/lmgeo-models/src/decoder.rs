//! One decoder-only transformer for every Llama-family architecture: token
//! embedding, blocks of RMSNorm, grouped-query attention with half-split
//! rotary and a gated feed-forward, a final norm and the unembedding, with
//! dense or quantised weights, run by this crate's CPU kernels or by candle
//! tensor ops.
//!
//! What differs between architectures is data, a [`DecoderLayout`] that each
//! architecture's file (`llama.rs`, `gemma3.rs`) builds from its config: where
//! the norms stand and whether their weights act as `1 + w`, the gating
//! activation, per-head query/key norms, the rotary bases and the sliding
//! window of every layer, the embedding scale, the attention scale and
//! soft-caps. The forward code is written against Hugging Face names and
//! conventions, so that GGUF files ([`GgufWeights`]), safetensors and random
//! weights load the same way.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::activation::Activation;
use crate::attention::{
    AttnSpec, HeadPrep, cpu_attention_fused, cpu_attention_split, rotary_tables,
};
use crate::gguf::{GgufFile, GgufNaming, GgufWeights, LoadOptions, WeightFormat};
use crate::init::{InitFn, InitRule};
use crate::kernels::with_f32;
use crate::packed_gemm::Dense;
use crate::tensor_ops::{self, DecoderAttention, Ops, Rotary};
use crate::{
    AttentionCapture, F32Matrix, ForwardOutput, ForwardRequest, LogitsCapture, ModelError,
    ModelInfo,
};

/// Where a block's RMSNorms stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NormPlacement {
    /// Before attention (`input_layernorm`) and before the feed-forward
    /// (`post_attention_layernorm`): Llama.
    Pre,
    /// Before and after each: `input_layernorm` and
    /// `post_attention_layernorm` around attention,
    /// `pre_feedforward_layernorm` and `post_feedforward_layernorm` around the
    /// feed-forward: Gemma.
    Sandwich,
}

impl NormPlacement {
    /// Hugging Face names of the norms before attention, after attention,
    /// before the feed-forward and after it.
    fn names(self) -> [Option<&'static str>; 4] {
        match self {
            Self::Pre => [
                Some("input_layernorm"),
                None,
                Some("post_attention_layernorm"),
                None,
            ],
            Self::Sandwich => [
                Some("input_layernorm"),
                Some("post_attention_layernorm"),
                Some("pre_feedforward_layernorm"),
                Some("post_feedforward_layernorm"),
            ],
        }
    }

    fn count(self) -> u64 {
        self.names().iter().flatten().count() as u64
    }
}

/// A rotary embedding: `inv_freq[i] = 1 / base^(2i/d) / factor`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rope {
    pub base: f64,
    /// Linear scaling (positions divided by it); 1 for none.
    pub factor: f64,
}

/// How one layer attends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LayerSpec {
    /// Index into [`DecoderLayout::ropes`].
    pub rope: usize,
    /// Keys `j` with `i - j < window` are visible to query `i`; `None`: the
    /// whole prefix.
    pub window: Option<usize>,
}

/// Everything that tells one decoder architecture from another, plus the
/// shape of the model.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DecoderLayout {
    /// `ModelInfo::architecture`: `llama`, `gemma3`.
    pub architecture: &'static str,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub max_positions: usize,
    pub tie_word_embeddings: bool,
    pub rms_norm_eps: f64,
    pub norms: NormPlacement,
    /// Norm weights are stored as `w` and applied as `1 + w` (Gemma).
    pub norm_plus_one: bool,
    /// RMSNorm over every query and key head (`self_attn.q_norm`, `k_norm`).
    pub qk_norm: bool,
    /// Of the gated feed-forward, `act(gate) * up`.
    pub activation: Activation,
    /// Embeddings are multiplied by this (Gemma: sqrt(hidden), in `f32`).
    pub embedding_scale: Option<f32>,
    /// Attention scores are multiplied by this.
    pub attention_scale: f32,
    /// `cap * tanh(score / cap)` on the scaled attention scores.
    pub attention_softcap: Option<f32>,
    /// `cap * tanh(logit / cap)` on the logits.
    pub final_softcap: Option<f64>,
    /// The rotary embeddings the layers use.
    pub ropes: Vec<Rope>,
    /// One per layer.
    pub layers: Vec<LayerSpec>,
    /// Standard deviation of transformers' normal initialisation.
    pub initializer_range: f64,
    /// The padding token, whose embedding row transformers initialises to zero.
    pub pad_token_id: Option<u32>,
}

impl DecoderLayout {
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Consistency of the shape parameters; `extra` are further sizes that
    /// must be positive, checked in their place after `head_dim`.
    pub fn check(&self, extra: &[(&str, usize)]) -> Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("n_layers", self.n_layers()),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
        ];
        let last = [("max_positions", self.max_positions)];
        let all = sizes.iter().chain(extra).chain(&last);
        if let Some((name, _)) = all.into_iter().find(|(_, v)| *v == 0) {
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
        if let Some(l) = self.layers.iter().find(|l| l.rope >= self.ropes.len()) {
            return Err(format!("layer rotary {} is not defined", l.rope));
        }
        Ok(())
    }

    fn per_layer_params(&self) -> u64 {
        let d = self.hidden_size as u64;
        let q = (self.n_heads * self.head_dim) as u64;
        let kv = (self.n_kv_heads * self.head_dim) as u64;
        let f = self.intermediate_size as u64;
        let qk_norms = if self.qk_norm {
            2 * self.head_dim as u64
        } else {
            0
        };
        d * q + 2 * d * kv + q * d + 3 * d * f + self.norms.count() * d + qk_norms
    }

    /// All parameters, tied embeddings counted once (equals
    /// `sum(p.numel() for p in model.parameters())` in transformers).
    pub fn n_params(&self) -> u64 {
        let e = (self.vocab_size * self.hidden_size) as u64;
        let embeddings = if self.tie_word_embeddings { e } else { 2 * e };
        embeddings + self.n_params_non_embedding()
    }

    /// Parameters outside the token embedding and the unembedding.
    pub fn n_params_non_embedding(&self) -> u64 {
        self.n_layers() as u64 * self.per_layer_params() + self.hidden_size as u64
    }

    /// How transformers initialises a parameter: normal(0,
    /// initializer_range) for projections and embeddings; norm weights one,
    /// or zero where they act as `1 + w`. Passed as the hint of every
    /// `VarBuilder` lookup, so a random backend that honours hints reproduces
    /// that scheme. One detail a candle `Init` cannot say: the embedding row
    /// of [`Self::pad_token_id`] is zero in transformers.
    pub fn init_for(&self, hf_name: &str) -> Init {
        if hf_name.ends_with("norm.weight") {
            Init::Const(if self.norm_plus_one { 0.0 } else { 1.0 })
        } else {
            Init::Randn {
                mean: 0.0,
                stdev: self.initializer_range,
            }
        }
    }

    /// [`Self::init_for`] as a rule for [`crate::random_var_builder`], with the
    /// padding token's embedding row zeroed.
    pub fn init_rule(&self) -> InitFn {
        // The same scheme as the hints (one statement of it): lmgeo's random
        // backend turns each hint into a rule, adding the padding row.
        let layout = self.clone();
        Box::new(move |name: &str, _shape: &[usize]| {
            let rule = match layout.init_for(name) {
                Init::Const(0.0) => InitRule::Zeros,
                Init::Const(_) => InitRule::Ones,
                Init::Randn { stdev, .. } => InitRule::Normal { std: stdev },
                _ => InitRule::Normal {
                    std: layout.initializer_range,
                },
            };
            match (rule, layout.pad_token_id) {
                (InitRule::Normal { std }, Some(row)) if name.ends_with("embed_tokens.weight") => {
                    InitRule::NormalZeroRow {
                        std,
                        row: row as usize,
                    }
                }
                (rule, _) => rule,
            }
        })
    }
}

/// The `<arch>.*` metadata that every decoder's GGUF file carries, read the
/// same way for each architecture.
pub(crate) struct GgufDecoderKeys<'a> {
    pub file: &'a GgufFile,
    arch: &'static str,
}

impl<'a> GgufDecoderKeys<'a> {
    /// Refuses a file of another architecture.
    pub fn new(file: &'a GgufFile, arch: &'static str) -> Result<Self, ModelError> {
        let found = file.architecture()?;
        if found != arch {
            return Err(ModelError::Unsupported(format!(
                "{}: architecture `{found}` is not {arch}",
                file.path().display()
            )));
        }
        Ok(Self { file, arch })
    }

    /// The full key of `<arch>.{k}`.
    pub fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    pub fn usize(&self, k: &str) -> Result<usize, ModelError> {
        self.file.usize(&self.key(k))
    }

    pub fn usize_opt(&self, k: &str) -> Result<Option<usize>, ModelError> {
        Ok(self.file.u64_opt(&self.key(k))?.map(|v| v as usize))
    }

    pub fn f64(&self, k: &str) -> Result<f64, ModelError> {
        self.file.f64(&self.key(k))
    }

    pub fn f64_opt(&self, k: &str) -> Result<Option<f64>, ModelError> {
        self.file.f64_opt(&self.key(k))
    }

    pub fn config_err(&self, message: String) -> ModelError {
        ModelError::Config {
            path: self.file.path().to_path_buf(),
            message,
        }
    }

    /// The rotary scaling type, `None` when absent or `none`.
    pub fn rope_scaling(&self) -> Result<Option<&'a str>, ModelError> {
        Ok(self
            .file
            .str_opt(&self.key("rope.scaling.type"))?
            .filter(|t| *t != "none"))
    }

    pub fn unsupported_rope_scaling(&self, kind: &str) -> ModelError {
        ModelError::Unsupported(format!(
            "{}: rope scaling `{kind}` is not implemented",
            self.file.path().display()
        ))
    }

    /// `vocab_size`, else the length of the tokenizer's vocabulary.
    pub fn vocab_size(&self) -> Result<usize, ModelError> {
        match self.usize_opt("vocab_size")? {
            Some(v) => Ok(v),
            None => Ok(self.file.str_array("tokenizer.ggml.tokens")?.len()),
        }
    }

    /// `head_count_kv`, else `head_count`.
    pub fn n_kv_heads(&self, n_heads: usize) -> Result<usize, ModelError> {
        Ok(self
            .usize_opt("attention.head_count_kv")?
            .unwrap_or(n_heads))
    }

    /// Embeddings are tied when the file has no separate `output.weight`.
    pub fn tie_word_embeddings(&self) -> bool {
        self.file.tensor_info("output.weight").is_none()
    }

    pub fn pad_token_id(&self) -> Result<Option<u32>, ModelError> {
        Ok(self
            .file
            .u64_opt("tokenizer.ggml.padding_token_id")?
            .and_then(|v| u32::try_from(v).ok()))
    }
}

/// A projection `y = x W^T` whose weight is either dense or in a GGUF block
/// format.
#[derive(Debug, Clone)]
enum Proj {
    /// A dense weight, packed or transposed once at load.
    Dense(Dense),
    /// `W`, `(out, in)`, as stored: only for the tied unembedding, which
    /// would otherwise be held twice.
    AsStored(Tensor),
    Quant(QMatMul),
}

impl Proj {
    /// From a Hugging Face `(out, in)` weight.
    fn dense(w: &Tensor) -> candle_core::Result<Self> {
        Ok(Proj::Dense(Dense::new(w, None)?))
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Proj::Dense(w) => w.forward(x),
            Proj::AsStored(w) => x.matmul(&w.t()?),
            Proj::Quant(q) => q.forward(x),
        }
    }
}

/// Projections of the same input (Q, K, V; gate, up): fused into one matmul
/// when dense (one larger product runs faster than several), separate when
/// quantised (their block formats may differ).
enum Projs<const N: usize> {
    Fused(Proj),
    Split([Proj; N]),
}

impl<const N: usize> Projs<N> {
    fn forward_split(&self, x: &Tensor) -> candle_core::Result<[Tensor; N]> {
        let Projs::Split(ps) = self else {
            unreachable!("only called on split projections")
        };
        let mut out = Vec::with_capacity(N);
        for p in ps {
            out.push(p.forward(x)?);
        }
        Ok(out.try_into().unwrap_or_else(|_| unreachable!()))
    }
}

enum Embedding {
    Dense(Tensor),
    Quant(Arc<QTensor>),
}

/// The RMSNorm weight of query and key heads, kept on the host for the CPU
/// kernels and on the model's device for tensor ops.
struct HeadNorm {
    host: Vec<f32>,
    tensor: Tensor,
}

impl HeadNorm {
    fn new(tensor: Tensor) -> Result<Self, ModelError> {
        let host = tensor.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
        Ok(Self { host, tensor })
    }
}

/// Norm scales are held ready to multiply (`1 + w` where the layout says).
struct Block {
    layer: LayerSpec,
    attn_norm: Tensor,
    attn_out_norm: Option<Tensor>,
    ffn_norm: Tensor,
    ffn_out_norm: Option<Tensor>,
    qkv: Projs<3>,
    /// Query and key head norms.
    qk_norm: Option<(HeadNorm, HeadNorm)>,
    o_proj: Proj,
    gate_up: Projs<2>,
    down: Proj,
}

fn layer_name(i: usize, rest: &str) -> String {
    format!("model.layers.{i}.{rest}")
}

/// Where the weights come from: a `VarBuilder` serving dense `f32` tensors
/// (a GGUF file dequantised, safetensors, random), or a GGUF file's blocks.
enum Source<'a> {
    Dense {
        vb: &'a VarBuilder<'a>,
        layout: &'a DecoderLayout,
    },
    Quant {
        weights: &'a GgufWeights,
        device: &'a Device,
    },
}

impl Source<'_> {
    /// A dense tensor, looked up with its Hugging Face init hint.
    fn tensor<S: Into<candle_core::Shape>>(
        vb: &VarBuilder,
        layout: &DecoderLayout,
        name: &str,
        shape: S,
    ) -> Result<Tensor, ModelError> {
        vb.get_with_hints(shape, name, layout.init_for(name))
            .map_err(|e| ModelError::Unsupported(format!("weight `{name}`: {e}")))
    }

    /// A norm weight as stored (`w`, not yet `1 + w`).
    fn norm(&self, name: &str, len: usize) -> Result<Tensor, ModelError> {
        match self {
            Source::Dense { vb, layout } => Self::tensor(vb, layout, name, len),
            Source::Quant { weights, device } => weights.dense(name, device),
        }
    }

    fn proj(&self, name: &str, shape: (usize, usize)) -> Result<Proj, ModelError> {
        match self {
            Source::Dense { vb, layout } => {
                Ok(Proj::dense(&Self::tensor(vb, layout, name, shape)?)?)
            }
            Source::Quant { weights, device } => Ok(Proj::Quant(QMatMul::from_qtensor(
                weights.quantized(name, device)?,
            )?)),
        }
    }

    /// Projections of one input, `(out_i, in)` each.
    fn projs<const N: usize>(
        &self,
        parts: [(&str, (usize, usize)); N],
    ) -> Result<Projs<N>, ModelError> {
        match self {
            Source::Dense { vb, layout } => {
                let mut ws = Vec::with_capacity(N);
                for (name, shape) in parts {
                    ws.push(Self::tensor(vb, layout, name, shape)?);
                }
                Ok(Projs::Fused(Proj::dense(&Tensor::cat(&ws, 0)?)?))
            }
            Source::Quant { .. } => {
                let mut ps = Vec::with_capacity(N);
                for (name, shape) in parts {
                    ps.push(self.proj(name, shape)?);
                }
                Ok(Projs::Split(
                    ps.try_into().unwrap_or_else(|_| unreachable!()),
                ))
            }
        }
    }

    fn embedding(&self, name: &str, shape: (usize, usize)) -> Result<Embedding, ModelError> {
        match self {
            Source::Dense { vb, layout } => {
                Ok(Embedding::Dense(Self::tensor(vb, layout, name, shape)?))
            }
            Source::Quant { weights, device } => {
                Ok(Embedding::Quant(Arc::new(weights.quantized(name, device)?)))
            }
        }
    }

    /// The unembedding: the embedding itself when tied, else `name`.
    fn unembedding(
        &self,
        embed: &Embedding,
        tied: bool,
        name: &str,
        shape: (usize, usize),
    ) -> Result<Proj, ModelError> {
        match (self, tied, embed) {
            (_, true, Embedding::Dense(e)) => Ok(Proj::AsStored(e.clone())),
            (_, true, Embedding::Quant(q)) => Ok(Proj::Quant(QMatMul::from_arc(q.clone())?)),
            (Source::Dense { vb, layout }, false, _) => {
                Ok(Proj::AsStored(Self::tensor(vb, layout, name, shape)?))
            }
            (Source::Quant { .. }, false, _) => self.proj(name, shape),
        }
    }
}

/// A decoder-only model ready to run.
pub(crate) struct Decoder {
    layout: DecoderLayout,
    info: ModelInfo,
    embed: Embedding,
    blocks: Vec<Block>,
    final_norm: Tensor,
    lm_head: Proj,
    device: Device,
    ops: Ops,
}

impl Decoder {
    /// Loads a GGUF file whose metadata `layout` describes, its tensors named
    /// by `naming`, dequantised or in their block formats as `opts` says.
    pub fn from_gguf(
        file: Arc<GgufFile>,
        naming: GgufNaming,
        layout: DecoderLayout,
        opts: &LoadOptions,
    ) -> Result<Self, ModelError> {
        let name = file
            .path()
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let weights = GgufWeights::new(file, naming);
        match opts.format {
            WeightFormat::DequantizedF32 => {
                let vb = weights.var_builder(DType::F32, &opts.device);
                Self::load(&vb, layout, &name)
            }
            WeightFormat::Quantized => {
                let source = Source::Quant {
                    weights: &weights,
                    device: &opts.device,
                };
                Self::build(&source, layout, &name, &opts.device)
            }
        }
    }

    /// Builds the model from any `VarBuilder` serving Hugging Face names in
    /// `f32`: a GGUF file, a safetensors checkpoint, or random weights.
    pub fn load(vb: &VarBuilder, layout: DecoderLayout, name: &str) -> Result<Self, ModelError> {
        let source = Source::Dense {
            vb,
            layout: &layout,
        };
        Self::build(&source, layout.clone(), name, vb.device())
    }

    fn build(
        src: &Source<'_>,
        layout: DecoderLayout,
        name: &str,
        device: &Device,
    ) -> Result<Self, ModelError> {
        layout
            .check(&[])
            .map_err(|m| ModelError::Unsupported(format!("{} config: {m}", layout.architecture)))?;
        let d = layout.hidden_size;
        let hd = layout.head_dim;
        let q = layout.n_heads * hd;
        let kv = layout.n_kv_heads * hd;
        let f = layout.intermediate_size;
        let norm = |n: &str, len: usize| -> Result<Tensor, ModelError> {
            let w = src.norm(n, len)?;
            Ok(if layout.norm_plus_one { (w + 1.0)? } else { w })
        };
        let embed = src.embedding("model.embed_tokens.weight", (layout.vocab_size, d))?;
        let mut blocks = Vec::with_capacity(layout.n_layers());
        for (i, &spec) in layout.layers.iter().enumerate() {
            let l = |r: &str| layer_name(i, r);
            let [attn_in, attn_out, ffn_in, ffn_out] = layout
                .norms
                .names()
                .map(|n| n.map(|n| l(&format!("{n}.weight"))));
            let optional = |n: Option<String>| n.map(|n| norm(&n, d)).transpose();
            let required = |n: Option<String>| norm(&n.expect("placement names this norm"), d);
            let qk_norm = if layout.qk_norm {
                Some((
                    HeadNorm::new(norm(&l("self_attn.q_norm.weight"), hd)?)?,
                    HeadNorm::new(norm(&l("self_attn.k_norm.weight"), hd)?)?,
                ))
            } else {
                None
            };
            blocks.push(Block {
                layer: spec,
                attn_norm: required(attn_in)?,
                qkv: src.projs([
                    (l("self_attn.q_proj.weight").as_str(), (q, d)),
                    (l("self_attn.k_proj.weight").as_str(), (kv, d)),
                    (l("self_attn.v_proj.weight").as_str(), (kv, d)),
                ])?,
                qk_norm,
                o_proj: src.proj(&l("self_attn.o_proj.weight"), (d, q))?,
                attn_out_norm: optional(attn_out)?,
                ffn_norm: required(ffn_in)?,
                gate_up: src.projs([
                    (l("mlp.gate_proj.weight").as_str(), (f, d)),
                    (l("mlp.up_proj.weight").as_str(), (f, d)),
                ])?,
                down: src.proj(&l("mlp.down_proj.weight"), (d, f))?,
                ffn_out_norm: optional(ffn_out)?,
            });
        }
        let final_norm = norm("model.norm.weight", d)?;
        let lm_head = src.unembedding(
            &embed,
            layout.tie_word_embeddings,
            "lm_head.weight",
            (layout.vocab_size, d),
        )?;
        let info = ModelInfo {
            architecture: layout.architecture.into(),
            name: name.to_string(),
            n_layers: layout.n_layers(),
            hidden_size: d,
            n_heads: layout.n_heads,
            n_kv_heads: layout.n_kv_heads,
            vocab_size: layout.vocab_size,
            max_positions: layout.max_positions,
            n_params: layout.n_params(),
            n_params_non_embedding: layout.n_params_non_embedding(),
            causal: true,
            device: crate::device::device_label(device),
        };
        Ok(Self {
            layout,
            info,
            embed,
            blocks,
            final_norm,
            lm_head,
            ops: Ops::for_device(device),
            device: device.clone(),
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Runs every step in candle tensor ops, as on a GPU, even on the CPU.
    pub fn use_tensor_ops(&mut self) {
        self.ops = Ops::Tensor;
    }

    /// Token embeddings, times the layout's scale (as `f32`, the way
    /// transformers rounds it).
    fn embed(&self, tokens: &[u32]) -> Result<Tensor, ModelError> {
        let ids = Tensor::new(tokens, &self.device)?;
        let e = match &self.embed {
            Embedding::Dense(e) => e.index_select(&ids, 0)?,
            Embedding::Quant(q) => q.embedding(&ids)?,
        };
        Ok(match self.layout.embedding_scale {
            Some(scale) => (e * scale as f64)?,
            None => e,
        })
    }

    /// One block's attention on its normed input `h`: the output
    /// `(n, heads*d)` and, when `keep`, each head's probabilities.
    fn attention(
        &self,
        block: &Block,
        h: &Tensor,
        tables: &[(Vec<f32>, Vec<f32>)],
        rotaries: Option<&[Rotary]>,
        keep: bool,
    ) -> Result<(Tensor, Vec<Vec<f32>>), ModelError> {
        let l = &self.layout;
        let eps = l.rms_norm_eps as f32;
        let spec = AttnSpec {
            n: h.dim(0)?,
            n_heads: l.n_heads,
            n_kv_heads: l.n_kv_heads,
            head_dim: l.head_dim,
            scale: l.attention_scale,
            softcap: l.attention_softcap,
            window: block.layer.window,
        };
        let Some(rotaries) = rotaries else {
            let (cos, sin) = &tables[block.layer.rope];
            let norms = block.qk_norm.as_ref();
            let q_prep = HeadPrep {
                norm: norms.map(|(q, _)| (q.host.as_slice(), eps)),
                cos,
                sin,
            };
            let k_prep = HeadPrep {
                norm: norms.map(|(_, k)| (k.host.as_slice(), eps)),
                cos,
                sin,
            };
            return match &block.qkv {
                Projs::Fused(w) => {
                    cpu_attention_fused(&w.forward(h)?, &spec, &q_prep, &k_prep, keep)
                }
                Projs::Split(_) => {
                    let [q, k, v] = block.qkv.forward_split(h)?;
                    cpu_attention_split((&q, &k, &v), &spec, &q_prep, &k_prep, keep)
                }
            };
        };
        let layer = DecoderAttention {
            n_heads: l.n_heads,
            n_kv_heads: l.n_kv_heads,
            head_dim: l.head_dim,
            scale: spec.scale as f64,
            softcap: spec.softcap.map(f64::from),
            window: spec.window,
            qk_norm: block
                .qk_norm
                .as_ref()
                .map(|(q, k)| (&q.tensor, &k.tensor, eps)),
            rotary: &rotaries[block.layer.rope],
        };
        let (q, k, v) = match &block.qkv {
            Projs::Fused(w) => tensor_ops::split_fused_qkv(
                &w.forward(h)?,
                l.n_heads * l.head_dim,
                l.n_kv_heads * l.head_dim,
            )?,
            Projs::Split(_) => {
                let [q, k, v] = block.qkv.forward_split(h)?;
                (q, k, v)
            }
        };
        Ok(tensor_ops::decoder_attention(&q, &k, &v, &layer, keep)?)
    }

    /// The gated feed-forward on its normed input `h`.
    fn feed_forward(&self, block: &Block, h: &Tensor) -> Result<Tensor, ModelError> {
        let act = self.layout.activation;
        let gated = match &block.gate_up {
            Projs::Fused(w) => act.gated(&w.forward(h)?, self.ops)?,
            Projs::Split(_) => {
                let [gate, up] = block.gate_up.forward_split(h)?;
                act.gated_pair(&gate, &up, self.ops)?
            }
        };
        Ok(block.down.forward(&gated)?)
    }

    pub fn run(
        &self,
        tokens: &[u32],
        request: &ForwardRequest,
    ) -> Result<ForwardOutput, ModelError> {
        let l = &self.layout;
        validate(tokens, request, l.vocab_size, l.max_positions)?;
        let n = tokens.len();
        let eps = l.rms_norm_eps as f32;
        let rms_norm = |x: &Tensor, w: &Tensor| candle_nn::ops::rms_norm(x, w, eps);
        let tables: Vec<_> = l
            .ropes
            .iter()
            .map(|r| rotary_tables(n, l.head_dim, r.base, r.factor))
            .collect();
        let rotaries = match self.ops {
            Ops::Tensor => Some(
                tables
                    .iter()
                    .map(|(cos, sin)| Rotary::new(cos, sin, l.head_dim, &self.device))
                    .collect::<candle_core::Result<Vec<_>>>()?,
            ),
            Ops::CpuKernels => None,
        };
        let keep = captured_queries(request, n).is_some();

        let mut x = self.embed(tokens)?;
        let embeddings = to_matrix(&x)?;
        let mut layers = Vec::with_capacity(self.blocks.len());
        let mut attentions = Vec::new();
        for block in &self.blocks {
            let h = rms_norm(&x, &block.attn_norm)?;
            let (attn_out, probs) =
                self.attention(block, &h, &tables, rotaries.as_deref(), keep)?;
            if keep {
                attentions.push(head_matrices(probs, n, request));
            }
            let mut o = block.o_proj.forward(&attn_out)?;
            if let Some(w) = &block.attn_out_norm {
                o = rms_norm(&o, w)?;
            }
            x = (x + o)?;
            let h = rms_norm(&x, &block.ffn_norm)?;
            let mut m = self.feed_forward(block, &h)?;
            if let Some(w) = &block.ffn_out_norm {
                m = rms_norm(&m, w)?;
            }
            x = (x + m)?;
            layers.push(to_matrix(&x)?);
        }
        let normed = rms_norm(&x, &self.final_norm)?;
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
            if let Some(c) = l.final_softcap {
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

/// Copies a 2-D tensor from any device into a matrix that leaves the crate.
fn to_matrix(t: &Tensor) -> Result<F32Matrix, ModelError> {
    let (rows, cols) = t.dims2()?;
    let data = with_f32(t, <[f32]>::to_vec)?;
    Ok(F32Matrix::new(rows, cols, data))
}

/// Checks a request against a sequence before any work is done.
fn validate(
    tokens: &[u32],
    request: &ForwardRequest,
    vocab_size: usize,
    max_positions: usize,
) -> Result<(), ModelError> {
    if tokens.is_empty() {
        return Err(ModelError::Request("empty token sequence".into()));
    }
    if tokens.len() > max_positions {
        return Err(ModelError::Request(format!(
            "{} tokens exceed the model's {} positions",
            tokens.len(),
            max_positions
        )));
    }
    if let Some((i, t)) = tokens
        .iter()
        .enumerate()
        .find(|(_, t)| **t as usize >= vocab_size)
    {
        return Err(ModelError::Request(format!(
            "token id {t} at position {i} is outside the vocabulary of {vocab_size}"
        )));
    }
    if let AttentionCapture::Queries(qs) = &request.attention
        && let Some(q) = qs.iter().find(|q| **q >= tokens.len())
    {
        return Err(ModelError::Request(format!(
            "attention query position {q} is outside a sequence of {}",
            tokens.len()
        )));
    }
    Ok(())
}

/// Which query rows to keep, if any.
fn captured_queries(request: &ForwardRequest, n: usize) -> Option<Vec<usize>> {
    match &request.attention {
        AttentionCapture::None => None,
        AttentionCapture::All => Some((0..n).collect()),
        AttentionCapture::Queries(qs) => Some(qs.clone()),
    }
}

/// Turns one layer's per-head probabilities into the output matrices.
fn head_matrices(probs: Vec<Vec<f32>>, n: usize, request: &ForwardRequest) -> Vec<F32Matrix> {
    match &request.attention {
        AttentionCapture::None => Vec::new(),
        AttentionCapture::All => probs.into_iter().map(|p| F32Matrix::new(n, n, p)).collect(),
        AttentionCapture::Queries(qs) => probs
            .iter()
            .map(|p| {
                let mut data = Vec::with_capacity(qs.len() * n);
                for &q in qs {
                    data.extend_from_slice(&p[q * n..(q + 1) * n]);
                }
                F32Matrix::new(qs.len(), n, data)
            })
            .collect(),
    }
}

/// Positions whose logits are requested.
fn logit_positions(request: &ForwardRequest, n: usize) -> Vec<usize> {
    match request.logits {
        LogitsCapture::None => Vec::new(),
        LogitsCapture::Last => vec![n - 1],
        LogitsCapture::All => (0..n).collect(),
    }
}

/// Greedy decoding (argmax at each step, the lowest id on ties) of up to
/// `max_new_tokens` tokens, stopping after `stop`. Recomputes the whole
/// prefix at each step: meant for checks and short continuations.
pub fn greedy_continuation(
    model: &dyn crate::LanguageModel,
    prompt: &[u32],
    max_new_tokens: usize,
    stop: Option<u32>,
) -> Result<Vec<u32>, ModelError> {
    let request = ForwardRequest {
        logits: LogitsCapture::Last,
        ..Default::default()
    };
    let mut tokens = prompt.to_vec();
    let mut new = Vec::with_capacity(max_new_tokens);
    for _ in 0..max_new_tokens {
        let out = model.forward(&tokens, &request)?;
        let logits = out
            .logits
            .ok_or_else(|| ModelError::Request("the model returned no logits".into()))?;
        let row = logits.row(0);
        let mut best = 0usize;
        for (i, v) in row.iter().enumerate() {
            if *v > row[best] {
                best = i;
            }
        }
        let next = best as u32;
        new.push(next);
        tokens.push(next);
        if Some(next) == stop {
            break;
        }
    }
    Ok(new)
}

/// The public face of one decoder architecture: the model type `$model`,
/// holding its config `$config` and the shared [`Decoder`], and the methods
/// that `$config` answers through its [`DecoderLayout`]. `$config` provides
/// `from_gguf`, `gguf_naming`, `layout` and `check`.
macro_rules! decoder_model {
    ($(#[$doc:meta])* $model:ident, $config:ident) => {
        $(#[$doc])*
        pub struct $model {
            cfg: $config,
            decoder: $crate::decoder::Decoder,
        }

        impl std::fmt::Debug for $model {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($model))
                    .field("info", self.decoder.info())
                    .finish()
            }
        }

        impl $model {
            /// Loads a GGUF file of this architecture, dequantised or in its
            /// block formats as `opts` says.
            pub fn from_gguf(
                path: &std::path::Path,
                opts: &$crate::gguf::LoadOptions,
            ) -> Result<Self, $crate::ModelError> {
                let file = std::sync::Arc::new($crate::gguf::GgufFile::open(path)?);
                let cfg = $config::from_gguf(&file)?;
                let decoder = $crate::decoder::Decoder::from_gguf(
                    file,
                    cfg.gguf_naming(),
                    cfg.layout(),
                    opts,
                )?;
                Ok(Self { cfg, decoder })
            }

            /// Builds the model from any `VarBuilder` serving Hugging Face
            /// names and conventions in `f32`: a GGUF file, a safetensors
            /// checkpoint, or random weights.
            pub fn load(
                vb: candle_nn::VarBuilder,
                cfg: $config,
                name: &str,
            ) -> Result<Self, $crate::ModelError> {
                let layout = cfg.layout();
                cfg.check().map_err(|m| {
                    $crate::ModelError::Unsupported(format!("{} config: {m}", layout.architecture))
                })?;
                let decoder = $crate::decoder::Decoder::load(&vb, layout, name)?;
                Ok(Self { cfg, decoder })
            }

            pub fn config(&self) -> &$config {
                &self.cfg
            }

            /// Runs every step in candle tensor ops, as on a GPU, even on the
            /// CPU: how the tests check the GPU path on a machine without one.
            pub fn with_tensor_ops(mut self) -> Self {
                self.decoder.use_tensor_ops();
                self
            }
        }

        impl $crate::LanguageModel for $model {
            fn info(&self) -> &$crate::ModelInfo {
                self.decoder.info()
            }

            fn forward(
                &self,
                tokens: &[u32],
                request: &$crate::ForwardRequest,
            ) -> Result<$crate::ForwardOutput, $crate::ModelError> {
                self.decoder.run(tokens, request)
            }
        }

        impl $config {
            /// All parameters, tied embeddings counted once (equals
            /// `sum(p.numel() for p in model.parameters())` in transformers).
            pub fn n_params(&self) -> u64 {
                self.layout().n_params()
            }

            /// Parameters outside the token embedding and the unembedding.
            pub fn n_params_non_embedding(&self) -> u64 {
                self.layout().n_params_non_embedding()
            }

            /// How transformers initialises a parameter (normal(0,
            /// initializer_range) for projections and embeddings; norm weights
            /// one, or zero where they act as `1 + w`), passed as the hint of
            /// every `VarBuilder` lookup. One detail a candle `Init` cannot
            /// say: the embedding row of the padding token is zero in
            /// transformers ([`Self::init_rule`] says it).
            pub fn init_for(&self, hf_name: &str) -> candle_nn::Init {
                self.layout().init_for(hf_name)
            }

            /// transformers' initialisation as a rule for
            /// [`crate::random_var_builder`].
            pub fn init_rule(&self) -> $crate::init::InitFn {
                self.layout().init_rule()
            }
        }
    };
}

pub(crate) use decoder_model;
