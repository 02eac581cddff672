//! Spotlight's decode-side retrieval kernels, written once in CubeCL, each with a plain-Rust
//! reference that is both the test oracle and the cpu implementation.
//!
//! The pipeline for one decoder layer and one decode step (METHOD.md, "Decoding"):
//! 1. [`hash_pack`]: the per-head residual MLP over the new query (and, at cache insert, keys),
//!    then sign and pack into `u32` words.
//! 2. [`select`]: XOR+popcount score of every cached key code against the query codes of its
//!    group, a histogram over the small integer scores, a threshold, and an ordered compaction
//!    into index lists (sink + top-k of the middle + window).
//! 3. [`attend`]: split-K decode attention over the selected rows (or over all rows: the dense
//!    baseline, and causal prefill).
//!
//! Training ([`hash_train`], [`bradley_terry`], [`top_keys`]): the same hash kernel with a
//! softsign epilogue, its backward, and the Bradley–Terry loss's forward and backward, which the
//! training crate registers as Burn autodiff ops.
//!
//! Layouts (all row-major, innermost last):
//! - query vectors `[rows][q_heads][d]` f32; key codes per sequence `[cap][sets][words]`;
//! - K and V `[batch][kv_heads][cap][d]` (f32, f16 or bf16), as in the model's KV cache;
//! - a *set* is one key-code set: `sets == kv_heads` in the group layout (one code per KV head,
//!   scores summed over its `G = q_heads / sets` query heads), `sets == q_heads` in the authors'
//!   faithful layout (one code per query head, `G = 1`).
//!
//! Unchecked launches: kernels are launched without CubeCL's per-access bounds checks, which cost
//! a compare and select on every load and store in the hot loops. Each host function checks the
//! shapes it is given and every index a kernel forms stays within the lengths passed; the tests
//! compare against the references at awkward sizes (N = 0, 1, non-multiples of every tile).

pub mod attend;
pub mod bradley_terry;
pub mod budget;
pub mod copy;
pub mod device;
pub mod embed;
pub mod error;
pub mod fill;
pub mod hash_pack;
pub mod hash_train;
pub mod linear;
pub mod linear_mma;
pub mod prefill;
pub mod reference;
pub mod rope_append;
pub mod select;
pub mod shape;
pub mod top_keys;

pub use budget::{Budget, SequencePlan};
pub use error::KernelError;
pub use shape::{AttendShape, CodeShape};
