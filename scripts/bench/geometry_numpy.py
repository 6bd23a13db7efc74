#!/usr/bin/env python3
"""numpy timings of the representation-geometry benchmarks of
crates/lmgeo-probes/benches/geometry.rs (linear CKA and mutual kNN on two
2000 x 2048 matrices), on exactly the same inputs: the counter-based
SplitMix64 stream of benches/probes.rs, reproduced bit for bit (the
construction is elementwise, so no BLAS rounding enters the inputs). BLAS is
limited to 2 threads, like faer's rayon pool on the development machine.

Run from the repository root, with any venv that has numpy and threadpoolctl
(for example the one scripts/golden/geometry.py documents):

    /tmp/pyref-geo/bin/python scripts/bench/geometry_numpy.py

and the Rust side with

    RAYON_NUM_THREADS=2 cargo bench --profile dev -p lmgeo-probes --bench geometry

Each task is timed in the forms one would write in numpy; the fastest form
is the fair baseline:

* linear CKA, feature space: ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)
  (three d x d products);
* linear CKA, Gram space: K = Xc Xc^T, L = Yc Yc^T, <K, L>_F / (||K|| ||L||)
  (numpy turns `a @ a.T` into one symmetric rank-k update, half the flops);
* mutual kNN with the exact tie rule of the Rust code (stable argsort of
  every row: ties go to the lower index) and with `argpartition` (the usual
  fast top-k, which has no defined tie order).

The script also prints both scores, which the Rust bench prints too, as a
check that both sides computed the same thing. With `--criterion DIR` (the
cargo target directory of the Rust run) it prints the Rust figures from
criterion's raw samples in the same form (median and minimum per
iteration), so that alternating rounds of both can be compared.
"""

import argparse
import json
import os
import pathlib
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

ITEMS, HIDDEN, THREADS, K = 2000, 2048, 2, 10


def splitmix64(seed, index):
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (index.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def symmetric_uniform(seed, index):
    return 2.0 * ((splitmix64(seed, index) >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)) - 1.0


def hidden_like(n, d, base):
    """Token noise + a shared direction + one of 8 topic directions (seeds
    base, base + 1, base + 2), as benches/probes.rs with base = 1."""
    i = np.arange(n, dtype=np.uint64)[:, None]
    j = np.arange(d, dtype=np.uint64)[None, :]
    noise = symmetric_uniform(base, i * np.uint64(d) + j)
    shared = symmetric_uniform(base + 1, j)
    topic = symmetric_uniform(base + 2, (i % np.uint64(8)) * np.uint64(d) + j)
    return noise + 0.5 * shared + 0.5 * topic


def inputs():
    x = hidden_like(ITEMS, HIDDEN, 1)
    # A second representation that shares the first one's structure.
    y = hidden_like(ITEMS, HIDDEN, 11) + x
    return x, y


def cka_feature_space(x, y):
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    cross = np.linalg.norm(xc.T @ yc) ** 2
    return cross / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))


def cka_gram_space(x, y):
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    k = xc @ xc.T
    l = yc @ yc.T
    return np.vdot(k, l) / (np.linalg.norm(k) * np.linalg.norm(l))


def neighbours(z, k, stable):
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = zn @ zn.T
    np.fill_diagonal(s, -np.inf)
    if stable:
        return np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.argpartition(-s, k, axis=1)[:, :k]


def mutual_knn(x, y, k, stable):
    a, b = neighbours(x, k, stable), neighbours(y, k, stable)
    shared = [len(np.intersect1d(a[i], b[i], assume_unique=True)) for i in range(len(a))]
    return float(np.mean(shared)) / k


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), result


def criterion_rows(target):
    rows = []
    for sample in sorted((pathlib.Path(target) / "criterion" / "geometry").glob("*/new/sample.json")):
        data = json.loads(sample.read_text())
        per_iter = [t / n / 1e9 for t, n in zip(data["times"], data["iters"])]  # seconds
        rows.append((f"rust {sample.parent.parent.name}", statistics.median(per_iter), min(per_iter), None))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--criterion", help="cargo target directory of the Rust bench run")
    args = parser.parse_args()
    print("OPENBLAS_CORETYPE =", os.environ.get("OPENBLAS_CORETYPE"),
          " OPENBLAS_L2_SIZE =", os.environ.get("OPENBLAS_L2_SIZE"))
    x, y = inputs()
    rows = []
    with threadpool_limits(limits=THREADS):
        for lib in threadpool_info():
            print("BLAS:", {k: lib.get(k) for k in ("internal_api", "version", "architecture",
                                                     "num_threads")})
        for name, fn, reps in [
            ("linear_cka_2000x2048 (feature space)", lambda: cka_feature_space(x, y), 7),
            ("linear_cka_2000x2048 (Gram space)", lambda: cka_gram_space(x, y), 7),
            ("mutual_knn_k10_2000x2048 (stable argsort)", lambda: mutual_knn(x, y, K, True), 5),
            ("mutual_knn_k10_2000x2048 (argpartition)", lambda: mutual_knn(x, y, K, False), 5),
        ]:
            med, best, value = timed(fn, reps)
            rows.append((name, med, best, value))
    if args.criterion:
        rows = criterion_rows(args.criterion) + rows
    print(f"{'task':46s} {'median ms':>10s} {'min ms':>10s}  value")
    for name, med, best, value in rows:
        shown = "" if value is None else f"{value:.15g}"
        print(f"{name:46s} {1e3 * med:10.2f} {1e3 * best:10.2f}  {shown}")


if __name__ == "__main__":
    main()
