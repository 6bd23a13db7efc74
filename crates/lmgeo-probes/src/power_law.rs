//! Power laws `y = a x^b` against model size (method.md section 2).
//!
//! The fit is ordinary least squares of `ln y` on `ln x`. The bootstrap
//! resamples texts within each model (with replacement), refits on the
//! resampled means and reports a percentile interval for the exponent.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

pub use crate::bootstrap::{BootstrapOptions, Interval, quantile};
use crate::checks;
use crate::error::{ProbeError, Result};

/// Least-squares power law in log-log space.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerLawFit {
    /// Prefactor `a = exp(intercept)`.
    pub a: f64,
    /// Exponent `b` (slope in log-log space).
    pub b: f64,
    /// Intercept `ln a`.
    pub log_a: f64,
    /// Coefficient of determination of the log-log fit. When every `y` is
    /// equal the fit is exact and this is set to 1.
    pub r_squared: f64,
    /// Standard error of `ln a`; `None` with two points (no residual degrees
    /// of freedom).
    pub log_a_std_err: Option<f64>,
    /// Standard error of `b`; `None` with two points.
    pub b_std_err: Option<f64>,
    /// Number of points fitted.
    pub points: usize,
}

impl PowerLawFit {
    /// `a x^b`.
    pub fn predict(&self, x: f64) -> f64 {
        self.a * x.powf(self.b)
    }
}

fn positive_finite(what: &'static str, v: &[f64]) -> Result<()> {
    checks::finite_vector(what, v)?;
    if let Some(i) = v.iter().position(|&x| x <= 0.0) {
        return Err(ProbeError::InvalidParameter {
            name: what,
            value: v[i],
            reason: "a power law needs strictly positive values (it is fitted on logarithms)",
        });
    }
    Ok(())
}

/// Fits `y = a x^b` by least squares on `(ln x, ln y)`.
///
/// Errors: lengths differ, a value is non-positive or non-finite, or fewer
/// than two distinct `x`.
pub fn fit(x: &[f64], y: &[f64]) -> Result<PowerLawFit> {
    checks::same_len("y values (one per x)", x.len(), y.len())?;
    positive_finite("x", x)?;
    positive_finite("y", y)?;
    let lx: Vec<f64> = x.iter().map(|v| v.ln()).collect();
    let ly: Vec<f64> = y.iter().map(|v| v.ln()).collect();
    fit_logs(&lx, &ly)
}

fn fit_logs(lx: &[f64], ly: &[f64]) -> Result<PowerLawFit> {
    let m = lx.len();
    let distinct = {
        let mut s = lx.to_vec();
        s.sort_by(f64::total_cmp);
        s.dedup();
        s.len()
    };
    if distinct < 2 {
        return Err(ProbeError::Degenerate(format!(
            "a power law needs at least 2 distinct x, got {distinct}"
        )));
    }
    let mf = m as f64;
    let mean_x = lx.iter().sum::<f64>() / mf;
    let mean_y = ly.iter().sum::<f64>() / mf;
    // Centred sums avoid the cancellation of the textbook sum-of-products form.
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (&u, &v) in lx.iter().zip(ly) {
        let (du, dv) = (u - mean_x, v - mean_y);
        sxx += du * du;
        sxy += du * dv;
        syy += dv * dv;
    }
    let b = sxy / sxx;
    let log_a = mean_y - b * mean_x;
    let ssr: f64 = lx
        .iter()
        .zip(ly)
        .map(|(&u, &v)| {
            let r = v - (log_a + b * u);
            r * r
        })
        .sum();
    let r_squared = if syy == 0.0 {
        1.0
    } else {
        (1.0 - ssr / syy).clamp(0.0, 1.0)
    };
    let (log_a_std_err, b_std_err) = if m > 2 {
        let s2 = ssr / (mf - 2.0);
        let se_b = (s2 / sxx).sqrt();
        let se_a = (s2 * (1.0 / mf + mean_x * mean_x / sxx)).sqrt();
        (Some(se_a), Some(se_b))
    } else {
        (None, None)
    };
    Ok(PowerLawFit {
        a: log_a.exp(),
        b,
        log_a,
        r_squared,
        log_a_std_err,
        b_std_err,
        points: m,
    })
}

