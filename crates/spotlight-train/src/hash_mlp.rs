//! HashMlp: the per-head residual hash network of one layer (METHOD.md "Hash function").
//! Training codes run as one Burn op with its own backward ([`crate::train_ops`]: the CubeCL
//! hash kernel on cube backends); the same network in plain Burn tensor ops is kept as the
//! cross-check and for h2 on any backend.
//!
//! ```text
//! h1 = x + SiLU(x·W1 + b1);  h2 = h1 + (h1·W2 + b2)
//! training code  c = softsign(γ·h2) = γh2 / (1 + |γh2|)
//! decode code    sign(h2), packed (spotlight_kernels::hash_pack — the same weights)
//! ```

use burn::tensor::{backend::Backend, Distribution, Tensor, TensorData};
use rand::{rngs::StdRng, Rng, SeedableRng};
use spotlight_kernels::reference::HashWeights;

use crate::{TrainBackend, TrainError};

/// Standard deviation of the initial weights: the untrained hash is ≈ sign(x).
pub const INIT_STD: f64 = 1e-3;

/// `nets` independent networks of width `dim`, `x·W` convention (`w1[net][in][out]`). With
/// `replicas` R > 1, R networks hash each input head and its code is their R codes side by side
/// (R·d bits; see [`HashWeights`]).
#[derive(Debug, Clone)]
pub struct HashMlp<B: Backend> {
    /// Networks per input head.
    pub replicas: usize,
    /// [nets, d, d]
    pub w1: Tensor<B, 3>,
    /// [nets, 1, d]
    pub b1: Tensor<B, 3>,
    /// [nets, d, d]
    pub w2: Tensor<B, 3>,
    /// [nets, 1, d]
    pub b2: Tensor<B, 3>,
}

