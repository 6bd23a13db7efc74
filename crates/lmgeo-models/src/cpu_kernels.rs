//! The elementwise work of a forward pass that candle leaves to scalar libm
//! calls: the exponentials of the attention softmax and the erf of the exact
//! GELU. Written as plain loops over lanes so that the compiler vectorises
//! them, and compiled a second time for AVX2 + FMA, picked at run time (the
//! crate itself targets baseline x86-64).
//!
//! Accuracy: `exp` is within 2 ulp of the true value on the range softmax
//! uses, and `erf` within 2e-7 absolute, so GELU is within 1e-7 * |x|: a few
//! f32 ulps, far below the 1e-4 we keep to transformers.

use rayon::prelude::*;

const LANES: usize = 16;

/// exp(x) for x <= 88: x = n ln2 + r with |r| <= ln2 / 2, a degree-7 Taylor
/// polynomial for exp(r) (remainder below 7e-9 relative), and 2^n assembled in
/// the exponent bits. Inputs below -87.3 give 2^-126 * exp(r) instead of a
/// denormal or zero, which is immaterial for probabilities.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| < 2^8.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a
    // rounding instruction (absent from baseline SSE2).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // `shifted` lies in [2^23, 2^24), where the ulp is 1, so its low mantissa
    // bits hold n: integer arithmetic only, which vectorises (a float-to-int
    // conversion would not, with Rust's saturating `as`).
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    p * two_n
}

/// erf(x) within 2e-7 absolute: the Maclaurin series (to x^23) for |x| < 1,
/// and for |x| >= 1 one minus a Chebyshev-fitted erfc (Numerical Recipes'
/// `erfcc`, fractional error below 1.2e-7, erfc <= 0.16 there). Both branches
/// are computed and one selected, which keeps the loop vectorisable.
#[inline(always)]
fn erf(x: f32) -> f32 {
    // (-1)^n / (n! (2n + 1)), n = 0..11
    const C: [f32; 12] = [
        1.0,
        -1.0 / 3.0,
        1.0 / 10.0,
        -1.0 / 42.0,
        1.0 / 216.0,
        -1.0 / 1320.0,
        1.0 / 9360.0,
        -1.0 / 75600.0,
        1.0 / 685_440.0,
        -1.0 / 6_894_720.0,
        1.0 / 76_204_800.0,
        -1.0 / 918_086_400.0,
    ];
    const TWO_OVER_SQRT_PI: f32 = std::f32::consts::FRAC_2_SQRT_PI;
    let z = x.abs();
    let x2 = x * x;
    let mut series = C[11];
    for &c in C[..11].iter().rev() {
        series = series * x2 + c;
    }
    let small = TWO_OVER_SQRT_PI * x * series;

    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * exp(-z * z + poly);
    let large = (1.0 - erfc).copysign(x);
    if z < 1.0 { small } else { large }
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

/// softmax(scale * row) in place.
#[inline(always)]
fn softmax_body(row: &mut [f32], scale: f32) {
    let max = max_of(row);
    for x in row.iter_mut() {
        *x = exp((*x - max) * scale);
    }
    let inv = 1.0 / sum_of(row);
    for x in row.iter_mut() {
        *x *= inv;
    }
}

#[inline(always)]
fn gelu_erf_slice(v: &mut [f32]) {
    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for x in v.iter_mut() {
        *x = 0.5 * *x * (1.0 + erf(*x * FRAC_1_SQRT_2));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_row_avx2(row: &mut [f32], scale: f32) {
    softmax_body(row, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gelu_erf_avx2(v: &mut [f32]) {
    gelu_erf_slice(v)
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// softmax(scale * row[..visible]) in place, with row[visible..] set to zero.
pub(crate) fn softmax_row(row: &mut [f32], visible: usize, scale: f32) {
    let (live, hidden) = row.split_at_mut(visible.min(row.len()));
    hidden.fill(0.0);
    if live.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just now).
        unsafe { softmax_row_avx2(live, scale) };
        return;
    }
    softmax_body(live, scale);
}

/// Exact (erf) GELU in place.
pub(crate) fn gelu_erf_inplace(data: &mut [f32]) {
    let avx2 = has_avx2();
    data.par_chunks_mut(1 << 14).for_each(|chunk| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            unsafe { gelu_erf_avx2(chunk) };
            return;
        }
        let _ = avx2;
        gelu_erf_slice(chunk);
    });
}

/// candle in-place op wrapper for [`gelu_erf_inplace`].
pub(crate) struct GeluErfInplace;

impl candle_core::InplaceOp1 for GeluErfInplace {
    fn name(&self) -> &'static str {
        "lmgeo-gelu-erf"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("gelu needs a contiguous input")
        };
        let candle_core::CpuStorage::F32(data) = storage else {
            candle_core::bail!("gelu is implemented here for f32")
        };
        gelu_erf_inplace(&mut data[start..end]);
        Ok(())
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
    }

    #[test]
    fn erf_and_gelu_are_accurate() {
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
        let mut x = -2.5f32;
        let mut worst = 0f64;
        while x <= 2.5 {
            worst = worst.max((f64::from(erf(x)) - taylor(f64::from(x))).abs());
            x += 0.001;
        }
        println!("erf: max abs error {worst:e}");
        assert!(worst < 2e-7, "erf off by {worst:e}");
        assert!((erf(4.0) - 0.999_999_98).abs() < 2e-7);
        assert_eq!(erf(0.0), 0.0);
        let mut v = vec![-3.0f32, -1.0, 0.0, 0.5, 2.0, 10.0];
        gelu_erf_inplace(&mut v);
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
    fn softmax_rows_match_the_definition() {
        let n = 37;
        let mut data: Vec<f32> = (0..3 * n)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0)
            .collect();
        let original = data.clone();
        for (i, visible) in [n, 5, 1].into_iter().enumerate() {
            softmax_row(&mut data[i * n..(i + 1) * n], visible, 0.5);
        }
        for (i, visible) in [n, 5, 1].into_iter().enumerate() {
            let row = &original[i * n..i * n + visible];
            let max = row
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, |a, b| a.max(f64::from(b)));
            let e: Vec<f64> = row
                .iter()
                .map(|&x| ((f64::from(x) - max) * 0.5).exp())
                .collect();
            let s: f64 = e.iter().sum();
            for k in 0..n {
                let ours = f64::from(data[i * n + k]);
                let exact = if k < visible { e[k] / s } else { 0.0 };
                assert!(
                    (ours - exact).abs() < 1e-7,
                    "row {i} key {k}: {ours} vs {exact}"
                );
            }
        }
    }
}
