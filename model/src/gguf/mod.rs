//! GGUF files (llama.cpp's format): llama (with Mixtral's stacked experts), qwen2, qwen3,
//! qwen2moe, qwen3moe, olmoe, phi3, phimoe, deepseek2, dbrx and arctic, as llama.cpp's
//! converter writes them. Routing follows the family as transformers runs it where llama.cpp hard-codes
//! something else (PhiMoE's sparsemixer, which llama.cpp replaces by softmax top-k; DeepSeek-V2's
//! group scores, the top expert of a group, where llama.cpp sums the top two).
//!
//! A GGUF file carries config, tokenizer and weights in one. RouteLab turns it into the same
//! three things a Hugging Face directory gives, the way transformers' `gguf_file=` loader does:
//!
//! - a config.json equivalent from the `{arch}.*` metadata ([`config`]);
//! - weights under their Hugging Face names ([`names`]; each routed expert a slice of its
//!   layer's stacked tensor), dequantised to float (candle's quantised types: Q4_0…Q8_0,
//!   K-quants, F16, F32), with llama.cpp's q/k row permutation undone where the converter
//!   applied it (the llama architecture): llama.cpp stores each rotary pair in adjacent rows,
//!   transformers' `rotate_half` wants the two halves apart, so HF row `h·hd + j·hd/2 + i` is
//!   GGUF row `h·hd + 2i + j`;
//! - a tokenizer.json equivalent built like `GGUFLlamaConverter` for byte-level BPE vocabularies
//!   (`tokenizer.ggml.model = "gpt2"`), and the chat template from `tokenizer.chat_template`.
//!
//! Known difference kept for parity with transformers: `tokenizer.ggml.pre` is not consulted
//! (transformers ignores it too), so e.g. SmolLM2's digit pre-splitting is not applied; the two
//! only differ on whitespace runs directly before a digit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::gguf_file::TensorInfo;
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use routelab_kernels::blocks::{self, BlockMatrix, BlockType, Bytes};

use crate::error::{ModelError, Result};
use crate::hooks::MAX_EXPERTS;
use crate::layers::blocks::{kernel_type, Blocks};

mod config;
mod meta;
mod names;
mod shards;
mod tokenizer;

use meta::Meta;
use names::{Merge, Source};
use shards::Shards;
use tokenizer::byte_level_bpe;

/// What a GGUF file yields besides its weights.
pub struct GgufModel {
    pub weights: GgufWeights,
    /// A config.json equivalent.
    pub config: serde_json::Value,
    /// A tokenizer.json equivalent, when the vocabulary type is supported.
    pub tokenizer: Option<serde_json::Value>,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub add_bos_token: bool,
}

/// Weights inside a GGUF file, addressed by Hugging Face names.
pub struct GgufWeights {
    path: PathBuf,
    shards: Shards,
    /// HF name → where it lives in the file.
    names: HashMap<String, Source>,
    /// `(heads, kv heads)` when llama.cpp permuted the q/k rows of this architecture.
    permute: Option<(usize, usize)>,
}

