//! The scale subresource on a real API server: `kubectl scale` and a HorizontalPodAutoscaler
//! set a Release's total through `/scale`, also in the middle of a canary.
//!
//! kube-controller-manager's HPA controller does not run here (no metrics server to feed it):
//! each walk writes `/scale` the way it would (a GET of the Scale, then a PUT with the new
//! `spec.replicas`), and creates an `autoscaling/v2` HPA targeting the Release to show that the
//! API server accepts it.

use std::time::Duration;

use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};
use serde_json::json;

use crate::fixtures::*;
use crate::support::{Env, Versions};
use waymark::api::{LABEL_RELEASE, LABEL_ROLE, Phase, Release};

/// Ready pods per role (`waymark.dev/role`) of Release `name`: `(stable, canary)`.
async fn ready_pods_by_role(env: &Env, name: &str) -> (usize, usize) {
    let pods = env
        .pods()
        .list(&ListParams::default().labels(&format!("{LABEL_RELEASE}={name}")))
        .await
        .unwrap_or_else(|error| panic!("cannot list the pods of {name}: {error}"))
        .items;
    let ready_of = |role: &str| {
        let of_role: Vec<Pod> = pods
            .iter()
            .filter(|pod| pod.labels().get(LABEL_ROLE).map(String::as_str) == Some(role))
            .cloned()
            .collect();
        running_pods(&of_role).0
    };
    (ready_of("stable"), ready_of("canary"))
}

/// Wait until the Release's pods are `expected` Ready per role, and nothing else runs.
async fn wait_for_roles(env: &Env, name: &str, expected: (usize, usize)) {
    crate::support::eventually(
        &format!("{expected:?} ready (stable, canary) pods"),
        || async {
            let pods = env
                .pods()
                .list(&ListParams::default().labels(&format!("{LABEL_RELEASE}={name}")))
                .await
                .map_err(|error| error.to_string())?
                .items;
            let (_, unready) = running_pods(&pods);
            let ready = ready_pods_by_role(env, name).await;
            let leaving = pods
                .iter()
                .filter(|pod| pod.metadata.deletion_timestamp.is_some())
                .count();
            if ready == expected && unready == 0 && leaving == 0 {
                Ok(())
            } else {
                Err(format!(
                    "ready {ready:?}, {unready} not ready, {leaving} terminating"
                ))
            }
        },
    )
    .await;
}

/// What the HPA controller does to change the total: read `/scale`, write it back with the new
/// `spec.replicas` (an update, so a concurrent write makes it retry on a conflict).
async fn scale_as_the_hpa_does(env: &Env, name: &str, replicas: i32) -> Scale {
    let mut scale = env
        .releases()
        .get_scale(name)
        .await
        .unwrap_or_else(|error| panic!("cannot read the scale of Release {name}: {error}"));
    scale.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
    env.releases()
        .replace_scale(name, &PostParams::default(), &scale)
        .await
        .unwrap_or_else(|error| panic!("cannot scale Release {name} to {replicas}: {error}"))
}

