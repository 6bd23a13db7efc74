//! Similarity of two representations of the same items (method.md
//! section 7.1).
//!
//! `X` (n x d1) and `Y` (n x d2) hold one row per item, in the same order
//! (row `i` of both is item `i`: the same text at two layers, or in two
//! models); the widths may differ. Every function errors on a different
//! number of rows, too few rows for its estimator, or a non-finite entry.
//!
//! * CKA, linear and RBF kernels (Kornblith et al. 2019), with the biased
//!   HSIC estimator or the unbiased one of Song et al. (2012) ("debiased
//!   CKA"): [`linear_cka`], [`rbf_cka`], [`kernel_cka`] for Gram matrices of
//!   any kernel.
//! * Mutual k-nearest-neighbour alignment (Huh et al. 2024):
//!   [`mutual_knn`], and the neighbour lists it compares,
//!   [`cosine_neighbours`].
//! * SVCCA (Raghu et al. 2017): [`svcca`].
//! * Orthogonal Procrustes distance (Ding et al. 2021):
//!   [`procrustes_distance`].
//! * Uncertainty for any score: a permutation null over the pairing of the
//!   items ([`permutation_test`]) and percentile bootstrap intervals over
//!   items ([`bootstrap_pair_ci`], [`bootstrap_ci`]).
//!
//! Linear CKA is computed from the centred data, never from an uncentred
//! Gram matrix: hidden states carry a large shared mean, and centring the
//! n x n Gram matrix afterwards would subtract numbers of that size from
//! each other. Of the two equal forms, `<Kc, Lc>_F` from the n x n Gram
//! matrices (`n^2 (d1 + d2) / 2` multiply-adds) and
//! `||Xc^T Yc||_F^2` from d x d products (`n (d1 d2 + (d1^2 + d2^2) / 2)`),
//! the cheaper one is taken; symmetric products form one triangle only.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use crate::bootstrap::{BootstrapOptions, Interval};
use crate::checks;
use crate::error::{ProbeError, Result};
use crate::kernels::{dot, par, row_gram_lower_panels, with_simd};
use crate::preprocess::row_norms;

/// Default `threshold` of [`rbf_cka`]: the bandwidth is the median
/// pairwise distance itself (Kornblith et al.'s default).
pub const DEFAULT_RBF_THRESHOLD: f64 = 1.0;

/// Default number of neighbours of [`mutual_knn`] (Huh et al. 2024 use 10).
pub const DEFAULT_KNN_K: usize = 10;

/// Default fraction of the variance kept on each side by [`svcca`].
pub const DEFAULT_SVCCA_VARIANCE: f64 = 0.99;

/// Which HSIC estimator CKA is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HsicEstimator {
    /// `tr(Kc Lc) / (n - 1)^2` with `Kc = H K H` (Gretton et al. 2005), as
    /// in Kornblith et al. 2019. Biased upwards for few items: CKA of two
    /// independent random matrices is far from 0 when `d >> n`.
    #[default]
    Biased,
    /// The unbiased estimator of Song et al. 2012 (Kornblith et al.'s
    /// `debiased=True`). Needs `n >= 4`; CKA built on it can be negative.
    Debiased,
}

impl HsicEstimator {
    fn min_items(self) -> usize {
        match self {
            HsicEstimator::Biased => 2,
            HsicEstimator::Debiased => 4,
        }
    }
}

/// Validates a pair of representations of the same `min_items` or more
/// items.
fn paired(x: MatRef<'_, f64>, y: MatRef<'_, f64>, min_items: usize, what: &str) -> Result<()> {
    checks::data_matrix("first representation (X)", x)?;
    checks::data_matrix("second representation (Y)", y)?;
    checks::same_len(
        "rows of Y (= rows of X: one row per item in both)",
        x.nrows(),
        y.nrows(),
    )?;
    enough_items(x.nrows(), min_items, what)
}

pub(crate) fn enough_items(n: usize, min_items: usize, what: &str) -> Result<()> {
    if n < min_items {
        return Err(ProbeError::Degenerate(format!(
            "{what} needs at least {min_items} items (rows), got {n}"
        )));
    }
    Ok(())
}

/// A copy of `x` with its column means subtracted, written in one pass
/// (the matrices of a layer are tens of megabytes: a copy followed by an
/// in-place subtraction would cross them once more).
pub(crate) fn centred(x: MatRef<'_, f64>) -> Mat<f64> {
    let n = x.nrows() as f64;
    let means: Vec<f64> = (0..x.ncols())
        .map(|j| x.col(j).iter().sum::<f64>() / n)
        .collect();
    Mat::from_fn(x.nrows(), x.ncols(), |i, j| x[(i, j)] - means[j])
}

/// `Xc^T` (d x n, column-major): the centred rows of `x`, each stored
/// contiguously, the layout [`row_gram_lower_panels`] multiplies fastest.
/// Written tile by tile so that neither the reads nor the writes stride
/// across the whole matrix.
pub(crate) fn centred_transposed(x: MatRef<'_, f64>) -> Mat<f64> {
    let (n, d) = (x.nrows(), x.ncols());
    let means: Vec<f64> = (0..d)
        .into_par_iter()
        .map(|j| x.col(j).iter().sum::<f64>() / n as f64)
        .collect();
    transposed_with(x, |_, j, v| v - means[j])
}

/// `f(i, j, x[i, j])` stored at `(j, i)` of a new d x n matrix, in tiles,
/// the tiles' columns (items) spread over rayon's threads: a layer's matrix
/// is tens of megabytes, and one thread alone takes a sizeable fraction of
/// the Gram product's time to move it.
fn transposed_with(x: MatRef<'_, f64>, f: impl Fn(usize, usize, f64) -> f64 + Sync) -> Mat<f64> {
    const TILE: usize = 32;
    let (n, d) = (x.nrows(), x.ncols());
    let mut t = Mat::<f64>::zeros(d, n);
    t.as_mut()
        .par_col_chunks_mut(TILE)
        .enumerate()
        .for_each(|(chunk, mut cols)| {
            let i0 = chunk * TILE;
            for j0 in (0..d).step_by(TILE) {
                for c in 0..cols.ncols() {
                    let i = i0 + c;
                    for j in j0..(j0 + TILE).min(d) {
                        cols[(j, c)] = f(i, j, x[(i, j)]);
                    }
                }
            }
        });
    t
}

/// `x` centred and scaled to unit Frobenius norm; errors when every row is
/// equal (nothing is left after centring).
pub(crate) fn centred_unit(x: MatRef<'_, f64>, what: &str) -> Result<Mat<f64>> {
    let mut c = centred(x);
    let norm = c.norm_l2();
    if norm == 0.0 {
        return Err(ProbeError::Degenerate(format!(
            "{what} has every row equal: nothing is left after centring"
        )));
    }
    for j in 0..c.ncols() {
        c.col_as_slice_mut(j).iter_mut().for_each(|v| *v /= norm);
    }
    Ok(c)
}

/// The sums both HSIC estimators need for one pair of n x n kernels `P`,
/// `Q`: `full = tr(P Q)`, `off = sum_{i != j} P_ij Q_ij`,
/// `rows = (P~ 1) . (Q~ 1)` and `sum_p = 1^T P~ 1`, `sum_q = 1^T Q~ 1`,
/// where `P~` is `P` with its diagonal set to zero.
#[derive(Debug, Clone, Copy, Default)]
struct HsicSums {
    full: f64,
    off: f64,
    rows: f64,
    sum_p: f64,
    sum_q: f64,
}

impl HsicSums {
    /// HSIC up to a factor that cancels in CKA: `tr(P Q)` (biased; `P` and
    /// `Q` must be double-centred) or `n (n - 3)` times the unbiased
    /// estimate. The unbiased form is invariant to double centring, so it
    /// may be given the centred kernels as well.
    fn hsic(&self, n: usize, estimator: HsicEstimator) -> f64 {
        match estimator {
            HsicEstimator::Biased => self.full,
            HsicEstimator::Debiased => {
                let nf = n as f64;
                self.off + self.sum_p * self.sum_q / ((nf - 1.0) * (nf - 2.0))
                    - 2.0 / (nf - 2.0) * self.rows
            }
        }
    }
}

