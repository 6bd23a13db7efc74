#!/usr/bin/env python3
"""Golden fixtures for crates/lmgeo-probes, computed with numpy, scipy and
scikit-learn only (no Rust output is ever used here).

Run from the repository root (re-running overwrites the fixtures; the output
is deterministic for the pinned stack in scripts/golden/requirements.txt):

    .pyref/bin/python scripts/golden/probes.py \
        --out crates/lmgeo-probes/tests/fixtures

Every input matrix is stored in the fixtures (matrices.json), so the Rust
tests read exactly the matrices used here. Files written:

  matrices.json   seeded random and structured matrices (rows = tokens) and
                  their numpy-preprocessed versions (center_l2, l2, none)
  entropy.json    spectrum from the d x d covariance (numpy.linalg.eigvalsh),
                  matrix entropy (scipy.stats.entropy), coding length
                  (numpy.linalg.slogdet of I + d/eps^2 S)
  power_law.json  numpy.polyfit and scipy.stats.linregress on log-log data;
                  numpy.percentile; the r-equal-singular-values simulation
                  computed by slogdet on an explicit matrix
  gp.json         posterior variance by the literal d x d ridge solve, by the
                  kernel formula, and per position by least squares on the
                  augmented system [C^T; sigma I] beta ~ [z; 0]
  lasso.json      sklearn.linear_model.Lasso(fit_intercept=False) with
                  precompute False and True, and sklearn lasso_path
  attention.json  scipy.stats.spearmanr / kendalltau (tau-b), top-k sets by a
                  stable numpy argsort (Lasso's zeros by residual correlation),
                  numpy.linalg.lstsq residuals
  distance.json   scipy.spatial.distance.cosine, Frobenius of dense
                  covariances, Bures via scipy.linalg.sqrtm, via eigh and via
                  the nuclear norm of A B^T (numpy.linalg.norm 'nuc'),
                  von Neumann relative entropy via scipy.linalg.logm and eigh
  auc.json        sklearn.metrics.roc_auc_score, scipy.stats.mannwhitneyu
"""

import argparse
import json
import pathlib
import warnings

import numpy as np
import scipy
import scipy.linalg
import scipy.spatial.distance
import scipy.stats
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, lasso_path
from sklearn.metrics import roc_auc_score

SEED = 20240205


def rows(m):
    return [[float(v) for v in r] for r in np.asarray(m)]


def floats(v):
    return [float(x) for x in np.asarray(v).ravel()]


# ---------------------------------------------------------------- matrices

def make_matrices(rng):
    m = {}
    m["gaussian_n_lt_d"] = rng.standard_normal((12, 20))
    m["gaussian_n_gt_d"] = rng.standard_normal((30, 8))
    # Rank 3 plus a common offset: centring leaves rank 3.
    g = rng.standard_normal((16, 3)) @ rng.standard_normal((3, 24))
    m["low_rank"] = g + rng.standard_normal(24)
    # Singular values spread over six decades, plus a large shared direction
    # as in real hidden states.
    u, _ = np.linalg.qr(rng.standard_normal((14, 10)))
    v, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    m["ill_conditioned"] = (u * np.logspace(0, -6, 10)) @ v.T + 0.3 * rng.standard_normal(10)
    # Anisotropic: one dominant mean direction and small token noise.
    m["hidden_like"] = 5.0 * rng.standard_normal(16) + 0.5 * rng.standard_normal((20, 16))
    return m


def preprocess(z, method):
    z = np.array(z, dtype=np.float64)
    if method == "none":
        return z
    if method == "center_l2":
        z = z - z.mean(axis=0, keepdims=True)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


PREPROCESS = ["center_l2", "l2", "none"]

# ---------------------------------------------------------------- entropy

def entropy_fixture(mats):
    cases = []
    for name, z in mats.items():
        n, d = z.shape
        for method in PREPROCESS:
            zp = preprocess(z, method)
            s = zp.T @ zp / n
            eig = np.clip(np.linalg.eigvalsh(s), 0.0, None)[::-1]
            p = eig / eig.sum()
            h = float(scipy.stats.entropy(p))
            per_eps = []
            for eps in (0.1, 0.5):
                sign, logdet = np.linalg.slogdet(np.eye(d) + (d / eps**2) * s)
                assert sign > 0
                length = 0.5 * (n + d) * logdet
                max_length = 0.5 * (n + d) * d * np.log1p(1.0 / eps**2)
                per_eps.append({
                    "eps": eps,
                    "coding_length": float(length),
                    "max_coding_length": float(max_length),
                    "normalised_coding_length": float(length / max_length),
                })
            cases.append({
                "matrix": name,
                "preprocess": method,
                "spectrum_d_side": floats(eig),
                "trace": float(np.trace(s)),
                "matrix_entropy": h,
                "normalised_matrix_entropy": h / np.log(d),
                "effective_rank": float(np.exp(h)),
                "per_eps": per_eps,
            })
    return {"cases": cases}

