//! The imperative shell: watches Releases and their children, reads the world, calls
//! [`crate::rollout::decide`], applies the actions and patches the status.

pub mod children;
mod error;
pub mod http;
mod leader;
pub mod metrics;
pub mod reconcile;
pub mod status;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod mock_tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::api::{LABEL_RELEASE, Release};

pub use error::Error;
pub use http::Health;
pub use metrics::Metrics;
pub use reconcile::Context;

/// Name of the Lease the replicas compete for with `--leader-elect`.
pub const LEASE_NAME: &str = "waymark-controller";

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
    /// Namespace of the leader Lease (default: $POD_NAMESPACE, else --namespace, else
    /// `default`).
    #[arg(long, env = "WAYMARK_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
}

impl ControllerArgs {
    /// The namespace of the leader Lease.
    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|ns| !ns.is_empty())
            })
            .or_else(|| self.namespace.clone())
            .unwrap_or_else(|| "default".into())
    }
}

/// Run the operator until interrupted (Ctrl-C or SIGTERM).
pub async fn run(args: ControllerArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    init_tracing();
    let client = Client::try_default().await?;
    run_with_client(client, args, shutdown_signal()).await?;
    Ok(())
}

/// Run the operator with `client` until `shutdown` completes: the metrics server, leader
/// election when asked, and the Release controller. The binary and the e2e suite share it.
pub async fn run_with_client(
    client: Client,
    args: ControllerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::new(args.leader_elect));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| Error::Http {
            addr: args.metrics_addr,
            source,
        })?;
    tracing::info!(addr = %args.metrics_addr, "serving /metrics, /healthz and /readyz");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(
        listener,
        http::router(http::Shared {
            metrics: metrics.clone(),
            health: health.clone(),
        }),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));
    let server = tokio::spawn(async move { server.await });

    // One Recorder for the process: it remembers the events it published, so a repeated
    // event bumps a series instead of creating a new Event object.
    let recorder = Recorder::new(client.clone(), reporter());
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        metrics,
    });

    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let result = if args.leader_elect {
        leader::run_while_leading(client, &args, ctx, health, stop_rx).await
    } else {
        health.set_leading(true);
        tokio::select! {
            () = run_controller(&args, ctx, health) => {}
            () = stopped(stop_rx) => {}
        }
        Ok(())
    };
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "metrics server stopped with an error"),
        Err(error) => tracing::warn!(%error, "metrics server task failed"),
    }
    result
}

/// Run the Release controller until its watches end (they do not, unless the future is
/// dropped: that is how shutdown and losing the Lease stop it at once).
pub(crate) async fn run_controller(args: &ControllerArgs, ctx: Arc<Context>, health: Arc<Health>) {
    // Declared first, dropped last: once this controller stops, its per-release gauges go.
    let _forget_gauges = metrics::ForgetReleasesOnDrop(ctx.metrics.clone());
    let metrics = ctx.metrics.clone();
    let client = ctx.client.clone();
    let (releases, deployments, services) = match &args.namespace {
        Some(namespace) => (
            Api::<Release>::namespaced(client.clone(), namespace),
            Api::<Deployment>::namespaced(client.clone(), namespace),
            Api::<Service>::namespaced(client, namespace),
        ),
        None => (
            Api::<Release>::all(client.clone()),
            Api::<Deployment>::all(client.clone()),
            Api::<Service>::all(client),
        ),
    };
    // Only Waymark's children: the cache stays small in clusters with many Deployments.
    let children = watcher::Config::default().labels(LABEL_RELEASE);
    let controller = Controller::new(releases, watcher::Config::default())
        .owns(deployments, children.clone())
        .owns(services, children);
    let store = controller.store();
    health.set_caches_synced(false);
    let synced = {
        let health = health.clone();
        async move {
            if store.wait_until_ready().await.is_ok() {
                tracing::info!("Release cache synced");
                health.set_caches_synced(true);
            }
        }
    };
    let reconciles = controller
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| {
            // A deleted Release is not reconciled, but the garbage collection of its children
            // asks for one and finds it gone: that is when its gauges must go.
            if let Err(kube::runtime::controller::Error::ObjectNotFound(release)) = &result {
                if let Some(namespace) = &release.namespace {
                    metrics.forget_release(namespace, &release.name);
                }
            }
            async move {
                match result {
                    Ok((release, _)) => tracing::debug!(%release, "reconciled"),
                    Err(error) => tracing::debug!(%error, "reconcile or watch failed"),
                }
            }
        });
    futures::future::join(synced, reconciles).await;
    health.set_caches_synced(false);
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn reporter() -> Reporter {
    Reporter {
        controller: "waymark".into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("WAYMARK_LOG_FORMAT").is_ok_and(|format| format == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // try_init: a second initialisation (tests) must not panic.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Resolves on Ctrl-C or SIGTERM (what the kubelet sends to stop the pod).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
