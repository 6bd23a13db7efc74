//! `entropy`: representation entropy of every (text, layer) matrix.

use std::collections::BTreeMap;

use lmgeo_dag::{InputPort, Interface, Node, NodeError, OutputPort, ParamError, RunContext};
use lmgeo_probes::entropy::entropy_report;
use lmgeo_tables::{Cell, Record};
use serde::{Deserialize, Serialize};

use crate::common::{Layers, PreprocessParam, layer_summary, map_matrices, on_matrix};

fn default_eps() -> f64 {
    lmgeo_probes::entropy::DEFAULT_EPS
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyParams {
    /// Row preprocessing before the covariance (method.md §1).
    #[serde(default)]
    pub preprocess: PreprocessParam,
    /// Distortion of the rate-distortion coding length.
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default)]
    pub layers: Layers,
}

/// Matrix entropy, effective rank and (normalised) coding length per text and
/// layer; per-layer means with standard errors as metrics.
pub struct Entropy;

/// The quantities of one matrix, in table column order.
pub const ENTROPY_COLUMNS: [&str; 6] = [
    "matrix_entropy",
    "normalised_matrix_entropy",
    "effective_rank",
    "coding_length",
    "normalised_coding_length",
    "numerical_rank",
];

impl Node for Entropy {
    type Params = EntropyParams;
    const KIND: &'static str = "entropy";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "matrix entropy, effective rank and coding length per text and layer";

    fn interface(&self, p: &EntropyParams) -> Result<Interface, ParamError> {
        if !(p.eps > 0.0 && p.eps.is_finite()) {
            return Err(ParamError::field("eps", "must be a positive number"));
        }
        p.layers.check("layers")?;
        Ok(Interface {
            inputs: vec![InputPort::one(
                "embeddings",
                "an embedding table (from `extract` or a matrix node)",
            )],
            outputs: vec![OutputPort::published(
                "per_text",
                "one row per (text, layer): n, d and every entropy quantity",
            )],
            ..Interface::default()
        })
    }

    fn run(&self, p: &EntropyParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let table = ctx.single_input("embeddings")?.path.clone();
        let layers = p.layers.resolve("layers", &table)?;
        let preprocess = p.preprocess.into();
        let reports = map_matrices(&table, layers, |m| {
            let z = lmgeo_probes::matrix_from_rows_f32(m.rows, m.cols, &m.data)
                .map_err(|e| on_matrix(m, e))?;
            let report =
                entropy_report(z.as_ref(), preprocess, p.eps).map_err(|e| on_matrix(m, e))?;
            Ok((m.text_id.clone(), m.layer, report))
        })?;
        if reports.is_empty() {
            return Err(NodeError::msg(
                "the embedding table has no matrix for the requested layers",
            ));
        }
        let mut records: Vec<Record> = Vec::with_capacity(reports.len());
        let mut by_layer: BTreeMap<(i32, String), Vec<f64>> = BTreeMap::new();
        for (text_id, layer, r) in &reports {
            let values = [
                r.matrix_entropy,
                r.normalised_matrix_entropy,
                r.effective_rank,
                r.coding_length,
                r.normalised_coding_length,
                r.numerical_rank as f64,
            ];
            let mut record: Record = vec![
                ("text_id".into(), Cell::Str(text_id.clone())),
                ("layer".into(), Cell::Int(i64::from(*layer))),
                ("n".into(), Cell::Int(r.n as i64)),
                ("d".into(), Cell::Int(r.d as i64)),
            ];
            for (name, value) in ENTROPY_COLUMNS.iter().zip(values) {
                record.push((name.to_string(), Cell::Float(value)));
                by_layer
                    .entry((*layer, name.to_string()))
                    .or_default()
                    .push(value);
            }
            records.push(record);
        }
        let mut frame = lmgeo_tables::frame_from_records(&records)?;
        lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("per_text")?)?;
        ctx.emit_all(layer_summary(&by_layer)?);
        Ok(())
    }
}
