//! Input validation shared by every module.

use faer::MatRef;

use crate::error::{ProbeError, Result};

/// Rejects a matrix with no entries.
pub(crate) fn nonempty(what: &'static str, m: MatRef<'_, f64>) -> Result<()> {
    if m.nrows() == 0 || m.ncols() == 0 {
        return Err(ProbeError::Empty {
            what,
            rows: m.nrows(),
            cols: m.ncols(),
        });
    }
    Ok(())
}

/// Rejects NaN and infinities, naming the first offending entry in row-major
/// order so that the message points at a token.
pub(crate) fn finite_matrix(what: &'static str, m: MatRef<'_, f64>) -> Result<()> {
    // Column-major scan is the cache-friendly one; only on failure do we look
    // for the first bad entry in row order.
    let mut any_bad = false;
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            if !m[(i, j)].is_finite() {
                any_bad = true;
            }
        }
    }
    if !any_bad {
        return Ok(());
    }
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            let value = m[(i, j)];
            if !value.is_finite() {
                return Err(ProbeError::NonFinite {
                    what,
                    row: i,
                    col: j,
                    value,
                });
            }
        }
    }
    unreachable!("a non-finite entry was seen in the first scan")
}

/// A matrix with at least one entry, all finite.
pub(crate) fn data_matrix(what: &'static str, m: MatRef<'_, f64>) -> Result<()> {
    nonempty(what, m)?;
    finite_matrix(what, m)
}

/// A non-empty vector of finite values.
pub(crate) fn data_vector(what: &'static str, v: &[f64]) -> Result<()> {
    if v.is_empty() {
        return Err(ProbeError::Empty {
            what,
            rows: 0,
            cols: 1,
        });
    }
    finite_vector(what, v)
}

/// A vector of finite values (possibly empty).
pub(crate) fn finite_vector(what: &'static str, v: &[f64]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(row) => Err(ProbeError::NonFinite {
            what,
            row,
            col: 0,
            value: v[row],
        }),
    }
}

/// Two lengths that must agree.
pub(crate) fn same_len(what: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected != found {
        return Err(ProbeError::SizeMismatch {
            what,
            expected,
            found,
        });
    }
    Ok(())
}

/// A strictly positive, finite scalar parameter.
pub(crate) fn positive(name: &'static str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        return Err(ProbeError::InvalidParameter {
            name,
            value,
            reason: "must be finite and > 0",
        });
    }
    Ok(())
}

/// The token setting's inputs: a finite context matrix (t x d) and a finite
/// new token of length d.
pub(crate) fn context_and_token(context: MatRef<'_, f64>, new: &[f64]) -> Result<()> {
    data_matrix("context", context)?;
    same_len(
        "new token length (= context columns)",
        context.ncols(),
        new.len(),
    )?;
    finite_vector("new token", new)
}

/// A computed result that must be finite. Validated finite input can still
/// overflow (entries near `1e154` square to infinity in a Gram matrix);
/// that is reported instead of returned as an infinity or a NaN.
pub(crate) fn finite_output(what: &str, value: f64) -> Result<f64> {
    if !value.is_finite() {
        return Err(ProbeError::Numerical(format!(
            "{what} is {value}: the input overflowed f64 (rescale it)"
        )));
    }
    Ok(value)
}
