//! The imperative shell: watches Releases, their children and the HTTPRoutes they name into
//! caches, reads the world from them, calls [`crate::rollout::decide`], writes the status and
//! applies the actions.

mod apply;
pub mod cached;
pub mod children;
mod context;
pub mod credentials;
mod error;
pub mod events;
mod finalizer;
pub mod gateway_features;
pub mod health;
pub mod http;
pub mod kube_requests;
pub mod lanes;
mod leader;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod observe;
mod process;
pub mod prometheus;
pub mod reconcile;
pub mod status;
pub mod status_patch;
pub mod watch;
pub mod watched;
mod workload;

#[cfg(test)]
mod mock_tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use gateway_api::apis::experimental::grpcroutes::GrpcRoute;
use gateway_api::apis::experimental::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::controller::Config;
use kube::runtime::events::Reporter;

use cached::{CachedDeployment, CachedRelease, CachedService};
use events::EventRecorder;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use watched::Watched;

use crate::api::{LABEL_RELEASE, Release, RouteKind};

pub use context::{Context, Stores};
pub use error::Error;
pub use health::Health;
pub use metrics::Metrics;

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
    /// The notification configuration: a ConfigMap as NAMESPACE/NAME, or NAME in the
    /// controller's namespace ($POD_NAMESPACE, else --namespace, else `default`). Without it,
    /// no notifications are sent.
    #[arg(long, env = "WAYMARK_NOTIFICATIONS_CONFIG")]
    pub notifications_config: Option<String>,
}

impl ControllerArgs {
    /// The namespace of the leader Lease.
    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .unwrap_or_else(|| self.own_namespace())
    }

    /// The controller's own namespace: $POD_NAMESPACE, else --namespace, else `default`.
    pub fn own_namespace(&self) -> String {
        std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|ns| !ns.is_empty())
            .or_else(|| self.namespace.clone())
            .unwrap_or_else(|| "default".into())
    }
}

/// Run the operator with `client` until `shutdown` completes: the metrics server, leader
/// election when asked, and the Release controller. The binary (`waymark controller`, which
/// builds the client the way every command does) and the e2e suite share it.
pub async fn run_with_client(
    client: Client,
    args: ControllerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::default());
    // Every API request of the controller (watches, writes, the Lease, events) is counted.
    let client = kube_requests::instrument(client, metrics.clone());
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

    // One event recorder for the process: it remembers the events it published, so a repeated
    // event bumps a series instead of creating a new Event object.
    let notifier = match &args.notifications_config {
        Some(value) => {
            let location = notify::ConfigLocation::parse(value, &args.own_namespace())
                .map_err(|message| Error::Config { message })?;
            tracing::info!(configmap = %location.shown(), "notifications configured");
            let notifier =
                notify::Notifier::start(client.clone(), location, metrics.clone(), stop_rx.clone())
                    .map_err(|message| Error::Config { message })?;
            Some(notifier)
        }
        None => None,
    };
    let shared = Shared {
        client: client.clone(),
        recorder: EventRecorder::new(client.clone(), reporter()),
        metrics,
        notifier,
    };

    tokio::spawn(
        shared
            .metrics
            .clone()
            .sweep_delivery_series_until(stop_rx.clone()),
    );
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let result = if args.leader_elect {
        leader::run_while_leading(client, &args, shared, health, stop_rx).await
    } else {
        health.set_leading(true);
        shared.metrics.set_leader(true);
        run_controller(&args, shared, health, stop_rx).await;
        Ok(())
    };
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "metrics server stopped with an error"),
        Err(error) => tracing::warn!(%error, "metrics server task failed"),
    }
    result
}

/// What outlives one term as leader: the client, the event recorder and the metrics.
#[derive(Clone)]
pub(crate) struct Shared {
    client: Client,
    recorder: EventRecorder,
    metrics: Arc<Metrics>,
    /// Outlives a term as leader, so that what was sent is not sent again by the next term.
    notifier: Option<Arc<notify::Notifier>>,
}

