//! `y = x W^T + b` against a weight packed once, when the model loads.
//!
//! Profiling a GPT-NeoX forward (128 tokens, one thread) put a fifth of its
//! time in the `gemm` crate's packing of the weight operand: `gemm` packs
//! both operands on every call, and a weight is the larger one (768 x 2304
//! against 128 x 768 activations). A model's weights never change, so here
//! they are laid out for the micro-kernel once, at load, and each product
//! packs only the activations. The micro-kernel itself is the usual one for
//! AVX2: a 6 x 16 tile of the output in twelve registers.
//!
//! Every output element is summed by one micro-kernel in a fixed order (depth
//! blocks of [`KC`], in order), whatever the number of threads: the threads
//! split the output's columns, never the sum. Results therefore do not depend
//! on `RAYON_NUM_THREADS`. They do depend on the instruction set (the AVX2
//! path fuses multiply and add, the portable one rounds twice), by a few f32
//! ulps of the sum.
//!
//! Where it is used: [`Dense`], every dense linear layer of the crate, packs
//! its weight when [`pays_here`] says so, for CPUs with AVX2 and FMA but not
//! AVX-512. With AVX-512, candle's `gemm` (built with `x86-v4`) runs 16-lane
//! micro-kernels, twice this one's width, which outweighs the packing saved;
//! an AVX-512 variant of this kernel waits for a machine to test it on. On
//! other architectures `gemm`'s own SIMD kernels stay in use.
//!
//! The same micro-kernel also runs the attention products of whole
//! sequences ([`InPlaceProduct`]): there the small operand (a head's keys
//! or values) is packed per call and the large one read in place.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::kernels::with_f32;

/// Output columns per packed panel: two AVX2 registers.
const NR: usize = 16;
/// Output rows per micro-kernel: 6 x 2 accumulators, 2 weight loads and one
/// broadcast use 15 of the 16 AVX2 registers.
const MR: usize = 6;
/// Depth of one pass: a KC x NR slice of a panel (16 KiB) stays in L1.
const KC: usize = 256;
/// Rows of activations per pass. Each pass reads every weight panel it
/// multiplies once more, from memory for a model's weights, so passes are
/// long: up to 516 rows, a whole 512-token text, take one. Their MC x KC
/// block of activations (516 KiB) lives in L2 and L3; measured on Zen 3, 258 or
/// 132 rows, which keep it in L2, were 10-25 % slower on 512-row products.
const MC: usize = 86 * MR;

