//! hash_pack: the per-head residual hash MLP, then sign and pack (METHOD.md "Hash function").
//!
//! One cube per (tile of rows, head), one unit per output coordinate j. The x tile and h1 live in
//! shared memory; each unit streams column j of W (coalesced across units) once per tile and keeps
//! the tile's accumulators in registers.
//!
//! The same kernel writes the training code softsign(γ·h2) instead of packed signs
//! ([`crate::hash_train`]): the network that is trained is the one that decodes.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::{arg, check_bytes, upload_f32};
use crate::reference::HashWeights;
use crate::KernelError;

/// Rows hashed per cube: the weights are read once per tile.
pub(crate) const TILE: usize = 16;

/// Column j of `input · W + b` for the tile's `tile` rows: W's column is read once, coalesced
/// across units.
#[cube]
pub(crate) fn linear_column(
    input: &SharedMemory<f32>,
    w: &Array<f32>,
    b: &Array<f32>,
    head: usize,
    j: usize,
    #[comptime] d: usize,
    #[comptime] tile: usize,
) -> Array<f32> {
    let mut acc = Array::<f32>::new(tile);
    let bias = b[head * d + j];
    #[unroll]
    for r in 0..tile {
        acc[r] = bias;
    }
    #[unroll]
    for i in 0..d {
        let weight = w[(head * d + i) * d + j];
        #[unroll]
        for r in 0..tile {
            acc[r] += input[r * d + i] * weight;
        }
    }
    acc
}

/// What one launch of [`hash_kernel`] reads and writes (comptime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Form {
    /// Vectors `[heads][rows][d]` (training) instead of `[rows][heads][d]` (decode).
    pub heads_outer: bool,
    /// Write the softsign code softsign(γ·h2) as f32 instead of packing signs.
    pub soft: bool,
    /// Packed codes go to row `seq·cap + pos` of a code cache.
    pub placed: bool,
    /// Rows per cube: [`TILE`], or fewer at decode (a step hashes one row per sequence, and a
    /// tile of 16 would do 16× the arithmetic).
    pub tile: usize,
    /// Networks per input head (network n reads input head n / replicas).
    pub replicas: usize,
}

/// Offset of coordinate j of (row, head) in a vector buffer of `form`'s layout.
#[cube]
pub(crate) fn vector_at(
    row: usize,
    head: usize,
    j: usize,
    rows: usize,
    #[comptime] heads: usize,
    #[comptime] d: usize,
    #[comptime] heads_outer: bool,
) -> usize {
    let mut at = (row * heads + head) * d + j;
    if comptime!(heads_outer) {
        at = (head * rows + row) * d + j;
    }
    at
}

/// Coordinate j of the tile's rows into `xs` (zeros past the last row).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_tile(
    x: &Array<f32>,
    xs: &mut SharedMemory<f32>,
    row0: usize,
    head: usize,
    j: usize,
    rows: usize,
    #[comptime] heads: usize,
    #[comptime] d: usize,
    #[comptime] heads_outer: bool,
    #[comptime] tile: usize,
    #[comptime] replicas: usize,
) {
    let input_heads = comptime!(heads / replicas);
    #[unroll]
    for r in 0..tile {
        let row = row0 + r;
        let mut value = 0.0f32;
        if row < rows {
            value = x[vector_at(row, head / replicas, j, rows, input_heads, d, heads_outer)];
        }
        xs[r * d + j] = value;
    }
}

/// h1 = x + SiLU(a1) of the tile into `hs` (x already in `xs`); returns a1 (kept for backward).
#[cube]
pub(crate) fn first_layer(
    xs: &SharedMemory<f32>,
    hs: &mut SharedMemory<f32>,
    w1: &Array<f32>,
    b1: &Array<f32>,
    head: usize,
    j: usize,
    #[comptime] d: usize,
    #[comptime] tile: usize,
) -> Array<f32> {
    let a1 = linear_column(xs, w1, b1, head, j, d, tile);
    #[unroll]
    for r in 0..tile {
        let a = a1[r];
        hs[r * d + j] = xs[r * d + j] + a / (1.0 + f32::exp(-a));
    }
    a1
}

