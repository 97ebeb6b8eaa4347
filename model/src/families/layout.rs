//! Where a family keeps its tensors: the checkpoint names, as published on the Hugging Face hub.
//!
//! The decoder asks for weights by role ("layer 3's query projection"); a [`TensorLayout`] turns
//! the role into the checkpoint's name. Fused checkpoint tensors (Phi-3's `qkv_proj`, DBRX's
//! stacked experts) are described here too; the loader splits or keeps them as the decoder needs.

/// Names of one MLP's projections, relative to its prefix.
#[derive(Clone, Copy, Debug)]
pub enum MlpNames {
    /// Separate gate, up and down projections (`gate_proj`/`up_proj`/`down_proj`, Mixtral's
    /// `w1`/`w3`/`w2`).
    Separate { gate: &'static str, up: &'static str, down: &'static str },
    /// Gate and up fused into one matrix, gate rows first (Phi-3 `gate_up_proj`).
    Fused { gate_up: &'static str, down: &'static str },
}

pub const LLAMA_MLP: MlpNames = MlpNames::Separate { gate: "gate_proj", up: "up_proj", down: "down_proj" };
pub const MIXTRAL_EXPERT: MlpNames = MlpNames::Separate { gate: "w1", up: "w3", down: "w2" };

/// Names of the attention projections, relative to the layer prefix.
#[derive(Clone, Copy, Debug)]
pub enum AttnNames {
    Separate {
        prefix: &'static str,
        q: &'static str,
        k: &'static str,
        v: &'static str,
        o: &'static str,
        q_norm: &'static str,
        k_norm: &'static str,
    },
    /// q, k, v rows stacked in one matrix (Phi-3 `qkv_proj`, DBRX `Wqkv`).
    Fused { prefix: &'static str, qkv: &'static str, o: &'static str },
    /// DeepSeek MLA: q_proj | q_a_proj+q_a_layernorm+q_b_proj, kv_a_proj_with_mqa,
    /// kv_a_layernorm, kv_b_proj, o_proj.
    Mla { prefix: &'static str },
}

pub const LLAMA_ATTN: AttnNames =
    AttnNames::Separate { prefix: "self_attn", q: "q_proj", k: "k_proj", v: "v_proj", o: "o_proj", q_norm: "q_norm", k_norm: "k_norm" };

/// How routed experts are stored.
#[derive(Clone, Copy, Debug)]
pub enum ExpertNames {
    /// One MLP per expert under `{experts}.{e}.` (Mixtral, Qwen-MoE, OLMoE, DeepSeek, Arctic).
    /// Transformers ≥ 5 can also save them fused as `{experts}.gate_up_proj` [E, 2I, D] and
    /// `{experts}.down_proj` [E, D, I]; the loader accepts either.
    PerExpert { experts: &'static str, mlp: MlpNames },
    /// DBRX: `experts.mlp.w1`, `v1`, `w2`, each [E·I, D]; w1 = gate, v1 = up, w2 = down
    /// transposed (used as `x @ w2`).
    DbrxStacked { prefix: &'static str },
}

#[derive(Clone, Copy, Debug)]
pub struct MoeNames {
    /// Prefix of the MoE block within the layer (`block_sparse_moe`, `mlp`, `ffn`).
    pub block: &'static str,
    /// Router weight [E, D], relative to the block.
    pub router: &'static str,
    /// DeepSeek-V3 router correction bias [E], relative to the block.
    pub correction_bias: Option<&'static str>,
    pub experts: ExpertNames,
    /// Shared expert MLP prefix, relative to the block, and its names.
    pub shared: Option<(&'static str, MlpNames)>,
    /// Qwen2-MoE's shared expert gate [1, D], relative to the block.
    pub shared_gate: Option<&'static str>,
}

/// Arctic's parallel dense residual MLP, relative to the layer.
#[derive(Clone, Copy, Debug)]
pub struct DenseResidualNames {
    pub norm: &'static str,
    pub mlp: &'static str,
    pub names: MlpNames,
}

/// A family's complete tensor naming.
#[derive(Clone, Copy, Debug)]
pub struct TensorLayout {
    pub embed: &'static str,
    /// Final norm prefix (`.weight`/`.bias` appended).
    pub final_norm: &'static str,
    /// Output projection prefix (`.weight`/`.bias` appended).
    pub lm_head: &'static str,
    /// Decoder layer prefix, `{}` replaced by the layer index.
    pub layer: &'static str,
    pub attn_norm: &'static str,
    pub ffn_norm: &'static str,
    pub attn: AttnNames,
    /// The dense MLP of dense layers, prefix and names.
    pub mlp: (&'static str, MlpNames),
    pub moe: Option<MoeNames>,
    pub dense_residual: Option<DenseResidualNames>,
}

impl TensorLayout {
    /// The Llama layout most families share.
    pub const LLAMA: TensorLayout = TensorLayout {
        embed: "model.embed_tokens.weight",
        final_norm: "model.norm",
        lm_head: "lm_head",
        layer: "model.layers.{}",
        attn_norm: "input_layernorm",
        ffn_norm: "post_attention_layernorm",
        attn: LLAMA_ATTN,
        mlp: ("mlp", LLAMA_MLP),
        moe: None,
        dense_residual: None,
    };

    pub fn layer_prefix(&self, layer: usize) -> String {
        self.layer.replace("{}", &layer.to_string())
    }
}
