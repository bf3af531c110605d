//! The person-facing commands: status, promote, abort, retry, roadmap.

/// A CLI command other than `controller` and `crd`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {}

/// Run one CLI command; the exit code says whether it succeeded.
pub async fn run(command: Command) -> std::process::ExitCode {
    match command {}
}
