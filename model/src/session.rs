//! A loaded model with its tokenizer and chat template, and generation with capture.
//!
//! [`Session::run`] prefills the prompt, then samples and feeds back one token at a time. What
//! every position (prompt and generated) records is appended to the run's [`CaptureStore`],
//! copied to the host once per forward call.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, TensorId};
use routelab_kernels::capture_pack::pack_f32;
use serde::{Deserialize, Serialize};

use crate::capture::{CapturePlan, CaptureSpec, Layers, Part};
use crate::chat::{ChatTemplate, Message};
use crate::checkpoint::{self, Checkpoint};
use crate::config::ModelConfig;
use crate::decoder::{ForwardOptions, ForwardOutput, Model};
use crate::error::{ModelError, Result};
use crate::hooks::{HookPoint, Quantity};
use crate::interventions::{HeadMethod, Intervention, Interventions};
use crate::sampling::{Sampler, SamplingSettings};
use crate::source::{LoadProgress, ModelSource};
use crate::store::{CaptureStore, Values};
use crate::tokenizer::{read_tokenizer_config, TextStream, Tokenizer};

/// How to load: device, the dtype weight matrices are kept in, and the dtype activations are
/// computed in.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub device: Device,
    /// Projections, experts, embeddings and the LM head.
    pub dtype: DType,
    /// Activations, norm weights and biases. On the CPU this is f32 whatever `dtype` is: bf16
    /// matrices are widened as they are read (half the bytes of f32, the f32 reference's
    /// arithmetic).
    pub compute: DType,
    /// No dtype was asked for: weights stay as stored where RouteLab computes on them, i.e.
    /// projections a GGUF file stores block-quantized (Q8_0, K-quants, …) stay in their
    /// blocks on the CPU instead of being dequantised to `dtype`, and a bf16 safetensors
    /// checkpoint stays bf16 on the CPU.
    pub keep_quantized: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions::new(Device::Cpu, DType::F32)
    }
}

impl LoadOptions {
    /// The dtype RouteLab uses on `device` by default: bf16 on a GPU, the f32 reference on
    /// the CPU.
    pub fn for_device(device: Device) -> Self {
        let dtype = if device.is_cuda() { DType::BF16 } else { DType::F32 };
        LoadOptions { keep_quantized: true, ..LoadOptions::new(device, dtype) }
    }

    /// Weights in `dtype`; activations in `dtype` on a GPU and in f32 on the CPU.
    pub fn new(device: Device, dtype: DType) -> Self {
        let compute = if device.is_cpu() { DType::F32 } else { dtype };
        LoadOptions { device, dtype, compute, keep_quantized: false }
    }

    /// From the names the CLI (`--device`, `--dtype`) and the GUI offer: a device as
    /// [`parse_device`] takes it, and `f32`, `bf16` or none for the device's default (which
    /// keeps a GGUF file's quantized blocks; a dtype dequantises them to it).
    pub fn parse(device: &str, dtype: Option<&str>) -> Result<Self> {
        let device = parse_device(device)?;
        match dtype {
            None => Ok(LoadOptions::for_device(device)),
            Some("f32") => Ok(LoadOptions::new(device, DType::F32)),
            Some("bf16") => Ok(LoadOptions::new(device, DType::BF16)),
            Some(other) => Err(ModelError::Invalid(format!("dtype {other:?}: expected f32 or bf16"))),
        }
    }
}

/// The weight dtypes a model loads in, by the names [`LoadOptions::parse`] takes.
pub const DTYPES: [&str; 2] = ["f32", "bf16"];

/// Parses `cpu`, `cuda`, `cuda:1`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ => {
            let ordinal = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| ModelError::Invalid(format!("device {s:?}: expected cpu, cuda or cuda:N")))?,
                None => return Err(ModelError::Invalid(format!("device {s:?}: expected cpu, cuda or cuda:N"))),
            };
            Device::new_cuda(ordinal).map_err(|e| ModelError::Invalid(format!("device {s}: {e}")))
        }
    }
}

/// What a prompt is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Prompt {
    /// Raw text; the tokenizer adds its special tokens (BOS) as it is configured to.
    Text { text: String },
    /// Chat messages, rendered with the model's chat template and an assistant turn opened.
    Chat { messages: Vec<Message> },
    /// Token ids as given.
    Tokens { ids: Vec<u32> },
}

impl Prompt {
    pub fn text(s: &str) -> Self {
        Prompt::Text { text: s.to_string() }
    }

