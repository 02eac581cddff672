//! Decode steps replayed from CUDA graphs against the same steps launched plainly, on CUDA: two
//! decoders built alike (SYNTHETIC bf16 weights and caches from one seed; the REAL SmolLM2 when
//! `SPOTLIGHT_GGUF` names its file), stepped with the same greedy tokens, their logits compared
//! every step. Ragged batches of 1, 4 and 16, dense and Spotlight, lengths that cross span
//! boundaries (a new graph) and steps that hash the whole key ring (a graph of their own). Also:
//! a recording that holds a copy from host memory is refused.
//!
//! It needs an NVIDIA GPU, so it runs only with SPOTLIGHT_CUDA_TESTS=1; elsewhere it says it was
//! skipped. `scripts/gpu/decode.sh` runs this test binary on the H200.

use burn::backend::cuda::CudaDevice;
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::cubecl::Runtime;
use half::bf16;
use spotlight_kernels::copy::copy;
use spotlight_kernels::device::upload_u32;
use spotlight_kernels::Budget;
use spotlight_llama::fast::{
    random_codes, record_once, span_of, Decoder, FastDecode, GraphMode, GraphState, SparseDecode,
    StepRow,
};
use spotlight_llama::LlamaConfig;

fn enabled() -> bool {
    let on = std::env::var("SPOTLIGHT_CUDA_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set SPOTLIGHT_CUDA_TESTS=1 on a machine with an NVIDIA GPU");
    }
    on
}

