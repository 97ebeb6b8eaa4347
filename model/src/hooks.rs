//! Hook points: one name for everything a forward pass can record or change.
//!
//! Every captured tensor and every intervention site has exactly one name, and that string is
//! what the CLI takes, notebooks and trace metadata save, trace files name their tensors, the
//! GUI labels and error messages quote (TransformerLens names its hooks the same way):
//!
//! - `tokens`, `logits`: the model's input ids and output logits;
//! - `layers.{l}.{quantity}`: what layer `l` records, one row of [`QUANTITIES`] each
//!   (`layers.3.router.experts`, `layers.0.attn.entropy`);
//! - `layers.{l}.attn.head.{h}`, `layers.{l}.experts.{e}`, `layers.{l}.shared_expert`,
//!   `layers.{l}.dense_residual`: what an intervention acts on.
//!
//! [`QUANTITIES`] is the one table of per-layer captured quantities: name, dtype, shape, the
//! name `routelab-trace/1` files used, and meaning. The trace format, the capture store, the
//! `--capture` parser and the documentation all read it, so a new statistic is one row here
//! plus the code that computes it.

use std::fmt;
use std::str::FromStr;

/// A per-layer captured quantity (the part of a hook name after `layers.{l}.`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quantity {
    RouterLogits,
    RouterExperts,
    RouterWeights,
    RouterMargin,
    AttnEntropy,
    AttnArgmax,
    AttnSink,
    AttnSpan,
    AttnProbs,
    Hidden,
    RoutedNorm,
    SharedNorm,
    DenseNorm,
    AttnZ,
    AttnOut,
    MlpOut,
    ExpertOut,
    SharedOut,
    DenseOut,
}

/// Element type of a captured tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    U32,
}

/// How a captured tensor is laid out along positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[T, …]`: one row per position.
    Rows,
    /// `[H, T, T]`: per head, query and key (zero above the diagonal).
    HeadsQueriesKeys,
}

/// One row of the hook table.
#[derive(Clone, Copy, Debug)]
pub struct QuantityInfo {
    pub quantity: Quantity,
    /// The name after `layers.{l}.`.
    pub name: &'static str,
    pub elem: Elem,
    pub layout: Layout,
    /// Shape in the trace file (T positions, E experts, K selected, H heads, D hidden size).
    pub shape: &'static str,
    /// The tensor's name in `routelab-trace/1` files, `{l}` for the layer.
    pub v1_name: &'static str,
    pub meaning: &'static str,
}

/// Every per-layer quantity a forward pass can record.
/// The most decoder layers RouteLab reads a model, a layer list or a trace as having: far above
/// any real model's, and low enough that per-layer tables built from an untrusted count (a
/// config's `num_hidden_layers`, a `--capture hidden:0-N` range, a trace's tensor names) stay
/// small.
pub const MAX_LAYERS: usize = 4096;

/// The most routed experts per layer RouteLab reads a model as having (a GGUF's
/// `{arch}.expert_count`, which names one tensor per expert): far above any real model's.
pub const MAX_EXPERTS: usize = 4096;

