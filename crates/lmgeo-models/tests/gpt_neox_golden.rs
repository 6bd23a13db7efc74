//! GPT-NeoX against transformers' `GPTNeoXForCausalLM` on two tiny random
//! checkpoints (tests/fixtures/gpt_neox/, made by scripts/golden/models_hf.py).
//!
//! "parallel": parallel residual, rotary on 4 of 16 channels per head (pct 0.25),
//! untied unembedding, exact GELU, transformers-5 config, one safetensors file.
//! "sequential": sequential residual, rotary pct 0.5 with base 500, tied
//! embeddings, tanh GELU, Pythia-style config keys, four safetensors shards.
//!
//! Tolerance 1e-4 absolute on every stage (f32 both sides; observed errors are
//! printed with --nocapture and sit around 1e-6, the hidden values are O(1-10)).

mod hf_support;

use hf_support::{Golden, Worst, fixtures, read_json};
use lmgeo_models::{
    AttentionCapture, ForwardRequest, GptNeoX, GptNeoXConfig, LanguageModel, LogitsCapture,
    ModelError, Ops,
};

const TOL: f32 = 1e-4;

fn fixture(name: &str) -> (GptNeoX, Golden, serde_json::Value) {
    let dir = fixtures().join("gpt_neox");
    let model = GptNeoX::from_folder(&dir.join(name)).unwrap();
    let golden = Golden::load(&dir.join(format!("{name}_golden.safetensors")));
    let meta = read_json(&dir.join("golden.json"))["fixtures"][name].clone();
    (model, golden, meta)
}

