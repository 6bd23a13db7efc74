//! `F32Matrix`, the plain matrix every forward pass returns.

/// A dense row-major `f32` matrix: the currency between this crate and the rest.
#[derive(Clone, Debug, PartialEq)]
pub struct F32Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl F32Matrix {
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(
            rows * cols,
            data.len(),
            "matrix shape does not match its data"
        );
        Self { rows, cols, data }
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}
