//! `spotlight bench generate`: prefill and decode throughput, written as JSON under
//! benches/results/. Medians over timed runs after a warm-up run (kernel compilation, autotune).

use std::path::PathBuf;

use serde::Serialize;
use spotlight_llama::{generate, GenerateConfig, Sampling, SelectRows};

use crate::attention_args::{self, AttentionKind, SelectorArgs};
use crate::backend::{self, BackendKind, OnBackend, SpotlightBackend};
use crate::error::{CliError, Result};
use crate::generate::{CudaGraphs, DecodePath};
use crate::model_args::{self, ModelArgs};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Prefill and decode tokens/s of dense generation.
    Generate(GenerateBenchArgs),
    /// Retrieval kernels (hash, score+select, sparse and dense decode attention) per stage.
    Retrieval(crate::bench_retrieval::RetrievalBenchArgs),
    /// Decode linear kernel (bf16 weights, 1–16 rows) at Llama-3-8B and SmolLM2 shapes (CUDA).
    Linear(crate::bench_linear::LinearBenchArgs),
    /// Hash-training step time on synthetic q/k of a model's shape.
    Train(crate::bench_train::TrainBenchArgs),
    /// Fused decode steps (dense and Spotlight) at Llama-3-8B / SmolLM2 shapes, SYNTHETIC bf16
    /// weights, cache filled at random to each context (CUDA).
    Decode(crate::bench_decode::DecodeBenchArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batch: Vec<usize>,
    /// Prompt lengths in tokens (taken from Moby-Dick).
    #[arg(long, value_delimiter = ',', default_value = "512")]
    pub prompt_tokens: Vec<usize>,
    /// New tokens per sequence.
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// Timed runs per configuration.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Output JSON file.
    #[arg(long)]
    pub out: PathBuf,
    /// Attentions timed (each decode step of a sparse one reads the budget of the cache).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "dense")]
    pub attentions: Vec<AttentionKind>,
    /// Budget of the sparse attentions (share of the cached tokens chosen by score).
    #[arg(long, default_value_t = 0.02)]
    pub budget: f64,
    #[command(flatten)]
    pub selector: SelectorArgs,
    /// Decode paths timed (fused applies to dense attention on cube backends).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fused")]
    pub decode_paths: Vec<DecodePath>,
    /// CUDA graph settings timed on the fused path (e.g. `off,on`, side by side).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "off")]
    pub cuda_graphs: Vec<CudaGraphs>,
}

#[derive(Debug, Serialize)]
struct Row {
    attention: String,
    /// Requested decode path; `fused_launches_per_step` is null when the step ran on tensor ops.
    decode_path: DecodePath,
    fused_launches_per_step: Option<usize>,
    /// Requested CUDA graph setting, and what the decoder did (e.g. "on (3 graphs, 62 steps
    /// replayed)"; null on tensor ops).
    cuda_graphs: CudaGraphs,
    graphs: Option<String>,
    /// Mean share of the cached K/V rows a decode step read (all layers).
    kv_read_share: f64,
    batch: usize,
    prompt_tokens: usize,
    new_tokens: usize,
    runs: usize,
    prefill_s_median: f64,
    prefill_tok_s: f64,
    /// Arithmetic of one sequence's prefill ([`prefill_flops`]) × batch, per second.
    prefill_tflop_s: f64,
    /// Share of the prefill FLOPs in attention (q·k and p·V over the causal keys).
    prefill_attention_flop_share: f64,
    decode_s_median: f64,
    decode_tok_s: f64,
    decode_ms_per_step: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    command: String,
    device: String,
    backend: String,
    commit: String,
    date: String,
    model: String,
    dtype: &'static str,
    note: &'static str,
    rows: Vec<Row>,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    let args = match cmd {
        BenchCommand::Generate(args) => args,
        BenchCommand::Retrieval(args) => return crate::bench_retrieval::run(args),
        BenchCommand::Linear(args) => return crate::bench_linear::run(args),
        BenchCommand::Train(args) => return crate::bench_train::run(args),
        BenchCommand::Decode(args) => return crate::bench_decode::run(args),
    };
    if args.runs == 0 || args.new_tokens < 2 || args.batch.contains(&0) {
        return Err(CliError::Usage(
            "--runs ≥ 1, --new-tokens ≥ 2 and batch sizes ≥ 1 are required".into(),
        ));
    }
    crate::assets::ensure(&crate::assets::MOBY_DICK, &mut |m| eprintln!("{m}"))?;
    let path = args.model.path()?;
    let report = backend::run(
        args.model.backend,
        Job {
            args: args.clone(),
            path,
        },
    )?;
    write_report(&args.out, &report)
}

