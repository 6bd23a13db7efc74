//! Sentence-level distances (method.md section 6).
//!
//! Each text becomes a [`TextMoments`]: a mean vector and a second-moment
//! matrix `S = Z^T Z / n` of its preprocessed rows, stored through the
//! factor `A = Z / sqrt(n)` (`S = A^T A`, rank at most `n`). The matrix
//! distances never form a d x d matrix when `n1 + n2 < d`: both
//! covariances live in the span of the `n1 + n2` rows, so a QR
//! factorisation `[A; B]^T = Q R` reduces them to `m x m` matrices
//! (`m = n1 + n2`) with the same spectra and distances, at a cost of
//! `O(m^2 d + m^3)`.
//!
//! Centring convention, made explicit:
//! * `S` is the second moment about zero of the *preprocessed* rows. Under
//!   the default `center_l2` the rows were centred (by the text's own mean)
//!   before being scaled to unit norm, and are not re-centred afterwards, so
//!   `tr S = 1`.
//! * The mean vector is the mean of the rows after the same preprocessing
//!   *without its centring step* (centring would make it zero): the mean of
//!   the unit-normalised rows for `center_l2` and `l2`, the plain mean for
//!   `none`. Its scale therefore matches `S`.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Side};

use crate::checks;
use crate::error::{ProbeError, Result};
use crate::kernels::{col_gram, par, robust_norm};
use crate::preprocess::{Preprocess, preprocess};

/// Ridge added to both covariances by default in the von Neumann relative
/// entropy (relative to `tr S = 1` for unit rows).
pub const DEFAULT_RIDGE: f64 = 1e-6;

/// Mean vector and covariance factor of one text.
#[derive(Debug, Clone, PartialEq)]
pub struct TextMoments {
    /// Number of rows (tokens).
    pub n: usize,
    /// Hidden size.
    pub d: usize,
    /// Preprocessing used.
    pub preprocess: Preprocess,
    /// Mean row (see the module docs for the convention).
    pub mean: Vec<f64>,
    /// `A = Z_preprocessed / sqrt(n)` (n x d), so that `S = A^T A`.
    pub factor: Mat<f64>,
}

impl TextMoments {
    /// The dense d x d covariance `A^T A` (for checks; `O(n d^2)`).
    pub fn covariance(&self) -> Mat<f64> {
        col_gram(self.factor.as_ref(), 1.0)
    }

    /// `tr S`.
    pub fn trace(&self) -> f64 {
        self.factor.squared_norm_l2()
    }
}

/// Mean and covariance factor of one text (rows = tokens).
pub fn text_moments(z: MatRef<'_, f64>, method: Preprocess) -> Result<TextMoments> {
    let processed = preprocess(z, method)?;
    let (n, d) = (z.nrows(), z.ncols());
    let mean_source = match method {
        Preprocess::CenterL2 => preprocess(z, Preprocess::L2)?,
        Preprocess::L2 | Preprocess::None => processed.clone(),
    };
    let mean = (0..d)
        .map(|j| mean_source.col_as_slice(j).iter().sum::<f64>() / n as f64)
        .collect();
    let scale = 1.0 / (n as f64).sqrt();
    let factor = Mat::from_fn(n, d, |i, j| processed[(i, j)] * scale);
    Ok(TextMoments {
        n,
        d,
        preprocess: method,
        mean,
        factor,
    })
}

fn paired_vectors(a: &[f64], b: &[f64]) -> Result<()> {
    checks::data_vector("first mean", a)?;
    checks::same_len("second mean (= first mean length)", a.len(), b.len())?;
    checks::finite_vector("second mean", b)
}

/// `1 - cos(a, b)`, in `[0, 2]`. Errors for a zero vector.
pub fn mean_cosine_distance(a: &[f64], b: &[f64]) -> Result<f64> {
    paired_vectors(a, b)?;
    let (na, nb) = (
        robust_norm(a.iter().copied()),
        robust_norm(b.iter().copied()),
    );
    if na == 0.0 || nb == 0.0 {
        return Err(ProbeError::Degenerate(
            "cosine distance is undefined for a zero vector".into(),
        ));
    }
    // Dot product of the unit vectors, so that huge entries cannot overflow.
    let cos: f64 = a.iter().zip(b).map(|(x, y)| (x / na) * (y / nb)).sum();
    Ok(1.0 - cos.clamp(-1.0, 1.0))
}

