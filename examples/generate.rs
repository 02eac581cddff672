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

/// 64-byte-aligned allocations make CPU training reproducible to the bit (see `Aligned64`).
#[global_allocator]
static ALLOC: spotlight::train::Aligned64 = spotlight::train::Aligned64;

fn main() -> std::process::ExitCode {
    main_with::<Args>()
}
