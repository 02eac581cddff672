//! Top-k keys of the training targets.

use crate::prelude::*;

pub(crate) fn top_keys_match_reference<R: Runtime>(client: &ComputeClient<R>) {
    let client = client.clone();
    let mut rng = rng("top_keys");
    // (rows per position set, n, positions, k, ties, per-row counts): k > visible, k = n, ties,
    // one row, non-multiples; per-row counts below, at and above k (and 0, taken as 1).
    for (heads, n, t, k, tied, per_row) in [
        (1, 1, 1, 1, false, false),
        (3, 300, 7, 6, false, false),
        (2, 4097, 5, 81, false, false),
        (4, 1000, 9, 20, true, false),
        (1, 50, 3, 50, false, false),
        (3, 777, 11, 40, false, true),
        (2, 513, 6, 17, true, true),
    ] {
        let rows = heads * t;
        let logits: Vec<f32> = if tied {
            // Few distinct values: many ties at the k-th value.
            (0..rows * n)
                .map(|_| (rng.random_range(0..5) as f32) - 2.0)
                .collect()
        } else {
            normal(&mut rng, rows * n, 3.0)
        };
        let mut positions: Vec<u32> = (0..t).map(|_| rng.random_range(0..n as u32)).collect();
        positions[0] = 0; // a single visible key
        if t > 1 {
            positions[t - 1] = (n - 1) as u32;
        }
        let row_k: Option<Vec<u32>> = per_row.then(|| {
            let mut ks: Vec<u32> = (0..t)
                .map(|_| rng.random_range(1..=(k + k / 2) as u32))
                .collect();
            ks[1] = 0;
            ks[t - 1] = k as u32 / 3;
            ks
        });
        let (top_ref, count_ref, thr_ref) =
            reference::top_keys(&logits, n, &positions, row_k.as_deref(), k);
        let ks = row_k.clone().unwrap_or_else(|| vec![k as u32; t]);
        let (lh, ph, kh) = (
            upload_f32(&client, &logits),
            upload_u32(&client, &positions),
            upload_u32(&client, &ks),
        );
        let top = filled_u32(&client, rows * k, POISON);
        let count = filled_u32(&client, rows, POISON);
        let thr = filled_f32(&client, rows, f32::NAN);
        spotlight_kernels::top_keys::top_keys(
            &client, &lh, rows, n, &ph, &kh, t, k, &top, &count, &thr,
        )
        .unwrap();
        let case = format!("heads {heads} n {n} t {t} k {k} tied {tied} per-row {per_row}");
        assert_eq!(read_u32(&client, count, rows), count_ref, "{case}: counts");
        // Every slot is written: the chosen indices, then 0 padding.
        assert_eq!(
            read_u32(&client, top, rows * k),
            top_ref,
            "{case}: top keys"
        );
        assert_eq!(read_f32(&client, thr, rows), thr_ref, "{case}: thresholds");
        if let Some(ks) = &row_k {
            // The reference itself: a row takes min(k_r, visible) keys, at least one.
            for r in 0..rows {
                let visible = positions[r % t] as usize + 1;
                let want = (ks[r % t] as usize).clamp(1, k).min(visible);
                assert_eq!(count_ref[r] as usize, want, "{case}: row {r} count");
            }
        }
    }
    assert!(spotlight_kernels::top_keys::top_keys(
        &client,
        &upload_f32(&client, &[1.0]),
        1,
        1,
        &upload_u32(&client, &[0]),
        &upload_u32(&client, &[2]),
        1,
        2,
        &filled_u32(&client, 2, 0),
        &filled_u32(&client, 1, 0),
        &filled_f32(&client, 1, 0.0),
    )
    .is_err());
}
