//! Waymark's children on a real API server: recreated when deleted (with no traffic to a canary
//! that cannot answer), never taken from someone else, and refusals shown in the status.

use k8s_openapi::api::core::v1::{ResourceQuota, Service};
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::fixtures::*;
use crate::support::{E2E_MANAGER, Env, Versions, eventually};
use waymark::api::{LABEL_RELEASE, Phase};

/// The canary's Deployment and Service deleted mid-canary are recreated; the canary gets no
/// traffic until its pods are available again, then its step's weight back.
pub async fn deleted_children_are_recreated_and_the_canary_waits_for_its_pods(env: Env) {
    let name = "checkout";
    healthy_first_release(&env, name, json!([{"setWeight": 30}, {"pause": {}}])).await;
    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    wait_for_weight(&env, name, name, 30).await;

    let route = Versions::record(env.routes(), name).await;
    env.set_pods_become_ready(false);
    let canary = env
        .deployments()
        .get("checkout-canary")
        .await
        .expect("the canary");
    env.deployments()
        .delete("checkout-canary", &DeleteParams::foreground())
        .await
        .expect("delete the canary");
    env.services()
        .delete("checkout-canary", &DeleteParams::default())
        .await
        .expect("delete the canary Service");
    wait_for_weight(&env, name, name, 0).await;
    eventually("the canary Deployment recreated", || async {
        match env.deployments().get_opt("checkout-canary").await {
            Ok(Some(new)) if new.uid() != canary.uid() => Ok(()),
            Ok(_) => Err("not recreated yet".to_string()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    eventually("the canary Service recreated", || async {
        match env.services().get_opt("checkout-canary").await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("not recreated yet".to_string()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    // The recreated canary's pod runs but is not Ready, and the Deployment controller says so;
    // then the controller looks at that world before the walk asserts it sent no traffic.
    wait_for_deployment(
        &env,
        "checkout-canary",
        "the recreated canary's pod made, none available",
        |deployment| made_but_unavailable(deployment, 1),
    )
    .await;
    wait_for_pods(
        &env,
        "waymark.dev/role=canary",
        "the recreated canary's pod running, not Ready",
        |pods| match running_pods(pods) {
            (0, 1) => Ok(()),
            (ready, unready) => Err(format!("{ready} Ready and {unready} unready pods")),
        },
    )
    .await;
    env.await_fresh_reconcile(name).await;
    let (_, canary_weight) = route_weights(&env, name, name).await.expect("the route");
    assert_eq!(
        canary_weight.unwrap_or(0),
        0,
        "traffic to a canary without pods"
    );
    let status = env.status(name).await;
    assert_eq!(
        status.reason.as_deref(),
        Some("WaitingForCanary"),
        "{:?}",
        status.message
    );
    assert_eq!(status.current_step, Some(1), "the place is kept");

    let released = tokio::time::Instant::now();
    env.set_pods_become_ready(true);
    wait_for_weight(&env, name, name, 30).await;
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    // Once the weight went to 0, it stayed there for as long as the pod was held unready.
    let held: Vec<i32> = route
        .seen_before(released)
        .iter()
        .map(|version| canary_percent(version, name))
        .skip_while(|weight| *weight != 0)
        .collect();
    assert!(
        !held.is_empty() && held.iter().all(|weight| *weight == 0),
        "traffic went to the canary before its pod was Ready: {held:?}"
    );
}

/// A Service named like a child, made by someone else beforehand, is not taken over: the
/// Release says whose it is; annotated `waymark.dev/adopt: "true"` it is adopted.
pub async fn an_object_waymark_did_not_create_is_not_taken_over(env: Env) {
    let name = "taken";
    let theirs: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "taken-stable", "labels": {"app.kubernetes.io/managed-by": "Helm"}},
        "spec": {"selector": {"app": "legacy"}, "ports": [{"port": 80}]}
    }))
    .expect("a Service");
    env.services()
        .create(&PostParams::default(), &theirs)
        .await
        .expect("someone else's Service");
    create_route(&env, name, name).await;
    create_release(&env, &release(name, name, json!([{"setWeight": 50}]))).await;

    let status = wait_for_status(&env, name, "the refusal in the status", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Applied" && c.status == "False")
    })
    .await;
    assert_eq!(status.phase, Some(Phase::Degraded));
    assert_eq!(status.reason.as_deref(), Some("NotOwned"));
    let applied = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Applied")
        .expect("Applied");
    assert!(applied.message.contains("Service"), "{}", applied.message);
    assert!(
        applied.message.contains("taken-stable"),
        "{}",
        applied.message
    );
    assert!(
        applied.message.contains("waymark.dev/adopt"),
        "{}",
        applied.message
    );
    // The Service stays as its owner made it, also once the controller has looked again.
    env.await_fresh_reconcile(name).await;
    let untouched = env
        .services()
        .get("taken-stable")
        .await
        .expect("their Service");
    assert!(untouched.owner_references().is_empty(), "no owner added");
    assert_eq!(
        untouched
            .spec
            .and_then(|spec| spec.selector)
            .unwrap_or_default()
            .get("app")
            .map(String::as_str),
        Some("legacy"),
        "selector untouched"
    );
    let events = warning_events(&env, name).await;
    assert!(
        events.iter().any(|note| note.contains("taken-stable")),
        "{events:?}"
    );

    // The owner lets Waymark have it.
    env.services()
        .patch(
            "taken-stable",
            &PatchParams::apply(E2E_MANAGER),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "taken-stable", "annotations": {"waymark.dev/adopt": "true"}}
            })),
        )
        .await
        .expect("annotate for adoption");
    wait_for_phase(&env, name, Phase::Healthy, Some("StableAvailable")).await;
    let adopted = env
        .services()
        .get("taken-stable")
        .await
        .expect("the Service");
    assert_eq!(adopted.owner_references()[0].name, name);
    assert_eq!(
        adopted
            .spec
            .and_then(|spec| spec.selector)
            .unwrap_or_default()
            .get(LABEL_RELEASE)
            .map(String::as_str),
        Some(name)
    );
}

