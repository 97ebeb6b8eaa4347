//! The one generic decoder every family runs on.
//!
//! ```text
//! x₀ = embed(tokens)
//! for each layer l:
//!     h = x + Attention(norm_attn(x))                       (capture: head stats, probs)
//!     x = h + FFN(norm_ffn(h))                               dense MLP or MoE (capture: routing)
//!       | (h + MLP_res(norm_res(h))) + MoE(norm_ffn(x))      Snowflake Arctic, parallel residual
//! logits = lm_head(norm_final(x))
//! ```
//!
//! Families differ only in their config (attention kind, norms, feed-forward kind) and tensor
//! names; see [`crate::families`].

use candle_core::{DType, Device, Tensor};

use crate::cache::KvCache;
use crate::capture::{CapturePlan, LayerCapture, Layers};
use crate::config::{FfnConfig, ModelConfig};
use crate::error::{ModelError, Result};
use crate::families::layout::TensorLayout;
use crate::hooks::Quantity;
use crate::interventions::{Interventions, LayerEdits};
use crate::layers::attend::MaskCache;
use crate::layers::attention::Attention;
use crate::layers::context::{LayerCtx, RotaryTables};
use crate::layers::embedding::Embedding;
use crate::layers::linear::Linear;
use crate::layers::mlp::Mlp;
use crate::layers::moe::{l2, Moe};
use crate::layers::norm::{Norm, NormParameters};
use crate::patch::{self, LayerPatch, Patches};
use crate::rope::Rope;
use crate::weights::Weights;

#[derive(Clone, Debug)]
enum FeedForward {
    Dense(Mlp),
    Moe(Box<Moe>),
}

#[derive(Clone, Debug)]
struct DecoderLayer {
    attn_norm: Norm,
    attn: Attention,
    ffn_norm: Norm,
    ffn: FeedForward,
    /// Arctic's parallel dense residual MLP and its norm.
    dense_residual: Option<(Norm, Mlp)>,
}

impl DecoderLayer {
    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut all = self.attn.linears_mut();
        match &mut self.ffn {
            FeedForward::Dense(m) => all.extend(m.linears_mut()),
            FeedForward::Moe(m) => all.extend(m.linears_mut()),
        }
        all.extend(self.dense_residual.iter_mut().flat_map(|(_, m)| m.linears_mut()));
        all
    }

    fn forward(&self, x: &Tensor, ctx: &mut LayerCtx) -> Result<Tensor> {
        let a = self.attn.forward(&self.attn_norm.forward(x)?, ctx)?;
        let a = patched(ctx, a, |p| &p.attn_out)?;
        capture_rows(ctx, Quantity::AttnOut, &a)?;
        let h = (x + a)?;
        let out = match &self.ffn {
            FeedForward::Dense(mlp) => {
                let m = patched(ctx, mlp.forward(&self.ffn_norm.forward(&h)?)?, |p| &p.mlp_out)?;
                capture_rows(ctx, Quantity::MlpOut, &m)?;
                (&h + m)?
            }
            FeedForward::Moe(moe) => {
                // Arctic's MoE reads the layer input, its dense residual MLP the attention output.
                let moe_in = if self.dense_residual.is_some() { x } else { &h };
                let routed = moe.forward(&self.ffn_norm.forward(moe_in)?, ctx)?;
                let routed = patched(ctx, routed, |p| &p.mlp_out)?;
                capture_rows(ctx, Quantity::MlpOut, &routed)?;
                let base = match &self.dense_residual {
                    Some((norm, mlp)) => {
                        let muted = ctx.edits.mute_dense_residual;
                        let r = if muted { patch::zeros_like_rows(&h)? } else { mlp.forward(&norm.forward(&h)?)? };
                        let r = patched(ctx, r, |p| &p.dense)?;
                        if ctx.plan().wants(Quantity::DenseNorm) {
                            ctx.capture.push(Quantity::DenseNorm, &l2(&r)?);
                        }
                        capture_rows(ctx, Quantity::DenseOut, &r)?;
                        (&h + r)?
                    }
                    None => h.clone(),
                };
                (base + routed)?
            }
        };
        let out = patched(ctx, out, |p| &p.hidden)?;
        capture_rows(ctx, Quantity::Hidden, &out)?;
        Ok(out)
    }
}

