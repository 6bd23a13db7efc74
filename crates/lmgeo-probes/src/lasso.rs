//! Lasso by cyclic coordinate descent (method.md section 4).
//!
//! Minimises `(1 / (2 n_samples)) ||y - X w||^2 + alpha ||w||_1` without an
//! intercept: scikit-learn's `Lasso(fit_intercept=False)` objective. In the
//! token setting the samples are the `d` hidden coordinates and the features
//! the context tokens (`X = C^T`, `y = z`); see [`lasso_tokens`].
//!
//! The iteration and its stopping rule follow scikit-learn's
//! `enet_coordinate_descent` so that, started from the same point with the
//! same `alpha` and `tol`, the iterates agree up to round-off:
//!
//! * internally the objective is scaled by `n_samples`:
//!   `0.5 ||y - X w||^2 + l1 ||w||_1` with `l1 = alpha n_samples`;
//! * one iteration is a sweep over the active features in index order;
//! * after a sweep whose largest coefficient change is at most
//!   `tol * max_j |w_j|` (or when every coefficient is zero, or at the last
//!   iteration) the duality gap is computed with the dual point
//!   `v = R min(1, l1 / ||X^T R||_inf)`; the fit stops once
//!   `gap <= tol ||y||^2`;
//! * gap-safe screening (Fercoq et al. 2015): after every gap check, features
//!   whose dual constraint is provably inactive are set to zero and skipped.
//!
//! With the Gram matrix `X^T X` (scikit-learn's `precompute=True` route) a
//! coordinate step costs `O(features)` instead of `O(samples)`, but forming
//! it costs about `features^2 samples / 2` multiply-adds up front. Which is
//! cheaper depends on the number of sweeps, unknown in advance, so
//! [`GramMode::Auto`] decides on the fly (see there).

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};

use crate::checks;
use crate::error::{ProbeError, Result};
use crate::kernels::{axpy, col_gram, dot, par, with_simd};

/// The paper's Lasso penalty.
pub const DEFAULT_ALPHA: f64 = 1e-4;

/// Whether to precompute the Gram matrix `X^T X`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GramMode {
    /// Start on the columns of `X`. When there are fewer features than
    /// samples and the sweeps so far have visited `features^2 / 8` active
    /// features in all (about the work of forming `X^T X` with a blocked
    /// product, which runs several times faster per multiply-add than the
    /// memory-bound sweeps), form `X^T X` and continue on it: a ski-rental
    /// rule that never pays much more than the better fixed choice. Along a
    /// [`lasso_path`] the count runs over the whole path, and the Gram
    /// matrix, once formed, serves every later penalty. The iterates are
    /// the same either way, up to round-off.
    #[default]
    Auto,
    /// Always precompute.
    Always,
    /// Never precompute (work on the columns of `X` and the residual).
    Never,
}

/// Settings of [`lasso`] and [`lasso_path`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LassoOptions {
    /// Penalty `alpha > 0` (ignored by [`lasso_path`], which takes a list).
    pub alpha: f64,
    /// Tolerance, scikit-learn's meaning: the coordinate-change test uses it
    /// as is, the duality gap is compared with `tol ||y||^2`.
    pub tol: f64,
    /// Cap on the number of sweeps.
    pub max_iter: usize,
    /// Whether to precompute `X^T X`.
    pub gram: GramMode,
    /// Gap-safe screening (scikit-learn >= 1.8 screens by default).
    pub screening: bool,
}

impl Default for LassoOptions {
    fn default() -> Self {
        Self {
            alpha: DEFAULT_ALPHA,
            tol: 1e-4,
            max_iter: 1000,
            gram: GramMode::Auto,
            screening: true,
        }
    }
}

