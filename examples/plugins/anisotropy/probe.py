"""anisotropy: how much the token vectors of a text point the same way.

For every (text, layer) matrix of an embedding table, the mean cosine
similarity over all pairs of distinct token vectors: near 0 for vectors
spread evenly in every direction, near 1 when they crowd into a narrow cone
(a well-known property of many language models' hidden states).

An lmgeo plugin (docs/plugins.md): lmgeo writes a JSON request to our stdin,
we write the tables it names and a metrics table, and exit 0.
"""

import json
import math
import sys
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq


def anisotropy(vectors, center):
    """Mean pairwise cosine of the rows, or None with fewer than two usable rows.

    With unit rows u_i, the sum over ordered pairs i != j of u_i . u_j is
    |sum_i u_i|^2 - n, so the mean takes one pass instead of n^2 / 2 dot
    products. Zero rows have no direction and are left out.
    """
    if center:
        n = len(vectors)
        mean = [sum(column) / n for column in zip(*vectors)]
        vectors = [[x - m for x, m in zip(row, mean)] for row in vectors]
    units = []
    for row in vectors:
        norm = math.sqrt(math.fsum(x * x for x in row))
        if norm > 0.0:
            units.append([x / norm for x in row])
    k = len(units)
    if k < 2:
        return None
    total = [math.fsum(column) for column in zip(*units)]
    return (math.fsum(x * x for x in total) - k) / (k * (k - 1))


def main():
    request = json.load(sys.stdin)
    params = request["params"]
    (table_input,) = request["inputs"]["embeddings"]
    table = pq.read_table(table_input["path"], columns=["text_id", "layer", "vector"])

    # Rows come grouped by text, then layer, then position.
    matrices = defaultdict(list)
    order = []
    for text_id, layer, vector in zip(
        table.column("text_id").to_pylist(),
        table.column("layer").to_pylist(),
        table.column("vector").to_pylist(),
    ):
        key = (text_id, layer)
        if key not in matrices:
            order.append(key)
        matrices[key].append(vector)

    texts, layers, tokens, values = [], [], [], []
    by_layer = defaultdict(list)
    for text_id, layer in order:
        rows = matrices[(text_id, layer)]
        if len(rows) < params["min_tokens"]:
            continue
        value = anisotropy(rows, params["center"])
        texts.append(text_id)
        layers.append(layer)
        tokens.append(len(rows))
        values.append(value)
        if value is not None:
            by_layer[layer].append(value)

    pq.write_table(
        pa.table(
            {
                "text_id": pa.array(texts, pa.string()),
                "layer": pa.array(layers, pa.int64()),
                "tokens": pa.array(tokens, pa.int64()),
                "anisotropy": pa.array(values, pa.float64()),
            }
        ),
        request["outputs"]["per_text"],
    )

    # Tidy metrics: lmgeo adds them to results.parquet beside every other
    # probe's, with the node's coordinates and parameters.
    metric, value, layer_column, stat = [], [], [], []
    for layer in sorted(by_layer):
        v = by_layer[layer]
        for name, x in (("mean", math.fsum(v) / len(v)), ("n", float(len(v)))):
            metric.append("anisotropy")
            value.append(x)
            layer_column.append(layer)
            stat.append(name)
    pq.write_table(
        pa.table(
            {
                "metric": pa.array(metric, pa.string()),
                "value": pa.array(value, pa.float64()),
                "layer": pa.array(layer_column, pa.int64()),
                "stat": pa.array(stat, pa.string()),
            }
        ),
        f"{request['output_dir']}/metrics.parquet",
    )
    print(f"anisotropy: {len(texts)} matrices", file=sys.stderr)


if __name__ == "__main__":
    main()
