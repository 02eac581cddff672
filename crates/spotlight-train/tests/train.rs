//! The hash training math against plain-Rust references and finite differences, the trainer's
//! checkpoint/resume, and hash-file validation. Inputs are SYNTHETIC random q/k (the real model's
//! run is in the CLI tests); seeds are fixed per test and printed on failure.

use burn::backend::{ndarray::NdArray, Autodiff, Wgpu};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::{rngs::StdRng, Rng, SeedableRng};
use spotlight_llama::{LayerQk, LlamaBackend, LlamaConfig};
use spotlight_train::bradley_terry::{draft_scores, loss, loss_by_tensor_ops};
use spotlight_train::hash_mlp::HashMlp;
use spotlight_train::targets::{row_top_count, top_count, TargetConfig, Targets, NEAR_SPAN};
use spotlight_train::trainer::LayerNets;
use spotlight_train::{HashFile, HashInit, Layout, TrainBackend, TrainConfig, TrainError, Trainer};

type F64 = NdArray<f64>;
type Ad64 = Autodiff<F64>;
type Cpu = NdArray<f32>;
type AdCpu = Autodiff<Cpu>;

fn random<B: Backend, const D: usize>(shape: [usize; D], rng: &mut StdRng) -> Tensor<B, D> {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_data(
        TensorData::new(v, shape).convert::<B::FloatElem>(),
        &Default::default(),
    )
}

fn host<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Vec<f64> {
    t.to_data().convert::<f64>().to_vec::<f64>().unwrap()
}

fn host_int<B: Backend, const D: usize>(t: &Tensor<B, D, burn::tensor::Int>) -> Vec<i64> {
    t.to_data().convert::<i64>().to_vec::<i64>().unwrap()
}

/// Targets obey their definition: valid pairs pair a true top key with a visible non-top key.
#[test]
fn targets_follow_the_definition() {
    for (h, kv, n, d, queries, pairs, near_fraction, seed) in [
        (6, 2, 50, 32, 20, 17, 0.0, 1),
        (4, 4, 301, 32, 64, 40, 0.0, 2),
        (3, 1, 7, 32, 9, 5, 0.0, 3),
        (6, 2, 50, 32, 20, 17, 0.5, 4),
        (4, 4, 301, 32, 64, 40, 0.7, 5),
        (3, 1, 7, 32, 9, 5, 1.0, 6),
    ] {
        let mut rng = StdRng::seed_from_u64(seed);
        let q = random::<Cpu, 3>([h, n, d], &mut rng);
        let k = random::<Cpu, 3>([kv, n, d], &mut rng);
        let cfg = TargetConfig {
            queries,
            pairs,
            top_fraction: 0.1,
            near_fraction,
            ..TargetConfig::default()
        };
        let t = Targets::sample(&q, &k, &cfg, &mut rng, None);
        let (qv, kvv) = (host(&q), host(&k));
        // The first `near` pairs draw their other key from the near misses.
        let near_pairs = (near_fraction * pairs as f64).round() as usize;
        let near_k = top_count(n, NEAR_SPAN * 0.1);
        let mut n_near_valid = 0;
        let pos = host_int(&t.positions);
        let (top, other, valid) = (host_int(&t.top), host_int(&t.other), host(&t.valid));
        let tn = pos.len();
        assert_eq!(tn, queries.min(n));
        assert!(
            pos.windows(2).all(|w| w[0] < w[1]),
            "positions ascending and distinct"
        );
        let top_k = top_count(n, 0.1);
        let g = h / kv;
        let mut n_valid = 0;
        for hh in 0..h {
            for (ti, &tpos) in pos.iter().enumerate() {
                let tpos = tpos as usize;
                // True logits over visible keys, ranked.
                let logit = |j: usize| -> f64 {
                    (0..d)
                        .map(|c| qv[(hh * n + tpos) * d + c] * kvv[((hh / g) * n + j) * d + c])
                        .sum()
                };
                let mut order: Vec<usize> = (0..=tpos).collect();
                order.sort_by(|&a, &b| logit(b).partial_cmp(&logit(a)).unwrap());
                let in_top = |j: usize| order.iter().take(top_k).any(|&x| x == j);
                // The model computes logits in f32, this test in f64: keys within 1e-4 of the
                // k-th value may rank either way, so pairs touching them are not judged.
                let kth = if tpos + 1 > top_k {
                    logit(order[top_k - 1])
                } else {
                    f64::NEG_INFINITY
                };
                let near = |j: usize| (logit(j) - kth).abs() <= 1e-4 * kth.abs().max(1.0);
                for p in 0..pairs {
                    let i = (hh * tn + ti) * pairs + p;
                    let (kt, ko) = (top[i] as usize, other[i] as usize);
                    assert!(valid[i] == 0.0 || valid[i] == 1.0);
                    if valid[i] == 1.0 {
                        n_valid += 1;
                    }
                    if (kt <= tpos && near(kt)) || (ko <= tpos && near(ko)) {
                        continue;
                    }
                    let expect_valid = ko <= tpos && !in_top(ko) && kt <= tpos && in_top(kt);
                    if p < near_pairs && valid[i] == 1.0 {
                        n_near_valid += 1;
                        let rank = order.iter().position(|&x| x == ko).unwrap();
                        // f32 against f64 again: a key tied with the last near rank may swap.
                        let edge = logit(order[near_k.min(tpos + 1) - 1]);
                        assert!(
                            rank < near_k || (logit(ko) - edge).abs() <= 1e-4 * edge.abs().max(1.0),
                            "seed {seed}: near pair h{hh} t{tpos} other {ko} has rank {rank}"
                        );
                    }
                    // A valid pair must be (true top key, visible other key); an invalid one
                    // must break a rule — unless its top slot is beyond this row's top count, or
                    // its near slot beyond the row's near count (the padding key 0).
                    let near_padding = p < near_pairs && ko == 0;
                    if valid[i] == 1.0 {
                        assert!(
                            expect_valid,
                            "seed {seed}: pair h{hh} t{tpos} ({kt},{ko}) marked valid"
                        );
                    } else if ko <= tpos && !in_top(ko) && tpos + 1 > top_k && !near_padding {
                        assert!(
                            !in_top(kt) || kt > tpos,
                            "seed {seed}: pair h{hh} t{tpos} ({kt},{ko}) marked invalid"
                        );
                    }
                }
            }
        }
        assert!(n_valid > 0, "seed {seed}: no valid pair at all");
        if near_pairs > 0 && n > 10 {
            assert!(n_near_valid > 0, "seed {seed}: no valid near pair");
        }
    }
}

