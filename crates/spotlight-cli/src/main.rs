fn main() -> std::process::ExitCode {
    spotlight_cli::main_with::<spotlight_cli::Cli>()
}
