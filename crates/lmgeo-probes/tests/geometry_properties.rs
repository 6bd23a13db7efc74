//! Property tests of the representation-geometry probes (similarity.rs,
//! intrinsic.rs): invariances and identities on random matrices, and the
//! errors every bad input must give (never a panic, never a NaN).

use faer::Mat;
use lmgeo_probes::intrinsic;
use lmgeo_probes::power_law::BootstrapOptions;
use lmgeo_probes::similarity::{self, HsicEstimator};
use lmgeo_probes::{Preprocess, ProbeError, entropy};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn gaussian(n: usize, d: usize, rng: &mut ChaCha8Rng) -> Mat<f64> {
    Mat::from_fn(n, d, |_, _| StandardNormal.sample(rng))
}

fn orthogonal(d: usize, rng: &mut ChaCha8Rng) -> Mat<f64> {
    gaussian(d, d, rng).qr().compute_Q()
}

/// `c X Q + 1 t^T`: a rotation, an isotropic scaling and a shift of every row.
fn similar(x: &Mat<f64>, c: f64, rng: &mut ChaCha8Rng) -> Mat<f64> {
    let q = orthogonal(x.ncols(), rng);
    let t: Vec<f64> = (0..x.ncols()).map(|_| StandardNormal.sample(rng)).collect();
    let r = x * &q;
    Mat::from_fn(x.nrows(), x.ncols(), |i, j| c * r[(i, j)] + t[j])
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
}

