//! Information gain of a new token (method.md section 3).
//!
//! A Gaussian process with the linear kernel `k(x, y) = x^T y` and noise
//! `sigma` is conditioned on the context rows `C` (t x d). Its posterior
//! variance at the new token `z` is
//!
//! ```text
//! s^2 = z^T z - k^T (K + sigma^2 I)^-1 k,   K = C C^T,  k = C z,
//! ```
//!
//! and the information gain is `IG = 0.5 ln(1 + s^2 / sigma^2)`. The same
//! number is the optimum of ridge regression of `z` on the context,
//! `min_beta ||z - C^T beta||^2 + sigma^2 ||beta||^2
//!  = sigma^2 z^T (C^T C + sigma^2 I)^-1 z`. Both routes are computed so
//! that their agreement can be checked on real data.
//!
//! # The preprocessing trap
//!
//! Do not centre with the mean of the whole sequence before this analysis.
//! After subtracting the mean of all `n` rows the rows sum to zero, so the
//! last row is exactly minus the sum of the others: it lies in the span of
//! its context and `s^2` collapses to a value of order
//! `sigma^2 sum_i (|c_i| / |c_n|)^2` set by the noise, whatever the model.
//! Use `Preprocess::L2` (unit rows, no centring, the default for sections
//! 3-5) or centre with the context's own mean only
//! ([`center_l2_against_context`]). The test
//! `full_sequence_centring_collapses_the_last_token` demonstrates the
//! collapse.

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::{Accum, Mat, MatRef, Side};

use crate::checks;
use crate::error::{ProbeError, Result};
use crate::kernels::{col_gram, dot, par, robust_norm, row_gram, with_simd};

/// The paper's GP noise.
pub const DEFAULT_SIGMA: f64 = 0.01;

/// Posterior variance and information gain of one new token.
#[derive(Debug, Clone, PartialEq)]
pub struct GainReport {
    /// Number of context tokens `t`.
    pub context_tokens: usize,
    /// Hidden size `d`.
    pub d: usize,
    /// GP noise.
    pub sigma: f64,
    /// `s^2` by the kernel formula `z^T z - k^T (K + sigma^2 I)^-1 k`
    /// (t x t Cholesky). Loses relative accuracy when `s^2 << z^T z`
    /// because of the subtraction.
    pub s2_gp: f64,
    /// `s^2` by the ridge route on the smaller side: for `t <= d` the ridge
    /// optimum `||z - C^T beta||^2 + sigma^2 ||beta||^2` evaluated at
    /// `beta = (K + sigma^2 I)^-1 k` (a sum of squares, no cancellation);
    /// for `t > d`, `sigma^2 z^T (C^T C + sigma^2 I)^-1 z` (d x d Cholesky).
    pub s2_ridge: f64,
    /// `|s2_gp - s2_ridge| / max(|s2_gp|, |s2_ridge|)` (0 when both are 0).
    pub relative_difference: f64,
    /// `0.5 ln(1 + s2_ridge / sigma^2)` (nats).
    pub information_gain: f64,
}

fn validate(context: MatRef<'_, f64>, new: &[f64], sigma: f64) -> Result<()> {
    checks::positive("sigma", sigma)?;
    checks::context_and_token(context, new)
}

fn cholesky_failure(what: &str) -> ProbeError {
    ProbeError::Numerical(format!(
        "{what} + sigma^2 I is not numerically positive definite: sigma^2 is below the \
         round-off of the Gram matrix; use a larger sigma or normalised rows"
    ))
}

