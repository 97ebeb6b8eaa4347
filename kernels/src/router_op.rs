//! Router scoring + top-k as a candle op, so routing stays on the device that computed the
//! router logits.
//!
//! On the CPU the op runs [`routing::route`] (the reference); on CUDA it runs
//! `cuda/router_topk.cu`, one thread per token, which mirrors it operation by operation. The
//! result is one `[T, 2k + 1]` f32 tensor per layer (ids, weights, margin) that the MoE block
//! splits into views: a GPU run never copies routing to the host to dispatch experts, and the
//! captured ids and weights are the very tensors the experts were combined with.
//!
//! Interventions enter as an `[3, E]` f32 `aux` tensor: the correction bias (DeepSeek-V3),
//! excluded experts (`reroute`, removed before scoring) and dropped experts (weight set to 0
//! after normalisation), each as 0/1. It is a tensor, not host data, so a layer can build it
//! once and reuse it on the device.

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Shape, Tensor};

use crate::launch::{Launch, Scalar};
use crate::routing::{route, GroupScore, Normalization, RoutingParams, Scoring, Selection};

/// The candle op. Build it with [`RouterTopK::new`], apply with [`route_tensor`].
#[derive(Clone, Debug)]
pub struct RouterTopK {
    pub params: RoutingParams,
    /// Whether aux row 0 (the correction bias) is used.
    pub has_bias: bool,
}

/// Routing of `T` tokens as device tensors: views of the op's single output.
#[derive(Clone, Debug)]
pub struct DeviceRoutes {
    /// `[T, k]` u32, strongest first.
    pub experts: Tensor,
    /// `[T, k]` f32, as applied to the experts' outputs (0 for a dropped expert).
    pub weights: Tensor,
    /// The op's `[T, 2k + 1]` output the views above come from.
    pub packed: Tensor,
}

impl DeviceRoutes {
    /// `[T]` f32, gap between the k-th and (k+1)-th choice scores (computed on demand: the
    /// forward pass does not need it, and on CUDA it would be one more launch per layer).
    pub fn margin(&self) -> candle_core::Result<Tensor> {
        let w = self.packed.dim(1)?;
        self.packed.narrow(1, w - 1, 1)?.squeeze(1)?.contiguous()
    }
}

impl RouterTopK {
    pub fn new(params: RoutingParams, has_bias: bool) -> Self {
        RouterTopK { params, has_bias }
    }

    fn out_width(&self) -> usize {
        2 * self.params.top_k + 1
    }

    /// The CUDA launch for `t` tokens of `e` experts (also what the emulator runs): one thread
    /// per token, 128 per block.
    pub fn launch(&self, t: usize, e: usize) -> Launch {
        let c = self.codes();
        let threads = 128u32;
        let i = |x: usize| Scalar::I32(x as i32);
        Launch {
            kernel: "router_topk_f32",
            grid: ((t as u32).div_ceil(threads), 1, 1),
            block: (threads, 1, 1),
            scalars: vec![
                i(t),
                i(e),
                i(self.params.top_k),
                Scalar::I32(c.scoring),
                Scalar::I32(self.has_bias as i32),
                Scalar::I32(c.selection),
                Scalar::I32(c.groups),
                Scalar::I32(c.top_groups),
                Scalar::I32(c.group_score),
                Scalar::F32(c.jitter_eps),
                Scalar::I32(c.norm),
                Scalar::F32(c.pnorm),
                Scalar::F32(self.params.routed_scaling),
            ],
        }
    }

    /// Integer codes of the parameters, as the CUDA kernel takes them.
    fn codes(&self) -> KernelCodes {
        let p = &self.params;
        let (selection, groups, top_groups, group_score, jitter_eps) = match p.selection {
            Selection::TopK => (0, 1, 1, 0, 0.0),
            Selection::GroupLimited { groups, top_groups, group_score } => {
                (1, groups as i32, top_groups as i32, matches!(group_score, GroupScore::TopTwoSum) as i32, 0.0)
            }
            Selection::SparseMixer { jitter_eps } => (2, 1, 1, 0, jitter_eps),
        };
        let (norm, pnorm) = match p.normalization {
            Normalization::None => (0, 1.0),
            Normalization::Sum => (1, 1.0),
            Normalization::PNorm(q) => (2, q),
        };
        KernelCodes {
            scoring: matches!(p.scoring, Scoring::Sigmoid) as i32,
            selection,
            groups,
            top_groups,
            group_score,
            jitter_eps,
            norm,
            pnorm,
        }
    }
}

struct KernelCodes {
    scoring: i32,
    selection: i32,
    groups: i32,
    top_groups: i32,
    group_score: i32,
    jitter_eps: f32,
    norm: i32,
    pnorm: f32,
}

/// The `[3, E]` aux tensor: bias (zeros when absent), excluded and dropped as 0/1.
pub fn aux_tensor(
    num_experts: usize,
    bias: Option<&[f32]>,
    excluded: &[bool],
    dropped: &[bool],
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut v = vec![0f32; 3 * num_experts];
    if let Some(b) = bias {
        v[..num_experts].copy_from_slice(&b[..num_experts]);
    }
    for e in 0..num_experts {
        v[num_experts + e] = excluded.get(e).copied().unwrap_or(false) as u8 as f32;
        v[2 * num_experts + e] = dropped.get(e).copied().unwrap_or(false) as u8 as f32;
    }
    Tensor::from_vec(v, (3, num_experts), device)
}

