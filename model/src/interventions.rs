//! Interventions: plain-data edits to the forward pass, saved with every result they produce.
//!
//! An intervention is a hook point ([`crate::hooks`]) and a method, written `HOOK:METHOD`
//! (`layers.3.experts.5:reroute`, `layers.12.attn.head.4:scale(0.5)`):
//!
//! | intervention | hook | methods |
//! |---|---|---|
//! | expert mask | `layers.{l}.experts.{e}` | `reroute`: removed from the router's candidates, the router renormalises over the rest; `drop`: routing unchanged, its contribution zeroed |
//! | shared-expert mute | `layers.{l}.shared_expert` | the shared expert(s)' contribution zeroed |
//! | dense-residual mute | `layers.{l}.dense_residual` | Arctic's parallel dense MLP's contribution zeroed |
//! | head mask | `layers.{l}.attn.head.{h}` | `zero`, `uniform` (uniform attention over the positions the mask lets it see), `mean` (output replaced by its mean over a reference run), `scale(x)` |
//!
//! An empty set changes nothing: the decoder takes the same code path, bit for bit, as with no
//! interventions at all.

use serde::{Deserialize, Serialize};

use crate::config::{FfnConfig, ModelConfig};
use crate::error::{ModelError, Result};
use crate::hooks::HookPoint;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpertMethod {
    Reroute,
    Drop,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum HeadMethod {
    Zero,
    Uniform,
    /// The head's output (its slice of o_proj's input) at every position replaced by
    /// `reference`, its mean over a reference run (`v_head_dim` values).
    Mean {
        reference: Vec<f32>,
    },
    Scale {
        factor: f32,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "target")]
pub enum Intervention {
    Expert {
        layer: usize,
        expert: usize,
        method: ExpertMethod,
    },
    SharedExpert {
        layer: usize,
    },
    DenseResidual {
        layer: usize,
    },
    Head {
        layer: usize,
        head: usize,
        #[serde(flatten)]
        method: HeadMethod,
    },
}

impl Intervention {
    pub fn layer(&self) -> usize {
        match *self {
            Intervention::Expert { layer, .. }
            | Intervention::SharedExpert { layer }
            | Intervention::DenseResidual { layer }
            | Intervention::Head { layer, .. } => layer,
        }
    }

    /// The hook this intervention acts on (`layers.3.experts.5`).
    pub fn hook(&self) -> HookPoint {
        match *self {
            Intervention::Expert { layer, expert, .. } => HookPoint::Expert { layer, expert },
            Intervention::SharedExpert { layer } => HookPoint::SharedExpert { layer },
            Intervention::DenseResidual { layer } => HookPoint::DenseResidual { layer },
            Intervention::Head { layer, head, .. } => HookPoint::Head { layer, head },
        }
    }

    /// The intervention `method` on `hook`; methods: `reroute`/`drop` on experts, `mute` on a
    /// shared expert or dense residual, `zero`/`uniform`/`mean`/`scale=X` on heads (`mean`'s
    /// reference is measured later, [`Interventions::has_pending_means`]).
    pub fn new(hook: HookPoint, method: &str) -> std::result::Result<Intervention, String> {
        let bad = |methods: &str| Err(format!("{hook}: method {method:?} is not one of {methods}"));
        match hook {
            HookPoint::Expert { layer, expert } => match method {
                "reroute" => Ok(Intervention::Expert { layer, expert, method: ExpertMethod::Reroute }),
                "drop" => Ok(Intervention::Expert { layer, expert, method: ExpertMethod::Drop }),
                _ => bad("reroute, drop"),
            },
            HookPoint::SharedExpert { layer } if method == "mute" => Ok(Intervention::SharedExpert { layer }),
            HookPoint::DenseResidual { layer } if method == "mute" => Ok(Intervention::DenseResidual { layer }),
            HookPoint::SharedExpert { .. } | HookPoint::DenseResidual { .. } => bad("mute"),
            HookPoint::Head { layer, head } => {
                Ok(Intervention::Head { layer, head, method: parse_head_method(method).map_err(|e| format!("{hook}: {e}"))? })
            }
            _ => Err(format!(
                "{hook} is a captured tensor, not an intervention site (layers.L.attn.head.H, layers.L.experts.E, layers.L.shared_expert, layers.L.dense_residual)"
            )),
        }
    }

    /// The intervention as `HOOK:METHOD` (`layers.3.experts.5:reroute`), which
    /// [`Intervention::from_str`] reads back.
    pub fn label(&self) -> String {
        let method = match self {
            Intervention::Expert { method: ExpertMethod::Reroute, .. } => "reroute".to_string(),
            Intervention::Expert { method: ExpertMethod::Drop, .. } => "drop".to_string(),
            Intervention::SharedExpert { .. } | Intervention::DenseResidual { .. } => "mute".to_string(),
            Intervention::Head { method, .. } => match method {
                HeadMethod::Zero => "zero".into(),
                HeadMethod::Uniform => "uniform".into(),
                HeadMethod::Mean { .. } => "mean".into(),
                HeadMethod::Scale { factor } => format!("scale({factor})"),
            },
        };
        format!("{}:{method}", self.hook())
    }
}

/// A set of interventions applied together.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Interventions {
    pub items: Vec<Intervention>,
}

