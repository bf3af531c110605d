//! What a platform team installs, on a real API server: the Helm chart's manifests (rendered by
//! the test-side renderer) pass the API server's validation.

use kube::Api;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::pinned_kind;

use crate::chart_support::{RELEASE_NAME, render_chart_as};
use crate::support::{E2E_MANAGER, Env};

/// Every object the chart renders (default values, and one watched namespace with three
/// replicas) is accepted by `kubectl apply --dry-run=server` with strict field validation (an
/// unknown or misplaced field fails): schema, defaults, RBAC rules and
/// references all as the API server sees them.
pub async fn the_helm_chart_applies_to_the_api_server(env: Env) {
    let watched = serde_yaml::from_str(&format!(
        "{{watchNamespace: {}, replicaCount: 3}}",
        env.namespace
    ))
    .expect("overrides");
    for (what, overrides) in [
        ("default values", serde_yaml::Value::Null),
        ("watchNamespace, 3 replicas", watched),
    ] {
        let documents = render_chart_as(RELEASE_NAME, &env.namespace, &overrides)
            .unwrap_or_else(|error| panic!("{what}: the chart does not render: {error}"));
        assert!(
            documents.len() >= 8,
            "{what}: {} documents",
            documents.len()
        );
        for document in documents {
            let object: DynamicObject = serde_yaml::from_value(document.clone())
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
    }
}
