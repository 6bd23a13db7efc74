//! Geometry of one representation (method.md section 7.2): intrinsic
//! dimension, spectral ranks and entropies, the curvature of a token
//! trajectory, and how linear the map from one layer to the next is.
//!
//! * [`two_nn`]: TwoNN intrinsic dimension (Facco et al. 2017), the
//!   estimator of scikit-dimension's `TwoNN()` with its defaults, plus the
//!   censored maximum-likelihood estimate.
//! * [`rankme`]: RankMe (Garrido et al. 2023), `exp` of the entropy of the
//!   normalised *singular values* of the raw matrix. Not the same number as
//!   [`crate::entropy`]'s effective rank, which is `exp` of the entropy of
//!   the normalised *eigenvalues of the covariance* (squared singular
//!   values) of the preprocessed rows: squaring sharpens the distribution,
//!   so the effective rank is the smaller of the two for the same
//!   preprocessing, and RankMe adds `eps` to every probability.
//! * [`renyi_entropy`]: the matrix-based Renyi alpha-entropy (Giraldo et al.
//!   2015) of the same trace-normalised spectrum as [`crate::entropy`];
//!   `alpha = 1` is the matrix (von Neumann) entropy there.
//! * [`curvature`]: mean turning angle of a trajectory of token states
//!   (Hosseini & Fedorenko 2023).
//! * [`linearity`]: the linearity score of Razzhigaev et al. 2024.
//!
//! Logarithms are natural (nats) throughout.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};
use rayon::prelude::*;

use crate::checks;
use crate::entropy;
use crate::error::{ProbeError, Result};
use crate::kernels::{mirror_lower, par, robust_norm, row_gram_lower_panels};
use crate::preprocess::{Preprocess, preprocess};
use crate::similarity::{centred_transposed, centred_unit, enough_items};

/// Default fraction of the largest ratios `mu` that [`two_nn`] leaves out
/// of the fit (scikit-dimension's default, the heuristic of Facco et al.).
pub const DEFAULT_DISCARD_FRACTION: f64 = 0.1;

/// Default `eps` of [`rankme`] (Garrido et al. 2023).
pub const DEFAULT_RANKME_EPS: f64 = 1e-7;

/// A step of a trajectory shorter than this fraction of the larger norm of
/// its two end points counts as zero in [`curvature`]: the difference of two
/// nearly equal vectors is round-off, and its direction is noise.
pub const ZERO_STEP_TOLERANCE: f64 = 1e-12;

/// The TwoNN estimates and what went into them.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoNn {
    /// Slope of the line through the origin fitted to
    /// `(ln mu_(i), -ln(1 - i / N))`, i = 1..fitted (scikit-dimension's
    /// `TwoNN()`, `method="linear"`). The estimate to report.
    pub dimension: f64,
    /// Censored maximum-likelihood estimate
    /// `(m - 1) / (sum_{i <= m} ln mu_(i) + (N - m) ln mu_(m))` with
    /// `m = floor(N (1 - discard_fraction))` (scikit-dimension's
    /// `method="mle"`); `(N - 1) / sum ln mu` when nothing is discarded.
    pub mle: f64,
    /// Points whose ratio entered (`N`): all points minus the dropped
    /// duplicates.
    pub points: usize,
    /// Points dropped because their nearest neighbour is at distance 0.
    pub duplicates_dropped: usize,
    /// Ratios in the linear fit.
    pub fitted: usize,
}

