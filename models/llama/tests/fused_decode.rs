//! The fused decoder (`spotlight_llama::fast`) against the Burn tensor path on wgpu (lavapipe in
//! CI): the same model and prefilled cache, then decode steps with a ragged batch, logits compared
//! to f32 precision. SYNTHETIC weights.

use burn::backend::wgpu::{Wgpu, WgpuDevice};
use spotlight_llama::fast::StepRow;
use spotlight_llama::synthetic::SyntheticWeights;
use spotlight_llama::{Llama, LlamaBackend, LlamaConfig};

type Gpu = Wgpu<f32, i32>;

fn model() -> Llama<Gpu> {
    // head_dim 64 (a multiple of every plane size); 3 query heads per KV head; awkward vocab and
    // intermediate sizes.
    let c = LlamaConfig {
        vocab_size: 61,
        hidden_size: 96,
        intermediate_size: 44,
        num_hidden_layers: 3,
        ..LlamaConfig::attention_shape(3, 6, 2, 64, 96)
    };
    Llama::<Gpu>::load(
        &c,
        &SyntheticWeights::new(&c, 11),
        64,
        &WgpuDevice::DefaultDevice,
    )
    .unwrap()
}

#[test]
fn fused_decode_matches_the_tensor_path() {
    let model = model();
    let prompts: Vec<Vec<u32>> = vec![
        vec![3, 1, 4, 1, 5],
        (0..9).map(|i| i * 6 % 61).collect(),
        vec![60],
    ];
    // Two caches prefilled the same way: one for each path (the decoder writes in place).
    let prefill = || {
        let mut cache = model.new_cache(3, 40).unwrap();
        model.forward_last(&prompts, &mut cache).unwrap();
        cache
    };
    let mut tensor_cache = prefill();
    let fused_cache = prefill();
    let mut decoder = Gpu::fast_decoder(&model, &fused_cache)
        .unwrap()
        .expect("wgpu has the fused decoder");
    let vocab = model.config.vocab_size;
    // Steps: all three sequences, then a ragged one (sequence 1 has finished), then one row.
    let steps: [&[(usize, u32)]; 4] = [
        &[(0, 7), (1, 8), (2, 9)],
        &[(2, 10), (0, 11)],
        &[(1, 12)],
        &[(0, 13), (1, 14), (2, 15)],
    ];
    for (i, step) in steps.iter().enumerate() {
        let rows: Vec<StepRow> = step
            .iter()
            .map(|&(seq, token)| StepRow { seq, token })
            .collect();
        let fused = decoder.step(&rows).unwrap();
        let mut input = vec![vec![]; 3];
        for &(seq, token) in step.iter() {
            input[seq] = vec![token];
        }
        let want = model
            .forward_last(&input, &mut tensor_cache)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        for (r, &(seq, _)) in step.iter().enumerate() {
            let got = &fused[r * vocab..(r + 1) * vocab];
            let expected = &want[seq * vocab..(seq + 1) * vocab];
            let diff = got
                .iter()
                .zip(expected)
                .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                .fold(0.0f32, f32::max);
            assert!(
                diff < 1e-4,
                "step {i}, sequence {seq}: logits differ by {diff}"
            );
        }
        assert_eq!(decoder.launches(), 1 + 3 * 7 + 1, "launches per step");
    }
}

#[test]
fn fused_decode_rejects_bad_rows() {
    let model = model();
    let mut cache = model.new_cache(2, 8).unwrap();
    model
        .forward_last(&[vec![1; 7], vec![2]], &mut cache)
        .unwrap();
    let mut decoder = Gpu::fast_decoder(&model, &cache).unwrap().unwrap();
    let row = |seq, token| StepRow { seq, token };
    for (rows, what) in [
        (vec![row(2, 1)], "sequence"),
        (vec![row(1, 1), row(1, 2)], "twice"),
        (vec![row(0, 61)], "vocabulary"),
    ] {
        let err = decoder.step(&rows).unwrap_err().to_string();
        assert!(err.contains(what), "{err}");
    }
    // Sequence 0 has one free row: the second step past it is an error, not a write.
    decoder.step(&[row(0, 1)]).unwrap();
    let err = decoder.step(&[row(0, 1)]).unwrap_err().to_string();
    assert!(err.contains("exceeds the context"), "{err}");
}

/// The synthetic decoder tests' model: 4 layers (2 of them sparse), 4 query and 2 KV heads of 64.
fn synthetic_decoder_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 67,
        hidden_size: 128,
        intermediate_size: 72,
        num_hidden_layers: 4,
        ..LlamaConfig::attention_shape(4, 4, 2, 64, 256)
    }
}