/// Whether products on this module's kernel beat candle's matmul and the
/// `gemm` crate on this CPU (see the module notes); asked once per process.
pub(crate) fn pays_here() -> bool {
    static PAYS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PAYS.get_or_init(|| {
        // For A/B measurements against candle's matmul on the same build.
        if std::env::var_os("LMGEO_NO_PACKED_GEMM").is_some() {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            matches!(Kernel::detect(), Kernel::Avx2Fma)
                && !std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// A dense linear layer `x W^T (+ b)`, from a weight in the checkpoint's
/// `(out, in)` layout. On a CPU where it pays ([`pays_here`]) the weight is
/// packed once for [`PackedWeight::matmul`]: candle's matmul repacks its
/// weight operand on every call, a fifth of a forward pass. Otherwise `W` is
/// kept transposed, `(in, out)` and contiguous, which candle's matmul runs
/// without repacking per call (~1.5x faster at 64 rows than the checkpoint
/// layout seen through a transposed view).
#[derive(Debug, Clone)]
pub(crate) enum Dense {
    Packed {
        weight: PackedWeight,
        bias: Option<Vec<f32>>,
    },
    Transposed {
        weight_t: Tensor,
        bias: Option<Tensor>,
    },
}

impl Dense {
    /// `weight` in the checkpoint's `(out, in)` layout.
    pub fn new(weight: &Tensor, bias: Option<Tensor>) -> candle_core::Result<Self> {
        if weight.device().is_cpu() && pays_here() {
            Ok(Dense::Packed {
                weight: PackedWeight::from_tensor(weight)?,
                bias: bias
                    .map(|b| b.to_dtype(DType::F32)?.to_vec1::<f32>())
                    .transpose()?,
            })
        } else {
            Ok(Dense::Transposed {
                weight_t: weight.t()?.contiguous()?,
                bias,
            })
        }
    }

    /// `(..., in)` to `(..., out)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Dense::Packed { weight, bias } => weight.forward(x, bias.as_deref()),
            Dense::Transposed { weight_t, bias } => {
                let dims = x.dims();
                let (inner, rows) = (dims[dims.len() - 1], x.elem_count() / dims[dims.len() - 1]);
                let y = x.contiguous()?.reshape((rows, inner))?.matmul(weight_t)?;
                let y = match bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                };
                let mut out_dims = dims.to_vec();
                *out_dims
                    .last_mut()
                    .expect("a tensor with at least one axis") = weight_t.dim(1)?;
                y.reshape(out_dims)
            }
        }
    }
}

/// `W^T` of a linear layer, `(k, n)`, stored as `ceil(n / NR)` panels of NR
/// columns each, row after row (`k x NR`, contiguous), the last panel padded
/// with zeros.
#[derive(Debug, Clone)]
pub(crate) struct PackedWeight {
    k: usize,
    n: usize,
    panels: Vec<f32>,
}

impl PackedWeight {
    /// From a weight in the checkpoint's `(out, in)` = `(n, k)` row-major
    /// layout.
    pub fn from_out_in(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight is not {n} x {k}");
        let n_panels = n.div_ceil(NR);
        let mut panels = vec![0f32; n_panels * k * NR];
        panels
            .par_chunks_mut((k * NR).max(1))
            .enumerate()
            .for_each(|(p, panel)| fill_panel(panel, p, n, |i, j| w[j * k + i]));
        Self { k, n, panels }
    }

    /// From a candle weight in the checkpoint's `(out, in)` layout.
    pub fn from_tensor(w: &Tensor) -> candle_core::Result<Self> {
        let (out, inner) = w.dims2()?;
        let values = w.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        Ok(Self::from_out_in(&values, out, inner))
    }

    /// `x W^T (+ bias)` for a CPU tensor `x` of shape `(..., k)`; the result
    /// has shape `(..., n)`.
    pub fn forward(&self, x: &Tensor, bias: Option<&[f32]>) -> candle_core::Result<Tensor> {
        let mut dims = x.dims().to_vec();
        match dims.last_mut() {
            Some(last) if *last == self.k => *last = self.n,
            _ => candle_core::bail!(
                "a linear layer of input width {} applied to {dims:?}",
                self.k
            ),
        }
        let rows = x.elem_count() / self.k.max(1);
        let y = with_f32(x, |data| self.matmul(data, rows, bias))?;
        Tensor::from_vec(y, dims, x.device())
    }

    /// `x W^T (+ bias)` for `x` row-major `(m, k)`; the result is row-major
    /// `(m, n)`.
    pub fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
        self.matmul_with(Kernel::detect(), x, m, bias)
    }

    fn matmul_with(&self, kernel: Kernel, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        assert_eq!(x.len(), m * k, "input is not {m} x {k}");
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "bias is not {n} long");
        }
        if m == 0 || n == 0 || k == 0 {
            let row = bias.map_or_else(|| vec![0f32; n], <[f32]>::to_vec);
            return row.repeat(m);
        }
        let packed_x = pack_rows(x, m, k);
        let n_panels = n.div_ceil(NR);
        let tasks = rayon::current_num_threads().clamp(1, n_panels);
        // Not zeroed: the first depth block writes every element before any
        // is read (a memory pass saved per product).
        let mut out = Vec::<f32>::with_capacity(m * n);
        let dst = OutPtr(out.as_mut_ptr());
        let job = |t: usize| {
            let panels = t * n_panels / tasks..(t + 1) * n_panels / tasks;
            // SAFETY: task t writes only the columns of its own panels, and
            // `out` outlives every task.
            unsafe { self.panels_into(kernel, &packed_x, m, panels, bias, dst) }
        };
        if tasks == 1 {
            job(0);
        } else {
            (0..tasks).into_par_iter().for_each(job);
        }
        // SAFETY: the tasks' panels cover all n columns, and each task's
        // first depth block stored all m rows of them.
        unsafe { out.set_len(m * n) };
        out
    }

    /// Computes the output columns of `panels` into `dst` (`m x n`).
    ///
    /// # Safety
    /// `dst` must point to `m * n` writable floats that no one else writes
    /// in these columns meanwhile.
    unsafe fn panels_into(
        &self,
        kernel: Kernel,
        packed_x: &[f32],
        m: usize,
        panels: std::ops::Range<usize>,
        bias: Option<&[f32]>,
        dst: OutPtr,
    ) {
        let (k, n) = (self.k, self.n);
        for m0 in (0..m).step_by(MC) {
            let mc = MC.min(m - m0);
            for k0 in (0..k).step_by(KC) {
                let kc = KC.min(k - k0);
                for p in panels.clone() {
                    let cols = NR.min(n - p * NR);
                    let bias = bias.map(|b| &b[p * NR..][..cols]);
                    let b = &self.panels[p * k * NR + k0 * NR..][..kc * NR];
                    // The next panel's slice comes from memory (a model's
                    // weights do not stay in cache); each tile asks for a
                    // share of its lines, so that it has arrived when that
                    // panel starts. 8-17 % faster on 128-row products, level
                    // on 512-row ones (A/B against the same code without it).
                    let next_b = (p + 1 < panels.end)
                        .then(|| &self.panels[(p + 1) * k * NR + k0 * NR..][..kc * NR]);
                    let lines = (kc * NR * size_of::<f32>()).div_ceil(64);
                    let lines_per_tile = lines.div_ceil(mc.div_ceil(MR));
                    for (tile_index, r0) in (m0..m0 + mc).step_by(MR).enumerate() {
                        if let Some(next_b) = next_b {
                            let first = tile_index * lines_per_tile;
                            kernel
                                .prefetch_lines(next_b, first..(first + lines_per_tile).min(lines));
                        }
                        let rows = MR.min(m - r0);
                        let a = &packed_x[k0 * m.next_multiple_of(MR) + (r0 / MR) * kc * MR..]
                            [..kc * MR];
                        let tile = Tile {
                            // SAFETY: (r0, p * NR) lies inside the m x n output.
                            c: unsafe { dst.0.add(r0 * n + p * NR) },
                            ldc: n,
                            rows,
                            cols,
                            first: k0 == 0,
                            bias,
                        };
                        // SAFETY: `a` and `b` hold kc steps; the tile is ours.
                        unsafe { kernel.run(kc, a, b, &tile) };
                    }
                }
            }
        }
    }
}

