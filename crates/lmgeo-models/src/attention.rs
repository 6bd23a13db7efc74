//! The CPU attention kernels, on raw `f32` slices with the `gemm` crate (the
//! kernel candle itself uses) or, for whole sequences where it pays, the
//! packed kernel of `packed_gemm.rs`, rather than with candle tensor ops:
//!
//! - [`attend`], for GPT-NeoX and BERT: batches of right-padded sequences, q,
//!   k and v read straight from the fused QKV projection and the context
//!   written straight into `(batch, n, hidden)`;
//! - [`cpu_attention_fused`] and [`cpu_attention_split`], for the Llama-family
//!   decoders: one sequence, grouped-query heads, per-head RMSNorm and rotary
//!   applied while q and k are copied out, sliding windows and soft-capping.
//!
//! Both work per (sequence, head, block of query rows) with gemm on strided
//! views, which avoids: the `(batch, heads, n, n)` score tensor (one block of
//! rows per task instead, written straight into the output matrices when the
//! caller wants the probabilities), the copies that split and merge heads, all
//! work on right padding, and most of the masked upper triangle (each block of
//! rows against the keys up to its last row, and for sliding windows, from its
//! first row's window on), which halves the attention work at long contexts.
//! The softmax is [`crate::kernels::softmax_row`].

use rayon::prelude::*;

use candle_core::{Device, Tensor};

use crate::hf_common::RowSelection;
use crate::kernels::{softmax_row, with_f32};
use crate::{F32Matrix, ModelError};

/// Rows per block of a causal score computation: smaller blocks skip more of
/// the masked triangle, larger ones run gemm at a better size.
const CAUSAL_BLOCK: usize = 64;

/// Where a head's q, k and v sit in the fused projection output
/// `(batch, n, 3 * heads * head_dim)` (row-major, contiguous).
#[derive(Clone, Copy, Debug)]
pub(crate) struct QkvLayout {
    pub batch: usize,
    /// Padded sequence length.
    pub n: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// GPT-NeoX stores `[q_h | k_h | v_h]` per head; BERT (after our fusion at
    /// load) `[Q | K | V]` with heads inside each.
    pub per_head_interleaved: bool,
}

impl QkvLayout {
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Elements between consecutive tokens.
    pub fn token_stride(&self) -> usize {
        3 * self.hidden()
    }

    /// Offsets of head `h`'s q, k and v within a token's row.
    pub fn offsets(&self, h: usize) -> (usize, usize, usize) {
        let d = self.head_dim;
        if self.per_head_interleaved {
            (3 * d * h, 3 * d * h + d, 3 * d * h + 2 * d)
        } else {
            let hidden = self.hidden();
            (d * h, hidden + d * h, 2 * hidden + d * h)
        }
    }
}

pub(crate) struct AttentionResult {
    /// `(batch, n, hidden)`, rows of right padding left at zero.
    pub context: Vec<f32>,
    /// Per sequence, per head, the captured rows over that sequence's keys;
    /// empty when nothing is captured.
    pub probs: Vec<Vec<F32Matrix>>,
}

/// A raw pointer that may cross threads: each task writes a disjoint region
/// of the buffer behind it (its own block of query rows of its own head).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: see the type's comment; the pointee outlives the parallel section.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    // A method, so that closures capture the wrapper rather than its raw field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Rows from which [`product`] uses the packed kernel with `a` read in
/// place (where that kernel pays) instead of the `gemm` crate: it packs `b`
/// on every call, which a whole sequence's rows repay. In-process A/B, one
/// MiniLM head at 512 tokens: scores 0.28 against 0.36 ms, mix 0.25 against
/// 0.28; the causal blocks of 64 rows (Pythia's heads) were level, and 128
/// rows too.
const IN_PLACE_MIN_ROWS: usize = 256;

