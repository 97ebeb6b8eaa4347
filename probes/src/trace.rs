//! Trace files, format `routelab-trace/1`: one safetensors file per run, readable with
//! `safetensors.numpy.load_file` in Python.
//!
//! T = positions (prompt then generated), E = experts, K = experts per token, H = heads,
//! D = hidden size, V = vocabulary. Layer indices are decoder-layer indices; a dense layer of
//! an MoE model simply has no `router.*`.
//!
//! | tensor | dtype, shape | meaning |
//! |---|---|---|
//! | `tokens` | U32 [T] | token ids |
//! | `logits` | F32 [T, V] | optional: output logits |
//! | `router.{l}.logits` | F32 [T, E] | raw router outputs, before softmax/sigmoid and before interventions |
//! | `router.{l}.experts` | U32 [T, K] | selected experts, strongest first |
//! | `router.{l}.weights` | F32 [T, K] | combine weights as applied (0 for a dropped expert) |
//! | `attn.{l}.entropy` | F32 [T, H] | entropy (nats) of each head's attention at each query |
//! | `attn.{l}.argmax` | U32 [T, H] | most-attended key position |
//! | `attn.{l}.sink` | F32 [T, H] | attention on key 0, the attention sink (with the head statistics) |
//! | `attn.{l}.span` | F32 [T, H] | optional: attention on the key span in `capture.attention_span` |
//! | `attn.{l}.probs` | F32 [H, T, T] | optional: full attention probabilities (zero above the diagonal) |
//! | `hidden.{l}` | F32 [T, D] | optional: residual stream after layer l |
//! | `moe.{l}.routed_norm` | F32 [T] | L2 norm of the routed experts' contribution |
//! | `moe.{l}.shared_norm` | F32 [T] | L2 norm of the shared expert(s)' contribution (Qwen2-MoE, DeepSeek) |
//! | `moe.{l}.dense_norm` | F32 [T] | L2 norm of the parallel dense MLP's contribution (Arctic) |
//!
//! The `moe.*` norms and `attn.{l}.sink`/`.span` extend the table of shared/DESIGN.md (all are
//! optional: files without them still load); everything else is as designed.
//! `__metadata__`: `format`, `model`, `architecture`, `config` (JSON), `prompt`,
//! `generated_from` (first generated position), `interventions` (JSON), `capture` (JSON),
//! `sampling` (JSON), `routelab_version`, `token_text` (JSON list of each token's text, for
//! labels).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use routelab_model::capture::CaptureSpec;
use routelab_model::interventions::Interventions;
use routelab_model::session::RunRecord;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::{ProbeError, Result};

pub const FORMAT: &str = "routelab-trace/1";

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
    /// Each token's text (for labels); metadata `token_text`, a JSON list.
    pub pieces: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouterTrace {
    pub num_experts: usize,
    pub top_k: usize,
    /// [T × E]
    pub logits: Vec<f32>,
    /// [T × K]
    pub experts: Vec<u32>,
    /// [T × K]
    pub weights: Vec<f32>,
}

impl RouterTrace {
    pub fn experts_at(&self, t: usize) -> &[u32] {
        &self.experts[t * self.top_k..(t + 1) * self.top_k]
    }
    pub fn weights_at(&self, t: usize) -> &[f32] {
        &self.weights[t * self.top_k..(t + 1) * self.top_k]
    }
    pub fn logits_at(&self, t: usize) -> &[f32] {
        &self.logits[t * self.num_experts..(t + 1) * self.num_experts]
    }
}

