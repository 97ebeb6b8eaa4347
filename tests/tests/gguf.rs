//! GGUF files written by llama.cpp's own converter (`tests/fixtures/gguf`, see its README) from
//! the tiny fixtures, against the transformers references of the same models
//! (`tests/fixtures/models/<case>/reference.safetensors`).
//!
//! - F32: the same weights as the safetensors checkpoint (q/k rows un-permuted where the
//!   converter permuted them), so logits, residual streams, attention and routing match the
//!   reference to the safetensors tolerances.
//! - F16 and Q8_0: the weights are rounded, so logits move; the tolerances below bound that.
//! - [`transformers`]: where transformers reads the file itself (qwen2, phi3, qwen3_moe), its
//!   run of the file (`tests/fixtures/gguf/transformers/`), every type: RouteLab dequantising
//!   to f32 matches it to the F32 tolerance, and keeping the blocks to Q8_0's.

use candle_core::{DType, Device, Tensor};
use routelab_model::capture::{CaptureSpec, Layers};
use routelab_model::checkpoint;
use routelab_model::decoder::{ForwardOptions, ForwardOutput, Model};
use routelab_model::hooks::Quantity;
use routelab_tests::*;

fn gguf(case: &str, kind: &str) -> std::path::PathBuf {
    fixtures().join("gguf").join(format!("{case}.{kind}.gguf"))
}

/// The file dequantised to f32 (`--dtype f32`).
fn load(case: &str, kind: &str) -> Model {
    load_keeping(case, kind, false).0
}

/// With `keep_blocks`, as RouteLab loads it when no dtype is asked for (`LoadOptions::for_device`
/// on the CPU): projections in a block type its kernels take stay in their blocks. Also returns
/// the bytes kept in blocks.
fn load_keeping(case: &str, kind: &str, keep_blocks: bool) -> (Model, usize) {
    let path = gguf(case, kind);
    let ck = checkpoint::open_gguf(&path, DType::F32, &Device::Cpu).unwrap_or_else(|e| panic!("{case} {kind}: {e}"));
    let weights = ck.weights.keeping_quantized(keep_blocks);
    let kept = weights.resident_bytes().1;
    (Model::load(ck.config, &weights, &mut |_, _| true).unwrap_or_else(|e| panic!("{case} {kind}: {e}")), kept)
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
    }
    assert_eq!(first_routing_flip(&out, &r), None, "{case} f32 GGUF: routing");
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
    check_rounded_against(case, kind, rel, &Reference::load(case));
}

fn check_rounded_against(case: &str, kind: &str, rel: f32, r: &Reference) {
    let n = positions(case, r.ids("input_ids").len());
    check_within_scale(&format!("{case} {kind} GGUF"), &load(case, kind), r, n, rel);
}

/// `model`'s logits over the first `positions` of `r`'s input against `r`'s (`what` names the
/// comparison), as [`check_rounded`] describes.
fn check_within_scale(what: &str, model: &Model, r: &Reference, mut positions: usize, rel: f32) {
    let ids = r.ids("input_ids");
    let out = forward(model, &ids);
    if let Some((p, l)) = first_routing_flip(&out, r) {
        eprintln!("{what}: routing differs from the reference first at position {p} (layer {l}); comparing positions 0..{p}");
        assert!(p >= 1, "{what}: routing already differs at position {p} of {} (layer {l})", ids.len());
        positions = positions.min(p);
    }
    let n = positions * model.config.vocab_size;
    let got = vec_f32(&out.logits)[..n].to_vec();
    let want = &r.get("logits").f32[..n];
    let (d, i) = max_abs_diff(&got, want);
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let tol = rel * scale;
    assert!(d <= tol, "{what}: logits max |Δ| {d:e} at {i}, tolerance {tol:e} ({rel} of the scale {scale})");
    for (t, gap) in top1_flips(&got, want, model.config.vocab_size) {
        assert!(gap <= 2.0 * tol, "{what}: position {t}: top-1 token differs with a gap of {gap}");
        eprintln!("{what}: position {t}: top-1 differs at a near-tie (gap {gap:e})");
    }
    eprintln!("{what}: logits max |Δ| {d:e} = {} of the scale {scale}", d / scale);
}

