//! Decode linear: y = x · Wᵀ for a few rows, W `[n][k]` in bf16, f16 or f32, f32 accumulation,
//! with an optional epilogue so a decoder layer needs no separate add or activation launch:
//! - `Store`: y = x·Wᵀ;
//! - `Accumulate`: y += x·Wᵀ (the residual add after the attention output and down projections);
//! - `SwiGlu`: y = silu(x·W_gateᵀ) ⊙ (x·W_upᵀ) (gate and up read by the same plane).
//!
//! At decode the weights dominate the bytes, so the kernel is built to stream W once at full
//! bandwidth: one plane per output column, 16-byte weight loads, several in flight per lane, a
//! plane sum at the end. Rows beyond [`MAX_ROWS`] run as further launches over the same weights.

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

/// What the kernel does with each finished dot product.
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'a> {
    Store,
    Accumulate,
    /// `w` is the gate projection; this is the up projection, same shape.
    SwiGlu {
        up: &'a Handle,
    },
}

const STORE: u32 = 0;
const ACCUMULATE: u32 = 1;
const SWIGLU: u32 = 2;

/// Adds row `col` of W (dotted with each of the `m` rows of x) into `acc`, one lane's share.
#[cube]
#[allow(clippy::too_many_arguments)]
fn dot_rows<F: Float, N: Size>(
    x: &Array<Vector<f32, Const<4>>>,
    w: &Array<Vector<F, N>>,
    acc: &mut Array<f32>,
    col: usize,
    lane: usize,
    x0: usize,
    #[comptime] m: usize,
    #[comptime] k: usize,
    #[comptime] vec: usize,
    #[comptime] plane: usize,
    #[comptime] in_flight: usize,
) {
    let chunks = comptime!(k / vec);
    let steps = comptime!(chunks.div_ceil(plane * in_flight));
    for step in 0..steps {
        let mut wv = Array::<Vector<F, N>>::new(in_flight);
        #[unroll]
        for f in 0..in_flight {
            let c = (step * in_flight + f) * plane + lane;
            if c < chunks {
                wv[f] = w[col * chunks + c];
            }
        }
        #[unroll]
        for f in 0..in_flight {
            let c = (step * in_flight + f) * plane + lane;
            if c < chunks {
                let wf = wv[f];
                #[unroll]
                for r in 0..m {
                    #[unroll]
                    for x4 in 0..comptime!(vec / 4) {
                        let xv = x[x0 + (r * k + c * vec) / 4 + x4];
                        #[unroll]
                        for e in 0..4usize {
                            acc[r] += xv[e] * f32::cast_from(wf[x4 * 4 + e]);
                        }
                    }
                }
            }
        }
    }
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn linear_kernel<F: Float, N: Size>(
    x: &Array<Vector<f32, Const<4>>>,
    w: &Array<Vector<F, N>>,
    up: &Array<Vector<F, N>>,
    y: &mut Array<f32>,
    cols: u32,
    row0: u32,
    #[comptime] m: usize,
    #[comptime] k: usize,
    #[comptime] vec: usize,
    #[comptime] plane: usize,
    #[comptime] in_flight: usize,
    #[comptime] epilogue: u32,
) {
    let lane = UNIT_POS as usize % plane;
    let col = CUBE_POS_X as usize * PLANES + UNIT_POS as usize / plane;
    let x0 = row0 as usize * comptime!(k / 4);
    // The whole plane shares `col`, so this branch is uniform and the plane sums below are safe.
    if col < cols as usize {
        let mut acc = Array::<f32>::new(m);
        let mut acc_up = Array::<f32>::new(m);
        #[unroll]
        for r in 0..m {
            acc[r] = 0.0;
            acc_up[r] = 0.0;
        }
        dot_rows::<F, N>(x, w, &mut acc, col, lane, x0, m, k, vec, plane, in_flight);
        if comptime!(epilogue == SWIGLU) {
            dot_rows::<F, N>(
                x,
                up,
                &mut acc_up,
                col,
                lane,
                x0,
                m,
                k,
                vec,
                plane,
                in_flight,
            );
        }
        #[unroll]
        for r in 0..m {
            let total = plane_sum(acc[r]);
            let mut total_up = 0.0f32;
            if comptime!(epilogue == SWIGLU) {
                total_up = plane_sum(acc_up[r]);
            }
            if lane == 0 {
                let at = (row0 as usize + r) * cols as usize + col;
                if comptime!(epilogue == STORE) {
                    y[at] = total;
                } else if comptime!(epilogue == ACCUMULATE) {
                    y[at] += total;
                } else {
                    // silu(g)·u = g·u / (1 + e^(−g))
                    y[at] = total * total_up / (1.0 + f32::exp(-total));
                }
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
    linear_with::<R, F>(client, x, w, Epilogue::Store, y, m, k, n, IN_FLIGHT)
}

/// [`linear`] with an epilogue; `m` may exceed [`MAX_ROWS`] (one launch per 16 rows).
#[allow(clippy::too_many_arguments)]
pub fn linear_epilogue<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    x: &Handle,
    w: &Handle,
    epilogue: Epilogue,
    y: &Handle,
    m: usize,
    k: usize,
    n: usize,
) -> Result<(), KernelError> {
    let mut row0 = 0;
    while row0 < m {
        let rows = (m - row0).min(MAX_ROWS);
        launch::<R, F>(client, x, w, epilogue, y, (row0, rows, m), k, n, IN_FLIGHT)?;
        row0 += rows;
    }
    Ok(())
}

/// [`linear`] with a chosen epilogue and number of weight loads in flight per lane (benchmarks
/// sweep it); at most [`MAX_ROWS`] rows.
#[allow(clippy::too_many_arguments)]
pub fn linear_with<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    x: &Handle,
    w: &Handle,
    epilogue: Epilogue,
    y: &Handle,
    m: usize,
    k: usize,
    n: usize,
    in_flight: usize,
) -> Result<(), KernelError> {
    if m == 0 || m > MAX_ROWS {
        return Err(KernelError::Length {
            what: "linear rows (1..=16)",
            expected: MAX_ROWS,
            got: m,
        });
    }
    launch::<R, F>(client, x, w, epilogue, y, (0, m, m), k, n, in_flight)
}

/// One launch for rows `row0..row0 + rows` of `total`.
#[allow(clippy::too_many_arguments)]
fn launch<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    x: &Handle,
    w: &Handle,
    epilogue: Epilogue,
    y: &Handle,
    (row0, rows, total): (usize, usize, usize),
    k: usize,
    n: usize,
    in_flight: usize,
) -> Result<(), KernelError> {
    let vec = 16 / core::mem::size_of::<F>();
    if !k.is_multiple_of(vec) {
        return Err(KernelError::Length {
            what: "linear input size (multiple of 16 bytes)",
            expected: vec,
            got: k,
        });
    }
    if !(1..=16).contains(&in_flight) {
        return Err(KernelError::Length {
            what: "linear loads in flight (1..=16)",
            expected: IN_FLIGHT,
            got: in_flight,
        });
    }
    let props = &client.properties().hardware;
    let plane = props.plane_size_max as usize;
    if plane == 0 || props.plane_size_min != props.plane_size_max {
        return Err(KernelError::PlaneSize { plane, d: k });
    }
    if n == 0 || rows == 0 {
        return Ok(());
    }
    let (up, code) = match epilogue {
        Epilogue::Store => (w, STORE),
        Epilogue::Accumulate => (w, ACCUMULATE),
        Epilogue::SwiGlu { up } => (up, SWIGLU),
    };
    // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
    unsafe {
        linear_kernel::launch_unchecked::<F, R>(
            client,
            CubeCount::Static(n.div_ceil(PLANES) as u32, 1, 1),
            CubeDim::new_1d((plane * PLANES) as u32),
            vec,
            arg(x, total * k / 4),
            arg(w, n * k / vec),
            arg(up, n * k / vec),
            arg(y, total * n),
            n as u32,
            row0 as u32,
            rows,
            k,
            vec,
            plane,
            in_flight,
            code,
        )
    };
    Ok(())
}
