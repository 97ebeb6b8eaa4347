//! Reading a CPU tensor's elements as a plain slice, for the kernels that work on slices.

use candle_core::{CpuStorage, Storage, Tensor};

/// Runs `f` on the elements of `t` in row-major order (made contiguous first); `t` must be
/// f32 on the CPU, else an error naming `op`.
pub(crate) fn with_f32_slice<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(v)) = &*storage else {
        candle_core::bail!("{op}: takes f32 on the CPU, not {:?} on {:?}", t.dtype(), t.device())
    };
    Ok(f(&v[layout.start_offset()..layout.start_offset() + t.elem_count()]))
}
