//! What the kubelets and the Deployment controller would report for a Deployment whose pods all
//! run. The bench's control plane runs no Deployment controller and has no nodes, so the bench
//! writes it itself (the e2e suite runs the real Deployment controller and simulates kubelets).

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

fn desired_replicas(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1)
}

/// Whether a Deployment's status already says all of its replicas are available.
pub fn reported_available(deployment: &Deployment) -> bool {
    let replicas = desired_replicas(deployment);
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    status.observed_generation == Some(generation)
        && status.replicas.unwrap_or(0) == replicas
        && status.updated_replicas.unwrap_or(0) == replicas
        && status.available_replicas.unwrap_or(0) == replicas
        && status.ready_replicas.unwrap_or(0) == replicas
}

/// The merge patch of the status subresource that marks `deployment`'s current generation
/// rolled out with every replica available.
pub fn available_patch(deployment: &Deployment) -> Value {
    let replicas = desired_replicas(deployment);
    json!({"status": {
        "observedGeneration": deployment.metadata.generation.unwrap_or(0),
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }})
}