/// Information gain of `new` (length d) given the rows of `context` (t x d).
pub fn information_gain(context: MatRef<'_, f64>, new: &[f64], sigma: f64) -> Result<GainReport> {
    validate(context, new, sigma)?;
    let (t, d) = (context.nrows(), context.ncols());
    let sigma2 = sigma * sigma;
    let z = MatRef::from_column_major_slice(new, d, 1);

    let mut k = Mat::<f64>::zeros(t, 1);
    matmul(k.as_mut(), Accum::Replace, context, z, 1.0, par());
    let mut kernel = row_gram(context, 1.0);
    for i in 0..t {
        kernel[(i, i)] += sigma2;
    }
    let llt = kernel
        .llt(Side::Lower)
        .map_err(|_| cholesky_failure("C C^T"))?;
    let mut half_solved = k.clone();
    llt.L()
        .solve_lower_triangular_in_place(half_solved.as_mut());
    let zz = dot(new, new);
    let s2_gp = zz - half_solved.squared_norm_l2();

    let s2_ridge = if t <= d {
        let beta = llt.solve(k.as_ref());
        let mut residual = z.to_owned();
        matmul(
            residual.as_mut(),
            Accum::Add,
            context.transpose(),
            beta.as_ref(),
            -1.0,
            par(),
        );
        residual.squared_norm_l2() + sigma2 * beta.squared_norm_l2()
    } else {
        ridge_variance_dense_unchecked(context, new, sigma)?
    };
    let scale = s2_gp.abs().max(s2_ridge.abs());
    let relative_difference = if scale == 0.0 {
        0.0
    } else {
        (s2_gp - s2_ridge).abs() / scale
    };
    Ok(GainReport {
        context_tokens: t,
        d,
        sigma,
        s2_gp,
        s2_ridge,
        relative_difference,
        information_gain: gain_from_variance(s2_ridge, sigma2),
    })
}

/// The literal d x d ridge route, `sigma^2 z^T (C^T C + sigma^2 I_d)^-1 z`,
/// whatever the shape; costs `O(t d^2 + d^3)`. Kept as an independent check
/// of [`information_gain`].
pub fn ridge_variance_dense(context: MatRef<'_, f64>, new: &[f64], sigma: f64) -> Result<f64> {
    validate(context, new, sigma)?;
    ridge_variance_dense_unchecked(context, new, sigma)
}

fn ridge_variance_dense_unchecked(
    context: MatRef<'_, f64>,
    new: &[f64],
    sigma: f64,
) -> Result<f64> {
    let d = context.ncols();
    let sigma2 = sigma * sigma;
    let mut a = col_gram(context, 1.0);
    for i in 0..d {
        a[(i, i)] += sigma2;
    }
    let llt = a.llt(Side::Lower).map_err(|_| cholesky_failure("C^T C"))?;
    let z = MatRef::from_column_major_slice(new, d, 1);
    let w = llt.solve(z);
    Ok(sigma2 * dot(new, w.col_as_slice(0)))
}

/// `0.5 ln(1 + s^2 / sigma^2)`; a round-off-negative `s^2` counts as zero.
fn gain_from_variance(s2: f64, sigma2: f64) -> f64 {
    0.5 * (s2.max(0.0) / sigma2).ln_1p()
}

/// Information gain of every token against its prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct GainCurve {
    /// GP noise.
    pub sigma: f64,
    /// `s2[t - 1]` is the posterior variance of row `t` given rows `0..t`,
    /// for `t = 1..n`.
    pub s2: Vec<f64>,
    /// `information_gain[t - 1] = 0.5 ln(1 + s2[t - 1] / sigma^2)`.
    pub information_gain: Vec<f64>,
}

impl GainCurve {
    /// The positions `t` the entries refer to (1, 2, ..., n - 1).
    pub fn positions(&self) -> std::ops::RangeInclusive<usize> {
        1..=self.s2.len()
    }
}

/// Posterior variance and information gain of each row `t = 1..n` of `z`
/// against rows `0..t`.
///
/// Incremental: the Gram matrix `G = Z Z^T` is formed once, and the Cholesky
/// factor of `G[..t, ..t] + sigma^2 I` grows by one row per step. The new
/// row is `y = L_t^-1 G[..t, t]`, and its diagonal entry is
/// `sqrt(G[t, t] + sigma^2 - |y|^2) = sqrt(s2_t + sigma^2)`: the factor
/// update is the posterior variance. Cost `O(n^2 d + n^3 / 3)` in all,
/// instead of one `O(t^3)` solve per position.
///
/// Accuracy: `s2_t = G[t, t] - |y|^2` is a subtraction, so its absolute
/// round-off is of order `f64::EPSILON * z_t^T z_t`; a token that its prefix
/// explains almost completely (`s2_t << z_t^T z_t`, e.g. `t > d`) has a
/// correspondingly smaller relative accuracy. On the golden fixtures (unit
/// rows, sigma 0.01 and 0.1) the worst relative error against numpy's
/// least-squares solution was 1.1e-11.
pub fn gain_curve(z: MatRef<'_, f64>, sigma: f64) -> Result<GainCurve> {
    checks::positive("sigma", sigma)?;
    checks::data_matrix("representation matrix", z)?;
    let n = z.nrows();
    if n < 2 {
        return Err(ProbeError::Degenerate(
            "a gain curve needs at least 2 tokens (the first has no context)".into(),
        ));
    }
    let sigma2 = sigma * sigma;
    let gram = row_gram(z, 1.0);
    // Row-major lower factor: row i is contiguous, so the forward
    // substitution below is a sequence of contiguous dot products.
    let mut factor = vec![0.0; n * n];
    factor[0] = (gram[(0, 0)] + sigma2).sqrt();
    let s2 = with_simd(|| grow_factor(&gram, &mut factor, sigma2))?;
    let information_gain = s2.iter().map(|&v| gain_from_variance(v, sigma2)).collect();
    Ok(GainCurve {
        sigma,
        s2,
        information_gain,
    })
}