const ESTIMATORS: [HsicEstimator; 2] = [HsicEstimator::Biased, HsicEstimator::Debiased];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn cka_of_a_matrix_with_itself_is_one(seed: u64, n in 4usize..30, d in 1usize..30) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = gaussian(n, d, &mut rng);
        for e in ESTIMATORS {
            let v = similarity::linear_cka(x.as_ref(), x.as_ref(), e).unwrap();
            prop_assert!(close(v, 1.0, 1e-12), "{e:?}: {v}");
            let r = similarity::rbf_cka(x.as_ref(), x.as_ref(), 1.0, e).unwrap();
            prop_assert!(close(r, 1.0, 1e-12), "RBF {e:?}: {r}");
        }
    }

    #[test]
    fn cka_ignores_rotation_scaling_and_shift_of_y(seed: u64, n in 4usize..30, d1 in 1usize..25, d2 in 1usize..25,
                                                  c in 0.01f64..100.0) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = gaussian(n, d1, &mut rng);
        let y = gaussian(n, d2, &mut rng);
        let y2 = similar(&y, c, &mut rng);
        for e in ESTIMATORS {
            let a = similarity::linear_cka(x.as_ref(), y.as_ref(), e).unwrap();
            let b = similarity::linear_cka(x.as_ref(), y2.as_ref(), e).unwrap();
            prop_assert!(close(a, b, 1e-9), "{e:?}: {a} vs {b}");
            prop_assert!((-1.0..=1.0).contains(&a));
            // Distances scale with c, and so does the median bandwidth.
            let a = similarity::rbf_cka(x.as_ref(), y.as_ref(), 0.7, e).unwrap();
            let b = similarity::rbf_cka(x.as_ref(), y2.as_ref(), 0.7, e).unwrap();
            prop_assert!(close(a, b, 1e-9), "RBF {e:?}: {a} vs {b}");
        }
    }

    #[test]
    fn linear_cka_equals_kernel_cka_of_the_linear_gram_matrices(seed: u64, n in 4usize..40, d1 in 1usize..50,
                                                               d2 in 1usize..50) {
        // Both shapes occur (n above and below d1 + d2), so both internal
        // routes (Gram and feature space) meet the kernel route.
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = gaussian(n, d1, &mut rng);
        let y = gaussian(n, d2, &mut rng);
        let k = &x * x.transpose();
        let l = &y * y.transpose();
        for e in ESTIMATORS {
            let a = similarity::linear_cka(x.as_ref(), y.as_ref(), e).unwrap();
            let b = similarity::kernel_cka(k.as_ref(), l.as_ref(), e).unwrap();
            prop_assert!((a - b).abs() <= 1e-10, "{e:?}: {a} vs {b}");
        }
    }

    #[test]
    fn mutual_knn_of_similar_representations_is_one(seed: u64, n in 3usize..40, d in 1usize..12, k_frac in 0.0f64..1.0,
                                                    c in 0.1f64..10.0) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = gaussian(n, d, &mut rng);
        let k = 1 + ((n - 2) as f64 * k_frac) as usize;
        prop_assert_eq!(similarity::mutual_knn(x.as_ref(), x.as_ref(), k).unwrap(), 1.0);
        // Cosine neighbours survive a rotation and a positive scale (not a shift).
        let q = orthogonal(d, &mut rng);
        let y = Mat::from_fn(n, d, |i, j| c * (&x * &q)[(i, j)]);
        let v = similarity::mutual_knn(x.as_ref(), y.as_ref(), k).unwrap();
        prop_assert!((0.0..=1.0).contains(&v));
        // Gaussian data has no near-ties at 1e-12, so the lists are identical.
        prop_assert_eq!(v, 1.0);
    }

    #[test]
    fn procrustes_distance_vanishes_for_a_rotated_copy(seed: u64, n in 2usize..30, d in 1usize..30,
                                                      c in 0.01f64..100.0) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = gaussian(n, d, &mut rng);
        let y = similar(&x, c, &mut rng);
        let v = similarity::procrustes_distance(x.as_ref(), y.as_ref()).unwrap();
        prop_assert!(v.abs() <= 1e-12, "{v}");
        let z = gaussian(n, d + 1, &mut rng);
        let w = similarity::procrustes_distance(x.as_ref(), z.as_ref()).unwrap();
        prop_assert!((0.0..=2.0).contains(&w));
    }

    #[test]
    fn svcca_and_linearity_are_one_for_a_linear_copy(seed: u64, d in 1usize..10, extra in 5usize..30) {
        let n = d + extra;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = gaussian(n, d, &mut rng);
        let y = similar(&x, 3.0, &mut rng);
        let s = similarity::svcca(x.as_ref(), y.as_ref(), 0.99).unwrap();
        prop_assert!(close(s.mean, 1.0, 1e-10), "{s:?}");
        let l = intrinsic::linearity(x.as_ref(), y.as_ref()).unwrap();
        prop_assert!(close(l, 1.0, 1e-10), "{l}");
        let z = gaussian(n, d, &mut rng);
        let l = intrinsic::linearity(x.as_ref(), z.as_ref()).unwrap();
        prop_assert!((0.0..=1.0).contains(&l));
    }

    #[test]
    fn permutation_p_value_lies_in_the_unit_interval_and_is_reproducible(seed: u64, n in 4usize..20,
                                                                        perms in 1usize..40) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = gaussian(n, 3, &mut rng);
        let y = gaussian(n, 2, &mut rng);
        let score = |a: faer::MatRef<'_, f64>, b: faer::MatRef<'_, f64>| {
            similarity::linear_cka(a, b, HsicEstimator::Biased)
        };
        let t = similarity::permutation_test(x.as_ref(), y.as_ref(), score, perms, seed).unwrap();
        prop_assert!(t.p_value > 0.0 && t.p_value <= 1.0);
        prop_assert!(t.p_value >= 1.0 / (1 + perms) as f64);
        prop_assert_eq!(t.null.len(), perms);
        let again = similarity::permutation_test(x.as_ref(), y.as_ref(), score, perms, seed).unwrap();
        prop_assert_eq!(t, again);
    }

    #[test]
    fn two_nn_ignores_rotation_scaling_and_shift(seed: u64, n in 5usize..60, d in 2usize..8, c in 0.1f64..10.0) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = gaussian(n, d, &mut rng);
        let y = similar(&x, c, &mut rng);
        let a = intrinsic::two_nn(x.as_ref(), 0.1);
        let b = intrinsic::two_nn(y.as_ref(), 0.1);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                prop_assert!(close(a.dimension, b.dimension, 1e-8), "{} vs {}", a.dimension, b.dimension);
                prop_assert!(close(a.mle, b.mle, 1e-8));
                prop_assert!(a.dimension > 0.0 && a.mle > 0.0);
            }
            (Err(a), Err(b)) => prop_assert_eq!(std::mem::discriminant(&a), std::mem::discriminant(&b)),
            (a, b) => prop_assert!(false, "{a:?} vs {b:?}"),
        }
    }

    #[test]
    fn renyi_entropy_at_alpha_one_is_the_matrix_entropy(seed: u64, n in 2usize..20, d in 2usize..20,
                                                      p in prop_oneof![Just(Preprocess::CenterL2), Just(Preprocess::L2), Just(Preprocess::None)]) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let z = gaussian(n, d, &mut rng);
        let h = entropy::entropy_report(z.as_ref(), p, 0.1).unwrap().matrix_entropy;
        let r1 = intrinsic::renyi_entropy(z.as_ref(), 1.0, p).unwrap();
        prop_assert_eq!(r1, h);
        // Continuous through alpha = 1 and non-increasing in alpha.
        let below = intrinsic::renyi_entropy(z.as_ref(), 1.0 - 1e-7, p).unwrap();
        let above = intrinsic::renyi_entropy(z.as_ref(), 1.0 + 1e-7, p).unwrap();
        prop_assert!((below - h).abs() <= 1e-6 * h.max(1.0) && (above - h).abs() <= 1e-6 * h.max(1.0));
        let r2 = intrinsic::renyi_entropy(z.as_ref(), 2.0, p).unwrap();
        let r05 = intrinsic::renyi_entropy(z.as_ref(), 0.5, p).unwrap();
        prop_assert!(r05 + 1e-12 >= h && h + 1e-12 >= r2, "{r05} {h} {r2}");
    }

    #[test]
    fn rankme_lies_between_one_and_the_rank(seed: u64, n in 1usize..20, d in 1usize..20) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let z = gaussian(n, d, &mut rng);
        let r = intrinsic::rankme(z.as_ref(), 0.0).unwrap();
        prop_assert!(r >= 1.0 - 1e-12 && r <= n.min(d) as f64 + 1e-9, "{r}");
        // Always at least the covariance-eigenvalue effective rank (squares concentrate).
        if n >= 1 && d >= 2 {
            let e = entropy::entropy_report(z.as_ref(), Preprocess::None, 0.1).unwrap().effective_rank;
            prop_assert!(r + 1e-9 >= e, "{r} vs {e}");
        }
    }

    #[test]
    fn curvature_ignores_rotation_scaling_and_shift(seed: u64, n in 3usize..20, d in 1usize..10, c in 0.1f64..10.0) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = gaussian(n, d, &mut rng);
        let y = similar(&x, c, &mut rng);
        let a = intrinsic::curvature(x.as_ref()).unwrap();
        let b = intrinsic::curvature(y.as_ref()).unwrap();
        prop_assert!(close(a.mean, b.mean, 1e-9));
        prop_assert!(a.angles.iter().flatten().all(|t| (0.0..=std::f64::consts::PI).contains(t)));
    }
}

