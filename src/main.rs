//! The `gradguard` binary: see `gradguard --help`.

fn main() -> std::process::ExitCode {
    // Naming every plugin crate keeps their registrations in the binary.
    let _ = gradguard::builtin_kinds();
    gradguard_cli::main()
}
