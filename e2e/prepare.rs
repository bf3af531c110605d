//! What a fresh cluster needs before Waymark runs on it: the Waymark CRD, the Gateway API CRDs
//! and the controller's ServiceAccount with exactly the RBAC of `config/rbac/`. Shared by the
//! e2e suite and the scale bench (`benches/scale.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

/// Where the controller's ServiceAccount lives (as in `config/rbac/`).
pub const CONTROLLER_NAMESPACE: &str = "waymark-system";
/// The controller's ServiceAccount (as in `config/rbac/`).
pub const CONTROLLER_ACCOUNT: &str = "waymark-controller";
const GATEWAY_API_CRD: &str = "httproutes.gateway.networking.k8s.io";

/// The user name the API server gives the controller's ServiceAccount.
pub fn controller_user() -> String {
    format!("system:serviceaccount:{CONTROLLER_NAMESPACE}:{CONTROLLER_ACCOUNT}")
}

/// The Gateway API CRDs' directory: `WAYMARK_E2E_GATEWAY_CRDS`, or the shared fixtures.
pub fn gateway_crds_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("WAYMARK_E2E_GATEWAY_CRDS").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/gateway-api");
    if default.is_dir() {
        Ok(default)
    } else {
        Err(
            "a control plane of our own needs the Gateway API CRDs (v1.x, standard channel): \
             set WAYMARK_E2E_GATEWAY_CRDS to a directory of their YAML files"
                .into(),
        )
    }
}

/// The CRDs in the YAML files of `dir`, which must include the HTTPRoute's.
pub fn gateway_crds(dir: &Path) -> Result<Vec<CustomResourceDefinition>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|error| format!("cannot read {}: {error}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        crds.extend(yaml_documents::<CustomResourceDefinition>(&file)?);
    }
    if !crds.iter().any(|crd| crd.name_any() == GATEWAY_API_CRD) {
        return Err(format!("{} holds no {GATEWAY_API_CRD}", dir.display()));
    }
    Ok(crds)
}

/// Every YAML document of `file` as a `K`.
pub fn yaml_documents<K: DeserializeOwned>(file: &Path) -> Result<Vec<K>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|error| format!("cannot read {}: {error}", file.display()))?;
    let values = serde_saphyr::from_multiple::<serde_json::Value>(&text)
        .map_err(|error| format!("{} is not YAML: {error}", file.display()))?;
    values
        .into_iter()
        .filter(|value| !value.is_null())
        .map(|value| {
            serde_json::from_value(value).map_err(|error| format!("{}: {error}", file.display()))
        })
        .collect()
}

/// Server-side apply `crd` as `manager` and wait until it is Established.
pub async fn install_crd(
    client: &Client,
    crd: &CustomResourceDefinition,
    manager: &str,
) -> Result<(), String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    let mut crd = crd.clone();
    crd.metadata.managed_fields = None;
    crd.metadata.resource_version = None;
    crds.patch(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(|error| format!("cannot install CRD {name}: {error}"))?;
    let established = await_condition(crds, &name, conditions::is_crd_established());
    match tokio::time::timeout(Duration::from_secs(60), established).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("waiting for CRD {name} to be Established: {error}")),
        Err(_) => Err(format!("CRD {name} was not Established within 60s")),
    }
}

fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The controller's namespace and ServiceAccount, its ClusterRole and the binding, and the roles
/// for people, as `config/rbac/` ships them, server-side applied as `manager`.
pub async fn install_controller_rbac(client: &Client, manager: &str) -> Result<(), String> {
    let apply = PatchParams::apply(manager).force();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CONTROLLER_NAMESPACE}
    }))
    .map_err(|error| error.to_string())?;
    namespaces
        .patch(CONTROLLER_NAMESPACE, &apply, &Patch::Apply(&namespace))
        .await
        .map_err(|error| format!("cannot create namespace {CONTROLLER_NAMESPACE}: {error}"))?;
    for account in yaml_documents::<ServiceAccount>(&manifest("config/rbac/service_account.yaml"))?
    {
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
        api.patch(&account.name_any(), &apply, &Patch::Apply(&account))
            .await
            .map_err(|error| format!("cannot apply ServiceAccount: {error}"))?;
    }
    // The controller's role; `waymark-secret-reader` and `waymark-notifications-reader`, which
    // a walk binds in its namespace as the files say to; the roles for people (viewer, operator), aggregated into the built-in
    // view/edit/admin.
    for file in [
        "config/rbac/role.yaml",
        "config/rbac/secret_reader_role.yaml",
        "config/rbac/notifications_reader_role.yaml",
        "config/rbac/user_roles.yaml",
    ] {
        for role in yaml_documents::<ClusterRole>(&manifest(file))? {
            let api: Api<ClusterRole> = Api::all(client.clone());
            api.patch(&role.name_any(), &apply, &Patch::Apply(&role))
                .await
                .map_err(|error| {
                    format!("cannot apply ClusterRole {}: {error}", role.name_any())
                })?;
        }
    }
    for binding in yaml_documents::<ClusterRoleBinding>(&manifest("config/rbac/role_binding.yaml"))?
    {
        let api: Api<ClusterRoleBinding> = Api::all(client.clone());
        api.patch(&binding.name_any(), &apply, &Patch::Apply(&binding))
            .await
            .map_err(|error| format!("cannot apply ClusterRoleBinding: {error}"))?;
    }
    Ok(())
}
