//! Plain-Rust references: the oracle every kernel is tested against, and the cpu implementation.
//! Written for clarity, not speed; the algorithms deliberately differ from the kernels' (full sorts
//! instead of histograms, one row at a time instead of split-K) so that agreement means something.

pub mod attend;
pub mod bradley_terry;
pub mod hash_pack;
pub mod hash_train;
pub mod linear;
pub mod rms_norm;
pub mod rope;
pub mod select;
pub mod top_keys;

pub use attend::attend;
pub use hash_pack::{hash_pack, pack_signs, HashWeights};
pub use hash_train::{hash_soft, hash_soft_backward, HashRowGrads, MlpParams};
pub use linear::linear;
pub use rms_norm::rms_norm;
pub use rope::rotate_half;
pub use select::{scores, select};
pub use top_keys::top_keys;
