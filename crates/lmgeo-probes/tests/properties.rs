//! Property tests: invariances and identities that must hold for every
//! input, checked on random matrices.

use faer::Mat;
use lmgeo_probes::{Preprocess, distance, divergence, entropy, gp, lasso, power_law, summary};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn gaussian(n: usize, d: usize, rng: &mut ChaCha8Rng) -> Mat<f64> {
    Mat::from_fn(n, d, |_, _| StandardNormal.sample(rng))
}

/// A random orthogonal matrix (Q of a Gaussian matrix's QR).
fn orthogonal(d: usize, rng: &mut ChaCha8Rng) -> Mat<f64> {
    gaussian(d, d, rng).qr().compute_Q()
}

fn preprocessings() -> impl Strategy<Value = Preprocess> {
    prop_oneof![
        Just(Preprocess::CenterL2),
        Just(Preprocess::L2),
        Just(Preprocess::None)
    ]
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-300)
}

/// Entropies of (near) rank-one spectra are sums of `-p ln p` over round-off
/// eigenvalues of size ~`d f64::EPSILON`, so they carry an absolute error of
/// ~1e-14 on top of the relative one.
fn close_entropy(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-12
}

/// `tr rho1 (ln rho1 - ln rho2)` from dense d x d eigendecompositions.
fn dense_von_neumann(s1: &Mat<f64>, s2: &Mat<f64>, delta: f64) -> f64 {
    let d = s1.nrows();
    let density = |s: &Mat<f64>| {
        let t: f64 = (0..d).map(|i| s[(i, i)]).sum::<f64>() + delta * d as f64;
        Mat::from_fn(d, d, |i, j| {
            (s[(i, j)] + if i == j { delta } else { 0.0 }) / t
        })
    };
    let log = |rho: &Mat<f64>| {
        let e = rho.self_adjoint_eigen(faer::Side::Lower).unwrap();
        let (u, w) = (e.U(), e.S().column_vector());
        Mat::from_fn(d, d, |i, j| {
            (0..d)
                .map(|k| u[(i, k)] * w[k].ln() * u[(j, k)])
                .sum::<f64>()
        })
    };
    let (r1, r2) = (density(s1), density(s2));
    let diff = &log(&r1) - &log(&r2);
    (0..d)
        .map(|i| (0..d).map(|k| r1[(i, k)] * diff[(k, i)]).sum::<f64>())
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn entropy_ignores_row_order(seed: u64, n in 2usize..14, d in 2usize..14, p in preprocessings()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let z = gaussian(n, d, &mut rng);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let shuffled = Mat::from_fn(n, d, |i, j| z[(order[i], j)]);
        let a = entropy::entropy_report(z.as_ref(), p, 0.1).unwrap();
        let b = entropy::entropy_report(shuffled.as_ref(), p, 0.1).unwrap();
        prop_assert!(close_entropy(a.matrix_entropy, b.matrix_entropy), "{} vs {}", a.matrix_entropy, b.matrix_entropy);
        prop_assert!(close(a.coding_length, b.coding_length, 1e-10));
    }

    #[test]
    fn entropy_ignores_a_rotation_of_the_columns(seed: u64, n in 2usize..14, d in 2usize..14, p in preprocessings()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let z = gaussian(n, d, &mut rng);
        let rotated = &z * &orthogonal(d, &mut rng);
        let a = entropy::entropy_report(z.as_ref(), p, 0.1).unwrap();
        let b = entropy::entropy_report(rotated.as_ref(), p, 0.1).unwrap();
        prop_assert!(close_entropy(a.matrix_entropy, b.matrix_entropy), "{} vs {}", a.matrix_entropy, b.matrix_entropy);
        prop_assert!(close(a.coding_length, b.coding_length, 1e-9));
    }

    #[test]
    fn normalised_entropies_lie_in_the_unit_interval(seed: u64, n in 2usize..20, d in 2usize..20, eps in 0.01f64..2.0) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let z = gaussian(n, d, &mut rng);
        for p in [Preprocess::CenterL2, Preprocess::L2] {
            let r = entropy::entropy_report(z.as_ref(), p, eps).unwrap();
            prop_assert!((0.0..=1.0 + 1e-12).contains(&r.normalised_matrix_entropy));
            prop_assert!((0.0..=1.0 + 1e-12).contains(&r.normalised_coding_length));
            prop_assert!(r.effective_rank >= 1.0 - 1e-12 && r.effective_rank <= (n.min(d)) as f64 + 1e-9);
        }
    }

    #[test]
    fn orthonormal_rows_give_s_equal_identity_over_d_and_maximal_entropy(seed: u64, d in 2usize..24, eps in 0.01f64..2.0) {
        // The d rows of an orthogonal matrix: S = Q^T Q / d = I / d.
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let q = orthogonal(d, &mut rng);
        let r = entropy::entropy_report(q.as_ref(), Preprocess::L2, eps).unwrap();
        prop_assert!(close(r.normalised_matrix_entropy, 1.0, 1e-12));
        prop_assert!(close(r.normalised_coding_length, 1.0, 1e-12));
        prop_assert!(close(r.effective_rank, d as f64, 1e-11));
    }

    #[test]
    fn r_equal_singular_values_have_effective_rank_r(seed: u64, d in 2usize..24, r_frac in 0.0f64..1.0, eps in 0.01f64..2.0) {
        // r orthonormal rows: S has r eigenvalues 1/r.
        let r = 1 + ((d - 1) as f64 * r_frac) as usize;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let q = orthogonal(d, &mut rng);
        let rows = q.as_ref().subrows(0, r).to_owned();
        let report = entropy::entropy_report(rows.as_ref(), Preprocess::L2, eps).unwrap();
        prop_assert!(close(report.effective_rank, r as f64, 1e-11), "{} vs {r}", report.effective_rank);
        prop_assert_eq!(report.numerical_rank, r);
        let simulated = power_law::simulated_normalised_coding_length(r as f64, d, eps).unwrap();
        // L_eps uses (n + d) / 2 with n = r rows; the simulation's ratio is n-free.
        prop_assert!(close(report.normalised_coding_length, simulated, 1e-11));
        prop_assert!(close(report.matrix_entropy, power_law::simulated_matrix_entropy(r as f64).unwrap(), 1e-11));
    }

    #[test]
    fn gp_and_ridge_routes_agree(seed: u64, t in 1usize..16, d in 1usize..16, sigma in 0.05f64..1.0) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let c = gaussian(t, d, &mut rng);
        let z: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let r = gp::information_gain(c.as_ref(), &z, sigma).unwrap();
        let dense = gp::ridge_variance_dense(c.as_ref(), &z, sigma).unwrap();
        let zz: f64 = z.iter().map(|v| v * v).sum();
        // Absolute floor: the kernel route subtracts from z^T z.
        let tol = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-12 * zz;
        prop_assert!(tol(r.s2_gp, dense), "gp {} dense {}", r.s2_gp, dense);
        prop_assert!(tol(r.s2_ridge, dense), "ridge {} dense {}", r.s2_ridge, dense);
        prop_assert!(r.s2_ridge >= 0.0 && r.s2_ridge <= zz * (1.0 + 1e-12));
    }

    #[test]
    fn gain_curve_agrees_with_one_solve_per_position(seed: u64, n in 2usize..12, d in 2usize..12, sigma in 0.05f64..1.0) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let z = gaussian(n, d, &mut rng);
        let curve = gp::gain_curve(z.as_ref(), sigma).unwrap();
        for t in 1..n {
            let row: Vec<f64> = (0..d).map(|j| z[(t, j)]).collect();
            let zz: f64 = row.iter().map(|v| v * v).sum();
            let single = gp::ridge_variance_dense(z.as_ref().subrows(0, t), &row, sigma).unwrap();
            let err = (curve.s2[t - 1] - single).abs();
            prop_assert!(err <= 1e-9 * single + 1e-12 * zz, "t = {t}: {} vs {single}", curve.s2[t - 1]);
        }
    }

    #[test]
    fn lasso_solution_satisfies_kkt(seed: u64, samples in 2usize..30, features in 1usize..30,
                                    alpha_frac in 0.01f64..0.9, gram in any::<bool>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = gaussian(samples, features, &mut rng);
        let y: Vec<f64> = (0..samples).map(|_| StandardNormal.sample(&mut rng)).collect();
        let alpha = alpha_frac * lasso::alpha_max(x.as_ref(), &y).unwrap();
        prop_assume!(alpha > 0.0);
        let options = lasso::LassoOptions {
            alpha,
            tol: 1e-14,
            max_iter: 200_000,
            gram: if gram { lasso::GramMode::Always } else { lasso::GramMode::Never },
            screening: true,
        };
        let fit = lasso::lasso(x.as_ref(), &y, &options).unwrap();
        prop_assume!(fit.converged);
        let violation = lasso::kkt_violation(x.as_ref(), &y, &fit.coef, alpha).unwrap();
        prop_assert!(violation <= 1e-6 * alpha, "violation {violation:e} at alpha {alpha:e}");
    }

    #[test]
    fn lasso_with_and_without_gram_and_screening_agree(seed: u64, samples in 2usize..25, features in 1usize..25, alpha_frac in 0.05f64..0.9) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = gaussian(samples, features, &mut rng);
        let y: Vec<f64> = (0..samples).map(|_| StandardNormal.sample(&mut rng)).collect();
        let alpha = alpha_frac * lasso::alpha_max(x.as_ref(), &y).unwrap();
        prop_assume!(alpha > 0.0);
        let base = lasso::LassoOptions { alpha, tol: 1e-14, max_iter: 200_000, gram: lasso::GramMode::Never, screening: true };
        let variants = [
            base,
            lasso::LassoOptions { gram: lasso::GramMode::Always, ..base },
            lasso::LassoOptions { gram: lasso::GramMode::Auto, ..base },
            lasso::LassoOptions { screening: false, ..base },
        ];
        let fits: Vec<_> = variants.iter().map(|o| lasso::lasso(x.as_ref(), &y, o).unwrap()).collect();
        prop_assume!(fits.iter().all(|f| f.converged));
        // Distinct routes to the same convex optimum agree on the objective.
        let objective = |w: &[f64]| {
            let mut r = y.clone();
            for j in 0..features {
                for (i, ri) in r.iter_mut().enumerate() {
                    *ri -= x[(i, j)] * w[j];
                }
            }
            r.iter().map(|v| v * v).sum::<f64>() / (2.0 * samples as f64) + alpha * w.iter().map(|v| v.abs()).sum::<f64>()
        };
        let reference = objective(&fits[0].coef);
        for f in &fits[1..] {
            prop_assert!((objective(&f.coef) - reference).abs() <= 1e-10 * reference.max(1e-12));
        }
    }

    #[test]
    fn low_rank_matrix_distances_match_dense_d_by_d(seed: u64, n1 in 1usize..8, n2 in 1usize..8, d in 2usize..20,
                                                    delta in 1e-6f64..1e-2) {
        // n1 + n2 < d exercises the shared QR basis, otherwise the dense route.
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a = distance::text_moments(gaussian(n1, d, &mut rng).as_ref(), Preprocess::L2).unwrap();
        let b = distance::text_moments(gaussian(n2, d, &mut rng).as_ref(), Preprocess::L2).unwrap();
        let (s1, s2) = (a.covariance(), b.covariance());
        let want = dense_von_neumann(&s1, &s2, delta);
        let got = distance::von_neumann_relative_entropy(&a, &b, delta).unwrap();
        prop_assert!((got - want).abs() <= 1e-9 * want.abs() + 1e-12, "{got} vs {want}");
        let fro_dense = (&s1 - &s2).norm_l2();
        let fro = distance::frobenius(&a, &b).unwrap();
        prop_assert!((fro - fro_dense).abs() <= 1e-12 * fro_dense.max(1.0), "{fro} vs {fro_dense}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn kl_is_non_negative_and_zero_only_against_itself(
        p in proptest::collection::vec(-30.0f64..30.0, 1..40),
        shift in -1e3f64..1e3,
        seed: u64,
    ) {
        let lp = divergence::log_softmax(&p).unwrap();
        // A distribution is a distribution: probabilities sum to one.
        prop_assert!((lp.iter().map(|l| l.exp()).sum::<f64>() - 1.0).abs() < 1e-12);
        // Softmax ignores a common shift of the logits.
        let shifted: Vec<f64> = p.iter().map(|x| x + shift).collect();
        let ls = divergence::log_softmax(&shifted).unwrap();
        prop_assert!(divergence::kl_divergence(&lp, &ls).unwrap() < 1e-9);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let q: Vec<f64> = p.iter().map(|_| StandardNormal.sample(&mut rng)).collect();
        let lq = divergence::log_softmax(&q).unwrap();
        prop_assert!(divergence::kl_divergence(&lp, &lq).unwrap() >= 0.0);
        prop_assert_eq!(divergence::kl_divergence(&lp, &lp).unwrap(), 0.0);
    }

    #[test]
    fn cosine_distance_ignores_scale_and_lies_in_zero_two(seed: u64, d in 1usize..40, scale in 1e-3f64..1e3) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let b: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let scaled: Vec<f64> = b.iter().map(|x| x * scale).collect();
        let dist = divergence::cosine_distance(&a, &b).unwrap();
        prop_assert!((-1e-12..=2.0 + 1e-12).contains(&dist));
        prop_assert!((divergence::cosine_distance(&a, &scaled).unwrap() - dist).abs() < 1e-12);
        prop_assert!(close(dist, distance::mean_cosine_distance(&a, &b).unwrap(), 1e-9) || dist.abs() < 1e-12);
        prop_assert!(divergence::cosine_distance(&a, &a).unwrap().abs() < 1e-12);
    }

    #[test]
    fn mean_and_standard_error_shift_and_scale(
        values in proptest::collection::vec(-1e3f64..1e3, 2..50),
        shift in -1e3f64..1e3,
        scale in 0.1f64..10.0,
    ) {
        let s = summary::mean_sem(&values).unwrap();
        let moved: Vec<f64> = values.iter().map(|x| x * scale + shift).collect();
        let m = summary::mean_sem(&moved).unwrap();
        prop_assert!((m.mean - (s.mean * scale + shift)).abs() <= 1e-9 * (1.0 + m.mean.abs()));
        prop_assert!((m.sem - s.sem * scale).abs() <= 1e-9 * (1.0 + m.sem));
        prop_assert_eq!(s.mean, summary::mean(&values).unwrap());
        // The standard error of n values is the sample deviation over sqrt(n).
        let n = values.len() as f64;
        let var = values.iter().map(|x| (x - s.mean).powi(2)).sum::<f64>() / (n - 1.0);
        prop_assert!(close(s.sem, (var / n).sqrt(), 1e-12) || s.sem == 0.0);
    }
}
