//! The e2e harness: which cluster the suite runs against, what it installs there, a fresh
//! namespace per walk with the controller running in-process as its ServiceAccount and a
//! simulated node for its pods, and waits with deadlines.
//!
//! The cluster ([`choose_cluster`]): the suite writes only to a cluster someone named for it.
//! 1. `WAYMARK_E2E_CONTEXT` names a context of the kubeconfig (`KUBECONFIG` or
//!    `~/.kube/config`): the suite uses that cluster, says so, installs the Waymark CRD, its
//!    ClusterRoles and a namespace per walk there; the cluster must already have the Gateway
//!    API CRDs. Its current context is never used unless named.
//! 2. Otherwise `KUBEBUILDER_ASSETS` names envtest binaries (etcd, kube-apiserver,
//!    kube-controller-manager): the suite starts its own control plane once per run
//!    ([`crate::control_plane`]) with the Deployment, ReplicaSet and EndpointSlice controllers,
//!    and installs the Waymark CRD and the Gateway API CRDs from `WAYMARK_E2E_GATEWAY_CRDS`
//!    (default: the shared fixtures beside the checkout, when they exist).
//! 3. Neither: with `CI=true` every walk fails; otherwise every walk prints `SKIPPED` and why.

use std::ffi::OsStr;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use gateway_api::apis::experimental::grpcroutes::GrpcRoute;
use gateway_api::apis::experimental::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use libtest_mimic::{Failed, Trial};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::control_plane::{self, Assets, ControlPlane, Options};
use crate::kubelet::{self, SimulatedNode};
use crate::prepare::{
    CONTROLLER_NAMESPACE, controller_user, gateway_crds, gateway_crds_dir, install_controller_rbac,
    install_crd,
};
use waymark::api::{ROUTE_FINALIZER, Release, ReleaseStatus, RouteKind};
use waymark::controller::{ControllerArgs, run_with_client};

/// Field manager of the suite's own writes (as the user, not as the controller).
pub const E2E_MANAGER: &str = "waymark-e2e";
/// How long any single wait may take before the walk fails with what it last saw.
pub const DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);
/// The variable naming the kubeconfig context of a cluster the suite may write to.
pub const CONTEXT_VARIABLE: &str = "WAYMARK_E2E_CONTEXT";
/// The series counting the controller's finished reconciles.
const RECONCILE_COUNT: &str = "waymark_reconcile_duration_seconds_count";
/// The annotation a walk changes on an object the controller watches, to make it reconcile.
const NUDGE_ANNOTATION: &str = "e2e.waymark.dev/nudge";

/// Which cluster the suite runs on, as its environment names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterChoice {
    /// A context of the kubeconfig, named in [`CONTEXT_VARIABLE`]: a cluster the suite did not
    /// start, which it may write to because someone said so.
    NamedContext(String),
    /// A control plane of the suite's own, started from the envtest binaries in this directory.
    OwnControlPlane(PathBuf),
    /// No cluster named: every walk is skipped saying why, or fails when `fail` (CI).
    NoneNamed { reason: String, fail: bool },
}

/// The cluster the suite may use, from `WAYMARK_E2E_CONTEXT` (`context`), `KUBEBUILDER_ASSETS`
/// (`assets`) and whether this is CI. A context named explicitly wins: it is the narrower
/// wish (the walks that need a control plane of their own still start one from the assets).
/// Whatever the kubeconfig's current context is, it is never chosen without being named:
/// `cargo test` must not install a CRD on a shared cluster because a shell pointed at it.
pub fn choose_cluster(context: Option<&str>, assets: Option<&OsStr>, in_ci: bool) -> ClusterChoice {
    if let Some(context) = context.map(str::trim).filter(|context| !context.is_empty()) {
        return ClusterChoice::NamedContext(context.to_string());
    }
    if let Some(assets) = assets.filter(|assets| !assets.is_empty()) {
        return ClusterChoice::OwnControlPlane(PathBuf::from(assets));
    }
    ClusterChoice::NoneNamed {
        reason: format!(
            "no cluster named for the e2e suite: set KUBEBUILDER_ASSETS to a directory of envtest \
             binaries (the suite starts a throwaway control plane), or {CONTEXT_VARIABLE} to a \
             kubeconfig context the suite may install the Waymark CRD, ClusterRoles and \
             namespaces on; the current kubeconfig context is never used unasked"
        ),
        fail: in_ci,
    }
}

