//! The element-wise CPU kernels of every model in this crate: the softmax of
//! attention (with Gemma's optional soft-cap), the activations of the
//! feed-forward blocks (plain, as in BERT and GPT-NeoX, or gated, as in the
//! Llama-family decoders), and the vector maths under them (exp, tanh, erfc).
//!
//! candle leaves these to scalar libm calls (`expf`, `tanhf`, `erff`), which
//! took about a sixth of a forward pass. Here each is a plain loop over lanes
//! that the compiler vectorises, compiled once per instruction set (AVX-512,
//! AVX2 + FMA, baseline) by [`multiversion!`] and picked at run time: the one
//! dispatch every kernel uses. Every path performs the same IEEE operations in
//! the same order (Rust does not contract into FMA; reductions use a fixed
//! number of partial sums), so results do not depend on the CPU.
//!
//! Softmax and the activations take their exponentials in blocks of 32
//! values, each step of the polynomials issued for the whole block before
//! the next (the `_block` functions): a value-at-a-time loop left the CPU
//! waiting on one long chain of dependent multiplies and adds per vector.
//! The blocks perform the scalar functions' operations in their order, so
//! the results are the same bit for bit (tested).
//!
//! Accuracy: `exp` is within 2 ulp on the range softmax uses, `tanh` within
//! 3e-7 absolute, `erfc` within 1e-6 relative (GELU within 5e-7 relative):
//! a few f32 ulps, far below the 1e-4 we keep to transformers (tested).
//!
//! [`with_f32`] is the bridge from a candle tensor to these kernels and to the
//! attention kernels of `attention.rs`.

use candle_core::{Device, Storage, Tensor};
use rayon::prelude::*;

use crate::activation::Activation;

/// Partial sums (and maxima) kept by a reduction: one AVX-512 register, two
/// AVX2 ones.
const LANES: usize = 16;

/// Elements per parallel task of an in-place activation.
const PAR_CHUNK: usize = 1 << 14;

/// exp(x): x = n ln2 + r with |r| <= ln2 / 2, a degree-7 Taylor polynomial
/// for exp(r) (remainder below 7e-9 relative), and 2^n assembled in the
/// exponent bits. Inputs are clamped to [-87.3, 88.3]: below, the result is
/// about 2^-126 instead of a subnormal or zero, which is immaterial for
/// probabilities and activations.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let (shifted, r) = exp_reduce(x);
    exp_finish(horner(r, &EXP_TAYLOR), shifted)
}

/// exp(r)'s Taylor coefficients, highest degree first (for [`horner`]).
const EXP_TAYLOR: [f32; 8] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// `c[0] t^(k-1) + ... + c[k-1]`, innermost first: each step `c + t p`.
#[inline(always)]
fn horner(t: f32, coefficients: &[f32]) -> f32 {
    let mut p = coefficients[0];
    for &c in &coefficients[1..] {
        p = c + t * p;
    }
    p
}

/// exp's range reduction: `(shifted, r)` with `shifted` = n + 1.5 * 2^23
/// (n = round(x / ln 2)) and r = x - n ln 2.
#[inline(always)]
fn exp_reduce(x: f32) -> (f32, f32) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| < 2^8.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    // Adding and subtracting ROUND rounds to the nearest integer without a
    // rounding instruction (absent from baseline SSE2).
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    (shifted, (x - n * LN2_HI) - n * LN2_LO)
}

/// 1.5 * 2^23: see [`exp_reduce`].
const ROUND: f32 = 12_582_912.0;

