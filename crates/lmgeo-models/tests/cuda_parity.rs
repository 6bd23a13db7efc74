//! The CUDA path against the CPU path, model by model: only in builds with
//! `--features cuda`, and only where a GPU is present (set LMGEO_TEST_CUDA=1
//! to make a missing GPU a failure rather than a skip).
//!
//! Stated CPU/GPU tolerance (why the device is not part of a cache key):
//! every hidden-state matrix within 1e-4 of its largest |entry|, every
//! attention probability within 1e-4, logits within 1e-3 of the largest
//! |logit|. Both sides compute in float32; they differ in summation order
//! (cuBLAS against gemm) and in the GPU's own exp/tanh/erf, errors of order
//! 1e-6 per layer that the residual stream accumulates over 30 layers. The
//! tensor-ops code the GPU runs is also held to the transformers goldens on
//! the CPU (the `*tensor_ops*` tests), at the goldens' own tolerances.
#![cfg(feature = "cuda")]

mod gguf_support;
mod hf_support;

use lmgeo_models::source::ModelSource;
use lmgeo_models::{
    AttentionCapture, DeviceChoice, ForwardRequest, LogitsCapture, Weights, default_models_dir,
    load_model,
};

const HIDDEN_REL_TO_MAX: f32 = 1e-4;
const ATTENTION_ABS: f32 = 1e-4;
const LOGITS_REL_TO_MAX: f32 = 1e-3;

fn gpu_present() -> bool {
    match DeviceChoice::Cuda(0).resolve() {
        Ok(_) => true,
        Err(e) => {
            assert!(
                std::env::var_os("LMGEO_TEST_CUDA").is_none(),
                "LMGEO_TEST_CUDA is set but no GPU opens: {e}"
            );
            eprintln!("skipped: no GPU ({e})");
            false
        }
    }
}

fn rel_to_max(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(f32::MIN_POSITIVE, |a, x| a.max(x.abs()));
    hf_support::max_abs_diff(got, want) / scale
}

fn compare(label: &str, source: ModelSource, sequences: &[Vec<u32>]) {
    let load = |device| {
        load_model(
            &source,
            Weights::Pretrained,
            device,
            &default_models_dir(),
            &|_| {},
        )
        .unwrap_or_else(|e| panic!("{label}: cannot load on {device}: {e}"))
    };
    let (cpu, gpu) = (load(DeviceChoice::Cpu), load(DeviceChoice::Cuda(0)));
    assert!(gpu.model.info().device.starts_with("cuda"), "{label}");
    let causal = cpu.model.info().causal;
    let request = ForwardRequest {
        attention: AttentionCapture::All,
        logits: if causal {
            LogitsCapture::Last
        } else {
            LogitsCapture::None
        },
    };
    let (mut hidden, mut attention, mut logits) = (0f32, 0f32, 0f32);
    for tokens in sequences {
        let a = cpu.model.forward(tokens, &request).unwrap();
        let b = gpu.model.forward(tokens, &request).unwrap();
        for (x, y) in
            std::iter::once((&a.embeddings, &b.embeddings)).chain(a.layers.iter().zip(&b.layers))
        {
            hidden = hidden.max(rel_to_max(&y.data, &x.data));
        }
        for (x, y) in a
            .attentions
            .iter()
            .flatten()
            .zip(b.attentions.iter().flatten())
        {
            attention = attention.max(hf_support::max_abs_diff(&y.data, &x.data));
        }
        if let (Some(x), Some(y)) = (&a.logits, &b.logits) {
            logits = logits.max(rel_to_max(&y.data, &x.data));
        }
    }
    println!(
        "{label}: GPU against CPU, worst hidden {hidden:.2e} of max, attention {attention:.2e}, logits {logits:.2e} of max"
    );
    assert!(
        hidden <= HIDDEN_REL_TO_MAX,
        "{label}: hidden states differ by {hidden:e}"
    );
    assert!(
        attention <= ATTENTION_ABS,
        "{label}: attention differs by {attention:e}"
    );
    assert!(
        logits <= LOGITS_REL_TO_MAX,
        "{label}: logits differ by {logits:e}"
    );
}

/// Token sequences of 7, 64 and 600 tokens (past Gemma's 512-token window).
fn sequences(vocab: usize) -> Vec<Vec<u32>> {
    [7usize, 64, 600]
        .iter()
        .map(|&n| {
            (0..n)
                .map(|i| ((i * 7919 + 13) % (vocab - 1) + 1) as u32)
                .collect()
        })
        .collect()
}

#[test]
fn smollm2_on_gpu_matches_cpu() {
    if gpu_present() {
        let path = gguf_support::fetch("smollm2-135m");
        compare("smollm2", ModelSource::Local(path), &sequences(49152));
    }
}

#[test]
fn gemma3_on_gpu_matches_cpu() {
    if gpu_present() {
        let path = gguf_support::fetch("gemma3-270m");
        compare("gemma3", ModelSource::Local(path), &sequences(262144));
    }
}

#[test]
fn gpt_neox_on_gpu_matches_cpu() {
    if gpu_present() {
        for name in ["parallel", "sequential"] {
            let dir = hf_support::fixtures().join("gpt_neox").join(name);
            let vocab = lmgeo_models::GptNeoXConfig::from_file(&dir.join("config.json"))
                .unwrap()
                .vocab_size;
            let mut seqs = sequences(vocab);
            seqs.truncate(2);
            compare(&format!("gpt_neox/{name}"), ModelSource::Local(dir), &seqs);
        }
    }
}

#[test]
fn minilm_on_gpu_matches_cpu() {
    if gpu_present() {
        let mut seqs = sequences(30522);
        seqs.truncate(2);
        compare(
            "minilm",
            ModelSource::Local(hf_support::minilm_dir()),
            &seqs,
        );
    }
}
