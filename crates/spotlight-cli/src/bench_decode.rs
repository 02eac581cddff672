//! `spotlight bench decode`: whole decode steps of the fused decoder (`spotlight_llama::fast`)
//! on CUDA with SYNTHETIC bf16 weights at an architecture's shape (Llama-3-8B, SmolLM2-135M), the
//! KV cache filled at random on the device to the context length (no prefill), dense attention
//! and Spotlight (random hash, random key codes: the cost is real, the retrieval is not).
//!
//! Per configuration: milliseconds per step (wall clock, logits on the host, median over runs),
//! each part timed alone (weights: norms + projections + head; attention: RoPE/append + attend;
//! retrieval: key and query hashing + selection), the bytes a step must read and the time they
//! take at the copy bandwidth measured in the same run (the floor). `benches/peers/decode_torch.py`
//! adds a PyTorch eager decode of the same shapes.

use std::path::PathBuf;
use std::time::Instant;

use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;
use half::bf16;
use serde::Serialize;
use spotlight_kernels::Budget;
use spotlight_llama::fast::{random_codes, Decoder, GraphMode, SparseDecode, StepParts, StepRow};
use spotlight_llama::LlamaConfig;

use crate::backend::BackendKind;
use crate::bench::{command_output, device_name, git_commit, median, write_report};
use crate::bench_retrieval::copy_gbps;
use crate::error::{CliError, Result};
use crate::generate::CudaGraphs;

#[derive(Debug, Clone, clap::Args)]
pub struct DecodeBenchArgs {
    /// Architectures (SYNTHETIC weights): llama3-8b, smollm2-135m.
    #[arg(long, value_delimiter = ',', default_value = "llama3-8b")]
    pub shapes: Vec<String>,
    /// Tokens already in the cache of every sequence.
    #[arg(long, value_delimiter = ',', default_value = "4096,32768,131072")]
    pub contexts: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub batch: Vec<usize>,
    /// dense and/or spotlight.
    #[arg(long, value_delimiter = ',', default_value = "dense,spotlight")]
    pub attentions: Vec<String>,
    /// Spotlight budget: share of the cached tokens chosen by score (plus sink 4 and window 64).
    #[arg(long, default_value_t = 0.02)]
    pub budget: f64,
    /// Timed steps per run: a multiple of window + 1 = 65, so each run carries its share of
    /// Spotlight's deferred key hashing (one launch per layer per 65 steps).
    #[arg(long, default_value_t = 65)]
    pub steps: usize,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Skip configurations needing more device memory than this (weights + cache), in GiB.
    #[arg(long, default_value_t = 120.0)]
    pub max_gib: f64,
    /// CUDA graph settings timed side by side (the parts are timed once, with plain launches).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "off,on")]
    pub cuda_graphs: Vec<CudaGraphs>,
    /// Output JSON file.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Shape {
    name: String,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    tied: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    shape: String,
    synthetic: bool,
    dtype: &'static str,
    context: usize,
    batch: usize,
    attention: String,
    /// Requested CUDA graph setting, and what the decoder did ("on (4 graphs, 390 steps
    /// replayed)", "off", or why recording was refused).
    cuda_graphs: CudaGraphs,
    graphs: String,
    /// Set when the configuration was not run (memory).
    skipped: Option<String>,
    ms_per_step: f64,
    tok_s: f64,
    /// Host time of one step's launch call (no wait for the device), mean over --steps steps
    /// of the last run: what launching costs the host with and without graphs.
    host_us_per_step: f64,
    /// Mean over a run's steps (Spotlight hashes keys on one step in 65).
    launches_per_step: f64,
    /// Each part timed alone over the same steps (ms per step).
    weights_ms: f64,
    attention_ms: f64,
    retrieval_ms: f64,
    kv_read_share: f64,
    /// Bytes a step must read: weights once, the K/V rows attended, key codes scored.
    bytes_per_step: f64,
    /// Those bytes at the measured copy bandwidth, and the step time over it.
    floor_ms: f64,
    floor_ratio: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    command: String,
    device: String,
    commit: String,
    date: String,
    copy_gbps: f64,
    /// A one-word copy launched 2000 times back to back: host time per launch until all are
    /// queued, and wall time per launch until the device finished them.
    launch_host_us: f64,
    launch_wall_us: f64,
    /// Timed steps per run and runs (the PyTorch peer times the same).
    steps: usize,
    runs: usize,
    note: &'static str,
    shapes: Vec<Shape>,
    rows: Vec<Row>,
}

