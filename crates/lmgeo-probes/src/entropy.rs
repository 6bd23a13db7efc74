//! Representation entropy (method.md section 1).
//!
//! All quantities derive from the eigenvalues of `S = Z^T Z / n` of the
//! preprocessed matrix. The non-zero spectrum of `S` (d x d) equals that of
//! the Gram matrix `Z Z^T / n` (n x n), so the smaller of the two is formed
//! and handed to faer's symmetric eigensolver. Logarithms are natural (nats).

use faer::{MatRef, Side};

use crate::checks;
use crate::error::{ProbeError, Result};
use crate::kernels::{col_gram, row_gram};
use crate::preprocess::{Preprocess, preprocess};

/// The paper's distortion for the coding length.
pub const DEFAULT_EPS: f64 = 0.1;

/// Eigenvalues of `S = Z^T Z / n` for an already preprocessed `z`, sorted
/// descending, `min(n, d)` of them (the other `|n - d|` are exactly zero).
///
/// Round-off can make eigenvalues of a positive semi-definite matrix
/// slightly negative; those are clamped to zero here (the matrix entries
/// never are).
pub fn spectrum(z: MatRef<'_, f64>) -> Result<Vec<f64>> {
    checks::data_matrix("representation matrix", z)?;
    let (n, d) = (z.nrows(), z.ncols());
    let scale = 1.0 / n as f64;
    let small = if n <= d {
        row_gram(z, scale)
    } else {
        col_gram(z, scale)
    };
    let mut eig = small
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|e| ProbeError::Numerical(format!("symmetric eigensolver failed: {e:?}")))?;
    for x in eig.iter_mut() {
        *x = x.max(0.0);
    }
    eig.reverse();
    Ok(eig)
}

/// Everything section 1 reports for one matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct EntropyReport {
    /// Number of rows (tokens).
    pub n: usize,
    /// Number of columns (hidden size).
    pub d: usize,
    /// Distortion used by the coding length.
    pub eps: f64,
    /// Preprocessing applied before the spectrum.
    pub preprocess: Preprocess,
    /// `tr S`, the sum of the eigenvalues (1 for unit rows).
    pub trace: f64,
    /// Number of eigenvalues above `1e-12 * lambda_max` (a numerical rank).
    pub numerical_rank: usize,
    /// Matrix entropy `H = -sum p_i ln p_i`, `p_i = lambda_i / tr S` (nats).
    pub matrix_entropy: f64,
    /// `H / ln d`, in `[0, 1]`.
    pub normalised_matrix_entropy: f64,
    /// `exp(H)`.
    pub effective_rank: f64,
    /// `L_eps = ((n + d) / 2) sum ln(1 + d lambda_i / eps^2)` (nats).
    pub coding_length: f64,
    /// `((n + d) / 2) d ln(1 + 1 / eps^2)`, the value at `S = I / d`.
    pub max_coding_length: f64,
    /// The paper's representation entropy `L_eps / max` (in `[0, 1]` for
    /// unit rows; may exceed 1 with `Preprocess::None`).
    pub normalised_coding_length: f64,
}

impl EntropyReport {
    /// Builds the report from a spectrum of `S` (any order, non-negative;
    /// zeros may be omitted).
    pub fn from_spectrum(
        spectrum: &[f64],
        n: usize,
        d: usize,
        eps: f64,
        preprocess: Preprocess,
    ) -> Result<Self> {
        checks::positive("eps", eps)?;
        checks::finite_vector("spectrum", spectrum)?;
        if n == 0 || d == 0 {
            return Err(ProbeError::Empty {
                what: "representation matrix",
                rows: n,
                cols: d,
            });
        }
        if d < 2 {
            return Err(ProbeError::Degenerate(
                "normalised entropy H / ln d is undefined for d = 1".into(),
            ));
        }
        if let Some(i) = spectrum.iter().position(|&x| x < 0.0) {
            return Err(ProbeError::InvalidParameter {
                name: "spectrum value",
                value: spectrum[i],
                reason: "eigenvalues of a covariance must be >= 0",
            });
        }
        let trace: f64 = spectrum.iter().sum();
        if trace <= 0.0 {
            return Err(ProbeError::Degenerate(
                "the matrix is zero: its entropy is undefined".into(),
            ));
        }
        let matrix_entropy = matrix_entropy_of(spectrum, trace);
        let lambda_max = spectrum.iter().copied().fold(0.0, f64::max);
        let numerical_rank = spectrum.iter().filter(|&&x| x > 1e-12 * lambda_max).count();
        let half_n_plus_d = (n + d) as f64 / 2.0;
        let df = d as f64;
        let eps2 = eps * eps;
        let coding_length = half_n_plus_d
            * spectrum
                .iter()
                .map(|&l| (df * l / eps2).ln_1p())
                .sum::<f64>();
        let max_coding_length = half_n_plus_d * df * (1.0 / eps2).ln_1p();
        Ok(Self {
            n,
            d,
            eps,
            preprocess,
            trace,
            numerical_rank,
            matrix_entropy,
            normalised_matrix_entropy: matrix_entropy / df.ln(),
            effective_rank: matrix_entropy.exp(),
            coding_length,
            max_coding_length,
            normalised_coding_length: coding_length / max_coding_length,
        })
    }
}

