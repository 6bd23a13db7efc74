//! # lmgeo-probes: the numerics of lmgeo
//!
//! Pure functions, no I/O, on `f64` matrices whose **rows are tokens** (n)
//! and **columns hidden dimensions** (d), passed as [`faer::MatRef`]. Linear
//! algebra is faer's (symmetric eigensolver, Cholesky, QR, SVD, products),
//! always on the smaller side of a matrix (the n x n Gram matrix or the
//! d x d covariance). Logarithms are natural (nats). Every function
//! validates its input and returns [`ProbeError`] for empty input, NaN or
//! infinite entries, mismatched sizes, zero rows that must be normalised,
//! or parameters out of range; none panics on user input or returns a
//! silent NaN. Formulas and defaults are those of `docs/method.md`.
//!
//! ## Modules and functions
//!
//! * [`preprocess`] (method.md section 1): [`Preprocess`] (`center_l2`
//!   default, `l2`, `none`; `FromStr`/`Display`),
//!   [`preprocess::preprocess`].
//! * [`entropy`] (section 1): [`entropy::spectrum`] (eigenvalues of
//!   `S = Z^T Z / n`, descending), [`entropy::entropy_report`] →
//!   [`entropy::EntropyReport`] (matrix entropy, `H / ln d`, effective rank,
//!   coding length `L_eps`, its maximum, `L_eps / max`),
//!   [`entropy::EntropyReport::from_spectrum`], [`entropy::diff_erank`].
//! * [`power_law`] (section 2): [`power_law::fit`] → `a`, `b`, `R^2`,
//!   standard errors; [`power_law::bootstrap_exponent_ci`] (texts resampled
//!   within each model, seeded ChaCha20, percentile interval);
//!   [`power_law::quantile`]; the paper's simulation
//!   [`power_law::simulated_normalised_coding_length`] and
//!   [`power_law::simulated_matrix_entropy`].
//! * [`gp`] (section 3): [`gp::information_gain`] (GP and ridge routes, their
//!   relative difference, `IG`), [`gp::ridge_variance_dense`] (the literal
//!   d x d route), [`gp::gain_curve`] (every token against its prefix,
//!   incremental Cholesky), [`gp::center_l2_against_context`],
//!   [`gp::centring_trap_bound`]. Read the
//!   preprocessing trap in the [`gp`] docs.
//! * [`lasso`] (section 4): [`lasso::lasso`], [`lasso::lasso_warm_start`],
//!   [`lasso::lasso_path`], [`lasso::lasso_tokens`] (`X = C^T`),
//!   [`lasso::alpha_max`], [`lasso::rank_features`],
//!   [`lasso::kkt_violation`]; scikit-learn's objective and stopping rule.
//! * [`attention`] (section 4): [`attention::compare`] (top-k Jaccard,
//!   precision, reconstruction residuals, Spearman, Kendall tau-b),
//!   [`attention::relative_residual`], [`attention::spearman`],
//!   [`attention::kendall_tau_b`], [`attention::aggregate_heads`] (mean or
//!   max over heads).
//! * [`distance`] (section 6): [`distance::text_moments`],
//!   [`distance::mean_cosine_distance`], [`distance::euclidean`],
//!   [`distance::frobenius`], [`distance::bures_wasserstein`],
//!   [`distance::von_neumann_relative_entropy`], [`distance::roc_auc`].
//! * [`similarity`] (section 7.1), two representations of the same items
//!   (`X` n x d1, `Y` n x d2, row i = item i in both):
//!   [`similarity::linear_cka`], [`similarity::rbf_cka`],
//!   [`similarity::kernel_cka`] (biased or debiased HSIC,
//!   [`similarity::HsicEstimator`]), [`similarity::mutual_knn`] and
//!   [`similarity::cosine_neighbours`] (ties to the lower index),
//!   [`similarity::svcca`], [`similarity::procrustes_distance`]; a
//!   permutation null for any pairwise score,
//!   [`similarity::permutation_test`], and percentile bootstrap intervals
//!   over items, [`similarity::bootstrap_pair_ci`] and
//!   [`similarity::bootstrap_ci`] (seeded ChaCha20).
//! * [`intrinsic`] (section 7.2), one representation:
//!   [`intrinsic::two_nn`] (TwoNN intrinsic dimension, scikit-dimension's
//!   default linear fit and the censored MLE), [`intrinsic::rankme`],
//!   [`intrinsic::renyi_entropy`] (matrix-based Renyi alpha-entropy; alpha
//!   = 1 is [`entropy`]'s matrix entropy), [`intrinsic::curvature`] (token
//!   trajectories), [`intrinsic::linearity`] (layer l to l + 1).
//! * [`divergence`] (section 5), a model's output on a full and on a
//!   modified context: [`divergence::cosine_distance`] (hidden states),
//!   [`divergence::log_softmax`], [`divergence::kl_divergence`] and
//!   [`divergence::argmax`] (next-token distributions).
//! * [`summary`] (section 1, data-set level): [`summary::mean`],
//!   [`summary::mean_sem`] (mean and standard error over texts).
//! * Here: [`matrix_from_rows_f32`], [`matrix_from_rows_f64`] build a matrix
//!   from row-major data (as hidden states are stored).
//!
//! ## Conventions
//!
//! * `S = Z^T Z / n` of the preprocessed rows; eigenvalues that round-off
//!   makes negative are clamped to zero (matrix entries never are).
//! * Defaults: `eps = 0.1` ([`entropy::DEFAULT_EPS`]), `sigma = 0.01`
//!   ([`gp::DEFAULT_SIGMA`]), `lambda = 1e-4` ([`lasso::DEFAULT_ALPHA`]),
//!   von Neumann ridge `1e-6` ([`distance::DEFAULT_RIDGE`]); RBF CKA
//!   threshold 1 ([`similarity::DEFAULT_RBF_THRESHOLD`]), mutual kNN
//!   `k = 10` ([`similarity::DEFAULT_KNN_K`]), SVCCA variance 0.99
//!   ([`similarity::DEFAULT_SVCCA_VARIANCE`]), TwoNN discard fraction 0.1
//!   ([`intrinsic::DEFAULT_DISCARD_FRACTION`]), RankMe `eps = 1e-7`
//!   ([`intrinsic::DEFAULT_RANKME_EPS`]).
//! * Parallelism: faer's global setting (both cores by default; change it
//!   with `faer::set_global_parallelism`); the per-row neighbour searches
//!   of [`similarity`] and [`intrinsic`] run on rayon's global pool.