/// The choice, table-driven (run by the harness without a cluster).
pub fn the_cluster_is_used_only_when_named() {
    let assets = Some(OsStr::new("/envtest/bin"));
    let own = ClusterChoice::OwnControlPlane(PathBuf::from("/envtest/bin"));
    let named = ClusterChoice::NamedContext("kind-dev".into());
    let cases = [
        // (what, WAYMARK_E2E_CONTEXT, KUBEBUILDER_ASSETS, CI, expected)
        (
            "a named context",
            Some("kind-dev"),
            None,
            false,
            Some(&named),
        ),
        (
            "a named context in CI",
            Some("kind-dev"),
            None,
            true,
            Some(&named),
        ),
        (
            "named, trimmed",
            Some(" kind-dev\n"),
            None,
            false,
            Some(&named),
        ),
        ("assets", None, assets, false, Some(&own)),
        ("assets in CI", None, assets, true, Some(&own)),
        (
            "both: the named context",
            Some("kind-dev"),
            assets,
            true,
            Some(&named),
        ),
        (
            "an empty context: the assets",
            Some(""),
            assets,
            false,
            Some(&own),
        ),
        (
            "blank context, empty assets",
            Some("  "),
            Some(OsStr::new("")),
            false,
            None,
        ),
        ("nothing", None, None, false, None),
        ("nothing in CI", None, None, true, None),
    ];
    for (what, context, assets, in_ci, expected) in cases {
        let choice = choose_cluster(context, assets, in_ci);
        match (expected, &choice) {
            (Some(expected), choice) => assert_eq!(choice, expected, "{what}"),
            (None, ClusterChoice::NoneNamed { reason, fail }) => {
                assert_eq!(*fail, in_ci, "{what}: fails in CI only");
                assert!(
                    reason.contains(CONTEXT_VARIABLE) && reason.contains("KUBEBUILDER_ASSETS"),
                    "{what}: says what to set: {reason}"
                );
            }
            (None, other) => panic!("{what}: no cluster was named, yet chose {other:?}"),
        }
    }
}

/// The cluster the run uses, decided once in `main`.
pub enum Target {
    /// A reachable cluster with everything installed.
    Cluster(Cluster),
    /// No cluster: the reason, and whether that fails the run (CI) or skips it.
    Unavailable { reason: String, fail: bool },
}

/// A reachable cluster.
#[derive(Clone)]
pub struct Cluster {
    /// The admin kubeconfig, its current context the cluster's.
    pub kubeconfig: PathBuf,
    /// Whether the suite started this control plane itself.
    pub own_control_plane: bool,
}

static TARGET: OnceLock<Target> = OnceLock::new();

/// What the run must keep until the walks are done, and drop before the process exits: the
/// control plane it started, or the kubeconfig it wrote for a named context.
pub struct RunGuard {
    _plane: Option<ControlPlane>,
    _kubeconfig_dir: Option<tempfile::TempDir>,
}

