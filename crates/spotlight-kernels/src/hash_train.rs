//! The hash network under training: the softsign code c = softsign(γ·h2) (the decode kernel of
//! [`crate::hash_pack`] with its softsign epilogue) and its backward (METHOD.md "Training").
//!
//! Vectors are `[nets][rows][d]` (net outer), as training batches them. The backward recomputes
//! the forward of each tile (cheaper than storing a1, h1, h2 for every row) and writes the per-row
//! quantities the weight gradients are reduced from: ∂L/∂W1 = xᵀ·∂a1, ∂L/∂W2 = h1ᵀ·∂h2 and the
//! biases' row sums are matrix products the caller runs (Burn's matmul).

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::{arg, check_bytes};
use crate::hash_pack::{
    first_layer, hash_kernel, linear_column, load_tile, Form, MlpBuffers, TILE,
};
use crate::KernelError;

/// Σ_i W[j][i]·g[i] for the tile's rows: row j of W (the transposed product of the backward).
#[cube]
fn transposed_column(
    g: &SharedMemory<f32>,
    w: &Array<f32>,
    head: usize,
    j: usize,
    #[comptime] d: usize,
) -> Array<f32> {
    let mut acc = Array::<f32>::new(TILE);
    #[unroll]
    for r in 0..TILE {
        acc[r] = 0.0;
    }
    for i in 0..d {
        let weight = w[(head * d + j) * d + i];
        #[unroll]
        for r in 0..TILE {
            acc[r] += g[r * d + i] * weight;
        }
    }
    acc
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn hash_backward_kernel(
    x: &Array<f32>,
    w1: &Array<f32>,
    b1: &Array<f32>,
    w2: &Array<f32>,
    b2: &Array<f32>,
    grad: &Array<f32>,
    gx: &mut Array<f32>,
    ga1: &mut Array<f32>,
    gh2: &mut Array<f32>,
    h1: &mut Array<f32>,
    rows: u32,
    gamma: f32,
    #[comptime] heads: usize,
    #[comptime] d: usize,
) {
    let head = CUBE_POS_Y as usize;
    let row0 = CUBE_POS_X as usize * TILE;
    let j = UNIT_POS as usize;
    let rows = rows as usize;
    let mut xs = SharedMemory::<f32>::new(TILE * d);
    let mut hs = SharedMemory::<f32>::new(TILE * d);
    let mut gs = SharedMemory::<f32>::new(TILE * d);

    load_tile(
        x, &mut xs, row0, head, j, rows, heads, d, true, TILE, 1usize,
    );
    sync_cube();
    let a1 = first_layer(&xs, &mut hs, w1, b1, head, j, d, TILE);
    sync_cube();
    let a2 = linear_column(&hs, w2, b2, head, j, d, TILE);

    // ∂h2 = ∂c · γ / (1 + |γh2|)² (softsign'), zero for rows past the end.
    #[unroll]
    for r in 0..TILE {
        let row = row0 + r;
        let mut g = 0.0f32;
        if row < rows {
            let at = (head * rows + row) * d + j;
            let u = 1.0 + f32::abs(gamma * (hs[r * d + j] + a2[r]));
            g = grad[at] * gamma / (u * u);
            gh2[at] = g;
            h1[at] = hs[r * d + j];
        }
        gs[r * d + j] = g;
    }
    sync_cube();

    // ∂h1 = ∂h2 + W2·∂h2; ∂a1 = ∂h1 · SiLU'(a1), SiLU'(a) = σ(a)(1 + a(1 − σ(a))).
    // xs is free: every unit finished reading x before the previous barrier.
    let back2 = transposed_column(&gs, w2, head, j, d);
    let mut gh1 = Array::<f32>::new(TILE);
    #[unroll]
    for r in 0..TILE {
        let row = row0 + r;
        gh1[r] = gs[r * d + j] + back2[r];
        let a = a1[r];
        let s = 1.0 / (1.0 + f32::exp(-a));
        let g = gh1[r] * s * (1.0 + a * (1.0 - s));
        xs[r * d + j] = g;
        if row < rows {
            ga1[(head * rows + row) * d + j] = g;
        }
    }
    sync_cube();

    // ∂x = ∂h1 + W1·∂a1.
    let back1 = transposed_column(&xs, w1, head, j, d);
    #[unroll]
    for r in 0..TILE {
        let row = row0 + r;
        if row < rows {
            gx[(head * rows + row) * d + j] = gh1[r] + back1[r];
        }
    }
}

/// Where the backward writes its per-row results, each `[nets][rows][d]` f32.
#[derive(Debug, Clone, Copy)]
pub struct RowGradBuffers<'a> {
    /// ∂L/∂x.
    pub x: &'a Handle,
    /// ∂L/∂a1 (a1 = x·W1 + b1).
    pub a1: &'a Handle,
    /// ∂L/∂h2.
    pub h2: &'a Handle,
    /// h1, the second layer's input.
    pub h1: &'a Handle,
}

