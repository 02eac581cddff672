//! The linear kernel: plain, every epilogue, every tiling, the RMSNorm prologue.

use crate::prelude::*;

pub(crate) fn linear_matches_reference<R: Runtime>(client: &ComputeClient<R>) {
    let client = client.clone();
    let mut rng = rng("linear");
    for (m, k, n) in [
        (1, 64, 1),
        (3, 36, 13),
        (16, 100, 37),
        (1, 1024, 300),
        (4, 4, 9),
    ] {
        let x = normal(&mut rng, m * k, 1.0);
        let w = normal(&mut rng, n * k, 1.0);
        let y = filled_f32(&client, m * n, f32::NAN);
        spotlight_kernels::linear::linear::<R, f32>(
            &client,
            &upload_f32(&client, &x),
            &upload_f32(&client, &w),
            &y,
            m,
            k,
            n,
        )
        .unwrap();
        let got = read_f32(&client, y, m * n);
        let want = reference::linear(&x, &w, m, k, n);
        let scale = (k as f32).sqrt();
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - e).abs() <= 1e-5 * scale * (1.0 + e.abs()),
                "m {m} k {k} n {n}: element {i}: {g} vs {e}"
            );
        }
    }
    let y = filled_f32(&client, 1, 0.0);
    let h = upload_f32(&client, &[0.0; 4]);
    assert!(spotlight_kernels::linear::linear::<R, f32>(&client, &h, &h, &y, 17, 4, 1).is_err());
    assert!(spotlight_kernels::linear::linear::<R, f32>(&client, &h, &h, &y, 1, 6, 1).is_err());
}

