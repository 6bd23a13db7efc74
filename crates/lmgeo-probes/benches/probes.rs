//! Criterion benchmarks of the three heavy probes at the sizes of a real
//! layer (512 tokens, hidden size 2048). The inputs come from a counter-based
//! SplitMix64 stream that scripts/bench/probes_reference.py reproduces bit
//! for bit, so numpy and scikit-learn are timed on exactly these matrices.
//!
//! Run: `cargo xtask bench probes` (or `RAYON_NUM_THREADS=2 cargo bench --profile dev -p lmgeo-probes`)

use criterion::{Criterion, criterion_group, criterion_main};
use faer::Mat;
use lmgeo_probes::{Preprocess, entropy, gp, lasso, preprocess::preprocess};
use std::hint::black_box;
use std::time::Duration;

const TOKENS: usize = 512;
const HIDDEN: usize = 2048;

fn splitmix64(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add((index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform on [-1, 1) from the top 53 bits.
fn symmetric_uniform(seed: u64, index: u64) -> f64 {
    2.0 * ((splitmix64(seed, index) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0
}

/// Hidden-state-like rows: token noise, plus a direction shared by every
/// token (as the large mean of real hidden states), plus one of 8 "topic"
/// directions. Elementwise sums only, so Python reproduces it exactly.
fn hidden_like(n: usize, d: usize) -> Mat<f64> {
    Mat::from_fn(n, d, |i, j| {
        let noise = symmetric_uniform(1, (i * d + j) as u64);
        let shared = symmetric_uniform(2, j as u64);
        let topic = symmetric_uniform(3, ((i % 8) * d + j) as u64);
        noise + 0.5 * shared + 0.5 * topic
    })
}

fn benches(c: &mut Criterion) {
    let raw = hidden_like(TOKENS + 1, HIDDEN);
    let tokens = raw.as_ref().subrows(0, TOKENS).to_owned();
    let unit = preprocess(raw.as_ref(), Preprocess::L2).unwrap();
    let context = unit.as_ref().subrows(0, TOKENS);
    let new: Vec<f64> = (0..HIDDEN).map(|j| unit[(TOKENS, j)]).collect();
    let unit_tokens = unit.as_ref().subrows(0, TOKENS).to_owned();

    let mut group = c.benchmark_group("probes");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    group.bench_function("entropy_report_center_l2_512x2048", |b| {
        b.iter(|| {
            entropy::entropy_report(black_box(tokens.as_ref()), Preprocess::CenterL2, 0.1).unwrap()
        })
    });
    group.bench_function("gain_curve_512_positions_d2048", |b| {
        b.iter(|| gp::gain_curve(black_box(unit_tokens.as_ref()), 0.01).unwrap())
    });
    for (label, gram) in [
        ("auto", lasso::GramMode::Auto),
        ("gram", lasso::GramMode::Always),
        ("no_gram", lasso::GramMode::Never),
    ] {
        let options = lasso::LassoOptions {
            alpha: 1e-4,
            tol: 1e-4,
            max_iter: 1000,
            gram,
            screening: true,
        };
        let fit = lasso::lasso_tokens(context, &new, &options).unwrap();
        eprintln!(
            "lasso {label}: {} iterations, converged {}, Gram used {}, {} non-zero",
            fit.iterations,
            fit.converged,
            fit.used_gram,
            fit.coef.iter().filter(|c| **c != 0.0).count()
        );
        group.bench_function(format!("lasso_512_features_2048_samples_{label}"), |b| {
            b.iter(|| lasso::lasso_tokens(black_box(context), &new, &options).unwrap())
        });
    }
    group.finish();
}

criterion_group!(probes, benches);
criterion_main!(probes);
