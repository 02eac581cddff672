//! top_keys: for each row of true logits, the k largest among its first `visible` values — the
//! "top" keys the hash is trained to rank first (METHOD.md "Training", step 3).
//!
//! One cube per row. A radix select on the order-preserving u32 image of each f32 finds the k-th
//! largest value exactly (four passes of 8 bits over a shared histogram), then an order-preserving
//! compaction writes the chosen indices ascending. Ties at the k-th value go to the earliest
//! indices. Never a sort; each row is read six times from L2.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::arg;
use crate::KernelError;

const UNITS: usize = 256;

/// Maps f32 to u32 so that unsigned order equals float order.
#[cube]
fn order_key(x: f32) -> u32 {
    let bits = u32::reinterpret(x);
    if bits >> 31u32 == 1u32 {
        bits ^ 0xFFFF_FFFFu32
    } else {
        bits | 0x8000_0000u32
    }
}

#[cube]
fn from_order_key(key: u32) -> f32 {
    let bits = if key >> 31u32 == 1u32 {
        key & 0x7FFF_FFFFu32
    } else {
        key ^ 0xFFFF_FFFFu32
    };
    f32::reinterpret(bits)
}

/// One 8-bit radix pass: narrows state = (prefix of the k-th key, how many of the keys sharing the
/// prefix still have to be taken) by the digit at `shift`.
#[cube]
fn radix_pass(
    logits: &Array<f32>,
    base: usize,
    visible: usize,
    hist: &SharedMemory<Atomic<u32>>,
    state: &mut SharedMemory<u32>,
    #[comptime] shift: u32,
) {
    let unit = UNIT_POS as usize;
    hist[unit].store(0u32);
    sync_cube();
    let prefix = state[0usize];
    let mut j = unit;
    while j < visible {
        let key = order_key(logits[base + j]);
        if comptime!(shift == 24) {
            hist[(key >> 24u32) as usize].fetch_add(1u32);
        } else if (key >> comptime!(shift + 8)) == (prefix >> comptime!(shift + 8)) {
            hist[((key >> shift) & 255u32) as usize].fetch_add(1u32);
        }
        j += UNITS;
    }
    sync_cube();
    if unit == 0 {
        let mut remaining = state[1usize];
        let mut chosen = 0u32;
        let mut found = false;
        for i in 0..256u32 {
            let bin = 255u32 - i;
            let c = hist[bin as usize].load();
            if !found {
                if c >= remaining {
                    chosen = bin;
                    found = true;
                } else {
                    remaining -= c;
                }
            }
        }
        state[0usize] = prefix | (chosen << shift);
        state[1usize] = remaining;
    }
    sync_cube();
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)] // div_ceil is not a cube function
fn top_keys_kernel(
    logits: &Array<f32>,
    positions: &Array<u32>,
    row_k: &Array<u32>,
    top: &mut Array<u32>,
    count: &mut Array<u32>,
    threshold: &mut Array<f32>,
    n: u32,
    positions_len: u32,
    stride: u32,
) {
    let row = CUBE_POS_X as usize;
    let unit = UNIT_POS as usize;
    let (n, stride) = (n as usize, stride as usize);
    let mut visible = positions[row % positions_len as usize] as usize + 1;
    if visible > n {
        visible = n;
    }
    let mut k = row_k[row % positions_len as usize] as usize;
    if k > stride {
        k = stride;
    }
    if k == 0 {
        k = 1;
    }
    let out = row * stride;
    // Slots past the row's count are padded with 0.
    let mut j = unit;
    while j < stride {
        if j >= k || j >= visible {
            top[out + j] = 0u32;
        }
        j += UNITS;
    }
    if visible <= k {
        // Every visible key is a top key.
        let mut j = unit;
        while j < visible {
            top[out + j] = j as u32;
            j += UNITS;
        }
        if unit == 0 {
            count[row] = visible as u32;
            threshold[row] = f32::new(-3.4e38);
        }
    } else {
        let base = row * n;
        let hist = SharedMemory::<Atomic<u32>>::new(256usize);
        let mut state = SharedMemory::<u32>::new(2usize);
        if unit == 0 {
            state[0usize] = 0u32;
            state[1usize] = k as u32;
        }
        sync_cube();
        radix_pass(logits, base, visible, &hist, &mut state, 24u32);
        radix_pass(logits, base, visible, &hist, &mut state, 16u32);
        radix_pass(logits, base, visible, &hist, &mut state, 8u32);
        radix_pass(logits, base, visible, &hist, &mut state, 0u32);
        let kth = state[0usize];
        let ties = state[1usize]; // keys equal to the k-th value that are taken

        // Order-preserving compaction: each unit owns a contiguous chunk.
        let chunk = (visible + UNITS - 1) / UNITS;
        let start = unit * chunk;
        let mut end = start + chunk;
        if end > visible {
            end = visible;
        }
        let mut above = 0u32;
        let mut equal = 0u32;
        let mut j = start;
        while j < end {
            let key = order_key(logits[base + j]);
            if key > kth {
                above += 1u32;
            } else if key == kth {
                equal += 1u32;
            }
            j += 1;
        }
        let mut above_s = SharedMemory::<u32>::new(256usize);
        let mut equal_s = SharedMemory::<u32>::new(256usize);
        above_s[unit] = above;
        equal_s[unit] = equal;
        sync_cube();
        if unit == 0 {
            // Exclusive scans: where each chunk writes, and how many ties come before it.
            let mut written = 0u32;
            let mut ties_before = 0u32;
            for i in 0..256usize {
                let (a, e) = (above_s[i], equal_s[i]);
                let mut take = 0u32;
                if ties_before < ties {
                    take = ties - ties_before;
                    if take > e {
                        take = e;
                    }
                }
                above_s[i] = written;
                equal_s[i] = ties_before;
                written += a + take;
                ties_before += e;
            }
        }
        sync_cube();
        let mut pos = above_s[unit] as usize;
        let mut tie = equal_s[unit];
        let mut j = start;
        while j < end {
            let key = order_key(logits[base + j]);
            if key > kth {
                top[out + pos] = j as u32;
                pos += 1;
            } else if key == kth {
                if tie < ties {
                    top[out + pos] = j as u32;
                    pos += 1;
                }
                tie += 1u32;
            }
            j += 1;
        }
        if unit == 0 {
            count[row] = k as u32;
            threshold[row] = from_order_key(kth);
        }
    }
}