    /// `text` as given, or (with `chat`, or a `system` message) as a user message in the chat
    /// template, after the system message.
    pub fn of(text: &str, chat: bool, system: Option<&str>) -> Self {
        if chat || system.is_some() {
            let mut messages = vec![];
            if let Some(s) = system {
                messages.push(Message::new("system", s));
            }
            messages.push(Message::new("user", text));
            Prompt::Chat { messages }
        } else {
            Prompt::text(text)
        }
    }
    /// The prompt as one string (for trace metadata and display).
    pub fn display(&self) -> String {
        match self {
            Prompt::Text { text } => text.clone(),
            Prompt::Chat { messages } => messages.iter().map(|m| format!("{}: {}", m.role, m.content)).collect::<Vec<_>>().join("\n"),
            Prompt::Tokens { ids } => ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","),
        }
    }
}

/// A run to perform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    pub tokens: Vec<u32>,
    pub max_new_tokens: usize,
    pub sampling: SamplingSettings,
    pub capture: CaptureSpec,
    pub interventions: Interventions,
    /// Stop at an end-of-sequence token.
    pub stop_at_eos: bool,
    /// Routing taken from a recorded run in some layers (see [`crate::replay`]); its summary,
    /// not the routing, goes into a trace's metadata.
    #[serde(skip)]
    pub replay: Option<std::sync::Arc<crate::replay::RoutingReplay>>,
}

impl RunRequest {
    /// One forward pass over `tokens`, nothing generated: what analyses, teacher forcing and
    /// `routelab forward` run.
    pub fn forward(tokens: Vec<u32>, capture: CaptureSpec, interventions: Interventions) -> Self {
        RunRequest {
            tokens,
            max_new_tokens: 0,
            sampling: SamplingSettings::default(),
            capture,
            interventions,
            stop_at_eos: true,
            replay: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    MaxTokens,
    EndOfSequence,
    ContextFull,
    Cancelled,
}

impl StopReason {
    /// How the CLI and the GUI say it.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::MaxTokens => "max tokens",
            StopReason::EndOfSequence => "end of sequence",
            StopReason::ContextFull => "context window full",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// A finished run: what was asked, what came out, what was recorded.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub request: RunRequest,
    /// Every position's tokens, text pieces and captures (logits at every position when
    /// `capture` asks for `logits`).
    pub store: CaptureStore,
    pub prompt_len: usize,
    /// Generated text (special tokens kept).
    pub text: String,
    pub stop: StopReason,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

impl RunRecord {
    /// Prompt then generated token ids.
    pub fn tokens(&self) -> &[u32] {
        self.store.tokens()
    }

    pub fn generated(&self) -> &[u32] {
        &self.tokens()[self.prompt_len..]
    }

    /// The output logits at position `t`, when all logits were captured.
    pub fn logits_at(&self, t: usize) -> Option<&[f32]> {
        self.store.row_f32(&HookPoint::Logits, t)
    }

    /// Logits at every position, when captured (`[T][V]`; empty otherwise).
    pub fn logits(&self) -> Vec<&[f32]> {
        (0..self.store.len()).map_while(|t| self.logits_at(t)).collect()
    }
}

/// Streaming events from [`Session::run`]; returning `false` from the callback cancels.
pub enum RunEvent<'a> {
    /// The prompt's positions are recorded in `store`.
    Prefilled { store: &'a CaptureStore },
    /// One more token is recorded, `store`'s last position; `text` is what it added to the
    /// generated text.
    Token { store: &'a CaptureStore, text: &'a str },
}

/// Architecture facts for display.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub model_type: String,
    pub summary: String,
    pub layers: usize,
    pub moe_layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub experts: usize,
    pub top_k: usize,
    pub shared_experts: usize,
    pub dense_residual: bool,
    pub parameters: usize,
    pub weight_bytes: usize,
    pub context: usize,
    pub vocab: usize,
    pub device: String,
    pub dtype: String,
    /// How the checkpoint stores its weights: `Q4_K: 144 tensors, 1.20 GB · F32: 61 tensors, 0.1 MB`.
    pub storage: String,
}

impl ModelInfo {
    fn new(
        name: &str,
        c: &ModelConfig,
        parameters: usize,
        weight_bytes: usize,
        device: &Device,
        dtype: DType,
        storage: &[(String, usize, usize)],
    ) -> Self {
        let moe: Vec<_> = c.moe_layers().collect();
        let storage =
            storage.iter().map(|(kind, n, bytes)| format!("{kind}: {n} tensors, {}", human_bytes(*bytes))).collect::<Vec<_>>().join(" · ");
        ModelInfo {
            name: name.to_string(),
            model_type: c.family.model_type().to_string(),
            summary: c.summary(),
            layers: c.num_layers,
            moe_layers: moe.len(),
            heads: c.attention.num_heads,
            kv_heads: c.attention.num_kv_heads,
            experts: moe.first().map(|m| m.routing.num_experts).unwrap_or(0),
            top_k: moe.first().map(|m| m.routing.top_k).unwrap_or(0),
            shared_experts: moe.first().and_then(|m| m.shared).map(|s| s.count).unwrap_or(0),
            dense_residual: moe.iter().any(|m| m.dense_residual.is_some()),
            parameters,
            weight_bytes,
            context: c.max_position_embeddings,
            vocab: c.vocab_size,
            device: format!("{device:?}"),
            dtype: format!("{dtype:?}"),
            storage,
        }
    }
}

/// `1.20 GB`, `61.0 MB`, `512 B`.
fn human_bytes(b: usize) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.2} GB", b as f64 / 1e9),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1 << 10 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

pub struct Session {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    pub source: ModelSource,
    pub name: String,
    eos_ids: Vec<u32>,
    /// The checkpoint's storage (see [`Weights::storage`]).
    storage: Vec<(String, usize, usize)>,
}

impl Session {
    pub fn load(source: &ModelSource, opts: &LoadOptions, progress: &mut dyn FnMut(LoadProgress)) -> Result<Session> {
        Self::load_cancellable(source, opts, &mut |p| {
            progress(p);
            true
        })
    }

