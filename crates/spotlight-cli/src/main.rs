/// 64-byte-aligned allocations make CPU training reproducible to the bit (see `Aligned64`).
#[global_allocator]
static ALLOC: spotlight_train::Aligned64 = spotlight_train::Aligned64;

fn main() -> std::process::ExitCode {
    spotlight_cli::main_with::<spotlight_cli::Cli>()
}
