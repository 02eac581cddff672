//! attend: split-K (flash-decoding style) attention of query rows over cached K/V rows, either the
//! selected rows of each set (sparse) or the first `len` rows (dense; causal prefill is dense with
//! one query row per position).
//!
//! `partial` — one cube per (split, set, query row); planes take `plane` rows per step, lanes over
//! rows for q·k and over elements for p·V (see the kernel). `combine` merges the splits.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::{arg, upload_u32};
use crate::select::Selection;
use crate::{AttendShape, KernelError};

/// Planes (warps) per cube at most; fewer when G·d is large, so the in-cube merge fits in 32 KiB.
const MAX_PLANES: usize = 8;
/// Fewer rows than this per split is not worth a cube.
const MIN_ROWS_PER_SPLIT: usize = 128;
/// Cubes per SM to aim for.
const CUBES_PER_SM: usize = 4;
/// Splits `combine` reads per loop iteration.
const COMBINE_UNROLL: usize = 8;

/// Planes per cube for a group of `group` heads of size `d`: the merge keeps planes·G·d floats.
fn planes_per_cube(group: usize, d: usize) -> usize {
    (8192 / (group * d)).clamp(1, MAX_PLANES)
}

/// One cube per (split, set, query row). Each plane takes `plane` rows per step, as
/// FlashDecoding does: for q·k a lane owns a whole row (16-byte loads, the queries broadcast from
/// shared memory, no cross-lane sums); the online softmax needs one plane max and one plane sum
/// per head per step; for p·V a lane owns d / plane elements of every row, each row's position
/// and probabilities shuffled from the lane that scored it. No barrier in the loop. At the end the planes
/// merge through shared memory into one partial per cube.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn partial_kernel<F: Float, N: Size, NV: Size>(
    q: &Array<Vector<f32, Const<4>>>,
    k: &Array<Vector<F, N>>,
    v: &Array<Vector<F, NV>>,
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
    #[comptime] plane: usize,
    #[comptime] planes: usize,
    #[comptime] vec: usize,
    #[comptime] v_vec: usize,
    #[comptime] sparse: bool,
) {
    let split = CUBE_POS_X as usize;
    let s = CUBE_POS_Y as usize;
    let r = CUBE_POS_Z as usize;
    let unit = UNIT_POS as usize;
    let lane = unit % plane;
    let plane_id = unit / plane;
    let group = comptime!(q_heads / sets);
    let per_lane = comptime!(d / plane);
    let chunks = comptime!(d / vec);
    let threads = comptime!(plane * planes);
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

    // The queries, pre-scaled by 1/√d, as 4-float vectors; every lane reads the same vector at
    // once (a broadcast), one 16-byte shared load per four multiply-adds.
    let q4 = comptime!(group * d / 4);
    let mut qs = SharedMemory::<Vector<f32, Const<4>>>::new(q4);
    for it in 0..comptime!(q4.div_ceil(threads)) {
        let i = it * threads + unit;
        if i < q4 {
            qs[i] = q[(r * q_heads + s * group) * (d / 4) + i] * Vector::new(scale);
        }
    }
    let mut m = Array::<f32>::new(group);
    let mut l = Array::<f32>::new(group);
    let mut acc = Array::<f32>::new(group * per_lane);
    #[unroll]
    for g in 0..group {
        // A finite start for the running max, so exp(m_old − m_new) never sees inf − inf.
        m[g] = -1.0e30f32;
        l[g] = 0.0;
    }
    #[unroll]
    for i in 0..group * per_lane {
        acc[i] = 0.0;
    }
    sync_cube();

    let mut t0 = start + plane_id * plane;
    while t0 < end {
        // q·k: lane ↔ row. A lane past the end reads the step's first row (always in range)
        // and gets probability 0, so no load below is behind a branch: the compiler can issue
        // a step's loads together.
        let t = t0 + lane;
        let valid = t < end;
        let mut row = t0;
        if valid {
            row = t;
        }
        if comptime!(sparse) {
            row = indices[(r * sets + s) * index_cap as usize + row] as usize;
        }
        let mut logit = Array::<f32>::new(group);
        #[unroll]
        for g in 0..group {
            logit[g] = 0.0;
        }
        let base = (kv_base + row) * chunks;
        let mut kf = Array::<f32>::new(vec);
        #[unroll]
        for c in 0..chunks {
            let kc = k[base + c];
            #[unroll]
            for x in 0..vec {
                kf[x] = f32::cast_from(kc[x]);
            }
            #[unroll]
            for x4 in 0..comptime!(vec / 4) {
                #[unroll]
                for g in 0..group {
                    let qv = qs[(g * d + c * vec) / 4 + x4];
                    #[unroll]
                    for y in 0..4usize {
                        logit[g] += qv[y] * kf[x4 * 4 + y];
                    }
                }
            }
        }
        // One online-softmax update per head for the step's rows.
        let mut prob = Array::<f32>::new(group);
        #[unroll]
        for g in 0..group {
            let mut mine = logit[g];
            if !valid {
                mine = -1.0e30f32;
            }
            let step_max = plane_max(mine);
            let mut best = m[g];
            if step_max > best {
                best = step_max;
            }
            let alpha = f32::exp(m[g] - best);
            let mut p = 0.0f32;
            if valid {
                p = f32::exp(logit[g] - best);
            }
            l[g] = l[g] * alpha + plane_sum(p);
            m[g] = best;
            prob[g] = p;
            #[unroll]
            for e in 0..per_lane {
                acc[g * per_lane + e] *= alpha;
            }
        }
        // p·V: lane ↔ elements of each row (vector loads of v_vec elements); row j's position
        // and probabilities come from lane j (probability 0 past the end).
        #[unroll]
        for j in 0..plane {
            let at = ((kv_base + plane_shuffle(row as u32, j as u32) as usize) * d
                + lane * per_lane)
                / v_vec;
            let mut pj = Array::<f32>::new(group);
            #[unroll]
            for g in 0..group {
                pj[g] = plane_shuffle(prob[g], j as u32);
            }
            #[unroll]
            for u in 0..comptime!(per_lane / v_vec) {
                let vv = v[at + u];
                #[unroll]
                for x in 0..v_vec {
                    let vx = f32::cast_from(vv[x]);
                    #[unroll]
                    for g in 0..group {
                        acc[g * per_lane + u * v_vec + x] += pj[g] * vx;
                    }
                }
            }
        }
        t0 += planes * plane;
    }

    // Merge the planes' states into the cube's partial.
    let mut sm = SharedMemory::<f32>::new(planes * group);
    let mut sl = SharedMemory::<f32>::new(planes * group);
    let mut sacc = SharedMemory::<f32>::new(planes * group * d);
    #[unroll]
    for g in 0..group {
        if lane == 0 {
            sm[plane_id * group + g] = m[g];
            sl[plane_id * group + g] = l[g];
        }
        #[unroll]
        for e in 0..per_lane {
            sacc[(plane_id * group + g) * d + lane * per_lane + e] = acc[g * per_lane + e];
        }
    }
    sync_cube();
    let part = ((r * sets + s) * splits as usize + split) * group;
    for it in 0..comptime!((group * d).div_ceil(threads)) {
        let i = it * threads + unit;
        if i < group * d {
            let g = i / d;
            let mut best = sm[g];
            for p in 1..planes {
                let mp = sm[p * group + g];
                if mp > best {
                    best = mp;
                }
            }
            let mut sum = 0.0f32;
            let mut value = 0.0f32;
            for p in 0..planes {
                let w = f32::exp(sm[p * group + g] - best);
                sum += w * sl[p * group + g];
                value += w * sacc[p * group * d + i];
            }
            part_acc[part * d + i] = value;
            if i == g * d {
                part_ml[(part + g) * 2] = best;
                part_ml[(part + g) * 2 + 1] = sum;
            }
        }
    }
}

