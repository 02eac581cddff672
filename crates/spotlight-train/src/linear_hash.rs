//! The random linear hash (SimHash, METHOD.md "Baselines"): code = sign(x·R) with R a stack of
//! random orthogonal d×d blocks. One stack per KV head and layer, shared by the KV head's keys and
//! the queries of its group, so a query and a key are always projected by the same R.
//!
//! The same rotations are the trained hash's rotation start ([`crate::HashMlp::init_rotated`]):
//! with the same seed, an untrained rotation-start hash codes exactly as this baseline does.

use rand::{rngs::StdRng, SeedableRng};

use crate::hash_mlp::standard_normal;
use crate::trainer::mix_seed;

/// `blocks` random orthogonal d×d matrices, [blocks][d][d] row-major in the x·R convention
/// (Gram–Schmidt on Gaussian columns).
pub fn random_rotation(d: usize, blocks: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = vec![0f32; blocks * d * d];
    for b in 0..blocks {
        let mut cols: Vec<Vec<f64>> = Vec::with_capacity(d);
        while cols.len() < d {
            let mut v: Vec<f64> = (0..d).map(|_| standard_normal(&mut rng)).collect();
            for c in &cols {
                let dot: f64 = v.iter().zip(c).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(c).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm > 1e-6 {
                cols.push(v.into_iter().map(|a| a / norm).collect());
            }
        }
        for (j, c) in cols.iter().enumerate() {
            for (i, &x) in c.iter().enumerate() {
                out[(b * d + i) * d + j] = x as f32;
            }
        }
    }
    out
}

/// The rotations of one layer: for each of `kv_heads` KV heads, ⌈bits / d⌉ blocks,
/// [kv_heads][blocks][d][d] (block r gives bits r·d .. (r+1)·d of the code).
pub fn layer_rotations(
    d: usize,
    kv_heads: usize,
    bits: usize,
    seed: u64,
    layer: usize,
) -> Vec<f32> {
    random_rotation(
        d,
        kv_heads * bits.div_ceil(d),
        mix_seed(seed, &[layer as u64]),
    )
}

/// The [d][bits] projection of one KV head out of [`layer_rotations`]: block r's columns side by
/// side, cut to `bits`.
pub fn head_projection(rotations: &[f32], d: usize, bits: usize, kv_head: usize) -> Vec<f32> {
    let blocks = bits.div_ceil(d);
    let mut out = vec![0f32; d * bits];
    for i in 0..d {
        for c in 0..bits {
            let (b, j) = (c / d, c % d);
            out[i * bits + c] = rotations[((kv_head * blocks + b) * d + i) * d + j];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{head_projection, layer_rotations, random_rotation};

    /// Each d×d block is orthogonal: RᵀR = I (f32, 1e-5); seeds and layers differ.
    #[test]
    fn random_rotation_blocks_are_orthogonal() {
        for (d, blocks) in [(32, 1), (64, 3)] {
            let r = random_rotation(d, blocks, 7);
            for b in 0..blocks {
                let m = &r[b * d * d..(b + 1) * d * d];
                for i in 0..d {
                    for j in 0..d {
                        let dot: f64 = (0..d)
                            .map(|row| m[row * d + i] as f64 * m[row * d + j] as f64)
                            .sum();
                        let want = if i == j { 1.0 } else { 0.0 };
                        assert!(
                            (dot - want).abs() < 1e-5,
                            "d {d} block {b} ({i},{j}): {dot}"
                        );
                    }
                }
            }
        }
        assert_ne!(random_rotation(32, 1, 1), random_rotation(32, 1, 2));
        assert_ne!(
            layer_rotations(8, 2, 8, 0, 0),
            layer_rotations(8, 2, 8, 0, 1)
        );
    }

    /// A head's projection holds its own blocks in order, cut to the code length.
    #[test]
    fn head_projection_takes_the_heads_blocks() {
        let (d, kv, bits) = (8, 3, 20); // 3 blocks per head, the last one cut
        let r = layer_rotations(d, kv, bits, 5, 2);
        for head in 0..kv {
            let p = head_projection(&r, d, bits, head);
            for i in 0..d {
                for c in 0..bits {
                    let block = head * 3 + c / d;
                    assert_eq!(p[i * bits + c], r[(block * d + i) * d + c % d]);
                }
            }
        }
    }
}
