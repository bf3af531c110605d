//! The narrow types the controller caches its child Deployments and Services as: what a
//! decision reads of each, and nothing else. A full `Deployment` holds its pod template inline (about
//! three quarters of its size, even when emptied); at thousands of Releases, with one or two
//! children each, that is tens of megabytes of empty template space. The watch decodes straight
//! into this type (serde skips the fields it does not name), so the full object is never held.
//!
//! Writes still go through `Api<Deployment>` and `Api<Service>`; what a Deployment write
//! returns is narrowed with [`CachedDeployment::from`] before it is kept. The Deployment a Release's `spec.workloadRef`
//! names is not read through this cache (its template is read by name, see `super::workload`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};

/// A child Deployment as the cache keeps it: its metadata (identity, generation, labels,
/// owner references, Waymark's annotations), its replica count, and the three status counts
/// that say whether it has rolled out.
#[derive(kube::Resource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[resource(inherit = "Deployment")]
pub struct CachedDeployment {
    /// The object's metadata, without managed fields (see [`slim_cached_deployment`]).
    pub metadata: ObjectMeta,
    /// What the controller reads of the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<CachedDeploymentSpec>,
    /// What the controller reads of the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CachedDeploymentStatus>,
}

/// The part of `DeploymentSpec` a decision reads: the replica count (the template is compared
/// through the `waymark.dev/spec-hash` annotation instead).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedDeploymentSpec {
    /// `spec.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

/// The part of `DeploymentStatus` a decision reads: whether the Deployment controller has seen
/// the current generation, and how many pods run it and are available. Its conditions (text
/// the controller never reads) are not kept.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedDeploymentStatus {
    /// `status.observedGeneration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `status.updatedReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    /// `status.availableReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
}

impl From<Deployment> for CachedDeployment {
    /// Narrow what a write returned (the full object) to what the cache keeps.
    fn from(deployment: Deployment) -> CachedDeployment {
        let mut cached = CachedDeployment {
            metadata: deployment.metadata,
            spec: deployment.spec.map(|spec| CachedDeploymentSpec {
                replicas: spec.replicas,
            }),
            status: deployment.status.map(|status| CachedDeploymentStatus {
                observed_generation: status.observed_generation,
                updated_replicas: status.updated_replicas,
                available_replicas: status.available_replicas,
            }),
        };
        slim_cached_deployment(&mut cached);
        cached
    }
}

/// Drop what no decision reads from a cached Deployment's metadata before it is kept: its
/// managed fields, and every annotation but Waymark's own (the spec hash, `waymark.dev/adopt`):
/// the Deployment controller's revision annotation and `kubectl apply`'s last-applied copy are
/// never compared.
pub(crate) fn slim_cached_deployment(deployment: &mut CachedDeployment) {
    slim_meta(&mut deployment.metadata);
}

/// A child Service as the cache keeps it: its metadata (identity, labels, owner references,
/// Waymark's annotations), selector and ports. The rest (cluster IPs, session affinity, status)
/// is the API server's and never compared.
#[derive(kube::Resource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[resource(inherit = "Service")]
pub struct CachedService {
    /// The object's metadata, without managed fields (see [`slim_cached_service`]).
    pub metadata: ObjectMeta,
    /// What the controller reads of the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<CachedServiceSpec>,
}

/// The part of `ServiceSpec` Waymark sets and compares: the selector and the ports.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedServiceSpec {
    /// `spec.selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    /// `spec.ports`, each narrowed to the numbers Waymark sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<CachedServicePort>>,
}

/// The part of a `ServicePort` Waymark sets and compares (the API server fills in the protocol,
/// and a node port for some Service types).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedServicePort {
    /// `port`.
    pub port: i32,
    /// `targetPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
}

impl From<Service> for CachedService {
    /// Narrow a full Service (as written, or as a test builds it) to what the cache keeps.
    fn from(service: Service) -> CachedService {
        let mut cached = CachedService {
            metadata: service.metadata,
            spec: service.spec.map(|spec| CachedServiceSpec {
                selector: spec.selector,
                ports: spec.ports.map(|ports| {
                    ports
                        .into_iter()
                        .map(|port| CachedServicePort {
                            port: port.port,
                            target_port: port.target_port,
                        })
                        .collect()
                }),
            }),
        };
        slim_cached_service(&mut cached);
        cached
    }
}

