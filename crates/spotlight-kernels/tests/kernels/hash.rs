//! The hash MLP kernels: codes (plain and placed in a code cache), replicas, the training forward and backward.

use crate::prelude::*;

/// Random hash weights (scale `scale`) of `replicas` networks for each of `heads` input heads.
fn random_weights(
    rng: &mut StdRng,
    heads: usize,
    replicas: usize,
    d: usize,
    scale: f32,
) -> HashWeights {
    let nets = heads * replicas;
    HashWeights::new(
        nets,
        d,
        normal(rng, nets * d * d, scale),
        normal(rng, nets * d, scale),
        normal(rng, nets * d * d, scale),
        normal(rng, nets * d, scale),
    )
    .unwrap()
    .with_replicas(replicas)
    .unwrap()
}

/// Networks `heads × replicas` read input head `net / replicas`; a head's code is its replicas'
/// codes side by side.
pub(crate) fn hash_pack_matches_reference<R: Runtime>(client: &ComputeClient<R>) {
    let client = client.clone();
    let mut rng = rng("hash_pack");
    for (heads, replicas, d, rows) in [
        (1, 1, 64, 1),
        (2, 1, 96, 3),
        (3, 1, 64, 17),
        (2, 1, 128, 40),
        (1, 1, 256, 5),
        (3, 2, 64, 17),
        (2, 4, 64, 3),
        (1, 3, 32, 1),
    ] {
        let nets = heads * replicas;
        let w = random_weights(&mut rng, heads, replicas, d, 0.1);
        let x = normal(&mut rng, rows * heads * d, 1.0);
        let words = d / 32;
        let head_words = replicas * words;
        let out = filled_u32(&client, rows * nets * words, POISON);
        let dev = DeviceHashWeights::upload(&client, &w);
        hash_pack(&client, &dev, &upload_f32(&client, &x), rows, &out).unwrap();
        let got = read_u32(&client, out, rows * nets * words);
        let want = reference::hash_pack(&w, &x);
        assert_eq!(want.len(), got.len());
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            let diff = g ^ e;
            if diff == 0 {
                continue;
            }
            // A bit may only differ where h2 is so close to zero that summation order decides it.
            let (row, head, hw) = (
                i / (heads * head_words),
                (i / head_words) % heads,
                i % head_words,
            );
            let (net, word) = (head * replicas + hw / words, hw % words);
            let h2 = w.forward(net, &x[(row * heads + head) * d..][..d]);
            for b in 0..32 {
                if diff >> b & 1 == 1 {
                    let v = h2[word * 32 + b];
                    assert!(
                        v.abs() < 1e-4,
                        "heads {heads}×{replicas} d {d} rows {rows}: bit {b} of word {i} differs, h2 = {v}"
                    );
                }
            }
        }
    }
}

/// The reference's replica layout: code words of (row, head) are network (head·R + k)'s signs
/// for k = 0..R, each network reading the head's vector.
#[test]
fn replicated_codes_are_the_networks_side_by_side() {
    let mut rng = rng("replicas");
    let (heads, replicas, d, rows) = (2, 3, 32, 2);
    let w = random_weights(&mut rng, heads, replicas, d, 0.3);
    let x = normal(&mut rng, rows * heads * d, 1.0);
    let codes = reference::hash_pack(&w, &x);
    assert_eq!(codes.len(), rows * heads * replicas);
    for row in 0..rows {
        for head in 0..heads {
            for k in 0..replicas {
                let v = &x[(row * heads + head) * d..][..d];
                let want = reference::pack_signs(&w.forward(head * replicas + k, v));
                assert_eq!(codes[(row * heads + head) * replicas + k], want[0]);
            }
        }
    }
    // 5 networks do not split into 2 per head.
    assert!(random_weights(&mut rng, 5, 1, d, 0.3)
        .with_replicas(2)
        .is_err());
}

/// Codes written at each row's (sequence, position) of a code cache equal the plain codes of
/// those rows, and nothing else in the cache changes.
pub(crate) fn hash_pack_placed_writes_each_rows_codes_at_its_place_only<R: Runtime>(
    client: &ComputeClient<R>,
) {
    use spotlight_kernels::hash_pack::hash_pack_placed;
    use spotlight_kernels::rope_append::{upload_places, RowPlace};
    let client = client.clone();
    let mut rng = rng("hash_pack_placed");
    let (heads, d, batch, cap) = (3, 64, 3, 5);
    let places = [
        RowPlace { seq: 2, pos: 4 },
        RowPlace { seq: 0, pos: 0 },
        RowPlace { seq: 1, pos: 2 },
    ];
    let n = heads * d;
    let weights = HashWeights::new(
        heads,
        d,
        normal(&mut rng, n * d, 0.2),
        normal(&mut rng, n, 0.1),
        normal(&mut rng, n * d, 0.2),
        normal(&mut rng, n, 0.1),
    )
    .unwrap();
    let x = normal(&mut rng, places.len() * n, 1.0);
    let want_rows = reference::hash_pack(&weights, &x);
    let words = heads * d / 32;
    let cache = filled_u32(&client, batch * cap * words, POISON);
    let (seq, pos) = upload_places(&client, &places);
    let dev = DeviceHashWeights::upload(&client, &weights);
    let xh = upload_f32(&client, &x);
    hash_pack_placed(
        &client,
        &dev,
        &xh,
        &places,
        (&seq, &pos),
        &cache,
        (batch, cap),
    )
    .unwrap();
    let mut want = vec![POISON; batch * cap * words];
    for (r, p) in places.iter().enumerate() {
        let at = (p.seq * cap + p.pos) * words;
        want[at..at + words].copy_from_slice(&want_rows[r * words..(r + 1) * words]);
    }
    assert_eq!(read_u32(&client, cache.clone(), want.len()), want);
    let over = [RowPlace { seq: 0, pos: cap }];
    let err = hash_pack_placed(
        &client,
        &dev,
        &xh,
        &over,
        (&seq, &pos),
        &cache,
        (batch, cap),
    );
    assert!(err.is_err());
}

