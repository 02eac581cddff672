//! select: group scores by XOR+popcount, then the budget's top-k by histogram, never a sort.
//!
//! Three launches per (layer, step), each reading little more than it must:
//! 1. `score_hist`: every key code is read once; scores (≤ 16 bits) are written packed two per
//!    word, set-major, and counted into a per-(sequence, set) histogram over the middle tokens.
//! 2. `count`: every cube first finds, from the small histogram (in L2), the score T of the k-th
//!    best middle token, how many beat it, and how many of the tokens tied at T to skip (the
//!    oldest: ties prefer recent tokens); then per chunk of 4096 tokens, how many beat and tie T.
//! 3. `compact`: each chunk writes its chosen tokens at their final positions (earlier chunks'
//!    counts + an in-cube scan), so index lists come out sorted and identical on every run. It
//!    also zeroes the histogram for the next call.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::{arg, cubes, filled_u32, upload_u32};
use crate::{CodeShape, KernelError, SequencePlan};

/// Scores tallied per unit in `count` / `compact` (even).
const PER_UNIT: usize = 16;
/// Tokens per chunk of `count` / `compact`.
const COUNT_CHUNK: usize = 256 * PER_UNIT;
/// u32 words of packed scores a `score_hist` cube stages in shared memory per chunk.
const STAGED_WORDS: usize = 2048;
/// Shared-memory budget for the per-cube histograms, in u32 bins.
const MAX_LOCAL_BINS: usize = 8192;
/// `score_hist` cubes resident per SM: its ~100 registers per unit (H200, ncu) allow 2 cubes of
/// 256. The grid is sized to one such wave, each cube taking several chunks, so the histogram's
/// set-up and flush are paid once per cube and no partial second wave runs alone.
const CUBES_PER_SM: usize = 2;
/// `score_hist` loop iterations whose code loads are issued together.
const BATCH_ITERS: usize = 4;

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn score_hist_kernel<N: Size>(
    q_codes: &Array<u32>,
    k_codes: &Array<Vector<u32, N>>,
    plan: &Array<u32>,
    scores: &mut Array<u32>,
    hist: &mut Array<Atomic<u32>>,
    cap: u32,
    cap_pairs: u32,
    chunks_per_cube: u32,
    #[comptime] sets: usize,
    #[comptime] group: usize,
    #[comptime] words: usize,
    #[comptime] vec: usize,
    #[comptime] chunk: usize,
    #[comptime] bins: usize,
) {
    let b = CUBE_POS_Y as usize;
    let unit = UNIT_POS as usize;
    let middle = read_plan(plan, b);
    let (len, sink, mid_end) = (middle.len, middle.sink, middle.mid_end);
    let half = comptime!(chunk / 2);
    let q_words = comptime!(sets * group * words);
    let all_bits = comptime!((group * words * 32) as u32);

    let local = SharedMemory::<Atomic<u32>>::new(sets * bins);
    let mut staged = SharedMemory::<u32>::new(sets * half);
    for it in 0..comptime!((sets * bins).div_ceil(256)) {
        let i = it * 256usize + unit;
        if i < sets * bins {
            local[i].store(0u32);
        }
    }
    // Each unit keeps one set for the whole cube, so its query codes live in registers.
    let slots = comptime!(256 / sets);
    let s = unit % sets;
    let slot = unit / sets;
    let vecs = comptime!(words / vec);
    let mut qr = Array::<u32>::new(group * words);
    #[unroll]
    for i in 0..group * words {
        qr[i] = q_codes[b * q_words + s * group * words + i];
    }
    sync_cube();

    for c in 0..chunks_per_cube as usize {
        let t0 = (CUBE_POS_X as usize * chunks_per_cube as usize + c) * chunk;
        if t0 < len {
            // Neighbouring units read neighbouring codes: (pair of tokens, set), set fastest.
            // A batch of BATCH_ITERS iterations' code loads is issued first, so they are in
            // flight together rather than one pair at a time between the histogram's shared
            // atomics; batches, not the whole chunk, keep the registers (and so the cubes per SM)
            // in bounds.
            let iters = comptime!(half.div_ceil(slots));
            let batch = comptime!(iters.min(BATCH_ITERS));
            for bi in 0..comptime!(iters.div_ceil(batch)) {
                let mut kc = Array::<Vector<u32, N>>::new(comptime!(batch * 2 * vecs));
                #[unroll]
                for i in 0..batch {
                    let it = bi * batch + i;
                    let p = it * slots + slot;
                    #[unroll]
                    for e in 0..2usize {
                        let t = t0 + 2 * p + e;
                        if slot < slots && p < half && t < len {
                            let base = ((b * cap as usize + t) * sets + s) * vecs;
                            #[unroll]
                            for vi in 0..vecs {
                                kc[(i * 2 + e) * vecs + vi] = k_codes[base + vi];
                            }
                        }
                    }
                }
                #[unroll]
                for i in 0..batch {
                    let it = bi * batch + i;
                    let p = it * slots + slot;
                    if slot < slots && p < half {
                        let mut word = 0u32;
                        #[unroll]
                        for e in 0..2usize {
                            let t = t0 + 2 * p + e;
                            if t < len {
                                let mut differ = 0u32;
                                #[unroll]
                                for vi in 0..vecs {
                                    let kv = kc[(i * 2 + e) * vecs + vi];
                                    #[unroll]
                                    for x in 0..vec {
                                        let kw = kv[x];
                                        #[unroll]
                                        for g in 0..group {
                                            differ +=
                                                (qr[g * words + vi * vec + x] ^ kw).count_ones();
                                        }
                                    }
                                }
                                let score = all_bits - differ;
                                if t >= sink && t < mid_end {
                                    local[s * bins + score as usize].fetch_add(1u32);
                                }
                                word |= score << (16 * e as u32);
                            }
                        }
                        staged[s * half + p] = word;
                    }
                }
            }
            sync_cube();
            // Set-major write-out: neighbouring units write neighbouring words.
            for it in 0..comptime!((sets * half).div_ceil(256)) {
                let idx = it * 256usize + unit;
                if idx < sets * half {
                    let s = idx / half;
                    let pair = t0 / 2 + idx % half;
                    if pair * 2 < len {
                        scores[(b * sets + s) * cap_pairs as usize + pair] = staged[idx];
                    }
                }
            }
            sync_cube();
        }
    }

    for it in 0..comptime!((sets * bins).div_ceil(256)) {
        let i = it * 256usize + unit;
        if i < sets * bins {
            let v = local[i].load();
            if v > 0 {
                hist[b * sets * bins + i].fetch_add(v);
            }
        }
    }
}

