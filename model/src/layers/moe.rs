//! The sparse mixture-of-experts block: router, top-k routing, the selected experts, and the
//! optional shared expert(s).
//!
//! `y = Σ_k w_k · E_{e_k}(x)  [+ g(x) · S(x)]`
//!
//! Routing runs through [`routelab_kernels::routing`], which covers every family's scheme.
//! Experts run only on the tokens routed to them, in expert order (as transformers
//! accumulates), each as one batched matmul over its tokens.
//!
//! On CUDA (bf16/f16) nothing leaves the device: routing runs as
//! [`routelab_kernels::router_op`]'s kernel, and the selected experts run as two grouped GEMMs
//! over experts stacked `[E, 2I, D]` / `[E, D, I]` (candle's `moe_gemm`, fed with the
//! expert-sorted token order). The per-expert loop needs the routing on the host, so it stays
//! the CPU path and the fallback for f32 on CUDA.

use candle_core::{DType, Tensor};
use routelab_kernels::matmul;
use routelab_kernels::router_op::{aux_tensor, route_tensor, RouterTopK};
use routelab_kernels::routing::{route, weights_for, Routes, RoutingParams};

use crate::config::{Activation, ModelConfig, MoeConfig};
use crate::error::{ModelError, Result};
use crate::families::layout::{ExpertNames, MlpNames, MoeNames, TensorLayout};
use crate::hooks::Quantity;
use crate::layers::blocks;
use crate::layers::context::LayerCtx;
use crate::layers::linear::{tensor_bytes, Linear};
use crate::layers::mlp::{activate, Mlp};
use crate::weights::Weights;

#[derive(Clone, Debug)]
pub struct Moe {
    /// `[E, D]`, f32 (routers run in f32 whatever the run dtype).
    router: Tensor,
    correction_bias: Option<Vec<f32>>,
    routing: RoutingParams,
    experts: Vec<Mlp>,
    shared: Option<Mlp>,
    /// Qwen2-MoE's `[1, D]` shared-expert gate.
    shared_gate: Option<Linear>,
    /// On CUDA: the experts stacked for grouped GEMMs (`experts` are views into these), and the
    /// router op's aux tensor without interventions.
    device_path: Option<DevicePath>,
}

#[derive(Clone, Debug)]
struct DevicePath {
    /// `[E, 2I, D]`, gate rows then up rows.
    gate_up: Tensor,
    /// `[E, D, I]`.
    down: Tensor,
    aux: Tensor,
}

/// Tokens per grouped-GEMM call: candle's CUDA sort works in shared memory on one row, so the
/// `T·k` expert ids of a chunk stay below this.
const SORT_LIMIT: usize = 8192;

/// `t` as a tensor whose data starts at offset 0 of its own storage: candle's `moe_gemm`
/// reads its inputs' raw device buffers and ignores layouts, so a row range of a larger tensor
/// (contiguous, but at an offset) would be read from the wrong rows. (`Tensor::copy` keeps the
/// offset; `force_contiguous` does not.)
fn own_storage(t: Tensor) -> Result<Tensor> {
    Ok(if t.is_contiguous() && t.layout().start_offset() == 0 { t } else { t.force_contiguous()? })
}

