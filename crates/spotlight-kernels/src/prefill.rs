//! Causal attention for prefill (many query positions per sequence), flash style: online softmax
//! over key tiles staged in shared memory, no score matrix at any length. The reference is
//! [`crate::reference::attend`] per row over its visible keys.
//!
//! Decode attention ([`crate::attend`]) gives every query position its own cube and reads the
//! keys from L2 once per position. Here a cube takes `planes × rows_per_plane` consecutive query
//! rows of one KV head — rows are (position, head-in-group) pairs, so a tile spans few positions —
//! and every K/V tile it loads serves all of them. Per tile: q·k with lane ↔ key (K staged with a
//! padded stride, so lanes read different banks; q broadcast from shared memory), one plane max and
//! one plane sum per row, then p·V with lane ↔ d / plane elements, each key's probability
//! shuffled from the lane that scored it.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::{arg, check_bytes, upload_u32};
use crate::KernelError;

/// Planes per cube, and query rows per plane.
const PLANES: usize = 8;
const ROWS_PER_PLANE: usize = 2;
/// Masked scores are −1e30; a tile whose best score is below this is wholly masked for a row.
const MASKED_ABOVE: f32 = -1.0e29;

#[cube(launch_unchecked)]
// CubeCL kernels have no saturating_sub.
#[allow(clippy::too_many_arguments, clippy::implicit_saturating_sub)]
fn prefill_kernel<F: Float>(
    q: &Array<f32>,
    k: &Array<F>,
    v: &Array<F>,
    starts: &Array<u32>,
    new_lens: &Array<u32>,
    out: &mut Array<f32>,
    len: u32,
    cap: u32,
    scale: f32,
    #[comptime] q_heads: usize,
    #[comptime] kv_heads: usize,
    #[comptime] d: usize,
    #[comptime] plane: usize,
) {
    let group = comptime!(q_heads / kv_heads);
    let per_lane = comptime!(d / plane);
    let rows_per_cube = comptime!(PLANES * ROWS_PER_PLANE);
    let threads = comptime!(PLANES * plane);
    let stride = comptime!(d + 1);
    let kvh = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let unit = UNIT_POS as usize;
    let lane = unit % plane;
    let pid = unit / plane;
    let len = len as usize;
    let rows = len * group;
    let start = starts[b] as usize;
    let mut last_new = new_lens[b] as usize;
    if last_new > 0 {
        last_new -= 1;
    }
    let row0 = CUBE_POS_X as usize * rows_per_cube;

    // This cube's queries, pre-scaled; rows past the end are zeros (their output is not written).
    let mut qs = SharedMemory::<f32>::new(rows_per_cube * d);
    for it in 0..comptime!((rows_per_cube * d).div_ceil(threads)) {
        let i = it * threads + unit;
        if i < rows_per_cube * d {
            let r = row0 + i / d;
            let mut x = 0.0f32;
            if r < rows {
                let t = r / group;
                let head = kvh * group + r % group;
                x = q[((b * len + t) * q_heads + head) * d + i % d] * scale;
            }
            qs[i] = x;
        }
    }

    // Keys visible to each of my rows: position + 1 (padding rows repeat the last real row).
    let mut visible = Array::<usize>::new(ROWS_PER_PLANE);
    let mut m = Array::<f32>::new(ROWS_PER_PLANE);
    let mut l = Array::<f32>::new(ROWS_PER_PLANE);
    let mut acc = Array::<f32>::new(comptime!(ROWS_PER_PLANE * per_lane));
    #[unroll]
    for rr in 0..ROWS_PER_PLANE {
        let r = row0 + pid * ROWS_PER_PLANE + rr;
        let mut t = r / group;
        if t > last_new {
            t = last_new;
        }
        visible[rr] = 0;
        if r < rows {
            visible[rr] = start + t + 1;
        }
        // A finite start for the running max, so exp(m_old − m_new) never sees inf − inf.
        m[rr] = -1.0e30f32;
        l[rr] = 0.0;
        #[unroll]
        for e in 0..per_lane {
            acc[rr * per_lane + e] = 0.0;
        }
    }
    // Keys the cube's last row sees: every tile up to there is loaded.
    let mut last_row = row0 + rows_per_cube;
    if last_row > rows {
        last_row = rows;
    }
    let mut t_last = (last_row - 1) / group;
    if t_last > last_new {
        t_last = last_new;
    }
    let n_keys = start + t_last + 1;
    let tiles = n_keys.div_ceil(plane);

    let mut ks = SharedMemory::<f32>::new(plane * stride);
    let mut vs = SharedMemory::<f32>::new(plane * d);
    let kv_base = (b * kv_heads + kvh) * cap as usize;
    for tile in 0..tiles {
        let j0 = tile * plane;
        sync_cube();
        for it in 0..comptime!((plane * d).div_ceil(threads)) {
            let i = it * threads + unit;
            if i < plane * d {
                let jj = i / d;
                let c = i % d;
                let mut kx = 0.0f32;
                let mut vx = 0.0f32;
                if j0 + jj < n_keys {
                    let at = (kv_base + j0 + jj) * d + c;
                    kx = f32::cast_from(k[at]);
                    vx = f32::cast_from(v[at]);
                }
                ks[jj * stride + c] = kx;
                vs[i] = vx;
            }
        }
        sync_cube();
        let j = j0 + lane;
        #[unroll]
        for rr in 0..ROWS_PER_PLANE {
            let slot = (pid * ROWS_PER_PLANE + rr) * d;
            let mut s = 0.0f32;
            if j < visible[rr] {
                #[unroll]
                for c in 0..d {
                    s += qs[slot + c] * ks[lane * stride + c];
                }
            } else {
                s = -1.0e30f32;
            }
            let tile_max = plane_max(s);
            // Tiles wholly after this row's position change nothing (same for the whole plane).
            if tile_max > MASKED_ABOVE {
                let mut best = m[rr];
                if tile_max > best {
                    best = tile_max;
                }
                let alpha = f32::exp(m[rr] - best);
                let p = f32::exp(s - best);
                l[rr] = l[rr] * alpha + plane_sum(p);
                m[rr] = best;
                #[unroll]
                for e in 0..per_lane {
                    acc[rr * per_lane + e] *= alpha;
                }
                #[unroll]
                for jj in 0..plane {
                    let pj = plane_shuffle(p, jj as u32);
                    #[unroll]
                    for e in 0..per_lane {
                        acc[rr * per_lane + e] += pj * vs[jj * d + e * plane + lane];
                    }
                }
            }
        }
    }

    #[unroll]
    for rr in 0..ROWS_PER_PLANE {
        let r = row0 + pid * ROWS_PER_PLANE + rr;
        if r < rows {
            let t = r / group;
            let head = kvh * group + r % group;
            let base = ((b * len + t) * q_heads + head) * d;
            let mut inv = 0.0f32;
            if l[rr] > 0.0 {
                inv = 1.0 / l[rr];
            }
            #[unroll]
            for e in 0..per_lane {
                out[base + e * plane + lane] = acc[rr * per_lane + e] * inv;
            }
        }
    }
}