impl<B: Backend> HashMlp<B> {
    /// Near-identity init: W ~ N(0, 1e-3²), b = 0. Drawn on the host from `seed`, so every
    /// backend starts from the same weights.
    pub fn init(nets: usize, dim: usize, seed: u64, device: &B::Device) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut normal = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| (standard_normal(&mut rng) * INIT_STD) as f32)
                .collect()
        };
        let w1 = normal(nets * dim * dim);
        let w2 = normal(nets * dim * dim);
        let zeros = vec![0f32; nets * dim];
        Self::from_vecs(nets, dim, w1, zeros.clone(), w2, zeros, device)
    }

    /// Rotation start: W1 = 0, b = 0 and W2 = Rₙ − I, so h1 = x and h2 = x·Rₙ (up to rounding):
    /// the untrained code is the random linear hash sign(x·Rₙ). `rotations` holds one d×d matrix
    /// per network, [nets][d][d] in the x·R convention (network n = input head n / `replicas`,
    /// replica n % `replicas`). A query network and its key network given the same Rₙ start as
    /// one SimHash ([`crate::linear_hash`]). With `keep_first`, each head's first network keeps the
    /// authors' near-identity start instead ([`Self::init`] from `seed`, the untrained code ≈
    /// sign(x)).
    pub fn init_rotated(
        rotations: &[f32],
        replicas: usize,
        dim: usize,
        keep_first: bool,
        seed: u64,
        device: &B::Device,
    ) -> Self {
        let dd = dim * dim;
        let nets = rotations.len() / dd;
        let near = Self::init(nets, dim, seed, device);
        let host = |t: &Tensor<B, 3>| t.to_data().convert::<f32>().to_vec::<f32>().unwrap();
        let (near_w1, near_w2) = (host(&near.w1), host(&near.w2));
        let mut w1 = vec![0f32; nets * dd];
        let mut w2 = vec![0f32; nets * dd];
        for n in 0..nets {
            let at = n * dd..(n + 1) * dd;
            if keep_first && n % replicas == 0 {
                w1[at.clone()].copy_from_slice(&near_w1[at.clone()]);
                w2[at.clone()].copy_from_slice(&near_w2[at]);
                continue;
            }
            for i in 0..dim {
                for j in 0..dim {
                    let identity = if i == j { 1.0 } else { 0.0 };
                    w2[n * dd + i * dim + j] = rotations[n * dd + i * dim + j] - identity;
                }
            }
        }
        let zeros = vec![0f32; nets * dim];
        Self::from_vecs(nets, dim, w1, zeros.clone(), w2, zeros, device).with_replicas(replicas)
    }

    fn from_vecs(
        nets: usize,
        d: usize,
        w1: Vec<f32>,
        b1: Vec<f32>,
        w2: Vec<f32>,
        b2: Vec<f32>,
        device: &B::Device,
    ) -> Self {
        let t =
            |v: Vec<f32>, shape: [usize; 3]| Tensor::from_data(TensorData::new(v, shape), device);
        Self {
            replicas: 1,
            w1: t(w1, [nets, d, d]),
            b1: t(b1, [nets, 1, d]),
            w2: t(w2, [nets, d, d]),
            b2: t(b2, [nets, 1, d]),
        }
    }

    /// Random weights of a larger scale than the init (tests: a hash far from the identity).
    pub fn random(nets: usize, dim: usize, scale: f64, device: &B::Device) -> Self {
        let dist = Distribution::Normal(0.0, scale);
        Self {
            replicas: 1,
            w1: Tensor::random([nets, dim, dim], dist, device),
            b1: Tensor::random([nets, 1, dim], dist, device),
            w2: Tensor::random([nets, dim, dim], dist, device),
            b2: Tensor::random([nets, 1, dim], dist, device),
        }
    }

    pub fn nets(&self) -> usize {
        self.w1.dims()[0]
    }

    pub fn dim(&self) -> usize {
        self.w1.dims()[1]
    }

    /// The same networks, `replicas` per input head (the network count must divide).
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        debug_assert!(replicas > 0 && self.nets().is_multiple_of(replicas));
        self.replicas = replicas;
        self
    }

    /// The same networks with W1 = b1 = 0: h1 = x, so h2 = x·(I + W2) + b2 is linear (the
    /// learned-linear ablation keeps them there).
    pub fn without_first_layer(mut self) -> Self {
        self.w1 = self.w1.zeros_like();
        self.b1 = self.b1.zeros_like();
        self
    }

    /// Heads of the vectors hashed (networks / replicas).
    pub fn input_heads(&self) -> usize {
        self.nets() / self.replicas
    }

    /// Applies `per_net` (x [nets, rows, d] → [nets, rows, d]) to x [input heads, rows, d] and
    /// returns [input heads, rows, replicas·d]: each head's replicas side by side.
    fn replicated(
        &self,
        x: Tensor<B, 3>,
        per_net: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let r = self.replicas;
        if r == 1 {
            return per_net(x);
        }
        let [h, n, d] = x.dims();
        let y = per_net(
            x.reshape([h, 1, n, d])
                .expand([h, r, n, d])
                .reshape([h * r, n, d]),
        );
        y.reshape([h, r, n, d])
            .swap_dims(1, 2)
            .reshape([h, n, r * d])
    }

    /// h2 for x: [input heads, rows, d] → [input heads, rows, replicas·d] (row block r of net n
    /// is hashed by net n).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.replicated(x, |x| {
            let h1 = x.clone() + silu(x.matmul(self.w1.clone()) + self.b1.clone());
            h1.clone() + h1.matmul(self.w2.clone()) + self.b2.clone()
        })
    }

    /// softsign(γ·h2) written with Burn tensor ops, differentiated by Burn's autodiff: the
    /// cross-check of [`HashMlp::soft_codes`].
    pub fn soft_codes_by_tensor_ops(&self, x: Tensor<B, 3>, gamma: f64) -> Tensor<B, 3> {
        let g = self.forward(x) * gamma;
        g.clone() / (g.abs() + 1.0)
    }

    /// The four parameter tensors, in the order w1, b1, w2, b2.
    pub fn params(&self) -> [Tensor<B, 3>; 4] {
        [
            self.w1.clone(),
            self.b1.clone(),
            self.w2.clone(),
            self.b2.clone(),
        ]
    }

    /// Networks from their four parameter tensors, `replicas` per input head.
    pub fn from_params(replicas: usize, [w1, b1, w2, b2]: [Tensor<B, 3>; 4]) -> Self {
        Self {
            replicas,
            w1,
            b1,
            w2,
            b2,
        }
    }

    /// The weights in the decode kernels' format.
    pub fn to_weights(&self) -> Result<HashWeights, TrainError> {
        let v = |t: &Tensor<B, 3>| t.to_data().convert::<f32>().to_vec::<f32>().unwrap();
        Ok(HashWeights::new(
            self.nets(),
            self.dim(),
            v(&self.w1),
            v(&self.b1),
            v(&self.w2),
            v(&self.b2),
        )?
        .with_replicas(self.replicas)?)
    }

    pub fn from_weights(w: &HashWeights, device: &B::Device) -> Self {
        Self::from_vecs(
            w.heads,
            w.dim,
            w.w1.clone(),
            w.b1.clone(),
            w.w2.clone(),
            w.b2.clone(),
            device,
        )
        .with_replicas(w.replicas)
    }
}

impl<B: TrainBackend> HashMlp<B> {
    /// The differentiable code softsign(γ·h2) ∈ (−1, 1)^d of x [nets, rows, d]: the hash kernel
    /// with its softsign epilogue, one autodiff node.
    pub fn soft_codes(&self, x: Tensor<B, 3>, gamma: f64) -> Tensor<B, 3> {
        self.replicated(x, |x| crate::train_ops::hash_soft(x, self.params(), gamma))
    }
}

/// One standard-normal draw (Box–Muller), from the host RNG so every backend sees the same values.
pub(crate) fn standard_normal(rng: &mut StdRng) -> f64 {
    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// SiLU(a) = a·σ(a) with σ(a) = (1 + tanh(a/2))/2: Burn's sigmoid computes in f32 even on f64
/// backends, which would make f64 gradient checks meaningless; tanh never overflows.
pub fn silu<B: Backend, const D: usize>(a: Tensor<B, D>) -> Tensor<B, D> {
    let sigma = (a.clone() * 0.5).tanh() * 0.5 + 0.5;
    a * sigma
}
