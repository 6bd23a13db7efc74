//! The single error type of the crate.

use thiserror::Error;

/// Everything that can go wrong in a probe. Every public function validates
/// its input and returns one of these instead of panicking or producing a
/// silent NaN.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ProbeError {
    /// A matrix or vector that must hold data has no rows, columns or entries.
    #[error("{what} is empty ({rows} x {cols})")]
    Empty {
        /// Which argument.
        what: &'static str,
        /// Its number of rows (its length for a vector, with `cols = 1`).
        rows: usize,
        /// Its number of columns.
        cols: usize,
    },

    /// A NaN or infinite entry.
    #[error("{what} has a non-finite entry {value} at row {row}, column {col}")]
    NonFinite {
        /// Which argument.
        what: &'static str,
        /// Row of the entry (the index for a vector).
        row: usize,
        /// Column of the entry (0 for a vector).
        col: usize,
        /// The offending value.
        value: f64,
    },

    /// A row that must be scaled to unit length has (numerically) zero norm.
    #[error(
        "row {row} has zero norm{}, so it cannot be scaled to unit length",
        if *.after_centring { " after subtracting the mean row (n = 1, or every row equal?)" } else { "" }
    )]
    ZeroRow {
        /// Index of the row.
        row: usize,
        /// True when the row only became zero because the mean row was
        /// subtracted (one token, or all tokens identical).
        after_centring: bool,
    },

    /// Two arguments whose sizes must agree do not.
    #[error("size mismatch: {what}: expected {expected}, found {found}")]
    SizeMismatch {
        /// What was compared.
        what: &'static str,
        /// The size implied by the other arguments.
        expected: usize,
        /// The size given.
        found: usize,
    },

    /// A scalar parameter outside its domain.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What it must satisfy.
        reason: &'static str,
    },

    /// Input that is well-formed but for which the quantity is undefined,
    /// e.g. a zero matrix has no entropy, a power law needs two distinct x.
    #[error("{0}")]
    Degenerate(String),

    /// A factorisation failed (an eigen/singular value iteration did not
    /// converge, or a matrix that should be positive definite was not).
    #[error("{0}")]
    Numerical(String),
}

/// Shorthand used throughout the crate.
pub type Result<T> = std::result::Result<T, ProbeError>;