/// Top keys of `rows` rows of `logits` ([rows][n] f32). Row r sees its first
/// `positions[r % positions_len] + 1` values (the causal prefix of query position t) and takes
/// k_r = min(`row_k[r % positions_len]`, k) of them (`row_k`: the per-position top count, e.g.
/// the decode budget of the row's own length; all k when every entry is ≥ k).
/// Writes `top` [rows][k] (ascending indices; slots past the row's count are padded with 0),
/// `count` [rows] (= min(k_r, visible)) and `threshold` [rows] (the k_r-th largest value;
/// −3.4e38 when every visible key is taken).
#[allow(clippy::too_many_arguments)]
pub fn top_keys<R: Runtime>(
    client: &ComputeClient<R>,
    logits: &Handle,
    rows: usize,
    n: usize,
    positions: &Handle,
    row_k: &Handle,
    positions_len: usize,
    k: usize,
    top: &Handle,
    count: &Handle,
    threshold: &Handle,
) -> Result<(), KernelError> {
    if k == 0 || k > n || positions_len == 0 {
        return Err(KernelError::TopK { k, n });
    }
    if rows == 0 {
        return Ok(());
    }
    // Safety: every index is below the lengths passed (visible ≤ n, slots < k per row).
    unsafe {
        top_keys_kernel::launch_unchecked::<R>(
            client,
            CubeCount::Static(rows as u32, 1, 1),
            CubeDim::new_1d(UNITS as u32),
            arg(logits, rows * n),
            arg(positions, positions_len),
            arg(row_k, positions_len),
            arg(top, rows * k),
            arg(count, rows),
            arg(threshold, rows),
            n as u32,
            positions_len as u32,
            k as u32,
        )
    };
    Ok(())
}
