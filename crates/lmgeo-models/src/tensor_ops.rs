//! The steps of a forward pass that the CPU path does by hand (attention,
//! rotary embedding, gating), written in candle tensor ops so that they run on
//! any device candle supports.
//!
//! The CPU path (`attention.rs`, `kernels.rs`) works on
//! raw `f32` slices in host memory, which a CUDA tensor does not have. Models
//! pick this module with [`Ops::for_device`]; on the CPU it can be forced
//! (`with_tensor_ops` on each model) so that the tests hold it to the same
//! transformers goldens as the fast path, on a machine without a GPU.
//!
//! Attention here materialises the `(batch, heads, n, n)` scores, with an
//! additive mask for causality, sliding windows and right padding: simple and
//! exact, and on a GPU the probabilities must be copied out anyway when the
//! caller asks for them.

use candle_core::{Device, Tensor};

use crate::F32Matrix;
use crate::hf_common::RowSelection;

/// How a model runs attention and its element-wise steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ops {
    /// This crate's kernels on host memory: the fastest on the CPU.
    CpuKernels,
    /// candle tensor ops, on any device.
    Tensor,
}

impl Ops {
    pub(crate) fn for_device(device: &Device) -> Self {
        if device.is_cpu() {
            Self::CpuKernels
        } else {
            Self::Tensor
        }
    }
}

/// Rotary position embedding (the half-split form of transformers'
/// `rotate_half`) of the first `dims` channels of every head.
pub(crate) struct Rotary {
    cos: Tensor,
    sin: Tensor,
    dims: usize,
}

impl Rotary {
    /// From `n x dims/2` row-major tables as `decoder::rotary_tables` makes them.
    pub fn new(
        cos: &[f32],
        sin: &[f32],
        dims: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let half = dims / 2;
        let n = cos.len() / half.max(1);
        Ok(Self {
            cos: Tensor::from_slice(cos, (n, half), device)?,
            sin: Tensor::from_slice(sin, (n, half), device)?,
            dims,
        })
    }

    /// Rotates `x`, `(batch, heads, n, head_dim)`.
    fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, n, head_dim) = x.dims4()?;
        let (cos, sin) = (self.cos.narrow(0, 0, n)?, self.sin.narrow(0, 0, n)?);
        if self.dims == head_dim {
            return candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin);
        }
        let rotated = x.narrow(3, 0, self.dims)?.contiguous()?;
        let rotated = candle_nn::rotary_emb::rope(&rotated, &cos, &sin)?;
        let rest = x.narrow(3, self.dims, head_dim - self.dims)?;
        Tensor::cat(&[&rotated, &rest], 3)
    }
}

/// Which keys each query row may attend to.
pub(crate) struct Visibility<'a> {
    pub causal: bool,
    /// Keys `j` with `i - j < window` (transformers' sliding-window convention).
    pub window: Option<usize>,
    /// Real length of each sequence; later keys are right padding.
    pub lengths: &'a [usize],
}

impl Visibility<'_> {
    /// `(batch, 1, n, n)`: 0 where visible, -inf where not. A padded query row
    /// sees its sequence's real keys, so that no row is all -inf (its softmax
    /// would be NaN, and NaN times a zero probability spreads).
    fn additive_mask(&self, n: usize, device: &Device) -> candle_core::Result<Tensor> {
        let batch = self.lengths.len();
        let mut mask = vec![0f32; batch * n * n];
        for (s, &len) in self.lengths.iter().enumerate() {
            for i in 0..n {
                let row = &mut mask[(s * n + i) * n..(s * n + i + 1) * n];
                for (j, entry) in row.iter_mut().enumerate() {
                    let visible = if i >= len {
                        j < len
                    } else {
                        j < len && (!self.causal || j <= i) && self.window.is_none_or(|w| i < j + w)
                    };
                    if !visible {
                        *entry = f32::NEG_INFINITY;
                    }
                }
            }
        }
        Tensor::from_vec(mask, (batch, 1, n, n), device)
    }
}

