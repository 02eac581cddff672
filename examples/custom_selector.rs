//! Your own selector, end to end on the CPU: decide which cached keys a query attends to, score
//! that choice against the oracle with the retrieval evaluator (it prints the JSON rows that
//! `spotlight eval retrieval` writes), and decode with it. `cargo run --example custom_selector`.

use std::sync::Arc;

use burn::backend::NdArray;
use burn::tensor::{backend::Backend, Tensor};
use spotlight::cli::assets;
use spotlight::kernels::Budget;
use spotlight::llama::{generate, Checkpoint, GenerateConfig, KeySelector, SelectRows, Selection};
use spotlight::train::quality::{evaluate_layer, Method};

/// Ranks keys by q·k over the first quarter of the head dimensions: a quarter of the key bytes.
#[derive(Debug)]
struct QuarterDot;

impl<B: Backend> KeySelector<B> for QuarterDot {
    fn name(&self) -> String {
        "quarter-dot".into()
    }
    /// q [batch, kv_heads, rows, d] against keys [batch, kv_heads, n, d] → [.., rows, n].
    fn scores(
        &self,
        _: usize,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        _: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        let quarter = q.dims()[3] / 4;
        q.narrow(3, 0, quarter)
            .matmul(k.narrow(3, 0, quarter).swap_dims(2, 3))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    assets::ensure(&assets::SMOLLM2, &mut |m| eprintln!("{m}"))?;
    assets::ensure(&assets::MOBY_DICK, &mut |m| eprintln!("{m}"))?;
    let checkpoint = Checkpoint::open(&assets::default_model_path())?;
    let (config, tokenizer) = (checkpoint.config()?, checkpoint.tokenizer()?);
    let model = checkpoint.load::<NdArray>(&config, 1024, &Default::default())?;
    let tokens = tokenizer.encode(&std::fs::read_to_string(assets::moby_dick_path())?, false)?;
    let window = &tokens[10_000..10_768];

    // Retrieval quality in layer 14 at a 2% budget, beside the exact top-k of q·k (bf16 keys:
    // a quarter of d at 2 bytes is d / 2 bytes per KV head).
    let selector: Arc<dyn KeySelector<NdArray>> = Arc::new(QuarterDot);
    let methods = [
        Method::Oracle { group: false },
        Method::Selector {
            selector: selector.clone(),
            group: false,
            bytes_per_token: (config.num_key_value_heads * config.head_dim / 2) as f64,
        },
    ];
    let qk = model.queries_and_keys(window)?;
    let positions: Vec<usize> = (512..768).step_by(8).collect();
    for row in evaluate_layer(14, &qk[14], &positions, &methods, &[0.02], false, &[]) {
        println!("{}", serde_json::to_string(&row)?);
    }

    // Decoding with it: each new token attends to sink + window + 2% of the cache by its scores.
    let selection = Selection::new(selector, Budget::default(), SelectRows::Decode);
    let config = GenerateConfig {
        max_tokens: 12,
        sampling: spotlight::llama::Sampling::Greedy,
        repetition_penalty: 1.0,
        seed: 0,
        stop_ids: tokenizer.stop_ids.clone(),
        fused_decode: false,
        attention_kernels: false,
        cuda_graphs: spotlight::llama::fast::GraphMode::Off,
    };
    let prompt = [window[..600].to_vec()];
    let (out, stats) = generate(&model, &prompt, &config, Some(&selection), |_, _| Ok(()))?;
    println!("{:?}", tokenizer.decode(&out[0])?);
    let share = 100.0 * stats.kv_read_share;
    eprintln!("decode read {share:.1}% of the K/V rows");
    Ok(())
}