/// `x` with the rows this layer's patches give for one site replaced.
fn patched(ctx: &LayerCtx, x: Tensor, site: impl Fn(&LayerPatch) -> &Vec<patch::Row>) -> Result<Tensor> {
    match ctx.patch.map(site) {
        Some(rows) if !rows.is_empty() => patch::replace_rows(x, rows, ctx.start),
        _ => Ok(x),
    }
}

/// Records a `[T, D]` activation in f32 if the plan asks for it.
fn capture_rows(ctx: &mut LayerCtx, q: Quantity, x: &Tensor) -> Result<()> {
    if ctx.plan().wants(q) {
        ctx.capture.push(q, &x.to_dtype(DType::F32)?);
    }
    Ok(())
}

/// Options of one forward call besides the tokens.
pub struct ForwardOptions<'a> {
    pub capture: &'a CapturePlan,
    /// Per layer, from [`Interventions::for_layer`] (empty: no interventions).
    pub edits: &'a [LayerEdits],
    /// Also keep per-head attention outputs for these layers ([`LayerCapture::head_outputs`]).
    pub head_outputs: &'a Layers,
    /// Attention through the fused kernel's path on the CPU too ([`LayerCtx::fused_attention`]).
    pub fused_attention: bool,
    /// Routing taken from a recorded run in the layers it names.
    pub replay: Option<&'a crate::replay::RoutingReplay>,
    /// Activations copied in from another run.
    pub patches: Option<&'a Patches>,
}

impl<'a> ForwardOptions<'a> {
    /// Records what `capture` asks for, nothing else changed.
    pub fn new(capture: &'a CapturePlan) -> Self {
        ForwardOptions { capture, edits: &[], head_outputs: &Layers::None, fused_attention: false, replay: None, patches: None }
    }
}

pub struct ForwardOutput {
    /// `[T, V]` f32 when all logits were asked for, else `[1, V]` (last position).
    pub logits: Tensor,
    pub layers: Vec<LayerCapture>,
}

/// The loaded model.
pub struct Model {
    pub config: ModelConfig,
    embed: Embedding,
    layers: Vec<DecoderLayer>,
    final_norm: Norm,
    lm_head: Linear,
    rope: Rope,
    device: Device,
    dtype: DType,
    /// The activations' dtype ([`Weights::compute_dtype`]).
    compute: DType,
    parameters: usize,
    /// Bytes the weights take in memory (see [`Weights::resident_bytes`]).
    resident_bytes: usize,
}

impl Model {
    /// Layer `l`'s router selection bias (DeepSeek-V3), for recomputing its routing on the host.
    pub fn router_bias(&self, l: usize) -> Option<&[f32]> {
        match &self.layers.get(l)?.ffn {
            FeedForward::Moe(m) => m.correction_bias(),
            FeedForward::Dense(_) => None,
        }
    }

    /// Builds the model from its weights; `progress(done, total)` is called per layer.
    pub fn load(config: ModelConfig, w: &Weights, progress: &mut dyn FnMut(usize, usize) -> bool) -> Result<Model> {
        let layout = config.family.layout();
        let c = &config;
        let d = c.hidden_size;
        let head_name = format!("{}.weight", layout.lm_head);
        let tied = !w.contains(&head_name) && c.tie_word_embeddings;
        // A GGUF table kept in its blocks (untied: a tied one is also the LM head's matrix).
        let blocks = if tied { None } else { w.get_embedding_blocks(layout.embed, &[c.vocab_size, d])? };
        let rows = if blocks.is_none() { Some(w.get(layout.embed, &[c.vocab_size, d])?) } else { None };
        // On the CPU computing in f32, every projection runs on weights packed for
        // routelab_kernels::matmul, packed layer by layer so the rows and the panels of only
        // one layer coexist.
        let pack = w.device().is_cpu() && w.compute_dtype() == DType::F32;
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            if !progress(l, c.num_layers) {
                return Err(ModelError::Cancelled);
            }
            let mut layer = load_layer(w, c, &layout, l)?;
            if pack {
                layer.linears_mut().into_iter().try_for_each(Linear::pack)?;
            }
            layers.push(layer);
        }
        let final_norm = Norm::load(w, layout.final_norm, d, c.norm)?;
        let mut lm_head = match (&rows, tied) {
            (Some(e), true) => Linear::new(e.clone(), None),
            _ => Linear::load(w, layout.lm_head, d, c.vocab_size, c.lm_head_bias)?,
        };
        if pack {
            lm_head.pack()?;
        }
        let embed = match (blocks, rows, lm_head.packed()) {
            (Some(q), ..) => Embedding::Blocks(std::sync::Arc::new(q)),
            (None, _, Some(p)) if tied => Embedding::Tied(p.clone()),
            (None, Some(e), _) => Embedding::Rows(e),
            (None, None, _) => unreachable!("the rows are loaded when the blocks are not"),
        };
        progress(c.num_layers, c.num_layers);
        let parameters = w.parameter_count();
        Ok(Model {
            parameters,
            resident_bytes: w.resident_bytes().0,
            rope: Rope::new(&c.rope),
            embed,
            layers,
            final_norm,
            lm_head,
            device: w.device().clone(),
            dtype: w.dtype(),
            compute: w.compute_dtype(),
            config,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.num_layers)
    }

