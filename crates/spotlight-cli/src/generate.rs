//! `spotlight generate`: one prompt, or an interactive chat, streamed to the terminal.

use std::io::{BufRead, Write};

use spotlight_llama::{
    generate, GenerateConfig, GenerateStats, Sampling, SelectRows, Selection, Tokenizer,
};

use crate::attention_args::{self, AttentionArgs, AttentionKind};
use crate::backend::{self, BackendKind, OnBackend, SpotlightBackend};
use crate::error::{CliError, Result};
use crate::model_args::{self, ModelArgs};

/// Sequence length below which generation attends densely by default: on the H200 Spotlight's
/// retrieval costs more than it saves below ~32K tokens at batch 1 (docs/results.md, "End-to-end decode").
const DENSE_BELOW: usize = 32_768;

const DEFAULT_QUESTION: &str = "What is the capital of France? Answer in one sentence.";

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub attention: AttentionArgs,
    /// Text to continue as is. Without --prompt (and without -i) a default question is asked in
    /// the model's chat format.
    #[arg(long, conflicts_with = "prompt_file")]
    pub prompt: Option<String>,
    /// Read --prompt from this file (long contexts).
    #[arg(long)]
    pub prompt_file: Option<std::path::PathBuf>,
    /// Wrap --prompt in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message for chat mode.
    #[arg(long)]
    pub system: Option<String>,
    /// Chat in a loop, reading user turns from standard input.
    #[arg(short, long)]
    pub interactive: bool,
    /// Most new tokens per reply.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    /// Divide the logits of already-seen tokens by this (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Random seed: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Decode steps on the fused kernels (cube backends, dense attention) or on Burn tensor ops.
    #[arg(long, value_enum, default_value_t = DecodePath::Fused)]
    pub decode_path: DecodePath,
    /// Record fused decode steps as CUDA graphs and replay them (auto: on CUDA where recording
    /// works; on: required; off: plain launches). Off by default until measured on a GPU.
    #[arg(long, value_enum, default_value_t = CudaGraphs::Off)]
    pub cuda_graphs: CudaGraphs,
}

/// Whether fused decode steps are recorded and replayed as CUDA graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CudaGraphs {
    Auto,
    On,
    Off,
}

impl From<CudaGraphs> for spotlight_llama::fast::GraphMode {
    fn from(g: CudaGraphs) -> Self {
        match g {
            CudaGraphs::Auto => Self::Auto,
            CudaGraphs::On => Self::On,
            CudaGraphs::Off => Self::Off,
        }
    }
}

/// How the model runs: decode steps after the prefill, and dense attention (prefill included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodePath {
    /// Our kernels where the backend has them (CUDA, wgpu): the fused decoder, and dense attention
    /// on the flash-style causal kernel; else tensor ops.
    Fused,
    /// Burn tensor ops on every backend, attention included (the reference).
    Tensor,
}

impl GenerateArgs {
    fn config(&self, tokenizer: &Tokenizer) -> GenerateConfig {
        GenerateConfig {
            max_tokens: self.max_tokens,
            sampling: Sampling::from_flags(self.temperature, Some(self.top_k), Some(self.top_p)),
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            stop_ids: tokenizer.stop_ids.clone(),
            fused_decode: self.decode_path == DecodePath::Fused,
            attention_kernels: self.decode_path == DecodePath::Fused,
            cuda_graphs: self.cuda_graphs.into(),
        }
    }

    fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(CliError::Usage(
                "--temperature must be a finite number ≥ 0".into(),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(CliError::Usage("--top-p must be in (0, 1]".into()));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(CliError::Usage(
                "--repetition-penalty must be a positive number".into(),
            ));
        }
        if self.max_tokens == 0 {
            return Err(CliError::Usage(
                "--max-tokens must be at least 1 (the number of new tokens to generate)".into(),
            ));
        }
        if self.prompt.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(CliError::Usage(
                "--prompt is empty: give the text to continue (or leave --prompt out for the default question)".into(),
            ));
        }
        Ok(())
    }
}

pub fn run(mut args: GenerateArgs) -> Result<()> {
    args.validate()?;
    if let Some(f) = args.prompt_file.take() {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| CliError::Io(format!("cannot read --prompt-file {}: {e}", f.display())))?;
        if text.trim().is_empty() {
            return Err(CliError::Usage(format!(
                "--prompt-file {} is empty",
                f.display()
            )));
        }
        args.prompt = Some(text);
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
    args: GenerateArgs,
    path: std::path::PathBuf,
    model_id: crate::model_args::ModelId,
    attention: (AttentionKind, Option<std::path::PathBuf>),
}

