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
        assert_eq!(decoder.launches(), 1 + 3 * 9 + 2, "launches per step");
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
