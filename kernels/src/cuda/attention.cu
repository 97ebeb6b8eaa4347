// Causal (optionally sliding-window) attention with the per-head statistics computed on the fly:
// the CUDA twin of attention_op.rs's reference. No score or probability matrix is stored, not even
// one query block's: keys stream through in tiles with an online softmax (Milakov & Gimelshein
// 2018; the FlashAttention recurrence), and the statistics ride on the same recurrence.
//
// One block per (query, head); ATT_THREADS threads. Per tile of ATT_THREADS keys each thread
// scores one key; block reductions give the tile's max (and its first argmax) and the sums below;
// then each thread owns output dimensions and accumulates sum_j e_j v_j over the tile.
//
// Running state, relative to the running max m (rescaled by exp(m - m') when m grows):
//   l  = sum_j e_j,             e_j = exp(s_j - m)
//   a  = sum_j e_j (s_j - m)    entropy = ln l - a / l  (= -sum p ln p, p = e / l)
//   z  = e_0                    mass on key 0 (the attention sink) = z / l
//   w  = sum_{j in span} e_j    mass on the span = w / l
// Keeping a relative to m avoids the cancellation of ln l + m - (sum e s) / l when scores are
// large and attention is sharp.
//
// A head marked uniform (the `uniform` head intervention) scores every visible key 0, which is
// exactly the uniform distribution over them.
//
// Output row per (head, query), f32: dv outputs, then entropy, argmax (as f32), sink, span.
//
// Split keys (flash-decoding): when few (query, head) blocks would leave most of the GPU idle,
// as in decoding over a long context, `attention_partial_*` runs gridDim.z blocks per
// (query, head), each over one chunk of chunk_len key positions, and writes its raw running
// state (m, l, a, z, w, best score, its position, dv accumulators); `attention_combine` merges
// the chunks' states with the same rescaling and writes the row above.
#include <stdint.h>
#include <math.h>
#ifndef ROUTELAB_EMULATE
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

#define ATT_THREADS 128
#define ATT_MAX_D 512
#define ATT_MAX_DV 512
#define ATT_ACC (ATT_MAX_DV / ATT_THREADS)