impl Interventions {
    pub fn new(items: Vec<Intervention>) -> Self {
        Interventions { items }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn push(&mut self, i: Intervention) {
        self.items.push(i);
    }

    /// Checks every target exists in `config`.
    pub fn validate(&self, config: &ModelConfig) -> Result<()> {
        let bad = |i: &Intervention, why: String| Err(ModelError::Invalid(format!("intervention {}: {why}", i.label())));
        for i in &self.items {
            let l = i.layer();
            let Some(layer) = config.layers.get(l) else {
                return bad(i, format!("the model has {} layers (0–{})", config.num_layers, config.num_layers - 1));
            };
            match i {
                Intervention::Expert { expert, .. } => match &layer.ffn {
                    FfnConfig::Moe(m) if *expert < m.routing.num_experts => {}
                    FfnConfig::Moe(m) => return bad(i, format!("layer {l} has {} experts", m.routing.num_experts)),
                    FfnConfig::Dense(_) => return bad(i, format!("layer {l} is a dense layer without experts")),
                },
                Intervention::SharedExpert { .. } => match &layer.ffn {
                    FfnConfig::Moe(m) if m.shared.is_some() => {}
                    _ => return bad(i, format!("layer {l} has no shared expert")),
                },
                Intervention::DenseResidual { .. } => match &layer.ffn {
                    FfnConfig::Moe(m) if m.dense_residual.is_some() => {}
                    _ => return bad(i, format!("layer {l} has no dense residual MLP")),
                },
                Intervention::Head { head, method, .. } => {
                    let h = config.attention.num_heads;
                    if *head >= h {
                        return bad(i, format!("the model has {h} heads per layer"));
                    }
                    if let HeadMethod::Mean { reference } = method {
                        let dv = config.attention.v_head_dim();
                        // Empty: still to be measured (Session::fill_head_means).
                        if !reference.is_empty() && reference.len() != dv {
                            return bad(i, format!("the mean has {} values, the head dimension is {dv}", reference.len()));
                        }
                    }
                }
            }
        }
        // Rerouting must leave at least top-k experts to route to.
        for (l, layer) in config.layers.iter().enumerate() {
            if let FfnConfig::Moe(m) = &layer.ffn {
                let excluded = self.for_layer(l, config).excluded_experts.iter().filter(|&&x| x).count();
                m.routing.validate(excluded).map_err(|e| ModelError::Invalid(format!("interventions on layer {l}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Head means still to be measured on a reference run.
    pub fn has_pending_means(&self) -> bool {
        self.items.iter().any(|i| matches!(i, Intervention::Head { method: HeadMethod::Mean { reference }, .. } if reference.is_empty()))
    }

    /// What this set does to one layer, in the form the decoder applies it.
    pub fn for_layer(&self, layer: usize, config: &ModelConfig) -> LayerEdits {
        let num_experts = config.moe(layer).map(|m| m.routing.num_experts).unwrap_or(0);
        let mut e =
            LayerEdits { excluded_experts: vec![false; num_experts], dropped_experts: vec![false; num_experts], ..LayerEdits::default() };
        for i in self.items.iter().filter(|i| i.layer() == layer) {
            match i {
                Intervention::Expert { expert, method, .. } if *expert < num_experts => match method {
                    ExpertMethod::Reroute => e.excluded_experts[*expert] = true,
                    ExpertMethod::Drop => e.dropped_experts[*expert] = true,
                },
                Intervention::Expert { .. } => {}
                Intervention::SharedExpert { .. } => e.mute_shared = true,
                Intervention::DenseResidual { .. } => e.mute_dense_residual = true,
                Intervention::Head { head, method, .. } => e.heads.push((*head, method.clone())),
            }
        }
        e
    }
}

/// One layer's interventions, resolved.
#[derive(Clone, Debug, Default)]
pub struct LayerEdits {
    pub excluded_experts: Vec<bool>,
    pub dropped_experts: Vec<bool>,
    pub mute_shared: bool,
    pub mute_dense_residual: bool,
    pub heads: Vec<(usize, HeadMethod)>,
}

impl LayerEdits {
    pub fn routing_changed(&self) -> bool {
        self.excluded_experts.iter().any(|&x| x)
    }
    pub fn any_dropped(&self) -> bool {
        self.dropped_experts.iter().any(|&x| x)
    }
}

impl std::fmt::Display for Intervention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

impl std::str::FromStr for Intervention {
    type Err = String;

    /// `HOOK:METHOD`, e.g. `layers.3.experts.5:drop`, `layers.0.attn.head.2:scale(0.5)`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (hook, method) = s.split_once(':').ok_or_else(|| format!("{s:?}: expected HOOK:METHOD, e.g. layers.3.experts.5:drop"))?;
        Intervention::new(hook.trim().parse()?, method.trim())
    }
}

/// A head method as the CLI and labels write it: `zero`, `uniform`, `mean`, `scale=X` or
/// `scale(X)`.
fn parse_head_method(m: &str) -> std::result::Result<HeadMethod, String> {
    Ok(match m {
        "zero" => HeadMethod::Zero,
        "uniform" => HeadMethod::Uniform,
        "mean" => HeadMethod::Mean { reference: vec![] },
        m => match m.strip_prefix("scale=").or_else(|| m.strip_prefix("scale(").and_then(|x| x.strip_suffix(')'))) {
            Some(x) => HeadMethod::Scale { factor: x.parse().map_err(|_| format!("scale factor {x:?} is not a number"))? },
            None => return Err(format!("head method {m:?} is not one of zero, uniform, mean, scale=X")),
        },
    })
}

/// Parses the CLI forms `L:E[:reroute|drop]` and `L:H[:zero|uniform|mean|scale=X]`.
pub fn parse_expert_mask(s: &str) -> std::result::Result<Intervention, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |p: &str, what: &str| p.trim().parse::<usize>().map_err(|_| format!("{s:?}: {what} {p:?} is not a number"));
    match parts.as_slice() {
        [l, e] | [l, e, "reroute"] => {
            Ok(Intervention::Expert { layer: num(l, "layer")?, expert: num(e, "expert")?, method: ExpertMethod::Reroute })
        }
        [l, e, "drop"] => Ok(Intervention::Expert { layer: num(l, "layer")?, expert: num(e, "expert")?, method: ExpertMethod::Drop }),
        [_, _, m] => Err(format!("{s:?}: expert method {m:?} is not one of reroute, drop")),
        _ => Err(format!("{s:?}: expected LAYER:EXPERT[:reroute|drop]")),
    }
}

/// `mean` heads get an empty reference here; the caller fills it from a reference run.
pub fn parse_head_mask(s: &str) -> std::result::Result<Intervention, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |p: &str, what: &str| p.trim().parse::<usize>().map_err(|_| format!("{s:?}: {what} {p:?} is not a number"));
    let (l, h, method) = match parts.as_slice() {
        [l, h] => (l, h, HeadMethod::Zero),
        [l, h, m] => (l, h, parse_head_method(m).map_err(|e| format!("{s:?}: {e}"))?),
        _ => return Err(format!("{s:?}: expected LAYER:HEAD[:zero|uniform|mean|scale=X]")),
    };
    Ok(Intervention::Head { layer: num(l, "layer")?, head: num(h, "head")?, method })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_forms_parse() {
        assert_eq!(parse_expert_mask("3:5").unwrap(), Intervention::Expert { layer: 3, expert: 5, method: ExpertMethod::Reroute });
        assert_eq!(parse_expert_mask("0:1:drop").unwrap().label(), "layers.0.experts.1:drop");
        assert!(parse_expert_mask("0:x").is_err());
        assert!(parse_expert_mask("0:1:nuke").is_err());
        assert_eq!(parse_head_mask("2:7:scale=0.5").unwrap().label(), "layers.2.attn.head.7:scale(0.5)");
        assert_eq!(parse_head_mask("2:7").unwrap().label(), "layers.2.attn.head.7:zero");
        assert!(parse_head_mask("2:7:blur").is_err());
    }

    #[test]
    fn hook_and_method_forms_round_trip() {
        for s in [
            "layers.3.experts.5:reroute",
            "layers.0.experts.1:drop",
            "layers.2.attn.head.7:scale(0.5)",
            "layers.4.shared_expert:mute",
            "layers.1.dense_residual:mute",
            "layers.0.attn.head.0:uniform",
        ] {
            assert_eq!(s.parse::<Intervention>().unwrap().to_string(), s);
        }
        assert_eq!("layers.1.attn.head.2:scale=2".parse::<Intervention>().unwrap(), parse_head_mask("1:2:scale=2").unwrap());
        let e = "layers.3.experts.5:zero".parse::<Intervention>().unwrap_err();
        assert!(e.contains("layers.3.experts.5") && e.contains("reroute, drop"), "{e}");
        let e = "layers.3.router.experts:drop".parse::<Intervention>().unwrap_err();
        assert!(e.contains("not an intervention site"), "{e}");
    }

    #[test]
    fn interventions_round_trip_through_json() {
        let set = Interventions::new(vec![
            Intervention::Expert { layer: 1, expert: 2, method: ExpertMethod::Drop },
            Intervention::Head { layer: 0, head: 3, method: HeadMethod::Scale { factor: 0.5 } },
            Intervention::Head { layer: 0, head: 1, method: HeadMethod::Mean { reference: vec![0.25, -1.0] } },
            Intervention::SharedExpert { layer: 4 },
        ]);
        let json = serde_json::to_string(&set).unwrap();
        assert!(json.contains(r#""target":"expert""#), "{json}");
        let back: Interventions = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
    }
}
