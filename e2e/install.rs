//! What a platform team installs, on a real API server, with the real `helm` (see
//! `tests/common/helm.rs`): every object the chart renders passes the API server's validation,
//! and on an empty control plane `helm install` is one command that brings the CRD with it,
//! upgrades it, and leaves it (with every Release) behind on `helm uninstall`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::pinned_kind;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::control_plane::{Assets, ControlPlane, client_for};
use crate::fixtures::release;
use crate::helm_support::{Helm, RELEASE_NAME, chart_dir, find_helm};
use crate::support::{DEADLINE, E2E_MANAGER, Env};
use waymark::api::Release;

const CRD_NAME: &str = "releases.waymark.dev";
const KEEP_POLICY: &str = "helm.sh/resource-policy";

/// Every object the chart renders (default values, the CRD included, and one watched namespace
/// with three replicas) is accepted by a server-side dry-run apply with strict field validation
/// (an unknown or misplaced field fails): schema, defaults, RBAC rules and references all as
/// the API server sees them. Then, on a control plane of its own, the README's install:
/// [`helm_installs_upgrades_and_uninstalls_keeping_the_crd`].
pub async fn the_helm_chart_applies_to_the_api_server(env: Env) {
    let helm = match find_helm() {
        Ok(helm) => helm,
        Err(reason) if std::env::var("CI").is_ok_and(|value| value == "true") => {
            panic!("{reason} (CI=true: the chart must be installed)")
        }
        Err(reason) => {
            eprintln!("SKIPPED the_helm_chart_applies_to_the_api_server: {reason}");
            return;
        }
    };
    let watched = format!("{{watchNamespace: {}, replicaCount: 3}}", env.namespace);
    for (what, values) in [
        ("default values", ""),
        ("watchNamespace, 3 replicas", watched.as_str()),
    ] {
        let documents = helm
            .template_as(RELEASE_NAME, &env.namespace, values, &[])
            .unwrap_or_else(|error| panic!("{what}: helm template refuses: {error}"));
        assert!(
            documents.len() >= 8,
            "{what}: {} documents",
            documents.len()
        );
        for document in documents {
            dry_run_apply(&env, what, document).await;
        }
    }

    match std::env::var_os("KUBEBUILDER_ASSETS").filter(|value| !value.is_empty()) {
        Some(assets) => {
            let assets = Assets::find(Path::new(&assets)).expect("the suite's assets");
            helm_installs_upgrades_and_uninstalls_keeping_the_crd(&helm, assets).await;
        }
        // A shared cluster already has the CRD and the suite's RBAC, which an install of the
        // chart would collide with.
        None => eprintln!(
            "the_helm_chart_applies_to_the_api_server: no KUBEBUILDER_ASSETS, so no control plane \
             of its own for `helm install`: only the dry-run above ran"
        ),
    }
}