/// Opens and parses a GGUF file.
pub fn open(path: &Path) -> Result<GgufModel> {
    let shards = Shards::open(path)?;
    let meta = Meta { path, md: shards.metadata() };
    let arch = meta.opt_str("general.architecture")?.unwrap_or("");
    let Some(family) = config::family(&meta, arch)? else {
        return Err(ModelError::weights(
            path,
            format!(
                "GGUF architecture {arch:?} is not supported (RouteLab reads {}; for other families use the Hugging Face safetensors checkpoint)",
                config::ARCHITECTURES.join(", ")
            ),
        ));
    };
    let k = |s: &str| format!("{arch}.{s}");
    // Every layer has tensors of its own, so a file holds at least as many tensors as layers:
    // a larger count is a corrupt header, and would be iterated over below.
    let tensors = shards.names().count();
    if let Some(layers) = meta.opt_u64(&k("block_count"))?.filter(|&n| n > tensors as u64) {
        return Err(meta::meta_err(path, &k("block_count"), &format!("is {layers} but the file holds only {tensors} tensors")));
    }
    // Each expert of a stacked tensor gets a name of its own, below.
    if let Some(experts) = meta.opt_u64(&k("expert_count"))?.filter(|&n| n > MAX_EXPERTS as u64) {
        return Err(meta::meta_err(
            path,
            &k("expert_count"),
            &format!("is {experts}; RouteLab reads models of up to {MAX_EXPERTS} experts"),
        ));
    }
    let num_heads = meta.u64(&k("attention.head_count"))? as usize;
    let num_kv_heads = meta.opt_u64(&k("attention.head_count_kv"))?.map(|x| x as usize).unwrap_or(num_heads);
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let vocab_size = match meta.opt_u64(&k("vocab_size"))? {
        Some(v) => v as usize,
        None => tokens.len(),
    };
    let vector = |name: &str| -> Result<Option<Vec<f32>>> {
        let Some(info) = shards.info(name) else { return Ok(None) };
        let q = shards.read(name, info)?;
        let values = q.dequantize(&Device::Cpu).and_then(|t| t.flatten_all()?.to_vec1::<f32>());
        Ok(Some(values.map_err(|e| ModelError::weights(path, format!("tensor {name:?}: {e}")))?))
    };
    let rope = config::RopeTensors {
        freqs: vector("rope_freqs.weight")?,
        short: vector("rope_factors_short.weight")?,
        long: vector("rope_factors_long.weight")?,
    };
    let config = config::config(&meta, arch, family, &|n| shards.contains(n), vocab_size, &rope)?;
    let experts = meta.opt_u64(&k("expert_count"))?.unwrap_or(0) as usize;
    let (names, unknown) = names::map_names(&family.layout(), shards.names(), experts);
    if !unknown.is_empty() {
        let shown: Vec<&str> = unknown.iter().take(5).map(String::as_str).collect();
        return Err(ModelError::weights(
            path,
            format!(
                "{} tensor(s) RouteLab does not know for GGUF architecture {arch:?} ({family:?}): {}{}",
                unknown.len(),
                shown.join(", "),
                if unknown.len() > shown.len() { ", …" } else { "" }
            ),
        ));
    }
    let bos = meta.opt_u64("tokenizer.ggml.bos_token_id")?;
    let eos = meta.opt_u64("tokenizer.ggml.eos_token_id")?;
    let token = |id: Option<u64>| id.and_then(|i| tokens.get(i as usize)).map(|s| s.to_string());
    let add_bos_token = meta.opt_bool("tokenizer.ggml.add_bos_token").unwrap_or(false);
    let tokenizer = match meta.opt_str("tokenizer.ggml.model")? {
        Some("gpt2") => Some(byte_level_bpe(&meta, &tokens, add_bos_token.then(|| token(bos)).flatten())?),
        _ => None,
    };
    let chat_template = meta.opt_str("tokenizer.chat_template")?.map(str::to_string);
    let (bos_token, eos_token) = (token(bos), token(eos));
    let permute = config::permutes_qk(arch).then_some((num_heads, num_kv_heads));
    Ok(GgufModel {
        weights: GgufWeights { path: path.to_path_buf(), shards, names, permute },
        config,
        tokenizer,
        chat_template,
        bos_token,
        eos_token,
        add_bos_token,
    })
}