/// exp(r) 2^n from exp(r) and [`exp_reduce`]'s `shifted`.
#[inline(always)]
fn exp_finish(exp_r: f32, shifted: f32) -> f32 {
    // `shifted` lies in [2^23, 2^24), where the ulp is 1, so its low mantissa
    // bits hold n: integer arithmetic only, which vectorises (a float-to-int
    // conversion would not, with Rust's saturating `as`).
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    exp_r * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// Values per block of the `_block` functions below.
const BLOCK: usize = 32;

/// [`exp`] of every value of a block, computed step by step across it: the
/// same operations in the same order per value, so the same results, but
/// each step is issued for four AVX2 vectors before the next, so that their
/// dependency chains overlap. Value by value, the compiled loop kept about
/// two chains in flight and waited on the rest: softmax rows ran 1.2x and
/// GELU 2.4x faster this way (in-process A/B, bit-identical results).
#[inline(always)]
fn exp_block(v: &mut [f32; BLOCK]) {
    let mut shifted = [0f32; BLOCK];
    let mut r = [0f32; BLOCK];
    for i in 0..BLOCK {
        (shifted[i], r[i]) = exp_reduce(v[i]);
    }
    let p = horner_block(&r, &EXP_TAYLOR);
    for i in 0..BLOCK {
        v[i] = exp_finish(p[i], shifted[i]);
    }
}

/// [`horner`] for every value of a block, one step for all before the next.
#[inline(always)]
fn horner_block(t: &[f32; BLOCK], coefficients: &[f32]) -> [f32; BLOCK] {
    let mut p = [coefficients[0]; BLOCK];
    for &c in &coefficients[1..] {
        for i in 0..BLOCK {
            p[i] = c + t[i] * p[i];
        }
    }
    p
}

/// tanh(u) = 1 - 2 / (exp(2u) + 1): absolute error about 1e-7, which is what
/// GELU's `1 + tanh` and a soft-cap need.
#[inline(always)]
pub(crate) fn tanh(u: f32) -> f32 {
    tanh_from_exp(exp(2.0 * u))
}

/// tanh(u) from `e` = exp(2u).
#[inline(always)]
fn tanh_from_exp(e: f32) -> f32 {
    1.0 - 2.0 / (e + 1.0)
}

/// Numerical Recipes' Chebyshev fit of erfc, highest degree first.
const ERFC_FIT: [f32; 10] = [
    0.170_872_77,
    -0.822_152_23,
    1.488_515_9,
    -1.135_204,
    0.278_868_07,
    -0.186_288_06,
    0.096_784_18,
    0.374_091_96,
    1.000_023_7,
    -1.265_512_2,
];

/// erfc(z) for z >= 0: Numerical Recipes' Chebyshev-fitted `erfcc`, whose
/// fractional error is below 1.2e-7 in exact arithmetic and below 1e-6 as
/// evaluated here in f32 (tested).
#[inline(always)]
fn erfc_nonnegative(z: f32) -> f32 {
    let t = erfc_t(z);
    t * exp(erfc_exponent(z, horner(t, &ERFC_FIT)))
}

#[inline(always)]
fn erfc_t(z: f32) -> f32 {
    1.0 / (1.0 + 0.5 * z)
}

#[inline(always)]
fn erfc_exponent(z: f32, fit: f32) -> f32 {
    -z * z + fit
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    silu_from_exp(x, exp(-x))
}

/// silu(x) from `e` = exp(-x).
#[inline(always)]
fn silu_from_exp(x: f32, e: f32) -> f32 {
    x / (1.0 + e)
}

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    gelu_tanh_from_tanh(x, tanh(gelu_tanh_argument(x)))
}

#[inline(always)]
fn gelu_tanh_from_tanh(x: f32, tanh: f32) -> f32 {
    0.5 * x * (1.0 + tanh)
}

#[inline(always)]
fn gelu_tanh_argument(x: f32) -> f32 {
    const BETA: f32 = 0.797_884_6; // sqrt(2 / pi)
    const KAPPA: f32 = 0.044715;
    BETA * (x + KAPPA * x * x * x)
}

