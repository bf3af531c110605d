//! What the walks share: the Release and HTTPRoute a platform team writes, shipping a new
//! version, and waits on phases and route weights.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::prepare::{CONTROLLER_ACCOUNT, CONTROLLER_NAMESPACE};
use crate::support::{DEADLINE, E2E_MANAGER, Env, eventually};
use waymark::api::{Phase, Release};

pub fn image(version: u8) -> String {
    let (variable, default) = match version {
        1 => ("WAYMARK_E2E_IMAGE_V1", "nginx:1.27-alpine"),
        _ => ("WAYMARK_E2E_IMAGE_V2", "nginx:1.28-alpine"),
    };
    std::env::var(variable).unwrap_or_else(|_| default.to_string())
}

pub fn container(image: &str) -> Value {
    json!({"name": "app", "image": image, "ports": [{"containerPort": 80}]})
}

/// A Release as a platform team writes it, routed by HTTPRoute `route`.
pub fn release(name: &str, route: &str, steps: Value) -> Release {
    serde_json::from_value(json!({
        "apiVersion": "waymark.dev/v1alpha1",
        "kind": "Release",
        "metadata": {"name": name},
        "spec": {
            "roadmap": {"item": "E2E-1", "title": "End-to-end first release"},
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container(&image(1))]}
            },
            "service": {"port": 80},
            "traffic": {"gatewayAPI": {"httpRoute": route}},
            "steps": steps,
            "progressDeadline": "3m",
            "scaleDownDelay": "2s"
        }
    }))
    .unwrap_or_else(|error| panic!("the test Release does not deserialize: {error}"))
}

/// A Release with a replica split (no router): `replicas` pods behind Service `<name>`, the
/// canary's share of traffic its share of the Ready pods.
pub fn replica_split_release(name: &str, replicas: i32, steps: Value) -> Release {
    let mut release = release(name, name, steps);
    release.spec.replicas = replicas;
    release.spec.traffic = serde_json::from_value(json!({"replicas": {}}))
        .unwrap_or_else(|error| panic!("the replica split does not deserialize: {error}"));
    release
}

pub async fn create_release(env: &Env, release: &Release) {
    env.releases()
        .create(&PostParams::default(), release)
        .await
        .unwrap_or_else(|error| panic!("cannot create Release {}: {error}", release.name_any()));
}

/// An HTTPRoute sending everything to `<release>-stable:80`, as the service owner wrote it.
pub async fn create_route(env: &Env, name: &str, release: &str) {
    let route = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "e2e-gateway"}],
            "rules": [
                {"backendRefs": [{"name": format!("{release}-stable"), "port": 80}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                 "backendRefs": [{"name": "static-assets", "port": 8080, "weight": 7}]}
            ]
        }
    }))
    .unwrap_or_else(|error| panic!("the test HTTPRoute does not deserialize: {error}"));
    env.routes()
        .create(&PostParams::default(), &route)
        .await
        .unwrap_or_else(|error| panic!("cannot create HTTPRoute {name}: {error}"));
}

/// The user ships a new version: a new image and the roadmap item it delivers.
pub async fn ship(env: &Env, name: &str, image: &str, item: &str) {
    ship_for(env, name, image, json!({"item": item})).await;
}

