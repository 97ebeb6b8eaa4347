//! Activation patching: activations a source run recorded, copied into another run at chosen
//! (site, position) pairs, the rest of that run computed as usual (causal tracing).
//!
//! A site is a hook point:
//! - `layers.{l}.hidden`: the residual stream after layer `l`;
//! - `layers.{l}.attn.out`, `layers.{l}.mlp.out`: what attention or the feed-forward block adds
//!   to the residual stream;
//! - `layers.{l}.attn.head.{h}`: one head's output, its slice of o_proj's input (`attn.z`);
//! - `layers.{l}.experts.{e}`: one expert's weighted contribution. The target's contribution of
//!   `e` at the position (zero where it did not select `e`) is replaced by the source's (zero
//!   where the source did not); routing and every other expert stay the target's;
//! - `layers.{l}.shared_expert`, `layers.{l}.dense_residual`: the shared experts' contribution
//!   after their gate, Arctic's parallel dense MLP's.
//!
//! The values come from the source run's capture of the matching hook ([`source_hook`]).
//! Captures of a patched run record the patched `hidden`, `attn.out`, `mlp.out`, `attn.z`,
//! `moe.shared_out` and `moe.dense_out`; `moe.expert_out` records the experts as computed,
//! before an expert patch.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::hooks::{HookPoint, Quantity};
use crate::store::CaptureStore;

/// One activation copied in: at `site`, absolute position `position`, the values `value`
/// (`D` values; a head's `dv`).
#[derive(Clone, Debug, PartialEq)]
pub struct Patch {
    pub site: HookPoint,
    pub position: usize,
    pub value: Vec<f32>,
}

/// A row of some site at an absolute position, and the values it takes.
pub type Row = (usize, Vec<f32>);

/// One layer's patches, by site.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerPatch {
    pub hidden: Vec<Row>,
    pub attn_out: Vec<Row>,
    pub mlp_out: Vec<Row>,
    /// `(head, row)`.
    pub heads: Vec<(usize, Row)>,
    /// `(expert, row)`.
    pub experts: Vec<(usize, Row)>,
    pub shared: Vec<Row>,
    pub dense: Vec<Row>,
}

/// A run's patches, validated against the model and resolved per layer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Patches {
    pub items: Vec<Patch>,
    pub layers: BTreeMap<usize, LayerPatch>,
}

/// The sites a patch can name, for messages.
pub const SITE_FORMS: &str = "layers.L.hidden, layers.L.attn.out, layers.L.mlp.out, layers.L.attn.head.H, layers.L.experts.E, layers.L.shared_expert, layers.L.dense_residual";

/// The captured hook whose rows a site's values come from (None: not a patch site).
pub fn source_hook(site: &HookPoint) -> Option<HookPoint> {
    let layer = site.layer_index()?;
    let q = match site {
        HookPoint::Layer { quantity: q @ (Quantity::Hidden | Quantity::AttnOut | Quantity::MlpOut), .. } => *q,
        HookPoint::Head { .. } => Quantity::AttnZ,
        HookPoint::Expert { .. } => Quantity::ExpertOut,
        HookPoint::SharedExpert { .. } => Quantity::SharedOut,
        HookPoint::DenseResidual { .. } => Quantity::DenseOut,
        _ => return None,
    };
    Some(HookPoint::layer(layer, q))
}

impl Patch {
    /// The value `source` recorded for `site` at `position`: its row of [`source_hook`]'s
    /// tensor (a head's slice of `attn.z`; an expert's slot of `moe.expert_out`, zeros where the
    /// source did not select it).
    pub fn from_store(source: &CaptureStore, site: HookPoint, position: usize) -> std::result::Result<Patch, String> {
        let hook = source_hook(&site).ok_or_else(|| format!("{site} is not a patch site; sites are {SITE_FORMS}"))?;
        if position >= source.len() {
            return Err(format!("position {position} is past the source run's {} positions", source.len()));
        }
        let row =
            source.row_f32(&hook, position).ok_or_else(|| format!("the source run did not record {hook}, which patching {site} copies"))?;
        let value = match site {
            HookPoint::Head { head, .. } => {
                let heads = source.get(&hook).and_then(|s| s.row_shape.first().copied()).unwrap_or(0);
                let dv = row.len() / heads.max(1);
                row.get(head * dv..(head + 1) * dv).ok_or_else(|| format!("{site}: the source has {heads} heads"))?.to_vec()
            }
            HookPoint::Expert { layer, expert } => {
                let ids = source
                    .row_u32(&HookPoint::layer(layer, Quantity::RouterExperts), position)
                    .ok_or_else(|| format!("the source run did not record layers.{layer}.router.experts, which patching {site} reads"))?;
                let d = row.len() / ids.len().max(1);
                match ids.iter().position(|&e| e as usize == expert) {
                    Some(slot) => row[slot * d..(slot + 1) * d].to_vec(),
                    None => vec![0.0; d],
                }
            }
            _ => row.to_vec(),
        };
        Ok(Patch { site, position, value })
    }
}

