//! Attention: split-K decode attention (dense and over selected lists), causal prefill, flash prefill.

use crate::prelude::*;

struct Kv {
    k: Vec<f32>,
    v: Vec<f32>,
}

fn check_attend<R: Runtime>(
    client: &ComputeClient<R>,
    shape: AttendShape,
    lens: &[usize],
    sparse: bool,
    rng: &mut StdRng,
) {
    let client = client.clone();
    let d = shape.head_dim;
    let b = lens.len();
    let cap = lens.iter().copied().max().unwrap().max(1) + 2;
    let kv = Kv {
        k: normal(rng, b * shape.kv_heads * cap * d, 1.0),
        v: normal(rng, b * shape.kv_heads * cap * d, 1.0),
    };
    let q = normal(rng, b * shape.q_heads * d, 1.0);
    let rows: Vec<QueryRow> = lens
        .iter()
        .enumerate()
        .map(|(seq, &len)| QueryRow { seq, len })
        .collect();
    let rows = QueryRows::upload(&client, &rows);
    // Sparse lists: a random subset of each sequence, ascending, plus its last token.
    let lists: Vec<Vec<Vec<u32>>> = lens
        .iter()
        .map(|&len| {
            (0..shape.sets)
                .map(|_| {
                    (0..len as u32)
                        .filter(|&t| !sparse || t + 1 == len as u32 || rng.random::<f32>() < 0.1)
                        .collect()
                })
                .collect()
        })
        .collect();
    let out = filled_f32(&client, b * shape.q_heads * d, f32::NAN);
    let (kh, vh, qh) = (
        upload_f32(&client, &kv.k),
        upload_f32(&client, &kv.v),
        upload_f32(&client, &q),
    );
    let layout = KvLayout { batch: b, cap };
    if sparse {
        let index_cap = lists
            .iter()
            .flatten()
            .map(|l| l.len())
            .max()
            .unwrap()
            .max(1);
        let mut flat = vec![POISON; b * shape.sets * index_cap];
        let mut counts = vec![0u32; b * shape.sets];
        for (seq, sets) in lists.iter().enumerate() {
            for (set, list) in sets.iter().enumerate() {
                flat[(seq * shape.sets + set) * index_cap..][..list.len()].copy_from_slice(list);
                counts[seq * shape.sets + set] = list.len() as u32;
            }
        }
        let sel = Selection {
            batch: b,
            sets: shape.sets,
            index_cap,
            indices: upload_u32(&client, &flat),
            counts: upload_u32(&client, &counts),
        };
        attend::<R, f32>(
            &client,
            &shape,
            &qh,
            &kh,
            &vh,
            layout,
            &rows,
            Some((&sel, index_cap)),
            &out,
        )
        .unwrap();
    } else {
        attend::<R, f32>(&client, &shape, &qh, &kh, &vh, layout, &rows, None, &out).unwrap();
    }
    let got = read_f32(&client, out, b * shape.q_heads * d);
    for (seq, &len) in lens.iter().enumerate() {
        let per_seq = shape.kv_heads * cap * d;
        let want = reference::attend(
            &shape,
            &q[seq * shape.q_heads * d..][..shape.q_heads * d],
            &kv.k[seq * per_seq..][..per_seq],
            &kv.v[seq * per_seq..][..per_seq],
            cap,
            &lists[seq],
        );
        for (i, (g, e)) in got[seq * shape.q_heads * d..][..shape.q_heads * d]
            .iter()
            .zip(&want)
            .enumerate()
        {
            assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "{shape:?} lens {lens:?} sparse {sparse}: seq {seq} (len {len}) element {i}: {g} vs {e}");
        }
    }
}

pub(crate) fn attend_matches_reference<R: Runtime>(client: &ComputeClient<R>) {
    let mut rng = rng("attend");
    for shape in [
        AttendShape::dense(9, 3, 64).unwrap(),
        AttendShape::dense(4, 1, 128).unwrap(),
        AttendShape::dense(7, 1, 64).unwrap(),
        AttendShape::new(8, 2, 8, 128).unwrap(), // faithful layout: one list per query head
        AttendShape::dense(2, 2, 256).unwrap(),
    ] {
        for lens in [vec![1], vec![31], vec![1000], vec![4097], vec![0, 1000, 31]] {
            for sparse in [false, true] {
                check_attend(client, shape, &lens, sparse, &mut rng);
            }
        }
    }
}

