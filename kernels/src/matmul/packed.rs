//! A weight matrix packed for [`super::matmul_t`]: `W` `[N, K]` cut into panels of
//! [`PANEL`] rows, each panel holding its rows' `k`-th elements side by side for every `k`.
//!
//! The products walk a panel front to back: one `k` step is one contiguous load (128 bytes of
//! f32, 64 of bf16) that feeds 32 outputs of every row of `x` in the tile, so a weight element
//! is read once per tile however many rows `x` has, and decode streams each panel straight
//! from memory. Rows past `N` in the last panel are zeros.
//!
//! bf16 panels keep two rows per 32-bit word (row `j` in the low half, row `16 + j` in the
//! high half), so a register of 16 words widens to the two halves' 16 f32 lanes with one
//! shift and one mask.

use std::sync::Arc;

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use half::bf16;
use rayon::prelude::*;

/// Rows of `W` per panel: two AVX-512 registers of f32.
pub const PANEL: usize = 32;

/// `W` `[N, K]` in panels (see the module docs), f32 or bf16 as stored in the checkpoint.
#[derive(Clone)]
pub struct PackedWeight {
    n: usize,
    k: usize,
    /// Steps per panel as allocated (`k`, or more for a [`PackedWeight::prefix`]).
    stride: usize,
    panels: Arc<Panels>,
}

pub(crate) enum Panels {
    /// `[N/32, K, 32]`.
    F32(Vec<f32>),
    /// `[N/32, K, 16]` words of two bf16 each.
    Bf16(Vec<u32>),
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeight([{}, {}], {:?})", self.n, self.k, self.dtype())
    }
}

fn bits(v: bf16) -> u32 {
    v.to_bits() as u32
}

