//! Representation-geometry probes (similarity.rs, intrinsic.rs) against the
//! independent numpy / scipy / scikit-learn / scikit-dimension references of
//! scripts/golden/geometry.py (fixture geometry.json).
//!
//! Tolerances: `1e-9` relative wherever both sides evaluate a closed form
//! from the same inputs (CKA, Procrustes, SVCCA, linearity, RankMe, Renyi
//! entropy, curvature, TwoNN): the two sides differ only by round-off, at
//! most ~1e-12 here, through different but stable routes. Two references
//! are less accurate than the quantity itself and get a small absolute
//! floor: numpy's `arccos` of a cosine near 1 (nearly straight
//! trajectories: error ~`f64::EPSILON / angle`) and the `2 - 2 ||.||_*` of
//! a Procrustes distance near 0. Neighbour lists and mutual-kNN scores must
//! match exactly (ties follow the same documented rule on both sides).

mod common;

use common::{assert_close, fixture, indices, matrix, num, nums, rel_err};
use faer::Mat;
use lmgeo_probes::intrinsic;
use lmgeo_probes::similarity::{self, HsicEstimator};
use serde_json::Value;

const CLOSED_FORM: f64 = 1e-9;

struct Fixture {
    root: Value,
}

impl Fixture {
    fn load() -> Self {
        Fixture {
            root: fixture("geometry.json"),
        }
    }

    fn matrix(&self, name: &str) -> Mat<f64> {
        matrix(&self.root["matrices"][name])
    }

    fn cases(&self, key: &str) -> Vec<Value> {
        self.root[key].as_array().unwrap().clone()
    }
}

#[test]
fn cka_matches_kornblith_forms_and_u_centring() {
    let fx = Fixture::load();
    let mut worst = 0.0f64;
    for case in fx.cases("pairs") {
        let (xn, yn) = (case["x"].as_str().unwrap(), case["y"].as_str().unwrap());
        let (x, y) = (fx.matrix(xn), fx.matrix(yn));
        let label = format!("{xn} vs {yn}");
        let checks = [
            (
                similarity::linear_cka(x.as_ref(), y.as_ref(), HsicEstimator::Biased).unwrap(),
                num(&case["linear_cka"]),
                "linear CKA",
            ),
            (
                similarity::linear_cka(x.as_ref(), y.as_ref(), HsicEstimator::Debiased).unwrap(),
                num(&case["linear_cka_debiased"]),
                "debiased linear CKA",
            ),
        ];
        for (got, want, what) in checks {
            assert_close(got, want, CLOSED_FORM, 0.0, &format!("{label} {what}"));
            worst = worst.max(rel_err(got, want));
        }
        for rbf in case["rbf_cka"].as_array().unwrap() {
            let t = num(&rbf["threshold"]);
            for (estimator, key) in [
                (HsicEstimator::Biased, "biased"),
                (HsicEstimator::Debiased, "debiased"),
            ] {
                let got = similarity::rbf_cka(x.as_ref(), y.as_ref(), t, estimator).unwrap();
                let want = num(&rbf[key]);
                assert_close(
                    got,
                    want,
                    CLOSED_FORM,
                    0.0,
                    &format!("{label} RBF CKA threshold {t} {key}"),
                );
                worst = worst.max(rel_err(got, want));
            }
        }
    }
    eprintln!("CKA: worst relative error {worst:e}");
}

