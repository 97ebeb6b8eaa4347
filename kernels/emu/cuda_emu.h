// Just enough of CUDA to run RouteLab's kernels on the CPU, for tests on machines without a GPU.
//
// Blocks run one after another; the threads of a block run as real threads, so `__syncthreads`
// is a real barrier and shared memory (`static` here: one copy, used by one block at a time) is
// really shared. A thread that returns leaves the barrier (`arrive_and_drop`), as an exited CUDA
// thread no longer holds a block barrier. What this cannot show: races that only a GPU's memory
// model exposes, warp-synchronous code (there is none), and speed.
#pragma once
#define ROUTELAB_EMULATE 1

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <math.h>
#include <stdint.h>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;
inline thread_local std::barrier<>* emu_barrier = nullptr;

inline void __syncthreads() { emu_barrier->arrive_and_wait(); }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }

struct __nv_bfloat16 {
    uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 b) {
    uint32_t u = (uint32_t)b.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

struct __half {
    uint16_t bits;
};
inline float __half2float(__half h) {
    uint32_t sign = (uint32_t)(h.bits >> 15) << 31;
    int exp = (h.bits >> 10) & 0x1f;
    uint32_t man = h.bits & 0x3ff;
    float mag;
    if (exp == 0) mag = std::ldexp((float)man, -24);
    else if (exp == 31) mag = man ? NAN : INFINITY;
    else mag = std::ldexp((float)(man | 0x400), exp - 25);
    uint32_t u;
    std::memcpy(&u, &mag, 4);
    u |= sign;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Runs `kernel` (a closure calling the __global__ function) over the grid.
template <class F>
void emu_launch(dim3 grid, dim3 block, F kernel) {
    unsigned n = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                std::barrier<> bar((std::ptrdiff_t)n);
                std::vector<std::thread> threads;
                threads.reserve(n);
                for (unsigned tz = 0; tz < block.z; ++tz)
                    for (unsigned ty = 0; ty < block.y; ++ty)
                        for (unsigned tx = 0; tx < block.x; ++tx)
                            threads.emplace_back([&, tx, ty, tz, bx, by, bz] {
                                threadIdx = {tx, ty, tz};
                                blockIdx = {bx, by, bz};
                                blockDim = block;
                                gridDim = grid;
                                emu_barrier = &bar;
                                kernel();
                                bar.arrive_and_drop();
                            });
                for (auto& t : threads) t.join();
            }
}