/// CKA from the sums of the three kernel pairs (K, L), (K, K), (L, L).
fn cka_from_sums(
    kl: &HsicSums,
    kk: &HsicSums,
    ll: &HsicSums,
    n: usize,
    estimator: HsicEstimator,
) -> Result<f64> {
    let (hkk, hll) = (kk.hsic(n, estimator), ll.hsic(n, estimator));
    for (h, side) in [(hkk, "X"), (hll, "Y")] {
        checks::finite_output("HSIC of a kernel with itself", h)?;
        // The unbiased HSIC of a kernel with itself is a squared norm too
        // (of its U-centred Gram matrix), so <= 0 means no variance, up to
        // round-off.
        if h <= 0.0 {
            return Err(ProbeError::Degenerate(format!(
                "{side} has no variance across items (its centred kernel is zero): CKA is undefined"
            )));
        }
    }
    let value = checks::finite_output("CKA", kl.hsic(n, estimator) / (hkk.sqrt() * hll.sqrt()))?;
    // Cauchy-Schwarz bounds both forms; round-off may step 1e-16 outside.
    Ok(match estimator {
        HsicEstimator::Biased => value.clamp(0.0, 1.0),
        HsicEstimator::Debiased => value.clamp(-1.0, 1.0),
    })
}

/// Running sums over the lower triangles of two symmetric n x n matrices
/// `K`, `L`, fed one column at a time, from which [`HsicSums`] of (K, L),
/// (K, K) and (L, L) follow.
struct LowerSums {
    /// `sum_i K_ii L_ii`, `sum_i K_ii^2`, `sum_i L_ii^2`.
    diag: [f64; 3],
    /// The same over the strict lower triangle.
    off: [f64; 3],
    /// Off-diagonal row sums of `K` and `L`.
    rk: Vec<f64>,
    rl: Vec<f64>,
}

impl LowerSums {
    fn new(n: usize) -> Self {
        LowerSums {
            diag: [0.0; 3],
            off: [0.0; 3],
            rk: vec![0.0; n],
            rl: vec![0.0; n],
        }
    }

    /// Adds column `j` of both lower triangles: rows `j..n`, so `kc[0]` is
    /// `K_jj`. Column `j` holds row `j`'s entries right of the diagonal
    /// (by symmetry) and column `j`'s below it: both row sums get them.
    fn add_column(&mut self, j: usize, kc: &[f64], lc: &[f64]) {
        let (kjj, ljj) = (kc[0], lc[0]);
        self.diag[0] += kjj * ljj;
        self.diag[1] += kjj * kjj;
        self.diag[2] += ljj * ljj;
        let (mut akl, mut akk, mut all, mut sk, mut sl) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let rows = j + 1..j + kc.len();
        for ((&p, &q), (rk, rl)) in kc[1..]
            .iter()
            .zip(&lc[1..])
            .zip(self.rk[rows.clone()].iter_mut().zip(&mut self.rl[rows]))
        {
            akl += p * q;
            akk += p * p;
            all += q * q;
            sk += p;
            sl += q;
            *rk += p;
            *rl += q;
        }
        self.rk[j] += sk;
        self.rl[j] += sl;
        self.off[0] += akl;
        self.off[1] += akk;
        self.off[2] += all;
    }

    fn merge(mut self, other: Self) -> Self {
        for t in 0..3 {
            self.diag[t] += other.diag[t];
            self.off[t] += other.off[t];
        }
        self.rk.iter_mut().zip(&other.rk).for_each(|(a, b)| *a += b);
        self.rl.iter_mut().zip(&other.rl).for_each(|(a, b)| *a += b);
        self
    }

    fn finish(self) -> [HsicSums; 3] {
        let (sum_k, sum_l) = (self.rk.iter().sum::<f64>(), self.rl.iter().sum::<f64>());
        let pair = |t: usize, a: &[f64], b: &[f64], sa: f64, sb: f64| HsicSums {
            full: self.diag[t] + 2.0 * self.off[t],
            off: 2.0 * self.off[t],
            rows: dot(a, b),
            sum_p: sa,
            sum_q: sb,
        };
        [
            pair(0, &self.rk, &self.rl, sum_k, sum_l),
            pair(1, &self.rk, &self.rk, sum_k, sum_k),
            pair(2, &self.rl, &self.rl, sum_l, sum_l),
        ]
    }
}

/// The sums of (K, L), (K, K), (L, L) from the lower triangles (diagonal
/// included) of two symmetric n x n matrices; the upper triangles are never
/// read.
fn sums_from_lower(k: &Mat<f64>, l: &Mat<f64>) -> [HsicSums; 3] {
    let n = k.nrows();
    let mut sums = LowerSums::new(n);
    for j in 0..n {
        sums.add_column(j, &k.col_as_slice(j)[j..], &l.col_as_slice(j)[j..]);
    }
    sums.finish()
}

/// The sums for the linear kernels `K = Xr Xr^T`, `L = Yr Yr^T` of two
/// centred row sets (rows contiguous, as [`centred_transposed`] stores
/// them), without ever holding an n x n matrix: the lower triangles are
/// produced in column panels `K[j0.., j0..j0 + b]` (one sequential matrix
/// product each, panels spread over rayon's threads), summed, and dropped.
/// Memory stays `O(n b)` per thread however many items there are (at most
/// 64 MiB of panels per thread), and no second pass reads the Gram matrices
/// back. Panels are 256 columns wide where that fits: about 10% faster than
/// 128 at 2000 x 2048 (narrow panels multiply less efficiently), while wider
/// ones waste more of the triangle.
fn gram_panel_sums(xr: MatRef<'_, f64>, yr: MatRef<'_, f64>) -> [HsicSums; 3] {
    const PANEL_BUDGET_BYTES: usize = 64 << 20;
    let n = xr.nrows();
    let panel_width = (PANEL_BUDGET_BYTES / (16 * n).max(1)).clamp(32, 256);
    let panel = |j0: usize| -> LowerSums {
        let (m, w) = (n - j0, panel_width.min(n - j0));
        let product = |a: MatRef<'_, f64>| {
            let mut p = Mat::<f64>::zeros(m, w);
            matmul(
                p.as_mut(),
                Accum::Replace,
                a.subrows(j0, m),
                a.subrows(j0, w).transpose(),
                1.0,
                Par::Seq,
            );
            p
        };
        let (kp, lp) = (product(xr), product(yr));
        let mut sums = LowerSums::new(n);
        for c in 0..w {
            sums.add_column(j0 + c, &kp.col_as_slice(c)[c..], &lp.col_as_slice(c)[c..]);
        }
        sums
    };
    let starts: Vec<usize> = (0..n).step_by(panel_width).collect();
    let total = if matches!(par(), Par::Seq) {
        starts
            .into_iter()
            .map(panel)
            .fold(LowerSums::new(n), LowerSums::merge)
    } else {
        // One task per panel (they shrink from left to right), so that idle
        // threads steal the small ones at the end.
        starts
            .into_par_iter()
            .with_max_len(1)
            .map(panel)
            .reduce(|| LowerSums::new(n), LowerSums::merge)
    };
    total.finish()
}

/// `||S||_F^2` of a symmetric matrix stored in its lower triangle.
fn lower_squared_norm(s: MatRef<'_, f64>) -> f64 {
    let n = s.nrows();
    let (mut off, mut diag) = (0.0, 0.0);
    for j in 0..n {
        let col = s.col(j);
        diag += col[j] * col[j];
        off += (j + 1..n).map(|i| col[i] * col[i]).sum::<f64>();
    }
    diag + 2.0 * off
}

