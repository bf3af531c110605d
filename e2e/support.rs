//! The e2e harness: a reachable cluster or a clear skip, the CRD installed and Established, a
//! fresh namespace per test with the controller running in-process, waits with deadlines.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use gateway_api::apis::experimental::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;

use waymark::api::{LABEL_RELEASE, Release, ReleaseStatus};
use waymark::controller::{ControllerArgs, run_with_client};

/// Field manager of the suite's own writes (as the user, not as the controller).
pub const E2E_MANAGER: &str = "waymark-e2e";
/// How long any single wait may take before the test fails with what it last saw.
pub const DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);
const GATEWAY_API_CRD: &str = "httproutes.gateway.networking.k8s.io";

/// One test's cluster: its client and namespace.
#[derive(Clone)]
pub struct Env {
    /// A client of the cluster in KUBECONFIG.
    pub client: Client,
    /// The test's own namespace, deleted at the end.
    pub namespace: String,
}

impl Env {
    pub fn releases(&self) -> Api<Release> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn deployments(&self) -> Api<Deployment> {
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
}

/// Run `body` in a fresh namespace with the controller running, then stop the controller and
/// delete the namespace, whether the body passed or panicked. Skips (returns) when no cluster
/// is reachable.
pub async fn run<F, Fut>(test: &str, needs_gateway_api: bool, body: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(client) = connect(test).await else {
        return;
    };
    install_crd(&client).await;
    if needs_gateway_api {
        require_gateway_api(&client).await;
    }
    let namespace = create_namespace(&client, test).await;
    let env = Env {
        client: client.clone(),
        namespace: namespace.clone(),
    };

    let (stop_controller, stopped) = oneshot::channel::<()>();
    let args = ControllerArgs {
        // Port 0: tests run in parallel, each with its own metrics server.
        metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        namespace: Some(namespace.clone()),
        leader_elect: false,
        lease_namespace: None,
    };
    let controller = tokio::spawn(run_with_client(client.clone(), args, async move {
        let _ = stopped.await;
    }));
    let simulator =
        simulate_readiness().then(|| tokio::spawn(mark_deployments_available(env.clone())));

    let outcome = AssertUnwindSafe(body(env.clone())).catch_unwind().await;

    let _ = stop_controller.send(());
    if let Some(simulator) = simulator {
        simulator.abort();
    }
    match tokio::time::timeout(Duration::from_secs(10), controller).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => eprintln!("{test}: controller stopped with an error: {error}"),
        Ok(Err(error)) => eprintln!("{test}: controller task failed: {error}"),
        Err(_) => eprintln!("{test}: controller did not stop within 10s"),
    }
    let namespaces: Api<Namespace> = Api::all(client);
    if let Err(error) = namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
    {
        eprintln!("{test}: cannot delete namespace {namespace}: {error}");
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn simulate_readiness() -> bool {
    std::env::var("WAYMARK_E2E_SIMULATE_READINESS").is_ok_and(|value| value == "1")
}

/// A client of a reachable cluster, or `None` (with a message saying the test is skipped).
async fn connect(test: &str) -> Option<Client> {
    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            eprintln!(
                "SKIPPED {test}: no Kubernetes cluster configured (KUBECONFIG / in-cluster): {error}"
            );
            return None;
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(version)) => {
            eprintln!(
                "{test}: cluster reachable, Kubernetes {}.{}",
                version.major, version.minor
            );
            Some(client)
        }
        Ok(Err(error)) => {
            eprintln!("SKIPPED {test}: the cluster in KUBECONFIG is not reachable: {error}");
            None
        }
        Err(_) => {
            eprintln!("SKIPPED {test}: the cluster in KUBECONFIG did not answer within 10s");
            None
        }
    }
}

/// Server-side apply the Release CRD and wait until it is Established.
async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = waymark::api::crd::release_crd();
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply(E2E_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap_or_else(|error| panic!("cannot install CRD {name}: {error}"));
    let established = await_condition(crds, &name, conditions::is_crd_established());
    match tokio::time::timeout(Duration::from_secs(60), established).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => panic!("waiting for CRD {name} to be Established failed: {error}"),
        Err(_) => panic!("CRD {name} was not Established within 60s"),
    }
}

async fn require_gateway_api(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let found = crds
        .get_opt(GATEWAY_API_CRD)
        .await
        .unwrap_or_else(|error| panic!("cannot look up CRD {GATEWAY_API_CRD}: {error}"));
    let established = found.as_ref().is_some_and(|crd| {
        crd.status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    });
    assert!(
        established,
        "the e2e suite needs the Gateway API CRDs (standard channel, HTTPRoute v1) installed \
         and Established in the cluster: {GATEWAY_API_CRD} is {}",
        if found.is_some() {
            "not Established"
        } else {
            "missing"
        }
    );
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
    let name = format!("wm-e2e-{}-{:x}", slug.trim_matches('-'), nanos & 0xff_ffff);
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

/// Stand in for kubelets: mark every Waymark Deployment in the namespace available by
/// patching its status, as often as needed (the controller cannot tell the difference).
async fn mark_deployments_available(env: Env) {
    let deployments = env.deployments();
    let selector = ListParams::default().labels(LABEL_RELEASE);
    loop {
        if let Ok(list) = deployments.list(&selector).await {
            for deployment in list {
                let replicas = deployment
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.replicas)
                    .unwrap_or(1);
                let generation = deployment.metadata.generation.unwrap_or(0);
                let status = deployment.status.clone().unwrap_or_default();
                let current = status.observed_generation == Some(generation)
                    && status.replicas.unwrap_or(0) == replicas
                    && status.updated_replicas.unwrap_or(0) == replicas
                    && status.available_replicas.unwrap_or(0) == replicas
                    && status.ready_replicas.unwrap_or(0) == replicas;
                if current {
                    continue;
                }
                let patch = json!({"status": {
                    "observedGeneration": generation,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                }});
                if let Err(error) = deployments
                    .patch_status(
                        &deployment.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    eprintln!("simulated readiness of {}: {error}", deployment.name_any());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Poll `probe` until it returns `Some`, or fail after [`DEADLINE`] naming what was awaited
/// and the last thing seen.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {DEADLINE:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}
