//! PTX of the CUDA kernels in `src/cuda/*.cu`, compiled by build.rs for `CUDA_COMPUTE_CAP`.

/// `router_topk.cu`: [`crate::router_op::RouterTopK`]'s kernel.
pub const ROUTER_TOPK: &str = include_str!(concat!(env!("OUT_DIR"), "/router_topk.ptx"));

/// The kernel keeps a router row in per-thread arrays of this size (DeepSeek-V3 has 256).
pub const MAX_ROUTER_EXPERTS: usize = 512;

/// `attn_stats.cu`: [`crate::attn_stats::AttnStats`]'s kernel.
pub const ATTN_STATS: &str = include_str!(concat!(env!("OUT_DIR"), "/attn_stats.ptx"));

/// `attention.cu`: [`crate::attention_op::AttentionStats`]'s kernels (f32, bf16, f16).
pub const ATTENTION: &str = include_str!(concat!(env!("OUT_DIR"), "/attention.ptx"));

/// `row_norm.cu`: [`crate::row_norm::RowNorm`]'s kernels (f32, bf16, f16).
pub const ROW_NORM: &str = include_str!(concat!(env!("OUT_DIR"), "/row_norm.ptx"));

/// `capture_pack.cu`: [`crate::capture_pack`]'s gather of capture tensors into one buffer.
pub const CAPTURE_PACK: &str = include_str!(concat!(env!("OUT_DIR"), "/capture_pack.ptx"));