    /// Resolves an intervention set into per-layer edits (after validating it).
    pub fn edits(&self, interventions: &Interventions) -> Result<Vec<LayerEdits>> {
        interventions.validate(&self.config)?;
        if interventions.has_pending_means() {
            return Err(ModelError::Invalid(
                "a `mean` head intervention has no reference mean yet (measure it with Session::fill_head_means)".into(),
            ));
        }
        if interventions.is_empty() {
            return Ok(vec![]);
        }
        Ok((0..self.config.num_layers).map(|l| interventions.for_layer(l, &self.config)).collect())
    }

    /// Runs `tokens` at the positions after what `cache` holds, appending to it.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, opts: &ForwardOptions) -> Result<ForwardOutput> {
        if self.device.is_cpu() {
            // On a thread of the pool the kernels split their work across, so this thread
            // takes its share of every split instead of sleeping until the pool has done it
            // (three thread switches per matrix-vector product otherwise, a sixth of decode
            // time on a small model). Not on a GPU: candle's CUDA streams are per thread.
            rayon::scope(|_| self.forward_here(tokens, cache, opts))
        } else {
            self.forward_here(tokens, cache, opts)
        }
    }

    fn forward_here(&self, tokens: &[u32], cache: &mut KvCache, opts: &ForwardOptions) -> Result<ForwardOutput> {
        let t = tokens.len();
        if t == 0 {
            return Err(ModelError::Invalid("forward called with no tokens".into()));
        }
        let vocab = self.config.vocab_size as u32;
        if let Some(&bad) = tokens.iter().find(|&&x| x >= vocab) {
            return Err(ModelError::Invalid(format!("token id {bad} is outside the vocabulary (size {vocab})")));
        }
        let start = cache.len();
        let mut x = self.embed.lookup(tokens, &self.device, self.compute)?;
        // In the model's dtype once per call, not per layer (four casts per layer on a GPU).
        let (cos, sin) = self.rope.cos_sin(start, t, &self.device)?;
        let rotary = RotaryTables { rope: &self.rope, cos: cos.to_dtype(x.dtype())?, sin: sin.to_dtype(x.dtype())? };
        let masks = MaskCache::new(start, t, &self.device);
        let no_edits = LayerEdits::default();
        let mut captures = Vec::with_capacity(self.layers.len());
        for ((l, layer), cache) in self.layers.iter().enumerate().zip(cache.layers.iter_mut()) {
            let mut ctx = LayerCtx {
                layer: l,
                edits: opts.edits.get(l).unwrap_or(&no_edits),
                cache,
                rotary: &rotary,
                masks: &masks,
                fused_attention: opts.fused_attention,
                keep_head_outputs: opts.head_outputs.contains(l),
                start,
                replay: opts.replay.and_then(|r| r.layers.get(&l)),
                patch: opts.patches.and_then(|p| p.layers.get(&l)),
                capture: LayerCapture::new(opts.capture.layer(l)),
            };
            x = layer.forward(&x, &mut ctx)?;
            captures.push(ctx.capture);
        }
        let last = if opts.capture.logits { x } else { x.narrow(0, t - 1, 1)? };
        let logits = self.lm_head.forward(&self.final_norm.forward(&last)?)?.to_dtype(DType::F32)?;
        Ok(ForwardOutput { logits, layers: captures })
    }

    /// The final norm and LM head applied to residual-stream rows `[N, D]`: logits `[N, V]`
    /// f32, as the model computes them from its last layer's output (the logit lens).
    pub fn unembed(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_device(&self.device)?.to_dtype(self.compute)?;
        Ok(self.lm_head.forward(&self.final_norm.forward(&x)?)?.to_dtype(DType::F32)?)
    }

    /// `W_U x` for rows `[N, D]` already normed: logits `[N, V]` f32 without the LM head's bias
    /// (what a direction in the residual stream promotes).
    pub fn project_to_vocab(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_device(&self.device)?.to_dtype(self.compute)?;
        let y = self.lm_head.forward(&x)?;
        let y = match &self.lm_head.bias {
            Some(b) => y.broadcast_sub(b)?,
            None => y,
        };
        Ok(y.to_dtype(DType::F32)?)
    }

    /// The final norm's parameters.
    pub fn final_norm(&self) -> Result<NormParameters> {
        self.final_norm.parameters()
    }

    /// The LM head's rows for `tokens`, `[n, D]` f32, and their biases (0 without a bias).
    pub fn unembedding(&self, tokens: &[u32]) -> Result<(Tensor, Vec<f32>)> {
        let rows = self.lm_head.gather_rows(tokens)?;
        let bias = match &self.lm_head.bias {
            Some(b) => {
                let b: Vec<f32> = b.to_dtype(DType::F32)?.to_vec1()?;
                tokens.iter().map(|&t| b.get(t as usize).copied().unwrap_or(0.0)).collect()
            }
            None => vec![0.0; tokens.len()],
        };
        Ok((rows, bias))
    }

    /// The token embeddings of `tokens`, `[T, D]` f32: the residual stream entering layer 0.
    pub fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        Ok(self.embed.lookup(tokens, &self.device, self.compute)?.to_dtype(DType::F32)?)
    }

    /// Layer `l`'s attention output projection, `[D, H·dv]` f32, and bias.
    pub fn attn_output_projection(&self, l: usize) -> Result<(Tensor, Option<Tensor>)> {
        let layer = self.layers.get(l).ok_or_else(|| ModelError::Invalid(format!("layer {l} of {}", self.layers.len())))?;
        layer.attn.output_projection()
    }

    /// Number of parameters in the checkpoint (tied embeddings counted once).
    pub fn parameter_count(&self) -> usize {
        self.parameters
    }

    /// Bytes of weights one decoded token reads: every projection, the selected share of the
    /// experts, the LM head; not the embedding table (one row of it) nor norms. Divided into
    /// the memory bandwidth, the most tokens per second a bandwidth-bound decode can reach.
    pub fn active_weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let ffn = match &l.ffn {
                    FeedForward::Dense(m) => m.bytes(),
                    FeedForward::Moe(m) => m.active_bytes(),
                };
                l.attn.bytes() + ffn + l.dense_residual.as_ref().map_or(0, |(_, m)| m.bytes())
            })
            .sum();
        layers + self.lm_head.bytes()
    }

    /// Bytes of weight memory on the device (at the run dtype).
    pub fn weight_bytes(&self) -> usize {
        self.resident_bytes
    }
}