/// Linear CKA of `X` and `Y`:
/// `HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))` with `K = X X^T`,
/// `L = Y Y^T` (Kornblith et al. 2019). The biased estimator gives
/// `||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)` for the column-centred
/// `Xc`, `Yc`.
///
/// Invariant to orthogonal transforms and isotropic scaling of either side
/// and to adding a constant row; `linear_cka(X, X) = 1`. Errors when
/// `n < 2` (`n < 4` for [`HsicEstimator::Debiased`]) or when either side
/// has every row equal.
pub fn linear_cka(x: MatRef<'_, f64>, y: MatRef<'_, f64>, estimator: HsicEstimator) -> Result<f64> {
    paired(x, y, estimator.min_items(), "CKA")?;
    let (n, d1, d2) = (x.nrows() as f64, x.ncols() as f64, y.ncols() as f64);
    let gram_cost = n * n * (d1 + d2) / 2.0;
    let feature_cost = n * (d1 * d2 + (d1 * d1 + d2 * d2) / 2.0);
    let [kl, kk, ll] = if gram_cost <= feature_cost {
        gram_panel_sums(
            centred_transposed(x).transpose(),
            centred_transposed(y).transpose(),
        )
    } else {
        feature_space_sums(centred(x).as_ref(), centred(y).as_ref())
    };
    cka_from_sums(&kl, &kk, &ll, x.nrows(), estimator)
}

/// The same sums as [`sums_from_lower`] for `K = Xc Xc^T`, `L = Yc Yc^T`,
/// from d x d products. With centred data `K 1 = 0`, so the off-diagonal
/// row sums are minus the diagonal: `P~ 1 = -a` with `a_i = ||xc_i||^2`,
/// `1^T P~ 1 = -sum a`, and `sum_{i != j} K_ij L_ij = tr(K L) - a . b`.
fn feature_space_sums(xc: MatRef<'_, f64>, yc: MatRef<'_, f64>) -> [HsicSums; 3] {
    let mut cross = Mat::<f64>::zeros(xc.ncols(), yc.ncols());
    matmul(
        cross.as_mut(),
        Accum::Replace,
        xc.transpose(),
        yc,
        1.0,
        par(),
    );
    let tr_kl = cross.squared_norm_l2();
    let tr_kk = lower_squared_norm(row_gram_lower_panels(xc.transpose(), 1.0).as_ref());
    let tr_ll = lower_squared_norm(row_gram_lower_panels(yc.transpose(), 1.0).as_ref());
    let a = row_norms(xc).into_iter().map(|r| r * r).collect::<Vec<_>>();
    let b = row_norms(yc).into_iter().map(|r| r * r).collect::<Vec<_>>();
    let (sa, sb) = (a.iter().sum::<f64>(), b.iter().sum::<f64>());
    let pair = |tr: f64, p: &[f64], q: &[f64], sp: f64, sq: f64| {
        let pq = dot(p, q);
        HsicSums {
            full: tr,
            off: tr - pq,
            rows: pq,
            sum_p: -sp,
            sum_q: -sq,
        }
    };
    [
        pair(tr_kl, &a, &b, sa, sb),
        pair(tr_kk, &a, &a, sa, sa),
        pair(tr_ll, &b, &b, sb, sb),
    ]
}

/// CKA of two kernel (Gram) matrices `K`, `L` (n x n) of any kernel.
///
/// Only the lower triangles (diagonal included) are read: the matrices are
/// taken as symmetric, as faer's `Side::Lower` solvers do. They should be
/// positive semi-definite (Gram matrices of a kernel are): the biased value
/// is then in `[0, 1]` and is clamped there against round-off. Errors on
/// non-square or differently sized matrices, non-finite entries, too few
/// items, or a kernel that is constant after centring.
pub fn kernel_cka(k: MatRef<'_, f64>, l: MatRef<'_, f64>, estimator: HsicEstimator) -> Result<f64> {
    for (m, what) in [
        (k, "first kernel matrix (K)"),
        (l, "second kernel matrix (L)"),
    ] {
        checks::nonempty(what, m)?;
        checks::same_len(
            "kernel matrix columns (= rows, square)",
            m.nrows(),
            m.ncols(),
        )?;
    }
    checks::same_len("size of L (= size of K)", k.nrows(), l.nrows())?;
    let n = k.nrows();
    let lower_finite = |m: MatRef<'_, f64>, what: &'static str| -> Result<()> {
        for j in 0..n {
            for i in j..n {
                if !m[(i, j)].is_finite() {
                    return Err(ProbeError::NonFinite {
                        what,
                        row: i,
                        col: j,
                        value: m[(i, j)],
                    });
                }
            }
        }
        Ok(())
    };
    lower_finite(k, "first kernel matrix (K)")?;
    lower_finite(l, "second kernel matrix (L)")?;
    enough_items(n, estimator.min_items(), "CKA")?;
    let mut kc = k.to_owned();
    let mut lc = l.to_owned();
    double_centre_lower(&mut kc);
    double_centre_lower(&mut lc);
    let [kl, kk, ll] = sums_from_lower(&kc, &lc);
    cka_from_sums(&kl, &kk, &ll, n, estimator)
}

/// `K <- H K H` (`H = I - 1 1^T / n`) on the lower triangle of a symmetric
/// matrix: `K_ij - m_i - m_j + m` with row means `m_i` and grand mean `m`.
/// Centring the kernel before summing keeps the products small; the
/// expanded form `tr(KL) - 2/n (K1).(L1) + ...` cancels large terms.
fn double_centre_lower(k: &mut Mat<f64>) {
    let n = k.nrows();
    let mut rows = vec![0.0; n];
    for j in 0..n {
        let col = k.col_as_slice(j);
        rows[j] += col[j];
        let mut s = 0.0;
        for i in (j + 1)..n {
            s += col[i];
            rows[i] += col[i];
        }
        rows[j] += s;
    }
    let nf = n as f64;
    let means: Vec<f64> = rows.iter().map(|r| r / nf).collect();
    let grand = means.iter().sum::<f64>() / nf;
    for j in 0..n {
        let col = k.col_as_slice_mut(j);
        let shift = grand - means[j];
        for i in j..n {
            col[i] += shift - means[i];
        }
    }
}

/// RBF-kernel CKA: `K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))` with
/// `sigma = threshold * median distance` (and the same for `Y` with its own
/// bandwidth).
///
/// The median is that of Kornblith et al.'s reference code: over all
/// `n^2` entries of the squared-distance matrix, the `n` zeros of its
/// diagonal included, averaging the two middle values when `n^2` is even;
/// `sigma^2 = threshold^2 * median`. The default
/// [`DEFAULT_RBF_THRESHOLD`] is 1; smaller thresholds make the kernel more
/// local. Squared distances come from the Gram matrix of the centred rows
/// (`||x_i||^2 + ||x_j||^2 - 2 x_i . x_j`, negatives from round-off set to
/// zero, the diagonal exactly zero). Errors as [`linear_cka`], and when
/// the median squared distance is zero (more than half the pairs are
/// duplicates).
pub fn rbf_cka(
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    threshold: f64,
    estimator: HsicEstimator,
) -> Result<f64> {
    checks::positive("threshold", threshold)?;
    paired(x, y, estimator.min_items(), "CKA")?;
    let kernel = |m: MatRef<'_, f64>, side: &str| {
        rbf_kernel_lower(m, threshold, side).map(|mut k| {
            double_centre_lower(&mut k);
            k
        })
    };
    let (k, l) = rayon::join(|| kernel(x, "X"), || kernel(y, "Y"));
    let (k, l) = (k?, l?);
    let [kl, kk, ll] = sums_from_lower(&k, &l);
    cka_from_sums(&kl, &kk, &ll, x.nrows(), estimator)
}

/// Lower triangle of the RBF kernel matrix of the rows of `x`.
fn rbf_kernel_lower(x: MatRef<'_, f64>, threshold: f64, side: &str) -> Result<Mat<f64>> {
    let n = x.nrows();
    let mut g = row_gram_lower_panels(centred_transposed(x).transpose(), 1.0);
    let sq: Vec<f64> = (0..n).map(|i| g[(i, i)]).collect();
    for j in 0..n {
        let col = g.col_as_slice_mut(j);
        col[j] = 0.0;
        for i in (j + 1)..n {
            col[i] = (sq[i] + sq[j] - 2.0 * col[i]).max(0.0);
        }
    }
    let median = full_matrix_median_of_lower(g.as_ref());
    if median.is_nan() || median <= 0.0 {
        return Err(ProbeError::Degenerate(format!(
            "the median squared distance between the rows of {side} is zero \
             (more than half the pairs coincide): the RBF bandwidth is undefined"
        )));
    }
    let scale = -1.0 / (2.0 * threshold * threshold * median);
    for j in 0..n {
        let col = g.col_as_slice_mut(j);
        col[j] = 1.0;
        for v in &mut col[j + 1..] {
            *v = (*v * scale).exp();
        }
    }
    Ok(g)
}

