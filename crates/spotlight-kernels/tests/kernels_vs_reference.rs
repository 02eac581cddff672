//! Every kernel against its plain-Rust reference on wgpu (lavapipe in CI), on fresh random inputs
//! at awkward sizes. Outputs are poisoned before each run so unwritten elements fail.
//! A failing case prints its seed; rerun with SPOTLIGHT_SEED=<seed> to reproduce.

use cubecl::prelude::*;
use cubecl::wgpu::{WgpuDevice, WgpuRuntime};
use rand::rngs::StdRng;
use rand::Rng;
use spotlight_kernels::attend::{attend, KvLayout, QueryRow, QueryRows};
use spotlight_kernels::device::{
    filled_f32, filled_u32, read_f32, read_u32, upload_f32, upload_u32,
};
use spotlight_kernels::hash_pack::{hash_pack, DeviceHashWeights};
use spotlight_kernels::reference::{self, HashWeights};
use spotlight_kernels::select::{Selection, Selector};
use spotlight_kernels::{AttendShape, Budget, CodeShape, SequencePlan};

mod common;

use common::{assert_close, normal, rng};

const POISON: u32 = 0xDEAD_BEEF;

fn client() -> ComputeClient<WgpuRuntime> {
    WgpuRuntime::client(&WgpuDevice::default())
}

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
#[test]
fn hash_pack_matches_reference() {
    let client = client();
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

/// Random key codes, or, with `ties`, codes drawn from only two patterns so scores tie everywhere.
fn codes(rng: &mut StdRng, n: usize, ties: bool) -> Vec<u32> {
    if ties {
        let a: u32 = rng.random();
        (0..n).map(|i| if i % 5 == 0 { !a } else { a }).collect()
    } else {
        (0..n).map(|_| rng.random()).collect()
    }
}

fn check_select(shape: CodeShape, lens: &[usize], budget: Budget, ties: bool, rng: &mut StdRng) {
    let client = client();
    let (w, b) = (shape.words(), lens.len());
    let cap = lens.iter().copied().max().unwrap_or(0).max(1) + 3;
    let q = codes(rng, b * shape.q_heads * w, false);
    let k = codes(rng, b * cap * shape.sets * w, ties);
    let plans: Vec<SequencePlan> = lens.iter().map(|&n| budget.plan(n)).collect();
    let index_cap = plans.iter().map(|p| p.selected()).max().unwrap().max(1);
    let selector = Selector::new(&client, shape, b, cap).unwrap();
    let (qh, kh) = (upload_u32(&client, &q), upload_u32(&client, &k));
    // Twice: the second run checks that the first left the workspace clean.
    for _ in 0..2 {
        let sel = Selection::new(&client, b, shape.sets, index_cap, POISON);
        selector.run(&client, &qh, &kh, &plans, &sel).unwrap();
        let counts = read_u32(&client, sel.counts.clone(), b * shape.sets);
        let indices = read_u32(&client, sel.indices.clone(), b * shape.sets * index_cap);
        for (seq, plan) in plans.iter().enumerate() {
            let qs = &q[seq * shape.q_heads * w..][..shape.q_heads * w];
            let ks = &k[seq * cap * shape.sets * w..][..cap * shape.sets * w];
            for set in 0..shape.sets {
                let scores = reference::scores(&shape, qs, ks, plan.len, set);
                let want = reference::select(&scores, plan);
                let list = seq * shape.sets + set;
                let ctx =
                    format!("{shape:?} lens {lens:?} ties {ties} {budget:?}: seq {seq} set {set}");
                assert_eq!(counts[list] as usize, want.len(), "{ctx}: count");
                assert_eq!(
                    &indices[list * index_cap..][..want.len()],
                    &want[..],
                    "{ctx}: indices"
                );
            }
        }
    }
}

#[test]
fn select_matches_reference() {
    let mut rng = rng("select");
    let budget = Budget::default();
    for (q_heads, sets, bits) in [
        (9, 3, 64),
        (4, 1, 128),
        (7, 1, 64),
        (8, 8, 128),
        (28, 4, 128),
        (2, 2, 256),
    ] {
        let shape = CodeShape::new(q_heads, sets, bits).unwrap();
        for lens in [
            vec![1],
            vec![31],
            vec![1000],
            vec![4097],
            vec![1000, 31, 4097, 0, 69],
        ] {
            check_select(shape, &lens, budget, false, &mut rng);
        }
        // Enough chunks that a score_hist cube takes two (with 8 sets on a device reporting no
        // SM count: 4 × 43 chunks over 16 × 8 cubes), next to a sequence shorter than a chunk.
        if sets >= 3 {
            check_select(shape, &[22000, 22000, 22000, 5], budget, false, &mut rng);
        }
    }
}

#[test]
fn select_handles_ties_and_budgets_beyond_the_sequence() {
    let mut rng = rng("select_ties");
    let shape = CodeShape::new(4, 1, 128).unwrap();
    for budget in [
        Budget::default(),
        Budget {
            fraction: 1.0,
            ..Budget::default()
        },
        Budget {
            fraction: 0.1,
            min_tokens: 20,
            sink: 0,
            window: 0,
        },
        Budget {
            fraction: 0.0,
            min_tokens: 0,
            sink: 4,
            window: 64,
        },
        Budget {
            fraction: 0.5,
            min_tokens: 20,
            sink: 5000,
            window: 0,
        },
    ] {
        for ties in [false, true] {
            check_select(shape, &[4097, 1, 1000, 20, 9000], budget, ties, &mut rng);
        }
    }
}

struct Kv {
    k: Vec<f32>,
    v: Vec<f32>,
}

fn check_attend(shape: AttendShape, lens: &[usize], sparse: bool, rng: &mut StdRng) {
    let client = client();
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
        attend::<WgpuRuntime, f32>(
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
        attend::<WgpuRuntime, f32>(&client, &shape, &qh, &kh, &vh, layout, &rows, None, &out)
            .unwrap();
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

#[test]
fn attend_matches_reference() {
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
                check_attend(shape, &lens, sparse, &mut rng);
            }
        }
    }
}

