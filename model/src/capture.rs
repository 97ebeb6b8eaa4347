//! Capture: what a forward pass records about itself, as plain data.
//!
//! A [`CaptureSpec`] is a set of hook patterns ([`crate::hooks`]) plus the key span whose
//! attention mass `attn.span` measures; it is resolved once per run into a [`CapturePlan`], a
//! set of quantities per layer. Each layer pushes what its plan asks for into one
//! [`LayerCapture`], tensors that stay on the run device until the whole forward call has
//! finished, so a GPU run never synchronises per layer.

use std::collections::{BTreeSet, HashSet};

use candle_core::{DType, Tensor};
use routelab_kernels::attention_op;
use serde::{Deserialize, Serialize};

use crate::hooks::{Elem, HookPattern, HookPoint, Quantity, MAX_LAYERS};

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

/// The named groups of quantities the CLI's `--capture` items and [`CaptureSpec::items`] take.
const GROUPS: &[(&str, &[&str])] = &[
    ("router", &["layers.*.router.logits", "layers.*.router.experts", "layers.*.router.weights"]),
    ("margin", &["layers.*.router.margin"]),
    ("stats", &["layers.*.attn.entropy", "layers.*.attn.argmax", "layers.*.attn.sink", "layers.*.attn.span"]),
    ("contributions", &["layers.*.moe.routed_norm", "layers.*.moe.shared_norm", "layers.*.moe.dense_norm"]),
    ("probs", &["layers.*.attn.probs"]),
    ("hidden", &["layers.*.hidden"]),
    ("outputs", &OUTPUTS),
    ("logits", &["logits"]),
];

/// `outputs`: what each block adds to the residual stream, per head and per expert (what
/// activation patching copies and logit attribution decomposes).
const OUTPUTS: [&str; 6] = [
    "layers.*.attn.z",
    "layers.*.attn.out",
    "layers.*.mlp.out",
    "layers.*.moe.expert_out",
    "layers.*.moe.shared_out",
    "layers.*.moe.dense_out",
];

/// `default`: routing, head statistics and contribution norms, cheap enough to leave on.
const DEFAULT_GROUPS: &[&str] = &["router", "stats", "contributions"];
const ALL_GROUPS: &[&str] = &["router", "margin", "stats", "contributions", "probs", "hidden", "outputs", "logits"];

/// What the `--capture` items are, for help and error messages.
pub const CAPTURE_ITEMS: &str =
    "default, all, none, router, margin, stats, contributions, logits, probs[:LAYERS], hidden[:LAYERS], outputs[:LAYERS], span:A-B, or hook names/patterns (layers.*.attn.entropy)";

/// What to record: hook patterns and the key span `attn.span` measures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CaptureJson")]
pub struct CaptureSpec {
    /// Captured hooks are those some pattern matches.
    pub hooks: Vec<HookPattern>,
    /// Key positions `[start, end)` whose attention mass each head's `attn.span` records (a
    /// needle, a passage); without one, `attn.span` is not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<(usize, usize)>,
}

impl Default for CaptureSpec {
    /// Routing, head statistics and contribution norms.
    fn default() -> Self {
        CaptureSpec::items(DEFAULT_GROUPS)
    }
}

/// For names written in code only (the groups' patterns, checked by a test, and
/// [`CaptureSpec::with`]'s callers); what a user typed goes through [`CaptureSpec::parse_items`].
#[allow(clippy::expect_used)]
fn pattern(s: &str) -> HookPattern {
    s.parse().expect("a hook pattern written in code")
}

impl CaptureSpec {
    /// Nothing at all: the plain forward.
    pub fn none() -> Self {
        CaptureSpec { hooks: vec![], span: None }
    }

    /// Everything, full attention probabilities and residual streams included.
    pub fn all() -> Self {
        CaptureSpec::items(ALL_GROUPS)
    }

    /// The union of named groups (`router`, `stats`, `logits`, …; see [`CAPTURE_ITEMS`]), as
    /// [`Self::with`] takes them.
    pub fn items(groups: &[&str]) -> Self {
        let mut spec = CaptureSpec::none();
        for g in groups {
            spec = spec.with(g);
        }
        spec
    }

