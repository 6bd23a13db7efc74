//! Row preprocessing of a representation matrix (method.md section 1).
//!
//! Rows are tokens, columns hidden dimensions. The default, [`Preprocess::CenterL2`],
//! subtracts the mean token vector and then scales every row to unit L2 norm
//! (the convention of the Diff-eRank code), so that `S = Z^T Z / n` has trace 1.
//!
//! For the information-gain and Lasso analyses (sections 3-5) centring over
//! the whole sequence is a trap: see [`crate::gp`].

use std::fmt;
use std::str::FromStr;

use faer::{Mat, MatRef};

use crate::checks;
use crate::error::{ProbeError, Result};
use crate::kernels::robust_norm;

/// A centred row whose norm is at most this fraction of the largest input
/// row norm is treated as zero. Subtracting the mean leaves a rounding
/// residue of order `n * f64::EPSILON` relative to the row scale (about
/// `1e-13` at `n = 1000`); a row that small has no meaningful direction.
pub const CENTRED_ZERO_ROW_TOLERANCE: f64 = 1e-10;

/// How rows are normalised before a spectrum or a moment is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Preprocess {
    /// Subtract the mean row, then scale each row to unit L2 norm (`"center_l2"`).
    #[default]
    CenterL2,
    /// Scale each row to unit L2 norm, no centring (`"l2"`).
    L2,
    /// Use the rows as they are (`"none"`).
    None,
}

impl Preprocess {
    /// Every variant, in a stable order.
    pub const ALL: [Preprocess; 3] = [Preprocess::CenterL2, Preprocess::L2, Preprocess::None];

    /// The name used in configurations and result rows.
    pub fn name(self) -> &'static str {
        match self {
            Preprocess::CenterL2 => "center_l2",
            Preprocess::L2 => "l2",
            Preprocess::None => "none",
        }
    }

    /// Whether rows end up with unit norm (so that `tr S = 1`).
    pub fn normalises_rows(self) -> bool {
        !matches!(self, Preprocess::None)
    }
}

