//! Chat with a model: `cargo run --release --example generate -- --prompt "..."`.
//! Takes the same flags as `spotlight generate` (`-- --help` lists them).

use spotlight::cli::{generate::GenerateArgs, main_with, Cli, Command};

#[derive(clap::Parser)]
#[command(name = "generate")]
struct Args {
    #[command(flatten)]
    generate: GenerateArgs,
}

impl From<Args> for Cli {
    fn from(a: Args) -> Self {
        Cli {
            command: Command::Generate(a.generate),
        }
    }
}

fn main() -> std::process::ExitCode {
    main_with::<Args>()
}
