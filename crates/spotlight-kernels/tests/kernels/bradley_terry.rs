//! The Bradley–Terry ranking loss and its backward.

use crate::prelude::*;

/// The Bradley–Terry row sums and pair weights against the reference, with repeated keys, invalid
/// pairs, key indices past the row, one pair, and pair counts off the cube width.
pub(crate) fn bradley_terry_matches_reference<R: Runtime>(client: &ComputeClient<R>) {
    use spotlight_kernels::bradley_terry::{bt_pair_grads, bt_rows, PairBuffers};
    use spotlight_kernels::reference::bradley_terry as bt;
    let client = client.clone();
    let mut rng = rng("bradley_terry");
    for (rows, n, pairs) in [
        (1, 1, 1),
        (5, 40, 300),
        (17, 9, 257),
        (3, 100, 0),
        (0, 4, 4),
    ] {
        let scores = normal(&mut rng, rows * n, 3.0);
        // Keys repeat (few distinct), some lie past the row (n), a third of the pairs are invalid.
        let key = |rng: &mut StdRng| -> u32 {
            if rng.random::<f32>() < 0.05 {
                n as u32 + rng.random_range(0..3)
            } else {
                rng.random_range(0..n as u32)
            }
        };
        let top: Vec<u32> = (0..rows * pairs).map(|_| key(&mut rng)).collect();
        let other: Vec<u32> = (0..rows * pairs).map(|_| key(&mut rng)).collect();
        let valid: Vec<f32> = (0..rows * pairs)
            .map(|_| (rng.random::<f32>() > 0.33) as u8 as f32)
            .collect();
        let grad = normal(&mut rng, 3 * rows, 1.0);
        let (beta, margin) = (0.5 + rng.random::<f32>(), rng.random::<f32>() - 0.5);
        let handles = (
            upload_f32(&client, &scores),
            upload_u32(&client, &top),
            upload_u32(&client, &other),
            upload_f32(&client, &valid),
        );
        let set = PairBuffers {
            scores: &handles.0,
            top: &handles.1,
            other: &handles.2,
            valid: &handles.3,
            rows,
            n,
            pairs,
            beta,
            margin,
        };
        let (scores64, valid64) = (to_f64(&scores), to_f64(&valid));
        let rset = bt::PairSet {
            scores: &scores64,
            top: &top,
            other: &other,
            valid: &valid64,
            rows,
            n,
            pairs,
            beta: beta as f64,
            margin: margin as f64,
        };
        let what = format!("rows {rows} n {n} pairs {pairs}");
        let out = filled_f32(&client, 3 * rows, f32::NAN);
        bt_rows(&client, &set, &out).unwrap();
        let want = bt::bt_rows(&rset);
        // Sums of up to 300 terms in f32.
        assert_close(&read_f32(&client, out, 3 * rows), &want, 1e-5, &what);

        let out = filled_f32(&client, rows * pairs, f32::NAN);
        bt_pair_grads(&client, &set, &upload_f32(&client, &grad), &out).unwrap();
        let want = bt::bt_pair_grads(&rset, &to_f64(&grad));
        assert_close(&read_f32(&client, out, rows * pairs), &want, 1e-5, &what);
    }
}

/// The reference pair weights, scattered, are the derivative of the reference row loss.
#[test]
fn bradley_terry_reference_backward_is_its_derivative() {
    use spotlight_kernels::reference::bradley_terry as bt;
    let mut rng = rng("bradley_terry_fd");
    let (rows, n, pairs) = (3, 7, 11);
    let scores = to_f64(&normal(&mut rng, rows * n, 2.0));
    let top: Vec<u32> = (0..rows * pairs)
        .map(|_| rng.random_range(0..n as u32))
        .collect();
    let other: Vec<u32> = (0..rows * pairs)
        .map(|_| rng.random_range(0..n as u32))
        .collect();
    let valid = vec![1.0; rows * pairs];
    let grad = to_f64(&normal(&mut rng, rows, 1.0));
    let set = |s: &[f64]| -> f64 {
        let ps = bt::PairSet {
            scores: s,
            top: &top,
            other: &other,
            valid: &valid,
            rows,
            n,
            pairs,
            beta: 1.3,
            margin: 0.2,
        };
        bt::bt_rows(&ps)[..rows]
            .iter()
            .zip(&grad)
            .map(|(l, g)| l * g)
            .sum()
    };
    let ps = bt::PairSet {
        scores: &scores,
        top: &top,
        other: &other,
        valid: &valid,
        rows,
        n,
        pairs,
        beta: 1.3,
        margin: 0.2,
    };
    let g = bt::bt_score_grads(&ps, &bt::bt_pair_grads(&ps, &grad));
    for i in 0..rows * n {
        let eps = 1e-6;
        let (mut up, mut down) = (scores.clone(), scores.clone());
        up[i] += eps;
        down[i] -= eps;
        let fd = (set(&up) - set(&down)) / (2.0 * eps);
        assert!(
            (fd - g[i]).abs() <= 1e-7 * (1.0 + fd.abs()),
            "score {i}: {} vs {fd}",
            g[i]
        );
    }
}
