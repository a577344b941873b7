//! The `hardway` binary: everything is in the library; see `hardway::cli`.

fn main() -> std::process::ExitCode {
    hardway::cli::main()
}