/// The result of one Lasso fit.
#[derive(Debug, Clone, PartialEq)]
pub struct LassoFit {
    /// Coefficients, one per feature (context token).
    pub coef: Vec<f64>,
    /// The penalty used.
    pub alpha: f64,
    /// Number of sweeps run (0 when the starting point already satisfied
    /// the gap test), as scikit-learn's `n_iter_`.
    pub iterations: usize,
    /// Final duality gap in the scale of the documented objective (divided
    /// by `n_samples`), as scikit-learn's `dual_gap_`.
    pub dual_gap: f64,
    /// The gap threshold in the same scale: `tol ||y||^2 / n_samples`.
    pub gap_tolerance: f64,
    /// Whether the gap test passed before the iteration cap.
    pub converged: bool,
    /// Whether the Gram matrix was used.
    pub used_gram: bool,
}

/// Feature indices ordered by decreasing `|coef|`; equal magnitudes keep
/// index order. Errors on a non-finite coefficient.
///
/// Zero coefficients therefore come in index order: to rank context tokens
/// beyond the support use [`token_ranking`], which orders them by when they
/// would enter it.
pub fn rank_features(coef: &[f64]) -> Result<Vec<usize>> {
    checks::finite_vector("coefficients", coef)?;
    Ok(rank_by_magnitude(coef))
}

fn rank_by_magnitude(values: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    // Stable sort keeps index order among equal magnitudes.
    idx.sort_by(|&a, &b| values[b].abs().total_cmp(&values[a].abs()));
    idx
}

/// Context tokens in the order "top-k by Lasso" takes them: the non-zero
/// coefficients by decreasing `|beta_i|`, then the zero ones by decreasing
/// `|c_i . (z - C^T beta)|`.
///
/// A zero coefficient's residual correlation is what the penalty holds at
/// or below `d alpha`; the largest one is the token that enters the support
/// first as alpha decreases. Ranking zeros by it lets a top-k larger than
/// the support continue with the tokens the Lasso was closest to choosing,
/// instead of the earliest positions (which index order would give, and
/// which are exactly where attention sinks sit). Ties keep index order.
///
/// `context` is t x d, `new` has length d, `coef` length t. Errors on
/// mismatched shapes or non-finite values.
pub fn token_ranking(context: MatRef<'_, f64>, new: &[f64], coef: &[f64]) -> Result<Vec<usize>> {
    checks::context_and_token(context, new)?;
    checks::same_len("coefficients (= context rows)", context.nrows(), coef.len())?;
    checks::finite_vector("coefficients", coef)?;
    Ok(token_ranking_unchecked(context, new, coef))
}

pub(crate) fn token_ranking_unchecked(
    context: MatRef<'_, f64>,
    new: &[f64],
    coef: &[f64],
) -> Vec<usize> {
    let correlation = gradient_at(context.transpose(), new, coef);
    let mut idx: Vec<usize> = (0..coef.len()).collect();
    // Stable sort: among equals, index order.
    idx.sort_by(|&a, &b| match (coef[a] != 0.0, coef[b] != 0.0) {
        (true, true) => coef[b].abs().total_cmp(&coef[a].abs()),
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => correlation[b].abs().total_cmp(&correlation[a].abs()),
    });
    idx
}

/// The data of a Lasso problem, prepared once and reusable along a path.
struct Problem<'a> {
    /// Samples x features, column-major (columns contiguous).
    x: Mat<f64>,
    y: &'a [f64],
    col_norm2: Vec<f64>,
    y_norm2: f64,
    gram: Option<GramData>,
    mode: GramMode,
    /// Active features visited by plain-route sweeps so far (for `Auto`).
    plain_work: usize,
}

struct GramData {
    q: Mat<f64>,
    xty: Vec<f64>,
}

impl GramData {
    fn new(x: MatRef<'_, f64>, y: &[f64]) -> Self {
        let (n_samples, n_features) = (x.nrows(), x.ncols());
        let q = col_gram(x, 1.0);
        let mut xty = Mat::<f64>::zeros(n_features, 1);
        let yv = MatRef::from_column_major_slice(y, n_samples, 1);
        matmul(xty.as_mut(), Accum::Replace, x.transpose(), yv, 1.0, par());
        Self {
            q,
            xty: xty.col_as_slice(0).to_vec(),
        }
    }
}

