//! The `dualkey` binary: parse the command line and hand over to [`dualkey::cli`].

fn main() -> std::process::ExitCode {
    dualkey::cli::main()
}