/// One decoder layer's recordings, row-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerTrace {
    pub router: Option<RouterTrace>,
    pub heads: usize,
    /// [T × H]
    pub entropy: Option<Vec<f32>>,
    /// [T × H]
    pub argmax: Option<Vec<u32>>,
    /// [T × H]: attention on key 0.
    pub sink: Option<Vec<f32>>,
    /// [T × H]: attention on the captured span.
    pub span: Option<Vec<f32>>,
    /// [H × T × T]
    pub probs: Option<Vec<f32>>,
    /// [T × D]
    pub hidden: Option<Vec<f32>>,
    pub routed_norm: Option<Vec<f32>>,
    pub shared_norm: Option<Vec<f32>>,
    pub dense_norm: Option<Vec<f32>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub meta: TraceMeta,
    pub tokens: Vec<u32>,
    /// Vocabulary size and [T × V] logits.
    pub logits: Option<(usize, Vec<f32>)>,
    pub hidden_size: usize,
    pub layers: Vec<LayerTrace>,
}

/// Collects `Option<Vec<_>>` per position into one row-major vector, if every position has it.
fn stack<T: Clone>(rows: impl Iterator<Item = Option<Vec<T>>>) -> Option<Vec<T>> {
    let mut out = Vec::new();
    for r in rows {
        let r = r?;
        out.extend(r);
    }
    Some(out)
}

