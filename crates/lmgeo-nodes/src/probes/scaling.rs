//! Entropy against model size (method.md §2): the power-law fit over models
//! with a bootstrap interval for the exponent, and Diff-eRank (random
//! initialisation against training).

use std::collections::BTreeMap;
use std::path::Path;

use lmgeo_dag::{
    InputArtifact, InputPort, Interface, MetricRow, Node, NodeError, OutputPort, ParamError,
    RunContext,
};
use lmgeo_probes::power_law::{BootstrapOptions, ExponentInterval, bootstrap_exponent_ci, fit};
use lmgeo_probes::summary::mean;
use lmgeo_report::{
    LabeledPoint, LinePlot, NamedFigure, PowerLawFit, ScatterFit, Section, Series, Table,
};
use lmgeo_tables::{Cell, Record};
use serde::{Deserialize, Serialize};

use crate::common::{MeanSem, mean_sem};
use crate::report::write_section;
use crate::verdicts;

/// Per (text, layer) values of one metric from an `entropy` per-text table.
pub fn read_per_text(path: &Path, metric: &str) -> Result<Vec<(String, i32, f64)>, NodeError> {
    let frame = lmgeo_tables::read_parquet(path)?;
    let ids = frame.column("text_id")?.str()?.clone();
    let layers = frame.column("layer")?.i64()?.clone();
    let values = frame
        .column(metric)
        .map_err(|_| NodeError::msg(format!("{} has no column `{metric}`", path.display())))?
        .f64()?
        .clone();
    Ok(ids
        .iter()
        .zip(layers.iter())
        .zip(values.iter())
        .filter_map(|((id, layer), value)| Some((id?.to_string(), layer? as i32, value?)))
        .collect())
}

/// The label of an input: its `model` coordinate, else its coordinates, else
/// its node id.
pub fn label_of(input: &InputArtifact) -> String {
    if let Some(model) = input.coords.get("model") {
        return model.to_string();
    }
    if input.coords.is_empty() {
        input.node.clone()
    } else {
        input.coords.to_string()
    }
}

/// The input of `candidates` whose coordinates agree with `input`'s on
/// every axis they share.
/// Every candidate whose coordinates agree with `input`'s on the axes both have.
pub fn matching_all<'a>(
    input: &InputArtifact,
    candidates: &'a [InputArtifact],
) -> Vec<&'a InputArtifact> {
    candidates
        .iter()
        .filter(|c| {
            c.coords
                .iter()
                .all(|(axis, value)| input.coords.get(axis).is_none_or(|v| v == value))
        })
        .collect()
}

pub fn matching<'a>(
    input: &InputArtifact,
    candidates: &'a [InputArtifact],
) -> Option<&'a InputArtifact> {
    let found = matching_all(input, candidates);
    (found.len() == 1).then(|| found[0])
}

