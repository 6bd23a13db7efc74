//! `info_gain`: Gaussian-process information gain of a new token given its
//! context, the GP = ridge identity, and the gain of every token against its
//! prefix (method.md §3).

use std::collections::BTreeMap;

use faer::Mat;
use lmgeo_dag::{
    InputPort, Interface, MetricRow, Node, NodeError, OutputPort, ParamError, RunContext,
};
use lmgeo_probes::gp::{
    center_l2_against_context, centring_trap_bound, gain_curve, information_gain,
};
use lmgeo_probes::preprocess::{Preprocess, preprocess};
use lmgeo_tables::{Cell, Record, TextMatrix};
use serde::{Deserialize, Serialize};

use crate::common::{Layers, MeanSem, layer_summary, map_matrices, mean_sem, on_matrix};
use crate::verdicts;

fn default_sigma() -> f64 {
    lmgeo_probes::gp::DEFAULT_SIGMA
}
fn default_true() -> bool {
    true
}

/// Preprocessing for the gain: never centre with the full-sequence mean by
/// default, since that puts the last token in the span of the others and
/// the gain collapses to an artefact of sigma (method.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GainPreprocess {
    /// Unit rows, no centring.
    #[default]
    L2,
    /// Centre context and new token with the context's own mean, then unit rows.
    ContextCenterL2,
    /// Full-sequence centring: kept to demonstrate the artefact.
    CenterL2,
    None,
}

