//! Building blocks shared by the Llama-family decoders (`llama.rs`,
//! `gemma3.rs`): projections that may be dense or quantised, rotary tables,
//! and a causal attention kernel that hands back its probabilities.
//!
//! Attention is computed on raw `f32` slices with the `gemm` crate (the
//! kernel candle itself uses) rather than with candle tensor ops, for two
//! reasons: the probabilities are part of the output, so they are written once
//! straight into the vectors that leave the crate instead of being copied out
//! of candle storage; and working in blocks of query rows lets us skip the
//! masked upper triangle (and, for sliding windows, everything left of the
//! window), which halves the attention work at long contexts.

use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Storage, Tensor};
use rayon::prelude::*;

use crate::tensor_ops::Ops;
use crate::{AttentionCapture, F32Matrix, ForwardRequest, LogitsCapture, ModelError};

/// A projection `y = x W^T` whose weight is either dense or in a GGUF block
/// format.
#[derive(Debug, Clone)]
pub(crate) enum Proj {
    /// `W^T`, `(in, out)`, contiguous. gemm multiplies by a weight in this
    /// layout without repacking it on every call, which is measurably faster
    /// (~1.5x at 64 rows on this CPU) than the `(out, in)` layout of the
    /// checkpoint seen through a transposed view.
    Transposed(Tensor),
    /// `W`, `(out, in)`, as stored: only for the tied unembedding, which
    /// would otherwise be held twice.
    AsStored(Tensor),
    Quant(QMatMul),
}

impl Proj {
    /// From a Hugging Face `(out, in)` weight.
    pub(crate) fn dense(w: &Tensor) -> candle_core::Result<Self> {
        Ok(Proj::Transposed(w.t()?.contiguous()?))
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Proj::Transposed(wt) => x.matmul(wt),
            Proj::AsStored(w) => x.matmul(&w.t()?),
            Proj::Quant(q) => q.forward(x),
        }
    }
}

/// A run of columns inside a row-major `f32` tensor: how the attention kernel
/// reads Q, K and V out of one fused projection without copying them apart.
pub(crate) struct Cols<'a> {
    pub data: &'a [f32],
    pub stride: usize,
    pub offset: usize,
}

impl<'a> Cols<'a> {
    /// Every column of a row-major buffer `stride` wide.
    pub fn whole(data: &'a [f32], stride: usize) -> Self {
        Self {
            data,
            stride,
            offset: 0,
        }
    }
}

/// Runs `f` on the tensor's `f32` data, which must be CPU and contiguous.
/// Borrowing candle's storage avoids a copy of every activation we read.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R, ModelError> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let data = match &*storage {
        Storage::Cpu(cpu) => cpu.as_slice::<f32>()?,
        _ => {
            return Err(ModelError::Unsupported(
                "internal: a CPU kernel was handed a tensor on another device".into(),
            ));
        }
    };
    let start = layout.start_offset();
    Ok(f(&data[start..start + t.elem_count()]))
}

/// Copies a 2-D tensor from any device into a matrix that leaves the crate.
pub(crate) fn to_matrix(t: &Tensor) -> Result<F32Matrix, ModelError> {
    let (rows, cols) = t.dims2()?;
    if !t.device().is_cpu() {
        let data = t.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        return Ok(F32Matrix::new(rows, cols, data));
    }
    let data = with_f32(t, |s| s.to_vec())?;
    Ok(F32Matrix::new(rows, cols, data))
}

