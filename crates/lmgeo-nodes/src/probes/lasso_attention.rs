//! `lasso_attention`: which context tokens does a Lasso regression of the new
//! token pick, against the tokens attention weights most (method.md §4)?

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use faer::Mat;
use lmgeo_dag::{
    InputPort, Interface, MetricRow, Node, NodeError, OutputPort, ParamError, RunContext,
};
use lmgeo_probes::attention::{HeadAggregation, aggregate_heads, compare};
use lmgeo_probes::lasso::{LassoOptions, lasso_tokens};
use lmgeo_probes::preprocess::{Preprocess, preprocess};
use lmgeo_tables::{AttentionReader, AttentionRow, Cell, Record};
use serde::{Deserialize, Serialize};

use lmgeo_probes::summary::mean;

use crate::common::{Layers, MeanSem, map_matrices, mean_sem, on_matrix};
use crate::verdicts;

fn default_alpha() -> f64 {
    lmgeo_probes::lasso::DEFAULT_ALPHA
}
fn default_tol() -> f64 {
    1e-4
}
fn default_max_iter() -> usize {
    1000
}
fn default_k_max() -> usize {
    10
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HeadAggregationParam {
    #[default]
    Mean,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RowPreprocess {
    /// Unit rows, no centring (as for the information gain).
    #[default]
    L2,
    None,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LassoAttentionParams {
    /// Lasso penalty (scikit-learn scaling: samples = hidden dimensions).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    #[serde(default = "default_tol")]
    pub tol: f64,
    #[serde(default = "default_max_iter")]
    pub max_iter: usize,
    /// Compare top-k sets for k = 1..=k_max (capped by the context length).
    #[serde(default = "default_k_max")]
    pub k_max: usize,
    #[serde(default)]
    pub heads: HeadAggregationParam,
    #[serde(default)]
    pub preprocess: RowPreprocess,
    /// Hidden-state layers to analyse (layer 0, the embeddings, has no
    /// attention and is skipped).
    #[serde(default)]
    pub layers: Layers,
    /// Which block's attention goes with hidden-state layer `l`: block
    /// `l + attention_offset`. 0 (default): the block that produced layer
    /// `l`; 1: the next block, whose keys are layer `l`.
    #[serde(default)]
    pub attention_offset: i32,
}

pub struct LassoAttention;

struct TextResult {
    text_id: String,
    layer: i32,
    query: usize,
    tokens: Vec<String>,
    attention: Vec<f64>,
    coef: Vec<f64>,
    comparison: lmgeo_probes::attention::AttentionComparison,
    iterations: usize,
    converged: bool,
}

impl Node for LassoAttention {
    type Params = LassoAttentionParams;
    const KIND: &'static str = "lasso_attention";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str =
        "Lasso against attention at selecting the context tokens of the last token";

    fn interface(&self, p: &LassoAttentionParams) -> Result<Interface, ParamError> {
        if !(p.alpha > 0.0 && p.alpha.is_finite()) {
            return Err(ParamError::field("alpha", "must be a positive number"));
        }
        if !(p.tol > 0.0 && p.tol.is_finite()) {
            return Err(ParamError::field("tol", "must be a positive number"));
        }
        if p.k_max == 0 {
            return Err(ParamError::field("k_max", "must be at least 1"));
        }
        if p.max_iter == 0 {
            return Err(ParamError::field("max_iter", "must be at least 1"));
        }
        if !(0..=1).contains(&p.attention_offset) {
            return Err(ParamError::field("attention_offset", "must be 0 or 1"));
        }
        p.layers.check("layers")?;
        Ok(Interface {
            inputs: vec![
                InputPort::one("embeddings", "an embedding table"),
                InputPort::one(
                    "attention",
                    "the attention table of the last query (extract with attention = \"last\")",
                ),
            ],
            outputs: vec![
                OutputPort::published(
                    "per_k",
                    "per (text, layer, k): overlap, Jaccard, precision, both residuals",
                ),
                OutputPort::published(
                    "per_text",
                    "per (text, layer): rank correlations, Lasso convergence",
                ),
                OutputPort::published(
                    "selections",
                    "per (text, layer, method): tokens ranked by Lasso |beta| and by attention",
                ),
                OutputPort::published(
                    "token_weights",
                    "per (text, layer, position): token, |beta| and attention weight",
                ),
                crate::report::section_output(),
            ],
            ..Interface::default()
        })
    }

    fn run(&self, p: &LassoAttentionParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let table = ctx.single_input("embeddings")?.path.clone();
        let attention = read_attention(&ctx.single_input("attention")?.path)?;
        let results = measure(p, &table, &attention)?;
        if results.is_empty() {
            return Err(NodeError::msg(
                "no (text, layer) had both hidden states and attention; extract attention with attention = \"last\"",
            ));
        }
        let groups = Groups::of(&results);
        for (name, records) in tables(&results) {
            let mut frame = lmgeo_tables::frame_from_records(&records)?;
            lmgeo_tables::write_parquet(&mut frame, &ctx.output_path(name)?)?;
        }
        let section = lasso_section(ctx.node_id(), &groups.by_layer_k, &results)?;
        crate::report::write_section(ctx, &section)?;
        ctx.emit_all(groups.metrics()?);
        Ok(())
    }
}

/// The attention of the last query, indexed by (text, block). It is small:
/// one row per head per (text, layer).
fn read_attention(path: &Path) -> Result<HashMap<(String, i32), AttentionRow>, NodeError> {
    let mut attention = HashMap::new();
    for row in AttentionReader::open(path)? {
        let row = row?;
        attention.insert((row.text_id.clone(), row.layer), row);
    }
    Ok(attention)
}

/// The Lasso fit and its comparison with attention for every (text, layer)
/// of the table that has attention.
fn measure(
    p: &LassoAttentionParams,
    table: &Path,
    attention: &HashMap<(String, i32), AttentionRow>,
) -> Result<Vec<TextResult>, NodeError> {
    let layers = p.layers.resolve("layers", table)?;
    let options = LassoOptions {
        alpha: p.alpha,
        tol: p.tol,
        max_iter: p.max_iter,
        ..LassoOptions::default()
    };
    let aggregation = match p.heads {
        HeadAggregationParam::Mean => HeadAggregation::Mean,
        HeadAggregationParam::Max => HeadAggregation::Max,
    };
    let results = map_matrices(table, layers, |m| {
        if m.layer == 0 && p.attention_offset == 0 {
            return Ok(None);
        }
        let block = m.layer + p.attention_offset;
        let Some(att) = attention.get(&(m.text_id.clone(), block)) else {
            return Ok(None);
        };
        let query = att.query as usize;
        if query == 0 || query >= m.rows {
            return Err(on_matrix(
                m,
                format!(
                    "attention query {query} has no context among {} tokens",
                    m.rows
                ),
            ));
        }
        // Attention over the earlier keys only: the query's weight on
        // itself is not a context token.
        let per_head = Mat::from_fn(att.heads, query, |h, j| f64::from(att.head(h)[j]));
        let weights =
            aggregate_heads(per_head.as_ref(), aggregation).map_err(|e| on_matrix(m, e))?;
        let rows = Mat::from_fn(query + 1, m.cols, |i, j| f64::from(m.row(i)[j]));
        let rows = match p.preprocess {
            RowPreprocess::L2 => {
                preprocess(rows.as_ref(), Preprocess::L2).map_err(|e| on_matrix(m, e))?
            }
            RowPreprocess::None => rows,
        };
        let context = Mat::from_fn(query, m.cols, |i, j| rows[(i, j)]);
        let new: Vec<f64> = (0..m.cols).map(|j| rows[(query, j)]).collect();
        let fit = lasso_tokens(context.as_ref(), &new, &options).map_err(|e| on_matrix(m, e))?;
        let k_max = p.k_max.min(query);
        let comparison = compare(&weights, &fit.coef, context.as_ref(), &new, k_max)
            .map_err(|e| on_matrix(m, e))?;
        Ok(Some(TextResult {
            text_id: m.text_id.clone(),
            layer: m.layer,
            query,
            tokens: m.tokens[..query].to_vec(),
            attention: weights,
            coef: fit.coef,
            comparison,
            iterations: fit.iterations,
            converged: fit.converged,
        }))
    })?;
    Ok(results.into_iter().flatten().collect())
}

/// The four published tables, by output name: `per_k`, `per_text`,
/// `selections` and `token_weights`.
fn tables(results: &[TextResult]) -> [(&'static str, Vec<Record>); 4] {
    let mut per_k: Vec<Record> = Vec::new();
    let mut per_text: Vec<Record> = Vec::new();
    let mut selections: Vec<Record> = Vec::new();
    let mut token_weights: Vec<Record> = Vec::new();
    for r in results {
        for c in &r.comparison.top_k {
            per_k.push(vec![
                ("text_id".into(), Cell::Str(r.text_id.clone())),
                ("layer".into(), Cell::Int(i64::from(r.layer))),
                ("k".into(), Cell::Int(c.k as i64)),
                ("overlap".into(), Cell::Int(c.overlap as i64)),
                ("jaccard".into(), Cell::Float(c.jaccard)),
                ("precision".into(), Cell::Float(c.precision)),
                ("lasso_residual".into(), Cell::Float(c.lasso_residual)),
                (
                    "attention_residual".into(),
                    Cell::Float(c.attention_residual),
                ),
                (
                    "lasso_better".into(),
                    Cell::Bool(c.lasso_residual < c.attention_residual),
                ),
            ]);
        }
        per_text.push(vec![
            ("text_id".into(), Cell::Str(r.text_id.clone())),
            ("layer".into(), Cell::Int(i64::from(r.layer))),
            ("query".into(), Cell::Int(r.query as i64)),
            ("spearman".into(), r.comparison.spearman.into()),
            ("kendall_tau_b".into(), r.comparison.kendall_tau_b.into()),
            (
                "lasso_nonzero".into(),
                Cell::Int(r.comparison.lasso_nonzero as i64),
            ),
            ("lasso_iterations".into(), Cell::Int(r.iterations as i64)),
            ("lasso_converged".into(), Cell::Bool(r.converged)),
        ]);
        let lasso_order = &r.comparison.lasso_order;
        let mut attention_order: Vec<usize> = (0..r.attention.len()).collect();
        attention_order.sort_by(|&a, &b| r.attention[b].total_cmp(&r.attention[a]));
        for (method, order, scores) in [
            (
                "lasso",
                lasso_order,
                r.coef.iter().map(|c| c.abs()).collect::<Vec<_>>(),
            ),
            ("attention", &attention_order, r.attention.clone()),
        ] {
            for (rank, &position) in order.iter().enumerate() {
                selections.push(vec![
                    ("text_id".into(), Cell::Str(r.text_id.clone())),
                    ("layer".into(), Cell::Int(i64::from(r.layer))),
                    ("method".into(), Cell::Str(method.into())),
                    ("rank".into(), Cell::Int(rank as i64 + 1)),
                    ("position".into(), Cell::Int(position as i64)),
                    ("score".into(), Cell::Float(scores[position])),
                ]);
            }
        }
        for position in 0..r.query {
            token_weights.push(vec![
                ("text_id".into(), Cell::Str(r.text_id.clone())),
                ("layer".into(), Cell::Int(i64::from(r.layer))),
                ("position".into(), Cell::Int(position as i64)),
                ("token".into(), Cell::Str(r.tokens[position].clone())),
                ("lasso_abs_coef".into(), Cell::Float(r.coef[position].abs())),
                ("attention".into(), Cell::Float(r.attention[position])),
            ]);
        }
    }
    [
        ("per_k", per_k),
        ("per_text", per_text),
        ("selections", selections),
        ("token_weights", token_weights),
    ]
}

/// The comparisons over texts: per (layer, k, quantity) and per (layer,
/// quantity).
struct Groups {
    by_layer_k: BTreeMap<(i32, usize, &'static str), Vec<f64>>,
    by_layer: BTreeMap<(i32, &'static str), Vec<f64>>,
}

impl Groups {
    fn of(results: &[TextResult]) -> Self {
        let mut by_layer_k: BTreeMap<(i32, usize, &str), Vec<f64>> = BTreeMap::new();
        let mut by_layer: BTreeMap<(i32, &str), Vec<f64>> = BTreeMap::new();
        for r in results {
            for c in &r.comparison.top_k {
                let lasso_better = c.lasso_residual < c.attention_residual;
                for (name, value) in [
                    ("jaccard", c.jaccard),
                    ("precision", c.precision),
                    ("lasso_residual", c.lasso_residual),
                    ("attention_residual", c.attention_residual),
                    ("lasso_better", f64::from(u8::from(lasso_better))),
                ] {
                    by_layer_k
                        .entry((r.layer, c.k, name))
                        .or_default()
                        .push(value);
                }
            }
            if let Some(s) = r.comparison.spearman {
                by_layer.entry((r.layer, "spearman")).or_default().push(s);
            }
            if let Some(k) = r.comparison.kendall_tau_b {
                by_layer
                    .entry((r.layer, "kendall_tau_b"))
                    .or_default()
                    .push(k);
            }
            by_layer
                .entry((r.layer, "lasso_nonzero"))
                .or_default()
                .push(r.comparison.lasso_nonzero as f64);
        }
        Groups {
            by_layer_k,
            by_layer,
        }
    }

    /// Mean and standard error of every group, as metric rows.
    fn metrics(&self) -> Result<Vec<MetricRow>, NodeError> {
        let mut rows = Vec::new();
        for ((layer, k, name), values) in &self.by_layer_k {
            let MeanSem { mean, sem } = mean_sem(values)?;
            let metric = if *name == "lasso_better" {
                "lasso_beats_attention".to_string()
            } else {
                name.to_string()
            };
            rows.push(
                MetricRow::new(metric.clone(), mean)
                    .dim("layer", i64::from(*layer))
                    .dim("k", *k)
                    .dim("stat", "mean"),
            );
            rows.push(
                MetricRow::new(metric, sem)
                    .dim("layer", i64::from(*layer))
                    .dim("k", *k)
                    .dim("stat", "sem"),
            );
        }
        for ((layer, name), values) in &self.by_layer {
            let MeanSem { mean, sem } = mean_sem(values)?;
            rows.push(
                MetricRow::new(*name, mean)
                    .dim("layer", i64::from(*layer))
                    .dim("stat", "mean"),
            );
            rows.push(
                MetricRow::new(*name, sem)
                    .dim("layer", i64::from(*layer))
                    .dim("stat", "sem"),
            );
        }
        Ok(rows)
    }
}

fn lasso_section(
    node: &str,
    by_layer_k: &BTreeMap<(i32, usize, &str), Vec<f64>>,
    results: &[TextResult],
) -> Result<lmgeo_report::Section, NodeError> {
    use lmgeo_report::{Heatmap, LinePlot, NamedFigure, Section, Series, Table};
    let deepest = by_layer_k.keys().map(|(l, _, _)| *l).max().unwrap_or(0);
    let curve = |name: &str| -> Result<Vec<(f64, f64, f64, f64)>, NodeError> {
        by_layer_k
            .iter()
            .filter(|((l, _, n), _)| *l == deepest && *n == name)
            .map(|((_, k, _), v)| {
                let MeanSem { mean, sem } = mean_sem(v)?;
                Ok((*k as f64, mean, mean - sem, mean + sem))
            })
            .collect()
    };
    let jaccard = curve("jaccard")?;
    let better = curve("lasso_better")?;
    let all_better: Vec<f64> = by_layer_k
        .iter()
        .filter(|((_, _, n), _)| *n == "lasso_better")
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    // Over every layer, text and k (None: nothing compared).
    let fraction = mean(&all_better).ok();
    // Over k at the deepest layer (NaN: no curve).
    let mean_jaccard = mean(&jaccard.iter().map(|j| j.1).collect::<Vec<_>>()).unwrap_or(f64::NAN);
    let verdict = verdicts::lasso_attention(mean_jaccard, fraction);
    let fraction = fraction.unwrap_or(f64::NAN);
    let at_deepest: Vec<&TextResult> = results.iter().filter(|r| r.layer == deepest).collect();
    let mut support: Vec<usize> = at_deepest
        .iter()
        .map(|r| r.comparison.lasso_nonzero)
        .collect();
    support.sort_unstable();
    let sink = at_deepest
        .iter()
        .filter(|r| {
            let top = r
                .attention
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)));
            top.is_some_and(|(i, _)| i == 0)
        })
        .count();
    let mut evidence = format!(
        "At layer {deepest}, the top-k sets of Lasso and attention have mean Jaccard overlap {mean_jaccard:.2} over k; over every layer, text and k, Lasso's tokens reconstruct the new token with a smaller residual than attention's in {:.0}% of cases.",
        fraction * 100.0
    );
    if !support.is_empty() {
        evidence.push_str(&format!(
            " At that layer the Lasso keeps a median of {} tokens (beyond them its top-k continues with the tokens closest to entering), and attention's largest weight sits on the first position, the attention sink, in {sink} of {} texts.",
            support[support.len() / 2],
            support.len()
        ));
    }
    let mut section = Section::new(
        "Lasso against attention: which context tokens carry the new token?",
        "A Lasso regression of the new token on its context selects tokens that differ from those attention weights most, and its selection sometimes reconstructs the token better than attention's (Tan et al., §4).",
        verdict,
        evidence,
    )
    .figure(NamedFigure::new(
        format!("{node}-overlap"),
        "Mean over texts at the deepest layer, with standard errors.",
        LinePlot {
            title: format!("Lasso against attention, layer {deepest}"),
            x_label: "k (size of the top-k sets)".into(),
            y_label: "fraction".into(),
            x_log: false,
            y_log: false,
            series: vec![
                Series::line("Jaccard overlap", jaccard.iter().map(|j| (j.0, j.1)).collect())
                    .with_band(jaccard.iter().map(|j| (j.0, j.2, j.3)).collect()),
                Series::line("Lasso reconstructs better", better.iter().map(|j| (j.0, j.1)).collect())
                    .with_band(better.iter().map(|j| (j.0, j.2, j.3)).collect()),
            ],
        },
    ))
    .table(Table {
        columns: vec!["k".into(), "Jaccard".into(), "Lasso better".into()],
        rows: jaccard
            .iter()
            .zip(&better)
            .map(|(j, b)| vec![format!("{}", j.0), format!("{:.3}", j.1), format!("{:.2}", b.1)])
            .collect(),
    });
    if let Some(example) = results.iter().find(|r| r.layer == deepest) {
        let columns: Vec<String> = example.tokens.clone();
        section = section.figure(NamedFigure::new(
            format!("{node}-example"),
            format!("Text `{}`: each method's weight on the context tokens, rows scaled to their maximum.", example.text_id),
            Heatmap {
                title: format!("Lasso |β| and attention over the tokens of one text (layer {deepest})"),
                x_label: "context token".into(),
                y_label: "method".into(),
                row_labels: vec!["Lasso |β|".into(), "attention".into()],
                col_labels: columns,
                values: vec![example.coef.iter().map(|c| c.abs()).collect(), example.attention.clone()],
                color_label: "relative weight".into(),
                symmetric: false,
                normalize_rows: true,
            },
        ));
    }
    Ok(section)
}