/// TwoNN intrinsic dimension (Facco et al. 2017).
///
/// For every point, `mu = r2 / r1`, the ratio of the Euclidean distances to
/// its second and first nearest neighbours; on a d-dimensional manifold
/// with locally uniform density `mu` follows a Pareto law,
/// `P(mu <= m) = 1 - m^-d`. The ratios are sorted, the largest
/// `discard_fraction` of them left out (default
/// [`DEFAULT_DISCARD_FRACTION`], 0.1), and `d` is the least-squares slope
/// through the origin of `-ln(1 - F_i)` against `ln mu_(i)`, with the
/// empirical `F_i = i / N` over all `N` ratios. That is scikit-dimension's
/// `TwoNN()` default; the first `floor(N (1 - discard_fraction))` ratios
/// are fitted, at most `N - 1` (at `F = 1` the ordinate is infinite).
///
/// Duplicates: a point whose nearest neighbour coincides with it
/// (`r1 = 0`) has no ratio; it is dropped and counted in
/// `duplicates_dropped` (scikit-dimension does the same), and `N` counts
/// the remaining points. Errors when `x` has fewer than 3 rows, when fewer
/// than 3 points remain, `discard_fraction` is outside `[0, 1)`, fewer than
/// 2 ratios would be fitted, or every fitted ratio is 1 (a regular grid:
/// the slope is undefined).
///
/// Neighbours are found from the Gram matrix of the centred rows; the
/// distances of the four nearest candidates are then recomputed from
/// coordinate differences, so `r1` and `r2` carry no cancellation error.
pub fn two_nn(x: MatRef<'_, f64>, discard_fraction: f64) -> Result<TwoNn> {
    checks::data_matrix("point cloud", x)?;
    if !(0.0..1.0).contains(&discard_fraction) {
        return Err(ProbeError::InvalidParameter {
            name: "discard_fraction",
            value: discard_fraction,
            reason: "must lie in [0, 1)",
        });
    }
    let n = x.nrows();
    enough_items(n, 3, "TwoNN")?;
    let (r1, r2) = two_nearest_distances(x);
    let mut mu: Vec<f64> = r1
        .iter()
        .zip(&r2)
        .filter(|(a, _)| **a > 0.0)
        .map(|(a, b)| b / a)
        .collect();
    let points = mu.len();
    let duplicates_dropped = n - points;
    if points < 3 {
        return Err(ProbeError::Degenerate(format!(
            "TwoNN needs at least 3 points with a non-zero distance to their nearest \
             neighbour; {duplicates_dropped} of {n} are duplicates"
        )));
    }
    mu.sort_by(f64::total_cmp);
    let nf = points as f64;
    let kept = (nf * (1.0 - discard_fraction)).floor() as usize;
    let fitted = kept.min(points - 1);
    if fitted < 2 {
        return Err(ProbeError::Degenerate(format!(
            "TwoNN would fit {fitted} ratio(s) ({points} points, discard fraction \
             {discard_fraction}); it needs at least 2"
        )));
    }
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, m) in mu[..fitted].iter().enumerate() {
        let lx = m.ln();
        let ly = -(-((i + 1) as f64) / nf).ln_1p();
        sxy += lx * ly;
        sxx += lx * lx;
    }
    if sxx.is_nan() || sxx <= 0.0 {
        return Err(ProbeError::Degenerate(
            "every fitted ratio r2 / r1 is 1 (equidistant neighbours): TwoNN is undefined".into(),
        ));
    }
    let log_sum: f64 =
        mu[..kept].iter().map(|m| m.ln()).sum::<f64>() + (points - kept) as f64 * mu[kept - 1].ln();
    if log_sum.is_nan() || log_sum <= 0.0 {
        return Err(ProbeError::Degenerate(
            "every kept ratio r2 / r1 is 1 (equidistant neighbours): TwoNN is undefined".into(),
        ));
    }
    Ok(TwoNn {
        dimension: checks::finite_output("TwoNN dimension", sxy / sxx)?,
        mle: checks::finite_output("TwoNN MLE", (kept - 1) as f64 / log_sum)?,
        points,
        duplicates_dropped,
        fitted,
    })
}

/// Distances of every row to its first and second nearest other rows.
fn two_nearest_distances(x: MatRef<'_, f64>) -> (Vec<f64>, Vec<f64>) {
    const CANDIDATES: usize = 4;
    let n = x.nrows();
    let mut g = row_gram_lower_panels(centred_transposed(x).transpose(), 1.0);
    mirror_lower(&mut g);
    let sq: Vec<f64> = (0..n).map(|i| g[(i, i)]).collect();
    let c = CANDIDATES.min(n - 1);
    let pairs: Vec<(f64, f64)> = (0..n)
        .into_par_iter()
        .map(|i| {
            // Row i of the symmetric Gram matrix is its (contiguous) column i.
            let col = g.col_as_slice(i);
            let mut best: Vec<(f64, usize)> = Vec::with_capacity(c + 1);
            for j in (0..n).filter(|&j| j != i) {
                let d2 = sq[i] + sq[j] - 2.0 * col[j];
                if best.len() == c && d2 >= best[c - 1].0 {
                    continue;
                }
                let at = best.partition_point(|&(b, _)| b <= d2);
                best.insert(at, (d2, j));
                best.truncate(c);
            }
            let mut exact: Vec<f64> = best
                .iter()
                .map(|&(_, j)| robust_norm((0..x.ncols()).map(|k| x[(i, k)] - x[(j, k)])))
                .collect();
            exact.sort_by(f64::total_cmp);
            (exact[0], exact[1])
        })
        .collect();
    pairs.into_iter().unzip()
}