pub(crate) fn linear_epilogues_match_reference<R: Runtime>(client: &ComputeClient<R>) {
    use spotlight_kernels::linear::{linear_fused, Epilogue, Prologue};
    let client = client.clone();
    let mut rng = rng("linear_epilogues");
    // m > 16 runs as several launches; 37 rows leave a ragged last one.
    for (m, k, n) in [
        (1, 64, 1),
        (3, 28, 11),
        (5, 36, 13),
        (37, 100, 19),
        (16, 8, 300),
    ] {
        let x = normal(&mut rng, m * k, 1.0);
        let w = normal(&mut rng, n * k, 1.0);
        let up = normal(&mut rng, n * k, 1.0);
        let y0 = normal(&mut rng, m * n, 1.0);
        let (xh, wh, uh) = (
            upload_f32(&client, &x),
            upload_f32(&client, &w),
            upload_f32(&client, &up),
        );
        let gate = reference::linear(&x, &w, m, k, n);
        let upv = reference::linear(&x, &up, m, k, n);
        let tol = 1e-5 * (k as f64).sqrt();
        let what = format!("m {m} k {k} n {n}");

        let y = filled_f32(&client, m * n, f32::NAN);
        let none = Prologue::None;
        linear_fused::<R, f32>(&client, &xh, &wh, (none, Epilogue::Store), &y, (m, k, n)).unwrap();
        assert_close(&read_f32(&client, y, m * n), &gate, tol, &what);

        let y = upload_f32(&client, &y0);
        let ends = (none, Epilogue::Accumulate);
        linear_fused::<R, f32>(&client, &xh, &wh, ends, &y, (m, k, n)).unwrap();
        let want: Vec<f32> = y0.iter().zip(&gate).map(|(a, b)| a + b).collect();
        assert_close(&read_f32(&client, y, m * n), &want, tol, &what);

        let y = filled_f32(&client, m * n, f32::NAN);
        let ends = (none, Epilogue::SwiGlu { up: &uh });
        linear_fused::<R, f32>(&client, &xh, &wh, ends, &y, (m, k, n)).unwrap();
        let want: Vec<f32> = gate
            .iter()
            .zip(&upv)
            .map(|(&g, &u)| (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32)
            .collect();
        assert_close(&read_f32(&client, y, m * n), &want, tol, &what);
    }
}

pub(crate) fn linear_tilings_match_reference<R: Runtime>(client: &ComputeClient<R>) {
    use spotlight_kernels::linear::{linear_with, Epilogue, Prologue, Tiling};
    let client = client.clone();
    let mut rng = rng("linear_tilings");
    // Column counts that leave the last plane partly empty; k not a multiple of plane · vec.
    for (m, k, n) in [(1, 44, 13), (3, 100, 37), (16, 68, 9)] {
        let x = normal(&mut rng, m * k, 1.0);
        let w = normal(&mut rng, n * k, 1.0);
        let want = reference::linear(&x, &w, m, k, n);
        let (xh, wh) = (upload_f32(&client, &x), upload_f32(&client, &w));
        for (cols, in_flight) in [(1, 1), (1, 8), (2, 2), (3, 2), (4, 1), (8, 1)] {
            let y = filled_f32(&client, m * n, f32::NAN);
            let tiling = Tiling { cols, in_flight };
            let ends = (Prologue::None, Epilogue::Store);
            linear_with::<R, f32>(&client, &xh, &wh, ends, &y, (m, k, n), tiling).unwrap();
            let what = format!("m {m} k {k} n {n} {tiling:?}");
            assert_close(
                &read_f32(&client, y, m * n),
                &want,
                1e-5 * (k as f64).sqrt(),
                &what,
            );
        }
    }
    let h = upload_f32(&client, &[0.0; 4]);
    let bad = Tiling {
        cols: 9,
        in_flight: 1,
    };
    let ends = (Prologue::None, Epilogue::Store);
    assert!(linear_with::<R, f32>(&client, &h, &h, ends, &h, (1, 4, 1), bad).is_err());
}

/// RMSNorm fused before the projection equals RMSNorm then the projection, with each
/// epilogue (SwiGLU scales gate and up by the same 1/rms) and at every row count's tiling.
pub(crate) fn linear_with_rms_norm_prologue_matches_norm_then_linear<R: Runtime>(
    client: &ComputeClient<R>,
) {
    use spotlight_kernels::linear::{linear_fused, Epilogue, Prologue};
    let client = client.clone();
    let mut rng = rng("linear_rms_norm");
    for (m, k, n) in [(1, 4, 1), (3, 36, 13), (16, 576, 29), (2, 4096, 5)] {
        let x = normal(&mut rng, m * k, 3.0);
        let gamma = normal(&mut rng, k, 1.0);
        let w = normal(&mut rng, n * k, 1.0);
        let up = normal(&mut rng, n * k, 1.0);
        let xn = reference::rms_norm(&x, &gamma, k, 1e-5);
        let gate = reference::linear(&xn, &w, m, k, n);
        let upv = reference::linear(&xn, &up, m, k, n);
        let (xh, gh, wh, uh) = (
            upload_f32(&client, &x),
            upload_f32(&client, &gamma),
            upload_f32(&client, &w),
            upload_f32(&client, &up),
        );
        let norm = Prologue::RmsNorm {
            gamma: &gh,
            eps: 1e-5,
        };
        let tol = 1e-5 * (k as f64).sqrt();
        let what = format!("m {m} k {k} n {n}");
        let y = filled_f32(&client, m * n, f32::NAN);
        linear_fused::<R, f32>(&client, &xh, &wh, (norm, Epilogue::Store), &y, (m, k, n)).unwrap();
        assert_close(&read_f32(&client, y, m * n), &gate, tol, &what);
        let y = filled_f32(&client, m * n, f32::NAN);
        let ends = (norm, Epilogue::SwiGlu { up: &uh });
        linear_fused::<R, f32>(&client, &xh, &wh, ends, &y, (m, k, n)).unwrap();
        let want: Vec<f32> = gate
            .iter()
            .zip(&upv)
            .map(|(&g, &u)| (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32)
            .collect();
        assert_close(&read_f32(&client, y, m * n), &want, tol, &what);
    }
}
