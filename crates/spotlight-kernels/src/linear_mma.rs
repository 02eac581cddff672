//! Decode linear on tensor cores: y = x·Wᵀ for 1–16 rows with W in bf16, through the
//! m16n8k16 MMA instruction (CUDA, sm80+), with the same prologue and epilogues as
//! [`crate::linear`].
//!
//! Why: with 16 rows the CUDA-core kernel does 16 multiply-adds and 32 x loads per weight load
//! and runs compute-bound at a fifth of the copy rate; one MMA does 16·8·16 multiply-adds.
//!
//! The product is computed transposed, yᵀ = W·xᵀ: W rows (output columns) are the MMA's M side,
//! x rows its N side (two N = 8 fragments for more than 8 rows). The sum over k does not care
//! in which order k is visited, so each lane's fragment registers are filled from *contiguous*
//! memory: in a chunk of 32 k, lane (g = lane/4, t = lane%4) loads W[g][8t..8t+8] and
//! W[g+8][8t..8t+8] as two 16-byte loads and x[g][8t..8t+8] as two 16-byte loads. For k-step s
//! (0 or 1) the fragments' logical k = 2t, 2t+1 | 2t+8, 2t+9 are the chunk's physical
//! 8t+4s+0, 1 | 8t+4s+2, 3, the same map for W and x, so the dot products are exact.
//! x is rounded to bf16 on the way into the MMA (as in a bf16 model); each chunk's two MMAs
//! start from zero and are added to f32 sums (see the kernel for why).
//!
//! Only CUDA has the instruction, so the tests are `tests/linear_mma_cuda.rs`, run on the GPU
//! machine. Integer literals in the kernel carry `usize` suffixes: CubeCL types a bare literal
//! as i32, which does not mix with usize indices.

use cubecl::cmma::MmaDefinition;
use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::arg;
use crate::linear::{Epilogue, Prologue, ACCUMULATE, STORE, SWIGLU};
use crate::KernelError;

/// k elements per chunk: two MMA k-steps, 16 bytes of a W row per lane.
pub const CHUNK: usize = 32;
/// Output columns per MMA tile (the MMA's M).
const TILE: usize = 16;
/// Warps per cube when a tile's k is split across fewer warps.
const WARPS: usize = 8;

/// How warps cover W: `tiles` 16-column tiles per warp (each x load serves them all), `split`
/// warps share one tile group's k (their sums meet in shared memory), `in_flight` chunks of
/// loads issued before any is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MmaTiling {
    pub tiles: usize,
    pub split: usize,
    pub in_flight: usize,
}

impl MmaTiling {
    /// The default, from the H200 sweep (`spotlight bench linear`, Llama-3-8B shapes, 4 and 16
    /// rows): 16 warps along k; one tile per warp with two chunks in flight up to 4096 columns,
    /// two tiles with one chunk from 6144 on (qkv 19.5 against 23.1 µs at 4 rows, gate 36.7
    /// against 43.4). Fewer warps per tile lost up to 3×.
    pub const DEFAULT: Self = Self {
        tiles: 1,
        split: 16,
        in_flight: 2,
    };

    /// The default for a W of `n` rows (output columns); `paired` when gate and up are read
    /// together (SwiGLU), which already gives each warp two tiles' loads (and two tiles
    /// there measured slower in the decoder: 5.89 against 5.59 ms of weights per 8B step at
    /// batch 4) and would need 68 KiB of shared memory at 16 rows.
    pub fn for_columns(n: usize, paired: bool) -> Self {
        if n >= 6144 && !paired {
            Self {
                tiles: 2,
                split: 16,
                in_flight: 1,
            }
        } else {
            Self::DEFAULT
        }
    }

    /// Tiles per warp 1, 2 or 4; warps per tile 1..=32; chunks in flight 1..=8.
    pub fn check(&self) -> Result<(), KernelError> {
        let bad = |what, expected, got| {
            Err(KernelError::Length {
                what,
                expected,
                got,
            })
        };
        if ![1, 2, 4].contains(&self.tiles) {
            return bad("MMA linear tiles per warp (1, 2 or 4)", 4, self.tiles);
        }
        if !(1..=32).contains(&self.split) {
            return bad("MMA linear warps per tile (1..=32)", 32, self.split);
        }
        if !(1..=8).contains(&self.in_flight) {
            return bad("MMA linear chunks in flight (1..=8)", 8, self.in_flight);
        }
        Ok(())
    }
}