impl GgufWeights {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, hf: &str) -> bool {
        self.names.contains_key(hf)
    }

    pub fn hf_names(&self) -> Vec<String> {
        self.names.keys().cloned().collect()
    }

    /// The tensor's info, narrowed to one expert's slice for a stacked expert tensor.
    fn info(&self, hf: &str) -> Option<(&Source, TensorInfo)> {
        let src = self.names.get(hf)?;
        let info = self.shards.info(&src.gguf)?;
        let copy = |shape: &[usize], offset| TensorInfo { ggml_dtype: info.ggml_dtype, shape: shape.to_vec().into(), offset };
        let Some(e) = src.expert else { return Some((src, copy(info.shape.dims(), info.offset))) };
        let dims = info.shape.dims();
        let (experts, inner) = dims.split_first()?;
        if e >= *experts {
            return None;
        }
        let elems: usize = inner.iter().product();
        let bytes = (elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()) as u64;
        Some((src, copy(inner, info.offset + e as u64 * bytes)))
    }

    /// [`GgufWeights::info`], or the error naming the missing tensor.
    fn found(&self, hf: &str) -> Result<(&Source, TensorInfo)> {
        self.info(hf).ok_or_else(|| self.missing(hf))
    }

    fn missing(&self, name: &str) -> ModelError {
        ModelError::MissingTensor { location: self.path.display().to_string(), name: name.to_string(), hint: None }
    }

    pub fn shape(&self, hf: &str) -> Option<Vec<usize>> {
        let (src, i) = self.info(hf)?;
        let d = i.shape.dims();
        if src.merge != Merge::None && d.len() == 3 {
            // [E, I, D] (or [E, D, I] transposed per expert) → [E·I, D].
            return Some(match src.merge {
                Merge::ExpertsTransposed => vec![d[0] * d[2], d[1]],
                _ => vec![d[0] * d[1], d[2]],
            });
        }
        match &src.v_b {
            // [H, kv_lora, nope] and [H, v, kv_lora] → [H·(nope + v), kv_lora], when they pair
            // up (as `stack_kv_b` requires): then its size is the sum of theirs, which the file
            // holds, where unpaired dimensions could multiply past any size.
            Some(v_b) => {
                let (k, v) = (i.shape.dims(), self.shards.info(v_b)?.shape.dims());
                (k.len() == 3 && v.len() == 3 && v[0] == k[0] && v[2] == k[1]).then(|| vec![k[0] * (k[2] + v[1]), k[1]])
            }
            None => Some(i.shape.dims().to_vec()),
        }
    }

    /// Whether [`GgufWeights::load_quantized`] keeps this tensor in its blocks: a projection
    /// (not the embedding table, whose rows are gathered) in [`fast_blocks`].
    pub fn keeps_blocks(&self, hf: &str) -> bool {
        self.info(hf).is_some_and(|(src, i)| {
            let d = i.shape.dims();
            src.gguf != "token_embd.weight"
                && src.v_b.is_none()
                && src.merge == Merge::None
                && d.len() == 2
                && kept_in_blocks(i.ggml_dtype, d[0], d[1])
        })
    }

    /// Whether a projection stays in its blocks on a GPU: any block-quantized type candle's
    /// CUDA kernels multiply (its quantized matmul dequantises a tile at a time on the device).
    pub fn keeps_blocks_on_gpu(&self, hf: &str) -> bool {
        self.info(hf).is_some_and(|(src, i)| {
            src.gguf != "token_embd.weight"
                && src.v_b.is_none()
                && src.merge == Merge::None
                && i.shape.dims().len() == 2
                && !matches!(i.ggml_dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 | GgmlDType::Q8_1 | GgmlDType::Q8K)
        })
    }

    /// [`GgufWeights::load_quantized`] for a GPU: the blocks (rows un-permuted where llama.cpp
    /// permuted them) copied to `device` as candle's quantized tensor.
    pub fn load_quantized_on(&self, hf: &str, device: &Device) -> Result<Option<Blocks>> {
        if !self.keeps_blocks_on_gpu(hf) {
            return Ok(None);
        }
        let Some((src, info)) = self.info(hf) else { return Ok(None) };
        let g = &src.gguf;
        let err = |e: String| ModelError::weights(&self.path, format!("tensor {g:?}: {e}"));
        let dims = info.shape.dims().to_vec();
        let (bytes, range) = self.shards.map(g, &info)?;
        let data = &(*bytes).as_ref()[range];
        let q = match self.rotary_heads(hf) {
            Some(heads) => {
                check_rotary_rows(dims[0], heads).map_err(err)?;
                qtensor_from_ggml(info.ggml_dtype, &unpermute_rotary_row_bytes(data, dims[0], heads), dims, device)
            }
            None => qtensor_from_ggml(info.ggml_dtype, data, dims, device),
        };
        Ok(Some(Blocks::Candle(Arc::new(q.map_err(|e| err(e.to_string()))?))))
    }

    /// Whether an untied token embedding table stays in its blocks: stored in a quantized type
    /// in a file that has its own LM head (`output.weight`; otherwise the table is the head's
    /// matrix too and loads as one).
    pub fn keeps_embedding_blocks(&self, hf: &str) -> bool {
        self.info(hf).is_some_and(|(src, i)| {
            src.gguf == "token_embd.weight"
                && self.shards.contains("output.weight")
                && !matches!(i.ggml_dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
        })
    }

    /// A tensor's blocks as stored, on the CPU: in place in the mapped file for the types
    /// RouteLab's kernels read, else copied into candle's tensor.
    pub fn load_blocks(&self, hf: &str) -> Result<Blocks> {
        let (src, info) = self.found(hf)?;
        match kernel_type(info.ggml_dtype) {
            Some(ty) => self.mapped(&src.gguf, &info, ty, None),
            None => Ok(Blocks::Candle(Arc::new(self.shards.read(&src.gguf, &info)?))),
        }
    }

    /// `info`'s blocks in the mapped file, or, with `heads`, a copy whose rows are un-permuted
    /// (whole rows of blocks move, the blocks are untouched).
    fn mapped(&self, g: &str, info: &TensorInfo, ty: BlockType, heads: Option<usize>) -> Result<Blocks> {
        let dims = info.shape.dims();
        let err = |e: String| ModelError::weights(&self.path, format!("tensor {g:?}: {e}"));
        if dims.len() != 2 {
            return Err(err(format!("{dims:?} is not a matrix")));
        }
        let (bytes, range) = self.shards.map(g, info)?;
        let (bytes, range): (Bytes, _) = match heads {
            None => (bytes, range),
            Some(heads) => {
                check_rotary_rows(dims[0], heads).map_err(err)?;
                let out = unpermute_rotary_row_bytes(&(*bytes).as_ref()[range], dims[0], heads);
                let len = out.len();
                (Arc::new(out), 0..len)
            }
        };
        Ok(Blocks::Mapped(BlockMatrix::new(ty, dims[0], dims[1], bytes, range).map_err(err)?))
    }

    /// The block type a tensor is stored in.
    pub fn stored_type(&self, hf: &str) -> Option<GgmlDType> {
        self.info(hf).map(|(_, i)| i.ggml_dtype)
    }

    /// Bytes a tensor takes in the file.
    pub fn stored_bytes(&self, hf: &str) -> Option<usize> {
        let size = |i: &TensorInfo| shards::tensor_bytes(i).unwrap_or(0);
        let (src, i) = self.info(hf)?;
        let v_b = src.v_b.as_ref().and_then(|v| self.shards.info(v)).map_or(0, size);
        Some(size(&i) + v_b)
    }

    /// Reads and dequantises a tensor to f32 on the CPU (one expert's slice of a stacked
    /// tensor reads only that slice), undoing llama.cpp's q/k permutation where it applied one.
    pub fn load(&self, hf: &str) -> Result<Tensor> {
        let (src, info) = self.found(hf)?;
        let g = &src.gguf;
        let err = |e: candle_core::Error| ModelError::weights(&self.path, format!("tensor {g:?}: {e}"));
        let q = self.shards.read(g, &info)?;
        let w = q.dequantize(&Device::Cpu).map_err(err)?;
        if let Some(v_b) = &src.v_b {
            return self.kv_b(&w, v_b);
        }
        let merged = |w: Tensor| -> candle_core::Result<Tensor> {
            let (e, a, b) = w.dims3()?;
            match src.merge {
                Merge::ExpertsTransposed => w.transpose(1, 2)?.contiguous()?.reshape((e * b, a)),
                _ => w.reshape((e * a, b)),
            }
        };
        if src.merge != Merge::None {
            return merged(w).map_err(err);
        }
        match self.rotary_heads(hf) {
            Some(heads) => unpermute_rotary_rows(&w, heads).map_err(err),
            None => Ok(w),
        }
    }

    /// DeepSeek's `kv_b_proj` `[H·(nope + v), kv_lora]` from llama.cpp's per-head halves: each
    /// head's `k_b` `[kv_lora, nope]` transposed, then its `v_b` `[v, kv_lora]`.
    fn kv_b(&self, k_b: &Tensor, v_b: &str) -> Result<Tensor> {
        let err = |e: candle_core::Error| ModelError::weights(&self.path, format!("tensor {v_b:?}: {e}"));
        let info = self.shards.info(v_b).ok_or_else(|| self.missing(v_b))?;
        let v = self.shards.read(v_b, info)?.dequantize(&Device::Cpu).map_err(err)?;
        stack_kv_b(k_b, &v).map_err(err)
    }

    /// The heads whose rotary pairs llama.cpp interleaved in this tensor's rows, if it did.
    fn rotary_heads(&self, hf: &str) -> Option<usize> {
        match self.permute {
            Some((h, _)) if hf.ends_with("q_proj.weight") => Some(h),
            Some((_, kv)) if hf.ends_with("k_proj.weight") => Some(kv),
            _ => None,
        }
    }

    /// The tensor in its GGUF blocks on the CPU when [`kept_in_blocks`] says so, rows
    /// un-permuted like [`GgufWeights::load`]'s; `None` for the rest, which load as tensors.
    pub fn load_quantized(&self, hf: &str) -> Result<Option<Blocks>> {
        if !self.keeps_blocks(hf) {
            return Ok(None);
        }
        let Some((src, info)) = self.info(hf) else { return Ok(None) };
        let g = &src.gguf;
        let heads = self.rotary_heads(hf);
        if let (Some(ty), true) = (kernel_type(info.ggml_dtype), blocks::vector_kernels()) {
            return self.mapped(g, &info, ty, heads).map(Some);
        }
        let err = |e: candle_core::Error| ModelError::weights(&self.path, format!("tensor {g:?}: {e}"));
        let q = self.shards.read(g, &info)?;
        let Some(heads) = heads else { return Ok(Some(Blocks::Candle(Arc::new(q)))) };
        let dims = q.shape().dims().to_vec();
        check_rotary_rows(dims[0], heads).map_err(|e| ModelError::weights(&self.path, format!("tensor {g:?}: {e}")))?;
        let out = unpermute_rotary_row_bytes(&q.data().map_err(err)?, dims[0], heads);
        Ok(Some(Blocks::Candle(Arc::new(qtensor_from_ggml(info.ggml_dtype, &out, dims, &Device::Cpu).map_err(err)?))))
    }
}