/// One prefill call: `len` new rows per sequence (padded), appended after `starts[b]` cached ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefillShape {
    pub batch: usize,
    pub len: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Rows per sequence in the K/V cache.
    pub cap: usize,
}

/// Output `[batch][len][q_heads][d]` (f32) for queries `q` of the same layout (f32, post-RoPE)
/// over the cache `k`, `v` `[batch][kv_heads][cap][d]` (element type `F`, this call's rows
/// already written). Row (b, t) sees keys 0..=starts[b] + t; padding rows (t ≥ new_lens[b])
/// repeat the sequence's last real row.
#[allow(clippy::too_many_arguments)]
pub fn flash_prefill<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    shape: &PrefillShape,
    q: &Handle,
    k: &Handle,
    v: &Handle,
    starts: &[usize],
    new_lens: &[usize],
    out: &Handle,
) -> Result<(), KernelError> {
    let &PrefillShape {
        batch,
        len,
        q_heads,
        kv_heads,
        head_dim: d,
        cap,
    } = shape;
    if d == 0 || !d.is_multiple_of(32) || d > 256 {
        return Err(KernelError::HeadDim(d));
    }
    if kv_heads == 0 || !q_heads.is_multiple_of(kv_heads) {
        return Err(KernelError::Groups {
            q_heads,
            sets: kv_heads,
        });
    }
    if starts.len() != batch || new_lens.len() != batch {
        return Err(KernelError::Length {
            what: "per-sequence starts and lengths",
            expected: batch,
            got: starts.len().min(new_lens.len()),
        });
    }
    for (seq, (&s, &n)) in starts.iter().zip(new_lens).enumerate() {
        if n > len || s + n.max(1) > cap {
            return Err(KernelError::OverCapacity {
                seq,
                len: s + n.max(1),
                cap,
            });
        }
    }
    let props = &client.properties().hardware;
    let plane = props.plane_size_max as usize;
    if plane == 0 || props.plane_size_min != props.plane_size_max || !d.is_multiple_of(plane) {
        return Err(KernelError::PlaneSize { plane, d });
    }
    let q_len = batch * len * q_heads * d;
    let kv_len = batch * kv_heads * cap * d;
    check_bytes(q, q_len * 4, "queries")?;
    check_bytes(out, q_len * 4, "output")?;
    check_bytes(k, kv_len * core::mem::size_of::<F>(), "keys")?;
    check_bytes(v, kv_len * core::mem::size_of::<F>(), "values")?;
    if q_len == 0 {
        return Ok(());
    }
    let column = |v: &[usize]| upload_u32(client, &v.iter().map(|&x| x as u32).collect::<Vec<_>>());
    let (starts_h, lens_h) = (column(starts), column(new_lens));
    let rows = len * (q_heads / kv_heads);
    let tiles = rows.div_ceil(PLANES * ROWS_PER_PLANE) as u32;
    // Safety: every buffer was checked to hold its length above; rows past the end and keys past
    // the cube's last visible one are neither read nor written.
    unsafe {
        prefill_kernel::launch_unchecked::<F, R>(
            client,
            CubeCount::Static(tiles, kv_heads as u32, batch as u32),
            CubeDim::new_1d((PLANES * plane) as u32),
            arg(q, q_len),
            arg(k, kv_len),
            arg(v, kv_len),
            arg(&starts_h, batch),
            arg(&lens_h, batch),
            arg(out, q_len),
            len as u32,
            cap as u32,
            1.0 / (d as f32).sqrt(),
            q_heads,
            kv_heads,
            d,
            plane,
        )
    };
    Ok(())
}
