#!/usr/bin/env python3
"""Golden fixture for the representation-geometry probes of crates/lmgeo-probes
(src/similarity.rs, src/intrinsic.rs), computed with numpy, scipy,
scikit-learn and scikit-dimension only, from the formulas of the papers; no
Rust output is ever used here.

Setup (a venv of its own; no torch):

    python3 -m venv /tmp/pyref-geo
    /tmp/pyref-geo/bin/pip install numpy scipy scikit-learn scikit-dimension

Run from the repository root (re-running overwrites the fixture; the output
is deterministic for a given stack, recorded in the file):

    /tmp/pyref-geo/bin/python scripts/golden/geometry.py \
        --out crates/lmgeo-probes/tests/fixtures/geometry.json

What each reference is:

  linear CKA      biased: Kornblith et al.'s feature-space form
                  ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F); debiased:
                  inner products of U-centred Gram matrices (Szekely &
                  Rizzo's U-centring, whose inner product is (n(n-3)) times
                  Song et al.'s unbiased HSIC)
  RBF CKA         Gram matrices from scipy.spatial.distance.pdist, median of
                  the full n x n squared-distance matrix (numpy.median),
                  explicit H K H centring
  mutual kNN      cosine similarities of the unique normalised rows
                  (numpy.unique, so copies share their similarities), a
                  stable argsort of each row by decreasing similarity (ties:
                  lower index first), self excluded
  SVCCA           numpy.linalg.svd for the kept directions, then CCA of the
                  reduced data U_k S_k through QR factorisations
                  (scipy.linalg.qr) and an SVD
  Procrustes      numpy.linalg.norm(X^T Y, 'nuc'); checked against
                  scipy.spatial.procrustes's disparity (= 1 - nuc^2) where the
                  shapes agree
  linearity       numpy.linalg.lstsq residual
  RankMe          numpy.linalg.svd(compute_uv=False)
  Renyi entropy   numpy.linalg.eigvalsh of the d x d covariance
  curvature       numpy.arccos of clipped cosines
  TwoNN           skdim.id.TwoNN() (default: linear fit, discard 0.1) and
                  TwoNN(method="mle"); cross-checked here against a direct
                  numpy implementation of Facco et al.'s fit on
                  scipy.spatial.distance.cdist distances

Data of known intrinsic dimension for TwoNN:
  * a 5-dimensional linear subspace of R^30: N = 2000 points
    X = C B with C (N x 5) and B (5 x 30) uniform on [-1, 1) from the
    counter-based SplitMix64 stream of benches/probes.rs, and the product
    summed term by term in a fixed order, so that the Rust test rebuilds
    exactly these points; the fixture stores the construction and a
    checksum, not the 60,000 numbers;
  * sklearn.datasets.make_swiss_roll(2000, noise=0, random_state=SEED),
    intrinsic dimension 2, stored as is.
"""

import argparse
import json
import pathlib
import warnings

import numpy as np
import scipy
import scipy.linalg
import scipy.spatial
import scipy.spatial.distance
import sklearn
import sklearn.datasets
import skdim

SEED = 20240611


def rows(m):
    return [[float(v) for v in r] for r in np.asarray(m)]


def floats(v):
    return [float(x) for x in np.asarray(v).ravel()]


# ---------------------------------------------------------------- inputs

