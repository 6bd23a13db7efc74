//! `sentence_distance`: distances between texts through their mean vectors
//! and covariances, and how well each distance tells paired texts (same
//! prompt: hh-rlhf `chosen` against `rejected`) from random pairs
//! (method.md §6).

use std::collections::{BTreeMap, HashMap};

use lmgeo_dag::{
    InputPort, Interface, MetricRow, Node, NodeError, OutputPort, ParamError, RunContext,
};
use lmgeo_probes::distance::{
    TextMoments, bures_wasserstein, euclidean, frobenius, mean_cosine_distance, roc_auc,
    text_moments, von_neumann_relative_entropy,
};
use lmgeo_tables::{Cell, Record};
use rand::Rng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::common::{
    LayerName, Layers, MeanSem, PreprocessParam, map_matrices, mean_sem, on_matrix,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distance {
    /// 1 - cosine of the mean vectors.
    MeanCosine,
    /// Euclidean distance of the mean vectors.
    MeanEuclidean,
    /// Frobenius distance of the covariances.
    Frobenius,
    /// Gaussian 2-Wasserstein (Bures) distance of the covariances.
    Bures,
    /// Bures with the mean term: the 2-Wasserstein distance of the Gaussians.
    Wasserstein,
    /// Symmetrised von Neumann relative entropy of the (ridged) covariances.
    VonNeumann,
}

impl Distance {
    pub const ALL: [Distance; 6] = [
        Distance::MeanCosine,
        Distance::MeanEuclidean,
        Distance::Frobenius,
        Distance::Bures,
        Distance::Wasserstein,
        Distance::VonNeumann,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Distance::MeanCosine => "mean_cosine",
            Distance::MeanEuclidean => "mean_euclidean",
            Distance::Frobenius => "frobenius",
            Distance::Bures => "bures",
            Distance::Wasserstein => "wasserstein",
            Distance::VonNeumann => "von_neumann",
        }
    }

    fn compute(
        self,
        a: &TextMoments,
        b: &TextMoments,
        ridge: f64,
    ) -> Result<f64, lmgeo_probes::ProbeError> {
        match self {
            Distance::MeanCosine => mean_cosine_distance(&a.mean, &b.mean),
            Distance::MeanEuclidean => euclidean(&a.mean, &b.mean),
            Distance::Frobenius => frobenius(a, b),
            Distance::Bures => bures_wasserstein(a, b, false),
            Distance::Wasserstein => bures_wasserstein(a, b, true),
            Distance::VonNeumann => Ok(0.5
                * (von_neumann_relative_entropy(a, b, ridge)?
                    + von_neumann_relative_entropy(b, a, ridge)?)),
        }
    }
}

