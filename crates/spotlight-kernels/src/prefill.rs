//! Causal attention for prefill (many query positions per sequence), flash style: online softmax
//! over key tiles staged in shared memory, no score matrix at any length. The reference is
//! [`crate::reference::attend`] per row over its visible keys.
//!
//! Decode attention ([`crate::attend`]) gives every query position its own cube and reads the
//! keys from L2 once per position. Here a cube takes `planes × rows_per_plane` consecutive query
//! rows of one KV head — rows are (position, head-in-group) pairs, so a tile spans few positions —
//! and every K/V tile it loads serves all of them. Per tile: q·k with lane ↔ key, in 16-byte
//! vectors (K staged with a padded stride, so lanes read different banks; q broadcast from shared
//! memory; each key vector serves all the plane's rows), one plane max and one plane sum per row,
//! then p·V with lane ↔ d / plane elements, each key's probability shuffled from the lane that
//! scored it. The first version (scalar shared loads, 2 rows per plane) was bound by shared-memory
//! load instructions: two per multiply-add.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::{arg, check_bytes, upload_u32};
use crate::KernelError;

/// Planes per cube.
const PLANES: usize = 8;
/// Masked scores are −1e30; a tile whose best score is below this is wholly masked for a row.
const MASKED_ABOVE: f32 = -1.0e29;

/// Query rows per plane: more rows reuse each staged key more often, within shared memory
/// (queries, keys and values of one tile: 41 KB at d = 128 with 32-wide planes).
fn rows_per_plane(d: usize) -> usize {
    (256 / d).clamp(1, 4)
}

type V4 = Vector<f32, Const<4>>;

#[cube(launch_unchecked)]
// CubeCL kernels have no saturating_sub.
#[allow(clippy::too_many_arguments, clippy::implicit_saturating_sub)]
fn prefill_kernel<F: Float>(
    q: &Array<V4>,
    k: &Array<Vector<F, Const<4>>>,
    v: &Array<Vector<F, Const<4>>>,
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
    #[comptime] per_plane: usize,
) {
    let group = comptime!(q_heads / kv_heads);
    let per_lane = comptime!(d / plane);
    let d4 = comptime!(d / 4);
    let rows_per_cube = comptime!(PLANES * per_plane);
    let threads = comptime!(PLANES * plane);
    // Staged keys: a padded row stride (in 16-byte vectors), so lanes reading their own key's
    // vectors hit different banks.
    let stride4 = comptime!(d / 4 + 1);
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
    let mut qs = SharedMemory::<V4>::new(rows_per_cube * d4);
    for it in 0..comptime!((rows_per_cube * d4).div_ceil(threads)) {
        let i = it * threads + unit;
        if i < rows_per_cube * d4 {
            let r = row0 + i / d4;
            let mut x = V4::new(0.0);
            if r < rows {
                let t = r / group;
                let head = kvh * group + r % group;
                x = q[((b * len + t) * q_heads + head) * d4 + i % d4] * V4::new(scale);
            }
            qs[i] = x;
        }
    }

    // Keys visible to each of my rows: position + 1 (padding rows repeat the last real row).
    let mut visible = Array::<usize>::new(per_plane);
    let mut m = Array::<f32>::new(per_plane);
    let mut l = Array::<f32>::new(per_plane);
    let mut acc = Array::<f32>::new(comptime!(per_plane * per_lane));
    #[unroll]
    for rr in 0..per_plane {
        let r = row0 + pid * per_plane + rr;
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

    let mut ks = SharedMemory::<V4>::new(plane * stride4);
    let mut vs = SharedMemory::<f32>::new(plane * d);
    let kv_base = (b * kv_heads + kvh) * cap as usize;
    for tile in 0..tiles {
        let j0 = tile * plane;
        sync_cube();
        for it in 0..comptime!((plane * d4).div_ceil(threads)) {
            let i = it * threads + unit;
            if i < plane * d4 {
                let jj = i / d4;
                let c4 = i % d4;
                let mut kx = V4::new(0.0);
                let mut vx = V4::new(0.0);
                if j0 + jj < n_keys {
                    let at = (kv_base + j0 + jj) * d4 + c4;
                    kx = V4::cast_from(k[at]);
                    vx = V4::cast_from(v[at]);
                }
                ks[jj * stride4 + c4] = kx;
                #[unroll]
                for x in 0..4usize {
                    vs[jj * d + c4 * 4 + x] = vx[x];
                }
            }
        }
        sync_cube();
        let j = j0 + lane;
        // q·k: lane ↔ key; each staged key vector serves all of the plane's rows.
        let mut s = Array::<f32>::new(per_plane);
        #[unroll]
        for rr in 0..per_plane {
            s[rr] = 0.0;
        }
        #[unroll]
        for c4 in 0..d4 {
            let kv4 = ks[lane * stride4 + c4];
            #[unroll]
            for rr in 0..per_plane {
                let qv = qs[(pid * per_plane + rr) * d4 + c4];
                #[unroll]
                for x in 0..4usize {
                    s[rr] += qv[x] * kv4[x];
                }
            }
        }
        #[unroll]
        for rr in 0..per_plane {
            let mut mine = s[rr];
            if j >= visible[rr] {
                mine = -1.0e30f32;
            }
            let tile_max = plane_max(mine);
            // Tiles wholly after this row's position change nothing (same for the whole plane).
            if tile_max > MASKED_ABOVE {
                let mut best = m[rr];
                if tile_max > best {
                    best = tile_max;
                }
                let alpha = f32::exp(m[rr] - best);
                let p = f32::exp(mine - best);
                l[rr] = l[rr] * alpha + plane_sum(p);
                m[rr] = best;
                #[unroll]
                for e in 0..per_lane {
                    acc[rr * per_lane + e] *= alpha;
                }
                // p·V: lane ↔ d / plane elements; key jj's probability from lane jj.
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
    for rr in 0..per_plane {
        let r = row0 + pid * per_plane + rr;
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
    // Wider heads would not fit a tile in shared memory.
    if d == 0 || !d.is_multiple_of(32) || d > 128 {
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
    // Checked up front: a launch over the device's shared memory fails silently on some runtimes
    // (wide planes and d = 128 need more than 48 KB).
    let per_plane = rows_per_plane(d);
    let needed = 4 * (PLANES * per_plane * d + plane * (d + 4) + plane * d);
    let available = props.max_shared_memory_size;
    if needed > available {
        return Err(KernelError::SharedMemory { needed, available });
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
    let tiles = rows.div_ceil(PLANES * per_plane) as u32;
    // Safety: every buffer was checked to hold its length above; rows past the end and keys past
    // the cube's last visible one are neither read nor written.
    unsafe {
        prefill_kernel::launch_unchecked::<F, R>(
            client,
            CubeCount::Static(tiles, kv_heads as u32, batch as u32),
            CubeDim::new_1d((PLANES * plane) as u32),
            arg(q, q_len / 4),
            arg(k, kv_len / 4),
            arg(v, kv_len / 4),
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
            per_plane,
        )
    };
    Ok(())
}
