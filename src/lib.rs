//! Spotlight: Llama-family language models in Burn, with learned-hash sparse attention for fast
//! long-context decoding. This facade re-exports the workspace crates.

pub use spotlight_cli as cli;
pub use spotlight_kernels as kernels;
pub use spotlight_llama as llama;
pub use spotlight_train as train;
