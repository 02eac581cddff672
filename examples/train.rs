//! Train the Spotlight hash of a model: `cargo run --release --example train`.
//! Takes the same flags as `spotlight train` (`-- --help` lists them). The default is a short run
//! of the default model that finishes on a CPU in minutes; the full recipe on a GPU is
//! `-- --backend cuda --seq-len 4096 --queries 1024 --pairs 1024 --steps 700 --out runs/smollm2`.

use spotlight::cli::{main_with, train::TrainArgs, Cli, Command};

#[derive(clap::Parser)]
#[command(name = "train")]
struct Args {
    #[command(flatten)]
    train: TrainArgs,
}

impl From<Args> for Cli {
    fn from(a: Args) -> Self {
        Cli {
            command: Command::Train(a.train),
        }
    }
}

/// 64-byte-aligned allocations make CPU training reproducible to the bit (see `Aligned64`).
#[global_allocator]
static ALLOC: spotlight::train::Aligned64 = spotlight::train::Aligned64;

fn main() -> std::process::ExitCode {
    main_with::<Args>()
}
