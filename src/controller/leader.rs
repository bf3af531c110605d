//! Leader election on the Lease `waymark-controller`: only the holder reconciles.
//!
//! A background task holds (or waits for) the Lease and publishes "leading" on a watch
//! channel. The controller runs only while that value is true; the moment it turns false the
//! controller future is dropped, which cancels its watches and in-flight reconciles.
//!
//! Any error while renewing counts as losing the Lease: the renewal error arrives before the
//! Lease expires (we renew `LEASE_GRACE_SECONDS` early), so stepping down then means two
//! replicas never reconcile at the same time.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

use super::error::Error;
use super::health::Health;
use super::metrics::Metrics;
use super::{ControllerArgs, LEASE_NAME, Shared, run_controller, stopped};

/// How long a Lease is valid after its last renewal.
const LEASE_DURATION_SECONDS: u64 = 15;
/// How long before expiry the holder renews.
const LEASE_GRACE_SECONDS: u64 = 5;
/// Longest wait between attempts after a Lease error: after an API-server outage the Lease is
/// taken again (once it expired) within seconds, not half a minute (see `super::watch`).
const MAX_BACKOFF: Duration = super::watched::WATCH_RETRY_CAP;

/// Reconcile while holding the Lease, stand by otherwise, until `stop` turns true.
pub(crate) async fn run_while_leading(
    client: Client,
    args: &ControllerArgs,
    shared: Shared,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let namespace = args.lease_namespace();
    let identity = identity();
    tracing::info!(lease = LEASE_NAME, %namespace, %identity, "leader election on");
    let (leading_tx, mut leading) = watch::channel(false);
    let lease = tokio::spawn(hold_lease(
        client,
        namespace,
        identity,
        Leading {
            channel: leading_tx,
            metrics: shared.metrics.clone(),
        },
        stop.clone(),
    ));

    loop {
        let acquired = tokio::select! {
            acquired = async { leading.wait_for(|leading| *leading).await.is_ok() } => acquired,
            () = stopped(stop.clone()) => false,
        };
        if !acquired {
            break;
        }
        health.set_leading(true);
        tracing::info!("acquired the leader Lease: reconciling");
        // The controller stops when the process stops or the Lease is lost, letting the
        // reconciles in flight finish their writes (bounded by SHUTDOWN_GRACE).
        let (term_over, term_stop) = watch::channel(false);
        let mut lease_watch = leading.clone();
        let mut process_stop = stop.clone();
        let watcher = tokio::spawn(async move {
            let stopping = tokio::select! {
                _ = lease_watch.wait_for(|leading| !*leading) => {
                    tracing::warn!("lost the leader Lease: stopping reconciles");
                    false
                }
                _ = process_stop.wait_for(|stop| *stop) => true,
            };
            term_over.send_replace(true);
            stopping
        });
        run_controller(args, shared.clone(), health.clone(), term_stop).await;
        let stopping = watcher.await.unwrap_or(true) || *stop.borrow();
        health.set_leading(false);
        health.set_caches_synced(false);
        if stopping {
            break;
        }
    }
    // Let the Lease task release the Lease so a standby takes over without waiting for expiry.
    let _ = lease.await;
    Ok(())
}

/// Where "we hold the Lease" is published: the channel the controller runs by, and the
/// `waymark_leader` gauge, which follows the Lease itself (not the reconciles winding down).
struct Leading {
    channel: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl Leading {
    fn send_replace(&self, holding: bool) {
        self.metrics.set_leader(holding);
        self.channel.send_replace(holding);
    }
}

/// Hold or wait for the Lease, publishing whether we hold it, until `stop` turns true; then
/// release it.
async fn hold_lease(
    client: Client,
    namespace: String,
    identity: String,
    leading: Leading,
    stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let built = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
            .with_namespace(namespace.clone())
            .with_identity(identity.clone())
            .with_duration(LEASE_DURATION_SECONDS)
            .with_grace(LEASE_GRACE_SECONDS)
            .build()
            .await;
        match built {
            Err(error) => {
                tracing::warn!(%error, lease = LEASE_NAME, %namespace, "cannot set up the leader Lease")
            }
            Ok(manager) => {
                loop {
                    tokio::select! {
                        changed = manager.changed() => match changed {
                            Ok(holding) => {
                                backoff = Duration::from_secs(1);
                                leading.send_replace(holding);
                            }
                            Err(error) => {
                                // We cannot tell whether the Lease is still ours: step down.
                                leading.send_replace(false);
                                tracing::warn!(%error, "leader Lease renewal failed: standing by");
                                break;
                            }
                        },
                        () = stopped(stop.clone()) => {
                            leading.send_replace(false);
                            if let Err(error) = manager.release().await {
                                tracing::warn!(%error, "cannot release the leader Lease");
                            }
                            return;
                        }
                    }
                }
                // A fresh manager starts as "not leading" and reports the Lease as ours again
                // if it still is; release first so a broken renewal does not keep it.
                let _ = manager.release().await;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(stop.clone()) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// This replica's identity in the Lease: the pod name where the Deployment passes it.
fn identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.subsec_nanos())
                .unwrap_or_default();
            format!("waymark-{}-{nanos:x}", std::process::id())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_gauge_follows_the_lease_with_the_channel() {
        let metrics = Arc::new(Metrics::default());
        let (channel, leading_rx) = watch::channel(false);
        let leading = Leading {
            channel,
            metrics: metrics.clone(),
        };
        leading.send_replace(true);
        assert!(*leading_rx.borrow());
        assert!(metrics.encode().unwrap().contains("\nwaymark_leader 1\n"));
        leading.send_replace(false);
        assert!(!*leading_rx.borrow());
        assert!(metrics.encode().unwrap().contains("\nwaymark_leader 0\n"));
    }
}