impl Patches {
    /// Checks each patch against the model (the site exists, the value has its width) and
    /// groups them by layer.
    pub fn new(items: Vec<Patch>, config: &ModelConfig) -> Result<Patches> {
        let mut layers: BTreeMap<usize, LayerPatch> = BTreeMap::new();
        let d = config.hidden_size;
        let dv = config.attention.v_head_dim();
        for p in &items {
            let bad = |why: String| ModelError::Invalid(format!("patch {}@{}: {why}", p.site, p.position));
            let layer = p
                .site
                .layer_index()
                .filter(|&l| l < config.num_layers)
                .ok_or_else(|| bad(format!("the model has {} layers; sites are {SITE_FORMS}", config.num_layers)))?;
            let moe = config.moe(layer);
            let (width, lp) = (p.value.len(), layers.entry(layer).or_default());
            let row = (p.position, p.value.clone());
            let want = match p.site {
                HookPoint::Layer { quantity: Quantity::Hidden, .. } => {
                    lp.hidden.push(row);
                    d
                }
                HookPoint::Layer { quantity: Quantity::AttnOut, .. } => {
                    lp.attn_out.push(row);
                    d
                }
                HookPoint::Layer { quantity: Quantity::MlpOut, .. } => {
                    lp.mlp_out.push(row);
                    d
                }
                HookPoint::Head { head, .. } => {
                    if head >= config.attention.num_heads {
                        return Err(bad(format!("the model has {} heads", config.attention.num_heads)));
                    }
                    lp.heads.push((head, row));
                    dv
                }
                HookPoint::Expert { expert, .. } => {
                    let m = moe.ok_or_else(|| bad(format!("layer {layer} has no experts")))?;
                    if expert >= m.routing.num_experts {
                        return Err(bad(format!("layer {layer} has {} experts", m.routing.num_experts)));
                    }
                    lp.experts.push((expert, row));
                    d
                }
                HookPoint::SharedExpert { .. } => {
                    if moe.and_then(|m| m.shared.as_ref()).is_none() {
                        return Err(bad(format!("layer {layer} has no shared expert")));
                    }
                    lp.shared.push(row);
                    d
                }
                HookPoint::DenseResidual { .. } => {
                    if moe.and_then(|m| m.dense_residual.as_ref()).is_none() {
                        return Err(bad(format!("layer {layer} has no dense residual MLP")));
                    }
                    lp.dense.push(row);
                    d
                }
                _ => return Err(bad(format!("not a patch site; sites are {SITE_FORMS}"))),
            };
            if width != want {
                return Err(bad(format!("{width} values where the site has {want}")));
            }
            if p.value.iter().any(|v| !v.is_finite()) {
                return Err(bad("a value is not finite".into()));
            }
        }
        Ok(Patches { items, layers })
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// `rows` of a site that fall in this call's positions `start..start + t`, as (row in the
/// call, values).
pub fn in_call(rows: &[Row], start: usize, t: usize) -> impl Iterator<Item = (usize, &[f32])> {
    rows.iter().filter_map(move |(pos, v)| pos.checked_sub(start).filter(|&r| r < t).map(|r| (r, v.as_slice())))
}

/// `x` `[T, D]` with the rows of `rows` in this call replaced.
pub fn replace_rows(x: Tensor, rows: &[Row], start: usize) -> Result<Tensor> {
    let (t, d) = x.dims2()?;
    let mut x = x;
    for (r, v) in in_call(rows, start, t) {
        let src = Tensor::from_slice(v, (1, d), x.device())?.to_dtype(x.dtype())?;
        x = x.slice_assign(&[r..r + 1, 0..d], &src)?;
    }
    Ok(x)
}

/// `z` `[T, H, dv]` with the (head, row) slices of `heads` in this call replaced.
pub fn replace_heads(z: Tensor, heads: &[(usize, Row)], start: usize) -> Result<Tensor> {
    let (t, _, dv) = z.dims3()?;
    let mut z = z;
    for (h, row) in heads {
        for (r, v) in in_call(std::slice::from_ref(row), start, t) {
            let src = Tensor::from_slice(v, (1, 1, dv), z.device())?.to_dtype(z.dtype())?;
            z = z.slice_assign(&[r..r + 1, *h..*h + 1, 0..dv], &src)?;
        }
    }
    Ok(z)
}

/// `out` `[T, D]` with `delta` added to row `r`.
pub fn add_to_row(out: Tensor, r: usize, delta: &Tensor) -> Result<Tensor> {
    let d = out.dim(1)?;
    let row = (out.narrow(0, r, 1)? + delta.reshape((1, d))?.to_dtype(out.dtype())?)?;
    Ok(out.slice_assign(&[r..r + 1, 0..d], &row)?)
}

/// Zeros `[T, D]` of `like`'s dtype and device, for a site computed as nothing (a muted block)
/// that a patch fills.
pub fn zeros_like_rows(like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::zeros(like.dims2()?, like.dtype(), like.device())?)
}

/// f32 values as a `[D]` tensor on `like`'s device, in f32.
pub fn values(v: &[f32], like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, v.len(), like.device())?.to_dtype(DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn rows_outside_the_call_are_left_alone() {
        let x = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
        // Positions 4 and 6 with a call over positions 4..7: rows 0 and 2; position 9 is later.
        let rows = vec![(4, vec![1.0, 2.0]), (6, vec![3.0, 4.0]), (9, vec![5.0, 6.0])];
        let y = replace_rows(x, &rows, 4).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y, vec![vec![1.0, 2.0], vec![0.0, 0.0], vec![3.0, 4.0]]);
    }

    #[test]
    fn a_head_patch_replaces_one_heads_slice() {
        let z = Tensor::ones((2, 3, 2), DType::F32, &Device::Cpu).unwrap();
        let y = replace_heads(z, &[(1, (1, vec![7.0, 8.0]))], 0).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(y[1], vec![vec![1.0, 1.0], vec![7.0, 8.0], vec![1.0, 1.0]]);
        assert_eq!(y[0], vec![vec![1.0; 2]; 3]);
    }
}
