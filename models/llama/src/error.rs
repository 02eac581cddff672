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
    #[error(
        "K/V cache needs {:.2} GiB ({needed} bytes), the GPU has {:.2} GiB ({free} bytes) free: \
         ask for fewer tokens or sequences",
        *needed as f64 / GIB,
        *free as f64 / GIB
    )]
    OutOfMemory { needed: u64, free: u64 },
    #[error("a K/V cache for {batch} sequences of {capacity} tokens does not fit in memory")]
    CacheTooLarge { batch: usize, capacity: usize },
    #[error("tensor {name} holds {value} at index {index}: the checkpoint is damaged")]
    DamagedTensor {
        name: String,
        index: usize,
        value: f32,
    },
    #[error("checkpoint has {count} tensors this architecture does not use, e.g. {example}")]
    UnusedTensors { count: usize, example: String },
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfVocabulary { token: u32, vocab: usize },
    /// Too few tokens for the request (what it needs, in words).
    #[error("{0}")]
    TooFewTokens(&'static str),
    #[error("batch of {given} sequences given to a cache of {cache}")]
    BatchSize { given: usize, cache: usize },
    /// The device or the backend failed (its own message).
    #[error("device: {0}")]
    Device(String),
    #[error("tensor parallelism: {0}")]
    TensorParallel(String),
    /// A call the API does not allow (wrong lengths, rows or sequences for this decoder).
    #[error("{0}")]
    Invalid(String),
    #[error("decode kernels: {0}")]
    Kernel(#[from] spotlight_kernels::KernelError),
    #[error("CUDA graphs: {0}")]
    Graph(#[from] crate::fast::GraphError),
}

pub type Result<T> = std::result::Result<T, LlamaError>;

const GIB: f64 = (1u64 << 30) as f64;
