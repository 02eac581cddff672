//! Llama-family language models in Burn (Llama 2/3, Mistral, Qwen2/2.5, SmolLM2).
//!
//! Data flow: tokens → embedding → blocks (RMSNorm → GQA attention with RoPE over the KV cache →
//! RMSNorm → SwiGLU) → final norm → LM head → sampling.

pub mod attention;
pub mod backend;
pub mod block;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod fast;
pub mod fingerprint;
pub mod generate;
pub mod gguf;
pub mod layers;
pub mod load;
pub mod mlp;
pub mod model;
pub mod names;
pub mod perplexity;
pub mod rope;
pub mod sampling;
pub mod selector;
pub mod synthetic;
pub mod tensor_parallel;
#[cfg(test)]
mod test_util;
pub mod tokenizer;

pub use backend::LlamaBackend;
pub use checkpoint::Checkpoint;
pub use config::LlamaConfig;
pub use error::LlamaError;
pub use generate::{generate, GenerateConfig, GenerateStats};
pub use model::{LayerQk, Llama};
pub use sampling::Sampling;
pub use selector::{KeySelector, SelectRows, Selection};
pub use tokenizer::{ChatTemplate, Tokenizer};
#[cfg(test)]
mod load_tests;
#[cfg(test)]
mod model_tests;
