//! The tensor-core linear kernel against the f64 reference, on CUDA: awkward shapes (one row, 3,
//! 8, 9 and 16 rows, more than 16 rows as several launches, columns off the 16-column tile, k
//! at one chunk), every epilogue, the RMSNorm prologue and every tiling the benchmark sweeps.
//!
//! It needs an NVIDIA GPU with bf16 MMA (sm80+), so it runs only with SPOTLIGHT_CUDA_TESTS=1;
//! elsewhere it says it was skipped. `scripts/gpu/kernels.sh` runs this test binary on the H200.
//! The kernel rounds x (after γ) to bf16 as it enters the MMA; the reference rounds the same
//! values, so what is left to compare is f32 accumulation order.

mod common;

use common::{assert_close, normal, rng};
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;
use half::bf16;
use spotlight_kernels::device::{filled_f32, read_f32, upload, upload_f32};
use spotlight_kernels::linear::{linear_fused, linear_with, Epilogue, Kernel, Prologue};
use spotlight_kernels::linear_mma::{self, MmaTiling};
use spotlight_kernels::{reference, KernelError};

fn enabled() -> bool {
    let on = std::env::var("SPOTLIGHT_CUDA_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set SPOTLIGHT_CUDA_TESTS=1 on a machine with an NVIDIA GPU");
    }
    on
}

fn round(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&a| bf16::from_f32(a).to_f32()).collect()
}

/// f32 accumulation over k terms (x already rounded as the kernel rounds it).
fn check(got: &[f32], want: &[f32], k: usize, what: &str) {
    assert_close(got, want, 1e-5 * (k as f64).sqrt(), what);
}

const TILINGS: [(usize, usize, usize); 10] = [
    (1, 1, 1),
    (1, 16, 2),
    (2, 16, 1),
    (1, 32, 1),
    (2, 4, 2),
    (1, 4, 2),
    (2, 8, 1),
    (4, 2, 2),
    (2, 2, 8),
    (4, 1, 4),
];