/// [`ship`] with more of the roadmap item than its name (`{"item", "title", "horizon", ...}`).
pub async fn ship_for(env: &Env, name: &str, image: &str, roadmap: Value) {
    let patch = json!({"spec": {
        "roadmap": roadmap,
        "template": {"spec": {"containers": [container(image)]}}
    }});
    env.releases()
        .patch(
            name,
            &PatchParams {
                field_manager: Some(E2E_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .unwrap_or_else(|error| panic!("cannot change Release {name}: {error}"));
}

/// `(stable, canary)` weights of the first rule; a missing canary backendRef is `None`.
/// Also checks that the second rule, not Waymark's, is untouched.
pub async fn route_weights(
    env: &Env,
    route: &str,
    release: &str,
) -> Result<(i32, Option<i32>), String> {
    let route = env
        .routes()
        .get(route)
        .await
        .map_err(|error| format!("cannot read HTTPRoute: {error}"))?;
    let rules = route.spec.rules.unwrap_or_default();
    let refs = rules
        .first()
        .and_then(|rule| rule.backend_refs.clone())
        .unwrap_or_default();
    let weight = |name: String| {
        refs.iter()
            .find(|backend| backend.name == name)
            .map(|backend| backend.weight.unwrap_or(1))
    };
    let stable = weight(format!("{release}-stable"))
        .ok_or_else(|| format!("no stable backendRef in {refs:?}"))?;
    let canary = weight(format!("{release}-canary"));
    let other = rules
        .get(1)
        .and_then(|rule| rule.backend_refs.clone())
        .unwrap_or_default();
    assert!(
        other.len() == 1 && other[0].name == "static-assets" && other[0].weight == Some(7),
        "the route's other rule was changed: {other:?}"
    );
    Ok((stable, canary))
}

pub async fn wait_for_weight(env: &Env, route: &str, release: &str, canary_weight: i32) {
    eventually(
        &format!("HTTPRoute {route} to send {canary_weight}% to the canary"),
        || async {
            let (stable, canary) = route_weights(env, route, release).await?;
            // At 0 the route is given back as written: no canary backendRef, the stable's
            // weight as the owner left it.
            let given_back = canary_weight == 0 && canary.is_none() && stable > 0;
            let canary = canary.unwrap_or(0);
            if given_back || stable == 100 - canary_weight && canary == canary_weight {
                Ok(())
            } else {
                Err(format!("stable weight {stable}, canary weight {canary}"))
            }
        },
    )
    .await;
}

pub async fn wait_for_phase(env: &Env, name: &str, phase: Phase, reason: Option<&str>) {
    eventually(
        &format!(
            "Release {name} to be {phase}{}",
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ),
        || async {
            let status = env.status(name).await;
            let reason_ok = reason.is_none_or(|reason| status.reason.as_deref() == Some(reason));
            if status.phase == Some(phase) && reason_ok {
                Ok(())
            } else {
                Err(format!(
                    "phase {:?}, reason {:?}, message {:?}",
                    status.phase, status.reason, status.message
                ))
            }
        },
    )
    .await;
}

/// Wait (on a watch) until Deployment `name` exists and satisfies `check`; the Deployment
/// controller writes its status, so this is how a walk knows what it has made of the pods.
pub async fn wait_for_deployment<F>(env: &Env, name: &str, what: &str, check: F) -> Deployment
where
    F: Fn(&Deployment) -> bool + Send + 'static,
{
    let condition = move |deployment: Option<&Deployment>| deployment.is_some_and(&check);
    match tokio::time::timeout(
        DEADLINE,
        await_condition(env.deployments(), name, condition),
    )
    .await
    {
        Ok(Ok(Some(deployment))) => deployment,
        Ok(Ok(None)) => panic!("Deployment {name} is gone while waiting for {what}"),
        Ok(Err(error)) => panic!("cannot watch Deployment {name} for {what}: {error}"),
        Err(_) => {
            let last = env.deployments().get_opt(name).await.ok().flatten();
            panic!(
                "timed out after {DEADLINE:?} waiting for {what}; Deployment {name}: generation \
                 {:?}, status {:#?}",
                last.as_ref().and_then(|d| d.metadata.generation),
                last.and_then(|d| d.status)
            )
        }
    }
}

/// Whether the Deployment controller has seen `deployment`'s latest spec and reports every
/// replica made from it, updated and available, and its rollout complete.
pub fn rolled_out(deployment: &Deployment) -> bool {
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let complete = status.conditions.iter().flatten().any(|condition| {
        condition.type_ == "Progressing"
            && condition.status == "True"
            && condition.reason.as_deref() == Some("NewReplicaSetAvailable")
    });
    status.observed_generation == deployment.metadata.generation
        && status.replicas == Some(wanted)
        && status.updated_replicas == Some(wanted)
        && status.available_replicas == Some(wanted)
        && complete
}

/// Whether the Deployment controller has seen `deployment`'s latest spec and reports all of
/// its `replicas` pods made and none available (they start, but are not Ready).
pub fn made_but_unavailable(deployment: &Deployment, replicas: i32) -> bool {
    let status = deployment.status.clone().unwrap_or_default();
    status.observed_generation == deployment.metadata.generation
        && status.replicas == Some(replicas)
        && status.updated_replicas == Some(replicas)
        && status.available_replicas.unwrap_or(0) == 0
        && status.unavailable_replicas == Some(replicas)
}

/// Wait until the pods matching `selector` satisfy `check`, which says what it saw otherwise.
pub async fn wait_for_pods<F>(env: &Env, selector: &str, what: &str, check: F) -> Vec<Pod>
where
    F: Fn(&[Pod]) -> Result<(), String>,
{
    eventually(what, || async {
        let pods = env
            .pods()
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|error| error.to_string())?
            .items;
        check(&pods).map(|()| pods)
    })
    .await
}

/// The pods of a list that run (have an address) and are not being deleted: `(ready, not
/// ready)`.
pub fn running_pods(pods: &[Pod]) -> (usize, usize) {
    let running = pods.iter().filter(|pod| {
        pod.metadata.deletion_timestamp.is_none()
            && pod
                .status
                .as_ref()
                .is_some_and(|status| status.pod_ip.is_some())
    });
    let (ready, unready): (Vec<&Pod>, Vec<&Pod>) =
        running.partition(|pod| crate::kubelet::is_ready(pod));
    (ready.len(), unready.len())
}

/// A Ready endpoint of a Service, as its EndpointSlices give it and its pod labels it.
#[derive(Clone, Debug)]
pub struct ReadyEndpoint {
    /// The address clients connect to.
    pub address: String,
    /// The pod behind it (the endpoint's targetRef).
    pub pod: String,
    /// The pod's `waymark.dev/role` label.
    pub role: String,
    /// The pod's `waymark.dev/revision` label.
    pub revision: String,
}

/// The Ready endpoints of Service `service`, from its EndpointSlices (what kube-proxy and
/// every mesh route to), each with the role of the pod it points to; checks that each address
/// is its pod's address.
pub async fn ready_endpoints(env: &Env, service: &str) -> Result<Vec<ReadyEndpoint>, String> {
    let (slices, pods) = endpoint_slices_and_pods(env, service).await?;
    let mut ready = Vec::new();
    for endpoint in slices.iter().flat_map(|slice| slice.endpoints.iter()) {
        if endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(true) {
            continue;
        }
        let target = endpoint
            .target_ref
            .as_ref()
            .and_then(|target| target.name.clone())
            .ok_or_else(|| format!("a Ready endpoint without a pod: {endpoint:?}"))?;
        let pod = pods
            .get(&target)
            .ok_or_else(|| format!("endpoint of pod {target}, which no longer exists"))?;
        let address = endpoint.addresses.first().cloned().unwrap_or_default();
        let pod_ip = pod.status.as_ref().and_then(|status| status.pod_ip.clone());
        assert_eq!(
            Some(&address),
            pod_ip.as_ref(),
            "the endpoint of pod {target} has the pod's address"
        );
        let label = |key: &str| pod.labels().get(key).cloned().unwrap_or_default();
        ready.push(ReadyEndpoint {
            address,
            pod: target,
            role: label(waymark::api::LABEL_ROLE),
            revision: label(waymark::api::LABEL_REVISION),
        });
    }
    Ok(ready)
}

/// Wait until the Ready endpoints of Service `service` are `stable` stable and `canary` canary
/// pods; returns them.
pub async fn wait_for_endpoints(
    env: &Env,
    service: &str,
    stable: usize,
    canary: usize,
) -> Vec<ReadyEndpoint> {
    eventually(
        &format!("Service {service} to have {stable} stable and {canary} canary Ready endpoints"),
        || async {
            let endpoints = ready_endpoints(env, service).await?;
            let count = |role: &str| endpoints.iter().filter(|e| e.role == role).count();
            if count("stable") == stable
                && count("canary") == canary
                && endpoints.len() == stable + canary
            {
                Ok(endpoints)
            } else {
                Err(format!("Ready endpoints {endpoints:?}"))
            }
        },
    )
    .await
}

pub async fn healthy_first_release(env: &Env, name: &str, steps: Value) {
    create_route(env, name, name).await;
    create_release(env, &release(name, name, steps)).await;
    wait_for_phase(env, name, Phase::Healthy, Some("StableAvailable")).await;
}

/// What `waymark promote|abort|retry` writes: the request the CLI builds from the Release as it
/// is (refused ones panic), on the status subresource.
pub async fn request(env: &Env, name: &str, action: waymark::api::ManualAction, id: &str) {
    let release = env.releases().get(name).await.expect("the Release");
    let mut request = waymark::cli::request::build_request(
        &release,
        action,
        k8s_openapi::jiff::Timestamp::now(),
        Some("e2e".into()),
    )
    .unwrap_or_else(|refusal| panic!("the CLI refuses the {id} request: {refusal}"));
    request.id = id.into();
    let patch = json!({
        "apiVersion": "waymark.dev/v1alpha1",
        "kind": "Release",
        "status": {"request": request}
    });
    env.releases()
        .patch_status(
            name,
            &PatchParams::apply(waymark::api::CLI_FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap_or_else(|error| panic!("cannot write the {id} request: {error}"));
}

/// Wait until the status satisfies `check`, which says what it saw otherwise.
pub async fn wait_for_status<F>(
    env: &Env,
    name: &str,
    what: &str,
    check: F,
) -> waymark::api::ReleaseStatus
where
    F: Fn(&waymark::api::ReleaseStatus) -> bool,
{
    eventually(what, || async {
        let status = env.status(name).await;
        if check(&status) {
            Ok(status)
        } else {
            Err(format!(
                "phase {:?}, reason {:?}, step {:?}, weight {:?}, message {:?}",
                status.phase,
                status.reason,
                status.current_step,
                status.canary_weight,
                status.message
            ))
        }
    })
    .await
}

/// The canary's percent of traffic in the first rule of a recorded HTTPRoute version.
pub fn canary_percent(
    route: &gateway_api::apis::experimental::httproutes::HttpRoute,
    release: &str,
) -> i32 {
    waymark::traffic::gateway::canary_weight(
        route,
        &waymark::traffic::gateway::Backends::of(release),
    )
    .unwrap_or(0)
}

/// Assert that a sequence of canary weights never goes back: it rises (or holds) step by
/// step and drops to 0 at most once, at the end (promotion or rollback), without a flap.
pub fn assert_no_flap(weights: &[i32], what: &str) {
    let mut deduplicated: Vec<i32> = Vec::new();
    for weight in weights {
        if deduplicated.last() != Some(weight) {
            deduplicated.push(*weight);
        }
    }
    // The end: the first 0 after the canary had traffic.
    let end = deduplicated
        .iter()
        .position(|w| *w > 0)
        .and_then(|start| {
            deduplicated[start..]
                .iter()
                .position(|w| *w == 0)
                .map(|offset| start + offset)
        })
        .unwrap_or(deduplicated.len());
    let (rising, after) = deduplicated.split_at(end);
    assert!(
        rising.windows(2).all(|pair| pair[0] <= pair[1]),
        "{what}: canary weights went back before the end: {deduplicated:?}"
    );
    assert!(
        after.iter().all(|w| *w == 0),
        "{what}: canary weights rose again after dropping to 0: {deduplicated:?}"
    );
}

/// Argo CD's health of `release` as `config/argocd/health.lua` computes it (under Lua 5.1, as
/// in Argo CD): `(status, message)`.
pub fn argo_health(release: &Release) -> (String, String) {
    crate::common::argocd::health(&serde_json::to_value(release).expect("a Release serializes"))
}

/// A real Prometheus scraping a metrics server that serves no series yet (the walk sets them).
/// `None` when the walk is skipped (no `prometheus` binary, and not in CI).
pub async fn prometheus_scraping() -> Option<(
    crate::prometheus_support::MetricsServer,
    crate::prometheus_support::Prometheus,
)> {
    let metrics = crate::prometheus_support::MetricsServer::start()
        .await
        .expect("the test metrics server starts");
    let prometheus = crate::prometheus_support::Prometheus::start(&[metrics.address()]).await?;
    Some((metrics, prometheus))
}

/// A real Prometheus scraping request counters for `<release>-stable` (no errors) and
/// `<release>-canary` (failing `canary_error_ratio` of its requests), 50 requests/s each, with
/// a full 20 s window collected. `None` when the walk is skipped (no `prometheus` binary, and
/// not in CI).
pub async fn prometheus_judging(
    env: &Env,
    release: &str,
    canary_error_ratio: f64,
) -> Option<(
    crate::prometheus_support::MetricsServer,
    crate::prometheus_support::Prometheus,
)> {
    let (metrics, prometheus) = prometheus_scraping().await?;
    metrics.set_traffic(&env.namespace, &format!("{release}-stable"), 50.0, 0.0);
    metrics.set_traffic(
        &env.namespace,
        &format!("{release}-canary"),
        50.0,
        canary_error_ratio,
    );
    prometheus
        .wait_for_window(
            &format!(r#"http_requests_total{{namespace="{}"}}"#, env.namespace),
            std::time::Duration::from_secs(20),
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|error| panic!("Prometheus collects a full window: {error}"));
    Some((metrics, prometheus))
}

/// The EndpointSlices of Service `service` (by `kubernetes.io/service-name`) and the namespace's
/// pods by name, to look up the pod behind each endpoint.
pub async fn endpoint_slices_and_pods(
    env: &Env,
    service: &str,
) -> Result<(Vec<EndpointSlice>, BTreeMap<String, Pod>), String> {
    let slices: Api<EndpointSlice> = Api::namespaced(env.client.clone(), &env.namespace);
    let slices = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .map_err(|error| format!("cannot list the EndpointSlices of {service}: {error}"))?;
    let pods = env
        .pods()
        .list(&ListParams::default())
        .await
        .map_err(|error| format!("cannot list the pods: {error}"))?
        .into_iter()
        .map(|pod| (pod.name_any(), pod))
        .collect();
    Ok((slices.items, pods))
}

/// Wait until Release `name` is gone (its finalizers, if any, removed), saying which finalizers
/// hold it on a timeout.
pub async fn wait_until_release_gone(env: &Env, name: &str) {
    eventually("the Release to be gone", || async {
        match env.releases().get_opt(name).await {
            Ok(None) => Ok(()),
            Ok(Some(release)) => Err(format!("finalizers {:?}", release.finalizers())),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
}

/// Bind ClusterRole `cluster_role` to the controller's ServiceAccount in the walk's namespace,
/// as the role's file in `config/rbac/` says to (the Secret and notification readers).
pub async fn bind_controller_role(env: &Env, cluster_role: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": cluster_role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": cluster_role},
        "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER_ACCOUNT,
                      "namespace": CONTROLLER_NAMESPACE}]
    }))
    .expect("a RoleBinding");
    Api::<RoleBinding>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|error| panic!("cannot bind {cluster_role}: {error}"));
}

/// Wait until Release `name` has condition `type_` with `reason`, and return it.
pub async fn wait_for_condition(env: &Env, name: &str, type_: &str, reason: &str) -> Condition {
    let what = format!("{type_} with reason {reason} on Release {name}");
    let status = wait_for_status(env, name, &what, |status| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.reason == reason)
    })
    .await;
    status
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_ && c.reason == reason)
        .expect("the condition just seen")
}
