//! What the views draw for one run: the run's capture store (the same record the trace file
//! holds, streamed in as tokens are generated) and small caches of aggregates over it (expert
//! load, router entropy) kept up to date as rows arrive, so a frame never recomputes over the
//! whole run.

use routelab_model::hooks::{HookPoint, Quantity};
use routelab_model::store::CaptureStore;
use routelab_probes::stats::routing;
use routelab_probes::trace::Trace;

#[derive(Clone, Debug, Default)]
pub struct RunView {
    /// Tokens, their text and every captured tensor so far.
    pub store: CaptureStore,
    pub prompt_len: usize,
    pub layers: usize,
    pub heads: usize,
    /// Routed experts per layer (0 for dense layers).
    pub experts: Vec<usize>,
    pub generated_text: String,
    pub done: bool,
    /// Per layer, selections per expert so far.
    pub load: Vec<Vec<u32>>,
    /// Per layer, sum of router entropies (nats) so far.
    router_entropy_sum: Vec<f64>,
    /// Positions folded into `load` and `router_entropy_sum`.
    aggregated: usize,
}

impl RunView {
    pub fn new(layers: usize, heads: usize, experts: Vec<usize>) -> Self {
        RunView {
            layers,
            heads,
            load: experts.iter().map(|&e| vec![0; e]).collect(),
            experts,
            router_entropy_sum: vec![0.0; layers],
            store: CaptureStore::new(layers),
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    pub fn pieces(&self) -> &[String] {
        &self.store.pieces
    }

    pub fn is_moe(&self) -> bool {
        self.experts.iter().any(|&e| e > 0)
    }

    pub fn max_experts(&self) -> usize {
        self.experts.iter().cloned().max().unwrap_or(0)
    }

    /// Appends streamed rows (the next positions of the run) and updates the aggregates.
    pub fn extend(&mut self, rows: &CaptureStore) -> Result<(), String> {
        self.store.extend(rows)?;
        self.aggregate();
        Ok(())
    }

    /// Folds the positions not yet counted into the load and router-entropy caches.
    fn aggregate(&mut self) {
        let (from, to) = (self.aggregated, self.store.len());
        for l in 0..self.layers {
            let Some(r) = self.store.router(l) else { continue };
            if r.experts.len() < to * r.top_k || r.logits.len() < to * r.num_experts {
                continue;
            }
            let counts = &mut self.load[l];
            for &e in &r.experts[from * r.top_k..to * r.top_k] {
                if let Some(c) = counts.get_mut(e as usize) {
                    *c += 1;
                }
            }
            let logits = &r.logits[from * r.num_experts..to * r.num_experts];
            self.router_entropy_sum[l] += routing::router_entropy(logits, r.num_experts).iter().sum::<f64>();
        }
        self.aggregated = to;
    }

    /// Rebuilds a view from a saved trace.
    pub fn from_trace(t: &Trace) -> Self {
        let layers = t.num_layers();
        let heads = (0..layers).map(|l| t.heads(l)).max().unwrap_or(0);
        let experts: Vec<usize> = (0..layers).map(|l| t.router(l).map(|r| r.num_experts).unwrap_or(0)).collect();
        let mut v = RunView::new(layers, heads, experts);
        v.store = t.store.clone();
        if v.store.pieces.len() != v.store.len() {
            v.store.pieces = v.store.tokens().iter().map(|x| format!("<{x}>")).collect();
        }
        v.prompt_len = t.meta.generated_from;
        v.aggregate();
        v.generated_text = v.store.pieces[v.prompt_len.min(v.store.pieces.len())..].concat();
        v.done = true;
        v
    }

    /// Top-1 expert of a position in a layer.
    pub fn top1(&self, layer: usize, pos: usize) -> Option<u32> {
        self.store.row_u32(&HookPoint::layer(layer, Quantity::RouterExperts), pos)?.first().copied()
    }

    /// The routing margin at `pos` in `layer` (when captured): the gap between the k-th and
    /// (k+1)-th selection scores.
    pub fn margin(&self, layer: usize, pos: usize) -> Option<f32> {
        self.store.row_f32(&HookPoint::layer(layer, Quantity::RouterMargin), pos)?.first().copied()
    }

    pub fn experts_at(&self, layer: usize, pos: usize) -> (&[u32], &[f32]) {
        let ex = self.store.row_u32(&HookPoint::layer(layer, Quantity::RouterExperts), pos);
        let w = self.store.row_f32(&HookPoint::layer(layer, Quantity::RouterWeights), pos);
        match (ex, w) {
            (Some(ex), Some(w)) => (ex, w),
            _ => (&[], &[]),
        }
    }

    pub fn head_entropy_at(&self, layer: usize, pos: usize) -> &[f32] {
        self.store.row_f32(&HookPoint::layer(layer, Quantity::AttnEntropy), pos).unwrap_or(&[])
    }

    pub fn head_argmax_at(&self, layer: usize, pos: usize) -> &[u32] {
        self.store.row_u32(&HookPoint::layer(layer, Quantity::AttnArgmax), pos).unwrap_or(&[])
    }

    /// Each head's attention on key 0 at `pos` (empty when not recorded).
    pub fn head_sink_at(&self, layer: usize, pos: usize) -> &[f32] {
        self.store.row_f32(&HookPoint::layer(layer, Quantity::AttnSink), pos).unwrap_or(&[])
    }

    /// Mean router entropy (nats) per layer so far (None for dense layers).
    pub fn mean_router_entropy(&self, layer: usize) -> Option<f64> {
        (self.experts[layer] > 0 && self.aggregated > 0).then(|| self.router_entropy_sum[layer] / self.aggregated as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routelab_model::store::Values;

    /// One position of a one-layer, two-expert, one-head run.
    fn row(token: u32, expert: u32) -> CaptureStore {
        let mut s = CaptureStore::new(1);
        let layer = |q| HookPoint::layer(0, q);
        s.append(HookPoint::Tokens, &[], Values::U32(vec![token])).unwrap();
        s.append(layer(Quantity::RouterLogits), &[2], Values::F32(vec![0.0, 0.0])).unwrap();
        s.append(layer(Quantity::RouterExperts), &[1], Values::U32(vec![expert])).unwrap();
        s.append(layer(Quantity::RouterWeights), &[1], Values::F32(vec![1.0])).unwrap();
        s.append(layer(Quantity::AttnSink), &[1], Values::F32(vec![token as f32 / 10.0])).unwrap();
        s.pieces.push(format!("t{token}"));
        s
    }

    #[test]
    fn streamed_rows_update_load_and_entropy() {
        let mut v = RunView::new(1, 1, vec![2]);
        v.extend(&row(5, 1)).unwrap();
        v.prompt_len = 1;
        v.extend(&row(6, 1)).unwrap();
        assert_eq!(v.load[0], vec![0, 2]);
        assert_eq!(v.top1(0, 1), Some(1));
        assert_eq!(v.pieces(), &["t5", "t6"]);
        assert_eq!((v.head_sink_at(0, 0), v.head_sink_at(0, 1), v.head_sink_at(0, 2)), (&[0.5f32][..], &[0.6f32][..], &[][..]));
        // Two equal logits: entropy ln 2 each.
        assert!((v.mean_router_entropy(0).unwrap() - 2f64.ln()).abs() < 1e-12);
    }
}