/// Decide the cluster, start and prepare it when the suite owns it.
pub fn setup() -> RunGuard {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `WAYMARK_E2E_LOG=waymark=debug` prints the in-process controllers' logs (an EnvFilter).
    if let Ok(filter) = std::env::var("WAYMARK_E2E_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let mut guard = RunGuard {
        _plane: None,
        _kubeconfig_dir: None,
    };
    let context = std::env::var(CONTEXT_VARIABLE).ok();
    let assets = std::env::var_os("KUBEBUILDER_ASSETS");
    let target = match choose_cluster(context.as_deref(), assets.as_deref(), in_ci()) {
        ClusterChoice::NoneNamed { reason, fail } => Target::Unavailable { reason, fail },
        // A cluster someone named that cannot be used fails the run, in CI or not.
        ClusterChoice::NamedContext(context) => match use_named_context(&context) {
            Ok((cluster, dir)) => {
                guard._kubeconfig_dir = Some(dir);
                Target::Cluster(cluster)
            }
            Err(reason) => Target::Unavailable { reason, fail: true },
        },
        ClusterChoice::OwnControlPlane(assets) => match start_own_control_plane(&assets) {
            Ok((cluster, plane)) => {
                guard._plane = Some(plane);
                Target::Cluster(cluster)
            }
            Err(reason) => Target::Unavailable { reason, fail: true },
        },
    };
    let target = match target {
        Target::Cluster(cluster) => match runtime().block_on(prepare(&cluster)) {
            Ok(()) => Target::Cluster(cluster),
            Err(reason) => Target::Unavailable { reason, fail: true },
        },
        unavailable => unavailable,
    };
    let _ = TARGET.set(target);
    guard
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// A control plane of our own, with the workload controllers the walks need.
fn start_control_plane(assets_dir: &Path) -> Result<ControlPlane, String> {
    let assets = Assets::find(assets_dir)?;
    if assets.kube_controller_manager.is_none() {
        return Err(format!(
            "KUBEBUILDER_ASSETS={} has no kube-controller-manager: the walks need its Deployment, \
             ReplicaSet and EndpointSlice controllers (envtest archives of setup-envtest ship it)",
            assets_dir.display()
        ));
    }
    ControlPlane::start_with(
        &assets,
        &Options {
            workload_controllers: true,
            ..Options::default()
        },
    )
}

fn start_own_control_plane(assets: &Path) -> Result<(Cluster, ControlPlane), String> {
    let started = std::time::Instant::now();
    let plane = start_control_plane(assets)?;
    eprintln!(
        "e2e: started a control plane at {} in {:.1}s (KUBEBUILDER_ASSETS)",
        plane.server(),
        started.elapsed().as_secs_f64(),
    );
    let cluster = Cluster {
        kubeconfig: plane.kubeconfig().to_path_buf(),
        own_control_plane: true,
    };
    Ok((cluster, plane))
}

/// The cluster of `context`: a kubeconfig of that context alone (its cluster and user, the
/// current context), written privately for the run, so that every client and command of the
/// suite (kubectl, `waymark`) uses that cluster whatever the user's current context is.
fn use_named_context(context: &str) -> Result<(Cluster, tempfile::TempDir), String> {
    let all = kube::config::Kubeconfig::read().map_err(|error| {
        format!("{CONTEXT_VARIABLE}={context}: cannot read the kubeconfig: {error}")
    })?;
    let named = all
        .contexts
        .iter()
        .find(|named| named.name == context)
        .cloned()
        .ok_or_else(|| {
            let known: Vec<&str> = all.contexts.iter().map(|c| c.name.as_str()).collect();
            format!(
                "{CONTEXT_VARIABLE}={context}: no such context in the kubeconfig (it has {known:?})"
            )
        })?;
    let (cluster_name, user_name) = named
        .context
        .as_ref()
        .map(|c| (c.cluster.clone(), c.user.clone()))
        .unwrap_or_default();
    let only = kube::config::Kubeconfig {
        clusters: all
            .clusters
            .iter()
            .filter(|cluster| cluster.name == cluster_name)
            .cloned()
            .collect(),
        auth_infos: all
            .auth_infos
            .iter()
            .filter(|user| Some(&user.name) == user_name.as_ref())
            .cloned()
            .collect(),
        contexts: vec![named],
        current_context: Some(context.to_string()),
        ..kube::config::Kubeconfig::default()
    };
    let dir = tempfile::Builder::new()
        .prefix("waymark-e2e-context-")
        .tempdir()
        .map_err(|error| format!("cannot create a temporary directory: {error}"))?;
    let path = dir.path().join("kubeconfig");
    let text = serde_saphyr::to_string(&only)
        .map_err(|error| format!("cannot write the kubeconfig of {context}: {error}"))?;
    control_plane::write_private(&path, &text)?;
    let version = runtime().block_on(async {
        let client = control_plane::client_for(&path).await?;
        match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
            Ok(Ok(version)) => Ok(version),
            Ok(Err(error)) => Err(format!("context {context} is not reachable: {error}")),
            Err(_) => Err(format!("context {context} did not answer within 10s")),
        }
    })?;
    eprintln!(
        "e2e: using context {context} ({CONTEXT_VARIABLE}), Kubernetes {}.{}: the suite installs \
         the Waymark CRD, its ClusterRoles and a namespace per walk (wm-*) there",
        version.major, version.minor
    );
    Ok((
        Cluster {
            kubeconfig: path,
            own_control_plane: false,
        },
        dir,
    ))
}