/// How many Releases the kube-runtime `Controller` reconciles at once: all that are due (0 is
/// unbounded). Each reconcile then waits for a slot of its lane ([`lanes`]), which bound the
/// reconciles in flight, so that one whose analysis is due is not queued behind routine work.
pub const CONCURRENCY: u16 = 0;
/// How long a trigger waits for more triggers of the same Release before the reconcile runs:
/// the burst of watch events one step causes (Deployment spec, then its status, the route)
/// becomes one reconcile.
pub const DEBOUNCE: Duration = Duration::from_millis(250);
/// How long a stopping controller lets the reconciles in flight finish their writes.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Run the Release controller until `stop` resolves; then let the reconciles in flight finish
/// (a stopped reconcile is restart-safe, but finishing its writes saves the next leader work).
pub(crate) async fn run_controller(
    args: &ControllerArgs,
    shared: Shared,
    health: Arc<Health>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    // Declared first, dropped last: once this controller stops (shutdown, a lost Lease), its
    // per-release gauges go, so a standby does not export a leader's stale figures.
    let _forget_gauges = metrics::ForgetReleasesOnDrop(shared.metrics.clone());
    let Apis {
        releases,
        deployments,
        services,
        routes,
        grpc_routes,
    } = Apis::new(&shared.client, args.namespace.as_deref());
    let workload_deployments: Api<kube::core::PartialObjectMeta<Deployment>> =
        match args.namespace.as_deref() {
            Some(namespace) => Api::namespaced(shared.client.clone(), namespace),
            None => Api::all(shared.client.clone()),
        };

    let (release_store, release_writer) = reflector::store();
    let (deployment_store, deployment_writer) = reflector::store();
    let (service_store, service_writer) = reflector::store();
    let (route_store, route_writer) = reflector::store();
    let (grpc_route_store, grpc_route_writer) = reflector::store();
    // The GRPCRoute watch starts when the first Release naming a GRPCRoute is seen: a cluster
    // without the GRPCRoute CRD (most of them) is never asked for GRPCRoutes otherwise.
    let grpc_routes_wanted = Arc::new(tokio::sync::Notify::new());
    let recovered = Arc::new(tokio::sync::Notify::new());
    let monitor = watch::Monitor {
        health: health.clone(),
        metrics: shared.metrics.clone(),
        recovered: recovered.clone(),
        initial_lists: watch::InitialLists::default(),
    };
    let lists = monitor.initial_lists.clone();
    health.set_releases(Some(release_store.clone()));

    let release_events = release_events(
        releases,
        release_writer,
        &shared,
        monitor.clone(),
        grpc_routes_wanted.clone(),
    );
    let stores = Stores::new(
        deployment_store.clone(),
        service_store.clone(),
        route_store.clone(),
        grpc_route_store,
    );
    let seen = stores.clone();
    let deployment_events = watch::resilient(
        Watched::Deployments,
        {
            let lists = lists.clone();
            move || watcher(deployments.clone(), lists.config(children_only()))
        },
        monitor.clone(),
    )
    .modify(cached::slim_child)
    .reflect(deployment_writer)
    .inspect_ok(move |event| seen.seen_deployment(event))
    .touched_objects();
    let service_events = watch::resilient(
        Watched::Services,
        {
            let lists = lists.clone();
            move || watcher(services.clone(), lists.config(children_only()))
        },
        monitor.clone(),
    )
    .modify(cached::slim_child)
    .reflect(service_writer)
    .touched_objects();
    let route_events = watch::resilient(
        Watched::HttpRoutes,
        {
            let lists = lists.clone();
            move || watcher(routes.clone(), lists.config(watcher::Config::default()))
        },
        monitor.clone(),
    )
    .modify(slim)
    .reflect(route_writer)
    .touched_objects();
    let grpc_monitor = monitor.clone();
    let grpc_route_events = futures::stream::once(async move {
        grpc_routes_wanted.notified().await;
    })
    .flat_map(move |()| {
        let grpc_routes = grpc_routes.clone();
        watch::resilient(
            Watched::GrpcRoutes,
            move || watcher(grpc_routes.clone(), watcher::Config::default()),
            grpc_monitor.clone(),
        )
    })
    .modify(slim)
    .reflect(grpc_route_writer)
    .touched_objects();

    let ctx = Arc::new(
        Context::new(
            shared.client.clone(),
            shared.recorder.clone(),
            shared.metrics.clone(),
            stores,
        )
        .with_health(health.clone())
        .with_notifier(shared.notifier.clone())
        .with_releases(release_store.clone()),
    );
    // The Deployments `spec.workloadRef` names carry no Waymark label: their metadata alone
    // (no templates cached) says when one changed, and which Release to look at again reads it
    // by name (see `workload`).
    let referencing = release_store.clone();
    // Retried as the children's watch is (within seconds of an outage), and counted under it.
    let referenced_events = watch::resilient(
        Watched::Deployments,
        move || {
            watcher(
                workload_deployments.clone(),
                lists.config(watcher::Config::default().any_semantic()),
            )
        },
        monitor,
    )
    .touched_objects();
    let routed = release_store.clone();
    let grpc_routed = release_store.clone();
    let controller = Controller::for_stream(release_events, release_store.clone())
        .watches_stream(referenced_events, move |deployment| {
            releases_referencing(&referencing.state(), &deployment)
        })
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .watches_stream(route_events, move |route: HttpRoute| {
            releases_routed_by(&routed.state(), RouteKind::Http, &route)
        })
        .watches_stream(grpc_route_events, move |route: GrpcRoute| {
            releases_routed_by(&grpc_routed.state(), RouteKind::Grpc, &route)
        })
        // After an outage the reconciles that were due failed, and a relist of unchanged
        // Releases triggers nothing: look at every Release again once the watches are back.
        .reconcile_all_on(watch::recoveries(recovered));
    // A named target's delivery failed or recovered, or the configuration changed: the
    // Release's NotificationsDelivered condition is judged again.
    let controller = match &shared.notifier {
        Some(notifier) => controller
            .reconcile_on(
                notifier
                    .wake_requests()
                    .map(|release| release.into_kind_unchecked(())),
            )
            .reconcile_all_on(notifier.config_changes()),
        None => controller,
    };
    let controller = controller
        .with_config(
            Config::default()
                .concurrency(CONCURRENCY)
                .debounce(DEBOUNCE),
        )
        .graceful_shutdown_on(stopped(stop.clone()));

    health.set_caches_synced(false);
    let synced = caches_synced(
        health.clone(),
        release_store.clone(),
        deployment_store.clone(),
        service_store.clone(),
    );
    let reconciles = controller
        .run(
            reconcile::reconcile_cached,
            reconcile::error_policy_cached,
            ctx,
        )
        .for_each(|result| async move {
            match result {
                Ok((release, _)) => tracing::debug!(%release, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile or watch failed"),
            }
        });
    tokio::select! {
        () = reconciles => {}
        () = async { synced.await; std::future::pending::<()>().await } => {}
        () = grace_over(stop) => tracing::warn!(
            grace = ?SHUTDOWN_GRACE,
            "reconciles still running after the shutdown grace period: dropped (restart-safe)"
        ),
    }
    health.set_caches_synced(false);
    health.set_releases(None);
}

/// The API handles the controller watches through: in one namespace, or in all.
struct Apis {
    /// Releases, read untyped and decoded one by one: a stored Release this controller cannot
    /// decode (written under an older, looser schema) must not fail the list of every Release.
    releases: Api<DynamicObject>,
    /// Child Deployments, decoded straight into the narrow type the cache keeps.
    deployments: Api<CachedDeployment>,
    /// Child Services, decoded straight into the narrow type the cache keeps.
    services: Api<CachedService>,
    routes: Api<HttpRoute>,
    grpc_routes: Api<GrpcRoute>,
}

impl Apis {
    fn new(client: &Client, namespace: Option<&str>) -> Apis {
        let release_resource = ApiResource::erase::<Release>(&());
        match namespace {
            Some(namespace) => Apis {
                releases: Api::namespaced_with(client.clone(), namespace, &release_resource),
                deployments: Api::namespaced(client.clone(), namespace),
                services: Api::namespaced(client.clone(), namespace),
                routes: Api::namespaced(client.clone(), namespace),
                grpc_routes: Api::namespaced(client.clone(), namespace),
            },
            None => Apis {
                releases: Api::all_with(client.clone(), &release_resource),
                deployments: Api::all(client.clone()),
                services: Api::all(client.clone()),
                routes: Api::all(client.clone()),
                grpc_routes: Api::all(client.clone()),
            },
        }
    }
}

/// The Releases to reconcile: watched (restarting within seconds after a failure), decoded one
/// by one (an undecodable one is reported and left out), cached in `writer`, their metrics
/// forgotten when they go, and filtered to the changes worth a reconcile. The first Release
/// seen naming a GRPCRoute wakes `grpc_routes_wanted` (which starts the GRPCRoute watch).
fn release_events(
    releases: Api<DynamicObject>,
    writer: reflector::store::Writer<CachedRelease>,
    shared: &Shared,
    monitor: watch::Monitor,
    grpc_routes_wanted: Arc<tokio::sync::Notify>,
) -> impl futures::Stream<Item = Result<CachedRelease, watcher::Error>> + Send + 'static {
    let undecodable = Undecodable {
        recorder: shared.recorder.clone(),
        metrics: shared.metrics.clone(),
        reported: Arc::default(),
    };
    let metrics = shared.metrics.clone();
    watch::resilient(
        Watched::Releases,
        {
            let lists = monitor.initial_lists.clone();
            move || watcher(releases.clone(), lists.config(watcher::Config::default()))
        },
        monitor,
    )
    .try_filter_map(move |event| futures::future::ready(Ok(undecodable.decode(event))))
    .reflect(writer)
    .inspect_ok(move |event| match event {
        watcher::Event::Delete(release) => {
            metrics.forget_release(
                &release.namespace().unwrap_or_default(),
                &release.name_any(),
            );
        }
        watcher::Event::Apply(release) | watcher::Event::InitApply(release)
            if release.routes_through(RouteKind::Grpc) =>
        {
            // A stored permit: the watch starts even if it is not waiting yet; later wakes of
            // a started watch change nothing.
            grpc_routes_wanted.notify_one();
        }
        _ => {}
    })
    .applied_objects()
    // A status write of our own is no reason to look again; a spec change or a manual
    // request (written to the status by the CLI) is.
    .predicate_filter(release_trigger, Default::default())
}