/// The widths and buffer lengths, and the tile's shared memory (`tiles` buffers of TILE × d f32).
fn check_vectors<R: Runtime>(
    client: &ComputeClient<R>,
    p: &MlpBuffers,
    rows: usize,
    tiles: usize,
    named: &[(&Handle, &'static str)],
) -> Result<(), KernelError> {
    p.check()?;
    let needed = tiles * TILE * p.d * 4;
    let available = client.properties().hardware.max_shared_memory_size;
    if needed > available {
        return Err(KernelError::SharedMemory { needed, available });
    }
    for (h, what) in named {
        check_bytes(h, p.nets * rows * p.d * 4, what)?;
    }
    Ok(())
}

/// softsign(γ·h2(x)) into `out`, for x and out `[nets][rows][d]` f32.
pub fn hash_soft<R: Runtime>(
    client: &ComputeClient<R>,
    p: &MlpBuffers,
    x: &Handle,
    rows: usize,
    gamma: f32,
    out: &Handle,
) -> Result<(), KernelError> {
    check_vectors(client, p, rows, 2, &[(x, "x"), (out, "codes")])?;
    if rows == 0 || p.nets == 0 {
        return Ok(());
    }
    let (h, d) = (p.nets, p.d);
    let len = h * rows * d;
    let form = Form {
        heads_outer: true,
        soft: true,
        placed: false,
        tile: TILE,
        replicas: 1,
    };
    let (count, dim) = p.grid(rows, TILE);
    let [w1, b1, w2, b2] = p.args::<R>();
    // Safety: every buffer was checked to hold its length above.
    unsafe {
        hash_kernel::launch_unchecked::<R>(
            client,
            count,
            dim,
            arg(x, len),
            w1,
            b1,
            w2,
            b2,
            arg(out, 1),
            arg(out, len),
            arg(out, 1),
            arg(out, 1),
            rows as u32,
            0,
            gamma,
            h,
            d,
            form,
        )
    };
    Ok(())
}

/// The backward of [`hash_soft`] for the incoming gradient `grad` (∂L/∂c, same layout as x).
pub fn hash_soft_backward<R: Runtime>(
    client: &ComputeClient<R>,
    p: &MlpBuffers,
    x: &Handle,
    rows: usize,
    gamma: f32,
    grad: &Handle,
    out: RowGradBuffers,
) -> Result<(), KernelError> {
    check_vectors(
        client,
        p,
        rows,
        3,
        &[
            (x, "x"),
            (grad, "grad"),
            (out.x, "grad x"),
            (out.a1, "grad a1"),
            (out.h2, "grad h2"),
            (out.h1, "h1"),
        ],
    )?;
    if rows == 0 || p.nets == 0 {
        return Ok(());
    }
    let (h, d) = (p.nets, p.d);
    let len = h * rows * d;
    let (count, dim) = p.grid(rows, TILE);
    let [w1, b1, w2, b2] = p.args::<R>();
    // Safety: every buffer was checked to hold its length above.
    unsafe {
        hash_backward_kernel::launch_unchecked::<R>(
            client,
            count,
            dim,
            arg(x, len),
            w1,
            b1,
            w2,
            b2,
            arg(grad, len),
            arg(out.x, len),
            arg(out.a1, len),
            arg(out.h2, len),
            arg(out.h1, len),
            rows as u32,
            gamma,
            h,
            d,
        )
    };
    Ok(())
}
