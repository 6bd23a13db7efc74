//! One vector per text and layer (mean over tokens, or the last token), read
//! from an embedding table in one pass: what the sentence-level geometry
//! measures compare.
//!
//! Memory is `texts x layers x hidden` `f32` values: the token matrices
//! themselves are read one at a time and never held together.

use std::collections::BTreeMap;
use std::path::Path;

use faer::Mat;
use lmgeo_dag::{NodeError, ParamError};
use lmgeo_tables::{EmbeddingReader, TextMatrix};
use serde::{Deserialize, Serialize};

/// How a text's token vectors become one vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    /// The mean over tokens.
    #[default]
    Mean,
    /// The last token's vector (what a causal model's next-token prediction reads).
    Last,
}

impl Pool {
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Last => "last",
        }
    }
}

/// Pooled vectors of every requested layer, texts in table order.
pub struct PooledLayers {
    pub text_ids: Vec<String>,
    pub hidden: usize,
    /// Per layer, `texts x hidden` row-major.
    pub layers: BTreeMap<i32, Vec<f32>>,
}

/// Builds [`PooledLayers`] one (text, layer) matrix at a time, so that a
/// node already reading the table for other measures pools in the same pass.
pub struct Pooler {
    pool: Pool,
    hidden: usize,
    text_ids: Vec<String>,
    per_layer: BTreeMap<i32, (Vec<String>, Vec<f32>)>,
}

impl Pooler {
    pub fn new(pool: Pool, hidden: usize) -> Self {
        Self {
            pool,
            hidden,
            text_ids: Vec::new(),
            per_layer: BTreeMap::new(),
        }
    }

    pub fn push(&mut self, m: &TextMatrix) -> Result<(), NodeError> {
        if m.rows == 0 {
            return Err(NodeError::msg(format!(
                "text `{}` has no tokens at layer {}",
                m.text_id, m.layer
            )));
        }
        if self.text_ids.last() != Some(&m.text_id) {
            self.text_ids.push(m.text_id.clone());
        }
        let (ids, values) = self.per_layer.entry(m.layer).or_default();
        ids.push(m.text_id.clone());
        match self.pool {
            Pool::Last => values.extend_from_slice(m.row(m.rows - 1)),
            Pool::Mean => {
                let mut sum = vec![0f64; self.hidden];
                for i in 0..m.rows {
                    for (s, v) in sum.iter_mut().zip(m.row(i)) {
                        *s += f64::from(*v);
                    }
                }
                values.extend(sum.iter().map(|s| (s / m.rows as f64) as f32));
            }
        }
        Ok(())
    }

    /// The pooled layers; `table` names the source in errors.
    pub fn finish(self, table: &Path) -> Result<PooledLayers, NodeError> {
        if self.per_layer.is_empty() {
            return Err(NodeError::msg(format!(
                "{}: no matrix for the requested layers",
                table.display()
            )));
        }
        let mut layers = BTreeMap::new();
        for (layer, (ids, values)) in self.per_layer {
            if ids != self.text_ids {
                return Err(NodeError::msg(format!(
                    "{}: layer {layer} has {} texts where the table has {}; every layer must cover the same texts",
                    table.display(),
                    ids.len(),
                    self.text_ids.len()
                )));
            }
            layers.insert(layer, values);
        }
        Ok(PooledLayers {
            text_ids: self.text_ids,
            hidden: self.hidden,
            layers,
        })
    }
}

impl PooledLayers {
    pub fn read(table: &Path, layers: Option<Vec<i32>>, pool: Pool) -> Result<Self, NodeError> {
        let mut reader = EmbeddingReader::open(table)?;
        let mut pooler = Pooler::new(pool, reader.hidden_size());
        if let Some(layers) = layers {
            reader = reader.with_layers(layers);
        }
        for matrix in reader {
            pooler.push(&matrix?)?;
        }
        pooler.finish(table)
    }

    /// One layer as an `f64` matrix, rows in `order` (indices into `text_ids`).
    pub fn matrix(&self, layer: i32, order: &[usize]) -> Mat<f64> {
        let values = &self.layers[&layer];
        let d = self.hidden;
        Mat::from_fn(order.len(), d, |i, j| f64::from(values[order[i] * d + j]))
    }

    pub fn layer_numbers(&self) -> Vec<i32> {
        self.layers.keys().copied().collect()
    }
}

/// Row orders that pair the texts of `a` and `b` by id: `b`'s texts in `a`'s
/// order. An error names what differs when the sets are not equal.
pub fn pair_texts(
    a: &PooledLayers,
    b: &PooledLayers,
) -> Result<(Vec<usize>, Vec<usize>), NodeError> {
    let index_b: BTreeMap<&str, usize> = b
        .text_ids
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let only_a: Vec<&str> = a
        .text_ids
        .iter()
        .map(String::as_str)
        .filter(|t| !index_b.contains_key(t))
        .collect();
    let in_a: std::collections::BTreeSet<&str> = a.text_ids.iter().map(String::as_str).collect();
    let only_b: Vec<&str> = b
        .text_ids
        .iter()
        .map(String::as_str)
        .filter(|t| !in_a.contains(t))
        .collect();
    if !only_a.is_empty() || !only_b.is_empty() {
        let sample = |v: &[&str]| v.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        return Err(NodeError::msg(format!(
            "the two sides must hold the same texts (same corpus, same token filters): \
             {} only in `a` ({}), {} only in `b` ({})",
            only_a.len(),
            sample(&only_a),
            only_b.len(),
            sample(&only_b)
        )));
    }
    let order_a: Vec<usize> = (0..a.text_ids.len()).collect();
    let order_b: Vec<usize> = a.text_ids.iter().map(|t| index_b[t.as_str()]).collect();
    Ok((order_a, order_b))
}

/// The `bootstrap` and `level` parameters the geometry kinds share.
pub fn check_bootstrap(bootstrap: usize, level: f64) -> Result<(), ParamError> {
    if !(level > 0.0 && level < 1.0) {
        return Err(ParamError::field(
            "level",
            "must lie strictly between 0 and 1",
        ));
    }
    if bootstrap == 1 {
        return Err(ParamError::field(
            "bootstrap",
            "needs at least 2 resamples (0 turns it off)",
        ));
    }
    Ok(())
}
