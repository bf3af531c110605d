//! The narrow types the controller caches Releases and their child Deployments and Services
//! as: what a decision reads of each, and nothing else (a Release's spec and status are kept
//! as JSON and decoded for the reconcile, see [`CachedRelease`]). A full `Deployment` holds its pod template inline (about
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
use kube::Resource;
use kube::api::ObjectMeta;

use crate::api::{Release, ReleaseSpec, ReleaseStatus, RouteKind};
use serde::{Deserialize, Serialize};

/// A child Deployment as the cache keeps it: its metadata (identity, generation, labels,
/// owner references, Waymark's annotations), its replica count, and the three status counts
/// that say whether it has rolled out.
#[derive(kube::Resource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[resource(inherit = "Deployment")]
pub struct CachedDeployment {
    /// The object's metadata, without managed fields (see [`slim_child`]).
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
        slim_child(&mut cached);
        cached
    }
}

/// A child Service as the cache keeps it: its metadata (identity, labels, owner references,
/// Waymark's annotations), selector and ports. The rest (cluster IPs, session affinity, status)
/// is the API server's and never compared.
#[derive(kube::Resource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[resource(inherit = "Service")]
pub struct CachedService {
    /// The object's metadata, without managed fields (see [`slim_child`]).
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
        slim_child(&mut cached);
        cached
    }
}

/// Drop what no decision reads from a cached child's metadata before it is kept: its managed
/// fields, and every annotation but Waymark's own (the spec hash, `waymark.dev/adopt`). The
/// Deployment controller's revision annotation and `kubectl apply`'s last-applied copy (the
/// whole object again) are never compared.
pub(crate) fn slim_child<K: Resource>(child: &mut K) {
    let meta = child.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with("waymark.dev/"));
    }
}

/// A Release as the cache keeps it: its metadata as it is (the identity, generation and
/// deletion the controller and the cache key read), its spec and status as their compact JSON,
/// and the few fields the watch triggers read without decoding ([`ReleaseIndex`]).
///
/// Decoded, a Release is about 8 KB before its status: its pod template alone is 6 KB of
/// `k8s-openapi` structs (a `Container` is 2 KB inline, most of it empty `Option`s), against
/// about 150 bytes of JSON. At 10,000 Releases that was the largest part of the controller's
/// memory. A reconcile decodes the Release it works on ([`CachedRelease::release`], tens of
/// microseconds), so everything past the cache sees the typed `Release`.
#[derive(kube::Resource, Deserialize, Clone, Debug)]
#[resource(inherit = "Release")]
#[serde(try_from = "Release")]
pub struct CachedRelease {
    /// The Release's metadata (managed fields dropped, see `super::slim_release`).
    pub metadata: ObjectMeta,
    /// `{"spec": ..., "status": ...}` as compact JSON, written from the typed Release.
    body: Box<str>,
    /// What the watch triggers read of the spec and status.
    index: ReleaseIndex,
}

/// What the watch triggers read of a cached Release without decoding it: which route and
/// which Deployment it names, and its manual request.
#[derive(Clone, Debug, Default, PartialEq)]
struct ReleaseIndex {
    /// `spec.traffic.gatewayAPI`'s route, as its kind and name.
    route: Option<(RouteKind, Box<str>)>,
    /// `spec.workloadRef.name`.
    workload_ref: Option<Box<str>>,
    /// `status.workload.name`: a Deployment given back or being given back.
    recorded_workload: Option<Box<str>>,
    /// `status.request.id`: the manual request the CLI wrote last.
    request_id: Option<Box<str>>,
}

/// The part of a Release the cache keeps as JSON, borrowed for writing it.
#[derive(Serialize)]
struct BodyRef<'a> {
    spec: &'a ReleaseSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a ReleaseStatus>,
}

/// The part of a Release the cache keeps as JSON, decoded.
#[derive(Deserialize)]
struct Body {
    spec: ReleaseSpec,
    #[serde(default)]
    status: Option<ReleaseStatus>,
}

