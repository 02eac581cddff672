//! CLI errors: one line each, ending with the fix where there is one.

use spotlight_llama::LlamaError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Model(#[from] LlamaError),
    #[error(transparent)]
    Train(#[from] spotlight_train::TrainError),
    #[error("{0}")]
    Backend(String),
    #[error("{0}")]
    Asset(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Usage(String),
}

pub type Result<T> = std::result::Result<T, CliError>;