/// Routes `logits` `[T, E]` (f32) with `aux` from [`aux_tensor`], on whichever device they live.
pub fn route_tensor(logits: &Tensor, aux: &Tensor, op: &RouterTopK) -> candle_core::Result<DeviceRoutes> {
    let k = op.params.top_k;
    let logits = logits.to_dtype(DType::F32)?.contiguous()?;
    let aux = aux.to_dtype(DType::F32)?.contiguous()?;
    let packed = logits.apply_op2_no_bwd(&aux, op)?;
    Ok(DeviceRoutes { experts: packed.narrow(1, 0, k)?.to_dtype(DType::U32)?, weights: packed.narrow(1, k, k)?.contiguous()?, packed })
}

fn check_shapes(op: &RouterTopK, l1: &Layout, l2: &Layout) -> candle_core::Result<(usize, usize)> {
    let (t, e) = l1.shape().dims2()?;
    let (three, e2) = l2.shape().dims2()?;
    if e != op.params.num_experts || three != 3 || e2 != e {
        candle_core::bail!(
            "router-topk: logits {:?} and aux {:?} do not fit a router of {} experts",
            l1.shape(),
            l2.shape(),
            op.params.num_experts
        );
    }
    if let Err(msg) = op.params.validate(0) {
        candle_core::bail!("router-topk: {msg}");
    }
    Ok((t, e))
}

