//! Trace files: one safetensors file per run, readable with `safetensors.numpy.load_file` in
//! Python.
//!
//! A trace is a run's [`CaptureStore`] plus the run's metadata: its tensors are named by hook
//! point ([`routelab_model::hooks`]: `tokens`, `logits`, `layers.{l}.router.experts`, …) with
//! the dtypes and shapes of the hook table, T = positions (prompt then generated). A dense layer
//! of an MoE model simply has no `layers.{l}.router.*`.
//!
//! `__metadata__`: `format` ([`FORMAT`]), `model`, `architecture`, `config` (JSON), `prompt`,
//! `generated_from` (first generated position), `interventions` (JSON), `capture` (JSON),
//! `sampling` (JSON), `routelab_version`, `token_text` (JSON list of each token's text, for
//! labels).
//!
//! Files of the first format, [`FORMAT_V1`], still open: their tensors had the names in the
//! hook table's `v1_name` column (`router.{l}.experts`, `attn.{l}.entropy`, `hidden.{l}`).

use std::collections::HashMap;
use std::ops::Deref;
use std::path::Path;

use routelab_model::capture::CaptureSpec;
use routelab_model::config::ModelConfig;
use routelab_model::hooks::{Elem, HookPoint, Layout, Quantity, MAX_LAYERS, QUANTITIES};
use routelab_model::interventions::Interventions;
use routelab_model::session::RunRecord;
use routelab_model::store::{probs_from_dense, CaptureStore, Values};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::{ProbeError, Result};

pub const FORMAT: &str = "routelab-trace/2";
/// The first format, read but no longer written.
pub const FORMAT_V1: &str = "routelab-trace/1";

/// Run metadata kept with every trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceMeta {
    pub model: String,
    pub architecture: String,
    pub config: serde_json::Value,
    pub prompt: String,
    pub generated_from: usize,
    pub interventions: Interventions,
    pub capture: CaptureSpec,
    pub sampling: serde_json::Value,
    pub routelab_version: String,
    /// Where the run's routing came from in the layers it replayed (see `routelab_model::replay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<routelab_model::replay::ReplaySummary>,
}

/// A run's captures and how they were produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub meta: TraceMeta,
    pub store: CaptureStore,
}

/// A trace reads as its store: `trace.tokens()`, `trace.router(l)`, `trace.pieces`.
impl Deref for Trace {
    type Target = CaptureStore;
    fn deref(&self) -> &CaptureStore {
        &self.store
    }
}

impl Trace {
    /// The trace of a finished run.
    pub fn from_run(run: RunRecord, model: &str, config: &ModelConfig, prompt: &str) -> Trace {
        Trace {
            meta: TraceMeta {
                model: model.to_string(),
                architecture: config.family.model_type().to_string(),
                config: config.raw.clone(),
                prompt: prompt.to_string(),
                generated_from: run.prompt_len,
                interventions: run.request.interventions.clone(),
                capture: run.request.capture.clone(),
                sampling: serde_json::to_value(&run.request.sampling).unwrap_or_default(),
                routelab_version: env!("CARGO_PKG_VERSION").to_string(),
                replay: run.request.replay.as_ref().map(|r| r.summary()),
            },
            store: run.store,
        }
    }

    /// Hidden size, from the residual streams if recorded, else the model's config.
    pub fn hidden_size(&self) -> usize {
        (0..self.num_layers())
            .find_map(|l| self.width(&HookPoint::layer(l, Quantity::Hidden)))
            .or_else(|| self.meta.config.get("hidden_size").and_then(|v| v.as_u64()).map(|v| v as usize))
            .unwrap_or(0)
    }

