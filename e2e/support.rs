//! The e2e harness: which cluster the suite runs against, what it installs there, a fresh
//! namespace per walk with the controller running in-process as its ServiceAccount, and
//! waits with deadlines.
//!
//! The cluster, in order of preference:
//! 1. `KUBEBUILDER_ASSETS` names envtest binaries: the suite starts its own control plane once
//!    per run ([`crate::control_plane`]) and installs the Waymark CRD and the Gateway API CRDs
//!    from `WAYMARK_E2E_GATEWAY_CRDS` (default: the shared fixtures beside the checkout, when
//!    they exist).
//! 2. Otherwise the cluster in `KUBECONFIG` (or `~/.kube/config`), which must already have the
//!    Gateway API CRDs; the suite installs the Waymark CRD.
//! 3. Neither: with `CI=true` every walk fails; otherwise every walk prints `SKIPPED` and why.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use gateway_api::apis::experimental::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use libtest_mimic::{Failed, Trial};
use serde::de::DeserializeOwned;
use tokio::sync::{oneshot, watch};

use crate::control_plane::{self, Assets, ControlPlane};
use crate::kubelet::{available_patch, reported_available};
use crate::prepare::{
    CONTROLLER_NAMESPACE, controller_user, gateway_crds, gateway_crds_dir, install_controller_rbac,
    install_crd,
};
use waymark::api::{LABEL_RELEASE, ROUTE_FINALIZER, Release, ReleaseStatus};
use waymark::controller::{ControllerArgs, run_with_client};

/// Field manager of the suite's own writes (as the user, not as the controller).
pub const E2E_MANAGER: &str = "waymark-e2e";
/// How long any single wait may take before the walk fails with what it last saw.
pub const DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);

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
    /// The admin kubeconfig (`None`: the default one, from `KUBECONFIG` or `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// Whether the suite started this control plane itself.
    pub own_control_plane: bool,
}

static TARGET: OnceLock<Target> = OnceLock::new();

/// Decide the cluster, start and prepare it when the suite owns it. The returned control plane
/// (if any) must live until the walks have run, and be dropped before the process exits.
pub fn setup() -> Option<ControlPlane> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `WAYMARK_E2E_LOG=waymark=debug` prints the in-process controllers' logs (an EnvFilter).
    if let Ok(filter) = std::env::var("WAYMARK_E2E_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let in_ci = std::env::var("CI").is_ok_and(|value| value == "true");
    let (target, plane) = match choose_cluster() {
        Ok((cluster, plane)) => (Target::Cluster(cluster), plane),
        Err(reason) => (
            Target::Unavailable {
                reason,
                fail: in_ci,
            },
            None,
        ),
    };
    if let Target::Cluster(cluster) = &target {
        let runtime = runtime();
        if let Err(reason) = runtime.block_on(prepare(cluster, plane.is_some())) {
            // A cluster that cannot be prepared fails the run, in CI or not.
            let _ = TARGET.set(Target::Unavailable { reason, fail: true });
            return plane;
        }
    }
    let _ = TARGET.set(target);
    plane
}

fn choose_cluster() -> Result<(Cluster, Option<ControlPlane>), String> {
    if let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|v| !v.is_empty()) {
        let assets = Assets::find(Path::new(&assets))?;
        let started = std::time::Instant::now();
        let plane = ControlPlane::start(&assets)?;
        eprintln!(
            "e2e: started a control plane at {} in {:.1}s (kube-controller-manager: {})",
            plane.server(),
            started.elapsed().as_secs_f64(),
            if plane.has_controller_manager() {
                "yes"
            } else {
                "no"
            }
        );
        let cluster = Cluster {
            kubeconfig: Some(plane.kubeconfig().to_path_buf()),
            own_control_plane: true,
        };
        return Ok((cluster, Some(plane)));
    }
    let runtime = runtime();
    runtime.block_on(async {
        let client = Client::try_default().await.map_err(|error| {
            format!(
                "no cluster: KUBEBUILDER_ASSETS is not set and no kubeconfig works ({error}); \
                 see the README's e2e section"
            )
        })?;
        match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
            Ok(Ok(version)) => {
                eprintln!(
                    "e2e: using the cluster in KUBECONFIG, Kubernetes {}.{}",
                    version.major, version.minor
                );
                Ok((
                    Cluster {
                        kubeconfig: None,
                        own_control_plane: false,
                    },
                    None,
                ))
            }
            Ok(Err(error)) => Err(format!(
                "the cluster in KUBECONFIG is not reachable: {error}"
            )),
            Err(_) => Err("the cluster in KUBECONFIG did not answer within 10s".into()),
        }
    })
}