/// Median of all `n^2` entries of a symmetric matrix with a zero diagonal,
/// from its strict lower triangle: in sorted order the full matrix has the
/// `n` zeros first, then every off-diagonal value twice.
fn full_matrix_median_of_lower(s: MatRef<'_, f64>) -> f64 {
    let n = s.nrows();
    let mut off: Vec<f64> = Vec::with_capacity(n * (n - 1) / 2);
    for j in 0..n {
        off.extend((j + 1..n).map(|i| s[(i, j)]));
    }
    let total = n * n;
    let mut at = |pos: usize| -> f64 {
        if pos < n {
            0.0
        } else {
            let k = (pos - n) / 2;
            *off.select_nth_unstable_by(k, f64::total_cmp).1
        }
    };
    if total % 2 == 1 {
        at(total / 2)
    } else {
        let (a, b) = (at(total / 2 - 1), at(total / 2));
        0.5 * (a + b)
    }
}

/// The k nearest neighbours of every row by cosine similarity (inner
/// product of the L2-normalised rows), the row itself excluded: row-major
/// `n x k` indices, each row's neighbours from most to least similar.
///
/// Ties are broken by index, the lower first (what a stable sort of each
/// row by decreasing similarity gives). Rows that are bitwise equal after
/// normalisation (duplicates, as a bootstrap resample makes) get bitwise
/// equal similarities, so their ties follow that rule exactly rather than
/// round-off of the matrix product: the similarity to a duplicated row is
/// read from its first copy. A row's other copies are not excluded: they
/// are its nearest neighbours (similarity 1).
///
/// The similarities are f64 dot products of the unit rows, each summed in
/// one fixed order (so `s(i, j)` is bitwise `s(j, i)`). They are not all
/// computed in f64: an f32 matrix product (twice the speed) screens every
/// pair, and only the pairs within twice a rigorous bound of its round-off
/// of a row's k-th best are recomputed in f64, which cannot miss one of
/// the f64 top k (see [`screening_window`]). A row with too many pairs in
/// that window (near-equal similarities that f32 cannot tell apart) has
/// all of its similarities recomputed in f64.
///
/// The similarity matrix is never held whole: it is computed in panels that
/// are folded into each row's running candidates, so memory is `O(n k)`
/// plus a fixed budget (256 MiB) whatever `n`.
///
/// Errors when `k` is 0 or `k >= n`, on non-finite entries, and on a zero
/// row (it has no direction).
pub fn cosine_neighbours(x: MatRef<'_, f64>, k: usize) -> Result<Vec<usize>> {
    checks::data_matrix("representation matrix", x)?;
    check_k(k, x.nrows())?;
    neighbour_lists(x, k)
}

fn check_k(k: usize, n: usize) -> Result<()> {
    if k == 0 || k >= n {
        return Err(ProbeError::InvalidParameter {
            name: "k",
            value: k as f64,
            reason: "the number of neighbours must lie in [1, n - 1] (a row is not its own neighbour)",
        });
    }
    Ok(())
}

/// Similarities held at once by [`neighbour_lists`]: panels of the
/// similarity matrix's lower triangle are computed, folded into every row's
/// running top k and dropped, so memory is `n k` plus this budget, never
/// `n^2` (100,000 items would need 80 GB).
const KNN_PANEL_BUDGET_BYTES: usize = 256 << 20;
/// Columns of the similarity matrix per panel.
const KNN_PANEL: usize = 128;

/// The top-k of every row of `x` by cosine similarity (row-major), with the
/// tie and duplicate rules of [`cosine_neighbours`].
///
/// Duplicates are handled by computing similarities between distinct rows
/// only: a row's neighbours are then its own other copies (at its own
/// similarity, about 1) and the copies of its nearest distinct rows, each
/// group at one value, so ties among copies follow the index rule exactly.
/// A distinct row beyond a row's k nearest distinct rows cannot contribute:
/// each of those k contributes at least its first copy, which ranks before
/// every copy of the farther row. Keeping k distinct rows per row is enough.
fn neighbour_lists(x: MatRef<'_, f64>, k: usize) -> Result<Vec<usize>> {
    neighbour_lists_within(x, k, KNN_PANEL_BUDGET_BYTES)
}

/// [`neighbour_lists`] holding at most about `budget` bytes of similarities
/// (at least one panel).
fn neighbour_lists_within(x: MatRef<'_, f64>, k: usize, budget: usize) -> Result<Vec<usize>> {
    let (n, d) = (x.nrows(), x.ncols());
    let norms = row_norms(x);
    if let Some(row) = norms.iter().position(|&r| r == 0.0) {
        return Err(ProbeError::ZeroRow {
            row,
            after_centring: false,
        });
    }
    // The unit rows, stored transposed (one contiguous column per row).
    let unit = transposed_with(x, |i, _, v| v / norms[i]);
    let first = first_copies(&unit);
    let distinct: Vec<usize> = (0..n).filter(|&i| first[i] == i).collect();
    let m = distinct.len();
    let mut group_of = vec![0usize; n];
    for (g, &i) in distinct.iter().enumerate() {
        group_of[i] = g;
    }
    let mut copies: Vec<Vec<usize>> = vec![Vec::new(); m];
    for i in 0..n {
        group_of[i] = group_of[first[i]];
        copies[group_of[i]].push(i);
    }
    let rows_t = if m == n {
        unit
    } else {
        Mat::from_fn(d, m, |j, g| unit[(j, distinct[g])])
    };
    let tops = screened_neighbours(&rows_t, k, budget);
    let own: Vec<f64> = (0..m)
        .into_par_iter()
        .map(|g| {
            let row = rows_t.col_as_slice(g);
            dot(row, row)
        })
        .collect();

    let mut out = vec![0usize; n * k];
    out.par_chunks_mut(k).enumerate().for_each(|(i, slot)| {
        let g = group_of[i];
        let mut candidates: Vec<(f64, usize)> = Vec::with_capacity(2 * k * (k + 1));
        for &(v, other) in &tops[g] {
            candidates.extend(copies[other].iter().take(k).map(|&j| (v, j)));
        }
        candidates.extend(
            copies[g]
                .iter()
                .filter(|&&j| j != i)
                .take(k)
                .map(|&j| (own[g], j)),
        );
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (o, (_, j)) in slot.iter_mut().zip(candidates) {
            *o = j;
        }
    });
    Ok(out)
}

/// Half the width of the f32 screen's window for unit vectors of length
/// `d`: a bound on `|t - s|` for the f32 product `t` of the f32-rounded
/// vectors and the f64 dot product `s`, both against the exact inner product
/// `e` of the f64 unit vectors, whose `sum |a_i b_i|` is at most 1
/// (Cauchy-Schwarz). Rounding the inputs to f32 moves each product by at
/// most `(2u + u^2) |a_i b_i|` (`u = 2^-24`); a dot product of length `d`
/// summed in any order, with or without fused multiply-adds, errs by at
/// most `gamma_d = d u / (1 - d u)` times `sum |a_i b_i|` (Higham, Accuracy
/// and Stability of Numerical Algorithms, 3.1); both are within
/// `gamma_{d+3}`. The f64 sum errs by at most `d 2^-52`, and f32 underflow
/// by far less than `1e-30`. Infinite when the bound is useless (d in the
/// millions).
fn screening_window(d: usize) -> f64 {
    let u = f64::from(f32::EPSILON) / 2.0;
    let terms = (d + 3) as f64 * u;
    if terms >= 0.5 {
        return f64::INFINITY;
    }
    let gamma = terms / (1.0 - terms);
    gamma * 1.001 + d as f64 * f64::EPSILON + 1e-30
}

/// The pairs a row keeps while its f32 similarities stream in: every
/// candidate within `2 delta` of the running k-th best (the final k-th best
/// is only higher, so nothing dropped is ever needed again).
struct Screen {
    candidates: Vec<(f32, u32)>,
    floor: f64,
    tighten_at: usize,
    overflowed: bool,
}

