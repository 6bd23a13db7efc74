//! `geometry`: the per-layer geometry of one model's representations.
//!
//! Per text and layer (token matrices): matrix-based Renyi alpha-entropy
//! ("prompt entropy") and the curvature of the token trajectory. Per layer:
//! TwoNN intrinsic dimension and RankMe ("dataset entropy") of pooled
//! sentence vectors, with bootstrap intervals over texts, and the linearity
//! of the step to the next requested layer over tokens stacked across texts.
//!
//! Linearity is a least-squares fit of one layer's tokens from the previous
//! layer's: with no more tokens than dimensions the fit is exact and the
//! score 1 by construction, so it needs many texts' tokens together, up to
//! `linearity_tokens` of them (held for every layer: that many x layers x
//! hidden `f32`).

use std::collections::BTreeMap;

use lmgeo_dag::{
    InputPort, Interface, MetricRow, Node, NodeError, OutputPort, ParamError, RunContext,
};
use lmgeo_probes::intrinsic;
use lmgeo_probes::power_law::BootstrapOptions;
use lmgeo_probes::similarity::bootstrap_ci;
use lmgeo_tables::{Cell, EmbeddingReader, Record, TextMatrix};
use serde::{Deserialize, Serialize};

use super::pooled::{Pool, PooledLayers, Pooler};
use crate::common::{Layers, PreprocessParam, layer_summary};