/// Loads all experts' MLPs in whichever layout the checkpoint uses; stacked layouts are read
/// once and sliced.
fn load_experts(w: &Weights, block: &str, names: ExpertNames, m: &MoeConfig, c: &ModelConfig) -> Result<Vec<Mlp>> {
    let (d, i, ne) = (c.hidden_size, m.expert_intermediate_size, m.routing.num_experts);
    let act = c.activation;
    match names {
        ExpertNames::PerExpert { experts, mlp } => {
            let first = match mlp {
                MlpNames::Separate { gate, .. } => gate,
                MlpNames::Fused { gate_up, .. } => gate_up,
            };
            let fused = format!("{block}.{experts}.gate_up_proj");
            if !w.contains(&format!("{block}.{experts}.0.{first}.weight")) && w.contains(&fused) {
                // transformers ≥ 5 in-memory layout saved as is: gate_up [E, 2I, D], down [E, D, I].
                let gu = w.get_cpu_f32(&fused, &[ne, 2 * i, d])?;
                let down = w.get_cpu_f32(&format!("{block}.{experts}.down_proj"), &[ne, d, i])?;
                return (0..ne).map(|e| Mlp::from_parts(w.place(gu.get(e)?)?, w.place(down.get(e)?)?, act)).collect();
            }
            (0..ne)
                .map(|e| {
                    let per_expert = format!("{block}.{experts}.{e}");
                    if !w.contains(&format!("{per_expert}.{first}.weight")) {
                        return Err(w.missing(&format!("{per_expert}.{first}.weight"), Some(format!("expert {e} of {ne}"))));
                    }
                    Mlp::load(w, &per_expert, mlp, d, i, false, act)
                })
                .collect()
        }
        ExpertNames::DbrxStacked { prefix } => {
            let p = format!("{block}.{prefix}");
            let all = |name: &str| w.get_cpu_f32(&format!("{p}.{name}"), &[ne * i, d]);
            let (w1, v1, w2) = (all("w1")?, all("v1")?, all("w2")?);
            (0..ne)
                .map(|e| {
                    let gate_up = Tensor::cat(&[w1.narrow(0, e * i, i)?, v1.narrow(0, e * i, i)?], 0)?;
                    // w2 is applied as `x @ w2`, i.e. it is the transposed down projection.
                    let down = w2.narrow(0, e * i, i)?.t()?.contiguous()?;
                    Mlp::from_parts(w.place(gate_up)?, w.place(down)?, act)
                })
                .collect()
        }
    }
}

impl Moe {
    pub fn load(w: &Weights, c: &ModelConfig, layout: &TensorLayout, layer: usize, m: &MoeConfig) -> Result<Self> {
        let names: MoeNames = layout.moe.ok_or_else(|| ModelError::Invalid(format!("internal: {:?} has no MoE layout", c.family)))?;
        let block = format!("{}.{}", layout.layer_prefix(layer), names.block);
        let d = c.hidden_size;
        let ne = m.routing.num_experts;
        let router = w.get_as(&format!("{block}.{}", names.router), &[ne, d], DType::F32)?;
        let correction_bias = match (m.correction_bias, names.correction_bias) {
            (true, Some(n)) => Some(w.get_as(&format!("{block}.{n}"), &[ne], DType::F32)?.to_vec1::<f32>()?),
            _ => None,
        };
        let experts = load_experts(w, &block, names.experts, m, c)?;
        let (shared, shared_gate) = match (m.shared, names.shared) {
            (Some(s), Some((prefix, mlp_names))) => {
                let mlp = Mlp::load(w, &format!("{block}.{prefix}"), mlp_names, d, s.intermediate_size, false, c.activation)?;
                let gate = match (s.gated, names.shared_gate) {
                    (true, Some(g)) => Some(Linear::new(w.get_as(&format!("{block}.{g}"), &[1, d], w.compute_dtype())?, None)),
                    _ => None,
                };
                (Some(mlp), gate)
            }
            _ => (None, None),
        };
        let mut moe = Moe { router, correction_bias, routing: m.routing.clone(), experts, shared, shared_gate, device_path: None };
        // moe_gemm reads rows 8 elements (16 bytes) at a time: both inner dimensions must be
        // multiples of 8 (true of every released model); otherwise the host path runs.
        // Experts kept in GGUF blocks run one by one on their blocks (stacking would
        // dequantise them).
        let aligned = d.is_multiple_of(8) && moe.experts.iter().all(|e| e.down.in_dim().is_multiple_of(8));
        let plain = moe
            .experts
            .iter()
            .all(|e| e.gate_up.bias.is_none() && e.down.bias.is_none() && !e.gate_up.is_quantized() && !e.down.is_quantized());
        if w.device().is_cuda() && aligned && plain {
            moe.stack_experts()?;
        }
        Ok(moe)
    }

