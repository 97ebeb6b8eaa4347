//! Weight files: memory-mapped safetensors (single or sharded) and GGUF.
//!
//! Tensors are looked up by their Hugging Face checkpoint name (GGUF names are translated, see
//! [`crate::gguf`]), checked against the shape the config implies, converted to the run dtype
//! and moved to the device. Every failure names the file and the tensor.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Dtype as StDtype, Metadata};
use safetensors::SafeTensors;

use crate::error::{ModelError, Result};
use crate::gguf::GgufWeights;

/// One memory-mapped safetensors file with its parsed header.
struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    /// Byte offset of the tensor data (8-byte length + JSON header).
    data_start: usize,
    metadata: Metadata,
}

impl SafetensorsFile {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        // Safety: the file is opened read-only; RouteLab never writes weight files, and a
        // concurrent writer would be a user error whose worst outcome is wrong numbers.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| {
            let what = match e {
                safetensors::SafeTensorError::MetadataIncompleteBuffer => {
                    "the file is shorter than its header declares (truncated download?)".to_string()
                }
                safetensors::SafeTensorError::HeaderTooSmall | safetensors::SafeTensorError::InvalidHeaderLength => {
                    "not a safetensors file: its header is missing or cut short".to_string()
                }
                other => format!("invalid safetensors header: {other}"),
            };
            ModelError::weights(path, what)
        })?;
        // safetensors checks that a shape's size fits; a zero dimension makes that size 0 while
        // the strides candle computes from the other dimensions could still overflow.
        for (name, info) in metadata.tensors() {
            if info.shape.iter().filter(|&&d| d != 0).try_fold(1usize, |a, &d| a.checked_mul(d)).is_none() {
                return Err(ModelError::weights(path, format!("tensor {name:?} has shape {:?}, which no tensor can have", info.shape)));
            }
        }
        Ok(SafetensorsFile { path: path.to_path_buf(), mmap, data_start: 8 + header_len, metadata })
    }

    fn names(&self) -> Vec<String> {
        self.metadata.tensors().into_keys().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.metadata.info(name).map(|i| i.shape.clone())
    }

    fn load(&self, name: &str) -> Result<Tensor> {
        let info = self.metadata.info(name).ok_or_else(|| ModelError::weights(&self.path, format!("missing tensor {name}")))?;
        let dtype = match info.dtype {
            StDtype::F32 => DType::F32,
            StDtype::F16 => DType::F16,
            StDtype::BF16 => DType::BF16,
            StDtype::F64 => DType::F64,
            StDtype::I64 => DType::I64,
            StDtype::U32 => DType::U32,
            StDtype::U8 => DType::U8,
            other => {
                return Err(ModelError::weights(
                    &self.path,
                    format!("tensor {name:?} has dtype {other:?}; RouteLab reads f32, f16, bf16 (quantised checkpoints: use a GGUF file)"),
                ))
            }
        };
        let (start, end) = info.data_offsets;
        let bytes = &self.mmap[self.data_start + start..self.data_start + end];
        Ok(Tensor::from_raw_buffer(bytes, dtype, &info.shape, &Device::Cpu)?)
    }
}

enum Backend {
    Safetensors {
        files: Vec<SafetensorsFile>,
        index: HashMap<String, usize>,
    },
    Gguf(Box<GgufWeights>),
    /// Benchmark models of real configs without their checkpoints: names and shapes from a
    /// manifest, values drawn on the run device when asked for (see [`Weights::random`]).
    Random {
        shapes: HashMap<String, Vec<usize>>,
    },
}

/// The manifest of a random-weight model directory: `random_weights.json`.
pub const RANDOM_MANIFEST: &str = "random_weights.json";

/// The weights of one model, ready to be read tensor by tensor.
pub struct Weights {
    backend: Backend,
    /// Where the weights live, for error messages (a directory or a file).
    location: PathBuf,
    dtype: DType,
    /// The activations' dtype: norm weights and biases are loaded in it.
    compute: DType,
    device: Device,
    /// Projections stored in GGUF blocks (Q8_0, K-quants, …) stay in them on the CPU.
    keep_quantized: bool,
}