impl OnBackend for Job {
    type Output = ();
    fn run<B: SpotlightBackend>(self, device: B::Device, backend: BackendKind) -> Result<()> {
        let args = self.args;
        let model_id = self.model_id;
        let (kind, hash) = self.attention;
        // Hash weights are checked before the (slower) model load.
        let hash = hash
            .map(|h| spotlight_train::HashFile::load(&h))
            .transpose()?;
        let loaded = model_args::load::<B>(&self.path, None, &device)?;
        let attention = decode_attention::<B>(
            &args.attention,
            kind,
            hash,
            &model_id,
            &loaded.config,
            &device,
        )?;
        let tok = &loaded.tokenizer;
        let config = args.config(tok);
        let mut messages: Vec<(String, String)> = args
            .system
            .iter()
            .map(|s| ("system".to_string(), s.clone()))
            .collect();
        let chat_prompt = |messages: &[(String, String)]| -> Result<Vec<u32>> {
            let refs: Vec<(&str, &str)> = messages
                .iter()
                .map(|(r, c)| (r.as_str(), c.as_str()))
                .collect();
            Ok(tok.encode_chat(&refs)?)
        };
        if !args.interactive {
            let ids = match (&args.prompt, args.chat) {
                (Some(p), false) => tok.encode(p, true)?,
                (p, _) => {
                    let q = p.clone().unwrap_or_else(|| DEFAULT_QUESTION.to_string());
                    if args.prompt.is_none() {
                        eprintln!("(no --prompt: asking \"{q}\")");
                    }
                    messages.push(("user".into(), q));
                    chat_prompt(&messages)?
                }
            };
            let (_, stats) = stream(
                &loaded.model,
                tok,
                &ids,
                &config,
                attention.selection.as_ref(),
                args.prompt.is_some() && !args.chat,
            )?;
            report(&stats, backend, &attention.label);
            return Ok(());
        }
        eprintln!(
            "chatting with {} on {} (empty line or Ctrl-D ends)",
            self.path.display(),
            backend.name()
        );
        let stdin = std::io::stdin();
        loop {
            eprint!("> ");
            let mut line = String::new();
            if stdin
                .lock()
                .read_line(&mut line)
                .map_err(|e| CliError::Io(e.to_string()))?
                == 0
                || line.trim().is_empty()
            {
                return Ok(());
            }
            messages.push(("user".into(), line.trim().to_string()));
            let ids = chat_prompt(&messages)?;
            let (reply, stats) = stream(
                &loaded.model,
                tok,
                &ids,
                &config,
                attention.selection.as_ref(),
                false,
            )?;
            messages.push(("assistant".into(), tok.decode(&reply)?));
            report(&stats, backend, &attention.label);
        }
    }
}

/// The decode attention that `flags` choose for a model: the selection (None: dense) with the
/// default `--dense-below` of generation, and its one-line description.
pub(crate) fn decode_attention<B: SpotlightBackend>(
    flags: &AttentionArgs,
    kind: AttentionKind,
    hash: Option<spotlight_train::HashFile>,
    model_id: &crate::model_args::ModelId,
    config: &spotlight_llama::LlamaConfig,
    device: &B::Device,
) -> Result<Attention<B>> {
    let selection = flags
        .selector
        .method(kind, hash, model_id, config)?
        .map(|m| {
            attention_args::selection::<B>(
                &m,
                flags.budget().expect("validated"),
                SelectRows::Decode,
                config,
                device,
            )
            .map(|s| Selection {
                dense_below: flags.selector.dense_below.unwrap_or(DENSE_BELOW),
                ..s
            })
        })
        .transpose()?;
    Ok(Attention {
        label: match &selection {
            Some(s) => format!(
                "{} (budget {} of the tokens, ≥ {}, + sink {} + window {}; layers ≥ {}; dense below {} tokens)",
                s.selector.name(),
                s.budget.fraction,
                s.budget.min_tokens,
                s.budget.sink,
                s.budget.window,
                s.dense_layers,
                s.dense_below
            ),
            None => "dense".into(),
        },
        selection,
    })
}

/// The attention of a run and how it is reported.
pub(crate) struct Attention<B: spotlight_llama::LlamaBackend> {
    pub selection: Option<Selection<B>>,
    pub label: String,
}

/// Generates from `ids`, printing text as it arrives; returns the new tokens.
fn stream<B: spotlight_llama::LlamaBackend>(
    model: &spotlight_llama::Llama<B>,
    tok: &Tokenizer,
    ids: &[u32],
    config: &GenerateConfig,
    selection: Option<&Selection<B>>,
    echo_prompt: bool,
) -> Result<(Vec<u32>, GenerateStats)> {
    let mut out = std::io::stdout().lock();
    if echo_prompt {
        let _ = write!(out, "{}", tok.decode(ids)?);
        let _ = out.flush();
    }
    let mut text = tok.stream();
    let (tokens, stats) = generate(model, &[ids.to_vec()], config, selection, |_, t| {
        let piece = text.push(t)?;
        let _ = write!(out, "{piece}");
        let _ = out.flush();
        Ok(())
    })?;
    let _ = writeln!(out);
    Ok((tokens.into_iter().next().unwrap_or_default(), stats))
}

fn report(s: &GenerateStats, backend: BackendKind, attention: &str) {
    eprintln!(
        "[{}] prefill {} tokens in {:.3} s ({:.1} tok/s); decode {} tokens in {:.3} s ({:.1} tok/s)",
        backend.name(),
        s.prompt_tokens,
        s.prefill_secs,
        s.prefill_tok_s(),
        s.generated_tokens.saturating_sub(1),
        s.decode_secs,
        s.decode_tok_s(1)
    );
    eprintln!(
        "[attention] {attention}: decode read {:.1}% of the cached K/V rows",
        100.0 * s.kv_read_share
    );
    match (s.fused_launches, &s.graphs) {
        (Some(n), Some(g)) => {
            eprintln!("[decode] fused kernels: {n} kernels per step; CUDA graphs {g}")
        }
        (Some(n), None) => eprintln!("[decode] fused kernels: {n} launches per step"),
        (None, _) => eprintln!("[decode] Burn tensor ops"),
    }
}
