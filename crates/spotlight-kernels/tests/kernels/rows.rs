//! Row movement: copy, embedding lookup, RoPE + cache append.

use crate::prelude::*;

pub(crate) fn copy_moves_every_word<R: Runtime>(client: &ComputeClient<R>) {
    let client = client.clone();
    let mut rng = rng("copy");
    for n in [1usize, 255, 1 << 20] {
        let src: Vec<u32> = (0..n).map(|_| rng.random()).collect();
        let dst = filled_u32(&client, n, POISON);
        spotlight_kernels::copy::copy(&client, &upload_u32(&client, &src), &dst, n);
        assert_eq!(read_u32(&client, dst, n), src);
    }
}

/// First row of the rotated-key buffer the rope_append test writes to (keys of earlier steps
/// wait below it for deferred hashing).
const KEY_ROW0: usize = 3;

pub(crate) fn rope_append_rotates_q_and_writes_k_v_at_each_rows_place<R: Runtime>(
    client: &ComputeClient<R>,
) {
    use spotlight_kernels::rope_append::{
        rope_append, upload_places, KeyRows, RopeShape, RowPlace,
    };
    let client = client.clone();
    let mut rng = rng("rope_append");
    // Ragged places: two rows of one sequence, a sequence skipped, the last cache row.
    let places = [
        RowPlace { seq: 0, pos: 5 },
        RowPlace { seq: 2, pos: 0 },
        RowPlace { seq: 0, pos: 6 },
        RowPlace { seq: 2, pos: 10 },
    ];
    for (q_heads, kv_heads, d) in [(3, 1, 2), (6, 2, 64), (4, 4, 10)] {
        let shape = RopeShape {
            q_heads,
            kv_heads,
            head_dim: d,
            batch: 3,
            cap: 11,
        };
        let (m, heads, half) = (places.len(), q_heads + 2 * kv_heads, d / 2);
        let qkv = normal(&mut rng, m * heads * d, 1.0);
        let angles: Vec<f32> = (0..shape.cap * half)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        let cache_len = shape.batch * kv_heads * shape.cap * d;
        let (q, kc, vc, k_rows) = (
            filled_f32(&client, m * q_heads * d, f32::NAN),
            filled_f32(&client, cache_len, 7.0),
            filled_f32(&client, cache_len, 7.0),
            filled_f32(&client, (KEY_ROW0 + m + 1) * kv_heads * d, f32::NAN),
        );
        let row0 = upload_u32(&client, &[KEY_ROW0 as u32]);
        let (seq, pos) = upload_places(&client, &places);
        rope_append::<R, f32>(
            &client,
            &shape,
            &upload_f32(&client, &qkv),
            (&upload_f32(&client, &cos), &upload_f32(&client, &sin)),
            &places,
            (&seq, &pos),
            &q,
            (&kc, &vc),
            Some(KeyRows {
                rows: &k_rows,
                row0: &row0,
                capacity: KEY_ROW0 + m,
            }),
        )
        .unwrap();
        let (mut want_q, mut want_k, mut want_v, mut want_rows) = (
            Vec::new(),
            vec![7.0f32; cache_len],
            vec![7.0f32; cache_len],
            Vec::new(),
        );
        for (r, p) in places.iter().enumerate() {
            let table = |t: &[f32]| t[p.pos * half..(p.pos + 1) * half].to_vec();
            let head = |h: usize| &qkv[(r * heads + h) * d..(r * heads + h + 1) * d];
            for h in 0..q_heads {
                want_q.extend(reference::rotate_half(head(h), &table(&cos), &table(&sin)));
            }
            for h in 0..kv_heads {
                let at = ((p.seq * kv_heads + h) * shape.cap + p.pos) * d;
                let k = reference::rotate_half(head(q_heads + h), &table(&cos), &table(&sin));
                want_k[at..at + d].copy_from_slice(&k);
                want_rows.extend(k);
                want_v[at..at + d].copy_from_slice(head(q_heads + kv_heads + h));
            }
        }
        let what = format!("heads {q_heads}/{kv_heads} d {d}");
        assert_close(&read_f32(&client, q, want_q.len()), &want_q, 1e-6, &what);
        assert_close(&read_f32(&client, kc, cache_len), &want_k, 1e-6, &what);
        assert_close(&read_f32(&client, vc, cache_len), &want_v, 0.0, &what);
        // The keys land at rows KEY_ROW0.. of the key buffer; the rows before stay untouched.
        // The row past the capacity stays untouched too.
        let kept = read_f32(&client, k_rows, (KEY_ROW0 + m + 1) * kv_heads * d);
        let (before, rows) = kept.split_at(KEY_ROW0 * kv_heads * d);
        let (rows, after) = rows.split_at(m * kv_heads * d);
        assert!(
            before.iter().chain(after).all(|x| x.is_nan()),
            "{what}: rows outside the ring's step written"
        );
        assert_close(rows, &want_rows, 1e-6, &what);
    }
    // A place past the capacity is an error, not a write.
    let shape = RopeShape {
        q_heads: 1,
        kv_heads: 1,
        head_dim: 2,
        batch: 1,
        cap: 4,
    };
    let h = filled_f32(&client, 64, 0.0);
    let err = rope_append::<R, f32>(
        &client,
        &shape,
        &h,
        (&h, &h),
        &[RowPlace { seq: 0, pos: 4 }],
        (&h, &h),
        &h,
        (&h, &h),
        None,
    );
    assert!(err.is_err());
}

pub(crate) fn embed_gathers_rows_and_rejects_ids_outside_the_vocabulary<R: Runtime>(
    client: &ComputeClient<R>,
) {
    let client = client.clone();
    let mut rng = rng("embed");
    let (vocab, d) = (13, 7);
    let table = normal(&mut rng, vocab * d, 1.0);
    let ids = [12u32, 0, 5, 5];
    let out = filled_f32(&client, ids.len() * d, f32::NAN);
    let th = upload_f32(&client, &table);
    spotlight_kernels::embed::embed::<R, f32>(
        &client,
        &th,
        (vocab, d),
        &ids,
        &upload_u32(&client, &ids),
        &out,
    )
    .unwrap();
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&t| table[t as usize * d..(t as usize + 1) * d].to_vec())
        .collect();
    assert_eq!(read_f32(&client, out.clone(), want.len()), want);
    let err = spotlight_kernels::embed::embed::<R, f32>(
        &client,
        &th,
        (vocab, d),
        &[13],
        &upload_u32(&client, &[13]),
        &out,
    );
    assert!(err.is_err());
}