    /// Serialises to the safetensors bytes of the format.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let t = self.len();
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let u32s = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (hook, stored) in self.store.iter() {
            let (dtype, shape, bytes) = match (hook, &stored.values) {
                (HookPoint::Layer { layer, quantity: Quantity::AttnProbs }, _) => {
                    let p = self.probs(*layer).ok_or_else(|| ProbeError::Invalid(format!("{hook}: not f32")))?;
                    (Dtype::F32, vec![p.heads, t, t], f32s(&p.to_dense()))
                }
                (_, Values::F32(v)) => (Dtype::F32, [&[t][..], &stored.row_shape].concat(), f32s(v)),
                (_, Values::U32(v)) => (Dtype::U32, [&[t][..], &stored.row_shape].concat(), u32s(v)),
            };
            bufs.push((hook.to_string(), dtype, shape, bytes));
        }
        let views: Vec<(String, TensorView)> = bufs
            .iter()
            .map(|(n, d, s, b)| {
                Ok((n.clone(), TensorView::new(*d, s.clone(), b).map_err(|e| ProbeError::Invalid(format!("tensor {n}: {e}")))?))
            })
            .collect::<Result<_>>()?;
        let m = &self.meta;
        let metadata: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("model", m.model.clone()),
            ("architecture", m.architecture.clone()),
            ("config", m.config.to_string()),
            ("prompt", m.prompt.clone()),
            ("generated_from", m.generated_from.to_string()),
            ("interventions", serde_json::to_string(&m.interventions).unwrap_or_default()),
            ("capture", serde_json::to_string(&m.capture).unwrap_or_default()),
            ("sampling", m.sampling.to_string()),
            ("routelab_version", m.routelab_version.clone()),
            ("token_text", serde_json::to_string(&self.pieces).unwrap_or_default()),
        ]
        .into_iter()
        .chain(m.replay.as_ref().map(|r| ("replay", serde_json::to_string(r).unwrap_or_default())))
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| ProbeError::Invalid(format!("serialising trace: {e}")))
    }

    /// Writes atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    pub fn read(path: &Path) -> Result<Trace> {
        let bytes = std::fs::read(path).map_err(|e| ProbeError::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Trace> {
        let bad = |m: String| ProbeError::format(path, m);
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("{e}")))?;
        let md = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| md.get(k).cloned().ok_or_else(|| bad(format!("metadata field `{k}` is missing")));
        let format = get("format")?;
        let v1 = match format.as_str() {
            FORMAT => false,
            FORMAT_V1 => true,
            _ => return Err(bad(format!("format is {format:?}; this RouteLab reads {FORMAT:?} and {FORMAT_V1:?}"))),
        };
        let parse = |k: &str| -> Result<serde_json::Value> {
            serde_json::from_str(&get(k)?).map_err(|e| bad(format!("metadata `{k}` is not valid JSON: {e}")))
        };
        let meta = TraceMeta {
            model: get("model")?,
            architecture: get("architecture")?,
            config: parse("config")?,
            prompt: get("prompt")?,
            generated_from: get("generated_from")?.parse().map_err(|_| bad("metadata `generated_from` is not a number".into()))?,
            interventions: serde_json::from_value(parse("interventions")?).map_err(|e| bad(format!("metadata `interventions`: {e}")))?,
            capture: serde_json::from_value(parse("capture")?).map_err(|e| bad(format!("metadata `capture`: {e}")))?,
            sampling: md.get("sampling").and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default(),
            routelab_version: get("routelab_version")?,
            replay: match md.get("replay") {
                Some(r) => Some(serde_json::from_str(r).map_err(|e| bad(format!("metadata `replay`: {e}")))?),
                None => None,
            },
        };
        let pieces: Vec<String> = md.get("token_text").and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
        // Tensor names to hook points; names that are no hook (a newer RouteLab's) are skipped.
        let hook_of = |name: &str| -> Option<HookPoint> {
            if v1 {
                from_v1_name(name)
            } else {
                name.parse::<HookPoint>().ok().filter(|h| h.is_captured())
            }
        };
        let tokens = st.tensor("tokens").map_err(|_| bad("tensor `tokens` is missing".into()))?;
        if tokens.dtype() != Dtype::U32 || tokens.shape().len() != 1 {
            return Err(bad(format!("tensor tokens is {:?} {:?}, expected U32 of rank 1", tokens.dtype(), tokens.shape())));
        }
        let t = tokens.shape()[0];
        if !pieces.is_empty() && pieces.len() != t {
            return Err(bad(format!("token_text has {} entries for {t} tokens", pieces.len())));
        }
        if meta.generated_from > t {
            return Err(bad(format!("generated_from {} is past the {t} tokens", meta.generated_from)));
        }
        let mut store = CaptureStore::new(0);
        let mut names: Vec<(HookPoint, String)> = st.names().into_iter().filter_map(|n| Some((hook_of(n)?, n.to_string()))).collect();
        names.sort();
        for (hook, name) in names {
            // Per-layer checks below visit every layer up to the highest one named.
            if let Some(l) = hook.layer_index().filter(|&l| l >= MAX_LAYERS) {
                return Err(bad(format!("tensor {name} is of layer {l}; a trace has at most {MAX_LAYERS} layers")));
            }
            let view = st.tensor(&name).map_err(|e| bad(format!("tensor {name}: {e}")))?;
            let Some((elem, layout)) = hook.elem_layout() else {
                return Err(bad(format!("tensor {name} names an intervention site, not a captured quantity")));
            };
            let (want, rank) = match (elem, layout) {
                (Elem::F32, Layout::HeadsQueriesKeys) => (Dtype::F32, 3),
                (Elem::F32, Layout::Rows) => (Dtype::F32, quantity_rank(&hook)),
                (Elem::U32, _) => (Dtype::U32, quantity_rank(&hook)),
            };
            let shape = view.shape();
            if view.dtype() != want || shape.len() != rank {
                return Err(bad(format!("tensor {name} is {:?} {shape:?}, expected {want:?} of rank {rank}", view.dtype())));
            }
            let f32v = || view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<f32>>();
            let u32v = || view.data().chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<u32>>();
            let appended = match layout {
                Layout::HeadsQueriesKeys => {
                    if shape[1] != t || shape[2] != t {
                        return Err(bad(format!("{name} has shape {shape:?}, expected [H, {t}, {t}]")));
                    }
                    store.append(hook, &[shape[0]], Values::F32(probs_from_dense(shape[0], t, &f32v())))
                }
                Layout::Rows => {
                    if shape[0] != t {
                        return Err(bad(format!("tensor {name} has {} positions, the trace has {t} tokens", shape[0])));
                    }
                    let values = if want == Dtype::U32 { Values::U32(u32v()) } else { Values::F32(f32v()) };
                    store.append(hook, &shape[1..], values)
                }
            };
            appended.map_err(|e| bad(format!("tensor {name}: {e}")))?;
        }
        store.pieces = pieces;
        for l in 0..store.num_layers() {
            let (experts, weights) = (HookPoint::layer(l, Quantity::RouterExperts), HookPoint::layer(l, Quantity::RouterWeights));
            if let (Some(e), Some(w)) = (store.width(&experts), store.width(&weights)) {
                if e != w {
                    return Err(bad(format!("{experts} [{t}, {e}] and {weights} [{t}, {w}] disagree")));
                }
            }
            if let (Some(n), Some(ids)) = (store.width(&HookPoint::layer(l, Quantity::RouterLogits)), store.u32(&experts)) {
                if let Some(&e) = ids.iter().find(|&&e| e as usize >= n) {
                    return Err(bad(format!("{experts} names expert {e} of {n}")));
                }
            }
        }
        Ok(Trace { meta, store })
    }
}

