//! The `ferry` binary: argument parsing lives in [`ferry::cli`]; everything else in the library.

fn main() -> std::process::ExitCode {
    ferry::cli::main()
}