/// Whether this runtime has the bf16 m16n8k16 MMA (CUDA sm80+; not wgpu or the cpu).
pub fn supported<R: Runtime>(client: &ComputeClient<R>) -> bool {
    let bf16 = half::bf16::as_type_native_unchecked().storage_type();
    let f32 = f32::as_type_native_unchecked().storage_type();
    let props = client.properties();
    props.hardware.plane_size_max == 32
        && props
            .features
            .matmul
            .mma
            .contains(&cubecl::features::MmaConfig {
                a_type: bf16,
                b_type: bf16,
                cd_type: f32,
                m: 16,
                n: 8,
                k: 16,
            })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Layout {
    m: usize,
    k: usize,
    tiling: MmaTiling,
    /// Tile groups per cube.
    groups: usize,
    epilogue: u32,
    norm: bool,
}

impl Layout {
    /// Batch-row fragments of 8.
    fn frags(&self) -> usize {
        self.m.div_ceil(8)
    }
    /// Weight matrices read (gate and up for SwiGLU).
    fn mats(&self) -> usize {
        if self.epilogue == SWIGLU {
            2
        } else {
            1
        }
    }
    /// Accumulator vectors (2 floats each) per lane.
    fn accs(&self) -> usize {
        self.tiling.tiles * self.mats() * self.frags() * 2
    }
}

#[cube]
fn pair<F: Float>(a: F, b: F) -> Vector<F, Const<2>> {
    let mut v = Vector::<F, Const<2>>::empty();
    v[0usize] = a;
    v[1usize] = b;
    v
}

/// The A fragment (W rows g and g + 8) of k-step `s` from the lane's two 16-byte loads.
#[cube]
fn fragment_a<F: Float, N: Size>(
    lo: Vector<F, N>,
    hi: Vector<F, N>,
    #[comptime] s: usize,
) -> Array<Vector<F, Const<2>>> {
    let mut a = Array::<Vector<F, Const<2>>>::new(4usize);
    a[0usize] = pair::<F>(lo[4usize * s], lo[4usize * s + 1usize]);
    a[1usize] = pair::<F>(hi[4usize * s], hi[4usize * s + 1usize]);
    a[2usize] = pair::<F>(lo[4usize * s + 2usize], lo[4usize * s + 3usize]);
    a[3usize] = pair::<F>(hi[4usize * s + 2usize], hi[4usize * s + 3usize]);
    a
}

/// The B fragment (x row g, rounded to `F`) of one k-step from the lane's four x values.
#[cube]
fn fragment_b<F: Float>(v: Vector<f32, Const<4>>) -> Array<Vector<F, Const<2>>> {
    let mut b = Array::<Vector<F, Const<2>>>::new(2usize);
    b[0usize] = pair::<F>(F::cast_from(v[0usize]), F::cast_from(v[1usize]));
    b[1usize] = pair::<F>(F::cast_from(v[2usize]), F::cast_from(v[3usize]));
    b
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn linear_mma_kernel<F: Float, N: Size>(
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
    let tiles = comptime!(l.tiling.tiles);
    let split = comptime!(l.tiling.split);
    let in_flight = comptime!(l.tiling.in_flight);
    let frags = comptime!(l.frags());
    let mats = comptime!(l.mats());
    let accs = comptime!(l.accs());
    let chunks = comptime!(k / CHUNK);
    let steps = comptime!(chunks.div_ceil(split * in_flight));
    let row_vecs = comptime!(k / 8usize);
    let k4 = comptime!(k / 4usize);
    // Loads per chunk: tiles × mats × (rows g, g + 8).
    let loads = comptime!(tiles * mats * 2usize);

    let lane = UNIT_POS as usize % 32usize;
    let warp = UNIT_POS as usize / 32usize;
    let group = warp / split;
    let part = warp % split;
    let n0 = (CUBE_POS_X as usize * comptime!(l.groups) + group) * comptime!(tiles * TILE);
    let g = lane / 4usize;
    let t = lane % 4usize;
    let cols = cols as usize;
    let x0 = row0 as usize * k4;
    let def = MmaDefinition::<F, F, f32>::new(16usize, 8usize, 16usize);

    let mut acc = Array::<Vector<f32, Const<2>>>::new(accs);
    #[unroll]
    for i in 0..accs {
        acc[i] = Vector::new(0.0);
    }
    let mut squares = Array::<f32>::new(frags);
    #[unroll]
    for fr in 0..frags {
        squares[fr] = 0.0;
    }

    for step in 0..steps {
        // Every weight load of the step before any is used.
        let mut wv = Array::<Vector<F, N>>::new(comptime!(in_flight * loads));
        #[unroll]
        for f in 0..in_flight {
            let c = (step * in_flight + f) * split + part;
            #[unroll]
            for j in 0..tiles {
                #[unroll]
                for mat in 0..mats {
                    #[unroll]
                    for half in 0..2usize {
                        let row = n0 + j * TILE + half * 8usize + g;
                        let at = (f * tiles + j) * comptime!(mats * 2usize) + mat * 2usize + half;
                        wv[at] = Vector::new(F::new(0.0));
                        if c < chunks && row < cols {
                            let i = row * row_vecs + c * 4usize + t;
                            if mat == 0usize {
                                wv[at] = w[i];
                            } else {
                                wv[at] = up[i];
                            }
                        }
                    }
                }
            }
        }
        #[unroll]
        for f in 0..in_flight {
            let c = (step * in_flight + f) * split + part;
            if c < chunks {
                // This lane's batch rows: g (fragment 0) and g + 8 (fragment 1).
                let xi = c * 8usize + 2usize * t;
                let mut xs = Array::<Vector<f32, Const<4>>>::new(comptime!(frags * 2usize));
                #[unroll]
                for fr in 0..frags {
                    let r = fr * 8usize + g;
                    #[unroll]
                    for s in 0..2usize {
                        xs[fr * 2usize + s] = Vector::new(0.0);
                        if r < m {
                            let mut v = x[x0 + r * k4 + xi + s];
                            if comptime!(l.norm) {
                                squares[fr] += v[0usize] * v[0usize]
                                    + v[1usize] * v[1usize]
                                    + v[2usize] * v[2usize]
                                    + v[3usize] * v[3usize];
                                v *= gamma[xi + s];
                            }
                            xs[fr * 2usize + s] = v;
                        }
                    }
                }
                // Each chunk's two MMA steps start from zero and are added to the f32 sums
                // here: the tensor cores' own accumulation truncates, which over k = 4096 in
                // one chain cost 2e-3 relative (measured); per chunk it stays at f32 rounding.
                #[unroll]
                for fr in 0..frags {
                    #[unroll]
                    for j in 0..tiles {
                        #[unroll]
                        for mat in 0..mats {
                            let base = (f * tiles + j) * comptime!(mats * 2usize) + mat * 2usize;
                            let (lo, hi) = (wv[base], wv[base + 1usize]);
                            let mut zero = Array::<Vector<f32, Const<2>>>::new(2usize);
                            zero[0usize] = Vector::new(0.0);
                            zero[1usize] = Vector::new(0.0);
                            let a = fragment_a::<F, N>(lo, hi, 0usize);
                            let b = fragment_b::<F>(xs[fr * 2usize]);
                            let step0 = def.execute(&a, &b, &zero);
                            let a = fragment_a::<F, N>(lo, hi, 1usize);
                            let b = fragment_b::<F>(xs[fr * 2usize + 1usize]);
                            let part = def.execute(&a, &b, &step0);
                            let ai = ((j * mats + mat) * frags + fr) * 2usize;
                            acc[ai] += part[0usize];
                            acc[ai + 1usize] += part[1usize];
                        }
                    }
                }
            }
        }
    }

    // Σx² of batch row g over the four lanes that loaded it.
    if comptime!(l.norm) {
        #[unroll]
        for fr in 0..frags {
            squares[fr] += plane_shuffle_xor(squares[fr], 1u32);
            squares[fr] += plane_shuffle_xor(squares[fr], 2u32);
        }
    }

    // The split warps of a tile group meet in shared memory; the first finishes.
    if comptime!(split > 1usize) {
        let slots = comptime!(accs * 2usize + frags);
        let warps = comptime!(split * l.groups);
        let mut shared = SharedMemory::<f32>::new(comptime!(warps * 32usize * slots));
        let mine = (warp * 32usize + lane) * slots;
        #[unroll]
        for i in 0..accs {
            shared[mine + 2usize * i] = acc[i][0usize];
            shared[mine + 2usize * i + 1usize] = acc[i][1usize];
        }
        #[unroll]
        for fr in 0..frags {
            shared[mine + accs * 2usize + fr] = squares[fr];
        }
        sync_cube();
        if part == 0usize {
            #[unroll]
            for p in 1usize..split {
                let theirs = ((warp + p) * 32usize + lane) * slots;
                #[unroll]
                for i in 0..accs {
                    let mut v = acc[i];
                    v[0usize] += shared[theirs + 2usize * i];
                    v[1usize] += shared[theirs + 2usize * i + 1usize];
                    acc[i] = v;
                }
                #[unroll]
                for fr in 0..frags {
                    squares[fr] += shared[theirs + accs * 2usize + fr];
                }
            }
        }
    }

    if part == 0usize {
        // Lane (g, t) holds batch rows 2t, 2t + 1 (+ 8) of columns g and g + 8 of each tile;
        // 1/rms of batch row r lives in the lanes with g = r % 8.
        let mut scale = Array::<f32>::new(comptime!(frags * 2usize));
        #[unroll]
        for fr in 0..frags {
            #[unroll]
            for e in 0..2usize {
                scale[fr * 2usize + e] = 1.0;
                if comptime!(l.norm) {
                    let sq = plane_shuffle(squares[fr], ((2usize * t + e) * 4usize) as u32);
                    scale[fr * 2usize + e] = 1.0 / f32::sqrt(sq / comptime!(k as f32) + eps);
                }
            }
        }
        #[unroll]
        for j in 0..tiles {
            #[unroll]
            for fr in 0..frags {
                #[unroll]
                for half in 0..2usize {
                    let col = n0 + j * TILE + half * 8usize + g;
                    #[unroll]
                    for e in 0..2usize {
                        let r = fr * 8usize + 2usize * t + e;
                        if r < m && col < cols {
                            let gi = ((j * mats) * frags + fr) * 2usize + half;
                            let total = acc[gi][e] * scale[fr * 2usize + e];
                            let at = (row0 as usize + r) * cols + col;
                            if comptime!(l.epilogue == STORE) {
                                y[at] = total;
                            } else if comptime!(l.epilogue == ACCUMULATE) {
                                y[at] += total;
                            } else {
                                let ui = ((j * mats + 1usize) * frags + fr) * 2usize + half;
                                let total_up = acc[ui][e] * scale[fr * 2usize + e];
                                // silu(g)·u = g·u / (1 + e^(−g))
                                y[at] = total * total_up / (1.0 + f32::exp(-total));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One launch of the MMA kernel for rows `row0..row0 + rows` of `total` (W bf16 `[n][k]`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    x: &Handle,
    w: &Handle,
    (prologue, epilogue): (Prologue, Epilogue),
    y: &Handle,
    (row0, rows, total): (usize, usize, usize),
    (k, n): (usize, usize),
    tiling: MmaTiling,
) -> Result<(), KernelError> {
    tiling.check()?;
    if core::mem::size_of::<F>() != 2 {
        return Err(KernelError::Length {
            what: "MMA linear weight bytes per element (bf16)",
            expected: 2,
            got: core::mem::size_of::<F>(),
        });
    }
    if !k.is_multiple_of(CHUNK) {
        return Err(KernelError::Length {
            what: "MMA linear input size (multiple of 32)",
            expected: CHUNK,
            got: k,
        });
    }
    if !supported(client) {
        return Err(KernelError::Unsupported(
            "the MMA linear kernel needs CUDA with bf16 m16n8k16 tensor cores",
        ));
    }
    if n == 0 || rows == 0 {
        return Ok(());
    }
    let (up, code) = epilogue.args(w);
    let (gamma, eps, norm) = prologue.args(x);
    let groups = (WARPS / tiling.split).max(1);
    let layout = Layout {
        m: rows,
        k,
        tiling,
        groups,
        epilogue: code,
        norm,
    };
    let warps = tiling.split * groups;
    if tiling.split > 1 {
        // The split warps' sums meet in shared memory (see the kernel).
        let needed = warps * 32 * (layout.accs() * 2 + layout.frags()) * 4;
        // Static shared arrays: 48 KiB per cube on CUDA whatever the opt-in maximum.
        let available = client
            .properties()
            .hardware
            .max_shared_memory_size
            .min(48 << 10);
        if needed > available {
            return Err(KernelError::SharedMemory { needed, available });
        }
    }
    let cube_cols = groups * tiling.tiles * TILE;
    // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches"); loads
    // of W rows past `n` and x rows past `rows` are skipped.
    unsafe {
        linear_mma_kernel::launch_unchecked::<F, R>(
            client,
            CubeCount::Static(n.div_ceil(cube_cols) as u32, 1, 1),
            CubeDim::new_1d((32 * warps) as u32),
            8,
            arg(x, total * k / 4),
            arg(gamma, k / 4),
            arg(w, n * k / 8),
            arg(up, n * k / 8),
            arg(y, total * n),
            n as u32,
            row0 as u32,
            eps,
            layout,
        )
    };
    Ok(())
}