/// Only Waymark's children (by label): the caches stay small in clusters with many Deployments.
fn children_only() -> watcher::Config {
    watcher::Config::default().labels(LABEL_RELEASE)
}

/// Resolves [`SHUTDOWN_GRACE`] after `stop` turns true: the reconciles in flight had their time.
async fn grace_over(stop: tokio::sync::watch::Receiver<bool>) {
    stopped(stop).await;
    tokio::time::sleep(SHUTDOWN_GRACE).await;
}

/// Resolves once the Release, Deployment and Service caches have listed, and tells `/readyz`.
/// HTTPRoutes are not waited for: without the Gateway API CRDs that cache never fills, and
/// replica-split Releases do not need it (`/readyz` names the missing CRD while a Release
/// needs it).
async fn caches_synced(
    health: Arc<Health>,
    releases: reflector::Store<CachedRelease>,
    deployments: reflector::Store<CachedDeployment>,
    services: reflector::Store<CachedService>,
) {
    let ready = futures::future::join3(
        releases.wait_until_ready(),
        deployments.wait_until_ready(),
        services.wait_until_ready(),
    )
    .await;
    if ready.0.is_ok() && ready.1.is_ok() && ready.2.is_ok() {
        tracing::info!("caches synced: Releases, Deployments, Services");
        health.set_caches_synced(true);
    }
}

