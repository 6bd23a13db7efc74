//! Comparisons with independent implementations (numpy, scipy,
//! scikit-learn) through the fixtures of scripts/golden/probes.py.

mod common;

use common::{assert_close, fixture, indices, matrix, num, nums, rel_err};
use faer::Mat;
use lmgeo_probes::{Preprocess, attention, distance, entropy, gp, lasso, power_law, preprocess};
use serde_json::Value;

fn matrices() -> Value {
    fixture("matrices.json")["matrices"].clone()
}

fn preprocess_of(case: &Value) -> Preprocess {
    case["preprocess"].as_str().unwrap().parse().unwrap()
}

#[test]
fn preprocessing_matches_numpy() {
    for (name, m) in matrices().as_object().unwrap() {
        let raw = matrix(&m["rows"]);
        for p in Preprocess::ALL {
            let want = matrix(&m["preprocessed"][p.name()]);
            let got = preprocess::preprocess(raw.as_ref(), p).unwrap();
            for i in 0..raw.nrows() {
                for j in 0..raw.ncols() {
                    assert_close(
                        got[(i, j)],
                        want[(i, j)],
                        1e-13,
                        1e-15,
                        &format!("{name} {p} ({i},{j})"),
                    );
                }
            }
        }
    }
}

#[test]
fn entropy_matches_numpy_and_scipy() {
    let mats = matrices();
    let cases = fixture("entropy.json")["cases"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 15);
    let mut worst = 0.0f64;
    for case in &cases {
        let name = case["matrix"].as_str().unwrap();
        let p = preprocess_of(case);
        let raw = matrix(&mats[name]["rows"]);
        let label = format!("{name}/{p}");

        // numpy's spectrum is from the d x d side; ours from the smaller side.
        let processed = preprocess::preprocess(raw.as_ref(), p).unwrap();
        let ours = entropy::spectrum(processed.as_ref()).unwrap();
        let theirs = nums(&case["spectrum_d_side"]);
        assert_eq!(ours.len(), raw.nrows().min(raw.ncols()));
        let top = theirs[0];
        for (i, (&a, &b)) in ours.iter().zip(&theirs).enumerate() {
            assert_close(a, b, 0.0, 1e-12 * top, &format!("{label} eigenvalue {i}"));
        }
        assert!(theirs[ours.len()..].iter().all(|&x| x <= 1e-12 * top));

        for per_eps in case["per_eps"].as_array().unwrap() {
            let eps = num(&per_eps["eps"]);
            let r = entropy::entropy_report(raw.as_ref(), p, eps).unwrap();
            let checks = [
                (r.trace, num(&case["trace"]), "trace"),
                (
                    r.matrix_entropy,
                    num(&case["matrix_entropy"]),
                    "matrix entropy",
                ),
                (
                    r.normalised_matrix_entropy,
                    num(&case["normalised_matrix_entropy"]),
                    "H / ln d",
                ),
                (r.effective_rank, num(&case["effective_rank"]), "erank"),
                (
                    r.coding_length,
                    num(&per_eps["coding_length"]),
                    "coding length",
                ),
                (
                    r.max_coding_length,
                    num(&per_eps["max_coding_length"]),
                    "max coding length",
                ),
                (
                    r.normalised_coding_length,
                    num(&per_eps["normalised_coding_length"]),
                    "L / max",
                ),
            ];
            for (got, want, what) in checks {
                assert_close(got, want, 1e-9, 0.0, &format!("{label} eps={eps} {what}"));
                worst = worst.max(rel_err(got, want));
            }
        }
    }
    eprintln!("entropy: worst relative error {worst:e}");
}

