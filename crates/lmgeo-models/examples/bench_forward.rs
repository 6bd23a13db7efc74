//! Tokens per second of a full all-layer forward (every hidden state and every
//! attention matrix, no logits) on 512-token hh-rlhf texts.
//!
//! ```text
//! cargo run -p lmgeo-models --example bench_forward -- [--tokens 512] [--repeats 7]
//!     [--device cpu|cuda|cuda:N] [MODEL...]
//! ```
//! MODEL: `minilm` (models/minilm-l6 or $LMGEO_MINILM_DIR), `neox-tiny` (the
//! test fixture), `pythia-160m-random` (random weights from Pythia-160m's
//! config), or a Hugging Face folder. Default: all three named ones.
//! Token ids come from the MiniLM tokenizer for every model (GPT-NeoX has no
//! tokenizer offline; speed does not depend on which ids are run), built the
//! same way as scripts/bench/models_transformers.py builds them.
//! Threads: candle follows RAYON_NUM_THREADS (default: all cores).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use lmgeo_models::hf_folder::load_hf_folder_on;
use lmgeo_models::{
    AttentionCapture, Bert, DeviceChoice, ForwardRequest, GptNeoX, GptNeoXConfig, HfTokenizer,
    LanguageModel, LogitsCapture, TextTokenizer, Weights,
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn hh_rlhf_chosen() -> Vec<String> {
    let rel = "data/hh-rlhf/harmless-base-test.jsonl.gz";
    let path = std::env::var_os("LMGEO_HH_RLHF")
        .map(PathBuf::from)
        .or_else(|| {
            let ws = workspace().canonicalize().ok()?;
            ws.ancestors().map(|a| a.join(rel)).find(|p| p.is_file())
        })
        .expect("hh-rlhf test split not found (set LMGEO_HH_RLHF)");
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(
        std::fs::File::open(path).unwrap(),
    ));
    reader
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
            v["chosen"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Text `r`: dialogues r, r+1, ... joined until the ids reach `n`, cut to `n`.
fn token_texts(tok: &HfTokenizer, n: usize, count: usize) -> Vec<Vec<u32>> {
    let chosen = hh_rlhf_chosen();
    (0..count)
        .map(|r| {
            let mut text = String::new();
            let mut next = r;
            loop {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(&chosen[next]);
                next += 1;
                let ids = tok.encode(&text, true).unwrap();
                if ids.len() >= n {
                    return ids[..n].to_vec();
                }
            }
        })
        .collect()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// User + system CPU seconds of the whole process (all threads), from
/// /proc/self/stat in USER_HZ ticks (100 per second on Linux). On a shared
/// machine this is steadier than wall time, though spin-waits count too.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f[11].parse::<f64>().ok()? + f[12].parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

fn minilm_dir() -> PathBuf {
    std::env::var_os("LMGEO_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("models/minilm-l6"))
}

fn load(name: &str, device: &Device) -> Box<dyn LanguageModel> {
    match name {
        "minilm" => Box::new(Bert::from_folder_on(&minilm_dir(), device).expect("MiniLM folder")),
        "neox-tiny" => Box::new(
            GptNeoX::from_folder_on(
                &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt_neox/parallel"),
                device,
            )
            .unwrap(),
        ),
        "pythia-160m-random" => {
            let counts: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("tests/fixtures/gpt_neox/pythia_counts.json"),
                )
                .unwrap(),
            )
            .unwrap();
            let config = GptNeoXConfig::from_value(
                &counts["pythia-160m"]["config"],
                Path::new("pythia-160m"),
            )
            .unwrap();
            Box::new(GptNeoX::from_config_random_on(config, 0, device).unwrap())
        }
        folder => {
            load_hf_folder_on(Path::new(folder), Weights::Pretrained, device)
                .unwrap()
                .0
        }
    }
}

/// Independent fused multiply-add chains on the widest f32 vectors the CPU
/// has: the ceiling for any f32 forward pass.
struct FmaChains {
    rounds: u64,
}

impl pulp::WithSimd for FmaChains {
    type Output = (f32, usize);

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> (f32, usize) {
        let (b, c) = (simd.splat_f32s(0.999_9), simd.splat_f32s(1e-6));
        let mut chains = [simd.splat_f32s(1.0); 12];
        for _ in 0..self.rounds {
            for chain in &mut chains {
                *chain = simd.mul_add_f32s(*chain, b, c);
            }
        }
        let sum = chains.iter().map(|&v| simd.reduce_sum_f32s(v)).sum();
        (sum, S::F32_LANES)
    }
}

/// f32 multiply-adds per second with `threads` threads at once.
fn f32_fma_peak(threads: usize) -> f64 {
    let rounds = 50_000_000u64;
    let start = Instant::now();
    let lanes: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || pulp::Arch::new().dispatch(FmaChains { rounds })))
            .collect();
        workers
            .into_iter()
            .map(|w| std::hint::black_box(w.join().unwrap()).1)
            .sum()
    });
    (rounds * 12 * lanes as u64) as f64 / start.elapsed().as_secs_f64()
}