    /// Adds a group by name, or one pattern. For names written in code: one that is neither a
    /// group nor a valid pattern panics; what a user typed goes through [`Self::parse_items`].
    pub fn with(mut self, item: &str) -> Self {
        match GROUPS.iter().find(|(name, _)| *name == item) {
            Some((_, patterns)) => patterns.iter().for_each(|p| self.add(pattern(p))),
            None => self.add(pattern(item)),
        }
        self
    }

    /// With `attn.span` over key positions `[start, end)` (and the head statistics it comes with).
    pub fn with_span(self, start: usize, end: usize) -> Self {
        CaptureSpec { span: Some((start, end)), ..self.with("stats") }
    }

    fn add(&mut self, p: HookPattern) {
        if !self.hooks.contains(&p) {
            self.hooks.push(p);
        }
    }

    /// Parses the CLI's `--capture` items (comma-separated or repeated): [`CAPTURE_ITEMS`].
    pub fn parse_items<S: AsRef<str>>(items: &[S]) -> Result<CaptureSpec, String> {
        let mut spec = CaptureSpec::none();
        // Patterns already in `spec`: layer lists can add thousands, each checked once.
        let mut seen = HashSet::new();
        let add = |spec: &mut CaptureSpec, seen: &mut HashSet<HookPattern>, p: HookPattern| {
            if seen.insert(p.clone()) {
                spec.hooks.push(p);
            }
        };
        for item in items.iter().flat_map(|c| c.as_ref().split(',')).map(str::trim).filter(|s| !s.is_empty()) {
            let (name, arg) = match item.split_once(':') {
                Some((n, a)) => (n, Some(a)),
                None => (item, None),
            };
            match (name, arg) {
                ("default" | "all", None) => {
                    spec = CaptureSpec { span: spec.span, ..if name == "all" { CaptureSpec::all() } else { CaptureSpec::default() } };
                    seen = spec.hooks.iter().cloned().collect();
                }
                ("none", None) => {}
                ("probs" | "hidden" | "outputs", Some(layers)) => {
                    for l in parse_layers(layers).map_err(|e| format!("--capture {item:?}: {e}"))? {
                        // The group's patterns with the layer segment fixed.
                        for p in group(name) {
                            add(&mut spec, &mut seen, pattern(&p.as_str().replacen("layers.*.", &format!("layers.{l}."), 1)));
                        }
                    }
                }
                ("span", Some(range)) => {
                    let (a, b) =
                        range.split_once('-').ok_or_else(|| format!("--capture {item:?}: expected span:A-B (key positions, inclusive)"))?;
                    let num = |x: &str| x.trim().parse::<usize>().map_err(|_| format!("--capture {item:?}: {x:?} is not a position"));
                    let (a, b) = (num(a)?, num(b)?);
                    if b < a {
                        return Err(format!("--capture {item:?}: the span ends before it starts"));
                    }
                    // Stored half-open: B + 1 must exist.
                    let end = b.checked_add(1).ok_or_else(|| format!("--capture {item:?}: {b} is past any position"))?;
                    spec.span = Some((a, end));
                    for p in group("stats") {
                        add(&mut spec, &mut seen, p);
                    }
                }
                (g, None) if GROUPS.iter().any(|(n, _)| *n == g) => {
                    for p in group(g) {
                        add(&mut spec, &mut seen, p);
                    }
                }
                _ => add(
                    &mut spec,
                    &mut seen,
                    item.parse::<HookPattern>().map_err(|e| format!("--capture: {e}; items are {CAPTURE_ITEMS}"))?,
                ),
            }
        }
        Ok(spec)
    }