#[test]
fn a_straight_trajectory_has_zero_curvature_and_a_reversal_pi() {
    let line = Mat::from_fn(6, 3, |t, j| 1.0 + (t as f64) * [0.5, -2.0, 3.0][j]);
    let c = intrinsic::curvature(line.as_ref()).unwrap();
    assert!(c.mean.abs() < 1e-7, "{}", c.mean);
    assert_eq!(c.skipped, 0);
    let back = faer::mat![[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]];
    let c = intrinsic::curvature(back.as_ref()).unwrap();
    assert!((c.mean - std::f64::consts::PI).abs() < 1e-15);
    let right = faer::mat![[0.0, 0.0], [1.0, 0.0], [1.0, 5.0]];
    let c = intrinsic::curvature(right.as_ref()).unwrap();
    assert!((c.mean - std::f64::consts::FRAC_PI_2).abs() < 1e-15);
    // A repeated state: both angles next to the zero step are undefined.
    let stall = faer::mat![[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [2.0, 1.0]];
    let c = intrinsic::curvature(stall.as_ref()).unwrap();
    assert_eq!(c.angles[0], None);
    assert_eq!(c.angles[1], None);
    assert!((c.angles[2].unwrap() - std::f64::consts::FRAC_PI_2).abs() < 1e-15);
    assert_eq!(c.skipped, 2);
}

#[test]
fn bootstrap_intervals_are_reproducible_and_bracket_a_stable_score() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = gaussian(30, 4, &mut rng);
    let noise = gaussian(30, 4, &mut rng);
    let y = Mat::from_fn(30, 4, |i, j| x[(i, j)] + 0.3 * noise[(i, j)]);
    let options = BootstrapOptions {
        resamples: 200,
        level: 0.9,
        seed: 11,
    };
    let score = |a: faer::MatRef<'_, f64>, b: faer::MatRef<'_, f64>| {
        similarity::linear_cka(a, b, HsicEstimator::Biased)
    };
    let ci = similarity::bootstrap_pair_ci(x.as_ref(), y.as_ref(), score, &options).unwrap();
    assert!(
        ci.lower <= ci.upper && ci.lower > 0.5 && ci.upper <= 1.0,
        "{ci:?}"
    );
    assert!(
        ci.lower <= ci.estimate && ci.estimate <= ci.upper + 0.05,
        "{ci:?}"
    );
    assert_eq!(
        ci,
        similarity::bootstrap_pair_ci(x.as_ref(), y.as_ref(), score, &options).unwrap()
    );
    let other = BootstrapOptions {
        seed: 12,
        ..options
    };
    assert_ne!(
        ci.lower,
        similarity::bootstrap_pair_ci(x.as_ref(), y.as_ref(), score, &other)
            .unwrap()
            .lower
    );
    // One set: RankMe of the resampled rows; mutual kNN on resamples with
    // copies stays well defined (ties to the lower index).
    let single =
        similarity::bootstrap_ci(x.as_ref(), |a| intrinsic::rankme(a, 1e-7), &options).unwrap();
    assert!(single.lower <= single.upper && single.upper <= 4.0 + 1e-6);
    let knn = similarity::bootstrap_pair_ci(
        x.as_ref(),
        y.as_ref(),
        |a, b| similarity::mutual_knn(a, b, 5),
        &options,
    )
    .unwrap();
    assert!((0.0..=1.0).contains(&knn.lower) && knn.upper <= 1.0);
    let bad = BootstrapOptions {
        level: 1.0,
        ..options
    };
    assert!(similarity::bootstrap_ci(x.as_ref(), |a| intrinsic::rankme(a, 0.0), &bad).is_err());
}