impl Weights {
    /// Opens safetensors files (one, or all shards of an index).
    pub fn from_safetensors(paths: &[PathBuf], location: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for (i, p) in paths.iter().enumerate() {
            let f = SafetensorsFile::open(p)?;
            for name in f.names() {
                index.insert(name, i);
            }
            files.push(f);
        }
        Ok(Weights {
            backend: Backend::Safetensors { files, index },
            location: location.to_path_buf(),
            dtype,
            compute: dtype,
            device: device.clone(),
            keep_quantized: false,
        })
    }

    pub fn from_gguf(gguf: GgufWeights, dtype: DType, device: &Device) -> Self {
        let location = gguf.path().to_path_buf();
        Weights { backend: Backend::Gguf(Box::new(gguf)), location, dtype, compute: dtype, device: device.clone(), keep_quantized: false }
    }

    /// Random weights for a model directory holding `config.json` and `random_weights.json`
    /// (`{"seed": N, "tensors": {name: shape}}`, e.g. written from a transformers model built on
    /// the meta device): benchmarks run real configurations (OLMoE, Mixtral, Llama-3-8B, …)
    /// without their checkpoints. Norm weights are 1, biases 0, everything else N(0, 0.02²)
    /// (transformers' default init), drawn directly on the run device.
    pub fn random(manifest: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let text = std::fs::read_to_string(manifest).map_err(|e| ModelError::io(manifest, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::weights(manifest, format!("not JSON: {e}")))?;
        let tensors = v["tensors"].as_object().ok_or_else(|| ModelError::weights(manifest, "expected {\"tensors\": {name: shape}}"))?;
        let mut shapes = HashMap::new();
        for (name, shape) in tensors {
            let dims = shape
                .as_array()
                .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect::<Option<Vec<_>>>())
                .ok_or_else(|| ModelError::weights(manifest, format!("tensor {name:?}: shape is not a list of sizes")))?;
            shapes.insert(name.clone(), dims);
        }
        // candle's CPU generator cannot be seeded; on CUDA the seed makes runs repeatable.
        if !device.is_cpu() {
            device.set_seed(v["seed"].as_u64().unwrap_or(0))?;
        }
        Ok(Weights {
            backend: Backend::Random { shapes },
            location: manifest.to_path_buf(),
            dtype,
            compute: dtype,
            device: device.clone(),
            keep_quantized: false,
        })
    }

    /// The dtype weight matrices are kept in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The dtype activations are computed in (see [`crate::session::LoadOptions`]).
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// Matrices in `dtype`.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// The dtype most bytes of a safetensors checkpoint's matrices are stored in; `None` for
    /// GGUF files and random weights.
    pub fn stored_matrix_dtype(&self) -> Option<DType> {
        let Backend::Safetensors { files, index } = &self.backend else { return None };
        let mut bytes: HashMap<DType, usize> = HashMap::new();
        for (name, &i) in index {
            let Some(info) = files[i].metadata.info(name) else { continue };
            let dtype = match info.dtype {
                StDtype::F32 => DType::F32,
                StDtype::F16 => DType::F16,
                StDtype::BF16 => DType::BF16,
                _ => continue,
            };
            if info.shape.len() >= 2 {
                *bytes.entry(dtype).or_default() += info.data_offsets.1 - info.data_offsets.0;
            }
        }
        bytes.into_iter().max_by_key(|&(d, b)| (b, d == DType::F32)).map(|(d, _)| d)
    }