/// `dst = a b` for a row-major `a` (`rows x inner`, row stride `ld_a`) and
/// a `b` (`inner x cols`) given by its row and column strides, into a
/// row-major `dst` (row stride `ld_dst`): the one product behind both
/// attention products.
///
/// # Safety
/// Every pointer must be valid for the rows, columns and strides it is given,
/// and `dst` not aliased by the inputs or by another thread.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    rows: usize,
    cols: usize,
    inner: usize,
    dst: *mut f32,
    ld_dst: usize,
    a: *const f32,
    ld_a: usize,
    b: *const f32,
    b_row_stride: usize,
    b_col_stride: usize,
) {
    if rows >= IN_PLACE_MIN_ROWS && crate::packed_gemm::pays_here() {
        let product = crate::packed_gemm::InPlaceProduct {
            m: rows,
            n: cols,
            depth: inner,
            dst,
            ldc: ld_dst,
            a,
            lda: ld_a,
            b,
            b_row: b_row_stride,
            b_col: b_col_stride,
        };
        // SAFETY: the caller's contract, which is that of `run`.
        return unsafe { product.run() };
    }
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            rows,
            cols,
            inner,
            dst,
            1,
            ld_dst as isize,
            false,
            a,
            1,
            ld_a as isize,
            b,
            b_col_stride as isize,
            b_row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Scores of a block: `dst[r, j] = sum_c q[r, c] k[j, c]` for `rows` query rows
/// and `keys` keys of `d` channels; `ld_*` are the row strides (`k` is read
/// transposed). Contract of [`product`].
#[allow(clippy::too_many_arguments)]
unsafe fn scores(
    rows: usize,
    keys: usize,
    d: usize,
    dst: *mut f32,
    ld_dst: usize,
    q: *const f32,
    ld_q: usize,
    k: *const f32,
    ld_k: usize,
) {
    // SAFETY: the caller's contract.
    unsafe { product(rows, keys, d, dst, ld_dst, q, ld_q, k, 1, ld_k) }
}

/// Context of a block: `dst[r, c] = sum_j p[r, j] v[j, c]`. Contract of
/// [`product`].
#[allow(clippy::too_many_arguments)]
unsafe fn mix(
    rows: usize,
    d: usize,
    keys: usize,
    dst: *mut f32,
    ld_dst: usize,
    p: *const f32,
    ld_p: usize,
    v: *const f32,
    ld_v: usize,
) {
    // SAFETY: the caller's contract.
    unsafe { product(rows, d, keys, dst, ld_dst, p, ld_p, v, ld_v, 1) }
}

/// Rotary angles as transformers' default (or linearly scaled) rope computes
/// them, in `f32`: `inv_freq[i] = 1 / base^(2i/d) / factor` and
/// `angle = position * inv_freq`, for `d` rotated channels. Returns
/// `(cos, sin)`, each `n x d/2` row-major.
pub(crate) fn rotary_tables(n: usize, d: usize, base: f64, factor: f64) -> (Vec<f32>, Vec<f32>) {
    let half = d / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| {
            let exponent = (2 * i) as f32 / d as f32;
            1.0f32 / (base as f32).powf(exponent) / factor as f32
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

/// The half-split rotary of transformers' `rotate_half` on one head's first
/// `2 * cos.len()` channels, in place.
#[inline]
fn rotate_half(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (x1, x2) = x[..2 * half].split_at_mut(half);
    for j in 0..half {
        let (a, b) = (x1[j], x2[j]);
        x1[j] = a * cos[j] - b * sin[j];
        x2[j] = b * cos[j] + a * sin[j];
    }
}

/// Runs attention for all sequences and heads. `lengths[s]` is the real length
/// of sequence `s`; keys and queries beyond it are padding and are neither
/// attended to nor computed. `capture` selects the probability rows to return.
pub(crate) fn attend(
    qkv: &[f32],
    layout: QkvLayout,
    lengths: &[usize],
    causal: bool,
    scale: f32,
    capture: Option<&RowSelection>,
) -> AttentionResult {
    let QkvLayout {
        batch,
        n,
        heads,
        head_dim: hd,
        ..
    } = layout;
    let hidden = layout.hidden();
    let ts = layout.token_stride();
    assert_eq!(
        qkv.len(),
        batch * n * ts,
        "qkv buffer does not match its layout"
    );
    assert_eq!(lengths.len(), batch);
    let mut context = vec![0f32; batch * n * hidden];
    let ctx = SendPtr(context.as_mut_ptr());
    let tasks: Vec<(usize, usize)> = (0..batch)
        .flat_map(|b| (0..heads).map(move |h| (b, h)))
        .collect();
    let captured: Vec<Option<F32Matrix>> = tasks
        .par_iter()
        .map(|&(b, h)| {
            let len = lengths[b];
            let (qo, ko, vo) = layout.offsets(h);
            let base = b * n * ts;
            let q = &qkv[base + qo..];
            let k = &qkv[base + ko..];
            let v = &qkv[base + vo..];
            // Not zeroed in full: each row is written by `scores` up to its
            // last key and zeroed past it (the masked keys of a causal
            // block), before anything reads it. A zeroing pass over every
            // head's n x n matrix was 2-3 % of an encoder forward.
            let mut probs = Vec::<f32>::with_capacity(len * len);
            let probs_ptr = probs.as_mut_ptr();
            let block = if causal { CAUSAL_BLOCK } else { len.max(1) };
            for r0 in (0..len).step_by(block) {
                let r1 = (r0 + block).min(len);
                let keys = if causal { r1 } else { len };
                // SAFETY: every index gemm touches lies inside the slices above:
                // rows r0..r1 and keys 0..keys of this sequence, columns 0..hd of
                // this head, in buffers whose lengths the asserts checked; the
                // zeroed stretch is the rest of rows r0..r1, inside `probs`'
                // capacity, after which those rows are initialised.
                unsafe {
                    for i in r0..r1 {
                        probs_ptr.add(i * len + keys).write_bytes(0, len - keys);
                    }
                    scores(
                        r1 - r0,
                        keys,
                        hd,
                        probs_ptr.add(r0 * len),
                        len,
                        q.as_ptr().add(r0 * ts),
                        ts,
                        k.as_ptr(),
                        ts,
                    );
                }
                for i in r0..r1 {
                    let visible = if causal { i + 1 } else { len };
                    // SAFETY: row i was initialised just above.
                    let row =
                        unsafe { std::slice::from_raw_parts_mut(probs_ptr.add(i * len), len) };
                    softmax_row(row, 0, visible, scale, None);
                }
                // SAFETY: as above; the context rows r0..r1 of sequence b and
                // columns h*hd..(h+1)*hd are written by this task only.
                unsafe {
                    mix(
                        r1 - r0,
                        hd,
                        keys,
                        ctx.get().add((b * n + r0) * hidden + h * hd),
                        hidden,
                        probs_ptr.add(r0 * len),
                        len,
                        v.as_ptr(),
                        ts,
                    );
                }
            }
            // SAFETY: the blocks cover rows 0..len, each initialised whole.
            unsafe { probs.set_len(len * len) };
            match capture {
                None => None,
                Some(RowSelection::All) => Some(F32Matrix::new(len, len, probs)),
                Some(RowSelection::Rows(rows)) => {
                    let mut kept = Vec::with_capacity(rows.len() * len);
                    for &r in rows {
                        kept.extend_from_slice(&probs[r * len..(r + 1) * len]);
                    }
                    Some(F32Matrix::new(rows.len(), len, kept))
                }
            }
        })
        .collect();
    let probs = if capture.is_some() {
        let mut it = captured.into_iter().map(|m| m.expect("captured"));
        (0..batch)
            .map(|_| it.by_ref().take(heads).collect())
            .collect()
    } else {
        Vec::new()
    };
    AttentionResult { context, probs }
}

/// Rotary embedding (rotate-half convention) applied in place to the first
/// `2 * cos_row_len` channels of every head's q and k. `cos` and `sin` are
/// `(n, rot / 2)` tables for positions `0..n`.
pub(crate) fn rope_in_place(qkv: &mut [f32], layout: QkvLayout, cos: &[f32], sin: &[f32]) {
    let QkvLayout { n, heads, .. } = layout;
    let ts = layout.token_stride();
    let half = cos.len().checked_div(n).unwrap_or(0);
    if half == 0 {
        return;
    }
    qkv.par_chunks_mut(ts).enumerate().for_each(|(row, token)| {
        let pos = row % n;
        let (c, s) = (
            &cos[pos * half..(pos + 1) * half],
            &sin[pos * half..(pos + 1) * half],
        );
        for h in 0..heads {
            let (qo, ko, _) = layout.offsets(h);
            for off in [qo, ko] {
                rotate_half(&mut token[off..], c, s);
            }
        }
    });
}

/// candle in-place op wrapper for [`rope_in_place`].
pub(crate) struct RopeInPlace<'a> {
    pub layout: QkvLayout,
    pub cos: &'a [f32],
    pub sin: &'a [f32],
}

impl candle_core::InplaceOp1 for RopeInPlace<'_> {
    fn name(&self) -> &'static str {
        "lmgeo-rope"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let data = crate::kernels::contiguous_f32_mut(storage, layout, "rope")?;
        let expected = self.layout.batch * self.layout.n * self.layout.token_stride();
        if data.len() != expected {
            candle_core::bail!("rope: {} values for a layout of {expected}", data.len())
        }
        rope_in_place(data, self.layout, self.cos, self.sin);
        Ok(())
    }
}