impl<'a> Problem<'a> {
    fn new(x: MatRef<'_, f64>, y: &'a [f64], mode: GramMode) -> Result<Self> {
        checks::data_matrix("design matrix X", x)?;
        checks::same_len("y length (= rows of X)", x.nrows(), y.len())?;
        checks::finite_vector("y", y)?;
        let x = x.to_owned();
        let n_features = x.ncols();
        let col_norm2: Vec<f64> = (0..n_features)
            .map(|j| {
                let c = x.col_as_slice(j);
                dot(c, c)
            })
            .collect();
        let gram = (mode == GramMode::Always).then(|| GramData::new(x.as_ref(), y));
        Ok(Self {
            y_norm2: dot(y, y),
            x,
            y,
            col_norm2,
            gram,
            mode,
            plain_work: 0,
        })
    }

    /// Counts a plain sweep over `active` features and, under `Auto`, forms
    /// the Gram matrix once that work reaches the cost of forming it.
    /// Returns true when it did.
    fn account_plain_sweep(&mut self, active: usize) -> bool {
        if self.mode != GramMode::Auto
            || self.gram.is_some()
            || self.n_features() >= self.n_samples()
        {
            return false;
        }
        self.plain_work += active;
        let p = self.n_features();
        if self.plain_work < p * p / 8 {
            return false;
        }
        self.gram = Some(GramData::new(self.x.as_ref(), self.y));
        true
    }

    fn n_samples(&self) -> usize {
        self.x.nrows()
    }

    fn n_features(&self) -> usize {
        self.x.ncols()
    }
}

/// The running quantity each coordinate step reads: the residual
/// `R = y - X w` (plain route) or `Q w` (Gram route).
enum State {
    Residual(Vec<f64>),
    GramProduct(Vec<f64>),
}

impl State {
    fn new(p: &Problem<'_>, w: &[f64]) -> Self {
        let wv = MatRef::from_column_major_slice(w, w.len(), 1);
        match &p.gram {
            None => {
                let mut r = Mat::<f64>::zeros(p.n_samples(), 1);
                r.col_as_slice_mut(0).copy_from_slice(p.y);
                matmul(r.as_mut(), Accum::Add, p.x.as_ref(), wv, -1.0, par());
                State::Residual(r.col_as_slice(0).to_vec())
            }
            Some(g) => {
                let mut qw = Mat::<f64>::zeros(p.n_features(), 1);
                matmul(qw.as_mut(), Accum::Replace, g.q.as_ref(), wv, 1.0, par());
                State::GramProduct(qw.col_as_slice(0).to_vec())
            }
        }
    }

    /// `X_j^T (y - X w + w_j X_j)`, the unpenalised optimum of coordinate j
    /// times `|X_j|^2`.
    #[inline(always)]
    fn partial_correlation(&self, p: &Problem<'_>, j: usize, w_j: f64) -> f64 {
        match self {
            State::Residual(r) => dot(p.x.col_as_slice(j), r) + w_j * p.col_norm2[j],
            State::GramProduct(qw) => {
                let g = p.gram.as_ref().expect("Gram state implies Gram data");
                g.xty[j] - qw[j] + w_j * p.col_norm2[j]
            }
        }
    }

    /// Accounts for `w_j` having changed by `delta`.
    #[inline(always)]
    fn apply_change(&mut self, p: &Problem<'_>, j: usize, delta: f64) {
        match self {
            State::Residual(r) => axpy(-delta, p.x.col_as_slice(j), r),
            State::GramProduct(qw) => {
                let g = p.gram.as_ref().expect("Gram state implies Gram data");
                axpy(delta, g.q.col_as_slice(j), qw)
            }
        }
    }