/// The k-th best middle score T of one (sequence, set), how many beat it, and how many of the
/// tokens tied at T to skip (the oldest), into `found[0..3]` for every unit of the cube.
#[cube]
fn find_threshold(
    hist: &Array<u32>,
    base: usize,
    top_k: u32,
    found: &mut SharedMemory<u32>,
    #[comptime] bins: usize,
) {
    let unit = UNIT_POS as usize;
    let per = comptime!(bins.div_ceil(256));
    let mut h = SharedMemory::<u32>::new(per * 256usize);
    let mut suffix = SharedMemory::<u32>::new(256usize);

    // Each unit owns bins [unit·per, (unit+1)·per).
    let mut own = 0u32;
    for i in 0..per {
        let v_idx = unit * per + i;
        let mut v = 0u32;
        if v_idx < bins {
            v = hist[base + v_idx];
        }
        h[v_idx] = v;
        own += v;
    }
    suffix[unit] = own;
    sync_cube();
    // Inclusive suffix sums over the units' segments.
    let mut step = 1usize;
    for _ in 0..8u32 {
        let mut add = 0u32;
        if unit + step < 256usize {
            add = suffix[unit + step];
        }
        sync_cube();
        suffix[unit] += add;
        sync_cube();
        step *= 2;
    }

    let after = suffix[unit] - own;
    if top_k == 0 {
        if unit == 0 {
            found[0usize] = bins as u32;
            found[1usize] = 0u32;
            found[2usize] = 0u32;
        }
    } else if after < top_k && after + own >= top_k {
        // The k-th best score lies in this unit's segment: walk it from the top.
        let mut cum = after;
        let mut done = false;
        for i in 0..per {
            let v_idx = unit * per + (per - 1 - i);
            if !done && v_idx < bins {
                let c = h[v_idx];
                if cum + c >= top_k {
                    found[0usize] = v_idx as u32;
                    found[1usize] = cum;
                    found[2usize] = c - (top_k - cum);
                    done = true;
                }
                cum += c;
            }
        }
    }
    sync_cube();
}