fn sequences(meta: &serde_json::Value) -> Vec<Vec<u32>> {
    meta["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn all_stages(name: &str, ops: Ops) {
    let (model, golden, meta) = fixture(name);
    let model = match ops {
        Ops::Tensor => model.with_tensor_ops(),
        Ops::CpuKernels => model,
    };
    let info = model.info().clone();
    let mut worst = Worst::new(&format!("gpt_neox/{name} hidden"), TOL);
    let mut worst_att = Worst::new(&format!("gpt_neox/{name} attention"), TOL);
    let mut worst_logits = Worst::new(&format!("gpt_neox/{name} logits"), TOL);
    let all_logits_for = meta["all_logits_for"].as_u64().unwrap() as usize;
    for (i, tokens) in sequences(&meta).iter().enumerate() {
        let n = tokens.len();
        let request = ForwardRequest {
            attention: AttentionCapture::All,
            logits: if i == all_logits_for {
                LogitsCapture::All
            } else {
                LogitsCapture::Last
            },
        };
        let out = model.forward(tokens, &request).unwrap();
        let h = info.hidden_size;
        assert_eq!((out.embeddings.rows, out.embeddings.cols), (n, h));
        worst.check(
            &format!("s{i} embeddings"),
            &out.embeddings.data,
            &golden.f32(&format!("s{i}.embeddings")),
        );
        let layers = golden.f32(&format!("s{i}.layers"));
        assert_eq!(out.layers.len(), info.n_layers);
        for (l, m) in out.layers.iter().enumerate() {
            worst.check(
                &format!("s{i} block {l}"),
                &m.data,
                &layers[l * n * h..(l + 1) * n * h],
            );
        }
        worst.check(
            &format!("s{i} final norm"),
            &out.final_norm.as_ref().unwrap().data,
            &golden.f32(&format!("s{i}.final_norm")),
        );
        let att = golden.f32(&format!("s{i}.attentions"));
        assert_eq!(out.attention_queries, (0..n).collect::<Vec<_>>());
        for (l, heads) in out.attentions.iter().enumerate() {
            assert_eq!(heads.len(), info.n_heads);
            for (hd, m) in heads.iter().enumerate() {
                let start = (l * info.n_heads + hd) * n * n;
                worst_att.check(
                    &format!("s{i} layer {l} head {hd}"),
                    &m.data,
                    &att[start..start + n * n],
                );
            }
        }
        let logits = out.logits.as_ref().unwrap();
        let last = golden.f32(&format!("s{i}.logits_last"));
        worst_logits.check(
            &format!("s{i} last logits"),
            logits.row(logits.rows - 1),
            &last,
        );
        if i == all_logits_for {
            assert_eq!(out.logit_positions, (0..n).collect::<Vec<_>>());
            worst_logits.check(
                &format!("s{i} all logits"),
                &logits.data,
                &golden.f32(&format!("s{i}.logits")),
            );
        } else {
            assert_eq!(out.logit_positions, vec![n - 1]);
        }
    }
    worst.report();
    worst_att.report();
    worst_logits.report();
}

#[test]
fn parallel_residual_matches_transformers() {
    all_stages("parallel", Ops::CpuKernels);
}

/// The tensor-ops path (what runs on a GPU) on the CPU: partial rotary, both
/// residual forms, tied and untied unembeddings, to the same tolerance.
#[test]
fn tensor_ops_match_transformers() {
    all_stages("parallel", Ops::Tensor);
    all_stages("sequential", Ops::Tensor);
}

#[test]
fn sequential_residual_tied_sharded_matches_transformers() {
    all_stages("sequential", Ops::CpuKernels);
}

#[test]
fn selected_query_rows_equal_the_full_matrix_rows() {
    let (model, _, meta) = fixture("parallel");
    let tokens = &sequences(&meta)[3];
    let full = model
        .forward(
            tokens,
            &ForwardRequest {
                attention: AttentionCapture::All,
                ..Default::default()
            },
        )
        .unwrap();
    let rows = vec![tokens.len() - 1, 0, 7];
    let some = model
        .forward(
            tokens,
            &ForwardRequest {
                attention: AttentionCapture::Queries(rows.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(some.attention_queries, rows);
    for (l, heads) in some.attentions.iter().enumerate() {
        for (h, m) in heads.iter().enumerate() {
            assert_eq!((m.rows, m.cols), (rows.len(), tokens.len()));
            for (r, &q) in rows.iter().enumerate() {
                assert_eq!(m.row(r), full.attentions[l][h].row(q));
            }
        }
    }
    // Nothing requested, nothing returned; hidden states do not depend on it.
    let bare = model.forward(tokens, &ForwardRequest::default()).unwrap();
    assert!(bare.attentions.is_empty() && bare.logits.is_none());
    assert_eq!(bare.layers, full.layers);
}

/// Greedy decoding by repeated full forwards must reproduce transformers'
/// `generate` token for token (the script checks that the top-2 logit margin
/// stays above 1e-3 at every step, far above our 1e-5 logit errors).
#[test]
fn greedy_continuations_match_transformers() {
    for name in ["parallel", "sequential"] {
        let (model, _, meta) = fixture(name);
        for g in meta["generations"].as_array().unwrap() {
            let mut ids: Vec<u32> = g["prompt"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect();
            let expected: Vec<u32> = g["continuation"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect();
            let prompt_len = ids.len();
            let request = ForwardRequest {
                logits: LogitsCapture::Last,
                ..Default::default()
            };
            for _ in 0..expected.len() {
                let out = model.forward(&ids, &request).unwrap();
                let row = out.logits.unwrap().data;
                // First maximum, like torch.argmax.
                let best = row
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
                    )
                    .0;
                ids.push(best as u32);
            }
            assert_eq!(
                &ids[prompt_len..],
                expected.as_slice(),
                "{name}: prompt {:?}",
                &ids[..prompt_len]
            );
        }
    }
}

#[test]
fn parameter_counts_match_transformers() {
    let dir = fixtures().join("gpt_neox");
    for name in ["parallel", "sequential"] {
        let (model, _, meta) = fixture(name);
        assert_eq!(
            model.info().n_params,
            meta["n_params"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            model.info().n_params_non_embedding,
            meta["n_params_non_embedding"].as_u64().unwrap(),
            "{name}"
        );
    }
    // The Pythia suite, counted by transformers on the meta device.
    let counts = read_json(&dir.join("pythia_counts.json"));
    let counts = counts.as_object().unwrap();
    assert_eq!(counts.len(), 10);
    for (name, entry) in counts {
        let config =
            GptNeoXConfig::from_value(&entry["config"], std::path::Path::new(name)).unwrap();
        assert_eq!(
            config.n_params(),
            entry["n_params"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            config.n_params_non_embedding(),
            entry["n_params_non_embedding"].as_u64().unwrap(),
            "{name}"
        );
    }
    // And the figures printed in the Pythia paper's table (total / non-embedding).
    let pythia = |name: &str| {
        GptNeoXConfig::from_value(&counts[name]["config"], std::path::Path::new(name)).unwrap()
    };
    assert_eq!(pythia("pythia-70m").n_params(), 70_426_624);
    assert_eq!(pythia("pythia-70m").n_params_non_embedding(), 18_915_328);
    assert_eq!(pythia("pythia-160m").n_params_non_embedding(), 85_056_000);
    assert_eq!(pythia("pythia-1b").n_params_non_embedding(), 805_736_448);
}

#[test]
fn configs_in_both_spellings_agree() {
    let old = serde_json::json!({
        "model_type": "gpt_neox", "vocab_size": 50304, "hidden_size": 512,
        "num_hidden_layers": 6, "num_attention_heads": 8, "intermediate_size": 2048,
        "rotary_pct": 0.25, "rotary_emb_base": 10000, "use_parallel_residual": true
    });
    let new = serde_json::json!({
        "model_type": "gpt_neox", "vocab_size": 50304, "hidden_size": 512,
        "num_hidden_layers": 6, "num_attention_heads": 8, "intermediate_size": 2048,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}
    });
    let p = std::path::Path::new("inline");
    let a = GptNeoXConfig::from_value(&old, p).unwrap();
    let b = GptNeoXConfig::from_value(&new, p).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.rotary_ndims(), 16);

    let scaled = serde_json::json!({
        "model_type": "gpt_neox", "vocab_size": 10, "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8,
        "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    });
    assert!(matches!(
        GptNeoXConfig::from_value(&scaled, p),
        Err(ModelError::Unsupported(_))
    ));
    let broken = serde_json::json!({"model_type": "gpt_neox", "hidden_size": 8});
    let err = GptNeoXConfig::from_value(&broken, p).unwrap_err();
    assert!(err.to_string().contains("vocab_size"), "{err}");
}

#[test]
fn bad_requests_are_errors_not_panics() {
    let (model, _, _) = fixture("parallel");
    let r = ForwardRequest::default();
    assert!(matches!(
        model.forward(&[], &r),
        Err(ModelError::Request(_))
    ));
    assert!(matches!(
        model.forward(&[1, 1000], &r),
        Err(ModelError::Request(_))
    ));
    let q = ForwardRequest {
        attention: AttentionCapture::Queries(vec![3]),
        ..Default::default()
    };
    assert!(matches!(
        model.forward(&[1, 2, 3], &q),
        Err(ModelError::Request(_))
    ));
    assert!(matches!(
        model.forward_batch(&[&[1, 2, 3, 4], &[5, 6]], &q),
        Err(ModelError::Request(_))
    ));
    assert!(model.forward_batch(&[], &r).unwrap().is_empty());
}

#[test]
fn missing_weights_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("gpt_neox/parallel");
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    match GptNeoX::from_folder(tmp.path()) {
        Err(ModelError::Io { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("loaded a model without weights"),
    }
    // A checkpoint with fewer layers than its config claims.
    let mut config = read_json(&src.join("config.json"));
    config["num_hidden_layers"] = serde_json::json!(4);
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    match GptNeoX::from_folder(tmp.path()) {
        Err(ModelError::MissingTensor { name, .. }) => assert!(name.contains("layers.3"), "{name}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("loaded a model with a missing block"),
    }
}

/// Right-padded batches equal one-at-a-time runs to 1e-5 of each matrix's
/// largest entry (the causal mask already keeps padding out of real rows).
#[test]
fn batched_forward_equals_single() {
    for (name, ops) in [
        ("parallel", Ops::CpuKernels),
        ("sequential", Ops::CpuKernels),
        ("parallel", Ops::Tensor),
    ] {
        let (model, _, meta) = fixture(name);
        let model = match ops {
            Ops::Tensor => model.with_tensor_ops(),
            Ops::CpuKernels => model,
        };
        let seqs = sequences(&meta);
        let batch: Vec<&[u32]> = seqs.iter().rev().map(Vec::as_slice).collect();
        for request in [
            ForwardRequest {
                attention: AttentionCapture::All,
                logits: LogitsCapture::All,
            },
            ForwardRequest {
                attention: AttentionCapture::Queries(vec![0]),
                logits: LogitsCapture::Last,
            },
        ] {
            let together = model.forward_batch(&batch, &request).unwrap();
            assert_eq!(together.len(), batch.len());
            let mut worst = 0f32;
            for (tokens, b) in batch.iter().zip(&together) {
                let single = model.forward(tokens, &request).unwrap();
                assert_eq!(single.attention_queries, b.attention_queries);
                assert_eq!(single.logit_positions, b.logit_positions);
                let pairs = std::iter::once((&single.embeddings, &b.embeddings))
                    .chain(single.layers.iter().zip(&b.layers))
                    .chain(single.final_norm.iter().zip(b.final_norm.iter()))
                    .chain(single.logits.iter().zip(b.logits.iter()))
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
                    assert!(rel <= 1e-5, "{name}: batched differs by {rel:e} relative");
                    worst = worst.max(rel);
                }
            }
            println!("{name} batch: max normwise relative difference {worst:.2e}");
        }
    }
}

/// The same weights as sharded PyTorch pickles (the only format of Pythia's
/// intermediate `stepN` revisions) give bit-identical outputs.
#[test]
fn pytorch_bin_shards_load_like_safetensors() {
    let dir = fixtures().join("gpt_neox");
    let (st, _, meta) = fixture("sequential");
    let bin = GptNeoX::from_folder(&dir.join("sequential_bin")).unwrap();
    let request = ForwardRequest {
        attention: AttentionCapture::All,
        logits: LogitsCapture::All,
    };
    for tokens in sequences(&meta) {
        assert_eq!(
            bin.forward(&tokens, &request).unwrap(),
            st.forward(&tokens, &request).unwrap()
        );
    }
}

/// Pythia's hub weights are float16; they are widened to f32 on load, as
/// transformers does with `dtype=float32`.
#[test]
fn float16_checkpoint_matches_transformers() {
    let dir = fixtures().join("gpt_neox");
    let (_, _, meta) = fixture("sequential");
    let model = GptNeoX::from_folder(&dir.join("sequential_f16")).unwrap();
    let golden = Golden::load(&dir.join("sequential_f16_golden.safetensors"));
    let mut worst = Worst::new("gpt_neox/sequential_f16", TOL);
    let request = ForwardRequest {
        logits: LogitsCapture::Last,
        ..Default::default()
    };
    for (i, tokens) in sequences(&meta).iter().enumerate() {
        let out = model.forward(tokens, &request).unwrap();
        let layers: Vec<f32> = out.layers.iter().flat_map(|m| m.data.clone()).collect();
        worst.check(
            &format!("s{i} blocks"),
            &layers,
            &golden.f32(&format!("s{i}.layers")),
        );
        worst.check(
            &format!("s{i} last logits"),
            &out.logits.unwrap().data,
            &golden.f32(&format!("s{i}.logits_last")),
        );
    }
    worst.report();
}

/// A 150-token input spans three of the 64-row blocks the causal attention
/// runs in; its final norm, selected attention rows and last logits must still
/// match transformers.
#[test]
fn long_sequence_across_attention_blocks_matches_transformers() {
    let (model, golden, meta) = fixture("parallel");
    let long = &meta["long"];
    let tokens: Vec<u32> = long["sequence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let rows: Vec<usize> = long["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as usize)
        .collect();
    let n = tokens.len();
    let out = model
        .forward(
            &tokens,
            &ForwardRequest {
                attention: AttentionCapture::Queries(rows.clone()),
                logits: LogitsCapture::Last,
            },
        )
        .unwrap();
    let mut worst = Worst::new("gpt_neox/parallel long", TOL);
    worst.check(
        "final norm",
        &out.final_norm.unwrap().data,
        &golden.f32("long.final_norm"),
    );
    worst.check(
        "last logits",
        &out.logits.unwrap().data,
        &golden.f32("long.logits_last"),
    );
    let att = golden.f32("long.attention_rows");
    let heads = model.info().n_heads;
    for (l, layer) in out.attentions.iter().enumerate() {
        for (h, m) in layer.iter().enumerate() {
            let start = (l * heads + h) * rows.len() * n;
            worst.check(
                &format!("layer {l} head {h} rows {rows:?}"),
                &m.data,
                &att[start..start + rows.len() * n],
            );
        }
    }
    worst.report();
}

/// Causality: the outputs at the first k positions do not depend on what
/// follows, for cut points inside and at the edges of attention blocks.
#[test]
fn prefixes_are_unaffected_by_later_tokens() {
    let (model, _, meta) = fixture("parallel");
    let tokens: Vec<u32> = meta["long"]["sequence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let request = ForwardRequest {
        attention: AttentionCapture::Queries(vec![0, 63]),
        ..Default::default()
    };
    let full = model.forward(&tokens, &request).unwrap();
    for k in [64, 65, 100, 128] {
        let part = model.forward(&tokens[..k], &request).unwrap();
        for (a, b) in part.layers.iter().zip(&full.layers) {
            let d = hf_support::max_abs_diff(&a.data, &b.data[..a.data.len()]);
            assert!(d < 1e-5, "prefix {k}: hidden states differ by {d:e}");
        }
        for (la, lb) in part.attentions.iter().zip(&full.attentions) {
            for (a, b) in la.iter().zip(lb) {
                for r in 0..2 {
                    let d = hf_support::max_abs_diff(a.row(r), &b.row(r)[..k]);
                    assert!(d < 1e-6, "prefix {k}: attention differs by {d:e}");
                    assert!(b.row(r)[k..].iter().all(|&p| p == 0.0));
                }
            }
        }
    }
}
