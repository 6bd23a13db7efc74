//! Random weights for any architecture, for Diff-eRank (an untrained model of
//! the same config as a trained one).
//!
//! [`random_var_builder`] gives a candle `VarBuilder` whose tensors are drawn on
//! request: the values of a tensor depend only on the seed and the tensor's full
//! name (e.g. `gpt_neox.layers.3.mlp.dense_h_to_4h.weight`), never on the order
//! in which a model asks for its tensors, so two models built from the same seed
//! share every weight whatever their loading code does. What distribution a
//! tensor gets is the job of a per-architecture rule `(name, shape) -> InitRule`
//! that mirrors transformers' `_init_weights` for that architecture:
//! `Normal(0, initializer_range)` for linear and embedding weights, zeros for
//! biases, ones for LayerNorm scales. Each config owns its rule
//! (`GptNeoXConfig::init_rule`, `BertConfig::init_rule`,
//! `LlamaConfig::init_rule`, `Gemma3Config::init_rule`); this module knows no
//! architecture.
//!
//! # Writing a rule for another architecture (note for the GGUF models)
//!
//! Match what the *weights file* means, not what transformers' module stores:
//!
//! - Llama / SmolLM2: `LlamaRMSNorm.weight` is initialised to ones and used as
//!   `x * w`; GGUF stores the same `w`. Rule: `Ones` for `*_norm.weight`.
//! - Gemma 3: transformers' `Gemma3RMSNorm` stores `w` initialised to **zeros**
//!   and multiplies by `(1 + w)`. GGUF files store `1 + w`, but our GGUF
//!   loader subtracts the 1 and `gemma3.rs` applies `1 + w` itself, as
//!   transformers does, so the rule is `Zeros` (`Gemma3Config::init_rule`). Gemma also
//!   scales embeddings by `sqrt(hidden)` at run time; that is not part of the
//!   weights.
//! - Embeddings with a `padding_idx` get a zero row there in transformers
//!   (BERT's word embeddings, some Llama configs with `pad_token_id`): use
//!   [`InitRule::NormalZeroRow`].
//! - Tied unembeddings are the embedding tensor itself; do not draw them twice.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// How one tensor is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InitRule {
    /// Independent `N(0, std^2)` entries.
    Normal {
        std: f64,
    },
    /// `N(0, std^2)` except for row `row` (of the first axis), which is zero: an
    /// embedding's padding entry.
    NormalZeroRow {
        std: f64,
        row: usize,
    },
    Ones,
    Zeros,
}

/// A rule mapping a tensor's full name and shape to its initialisation.
pub type InitFn = Box<dyn Fn(&str, &[usize]) -> InitRule + Send + Sync>;

/// Values are drawn in chunks of this many, each chunk from its own stream, so
/// that large tensors fill in parallel yet stay identical for any thread count.
const CHUNK: usize = 1 << 16;

/// A `VarBuilder` that creates each requested tensor from `(seed, name)` with
/// the distribution `rule` picks. `contains_tensor` is true for every name:
/// the model's config, not the backend, decides which tensors exist.
pub fn random_var_builder(
    seed: u64,
    dtype: DType,
    device: &Device,
    rule: InitFn,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(RandomBackend { seed, rule }),
        dtype,
        device.clone(),
    )
}

struct RandomBackend {
    seed: u64,
    rule: InitFn,
}

impl SimpleBackend for RandomBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        // The rule decides, not candle's hint: a hint cannot say that an
        // embedding's padding row is zero. Each architecture's rule is built
        // from its own hints where it has them (`DecoderLayout::init_rule`),
        // so hint-honouring builders (a candle `VarMap`) get the same scheme.
        _hint: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let dims = shape.dims().to_vec();
        let values = random_values(self.seed, name, &dims, (self.rule)(name, &dims));
        Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(dev)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape: `{name}` was requested without one")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// The values of one tensor (row-major, f32).
pub fn random_values(seed: u64, name: &str, dims: &[usize], rule: InitRule) -> Vec<f32> {
    let len: usize = dims.iter().product();
    match rule {
        InitRule::Ones => vec![1.0; len],
        InitRule::Zeros => vec![0.0; len],
        InitRule::Normal { std } => normal_values(tensor_seed(seed, name), len, std),
        InitRule::NormalZeroRow { std, row } => {
            let mut values = normal_values(tensor_seed(seed, name), len, std);
            let row_len = if dims.is_empty() {
                1
            } else {
                len / dims[0].max(1)
            };
            if let Some(r) = values.get_mut(row * row_len..(row + 1) * row_len) {
                r.fill(0.0);
            }
            values
        }
    }
}

/// A 64-bit stream key from the seed and the tensor name. FNV-1a over the
/// name's bytes, then a SplitMix64 finaliser with the seed folded in: stable
/// across platforms and Rust releases (unlike `std`'s `DefaultHasher`).
pub fn tensor_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix64(h ^ splitmix64(seed))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` draws of `N(0, std^2)`, Box-Muller on ChaCha8 uniforms (our own
/// transform, so the values do not depend on a sampling crate's version).
fn normal_values(key: u64, len: usize, std: f64) -> Vec<f32> {
    let mut values = vec![0f32; len];
    values
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(chunk, out)| {
            let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(key ^ (chunk as u64)));
            for pair in out.chunks_mut(2) {
                // 1 - U lies in (0, 1], so the logarithm is finite.
                let u1: f64 = 1.0 - rng.random::<f64>();
                let u2: f64 = rng.random::<f64>();
                let radius = (-2.0 * u1.ln()).sqrt() * std;
                let angle = std::f64::consts::TAU * u2;
                pair[0] = (radius * angle.cos()) as f32;
                if let Some(second) = pair.get_mut(1) {
                    *second = (radius * angle.sin()) as f32;
                }
            }
        });
    values
}