/// The optional targets obey their definitions (f64, so no rounding ties): under `row_top` each
/// valid pair pairs one of the row's own top max(min(t+1, 20), ⌈f·(t+1)⌉) keys with a visible key
/// outside them, and almost no pair is wasted; hard negatives are keys the given code scores rank
/// inside the row's budget; group targets rank by the group's summed attention probability, one
/// target set per KV head.
#[test]
fn row_top_hard_and_group_targets_follow_their_definition() {
    for (h, kv, n, d, queries, pairs, frac, hard, group, seed) in [
        (6, 2, 300, 16, 40, 30, 0.05, 0.0, false, 1),
        (6, 2, 300, 16, 40, 30, 0.05, 0.5, false, 2),
        (6, 2, 260, 16, 40, 30, 0.05, 0.3, true, 3),
        (4, 1, 90, 16, 30, 20, 0.1, 1.0, true, 4),
    ] {
        let mut rng = StdRng::seed_from_u64(seed);
        let q = random::<F64, 3>([h, n, d], &mut rng);
        let k = random::<F64, 3>([kv, n, d], &mut rng);
        let cfg = TargetConfig {
            queries,
            pairs,
            top_fraction: frac,
            hard_fraction: hard,
            row_top: true,
            group,
            ..TargetConfig::default()
        };
        let (qv, kvv) = (host(&q), host(&k));
        let g = h / kv;
        let units = if group { kv } else { h };
        let logit = |hh: usize, t: usize, j: usize| -> f64 {
            (0..d)
                .map(|c| qv[(hh * n + t) * d + c] * kvv[((hh / g) * n + j) * d + c])
                .sum()
        };
        // The unit's relevance of key j for the query at t (group: summed probabilities).
        let relevance = |u: usize, t: usize, j: usize| -> f64 {
            if !group {
                return logit(u, t, j);
            }
            (u * g..(u + 1) * g)
                .map(|hh| {
                    let l: Vec<f64> = (0..=t)
                        .map(|i| logit(hh, t, i) / (d as f64).sqrt())
                        .collect();
                    let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = l.iter().map(|x| (x - m).exp()).sum();
                    (l[j] - m).exp() / z
                })
                .sum()
        };
        // The "current code": scores that rank keys by lowest relevance first.
        let code = |queries: &Tensor<F64, 3>| -> Tensor<F64, 3> {
            let s = draft_scores(queries.clone(), k.clone()).neg();
            if group {
                let [hh, t, n] = s.dims();
                s.reshape([kv, hh / kv, t, n])
                    .sum_dim(1)
                    .reshape([kv, t, n])
            } else {
                s
            }
        };
        let t = Targets::sample(&q, &k, &cfg, &mut rng, Some(&code));
        let pos = host_int(&t.positions);
        let (top, other, valid) = (host_int(&t.top), host_int(&t.other), host(&t.valid));
        let tn = pos.len();
        assert_eq!(t.top.dims(), [units, tn, pairs]);
        let hard_pairs = (hard * pairs as f64).round() as usize;
        let (mut n_valid, mut n_pairs) = (0, 0);
        for u in 0..units {
            for (ti, &tpos) in pos.iter().enumerate() {
                let tpos = tpos as usize;
                let mut order: Vec<usize> = (0..=tpos).collect();
                order.sort_by(|&a, &b| relevance(u, tpos, b).total_cmp(&relevance(u, tpos, a)));
                let k_row = row_top_count(tpos + 1, frac);
                let in_top = |j: usize| order[..k_row.min(tpos + 1)].contains(&j);
                // The kernel thresholds in f32: a key tied with the k-th value in f32 may fall
                // either side, so pairs touching the k-th value are not judged on validity.
                let kth = relevance(u, tpos, order[k_row.min(tpos + 1) - 1]);
                let at_cut =
                    |j: usize| (relevance(u, tpos, j) - kth).abs() <= 1e-6 * kth.abs().max(1e-12);
                for p in 0..pairs {
                    let i = (u * tn + ti) * pairs + p;
                    let (kt, ko) = (top[i] as usize, other[i] as usize);
                    n_pairs += 1;
                    // Every pair is drawn inside the row: both keys visible, the top key a top key.
                    assert!(kt <= tpos && ko <= tpos, "seed {seed}: pair beyond t{tpos}");
                    assert!(
                        in_top(kt),
                        "seed {seed}: u{u} t{tpos} top {kt} not in the row's top"
                    );
                    let expect = !in_top(ko);
                    if !at_cut(ko) {
                        assert_eq!(
                            valid[i] == 1.0,
                            expect,
                            "seed {seed}: u{u} t{tpos} ({kt},{ko})"
                        );
                    }
                    if valid[i] == 1.0 {
                        n_valid += 1;
                    }
                    if p < hard_pairs {
                        // A hard key is inside the row's budget by the code's own score
                        // (−q·k, summed over the group for group targets).
                        let heads = if group { u * g..(u + 1) * g } else { u..u + 1 };
                        let score =
                            |j: usize| -> f64 { heads.clone().map(|hh| -logit(hh, tpos, j)).sum() };
                        let rank = (0..=tpos).filter(|&j| score(j) > score(ko)).count();
                        assert!(rank < k_row, "seed {seed}: hard key {ko} at rank {rank}");
                    }
                }
            }
        }
        // Every pair is causally usable (checked above: invalid only where the other key falls
        // inside the row's top). How many that leaves depends on the row lengths: with the
        // minimum top of 20, a 90-token row has a top of up to 22% of its keys.
        assert!(
            n_valid > 0 && n_valid < n_pairs,
            "seed {seed}: {n_valid} of {n_pairs} valid"
        );
    }
}

