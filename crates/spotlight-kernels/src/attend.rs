//! attend: split-K (flash-decoding style) attention of query rows over cached K/V rows, either the
//! selected rows of each set (sparse) or the first `len` rows (dense; causal prefill is dense with
//! one query row per position).
//!
//! `partial` — one cube per (split, set, query row): tiles of K and V rows are gathered into shared
//! memory (converted to f32), the G query heads of the set score them, and an online softmax keeps
//! (max, sum, accumulator) per head. `combine` merges the splits.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::{arg, upload_u32};
use crate::select::Selection;
use crate::{AttendShape, KernelError};

/// K/V elements per tile (rows = TILE_ELEMS / d): 16 KiB of f32 K+V in shared memory whatever
/// the head size, which fits the 32 KiB that every runtime we target offers.
const TILE_ELEMS: usize = 2048;
/// Fewer rows than this per split is not worth a cube.
const MIN_ROWS_PER_SPLIT: usize = 128;
/// Aim for about this many cubes in `partial`.
const TARGET_CUBES: usize = 528;

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn partial_kernel<F: Float>(
    q: &Array<f32>,
    k: &Array<F>,
    v: &Array<F>,
    row_seq: &Array<u32>,
    row_len: &Array<u32>,
    indices: &Array<u32>,
    counts: &Array<u32>,
    part_ml: &mut Array<f32>,
    part_acc: &mut Array<f32>,
    cap: u32,
    index_cap: u32,
    rows_per_split: u32,
    splits: u32,
    scale: f32,
    #[comptime] q_heads: usize,
    #[comptime] kv_heads: usize,
    #[comptime] sets: usize,
    #[comptime] d: usize,
    #[comptime] sparse: bool,
) {
    let split = CUBE_POS_X as usize;
    let s = CUBE_POS_Y as usize;
    let r = CUBE_POS_Z as usize;
    let unit = UNIT_POS as usize;
    let group = comptime!(q_heads / sets);
    let tile = comptime!(TILE_ELEMS / d);
    let stride = comptime!(d + 1); // padded rows: units reading one column hit distinct banks
    let kv = s * kv_heads / sets;
    let seq = row_seq[r] as usize;
    let kv_base = (seq * kv_heads + kv) * cap as usize;
    let mut total = row_len[r] as usize;
    if comptime!(sparse) {
        total = counts[r * sets + s] as usize;
    }
    let start = split * rows_per_split as usize;
    let mut end = start + rows_per_split as usize;
    if end > total {
        end = total;
    }

    let mut qs = SharedMemory::<f32>::new(group * d);
    let mut ks = SharedMemory::<f32>::new(tile * stride);
    let mut vs = SharedMemory::<f32>::new(tile * stride);
    let mut ps = SharedMemory::<f32>::new(group * tile);
    let mut run_max = SharedMemory::<f32>::new(group);
    let mut run_sum = SharedMemory::<f32>::new(group);
    let mut rescale = SharedMemory::<f32>::new(group);

    for it in 0..comptime!((group * d).div_ceil(256)) {
        let i = it * 256usize + unit;
        if i < group * d {
            qs[i] = q[(r * q_heads + s * group) * d + i];
        }
    }
    if unit < group {
        // A finite start for the running max, so exp(m_old − m_new) never sees inf − inf.
        run_max[unit] = -1.0e30f32;
        run_sum[unit] = 0.0;
    }
    let owned = comptime!((group * d).div_ceil(256));
    let mut acc = Array::<f32>::new(owned);
    for i in 0..owned {
        acc[i] = 0.0;
    }
    sync_cube();

    let mut t0 = start;
    while t0 < end {
        let mut rows = end - t0;
        if rows > tile {
            rows = tile;
        }
        // Gather the tile's K and V rows together, so both are in flight at once.
        #[unroll]
        for it in 0..comptime!(TILE_ELEMS / 256usize) {
            let e = it * 256usize + unit;
            let rr = e / d;
            let j = e % d;
            if rr < rows {
                let mut t = t0 + rr;
                if comptime!(sparse) {
                    t = indices[(r * sets + s) * index_cap as usize + t] as usize;
                }
                let at = (kv_base + t) * d + j;
                ks[rr * stride + j] = f32::cast_from(k[at]);
                vs[rr * stride + j] = f32::cast_from(v[at]);
            }
        }
        sync_cube();
        for it in 0..comptime!((group * tile).div_ceil(256)) {
            let u = it * 256usize + unit;
            if u < group * tile {
                let g = u / tile;
                let rr = u % tile;
                if rr < rows {
                    let mut dot = 0.0f32;
                    #[unroll]
                    for i in 0..d {
                        dot += qs[g * d + i] * ks[rr * stride + i];
                    }
                    ps[u] = dot * scale;
                } else {
                    ps[u] = -1.0e30f32;
                }
            }
        }
        sync_cube();
        if unit < group {
            let old = run_max[unit];
            let mut best = old;
            for rr in 0..rows {
                let p = ps[unit * tile + rr];
                if p > best {
                    best = p;
                }
            }
            let mut sum = 0.0f32;
            for rr in 0..rows {
                let p = f32::exp(ps[unit * tile + rr] - best);
                ps[unit * tile + rr] = p;
                sum += p;
            }
            let alpha = f32::exp(old - best);
            rescale[unit] = alpha;
            run_sum[unit] = run_sum[unit] * alpha + sum;
            run_max[unit] = best;
        }
        sync_cube();
        for i in 0..owned {
            let e = i * 256usize + unit;
            if e < group * d {
                let g = e / d;
                let j = e % d;
                let mut a = acc[i] * rescale[g];
                for rr in 0..rows {
                    a += ps[g * tile + rr] * vs[rr * stride + j];
                }
                acc[i] = a;
            }
        }
        sync_cube();
        t0 += tile;
    }

    let part = ((r * sets + s) * splits as usize + split) * group;
    for i in 0..owned {
        let e = i * 256usize + unit;
        if e < group * d {
            part_acc[part * d + e] = acc[i];
        }
    }
    if unit < group {
        part_ml[(part + unit) * 2] = run_max[unit];
        part_ml[(part + unit) * 2 + 1] = run_sum[unit];
    }
}

