//! BERT encoders (all-MiniLM-L6-v2 and relatives), read from a Hugging Face
//! folder or built with random weights from their config.
//!
//! Follows transformers' `BertModel` without its pooler: embeddings (word +
//! absolute position + token type 0, then LayerNorm), post-LayerNorm blocks with
//! bidirectional attention. There is no final norm and no language-model head.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Embedding, LayerNorm, Module, VarBuilder};

use crate::activation::Activation;
use crate::attention::{QkvLayout, attend};
use crate::hf_common::{
    ConfigReader, Tensors, assemble, attention_rows, check_tokens, pad_batch, read_json,
    split_sequences,
};
use crate::init::{InitFn, InitRule, random_var_builder};
use crate::kernels::with_f32;
use crate::packed_gemm::Dense;
use crate::tensor_ops::{self, Ops, Visibility};
use crate::{ForwardOutput, ForwardRequest, LanguageModel, LogitsCapture, ModelError, ModelInfo};

#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    /// The word embedding's `padding_idx` (a zero row under random init).
    pub pad_token_id: Option<usize>,
    pub initializer_range: f64,
}

impl BertConfig {
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
        let model_type = r.str_or("model_type", "bert")?;
        if model_type != "bert" {
            return Err(r.error(format!("model_type is `{model_type}`, not `bert`")));
        }
        let position_kind = r.str_or("position_embedding_type", "absolute")?;
        if position_kind != "absolute" {
            return Err(ModelError::Unsupported(format!(
                "{}: position_embedding_type `{position_kind}` (only `absolute`)",
                origin.display()
            )));
        }
        let pad_token_id = match value.get("pad_token_id") {
            None => Some(0),
            Some(v) if v.is_null() => None,
            Some(_) => Some(r.usize("pad_token_id")?),
        };
        let config = Self {
            vocab_size: r.usize("vocab_size")?,
            hidden_size: r.usize("hidden_size")?,
            num_hidden_layers: r.usize("num_hidden_layers")?,
            num_attention_heads: r.usize("num_attention_heads")?,
            intermediate_size: r.usize("intermediate_size")?,
            hidden_act: r.activation("hidden_act", "gelu")?,
            max_position_embeddings: r.usize_or("max_position_embeddings", Some(512))?,
            type_vocab_size: r.usize_or("type_vocab_size", Some(2))?,
            layer_norm_eps: r.f64_or("layer_norm_eps", 1e-12)?,
            pad_token_id,
            initializer_range: r.f64_or("initializer_range", 0.02)?,
        };
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(r.error(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        if config.type_vocab_size == 0 || config.vocab_size == 0 {
            return Err(r.error("vocab_size and type_vocab_size must be positive"));
        }
        Ok(config)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// transformers' `BertPreTrainedModel._init_weights`: linear and embedding
    /// weights `N(0, initializer_range)` with the word embedding's `pad_token_id`
    /// row zeroed (its `padding_idx`), biases zero, LayerNorm weight one.
    pub fn init_rule(&self) -> InitFn {
        let std = self.initializer_range;
        let pad = self.pad_token_id;
        Box::new(move |name: &str, _shape: &[usize]| {
            let is_norm = name.contains("LayerNorm");
            if name.ends_with(".bias") {
                InitRule::Zeros
            } else if is_norm {
                InitRule::Ones
            } else if name.ends_with("word_embeddings.weight") {
                match pad {
                    Some(row) => InitRule::NormalZeroRow { std, row },
                    None => InitRule::Normal { std },
                }
            } else {
                InitRule::Normal { std }
            }
        })
    }

    /// Parameters of `BertModel` without the pooler (which this crate never runs).
    pub fn n_params(&self) -> u64 {
        let h = self.hidden_size as u64;
        self.n_params_non_embedding()
            + h * (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) as u64
    }

    /// Everything but the word, position and token-type tables; the embedding
    /// LayerNorm counts as non-embedding.
    pub fn n_params_non_embedding(&self) -> u64 {
        let (h, i) = (self.hidden_size as u64, self.intermediate_size as u64);
        let block = 4 * (h * h + h) + 2 * (2 * h) + (h * i + i) + (i * h + h);
        2 * h + self.num_hidden_layers as u64 * block
    }
}

struct Block {
    /// Query, key and value projections concatenated into one `(3h, h)` matmul.
    qkv: Dense,
    attn_out: Dense,
    attn_norm: LayerNorm,
    mlp_in: Dense,
    mlp_out: Dense,
    out_norm: LayerNorm,
}

pub struct Bert {
    config: BertConfig,
    info: ModelInfo,
    word: Embedding,
    position: Tensor,
    token_type_0: Tensor,
    embed_norm: LayerNorm,
    blocks: Vec<Block>,
    device: Device,
    ops: Ops,
}

impl Bert {
    pub fn from_folder(dir: &Path) -> Result<Self, ModelError> {
        Self::from_folder_on(dir, &Device::Cpu)
    }

    /// Like [`Self::from_folder`], with the weights on `device`.
    pub fn from_folder_on(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let vb = crate::hf_weights::weights_var_builder(dir, DType::F32, device)?;
        Self::from_var_builder(config, vb, dir, &dir.display().to_string())
    }

    /// transformers-style random weights drawn from `(seed, tensor name)`.
    pub fn from_config_random(config: BertConfig, seed: u64) -> Result<Self, ModelError> {
        Self::from_config_random_on(config, seed, &Device::Cpu)
    }

    /// Like [`Self::from_config_random`], with the weights on `device`.
    pub fn from_config_random_on(
        config: BertConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let vb = random_var_builder(seed, DType::F32, device, config.init_rule());
        let name = format!("bert (random, seed {seed})");
        Self::from_var_builder(config, vb, Path::new("<random>"), &name)
    }

    /// Builds the encoder from tensors named as in `BertModel`
    /// (`embeddings.word_embeddings.weight`, ...), optionally under `bert.`.
    pub fn from_var_builder(
        config: BertConfig,
        vb: VarBuilder<'_>,
        origin: &Path,
        name: &str,
    ) -> Result<Self, ModelError> {
        let t = Tensors {
            vb,
            origin: origin.to_path_buf(),
        };
        let base = if !t.contains("embeddings.word_embeddings.weight")
            && t.contains("bert.embeddings.word_embeddings.weight")
        {
            "bert."
        } else {
            ""
        };
        let (h, i, eps) = (
            config.hidden_size,
            config.intermediate_size,
            config.layer_norm_eps,
        );
        let word = Embedding::new(
            t.get(
                (config.vocab_size, h),
                &format!("{base}embeddings.word_embeddings.weight"),
            )?,
            h,
        );
        let position = t.get(
            (config.max_position_embeddings, h),
            &format!("{base}embeddings.position_embeddings.weight"),
        )?;
        let token_type_0 = t
            .get(
                (config.type_vocab_size, h),
                &format!("{base}embeddings.token_type_embeddings.weight"),
            )?
            .narrow(0, 0, 1)?;
        let embed_norm = t.layer_norm(h, eps, &format!("{base}embeddings.LayerNorm"))?;
        let blocks = (0..config.num_hidden_layers)
            .map(|l| {
                let p = format!("{base}encoder.layer.{l}");
                let part = |n: &str, what: &str, shape: &[usize]| {
                    t.get(shape, &format!("{p}.attention.self.{n}.{what}"))
                };
                let mut weights = Vec::with_capacity(3);
                let mut biases = Vec::with_capacity(3);
                for n in ["query", "key", "value"] {
                    weights.push(part(n, "weight", &[h, h])?);
                    biases.push(part(n, "bias", &[h])?);
                }
                let weight = Tensor::cat(&weights, 0)?;
                Ok(Block {
                    qkv: Dense::new(&weight, Some(Tensor::cat(&biases, 0)?))?,
                    attn_out: t.linear(h, h, &format!("{p}.attention.output.dense"), true)?,
                    attn_norm: t.layer_norm(h, eps, &format!("{p}.attention.output.LayerNorm"))?,
                    mlp_in: t.linear(h, i, &format!("{p}.intermediate.dense"), true)?,
                    mlp_out: t.linear(i, h, &format!("{p}.output.dense"), true)?,
                    out_norm: t.layer_norm(h, eps, &format!("{p}.output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let info = ModelInfo {
            architecture: "bert".into(),
            name: name.to_string(),
            n_layers: config.num_hidden_layers,
            hidden_size: h,
            n_heads: config.num_attention_heads,
            n_kv_heads: config.num_attention_heads,
            vocab_size: config.vocab_size,
            max_positions: config.max_position_embeddings,
            n_params: config.n_params(),
            n_params_non_embedding: config.n_params_non_embedding(),
            causal: false,
            device: crate::device::device_label(t.vb.device()),
        };
        Ok(Self {
            config,
            info,
            word,
            position,
            token_type_0,
            embed_norm,
            blocks,
            ops: Ops::for_device(t.vb.device()),
            device: t.vb.device().clone(),
        })
    }

    pub fn config(&self) -> &BertConfig {
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

    fn run(
        &self,
        batch: &[&[u32]],
        request: &ForwardRequest,
    ) -> Result<Vec<ForwardOutput>, ModelError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if request.logits != LogitsCapture::None {
            return Err(ModelError::Request(
                "BERT is an encoder without a language-model head: no logits".into(),
            ));
        }
        for tokens in batch {
            check_tokens(
                tokens,
                self.config.vocab_size,
                Some(self.config.max_position_embeddings),
            )?;
        }
        let pad = self.config.pad_token_id.unwrap_or(0) as u32;
        let (ids, lengths) = pad_batch(batch, pad, &self.device)?;
        let selection = attention_rows(&request.attention, &lengths)?;
        let n_max = ids.dim(1)?;
        let x = self
            .word
            .forward(&ids)?
            .broadcast_add(&self.position.narrow(0, 0, n_max)?)?
            .broadcast_add(&self.token_type_0)?;
        let mut x = self.embed_norm.forward(&x)?;
        let embeddings = split_sequences(&x, &lengths)?;
        let layout = QkvLayout {
            batch: batch.len(),
            n: n_max,
            heads: self.config.num_attention_heads,
            head_dim: self.config.head_dim(),
            per_head_interleaved: false,
        };
        let scale = 1.0 / (layout.head_dim as f32).sqrt();
        let mut layers = Vec::with_capacity(self.blocks.len());
        let mut attentions = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            // Padded keys are left out through `lengths`: no mask tensor.
            let qkv = block.qkv.forward(&x)?.contiguous()?;
            let (context, probs) = match self.ops {
                Ops::CpuKernels => {
                    let attended = with_f32(&qkv, |data| {
                        attend(data, layout, &lengths, false, scale, selection.as_ref())
                    })?;
                    let context = Tensor::from_vec(attended.context, x.shape(), &self.device)?;
                    (context, attended.probs)
                }
                Ops::Tensor => {
                    let visibility = Visibility {
                        causal: false,
                        window: None,
                        lengths: &lengths,
                    };
                    tensor_ops::fused_attention(
                        &qkv,
                        layout,
                        &visibility,
                        scale as f64,
                        None,
                        selection.as_ref(),
                    )?
                }
            };
            let attn = block.attn_out.forward(&context)?;
            let y = block.attn_norm.forward(&(attn + &x)?)?;
            let m = block.mlp_out.forward(
                &self
                    .config
                    .hidden_act
                    .apply_with(block.mlp_in.forward(&y)?, self.ops)?,
            )?;
            x = block.out_norm.forward(&(m + y)?)?;
            layers.push(split_sequences(&x, &lengths)?);
            if selection.is_some() {
                attentions.push(probs);
            }
        }
        Ok(assemble(
            embeddings,
            layers,
            None,
            attentions,
            selection.as_ref(),
            None,
            &LogitsCapture::None,
            &lengths,
        ))
    }
}

impl LanguageModel for Bert {
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