/// Install what every walk needs: the Waymark CRD, the Gateway API CRDs (own control plane),
/// and the controller's ServiceAccount with exactly the RBAC of `config/rbac/`.
async fn prepare(cluster: &Cluster, own: bool) -> Result<(), String> {
    let client = admin_client_of(cluster).await?;
    install_crd(&client, &waymark::api::crd::release_crd(), E2E_MANAGER).await?;
    if own {
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
    match &cluster.kubeconfig {
        Some(path) => control_plane::client_for(path).await,
        None => Client::try_default()
            .await
            .map_err(|error| format!("cannot build a client: {error}")),
    }
}

async fn config_of(cluster: &Cluster) -> Result<kube::Config, String> {
    match &cluster.kubeconfig {
        Some(path) => control_plane::config_for(path).await,
        None => kube::Config::infer()
            .await
            .map_err(|error| format!("cannot load the kubeconfig: {error}")),
    }
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
    let mut config = match kubeconfig_path() {
        Some(path) => kube::config::Kubeconfig::read_from(path),
        None => kube::config::Kubeconfig::read(),
    }
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
    let text = serde_yaml::to_string(&config).expect("a kubeconfig serializes");
    std::fs::write(&path, text).expect("write the kubeconfig");
    path
}

/// The admin kubeconfig path, for commands run as a user would (`waymark status`, kubectl).
pub fn kubeconfig_path() -> Option<PathBuf> {
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
/// suite's, so that the other walks running meanwhile are not disturbed.
pub fn private_trial(name: &'static str, walk: Walk) -> Trial {
    Trial::test(name, move || {
        on_cluster(name, |shared| {
            if !shared.own_control_plane {
                return skip_or_fail(
                    name,
                    "it needs a control plane of its own (KUBEBUILDER_ASSETS), not the cluster \
                     in KUBECONFIG",
                    std::env::var("CI").is_ok_and(|value| value == "true"),
                );
            }
            let assets = std::env::var_os("KUBEBUILDER_ASSETS")
                .ok_or_else(|| Failed::from("KUBEBUILDER_ASSETS is not set"))?;
            let assets = Assets::find(Path::new(&assets)).map_err(Failed::from)?;
            // Blocking (it probes with a runtime of its own): before entering the walk's.
            let plane = ControlPlane::start(&assets).map_err(Failed::from)?;
            let cluster = Cluster {
                kubeconfig: Some(plane.kubeconfig().to_path_buf()),
                own_control_plane: true,
            };
            let plane = Arc::new(Mutex::new(plane));
            let runtime = runtime();
            runtime
                .block_on(prepare(&cluster, true))
                .map_err(Failed::from)?;
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
        Err(Failed::from(format!(
            "{name}: {reason} (CI=true: the e2e suite must run)"
        )))
    } else {
        eprintln!("SKIPPED {name}: {reason}");
        Ok(())
    }
}

/// One walk's world: an admin client, its namespace, the controller and simulated kubelets.
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
    readiness: watch::Sender<bool>,
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

    /// Stop the controller and start a new one, as a rollout of the operator would.
    pub async fn restart_controller(&self) {
        self.stop_controller().await;
        self.start_controller().await;
    }

    /// Whether the simulated kubelets mark Deployments available (on by default).
    pub fn set_pods_become_ready(&self, ready: bool) {
        self.readiness.send_replace(ready);
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
    let (readiness, ready) = watch::channel(true);
    let env = Env {
        client: client.clone(),
        namespace: namespace.clone(),
        cluster: Arc::new(cluster),
        plane,
        controller: Arc::new(Mutex::new(None)),
        readiness,
    };
    env.start_controller().await;
    let simulate = env.cluster.own_control_plane
        || std::env::var("WAYMARK_E2E_SIMULATE_READINESS").is_ok_and(|value| value == "1");
    let kubelets = simulate.then(|| tokio::spawn(simulate_kubelets(env.clone(), ready)));

    let outcome = AssertUnwindSafe(walk(env.clone())).catch_unwind().await;

    if let Some(kubelets) = kubelets {
        kubelets.abort();
    }
    let stopped = AssertUnwindSafe(env.stop_controller()).catch_unwind().await;
    let_releases_go(&env).await;
    let namespaces: Api<Namespace> = Api::all(client);
    if let Err(error) = namespaces
        .delete(&namespace, &DeleteParams::background())
        .await
    {
        eprintln!("{test}: cannot delete namespace {namespace}: {error}");
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

/// Stand in for kubelets (there are none: nothing runs pods): watch Waymark's Deployments in
/// the namespace and, while `ready` is true, mark each available by patching its status. The
/// controller cannot tell the difference.
async fn simulate_kubelets(env: Env, mut ready: watch::Receiver<bool>) {
    let deployments = env.deployments();
    let config = watcher::Config::default().labels(LABEL_RELEASE);
    // Back within a second of an API-server restart (a walk restarts one): the controller's
    // timing is measured, not the simulated kubelet's.
    let mut events = watcher(deployments.clone(), config)
        .backoff(QuickRetry)
        .applied_objects()
        .boxed();
    let mut known: BTreeMap<String, Deployment> = BTreeMap::new();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(deployment)) => {
                    known.insert(deployment.name_any(), deployment);
                }
                Some(Err(_)) => continue,
                None => return,
            },
            changed = ready.changed() => if changed.is_err() { return },
        }
        if !*ready.borrow() {
            continue;
        }
        let stale: Vec<Deployment> = known
            .values()
            .filter(|d| d.meta().deletion_timestamp.is_none() && !reported_available(d))
            .cloned()
            .collect();
        for deployment in stale {
            let patch = available_patch(&deployment);
            let name = deployment.name_any();
            match deployments
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => {
                    known.insert(name, updated);
                }
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    known.remove(&name);
                }
                Err(error) => eprintln!("simulated kubelet for {name}: {error}"),
            }
        }
    }
}

/// Retry a failed watch of the harness after half a second, always.
struct QuickRetry;

impl Iterator for QuickRetry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(500))
    }
}

impl kube::runtime::utils::Backoff for QuickRetry {
    fn reset(&mut self) {}
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
