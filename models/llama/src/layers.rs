//! The two small layers every block uses: a linear projection and RMSNorm.

use burn::tensor::{backend::Backend, Tensor};

use crate::backend::{projection, LlamaBackend};

/// y = x·Wᵀ (+ b), W stored as in the checkpoint, [out, in].
#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    /// [out, in]
    pub weight: Tensor<B, 2>,
    /// [out]
    pub bias: Option<Tensor<B, 1>>,
}

impl<B: LlamaBackend> Linear<B> {
    /// # Shapes
    /// x: [batch, len, in] → [batch, len, out]
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, len, d_in] = x.dims();
        let d_out = self.weight.dims()[0];
        let y = projection(x.reshape([batch * len, d_in]), self.weight.clone());
        let y = match &self.bias {
            Some(b) => y + b.clone().unsqueeze_dim(0),
            None => y,
        };
        y.reshape([batch, len, d_out])
    }
}

/// y = x / sqrt(mean(x²) + eps) · γ over the last dimension.
#[derive(Debug, Clone)]
pub struct RmsNorm<B: Backend> {
    /// [d]
    pub gamma: Tensor<B, 1>,
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let rms = (x.clone().powi_scalar(2).mean_dim(D - 1) + self.eps).sqrt();
        (x / rms) * self.gamma.clone().unsqueeze()
    }
}
