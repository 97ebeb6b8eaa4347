//! What a decoder layer's blocks need besides their input: one context per layer and call.

use candle_core::Tensor;

use crate::cache::LayerCache;
use crate::capture::{LayerCapture, LayerPlan};
use crate::interventions::LayerEdits;
use crate::layers::attend::MaskCache;
use crate::rope::Rope;

/// The rotary tables of one forward call, cast to the model's dtype once for all layers.
pub struct RotaryTables<'a> {
    pub rope: &'a Rope,
    pub cos: Tensor,
    pub sin: Tensor,
}

/// One layer's context in one forward call: what to record, what to change, its cache, and the
/// call's shared tables. Blocks push what they record into `capture`.
pub struct LayerCtx<'a> {
    pub layer: usize,
    pub edits: &'a LayerEdits,
    pub cache: &'a mut LayerCache,
    pub rotary: &'a RotaryTables<'a>,
    pub masks: &'a MaskCache,
    /// Attention through the fused kernel's path even on the CPU (its reference), to check the
    /// GPU path's code on a machine without one.
    pub fused_attention: bool,
    /// Keep per-head attention outputs `[T, H, dv]` (for `mean` head interventions).
    pub keep_head_outputs: bool,
    /// Absolute position of this call's first row.
    pub start: usize,
    /// Routing taken from a recorded run, when this layer replays.
    pub replay: Option<&'a crate::replay::LayerReplay>,
    /// Activations copied in from another run, when this layer has some.
    pub patch: Option<&'a crate::patch::LayerPatch>,
    pub capture: LayerCapture,
}

impl LayerCtx<'_> {
    pub fn plan(&self) -> LayerPlan {
        self.capture.plan
    }
}
