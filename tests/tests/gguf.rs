//! GGUF files written by llama.cpp's own converter (`tests/fixtures/gguf`, see its README) from
//! the tiny fixtures, against the transformers references of the same models
//! (`tests/fixtures/models/<case>/reference.safetensors`).
//!
//! - F32: the same weights as the safetensors checkpoint (q/k rows un-permuted where the
//!   converter permuted them), so logits, residual streams, attention and routing match the
//!   reference to the safetensors tolerances.
//! - F16 and Q8_0: the weights are rounded, so logits move; the tolerances below bound that.

use candle_core::{DType, Device, Tensor};
use routelab_model::capture::{CaptureSpec, Layers};
use routelab_model::checkpoint;
use routelab_model::decoder::{ForwardOptions, ForwardOutput, Model};
use routelab_model::hooks::Quantity;
use routelab_tests::*;

fn gguf(case: &str, kind: &str) -> std::path::PathBuf {
    fixtures().join("gguf").join(format!("{case}.{kind}.gguf"))
}

fn load(case: &str, kind: &str) -> Model {
    let path = gguf(case, kind);
    let ck = checkpoint::open_gguf(&path, DType::F32, &Device::Cpu).unwrap_or_else(|e| panic!("{case} {kind}: {e}"));
    Model::load(ck.config, &ck.weights, &mut |_, _| true).unwrap_or_else(|e| panic!("{case} {kind}: {e}"))
}

fn forward(model: &Model, ids: &[u32]) -> ForwardOutput {
    let mut cache = model.new_cache();
    let plan = CaptureSpec::all().plan(model.config.num_layers);
    model.forward(ids, &mut cache, &ForwardOptions { head_outputs: &Layers::None, ..ForwardOptions::new(&plan) }).unwrap()
}