def make_matrices(rng):
    m = {}
    # 40 items: X (12 features, anisotropic, offset) and Y (7 features), a
    # noisy linear image of X: related but not identical.
    x = rng.standard_normal((40, 12)) * np.linspace(3.0, 0.3, 12) + 2.0
    m["x40"] = x
    m["y40"] = np.tanh(x @ rng.standard_normal((12, 7)) / 3.0) + 0.3 * rng.standard_normal((40, 7))
    # A bootstrap-like resample of the same 40 items (copies included).
    idx = rng.integers(0, 40, size=40)
    m["x40_resampled"] = x[idx]
    m["y40_resampled"] = m["y40"][idx]
    # Fewer items than features on both sides (Gram-space CKA, QR Procrustes).
    m["wide_a"] = rng.standard_normal((30, 50))
    m["wide_b"] = m["wide_a"][:, :45] @ rng.standard_normal((45, 45)) / 7.0 + 0.5 * rng.standard_normal((30, 45))
    # 60 items in 20 dimensions with a decaying spectrum.
    u, _ = np.linalg.qr(rng.standard_normal((60, 20)))
    v, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    m["z60"] = (u * np.logspace(1, -1, 20)) @ v.T + 0.1
    m["z60_next"] = np.tanh(m["z60"] @ rng.standard_normal((20, 20)) / 2.0) + 0.05 * rng.standard_normal((60, 20))
    # Token trajectories: a random walk with momentum, one with a repeated
    # state (a zero-length step), one nearly straight.
    steps = rng.standard_normal((16, 10))
    walk = np.cumsum(steps + 0.8 * np.roll(steps, 1, axis=0), axis=0)
    m["walk"] = walk
    repeated = walk.copy()
    repeated[7] = repeated[6]
    m["walk_repeated"] = repeated
    t = np.arange(12.0)[:, None]
    m["nearly_straight"] = t * rng.standard_normal(10) + 1e-3 * rng.standard_normal((12, 10))
    return m


PAIRS = [("x40", "y40"), ("x40_resampled", "y40_resampled"), ("wide_a", "wide_b"),
         ("z60", "z60_next"), ("y40", "x40")]
SINGLES = ["x40", "y40", "x40_resampled", "wide_a", "z60"]
TRAJECTORIES = ["walk", "walk_repeated", "nearly_straight"]


def preprocess(z, method):
    z = np.array(z, dtype=np.float64)
    if method == "none":
        return z
    if method == "center_l2":
        z = z - z.mean(axis=0, keepdims=True)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def centre(z):
    return z - z.mean(axis=0, keepdims=True)


# ---------------------------------------------------------------- CKA

def cka_linear_biased(x, y):
    xc, yc = centre(x), centre(y)
    return np.linalg.norm(xc.T @ yc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))


def u_centre(k):
    """U-centring (Szekely & Rizzo 2014): <U(K), U(L)> = n (n - 3) HSIC_unbiased."""
    n = len(k)
    k = k.copy()
    np.fill_diagonal(k, 0.0)
    row = k.sum(axis=1)
    total = row.sum()
    u = k - row[:, None] / (n - 2) - row[None, :] / (n - 2) + total / ((n - 1) * (n - 2))
    np.fill_diagonal(u, 0.0)
    return u


def h_centre(k):
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return h @ k @ h


def cka_from_grams(k, l, debiased):
    centre_fn = u_centre if debiased else h_centre
    kc, lc = centre_fn(k), centre_fn(l)
    return float(np.sum(kc * lc) / np.sqrt(np.sum(kc * kc) * np.sum(lc * lc)))


def rbf_gram(x, threshold):
    d2 = scipy.spatial.distance.squareform(scipy.spatial.distance.pdist(x, "sqeuclidean"))
    median = np.median(d2)  # over all n^2 entries, zeros of the diagonal included
    return np.exp(-d2 / (2.0 * threshold**2 * median))


# ---------------------------------------------------------------- mutual kNN

def neighbours(z, k):
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    unique, inverse = np.unique(zn, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    s = (unique @ unique.T)[inverse][:, inverse]
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def mutual_knn(x, y, k):
    a, b = neighbours(x, k), neighbours(y, k)
    return float(np.mean([len(set(a[i]) & set(b[i])) for i in range(len(a))]) / k)


# ---------------------------------------------------------------- SVCCA, Procrustes, linearity

def svcca(x, y, variance):
    reduced, kept = [], []
    for z in (x, y):
        u, s, _ = np.linalg.svd(centre(z), full_matrices=False)
        ratio = np.cumsum(s**2) / np.sum(s**2)
        k = int(np.argmax(ratio >= variance)) + 1
        reduced.append(u[:, :k] * s[:k])
        kept.append(k)
    qx, _ = scipy.linalg.qr(centre(reduced[0]), mode="economic")
    qy, _ = scipy.linalg.qr(centre(reduced[1]), mode="economic")
    rho = np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)
    return {"variance": variance, "mean": float(rho.mean()), "correlations": floats(rho),
            "kept_x": kept[0], "kept_y": kept[1]}


