//! The one place that builds what Waymark writes: the stable and canary Deployments, the
//! Services in front of them, and the server-side apply bodies of its HTTPRoute edits.
//!
//! Every builder is a pure function of the Release (and of the cached route), so the labels,
//! selectors, owner references, ports and route rules a write carries can be unit-tested
//! without an API server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::api::{
    ANNOTATION_ADOPT, ANNOTATION_ROADMAP_TITLE, ANNOTATION_ROADMAP_URL, ANNOTATION_SPEC_HASH,
    LABEL_RELEASE, LABEL_REVISION, LABEL_ROADMAP_HORIZON, LABEL_ROADMAP_ITEM, LABEL_ROADMAP_KIND,
    LABEL_ROLE, Release, ResolvedPorts, Role, RouteAdditions, SessionPersistence,
};
use gateway_api::apis::experimental::grpcroutes::GrpcRoute;
use gateway_api::apis::experimental::httproutes::HttpRoute;

use crate::traffic::cohort::set_additions;
use crate::traffic::gateway::{
    Backends, restore_route, set_route_weights, set_session_persistence,
};
use crate::traffic::route::WeightedRoute;

use super::cached::{CachedDeployment, CachedService};
use super::error::Error;

/// Name of the port on every Service Waymark creates.
pub const SERVICE_PORT_NAME: &str = "http";

/// The Service ports: `spec.service`, or else the first port of the template's first container.
pub fn service_ports(release: &Release) -> Result<ResolvedPorts, Error> {
    release.spec.service_ports().ok_or_else(|| Error::Refused {
        object: format!("Release {}", release.name_any()),
        reason: "Invalid",
        message: "spec.service must be set when the template's first container declares no port"
            .into(),
    })
}

/// The value of the `waymark.dev/roadmap-item` label for a roadmap item.
///
/// Roadmap items may contain `/`, `#` and `:` and be 64 characters long, which label values
/// may not; those characters become `_`, the value is cut to 63 characters and trimmed to
/// start and end with an alphanumeric. The exact item is kept in an annotation of the same key.
pub fn roadmap_label_value(item: &str) -> String {
    let replaced: String = item
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    replaced
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Labels Waymark puts on a child (and on the pods of a Deployment).
pub fn child_labels(release: &Release, role: Option<Role>, revision: Option<&str>) -> Labels {
    let mut labels = Labels::new();
    labels.insert(LABEL_RELEASE.into(), release.name_any());
    if let Some(role) = role {
        labels.insert(LABEL_ROLE.into(), role.as_str().into());
    }
    if let Some(revision) = revision {
        labels.insert(LABEL_REVISION.into(), revision.into());
    }
    let roadmap = &release.spec.roadmap;
    labels.insert(
        LABEL_ROADMAP_ITEM.into(),
        roadmap_label_value(&roadmap.item),
    );
    if let Some(horizon) = roadmap.horizon {
        labels.insert(LABEL_ROADMAP_HORIZON.into(), horizon.as_str().into());
    }
    if let Some(kind) = roadmap.kind {
        labels.insert(LABEL_ROADMAP_KIND.into(), kind.as_str().into());
    }
    labels
}

/// Annotations Waymark puts on a child: the exact roadmap item, its title and URL.
pub fn child_annotations(release: &Release) -> Labels {
    let roadmap = &release.spec.roadmap;
    let mut annotations = Labels::new();
    annotations.insert(LABEL_ROADMAP_ITEM.into(), roadmap.item.clone());
    if let Some(title) = &roadmap.title {
        annotations.insert(ANNOTATION_ROADMAP_TITLE.into(), title.clone());
    }
    if let Some(url) = &roadmap.url {
        annotations.insert(ANNOTATION_ROADMAP_URL.into(), url.clone());
    }
    annotations
}

/// A string map (labels, annotations, selectors).
pub type Labels = BTreeMap<String, String>;

fn child_meta(
    release: &Release,
    name: String,
    role: Option<Role>,
    revision: Option<&str>,
) -> Result<ObjectMeta, Error> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: release.namespace(),
        labels: Some(child_labels(release, role, revision)),
        annotations: Some(child_annotations(release)),
        owner_references: Some(vec![controller_owner(release)?]),
        ..ObjectMeta::default()
    })
}

/// The controller owner reference every child carries.
fn controller_owner(release: &Release) -> Result<OwnerReference, Error> {
    // blockOwnerDeletion: a foreground deletion of the Release waits for its children (a Service
    // has EndpointSlices of its own, so without it the Release could go first).
    Ok(OwnerReference {
        block_owner_deletion: Some(true),
        ..release
            .controller_owner_ref(&())
            .ok_or_else(|| Error::MissingObjectKey("metadata.uid"))?
    })
}

