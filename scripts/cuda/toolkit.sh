#!/usr/bin/env bash
# Minimal CUDA toolkit from PyPI wheels, enough for `cargo check --features cuda`
# (candle-kernels' build.rs runs nvcc even for check; cudarc reads `nvcc --version`).
# No driver or GPU is needed; linking/running still needs a real CUDA install.
#
# Usage: eval "$(scripts/cuda/toolkit.sh)"
# Env:   LMGEO_CUDA_TOOLKIT  cache dir (default ~/.cache/lmgeo/cuda-toolkit)
#        CUDA_COMPUTE_CAP    target arch (default 80; there is no nvidia-smi to ask)
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore  # CI runs as root; the warning is noise

# 13.4 is the newest CUDA that cudarc 0.19.10 knows; its build script panics on 13.5.
CUDA_VER=13.4.92
# No 13.4 CCCL wheel exists; CCCL supports older toolkits of the same major.
CCCL_VER=13.3.5.0.6
WHEELS=(
  "nvidia-cuda-nvcc==$CUDA_VER"     # nvcc, cudafe++, ptxas, fatbinary
  "nvidia-nvvm==$CUDA_VER"          # cicc + libdevice, without which nvcc cannot compile
  "nvidia-cuda-crt==$CUDA_VER"      # include/crt/*, pulled in by cuda_runtime.h
  "nvidia-cuda-runtime==$CUDA_VER"  # cuda.h, cuda_runtime.h, cuda_fp16/bf16/fp8.h
  "nvidia-cuda-cccl==$CCCL_VER"     # cub/thrust/libcu++ used by candle's reduce/moe kernels
)

cache="${LMGEO_CUDA_TOOLKIT:-$HOME/.cache/lmgeo/cuda-toolkit}"
prefix="$cache/$CUDA_VER"
# Every wheel installs into nvidia/cu13/, which is then laid out like /usr/local/cuda.
root="$prefix/nvidia/cu13"

if [[ ! -f "$prefix/.complete" ]]; then
  echo "toolkit.sh: fetching CUDA $CUDA_VER wheels into $cache" >&2
  python3 -m pip download -q --no-deps -d "$cache/wheels" "${WHEELS[@]}" >&2
  rm -rf "$prefix"
  wheels=()
  for spec in "${WHEELS[@]}"; do
    name="${spec%%==*}"
    wheels+=("$cache/wheels/${name//-/_}-${spec##*==}-"*.whl)
  done
  # pip (not unzip) keeps the executable bits on nvcc, cicc and friends.
  python3 -m pip install -q --no-deps --no-index --no-compile --target "$prefix" "${wheels[@]}" >&2
  # cudarc looks for libraries under lib64 as well as lib; match a real toolkit.
  ln -sfn lib "$root/lib64"
  "$root/bin/nvcc" --version >/dev/null
  touch "$prefix/.complete"
  echo "toolkit.sh: ready at $root" >&2
fi

cat <<EOF
export PATH="$root/bin:\$PATH"
export CUDA_HOME="$root"
export CUDA_PATH="$root"
export CUDA_ROOT="$root"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
EOF