fn metric_value(input: &InputArtifact, metric: &str) -> Result<f64, NodeError> {
    crate::read_metrics(&input.path)?
        .into_iter()
        .find(|m| m.metric == metric)
        .map(|m| m.value)
        .ok_or_else(|| NodeError::msg(format!("`{}` reported no metric `{metric}`", input.node)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SizeMeasure {
    /// All parameters, tied embeddings counted once.
    #[default]
    Total,
    /// Without token/position embeddings and the unembedding.
    NonEmbedding,
}

impl SizeMeasure {
    fn metric(self) -> &'static str {
        match self {
            SizeMeasure::Total => "n_params",
            SizeMeasure::NonEmbedding => "n_params_non_embedding",
        }
    }
}

/// The layer whose values are fitted: the last block of each model, or a
/// relative depth in [0, 1] (rounded to the nearest layer of each model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FitLayer {
    Named(FitLayerName),
    Depth(f64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitLayerName {
    Last,
    /// The mean over all layers of each text.
    Mean,
}

impl Default for FitLayer {
    fn default() -> Self {
        FitLayer::Named(FitLayerName::Last)
    }
}

fn default_metric() -> String {
    "normalised_coding_length".into()
}
fn default_resamples() -> usize {
    1000
}
fn default_level() -> f64 {
    0.95
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerLawParams {
    /// A column of the entropy per-text tables.
    #[serde(default = "default_metric")]
    pub metric: String,
    #[serde(default)]
    pub layer: FitLayer,
    #[serde(default)]
    pub size: SizeMeasure,
    #[serde(default = "default_resamples")]
    pub resamples: usize,
    #[serde(default = "default_level")]
    pub level: f64,
    #[serde(default)]
    pub seed: u64,
}

/// y = a N^b over models, with R^2 and a bootstrap interval for b over texts.
pub struct PowerLaw;

struct ModelPoint {
    label: String,
    size: f64,
    per_text: Vec<f64>,
    /// Mean and standard error of `per_text`.
    summary: MeanSem,
    layer: String,
    per_layer: BTreeMap<i32, Vec<f64>>,
}

impl Node for PowerLaw {
    type Params = PowerLawParams;
    const KIND: &'static str = "power_law";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "power-law fit of an entropy metric against model size, with bootstrap CI";

    fn interface(&self, p: &PowerLawParams) -> Result<Interface, ParamError> {
        if let FitLayer::Depth(d) = p.layer
            && !(0.0..=1.0).contains(&d)
        {
            return Err(ParamError::field(
                "layer",
                "as a relative depth must lie in [0, 1]",
            ));
        }
        if p.resamples < 10 {
            return Err(ParamError::field("resamples", "must be at least 10"));
        }
        if !(p.level > 0.0 && p.level < 1.0) {
            return Err(ParamError::field(
                "level",
                "must lie strictly between 0 and 1",
            ));
        }
        Ok(Interface {
            inputs: vec![
                InputPort::many(
                    "entropy",
                    "`per_text` tables of `entropy` nodes, one per model (collect over `model`)",
                ),
                InputPort::many(
                    "sizes",
                    "`metrics` of the `extract` nodes of the same models (parameter counts)",
                ),
            ],
            outputs: vec![
                OutputPort::published(
                    "points",
                    "per model: size, mean and standard error of the metric",
                ),
                crate::report::section_output(),
            ],
            ..Interface::default()
        })
    }

    fn run(&self, p: &PowerLawParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let sizes = ctx.input("sizes").to_vec();
        let mut points: Vec<ModelPoint> = Vec::new();
        for input in ctx.input("entropy") {
            let size_input = matching(input, &sizes).ok_or_else(|| {
                NodeError::msg(format!(
                    "no single `sizes` input matches `{}` by its coordinates",
                    input.node
                ))
            })?;
            let size = metric_value(size_input, p.size.metric())?;
            let rows = read_per_text(&input.path, &p.metric)?;
            points.push(
                ModelPoint::new(label_of(input), size, &rows, &p.layer)?
                    .ok_or_else(|| NodeError::msg(format!("`{}` has no rows", input.node)))?,
            );
        }
        points.sort_by(|a, b| a.size.total_cmp(&b.size));
        let fitted = ScalingFit::of(p, &points)?;
        publish_points(p, ctx, &points, &fitted)?;
        write_section(ctx, &power_law_section(p, ctx.node_id(), &points, &fitted)?)
    }
}

impl ModelPoint {
    /// One model's values at the fitted layer (`None`: no rows).
    fn new(
        label: String,
        size: f64,
        rows: &[(String, i32, f64)],
        layer: &FitLayer,
    ) -> Result<Option<Self>, NodeError> {
        let mut per_layer: BTreeMap<i32, Vec<f64>> = BTreeMap::new();
        let mut per_text_layer: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (text, layer, value) in rows {
            per_layer.entry(*layer).or_default().push(*value);
            per_text_layer.entry(text.clone()).or_default().push(*value);
        }
        let Some(&last) = per_layer.keys().max() else {
            return Ok(None);
        };
        let (layer_label, per_text): (String, Vec<f64>) = match layer {
            FitLayer::Named(FitLayerName::Last) => (format!("{last}"), per_layer[&last].clone()),
            FitLayer::Named(FitLayerName::Mean) => (
                "mean".into(),
                per_text_layer
                    .values()
                    .map(|v| mean(v).map_err(NodeError::msg))
                    .collect::<Result<_, _>>()?,
            ),
            FitLayer::Depth(depth) => {
                let target = (depth * f64::from(last)).round() as i32;
                let layer = *per_layer
                    .keys()
                    .min_by_key(|l| (**l - target).abs())
                    .expect("non-empty");
                (format!("{layer}"), per_layer[&layer].clone())
            }
        };
        Ok(Some(ModelPoint {
            label,
            size,
            summary: mean_sem(&per_text)?,
            per_text,
            layer: layer_label,
            per_layer,
        }))
    }
}

/// The power law through the models' means, and the bootstrap interval of
/// its exponent over texts, where there are enough distinct sizes.
struct ScalingFit {
    fit: Option<lmgeo_probes::power_law::PowerLawFit>,
    interval: Option<ExponentInterval>,
}

impl ScalingFit {
    fn of(p: &PowerLawParams, points: &[ModelPoint]) -> Result<Self, NodeError> {
        let xs: Vec<f64> = points.iter().map(|p| p.size).collect();
        let ys: Vec<f64> = points.iter().map(|p| p.summary.mean).collect();
        let distinct_sizes = {
            let mut v = xs.clone();
            v.dedup();
            v.len()
        };
        let fit = if distinct_sizes >= 2 {
            Some(fit(&xs, &ys).map_err(NodeError::msg)?)
        } else {
            None
        };
        let interval = match &fit {
            Some(_) if distinct_sizes >= verdicts::MIN_MODELS_FOR_FIT => {
                let samples: Vec<(f64, Vec<f64>)> = points
                    .iter()
                    .map(|p| (p.size, p.per_text.clone()))
                    .collect();
                Some(
                    bootstrap_exponent_ci(
                        &samples,
                        &BootstrapOptions {
                            resamples: p.resamples,
                            level: p.level,
                            seed: p.seed,
                        },
                    )
                    .map_err(NodeError::msg)?,
                )
            }
            _ => None,
        };
        Ok(ScalingFit { fit, interval })
    }
}

/// The `points` table, each model's mean, and the fit's coefficients.
fn publish_points(
    p: &PowerLawParams,
    ctx: &mut RunContext<'_>,
    points: &[ModelPoint],
    fitted: &ScalingFit,
) -> Result<(), NodeError> {
    let mut records: Vec<Record> = Vec::new();
    for point in points {
        let MeanSem { mean, sem } = point.summary;
        records.push(vec![
            ("model".into(), Cell::Str(point.label.clone())),
            ("size".into(), Cell::Float(point.size)),
            ("layer".into(), Cell::Str(point.layer.clone())),
            ("mean".into(), Cell::Float(mean)),
            ("sem".into(), Cell::Float(sem)),
            ("texts".into(), Cell::Int(point.per_text.len() as i64)),
        ]);
        ctx.emit(
            MetricRow::new(p.metric.clone(), mean)
                .dim("of_model", point.label.clone())
                .dim("size", point.size)
                .dim("stat", "mean"),
        );
    }
    let mut frame = lmgeo_tables::frame_from_records(&records)?;
    lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("points")?)?;
    if let Some(f) = &fitted.fit {
        ctx.emit(MetricRow::new("power_law_a", f.a));
        ctx.emit(MetricRow::new("power_law_b", f.b));
        ctx.emit(MetricRow::new("power_law_r2", f.r_squared));
        if let Some(se) = f.b_std_err {
            ctx.emit(MetricRow::new("power_law_b_std_err", se));
        }
    }
    if let Some(ci) = &fitted.interval {
        ctx.emit(MetricRow::new("power_law_b_ci_low", ci.lower).dim("level", ci.level));
        ctx.emit(MetricRow::new("power_law_b_ci_high", ci.upper).dim("level", ci.level));
    }
    ctx.emit(MetricRow::new("models", points.len() as f64));
    Ok(())
}

/// The verdict of [`verdicts::power_law`], its evidence, the log-log plot
/// with the fit, the per-layer curves and the table of points.
fn power_law_section(
    p: &PowerLawParams,
    node: &str,
    points: &[ModelPoint],
    fitted: &ScalingFit,
) -> Result<Section, NodeError> {
    let size_label = match p.size {
        SizeMeasure::Total => "parameters N",
        SizeMeasure::NonEmbedding => "non-embedding parameters N",
    };
    let verdict = verdicts::power_law(
        points.len(),
        fitted.fit.as_ref().map(|f| f.r_squared),
        fitted.interval.as_ref().map(|ci| (ci.lower, ci.upper)),
    );
    let evidence = match (&fitted.fit, &fitted.interval) {
        (Some(f), Some(ci)) => format!(
            "Over {} models, {} ≈ {:.4} · N^{:.4}, R² = {:.3}; {:.0}% bootstrap CI of the exponent b: [{:.4}, {:.4}] ({} resamples over texts); the exponent is {}.",
            points.len(),
            p.metric,
            f.a,
            f.b,
            f.r_squared,
            ci.level * 100.0,
            ci.lower,
            ci.upper,
            ci.resamples,
            if ci.upper < 0.0 {
                "negative: the metric falls with size"
            } else if ci.lower > 0.0 {
                "positive: the metric grows with size"
            } else {
                "not distinguishable from zero"
            }
        ),
        (Some(f), None) => format!(
            "Only {} model sizes: b = {:.4}, R² = {:.3}, no interval. A fit needs at least three sizes.",
            points.len(),
            f.b,
            f.r_squared
        ),
        _ => "Fewer than two model sizes: nothing to fit.".to_string(),
    };
    let scatter = ScatterFit {
        title: format!("{} against model size", p.metric.replace('_', " ")),
        x_label: size_label.into(),
        y_label: p.metric.replace('_', " "),
        log_log: true,
        points: points
            .iter()
            .map(|pt| LabeledPoint {
                x: pt.size,
                y: pt.summary.mean,
                y_err: Some(pt.summary.sem),
                label: pt.label.clone(),
            })
            .collect(),
        fit: fitted.fit.as_ref().map(|f| PowerLawFit {
            a: f.a,
            b: f.b,
            r2: f.r_squared,
            b_ci: fitted.interval.as_ref().map(|ci| (ci.lower, ci.upper)),
        }),
    };
    let mut series = Vec::new();
    for pt in points {
        let last = f64::from(*pt.per_layer.keys().max().expect("non-empty").max(&1));
        let mut line = Vec::new();
        let mut band = Vec::new();
        for (layer, values) in &pt.per_layer {
            let MeanSem { mean, sem } = mean_sem(values)?;
            let x = f64::from(*layer) / last;
            line.push((x, mean));
            band.push((x, mean - sem, mean + sem));
        }
        series.push(Series::line(pt.label.clone(), line).with_band(band));
    }
    let curves = LinePlot {
        title: format!("{} across layers", p.metric.replace('_', " ")),
        x_label: "relative depth (layer / last layer)".into(),
        y_label: p.metric.replace('_', " "),
        x_log: false,
        y_log: false,
        series,
    };
    let table = Table {
        columns: vec![
            "model".into(),
            "N".into(),
            "layer".into(),
            "mean".into(),
            "sem".into(),
            "texts".into(),
        ],
        rows: points
            .iter()
            .map(|pt| {
                vec![
                    pt.label.clone(),
                    format!("{:.4e}", pt.size),
                    pt.layer.clone(),
                    format!("{:.5}", pt.summary.mean),
                    format!("{:.5}", pt.summary.sem),
                    pt.per_text.len().to_string(),
                ]
            })
            .collect(),
    };
    Ok(Section::new(
        format!("Scaling: {} against model size", p.metric.replace('_', " ")),
        "Representation entropy follows a power law in model size (Tan et al., §3).",
        verdict,
        evidence,
    )
    .figure(NamedFigure::new(
        format!("{node}-power-law"),
        "Mean over texts with standard errors; fitted power law and the band of the exponent's CI.",
        scatter,
    ))
    .figure(NamedFigure::new(
        format!("{node}-layers"),
        "Per-layer means with standard-error bands.",
        curves,
    ))
    .table(table))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffErankParams {}

/// Diff-eRank: erank of the randomly initialised model minus erank of the
/// trained one, per model and layer, paired by text; also their ratio
/// erank_random / erank_trained, which unlike the difference does not grow
/// with the width of the model just because eranks do.
pub struct DiffErank;

impl Node for DiffErank {
    type Params = DiffErankParams;
    const KIND: &'static str = "diff_erank";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str =
        "Diff-eRank: effective rank of a random-init model minus the trained model's";

    fn interface(&self, _: &DiffErankParams) -> Result<Interface, ParamError> {
        Ok(Interface {
            inputs: vec![
                InputPort::many("trained", "`per_text` of `entropy` on trained models"),
                InputPort::many(
                    "random",
                    "`per_text` of `entropy` on the same models randomly initialised",
                ),
            ],
            outputs: vec![
                OutputPort::published(
                    "per_layer",
                    "per model and layer: both eranks and their difference",
                ),
                crate::report::section_output(),
            ],
            ..Interface::default()
        })
    }

    fn run(&self, _: &DiffErankParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let random = ctx.input("random").to_vec();
        let mut records: Vec<Record> = Vec::new();
        let mut series = Vec::new();
        let mut table_rows = Vec::new();
        let mut positive_last = 0usize;
        let mut models = 0usize;
        for trained in ctx.input("trained").to_vec() {
            // Several random initialisations (a `seed` axis on the random
            // side only) are averaged per (text, layer).
            let baselines = matching_all(&trained, &random);
            if baselines.is_empty() {
                return Err(NodeError::msg(format!(
                    "no `random` input matches `{}` by its coordinates",
                    trained.node
                )));
            }
            let label = label_of(&trained);
            let t = read_per_text(&trained.path, "effective_rank")?;
            let mut sums: BTreeMap<(String, i32), (f64, usize)> = BTreeMap::new();
            for baseline in &baselines {
                for (id, layer, v) in read_per_text(&baseline.path, "effective_rank")? {
                    let entry = sums.entry((id, layer)).or_default();
                    entry.0 += v;
                    entry.1 += 1;
                }
            }
            let r: BTreeMap<(String, i32), f64> = sums
                .into_iter()
                .filter(|(_, (_, count))| *count == baselines.len())
                .map(|(key, (sum, count))| (key, sum / count as f64))
                .collect();
            // Per layer: trained eranks, random eranks, their differences.
            let mut per_layer: BTreeMap<i32, [Vec<f64>; 4]> = BTreeMap::new();
            for (id, layer, trained_value) in t {
                if let Some(random_value) = r.get(&(id, layer)) {
                    let [t, r, d, q] = per_layer.entry(layer).or_default();
                    t.push(trained_value);
                    r.push(*random_value);
                    d.push(random_value - trained_value);
                    // An effective rank is at least 1, so the ratio is defined.
                    q.push(random_value / trained_value);
                }
            }
            if per_layer.is_empty() {
                return Err(NodeError::msg(format!(
                    "`{}` and `{}` share no (text, layer): run both on the same corpus",
                    trained.node, baselines[0].node
                )));
            }
            models += 1;
            let mut line = Vec::new();
            let mut band = Vec::new();
            let last = *per_layer.keys().max().expect("non-empty");
            for (layer, [tv, rv, dv, qv]) in &per_layer {
                let tm = mean_sem(tv)?.mean;
                let rm = mean_sem(rv)?.mean;
                let MeanSem { mean: dm, sem: ds } = mean_sem(dv)?;
                let MeanSem { mean: qm, sem: qs } = mean_sem(qv)?;
                records.push(vec![
                    ("model".into(), Cell::Str(label.clone())),
                    ("layer".into(), Cell::Int(i64::from(*layer))),
                    ("erank_trained".into(), Cell::Float(tm)),
                    ("erank_random".into(), Cell::Float(rm)),
                    ("diff_erank".into(), Cell::Float(dm)),
                    ("diff_erank_sem".into(), Cell::Float(ds)),
                    ("erank_ratio".into(), Cell::Float(qm)),
                    ("erank_ratio_sem".into(), Cell::Float(qs)),
                    ("texts".into(), Cell::Int(dv.len() as i64)),
                ]);
                ctx.emit(
                    MetricRow::new("diff_erank", dm)
                        .dim("of_model", label.clone())
                        .dim("layer", i64::from(*layer))
                        .dim("stat", "mean"),
                );
                ctx.emit(
                    MetricRow::new("diff_erank", ds)
                        .dim("of_model", label.clone())
                        .dim("layer", i64::from(*layer))
                        .dim("stat", "sem"),
                );
                for (stat, value) in [("mean", qm), ("sem", qs)] {
                    ctx.emit(
                        MetricRow::new("erank_ratio", value)
                            .dim("of_model", label.clone())
                            .dim("layer", i64::from(*layer))
                            .dim("stat", stat),
                    );
                }
                let x = f64::from(*layer) / f64::from(last.max(1));
                line.push((x, dm));
                band.push((x, dm - ds, dm + ds));
                if *layer == last {
                    if dm > 0.0 {
                        positive_last += 1;
                    }
                    table_rows.push(vec![
                        label.clone(),
                        layer.to_string(),
                        format!("{tm:.2}"),
                        format!("{rm:.2}"),
                        format!("{dm:.2} ± {ds:.2}"),
                        format!("{qm:.3} ± {qs:.3}"),
                    ]);
                }
            }
            series.push(Series::line(label, line).with_band(band));
        }
        let mut frame = lmgeo_tables::frame_from_records(&records)?;
        lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("per_layer")?)?;
        let verdict = verdicts::diff_erank(positive_last, models);
        let section = Section::new(
            "Diff-eRank: training removes redundancy",
            "A trained model's representations have a lower effective rank than the same architecture randomly initialised (Diff-eRank > 0; Wei et al. 2024, same group).",
            verdict,
            format!("Diff-eRank at the last layer is positive for {positive_last} of {models} models (random side: the mean over {} initialisation(s) per model).", random.len() / models.max(1)),
        )
        .figure(NamedFigure::new(
            format!("{}-layers", ctx.node_id()),
            "erank(random init) − erank(trained) per layer, mean over texts with standard errors.",
            LinePlot {
                title: "Diff-eRank across layers".into(),
                x_label: "relative depth (layer / last layer)".into(),
                y_label: "Diff-eRank".into(),
                x_log: false,
                y_log: false,
                series,
            },
        ))
        .table(Table {
            columns: vec!["model".into(), "last layer".into(), "erank trained".into(), "erank random".into(), "Diff-eRank".into(), "erank ratio (random / trained)".into()],
            rows: table_rows,
        });
        write_section(ctx, &section)?;
        Ok(())
    }
}

fn default_rank() -> f64 {
    64.0
}
fn default_sim_eps() -> f64 {
    lmgeo_probes::entropy::DEFAULT_EPS
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateParams {
    /// GPT-NeoX `config.json` files (the Pythia suite ships in
    /// `experiments/configs/`), relative to the working directory.
    pub configs: Vec<String>,
    /// The number r of equal non-zero singular values of the simulated
    /// representation (may be fractional, e.g. a measured effective rank).
    #[serde(default = "default_rank")]
    pub rank: f64,
    #[serde(default = "default_sim_eps")]
    pub eps: f64,
    #[serde(default)]
    pub size: SizeMeasure,
}

/// The paper's simulation: the entropy of a representation with r equal
/// singular values at each model's hidden size, against the model's size,
/// computed from configs alone.
pub struct SimulateScaling;

impl Node for SimulateScaling {
    type Params = SimulateParams;
    const KIND: &'static str = "simulate_scaling";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "entropy of r equal singular values at each config's hidden size, against model size";

    fn interface(&self, p: &SimulateParams) -> Result<Interface, ParamError> {
        if p.configs.len() < 2 {
            return Err(ParamError::field(
                "configs",
                "needs at least two model configs",
            ));
        }
        if !(p.rank >= 1.0 && p.rank.is_finite()) {
            return Err(ParamError::field("rank", "must be a number >= 1"));
        }
        if !(p.eps > 0.0 && p.eps.is_finite()) {
            return Err(ParamError::field("eps", "must be a positive number"));
        }
        Ok(Interface {
            outputs: vec![
                OutputPort::published(
                    "points",
                    "per config: hidden size, parameters, simulated entropies",
                ),
                crate::report::section_output(),
            ],
            files: p
                .configs
                .iter()
                .map(|c| lmgeo_dag::ExternalFile {
                    path: c.into(),
                    known_digest: None,
                })
                .collect(),
            ..Interface::default()
        })
    }

    fn run(&self, p: &SimulateParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let mut points = Vec::new();
        for path in &p.configs {
            let config = lmgeo_models::GptNeoXConfig::from_file(Path::new(path))?;
            let size = match p.size {
                SizeMeasure::Total => config.n_params(),
                SizeMeasure::NonEmbedding => config.n_params_non_embedding(),
            } as f64;
            let d = config.hidden_size;
            let rank = p.rank.min(d as f64);
            let coding =
                lmgeo_probes::power_law::simulated_normalised_coding_length(rank, d, p.eps)
                    .map_err(NodeError::msg)?;
            let entropy =
                lmgeo_probes::power_law::simulated_matrix_entropy(rank).map_err(NodeError::msg)?;
            let label = Path::new(path)
                .file_stem()
                .map_or(path.clone(), |s| s.to_string_lossy().to_string());
            points.push((label, d, size, coding, entropy / (d as f64).ln()));
        }
        points.sort_by(|a, b| a.2.total_cmp(&b.2));
        let records: Vec<Record> = points
            .iter()
            .map(|(label, d, size, coding, entropy)| {
                vec![
                    ("model".into(), Cell::Str(label.clone())),
                    ("hidden_size".into(), Cell::Int(*d as i64)),
                    ("size".into(), Cell::Float(*size)),
                    ("normalised_coding_length".into(), Cell::Float(*coding)),
                    ("normalised_matrix_entropy".into(), Cell::Float(*entropy)),
                ]
            })
            .collect();
        let mut frame = lmgeo_tables::frame_from_records(&records)?;
        lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("points")?)?;
        let xs: Vec<f64> = points.iter().map(|p| p.2).collect();
        let ys: Vec<f64> = points.iter().map(|p| p.3).collect();
        let f = fit(&xs, &ys).map_err(NodeError::msg)?;
        for (label, _, size, coding, _) in &points {
            ctx.emit(
                MetricRow::new("simulated_normalised_coding_length", *coding)
                    .dim("of_model", label.clone())
                    .dim("size", *size),
            );
        }
        ctx.emit(MetricRow::new("power_law_a", f.a));
        ctx.emit(MetricRow::new("power_law_b", f.b));
        ctx.emit(MetricRow::new("power_law_r2", f.r_squared));
        let verdict = verdicts::simulated_power_law(points.len(), f.r_squared);
        let section = Section::new(
            "Simulation: entropy of r equal singular values against model size",
            "Holding the information content fixed (r equal singular values), the normalised coding length falls with hidden size along a power law in model size (Tan et al., the simulation of §3).",
            verdict,
            format!(
                "With r = {} and eps = {} over {} configs: normalised coding length ≈ {:.4} · N^{:.4}, R² = {:.3}.",
                p.rank,
                p.eps,
                points.len(),
                f.a,
                f.b,
                f.r_squared
            ),
        )
        .figure(NamedFigure::new(
            format!("{}-simulation", ctx.node_id()),
            "Simulated normalised coding length per config, with the power-law fit.",
            ScatterFit {
                title: "Simulated entropy against model size".into(),
                x_label: match p.size {
                    SizeMeasure::Total => "parameters N".into(),
                    SizeMeasure::NonEmbedding => "non-embedding parameters N".into(),
                },
                y_label: "normalised coding length (simulated)".into(),
                log_log: true,
                points: points
                    .iter()
                    .map(|(label, _, size, coding, _)| LabeledPoint {
                        x: *size,
                        y: *coding,
                        y_err: None,
                        label: label.clone(),
                    })
                    .collect(),
                fit: Some(PowerLawFit {
                    a: f.a,
                    b: f.b,
                    r2: f.r_squared,
                    b_ci: None,
                }),
            },
        ))
        .table(Table {
            columns: vec!["config".into(), "hidden size".into(), "N".into(), "coding length".into()],
            rows: points
                .iter()
                .map(|(label, d, size, coding, _)| vec![label.clone(), d.to_string(), format!("{size:.4e}"), format!("{coding:.5}")])
                .collect(),
        });
        write_section(ctx, &section)?;
        Ok(())
    }
}