/// Scaled dot-product attention. `q` is `(batch, heads, n, d)`, `k` and `v`
/// `(batch, kv_heads, n, d)` with `heads` a multiple of `kv_heads` (query
/// head `h` reads key head `h / (heads / kv_heads)`, as transformers'
/// `repeat_kv`). Returns the context `(batch, n, heads * d)` and the
/// probabilities `(batch, heads, n, n)`.
fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    visibility: &Visibility<'_>,
    scale: f64,
    softcap: Option<f64>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (batch, heads, n, d) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let repeat = |t: &Tensor| -> candle_core::Result<Tensor> {
        if kv_heads == heads {
            return t.contiguous();
        }
        let group = heads / kv_heads;
        t.unsqueeze(2)?
            .expand((batch, kv_heads, group, n, d))?
            .reshape((batch, heads, n, d))
    };
    let (k, v) = (repeat(k)?, repeat(v)?);
    let mut scores = (q.contiguous()?.matmul(&k.t()?)? * scale)?;
    if let Some(cap) = softcap {
        scores = ((scores / cap)?.tanh()? * cap)?;
    }
    let scores = scores.broadcast_add(&visibility.additive_mask(n, q.device())?)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let context =
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch, n, heads * d))?;
    Ok((context, probs))
}

/// Splits `(batch, n, count * d)` into heads, `(batch, count, n, d)`.
fn heads_of(t: &Tensor, count: usize, d: usize) -> candle_core::Result<Tensor> {
    let (batch, n, _) = t.dims3()?;
    t.reshape((batch, n, count, d))?
        .transpose(1, 2)?
        .contiguous()
}

/// Q, K and V as views of a fused `(n, q_width + 2 kv_width)` projection output.
pub(crate) fn split_fused_qkv(
    qkv: &Tensor,
    q_width: usize,
    kv_width: usize,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    Ok((
        qkv.narrow(1, 0, q_width)?,
        qkv.narrow(1, q_width, kv_width)?,
        qkv.narrow(1, q_width + kv_width, kv_width)?,
    ))
}

/// Geometry and options of one decoder attention layer.
pub(crate) struct DecoderAttention<'a> {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f64,
    pub softcap: Option<f64>,
    pub window: Option<usize>,
    /// Gemma's RMSNorm over each query and key head (weights already `1 + w`).
    pub qk_norm: Option<(&'a Tensor, &'a Tensor, f32)>,
    pub rotary: &'a Rotary,
}

/// Causal attention of one sequence from its projections `q` `(n, heads*d)`,
/// `k` and `v` `(n, kv_heads*d)`. Returns the output `(n, heads*d)` and, when
/// `keep`, each head's `n x n` probabilities (zeros where masked), as the
/// CPU kernel does.
pub(crate) fn decoder_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    layer: &DecoderAttention<'_>,
    keep: bool,
) -> candle_core::Result<(Tensor, Vec<Vec<f32>>)> {
    let n = q.dim(0)?;
    let d = layer.head_dim;
    let mut qh = heads_of(&q.unsqueeze(0)?, layer.n_heads, d)?;
    let mut kh = heads_of(&k.unsqueeze(0)?, layer.n_kv_heads, d)?;
    let vh = heads_of(&v.unsqueeze(0)?, layer.n_kv_heads, d)?;
    if let Some((q_norm, k_norm, eps)) = layer.qk_norm {
        qh = candle_nn::ops::rms_norm(&qh, q_norm, eps)?;
        kh = candle_nn::ops::rms_norm(&kh, k_norm, eps)?;
    }
    let qh = layer.rotary.apply(&qh)?;
    let kh = layer.rotary.apply(&kh)?;
    let visibility = Visibility {
        causal: true,
        window: layer.window,
        lengths: &[n],
    };
    let (context, probs) = attend(&qh, &kh, &vh, &visibility, layer.scale, layer.softcap)?;
    let probs = if keep {
        let flat = probs
            .flatten_all()?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?;
        flat.chunks(n * n).map(<[f32]>::to_vec).collect()
    } else {
        Vec::new()
    };
    Ok((context.reshape((n, layer.n_heads * d))?, probs))
}

