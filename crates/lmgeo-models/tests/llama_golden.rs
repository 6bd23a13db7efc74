//! SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to f32) against transformers
//! loading the same file with `gguf_file=`: every layer, every attention
//! head, the logits and greedy decoding. Fixtures from
//! `scripts/golden/models_gguf.py smollm2`.

mod gguf_support;

use gguf_support::*;
use lmgeo_models::{LanguageModel, Llama, LoadOptions};

// Tolerances, and why. Both sides compute in float32 from identical
// dequantised weights; they differ only in summation order (gemm blocking,
// fused norms). SmolLM2's residual stream carries a few "massive
// activations" (|x| up to ~4e3 in the golden texts), so rounding error in a
// layer scales with that layer's largest magnitude, not with the coordinate:
// coordinates are compared in units of the matrix's max |x|, to 2e-6
// (float32 epsilon is 1.2e-7; observed at most 1.8e-7 over 30 layers).
// Frobenius and row norms: 5e-5 relative (a small row inherits the absolute
// error of the large ones; observed 1.2e-6). Attention probabilities are
// compared absolutely to 1e-5 (observed 3.0e-6), logits to 2.5e-4 (values
// 15-35; observed 4.0e-5). Rankings (top-5 tokens, each head's argmax key)
// must agree except between entries closer than those tolerances.
const TOL: Tolerances = Tolerances {
    hidden_rel_to_max: 2e-6,
    norm_rel: 5e-5,
    attention_abs: 1e-5,
    logits_abs: 2.5e-4,
};

fn model() -> Llama {
    let path = fetch("smollm2-135m");
    Llama::from_gguf(&path, &LoadOptions::default()).expect("load SmolLM2")
}

#[test]
fn llama_config_from_gguf_matches_transformers() {
    // transformers' LlamaConfig for this file.
    let m = model();
    let c = m.config();
    assert_eq!(
        (c.n_layers, c.hidden_size, c.intermediate_size),
        (30, 576, 1536)
    );
    assert_eq!((c.n_heads, c.n_kv_heads, c.head_dim), (9, 3, 64));
    assert_eq!((c.vocab_size, c.max_positions), (49152, 8192));
    assert_eq!(c.rope_theta, 100_000.0);
    assert!((c.rms_norm_eps - 1e-5).abs() < 1e-12);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.pad_token_id, Some(2));
    assert_eq!(m.info().n_params_non_embedding, 134_515_008 - 49152 * 576);
}

#[test]
fn llama_smollm2_matches_transformers_layer_by_layer() {
    let g = golden("smollm2");
    let m = model();
    assert_eq!(m.info().n_params, g.n_params);
    check_fingerprints(&m, &g, &TOL);
}

/// The tensor-ops path (what runs on a GPU) on the CPU, against the same
/// fixtures and tolerances.
#[test]
fn llama_smollm2_tensor_ops_match_transformers_layer_by_layer() {
    let g = golden("smollm2");
    check_fingerprints(&model().with_tensor_ops(), &g, &TOL);
    check_greedy(&model().with_tensor_ops(), &g);
}

#[test]
fn llama_smollm2_greedy_matches_transformers() {
    let g = golden("smollm2");
    check_greedy(&model(), &g);
}