impl Screen {
    fn new(k: usize) -> Self {
        Screen {
            candidates: Vec::new(),
            floor: f64::NEG_INFINITY,
            tighten_at: 2 * k + 16,
            overflowed: false,
        }
    }

    fn offer(&mut self, v: f32, candidate: u32, rule: &ScreenRule) {
        if self.overflowed || f64::from(v) < self.floor {
            return;
        }
        self.candidates.push((v, candidate));
        if self.candidates.len() >= self.tighten_at {
            self.tighten(rule, rule.limit);
        }
    }

    /// Raises the floor to the k-th best minus the window and drops what
    /// falls below; gives up on the row (overflow) past `limit` survivors.
    fn tighten(&mut self, rule: &ScreenRule, limit: usize) {
        let k = rule.k;
        if self.candidates.len() > k {
            let (_, kth, _) = self
                .candidates
                .select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            self.floor = f64::from(kth.0) - rule.window;
            let floor = self.floor;
            self.candidates.retain(|&(v, _)| f64::from(v) >= floor);
        }
        if self.candidates.len() > limit {
            self.overflowed = true;
            self.candidates = Vec::new();
        }
        self.tighten_at = (2 * self.candidates.len()).max(2 * k + 16);
    }
}

/// What every [`Screen`] of one call shares.
struct ScreenRule {
    k: usize,
    /// Twice [`screening_window`]: the k-th best f64 similarity is within
    /// `delta` of the k-th best f32 one, and each of the f64 top k within
    /// another `delta` of its own f32 value.
    window: f64,
    /// Candidates a row may keep before it is recomputed in f64 whole
    /// ([`candidate_limit`]).
    limit: usize,
}

/// Candidates a row of a top-`k` screen may keep before it is recomputed in
/// f64 whole; keeps memory `O(n k)` when near-equal similarities crowd the
/// window.
fn candidate_limit(k: usize) -> usize {
    8 * k + 256
}

/// The f64 top k (ties to the lower index) of every column of `rows_t`
/// (d x m, one unit row per column, no two equal) among the other columns:
/// f32 panels of the lower triangle of the similarity matrix screen the
/// candidates (at most about `budget` bytes of them at once), which are
/// then ranked by their f64 similarities.
fn screened_neighbours(rows_t: &Mat<f64>, k: usize, budget: usize) -> Vec<Vec<(f64, usize)>> {
    let (d, m) = (rows_t.nrows(), rows_t.ncols());
    let rule = ScreenRule {
        k,
        window: 2.0 * screening_window(d),
        limit: candidate_limit(k),
    };
    let mut screens: Vec<Screen> = (0..m).map(|_| Screen::new(k)).collect();
    // Candidates are held as u32 indices; more rows than that would not fit
    // in memory as f64 anyway, but they are still answered (in f64 whole).
    if rule.window.is_finite() && u32::try_from(m).is_ok() {
        const ROWS_PER_TASK: usize = 64;
        let mut rows32_t = Mat::<f32>::zeros(d, m);
        rows32_t
            .as_mut()
            .par_col_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(chunk, mut cols)| {
                for c in 0..cols.ncols() {
                    let from = rows_t.col_as_slice(chunk * ROWS_PER_TASK + c);
                    for (j, &v) in from.iter().enumerate() {
                        cols[(j, c)] = v as f32;
                    }
                }
            });
        let rows32 = rows32_t.transpose();
        let starts: Vec<usize> = (0..m).step_by(KNN_PANEL).collect();
        let per_batch = (budget / (m * KNN_PANEL * 4).max(1)).max(1);
        for batch in starts.chunks(per_batch) {
            // Several panels side by side when they fit the budget; one
            // panel with a parallel product when a single one fills it.
            let inner = if batch.len() > 1 { Par::Seq } else { par() };
            let panels: Vec<(usize, Mat<f32>)> = batch
                .par_iter()
                .with_max_len(1)
                .map(|&j0| {
                    let w = KNN_PANEL.min(m - j0);
                    let mut panel = Mat::<f32>::zeros(m - j0, w);
                    matmul(
                        panel.as_mut(),
                        Accum::Replace,
                        rows32.subrows(j0, m - j0),
                        rows32.subrows(j0, w).transpose(),
                        1.0,
                        inner,
                    );
                    (j0, panel)
                })
                .collect();
            for (j0, panel) in &panels {
                fold_panel(*j0, panel, &mut screens, &rule);
            }
        }
    } else {
        screens.iter_mut().for_each(|s| s.overflowed = true);
    }

    screens
        .par_iter_mut()
        .filter(|s| !s.overflowed)
        .for_each(|s| s.tighten(&rule, usize::MAX));
    let exact = exact_similarities(rows_t, &screens);
    let ranked = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    screens
        .into_par_iter()
        .enumerate()
        .map(|(g, screen)| {
            let mut list: Vec<(f64, usize)> = if screen.overflowed {
                let row = rows_t.col_as_slice(g);
                with_simd(|| {
                    (0..m)
                        .filter(|&c| c != g)
                        .map(|c| (dot(row, rows_t.col_as_slice(c)), c))
                        .collect()
                })
            } else {
                screen
                    .candidates
                    .iter()
                    .map(|&(_, c)| {
                        let key = pair_key(g, c as usize);
                        let at = exact.partition_point(|&(other, _)| other < key);
                        (exact[at].1, c as usize)
                    })
                    .collect()
            };
            if list.len() > k {
                list.select_nth_unstable_by(k - 1, ranked);
                list.truncate(k);
            }
            list.sort_by(ranked);
            list
        })
        .collect()
}

/// `(min, max)` of an unordered pair as one sortable key.
fn pair_key(a: usize, b: usize) -> u64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    ((lo as u64) << 32) | hi as u64
}

/// The f64 similarity of every pair that some screen kept, sorted by
/// [`pair_key`]: each pair once however many of its two rows kept it, and
/// computed in blocks of 256 x 256 rows, so that the rows a block reads
/// (8 MiB at d = 2048) are reused from cache rather than fetched from
/// memory once per pair, which bounded the time before.
fn exact_similarities(rows_t: &Mat<f64>, screens: &[Screen]) -> Vec<(u64, f64)> {
    const BLOCK: u64 = 256;
    let mut keys: Vec<u64> = screens
        .par_iter()
        .enumerate()
        .flat_map_iter(|(g, s)| {
            s.candidates
                .iter()
                .map(move |&(_, c)| pair_key(g, c as usize))
        })
        .collect();
    let block_of = |key: &u64| ((key >> 32) / BLOCK, (key & 0xffff_ffff) / BLOCK, *key);
    keys.par_sort_unstable_by_key(block_of);
    keys.dedup();
    let mut exact: Vec<(u64, f64)> = keys
        .par_iter()
        .with_min_len(1024)
        .map(|&key| {
            let (a, b) = ((key >> 32) as usize, (key & 0xffff_ffff) as usize);
            let value = with_simd(|| dot(rows_t.col_as_slice(a), rows_t.col_as_slice(b)));
            (key, value)
        })
        .collect();
    exact.par_sort_unstable_by_key(|&(key, _)| key);
    exact
}

/// Folds one f32 panel of the lower triangle (rows `j0..m`, columns `j0..j0
/// + w` of the similarity matrix) into the screens of the rows it touches:
/// each strictly lower entry `(r, c)` is a candidate `c` for row `r` and `r`
/// for row `c`.
fn fold_panel(j0: usize, panel: &Mat<f32>, screens: &mut [Screen], rule: &ScreenRule) {
    let w = panel.ncols();
    screens[j0..]
        .par_iter_mut()
        .enumerate()
        .for_each(|(r, screen)| {
            for c in 0..w.min(r) {
                screen.offer(panel[(r, c)], (j0 + c) as u32, rule);
            }
        });
    screens[j0..j0 + w]
        .par_iter_mut()
        .enumerate()
        .for_each(|(c, screen)| {
            let column = panel.col_as_slice(c);
            for (r, &v) in column.iter().enumerate().skip(c + 1) {
                screen.offer(v, (j0 + r) as u32, rule);
            }
        });
}

