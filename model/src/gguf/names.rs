//! GGUF tensor names (llama.cpp's `blk.{l}.attn_q.weight`, …) → the Hugging Face names the
//! family's [`TensorLayout`] uses, so a GGUF model loads through the same code as a
//! safetensors checkpoint.
//!
//! llama.cpp stacks a layer's routed experts into one tensor per projection
//! (`ffn_gate_exps` `[E, I, D]`); each expert's HF name points at its slice of that tensor.

use std::collections::HashMap;

use crate::families::layout::{AttnNames, ExpertNames, MlpNames, TensorLayout};

/// Where a Hugging Face tensor lives in the GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Source {
    /// The GGUF tensor.
    pub gguf: String,
    /// Expert `e` of a stacked `[E, …]` tensor, or the whole tensor.
    pub expert: Option<usize>,
    /// DeepSeek's `kv_b_proj`, which llama.cpp splits per head into `attn_k_b`
    /// `[H, kv_lora, nope]` (this source's `gguf`) and `attn_v_b` `[H, v, kv_lora]` (here).
    pub v_b: Option<String>,
    /// DBRX keeps its experts as `[E·I, D]` tensors: the GGUF's `[E, I, D]` with its first two
    /// dimensions merged, and for `w2` (applied as `x @ w2`) each expert's `[D, I]` transposed.
    pub merge: Merge,
}

/// How a stacked GGUF tensor becomes the HF tensor (see [`Source::merge`]).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub(crate) enum Merge {
    #[default]
    None,
    /// `[E, I, D]` → `[E·I, D]`.
    Experts,
    /// `[E, D, I]` → each expert transposed → `[E·I, D]`.
    ExpertsTransposed,
}

/// `(gate, up, down)` projection names of an MLP, or `None` for fused gate/up (one name for
/// llama.cpp's `ffn_up`, which then holds the gate rows first, as Phi-3 stores them).
fn mlp_parts(names: MlpNames) -> (Option<&'static str>, &'static str, &'static str) {
    match names {
        MlpNames::Separate { gate, up, down } => (Some(gate), up, down),
        MlpNames::Fused { gate_up, down } => (None, gate_up, down),
    }
}