/// A run of columns inside a row-major `f32` buffer: how the decoder kernel
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
fn prepare_heads(
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
        let s = &src.data[p * src.stride + src.offset..p * src.stride + src.offset + width];
        let cos = &prep.cos[p * half..(p + 1) * half];
        let sin = &prep.sin[p * half..(p + 1) * half];
        for (x, y) in s.chunks_exact(head_dim).zip(row.chunks_exact_mut(head_dim)) {
            match prep.norm {
                Some((w, eps)) => {
                    let ms = x.iter().map(|v| v * v).sum::<f32>() / head_dim as f32;
                    let r = 1.0 / (ms + eps).sqrt();
                    for i in 0..head_dim {
                        y[i] = x[i] * r * w[i];
                    }
                }
                None => y.copy_from_slice(x),
            }
            rotate_half(y, cos, sin);
        }
    });
    out
}

/// Geometry and options of one decoder attention layer.
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

/// Query rows per task of the decoder kernel.
const ROW_BLOCK: usize = 32;

/// Causal (optionally sliding-window) grouped-query attention. `q` is
/// `n x (heads*d)`, `k` is `n x (kv_heads*d)`, both contiguous; `v` is read in
/// place. Returns the attention output `n x (heads*d)` and, when `keep` is
/// set, each head's `n x n` probabilities (zeros where masked).
fn decoder_attend(
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
    // Not zeroed in full: each task zeroes the masked keys of its rows
    // (before `kmin` and after the block's last query) and the kernels write
    // the rest, so that every element is written once.
    let mut probs: Vec<Vec<f32>> = if keep {
        (0..n_heads).map(|_| Vec::with_capacity(n * n)).collect()
    } else {
        Vec::new()
    };
    let out_ptr = SendPtr(out.as_mut_ptr());
    let prob_ptrs: Vec<SendPtr> = probs.iter_mut().map(|p| SendPtr(p.as_mut_ptr())).collect();
    let first_key = |i: usize| match spec.window {
        Some(w) => (i + 1).saturating_sub(w),
        None => 0,
    };
    let blocks = n.div_ceil(ROW_BLOCK);
    (0..n_heads * blocks).into_par_iter().for_each(|task| {
        let h = task / blocks;
        let b = task % blocks;
        let g = h / group;
        let r0 = b * ROW_BLOCK;
        let r1 = (r0 + ROW_BLOCK).min(n);
        let rows = r1 - r0;
        let kmin = first_key(r0);
        let cols = r1 - kmin;
        let mut scratch = Vec::new();
        let (p, ld) = if keep {
            // SAFETY: rows r0..r1 of head h's matrix belong to this task only,
            // inside its capacity of n x n.
            unsafe {
                let head = prob_ptrs[h].get();
                for i in r0..r1 {
                    head.add(i * n).write_bytes(0, kmin);
                    head.add(i * n + r1).write_bytes(0, n - r1);
                }
                (head.add(r0 * n + kmin), n)
            }
        } else {
            scratch.resize(rows * cols, 0f32);
            (scratch.as_mut_ptr(), cols)
        };
        // SAFETY: all pointers and strides stay inside the buffers: q rows
        // r0..r1 of head h, k/v rows kmin..r1 of kv head g, and the
        // destination block described above.
        unsafe {
            scores(
                rows,
                cols,
                d,
                p,
                ld,
                q.as_ptr().add(r0 * width + h * d),
                width,
                k.as_ptr().add(kmin * kv_width + g * d),
                kv_width,
            );
            for r in 0..rows {
                let i = r0 + r;
                let row = std::slice::from_raw_parts_mut(p.add(r * ld), cols);
                softmax_row(
                    row,
                    first_key(i) - kmin,
                    i + 1 - kmin,
                    spec.scale,
                    spec.softcap,
                );
            }
            mix(
                rows,
                d,
                cols,
                out_ptr.get().add(r0 * width + h * d),
                width,
                p,
                ld,
                v.data.as_ptr().add(kmin * v.stride + v.offset + g * d),
                v.stride,
            );
        }
    });
    for head in &mut probs {
        // SAFETY: the tasks covered every row of every head: zeros outside
        // kmin..r1, scores (then probabilities) inside.
        unsafe { head.set_len(n * n) };
    }
    (out, probs)
}

/// Attention of one decoder layer from a fused QKV projection output
/// `(n, q_width + 2 kv_width)`: Q and K are prepared (per-head norm, rotary)
/// while copied out, V is read in place. Returns the output `(n, q_width)`
/// and, when `keep`, each head's probabilities.
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
        decoder_attend(&qh, &kh, &col(q_width + kv_width), spec, keep)
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
                decoder_attend(&qh, &kh, &Cols::whole(vs, kv_width), spec, keep)
            })
        })
    })???;
    Ok((
        Tensor::from_vec(out, (spec.n, q_width), &Device::Cpu)?,
        probs,
    ))
}