    /// Stacks the experts for the CUDA path and re-points each expert at its slice of the
    /// stack, so the weights exist once.
    fn stack_experts(&mut self) -> Result<()> {
        let gate_up = Tensor::stack(&self.experts.iter().map(|e| e.gate_up.rows()).collect::<Result<Vec<_>>>()?, 0)?;
        let down = Tensor::stack(&self.experts.iter().map(|e| e.down.rows()).collect::<Result<Vec<_>>>()?, 0)?;
        let act = self.activation();
        self.experts = (0..self.experts.len()).map(|e| Mlp::from_parts(gate_up.get(e)?, down.get(e)?, act)).collect::<Result<_>>()?;
        let ne = self.routing.num_experts;
        let aux = aux_tensor(ne, self.correction_bias.as_deref(), &[], &[], gate_up.device())?;
        self.device_path = Some(DevicePath { gate_up, down, aux });
        Ok(())
    }

    /// Every projection of every expert, the shared expert and its gate, for [`Linear::pack`].
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut all: Vec<&mut Linear> = self.experts.iter_mut().flat_map(Mlp::linears_mut).collect();
        all.extend(self.shared.iter_mut().flat_map(Mlp::linears_mut));
        all.extend(self.shared_gate.iter_mut());
        all
    }

    /// Bytes of weights one token reads: the router, `top_k` experts (of average size) and the
    /// shared expert and its gate.
    pub fn active_bytes(&self) -> usize {
        let experts: usize = self.experts.iter().map(Mlp::bytes).sum();
        let selected = experts * self.routing.top_k / self.experts.len().max(1);
        tensor_bytes(&self.router)
            + selected
            + self.shared.as_ref().map_or(0, Mlp::bytes)
            + self.shared_gate.as_ref().map_or(0, Linear::bytes)
    }

    /// The router's selection bias (DeepSeek-V3's `e_score_correction_bias`), if any.
    pub fn correction_bias(&self) -> Option<&[f32]> {
        self.correction_bias.as_deref()
    }

    pub fn activation(&self) -> Activation {
        self.experts[0].activation
    }

    /// `x` `[T, D]` (already normed); returns the routed (plus shared) experts' output and pushes
    /// the routing and contribution norms `ctx` asks for.
    pub fn forward(&self, x: &Tensor, ctx: &mut LayerCtx) -> Result<Tensor> {
        let (t, _) = x.dims2()?;
        let edits = ctx.edits;
        let plan = ctx.plan();
        let logits = x.to_dtype(DType::F32)?.matmul(&self.router.t()?)?;
        let mut out = match &self.device_path {
            // A replayed or patched layer, or one recording each expert's output, routes on the
            // host, where rows are replaced and each expert's rows are at hand.
            Some(dp)
                if matches!(x.dtype(), DType::BF16 | DType::F16)
                    && ctx.replay.is_none()
                    && ctx.patch.is_none()
                    && !plan.wants(Quantity::ExpertOut) =>
            {
                self.routed_on_device(x, &logits, dp, ctx)?
            }
            _ => self.routed_on_host(x, &logits, ctx)?,
        };
        ctx.capture.push(Quantity::RouterLogits, &logits);
        if plan.wants(Quantity::RoutedNorm) {
            ctx.capture.push(Quantity::RoutedNorm, &l2(&out)?);
        }
        if let Some(shared) = &self.shared {
            let patches = ctx.patch.map(|p| p.shared.as_slice()).filter(|p| !p.is_empty());
            if !edits.mute_shared || patches.is_some() {
                let mut s = if edits.mute_shared {
                    crate::patch::zeros_like_rows(x)?
                } else {
                    let s = shared.forward(x)?;
                    match &self.shared_gate {
                        Some(g) => candle_nn::ops::sigmoid(&g.forward(x)?)?.broadcast_mul(&s)?,
                        None => s,
                    }
                };
                if let Some(rows) = patches {
                    s = crate::patch::replace_rows(s, rows, ctx.start)?;
                }
                if plan.wants(Quantity::SharedNorm) {
                    ctx.capture.push(Quantity::SharedNorm, &l2(&s)?);
                }
                if plan.wants(Quantity::SharedOut) {
                    ctx.capture.push(Quantity::SharedOut, &s.to_dtype(DType::F32)?);
                }
                out = (out + s)?;
            } else {
                if plan.wants(Quantity::SharedNorm) {
                    ctx.capture.push(Quantity::SharedNorm, &Tensor::zeros(t, DType::F32, x.device())?);
                }
                if plan.wants(Quantity::SharedOut) {
                    ctx.capture.push(Quantity::SharedOut, &Tensor::zeros(x.dims2()?, DType::F32, x.device())?);
                }
            }
        }
        Ok(out)
    }

    /// The GPU path: the router kernel, then two grouped GEMMs over the expert-sorted
    /// (token, slot) pairs; routing never leaves the device.
    fn routed_on_device(&self, x: &Tensor, logits: &Tensor, dp: &DevicePath, ctx: &mut LayerCtx) -> Result<Tensor> {
        let edits = ctx.edits;
        let (t, d) = x.dims2()?;
        let k = self.routing.top_k;
        let ne = self.routing.num_experts;
        let aux = if edits.excluded_experts.iter().any(|&b| b) || edits.dropped_experts.iter().any(|&b| b) {
            aux_tensor(ne, self.correction_bias.as_deref(), &edits.excluded_experts, &edits.dropped_experts, x.device())?
        } else {
            dp.aux.clone()
        };
        let op = RouterTopK::new(self.routing.clone(), self.correction_bias.is_some());
        let r = route_tensor(logits, &aux, &op)?;
        let inter = dp.down.dim(2)?;
        let act = self.activation();
        let chunk = (SORT_LIMIT / k).max(1);
        let mut outs = Vec::new();
        let mut first = 0;
        while first < t {
            let len = chunk.min(t - first);
            let xs = own_storage(x.narrow(0, first, len)?)?;
            let ids = own_storage(r.experts.narrow(0, first, len)?)?;
            let ws = own_storage(r.weights.narrow(0, first, len)?)?;
            let (expert_ids, sorted_slots) = ids.flatten_all()?.sort_last_dim(true)?;
            let prefill = len > 1;
            let gu = candle_nn::moe::moe_gemm(&xs, &dp.gate_up, &None, &sorted_slots, &expert_ids, k, prefill)?;
            let h = (activate(&gu.narrow(1, 0, inter)?, act)? * gu.narrow(1, inter, inter)?)?;
            let y = candle_nn::moe::moe_gemm(&own_storage(h)?, &dp.down, &Some(ws), &sorted_slots, &expert_ids, k, prefill)?;
            outs.push(y.reshape((len, k, d))?.sum(1)?);
            first += len;
        }
        let out = Tensor::cat(&outs, 0)?;
        ctx.capture.push(Quantity::RouterExperts, &r.experts);
        ctx.capture.push(Quantity::RouterWeights, &r.weights);
        if ctx.plan().wants(Quantity::RouterMargin) {
            // A view of the op's output: one more launch, so only when asked for.
            ctx.capture.push(Quantity::RouterMargin, &r.margin()?);
        }
        Ok(out)
    }

    /// The CPU path (and f32 on CUDA): routing on the host, then each selected expert on its
    /// tokens, in expert order. The routing is put back into tensors only when captured.
    fn routed_on_host(&self, x: &Tensor, logits: &Tensor, ctx: &mut LayerCtx) -> Result<Tensor> {
        let (t, _) = x.dims2()?;
        let k = self.routing.top_k;
        let edits = ctx.edits;
        let flat: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let Routes { mut experts, mut weights, margin, .. } =
            route(&flat, &self.routing, self.correction_bias.as_deref(), &edits.excluded_experts);
        if let Some(replay) = ctx.replay {
            let e = self.routing.num_experts;
            for row in 0..t {
                let Some((ids, recorded)) = replay.at(ctx.start + row) else { continue };
                let w = match recorded {
                    Some(w) => w.to_vec(),
                    None => weights_for(&flat[row * e..(row + 1) * e], ids, &self.routing, &edits.excluded_experts).ok_or_else(|| {
                        ModelError::Invalid(
                            "this router's weights depend on its own selection (sparsemixer): replay the weights too".into(),
                        )
                    })?,
                };
                if ids.len() != k || w.len() != k {
                    return Err(ModelError::Invalid(format!("routing replay: {} experts for a top-{k} router", ids.len())));
                }
                experts[row * k..(row + 1) * k].copy_from_slice(ids);
                weights[row * k..(row + 1) * k].copy_from_slice(&w);
            }
        }
        for (e, w) in experts.iter().zip(weights.iter_mut()) {
            if edits.dropped_experts.get(*e as usize).copied().unwrap_or(false) {
                *w = 0.0;
            }
        }
        let device = x.device();
        // Each expert's tokens, weights and (token, slot) indices, in expert order, gathered in
        // one pass.
        let mut picked: Vec<(Vec<u32>, Vec<f32>, Vec<u32>)> = vec![(Vec::new(), Vec::new(), Vec::new()); self.experts.len()];
        for (slot, (&ex, &wt)) in experts.iter().zip(&weights).enumerate() {
            if wt != 0.0 {
                if let Some((rows, ws, slots)) = picked.get_mut(ex as usize) {
                    rows.push((slot / k) as u32);
                    ws.push(wt);
                    slots.push(slot as u32);
                }
            }
        }
        let slots: Vec<Vec<u32>> = picked.iter().filter(|(rows, ..)| !rows.is_empty()).map(|(.., s)| s.clone()).collect();
        let picked: Vec<(usize, Tensor, Vec<f32>)> = picked
            .into_iter()
            .enumerate()
            .filter(|(_, (rows, ..))| !rows.is_empty())
            .map(|(e, (rows, ws, _))| Ok((e, Tensor::from_vec(rows, ws.len(), device)?, ws)))
            .collect::<Result<_>>()?;
        let packed: Option<Vec<_>> = self.experts.iter().map(Mlp::packed).collect();
        let ys: Vec<Tensor> = if let Some(packed) = packed.filter(|_| x.dtype() == DType::F32) {
            // All selected experts' projections in one parallel region each.
            let xs = picked.iter().map(|(_, idx, _)| x.index_select(idx, 0)).collect::<candle_core::Result<Vec<_>>>()?;
            let pairs: Vec<_> = picked.iter().zip(&xs).map(|((e, ..), xe)| (xe, packed[*e].0)).collect();
            let gu = matmul::matmul_t_grouped(&pairs)?;
            let hs = picked.iter().zip(&gu).map(|((e, ..), g)| self.experts[*e].gated(g)).collect::<Result<Vec<_>>>()?;
            let pairs: Vec<_> = picked.iter().zip(&hs).map(|((e, ..), h)| (h, packed[*e].1)).collect();
            matmul::matmul_t_grouped(&pairs)?
        } else if let Some(mapped) = self.experts.iter().map(Mlp::mapped).collect::<Option<Vec<_>>>().filter(|_| x.device().is_cpu()) {
            // Experts kept in GGUF blocks: likewise, on the blocks.
            let xs = picked.iter().map(|(_, idx, _)| x.index_select(idx, 0)).collect::<candle_core::Result<Vec<_>>>()?;
            let items: Vec<_> = picked.iter().zip(&xs).map(|((e, ..), xe)| (xe, mapped[*e].0.clone())).collect();
            let gu = blocks::grouped(&items)?;
            let hs = picked.iter().zip(&gu).map(|((e, ..), g)| self.experts[*e].gated(g)).collect::<Result<Vec<_>>>()?;
            let items: Vec<_> = picked.iter().zip(&hs).map(|((e, ..), h)| (h, mapped[*e].1.clone())).collect();
            blocks::grouped(&items)?.into_iter().map(|y| y.to_dtype(x.dtype())).collect::<candle_core::Result<_>>()?
        } else {
            picked.iter().map(|(e, idx, _)| self.experts[*e].forward(&x.index_select(idx, 0)?)).collect::<Result<_>>()?
        };
        let plan = ctx.plan();
        let d = x.dim(1)?;
        let mut out = x.zeros_like()?;
        // `[T·k, D]`: each (token, slot)'s weighted expert output, when recorded.
        let mut by_slot = if plan.wants(Quantity::ExpertOut) { Some(Tensor::zeros((t * k, d), DType::F32, device)?) } else { None };
        let expert_patches = ctx.patch.map(|p| p.experts.as_slice()).unwrap_or_default();
        let mut patch_deltas: Vec<(usize, Tensor)> = vec![];
        for (((e, idx, ws), y), slots) in picked.into_iter().zip(ys).zip(slots) {
            let n = ws.len();
            let y = y.broadcast_mul(&Tensor::from_vec(ws, (n, 1), device)?.to_dtype(y.dtype())?)?;
            out = out.index_add(&idx, &y, 0)?;
            if let Some(b) = &mut by_slot {
                *b = b.index_add(&Tensor::from_vec(slots.clone(), n, device)?, &y.to_dtype(DType::F32)?, 0)?;
            }
            // An expert patch subtracts this run's contribution of the expert at its row.
            for (_, row) in expert_patches.iter().filter(|(pe, _)| *pe == e) {
                for (r, _) in crate::patch::in_call(std::slice::from_ref(row), ctx.start, t) {
                    if let Some(i) = slots.iter().position(|&s| s as usize / k == r) {
                        patch_deltas.push((r, y.narrow(0, i, 1)?.to_dtype(DType::F32)?.neg()?));
                    }
                }
            }
        }
        for (_, row) in expert_patches {
            for (r, v) in crate::patch::in_call(std::slice::from_ref(row), ctx.start, t) {
                patch_deltas.push((r, crate::patch::values(v, x)?.reshape((1, d))?));
            }
        }
        for (r, delta) in patch_deltas {
            out = crate::patch::add_to_row(out, r, &delta)?;
        }
        if let Some(b) = by_slot {
            ctx.capture.push(Quantity::ExpertOut, &b.reshape((t, k, d))?);
        }
        if plan.wants(Quantity::RouterExperts) {
            ctx.capture.push(Quantity::RouterExperts, &Tensor::from_vec(experts, (t, k), device)?);
        }
        if plan.wants(Quantity::RouterWeights) {
            ctx.capture.push(Quantity::RouterWeights, &Tensor::from_vec(weights, (t, k), device)?);
        }
        if plan.wants(Quantity::RouterMargin) {
            ctx.capture.push(Quantity::RouterMargin, &Tensor::from_vec(margin, t, device)?);
        }
        Ok(out)
    }
}

/// Row-wise L2 norm, `[T, D]` → `[T]` f32 (one kernel on CUDA).
pub fn l2(x: &Tensor) -> Result<Tensor> {
    Ok(routelab_kernels::row_norm::row_norm(x)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn own_storage_moves_a_row_range_to_offset_zero() {
        let t = Tensor::arange(0u32, 12, &Device::Cpu).unwrap().reshape((4, 3)).unwrap();
        let rows = t.narrow(0, 2, 2).unwrap();
        // The trap: the row range is contiguous but starts 6 elements into the storage.
        assert!(rows.is_contiguous() && rows.layout().start_offset() == 6);
        let own = own_storage(rows).unwrap();
        assert_eq!(own.layout().start_offset(), 0);
        assert_eq!(own.to_vec2::<u32>().unwrap(), vec![vec![6, 7, 8], vec![9, 10, 11]]);
    }
}
