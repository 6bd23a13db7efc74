//! The attention core shared by GPT-NeoX and BERT: for every (sequence, head),
//! scores `q k^T`, the masked softmax, and the weighted sum of values, read
//! straight from the fused QKV projection and written straight into the
//! `(batch, n, hidden)` context.
//!
//! Doing this per head with gemm on strided views, rather than with batched
//! candle ops, avoids: the `(batch, heads, n, n)` score tensor (one `n x n`
//! buffer per task instead, kept only when the caller wants the
//! probabilities), the copies that split and merge heads, the second copy of
//! captured probabilities into the output matrices, all work on right padding,
//! and, for causal models, most of the upper triangle (rows go in blocks, each
//! block against the keys up to its last row).

use rayon::prelude::*;

use crate::F32Matrix;
use crate::cpu_kernels::softmax_row;
use crate::hf_common::RowSelection;

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

/// A raw pointer that may cross threads: each task writes a disjoint set of
/// context entries (its own sequence rows and head columns).
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: see the type's comment; the pointee outlives the parallel section.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    // A method, so that closures capture the wrapper rather than its raw field.
    fn ptr(self) -> *mut f32 {
        self.0
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
    let ctx = SharedMut(context.as_mut_ptr());
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
            let mut probs = vec![0f32; len * len];
            let block = if causal { CAUSAL_BLOCK } else { len.max(1) };
            for r0 in (0..len).step_by(block) {
                let r1 = (r0 + block).min(len);
                let keys = if causal { r1 } else { len };
                // SAFETY: every index gemm touches lies inside the slices above:
                // rows r0..r1 and keys 0..keys of this sequence, columns 0..hd of
                // this head, in buffers whose lengths the asserts checked.
                unsafe {
                    gemm::gemm(
                        r1 - r0,
                        keys,
                        hd,
                        probs.as_mut_ptr().add(r0 * len),
                        1,
                        len as isize,
                        false,
                        q.as_ptr().add(r0 * ts),
                        1,
                        ts as isize,
                        k.as_ptr(),
                        ts as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for i in r0..r1 {
                    let visible = if causal { i + 1 } else { len };
                    softmax_row(&mut probs[i * len..(i + 1) * len], visible, scale);
                }
                // SAFETY: as above; the context rows r0..r1 of sequence b and
                // columns h*hd..(h+1)*hd are written by this task only.
                unsafe {
                    let dst = ctx.ptr().add((b * n + r0) * hidden + h * hd);
                    gemm::gemm(
                        r1 - r0,
                        hd,
                        keys,
                        dst,
                        1,
                        hidden as isize,
                        false,
                        probs.as_ptr().add(r0 * len),
                        1,
                        len as isize,
                        v.as_ptr(),
                        1,
                        ts as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
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
                let (x1, x2) = token[off..off + 2 * half].split_at_mut(half);
                for j in 0..half {
                    let (a, b) = (x1[j], x2[j]);
                    x1[j] = a * c[j] - b * s[j];
                    x2[j] = b * c[j] + a * s[j];
                }
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
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("rope needs a contiguous input")
        };
        let candle_core::CpuStorage::F32(data) = storage else {
            candle_core::bail!("rope is implemented here for f32")
        };
        let expected = self.layout.batch * self.layout.n * self.layout.token_stride();
        if end - start != expected {
            candle_core::bail!("rope: {} values for a layout of {expected}", end - start)
        }
        rope_in_place(&mut data[start..end], self.layout, self.cos, self.sin);
        Ok(())
    }
}
