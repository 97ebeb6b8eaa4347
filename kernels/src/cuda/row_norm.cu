// Row-wise L2 norms, sqrt(sum_j x_j^2) in f32, one block per row: the CUDA twin of
// row_norm.rs's reference. Capture's contribution norms were four launches each (cast, square,
// sum, sqrt) and now are one.
#include <stdint.h>
#include <math.h>
#ifndef ROUTELAB_EMULATE
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

#define NORM_THREADS 256

__device__ __forceinline__ float norm_load(float x) { return x; }
__device__ __forceinline__ float norm_load(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float norm_load(__half x) { return __half2float(x); }

template <typename T>
__device__ void row_norm(const T* __restrict__ x, float* __restrict__ out, int rows, int cols) {
    int r = blockIdx.x;
    if (r >= rows) return;
    const T* row = x + (size_t)r * cols;
    __shared__ float partial[NORM_THREADS];
    float s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += NORM_THREADS) {
        float v = norm_load(row[j]);
        s += v * v;
    }
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int stride = NORM_THREADS / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[r] = sqrtf(partial[0]);
}

extern "C" __global__ void row_norm_f32(const float* x, float* out, int rows, int cols) { row_norm<float>(x, out, rows, cols); }
extern "C" __global__ void row_norm_bf16(const __nv_bfloat16* x, float* out, int rows, int cols) { row_norm<__nv_bfloat16>(x, out, rows, cols); }
extern "C" __global__ void row_norm_f16(const __half* x, float* out, int rows, int cols) { row_norm<__half>(x, out, rows, cols); }