/// Q8_0 rounds each weight to a step of 1/127 of its block's largest magnitude (about 2σ over
/// 32 Gaussian weights): an error of up to 0.9% of σ per weight, 16× f16's. The logits moved by
/// 2.4–7.6% of their scale; 15% of the scale bounds it.
const Q8_0_REL: f32 = 0.15;

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
            #[test]
            fn q8_0_within_its_rounding() {
                check_rounded(stringify!($case), "q8_0", Q8_0_REL);
            }
            #[test]
            fn q4_k_m_loads_and_runs() {
                check_runs(stringify!($case), "q4_k_m");
            }
        }
    )*};
}

gguf_cases!(llama, mistral, qwen2, qwen3, phi3, mixtral, qwen3_moe, olmoe, phimoe, arctic, dbrx);

/// llama-quantize's Q4_K_M of the tiny fixtures: no row is a multiple of 256, so it falls back
/// to Q5_0, Q5_1, Q8_0 and F16 blocks, whose 5-bit rounding moves these random models' logits
/// by 13-75% of their scale and flips routing from the first positions: no reference to hold
/// them to. The file must load, state its block types and give finite logits.
fn check_runs(case: &str, kind: &str) {
    let path = gguf(case, kind);
    let ck = checkpoint::open_gguf(&path, DType::F32, &Device::Cpu).unwrap_or_else(|e| panic!("{case} {kind}: {e}"));
    let storage = ck.weights.storage();
    assert!(storage.iter().any(|(k, ..)| k.starts_with("Q5") || k.starts_with("Q8")), "{case} {kind}: {storage:?}");
    let model = Model::load(ck.config, &ck.weights, &mut |_, _| true).unwrap();
    let logits = vec_f32(&forward(&model, &Reference::load(case).ids("input_ids")).logits);
    assert!(logits.iter().all(|x| x.is_finite()), "{case} {kind}: non-finite logits");
}

/// DeepSeek's GGUF against RouteLab's run of the same safetensors fixture with YaRN's `mscale`
/// set to `mscale_all_dim`: GGUF stores only the latter (`yarn_log_multiplier`), and llama.cpp
/// scales cos/sin by 1 as transformers does when the two are equal (the released V2/V3
/// configs). The fixture keeps them apart (1.0 and 0.8) to test that path of the safetensors
/// loader. The F32 file then matches to 1e-4 with the same experts; F16 and Q8_0 as above.
fn deepseek_reference(case: &str) -> Reference {
    let dir = copy_case(case);
    edit_config(dir.path(), |config| {
        let rope = if config.get("rope_scaling").is_some_and(|v| v.is_object()) { "rope_scaling" } else { "rope_parameters" };
        config[rope]["mscale"] = config[rope]["mscale_all_dim"].clone();
    });
    let ck = checkpoint::open_dir(dir.path(), DType::F32, &Device::Cpu).unwrap();
    let model = Model::load(ck.config, &ck.weights, &mut |_, _| true).unwrap();
    let ids = Reference::load(case).ids("input_ids");
    let out = forward(&model, &ids);
    let mut tensors = std::collections::HashMap::new();
    let t = ids.len();
    tensors.insert("logits".to_string(), RefTensor { shape: vec![t, model.config.vocab_size], f32: vec_f32(&out.logits), i64: vec![] });
    tensors.insert("input_ids".to_string(), RefTensor { shape: vec![t], f32: vec![], i64: ids.iter().map(|&x| x as i64).collect() });
    for (l, lc) in out.layers.iter().enumerate() {
        if let Some(e) = lc.get(Quantity::RouterExperts).unwrap() {
            let k = e.dim(1).unwrap();
            let e: Vec<i64> = e.flatten_all().unwrap().to_vec1::<u32>().unwrap().into_iter().map(i64::from).collect();
            tensors.insert(format!("router.{l}.experts"), RefTensor { shape: vec![t, k], f32: vec![], i64: e });
            let w = vec_f32(&lc.get(Quantity::RouterWeights).unwrap().unwrap());
            tensors.insert(format!("router.{l}.weights"), RefTensor { shape: vec![t, k], f32: w, i64: vec![] });
        }
    }
    Reference { tensors, metadata: Default::default() }
}

macro_rules! deepseek_cases {
    ($($case:ident),*) => {$(
        mod $case {
            use super::*;
            #[test]
            fn f32_matches_the_safetensors_model() {
                let case = stringify!($case);
                let r = deepseek_reference(case);
                let model = load(case, "f32");
                let out = forward(&model, &r.ids("input_ids"));
                let (d, i) = max_abs_diff(&vec_f32(&out.logits), &r.get("logits").f32);
                assert!(d <= 1e-4, "{case} f32 GGUF: logits max |Δ| {d:e} at {i}");
                assert_eq!(first_routing_flip(&out, &r), None, "{case} f32 GGUF: routing");
            }
            #[test]
            fn f16_and_q8_0_within_their_rounding() {
                let case = stringify!($case);
                let r = deepseek_reference(case);
                check_rounded_against(case, "f16", 5e-3, &r);
                check_rounded_against(case, "q8_0", Q8_0_REL, &r);
                if gguf(case, "q4_k_m").exists() {
                    check_runs(case, "q4_k_m");
                }
            }
        }
    )*};
}