    /// Duality gap of the `n_samples`-scaled problem and `||X^T R||_inf`;
    /// fills `xtr` with `X^T R`.
    fn gap(&self, p: &Problem<'_>, w: &[f64], l1: f64, xtr: &mut [f64]) -> (f64, f64) {
        let (r_norm2, r_dot_y) = match self {
            State::Residual(r) => {
                let rv = MatRef::from_column_major_slice(r, r.len(), 1);
                let out = faer::MatMut::from_column_major_slice_mut(xtr, p.n_features(), 1);
                matmul(out, Accum::Replace, p.x.transpose(), rv, 1.0, par());
                (dot(r, r), dot(r, p.y))
            }
            State::GramProduct(qw) => {
                let g = p.gram.as_ref().expect("Gram state implies Gram data");
                for ((o, q), a) in xtr.iter_mut().zip(&g.xty).zip(qw) {
                    *o = q - a;
                }
                let q_dot_w = dot(&g.xty, w);
                // |y - Xw|^2 expanded; loses accuracy only once the residual
                // is far below |y|, where the gap test has long passed.
                (p.y_norm2 + dot(w, qw) - 2.0 * q_dot_w, p.y_norm2 - q_dot_w)
            }
        };
        let dual_norm = xtr.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let w_l1: f64 = w.iter().map(|v| v.abs()).sum();
        let primal = 0.5 * r_norm2 + l1 * w_l1;
        let scale = if dual_norm > l1 { l1 / dual_norm } else { 1.0 };
        let dual = -0.5 * scale * scale * r_norm2 + scale * r_dot_y;
        (primal - dual, dual_norm)
    }
}

/// Gap-safe screening: features whose dual constraint cannot be active at
/// the optimum are zeroed and dropped from the sweep. `excluded` persists
/// between calls; `active` is rebuilt.
#[allow(clippy::too_many_arguments)]
fn screen(
    p: &Problem<'_>,
    state: &mut State,
    w: &mut [f64],
    l1: f64,
    gap: f64,
    dual_norm: f64,
    xtr: &[f64],
    excluded: &mut [bool],
    active: &mut Vec<usize>,
) {
    let radius = (2.0 * gap.abs()).sqrt() / l1;
    active.clear();
    for j in 0..p.n_features() {
        if excluded[j] {
            continue;
        }
        if p.col_norm2[j] == 0.0 {
            w[j] = 0.0;
            excluded[j] = true;
            continue;
        }
        let theta_j = xtr[j] / l1.max(dual_norm);
        let distance = (1.0 - theta_j.abs()) / p.col_norm2[j].sqrt();
        if distance <= radius {
            active.push(j);
        } else {
            if w[j] != 0.0 {
                state.apply_change(p, j, -w[j]);
                w[j] = 0.0;
            }
            excluded[j] = true;
        }
    }
}

fn validate_options(o: &LassoOptions, check_alpha: bool) -> Result<()> {
    if check_alpha {
        checks::positive("alpha", o.alpha)?;
    }
    if !(o.tol.is_finite() && o.tol >= 0.0) {
        return Err(ProbeError::InvalidParameter {
            name: "tol",
            value: o.tol,
            reason: "must be finite and >= 0",
        });
    }
    if o.max_iter == 0 {
        return Err(ProbeError::InvalidParameter {
            name: "max_iter",
            value: 0.0,
            reason: "must be at least 1",
        });
    }
    Ok(())
}

fn solve(p: &mut Problem<'_>, alpha: f64, o: &LassoOptions, w: Vec<f64>) -> LassoFit {
    with_simd(|| solve_impl(p, alpha, o, w))
}

