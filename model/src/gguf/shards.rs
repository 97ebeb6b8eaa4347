//! A GGUF model in one file or in shards (`name-00001-of-00003.gguf`, as llama.cpp's
//! `gguf-split` and its converter's `--split-max-*` write them): metadata from the first
//! shard, tensors from whichever shard holds them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;
use memmap2::Mmap;
use routelab_kernels::blocks::Bytes;

use crate::error::{ModelError, Result};
use crate::hub::quants::shard_name;

struct Shard {
    path: PathBuf,
    content: Content,
    /// The whole file, mapped: tensors are read from it in place.
    map: Arc<Mmap>,
}

pub(crate) struct Shards {
    shards: Vec<Shard>,
    /// Tensor name → the shard holding it.
    index: HashMap<String, usize>,
}

fn read(path: &Path) -> Result<Shard> {
    let mut file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    // candle divides by `general.alignment` without checking it (a panic on 0).
    if let Ok(Some(0)) = alignment(&mut BufReader::new(&mut file)) {
        return Err(ModelError::weights(path, "GGUF metadata `general.alignment` is 0; it must be a positive number of bytes"));
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| ModelError::io(path, e))?;
    let content = Content::read(&mut file).map_err(|e| ModelError::weights(path, format!("not a readable GGUF file: {e}")))?;
    // SAFETY: the map is read-only; like every reader of a mapped checkpoint (safetensors
    // here, llama.cpp) this assumes nobody truncates the file while it is open.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    check_tensors(path, &content, map.len())?;
    Ok(Shard { path: path.to_path_buf(), content, map: Arc::new(map) })
}

/// The integer value of `general.alignment` in the metadata of the GGUF file `r` reads, found by
/// skipping over the other entries without keeping them; `None` when it is absent or not one of
/// the integer types candle reads it from. A malformed header is an error here and is left for
/// candle's reader to describe.
fn alignment<R: Read + Seek>(r: &mut BufReader<R>) -> std::io::Result<Option<u64>> {
    let bad = || std::io::Error::from(std::io::ErrorKind::InvalidData);
    let mut h = Header { r, v1: false };
    if h.u32()? != 0x4655_4747 {
        return Err(bad());
    }
    // Version 1 wrote counts and lengths as u32, later versions as u64.
    h.v1 = h.u32()? == 1;
    let _tensors = h.len()?;
    for _ in 0..h.len()? {
        let key_len = h.len()?;
        const KEY: &[u8] = b"general.alignment";
        let is_alignment = key_len == KEY.len() as u64 && {
            let mut key = [0; KEY.len()];
            h.r.read_exact(&mut key)?;
            key == KEY
        };
        if key_len != KEY.len() as u64 {
            h.skip(key_len)?;
        }
        let t = h.u32()?;
        if is_alignment {
            let mut b = [0; 4];
            let n = match t {
                0 | 1 => 1,
                2 | 3 => 2,
                4 | 5 => 4,
                _ => return Ok(None),
            };
            h.r.read_exact(&mut b[..n])?;
            return Ok(Some(u64::from(u32::from_le_bytes(b))));
        }
        h.skip_value(t, 0)?;
    }
    Ok(None)
}

/// A GGUF header being skipped through by [`alignment`].
struct Header<'a, R> {
    r: &'a mut BufReader<R>,
    v1: bool,
}

impl<R: Read + Seek> Header<'_, R> {
    fn u32(&mut self) -> std::io::Result<u32> {
        let mut b = [0; 4];
        self.r.read_exact(&mut b).map(|_| u32::from_le_bytes(b))
    }
    fn len(&mut self) -> std::io::Result<u64> {
        if self.v1 {
            return self.u32().map(u64::from);
        }
        let mut b = [0; 8];
        self.r.read_exact(&mut b).map(|_| u64::from_le_bytes(b))
    }
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        self.r.seek_relative(i64::try_from(n).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?)
    }
    /// Skips a value of type `t` (arrays nest at most a few deep, as in real files).
    fn skip_value(&mut self, t: u32, depth: u32) -> std::io::Result<()> {
        let fixed = |t: u32| match t {
            0 | 1 | 7 => Some(1u64),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        let bad = || std::io::Error::from(std::io::ErrorKind::InvalidData);
        match t {
            8 => {
                let n = self.len()?;
                self.skip(n)
            }
            9 if depth < 4 => {
                let inner = self.u32()?;
                let n = self.len()?;
                match fixed(inner) {
                    Some(size) => self.skip(n.checked_mul(size).ok_or_else(bad)?),
                    None => (0..n).try_for_each(|_| self.skip_value(inner, depth + 1)),
                }
            }
            t => self.skip(fixed(t).ok_or_else(bad)?),
        }
    }
}