impl CustomOp2 for RouterTopK {
    fn name(&self) -> &'static str {
        "routelab-router-topk"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (t, e) = check_shapes(self, l1, l2)?;
        let (logits, aux) = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => (a, b),
            _ => candle_core::bail!("router-topk: logits and aux must be f32"),
        };
        let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("router-topk: inputs must be contiguous")
        };
        let (logits, aux) = (&logits[a0..a1], &aux[b0..b1]);
        let bias = self.has_bias.then(|| &aux[..e]);
        let excluded: Vec<bool> = aux[e..2 * e].iter().map(|&x| x != 0.0).collect();
        let dropped: Vec<bool> = aux[2 * e..].iter().map(|&x| x != 0.0).collect();
        let r = route(logits, &self.params, bias, &excluded);
        let k = self.params.top_k;
        let w = self.out_width();
        let mut out = vec![0f32; t * w];
        for tok in 0..t {
            let (ids, ws) = r.token(tok);
            let row = &mut out[tok * w..(tok + 1) * w];
            for j in 0..k {
                row[j] = ids[j] as f32;
                row[k + j] = if dropped[ids[j] as usize] { 0.0 } else { ws[j] };
            }
            row[2 * k] = r.margin[tok];
        }
        Ok((CpuStorage::F32(out), Shape::from((t, w))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;

        let (t, e) = check_shapes(self, l1, l2)?;
        if e > crate::cuda::MAX_ROUTER_EXPERTS {
            candle_core::bail!("router-topk: {e} experts exceed the CUDA kernel's {}", crate::cuda::MAX_ROUTER_EXPERTS);
        }
        let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("router-topk: inputs must be contiguous")
        };
        let logits = s1.as_cuda_slice::<f32>()?.slice(a0..a1);
        let aux = s2.as_cuda_slice::<f32>()?.slice(b0..b1);
        let dev = s1.device();
        let w = self.out_width();
        // SAFETY: every element is written by the kernel (one thread per token writes its row).
        let out = unsafe { dev.alloc::<f32>((t * w).max(1))? };
        if t > 0 {
            let launch = self.launch(t, e);
            let func = dev.get_or_load_custom_func(launch.kernel, "routelab_router_topk", crate::cuda::ROUTER_TOPK)?;
            let mut b = func.builder();
            b.arg(&logits);
            b.arg(&aux);
            b.arg(&out);
            launch.push_scalars(&mut b);
            // SAFETY: buffers then scalars, as router_topk_f32 takes them.
            unsafe { b.launch(launch.config()) }.w()?;
        }
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from((t, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(t: usize, e: usize, seed: u32) -> Vec<f32> {
        // A small deterministic spread of values with a few exact ties.
        (0..t * e)
            .map(|i| {
                let x = ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000;
                (x as f32 / 125.0 - 4.0).round() / 2.0 + (i % 3) as f32 * 0.01
            })
            .collect()
    }

    fn check(params: RoutingParams, bias: Option<Vec<f32>>, excluded: Vec<bool>, dropped: Vec<bool>) {
        let (t, e) = (7, params.num_experts);
        let l = logits(t, e, 17);
        let op = RouterTopK::new(params.clone(), bias.is_some());
        let aux = aux_tensor(e, bias.as_deref(), &excluded, &dropped, &Device::Cpu).unwrap();
        let lt = Tensor::from_vec(l.clone(), (t, e), &Device::Cpu).unwrap();
        let d = route_tensor(&lt, &aux, &op).unwrap();
        let r = route(&l, &params, bias.as_deref(), &excluded);
        let ids = d.experts.flatten_all().unwrap().to_vec1::<u32>().unwrap();
        let ws = d.weights.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let margin = d.margin().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(ids, r.experts);
        let expect: Vec<f32> = r.experts.iter().zip(&r.weights).map(|(&x, &w)| if dropped[x as usize] { 0.0 } else { w }).collect();
        assert_eq!(ws, expect);
        assert_eq!(margin, r.margin);
    }

    #[test]
    fn op_equals_the_reference_for_every_scheme_with_interventions() {
        let e = 8;
        let none = vec![false; e];
        let mut excl = none.clone();
        excl[3] = true;
        let mut drop = none.clone();
        drop[5] = true;
        check(RoutingParams::softmax_top_k(e, 2, true), None, none.clone(), none.clone());
        check(RoutingParams::softmax_top_k(e, 2, false), None, excl.clone(), drop.clone());
        let mut dbrx = RoutingParams::softmax_top_k(e, 3, false);
        dbrx.normalization = Normalization::PNorm(1.5);
        check(dbrx, None, none.clone(), drop.clone());
        let v3 = RoutingParams {
            num_experts: e,
            top_k: 2,
            scoring: Scoring::Sigmoid,
            selection: Selection::GroupLimited { groups: 4, top_groups: 2, group_score: GroupScore::TopTwoSum },
            normalization: Normalization::Sum,
            routed_scaling: 2.5,
        };
        check(v3, Some((0..e).map(|i| i as f32 * 0.1 - 0.3).collect()), excl.clone(), drop.clone());
        let v2 = RoutingParams {
            num_experts: e,
            top_k: 2,
            scoring: Scoring::Softmax,
            selection: Selection::GroupLimited { groups: 2, top_groups: 1, group_score: GroupScore::Max },
            normalization: Normalization::None,
            routed_scaling: 16.0,
        };
        check(v2, None, none.clone(), none.clone());
        let phi = RoutingParams {
            num_experts: e,
            top_k: 2,
            scoring: Scoring::Softmax,
            selection: Selection::SparseMixer { jitter_eps: 0.01 },
            normalization: Normalization::None,
            routed_scaling: 1.0,
        };
        check(phi, None, excl, drop);
    }

    /// The CUDA kernel (run by the emulator) against the reference: ids exact, weights and
    /// margins to float rounding, for every scheme at real sizes (up to DeepSeek-V3's 256
    /// experts), two blocks of tokens (the second partial), with reroute and drop.
    #[test]
    fn kernel_matches_the_reference_on_the_emulator() {
        let t = 150;
        for params in RoutingParams::family_schemes() {
            let e = params.num_experts;
            let l = logits(t, e, 5);
            let bias: Option<Vec<f32>> =
                matches!(params.scoring, Scoring::Sigmoid).then(|| (0..e).map(|i| (i % 7) as f32 * 0.05 - 0.1).collect());
            let excluded: Vec<bool> = (0..e).map(|i| i % 5 == 3).collect();
            let dropped: Vec<bool> = (0..e).map(|i| i % 7 == 1).collect();
            let op = RouterTopK::new(params.clone(), bias.is_some());
            let aux =
                aux_tensor(e, bias.as_deref(), &excluded, &dropped, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let w = op.out_width();
            let Some(got) = crate::emulate::run(
                &op.launch(t, e),
                &[crate::emulate::Buf::F32(&l), crate::emulate::Buf::F32(&aux), crate::emulate::Buf::Out(t * w)],
            ) else {
                return;
            };
            let got = &got[0];
            let r = route(&l, &params, bias.as_deref(), &excluded);
            let k = params.top_k;
            for tok in 0..t {
                let (ids, ws) = r.token(tok);
                let row = &got[tok * w..(tok + 1) * w];
                let what = format!("{:?} token {tok}", params.selection);
                assert_eq!(row[..k].iter().map(|&x| x as u32).collect::<Vec<_>>(), ids, "{what}: ids");
                for j in 0..k {
                    let want = if dropped[ids[j] as usize] { 0.0 } else { ws[j] };
                    assert!(
                        (row[k + j] - want).abs() <= 1e-6 * (1.0 + want.abs()),
                        "{what}: weight {j}: kernel {} reference {want}",
                        row[k + j]
                    );
                }
                let m = r.margin[tok];
                assert!(
                    row[2 * k] == m || (row[2 * k] - m).abs() <= 1e-6 * (1.0 + m.abs()),
                    "{what}: margin kernel {} reference {m}",
                    row[2 * k]
                );
            }
        }
    }

    #[test]
    fn op_rejects_logits_that_do_not_fit_the_router() {
        let op = RouterTopK::new(RoutingParams::softmax_top_k(4, 2, true), false);
        let aux = aux_tensor(4, None, &[], &[], &Device::Cpu).unwrap();
        let lt = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
        let err = route_tensor(&lt, &aux, &op).unwrap_err().to_string();
        assert!(err.contains("router of 4 experts"), "{err}");
    }
}
