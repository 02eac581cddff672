//! Helpers shared by the kernel test files: seeded inputs and the closeness check.
#![allow(dead_code)] // each test file uses its own subset

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A generator seeded from SPOTLIGHT_SEED, or else from the test's name: every run of a test sees
/// the same inputs (the seed is printed; another seed reruns it on other inputs).
pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var("SPOTLIGHT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            // FNV-1a of the name: fixed, and different for every test.
            test.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
            })
        });
    eprintln!("{test}: SPOTLIGHT_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

pub fn normal(rng: &mut StdRng, n: usize, std: f32) -> Vec<f32> {
    // Sum of uniforms: close enough to Gaussian for test inputs.
    (0..n)
        .map(|_| (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() * std * 1.73)
        .collect()
}

/// |got − want| ≤ tol·(1 + |want|) element by element (want in f32 or f64).
pub fn assert_close<T: Copy + Into<f64>>(got: &[f32], want: &[T], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &e)) in got.iter().zip(want).enumerate() {
        let e: f64 = e.into();
        assert!(
            (g as f64 - e).abs() <= tol * (1.0 + e.abs()),
            "{what}: element {i}: {g} vs {e}"
        );
    }
}