/// For every column of `t` (a row of the matrix it is the transpose of),
/// the lowest index of a column with the same bits.
///
/// Columns are grouped by a 64-bit hash of their bits and compared in full
/// only within a group, so the usual case of no duplicates costs one pass
/// over the matrix.
fn first_copies(t: &Mat<f64>) -> Vec<usize> {
    let n = t.ncols();
    let bits = |i: usize| t.col_as_slice(i).iter().map(|v| v.to_bits());
    let hashes: Vec<u64> = (0..n)
        .into_par_iter()
        .map(|i| {
            bits(i).fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29)
            })
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (hashes[i], i));
    let mut first: Vec<usize> = (0..n).collect();
    let mut start = 0;
    while start < n {
        let end = start
            + order[start..]
                .iter()
                .take_while(|&&i| hashes[i] == hashes[order[start]])
                .count();
        // Within a group (ascending index), each column maps to the first
        // earlier column it equals; hash collisions of different columns
        // stay apart.
        for a in start..end {
            let i = order[a];
            if let Some(&c) = order[start..a]
                .iter()
                .find(|&&c| first[c] == c && bits(c).eq(bits(i)))
            {
                first[i] = c;
            }
        }
        start = end;
    }
    first
}

/// Mutual k-nearest-neighbour alignment (Huh et al. 2024, "The Platonic
/// Representation Hypothesis"): the mean over items `i` of
/// `|N_X(i) ∩ N_Y(i)| / k`, where `N_X(i)` are the `k` nearest neighbours of
/// item `i` among the other items by cosine similarity in `X` (see
/// [`cosine_neighbours`] for ties and duplicates). In `[0, 1]`; 1 when both
/// sides induce the same neighbourhoods; about `k / (n - 1)` by chance.
/// Default `k` is [`DEFAULT_KNN_K`]. Errors when `k` is 0 or `k >= n`.
pub fn mutual_knn(x: MatRef<'_, f64>, y: MatRef<'_, f64>, k: usize) -> Result<f64> {
    paired(x, y, 2, "mutual kNN")?;
    check_k(k, x.nrows())?;
    // The two sides are independent; running them side by side lets the
    // sequential steps of one (norms, duplicate detection, the screens'
    // bookkeeping) overlap with the parallel products of the other.
    let lists = |m: MatRef<'_, f64>| neighbour_lists(m, k);
    let (nx, ny) = rayon::join(|| lists(x), || lists(y));
    let (nx, ny) = (nx?, ny?);
    let shared: usize = nx
        .par_chunks(k)
        .zip(ny.par_chunks(k))
        .map(|(a, b)| {
            let mut a = a.to_vec();
            a.sort_unstable();
            b.iter().filter(|j| a.binary_search(j).is_ok()).count()
        })
        .sum();
    Ok(shared as f64 / (x.nrows() * k) as f64)
}

/// SVCCA of two representations, with its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Svcca {
    /// Mean canonical correlation, the SVCCA similarity, in `[0, 1]`.
    pub mean: f64,
    /// The `min(kept_x, kept_y)` canonical correlations, descending.
    pub correlations: Vec<f64>,
    /// Singular directions kept for `X`.
    pub kept_x: usize,
    /// Singular directions kept for `Y`.
    pub kept_y: usize,
}

/// SVCCA (Raghu et al. 2017): centre each side's columns; keep the
/// leading left singular directions of each, the fewest whose squared
/// singular values reach `variance` (default [`DEFAULT_SVCCA_VARIANCE`],
/// 0.99) of the total; then CCA between the two reduced representations
/// `U_x S_x` and `U_y S_y`. Their column spaces are spanned by the
/// orthonormal `U_x`, `U_y`, so the canonical correlations are the singular
/// values of `U_x^T U_y`; SVCCA is their mean.
///
/// With `kept_x + kept_y >= n` the subspaces must intersect and the top
/// correlations are 1 whatever the data: keep `n` well above the kept
/// dimensions. Errors when `n < 2`, `variance` is outside `(0, 1]`, or
/// either side has every row equal.
pub fn svcca(x: MatRef<'_, f64>, y: MatRef<'_, f64>, variance: f64) -> Result<Svcca> {
    if !(variance > 0.0 && variance <= 1.0) {
        return Err(ProbeError::InvalidParameter {
            name: "variance",
            value: variance,
            reason: "the fraction of variance kept must lie in (0, 1]",
        });
    }
    paired(x, y, 2, "SVCCA")?;
    let ux = leading_directions(x, variance, "X")?;
    let uy = leading_directions(y, variance, "Y")?;
    let mut m = Mat::<f64>::zeros(ux.ncols(), uy.ncols());
    matmul(
        m.as_mut(),
        Accum::Replace,
        ux.transpose(),
        uy.as_ref(),
        1.0,
        par(),
    );
    let mut correlations = m
        .singular_values()
        .map_err(|e| ProbeError::Numerical(format!("SVD of U_x^T U_y failed: {e:?}")))?;
    // Cosines of principal angles: in [0, 1] up to round-off.
    correlations.iter_mut().for_each(|c| *c = c.clamp(0.0, 1.0));
    let mean = checks::finite_output(
        "SVCCA",
        correlations.iter().sum::<f64>() / correlations.len() as f64,
    )?;
    Ok(Svcca {
        mean,
        correlations,
        kept_x: ux.ncols(),
        kept_y: uy.ncols(),
    })
}

/// The leading left singular vectors of the centred `x` that explain
/// `variance` of its total variance.
fn leading_directions(x: MatRef<'_, f64>, variance: f64, side: &str) -> Result<Mat<f64>> {
    let xc = centred(x);
    let svd = xc
        .thin_svd()
        .map_err(|e| ProbeError::Numerical(format!("SVD of {side} failed: {e:?}")))?;
    let s = svd.S().column_vector();
    let r = s.nrows();
    let mut order: Vec<usize> = (0..r).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    let total: f64 = (0..r).map(|i| s[i] * s[i]).sum();
    if total.is_nan() || total <= 0.0 {
        return Err(ProbeError::Degenerate(format!(
            "{side} has every row equal: nothing is left after centring"
        )));
    }
    let mut kept = 0;
    let mut cumulative = 0.0;
    for &i in &order {
        cumulative += s[i] * s[i];
        kept += 1;
        if cumulative / total >= variance {
            break;
        }
    }
    let u = svd.U();
    Ok(Mat::from_fn(x.nrows(), kept, |i, j| u[(i, order[j])]))
}

/// Orthogonal Procrustes distance (Ding et al. 2021): after centring the
/// columns of both sides and scaling each to unit Frobenius norm,
/// `min_{Q orthogonal} ||X Q - Y||_F^2 = 2 - 2 ||X^T Y||_*` (nuclear norm,
/// the sum of singular values of the d1 x d2 matrix `X^T Y`; different
/// widths are fine: `Q` is then a partial isometry). In `[0, 2]`; 0 when
/// `Y` is a rotation of `X` up to scale and shift.
///
/// When `n < min(d1, d2)` the nuclear norm is taken from the n x n factors
/// of thin QRs `X^T = Q_x R_x`, `Y^T = Q_y R_y` (`||X^T Y||_* = ||R_x
/// R_y^T||_*`) instead of forming the d1 x d2 product. Round-off below 0 is
/// clamped to 0. Errors when `n < 2` or either side has every row equal.
pub fn procrustes_distance(x: MatRef<'_, f64>, y: MatRef<'_, f64>) -> Result<f64> {
    paired(x, y, 2, "the Procrustes distance")?;
    let xn = centred_unit(x, "X")?;
    let yn = centred_unit(y, "Y")?;
    let n = x.nrows();
    let cross = if n < x.ncols().min(y.ncols()) {
        let rx = xn.transpose().qr().thin_R().to_owned();
        let ry = yn.transpose().qr().thin_R().to_owned();
        let mut c = Mat::<f64>::zeros(rx.nrows(), ry.nrows());
        matmul(
            c.as_mut(),
            Accum::Replace,
            rx.as_ref(),
            ry.transpose(),
            1.0,
            par(),
        );
        c
    } else {
        let mut c = Mat::<f64>::zeros(xn.ncols(), yn.ncols());
        matmul(
            c.as_mut(),
            Accum::Replace,
            xn.transpose(),
            yn.as_ref(),
            1.0,
            par(),
        );
        c
    };
    let nuclear: f64 = cross
        .singular_values()
        .map_err(|e| ProbeError::Numerical(format!("SVD of X^T Y failed: {e:?}")))?
        .iter()
        .sum();
    checks::finite_output("Procrustes distance", (2.0 - 2.0 * nuclear).max(0.0))
}

