//! Errors for shapes and arguments a caller got wrong: one line each, never a panic.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KernelError {
    #[error("head_dim {0} is not supported (must be a multiple of 32, at most 256)")]
    HeadDim(usize),
    #[error("{q_heads} query heads cannot be split into {sets} code sets of equal size")]
    Groups { q_heads: usize, sets: usize },
    #[error("{nets} hash networks cannot be split into {replicas} per head")]
    Replicas { nets: usize, replicas: usize },
    #[error("{sets} code sets cannot map onto {kv_heads} KV heads")]
    SetsVsKvHeads { sets: usize, kv_heads: usize },
    #[error("group of {0} query heads per code set is too large (at most 8 for attention)")]
    GroupTooLarge(usize),
    #[error("{what}: expected {expected} elements, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("sequence {seq} has {len} tokens, more than the cache capacity {cap}")]
    OverCapacity { seq: usize, len: usize, cap: usize },
    #[error("histogram of {0} bins per set does not fit in shared memory (reduce sets or bits)")]
    TooManyBins(usize),
    #[error(
        "a kernel needs {needed} bytes of shared memory per cube, this device offers {available}"
    )]
    SharedMemory { needed: usize, available: usize },
    #[error("plane (warp) size {plane} does not divide head_dim {d} (or varies on this device)")]
    PlaneSize { plane: usize, d: usize },
    #[error("budget fraction {0} is outside [0, 1]")]
    Fraction(f64),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("top-{k} of rows of {n} values needs 1 ≤ k ≤ n and at least one query position")]
    TopK { k: usize, n: usize },
}
