//! Parameter types and helpers shared by the probe kinds.

use std::collections::BTreeMap;
use std::path::Path;

use lmgeo_dag::{MetricRow, NodeError, ParamError};
use lmgeo_probes::preprocess::Preprocess;
pub use lmgeo_probes::summary::MeanSem;
use lmgeo_tables::{EmbeddingReader, Extraction, TextMatrix};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Row preprocessing, as written in experiment files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PreprocessParam {
    /// Subtract the mean token, then scale rows to unit norm.
    #[default]
    CenterL2,
    /// Scale rows to unit norm only.
    L2,
    None,
}

impl From<PreprocessParam> for Preprocess {
    fn from(p: PreprocessParam) -> Self {
        match p {
            PreprocessParam::CenterL2 => Preprocess::CenterL2,
            PreprocessParam::L2 => Preprocess::L2,
            PreprocessParam::None => Preprocess::None,
        }
    }
}

/// Which layers a probe reads: `"all"`, `"last"` (the last block), or a list
/// of layer numbers (0 = embeddings, 1..=L the blocks, L+1 the final norm).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Layers {
    Named(LayerName),
    List(Vec<i32>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerName {
    All,
    Last,
}

impl Default for Layers {
    fn default() -> Self {
        Layers::Named(LayerName::All)
    }
}

impl Layers {
    pub fn check(&self, field: &str) -> Result<(), ParamError> {
        match self {
            Layers::List(list) if list.is_empty() => {
                Err(ParamError::field(field, "is an empty list of layers"))
            }
            Layers::List(list) if list.iter().any(|l| *l < 0) => Err(ParamError::field(
                field,
                "has a negative layer; 0 is the embedding layer",
            )),
            _ => Ok(()),
        }
    }

    /// The layers to read from a table, using its [`Extraction`] record
    /// when `extract` wrote it.
    ///
    /// A listed layer the table does not hold is an error naming `field`
    /// and the layers it does hold (without this, the probe would quietly
    /// compute nothing for it).
    pub fn resolve(&self, field: &str, table: &Path) -> Result<Option<Vec<i32>>, NodeError> {
        match self {
            Layers::Named(LayerName::All) => Ok(None),
            Layers::List(list) => {
                let reader = EmbeddingReader::open(table)?;
                if let Some(Extraction { layers: held, .. }) = Extraction::of(&reader)
                    && let Some(bad) = list.iter().find(|l| !held.contains(l))
                {
                    let names: Vec<String> = held.iter().map(i32::to_string).collect();
                    return Err(NodeError::msg(format!(
                        "`{field}` asks for layer {bad}, but the embeddings table holds layers {}: pick from those, or extract more layers upstream",
                        names.join(", ")
                    )));
                }
                Ok(Some(list.clone()))
            }
            Layers::Named(LayerName::Last) => {
                let reader = EmbeddingReader::open(table)?;
                let (layers, final_norm) = match Extraction::of(&reader) {
                    Some(extraction) => (extraction.layers, Some(extraction.final_norm_layer)),
                    None => {
                        let mut seen: Vec<i32> = Vec::new();
                        for m in reader {
                            let layer = m?.layer;
                            if !seen.contains(&layer) {
                                seen.push(layer);
                            }
                        }
                        (seen, None)
                    }
                };
                let last = layers
                    .into_iter()
                    .filter(|l| Some(*l) != final_norm)
                    .max()
                    .ok_or_else(|| NodeError::msg(format!("{} has no layers", table.display())))?;
                Ok(Some(vec![last]))
            }
        }
    }
}

/// Applies `f` to every (text, layer) matrix of a table, in parallel over
/// batches of matrices, keeping the table's order. Memory: one batch.
pub fn map_matrices<R: Send>(
    table: &Path,
    layers: Option<Vec<i32>>,
    f: impl Fn(&TextMatrix) -> Result<R, NodeError> + Sync,
) -> Result<Vec<R>, NodeError> {
    let mut reader = EmbeddingReader::open(table)?;
    if let Some(layers) = layers {
        reader = reader.with_layers(layers);
    }
    let batch_size = 2 * rayon::current_num_threads().max(1);
    let mut out = Vec::new();
    let mut batch: Vec<TextMatrix> = Vec::with_capacity(batch_size);
    let flush = |batch: &mut Vec<TextMatrix>, out: &mut Vec<R>| -> Result<(), NodeError> {
        let results: Vec<Result<R, NodeError>> = batch.par_iter().map(&f).collect();
        for r in results {
            out.push(r?);
        }
        batch.clear();
        Ok(())
    };
    for matrix in reader {
        batch.push(matrix?);
        if batch.len() == batch_size {
            flush(&mut batch, &mut out)?;
        }
    }
    flush(&mut batch, &mut out)?;
    Ok(out)
}

/// Per-layer mean, standard error and count of named quantities, as metric
/// rows with dimensions `layer` and `stat`.
pub fn layer_summary(
    values: &BTreeMap<(i32, String), Vec<f64>>,
) -> Result<Vec<MetricRow>, NodeError> {
    let mut rows = Vec::new();
    for ((layer, metric), v) in values {
        let MeanSem { mean, sem } = mean_sem(v)?;
        rows.push(
            MetricRow::new(metric.clone(), mean)
                .dim("layer", i64::from(*layer))
                .dim("stat", "mean"),
        );
        rows.push(
            MetricRow::new(metric.clone(), sem)
                .dim("layer", i64::from(*layer))
                .dim("stat", "sem"),
        );
        rows.push(
            MetricRow::new(metric.clone(), v.len() as f64)
                .dim("layer", i64::from(*layer))
                .dim("stat", "n"),
        );
    }
    Ok(rows)
}

/// Mean and standard error over texts ([`lmgeo_probes::summary::mean_sem`]),
/// its error (an empty or non-finite sample) as a node error.
pub fn mean_sem(values: &[f64]) -> Result<MeanSem, NodeError> {
    lmgeo_probes::summary::mean_sem(values).map_err(NodeError::msg)
}

/// A probe's error on one matrix, saying which.
pub fn on_matrix(m: &TextMatrix, e: impl std::fmt::Display) -> NodeError {
    NodeError::msg(format!("text `{}`, layer {}: {e}", m.text_id, m.layer))
}
