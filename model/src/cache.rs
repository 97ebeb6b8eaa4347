//! The key/value cache: per layer, keys and values of every position seen so far, in
//! preallocated buffers that grow by doubling so a decode step copies only its own row.

use candle_core::Tensor;

use crate::error::Result;

#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

impl LayerCache {
    /// Appends `k` `[Hkv, T, dk]` and `v` `[Hkv, T, dv]`; returns all keys and values so far
    /// (views into the buffers).
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(1)?;
        let needed = self.len + t;
        let capacity = self.k.as_ref().map(|b| b.dim(1)).transpose()?.unwrap_or(0);
        if needed > capacity {
            let new_cap = needed.max(2 * capacity).max(64);
            let grow = |old: &Option<Tensor>, new: &Tensor| -> Result<Tensor> {
                let (h, _, d) = new.dims3()?;
                let buf = Tensor::zeros((h, new_cap, d), new.dtype(), new.device())?;
                if let Some(o) = old {
                    buf.slice_set(&o.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                }
                Ok(buf)
            };
            self.k = Some(grow(&self.k, k)?);
            self.v = Some(grow(&self.v, v)?);
        }
        let (Some(kb), Some(vb)) = (self.k.as_ref(), self.v.as_ref()) else {
            return Err(crate::error::ModelError::Invalid("kv cache: no buffer after growing".into()));
        };
        kb.slice_set(&k.contiguous()?, 1, self.len)?;
        vb.slice_set(&v.contiguous()?, 1, self.len)?;
        self.len = needed;
        Ok((kb.narrow(1, 0, self.len)?, vb.narrow(1, 0, self.len)?))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets positions from `len` on (keeps the buffers).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes held by the buffers.
    pub fn bytes(&self) -> usize {
        [&self.k, &self.v].iter().filter_map(|t| t.as_ref()).map(|t| t.elem_count() * t.dtype().size_in_bytes()).sum()
    }
}

/// One [`LayerCache`] per decoder layer.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache { layers: vec![LayerCache::default(); num_layers] }
    }

    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.layers.first().map(|l| l.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn truncate(&mut self, len: usize) {
        self.layers.iter_mut().for_each(|l| l.truncate(len));
    }

    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn appended_rows_come_back_in_order_across_growth() {
        let mut c = LayerCache::default();
        let mut expect = vec![];
        for step in 0..100 {
            let t = if step == 0 { 70 } else { 1 };
            let rows: Vec<f32> = (0..t).map(|i| (expect.len() + i) as f32).collect();
            let k = Tensor::from_vec(rows.clone(), (1, t, 1), &Device::Cpu).unwrap();
            let (ks, vs) = c.append(&k, &k).unwrap();
            expect.extend(rows);
            assert_eq!(ks.flatten_all().unwrap().to_vec1::<f32>().unwrap(), expect);
            assert_eq!(vs.dims()[1], expect.len());
        }
    }
}
