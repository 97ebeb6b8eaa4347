//! Rotary position embeddings (RoFormer) with the scaling variants of
//! `transformers.modeling_rope_utils`: linear, dynamic NTK, Llama 3, YaRN and LongRoPE.
//!
//! Frequencies are computed the way transformers computes them, in f32 (`1 / base^(2i/d)`),
//! and positions are multiplied in f32, so angles agree to the last bit that matters.
//! Rotation uses the half-split convention (`rotate_half`); families whose checkpoints pair
//! rotary dimensions differently have their weight rows permuted at load time instead.

use candle_core::{Device, Tensor};

use crate::config::{RopeConfig, RopeScaling};
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct Rope {
    config: RopeConfig,
    /// Frequencies for the common case (short factors for LongRoPE).
    inv_freq: Vec<f32>,
    /// LongRoPE's long-context frequencies.
    long_inv_freq: Option<Vec<f32>>,
    attention_factor: f32,
}

/// `1 / base^(2i/dim)` for i < dim/2, in f32 like torch.
fn base_inv_freq(base: f64, dim: usize) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / dim as f32;
            1.0 / (base as f32).powf(exponent)
        })
        .collect()
}

impl Rope {
    pub fn new(config: &RopeConfig) -> Self {
        let dim = config.rotary_dim;
        let base = base_inv_freq(config.theta, dim);
        let mut long_inv_freq = None;
        let mut attention_factor = 1.0f32;
        let inv_freq = match &config.scaling {
            RopeScaling::None | RopeScaling::Dynamic { .. } => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / *factor as f32).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let (factor, low, high) = (*factor as f32, *low_freq_factor as f32, *high_freq_factor as f32);
                let old = *original_max_position_embeddings as f32;
                let low_wavelen = old / low;
                let high_wavelen = old / high;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        let medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
                        if medium {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        } else {
                            scaled
                        }
                    })
                    .collect()
            }
            RopeScaling::Yarn { factor, original_max_position_embeddings, beta_fast, beta_slow, attention_factor: af, truncate } => {
                attention_factor = *af as f32;
                let (d, theta) = (dim as f64, config.theta);
                let correction_dim = |rot: f64| {
                    d * ((*original_max_position_embeddings as f64) / (rot * 2.0 * std::f64::consts::PI)).ln() / (2.0 * theta.ln())
                };
                let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
                if *truncate {
                    low = low.floor();
                    high = high.ceil();
                }
                let low = low.max(0.0);
                let high = high.min(d - 1.0);
                let high = if low == high { high + 0.001 } else { high };
                (0..dim / 2)
                    .map(|i| {
                        let pos_freq = (theta as f32).powf((2 * i) as f32 / dim as f32);
                        let extrapolation = 1.0 / pos_freq;
                        let interpolation = 1.0 / (*factor as f32 * pos_freq);
                        let ramp = (((i as f32) - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                        let extrapolation_weight = 1.0 - ramp;
                        interpolation * (1.0 - extrapolation_weight) + extrapolation * extrapolation_weight
                    })
                    .collect()
            }
            RopeScaling::LongRope { short_factor, long_factor, short_attention_factor, .. } => {
                let scaled = |factors: &[f64]| -> Vec<f32> {
                    (0..dim / 2)
                        .map(|i| {
                            let shape = (2 * i) as f32 / dim as f32;
                            1.0 / (factors[i] as f32 * (config.theta as f32).powf(shape))
                        })
                        .collect()
                };
                long_inv_freq = Some(scaled(long_factor));
                attention_factor = *short_attention_factor as f32;
                scaled(short_factor)
            }
        };
        Rope { config: config.clone(), inv_freq, long_inv_freq, attention_factor }
    }

    pub fn rotary_dim(&self) -> usize {
        self.config.rotary_dim
    }

    /// Frequencies and cos/sin scale for a forward call whose last position is `end - 1`.
    /// LongRoPE and dynamic NTK depend on it, as in transformers' `dynamic_rope_update`.
    fn frequencies(&self, end: usize) -> (std::borrow::Cow<'_, [f32]>, f32) {
        match &self.config.scaling {
            RopeScaling::LongRope { original_max_position_embeddings, long_attention_factor, .. }
                if end > *original_max_position_embeddings =>
            {
                (self.long_inv_freq.as_deref().unwrap_or(&self.inv_freq).into(), *long_attention_factor as f32)
            }
            RopeScaling::Dynamic { factor } if end > self.config.max_position_embeddings => {
                let max = self.config.max_position_embeddings as f64;
                let d = self.config.rotary_dim as f64;
                let base = self.config.theta * ((factor * end as f64 / max) - (factor - 1.0)).powf(d / (d - 2.0));
                (base_inv_freq(base, self.config.rotary_dim).into(), 1.0)
            }
            _ => (self.inv_freq.as_slice().into(), self.attention_factor),
        }
    }

    /// cos and sin tables `[len, rotary_dim / 2]` for positions `start..start + len`.
    pub fn cos_sin(&self, start: usize, len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let (freqs, scale) = self.frequencies(start + len);
        let half = freqs.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in start..start + len {
            for &f in freqs.iter() {
                let angle = p as f32 * f;
                cos.push(angle.cos() * scale);
                sin.push(angle.sin() * scale);
            }
        }
        Ok((Tensor::from_vec(cos, (len, half), device)?, Tensor::from_vec(sin, (len, half), device)?))
    }

    /// Rotates the first `rotary_dim` features of `x` `[heads, T, dim]` with tables from
    /// [`Rope::cos_sin`]; the rest pass through (partial rotary). Tables in another dtype than
    /// `x` are cast to it, as transformers does (the decoder casts them once per forward).
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (h, t, d) = x.dims3()?;
        let rot = self.config.rotary_dim;
        let cos = cos.to_dtype(x.dtype())?;
        let sin = sin.to_dtype(x.dtype())?;
        if rot == d {
            let y = candle_nn::rotary_emb::rope(&x.reshape((1, h, t, d))?.contiguous()?, &cos, &sin)?;
            return Ok(y.reshape((h, t, d))?);
        }
        let rotated = x.narrow(2, 0, rot)?.contiguous()?.reshape((1, h, t, rot))?;
        let rotated = candle_nn::rotary_emb::rope(&rotated, &cos, &sin)?.reshape((h, t, rot))?;
        let pass = x.narrow(2, rot, d - rot)?;
        Ok(Tensor::cat(&[&rotated, &pass], 2)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(scaling: RopeScaling) -> RopeConfig {
        RopeConfig { theta: 10_000.0, rotary_dim: 4, scaling, max_position_embeddings: 16 }
    }

    #[test]
    fn default_frequencies_are_inverse_powers_of_the_base() {
        // dim 4: 1/10000^0 = 1, 1/10000^0.5 = 0.01.
        let r = Rope::new(&config(RopeScaling::None));
        assert_eq!(r.inv_freq, vec![1.0, 0.01]);
    }

    #[test]
    fn rotation_of_position_p_turns_each_pair_by_p_times_its_frequency() {
        // x = (1, 0 | 0, 0): the pair (x0, x2) = (1, 0) turned by angle 3·1 = 3 rad
        // → (cos 3, sin 3); the pair (x1, x3) = (0, 0) stays 0.
        let r = Rope::new(&config(RopeScaling::None));
        let (cos, sin) = r.cos_sin(3, 1, &Device::Cpu).unwrap();
        let x = Tensor::new(&[[[1f32, 0.0, 0.0, 0.0]]], &Device::Cpu).unwrap();
        let y = r.apply(&x, &cos, &sin).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let expect = [3f32.cos(), 0.0, 3f32.sin(), 0.0];
        for (a, b) in y.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn linear_scaling_divides_frequencies() {
        let r = Rope::new(&config(RopeScaling::Linear { factor: 4.0 }));
        assert_eq!(r.inv_freq, vec![0.25, 0.0025]);
    }

    #[test]
    fn longrope_switches_to_long_factors_past_the_original_length() {
        let r = Rope::new(&config(RopeScaling::LongRope {
            short_factor: vec![1.0, 1.0],
            long_factor: vec![2.0, 4.0],
            original_max_position_embeddings: 8,
            short_attention_factor: 1.0,
            long_attention_factor: 1.5,
        }));
        let (f, s) = r.frequencies(8);
        assert_eq!((f.to_vec(), s), (vec![1.0, 0.01], 1.0));
        let (f, s) = r.frequencies(9);
        assert_eq!((f.to_vec(), s), (vec![0.5, 0.0025], 1.5));
    }
}