/// The HF name of a per-layer GGUF tensor `{stem}.{kind}` (`kind` is `weight` or `bias`),
/// for layer prefix `p`; experts are handled by the caller.
fn layer_name(layout: &TensorLayout, p: &str, stem: &str, kind: &str) -> Option<String> {
    let (mlp_prefix, mlp_names) = layout.mlp;
    let (gate, up, down) = mlp_parts(mlp_names);
    let moe = layout.moe;
    let shared = moe.and_then(|m| m.shared.map(|(prefix, names)| (m.block, prefix, mlp_parts(names))));
    // Arctic: llama.cpp's ffn_norm / ffn_{gate,up,down} are the dense residual MLP beside the
    // MoE, and ffn_norm_exps is the norm before the experts.
    if let Some(r) = layout.dense_residual {
        let (gate, up, down) = mlp_parts(r.names);
        let name = match stem {
            "ffn_norm" => format!("{p}.{}", r.norm),
            "ffn_norm_exps" => format!("{p}.{}", layout.ffn_norm),
            "ffn_gate" => format!("{p}.{}.{}", r.mlp, gate?),
            "ffn_up" => format!("{p}.{}.{up}", r.mlp),
            "ffn_down" => format!("{p}.{}.{down}", r.mlp),
            _ => String::new(),
        };
        if !name.is_empty() {
            return Some(format!("{name}.{kind}"));
        }
    }
    let name = match (stem, layout.attn) {
        ("attn_norm", _) => format!("{p}.{}", layout.attn_norm),
        ("ffn_norm", _) => format!("{p}.{}", layout.ffn_norm),
        // DBRX's second norm (before the experts) sits in its attention block.
        ("attn_output_norm", _) => format!("{p}.{}", layout.ffn_norm),
        ("attn_q", AttnNames::Separate { prefix, q, .. }) => format!("{p}.{prefix}.{q}"),
        ("attn_k", AttnNames::Separate { prefix, k, .. }) => format!("{p}.{prefix}.{k}"),
        ("attn_v", AttnNames::Separate { prefix, v, .. }) => format!("{p}.{prefix}.{v}"),
        ("attn_q_norm", AttnNames::Separate { prefix, q_norm, .. }) => format!("{p}.{prefix}.{q_norm}"),
        ("attn_k_norm", AttnNames::Separate { prefix, k_norm, .. }) => format!("{p}.{prefix}.{k_norm}"),
        ("attn_output", AttnNames::Separate { prefix, o, .. } | AttnNames::Fused { prefix, o, .. }) => format!("{p}.{prefix}.{o}"),
        ("attn_qkv", AttnNames::Fused { prefix, qkv, .. }) => format!("{p}.{prefix}.{qkv}"),
        ("attn_output", AttnNames::Mla { prefix }) => format!("{p}.{prefix}.o_proj"),
        ("attn_q", AttnNames::Mla { prefix }) => format!("{p}.{prefix}.q_proj"),
        ("attn_q_a", AttnNames::Mla { prefix }) => format!("{p}.{prefix}.q_a_proj"),
        ("attn_q_a_norm", AttnNames::Mla { prefix }) => format!("{p}.{prefix}.q_a_layernorm"),
        ("attn_q_b", AttnNames::Mla { prefix }) => format!("{p}.{prefix}.q_b_proj"),
        ("attn_kv_a_mqa", AttnNames::Mla { prefix }) => format!("{p}.{prefix}.kv_a_proj_with_mqa"),
        ("attn_kv_a_norm", AttnNames::Mla { prefix }) => format!("{p}.{prefix}.kv_a_layernorm"),
        ("attn_kv_b", AttnNames::Mla { prefix }) => format!("{p}.{prefix}.kv_b_proj"),
        ("ffn_gate", _) => format!("{p}.{mlp_prefix}.{}", gate?),
        ("ffn_up", _) => format!("{p}.{mlp_prefix}.{up}"),
        ("ffn_down", _) => format!("{p}.{mlp_prefix}.{down}"),
        ("ffn_gate_inp", _) => {
            let m = moe?;
            format!("{p}.{}.{}", m.block, m.router.strip_suffix(".weight").unwrap_or(m.router))
        }
        // DeepSeek-V3's router correction bias: a bare tensor in HF, `.bias` in GGUF.
        ("exp_probs_b", _) => {
            let m = moe?;
            return Some(format!("{p}.{}.{}", m.block, m.correction_bias?));
        }
        ("ffn_gate_inp_shexp", _) => {
            let m = moe?;
            let g = m.shared_gate?;
            format!("{p}.{}.{}", m.block, g.strip_suffix(".weight").unwrap_or(g))
        }
        ("ffn_gate_shexp", _) => {
            let (block, prefix, (gate, _, _)) = shared?;
            format!("{p}.{block}.{prefix}.{}", gate?)
        }
        ("ffn_up_shexp", _) => {
            let (block, prefix, (_, up, _)) = shared?;
            format!("{p}.{block}.{prefix}.{up}")
        }
        ("ffn_down_shexp", _) => {
            let (block, prefix, (_, _, down)) = shared?;
            format!("{p}.{block}.{prefix}.{down}")
        }
        _ => return None,
    };
    Some(format!("{name}.{kind}"))
}

/// The HF names of the experts' projection `stem` (`ffn_gate_exps`, …) of layer prefix `p`,
/// one per expert.
fn expert_names(layout: &TensorLayout, p: &str, stem: &str, experts: usize) -> Option<Vec<String>> {
    let m = layout.moe?;
    let ExpertNames::PerExpert { experts: dir, mlp } = m.experts else { return None };
    let (gate, up, down) = mlp_parts(mlp);
    let part = match stem {
        "ffn_gate_exps" => gate?,
        "ffn_up_exps" => up,
        "ffn_down_exps" => down,
        _ => return None,
    };
    Some((0..experts).map(|e| format!("{p}.{}.{dir}.{e}.{part}.weight", m.block)).collect())
}

