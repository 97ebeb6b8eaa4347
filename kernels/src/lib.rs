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

pub mod attn_stats;
pub mod routing;
pub mod router_op;
#[cfg(feature = "cuda")]
pub mod cuda;