#[test]
fn neighbours_and_mutual_knn_match_a_stable_argsort() {
    let fx = Fixture::load();
    for case in fx.cases("pairs") {
        let (xn, yn) = (case["x"].as_str().unwrap(), case["y"].as_str().unwrap());
        let (x, y) = (fx.matrix(xn), fx.matrix(yn));
        let want: Vec<usize> = case["neighbours_k5_x"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(indices)
            .collect();
        let got = similarity::cosine_neighbours(x.as_ref(), 5).unwrap();
        assert_eq!(got, want, "{xn}: neighbour lists");
        for m in case["mutual_knn"].as_array().unwrap() {
            let k = m["k"].as_u64().unwrap() as usize;
            let got = similarity::mutual_knn(x.as_ref(), y.as_ref(), k).unwrap();
            // Same integer count on both sides; the division order may differ.
            assert_close(
                got,
                num(&m["score"]),
                1e-15,
                0.0,
                &format!("{xn} vs {yn} mutual kNN k={k}"),
            );
        }
    }
}

#[test]
fn svcca_procrustes_and_linearity_match_numpy_and_scipy() {
    let fx = Fixture::load();
    let mut worst = 0.0f64;
    for case in fx.cases("pairs") {
        let (xn, yn) = (case["x"].as_str().unwrap(), case["y"].as_str().unwrap());
        let (x, y) = (fx.matrix(xn), fx.matrix(yn));
        let label = format!("{xn} vs {yn}");
        for s in case["svcca"].as_array().unwrap() {
            let v = num(&s["variance"]);
            let got = similarity::svcca(x.as_ref(), y.as_ref(), v).unwrap();
            assert_eq!(
                got.kept_x as u64,
                s["kept_x"].as_u64().unwrap(),
                "{label} {v}"
            );
            assert_eq!(
                got.kept_y as u64,
                s["kept_y"].as_u64().unwrap(),
                "{label} {v}"
            );
            let want = nums(&s["correlations"]);
            assert_eq!(got.correlations.len(), want.len());
            for (i, (&a, &b)) in got.correlations.iter().zip(&want).enumerate() {
                assert_close(
                    a,
                    b,
                    CLOSED_FORM,
                    1e-14,
                    &format!("{label} SVCCA {v} rho_{i}"),
                );
            }
            assert_close(
                got.mean,
                num(&s["mean"]),
                CLOSED_FORM,
                0.0,
                &format!("{label} SVCCA {v}"),
            );
            worst = worst.max(rel_err(got.mean, num(&s["mean"])));
        }
        let got = similarity::procrustes_distance(x.as_ref(), y.as_ref()).unwrap();
        assert_close(
            got,
            num(&case["procrustes"]),
            CLOSED_FORM,
            1e-14,
            &format!("{label} Procrustes"),
        );
        worst = worst.max(rel_err(got, num(&case["procrustes"])));
        let got = intrinsic::linearity(x.as_ref(), y.as_ref()).unwrap();
        assert_close(
            got,
            num(&case["linearity"]),
            CLOSED_FORM,
            0.0,
            &format!("{label} linearity"),
        );
        worst = worst.max(rel_err(got, num(&case["linearity"])));
    }
    eprintln!("SVCCA / Procrustes / linearity: worst relative error {worst:e}");
}

#[test]
fn rankme_and_renyi_entropy_match_numpy() {
    let fx = Fixture::load();
    let mut worst = 0.0f64;
    for case in fx.cases("singles") {
        let name = case["matrix"].as_str().unwrap();
        let z = fx.matrix(name);
        for (eps, key) in [
            (intrinsic::DEFAULT_RANKME_EPS, "rankme"),
            (0.0, "rankme_eps0"),
        ] {
            let got = intrinsic::rankme(z.as_ref(), eps).unwrap();
            assert_close(
                got,
                num(&case[key]),
                CLOSED_FORM,
                0.0,
                &format!("{name} {key}"),
            );
            worst = worst.max(rel_err(got, num(&case[key])));
        }
        for r in case["renyi"].as_array().unwrap() {
            let p = r["preprocess"].as_str().unwrap().parse().unwrap();
            let alpha = num(&r["alpha"]);
            let got = intrinsic::renyi_entropy(z.as_ref(), alpha, p).unwrap();
            let want = num(&r["entropy"]);
            assert_close(
                got,
                want,
                CLOSED_FORM,
                1e-14,
                &format!("{name} {p} Renyi alpha={alpha}"),
            );
            worst = worst.max(rel_err(got, want));
        }
    }
    eprintln!("RankMe / Renyi: worst relative error {worst:e}");
}

#[test]
fn curvature_matches_numpy_arccos() {
    let fx = Fixture::load();
    for case in fx.cases("trajectories") {
        let name = case["matrix"].as_str().unwrap();
        let got = intrinsic::curvature(fx.matrix(name).as_ref()).unwrap();
        let want = case["angles"].as_array().unwrap();
        assert_eq!(got.angles.len(), want.len(), "{name}");
        for (t, (a, b)) in got.angles.iter().zip(want).enumerate() {
            match (a, b.as_f64()) {
                (None, None) => {}
                // numpy's arccos of a cosine near 1 carries ~EPSILON / angle.
                (Some(a), Some(b)) => {
                    assert_close(*a, b, CLOSED_FORM, 1e-12, &format!("{name} angle {t}"))
                }
                _ => panic!("{name} angle {t}: {a:?} vs {b}"),
            }
        }
        assert_eq!(got.skipped, want.iter().filter(|v| v.is_null()).count());
        assert_close(
            got.mean,
            num(&case["mean"]),
            CLOSED_FORM,
            1e-12,
            &format!("{name} mean"),
        );
    }
}

fn check_two_nn(label: &str, x: &Mat<f64>, case: &Value) -> intrinsic::TwoNn {
    let got = intrinsic::two_nn(x.as_ref(), intrinsic::DEFAULT_DISCARD_FRACTION).unwrap();
    assert_close(
        got.dimension,
        num(&case["dimension"]),
        CLOSED_FORM,
        0.0,
        &format!("{label} TwoNN"),
    );
    assert_close(
        got.mle,
        num(&case["mle"]),
        CLOSED_FORM,
        0.0,
        &format!("{label} TwoNN MLE"),
    );
    assert_eq!(
        got.duplicates_dropped as u64,
        case["duplicates_dropped"].as_u64().unwrap(),
        "{label}"
    );
    got
}

#[test]
fn two_nn_matches_scikit_dimension() {
    let fx = Fixture::load();
    for case in fx.cases("two_nn_small") {
        let name = case["matrix"].as_str().unwrap();
        let got = check_two_nn(name, &fx.matrix(name), &case);
        if name == "x40_resampled" {
            assert!(got.duplicates_dropped > 0, "the resample has copies");
        }
    }
}

fn splitmix64(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add((index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn symmetric_uniform(seed: u64, index: u64) -> f64 {
    2.0 * ((splitmix64(seed, index) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0
}

/// geometry.py's `linear_subspace`: `X = C B`, summed term by term in the
/// same order, so the points are bitwise those of the reference.
fn linear_subspace(n: usize, d: usize, ambient: usize, seed: u64) -> Mat<f64> {
    Mat::from_fn(n, ambient, |i, j| {
        let mut acc = 0.0;
        for k in 0..d {
            let c = symmetric_uniform(seed, (i * d + k) as u64);
            let b = symmetric_uniform(seed + 1, (k * ambient + j) as u64);
            acc += c * b;
        }
        acc
    })
}

/// Data of known dimension: the estimate must agree with scikit-dimension's
/// to round-off, and lie within 10% of the true dimension (TwoNN on 2000
/// points: a uniform 5-cube's boundary pulls it to ~4.73, the swiss roll
/// gives ~2.03).
#[test]
fn two_nn_recovers_known_dimensions() {
    let fx = Fixture::load();
    for case in fx.cases("two_nn_known") {
        let name = case["name"].as_str().unwrap();
        let x = if let Some(c) = case.get("construction") {
            let u = |k: &str| c[k].as_u64().unwrap() as usize;
            let x = linear_subspace(u("n"), u("d"), u("ambient"), c["seed"].as_u64().unwrap());
            let sum = case["checksum"]["sum"].as_f64().unwrap();
            let ours: f64 = (0..x.ncols())
                .map(|j| x.col_as_slice(j).iter().sum::<f64>())
                .sum();
            assert_close(ours, sum, 1e-12, 1e-9, "subspace checksum");
            let last = x.nrows() - 1;
            for (row, key) in [(0, "first_row"), (last, "last_row")] {
                let want = nums(&case["checksum"][key]);
                for (j, w) in want.iter().enumerate() {
                    assert_eq!(x[(row, j)], *w, "subspace row {row} col {j}");
                }
            }
            x
        } else {
            matrix(&case["rows"])
        };
        let got = check_two_nn(name, &x, &case);
        let truth = num(&case["true_dimension"]);
        assert!(
            (got.dimension - truth).abs() <= 0.1 * truth,
            "{name}: TwoNN {} vs true {truth}",
            got.dimension
        );
        eprintln!(
            "{name}: true {truth}, TwoNN {:.4}, MLE {:.4}",
            got.dimension, got.mle
        );
    }
}