/// The loss equals the same math written pair by pair in plain Rust (f64).
#[test]
fn loss_matches_plain_rust() {
    for (layout, r) in NET_CASES {
        let (h, kv, n, d) = (6, 2, 40, 32);
        let mut rng = StdRng::seed_from_u64(11);
        let q = random::<F64, 3>([h, n, d], &mut rng);
        let k = random::<F64, 3>([kv, n, d], &mut rng);
        let cfg = TargetConfig {
            queries: 16,
            pairs: 12,
            top_fraction: 0.1,
            near_fraction: 0.0,
            ..TargetConfig::default()
        };
        let t = Targets::sample(&q, &k, &cfg, &mut rng, None);
        let nets = LayerNets::<F64> {
            query: random_nets(h, r, d, 0.2),
            key: (layout == Layout::Group).then(|| random_nets(kv, r, d, 0.2)),
        };
        let gamma = 3.0;
        let (cq, ck) = nets.soft_codes(t.queries.clone(), k.clone(), gamma);
        let got = loss(draft_scores(cq, ck), &t, 1.0, 0.0);
        let got_loss = host(&got.loss)[0];

        // Reference: the kernels' reference hash forward, softsign, per-pair sums.
        let wq = nets.query.to_weights().unwrap();
        let wk = nets.key.as_ref().map(|k| k.to_weights().unwrap());
        // A head's code: its r networks' soft codes side by side.
        let soft_of = |w: &spotlight_kernels::reference::HashWeights, head: usize, x: &[f32]| {
            (0..r)
                .flat_map(|i| w.forward(head * r + i, x))
                .map(|v| {
                    let g = gamma * v as f64;
                    g / (1.0 + g.abs())
                })
                .collect::<Vec<f64>>()
        };
        let (qs, kv_) = (host(&t.queries), host(&k));
        let tn = host_int(&t.positions).len();
        let (top, other, valid) = (host_int(&t.top), host_int(&t.other), host(&t.valid));
        let g = h / kv;
        let code_k = |hh: usize, j: usize| -> Vec<f64> {
            let x: Vec<f32> = kv_[((hh / g) * n + j) * d..][..d]
                .iter()
                .map(|&v| v as f32)
                .collect();
            match &wk {
                Some(w) => soft_of(w, hh / g, &x),
                None => soft_of(&wq, hh, &x),
            }
        };
        let mut total = 0.0;
        let (mut wrong, mut count_all) = (0.0, 0.0);
        for hh in 0..h {
            let (mut sum, mut count) = (0.0f64, 0.0f64);
            for ti in 0..tn {
                let x: Vec<f32> = qs[(hh * tn + ti) * d..][..d]
                    .iter()
                    .map(|&v| v as f32)
                    .collect();
                let cq = soft_of(&wq, hh, &x);
                for p in 0..12 {
                    let i = (hh * tn + ti) * 12 + p;
                    if valid[i] == 0.0 {
                        continue;
                    }
                    let s = |j: i64| -> f64 {
                        cq.iter()
                            .zip(code_k(hh, j as usize))
                            .map(|(a, b)| a * b)
                            .sum()
                    };
                    let diff = s(top[i]) - s(other[i]);
                    sum += (1.0 + (-diff).exp()).ln();
                    count += 1.0;
                    wrong += (diff < 0.0) as u8 as f64;
                }
            }
            count_all += count;
            total += sum / count.max(1.0);
        }
        // The reference forward runs in f32: relative 1e-4.
        assert!(
            (got_loss - total).abs() <= 1e-4 * total.abs().max(1.0),
            "{layout:?}×{r}: {got_loss} vs {total}"
        );
        let (mis, valid_pairs) = got.misordered();
        assert!(
            (mis - wrong / count_all).abs() < 1e-9 + 2.0 / count_all,
            "{layout:?}"
        );
        assert_eq!(valid_pairs, count_all);
    }
}