/// RankMe (Garrido et al. 2023): `exp(-sum_k p_k ln p_k)` with
/// `p_k = sigma_k / sum_l sigma_l + eps` over the `min(n, d)` singular
/// values of `x` as given (no centring, no normalisation: apply
/// [`crate::preprocess::preprocess`] first for that). Default `eps` is
/// [`DEFAULT_RANKME_EPS`] (1e-7); `eps = 0` gives the effective rank of Roy
/// & Vetterli (2007). In `[1, min(n, d)]` up to the `eps` shift.
///
/// Singular values come from faer's SVD rather than from eigenvalues of a
/// Gram matrix, whose square roots would turn round-off of size
/// `f64::EPSILON sigma_max^2` into singular values of size `1e-8 sigma_max`.
/// Errors on non-finite entries, a zero matrix, or `eps` negative or not
/// finite.
pub fn rankme(x: MatRef<'_, f64>, eps: f64) -> Result<f64> {
    checks::data_matrix("representation matrix", x)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(ProbeError::InvalidParameter {
            name: "eps",
            value: eps,
            reason: "must be finite and >= 0",
        });
    }
    let sigma = x
        .singular_values()
        .map_err(|e| ProbeError::Numerical(format!("SVD failed: {e:?}")))?;
    let total: f64 = sigma.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return Err(ProbeError::Degenerate(
            "the matrix is zero: RankMe is undefined".into(),
        ));
    }
    let h: f64 = sigma
        .iter()
        .map(|s| s / total + eps)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    checks::finite_output("RankMe", h.exp())
}

/// Matrix-based Renyi alpha-entropy (Giraldo, Rao & Principe 2015) of the
/// rows of `z` after `method`:
/// `S_alpha = ln(sum_i p_i^alpha) / (1 - alpha)` over the eigenvalues of
/// `S = Z^T Z / n` (equivalently of the Gram matrix `Z Z^T / n`, Giraldo et
/// al.'s trace-normalised linear-kernel matrix for unit rows), normalised
/// to `p_i = lambda_i / tr S`. Natural logarithm, as everywhere in the crate
/// (Giraldo et al. use log2: divide by `ln 2` for bits). `alpha = 1` is the
/// limit, `-sum p_i ln p_i`: exactly [`entropy::EntropyReport`]'s
/// `matrix_entropy` for the same preprocessing. `alpha = 2` is
/// `-ln sum p_i^2`.
pub fn renyi_entropy(z: MatRef<'_, f64>, alpha: f64, method: Preprocess) -> Result<f64> {
    check_alpha(alpha)?;
    let p = preprocess(z, method)?;
    renyi_entropy_of_spectrum(&entropy::spectrum(p.as_ref())?, alpha)
}

fn check_alpha(alpha: f64) -> Result<()> {
    checks::positive("alpha", alpha)
}

/// [`renyi_entropy`] of a given spectrum (non-negative, any order, zeros
/// may be omitted; normalised here by its sum).
///
/// For `alpha < 1`, eigenvalues at or below [`RENYI_ZERO_EIGENVALUE`]
/// times the largest count as zero: `p^alpha` magnifies the round-off that
/// an eigensolver leaves in place of exact zeros (an eigenvalue of `1e-17`
/// adds `3e-9` at `alpha = 1/2`), so a rank-deficient matrix would
/// otherwise get an entropy that depends on the solver. For `alpha >= 1`
/// such eigenvalues contribute below the round-off of the sum and are kept
/// (so `alpha = 1` is exactly the matrix entropy of [`crate::entropy`]).
///
/// Evaluated as `-ln(1 + sum_i p_i expm1((alpha - 1) ln p_i)) / (alpha - 1)`
/// (equal, since `sum p_i = 1`), which keeps its relative accuracy as
/// `alpha` approaches 1 where the textbook form divides one vanishing
/// difference by another.
pub fn renyi_entropy_of_spectrum(spectrum: &[f64], alpha: f64) -> Result<f64> {
    check_alpha(alpha)?;
    checks::data_vector("spectrum", spectrum)?;
    if let Some(i) = spectrum.iter().position(|&x| x < 0.0) {
        return Err(ProbeError::InvalidParameter {
            name: "spectrum value",
            value: spectrum[i],
            reason: "eigenvalues of a covariance must be >= 0",
        });
    }
    let trace: f64 = spectrum.iter().sum();
    if trace.is_nan() || trace <= 0.0 {
        return Err(ProbeError::Degenerate(
            "the matrix is zero: its entropy is undefined".into(),
        ));
    }
    let lambda_max = spectrum.iter().copied().fold(0.0, f64::max);
    let floor = if alpha < 1.0 {
        RENYI_ZERO_EIGENVALUE * lambda_max
    } else {
        0.0
    };
    let kept = spectrum.iter().copied().filter(|&l| l > floor);
    let kept_trace: f64 = kept.clone().sum();
    let p = kept.map(|l| l / kept_trace).filter(|&p| p > 0.0);
    let h = if alpha == 1.0 {
        p.map(|p| -p * p.ln()).sum::<f64>()
    } else {
        let t = alpha - 1.0;
        let s: f64 = p.map(|p| p * (t * p.ln()).exp_m1()).sum();
        -s.ln_1p() / t
    };
    // A rank-one spectrum gives -1e-17 from round-off; entropy is >= 0.
    checks::finite_output("Renyi entropy", h.max(0.0))
}