/// Rotary angles as Hugging Face's default rope computes them, in `f32`:
/// `inv_freq[i] = 1 / base^(2i/d)`, angle = position * inv_freq. Returns
/// `(cos, sin)`, each `n x d/2` row-major.
pub(crate) fn rotary_tables(n: usize, head_dim: usize, base: f64) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            1.0f32 / (base as f32).powf(exponent)
        })
        .collect();
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for &f in &inv_freq {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// Per-head preparation applied while copying Q or K out of the projection
/// output: Gemma's RMSNorm over each head (scale already includes the `1 +`),
/// then the half-split rotary of Hugging Face.
pub(crate) struct HeadPrep<'a> {
    pub norm: Option<(&'a [f32], f32)>,
    pub cos: &'a [f32],
    pub sin: &'a [f32],
}

/// Copies `heads` heads of `head_dim` from `src` into a contiguous
/// `n x (heads*head_dim)` buffer, normalising and rotating each head.
pub(crate) fn prepare_heads(
    src: &Cols<'_>,
    n: usize,
    heads: usize,
    head_dim: usize,
    prep: &HeadPrep<'_>,
) -> Vec<f32> {
    let width = heads * head_dim;
    let half = head_dim / 2;
    let mut out = vec![0f32; n * width];
    out.par_chunks_mut(width).enumerate().for_each(|(p, row)| {
        let mut t = vec![0f32; head_dim];
        let s = &src.data[p * src.stride + src.offset..p * src.stride + src.offset + width];
        let cos = &prep.cos[p * half..(p + 1) * half];
        let sin = &prep.sin[p * half..(p + 1) * half];
        for h in 0..heads {
            let x = &s[h * head_dim..(h + 1) * head_dim];
            let y = &mut row[h * head_dim..(h + 1) * head_dim];
            match prep.norm {
                Some((w, eps)) => {
                    let ms = x.iter().map(|v| v * v).sum::<f32>() / head_dim as f32;
                    let r = 1.0 / (ms + eps).sqrt();
                    for i in 0..head_dim {
                        t[i] = x[i] * r * w[i];
                    }
                }
                None => t.copy_from_slice(x),
            }
            for i in 0..half {
                let (a, b) = (t[i], t[i + half]);
                y[i] = a * cos[i] - b * sin[i];
                y[i + half] = b * cos[i] + a * sin[i];
            }
        }
    });
    out
}

/// Geometry and options of one attention layer.
pub(crate) struct AttnSpec {
    pub n: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub softcap: Option<f32>,
    /// Keys `j` with `i - j < window` are visible to query `i` (the
    /// convention of transformers' sliding-window mask).
    pub window: Option<usize>,
}

struct SendPtr(*mut f32);
// SAFETY: every task writes a disjoint region (its own block of query rows of
// its own head); the buffers outlive the parallel loop.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    // A method, so that closures capture the wrapper rather than its raw field.
    fn get(&self) -> *mut f32 {
        self.0
    }
}

const ROW_BLOCK: usize = 32;

