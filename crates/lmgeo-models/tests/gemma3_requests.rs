//! Gemma 3 beyond the golden fingerprints: the sliding-window mask on a tiny
//! model built from a VarBuilder with Hugging Face init hints, and the
//! quantised weight path against the dequantised one.

mod gguf_support;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use gguf_support::*;
use lmgeo_models::gemma3::LayerAttention;
use lmgeo_models::{
    AttentionCapture, ForwardRequest, Gemma3, Gemma3Config, LanguageModel, LoadOptions,
    LogitsCapture, WeightFormat,
};

fn tiny_config() -> Gemma3Config {
    Gemma3Config {
        vocab_size: 40,
        hidden_size: 24,
        intermediate_size: 48,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 8,
        rms_norm_eps: 1e-6,
        rope_theta: 1_000_000.0,
        rope_scaling_factor: 1.0,
        rope_local_base_freq: 10_000.0,
        sliding_window: 4,
        layer_types: vec![LayerAttention::Sliding, LayerAttention::Full],
        query_pre_attn_scalar: 8.0,
        attn_logit_softcapping: None,
        final_logit_softcapping: None,
        max_positions: 64,
        tie_word_embeddings: true,
        pad_token_id: None,
        initializer_range: 0.02,
    }
}

#[test]
fn gemma3_sliding_layers_see_only_their_window() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let m = Gemma3::load(vb, tiny_config(), "tiny").unwrap();
    {
        let vars = varmap.data().lock().unwrap();
        let w = vars["model.layers.0.self_attn.q_norm.weight"]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap();
        assert!(
            w.iter().all(|&v| v == 0.0),
            "Gemma norm weights start at zero (scale 1 + w)"
        );
    }
    let ids: Vec<u32> = (1..=10).collect();
    let out = m
        .forward(
            &ids,
            &ForwardRequest {
                attention: AttentionCapture::All,
                logits: LogitsCapture::Last,
            },
        )
        .unwrap();
    let n = ids.len();
    for (layer, window) in [(0, Some(4)), (1, None)] {
        for a in &out.attentions[layer] {
            for q in 0..n {
                let row = a.row(q);
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5);
                for (k, &p) in row.iter().enumerate() {
                    let visible = k <= q && window.is_none_or(|w| q - k < w);
                    assert_eq!(p > 0.0, visible, "layer {layer} query {q} key {k}: {p}");
                }
            }
        }
    }
    // Embeddings are scaled by sqrt(hidden) before the first block.
    assert_eq!(out.embeddings.cols, 24);
    let cfg = tiny_config();
    assert_eq!(
        cfg.n_params(),
        40 * 24 + cfg.n_params_non_embedding(),
        "tied embeddings counted once"
    );
}

#[test]
fn gemma3_quantized_path_stays_close_to_the_dequantized_one() {
    let path = fetch("gemma3-270m");
    let load = |format| {
        Gemma3::from_gguf(
            &path,
            &LoadOptions {
                format,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let (dense, quant) = (
        load(WeightFormat::DequantizedF32),
        load(WeightFormat::Quantized),
    );
    let ids = golden("gemma3").texts[0].ids.clone();
    let req = ForwardRequest {
        attention: AttentionCapture::None,
        logits: LogitsCapture::Last,
    };
    let a = dense.forward(&ids, &req).unwrap();
    let b = quant.forward(&ids, &req).unwrap();
    let fa = a.final_norm.as_ref().unwrap();
    let fb = b.final_norm.as_ref().unwrap();
    for r in 0..fa.rows {
        let (x, y) = (fa.row(r), fb.row(r));
        let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
        let cos = dot / (frobenius(x) * frobenius(y));
        assert!(cos > 0.98, "row {r}: cosine {cos}");
    }
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |acc, (i, &x)| if x > acc.1 { (i, x) } else { acc },
            )
            .0
    };
    assert_eq!(
        argmax(a.logits.as_ref().unwrap().row(0)),
        argmax(b.logits.as_ref().unwrap().row(0))
    );
}