/// Autodiff gradients of the loss equal central finite differences (f64).
#[test]
fn gradients_match_finite_differences() {
    for (layout, r) in NET_CASES {
        let (h, kv, n, d) = (4, 2, 30, 32);
        let mut rng = StdRng::seed_from_u64(21);
        let q = random::<F64, 3>([h, n, d], &mut rng);
        let k = random::<F64, 3>([kv, n, d], &mut rng);
        let cfg = TargetConfig {
            queries: 12,
            pairs: 10,
            top_fraction: 0.1,
            near_fraction: 0.0,
            ..TargetConfig::default()
        };
        let t = Targets::sample(&q, &k, &cfg, &mut rng, None);
        let device = Default::default();
        let base = LayerNets::<F64> {
            query: random_nets(h, r, d, 0.1),
            key: (layout == Layout::Group).then(|| random_nets(kv, r, d, 0.1)),
        };
        let gamma = 2.0;
        let loss_of = |nets: &LayerNets<F64>| -> f64 {
            let (cq, ck) = nets.soft_codes(t.queries.clone(), k.clone(), gamma);
            host(&loss(draft_scores(cq, ck), &t, 1.0, 0.0).loss)[0]
        };
        // Autodiff.
        let params: Vec<Tensor<Ad64, 3>> = params_of(&base)
            .into_iter()
            .map(|p| Tensor::from_inner(p).require_grad())
            .collect();
        let nets_ad = nets_from(r, params.clone());
        let t_ad = Targets::<Ad64> {
            positions: Tensor::from_inner(t.positions.clone()),
            queries: Tensor::from_inner(t.queries.clone()),
            top: Tensor::from_inner(t.top.clone()),
            other: Tensor::from_inner(t.other.clone()),
            valid: Tensor::from_inner(t.valid.clone()),
        };
        let (cq, ck) =
            nets_ad.soft_codes(t_ad.queries.clone(), Tensor::from_inner(k.clone()), gamma);
        let grads = loss(draft_scores(cq, ck), &t_ad, 1.0, 0.0).loss.backward();
        let mut checked = 0;
        for (pi, p) in params.iter().enumerate() {
            let g = host(&p.grad(&grads).unwrap());
            let values = host(&p.clone().inner());
            // A few coordinates of every parameter tensor, including the largest gradient.
            let biggest = (0..g.len())
                .max_by(|&a, &b| g[a].abs().partial_cmp(&g[b].abs()).unwrap())
                .unwrap();
            for idx in [0, values.len() / 3, values.len() - 1, biggest] {
                // f64 central differences: measured error ≤ 5e-8 relative at eps 1e-5.
                let eps = 1e-5;
                let bump = |delta: f64| -> f64 {
                    let mut ps = params_of(&base);
                    let shape = ps[pi].dims();
                    let mut v = values.clone();
                    v[idx] += delta;
                    ps[pi] = Tensor::from_data(TensorData::new(v, shape), &device);
                    loss_of(&nets_from(r, ps))
                };
                let fd = (bump(eps) - bump(-eps)) / (2.0 * eps);
                assert!(
                    (fd - g[idx]).abs() <= 1e-9 + 1e-6 * fd.abs().max(g[idx].abs()),
                    "{layout:?}×{r} param {pi} #{idx}: autodiff {} vs finite difference {fd}",
                    g[idx]
                );
                checked += 1;
            }
        }
        assert!(checked >= 16);
    }
}

