//! The `spotlight` command line: generate, fetch, info, eval, bench.
//! The library never prints; this crate owns the terminal.

pub mod assets;
pub mod attention_args;
pub mod backend;
pub mod bench;
pub mod bench_decode;
pub mod bench_linear;
pub mod bench_retrieval;
pub mod bench_train;
pub mod check;
pub mod error;
pub mod eval;
pub mod eval_fidelity;
pub mod eval_retrieval;
pub mod fidelity_tasks;
pub mod generate;
pub mod hash_cmd;
pub mod info;
pub mod model_args;
pub mod plot;
pub mod rdata;
pub mod serve;
pub mod train;

use clap::{Parser, Subcommand};

pub use error::{CliError, Result};

/// Spotlight: Llama-family models in Burn with learned-hash sparse attention for long contexts.
#[derive(Debug, Parser)]
#[command(name = "spotlight", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text from a prompt, or chat interactively (-i).
    Generate(generate::GenerateArgs),
    /// Download the default model and texts into $SPOTLIGHT_HOME (default ~/.cache/spotlight).
    Fetch,
    /// Describe a model checkpoint.
    Info(model_args::ModelArgs),
    /// Evaluate a model.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Compare backends on the same prompt and text (logits, greedy tokens, perplexity).
    Check(check::CheckArgs),
    /// Train the Spotlight hash of a model (resumable; writes hash-<layout>.safetensors).
    Train(train::TrainArgs),
    /// Benchmarks (write JSON under benches/results/).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Operations on hash files (merge per-layer-range files).
    #[command(subcommand)]
    Hash(hash_cmd::HashCommand),
    /// Serve the model over an OpenAI-compatible HTTP API (chat and text completions,
    /// streaming), batching concurrent requests.
    Serve(serve::ServeArgs),
}

/// The command line as typed (program name without its directory), recorded in result files.
pub fn invocation() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .map(|p| p.rsplit('/').next().unwrap_or("spotlight").to_string())
        .unwrap_or_default();
    std::iter::once(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(a) => generate::run(a),
        Command::Fetch => {
            for asset in assets::ALL {
                let dir = assets::ensure(&asset, &mut |m| eprintln!("{m}"))?;
                println!("{:<45} {}", asset.name, dir.display());
            }
            Ok(())
        }
        Command::Info(a) => info::run(a),
        Command::Eval(c) => eval::run(c),
        Command::Bench(c) => bench::run(c),
        Command::Check(a) => check::run(a),
        Command::Train(a) => train::run(a),
        Command::Hash(c) => hash_cmd::run(c),
        Command::Serve(a) => serve::run(a),
    }
}

/// Parses `args`, runs, and turns every failure into one line on stderr and a non-zero exit.
pub fn main_with<P: Parser + Into<Cli>>() -> std::process::ExitCode {
    let cli = match P::try_parse() {
        Ok(p) => p.into(),
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    2.into()
                } else {
                    0.into()
                };
            }
            // clap's message spans several lines; the first says what is wrong.
            let rendered = e.render().to_string();
            eprintln!("{}", rendered.lines().next().unwrap_or("invalid arguments"));
            return 2.into();
        }
    };
    match run(cli) {
        Ok(()) => 0.into(),
        Err(e) => {
            eprintln!("error: {e}");
            1.into()
        }
    }
}
