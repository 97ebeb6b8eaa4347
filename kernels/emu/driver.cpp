// Runs one of RouteLab's CUDA kernels on the CPU (see cuda_emu.h), for kernels/src/emulate.rs.
//
// usage: driver IN OUT. IN holds the launch: magic "RLEMU1", kernel name (u32 length + bytes),
// grid and block (3 u32 each), buffers (u32 count; each: u8 kind 0 = f32 input, 1 = 16-bit
// input, 2 = f32 output, 3 = pointer table, 4 = u32 input; u64 element count (rows for a
// table); input data; a table's rows are four u64 whose first names another buffer by index,
// replaced by that buffer's address once all are read), scalars (u32 count; each: u8 kind
// 0 = i32, 1 = i64, 2 = f32, 3 = u64; 8 bytes). OUT receives the output buffers, in order.
#include "cuda_emu.h"

#include "router_topk.cu"
#include "attn_stats.cu"
#include "attention.cu"
#include "row_norm.cu"
#include "capture_pack.cu"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

struct Buffer {
    int kind;
    std::vector<float> f32;
    std::vector<uint16_t> u16;
    std::vector<uint32_t> u32;
    std::vector<uint64_t> table;
    const void* address() const {
        if (kind == 1) return u16.data();
        if (kind == 4) return u32.data();
        if (kind == 3) return table.data();
        return f32.data();
    }
};

struct ScalarArg {
    int kind;
    unsigned char bytes[8];
};

struct Reader {
    std::ifstream in;
    template <class T>
    T get() {
        T x;
        in.read(reinterpret_cast<char*>(&x), sizeof(T));
        if (!in) throw std::runtime_error("truncated launch file");
        return x;
    }
};