/// Bytes `info`'s data takes: `None` when its element count overflows or is not whole blocks.
pub(crate) fn tensor_bytes(info: &TensorInfo) -> Option<usize> {
    let dtype = info.ggml_dtype;
    let dims = info.shape.dims();
    // A zero dimension empties the tensor but not its strides, the products of the dimensions
    // after each, which must fit too.
    dims.iter().filter(|&&d| d != 0).try_fold(1usize, |a, &d| a.checked_mul(d))?;
    let elems = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    (elems.is_multiple_of(dtype.block_size())).then(|| (elems / dtype.block_size()).checked_mul(dtype.type_size())).flatten()
}

/// The byte range of `info`'s data (the tensor `name`'s, or a slice of it) in a file of
/// `file_len` bytes whose tensor data starts at `data_offset`; an error naming `path` and the
/// tensor when no file can hold it or it lies past the end.
fn locate(path: &Path, name: &str, info: &TensorInfo, data_offset: u64, file_len: usize) -> Result<Range<usize>> {
    let (dtype, dims) = (info.ggml_dtype, info.shape.dims());
    let what = || format!("tensor {name:?} ({dtype:?}, {dims:?})");
    let Some(bytes) = tensor_bytes(info) else {
        return Err(ModelError::weights(path, format!("{} declares a size no file can hold or not whole blocks of {dtype:?}", what())));
    };
    let start = (data_offset as usize).checked_add(info.offset as usize);
    // Blocks are read in place as structs of f16/f32 fields (candle casts the mapped bytes),
    // so the data must start aligned for them: a multiple of 4 or 2 bytes, whichever divides
    // the block (a real file aligns every tensor to `general.alignment`, 32).
    let align = if dtype.type_size().is_multiple_of(4) {
        4
    } else if dtype.type_size().is_multiple_of(2) {
        2
    } else {
        1
    };
    if let Some(start) = start.filter(|s| !s.is_multiple_of(align)) {
        return Err(ModelError::weights(path, format!("{} starts at byte {start}, which is not a multiple of {align}", what())));
    }
    match start.and_then(|s| s.checked_add(bytes).map(|e| (s, e))) {
        Some((start, end)) if end <= file_len => Ok(start..end),
        Some((start, end)) => {
            Err(ModelError::weights(path, format!("{} needs bytes {start}..{end} but the file has {file_len} (truncated?)", what())))
        }
        None => Err(ModelError::weights(path, format!("{} lies past any file's end", what()))),
    }
}

/// Every tensor's shape has a size that fits the platform and whole blocks, and its data lies
/// inside the file: checked once here, so later code may multiply dims and slice the map. The
/// error names the file and the first offending tensor (in file order).
fn check_tensors(path: &Path, content: &Content, file_len: usize) -> Result<()> {
    let mut infos: Vec<(&String, &TensorInfo)> = content.tensor_infos.iter().collect();
    infos.sort_by_key(|(name, i)| (i.offset, name.as_str()));
    for (name, info) in infos {
        locate(path, name, info, content.tensor_data_offset, file_len)?;
    }
    Ok(())
}

