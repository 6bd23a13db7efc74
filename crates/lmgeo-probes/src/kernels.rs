//! Small dense kernels shared by the modules: Gram products through faer and
//! the vector loops of the inner iterations.

use faer::linalg::matmul::triangular::{BlockStructure, matmul as triangular_matmul};
use faer::{Accum, Mat, MatRef, Par};

/// The parallelism faer is configured with (both cores by default; callers
/// may change it with `faer::set_global_parallelism`).
pub(crate) fn par() -> Par {
    faer::get_global_parallelism()
}

/// `scale * A A^T` for the rows of `a`, as a full symmetric matrix. Only the
/// lower triangle is multiplied (half the flops); the upper is mirrored so
/// that callers may read either side.
pub(crate) fn row_gram(a: MatRef<'_, f64>, scale: f64) -> Mat<f64> {
    let n = a.nrows();
    let mut g = Mat::<f64>::zeros(n, n);
    triangular_matmul(
        g.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        a,
        BlockStructure::Rectangular,
        a.transpose(),
        BlockStructure::Rectangular,
        scale,
        par(),
    );
    mirror_lower(&mut g);
    g
}

/// `scale * A^T A` for the columns of `a`, as a full symmetric matrix.
pub(crate) fn col_gram(a: MatRef<'_, f64>, scale: f64) -> Mat<f64> {
    row_gram(a.transpose(), scale)
}

/// Copies the strict lower triangle onto the upper one.
pub(crate) fn mirror_lower(g: &mut Mat<f64>) {
    let n = g.nrows();
    for j in 0..n {
        for i in (j + 1)..n {
            g[(j, i)] = g[(i, j)];
        }
    }
}

/// Runs `f` compiled for the best instruction set the CPU offers (AVX2 and
/// FMA where available): the plain loops it calls are inlined into it and
/// vectorised for those registers. The arithmetic is unchanged (no
/// contraction into fused multiply-adds), so results do not depend on the
/// machine.
#[inline]
pub(crate) fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// Dot product with eight independent partial sums, so that the compiler can
/// keep several SIMD lanes busy (a single running sum is a serial chain).
#[inline(always)]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f64; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y += alpha * x`.
#[inline(always)]
pub(crate) fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Euclidean norm that neither overflows nor underflows for finite input:
/// the entries are scaled by the largest magnitude first.
pub(crate) fn robust_norm(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let scale = v.clone().fold(0.0f64, |m, x| m.max(x.abs()));
    if scale == 0.0 {
        return 0.0;
    }
    let sum: f64 = v.map(|x| (x / scale) * (x / scale)).sum();
    scale * sum.sqrt()
}