/// That `rows` split into `heads` heads of rotary pairs.
fn check_rotary_rows(rows: usize, heads: usize) -> std::result::Result<(), String> {
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(format!("{rows} rows cannot be split into {heads} heads of rotary pairs"));
    }
    Ok(())
}

/// `attn_k_b` `[H, kv_lora, nope]` and `attn_v_b` `[H, v, kv_lora]` → `kv_b_proj`.
fn stack_kv_b(k_b: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    let (h, lora, _) = k_b.dims3()?;
    let (hv, _, lv) = v.dims3()?;
    if hv != h || lv != lora {
        candle_core::bail!("attn_k_b {:?} and attn_v_b {:?} do not pair up", k_b.dims(), v.dims());
    }
    let both = Tensor::cat(&[&k_b.transpose(1, 2)?, v], 1)?;
    let rows = both.dim(0)? * both.dim(1)?;
    both.contiguous()?.reshape((rows, lora))
}

/// Whether a `[n, k]` weight stored in `dtype` blocks is kept in them: where RouteLab's block
/// kernels run (AVX-512 VNNI), Q4_K, Q6_K and Q8_0, read in place; elsewhere what
/// [`fast_blocks`] takes.
pub fn kept_in_blocks(dtype: GgmlDType, n: usize, k: usize) -> bool {
    match kernel_type(dtype) {
        Some(ty) if blocks::vector_kernels() => k > 0 && k.is_multiple_of(ty.block_values()),
        _ => fast_blocks(dtype, n, k),
    }
}

