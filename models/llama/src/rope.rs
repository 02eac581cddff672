//! Rotary position embedding in the HF `rotate_half` layout: dimension i pairs with i + d/2.
//!
//! `out[i] = x[i]·cos(p·θ_i) − x[i+d/2]·sin(p·θ_i)`, `out[i+d/2] = x[i+d/2]·cos(p·θ_i) + x[i]·sin(p·θ_i)`,
//! with θ_i = base^(−2i/d), optionally rescaled (Llama 3.1 or per-frequency factors).
//! The hash of Spotlight Attention reads q and k in exactly this layout.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::config::{LlamaConfig, RopeScaling};

/// Inverse frequencies θ_i for i in 0..d/2, after scaling.
pub fn inv_freq(config: &LlamaConfig) -> Vec<f64> {
    let d = config.head_dim;
    let base: Vec<f64> = (0..d / 2)
        .map(|i| config.rope_theta.powf(-((2 * i) as f64) / d as f64))
        .collect();
    match &config.rope_scaling {
        None => base,
        Some(RopeScaling::Factors(f)) => base.iter().zip(f).map(|(b, &f)| b / f as f64).collect(),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            let old = *original_max_position_embeddings as f64;
            let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// cos and sin of p·θ_i for positions p in 0..rows, `[rows][d/2]` each, on the host.
pub fn host_tables(config: &LlamaConfig, rows: usize) -> (Vec<f32>, Vec<f32>) {
    let freqs = inv_freq(config);
    // Angles in f64: p·θ reaches 1e5 rad at long context, where f32 products lose ~1e-2.
    let (mut cos, mut sin) = (
        Vec::with_capacity(rows * freqs.len()),
        Vec::with_capacity(rows * freqs.len()),
    );
    for p in 0..rows {
        for &f in &freqs {
            let a = p as f64 * f;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    (cos, sin)
}

/// cos/sin tables for positions 0..max_positions, one per model (not per layer).
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    /// [max_positions, d/2]
    cos: Tensor<B, 2>,
    /// [max_positions, d/2]
    sin: Tensor<B, 2>,
    max_positions: usize,
}

impl<B: Backend> Rope<B> {
    pub fn new(config: &LlamaConfig, max_positions: usize, device: &B::Device) -> Self {
        let half = config.head_dim / 2;
        let (cos, sin) = host_tables(config, max_positions);
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [max_positions, half]), device),
            sin: Tensor::from_data(TensorData::new(sin, [max_positions, half]), device),
            max_positions,
        }
    }

    /// The cos and sin tables, [max_positions, d/2].
    pub fn tables(&self) -> (&Tensor<B, 2>, &Tensor<B, 2>) {
        (&self.cos, &self.sin)
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Rotates `x` ([batch, len, heads, d]) where row t of sequence b sits at `positions[b·len + t]`.
    pub fn apply(&self, x: Tensor<B, 4>, positions: Tensor<B, 1, Int>) -> Tensor<B, 4> {
        let [batch, len, _, d] = x.dims();
        let half = d / 2;
        // [batch, len, 1, d/2]: broadcast over heads.
        let cos = self
            .cos
            .clone()
            .select(0, positions.clone())
            .reshape([batch, len, 1, half]);
        let sin = self
            .sin
            .clone()
            .select(0, positions)
            .reshape([batch, len, 1, half]);
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.narrow(3, half, half);
        let out1 = x1.clone() * cos.clone() - x2.clone() * sin.clone();
        let out2 = x2 * cos + x1 * sin;
        Tensor::cat(vec![out1, out2], 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{tiny_config, TestBackend};

    #[test]
    fn rope_matches_direct_formula() {
        let config = LlamaConfig {
            rope_theta: 100_000.0,
            ..tiny_config()
        };
        let d = config.head_dim;
        let device = Default::default();
        let rope = Rope::<TestBackend>::new(&config, 300, &device);
        let positions = [0usize, 1, 7, 299];
        let x: Vec<f32> = (0..positions.len() * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let xt = Tensor::<TestBackend, 4>::from_data(
            TensorData::new(x.clone(), [1, positions.len(), 1, d]),
            &device,
        );
        let pos = Tensor::from_data(
            TensorData::new(positions.iter().map(|&p| p as i64).collect::<Vec<_>>(), [4]),
            &device,
        );
        let out = rope.apply(xt, pos).into_data().to_vec::<f32>().unwrap();
        for (r, &p) in positions.iter().enumerate() {
            for i in 0..d / 2 {
                let theta = 100_000f64.powf(-(2.0 * i as f64) / d as f64);
                let (c, s) = ((p as f64 * theta).cos(), (p as f64 * theta).sin());
                let (a, b) = (x[r * d + i] as f64, x[r * d + i + d / 2] as f64);
                let want = [a * c - b * s, b * c + a * s];
                let got = [out[r * d + i] as f64, out[r * d + i + d / 2] as f64];
                for k in 0..2 {
                    assert!(
                        (want[k] - got[k]).abs() < 1e-5,
                        "pos {p} dim {i}: want {} got {}",
                        want[k],
                        got[k]
                    );
                }
            }
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let config = LlamaConfig {
            head_dim: 128,
            rope_theta: 500_000.0,
            rope_scaling: Some(RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            }),
            ..tiny_config()
        };
        let scaled = inv_freq(&config);
        let plain = inv_freq(&LlamaConfig {
            rope_scaling: None,
            ..config
        });
        assert_eq!(scaled[0], plain[0]);
        assert!((scaled[63] - plain[63] / 8.0).abs() < 1e-15);
    }
}