/// Writes panel `p` (`k x NR`, step after step) of the `k x n` matrix whose
/// element `(i, j)` is `at(i, j)`; lanes past `n` are left as they are (the
/// zeros of a fresh buffer). Step by step, so that a row-major source is
/// read a row at a time, and a column-major one (a weight in the `(out, in)`
/// layout, or K read as K^T) from 16 cache lines for 16 steps.
fn fill_panel(panel: &mut [f32], p: usize, n: usize, at: impl Fn(usize, usize) -> f32) {
    let lanes = NR.min(n - p * NR);
    for (i, step) in panel.chunks_exact_mut(NR).enumerate() {
        for (lane, value) in step[..lanes].iter_mut().enumerate() {
            *value = at(i, p * NR + lane);
        }
    }
}

/// The best rate, in multiply-adds per second, of `runs` products of an
/// `m x k` activation with a packed `k x n` weight on the current rayon
/// threads, or `None` where linear layers do not use the packed kernel on
/// this CPU. For benchmarks: `bench_forward` prints it beside the forward
/// passes, so that a forward's share of the peak can be set against its
/// products' share in isolation.
#[doc(hidden)]
pub fn packed_product_rate(m: usize, k: usize, n: usize, runs: usize) -> Option<f64> {
    if !pays_here() {
        return None;
    }
    let values = |len: usize, step: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * step) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    };
    let weight = PackedWeight::from_out_in(&values(n * k, 7919), n, k);
    let x = values(m * k, 104_729);
    let best = (0..runs.max(1))
        .map(|_| {
            let start = std::time::Instant::now();
            std::hint::black_box(weight.matmul(&x, m, None));
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    Some((m * k * n) as f64 / best)
}

/// `x` (`m x k`, row-major) cut into depth blocks of [`KC`] columns; each
/// depth block holds `ceil(m / MR)` micro-panels of MR rows, each stored
/// column after column (`kc x MR`), so the micro-kernel reads its six
/// broadcasts from one cache line and the micro-panels one pass reads lie
/// next to each other (one stream for the prefetcher, few pages for the
/// TLB). Rows past `m` are zero.
///
/// Each micro-panel is written once, in order, a column of six values at a
/// time read from six row streams, into memory that is not zeroed first:
/// 3.5-5x faster than zeroing the buffer and then scattering row after row
/// into it (512 x 3072, Pythia's widest: 0.96 against 3.4 ms), which had
/// been about 9 % of the time of a 512-row product of that depth.
fn pack_rows(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let blocks = m.div_ceil(MR);
    let len = blocks * MR * k;
    let mut packed = Vec::<f32>::with_capacity(len);
    let mut rest = &mut packed.spare_capacity_mut()[..len];
    let mut panels = Vec::with_capacity(blocks * k.div_ceil(KC));
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        for blk in 0..blocks {
            let (panel, tail) = rest.split_at_mut(kc * MR);
            panels.push((k0, kc, blk, panel));
            rest = tail;
        }
    }
    panels
        .into_par_iter()
        .with_min_len(8)
        .for_each(|(k0, kc, blk, dst)| {
            let real = MR.min(m - blk * MR);
            // Rows past `m` read the last real row; their values are
            // replaced by zeros below.
            let rows: [&[f32]; MR] =
                std::array::from_fn(|r| &x[(blk * MR + r.min(real - 1)) * k + k0..][..kc]);
            for (i, column) in dst.chunks_exact_mut(MR).enumerate() {
                for (r, value) in column.iter_mut().enumerate() {
                    value.write(if r < real { rows[r][i] } else { 0.0 });
                }
            }
        });
    // SAFETY: the panels partition the first `len` elements, and every
    // panel wrote each of its kc x MR elements above.
    unsafe { packed.set_len(len) };
    packed
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint columns through it (see `matmul`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Where one micro-kernel's MR x NR result goes: `rows x cols` of it are
/// real. On the first depth block the tile is written (plus the bias), on
/// later ones added.
struct Tile<'a> {
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    first: bool,
    bias: Option<&'a [f32]>,
}

impl Tile<'_> {
    /// Stores `acc` (row-major MR x NR) into the real part of the tile.
    ///
    /// # Safety
    /// `c` must address a `rows x cols` block with row stride `ldc`, written
    /// by no one else meanwhile; on the first depth block it may be
    /// uninitialised (it is only written), on later ones it holds the sums so
    /// far.
    unsafe fn store(&self, acc: &[f32; MR * NR]) {
        for r in 0..self.rows {
            // SAFETY: the caller's contract; the row has `cols` elements.
            let row = unsafe { self.c.add(r * self.ldc) };
            for (j, &v) in acc[r * NR..][..self.cols].iter().enumerate() {
                // SAFETY: j < cols; on the first depth block nothing is read.
                unsafe {
                    let o = row.add(j);
                    match (self.first, self.bias) {
                        (true, Some(b)) => o.write(v + b[j]),
                        (true, None) => o.write(v),
                        (false, _) => o.write(o.read() + v),
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    Portable,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Kernel::Avx2Fma;
        }
        Kernel::Portable
    }

    /// Asks for cache lines `lines` (64-byte lines from the start) of
    /// `values` to be brought into L1; lines past the end are not asked for.
    fn prefetch_lines(self, values: &[f32], lines: std::ops::Range<usize>) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => {
                use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                let bytes = std::mem::size_of_val(values);
                for line in lines.take_while(|l| l * 64 < bytes) {
                    // SAFETY: the address lies inside `values`; a prefetch
                    // reads nothing and cannot fault.
                    unsafe {
                        _mm_prefetch::<_MM_HINT_T0>(values.as_ptr().cast::<i8>().add(line * 64))
                    };
                }
            }
            Kernel::Portable => {}
        }
    }

    /// # Safety
    /// `a` and `b` hold `kc` steps of MR and NR values; `tile` as in
    /// [`Tile::store`].
    unsafe fn run(self, kc: usize, a: &[f32], b: &[f32], tile: &Tile<'_>) {
        debug_assert!(a.len() >= kc * MR && b.len() >= kc * NR);
        match self {
            // SAFETY: detected above; the slices are long enough.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => unsafe { kernel_avx2::<false>(kc, a.as_ptr(), 0, b.as_ptr(), tile) },
            Kernel::Portable => unsafe { kernel_portable(kc, |r, i| a[i * MR + r], b, tile) },
        }
    }

    /// As [`Kernel::run`], with `a` read in place: row `r` of the tile at
    /// `a + r * lda`, `kc` values each, for the tile's `rows` rows only.
    ///
    /// # Safety
    /// Those rows must be readable; `b` and `tile` as in [`Kernel::run`].
    unsafe fn run_in_place(self, kc: usize, a: *const f32, lda: usize, b: &[f32], tile: &Tile<'_>) {
        debug_assert!(b.len() >= kc * NR && tile.rows >= 1);
        match self {
            // SAFETY: detected above; the caller's contract.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => unsafe { kernel_avx2::<true>(kc, a, lda, b.as_ptr(), tile) },
            // SAFETY: the caller's contract; rows past the tile's repeat its
            // last row, whose sums are never stored.
            Kernel::Portable => unsafe {
                let last = tile.rows - 1;
                kernel_portable(kc, |r, i| *a.add(r.min(last) * lda + i), b, tile)
            },
        }
    }
}

/// `dst = a b` on the calling thread, for a row-major `a` (`m x depth`, row
/// stride `lda`) read in place and a `b` (`depth x n`, element `(i, j)` at
/// `b[i * b_row + j * b_col]`) packed here, into a row-major `dst` (row
/// stride `ldc`): the attention products `Q K^T` and the mix with `V`,
/// where `b` (one head's keys or values) is the small operand and `a` (a
/// block of probabilities, in the mix) the large one, which packing would
/// copy. Sums run over `depth` in blocks of [`KC`] in order, whatever the
/// caller's threads.
pub(crate) struct InPlaceProduct {
    pub m: usize,
    pub n: usize,
    pub depth: usize,
    pub dst: *mut f32,
    pub ldc: usize,
    pub a: *const f32,
    pub lda: usize,
    pub b: *const f32,
    pub b_row: usize,
    pub b_col: usize,
}

impl InPlaceProduct {
    /// Computes the product on this CPU's kernel.
    ///
    /// # Safety
    /// `a`, `b` and `dst` must be valid for the rows, columns and strides
    /// given, and `dst` neither aliased by the inputs nor written by anyone
    /// else meanwhile.
    pub(crate) unsafe fn run(&self) {
        // SAFETY: the caller's contract.
        unsafe { self.run_on(Kernel::detect()) }
    }

    /// [`InPlaceProduct::run`] on a given kernel.
    ///
    /// # Safety
    /// That of [`InPlaceProduct::run`].
    unsafe fn run_on(&self, kernel: Kernel) {
        let &InPlaceProduct {
            m,
            n,
            depth,
            dst,
            ldc,
            a,
            lda,
            b,
            b_row,
            b_col,
        } = self;
        if m == 0 || n == 0 {
            return;
        }
        if depth == 0 {
            for r in 0..m {
                // SAFETY: row r of dst has n elements (the caller's contract).
                unsafe { dst.add(r * ldc).write_bytes(0, n) };
            }
            return;
        }
        let n_panels = n.div_ceil(NR);
        let mut panels = vec![0f32; n_panels * depth * NR];
        for (p, panel) in panels.chunks_exact_mut(depth * NR).enumerate() {
            // SAFETY: fill_panel asks for (i, j) with i < depth and j < n,
            // inside b (the caller's contract).
            fill_panel(panel, p, n, |i, j| unsafe { *b.add(i * b_row + j * b_col) });
        }
        for k0 in (0..depth).step_by(KC) {
            let kc = KC.min(depth - k0);
            for r0 in (0..m).step_by(MR) {
                let rows = MR.min(m - r0);
                for p in 0..n_panels {
                    let tile = Tile {
                        // SAFETY: (r0, p * NR) lies inside the m x n output.
                        c: unsafe { dst.add(r0 * ldc + p * NR) },
                        ldc,
                        rows,
                        cols: NR.min(n - p * NR),
                        first: k0 == 0,
                        bias: None,
                    };
                    let b = &panels[p * depth * NR + k0 * NR..][..kc * NR];
                    // SAFETY: rows r0.. of a hold columns k0..k0 + kc; the tile
                    // lies inside dst.
                    unsafe { kernel.run_in_place(kc, a.add(r0 * lda + k0), lda, b, &tile) };
                }
            }
        }
    }
}

/// The 6 x 16 tile in twelve AVX2 registers, one multiply-add per weight
/// pair and row per step. `a` is packed (`kc` steps of MR values) or, with
/// `IN_PLACE`, the tile's first row of a row-major matrix of row stride
/// `lda`, of which only the tile's `rows` rows are read.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2<const IN_PLACE: bool>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    tile: &Tile<'_>,
) {
    use std::arch::x86_64::*;
    // Rows past the tile's real ones repeat its last row (their sums are
    // never stored), so that nothing outside the matrix is read.
    let row_start: [usize; MR] = std::array::from_fn(|r| r.min(tile.rows - 1) * lda);
    // The tile is read (later depth blocks) or written at the end; asking
    // for its lines now hides their latency behind the kc steps.
    for r in 0..tile.rows {
        let row = tile.c.wrapping_add(r * tile.ldc).cast::<i8>();
        _mm_prefetch::<_MM_HINT_T0>(row);
        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(NR * 4 - 1));
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    for i in 0..kc {
        // SAFETY: i < kc, and the packed operands hold kc steps.
        unsafe {
            let b0 = _mm256_loadu_ps(b.add(i * NR));
            let b1 = _mm256_loadu_ps(b.add(i * NR + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let ar = if IN_PLACE {
                    _mm256_broadcast_ss(&*a.add(row_start[r] + i))
                } else {
                    _mm256_broadcast_ss(&*a.add(i * MR + r))
                };
                acc[0] = _mm256_fmadd_ps(ar, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(ar, b1, acc[1]);
            }
        }
    }
    if tile.rows == MR && tile.cols == NR {
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: a whole tile lies inside the output.
            unsafe {
                let c = tile.c.add(r * tile.ldc);
                let (mut v0, mut v1) = (acc[0], acc[1]);
                if tile.first {
                    if let Some(bias) = tile.bias {
                        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(bias.as_ptr()));
                        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(bias.as_ptr().add(8)));
                    }
                } else {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(c));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(c.add(8)));
                }
                _mm256_storeu_ps(c, v0);
                _mm256_storeu_ps(c.add(8), v1);
            }
        }
    } else {
        let mut spill = [0f32; MR * NR];
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: spill has MR rows of NR.
            unsafe {
                _mm256_storeu_ps(spill.as_mut_ptr().add(r * NR), acc[0]);
                _mm256_storeu_ps(spill.as_mut_ptr().add(r * NR + 8), acc[1]);
            }
        }
        // SAFETY: the caller's contract.
        unsafe { tile.store(&spill) };
    }
}