/// `kubectl scale` and an HPA's `/scale` writes work on a Release; a negative or absurd count
/// is refused by the schema naming `spec.replicas`; an `autoscaling/v2` HPA may target it. In
/// the middle of a replica-split canary paused at 25%, a scale from 4 to 8 makes 6 stable + 2
/// canary Ready pods, and the weight and the step do not change on the way.
pub async fn a_release_scaled_through_its_scale_subresource_mid_canary_keeps_its_step(env: Env) {
    let name = "checkout";
    let steps = json!([{"setWeight": 25}, {"pause": {}}]);
    create_release(&env, &replica_split_release(name, 4, steps)).await;
    wait_for_phase(&env, name, Phase::Healthy, Some("StableAvailable")).await;

    // The Scale as the HPA and `kubectl get --subresource=scale` read it.
    let scale = crate::support::eventually("status.replicas at 4 on /scale", || async {
        let scale = env
            .releases()
            .get_scale(name)
            .await
            .map_err(|error| error.to_string())?;
        match scale.status.as_ref().map(|s| s.replicas) {
            Some(4) => Ok(scale),
            other => Err(format!("status.replicas {other:?}")),
        }
    })
    .await;
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(4));
    assert_eq!(
        scale.status.as_ref().and_then(|s| s.selector.as_deref()),
        Some("app=checkout,waymark.dev/release=checkout")
    );

    // A negative or absurd count is refused by the schema, naming the field.
    for refused in [-1, 0, 100_000] {
        let mut scale = env.releases().get_scale(name).await.expect("the scale");
        scale.spec.get_or_insert_with(Default::default).replicas = Some(refused);
        let error = env
            .releases()
            .replace_scale(name, &PostParams::default(), &scale)
            .await
            .expect_err("refused");
        let text = error.to_string();
        assert!(text.contains("spec.replicas"), "{refused}: {text}");
        eprintln!("/scale to {refused} refused: {text}");
    }

    // The README's HPA (examples/checkout-hpa.yaml), moved to the walk's namespace, is accepted
    // by the API server as its controller would read it.
    let path = format!("{}/examples/checkout-hpa.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read examples/checkout-hpa.yaml: {error}"));
    let mut hpa: HorizontalPodAutoscaler = serde_saphyr::from_str(&text)
        .unwrap_or_else(|error| panic!("examples/checkout-hpa.yaml: {error}"));
    hpa.metadata.namespace = None;
    assert_eq!(
        hpa.spec.as_ref().map(|s| s.scale_target_ref.name.as_str()),
        Some(name)
    );
    let hpas: kube::Api<HorizontalPodAutoscaler> =
        kube::Api::namespaced(env.client.clone(), &env.namespace);
    let created = hpas
        .create(&PostParams::default(), &hpa)
        .await
        .unwrap_or_else(|error| panic!("the API server refuses the HPA: {error}"));
    assert_eq!(
        created.spec.map(|s| s.scale_target_ref.kind),
        Some("Release".to_string())
    );

    // A new image: the canary at 25% of 4 is 1 of 4 Ready pods.
    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    wait_for_roles(&env, name, (3, 1)).await;
    let before = env.status(name).await;
    assert_eq!(before.canary_weight, Some(25), "{:?}", before.message);
    eprintln!(
        "before the scale: stable {} canary {} Ready pods, weight {:?}, step {:?}",
        3, 1, before.canary_weight, before.step_progress
    );

    let versions = Versions::<Release>::record(env.releases(), name).await;
    // New pods start slowly, so the controller sees both sides short of pods for a while.
    env.set_pod_start_delay(Duration::from_millis(1_000)..Duration::from_millis(3_000));
    let scaled = scale_as_the_hpa_does(&env, name, 8).await;
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(8));
    wait_for_roles(&env, name, (6, 2)).await;
    // The pods are up; a fresh look by the controller sees them (and writes nothing new).
    env.await_fresh_reconcile(name).await;
    let after = env.status(name).await;
    let (stable, canary) = ready_pods_by_role(&env, name).await;
    eprintln!(
        "after the scale to 8: stable {stable} canary {canary} Ready pods, weight {:?}, step {:?}",
        after.canary_weight, after.step_progress
    );
    assert_eq!(after.phase, Some(Phase::Paused), "{:?}", after.message);
    assert_eq!(after.current_step, before.current_step);
    assert_eq!(after.step_started_at, before.step_started_at);
    assert_eq!(after.canary_revision, before.canary_revision);
    // Every status written on the way showed the same step and weight.
    for version in versions.seen() {
        eprintln!(
            "  generation {:?}: {:?}",
            version.metadata.generation,
            version.status.as_ref().map(|s| (
                s.observed_generation,
                s.replicas,
                s.message.clone(),
                s.conditions
                    .iter()
                    .map(|c| format!("{}={}", c.type_, c.status))
                    .collect::<Vec<_>>()
            ))
        );
        let status = version.status.unwrap_or_default();
        assert_eq!(status.canary_weight, Some(25), "{:?}", status.message);
        assert_eq!(
            status.current_step, before.current_step,
            "{:?}",
            status.message
        );
        assert_eq!(status.phase, Some(Phase::Paused), "{:?}", status.message);
    }
    // status.replicas is refreshed with the status writes of the canary (none here: nothing
    // but capacity changed) and once everything has rolled out with no canary in progress.
    eprintln!(
        "{} status writes during the scale; /scale status.replicas {:?}",
        versions.writes(),
        after.replicas
    );
    // The Deployments hold the split of the new total.
    let deployment_replicas = |name: &'static str| {
        let env = env.clone();
        async move {
            env.deployments()
                .get(name)
                .await
                .ok()
                .and_then(|d| d.spec)
                .and_then(|s| s.replicas)
        }
    };
    assert_eq!(deployment_replicas("checkout-stable").await, Some(6));
    assert_eq!(deployment_replicas("checkout-canary").await, Some(2));

    // Promoted, the stable runs the whole new total, and /scale says so.
    request(
        &env,
        name,
        waymark::api::ManualAction::Promote,
        "promote-scaled",
    )
    .await;
    wait_for_phase(&env, name, Phase::Healthy, Some("StableAvailable")).await;
    wait_for_roles(&env, name, (8, 0)).await;
    crate::support::eventually("status.replicas at 8 on /scale", || async {
        let scale = env
            .releases()
            .get_scale(name)
            .await
            .map_err(|error| error.to_string())?;
        match (
            scale.spec.as_ref().and_then(|s| s.replicas),
            scale.status.as_ref().map(|s| s.replicas),
        ) {
            (Some(8), Some(8)) => Ok(()),
            other => Err(format!("(spec, status) replicas {other:?}")),
        }
    })
    .await;
}