struct Args {
    std::vector<Buffer> bufs;
    std::vector<ScalarArg> scalars;
    float* f(size_t i) { return bufs.at(i).f32.data(); }
    template <class T>
    T* h(size_t i) { return reinterpret_cast<T*>(bufs.at(i).u16.data()); }
    unsigned long long* t(size_t i) { return reinterpret_cast<unsigned long long*>(bufs.at(i).table.data()); }
    template <class T>
    T s(size_t i, int kind) {
        const ScalarArg& a = scalars.at(i);
        if (a.kind != kind) throw std::runtime_error("scalar " + std::to_string(i) + " has the wrong type");
        T x;
        std::memcpy(&x, a.bytes, sizeof(T));
        return x;
    }
    int i32(size_t i) { return s<int32_t>(i, 0); }
    int64_t i64(size_t i) { return s<int64_t>(i, 1); }
    float f32(size_t i) { return s<float>(i, 2); }
    uint64_t u64(size_t i) { return s<uint64_t>(i, 3); }
};

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s IN OUT\n", argv[0]);
        return 2;
    }
    try {
        Reader r{std::ifstream(argv[1], std::ios::binary)};
        char magic[6];
        r.in.read(magic, 6);
        if (!r.in || std::memcmp(magic, "RLEMU1", 6) != 0) throw std::runtime_error("not a launch file");
        std::string name(r.get<uint32_t>(), '\0');
        r.in.read(name.data(), name.size());
        dim3 grid, block;
        grid.x = r.get<uint32_t>(); grid.y = r.get<uint32_t>(); grid.z = r.get<uint32_t>();
        block.x = r.get<uint32_t>(); block.y = r.get<uint32_t>(); block.z = r.get<uint32_t>();
        Args a;
        uint32_t nb = r.get<uint32_t>();
        for (uint32_t i = 0; i < nb; ++i) {
            Buffer b;
            b.kind = r.get<uint8_t>();
            uint64_t n = r.get<uint64_t>();
            if (b.kind == 1) {
                b.u16.resize(n);
                r.in.read(reinterpret_cast<char*>(b.u16.data()), n * 2);
            } else if (b.kind == 3) {
                b.table.resize(4 * n);
                r.in.read(reinterpret_cast<char*>(b.table.data()), n * 32);
            } else if (b.kind == 4) {
                b.u32.resize(n);
                r.in.read(reinterpret_cast<char*>(b.u32.data()), n * 4);
            } else {
                b.f32.assign(n, NAN);  // outputs start as NaN: an element the kernel skips shows
                if (b.kind == 0) r.in.read(reinterpret_cast<char*>(b.f32.data()), n * 4);
            }
            if (!r.in) throw std::runtime_error("truncated buffer");
            a.bufs.push_back(std::move(b));
        }
        for (auto& b : a.bufs)
            if (b.kind == 3)
                for (size_t row = 0; row < b.table.size(); row += 4)
                    b.table[row] = (uint64_t)(uintptr_t)a.bufs.at(b.table[row]).address();
        uint32_t ns = r.get<uint32_t>();
        for (uint32_t i = 0; i < ns; ++i) {
            ScalarArg s;
            s.kind = r.get<uint8_t>();
            r.in.read(reinterpret_cast<char*>(s.bytes), 8);
            a.scalars.push_back(s);
        }

        if (name == "router_topk_f32") {
            emu_launch(grid, block, [&] {
                router_topk_f32(a.f(0), a.f(1), a.f(2), a.i32(0), a.i32(1), a.i32(2), a.i32(3), a.i32(4), a.i32(5),
                                a.i32(6), a.i32(7), a.i32(8), a.f32(9), a.i32(10), a.f32(11), a.f32(12));
            });
        } else if (name == "attn_stats_f32") {
            emu_launch(grid, block, [&] { attn_stats_f32(a.f(0), a.f(1), a.i32(0), a.i32(1)); });
        } else if (name == "row_norm_f32") {
            emu_launch(grid, block, [&] { row_norm_f32(a.f(0), a.f(1), a.i32(0), a.i32(1)); });
        } else if (name == "row_norm_bf16") {
            emu_launch(grid, block, [&] { row_norm_bf16(a.h<__nv_bfloat16>(0), a.f(1), a.i32(0), a.i32(1)); });
        } else if (name == "capture_pack") {
            emu_launch(grid, block, [&] { capture_pack(a.t(0), a.f(1), a.i32(0), a.i64(1)); });
        } else if (name == "attention_combine") {
            emu_launch(grid, block, [&] { attention_combine(a.f(0), a.f(1), a.i32(0), a.i32(1), a.i32(2)); });
        } else if (name.rfind("attention_stats_", 0) == 0) {
            auto run = [&](auto kernel, auto q, auto k, auto v) {
                emu_launch(grid, block, [&] {
                    kernel(q, k, v, a.f(3), a.i32(0), a.i32(1), a.i32(2), a.i32(3), a.i32(4), a.i64(5), a.i64(6),
                           a.i64(7), a.i64(8), a.f32(9), a.i32(10), a.i32(11), a.i32(12), a.i32(13), a.u64(14),
                           a.u64(15), a.u64(16), a.u64(17), a.i32(18));
                });
            };
            if (name == "attention_stats_f32") run(attention_stats_f32, a.f(0), a.f(1), a.f(2));
            else if (name == "attention_stats_bf16")
                run(attention_stats_bf16, a.h<__nv_bfloat16>(0), a.h<__nv_bfloat16>(1), a.h<__nv_bfloat16>(2));
            else if (name == "attention_stats_f16")
                run(attention_stats_f16, a.h<__half>(0), a.h<__half>(1), a.h<__half>(2));
            else throw std::runtime_error("unknown kernel " + name);
        } else {
            throw std::runtime_error("unknown kernel " + name);
        }

        std::ofstream out(argv[2], std::ios::binary);
        for (auto& b : a.bufs)
            if (b.kind == 2) out.write(reinterpret_cast<const char*>(b.f32.data()), b.f32.size() * 4);
        if (!out) throw std::runtime_error("cannot write the output file");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "emulator: %s\n", e.what());
        return 1;
    }
    return 0;
}
