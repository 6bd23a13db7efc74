//! Criterion benchmarks of the representation-similarity probes at the
//! sizes of a real comparison (2000 items, hidden size 2048 on both sides).
//! The inputs come from the counter-based SplitMix64 stream of
//! benches/probes.rs, which scripts/bench/geometry_numpy.py reproduces bit
//! for bit, so numpy is timed on exactly these matrices.
//!
//! Run: `RAYON_NUM_THREADS=2 cargo bench --profile dev -p lmgeo-probes --bench geometry`

use criterion::{Criterion, criterion_group, criterion_main};
use faer::Mat;
use lmgeo_probes::similarity::{self, HsicEstimator};
use std::hint::black_box;
use std::time::Duration;

const ITEMS: usize = 2000;
const HIDDEN: usize = 2048;
const K: usize = 10;

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

/// Token noise + a shared direction + one of 8 topic directions, from the
/// streams `base`, `base + 1`, `base + 2` (benches/probes.rs uses base 1).
fn hidden_like(n: usize, d: usize, base: u64) -> Mat<f64> {
    Mat::from_fn(n, d, |i, j| {
        let noise = symmetric_uniform(base, (i * d + j) as u64);
        let shared = symmetric_uniform(base + 1, j as u64);
        let topic = symmetric_uniform(base + 2, ((i % 8) * d + j) as u64);
        noise + 0.5 * shared + 0.5 * topic
    })
}

/// Independent fused multiply-add chains on the widest f64 vectors the CPU
/// has, enough of them to cover the FMA units' latency: this machine's f64
/// peak, the ceiling for any exact (f64) Gram product.
struct FmaChains {
    rounds: u64,
}

impl pulp::WithSimd for FmaChains {
    /// The chains' sum (kept, so the work is not optimised away) and the
    /// vector width it ran at.
    type Output = (f64, usize);

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> (f64, usize) {
        let (b, c) = (simd.splat_f64s(0.999_999_9), simd.splat_f64s(1e-9));
        let mut chains = [simd.splat_f64s(1.0); 12];
        for _ in 0..self.rounds {
            for chain in &mut chains {
                *chain = simd.mul_add_f64s(*chain, b, c);
            }
        }
        let sum = chains.iter().map(|&v| simd.reduce_sum_f64s(v)).sum();
        (sum, S::F64_LANES)
    }
}

/// f64 multiply-adds per second on every rayon thread at once.
fn f64_fma_peak() -> f64 {
    let rounds = 50_000_000u64;
    let start = std::time::Instant::now();
    let lanes: usize = rayon::broadcast(|_| pulp::Arch::new().dispatch(FmaChains { rounds }))
        .into_iter()
        .map(|done| black_box(done).1)
        .sum();
    (rounds * 12 * lanes as u64) as f64 / start.elapsed().as_secs_f64()
}

fn benches(c: &mut Criterion) {
    eprintln!(
        "f64 multiply-add peak on {} threads: {:.1} G/s (two n x n Gram products of {ITEMS} x {HIDDEN} take {:.1} G)",
        rayon::current_num_threads(),
        f64_fma_peak() / 1e9,
        (ITEMS * ITEMS * 2 * HIDDEN) as f64 / 2.0 / 1e9,
    );
    let x = hidden_like(ITEMS, HIDDEN, 1);
    // A second representation that shares the first one's structure.
    let y = &hidden_like(ITEMS, HIDDEN, 11) + &x;
    eprintln!(
        "linear CKA {:.15}, debiased {:.15}, mutual kNN (k = {K}) {:.15}",
        similarity::linear_cka(x.as_ref(), y.as_ref(), HsicEstimator::Biased).unwrap(),
        similarity::linear_cka(x.as_ref(), y.as_ref(), HsicEstimator::Debiased).unwrap(),
        similarity::mutual_knn(x.as_ref(), y.as_ref(), K).unwrap(),
    );

    let mut group = c.benchmark_group("geometry");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("linear_cka_2000x2048", |b| {
        b.iter(|| {
            similarity::linear_cka(black_box(x.as_ref()), y.as_ref(), HsicEstimator::Biased)
                .unwrap()
        })
    });
    group.bench_function("mutual_knn_k10_2000x2048", |b| {
        b.iter(|| similarity::mutual_knn(black_box(x.as_ref()), y.as_ref(), K).unwrap())
    });
    group.finish();
}

criterion_group!(geometry, benches);
criterion_main!(geometry);