/// Decodes watched Releases, and reports the ones it cannot decode instead of failing the watch.
#[derive(Clone)]
struct Undecodable {
    recorder: EventRecorder,
    metrics: Arc<Metrics>,
    /// `(uid, resourceVersion)` already reported, so a relist does not report them again.
    reported: Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
}

impl Undecodable {
    /// The event with its object decoded as a Release and kept compact, or `None` (the object
    /// left out of the cache, with a log line, an error count and a Warning event on it) when
    /// it cannot be decoded.
    fn decode(
        &self,
        event: watcher::Event<DynamicObject>,
    ) -> Option<watcher::Event<CachedRelease>> {
        use watcher::Event;
        match event {
            Event::Apply(object) => self.release(object).map(Event::Apply),
            Event::InitApply(object) => self.release(object).map(Event::InitApply),
            Event::Delete(object) => self.release(object).map(Event::Delete),
            Event::Init => Some(Event::Init),
            Event::InitDone => Some(Event::InitDone),
        }
    }

    fn release(&self, object: DynamicObject) -> Option<CachedRelease> {
        // The error names the field (`spec.replicas: invalid value ...`).
        let decoded = serde_json::to_value(&object)
            .map_err(|error| error.to_string())
            .and_then(|value| {
                serde_path_to_error::deserialize::<_, Release>(value)
                    .map_err(|error| format!("{}: {}", error.path(), error.inner()))
            })
            .and_then(|mut release| {
                slim_release(&mut release);
                CachedRelease::try_from(release)
                    .map_err(|error| format!("cannot keep it in the cache: {error}"))
            });
        let error = match decoded {
            Ok(release) => return Some(release),
            Err(error) => error,
        };
        let namespace = object.namespace().unwrap_or_default();
        let name = object.name_any();
        let key = (
            object.metadata.uid.clone().unwrap_or_default(),
            object.metadata.resource_version.clone().unwrap_or_default(),
        );
        let first_time = self
            .reported
            .lock()
            .map(|mut reported| reported.insert(key))
            .unwrap_or(true);
        if first_time {
            tracing::error!(%namespace, release = %name, %error, "cannot decode Release: it is left alone until fixed");
            self.metrics.count_error("undecodable_release");
            let recorder = self.recorder.clone();
            let reference = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("waymark.dev/v1alpha1".into()),
                kind: Some("Release".into()),
                name: Some(name),
                namespace: Some(namespace),
                uid: object.metadata.uid.clone(),
                ..Default::default()
            };
            let note = format!(
                "this Release cannot be read by the controller ({error}); it is left alone until \
                 the field is fixed (kubectl edit)"
            );
            tokio::spawn(async move {
                let event = kube::runtime::events::Event {
                    type_: kube::runtime::events::EventType::Warning,
                    reason: "UndecodableRelease".into(),
                    note: Some(note.chars().take(1024).collect()),
                    action: "Decode".into(),
                    secondary: None,
                };
                if let Err(error) = recorder.publish(&event, &reference).await {
                    tracing::warn!(%error, "cannot publish the UndecodableRelease event");
                }
            });
        }
        None
    }
}

