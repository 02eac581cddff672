//! Checks on the REAL SmolLM2-135M-Instruct weights (fetched into $SPOTLIGHT_HOME on first use):
//! tokenizer reference ids, the greedy " Paris" continuation, and cpu/wgpu agreement.

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::backend::{ndarray::NdArrayDevice, wgpu::WgpuDevice, NdArray, Wgpu};
use spotlight::cli::{assets, model_args};
use spotlight::llama::LlamaBackend;
use spotlight::llama::{generate, perplexity, GenerateConfig, Sampling};

const PROMPT: &str = "The capital of France is";

fn model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        assets::ensure(&assets::SMOLLM2, &mut |m| eprintln!("{m}"))
            .expect("the default model can be fetched");
        assets::ensure(&assets::MOBY_DICK, &mut |m| eprintln!("{m}"))
            .expect("Moby-Dick can be fetched");
        assets::default_model_path()
    })
    .clone()
}

fn load<B: LlamaBackend>(device: &B::Device) -> model_args::Loaded<B> {
    model_args::load::<B>(&model_path(), Some(1024), device).expect("real model loads")
}

/// Last-position logits of the prompt and 8 greedy tokens.
fn run<B: LlamaBackend>(device: &B::Device) -> (Vec<f32>, Vec<u32>) {
    let m = load::<B>(device);
    let ids = m.tokenizer.encode(PROMPT, true).unwrap();
    let mut cache = m.model.new_cache(1, ids.len()).unwrap();
    let logits = m
        .model
        .forward_last(std::slice::from_ref(&ids), &mut cache)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let config = GenerateConfig {
        max_tokens: 8,
        sampling: Sampling::Greedy,
        repetition_penalty: 1.0,
        seed: 0,
        stop_ids: vec![],
        fused_decode: true,
        cuda_graphs: spotlight_llama::fast::GraphMode::Off,
        attention_kernels: true,
    };
    let (tokens, _) = generate(&m.model, &[ids], &config, None, |_, _| Ok(())).unwrap();
    (logits, tokens.into_iter().next().unwrap())
}

fn wgpu() -> WgpuDevice {
    WgpuDevice::DefaultDevice
}

#[test]
fn prompt_tokenizes_like_the_reference() {
    let m = load::<NdArray<f32>>(&NdArrayDevice::Cpu);
    assert_eq!(
        m.tokenizer.encode(PROMPT, true).unwrap(),
        vec![504, 3575, 282, 4649, 314]
    );
    // Digits are split one by one (the smollm pre-tokenizer), and decoding inverts encoding.
    let text = "In 1851, Melville wrote 'Moby-Dick' — 635 pages.\n";
    let ids = m.tokenizer.encode(text, true).unwrap();
    assert_eq!(m.tokenizer.decode(&ids).unwrap(), text);
    let digits: Vec<u32> = "1851"
        .chars()
        .map(|c| m.tokenizer.encode(&c.to_string(), true).unwrap()[0])
        .collect();
    assert!(
        ids.windows(4).any(|w| w == digits.as_slice()),
        "digits must be single tokens: {ids:?}"
    );
    assert_eq!(
        m.tokenizer.stop_ids,
        vec![0, 2],
        "<|endoftext|> and <|im_end|>"
    );
}

#[test]
fn greedy_continuation_is_paris_on_cpu() {
    let m = load::<NdArray<f32>>(&NdArrayDevice::Cpu);
    let (_, tokens) = run::<NdArray<f32>>(&NdArrayDevice::Cpu);
    let text = m.tokenizer.decode(&tokens).unwrap();
    assert!(text.starts_with(" Paris"), "continuation: {text:?}");
}

#[test]
fn cpu_and_wgpu_agree() {
    let (cpu_logits, cpu_tokens) = run::<NdArray<f32>>(&NdArrayDevice::Cpu);
    let (gpu_logits, gpu_tokens) = run::<Wgpu<f32, i32>>(&wgpu());
    let scale = cpu_logits.iter().fold(0f32, |m, x| m.max(x.abs()));
    let worst = cpu_logits
        .iter()
        .zip(&gpu_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // f32 on both; 1e-3 of the largest logit leaves room for different summation orders only.
    assert!(
        worst <= 1e-3 * scale,
        "max |cpu − wgpu| = {worst}, largest logit {scale}"
    );
    assert_eq!(cpu_tokens, gpu_tokens);
}

#[test]
fn perplexity_on_moby_dick_agrees_across_backends() {
    let text = std::fs::read_to_string({
        model_path();
        assets::moby_dick_path()
    })
    .unwrap();
    let window = 512;
    let ppl = |tokens: &[u32], which: &str| -> f64 {
        match which {
            "cpu" => perplexity::perplexity(
                &load::<NdArray<f32>>(&NdArrayDevice::Cpu).model,
                tokens,
                128,
            )
            .unwrap(),
            _ => {
                perplexity::perplexity(&load::<Wgpu<f32, i32>>(&wgpu()).model, tokens, 128).unwrap()
            }
        }
    };
    let m = load::<NdArray<f32>>(&NdArrayDevice::Cpu);
    let tokens = m.tokenizer.encode(&text, true).unwrap();
    let cpu = ppl(&tokens[..window], "cpu");
    let gpu = ppl(&tokens[..window], "wgpu");
    assert!(
        cpu.is_finite() && cpu > 1.0 && cpu < 200.0,
        "cpu perplexity {cpu}"
    );
    assert!((cpu - gpu).abs() <= 0.005 * cpu, "cpu {cpu} vs wgpu {gpu}");
}
