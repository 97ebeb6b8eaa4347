//! The capture store: everything a run recorded, on the host, one tensor per hook point.
//!
//! Its tensors are exactly a trace file's: the same names ([`HookPoint`]), element types and
//! shapes, with positions as the leading dimension, appended to as a run goes (the prompt in one
//! piece, then a row per generated token). A GUI view holds the same store, streamed to it, so
//! one record goes from the layer to the screen and the file. Absent means not in the store.
//!
//! Attention probabilities (`[H, T, T]` in a file) are kept per query, each query's row of every
//! head over the keys up to it, so appending a query never moves what is stored.

use std::collections::BTreeMap;

use crate::hooks::{Elem, HookPoint, Quantity};

/// The values of one stored tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    U32(Vec<u32>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::U32(v) => v.len(),
        }
    }

    fn extend(&mut self, other: &Values) -> Result<(), String> {
        match (self, other) {
            (Values::F32(a), Values::F32(b)) => a.extend_from_slice(b),
            (Values::U32(a), Values::U32(b)) => a.extend_from_slice(b),
            _ => return Err("element types differ".into()),
        }
        Ok(())
    }

    fn range(&self, r: std::ops::Range<usize>) -> Values {
        match self {
            Values::F32(v) => Values::F32(v[r].to_vec()),
            Values::U32(v) => Values::U32(v[r].to_vec()),
        }
    }
}

/// One hook's tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// Shape of one position's row: `[]` for `[T]`, `[E]` for `[T, E]`; `[H]` for probabilities.
    pub row_shape: Vec<usize>,
    pub values: Values,
}

impl Stored {
    /// Values per position (probabilities: ragged, see [`CaptureStore::probs`]).
    fn width(&self) -> usize {
        self.row_shape.iter().product()
    }
}

/// Every captured tensor of one run, plus each token's text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CaptureStore {
    num_layers: usize,
    tensors: BTreeMap<HookPoint, Stored>,
    /// Each token's text, for labels (trace metadata `token_text`).
    pub pieces: Vec<String>,
}

/// Number of stored values of query rows `0..n` of probabilities over `heads` heads, each
/// query `q` holding `heads × (q + 1)` values.
fn probs_offset(heads: usize, n: usize) -> usize {
    heads * n * (n + 1) / 2
}

impl CaptureStore {
    pub fn new(num_layers: usize) -> Self {
        CaptureStore { num_layers, ..Default::default() }
    }

