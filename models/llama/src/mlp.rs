//! SwiGLU feed-forward: down(SiLU(gate(x)) ⊙ up(x)).

use burn::tensor::{activation::silu, backend::Backend, Tensor};

use crate::backend::LlamaBackend;
use crate::layers::Linear;

#[derive(Debug, Clone)]
pub struct Mlp<B: Backend> {
    pub gate: Linear<B>,
    pub up: Linear<B>,
    pub down: Linear<B>,
}

impl<B: LlamaBackend> Mlp<B> {
    /// x: [batch, len, hidden] → [batch, len, hidden]
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.down
            .forward(silu(self.gate.forward(x.clone())) * self.up.forward(x))
    }
}