#[test]
fn permutation_test_detects_a_real_pairing() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = gaussian(40, 6, &mut rng);
    let noise = gaussian(40, 6, &mut rng);
    let y = Mat::from_fn(40, 6, |i, j| x[(i, j)] + 0.2 * noise[(i, j)]);
    let t = similarity::permutation_test(
        x.as_ref(),
        y.as_ref(),
        |a, b| similarity::linear_cka(a, b, HsicEstimator::Biased),
        99,
        1,
    )
    .unwrap();
    assert_eq!(t.p_value, 0.01, "no permutation reaches the true pairing");
    assert!(t.null.iter().all(|&v| v < t.observed));
    // A closure's error and a NaN score stop the test.
    let failing = similarity::permutation_test(x.as_ref(), y.as_ref(), |_, _| Ok(f64::NAN), 3, 1);
    assert!(matches!(failing, Err(ProbeError::NonFinite { .. })));
    let zero = similarity::permutation_test(x.as_ref(), y.as_ref(), |_, _| Ok(0.0), 0, 1);
    assert!(matches!(
        zero,
        Err(ProbeError::InvalidParameter {
            name: "permutations",
            ..
        })
    ));
}

#[test]
fn ties_in_neighbour_lists_go_to_the_lower_index() {
    // Rows 1, 2 and 3 are copies: equally similar to row 0 and to each other.
    let x = faer::mat![[1.0, 0.1], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0],];
    let nn = similarity::cosine_neighbours(x.as_ref(), 2).unwrap();
    assert_eq!(&nn[0..2], &[1, 2]);
    // Row 2's copies (1 and 3) come first, the lower first.
    assert_eq!(&nn[4..6], &[1, 3]);
    assert_eq!(&nn[6..8], &[1, 2]);
    // The same ties on both sides: identical lists, mutual kNN 1.
    assert_eq!(
        similarity::mutual_knn(x.as_ref(), x.as_ref(), 3).unwrap(),
        1.0
    );
}