#[cube(launch_unchecked)]
fn combine_kernel(
    part_ml: &Array<f32>,
    part_acc: &Array<f32>,
    out: &mut Array<f32>,
    splits: u32,
    #[comptime] q_heads: usize,
    #[comptime] sets: usize,
    #[comptime] d: usize,
    #[comptime] max_splits: usize,
) {
    let h = CUBE_POS_X as usize;
    let r = CUBE_POS_Y as usize;
    let j = UNIT_POS as usize;
    let group = comptime!(q_heads / sets);
    let s = h / group;
    let g = h % group;
    let first = (r * sets + s) * splits as usize;
    let splits = splits as usize;
    // The splits' (max, sum) pairs come in with one load per unit, not a serial chain per unit.
    let mut sm = SharedMemory::<f32>::new(max_splits);
    let mut sw = SharedMemory::<f32>::new(max_splits);
    for it in 0..comptime!(max_splits.div_ceil(d)) {
        let sp = it * d + j;
        if sp < splits {
            sm[sp] = part_ml[((first + sp) * group + g) * 2];
        }
    }
    sync_cube();
    let mut best = sm[0];
    for sp in 1..splits {
        if sm[sp] > best {
            best = sm[sp];
        }
    }
    for it in 0..comptime!(max_splits.div_ceil(d)) {
        let sp = it * d + j;
        if sp < splits {
            sw[sp] = f32::exp(sm[sp] - best);
        }
    }
    sync_cube();
    // UNROLL splits per iteration: their loads are independent and go out together.
    let mut num = 0.0f32;
    let mut den = 0.0f32;
    for base in 0..splits.div_ceil(COMBINE_UNROLL) {
        #[unroll]
        for u in 0..COMBINE_UNROLL {
            let sp = base * COMBINE_UNROLL + u;
            if sp < splits {
                let at = (first + sp) * group + g;
                den += sw[sp] * part_ml[at * 2 + 1];
                num += sw[sp] * part_acc[at * d + j];
            }
        }
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

/// Query rows with their (sequence, length) already on the device: uploaded once per decode step
/// and shared by every layer, so `attend` itself copies nothing from the host.
pub struct QueryRows {
    pub rows: Vec<QueryRow>,
    seq: Handle,
    len: Handle,
}

impl QueryRows {
    /// Rows whose sequences and lengths are already on the device (u32 columns `seq` and `len`
    /// of at least `rows.len()` each): a decoder writes them into buffers it keeps.
    pub fn on_device(rows: Vec<QueryRow>, seq: Handle, len: Handle) -> Self {
        Self { rows, seq, len }
    }

    pub fn upload<R: Runtime>(client: &ComputeClient<R>, rows: &[QueryRow]) -> Self {
        let column =
            |f: fn(&QueryRow) -> usize| rows.iter().map(|r| f(r) as u32).collect::<Vec<_>>();
        Self {
            rows: rows.to_vec(),
            seq: upload_u32(client, &column(|r| r.seq)),
            len: upload_u32(client, &column(|r| r.len)),
        }
    }
}

/// The KV cache the rows attend to: `[batch][kv_heads][cap][d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    pub batch: usize,
    pub cap: usize,
}

/// Splits `partial` aims for per (row, set): one wave of CUBES_PER_SM cubes per SM.
fn wanted_splits<R: Runtime>(client: &ComputeClient<R>, rows: usize, sets: usize) -> usize {
    let props = &client.properties().hardware;
    let sms = props.num_streaming_multiprocessors.unwrap_or(16) as usize;
    (sms * CUBES_PER_SM / (rows * sets).max(1)).max(1)
}

/// The split partials of `attend` (running max and sum, and the weighted values), held for a
/// decoder's life: a step that allocates nothing can be replayed as it was recorded.
pub struct AttendScratch {
    rows: usize,
    parts: usize,
    ml: Handle,
    acc: Handle,
}

impl AttendScratch {
    /// Room for up to `rows` query rows of `shape` on this device.
    pub fn new<R: Runtime>(client: &ComputeClient<R>, shape: &AttendShape, rows: usize) -> Self {
        let most = (1..=rows.max(1))
            .map(|n| n * shape.sets * wanted_splits(client, n, shape.sets))
            .max()
            .unwrap_or(1);
        let parts = most * shape.group();
        Self {
            rows: rows.max(1),
            parts,
            ml: client.empty(4 * 2 * parts),
            acc: client.empty(4 * shape.head_dim * parts),
        }
    }
}

/// Output `[rows][q_heads][d]` (f32) for queries `q` `[rows][q_heads][d]` (f32) over K/V of element
/// type `F`. With `selection`, row r attends only to its lists (`selection` has one list per
/// (row, set)) and the caller passes the longest list; without, to its first `len` rows.
#[allow(clippy::too_many_arguments)]
pub fn attend<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    shape: &AttendShape,
    q: &Handle,
    k: &Handle,
    v: &Handle,
    kv: KvLayout,
    query_rows: &QueryRows,
    selection: Option<(&Selection, usize)>,
    out: &Handle,
) -> Result<(), KernelError> {
    let span = match selection {
        Some((_, longest)) => longest,
        None => query_rows.rows.iter().map(|r| r.len).max().unwrap_or(0),
    };
    let scratch = AttendScratch::new(client, shape, query_rows.rows.len());
    let lists = selection.map(|(sel, _)| sel);
    attend_into::<R, F>(
        client,
        shape,
        (q, k, v),
        kv,
        query_rows,
        lists,
        span,
        out,
        &scratch,
    )
}

