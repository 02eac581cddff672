//! RMSNorm of a few rows: out = x / sqrt(mean(x²) + eps) ⊙ γ. One plane per row (decode has a
//! handful of rows of a few thousand values; the weights' linear that follows dominates).

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::arg;
use crate::KernelError;

#[cube(launch_unchecked)]
fn rms_norm_kernel(
    x: &Array<f32>,
    gamma: &Array<f32>,
    out: &mut Array<f32>,
    eps: f32,
    #[comptime] k: usize,
    #[comptime] plane: usize,
) {
    let base = CUBE_POS_X as usize * k;
    let lane = UNIT_POS as usize;
    let steps = comptime!(k.div_ceil(plane));
    let mut squares = 0.0f32;
    for s in 0..steps {
        let i = s * plane + lane;
        if i < k {
            let v = x[base + i];
            squares += v * v;
        }
    }
    let inv = 1.0f32 / f32::sqrt(plane_sum(squares) / k as f32 + eps);
    for s in 0..steps {
        let i = s * plane + lane;
        if i < k {
            out[base + i] = x[base + i] * inv * gamma[i];
        }
    }
}

/// out `[m][k]` = RMSNorm of x `[m][k]` with weights γ `[k]` (all f32).
pub fn rms_norm<R: Runtime>(
    client: &ComputeClient<R>,
    x: &Handle,
    gamma: &Handle,
    out: &Handle,
    m: usize,
    k: usize,
    eps: f32,
) -> Result<(), KernelError> {
    let plane = client.properties().hardware.plane_size_max as usize;
    if plane == 0 {
        return Err(KernelError::PlaneSize { plane, d: k });
    }
    if m == 0 || k == 0 {
        return Ok(());
    }
    // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
    unsafe {
        rms_norm_kernel::launch_unchecked::<R>(
            client,
            CubeCount::Static(m as u32, 1, 1),
            CubeDim::new_1d(plane as u32),
            arg(x, m * k),
            arg(gamma, k),
            arg(out, m * k),
            eps,
            k,
            plane,
        )
    };
    Ok(())
}
