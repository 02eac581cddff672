//! One error type for the model crate: every message is one line and names what is wrong.

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    #[error("{0}")]
    Io(String),
    #[error("invalid GGUF: {0}")]
    Gguf(String),
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("tensor {0} is missing from the checkpoint")]
    MissingTensor(String),
    #[error("tensor {name}: expected shape {expected:?}, found {found:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(
        "prompt of {tokens} tokens plus {new} new tokens exceeds the context of {context} tokens"
    )]
    ContextOverflow {
        tokens: usize,
        new: usize,
        context: usize,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("decode kernels: {0}")]
    Kernel(#[from] spotlight_kernels::KernelError),
    #[error("CUDA graphs: {0}")]
    Graph(#[from] crate::fast::GraphError),
}

pub type Result<T> = std::result::Result<T, LlamaError>;