/// With an HTTPRoute, a scale from 4 to 20 through `/scale` in the middle of a canary paused at
/// 10%: the canary runs its share of the new total rounded up (2 pods), the stable the whole
/// total (20), and the route's weight and the step do not change on the way.
pub async fn a_routed_canary_scaled_through_its_scale_subresource_keeps_its_route_weight(env: Env) {
    let name = "checkout";
    create_route(&env, name, name).await;
    let mut release = release(name, name, json!([{"setWeight": 10}, {"pause": {}}]));
    release.spec.replicas = 4;
    create_release(&env, &release).await;
    wait_for_phase(&env, name, Phase::Healthy, Some("StableAvailable")).await;

    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    wait_for_weight(&env, name, name, 10).await;
    wait_for_roles(&env, name, (4, 1)).await;
    let before = env.status(name).await;
    eprintln!(
        "before the scale: stable 4 canary 1 Ready pods, route weight 10, step {:?}",
        before.step_progress
    );

    let releases = Versions::<Release>::record(env.releases(), name).await;
    let routes = Versions::record(env.routes(), name).await;
    // New pods start slowly, so the controller sees the canary short of pods for a while.
    env.set_pod_start_delay(Duration::from_millis(1_000)..Duration::from_millis(3_000));
    scale_as_the_hpa_does(&env, name, 20).await;
    wait_for_roles(&env, name, (20, 2)).await;
    env.await_fresh_reconcile(name).await;
    let after = env.status(name).await;
    let (stable, canary) = ready_pods_by_role(&env, name).await;
    eprintln!(
        "after the scale to 20: stable {stable} canary {canary} Ready pods, weight {:?}, step {:?}",
        after.canary_weight, after.step_progress
    );
    for route in routes.seen() {
        assert_eq!(canary_percent(&route, name), 10, "the route's weight moved");
    }
    for version in releases.seen() {
        let status = version.status.unwrap_or_default();
        assert_eq!(status.canary_weight, Some(10), "{:?}", status.message);
        assert_eq!(
            status.current_step, before.current_step,
            "{:?}",
            status.message
        );
        assert_eq!(status.phase, Some(Phase::Paused), "{:?}", status.message);
    }
    assert_eq!(after.step_started_at, before.step_started_at);
    let canary_deployment = env
        .deployments()
        .get("checkout-canary")
        .await
        .expect("the canary Deployment");
    assert_eq!(canary_deployment.spec.and_then(|s| s.replicas), Some(2));
}