/// Loss and parameter gradients through the custom ops (kernels on cube backends, references on
/// cpu) and through the same math in plain Burn tensor ops, on one backend.
fn loss_and_grads_both_ways<B>((layout, r): (Layout, usize), seed: u64) -> [(f64, Vec<Vec<f64>>); 2]
where
    B: AutodiffBackend + TrainBackend,
    B::InnerBackend: LlamaBackend + TrainBackend,
{
    type Inner<B> = <B as AutodiffBackend>::InnerBackend;
    let (h, kv, n, d) = (6, 2, 45, 32);
    let mut rng = StdRng::seed_from_u64(seed);
    let q = random::<Inner<B>, 3>([h, n, d], &mut rng);
    let k = random::<Inner<B>, 3>([kv, n, d], &mut rng);
    let cfg = TargetConfig {
        queries: 17,
        pairs: 13,
        top_fraction: 0.1,
        near_fraction: 0.0,
        ..TargetConfig::default()
    };
    let t = Targets::sample(&q, &k, &cfg, &mut rng, None);
    let nets = LayerNets::<Inner<B>> {
        query: random_nets(h, r, d, 0.2),
        key: (layout == Layout::Group).then(|| random_nets(kv, r, d, 0.2)),
    };
    let t_ad = Targets::<B> {
        positions: Tensor::from_inner(t.positions.clone()),
        queries: Tensor::from_inner(t.queries.clone()),
        top: Tensor::from_inner(t.top.clone()),
        other: Tensor::from_inner(t.other.clone()),
        valid: Tensor::from_inner(t.valid.clone()),
    };
    let (gamma, beta, margin) = (2.5, 1.2, 0.1);
    [true, false].map(|custom| {
        let params: Vec<Tensor<B, 3>> = params_of(&nets)
            .into_iter()
            .map(|p| Tensor::from_inner(p).require_grad())
            .collect();
        let nets_ad = nets_from(r, params.clone());
        let keys = Tensor::from_inner(k.clone());
        let out = if custom {
            let (cq, ck) = nets_ad.soft_codes(t_ad.queries.clone(), keys, gamma);
            loss(draft_scores(cq, ck), &t_ad, beta, margin)
        } else {
            let (cq, ck) = nets_ad.soft_codes_by_tensor_ops(t_ad.queries.clone(), keys, gamma);
            loss_by_tensor_ops(draft_scores(cq, ck), &t_ad, beta, margin)
        };
        let value = host(&out.loss)[0];
        let grads = out.loss.backward();
        let g = params
            .iter()
            .map(|p| host(&p.grad(&grads).unwrap()))
            .collect();
        (value, g)
    })
}

fn assert_paths_agree(what: &str, [(l1, g1), (l2, g2)]: [(f64, Vec<Vec<f64>>); 2], tol: f64) {
    assert!(
        (l1 - l2).abs() <= tol * l2.abs().max(1.0),
        "{what}: loss {l1} vs {l2}"
    );
    assert_eq!(g1.len(), g2.len());
    for (pi, (a, b)) in g1.iter().zip(&g2).enumerate() {
        let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(scale > 0.0, "{what}: parameter {pi} has no gradient");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * scale,
                "{what}: parameter {pi} #{i}: custom op {x} vs tensor ops {y} (scale {scale})"
            );
        }
    }
}

/// The custom ops (f64 references on cpu) equal the plain-tensor-op math, loss and gradients.
#[test]
fn custom_ops_match_tensor_ops_on_cpu() {
    for case in NET_CASES {
        let got = loss_and_grads_both_ways::<Ad64>(case, 31);
        assert_paths_agree(&format!("cpu f64 {case:?}"), got, 1e-9);
    }
}