/// Causal (optionally sliding-window) attention. `q` is `n x (heads*d)`,
/// `k` is `n x (kv_heads*d)`, both contiguous; `v` is read in place.
/// Returns the attention output `n x (heads*d)` and, when `keep` is set,
/// each head's `n x n` probabilities (zeros where masked).
pub(crate) fn attention(
    q: &[f32],
    k: &[f32],
    v: &Cols<'_>,
    spec: &AttnSpec,
    keep: bool,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let AttnSpec {
        n,
        n_heads,
        n_kv_heads,
        head_dim: d,
        ..
    } = *spec;
    let group = n_heads / n_kv_heads;
    let width = n_heads * d;
    let kv_width = n_kv_heads * d;
    let mut out = vec![0f32; n * width];
    let mut probs: Vec<Vec<f32>> = if keep {
        (0..n_heads).map(|_| vec![0f32; n * n]).collect()
    } else {
        Vec::new()
    };
    let out_ptr = SendPtr(out.as_mut_ptr());
    let prob_ptrs: Vec<SendPtr> = probs.iter_mut().map(|p| SendPtr(p.as_mut_ptr())).collect();
    let blocks = n.div_ceil(ROW_BLOCK);
    (0..n_heads * blocks).into_par_iter().for_each(|task| {
        let h = task / blocks;
        let b = task % blocks;
        let g = h / group;
        let r0 = b * ROW_BLOCK;
        let r1 = (r0 + ROW_BLOCK).min(n);
        let rows = r1 - r0;
        let kmin = match spec.window {
            Some(w) => (r0 + 1).saturating_sub(w),
            None => 0,
        };
        let kmax = r1;
        let cols = kmax - kmin;
        let mut scratch = Vec::new();
        let (p, ld) = if keep {
            // SAFETY: rows r0..r1 of head h's matrix belong to this task only.
            (unsafe { prob_ptrs[h].get().add(r0 * n + kmin) }, n)
        } else {
            scratch.resize(rows * cols, 0f32);
            (scratch.as_mut_ptr(), cols)
        };
        // SAFETY: all pointers and strides stay inside the buffers: q rows
        // r0..r1 of head h, k/v rows kmin..kmax of kv head g, and the
        // destination block described above.
        unsafe {
            gemm::gemm(
                rows,
                cols,
                d,
                p,
                1,
                ld as isize,
                false,
                q.as_ptr().add(r0 * width + h * d),
                1,
                width as isize,
                k.as_ptr().add(kmin * kv_width + g * d),
                kv_width as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
            for r in 0..rows {
                let i = r0 + r;
                let lo = match spec.window {
                    Some(w) => (i + 1).saturating_sub(w),
                    None => 0,
                };
                let row = std::slice::from_raw_parts_mut(p.add(r * ld), cols);
                softmax_row(row, lo - kmin, i + 1 - kmin, spec.scale, spec.softcap);
            }
            gemm::gemm(
                rows,
                d,
                cols,
                out_ptr.get().add(r0 * width + h * d),
                1,
                width as isize,
                false,
                p,
                1,
                ld as isize,
                v.data.as_ptr().add(kmin * v.stride + v.offset + g * d),
                1,
                v.stride as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
    (out, probs)
}

/// In-place softmax of `row[lo..hi]` after scaling (and soft-capping) the raw
/// scores; everything outside `lo..hi` becomes exactly zero, as the additive
/// mask of the reference makes it.
fn softmax_row(row: &mut [f32], lo: usize, hi: usize, scale: f32, softcap: Option<f32>) {
    row[..lo].fill(0.0);
    row[hi..].fill(0.0);
    let live = &mut row[lo..hi];
    match softcap {
        None => live.iter_mut().for_each(|x| *x *= scale),
        Some(c) => vmath::softcap(live, scale, c),
    }
    vmath::softmax(live);
}

/// Attention of one layer with the CPU kernels, from a fused QKV projection
/// output `(n, q_width + 2 kv_width)`: Q and K are prepared (per-head norm,
/// rotary) while copied out, V is read in place. Returns the output
/// `(n, q_width)` and, when `keep`, each head's probabilities.
pub(crate) fn cpu_attention_fused(
    qkv: &Tensor,
    spec: &AttnSpec,
    q_prep: &HeadPrep<'_>,
    k_prep: &HeadPrep<'_>,
    keep: bool,
) -> Result<(Tensor, Vec<Vec<f32>>), ModelError> {
    let (q_width, kv_width) = (
        spec.n_heads * spec.head_dim,
        spec.n_kv_heads * spec.head_dim,
    );
    let stride = q_width + 2 * kv_width;
    let (out, probs) = with_f32(qkv, |s| {
        let col = |offset| Cols {
            data: s,
            stride,
            offset,
        };
        let qh = prepare_heads(&col(0), spec.n, spec.n_heads, spec.head_dim, q_prep);
        let kh = prepare_heads(
            &col(q_width),
            spec.n,
            spec.n_kv_heads,
            spec.head_dim,
            k_prep,
        );
        attention(&qh, &kh, &col(q_width + kv_width), spec, keep)
    })?;
    Ok((
        Tensor::from_vec(out, (spec.n, q_width), &Device::Cpu)?,
        probs,
    ))
}

/// As [`cpu_attention_fused`], from separate Q, K and V projection outputs
/// (the quantised path).
pub(crate) fn cpu_attention_split(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    spec: &AttnSpec,
    q_prep: &HeadPrep<'_>,
    k_prep: &HeadPrep<'_>,
    keep: bool,
) -> Result<(Tensor, Vec<Vec<f32>>), ModelError> {
    let (q_width, kv_width) = (
        spec.n_heads * spec.head_dim,
        spec.n_kv_heads * spec.head_dim,
    );
    let (out, probs) = with_f32(q, |qs| {
        with_f32(k, |ks| {
            with_f32(v, |vs| {
                let qh = prepare_heads(
                    &Cols::whole(qs, q_width),
                    spec.n,
                    spec.n_heads,
                    spec.head_dim,
                    q_prep,
                );
                let kh = prepare_heads(
                    &Cols::whole(ks, kv_width),
                    spec.n,
                    spec.n_kv_heads,
                    spec.head_dim,
                    k_prep,
                );
                attention(&qh, &kh, &Cols::whole(vs, kv_width), spec, keep)
            })
        })
    })???;
    Ok((
        Tensor::from_vec(out, (spec.n, q_width), &Device::Cpu)?,
        probs,
    ))
}

/// The gating activation of a feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    /// SwiGLU (Llama): `silu(gate) * up`.
    Silu,
    /// GeGLU with tanh-approximated GELU (Gemma, `gelu_pytorch_tanh`).
    GeluTanh,
}

/// `act(gate) * up` over a fused `n x 2f` projection output (gate first).
pub(crate) fn gated(gate_up: &Tensor, act: Act, ops: Ops) -> Result<Tensor, ModelError> {
    let (n, two_f) = gate_up.dims2()?;
    let f = two_f / 2;
    if ops == Ops::Tensor {
        let (gate, up) = (gate_up.narrow(1, 0, f)?, gate_up.narrow(1, f, f)?);
        return Ok(crate::tensor_ops::gate(act, &gate, &up)?);
    }
    let mut out = vec![0f32; n * f];
    with_f32(gate_up, |s| {
        out.par_chunks_mut(f).enumerate().for_each(|(p, o)| {
            let (g, u) = s[p * two_f..(p + 1) * two_f].split_at(f);
            vmath::gate(act, g, u, o);
        })
    })?;
    Ok(Tensor::from_vec(out, (n, f), &Device::Cpu)?)
}

/// `act(gate) * up` over two separate outputs (the quantised path).
pub(crate) fn gated_pair(
    gate: &Tensor,
    up: &Tensor,
    act: Act,
    ops: Ops,
) -> Result<Tensor, ModelError> {
    if ops == Ops::Tensor {
        return Ok(crate::tensor_ops::gate(act, gate, up)?);
    }
    let (n, f) = gate.dims2()?;
    let mut out = vec![0f32; n * f];
    with_f32(gate, |g| {
        with_f32(up, |u| {
            out.par_chunks_mut(f).enumerate().for_each(|(p, o)| {
                let row = p * f..(p + 1) * f;
                vmath::gate(act, &g[row.clone()], &u[row], o);
            })
        })
    })??;
    Ok(Tensor::from_vec(out, (n, f), &Device::Cpu)?)
}

/// Element-wise kernels (exp, tanh, softmax, gating) written so that the
/// compiler vectorises them, each compiled for AVX-512, for AVX2+FMA and for
/// the baseline, and picked at run time. libm's scalar `expf`/`tanhf` took
/// about a sixth of a Gemma forward pass. Every path performs the same IEEE
/// operations in the same order (Rust does not contract into FMA; sums use
/// eight fixed partial sums), so results do not depend on the CPU.
pub(crate) mod vmath {
    use super::Act;

    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;

    /// exp(x): x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor
    /// series to degree 7 (truncation below 1e-8 relative), times 2^n built
    /// in the exponent bits. Inputs are clamped to [-87, 88] (results below
    /// 1.7e-38 become that value instead of a subnormal).
    #[inline(always)]
    pub(crate) fn exp(x: f32) -> f32 {
        let x = x.clamp(-87.0, 88.0);
        let n = (x * LOG2E + ROUND) - ROUND;
        let r = (x - n * LN2_HI) - n * LN2_LO;
        let mut p = 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;
        p * f32::from_bits(((n as i32 + 127) as u32) << 23)
    }

    /// tanh(u) = 1 - 2 / (exp(2u) + 1): absolute error about 1e-7, which is
    /// what GELU's `1 + tanh` and a soft-cap need.
    #[inline(always)]
    pub(crate) fn tanh(u: f32) -> f32 {
        1.0 - 2.0 / (exp(2.0 * u) + 1.0)
    }

    #[inline(always)]
    fn silu(x: f32) -> f32 {
        x / (1.0 + exp(-x))
    }

    #[inline(always)]
    fn gelu_tanh(x: f32) -> f32 {
        const BETA: f32 = 0.797_884_6; // sqrt(2 / pi)
        const KAPPA: f32 = 0.044715;
        0.5 * x * (1.0 + tanh(BETA * (x + KAPPA * x * x * x)))
    }

    #[inline(always)]
    fn gate_body(act: Act, g: &[f32], u: &[f32], o: &mut [f32]) {
        match act {
            Act::Silu => {
                for ((o, g), u) in o.iter_mut().zip(g).zip(u) {
                    *o = silu(*g) * u;
                }
            }
            Act::GeluTanh => {
                for ((o, g), u) in o.iter_mut().zip(g).zip(u) {
                    *o = gelu_tanh(*g) * u;
                }
            }
        }
    }

    #[inline(always)]
    fn softcap_body(xs: &mut [f32], scale: f32, cap: f32) {
        for x in xs.iter_mut() {
            *x = tanh(*x * scale / cap) * cap;
        }
    }

    #[inline(always)]
    fn softmax_body(xs: &mut [f32]) {
        let mut lanes = [f32::NEG_INFINITY; 8];
        let mut chunks = xs.chunks_exact(8);
        for c in &mut chunks {
            for (m, v) in lanes.iter_mut().zip(c) {
                *m = m.max(*v);
            }
        }
        let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for v in chunks.remainder() {
            max = max.max(*v);
        }
        for x in xs.iter_mut() {
            *x = exp(*x - max);
        }
        let mut lanes = [0f32; 8];
        let mut chunks = xs.chunks_exact(8);
        for c in &mut chunks {
            for (s, v) in lanes.iter_mut().zip(c) {
                *s += *v;
            }
        }
        let mut sum = lanes.iter().sum::<f32>();
        for v in chunks.remainder() {
            sum += *v;
        }
        let inv = 1.0 / sum;
        for x in xs.iter_mut() {
            *x *= inv;
        }
    }

    /// Compiles `$body` once per instruction set and dispatches at run time.
    macro_rules! multiversion {
        ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
            pub(crate) fn $name($($arg: $ty),*) {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f")]
                    fn avx512($($arg: $ty),*) {
                        $body($($arg),*)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    fn avx2($($arg: $ty),*) {
                        $body($($arg),*)
                    }
                    if std::arch::is_x86_feature_detected!("avx512f") {
                        // SAFETY: the CPU has the features avx512 was
                        // compiled for.
                        return unsafe { avx512($($arg),*) };
                    }
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                    {
                        // SAFETY: as above, for avx2.
                        return unsafe { avx2($($arg),*) };
                    }
                }
                $body($($arg),*)
            }
        };
    }

    multiversion!(gate, gate_body, (act: Act, g: &[f32], u: &[f32], o: &mut [f32]));
    multiversion!(softcap, softcap_body, (xs: &mut [f32], scale: f32, cap: f32));
    multiversion!(softmax, softmax_body, (xs: &mut [f32]));

    #[cfg(test)]
    mod tests {
        #[test]
        fn exp_and_tanh_are_accurate() {
            let mut worst_exp = 0f64;
            let mut worst_tanh = 0f64;
            let mut x = -87.0f32;
            while x < 88.0 {
                let e = (x as f64).exp();
                worst_exp = worst_exp.max(((super::exp(x) as f64) - e).abs() / e);
                let t = (x as f64 / 8.0).tanh();
                worst_tanh = worst_tanh.max(((super::tanh(x / 8.0) as f64) - t).abs());
                x += 0.0137;
            }
            assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
            assert!(worst_tanh < 3e-7, "tanh absolute error {worst_tanh}");
            assert_eq!(super::exp(-1000.0), super::exp(-87.0));
            assert!(super::exp(1000.0).is_finite());
        }

        #[test]
        fn softmax_sums_to_one() {
            let mut v: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
            super::softmax(&mut v);
            let s: f64 = v.iter().map(|&x| x as f64).sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
    }
}

/// Checks a request against a sequence before any work is done.
pub(crate) fn validate(
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
pub(crate) fn captured_queries(request: &ForwardRequest, n: usize) -> Option<Vec<usize>> {
    match &request.attention {
        AttentionCapture::None => None,
        AttentionCapture::All => Some((0..n).collect()),
        AttentionCapture::Queries(qs) => Some(qs.clone()),
    }
}

/// Turns one layer's per-head probabilities into the output matrices.
pub(crate) fn head_matrices(
    probs: Vec<Vec<f32>>,
    n: usize,
    request: &ForwardRequest,
) -> Vec<F32Matrix> {
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
pub(crate) fn logit_positions(request: &ForwardRequest, n: usize) -> Vec<usize> {
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