#[cube(launch)]
fn combine_kernel(
    part_ml: &Array<f32>,
    part_acc: &Array<f32>,
    out: &mut Array<f32>,
    splits: u32,
    #[comptime] q_heads: usize,
    #[comptime] sets: usize,
    #[comptime] d: usize,
) {
    let h = CUBE_POS_X as usize;
    let r = CUBE_POS_Y as usize;
    let j = UNIT_POS as usize;
    let group = comptime!(q_heads / sets);
    let s = h / group;
    let g = h % group;
    let first = (r * sets + s) * splits as usize;
    let mut best = part_ml[first * group * 2 + g * 2];
    for sp in 1..splits as usize {
        let m = part_ml[((first + sp) * group + g) * 2];
        if m > best {
            best = m;
        }
    }
    let mut num = 0.0f32;
    let mut den = 0.0f32;
    for sp in 0..splits as usize {
        let at = (first + sp) * group + g;
        let weight = f32::exp(part_ml[at * 2] - best);
        den += weight * part_ml[at * 2 + 1];
        num += weight * part_acc[at * d + j];
    }
    let mut value = 0.0f32;
    if den > 0.0 {
        value = num / den;
    }
    out[(r * q_heads + h) * d + j] = value;
}

/// Where each query row's keys live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryRow {
    /// Sequence (batch index) of the KV cache.
    pub seq: usize,
    /// Rows visible to this query: `len` for decode, `position + 1` for causal prefill.
    pub len: usize,
}

/// The KV cache the rows attend to: `[batch][kv_heads][cap][d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    pub batch: usize,
    pub cap: usize,
}

/// Output `[rows][q_heads][d]` (f32) for queries `q` `[rows][q_heads][d]` (f32) over K/V of element
/// type `F`. With `selection`, row r attends only to its lists (`selection` has one list per
/// (row, set)); without, to its first `len` rows.
#[allow(clippy::too_many_arguments)]
pub fn attend<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    shape: &AttendShape,
    q: &Handle,
    k: &Handle,
    v: &Handle,
    kv: KvLayout,
    rows: &[QueryRow],
    selection: Option<(&Selection, usize)>,
    out: &Handle,
) -> Result<(), KernelError> {
    for (i, row) in rows.iter().enumerate() {
        if row.seq >= kv.batch {
            return Err(KernelError::Length {
                what: "query row sequence",
                expected: kv.batch,
                got: row.seq,
            });
        }
        if row.len > kv.cap {
            return Err(KernelError::OverCapacity {
                seq: i,
                len: row.len,
                cap: kv.cap,
            });
        }
    }
    if let Some((sel, _)) = selection {
        if sel.batch != rows.len() || sel.sets != shape.sets {
            return Err(KernelError::Length {
                what: "selection lists",
                expected: rows.len() * shape.sets,
                got: sel.batch * sel.sets,
            });
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let (d, sets, group) = (shape.head_dim, shape.sets, shape.group());
    // With a selection, the caller passes the longest list (it knows the plans).
    let longest = match selection {
        Some((_, longest)) => longest,
        None => rows.iter().map(|r| r.len).max().unwrap_or(0),
    };
    let wanted = (TARGET_CUBES / (rows.len() * sets)).max(1);
    let splits = longest.div_ceil(MIN_ROWS_PER_SPLIT).clamp(1, wanted);
    let rows_per_split = longest.div_ceil(splits).max(1);

    let n = rows.len();
    let row_seq = upload_u32(
        client,
        &rows.iter().map(|r| r.seq as u32).collect::<Vec<_>>(),
    );
    let row_len = upload_u32(
        client,
        &rows.iter().map(|r| r.len as u32).collect::<Vec<_>>(),
    );
    let parts = n * sets * splits * group;
    let part_ml = client.empty(4 * 2 * parts);
    let part_acc = client.empty(4 * d * parts);
    let (indices, counts, index_cap) = match selection {
        Some((sel, _)) => (sel.indices.clone(), sel.counts.clone(), sel.index_cap),
        None => (row_seq.clone(), row_len.clone(), 1),
    };
    let kv_len = kv.batch * shape.kv_heads * kv.cap * d;
    partial_kernel::launch::<F, R>(
        client,
        CubeCount::Static(splits as u32, sets as u32, n as u32),
        CubeDim::new_1d(256),
        arg(q, n * shape.q_heads * d),
        arg(k, kv_len),
        arg(v, kv_len),
        arg(&row_seq, n),
        arg(&row_len, n),
        arg(&indices, n * sets * index_cap),
        arg(&counts, n * sets),
        arg(&part_ml, 2 * parts),
        arg(&part_acc, d * parts),
        kv.cap as u32,
        index_cap as u32,
        rows_per_split as u32,
        splits as u32,
        1.0 / (d as f32).sqrt(),
        shape.q_heads,
        shape.kv_heads,
        sets,
        d,
        selection.is_some(),
    );
    combine_kernel::launch::<R>(
        client,
        CubeCount::Static(shape.q_heads as u32, n as u32, 1),
        CubeDim::new_1d(d as u32),
        arg(&part_ml, 2 * parts),
        arg(&part_acc, d * parts),
        arg(out, n * shape.q_heads * d),
        splits as u32,
        shape.q_heads,
        sets,
        d,
    );
    Ok(())
}