    /// Activations in `compute` (the matrices stay in [`Weights::dtype`]).
    pub fn with_compute(mut self, compute: DType) -> Self {
        self.compute = compute;
        self
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn location(&self) -> &Path {
        &self.location
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.backend {
            Backend::Safetensors { index, .. } => index.contains_key(name),
            Backend::Gguf(g) => g.contains(name),
            Backend::Random { shapes } => shapes.contains_key(name),
        }
    }

    /// The stored shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match &self.backend {
            Backend::Safetensors { files, index } => index.get(name).and_then(|&i| files[i].shape(name)),
            Backend::Gguf(g) => g.shape(name),
            Backend::Random { shapes } => shapes.get(name).cloned(),
        }
    }

    fn file_of(&self, name: &str) -> PathBuf {
        match &self.backend {
            Backend::Safetensors { files, index } => {
                index.get(name).map(|&i| files[i].path.clone()).unwrap_or_else(|| self.location.clone())
            }
            Backend::Gguf(g) => g.path().to_path_buf(),
            Backend::Random { .. } => self.location.clone(),
        }
    }

    pub fn missing(&self, name: &str, hint: Option<String>) -> ModelError {
        ModelError::MissingTensor { location: self.location.display().to_string(), name: name.to_string(), hint }
    }

    /// Loads a tensor without shape checks: from files in its stored dtype on the CPU; random
    /// weights in f32 drawn on the run device (a stacked expert tensor of a large config is
    /// gigabytes, and what follows, slicing and transposes, works there as well).
    fn load_raw(&self, name: &str) -> Result<Tensor> {
        match &self.backend {
            Backend::Safetensors { files, index } => {
                let i = *index.get(name).ok_or_else(|| self.missing(name, None))?;
                files[i].load(name)
            }
            Backend::Gguf(g) => g.load(name),
            Backend::Random { .. } => self.random_tensor(name),
        }
    }

    /// A random-backend tensor, f32, on the run device.
    fn random_tensor(&self, name: &str) -> Result<Tensor> {
        let device = &self.device;
        let shape = self.shape(name).ok_or_else(|| self.missing(name, None))?;
        let leaf = name.rsplit('.').nth(1).unwrap_or("");
        Ok(if name.ends_with("bias") {
            Tensor::zeros(shape, DType::F32, device)?
        } else if leaf.contains("norm") || leaf.ends_with("ln") {
            Tensor::ones(shape, DType::F32, device)?
        } else {
            Tensor::randn(0f32, 0.02f32, shape, device)?
        })
    }

    /// Keeps quantized GGUF projections in their blocks ([`Weights::get_quantized`]).
    pub fn keeping_quantized(mut self, keep: bool) -> Self {
        self.keep_quantized = keep;
        self
    }

    /// An embedding table in its GGUF blocks, when the weights keep blocks and it is stored in
    /// any quantized type (rows are looked up one by one, so any block type serves); `None`
    /// when it is to be loaded as a tensor.
    pub fn get_embedding_blocks(&self, name: &str, shape: &[usize]) -> Result<Option<crate::layers::blocks::Blocks>> {
        let Backend::Gguf(g) = &self.backend else { return Ok(None) };
        if !self.keep_quantized || !g.keeps_embedding_blocks(name) {
            return Ok(None);
        }
        self.check_shape(name, shape)?;
        g.load_blocks(name).map(Some)
    }

    /// `name` in its GGUF blocks, when the weights keep them and it is stored in a type kept
    /// on the run device (on the CPU [`GgufWeights::keeps_blocks`], on a GPU
    /// [`GgufWeights::keeps_blocks_on_gpu`]); `None` when it is to be loaded as a tensor.
    pub fn get_quantized(&self, name: &str, shape: &[usize]) -> Result<Option<crate::layers::blocks::Blocks>> {
        let Backend::Gguf(g) = &self.backend else { return Ok(None) };
        if !self.keep_quantized {
            return Ok(None);
        }
        self.check_shape(name, shape)?;
        if self.device.is_cpu() {
            g.load_quantized(name)
        } else {
            g.load_quantized_on(name, &self.device)
        }
    }

    /// That `name` exists with `shape`, else the error naming the file, the tensor and both
    /// shapes.
    fn check_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        let found = self.shape(name).ok_or_else(|| self.missing(name, None))?;
        if found != shape {
            return Err(ModelError::TensorShape { path: self.file_of(name), name: name.to_string(), expected: shape.to_vec(), found });
        }
        Ok(())
    }

    /// Number of stored parameters (a tied table counted once: it is stored once).
    pub fn parameter_count(&self) -> usize {
        self.names().iter().filter_map(|n| self.shape(n)).map(|s| s.iter().product::<usize>()).sum()
    }

    /// Loads `name`, checks it has `shape`, converts it to the run dtype on the run device.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_as(name, shape, self.dtype)
    }

    /// Like [`Weights::get`] with an explicit dtype (routers and norms stay f32).
    pub fn get_as(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.check_shape(name, shape)?;
        Ok(self.load_raw(name)?.to_dtype(dtype)?.to_device(&self.device)?)
    }

    /// [`Weights::get`] for tensors a config may or may not have (biases).
    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Loads a tensor that must exist, in f32, for load-time reshaping: on the CPU, except
    /// random weights, which are drawn on the run device (see `load_raw`).
    pub fn get_cpu_f32(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.check_shape(name, shape)?;
        Ok(self.load_raw(name)?.to_dtype(DType::F32)?)
    }

    /// Moves a tensor prepared on the CPU to the run dtype and device.
    pub fn place(&self, t: Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }

    /// Bytes the weights will take in memory once loaded: tensors kept in GGUF blocks at
    /// their stored size, matrices in the run dtype, vectors (norms, biases) in the compute
    /// dtype. What [`crate::memory`] compares with the memory available.
    /// The second figure is the part kept in GGUF blocks.
    pub fn resident_bytes(&self) -> (usize, usize) {
        let mut kept_bytes = 0;
        let total = self
            .names()
            .iter()
            .map(|name| {
                let shape = self.shape(name).unwrap_or_default();
                let elems: usize = shape.iter().product();
                if let Backend::Gguf(g) = &self.backend {
                    let kept = if self.device.is_cpu() { g.keeps_blocks(name) } else { g.keeps_blocks_on_gpu(name) };
                    if self.keep_quantized && (kept || g.keeps_embedding_blocks(name)) {
                        let b = g.stored_bytes(name).unwrap_or(0);
                        kept_bytes += b;
                        return b;
                    }
                }
                let dtype = if shape.len() >= 2 { self.dtype } else { self.compute };
                elems * dtype.size_in_bytes()
            })
            .sum();
        (total, kept_bytes)
    }

    /// Bytes the weights take where they are stored (files, or nothing for random weights).
    pub fn stored_bytes(&self) -> usize {
        match &self.backend {
            Backend::Safetensors { files, .. } => files.iter().map(|f| f.mmap.len()).sum(),
            Backend::Gguf(g) => g.hf_names().iter().filter_map(|n| g.stored_bytes(n)).sum(),
            Backend::Random { .. } => 0,
        }
    }

    /// How the weights are stored, one entry per storage type with its tensor count and bytes
    /// (`Q4_K × 144, 1.2 GB`), largest first.
    pub fn storage(&self) -> Vec<(String, usize, usize)> {
        let mut kinds: HashMap<String, (usize, usize)> = HashMap::new();
        for name in self.names() {
            let (kind, bytes) = match &self.backend {
                Backend::Safetensors { files, index } => {
                    let Some(info) = index.get(&name).and_then(|&i| files[i].metadata.info(&name)) else { continue };
                    (format!("{:?}", info.dtype), info.data_offsets.1 - info.data_offsets.0)
                }
                Backend::Gguf(g) => {
                    (g.stored_type(&name).map(|t| format!("{t:?}")).unwrap_or_default(), g.stored_bytes(&name).unwrap_or(0))
                }
                Backend::Random { .. } => ("random".to_string(), 0),
            };
            let e = kinds.entry(kind).or_default();
            e.0 += 1;
            e.1 += bytes;
        }
        let mut v: Vec<_> = kinds.into_iter().map(|(k, (n, b))| (k, n, b)).collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        v
    }

    /// All tensor names (for diagnostics).
    pub fn names(&self) -> Vec<String> {
        match &self.backend {
            Backend::Safetensors { index, .. } => index.keys().cloned().collect(),
            Backend::Gguf(g) => g.hf_names(),
            Backend::Random { shapes } => shapes.keys().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_tensor_whose_strides_overflow_is_an_error() {
        // [0, 2^40, 2^40] holds nothing, so safetensors accepts it, but candle's strides
        // multiplied past usize when the tensor was read.
        let dir = tempfile::tempdir().unwrap();
        let header = r#"{"t":{"dtype":"F32","shape":[0,1099511627776,1099511627776],"data_offsets":[0,0]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, bytes).unwrap();
        let result = Weights::from_safetensors(&[path], dir.path(), DType::F32, &Device::Cpu)
            .and_then(|w| w.get("t", &[0, 1 << 40, 1 << 40]).map(|_| ()));
        let e = result.unwrap_err().to_string();
        assert!(e.contains("model.safetensors") && e.contains("tensor \"t\""), "{e}");
    }
}
