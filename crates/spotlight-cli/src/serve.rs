//! `spotlight serve`: the OpenAI-compatible server ([`spotlight_serve`]) on the chosen backend.

use std::sync::Arc;
use std::time::Duration;

use spotlight_serve::llama::{AttentionMode, LlamaEngine};
use spotlight_serve::{Loaded, ServeConfig};

use crate::attention_args::{AttentionArgs, AttentionKind};
use crate::backend::{self, BackendKind, OnBackend, SpotlightBackend};
use crate::error::{CliError, Result};
use crate::generate::{decode_attention, CudaGraphs, DecodePath};
use crate::model_args::{self, ModelArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Attention of requests that do not choose one (they may ask for `dense` instead with
    /// `"spotlight": {"attention": "dense"}`, or another budget with `"budget"`).
    #[command(flatten)]
    pub attention: AttentionArgs,
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free one; the one bound is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Sequence slots: requests decoded together in one batch.
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// Tokens per slot (prompt + reply). Every slot has its own: the KV cache holds
    /// slots × ctx-size positions.
    #[arg(long, default_value_t = 4096)]
    pub ctx_size: usize,
    /// Requests that may wait for a free slot; beyond, requests get 429 with Retry-After.
    #[arg(long, default_value_t = 16)]
    pub max_queue: usize,
    /// Largest request body in bytes (beyond: 413).
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Seconds running requests may take to finish after SIGINT/SIGTERM before they are
    /// cancelled.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout: u64,
    /// Prompt tokens prefilled between two decode steps (a first prompt always runs whole).
    #[arg(long, default_value_t = 2048)]
    pub max_prefill_tokens: usize,
    /// Decode steps on the fused decoder where the backend has it (CUDA, wgpu), or on Burn tensor
    /// ops (the reference); as `generate --decode-path`.
    #[arg(long, value_enum, default_value_t = DecodePath::Fused)]
    pub decode_path: DecodePath,
    /// Record fused decode steps as CUDA graphs; as `generate --cuda-graphs`.
    #[arg(long, value_enum, default_value_t = CudaGraphs::Off)]
    pub cuda_graphs: CudaGraphs,
    /// Model id in /v1/models and in answers [default: the checkpoint's file name].
    #[arg(long)]
    pub model_name: Option<String>,
}

pub fn run(args: ServeArgs) -> Result<()> {
    if args.slots == 0 || args.ctx_size < 2 {
        return Err(CliError::Usage(
            "--slots must be at least 1 and --ctx-size at least 2".into(),
        ));
    }
    let path = args.model.path()?;
    // Once per run: the name and the weights' fingerprint the hash files are matched on.
    let model_id = crate::model_args::ModelId::of(&path);
    let attention = args.attention.resolve(&model_id)?;
    backend::run(
        args.model.backend,
        Job {
            args,
            path,
            model_id,
            attention,
        },
    )
}

struct Job {
    args: ServeArgs,
    path: std::path::PathBuf,
    model_id: crate::model_args::ModelId,
    attention: (AttentionKind, Option<std::path::PathBuf>),
}

impl OnBackend for Job {
    type Output = ();
    fn run<B: SpotlightBackend>(self, device: B::Device, backend: BackendKind) -> Result<()> {
        let Job {
            args,
            path,
            model_id,
            attention: (kind, hash),
        } = self;
        let hash = hash
            .map(|h| spotlight_train::HashFile::load(&h))
            .transpose()?;
        let cfg = ServeConfig {
            host: args.host.clone(),
            port: args.port,
            max_queue: args.max_queue,
            max_body_bytes: args.max_body_bytes,
            drain_timeout: Duration::from_secs(args.drain_timeout),
            max_prefill_tokens: args.max_prefill_tokens,
            // Tests prove that one failing request leaves the others alone.
            fault_injection: std::env::var_os("SPOTLIGHT_SERVE_FAULTS").is_some_and(|v| v == "1"),
        };
        let served = args
            .model_name
            .clone()
            .unwrap_or_else(|| model_id.name.clone());
        let log: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(|m: &str| eprintln!("[serve] {m}"));
        let log_load = log.clone();
        let load = move || -> std::result::Result<Loaded<LlamaEngine<B>>, String> {
            let fail = |e: CliError| e.to_string();
            let loaded =
                model_args::load::<B>(&path, Some(args.ctx_size), &device).map_err(fail)?;
            let max = loaded.config.max_position_embeddings;
            if args.ctx_size > max {
                return Err(format!(
                    "--ctx-size {}: the model has {max} positions; use --ctx-size {max} or less",
                    args.ctx_size
                ));
            }
            let chosen = decode_attention::<B>(
                &args.attention,
                kind,
                hash,
                &model_id,
                &loaded.config,
                &device,
            )
            .map_err(fail)?;
            log_load(&format!("[{}] attention {}", backend.name(), chosen.label));
            let mut modes = vec![AttentionMode {
                name: kind.name().to_string(),
                selection: chosen.selection,
            }];
            if kind != AttentionKind::Dense {
                modes.push(AttentionMode {
                    name: AttentionKind::Dense.name().to_string(),
                    selection: None,
                });
            }
            let kernels = args.decode_path == DecodePath::Fused;
            let mut engine =
                LlamaEngine::new(loaded.model, args.slots, args.ctx_size, modes, kernels)
                    .map_err(|e| e.to_string())?
                    .with_graphs(args.cuda_graphs.into());
            let start = std::time::Instant::now();
            engine.warm_up()?;
            log_load(&format!(
                "warmed up in {:.1} s",
                start.elapsed().as_secs_f64()
            ));
            Ok(Loaded {
                modes: engine.mode_names(),
                engine,
                tokenizer: Arc::new(loaded.tokenizer),
                model_id: served,
            })
        };
        spotlight_serve::run(cfg, load, log).map_err(|e| CliError::Usage(e.to_string()))
    }
}
