#!/usr/bin/env python3
"""Median and minimum time per iteration of the lmgeo-probes criterion
benchmarks, read from criterion's raw samples, in the same form as
probes_reference.py prints (minimum is the figure least disturbed by other
load on a shared machine).

    python3 scripts/bench/criterion_summary.py [CARGO_TARGET_DIR]

CARGO_TARGET_DIR defaults to $CARGO_TARGET_DIR, then ./target.
"""

import json
import os
import pathlib
import statistics
import sys

target = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", "target"))
group = target / "criterion" / "probes"
print(f"{'task':58s} {'median ms':>10s} {'min ms':>10s}")
for sample in sorted(group.glob("*/new/sample.json")):
    data = json.loads(sample.read_text())
    per_iter = [t / n for t, n in zip(data["times"], data["iters"])]  # nanoseconds
    name = sample.parent.parent.name
    print(f"{name:58s} {statistics.median(per_iter) / 1e6:10.2f} {min(per_iter) / 1e6:10.2f}")