/// What makes a Release worth reconciling when it changes: its generation (the spec), a new
/// manual request id (the CLI writes it to the status), and its deletion. Not the controller's
/// own status writes.
fn release_trigger(release: &CachedRelease) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    release.metadata.generation.hash(&mut hasher);
    release
        .metadata
        .deletion_timestamp
        .is_some()
        .hash(&mut hasher);
    release.request_id().hash(&mut hasher);
    // `predicates::generation` alone would drop manual requests; the hash covers both.
    Some(hasher.finish())
}

/// The Releases in `route`'s namespace that route their traffic through it (a route of `kind`).
fn releases_routed_by<R: Resource>(
    releases: &[Arc<CachedRelease>],
    kind: RouteKind,
    route: &R,
) -> Vec<ObjectRef<CachedRelease>> {
    let namespace = route.namespace();
    let name = route.name_any();
    releases
        .iter()
        .filter(|release| release.namespace() == namespace)
        .filter(|release| release.names_route(kind, &name))
        .map(|release| ObjectRef::from_obj(release.as_ref()))
        .collect()
}

/// The Releases whose `spec.workloadRef` (or the record of one being given back) names
/// `deployment`.
fn releases_referencing(
    releases: &[Arc<CachedRelease>],
    deployment: &kube::core::PartialObjectMeta<Deployment>,
) -> Vec<ObjectRef<CachedRelease>> {
    let namespace = deployment.namespace();
    let name = deployment.name_any();
    releases
        .iter()
        .filter(|release| release.namespace() == namespace)
        .filter(|release| release.references_workload(&name))
        .map(|release| ObjectRef::from_obj(release.as_ref()))
        .collect()
}

/// Drop what no reconcile reads before an object enters a cache: its managed fields.
fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        // `kubectl apply`'s last-applied copy would hold the whole object again.
        annotations.remove(LAST_APPLIED);
    }
}

/// Drop from a cached Release what no decision reads: its managed fields, and the timelines
/// of its history entries but the newest (the status write patches only what changed, so it
/// never needs them; the CLI reads the Release itself).
pub(crate) fn slim_release(release: &mut Release) {
    slim(release);
    if let Some(status) = release.status.as_mut() {
        status_patch::slim_history(status);
    }
}