/// A sequence's plan as the kernels read it: middle tokens are `[sink, mid_end)`.
#[derive(CubeType)]
struct Middle {
    len: usize,
    sink: usize,
    mid_end: usize,
}

#[cube]
fn read_plan(plan: &Array<u32>, b: usize) -> Middle {
    let len = plan[b * 4] as usize;
    Middle {
        len,
        sink: plan[b * 4 + 1] as usize,
        mid_end: len - plan[b * 4 + 2] as usize,
    }
}

/// (beat T, tied with T) among one unit's middle tokens, packed as `beat | tied << 16`.
#[cube]
fn tally(
    scores: &Array<u32>,
    row: usize,
    t0: usize,
    len: usize,
    sink: usize,
    mid_end: usize,
    threshold: u32,
) -> u32 {
    let mut beat = 0u32;
    let mut tied = 0u32;
    #[unroll]
    for i in 0..comptime!(PER_UNIT / 2) {
        let t = t0 + 2 * i;
        if t < len {
            let word = scores[row + t / 2];
            #[unroll]
            for e in 0..2usize {
                let te = t + e;
                let score = (word >> (16 * e as u32)) & 0xFFFFu32;
                if te >= sink && te < mid_end {
                    if score > threshold {
                        beat += 1;
                    } else if score == threshold {
                        tied += 1;
                    }
                }
            }
        }
    }
    beat | (tied << 16)
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn count_kernel(
    scores: &Array<u32>,
    plan: &Array<u32>,
    hist: &Array<u32>,
    meta: &mut Array<u32>,
    counts: &mut Array<u32>,
    chunk_counts: &mut Array<u32>,
    cap_pairs: u32,
    chunks: u32,
    #[comptime] sets: usize,
    #[comptime] bins: usize,
) {
    let c = CUBE_POS_X as usize;
    let s = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let unit = UNIT_POS as usize;
    let middle = read_plan(plan, b);
    let (len, sink, mid_end) = (middle.len, middle.sink, middle.mid_end);
    let top_k = plan[b * 4 + 3];
    // Every cube finds the threshold itself (the histogram is small and in L2): one launch fewer.
    let mut found = SharedMemory::<u32>::new(3usize);
    find_threshold(hist, (b * sets + s) * bins, top_k, &mut found, bins);
    let threshold = found[0usize];
    if c == 0 && unit == 0 {
        let m = (b * sets + s) * 4;
        meta[m] = threshold;
        meta[m + 1] = found[1usize];
        meta[m + 2] = found[2usize];
        meta[m + 3] = top_k;
        counts[b * sets + s] = plan[b * 4 + 1] + top_k + plan[b * 4 + 2];
    }
    let row = (b * sets + s) * cap_pairs as usize;
    let total = SharedMemory::<Atomic<u32>>::new(1usize);
    if unit == 0 {
        total[0usize].store(0u32);
    }
    sync_cube();
    let t0 = (c * 256usize + unit) * PER_UNIT;
    let mine = tally(scores, row, t0, len, sink, mid_end, threshold);
    if mine > 0 {
        total[0usize].fetch_add(mine);
    }
    sync_cube();
    if unit == 0 {
        chunk_counts[(b * sets + s) * chunks as usize + c] = total[0usize].load();
    }
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)] // div_ceil is not a cube function
fn compact_kernel(
    scores: &Array<u32>,
    hist: &mut Array<u32>,
    plan: &Array<u32>,
    meta: &Array<u32>,
    chunk_counts: &Array<u32>,
    indices: &mut Array<u32>,
    cap_pairs: u32,
    chunks: u32,
    index_cap: u32,
    #[comptime] sets: usize,
    #[comptime] bins: usize,
) {
    let c = CUBE_POS_X as usize;
    let s = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let unit = UNIT_POS as usize;
    let middle = read_plan(plan, b);
    let (len, sink, mid_end) = (middle.len, middle.sink, middle.mid_end);
    let window = len - mid_end;
    let m = (b * sets + s) * 4;
    let threshold = meta[m];
    let skip = meta[m + 2];
    let top_k = meta[m + 3] as usize;
    let list = (b * sets + s) * index_cap as usize;

    // What earlier chunks chose.
    let before = SharedMemory::<Atomic<u32>>::new(2usize);
    if unit < 2 {
        before[unit].store(0u32);
    }
    sync_cube();
    let mut beat = 0u32;
    let mut tied = 0u32;
    for it in 0..(c + 255usize) / 256usize {
        let prev = it * 256usize + unit;
        if prev < c {
            let packed = chunk_counts[(b * sets + s) * chunks as usize + prev];
            beat += packed & 0xFFFFu32;
            tied += packed >> 16;
        }
    }
    before[0usize].fetch_add(beat);
    before[1usize].fetch_add(tied);

    // In-cube exclusive scan of the units' packed tallies (a cube's totals stay below 2^16).
    let mut scan = SharedMemory::<u32>::new(256usize);
    let row = (b * sets + s) * cap_pairs as usize;
    let t0 = (c * 256usize + unit) * PER_UNIT;
    let mine = tally(scores, row, t0, len, sink, mid_end, threshold);
    scan[unit] = mine;
    sync_cube();
    let mut step = 1usize;
    for _ in 0..8u32 {
        let mut add = 0u32;
        if unit >= step {
            add = scan[unit - step];
        }
        sync_cube();
        scan[unit] += add;
        sync_cube();
        step *= 2;
    }
    let exclusive = scan[unit] - mine;
    let mut beat_before = before[0usize].load() + (exclusive & 0xFFFFu32);
    let mut tied_before = before[1usize].load() + (exclusive >> 16);

    if mine > 0 {
        let out = list + sink;
        #[unroll]
        for i in 0..comptime!(PER_UNIT / 2) {
            let t = t0 + 2 * i;
            if t < len {
                let word = scores[row + t / 2];
                #[unroll]
                for e in 0..2usize {
                    let te = t + e;
                    let score = (word >> (16 * e as u32)) & 0xFFFFu32;
                    if te >= sink && te < mid_end {
                        if score > threshold {
                            let mut taken_ties = 0u32;
                            if tied_before > skip {
                                taken_ties = tied_before - skip;
                            }
                            indices[out + (beat_before + taken_ties) as usize] = te as u32;
                            beat_before += 1;
                        } else if score == threshold {
                            if tied_before >= skip {
                                indices[out + (beat_before + tied_before - skip) as usize] =
                                    te as u32;
                            }
                            tied_before += 1;
                        }
                    }
                }
            }
        }
    }

    // The forced sink and window, written once per list; the histogram left at zero for the
    // next call (`count`, its only reader, has finished).
    if c == 0 {
        for it in 0..comptime!(bins.div_ceil(256)) {
            let i = it * 256usize + unit;
            if i < bins {
                hist[(b * sets + s) * bins + i] = 0u32;
            }
        }
        for it in 0..(sink + 255usize) / 256usize {
            let i = it * 256usize + unit;
            if i < sink {
                indices[list + i] = i as u32;
            }
        }
        for it in 0..(window + 255usize) / 256usize {
            let i = it * 256usize + unit;
            if i < window {
                indices[list + sink + top_k + i] = (mid_end + i) as u32;
            }
        }
    }
}