/// Which token is the "new" one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Position {
    Last(LastWord),
    Index(i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastWord {
    Last,
}

impl Default for Position {
    fn default() -> Self {
        Position::Last(LastWord::Last)
    }
}

impl Position {
    /// The 0-based index in a sequence of `n` tokens (negative counts from the end).
    pub fn resolve(&self, n: usize) -> Option<usize> {
        match self {
            Position::Last(_) => n.checked_sub(1),
            Position::Index(i) if *i >= 0 => (*i as usize).lt(&n).then_some(*i as usize),
            Position::Index(i) => n.checked_sub(i.unsigned_abs() as usize),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfoGainParams {
    /// GP noise sigma.
    #[serde(default = "default_sigma")]
    pub sigma: f64,
    #[serde(default)]
    pub preprocess: GainPreprocess,
    /// The new token: "last" or an index (negative counts from the end).
    #[serde(default)]
    pub position: Position,
    #[serde(default)]
    pub layers: Layers,
    /// Also compute the gain of every token against its prefix.
    #[serde(default = "default_true")]
    pub curve: bool,
}

pub struct InfoGain;

struct TextGain {
    text_id: String,
    layer: i32,
    position: usize,
    s2_gp: f64,
    s2_ridge: f64,
    relative_difference: f64,
    gain: f64,
    curve: Vec<f64>,
    /// Under full-sequence centring: the ridge objective at the exact
    /// linear combination that rebuilds the last token from the others,
    /// sigma^2 sum (|c_i| / |c_last|)^2, an upper bound of its variance.
    trap_bound: Option<f64>,
}

fn rows_of(m: &TextMatrix, range: std::ops::Range<usize>) -> Mat<f64> {
    Mat::from_fn(range.len(), m.cols, |i, j| {
        f64::from(m.row(range.start + i)[j])
    })
}

impl Node for InfoGain {
    type Params = InfoGainParams;
    const KIND: &'static str = "info_gain";
    // 3: the report section checks the centring trap's bound.
    const VERSION: u32 = 3;
    const SUMMARY: &'static str =
        "GP information gain of a new token, GP = ridge check, gain per position";

    fn interface(&self, p: &InfoGainParams) -> Result<Interface, ParamError> {
        if !(p.sigma > 0.0 && p.sigma.is_finite()) {
            return Err(ParamError::field("sigma", "must be a positive number"));
        }
        p.layers.check("layers")?;
        Ok(Interface {
            inputs: vec![InputPort::one("embeddings", "an embedding table")],
            outputs: vec![
                OutputPort::published(
                    "per_text",
                    "s^2 by both routes, their difference and the gain per (text, layer)",
                ),
                OutputPort::published(
                    "curve",
                    "gain of each token against its prefix, per (text, layer, position)",
                ),
                crate::report::section_output(),
            ],
            ..Interface::default()
        })
    }

    fn run(&self, p: &InfoGainParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let table = ctx.single_input("embeddings")?.path.clone();
        let layers = p.layers.resolve("layers", &table)?;
        let results = map_matrices(&table, layers, |m| {
            let position = p
                .position
                .resolve(m.rows)
                .filter(|t| *t >= 1)
                .ok_or_else(|| {
                    on_matrix(
                        m,
                        format!(
                            "no token {:?} with a non-empty context among {} tokens",
                            p.position, m.rows
                        ),
                    )
                })?;
            let mut trap_bound = None;
            let context = rows_of(m, 0..position);
            let new: Vec<f64> = m.row(position).iter().map(|v| f64::from(*v)).collect();
            let (context, new) = match p.preprocess {
                GainPreprocess::L2 => {
                    let c = preprocess(context.as_ref(), Preprocess::L2)
                        .map_err(|e| on_matrix(m, e))?;
                    let z = Mat::from_fn(1, new.len(), |_, j| new[j]);
                    let z = preprocess(z.as_ref(), Preprocess::L2).map_err(|e| on_matrix(m, e))?;
                    (c, (0..z.ncols()).map(|j| z[(0, j)]).collect())
                }
                GainPreprocess::ContextCenterL2 => {
                    center_l2_against_context(context.as_ref(), &new)
                        .map_err(|e| on_matrix(m, e))?
                }
                GainPreprocess::CenterL2 => {
                    let all = rows_of(m, 0..position + 1);
                    trap_bound = Some(
                        centring_trap_bound(all.as_ref(), p.sigma).map_err(|e| on_matrix(m, e))?,
                    );
                    let all = preprocess(all.as_ref(), Preprocess::CenterL2)
                        .map_err(|e| on_matrix(m, e))?;
                    let c = Mat::from_fn(position, all.ncols(), |i, j| all[(i, j)]);
                    (c, (0..all.ncols()).map(|j| all[(position, j)]).collect())
                }
                GainPreprocess::None => (context, new),
            };
            let report =
                information_gain(context.as_ref(), &new, p.sigma).map_err(|e| on_matrix(m, e))?;
            let curve = if p.curve {
                let z = rows_of(m, 0..m.rows);
                let z = match p.preprocess {
                    GainPreprocess::None => z,
                    // Every prefix has its own context mean; the curve uses
                    // unit rows so that each step is comparable.
                    _ => preprocess(z.as_ref(), Preprocess::L2).map_err(|e| on_matrix(m, e))?,
                };
                gain_curve(z.as_ref(), p.sigma)
                    .map_err(|e| on_matrix(m, e))?
                    .information_gain
            } else {
                Vec::new()
            };
            Ok(TextGain {
                text_id: m.text_id.clone(),
                layer: m.layer,
                position,
                s2_gp: report.s2_gp,
                s2_ridge: report.s2_ridge,
                relative_difference: report.relative_difference,
                gain: report.information_gain,
                curve,
                trap_bound,
            })
        })?;
        if results.is_empty() {
            return Err(NodeError::msg(
                "the embedding table has no matrix for the requested layers",
            ));
        }
        let mut per_text: Vec<Record> = Vec::new();
        let mut curve_rows: Vec<Record> = Vec::new();
        let mut by_layer: BTreeMap<(i32, String), Vec<f64>> = BTreeMap::new();
        let mut worst_difference: BTreeMap<i32, f64> = BTreeMap::new();
        let mut curve_by_position: BTreeMap<(i32, usize), Vec<f64>> = BTreeMap::new();
        for r in &results {
            per_text.push(vec![
                ("text_id".into(), Cell::Str(r.text_id.clone())),
                ("layer".into(), Cell::Int(i64::from(r.layer))),
                ("position".into(), Cell::Int(r.position as i64)),
                ("s2_gp".into(), Cell::Float(r.s2_gp)),
                ("s2_ridge".into(), Cell::Float(r.s2_ridge)),
                (
                    "relative_difference".into(),
                    Cell::Float(r.relative_difference),
                ),
                ("information_gain".into(), Cell::Float(r.gain)),
            ]);
            by_layer
                .entry((r.layer, "information_gain".into()))
                .or_default()
                .push(r.gain);
            by_layer
                .entry((r.layer, "posterior_variance".into()))
                .or_default()
                .push(r.s2_ridge);
            if let Some(bound) = r.trap_bound {
                by_layer
                    .entry((r.layer, "centring_bound".into()))
                    .or_default()
                    .push(bound);
                let within = verdicts::within_centring_bound(r.s2_ridge, bound);
                by_layer
                    .entry((r.layer, "within_centring_bound".into()))
                    .or_default()
                    .push(f64::from(u8::from(within)));
            }
            let worst = worst_difference.entry(r.layer).or_insert(0.0);
            *worst = worst.max(r.relative_difference);
            for (i, gain) in r.curve.iter().enumerate() {
                curve_rows.push(vec![
                    ("text_id".into(), Cell::Str(r.text_id.clone())),
                    ("layer".into(), Cell::Int(i64::from(r.layer))),
                    ("position".into(), Cell::Int(i as i64 + 1)),
                    ("information_gain".into(), Cell::Float(*gain)),
                ]);
                curve_by_position
                    .entry((r.layer, i + 1))
                    .or_default()
                    .push(*gain);
            }
        }
        let mut frame = lmgeo_tables::frame_from_records(&per_text)?;
        lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("per_text")?)?;
        let mut curve_frame = if curve_rows.is_empty() {
            lmgeo_tables::frame_from_records(&[vec![
                ("text_id".into(), Cell::Str(String::new())),
                ("layer".into(), Cell::Int(0)),
                ("position".into(), Cell::Int(0)),
                ("information_gain".into(), Cell::Float(0.0)),
            ]])?
            .head(Some(0))
        } else {
            lmgeo_tables::frame_from_records(&curve_rows)?
        };
        lmgeo_tables::write_parquet(&mut curve_frame, &ctx.output_path("curve")?)?;
        ctx.emit_all(layer_summary(&by_layer)?);
        for (&layer, &worst) in &worst_difference {
            ctx.emit(
                MetricRow::new("gp_ridge_relative_difference", worst)
                    .dim("layer", i64::from(layer))
                    .dim("stat", "max"),
            );
        }
        for (&(layer, position), gains) in &curve_by_position {
            let MeanSem { mean, sem } = mean_sem(gains)?;
            ctx.emit(
                MetricRow::new("information_gain_curve", mean)
                    .dim("layer", i64::from(layer))
                    .dim("position", position)
                    .dim("stat", "mean"),
            );
            ctx.emit(
                MetricRow::new("information_gain_curve", sem)
                    .dim("layer", i64::from(layer))
                    .dim("position", position)
                    .dim("stat", "sem"),
            );
        }
        let section = gain_section(
            ctx.node_id(),
            p,
            &by_layer,
            &worst_difference,
            &curve_by_position,
        )?;
        crate::report::write_section(ctx, &section)?;
        Ok(())
    }
}

fn gain_section(
    node: &str,
    p: &InfoGainParams,
    by_layer: &BTreeMap<(i32, String), Vec<f64>>,
    worst: &BTreeMap<i32, f64>,
    curve: &BTreeMap<(i32, usize), Vec<f64>>,
) -> Result<lmgeo_report::Section, NodeError> {
    use lmgeo_report::{LinePlot, NamedFigure, Section, Series, Table};
    let worst_all = worst.values().copied().fold(0.0, f64::max);
    let deepest = worst.keys().max().copied().unwrap_or(0);
    let curve_points: Vec<(f64, f64)> = curve
        .iter()
        .filter(|((l, _), _)| *l == deepest)
        .map(|((_, t), v)| Ok((*t as f64, mean_sem(v)?.mean)))
        .collect::<Result<_, NodeError>>()?;
    let trend = if curve_points.len() >= 3 {
        let xs: Vec<f64> = curve_points.iter().map(|p| p.0).collect();
        let ys: Vec<f64> = curve_points.iter().map(|p| p.1).collect();
        lmgeo_probes::attention::spearman(&xs, &ys).ok().flatten()
    } else {
        None
    };
    let verdict = verdicts::gp_ridge((!worst.is_empty()).then_some(worst_all));
    let mut evidence = format!(
        "Posterior variance by the GP kernel formula and by the ridge optimum agree to a relative difference of at most {worst_all:.1e} over every text and layer (sigma = {}).",
        p.sigma
    );
    if let Some(rho) = trend {
        evidence.push_str(&format!(
            " At layer {deepest}, the mean gain of a token against its prefix has Spearman correlation {rho:.2} with its position ({}).",
            verdicts::gain_trend(rho)
        ));
    }
    let gains: Vec<(f64, f64, f64, f64)> = by_layer
        .iter()
        .filter(|((_, m), _)| m == "information_gain")
        .map(|((l, _), v)| {
            let MeanSem { mean, sem } = mean_sem(v)?;
            Ok((f64::from(*l), mean, mean - sem, mean + sem))
        })
        .collect::<Result<_, NodeError>>()?;
    if p.preprocess == GainPreprocess::CenterL2 {
        return centring_trap_section(p, by_layer);
    }
    let mut section = Section::new(
        "Information gain of the last token, and the GP = ridge identity",
        "The Gaussian-process information gain of a new token given its context is governed by a ridge regression of the token on the context: the posterior variance equals the ridge optimum (Tan et al., §4).",
        verdict,
        evidence,
    )
    .figure(NamedFigure::new(
        format!("{node}-layers"),
        "Information gain of the last token per layer: mean over texts with standard errors.",
        LinePlot {
            title: "Information gain of the last token across layers".into(),
            x_label: "layer".into(),
            y_label: "information gain (nats)".into(),
            x_log: false,
            y_log: false,
            series: vec![
                Series::line("information gain", gains.iter().map(|g| (g.0, g.1)).collect())
                    .with_band(gains.iter().map(|g| (g.0, g.2, g.3)).collect()),
            ],
        },
    ))
    .table(Table {
        columns: vec!["layer".into(), "mean gain".into(), "max GP/ridge relative difference".into()],
        rows: gains
            .iter()
            .map(|g| {
                vec![
                    format!("{}", g.0),
                    format!("{:.4}", g.1),
                    format!("{:.1e}", worst.get(&(g.0 as i32)).copied().unwrap_or(f64::NAN)),
                ]
            })
            .collect(),
    });
    if !curve_points.is_empty() {
        section = section.figure(NamedFigure::new(
            format!("{node}-positions"),
            "Gain of each token against its prefix at the deepest layer, mean over texts.",
            LinePlot {
                title: format!("Information gain per position (layer {deepest})"),
                x_label: "position".into(),
                y_label: "information gain (nats)".into(),
                x_log: false,
                y_log: false,
                series: vec![Series::line("mean over texts", curve_points)],
            },
        ));
    }
    Ok(section)
}

/// With full-sequence centring the last token is minus the sum of the
/// others, so its posterior variance cannot exceed the ridge objective at
/// that exact combination: sigma^2 sum (|c_i| / |c_last|)^2. The gain is
/// then set by sigma and the norms, not by what the token adds.
fn centring_trap_section(
    p: &InfoGainParams,
    by_layer: &BTreeMap<(i32, String), Vec<f64>>,
) -> Result<lmgeo_report::Section, NodeError> {
    use lmgeo_report::{Section, Table};
    let stat = |layer: i32, metric: &str| -> Result<f64, NodeError> {
        match by_layer.get(&(layer, metric.to_string())) {
            Some(v) => Ok(mean_sem(v)?.mean),
            None => Ok(f64::NAN),
        }
    };
    let layers: Vec<i32> = by_layer
        .keys()
        .filter(|(_, m)| m == "posterior_variance")
        .map(|(l, _)| *l)
        .collect();
    let within: Vec<f64> = by_layer
        .iter()
        .filter(|((_, m), _)| m == "within_centring_bound")
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    let held = within.iter().filter(|w| **w == 1.0).count();
    let verdict = verdicts::centring_trap(held, within.len());
    let rows = layers
        .iter()
        .map(|l| {
            Ok(vec![
                l.to_string(),
                format!("{:.3e}", stat(*l, "posterior_variance")?),
                format!("{:.3e}", stat(*l, "centring_bound")?),
            ])
        })
        .collect::<Result<_, NodeError>>()?;
    Ok(Section::new(
        "The centring trap: full-sequence centring makes the gain an artefact",
        "Centring the hidden states with the mean of all tokens puts the last token in the span of its context, so its posterior variance is bounded by sigma^2 times a sum of norm ratios: an artefact of sigma, not information (method.md §3; why lmgeo centres with the context's own mean or not at all).",
        verdict,
        format!(
            "For {held} of {} (text, layer) pairs the last token's posterior variance is within the bound sigma^2 sum (|c_i|/|c_last|)^2 (sigma = {}).",
            within.len(),
            p.sigma
        ),
    )
    .table(Table {
        columns: vec!["layer".into(), "mean posterior variance".into(), "mean bound".into()],
        rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_resolve() {
        assert_eq!(Position::default().resolve(5), Some(4));
        assert_eq!(Position::Index(2).resolve(5), Some(2));
        assert_eq!(Position::Index(5).resolve(5), None);
        assert_eq!(Position::Index(-2).resolve(5), Some(3));
        assert_eq!(Position::Index(-6).resolve(5), None);
        assert_eq!(Position::default().resolve(0), None);
    }
}