#[test]
fn two_nn_drops_duplicates_and_reports_them() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let base = gaussian(50, 3, &mut rng);
    // Rows 50..54 repeat rows 0..4: ten points have r1 = 0.
    let x = Mat::from_fn(55, 3, |i, j| base[(if i < 50 { i } else { i - 50 }, j)]);
    let r = intrinsic::two_nn(x.as_ref(), 0.1).unwrap();
    assert_eq!(r.duplicates_dropped, 10);
    assert_eq!(r.points, 45);
    assert_eq!(r.fitted, 40);
    // Nothing discarded: the linear fit stops one short of F = 1.
    let r = intrinsic::two_nn(x.as_ref(), 0.0).unwrap();
    assert_eq!(r.fitted, 44);
    assert!(r.dimension.is_finite() && r.mle.is_finite());
}

/// Every bad input is a `ProbeError`, never a panic or a NaN.
#[test]
fn bad_inputs_are_errors() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = gaussian(10, 3, &mut rng);
    let y9 = gaussian(9, 3, &mut rng);
    let mut nan = x.clone();
    nan[(4, 1)] = f64::NAN;
    let mut inf = x.clone();
    inf[(2, 0)] = f64::INFINITY;
    let empty = Mat::<f64>::zeros(0, 3);
    let b = BootstrapOptions::default();

    // Mismatched numbers of items.
    type Pairwise = fn(faer::MatRef<'_, f64>, faer::MatRef<'_, f64>) -> lmgeo_probes::Result<f64>;
    let pairwise: [(&str, Pairwise); 8] = [
        ("linear", |a, b| {
            similarity::linear_cka(a, b, HsicEstimator::Biased)
        }),
        ("linear debiased", |a, b| {
            similarity::linear_cka(a, b, HsicEstimator::Debiased)
        }),
        ("rbf", |a, b| {
            similarity::rbf_cka(a, b, 1.0, HsicEstimator::Biased)
        }),
        ("knn", |a, b| similarity::mutual_knn(a, b, 3)),
        ("svcca", |a, b| {
            similarity::svcca(a, b, 0.99).map(|s| s.mean)
        }),
        ("procrustes", similarity::procrustes_distance),
        ("linearity", intrinsic::linearity),
        ("kernel", |a, b| {
            similarity::kernel_cka(a, b, HsicEstimator::Biased)
        }),
    ];
    for (name, f) in pairwise {
        assert!(
            matches!(
                f(x.as_ref(), y9.as_ref()),
                Err(ProbeError::SizeMismatch { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                f(nan.as_ref(), x.as_ref()),
                Err(ProbeError::NonFinite { .. }) | Err(ProbeError::SizeMismatch { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                f(x.as_ref(), inf.as_ref()),
                Err(ProbeError::NonFinite { .. }) | Err(ProbeError::SizeMismatch { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                f(empty.as_ref(), empty.as_ref()),
                Err(ProbeError::Empty { .. })
            ),
            "{name}"
        );
    }
    assert!(matches!(
        similarity::permutation_test(x.as_ref(), y9.as_ref(), |_, _| Ok(0.0), 5, 0),
        Err(ProbeError::SizeMismatch { .. })
    ));
    assert!(matches!(
        similarity::bootstrap_pair_ci(x.as_ref(), y9.as_ref(), |_, _| Ok(0.0), &b),
        Err(ProbeError::SizeMismatch { .. })
    ));
    assert!(matches!(
        similarity::bootstrap_ci(nan.as_ref(), |_| Ok(0.0), &b),
        Err(ProbeError::NonFinite { .. })
    ));

    // Finite input that overflows f64 on the way is an error, not a NaN.
    let huge = Mat::from_fn(10, 3, |i, j| 1e200 * x[(i, j)]);
    for e in ESTIMATORS {
        let r = similarity::linear_cka(huge.as_ref(), x.as_ref(), e);
        assert!(matches!(r, Err(ProbeError::Numerical(_))), "{r:?}");
    }

    // Too few items.
    let x3 = gaussian(3, 2, &mut rng);
    let y3 = gaussian(3, 2, &mut rng);
    assert!(matches!(
        similarity::linear_cka(x3.as_ref(), y3.as_ref(), HsicEstimator::Debiased),
        Err(ProbeError::Degenerate(_))
    ));
    assert!(similarity::linear_cka(x3.as_ref(), y3.as_ref(), HsicEstimator::Biased).is_ok());
    let one = gaussian(1, 2, &mut rng);
    assert!(matches!(
        similarity::linear_cka(one.as_ref(), one.as_ref(), HsicEstimator::Biased),
        Err(ProbeError::Degenerate(_))
    ));

    // k out of range.
    for k in [0, 10, 11] {
        assert!(matches!(
            similarity::mutual_knn(x.as_ref(), x.as_ref(), k),
            Err(ProbeError::InvalidParameter { name: "k", .. })
        ));
        assert!(similarity::cosine_neighbours(x.as_ref(), k).is_err());
    }
    assert!(similarity::mutual_knn(x.as_ref(), x.as_ref(), 9).is_ok());
    // A zero row has no direction.
    let mut zero_row = x.clone();
    for j in 0..3 {
        zero_row[(3, j)] = 0.0;
    }
    assert!(matches!(
        similarity::mutual_knn(zero_row.as_ref(), x.as_ref(), 2),
        Err(ProbeError::ZeroRow { row: 3, .. })
    ));

    // Constant representations: no variance, no CKA / Procrustes / SVCCA.
    let constant = Mat::from_fn(10, 3, |_, j| j as f64);
    for e in ESTIMATORS {
        assert!(matches!(
            similarity::linear_cka(constant.as_ref(), x.as_ref(), e),
            Err(ProbeError::Degenerate(_))
        ));
        assert!(matches!(
            similarity::rbf_cka(x.as_ref(), constant.as_ref(), 1.0, e),
            Err(ProbeError::Degenerate(_))
        ));
    }
    assert!(matches!(
        similarity::procrustes_distance(constant.as_ref(), x.as_ref()),
        Err(ProbeError::Degenerate(_))
    ));
    assert!(matches!(
        similarity::svcca(x.as_ref(), constant.as_ref(), 0.99),
        Err(ProbeError::Degenerate(_))
    ));
    assert!(matches!(
        intrinsic::linearity(constant.as_ref(), x.as_ref()),
        Err(ProbeError::Degenerate(_))
    ));

    // Parameters.
    for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            similarity::rbf_cka(x.as_ref(), x.as_ref(), t, HsicEstimator::Biased),
            Err(ProbeError::InvalidParameter {
                name: "threshold",
                ..
            })
        ));
    }
    for v in [0.0, 1.5, f64::NAN] {
        assert!(matches!(
            similarity::svcca(x.as_ref(), x.as_ref(), v),
            Err(ProbeError::InvalidParameter {
                name: "variance",
                ..
            })
        ));
    }
    let rect = gaussian(4, 3, &mut rng);
    assert!(matches!(
        similarity::kernel_cka(rect.as_ref(), rect.as_ref(), HsicEstimator::Biased),
        Err(ProbeError::SizeMismatch { .. })
    ));

    // TwoNN: fewer than 3 points, all duplicates, bad discard fraction, NaN.
    let two = gaussian(2, 3, &mut rng);
    assert!(matches!(
        intrinsic::two_nn(two.as_ref(), 0.1),
        Err(ProbeError::Degenerate(_))
    ));
    let same = Mat::from_fn(20, 3, |_, j| j as f64);
    assert!(matches!(
        intrinsic::two_nn(same.as_ref(), 0.1),
        Err(ProbeError::Degenerate(_))
    ));
    let pairs_only = Mat::from_fn(20, 3, |i, j| ((i / 2) * 3 + j) as f64);
    assert!(matches!(
        intrinsic::two_nn(pairs_only.as_ref(), 0.1),
        Err(ProbeError::Degenerate(_))
    ));
    for f in [-0.1, 1.0, f64::NAN] {
        assert!(matches!(
            intrinsic::two_nn(x.as_ref(), f),
            Err(ProbeError::InvalidParameter {
                name: "discard_fraction",
                ..
            })
        ));
    }
    assert!(matches!(
        intrinsic::two_nn(nan.as_ref(), 0.1),
        Err(ProbeError::NonFinite { .. })
    ));
    // A regular grid: every ratio is 1, the slope is undefined.
    let grid = Mat::from_fn(12, 1, |i, _| i as f64);
    assert!(matches!(
        intrinsic::two_nn(grid.as_ref(), 0.1),
        Err(ProbeError::Degenerate(_))
    ));

    // RankMe, Renyi, curvature.
    assert!(matches!(
        intrinsic::rankme(Mat::<f64>::zeros(3, 3).as_ref(), 1e-7),
        Err(ProbeError::Degenerate(_))
    ));
    assert!(matches!(
        intrinsic::rankme(x.as_ref(), -1.0),
        Err(ProbeError::InvalidParameter { .. })
    ));
    assert!(matches!(
        intrinsic::rankme(inf.as_ref(), 1e-7),
        Err(ProbeError::NonFinite { .. })
    ));
    for a in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            intrinsic::renyi_entropy(x.as_ref(), a, Preprocess::CenterL2),
            Err(ProbeError::InvalidParameter { name: "alpha", .. })
        ));
    }
    assert!(intrinsic::renyi_entropy_of_spectrum(&[0.5, -0.1], 2.0).is_err());
    assert!(intrinsic::renyi_entropy_of_spectrum(&[0.0, 0.0], 2.0).is_err());
    assert!(intrinsic::renyi_entropy(nan.as_ref(), 2.0, Preprocess::None).is_err());
    assert!(matches!(
        intrinsic::curvature(two.as_ref()),
        Err(ProbeError::Degenerate(_))
    ));
    assert!(matches!(
        intrinsic::curvature(nan.as_ref()),
        Err(ProbeError::NonFinite { .. })
    ));
    let still = Mat::from_fn(5, 2, |_, j| j as f64);
    assert!(matches!(
        intrinsic::curvature(still.as_ref()),
        Err(ProbeError::Degenerate(_))
    ));
}