#[test]
fn power_law_fit_matches_polyfit_and_linregress() {
    let fx = fixture("power_law.json");
    for f in fx["fits"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        let fit = power_law::fit(&nums(&f["x"]), &nums(&f["y"])).unwrap();
        assert_close(fit.b, num(&f["b"]), 1e-9, 1e-14, &format!("{name} b"));
        assert_close(
            fit.log_a,
            num(&f["log_a"]),
            1e-9,
            1e-14,
            &format!("{name} ln a"),
        );
        assert_close(fit.a, num(&f["a"]), 1e-9, 0.0, &format!("{name} a"));
        if f.get("r_squared").is_some() {
            assert_close(
                fit.r_squared,
                num(&f["r_squared"]),
                1e-9,
                0.0,
                &format!("{name} R^2"),
            );
            assert_close(
                fit.b_std_err.unwrap(),
                num(&f["b_std_err"]),
                1e-9,
                0.0,
                &format!("{name} se b"),
            );
            assert_close(
                fit.log_a_std_err.unwrap(),
                num(&f["log_a_std_err"]),
                1e-9,
                0.0,
                &format!("{name} se ln a"),
            );
        } else {
            assert!(fit.b_std_err.is_none());
        }
    }
    let pc = &fx["percentiles"];
    let values = nums(&pc["values"]);
    for (q, want) in nums(&pc["q"]).into_iter().zip(nums(&pc["expected"])) {
        assert_close(
            power_law::quantile(&values, q).unwrap(),
            want,
            1e-12,
            1e-15,
            &format!("quantile {q}"),
        );
    }
    for s in fx["simulation"].as_array().unwrap() {
        let (r, d, eps) = (
            num(&s["r"]),
            s["d"].as_u64().unwrap() as usize,
            num(&s["eps"]),
        );
        let got = power_law::simulated_normalised_coding_length(r, d, eps).unwrap();
        assert_close(
            got,
            num(&s["normalised_coding_length"]),
            1e-12,
            0.0,
            &format!("simulation r={r} d={d}"),
        );
        let h = power_law::simulated_matrix_entropy(r).unwrap();
        assert_close(
            h,
            num(&s["matrix_entropy"]),
            1e-12,
            1e-14,
            &format!("ln r, r={r}"),
        );
    }
}

#[test]
fn gp_routes_match_each_other_and_numpy() {
    let mats = matrices();
    let mut worst_single = 0.0f64;
    let mut worst_curve = 0.0f64;
    for case in fixture("gp.json")["cases"].as_array().unwrap() {
        let name = case["matrix"].as_str().unwrap();
        let sigma = num(&case["sigma"]);
        let z = matrix(&mats[name]["preprocessed"]["l2"]);
        let (n, d) = (z.nrows(), z.ncols());
        let last: Vec<f64> = (0..d).map(|j| z[(n - 1, j)]).collect();
        let context = z.as_ref().subrows(0, n - 1);
        let label = format!("{name} sigma={sigma}");

        let r = gp::information_gain(context, &last, sigma).unwrap();
        let dense = gp::ridge_variance_dense(context, &last, sigma).unwrap();
        let want = num(&case["last_s2_dense"]);
        for (got, what) in [
            (r.s2_gp, "GP route"),
            (r.s2_ridge, "ridge route"),
            (dense, "dense route"),
        ] {
            assert_close(got, want, 1e-10, 0.0, &format!("{label} {what}"));
            worst_single = worst_single.max(rel_err(got, want));
        }
        assert_close(
            r.s2_gp,
            num(&case["last_s2_kernel"]),
            1e-10,
            0.0,
            &format!("{label} kernel"),
        );
        assert!(
            r.relative_difference <= 1e-10,
            "{label}: {}",
            r.relative_difference
        );
        assert_close(
            r.information_gain,
            num(&case["last_information_gain"]),
            1e-10,
            0.0,
            &label,
        );

        let curve = gp::gain_curve(z.as_ref(), sigma).unwrap();
        let want_s2 = nums(&case["curve_s2"]);
        let want_ig = nums(&case["curve_information_gain"]);
        assert_eq!(curve.s2.len(), n - 1);
        for t in 0..n - 1 {
            // Rows have unit norm, so the incremental value z^T z - |y|^2
            // carries an absolute round-off of a few f64::EPSILON.
            assert_close(
                curve.s2[t],
                want_s2[t],
                1e-10,
                1e-14,
                &format!("{label} curve s2 at {}", t + 1),
            );
            assert_close(
                curve.information_gain[t],
                want_ig[t],
                1e-10,
                1e-12,
                &format!("{label} curve IG at {}", t + 1),
            );
            worst_curve = worst_curve.max(rel_err(curve.s2[t], want_s2[t]));
        }
    }
    eprintln!("gp: worst relative error single {worst_single:e}, curve {worst_curve:e}");
}