/// A Service's metadata: the release and role labels only, no roadmap item.
///
/// A Service outlives revisions (every revision's pods stand behind the same Service), so a
/// roadmap label on it would either cost one write per Service at every new roadmap item or
/// name an item that is no longer the one being delivered. The item reaches the pods through
/// their template and the Deployments that run them; that is where queries and people look.
fn service_meta(release: &Release, name: String, role: Option<Role>) -> Result<ObjectMeta, Error> {
    let mut labels = Labels::new();
    labels.insert(LABEL_RELEASE.into(), release.name_any());
    if let Some(role) = role {
        labels.insert(LABEL_ROLE.into(), role.as_str().into());
    }
    Ok(ObjectMeta {
        name: Some(name),
        namespace: release.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![controller_owner(release)?]),
        ..ObjectMeta::default()
    })
}

/// The Deployment selector: the user's selector plus Waymark's release and role labels, so
/// stable and canary pods never mix even when the user's selector alone would match both.
pub fn deployment_selector(release: &Release, role: Role) -> LabelSelector {
    let mut selector = release.spec.selector.clone();
    let match_labels = selector.match_labels.get_or_insert_with(BTreeMap::new);
    match_labels.insert(LABEL_RELEASE.into(), release.name_any());
    match_labels.insert(LABEL_ROLE.into(), role.as_str().into());
    selector
}

/// The `<name>-stable` or `<name>-canary` Deployment running `spec.template` at `revision`.
///
/// The user's template labels and annotations are kept; Waymark's labels (release, role,
/// revision, roadmap item) and roadmap annotations are added to the Deployment and its pods.
pub fn deployment(
    release: &Release,
    role: Role,
    revision: &str,
    replicas: i32,
) -> Result<Deployment, Error> {
    let name = role.child_name(&release.name_any());
    let metadata = child_meta(release, name, Some(role), Some(revision))?;

    let mut template: PodTemplateSpec = release.spec.template.clone();
    let pod_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    pod_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(child_labels(release, Some(role), Some(revision)));
    pod_meta
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .extend(child_annotations(release));

    let mut deployment = Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: None,
            selector: deployment_selector(release, role),
            template,
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    let hash = spec_hash(&deployment);
    deployment
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOTATION_SPEC_HASH.into(), hash);
    if let Some(spec) = deployment.spec.as_mut() {
        spec.replicas = Some(replicas);
    }
    Ok(deployment)
}

