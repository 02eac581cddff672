//! Device-to-device copy: the bandwidth every benchmark reports its floor against.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::arg;

#[cube(launch)]
fn copy_kernel(src: &Array<u32>, dst: &mut Array<u32>, n: u32) {
    // Grid-stride: a fixed number of cubes, each unit moving several words.
    let stride = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let mut i = ABSOLUTE_POS_X as usize;
    while i < n as usize {
        dst[i] = src[i];
        i += stride;
    }
}

/// Copies `words` u32 from `src` to `dst` (same length or longer).
pub fn copy<R: Runtime>(client: &ComputeClient<R>, src: &Handle, dst: &Handle, words: usize) {
    let cubes = (words as u32).div_ceil(256).clamp(1, 132 * 16);
    copy_kernel::launch::<R>(
        client,
        CubeCount::Static(cubes, 1, 1),
        CubeDim::new_1d(256),
        arg(src, words),
        arg(dst, words),
        words as u32,
    );
}