/// Drop what no decision reads from a cached Service's metadata: its managed fields, and every
/// annotation but Waymark's own (`waymark.dev/adopt` among them).
pub(crate) fn slim_cached_service(service: &mut CachedService) {
    slim_meta(&mut service.metadata);
}

/// Drop the managed fields and every annotation not under `waymark.dev/` (`kubectl apply`'s
/// last-applied copy would hold the whole object again).
fn slim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with("waymark.dev/"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ANNOTATION_ADOPT, ANNOTATION_SPEC_HASH, LABEL_REVISION, Release, Role};
    use crate::controller::{apply, children, observe};
    use crate::fixtures::ReleaseBuilder;
    use kube::Resource;
    use serde_json::json;

    /// A child Deployment as the API server returns it: full pod template, managed fields,
    /// the Deployment controller's annotation and conditions.
    fn served(release: &Release) -> serde_json::Value {
        let revision =
            crate::api::template_revision(&crate::fixtures::template(crate::fixtures::V1));
        let mut deployment = serde_json::to_value(
            children::deployment(release, Role::Stable, &revision, 4).unwrap(),
        )
        .unwrap();
        let metadata = &mut deployment["metadata"];
        metadata["uid"] = json!("0b3f1c2e-0000-4000-8000-000000000001");
        metadata["generation"] = json!(3);
        metadata["resourceVersion"] = json!("4711");
        metadata["annotations"]["deployment.kubernetes.io/revision"] = json!("2");
        metadata["annotations"][ANNOTATION_ADOPT] = json!("true");
        metadata["managedFields"] = json!([{
            "manager": "waymark", "operation": "Apply", "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}
        }]);
        deployment["spec"]["strategy"] = json!({"type": "RollingUpdate"});
        deployment["spec"]["progressDeadlineSeconds"] = json!(600);
        deployment["status"] = json!({
            "observedGeneration": 3,
            "replicas": 4,
            "updatedReplicas": 4,
            "readyReplicas": 4,
            "availableReplicas": 4,
            "conditions": [{
                "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability."
            }]
        });
        deployment
    }

    #[test]
    fn a_served_deployment_decodes_into_what_decisions_read_and_round_trips() {
        let release = ReleaseBuilder::replica_split().build();
        let json = served(&release);
        assert!(
            json["spec"]["template"]["spec"]["containers"][0]["image"].is_string(),
            "the served object carries a full pod template: {json}"
        );
        let mut cached: CachedDeployment = serde_json::from_value(json.clone()).unwrap();
        slim_cached_deployment(&mut cached);
        // Decoding straight from JSON and narrowing a decoded full Deployment agree.
        let full: Deployment = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(cached, CachedDeployment::from(full.clone()));

        assert_eq!(cached.metadata.managed_fields, None);
        let annotations = cached.metadata.annotations.clone().unwrap();
        assert!(
            annotations
                .keys()
                .all(|key| key.starts_with("waymark.dev/")),
            "only Waymark's annotations are kept: {annotations:?}"
        );
        assert!(
            annotations.contains_key(ANNOTATION_SPEC_HASH)
                && annotations.contains_key(ANNOTATION_ADOPT)
        );
        assert!(apply::owned_by(cached.meta(), &release));
        assert!(apply::adoptable(cached.meta()));
        assert_eq!(
            cached.metadata.labels.as_ref().unwrap().get(LABEL_REVISION),
            full.metadata.labels.as_ref().unwrap().get(LABEL_REVISION)
        );
        let wanted = children::deployment(
            &release,
            Role::Stable,
            full.metadata.labels.as_ref().unwrap()[LABEL_REVISION].as_str(),
            4,
        )
        .unwrap();
        assert!(children::deployment_up_to_date(&cached, &wanted));
        let state = observe::workload_state(&cached);
        assert!(state.available && state.settled, "{state:?}");
        assert_eq!(state.replicas, 4);

        // Serialized and decoded again, nothing a decision reads is lost, and nothing else is
        // written.
        let written = serde_json::to_value(&cached).unwrap();
        assert_eq!(written["spec"], json!({"replicas": 4}));
        assert_eq!(
            written["status"],
            json!({"observedGeneration": 3, "updatedReplicas": 4, "availableReplicas": 4})
        );
        let again: CachedDeployment = serde_json::from_value(written).unwrap();
        assert_eq!(again, cached);
    }
}
