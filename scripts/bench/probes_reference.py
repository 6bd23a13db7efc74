#!/usr/bin/env python3
"""numpy / scipy / scikit-learn timings of the lmgeo-probes benchmarks, on
exactly the inputs of crates/lmgeo-probes/benches/probes.rs (a counter-based
SplitMix64 stream reproduced bit for bit; the elementwise construction has
no BLAS rounding), with BLAS limited to 2 threads like faer's rayon pool.

Run from the repository root:

    .pyref/bin/python scripts/bench/probes_reference.py

On machines where OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set (to protect
old OpenBLAS builds) they slow a current numpy; for a fair comparison run it
a second time with both unset in that command alone:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        .pyref/bin/python scripts/bench/probes_reference.py

The script prints the BLAS in use (threadpoolctl), including the kernel
OpenBLAS selected, and the median of several runs for each task.
"""

import os
import statistics
import time
import warnings

import numpy as np
import scipy.linalg
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso
from threadpoolctl import threadpool_info, threadpool_limits

TOKENS, HIDDEN, THREADS = 512, 2048, 2
MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(seed, index):
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (index.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def symmetric_uniform(seed, index):
    return 2.0 * ((splitmix64(seed, index) >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)) - 1.0


def hidden_like(n, d):
    i = np.arange(n, dtype=np.uint64)[:, None]
    j = np.arange(d, dtype=np.uint64)[None, :]
    noise = symmetric_uniform(1, i * np.uint64(d) + j)
    shared = symmetric_uniform(2, j)
    topic = symmetric_uniform(3, (i % np.uint64(8)) * np.uint64(d) + j)
    return noise + 0.5 * shared + 0.5 * topic


def l2(z):
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def entropy_report(z, eps=0.1):
    n, d = z.shape
    zp = l2(z - z.mean(axis=0))
    eig = np.clip(np.linalg.eigvalsh(zp @ zp.T / n), 0, None)
    p = eig[eig > 0] / eig.sum()
    h = -(p * np.log(p)).sum()
    length = 0.5 * (n + d) * np.log1p(d * eig / eps**2).sum()
    return h, np.exp(h), length / (0.5 * (n + d) * d * np.log1p(1 / eps**2))


def gain_curve_incremental(z, sigma=0.01):
    """Same algorithm as the Rust code: Gram once, growing Cholesky factor."""
    n = z.shape[0]
    g = z @ z.T
    factor = np.zeros((n, n))
    factor[0, 0] = np.sqrt(g[0, 0] + sigma**2)
    s2 = np.empty(n - 1)
    for t in range(1, n):
        y = scipy.linalg.solve_triangular(factor[:t, :t], g[:t, t], lower=True, check_finite=False)
        s2[t - 1] = g[t, t] - y @ y
        factor[t, :t] = y
        factor[t, t] = np.sqrt(s2[t - 1] + sigma**2)
    return s2


def gain_curve_per_position(z, sigma=0.01):
    """The direct route: one Cholesky solve per position (Gram formed once)."""
    n = z.shape[0]
    g = z @ z.T
    s2 = np.empty(n - 1)
    for t in range(1, n):
        c = scipy.linalg.cho_factor(g[:t, :t] + sigma**2 * np.eye(t), lower=True, check_finite=False)
        k = g[:t, t]
        s2[t - 1] = g[t, t] - k @ scipy.linalg.cho_solve(c, k, check_finite=False)
    return s2


def timed(fn, repeats):
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), result


def main():
    print("OPENBLAS_CORETYPE =", os.environ.get("OPENBLAS_CORETYPE"),
          " OPENBLAS_L2_SIZE =", os.environ.get("OPENBLAS_L2_SIZE"))
    raw = hidden_like(TOKENS + 1, HIDDEN)
    tokens = raw[:TOKENS]
    unit = l2(raw)
    context, new = unit[:TOKENS], unit[TOKENS]
    with threadpool_limits(limits=THREADS):
        for lib in threadpool_info():
            print("BLAS:", {k: lib.get(k) for k in ("internal_api", "version", "architecture",
                                                     "num_threads", "filepath")})
        rows = []
        rows.append(("entropy_report_center_l2_512x2048", *timed(lambda: entropy_report(tokens), 15)[:2]))
        rows.append(("gain_curve_512_positions_d2048 (incremental)",
                     *timed(lambda: gain_curve_incremental(unit[:TOKENS]), 7)[:2]))
        rows.append(("gain_curve_512_positions_d2048 (per-position cho_solve)",
                     *timed(lambda: gain_curve_per_position(unit[:TOKENS]), 3)[:2]))
        for precompute in (True, False):
            def fit():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    return Lasso(alpha=1e-4, fit_intercept=False, tol=1e-4, max_iter=1000,
                                 precompute=precompute).fit(context.T, new)
            med, best, model = timed(fit, 7)
            label = "gram" if precompute else "no_gram"
            rows.append((f"lasso_512_features_2048_samples_{label}", med, best))
            print(f"sklearn lasso {label}: n_iter {model.n_iter_}, "
                  f"{int(np.count_nonzero(model.coef_))} non-zero, dual gap {model.dual_gap_:.3e}")
    print(f"{'task':58s} {'median ms':>10s} {'min ms':>10s}")
    for name, med, best in rows:
        print(f"{name:58s} {1e3 * med:10.2f} {1e3 * best:10.2f}")


if __name__ == "__main__":
    main()
