//! Compute kernels RouteLab's model runs through.
//!
//! Each kernel has a CPU reference implementation here, written for clarity and used as the
//! ground truth for device kernels (behind the `cuda` feature). Kernels take plain slices and
//! plain-data parameters so they can be tested against hand-computed cases without a model.
//!
//! - [`routing`]: MoE router scoring and top-k selection for every routing scheme the supported
//!   families use (softmax or sigmoid scores, correction bias, group-limited selection,
//!   PhiMoE's sparsemixer, top-k normalisation, routed scaling), with expert exclusion for the
//!   `reroute` intervention and the selection margin for near-tie reporting.
//! - [`router_op`]: the same as a candle op on tensors; on CUDA a kernel (`src/cuda/router_topk.cu`)
//!   that keeps routing on the device.
//! - [`attn_stats`]: per-head attention entropy and argmax from a block of probabilities in one
//!   pass (one kernel launch per layer on CUDA).
//! - [`attention_op`]: causal attention whose per-head statistics (entropy, argmax, mass on the
//!   sink and on a span) are computed on the fly; on CUDA (`src/cuda/attention.cu`) with an
//!   online softmax that never stores a score or probability matrix.
//! - [`capture_pack`]: one forward call's capture tensors gathered into one f32 buffer (one
//!   launch on CUDA), so they leave the device in a single copy.
//! - [`softmax`]: attention's scaled, causally masked softmax on the CPU in one pass per row.
//! - [`prompt_attention`]: a prompt's causal attention on the CPU, block by block of queries
//!   from scores to output while the block is in cache, with the head statistics on the way.
//! - [`row_norm`]: row-wise L2 norms (capture's contribution norms) in one launch.
//! - [`matmul`]: `y = x Wᵀ` on the CPU against weights packed in panels at load (f32 or bf16),
//!   for decode and prefill alike, with one fixed summation order per output element.
//! - [`blocks`]: `y = x Wᵀ` straight on GGUF's Q4_K, Q6_K and Q8_0 blocks where the file
//!   stores them (mapped), with 8-bit activations and integer dot products.
//! - [`gated`]: the gated MLP's `silu(gate) ⊙ up` on the CPU in one vectorised pass.
//! - [`launch`]: each CUDA kernel's launch (grid, block, scalar arguments), shared by the ops
//!   and by the CPU emulator that runs the `.cu` sources in tests on machines without a GPU.
// Data from outside the process (model files, notebooks, traces, specs, the network) is never
// unwrapped: a failure is an error naming the file. Tests may (clippy.toml); the few internal
// invariants that expect carry an `allow` with the reason.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod attention_op;
pub mod attn_stats;
pub mod blocks;
pub mod capture_pack;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(test)]
mod emulate;
mod exp;
pub mod gated;
pub mod launch;
pub mod matmul;
pub mod prompt_attention;
pub mod router_op;
pub mod routing;
pub mod row_norm;
mod slices;
pub mod softmax;
#[cfg(test)]
mod test_values;
