"""Small inputs for the end-to-end tests of the binary (tests/probes_cli.rs).

Run from the repository root:  python scripts/golden/e2e_fixtures.py
(numpy only; `cargo xtask golden` runs it with the pinned reference stack).

orthonormal_6x16.npy: 6 orthonormal rows in R^16 (the Q factor of a seeded
Gaussian matrix). With no preprocessing its covariance has six equal
eigenvalues 1/6, so every entropy quantity has a closed form, and each row
is orthogonal to the rows before it, so its GP posterior variance is 1.
"""
import numpy as np

rng = np.random.default_rng(20240205)
q, _ = np.linalg.qr(rng.standard_normal((16, 6)))
rows = np.ascontiguousarray(q.T)  # 6 x 16, orthonormal rows
assert np.allclose(rows @ rows.T, np.eye(6), atol=1e-12)
np.save("tests/fixtures/orthonormal_6x16.npy", rows.astype(np.float64))