const BF16: usize = 2;

pub fn run(args: DecodeBenchArgs) -> Result<()> {
    if args.runs == 0 || args.steps == 0 || args.batch.contains(&0) || args.contexts.contains(&0) {
        return Err(CliError::Usage(
            "--runs, --steps, batch sizes and contexts must be ≥ 1".into(),
        ));
    }
    if let Some(a) = args
        .attentions
        .iter()
        .find(|a| !matches!(a.as_str(), "dense" | "spotlight"))
    {
        return Err(CliError::Usage(format!(
            "--attentions: {a:?} is not dense or spotlight"
        )));
    }
    let budget = Budget {
        fraction: args.budget,
        ..Budget::default()
    };
    budget
        .validate()
        .map_err(|e| CliError::Usage(format!("--budget: {e}")))?;
    let mut shapes = Vec::new();
    for name in &args.shapes {
        let c = LlamaConfig::preset(name).ok_or_else(|| {
            CliError::Usage(format!(
                "--shapes: unknown architecture {name:?} (llama3-8b, smollm2-135m)"
            ))
        })?;
        shapes.push((name.clone(), c));
    }
    crate::backend::cuda_ready()
        .map_err(|why| CliError::Backend(format!("--backend cuda is not usable here: {why}")))?;
    let client = CudaRuntime::client(&Default::default());
    let gbps = copy_gbps(&client, 1024, 5);
    eprintln!("copy: {gbps:.0} GB/s (read + write)");
    let (launch_host_us, launch_wall_us) = launch_cost(&client);
    eprintln!("launch: {launch_host_us:.1} µs host, {launch_wall_us:.1} µs wall per launch");
    let mut rows = Vec::new();
    for (name, c) in &shapes {
        for &context in &args.contexts {
            for &batch in &args.batch {
                rows.extend(bench_config(
                    &client,
                    &args,
                    name,
                    c,
                    (context, batch),
                    budget,
                    gbps,
                )?);
                client.memory_cleanup();
            }
        }
    }
    let report = Report {
        bench: "decode",
        command: crate::invocation(),
        device: device_name(BackendKind::Cuda),
        commit: git_commit(),
        date: command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default(),
        copy_gbps: gbps,
        launch_host_us,
        launch_wall_us,
        steps: args.steps,
        runs: args.runs,
        note: "SYNTHETIC bf16 weights and random KV cache (and random hash and key codes for spotlight); ms per step = wall clock of a step with the logits read to the host, mean over --steps (65 by default: one deferred key-hashing launch per layer per run, as in generation), median over --runs; parts timed alone the same way; floor = bytes_per_step at the copy bandwidth",
        shapes: shapes
            .iter()
            .map(|(name, c)| Shape {
                name: name.clone(),
                hidden: c.hidden_size,
                intermediate: c.intermediate_size,
                layers: c.num_hidden_layers,
                q_heads: c.num_attention_heads,
                kv_heads: c.num_key_value_heads,
                head_dim: c.head_dim,
                vocab: c.vocab_size,
                tied: c.tie_word_embeddings,
            })
            .collect(),
        rows,
    };
    write_report(&args.out, &report)
}

