#!/usr/bin/env bash
# On the GPU machine, from the repository root, with target/gpu/routelab.xz carried (see
# gpu-pack.sh): CUDA against the CPU on every fixture family, then decode speed beside
# transformers. Output goes to the terminal and to $OUT (the device tool brings $OUT back).
#
#   bash bench/gpu-run.sh [selftest|bench|all] [extra gpu_bench.py arguments]
set -uo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"; shift || true
out="${OUT:-/tmp/rl-gpu-out}"
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ ! -x target/gpu/routelab ]; then
  xz -dkf target/gpu/routelab.xz && chmod +x target/gpu/routelab || { echo "no target/gpu/routelab.xz: carry it (bash bench/gpu-pack.sh)"; exit 2; }
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
status=0
if [ "$what" = selftest ] || [ "$what" = all ]; then
  target/gpu/routelab selftest --device cuda 2>&1 | tee "$out/selftest.txt"
  status=${PIPESTATUS[0]}
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  /opt/torch/.venv/bin/python3 bench/gpu_bench.py --routelab target/gpu/routelab --out "$out/bench" "$@" 2>&1 | tee "$out/bench.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
exit $status
