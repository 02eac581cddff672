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
use crate::linear_mma::{self, MmaTiling};
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
    /// The default for `m` rows, from the H200 sweep (`spotlight bench linear`, Llama-3-8B
    /// shapes): one column and deep prefetch for one row (all bandwidth); more columns per plane
    /// as rows grow (x traffic from L1 then dominates).
    pub fn for_rows(m: usize) -> Self {
        match m {
            1 => Self {
                cols: 1,
                in_flight: 8,
            },
            2..=4 => Self {
                cols: 2,
                in_flight: 4,
            },
            _ => Self {
                cols: 4,
                in_flight: 2,
            },
        }
    }
}
/// Which kernel a launch runs: CUDA cores (any runtime, any weight type) or tensor cores (bf16
/// weights on CUDA, [`crate::linear_mma`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    Planes(Tiling),
    Mma(MmaTiling),
}

impl From<Tiling> for Kernel {
    fn from(t: Tiling) -> Self {
        Self::Planes(t)
    }
}

impl From<MmaTiling> for Kernel {
    fn from(t: MmaTiling) -> Self {
        Self::Mma(t)
    }
}

/// From this many rows on, bf16 weights go through the tensor cores where the runtime has them
/// (H200 sweep: below it the CUDA-core kernel streams W as fast, in f32).
pub const MMA_MIN_ROWS: usize = 2;