impl Trace {
    /// Builds a trace from a finished run.
    pub fn from_run(run: &RunRecord, model: &str, config: &routelab_model::config::ModelConfig, prompt: &str) -> Trace {
        let t = run.positions.len();
        let heads = config.attention.num_heads;
        let layers = (0..config.num_layers)
            .map(|l| {
                let at = |p: usize| &run.positions[p].layers[l];
                let router = if t > 0 && !at(0).experts.is_empty() {
                    let k = at(0).experts.len();
                    Some(RouterTrace {
                        num_experts: at(0).router_logits.len(),
                        top_k: k,
                        logits: (0..t).flat_map(|p| at(p).router_logits.clone()).collect(),
                        experts: (0..t).flat_map(|p| at(p).experts.clone()).collect(),
                        weights: (0..t).flat_map(|p| at(p).weights.clone()).collect(),
                    })
                } else {
                    None
                };
                let probs = run.probs.get(&l).map(|rows| {
                    let mut full = vec![0f32; heads * t * t];
                    for (q, row) in rows.iter().enumerate() {
                        let s = row.len() / heads;
                        for h in 0..heads {
                            full[h * t * t + q * t..h * t * t + q * t + s].copy_from_slice(&row[h * s..(h + 1) * s]);
                        }
                    }
                    full
                });
                LayerTrace {
                    router,
                    heads,
                    entropy: stack((0..t).map(|p| Some(at(p).head_entropy.clone()).filter(|v| !v.is_empty()))),
                    argmax: stack((0..t).map(|p| Some(at(p).head_argmax.clone()).filter(|v| !v.is_empty()))),
                    sink: stack((0..t).map(|p| Some(at(p).head_sink.clone()).filter(|v| !v.is_empty()))),
                    span: stack((0..t).map(|p| Some(at(p).head_span.clone()).filter(|v| !v.is_empty()))),
                    probs,
                    hidden: run.hidden.get(&l).map(|rows| rows.concat()),
                    routed_norm: stack((0..t).map(|p| at(p).routed_norm.map(|x| vec![x]))),
                    shared_norm: stack((0..t).map(|p| at(p).shared_norm.map(|x| vec![x]))),
                    dense_norm: stack((0..t).map(|p| at(p).dense_norm.map(|x| vec![x]))),
                }
            })
            .collect();
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
                pieces: run.positions.iter().map(|p| p.piece.clone()).collect(),
            },
            tokens: run.tokens.clone(),
            logits: if run.logits.is_empty() { None } else { Some((config.vocab_size, run.logits.concat())) },
            hidden_size: config.hidden_size,
            layers,
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Serialises to the safetensors bytes of the format.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let t = self.tokens.len();
        let mut bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let u32s = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        bufs.push(("tokens".into(), Dtype::U32, vec![t], u32s(&self.tokens)));
        if let Some((v, logits)) = &self.logits {
            bufs.push(("logits".into(), Dtype::F32, vec![t, *v], f32s(logits)));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            if let Some(r) = &layer.router {
                bufs.push((format!("router.{l}.logits"), Dtype::F32, vec![t, r.num_experts], f32s(&r.logits)));
                bufs.push((format!("router.{l}.experts"), Dtype::U32, vec![t, r.top_k], u32s(&r.experts)));
                bufs.push((format!("router.{l}.weights"), Dtype::F32, vec![t, r.top_k], f32s(&r.weights)));
            }
            let h = layer.heads;
            if let Some(e) = &layer.entropy {
                bufs.push((format!("attn.{l}.entropy"), Dtype::F32, vec![t, h], f32s(e)));
            }
            if let Some(a) = &layer.argmax {
                bufs.push((format!("attn.{l}.argmax"), Dtype::U32, vec![t, h], u32s(a)));
            }
            if let Some(x) = &layer.sink {
                bufs.push((format!("attn.{l}.sink"), Dtype::F32, vec![t, h], f32s(x)));
            }
            if let Some(x) = &layer.span {
                bufs.push((format!("attn.{l}.span"), Dtype::F32, vec![t, h], f32s(x)));
            }
            if let Some(p) = &layer.probs {
                bufs.push((format!("attn.{l}.probs"), Dtype::F32, vec![h, t, t], f32s(p)));
            }
            if let Some(x) = &layer.hidden {
                bufs.push((format!("hidden.{l}"), Dtype::F32, vec![t, self.hidden_size], f32s(x)));
            }
            for (name, v) in [("routed_norm", &layer.routed_norm), ("shared_norm", &layer.shared_norm), ("dense_norm", &layer.dense_norm)] {
                if let Some(v) = v {
                    bufs.push((format!("moe.{l}.{name}"), Dtype::F32, vec![t], f32s(v)));
                }
            }
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
            ("token_text", serde_json::to_string(&m.pieces).unwrap_or_default()),
        ]
        .into_iter()
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
        if format != FORMAT {
            return Err(bad(format!("format is {format:?}; this RouteLab reads {FORMAT:?}")));
        }
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
            pieces: md.get("token_text").and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default(),
        };
        let tensor = |name: &str, dtype: Dtype, rank: usize| -> Result<Option<(Vec<usize>, &[u8])>> {
            match st.tensor(name) {
                Ok(v) => {
                    if v.dtype() != dtype || v.shape().len() != rank {
                        return Err(bad(format!("tensor {name} is {:?} {:?}, expected {dtype:?} of rank {rank}", v.dtype(), v.shape())));
                    }
                    Ok(Some((v.shape().to_vec(), v.data())))
                }
                Err(_) => Ok(None),
            }
        };
        let f32v = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<f32>>();
        let u32v = |b: &[u8]| b.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<u32>>();
        let (tshape, tb) = tensor("tokens", Dtype::U32, 1)?.ok_or_else(|| bad("tensor `tokens` is missing".into()))?;
        let t = tshape[0];
        if !meta.pieces.is_empty() && meta.pieces.len() != t {
            return Err(bad(format!("token_text has {} entries for {t} tokens", meta.pieces.len())));
        }
        if meta.generated_from > t {
            return Err(bad(format!("generated_from {} is past the {t} tokens", meta.generated_from)));
        }
        let expect_rows = |name: &str, shape: &[usize]| -> Result<()> {
            if shape[0] != t {
                return Err(bad(format!("tensor {name} has {} positions, the trace has {t} tokens", shape[0])));
            }
            Ok(())
        };
        let logits = match tensor("logits", Dtype::F32, 2)? {
            Some((s, b)) => {
                expect_rows("logits", &s)?;
                Some((s[1], f32v(b)))
            }
            None => None,
        };
        // Layers: the highest index any per-layer tensor names.
        let mut num_layers = 0;
        for name in st.names() {
            let mut parts = name.split('.');
            if let (Some(_), Some(l)) = (parts.next(), parts.next()) {
                if let Ok(l) = l.parse::<usize>() {
                    num_layers = num_layers.max(l + 1);
                }
            }
        }
        let mut hidden_size = 0;
        let mut layers = Vec::with_capacity(num_layers);
        for l in 0..num_layers {
            let mut lt = LayerTrace::default();
            if let Some((s, b)) = tensor(&format!("router.{l}.logits"), Dtype::F32, 2)? {
                expect_rows("router logits", &s)?;
                let (es, eb) =
                    tensor(&format!("router.{l}.experts"), Dtype::U32, 2)?.ok_or_else(|| bad(format!("router.{l}.experts is missing")))?;
                let (ws, wb) =
                    tensor(&format!("router.{l}.weights"), Dtype::F32, 2)?.ok_or_else(|| bad(format!("router.{l}.weights is missing")))?;
                if es != ws || es[0] != t {
                    return Err(bad(format!("router.{l}.experts {es:?} and weights {ws:?} disagree")));
                }
                let experts = u32v(eb);
                if let Some(&e) = experts.iter().find(|&&e| e as usize >= s[1]) {
                    return Err(bad(format!("router.{l}.experts names expert {e} of {}", s[1])));
                }
                lt.router = Some(RouterTrace { num_experts: s[1], top_k: es[1], logits: f32v(b), experts, weights: f32v(wb) });
            }
            if let Some((s, b)) = tensor(&format!("attn.{l}.entropy"), Dtype::F32, 2)? {
                expect_rows("attention entropy", &s)?;
                lt.heads = s[1];
                lt.entropy = Some(f32v(b));
            }
            if let Some((s, b)) = tensor(&format!("attn.{l}.argmax"), Dtype::U32, 2)? {
                expect_rows("attention argmax", &s)?;
                lt.heads = s[1];
                lt.argmax = Some(u32v(b));
            }
            for (name, slot) in [("sink", &mut lt.sink), ("span", &mut lt.span)] {
                if let Some((s, b)) = tensor(&format!("attn.{l}.{name}"), Dtype::F32, 2)? {
                    expect_rows(name, &s)?;
                    lt.heads = s[1];
                    *slot = Some(f32v(b));
                }
            }
            if let Some((s, b)) = tensor(&format!("attn.{l}.probs"), Dtype::F32, 3)? {
                if s[1] != t || s[2] != t {
                    return Err(bad(format!("attn.{l}.probs has shape {s:?}, expected [H, {t}, {t}]")));
                }
                lt.heads = s[0];
                lt.probs = Some(f32v(b));
            }
            if let Some((s, b)) = tensor(&format!("hidden.{l}"), Dtype::F32, 2)? {
                expect_rows("hidden", &s)?;
                hidden_size = s[1];
                lt.hidden = Some(f32v(b));
            }
            for (name, slot) in
                [("routed_norm", &mut lt.routed_norm), ("shared_norm", &mut lt.shared_norm), ("dense_norm", &mut lt.dense_norm)]
            {
                if let Some((s, b)) = tensor(&format!("moe.{l}.{name}"), Dtype::F32, 1)? {
                    expect_rows(name, &s)?;
                    *slot = Some(f32v(b));
                }
            }
            layers.push(lt);
        }
        if hidden_size == 0 {
            hidden_size = meta.config.get("hidden_size").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        }
        Ok(Trace { meta, tokens: u32v(tb), logits, hidden_size, layers })
    }

    /// Number of positions where each (layer, expert) was among the selected.
    pub fn expert_counts(&self) -> BTreeMap<usize, Vec<usize>> {
        self.layers
            .iter()
            .enumerate()
            .filter_map(|(l, lt)| {
                let r = lt.router.as_ref()?;
                let mut counts = vec![0usize; r.num_experts];
                for &e in &r.experts {
                    counts[e as usize] += 1;
                }
                Some((l, counts))
            })
            .collect()
    }
}