/// [`attend`] into preallocated partials, the work split for rows (or lists) of up to `span`
/// keys: every launch value follows from `span`, the row count and the buffers, so steps of one
/// `span` launch the same kernels with the same arguments (what a recorded step needs). Dense
/// rows longer than `span` are an error; with a selection, `span` must be at least its longest
/// list.
#[allow(clippy::too_many_arguments)]
pub fn attend_into<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    shape: &AttendShape,
    (q, k, v): (&Handle, &Handle, &Handle),
    kv: KvLayout,
    query_rows: &QueryRows,
    selection: Option<&Selection>,
    span: usize,
    out: &Handle,
    scratch: &AttendScratch,
) -> Result<(), KernelError> {
    let rows = &query_rows.rows;
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
        if selection.is_none() && row.len > span {
            return Err(KernelError::Length {
                what: "attention span (longest row)",
                expected: row.len,
                got: span,
            });
        }
    }
    if let Some(sel) = selection {
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
    if rows.len() > scratch.rows {
        return Err(KernelError::Length {
            what: "attention partials (query rows)",
            expected: rows.len(),
            got: scratch.rows,
        });
    }
    let (d, sets, group) = (shape.head_dim, shape.sets, shape.group());
    let props = &client.properties().hardware;
    let plane = props.plane_size_max as usize;
    if plane == 0
        || props.plane_size_min != props.plane_size_max
        || !d.is_multiple_of(plane)
        || plane > d
    {
        return Err(KernelError::PlaneSize {
            plane: props.plane_size_max as usize,
            d,
        });
    }
    let wanted = wanted_splits(client, rows.len(), sets);
    let split = |longest: usize| {
        let splits = longest.div_ceil(MIN_ROWS_PER_SPLIT).clamp(1, wanted);
        (splits, longest.div_ceil(splits).max(1))
    };
    let (splits, rows_per_split) = split(span);
    // No plane without rows: a short split (a sparse list) takes fewer planes, so more cubes
    // fit on an SM and the grid stays one wave. Planes are a compile-time value, so they follow
    // the longest list the call could have (the lists' or the cache's capacity), not this step's:
    // one kernel serves every length, and no step of a running decoder waits for a compile.
    let capacity = selection.map_or(kv.cap, |sel| sel.index_cap);
    let planes = planes_per_cube(group, d).min(split(capacity.max(span)).1.div_ceil(plane));

    let n = rows.len();
    let (row_seq, row_len) = (&query_rows.seq, &query_rows.len);
    let parts = n * sets * splits * group;
    debug_assert!(
        parts <= scratch.parts,
        "partials sized for every split count"
    );
    let (part_ml, part_acc) = (&scratch.ml, &scratch.acc);
    let (indices, counts, index_cap) = match selection {
        Some(sel) => (sel.indices.clone(), sel.counts.clone(), sel.index_cap),
        None => (row_seq.clone(), row_len.clone(), 1),
    };
    let kv_len = kv.batch * shape.kv_heads * kv.cap * d;
    // K rows are read as 16-byte vectors; V as vectors of a lane's share of a row (≤ 16 bytes).
    let vec = (16 / core::mem::size_of::<F>()).min(d);
    let v_vec = (1usize << (d / plane).trailing_zeros()).min(vec);
    // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
    unsafe {
        partial_kernel::launch_unchecked::<F, R>(
            client,
            CubeCount::Static(splits as u32, sets as u32, n as u32),
            CubeDim::new_1d((plane * planes) as u32),
            vec,
            v_vec,
            arg(q, n * shape.q_heads * d / 4),
            arg(k, kv_len / vec),
            arg(v, kv_len / v_vec),
            arg(row_seq, n),
            arg(row_len, n),
            arg(&indices, n * sets * index_cap),
            arg(&counts, n * sets),
            arg(part_ml, 2 * parts),
            arg(part_acc, d * parts),
            kv.cap as u32,
            index_cap as u32,
            rows_per_split as u32,
            splits as u32,
            1.0 / (d as f32).sqrt(),
            shape.q_heads,
            shape.kv_heads,
            sets,
            d,
            plane,
            planes,
            vec,
            v_vec,
            selection.is_some(),
        )
    };
    // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
    unsafe {
        combine_kernel::launch_unchecked::<R>(
            client,
            CubeCount::Static(shape.q_heads as u32, n as u32, 1),
            CubeDim::new_1d(d as u32),
            arg(part_ml, 2 * parts),
            arg(part_acc, d * parts),
            arg(out, n * shape.q_heads * d),
            splits as u32,
            shape.q_heads,
            sets,
            d,
            // The most splits any length can take (compile-time, as the planes above).
            wanted.next_power_of_two(),
        )
    };
    Ok(())
}