/// `x Phi(x)` through erfc alone: `1 + erf(u)` is `2 - erfc(u)` for u >= 0
/// and `erfc(-u)` below, so one branch serves every x. No small-argument
/// series for erf is needed (an erf accurate relative to itself near 0
/// would need one): GELU multiplies by x, so erfc's fractional error stays
/// a relative error of the same size in the result.
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    gelu_erf_from_erfc(x, erfc_nonnegative(gelu_erf_argument(x)))
}

#[inline(always)]
fn gelu_erf_argument(x: f32) -> f32 {
    x.abs() * std::f32::consts::FRAC_1_SQRT_2
}

#[inline(always)]
fn gelu_erf_from_erfc(x: f32, erfc: f32) -> f32 {
    let one_plus_erf = if x >= 0.0 { 2.0 - erfc } else { erfc };
    0.5 * x * one_plus_erf
}

#[inline(always)]
fn relu(x: f32) -> f32 {
    if x > 0.0 { x } else { 0.0 }
}

/// Runs `$body!(f, f_block)` with `f` the scalar function of `$act` and
/// `f_block` its block form: one loop per activation, so that no
/// per-element (or per-block) branch stops the vectoriser.
macro_rules! per_activation {
    ($act:expr, $body:ident) => {
        match $act {
            Activation::Silu => $body!(silu, silu_block),
            Activation::GeluTanh => $body!(gelu_tanh, gelu_tanh_block),
            Activation::GeluErf => $body!(gelu_erf, gelu_erf_block),
            Activation::Relu => $body!(relu, relu_block),
        }
    };
}

// The block forms of the activations: the exponentials of [`exp_block`],
// and otherwise the operations of the scalar functions above, so their
// results bit for bit.

#[inline(always)]
fn silu_block(v: &mut [f32; BLOCK]) {
    let x = *v;
    for i in 0..BLOCK {
        v[i] = -x[i];
    }
    exp_block(v);
    for i in 0..BLOCK {
        v[i] = silu_from_exp(x[i], v[i]);
    }
}

#[inline(always)]
fn gelu_tanh_block(v: &mut [f32; BLOCK]) {
    let x = *v;
    for i in 0..BLOCK {
        v[i] = 2.0 * gelu_tanh_argument(x[i]);
    }
    exp_block(v);
    for i in 0..BLOCK {
        v[i] = gelu_tanh_from_tanh(x[i], tanh_from_exp(v[i]));
    }
}

#[inline(always)]
fn gelu_erf_block(v: &mut [f32; BLOCK]) {
    let x = *v;
    let mut z = [0f32; BLOCK];
    let mut t = [0f32; BLOCK];
    for i in 0..BLOCK {
        z[i] = gelu_erf_argument(x[i]);
        t[i] = erfc_t(z[i]);
    }
    let fit = horner_block(&t, &ERFC_FIT);
    for i in 0..BLOCK {
        v[i] = erfc_exponent(z[i], fit[i]);
    }
    exp_block(v);
    for i in 0..BLOCK {
        v[i] = gelu_erf_from_erfc(x[i], t[i] * v[i]);
    }
}

#[inline(always)]
fn relu_block(v: &mut [f32; BLOCK]) {
    for x in v.iter_mut() {
        *x = relu(*x);
    }
}

#[inline(always)]
fn activate_body(act: Activation, xs: &mut [f32]) {
    macro_rules! run {
        ($f:ident, $f_block:ident) => {{
            let mut blocks = xs.chunks_exact_mut(BLOCK);
            for block in &mut blocks {
                $f_block(block.try_into().expect("a whole block"));
            }
            for x in blocks.into_remainder() {
                *x = $f(*x);
            }
        }};
    }
    per_activation!(act, run)
}