/// `||a - b||_2`.
pub fn euclidean(a: &[f64], b: &[f64]) -> Result<f64> {
    paired_vectors(a, b)?;
    Ok(robust_norm(a.iter().zip(b).map(|(x, y)| x - y)))
}

/// Both covariances expressed in one orthonormal basis of dimension `k`
/// that contains both ranges, and `k`.
struct SharedBasis {
    s1: Mat<f64>,
    s2: Mat<f64>,
    k: usize,
}

fn shared_basis(m1: &TextMoments, m2: &TextMoments) -> Result<SharedBasis> {
    checks::same_len("hidden size of the second text", m1.d, m2.d)?;
    let d = m1.d;
    let m = m1.n + m2.n;
    if m >= d {
        return Ok(SharedBasis {
            s1: m1.covariance(),
            s2: m2.covariance(),
            k: d,
        });
    }
    // [A; B]^T = Q R with Q (d x m) orthonormal: S1 = Q R_A R_A^T Q^T, etc.
    let mut stacked = Mat::<f64>::zeros(d, m);
    for j in 0..d {
        for i in 0..m1.n {
            stacked[(j, i)] = m1.factor[(i, j)];
        }
        for i in 0..m2.n {
            stacked[(j, m1.n + i)] = m2.factor[(i, j)];
        }
    }
    let qr = stacked.qr();
    let r = qr.thin_R();
    let r_a = r.subcols(0, m1.n);
    let r_b = r.subcols(m1.n, m2.n);
    Ok(SharedBasis {
        s1: crate::kernels::row_gram(r_a, 1.0),
        s2: crate::kernels::row_gram(r_b, 1.0),
        k: m,
    })
}

/// Frobenius distance `||S1 - S2||_F`.
pub fn frobenius(m1: &TextMoments, m2: &TextMoments) -> Result<f64> {
    let b = shared_basis(m1, m2)?;
    let k = b.k;
    Ok(robust_norm(
        (0..k * k).map(|e| b.s1[(e % k, e / k)] - b.s2[(e % k, e / k)]),
    ))
}

/// Gaussian 2-Wasserstein distance between `N(mu1, S1)` and `N(mu2, S2)`.
///
/// The covariance part is the Bures distance
/// `sqrt(tr S1 + tr S2 - 2 tr((S1^1/2 S2 S1^1/2)^1/2))`, whose fidelity term
/// equals the nuclear norm of `A B^T` (n1 x n2) for `S1 = A^T A`,
/// `S2 = B^T B`: no matrix square root is formed. With `with_mean` the
/// squared mean distance `||mu1 - mu2||^2` is added under the root.
///
/// Accuracy: the subtraction leaves an absolute error of order
/// `f64::EPSILON (tr S1 + tr S2)` in the squared distance, i.e. about `1e-8`
/// on the distance between two (near-)identical texts.
pub fn bures_wasserstein(m1: &TextMoments, m2: &TextMoments, with_mean: bool) -> Result<f64> {
    checks::same_len("hidden size of the second text", m1.d, m2.d)?;
    let mut cross = Mat::<f64>::zeros(m1.n, m2.n);
    matmul(
        cross.as_mut(),
        Accum::Replace,
        m1.factor.as_ref(),
        m2.factor.transpose(),
        1.0,
        par(),
    );
    let fidelity: f64 = cross
        .singular_values()
        .map_err(|e| ProbeError::Numerical(format!("SVD of A B^T failed: {e:?}")))?
        .iter()
        .sum();
    let squared = (m1.trace() + m2.trace() - 2.0 * fidelity).max(0.0);
    let mean_part = if with_mean {
        let e = euclidean(&m1.mean, &m2.mean)?;
        e * e
    } else {
        0.0
    };
    Ok((squared + mean_part).sqrt())
}

