//! `layer_similarity`: every layer of one representation against every layer
//! of another (two models on the same texts, or a model and itself), with
//! CKA, mutual k-NN, SVCCA or Procrustes on pooled sentence vectors, the
//! best-matching layer per layer, bootstrap intervals over texts and a
//! shuffled-pairing null.

use std::path::Path;

use lmgeo_dag::{
    InputPort, Interface, MetricRow, Node, NodeError, OutputPort, ParamError, RunContext,
};
use lmgeo_probes::power_law::BootstrapOptions;
use lmgeo_probes::similarity::{self, HsicEstimator};
use lmgeo_report::{Heatmap, NamedFigure, Section, Table, Verdict};
use lmgeo_tables::{Cell, EmbeddingShape, Record};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::pooled::{Pool, PooledLayers, pair_texts};
use crate::common::Layers;
use crate::report::write_section;
use crate::verdicts::{self, ALIGNMENT_ALPHA};

/// A similarity (or, for Procrustes, distance) between two sets of vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    LinearCka,
    /// Linear CKA on the unbiased HSIC estimator ("debiased CKA").
    UnbiasedCka,
    RbfCka,
    MutualKnn,
    Svcca,
    /// Orthogonal Procrustes distance: lower is more similar.
    Procrustes,
}

impl Measure {
    pub fn name(self) -> &'static str {
        match self {
            Self::LinearCka => "linear_cka",
            Self::UnbiasedCka => "unbiased_cka",
            Self::RbfCka => "rbf_cka",
            Self::MutualKnn => "mutual_knn",
            Self::Svcca => "svcca",
            Self::Procrustes => "procrustes",
        }
    }

    fn higher_is_closer(self) -> bool {
        self != Self::Procrustes
    }
}

