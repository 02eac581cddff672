//! Device-to-device copies: the bandwidth every benchmark reports its floor against, and rows
//! placed at each decode row's (sequence, position) of a cache-shaped buffer.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::arg;

/// Words each unit moves per step; loads are issued together so several are in flight.
const UNROLL: usize = 4;

#[cube(launch_unchecked)]
fn copy_kernel(src: &Array<u32>, dst: &mut Array<u32>, n: u32) {
    let stride = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let n = n as usize;
    let mut base = ABSOLUTE_POS_X as usize;
    while base < n {
        let mut words = Array::<u32>::new(UNROLL);
        #[unroll]
        for u in 0..UNROLL {
            let i = base + u * stride;
            if i < n {
                words[u] = src[i];
            }
        }
        #[unroll]
        for u in 0..UNROLL {
            let i = base + u * stride;
            if i < n {
                dst[i] = words[u];
            }
        }
        base += UNROLL * stride;
    }
}

/// Copies `words` u32 from `src` to `dst` (same length or longer).
pub fn copy<R: Runtime>(client: &ComputeClient<R>, src: &Handle, dst: &Handle, words: usize) {
    let cubes = (words as u32)
        .div_ceil(256 * UNROLL as u32)
        .clamp(1, 132 * 8);
    // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
    unsafe {
        copy_kernel::launch_unchecked::<R>(
            client,
            CubeCount::Static(cubes, 1, 1),
            CubeDim::new_1d(256),
            arg(src, words),
            arg(dst, words),
            words as u32,
        )
    };
}

#[cube(launch_unchecked)]
fn place_rows_kernel(
    src: &Array<u32>,
    row_seq: &Array<u32>,
    row_pos: &Array<u32>,
    dst: &mut Array<u32>,
    cap: u32,
    units: u32,
    #[comptime] width: usize,
) {
    let i = ABSOLUTE_POS_X as usize;
    if i < units as usize {
        let r = i / width;
        let at = (row_seq[r] as usize * cap as usize + row_pos[r] as usize) * width + i % width;
        dst[at] = src[i];
    }
}

/// dst `[batch][cap][width]` (u32) row (seq, pos) of each place ← src `[m][width]`;
/// `row_seq`/`row_pos` hold the places on the device. Places must be within `batch` × `cap`.
pub fn place_rows<R: Runtime>(
    client: &ComputeClient<R>,
    src: &Handle,
    places: &[crate::rope_append::RowPlace],
    (row_seq, row_pos): (&Handle, &Handle),
    dst: &Handle,
    (batch, cap, width): (usize, usize, usize),
) -> Result<(), crate::KernelError> {
    if let Some(p) = places.iter().find(|p| p.seq >= batch || p.pos >= cap) {
        return Err(crate::KernelError::OverCapacity {
            seq: p.seq,
            len: p.pos + 1,
            cap,
        });
    }
    let units = places.len() * width;
    if units == 0 {
        return Ok(());
    }
    // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
    unsafe {
        place_rows_kernel::launch_unchecked::<R>(
            client,
            CubeCount::Static(crate::device::cubes(units, 256), 1, 1),
            CubeDim::new_1d(256),
            arg(src, units),
            arg(row_seq, places.len()),
            arg(row_pos, places.len()),
            arg(dst, batch * cap * width),
            cap as u32,
            units as u32,
            width,
        )
    };
    Ok(())
}