fn matrix_entropy_of(spectrum: &[f64], trace: f64) -> f64 {
    let h: f64 = spectrum
        .iter()
        .filter(|&&l| l > 0.0)
        .map(|&l| {
            let p = l / trace;
            -p * p.ln()
        })
        .sum();
    // Round-off can give -1e-17 for a rank-one matrix; entropy is >= 0.
    h.max(0.0)
}

/// Preprocesses `z` (rows = tokens) and reports its entropies.
pub fn entropy_report(z: MatRef<'_, f64>, method: Preprocess, eps: f64) -> Result<EntropyReport> {
    checks::positive("eps", eps)?;
    let p = preprocess(z, method)?;
    let eig = spectrum(p.as_ref())?;
    EntropyReport::from_spectrum(&eig, z.nrows(), z.ncols(), eps, method)
}

/// Diff-eRank: effective rank of the randomly initialised model minus that
/// of the trained model (positive when training compresses).
pub fn diff_erank(erank_random: f64, erank_trained: f64) -> Result<f64> {
    checks::finite_vector("effective ranks", &[erank_random, erank_trained])?;
    Ok(erank_random - erank_trained)
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::{Mat, mat};

    #[test]
    fn identity_rows_reach_every_maximum() {
        // Rows e_1..e_d: S = I/d exactly.
        let d = 5;
        let z = Mat::<f64>::identity(d, d);
        let r = entropy_report(z.as_ref(), Preprocess::L2, 0.1).unwrap();
        assert!((r.matrix_entropy - (d as f64).ln()).abs() < 1e-14);
        assert!((r.normalised_matrix_entropy - 1.0).abs() < 1e-14);
        assert!((r.effective_rank - d as f64).abs() < 1e-12);
        assert!((r.normalised_coding_length - 1.0).abs() < 1e-14);
        assert_eq!(r.numerical_rank, d);
    }

    #[test]
    fn one_row_has_zero_entropy_under_l2_and_is_an_error_under_center_l2() {
        let z = mat![[3.0, 4.0, 0.0]];
        let r = entropy_report(z.as_ref(), Preprocess::L2, 0.1).unwrap();
        assert_eq!(r.matrix_entropy, 0.0);
        assert!((r.effective_rank - 1.0).abs() < 1e-15);
        // One eigenvalue, 1: L = ((1 + 3) / 2) ln(1 + 3 / 0.01).
        assert!((r.coding_length - 2.0 * 301f64.ln()).abs() < 1e-12);
        assert!(matches!(
            entropy_report(z.as_ref(), Preprocess::CenterL2, 0.1),
            Err(ProbeError::ZeroRow { .. })
        ));
    }

    #[test]
    fn spectrum_has_min_n_d_values_sorted_descending() {
        let z = mat![[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]];
        // S = diag(1, 4, 0, 0) / 2.
        assert_eq!(spectrum(z.as_ref()).unwrap(), vec![2.0, 0.5]);
        let tall = z.transpose().to_owned();
        // Rows e_1, 2 e_2, 0, 0 → S = diag(1, 4) / 4.
        assert_eq!(spectrum(tall.as_ref()).unwrap(), vec![1.0, 0.25]);
    }

    #[test]
    fn degenerate_inputs_are_errors() {
        let zero = Mat::<f64>::zeros(3, 4);
        assert!(matches!(
            entropy_report(zero.as_ref(), Preprocess::None, 0.1),
            Err(ProbeError::Degenerate(_))
        ));
        let one_col = mat![[1.0], [2.0]];
        assert!(matches!(
            entropy_report(one_col.as_ref(), Preprocess::L2, 0.1),
            Err(ProbeError::Degenerate(_))
        ));
        let z = mat![[1.0, 2.0], [2.0, 1.0]];
        for eps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                entropy_report(z.as_ref(), Preprocess::L2, eps),
                Err(ProbeError::InvalidParameter { name: "eps", .. })
            ));
        }
        let nan = mat![[1.0, f64::NAN]];
        assert!(matches!(
            spectrum(nan.as_ref()),
            Err(ProbeError::NonFinite { .. })
        ));
        assert!(diff_erank(f64::NAN, 1.0).is_err());
        assert_eq!(diff_erank(10.0, 4.0).unwrap(), 6.0);
    }
}
