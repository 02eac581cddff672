//! Decode linear: y = x · Wᵀ for a few rows (m ≤ 16), W `[n][k]` in bf16, f16 or f32, f32
//! accumulation. At decode the weights dominate the bytes, so the kernel is built to stream W
//! once at full bandwidth: one plane per output column, 16-byte weight loads, several in flight
//! per lane, a plane sum at the end. (Issue 6 starts here; not yet used by the model.)

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::arg;
use crate::KernelError;

/// Output columns (planes) per cube.
const PLANES: usize = 8;
/// Weight vectors each lane loads before using any of them.
const IN_FLIGHT: usize = 4;
/// Rows handled in one launch at most.
pub const MAX_ROWS: usize = 16;

#[cube(launch_unchecked)]
fn linear_kernel<F: Float, N: Size>(
    x: &Array<Vector<f32, Const<4>>>,
    w: &Array<Vector<F, N>>,
    y: &mut Array<f32>,
    cols: u32,
    #[comptime] m: usize,
    #[comptime] k: usize,
    #[comptime] vec: usize,
    #[comptime] plane: usize,
) {
    let lane = UNIT_POS as usize % plane;
    let col = CUBE_POS_X as usize * PLANES + UNIT_POS as usize / plane;
    let chunks = comptime!(k / vec);
    let steps = comptime!(chunks.div_ceil(plane * IN_FLIGHT));
    // The whole plane shares `col`, so this branch is uniform and the plane sum below is safe.
    if col < cols as usize {
        let mut acc = Array::<f32>::new(m);
        #[unroll]
        for r in 0..m {
            acc[r] = 0.0;
        }
        for step in 0..steps {
            let mut wv = Array::<Vector<F, N>>::new(IN_FLIGHT);
            #[unroll]
            for f in 0..IN_FLIGHT {
                let c = (step * IN_FLIGHT + f) * plane + lane;
                if c < chunks {
                    wv[f] = w[col * chunks + c];
                }
            }
            #[unroll]
            for f in 0..IN_FLIGHT {
                let c = (step * IN_FLIGHT + f) * plane + lane;
                if c < chunks {
                    let wf = wv[f];
                    #[unroll]
                    for r in 0..m {
                        #[unroll]
                        for x4 in 0..comptime!(vec / 4) {
                            let xv = x[(r * k + c * vec) / 4 + x4];
                            #[unroll]
                            for e in 0..4usize {
                                acc[r] += xv[e] * f32::cast_from(wf[x4 * 4 + e]);
                            }
                        }
                    }
                }
            }
        }
        #[unroll]
        for r in 0..m {
            let total = plane_sum(acc[r]);
            if lane == 0 {
                y[r * cols as usize + col] = total;
            }
        }
    }
}

/// y `[m][n]` (f32) = x `[m][k]` (f32) · Wᵀ, W `[n][k]` of element type `F`.
pub fn linear<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    x: &Handle,
    w: &Handle,
    y: &Handle,
    m: usize,
    k: usize,
    n: usize,
) -> Result<(), KernelError> {
    let vec = 16 / core::mem::size_of::<F>();
    if m == 0 || m > MAX_ROWS {
        return Err(KernelError::Length {
            what: "linear rows (1..=16)",
            expected: MAX_ROWS,
            got: m,
        });
    }
    if !k.is_multiple_of(vec) {
        return Err(KernelError::Length {
            what: "linear input size (multiple of 16 bytes)",
            expected: vec,
            got: k,
        });
    }
    let props = &client.properties().hardware;
    let plane = props.plane_size_max as usize;
    if plane == 0 || props.plane_size_min != props.plane_size_max {
        return Err(KernelError::PlaneSize { plane, d: k });
    }
    if n == 0 {
        return Ok(());
    }
    // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
    unsafe {
        linear_kernel::launch_unchecked::<F, R>(
            client,
            CubeCount::Static(n.div_ceil(PLANES) as u32, 1, 1),
            CubeDim::new_1d((plane * PLANES) as u32),
            vec,
            arg(x, m * k / 4),
            arg(w, n * k / vec),
            arg(y, m * n),
            n as u32,
            m,
            k,
            vec,
            plane,
        )
    };
    Ok(())
}
