//! Device-to-device copy: the bandwidth every benchmark reports its floor against.

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