pub const QUANTITIES: &[QuantityInfo] = &[
    QuantityInfo {
        quantity: Quantity::RouterLogits,
        name: "router.logits",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T, E]",
        v1_name: "router.{l}.logits",
        meaning: "raw router outputs, before softmax/sigmoid and before interventions",
    },
    QuantityInfo {
        quantity: Quantity::RouterExperts,
        name: "router.experts",
        elem: Elem::U32,
        layout: Layout::Rows,
        shape: "[T, K]",
        v1_name: "router.{l}.experts",
        meaning: "selected experts, strongest first",
    },
    QuantityInfo {
        quantity: Quantity::RouterWeights,
        name: "router.weights",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T, K]",
        v1_name: "router.{l}.weights",
        meaning: "combine weights as applied (0 for a dropped expert)",
    },
    QuantityInfo {
        quantity: Quantity::RouterMargin,
        name: "router.margin",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T]",
        v1_name: "router.{l}.margin",
        meaning: "gap between the k-th and (k+1)-th selection score (group-limited routers: the smaller of that and the group gap; inf when nothing was left out)",
    },
    QuantityInfo {
        quantity: Quantity::AttnEntropy,
        name: "attn.entropy",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T, H]",
        v1_name: "attn.{l}.entropy",
        meaning: "entropy (nats) of each head's attention at each query",
    },
    QuantityInfo {
        quantity: Quantity::AttnArgmax,
        name: "attn.argmax",
        elem: Elem::U32,
        layout: Layout::Rows,
        shape: "[T, H]",
        v1_name: "attn.{l}.argmax",
        meaning: "most-attended key position",
    },
    QuantityInfo {
        quantity: Quantity::AttnSink,
        name: "attn.sink",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T, H]",
        v1_name: "attn.{l}.sink",
        meaning: "attention on key 0, the attention sink",
    },
    QuantityInfo {
        quantity: Quantity::AttnSpan,
        name: "attn.span",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T, H]",
        v1_name: "attn.{l}.span",
        meaning: "attention on the captured key span (the capture request's `span`)",
    },
    QuantityInfo {
        quantity: Quantity::AttnProbs,
        name: "attn.probs",
        elem: Elem::F32,
        layout: Layout::HeadsQueriesKeys,
        shape: "[H, T, T]",
        v1_name: "attn.{l}.probs",
        meaning: "full attention probabilities (zero above the diagonal)",
    },
    QuantityInfo {
        quantity: Quantity::Hidden,
        name: "hidden",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T, D]",
        v1_name: "hidden.{l}",
        meaning: "residual stream after the layer",
    },
    QuantityInfo {
        quantity: Quantity::RoutedNorm,
        name: "moe.routed_norm",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T]",
        v1_name: "moe.{l}.routed_norm",
        meaning: "L2 norm of the routed experts' contribution",
    },
    QuantityInfo {
        quantity: Quantity::SharedNorm,
        name: "moe.shared_norm",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T]",
        v1_name: "moe.{l}.shared_norm",
        meaning: "L2 norm of the shared expert(s)' contribution (Qwen2-MoE, DeepSeek)",
    },
    QuantityInfo {
        quantity: Quantity::DenseNorm,
        name: "moe.dense_norm",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T]",
        v1_name: "moe.{l}.dense_norm",
        meaning: "L2 norm of the parallel dense MLP's contribution (Arctic)",
    },
    QuantityInfo {
        quantity: Quantity::AttnZ,
        name: "attn.z",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T, H, dv]",
        v1_name: "attn.{l}.z",
        meaning: "each head's attention output before the output projection (its slice of o_proj's input), after head interventions",
    },
    QuantityInfo {
        quantity: Quantity::AttnOut,
        name: "attn.out",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T, D]",
        v1_name: "attn.{l}.out",
        meaning: "the attention block's output (o_proj's, bias included): what attention adds to the residual stream",
    },
    QuantityInfo {
        quantity: Quantity::MlpOut,
        name: "mlp.out",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T, D]",
        v1_name: "mlp.{l}.out",
        meaning: "the feed-forward block's output added to the residual stream: the dense MLP, or the MoE block (routed plus shared experts; not Arctic's dense residual)",
    },
    QuantityInfo {
        quantity: Quantity::ExpertOut,
        name: "moe.expert_out",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T, K, D]",
        v1_name: "moe.{l}.expert_out",
        meaning: "each selected expert's weighted contribution (combine weight × expert output), in router.experts order",
    },
    QuantityInfo {
        quantity: Quantity::SharedOut,
        name: "moe.shared_out",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T, D]",
        v1_name: "moe.{l}.shared_out",
        meaning: "the shared expert(s)' contribution after its gate (Qwen2-MoE, DeepSeek)",
    },
    QuantityInfo {
        quantity: Quantity::DenseOut,
        name: "moe.dense_out",
        elem: Elem::F32,
        layout: Layout::Rows,
        shape: "[T, D]",
        v1_name: "moe.{l}.dense_out",
        meaning: "the parallel dense MLP's contribution (Arctic)",
    },
];

impl Quantity {
    pub fn info(self) -> &'static QuantityInfo {
        // The table lists every variant in declaration order (checked by a test).
        &QUANTITIES[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn all() -> impl Iterator<Item = Quantity> {
        QUANTITIES.iter().map(|q| q.quantity)
    }

    fn from_name(name: &str) -> Option<Quantity> {
        QUANTITIES.iter().find(|q| q.name == name).map(|q| q.quantity)
    }

    /// The `routelab-trace/1` tensor name of this quantity in layer `l`.
    pub fn v1_name(self, layer: usize) -> String {
        self.info().v1_name.replace("{l}", &layer.to_string())
    }

    pub fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// A hook point: something a forward pass records or an intervention acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// `tokens`: U32 [T], the token ids.
    Tokens,
    /// `logits`: F32 [T, V], the output logits.
    Logits,
    /// `layers.{l}.{quantity}`.
    Layer { layer: usize, quantity: Quantity },
    /// `layers.{l}.attn.head.{h}`.
    Head { layer: usize, head: usize },
    /// `layers.{l}.experts.{e}`.
    Expert { layer: usize, expert: usize },
    /// `layers.{l}.shared_expert`.
    SharedExpert { layer: usize },
    /// `layers.{l}.dense_residual`.
    DenseResidual { layer: usize },
}

impl HookPoint {
    pub fn layer(layer: usize, quantity: Quantity) -> Self {
        HookPoint::Layer { layer, quantity }
    }