/// Von Neumann relative entropy `D(rho1 || rho2) = tr rho1 (ln rho1 - ln rho2)`
/// of the density matrices `rho = (S + delta I) / tr(S + delta I)` (nats).
///
/// The ridge `delta > 0` makes rank-deficient covariances (n < d) full rank.
/// Both `rho` are block diagonal in (shared basis, its complement), and on
/// the `d - k` dimensional complement each is a multiple of the identity,
/// so the complement contributes in closed form and only `k x k`
/// eigendecompositions are needed.
pub fn von_neumann_relative_entropy(m1: &TextMoments, m2: &TextMoments, delta: f64) -> Result<f64> {
    checks::positive("delta", delta)?;
    let b = shared_basis(m1, m2)?;
    let d = m1.d as f64;
    let t1 = m1.trace() + delta * d;
    let t2 = m2.trace() + delta * d;
    let (floor1, floor2) = (delta / t1, delta / t2);
    let density_eigen = |s: &Mat<f64>, t: f64, floor: f64| -> Result<(Vec<f64>, Mat<f64>)> {
        let mut rho = Mat::from_fn(b.k, b.k, |i, j| s[(i, j)] / t);
        for i in 0..b.k {
            rho[(i, i)] += floor;
        }
        let evd = rho
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| ProbeError::Numerical(format!("symmetric eigensolver failed: {e:?}")))?;
        let values = evd.S().column_vector();
        // delta / t is a lower bound of the spectrum; round-off below it is clamped.
        let values = (0..b.k).map(|i| values[i].max(floor)).collect();
        Ok((values, evd.U().to_owned()))
    };
    let (mu, _) = density_eigen(&b.s1, t1, floor1)?;
    let (nu, v2) = density_eigen(&b.s2, t2, floor2)?;
    let self_term: f64 = mu.iter().map(|&x| x * x.ln()).sum();
    // tr(rho1 ln rho2) = sum_j ln(nu_j) v_j^T rho1 v_j over rho2's eigenvectors.
    let mut rho1_v = Mat::<f64>::zeros(b.k, b.k);
    let mut rho1 = Mat::from_fn(b.k, b.k, |i, j| b.s1[(i, j)] / t1);
    for i in 0..b.k {
        rho1[(i, i)] += floor1;
    }
    matmul(
        rho1_v.as_mut(),
        Accum::Replace,
        rho1.as_ref(),
        v2.as_ref(),
        1.0,
        par(),
    );
    let cross_term: f64 = (0..b.k)
        .map(|j| {
            let weight: f64 = (0..b.k).map(|i| v2[(i, j)] * rho1_v[(i, j)]).sum();
            nu[j].ln() * weight
        })
        .sum();
    let complement = (m1.d - b.k) as f64 * floor1 * (floor1.ln() - floor2.ln());
    Ok(self_term - cross_term + complement)
}

/// Separation of two sets of distances by ROC AUC (Mann-Whitney U).
#[derive(Debug, Clone, PartialEq)]
pub struct AucReport {
    /// Probability that a positive pair is closer than a negative pair,
    /// ties counting one half: `U / (n_pos n_neg)`.
    pub auc: f64,
    /// `U = #{(p, q): d_p < d_q} + 0.5 #{d_p = d_q}` over positive p and negative q.
    pub u_statistic: f64,
    /// Number of positive pairs (should be close).
    pub positives: usize,
    /// Number of negative pairs.
    pub negatives: usize,
    /// `(U - n_pos n_neg / 2) / sd(U)` with the tie-corrected variance
    /// `n_pos n_neg / 12 ((N + 1) - sum (t^3 - t) / (N (N - 1)))`, no
    /// continuity correction; `None` when every distance is equal.
    pub z_score: Option<f64>,
}