impl TryFrom<Release> for CachedRelease {
    type Error = serde_json::Error;

    /// Keep `release` compact. Writing typed values as JSON does not fail in practice (every
    /// map key is a string); the error is passed on rather than assumed away.
    fn try_from(release: Release) -> Result<CachedRelease, serde_json::Error> {
        let body = serde_json::to_string(&BodyRef {
            spec: &release.spec,
            status: release.status.as_ref(),
        })?;
        let status = release.status.as_ref();
        let index = ReleaseIndex {
            route: release
                .spec
                .traffic
                .route()
                .map(|(kind, name)| (kind, Box::from(name))),
            workload_ref: release
                .spec
                .workload_ref
                .as_ref()
                .map(|reference| Box::from(reference.name.as_str())),
            recorded_workload: status
                .and_then(|status| status.workload.as_ref())
                .map(|workload| Box::from(workload.name.as_str())),
            request_id: status
                .and_then(|status| status.request.as_ref())
                .map(|request| Box::from(request.id.as_str())),
        };
        Ok(CachedRelease {
            metadata: release.metadata,
            body: body.into_boxed_str(),
            index,
        })
    }
}

impl CachedRelease {
    /// The typed Release, decoded from what the cache keeps. It was written from a typed
    /// Release by this process, so an error here is a bug, reported as a reconcile error.
    pub fn release(&self) -> Result<Release, serde_json::Error> {
        let Body { spec, status } = serde_json::from_str(&self.body)?;
        Ok(Release {
            metadata: self.metadata.clone(),
            spec,
            status,
        })
    }

    /// Whether the Release routes its traffic through a route of `kind`.
    pub fn routes_through(&self, kind: RouteKind) -> bool {
        self.index
            .route
            .as_ref()
            .is_some_and(|(named, _)| *named == kind)
    }

    /// Whether the Release routes its traffic through the route `name` of `kind`.
    pub fn names_route(&self, kind: RouteKind, name: &str) -> bool {
        self.index
            .route
            .as_ref()
            .is_some_and(|(named, named_name)| *named == kind && **named_name == *name)
    }

    /// Whether the Release's `spec.workloadRef`, or the record of a Deployment it gives back
    /// (`status.workload`), names the Deployment `name`.
    pub fn references_workload(&self, name: &str) -> bool {
        self.index.workload_ref.as_deref() == Some(name)
            || self.index.recorded_workload.as_deref() == Some(name)
    }