/// Multiply-adds a forward pass over `n` tokens cannot do without: every
/// parameter of the blocks once per token (biases and norm scales, under
/// 0.3 % of them, counted as if they were weights), and in every layer the
/// two attention products (`Q K^T` and the mix) over the pairs a query
/// sees: all n x n in an encoder, the n (n + 1) / 2 of the lower triangle in
/// a causal decoder (eager attention in transformers computes all n x n
/// there too). The percentage of the peak printed from it is therefore, to
/// within those 0.3 %, a lower bound on the share of the CPU's multiply-add
/// rate any implementation would need to reach the same speed.
fn forward_multiply_adds(info: &lmgeo_models::ModelInfo, n: usize) -> f64 {
    let weights = info.n_params_non_embedding as f64 * n as f64;
    let pairs = if info.causal {
        (n * (n + 1) / 2) as f64
    } else {
        (n * n) as f64
    };
    let attention = 2.0 * info.n_layers as f64 * pairs * info.hidden_size as f64;
    weights + attention
}

fn main() {
    lmgeo_models::allocator::keep_freed_buffers_for_reuse();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let device: DeviceChoice = match args.iter().position(|a| a == "--device") {
        Some(i) => {
            let choice = args[i + 1].parse().expect("--device cpu|cuda|cuda:N");
            args.drain(i..=i + 1);
            choice
        }
        None => DeviceChoice::Cpu,
    };
    let device = device.resolve().expect("device");
    let mut take = |flag: &str, default: usize| -> usize {
        match args.iter().position(|a| a == flag) {
            Some(i) => {
                let v = args[i + 1].parse().expect("a number");
                args.drain(i..=i + 1);
                v
            }
            None => default,
        }
    };
    let n_tokens = take("--tokens", 512);
    let repeats = take("--repeats", 7);
    let models = if args.is_empty() {
        vec![
            "minilm".to_string(),
            "neox-tiny".to_string(),
            "pythia-160m-random".to_string(),
        ]
    } else {
        args
    };
    let tok = HfTokenizer::from_file(&minilm_dir().join("tokenizer.json"))
        .expect("the MiniLM tokenizer provides the token ids");
    let texts = token_texts(&tok, n_tokens, repeats + 1);
    let threads = candle_core::utils::get_num_threads();
    let peak = f32_fma_peak(threads);
    println!(
        "threads: {threads} (candle), tokens per forward: {n_tokens}, timed runs: {repeats} (+1 warm-up); \
         f32 multiply-add peak on {threads} threads: {:.1} G/s",
        peak / 1e9
    );
    let request = ForwardRequest {
        attention: AttentionCapture::All,
        logits: LogitsCapture::None,
    };
    for name in &models {
        let t0 = Instant::now();
        let model = load(name, &device);
        let load_s = t0.elapsed().as_secs_f64();
        let mut times = Vec::with_capacity(repeats);
        let mut cpu = Vec::with_capacity(repeats);
        let vocab = model.info().vocab_size as u32;
        for (i, ids) in texts.iter().enumerate() {
            // The tiny fixture's vocabulary is 1000 ids.
            let ids: Vec<u32> = ids.iter().map(|&t| t % vocab).collect();
            let (t, c) = (Instant::now(), cpu_seconds());
            let out = model.forward(&ids, &request).unwrap();
            let (dt, dc) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
            assert_eq!(out.layers.len(), model.info().n_layers);
            drop(out);
            if i > 0 {
                times.push(dt);
                cpu.push(dc);
            }
        }
        times.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let work = forward_multiply_adds(model.info(), n_tokens);
        println!(
            "{name:<20} {:>7.0} tokens/s  (median {:.0} ms, min {:.0} ms, CPU {:.2} s/forward; load {:.1} s; peak RSS so far {:.0} MiB; \
             {:.2} G multiply-adds per forward, {:.0}% of the f32 peak)",
            n_tokens as f64 / median,
            median * 1e3,
            times[0] * 1e3,
            cpu[cpu.len() / 2],
            load_s,
            peak_rss_mib(),
            work / 1e9,
            100.0 * work / median / peak
        );
        // The block's four product shapes (both models here have 4x MLPs)
        // alone, best of 10: the ceiling the forward's share is set against.
        // The peak is measured again next to them and the higher taken: on a
        // shared machine it moves from minute to minute.
        if !device.is_cpu() {
            continue;
        }
        let peak = peak.max(f32_fma_peak(threads));
        let (h, n) = (model.info().hidden_size, n_tokens);
        let shapes = [(n, h, 3 * h), (n, h, h), (n, h, 4 * h), (n, 4 * h, h)];
        let rates: Vec<String> = shapes
            .iter()
            .filter_map(|&(m, k, cols)| {
                let rate = lmgeo_models::packed_product_rate(m, k, cols, 10)?;
                Some(format!("{m}x{k}x{cols} {:.0}%", 100.0 * rate / peak))
            })
            .collect();
        if !rates.is_empty() {
            println!(
                "{:<20} packed products alone, best of 10, share of the f32 peak: {}",
                "",
                rates.join(", ")
            );
        }
    }
}