/// Attention over a fused QKV projection `(batch, n, 3 * heads * d)` laid out
/// as `layout` says (GPT-NeoX and BERT), with an optional rotary embedding of
/// q and k. Returns the context `(batch, n, heads * d)` and the rows of the
/// probabilities `capture` selects, per sequence and head, over that
/// sequence's keys (the shape `attention::attend` returns).
pub(crate) fn fused_attention(
    qkv: &Tensor,
    layout: crate::attention::QkvLayout,
    visibility: &Visibility<'_>,
    scale: f64,
    rotary: Option<&Rotary>,
    capture: Option<&RowSelection>,
) -> candle_core::Result<(Tensor, Vec<Vec<F32Matrix>>)> {
    let (batch, n, _) = qkv.dims3()?;
    let (heads, d) = (layout.heads, layout.head_dim);
    // Each part as `(batch, n, heads, d)`.
    let part = |i: usize| -> candle_core::Result<Tensor> {
        if layout.per_head_interleaved {
            qkv.reshape((batch, n, heads, 3, d))?
                .narrow(3, i, 1)?
                .squeeze(3)
        } else {
            qkv.reshape((batch, n, 3, heads, d))?
                .narrow(2, i, 1)?
                .squeeze(2)
        }
    };
    let split = |i: usize| part(i)?.transpose(1, 2)?.contiguous();
    let (mut q, mut k, v) = (split(0)?, split(1)?, split(2)?);
    if let Some(rotary) = rotary {
        q = rotary.apply(&q)?;
        k = rotary.apply(&k)?;
    }
    let (context, probs) = attend(&q, &k, &v, visibility, scale, None)?;
    let captured = match capture {
        None => Vec::new(),
        Some(selection) => {
            let flat = probs
                .flatten_all()?
                .to_device(&Device::Cpu)?
                .to_vec1::<f32>()?;
            visibility
                .lengths
                .iter()
                .enumerate()
                .map(|(s, &len)| {
                    let rows = selection.positions(len);
                    (0..heads)
                        .map(|h| {
                            let head = &flat[(s * heads + h) * n * n..(s * heads + h + 1) * n * n];
                            let mut data = Vec::with_capacity(rows.len() * len);
                            for &r in &rows {
                                data.extend_from_slice(&head[r * n..r * n + len]);
                            }
                            F32Matrix::new(rows.len(), len, data)
                        })
                        .collect()
                })
                .collect()
        }
    };
    Ok((context, captured))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible(mask: &Tensor) -> Vec<Vec<Vec<bool>>> {
        let (b, _, n, _) = mask.dims4().unwrap();
        let flat = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (0..b)
            .map(|s| {
                (0..n)
                    .map(|i| (0..n).map(|j| flat[(s * n + i) * n + j] == 0.0).collect())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn causal_window_and_padding_masks() {
        let v = Visibility {
            causal: true,
            window: Some(2),
            lengths: &[4, 2],
        };
        let m = visible(&v.additive_mask(4, &Device::Cpu).unwrap());
        // Query 3 of the full sequence sees keys 2 and 3 only (i - j < 2).
        assert_eq!(m[0][3], [false, false, true, true]);
        assert_eq!(m[0][0], [true, false, false, false]);
        // The short sequence: causal among its real tokens; padded queries
        // see its real keys, never padding.
        assert_eq!(m[1][0], [true, false, false, false]);
        assert_eq!(m[1][1], [true, true, false, false]);
        assert_eq!(m[1][3], [true, true, false, false]);
        let bidirectional = Visibility {
            causal: false,
            window: None,
            lengths: &[3],
        };
        let m = visible(&bidirectional.additive_mask(3, &Device::Cpu).unwrap());
        assert!(m[0].iter().all(|row| row.iter().all(|&x| x)));
    }

    #[test]
    fn grouped_heads_read_their_key_head() {
        // Two query heads share one key/value head: both must equal a
        // single-head attention computed by hand.
        let (n, d) = (3usize, 2usize);
        let q: Vec<f32> = (0..2 * n * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let k: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.61).cos()).collect();
        let v: Vec<f32> = (0..n * d).map(|i| i as f32 - 2.0).collect();
        let qt = Tensor::from_slice(&q, (1, 2, n, d), &Device::Cpu).unwrap();
        let kt = Tensor::from_slice(&k, (1, 1, n, d), &Device::Cpu).unwrap();
        let vt = Tensor::from_slice(&v, (1, 1, n, d), &Device::Cpu).unwrap();
        let vis = Visibility {
            causal: true,
            window: None,
            lengths: &[n],
        };
        let (context, _) = attend(&qt, &kt, &vt, &vis, 0.5, None).unwrap();
        let got = context.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for h in 0..2 {
            for i in 0..n {
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        (0..d)
                            .map(|c| q[(h * n + i) * d + c] as f64 * k[j * d + c] as f64)
                            .sum::<f64>()
                            * 0.5
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for c in 0..d {
                    let want: f64 = (0..=i)
                        .map(|j| weights[j] / total * v[j * d + c] as f64)
                        .sum();
                    let have = got[i * 2 * d + h * d + c] as f64;
                    assert!((have - want).abs() < 1e-5, "head {h} row {i} col {c}");
                }
            }
        }
    }
}
