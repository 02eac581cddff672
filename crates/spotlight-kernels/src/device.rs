//! Small host-side helpers around CubeCL handles: upload, download, poisoned outputs.

use cubecl::prelude::*;
use cubecl::server::Handle;

/// Threads per cube for the 1-D kernels. A multiple of every plane width we run on (8, 32, 64).
pub const CUBE_THREADS: u32 = 256;

pub fn upload_u32<R: Runtime>(client: &ComputeClient<R>, data: &[u32]) -> Handle {
    upload(client, data)
}

pub fn upload_f32<R: Runtime>(client: &ComputeClient<R>, data: &[f32]) -> Handle {
    upload(client, data)
}

pub fn upload<R: Runtime, E: CubeElement>(client: &ComputeClient<R>, data: &[E]) -> Handle {
    // Zero-length buffers are not allowed by every runtime: keep one element.
    if data.is_empty() {
        return client.empty(16);
    }
    client.create_from_slice(E::as_bytes(data))
}

/// A buffer of `len` u32 all set to `value` (tests poison outputs so unwritten elements show).
pub fn filled_u32<R: Runtime>(client: &ComputeClient<R>, len: usize, value: u32) -> Handle {
    upload_u32(client, &vec![value; len])
}

pub fn filled_f32<R: Runtime>(client: &ComputeClient<R>, len: usize, value: f32) -> Handle {
    upload_f32(client, &vec![value; len])
}

pub fn read_u32<R: Runtime>(client: &ComputeClient<R>, handle: Handle, len: usize) -> Vec<u32> {
    let bytes = client.read_one_unchecked(handle);
    u32::from_bytes(&bytes)[..len].to_vec()
}

pub fn read_f32<R: Runtime>(client: &ComputeClient<R>, handle: Handle, len: usize) -> Vec<f32> {
    let bytes = client.read_one_unchecked(handle);
    f32::from_bytes(&bytes)[..len].to_vec()
}

/// Array argument over a handle holding `len` elements (at least one, as buffers are never empty).
pub fn arg<R: Runtime>(handle: &Handle, len: usize) -> ArrayArg<R> {
    // Safety: every caller passes the element count the buffer was created with.
    unsafe { ArrayArg::from_raw_parts(handle.clone(), len.max(1)) }
}

pub fn cubes(n: usize, per_cube: u32) -> u32 {
    (n as u32).div_ceil(per_cube).max(1)
}

/// Checks that `handle` holds at least `bytes` (kernels launched unchecked trust their lengths).
pub fn check_bytes(
    handle: &Handle,
    bytes: usize,
    what: &'static str,
) -> Result<(), crate::KernelError> {
    let held = handle.size_in_used() as usize;
    if held < bytes {
        return Err(crate::KernelError::Length {
            what,
            expected: bytes,
            got: held,
        });
    }
    Ok(())
}
