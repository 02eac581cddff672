//! The selectors of the model's sparse attention, on SYNTHETIC weights and inputs: scores against
//! plain-Rust references (popcount of packed codes, Quest's page bound), and the model's sparse
//! decode (one token at a time, keys coded at insert) against its teacher-forced every-row form.

use std::sync::Arc;

use burn::backend::ndarray::NdArray;
use burn::tensor::{Tensor, TensorData};
use rand::{rngs::StdRng, Rng, SeedableRng};
use spotlight_kernels::reference::{self, pack_signs};
use spotlight_kernels::{Budget, CodeShape};
use spotlight_llama::fast::StepRow;
use spotlight_llama::synthetic::SyntheticWeights;
use spotlight_llama::{KeySelector, Llama, LlamaBackend, LlamaConfig, SelectRows, Selection};
use spotlight_train::quality::{Heads, Method};
use spotlight_train::selector::{selector_for, Hash, Quest};
use spotlight_train::{HashFile, HashHeader, HashMlp, LayerHash, Layout};

type Cpu = NdArray<f32>;

fn random<const D: usize>(shape: [usize; D], rng: &mut StdRng) -> Tensor<Cpu, D> {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn host<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// A hash far from the identity (weights uniform in ±0.5), so signs actually change; `replicas`
/// networks per head (codes of replicas·d bits). Drawn from `seed`: the tests compare selections,
/// and a pre-sign value within float rounding of zero may code differently in a batched matmul
/// than in a one-row one (seen: one query bit of 64 flipped, every score of that row off by one,
/// in ~1.3% of draws), so the draws are fixed.
fn random_hash(config: &LlamaConfig, layout: Layout, replicas: usize, seed: u64) -> HashFile {
    let mut rng = StdRng::seed_from_u64(seed);
    let (h, kv, d) = (
        config.num_attention_heads,
        config.num_key_value_heads,
        config.head_dim,
    );
    let mut nets = |n: usize| {
        let n = n * replicas;
        let params =
            [[n, d, d], [n, 1, d], [n, d, d], [n, 1, d]].map(|s| random(s, &mut rng) * 0.5);
        HashMlp::<Cpu>::from_params(replicas, params)
            .to_weights()
            .unwrap()
    };
    HashFile {
        header: HashHeader::new(
            "synthetic",
            config,
            layout,
            replicas * config.head_dim,
            serde_json::Value::Null,
        ),
        layers: (0..config.num_hidden_layers)
            .map(|_| LayerHash {
                query: nets(h),
                key: (layout == Layout::Group).then(|| nets(kv)),
            })
            .collect(),
    }
}

/// The reference code of `head` (its replicas' packed signs side by side).
fn code_of(w: &spotlight_kernels::reference::HashWeights, head: usize, x: &[f32]) -> Vec<u32> {
    (0..w.replicas)
        .flat_map(|r| pack_signs(&w.forward(head * w.replicas + r, x)))
        .collect()
}

fn heads(c: &LlamaConfig) -> Heads {
    Heads {
        q_heads: c.num_attention_heads,
        kv_heads: c.num_key_value_heads,
        head_dim: c.head_dim,
    }
}

#[test]
fn hash_scores_are_popcounts_of_the_packed_codes() {
    let (batch, h, kv, d, t, n) = (2, 6, 2, 32, 5, 37);
    let g = h / kv;
    let config = LlamaConfig::attention_shape(1, h, kv, d, 64);
    let mut rng = StdRng::seed_from_u64(11);
    for (layout, replicas) in [
        (Layout::Group, 1),
        (Layout::Faithful, 1),
        (Layout::Group, 3),
        (Layout::Faithful, 2),
    ] {
        let file = random_hash(&config, layout, replicas, 1);
        let sel = Hash::<Cpu>::new("h", &file, heads(&config), &Default::default());
        let q = random([batch, kv, t * g, d], &mut rng);
        let k = random([batch, kv, n, d], &mut rng);
        let codes = sel.encode_keys(0, k.clone());
        let got = host(sel.scores(0, q.clone(), k.clone(), codes));
        let (qh, kh) = (host(q), host(k));
        let lh = &file.layers[0];
        let sets = layout.key_nets(h, kv);
        let shape = CodeShape::new(h, sets, replicas * d).unwrap();
        for b in 0..batch {
            // Key codes [n][sets][words] from the reference MLP; set s reads KV head s·kv/sets.
            let k_codes: Vec<u32> = (0..n)
                .flat_map(|j| (0..sets).map(move |s| (j, s)))
                .flat_map(|(j, s)| {
                    let head = s * kv / sets;
                    let x = &kh[((b * kv + head) * n + j) * d..][..d];
                    code_of(lh.key_weights(), s, x)
                })
                .collect();
            for ti in 0..t {
                // Query codes [q_heads][words] of position ti (row ti·G + gi of KV head hh / G).
                let q_codes: Vec<u32> = (0..h)
                    .flat_map(|hh| {
                        let row = ti * g + hh % g;
                        let x = &qh[((b * kv + hh / g) * t * g + row) * d..][..d];
                        code_of(&lh.query, hh, x)
                    })
                    .collect();
                for hh in 0..h {
                    let set = if sets == kv { hh / g } else { hh };
                    let want = reference::scores(&shape, &q_codes, &k_codes, n, set);
                    let row = ti * g + hh % g;
                    let at = ((b * kv + hh / g) * t * g + row) * n;
                    let have: Vec<u32> = got[at..at + n].iter().map(|&x| x as u32).collect();
                    assert_eq!(
                        have, want,
                        "{layout:?}×{replicas} seq {b} position {ti} head {hh}"
                    );
                }
            }
        }
    }
}

#[test]
fn quest_scores_are_page_bounds() {
    let (batch, kv, rows, d) = (2, 2, 4, 8);
    let mut rng = StdRng::seed_from_u64(3);
    for (n, page) in [(1, 16), (16, 16), (37, 16), (50, 7)] {
        let q = random([batch, kv, rows, d], &mut rng);
        let k = random([batch, kv, n, d], &mut rng);
        let got = host(KeySelector::<Cpu>::scores(
            &Quest { page },
            0,
            q.clone(),
            k.clone(),
            None,
        ));
        let (qh, kh) = (host(q), host(k));
        for b in 0..batch {
            for hh in 0..kv {
                for r in 0..rows {
                    let qv = &qh[((b * kv + hh) * rows + r) * d..][..d];
                    for j in 0..n {
                        let p0 = j / page * page;
                        let want: f32 = (0..d)
                            .map(|c| {
                                let vals = (p0..(p0 + page).min(n))
                                    .map(|i| kh[((b * kv + hh) * n + i) * d + c]);
                                let lo = vals.clone().fold(f32::INFINITY, f32::min);
                                let hi = vals.fold(f32::NEG_INFINITY, f32::max);
                                (qv[c] * lo).max(qv[c] * hi)
                            })
                            .sum();
                        let have = got[((b * kv + hh) * rows + r) * n + j];
                        assert!(
                            (have - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "n {n} page {page} ({b},{hh},{r},{j}): {have} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

/// 4 layers (2 dense, 2 sparse), 6 q / 2 kv heads, head_dim 32: SYNTHETIC weights.
fn tiny_model() -> (LlamaConfig, Llama<Cpu>) {
    let c = LlamaConfig {
        vocab_size: 61,
        hidden_size: 48,
        intermediate_size: 40,
        num_hidden_layers: 4,
        num_attention_heads: 6,
        num_key_value_heads: 2,
        head_dim: 32,
        ..LlamaConfig::attention_shape(4, 6, 2, 32, 128)
    };
    let model = Llama::load(&c, &SyntheticWeights::new(&c, 4), 128, &Default::default()).unwrap();
    (c, model)
}

/// Logits [len][vocab] of `tokens` with `selection`, all rows in one call.
fn every_row(model: &Llama<Cpu>, tokens: &[u32], selection: Option<Selection<Cpu>>) -> Vec<f32> {
    let mut cache = model.new_cache(1, tokens.len()).unwrap();
    cache.selection = selection;
    host(model.logits(model.forward(&[tokens.to_vec()], &mut cache).unwrap()))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn sparse_decode_equals_teacher_forced_selection() {
    let (c, model) = tiny_model();
    let mut rng = StdRng::seed_from_u64(8);
    let tokens: Vec<u32> = (0..45).map(|_| rng.random_range(0..61)).collect();
    // fraction 0: top_k = min_tokens at every length, so decode budgets equal the every-row one.
    let budget = Budget {
        fraction: 0.0,
        min_tokens: 5,
        sink: 2,
        window: 3,
    };
    let dense = every_row(&model, &tokens, None);
    for method in [
        Method::Hash {
            name: "group".into(),
            file: random_hash(&c, Layout::Group, 2, 2),
        },
        Method::Hash {
            name: "faithful".into(),
            file: random_hash(&c, Layout::Faithful, 1, 3),
        },
        Method::Linear {
            bits: 64,
            seed: 1,
            group: false,
        },
        Method::Linear {
            bits: 64,
            seed: 1,
            group: true,
        },
        Method::Oracle { group: false },
        Method::Oracle { group: true },
        Method::Quest { page: 4 },
    ] {
        let sel: Arc<dyn KeySelector<Cpu>> =
            selector_for(&method, heads(&c), c.num_hidden_layers, &Default::default());
        let name = sel.name();
        let forced = every_row(
            &model,
            &tokens,
            Some(Selection::new(
                sel.clone(),
                budget,
                SelectRows::EveryRow {
                    budget_len: tokens.len(),
                },
            )),
        );
        // Quest bounds pages of keys the teacher-forced row cannot see yet (a later key of its
        // own page); one token at a time sees only cached keys. Every other method must agree.
        if !name.starts_with("quest") {
            let mut cache = model.new_cache(1, tokens.len()).unwrap();
            cache.selection = Some(Selection::new(sel.clone(), budget, SelectRows::Decode));
            let vocab = c.vocab_size;
            for (i, &tok) in tokens.iter().enumerate() {
                let step = host(model.forward_last(&[vec![tok]], &mut cache).unwrap());
                let diff = max_abs_diff(&step, &forced[i * vocab..(i + 1) * vocab]);
                assert!(diff < 1e-4, "{name} position {i}: decode differs by {diff}");
            }
            let codes = cache.layers[2].codes.is_some();
            assert_eq!(
                codes,
                !matches!(method, Method::Oracle { .. }),
                "{name}: key codes kept at insert"
            );
            assert!(cache.layers[0].codes.is_none(), "dense layers code nothing");
        }
        // Sparse attention must change something once rows see more than the budget (10 keys).
        let diff = max_abs_diff(&forced, &dense);
        assert!(diff > 1e-3, "{name}: selection had no effect ({diff})");
        // ...and nothing for rows that see no more than it.
        let early = 10 * c.vocab_size;
        let diff = max_abs_diff(&forced[..early], &dense[..early]);
        assert!(diff < 1e-4, "{name}: rows within budget differ by {diff}");
    }
}

#[test]
fn full_budget_is_dense() {
    let (c, model) = tiny_model();
    let tokens: Vec<u32> = (0..30).map(|i| (i * 7 % 61) as u32).collect();
    let dense = every_row(&model, &tokens, None);
    let sel = selector_for::<Cpu>(
        &Method::Hash {
            name: "group".into(),
            file: random_hash(&c, Layout::Group, 1, 4),
        },
        heads(&c),
        c.num_hidden_layers,
        &Default::default(),
    );
    let all = Budget {
        fraction: 1.0,
        ..Budget::default()
    };
    let sparse = every_row(
        &model,
        &tokens,
        Some(Selection::new(
            sel,
            all,
            SelectRows::EveryRow { budget_len: 30 },
        )),
    );
    let diff = max_abs_diff(&dense, &sparse);
    assert!(diff < 1e-5, "budget 1 differs from dense by {diff}");
}

type Gpu = burn::backend::wgpu::Wgpu<f32, i32>;

/// A small SYNTHETIC model on wgpu (lavapipe in CI). head_dim 64: a multiple of every plane
/// (subgroup) size the attend kernel may meet.
fn gpu_model() -> (Llama<Gpu>, burn::backend::wgpu::WgpuDevice) {
    let device = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    let c = LlamaConfig {
        vocab_size: 61,
        hidden_size: 96,
        intermediate_size: 40,
        num_hidden_layers: 3,
        ..LlamaConfig::attention_shape(3, 6, 2, 64, 96)
    };
    let model = Llama::<Gpu>::load(&c, &SyntheticWeights::new(&c, 6), 96, &device).unwrap();
    (model, device)
}

/// The decode kernels (hash_pack at insert, popcount score + histogram select, sparse attend) on
/// wgpu (lavapipe in CI) against the mask path on the same backend: a ragged batch of two
/// sequences, prefilled, then decoded token by token. Both layouts. SYNTHETIC weights.
#[test]
fn kernel_decode_matches_the_mask_path() {
    use spotlight_train::kernel_selector::KernelHash;
    let (model, device) = gpu_model();
    let c = model.config.clone();
    let mut rng = StdRng::seed_from_u64(21);
    let prompts: Vec<Vec<u32>> = [37usize, 52]
        .iter()
        .map(|&n| (0..n).map(|_| rng.random_range(0..61)).collect())
        .collect();
    let steps: Vec<Vec<u32>> = (0..6)
        .map(|_| (0..2).map(|_| rng.random_range(0..61)).collect())
        .collect();
    let budget = Budget {
        fraction: 0.1,
        min_tokens: 5,
        sink: 2,
        window: 3,
    };
    // Logits of the prefill and of every decode step, both sequences.
    let run = |sel: Option<Arc<dyn KeySelector<Gpu>>>| -> Vec<f32> {
        let mut cache = model.new_cache(2, 96).unwrap();
        cache.selection = sel.map(|s| Selection::new(s, budget, SelectRows::Decode));
        let mut out = host_gpu(model.forward_last(&prompts, &mut cache).unwrap());
        for step in &steps {
            let input: Vec<Vec<u32>> = step.iter().map(|&t| vec![t]).collect();
            out.extend(host_gpu(model.forward_last(&input, &mut cache).unwrap()));
        }
        out
    };
    let dense = run(None);
    for (layout, replicas) in [
        (Layout::Group, 1),
        (Layout::Faithful, 1),
        (Layout::Group, 2),
    ] {
        let file = random_hash(&c, layout, replicas, 5);
        let kernel: Arc<dyn KeySelector<Gpu>> =
            Arc::new(KernelHash::new("kernel", &file, heads(&c), &device).unwrap());
        let mask: Arc<dyn KeySelector<Gpu>> =
            Arc::new(Hash::<Gpu>::new("mask", &file, heads(&c), &device));
        let (k, m) = (run(Some(kernel)), run(Some(mask)));
        let prefill = 2 * c.vocab_size;
        // Prefill is dense for both: identical up to summation order.
        assert!(max_abs_diff(&k[..prefill], &dense[..prefill]) < 1e-4);
        let diff = max_abs_diff(&k, &m);
        assert!(
            diff < 1e-3,
            "{layout:?}×{replicas}: kernel vs mask path differ by {diff}"
        );
        let sparse = max_abs_diff(&k[prefill..], &dense[prefill..]);
        assert!(
            sparse > 1e-3,
            "{layout:?}: selection had no effect ({sparse})"
        );

        // The fused decoder (spotlight_llama::fast) over the cache the kernel selector prefilled:
        // the group layout runs fused and matches the mask path; the faithful one declines.
        let mut cache = model.new_cache(2, 96).unwrap();
        let kernel: Arc<dyn KeySelector<Gpu>> =
            Arc::new(KernelHash::new("kernel", &file, heads(&c), &device).unwrap());
        cache.selection = Some(Selection::new(kernel, budget, SelectRows::Decode));
        let mut fused = host_gpu(model.forward_last(&prompts, &mut cache).unwrap());
        let Some(mut decoder) = Gpu::fast_decoder(&model, &cache).unwrap() else {
            assert_eq!(
                layout,
                Layout::Faithful,
                "the group layout must decode fused"
            );
            continue;
        };
        assert_eq!(
            layout,
            Layout::Group,
            "the faithful layout has no fused path"
        );
        assert!(decoder.full_batch());
        for step in &steps {
            let rows: Vec<StepRow> = step
                .iter()
                .enumerate()
                .map(|(seq, &token)| StepRow { seq, token })
                .collect();
            fused.extend(decoder.step(&rows).unwrap());
            assert!(decoder.read_share() < 1.0, "the budget leaves keys out");
        }
        let diff = max_abs_diff(&fused, &m);
        assert!(diff < 1e-3, "fused decoder vs mask path differ by {diff}");
    }
}

fn host_gpu<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// `generate` with the kernel hash on wgpu decodes on the fused decoder (sparse, every sequence
/// in every step) and picks the same greedy tokens as the tensor path, also when one sequence
/// stops early and is carried along. SYNTHETIC weights.
#[test]
fn generate_decodes_sparse_on_the_fused_path_with_ragged_stops() {
    use spotlight_llama::{generate, GenerateConfig, Sampling};
    use spotlight_train::kernel_selector::KernelHash;
    let (model, device) = gpu_model();
    let c = model.config.clone();
    let file = random_hash(&c, Layout::Group, 1, 6);
    let kernel: Arc<dyn KeySelector<Gpu>> =
        Arc::new(KernelHash::new("kernel", &file, heads(&c), &device).unwrap());
    let budget = Budget {
        fraction: 0.1,
        min_tokens: 5,
        sink: 2,
        window: 3,
    };
    let selection = Selection::new(kernel, budget, SelectRows::Decode);
    let mut rng = StdRng::seed_from_u64(5);
    let prompts: Vec<Vec<u32>> = [37usize, 52]
        .iter()
        .map(|&n| (0..n).map(|_| rng.random_range(0..61)).collect())
        .collect();
    let run = |fused: bool, stop_ids: Vec<u32>| {
        let config = GenerateConfig {
            max_tokens: 6,
            sampling: Sampling::Greedy,
            repetition_penalty: 1.0,
            seed: 0,
            stop_ids,
            fused_decode: fused,
            cuda_graphs: spotlight_llama::fast::GraphMode::Off,
            attention_kernels: fused,
        };
        generate(&model, &prompts, &config, Some(&selection), |_, _| Ok(())).unwrap()
    };
    let (fused, stats) = run(true, vec![]);
    assert!(stats.fused_launches.is_some(), "the fused decoder ran");
    assert!(stats.kv_read_share < 1.0, "{}", stats.kv_read_share);
    let (tensor, stats) = run(false, vec![]);
    assert!(stats.fused_launches.is_none());
    assert_eq!(fused, tensor);
    // Sequence 0 stops at its second token; sequence 1 goes on (unless it meets the same token).
    let stop = fused[0][1];
    let (fused, _) = run(true, vec![stop]);
    let (tensor, _) = run(false, vec![stop]);
    assert_eq!(fused, tensor);
    assert_eq!(fused[0].len(), 1);
}

/// The server's engine on the fused decoder against the same engine on tensor ops, through what
/// a server does: prefills into free slots while others decode, steps that leave slots out
/// (idle ones pad a sparse step), a slot freed and taken by a new prompt, a request with dense
/// attention between sparse steps. Every step's logits agree. SYNTHETIC weights, random hash.
#[test]
fn serve_engine_decodes_on_the_fused_path_like_tensor_ops() {
    use spotlight_serve::engine::{Engine, Mode};
    use spotlight_serve::llama::{AttentionMode, LlamaEngine};
    use spotlight_train::kernel_selector::KernelHash;
    let (model, device) = gpu_model();
    let c = model.config.clone();
    let file = random_hash(&c, Layout::Group, 1, 6);
    let budget = Budget {
        fraction: 0.1,
        min_tokens: 5,
        sink: 2,
        window: 3,
    };
    let engine = |kernels: bool| {
        let kernel: Arc<dyn KeySelector<Gpu>> =
            Arc::new(KernelHash::new("kernel", &file, heads(&c), &device).unwrap());
        let modes = vec![
            AttentionMode {
                name: "spotlight".into(),
                selection: Some(Selection::new(kernel, budget, SelectRows::Decode)),
            },
            AttentionMode {
                name: "dense".into(),
                selection: None,
            },
        ];
        LlamaEngine::new(model.clone(), 3, 90, modes, kernels).unwrap()
    };
    let mode = |name: &str| Mode {
        attention: name.into(),
        budget: None,
    };
    let (sparse, dense) = (mode("spotlight"), mode("dense"));
    let mut rng = StdRng::seed_from_u64(8);
    let mut prompt = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(0..61)).collect() };
    enum Op {
        Prefill(usize, Vec<u32>),
        Decode(Vec<usize>, Mode),
        Free(usize),
    }
    let mut ops = vec![Op::Prefill(1, prompt(37))];
    ops.extend((0..3).map(|_| Op::Decode(vec![1], sparse.clone())));
    ops.push(Op::Prefill(0, prompt(20)));
    ops.extend((0..2).map(|_| Op::Decode(vec![0, 1], sparse.clone())));
    ops.extend([
        Op::Free(1),
        Op::Prefill(1, prompt(30)),
        Op::Prefill(2, prompt(45)),
    ]);
    ops.extend((0..5).map(|_| Op::Decode(vec![2, 0, 1], sparse.clone())));
    ops.push(Op::Decode(vec![2], dense.clone()));
    ops.extend((0..3).map(|_| Op::Decode(vec![0, 1], sparse.clone())));
    // Slot 2 sat out three sparse steps: it goes on at its own length, densely and sparsely.
    ops.push(Op::Decode(vec![2], dense.clone()));
    ops.extend((0..2).map(|_| Op::Decode(vec![0, 1, 2], sparse.clone())));
    let tokens: Vec<u32> = prompt(64);
    let run = |kernels: bool| -> (Vec<f32>, bool) {
        let mut e = engine(kernels);
        let (mut out, mut fused) = (Vec::new(), false);
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Prefill(slot, p) => out.extend(e.prefill(*slot, p, &sparse).unwrap()),
                Op::Decode(slots, m) => {
                    let rows: Vec<(usize, u32)> = slots
                        .iter()
                        .map(|&s| (s, tokens[(i * 3 + s) % tokens.len()]))
                        .collect();
                    out.extend(e.decode(&rows, m).unwrap());
                    fused |= e.decodes_fused();
                }
                Op::Free(slot) => e.free(*slot),
            }
        }
        (out, fused)
    };
    let (fused, on_fused) = run(true);
    let (tensor, on_tensor) = run(false);
    assert!(on_fused && !on_tensor, "the kernels engine decodes fused");
    assert_eq!(fused.len(), tensor.len());
    let diff = max_abs_diff(&fused, &tensor);
    assert!(diff < 1e-3, "fused vs tensor engine differ by {diff}");
}