/// The SYNTHETIC decoder the benchmarks build (random weights and cache on the device): a step
/// repeated after `rewind` gives the same logits, and Spotlight with a budget that keeps every
/// key gives dense attention's logits while a small budget changes them.
#[test]
fn synthetic_decoder_rewinds_and_full_budget_spotlight_is_dense() {
    use burn::backend::wgpu::WgpuRuntime;
    use burn_cubecl::cubecl::Runtime;
    use spotlight_kernels::Budget;
    use spotlight_llama::fast::{random_codes, Decoder, FastDecode, SparseDecode, StepParts};
    let c = synthetic_decoder_config();
    let client = WgpuRuntime::client(&WgpuDevice::DefaultDevice);
    let (batch, context) = (2, 150);
    let mut decoder =
        Decoder::<WgpuRuntime, f32>::synthetic(client.clone(), &c, batch, context, 4, 3).unwrap();
    let rows = [StepRow { seq: 0, token: 5 }, StepRow { seq: 1, token: 66 }];
    let start = vec![context; batch];
    let logits = |decoder: &mut Decoder<WgpuRuntime, f32>| {
        decoder.rewind(&start).unwrap();
        let out = decoder.step(&rows).unwrap();
        assert!(out.iter().all(|v| v.is_finite()));
        out
    };
    let dense = logits(&mut decoder);
    assert_eq!(
        logits(&mut decoder),
        dense,
        "a rewound step repeats exactly"
    );
    // CUDA graphs: auto is plain launches here, on is an error that says why.
    use spotlight_llama::fast::{GraphMode, GraphState};
    decoder.set_graphs(GraphMode::Auto).unwrap();
    assert_eq!(decoder.graph_state(), &GraphState::Off);
    assert_eq!(logits(&mut decoder), dense, "auto changes nothing off CUDA");
    let err = decoder.set_graphs(GraphMode::On).unwrap_err().to_string();
    assert!(err.contains("CUDA device"), "{err}");
    // Parts alone run too (benchmarks time them), and advance the cache.
    decoder.rewind(&start).unwrap();
    let parts = StepParts {
        weights: false,
        attention: true,
        retrieval: true,
    };
    decoder.launch_parts(&rows, parts).unwrap();
    assert_eq!(decoder.lens(), &[context + 1, context + 1]);

    let budget = |fraction| Budget {
        fraction,
        ..Budget::default()
    };
    let mut sparse = |fraction| {
        let s = SparseDecode::synthetic(&client, &c, budget(fraction), 9).unwrap();
        let codes = random_codes(&client, &c, (batch, context + 4), 1);
        decoder.set_sparse(Some((s, codes))).unwrap();
        let out = logits(&mut decoder);
        (out, decoder.read_share())
    };
    let (full, share) = sparse(1.0);
    assert_eq!(share, 1.0);
    let diff = full
        .iter()
        .zip(&dense)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "full budget vs dense: {diff}");
    let (small, share) = sparse(0.02);
    assert!(share < 0.8, "read share {share}");
    // The same budget with every sequence below `dense_below` is dense attention again.
    let s = SparseDecode {
        dense_below: context + 10,
        ..SparseDecode::synthetic(&client, &c, budget(0.02), 9).unwrap()
    };
    let codes = random_codes(&client, &c, (batch, context + 4), 1);
    decoder.set_sparse(Some((s, codes))).unwrap();
    assert_eq!(logits(&mut decoder), dense, "dense below the threshold");
    assert_eq!(decoder.read_share(), 1.0);
    let diff = small
        .iter()
        .zip(&dense)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff > 1e-4, "a 2% budget had no effect");
    // Sparse steps must cover every sequence in order.
    let err = decoder.step(&rows[1..]).unwrap_err().to_string();
    assert!(err.contains("every sequence"), "{err}");
}