#![warn(missing_docs)]

pub mod attention;
pub mod bootstrap;
mod checks;
pub mod distance;
pub mod divergence;
pub mod entropy;
mod error;
pub mod gp;
pub mod intrinsic;
mod kernels;
pub mod lasso;
pub mod power_law;
pub mod preprocess;
pub mod similarity;
pub mod summary;

pub use error::{ProbeError, Result};
pub use preprocess::Preprocess;

use faer::Mat;

/// A `rows x cols` matrix from row-major `f32` data (row `i` is
/// `data[i * cols..(i + 1) * cols]`), widened to `f64`.
///
/// Errors when `data.len() != rows * cols`. Non-finite values are kept;
/// every probe rejects them with their position.
pub fn matrix_from_rows_f32(rows: usize, cols: usize, data: &[f32]) -> Result<Mat<f64>> {
    check_row_major_len(rows, cols, data.len())?;
    Ok(Mat::from_fn(rows, cols, |i, j| {
        f64::from(data[i * cols + j])
    }))
}

/// As [`matrix_from_rows_f32`], for `f64` data.
pub fn matrix_from_rows_f64(rows: usize, cols: usize, data: &[f64]) -> Result<Mat<f64>> {
    check_row_major_len(rows, cols, data.len())?;
    Ok(Mat::from_fn(rows, cols, |i, j| data[i * cols + j]))
}

fn check_row_major_len(rows: usize, cols: usize, len: usize) -> Result<()> {
    let expected = rows.checked_mul(cols).ok_or(ProbeError::InvalidParameter {
        name: "rows * cols",
        value: rows as f64 * cols as f64,
        reason: "overflows usize",
    })?;
    if len != expected {
        return Err(ProbeError::SizeMismatch {
            what: "row-major data length (= rows * cols)",
            expected,
            found: len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_data_lands_in_rows() {
        let m = matrix_from_rows_f32(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
        assert_eq!(m[(0, 2)], 3.0);
        assert_eq!(m[(1, 0)], 4.0);
        assert_eq!(m[(1, 2)], 6.5);
        assert!(matches!(
            matrix_from_rows_f32(2, 2, &[1.0; 3]),
            Err(ProbeError::SizeMismatch {
                expected: 4,
                found: 3,
                ..
            })
        ));
        let f = matrix_from_rows_f64(1, 2, &[0.1, 0.2]).unwrap();
        assert_eq!(f[(0, 1)], 0.2);
    }
}