/// Index lists on the device: `indices` `[batch][sets][index_cap]`, `counts` `[batch][sets]`.
pub struct Selection {
    pub batch: usize,
    pub sets: usize,
    pub index_cap: usize,
    pub indices: Handle,
    pub counts: Handle,
}

impl Selection {
    /// Lists with room for `index_cap` tokens each, filled with `poison` (tests) or anything.
    pub fn new<R: Runtime>(
        client: &ComputeClient<R>,
        batch: usize,
        sets: usize,
        index_cap: usize,
        poison: u32,
    ) -> Self {
        Self {
            batch,
            sets,
            index_cap,
            indices: filled_u32(client, batch * sets * index_cap.max(1), poison),
            counts: filled_u32(client, batch * sets, poison),
        }
    }
}

/// Workspace for selecting over key codes of `batch` sequences of capacity `cap`.
pub struct Selector {
    pub shape: CodeShape,
    pub batch: usize,
    pub cap: usize,
    cap_pairs: usize,
    chunk: usize,
    count_chunks: usize,
    scores: Handle,
    hist: Handle,
    meta: Handle,
    chunk_counts: Handle,
}

/// Per-sequence plans as the kernels read them: `[len, sink, window, top_k]`.
pub fn plan_words(plans: &[SequencePlan]) -> Vec<u32> {
    plans
        .iter()
        .flat_map(|p| [p.len as u32, p.sink as u32, p.window as u32, p.top_k as u32])
        .collect()
}

