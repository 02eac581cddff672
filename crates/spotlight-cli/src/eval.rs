//! `spotlight eval ppl`: dense teacher-forced perplexity on a text file.

use std::path::PathBuf;

use serde::Serialize;
use spotlight_llama::perplexity;

use crate::backend::{self, BackendKind, OnBackend, SpotlightBackend};
use crate::error::{CliError, Result};
use crate::model_args::{self, ModelArgs};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum EvalCommand {
    /// Perplexity of the model on windows of a text file.
    Ppl(PplArgs),
    /// Retrieval quality of the hash and the baselines (IoU, recall, attention mass) per budget.
    Retrieval(crate::eval_retrieval::RetrievalArgs),
    /// Sparse attention against dense: perplexity, passkey / multi-key / variable-tracking
    /// retrieval, agreement of greedy continuations.
    Fidelity(crate::eval_fidelity::FidelityArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct PplArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score [default: Moby-Dick, fetched on first use].
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Tokens per window.
    #[arg(long, default_value_t = 4096)]
    pub window: usize,
    /// Number of consecutive windows (the result is the mean of per-window perplexities).
    #[arg(long, default_value_t = 1)]
    pub windows: usize,
    /// First token of the first window.
    #[arg(long, default_value_t = 0)]
    pub start: usize,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What `eval ppl` measured.
#[derive(Debug, Clone, Serialize)]
pub struct PplResult {
    pub command: String,
    pub date: Option<String>,
    pub model: String,
    pub text: String,
    pub backend: String,
    pub window: usize,
    pub start: usize,
    pub per_window: Vec<f64>,
    pub ppl: f64,
}

pub fn run(cmd: EvalCommand) -> Result<()> {
    let args = match cmd {
        EvalCommand::Ppl(a) => a,
        EvalCommand::Retrieval(a) => return crate::eval_retrieval::run(a),
        EvalCommand::Fidelity(a) => return crate::eval_fidelity::run(a),
    };
    let text = match &args.text {
        Some(t) => t.clone(),
        None => {
            crate::assets::ensure(&crate::assets::MOBY_DICK, &mut |m| eprintln!("{m}"))?;
            crate::assets::moby_dick_path()
        }
    };
    let path = args.model.path()?;
    let result = backend::run(
        args.model.backend,
        PplJob {
            args: args.clone(),
            text,
            path,
        },
    )?;
    println!(
        "perplexity {:.4} over {} window(s) of {} tokens ({})",
        result.ppl,
        result.per_window.len(),
        result.window,
        result.backend
    );
    if let Some(out) = &args.json {
        let json = serde_json::to_string_pretty(&result).expect("plain data serialises");
        std::fs::write(out, json)
            .map_err(|e| CliError::Io(format!("cannot write {}: {e}", out.display())))?;
    }
    Ok(())
}

struct PplJob {
    args: PplArgs,
    text: PathBuf,
    path: PathBuf,
}

impl OnBackend for PplJob {
    type Output = PplResult;
    fn run<B: SpotlightBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<PplResult> {
        let a = &self.args;
        let text = std::fs::read_to_string(&self.text)
            .map_err(|e| CliError::Io(format!("cannot read {}: {e}", self.text.display())))?;
        let loaded = model_args::load::<B>(&self.path, Some(a.window), &device)?;
        if a.window < 2 || a.window > loaded.model.rope.max_positions() {
            return Err(CliError::Usage(format!(
                "--window {} must be between 2 and the model's context of {}",
                a.window, loaded.config.max_position_embeddings
            )));
        }
        let tokens = loaded.tokenizer.encode(&text, true)?;
        let need = a.start + a.window * a.windows;
        if tokens.len() < need {
            return Err(CliError::Usage(format!(
                "{} has {} tokens; --start {} with {} window(s) of {} needs {need}",
                self.text.display(),
                tokens.len(),
                a.start,
                a.windows,
                a.window
            )));
        }
        let per_window = (0..a.windows)
            .map(|w| {
                let s = a.start + w * a.window;
                perplexity::perplexity(
                    &loaded.model,
                    &tokens[s..s + a.window],
                    perplexity::DEFAULT_CHUNK,
                )
            })
            .collect::<std::result::Result<Vec<f64>, _>>()?;
        let ppl = per_window.iter().sum::<f64>() / per_window.len() as f64;
        Ok(PplResult {
            command: crate::invocation(),
            date: crate::bench::command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            model: self.path.display().to_string(),
            text: self.text.display().to_string(),
            backend: backend.name().into(),
            window: a.window,
            start: a.start,
            per_window,
            ppl,
        })
    }
}