/// A short hash of what Waymark applies to a Deployment, replicas aside (scaling is a separate
/// write): labels, annotations, owner and spec.
fn spec_hash(deployment: &Deployment) -> String {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::to_vec(&(
        &deployment.metadata.labels,
        &deployment.metadata.annotations,
        &deployment.metadata.owner_references,
        &deployment.spec,
    ))
    .unwrap_or_default();
    Sha256::digest(&canonical)
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether the live Deployment is what `wanted` would make it: the same spec hash (the cache
/// keeps no pod template, the hash stands for it) and replica count.
pub fn deployment_up_to_date(live: &CachedDeployment, wanted: &Deployment) -> bool {
    let hash = |meta: &ObjectMeta| {
        meta.annotations
            .as_ref()
            .and_then(|annotations| annotations.get(ANNOTATION_SPEC_HASH))
            .cloned()
    };
    let live_replicas = live.spec.as_ref().and_then(|spec| spec.replicas);
    let wanted_replicas = wanted.spec.as_ref().and_then(|spec| spec.replicas);
    hash(&live.metadata).is_some()
        && hash(&live.metadata) == hash(&wanted.metadata)
        && live_replicas == wanted_replicas
}

/// Whether the live Service selects, exposes, is labelled and carries Waymark's annotations
/// as `wanted` says.
pub fn service_up_to_date(live: &CachedService, wanted: &Service) -> bool {
    service_matches(live, wanted)
        && live.metadata.labels == wanted.metadata.labels
        && waymark_annotations(&live.metadata) == waymark_annotations(&wanted.metadata)
}

/// The `waymark.dev/` annotations Waymark writes on an object; not `waymark.dev/adopt`, which
/// the object's owner writes (an adopted Service would otherwise be written at every reconcile).
fn waymark_annotations(meta: &ObjectMeta) -> Labels {
    meta.annotations
        .iter()
        .flatten()
        .filter(|(key, _)| key.starts_with("waymark.dev/") && key.as_str() != ANNOTATION_ADOPT)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// A Service: `<name>-stable` / `<name>-canary` selecting one role, or (with `role` `None`)
/// `<name>` selecting the pods of both roles for the replica split.
pub fn service(release: &Release, role: Option<Role>) -> Result<Service, Error> {
    let release_name = release.name_any();
    let name = match role {
        Some(role) => role.child_name(&release_name),
        None => release_name.clone(),
    };
    let ports = service_ports(release)?;
    let mut selector = Labels::new();
    selector.insert(LABEL_RELEASE.into(), release_name);
    if let Some(role) = role {
        selector.insert(LABEL_ROLE.into(), role.as_str().into());
    }
    Ok(Service {
        metadata: service_meta(release, name, role)?,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(SERVICE_PORT_NAME.into()),
                port: ports.port,
                target_port: Some(ports.target_port),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// Every Service the Release needs, created once and kept for the Release's life.
///
/// In replica-split mode only `<name>`, the Service clients call: nothing routes to a role's
/// Service there (analysis selects pods by their role label), and pod counts set the split.
/// With an HTTPRoute, `<name>-stable` and `<name>-canary`, the route's backends. The canary's
/// Service is kept between canaries rather than created with each canary and deleted after it:
/// one create over the Release's life instead of a create and a delete per canary, and a
/// canary's first weight never waits for its Service (a backendRef to a missing Service is
/// refused by the Gateway). With no canary, it selects no pods and costs no endpoints.
pub fn services(release: &Release) -> Result<Vec<Service>, Error> {
    if release.spec.traffic.replicas.is_some() {
        return Ok(vec![service(release, None)?]);
    }
    Ok(vec![
        service(release, Some(Role::Stable))?,
        service(release, Some(Role::Canary))?,
    ])
}

/// The names of the Services Waymark may have made for the Release (in this traffic mode or in
/// another, or in an older version) that [`services`] no longer wants: an owned one is deleted
/// once, so that nothing is left selecting pods for nothing.
pub fn unwanted_service_names(release: &Release) -> Vec<String> {
    let name = release.name_any();
    let every = [
        name.clone(),
        Role::Stable.child_name(&name),
        Role::Canary.child_name(&name),
    ];
    // Without resolvable ports nothing is wanted or unwanted: the spec is invalid (the core
    // says so) and the Services stay as they are until it is fixed.
    let Ok(wanted) = services(release) else {
        return Vec::new();
    };
    let wanted: Vec<String> = wanted.iter().map(ResourceExt::name_any).collect();
    every
        .into_iter()
        .filter(|candidate| !wanted.contains(candidate))
        .collect()
}

/// Whether an existing Service already selects and exposes what `wanted` does.
///
/// Only the fields Waymark sets are compared: the API server fills in others (cluster IP,
/// session affinity) that must not count as a difference.
pub fn service_matches(existing: &CachedService, wanted: &Service) -> bool {
    let (Some(existing), Some(wanted)) = (&existing.spec, &wanted.spec) else {
        return false;
    };
    let existing_port = existing
        .ports
        .as_ref()
        .and_then(|ports| ports.first())
        .map(|port| (port.port, port.target_port.as_ref()));
    let wanted_port = wanted
        .ports
        .as_ref()
        .and_then(|ports| ports.first())
        .map(|port| (port.port, port.target_port.as_ref()));
    existing.selector == wanted.selector && existing_port == wanted_port
}

/// The merge patch changing only a Deployment's replica count, keeping its template.
pub fn scale_patch(replicas: i32) -> serde_json::Value {
    serde_json::json!({ "spec": { "replicas": replicas } })
}

/// The route's `spec.rules` as JSON (the whole atomic list), whatever its kind.
fn rules_of<R: WeightedRoute>(route: &R) -> serde_json::Value {
    serde_json::to_value(route)
        .ok()
        .and_then(|mut json| json.get_mut("spec").map(|spec| spec["rules"].take()))
        .unwrap_or(serde_json::Value::Null)
}

/// The server-side apply body that gives `route` a canary weight of `canary_weight` (and, where
/// the GatewayClass supports it, the spec's `session_persistence` on the rules Waymark edits),
/// or `None` when it already has them.
///
/// It holds the route's identity and its whole `spec.rules` (an atomic list: whoever applies it
/// owns all of it) with Waymark's weights, and nothing else, so Waymark's field manager owns
/// exactly the rules and another manager's apply of the route's Git version is seen and undone
/// instead of silently winning. The error names the route and the stable Service.
pub fn weight_apply<R: WeightedRoute>(
    route: &R,
    backends: &Backends,
    canary_weight: i32,
    session_persistence: Option<&SessionPersistence>,
) -> Result<Option<serde_json::Value>, String> {
    let mut edited = route.clone();
    let weights_changed = set_route_weights(&mut edited, backends, canary_weight)?;
    let sessions_changed = set_session_persistence(&mut edited, backends, session_persistence);
    if !weights_changed && !sessions_changed {
        return Ok(None);
    }
    Ok(Some(rules_body(route, &edited)))
}

/// The server-side apply body that makes `route` carry exactly `additions` of Release
/// `release`'s cohorts and mirrors ([`set_additions`]), or `None` when it already does.
///
/// Like [`weight_apply`] it holds the route's whole `spec.rules` (atomic: Waymark's named rules
/// cannot be applied alone), so a second manager's apply of the route's Git version removes
/// them and the next reconcile, woken by the route's watch, writes them back.
pub fn additions_apply(
    route: &HttpRoute,
    release: &str,
    additions: &RouteAdditions,
) -> Result<Option<serde_json::Value>, String> {
    let mut edited = route.clone();
    if !set_additions(&mut edited, release, additions)? {
        return Ok(None);
    }
    Ok(Some(rules_body(route, &edited)))
}

/// [`additions_apply`] for a GRPCRoute: its cohorts as named rules of gRPC header matches
/// ([`crate::traffic::grpc::set_additions`]), or `None` when it already carries them.
pub fn grpc_additions_apply(
    route: &GrpcRoute,
    release: &str,
    additions: &RouteAdditions,
) -> Result<Option<serde_json::Value>, String> {
    let mut edited = route.clone();
    if !crate::traffic::grpc::set_additions(&mut edited, release, additions)? {
        return Ok(None);
    }
    Ok(Some(rules_body(route, &edited)))
}

/// The apply body of `edited`'s rules, identified as `route`.
fn rules_body<R: WeightedRoute>(route: &R, edited: &R) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": R::KIND.kind(),
        "metadata": {
            "name": route.name_any(),
            "namespace": route.namespace(),
        },
        "spec": {"rules": rules_of(edited)},
    })
}

/// The server-side apply body that gives `route` back as its owner wrote it (`strip_additions`
/// takes out the cohort rules and mirrors Waymark added, then [`restore_route`] its backendRef
/// and the session persistence it passed through, `written`), or `None` when it already is.
///
/// Like [`weight_apply`] it holds the whole `spec.rules`; unlike it, it carries the route's uid
/// and resourceVersion as preconditions: a route deleted since the cache read it is not created
/// again by the apply (the API server answers 409), and a route changed since is not overwritten
/// with rules rebuilt from an older copy.
pub fn restore_apply<R: WeightedRoute>(
    route: &R,
    backends: &Backends,
    written: Option<&SessionPersistence>,
    strip_additions: impl FnOnce(&mut R) -> bool,
) -> Result<Option<serde_json::Value>, String> {
    let mut edited = route.clone();
    let stripped = strip_additions(&mut edited);
    let restored = restore_route(&mut edited, backends, written)?;
    if !stripped && !restored {
        return Ok(None);
    }
    let meta = route.meta();
    Ok(Some(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": R::KIND.kind(),
        "metadata": {
            "name": route.name_any(),
            "namespace": route.namespace(),
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
        },
        "spec": {"rules": rules_of(&edited)},
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ReleaseBuilder, http_route as route, route_backend as backend};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn deployment_keeps_user_labels_and_adds_waymark_labels_to_deployment_and_pods() {
        let release = ReleaseBuilder::gateway().build();
        let deployment = deployment(&release, Role::Canary, "6f9c7d0000", 2).unwrap();

        let labels = deployment.metadata.labels.clone().unwrap();
        assert_eq!(labels[LABEL_RELEASE], "checkout");
        assert_eq!(labels[LABEL_ROLE], "canary");
        assert_eq!(labels[LABEL_REVISION], "6f9c7d0000");
        assert_eq!(labels[LABEL_ROADMAP_ITEM], "PAY-142");

        let spec = deployment.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(pod_labels["app"], "checkout", "user label kept");
        assert_eq!(pod_labels[LABEL_ROLE], "canary");
        assert_eq!(pod_labels[LABEL_REVISION], "6f9c7d0000");
        assert_eq!(pod_labels[LABEL_ROADMAP_ITEM], "PAY-142");
    }

    #[test]
    fn children_and_pods_carry_the_roadmap_horizon_and_kind_when_set() {
        let mut release = ReleaseBuilder::gateway().build();
        let deployment_without = deployment(&release, Role::Canary, "6f9c7d0000", 2).unwrap();
        let labels = deployment_without.metadata.labels.unwrap();
        assert!(!labels.contains_key(LABEL_ROADMAP_HORIZON));
        assert!(!labels.contains_key(LABEL_ROADMAP_KIND));

        release.spec.roadmap.horizon = Some(crate::api::Horizon::Later);
        release.spec.roadmap.kind = Some(crate::api::RoadmapKind::Experiment);
        let deployment = deployment(&release, Role::Canary, "6f9c7d0000", 2).unwrap();
        let labels = deployment.metadata.labels.clone().unwrap();
        assert_eq!(labels[LABEL_ROADMAP_HORIZON], "later");
        assert_eq!(labels[LABEL_ROADMAP_KIND], "experiment");
        let pod_labels = deployment
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap();
        assert_eq!(pod_labels[LABEL_ROADMAP_HORIZON], "later");
    }

    #[test]
    fn services_carry_no_roadmap_item_so_a_new_item_rewrites_no_service() {
        let mut release = ReleaseBuilder::gateway()
            .roadmap_title("One-click checkout")
            .build();
        release.spec.roadmap.horizon = Some(crate::api::Horizon::Later);
        let before = services(&release).unwrap();
        for service in &before {
            let labels = service.metadata.labels.clone().unwrap();
            assert_eq!(
                labels.keys().collect::<Vec<_>>(),
                [LABEL_RELEASE, LABEL_ROLE],
                "{labels:?}"
            );
            assert!(service.metadata.annotations.is_none());
        }
        release.spec.roadmap.item = "PAY-143".into();
        release.spec.roadmap.title = Some("Saved cards".into());
        release.spec.roadmap.kind = Some(crate::api::RoadmapKind::Feature);
        for (live, wanted) in before.iter().zip(services(&release).unwrap()) {
            assert!(
                service_up_to_date(&CachedService::from(live.clone()), &wanted),
                "{} would be written for a new roadmap item",
                live.name_any()
            );
        }
    }

    #[test]
    fn a_service_is_up_to_date_when_only_the_api_server_and_other_owners_added_to_it() {
        let release = ReleaseBuilder::replica_split().build();
        let wanted = service(&release, None).unwrap();
        let mut live = wanted.clone();
        let spec = live.spec.as_mut().unwrap();
        spec.cluster_ip = Some("10.0.0.7".into());
        spec.cluster_ips = Some(vec!["10.0.0.7".into()]);
        spec.session_affinity = Some("None".into());
        spec.type_ = Some("ClusterIP".into());
        live.metadata.resource_version = Some("7".into());
        live.metadata.uid = Some("5e0c".into());
        live.metadata.annotations =
            Some([("example.com/owner".to_string(), "team-a".to_string())].into());
        assert!(
            service_up_to_date(&CachedService::from(live), &wanted),
            "nothing to write"
        );
    }

    #[test]
    fn an_older_versions_roadmap_label_on_a_service_is_written_away_once() {
        let release = ReleaseBuilder::replica_split().build();
        let wanted = service(&release, None).unwrap();
        let mut live = wanted.clone();
        live.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(LABEL_ROADMAP_ITEM.into(), "PAY-139".into());
        assert!(!service_up_to_date(&CachedService::from(live), &wanted));
        let mut annotated = wanted.clone();
        annotated.metadata.annotations =
            Some([(LABEL_ROADMAP_ITEM.to_string(), "PAY-139".to_string())].into());
        assert!(!service_up_to_date(
            &CachedService::from(annotated),
            &wanted
        ));
    }

    #[test]
    fn deployment_selector_adds_release_and_role_to_the_users_selector() {
        let release = ReleaseBuilder::gateway().build();
        let stable = deployment(&release, Role::Stable, "aaaa", 4).unwrap();
        let canary = deployment(&release, Role::Canary, "bbbb", 1).unwrap();
        let stable_selector = stable.spec.unwrap().selector.match_labels.unwrap();
        let canary_selector = canary.spec.unwrap().selector.match_labels.unwrap();
        assert_eq!(stable_selector["app"], "checkout");
        assert_eq!(stable_selector[LABEL_RELEASE], "checkout");
        assert_eq!(stable_selector[LABEL_ROLE], "stable");
        assert_eq!(canary_selector[LABEL_ROLE], "canary");
        assert!(
            !stable_selector.contains_key(LABEL_REVISION),
            "revision is not in the selector: selectors are immutable"
        );
    }

    #[test]
    fn every_child_has_a_controller_owner_reference_to_the_release() {
        let release = ReleaseBuilder::gateway().build();
        let deployment = deployment(&release, Role::Stable, "aaaa", 1).unwrap();
        let owners = deployment.metadata.owner_references.unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "Release");
        assert_eq!(owners[0].name, "checkout");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, Some(true));
        for service in services(&release).unwrap() {
            let owners = service.metadata.owner_references.unwrap();
            assert_eq!(owners[0].name, "checkout");
            assert_eq!(owners[0].block_owner_deletion, Some(true));
        }
    }

    #[test]
    fn deployments_and_pods_carry_roadmap_title_and_url_annotations() {
        let release = ReleaseBuilder::gateway()
            .roadmap_title("One-click checkout")
            .build();
        let deployment = deployment(&release, Role::Canary, "6f9c7d0000", 2).unwrap();
        let pod_annotations = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
            .unwrap();
        assert_eq!(
            pod_annotations[ANNOTATION_ROADMAP_TITLE],
            "One-click checkout"
        );
        let annotations = deployment.metadata.annotations.unwrap();
        assert_eq!(annotations[ANNOTATION_ROADMAP_TITLE], "One-click checkout");
        assert_eq!(annotations[LABEL_ROADMAP_ITEM], "PAY-142");
        assert!(!annotations.contains_key(ANNOTATION_ROADMAP_URL));
    }

    #[test]
    fn service_ports_default_to_the_first_container_port() {
        let release = ReleaseBuilder::gateway().container_port(8080).build();
        let ports = service_ports(&release).unwrap();
        assert_eq!(ports.port, 8080);
        assert_eq!(ports.target_port, IntOrString::Int(8080));
    }

    #[test]
    fn service_target_port_defaults_to_the_port() {
        let release = ReleaseBuilder::gateway().service_port(80, None).build();
        let service = service(&release, Some(Role::Canary)).unwrap();
        let port = &service.spec.unwrap().ports.unwrap()[0];
        assert_eq!(port.port, 80);
        assert_eq!(port.target_port, Some(IntOrString::Int(80)));
    }

    #[test]
    fn service_ports_without_spec_or_container_port_name_the_field() {
        let release = ReleaseBuilder::gateway().no_ports().build();
        let error = service_ports(&release).unwrap_err();
        assert!(error.to_string().contains("spec.service"), "{error}");
    }

    #[test]
    fn replica_split_has_only_the_service_clients_call_selecting_both_roles() {
        let release = ReleaseBuilder::replica_split().build();
        let all = services(&release).unwrap();
        let names: Vec<_> = all.iter().map(|s| s.name_any()).collect();
        assert_eq!(names, ["checkout"]);
        assert_eq!(
            all[0].spec.clone().unwrap().selector.unwrap(),
            Labels::from([(LABEL_RELEASE.to_string(), "checkout".to_string())])
        );
        assert_eq!(
            unwanted_service_names(&release),
            ["checkout-stable", "checkout-canary"],
            "an older version's role Services go"
        );
    }

    #[test]
    fn gateway_mode_has_one_service_per_role_and_no_shared_service() {
        let release = ReleaseBuilder::gateway().build();
        let all = services(&release).unwrap();
        let names: Vec<_> = all.iter().map(|s| s.name_any()).collect();
        assert_eq!(names, ["checkout-stable", "checkout-canary"]);
        let selector = |s: &Service| s.spec.clone().unwrap().selector.unwrap();
        assert_eq!(selector(&all[0])[LABEL_ROLE], "stable");
        assert_eq!(selector(&all[1])[LABEL_ROLE], "canary");
        assert_eq!(unwanted_service_names(&release), ["checkout"]);
    }

    #[test]
    fn with_unresolvable_ports_no_service_counts_as_unwanted() {
        let release = ReleaseBuilder::replica_split().no_ports().build();
        assert!(unwanted_service_names(&release).is_empty());
    }

    #[test]
    fn roadmap_items_become_valid_label_values() {
        assert_eq!(roadmap_label_value("PAY-142"), "PAY-142");
        assert_eq!(roadmap_label_value("team/epic#12:a"), "team_epic_12_a");
        assert_eq!(roadmap_label_value("#12/"), "12");
        assert_eq!(roadmap_label_value(&"a".repeat(64)).len(), 63);
    }

    #[test]
    fn service_match_ignores_fields_the_api_server_fills_in() {
        let release = ReleaseBuilder::gateway().build();
        let wanted = service(&release, Some(Role::Stable)).unwrap();
        let mut existing = wanted.clone();
        existing.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.7".into());
        assert!(service_matches(
            &CachedService::from(existing.clone()),
            &wanted
        ));
        existing.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 81;
        assert!(!service_matches(&CachedService::from(existing), &wanted));
    }

    #[test]
    fn the_apply_body_carries_only_identity_and_the_whole_rules() {
        let route = route(vec![
            vec![backend("checkout-stable", Some(100))],
            vec![backend("static-assets", Some(3))],
        ]);
        let body = weight_apply(&route, &Backends::of("checkout"), 30, None)
            .unwrap()
            .unwrap();
        assert_eq!(body["metadata"]["name"], "checkout");
        assert_eq!(body["metadata"]["namespace"], "shop");
        assert_eq!(
            body["spec"].as_object().unwrap().keys().collect::<Vec<_>>(),
            ["rules"],
            "only the rules: parentRefs and hostnames stay the route owner's"
        );
        let rules = body["spec"]["rules"].as_array().unwrap();
        assert_eq!(
            rules.len(),
            2,
            "the whole atomic list, other rules included"
        );
        assert_eq!(rules[0]["backendRefs"][0]["weight"], 70);
        assert_eq!(rules[0]["backendRefs"][1]["name"], "checkout-canary");
        assert_eq!(rules[0]["backendRefs"][1]["weight"], 30);
        assert_eq!(rules[1]["backendRefs"][0]["weight"], 3);
    }

    #[test]
    fn the_cohort_body_carries_the_users_rules_and_waymarks_named_rule_and_nothing_else() {
        let route = route(vec![
            vec![
                backend("checkout-stable", Some(70)),
                backend("checkout-canary", Some(30)),
            ],
            vec![backend("static-assets", Some(7))],
        ]);
        let additions = crate::api::RouteAdditions::after_steps(&[crate::fixtures::header_route(
            "beta", "x-canary", "true",
        )]);
        let body = additions_apply(&route, "checkout", &additions)
            .unwrap()
            .expect("a cohort to write");
        assert_eq!(
            body["metadata"],
            serde_json::json!({"name": "checkout", "namespace": "shop"})
        );
        assert_eq!(body["spec"].as_object().unwrap().len(), 1, "only the rules");
        let rules = body["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 3, "the user's two rules and the cohort's");
        assert_eq!(
            rules[..2],
            serde_json::to_value(&route.spec.rules)
                .unwrap()
                .as_array()
                .unwrap()[..]
        );
        assert_eq!(rules[2]["name"], "waymark-checkout-beta");

        let mut written = route.clone();
        crate::traffic::cohort::set_additions(&mut written, "checkout", &additions).unwrap();
        assert_eq!(additions_apply(&written, "checkout", &additions), Ok(None));
        let removal = additions_apply(&written, "checkout", &Default::default())
            .unwrap()
            .expect("the cohort to take away");
        assert_eq!(
            removal["spec"]["rules"],
            serde_json::to_value(&route.spec.rules).unwrap()
        );
    }

    #[test]
    fn no_apply_when_the_route_already_has_the_weight() {
        let route = route(vec![vec![
            backend("checkout-stable", Some(70)),
            backend("checkout-canary", Some(30)),
        ]]);
        assert_eq!(
            weight_apply(&route, &Backends::of("checkout"), 30, None),
            Ok(None)
        );
    }

    #[test]
    fn the_restore_body_carries_the_whole_rules_and_the_routes_uid_and_version_as_preconditions() {
        let mut route = route(vec![
            vec![
                backend("checkout-stable", Some(80)),
                backend("checkout-canary", Some(20)),
            ],
            vec![backend("static-assets", Some(7))],
        ]);
        route.metadata.uid = Some("5e0c".into());
        route.metadata.resource_version = Some("42".into());
        let body = restore_apply(&route, &Backends::of("checkout"), None, |_| false)
            .unwrap()
            .unwrap();
        assert_eq!(
            body["metadata"]["uid"], "5e0c",
            "never re-creates a deleted route"
        );
        assert_eq!(
            body["metadata"]["resourceVersion"], "42",
            "never overwrites a newer edit"
        );
        assert_eq!(
            body["spec"].as_object().unwrap().keys().collect::<Vec<_>>(),
            ["rules"]
        );
        let first = body["spec"]["rules"][0]["backendRefs"].as_array().unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["name"], "checkout-stable");
        assert!(first[0].get("weight").is_none(), "{first:?}");
        assert_eq!(body["spec"]["rules"][1]["backendRefs"][0]["weight"], 7);

        let mut restored = route.clone();
        restore_route(&mut restored, &Backends::of("checkout"), None).unwrap();
        assert_eq!(
            restore_apply(&restored, &Backends::of("checkout"), None, |_| false),
            Ok(None)
        );
    }

    fn grpc_route(
        rules: serde_json::Value,
    ) -> gateway_api::apis::experimental::grpcroutes::GrpcRoute {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GRPCRoute",
            "metadata": {"name": "checkout", "namespace": "shop", "uid": "9a1f", "resourceVersion": "3"},
            "spec": {"parentRefs": [{"name": "public"}], "rules": rules}
        }))
        .unwrap()
    }

    fn cart_sessions() -> SessionPersistence {
        SessionPersistence {
            session_name: Some("cart".into()),
            idle_timeout: Some("10m".into()),
            ..SessionPersistence::default()
        }
    }

    /// Every key anywhere in `value`.
    fn keys(value: &serde_json::Value) -> Vec<String> {
        match value {
            serde_json::Value::Object(map) => map
                .iter()
                .flat_map(|(key, inner)| std::iter::once(key.clone()).chain(keys(inner)))
                .collect(),
            serde_json::Value::Array(items) => items.iter().flat_map(keys).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_grpc_cohort_is_applied_as_a_named_rule_counted_by_the_core_and_given_back_with_the_weight()
    {
        let written = serde_json::json!([
            {"matches": [{"method": {"service": "shop.Cart"}}],
             "backendRefs": [{"name": "checkout-stable", "port": 9090}]}
        ]);
        let route = grpc_route(written.clone());
        let additions = crate::api::RouteAdditions::after_steps(&[crate::fixtures::header_route(
            "beta", "x-canary", "true",
        )]);
        let weighted = weight_apply(&route, &Backends::of("checkout"), 10, None)
            .unwrap()
            .unwrap();
        let at_ten = grpc_route(weighted["spec"]["rules"].clone());
        let body = grpc_additions_apply(&at_ten, "checkout", &additions)
            .unwrap()
            .unwrap();
        assert_eq!(body["kind"], "GRPCRoute");
        let rules = &body["spec"]["rules"];
        assert_eq!(rules[0], weighted["spec"]["rules"][0], "the weights kept");
        assert_eq!(rules[1]["name"], "waymark-checkout-beta");
        assert_eq!(
            rules[1]["matches"][0]["headers"],
            serde_json::json!([{"name": "x-canary", "value": "true", "type": "Exact"}])
        );
        let carrying = grpc_route(rules.clone());
        assert_eq!(
            grpc_additions_apply(&carrying, "checkout", &additions),
            Ok(None)
        );

        // The core sees the cohort on the GRPCRoute (the finalizer holds for it).
        let observed = crate::rollout::Observed {
            grpc_route_object: Some(carrying.clone()),
            ..Default::default()
        };
        assert!(observed.route_carries_additions("checkout"));
        assert!(observed.route_additions_in_place("checkout", &additions));
        assert!(!observed.route_additions_in_place("checkout", &Default::default()));

        // Given back: the owner's rules, byte for byte.
        let restored = restore_apply(&carrying, &Backends::of("checkout"), None, |route| {
            crate::traffic::grpc::strip_additions(route, "checkout")
        })
        .unwrap()
        .unwrap();
        assert_eq!(restored["spec"]["rules"], written);
    }

    #[test]
    fn a_grpc_route_gets_weights_like_an_http_route_and_is_given_back_as_written() {
        let written = serde_json::json!([
            {"matches": [{"method": {"service": "shop.Cart"}}],
             "backendRefs": [{"name": "checkout-stable", "port": 9090}]},
            {"backendRefs": [{"name": "legacy", "port": 9090, "weight": 3}]}
        ]);
        let route = grpc_route(written.clone());
        let body = weight_apply(&route, &Backends::of("checkout"), 10, None)
            .unwrap()
            .unwrap();
        assert_eq!(body["kind"], "GRPCRoute");
        assert_eq!(body["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(
            body["spec"].as_object().unwrap().keys().collect::<Vec<_>>(),
            ["rules"]
        );
        assert_eq!(
            body["spec"]["rules"][0]["backendRefs"],
            serde_json::json!([
                {"name": "checkout-stable", "port": 9090, "weight": 90},
                {"name": "checkout-canary", "port": 9090, "weight": 10}
            ])
        );
        assert_eq!(
            body["spec"]["rules"][1], written[1],
            "the owner's rule untouched"
        );

        // At 50%, then given back: the rules are what the owner wrote, byte for byte.
        let mut at_fifty = grpc_route(body["spec"]["rules"].clone());
        let body = weight_apply(&at_fifty, &Backends::of("checkout"), 50, None)
            .unwrap()
            .unwrap();
        at_fifty = grpc_route(body["spec"]["rules"].clone());
        assert_eq!(
            crate::traffic::gateway::canary_weight(&at_fifty, &Backends::of("checkout")),
            Ok(50)
        );
        let restored = restore_apply(&at_fifty, &Backends::of("checkout"), None, |_| false)
            .unwrap()
            .unwrap();
        assert_eq!(restored["kind"], "GRPCRoute");
        assert_eq!(restored["metadata"]["uid"], "9a1f");
        assert_eq!(restored["spec"]["rules"], written);
    }

    #[test]
    fn the_apply_body_never_carries_session_persistence_unless_the_class_supports_it() {
        use crate::api::RouteKind;
        use crate::traffic::features::session_persistence_plan;
        let rules =
            serde_json::json!([{"backendRefs": [{"name": "checkout-stable", "port": 9090}]}]);
        let sessions = cart_sessions();
        let unsupported = vec!["GRPCRoute".to_string()];
        let supported = vec![
            "GRPCRoute".to_string(),
            "CookieSessionPersistence".to_string(),
        ];
        // (features the class lists, whether the body may carry sessionPersistence)
        let cases: [(Option<&[String]>, bool); 3] = [
            (None, false),
            (Some(&unsupported), false),
            (Some(&supported), true),
        ];
        for (features, carried) in cases {
            let plan = session_persistence_plan(Some(&sessions), RouteKind::Grpc, features);
            let body = weight_apply(
                &grpc_route(rules.clone()),
                &Backends::of("checkout"),
                10,
                plan.to_write(),
            )
            .unwrap()
            .unwrap();
            assert_eq!(
                keys(&body).contains(&"sessionPersistence".to_string()),
                carried,
                "{features:?}: {body}"
            );
            if carried {
                assert_eq!(
                    body["spec"]["rules"][0]["sessionPersistence"],
                    serde_json::json!({"sessionName": "cart", "idleTimeout": "10m"})
                );
            }
        }
        // A weight already in place still writes a newly supported session persistence once,
        // then nothing.
        let mut settled = grpc_route(serde_json::json!([{"backendRefs": [
            {"name": "checkout-stable", "port": 9090, "weight": 90},
            {"name": "checkout-canary", "port": 9090, "weight": 10}]}]));
        assert_eq!(
            weight_apply(&settled, &Backends::of("checkout"), 10, None),
            Ok(None)
        );
        let body = weight_apply(&settled, &Backends::of("checkout"), 10, Some(&sessions))
            .unwrap()
            .unwrap();
        settled = grpc_route(body["spec"]["rules"].clone());
        assert_eq!(
            weight_apply(&settled, &Backends::of("checkout"), 10, Some(&sessions)),
            Ok(None)
        );
        // Given back: Waymark's session persistence goes with its backendRef.
        let restored = restore_apply(&settled, &Backends::of("checkout"), Some(&sessions), |_| {
            false
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            restored["spec"]["rules"],
            serde_json::json!([{"backendRefs": [{"name": "checkout-stable", "port": 9090}]}])
        );
    }
}