/// The training forward (softsign epilogue of the hash kernel) and its backward against the f64
/// reference, at row counts around the tile (16) and widths 32–128.
pub(crate) fn hash_soft_and_backward_match_reference<R: Runtime>(client: &ComputeClient<R>) {
    use spotlight_kernels::hash_pack::MlpBuffers;
    use spotlight_kernels::hash_train::{hash_soft, hash_soft_backward, RowGradBuffers};
    let client = client.clone();
    let mut rng = rng("hash_soft");
    for (nets, d, rows) in [
        (1, 32, 1),
        (3, 64, 17),
        (2, 128, 40),
        (4, 32, 16),
        (2, 64, 0),
    ] {
        let len = nets * rows * d;
        let (w1, b1, w2, b2) = (
            normal(&mut rng, nets * d * d, 0.15),
            normal(&mut rng, nets * d, 0.2),
            normal(&mut rng, nets * d * d, 0.15),
            normal(&mut rng, nets * d, 0.2),
        );
        let x = normal(&mut rng, len, 1.0);
        let grad = normal(&mut rng, len, 1.0);
        let gamma = 0.5 + 3.0 * rng.random::<f32>();
        let handles: Vec<_> = [&w1, &b1, &w2, &b2]
            .iter()
            .map(|v| upload_f32(&client, v))
            .collect();
        let p = MlpBuffers {
            nets,
            d,
            w1: &handles[0],
            b1: &handles[1],
            w2: &handles[2],
            b2: &handles[3],
        };
        let (w1f, b1f, w2f, b2f) = (to_f64(&w1), to_f64(&b1), to_f64(&w2), to_f64(&b2));
        let rp = reference::MlpParams {
            nets,
            d,
            w1: &w1f,
            b1: &b1f,
            w2: &w2f,
            b2: &b2f,
        };
        let what = format!("nets {nets} d {d} rows {rows}");
        let x_h = upload_f32(&client, &x);
        let out = filled_f32(&client, len, f32::NAN);
        hash_soft(&client, &p, &x_h, rows, gamma, &out).unwrap();
        let want = reference::hash_soft(&rp, &to_f64(&x), rows, gamma as f64);
        assert_close(&read_f32(&client, out, len), &want, 1e-5, &what);

        let bufs: Vec<_> = (0..4).map(|_| filled_f32(&client, len, f32::NAN)).collect();
        let out = RowGradBuffers {
            x: &bufs[0],
            a1: &bufs[1],
            h2: &bufs[2],
            h1: &bufs[3],
        };
        let grad_h = upload_f32(&client, &grad);
        hash_soft_backward(&client, &p, &x_h, rows, gamma, &grad_h, out).unwrap();
        let want =
            reference::hash_soft_backward(&rp, &to_f64(&x), rows, gamma as f64, &to_f64(&grad));
        for (b, (name, w)) in bufs.into_iter().zip([
            ("grad x", &want.x),
            ("grad a1", &want.a1),
            ("grad h2", &want.h2),
            ("h1", &want.h1),
        ]) {
            // f32 sums of d products of O(1) terms: relative 1e-4.
            assert_close(
                &read_f32(&client, b, len),
                w,
                1e-4,
                &format!("{what} {name}"),
            );
        }
    }
    // Widths the kernel cannot run are errors.
    let h = upload_f32(&client, &[0.0; 48 * 48]);
    let p = MlpBuffers {
        nets: 1,
        d: 48,
        w1: &h,
        b1: &h,
        w2: &h,
        b2: &h,
    };
    assert!(hash_soft(&client, &p, &h, 1, 1.0, &h).is_err());
}

/// The reference backward is the derivative of the reference forward (f64 central differences).
#[test]
fn hash_soft_reference_backward_is_its_derivative() {
    let mut rng = rng("hash_soft_fd");
    let (nets, d, rows) = (2, 32, 3);
    let draw = |rng: &mut StdRng, n: usize, s: f32| to_f64(&normal(rng, n, s));
    let (w1, b1, w2, b2) = (
        draw(&mut rng, nets * d * d, 0.2),
        draw(&mut rng, nets * d, 0.2),
        draw(&mut rng, nets * d * d, 0.2),
        draw(&mut rng, nets * d, 0.2),
    );
    let x = draw(&mut rng, nets * rows * d, 1.0);
    let grad = draw(&mut rng, nets * rows * d, 1.0);
    let gamma = 2.0;
    let p = reference::MlpParams {
        nets,
        d,
        w1: &w1,
        b1: &b1,
        w2: &w2,
        b2: &b2,
    };
    let back = reference::hash_soft_backward(&p, &x, rows, gamma, &grad);
    // L = Σ grad · c(x): ∂L/∂x against central differences.
    let loss = |x: &[f64]| -> f64 {
        reference::hash_soft(&p, x, rows, gamma)
            .iter()
            .zip(&grad)
            .map(|(c, g)| c * g)
            .sum()
    };
    for i in [0, 7, x.len() / 2, x.len() - 1] {
        let eps = 1e-6;
        let (mut up, mut down) = (x.clone(), x.clone());
        up[i] += eps;
        down[i] -= eps;
        let fd = (loss(&up) - loss(&down)) / (2.0 * eps);
        assert!(
            (fd - back.x[i]).abs() <= 1e-7 * (1.0 + fd.abs()),
            "x[{i}]: {} vs {fd}",
            back.x[i]
        );
    }
}