/// A percentile bootstrap interval for the exponent.
pub type ExponentInterval = Interval;

/// Percentile bootstrap interval for `b`.
///
/// `groups` holds one entry per model: its size `x` and the metric of every
/// text. Each resample draws, independently for every model, as many texts
/// as it has with replacement, averages them, and refits the power law on
/// the means. The interval's ends are the `(1 - level) / 2` and
/// `(1 + level) / 2` quantiles of the refitted exponents, with linear
/// interpolation between order statistics (numpy's default `percentile`).
pub fn bootstrap_exponent_ci(
    groups: &[(f64, Vec<f64>)],
    options: &BootstrapOptions,
) -> Result<ExponentInterval> {
    options.validate()?;
    let xs: Vec<f64> = groups.iter().map(|g| g.0).collect();
    positive_finite("x", &xs)?;
    for (_, values) in groups {
        if values.is_empty() {
            return Err(ProbeError::Empty {
                what: "per-text values of a model",
                rows: 0,
                cols: 1,
            });
        }
        positive_finite("per-text value", values)?;
    }
    let lx: Vec<f64> = xs.iter().map(|v| v.ln()).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ly: Vec<f64> = groups.iter().map(|g| mean(&g.1).ln()).collect();
    let estimate = fit_logs(&lx, &ly)?.b;

    let mut rng = ChaCha20Rng::seed_from_u64(options.seed);
    let mut exponents = Vec::with_capacity(options.resamples);
    let mut ly_boot = vec![0.0; groups.len()];
    for _ in 0..options.resamples {
        for (slot, (_, values)) in ly_boot.iter_mut().zip(groups) {
            let k = values.len();
            let sum: f64 = (0..k).map(|_| values[rng.random_range(0..k)]).sum();
            *slot = (sum / k as f64).ln();
        }
        exponents.push(fit_logs(&lx, &ly_boot)?.b);
    }
    Ok(Interval::percentile(estimate, exponents, options))
}

/// The paper's simulation: normalised coding length of a representation
/// whose matrix has `r` equal non-zero singular values (`lambda_i = 1 / r`)
/// at hidden size `d`:
/// `r ln(1 + d / (r eps^2)) / (d ln(1 + 1 / eps^2))`.
///
/// `r` may be fractional (a measured effective rank); it must lie in
/// `[1, d]`.
pub fn simulated_normalised_coding_length(r: f64, d: usize, eps: f64) -> Result<f64> {
    checks::positive("eps", eps)?;
    let df = d as f64;
    if !(r.is_finite() && r >= 1.0 && r <= df) {
        return Err(ProbeError::InvalidParameter {
            name: "r",
            value: r,
            reason: "the number of equal singular values must lie in [1, d]",
        });
    }
    let eps2 = eps * eps;
    Ok(r * (df / (r * eps2)).ln_1p() / (df * (1.0 / eps2).ln_1p()))
}