__device__ __forceinline__ float att_load(float x) { return x; }
__device__ __forceinline__ float att_load(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float att_load(__half x) { return __half2float(x); }

template <typename T>
__device__ void attention_stats(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, float* __restrict__ out,
    int heads, int kv_heads, int tq, int d, int dv, int64_t k_head_stride, int64_t k_row_stride,
    int64_t v_head_stride, int64_t v_row_stride, float scale, int q_start, int window, int span_start,
    int span_end, uint64_t uniform0, uint64_t uniform1, uint64_t uniform2, uint64_t uniform3, int chunk_len)
{
    const int t = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    const int kvh = h / (heads / kv_heads);
    const int pos = q_start + t;  // the query's absolute position: keys 0..=pos exist
    const int visible_lo = window > 0 ? max(0, pos - window + 1) : 0;
    // This block's keys: all visible ones, or (chunk_len > 0) those in chunk blockIdx.z.
    const int lo = chunk_len > 0 ? max(visible_lo, (int)blockIdx.z * chunk_len) : visible_lo;
    const int hi = chunk_len > 0 ? min(pos, ((int)blockIdx.z + 1) * chunk_len - 1) : pos;
    const uint64_t word = h < 64 ? uniform0 : h < 128 ? uniform1 : h < 192 ? uniform2 : uniform3;
    const bool uniform = (word >> (h & 63)) & 1;

    __shared__ float q_s[ATT_MAX_D];
    __shared__ float red_v[ATT_THREADS];
    __shared__ int red_i[ATT_THREADS];
    __shared__ float red_s[4][ATT_THREADS];
    __shared__ float e_s[ATT_THREADS];

    const T* qrow = q + ((size_t)h * tq + t) * d;
    for (int c = tid; c < d; c += ATT_THREADS) q_s[c] = att_load(qrow[c]);
    __syncthreads();
    const T* kh = k + (size_t)kvh * k_head_stride;
    const T* vh = v + (size_t)kvh * v_head_stride;

    float m = -INFINITY, l = 0.0f, a = 0.0f, z = 0.0f, w = 0.0f, best = -INFINITY;
    int best_i = lo;
    float acc[ATT_ACC];
    for (int c = 0; c < ATT_ACC; ++c) acc[c] = 0.0f;

    for (int j0 = lo; j0 <= hi; j0 += ATT_THREADS) {
        const int j = j0 + tid;
        const bool live = j <= hi;
        float s = -INFINITY;
        if (live) {
            if (uniform) {
                s = 0.0f;
            } else {
                const T* krow = kh + (size_t)j * k_row_stride;
                float dot = 0.0f;
                for (int c = 0; c < d; ++c) dot += q_s[c] * att_load(krow[c]);
                s = dot * scale;
            }
        }
        // Tile max and its first position.
        red_v[tid] = s;
        red_i[tid] = live ? j : 0x7fffffff;
        __syncthreads();
        for (int stride = ATT_THREADS / 2; stride > 0; stride >>= 1) {
            if (tid < stride) {
                float ov = red_v[tid + stride];
                int oi = red_i[tid + stride];
                if (ov > red_v[tid] || (ov == red_v[tid] && oi < red_i[tid])) {
                    red_v[tid] = ov;
                    red_i[tid] = oi;
                }
            }
            __syncthreads();
        }
        const float tile_max = red_v[0];
        const int tile_arg = red_i[0];
        const float m_new = fmaxf(m, tile_max);
        const float e = live ? expf(s - m_new) : 0.0f;
        e_s[tid] = e;
        red_s[0][tid] = e;
        red_s[1][tid] = live ? e * (s - m_new) : 0.0f;
        red_s[2][tid] = j == 0 ? e : 0.0f;
        red_s[3][tid] = (j >= span_start && j < span_end) ? e : 0.0f;
        __syncthreads();
        for (int stride = ATT_THREADS / 2; stride > 0; stride >>= 1) {
            if (tid < stride)
                for (int r = 0; r < 4; ++r) red_s[r][tid] += red_s[r][tid + stride];
            __syncthreads();
        }
        // Every thread updates its own copy of the (block-uniform) running state.
        const float corr = l > 0.0f ? expf(m - m_new) : 0.0f;
        a = (l > 0.0f ? corr * (a + (m - m_new) * l) : 0.0f) + red_s[1][0];
        l = corr * l + red_s[0][0];
        z = corr * z + red_s[2][0];
        w = corr * w + red_s[3][0];
        if (tile_max > best) {
            best = tile_max;
            best_i = tile_arg;
        }
        m = m_new;
        const int n = min(ATT_THREADS, hi - j0 + 1);
        for (int c = 0; c < ATT_ACC; ++c) {
            const int dd = tid + c * ATT_THREADS;
            if (dd < dv) {
                float x = acc[c] * corr;
                for (int jj = 0; jj < n; ++jj) x += e_s[jj] * att_load(vh[(size_t)(j0 + jj) * v_row_stride + dd]);
                acc[c] = x;
            }
        }
        // The next tile overwrites the shared arrays.
        __syncthreads();
    }

    if (chunk_len > 0) {
        // Raw state for attention_combine (an empty chunk leaves l = 0 and m = -inf).
        float* st = out + (((size_t)h * tq + t) * gridDim.z + blockIdx.z) * (dv + 7);
        for (int c = 0; c < ATT_ACC; ++c) {
            const int dd = tid + c * ATT_THREADS;
            if (dd < dv) st[7 + dd] = acc[c];
        }
        if (tid == 0) {
            st[0] = m; st[1] = l; st[2] = a; st[3] = z; st[4] = w; st[5] = best; st[6] = (float)best_i;
        }
        return;
    }
    float* o = out + ((size_t)h * tq + t) * (dv + 4);
    const float inv = 1.0f / l;
    for (int c = 0; c < ATT_ACC; ++c) {
        const int dd = tid + c * ATT_THREADS;
        if (dd < dv) o[dd] = acc[c] * inv;
    }
    if (tid == 0) {
        o[dv] = fmaxf(logf(l) - a * inv, 0.0f);
        o[dv + 1] = (float)best_i;
        o[dv + 2] = z * inv;
        o[dv + 3] = w * inv;
    }
}

// Merges the chunks of one (query, head): grid (T, H), ATT_THREADS threads over dv.
extern "C" __global__ void attention_combine(const float* __restrict__ ws, float* __restrict__ out, int tq, int dv, int chunks) {
    const int t = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    const float* st = ws + ((size_t)h * tq + t) * chunks * (dv + 7);
    float m = -INFINITY;
    for (int c = 0; c < chunks; ++c)
        if (st[c * (dv + 7) + 1] > 0.0f) m = fmaxf(m, st[c * (dv + 7)]);
    float l = 0.0f, a = 0.0f, z = 0.0f, w = 0.0f, best = -INFINITY;
    int best_i = 0;
    bool first = true;
    for (int c = 0; c < chunks; ++c) {
        const float* s = st + c * (dv + 7);
        if (!(s[1] > 0.0f)) continue;  // no visible key in this chunk
        const float f = expf(s[0] - m);
        l += f * s[1];
        a += f * (s[2] + (s[0] - m) * s[1]);
        z += f * s[3];
        w += f * s[4];
        // Chunks are in key order: only a strictly better score replaces, ties keep the first.
        if (first || s[5] > best) {
            best = s[5];
            best_i = (int)s[6];
            first = false;
        }
    }
    float* o = out + ((size_t)h * tq + t) * (dv + 4);
    const float inv = 1.0f / l;
    for (int dd = tid; dd < dv; dd += ATT_THREADS) {
        float x = 0.0f;
        for (int c = 0; c < chunks; ++c) {
            const float* s = st + c * (dv + 7);
            if (s[1] > 0.0f) x += expf(s[0] - m) * s[7 + dd];
        }
        o[dd] = x * inv;
    }
    if (tid == 0) {
        o[dv] = fmaxf(logf(l) - a * inv, 0.0f);
        o[dv + 1] = (float)best_i;
        o[dv + 2] = z * inv;
        o[dv + 3] = w * inv;
    }
}

#define ATTENTION_KERNEL(NAME, T)                                                                          \
    extern "C" __global__ void NAME(                                                                       \
        const T* q, const T* k, const T* v, float* out, int heads, int kv_heads, int tq, int d, int dv,    \
        int64_t k_head_stride, int64_t k_row_stride, int64_t v_head_stride, int64_t v_row_stride,          \
        float scale, int q_start, int window, int span_start, int span_end, uint64_t uniform0,             \
        uint64_t uniform1, uint64_t uniform2, uint64_t uniform3, int chunk_len)                            \
    {                                                                                                      \
        attention_stats<T>(q, k, v, out, heads, kv_heads, tq, d, dv, k_head_stride, k_row_stride,          \
                           v_head_stride, v_row_stride, scale, q_start, window, span_start, span_end,      \
                           uniform0, uniform1, uniform2, uniform3, chunk_len);                             \
    }

// chunk_len 0: one block per (query, head) writes the final row; > 0: raw chunk states.
ATTENTION_KERNEL(attention_stats_f32, float)
ATTENTION_KERNEL(attention_stats_bf16, __nv_bfloat16)
ATTENTION_KERNEL(attention_stats_f16, __half)
