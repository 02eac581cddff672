//! Every kernel against its plain-Rust reference, on fresh inputs from fixed seeds at awkward
//! sizes; outputs are poisoned before each run so unwritten elements fail. Each check is written
//! once over `R: Runtime` and runs twice: `wgpu::` on wgpu (lavapipe in CI) and `cuda::` on CUDA
//! with SPOTLIGHT_CUDA_TESTS=1 (`scripts/gpu/decode.sh` runs this binary on the H200; elsewhere the
//! CUDA tests say they were skipped). A failing case prints its seed; SPOTLIGHT_SEED=<seed> reruns
//! it with another.

#[path = "../common/mod.rs"]
mod common;

mod attend;
mod bradley_terry;
mod hash;
mod linear;
mod rows;
mod select;
mod top_keys;

/// What every op's checks use (each file its own subset).
#[allow(unused_imports)]
mod prelude {
    pub use crate::common::{assert_close, normal, rng};
    pub(crate) use crate::{to_f64, POISON};
    pub use cubecl::prelude::*;
    pub use rand::rngs::StdRng;
    pub use rand::Rng;
    pub use spotlight_kernels::attend::{attend, KvLayout, QueryRow, QueryRows};
    pub use spotlight_kernels::device::{
        filled_f32, filled_u32, read_f32, read_u32, upload_f32, upload_u32,
    };
    pub use spotlight_kernels::hash_pack::{hash_pack, DeviceHashWeights};
    pub use spotlight_kernels::reference::{self, HashWeights};
    pub use spotlight_kernels::select::{Selection, Selector};
    pub use spotlight_kernels::{AttendShape, Budget, CodeShape, SequencePlan};
}

pub(crate) const POISON: u32 = 0xDEAD_BEEF;

pub(crate) fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// One `#[test]` per check and runtime (checks of the references alone are plain tests).
macro_rules! on_every_runtime {
    ($($op:ident :: $check:ident),* $(,)?) => {
        mod wgpu {
            use cubecl::prelude::*;
            use cubecl::wgpu::{WgpuDevice, WgpuRuntime};

            fn client() -> ComputeClient<WgpuRuntime> {
                WgpuRuntime::client(&WgpuDevice::default())
            }

            $(
                #[test]
                fn $check() {
                    super::$op::$check::<WgpuRuntime>(&client());
                }
            )*
        }

        mod cuda {
            use cubecl::cuda::{CudaDevice, CudaRuntime};
            use cubecl::prelude::*;

            fn client() -> Option<ComputeClient<CudaRuntime>> {
                if std::env::var("SPOTLIGHT_CUDA_TESTS").is_ok_and(|v| v == "1") {
                    Some(CudaRuntime::client(&CudaDevice::default()))
                } else {
                    eprintln!("skipped: set SPOTLIGHT_CUDA_TESTS=1 on a machine with an NVIDIA GPU");
                    None
                }
            }

            $(
                #[test]
                fn $check() {
                    if let Some(client) = client() {
                        super::$op::$check::<CudaRuntime>(&client);
                    }
                }
            )*
        }
    };
}

on_every_runtime! {
    hash::hash_pack_matches_reference,
    hash::hash_pack_placed_writes_each_rows_codes_at_its_place_only,
    hash::hash_soft_and_backward_match_reference,
    select::select_matches_reference,
    select::select_handles_ties_and_budgets_beyond_the_sequence,
    select::bad_shapes_are_errors_not_panics,
    attend::attend_matches_reference,
    attend::causal_prefill_is_dense_attention_per_position,
    attend::flash_prefill_matches_reference_per_row,
    linear::linear_matches_reference,
    linear::linear_epilogues_match_reference,
    linear::linear_tilings_match_reference,
    linear::linear_with_rms_norm_prologue_matches_norm_then_linear,
    top_keys::top_keys_match_reference,
    rows::copy_moves_every_word,
    rows::rope_append_rotates_q_and_writes_k_v_at_each_rows_place,
    rows::embed_gathers_rows_and_rejects_ids_outside_the_vocabulary,
    bradley_terry::bradley_terry_matches_reference,
}