/// A score and its permutation null distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct PermutationTest {
    /// The score of the true pairing.
    pub observed: f64,
    /// The score of every permuted pairing, in the order drawn.
    pub null: Vec<f64>,
    /// `(1 + #{null >= observed}) / (1 + permutations)`: never 0, and exact
    /// (valid) for a one-sided test that large scores mean alignment.
    pub p_value: f64,
    /// Number of permutations.
    pub permutations: usize,
    /// Seed of the ChaCha20 generator.
    pub seed: u64,
}

/// Permutation test of any pairwise score: the rows of `Y` are shuffled
/// (breaking the pairing of items, keeping each side's geometry) and the
/// score recomputed `permutations` times; `score(X, Y)` is compared with
/// that null distribution. Seeded ChaCha20, Fisher-Yates shuffles, so a
/// seed gives the same null on every machine.
///
/// Errors on mismatched rows, non-finite entries, `permutations == 0`, or
/// `n < 2`; an error or a non-finite value from `score` stops the test.
pub fn permutation_test<F>(
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    mut score: F,
    permutations: usize,
    seed: u64,
) -> Result<PermutationTest>
where
    F: FnMut(MatRef<'_, f64>, MatRef<'_, f64>) -> Result<f64>,
{
    paired(x, y, 2, "a permutation test")?;
    if permutations == 0 {
        return Err(ProbeError::InvalidParameter {
            name: "permutations",
            value: 0.0,
            reason: "need at least 1 permutation",
        });
    }
    let observed = finite_score(score(x, y)?)?;
    let (n, d2) = (y.nrows(), y.ncols());
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut shuffled = Mat::<f64>::zeros(n, d2);
    let mut null = Vec::with_capacity(permutations);
    for _ in 0..permutations {
        for i in (1..n).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        gather_rows(y, &order, &mut shuffled);
        null.push(finite_score(score(x, shuffled.as_ref())?)?);
    }
    let exceed = null.iter().filter(|&&v| v >= observed).count();
    Ok(PermutationTest {
        observed,
        p_value: (1 + exceed) as f64 / (1 + permutations) as f64,
        null,
        permutations,
        seed,
    })
}

fn finite_score(v: f64) -> Result<f64> {
    if !v.is_finite() {
        return Err(ProbeError::NonFinite {
            what: "score returned by the closure",
            row: 0,
            col: 0,
            value: v,
        });
    }
    Ok(v)
}

/// `out[i, :] = m[rows[i], :]` into a preallocated matrix.
fn gather_rows(m: MatRef<'_, f64>, rows: &[usize], out: &mut Mat<f64>) {
    for j in 0..m.ncols() {
        let src = m.col(j);
        for (o, &r) in out.col_as_slice_mut(j).iter_mut().zip(rows) {
            *o = src[r];
        }
    }
}

/// A percentile bootstrap interval for a score.
pub type ScoreInterval = Interval;

/// Percentile bootstrap interval of a pairwise score over items: each
/// resample draws `n` row indices with replacement (seeded ChaCha20) and
/// takes the same rows of `X` and `Y`, so pairs stay together. The ends are
/// the `(1 - level) / 2` and `(1 + level) / 2` quantiles of the resampled
/// scores, interpolated linearly (numpy's default `percentile`).
///
/// A resample repeats items, and a repeated item is at distance 0 from its
/// copy on both sides: neighbourhood scores such as [`mutual_knn`] then
/// count the copy as a shared neighbour (ties among copies are broken by
/// index, see [`cosine_neighbours`]), which biases them upwards. Prefer
/// [`permutation_test`] for testing them. An error from `score` on some
/// resample (e.g. one that drew a single item again and again) stops the
/// bootstrap.
pub fn bootstrap_pair_ci<F>(
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    mut score: F,
    options: &BootstrapOptions,
) -> Result<ScoreInterval>
where
    F: FnMut(MatRef<'_, f64>, MatRef<'_, f64>) -> Result<f64>,
{
    options.validate()?;
    paired(x, y, 2, "a bootstrap")?;
    let estimate = finite_score(score(x, y)?)?;
    let mut bx = Mat::<f64>::zeros(x.nrows(), x.ncols());
    let mut by = Mat::<f64>::zeros(y.nrows(), y.ncols());
    bootstrap(x.nrows(), estimate, options, |rows| {
        gather_rows(x, rows, &mut bx);
        gather_rows(y, rows, &mut by);
        score(bx.as_ref(), by.as_ref())
    })
}