/// The loop of [`gain_curve`]: extends the row-major factor one row per
/// token and returns the posterior variances.
#[inline(always)]
fn grow_factor(gram: &Mat<f64>, factor: &mut [f64], sigma2: f64) -> Result<Vec<f64>> {
    let n = gram.nrows();
    let mut s2 = Vec::with_capacity(n - 1);
    let mut solved = vec![0.0; n];
    for t in 1..n {
        let cross = gram.col_as_slice(t);
        for i in 0..t {
            let row = &factor[i * n..i * n + i];
            solved[i] = (cross[i] - dot(row, &solved[..i])) / factor[i * n + i];
        }
        let explained = dot(&solved[..t], &solved[..t]);
        let variance = gram[(t, t)] - explained;
        let pivot = variance + sigma2;
        if pivot.is_nan() || pivot <= 0.0 {
            return Err(cholesky_failure("the prefix Gram matrix"));
        }
        factor[t * n..t * n + t].copy_from_slice(&solved[..t]);
        factor[t * n + t] = pivot.sqrt();
        s2.push(variance);
    }
    Ok(s2)
}

/// Centres the context and the new token with the context's own mean, then
/// scales every row to unit norm: the centring that avoids the trap of the
/// module docs. Errors when a centred row is zero (e.g. a one-token context).
pub fn center_l2_against_context(
    context: MatRef<'_, f64>,
    new: &[f64],
) -> Result<(Mat<f64>, Vec<f64>)> {
    checks::data_matrix("context", context)?;
    checks::same_len(
        "new token length (= context columns)",
        context.ncols(),
        new.len(),
    )?;
    checks::finite_vector("new token", new)?;
    let (t, d) = (context.nrows(), context.ncols());
    let mean: Vec<f64> = (0..d)
        .map(|j| (0..t).map(|i| context[(i, j)]).sum::<f64>() / t as f64)
        .collect();
    let largest = (0..t)
        .map(|i| robust_norm((0..d).map(|j| context[(i, j)])))
        .fold(robust_norm(new.iter().copied()), f64::max);
    let threshold = crate::preprocess::CENTRED_ZERO_ROW_TOLERANCE * largest;
    let mut centred = Mat::from_fn(t, d, |i, j| context[(i, j)] - mean[j]);
    for i in 0..t {
        let norm = robust_norm((0..d).map(|j| centred[(i, j)]));
        if norm <= threshold {
            return Err(ProbeError::ZeroRow {
                row: i,
                after_centring: true,
            });
        }
        for j in 0..d {
            centred[(i, j)] /= norm;
        }
    }
    let mut z: Vec<f64> = new.iter().zip(&mean).map(|(a, m)| a - m).collect();
    let norm = robust_norm(z.iter().copied());
    if norm <= threshold {
        return Err(ProbeError::ZeroRow {
            row: t,
            after_centring: true,
        });
    }
    z.iter_mut().for_each(|x| *x /= norm);
    Ok((centred, z))
}

