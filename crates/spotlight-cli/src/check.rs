//! `spotlight check`: runs the same reference prompt and text on several backends and compares
//! them — last-position logits, greedy tokens, perplexity — so a user can trust a new backend.

use std::path::PathBuf;

use serde::Serialize;
use spotlight_llama::{generate, perplexity, GenerateConfig, Sampling};

use crate::backend::{self, BackendKind, OnBackend, SpotlightBackend};
use crate::error::{CliError, Result};
use crate::model_args::{self, ModelArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Model to check (the --backend flag is ignored; see --backends).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Backends to compare; the first is the reference.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cpu,wgpu")]
    pub backends: Vec<BackendKind>,
    /// Prompt whose last-position logits and greedy continuation are compared.
    #[arg(long, default_value = "The capital of France is")]
    pub prompt: String,
    /// Greedy tokens to generate.
    #[arg(long, default_value_t = 8)]
    pub tokens: usize,
    /// Perplexity over the first N tokens of Moby-Dick (0 = skip).
    #[arg(long, default_value_t = 512)]
    pub ppl_tokens: usize,
    /// Write the comparison as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendResult {
    pub backend: String,
    pub prompt_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
    pub greedy_text: String,
    pub ppl: Option<f64>,
    /// max |logit − reference logit| / max |reference logit|
    pub logits_max_rel_diff: f64,
    /// ‖logits − reference logits‖₂ / ‖reference logits‖₂
    pub logits_l2_rel_diff: f64,
    pub same_greedy_tokens: bool,
    pub ppl_rel_diff: Option<f64>,
    #[serde(skip)]
    logits: Vec<f32>,
}

struct Job<'a> {
    args: &'a CheckArgs,
    path: PathBuf,
    text: Option<String>,
}

impl OnBackend for Job<'_> {
    type Output = BackendResult;
    fn run<B: SpotlightBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<BackendResult> {
        let a = self.args;
        let m = model_args::load::<B>(
            &self.path,
            Some(a.ppl_tokens.max(64) + a.tokens + 64),
            &device,
        )?;
        let ids = m.tokenizer.encode(&a.prompt, true)?;
        let mut cache = m.model.new_cache(1, ids.len())?;
        // sync: read the logits once.
        let logits = m
            .model
            .forward_last(std::slice::from_ref(&ids), &mut cache)?
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| CliError::Io(format!("{e:?}")))?;
        let config = GenerateConfig {
            max_tokens: a.tokens,
            sampling: Sampling::Greedy,
            repetition_penalty: 1.0,
            seed: 0,
            stop_ids: vec![],
            fused_decode: true,
            cuda_graphs: spotlight_llama::fast::GraphMode::Off,
            attention_kernels: true,
        };
        let (greedy, _) = generate(
            &m.model,
            std::slice::from_ref(&ids),
            &config,
            None,
            |_, _| Ok(()),
        )?;
        let greedy = greedy.into_iter().next().unwrap_or_default();
        let ppl = match &self.text {
            Some(text) if a.ppl_tokens >= 2 => {
                let tokens = m.tokenizer.encode(text, true)?;
                let n = a.ppl_tokens.min(tokens.len());
                Some(perplexity::perplexity(
                    &m.model,
                    &tokens[..n],
                    perplexity::DEFAULT_CHUNK,
                )?)
            }
            _ => None,
        };
        Ok(BackendResult {
            backend: backend.name().into(),
            prompt_ids: ids,
            greedy_text: m.tokenizer.decode(&greedy)?,
            greedy_ids: greedy,
            ppl,
            logits_max_rel_diff: 0.0,
            logits_l2_rel_diff: 0.0,
            same_greedy_tokens: true,
            ppl_rel_diff: None,
            logits,
        })
    }
}

pub fn run(args: CheckArgs) -> Result<()> {
    if args.backends.is_empty() {
        return Err(CliError::Usage(
            "--backends needs at least one backend".into(),
        ));
    }
    let path = args.model.path()?;
    let text = if args.ppl_tokens >= 2 {
        crate::assets::ensure(&crate::assets::MOBY_DICK, &mut |m| eprintln!("{m}"))?;
        Some(
            std::fs::read_to_string(crate::assets::moby_dick_path())
                .map_err(|e| CliError::Io(e.to_string()))?,
        )
    } else {
        None
    };
    let mut results: Vec<BackendResult> = Vec::new();
    for &kind in &args.backends {
        let mut r = backend::run(
            Some(kind),
            Job {
                args: &args,
                path: path.clone(),
                text: text.clone(),
            },
        )?;
        if let Some(reference) = results.first() {
            let scale = reference
                .logits
                .iter()
                .fold(0f32, |m, x| m.max(x.abs()))
                .max(1e-12);
            let worst = reference
                .logits
                .iter()
                .zip(&r.logits)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            r.logits_max_rel_diff = (worst / scale) as f64;
            let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
            let diff = norm(
                &mut reference
                    .logits
                    .iter()
                    .zip(&r.logits)
                    .map(|(a, b)| (a - b) as f64),
            );
            r.logits_l2_rel_diff =
                diff / norm(&mut reference.logits.iter().map(|&a| a as f64)).max(1e-30);
            r.same_greedy_tokens = r.greedy_ids == reference.greedy_ids;
            r.ppl_rel_diff = match (r.ppl, reference.ppl) {
                (Some(p), Some(q)) => Some((p - q).abs() / q),
                _ => None,
            };
        }
        println!(
            "{:<5} greedy {:?}  ppl({} tok) {}  logits rel diff max {:.2e} L2 {:.2e}  same tokens {}",
            r.backend,
            r.greedy_text,
            args.ppl_tokens,
            r.ppl.map_or("-".into(), |p| format!("{p:.4}")),
            r.logits_max_rel_diff,
            r.logits_l2_rel_diff,
            r.same_greedy_tokens
        );
        results.push(r);
    }
    if let Some(out) = &args.json {
        let json = serde_json::json!({
            "check": "backends",
            "command": crate::invocation(),
            "model": path.file_name().map(|n| n.to_string_lossy().to_string()),
            "prompt": args.prompt,
            "ppl_text": "Moby-Dick (data.txt), first tokens",
            "ppl_tokens": args.ppl_tokens,
            "date": crate::bench::command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            "commit": crate::bench::git_commit(),
            "results": results,
        });
        std::fs::write(
            out,
            serde_json::to_string_pretty(&json).expect("json") + "\n",
        )
        .map_err(|e| CliError::Io(e.to_string()))?;
    }
    Ok(())
}
