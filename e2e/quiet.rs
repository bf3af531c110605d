//! A quiet controller on a real API server: the status changes only when the state does, a
//! settled Release is not written at all, and nothing is Healthy before it runs.

use std::time::Duration;

use serde_json::json;

use crate::fixtures::*;
use crate::support::{Env, Versions};
use waymark::api::Phase;

/// A Release in a 20 s timed pause changes its resourceVersion at most 3 times during the
/// pause (on a countdown in the message it was rewritten some 40 times a second).
pub async fn a_timed_pause_leaves_the_release_still(env: Env) {
    let name = "checkout";
    let steps = json!([{"setWeight": 20}, {"pause": {"duration": "20s"}}, {"setWeight": 40}]);
    healthy_first_release(&env, name, steps).await;
    let whole_canary = Versions::record(env.releases(), name).await;
    ship(&env, name, &image(2), "E2E-2").await;
    let paused = wait_for_status(&env, name, "the timed pause", |status| {
        status.pause_until.is_some() && status.canary_weight == Some(20)
    })
    .await;
    let versions = Versions::record(env.releases(), name).await;
    let until = paused.pause_until.clone().expect("pauseUntil").0;
    let left = || {
        let left = until.duration_since(k8s_openapi::jiff::Timestamp::now());
        Duration::try_from(left).unwrap_or_default()
    };
    assert!(
        left() > Duration::from_secs(10),
        "most of the pause is still ahead ({:?} left)",
        left()
    );
    // The controller looks at the Release during the pause (a reconcile that writes nothing
    // proves more than one that never ran).
    env.await_fresh_reconcile(name).await;
    // Watch the pause's own time pass, on purpose: until just before it ends.
    tokio::time::sleep(left().saturating_sub(Duration::from_millis(500))).await;
    let writes = versions.writes();
    assert!(
        writes <= 3,
        "the Release was written {writes} times during the pause: {:#?}",
        versions
            .seen()
            .iter()
            .map(|release| release.status.as_ref().and_then(|s| s.message.clone()))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "a_timed_pause_leaves_the_release_still: {writes} Release writes during the 20s pause"
    );
    // And then it moves on, on time, to promotion.
    wait_for_weight(&env, name, name, 40).await;
    wait_for_status(&env, name, "the promotion", |status| {
        status.phase == Some(Phase::Healthy) && status.roadmap_item.as_deref() == Some("E2E-2")
    })
    .await;
    let status_writes = whole_canary
        .seen()
        .windows(2)
        .filter(|pair| pair[0].status != pair[1].status)
        .count();
    eprintln!(
        "a_timed_pause_leaves_the_release_still: {} Release writes ({status_writes} of the status) \
         for one whole canary of 3 steps, from the new template to promotion",
        whole_canary.writes()
    );
    assert!(
        status_writes <= 12,
        "{status_writes} status writes for 3 steps and a promotion"
    );
}

/// A settled Healthy Release and its children are not written at all for 30 s.
pub async fn a_settled_release_and_its_children_are_not_written(env: Env) {
    let name = "checkout";
    healthy_first_release(&env, name, json!([{"setWeight": 50}])).await;
    // The last writes of the first release: the Deployment controller's, once the rollout is
    // complete, and the controller's own, once it has looked at the Release since.
    wait_for_deployment(&env, "checkout-stable", "the stable rolled out", rolled_out).await;
    env.await_fresh_reconcile(name).await;
    let release = Versions::record(env.releases(), name).await;
    let stable = Versions::record(env.deployments(), "checkout-stable").await;
    let stable_service = Versions::record(env.services(), "checkout-stable").await;
    let canary_service = Versions::record(env.services(), "checkout-canary").await;
    let route = Versions::record(env.routes(), name).await;
    // A new controller looks at everything once: not even that first look writes.
    env.restart_controller().await;
    // The observation window itself, on purpose: settled means 30 s without a write.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let reconciles = env.reconciles().await;
    assert!(
        reconciles >= 1,
        "the restarted controller never reconciled the settled Release"
    );
    for (what, writes) in [
        ("Release", release.writes()),
        ("Deployment checkout-stable", stable.writes()),
        ("Service checkout-stable", stable_service.writes()),
        ("Service checkout-canary", canary_service.writes()),
        ("HTTPRoute checkout", route.writes()),
    ] {
        assert_eq!(writes, 0, "{what} was written {writes} times while settled");
    }
}

/// A first release is Progressing until its stable is available, never Healthy before.
pub async fn a_first_release_is_not_healthy_before_its_stable_is_available(env: Env) {
    let name = "checkout";
    env.set_pods_become_ready(false);
    create_route(&env, name, name).await;
    create_release(&env, &release(name, name, json!([{"setWeight": 50}]))).await;
    let status = wait_for_status(&env, name, "a first status", |status| {
        status.phase.is_some()
    })
    .await;
    assert_eq!(
        status.phase,
        Some(Phase::Progressing),
        "{:?}",
        status.message
    );
    assert_eq!(status.reason.as_deref(), Some("StableRollingOut"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("waiting for 2 pods to be available"),
        "{:?}",
        status.message
    );
    let release = env.releases().get(name).await.expect("the Release");
    assert_eq!(
        argo_health(&release).0,
        "Progressing",
        "Argo CD must not show it green"
    );
    // As long as no pod is available, it stays Progressing: the pods run but are not Ready,
    // the Deployment controller says so, and the controller has looked since.
    wait_for_deployment(
        &env,
        "checkout-stable",
        "the stable's pods made, none available",
        |deployment| made_but_unavailable(deployment, 2),
    )
    .await;
    wait_for_pods(
        &env,
        "waymark.dev/role=stable",
        "the stable's 2 pods running, not Ready",
        |pods| match running_pods(pods) {
            (0, 2) => Ok(()),
            (ready, unready) => Err(format!("{ready} Ready and {unready} unready pods")),
        },
    )
    .await;
    env.await_fresh_reconcile(name).await;
    let still = env.status(name).await;
    assert_eq!(still.phase, Some(Phase::Progressing), "{:?}", still.message);

    env.set_pods_become_ready(true);
    wait_for_phase(&env, name, Phase::Healthy, Some("StableAvailable")).await;
    let release = env.releases().get(name).await.expect("the Release");
    assert_eq!(argo_health(&release).0, "Healthy");
}

/// The controller writes a status as a JSON patch whose first operation tests the
/// resourceVersion its decision was made on. Over a Release that changed since, the API server
/// refuses the whole patch, and the controller reads that answer as a stale Release (decide
/// again), not as a status the schema refused.
pub async fn a_status_patch_over_a_changed_release_is_refused_as_stale(env: Env) {
    let name = "checkout";
    healthy_first_release(&env, name, json!([{"setWeight": 50}])).await;
    let before = env.releases().get(name).await.expect("the Release");
    let seen = before.metadata.resource_version.clone().expect("a version");
    // Someone else writes meanwhile (a label, as a person or Argo CD would).
    env.releases()
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"team": "payments"}}})),
        )
        .await
        .expect("the label");
    let stale = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": seen},
        {"op": "add", "path": "/status/message", "value": "a decision on an old copy"},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(stale).expect("a JSON patch");
    let refused = env
        .releases()
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Json::<()>(patch),
        )
        .await
        .expect_err("a patch over a changed Release");
    let kube::Error::Api(status) = &refused else {
        panic!("an answer from the API server: {refused}");
    };
    assert!(
        waymark::controller::status::patch_not_applicable(status),
        "read as stale: {status:?}"
    );
    let now = env.status(name).await;
    assert_ne!(now.message.as_deref(), Some("a decision on an old copy"));
}
