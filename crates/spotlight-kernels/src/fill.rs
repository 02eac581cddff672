//! Deterministic pseudo-random fills on the device, so benchmarks at a million tokens need no
//! host-side generation or gigabyte uploads.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::arg;

#[cube]
fn mix(x: u32) -> u32 {
    // lowbias32 (Wellons): a cheap integer hash with good avalanche.
    let mut h = x;
    h ^= h >> 16u32;
    h *= 0x7feb352du32;
    h ^= h >> 15u32;
    h *= 0x846ca68bu32;
    h ^= h >> 16u32;
    h
}

#[cube(launch_unchecked)]
fn fill_bits_kernel(out: &mut Array<u32>, n: u32, seed: u32) {
    let stride = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let mut i = ABSOLUTE_POS_X as usize;
    while i < n as usize {
        out[i] = mix(i as u32 ^ mix(seed));
        i += stride;
    }
}

#[cube(launch_unchecked)]
fn fill_uniform_kernel<F: Float>(out: &mut Array<F>, n: u32, seed: u32, scale: f32) {
    let stride = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let mut i = ABSOLUTE_POS_X as usize;
    while i < n as usize {
        let h = mix(i as u32 ^ mix(seed));
        out[i] = F::cast_from((f32::cast_from(h & 0xFFFFu32) / 32768.0f32 - 1.0f32) * scale);
        i += stride;
    }
}

fn grid(n: usize) -> CubeCount {
    CubeCount::Static((n as u32).div_ceil(256).clamp(1, 132 * 32), 1, 1)
}

/// `n` random u32 words (key or query codes).
pub fn random_bits<R: Runtime>(client: &ComputeClient<R>, n: usize, seed: u32) -> Handle {
    let out = client.empty(4 * n.max(1));
    // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
    unsafe {
        fill_bits_kernel::launch_unchecked::<R>(
            client,
            grid(n),
            CubeDim::new_1d(256),
            arg(&out, n),
            n as u32,
            seed,
        )
    };
    out
}

/// `n` values uniform in [−1, 1) of element type `F` (K, V, queries).
pub fn random_uniform<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    n: usize,
    seed: u32,
) -> Handle {
    random_uniform_scaled::<R, F>(client, n, seed, 1.0)
}

/// `n` values uniform in [−scale, scale) of element type `F` (synthetic weights).
pub fn random_uniform_scaled<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    n: usize,
    seed: u32,
    scale: f32,
) -> Handle {
    let out = client.empty(core::mem::size_of::<F>() * n.max(1));
    // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
    unsafe {
        fill_uniform_kernel::launch_unchecked::<F, R>(
            client,
            grid(n),
            CubeDim::new_1d(256),
            arg(&out, n),
            n as u32,
            seed,
            scale,
        )
    };
    out
}