fn default_alphas() -> Vec<f64> {
    vec![1.0, 2.0]
}
fn default_discard_fraction() -> f64 {
    intrinsic::DEFAULT_DISCARD_FRACTION
}
fn default_level() -> f64 {
    0.95
}
fn default_linearity_tokens() -> usize {
    4096
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeometryParams {
    /// Orders of the Renyi entropy (1 is the von Neumann matrix entropy).
    #[serde(default = "default_alphas")]
    pub alphas: Vec<f64>,
    /// Row preprocessing before the entropy (method.md section 1).
    #[serde(default)]
    pub preprocess: PreprocessParam,
    /// How texts become sentence vectors for TwoNN and RankMe.
    #[serde(default)]
    pub pool: Pool,
    /// Fraction of the largest TwoNN ratios left out of the fit.
    #[serde(default = "default_discard_fraction")]
    pub discard_fraction: f64,
    /// Bootstrap resamples over texts for TwoNN and RankMe (0: none).
    #[serde(default)]
    pub bootstrap: usize,
    #[serde(default = "default_level")]
    pub level: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub layers: Layers,
    /// Tokens (the first texts' in table order) stacked for linearity.
    #[serde(default = "default_linearity_tokens")]
    pub linearity_tokens: usize,
}

pub struct Geometry;

impl Node for Geometry {
    type Params = GeometryParams;
    const KIND: &'static str = "geometry";
    // 2: linearity over tokens stacked across texts (per text it was an exact fit).
    const VERSION: u32 = 2;
    const SUMMARY: &'static str =
        "per layer: Renyi entropy, curvature, linearity, TwoNN dimension and RankMe";

    fn interface(&self, p: &GeometryParams) -> Result<Interface, ParamError> {
        if p.alphas.is_empty() || p.alphas.iter().any(|a| !(*a > 0.0 && a.is_finite())) {
            return Err(ParamError::field(
                "alphas",
                "must be a non-empty list of positive numbers",
            ));
        }
        if !(0.0..1.0).contains(&p.discard_fraction) {
            return Err(ParamError::field("discard_fraction", "must lie in [0, 1)"));
        }
        super::pooled::check_bootstrap(p.bootstrap, p.level)?;
        p.layers.check("layers")?;
        Ok(Interface {
            inputs: vec![InputPort::one("embeddings", "an embedding table")],
            outputs: vec![
                OutputPort::published(
                    "per_text",
                    "one row per (text, layer): Renyi entropies and curvature",
                ),
                OutputPort::published(
                    "per_layer",
                    "one row per (layer, measure) over pooled sentence vectors, with intervals",
                ),
            ],
            ..Interface::default()
        })
    }

    fn run(&self, p: &GeometryParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let table = ctx.single_input("embeddings")?.path.clone();
        let layers = p.layers.resolve("layers", &table)?;
        let (records, by_layer, stacked, pooled) = per_text(p, &table, layers)?;
        let mut frame = lmgeo_tables::frame_from_records(&records)?;
        lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("per_text")?)?;
        ctx.emit_all(layer_summary(&by_layer)?);

        let order: Vec<usize> = (0..pooled.text_ids.len()).collect();
        let mut rows: Vec<Record> = Vec::new();
        for layer in pooled.layer_numbers() {
            let x = pooled.matrix(layer, &order);
            let on_layer = |e: lmgeo_probes::ProbeError| {
                NodeError::msg(format!("layer {layer} ({} pooled texts): {e}", order.len()))
            };
            let two_nn = intrinsic::two_nn(x.as_ref(), p.discard_fraction).map_err(on_layer)?;
            let rankme =
                intrinsic::rankme(x.as_ref(), intrinsic::DEFAULT_RANKME_EPS).map_err(on_layer)?;
            let options = BootstrapOptions {
                resamples: p.bootstrap,
                level: p.level,
                seed: p.seed,
            };
            let interval = |f: &dyn Fn(faer::MatRef<'_, f64>) -> lmgeo_probes::Result<f64>| {
                if p.bootstrap >= 2 {
                    bootstrap_ci(x.as_ref(), f, &options)
                        .map(|ci| Some((ci.lower, ci.upper)))
                        .map_err(on_layer)
                } else {
                    Ok(None)
                }
            };
            let discard = p.discard_fraction;
            let measures = [
                (
                    "twonn_dimension",
                    two_nn.dimension,
                    interval(&|m| {
                        Ok(intrinsic::two_nn(distinct_rows(m).as_ref(), discard)?.dimension)
                    })?,
                ),
                ("twonn_mle", two_nn.mle, None),
                (
                    "rankme",
                    rankme,
                    interval(&|m| intrinsic::rankme(m, intrinsic::DEFAULT_RANKME_EPS))?,
                ),
            ];
            let note = if two_nn.duplicates_dropped > 0 {
                Cell::Str(format!(
                    "TwoNN left out {} texts whose pooled vector repeats another's",
                    two_nn.duplicates_dropped
                ))
            } else {
                Cell::Null
            };
            for (name, value, ci) in measures {
                rows.push(vec![
                    ("layer".into(), Cell::Int(i64::from(layer))),
                    ("measure".into(), Cell::Str(name.into())),
                    ("value".into(), Cell::Float(value)),
                    (
                        "ci_lower".into(),
                        ci.map_or(Cell::Null, |c| Cell::Float(c.0)),
                    ),
                    (
                        "ci_upper".into(),
                        ci.map_or(Cell::Null, |c| Cell::Float(c.1)),
                    ),
                    ("n_texts".into(), Cell::Int(order.len() as i64)),
                    ("note".into(), note.clone()),
                ]);
                ctx.emit(
                    MetricRow::new(name, value)
                        .dim("layer", i64::from(layer))
                        .dim("pool", p.pool.name()),
                );
            }
        }
        let stacked_layers: Vec<i32> = stacked.keys().copied().collect();
        for pair in stacked_layers.windows(2) {
            let (x, y) = (&stacked[&pair[0]], &stacked[&pair[1]]);
            let (tokens, hidden) = (x.nrows(), x.ncols().max(y.ncols()));
            let (value, note) = if tokens > hidden {
                let v = intrinsic::linearity(x.as_ref(), y.as_ref()).map_err(|e| {
                    NodeError::msg(format!(
                        "linearity of layers {} to {}: {e}",
                        pair[0], pair[1]
                    ))
                })?;
                (Cell::Float(v), Cell::Null)
            } else {
                (
                    Cell::Null,
                    Cell::Str(format!(
                        "{tokens} tokens for {hidden} dimensions: an exact fit, not a measurement; \
                         raise `linearity_tokens` or add texts"
                    )),
                )
            };
            if let Cell::Float(v) = value {
                ctx.emit(MetricRow::new("linearity_to_next", v).dim("layer", i64::from(pair[0])));
            }
            rows.push(vec![
                ("layer".into(), Cell::Int(i64::from(pair[0]))),
                ("measure".into(), Cell::Str("linearity_to_next".into())),
                ("value".into(), value),
                ("ci_lower".into(), Cell::Null),
                ("ci_upper".into(), Cell::Null),
                ("n_texts".into(), Cell::Int(order.len() as i64)),
                ("note".into(), note),
            ]);
        }
        let mut frame = lmgeo_tables::frame_from_records(&rows)?;
        lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("per_layer")?)?;
        Ok(())
    }
}