/// The annotation in which a client-side `kubectl apply` keeps a copy of what it applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

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

/// Resolves on Ctrl-C or SIGTERM (what the kubelet sends to stop the pod).
pub async fn shutdown_signal() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::{Method, Request, Response};
    use kube::client::Body;

    #[test]
    fn a_slimmed_service_is_still_read_as_up_to_date_ours_and_adoptable() {
        let release = crate::fixtures::ReleaseBuilder::replica_split().build();
        let wanted = children::service(&release, None).unwrap();
        let mut served = serde_json::to_value(&wanted).unwrap();
        served["spec"]["clusterIP"] = "10.0.0.7".into();
        served["spec"]["clusterIPs"] = serde_json::json!(["10.0.0.7"]);
        served["spec"]["type"] = "ClusterIP".into();
        served["spec"]["ports"][0]["protocol"] = "TCP".into();
        served["status"] = serde_json::json!({"loadBalancer": {}});
        served["metadata"]["annotations"] = serde_json::json!({
            LAST_APPLIED: "{}",
            "example.com/owner": "team-a",
            crate::api::ANNOTATION_ADOPT: "true",
        });
        // As the watch decodes and slims it.
        let mut live: CachedService = serde_json::from_value(served).unwrap();
        cached::slim_child(&mut live);
        let kept = serde_json::to_value(&live).unwrap();
        let wanted_port = &wanted.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(
            kept["spec"],
            serde_json::json!({
                "selector": wanted.spec.as_ref().unwrap().selector,
                "ports": [{
                    "port": wanted_port.port,
                    "targetPort": wanted_port.target_port,
                }],
            }),
            "the API server's fields are not kept"
        );
        assert!(kept.get("status").is_none());
        assert_eq!(
            live.metadata
                .annotations
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            [crate::api::ANNOTATION_ADOPT]
        );
        assert!(children::service_up_to_date(&live, &wanted));
        assert!(apply::owned_by(&live.metadata, &release));
        assert!(apply::adoptable(&live.metadata));
    }

    #[tokio::test]
    async fn an_undecodable_release_is_left_out_and_reported_once_and_the_others_go_on() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let undecodable = Undecodable {
            recorder: EventRecorder::new(client, reporter()),
            metrics: Arc::new(Metrics::default()),
            reported: Arc::default(),
        };
        let good = crate::fixtures::ReleaseBuilder::gateway().build();
        let mut bad = serde_json::to_value(&good).unwrap();
        bad["metadata"]["name"] = "legacy".into();
        bad["metadata"]["uid"] = "0b3f1c2e-0000-4000-8000-0000000000ff".into();
        // Stored under a looser, older schema: past int32.
        bad["spec"]["replicas"] = 3_000_000_000_i64.into();
        let object = |value: &serde_json::Value| -> DynamicObject {
            serde_json::from_value(value.clone()).unwrap()
        };

        let decoded = undecodable.decode(watcher::Event::InitApply(object(
            &serde_json::to_value(&good).unwrap(),
        )));
        assert!(
            matches!(decoded, Some(watcher::Event::InitApply(release)) if release.release().unwrap() == good)
        );
        assert!(
            undecodable
                .decode(watcher::Event::InitApply(object(&bad)))
                .is_none()
        );
        // A relist meets it again: not reported twice.
        assert!(
            undecodable
                .decode(watcher::Event::InitApply(object(&bad)))
                .is_none()
        );
        assert!(matches!(
            undecodable.decode(watcher::Event::InitDone),
            Some(watcher::Event::InitDone)
        ));

        let (request, send) = handle.next_request().await.expect("one Warning event");
        assert_eq!(request.method(), Method::POST);
        let body: serde_json::Value =
            serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
        assert_eq!(body["reason"], "UndecodableRelease");
        assert_eq!(body["type"], "Warning");
        assert_eq!(body["regarding"]["name"], "legacy");
        assert!(
            body["note"].as_str().unwrap().contains("replicas"),
            "{body}"
        );
        send.send_response(
            Response::builder()
                .status(201)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
        let text = undecodable.metrics.encode().unwrap();
        assert!(
            text.contains(r#"waymark_reconcile_errors_total{kind="undecodable_release"} 1"#),
            "{text}"
        );
    }
}
