#!/usr/bin/env bash
# Builds the CUDA binary here (no GPU needed) and packs it for the GPU machine:
# target/gpu/routelab.xz (stripped and xz-compressed: ~15 MB, where the binary with line tables
# is ~300 MB and stripped ~90 MB, above the device call's 64 MiB carry limit).
#
#   bash bench/gpu-pack.sh
#   then, with the device tool: carry ["target/gpu/routelab.xz"], command "bash bench/gpu-run.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
(
  set +eu
  source .ci/cuda-env.sh || exit 1
  set -eu
  export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$HOME/.cache/routelab-cuda-target}"
  cargo build --release --features cuda -p routelab
)
mkdir -p target/gpu
bin="${CUDA_TARGET_DIR:-$HOME/.cache/routelab-cuda-target}/release/routelab"
strip -o target/gpu/routelab "$bin"
xz -T0 -6 -f target/gpu/routelab
ls -la target/gpu/routelab.xz
