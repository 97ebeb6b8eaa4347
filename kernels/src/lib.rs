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

pub mod routing;
