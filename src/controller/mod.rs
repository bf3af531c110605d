//! The imperative shell: watches Releases and their children, reads the world, calls
//! [`crate::rollout::decide`], applies the actions and patches the status.

use std::net::SocketAddr;

/// Flags of `waymark controller`.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", env = "WAYMARK_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WAYMARK_NAMESPACE")]
    pub namespace: Option<String>,
    /// Reconcile only while holding a coordination.k8s.io Lease (for more than one replica).
    #[arg(long, env = "WAYMARK_LEADER_ELECT")]
    pub leader_elect: bool,
}

/// Run the operator until interrupted.
pub async fn run(args: ControllerArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let _ = args;
    Err("the controller is not built yet".into())
}
