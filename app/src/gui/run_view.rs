//! What the views draw for one run: tokens, per-layer routing and head statistics, and running
//! aggregates (expert load, router entropy) kept up to date as tokens stream in, so a frame
//! never recomputes over the whole run.

use routelab_model::session::StepRecord;
use routelab_probes::trace::Trace;

#[derive(Clone, Debug, Default)]
pub struct RunView {
    pub tokens: Vec<u32>,
    pub pieces: Vec<String>,
    pub prompt_len: usize,
    pub layers: usize,
    pub heads: usize,
    /// Routed experts per layer (0 for dense layers).
    pub experts: Vec<usize>,
    pub top_k: usize,
    /// Per layer `[T × K]`.
    pub routing: Vec<Vec<u32>>,
    pub weights: Vec<Vec<f32>>,
    /// Per layer `[T × H]`.
    pub entropy: Vec<Vec<f32>>,
    pub argmax: Vec<Vec<u32>>,
    /// Per layer `[T × H]`: attention on key 0 (empty for runs recorded without it).
    pub sink: Vec<Vec<f32>>,
    /// Per layer, selections per expert so far.
    pub load: Vec<Vec<u32>>,
    /// Per layer, sum of router entropies (nats) so far.
    pub router_entropy_sum: Vec<f64>,
    pub generated_text: String,
    pub done: bool,
}

fn softmax_entropy(logits: &[f32]) -> f64 {
    if logits.is_empty() {
        return 0.0;
    }
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let w: Vec<f64> = logits.iter().map(|&x| (x as f64 - m).exp()).collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|x| x / s).filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum()
}