/// Dense attention on the causal kernel (flash style) against the tensor-op attention: a ragged
/// prefill, then a second call that continues each sequence from its cached length (one sequence
/// gets no new tokens), every real row's hidden state compared.
#[test]
fn causal_attention_kernel_matches_the_tensor_path() {
    let model = model();
    let mut kernel = model.new_cache(3, 40).unwrap();
    let mut tensor = model.new_cache(3, 40).unwrap();
    tensor.attention_kernels = false;
    let calls: [Vec<Vec<u32>>; 2] = [
        vec![
            vec![3, 1, 4, 1, 5],
            (0..17).map(|i| i * 7 % 61).collect(),
            vec![60],
        ],
        vec![vec![2, 7], vec![], (0..12).map(|i| i * 5 % 61).collect()],
    ];
    for (c, tokens) in calls.iter().enumerate() {
        let hidden = model.config.hidden_size;
        let got = model.forward(tokens, &mut kernel).unwrap();
        let want = model.forward(tokens, &mut tensor).unwrap();
        let len = got.dims()[1];
        let (got, want) = (
            got.into_data().to_vec::<f32>().unwrap(),
            want.into_data().to_vec::<f32>().unwrap(),
        );
        for (b, seq) in tokens.iter().enumerate() {
            for t in 0..seq.len() {
                let at = (b * len + t) * hidden;
                let worst = got[at..at + hidden]
                    .iter()
                    .zip(&want[at..at + hidden])
                    .map(|(a, e)| (a - e).abs() / (1.0 + e.abs()))
                    .fold(0.0f32, f32::max);
                assert!(worst < 1e-4, "call {c} sequence {b} row {t}: {worst}");
            }
        }
    }
    assert_eq!(kernel.lens, tensor.lens);
}

/// Keys are hashed once per `window + 1` steps (a key inside the local window is never scored):
/// every step's logits and, once the decoder is dropped, every code equal those of hashing after
/// each step.
#[test]
fn deferred_key_hashing_matches_hashing_every_step() {
    use burn::backend::wgpu::WgpuRuntime;
    use burn_cubecl::cubecl::Runtime;
    use spotlight_kernels::device::read_u32;
    use spotlight_kernels::Budget;
    use spotlight_llama::fast::{random_codes, Decoder, FastDecode, SparseDecode};
    let c = synthetic_decoder_config();
    let client = WgpuRuntime::client(&WgpuDevice::DefaultDevice);
    let (batch, context, steps) = (2, 150, 11);
    let budget = Budget {
        fraction: 0.02,
        window: 3,
        ..Budget::default()
    };
    let decoder = |codes: &Vec<_>| {
        let d =
            Decoder::<WgpuRuntime, f32>::synthetic(client.clone(), &c, batch, context, steps, 3)
                .unwrap();
        let s = SparseDecode::synthetic(&client, &c, budget, 9).unwrap();
        d.with_sparse(s, codes.clone()).unwrap()
    };
    // The ring holds window + 1 steps, but never more than 65 whatever the window.
    assert_eq!(
        SparseDecode::synthetic(&client, &c, budget, 9)
            .unwrap()
            .ring_steps(),
        4
    );
    let wide = Budget {
        window: 10_000,
        ..budget
    };
    assert_eq!(
        SparseDecode::synthetic(&client, &c, wide, 9)
            .unwrap()
            .ring_steps(),
        65
    );
    // The code buffers outlive the decoders, as a KV cache's do.
    let deferred_codes = random_codes(&client, &c, (batch, context + steps), 1);
    let (mut deferred, mut each_step) = (
        decoder(&deferred_codes),
        decoder(&random_codes(&client, &c, (batch, context + steps), 1)),
    );
    for step in 0..steps {
        let rows = [
            StepRow {
                seq: 0,
                token: (5 + 7 * step) as u32 % 67,
            },
            StepRow {
                seq: 1,
                token: (66 + 3 * step) as u32 % 67,
            },
        ];
        let a = deferred.step(&rows).unwrap();
        let b = each_step.step(&rows).unwrap();
        // Rewinding to the current lengths hashes the waiting keys: hashing after every step.
        let lens = each_step.lens().to_vec();
        each_step.rewind(&lens).unwrap();
        assert_eq!(a, b, "step {step}: logits differ");
    }
    // Dropping the decoder hashes the keys still waiting (three steps' worth here).
    drop(deferred);
    let words = batch * (context + steps) * c.num_key_value_heads * c.head_dim / 32;
    for (l, codes) in deferred_codes.iter().enumerate().skip(2) {
        let each = read_u32(&client, each_step.key_codes(l).unwrap().clone(), words);
        let deferred = read_u32(&client, codes.clone(), words);
        assert_eq!(deferred, each, "layer {l}: codes differ");
    }
    // The new keys were hashed: their codes differ from the random ones the cache started with.
    let fresh = read_u32(
        &client,
        random_codes(&client, &c, (batch, context + steps), 1)[2].clone(),
        words,
    );
    let coded = read_u32(&client, deferred_codes[2].clone(), words);
    assert_ne!(coded, fresh, "no key was hashed");
}
