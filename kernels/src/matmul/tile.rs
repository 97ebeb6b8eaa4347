//! One tile of the product: up to `MR` rows of `x` × one panel's 32 outputs, over `kc` steps
//! of `k`, added onto what earlier `k` blocks left in `y`, and the portable version of it.
//!
//! Every output element is one accumulator that takes `x[t, k] · w[n, k]` by fused
//! multiply-add in increasing `k`, starting from zero: the same bits on every instruction set,
//! for any tile, block or thread split, and for a row alone or among others.

use super::packed::PANEL;

/// Where a tile reads and writes. Pointers, because tasks on several threads write disjoint
/// columns of one `y`.
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    /// Row 0, step 0 of this tile's `x` block; rows `ldx` apart.
    pub x: *const f32,
    pub ldx: usize,
    /// Rows of `x` (and `y`) in the tile, at most the kernel's `MR`.
    pub rows: usize,
    /// Steps of `k`.
    pub kc: usize,
    /// Row 0, column 0 of this tile's `y` block; rows `ldy` apart.
    pub y: *mut f32,
    pub ldy: usize,
    /// Panels side by side in the tile (decode's several weight streams at once), `wstride`
    /// weight elements apart, their outputs side by side in `y`.
    pub panels: usize,
    pub wstride: usize,
    /// Columns of the tile's panels that exist (the last panel of `W` may be short).
    pub cols: usize,
    /// The tile's first `k` block: start from zero rather than from `y`.
    pub first: bool,
}

/// A tile on f32 panels (`w` at the block's first step, 32 per step) or on bf16 panel words
/// (16 per step).
pub(crate) type TileFn<W> = unsafe fn(&Tile, w: *const W);

/// The instruction set's tiles and how many rows of `x` one takes.
#[derive(Clone, Copy)]
pub(crate) struct Kernels {
    pub mr: usize,
    /// Panels a tile of at most `wide_rows` rows takes at once (1: one panel per tile).
    pub wide: usize,
    pub wide_rows: usize,
    pub f32: TileFn<f32>,
    pub bf16: TileFn<u32>,
    pub name: &'static str,
}

/// The portable tiles.
pub(crate) const SCALAR: Kernels = Kernels { mr: 4, wide: 1, wide_rows: 0, f32: scalar_f32, bf16: scalar_bf16, name: "scalar" };

/// # Safety
/// `t` and `w` describe memory as [`Tile`] documents: `t.rows` rows of `t.kc` readable `x`
/// elements, `t.kc` steps of panel, `t.rows × t.cols` writable `y` elements.
unsafe fn scalar(t: &Tile, w: impl Fn(usize, usize, usize) -> f32) {
    for i in 0..t.rows {
        for j in 0..t.cols {
            // SAFETY: within the tile, per the caller.
            let y = unsafe { t.y.add(i * t.ldy + j) };
            let mut acc = if t.first { 0.0 } else { unsafe { *y } };
            for c in 0..t.kc {
                acc = unsafe { *t.x.add(i * t.ldx + c) }.mul_add(w(j / PANEL * t.wstride, c, j % PANEL), acc);
            }
            unsafe { *y = acc };
        }
    }
}

unsafe fn scalar_f32(t: &Tile, w: *const f32) {
    // SAFETY: each panel has kc steps of PANEL elements.
    unsafe { scalar(t, |p, c, j| *w.add(p + c * PANEL + j)) }
}

unsafe fn scalar_bf16(t: &Tile, w: *const u32) {
    // SAFETY: each panel has kc steps of PANEL / 2 words.
    unsafe {
        scalar(t, |p, c, j| {
            let word = *w.add(p + c * PANEL / 2 + j % (PANEL / 2));
            f32::from_bits(if j < PANEL / 2 { word << 16 } else { word & 0xFFFF_0000 })
        })
    }
}
