//! After the fused QKV projection of a decode step: rotate q and k (RoPE, HF `rotate_half`
//! layout: dimension i pairs with i + d/2), hand q to attention and write k and v into the KV
//! cache at each row's (sequence, position), converted to the cache's element type. One launch
//! instead of a slice, a rotation per tensor and two cache writes.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::{arg, check_bytes, cubes, upload_u32, CUBE_THREADS};
use crate::KernelError;

/// Where each row of a step goes: its sequence in the cache and its position there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowPlace {
    pub seq: usize,
    pub pos: usize,
}

/// `places` on the device as the kernels take them: (sequences, positions), two u32 columns.
pub fn upload_places<R: Runtime>(
    client: &ComputeClient<R>,
    places: &[RowPlace],
) -> (Handle, Handle) {
    let column = |f: fn(&RowPlace) -> usize| places.iter().map(|p| f(p) as u32).collect::<Vec<_>>();
    (
        upload_u32(client, &column(|p| p.seq)),
        upload_u32(client, &column(|p| p.pos)),
    )
}

/// Where a step's rotated keys also go: rows `row0..row0 + m` of the f32 `[rows][kv_heads][d]`
/// buffer `rows`, `row0` read from the device (a u32), so one launch serves every step of a ring.
#[derive(Debug, Clone, Copy)]
pub struct KeyRows<'a> {
    pub rows: &'a Handle,
    pub row0: &'a Handle,
    /// Rows `rows` holds: rows past it are not written.
    pub capacity: usize,
}

/// Shapes of one rope-and-append call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RopeShape {
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Sequences in the cache.
    pub batch: usize,
    /// Rows per (sequence, KV head) in the cache, and rows of the cos/sin tables.
    pub cap: usize,
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn rope_append_kernel<F: Float>(
    qkv: &Array<f32>,
    cos: &Array<f32>,
    sin: &Array<f32>,
    row_seq: &Array<u32>,
    row_pos: &Array<u32>,
    q: &mut Array<f32>,
    k_cache: &mut Array<F>,
    v_cache: &mut Array<F>,
    k_rows: &mut Array<f32>,
    k_row0: &Array<u32>,
    cap: u32,
    units: u32,
    k_rows_cap: u32,
    #[comptime] q_heads: usize,
    #[comptime] kv_heads: usize,
    #[comptime] d: usize,
    #[comptime] keep_keys: bool,
) {
    let i = ABSOLUTE_POS_X as usize;
    if i < units as usize {
        let half = comptime!(d / 2);
        let heads = comptime!(q_heads + 2 * kv_heads);
        let j = i % half;
        let h = (i / half) % heads;
        let r = i / (half * heads);
        let from = (r * heads + h) * d;
        let a = qkv[from + j];
        let b = qkv[from + j + half];
        let pos = row_pos[r] as usize;
        let seq = row_seq[r] as usize;
        if h < q_heads + kv_heads {
            let c = cos[pos * half + j];
            let s = sin[pos * half + j];
            let lo = a * c - b * s;
            let hi = b * c + a * s;
            if h < q_heads {
                let to = (r * q_heads + h) * d;
                q[to + j] = lo;
                q[to + j + half] = hi;
            } else {
                let to = ((seq * kv_heads + h - q_heads) * cap as usize + pos) * d;
                k_cache[to + j] = F::cast_from(lo);
                k_cache[to + j + half] = F::cast_from(hi);
                if comptime!(keep_keys) {
                    let key_row = k_row0[0] as usize + r;
                    if key_row < k_rows_cap as usize {
                        let row = (key_row * kv_heads + h - q_heads) * d;
                        k_rows[row + j] = lo;
                        k_rows[row + j + half] = hi;
                    }
                }
            }
        } else {
            let to = ((seq * kv_heads + h - q_heads - kv_heads) * cap as usize + pos) * d;
            v_cache[to + j] = F::cast_from(a);
            v_cache[to + j + half] = F::cast_from(b);
        }
    }
}

/// qkv `[m][q_heads + 2·kv_heads][d]` (f32) → q `[m][q_heads][d]` (f32, rotated); K and V
/// `[batch][kv_heads][cap][d]` of type `F` get row `pos` of sequence `seq` for each row.
/// `cos`/`sin` have at least `cap` rows of d/2; `row_seq`/`row_pos` hold `places` on the device.
/// With `k_rows`, the rotated keys also go to its rows (for key hashing, which may wait for
/// several steps' keys).
#[allow(clippy::too_many_arguments)]
pub fn rope_append<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    shape: &RopeShape,
    qkv: &Handle,
    (cos, sin): (&Handle, &Handle),
    places: &[RowPlace],
    (row_seq, row_pos): (&Handle, &Handle),
    q: &Handle,
    (k_cache, v_cache): (&Handle, &Handle),
    k_rows: Option<KeyRows>,
) -> Result<(), KernelError> {
    let RopeShape {
        q_heads,
        kv_heads,
        head_dim: d,
        batch,
        cap,
    } = *shape;
    if d == 0 || !d.is_multiple_of(2) {
        return Err(KernelError::HeadDim(d));
    }
    for (i, p) in places.iter().enumerate() {
        if p.seq >= batch {
            return Err(KernelError::Length {
                what: "row sequence",
                expected: batch,
                got: p.seq,
            });
        }
        if p.pos >= cap {
            return Err(KernelError::OverCapacity {
                seq: i,
                len: p.pos + 1,
                cap,
            });
        }
    }
    let m = places.len();
    let units = m * (q_heads + 2 * kv_heads) * d / 2;
    if units == 0 {
        return Ok(());
    }
    let cache_len = batch * kv_heads * cap * d;
    let k_cap = k_rows.map_or(0, |k| k.capacity);
    if let Some(k) = k_rows {
        check_bytes(
            k.rows,
            4 * k.capacity * kv_heads * d,
            "rotated key rows (bytes)",
        )?;
        check_bytes(k.row0, 4, "rotated key first row")?;
    }
    // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
    unsafe {
        rope_append_kernel::launch_unchecked::<F, R>(
            client,
            CubeCount::Static(cubes(units, CUBE_THREADS), 1, 1),
            CubeDim::new_1d(CUBE_THREADS),
            arg(qkv, m * (q_heads + 2 * kv_heads) * d),
            arg(cos, cap * d / 2),
            arg(sin, cap * d / 2),
            arg(row_seq, m),
            arg(row_pos, m),
            arg(q, m * q_heads * d),
            arg(k_cache, cache_len),
            arg(v_cache, cache_len),
            arg(k_rows.map_or(q, |k| k.rows), k_cap.max(1) * kv_heads * d),
            arg(k_rows.map_or(row_seq, |k| k.row0), 1),
            cap as u32,
            units as u32,
            k_cap as u32,
            q_heads,
            kv_heads,
            d,
            k_rows.is_some(),
        )
    };
    Ok(())
}