/// As [`bootstrap_pair_ci`], for a score of one representation (e.g. an
/// intrinsic dimension or an entropy): rows of `X` resampled with
/// replacement. The remark on repeated items applies to every
/// nearest-neighbour quantity, [`crate::intrinsic::two_nn`] included
/// (it drops points at distance 0 from their neighbour).
pub fn bootstrap_ci<F>(
    x: MatRef<'_, f64>,
    mut score: F,
    options: &BootstrapOptions,
) -> Result<ScoreInterval>
where
    F: FnMut(MatRef<'_, f64>) -> Result<f64>,
{
    options.validate()?;
    checks::data_matrix("representation matrix", x)?;
    enough_items(x.nrows(), 2, "a bootstrap")?;
    let estimate = finite_score(score(x)?)?;
    let mut bx = Mat::<f64>::zeros(x.nrows(), x.ncols());
    bootstrap(x.nrows(), estimate, options, |rows| {
        gather_rows(x, rows, &mut bx);
        score(bx.as_ref())
    })
}

fn bootstrap(
    n: usize,
    estimate: f64,
    options: &BootstrapOptions,
    mut resampled_score: impl FnMut(&[usize]) -> Result<f64>,
) -> Result<ScoreInterval> {
    let mut rng = ChaCha20Rng::seed_from_u64(options.seed);
    let mut rows = vec![0usize; n];
    let mut scores = Vec::with_capacity(options.resamples);
    for _ in 0..options.resamples {
        rows.iter_mut().for_each(|r| *r = rng.random_range(0..n));
        scores.push(finite_score(resampled_score(&rows)?)?);
    }
    Ok(Interval::percentile(estimate, scores, options))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::row_gram_lower;
    use faer::mat;

    #[test]
    fn median_counts_the_zero_diagonal_and_both_triangles() {
        // Off-diagonal squared distances 1, 4, 9 (n = 3): the 9 entries are
        // 0 0 0 1 1 4 4 9 9, median 1.
        let d2 = mat![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [4.0, 9.0, 0.0]];
        assert_eq!(full_matrix_median_of_lower(d2.as_ref()), 1.0);
        // n = 2: entries 0 0 5 5, median (0 + 5) / 2.
        let d2 = mat![[0.0, 0.0], [5.0, 0.0]];
        assert_eq!(full_matrix_median_of_lower(d2.as_ref()), 2.5);
    }

    #[test]
    fn copies_map_to_their_first_occurrence() {
        let m = mat![
            [1.0, 2.0],
            [3.0, 4.0],
            [1.0, 2.0],
            [3.0, 4.0],
            [1.0, 2.5],
            [1.0, 2.0]
        ];
        // first_copies reads rows as the columns of the transpose.
        let t = m.transpose().to_owned();
        assert_eq!(first_copies(&t), vec![0, 1, 0, 1, 4, 0]);
        // -0.0 and 0.0 differ in bits: not copies (they are tied anyway).
        let z = mat![[0.0, -0.0]];
        assert_eq!(first_copies(&z), vec![0, 1]);
    }

    #[test]
    fn gram_and_feature_space_sums_agree() {
        let x = mat![
            [1.0, 2.0, 0.5],
            [0.0, -1.0, 2.0],
            [3.0, 1.0, 1.0],
            [0.5, 0.5, -2.0],
            [2.0, 0.0, 0.0]
        ];
        let y = mat![[1.0, 0.0], [2.0, 1.0], [-1.0, 0.5], [0.0, 3.0], [1.0, 1.0]];
        let (xc, yc) = (centred(x.as_ref()), centred(y.as_ref()));
        let k = row_gram_lower(xc.as_ref(), 1.0);
        let l = row_gram_lower(yc.as_ref(), 1.0);
        let gram = sums_from_lower(&k, &l);
        let feature = feature_space_sums(xc.as_ref(), yc.as_ref());
        for (a, b) in gram.iter().zip(&feature) {
            for (u, v) in [
                (a.full, b.full),
                (a.off, b.off),
                (a.rows, b.rows),
                (a.sum_p, b.sum_p),
                (a.sum_q, b.sum_q),
            ] {
                assert!((u - v).abs() <= 1e-12 * u.abs().max(1.0), "{u} vs {v}");
            }
        }
    }

    /// A deterministic matrix with no structure (golden-ratio hashing).
    fn scrambled(n: usize, d: usize, seed: usize) -> Mat<f64> {
        Mat::from_fn(n, d, |i, j| {
            let k = (i * 7919 + j * 104_729 + seed * 15_485_863) as f64;
            (k * 0.618_033_988_749_894_9).fract() - 0.5
        })
    }

    #[test]
    fn panel_gram_route_matches_the_feature_route_on_many_items() {
        // n = 600 takes the panel-parallel Gram product (n >= 512).
        let (x, y) = (scrambled(600, 40, 1), scrambled(600, 30, 2));
        let (xt, yt) = (
            centred_transposed(x.as_ref()),
            centred_transposed(y.as_ref()),
        );
        let k = row_gram_lower_panels(xt.transpose(), 1.0);
        let l = row_gram_lower_panels(yt.transpose(), 1.0);
        let stored = sums_from_lower(&k, &l);
        let gram = gram_panel_sums(xt.transpose(), yt.transpose());
        let feature =
            feature_space_sums(centred(x.as_ref()).as_ref(), centred(y.as_ref()).as_ref());
        for ((a, b), c) in gram.iter().zip(&feature).zip(&stored) {
            for (u, v, w) in [
                (a.full, b.full, c.full),
                (a.off, b.off, c.off),
                (a.rows, b.rows, c.rows),
                (a.sum_p, b.sum_p, c.sum_p),
            ] {
                assert!((u - v).abs() <= 1e-11 * u.abs().max(1.0), "{u} vs {v}");
                assert!((u - w).abs() <= 1e-11 * u.abs().max(1.0), "{u} vs {w}");
            }
        }
    }

    #[test]
    fn neighbour_lists_match_brute_force_on_many_items() {
        let x = scrambled(600, 6, 3);
        let k = 4;
        let got = cosine_neighbours(x.as_ref(), k).unwrap();
        assert_eq!(got, brute_force_neighbours(&x, k));
    }

    /// The documented order, by brute force: similarities between unit
    /// rows by plain dot products (bitwise-equal rows give bitwise-equal
    /// values), decreasing, ties to the lower index.
    fn brute_force_neighbours(x: &Mat<f64>, k: usize) -> Vec<usize> {
        let (n, d) = (x.nrows(), x.ncols());
        let unit: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let r: Vec<f64> = (0..d).map(|j| x[(i, j)]).collect();
                let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
                r.iter().map(|v| v / norm).collect()
            })
            .collect();
        let mut out = Vec::with_capacity(n * k);
        for i in 0..n {
            let mut order: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            let sim = |j: usize| dot(&unit[i], &unit[j]);
            order.sort_by(|&a, &b| sim(b).total_cmp(&sim(a)).then(a.cmp(&b)));
            out.extend_from_slice(&order[..k]);
        }
        out
    }

    #[test]
    fn streamed_neighbours_with_duplicates_match_brute_force_at_any_budget() {
        // A bootstrap-like resample: 300 draws from 120 distinct rows, so
        // most rows have copies (ties among copies must follow the index).
        let base = scrambled(120, 5, 4);
        let x = Mat::from_fn(300, 5, |i, j| base[((i * 37 + i / 7) % 120, j)]);
        for k in [1, 3, 10] {
            let want = brute_force_neighbours(&x, k);
            // One panel per batch (a budget of one byte), and all at once.
            for budget in [1, KNN_PANEL_BUDGET_BYTES] {
                let got = neighbour_lists_within(x.as_ref(), k, budget).unwrap();
                for i in 0..300 {
                    assert_eq!(
                        &got[i * k..(i + 1) * k],
                        &want[i * k..(i + 1) * k],
                        "row {i}, k {k}, budget {budget}"
                    );
                }
            }
        }
    }

    /// Rows in tight clusters: within a cluster the similarities differ by
    /// about 1e-10, far below f32's resolution near 1 (6e-8), so the f32
    /// screen cannot rank them and the f64 recomputation must.
    fn tight_clusters(clusters: usize, size: usize, d: usize, spread: f64) -> Mat<f64> {
        let centres = scrambled(clusters, d, 5);
        let noise = scrambled(clusters * size, d, 6);
        Mat::from_fn(clusters * size, d, |i, j| {
            centres[(i % clusters, j)] + spread * noise[(i, j)]
        })
    }

    #[test]
    fn neighbours_closer_than_f32_can_tell_follow_the_f64_similarities() {
        // Clusters of 10: each row's screen keeps its cluster (within the
        // window) and stays under the candidate limit.
        let x = tight_clusters(60, 10, 8, 1e-5);
        for k in [1, 4, 9] {
            let got = cosine_neighbours(x.as_ref(), k).unwrap();
            assert_eq!(got, brute_force_neighbours(&x, k), "k {k}");
        }
    }

    #[test]
    fn rows_with_more_near_ties_than_the_screen_keeps_are_ranked_in_f64_whole() {
        // One cluster of 320: every row has 319 candidates in the window,
        // more than the screen keeps, so every row overflows.
        let x = tight_clusters(1, 320, 8, 1e-5);
        let k = 3;
        assert!(319 > candidate_limit(k), "the premise of this test");
        let got = cosine_neighbours(x.as_ref(), k).unwrap();
        assert_eq!(got, brute_force_neighbours(&x, k));
    }

    #[test]
    fn the_screening_window_bounds_the_f32_round_off() {
        // Sanity of the bound on real products: random-sign unit rows at two
        // lengths, the f32 product against the f64 dot products.
        for d in [3, 700] {
            let x = scrambled(150, d, 7);
            let norms = row_norms(x.as_ref());
            let unit = Mat::from_fn(d, 150, |j, i| x[(i, j)] / norms[i]);
            let unit32 = Mat::<f32>::from_fn(d, 150, |j, i| unit[(j, i)] as f32);
            let mut t = Mat::<f32>::zeros(150, 150);
            matmul(
                t.as_mut(),
                Accum::Replace,
                unit32.transpose(),
                unit32.as_ref(),
                1.0,
                Par::Seq,
            );
            let worst = (0..150)
                .flat_map(|i| (0..150).map(move |j| (i, j)))
                .map(|(i, j)| {
                    let s = dot(unit.col_as_slice(i), unit.col_as_slice(j));
                    (f64::from(t[(i, j)]) - s).abs()
                })
                .fold(0.0, f64::max);
            assert!(worst <= screening_window(d), "d {d}: {worst:e}");
        }
    }

    #[test]
    fn every_row_equal_gives_the_other_rows_in_index_order() {
        let x = Mat::from_fn(5, 3, |_, j| j as f64 + 1.0);
        let got = cosine_neighbours(x.as_ref(), 4).unwrap();
        assert_eq!(
            got,
            vec![1, 2, 3, 4, 0, 2, 3, 4, 0, 1, 3, 4, 0, 1, 2, 4, 0, 1, 2, 3]
        );
    }

    #[test]
    fn cka_of_orthogonal_features_is_zero() {
        // X varies along item pattern (1, -1, 1, -1), Y along (1, 1, -1, -1):
        // centred and orthogonal as vectors over items, so tr(K L) = 0.
        let x = mat![[1.0], [-1.0], [1.0], [-1.0]];
        let y = mat![[1.0], [1.0], [-1.0], [-1.0]];
        let v = linear_cka(x.as_ref(), y.as_ref(), HsicEstimator::Biased).unwrap();
        assert_eq!(v, 0.0);
    }
}