    pub fn is_none(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Whether some pattern asks for `hook`.
    pub fn wants(&self, hook: &HookPoint) -> bool {
        let name = hook.to_string();
        self.hooks.iter().any(|p| p.matches_name(&name))
    }

    /// Resolves the patterns for a model of `num_layers` layers.
    pub fn plan(&self, num_layers: usize) -> CapturePlan {
        let layers = (0..num_layers)
            .map(|l| {
                let mut bits = 0;
                for q in Quantity::all() {
                    if q == Quantity::AttnSpan && self.span.is_none() {
                        continue;
                    }
                    if self.wants(&HookPoint::layer(l, q)) {
                        bits |= q.bit();
                    }
                }
                LayerPlan { bits, span: self.span }
            })
            .collect();
        CapturePlan { logits: self.wants(&HookPoint::Logits), layers }
    }
}

/// `3`, `0-5`, `1+4+7`: the layers, each once, in order.
pub fn parse_layers(s: &str) -> Result<BTreeSet<usize>, String> {
    let mut v = BTreeSet::new();
    for part in s.split('+') {
        let num = |x: &str| match x.trim().parse::<usize>() {
            // A range expands to one pattern per layer.
            Ok(l) if l < MAX_LAYERS => Ok(l),
            Ok(l) => Err(format!("layer {l} is past the highest layer a list may name ({})", MAX_LAYERS - 1)),
            Err(_) => Err(format!("layer {x:?} is not a number")),
        };
        match part.split_once('-') {
            Some((a, b)) => v.extend(num(a)?..=num(b)?),
            None => {
                v.insert(num(part)?);
            }
        }
    }
    Ok(v)
}

/// The patterns of a named group ([`GROUPS`]).
fn group(name: &str) -> Vec<HookPattern> {
    GROUPS.iter().filter(|(n, _)| *n == name).flat_map(|(_, patterns)| patterns.iter().map(|p| pattern(p))).collect()
}

/// The JSON forms a capture spec has had: the current one, and the boolean fields that
/// notebooks and `routelab-trace/1` metadata saved before hook patterns.
#[derive(Deserialize)]
#[serde(untagged)]
enum CaptureJson {
    Hooks {
        hooks: Vec<HookPattern>,
        #[serde(default)]
        span: Option<(usize, usize)>,
    },
    Fields {
        router: bool,
        attention_stats: bool,
        #[serde(default)]
        attention_span: Option<(usize, usize)>,
        attention_probs: Layers,
        hidden: Layers,
        logits: bool,
        contributions: bool,
    },
}

impl TryFrom<CaptureJson> for CaptureSpec {
    type Error = String;

    fn try_from(j: CaptureJson) -> Result<Self, String> {
        Ok(match j {
            CaptureJson::Hooks { hooks, span } => CaptureSpec { hooks, span },
            CaptureJson::Fields { router, attention_stats, attention_span, attention_probs, hidden, logits, contributions } => {
                let mut spec = CaptureSpec::none();
                for (on, group) in [(router, "router"), (attention_stats, "stats"), (logits, "logits"), (contributions, "contributions")] {
                    if on {
                        spec = spec.with(group);
                    }
                }
                for (layers, quantity) in [(attention_probs, "attn.probs"), (hidden, "hidden")] {
                    match layers {
                        Layers::None => {}
                        Layers::All => spec.add(pattern(&format!("layers.*.{quantity}"))),
                        Layers::Only(v) => v.iter().for_each(|l| spec.add(pattern(&format!("layers.{l}.{quantity}")))),
                    }
                }
                spec.span = attention_span;
                spec
            }
        })
    }
}

/// A capture spec resolved for one model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CapturePlan {
    /// Output logits at every position (the last position's are always computed).
    pub logits: bool,
    pub layers: Vec<LayerPlan>,
}

impl CapturePlan {
    /// Layer `l`'s part (nothing for a layer the plan does not know).
    pub fn layer(&self, l: usize) -> LayerPlan {
        self.layers.get(l).copied().unwrap_or_default()
    }
}

/// The quantities one layer records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerPlan {
    bits: u32,
    /// The key span of `attn.span`.
    pub span: Option<(usize, usize)>,
}

