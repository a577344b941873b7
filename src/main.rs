fn main() -> std::process::ExitCode {
    hardway::cli::main()
}
