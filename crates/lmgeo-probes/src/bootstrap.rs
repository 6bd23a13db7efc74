//! What every percentile bootstrap in this crate shares: its settings, the
//! interval it reports, and numpy's default quantile.

use crate::checks;
use crate::error::{ProbeError, Result};

/// Settings of every percentile bootstrap in this crate
/// ([`crate::power_law::bootstrap_exponent_ci`],
/// [`crate::similarity::bootstrap_ci`], [`crate::similarity::bootstrap_pair_ci`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapOptions {
    /// Number of resamples.
    pub resamples: usize,
    /// Coverage of the percentile interval, in `(0, 1)`.
    pub level: f64,
    /// Seed of the ChaCha20 generator (results are reproducible).
    pub seed: u64,
}

impl BootstrapOptions {
    /// Errors unless `level` lies in `(0, 1)` and `resamples >= 2`.
    pub(crate) fn validate(&self) -> Result<()> {
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(ProbeError::InvalidParameter {
                name: "level",
                value: self.level,
                reason: "must lie strictly between 0 and 1",
            });
        }
        if self.resamples < 2 {
            return Err(ProbeError::InvalidParameter {
                name: "resamples",
                value: self.resamples as f64,
                reason: "need at least 2 bootstrap resamples",
            });
        }
        Ok(())
    }
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            resamples: 2000,
            level: 0.95,
            seed: 0,
        }
    }
}

/// A percentile bootstrap interval around an estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// The estimate on all the data.
    pub estimate: f64,
    /// Lower end of the interval.
    pub lower: f64,
    /// Upper end of the interval.
    pub upper: f64,
    /// Coverage requested.
    pub level: f64,
    /// Number of resamples.
    pub resamples: usize,
    /// Standard deviation of the resampled estimates.
    pub bootstrap_std: f64,
}

impl Interval {
    /// The interval whose ends are the `(1 - level) / 2` and
    /// `(1 + level) / 2` quantiles of `resampled` (at least two values,
    /// which `BootstrapOptions::validate` guarantees), interpolated as
    /// [`quantile`] does.
    pub(crate) fn percentile(
        estimate: f64,
        mut resampled: Vec<f64>,
        options: &BootstrapOptions,
    ) -> Interval {
        resampled.sort_by(f64::total_cmp);
        let m = resampled.len() as f64;
        let mean = resampled.iter().sum::<f64>() / m;
        let var = resampled
            .iter()
            .map(|s| (s - mean) * (s - mean))
            .sum::<f64>()
            / (m - 1.0);
        let tail = (1.0 - options.level) / 2.0;
        Interval {
            estimate,
            lower: quantile_sorted(&resampled, tail),
            upper: quantile_sorted(&resampled, 1.0 - tail),
            level: options.level,
            resamples: resampled.len(),
            bootstrap_std: var.sqrt(),
        }
    }
}

/// Quantile `q` in `[0, 1]` of ascending `sorted` values, interpolating
/// linearly between order statistics at position `q (m - 1)` (numpy's
/// default). Errors on empty input or `q` outside `[0, 1]`.
pub fn quantile(values: &[f64], q: f64) -> Result<f64> {
    checks::data_vector("values", values)?;
    if !(0.0..=1.0).contains(&q) {
        return Err(ProbeError::InvalidParameter {
            name: "quantile",
            value: q,
            reason: "must lie in [0, 1]",
        });
    }
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    Ok(quantile_sorted(&s, q))
}

pub(crate) fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = pos - lo as f64;
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_the_tail_quantiles_and_the_sample_deviation() {
        let options = BootstrapOptions {
            resamples: 5,
            level: 0.5,
            seed: 0,
        };
        // Sorted 1 2 3 4 10; quantiles at 0.25 and 0.75 sit on order
        // statistics 1 and 3 exactly; mean 4, squared deviations 9 4 1 0 36.
        let interval = Interval::percentile(3.5, vec![10.0, 2.0, 4.0, 1.0, 3.0], &options);
        assert_eq!(interval.lower, 2.0);
        assert_eq!(interval.upper, 4.0);
        assert_eq!(interval.estimate, 3.5);
        assert_eq!(interval.resamples, 5);
        assert!((interval.bootstrap_std - (50.0f64 / 4.0).sqrt()).abs() < 1e-15);
    }
}