fn default_distances() -> Vec<Distance> {
    Distance::ALL.to_vec()
}
fn default_layers() -> Layers {
    Layers::Named(LayerName::Last)
}
fn default_ridge() -> f64 {
    lmgeo_probes::distance::DEFAULT_RIDGE
}
fn default_random_pairs() -> usize {
    4
}
fn default_matrix_texts() -> usize {
    24
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentenceDistanceParams {
    #[serde(default = "default_distances")]
    pub distances: Vec<Distance>,
    #[serde(default = "default_layers")]
    pub layers: Layers,
    #[serde(default)]
    pub preprocess: PreprocessParam,
    /// Ridge of the von Neumann relative entropy (trace-1 covariances).
    #[serde(default = "default_ridge")]
    pub ridge: f64,
    /// Random (unpaired) pairs per paired pair.
    #[serde(default = "default_random_pairs")]
    pub random_pairs: usize,
    #[serde(default)]
    pub seed: u64,
    /// Texts in the full distance matrix (the first ones by group).
    #[serde(default = "default_matrix_texts")]
    pub matrix_texts: usize,
}

pub struct SentenceDistance;

impl Node for SentenceDistance {
    type Params = SentenceDistanceParams;
    const KIND: &'static str = "sentence_distance";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "mean and covariance distances between texts; paired against random pairs (ROC AUC)";

    fn interface(&self, p: &SentenceDistanceParams) -> Result<Interface, ParamError> {
        if p.distances.is_empty() {
            return Err(ParamError::field("distances", "is empty"));
        }
        if !(p.ridge > 0.0 && p.ridge.is_finite()) {
            return Err(ParamError::field("ridge", "must be a positive number"));
        }
        if p.random_pairs == 0 {
            return Err(ParamError::field("random_pairs", "must be at least 1"));
        }
        p.layers.check("layers")?;
        Ok(Interface {
            inputs: vec![
                InputPort::one("embeddings", "an embedding table"),
                InputPort::one(
                    "texts",
                    "the corpus table (text_id, group) that defines the pairs",
                ),
            ],
            outputs: vec![
                OutputPort::published(
                    "pairs",
                    "every paired and sampled random pair with each distance",
                ),
                OutputPort::published(
                    "matrix",
                    "all distances among the first texts, for heatmaps",
                ),
                crate::report::section_output(),
            ],
            ..Interface::default()
        })
    }

    fn run(&self, p: &SentenceDistanceParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let table = ctx.single_input("embeddings")?.path.clone();
        let texts = lmgeo_tables::read_parquet(&ctx.single_input("texts")?.path)?;
        let ids = texts.column("text_id")?.str()?.clone();
        let groups = texts.column("group")?.str()?.clone();
        let group_of: HashMap<String, String> = ids
            .iter()
            .zip(groups.iter())
            .filter_map(|(id, g)| Some((id?.to_string(), g?.to_string())))
            .collect();
        let layers = p.layers.resolve("layers", &table)?;
        let preprocess = p.preprocess.into();
        let moments = map_matrices(&table, layers, |m| {
            let z = lmgeo_probes::matrix_from_rows_f32(m.rows, m.cols, &m.data)
                .map_err(|e| on_matrix(m, e))?;
            Ok((
                m.text_id.clone(),
                m.layer,
                text_moments(z.as_ref(), preprocess).map_err(|e| on_matrix(m, e))?,
            ))
        })?;
        let mut by_layer: BTreeMap<i32, Vec<(String, TextMoments)>> = BTreeMap::new();
        for (id, layer, m) in moments {
            by_layer.entry(layer).or_default().push((id, m));
        }
        let mut pair_rows: Vec<Record> = Vec::new();
        let mut aucs: BTreeMap<(i32, Distance), (f64, f64, f64)> = BTreeMap::new();
        let mut heat: Option<HeatmapData> = None;
        let mut matrix_rows: Vec<Record> = Vec::new();
        for (layer, texts) in &by_layer {
            let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for (i, (id, _)) in texts.iter().enumerate() {
                if let Some(g) = group_of.get(id) {
                    members.entry(g.as_str()).or_default().push(i);
                }
            }
            let paired: Vec<(usize, usize)> = members
                .values()
                .filter(|m| m.len() >= 2)
                .map(|m| (m[0], m[1]))
                .collect();
            if paired.is_empty() {
                return Err(NodeError::msg(
                    "no two texts share a group: use a paired corpus (hh-rlhf with side = \"both\")",
                ));
            }
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                p.seed ^ (*layer as u64).wrapping_mul(0x9e37_79b9),
            );
            let mut random: Vec<(usize, usize)> = Vec::new();
            let wanted = paired.len() * p.random_pairs;
            let mut attempts = 0;
            while random.len() < wanted && attempts < wanted * 20 {
                attempts += 1;
                let (a, b) = (
                    rng.random_range(0..texts.len()),
                    rng.random_range(0..texts.len()),
                );
                if a == b {
                    continue;
                }
                let same = group_of
                    .get(&texts[a].0)
                    .is_some_and(|g| group_of.get(&texts[b].0) == Some(g));
                if !same {
                    random.push((a.min(b), a.max(b)));
                }
            }
            let mut distances: BTreeMap<Distance, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
            for (kind, list) in [("paired", &paired), ("random", &random)] {
                for &(a, b) in list {
                    let mut record: Record = vec![
                        ("layer".into(), Cell::Int(i64::from(*layer))),
                        ("text_a".into(), Cell::Str(texts[a].0.clone())),
                        ("text_b".into(), Cell::Str(texts[b].0.clone())),
                        ("pair".into(), Cell::Str(kind.into())),
                    ];
                    for &d in &p.distances {
                        let value = d.compute(&texts[a].1, &texts[b].1, p.ridge).map_err(|e| {
                            NodeError::msg(format!(
                                "{} between `{}` and `{}`: {e}",
                                d.name(),
                                texts[a].0,
                                texts[b].0
                            ))
                        })?;
                        record.push((d.name().into(), Cell::Float(value)));
                        let entry = distances.entry(d).or_default();
                        if kind == "paired" {
                            entry.0.push(value);
                        } else {
                            entry.1.push(value);
                        }
                    }
                    pair_rows.push(record);
                }
            }
            for (d, (pos, neg)) in &distances {
                let auc = roc_auc(pos, neg).map_err(NodeError::msg)?;
                let name = d.name();
                let MeanSem { mean: pm, sem: ps } = mean_sem(pos)?;
                let MeanSem { mean: nm, sem: ns } = mean_sem(neg)?;
                aucs.insert((*layer, *d), (auc.auc, pm, nm));
                ctx.emit(
                    MetricRow::new("auc", auc.auc)
                        .dim("layer", i64::from(*layer))
                        .dim("distance", name),
                );
                for (metric, value, stat) in [
                    ("paired_distance", pm, "mean"),
                    ("paired_distance", ps, "sem"),
                    ("random_distance", nm, "mean"),
                    ("random_distance", ns, "sem"),
                ] {
                    ctx.emit(
                        MetricRow::new(metric, value)
                            .dim("layer", i64::from(*layer))
                            .dim("distance", name)
                            .dim("stat", stat),
                    );
                }
            }
            ctx.emit(MetricRow::new("pairs", paired.len() as f64).dim("layer", i64::from(*layer)));
            // The full matrix over the first texts, in group order so that
            // pairs sit next to each other on the heatmap.
            let order: Vec<usize> = members
                .values()
                .flatten()
                .copied()
                .take(p.matrix_texts)
                .collect();
            let shown = if p.distances.contains(&Distance::Bures) {
                Distance::Bures
            } else {
                p.distances[0]
            };
            let mut shown_values = vec![vec![0.0; order.len()]; order.len()];
            for (ia, &a) in order.iter().enumerate() {
                for (ib, &b) in order.iter().enumerate() {
                    for &d in &p.distances {
                        let value = if a == b {
                            0.0
                        } else {
                            d.compute(&texts[a].1, &texts[b].1, p.ridge)
                                .map_err(NodeError::msg)?
                        };
                        if d == shown {
                            shown_values[ia][ib] = value;
                        }
                        matrix_rows.push(vec![
                            ("layer".into(), Cell::Int(i64::from(*layer))),
                            ("text_a".into(), Cell::Str(texts[a].0.clone())),
                            ("text_b".into(), Cell::Str(texts[b].0.clone())),
                            ("distance".into(), Cell::Str(d.name().into())),
                            ("value".into(), Cell::Float(value)),
                        ]);
                    }
                }
            }
            let labels: Vec<String> = order.iter().map(|&i| short_label(&texts[i].0)).collect();
            heat = Some((labels, shown_values, shown.name(), *layer));
        }
        let section = distance_section(ctx.node_id(), &aucs, heat);
        crate::report::write_section(ctx, &section)?;
        let mut frame = lmgeo_tables::frame_from_records(&pair_rows)?;
        lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("pairs")?)?;
        let mut frame = lmgeo_tables::frame_from_records(&matrix_rows)?;
        lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("matrix")?)?;
        Ok(())
    }
}