/// Relative size (to the largest eigenvalue) at or below which
/// [`renyi_entropy`] with `alpha < 1` treats an eigenvalue as zero; the
/// same threshold as [`entropy::EntropyReport`]'s `numerical_rank`.
pub const RENYI_ZERO_EIGENVALUE: f64 = 1e-12;

/// The turning angles of a trajectory and their mean.
#[derive(Debug, Clone, PartialEq)]
pub struct Curvature {
    /// Mean of the defined angles, in radians, in `[0, pi]`.
    pub mean: f64,
    /// Angle between steps `t` and `t + 1` for t = 0..n-3 (radians), `None`
    /// where either step has zero length.
    pub angles: Vec<Option<f64>>,
    /// Number of `None` angles.
    pub skipped: usize,
}

/// Curvature of a trajectory (Hosseini & Fedorenko 2023): rows of `x` are
/// the states of successive tokens; with steps `v_t = x_{t+1} - x_t`,
/// `curvature_t = arccos(cos(v_t, v_{t+1}))` in radians (0 for a straight
/// line, pi for a reversal), and the reported curvature is their mean.
///
/// A step shorter than [`ZERO_STEP_TOLERANCE`] times the larger norm of its
/// end points (a repeated state) has no direction: the two angles it takes
/// part in are skipped (`None`) and left out of the mean. The angle is
/// computed as `2 atan2(|u - w|, |u + w|)` of the unit steps `u`, `w`,
/// which unlike `arccos` stays accurate for nearly straight or reversing
/// steps. Errors on fewer than 3 rows, non-finite entries, or when no angle
/// is defined.
pub fn curvature(x: MatRef<'_, f64>) -> Result<Curvature> {
    checks::data_matrix("trajectory", x)?;
    let n = x.nrows();
    enough_items(n, 3, "curvature (two steps)")?;
    let d = x.ncols();
    let row = |t: usize| (0..d).map(move |j| x[(t, j)]);
    let unit_step = |t: usize| -> Option<Vec<f64>> {
        let step: Vec<f64> = row(t + 1).zip(row(t)).map(|(b, a)| b - a).collect();
        let len = robust_norm(step.iter().copied());
        let scale = robust_norm(row(t)).max(robust_norm(row(t + 1)));
        (len > ZERO_STEP_TOLERANCE * scale).then(|| step.iter().map(|v| v / len).collect())
    };
    let mut angles = Vec::with_capacity(n - 2);
    let mut previous = unit_step(0);
    for t in 1..n - 1 {
        let current = unit_step(t);
        angles.push(match (&previous, &current) {
            (Some(u), Some(w)) => {
                let diff = robust_norm(u.iter().zip(w).map(|(a, b)| a - b));
                let sum = robust_norm(u.iter().zip(w).map(|(a, b)| a + b));
                Some(2.0 * diff.atan2(sum))
            }
            _ => None,
        });
        previous = current;
    }
    let defined: Vec<f64> = angles.iter().flatten().copied().collect();
    if defined.is_empty() {
        return Err(ProbeError::Degenerate(
            "every step of the trajectory has zero length next to another: no angle is defined"
                .into(),
        ));
    }
    Ok(Curvature {
        mean: checks::finite_output(
            "mean curvature",
            defined.iter().sum::<f64>() / defined.len() as f64,
        )?,
        skipped: angles.len() - defined.len(),
        angles,
    })
}