#[inline(always)]
fn solve_impl(p: &mut Problem<'_>, alpha: f64, o: &LassoOptions, mut w: Vec<f64>) -> LassoFit {
    let n_samples = p.n_samples() as f64;
    let n_features = p.n_features();
    let l1 = alpha * n_samples;
    let gap_tol = o.tol * p.y_norm2;
    let mut state = State::new(p, &w);
    let mut xtr = vec![0.0; n_features];
    let mut excluded = vec![false; n_features];
    let mut active: Vec<usize> = (0..n_features).filter(|&j| p.col_norm2[j] != 0.0).collect();
    let finish = |w: Vec<f64>, iterations, gap: f64, converged, used_gram| LassoFit {
        coef: w,
        alpha,
        iterations,
        dual_gap: gap / n_samples,
        gap_tolerance: gap_tol / n_samples,
        converged,
        used_gram,
    };

    let (mut gap, mut dual_norm) = state.gap(p, &w, l1, &mut xtr);
    if gap <= gap_tol {
        return finish(w, 0, gap, true, p.gram.is_some());
    }
    if o.screening {
        screen(
            p,
            &mut state,
            &mut w,
            l1,
            gap,
            dual_norm,
            &xtr,
            &mut excluded,
            &mut active,
        );
    }
    for iteration in 0..o.max_iter {
        let mut w_max = 0.0f64;
        let mut change_max = 0.0f64;
        for &j in &active {
            let old = w[j];
            let rho = state.partial_correlation(p, j, old);
            let new = rho.signum() * (rho.abs() - l1).max(0.0) / p.col_norm2[j];
            if new != old {
                state.apply_change(p, j, new - old);
                w[j] = new;
            }
            change_max = change_max.max((new - old).abs());
            w_max = w_max.max(new.abs());
        }
        if matches!(state, State::Residual(_)) && p.account_plain_sweep(active.len()) {
            state = State::new(p, &w);
        }
        let last = iteration + 1 == o.max_iter;
        if w_max == 0.0 || change_max / w_max <= o.tol || last {
            (gap, dual_norm) = state.gap(p, &w, l1, &mut xtr);
            if gap <= gap_tol {
                return finish(w, iteration + 1, gap, true, p.gram.is_some());
            }
            if o.screening {
                screen(
                    p,
                    &mut state,
                    &mut w,
                    l1,
                    gap,
                    dual_norm,
                    &xtr,
                    &mut excluded,
                    &mut active,
                );
            }
        }
    }
    finish(w, o.max_iter, gap, false, p.gram.is_some())
}

/// Fits the Lasso on `x` (samples x features) and `y` (length samples),
/// starting from zero.
pub fn lasso(x: MatRef<'_, f64>, y: &[f64], options: &LassoOptions) -> Result<LassoFit> {
    validate_options(options, true)?;
    let mut p = Problem::new(x, y, options.gram)?;
    let start = vec![0.0; p.n_features()];
    Ok(solve(&mut p, options.alpha, options, start))
}

/// Like [`lasso`], starting from `initial` coefficients (a warm start).
pub fn lasso_warm_start(
    x: MatRef<'_, f64>,
    y: &[f64],
    initial: &[f64],
    options: &LassoOptions,
) -> Result<LassoFit> {
    validate_options(options, true)?;
    let mut p = Problem::new(x, y, options.gram)?;
    checks::same_len(
        "initial coefficients (= columns of X)",
        p.n_features(),
        initial.len(),
    )?;
    checks::finite_vector("initial coefficients", initial)?;
    Ok(solve(&mut p, options.alpha, options, initial.to_vec()))
}