fn load_layer(w: &Weights, c: &ModelConfig, layout: &TensorLayout, l: usize) -> Result<DecoderLayer> {
    let lp = layout.layer_prefix(l);
    let d = c.hidden_size;
    let attn_norm = Norm::load(w, &format!("{lp}.{}", layout.attn_norm), d, c.norm)?;
    let ffn_norm = Norm::load(w, &format!("{lp}.{}", layout.ffn_norm), d, c.norm)?;
    let attn = Attention::load(w, c, layout, l)?;
    let (ffn, dense_residual) = match &c.layers[l].ffn {
        FfnConfig::Dense(m) => {
            let (prefix, names) = layout.mlp;
            (FeedForward::Dense(Mlp::load(w, &format!("{lp}.{prefix}"), names, d, m.intermediate_size, m.bias, c.activation)?), None)
        }
        FfnConfig::Moe(m) => {
            let moe = Moe::load(w, c, layout, l, m)?;
            let dense = match (&m.dense_residual, layout.dense_residual) {
                (Some(mc), Some(names)) => Some((
                    Norm::load(w, &format!("{lp}.{}", names.norm), d, c.norm)?,
                    Mlp::load(w, &format!("{lp}.{}", names.mlp), names.names, d, mc.intermediate_size, mc.bias, c.activation)?,
                )),
                _ => None,
            };
            (FeedForward::Moe(Box::new(moe)), dense)
        }
    };
    Ok(DecoderLayer { attn_norm, attn, ffn_norm, ffn, dense_residual })
}
