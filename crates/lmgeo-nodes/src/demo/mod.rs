//! Small node kinds that exercise the engine without any model: a seeded
//! synthetic matrix, a matrix loaded from a file, a per-matrix statistic and
//! a collecting summary. `experiments/demo.toml` uses them.

use std::path::PathBuf;

use lmgeo_dag::{
    ExternalFile, InputPort, Interface, MetricRow, Node, NodeError, OutputPort, ParamError,
    RunContext,
};
use lmgeo_tables::{Cell, EmbeddingReader, EmbeddingWriter, MatrixRows, Record};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::npy::read_npy;

pub fn register(registry: &mut lmgeo_dag::Registry) {
    registry
        .register(SyntheticMatrix)
        .register(LoadMatrix)
        .register(MatrixStats)
        .register(Summarize);
}

fn default_rows() -> usize {
    64
}
fn default_cols() -> usize {
    32
}
fn default_texts() -> usize {
    1
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticParams {
    /// Tokens per text.
    #[serde(default = "default_rows")]
    pub rows: usize,
    /// Hidden size.
    #[serde(default = "default_cols")]
    pub cols: usize,
    /// Rank of the signal (full rank when absent).
    #[serde(default)]
    pub rank: Option<usize>,
    /// Standard deviation of isotropic noise added to the low-rank signal.
    #[serde(default)]
    pub noise: f64,
    #[serde(default)]
    pub seed: u64,
    /// How many independent matrices ("texts") to generate.
    #[serde(default = "default_texts")]
    pub texts: usize,
}

/// Gaussian matrices `A (n x r) · B (r x d) + noise`, seeded: a stand-in for
/// hidden states with a known rank.
pub struct SyntheticMatrix;

impl Node for SyntheticMatrix {
    type Params = SyntheticParams;
    const KIND: &'static str = "synthetic_matrix";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "seeded Gaussian matrices of a chosen rank, as an embedding table";

    fn interface(&self, p: &SyntheticParams) -> Result<Interface, ParamError> {
        if p.rows == 0 {
            return Err(ParamError::field("rows", "must be at least 1"));
        }
        if p.cols == 0 {
            return Err(ParamError::field("cols", "must be at least 1"));
        }
        if p.texts == 0 {
            return Err(ParamError::field("texts", "must be at least 1"));
        }
        if p.rank == Some(0) {
            return Err(ParamError::field("rank", "must be at least 1"));
        }
        if !(p.noise >= 0.0 && p.noise.is_finite()) {
            return Err(ParamError::field("noise", "must be a non-negative number"));
        }
        Ok(Interface {
            outputs: vec![OutputPort::internal(
                "embeddings",
                "an embedding table, layer 0",
            )],
            ..Interface::default()
        })
    }

    fn run(&self, p: &SyntheticParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(p.seed);
        let mut writer = EmbeddingWriter::create(
            &ctx.output_path("embeddings")?,
            p.cols,
            vec![("lmgeo.source".into(), "synthetic_matrix".into())],
        )?;
        let tokens: Vec<String> = (0..p.rows).map(|i| format!("t{i}")).collect();
        let token_ids: Vec<u32> = (0..p.rows as u32).collect();
        for text in 0..p.texts {
            let data = synthetic(&mut rng, p.rows, p.cols, p.rank, p.noise);
            writer.push(&MatrixRows {
                text_id: &format!("synthetic-{text}"),
                text_index: text as u32,
                layer: 0,
                token_ids: &token_ids,
                tokens: &tokens,
                data: &data,
            })?;
        }
        writer.finish()?;
        ctx.emit(MetricRow::new("rows", p.rows as f64));
        ctx.emit(MetricRow::new("cols", p.cols as f64));
        Ok(())
    }
}

fn synthetic(
    rng: &mut impl rand::Rng,
    n: usize,
    d: usize,
    rank: Option<usize>,
    noise: f64,
) -> Vec<f32> {
    let mut normal = || -> f64 { StandardNormal.sample(rng) };
    let mut out = vec![0.0f32; n * d];
    match rank {
        None => out.iter_mut().for_each(|v| *v = normal() as f32),
        Some(r) => {
            let a: Vec<f64> = (0..n * r).map(|_| normal()).collect();
            let b: Vec<f64> = (0..r * d).map(|_| normal()).collect();
            for i in 0..n {
                for j in 0..d {
                    let s: f64 = (0..r).map(|k| a[i * r + k] * b[k * d + j]).sum();
                    out[i * d + j] = s as f32;
                }
            }
            if noise > 0.0 {
                out.iter_mut().for_each(|v| *v += (noise * normal()) as f32);
            }
        }
    }
    out
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadParams {
    /// A `.npy` file (2-D float32/float64) or an lmgeo embedding table
    /// (`.parquet`), relative to the working directory.
    pub path: String,
}

/// A matrix from a file; the file's content is part of the cache key.
pub struct LoadMatrix;

impl Node for LoadMatrix {
    type Params = LoadParams;
    const KIND: &'static str = "load_matrix";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "a matrix from a .npy file or an embedding table";

    fn interface(&self, p: &LoadParams) -> Result<Interface, ParamError> {
        let path = PathBuf::from(&p.path);
        match path.extension().and_then(|e| e.to_str()) {
            Some("npy") | Some("parquet") => {}
            _ => {
                return Err(ParamError::field(
                    "path",
                    "must name a .npy or .parquet file",
                ));
            }
        }
        Ok(Interface {
            outputs: vec![OutputPort::internal("embeddings", "an embedding table")],
            files: vec![ExternalFile {
                path,
                known_digest: None,
            }],
            ..Interface::default()
        })
    }

    fn run(&self, p: &LoadParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let path = PathBuf::from(&p.path);
        let out = ctx.output_path("embeddings")?;
        if path.extension().is_some_and(|e| e == "npy") {
            let m = read_npy(&path)?;
            let mut writer = EmbeddingWriter::create(
                &out,
                m.cols,
                vec![("lmgeo.source".into(), p.path.clone())],
            )?;
            let tokens: Vec<String> = (0..m.rows).map(|i| format!("r{i}")).collect();
            let ids: Vec<u32> = (0..m.rows as u32).collect();
            writer.push(&MatrixRows {
                text_id: "matrix",
                text_index: 0,
                layer: 0,
                token_ids: &ids,
                tokens: &tokens,
                data: &m.data,
            })?;
            writer.finish()?;
        } else {
            // Validate it is an embedding table before passing it on.
            let reader = EmbeddingReader::open(&path)?;
            let mut count = 0;
            for matrix in reader {
                matrix?;
                count += 1;
            }
            if count == 0 {
                return Err(NodeError::msg(format!(
                    "{} holds no matrices",
                    path.display()
                )));
            }
            std::fs::copy(&path, &out)?;
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    /// Subtract the mean row before measuring.
    #[serde(default)]
    pub center: bool,
}

/// Frobenius norm and mean row norm of every (text, layer) matrix.
pub struct MatrixStats;

impl Node for MatrixStats {
    type Params = StatsParams;
    const KIND: &'static str = "matrix_stats";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Frobenius norm and mean row norm of each matrix";

    fn interface(&self, _: &StatsParams) -> Result<Interface, ParamError> {
        Ok(Interface {
            inputs: vec![InputPort::one("matrix", "an embedding table")],
            outputs: vec![OutputPort::published(
                "per_text",
                "one row per (text, layer)",
            )],
            ..Interface::default()
        })
    }

    fn run(&self, p: &StatsParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let input = ctx.single_input("matrix")?.path.clone();
        let mut records: Vec<Record> = Vec::new();
        let mut by_layer: std::collections::BTreeMap<i32, Vec<f64>> = Default::default();
        for matrix in EmbeddingReader::open(&input)? {
            let m = matrix?;
            let mut mean = vec![0.0f64; m.cols];
            if p.center {
                for i in 0..m.rows {
                    for (acc, v) in mean.iter_mut().zip(m.row(i)) {
                        *acc += f64::from(*v) / m.rows as f64;
                    }
                }
            }
            let mut total = 0.0;
            let mut row_norms = 0.0;
            for i in 0..m.rows {
                let sq: f64 = m
                    .row(i)
                    .iter()
                    .zip(&mean)
                    .map(|(v, mu)| (f64::from(*v) - mu).powi(2))
                    .sum();
                total += sq;
                row_norms += sq.sqrt();
            }
            let frobenius = total.sqrt();
            by_layer.entry(m.layer).or_default().push(frobenius);
            records.push(vec![
                ("text_id".into(), Cell::Str(m.text_id.clone())),
                ("layer".into(), Cell::Int(i64::from(m.layer))),
                ("rows".into(), Cell::Int(m.rows as i64)),
                ("cols".into(), Cell::Int(m.cols as i64)),
                ("frobenius_norm".into(), Cell::Float(frobenius)),
                (
                    "mean_row_norm".into(),
                    Cell::Float(row_norms / m.rows as f64),
                ),
            ]);
        }
        let mut frame = lmgeo_tables::frame_from_records(&records)?;
        lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("per_text")?)?;
        for (layer, values) in by_layer {
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            ctx.emit(
                MetricRow::new("frobenius_norm", mean)
                    .dim("layer", i64::from(layer))
                    .dim("stat", "mean"),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummarizeParams {
    /// Only these metrics (all when empty).
    #[serde(default)]
    pub metrics: Vec<String>,
}

/// Mean, minimum, maximum and count of upstream metrics, across the
/// instances it collects.
pub struct Summarize;

impl Node for Summarize {
    type Params = SummarizeParams;
    const KIND: &'static str = "summarize";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "mean, min, max and count of collected metrics";

    fn interface(&self, _: &SummarizeParams) -> Result<Interface, ParamError> {
        Ok(Interface {
            inputs: vec![InputPort::many("values", "`metrics` outputs to summarise")],
            outputs: vec![],
            ..Interface::default()
        })
    }

    fn run(&self, p: &SummarizeParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let mut values: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        for input in ctx.input("values") {
            if input.output != lmgeo_dag::graph::METRICS_OUTPUT {
                return Err(NodeError::msg(format!(
                    "`values` takes `metrics` outputs; `{}.{}` is not one",
                    input.node, input.output
                )));
            }
            for row in crate::read_metrics(&input.path)? {
                if p.metrics.is_empty() || p.metrics.contains(&row.metric) {
                    values.entry(row.metric).or_default().push(row.value);
                }
            }
        }
        for (metric, v) in values {
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            for (stat, value) in [("mean", mean), ("min", min), ("max", max), ("count", n)] {
                ctx.emit(
                    MetricRow::new(format!("{metric}_{stat}"), value)
                        .dim("of", metric.clone())
                        .dim("stat", stat),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_rank_is_respected() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (n, d, r) = (12, 8, 2);
        let m = synthetic(&mut rng, n, d, Some(r), 0.0);
        // Every 3x3 minor of a rank-2 matrix vanishes.
        let at = |i: usize, j: usize| f64::from(m[i * d + j]);
        for rows in [(0, 1, 2), (3, 7, 11)] {
            for cols in [(0, 1, 2), (2, 5, 7)] {
                let (a, b, c) = rows;
                let (x, y, z) = cols;
                let det = at(a, x) * (at(b, y) * at(c, z) - at(b, z) * at(c, y))
                    - at(a, y) * (at(b, x) * at(c, z) - at(b, z) * at(c, x))
                    + at(a, z) * (at(b, x) * at(c, y) - at(b, y) * at(c, x));
                let scale = (0..3).map(|k| at(a, k).abs()).sum::<f64>().powi(3);
                assert!(det.abs() < 1e-4 * scale.max(1.0), "minor {det}");
            }
        }
    }
}
