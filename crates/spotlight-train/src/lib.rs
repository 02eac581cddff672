//! Training the Spotlight hash (METHOD.md "Training: Bradley–Terry ranking loss, layer-wise").
//!
//! Data flow of one step: a text window → the frozen dense model → every layer's post-RoPE q, k →
//! [`targets`] (sampled queries, their true top keys and sampled other keys) → [`HashMlp`] soft codes
//! → [`bradley_terry`] loss → Burn autodiff → [`AdamW`] on each layer's own parameters.
//! The result is a [`HashFile`]: the weights the decode kernels (`spotlight_kernels::hash_pack`) use.

pub mod adamw;
pub mod aligned_alloc;
pub mod bradley_terry;
pub mod data;
pub mod error;
pub mod hash_file;
pub mod hash_merge;
pub mod hash_mlp;
pub mod heldout;
pub mod kernel_selector;
pub mod layout;
pub mod linear_hash;
pub mod quality;
pub mod run;
pub mod selector;
pub mod targets;
pub mod tensor_file;
pub mod train_ops;
pub mod trainer;

pub use adamw::{AdamW, AdamWConfig};
pub use aligned_alloc::Aligned64;
pub use error::TrainError;
pub use hash_file::{HashFile, HashHeader, LayerHash};
pub use hash_mlp::HashMlp;
pub use layout::Layout;
pub use train_ops::TrainBackend;
pub use trainer::{HashInit, TrainConfig, TrainOps, Trainer};