    /// Positions recorded (the `tokens` rows).
    pub fn len(&self) -> usize {
        self.tokens().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decoder layers of the model (for a store read from a file: the highest layer it names).
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    pub fn tokens(&self) -> &[u32] {
        self.u32(&HookPoint::Tokens).unwrap_or(&[])
    }

    pub fn contains(&self, hook: &HookPoint) -> bool {
        self.tensors.contains_key(hook)
    }

    pub fn get(&self, hook: &HookPoint) -> Option<&Stored> {
        self.tensors.get(hook)
    }

    /// Every stored tensor, in hook order (`tokens`, `logits`, then by layer).
    pub fn iter(&self) -> impl Iterator<Item = (&HookPoint, &Stored)> {
        self.tensors.iter()
    }

    /// The values of `hook`, to edit in place (the row layout stays as it is).
    pub fn values_mut(&mut self, hook: &HookPoint) -> Option<&mut Values> {
        Some(&mut self.tensors.get_mut(hook)?.values)
    }

    pub fn f32(&self, hook: &HookPoint) -> Option<&[f32]> {
        match &self.tensors.get(hook)?.values {
            Values::F32(v) => Some(v),
            Values::U32(_) => None,
        }
    }

    pub fn u32(&self, hook: &HookPoint) -> Option<&[u32]> {
        match &self.tensors.get(hook)?.values {
            Values::U32(v) => Some(v),
            Values::F32(_) => None,
        }
    }

    /// Layer `l`'s quantity `q` as f32 (`None` if not recorded or not f32).
    pub fn layer_f32(&self, l: usize, q: Quantity) -> Option<&[f32]> {
        self.f32(&HookPoint::layer(l, q))
    }

    pub fn layer_u32(&self, l: usize, q: Quantity) -> Option<&[u32]> {
        self.u32(&HookPoint::layer(l, q))
    }

    /// Width of one position's row of a `[T, …]` tensor.
    pub fn width(&self, hook: &HookPoint) -> Option<usize> {
        Some(self.tensors.get(hook)?.width())
    }

    /// The row of position `t` of a `[T, …]` f32 tensor.
    pub fn row_f32(&self, hook: &HookPoint, t: usize) -> Option<&[f32]> {
        let w = self.width(hook)?;
        self.f32(hook)?.get(t * w..(t + 1) * w)
    }

    pub fn row_u32(&self, hook: &HookPoint, t: usize) -> Option<&[u32]> {
        let w = self.width(hook)?;
        self.u32(hook)?.get(t * w..(t + 1) * w)
    }

    /// Heads of layer `l` as its head statistics or probabilities record them (0 if none).
    pub fn heads(&self, l: usize) -> usize {
        [Quantity::AttnEntropy, Quantity::AttnArgmax, Quantity::AttnSink, Quantity::AttnSpan, Quantity::AttnProbs]
            .iter()
            .find_map(|&q| self.width(&HookPoint::layer(l, q)))
            .unwrap_or(0)
    }

    /// Layer `l`'s routing, when its router logits, experts and weights were all recorded.
    pub fn router(&self, l: usize) -> Option<Router<'_>> {
        let logits = self.layer_f32(l, Quantity::RouterLogits)?;
        let experts = self.layer_u32(l, Quantity::RouterExperts)?;
        let weights = self.layer_f32(l, Quantity::RouterWeights)?;
        let num_experts = self.width(&HookPoint::layer(l, Quantity::RouterLogits))?;
        let top_k = self.width(&HookPoint::layer(l, Quantity::RouterExperts))?;
        Some(Router { num_experts, top_k, logits, experts, weights })
    }

    /// Number of positions where each (layer, expert) was among the selected.
    pub fn expert_counts(&self) -> BTreeMap<usize, Vec<usize>> {
        (0..self.num_layers)
            .filter_map(|l| {
                let r = self.router(l)?;
                let mut counts = vec![0usize; r.num_experts];
                for &e in r.experts {
                    counts[e as usize] += 1;
                }
                Some((l, counts))
            })
            .collect()
    }