/// The same tile without SIMD intrinsics (the compiler vectorises the inner
/// loop for the baseline instruction set); `a_at(r, i)` is row r's value at
/// step i.
unsafe fn kernel_portable(
    kc: usize,
    a_at: impl Fn(usize, usize) -> f32,
    b: &[f32],
    tile: &Tile<'_>,
) {
    let mut acc = [0f32; MR * NR];
    for i in 0..kc {
        let bi = &b[i * NR..][..NR];
        for r in 0..MR {
            let ar = a_at(r, i);
            for (o, &w) in acc[r * NR..][..NR].iter_mut().zip(bi) {
                *o += ar * w;
            }
        }
    }
    // SAFETY: the caller's contract.
    unsafe { tile.store(&acc) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64 mapped to [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The product in f64, from the checkpoint layout, as the reference.
    fn reference(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = bias.map_or(0.0, |b| f64::from(b[j]));
                for t in 0..k {
                    s += f64::from(x[i * k + t]) * f64::from(w[j * k + t]);
                }
                out[i * n + j] = s;
            }
        }
        out
    }

    fn check(m: usize, k: usize, n: usize, with_bias: bool) {
        let x = values(m * k, 1 + m as u64);
        let w = values(n * k, 7 + n as u64);
        let b = values(n, 3);
        let bias = with_bias.then_some(b.as_slice());
        let packed = PackedWeight::from_out_in(&w, n, k);
        let got = packed.matmul(&x, m, bias);
        let want = reference(&x, &w, bias, m, k, n);
        // Each term is below 1 in magnitude; f32 summation of k of them errs
        // by at most about k * 2^-24 * sum|terms|, far below this bound.
        let tol = 1e-6 * (k as f64 + 1.0);
        for (idx, (&g, &r)) in got.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(g) - r).abs() <= tol,
                "{m}x{k}x{n} bias {with_bias}: element {idx} is {g}, reference {r}"
            );
        }
    }

    #[test]
    fn matches_an_f64_reference_on_edge_shapes() {
        // Shapes off every block size: rows past MR and MC, columns past NR,
        // depth past KC, and the degenerate ones.
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 5, 17),
            (5, 3, 15),
            (6, 16, 16),
            (7, 257, 33),
            (13, 300, 40),
            (MC + 5, KC * 2 + 3, 3 * NR + 1),
            (128, 768, 96),
        ] {
            check(m, k, n, false);
            check(m, k, n, true);
        }
    }

    #[test]
    fn empty_operands_give_the_bias_or_nothing() {
        let packed = PackedWeight::from_out_in(&[], 3, 0);
        assert_eq!(
            packed.matmul(&[], 2, Some(&[1.0, 2.0, 3.0])),
            vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
        );
        let packed = PackedWeight::from_out_in(&[1.0; 8], 2, 4);
        assert!(packed.matmul(&[], 0, None).is_empty());
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (m, k, n) = (50, 600, 200);
        let x = values(m * k, 11);
        let w = values(n * k, 12);
        let packed = PackedWeight::from_out_in(&w, n, k);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| packed.matmul(&x, m, None))
        };
        let one = run(1);
        for threads in [2, 3, 5] {
            assert!(
                one.iter()
                    .zip(run(threads))
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{threads} threads changed the result"
            );
        }
    }

    #[test]
    fn in_place_products_match_an_f64_reference() {
        // Both attention layouts of b: K^T (b_row = 1, b_col = a row stride)
        // and V (b_row = a row stride, b_col = 1), on shapes off every block
        // size, a and dst inside wider rows (dst's other columns must stay).
        for kernel in [Kernel::Portable, Kernel::detect()] {
            for &(m, n, depth) in &[
                (1, 1, 1),
                (5, 17, 3),
                (6, 16, 32),
                (13, 40, KC + 7),
                (40, 3, 2 * KC + 1),
                (4, 9, 0),
            ] {
                for keys_layout in [true, false] {
                    let (lda, ldb, ldc) = (depth + 3, n.max(depth) + 5, n + 4);
                    let a = values(m * lda, 31 + m as u64);
                    let (b_rows, b_row, b_col) = if keys_layout {
                        (n, 1, ldb)
                    } else {
                        (depth, ldb, 1)
                    };
                    let b = values(b_rows * ldb + 1, 37 + n as u64);
                    let mut dst = vec![7.5f32; m * ldc];
                    // SAFETY: every row, column and stride lies inside the
                    // buffers just made.
                    unsafe {
                        InPlaceProduct {
                            m,
                            n,
                            depth,
                            dst: dst.as_mut_ptr(),
                            ldc,
                            a: a.as_ptr(),
                            lda,
                            b: b.as_ptr(),
                            b_row,
                            b_col,
                        }
                        .run_on(kernel)
                    };
                    let tol = 1e-6 * (depth as f64 + 1.0);
                    for r in 0..m {
                        for j in 0..ldc {
                            let got = f64::from(dst[r * ldc + j]);
                            if j >= n {
                                assert_eq!(got, 7.5, "column {j} past the product was written");
                                continue;
                            }
                            let want: f64 = (0..depth)
                                .map(|i| {
                                    f64::from(a[r * lda + i]) * f64::from(b[i * b_row + j * b_col])
                                })
                                .sum();
                            assert!(
                                (got - want).abs() <= tol,
                                "{m}x{n}x{depth} keys layout {keys_layout}: ({r}, {j}) is {got}, \
                                 reference {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn both_kernels_agree_within_rounding() {
        let (m, k, n) = (9, 300, 40);
        let x = values(m * k, 21);
        let w = values(n * k, 22);
        let b = values(n, 23);
        let packed = PackedWeight::from_out_in(&w, n, k);
        let portable = packed.matmul_with(Kernel::Portable, &x, m, Some(&b));
        let detected = packed.matmul_with(Kernel::detect(), &x, m, Some(&b));
        for (p, d) in portable.iter().zip(&detected) {
            assert!((p - d).abs() <= 1e-4, "portable {p} against detected {d}");
        }
    }
}