# ---------------------------------------------------------------- power law

PYTHIA_PARAMS = [70426624, 162322944, 405334016, 1011781632, 1414647808,
                 2775208960, 6857302016, 11846072320]


def power_law_fixture(rng):
    x = np.array(PYTHIA_PARAMS, dtype=np.float64)
    y = 0.8 * x ** -0.05 * np.exp(0.01 * rng.standard_normal(len(x)))
    fits = []
    for label, xs, ys in (("pythia_noisy", x, y), ("two_points", x[:2], y[:2]),
                          ("increasing", x[:5], 3.0 * x[:5] ** 0.12 * (1 + 0.02 * rng.standard_normal(5)))):
        lx, ly = np.log(xs), np.log(ys)
        slope, intercept = np.polyfit(lx, ly, 1)
        entry = {"name": label, "x": floats(xs), "y": floats(ys),
                 "b": float(slope), "log_a": float(intercept), "a": float(np.exp(intercept))}
        if len(xs) > 2:
            lr = scipy.stats.linregress(lx, ly)
            entry.update({"r_squared": float(lr.rvalue ** 2), "b_std_err": float(lr.stderr),
                          "log_a_std_err": float(lr.intercept_stderr)})
        fits.append(entry)
    values = rng.standard_normal(37)
    qs = [0.0, 0.025, 0.05, 0.5, 0.95, 0.975, 1.0]
    percentiles = {"values": floats(values), "q": qs,
                   "expected": [float(np.percentile(values, 100 * q)) for q in qs]}
    simulation = []
    for d in (16, 64):
        for r in (1, 3, 8, 16):
            for eps in (0.1, 0.5):
                # r unit rows along e_1..e_r: S = diag(1/r, ..., 1/r, 0, ...).
                z = np.zeros((r, d))
                z[np.arange(r), np.arange(r)] = 1.0
                s = z.T @ z / r
                _, logdet = np.linalg.slogdet(np.eye(d) + (d / eps**2) * s)
                normalised = logdet / (d * np.log1p(1 / eps**2))
                h = scipy.stats.entropy(np.linalg.eigvalsh(s).clip(0))
                simulation.append({"r": r, "d": d, "eps": eps,
                                   "normalised_coding_length": float(normalised),
                                   "matrix_entropy": float(h)})
    return {"fits": fits, "percentiles": percentiles, "simulation": simulation}

# ---------------------------------------------------------------- GP

def gp_fixture(mats):
    cases = []
    for name, z in mats.items():
        zp = preprocess(z, "l2")
        n, d = zp.shape
        for sigma in (0.01, 0.1):
            c, x = zp[:-1], zp[-1]
            dense = sigma**2 * x @ np.linalg.solve(c.T @ c + sigma**2 * np.eye(d), x)
            k = c @ x
            kernel = x @ x - k @ np.linalg.solve(c @ c.T + sigma**2 * np.eye(n - 1), k)
            curve = []
            for t in range(1, n):
                ctx, new = zp[:t], zp[t]
                aug = np.vstack([ctx.T, sigma * np.eye(t)])
                rhs = np.concatenate([new, np.zeros(t)])
                beta = np.linalg.lstsq(aug, rhs, rcond=None)[0]
                resid = rhs - aug @ beta
                curve.append(float(resid @ resid))
            cases.append({
                "matrix": name, "preprocess": "l2", "sigma": sigma,
                "last_s2_dense": float(dense), "last_s2_kernel": float(kernel),
                "last_information_gain": float(0.5 * np.log1p(dense / sigma**2)),
                "curve_s2": curve,
                "curve_information_gain": [float(0.5 * np.log1p(v / sigma**2)) for v in curve],
            })
    return {"cases": cases}

# ---------------------------------------------------------------- Lasso

def lasso_problems(mats):
    """(name, X samples x features, y): the token setting X = C^T, y = z."""
    out = []
    for name in ("gaussian_n_lt_d", "gaussian_n_gt_d", "hidden_like", "ill_conditioned"):
        zp = preprocess(mats[name], "l2")
        out.append((name, zp[:-1].T.copy(), zp[-1].copy()))
    return out