/// Fits a decreasing sequence of penalties, each warm-started from the
/// previous solution; the Gram matrix (when used) is formed at most once.
/// `options.alpha` is ignored. Errors when `alphas` is empty, has a
/// non-positive value, or increases.
pub fn lasso_path(
    x: MatRef<'_, f64>,
    y: &[f64],
    alphas: &[f64],
    options: &LassoOptions,
) -> Result<Vec<LassoFit>> {
    validate_options(options, false)?;
    checks::data_vector("alphas", alphas)?;
    for &a in alphas {
        checks::positive("alpha", a)?;
    }
    if let Some(i) = alphas.windows(2).position(|w| w[1] > w[0]) {
        return Err(ProbeError::InvalidParameter {
            name: "alphas",
            value: alphas[i + 1],
            reason: "a warm-started path must not increase",
        });
    }
    let mut p = Problem::new(x, y, options.gram)?;
    let mut w = vec![0.0; p.n_features()];
    let mut fits = Vec::with_capacity(alphas.len());
    for &alpha in alphas {
        let fit = solve(&mut p, alpha, options, w);
        w = fit.coef.clone();
        fits.push(fit);
    }
    Ok(fits)
}

/// The smallest penalty whose solution is all zeros:
/// `max_j |X_j^T y| / n_samples`.
pub fn alpha_max(x: MatRef<'_, f64>, y: &[f64]) -> Result<f64> {
    checks::data_matrix("design matrix X", x)?;
    checks::same_len("y length (= rows of X)", x.nrows(), y.len())?;
    checks::finite_vector("y", y)?;
    let xty = gradient_at(x, y, &vec![0.0; x.ncols()]);
    Ok(xty.iter().fold(0.0f64, |m, v| m.max(v.abs())))
}

/// `X^T (y - X w) / n_samples`, the negative gradient of the smooth part.
fn gradient_at(x: MatRef<'_, f64>, y: &[f64], w: &[f64]) -> Vec<f64> {
    let (n, p) = (x.nrows(), x.ncols());
    let mut r = Mat::<f64>::zeros(n, 1);
    r.col_as_slice_mut(0).copy_from_slice(y);
    let wv = MatRef::from_column_major_slice(w, p, 1);
    matmul(r.as_mut(), Accum::Add, x, wv, -1.0, par());
    let mut g = Mat::<f64>::zeros(p, 1);
    matmul(
        g.as_mut(),
        Accum::Replace,
        x.transpose(),
        r.as_ref(),
        1.0 / n as f64,
        par(),
    );
    g.col_as_slice(0).to_vec()
}

/// Largest violation of the Lasso optimality (KKT) conditions at `coef`:
/// with `g = X^T (y - X w) / n_samples`, a non-zero `w_j` needs
/// `g_j = alpha sign(w_j)` and a zero one `|g_j| <= alpha`. Returns
/// `max_j` of `|g_j - alpha sign(w_j)|` resp. `max(0, |g_j| - alpha)`.
pub fn kkt_violation(x: MatRef<'_, f64>, y: &[f64], coef: &[f64], alpha: f64) -> Result<f64> {
    checks::data_matrix("design matrix X", x)?;
    checks::same_len("y length (= rows of X)", x.nrows(), y.len())?;
    checks::same_len("coefficients (= columns of X)", x.ncols(), coef.len())?;
    checks::finite_vector("y", y)?;
    checks::finite_vector("coefficients", coef)?;
    checks::positive("alpha", alpha)?;
    let g = gradient_at(x, y, coef);
    Ok(g.iter()
        .zip(coef)
        .map(|(&gj, &wj)| {
            if wj != 0.0 {
                (gj - alpha * wj.signum()).abs()
            } else {
                (gj.abs() - alpha).max(0.0)
            }
        })
        .fold(0.0, f64::max))
}