deepseek_cases!(deepseek_v2, deepseek_v3);

/// A Mixtral-shaped model with rows that are multiples of 256 (`mixtral_k`, built by the
/// generator), as Q4_K_M (Q4_K and Q6_K blocks) and Q8_0: its projections kept in their blocks
/// and multiplied by candle's quantized kernels against the same file dequantised to f32. The
/// kernels quantize activations to 8 bits per block (Q8_K, Q8_0: a step of |x|max/127), so the
/// two runs differ by that rounding alone; measured below the bound in the test.
fn check_kept_blocks(kind: &str, rel: f32) {
    let path = gguf("mixtral_k", kind);
    let open = |keep: bool| {
        let ck = checkpoint::open_gguf(&path, DType::F32, &Device::Cpu).unwrap();
        let w = ck.weights.keeping_quantized(keep);
        let kept = w.resident_bytes().1;
        (Model::load(ck.config, &w, &mut |_, _| true).unwrap(), kept)
    };
    let (blocks, kept) = open(true);
    let (floats, none) = open(false);
    assert!(kept > 1 << 20 && none == 0, "{kind}: {kept} bytes kept in blocks");
    assert!(blocks.weight_bytes() * 2 < floats.weight_bytes(), "{kind}: {} vs {} bytes", blocks.weight_bytes(), floats.weight_bytes());
    let ids: Vec<u32> = (0..24).map(|i| (i * 37 + 11) % 320).collect();
    let (a, b) = (forward(&blocks, &ids), forward(&floats, &ids));
    let want = vec_f32(&b.logits);
    let (d, i) = max_abs_diff(&vec_f32(&a.logits), &want);
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    eprintln!("mixtral_k {kind}: kept blocks vs dequantised: max |Δ| {d:e} = {} of the scale {scale}", d / scale);
    assert!(d <= rel * scale, "mixtral_k {kind}: max |Δ| {d:e} at {i}, scale {scale}");
    let flips = top1_flips(&vec_f32(&a.logits), &want, 320);
    assert!(flips.iter().all(|&(_, gap)| gap <= rel * scale), "mixtral_k {kind}: top-1 flips {flips:?}");
}

#[test]
fn q4_k_m_blocks_kept_match_their_dequantised_weights() {
    check_kept_blocks("q4_k_m", 0.03);
}

#[test]
fn q8_0_blocks_kept_match_their_dequantised_weights() {
    check_kept_blocks("q8_0", 0.03);
}

/// transformers' own run of the same GGUF file (`tests/fixtures/gguf/transformers/<case>.<kind>
/// .safetensors`, written by `transformers_refs.py`; see the README there for which files
/// transformers reads and why the others have no reference).
fn transformers_reference(case: &str, kind: &str) -> Reference {
    Reference::load_file(&fixtures().join("gguf").join("transformers").join(format!("{case}.{kind}.safetensors")))
}

/// `--dtype f32` against transformers: both dequantise every tensor to the same f32 values
/// (F16 widened; Q8_0 and Q5_0 as `d · q` with the f16 block scale widened, exact in f32; Q5_1
/// as `d · q + m`), so the two runs compute one f32 model and differ by summation order
/// alone, as the F32 file against the safetensors reference: the F32 tolerance, 1e-4 absolute on
/// logits of O(1–10) (measured 7e-6 – 2.5e-5), the same top-1 token at every position and the
/// same experts.
fn check_transformers_dequantised(case: &str, kind: &str) {
    let r = transformers_reference(case, kind);
    let model = load(case, kind);
    let out = forward(&model, &r.ids("input_ids"));
    let (got, want) = (vec_f32(&out.logits), &r.get("logits").f32);
    let (d, i) = max_abs_diff(&got, want);
    eprintln!("{case} {kind} dequantised vs transformers: logits max |Δ| {d:e}");
    assert!(d <= 1e-4, "{case} {kind} dequantised vs transformers: logits max |Δ| {d:e} at {i}");
    assert_eq!(top1_flips(&got, want, model.config.vocab_size), [], "{case} {kind} dequantised vs transformers: top-1");
    assert_eq!(first_routing_flip(&out, &r), None, "{case} {kind} dequantised vs transformers: routing");
}