/// Matrix entropy `ln r` of `r` equal singular values (`r >= 1`).
pub fn simulated_matrix_entropy(r: f64) -> Result<f64> {
    if !(r.is_finite() && r >= 1.0) {
        return Err(ProbeError::InvalidParameter {
            name: "r",
            value: r,
            reason: "must be finite and >= 1",
        });
    }
    Ok(r.ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_power_law_is_recovered() {
        let x = [1e6, 1e7, 1e8, 1e9];
        let y: Vec<f64> = x.iter().map(|v: &f64| 3.0 * v.powf(-0.25)).collect();
        let f = fit(&x, &y).unwrap();
        assert!((f.b + 0.25).abs() < 1e-12);
        assert!((f.a - 3.0).abs() < 1e-9);
        assert!((f.r_squared - 1.0).abs() < 1e-12);
        assert!(f.b_std_err.unwrap() < 1e-12);
        assert!((f.predict(1e10) - 3.0 * 1e10f64.powf(-0.25)).abs() < 1e-9);
    }

    #[test]
    fn two_points_fit_exactly_without_standard_errors() {
        let f = fit(&[2.0, 8.0], &[1.0, 4.0]).unwrap();
        assert!((f.b - 1.0).abs() < 1e-15);
        assert!(f.b_std_err.is_none() && f.log_a_std_err.is_none());
    }

    #[test]
    fn invalid_inputs_are_errors() {
        assert!(matches!(
            fit(&[1.0, 2.0], &[1.0, 0.0]),
            Err(ProbeError::InvalidParameter { name: "y", .. })
        ));
        assert!(matches!(
            fit(&[-1.0, 2.0], &[1.0, 1.0]),
            Err(ProbeError::InvalidParameter { name: "x", .. })
        ));
        assert!(matches!(
            fit(&[3.0, 3.0, 3.0], &[1.0, 2.0, 3.0]),
            Err(ProbeError::Degenerate(_))
        ));
        assert!(matches!(
            fit(&[1.0, 2.0], &[1.0]),
            Err(ProbeError::SizeMismatch { .. })
        ));
        assert!(matches!(
            fit(&[1.0, f64::NAN], &[1.0, 2.0]),
            Err(ProbeError::NonFinite { .. })
        ));
        let groups = vec![(1.0, vec![1.0]), (2.0, vec![])];
        assert!(matches!(
            bootstrap_exponent_ci(&groups, &BootstrapOptions::default()),
            Err(ProbeError::Empty { .. })
        ));
        let groups = vec![(1.0, vec![1.0]), (2.0, vec![2.0])];
        let bad_level = BootstrapOptions {
            level: 1.0,
            ..Default::default()
        };
        assert!(bootstrap_exponent_ci(&groups, &bad_level).is_err());
    }

    #[test]
    fn bootstrap_collapses_when_texts_agree_and_is_reproducible() {
        // Identical texts within each model: every resample gives the same means.
        let groups: Vec<(f64, Vec<f64>)> = [1e6, 1e7, 1e8]
            .iter()
            .map(|&x: &f64| (x, vec![2.0 * x.powf(0.1); 5]))
            .collect();
        let ci = bootstrap_exponent_ci(&groups, &BootstrapOptions::default()).unwrap();
        assert!((ci.estimate - 0.1).abs() < 1e-12);
        assert!((ci.lower - 0.1).abs() < 1e-12 && (ci.upper - 0.1).abs() < 1e-12);

        let noisy: Vec<(f64, Vec<f64>)> = [1e6, 1e7, 1e8]
            .iter()
            .enumerate()
            .map(|(i, &x): (usize, &f64)| {
                let base = x.powf(0.1);
                (
                    x,
                    (0..8)
                        .map(|t| base * (1.0 + 0.05 * ((t * 7 + i) % 5) as f64))
                        .collect(),
                )
            })
            .collect();
        let opts = BootstrapOptions {
            resamples: 500,
            level: 0.9,
            seed: 7,
        };
        let a = bootstrap_exponent_ci(&noisy, &opts).unwrap();
        let b = bootstrap_exponent_ci(&noisy, &opts).unwrap();
        assert_eq!(a, b);
        assert!(a.lower < a.estimate && a.estimate < a.upper);
        let c = bootstrap_exponent_ci(&noisy, &BootstrapOptions { seed: 8, ..opts }).unwrap();
        assert_ne!(a.lower, c.lower);
    }

    #[test]
    fn simulation_limits() {
        // r = d is the maximum, S = I / d.
        assert!((simulated_normalised_coding_length(64.0, 64, 0.1).unwrap() - 1.0).abs() < 1e-15);
        assert!(simulated_normalised_coding_length(0.5, 64, 0.1).is_err());
        assert!(simulated_normalised_coding_length(65.0, 64, 0.1).is_err());
        assert_eq!(simulated_matrix_entropy(1.0).unwrap(), 0.0);
        assert!(simulated_matrix_entropy(0.0).is_err());
    }

    #[test]
    fn quantile_interpolates_linearly() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.0).unwrap(), 1.0);
        assert_eq!(quantile(&v, 1.0).unwrap(), 4.0);
        assert!((quantile(&v, 0.5).unwrap() - 2.5).abs() < 1e-15);
        assert!(quantile(&v, 1.5).is_err());
        assert!(quantile(&[], 0.5).is_err());
    }
}