def unit_centred(z):
    c = centre(z)
    return c / np.linalg.norm(c)


def procrustes(x, y):
    xn, yn = unit_centred(x), unit_centred(y)
    nuc = np.linalg.norm(xn.T @ yn, "nuc")
    if x.shape == y.shape:
        _, _, disparity = scipy.spatial.procrustes(x, y)
        assert abs(disparity - (1.0 - nuc**2)) < 1e-10, (disparity, nuc)
    return float(max(2.0 - 2.0 * nuc, 0.0))


def linearity(x, y):
    xn, yn = unit_centred(x), unit_centred(y)
    a, *_ = np.linalg.lstsq(xn, yn, rcond=None)
    return float(1.0 - np.linalg.norm(xn @ a - yn) ** 2)


# ---------------------------------------------------------------- one set

def rankme(z, eps=1e-7):
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def renyi(z, alpha, method):
    zp = preprocess(z, method)
    eig = np.clip(np.linalg.eigvalsh(zp.T @ zp / len(zp)), 0.0, None)
    if alpha < 1.0:
        # Round-off in place of exact zeros would dominate p**alpha: the
        # documented rule drops eigenvalues <= 1e-12 lambda_max.
        eig = eig[eig > 1e-12 * eig.max()]
    p = eig / eig.sum()
    p = p[p > 0]
    if alpha == 1.0:
        return float(-np.sum(p * np.log(p)))
    return float(np.log(np.sum(p**alpha)) / (1.0 - alpha))


def curvature(z):
    v = np.diff(z, axis=0)
    lengths = np.linalg.norm(v, axis=1)
    angles = []
    for t in range(len(v) - 1):
        if lengths[t] == 0.0 or lengths[t + 1] == 0.0:
            angles.append(None)
            continue
        c = v[t] @ v[t + 1] / (lengths[t] * lengths[t + 1])
        angles.append(float(np.arccos(np.clip(c, -1.0, 1.0))))
    defined = [a for a in angles if a is not None]
    return {"mean": float(np.mean(defined)), "angles": angles}


def two_nn_numpy(x, discard_fraction=0.1):
    """Facco et al. 2017 straight from the paper: mu = r2 / r1, F_emp = i/N,
    fit -log(1 - F) = d log(mu) through the origin on the smallest
    (1 - discard) N ratios."""
    d = scipy.spatial.distance.cdist(x, x)
    np.fill_diagonal(d, np.inf)
    d.sort(axis=1)
    r1, r2 = d[:, 0], d[:, 1]
    keep = r1 > 0
    mu = np.sort(r2[keep] / r1[keep])
    n = len(mu)
    m = int(n * (1 - discard_fraction))
    xs = np.log(mu[:m])
    ys = -np.log(1.0 - np.arange(1, m + 1) / n)
    return float(xs @ ys / (xs @ xs)), int((~keep).sum())


def two_nn_reference(x):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        linear = float(skdim.id.TwoNN().fit(x).dimension_)
        mle = float(skdim.id.TwoNN(method="mle").fit(x).dimension_)
    dropped_warnings = [str(w.message) for w in caught if "Dropping" in str(w.message)]
    mine, dropped = two_nn_numpy(x)
    assert abs(mine - linear) <= 1e-9 * linear, (mine, linear)
    return {"dimension": linear, "mle": mle, "duplicates_dropped": dropped,
            "skdim_warnings": dropped_warnings[:1]}


# ---------------------------------------------------------------- known dimension