/// Install what every walk needs: the Waymark CRD, the Gateway API CRDs (own control plane),
/// and the controller's ServiceAccount with exactly the RBAC of `config/rbac/`.
async fn prepare(cluster: &Cluster) -> Result<(), String> {
    let client = admin_client_of(cluster).await?;
    install_crd(&client, &waymark::api::crd::release_crd(), E2E_MANAGER).await?;
    if cluster.own_control_plane {
        let dir = gateway_crds_dir()?;
        for crd in gateway_crds(&dir)? {
            install_crd(&client, &crd, E2E_MANAGER).await?;
        }
    }
    install_controller_rbac(&client, E2E_MANAGER).await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("cannot build a tokio runtime: {error}"))
}

async fn admin_client_of(cluster: &Cluster) -> Result<Client, String> {
    control_plane::client_for(&cluster.kubeconfig).await
}

async fn config_of(cluster: &Cluster) -> Result<kube::Config, String> {
    control_plane::config_for(&cluster.kubeconfig).await
}

/// A client on `cluster` acting as `user` (in `groups`), by impersonation from the admin
/// kubeconfig: the API server authorizes every call as that user.
async fn client_as_on(cluster: &Cluster, user: &str, groups: &[&str]) -> Client {
    let mut config = config_of(cluster)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    Client::try_from(config).unwrap_or_else(|error| panic!("cannot build a client: {error}"))
}

/// The controller's client on `cluster`: its ServiceAccount, with exactly the ClusterRole of
/// `config/rbac/`.
async fn controller_client_on(cluster: &Cluster) -> Client {
    client_as_on(
        cluster,
        &controller_user(),
        &[
            "system:serviceaccounts",
            &format!("system:serviceaccounts:{CONTROLLER_NAMESPACE}"),
            "system:authenticated",
        ],
    )
    .await
}

fn cluster() -> &'static Cluster {
    match TARGET.get() {
        Some(Target::Cluster(cluster)) => cluster,
        _ => panic!("the e2e cluster is not set up"),
    }
}

/// A kubeconfig file (in `dir`) that acts as `user` by impersonation from the admin
/// kubeconfig: a person with only that user's permissions, for commands run as they would.
pub async fn kubeconfig_as(user: &str, dir: &Path) -> PathBuf {
    let mut config = kube::config::Kubeconfig::read_from(kubeconfig_path())
        .unwrap_or_else(|error| panic!("cannot read the admin kubeconfig: {error}"));
    let current = config
        .contexts
        .iter()
        .find(|context| Some(&context.name) == config.current_context.as_ref())
        .and_then(|context| context.context.as_ref())
        .map(|context| context.user.clone())
        .unwrap_or_default();
    for named in &mut config.auth_infos {
        if named.name == current.as_deref().unwrap_or(named.name.as_str())
            && let Some(auth) = named.auth_info.as_mut()
        {
            auth.impersonate = Some(user.to_string());
            auth.impersonate_groups = Some(vec!["system:authenticated".to_string()]);
        }
    }
    let path = dir.join(format!("{user}.kubeconfig"));
    let text = serde_saphyr::to_string(&config).expect("a kubeconfig serializes");
    control_plane::write_private(&path, &text).unwrap_or_else(|error| panic!("{error}"));
    path
}

/// The admin kubeconfig path, for commands run as a user would (`waymark status`, kubectl):
/// its current context is the suite's cluster.
pub fn kubeconfig_path() -> PathBuf {
    cluster().kubeconfig.clone()
}

/// A walk: an async function of its [`Env`].
pub type Walk = fn(Env) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// A walk as a test of the harness: run in its own runtime and namespace, or skipped, or
/// failed when no cluster is there in CI.
pub fn trial(name: &'static str, walk: Walk) -> Trial {
    Trial::test(name, move || {
        on_cluster(name, |_| {
            runtime().block_on(run(name, walk));
            Ok(())
        })
    })
}

/// A walk that stops or breaks its control plane (an API-server restart, a CRD deleted): it
/// gets a control plane of its own, started from `KUBEBUILDER_ASSETS` and prepared like the
/// suite's, so that the other walks running meanwhile are not disturbed (also when the suite
/// runs on a named context).
pub fn private_trial(name: &'static str, walk: Walk) -> Trial {
    Trial::test(name, move || {
        on_cluster(name, |_| {
            let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|a| !a.is_empty())
            else {
                return skip_or_fail(
                    name,
                    "it needs a control plane of its own: set KUBEBUILDER_ASSETS",
                    in_ci(),
                );
            };
            // Blocking (it probes with a runtime of its own): before entering the walk's.
            let plane = start_control_plane(Path::new(&assets)).map_err(Failed::from)?;
            let cluster = Cluster {
                kubeconfig: plane.kubeconfig().to_path_buf(),
                own_control_plane: true,
            };
            let plane = Arc::new(Mutex::new(plane));
            let runtime = runtime();
            runtime.block_on(prepare(&cluster)).map_err(Failed::from)?;
            runtime.block_on(run_on(cluster, Some(plane.clone()), name, walk));
            drop(runtime);
            // The walk may have left it stopped or broken: it goes with the walk.
            drop(plane);
            Ok(())
        })
    })
}

