// Gathers a forward call's capture tensors (router logits, routes, head statistics, norms, the
// logits) into one f32 buffer in one launch: the CUDA twin of capture_pack.rs's reference.
// Before it, packing was a copy per tensor plus casts (about five launches per MoE layer), which
// on a launch-bound decode step cost more than the capture kernels themselves.
//
// `entries` holds n rows of four u64: the source's device address, its first element in `dst`,
// its element count and its dtype code; rows are sorted by destination and cover [0, total).
// One thread per destination element finds its row by binary search (n is a few hundred at
// most, and the rows stay in cache).
#include <stdint.h>
#ifndef ROUTELAB_EMULATE
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

#define PACK_F32 0
#define PACK_BF16 1
#define PACK_F16 2
#define PACK_U32 3

extern "C" __global__ void capture_pack(const unsigned long long* __restrict__ entries, float* __restrict__ dst, int n, long long total) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total || n <= 0) return;
    // The last row starting at or before i.
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if ((long long)entries[4 * mid + 1] <= i) lo = mid;
        else hi = mid - 1;
    }
    const unsigned long long* e = entries + 4 * lo;
    long long j = i - (long long)e[1];
    const void* src = (const void*)(uintptr_t)e[0];
    float v;
    switch ((int)e[3]) {
        case PACK_BF16: v = __bfloat162float(((const __nv_bfloat16*)src)[j]); break;
        case PACK_F16: v = __half2float(((const __half*)src)[j]); break;
        // Expert ids, exact in f32 below 2^24.
        case PACK_U32: v = (float)((const uint32_t*)src)[j]; break;
        default: v = ((const float*)src)[j]; break;
    }
    dst[i] = v;
}