def lasso_fixture(mats):
    fits = []
    for name, x, y in lasso_problems(mats):
        for alpha in (1e-4, 1e-3, 1e-2):
            for tol in (1e-4, 1e-10):
                for precompute in (False, True):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        model = Lasso(alpha=alpha, fit_intercept=False, tol=tol,
                                      max_iter=100000, precompute=precompute)
                        model.fit(x, y)
                    fits.append({
                        "problem": name, "alpha": alpha, "tol": tol, "max_iter": 100000,
                        "precompute": precompute, "coef": floats(model.coef_),
                        "n_iter": int(model.n_iter_), "dual_gap": float(model.dual_gap_),
                    })
    paths = []
    for name, x, y in lasso_problems(mats):
        alpha_max = np.abs(x.T @ y).max() / x.shape[0]
        alphas = alpha_max * np.logspace(-0.2, -3, 8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            _, coefs, gaps = lasso_path(x, y, alphas=alphas, tol=1e-4, max_iter=100000)
        paths.append({"problem": name, "alphas": floats(alphas), "tol": 1e-4,
                      "alpha_max": float(alpha_max),
                      "coefs": [floats(coefs[:, i]) for i in range(len(alphas))],
                      "dual_gaps": floats(gaps)})
    problems = [{"name": n, "x": rows(x), "y": floats(y)} for n, x, y in lasso_problems(mats)]
    return {"problems": problems, "fits": fits, "paths": paths}

# ---------------------------------------------------------------- attention

def stable_top(values, k):
    return [int(i) for i in np.argsort(-np.asarray(values), kind="stable")[:k]]


def lasso_top(context, y, coef, k):
    """Lasso's top-k: non-zero coefficients by |coef|, then the zero ones by
    |c_i . (y - C^T coef)|, the residual correlation that decides which token
    enters the support next as alpha decreases; ties by index."""
    correlation = np.abs(context @ (y - context.T @ coef))
    support = [i for i in np.argsort(-np.abs(coef), kind="stable") if coef[i] != 0.0]
    zeros = [i for i in np.argsort(-correlation, kind="stable") if coef[i] == 0.0]
    return [int(i) for i in (support + zeros)[:k]]


def attention_fixture(mats, rng):
    cases = []
    k_max = 6
    for name, x, y in lasso_problems(mats):
        context = x.T
        t = context.shape[0]
        logits = rng.standard_normal(t)
        attention = np.exp(logits) / np.exp(logits).sum()
        attention = np.round(attention, 2)  # ties on purpose
        model = Lasso(alpha=1e-3, fit_intercept=False, tol=1e-10, max_iter=100000).fit(x, y)
        coef = model.coef_.copy()
        magnitude = np.abs(coef)
        rho = scipy.stats.spearmanr(attention, magnitude).statistic
        tau = scipy.stats.kendalltau(attention, magnitude, variant="b").statistic
        top = []
        for k in range(1, min(k_max, t) + 1):
            a, l = stable_top(attention, k), lasso_top(context, y, coef, k)
            inter = len(set(a) & set(l))
            union = len(set(a) | set(l))

            def residual(sel):
                basis = context[sel].T
                beta = np.linalg.lstsq(basis, y, rcond=None)[0]
                return float(np.linalg.norm(y - basis @ beta) / np.linalg.norm(y))

            top.append({"k": k, "attention_tokens": a, "lasso_tokens": l,
                        "jaccard": inter / union, "precision": inter / k,
                        "attention_residual": residual(a), "lasso_residual": residual(l)})
        cases.append({"problem": name, "attention": floats(attention), "coef": floats(coef),
                      "k_max": min(k_max, t), "spearman": float(rho), "kendall_tau_b": float(tau),
                      "top_k": top})
    return {"cases": cases}

# ---------------------------------------------------------------- distances

def psd_sqrt(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def distance_fixture(rng):
    d = 16
    texts = {
        "t0": rng.standard_normal((5, d)) + 2.0,
        "t1": rng.standard_normal((7, d)),
        "t2": rng.standard_normal((20, d)) + np.linspace(-1, 1, d),
    }
    texts["t3"] = texts["t0"] + 0.05 * rng.standard_normal((5, d))
    pairs = [("t0", "t1"), ("t0", "t2"), ("t1", "t2"), ("t0", "t3"), ("t1", "t3")]
    results = []
    for method in ("center_l2", "l2"):
        moments = {}
        for key, z in texts.items():
            zp = preprocess(z, method)
            mean = preprocess(z, "l2" if method == "center_l2" else method).mean(axis=0)
            moments[key] = (mean, zp.T @ zp / zp.shape[0])
        for a, b in pairs:
            (mu1, s1), (mu2, s2) = moments[a], moments[b]
            r1 = scipy.linalg.sqrtm(s1)
            fid_sqrtm = np.trace(scipy.linalg.sqrtm(r1 @ s2 @ r1)).real
            e1 = psd_sqrt(s1)
            fid_eigh = np.trace(psd_sqrt(e1 @ s2 @ e1))
            mean2 = float(np.sum((mu1 - mu2) ** 2))
            f1 = preprocess(texts[a], method) / np.sqrt(len(texts[a]))
            f2 = preprocess(texts[b], method) / np.sqrt(len(texts[b]))
            fid_nuclear = np.linalg.norm(f1 @ f2.T, "nuc")
            entry = {
                "preprocess": method, "a": a, "b": b,
                "cosine": float(scipy.spatial.distance.cosine(mu1, mu2)),
                "euclidean": float(np.linalg.norm(mu1 - mu2)),
                "frobenius": float(np.linalg.norm(s1 - s2, "fro")),
                "bures_sqrtm": float(np.sqrt(max(np.trace(s1) + np.trace(s2) - 2 * fid_sqrtm, 0))),
                "bures_nuclear": float(np.sqrt(max(np.trace(s1) + np.trace(s2) - 2 * fid_nuclear, 0))),
                "bures_eigh": float(np.sqrt(max(np.trace(s1) + np.trace(s2) - 2 * fid_eigh, 0))),
                "wasserstein_eigh": float(np.sqrt(max(np.trace(s1) + np.trace(s2) - 2 * fid_eigh, 0) + mean2)),
                "von_neumann": [],
            }
            for delta in (1e-6, 1e-3):
                rho1 = (s1 + delta * np.eye(d)) / np.trace(s1 + delta * np.eye(d))
                rho2 = (s2 + delta * np.eye(d)) / np.trace(s2 + delta * np.eye(d))
                via_logm = np.trace(rho1 @ (scipy.linalg.logm(rho1) - scipy.linalg.logm(rho2))).real
                w1, v1 = np.linalg.eigh(rho1)
                w2, v2 = np.linalg.eigh(rho2)
                log1 = (v1 * np.log(w1)) @ v1.T
                log2 = (v2 * np.log(w2)) @ v2.T
                via_eigh = np.trace(rho1 @ (log1 - log2))
                entry["von_neumann"].append({"delta": delta, "logm": float(via_logm),
                                             "eigh": float(via_eigh)})
            results.append(entry)
    return {"d": d, "texts": {k: rows(v) for k, v in texts.items()}, "pairs": results}

# ---------------------------------------------------------------- AUC

def auc_fixture(rng):
    cases = []
    specs = [("ties", 30, 50, 0.8, 1), ("no_ties", 25, 40, 0.5, None), ("reversed", 20, 20, -0.7, 2)]
    for name, npos, nneg, shift, decimals in specs:
        pos = rng.standard_normal(npos)
        neg = rng.standard_normal(nneg) + shift
        if decimals is not None:
            pos, neg = np.round(pos, decimals), np.round(neg, decimals)
        labels = np.concatenate([np.ones(npos), np.zeros(nneg)])
        scores = -np.concatenate([pos, neg])  # closer = more positive
        auc = roc_auc_score(labels, scores)
        mw = scipy.stats.mannwhitneyu(neg, pos, alternative="two-sided",
                                      method="asymptotic", use_continuity=False)
        z_abs = scipy.stats.norm.isf(mw.pvalue / 2)
        cases.append({"name": name, "positive": floats(pos), "negative": floats(neg),
                      "auc": float(auc), "u_statistic": float(mw.statistic),
                      "abs_z_score": float(z_abs)})
    return {"cases": cases}

# ---------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    mats = make_matrices(rng)
    stack = {"numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__}
    matrices = {
        "stack": stack,
        "matrices": {name: {"rows": rows(z),
                            "preprocessed": {m: rows(preprocess(z, m)) for m in PREPROCESS}}
                     for name, z in mats.items()},
    }
    outputs = {
        "matrices.json": matrices,
        "entropy.json": entropy_fixture(mats),
        "power_law.json": power_law_fixture(rng),
        "gp.json": gp_fixture(mats),
        "lasso.json": lasso_fixture(mats),
        "attention.json": attention_fixture(mats, rng),
        "distance.json": distance_fixture(rng),
        "auc.json": auc_fixture(rng),
    }
    total = 0
    for file, payload in outputs.items():
        payload = {"generated_by": "scripts/golden/probes.py", "stack": stack, **payload}
        text = json.dumps(payload, indent=None, separators=(",", ":")) + "\n"
        (args.out / file).write_text(text)
        total += len(text)
        print(f"{file}: {len(text)} bytes")
    print(f"total: {total} bytes")


if __name__ == "__main__":
    main()
