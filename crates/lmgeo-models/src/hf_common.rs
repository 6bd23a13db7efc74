//! Pieces shared by the architectures read from Hugging Face folders (GPT-NeoX,
//! BERT): config conventions, request checks, and the conversion of candle
//! tensors into the crate's plain output matrices.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::activation::Activation;
use crate::kernels::with_f32;
use crate::packed_gemm::Dense;

use crate::{AttentionCapture, F32Matrix, ForwardOutput, LogitsCapture, ModelError};

/// Reads and parses a JSON config file.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        message: format!(
            "not valid JSON ({e}); the model folder is damaged: fetch the model again, or repair the file"
        ),
    })
}

/// Typed access to the fields of a config object, with errors that name the field.
pub(crate) struct ConfigReader<'a> {
    pub value: &'a serde_json::Value,
    pub path: PathBuf,
}

impl ConfigReader<'_> {
    pub fn error(&self, message: impl Into<String>) -> ModelError {
        ModelError::Config {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    fn field(&self, key: &str) -> Option<&serde_json::Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    pub fn usize(&self, key: &str) -> Result<usize, ModelError> {
        self.usize_or(key, None)
    }

    pub fn usize_or(&self, key: &str, default: Option<usize>) -> Result<usize, ModelError> {
        match self.field(key) {
            Some(v) => v
                .as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .ok_or_else(|| self.error(format!("`{key}` must be a non-negative integer"))),
            None => default.ok_or_else(|| self.error(format!("missing `{key}`"))),
        }
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, ModelError> {
        match self.field(key) {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.error(format!("`{key}` must be a number"))),
            None => Ok(default),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        match self.field(key) {
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(format!("`{key}` must be true or false"))),
            None => Ok(default),
        }
    }

    pub fn str_or<'b>(&'b self, key: &str, default: &'b str) -> Result<&'b str, ModelError> {
        match self.field(key) {
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.error(format!("`{key}` must be a string"))),
            None => Ok(default),
        }
    }

    pub fn activation(&self, key: &str, default: &str) -> Result<Activation, ModelError> {
        let name = self.str_or(key, default)?;
        Activation::from_hf(name).ok_or_else(|| {
            ModelError::Unsupported(format!(
                "{}: activation `{key} = {name}` (supported: gelu, gelu_new, gelu_fast, gelu_pytorch_tanh, relu, silu)",
                self.path.display()
            ))
        })
    }
}

/// Checks the token ids of one sequence against the vocabulary and position limits.
pub(crate) fn check_tokens(
    tokens: &[u32],
    vocab_size: usize,
    max_positions: Option<usize>,
) -> Result<(), ModelError> {
    if tokens.is_empty() {
        return Err(ModelError::Request("empty token sequence".into()));
    }
    if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab_size) {
        return Err(ModelError::Request(format!(
            "token id {bad} is outside the vocabulary of {vocab_size}"
        )));
    }
    if let Some(max) = max_positions
        && tokens.len() > max
    {
        return Err(ModelError::Request(format!(
            "{} tokens exceed the model's {max} positions",
            tokens.len()
        )));
    }
    Ok(())
}