/// Labels, values, distance name and layer of the distance heatmap.
type HeatmapData = (Vec<String>, Vec<Vec<f64>>, &'static str, i32);

/// The end of a text id (its record and side), short enough for a heatmap axis.
fn short_label(id: &str) -> String {
    let parts: Vec<&str> = id.rsplitn(3, ':').collect();
    match parts.as_slice() {
        [last, middle, _] => format!("{middle}:{last}"),
        _ => id.to_string(),
    }
}

fn distance_section(
    node: &str,
    aucs: &BTreeMap<(i32, Distance), (f64, f64, f64)>,
    heat: Option<HeatmapData>,
) -> lmgeo_report::Section {
    use lmgeo_report::{BarChart, Heatmap, NamedFigure, Section, Table};
    let deepest = aucs.keys().map(|(l, _)| *l).max().unwrap_or(0);
    let at_deepest: Vec<(Distance, (f64, f64, f64))> = aucs
        .iter()
        .filter(|((l, _), _)| *l == deepest)
        .map(|((_, d), v)| (*d, *v))
        .collect();
    let covariance: Vec<f64> = at_deepest
        .iter()
        .filter(|(d, _)| {
            matches!(
                d,
                Distance::Frobenius | Distance::Bures | Distance::VonNeumann
            )
        })
        .map(|(_, v)| v.0)
        .collect();
    let verdict = crate::verdicts::sentence_distance(&covariance);
    let listing: Vec<String> = at_deepest
        .iter()
        .map(|(d, v)| format!("{} {:.2}", d.name(), v.0))
        .collect();
    let mut section = Section::new(
        "Sentence-level distances: do texts that share a prompt sit closer?",
        "Matrix distances between the covariances of two texts' representations separate texts that answer the same prompt from unrelated texts (Tan et al., §6).",
        verdict,
        format!("ROC AUC at layer {deepest} (paired closer than random = 1, chance = 0.5): {}.", listing.join(", ")),
    )
    .figure(NamedFigure::new(
        format!("{node}-auc"),
        "Probability that a paired text is closer than a random pair, per distance.",
        BarChart {
            title: format!("Separation of paired from random texts (layer {deepest})"),
            y_label: "ROC AUC".into(),
            bars: at_deepest.iter().map(|(d, v)| (d.name().to_string(), v.0, None)).collect(),
            reference: Some((0.5, "chance".into())),
        },
    ))
    .table(Table {
        columns: vec!["distance".into(), "AUC".into(), "mean paired".into(), "mean random".into()],
        rows: at_deepest
            .iter()
            .map(|(d, v)| vec![d.name().to_string(), format!("{:.3}", v.0), format!("{:.4}", v.1), format!("{:.4}", v.2)])
            .collect(),
    });
    if let Some((labels, values, name, layer)) = heat {
        section = section.figure(NamedFigure::new(
            format!("{node}-matrix"),
            format!("{name} distances among the first texts (pairs are adjacent)."),
            Heatmap {
                title: format!("{name} distance between texts (layer {layer})"),
                x_label: "text".into(),
                y_label: "text".into(),
                row_labels: labels.clone(),
                col_labels: labels,
                values,
                color_label: "distance".into(),
                symmetric: false,
                normalize_rows: false,
            },
        ));
    }
    section
}