impl fmt::Display for Preprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of [`Preprocess::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown preprocessing {0:?}; expected one of \"center_l2\", \"l2\", \"none\"")]
pub struct UnknownPreprocess(pub String);

impl FromStr for Preprocess {
    type Err = UnknownPreprocess;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Preprocess::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPreprocess(s.to_owned()))
    }
}

/// Returns the preprocessed copy of `z` (rows = tokens).
///
/// Errors: an empty matrix, a non-finite entry (with its row and column), or
/// a row that cannot be scaled to unit norm because it is zero, either in the
/// input or only after centring (`n = 1`, or all rows equal, under
/// `center_l2`; see [`CENTRED_ZERO_ROW_TOLERANCE`]).
pub fn preprocess(z: MatRef<'_, f64>, method: Preprocess) -> Result<Mat<f64>> {
    checks::data_matrix("representation matrix", z)?;
    let (n, d) = (z.nrows(), z.ncols());
    let mut out = z.to_owned();
    if method == Preprocess::None {
        return Ok(out);
    }

    let centre = method == Preprocess::CenterL2;
    let largest_input_norm = if centre {
        row_norms(z).into_iter().fold(0.0, f64::max)
    } else {
        0.0
    };

    if centre {
        for j in 0..d {
            let col = out.col_as_slice_mut(j);
            let mean = col.iter().sum::<f64>() / n as f64;
            col.iter_mut().for_each(|x| *x -= mean);
        }
    }

    let norms = row_norms(out.as_ref());
    for (i, &norm) in norms.iter().enumerate() {
        let zero = if centre {
            norm <= CENTRED_ZERO_ROW_TOLERANCE * largest_input_norm
        } else {
            norm == 0.0
        };
        if zero {
            let was_zero_before = robust_norm((0..d).map(|j| z[(i, j)])) == 0.0;
            return Err(ProbeError::ZeroRow {
                row: i,
                after_centring: centre && !was_zero_before,
            });
        }
    }
    for j in 0..d {
        for (x, norm) in out.col_as_slice_mut(j).iter_mut().zip(&norms) {
            *x /= norm;
        }
    }
    Ok(out)
}

/// Euclidean norm of every row. The matrix is column-major, so the sums
/// run down the columns (contiguous) rather than along the strided rows.
/// Rows whose plain sum of squares overflows or underflows are recomputed
/// with scaling.
pub(crate) fn row_norms(m: MatRef<'_, f64>) -> Vec<f64> {
    let (n, d) = (m.nrows(), m.ncols());
    let mut sums = vec![0.0f64; n];
    for j in 0..d {
        let col = m.col(j);
        for (i, s) in sums.iter_mut().enumerate() {
            let x = col[i];
            *s += x * x;
        }
    }
    sums.iter()
        .enumerate()
        .map(|(i, &s)| {
            if s.is_finite() && s >= SAFE_SQUARE_SUM_MIN {
                s.sqrt()
            } else {
                robust_norm((0..d).map(|j| m[(i, j)]))
            }
        })
        .collect()
}

/// Below this a sum of squares may have lost digits to underflow
/// (squares of entries below ~1e-154 are subnormal or zero).
const SAFE_SQUARE_SUM_MIN: f64 = 1e-290;

#[cfg(test)]
mod tests {
    use super::*;
    use faer::mat;

    #[test]
    fn names_round_trip_and_unknown_names_are_rejected() {
        for p in Preprocess::ALL {
            assert_eq!(p.to_string().parse::<Preprocess>().unwrap(), p);
        }
        assert_eq!(Preprocess::default(), Preprocess::CenterL2);
        let err = "centre".parse::<Preprocess>().unwrap_err();
        assert!(err.to_string().contains("centre"));
    }

    #[test]
    fn center_l2_gives_unit_rows_from_centred_data() {
        let z = mat![[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]];
        let p = preprocess(z.as_ref(), Preprocess::CenterL2).unwrap();
        // Mean row is (3, 3); centred rows (-2,-1), (0,3), (2,-2).
        let expect: [[f64; 2]; 3] = [[-2.0, -1.0], [0.0, 3.0], [2.0, -2.0]];
        for (i, row) in expect.iter().enumerate() {
            let norm = (row[0] * row[0] + row[1] * row[1]).sqrt();
            for j in 0..2 {
                assert!((p[(i, j)] - row[j] / norm).abs() < 1e-15);
            }
        }
    }

    #[test]
    fn none_is_a_copy() {
        let z = mat![[1.0, -2.0], [0.0, 0.0]];
        let p = preprocess(z.as_ref(), Preprocess::None).unwrap();
        assert_eq!(p, z);
    }

    #[test]
    fn single_row_cannot_be_centred() {
        let z = mat![[1.0, 2.0, 3.0]];
        let err = preprocess(z.as_ref(), Preprocess::CenterL2).unwrap_err();
        assert_eq!(
            err,
            ProbeError::ZeroRow {
                row: 0,
                after_centring: true
            }
        );
        assert!(err.to_string().contains("after subtracting the mean"));
        // Without centring one row is fine.
        let p = preprocess(z.as_ref(), Preprocess::L2).unwrap();
        assert!((p[(0, 2)] - 3.0 / 14f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn constant_rows_are_zero_after_centring_even_with_rounding() {
        // 0.1 is not representable, so the column means carry rounding.
        let z = Mat::from_fn(7, 3, |_, j| 0.1 * (j as f64 + 1.0));
        let err = preprocess(z.as_ref(), Preprocess::CenterL2).unwrap_err();
        assert!(matches!(
            err,
            ProbeError::ZeroRow {
                after_centring: true,
                ..
            }
        ));
    }

    #[test]
    fn zero_input_row_is_reported_as_such() {
        let z = mat![[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]];
        assert_eq!(
            preprocess(z.as_ref(), Preprocess::L2).unwrap_err(),
            ProbeError::ZeroRow {
                row: 1,
                after_centring: false
            }
        );
    }

    #[test]
    fn non_finite_and_empty_input_are_errors() {
        let z = mat![[1.0, 2.0], [f64::NAN, 0.5]];
        for p in Preprocess::ALL {
            assert!(matches!(
                preprocess(z.as_ref(), p).unwrap_err(),
                ProbeError::NonFinite { row: 1, col: 0, .. }
            ));
        }
        let inf = mat![[1.0, f64::INFINITY]];
        assert!(matches!(
            preprocess(inf.as_ref(), Preprocess::None).unwrap_err(),
            ProbeError::NonFinite { row: 0, col: 1, .. }
        ));
        let empty = Mat::<f64>::zeros(0, 4);
        assert!(matches!(
            preprocess(empty.as_ref(), Preprocess::L2).unwrap_err(),
            ProbeError::Empty {
                rows: 0,
                cols: 4,
                ..
            }
        ));
    }

    #[test]
    fn huge_and_tiny_rows_normalise_without_overflow() {
        let z = mat![[1e200, 1e200], [1e-200, -1e-200]];
        let p = preprocess(z.as_ref(), Preprocess::L2).unwrap();
        let h = 0.5f64.sqrt();
        assert!((p[(0, 0)] - h).abs() < 1e-15 && (p[(1, 1)] + h).abs() < 1e-15);
    }
}
