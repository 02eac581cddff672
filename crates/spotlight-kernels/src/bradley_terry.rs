//! The Bradley–Terry ranking loss over sampled pairs (METHOD.md "Training", step 6): forward row
//! sums and the backward's pair weights. Reference: [`crate::reference::bradley_terry`].
//!
//! Row r (one head, one query) has `pairs` pairs (top key i, other key j) with a validity weight;
//! diff = β·(s[r][i] − s[r][j]) − m. Forward: one cube per row, sums of valid·softplus(−diff),
//! valid·[diff < 0] and valid. Backward: one unit per pair, w = g[r]·valid·β·σ(−diff); the
//! scatter of ±w into the score gradient is left to the backend (keys repeat within a row).

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::{arg, check_bytes, cubes, CUBE_THREADS};
use crate::KernelError;

/// log(1 + eˣ) without overflow.
#[cube]
fn softplus(x: f32) -> f32 {
    f32::max(x, 0.0) + f32::ln(1.0 + f32::exp(-f32::abs(x)))
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn bt_rows_kernel(
    scores: &Array<f32>,
    top: &Array<u32>,
    other: &Array<u32>,
    valid: &Array<f32>,
    out: &mut Array<f32>,
    rows: u32,
    n: u32,
    pairs: u32,
    beta: f32,
    margin: f32,
    #[comptime] threads: usize,
) {
    let r = CUBE_POS;
    let unit = UNIT_POS as usize;
    let n = n as usize;
    let pairs = pairs as usize;
    let rows = rows as usize;
    let mut loss = 0.0f32;
    let mut wrong = 0.0f32;
    let mut count = 0.0f32;
    let mut p = unit;
    while p < pairs {
        let at = r * pairs + p;
        let i = top[at] as usize;
        let j = other[at] as usize;
        if i < n && j < n {
            let v = valid[at];
            let diff = beta * (scores[r * n + i] - scores[r * n + j]) - margin;
            loss += v * softplus(-diff);
            if diff < 0.0 {
                wrong += v;
            }
            count += v;
        }
        p += threads;
    }
    let mut sums = SharedMemory::<f32>::new(3 * threads);
    sums[unit] = loss;
    sums[threads + unit] = wrong;
    sums[2 * threads + unit] = count;
    sync_cube();
    // Tree reduction over the cube (threads is a power of two).
    #[unroll]
    for level in 0..comptime!(threads.trailing_zeros() as usize) {
        let stride = comptime!(threads / 2) >> level;
        if unit < stride {
            #[unroll]
            for s in 0..3usize {
                sums[s * threads + unit] += sums[s * threads + unit + stride];
            }
        }
        sync_cube();
    }
    if unit < 3 {
        out[unit * rows + r] = sums[unit * threads];
    }
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn bt_pair_grads_kernel(
    scores: &Array<f32>,
    top: &Array<u32>,
    other: &Array<u32>,
    valid: &Array<f32>,
    grad: &Array<f32>,
    out: &mut Array<f32>,
    n: u32,
    pairs: u32,
    total: u32,
    beta: f32,
    margin: f32,
) {
    let at = ABSOLUTE_POS;
    if at < total as usize {
        let n = n as usize;
        let r = at / pairs as usize;
        let i = top[at] as usize;
        let j = other[at] as usize;
        let mut w = 0.0f32;
        if i < n && j < n {
            let diff = beta * (scores[r * n + i] - scores[r * n + j]) - margin;
            w = grad[r] * valid[at] * beta / (1.0 + f32::exp(diff));
        }
        out[at] = w;
    }
}

/// The loss's inputs in device buffers: scores `[rows][n]` f32, top and other key indices
/// `[rows][pairs]` (32-bit), valid `[rows][pairs]` f32.
#[derive(Debug, Clone, Copy)]
pub struct PairBuffers<'a> {
    pub scores: &'a Handle,
    pub top: &'a Handle,
    pub other: &'a Handle,
    pub valid: &'a Handle,
    pub rows: usize,
    pub n: usize,
    pub pairs: usize,
    pub beta: f32,
    pub margin: f32,
}

impl PairBuffers<'_> {
    fn check(&self) -> Result<(), KernelError> {
        let pair_bytes = self.rows * self.pairs * 4;
        check_bytes(self.scores, self.rows * self.n * 4, "scores")?;
        check_bytes(self.top, pair_bytes, "top keys")?;
        check_bytes(self.other, pair_bytes, "other keys")?;
        check_bytes(self.valid, pair_bytes, "valid pairs")
    }
}

/// Per-row sums `[3][rows]` into `out`: Σ valid·softplus(−diff), Σ valid·[diff < 0], Σ valid.
pub fn bt_rows<R: Runtime>(
    client: &ComputeClient<R>,
    set: &PairBuffers,
    out: &Handle,
) -> Result<(), KernelError> {
    set.check()?;
    check_bytes(out, 3 * set.rows * 4, "row sums")?;
    if set.rows == 0 {
        return Ok(());
    }
    let (rows, pairs) = (set.rows, set.pairs);
    // Safety: every buffer was checked to hold its length above; key indices ≥ n are skipped.
    unsafe {
        bt_rows_kernel::launch_unchecked::<R>(
            client,
            CubeCount::Static(rows as u32, 1, 1),
            CubeDim::new_1d(CUBE_THREADS),
            arg(set.scores, rows * set.n),
            arg(set.top, rows * pairs),
            arg(set.other, rows * pairs),
            arg(set.valid, rows * pairs),
            arg(out, 3 * rows),
            rows as u32,
            set.n as u32,
            pairs as u32,
            set.beta,
            set.margin,
            CUBE_THREADS as usize,
        )
    };
    Ok(())
}

/// Pair weights `[rows][pairs]` into `out` for `grad`, the gradient of the row loss sums (the
/// first `rows` values of the `[3][rows]` output's gradient): ∂L/∂s[top] −= w, ∂L/∂s[other] += w.
pub fn bt_pair_grads<R: Runtime>(
    client: &ComputeClient<R>,
    set: &PairBuffers,
    grad: &Handle,
    out: &Handle,
) -> Result<(), KernelError> {
    set.check()?;
    check_bytes(grad, set.rows * 4, "loss gradient")?;
    check_bytes(out, set.rows * set.pairs * 4, "pair weights")?;
    let total = set.rows * set.pairs;
    if total == 0 {
        return Ok(());
    }
    // Safety: every buffer was checked to hold its length above; key indices ≥ n are skipped.
    unsafe {
        bt_pair_grads_kernel::launch_unchecked::<R>(
            client,
            CubeCount::Static(cubes(total, CUBE_THREADS), 1, 1),
            CubeDim::new_1d(CUBE_THREADS),
            arg(set.scores, set.rows * set.n),
            arg(set.top, total),
            arg(set.other, total),
            arg(set.valid, total),
            arg(grad, set.rows),
            arg(out, total),
            set.n as u32,
            set.pairs as u32,
            total as u32,
            set.beta,
            set.margin,
        )
    };
    Ok(())
}