    /// The layer this hook belongs to (None for `tokens` and `logits`).
    pub fn layer_index(&self) -> Option<usize> {
        match *self {
            HookPoint::Tokens | HookPoint::Logits => None,
            HookPoint::Layer { layer, .. }
            | HookPoint::Head { layer, .. }
            | HookPoint::Expert { layer, .. }
            | HookPoint::SharedExpert { layer }
            | HookPoint::DenseResidual { layer } => Some(layer),
        }
    }

    /// Whether this names a captured tensor (as opposed to an intervention site).
    pub fn is_captured(&self) -> bool {
        matches!(self, HookPoint::Tokens | HookPoint::Logits | HookPoint::Layer { .. })
    }

    /// The name this hook's tensor had in `routelab-trace/1` files (captured hooks only).
    pub fn v1_name(&self) -> Option<String> {
        match *self {
            HookPoint::Tokens => Some("tokens".into()),
            HookPoint::Logits => Some("logits".into()),
            HookPoint::Layer { layer, quantity } => Some(quantity.v1_name(layer)),
            _ => None,
        }
    }

    /// Element type and layout of a captured hook's tensor.
    pub fn elem_layout(&self) -> Option<(Elem, Layout)> {
        match self {
            HookPoint::Tokens => Some((Elem::U32, Layout::Rows)),
            HookPoint::Logits => Some((Elem::F32, Layout::Rows)),
            HookPoint::Layer { quantity, .. } => Some((quantity.info().elem, quantity.info().layout)),
            _ => None,
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookPoint::Tokens => write!(f, "tokens"),
            HookPoint::Logits => write!(f, "logits"),
            HookPoint::Layer { layer, quantity } => write!(f, "layers.{layer}.{}", quantity.name()),
            HookPoint::Head { layer, head } => write!(f, "layers.{layer}.attn.head.{head}"),
            HookPoint::Expert { layer, expert } => write!(f, "layers.{layer}.experts.{expert}"),
            HookPoint::SharedExpert { layer } => write!(f, "layers.{layer}.shared_expert"),
            HookPoint::DenseResidual { layer } => write!(f, "layers.{layer}.dense_residual"),
        }
    }
}

/// The per-layer quantities' names, comma-separated, for error messages.
fn quantity_names() -> String {
    QUANTITIES.iter().map(|q| q.name).collect::<Vec<_>>().join(",")
}

/// What every hook name looks like, for error messages.
pub fn hook_forms() -> String {
    format!(
        "tokens, logits, layers.L.{{{}}}, layers.L.attn.head.H, layers.L.experts.E, layers.L.shared_expert, layers.L.dense_residual",
        quantity_names()
    )
}

impl FromStr for HookPoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a hook point; hook points are {}", hook_forms());
        match s {
            "tokens" => return Ok(HookPoint::Tokens),
            "logits" => return Ok(HookPoint::Logits),
            _ => {}
        }
        let rest = s.strip_prefix("layers.").ok_or_else(bad)?;
        let (l, rest) = rest.split_once('.').ok_or_else(bad)?;
        let layer: usize = l.parse().map_err(|_| format!("{s:?}: layer {l:?} is not a number"))?;
        if let Some(q) = Quantity::from_name(rest) {
            return Ok(HookPoint::Layer { layer, quantity: q });
        }
        let index = |x: &str, what: &str| x.parse::<usize>().map_err(|_| format!("{s:?}: {what} {x:?} is not a number"));
        if let Some(h) = rest.strip_prefix("attn.head.") {
            return Ok(HookPoint::Head { layer, head: index(h, "head")? });
        }
        if let Some(e) = rest.strip_prefix("experts.") {
            return Ok(HookPoint::Expert { layer, expert: index(e, "expert")? });
        }
        match rest {
            "shared_expert" => Ok(HookPoint::SharedExpert { layer }),
            "dense_residual" => Ok(HookPoint::DenseResidual { layer }),
            _ => Err(bad()),
        }
    }
}

impl serde::Serialize for HookPoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HookPoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A pattern over captured hook names: dot-separated segments where `*` matches any one segment
/// (`layers.*.router.*`, `layers.3.attn.probs`, `logits`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HookPattern(String);

impl HookPattern {
    /// Whether the pattern matches hook `name`.
    pub fn matches_name(&self, name: &str) -> bool {
        let mut p = self.0.split('.');
        let mut n = name.split('.');
        loop {
            match (p.next(), n.next()) {
                (None, None) => return true,
                (Some(a), Some(b)) if a == "*" || a == b => {}
                _ => return false,
            }
        }
    }

