//! Capture: what a forward pass records about itself, as plain data.
//!
//! A [`CaptureSpec`] says what to record; the decoder fills one [`LayerCapture`] per layer with
//! tensors that stay on the run device until the whole forward call has finished, so a GPU
//! run never synchronises per layer. Head statistics (entropy, argmax) are computed per query
//! block from the probabilities that block already holds: the full `T × T` matrix is only
//! kept when [`CaptureSpec::attention_probs`] asks for it.

use candle_core::Tensor;
use routelab_kernels::attention_op;
use serde::{Deserialize, Serialize};

/// A set of layers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layers {
    #[default]
    None,
    All,
    Only(Vec<usize>),
}

impl Layers {
    pub fn contains(&self, layer: usize) -> bool {
        match self {
            Layers::None => false,
            Layers::All => true,
            Layers::Only(v) => v.contains(&layer),
        }
    }
    pub fn is_none(&self) -> bool {
        matches!(self, Layers::None) || matches!(self, Layers::Only(v) if v.is_empty())
    }
}

/// What to record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureSpec {
    /// Per MoE layer and position: raw router logits, selected experts, combine weights.
    pub router: bool,
    /// Per layer, head and position: attention entropy (nats), most-attended position and
    /// attention on key 0 (the sink).
    pub attention_stats: bool,
    /// With `attention_stats`: also each head's attention mass on these key positions
    /// `[start, end)` (a needle, a passage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_span: Option<(usize, usize)>,
    /// Full attention probabilities `[H, T, T]` for these layers.
    pub attention_probs: Layers,
    /// Residual stream after these decoder layers.
    pub hidden: Layers,
    /// Output logits at every position (the last position's are always returned).
    pub logits: bool,
    /// Per MoE layer and position: L2 norms of the routed, shared-expert and dense-residual
    /// contributions to the residual stream.
    pub contributions: bool,
}

impl Default for CaptureSpec {
    /// Routing and head statistics: cheap enough to leave on.
    fn default() -> Self {
        CaptureSpec {
            router: true,
            attention_stats: true,
            attention_span: None,
            attention_probs: Layers::None,
            hidden: Layers::None,
            logits: false,
            contributions: true,
        }
    }
}

impl CaptureSpec {
    /// Nothing at all: the plain forward.
    pub fn none() -> Self {
        CaptureSpec {
            router: false,
            attention_stats: false,
            attention_span: None,
            attention_probs: Layers::None,
            hidden: Layers::None,
            logits: false,
            contributions: false,
        }
    }

    /// Everything, full attention probabilities and residual streams included.
    pub fn all() -> Self {
        CaptureSpec {
            router: true,
            attention_stats: true,
            attention_span: None,
            attention_probs: Layers::All,
            hidden: Layers::All,
            logits: true,
            contributions: true,
        }
    }

    pub fn is_none(&self) -> bool {
        *self == CaptureSpec::none()
            || (!self.router
                && !self.attention_stats
                && self.attention_probs.is_none()
                && self.hidden.is_none()
                && !self.logits
                && !self.contributions)
    }
}

/// One MoE layer's routing for the positions of one forward call.
#[derive(Clone, Debug)]
pub struct RouterCapture {
    /// `[T, E]` f32, the router's raw outputs before softmax/sigmoid and before interventions.
    pub logits: Tensor,
    /// `[T, K]` u32, strongest first.
    pub experts: Tensor,
    /// `[T, K]` f32, the weights applied (0 for a dropped expert).
    pub weights: Tensor,
}

/// Contribution norms of one MoE layer's parts, `[T]` f32 each.
#[derive(Clone, Debug)]
pub struct Contributions {
    pub routed: Tensor,
    pub shared: Option<Tensor>,
    pub dense_residual: Option<Tensor>,
}

/// One layer's head statistics for T queries, packed `[H, T, 4]` f32 as attention computes
/// them: per head and query its entropy (nats), most-attended key position (as f32, exact below
/// 2^24), attention on key 0 (the sink) and attention on the captured span (0 without one).
/// Packed because a GPU forward then moves a layer's statistics in one piece; the session
/// unpacks them on the host.
#[derive(Clone, Debug)]
pub struct HeadStats {
    pub packed: Tensor,
    /// Whether column 3 holds a span's mass.
    pub has_span: bool,
}

impl HeadStats {
    // The fused attention op's column layout, which the block path builds too.
    pub const ENTROPY: usize = attention_op::ENTROPY;
    pub const ARGMAX: usize = attention_op::ARGMAX;
    pub const SINK: usize = attention_op::SINK;
    pub const SPAN: usize = attention_op::SPAN;
    pub const WIDTH: usize = attention_op::STATS;

    /// Column `c` as `[T, H]` f32.
    pub fn column(&self, c: usize) -> candle_core::Result<Tensor> {
        self.packed.narrow(2, c, 1)?.squeeze(2)?.t()?.contiguous()
    }

    /// `[T, H]` f32, nats.
    pub fn entropy(&self) -> candle_core::Result<Tensor> {
        self.column(Self::ENTROPY)
    }

    /// `[T, H]` u32, absolute key positions.
    pub fn argmax(&self) -> candle_core::Result<Tensor> {
        self.column(Self::ARGMAX)?.to_dtype(candle_core::DType::U32)
    }

    /// `[T, H]` f32.
    pub fn sink(&self) -> candle_core::Result<Tensor> {
        self.column(Self::SINK)
    }

    /// `[T, H]` f32, when a span was captured.
    pub fn span(&self) -> candle_core::Result<Option<Tensor>> {
        self.has_span.then(|| self.column(Self::SPAN)).transpose()
    }
}

/// What one layer recorded during one forward call over T new positions.
#[derive(Clone, Debug, Default)]
pub struct LayerCapture {
    pub router: Option<RouterCapture>,
    /// Head statistics (span: [`CaptureSpec::attention_span`]).
    pub attn_stats: Option<HeadStats>,
    /// `[H, T, S]` f32 where S is every position so far (cache included).
    pub attn_probs: Option<Tensor>,
    /// `[T, D]`.
    pub hidden: Option<Tensor>,
    pub contributions: Option<Contributions>,
}