/// The distinct rows of a bootstrap resample. TwoNN reads each point's two
/// nearest neighbours, and a resampled copy of a point would be the nearest
/// neighbour of the original and tie with it for every other point; so its
/// interval comes from the distinct texts of each resample (about 63% of
/// them), which is a subsample bootstrap.
fn distinct_rows(m: faer::MatRef<'_, f64>) -> faer::Mat<f64> {
    let mut seen: std::collections::HashSet<Vec<u64>> = std::collections::HashSet::new();
    let mut keep = Vec::new();
    for i in 0..m.nrows() {
        let bits: Vec<u64> = (0..m.ncols()).map(|j| m[(i, j)].to_bits()).collect();
        if seen.insert(bits) {
            keep.push(i);
        }
    }
    faer::Mat::from_fn(keep.len(), m.ncols(), |i, j| m[(keep[i], j)])
}

type LayerValues = BTreeMap<(i32, String), Vec<f64>>;
type Stacked = BTreeMap<i32, faer::Mat<f64>>;
type PerText = (Vec<Record>, LayerValues, Stacked, PooledLayers);

/// Renyi entropies and curvature of every (text, layer), each layer's
/// tokens stacked over the first texts up to `linearity_tokens`, and the
/// pooled vectors, in one pass over the table. The table is text-major, so
/// one text's layers are held at a time.
fn per_text(
    p: &GeometryParams,
    table: &std::path::Path,
    layers: Option<Vec<i32>>,
) -> Result<PerText, NodeError> {
    let mut reader = EmbeddingReader::open(table)?;
    let mut pooler = Pooler::new(p.pool, reader.hidden_size());
    if let Some(layers) = layers {
        reader = reader.with_layers(layers);
    }
    let preprocess = p.preprocess.into();
    let mut records = Vec::new();
    let mut by_layer: LayerValues = BTreeMap::new();
    let mut text: Vec<TextMatrix> = Vec::new();
    let mut stacked_rows: BTreeMap<i32, (usize, Vec<f32>)> = BTreeMap::new();
    let mut flush = |text: &mut Vec<TextMatrix>| -> Result<(), NodeError> {
        // A text's tokens join the stack whole (every layer or none), so
        // the rows of consecutive layers stay the same tokens.
        let stacked_so_far = text
            .first()
            .and_then(|m| stacked_rows.get(&m.layer))
            .map_or(0, |(rows, _)| *rows);
        let joins = text
            .first()
            .is_some_and(|m| stacked_so_far + m.rows <= p.linearity_tokens);
        for m in text.iter() {
            if joins {
                let entry = stacked_rows.entry(m.layer).or_insert((0, Vec::new()));
                entry.0 += m.rows;
                entry.1.extend_from_slice(&m.data);
            }
        }
        for m in text.iter() {
            let on = |e: lmgeo_probes::ProbeError| crate::common::on_matrix(m, e);
            let x = lmgeo_probes::matrix_from_rows_f32(m.rows, m.cols, &m.data).map_err(on)?;
            let mut record: Record = vec![
                ("text_id".into(), Cell::Str(m.text_id.clone())),
                ("layer".into(), Cell::Int(i64::from(m.layer))),
                ("n".into(), Cell::Int(m.rows as i64)),
            ];
            let mut push = |name: String, value: Option<f64>, record: &mut Record| {
                if let Some(v) = value {
                    by_layer.entry((m.layer, name.clone())).or_default().push(v);
                }
                record.push((name, value.map_or(Cell::Null, Cell::Float)));
            };
            for &alpha in &p.alphas {
                let h = intrinsic::renyi_entropy(x.as_ref(), alpha, preprocess).map_err(on)?;
                push(format!("renyi_entropy_alpha_{alpha}"), Some(h), &mut record);
            }
            // Fewer than 3 tokens, or a trajectory standing still, has no angle.
            let curvature = intrinsic::curvature(x.as_ref()).ok().map(|c| c.mean);
            push("curvature".into(), curvature, &mut record);
            records.push(record);
        }
        text.clear();
        Ok(())
    };
    for matrix in reader {
        let m = matrix?;
        pooler.push(&m)?;
        if text.first().is_some_and(|t| t.text_id != m.text_id) {
            flush(&mut text)?;
        }
        text.push(m);
    }
    flush(&mut text)?;
    if records.is_empty() {
        return Err(NodeError::msg(
            "the embedding table has no matrix for the requested layers",
        ));
    }
    let mut stacked = Stacked::new();
    for (layer, (rows, data)) in stacked_rows {
        if let Some(cols) = data.len().checked_div(rows) {
            let m = lmgeo_probes::matrix_from_rows_f32(rows, cols, &data)
                .map_err(|e| NodeError::msg(format!("stacked tokens of layer {layer}: {e}")))?;
            stacked.insert(layer, m);
        }
    }
    Ok((records, by_layer, stacked, pooler.finish(table)?))
}