    /// Layer `l`'s attention probabilities, if recorded.
    pub fn probs(&self, l: usize) -> Option<Probs<'_>> {
        let s = self.tensors.get(&HookPoint::layer(l, Quantity::AttnProbs))?;
        let Values::F32(values) = &s.values else { return None };
        Some(Probs { heads: s.width(), values })
    }

    /// Appends `rows` rows to `hook`, given as f32 (ids as f32, exact below 2^24; converted
    /// to the hook's element type). `row_shape` must agree with what is stored.
    pub fn append_rows(&mut self, hook: HookPoint, row_shape: &[usize], data: &[f32]) -> Result<(), String> {
        let (elem, _) = hook.elem_layout().ok_or_else(|| format!("{hook} is not a captured hook"))?;
        let values = match elem {
            Elem::F32 => Values::F32(data.to_vec()),
            Elem::U32 => Values::U32(data.iter().map(|&x| x as u32).collect()),
        };
        self.append(hook, row_shape, values)
    }

    /// Appends values to `hook` (rows of `row_shape`, or probability query rows).
    pub fn append(&mut self, hook: HookPoint, row_shape: &[usize], values: Values) -> Result<(), String> {
        if let Some(l) = hook.layer_index() {
            self.num_layers = self.num_layers.max(l + 1);
        }
        match self.tensors.get_mut(&hook) {
            Some(s) if s.row_shape != row_shape => {
                Err(format!("{hook}: rows of shape {row_shape:?} appended to rows of {:?}", s.row_shape))
            }
            Some(s) => s.values.extend(&values).map_err(|e| format!("{hook}: {e}")),
            None => {
                self.tensors.insert(hook, Stored { row_shape: row_shape.to_vec(), values });
                Ok(())
            }
        }
    }

    /// Appends attention probabilities of `n` new queries, `data` `[H, n, S]` row-major where
    /// the first new query is at position `start` and S ≥ start + n keys.
    pub fn append_probs(&mut self, layer: usize, heads: usize, start: usize, n: usize, s: usize, data: &[f32]) -> Result<(), String> {
        let mut rows = Vec::with_capacity(heads * (probs_offset(1, start + n) - probs_offset(1, start)));
        for i in 0..n {
            let keys = start + i + 1;
            for h in 0..heads {
                let at = (h * n + i) * s;
                rows.extend_from_slice(&data[at..at + keys]);
            }
        }
        self.append(HookPoint::layer(layer, Quantity::AttnProbs), &[heads], Values::F32(rows))
    }

    /// The store's positions `from..to` (for streaming rows to a view).
    pub fn slice(&self, from: usize, to: usize) -> CaptureStore {
        let mut out = CaptureStore::new(self.num_layers);
        for (hook, s) in &self.tensors {
            let range = match hook {
                HookPoint::Layer { quantity: Quantity::AttnProbs, .. } => probs_offset(s.width(), from)..probs_offset(s.width(), to),
                _ => from * s.width()..to * s.width(),
            };
            if range.end <= s.values.len() {
                out.tensors.insert(*hook, Stored { row_shape: s.row_shape.clone(), values: s.values.range(range) });
            }
        }
        out.pieces = self.pieces.get(from..to).map(|p| p.to_vec()).unwrap_or_default();
        out
    }

    /// Appends another store's rows (the next positions of the same run).
    pub fn extend(&mut self, more: &CaptureStore) -> Result<(), String> {
        for (hook, s) in &more.tensors {
            self.append(*hook, &s.row_shape, s.values.clone())?;
        }
        self.num_layers = self.num_layers.max(more.num_layers);
        self.pieces.extend(more.pieces.iter().cloned());
        Ok(())
    }

    /// Checks every tensor has a row per token; returns the first that does not.
    pub fn check_rows(&self) -> Result<(), String> {
        let t = self.len();
        for (hook, s) in &self.tensors {
            let want = match hook {
                HookPoint::Layer { quantity: Quantity::AttnProbs, .. } => probs_offset(s.width(), t),
                _ => t * s.width(),
            };
            if s.values.len() != want {
                return Err(format!("{hook} has {} values, {t} positions need {want}", s.values.len()));
            }
        }
        Ok(())
    }
}

/// One layer's recorded routing, row-major.
#[derive(Clone, Copy, Debug)]
pub struct Router<'a> {
    pub num_experts: usize,
    pub top_k: usize,
    /// `[T × E]`
    pub logits: &'a [f32],
    /// `[T × K]`
    pub experts: &'a [u32],
    /// `[T × K]`
    pub weights: &'a [f32],
}

impl<'a> Router<'a> {
    pub fn experts_at(&self, t: usize) -> &'a [u32] {
        &self.experts[t * self.top_k..(t + 1) * self.top_k]
    }
    pub fn weights_at(&self, t: usize) -> &'a [f32] {
        &self.weights[t * self.top_k..(t + 1) * self.top_k]
    }
    pub fn logits_at(&self, t: usize) -> &'a [f32] {
        &self.logits[t * self.num_experts..(t + 1) * self.num_experts]
    }
}

/// One layer's attention probabilities, per query.
#[derive(Clone, Copy, Debug)]
pub struct Probs<'a> {
    pub heads: usize,
    values: &'a [f32],
}