/// Per-launch cost of the smallest kernel: (host µs to queue, wall µs to finish), median of 5.
fn launch_cost(client: &ComputeClient<CudaRuntime>) -> (f64, f64) {
    const LAUNCHES: usize = 2000;
    let (src, dst) = (client.empty(4), client.empty(4));
    spotlight_kernels::copy::copy(client, &src, &dst, 1);
    let (mut host, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let _ = cubecl::future::block_on(client.sync());
        let t = Instant::now();
        for _ in 0..LAUNCHES {
            spotlight_kernels::copy::copy(client, &src, &dst, 1);
        }
        host.push(t.elapsed().as_secs_f64() * 1e6 / LAUNCHES as f64);
        let _ = cubecl::future::block_on(client.sync());
        wall.push(t.elapsed().as_secs_f64() * 1e6 / LAUNCHES as f64);
    }
    (median(host), median(wall))
}

/// Bytes of the K and V cache of `tokens` tokens per sequence (all layers).
fn kv_bytes(c: &LlamaConfig, batch: usize, tokens: usize) -> f64 {
    (2 * c.num_hidden_layers * batch * c.num_key_value_heads * tokens * c.head_dim * BF16) as f64
}

fn code_bytes(c: &LlamaConfig, batch: usize, tokens: usize) -> f64 {
    (c.num_hidden_layers * batch * c.num_key_value_heads * tokens * c.head_dim / 8) as f64
}