#[inline(always)]
fn gate_body(act: Activation, g: &[f32], u: &[f32], o: &mut [f32]) {
    let whole = g.len().min(u.len()).min(o.len()) / BLOCK * BLOCK;
    macro_rules! run {
        ($f:ident, $f_block:ident) => {{
            for ((g, u), o) in g[..whole]
                .chunks_exact(BLOCK)
                .zip(u[..whole].chunks_exact(BLOCK))
                .zip(o[..whole].chunks_exact_mut(BLOCK))
            {
                let mut a: [f32; BLOCK] = g.try_into().expect("a whole block");
                $f_block(&mut a);
                for i in 0..BLOCK {
                    o[i] = a[i] * u[i];
                }
            }
            for ((o, g), u) in o[whole..].iter_mut().zip(&g[whole..]).zip(&u[whole..]) {
                *o = $f(*g) * u;
            }
        }};
    }
    per_activation!(act, run)
}

#[inline(always)]
fn max_of(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = if x > *a { x } else { *a };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &x in acc.iter().chain(chunks.remainder()) {
        m = if x > m { x } else { m };
    }
    m
}

#[inline(always)]
fn sum_of(v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// softmax(scale * xs) in place (`scale` > 0), the exponentials by blocks
/// ([`exp_block`]).
#[inline(always)]
fn softmax_body(xs: &mut [f32], scale: f32) {
    let max = max_of(xs);
    let mut chunks = xs.chunks_exact_mut(BLOCK);
    for c in &mut chunks {
        let block: &mut [f32; BLOCK] = c.try_into().expect("a whole block");
        for x in block.iter_mut() {
            *x = (*x - max) * scale;
        }
        exp_block(block);
    }
    for x in chunks.into_remainder() {
        *x = exp((*x - max) * scale);
    }
    let inv = 1.0 / sum_of(xs);
    for x in xs.iter_mut() {
        *x *= inv;
    }
}

/// cap * tanh(scale * x / cap) in place: Gemma's attention soft-cap.
#[inline(always)]
fn softcap_body(xs: &mut [f32], scale: f32, cap: f32) {
    for x in xs.iter_mut() {
        *x = tanh(*x * scale / cap) * cap;
    }
}

/// Compiles `$body` once per instruction set and dispatches at run time.
macro_rules! multiversion {
    ($(#[$doc:meta])* $name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features avx512 was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above, for avx2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

multiversion!(
    /// `act(x)` for every element of `xs`, in place.
    activate,
    activate_body,
    (act: Activation, xs: &mut [f32])
);
multiversion!(
    /// `o = act(g) * u`, element-wise.
    gate,
    gate_body,
    (act: Activation, g: &[f32], u: &[f32], o: &mut [f32])
);
multiversion!(softmax, softmax_body, (xs: &mut [f32], scale: f32));
multiversion!(softcap, softcap_body, (xs: &mut [f32], scale: f32, cap: f32));

/// The probabilities of one attention row in place: the raw scores
/// `row[lo..hi]` are scaled (and soft-capped, when `softcap` is set) and
/// normalised; everything outside `lo..hi` becomes exactly zero, as the
/// additive mask of the reference makes it.
pub(crate) fn softmax_row(row: &mut [f32], lo: usize, hi: usize, scale: f32, softcap: Option<f32>) {
    let hi = hi.min(row.len());
    let lo = lo.min(hi);
    row[..lo].fill(0.0);
    row[hi..].fill(0.0);
    let live = &mut row[lo..hi];
    if live.is_empty() {
        return;
    }
    match softcap {
        None => softmax(live, scale),
        Some(cap) => {
            self::softcap(live, scale, cap);
            softmax(live, 1.0);
        }
    }
}

/// `act(x)` in place over a whole activation buffer, in parallel.
pub(crate) fn activate_in_place(act: Activation, data: &mut [f32]) {
    data.par_chunks_mut(PAR_CHUNK)
        .for_each(|chunk| activate(act, chunk));
}

/// The values an in-place op works on, as one mutable `f32` slice; `op`
/// names the op in the errors.
pub(crate) fn contiguous_f32_mut<'a>(
    storage: &'a mut candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'a mut [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} needs a contiguous input")
    };
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op} is implemented for f32")
    };
    Ok(&mut data[start..end])
}