impl PackedWeight {
    /// Packs `w` `[n, k]` row-major.
    pub fn from_f32(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "packed weight: {} elements are not [{n}, {k}]", w.len());
        let mut data = vec![0f32; n.div_ceil(PANEL) * k * PANEL];
        if k > 0 {
            data.par_chunks_mut(k * PANEL).enumerate().for_each(|(p, panel)| {
                for j in 0..PANEL.min(n - p * PANEL) {
                    let row = &w[(p * PANEL + j) * k..][..k];
                    for (c, &v) in row.iter().enumerate() {
                        panel[c * PANEL + j] = v;
                    }
                }
            });
        }
        PackedWeight { n, k, stride: k, panels: Arc::new(Panels::F32(data)) }
    }

    /// Packs `w` `[n, k]` row-major, kept as bf16.
    pub fn from_bf16(w: &[bf16], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "packed weight: {} elements are not [{n}, {k}]", w.len());
        const HALF: usize = PANEL / 2;
        let mut data = vec![0u32; n.div_ceil(PANEL) * k * HALF];
        if k > 0 {
            data.par_chunks_mut(k * HALF).enumerate().for_each(|(p, panel)| {
                for j in 0..PANEL.min(n - p * PANEL) {
                    let row = &w[(p * PANEL + j) * k..][..k];
                    let (word, shift) = (j % HALF, if j < HALF { 0 } else { 16 });
                    for (c, &v) in row.iter().enumerate() {
                        panel[c * HALF + word] |= bits(v) << shift;
                    }
                }
            });
        }
        PackedWeight { n, k, stride: k, panels: Arc::new(Panels::Bf16(data)) }
    }

    /// An f32 weight whose every element is `value`, built in place (the bandwidth probe's
    /// gigabyte needs no row-major original).
    pub(crate) fn filled(n: usize, k: usize, value: f32) -> Self {
        PackedWeight { n, k, stride: k, panels: Arc::new(Panels::F32(vec![value; n.div_ceil(PANEL) * k * PANEL])) }
    }

    /// Packs `Wᵀ` for `w` `[k, n]` row-major f32 (attention's values `[keys, dv]`, so that
    /// `P V` is `P (Vᵀ)ᵀ`): a panel step is a run of 32 elements of one row of `w`.
    pub fn from_f32_transposed(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), n * k, "packed weight: {} elements are not [{k}, {n}]", w.len());
        let mut data = vec![0f32; n.div_ceil(PANEL) * k * PANEL];
        if k > 0 {
            data.par_chunks_mut(k * PANEL).enumerate().for_each(|(p, panel)| {
                let cols = PANEL.min(n - p * PANEL);
                for (c, step) in panel.chunks_mut(PANEL).enumerate() {
                    step[..cols].copy_from_slice(&w[c * n + p * PANEL..][..cols]);
                }
            });
        }
        PackedWeight { n, k, stride: k, panels: Arc::new(Panels::F32(data)) }
    }

    /// The top-left `[n, k]` block (the keys a causal block of queries sees), sharing the
    /// panels.
    pub fn prefix(&self, n: usize, k: usize) -> Self {
        assert!(n <= self.n && k <= self.k, "packed weight: [{n}, {k}] is not within [{}, {}]", self.n, self.k);
        PackedWeight { n, k, stride: self.stride, panels: self.panels.clone() }
    }

    /// Packs a CPU tensor `[N, K]` of f32 or bf16.
    pub fn pack(w: &Tensor) -> candle_core::Result<Self> {
        let (n, k) = w.dims2()?;
        let w = w.contiguous()?;
        let (storage, layout) = w.storage_and_layout();
        let (a, b) = layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("packed weight: not contiguous".into()))?;
        match &*storage {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(Self::from_f32(&v[a..b], n, k)),
            Storage::Cpu(CpuStorage::BF16(v)) => Ok(Self::from_bf16(&v[a..b], n, k)),
            _ => candle_core::bail!("packed weight: [{n}, {k}] must be f32 or bf16 on the CPU, not {:?} on {:?}", w.dtype(), w.device()),
        }
    }

    /// The weight back as `[N, K]` in its dtype.
    pub fn unpack(&self) -> candle_core::Result<Tensor> {
        let (n, k, stride) = (self.n, self.k, self.stride);
        let at = |r: usize, c: usize| (r / PANEL * stride + c) * PANEL + r % PANEL;
        match &*self.panels {
            Panels::F32(d) => {
                let rows: Vec<f32> = (0..n * k).map(|i| d[at(i / k.max(1), i % k.max(1))]).collect();
                Tensor::from_vec(rows, (n, k), &Device::Cpu)
            }
            Panels::Bf16(d) => {
                let rows: Vec<bf16> = (0..n * k)
                    .map(|i| {
                        let (r, c) = (i / k.max(1), i % k.max(1));
                        let word = d[(r / PANEL * stride + c) * (PANEL / 2) + r % (PANEL / 2)];
                        bf16::from_bits(if r % PANEL < PANEL / 2 { word as u16 } else { (word >> 16) as u16 })
                    })
                    .collect();
                Tensor::from_vec(rows, (n, k), &Device::Cpu)
            }
        }
    }

    /// Rows `ids` of `W` widened to f32, `[ids.len(), K]`: the embedding lookup of an LM head
    /// tied to the embeddings, so the table is kept once, packed.
    pub fn gather_rows(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let (n, k, stride) = (self.n, self.k, self.stride);
        const HALF: usize = PANEL / 2;
        let mut out = Vec::with_capacity(ids.len() * k);
        for &r in ids {
            let r = r as usize;
            if r >= n {
                candle_core::bail!("packed weight: row {r} of a [{n}, {k}] matrix");
            }
            let (p, j) = (r / PANEL, r % PANEL);
            match &*self.panels {
                Panels::F32(d) => out.extend((0..k).map(|c| d[(p * stride + c) * PANEL + j])),
                Panels::Bf16(d) => out.extend((0..k).map(|c| {
                    let word = d[(p * stride + c) * HALF + j % HALF];
                    f32::from_bits(if j < HALF { word << 16 } else { word & 0xFFFF_0000 })
                })),
            }
        }
        Tensor::from_vec(out, (ids.len(), k), &Device::Cpu)
    }

    /// `N`: rows, the product's output width.
    pub fn out_dim(&self) -> usize {
        self.n
    }

    /// `K`: columns, the product's input width.
    pub fn in_dim(&self) -> usize {
        self.k
    }

    pub fn dtype(&self) -> DType {
        match &*self.panels {
            Panels::F32(_) => DType::F32,
            Panels::Bf16(_) => DType::BF16,
        }
    }

    /// Bytes of the `N × K` elements (padding rows of the last panel not counted).
    pub fn bytes(&self) -> usize {
        self.n * self.k * self.dtype().size_in_bytes()
    }

    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    pub(crate) fn panels(&self) -> &Panels {
        &self.panels
    }
}

/// The dtypes a weight can be packed in.
pub fn packs(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16)
}