/// The query rows to capture for sequences of the given lengths: `None` when no
/// attention is requested. Out-of-range positions are an error for every sequence.
pub(crate) fn attention_rows(
    capture: &AttentionCapture,
    lengths: &[usize],
) -> Result<Option<RowSelection>, ModelError> {
    match capture {
        AttentionCapture::None => Ok(None),
        AttentionCapture::All => Ok(Some(RowSelection::All)),
        AttentionCapture::Queries(rows) => {
            let shortest = lengths.iter().copied().min().unwrap_or(0);
            if let Some(bad) = rows.iter().find(|&&q| q >= shortest) {
                return Err(ModelError::Request(format!(
                    "attention query position {bad} is outside a sequence of {shortest} tokens"
                )));
            }
            Ok(Some(RowSelection::Rows(rows.clone())))
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum RowSelection {
    All,
    Rows(Vec<usize>),
}

impl RowSelection {
    /// Positions of the rows kept for a sequence of `n` tokens.
    pub fn positions(&self, n: usize) -> Vec<usize> {
        match self {
            Self::All => (0..n).collect(),
            Self::Rows(rows) => rows.clone(),
        }
    }
}

/// Splits a `(batch, n_max, hidden)` tensor into one `n_s x hidden` matrix per
/// sequence, dropping right padding.
pub(crate) fn split_sequences(
    t: &Tensor,
    lengths: &[usize],
) -> candle_core::Result<Vec<F32Matrix>> {
    let (b, n_max, hidden) = t.dims3()?;
    debug_assert_eq!(b, lengths.len());
    with_f32(t, |data| {
        lengths
            .iter()
            .enumerate()
            .map(|(s, &n)| {
                let start = s * n_max * hidden;
                F32Matrix::new(n, hidden, data[start..start + n * hidden].to_vec())
            })
            .collect()
    })
}

/// Gathers row `lengths[s] - 1` of every sequence from `(batch, n_max, hidden)`,
/// giving `(batch, hidden)`.
pub(crate) fn last_rows(t: &Tensor, lengths: &[usize]) -> candle_core::Result<Tensor> {
    let (b, n_max, hidden) = t.dims3()?;
    let index: Vec<u32> = lengths
        .iter()
        .enumerate()
        .map(|(s, &n)| (s * n_max + n - 1) as u32)
        .collect();
    let index = Tensor::new(index.as_slice(), t.device())?;
    t.reshape((b * n_max, hidden))?.index_select(&index, 0)
}

/// Right-pads token sequences into one `(batch, n_max)` u32 tensor.
pub(crate) fn pad_batch(
    batch: &[&[u32]],
    pad: u32,
    device: &Device,
) -> candle_core::Result<(Tensor, Vec<usize>)> {
    let lengths: Vec<usize> = batch.iter().map(|s| s.len()).collect();
    let n_max = lengths.iter().copied().max().unwrap_or(0);
    let mut ids = Vec::with_capacity(batch.len() * n_max);
    for s in batch {
        ids.extend_from_slice(s);
        ids.extend(std::iter::repeat_n(pad, n_max - s.len()));
    }
    Ok((
        Tensor::from_vec(ids, (batch.len(), n_max), device)?,
        lengths,
    ))
}

/// Named access to checkpoint tensors, with typed errors naming the file or
/// folder the weights came from.
pub(crate) struct Tensors<'a> {
    pub vb: candle_nn::VarBuilder<'a>,
    pub origin: PathBuf,
}

impl Tensors<'_> {
    pub fn contains(&self, name: &str) -> bool {
        self.vb.contains_tensor(name)
    }

    pub fn get<S: Into<candle_core::Shape>>(
        &self,
        shape: S,
        name: &str,
    ) -> Result<Tensor, ModelError> {
        if !self.vb.contains_tensor(name) {
            return Err(ModelError::MissingTensor {
                name: name.to_string(),
                path: self.origin.clone(),
            });
        }
        Ok(self.vb.get(shape, name)?)
    }

    pub fn linear(
        &self,
        in_dim: usize,
        out_dim: usize,
        prefix: &str,
        bias: bool,
    ) -> Result<Dense, ModelError> {
        let weight = self.get((out_dim, in_dim), &format!("{prefix}.weight"))?;
        let bias = if bias {
            Some(self.get(out_dim, &format!("{prefix}.bias"))?)
        } else {
            None
        };
        Ok(Dense::new(&weight, bias)?)
    }

    pub fn layer_norm(
        &self,
        size: usize,
        eps: f64,
        prefix: &str,
    ) -> Result<candle_nn::LayerNorm, ModelError> {
        let weight = self.get(size, &format!("{prefix}.weight"))?;
        let bias = self.get(size, &format!("{prefix}.bias"))?;
        Ok(candle_nn::LayerNorm::new(weight, bias, eps))
    }
}

/// Regroups per-stage, per-sequence results into one `ForwardOutput` per sequence.
#[allow(clippy::too_many_arguments)]
pub(crate) fn assemble(
    embeddings: Vec<F32Matrix>,
    layers: Vec<Vec<F32Matrix>>,
    final_norm: Option<Vec<F32Matrix>>,
    attentions: Vec<Vec<Vec<F32Matrix>>>,
    selection: Option<&RowSelection>,
    logits: Option<Vec<F32Matrix>>,
    logits_capture: &LogitsCapture,
    lengths: &[usize],
) -> Vec<ForwardOutput> {
    let mut layers: Vec<std::vec::IntoIter<_>> =
        layers.into_iter().map(|l| l.into_iter()).collect();
    let mut attentions: Vec<std::vec::IntoIter<_>> =
        attentions.into_iter().map(|a| a.into_iter()).collect();
    let mut final_norm = final_norm.map(|f| f.into_iter());
    let mut logits = logits.map(|l| l.into_iter());
    embeddings
        .into_iter()
        .zip(lengths)
        .map(|(emb, &n)| ForwardOutput {
            embeddings: emb,
            layers: layers.iter_mut().filter_map(|l| l.next()).collect(),
            final_norm: final_norm.as_mut().and_then(|f| f.next()),
            attentions: attentions.iter_mut().filter_map(|a| a.next()).collect(),
            attention_queries: selection.map(|s| s.positions(n)).unwrap_or_default(),
            logits: logits.as_mut().and_then(|l| l.next()),
            logit_positions: match logits_capture {
                LogitsCapture::None => Vec::new(),
                LogitsCapture::Last => vec![n - 1],
                LogitsCapture::All => (0..n).collect(),
            },
        })
        .collect()
}