fn vec_f32(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Rows of `[T, V]` logits whose argmax differs, and the largest gap between the two runs' top
/// logits at those rows (a near-tie when small).
fn top1_flips(got: &[f32], want: &[f32], vocab: usize) -> Vec<(usize, f32)> {
    let argmax = |r: &[f32]| r.iter().enumerate().fold(0, |a, (i, &x)| if x > r[a] { i } else { a });
    got.chunks(vocab)
        .zip(want.chunks(vocab))
        .enumerate()
        .filter_map(|(t, (g, w))| {
            let (ag, aw) = (argmax(g), argmax(w));
            (ag != aw).then(|| (t, (w[aw] - w[ag]).abs()))
        })
        .collect()
}

/// Positions the GGUF model must agree on: all, except for Mistral, whose sliding window
/// llama.cpp's converter drops (the llama architecture has no window key), so only the
/// positions within the window (8 in the fixture) see the same keys.
fn positions(case: &str, t: usize) -> usize {
    if case == "mistral" {
        8
    } else {
        t
    }
}

/// F32 GGUF: the reference checks of the safetensors fixture.
fn check_f32(case: &str) {
    let model = load(case, "f32");
    let r = Reference::load(case);
    let ids = r.ids("input_ids");
    let out = forward(&model, &ids);
    let v = model.config.vocab_size;
    let n = positions(case, ids.len());
    let (d, i) = max_abs_diff(&vec_f32(&out.logits)[..n * v], &r.get("logits").f32[..n * v]);
    assert!(d <= 1e-4, "{case} f32 GGUF: logits max |Δ| {d:e} at {i}");
    if n < ids.len() {
        return;
    }
    for (l, lc) in out.layers.iter().enumerate() {
        let probs = vec_f32(&lc.get(Quantity::AttnProbs).unwrap().unwrap());
        let (d, i) = max_abs_diff(&probs, &r.get(&format!("attn.{l}.probs")).f32);
        assert!(d <= 1e-5, "{case} f32 GGUF: layer {l} attention max |Δ| {d:e} at {i}");
        if let Some(want) = r.tensors.get(&format!("router.{l}.experts")) {
            let got = lc.get(Quantity::RouterExperts).unwrap().expect("a MoE layer records its experts");
            let got: Vec<i64> = got.flatten_all().unwrap().to_vec1::<u32>().unwrap().into_iter().map(i64::from).collect();
            let k = want.shape[1];
            for (pos, (g, w)) in got.chunks(k).zip(want.i64.chunks(k)).enumerate() {
                let (mut g, mut w) = (g.to_vec(), w.to_vec());
                g.sort();
                w.sort();
                assert_eq!(g, w, "{case} f32 GGUF: layer {l} position {pos}: experts");
            }
        }
    }
}

/// The first position where some layer routes differently from the reference, with the
/// layer: other experts, or weights that jump (PhiMoE's sparsemixer masks experts whose scores
/// fall within a threshold of the top one, so its weights are discontinuous too). Rounded
/// weights move router scores, and a near-tie can flip.
fn first_routing_flip(out: &ForwardOutput, r: &Reference) -> Option<(usize, usize)> {
    let mut first: Option<(usize, usize)> = None;
    for (l, lc) in out.layers.iter().enumerate() {
        let (Some(want), Some(got)) = (r.tensors.get(&format!("router.{l}.experts")), lc.get(Quantity::RouterExperts).unwrap()) else {
            continue;
        };
        let got: Vec<i64> = got.flatten_all().unwrap().to_vec1::<u32>().unwrap().into_iter().map(i64::from).collect();
        let got_w = vec_f32(&lc.get(Quantity::RouterWeights).unwrap().unwrap());
        let want_w = &r.get(&format!("router.{l}.weights")).f32;
        let k = want.shape[1];
        for pos in 0..got.len() / k {
            let pairs = |e: &[i64], w: &[f32]| {
                let mut v: Vec<(i64, f32)> = e.iter().copied().zip(w.iter().copied()).collect();
                v.sort_by_key(|p| p.0);
                v
            };
            let (g, w) = (pairs(&got[pos * k..][..k], &got_w[pos * k..][..k]), pairs(&want.i64[pos * k..][..k], &want_w[pos * k..][..k]));
            let differs = g.iter().zip(&w).any(|(a, b)| a.0 != b.0 || (a.1 - b.1).abs() > 0.05);
            if differs && first.is_none_or(|(p, _)| pos < p) {
                first = Some((pos, l));
            }
        }
    }
    first
}

/// F16 / Q8_0 GGUF against the reference: logits within `rel` of the logits' scale, and the
/// same top-1 token except at near-ties (a gap under that tolerance), which are reported. A
/// wrong tensor, transpose or row permutation moves logits by about their whole scale. Where
/// the rounding flips a routing decision (reported), only the positions before it compare:
/// from there on the runs compute with different experts.
fn check_rounded(case: &str, kind: &str, rel: f32) {
    let model = load(case, kind);
    let r = Reference::load(case);
    let ids = r.ids("input_ids");
    let out = forward(&model, &ids);
    let mut positions = positions(case, ids.len());
    if let Some((p, l)) = first_routing_flip(&out, &r) {
        eprintln!("{case} {kind}: routing differs from the reference first at position {p} (layer {l}); comparing positions 0..{p}");
        assert!(p >= ids.len() / 4, "{case} {kind}: routing already differs at position {p} of {} (layer {l})", ids.len());
        positions = positions.min(p);
    }
    let n = positions * model.config.vocab_size;
    let got = vec_f32(&out.logits)[..n].to_vec();
    let want = &r.get("logits").f32[..n];
    let (d, i) = max_abs_diff(&got, want);
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let tol = rel * scale;
    assert!(d <= tol, "{case} {kind} GGUF: logits max |Δ| {d:e} at {i}, tolerance {tol:e} ({rel} of the scale {scale})");
    for (t, gap) in top1_flips(&got, want, model.config.vocab_size) {
        assert!(gap <= 2.0 * tol, "{case} {kind} GGUF: position {t}: top-1 token differs with a gap of {gap}");
        eprintln!("{case} {kind}: position {t}: top-1 differs at a near-tie (gap {gap:e})");
    }
    eprintln!("{case} {kind}: logits max |Δ| {d:e}");
}

macro_rules! gguf_cases {
    ($($case:ident),*) => {$(
        mod $case {
            use super::*;
            #[test]
            fn f32_matches_transformers() {
                check_f32(stringify!($case));
            }
            /// f16 keeps 11 significant bits: each weight within 2⁻¹² relative. Through two
            /// layers and a 320-token head the logits moved by 0.09–0.24% of their scale
            /// (about 10); 0.5% bounds it.
            #[test]
            fn f16_within_its_rounding() {
                check_rounded(stringify!($case), "f16", 5e-3);
            }
            /// Q8_0 rounds each weight to a step of 1/127 of its block's largest magnitude
            /// (about 2σ over 32 Gaussian weights): an error of up to 0.9% of σ per weight, 16×
            /// f16's. The logits moved by 2.4–7.6% of their scale; 15% bounds it.
            #[test]
            fn q8_0_within_its_rounding() {
                check_rounded(stringify!($case), "q8_0", 0.15);
            }
        }
    )*};
}

gguf_cases!(llama, mistral, qwen2, qwen3, phi3, mixtral, qwen3_moe, olmoe, phimoe);