/// On wgpu (lavapipe in CI) the custom ops run the CubeCL kernels: hash forward with the softsign
/// epilogue, its backward, the loss and its pair weights. f32 against f32 tensor ops.
#[test]
fn custom_ops_match_tensor_ops_on_the_kernels() {
    for case in NET_CASES {
        let got = loss_and_grads_both_ways::<Autodiff<Wgpu>>(case, 32);
        assert_paths_agree(&format!("wgpu kernels {case:?}"), got, 1e-4);
    }
}

fn params_of<B: Backend>(n: &LayerNets<B>) -> Vec<Tensor<B, 3>> {
    let mut p = n.query.params().to_vec();
    if let Some(k) = &n.key {
        p.extend(k.params());
    }
    p
}

fn nets_from<B: Backend>(r: usize, p: Vec<Tensor<B, 3>>) -> LayerNets<B> {
    let query = HashMlp::from_params(r, [p[0].clone(), p[1].clone(), p[2].clone(), p[3].clone()]);
    let key = (p.len() == 8)
        .then(|| HashMlp::from_params(r, [p[4].clone(), p[5].clone(), p[6].clone(), p[7].clone()]));
    LayerNets { query, key }
}

/// Random networks (scale `scale`) for `heads` input heads, `r` networks each.
fn random_nets<B: Backend>(heads: usize, r: usize, d: usize, scale: f64) -> HashMlp<B> {
    HashMlp::random(heads * r, d, scale, &Default::default()).with_replicas(r)
}

/// The (layout, networks per head) cases the training math is checked on.
const NET_CASES: [(Layout, usize); 4] = [
    (Layout::Faithful, 1),
    (Layout::Group, 1),
    (Layout::Faithful, 2),
    (Layout::Group, 3),
];

fn tiny_llama() -> LlamaConfig {
    LlamaConfig::attention_shape(2, 6, 2, 32, 64)
}

/// SYNTHETIC q/k of step `step`: keys clustered so the ranking has structure to learn.
fn synthetic_qk(c: &LlamaConfig, n: usize, step: usize) -> Vec<LayerQk<Cpu>> {
    let mut rng = StdRng::seed_from_u64(1000 + step as u64);
    (0..c.num_hidden_layers)
        .map(|_| LayerQk {
            q: random([c.num_attention_heads, n, c.head_dim], &mut rng),
            k: random([c.num_key_value_heads, n, c.head_dim], &mut rng),
        })
        .collect()
}

fn small_config(steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        seq_len: 48,
        targets: TargetConfig {
            queries: 16,
            pairs: 16,
            top_fraction: 0.1,
            near_fraction: 0.0,
            ..TargetConfig::default()
        },
        checkpoint_every: 1,
        ..TrainConfig::default()
    }
}