async fn dry_run_apply(env: &Env, what: &str, document: serde_json::Value) {
    let object: DynamicObject = serde_json::from_value(document.clone())
        .unwrap_or_else(|error| panic!("{what}: not an object: {error}: {document:?}"));
    let types = object.types.clone().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(&types).expect("a group/version/kind");
    let (resource, capabilities) = pinned_kind(&env.client, &gvk)
        .await
        .unwrap_or_else(|error| panic!("{what}: {} is not served: {error}", types.kind));
    let name = object.metadata.name.clone().expect("a name");
    let api: Api<DynamicObject> = match capabilities.scope {
        kube::discovery::Scope::Namespaced => Api::namespaced_with(
            env.client.clone(),
            object
                .metadata
                .namespace
                .as_deref()
                .unwrap_or(&env.namespace),
            &resource,
        ),
        kube::discovery::Scope::Cluster => Api::all_with(env.client.clone(), &resource),
    };
    api.patch(
        &name,
        &PatchParams::apply(E2E_MANAGER)
            .dry_run()
            .validation_strict(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|error| {
        panic!(
            "{what}: the API server refuses {} {name}: {error}",
            types.kind
        )
    });
}

/// `helm` with `args` against the cluster of `kubeconfig`, after the walk's deadline at most:
/// its standard output, or its standard error as `Err`.
async fn helm_on(helm: &Helm, kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    let mut command = helm.command(args);
    command.arg("--kubeconfig").arg(kubeconfig);
    let described = format!("helm {}", args.join(" "));
    let run = tokio::task::spawn_blocking(move || command.output());
    let output = tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("{described}: no answer within {DEADLINE:?}"))
        .expect("the helm task")
        .unwrap_or_else(|error| panic!("cannot run {described}: {error}"));
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

async fn helm_ok(helm: &Helm, kubeconfig: &Path, args: &[&str]) -> String {
    helm_on(helm, kubeconfig, args)
        .await
        .unwrap_or_else(|error| panic!("helm {} fails: {error}", args.join(" ")))
}

/// The live CRD, which must exist.
async fn live_crd(client: &Client) -> CustomResourceDefinition {
    Api::<CustomResourceDefinition>::all(client.clone())
        .get(CRD_NAME)
        .await
        .unwrap_or_else(|error| panic!("{CRD_NAME} is not there: {error}"))
}

fn keep_policy(crd: &CustomResourceDefinition) -> Option<&str> {
    crd.annotations().get(KEEP_POLICY).map(String::as_str)
}

/// On an empty control plane, the README's one command installs everything, the CRD
/// included, by server-side apply; Releases can then be created; `helm upgrade` updates the
/// CRD like any other object of the chart; `helm uninstall` removes the controller but keeps
/// the CRD and every Release, and installing again takes the kept CRD back. A second
/// installation must leave the CRD to the first (`crds.install=false`), and can.
async fn helm_installs_upgrades_and_uninstalls_keeping_the_crd(helm: &Helm, assets: Assets) {
    // Blocking (it probes with a runtime of its own): off the walk's runtime.
    let plane =
        tokio::task::spawn_blocking(move || ControlPlane::start_with(&assets, &Default::default()))
            .await
            .expect("the control-plane task")
            .unwrap_or_else(|error| {
                panic!("cannot start a control plane for helm install: {error}")
            });
    let kubeconfig: PathBuf = plane.kubeconfig().to_path_buf();
    let client = client_for(&kubeconfig).await.expect("a client");
    let chart = chart_dir();
    let chart = chart.to_str().expect("a UTF-8 checkout path");
    let install = [
        "install",
        "waymark",
        chart,
        "--namespace",
        "waymark-system",
        "--create-namespace",
    ];

    // 1. One command, on a cluster that has nothing of Waymark.
    let started = std::time::Instant::now();
    helm_ok(helm, &kubeconfig, &install).await;
    eprintln!(
        "e2e: helm {} installed the chart, CRD included, on an empty control plane in {:.1}s",
        helm.version,
        started.elapsed().as_secs_f64()
    );
    let crd = live_crd(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    tokio::time::timeout(
        DEADLINE,
        await_condition(crds.clone(), CRD_NAME, conditions::is_crd_established()),
    )
    .await
    .expect("the CRD established in time")
    .expect("watching the CRD");
    assert_eq!(keep_policy(&crd), Some("keep"), "{:?}", crd.annotations());
    let helm_fields: Vec<_> = crd
        .managed_fields()
        .iter()
        .filter(|entry| entry.manager.as_deref() == Some("helm"))
        .map(|entry| entry.operation.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        helm_fields,
        ["Apply"],
        "Helm 4 installs by server-side apply (no last-applied annotation, which this CRD would \
         overflow): {:?}",
        crd.managed_fields()
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "waymark-system");
    deployments
        .get("waymark-controller")
        .await
        .expect("the controller's Deployment");
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    cluster_roles
        .get("waymark-controller")
        .await
        .expect("the controller's ClusterRole");

    // 2. The CRD Helm installed serves Releases.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "shop"}})).expect("a Namespace"),
        )
        .await
        .expect("namespace shop");
    let releases: Api<Release> = Api::namespaced(client.clone(), "shop");
    releases
        .create(
            &PostParams::default(),
            &release("checkout", "checkout", json!([{"setWeight": 50}])),
        )
        .await
        .expect("a Release, under the CRD the chart installed");

    // 3. `helm upgrade` applies the CRD from templates/ (Helm's crds/ directory it never
    //    upgrades): turning the keep policy off reaches the live CRD, and back on again.
    let upgrade = |sets: &'static [&'static str]| {
        let mut args = vec!["upgrade", "waymark", chart, "--namespace", "waymark-system"];
        for set in sets {
            args.extend(["--set", set]);
        }
        args
    };
    helm_ok(helm, &kubeconfig, &upgrade(&["crds.keep=false"])).await;
    let crd = live_crd(&client).await;
    assert_eq!(keep_policy(&crd), None, "{:?}", crd.annotations());
    helm_ok(helm, &kubeconfig, &upgrade(&["replicaCount=2"])).await;
    assert_eq!(keep_policy(&live_crd(&client).await), Some("keep"));
    Api::<PodDisruptionBudget>::namespaced(client.clone(), "waymark-system")
        .get("waymark-controller")
        .await
        .expect("two replicas bring a PodDisruptionBudget");

    // 4. A second installation collides on the CRD unless it leaves it to the first.
    let second = [
        "install",
        "shop-waymark",
        chart,
        "--namespace",
        "shop",
        "--set",
        "watchNamespace=shop",
        "--set",
        "rbac.userRoles=false",
    ];
    let refused = helm_on(helm, &kubeconfig, &second)
        .await
        .expect_err("a second installation carrying the CRD was accepted");
    assert!(
        refused.contains(
            "crds.install: the CRD releases.waymark.dev is installed by the Helm \
                          release \"waymark\" in namespace \"waymark-system\""
        ) && refused.contains("set crds.install=false for this one"),
        "{refused}"
    );
    let mut second_without_crd = second.to_vec();
    second_without_crd.extend(["--set", "crds.install=false"]);
    helm_ok(helm, &kubeconfig, &second_without_crd).await;
    helm_ok(
        helm,
        &kubeconfig,
        &["uninstall", "shop-waymark", "--namespace", "shop"],
    )
    .await;

    // 5. `helm uninstall` takes the controller away and leaves the CRD and every Release.
    let uninstalled = helm_ok(
        helm,
        &kubeconfig,
        &["uninstall", "waymark", "--namespace", "waymark-system"],
    )
    .await;
    assert!(
        uninstalled.contains(CRD_NAME),
        "helm says which resources it kept: {uninstalled}"
    );
    assert!(
        deployments
            .get_opt("waymark-controller")
            .await
            .expect("a get")
            .is_none(),
        "the controller is uninstalled"
    );
    assert_eq!(keep_policy(&live_crd(&client).await), Some("keep"));
    releases
        .get("checkout")
        .await
        .expect("the Release outlives helm uninstall");

    // 6. The same command again takes the kept CRD back into the release.
    helm_ok(helm, &kubeconfig, &install).await;
    let crd = live_crd(&client).await;
    assert_eq!(
        crd.annotations()
            .get("meta.helm.sh/release-name")
            .map(String::as_str),
        Some("waymark")
    );
    releases
        .get("checkout")
        .await
        .expect("the Release is still there");

    drop(plane);
}