pub(crate) fn causal_prefill_is_dense_attention_per_position<R: Runtime>(
    client: &ComputeClient<R>,
) {
    let client = client.clone();
    let mut rng = rng("prefill");
    let shape = AttendShape::dense(9, 3, 64).unwrap();
    let (len, d) = (77, 64);
    let k = normal(&mut rng, shape.kv_heads * len * d, 1.0);
    let v = normal(&mut rng, shape.kv_heads * len * d, 1.0);
    let q = normal(&mut rng, len * shape.q_heads * d, 1.0);
    let rows: Vec<QueryRow> = (0..len).map(|t| QueryRow { seq: 0, len: t + 1 }).collect();
    let rows = QueryRows::upload(&client, &rows);
    let out = filled_f32(&client, len * shape.q_heads * d, f32::NAN);
    let (kh, vh, qh) = (
        upload_f32(&client, &k),
        upload_f32(&client, &v),
        upload_f32(&client, &q),
    );
    attend::<R, f32>(
        &client,
        &shape,
        &qh,
        &kh,
        &vh,
        KvLayout { batch: 1, cap: len },
        &rows,
        None,
        &out,
    )
    .unwrap();
    let got = read_f32(&client, out, len * shape.q_heads * d);
    for t in 0..len {
        let lists = vec![(0..=t as u32).collect::<Vec<_>>(); shape.sets];
        let want = reference::attend(
            &shape,
            &q[t * shape.q_heads * d..][..shape.q_heads * d],
            &k,
            &v,
            len,
            &lists,
        );
        for (g, e) in got[t * shape.q_heads * d..][..shape.q_heads * d]
            .iter()
            .zip(&want)
        {
            assert!(
                (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
                "position {t}: {g} vs {e}"
            );
        }
    }
}

/// Flash-style causal prefill against the reference attention of each row over its visible keys:
/// ragged sequences continuing from cached rows, padding rows, a sequence with no new rows, one
/// token, groups of 1–4 heads, widths 64 and 128, row counts off the cube's 16-row tile. f32
/// caches (wgpu has no bf16; bf16 caches run in the CUDA benchmarks).
pub(crate) fn flash_prefill_matches_reference_per_row<R: Runtime>(client: &ComputeClient<R>) {
    use spotlight_kernels::prefill::{flash_prefill, PrefillShape};
    let client = client.clone();
    let mut rng = rng("flash_prefill");
    // (q_heads, kv_heads, d, len, starts, new_lens)
    type Case<'a> = (usize, usize, usize, usize, &'a [usize], &'a [usize]);
    let cases: [Case; 5] = [
        (6, 2, 64, 37, &[0, 9], &[37, 21]),
        (4, 1, 128, 5, &[3], &[5]),
        (2, 2, 64, 1, &[0, 40, 7], &[1, 1, 0]),
        (8, 2, 64, 70, &[0], &[70]),
        (3, 1, 64, 18, &[11, 0], &[2, 18]),
    ];
    for &(q_heads, kv_heads, d, len, starts, new_lens) in &cases {
        let batch = starts.len();
        let cap = starts
            .iter()
            .zip(new_lens)
            .map(|(s, n)| s + n.max(&1))
            .max()
            .unwrap()
            + 3;
        let shape = PrefillShape {
            batch,
            len,
            q_heads,
            kv_heads,
            head_dim: d,
            cap,
        };
        let q = normal(&mut rng, batch * len * q_heads * d, 1.0);
        let k = normal(&mut rng, batch * kv_heads * cap * d, 1.0);
        let v = normal(&mut rng, batch * kv_heads * cap * d, 1.0);
        let (kh, vh) = (upload_f32(&client, &k), upload_f32(&client, &v));
        let out = filled_f32(&client, q.len(), f32::NAN);
        flash_prefill::<R, f32>(
            &client,
            &shape,
            &upload_f32(&client, &q),
            &kh,
            &vh,
            starts,
            new_lens,
            &out,
        )
        .unwrap();
        let got = read_f32(&client, out, q.len());
        let att = AttendShape::dense(q_heads, kv_heads, d).unwrap();
        let per_seq = kv_heads * cap * d;
        for b in 0..batch {
            for t in 0..len {
                // Padding rows repeat the last real row's view.
                let last = new_lens[b].max(1) - 1;
                let visible = starts[b] + t.min(last) + 1;
                let lists = vec![(0..visible as u32).collect::<Vec<_>>(); kv_heads];
                let at = (b * len + t) * q_heads * d;
                let want = reference::attend(
                    &att,
                    &q[at..at + q_heads * d],
                    &k[b * per_seq..][..per_seq],
                    &v[b * per_seq..][..per_seq],
                    cap,
                    &lists,
                );
                assert_close(
                    &got[at..at + q_heads * d],
                    &want,
                    1e-5,
                    &format!("heads {q_heads}/{kv_heads} d {d} seq {b} row {t}"),
                );
            }
        }
    }
    // A sequence whose rows would pass the cache's end is an error, not a launch.
    let shape = PrefillShape {
        batch: 1,
        len: 4,
        q_heads: 2,
        kv_heads: 1,
        head_dim: 64,
        cap: 5,
    };
    let h = filled_f32(&client, 2 * 4 * 64, 0.0);
    assert!(flash_prefill::<R, f32>(&client, &shape, &h, &h, &h, &[2], &[4], &h).is_err());
}
