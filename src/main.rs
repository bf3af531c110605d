use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Waymark: canary releases judged by SLO error-budget burn rate, tied to roadmap items.
#[derive(Parser, Debug)]
#[command(name = "waymark", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator against the current kubeconfig or in-cluster account.
    Controller(waymark::cli::ControllerCommand),
    /// Print the Release CustomResourceDefinition as YAML (apply with `kubectl apply --server-side -f -`).
    Crd,
    #[command(flatten)]
    Person(waymark::cli::Command),
}

/// With the `dhat-heap` feature every allocation is tracked, for the heap profile.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

#[tokio::main]
async fn main() -> ExitCode {
    // kube and reqwest both use rustls; pick ring once for the process before any client exists.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Profiled only when WAYMARK_DHAT_FILE names the file, written when main returns (a
    // controller stopped by SIGTERM does); otherwise the allocator passes every allocation
    // straight to the system's, so one build measures both ways.
    #[cfg(feature = "dhat-heap")]
    let _heap_profile = std::env::var_os("WAYMARK_DHAT_FILE").map(|file| {
        dhat::Profiler::builder()
            .file_name(std::path::PathBuf::from(file))
            .build()
    });
    // Installed as `kubectl-waymark`, it is run by `kubectl waymark ...`: say so in usage.
    let argv0 = std::env::args().next().unwrap_or_default();
    let name = waymark::cli::program_name(&argv0);
    let matches = Cli::command().name(name).bin_name(name).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    match cli.command {
        Command::Controller(args) => match waymark::cli::run_controller(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Crd => match waymark::api::crd::release_crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: cannot render the CRD: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Person(command) => waymark::cli::main(command).await,
    }
}
