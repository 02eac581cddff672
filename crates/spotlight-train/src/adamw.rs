//! AdamW with decoupled weight decay (PyTorch's semantics), a warm-up + cosine schedule, and
//! clipping by global norm — per layer, so every layer trains as if alone (METHOD.md: "each layer
//! is trained independently"). Moments are plain tensors so checkpoints hold the whole state.

use burn::tensor::{backend::Backend, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Largest global gradient norm of one layer; larger gradients are scaled down.
    pub clip: f64,
    /// Share of the steps spent in linear warm-up.
    pub warmup_fraction: f64,
    /// Decay towards the starting weights, p −= lr·wd·(p − p₀), instead of towards 0 (a rotation
    /// start decayed towards 0 would drift back to the identity).
    #[serde(default)]
    pub decay_to_init: bool,
}

impl Default for AdamWConfig {
    /// The authors' settings (METHOD.md "Optimiser").
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
            weight_decay: 0.1,
            clip: 1.0,
            warmup_fraction: 0.01,
            decay_to_init: false,
        }
    }
}

impl AdamWConfig {
    /// Learning rate at 0-based `step` of `total`: linear warm-up, then cosine to 0.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let warmup = ((self.warmup_fraction * total as f64).ceil() as usize).max(1);
        if step < warmup {
            return self.lr * (step + 1) as f64 / warmup as f64;
        }
        let span = total.saturating_sub(warmup).max(1) as f64;
        let progress = ((step - warmup) as f64 / span).min(1.0);
        self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// First and second moments of one parameter tensor.
#[derive(Debug, Clone)]
pub struct Moments<B: Backend, const D: usize> {
    pub m: Tensor<B, D>,
    pub v: Tensor<B, D>,
}

impl<B: Backend, const D: usize> Moments<B, D> {
    pub fn zeros_like(p: &Tensor<B, D>) -> Self {
        Self {
            m: p.zeros_like(),
            v: p.zeros_like(),
        }
    }
}

/// The optimiser: stateless apart from the moments the caller keeps beside each parameter.
#[derive(Debug, Clone, Copy)]
pub struct AdamW {
    pub config: AdamWConfig,
}

impl AdamW {
    /// Global L2 norm of a set of gradients, [1] on the device.
    pub fn grad_norm<B: Backend, const D: usize>(grads: &[Tensor<B, D>]) -> Tensor<B, 1> {
        let parts: Vec<Tensor<B, 1>> = grads
            .iter()
            .map(|g| g.clone().powi_scalar(2).sum())
            .collect();
        Tensor::cat(parts, 0).sum().sqrt()
    }

    /// One update of `params` (1-based `t` for bias correction) after clipping `grads` together;
    /// weight decay pulls towards `anchors` (the starting weights) when given, else towards 0.
    /// Returns the norm before clipping ([1], on the device: no sync).
    pub fn step<B: Backend, const D: usize>(
        &self,
        params: &mut [Tensor<B, D>],
        grads: &[Tensor<B, D>],
        moments: &mut [Moments<B, D>],
        anchors: Option<&[Tensor<B, D>]>,
        lr: f64,
        t: usize,
    ) -> Tensor<B, 1> {
        let c = &self.config;
        let norm = Self::grad_norm(grads);
        let over = norm.clone().greater_elem(c.clip);
        let scale = norm
            .ones_like()
            .mask_where(over, (norm.clone() + 1e-6).recip() * c.clip)
            .reshape([1; D]);
        let (bc1, bc2) = (1.0 - c.beta1.powi(t as i32), 1.0 - c.beta2.powi(t as i32));
        for (i, ((p, g), mom)) in params
            .iter_mut()
            .zip(grads)
            .zip(moments.iter_mut())
            .enumerate()
        {
            let g = g.clone() * scale.clone();
            mom.m = mom.m.clone() * c.beta1 + g.clone() * (1.0 - c.beta1);
            mom.v = mom.v.clone() * c.beta2 + g.powi_scalar(2) * (1.0 - c.beta2);
            let update = (mom.m.clone() / bc1) / ((mom.v.clone() / bc2).sqrt() + c.eps);
            let decayed = match anchors {
                Some(a) => p.clone() - (p.clone() - a[i].clone()) * (lr * c.weight_decay),
                None => p.clone() * (1.0 - lr * c.weight_decay),
            };
            *p = decayed - update * lr;
        }
        norm
    }
}