/// A ResourceQuota refuses the canary's Deployment: the status and a Warning event say so,
/// naming the Deployment and quoting the API server, and the canary starts once it allows.
pub async fn a_write_refused_by_a_quota_is_shown_in_the_status(env: Env) {
    let name = "checkout";
    healthy_first_release(&env, name, json!([{"setWeight": 50}])).await;
    let quota: ResourceQuota = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "deployments"},
        "spec": {"hard": {"count/deployments.apps": "1"}}
    }))
    .expect("a quota");
    let quotas: kube::Api<ResourceQuota> =
        kube::Api::namespaced(env.client.clone(), &env.namespace);
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("the quota");
    // The quota controller is not running: the API server admits against the quota's status.
    quotas
        .patch_status(
            "deployments",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"hard": {"count/deployments.apps": "1"}, "used": {"count/deployments.apps": "1"}}})),
        )
        .await
        .expect("the quota's usage");
    ship(&env, name, &image(2), "E2E-2").await;

    let status = wait_for_status(&env, name, "the quota refusal in the status", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Applied" && c.status == "False")
    })
    .await;
    assert_eq!(status.phase, Some(Phase::Degraded));
    assert_eq!(
        status.reason.as_deref(),
        Some("QuotaExceeded"),
        "{:?}",
        status.message
    );
    let message = status.message.clone().unwrap_or_default();
    assert!(message.contains("Deployment"), "{message}");
    assert!(message.contains("checkout-canary"), "{message}");
    assert!(
        message.contains("exceeded quota"),
        "quotes the API server: {message}"
    );
    let events = warning_events(&env, name).await;
    assert!(
        events.iter().any(|note| note.contains("exceeded quota")),
        "{events:?}"
    );

    quotas
        .delete("deployments", &DeleteParams::default())
        .await
        .expect("lift the quota");
    wait_for_weight(&env, name, name, 50).await;
    let status = env.status(name).await;
    let applied = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Applied")
        .expect("Applied");
    assert_eq!(applied.status, "True", "writes accepted again");
}

/// The notes of the Warning events on Release `name`.
async fn warning_events(env: &Env, name: &str) -> Vec<String> {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(env.client.clone(), &env.namespace);
    eventually("a Warning event on the Release", || async {
        let list = events
            .list(&Default::default())
            .await
            .map_err(|error| error.to_string())?;
        let notes: Vec<String> = list
            .items
            .into_iter()
            .filter(|event| event.type_.as_deref() == Some("Warning"))
            .filter(|event| event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|event| event.note)
            .collect();
        if notes.is_empty() {
            Err("no Warning event yet".to_string())
        } else {
            Ok(notes)
        }
    })
    .await
}