impl Kernel {
    /// The default kernel for `m` rows of x `[m][k]` times W `[n][k]` of type `F` on this
    /// runtime, with `epilogue`.
    pub fn for_shape<R: Runtime, F: Float + CubeElement>(
        client: &ComputeClient<R>,
        m: usize,
        (k, n): (usize, usize),
        epilogue: Epilogue,
    ) -> Self {
        let bf16 = half::bf16::as_type_native_unchecked().storage_type();
        if m >= MMA_MIN_ROWS
            && k.is_multiple_of(linear_mma::CHUNK)
            && F::as_type_native_unchecked().storage_type() == bf16
            && linear_mma::supported(client)
        {
            let paired = matches!(epilogue, Epilogue::SwiGlu { .. });
            Self::Mma(MmaTiling::for_columns(n, paired))
        } else {
            Self::Planes(Tiling::for_rows(m))
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

/// What the kernel does to x first.
#[derive(Debug, Clone, Copy)]
pub enum Prologue<'a> {
    None,
    /// x ← RMSNorm(x) with weights γ `[k]` (f32): the norm before a projection, fused. Each
    /// row's Σx² is gathered from the x values the dot products load anyway; γ multiplies x as
    /// it is loaded and 1/rms scales the finished sums.
    RmsNorm {
        gamma: &'a Handle,
        eps: f32,
    },
}

impl<'a> Epilogue<'a> {
    /// The kernel arguments: the up weights (`w` itself when unused) and the comptime code.
    pub(crate) fn args(self, w: &'a Handle) -> (&'a Handle, u32) {
        match self {
            Epilogue::Store => (w, STORE),
            Epilogue::Accumulate => (w, ACCUMULATE),
            Epilogue::SwiGlu { up } => (up, SWIGLU),
        }
    }
}

impl<'a> Prologue<'a> {
    /// The kernel arguments: γ (`x` itself when unused), ε and whether to normalise.
    pub(crate) fn args(self, x: &'a Handle) -> (&'a Handle, f32, bool) {
        match self {
            Prologue::None => (x, 0.0, false),
            Prologue::RmsNorm { gamma, eps } => (gamma, eps, true),
        }
    }
}

pub(crate) const STORE: u32 = 0;
pub(crate) const ACCUMULATE: u32 = 1;
pub(crate) const SWIGLU: u32 = 2;

/// Everything a launch fixes at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Layout {
    /// Rows of x in this launch.
    m: usize,
    /// Input size.
    k: usize,
    /// Weight elements per 16-byte load.
    vec: usize,
    plane: usize,
    tiling: Tiling,
    epilogue: u32,
    norm: bool,
}

/// Adds the dot products of rows `col0..col0 + tiling.cols` of W with each of the `m` rows of
/// x into `acc` (`[m][cols]`), one lane's share of k. Each x vector loaded serves every column of
/// the plane: with several rows, x (read from L1) rather than W would otherwise bound the
/// kernel. With `square`, also adds each row's Σx² (of the lane's share) into `squares`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn dot_cols<F: Float, N: Size>(
    x: &Array<Vector<f32, Const<4>>>,
    gamma: &Array<Vector<f32, Const<4>>>,
    w: &Array<Vector<F, N>>,
    acc: &mut Array<f32>,
    squares: &mut Array<f32>,
    col0: usize,
    cols: usize,
    lane: usize,
    x0: usize,
    #[comptime] l: Layout,
    #[comptime] square: bool,
) {
    let m = comptime!(l.m);
    let k = comptime!(l.k);
    let vec = comptime!(l.vec);
    let plane = comptime!(l.plane);
    let cpp = comptime!(l.tiling.cols);
    let in_flight = comptime!(l.tiling.in_flight);
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
                        let mut xv = x[x0 + (r * k + c * vec) / 4 + x4];
                        if comptime!(l.norm) {
                            if comptime!(square) {
                                squares[r] +=
                                    xv[0] * xv[0] + xv[1] * xv[1] + xv[2] * xv[2] + xv[3] * xv[3];
                            }
                            xv *= gamma[(c * vec) / 4 + x4];
                        }
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
    gamma: &Array<Vector<f32, Const<4>>>,
    w: &Array<Vector<F, N>>,
    up: &Array<Vector<F, N>>,
    y: &mut Array<f32>,
    cols: u32,
    row0: u32,
    eps: f32,
    #[comptime] l: Layout,
) {
    let m = comptime!(l.m);
    let k = comptime!(l.k);
    let plane = comptime!(l.plane);
    let cpp = comptime!(l.tiling.cols);
    let lane = UNIT_POS as usize % plane;
    let col0 = (CUBE_POS_X as usize * PLANES + UNIT_POS as usize / plane) * cpp;
    let cols = cols as usize;
    let x0 = row0 as usize * comptime!(k / 4);
    // The whole plane shares its columns, so these branches are uniform and the plane sums safe.
    if col0 < cols {
        let mut acc = Array::<f32>::new(comptime!(m * cpp));
        let mut acc_up = Array::<f32>::new(comptime!(m * cpp));
        let mut squares = Array::<f32>::new(m);
        #[unroll]
        for i in 0..comptime!(m * cpp) {
            acc[i] = 0.0;
            acc_up[i] = 0.0;
        }
        #[unroll]
        for r in 0..m {
            squares[r] = 0.0;
        }
        #[rustfmt::skip]
        dot_cols::<F, N>(x, gamma, w, &mut acc, &mut squares, col0, cols, lane, x0, l, true);
        if comptime!(l.epilogue == SWIGLU) {
            #[rustfmt::skip]
            dot_cols::<F, N>(x, gamma, up, &mut acc_up, &mut squares, col0, cols, lane, x0, l, false);
        }
        // Each chunk of k went to exactly one lane: the plane sum is the row's Σx².
        let mut scale = Array::<f32>::new(m);
        #[unroll]
        for r in 0..m {
            scale[r] = 1.0;
            if comptime!(l.norm) {
                scale[r] = 1.0 / f32::sqrt(plane_sum(squares[r]) / comptime!(k as f32) + eps);
            }
        }
        #[unroll]
        for j in 0..cpp {
            if col0 + j < cols {
                #[unroll]
                for r in 0..m {
                    let total = plane_sum(acc[r * cpp + j]) * scale[r];
                    let mut total_up = 0.0f32;
                    if comptime!(l.epilogue == SWIGLU) {
                        total_up = plane_sum(acc_up[r * cpp + j]) * scale[r];
                    }
                    if lane == 0 {
                        let at = (row0 as usize + r) * cols + col0 + j;
                        if comptime!(l.epilogue == STORE) {
                            y[at] = total;
                        } else if comptime!(l.epilogue == ACCUMULATE) {
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
    let kernel = Kernel::for_shape::<R, F>(client, m, (k, n), Epilogue::Store);
    let ends = (Prologue::None, Epilogue::Store);
    linear_with::<R, F>(client, x, w, ends, y, (m, k, n), kernel)
}

/// [`linear`] with a prologue and an epilogue; `m` may exceed [`MAX_ROWS`] (one launch per 16
/// rows).
pub fn linear_fused<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    x: &Handle,
    w: &Handle,
    ends: (Prologue, Epilogue),
    y: &Handle,
    (m, k, n): (usize, usize, usize),
) -> Result<(), KernelError> {
    let mut row0 = 0;
    while row0 < m {
        let rows = (m - row0).min(MAX_ROWS);
        let kernel = Kernel::for_shape::<R, F>(client, rows, (k, n), ends.1);
        launch::<R, F>(client, x, w, ends, y, (row0, rows, m), (k, n), kernel)?;
        row0 += rows;
    }
    Ok(())
}

/// [`linear_fused`] with a chosen kernel and tiling (benchmarks sweep them); at most
/// [`MAX_ROWS`] rows.
pub fn linear_with<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    x: &Handle,
    w: &Handle,
    ends: (Prologue, Epilogue),
    y: &Handle,
    (m, k, n): (usize, usize, usize),
    kernel: impl Into<Kernel>,
) -> Result<(), KernelError> {
    if m == 0 || m > MAX_ROWS {
        return Err(KernelError::Length {
            what: "linear rows (1..=16)",
            expected: MAX_ROWS,
            got: m,
        });
    }
    launch::<R, F>(client, x, w, ends, y, (0, m, m), (k, n), kernel.into())
}

/// One launch for rows `row0..row0 + rows` of `total`.
#[allow(clippy::too_many_arguments)]
fn launch<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    x: &Handle,
    w: &Handle,
    ends: (Prologue, Epilogue),
    y: &Handle,
    rows: (usize, usize, usize),
    kn: (usize, usize),
    kernel: Kernel,
) -> Result<(), KernelError> {
    match kernel {
        Kernel::Planes(t) => launch_planes::<R, F>(client, x, w, ends, y, rows, kn, t),
        Kernel::Mma(t) => linear_mma::launch::<R, F>(client, x, w, ends, y, rows, kn, t),
    }
}

/// One launch of the CUDA-core kernel.
#[allow(clippy::too_many_arguments)]
fn launch_planes<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    x: &Handle,
    w: &Handle,
    (prologue, epilogue): (Prologue, Epilogue),
    y: &Handle,
    (row0, rows, total): (usize, usize, usize),
    (k, n): (usize, usize),
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
    let (up, code) = epilogue.args(w);
    let (gamma, eps, norm) = prologue.args(x);
    let layout = Layout {
        m: rows,
        k,
        vec,
        plane,
        tiling,
        epilogue: code,
        norm,
    };
    // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
    unsafe {
        linear_kernel::launch_unchecked::<F, R>(
            client,
            CubeCount::Static(n.div_ceil(PLANES * tiling.cols) as u32, 1, 1),
            CubeDim::new_1d((plane * PLANES) as u32),
            vec,
            arg(x, total * k / 4),
            arg(gamma, k / 4),
            arg(w, n * k / vec),
            arg(up, n * k / vec),
            arg(y, total * n),
            n as u32,
            row0 as u32,
            eps,
            layout,
        )
    };
    Ok(())
}