#[test]
fn mma_linear_matches_reference() {
    if !enabled() {
        return;
    }
    let client = CudaRuntime::client(&Default::default());
    assert!(
        linear_mma::supported(&client),
        "this GPU has no bf16 m16n8k16 MMA"
    );
    let mut rng = rng("mma_linear");
    for (m, k, n) in [
        (1, 32, 1),
        (3, 96, 13),
        (8, 64, 37),
        (9, 160, 300),
        (16, 576, 33),
        (16, 4096, 70),
        (37, 256, 19),
    ] {
        let x = normal(&mut rng, m * k, 1.0);
        let gamma = normal(&mut rng, k, 1.0);
        let w = round(&normal(&mut rng, n * k, 1.0));
        let up = round(&normal(&mut rng, n * k, 1.0));
        let y0 = normal(&mut rng, m * n, 1.0);
        let wb: Vec<bf16> = w.iter().map(|&a| bf16::from_f32(a)).collect();
        let ub: Vec<bf16> = up.iter().map(|&a| bf16::from_f32(a)).collect();
        let (xh, gh) = (upload_f32(&client, &x), upload_f32(&client, &gamma));
        let (wh, uh) = (upload(&client, &wb), upload(&client, &ub));

        let xr = round(&x);
        let gate = reference::linear(&xr, &w, m, k, n);
        let upv = reference::linear(&xr, &up, m, k, n);
        let silu = |g: f32, u: f32| (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32;
        // RMSNorm: the kernel rounds x·γ and scales the sums by 1/rms of the unrounded x.
        let eps = 1e-5f32;
        let xg: Vec<f32> = x
            .chunks(k)
            .flat_map(|row| row.iter().zip(&gamma).map(|(a, b)| a * b))
            .collect();
        let inv_rms: Vec<f32> = x
            .chunks(k)
            .map(|row| {
                let ms = row.iter().map(|&a| (a as f64).powi(2)).sum::<f64>() / k as f64;
                (1.0 / (ms + eps as f64).sqrt()) as f32
            })
            .collect();
        let normed = reference::linear(&round(&xg), &w, m, k, n);
        let normed: Vec<f32> = normed
            .iter()
            .enumerate()
            .map(|(i, v)| v * inv_rms[i / n])
            .collect();

        // The default path: m > 16 runs as several launches; one row takes the CUDA-core kernel.
        let y = filled_f32(&client, m * n, f32::NAN);
        let none = Prologue::None;
        linear_fused::<CudaRuntime, bf16>(
            &client,
            &xh,
            &wh,
            (none, Epilogue::Store),
            &y,
            (m, k, n),
        )
        .unwrap();
        let got = read_f32(&client, y, m * n);
        if m == 1 {
            let exact_x = reference::linear(&x, &w, m, k, n);
            check(&got, &exact_x, k, &format!("default m {m} k {k} n {n}"));
        } else {
            check(&got, &gate, k, &format!("default m {m} k {k} n {n}"));
        }
        // Every tiling on two shapes (each is a separate compile), two on the others.
        let tilings = match (m, k) {
            (9, 160) | (16, 4096) => &TILINGS[..],
            _ if m <= 16 => &TILINGS[..2],
            _ => &[],
        };
        for &(tiles, split, in_flight) in tilings {
            let t = MmaTiling {
                tiles,
                split,
                in_flight,
            };
            let what = format!("m {m} k {k} n {n} {t:?}");
            // Ran (true), or refused for shared memory (false: 32 warps with SwiGLU's sums).
            let run = |ends: (Prologue, Epilogue), y: &cubecl::server::Handle| match linear_with::<
                CudaRuntime,
                bf16,
            >(
                &client,
                &xh,
                &wh,
                ends,
                y,
                (m, k, n),
                t,
            ) {
                Ok(()) => true,
                Err(KernelError::SharedMemory { .. }) => false,
                Err(e) => panic!("{what}: {e}"),
            };
            let y = filled_f32(&client, m * n, f32::NAN);
            assert!(run((none, Epilogue::Store), &y), "{what}: store refused");
            check(&read_f32(&client, y, m * n), &gate, k, &what);

            let y = upload_f32(&client, &y0);
            assert!(
                run((none, Epilogue::Accumulate), &y),
                "{what}: accumulate refused"
            );
            let want: Vec<f32> = y0.iter().zip(&gate).map(|(a, b)| a + b).collect();
            check(&read_f32(&client, y, m * n), &want, k, &what);

            let y = filled_f32(&client, m * n, f32::NAN);
            if run((none, Epilogue::SwiGlu { up: &uh }), &y) {
                let want: Vec<f32> = gate.iter().zip(&upv).map(|(&g, &u)| silu(g, u)).collect();
                check(&read_f32(&client, y, m * n), &want, k, &what);
            }

            let y = filled_f32(&client, m * n, f32::NAN);
            let norm = Prologue::RmsNorm { gamma: &gh, eps };
            assert!(run((norm, Epilogue::Store), &y), "{what}: norm refused");
            check(&read_f32(&client, y, m * n), &normed, k, &what);
        }
    }
}

#[test]
fn mma_linear_refuses_bad_shapes() {
    if !enabled() {
        return;
    }
    let client = CudaRuntime::client(&Default::default());
    let h = upload_f32(&client, &[0.0; 64]);
    let ends = (Prologue::None, Epilogue::Store);
    let ok = MmaTiling::DEFAULT;
    // k not a multiple of 32; f32 weights; a tiling out of range.
    assert!(linear_with::<CudaRuntime, bf16>(&client, &h, &h, ends, &h, (1, 16, 1), ok).is_err());
    assert!(linear_with::<CudaRuntime, f32>(&client, &h, &h, ends, &h, (1, 32, 1), ok).is_err());
    let bad = Kernel::Mma(MmaTiling {
        tiles: 3,
        split: 1,
        in_flight: 1,
    });
    assert!(linear_with::<CudaRuntime, bf16>(&client, &h, &h, ends, &h, (1, 32, 1), bad).is_err());
}
