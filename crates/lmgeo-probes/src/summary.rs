//! Summaries of a sample over texts (method.md section 1, "data-set
//! level"): the mean and the standard error of the mean, as every table and
//! report of lmgeo gives them.

use crate::checks;
use crate::error::Result;

/// The mean of a sample and its standard error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanSem {
    /// `sum x_i / n`.
    pub mean: f64,
    /// `sqrt(s^2 / n)` with the sample variance
    /// `s^2 = sum (x_i - mean)^2 / (n - 1)`; 0 for a single value.
    pub sem: f64,
}

/// The arithmetic mean, summed in order. Errors for an empty sample or a
/// non-finite value.
pub fn mean(values: &[f64]) -> Result<f64> {
    checks::data_vector("sample", values)?;
    Ok(mean_unchecked(values))
}

fn mean_unchecked(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Mean and standard error of the mean (`n - 1` in the variance; a single
/// value has standard error 0). Errors for an empty sample or a non-finite
/// value.
pub fn mean_sem(values: &[f64]) -> Result<MeanSem> {
    checks::data_vector("sample", values)?;
    let mean = mean_unchecked(values);
    if values.len() < 2 {
        return Ok(MeanSem { mean, sem: 0.0 });
    }
    let n = values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Ok(MeanSem {
        mean,
        sem: (var / n).sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProbeError;

    #[test]
    fn closed_forms() {
        let s = mean_sem(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(s.mean, 2.5);
        // sample variance 5/3, sem = sqrt(5/3 / 4)
        assert!((s.sem - (5.0f64 / 12.0).sqrt()).abs() < 1e-15);
        assert_eq!(
            mean_sem(&[7.0]).unwrap(),
            MeanSem {
                mean: 7.0,
                sem: 0.0
            }
        );
        assert_eq!(mean(&[1.0, 2.0, 6.0]).unwrap(), 3.0);
        // Constant samples have no spread.
        assert_eq!(mean_sem(&[0.5; 9]).unwrap().sem, 0.0);
    }

    #[test]
    fn empty_and_non_finite_samples_are_errors() {
        assert!(matches!(mean(&[]), Err(ProbeError::Empty { .. })));
        assert!(matches!(mean_sem(&[]), Err(ProbeError::Empty { .. })));
        assert!(matches!(
            mean_sem(&[1.0, f64::NAN]),
            Err(ProbeError::NonFinite { row: 1, .. })
        ));
    }
}