#[allow(clippy::too_many_arguments)]
fn bench_config(
    client: &ComputeClient<CudaRuntime>,
    args: &DecodeBenchArgs,
    name: &str,
    c: &LlamaConfig,
    (context, batch): (usize, usize),
    budget: Budget,
    gbps: f64,
) -> Result<Vec<Row>> {
    let cap = context + args.steps + 1;
    let weight_bytes = {
        let embed = if c.tie_word_embeddings {
            0
        } else {
            c.vocab_size * c.hidden_size * BF16
        };
        spotlight_llama::fast::DecoderWeights::bytes(c, BF16) + embed
    };
    let spotlight = args.attentions.iter().any(|a| a == "spotlight");
    let needed = weight_bytes as f64
        + kv_bytes(c, batch, cap)
        + if spotlight {
            code_bytes(c, batch, cap)
        } else {
            0.0
        };
    let gib = needed / (1u64 << 30) as f64;
    let row = |attention: &str| Row {
        shape: name.into(),
        synthetic: true,
        dtype: "bf16",
        context,
        batch,
        attention: attention.into(),
        cuda_graphs: CudaGraphs::Off,
        graphs: String::new(),
        skipped: None,
        ms_per_step: f64::NAN,
        tok_s: f64::NAN,
        host_us_per_step: f64::NAN,
        launches_per_step: 0.0,
        weights_ms: f64::NAN,
        attention_ms: f64::NAN,
        retrieval_ms: f64::NAN,
        kv_read_share: 1.0,
        bytes_per_step: f64::NAN,
        floor_ms: f64::NAN,
        floor_ratio: f64::NAN,
    };
    if gib > args.max_gib {
        eprintln!("{name} context {context} batch {batch}: skipped, needs {gib:.0} GiB");
        return Ok(args
            .attentions
            .iter()
            .map(|a| Row {
                skipped: Some(format!("needs {gib:.0} GiB > --max-gib {}", args.max_gib)),
                ..row(a)
            })
            .collect());
    }
    let invalid = |e: spotlight_llama::LlamaError| CliError::Backend(e.to_string());
    let mut decoder = Decoder::<CudaRuntime, bf16>::synthetic(
        client.clone(),
        c,
        batch,
        context,
        cap - context,
        7,
    )
    .map_err(invalid)?
    .with_graph_device(&Default::default());
    let steps: Vec<StepRow> = (0..batch)
        .map(|seq| StepRow {
            seq,
            token: (seq * 7919 % c.vocab_size) as u32,
        })
        .collect();
    let start = vec![context; batch];
    // Mean ms per step of `parts` over args.steps steps from `context`, median over runs, and
    // the mean launches per step of the last run (a deferred key-hashing step launches more).
    let time = |decoder: &mut Decoder<CudaRuntime, bf16>, parts: StepParts| -> Result<(f64, f64)> {
        let mut per_run = Vec::new();
        let mut launches = 0;
        for run in 0..=args.runs {
            // Rewinding hashes the keys still waiting for their codes: done before the clock.
            decoder.rewind(&start).map_err(invalid)?;
            decoder.sync().map_err(invalid)?;
            let t = Instant::now();
            launches = 0;
            for _ in 0..args.steps {
                if parts == StepParts::ALL {
                    // sync: the logits to the host, as generation needs them.
                    spotlight_llama::fast::FastDecode::step(decoder, &steps).map_err(invalid)?;
                } else {
                    decoder.launch_parts(&steps, parts).map_err(invalid)?;
                }
                launches += spotlight_llama::fast::FastDecode::launches(decoder);
            }
            decoder.sync().map_err(invalid)?;
            if run > 0 {
                per_run.push(t.elapsed().as_secs_f64() * 1e3 / args.steps as f64);
            }
        }
        Ok((median(per_run), launches as f64 / args.steps as f64))
    };
    // Host time of each step's launch call alone (the device catches up at the end).
    let host_time = |decoder: &mut Decoder<CudaRuntime, bf16>| -> Result<f64> {
        decoder.rewind(&start).map_err(invalid)?;
        decoder.sync().map_err(invalid)?;
        let mut host = 0.0;
        for _ in 0..args.steps {
            let t = Instant::now();
            decoder.launch_step(&steps).map_err(invalid)?;
            host += t.elapsed().as_secs_f64();
        }
        decoder.sync().map_err(invalid)?;
        Ok(host * 1e6 / args.steps as f64)
    };
    let only = |weights, attention, retrieval| StepParts {
        weights,
        attention,
        retrieval,
    };
    let mut out = Vec::new();
    for attention in &args.attentions {
        if attention == "spotlight" {
            let sparse = SparseDecode::synthetic(client, c, budget, 11)
                .map_err(|e| CliError::Backend(e.to_string()))?;
            decoder
                .set_sparse(Some((sparse, random_codes(client, c, (batch, cap), 13))))
                .map_err(invalid)?;
        } else {
            decoder.set_sparse(None).map_err(invalid)?;
        }
        decoder.set_graphs(GraphMode::Off).map_err(invalid)?;
        let share = {
            decoder.rewind(&start).map_err(invalid)?;
            spotlight_llama::fast::FastDecode::step(&mut decoder, &steps).map_err(invalid)?;
            decoder.read_share()
        };
        let weights_ms = time(&mut decoder, only(true, false, false))?.0;
        let attention_ms = time(&mut decoder, only(false, true, false))?.0;
        let retrieval_ms = if attention == "spotlight" {
            time(&mut decoder, only(false, false, true))?.0
        } else {
            0.0
        };
        let kv = kv_bytes(c, batch, context + 1) * share;
        let codes = if attention == "spotlight" {
            code_bytes(c, batch, context + 1)
        } else {
            0.0
        };
        let bytes = weight_bytes as f64 + kv + codes;
        let floor_ms = bytes / (gbps * 1e9) * 1e3;
        for &graphs in &args.cuda_graphs {
            decoder.set_graphs(graphs.into()).map_err(invalid)?;
            let (ms, launches) = time(&mut decoder, StepParts::ALL)?;
            let host_us = host_time(&mut decoder)?;
            let state = decoder.graph_state().to_string();
            eprintln!(
                "{name} {attention} context {context} batch {batch} graphs {state}: {ms:.2} ms/step ({:.0} tok/s, host {host_us:.0} µs), weights {weights_ms:.2}, attention {attention_ms:.2}, retrieval {retrieval_ms:.2} ms; floor {floor_ms:.2} ms; {launches:.1} kernels",
                batch as f64 / ms * 1e3
            );
            out.push(Row {
                cuda_graphs: graphs,
                graphs: state,
                ms_per_step: ms,
                tok_s: batch as f64 / ms * 1e3,
                host_us_per_step: host_us,
                launches_per_step: launches,
                weights_ms,
                attention_ms,
                retrieval_ms,
                kv_read_share: share,
                bytes_per_step: bytes,
                floor_ms,
                floor_ratio: floor_ms / ms,
                ..row(attention)
            });
        }
    }
    Ok(out)
}