impl Selector {
    pub fn new<R: Runtime>(
        client: &ComputeClient<R>,
        shape: CodeShape,
        batch: usize,
        cap: usize,
    ) -> Result<Self, KernelError> {
        if shape.sets * shape.bins() > MAX_LOCAL_BINS || shape.bins() > 65535 {
            return Err(KernelError::TooManyBins(shape.bins()));
        }
        // Checked up front: a launch over the device's shared memory fails silently on some runtimes.
        let needed = 4 * (shape.sets * shape.bins() + STAGED_WORDS);
        let available = client.properties().hardware.max_shared_memory_size;
        if needed > available {
            return Err(KernelError::SharedMemory { needed, available });
        }
        let cap_pairs = cap.div_ceil(2).max(1);
        let count_chunks = cap.div_ceil(COUNT_CHUNK).max(1);
        // Tokens per score_hist chunk: the staged scores of all sets fill STAGED_WORDS words.
        let chunk = (2 * STAGED_WORDS / shape.sets).max(2) & !1;
        let sets_total = batch * shape.sets;
        Ok(Self {
            shape,
            batch,
            cap,
            cap_pairs,
            chunk,
            count_chunks,
            scores: client.empty(4 * sets_total * cap_pairs),
            hist: filled_u32(client, sets_total * shape.bins(), 0),
            meta: client.empty(4 * 4 * sets_total),
            chunk_counts: client.empty(4 * sets_total * count_chunks),
        })
    }

    fn check(&self, plans: &[SequencePlan], selection: &Selection) -> Result<(), KernelError> {
        if plans.len() != self.batch {
            return Err(KernelError::Length {
                what: "sequence plans",
                expected: self.batch,
                got: plans.len(),
            });
        }
        for (seq, p) in plans.iter().enumerate() {
            if p.len > self.cap {
                return Err(KernelError::OverCapacity {
                    seq,
                    len: p.len,
                    cap: self.cap,
                });
            }
            if p.selected() > selection.index_cap {
                return Err(KernelError::Length {
                    what: "index list capacity",
                    expected: p.selected(),
                    got: selection.index_cap,
                });
            }
        }
        if selection.batch != self.batch || selection.sets != self.shape.sets {
            return Err(KernelError::Length {
                what: "selection lists",
                expected: self.batch * self.shape.sets,
                got: selection.batch * selection.sets,
            });
        }
        Ok(())
    }

    /// Uploads the plans; the returned handle feeds the stage functions.
    pub fn upload_plans<R: Runtime>(
        &self,
        client: &ComputeClient<R>,
        plans: &[SequencePlan],
    ) -> Handle {
        upload_u32(client, &plan_words(plans))
    }

    /// All four stages: `q_codes` `[batch][q_heads][words]`, `k_codes` `[batch][cap][sets][words]`.
    pub fn run<R: Runtime>(
        &self,
        client: &ComputeClient<R>,
        q_codes: &Handle,
        k_codes: &Handle,
        plans: &[SequencePlan],
        selection: &Selection,
    ) -> Result<(), KernelError> {
        self.check(plans, selection)?;
        let plan = self.upload_plans(client, plans);
        let max_len = plans.iter().map(|p| p.len).max().unwrap_or(0);
        self.run_uploaded(client, q_codes, k_codes, &plan, max_len, selection);
        Ok(())
    }