/// Largest difference relative to the largest plain logit.
fn relative_diff(graph: &[f32], plain: &[f32]) -> f64 {
    let scale = plain.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6) as f64;
    let diff = graph
        .iter()
        .zip(plain)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    diff as f64 / scale
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Steps `plain` and `graphs` together for `steps` greedy tokens (the plain decoder's choice
/// feeds both) and checks every step's logits; returns the graph decoder's state.
fn step_both(
    plain: &mut dyn FastDecode,
    graphs: &mut dyn FastDecode,
    vocab: usize,
    steps: usize,
    what: &str,
) -> GraphState {
    let batch = plain.lens().len();
    let mut tokens: Vec<u32> = (0..batch as u32)
        .map(|b| (7 + 31 * b) % vocab as u32)
        .collect();
    let mut worst = 0.0f64;
    for step in 0..steps {
        let rows: Vec<StepRow> = tokens
            .iter()
            .enumerate()
            .map(|(seq, &token)| StepRow { seq, token })
            .collect();
        let a = plain.step(&rows).unwrap();
        let b = graphs.step(&rows).unwrap();
        let diff = relative_diff(&b, &a);
        worst = worst.max(diff);
        assert!(
            diff <= 1e-5,
            "{what}: step {step}: logits differ by {diff:e}"
        );
        for (r, t) in tokens.iter_mut().enumerate() {
            *t = argmax(&a[r * vocab..(r + 1) * vocab]);
        }
        assert_eq!(plain.lens(), graphs.lens(), "{what}: step {step}");
        assert_eq!(plain.launches(), graphs.launches(), "{what}: step {step}");
        assert_eq!(
            plain.read_share(),
            graphs.read_share(),
            "{what}: step {step}"
        );
        let greedy_graph: Vec<u32> = (0..batch)
            .map(|r| argmax(&b[r * vocab..(r + 1) * vocab]))
            .collect();
        assert_eq!(
            greedy_graph, tokens,
            "{what}: step {step}: greedy tokens differ"
        );
    }
    let state = graphs.graph_state();
    eprintln!("{what}: {steps} steps, worst relative logit difference {worst:e}, graphs {state}");
    state
}

/// A SYNTHETIC decoder of `config` over `lens` (ragged) with room for `steps` more tokens.
fn synthetic(
    config: &LlamaConfig,
    lens: &[usize],
    steps: usize,
    budget: Option<Budget>,
) -> Decoder<CudaRuntime, bf16> {
    let device = CudaDevice::default();
    let client = CudaRuntime::client(&device);
    let longest = *lens.iter().max().unwrap();
    let mut d = Decoder::<CudaRuntime, bf16>::synthetic(
        client.clone(),
        config,
        lens.len(),
        longest,
        steps,
        5,
    )
    .unwrap()
    .with_graph_device(&device);
    d.rewind(lens).unwrap();
    if let Some(budget) = budget {
        let s = SparseDecode::synthetic(&client, config, budget, 9).unwrap();
        let codes = random_codes(&client, config, (lens.len(), longest + steps), 1);
        d.set_sparse(Some((s, codes))).unwrap();
    }
    d
}

fn ragged(batch: usize, longest: usize) -> Vec<usize> {
    (0..batch).map(|b| longest - (b * 37) % 200).collect()
}

/// Window 16: the key ring (17 steps) is emptied several times in 90 steps.
const SPOTLIGHT: Budget = Budget {
    fraction: 0.02,
    min_tokens: 20,
    sink: 4,
    window: 16,
};
const STEPS: usize = 90;
/// 300 → 390 crosses the spans 320 and 384.
const LONGEST: usize = 300;

/// One case: graph replays equal plain launches, and graphs were recorded and replayed.
fn check_case(name: &str, preset: &str, batch: usize, budget: Option<Budget>) {
    assert!(span_of(LONGEST) < span_of(LONGEST + STEPS));
    let config = LlamaConfig::preset(preset).unwrap();
    let lens = ragged(batch, LONGEST);
    let what = format!(
        "{name} (SYNTHETIC bf16), batch {batch} {lens:?}, {}",
        if budget.is_some() {
            "Spotlight"
        } else {
            "dense"
        }
    );
    let mut plain = synthetic(&config, &lens, STEPS, budget);
    let mut graphs = synthetic(&config, &lens, STEPS, budget);
    graphs.set_graphs(GraphMode::On).unwrap();
    let state = step_both(&mut plain, &mut graphs, config.vocab_size, STEPS, &what);
    match state {
        GraphState::On { graphs, replays } => {
            assert!(graphs >= 2, "{what}: {graphs} graphs");
            assert!(replays as usize >= STEPS / 2, "{what}: {replays} replays");
        }
        other => panic!("{what}: graphs {other}"),
    }
}

/// The smallest case first (the GPU script runs it alone before the others).
#[test]
fn smollm2_dense_batch_1() {
    if enabled() {
        check_case("SmolLM2-135M shape", "smollm2-135m", 1, None);
    }
}

#[test]
fn smollm2_every_batch_dense_and_spotlight() {
    if !enabled() {
        return;
    }
    for batch in [1, 4, 16] {
        for budget in [None, Some(SPOTLIGHT)] {
            check_case("SmolLM2-135M shape", "smollm2-135m", batch, budget);
        }
    }
}

#[test]
fn llama3_8b_every_batch_dense_and_spotlight() {
    if !enabled() {
        return;
    }
    for batch in [1, 4, 16] {
        for budget in [None, Some(SPOTLIGHT)] {
            check_case("Llama-3-8B shape", "llama3-8b", batch, budget);
        }
    }
}

/// The real SmolLM2 (its GGUF at `SPOTLIGHT_GGUF`): a 1,000-token prompt of real text, then
/// greedy decoding with and without graphs gives the same tokens and logits.
#[test]
fn real_model_graph_replays_equal_plain_launches() {
    use burn::backend::Cuda;
    use spotlight_llama::{Checkpoint, LlamaBackend};
    if !enabled() {
        return;
    }
    let Some(path) = std::env::var_os("SPOTLIGHT_GGUF") else {
        eprintln!("skipped: SPOTLIGHT_GGUF names no model file");
        return;
    };
    type B = Cuda<f32, i32>;
    let device = CudaDevice::default();
    let checkpoint = Checkpoint::open(std::path::Path::new(&path)).unwrap();
    let config = checkpoint.config().unwrap();
    let tokenizer = checkpoint.tokenizer().unwrap();
    let model = checkpoint.load::<B>(&config, 2048, &device).unwrap();
    let text = std::env::var_os("SPOTLIGHT_TEXT")
        .map(|p| std::fs::read_to_string(p).unwrap())
        .unwrap_or_else(|| "Call me Ishmael. ".repeat(200));
    let ids: Vec<u32> = tokenizer.encode(&text, true).unwrap()[..1000].to_vec();
    let decoder = || {
        let mut cache = model.new_cache(1, 2048).unwrap();
        cache.attention_kernels = true;
        model
            .forward_last(std::slice::from_ref(&ids), &mut cache)
            .unwrap();
        B::fast_decoder(&model, &cache)
            .unwrap()
            .expect("the fused decoder runs on CUDA")
    };
    let (mut plain, mut graphs) = (decoder(), decoder());
    plain.set_graphs(GraphMode::Off).unwrap();
    graphs.set_graphs(GraphMode::On).unwrap();
    let state = step_both(
        plain.as_mut(),
        graphs.as_mut(),
        config.vocab_size,
        200,
        "SmolLM2-135M (REAL weights), 1,000-token prompt",
    );
    assert!(matches!(state, GraphState::On { .. }), "graphs {state}");
}

/// A recording that copies from host memory would replay a stale buffer: it is refused, while
/// the same recording of kernels alone replays (the first thing the GPU script runs).
#[test]
fn a_recording_with_a_host_copy_is_refused() {
    if !enabled() {
        return;
    }
    let device = CudaDevice::default();
    let client = CudaRuntime::client(&device);
    let (a, b) = (client.empty(4096), client.empty(4096));
    record_once::<CudaRuntime>(&client, &device, 1, || copy(&client, &a, &b, 1024)).unwrap();
    let err = record_once::<CudaRuntime>(&client, &device, 1, || {
        let fresh = upload_u32(&client, &[1, 2, 3, 4]);
        copy(&client, &fresh, &b, 4);
    })
    .unwrap_err();
    // Refused either way a host copy can show: as a copy node in the graph, or as a capture the
    // driver invalidated when the copy was issued inside it.
    let why = err.to_string();
    assert!(
        why.contains("node") || why.contains("CAPTURE"),
        "refused, but not for the host copy: {why}"
    );
    eprintln!("refused as expected: {why}");
}