/// Stopping after 2 steps and resuming from the checkpoint gives exactly the weights of 4 steps
/// without a stop (windows, queries and pairs are functions of seed and step).
#[test]
fn resume_continues_exactly() {
    let c = tiny_llama();
    let device = Default::default();
    let mut straight = Trainer::<AdCpu>::new(small_config(4), "tiny", &c, &device).unwrap();
    for s in 0..4 {
        let records = straight.train_step(&synthetic_qk(&c, 48, s)).unwrap();
        assert_eq!(records.len(), 2 * c.num_hidden_layers);
        assert!(records
            .iter()
            .all(|r| r.loss.is_finite() && r.valid_pairs > 0.0));
    }
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("checkpoint.safetensors");
    let mut first = Trainer::<AdCpu>::new(small_config(4), "tiny", &c, &device).unwrap();
    for s in 0..2 {
        first.train_step(&synthetic_qk(&c, 48, s)).unwrap();
    }
    first.save_checkpoint(&ckpt).unwrap();
    drop(first);
    let mut resumed = Trainer::<AdCpu>::new(small_config(4), "tiny", &c, &device).unwrap();
    assert_eq!(
        resumed.resume(&ckpt).unwrap(),
        None,
        "an intact checkpoint resumes without a note"
    );
    assert_eq!(resumed.step, 2);
    for s in 2..4 {
        resumed.train_step(&synthetic_qk(&c, 48, s)).unwrap();
    }
    // Burn's ndarray backend is not bit-deterministic run to run (parallel reductions), so
    // "exactly" means: the resumed weights sit within 0.1% of how far training moved them.
    // A resume that lost the moments or the step count would miss by the size of an update.
    let init = Trainer::<AdCpu>::new(small_config(4), "tiny", &c, &device).unwrap();
    for layout in Layout::ALL {
        let flat = |t: &Trainer<AdCpu>| -> Vec<f32> {
            t.hash_file(layout)
                .unwrap()
                .layers
                .iter()
                .flat_map(|l| {
                    let mut v = Vec::new();
                    for w in std::iter::once(&l.query).chain(l.key.as_ref()) {
                        for part in [&w.w1, &w.b1, &w.w2, &w.b2] {
                            v.extend(part.iter().copied());
                        }
                    }
                    v
                })
                .collect()
        };
        let dist = |a: &[f32], b: &[f32]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(x, y)| ((x - y) as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let (s, r, i) = (flat(&straight), flat(&resumed), flat(&init));
        let moved = dist(&s, &i);
        let off = dist(&s, &r);
        assert!(
            moved > 1e-3,
            "{layout:?}: training did not move the weights ({moved})"
        );
        assert!(
            off <= 1e-3 * moved,
            "{layout:?}: resumed run is {off} away, training moved {moved}"
        );
    }
    // A checkpoint written with other flags is refused in one line.
    let mut other = Trainer::<AdCpu>::new(small_config(5), "tiny", &c, &device).unwrap();
    let err = other.resume(&ckpt).unwrap_err().to_string();
    assert!(
        err.contains("other training flags") && !err.contains('\n'),
        "{err}"
    );
}

/// Hash files round-trip; damaged or mismatched files give one-line errors.
#[test]
fn hash_files_are_validated() {
    let c = tiny_llama();
    let device = Default::default();
    let mut trainer = Trainer::<AdCpu>::new(small_config(2), "tiny.gguf", &c, &device).unwrap();
    trainer.train_step(&synthetic_qk(&c, 48, 0)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for layout in Layout::ALL {
        let path = dir.path().join(format!("{}.safetensors", layout.name()));
        let file = trainer.hash_file(layout).unwrap();
        file.save(&path).unwrap();
        let back = HashFile::load(&path).unwrap();
        assert_eq!(back, file);
        back.check_model("tiny.gguf", None, &c).unwrap();
        assert_eq!(HashFile::read_header(&path).unwrap(), file.header);

        let one_line = |e: TrainError| {
            let s = e.to_string();
            assert!(!s.contains('\n') && !s.is_empty(), "{s}");
            s
        };
        assert!(one_line(back.check_model("other.gguf", None, &c).unwrap_err()).contains("model"));
        // With the weights' fingerprint recorded, it decides: a renamed model file matches,
        // other weights under the same name do not.
        let mut stamped = back.clone();
        stamped.header.model_fingerprint = Some("w1:00000000000000aa".into());
        stamped
            .check_model("renamed.gguf", Some("w1:00000000000000aa"), &c)
            .unwrap();
        let e = one_line(
            stamped
                .check_model("tiny.gguf", Some("w1:00000000000000bb"), &c)
                .unwrap_err(),
        );
        assert!(
            e.contains("w1:00000000000000aa") && e.contains("w1:00000000000000bb"),
            "{e}"
        );
        // A caller without a fingerprint falls back to the name.
        stamped.check_model("tiny.gguf", None, &c).unwrap();
        assert!(stamped.check_model("other.gguf", None, &c).is_err());
        let mut wrong = c.clone();
        wrong.num_hidden_layers = 3;
        assert!(
            one_line(back.check_model("tiny.gguf", None, &wrong).unwrap_err()).contains("layers")
        );
        let mut wrong = c.clone();
        wrong.head_dim = 64;
        assert!(
            one_line(back.check_model("tiny.gguf", None, &wrong).unwrap_err()).contains("head_dim")
        );

        let bytes = std::fs::read(&path).unwrap();
        let truncated = dir.path().join("truncated.safetensors");
        std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
        one_line(HashFile::load(&truncated).unwrap_err());
        let corrupt = dir.path().join("corrupt.safetensors");
        let mut bad = bytes.clone();
        for b in bad.iter_mut().skip(8).take(40) {
            *b = b'#';
        }
        std::fs::write(&corrupt, &bad).unwrap();
        one_line(HashFile::load(&corrupt).unwrap_err());
        one_line(HashFile::load(&dir.path().join("missing.safetensors")).unwrap_err());
    }
}

/// Codes of several networks per head (`--bits` a multiple of head_dim) train, save and load
/// with their replicas; a header whose bits are not a multiple of head_dim, or whose tensors
/// do not hold bits / head_dim networks per head, is refused in one line.
#[test]
fn wider_codes_train_save_and_load() {
    let c = tiny_llama();
    let device = Default::default();
    let d = c.head_dim;
    for init in [HashInit::Identity, HashInit::Rotation, HashInit::Mixed] {
        let config = TrainConfig {
            bits: 2 * d,
            init,
            ..small_config(2)
        };
        let mut trainer = Trainer::<AdCpu>::new(config, "tiny.gguf", &c, &device).unwrap();
        let records = trainer.train_step(&synthetic_qk(&c, 48, 0)).unwrap();
        assert!(records
            .iter()
            .all(|r| r.loss.is_finite() && r.valid_pairs > 0.0));
        let dir = tempfile::tempdir().unwrap();
        for layout in Layout::ALL {
            let path = dir.path().join("wide.safetensors");
            let file = trainer.hash_file(layout).unwrap();
            assert_eq!(file.header.bits, 2 * d);
            assert!(file
                .layers
                .iter()
                .all(|l| l.query.replicas == 2 && l.query.heads == 2 * c.num_attention_heads));
            file.save(&path).unwrap();
            let back = HashFile::load(&path).unwrap();
            assert_eq!(back, file);

            // The same tensors under a header claiming other code lengths.
            for bits in [d + d / 2, 3 * d, 0] {
                let mut wrong = file.clone();
                wrong.header.bits = bits;
                let p = dir.path().join("wrong.safetensors");
                wrong.save(&p).unwrap();
                let e = HashFile::load(&p).unwrap_err().to_string();
                assert!(!e.contains('\n') && !e.is_empty(), "{e}");
            }
        }
    }
    // Not a multiple of head_dim, or past the score kernels' 256 bits: a config error.
    for bits in [d + 1, 512] {
        let config = TrainConfig {
            bits,
            ..small_config(2)
        };
        let Err(e) = Trainer::<AdCpu>::new(config, "tiny.gguf", &c, &device) else {
            panic!("{bits} bits accepted");
        };
        assert!(e.to_string().contains("bits"), "{e}");
    }
}

/// A near-miss share outside [0, 1] is a one-line config error.
#[test]
fn near_fraction_is_validated() {
    let c = tiny_llama();
    let device = Default::default();
    for near_fraction in [-0.1, 1.5, f64::NAN] {
        let mut config = small_config(2);
        config.targets.near_fraction = near_fraction;
        let Err(e) = Trainer::<AdCpu>::new(config, "tiny.gguf", &c, &device) else {
            panic!("near fraction {near_fraction} accepted");
        };
        assert!(e.to_string().contains("near-miss"), "{e}");
    }
}

/// The rotation init hashes like a random linear hash: distinct networks per replica, and
/// h2 = x·R with R orthogonal (norms kept to rounding).
#[test]
fn rotation_init_is_a_rotation() {
    let (heads, r, d) = (2, 3, 32);
    let rotations = spotlight_train::linear_hash::random_rotation(d, heads * r, 5);
    let mlp = HashMlp::<Cpu>::init_rotated(&rotations, r, d, false, 5, &Default::default());
    assert_eq!(
        (mlp.nets(), mlp.replicas, mlp.input_heads()),
        (heads * r, r, heads)
    );
    let mut rng = StdRng::seed_from_u64(3);
    let x = random::<Cpu, 3>([heads, 7, d], &mut rng);
    let h2 = host(&mlp.forward(x.clone()));
    let xs = host(&x);
    assert_eq!(h2.len(), heads * 7 * r * d);
    for head in 0..heads {
        for row in 0..7 {
            let xn: f64 = xs[(head * 7 + row) * d..][..d].iter().map(|v| v * v).sum();
            let out = &h2[(head * 7 + row) * r * d..][..r * d];
            for k in 0..r {
                // W1 = 0: h1 = x exactly, and h2 = x + x·(R − I) = x·R.
                let n: f64 = out[k * d..][..d].iter().map(|v| v * v).sum();
                assert!((n / xn - 1.0).abs() < 1e-4, "norm ratio {}", n / xn);
            }
            assert!(out[..d] != out[d..2 * d], "replicas must differ");
        }
    }
    // Mixed: the first network of each head stays near identity (h2 ≈ x), the others rotate.
    let mixed = HashMlp::<Cpu>::init_rotated(&rotations, r, d, true, 5, &Default::default());
    let h2 = host(&mixed.forward(x));
    for head in 0..heads {
        let row = (head * 7) * d;
        let out = &h2[head * 7 * r * d..];
        let near = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(p, q)| (p - q).abs() < 0.05);
        assert!(
            near(&out[..d], &xs[row..row + d]),
            "first network ≈ identity"
        );
        assert!(
            !near(&out[d..2 * d], &xs[row..row + d]),
            "second network rotated"
        );
    }
}
