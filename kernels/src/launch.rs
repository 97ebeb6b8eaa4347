//! How each CUDA kernel is launched: its name, grid, block and scalar arguments, built by the op
//! that owns the kernel and used both by the op's `cuda_fwd` and by the host emulator
//! (`emulate.rs`, tests only), which compiles the very `.cu` sources for the CPU. One
//! description for both means the emulator checks the launch the GPU will get, not a copy of it.
//!
//! Every kernel takes its buffers first, in the op's order, then these scalars.

/// A scalar kernel argument, in the kernel's parameter order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    I32(i32),
    I64(i64),
    F32(f32),
    U64(u64),
}

/// One kernel launch.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The `extern "C"` kernel name.
    pub kernel: &'static str,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    /// Arguments after the buffers.
    pub scalars: Vec<Scalar>,
}

impl Launch {
    /// A row-wise kernel taking `(rows, cols)`: one block of 256 threads per row.
    pub fn per_row(kernel: &'static str, rows: usize, cols: usize) -> Launch {
        Launch { kernel, grid: (rows as u32, 1, 1), block: (256, 1, 1), scalars: vec![Scalar::I32(rows as i32), Scalar::I32(cols as i32)] }
    }
}

#[cfg(feature = "cuda")]
impl Launch {
    pub fn config(&self) -> candle_core::cuda_backend::cudarc::driver::LaunchConfig {
        candle_core::cuda_backend::cudarc::driver::LaunchConfig { grid_dim: self.grid, block_dim: self.block, shared_mem_bytes: 0 }
    }

    /// Pushes the scalars after the buffers the caller has pushed.
    pub fn push_scalars<'a>(&'a self, b: &mut candle_core::cuda_backend::cudarc::driver::LaunchArgs<'a>) {
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        for s in &self.scalars {
            match s {
                Scalar::I32(v) => b.arg(v),
                Scalar::I64(v) => b.arg(v),
                Scalar::F32(v) => b.arg(v),
                Scalar::U64(v) => b.arg(v),
            };
        }
    }
}
