//! Training and hash-file errors: one line each.

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("hash file {path}: {why}")]
    HashFile { path: String, why: String },
    #[error("hash weights do not match the model: {0}")]
    Mismatch(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] spotlight_llama::LlamaError),
    #[error(transparent)]
    Kernel(#[from] spotlight_kernels::KernelError),
}