/// The token setting: regress `new` (length d) on the context rows
/// (t x d), i.e. [`lasso`] with `X = C^T` (d samples, t features).
pub fn lasso_tokens(
    context: MatRef<'_, f64>,
    new: &[f64],
    options: &LassoOptions,
) -> Result<LassoFit> {
    lasso(context.transpose(), new, options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::mat;

    #[test]
    fn orthonormal_design_soft_thresholds() {
        // X = sqrt(n) I: the objective separates, w_j = soft(x_j^T y / n, alpha) per coordinate.
        let n = 4.0f64;
        let x = Mat::<f64>::from_fn(4, 4, |i, j| if i == j { n.sqrt() } else { 0.0 });
        let y = [1.0, -0.1, 0.5, 0.0];
        for gram in [GramMode::Never, GramMode::Always] {
            let o = LassoOptions {
                alpha: 0.1,
                gram,
                ..Default::default()
            };
            let fit = lasso(x.as_ref(), &y, &o).unwrap();
            for (j, &yj) in y.iter().enumerate() {
                let c = yj * n.sqrt() / n;
                let expect = c.signum() * (c.abs() - 0.1).max(0.0) / 1.0;
                assert!((fit.coef[j] - expect).abs() < 1e-15, "{gram:?} {j}");
            }
            assert!(fit.converged);
        }
    }

    #[test]
    fn large_alpha_gives_zero_at_once() {
        let x = mat![[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]];
        let y = [1.0, 2.0, 3.0];
        let amax = alpha_max(x.as_ref(), &y).unwrap();
        let o = LassoOptions {
            alpha: amax * 1.0001,
            ..Default::default()
        };
        let fit = lasso(x.as_ref(), &y, &o).unwrap();
        assert_eq!(fit.coef, vec![0.0, 0.0]);
        assert!(fit.converged);
        // Just below alpha_max one coefficient moves.
        let o = LassoOptions {
            alpha: amax * 0.9,
            tol: 1e-12,
            ..Default::default()
        };
        let fit = lasso(x.as_ref(), &y, &o).unwrap();
        assert_eq!(fit.coef.iter().filter(|c| **c != 0.0).count(), 1);
        assert!(kkt_violation(x.as_ref(), &y, &fit.coef, o.alpha).unwrap() < 1e-10);
    }

    #[test]
    fn zero_target_and_zero_column() {
        let x = mat![[1.0, 0.0], [2.0, 0.0]];
        let zero = lasso(x.as_ref(), &[0.0, 0.0], &LassoOptions::default()).unwrap();
        assert_eq!(zero.coef, vec![0.0, 0.0]);
        assert_eq!(zero.iterations, 0);
        let fit = lasso(x.as_ref(), &[1.0, 2.0], &LassoOptions::default()).unwrap();
        assert_eq!(fit.coef[1], 0.0);
        assert!(fit.coef[0] > 0.99);
    }

    #[test]
    fn iteration_cap_reports_non_convergence() {
        let x = mat![[1.0, 0.999], [1.0, 1.001], [1.0, 1.0]];
        let o = LassoOptions {
            alpha: 1e-6,
            tol: 1e-14,
            max_iter: 3,
            ..Default::default()
        };
        let fit = lasso(x.as_ref(), &[1.0, 2.0, 1.5], &o).unwrap();
        assert!(!fit.converged);
        assert_eq!(fit.iterations, 3);
        assert!(fit.dual_gap > fit.gap_tolerance);
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let x = mat![[1.0, 2.0], [3.0, 4.0]];
        let y = [1.0, 2.0];
        let bad = |o: LassoOptions| lasso(x.as_ref(), &y, &o).is_err();
        assert!(bad(LassoOptions {
            alpha: 0.0,
            ..Default::default()
        }));
        assert!(bad(LassoOptions {
            tol: f64::NAN,
            ..Default::default()
        }));
        assert!(bad(LassoOptions {
            max_iter: 0,
            ..Default::default()
        }));
        assert!(matches!(
            lasso(x.as_ref(), &[1.0], &LassoOptions::default()),
            Err(ProbeError::SizeMismatch { .. })
        ));
        assert!(matches!(
            lasso(x.as_ref(), &[1.0, f64::INFINITY], &LassoOptions::default()),
            Err(ProbeError::NonFinite { .. })
        ));
        let o = LassoOptions::default();
        assert!(lasso_path(x.as_ref(), &y, &[0.1, 0.2], &o).is_err());
        assert!(lasso_path(x.as_ref(), &y, &[], &o).is_err());
        assert!(rank_features(&[1.0, f64::NAN]).is_err());
    }

    #[test]
    fn auto_switches_to_the_gram_route_mid_fit_without_changing_the_iterates() {
        // 40 samples, 8 correlated features: sweeps visit 8 features each,
        // so the Gram matrix is formed after the first sweep (8^2 / 8 = 8).
        let x = Mat::<f64>::from_fn(40, 8, |i, j| {
            ((i * 7 + j * 3) % 11) as f64 / 11.0 + 0.3 * ((i + j) % 2) as f64
        });
        let y: Vec<f64> = (0..40).map(|i| ((i * 5) % 13) as f64 / 13.0).collect();
        let opts = |gram| LassoOptions {
            alpha: 1e-3,
            tol: 1e-12,
            max_iter: 100_000,
            gram,
            screening: true,
        };
        let auto = lasso(x.as_ref(), &y, &opts(GramMode::Auto)).unwrap();
        let plain = lasso(x.as_ref(), &y, &opts(GramMode::Never)).unwrap();
        assert!(auto.used_gram && !plain.used_gram);
        assert!(auto.iterations > 1 && auto.converged);
        assert_eq!(auto.iterations, plain.iterations);
        for (a, b) in auto.coef.iter().zip(&plain.coef) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        // More features than samples: Auto never forms X^T X.
        let wide = x.transpose().to_owned();
        let y8 = &y[..8];
        assert!(
            !lasso(wide.as_ref(), y8, &opts(GramMode::Auto))
                .unwrap()
                .used_gram
        );
    }

    #[test]
    fn ranking_breaks_ties_by_index() {
        assert_eq!(
            rank_features(&[0.5, -2.0, 0.0, 2.0, -0.5]).unwrap(),
            vec![1, 3, 0, 4, 2]
        );
    }

    /// With orthonormal context rows the Lasso is a soft threshold,
    /// `beta_i = soft(c_i . z, d alpha)`, so a zero coefficient's token enters
    /// the support at `alpha = |c_i . z| / d`: the zeros must follow
    /// decreasing `|c_i . z|`, whatever their positions.
    #[test]
    fn zero_coefficients_rank_by_when_they_would_enter() {
        let d = 8;
        // Rows e_0..e_5 of the identity, scaled copies of z's coordinates.
        let z = [0.05, 0.9, 0.2, 0.01, 0.6, 0.3, 0.0, 0.0];
        let context = Mat::from_fn(6, d, |i, j| f64::from(u8::from(i == j)));
        let alpha = 0.5 / d as f64; // keeps 0.9 and 0.6 only
        let fit = lasso_tokens(
            context.as_ref(),
            &z,
            &LassoOptions {
                alpha,
                tol: 1e-12,
                ..LassoOptions::default()
            },
        )
        .unwrap();
        let support: Vec<usize> = (0..6).filter(|&i| fit.coef[i] != 0.0).collect();
        assert_eq!(support, vec![1, 4]);
        let order = token_ranking(context.as_ref(), &z, &fit.coef).unwrap();
        // Support by |beta| (0.9 > 0.6), then zeros by |z_i|: 0.3, 0.2,
        // 0.05, 0.01 -- not index order 0, 2, 3, 5.
        assert_eq!(order, vec![1, 4, 5, 2, 0, 3]);
        // And each of those zeros enters exactly where predicted: just
        // below |z_i| / d it is non-zero, just above it is not.
        for &i in &order[2..] {
            let enter = z[i] / d as f64;
            for (scale, nonzero) in [(0.99, true), (1.01, false)] {
                let fit = lasso_tokens(
                    context.as_ref(),
                    &z,
                    &LassoOptions {
                        alpha: enter * scale,
                        tol: 1e-12,
                        ..LassoOptions::default()
                    },
                )
                .unwrap();
                assert_eq!(fit.coef[i] != 0.0, nonzero, "token {i} at {scale} x");
            }
        }
    }
}