/// The hash network of one (tile of rows, head): the decode path packs the signs of h2, training
/// writes softsign(γ·h2) — one kernel, so what is trained is exactly what decodes.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn hash_kernel(
    x: &Array<f32>,
    w1: &Array<f32>,
    b1: &Array<f32>,
    w2: &Array<f32>,
    b2: &Array<f32>,
    codes: &mut Array<u32>,
    soft: &mut Array<f32>,
    row_seq: &Array<u32>,
    row_pos: &Array<u32>,
    rows: u32,
    cap: u32,
    gamma: f32,
    #[comptime] heads: usize,
    #[comptime] d: usize,
    #[comptime] form: Form,
) {
    let tile = comptime!(form.tile);
    let head = CUBE_POS_Y as usize;
    let row0 = CUBE_POS_X as usize * tile;
    let j = UNIT_POS as usize;
    let rows = rows as usize;
    let mut xs = SharedMemory::<f32>::new(tile * d);
    let mut hs = SharedMemory::<f32>::new(tile * d);

    load_tile(
        x,
        &mut xs,
        row0,
        head,
        j,
        rows,
        heads,
        d,
        form.heads_outer,
        tile,
        form.replicas,
    );
    sync_cube();

    // Layer 1: h1 = x + SiLU(x·W1 + b1).
    let _a1 = first_layer(&xs, &mut hs, w1, b1, head, j, d, tile);
    sync_cube();

    // Layer 2: h2 = h1 + (h1·W2 + b2).
    let acc = linear_column(&hs, w2, b2, head, j, d, tile);
    if comptime!(form.soft) {
        #[unroll]
        for r in 0..tile {
            let row = row0 + r;
            if row < rows {
                let g = gamma * (hs[r * d + j] + acc[r]);
                soft[vector_at(row, head, j, rows, heads, d, comptime!(form.heads_outer))] =
                    g / (1.0 + f32::abs(g));
            }
        }
    } else {
        // Only the sign is kept, as a 0/1 flag in xs.
        #[unroll]
        for r in 0..tile {
            let mut bit = 0.0f32;
            if hs[r * d + j] + acc[r] > 0.0 {
                bit = 1.0;
            }
            xs[r * d + j] = bit;
        }
        sync_cube();

        // Pack: unit (r, w) gathers 32 flags into one word, LSB first.
        let words = d / 32;
        if j < tile * words {
            let r = j / words;
            let w = j % words;
            let row = row0 + r;
            if row < rows {
                let mut word = 0u32;
                for b in 0..32 {
                    if xs[r * d + w * 32 + b] > 0.5 {
                        word |= 1u32 << (b as u32);
                    }
                }
                let mut to = row;
                if comptime!(form.placed) {
                    to = row_seq[row] as usize * cap as usize + row_pos[row] as usize;
                }
                codes[(to * heads + head) * words + w] = word;
            }
        }
    }
}

/// Hash weights resident on the device.
#[derive(Debug, Clone)]
pub struct DeviceHashWeights {
    pub heads: usize,
    pub dim: usize,
    /// Networks per input head ([`HashWeights::replicas`]).
    pub replicas: usize,
    w1: Handle,
    b1: Handle,
    w2: Handle,
    b2: Handle,
}

impl DeviceHashWeights {
    pub fn upload<R: Runtime>(client: &ComputeClient<R>, w: &HashWeights) -> Self {
        Self {
            heads: w.heads,
            dim: w.dim,
            replicas: w.replicas,
            w1: upload_f32(client, &w.w1),
            b1: upload_f32(client, &w.b1),
            w2: upload_f32(client, &w.w2),
            b2: upload_f32(client, &w.b2),
        }
    }

    /// The weights as kernel arguments.
    pub fn buffers(&self) -> MlpBuffers<'_> {
        MlpBuffers {
            nets: self.heads,
            d: self.dim,
            w1: &self.w1,
            b1: &self.b1,
            w2: &self.w2,
            b2: &self.b2,
        }
    }
}

/// Hash weights of `nets` networks of width `d` in device buffers (f32, `w1[net][in][out]`),
/// wherever they live: uploaded for decode or a training tensor's storage.
#[derive(Debug, Clone, Copy)]
pub struct MlpBuffers<'a> {
    pub nets: usize,
    pub d: usize,
    pub w1: &'a Handle,
    pub b1: &'a Handle,
    pub w2: &'a Handle,
    pub b2: &'a Handle,
}

