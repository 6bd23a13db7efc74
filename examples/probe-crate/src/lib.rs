//! A probe written against lmgeo's node contract, outside lmgeo's own
//! crates: the participation ratio of each (text, layer) matrix.
//!
//! The participation ratio of a covariance spectrum `λ₁ ≥ … ≥ λ_d ≥ 0` is
//! `(Σλ)² / Σλ²`: `k` when `k` directions carry equal variance and the rest
//! none, and between 1 and `k` when the variance is spread unevenly. It is a
//! cheap effective dimension, a cousin of the effective rank that lmgeo's
//! `entropy` kind computes.
//!
//! No eigenvalues are needed: with `C = XᵀX / n` for the (centred) rows `X`,
//! `Σλ = tr C` and `Σλ² = ‖C‖²_F`, and `‖XᵀX‖_F = ‖XXᵀ‖_F`, so the smaller
//! of the two Gram matrices gives the answer.

use std::collections::BTreeMap;

use lmgeo_dag::{
    InputPort, Interface, MetricRow, Node, NodeError, OutputPort, ParamError, RunContext,
};
use lmgeo_tables::{Cell, EmbeddingReader, Record};
use serde::{Deserialize, Serialize};

fn yes() -> bool {
    true
}

/// The parameters a node of this kind takes in an experiment file. Unknown
/// keys are errors, located in the file by lmgeo.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Subtract the mean token vector first, measuring the covariance; with
    /// `false`, the uncentred second-moment matrix.
    #[serde(default = "yes")]
    pub center: bool,
}

/// The node kind `participation_ratio`.
pub struct ParticipationRatio;

impl Node for ParticipationRatio {
    type Params = Params;
    const KIND: &'static str = "participation_ratio";
    // Bump when the results change for the same inputs: it reruns every
    // node of this kind.
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "participation ratio (Σλ)²/Σλ² of each matrix's covariance spectrum";

    fn interface(&self, _: &Params) -> Result<Interface, ParamError> {
        Ok(Interface {
            inputs: vec![InputPort::one(
                "embeddings",
                "an embedding table (from `extract`, `synthetic_matrix` or `load_matrix`)",
            )],
            outputs: vec![OutputPort::published(
                "per_text",
                "one row per (text, layer): tokens and participation ratio",
            )],
            ..Interface::default()
        })
    }

    fn run(&self, p: &Params, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let table = ctx.single_input("embeddings")?.path.clone();
        let mut records: Vec<Record> = Vec::new();
        let mut by_layer: BTreeMap<i32, Vec<f64>> = BTreeMap::new();
        for matrix in EmbeddingReader::open(&table)? {
            let m = matrix?;
            let rows: Vec<Vec<f64>> = (0..m.rows)
                .map(|i| m.row(i).iter().map(|&v| f64::from(v)).collect())
                .collect();
            let ratio = participation_ratio(&rows, p.center);
            if ratio.is_finite() {
                by_layer.entry(m.layer).or_default().push(ratio);
            }
            records.push(vec![
                ("text_id".into(), Cell::Str(m.text_id.clone())),
                ("layer".into(), Cell::Int(i64::from(m.layer))),
                ("tokens".into(), Cell::Int(m.rows as i64)),
                ("participation_ratio".into(), Cell::Float(ratio)),
            ]);
        }
        if records.is_empty() {
            return Err(NodeError::msg("the embedding table holds no matrices"));
        }
        let mut frame = lmgeo_tables::frame_from_records(&records)?;
        lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("per_text")?)?;
        for (layer, values) in by_layer {
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            ctx.emit(
                MetricRow::new("participation_ratio", mean)
                    .dim("layer", i64::from(layer))
                    .dim("stat", "mean"),
            );
        }
        Ok(())
    }
}

/// `(tr C)² / ‖C‖²_F` for the rows of a matrix; NaN when every row is equal
/// (centred) or zero, where there is no spectrum to speak of.
pub fn participation_ratio(rows: &[Vec<f64>], center: bool) -> f64 {
    let n = rows.len();
    let Some(d) = rows.first().map(Vec::len) else {
        return f64::NAN;
    };
    let mut x: Vec<Vec<f64>> = rows.to_vec();
    if center {
        let mut mean = vec![0.0; d];
        for row in &x {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v / n as f64;
            }
        }
        for row in &mut x {
            for (v, m) in row.iter_mut().zip(&mean) {
                *v -= m;
            }
        }
    }
    let trace: f64 = x.iter().flatten().map(|v| v * v).sum();
    // ‖XᵀX‖²_F from whichever Gram matrix is smaller.
    let mut frobenius_sq = 0.0;
    if n <= d {
        for a in &x {
            for b in &x {
                let dot: f64 = a.iter().zip(b).map(|(p, q)| p * q).sum();
                frobenius_sq += dot * dot;
            }
        }
    } else {
        for i in 0..d {
            for j in 0..d {
                let dot: f64 = x.iter().map(|row| row[i] * row[j]).sum();
                frobenius_sq += dot * dot;
            }
        }
    }
    if frobenius_sq == 0.0 {
        return f64::NAN;
    }
    trace * trace / frobenius_sq
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_variance_in_k_directions_gives_k() {
        // Rows ±e_1, ±e_2, ±e_3 in R^5: three equal eigenvalues.
        let mut rows = Vec::new();
        for k in 0..3 {
            for sign in [1.0, -1.0] {
                let mut r = vec![0.0; 5];
                r[k] = sign;
                rows.push(r);
            }
        }
        assert!((participation_ratio(&rows, true) - 3.0).abs() < 1e-12);
        // Both Gram routes agree: transpose the shape with more rows.
        let tall: Vec<Vec<f64>> = rows.iter().cycle().take(12).cloned().collect();
        assert!((participation_ratio(&tall, true) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_constant_matrix_has_no_spectrum_once_centred() {
        let rows = vec![vec![1.0, 2.0]; 4];
        assert!(participation_ratio(&rows, true).is_nan());
        assert!((participation_ratio(&rows, false) - 1.0).abs() < 1e-12);
    }
}