    /// Like [`Session::load`]; `progress` returning false cancels between layers.
    pub fn load_cancellable(source: &ModelSource, opts: &LoadOptions, progress: &mut dyn FnMut(LoadProgress) -> bool) -> Result<Session> {
        let path = source.local_path(&mut |p| {
            progress(p);
        })?;
        let ck = Self::open_checkpoint(source, &path, opts)?;
        let (tokenizer, chat_template) = tokenizer_for(&ck)?;
        let Checkpoint { config, weights, .. } = ck;
        crate::memory::check(&path, &weights, crate::memory::available(&opts.device)?.as_ref())?;
        let storage = weights.storage();
        let model = Model::load(config, &weights, &mut |done, total| progress(LoadProgress::Layers { done, total }))?;
        // candle queues CUDA work on the loading thread's own stream (`per_thread_stream`), and
        // weight uploads from pageable memory may still be in flight when the calls return. A
        // session run from another thread would use another stream with no ordering against
        // this one, so the load waits for its own work before the session is handed out.
        model.device().synchronize()?;
        let eos_ids = tokenizer.eos_ids(&model.config.eos_token_ids);
        Ok(Session { model, tokenizer, chat_template, name: source.display_name(), source: source.clone(), eos_ids, storage })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.model.config
    }

    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn info(&self) -> ModelInfo {
        let m = &self.model;
        ModelInfo::new(&self.name, &m.config, m.parameter_count(), m.weight_bytes(), m.device(), m.dtype(), &self.storage)
    }

    /// What [`Session::info`] would say of `source`, from its headers and config alone: no
    /// weight is read (seconds for a 100 GB checkpoint). `weight_bytes` is the estimate the
    /// memory check uses.
    pub fn inspect(source: &ModelSource, opts: &LoadOptions) -> Result<(ModelInfo, bool)> {
        let path = source.local_path(&mut |_| {})?;
        let ck = Self::open_checkpoint(source, &path, opts)?;
        let chat = tokenizer_for(&ck).map(|(_, t)| t.is_some()).unwrap_or(false);
        let Checkpoint { config, weights, .. } = ck;
        let parameters = weights.parameter_count();
        let info = ModelInfo::new(
            &source.display_name(),
            &config,
            parameters,
            weights.resident_bytes().0,
            &opts.device,
            weights.dtype(),
            &weights.storage(),
        );
        Ok((info, chat))
    }