impl RunView {
    pub fn new(layers: usize, heads: usize, experts: Vec<usize>) -> Self {
        RunView {
            layers,
            heads,
            load: experts.iter().map(|&e| vec![0; e]).collect(),
            experts,
            routing: vec![vec![]; layers],
            weights: vec![vec![]; layers],
            entropy: vec![vec![]; layers],
            argmax: vec![vec![]; layers],
            sink: vec![vec![]; layers],
            router_entropy_sum: vec![0.0; layers],
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn is_moe(&self) -> bool {
        self.experts.iter().any(|&e| e > 0)
    }

    pub fn max_experts(&self) -> usize {
        self.experts.iter().cloned().max().unwrap_or(0)
    }

    /// Adds one position.
    pub fn push(&mut self, rec: &StepRecord) {
        if !rec.generated {
            self.prompt_len = self.tokens.len() + 1;
        }
        self.tokens.push(rec.token);
        self.pieces.push(rec.piece.clone());
        for (l, lr) in rec.layers.iter().enumerate().take(self.layers) {
            if !lr.experts.is_empty() {
                self.top_k = lr.experts.len();
                for &e in &lr.experts {
                    if let Some(c) = self.load[l].get_mut(e as usize) {
                        *c += 1;
                    }
                }
                self.router_entropy_sum[l] += softmax_entropy(&lr.router_logits);
            }
            self.routing[l].extend_from_slice(&lr.experts);
            self.weights[l].extend_from_slice(&lr.weights);
            self.entropy[l].extend_from_slice(&lr.head_entropy);
            self.argmax[l].extend_from_slice(&lr.head_argmax);
            self.sink[l].extend_from_slice(&lr.head_sink);
        }
    }

    /// Rebuilds a view from a saved trace.
    pub fn from_trace(t: &Trace) -> Self {
        let layers = t.layers.len();
        let heads = t.layers.iter().map(|l| l.heads).max().unwrap_or(0);
        let experts: Vec<usize> = t.layers.iter().map(|l| l.router.as_ref().map(|r| r.num_experts).unwrap_or(0)).collect();
        let mut v = RunView::new(layers, heads, experts);
        v.tokens = t.tokens.clone();
        v.pieces = if t.meta.pieces.len() == t.len() { t.meta.pieces.clone() } else { t.tokens.iter().map(|x| format!("<{x}>")).collect() };
        v.prompt_len = t.meta.generated_from;
        for (l, lt) in t.layers.iter().enumerate() {
            if let Some(r) = &lt.router {
                v.top_k = r.top_k;
                v.routing[l] = r.experts.clone();
                v.weights[l] = r.weights.clone();
                for &e in &r.experts {
                    v.load[l][e as usize] += 1;
                }
                v.router_entropy_sum[l] = (0..t.len()).map(|p| softmax_entropy(r.logits_at(p))).sum();
            }
            v.entropy[l] = lt.entropy.clone().unwrap_or_default();
            v.argmax[l] = lt.argmax.clone().unwrap_or_default();
            v.sink[l] = lt.sink.clone().unwrap_or_default();
        }
        v.generated_text = v.pieces[v.prompt_len.min(v.pieces.len())..].concat();
        v.done = true;
        v
    }

    /// Top-1 expert of a position in a layer.
    pub fn top1(&self, layer: usize, pos: usize) -> Option<u32> {
        if self.top_k == 0 {
            return None;
        }
        self.routing.get(layer)?.get(pos * self.top_k).copied()
    }

    pub fn experts_at(&self, layer: usize, pos: usize) -> (&[u32], &[f32]) {
        let k = self.top_k;
        let r = &self.routing[layer];
        if k == 0 || r.len() < (pos + 1) * k {
            return (&[], &[]);
        }
        (&r[pos * k..(pos + 1) * k], &self.weights[layer][pos * k..(pos + 1) * k])
    }

    pub fn head_entropy_at(&self, layer: usize, pos: usize) -> &[f32] {
        let h = self.heads;
        self.entropy.get(layer).and_then(|e| e.get(pos * h..(pos + 1) * h)).unwrap_or(&[])
    }

    pub fn head_argmax_at(&self, layer: usize, pos: usize) -> &[u32] {
        let h = self.heads;
        self.argmax.get(layer).and_then(|e| e.get(pos * h..(pos + 1) * h)).unwrap_or(&[])
    }

    /// Each head's attention on key 0 at `pos` (empty when not recorded).
    pub fn head_sink_at(&self, layer: usize, pos: usize) -> &[f32] {
        let h = self.heads;
        self.sink.get(layer).and_then(|e| e.get(pos * h..(pos + 1) * h)).unwrap_or(&[])
    }

    /// Mean router entropy (nats) per layer so far (None for dense layers).
    pub fn mean_router_entropy(&self, layer: usize) -> Option<f64> {
        (self.experts[layer] > 0 && !self.is_empty()).then(|| self.router_entropy_sum[layer] / self.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routelab_model::session::LayerRecord;

    fn rec(token: u32, experts: Vec<u32>, generated: bool) -> StepRecord {
        StepRecord {
            position: 0,
            token,
            piece: format!("t{token}"),
            generated,
            layers: vec![LayerRecord {
                router_logits: vec![0.0, 0.0],
                experts,
                weights: vec![1.0],
                head_entropy: vec![0.5],
                head_argmax: vec![0],
                head_sink: vec![token as f32 / 10.0],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn pushing_records_updates_load_and_entropy() {
        let mut v = RunView::new(1, 1, vec![2]);
        v.push(&rec(5, vec![1], false));
        v.push(&rec(6, vec![1], true));
        assert_eq!(v.load[0], vec![0, 2]);
        assert_eq!(v.prompt_len, 1);
        assert_eq!(v.top1(0, 1), Some(1));
        assert_eq!((v.head_sink_at(0, 0), v.head_sink_at(0, 1), v.head_sink_at(0, 2)), (&[0.5f32][..], &[0.6f32][..], &[][..]));
        // Two equal logits: entropy ln 2 each.
        assert!((v.mean_router_entropy(0).unwrap() - 2f64.ln()).abs() < 1e-12);
    }
}
