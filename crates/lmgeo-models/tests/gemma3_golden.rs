//! Gemma 3 270M (Q4_K_M GGUF, dequantised to f32) against transformers
//! loading the same file with `gguf_file=`: every layer, every attention
//! head (the long text passes the 512-token sliding window), the logits and
//! greedy decoding. Fixtures from `scripts/golden/models_gguf.py gemma3`.

mod gguf_support;

use gguf_support::*;
use lmgeo_models::gemma3::LayerAttention;
use lmgeo_models::{Gemma3, LanguageModel, LoadOptions};

// Tolerances, and why: see llama_golden.rs; the same float32 arithmetic on
// the same dequantised weights. Observed: hidden coordinates 2.3e-7 of the
// matrix's max |x| (Gemma's residual stream reaches ~1e4 on the BOS row),
// norms 6.2e-6 relative, attention 2.3e-6, logits 2.5e-5.
const TOL: Tolerances = Tolerances {
    hidden_rel_to_max: 2e-6,
    norm_rel: 5e-5,
    attention_abs: 1e-5,
    logits_abs: 2.5e-4,
};

fn model() -> Gemma3 {
    let path = fetch("gemma3-270m");
    Gemma3::from_gguf(&path, &LoadOptions::default()).expect("load Gemma 3")
}

#[test]
fn gemma3_config_from_gguf_matches_transformers() {
    let m = model();
    let c = m.config();
    // transformers' Gemma3TextConfig for this file (printed by the golden
    // script's stack): 18 layers, every sixth global, window 512, rope
    // bases 1e6 (global) and 1e4 (local), scalar 256.
    assert_eq!(c.n_layers, 18);
    let globals: Vec<usize> = (0..18)
        .filter(|&i| c.layer_types[i] == LayerAttention::Full)
        .collect();
    assert_eq!(globals, vec![5, 11, 17]);
    assert_eq!(c.sliding_window, 512);
    assert_eq!(c.rope_theta, 1_000_000.0);
    assert_eq!(c.rope_local_base_freq, 10_000.0);
    assert_eq!(c.query_pre_attn_scalar, 256.0);
    assert_eq!((c.n_heads, c.n_kv_heads, c.head_dim), (4, 1, 256));
    assert!(c.attn_logit_softcapping.is_none() && c.final_logit_softcapping.is_none());
    assert_eq!(
        (c.vocab_size, c.hidden_size, c.intermediate_size),
        (262144, 640, 2048)
    );
    assert!(c.tie_word_embeddings);
    assert_eq!(c.pad_token_id, Some(0));
    assert_eq!(c.max_positions, 32768);
}

#[test]
fn gemma3_matches_transformers_layer_by_layer() {
    let g = golden("gemma3");
    let m = model();
    assert_eq!(m.info().n_params, g.n_params);
    assert!(
        g.texts.iter().any(|t| t.ids.len() > 512),
        "one golden text must pass the sliding window"
    );
    check_fingerprints(&m, &g, &TOL);
}

/// The tensor-ops path (what runs on a GPU) on the CPU, against the same
/// fixtures and tolerances.
#[test]
fn gemma3_tensor_ops_match_transformers_layer_by_layer() {
    let g = golden("gemma3");
    check_fingerprints(&model().with_tensor_ops(), &g, &TOL);
    check_greedy(&model().with_tensor_ops(), &g);
}

#[test]
fn gemma3_greedy_matches_transformers() {
    let g = golden("gemma3");
    check_greedy(&model(), &g);
}