/// Linearity score of Razzhigaev et al. 2024 ("Your transformer is secretly
/// linear") between `X` (layer l) and `Y` (layer l + 1), rows = the same
/// tokens: after centring the columns of both and scaling each to unit
/// Frobenius norm, `1 - min_A ||X A - Y||_F^2`, i.e. the fraction of `Y`'s
/// (unit) energy that a linear map of `X` explains. In `[0, 1]`.
///
/// The least-squares fit is the projection of `Y` onto the column space of
/// `X`, from a thin SVD of `X`: singular values at or below
/// `max(n, d1) f64::EPSILON sigma_max` count as zero (numpy's `lstsq`
/// default `rcond`). With `n <= d1` the centred `X` spans every centred
/// `Y` and the score is 1 whatever the data: use many more tokens than the
/// hidden size, as the paper does. Errors on mismatched rows, `n < 2`,
/// non-finite entries, or a side with every row equal.
pub fn linearity(x: MatRef<'_, f64>, y: MatRef<'_, f64>) -> Result<f64> {
    checks::data_matrix("first representation (X)", x)?;
    checks::data_matrix("second representation (Y)", y)?;
    checks::same_len(
        "rows of Y (= rows of X: one row per token in both)",
        x.nrows(),
        y.nrows(),
    )?;
    enough_items(x.nrows(), 2, "the linearity score")?;
    let xn = centred_unit(x, "X")?;
    let yn = centred_unit(y, "Y")?;
    let svd = xn
        .thin_svd()
        .map_err(|e| ProbeError::Numerical(format!("SVD of X failed: {e:?}")))?;
    let s = svd.S().column_vector();
    let s_max = (0..s.nrows()).map(|i| s[i]).fold(0.0, f64::max);
    let cutoff = x.nrows().max(x.ncols()) as f64 * f64::EPSILON * s_max;
    let u = svd.U();
    let range: Vec<usize> = (0..s.nrows()).filter(|&i| s[i] > cutoff).collect();
    let basis = Mat::from_fn(x.nrows(), range.len(), |i, j| u[(i, range[j])]);
    let mut coords = Mat::<f64>::zeros(range.len(), y.ncols());
    matmul(
        coords.as_mut(),
        Accum::Replace,
        basis.transpose(),
        yn.as_ref(),
        1.0,
        par(),
    );
    // ||Y||_F = 1, so 1 - ||residual||^2 = ||projection||^2.
    checks::finite_output("linearity", coords.squared_norm_l2()).map(|v| v.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renyi_entropy_of_r_equal_eigenvalues_is_ln_r_for_every_alpha() {
        let spectrum = [0.25; 4];
        for alpha in [0.3, 0.5, 1.0 - 1e-9, 1.0, 1.5, 2.0, 10.0] {
            let h = renyi_entropy_of_spectrum(&spectrum, alpha).unwrap();
            assert!((h - 4f64.ln()).abs() < 1e-14, "alpha {alpha}: {h}");
        }
        // Collision entropy of (1/2, 1/4, 1/4): -ln(1/4 + 1/16 + 1/16).
        let h2 = renyi_entropy_of_spectrum(&[2.0, 1.0, 1.0], 2.0).unwrap();
        assert!((h2 + (0.375f64).ln()).abs() < 1e-15);
    }

    #[test]
    fn rankme_of_equal_singular_values_is_their_number() {
        let z = Mat::<f64>::identity(5, 3);
        assert!((rankme(z.as_ref(), 0.0).unwrap() - 3.0).abs() < 1e-14);
        // eps shifts every probability up: slightly above 3.
        assert!(rankme(z.as_ref(), 1e-7).unwrap() > 3.0);
    }

    #[test]
    fn two_nn_of_an_exact_pareto_sample_follows_the_closed_form() {
        // Points 0, 1, 3 on a line: ratios 3/1, 2/1, 3/2.
        let x = faer::mat![[0.0], [1.0], [3.0]];
        let r = two_nn(x.as_ref(), 0.0).unwrap();
        assert_eq!((r.points, r.fitted, r.duplicates_dropped), (3, 2, 0));
        let mle = 2.0 / (3f64.ln() + 2f64.ln() + 1.5f64.ln());
        assert!((r.mle - mle).abs() < 1e-15);
        // Fit through (ln 1.5, -ln(2/3)) and (ln 2, -ln(1/3)).
        let (x1, y1, x2, y2) = (1.5f64.ln(), -(2.0f64 / 3.0).ln(), 2f64.ln(), 3f64.ln());
        let d = (x1 * y1 + x2 * y2) / (x1 * x1 + x2 * x2);
        assert!((r.dimension - d).abs() < 1e-15);
    }
}