impl MlpBuffers<'_> {
    /// Checks the width the kernels support and that each buffer holds its weights.
    pub fn check(&self) -> Result<(), KernelError> {
        let (h, d) = (self.nets, self.d);
        if d == 0 || !d.is_multiple_of(32) || d > 256 {
            return Err(KernelError::HeadDim(d));
        }
        check_bytes(self.w1, h * d * d * 4, "w1")?;
        check_bytes(self.b1, h * d * 4, "b1")?;
        check_bytes(self.w2, h * d * d * 4, "w2")?;
        check_bytes(self.b2, h * d * 4, "b2")
    }

    /// W1, b1, W2, b2 as kernel arguments, at the lengths [`Self::check`] verifies.
    pub(crate) fn args<R: Runtime>(&self) -> [ArrayArg<R>; 4] {
        let (h, d) = (self.nets, self.d);
        [
            arg(self.w1, h * d * d),
            arg(self.b1, h * d),
            arg(self.w2, h * d * d),
            arg(self.b2, h * d),
        ]
    }

    /// The cube grid of a launch over `rows` rows: one cube per (tile of rows, net).
    pub(crate) fn grid(&self, rows: usize, tile: usize) -> (CubeCount, CubeDim) {
        (
            CubeCount::Static((rows as u32).div_ceil(tile as u32), self.nets as u32, 1),
            CubeDim::new_1d(self.d as u32),
        )
    }
}

/// Codes `[rows][heads][d/32]` (u32, heads = networks) into `codes` for vectors `x`
/// `[rows][heads / replicas][d]` (f32): an input head's replicas' codes side by side.
pub fn hash_pack<R: Runtime>(
    client: &ComputeClient<R>,
    weights: &DeviceHashWeights,
    x: &Handle,
    rows: usize,
    codes: &Handle,
) -> Result<(), KernelError> {
    launch(client, weights, x, rows, codes, None)
}

/// [`hash_pack`] writing row r's codes at row `seq·cap + pos` of a code cache
/// `[batch][cap][heads][d/32]` (the decode step's new keys, at their places), where
/// `row_seq`/`row_pos` hold `places` on the device.
pub fn hash_pack_placed<R: Runtime>(
    client: &ComputeClient<R>,
    weights: &DeviceHashWeights,
    x: &Handle,
    places: &[crate::rope_append::RowPlace],
    (row_seq, row_pos): (&Handle, &Handle),
    codes: &Handle,
    (batch, cap): (usize, usize),
) -> Result<(), KernelError> {
    if let Some(p) = places.iter().find(|p| p.seq >= batch || p.pos >= cap) {
        return Err(KernelError::OverCapacity {
            seq: p.seq,
            len: p.pos + 1,
            cap,
        });
    }
    let placed = Placed {
        row_seq,
        row_pos,
        cache_rows: batch * cap,
        cap,
    };
    launch(client, weights, x, places.len(), codes, Some(placed))
}

struct Placed<'a> {
    row_seq: &'a Handle,
    row_pos: &'a Handle,
    cache_rows: usize,
    cap: usize,
}

fn launch<R: Runtime>(
    client: &ComputeClient<R>,
    weights: &DeviceHashWeights,
    x: &Handle,
    rows: usize,
    codes: &Handle,
    placed: Option<Placed>,
) -> Result<(), KernelError> {
    let p = weights.buffers();
    p.check()?;
    if rows == 0 {
        return Ok(());
    }
    let (h, d) = (p.nets, p.d);
    let n = h / weights.replicas * d;
    let (row_seq, row_pos, out_rows, cap) = match &placed {
        Some(p) => (p.row_seq, p.row_pos, p.cache_rows, p.cap),
        None => (codes, codes, rows, 0),
    };
    let form = Form {
        heads_outer: false,
        soft: false,
        placed: placed.is_some(),
        // Keys (placed) come in batches of any size: always a full tile, so one kernel serves
        // them all; queries come one per sequence, a count fixed for a decoder's life.
        tile: if placed.is_some() {
            TILE
        } else {
            rows.next_power_of_two().min(TILE)
        },
        replicas: weights.replicas,
    };
    let (count, dim) = p.grid(rows, form.tile);
    let [w1, b1, w2, b2] = p.args::<R>();
    // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
    unsafe {
        hash_kernel::launch_unchecked::<R>(
            client,
            count,
            dim,
            arg(x, rows * n),
            w1,
            b1,
            w2,
            b2,
            arg(codes, out_rows * h * d / 32),
            arg(codes, 1),
            arg(row_seq, rows),
            arg(row_pos, rows),
            rows as u32,
            cap as u32,
            0.0,
            h,
            d,
            form,
        )
    };
    Ok(())
}
