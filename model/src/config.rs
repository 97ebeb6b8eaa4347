//! The normalised model configuration: what the generic decoder needs to know, whatever the
//! family. Each family adapter in [`crate::families`] maps its config.json onto this.

use routelab_kernels::routing::RoutingParams;
use serde::Serialize;

use crate::families::Family;

/// Everything the decoder needs, independent of the checkpoint's naming.
#[derive(Clone, Debug, Serialize)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    /// The context window: longest sequence the model is meant to see.
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub lm_head_bias: bool,
    pub norm: NormConfig,
    pub activation: Activation,
    pub attention: AttentionConfig,
    pub rope: RopeConfig,
    /// One entry per decoder layer.
    pub layers: Vec<LayerConfig>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The config.json the model was built from, kept verbatim for trace metadata.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct NormConfig {
    pub kind: NormKind,
    pub eps: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum NormKind {
    Rms,
    /// LayerNorm; `bias` false for DBRX's bias-free LayerNorm.
    Layer {
        bias: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Activation {
    Silu,
    GeluTanh,
    Gelu,
    Relu,
}

impl Activation {
    pub fn from_hf(name: &str) -> Option<Self> {
        Some(match name {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct AttentionConfig {
    pub num_heads: usize,
    /// Key/value heads (GQA). Equal to `num_heads` for MLA, whose keys are per head.
    pub num_kv_heads: usize,
    pub kind: AttentionKind,
    /// Multiplies q·k before the softmax.
    pub softmax_scale: f64,
}

#[derive(Clone, Debug, Serialize)]
pub enum AttentionKind {
    Standard(StandardAttention),
    /// DeepSeek's multi-head latent attention.
    Mla(MlaAttention),
}

#[derive(Clone, Debug, Serialize)]
pub struct StandardAttention {
    pub head_dim: usize,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub qk_norm: QkNorm,
    /// Clamp q, k, v to ±clip after projection (DBRX, OLMoE).
    pub clip_qkv: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum QkNorm {
    None,
    /// RMSNorm over each head's vector (Qwen3).
    PerHead,
    /// RMSNorm over the whole q (and k) projection (OLMoE).
    Full,
}

#[derive(Clone, Debug, Serialize)]
pub struct MlaAttention {
    /// `None`: q is a plain projection (DeepSeek-V2-Lite); otherwise a LoRA with a norm between.
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    /// Bias on q_a, kv_a and o projections (`attention_bias`).
    pub bias: bool,
    /// Rotary pairs are interleaved (x0,x1),(x2,x3)… in the checkpoint's weights; the loader
    /// permutes those rows so the standard half-split rotation applies.
    pub rope_interleaved: bool,
}

impl AttentionConfig {
    /// Dimension of each head's query and key vectors.
    pub fn qk_head_dim(&self) -> usize {
        match &self.kind {
            AttentionKind::Standard(s) => s.head_dim,
            AttentionKind::Mla(m) => m.qk_nope_head_dim + m.qk_rope_head_dim,
        }
    }
    /// Dimension of each head's value vector (= its slice of o_proj's input).
    pub fn v_head_dim(&self) -> usize {
        match &self.kind {
            AttentionKind::Standard(s) => s.head_dim,
            AttentionKind::Mla(m) => m.v_head_dim,
        }
    }
}

/// Rotary position embedding: which dimensions rotate and at which frequencies.
#[derive(Clone, Debug, Serialize)]
pub struct RopeConfig {
    pub theta: f64,
    /// Rotated dimensions per head (the first `rotary_dim` of q/k; for MLA the rope part).
    pub rotary_dim: usize,
    pub scaling: RopeScaling,
    /// For dynamic NTK scaling.
    pub max_position_embeddings: usize,
}

#[derive(Clone, Debug, Serialize)]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    /// Dynamic NTK: the base grows once positions pass `max_position_embeddings`.
    Dynamic {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    Yarn {
        factor: f64,
        original_max_position_embeddings: usize,
        beta_fast: f64,
        beta_slow: f64,
        /// Multiplies cos/sin.
        attention_factor: f64,
        truncate: bool,
    },
    /// Phi-3 / Phi-3.5-MoE: short factors up to `original_max_position_embeddings`, long
    /// factors beyond (chosen per forward call from its last position, as transformers does).
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        original_max_position_embeddings: usize,
        short_attention_factor: f64,
        long_attention_factor: f64,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerConfig {
    /// Keys further back than this many positions (counting the query itself) are masked.
    pub sliding_window: Option<usize>,
    pub ffn: FfnConfig,
}

#[derive(Clone, Debug, Serialize)]
pub enum FfnConfig {
    Dense(MlpConfig),
    Moe(MoeConfig),
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MlpConfig {
    pub intermediate_size: usize,
    pub bias: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct MoeConfig {
    pub routing: RoutingParams,
    pub expert_intermediate_size: usize,
    /// DeepSeek-V3's `e_score_correction_bias`.
    pub correction_bias: bool,
    pub shared: Option<SharedExpertConfig>,
    /// Snowflake Arctic: a dense MLP in parallel with the MoE (see [`crate::decoder`]).
    pub dense_residual: Option<MlpConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SharedExpertConfig {
    /// Total intermediate size (DeepSeek fuses its `n_shared_experts` into one MLP).
    pub intermediate_size: usize,
    /// Qwen2-MoE scales the shared expert by `sigmoid(shared_expert_gate(x))`.
    pub gated: bool,
    /// How many experts the shared MLP stands for (informational).
    pub count: usize,
}

impl ModelConfig {
    pub fn moe(&self, layer: usize) -> Option<&MoeConfig> {
        match &self.layers.get(layer)?.ffn {
            FfnConfig::Moe(m) => Some(m),
            FfnConfig::Dense(_) => None,
        }
    }

    pub fn is_moe(&self) -> bool {
        self.layers.iter().any(|l| matches!(l.ffn, FfnConfig::Moe(_)))
    }

    /// Largest number of routed experts in any layer (0 for dense models).
    pub fn max_experts(&self) -> usize {
        self.moe_layers().map(|m| m.routing.num_experts).max().unwrap_or(0)
    }

    /// The MoE layers' configurations, in layer order.
    pub fn moe_layers(&self) -> impl Iterator<Item = &MoeConfig> {
        self.layers.iter().filter_map(|l| match &l.ffn {
            FfnConfig::Moe(m) => Some(m),
            FfnConfig::Dense(_) => None,
        })
    }

    /// A one-line description: family, layers, heads, experts.
    pub fn summary(&self) -> String {
        let a = &self.attention;
        let mut s = format!(
            "{} · {} layers · d={} · {} heads ({} kv) · vocab {}",
            self.family.model_type(),
            self.num_layers,
            self.hidden_size,
            a.num_heads,
            a.num_kv_heads,
            self.vocab_size
        );
        let moe: Vec<&MoeConfig> = self.moe_layers().collect();
        if let Some(m) = moe.first() {
            s += &format!(" · {} MoE layers, top-{} of {} experts", moe.len(), m.routing.top_k, m.routing.num_experts);
            if let Some(sh) = m.shared {
                s += &format!(" + {} shared", sh.count);
            }
            if m.dense_residual.is_some() {
                s += " + dense residual MLP";
            }
        }
        s
    }
}
