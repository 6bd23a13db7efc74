#!/usr/bin/env bash
# GPU figures for crates/lmgeo-models/BENCHMARKS.md, on a machine with a CUDA
# GPU, nvcc and the Python reference stack (.pyref, see scripts/golden/requirements.txt):
# the CPU/GPU parity tests, then lmgeo and transformers side by side on the
# same GPU. Usage: scripts/bench/gpu.sh [TOKENS]   (default 512)
set -euo pipefail
cd "$(dirname "$0")/../.."
tokens="${1:-512}"
py="${LMGEO_PYREF:-.pyref}/bin/python"
nvidia-smi -L
LMGEO_TEST_CUDA=1 cargo test --release -p lmgeo-models --features cuda --test cuda_parity -- --nocapture
cargo run --release -p lmgeo-models --features cuda --example bench_gguf -- --device cuda --tokens "$tokens" --texts 8
"$py" scripts/bench/models_gguf_transformers.py --device cuda --tokens "$tokens" --texts 8
cargo run --release -p lmgeo-models --features cuda --example bench_forward -- --device cuda --tokens "$tokens" minilm pythia-160m-random
"$py" scripts/bench/models_transformers.py --device cuda --tokens "$tokens" minilm pythia-160m-random