/// Whether candle's CPU matmul has a fast kernel for a `[n, k]` weight in `dtype` blocks on
/// this machine: its repacked x86 tiles, which take Q4_K and Q6_K, and Q8_0 with VNNI, for
/// `n` a multiple of 16 and `k` of 256. Elsewhere its generic path runs a prompt 8–40× slower
/// than the f32 product (Q4_0, Q4_1 measured on 2 cores; K-quants without tiles alike), so
/// those weights are dequantised.
pub fn fast_blocks(dtype: GgmlDType, n: usize, k: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let vnni = is_x86_feature_detected!("avx512vnni") || is_x86_feature_detected!("avxvnni");
        let tiles = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let kind = match dtype {
            GgmlDType::Q4K | GgmlDType::Q6K => tiles,
            GgmlDType::Q8_0 => tiles && vnni,
            _ => false,
        };
        kind && n.is_multiple_of(16) && k > 0 && k.is_multiple_of(256)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dtype, n, k);
        false
    }
}

/// [`unpermute_rotary_rows`] on rows of opaque bytes (quantized blocks): HF row
/// `h·hd + j·hd/2 + i` is GGUF row `h·hd + 2i + j`. `rows` must split into `heads` heads of
/// rotary pairs.
fn unpermute_rotary_row_bytes(data: &[u8], rows: usize, heads: usize) -> Vec<u8> {
    let (row_bytes, half) = (data.len() / rows, rows / heads / 2);
    let mut out = Vec::with_capacity(data.len());
    for r in 0..rows {
        let (h, within) = (r / (2 * half), r % (2 * half));
        let (j, i) = (within / half, within % half);
        let src = h * 2 * half + 2 * i + j;
        out.extend_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
    }
    out
}

