//! h1 = x + SiLU(x·W1 + b1); h2 = h1 + (h1·W2 + b2); bit j of word w = h2[32w + j] > 0.

use crate::KernelError;

/// Per-head hash MLP weights, `x · W` convention: `w1[head][in][out]`.
///
/// `heads` counts networks. With `replicas` R > 1, R networks hash each input head (networks
/// `h·R .. h·R + R` read input head h) and the head's code is their R codes side by side:
/// R·dim bits (a wider code than one d×d network can give; R = 1 is the paper's network).
#[derive(Debug, Clone, PartialEq)]
pub struct HashWeights {
    pub heads: usize,
    pub dim: usize,
    pub replicas: usize,
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

impl HashWeights {
    pub fn new(
        heads: usize,
        dim: usize,
        w1: Vec<f32>,
        b1: Vec<f32>,
        w2: Vec<f32>,
        b2: Vec<f32>,
    ) -> Result<Self, KernelError> {
        if dim == 0 || !dim.is_multiple_of(32) || dim > 256 {
            return Err(KernelError::HeadDim(dim));
        }
        for (what, v, n) in [
            ("w1", &w1, heads * dim * dim),
            ("b1", &b1, heads * dim),
            ("w2", &w2, heads * dim * dim),
            ("b2", &b2, heads * dim),
        ] {
            if v.len() != n {
                return Err(KernelError::Length {
                    what,
                    expected: n,
                    got: v.len(),
                });
            }
        }
        Ok(Self {
            heads,
            dim,
            replicas: 1,
            w1,
            b1,
            w2,
            b2,
        })
    }

    /// The same networks with `replicas` networks per input head.
    pub fn with_replicas(mut self, replicas: usize) -> Result<Self, KernelError> {
        if replicas == 0 || !self.heads.is_multiple_of(replicas) {
            return Err(KernelError::Replicas {
                nets: self.heads,
                replicas,
            });
        }
        self.replicas = replicas;
        Ok(self)
    }

    /// Heads of the input vectors (networks / replicas).
    pub fn input_heads(&self) -> usize {
        self.heads / self.replicas
    }

    /// Both layers of one head applied to one vector: `h2`, before the sign.
    pub fn forward(&self, head: usize, x: &[f32]) -> Vec<f32> {
        let d = self.dim;
        let layer = |w: &[f32], b: &[f32], x: &[f32]| -> Vec<f32> {
            (0..d)
                .map(|j| {
                    b[head * d + j]
                        + (0..d)
                            .map(|i| x[i] * w[(head * d + i) * d + j])
                            .sum::<f32>()
                })
                .collect()
        };
        let a1 = layer(&self.w1, &self.b1, x);
        let h1: Vec<f32> = x
            .iter()
            .zip(&a1)
            .map(|(x, a)| x + a / (1.0 + (-a).exp()))
            .collect();
        let a2 = layer(&self.w2, &self.b2, &h1);
        h1.iter().zip(&a2).map(|(h, a)| h + a).collect()
    }
}

/// Packs the signs of `h` into u32 words, LSB first.
pub fn pack_signs(h: &[f32]) -> Vec<u32> {
    h.chunks(32)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u32, |w, (j, &v)| w | (((v > 0.0) as u32) << j))
        })
        .collect()
}

/// Codes `[rows][input heads][code words]` for vectors `x` `[rows][input heads][d]`: each input
/// head's replicas' codes side by side.
pub fn hash_pack(weights: &HashWeights, x: &[f32]) -> Vec<u32> {
    let (h, d, r) = (weights.input_heads(), weights.dim, weights.replicas);
    x.chunks(d)
        .enumerate()
        .flat_map(|(i, v)| {
            (0..r).flat_map(move |k| pack_signs(&weights.forward((i % h) * r + k, v)))
        })
        .collect()
}