/// Run `walk` when the suite has a cluster; otherwise skip it, or fail it in CI.
fn on_cluster(name: &str, walk: impl FnOnce(&Cluster) -> Result<(), Failed>) -> Result<(), Failed> {
    match TARGET.get() {
        Some(Target::Cluster(cluster)) => walk(cluster),
        Some(Target::Unavailable { reason, fail }) => skip_or_fail(name, reason, *fail),
        None => Err(Failed::from("the e2e harness was not set up")),
    }
}

fn skip_or_fail(name: &str, reason: &str, fail: bool) -> Result<(), Failed> {
    if fail {
        let ci = if in_ci() {
            " (CI=true: the e2e suite must run)"
        } else {
            ""
        };
        Err(Failed::from(format!("{name}: {reason}{ci}")))
    } else {
        eprintln!("SKIPPED {name}: {reason}");
        Ok(())
    }
}

/// One walk's world: an admin client, its namespace, the controller and a simulated node.
#[derive(Clone)]
pub struct Env {
    /// An admin client (the platform engineer).
    pub client: Client,
    /// The walk's own namespace, deleted at the end.
    pub namespace: String,
    cluster: Arc<Cluster>,
    /// The walk's own control plane, for walks that stop parts of it.
    plane: Option<Arc<Mutex<ControlPlane>>>,
    controller: Arc<Mutex<Option<RunningController>>>,
    /// `--notifications-config` of the controllers this walk starts.
    notifications_config: Arc<Mutex<Option<String>>>,
    node: kubelet::Controls,
}

struct RunningController {
    metrics_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), waymark::controller::Error>>,
}

impl Env {
    pub fn releases(&self) -> Api<Release> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn routes(&self) -> Api<HttpRoute> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn grpc_routes(&self) -> Api<GrpcRoute> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The Release's status, or a default one before the controller wrote any.
    pub async fn status(&self, name: &str) -> ReleaseStatus {
        self.releases()
            .get(name)
            .await
            .unwrap_or_else(|error| panic!("cannot read Release {name}: {error}"))
            .status
            .unwrap_or_default()
    }

    /// Start the controller (as its ServiceAccount, watching this namespace only).
    pub async fn start_controller(&self) {
        let client = controller_client_on(&self.cluster).await;
        let (stop, stopped) = oneshot::channel::<()>();
        // Walks run in parallel, each with its own metrics server.
        let port = control_plane::free_port().unwrap_or_else(|error| panic!("{error}"));
        let metrics_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let args = ControllerArgs {
            metrics_addr,
            namespace: Some(self.namespace.clone()),
            leader_elect: false,
            lease_namespace: None,
            notifications_config: self.notifications_config.lock().expect("lock").clone(),
        };
        let task = tokio::spawn(run_with_client(client, args, async move {
            let _ = stopped.await;
        }));
        let previous =
            self.controller
                .lock()
                .expect("controller lock")
                .replace(RunningController {
                    metrics_addr,
                    stop,
                    task,
                });
        assert!(previous.is_none(), "the controller was already running");
    }

    /// Stop the controller as a shutdown (SIGTERM) would, and wait until it has stopped.
    pub async fn stop_controller(&self) {
        let running = self.controller.lock().expect("controller lock").take();
        let Some(running) = running else {
            return;
        };
        let _ = running.stop.send(());
        match tokio::time::timeout(Duration::from_secs(20), running.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => panic!("the controller stopped with an error: {error}"),
            Ok(Err(error)) => panic!("the controller task failed: {error}"),
            Err(_) => panic!("the controller did not stop within 20s"),
        }
    }

    /// Run the controller with `--notifications-config config` from now on (restarted).
    pub async fn notify_with(&self, config: &str) {
        self.stop_controller().await;
        *self.notifications_config.lock().expect("lock") = Some(config.to_string());
        self.start_controller().await;
    }

