//! `spotlight bench train`: hash-training throughput on SYNTHETIC q/k of a model's shape (no model
//! needed): seconds per step for `layers` layers and both layouts, medians after warm-up steps, and
//! sequences/s per layer. `SPOTLIGHT_PROFILE=N` also prints where each step's time goes.

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::{Distribution, Tensor};
use serde::Serialize;
use spotlight_llama::{LayerQk, LlamaConfig};
use spotlight_train::targets::TargetConfig;
use spotlight_train::{Layout, TrainConfig, TrainOps, Trainer};

use crate::backend::{self, BackendKind, OnBackend, SpotlightBackend};
use crate::bench::{git_commit, median, write_report};
use crate::error::Result;

#[derive(Debug, Clone, clap::Args)]
pub struct TrainBenchArgs {
    /// Compute backend [default: the best available].
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Layers trained per step (SmolLM2-135M has 30).
    #[arg(long, default_value_t = 30)]
    pub layers: usize,
    #[arg(long, default_value_t = 9)]
    pub q_heads: usize,
    #[arg(long, default_value_t = 3)]
    pub kv_heads: usize,
    #[arg(long, default_value_t = 64)]
    pub head_dim: usize,
    #[arg(long, default_value_t = 4096)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 1024)]
    pub queries: usize,
    #[arg(long, default_value_t = 1024)]
    pub pairs: usize,
    /// custom: the CubeCL kernels (cube backends) or references (cpu); tensor-ops: the same math
    /// in plain Burn tensor ops [default: the backend's faster one].
    #[arg(long, value_parser = parse_ops)]
    pub ops: Option<TrainOps>,
    /// Untimed steps first (kernel compilation).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    command: String,
    device: String,
    backend: String,
    commit: String,
    date: Option<String>,
    inputs: &'static str,
    layers: usize,
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
    seq_len: usize,
    queries: usize,
    pairs: usize,
    layouts: Vec<Layout>,
    ops: TrainOps,
    step_s: Vec<f64>,
    step_s_median: f64,
    /// One layer, one layout: sequences per second.
    sequences_per_s_per_layer_layout: f64,
}

pub fn parse_ops(s: &str) -> std::result::Result<TrainOps, String> {
    match s {
        "custom" => Ok(TrainOps::Custom),
        "tensor-ops" => Ok(TrainOps::TensorOps),
        _ => Err(format!("unknown ops {s:?} (custom or tensor-ops)")),
    }
}

pub fn run(args: TrainBenchArgs) -> Result<()> {
    backend::run(args.backend, Job(args))
}

struct Job(TrainBenchArgs);

impl OnBackend for Job {
    type Output = ();
    fn run<B: SpotlightBackend>(self, device: B::Device, kind: BackendKind) -> Result<()> {
        let a = self.0;
        let llama =
            LlamaConfig::attention_shape(a.layers, a.q_heads, a.kv_heads, a.head_dim, a.seq_len);
        let config = TrainConfig {
            steps: a.warmup + a.runs,
            seq_len: a.seq_len,
            targets: TargetConfig {
                queries: a.queries,
                pairs: a.pairs,
                ..TargetConfig::default()
            },
            ..TrainConfig::default()
        };
        let layouts = config.layouts.clone();
        let mut trainer = Trainer::<Autodiff<B>>::new(config, "synthetic", &llama, &device)?;
        trainer.ops = a.ops;
        // SPOTLIGHT_PROFILE=N: where each step's time goes, over the first N layers.
        trainer.profile = std::env::var("SPOTLIGHT_PROFILE")
            .ok()
            .and_then(|v| v.parse().ok());
        // Synthetic q/k: standard normal, fresh per step (labelled SYNTHETIC in the report).
        let dist = Distribution::Normal(0.0, 1.0);
        let mut step_s = Vec::new();
        for s in 0..a.warmup + a.runs {
            let qk: Vec<LayerQk<B>> = (0..a.layers)
                .map(|_| LayerQk {
                    q: Tensor::random([a.q_heads, a.seq_len, a.head_dim], dist, &device),
                    k: Tensor::random([a.kv_heads, a.seq_len, a.head_dim], dist, &device),
                })
                .collect();
            let _ = B::sync(&device);
            let t0 = Instant::now();
            trainer.train_step(&qk)?;
            let _ = B::sync(&device);
            let dt = t0.elapsed().as_secs_f64();
            eprintln!("step {s}: {:.3} s", dt);
            if trainer.profile.is_some() {
                let parts: Vec<String> = trainer
                    .profile_ms()
                    .iter()
                    .map(|(n, ms)| format!("{n} {ms:.1} ms"))
                    .collect();
                eprintln!("profile step {s}: {}", parts.join(", "));
            }
            if s >= a.warmup {
                step_s.push(dt);
            }
        }
        let med = median(step_s.clone());
        let layer_layouts = (a.layers * layouts.len()) as f64;
        write_report(
            &a.out,
            &Report {
                bench: "train",
                command: crate::invocation(),
                device: crate::bench::device_name(kind),
                backend: kind.name().into(),
                commit: git_commit(),
                date: crate::bench::command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
                inputs: "SYNTHETIC standard-normal q/k (timing only)",
                layers: a.layers,
                q_heads: a.q_heads,
                kv_heads: a.kv_heads,
                head_dim: a.head_dim,
                seq_len: a.seq_len,
                queries: a.queries,
                pairs: a.pairs,
                layouts,
                ops: a
                    .ops
                    .unwrap_or(<Autodiff<B> as spotlight_train::TrainBackend>::DEFAULT_OPS),
                step_s,
                step_s_median: med,
                sequences_per_s_per_layer_layout: layer_layouts / med,
            },
        )
    }
}
