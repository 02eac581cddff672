//! Token embedding lookup: rows of the table (any float type) widened to f32.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::{arg, cubes, CUBE_THREADS};
use crate::KernelError;

#[cube(launch_unchecked)]
fn embed_kernel<F: Float>(
    table: &Array<F>,
    tokens: &Array<u32>,
    out: &mut Array<f32>,
    units: u32,
    #[comptime] d: usize,
) {
    let i = ABSOLUTE_POS_X as usize;
    if i < units as usize {
        out[i] = f32::cast_from(table[tokens[i / d] as usize * d + i % d]);
    }
}

/// out `[m][d]` = table`[tokens[r]]` for the table `[vocab][d]`; `token_ids` are the ids held by
/// `tokens` on the device (checked here, so the kernel never reads outside the table).
pub fn embed<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    table: &Handle,
    (vocab, d): (usize, usize),
    token_ids: &[u32],
    tokens: &Handle,
    out: &Handle,
) -> Result<(), KernelError> {
    if let Some(&bad) = token_ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(KernelError::Length {
            what: "token id (vocabulary size)",
            expected: vocab,
            got: bad as usize,
        });
    }
    let units = token_ids.len() * d;
    if units == 0 {
        return Ok(());
    }
    // Safety: indices stay within the lengths passed (crate docs, "Unchecked launches").
    unsafe {
        embed_kernel::launch_unchecked::<F, R>(
            client,
            CubeCount::Static(cubes(units, CUBE_THREADS), 1, 1),
            CubeDim::new_1d(CUBE_THREADS),
            arg(table, vocab * d),
            arg(tokens, token_ids.len()),
            arg(out, units),
            units as u32,
            d,
        )
    };
    Ok(())
}