/// candle in-place op wrapper for [`activate_in_place`].
pub(crate) struct ActivateInPlace(pub Activation);

impl candle_core::InplaceOp1 for ActivateInPlace {
    fn name(&self) -> &'static str {
        "lmgeo-activation"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        activate_in_place(
            self.0,
            contiguous_f32_mut(storage, layout, "the activation kernel")?,
        );
        Ok(())
    }
}

/// Runs `f` on the tensor's values as one row-major `f32` slice. A CPU
/// tensor's storage is borrowed, not copied (the activations and attention
/// tensors are large); a tensor on another device is copied to the host first.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = t.to_device(&Device::Cpu)?.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("tensor is not contiguous after contiguous()")
    };
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(&cpu.as_slice::<f32>()?[start..end])),
        _ => candle_core::bail!("expected a CPU tensor"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 0.0 {
            let ours = f64::from(exp(x));
            let exact = f64::from(x).exp();
            worst = worst.max(((ours - exact) / exact).abs());
            x += 0.000_73;
        }
        assert!(worst < 2.4e-7, "relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-1000.0), exp(-87.3));
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn exp_and_tanh_are_accurate_over_the_whole_range() {
        let mut worst_exp = 0f64;
        let mut worst_tanh = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let e = (x as f64).exp();
            worst_exp = worst_exp.max(((exp(x) as f64) - e).abs() / e);
            let t = (x as f64 / 8.0).tanh();
            worst_tanh = worst_tanh.max(((tanh(x / 8.0) as f64) - t).abs());
            x += 0.0137;
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert!(worst_tanh < 3e-7, "tanh absolute error {worst_tanh}");
    }

    #[test]
    fn erfc_and_gelu_are_accurate() {
        // std has no f64 erf: compare with its Taylor series (summed in f64, 60
        // terms, converged on |x| <= 2.5) and with a known value beyond.
        let taylor = |x: f64| {
            let mut term = x;
            let mut sum = x;
            for n in 1..60 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        };
        let mut z = 0f32;
        let mut worst = 0f64;
        while z <= 2.5 {
            let want = 1.0 - taylor(f64::from(z));
            worst = worst.max((f64::from(erfc_nonnegative(z)) - want).abs() / want);
            z += 0.001;
        }
        assert!(worst < 1e-6, "erfc off by {worst:e} (relative)");
        // erfc(4) = 1.541725790028002e-8.
        assert!((f64::from(erfc_nonnegative(4.0)) / 1.541_725_790_028_002e-8 - 1.0).abs() < 1e-6);
        // GELU against x (1 + erf(x / sqrt 2)) / 2 with the f64 series, where
        // it converges (|x| <= 3.5), relative to max(|x|, 1e-3).
        let mut x = -3.5f32;
        let mut worst = 0f64;
        while x <= 3.5 {
            let xd = f64::from(x);
            let want = 0.5 * xd * (1.0 + taylor(xd / 2f64.sqrt()));
            let mut got = [x];
            activate_in_place(Activation::GeluErf, &mut got);
            worst = worst.max((f64::from(got[0]) - want).abs() / xd.abs().max(1e-3));
            x += 0.0007;
        }
        assert!(worst < 5e-7, "GELU off by {worst:e} (relative)");
        let mut v = vec![-3.0f32, -1.0, 0.0, 0.5, 2.0, 10.0];
        activate_in_place(Activation::GeluErf, &mut v);
        let expected = [
            -0.004_049_71,
            -0.158_655_25,
            0.0,
            0.345_731_37,
            1.954_499_7,
            10.0,
        ];
        for (a, b) in v.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn block_forms_give_the_scalar_results_bit_for_bit() {
        // Every activation in place and gated, and softmax rows of lengths
        // around the block size, against the scalar functions (tested above
        // against f64 references), over the range that matters and its edges.
        let xs: Vec<f32> = (0..200_003)
            .map(|i| (i as f32 - 100_000.0) * 1e-3)
            .chain([0.0, -0.0, 87.5, -87.5, 90.0, -90.0, 1e30, -1e30])
            .collect();
        let u: Vec<f32> = xs.iter().map(|x| (x * 0.37).cos()).collect();
        for (act, f) in [
            (Activation::Silu, silu as fn(f32) -> f32),
            (Activation::GeluTanh, gelu_tanh),
            (Activation::GeluErf, gelu_erf),
            (Activation::Relu, relu),
        ] {
            let mut v = xs.clone();
            activate_in_place(act, &mut v);
            let mut o = vec![0f32; xs.len()];
            gate(act, &xs, &u, &mut o);
            for i in 0..xs.len() {
                let want = f(xs[i]);
                assert_eq!(v[i].to_bits(), want.to_bits(), "{act:?}({})", xs[i]);
                assert_eq!(
                    o[i].to_bits(),
                    (want * u[i]).to_bits(),
                    "{act:?}({}) gated",
                    xs[i]
                );
            }
        }
        for len in [1, 31, 32, 33, 95, 512, 1000] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
                .collect();
            let mut ours = row.clone();
            softmax_row(&mut ours, 0, len, 0.3, None);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut want: Vec<f32> = row.iter().map(|&x| exp((x - max) * 0.3)).collect();
            let inv = 1.0 / sum_of(&want);
            for x in &mut want {
                *x *= inv;
            }
            assert!(
                ours.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "softmax of {len}"
            );
        }
    }

    #[test]
    fn gates_match_their_definitions() {
        let g: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.3).collect();
        let u: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).cos()).collect();
        for act in [
            Activation::Silu,
            Activation::GeluTanh,
            Activation::GeluErf,
            Activation::Relu,
        ] {
            let mut o = vec![0f32; g.len()];
            gate(act, &g, &u, &mut o);
            for i in 0..g.len() {
                let x = f64::from(g[i]);
                let a = match act {
                    Activation::Silu => x / (1.0 + (-x).exp()),
                    Activation::GeluTanh => {
                        let beta = (2.0 / std::f64::consts::PI).sqrt();
                        0.5 * x * (1.0 + (beta * (x + 0.044715 * x * x * x)).tanh())
                    }
                    Activation::GeluErf => f64::from(gelu_erf(g[i])),
                    Activation::Relu => x.max(0.0),
                };
                let want = a * f64::from(u[i]);
                assert!(
                    (f64::from(o[i]) - want).abs() < 1e-6,
                    "{act:?} at {x}: {} vs {want}",
                    o[i]
                );
            }
        }
    }

    #[test]
    fn softmax_rows_match_the_definition() {
        let n = 37;
        let mut data: Vec<f32> = (0..4 * n)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0)
            .collect();
        let original = data.clone();
        let rows = [(0, n, None), (0, 5, None), (0, 1, None), (3, 30, Some(2.0))];
        for (i, &(lo, hi, cap)) in rows.iter().enumerate() {
            softmax_row(&mut data[i * n..(i + 1) * n], lo, hi, 0.5, cap);
        }
        for (i, &(lo, hi, cap)) in rows.iter().enumerate() {
            let scores: Vec<f64> = original[i * n + lo..i * n + hi]
                .iter()
                .map(|&x| {
                    let s = f64::from(x) * 0.5;
                    match cap {
                        None => s,
                        Some(c) => (s / f64::from(c)).tanh() * f64::from(c),
                    }
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|&s| (s - max).exp()).collect();
            let s: f64 = e.iter().sum();
            for k in 0..n {
                let ours = f64::from(data[i * n + k]);
                let exact = if (lo..hi).contains(&k) {
                    e[k - lo] / s
                } else {
                    0.0
                };
                assert!(
                    (ours - exact).abs() < 1e-6,
                    "row {i} key {k}: {ours} vs {exact}"
                );
            }
        }
    }
}