def splitmix64(seed, index):
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (index.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def symmetric_uniform(seed, index):
    return 2.0 * ((splitmix64(seed, index) >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)) - 1.0


def linear_subspace(n, d, ambient, seed):
    """X = C B, C[i, k] = u(seed, i d + k), B[k, j] = u(seed + 1, k D + j),
    summed over k = 0..d-1 in that order (elementwise, no BLAS)."""
    i = np.arange(n, dtype=np.uint64)[:, None]
    j = np.arange(ambient, dtype=np.uint64)[None, :]
    x = np.zeros((n, ambient))
    for k in range(d):
        c = symmetric_uniform(seed, i * np.uint64(d) + np.uint64(k))
        b = symmetric_uniform(seed + 1, np.uint64(k) * np.uint64(ambient) + j)
        x = x + c * b
    return x


def known_dimension():
    out = []
    n, d, ambient, seed = 2000, 5, 30, 7
    x = linear_subspace(n, d, ambient, seed)
    out.append({"name": "linear_subspace_5_in_30", "true_dimension": d,
                "construction": {"kind": "splitmix_linear_subspace", "n": n, "d": d,
                                 "ambient": ambient, "seed": seed},
                "checksum": {"sum": float(x.sum()), "sum_abs": float(np.abs(x).sum()),
                             "first_row": floats(x[0]), "last_row": floats(x[-1])},
                **two_nn_reference(x)})
    roll, _ = sklearn.datasets.make_swiss_roll(2000, noise=0.0, random_state=SEED)
    out.append({"name": "swiss_roll", "true_dimension": 2, "rows": rows(roll),
                **two_nn_reference(roll)})
    return out


# ---------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    mats = make_matrices(rng)

    pairs = []
    for a, b in PAIRS:
        x, y = mats[a], mats[b]
        case = {
            "x": a, "y": b,
            "linear_cka": float(cka_linear_biased(x, y)),
            "linear_cka_gram": cka_from_grams(centre(x) @ centre(x).T, centre(y) @ centre(y).T, False),
            "linear_cka_debiased": cka_from_grams(x @ x.T, y @ y.T, True),
            "rbf_cka": [{"threshold": t, "biased": cka_from_grams(rbf_gram(x, t), rbf_gram(y, t), False),
                         "debiased": cka_from_grams(rbf_gram(x, t), rbf_gram(y, t), True)}
                        for t in (1.0, 0.5, 2.0)],
            "mutual_knn": [{"k": k, "score": mutual_knn(x, y, k)} for k in (1, 5, 10)],
            "neighbours_k5_x": [[int(j) for j in r] for r in neighbours(x, 5)],
            "svcca": [svcca(x, y, v) for v in (0.99, 0.9, 0.5)],
            "procrustes": procrustes(x, y),
            "linearity": linearity(x, y),
        }
        assert abs(case["linear_cka"] - case["linear_cka_gram"]) < 1e-12
        pairs.append(case)

    singles = []
    for name in SINGLES:
        z = mats[name]
        singles.append({
            "matrix": name,
            "rankme": rankme(z),
            "rankme_eps0": rankme(z, 0.0),
            "renyi": [{"preprocess": method, "alpha": alpha, "entropy": renyi(z, alpha, method)}
                      for method in ("center_l2", "l2", "none")
                      for alpha in (0.5, 1.0, 2.0, 3.5)],
        })
    # TwoNN on the small matrices too (the resampled one has duplicates).
    two_nn_small = [{"matrix": name, **two_nn_reference(mats[name])}
                    for name in ("x40", "x40_resampled", "z60", "wide_a")]

    trajectories = [{"matrix": name, **curvature(mats[name])} for name in TRAJECTORIES]

    payload = {
        "generated_by": "scripts/golden/geometry.py",
        "stack": {"numpy": np.__version__, "scipy": scipy.__version__,
                  "scikit-learn": sklearn.__version__, "scikit-dimension": skdim.__version__},
        "matrices": {name: rows(z) for name, z in mats.items()},
        "pairs": pairs,
        "singles": singles,
        "two_nn_small": two_nn_small,
        "two_nn_known": known_dimension(),
        "trajectories": trajectories,
    }
    text = json.dumps(payload, indent=None, separators=(",", ":")) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"{args.out}: {len(text)} bytes")
    for case in payload["two_nn_known"]:
        print(f"TwoNN {case['name']}: true {case['true_dimension']}, skdim linear "
              f"{case['dimension']:.4f}, mle {case['mle']:.4f}")


if __name__ == "__main__":
    main()