    /// The four stages over plans already on the device (from [`Self::upload_plans`], checked by
    /// the caller): what a decode loop calls when the plans did not change.
    pub fn run_uploaded<R: Runtime>(
        &self,
        client: &ComputeClient<R>,
        q_codes: &Handle,
        k_codes: &Handle,
        plan: &Handle,
        max_len: usize,
        selection: &Selection,
    ) {
        self.score_hist(client, q_codes, k_codes, plan, max_len);
        self.count(client, plan, max_len, selection);
        self.compact(client, plan, max_len, selection);
    }

    pub fn score_hist<R: Runtime>(
        &self,
        client: &ComputeClient<R>,
        q_codes: &Handle,
        k_codes: &Handle,
        plan: &Handle,
        max_len: usize,
    ) {
        let s = self.shape;
        let (b, w) = (self.batch, s.words());
        let chunks = max_len.div_ceil(self.chunk).max(1);
        let sms = client
            .properties()
            .hardware
            .num_streaming_multiprocessors
            .unwrap_or(16) as usize;
        let per_cube = (chunks * b).div_ceil(sms * CUBES_PER_SM).max(1);
        // Codes are read as vectors of up to 4 words (16-byte loads).
        let vector = w.min(4);
        // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
        unsafe {
            score_hist_kernel::launch_unchecked::<R>(
                client,
                CubeCount::Static(chunks.div_ceil(per_cube) as u32, b as u32, 1),
                CubeDim::new_1d(256),
                vector,
                arg(q_codes, b * s.q_heads * w),
                arg(k_codes, b * self.cap * s.sets * w / vector),
                arg(plan, b * 4),
                arg(&self.scores, b * s.sets * self.cap_pairs),
                arg(&self.hist, b * s.sets * s.bins()),
                self.cap as u32,
                self.cap_pairs as u32,
                per_cube as u32,
                s.sets,
                s.group(),
                w,
                vector,
                self.chunk,
                s.bins(),
            )
        };
    }

    /// Threshold (per cube) and per-chunk tallies; writes the lists' lengths.
    pub fn count<R: Runtime>(
        &self,
        client: &ComputeClient<R>,
        plan: &Handle,
        max_len: usize,
        selection: &Selection,
    ) {
        let s = self.shape;
        let b = self.batch;
        // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
        unsafe {
            count_kernel::launch_unchecked::<R>(
                client,
                CubeCount::Static(cubes(max_len, COUNT_CHUNK as u32), s.sets as u32, b as u32),
                CubeDim::new_1d(256),
                arg(&self.scores, b * s.sets * self.cap_pairs),
                arg(plan, b * 4),
                arg(&self.hist, b * s.sets * s.bins()),
                arg(&self.meta, b * s.sets * 4),
                arg(&selection.counts, b * s.sets),
                arg(&self.chunk_counts, b * s.sets * self.count_chunks),
                self.cap_pairs as u32,
                self.count_chunks as u32,
                s.sets,
                s.bins(),
            )
        };
    }

    pub fn compact<R: Runtime>(
        &self,
        client: &ComputeClient<R>,
        plan: &Handle,
        max_len: usize,
        selection: &Selection,
    ) {
        let s = self.shape;
        let b = self.batch;
        // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
        unsafe {
            compact_kernel::launch_unchecked::<R>(
                client,
                CubeCount::Static(cubes(max_len, COUNT_CHUNK as u32), s.sets as u32, b as u32),
                CubeDim::new_1d(256),
                arg(&self.scores, b * s.sets * self.cap_pairs),
                arg(&self.hist, b * s.sets * s.bins()),
                arg(plan, b * 4),
                arg(&self.meta, b * s.sets * 4),
                arg(&self.chunk_counts, b * s.sets * self.count_chunks),
                arg(&selection.indices, b * s.sets * selection.index_cap),
                self.cap_pairs as u32,
                self.count_chunks as u32,
                selection.index_cap as u32,
                s.sets,
                s.bins(),
            )
        };
    }
}