fn default_measures() -> Vec<Measure> {
    vec![Measure::LinearCka, Measure::MutualKnn]
}
fn default_k() -> usize {
    similarity::DEFAULT_KNN_K
}
fn default_rbf_threshold() -> f64 {
    similarity::DEFAULT_RBF_THRESHOLD
}
fn default_svcca_variance() -> f64 {
    similarity::DEFAULT_SVCCA_VARIANCE
}
fn default_level() -> f64 {
    0.95
}
fn default_max_pooled_mib() -> f64 {
    4096.0
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSimilarityParams {
    #[serde(default)]
    pub pool: Pool,
    /// The first is the one the figure, the best matches and the verdict use.
    #[serde(default = "default_measures")]
    pub measures: Vec<Measure>,
    #[serde(default)]
    pub layers_a: Layers,
    #[serde(default)]
    pub layers_b: Layers,
    /// Neighbours of mutual k-NN.
    #[serde(default = "default_k")]
    pub k: usize,
    /// RBF bandwidth as a multiple of the median pairwise distance.
    #[serde(default = "default_rbf_threshold")]
    pub rbf_threshold: f64,
    /// Variance SVCCA keeps of each side before CCA.
    #[serde(default = "default_svcca_variance")]
    pub svcca_variance: f64,
    /// Bootstrap resamples over texts for every cell (0: none).
    #[serde(default)]
    pub bootstrap: usize,
    /// Shuffled pairings for the null of every cell (0: none).
    #[serde(default)]
    pub permutations: usize,
    /// Coverage of the bootstrap intervals.
    #[serde(default = "default_level")]
    pub level: f64,
    #[serde(default)]
    pub seed: u64,
    /// Pooled vectors held at once, both sides together (MiB). When every
    /// requested layer does not fit, the layers are taken in groups and the
    /// tables read once per group: the texts may then be far more than all
    /// layers' vectors would fit in memory. Not part of the key: the result
    /// does not depend on it.
    #[serde(default = "default_max_pooled_mib", skip_serializing)]
    pub max_pooled_mib: f64,
}

pub struct LayerSimilarity;

/// One cell of the layer-by-layer matrix for one measure.
struct Cell2 {
    layer_a: i32,
    layer_b: i32,
    measure: Measure,
    value: f64,
    interval: Option<(f64, f64)>,
    p_value: Option<f64>,
}

fn score(
    measure: Measure,
    p: &LayerSimilarityParams,
    x: faer::MatRef<'_, f64>,
    y: faer::MatRef<'_, f64>,
) -> lmgeo_probes::Result<f64> {
    match measure {
        Measure::LinearCka => similarity::linear_cka(x, y, HsicEstimator::Biased),
        Measure::UnbiasedCka => similarity::linear_cka(x, y, HsicEstimator::Debiased),
        Measure::RbfCka => similarity::rbf_cka(x, y, p.rbf_threshold, HsicEstimator::Biased),
        Measure::MutualKnn => similarity::mutual_knn(x, y, p.k),
        Measure::Svcca => Ok(similarity::svcca(x, y, p.svcca_variance)?.mean),
        Measure::Procrustes => similarity::procrustes_distance(x, y),
    }
}

impl Node for LayerSimilarity {
    type Params = LayerSimilarityParams;
    const KIND: &'static str = "layer_similarity";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "every layer of `a` against every layer of `b`: CKA, mutual k-NN, SVCCA, Procrustes";

    fn interface(&self, p: &LayerSimilarityParams) -> Result<Interface, ParamError> {
        if p.measures.is_empty() {
            return Err(ParamError::field("measures", "is empty"));
        }
        if p.k == 0 {
            return Err(ParamError::field("k", "must be at least 1"));
        }
        if !(p.max_pooled_mib > 0.0 && p.max_pooled_mib.is_finite()) {
            return Err(ParamError::field(
                "max_pooled_mib",
                "must be a positive number of MiB",
            ));
        }
        if !(p.rbf_threshold > 0.0 && p.rbf_threshold.is_finite()) {
            return Err(ParamError::field(
                "rbf_threshold",
                "must be a positive number",
            ));
        }
        if !(p.svcca_variance > 0.0 && p.svcca_variance <= 1.0) {
            return Err(ParamError::field("svcca_variance", "must lie in (0, 1]"));
        }
        super::pooled::check_bootstrap(p.bootstrap, p.level)?;
        p.layers_a.check("layers_a")?;
        p.layers_b.check("layers_b")?;
        Ok(Interface {
            inputs: vec![
                InputPort::one("a", "an embedding table"),
                InputPort::one(
                    "b",
                    "an embedding table over the same texts (may be the same as `a`)",
                ),
            ],
            outputs: vec![
                OutputPort::published(
                    "matrix",
                    "one row per (layer_a, layer_b, measure): value, interval, p-value",
                ),
                crate::report::section_output(),
            ],
            ..Interface::default()
        })
    }

    fn run(&self, p: &LayerSimilarityParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let table_a = ctx.single_input("a")?.path.clone();
        let table_b = ctx.single_input("b")?.path.clone();
        let side_a = Side::plan(&table_a, &p.layers_a, "layers_a")?;
        let side_b = Side::plan(&table_b, &p.layers_b, "layers_b")?;
        let (groups_a, groups_b) =
            layer_groups(&side_a, &side_b, (p.max_pooled_mib * 1048576.0) as usize);
        // `b` is read once and kept when all of it fits beside a group of `a`.
        let kept_b = match groups_b.as_slice() {
            [only] => Some(PooledLayers::read(&table_b, Some(only.clone()), p.pool)?),
            _ => None,
        };
        let total = (side_a.layers.len() * side_b.layers.len()) as u64;
        let mut cells: Vec<Cell2> = Vec::new();
        let mut n = 0;
        for group_a in &groups_a {
            let a = PooledLayers::read(&table_a, Some(group_a.clone()), p.pool)?;
            for group_b in &groups_b {
                let read_b;
                let b = match &kept_b {
                    Some(b) => b,
                    None => {
                        read_b = PooledLayers::read(&table_b, Some(group_b.clone()), p.pool)?;
                        &read_b
                    }
                };
                let (order_a, order_b) = pair_texts(&a, b)?;
                n = order_a.len();
                if p.measures.contains(&Measure::MutualKnn) && p.k >= n {
                    return Err(NodeError::msg(format!(
                        "k = {} needs more than {} texts (mutual k-NN excludes each text itself); lower `k`",
                        p.k, n
                    )));
                }
                let layers_b = b.layer_numbers();
                for &la in &a.layer_numbers() {
                    let x = a.matrix(la, &order_a);
                    // One row of the block at a time, its cells in
                    // parallel: each cell's resamples are seeded, so the
                    // order changes nothing. A cell widens its `b` layer to
                    // f64 itself, so that only the running cells' matrices
                    // are held, not every layer's.
                    let row: Vec<Vec<Cell2>> = layers_b
                        .par_iter()
                        .map(|&lb| {
                            let y = b.matrix(lb, &order_b);
                            p.measures
                                .iter()
                                .map(|&measure| {
                                    cell(p, measure, (la, x.as_ref()), (lb, y.as_ref()))
                                })
                                .collect::<Result<Vec<_>, _>>()
                        })
                        .collect::<Result<_, _>>()?;
                    cells.extend(row.into_iter().flatten());
                    ctx.progress(
                        cells.len() as u64 / p.measures.len() as u64,
                        Some(total),
                        "layer pairs",
                    );
                }
            }
        }
        // Blocks come group by group; the table is by layer of `a`, then of
        // `b` (a stable sort keeps the measures in their order).
        cells.sort_by_key(|c| (c.layer_a, c.layer_b));
        let layers_a = side_a.layers;
        let layers_b = side_b.layers;
        write_matrix(ctx, &cells, n)?;
        for c in &cells {
            ctx.emit(
                MetricRow::new(c.measure.name(), c.value)
                    .dim("layer_a", i64::from(c.layer_a))
                    .dim("layer_b", i64::from(c.layer_b))
                    .dim("pool", p.pool.name()),
            );
        }
        let primary = p.measures[0];
        let best = best_matches(&cells, primary);
        for (la, lb, value) in &best {
            ctx.emit(
                MetricRow::new("best_layer_b", f64::from(*lb))
                    .dim("layer_a", i64::from(*la))
                    .dim("measure", primary.name())
                    .dim("value", format!("{value:.6}")),
            );
        }
        let section = section(ctx.node_id(), p, &cells, &best, &layers_a, &layers_b, n);
        write_section(ctx, &section)
    }
}

/// The layers one side compares and what one of them costs to hold.
struct Side {
    /// Ascending, each once.
    layers: Vec<i32>,
    /// Bytes of one layer's pooled vectors (`texts x hidden` f32).
    layer_bytes: usize,
}

impl Side {
    fn plan(table: &Path, requested: &Layers, field: &str) -> Result<Self, NodeError> {
        let shape = EmbeddingShape::of(table)?;
        let mut layers = match requested.resolve(field, table)? {
            Some(list) => list
                .into_iter()
                .filter(|l| shape.layers.contains(l))
                .collect(),
            None => shape.layers.clone(),
        };
        layers.sort_unstable();
        layers.dedup();
        if layers.is_empty() {
            return Err(NodeError::msg(format!(
                "{}: no matrix for the requested layers (`{field}`)",
                table.display()
            )));
        }
        Ok(Self {
            layers,
            layer_bytes: shape.texts * shape.hidden * std::mem::size_of::<f32>(),
        })
    }
}

/// Groups of layers of `a` and of `b` such that one group of each fits in
/// `budget` bytes: one group each when everything fits; otherwise all of
/// `b` when it fits in half of it (so it is read once), and as many layers
/// of `a` as the rest allows; at least one layer each, whatever the budget.
fn layer_groups(a: &Side, b: &Side, budget: usize) -> (Vec<Vec<i32>>, Vec<Vec<i32>>) {
    let fit = |bytes: usize, room: usize| (room / bytes.max(1)).max(1);
    let all_b = b.layers.len() * b.layer_bytes;
    let per_b = if a.layers.len() * a.layer_bytes + all_b <= budget {
        b.layers.len()
    } else {
        fit(b.layer_bytes, budget / 2).min(b.layers.len())
    };
    let room_a = budget.saturating_sub(per_b * b.layer_bytes);
    let per_a = fit(a.layer_bytes, room_a).min(a.layers.len());
    let groups = |layers: &[i32], size: usize| layers.chunks(size).map(<[i32]>::to_vec).collect();
    (groups(&a.layers, per_a), groups(&b.layers, per_b))
}

/// One cell: the score, and its interval and p-value when asked for.
fn cell(
    p: &LayerSimilarityParams,
    measure: Measure,
    (la, x): (i32, faer::MatRef<'_, f64>),
    (lb, y): (i32, faer::MatRef<'_, f64>),
) -> Result<Cell2, NodeError> {
    let on_cell = |e: lmgeo_probes::ProbeError| {
        NodeError::msg(format!(
            "{} at layers {la} (a) and {lb} (b): {e}",
            measure.name()
        ))
    };
    let value = score(measure, p, x, y).map_err(on_cell)?;
    let interval = if p.bootstrap >= 2 {
        let options = BootstrapOptions {
            resamples: p.bootstrap,
            level: p.level,
            seed: p.seed,
        };
        let ci = similarity::bootstrap_pair_ci(x, y, |x, y| score(measure, p, x, y), &options)
            .map_err(on_cell)?;
        Some((ci.lower, ci.upper))
    } else {
        None
    };
    let p_value = if p.permutations > 0 {
        // The null is one-sided in the direction of "closer".
        let sign = if measure.higher_is_closer() {
            1.0
        } else {
            -1.0
        };
        let test = similarity::permutation_test(
            x,
            y,
            |x, y| Ok(sign * score(measure, p, x, y)?),
            p.permutations,
            p.seed,
        )
        .map_err(on_cell)?;
        Some(test.p_value)
    } else {
        None
    };
    Ok(Cell2 {
        layer_a: la,
        layer_b: lb,
        measure,
        value,
        interval,
        p_value,
    })
}

fn write_matrix(ctx: &RunContext<'_>, cells: &[Cell2], n: usize) -> Result<(), NodeError> {
    let records: Vec<Record> = cells
        .iter()
        .map(|c| {
            let optional = |v: Option<f64>| v.map_or(Cell::Null, Cell::Float);
            vec![
                ("layer_a".into(), Cell::Int(i64::from(c.layer_a))),
                ("layer_b".into(), Cell::Int(i64::from(c.layer_b))),
                ("measure".into(), Cell::Str(c.measure.name().into())),
                ("value".into(), Cell::Float(c.value)),
                ("ci_lower".into(), optional(c.interval.map(|i| i.0))),
                ("ci_upper".into(), optional(c.interval.map(|i| i.1))),
                ("p_value".into(), optional(c.p_value)),
                ("n_texts".into(), Cell::Int(n as i64)),
            ]
        })
        .collect();
    let mut frame = lmgeo_tables::frame_from_records(&records)?;
    lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("matrix")?)?;
    Ok(())
}

/// For each layer of `a`, the layer of `b` closest by `measure` (ties: the
/// lower layer).
fn best_matches(cells: &[Cell2], measure: Measure) -> Vec<(i32, i32, f64)> {
    let mut best: Vec<(i32, i32, f64)> = Vec::new();
    for c in cells.iter().filter(|c| c.measure == measure) {
        let closer = |old: f64| {
            if measure.higher_is_closer() {
                c.value > old
            } else {
                c.value < old
            }
        };
        match best.iter_mut().find(|(la, _, _)| *la == c.layer_a) {
            Some(entry) if closer(entry.2) => *entry = (c.layer_a, c.layer_b, c.value),
            Some(_) => {}
            None => best.push((c.layer_a, c.layer_b, c.value)),
        }
    }
    best
}

fn section(
    node: &str,
    p: &LayerSimilarityParams,
    cells: &[Cell2],
    best: &[(i32, i32, f64)],
    layers_a: &[i32],
    layers_b: &[i32],
    n: usize,
) -> Section {
    let primary = p.measures[0];
    let overall = best.iter().copied().reduce(|x, y| {
        let better = if primary.higher_is_closer() {
            y.2 > x.2
        } else {
            y.2 < x.2
        };
        if better { y } else { x }
    });
    let cell_of = |la: i32, lb: i32| {
        cells
            .iter()
            .find(|c| c.measure == primary && c.layer_a == la && c.layer_b == lb)
    };
    let (verdict, evidence) = match overall.and_then(|(la, lb, _)| cell_of(la, lb)) {
        Some(c) => {
            let interval = c
                .interval
                .map(|(lo, hi)| format!(" [{lo:.3}, {hi:.3}]"))
                .unwrap_or_default();
            match c.p_value {
                Some(pv) => (
                    verdicts::alignment(Some(pv)),
                    format!(
                        "closest pair: layer {} of a and layer {} of b, {} = {:.3}{interval}, \
                         shuffled-pairing p = {pv:.3} ({} permutations, {n} texts)",
                        c.layer_a,
                        c.layer_b,
                        primary.name(),
                        c.value,
                        p.permutations
                    ),
                ),
                None => (
                    verdicts::alignment(None),
                    format!(
                        "closest pair: layer {} of a and layer {} of b, {} = {:.3}{interval} \
                         ({n} texts); no permutation null was run (`permutations = 0`)",
                        c.layer_a,
                        c.layer_b,
                        primary.name(),
                        c.value
                    ),
                ),
            }
        }
        None => (Verdict::Inconclusive, "no cells".to_string()),
    };
    let values: Vec<Vec<f64>> = layers_a
        .iter()
        .map(|&la| {
            layers_b
                .iter()
                .map(|&lb| cell_of(la, lb).map_or(f64::NAN, |c| c.value))
                .collect()
        })
        .collect();
    Section::new(
        format!("Layer similarity ({node})"),
        format!(
            "The two representations align beyond chance: the closest pair of layers is \
             more similar by {} than under shuffled text pairings (p < {ALIGNMENT_ALPHA}).",
            primary.name()
        ),
        verdict,
        evidence,
    )
    .figure(NamedFigure::new(
        format!("{node}-matrix"),
        format!(
            "{} of {}-pooled sentence vectors, every layer of a (rows) against every layer of b (columns).",
            primary.name(),
            p.pool.name()
        ),
        Heatmap {
            title: format!("{} between layers", primary.name()),
            x_label: "layer of b".into(),
            y_label: "layer of a".into(),
            row_labels: layers_a.iter().map(|l| l.to_string()).collect(),
            col_labels: layers_b.iter().map(|l| l.to_string()).collect(),
            values,
            color_label: primary.name().into(),
            symmetric: false,
            normalize_rows: false,
        },
    ))
    .table(Table {
        columns: vec![
            "layer of a".into(),
            "closest layer of b".into(),
            primary.name().into(),
        ],
        rows: best
            .iter()
            .map(|(la, lb, v)| vec![la.to_string(), lb.to_string(), format!("{v:.3}")])
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(layers: usize, layer_bytes: usize) -> Side {
        Side {
            layers: (0..layers as i32).collect(),
            layer_bytes,
        }
    }

    #[test]
    fn everything_that_fits_is_one_group_each() {
        let (a, b) = layer_groups(&side(13, 100), &side(25, 100), 3800);
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!((a[0].len(), b[0].len()), (13, 25));
    }

    #[test]
    fn b_is_kept_whole_when_it_fits_in_half_and_a_takes_the_rest() {
        // b: 10 x 100 = 1000 <= 2500; a gets 5000 - 1000 = 4000, 40 layers of 100.
        let (a, b) = layer_groups(&side(100, 100), &side(10, 100), 5000);
        assert_eq!(b.len(), 1);
        assert_eq!(a.iter().map(Vec::len).collect::<Vec<_>>(), vec![40, 40, 20]);
    }

    #[test]
    fn groups_cover_every_layer_once_and_never_exceed_the_budget_past_one_layer() {
        for budget in [1, 150, 999, 1000, 2600, 10_000] {
            let (sa, sb) = (side(7, 300), side(5, 200));
            let (a, b) = layer_groups(&sa, &sb, budget);
            let flat = |g: &[Vec<i32>]| g.concat();
            assert_eq!(flat(&a), sa.layers, "budget {budget}");
            assert_eq!(flat(&b), sb.layers, "budget {budget}");
            let held = a.iter().map(Vec::len).max().unwrap() * 300
                + b.iter().map(Vec::len).max().unwrap() * 200;
            assert!(held <= budget.max(500), "budget {budget}: {held}");
        }
    }
}
