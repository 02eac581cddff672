//! Shared test fixtures: a tiny config and SYNTHETIC random weights (never a real model).

use crate::config::LlamaConfig;
pub use crate::synthetic::{random_vec, SyntheticWeights};

pub type TestBackend = burn_ndarray::NdArray<f32>;

/// 2 layers, 6 query heads over 2 KV heads (G = 3), head_dim 8: awkward on purpose.
pub fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 50,
        hidden_size: 24,
        intermediate_size: 40,
        num_hidden_layers: 2,
        num_attention_heads: 6,
        num_key_value_heads: 2,
        head_dim: 8,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: None,
        max_position_embeddings: 64,
        tie_word_embeddings: true,
        attention_bias: false,
    }
}