/// HF name → source for every GGUF tensor the layout knows; the names it does not know are
/// returned second (a file with tensors RouteLab would silently ignore is refused by the
/// caller).
pub(crate) fn map_names<'a>(
    layout: &TensorLayout,
    gguf_names: impl Iterator<Item = &'a String>,
    experts: usize,
) -> (HashMap<String, Source>, Vec<String>) {
    let (mut map, mut unknown) = (HashMap::new(), Vec::new());
    let whole = |g: &str| Source { gguf: g.to_string(), expert: None, v_b: None, merge: Merge::None };
    for g in gguf_names {
        let hf = match g.as_str() {
            "token_embd.weight" => Some(layout.embed.to_string()),
            "output_norm.weight" => Some(format!("{}.weight", layout.final_norm)),
            "output_norm.bias" => Some(format!("{}.bias", layout.final_norm)),
            "output.weight" => Some(format!("{}.weight", layout.lm_head)),
            "output.bias" => Some(format!("{}.bias", layout.lm_head)),
            // Rotary tables, read into the config by the caller.
            "rope_freqs.weight" | "rope_factors_short.weight" | "rope_factors_long.weight" => None,
            _ => {
                let parsed = g.strip_prefix("blk.").and_then(|rest| {
                    let (layer, part) = rest.split_once('.')?;
                    let (stem, kind) = part.rsplit_once('.')?;
                    Some((layer.parse::<usize>().ok()?, stem, kind))
                });
                match parsed {
                    Some((l, stem @ ("ffn_gate_exps" | "ffn_up_exps" | "ffn_down_exps"), "weight"))
                        if matches!(layout.moe.map(|m| m.experts), Some(ExpertNames::DbrxStacked { .. })) =>
                    {
                        let Some(m) = layout.moe else { continue };
                        let ExpertNames::DbrxStacked { prefix } = m.experts else { continue };
                        let (part, merge) = match stem {
                            "ffn_gate_exps" => ("w1", Merge::Experts),
                            "ffn_up_exps" => ("v1", Merge::Experts),
                            _ => ("w2", Merge::ExpertsTransposed),
                        };
                        let hf = format!("{}.{}.{prefix}.{part}", layout.layer_prefix(l), m.block);
                        map.insert(hf, Source { gguf: g.clone(), expert: None, v_b: None, merge });
                        continue;
                    }
                    Some((l, stem @ ("ffn_gate_exps" | "ffn_up_exps" | "ffn_down_exps"), "weight")) => {
                        match expert_names(layout, &layout.layer_prefix(l), stem, experts) {
                            Some(names) => {
                                for (e, hf) in names.into_iter().enumerate() {
                                    map.insert(hf, Source { gguf: g.clone(), expert: Some(e), v_b: None, merge: Merge::None });
                                }
                                continue;
                            }
                            None => None,
                        }
                    }
                    // The two halves of DeepSeek's kv_b_proj: one HF tensor from both.
                    Some((l, stem @ ("attn_k_b" | "attn_v_b"), "weight")) => {
                        match layer_name(layout, &layout.layer_prefix(l), "attn_kv_b", "weight") {
                            Some(hf) => {
                                if stem == "attn_k_b" {
                                    let v_b = format!("blk.{l}.attn_v_b.weight");
                                    map.insert(hf, Source { gguf: g.clone(), expert: None, v_b: Some(v_b), merge: Merge::None });
                                }
                                continue;
                            }
                            None => None,
                        }
                    }
                    Some((l, stem, kind @ ("weight" | "bias"))) => layer_name(layout, &layout.layer_prefix(l), stem, kind),
                    _ => None,
                }
            }
        };
        match hf {
            Some(hf) => {
                map.insert(hf, whole(g));
            }
            None if g.starts_with("rope_") => {}
            None => unknown.push(g.clone()),
        }
    }
    unknown.sort();
    (map, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::Family;

    fn one(family: Family, g: &str, experts: usize) -> Vec<(String, Source)> {
        let names = [g.to_string()];
        let (map, unknown) = map_names(&family.layout(), names.iter(), experts);
        assert!(unknown.is_empty(), "{g} unknown for {family:?}");
        let mut v: Vec<_> = map.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn llama_names() {
        assert_eq!(one(Family::Llama, "blk.3.attn_q.weight", 0)[0].0, "model.layers.3.self_attn.q_proj.weight");
        assert_eq!(one(Family::Llama, "token_embd.weight", 0)[0].0, "model.embed_tokens.weight");
        assert_eq!(one(Family::Qwen2, "blk.0.attn_k.bias", 0)[0].0, "model.layers.0.self_attn.k_proj.bias");
        assert_eq!(one(Family::Qwen3, "blk.1.attn_k_norm.weight", 0)[0].0, "model.layers.1.self_attn.k_norm.weight");
        let (_, unknown) =
            map_names(&Family::Llama.layout(), ["blk.x.attn_q.weight".to_string(), "blk.0.wat.weight".to_string()].iter(), 0);
        assert_eq!(unknown.len(), 2);
    }

    #[test]
    fn stacked_experts_become_one_name_per_expert() {
        let v = one(Family::Mixtral, "blk.2.ffn_up_exps.weight", 4);
        assert_eq!(v.len(), 4);
        assert_eq!(v[1].0, "model.layers.2.block_sparse_moe.experts.1.w3.weight");
        assert_eq!(v[1].1, Source { gguf: "blk.2.ffn_up_exps.weight".into(), expert: Some(1), v_b: None, merge: Merge::None });
        let d = one(Family::Dbrx, "blk.1.ffn_down_exps.weight", 4);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, "transformer.blocks.1.ffn.experts.mlp.w2");
        assert_eq!(d[0].1.merge, Merge::ExpertsTransposed);
        assert_eq!(one(Family::Dbrx, "blk.1.attn_output_norm.weight", 4)[0].0, "transformer.blocks.1.norm_attn_norm.norm_2.weight");
        assert_eq!(one(Family::Mixtral, "blk.2.ffn_gate_inp.weight", 4)[0].0, "model.layers.2.block_sparse_moe.gate.weight");
        assert_eq!(one(Family::Olmoe, "blk.0.ffn_down_exps.weight", 2)[0].0, "model.layers.0.mlp.experts.0.down_proj.weight");
    }

    #[test]
    fn shared_experts_gates_and_fused_projections() {
        assert_eq!(one(Family::Qwen2Moe, "blk.1.ffn_gate_inp_shexp.weight", 4)[0].0, "model.layers.1.mlp.shared_expert_gate.weight");
        assert_eq!(one(Family::Qwen2Moe, "blk.1.ffn_down_shexp.weight", 4)[0].0, "model.layers.1.mlp.shared_expert.down_proj.weight");
        assert_eq!(one(Family::DeepseekV3, "blk.3.exp_probs_b.bias", 4)[0].0, "model.layers.3.mlp.gate.e_score_correction_bias");
        assert_eq!(one(Family::Phi3, "blk.0.attn_qkv.weight", 0)[0].0, "model.layers.0.self_attn.qkv_proj.weight");
        assert_eq!(one(Family::Arctic, "blk.2.ffn_norm.weight", 4)[0].0, "model.layers.2.residual_layernorm.weight");
        assert_eq!(one(Family::Arctic, "blk.2.ffn_norm_exps.weight", 4)[0].0, "model.layers.2.post_attention_layernorm.weight");
        assert_eq!(one(Family::Arctic, "blk.2.ffn_down.weight", 4)[0].0, "model.layers.2.residual_mlp.w2.weight");
        assert_eq!(one(Family::Phi3, "blk.0.ffn_up.weight", 0)[0].0, "model.layers.0.mlp.gate_up_proj.weight");
        assert_eq!(one(Family::DeepseekV2, "blk.0.attn_kv_a_mqa.weight", 4)[0].0, "model.layers.0.self_attn.kv_a_proj_with_mqa.weight");
        let kb = one(Family::DeepseekV2, "blk.1.attn_k_b.weight", 4);
        assert_eq!(kb[0].0, "model.layers.1.self_attn.kv_b_proj.weight");
        assert_eq!(kb[0].1.v_b.as_deref(), Some("blk.1.attn_v_b.weight"));
        let (map, unknown) = map_names(&Family::DeepseekV2.layout(), ["blk.1.attn_v_b.weight".to_string()].iter(), 4);
        assert!(map.is_empty() && unknown.is_empty(), "v_b is read with k_b");
    }
}