    /// The checkpoint at `path`, its weights set up as `opts` asks (compute dtype, GGUF blocks).
    fn open_checkpoint(source: &ModelSource, path: &std::path::Path, opts: &LoadOptions) -> Result<Checkpoint> {
        let mut ck = match source {
            ModelSource::Gguf(_) | ModelSource::HfGguf { .. } => checkpoint::open_gguf(path, opts.dtype, &opts.device)?,
            // A bare hub repo id can be a GGUF repo's only quant.
            _ if path.is_file() => checkpoint::open_gguf(path, opts.dtype, &opts.device)?,
            _ => checkpoint::open_dir(path, opts.dtype, &opts.device)?,
        };
        ck.weights = ck.weights.with_compute(opts.compute).keeping_quantized(opts.keep_quantized);
        // With no dtype asked for, a bf16 checkpoint stays bf16 on the CPU: half the memory
        // of f32 and faster per token (the packed bf16 kernels widen as they read; activations
        // stay f32). f16 loads as f32, which holds it exactly.
        if opts.keep_quantized && opts.device.is_cpu() && ck.weights.stored_matrix_dtype() == Some(DType::BF16) {
            ck.weights = ck.weights.with_dtype(DType::BF16);
        }
        Ok(ck)
    }

    /// Token ids of a prompt.
    pub fn encode(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        match prompt {
            Prompt::Text { text } => self.tokenizer.encode(text, true),
            Prompt::Chat { messages } => {
                let t = self.chat_template.as_ref().ok_or_else(|| {
                    ModelError::tokenizer(&self.tokenizer.source, "this model has no chat template; use a plain text prompt")
                })?;
                // The template writes the special tokens itself, so none are added.
                self.tokenizer.encode(&t.render(messages, true)?, false)
            }
            Prompt::Tokens { ids } => Ok(ids.clone()),
        }
    }

    fn check_context(&self, tokens: usize) -> Result<()> {
        let max = self.model.config.max_position_embeddings;
        if tokens > max {
            return Err(ModelError::ContextOverflow { tokens, max, model: self.name.clone() });
        }
        Ok(())
    }