impl Shards {
    /// Opens `path`, and when it is one shard of several, all of them (any shard may be given).
    pub fn open(path: &Path) -> Result<Shards> {
        let paths = match path.file_name().and_then(|n| n.to_str()).and_then(shard_name) {
            Some((stem, _, count)) if count > 1 => {
                let dir = path.parent().unwrap_or(Path::new("."));
                (1..=count).map(|i| dir.join(format!("{stem}-{i:05}-of-{count:05}.gguf"))).collect()
            }
            _ => vec![path.to_path_buf()],
        };
        let mut shards = Vec::with_capacity(paths.len());
        for p in &paths {
            if !p.exists() {
                return Err(ModelError::weights(path, format!("shard {} of this {}-file GGUF model is missing", p.display(), paths.len())));
            }
            shards.push(read(p)?);
        }
        let mut index = HashMap::new();
        for (i, s) in shards.iter().enumerate() {
            for name in s.content.tensor_infos.keys() {
                if index.insert(name.clone(), i).is_some() {
                    return Err(ModelError::weights(&s.path, format!("tensor {name:?} is in two shards")));
                }
            }
        }
        Ok(Shards { shards, index })
    }

    pub fn path(&self) -> &Path {
        &self.shards[0].path
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.shards[0].content.metadata
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.shards[*self.index.get(name)?].content.tensor_infos.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.index.keys()
    }

    /// Where `info` (the tensor `name`'s, or a slice of it) lies in the mapped shard holding
    /// `name`; an error naming the file and the tensor when it lies beyond the file's end.
    pub fn map(&self, name: &str, info: &TensorInfo) -> Result<(Bytes, Range<usize>)> {
        let shard = self.index.get(name).map(|&i| &self.shards[i]).ok_or_else(|| ModelError::MissingTensor {
            location: self.path().display().to_string(),
            name: name.to_string(),
            hint: None,
        })?;
        let range = locate(&shard.path, name, info, shard.content.tensor_data_offset, shard.map.len())?;
        Ok((shard.map.clone(), range))
    }

    /// Reads `info` (the tensor `name`'s, or a slice of it) from the shard holding `name`, as
    /// a copy of its blocks.
    pub fn read(&self, name: &str, info: &TensorInfo) -> Result<QTensor> {
        let (bytes, range) = self.map(name, info)?;
        qtensor_from_ggml(info.ggml_dtype, &(*bytes).as_ref()[range], info.shape.dims().to_vec(), &Device::Cpu)
            .map_err(|e| ModelError::weights(self.path(), format!("tensor {name:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;

    #[test]
    fn tensor_data_out_of_alignment_is_an_error_not_a_misaligned_read() {
        // candle reads the blocks in place as structs with f32/f16 fields: an odd offset was
        // undefined behaviour (a panic where the standard library checks it).
        let info = |dtype, offset| TensorInfo { ggml_dtype: dtype, shape: vec![32].into(), offset };
        let path = Path::new("m.gguf");
        let e = locate(path, "t", &info(GgmlDType::F32, 2), 64, 4096).unwrap_err().to_string();
        assert!(e.contains("m.gguf") && e.contains("starts at byte 66, which is not a multiple of 4"), "{e}");
        let e = locate(path, "t", &info(GgmlDType::Q8_0, 1), 64, 4096).unwrap_err().to_string();
        assert!(e.contains("not a multiple of 2"), "{e}");
        assert_eq!(locate(path, "t", &info(GgmlDType::Q8_0, 34), 64, 4096).unwrap(), 98..132);
        assert_eq!(locate(path, "t", &info(GgmlDType::F32, 4), 64, 4096).unwrap(), 68..196);
    }

    #[test]
    fn an_empty_tensor_whose_strides_overflow_is_an_error() {
        // [0, 2^40, 2^40] holds nothing, but candle's strides multiplied past usize.
        let info = TensorInfo { ggml_dtype: GgmlDType::F32, shape: vec![0, 1 << 40, 1 << 40].into(), offset: 0 };
        let e = locate(Path::new("m.gguf"), "t", &info, 64, 4096).unwrap_err().to_string();
        assert!(e.contains("declares a size no file can hold"), "{e}");
        let empty = TensorInfo { ggml_dtype: GgmlDType::F32, shape: vec![0, 1 << 20].into(), offset: 0 };
        assert_eq!(locate(Path::new("m.gguf"), "t", &empty, 64, 4096).unwrap(), 64..64);
    }
}