/// Undoes llama.cpp's interleaving of rotary pairs in q/k projection rows:
/// `W.reshape(n_head, hd/2, 2, in).swapaxes(1, 2).reshape(W.shape)` (transformers'
/// `reverse_permute_weights`).
pub fn unpermute_rotary_rows(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    if heads == 0 || out % (2 * heads) != 0 {
        candle_core::bail!("{out} rows cannot be split into {heads} heads of rotary pairs");
    }
    w.reshape((heads, out / heads / 2, 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::{self, Content, Value};

    /// A copy of the fixture `name` (tests/fixtures/gguf) in `dir`, its metadata edited by `edit`.
    fn edited_fixture(dir: &Path, name: &str, edit: impl FnOnce(&mut HashMap<String, Value>)) -> PathBuf {
        edited_fixture_tensors(dir, name, edit, |_| {})
    }

    /// [`edited_fixture`] with its tensors edited too.
    fn edited_fixture_tensors(
        dir: &Path,
        name: &str,
        edit: impl FnOnce(&mut HashMap<String, Value>),
        edit_tensors: impl FnOnce(&mut Vec<(String, candle_core::quantized::QTensor)>),
    ) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf").join(name);
        let mut file = std::fs::File::open(src).unwrap();
        let mut content = Content::read(&mut file).unwrap();
        let mut tensors: Vec<(String, _)> =
            content.tensor_infos.keys().map(|n| (n.clone(), content.tensor(&mut file, n, &Device::Cpu).unwrap())).collect();
        edit(&mut content.metadata);
        edit_tensors(&mut tensors);
        let path = dir.join(name);
        let metadata: Vec<(&str, &Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensors: Vec<(&str, &candle_core::quantized::QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        gguf_file::write(&mut std::fs::File::create(&path).unwrap(), &metadata, &tensors).unwrap();
        path
    }

    fn open_error(path: &Path) -> String {
        match open(path) {
            Ok(_) => panic!("{} opened", path.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_alignment_of_zero_is_an_error_not_a_division_by_zero() {
        // candle computes the tensor data's offset modulo `general.alignment`, unchecked.
        let dir = tempfile::tempdir().unwrap();
        let path = edited_fixture(dir.path(), "llama.q8_0.gguf", |md| {
            md.insert("general.alignment".into(), Value::U32(0));
        });
        let e = open_error(&path);
        assert!(e.contains("llama.q8_0.gguf") && e.contains("`general.alignment` is 0"), "{e}");
        // Other alignments are read as before.
        let path = edited_fixture(dir.path(), "llama.q8_0.gguf", |md| {
            md.insert("general.alignment".into(), Value::U32(32));
        });
        assert!(open(&path).is_ok());
    }

    #[test]
    fn a_block_count_beyond_the_files_tensors_is_an_error_not_a_loop_over_it() {
        // Each layer's tensors were looked up, one layer at a time, for 2^40 layers.
        let dir = tempfile::tempdir().unwrap();
        let path = edited_fixture(dir.path(), "llama.q8_0.gguf", |md| {
            md.insert("llama.block_count".into(), Value::U64(1 << 40));
        });
        let e = open_error(&path);
        assert!(e.contains("`llama.block_count` is 1099511627776 but the file holds only 21 tensors"), "{e}");
    }

    #[test]
    fn halves_of_kv_b_that_do_not_pair_up_have_no_shape_not_an_overflowing_one() {
        // DeepSeek's kv_b_proj is [H·(nope + v), kv_lora] from attn_k_b and attn_v_b: an empty
        // attn_v_b of 2^58 rows made that shape's size overflow.
        let dir = tempfile::tempdir().unwrap();
        let path = edited_fixture_tensors(
            dir.path(),
            "deepseek_v2.q8_0.gguf",
            |_| {},
            |tensors| {
                let empty = Tensor::zeros((4, 1usize << 58, 0), candle_core::DType::F32, &Device::Cpu).unwrap();
                let v_b = tensors.iter_mut().find(|(n, _)| n == "blk.0.attn_v_b.weight").unwrap();
                v_b.1 = candle_core::quantized::QTensor::quantize(&empty, GgmlDType::F32).unwrap();
            },
        );
        let weights = crate::weights::Weights::from_gguf(open(&path).unwrap().weights, candle_core::DType::F32, &Device::Cpu);
        let kv_b = "model.layers.0.self_attn.kv_b_proj.weight";
        assert!(weights.shape(kv_b).is_none());
        assert!(weights.parameter_count() > 0);
        assert!(weights.shape("model.layers.1.self_attn.kv_b_proj.weight").is_some());
    }

    #[test]
    fn an_expert_count_past_any_model_is_an_error_not_a_name_per_expert() {
        // Each stacked expert tensor was given one name per declared expert: 2^40 of them.
        let dir = tempfile::tempdir().unwrap();
        let path = edited_fixture(dir.path(), "mixtral.q8_0.gguf", |md| {
            md.insert("llama.expert_count".into(), Value::U64(1 << 40));
        });
        let e = open_error(&path);
        assert!(e.contains("`llama.expert_count` is 1099511627776; RouteLab reads models of up to 4096 experts"), "{e}");
    }

    #[test]
    fn more_token_types_than_tokens_is_an_error_not_an_index_out_of_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let path = edited_fixture(dir.path(), "llama.q8_0.gguf", |md| {
            let Some(Value::Array(types)) = md.get_mut("tokenizer.ggml.token_type") else { panic!("the fixture has token types") };
            types.extend([Value::I32(3), Value::I32(3)]);
        });
        let e = open_error(&path);
        assert!(e.contains("`tokenizer.ggml.token_type` has 322 entries for 320 tokens"), "{e}");
    }

    #[test]
    fn unpermute_moves_rotary_pairs_into_halves() {
        // One head of dim 4, input dim 1: GGUF rows [a0, b0, a1, b1] (pairs adjacent) become
        // HF rows [a0, a1, b0, b1] (halves).
        let w = Tensor::new(&[[0f32], [10.0], [1.0], [11.0]], &Device::Cpu).unwrap();
        let hf = unpermute_rotary_rows(&w, 1).unwrap();
        assert_eq!(hf.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0.0, 1.0, 10.0, 11.0]);
    }

    #[test]
    fn block_rows_move_like_float_rows() {
        // 2 heads of dim 6, rows of 3 "bytes" each: the byte version moves whole rows exactly
        // as the float version does.
        let (rows, width, heads) = (12, 3, 2);
        let bytes: Vec<u8> = (0..(rows * width) as u8).collect();
        let floats = Tensor::from_vec(bytes.iter().map(|&b| b as f32).collect::<Vec<_>>(), (rows, width), &Device::Cpu).unwrap();
        let want: Vec<u8> = unpermute_rotary_rows(&floats, heads)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&f| f as u8)
            .collect();
        assert_eq!(unpermute_rotary_row_bytes(&bytes, rows, heads), want);
    }
}