/// ROC AUC of a distance at separating `positive` pairs (expected close)
/// from `negative` pairs, computed from average ranks (ties count one half).
pub fn roc_auc(positive: &[f64], negative: &[f64]) -> Result<AucReport> {
    checks::data_vector("positive-pair distances", positive)?;
    checks::data_vector("negative-pair distances", negative)?;
    let (np, nn) = (positive.len(), negative.len());
    let all: Vec<f64> = positive.iter().chain(negative).copied().collect();
    let ranks = crate::attention::average_ranks(&all);
    let negative_rank_sum: f64 = ranks[np..].iter().sum();
    let u = negative_rank_sum - (nn * (nn + 1)) as f64 / 2.0;
    let pairs = (np * nn) as f64;

    let total = (np + nn) as f64;
    let mut sorted = all.clone();
    sorted.sort_by(f64::total_cmp);
    let mut tie_sum = 0.0;
    let mut start = 0;
    while start < sorted.len() {
        let end = start
            + sorted[start..]
                .iter()
                .take_while(|&&v| v == sorted[start])
                .count();
        let t = (end - start) as f64;
        tie_sum += t * t * t - t;
        start = end;
    }
    let variance = pairs / 12.0 * ((total + 1.0) - tie_sum / (total * (total - 1.0)));
    let z_score = (variance > 0.0).then(|| (u - pairs / 2.0) / variance.sqrt());
    Ok(AucReport {
        auc: u / pairs,
        u_statistic: u,
        positives: np,
        negatives: nn,
        z_score,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::mat;

    #[test]
    fn vector_distances() {
        assert!((mean_cosine_distance(&[1.0, 0.0], &[0.0, 2.0]).unwrap() - 1.0).abs() < 1e-15);
        assert!(mean_cosine_distance(&[1.0, 1.0], &[-3.0, -3.0]).unwrap() - 2.0 < 1e-15);
        assert_eq!(euclidean(&[1.0, 2.0], &[4.0, 6.0]).unwrap(), 5.0);
        assert!(mean_cosine_distance(&[0.0, 0.0], &[1.0, 0.0]).is_err());
        assert!(euclidean(&[1.0], &[1.0, 2.0]).is_err());
        assert!(euclidean(&[], &[]).is_err());
    }

    #[test]
    fn identical_texts_are_at_distance_zero() {
        let z = mat![[1.0, 2.0, 0.0, 1.0], [0.5, -1.0, 2.0, 0.0]];
        let m = text_moments(z.as_ref(), Preprocess::L2).unwrap();
        assert!(frobenius(&m, &m).unwrap() < 1e-15);
        assert!(bures_wasserstein(&m, &m, true).unwrap() < 1e-7);
        assert!(von_neumann_relative_entropy(&m, &m, 1e-6).unwrap().abs() < 1e-12);
    }

    #[test]
    fn orthogonal_rank_one_texts_have_closed_forms() {
        // S1 = e1 e1^T, S2 = e2 e2^T in d = 3 (unit rows, n = 1, l2).
        let a = text_moments(mat![[1.0, 0.0, 0.0]].as_ref(), Preprocess::L2).unwrap();
        let b = text_moments(mat![[0.0, 1.0, 0.0]].as_ref(), Preprocess::L2).unwrap();
        assert!((frobenius(&a, &b).unwrap() - 2f64.sqrt()).abs() < 1e-15);
        // Fidelity 0: Bures^2 = 2; with means e1, e2 another 2.
        assert!((bures_wasserstein(&a, &b, false).unwrap() - 2f64.sqrt()).abs() < 1e-15);
        assert!((bures_wasserstein(&a, &b, true).unwrap() - 2.0).abs() < 1e-15);
        // rho1 = diag(1 + delta, delta, delta) / t, rho2 = diag(delta, 1 + delta, delta) / t.
        let delta: f64 = 1e-3;
        let t = 1.0 + 3.0 * delta;
        let (big, small) = ((1.0 + delta) / t, delta / t);
        let expect = big * (big / small).ln() + small * (small / big).ln();
        let got = von_neumann_relative_entropy(&a, &b, delta).unwrap();
        assert!((got - expect).abs() < 1e-12, "{got} vs {expect}");
    }

    #[test]
    fn auc_extremes_and_ties() {
        let perfect = roc_auc(&[0.1, 0.2], &[0.3, 0.4, 0.5]).unwrap();
        assert_eq!(perfect.auc, 1.0);
        assert_eq!(perfect.u_statistic, 6.0);
        assert_eq!(roc_auc(&[0.9], &[0.1, 0.2]).unwrap().auc, 0.0);
        let tied = roc_auc(&[0.5, 0.5], &[0.5]).unwrap();
        assert_eq!(tied.auc, 0.5);
        assert_eq!(tied.z_score, None);
        assert!(roc_auc(&[], &[1.0]).is_err());
        assert!(roc_auc(&[f64::NAN], &[1.0]).is_err());
    }

    #[test]
    fn moments_follow_the_documented_centring() {
        let z = mat![[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]];
        let m = text_moments(z.as_ref(), Preprocess::CenterL2).unwrap();
        // Mean of the unit rows (1,0), (0,1), (1,1)/sqrt2.
        let h = 0.5f64.sqrt();
        assert!((m.mean[0] - (1.0 + h) / 3.0).abs() < 1e-15);
        assert!((m.trace() - 1.0).abs() < 1e-15);
        assert!(text_moments(mat![[1.0, 2.0]].as_ref(), Preprocess::CenterL2).is_err());
        let other = text_moments(mat![[1.0, 2.0, 3.0]].as_ref(), Preprocess::L2).unwrap();
        assert!(frobenius(&m, &other).is_err());
        assert!(von_neumann_relative_entropy(&m, &m, 0.0).is_err());
    }
}
