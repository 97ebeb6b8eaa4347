// Per-row attention statistics from probabilities, one block per row: the CUDA twin of
// attn_stats.rs's reference. Replaces five elementwise/reduction launches (clamp, log, mul,
// sum, argmax) per layer with one, and reads each probability once.
//
// Output per row: entropy -sum p ln max(p, 1e-30) (nats, >= 0) and the first most-attended
// position (as f32; exact below 2^24).
#include <stdint.h>
#include <math.h>

#define THREADS 256

extern "C" __global__ void attn_stats_f32(const float* __restrict__ probs, float* __restrict__ out, int rows, int cols) {
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* p = probs + (size_t)r * cols;
    __shared__ float s_ent[THREADS];
    __shared__ float s_val[THREADS];
    __shared__ int s_idx[THREADS];
    float ent = 0.0f, best = -INFINITY;
    int bi = cols;  // "none yet"; any real index is smaller
    for (int j = threadIdx.x; j < cols; j += THREADS) {
        float x = p[j];
        ent += x * logf(fminf(fmaxf(x, 1e-30f), 1.0f));
        if (x > best || (x == best && j < bi)) { best = x; bi = j; }
    }
    s_ent[threadIdx.x] = ent;
    s_val[threadIdx.x] = best;
    s_idx[threadIdx.x] = bi;
    __syncthreads();
    for (int stride = THREADS / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            int o = threadIdx.x + stride;
            s_ent[threadIdx.x] += s_ent[o];
            float v = s_val[o];
            int i = s_idx[o];
            if (v > s_val[threadIdx.x] || (v == s_val[threadIdx.x] && i < s_idx[threadIdx.x])) {
                s_val[threadIdx.x] = v;
                s_idx[threadIdx.x] = i;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        out[2 * r] = fabsf(s_ent[0]);
        out[2 * r + 1] = (float)(s_idx[0] < cols ? s_idx[0] : 0);
    }
}