    /// Stop the controller and start a new one, as a rollout of the operator would.
    pub async fn restart_controller(&self) {
        self.stop_controller().await;
        self.start_controller().await;
    }

    /// Whether the simulated node makes pods Ready once started (on by default). Off, new pods
    /// start but stay not Ready and Ready ones stay Ready; on again, the held pods turn Ready.
    pub fn set_pods_become_ready(&self, ready: bool) {
        self.node.set_pods_become_ready(ready);
    }

    /// How long the simulated node takes to start each pod from now on (varied per pod
    /// within `delay`).
    pub fn set_pod_start_delay(&self, delay: Range<Duration>) {
        self.node.set_start_delay(delay);
    }

    /// Lose the pods matching `selector` at once, as when their node fails (deleted without a
    /// grace period); their ReplicaSets make new ones. The names of the pods lost.
    pub async fn drop_pods(&self, selector: &str) -> Vec<String> {
        let pods = self
            .pods()
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap_or_else(|error| panic!("cannot list the pods {selector}: {error}"));
        let mut dropped = Vec::new();
        for pod in pods {
            let name = pod.name_any();
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            };
            match self.pods().delete(&name, &params).await {
                Ok(_) => dropped.push(name),
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(error) => panic!("cannot drop pod {name}: {error}"),
            }
        }
        dropped
    }

    /// How many reconciles the running controller has finished (its own `/metrics`: a new
    /// controller counts from 0).
    pub async fn reconciles(&self) -> u64 {
        let (code, text) = self.controller_http("/metrics").await;
        assert_eq!(code, 200, "the controller's /metrics: {text}");
        reconcile_count(&text)
            .unwrap_or_else(|| panic!("no {RECONCILE_COUNT} in the controller's /metrics"))
    }

    /// Wait until the running controller has finished `more` reconciles past `since`.
    async fn await_reconciles(&self, since: u64, more: u64, why: &str) -> u64 {
        eventually(why, || async {
            let now = self.reconciles().await;
            if now >= since + more {
                Ok(now)
            } else {
                Err(format!("{now} reconciles, {since} before"))
            }
        })
        .await
    }

    /// Wait until a controller started after the last (re)start has reconciled: whatever it
    /// decided, it decided on the world as it is since then.
    pub async fn await_first_reconcile(&self) {
        self.await_reconciles(0, 1, "a first reconcile of the new controller")
            .await;
    }

    /// Proof that the controller has looked at Release `name` as the world is now, before a
    /// walk asserts that nothing changed: nudge it (an annotation on the object of its traffic,
    /// which it watches) and wait for a reconcile, then nudge and wait again. A reconcile that
    /// finished after the count was read may have started before it; the one after it cannot
    /// have, since reconciles of one Release run one at a time.
    pub async fn await_fresh_reconcile(&self, name: &str) {
        let before = self.reconciles().await;
        self.nudge(name).await;
        let between = self
            .await_reconciles(
                before,
                1,
                &format!("a reconcile of Release {name} after a nudge"),
            )
            .await;
        self.nudge(name).await;
        self.await_reconciles(
            between,
            1,
            &format!("a second reconcile of Release {name} after a nudge"),
        )
        .await;
    }

    /// Change an annotation of the object Release `name` routes its traffic with (its
    /// HTTPRoute, or Service `<name>` with a replica split): the controller reconciles the
    /// Release, and has nothing to do about it.
    async fn nudge(&self, name: &str) {
        static NUDGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let count = NUDGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let release = self
            .releases()
            .get(name)
            .await
            .unwrap_or_else(|error| panic!("cannot read Release {name}: {error}"));
        let patch = Patch::Merge(serde_json::json!({
            "metadata": {"annotations": {NUDGE_ANNOTATION: count.to_string()}}
        }));
        let params = PatchParams {
            field_manager: Some(E2E_MANAGER.into()),
            ..PatchParams::default()
        };
        let route = release.spec.traffic.route();
        let written = match route {
            Some((RouteKind::Http, route)) => self
                .routes()
                .patch(route, &params, &patch)
                .await
                .map(|_| ()),
            Some((RouteKind::Grpc, route)) => self
                .grpc_routes()
                .patch(route, &params, &patch)
                .await
                .map(|_| ()),
            None => self
                .services()
                .patch(name, &params, &patch)
                .await
                .map(|_| ()),
        };
        written.unwrap_or_else(|error| panic!("cannot nudge Release {name}: {error}"));
    }

    /// The running controller's `/readyz`: its status code and text (0 and the error when it
    /// does not answer).
    pub async fn readyz(&self) -> (u16, String) {
        self.controller_http("/readyz").await
    }

    /// A GET of `path` on the running controller's metrics server: the status code and text
    /// (0 and the error when it does not answer).
    pub async fn controller_http(&self, path: &str) -> (u16, String) {
        let addr = self
            .controller
            .lock()
            .expect("controller lock")
            .as_ref()
            .map(|running| running.metrics_addr)
            .expect("the controller is running");
        let url = format!("http://{addr}{path}");
        let answer = async {
            let response = reqwest::get(&url).await?;
            let code = response.status().as_u16();
            Ok::<_, reqwest::Error>((code, response.text().await?))
        };
        match tokio::time::timeout(Duration::from_secs(5), answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => (0, error.to_string()),
            Err(_) => (0, format!("{url} did not answer within 5s")),
        }
    }

    fn plane(&self) -> Arc<Mutex<ControlPlane>> {
        self.plane
            .clone()
            .expect("this walk has no control plane of its own: register it with private_trial")
    }

    /// Stop the walk's own kube-apiserver (etcd and everything else keep running).
    pub async fn stop_api_server(&self) {
        let plane = self.plane();
        tokio::task::spawn_blocking(move || plane.lock().expect("plane lock").stop_apiserver())
            .await
            .expect("stopping kube-apiserver");
    }

    /// Start the walk's own kube-apiserver again on the same port and etcd; returns once it
    /// answers `/readyz`, with the moments its process started and it answered `/readyz`.
    pub async fn start_api_server(&self) -> (std::time::SystemTime, std::time::SystemTime) {
        let plane = self.plane();
        let started = std::time::SystemTime::now();
        tokio::task::spawn_blocking(move || plane.lock().expect("plane lock").start_apiserver())
            .await
            .expect("starting kube-apiserver")
            .unwrap_or_else(|error| panic!("{error}"));
        (started, std::time::SystemTime::now())
    }
}

