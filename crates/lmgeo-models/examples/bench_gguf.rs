//! Throughput of a full all-layer extraction (every block's hidden states,
//! every head's attention probabilities, last-position logits) on hh-rlhf
//! dialogues cut to a fixed length, for the GGUF models.
//!
//!     cargo run --release -p lmgeo-models --example bench_gguf -- [--tokens 512] [--texts 4]
//!         [--model smollm2-135m|gemma3-270m]... [--quantized] [--device cpu|cuda|cuda:N]
//!
//! Use `--release`: the workspace's dev profile compiles dependencies at
//! opt-level 3 but with debug assertions, which make gemm's inner loops about
//! three times slower (measured: 80 against 250 GFLOPS on one core).
//!
//! Texts: the first `--texts` `chosen` dialogues of the harmless-base test
//! split with at least `--tokens` tokens, cut to that length (the same rule
//! as scripts/bench/models_gguf_transformers.py). One untimed warm-up pass,
//! then each text once. Threads: candle and rayon use RAYON_NUM_THREADS or
//! all cores.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use lmgeo_models::{
    AttentionCapture, DeviceChoice, ForwardRequest, Gemma3, GgufTokenizer, LanguageModel, Llama,
    LoadOptions, LogitsCapture, TextTokenizer, WeightFormat, default_models_dir, ensure_model,
};

fn hh_path() -> PathBuf {
    if let Some(p) = std::env::var_os("LMGEO_HH_RLHF") {
        return PathBuf::from(p);
    }
    // The copy the repository ships.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/hh-rlhf/harmless-base-test.jsonl.gz")
}

fn chosen_texts() -> Vec<String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(hh_path()).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["chosen"].as_str().unwrap().to_string()
        })
        .collect()
}

/// VmHWM of this process, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    lmgeo_models::allocator::keep_freed_buffers_for_reuse();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut tokens = 512usize;
    let mut n_texts = 4usize;
    let mut models = Vec::new();
    let mut format = WeightFormat::DequantizedF32;
    let mut device = DeviceChoice::Cpu;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--tokens" => {
                tokens = args[i + 1].parse().expect("--tokens N");
                i += 1;
            }
            "--texts" => {
                n_texts = args[i + 1].parse().expect("--texts N");
                i += 1;
            }
            "--model" => {
                models.push(args[i + 1].clone());
                i += 1;
            }
            "--quantized" => format = WeightFormat::Quantized,
            "--device" => {
                device = args[i + 1].parse().expect("--device cpu|cuda|cuda:N");
                i += 1;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 1;
    }
    if models.is_empty() {
        models = vec!["smollm2-135m".into(), "gemma3-270m".into()];
    }
    println!(
        "threads: candle {} / rayon {}; {} tokens per text, {} texts, {:?}, device {device}",
        candle_core::utils::get_num_threads(),
        rayon::current_num_threads(),
        tokens,
        n_texts,
        format
    );
    let texts = chosen_texts();
    let dir = default_models_dir();
    for name in &models {
        let path = ensure_model(name, &dir, &|_| {}).expect("fetch");
        let t0 = Instant::now();
        let opts = LoadOptions {
            format,
            device: device.resolve().expect("device"),
        };
        let model: Box<dyn LanguageModel> = match name.as_str() {
            "smollm2-135m" => Box::new(Llama::from_gguf(&path, &opts).unwrap()),
            "gemma3-270m" => Box::new(Gemma3::from_gguf(&path, &opts).unwrap()),
            other => panic!("no benchmark for {other}"),
        };
        let load_s = t0.elapsed().as_secs_f64();
        let tok = GgufTokenizer::from_path(&path).unwrap();
        let inputs: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| tok.encode(t, true).unwrap())
            .filter(|ids| ids.len() >= tokens)
            .take(n_texts)
            .map(|ids| ids[..tokens].to_vec())
            .collect();
        assert_eq!(inputs.len(), n_texts, "not enough long texts");
        let request = ForwardRequest {
            attention: AttentionCapture::All,
            logits: LogitsCapture::Last,
        };
        let _ = model.forward(&inputs[0], &request).unwrap();
        let mut times = Vec::new();
        for ids in &inputs {
            let t = Instant::now();
            let out = model.forward(ids, &request).unwrap();
            times.push(t.elapsed().as_secs_f64());
            std::hint::black_box(&out);
        }
        let total: f64 = times.iter().sum();
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{name:<14} load {load_s:5.1} s | {:7.1} tok/s (median {:.3} s per text, min {:.3}) | peak RSS {:.0} MiB",
            (tokens * n_texts) as f64 / total,
            sorted[sorted.len() / 2],
            sorted[0],
            peak_rss_mib()
        );
    }
}