impl LayerPlan {
    pub fn wants(&self, q: Quantity) -> bool {
        self.bits & q.bit() != 0
    }
    /// The same plan without `q`.
    pub fn without(self, q: Quantity) -> Self {
        LayerPlan { bits: self.bits & !q.bit(), ..self }
    }
    fn any(&self, qs: &[Quantity]) -> bool {
        qs.iter().any(|&q| self.wants(q))
    }
    /// Some routing quantity (the router's outputs are then kept).
    pub fn router(&self) -> bool {
        self.any(&[Quantity::RouterLogits, Quantity::RouterExperts, Quantity::RouterWeights, Quantity::RouterMargin])
    }
    /// Some head statistic (they are computed together).
    pub fn head_stats(&self) -> bool {
        self.any(&[Quantity::AttnEntropy, Quantity::AttnArgmax, Quantity::AttnSink, Quantity::AttnSpan])
    }
    /// Some contribution norm.
    pub fn contributions(&self) -> bool {
        self.any(&[Quantity::RoutedNorm, Quantity::SharedNorm, Quantity::DenseNorm])
    }
}

/// One captured tensor of one layer, still on the run device.
#[derive(Clone, Debug)]
pub struct Captured {
    pub quantity: Quantity,
    pub tensor: Tensor,
    /// Which part of `tensor` the quantity is.
    pub part: Part,
}

/// Where a quantity sits in its device tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// All of it, laid out as the store keeps it (`[T, …]`, or `[H, T, S]` probabilities).
    Whole,
    /// Column `index` of packed `[H, T, width]` head statistics, stored as `[T, H]`: the
    /// statistics travel in one piece and are unpacked on the host.
    Column { index: usize, width: usize },
}

/// What one layer recorded during one forward call over T new positions.
#[derive(Clone, Debug, Default)]
pub struct LayerCapture {
    pub plan: LayerPlan,
    pub items: Vec<Captured>,
    /// Per-head attention outputs `[T, H, dv]` before the output projection, when asked for
    /// (to measure `mean` head interventions' references; not a hook).
    pub head_outputs: Option<Tensor>,
}

impl LayerCapture {
    pub fn new(plan: LayerPlan) -> Self {
        LayerCapture { plan, items: vec![], head_outputs: None }
    }

    /// Keeps `tensor` as quantity `q` if the plan asks for it.
    pub fn push(&mut self, q: Quantity, tensor: &Tensor) {
        if self.plan.wants(q) {
            self.items.push(Captured { quantity: q, tensor: tensor.clone(), part: Part::Whole });
        }
    }

    /// Keeps the head statistics the plan asks for, packed as attention computed them.
    pub fn push_head_stats(&mut self, stats: &HeadStats) {
        let columns = [
            (Quantity::AttnEntropy, HeadStats::ENTROPY),
            (Quantity::AttnArgmax, HeadStats::ARGMAX),
            (Quantity::AttnSink, HeadStats::SINK),
            (Quantity::AttnSpan, HeadStats::SPAN),
        ];
        for (q, index) in columns {
            if self.plan.wants(q) && (q != Quantity::AttnSpan || stats.has_span) {
                let part = Part::Column { index, width: HeadStats::WIDTH };
                self.items.push(Captured { quantity: q, tensor: stats.packed.clone(), part });
            }
        }
    }

    /// Quantity `q` as a device tensor in the store's layout (`[T, H]` for head statistics,
    /// u32 where the hook table says so), if captured.
    pub fn get(&self, q: Quantity) -> candle_core::Result<Option<Tensor>> {
        let Some(c) = self.items.iter().find(|c| c.quantity == q) else { return Ok(None) };
        let t = match c.part {
            Part::Whole => c.tensor.clone(),
            Part::Column { index, .. } => packed_column(&c.tensor, index)?,
        };
        Ok(Some(if q.info().elem == Elem::U32 { t.to_dtype(DType::U32)? } else { t }))
    }
}

/// Column `c` of packed `[H, T, width]` statistics as `[T, H]`.
fn packed_column(packed: &Tensor, c: usize) -> candle_core::Result<Tensor> {
    packed.narrow(2, c, 1)?.squeeze(2)?.t()?.contiguous()
}

