//! `ablate`: the controlled experiments of method.md §5. Remove (or keep only)
//! the top-k context tokens chosen by Lasso, by attention, or at random, rerun
//! the model, and measure how much the last token's output changes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use lmgeo_dag::{
    InputPort, Interface, MetricRow, Node, NodeError, OutputPort, ParamError, RunContext,
};
use lmgeo_models::{AttentionCapture, ForwardOutput, ForwardRequest, LoadedModel, LogitsCapture};
use lmgeo_probes::divergence;
use lmgeo_report::{LinePlot, NamedFigure, Section, Series, Table};
use lmgeo_tables::{Cell, Record};
use rand::SeedableRng;
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

use crate::common::{MeanSem, mean_sem};
use crate::data::read_texts;
use crate::model::{
    Keep, ModelChoice, Tokenization, WeightsParam, default_max_tokens, default_min_tokens,
    default_true, output_states, tokenize,
};
use crate::report::write_section;
use crate::verdicts;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Lasso,
    Attention,
    Random,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Lasso => "lasso",
            Method::Attention => "attention",
            Method::Random => "random",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Delete the chosen tokens from the context.
    #[default]
    Remove,
    /// Keep only the chosen tokens (and the last token).
    Keep,
}

fn default_methods() -> Vec<Method> {
    vec![Method::Lasso, Method::Attention, Method::Random]
}
fn default_k() -> Vec<usize> {
    vec![1, 2, 4, 8]
}
fn default_random_seeds() -> usize {
    10
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AblateParams {
    /// The model, exactly as in the `extract` node the selections came from.
    pub model: String,
    #[serde(default)]
    pub weights: WeightsParam,
    #[serde(default)]
    pub seed: u64,
    /// Where the model runs; never serialised, so never in the key (see
    /// [`crate::model::DEVICE_DOC`]).
    #[serde(default = "crate::model::default_device", skip_serializing)]
    pub device: String,
    /// Tokenization, exactly as in `extract` (positions must mean the same).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    #[serde(default)]
    pub keep: Keep,
    #[serde(default = "default_min_tokens")]
    pub min_tokens: usize,
    #[serde(default = "default_true")]
    pub special_tokens: bool,
    /// The hidden-state layer whose selections to use (default: the deepest
    /// in the selections table).
    #[serde(default)]
    pub layer: Option<i64>,
    #[serde(default = "default_methods")]
    pub methods: Vec<Method>,
    /// Numbers of tokens to remove (or keep).
    #[serde(default = "default_k")]
    pub k: Vec<usize>,
    #[serde(default)]
    pub mode: Mode,
    /// Random selections per (text, k).
    #[serde(default = "default_random_seeds")]
    pub random_seeds: usize,
    /// Seed of the random selections.
    #[serde(default)]
    pub selection_seed: u64,
    /// Never select the first token (BOS or the first word): attention
    /// parks on it, and removing it breaks the input rather than the context.
    #[serde(default = "default_true")]
    pub protect_first: bool,
}

pub struct Ablate;

/// (k, seed) -> the cosine distances and KL divergences of that random draw
/// over texts.
type RandomBySeed = BTreeMap<(usize, usize), (Vec<f64>, Vec<f64>)>;

struct Measure {
    cosine_distance: f64,
    kl: Option<f64>,
    top1_agree: Option<bool>,
}

/// The change of the last token's output: cosine distance of its hidden
/// state and, with logits, KL and top-1 agreement of the next-token
/// distributions (lmgeo_probes::divergence).
fn compare_outputs(full: &ForwardOutput, modified: &ForwardOutput) -> Result<Measure, NodeError> {
    let last_row = |m: &lmgeo_models::F32Matrix| -> Vec<f64> {
        m.row(m.rows - 1).iter().map(|v| f64::from(*v)).collect()
    };
    let cosine_distance = divergence::cosine_distance(
        &last_row(output_states(full)),
        &last_row(output_states(modified)),
    )
    .map_err(NodeError::msg)?;
    let (kl, top1_agree) = match (&full.logits, &modified.logits) {
        (Some(p), Some(q)) => {
            let lp = divergence::log_softmax(&last_row(p)).map_err(NodeError::msg)?;
            let lq = divergence::log_softmax(&last_row(q)).map_err(NodeError::msg)?;
            let kl = divergence::kl_divergence(&lp, &lq).map_err(NodeError::msg)?;
            let agree = divergence::argmax(&lp).map_err(NodeError::msg)?
                == divergence::argmax(&lq).map_err(NodeError::msg)?;
            (Some(kl), Some(agree))
        }
        _ => (None, None),
    };
    Ok(Measure {
        cosine_distance,
        kl,
        top1_agree,
    })
}

impl Node for Ablate {
    type Params = AblateParams;
    const KIND: &'static str = "ablate";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "remove or keep the top-k context tokens (Lasso, attention, random) and measure the change";

    fn interface(&self, p: &AblateParams) -> Result<Interface, ParamError> {
        crate::model::check_device(&p.device)?;
        if p.methods.is_empty() {
            return Err(ParamError::field("methods", "is empty"));
        }
        if p.k.is_empty() || p.k.contains(&0) {
            return Err(ParamError::field(
                "k",
                "must be a non-empty list of positive numbers",
            ));
        }
        if p.methods.contains(&Method::Random) && p.random_seeds == 0 {
            return Err(ParamError::field(
                "random_seeds",
                "must be at least 1 with the random method",
            ));
        }
        let mut interface = Interface {
            inputs: vec![
                InputPort::one("texts", "the `texts` table the selections were made on"),
                InputPort::one("selections", "`selections` of a `lasso_attention` node"),
            ],
            outputs: vec![
                OutputPort::published(
                    "per_run",
                    "per (text, method, k, seed): the change of the output",
                ),
                crate::report::section_output(),
            ],
            ..Interface::default()
        };
        self.choice(p).key_inputs(&mut interface)?;
        Ok(interface)
    }

    fn run(&self, p: &AblateParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let texts: HashMap<String, String> = read_texts(&ctx.single_input("texts")?.path)?
            .into_iter()
            .map(|(id, text, _)| (id, text))
            .collect();
        let (layer, ranked) = read_selections(&ctx.single_input("selections")?.path, p.layer)?;
        let text_ids: Vec<String> = {
            let mut v: Vec<String> = ranked.keys().map(|(id, _)| id.clone()).collect();
            v.dedup();
            v
        };
        if text_ids.is_empty() {
            return Err(NodeError::msg(format!("no selections at layer {layer}")));
        }
        let loaded = self.choice(p).load(&|m| ctx.progress(0, None, m))?;
        let causal = loaded.model.info().causal;
        let runs = measure(p, ctx, &loaded, &texts, &text_ids, &ranked)?;
        if runs.is_empty() {
            return Err(NodeError::msg(
                "no text was long enough for the requested k",
            ));
        }
        let groups = Groups::of(&runs);
        publish(p, ctx, &runs, &groups)?;
        let section = section(p, ctx.node_id(), &groups, causal)?;
        write_section(ctx, &section)
    }
}

/// (text, method) -> the selected positions, by rank.
type Ranked = BTreeMap<(String, String), Vec<(i64, usize)>>;

/// The selections at `layer` (default: the deepest in the table), and that
/// layer.
fn read_selections(path: &Path, layer: Option<i64>) -> Result<(i64, Ranked), NodeError> {
    let selections = lmgeo_tables::read_parquet(path)?;
    let ids = selections.column("text_id")?.str()?.clone();
    let layers = selections.column("layer")?.i64()?.clone();
    let methods = selections.column("method")?.str()?.clone();
    let ranks = selections.column("rank")?.i64()?.clone();
    let positions = selections.column("position")?.i64()?.clone();
    let layer = match layer {
        Some(l) => l,
        None => layers
            .iter()
            .flatten()
            .max()
            .ok_or_else(|| NodeError::msg("the selections table is empty"))?,
    };
    let mut ranked: Ranked = BTreeMap::new();
    for i in 0..selections.height() {
        if layers.get(i) != Some(layer) {
            continue;
        }
        let (Some(id), Some(method), Some(rank), Some(position)) =
            (ids.get(i), methods.get(i), ranks.get(i), positions.get(i))
        else {
            continue;
        };
        ranked
            .entry((id.to_string(), method.to_string()))
            .or_default()
            .push((rank, position as usize));
    }
    for list in ranked.values_mut() {
        list.sort();
    }
    Ok((layer, ranked))
}

/// One modified context: which tokens a method chose for a text at one k
/// (and, for random choices, one seed), and how the output changed.
struct Run {
    text_id: String,
    method: Method,
    k: usize,
    seed: usize,
    chosen: usize,
    measure: Measure,
}

/// Runs the model on every text, whole and with each selection removed (or
/// kept), and compares the outputs. Reads nothing but its arguments and
/// writes nothing.
fn measure(
    p: &AblateParams,
    ctx: &RunContext<'_>,
    loaded: &LoadedModel,
    texts: &HashMap<String, String>,
    text_ids: &[String],
    ranked: &Ranked,
) -> Result<Vec<Run>, NodeError> {
    let tokenization = Tokenization::from(p);
    let request = ForwardRequest {
        attention: AttentionCapture::None,
        logits: if loaded.model.info().causal {
            LogitsCapture::Last
        } else {
            LogitsCapture::None
        },
    };
    let mut runs = Vec::new();
    let total = text_ids.len() as u64;
    for (done, text_id) in text_ids.iter().enumerate() {
        if ctx.cancelled() {
            return Err(NodeError::msg("interrupted"));
        }
        let text = texts.get(text_id).ok_or_else(|| {
            NodeError::msg(format!(
                "text `{text_id}` of the selections is not in `texts`"
            ))
        })?;
        let Some(ids) = tokenize(loaded, text, &tokenization)? else {
            continue;
        };
        let full = loaded.model.forward(&ids, &request)?;
        let variants = variants(p, text_id, ids.len() - 1, ranked)?;
        let sequences: Vec<Vec<u32>> = variants
            .iter()
            .map(|v| modified_context(p, &ids, &v.chosen))
            .collect();
        let refs: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
        let outputs = loaded.model.forward_batch(&refs, &request)?;
        for (v, output) in variants.into_iter().zip(&outputs) {
            runs.push(Run {
                text_id: text_id.clone(),
                method: v.method,
                k: v.k,
                seed: v.seed,
                chosen: v.chosen.len(),
                measure: compare_outputs(&full, output)?,
            });
        }
        ctx.progress(done as u64 + 1, Some(total), "texts");
    }
    Ok(runs)
}

/// A selection of context positions to remove or keep.
struct Variant {
    method: Method,
    k: usize,
    seed: usize,
    chosen: Vec<usize>,
}

/// Every (method, k, seed) selection for a text whose last token is at
/// `query`: the ranked ones from the table, the random ones drawn from a
/// seed derived from the text, k and the draw.
fn variants(
    p: &AblateParams,
    text_id: &str,
    query: usize,
    ranked: &Ranked,
) -> Result<Vec<Variant>, NodeError> {
    let first = usize::from(p.protect_first);
    let candidates: Vec<usize> = (first..query).collect();
    let mut variants = Vec::new();
    for &method in &p.methods {
        for &k in &p.k {
            if k > candidates.len() {
                continue;
            }
            match method {
                Method::Random => {
                    for s in 0..p.random_seeds {
                        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(random_seed(
                            p.selection_seed,
                            text_id,
                            k,
                            s,
                        ));
                        let chosen: Vec<usize> = sample(&mut rng, candidates.len(), k)
                            .into_iter()
                            .map(|i| candidates[i])
                            .collect();
                        variants.push(Variant {
                            method,
                            k,
                            seed: s,
                            chosen,
                        });
                    }
                }
                _ => {
                    let list = ranked
                        .get(&(text_id.to_string(), method.name().to_string()))
                        .ok_or_else(|| {
                            NodeError::msg(format!(
                                "no `{}` selection for `{text_id}`",
                                method.name()
                            ))
                        })?;
                    if list.iter().any(|(_, pos)| *pos >= query) {
                        return Err(NodeError::msg(format!(
                            "`{text_id}`: selections reach position {query} or beyond; tokenize exactly as the extraction did"
                        )));
                    }
                    let chosen: Vec<usize> = list
                        .iter()
                        .map(|(_, pos)| *pos)
                        .filter(|pos| *pos >= first)
                        .take(k)
                        .collect();
                    variants.push(Variant {
                        method,
                        k,
                        seed: 0,
                        chosen,
                    });
                }
            }
        }
    }
    Ok(variants)
}

/// The seed of random draw `s` at `k` for a text: the selection seed mixed
/// with a hash of all three, so that draws do not depend on the text order.
fn random_seed(selection_seed: u64, text_id: &str, k: usize, s: usize) -> u64 {
    selection_seed
        ^ (blake3::hash(format!("{text_id}\0{k}\0{s}").as_bytes()).as_bytes()[..8]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// The token ids with the chosen positions removed (or only those kept);
/// the last token, and the first when protected, always stay.
fn modified_context(p: &AblateParams, ids: &[u32], chosen: &[usize]) -> Vec<u32> {
    let query = ids.len() - 1;
    (0..ids.len())
        .filter(|i| {
            let selected = chosen.contains(i);
            *i == query
                || (p.protect_first && *i == 0)
                || match p.mode {
                    Mode::Remove => !selected,
                    Mode::Keep => selected,
                }
        })
        .map(|i| ids[i])
        .collect()
}

/// The runs grouped by (method, k), and the random ones also by seed.
struct Groups {
    cos: BTreeMap<(Method, usize), Vec<f64>>,
    kl: BTreeMap<(Method, usize), Vec<f64>>,
    agree: BTreeMap<(Method, usize), Vec<f64>>,
    random_by_seed: RandomBySeed,
}

impl Groups {
    fn of(runs: &[Run]) -> Self {
        let mut g = Groups {
            cos: BTreeMap::new(),
            kl: BTreeMap::new(),
            agree: BTreeMap::new(),
            random_by_seed: BTreeMap::new(),
        };
        for r in runs {
            let key = (r.method, r.k);
            let m = &r.measure;
            g.cos.entry(key).or_default().push(m.cosine_distance);
            if let Some(v) = m.kl {
                g.kl.entry(key).or_default().push(v);
            }
            if let Some(v) = m.top1_agree {
                g.agree.entry(key).or_default().push(f64::from(u8::from(v)));
            }
            if r.method == Method::Random {
                let e = g.random_by_seed.entry((r.k, r.seed)).or_default();
                e.0.push(m.cosine_distance);
                if let Some(v) = m.kl {
                    e.1.push(v);
                }
            }
        }
        g
    }
}

/// The `per_run` table and the mean and standard error of each measure per
/// (method, k).
fn publish(
    p: &AblateParams,
    ctx: &mut RunContext<'_>,
    runs: &[Run],
    groups: &Groups,
) -> Result<(), NodeError> {
    let rows: Vec<Record> = runs
        .iter()
        .map(|r| {
            vec![
                ("text_id".into(), Cell::Str(r.text_id.clone())),
                ("method".into(), Cell::Str(r.method.name().into())),
                ("k".into(), Cell::Int(r.k as i64)),
                ("seed".into(), Cell::Int(r.seed as i64)),
                ("changed_tokens".into(), Cell::Int(r.chosen as i64)),
                (
                    "cosine_distance".into(),
                    Cell::Float(r.measure.cosine_distance),
                ),
                ("kl".into(), r.measure.kl.into()),
                ("top1_agree".into(), r.measure.top1_agree.into()),
            ]
        })
        .collect();
    let mut frame = lmgeo_tables::frame_from_records(&rows)?;
    lmgeo_tables::set_column_type(&mut frame, "kl", lmgeo_tables::ColumnKind::Float)?;
    lmgeo_tables::set_column_type(&mut frame, "top1_agree", lmgeo_tables::ColumnKind::Bool)?;
    lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("per_run")?)?;
    for (name, values) in [
        ("cosine_distance", &groups.cos),
        ("kl", &groups.kl),
        ("top1_agree", &groups.agree),
    ] {
        for ((method, k), v) in values {
            let MeanSem { mean, sem } = mean_sem(v)?;
            for (stat, value) in [("mean", mean), ("sem", sem)] {
                ctx.emit(
                    MetricRow::new(name, value)
                        .dim("method", method.name())
                        .dim("k", *k)
                        .dim("mode", mode_name(p.mode))
                        .dim("stat", stat),
                );
            }
        }
    }
    Ok(())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Remove => "remove",
        Mode::Keep => "keep",
    }
}

impl Ablate {
    fn choice(&self, p: &AblateParams) -> ModelChoice {
        ModelChoice {
            model: p.model.clone(),
            weights: p.weights,
            seed: p.seed,
            device: p.device.clone(),
        }
    }
}

/// The report section: the curves against k, each (method, k) against
/// random, and the verdict of [`verdicts::ablation_remove`] or
/// [`verdicts::ablation_keep`] on those ratios.
fn section(
    p: &AblateParams,
    node: &str,
    groups: &Groups,
    causal: bool,
) -> Result<Section, NodeError> {
    let use_kl = causal && !groups.kl.is_empty();
    let values = if use_kl { &groups.kl } else { &groups.cos };
    let measure = if use_kl {
        "KL(full ‖ modified) of the next-token distribution"
    } else {
        "cosine distance of the last hidden state"
    };
    let summaries: BTreeMap<(Method, usize), MeanSem> = values
        .iter()
        .map(|(key, v)| Ok((*key, mean_sem(v)?)))
        .collect::<Result<_, NodeError>>()?;
    // Spread over seeds: the mean over texts for each seed, and the band
    // from the smallest to the largest of those means.
    let mut random_band = Vec::new();
    let mut per_k: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for ((k, _), (c, l)) in &groups.random_by_seed {
        let v = if use_kl { l } else { c };
        if !v.is_empty() {
            per_k.entry(*k).or_default().push(mean_sem(v)?.mean);
        }
    }
    for (k, means) in per_k {
        let lo = means.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        random_band.push((k as f64, lo, hi));
    }
    let all_series: Vec<Series> = [Method::Lasso, Method::Attention, Method::Random]
        .into_iter()
        .filter_map(|method| {
            let points: Vec<(f64, f64)> = summaries
                .iter()
                .filter(|((m, _), _)| *m == method)
                .map(|((_, k), s)| (*k as f64, s.mean))
                .collect();
            if points.is_empty() {
                return None;
            }
            let s = Series::line(method.name(), points);
            Some(if method == Method::Random {
                s.with_band(random_band.clone())
            } else {
                s
            })
        })
        .collect();
    let mut ratios = Vec::new();
    let mut table_rows = Vec::new();
    for ((method, k), s) in &summaries {
        let random = summaries.get(&(Method::Random, *k)).map(|r| r.mean);
        let ratio = random.filter(|r| *r > 0.0).map(|r| s.mean / r);
        if *method != Method::Random
            && let Some(r) = ratio
        {
            ratios.push(r);
        }
        table_rows.push(vec![
            method.name().to_string(),
            k.to_string(),
            format!("{:.4} ± {:.4}", s.mean, s.sem),
            ratio.map_or("—".into(), |r| format!("{r:.2}")),
        ]);
    }
    let (claim, verdict, evidence) = match p.mode {
        Mode::Remove => (
            "Removing the tokens Lasso or attention rank highest changes the output not much more than removing as many random tokens: information is spread over the context (Tan et al., §5).",
            verdicts::ablation_remove(&ratios),
            format!(
                "Effect ({measure}) of removing the selected tokens relative to removing random ones: largest ratio {:.2} over methods and k; ratios ≤ {} in {} of {} cases.",
                ratios.iter().copied().fold(0.0, f64::max),
                verdicts::ABLATION_RATIO_SPREAD,
                verdicts::ablation_within_spread(&ratios),
                ratios.len()
            ),
        ),
        Mode::Keep => (
            "Keeping only the top-k tokens picked by Lasso or attention preserves the next-token distribution better than keeping k random tokens (Tan et al., §4).",
            verdicts::ablation_keep(&ratios),
            format!(
                "Keeping the selected tokens changed the output less than keeping random ones in {} of {} (method, k) cases ({measure}).",
                verdicts::ablation_better(&ratios),
                ratios.len()
            ),
        ),
    };
    Ok(Section::new(
        format!(
            "Token {}: {measure}",
            if p.mode == Mode::Remove {
                "removal"
            } else {
                "keeping"
            }
        ),
        claim,
        verdict,
        evidence,
    )
    .figure(NamedFigure::new(
        format!("{node}-curves"),
        "Mean over texts; the random band spans the per-seed means.",
        LinePlot {
            title: format!(
                "{} the top-k tokens",
                if p.mode == Mode::Remove {
                    "Removing"
                } else {
                    "Keeping only"
                }
            ),
            x_label: "k".into(),
            y_label: measure.into(),
            x_log: false,
            y_log: false,
            series: all_series,
        },
    ))
    .table(Table {
        columns: vec![
            "method".into(),
            "k".into(),
            "mean ± sem".into(),
            "ratio to random".into(),
        ],
        rows: table_rows,
    }))
}

impl From<&AblateParams> for Tokenization {
    fn from(p: &AblateParams) -> Self {
        Tokenization {
            max_tokens: p.max_tokens,
            keep: p.keep,
            min_tokens: p.min_tokens,
            special_tokens: p.special_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(hidden: Vec<f32>, logits: Vec<f32>) -> ForwardOutput {
        let d = hidden.len();
        let v = logits.len();
        ForwardOutput {
            embeddings: lmgeo_models::F32Matrix::new(1, d, hidden.clone()),
            layers: vec![lmgeo_models::F32Matrix::new(1, d, hidden)],
            final_norm: None,
            attentions: vec![],
            attention_queries: vec![],
            logits: Some(lmgeo_models::F32Matrix::new(1, v, logits)),
            logit_positions: vec![0],
        }
    }

    #[test]
    fn comparisons_match_closed_forms() {
        let same = compare_outputs(
            &output(vec![1.0, 0.0], vec![0.0, 0.0]),
            &output(vec![2.0, 0.0], vec![0.0, 0.0]),
        )
        .unwrap();
        assert!(same.cosine_distance.abs() < 1e-12);
        assert!(same.kl.unwrap().abs() < 1e-12);
        assert_eq!(same.top1_agree, Some(true));
        // p = (1/2, 1/2), q = (1/3, 2/3): KL = 0.5 ln(3/2) + 0.5 ln(3/4).
        let m = compare_outputs(
            &output(vec![1.0, 0.0], vec![0.0, 0.0]),
            &output(vec![0.0, 1.0], vec![0.0, (2.0f32).ln()]),
        )
        .unwrap();
        let expected = 0.5 * (1.5f64).ln() + 0.5 * (0.75f64).ln();
        assert!((m.kl.unwrap() - expected).abs() < 1e-7, "{:?}", m.kl);
        assert!((m.cosine_distance - 1.0).abs() < 1e-12);
    }
}
