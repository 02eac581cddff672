//! One decoder layer: h = x + attention(norm(x)); out = h + mlp(norm(h)).

use burn::tensor::{backend::Backend, Tensor};

use crate::attention::{Attention, Step};
use crate::backend::LlamaBackend;
use crate::cache::LayerCache;
use crate::layers::RmsNorm;
use crate::mlp::Mlp;
use crate::rope::Rope;

#[derive(Debug, Clone)]
pub struct Block<B: Backend> {
    pub attention_norm: RmsNorm<B>,
    pub attention: Attention<B>,
    pub mlp_norm: RmsNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: LlamaBackend> Block<B> {
    /// x: [batch, len, hidden] → [batch, len, hidden]
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        step: &Step<B>,
        layer: usize,
        cache: &mut LayerCache<B>,
    ) -> Tensor<B, 3> {
        let h = x.clone()
            + self
                .attention
                .forward(self.attention_norm.forward(x), rope, step, layer, cache);
        h.clone() + self.mlp.forward(self.mlp_norm.forward(h))
    }
}