/// One layer's head statistics for T queries, packed `[H, T, 4]` f32 as attention computes
/// them: per head and query its entropy (nats), most-attended key position (as f32, exact below
/// 2^24), attention on key 0 (the sink) and attention on the captured span (0 without one).
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
        packed_column(&self.packed, c)
    }

    /// `[T, H]` f32, nats.
    pub fn entropy(&self) -> candle_core::Result<Tensor> {
        self.column(Self::ENTROPY)
    }

    /// `[T, H]` u32, absolute key positions.
    pub fn argmax(&self) -> candle_core::Result<Tensor> {
        self.column(Self::ARGMAX)?.to_dtype(DType::U32)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_names_valid_patterns() {
        for (_, patterns) in GROUPS {
            for p in *patterns {
                assert!(p.parse::<HookPattern>().is_ok(), "{p}");
            }
        }
    }

    #[test]
    fn cli_items_expand_to_hook_patterns() {
        let spec = CaptureSpec::parse_items(&["router,probs:1+3", "layers.*.router.margin"]).unwrap();
        let plan = spec.plan(4);
        assert!(plan.layer(0).wants(Quantity::RouterExperts) && plan.layer(0).wants(Quantity::RouterMargin));
        assert!(plan.layer(3).wants(Quantity::AttnProbs) && !plan.layer(2).wants(Quantity::AttnProbs));
        assert!(!plan.layer(0).head_stats() && !plan.logits);
        let e = CaptureSpec::parse_items(&["routr"]).unwrap_err();
        assert!(e.contains("routr") && e.contains("default, all"), "{e}");
        assert!(CaptureSpec::parse_items(&["span:5-2"]).unwrap_err().contains("ends before"));
    }

    #[test]
    fn hostile_layer_lists_and_spans_are_refused_not_expanded() {
        // A range was expanded to one pattern per layer before anything checked it.
        let e = CaptureSpec::parse_items(&["probs:0-99999999999999"]).unwrap_err();
        assert!(e.contains("probs:0-99999999999999") && e.contains("highest layer"), "{e}");
        // `B + 1` of the inclusive span overflowed.
        let e = CaptureSpec::parse_items(&[format!("span:0-{}", usize::MAX)]).unwrap_err();
        assert!(e.contains("past any position"), "{e}");
        // Repeated ranges add each pattern once.
        let spec = CaptureSpec::parse_items(&["hidden:0-4095,hidden:0-4095", "hidden:4095,probs:7"]).unwrap();
        assert_eq!(spec.hooks.len(), 4097);
        assert_eq!(CaptureSpec::parse_items(&["hidden:2+2+1"]).unwrap(), CaptureSpec::parse_items(&["hidden:1-2"]).unwrap());
    }

    #[test]
    fn span_is_recorded_only_with_a_span() {
        assert!(!CaptureSpec::all().plan(1).layer(0).wants(Quantity::AttnSpan));
        let spec = CaptureSpec::parse_items(&["span:2-4"]).unwrap();
        assert_eq!(spec.span, Some((2, 5)));
        assert!(spec.plan(1).layer(0).wants(Quantity::AttnSpan) && spec.plan(1).layer(0).wants(Quantity::AttnEntropy));
    }

    #[test]
    fn the_boolean_json_of_earlier_versions_still_reads() {
        let old = r#"{"router":true,"attention_stats":true,"attention_span":[1,4],"attention_probs":{"only":[2]},"hidden":"all","logits":false,"contributions":false}"#;
        let spec: CaptureSpec = serde_json::from_str(old).unwrap();
        let plan = spec.plan(3);
        assert!(plan.layer(1).wants(Quantity::RouterWeights) && plan.layer(1).wants(Quantity::AttnSpan));
        assert!(plan.layer(2).wants(Quantity::AttnProbs) && !plan.layer(1).wants(Quantity::AttnProbs));
        assert!(plan.layer(0).wants(Quantity::Hidden) && !plan.layer(0).contributions() && !plan.logits);
        let back: CaptureSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
        let default: CaptureSpec = serde_json::from_str(
            r#"{"router":true,"attention_stats":true,"attention_probs":"none","hidden":"none","logits":false,"contributions":true}"#,
        )
        .unwrap();
        assert_eq!(default, CaptureSpec::default());
    }
}