/// Run `walk` in a fresh namespace with the controller and simulated kubelets running, then
/// stop both and delete the namespace, whether the walk passed or panicked.
async fn run(test: &str, walk: Walk) {
    run_on(cluster().clone(), None, test, walk).await;
}

/// [`run`] on `cluster`, which is `plane` when the walk has a control plane of its own.
async fn run_on(cluster: Cluster, plane: Option<Arc<Mutex<ControlPlane>>>, test: &str, walk: Walk) {
    let client = admin_client_of(&cluster)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let namespace = create_namespace(&client, test).await;
    let (node_controls, node_settings) = kubelet::Controls::new();
    let env = Env {
        client: client.clone(),
        namespace: namespace.clone(),
        cluster: Arc::new(cluster),
        plane,
        controller: Arc::new(Mutex::new(None)),
        notifications_config: Arc::default(),
        node: node_controls,
    };
    // A cluster of our own has no scheduler and no kubelet; on a named one, only when asked.
    let simulate = env.cluster.own_control_plane
        || std::env::var("WAYMARK_E2E_SIMULATE_KUBELET").is_ok_and(|value| value == "1");
    let node = if simulate {
        let node = SimulatedNode::register(&client, &format!("{namespace}-node"))
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let running = tokio::spawn(node.clone().run(
            client.clone(),
            namespace.clone(),
            node_settings,
        ));
        Some((node, running))
    } else {
        None
    };
    env.start_controller().await;

    let outcome = AssertUnwindSafe(walk(env.clone())).catch_unwind().await;

    let stopped = AssertUnwindSafe(env.stop_controller()).catch_unwind().await;
    let_releases_go(&env).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Err(error) = namespaces
        .delete(&namespace, &DeleteParams::background())
        .await
    {
        eprintln!("{test}: cannot delete namespace {namespace}: {error}");
    }
    if let Some((node, running)) = node {
        running.abort();
        // No kubelet is left to finish the pods the namespace's deletion stops: remove them
        // (the namespace being deleted, no new ones can be made), then the node.
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        if let Err(error) = env
            .pods()
            .delete_collection(&params, &ListParams::default())
            .await
        {
            eprintln!("{test}: cannot remove the pods of {namespace}: {error}");
        }
        node.unregister(&client).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    if let Err(panic) = stopped {
        std::panic::resume_unwind(panic);
    }
}

/// Remove the finalizer `waymark.dev/route` from the Releases a walk left mid-canary, as the
/// README tells a person to once the controller is gone: the namespace can then be deleted.
async fn let_releases_go(env: &Env) {
    let Ok(releases) = env.releases().list(&Default::default()).await else {
        return;
    };
    for release in releases {
        let finalizers: Vec<&String> = release
            .finalizers()
            .iter()
            .filter(|finalizer| *finalizer != ROUTE_FINALIZER)
            .collect();
        if finalizers.len() == release.finalizers().len() {
            continue;
        }
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": release.resource_version(),
            "finalizers": finalizers,
        }});
        if let Err(error) = env
            .releases()
            .patch(
                &release.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            eprintln!(
                "cannot remove the finalizer of {}: {error}",
                release.name_any()
            );
        }
    }
}

