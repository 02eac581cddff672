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

/// Planes per cube.
const PLANES: usize = 8;

/// How a plane covers W: `cols` output columns per plane (each x load serves them all) and
/// `in_flight` 16-byte weight loads per column issued before any is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tiling {
    pub cols: usize,
    pub in_flight: usize,
}

impl Tiling {
    /// The default for `m` rows: one column and deep prefetch for one row (all bandwidth);
    /// more columns per plane as rows grow (x traffic from L1 then dominates).
    pub fn for_rows(m: usize) -> Self {
        match m {
            1 => Self {
                cols: 1,
                in_flight: 4,
            },
            2..=4 => Self {
                cols: 2,
                in_flight: 2,
            },
            _ => Self {
                cols: 4,
                in_flight: 1,
            },
        }
    }
}
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

/// Adds the dot products of rows `col0..col0 + cols_per_plane` of W with each of the `m` rows of
/// x into `acc` (`[m][cols_per_plane]`), one lane's share of k. Each x vector loaded serves every
/// column of the plane: with several rows, x (read from L1) rather than W would otherwise bound
/// the kernel.
#[cube]
#[allow(clippy::too_many_arguments)]
fn dot_cols<F: Float, N: Size>(
    x: &Array<Vector<f32, Const<4>>>,
    w: &Array<Vector<F, N>>,
    acc: &mut Array<f32>,
    col0: usize,
    cols: usize,
    lane: usize,
    x0: usize,
    #[comptime] m: usize,
    #[comptime] k: usize,
    #[comptime] vec: usize,
    #[comptime] plane: usize,
    #[comptime] tiling: Tiling,
) {
    let cpp = comptime!(tiling.cols);
    let in_flight = comptime!(tiling.in_flight);
    let chunks = comptime!(k / vec);
    let steps = comptime!(chunks.div_ceil(plane * in_flight));
    for step in 0..steps {
        // Issue every load of the step before using any (they are in flight together).
        let mut wv = Array::<Vector<F, N>>::new(comptime!(cpp * in_flight));
        #[unroll]
        for f in 0..in_flight {
            let c = (step * in_flight + f) * plane + lane;
            #[unroll]
            for j in 0..cpp {
                if c < chunks && col0 + j < cols {
                    wv[f * cpp + j] = w[(col0 + j) * chunks + c];
                }
            }
        }
        #[unroll]
        for f in 0..in_flight {
            let c = (step * in_flight + f) * plane + lane;
            if c < chunks {
                // Widen once; every row reuses the f32 values.
                let mut wf = Array::<f32>::new(comptime!(cpp * vec));
                #[unroll]
                for j in 0..cpp {
                    let v = wv[f * cpp + j];
                    #[unroll]
                    for e in 0..vec {
                        wf[j * vec + e] = f32::cast_from(v[e]);
                    }
                }
                #[unroll]
                for r in 0..m {
                    #[unroll]
                    for x4 in 0..comptime!(vec / 4) {
                        let xv = x[x0 + (r * k + c * vec) / 4 + x4];
                        #[unroll]
                        for j in 0..cpp {
                            #[unroll]
                            for e in 0..4usize {
                                acc[r * cpp + j] += xv[e] * wf[j * vec + x4 * 4 + e];
                            }
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
    #[comptime] tiling: Tiling,
    #[comptime] epilogue: u32,
) {
    let cpp = comptime!(tiling.cols);
    let lane = UNIT_POS as usize % plane;
    let col0 = (CUBE_POS_X as usize * PLANES + UNIT_POS as usize / plane) * cpp;
    let cols = cols as usize;
    let x0 = row0 as usize * comptime!(k / 4);
    // The whole plane shares its columns, so these branches are uniform and the plane sums safe.
    if col0 < cols {
        let mut acc = Array::<f32>::new(comptime!(m * cpp));
        let mut acc_up = Array::<f32>::new(comptime!(m * cpp));
        #[unroll]
        for i in 0..comptime!(m * cpp) {
            acc[i] = 0.0;
            acc_up[i] = 0.0;
        }
        dot_cols::<F, N>(
            x, w, &mut acc, col0, cols, lane, x0, m, k, vec, plane, tiling,
        );
        if comptime!(epilogue == SWIGLU) {
            dot_cols::<F, N>(
                x,
                up,
                &mut acc_up,
                col0,
                cols,
                lane,
                x0,
                m,
                k,
                vec,
                plane,
                tiling,
            );
        }
        #[unroll]
        for j in 0..cpp {
            if col0 + j < cols {
                #[unroll]
                for r in 0..m {
                    let total = plane_sum(acc[r * cpp + j]);
                    let mut total_up = 0.0f32;
                    if comptime!(epilogue == SWIGLU) {
                        total_up = plane_sum(acc_up[r * cpp + j]);
                    }
                    if lane == 0 {
                        let at = (row0 as usize + r) * cols + col0 + j;
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
    linear_with::<R, F>(
        client,
        x,
        w,
        Epilogue::Store,
        y,
        m,
        k,
        n,
        Tiling::for_rows(m),
    )
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
        let tiling = Tiling::for_rows(rows);
        launch::<R, F>(client, x, w, epilogue, y, (row0, rows, m), k, n, tiling)?;
        row0 += rows;
    }
    Ok(())
}

/// [`linear`] with a chosen epilogue and tiling (benchmarks sweep it); at most [`MAX_ROWS`] rows.
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
    tiling: Tiling,
) -> Result<(), KernelError> {
    if m == 0 || m > MAX_ROWS {
        return Err(KernelError::Length {
            what: "linear rows (1..=16)",
            expected: MAX_ROWS,
            got: m,
        });
    }
    launch::<R, F>(client, x, w, epilogue, y, (0, m, m), k, n, tiling)
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
    tiling: Tiling,
) -> Result<(), KernelError> {
    let vec = 16 / core::mem::size_of::<F>();
    if !k.is_multiple_of(vec) {
        return Err(KernelError::Length {
            what: "linear input size (multiple of 16 bytes)",
            expected: vec,
            got: k,
        });
    }
    for (what, v) in [
        ("linear columns per plane (1..=8)", tiling.cols),
        ("linear loads in flight (1..=8)", tiling.in_flight),
    ] {
        if !(1..=8).contains(&v) {
            return Err(KernelError::Length {
                what,
                expected: 8,
                got: v,
            });
        }
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
            CubeCount::Static(n.div_ceil(PLANES * tiling.cols) as u32, 1, 1),
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
            tiling,
            code,
        )
    };
    Ok(())
}