impl<'a> Probs<'a> {
    /// Head `h`'s attention from query `q` over keys `0..=q`.
    pub fn row(&self, h: usize, q: usize) -> &'a [f32] {
        let at = probs_offset(self.heads, q) + h * (q + 1);
        &self.values[at..at + q + 1]
    }

    /// Number of queries.
    pub fn len(&self) -> usize {
        // heads · n(n+1)/2 values for n queries.
        let tri = self.values.len() / self.heads.max(1);
        (((8 * tri + 1) as f64).sqrt() as usize).saturating_sub(1) / 2
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `[H, T, T]` row-major, zero above the diagonal: the file's layout.
    pub fn to_dense(&self) -> Vec<f32> {
        let t = self.len();
        let mut full = vec![0f32; self.heads * t * t];
        for q in 0..t {
            for h in 0..self.heads {
                full[h * t * t + q * t..h * t * t + q * t + q + 1].copy_from_slice(self.row(h, q));
            }
        }
        full
    }
}

/// Converts dense `[H, T, T]` probabilities into the store's per-query rows (what lies above
/// the diagonal, zero by causality, is dropped).
pub fn probs_from_dense(heads: usize, t: usize, dense: &[f32]) -> Vec<f32> {
    let mut rows = Vec::with_capacity(probs_offset(heads, t));
    for q in 0..t {
        for h in 0..heads {
            let at = h * t * t + q * t;
            rows.extend_from_slice(&dense[at..at + q + 1]);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_round_trip_between_query_rows_and_the_dense_layout() {
        // Two heads, three queries; head h, query q, key k holds 100h + 10q + k.
        let (h, t) = (2, 3);
        let dense: Vec<f32> = (0..h * t * t)
            .map(|i| {
                let (hh, q, k) = (i / (t * t), (i / t) % t, i % t);
                if k <= q {
                    (100 * hh + 10 * q + k) as f32
                } else {
                    0.0
                }
            })
            .collect();
        let mut store = CaptureStore::new(1);
        store.append(HookPoint::Tokens, &[], Values::U32(vec![1, 2, 3])).unwrap();
        // Prefill of two queries over S = 2 keys, then one decoded query over S = 3.
        let d = &dense;
        let first: Vec<f32> = [0, 1].iter().flat_map(|&hh| (0..2).flat_map(move |q| (0..2).map(move |k| d[hh * 9 + q * 3 + k]))).collect();
        store.append_probs(0, h, 0, 2, 2, &first).unwrap();
        let last: Vec<f32> = (0..2).flat_map(|hh| (0..3).map(move |k| (hh, k))).map(|(hh, k)| d[hh * 9 + 6 + k]).collect();
        store.append_probs(0, h, 2, 1, 3, &last).unwrap();
        store.check_rows().unwrap();
        let p = store.probs(0).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.row(1, 2), &[120.0, 121.0, 122.0]);
        assert_eq!(p.to_dense(), dense);
        assert_eq!(probs_from_dense(h, t, &dense), store.f32(&HookPoint::layer(0, Quantity::AttnProbs)).unwrap());
        // A slice of the last position streams on its own and extends a copy of the rest.
        let mut head = store.slice(0, 2);
        head.extend(&store.slice(2, 3)).unwrap();
        assert_eq!(head, store);
    }

    #[test]
    fn appending_rows_of_another_shape_is_refused() {
        let mut store = CaptureStore::new(1);
        let hook = HookPoint::layer(0, Quantity::RouterExperts);
        store.append_rows(hook, &[2], &[1.0, 3.0]).unwrap();
        assert_eq!(store.u32(&hook).unwrap(), &[1, 3]);
        let e = store.append_rows(hook, &[3], &[1.0, 3.0, 4.0]).unwrap_err();
        assert!(e.contains("layers.0.router.experts"), "{e}");
    }
}