/// RouteLab's default load (blocks kept: its integer kernels on the Q8_0 blocks, including the
/// Q4_K_M files' Q8_0 tensors; their Q5_0/Q5_1 ones are dequantised) against transformers'
/// dequantised run of the same file. The weights are the same; the kernels round the other
/// operand, the activations, to 8 bits per block of 32 (a step of |x|max/127, as Q8_0 rounds
/// weights), so the bound of Q8_0's weight rounding, [`Q8_0_REL`] of the logits' scale, applies,
/// up to the first routing flip as in [`check_rounded`]. Measured: 0.6–5.9% of the scale.
fn check_transformers_kept_blocks(case: &str, kind: &str) {
    let r = transformers_reference(case, kind);
    let (model, kept) = load_keeping(case, kind, true);
    eprintln!("{case} {kind}: {kept} bytes kept in blocks");
    if routelab_kernels::blocks::vector_kernels() {
        assert!(kept > 0, "{case} {kind}: no projection kept in its blocks");
    }
    let n = r.ids("input_ids").len();
    check_within_scale(&format!("{case} {kind} kept blocks vs transformers"), &model, &r, n, Q8_0_REL);
}

macro_rules! transformers_cases {
    ($($case:ident),*) => {
        /// The cases with a transformers run of their GGUF files.
        const TRANSFORMERS_CASES: &[&str] = &[$(stringify!($case)),*];
        $(mod $case {
            use super::*;
            #[test]
            fn f32_dequantised() {
                check_transformers_dequantised(stringify!($case), "f32");
            }
            #[test]
            fn f16_dequantised() {
                check_transformers_dequantised(stringify!($case), "f16");
            }
            #[test]
            fn q8_0_dequantised() {
                check_transformers_dequantised(stringify!($case), "q8_0");
            }
            #[test]
            fn q8_0_kept_blocks() {
                check_transformers_kept_blocks(stringify!($case), "q8_0");
            }
            #[test]
            fn q4_k_m_dequantised() {
                check_transformers_dequantised(stringify!($case), "q4_k_m");
            }
            #[test]
            fn q4_k_m_kept_blocks() {
                check_transformers_kept_blocks(stringify!($case), "q4_k_m");
            }
        })*
    };
}

/// RouteLab's runs of a GGUF file against transformers' runs of the same file.
mod transformers {
    use super::*;
    transformers_cases!(qwen2, phi3, qwen3_moe);

    /// Every reference in `gguf/transformers/` is one of the files tested above, and each case
    /// above has all four.
    #[test]
    fn every_reference_is_tested() {
        let dir = fixtures().join("gguf").join("transformers");
        let mut have: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.ends_with(".safetensors"))
            .collect();
        have.sort();
        let mut want: Vec<String> =
            TRANSFORMERS_CASES.iter().flat_map(|c| ["f32", "f16", "q8_0", "q4_k_m"].map(|k| format!("{c}.{k}.safetensors"))).collect();
        want.sort();
        assert_eq!(have, want);
    }
}

/// A GGUF in three shards (the converter's `--split-max-tensors 12`): any shard opens the
/// model, which matches the single-file F32 run exactly; a missing shard is named.
#[test]
fn a_sharded_gguf_loads_from_any_shard_and_names_a_missing_one() {
    let dir = fixtures().join("gguf").join("sharded");
    let single = forward(&load("olmoe", "f32"), &Reference::load("olmoe").ids("input_ids"));
    for n in [1, 3] {
        let path = dir.join(format!("olmoe.f32-0000{n}-of-00003.gguf"));
        let ck = checkpoint::open_gguf(&path, DType::F32, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
        let model = Model::load(ck.config, &ck.weights, &mut |_, _| true).unwrap();
        let out = forward(&model, &Reference::load("olmoe").ids("input_ids"));
        assert_eq!(vec_f32(&out.logits), vec_f32(&single.logits), "shard {n}");
    }
    let tmp = tempfile::tempdir().unwrap();
    for n in [1, 2] {
        let name = format!("olmoe.f32-0000{n}-of-00003.gguf");
        std::fs::copy(dir.join(&name), tmp.path().join(&name)).unwrap();
    }
    let err = checkpoint::open_gguf(&tmp.path().join("olmoe.f32-00001-of-00003.gguf"), DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("olmoe.f32-00003-of-00003.gguf") && err.contains("missing"), "{err}");
}