async fn create_namespace(client: &Client, test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let slug: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    let name = format!("wm-{}-{:x}", slug.trim_matches('-'), nanos & 0xff_ffff);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([("waymark.dev/e2e".to_string(), "true".to_string())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|error| panic!("cannot create namespace {name}: {error}"));
    name
}

/// The number of finished reconciles in a `/metrics` text (the sum over its series).
pub fn reconcile_count(metrics: &str) -> Option<u64> {
    let values: Vec<u64> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix(RECONCILE_COUNT))
        .filter(|rest| rest.starts_with([' ', '{']))
        .filter_map(|rest| rest.rsplit(' ').next())
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The reconcile count is read from the controller's own exposition.
pub fn the_reconcile_count_is_read_from_metrics() {
    let text = "# HELP waymark_reconcile_duration_seconds How long a reconcile took.\n\
                waymark_reconcile_duration_seconds_sum 0.5\n\
                waymark_reconcile_duration_seconds_count 12\n\
                waymark_reconcile_duration_seconds_count_other 3\n";
    assert_eq!(reconcile_count(text), Some(12));
    let labelled = "waymark_reconcile_duration_seconds_count{controller=\"a\"} 2\n\
                    waymark_reconcile_duration_seconds_count{controller=\"b\"} 3\n";
    assert_eq!(reconcile_count(labelled), Some(5));
    assert_eq!(reconcile_count("process_cpu_seconds_total 1\n"), None);
}

/// Poll `probe` until it returns `Ok`, or fail after [`DEADLINE`] naming what was awaited
/// and the last thing seen.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    eventually_within(DEADLINE, what, probe).await
}

/// [`eventually`] with its own deadline.
pub async fn eventually_within<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= until {
            panic!("timed out after {deadline:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every version of one object as a watch sees it, from the moment [`Versions::record`] was
/// called: to count writes and to check a sequence (route weights) for flaps.
pub struct Versions<K> {
    seen: Arc<Mutex<Vec<(tokio::time::Instant, K)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Versions<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    /// Start recording object `name` of `api`.
    pub async fn record(api: Api<K>, name: &str) -> Versions<K> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let (started_tx, started) = oneshot::channel::<()>();
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut started_tx = Some(started_tx);
                let mut events = watcher(api, config).default_backoff().boxed();
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                            let mut seen = seen.lock().expect("versions lock");
                            let new_version = seen.last().is_none_or(|(_, last): &(_, K)| {
                                last.meta().resource_version != object.meta().resource_version
                            });
                            if new_version {
                                seen.push((tokio::time::Instant::now(), object));
                            }
                        }
                        Ok(watcher::Event::InitDone) => {
                            if let Some(tx) = started_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        _ => {}
                    }
                }
            })
        };
        let _ = tokio::time::timeout(Duration::from_secs(30), started).await;
        Versions { seen, task }
    }

    /// The versions seen so far, oldest first.
    pub fn seen(&self) -> Vec<K> {
        self.seen
            .lock()
            .expect("versions lock")
            .iter()
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// The versions first seen before `moment`, oldest first.
    pub fn seen_before(&self, moment: tokio::time::Instant) -> Vec<K> {
        self.seen
            .lock()
            .expect("versions lock")
            .iter()
            .filter(|(at, _)| *at < moment)
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// How many new versions appeared after the first one seen.
    pub fn writes(&self) -> usize {
        self.seen
            .lock()
            .expect("versions lock")
            .len()
            .saturating_sub(1)
    }
}

impl<K> Drop for Versions<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}
