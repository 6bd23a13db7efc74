//! `ablate`: the controlled experiments of method.md §5. Remove (or keep only)
//! the top-k context tokens chosen by Lasso, by attention, or at random, rerun
//! the model, and measure how much the last token's output changes.

use std::collections::{BTreeMap, HashMap};

use lmgeo_dag::{
    InputPort, Interface, MetricRow, Node, NodeError, OutputPort, ParamError, RunContext,
};
use lmgeo_models::{AttentionCapture, ForwardOutput, ForwardRequest, LogitsCapture};
use lmgeo_report::{LinePlot, NamedFigure, Section, Series, Table, Verdict};
use lmgeo_tables::{Cell, Record};
use rand::SeedableRng;
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

use crate::common::mean_sem;
use crate::data::read_texts;
use crate::model::{
    Keep, ModelChoice, Tokenization, WeightsParam, default_max_tokens, default_min_tokens,
    default_true, output_states, tokenize,
};
use crate::report::write_section;

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

fn compare_outputs(full: &ForwardOutput, modified: &ForwardOutput) -> Measure {
    let a = output_states(full);
    let b = output_states(modified);
    let (ra, rb) = (a.row(a.rows - 1), b.row(b.rows - 1));
    let dot: f64 = ra
        .iter()
        .zip(rb)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = ra.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = rb.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let cosine_distance = 1.0 - dot / (na * nb).max(f64::MIN_POSITIVE);
    let (kl, top1_agree) = match (&full.logits, &modified.logits) {
        (Some(p), Some(q)) => {
            let lp = log_softmax(p.row(p.rows - 1));
            let lq = log_softmax(q.row(q.rows - 1));
            let kl = lp
                .iter()
                .zip(&lq)
                .map(|(a, b)| a.exp() * (a - b))
                .sum::<f64>()
                .max(0.0);
            let argmax = |v: &[f64]| {
                v.iter()
                    .enumerate()
                    .max_by(|x, y| x.1.total_cmp(y.1))
                    .map(|(i, _)| i)
            };
            (Some(kl), Some(argmax(&lp) == argmax(&lq)))
        }
        _ => (None, None),
    };
    Measure {
        cosine_distance,
        kl,
        top1_agree,
    }
}

fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .map(|v| f64::from(*v))
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|v| (f64::from(*v) - max).exp()).sum();
    let log_sum = max + sum.ln();
    logits.iter().map(|v| f64::from(*v) - log_sum).collect()
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
        let selections = lmgeo_tables::read_parquet(&ctx.single_input("selections")?.path)?;
        let ids = selections.column("text_id")?.str()?.clone();
        let layers = selections.column("layer")?.i64()?.clone();
        let methods = selections.column("method")?.str()?.clone();
        let ranks = selections.column("rank")?.i64()?.clone();
        let positions = selections.column("position")?.i64()?.clone();
        let layer = match p.layer {
            Some(l) => l,
            None => layers
                .iter()
                .flatten()
                .max()
                .ok_or_else(|| NodeError::msg("the selections table is empty"))?,
        };
        // (text, method) -> positions by rank
        let mut ranked: BTreeMap<(String, String), Vec<(i64, usize)>> = BTreeMap::new();
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
        let text_ids: Vec<String> = {
            let mut v: Vec<String> = ranked.keys().map(|(id, _)| id.clone()).collect();
            v.dedup();
            v
        };
        if text_ids.is_empty() {
            return Err(NodeError::msg(format!("no selections at layer {layer}")));
        }
        let loaded = self.choice(p).load(&|m| ctx.progress(0, None, m))?;
        let tokenization = Tokenization::from(p);
        let causal = loaded.model.info().causal;
        let request = ForwardRequest {
            attention: AttentionCapture::None,
            logits: if causal {
                LogitsCapture::Last
            } else {
                LogitsCapture::None
            },
        };
        let mut rows: Vec<Record> = Vec::new();
        // (method, k) -> per-run values; for random also per seed.
        let mut kl: BTreeMap<(Method, usize), Vec<f64>> = BTreeMap::new();
        let mut cos: BTreeMap<(Method, usize), Vec<f64>> = BTreeMap::new();
        let mut agree: BTreeMap<(Method, usize), Vec<f64>> = BTreeMap::new();
        let mut random_by_seed: RandomBySeed = BTreeMap::new();
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
            let Some(ids) = tokenize(&loaded, text, &tokenization)? else {
                continue;
            };
            let query = ids.len() - 1;
            let first = usize::from(p.protect_first);
            let candidates: Vec<usize> = (first..query).collect();
            let full = loaded.model.forward(&ids, &request)?;
            let mut variants: Vec<(Method, usize, usize, Vec<usize>)> = Vec::new();
            for &method in &p.methods {
                for &k in &p.k {
                    if k > candidates.len() {
                        continue;
                    }
                    match method {
                        Method::Random => {
                            for s in 0..p.random_seeds {
                                let seed = p.selection_seed
                                    ^ (blake3::hash(format!("{text_id}\0{k}\0{s}").as_bytes())
                                        .as_bytes()[..8]
                                        .iter()
                                        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)));
                                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                                let chosen: Vec<usize> = sample(&mut rng, candidates.len(), k)
                                    .into_iter()
                                    .map(|i| candidates[i])
                                    .collect();
                                variants.push((method, k, s, chosen));
                            }
                        }
                        _ => {
                            let list = ranked
                                .get(&(text_id.clone(), method.name().to_string()))
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
                            variants.push((method, k, 0, chosen));
                        }
                    }
                }
            }
            let sequences: Vec<Vec<u32>> = variants
                .iter()
                .map(|(_, _, _, chosen)| {
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
                })
                .collect();
            let refs: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
            let outputs = loaded.model.forward_batch(&refs, &request)?;
            for ((method, k, s, chosen), output) in variants.iter().zip(&outputs) {
                let m = compare_outputs(&full, output);
                rows.push(vec![
                    ("text_id".into(), Cell::Str(text_id.clone())),
                    ("method".into(), Cell::Str(method.name().into())),
                    ("k".into(), Cell::Int(*k as i64)),
                    ("seed".into(), Cell::Int(*s as i64)),
                    ("changed_tokens".into(), Cell::Int(chosen.len() as i64)),
                    ("cosine_distance".into(), Cell::Float(m.cosine_distance)),
                    ("kl".into(), m.kl.into()),
                    ("top1_agree".into(), m.top1_agree.into()),
                ]);
                cos.entry((*method, *k))
                    .or_default()
                    .push(m.cosine_distance);
                if let Some(v) = m.kl {
                    kl.entry((*method, *k)).or_default().push(v);
                }
                if let Some(v) = m.top1_agree {
                    agree
                        .entry((*method, *k))
                        .or_default()
                        .push(f64::from(u8::from(v)));
                }
                if *method == Method::Random {
                    let e = random_by_seed.entry((*k, *s)).or_default();
                    e.0.push(m.cosine_distance);
                    if let Some(v) = m.kl {
                        e.1.push(v);
                    }
                }
            }
            ctx.progress(done as u64 + 1, Some(total), "texts");
        }
        if rows.is_empty() {
            return Err(NodeError::msg(
                "no text was long enough for the requested k",
            ));
        }
        let mut frame = lmgeo_tables::frame_from_records(&rows)?;
        lmgeo_tables::set_column_type(&mut frame, "kl", lmgeo_tables::ColumnKind::Float)?;
        lmgeo_tables::set_column_type(&mut frame, "top1_agree", lmgeo_tables::ColumnKind::Bool)?;
        lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("per_run")?)?;
        for (name, values) in [
            ("cosine_distance", &cos),
            ("kl", &kl),
            ("top1_agree", &agree),
        ] {
            for ((method, k), v) in values {
                let (mean, sem) = mean_sem(v);
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
        let section = self.section(p, ctx.node_id(), &cos, &kl, &random_by_seed, causal);
        write_section(ctx, &section)?;
        Ok(())
    }
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

    fn section(
        &self,
        p: &AblateParams,
        node: &str,
        cos: &BTreeMap<(Method, usize), Vec<f64>>,
        kl: &BTreeMap<(Method, usize), Vec<f64>>,
        random_by_seed: &RandomBySeed,
        causal: bool,
    ) -> Section {
        let use_kl = causal && !kl.is_empty();
        let values = if use_kl { kl } else { cos };
        let measure = if use_kl {
            "KL(full ‖ modified) of the next-token distribution"
        } else {
            "cosine distance of the last hidden state"
        };
        let series = |method: Method| -> Option<Series> {
            let points: Vec<(f64, f64)> = values
                .iter()
                .filter(|((m, _), _)| *m == method)
                .map(|((_, k), v)| (*k as f64, mean_sem(v).0))
                .collect();
            if points.is_empty() {
                return None;
            }
            let mut s = Series::line(method.name(), points);
            if method == Method::Random {
                // Spread over seeds: the mean over texts for each seed, and
                // the band from the smallest to the largest of those means.
                let mut band = Vec::new();
                let mut per_k: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
                for ((k, _), (c, l)) in random_by_seed {
                    let v = if use_kl { l } else { c };
                    if !v.is_empty() {
                        per_k.entry(*k).or_default().push(mean_sem(v).0);
                    }
                }
                for (k, means) in per_k {
                    let lo = means.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    band.push((k as f64, lo, hi));
                }
                s = s.with_band(band);
            }
            Some(s)
        };
        let all_series: Vec<Series> = [Method::Lasso, Method::Attention, Method::Random]
            .into_iter()
            .filter_map(series)
            .collect();
        let mut ratios = Vec::new();
        let mut table_rows = Vec::new();
        for ((method, k), v) in values {
            let (mean, sem) = mean_sem(v);
            let random = values.get(&(Method::Random, *k)).map(|r| mean_sem(r).0);
            let ratio = random.filter(|r| *r > 0.0).map(|r| mean / r);
            if *method != Method::Random
                && let Some(r) = ratio
            {
                ratios.push(r);
            }
            table_rows.push(vec![
                method.name().to_string(),
                k.to_string(),
                format!("{mean:.4} ± {sem:.4}"),
                ratio.map_or("—".into(), |r| format!("{r:.2}")),
            ]);
        }
        let (claim, verdict, evidence) = match p.mode {
            Mode::Remove => {
                let worst = ratios.iter().copied().fold(0.0, f64::max);
                let verdict = if ratios.is_empty() {
                    Verdict::Inconclusive
                } else if worst <= 2.0 {
                    Verdict::Supported
                } else if ratios.iter().filter(|r| **r <= 2.0).count() * 2 >= ratios.len() {
                    Verdict::Partly
                } else {
                    Verdict::NotSupported
                };
                (
                    "Removing the tokens Lasso or attention rank highest changes the output not much more than removing as many random tokens: information is spread over the context (Tan et al., §5).",
                    verdict,
                    format!(
                        "Effect ({measure}) of removing the selected tokens relative to removing random ones: largest ratio {worst:.2} over methods and k; ratios ≤ 2 in {} of {} cases.",
                        ratios.iter().filter(|r| **r <= 2.0).count(),
                        ratios.len()
                    ),
                )
            }
            Mode::Keep => {
                let better = ratios.iter().filter(|r| **r < 1.0).count();
                let verdict = if ratios.is_empty() {
                    Verdict::Inconclusive
                } else if better == ratios.len() {
                    Verdict::Supported
                } else if better > 0 {
                    Verdict::Partly
                } else {
                    Verdict::NotSupported
                };
                (
                    "Keeping only the top-k tokens picked by Lasso or attention preserves the next-token distribution better than keeping k random tokens (Tan et al., §4).",
                    verdict,
                    format!(
                        "Keeping the selected tokens changed the output less than keeping random ones in {better} of {} (method, k) cases ({measure}).",
                        ratios.len()
                    ),
                )
            }
        };
        Section::new(
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
        })
    }
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

    #[test]
    fn log_softmax_and_kl_follow_their_definitions() {
        let l = log_softmax(&[0.0, (2.0f32).ln()]);
        assert!((l[0] - (1.0f64 / 3.0).ln()).abs() < 1e-7);
        assert!((l[1] - (2.0f64 / 3.0).ln()).abs() < 1e-7);
        // Shifting logits changes nothing.
        let shifted = log_softmax(&[1000.0, 1000.0 + (2.0f32).ln()]);
        assert!((shifted[1] - l[1]).abs() < 1e-4);
    }

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
        );
        assert!(same.cosine_distance.abs() < 1e-12);
        assert!(same.kl.unwrap().abs() < 1e-12);
        assert_eq!(same.top1_agree, Some(true));
        // p = (1/2, 1/2), q = (1/3, 2/3): KL = 0.5 ln(3/2) + 0.5 ln(3/4).
        let m = compare_outputs(
            &output(vec![1.0, 0.0], vec![0.0, 0.0]),
            &output(vec![0.0, 1.0], vec![0.0, (2.0f32).ln()]),
        );
        let expected = 0.5 * (1.5f64).ln() + 0.5 * (0.75f64).ln();
        assert!((m.kl.unwrap() - expected).abs() < 1e-7, "{:?}", m.kl);
        assert!((m.cosine_distance - 1.0).abs() < 1e-12);
    }
}
