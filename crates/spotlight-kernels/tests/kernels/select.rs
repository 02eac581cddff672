//! Score + select: XOR/popcount scores, the threshold, sink, top-k and window lists, ties, bad shapes.

use crate::prelude::*;

/// Random key codes, or, with `ties`, codes drawn from only two patterns so scores tie everywhere.
fn codes(rng: &mut StdRng, n: usize, ties: bool) -> Vec<u32> {
    if ties {
        let a: u32 = rng.random();
        (0..n).map(|i| if i % 5 == 0 { !a } else { a }).collect()
    } else {
        (0..n).map(|_| rng.random()).collect()
    }
}

fn check_select<R: Runtime>(
    client: &ComputeClient<R>,
    shape: CodeShape,
    lens: &[usize],
    budget: Budget,
    ties: bool,
    rng: &mut StdRng,
) {
    let client = client.clone();
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

pub(crate) fn select_matches_reference<R: Runtime>(client: &ComputeClient<R>) {
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
            check_select(client, shape, &lens, budget, false, &mut rng);
        }
        // Enough chunks that a score_hist cube takes two (with 8 sets on a device reporting no
        // SM count: 4 × 43 chunks over 16 × 8 cubes), next to a sequence shorter than a chunk.
        if sets >= 3 {
            check_select(
                client,
                shape,
                &[22000, 22000, 22000, 5],
                budget,
                false,
                &mut rng,
            );
        }
    }
}

pub(crate) fn select_handles_ties_and_budgets_beyond_the_sequence<R: Runtime>(
    client: &ComputeClient<R>,
) {
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
            check_select(
                client,
                shape,
                &[4097, 1, 1000, 20, 9000],
                budget,
                ties,
                &mut rng,
            );
        }
    }
}

pub(crate) fn bad_shapes_are_errors_not_panics<R: Runtime>(client: &ComputeClient<R>) {
    let client = client.clone();
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