    /// Fills every `mean` head intervention that has no reference yet with the head's mean
    /// output over a plain forward of `reference_tokens`.
    pub fn fill_head_means(&self, interventions: &mut Interventions, reference_tokens: &[u32]) -> Result<()> {
        interventions.validate(&self.model.config)?;
        let wanted: Vec<usize> = interventions
            .items
            .iter()
            .filter_map(|i| match i {
                Intervention::Head { layer, method: HeadMethod::Mean { reference }, .. } if reference.is_empty() => Some(*layer),
                _ => None,
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        self.check_context(reference_tokens.len())?;
        let mut cache = self.model.new_cache();
        let plan = CapturePlan::default();
        let out = self.model.forward(
            reference_tokens,
            &mut cache,
            &ForwardOptions { head_outputs: &Layers::Only(wanted), ..ForwardOptions::new(&plan) },
        )?;
        for i in interventions.items.iter_mut() {
            if let Intervention::Head { layer, head, method: HeadMethod::Mean { reference } } = i {
                if reference.is_empty() {
                    let Some(per_head) = out.layers[*layer].head_outputs.as_ref() else {
                        return Err(ModelError::Invalid(format!("layer {layer} recorded no head outputs")));
                    };
                    if *head >= per_head.dim(1)? {
                        return Err(ModelError::Invalid(format!("head {head} out of range")));
                    }
                    *reference = per_head.narrow(1, *head, 1)?.to_dtype(DType::F32)?.mean(0)?.flatten_all()?.to_vec1()?;
                }
            }
        }
        Ok(())
    }

    /// Generates, streaming events; see the module docs.
    pub fn run(&self, request: &RunRequest, on_event: &mut dyn FnMut(RunEvent) -> bool) -> Result<RunRecord> {
        self.run_patched(request, None, on_event)
    }

    /// [`Self::run`] with activations copied in from another run ([`crate::patch`]).
    pub fn run_patched(
        &self,
        request: &RunRequest,
        patches: Option<&crate::patch::Patches>,
        on_event: &mut dyn FnMut(RunEvent) -> bool,
    ) -> Result<RunRecord> {
        let prompt = &request.tokens;
        if prompt.is_empty() {
            return Err(ModelError::Invalid("the prompt is empty".into()));
        }
        self.check_context(prompt.len())?;
        let edits = self.model.edits(&request.interventions)?;
        let plan = request.capture.plan(self.model.config.num_layers);
        let positions =
            prompt.len().saturating_add(request.max_new_tokens).min(self.model.config.max_position_embeddings.max(prompt.len()));
        crate::capture_size::check(&plan, &self.model.config, positions)?;
        if let Some(r) = &request.replay {
            r.check(&self.model.config)?;
        }
        let opts = ForwardOptions { edits: &edits, replay: request.replay.as_deref(), patches, ..ForwardOptions::new(&plan) };
        let mut cache = self.model.new_cache();
        let mut record = RunRecord {
            request: request.clone(),
            store: CaptureStore::new(self.model.config.num_layers),
            prompt_len: prompt.len(),
            text: String::new(),
            stop: StopReason::MaxTokens,
            prefill_seconds: 0.0,
            decode_seconds: 0.0,
        };
        let started = Instant::now();
        let out = self.model.forward(prompt, &mut cache, &opts)?;
        let mut last = self.collect(&out, prompt, 0, plan.logits, &mut record.store)?;
        record.prefill_seconds = started.elapsed().as_secs_f64();
        if !on_event(RunEvent::Prefilled { store: &record.store }) {
            record.stop = StopReason::Cancelled;
            return Ok(record);
        }
        let mut sampler = Sampler::new(request.sampling.clone());
        let mut stream = TextStream::new(&self.tokenizer, false);
        let max = self.model.config.max_position_embeddings;
        let decode_start = Instant::now();
        for _ in 0..request.max_new_tokens {
            let position = record.store.len();
            if position >= max {
                record.stop = StopReason::ContextFull;
                break;
            }
            let token = sampler.sample(&last);
            // Feed it back at once: its own routing and head stats, and the next logits.
            let out = self.model.forward(&[token], &mut cache, &opts)?;
            last = self.collect(&out, &[token], position, plan.logits, &mut record.store)?;
            let text = stream.push(token)?;
            record.text.push_str(&text);
            let go_on = on_event(RunEvent::Token { store: &record.store, text: &text });
            if request.stop_at_eos && self.eos_ids.contains(&token) {
                record.stop = StopReason::EndOfSequence;
                break;
            }
            if !go_on {
                record.stop = StopReason::Cancelled;
                break;
            }
        }
        record.text.push_str(&stream.finish()?);
        record.decode_seconds = decode_start.elapsed().as_secs_f64();
        Ok(record)
    }

    /// Copies one forward call's captures to the host and appends them, with the tokens and
    /// their text, to `store`; returns the last position's logits.
    ///
    /// Everything travels as one f32 buffer (ids as f32, exact below 2^24): on a GPU that is
    /// one device-to-host copy, and so one synchronisation, per forward call instead of several
    /// per layer. Packed head statistics go once and are unpacked here.
    fn collect(&self, out: &ForwardOutput, tokens: &[u32], start: usize, all_logits: bool, store: &mut CaptureStore) -> Result<Vec<f32>> {
        let t = tokens.len();
        let mut pack = Pack::default();
        let mut slot_of: HashMap<TensorId, usize> = HashMap::new();
        let mut parts = Vec::new();
        for (l, lc) in out.layers.iter().enumerate() {
            for c in &lc.items {
                let slot = *slot_of.entry(c.tensor.id()).or_insert_with(|| pack.add(&c.tensor));
                parts.push((l, c.quantity, c.part, slot, c.tensor.dims().to_vec()));
            }
        }
        let logits_slot = pack.add(&out.logits);
        let host = pack.fetch(out.logits.device())?;
        let bad = |e: String| ModelError::Invalid(format!("internal: capture store: {e}"));
        store.append(HookPoint::Tokens, &[], Values::U32(tokens.to_vec())).map_err(bad)?;
        store.pieces.extend(tokens.iter().map(|&x| self.tokenizer.piece(x)));
        for (l, quantity, part, slot, dims) in parts {
            let v = host.part(slot);
            let hook = HookPoint::layer(l, quantity);
            match (part, quantity) {
                (Part::Whole, Quantity::AttnProbs) => store.append_probs(l, dims[0], start, t, dims[2], v),
                (Part::Whole, _) => store.append_rows(hook, &dims[1..], v),
                (Part::Column { index, width }, _) => {
                    // [H, T, width]: head h's statistics at position p are at (h·T + p)·width.
                    let heads = dims[0];
                    let rows: Vec<f32> = (0..t).flat_map(|p| (0..heads).map(move |h| v[(h * t + p) * width + index])).collect();
                    store.append_rows(hook, &[heads], &rows)
                }
            }
            .map_err(bad)?;
        }
        // `[T, V]` when all logits were captured, else `[1, V]` (the last position).
        let all = host.part(logits_slot);
        let n = out.logits.dim(0)?;
        let v = all.len() / n.max(1);
        if all_logits {
            store.append_rows(HookPoint::Logits, &[v], all).map_err(bad)?;
        }
        Ok(if n == 0 { vec![] } else { all[(n - 1) * v..].to_vec() })
    }
}

/// Device tensors gathered into one f32 buffer, fetched to the host with a single copy.
#[derive(Default)]
struct Pack {
    parts: Vec<Tensor>,
    offsets: Vec<usize>,
    len: usize,
}

/// A fetched [`Pack`].
struct Fetched {
    data: Vec<f32>,
    offsets: Vec<usize>,
}

impl Pack {
    fn add(&mut self, x: &Tensor) -> usize {
        self.offsets.push(self.len);
        self.len += x.elem_count();
        self.parts.push(x.clone());
        self.parts.len() - 1
    }

    /// One gather (a single launch on CUDA: `routelab_kernels::capture_pack`) and one copy.
    fn fetch(self, device: &Device) -> Result<Fetched> {
        let data = pack_f32(&self.parts, device)?.to_vec1::<f32>()?;
        let mut offsets = self.offsets;
        offsets.push(self.len);
        Ok(Fetched { data, offsets })
    }
}

impl Fetched {
    fn part(&self, i: usize) -> &[f32] {
        &self.data[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// The tokenizer and chat template of a checkpoint: tokenizer.json in its directory, else the
/// GGUF's vocabulary.
fn tokenizer_for(ck: &Checkpoint) -> Result<(Tokenizer, Option<ChatTemplate>)> {
    if let Some(dir) = &ck.dir {
        let tok = Tokenizer::from_dir(dir)?;
        let template = match read_tokenizer_config(dir)? {
            Some(cfg) => {
                ChatTemplate::from_tokenizer_config(&cfg, &dir.join("tokenizer_config.json"), tok.bos_token.clone(), tok.eos_token.clone())?
            }
            None => None,
        };
        // transformers ≥ 4.43 may keep the template in chat_template.jinja instead.
        let template = match template {
            Some(t) => Some(t),
            None => {
                let jinja = dir.join("chat_template.jinja");
                if jinja.exists() {
                    let src = crate::whole_file::read_to_string(&jinja, crate::whole_file::TOKENIZER_LIMIT, "chat template")
                        .map_err(|e| ModelError::io(&jinja, e))?;
                    Some(ChatTemplate::new(src, &jinja, tok.bos_token.clone(), tok.eos_token.clone())?)
                } else {
                    None
                }
            }
        };
        return Ok((tok, template));
    }
    let g = ck.gguf.as_ref().ok_or_else(|| ModelError::Source("internal: checkpoint without tokenizer source".into()))?;
    let json = g.tokenizer.as_ref().ok_or_else(|| {
        ModelError::tokenizer(
            &g.path,
            "the GGUF's vocabulary type is not supported (byte-level BPE only); put the model's tokenizer.json next to the .gguf file",
        )
    })?;
    let tok = Tokenizer::from_json(json, &g.path, g.bos_token.clone(), g.eos_token.clone())?;
    let template = match &g.chat_template {
        Some(src) => Some(ChatTemplate::new(src.clone(), &g.path, g.bos_token.clone(), g.eos_token.clone())?),
        None => None,
    };
    Ok((tok, template))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_options_parse_the_cli_and_gui_names() {
        let o = LoadOptions::parse("cpu", None).unwrap();
        assert_eq!((o.dtype, o.compute), (DType::F32, DType::F32));
        let o = LoadOptions::parse("cpu", Some("bf16")).unwrap();
        assert_eq!((o.dtype, o.compute), (DType::BF16, DType::F32), "the CPU computes in f32 on bf16 weights");
        assert_eq!(LoadOptions::parse("cpu", Some("f32")).unwrap().dtype, DType::F32);
        for name in DTYPES {
            assert!(LoadOptions::parse("cpu", Some(name)).is_ok(), "{name}");
        }
        let e = LoadOptions::parse("cpu", Some("fp8")).unwrap_err().to_string();
        assert!(e.contains("fp8") && e.contains("f32 or bf16"), "{e}");
        assert!(LoadOptions::parse("tpu", None).unwrap_err().to_string().contains("tpu"));
    }
}