#[test]
fn causal_prefill_is_dense_attention_per_position() {
    let client = client();
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
    attend::<WgpuRuntime, f32>(
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

#[test]
fn copy_moves_every_word() {
    let client = client();
    let mut rng = rng("copy");
    for n in [1usize, 255, 1 << 20] {
        let src: Vec<u32> = (0..n).map(|_| rng.random()).collect();
        let dst = filled_u32(&client, n, POISON);
        spotlight_kernels::copy::copy(&client, &upload_u32(&client, &src), &dst, n);
        assert_eq!(read_u32(&client, dst, n), src);
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let client = client();
    assert!(CodeShape::new(9, 2, 64).is_err());
    assert!(CodeShape::new(9, 3, 48).is_err());
    assert!(AttendShape::new(32, 8, 2, 128).is_err());
    assert!(AttendShape::dense(64, 4, 128).is_err()); // group of 16
    let shape = CodeShape::new(4, 1, 128).unwrap();
    let selector = Selector::new(&client, shape, 1, 100).unwrap();
    let sel = Selection::new(&client, 1, 1, 200, 0);
    let q = upload_u32(&client, &[0; 16]);
    let err = selector
        .run(&client, &q, &q, &[Budget::default().plan(101)], &sel)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "sequence 0 has 101 tokens, more than the cache capacity 100"
    );
    let err = selector.run(&client, &q, &q, &[], &sel).unwrap_err();
    assert!(err.to_string().contains("sequence plans"), "{err}");
    assert!(Selector::new(&client, CodeShape::new(64, 64, 128).unwrap(), 1, 10).is_err());
    // Whatever the device offers, a layout is either accepted or refused with a one-line reason.
    match Selector::new(&client, CodeShape::new(32, 8, 128).unwrap(), 1, 10) {
        Ok(_) => {}
        Err(e) => assert!(e.to_string().contains("shared memory"), "{e}"),
    }
}

#[test]
fn linear_matches_reference() {
    let client = client();
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
        spotlight_kernels::linear::linear::<WgpuRuntime, f32>(
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
    assert!(
        spotlight_kernels::linear::linear::<WgpuRuntime, f32>(&client, &h, &h, &y, 17, 4, 1)
            .is_err()
    );
    assert!(
        spotlight_kernels::linear::linear::<WgpuRuntime, f32>(&client, &h, &h, &y, 1, 6, 1)
            .is_err()
    );
}

#[test]
fn top_keys_match_reference() {
    let client = client();
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

#[test]
fn linear_epilogues_match_reference() {
    use spotlight_kernels::linear::{linear_fused, Epilogue, Prologue};
    let client = client();
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
        linear_fused::<WgpuRuntime, f32>(&client, &xh, &wh, (none, Epilogue::Store), &y, (m, k, n))
            .unwrap();
        assert_close(&read_f32(&client, y, m * n), &gate, tol, &what);

        let y = upload_f32(&client, &y0);
        let ends = (none, Epilogue::Accumulate);
        linear_fused::<WgpuRuntime, f32>(&client, &xh, &wh, ends, &y, (m, k, n)).unwrap();
        let want: Vec<f32> = y0.iter().zip(&gate).map(|(a, b)| a + b).collect();
        assert_close(&read_f32(&client, y, m * n), &want, tol, &what);

        let y = filled_f32(&client, m * n, f32::NAN);
        let ends = (none, Epilogue::SwiGlu { up: &uh });
        linear_fused::<WgpuRuntime, f32>(&client, &xh, &wh, ends, &y, (m, k, n)).unwrap();
        let want: Vec<f32> = gate
            .iter()
            .zip(&upv)
            .map(|(&g, &u)| (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32)
            .collect();
        assert_close(&read_f32(&client, y, m * n), &want, tol, &what);
    }
}

#[test]
fn linear_tilings_match_reference() {
    use spotlight_kernels::linear::{linear_with, Epilogue, Prologue, Tiling};
    let client = client();
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
            linear_with::<WgpuRuntime, f32>(&client, &xh, &wh, ends, &y, (m, k, n), tiling)
                .unwrap();
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
    assert!(linear_with::<WgpuRuntime, f32>(&client, &h, &h, ends, &h, (1, 4, 1), bad).is_err());
}

/// RMSNorm fused before the projection equals RMSNorm then the projection, with each
/// epilogue (SwiGLU scales gate and up by the same 1/rms) and at every row count's tiling.
#[test]
fn linear_with_rms_norm_prologue_matches_norm_then_linear() {
    use spotlight_kernels::linear::{linear_fused, Epilogue, Prologue};
    let client = client();
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
        linear_fused::<WgpuRuntime, f32>(&client, &xh, &wh, (norm, Epilogue::Store), &y, (m, k, n))
            .unwrap();
        assert_close(&read_f32(&client, y, m * n), &gate, tol, &what);
        let y = filled_f32(&client, m * n, f32::NAN);
        let ends = (norm, Epilogue::SwiGlu { up: &uh });
        linear_fused::<WgpuRuntime, f32>(&client, &xh, &wh, ends, &y, (m, k, n)).unwrap();
        let want: Vec<f32> = gate
            .iter()
            .zip(&upv)
            .map(|(&g, &u)| (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32)
            .collect();
        assert_close(&read_f32(&client, y, m * n), &want, tol, &what);
    }
}

/// First row of the rotated-key buffer the rope_append test writes to (keys of earlier steps
/// wait below it for deferred hashing).
const KEY_ROW0: usize = 3;

#[test]
fn rope_append_rotates_q_and_writes_k_v_at_each_rows_place() {
    use spotlight_kernels::rope_append::{
        rope_append, upload_places, KeyRows, RopeShape, RowPlace,
    };
    let client = client();
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
        rope_append::<WgpuRuntime, f32>(
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
    let err = rope_append::<WgpuRuntime, f32>(
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

/// Codes written at each row's (sequence, position) of a code cache equal the plain codes of
/// those rows, and nothing else in the cache changes.
#[test]
fn hash_pack_placed_writes_each_rows_codes_at_its_place_only() {
    use spotlight_kernels::hash_pack::hash_pack_placed;
    use spotlight_kernels::rope_append::{upload_places, RowPlace};
    let client = client();
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

#[test]
fn embed_gathers_rows_and_rejects_ids_outside_the_vocabulary() {
    let client = client();
    let mut rng = rng("embed");
    let (vocab, d) = (13, 7);
    let table = normal(&mut rng, vocab * d, 1.0);
    let ids = [12u32, 0, 5, 5];
    let out = filled_f32(&client, ids.len() * d, f32::NAN);
    let th = upload_f32(&client, &table);
    spotlight_kernels::embed::embed::<WgpuRuntime, f32>(
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
    let err = spotlight_kernels::embed::embed::<WgpuRuntime, f32>(
        &client,
        &th,
        (vocab, d),
        &[13],
        &upload_u32(&client, &[13]),
        &out,
    );
    assert!(err.is_err());
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// The training forward (softsign epilogue of the hash kernel) and its backward against the f64
/// reference, at row counts around the tile (16) and widths 32–128.
#[test]
fn hash_soft_and_backward_match_reference() {
    use spotlight_kernels::hash_pack::MlpBuffers;
    use spotlight_kernels::hash_train::{hash_soft, hash_soft_backward, RowGradBuffers};
    let client = client();
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

/// The Bradley–Terry row sums and pair weights against the reference, with repeated keys, invalid
/// pairs, key indices past the row, one pair, and pair counts off the cube width.
#[test]
fn bradley_terry_matches_reference() {
    use spotlight_kernels::bradley_terry::{bt_pair_grads, bt_rows, PairBuffers};
    use spotlight_kernels::reference::bradley_terry as bt;
    let client = client();
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

/// Flash-style causal prefill against the reference attention of each row over its visible keys:
/// ragged sequences continuing from cached rows, padding rows, a sequence with no new rows, one
/// token, groups of 1–4 heads, widths 64 and 128, row counts off the cube's 16-row tile. f32
/// caches (wgpu has no bf16; bf16 caches run in the CUDA benchmarks).
#[test]
fn flash_prefill_matches_reference_per_row() {
    use spotlight_kernels::prefill::{flash_prefill, PrefillShape};
    let client = client();
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
        flash_prefill::<WgpuRuntime, f32>(
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
    assert!(
        flash_prefill::<WgpuRuntime, f32>(&client, &shape, &h, &h, &h, &[2], &[4], &h).is_err()
    );
}
