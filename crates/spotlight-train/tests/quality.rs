//! Retrieval-quality metrics on SYNTHETIC q/k: properties every method must satisfy.

use burn::backend::{ndarray::NdArray, Autodiff};
use burn::tensor::{Tensor, TensorData};
use rand::{rngs::StdRng, Rng, SeedableRng};
use spotlight_llama::{LayerQk, LlamaConfig};
use spotlight_train::quality::{evaluate_layer, Method};
use spotlight_train::{Layout, TrainConfig, Trainer};

type Cpu = NdArray<f32>;

fn random(shape: [usize; 3], rng: &mut StdRng) -> Tensor<Cpu, 3> {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

#[test]
fn metrics_behave() {
    let (h, kv, n, d) = (6, 2, 300, 32);
    let mut rng = StdRng::seed_from_u64(5);
    let qk = LayerQk {
        q: random([h, n, d], &mut rng),
        k: random([kv, n, d], &mut rng),
    };
    let llama = LlamaConfig::attention_shape(1, h, kv, d, n);
    let init = Trainer::<Autodiff<Cpu>>::new(
        TrainConfig::default(),
        "synthetic",
        &llama,
        &Default::default(),
    )
    .unwrap();
    let methods = vec![
        Method::Oracle { group: false },
        Method::Oracle { group: true },
        Method::Hash {
            name: "untrained".into(),
            file: init.hash_file(Layout::Group).unwrap(),
        },
        Method::Hash {
            name: "untrained".into(),
            file: init.hash_file(Layout::Faithful).unwrap(),
        },
        Method::Linear {
            bits: 96,
            seed: 1,
            group: false,
        },
        Method::Linear {
            bits: 96,
            seed: 1,
            group: true,
        },
        Method::Quest { page: 16 },
    ];
    let positions = [0, 5, 19, 20, 150, 299];
    let budgets = [0.05, 1.0];
    let rows = evaluate_layer(0, &qk, &positions, &methods, &budgets, true, &[]);
    // Every method, then the four code methods again with ties ordered by the true relevance.
    assert_eq!(rows.len(), (methods.len() + 4) * budgets.len());
    for r in rows.iter().filter(|r| r.method.ends_with("+logit-ties")) {
        let base = r.method.trim_end_matches("+logit-ties");
        assert!(
            !base.starts_with("oracle") && base != "quest",
            "{}",
            r.method
        );
        let plain = rows
            .iter()
            .find(|p| p.method == base && p.layout == r.layout && p.budget == r.budget)
            .unwrap();
        // Among keys tied at the cut the true logit picks every oracle key recency could, and
        // more: a ceiling on the same codes.
        assert!(
            r.iou >= plain.iou - 1e-12 && r.recall >= plain.recall - 1e-12,
            "{} {} at {}: {} < {}",
            r.method,
            r.layout,
            r.budget,
            r.iou,
            plain.iou
        );
    }
    let strictly_better = rows
        .iter()
        .filter(|r| r.method.ends_with("+logit-ties") && r.budget < 1.0)
        .any(|r| {
            let plain = rows
                .iter()
                .find(|p| {
                    r.method.starts_with(&p.method)
                        && p.method != r.method
                        && p.layout == r.layout
                        && p.budget == r.budget
                })
                .unwrap();
            r.iou > plain.iou + 1e-9
        });
    assert!(
        strictly_better,
        "logit tie-breaking never changed a selection"
    );
    let rows = evaluate_layer(0, &qk, &positions, &methods, &budgets, false, &[100]);
    assert_eq!(rows.len(), methods.len() * budgets.len());
    let oracle_mass = |b: f64, group: bool| {
        let name = if group { "oracle-group" } else { "oracle" };
        rows.iter()
            .find(|r| r.method == name && r.budget == b)
            .unwrap()
            .mass_recall
    };
    for r in &rows {
        let what = format!("{} {} at {}", r.method, r.layout, r.budget);
        assert!(
            (0.0..=1.0 + 1e-9).contains(&r.iou) && (0.0..=1.0 + 1e-9).contains(&r.recall),
            "{what}"
        );
        if r.method.starts_with("oracle") {
            assert!(
                (r.iou - 1.0).abs() < 1e-12 && (r.recall - 1.0).abs() < 1e-12,
                "{what}"
            );
        }
        if r.budget == 1.0 {
            // Everything visible is selected: perfect recall and all of the mass.
            assert!(
                (r.recall - 1.0).abs() < 1e-12,
                "{what}: recall {}",
                r.recall
            );
            assert!(
                (r.mass_recall - 1.0).abs() < 1e-9,
                "{what}: mass {}",
                r.mass_recall
            );
        } else if r.method != "quest" {
            // The oracle's k keys carry the most mass any k keys can (Quest takes whole pages);
            // the group oracle's k keys the most any one shared list per KV head can.
            let group = r.selection == "group";
            assert!(
                r.mass_recall <= oracle_mass(r.budget, group) + 1e-9,
                "{what}"
            );
            if group {
                assert!(oracle_mass(r.budget, true) <= oracle_mass(r.budget, false) + 1e-9);
            }
        }
        // Rows split at position 100: [0, 100) holds 4 rows, [100, end) 2; the overall mean
        // is their row-weighted mean.
        assert_eq!(r.by_position.len(), 2, "{what}");
        assert_eq!((r.by_position[0].rows, r.by_position[1].rows), (4, 2));
        let pooled = (4.0 * r.by_position[0].iou + 2.0 * r.by_position[1].iou) / 6.0;
        assert!(
            (pooled - r.iou).abs() < 1e-12,
            "{what}: {pooled} vs {}",
            r.iou
        );
        if r.selection == "group" {
            assert_eq!(r.kv_read, 1.0, "{what}");
        } else {
            assert!(
                r.kv_read >= 1.0 && r.kv_read <= (h / kv) as f64 + 1e-9,
                "{what}: {}",
                r.kv_read
            );
        }
    }
    // Bytes per token: group 2 kv × 4 B, faithful 6 q × 4 B, linear 2 × 12 B, Quest 2·2·32·2/16.
    let bytes = |m: &str, l: &str| {
        rows.iter()
            .find(|r| r.method == m && r.layout == l)
            .unwrap()
            .bytes_per_token
    };
    assert_eq!(bytes("untrained", "group"), 8.0);
    assert_eq!(bytes("untrained", "faithful"), 24.0);
    assert_eq!(bytes("linear", "per-head"), 24.0);
    assert_eq!(bytes("linear-group", "group"), 24.0);
    assert_eq!(bytes("quest", "per-head"), 16.0);
}

/// At step 0 the rotation start is the random linear hash with the same rotations: in the group
/// layout it selects exactly what `linear-group` selects, in the faithful layout exactly what the
/// per-head `linear` selects — at several budgets, code lengths and seeds. (A query network and
/// its group's key network share R; were their rotations drawn apart, the untrained code would
/// be noise.)
#[test]
fn rotation_start_is_the_linear_hash() {
    let (h, kv, n, d) = (6, 2, 400, 32);
    let mut rng = StdRng::seed_from_u64(11);
    let qk = LayerQk {
        q: random([h, n, d], &mut rng),
        k: random([kv, n, d], &mut rng),
    };
    let positions = [7, 40, 123, 250, 399];
    let budgets = [0.05, 0.1, 0.3];
    for (bits, seed, layer) in [(32, 3, 0), (64, 9, 2)] {
        let llama = LlamaConfig::attention_shape(layer + 1, h, kv, d, n);
        let config = TrainConfig {
            bits,
            seed,
            init: spotlight_train::HashInit::Rotation,
            ..TrainConfig::default()
        };
        let start = Trainer::<Autodiff<Cpu>>::new(config, "synthetic", &llama, &Default::default())
            .unwrap();
        for (layout, group) in [(Layout::Group, true), (Layout::Faithful, false)] {
            let methods = [
                Method::Hash {
                    name: "start".into(),
                    file: start.hash_file(layout).unwrap(),
                },
                Method::Linear { bits, seed, group },
            ];
            let rows = evaluate_layer(layer, &qk, &positions, &methods, &budgets, false, &[]);
            for b in budgets {
                let at = |name: &str| {
                    rows.iter()
                        .find(|r| r.method == name && r.budget == b)
                        .unwrap()
                };
                let (hash, linear) = (at("start"), at(methods[1].name().as_str()));
                let what = format!("{layout:?} {bits} bits seed {seed} at {b}");
                assert_eq!(hash.selection, linear.selection, "{what}");
                assert_eq!(
                    (hash.iou, hash.recall, hash.mass_recall, hash.kv_read),
                    (
                        linear.iou,
                        linear.recall,
                        linear.mass_recall,
                        linear.kv_read
                    ),
                    "{what}"
                );
                // Not a trivial agreement: the selection is not the oracle's.
                assert!(hash.iou < 1.0, "{what}");
            }
        }
    }
}

/// Any `KeySelector`, evaluated through `Method::Selector`, is ranked as the evaluator ranks its
/// own methods: the oracles through the trait score exactly as the built-in oracles, per query
/// head and per group.
#[test]
fn any_key_selector_is_evaluated_like_the_built_in_methods() {
    use spotlight_train::quality::Heads;
    use spotlight_train::selector::selector_for;
    let (h, kv, n, d) = (6, 2, 300, 32);
    let mut rng = StdRng::seed_from_u64(7);
    let qk = LayerQk {
        q: random([h, n, d], &mut rng),
        k: random([kv, n, d], &mut rng),
    };
    let heads = Heads {
        q_heads: h,
        kv_heads: kv,
        head_dim: d,
    };
    let through = |group| Method::Selector {
        selector: selector_for::<Cpu>(&Method::Oracle { group }, heads, 1, &Default::default()),
        group,
        bytes_per_token: 0.0,
    };
    let methods = [
        Method::Oracle { group: false },
        through(false),
        Method::Oracle { group: true },
        through(true),
    ];
    let positions = [0, 5, 19, 20, 150, 299];
    let budgets = [0.05, 0.3];
    let rows = evaluate_layer(0, &qk, &positions, &methods, &budgets, false, &[]);
    assert_eq!(rows.len(), methods.len() * budgets.len());
    for (built_in, selector) in [(0, 1), (2, 3)] {
        for b in 0..budgets.len() {
            let (a, s) = (
                &rows[built_in * budgets.len() + b],
                &rows[selector * budgets.len() + b],
            );
            assert_eq!(s.method, a.method, "the selector's own name");
            assert_eq!(s.selection, a.selection);
            for (x, y, what) in [
                (a.iou, s.iou, "iou"),
                (a.recall, s.recall, "recall"),
                (a.mass_recall, s.mass_recall, "mass recall"),
                (a.kv_read, s.kv_read, "K/V read"),
            ] {
                assert!((x - y).abs() < 1e-12, "{} {what}: {x} vs {y}", a.method);
            }
        }
    }
    assert_eq!(rows[0].iou, 1.0);
}