    pub fn matches(&self, hook: &HookPoint) -> bool {
        self.matches_name(&hook.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A hook's own name, the pattern matching it alone.
impl From<HookPoint> for HookPattern {
    fn from(hook: HookPoint) -> Self {
        HookPattern(hook.to_string())
    }
}

impl fmt::Display for HookPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HookPattern {
    type Err = String;

    /// Accepts a pattern that can match some captured hook of some model.
    fn from_str(s: &str) -> Result<Self, String> {
        let p = HookPattern(s.trim().to_string());
        let segments: Vec<&str> = p.0.split('.').collect();
        let layer_ok = segments.get(1).is_some_and(|l| *l == "*" || l.parse::<usize>().is_ok());
        // Any layer stands for all: match against layer 0's names with the layer segment fixed.
        let probe = |name: String| {
            let mut probe = segments.clone();
            if probe.len() > 1 && layer_ok {
                probe[1] = "0";
            }
            HookPattern(probe.join(".")).matches_name(&name)
        };
        let any = probe("tokens".into())
            || probe("logits".into())
            || (layer_ok && Quantity::all().any(|q| probe(HookPoint::layer(0, q).to_string())));
        if any {
            Ok(p)
        } else {
            Err(format!(
                "{s:?} matches no captured hook point; they are tokens, logits, layers.L.{{{}}} (`*` matches any one segment)",
                quantity_names()
            ))
        }
    }
}

impl serde::Serialize for HookPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for HookPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_quantity_in_declaration_order() {
        for (i, q) in QUANTITIES.iter().enumerate() {
            assert_eq!(q.quantity as usize, i, "{}", q.name);
        }
        assert_eq!(Quantity::all().count(), Quantity::DenseOut as usize + 1);
    }

    #[test]
    fn every_hook_name_round_trips() {
        let mut hooks = vec![
            HookPoint::Tokens,
            HookPoint::Logits,
            HookPoint::Head { layer: 12, head: 4 },
            HookPoint::Expert { layer: 3, expert: 5 },
            HookPoint::SharedExpert { layer: 1 },
            HookPoint::DenseResidual { layer: 0 },
        ];
        hooks.extend(Quantity::all().map(|q| HookPoint::layer(7, q)));
        for h in hooks {
            let s = h.to_string();
            assert_eq!(s.parse::<HookPoint>().unwrap(), h, "{s}");
            assert_eq!(serde_json::from_str::<HookPoint>(&serde_json::to_string(&h).unwrap()).unwrap(), h);
        }
        assert_eq!(HookPoint::layer(3, Quantity::RouterExperts).to_string(), "layers.3.router.experts");
        assert_eq!(HookPoint::layer(3, Quantity::RouterExperts).v1_name().unwrap(), "router.3.experts");
        assert_eq!(HookPoint::layer(2, Quantity::Hidden).v1_name().unwrap(), "hidden.2");
    }

    #[test]
    fn bad_hook_names_say_what_is_wrong() {
        let e = "layers.x.hidden".parse::<HookPoint>().unwrap_err();
        assert!(e.contains("layer \"x\" is not a number"), "{e}");
        let e = "layers.1.router.bogus".parse::<HookPoint>().unwrap_err();
        assert!(e.contains("is not a hook point") && e.contains("router.margin"), "{e}");
        let e = "layers.1.attn.head.q".parse::<HookPoint>().unwrap_err();
        assert!(e.contains("head \"q\""), "{e}");
    }

    #[test]
    fn patterns_match_segment_by_segment() {
        let p: HookPattern = "layers.*.router.*".parse().unwrap();
        assert!(p.matches(&HookPoint::layer(3, Quantity::RouterLogits)));
        assert!(p.matches(&HookPoint::layer(0, Quantity::RouterMargin)));
        assert!(!p.matches(&HookPoint::layer(0, Quantity::AttnEntropy)));
        assert!(!p.matches(&HookPoint::layer(0, Quantity::Hidden)));
        let p: HookPattern = "layers.2.hidden".parse().unwrap();
        assert!(p.matches(&HookPoint::layer(2, Quantity::Hidden)) && !p.matches(&HookPoint::layer(12, Quantity::Hidden)));
        assert!("logits".parse::<HookPattern>().unwrap().matches(&HookPoint::Logits));
        assert!("layers.*.routerr.*".parse::<HookPattern>().is_err());
        assert!("layers.*".parse::<HookPattern>().is_err());
        assert!("layers.a.hidden".parse::<HookPattern>().is_err());
    }
}
