#!/usr/bin/env bash
# Source this to build the `cuda` feature on a machine without a GPU:
#   source .ci/cuda-env.sh
# It installs NVIDIA's CUDA toolkit pieces from PyPI (nvcc, headers, cuBLAS, cuRAND, NVRTC) into a
# venv under ~/.cache/routelab-cuda13.0, adds a link-time stub for the driver library
# (libcuda.so; the real one comes with the GPU's driver at run time), and exports what candle's and
# cudarc's build scripts read. Builds target sm_90 (H100/H200) unless CUDA_COMPUTE_CAP is set.
# 13.0 matches the lent GPU machines' driver (580, CUDA 13.0): PTX from a newer nvcc fails there with
# CUDA_ERROR_UNSUPPORTED_PTX_VERSION, PTX from an older one is fine.
venv=$HOME/.cache/routelab-cuda13.0
pkgs='nvidia-cuda-nvcc==13.0.* nvidia-cuda-crt==13.0.* nvidia-nvvm==13.0.* nvidia-cuda-runtime==13.0.* nvidia-cuda-cccl==13.0.* nvidia-cuda-nvrtc==13.0.* nvidia-cublas==13.1.* nvidia-curand==10.4.*'
sub=nvidia/cu13
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q $pkgs || { echo "cuda-env: pip install failed" >&2; return 1 2>/dev/null || exit 1; }
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
root=$site/$sub
stub=$venv/stub
if [ ! -f "$stub/libcuda.so" ]; then
  mkdir -p "$stub"
  inc=$(dirname "$(find "$site/nvidia" -name cuda.h | head -1)")
  grep -ohE '\bcu[A-Z][A-Za-z0-9_]*\b' "$inc/cuda.h" | sort -u | awk '{print "void "$1"(void){}"}' > "$stub/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub/libcuda.so" "$stub/stub.c"
  for l in cublas cublasLt curand nvrtc cudart; do
    f=$(find "$site/nvidia" -name "lib$l.so.*" | sort | head -1); [ -n "$f" ] && ln -sf "$f" "$stub/lib$l.so"
  done
fi
export PATH=$root/bin:$PATH CUDA_ROOT=$root CUDA_PATH=$root
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$stub${LIBRARY_PATH:+:$LIBRARY_PATH}
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-L $stub"
echo "cuda-env: nvcc $(nvcc --version | sed -n 4p | sed 's/.*release //'), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