/// Writes a benchmark report as pretty JSON, creating the folder if needed.
pub(crate) fn write_report(path: &std::path::Path, report: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(report).expect("plain data serialises");
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(path, json + "\n")
        .map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

struct Job {
    args: GenerateBenchArgs,
    path: PathBuf,
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl OnBackend for Job {
    type Output = Report;
    fn run<B: SpotlightBackend>(self, device: B::Device, backend: BackendKind) -> Result<Report> {
        let a = &self.args;
        let model_id = crate::model_args::ModelId::of(&self.path);
        for &kind in &a.attentions {
            a.selector.check(kind, &model_id)?;
        }
        let budget = a.selector.budget(a.budget)?;
        let hash = if a.attentions.contains(&AttentionKind::Spotlight) {
            a.selector
                .hash_path(&model_id)
                .map(|p| spotlight_train::HashFile::load(&p))
                .transpose()?
        } else {
            None
        };
        let loaded = model_args::load::<B>(&self.path, None, &device)?;
        let mut selections = Vec::new();
        for &kind in &a.attentions {
            let selection = a
                .selector
                .method(kind, hash.clone(), &model_id, &loaded.config)?
                .map(|m| {
                    attention_args::selection::<B>(
                        &m,
                        budget,
                        SelectRows::Decode,
                        &loaded.config,
                        &device,
                    )
                    .map(|s| spotlight_llama::Selection {
                        dense_below: a.selector.dense_below.unwrap_or(0),
                        ..s
                    })
                })
                .transpose()?;
            let name = selection
                .as_ref()
                .map_or("dense".to_string(), |s| s.selector.name());
            selections.push((name, selection));
        }
        let text = std::fs::read_to_string(crate::assets::moby_dick_path())
            .map_err(|e| CliError::Io(e.to_string()))?;
        let corpus = loaded.tokenizer.encode(&text, false)?;
        // Greedy, no stop tokens: every run generates exactly new_tokens per sequence.
        let mut rows = Vec::new();
        let variants: Vec<(DecodePath, CudaGraphs)> = a
            .decode_paths
            .iter()
            .flat_map(|&p| match p {
                DecodePath::Fused => a.cuda_graphs.iter().map(|&g| (p, g)).collect(),
                DecodePath::Tensor => vec![(p, CudaGraphs::Off)],
            })
            .collect();
        for (&(path, graphs), (attention, selection)) in variants
            .iter()
            .flat_map(|p| selections.iter().map(move |s| (p, s)))
        {
            let config = GenerateConfig {
                max_tokens: a.new_tokens,
                sampling: Sampling::Greedy,
                repetition_penalty: 1.0,
                seed: 0,
                stop_ids: vec![],
                fused_decode: path == DecodePath::Fused,
                attention_kernels: path == DecodePath::Fused,
                cuda_graphs: graphs.into(),
            };
            for &len in &a.prompt_tokens {
                for &batch in &a.batch {
                    // Different text per sequence, so batching cannot share work by accident.
                    let prompts: Vec<Vec<u32>> = (0..batch)
                        .map(|b| {
                            let s = (b * 7919 * 13) % corpus.len().saturating_sub(len).max(1);
                            corpus[s..s + len].to_vec()
                        })
                        .collect();
                    let mut prefill = Vec::new();
                    let mut decode = Vec::new();
                    let mut share = 1.0;
                    let mut launches = None;
                    let mut graph_state = None;
                    for run in 0..=a.runs {
                        let (_, stats) = generate(
                            &loaded.model,
                            &prompts,
                            &config,
                            selection.as_ref(),
                            |_, _| Ok(()),
                        )?;
                        if run > 0 {
                            prefill.push(stats.prefill_secs);
                            decode.push(stats.decode_secs);
                        }
                        share = stats.kv_read_share;
                        launches = stats.fused_launches;
                        graph_state = stats.graphs.as_ref().map(|g| g.to_string());
                        eprintln!(
                        "  {attention} ({path:?}, graphs {graphs:?}) batch {batch} prompt {len}: run {run}: prefill {:.3} s, decode {:.3} s",
                        stats.prefill_secs, stats.decode_secs
                    );
                    }
                    let (p, d) = (median(prefill), median(decode));
                    let steps = (a.new_tokens - 1) as f64;
                    let (proj, attn) = prefill_flops(&loaded.model.config, len);
                    rows.push(Row {
                        attention: attention.clone(),
                        decode_path: path,
                        fused_launches_per_step: launches,
                        cuda_graphs: graphs,
                        graphs: graph_state.clone(),
                        kv_read_share: share,
                        batch,
                        prompt_tokens: len,
                        new_tokens: a.new_tokens,
                        runs: a.runs,
                        prefill_s_median: p,
                        prefill_tok_s: (batch * len) as f64 / p,
                        prefill_tflop_s: batch as f64 * (proj + attn) / p / 1e12,
                        prefill_attention_flop_share: attn / (proj + attn),
                        decode_s_median: d,
                        decode_tok_s: batch as f64 * steps / d,
                        decode_ms_per_step: d / steps * 1e3,
                    });
                }
            }
        }
        Ok(Report {
            bench: "generate",
            command: crate::invocation(),
            device: device_name(backend),
            backend: backend.name().into(),
            commit: git_commit(),
            date: command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default(),
            model: self.path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
            dtype: "f32 (weights dequantised from GGUF)",
            note: "prefill = prompt processing until the first token is on the host; decode excludes it",
            rows,
        })
    }
}

/// FLOPs of one sequence's prefill of `len` tokens: (projections, attention). Projections: 2 per
/// weight per token (q, k, v, o, gate, up, down) plus the LM head for the last token; attention:
/// q·k and p·V, 4·heads·d per visible key, causal (token t sees t + 1 keys).
pub(crate) fn prefill_flops(c: &spotlight_llama::LlamaConfig, len: usize) -> (f64, f64) {
    let (h, d, n) = (c.hidden_size as f64, c.head_dim as f64, len as f64);
    let q_out = (c.num_attention_heads * c.head_dim) as f64;
    let kv_out = (c.num_key_value_heads * c.head_dim) as f64;
    let per_layer = h * (2.0 * q_out + 2.0 * kv_out) + 3.0 * h * c.intermediate_size as f64;
    let layers = c.num_hidden_layers as f64;
    let proj = 2.0 * per_layer * layers * n + 2.0 * h * c.vocab_size as f64;
    let keys = n * (n + 1.0) / 2.0;
    let attn = 4.0 * c.num_attention_heads as f64 * d * keys * layers;
    (proj, attn)
}

pub(crate) fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit results belong to: `SPOTLIGHT_COMMIT` (set by the GPU scripts, whose copy of the
/// tree may not carry the history), else `git rev-parse`.
pub(crate) fn git_commit() -> String {
    std::env::var("SPOTLIGHT_COMMIT")
        .ok()
        .or_else(|| command_output("git", &["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn device_name(backend: BackendKind) -> String {
    match backend {
        BackendKind::Cuda => {
            command_output("nvidia-smi", &["--query-gpu=name", "--format=csv,noheader"])
                .and_then(|s| s.lines().next().map(String::from))
                .unwrap_or_else(|| "cuda device".into())
        }
        _ => std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .map(|cpu| {
                format!(
                    "{cpu}, {} threads",
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                )
            })
            .unwrap_or_else(|| "cpu".into()),
    }
}