fn lasso_problem(fx: &Value, name: &str) -> (Mat<f64>, Vec<f64>) {
    let p = fx["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap();
    (matrix(&p["x"]), nums(&p["y"]))
}

#[test]
fn lasso_matches_sklearn_at_the_same_alpha_and_tol() {
    let fx = fixture("lasso.json");
    let fits = fx["fits"].as_array().unwrap();
    assert_eq!(fits.len(), 48);
    let mut worst = 0.0f64;
    for f in fits {
        let name = f["problem"].as_str().unwrap();
        let (x, y) = lasso_problem(&fx, name);
        let precompute = f["precompute"].as_bool().unwrap();
        let options = lasso::LassoOptions {
            alpha: num(&f["alpha"]),
            tol: num(&f["tol"]),
            max_iter: f["max_iter"].as_u64().unwrap() as usize,
            gram: if precompute {
                lasso::GramMode::Always
            } else {
                lasso::GramMode::Never
            },
            screening: true,
        };
        let label = format!(
            "{name} alpha={} tol={} gram={precompute}",
            options.alpha, options.tol
        );
        let fit = lasso::lasso(x.as_ref(), &y, &options).unwrap();
        let want = nums(&f["coef"]);
        let scale = want.iter().fold(1.0f64, |m, c| m.max(c.abs()));
        for (j, (&a, &b)) in fit.coef.iter().zip(&want).enumerate() {
            assert_close(a, b, 0.0, 1e-6 * scale, &format!("{label} coef {j}"));
            worst = worst.max((a - b).abs() / scale);
        }
        // sklearn only warns when it hits max_iter; its fit converged iff its
        // final gap passed the same test.
        let y_norm2: f64 = y.iter().map(|v| v * v).sum();
        let sklearn_converged = num(&f["dual_gap"]) <= options.tol * y_norm2 / y.len() as f64;
        assert_eq!(fit.converged, sklearn_converged, "{label}: convergence");
        assert_eq!(fit.used_gram, precompute);
        assert_eq!(
            fit.iterations,
            f["n_iter"].as_u64().unwrap() as usize,
            "{label}: iterations"
        );
        assert_eq!(fit.dual_gap <= fit.gap_tolerance, fit.converged, "{label}");
        assert_close(
            fit.dual_gap,
            num(&f["dual_gap"]),
            1e-3,
            1e-16,
            &format!("{label} gap"),
        );
    }
    eprintln!("lasso: worst coefficient difference / max|coef| = {worst:e}");
}

#[test]
fn lasso_path_matches_sklearn_lasso_path() {
    let fx = fixture("lasso.json");
    for path in fx["paths"].as_array().unwrap() {
        let name = path["problem"].as_str().unwrap();
        let (x, y) = lasso_problem(&fx, name);
        let alphas = nums(&path["alphas"]);
        assert_close(
            lasso::alpha_max(x.as_ref(), &y).unwrap(),
            num(&path["alpha_max"]),
            1e-12,
            0.0,
            name,
        );
        let options = lasso::LassoOptions {
            tol: num(&path["tol"]),
            max_iter: 100_000,
            ..Default::default()
        };
        let fits = lasso::lasso_path(x.as_ref(), &y, &alphas, &options).unwrap();
        for (i, (fit, want)) in fits
            .iter()
            .zip(path["coefs"].as_array().unwrap())
            .enumerate()
        {
            let want = nums(want);
            let scale = want.iter().fold(1.0f64, |m, c| m.max(c.abs()));
            for (j, (&a, &b)) in fit.coef.iter().zip(&want).enumerate() {
                assert_close(
                    a,
                    b,
                    0.0,
                    1e-6 * scale,
                    &format!("{name} path point {i} coef {j}"),
                );
            }
        }
    }
}

#[test]
fn attention_comparison_matches_scipy_and_lstsq() {
    let lasso_fx = fixture("lasso.json");
    for case in fixture("attention.json")["cases"].as_array().unwrap() {
        let name = case["problem"].as_str().unwrap();
        let (x, y) = lasso_problem(&lasso_fx, name);
        let context = x.transpose();
        let attn = nums(&case["attention"]);
        let coef = nums(&case["coef"]);
        let k_max = case["k_max"].as_u64().unwrap() as usize;
        let cmp = attention::compare(&attn, &coef, context, &y, k_max).unwrap();
        assert_close(
            cmp.spearman.unwrap(),
            num(&case["spearman"]),
            1e-12,
            1e-14,
            &format!("{name} spearman"),
        );
        assert_close(
            cmp.kendall_tau_b.unwrap(),
            num(&case["kendall_tau_b"]),
            1e-12,
            1e-14,
            &format!("{name} tau-b"),
        );
        for (got, want) in cmp.top_k.iter().zip(case["top_k"].as_array().unwrap()) {
            let label = format!("{name} k={}", got.k);
            assert_eq!(
                got.attention_tokens,
                indices(&want["attention_tokens"]),
                "{label}"
            );
            assert_eq!(got.lasso_tokens, indices(&want["lasso_tokens"]), "{label}");
            assert_close(got.jaccard, num(&want["jaccard"]), 1e-15, 0.0, &label);
            assert_close(got.precision, num(&want["precision"]), 1e-15, 0.0, &label);
            assert_close(
                got.attention_residual,
                num(&want["attention_residual"]),
                1e-9,
                1e-13,
                &label,
            );
            assert_close(
                got.lasso_residual,
                num(&want["lasso_residual"]),
                1e-9,
                1e-13,
                &label,
            );
        }
    }
}

#[test]
fn distances_match_scipy() {
    let fx = fixture("distance.json");
    let texts = fx["texts"].clone();
    let mut worst_vn = 0.0f64;
    for pair in fx["pairs"].as_array().unwrap() {
        let p = preprocess_of(pair);
        let (a, b) = (pair["a"].as_str().unwrap(), pair["b"].as_str().unwrap());
        let label = format!("{p} {a}-{b}");
        let ma = distance::text_moments(matrix(&texts[a]).as_ref(), p).unwrap();
        let mb = distance::text_moments(matrix(&texts[b]).as_ref(), p).unwrap();
        let cos = distance::mean_cosine_distance(&ma.mean, &mb.mean).unwrap();
        assert_close(
            cos,
            num(&pair["cosine"]),
            1e-9,
            1e-15,
            &format!("{label} cosine"),
        );
        let e = distance::euclidean(&ma.mean, &mb.mean).unwrap();
        assert_close(
            e,
            num(&pair["euclidean"]),
            1e-9,
            0.0,
            &format!("{label} euclidean"),
        );
        let fro = distance::frobenius(&ma, &mb).unwrap();
        assert_close(
            fro,
            num(&pair["frobenius"]),
            1e-9,
            0.0,
            &format!("{label} frobenius"),
        );

        let bures = distance::bures_wasserstein(&ma, &mb, false).unwrap();
        assert_close(
            bures,
            num(&pair["bures_nuclear"]),
            1e-9,
            0.0,
            &format!("{label} bures (nuclear)"),
        );
        // The dense references take square roots of round-off eigenvalues
        // (S1 has rank n1 < d): their fidelity is only good to ~1e-8, so
        // compare squared distances with that absolute accuracy.
        for key in ["bures_sqrtm", "bures_eigh"] {
            let want = num(&pair[key]);
            assert_close(
                bures * bures,
                want * want,
                0.0,
                1e-7,
                &format!("{label} {key}"),
            );
        }
        let w2 = distance::bures_wasserstein(&ma, &mb, true).unwrap();
        let want = num(&pair["wasserstein_eigh"]);
        assert_close(w2 * w2, want * want, 0.0, 1e-7, &format!("{label} W2"));

        for vn in pair["von_neumann"].as_array().unwrap() {
            let delta = num(&vn["delta"]);
            let got = distance::von_neumann_relative_entropy(&ma, &mb, delta).unwrap();
            for key in ["eigh", "logm"] {
                assert_close(
                    got,
                    num(&vn[key]),
                    1e-9,
                    0.0,
                    &format!("{label} VN delta={delta} {key}"),
                );
            }
            worst_vn = worst_vn.max(rel_err(got, num(&vn["eigh"])));
        }
    }
    eprintln!("distance: worst von Neumann relative error vs dense eigh {worst_vn:e}");
}

#[test]
fn auc_matches_sklearn_and_mannwhitneyu() {
    for case in fixture("auc.json")["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let r = distance::roc_auc(&nums(&case["positive"]), &nums(&case["negative"])).unwrap();
        assert_close(r.auc, num(&case["auc"]), 1e-12, 0.0, &format!("{name} auc"));
        assert_close(
            r.u_statistic,
            num(&case["u_statistic"]),
            1e-12,
            0.0,
            &format!("{name} U"),
        );
        assert_close(
            r.z_score.unwrap().abs(),
            num(&case["abs_z_score"]),
            1e-9,
            0.0,
            &format!("{name} |z|"),
        );
        assert_eq!(r.z_score.unwrap() > 0.0, r.auc > 0.5, "{name}: sign of z");
    }
}