/// The trap of the module docs, measured: with every row of `z` (the
/// context, then the new token as its last row) centred with the mean of
/// all rows, the new token is minus the sum of the others, so its posterior
/// variance cannot exceed the ridge objective at that exact combination,
/// `sigma^2 sum_i (|c_i| / |c_last|)^2` over the context rows `c_i`. Norms
/// are of the centred rows before any scaling. Errors for fewer than two
/// rows and for a new token equal to the mean (a zero centred row).
pub fn centring_trap_bound(z: MatRef<'_, f64>, sigma: f64) -> Result<f64> {
    checks::data_matrix("context and new token", z)?;
    checks::positive("sigma", sigma)?;
    if z.nrows() < 2 {
        return Err(ProbeError::Degenerate(
            "the centring bound needs a context of at least one token".into(),
        ));
    }
    let means: Vec<f64> = (0..z.ncols())
        .map(|j| (0..z.nrows()).map(|i| z[(i, j)]).sum::<f64>() / z.nrows() as f64)
        .collect();
    let norm = |i: usize| -> f64 {
        (0..z.ncols())
            .map(|j| (z[(i, j)] - means[j]).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let position = z.nrows() - 1;
    let last = norm(position);
    if last == 0.0 {
        return Err(ProbeError::ZeroRow {
            row: position,
            after_centring: true,
        });
    }
    checks::finite_output(
        "centring bound",
        sigma * sigma * (0..position).map(|i| (norm(i) / last).powi(2)).sum::<f64>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::{Preprocess, preprocess};
    use faer::mat;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    #[test]
    fn centring_trap_bound_matches_a_closed_form() {
        // Rows (0, 0), (2, 0) and (4, 0): mean (2, 0), centred norms 2, 0, 2.
        // Bound: sigma^2 ((2/2)^2 + (0/2)^2) = sigma^2.
        let z = mat![[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]];
        let bound = centring_trap_bound(z.as_ref(), 0.5).unwrap();
        assert!((bound - 0.25).abs() < 1e-15);
        // The variance under full centring never exceeds it.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let z = Mat::from_fn(6, 4, |_, _| StandardNormal.sample(&mut rng));
        let bound = centring_trap_bound(z.as_ref(), 0.1).unwrap();
        let all = preprocess(z.as_ref(), Preprocess::CenterL2).unwrap();
        let context = Mat::from_fn(5, 4, |i, j| all[(i, j)]);
        let new: Vec<f64> = (0..4).map(|j| all[(5, j)]).collect();
        let report = information_gain(context.as_ref(), &new, 0.1).unwrap();
        assert!(report.s2_ridge <= bound * (1.0 + 1e-9));
        let one = mat![[1.0, 2.0]];
        assert!(centring_trap_bound(one.as_ref(), 0.1).is_err());
        let flat = mat![[1.0, 2.0], [1.0, 2.0]];
        assert!(matches!(
            centring_trap_bound(flat.as_ref(), 0.1),
            Err(ProbeError::ZeroRow { row: 1, .. })
        ));
    }

    fn gaussian(n: usize, d: usize, seed: u64) -> Mat<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Mat::from_fn(n, d, |_, _| StandardNormal.sample(&mut rng))
    }

    #[test]
    fn orthogonal_token_keeps_its_prior_variance() {
        // z is orthogonal to the context: s^2 = z^T z exactly.
        let c = mat![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let r = information_gain(c.as_ref(), &[0.0, 0.0, 2.0], 0.01).unwrap();
        assert!((r.s2_gp - 4.0).abs() < 1e-15 && (r.s2_ridge - 4.0).abs() < 1e-15);
        assert!((r.information_gain - 0.5 * (4.0f64 / 1e-4).ln_1p()).abs() < 1e-12);
    }

    #[test]
    fn repeated_token_has_one_dimensional_closed_form() {
        // Context = {z}: s^2 = |z|^2 sigma^2 / (|z|^2 + sigma^2).
        let z = [0.6, 0.8];
        let c = mat![[0.6, 0.8]];
        let sigma: f64 = 0.1;
        let expect = sigma * sigma / (1.0 + sigma * sigma);
        let r = information_gain(c.as_ref(), &z, sigma).unwrap();
        assert!((r.s2_gp - expect).abs() < 1e-15 && (r.s2_ridge - expect).abs() < 1e-15);
    }

    #[test]
    fn tall_context_uses_the_covariance_side() {
        let c = gaussian(9, 4, 1);
        let z = [0.3, -1.0, 0.2, 0.5];
        let r = information_gain(c.as_ref(), &z, 0.5).unwrap();
        let dense = ridge_variance_dense(c.as_ref(), &z, 0.5).unwrap();
        assert_eq!(r.s2_ridge, dense);
        assert!(r.relative_difference < 1e-12, "{r:?}");
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let c = mat![[1.0, 0.0]];
        assert!(matches!(
            information_gain(c.as_ref(), &[1.0], 0.01),
            Err(ProbeError::SizeMismatch { .. })
        ));
        assert!(matches!(
            information_gain(c.as_ref(), &[1.0, f64::NAN], 0.01),
            Err(ProbeError::NonFinite { .. })
        ));
        assert!(matches!(
            information_gain(c.as_ref(), &[1.0, 0.0], 0.0),
            Err(ProbeError::InvalidParameter { .. })
        ));
        assert!(matches!(
            gain_curve(c.as_ref(), 0.01),
            Err(ProbeError::Degenerate(_))
        ));
        let empty = Mat::<f64>::zeros(0, 2);
        assert!(matches!(
            information_gain(empty.as_ref(), &[1.0, 0.0], 0.01),
            Err(ProbeError::Empty { .. })
        ));
        // sigma^2 far below the round-off of a huge Gram matrix.
        let huge = mat![[1e10, 0.0], [1e10, 0.0]];
        assert!(matches!(
            information_gain(huge.as_ref(), &[1.0, 0.0], 1e-8),
            Err(ProbeError::Numerical(_))
        ));
    }

    #[test]
    fn curve_matches_one_solve_per_position() {
        let z = preprocess(gaussian(12, 7, 2).as_ref(), Preprocess::L2).unwrap();
        let curve = gain_curve(z.as_ref(), 0.05).unwrap();
        assert_eq!(
            curve.positions().collect::<Vec<_>>(),
            (1..12).collect::<Vec<_>>()
        );
        for t in 1..12 {
            let row: Vec<f64> = (0..7).map(|j| z[(t, j)]).collect();
            let single = information_gain(z.as_ref().subrows(0, t), &row, 0.05).unwrap();
            let err = (curve.s2[t - 1] - single.s2_ridge).abs();
            // Cancellation model: the incremental value is z^T z - |y|^2.
            assert!(err <= 1e-13 + 1e-10 * single.s2_ridge, "t = {t}: {err}");
            let ig_err = (curve.information_gain[t - 1] - single.information_gain).abs();
            assert!(ig_err < 1e-9, "t = {t}: {ig_err}");
        }
    }

    #[test]
    fn full_sequence_centring_collapses_the_last_token() {
        let (n, d, sigma) = (10, 64, DEFAULT_SIGMA);
        let raw = gaussian(n, d, 3);
        let last = |m: &Mat<f64>| (0..d).map(|j| m[(n - 1, j)]).collect::<Vec<_>>();

        // Trap: rows centred over all n tokens sum to zero before scaling, so
        // z = -sum_i (|c_i| / |c_z|) c^_i and s^2 <= sigma^2 sum_i (|c_i| / |c_z|)^2.
        let trapped = preprocess(raw.as_ref(), Preprocess::CenterL2).unwrap();
        let r =
            information_gain(trapped.as_ref().subrows(0, n - 1), &last(&trapped), sigma).unwrap();
        let mean: Vec<f64> = (0..d)
            .map(|j| (0..n).map(|i| raw[(i, j)]).sum::<f64>() / n as f64)
            .collect();
        let centred_norm = |i: usize| robust_norm((0..d).map(|j| raw[(i, j)] - mean[j]));
        let bound: f64 = (0..n - 1)
            .map(|i| (centred_norm(i) / centred_norm(n - 1)).powi(2))
            .sum::<f64>()
            * sigma
            * sigma;
        assert!(
            r.s2_ridge <= bound * (1.0 + 1e-9),
            "{} > {bound}",
            r.s2_ridge
        );
        assert!(r.s2_ridge < 1e-2);

        // l2 only: 9 random directions in 64 dimensions leave most of z unexplained.
        let unit = preprocess(raw.as_ref(), Preprocess::L2).unwrap();
        let ok = information_gain(unit.as_ref().subrows(0, n - 1), &last(&unit), sigma).unwrap();
        assert!(ok.s2_ridge > 0.5, "{}", ok.s2_ridge);
        assert!(ok.information_gain > r.information_gain + 2.0);

        // Centring with the context's own mean does not collapse either.
        let (ctx, z) = center_l2_against_context(
            raw.as_ref().subrows(0, n - 1),
            &(0..d).map(|j| raw[(n - 1, j)]).collect::<Vec<_>>(),
        )
        .unwrap();
        let own = information_gain(ctx.as_ref(), &z, sigma).unwrap();
        assert!(own.s2_ridge > 0.5, "{}", own.s2_ridge);
    }
}