    /// The id of the manual request the CLI wrote last (`status.request.id`).
    pub fn request_id(&self) -> Option<&str> {
        self.index.request_id.as_deref()
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
        slim_child(&mut cached);
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

    /// `release` as the cache keeps it, through both ways in: the watch (serde, from the
    /// served JSON) and the conversion.
    fn cached(release: &Release) -> CachedRelease {
        let converted = CachedRelease::try_from(release.clone()).unwrap();
        let deserialized: CachedRelease =
            serde_json::from_value(serde_json::to_value(release).unwrap()).unwrap();
        assert_eq!(converted.body, deserialized.body);
        assert_eq!(converted.index, deserialized.index);
        converted
    }

    /// Every field of `release` comes back from the cache, and the index says what the typed
    /// Release says.
    fn assert_kept(release: &Release) {
        let cached = cached(release);
        assert_eq!(&cached.release().unwrap(), release);
        for kind in [RouteKind::Http, RouteKind::Grpc] {
            assert_eq!(
                cached.routes_through(kind),
                release.spec.traffic.routes_through(kind)
            );
            for name in ["checkout", "payments", ""] {
                let named = release
                    .spec
                    .traffic
                    .gateway_api
                    .as_ref()
                    .is_some_and(|gateway| gateway.names(kind, name));
                assert_eq!(cached.names_route(kind, name), named, "{kind:?} {name}");
            }
        }
        let status = release.status.as_ref();
        assert_eq!(
            cached.request_id(),
            status
                .and_then(|status| status.request.as_ref())
                .map(|request| request.id.as_str())
        );
        for name in ["legacy", "other"] {
            let referenced = release
                .spec
                .workload_ref
                .as_ref()
                .is_some_and(|reference| reference.name == name)
                || status
                    .and_then(|status| status.workload.as_ref())
                    .is_some_and(|workload| workload.name == name);
            assert_eq!(cached.references_workload(name), referenced, "{name}");
        }
    }

    #[test]
    fn a_cached_release_gives_back_every_field_through_a_canary_and_its_history() {
        use crate::api::{ManualAction, Verdict};
        use crate::rollout::fixtures::{Sim, V2, at, request, run};
        for builder in [
            ReleaseBuilder::gateway().analysis(),
            ReleaseBuilder::replica_split().analysis(),
            ReleaseBuilder::gateway(),
        ] {
            let mut sim = Sim::canary_of(builder);
            assert_kept(&sim.release);
            // A canary judged, a manual request, a rollback, then a second canary: conditions,
            // analysis runs, timelines and history entries all pass through the cache.
            for (tick, verdict) in [Verdict::Passing, Verdict::Passing, Verdict::Failing]
                .into_iter()
                .enumerate()
            {
                sim.observed.analysis = Some(run(V2, verdict, at(30 * (tick as i64 + 1))));
                sim.tick(30);
                assert_kept(&sim.release);
            }
            if let Some(status) = sim.release.status.as_mut() {
                status.request = Some(request("req-1", ManualAction::Retry, 100));
            }
            assert_kept(&sim.release);
            sim.settle();
            sim.release.spec.template = crate::fixtures::template("registry.example/checkout:3");
            for _ in 0..6 {
                sim.tick(30);
                assert_kept(&sim.release);
            }
            let status = sim.release.status.as_ref().unwrap();
            assert!(!status.history.is_empty(), "the walk made history");
            assert!(!status.conditions.is_empty(), "the walk set conditions");
        }
    }

    #[test]
    fn a_cached_release_names_its_route_and_workload_without_decoding() {
        use crate::api::{GatewayApiTraffic, ReleaseStatus, WorkloadRef, WorkloadStatus};
        // A GRPCRoute of another name.
        let mut grpc = ReleaseBuilder::gateway().build();
        grpc.spec.traffic.gateway_api = Some(GatewayApiTraffic {
            http_route: None,
            grpc_route: Some("payments".into()),
            ..GatewayApiTraffic::http("unused")
        });
        assert_kept(&grpc);
        assert!(cached(&grpc).names_route(RouteKind::Grpc, "payments"));
        assert!(!cached(&grpc).names_route(RouteKind::Http, "payments"));

        // A replica split names no route.
        let split = ReleaseBuilder::replica_split().build();
        assert_kept(&split);
        assert!(!cached(&split).routes_through(RouteKind::Http));

        // A workloadRef, then the record of a Deployment being given back after it is removed.
        let mut referencing = ReleaseBuilder::replica_split().build();
        referencing.spec.template = Default::default();
        referencing.spec.workload_ref = Some(
            serde_json::from_value::<WorkloadRef>(json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "legacy"
            }))
            .unwrap(),
        );
        assert_kept(&referencing);
        assert!(cached(&referencing).references_workload("legacy"));
        referencing.spec.workload_ref = None;
        referencing.status = Some(ReleaseStatus {
            workload: Some(WorkloadStatus {
                name: "legacy".into(),
                original_replicas: 3,
                scaled_down_to: Some(0),
            }),
            ..Default::default()
        });
        assert_kept(&referencing);
        assert!(cached(&referencing).references_workload("legacy"));
        assert!(!cached(&referencing).references_workload("other"));
    }
}