/// Rank of a `[T, …]` quantity's tensor in a file (from the hook table's shape).
fn quantity_rank(hook: &HookPoint) -> usize {
    match hook {
        HookPoint::Layer { quantity, .. } => quantity.info().shape.split(',').count(),
        HookPoint::Logits => 2,
        _ => 1,
    }
}

/// The hook point a `routelab-trace/1` tensor name stands for.
fn from_v1_name(name: &str) -> Option<HookPoint> {
    match name {
        "tokens" => return Some(HookPoint::Tokens),
        "logits" => return Some(HookPoint::Logits),
        _ => {}
    }
    QUANTITIES.iter().find_map(|q| {
        let (prefix, suffix) = q.v1_name.split_once("{l}")?;
        let layer = name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()?;
        Some(HookPoint::layer(layer, q.quantity))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `routelab-trace/2` file of two tokens and the f32 `[2, 1]` tensors `names`.
    fn trace_bytes(names: &[&str]) -> Vec<u8> {
        let (tokens, row) = ([1u32, 2].map(u32::to_le_bytes).concat(), [0.5f32, 1.5].map(f32::to_le_bytes).concat());
        let mut views = vec![("tokens".to_string(), TensorView::new(Dtype::U32, vec![2], &tokens).unwrap())];
        views.extend(names.iter().map(|n| (n.to_string(), TensorView::new(Dtype::F32, vec![2, 1], &row).unwrap())));
        let metadata: HashMap<String, String> = [
            ("format", FORMAT),
            ("model", "m"),
            ("architecture", "llama"),
            ("config", "{}"),
            ("prompt", "p"),
            ("generated_from", "1"),
            ("interventions", "[]"),
            ("capture", r#"{"hooks": []}"#),
            ("routelab_version", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        safetensors::tensor::serialize(views, Some(metadata)).unwrap()
    }

    #[test]
    fn a_layer_past_any_model_is_an_error_not_a_loop_to_it() {
        // The reader checked every layer up to the highest one named, 10^11 of them here, and a
        // layer of usize::MAX overflowed the layer count.
        for layer in ["99999999999", &usize::MAX.to_string()] {
            let name = format!("layers.{layer}.hidden");
            let e = Trace::from_bytes(&trace_bytes(&[&name]), Path::new("t.safetensors")).unwrap_err().to_string();
            assert!(e.contains("t.safetensors") && e.contains(&name) && e.contains("4096"), "{e}");
        }
        let trace = Trace::from_bytes(&trace_bytes(&["layers.4095.hidden"]), Path::new("t.safetensors")).unwrap();
        assert_eq!(trace.num_layers(), 4096);
    }
}
