//! The canary's life on a real API server: first release, every step to promotion, abort,
//! a missing route, and a rollback decided by a real Prometheus.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::fixtures::*;
use crate::support::{Env, eventually};
use waymark::api::{
    CLI_FIELD_MANAGER, LABEL_RELEASE, LABEL_REVISION, LABEL_ROADMAP_ITEM, LABEL_ROLE, ManualAction,
    ManualRequest, Outcome, Phase, Release,
};

pub async fn first_release_becomes_healthy_with_labelled_children(env: Env) {
    let name = "checkout";
    healthy_first_release(&env, name, json!([{"setWeight": 50}])).await;

    let status = env.status(name).await;
    let stable_revision = status.stable_revision.clone().expect("a stable revision");
    assert_eq!(status.canary_revision, None);
    let stable = env.deployments().get("checkout-stable").await.unwrap();
    assert_eq!(stable.labels()[LABEL_ROLE], "stable");
    assert_eq!(stable.labels()[LABEL_REVISION], stable_revision);
    assert_eq!(stable.labels()[LABEL_ROADMAP_ITEM], "E2E-1");
    assert_eq!(stable.owner_references()[0].kind, "Release");
    assert_eq!(stable.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert!(
        env.deployments()
            .get_opt("checkout-canary")
            .await
            .unwrap()
            .is_none(),
        "no canary on a first release"
    );
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.namespace);
    for role in ["stable", "canary"] {
        let service = services.get(&format!("checkout-{role}")).await.unwrap();
        let selector = service.spec.unwrap().selector.unwrap();
        assert_eq!(selector[LABEL_ROLE], role);
    }
    let (stable_weight, canary_weight) = route_weights(&env, name, name).await.unwrap();
    assert_eq!(
        canary_weight.unwrap_or(0),
        0,
        "all traffic on stable ({stable_weight})"
    );
}

pub async fn a_new_image_walks_every_step_to_promotion(env: Env) {
    let name = "checkout";
    let steps = json!([
        {"setWeight": 20},
        {"pause": {"duration": "3s"}},
        {"setWeight": 50},
        {"pause": {"duration": "3s"}}
    ]);
    healthy_first_release(&env, name, steps).await;
    let first_revision = env
        .status(name)
        .await
        .stable_revision
        .expect("stable revision");

    ship(&env, name, &image(2), "E2E-2").await;
    let canary_revision = eventually("a canary revision in the status", || async {
        let status = env.status(name).await;
        status
            .canary_revision
            .filter(|revision| *revision != first_revision)
            .ok_or_else(|| format!("phase {:?}, message {:?}", status.phase, status.message))
    })
    .await;
    let canary = eventually("the canary Deployment", || async {
        env.deployments()
            .get_opt("checkout-canary")
            .await
            .map_err(|error| error.to_string())?
            .ok_or_else(|| "not created yet".to_string())
    })
    .await;
    assert_eq!(canary.labels()[LABEL_REVISION], canary_revision);
    assert_eq!(canary.labels()[LABEL_ROADMAP_ITEM], "E2E-2");

    for weight in [20, 50] {
        wait_for_weight(&env, name, name, weight).await;
    }

    eventually(
        "promotion: the stable runs the canary's revision",
        || async {
            let status = env.status(name).await;
            if status.stable_revision.as_deref() == Some(canary_revision.as_str())
                && status.phase == Some(Phase::Healthy)
            {
                Ok(())
            } else {
                Err(format!(
                    "stable {:?}, phase {:?}, message {:?}",
                    status.stable_revision, status.phase, status.message
                ))
            }
        },
    )
    .await;
    wait_for_weight(&env, name, name, 0).await;
    eventually(
        "the old canary to be removed after scaleDownDelay",
        || async {
            match env.deployments().get_opt("checkout-canary").await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("checkout-canary still exists".to_string()),
                Err(error) => Err(error.to_string()),
            }
        },
    )
    .await;

    let stable = env.deployments().get("checkout-stable").await.unwrap();
    assert_eq!(stable.labels()[LABEL_REVISION], canary_revision);
    let image_now = stable
        .spec
        .and_then(|spec| spec.template.spec)
        .and_then(|pod| pod.containers[0].image.clone());
    assert_eq!(image_now, Some(image(2)));
    let status = env.status(name).await;
    let newest = status.history.first().expect("a history entry");
    assert_eq!(newest.revision, canary_revision);
    assert_eq!(newest.outcome, Outcome::Promoted);
    assert_eq!(newest.roadmap_item, "E2E-2");

    // `kubectl describe release` tells the story: one Event per step and stage, each naming
    // the roadmap item, none repeated by later reconciles.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let story: Vec<(String, String)> = events
        .list(&Default::default())
        .await
        .expect("the Release's events")
        .items
        .into_iter()
        .filter(|event| event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|event| {
            (
                event.reason.unwrap_or_default(),
                event.note.unwrap_or_default(),
            )
        })
        .collect();
    for reason in [
        "StableCreated",
        "CanaryStarted",
        "StepCompleted",
        "CanaryPromoted",
    ] {
        assert!(
            story.iter().any(|(r, _)| r == reason),
            "{reason} in {story:#?}"
        );
    }
    assert!(
        !story.iter().any(|(r, _)| r == "PromotionStarted"),
        "the promotion's start is in the status and the log, not an Event of its own: {story:#?}"
    );
    let steps: Vec<_> = story.iter().filter(|(r, _)| r == "StepCompleted").collect();
    assert_eq!(steps.len(), 2, "one per setWeight step: {steps:#?}");
    assert!(
        steps.iter().any(|(_, note)| note.contains("20%")),
        "{steps:#?}"
    );
    for (reason, note) in &story {
        assert!(
            note.starts_with("E2E-"),
            "{reason} names the roadmap item: {note}"
        );
    }
    let mut distinct = story.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        story.len(),
        "no Event object repeated: {story:#?}"
    );
}

pub async fn abort_sends_traffic_back_to_stable_before_the_canary_goes(env: Env) {
    let name = "checkout";
    healthy_first_release(&env, name, json!([{"setWeight": 30}, {"pause": {}}])).await;

    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_weight(&env, name, name, 30).await;
    wait_for_phase(&env, name, Phase::Paused, None).await;
    let canary_revision = env.status(name).await.canary_revision.expect("a canary");

    // What `waymark abort` writes: a request on the status subresource, as the CLI.
    let request = ManualRequest {
        id: "e2e-abort-1".into(),
        action: ManualAction::Abort,
        revision: Some(canary_revision.clone()),
        stage: None,
        step: None,
        requested_at: Time(Timestamp::now()),
        requested_by: Some("e2e".into()),
    };
    let patch = json!({
        "apiVersion": "waymark.dev/v1alpha1",
        "kind": "Release",
        "status": {"request": request}
    });
    env.releases()
        .patch_status(
            name,
            &PatchParams::apply(CLI_FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap_or_else(|error| panic!("cannot write the abort request: {error}"));

    // Read the canary first, then the route: once the canary is scaled down or gone,
    // its traffic must already be 0.
    eventually("the canary to be scaled down or removed", || async {
        let canary = env
            .deployments()
            .get_opt("checkout-canary")
            .await
            .map_err(|error| error.to_string())?;
        let canary_replicas = canary
            .as_ref()
            .and_then(|deployment| deployment.spec.as_ref())
            .and_then(|spec| spec.replicas);
        let (stable, canary_weight) = route_weights(&env, name, name).await?;
        match canary_replicas {
            None | Some(0) => {
                // All on the stable: 100/0, or the route given back (no canary backendRef).
                assert!(
                    stable > 0 && canary_weight.unwrap_or(0) == 0,
                    "the canary lost its pods while still receiving traffic: stable {stable}, \
                     canary {canary_weight:?}"
                );
                Ok(())
            }
            Some(replicas) => Err(format!(
                "canary has {replicas} replicas, route stable {stable} canary {canary_weight:?}"
            )),
        }
    })
    .await;

    wait_for_phase(&env, name, Phase::RolledBack, None).await;
    let status = env.status(name).await;
    assert_eq!(status.handled_request.as_deref(), Some("e2e-abort-1"));
    let newest = status.history.first().expect("a history entry");
    assert_eq!(newest.revision, canary_revision);
    assert_eq!(newest.outcome, Outcome::Aborted);
    let stable = env.deployments().get("checkout-stable").await.unwrap();
    assert_ne!(
        stable.labels()[LABEL_REVISION],
        canary_revision,
        "stable keeps serving the old revision"
    );
}

pub async fn a_missing_http_route_is_named_in_a_condition(env: Env) {
    let name = "checkout";
    create_release(
        &env,
        &release(name, "no-such-route", json!([{"setWeight": 10}])),
    )
    .await;
    let condition = eventually("condition TrafficRouted=False", || async {
        let status = env.status(name).await;
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "TrafficRouted" && c.status == "False")
            .cloned()
            .ok_or_else(|| format!("conditions {:?}", status.conditions))
    })
    .await;
    assert!(
        condition.message.contains("no-such-route"),
        "the condition names the route: {}",
        condition.message
    );
    assert!(
        condition.message.contains("checkout-stable"),
        "the condition names the Service: {}",
        condition.message
    );
    assert_eq!(env.status(name).await.phase, Some(Phase::Degraded));
}

/// Analysis settings that judge the canary by a real Prometheus at `address`, with windows
/// short enough for a test: a 20s/10s burn pair, a run every 5 seconds, two failures to roll back.
pub fn judged_by(mut release: Release, address: &str) -> Release {
    let analysis = json!({
        "interval": "5s",
        "prometheus": {"address": address, "timeout": "2s"},
        "slo": {
            "objective": 99.9,
            "errorQuery": "sum(rate(http_requests_total{namespace=\"{{namespace}}\",service=\"{{service}}\",code=~\"5..\"}[{{window}}]))",
            "totalQuery": "sum(rate(http_requests_total{namespace=\"{{namespace}}\",service=\"{{service}}\"}[{{window}}]))",
            "burnRates": [{"long": "20s", "short": "10s", "max": 14.4}],
            "minRequests": 100
        },
        "failureLimit": 2,
        "inconclusiveLimit": 6,
        "errorLimit": 4
    });
    release.spec.analysis = Some(
        serde_json::from_value(analysis)
            .unwrap_or_else(|error| panic!("the test analysis does not deserialize: {error}")),
    );
    release
}

pub async fn a_canary_burning_its_error_budget_is_rolled_back_by_analysis(env: Env) {
    let name = "checkout";
    // 50 requests/s each; the stable answers them all, the canary fails 5%: a burn rate of
    // 50 against a 99.9% objective, far over the limit of 14.4.
    let Some((_metrics, prometheus)) = prometheus_judging(&env, name, 0.05).await else {
        return;
    };

    let steps = json!([{"setWeight": 20}, {"pause": {"duration": "10m"}}]);
    create_route(&env, name, name).await;
    create_release(
        &env,
        &judged_by(release(name, name, steps), prometheus.address()),
    )
    .await;
    wait_for_phase(&env, name, Phase::Healthy, Some("StableAvailable")).await;

    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_weight(&env, name, name, 20).await;
    let canary_revision = env.status(name).await.canary_revision.expect("a canary");

    wait_for_phase(&env, name, Phase::RolledBack, None).await;
    wait_for_weight(&env, name, name, 0).await;

    let status = env.status(name).await;
    let analysis = status.analysis.clone().expect("the analysis in the status");
    assert_eq!(
        analysis.verdict,
        waymark::api::Verdict::Failing,
        "{analysis:?}"
    );
    assert!(analysis.consecutive_failures >= 2, "{analysis:?}");
    let canary = analysis.canary.as_ref().expect("the canary's windows");
    let long = canary
        .windows
        .iter()
        .find(|window| window.window == "20s")
        .expect("the 20s window");
    let burn = long.burn_rate.expect("a burn rate over 20s");
    assert!(
        (35.0..65.0).contains(&burn),
        "canary burn {burn}, expected about 50"
    );
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.contains("14.4"),
        "the message names the limit: {message}"
    );
    let newest = status.history.first().expect("a history entry");
    assert_eq!(newest.revision, canary_revision);
    assert_eq!(newest.outcome, Outcome::RolledBack);
    assert_eq!(newest.roadmap_item, "E2E-2");
    let stable = env.deployments().get("checkout-stable").await.unwrap();
    assert_ne!(
        stable.labels()[LABEL_REVISION],
        canary_revision,
        "stable keeps serving"
    );

    // The post-mortem's timeline, as it happened: in order, the first failure with its numbers
    // and PromQL, traffic back on the stable after it.
    let status = wait_for_status(&env, name, "traffic back on stable in the timeline", |s| {
        s.history.first().is_some_and(|entry| {
            entry
                .timeline
                .iter()
                .any(|e| e.kind == waymark::api::TimelineKind::TrafficOnStable)
        })
    })
    .await;
    let timeline = &status.history[0].timeline;
    let kinds: Vec<_> = timeline.iter().map(|e| e.kind).collect();
    let position = |kind| {
        kinds
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_else(|| panic!("{kind:?} in {kinds:?}"))
    };
    use waymark::api::TimelineKind as Kind;
    assert!(
        position(Kind::CanaryCreated) < position(Kind::CanaryAvailable),
        "{kinds:?}"
    );
    assert!(
        position(Kind::CanaryAvailable) < position(Kind::FirstFailure),
        "{kinds:?}"
    );
    assert!(
        position(Kind::FirstFailure) < position(Kind::TrafficOnStable),
        "{kinds:?}"
    );
    assert!(
        timeline.windows(2).all(|pair| pair[0].at.0 <= pair[1].at.0),
        "in time order: {timeline:#?}"
    );
    let first_failure = &timeline[position(Kind::FirstFailure)];
    let worst = first_failure
        .canary
        .as_ref()
        .expect("the canary's worst window");
    let first_burn = worst.burn_rate.expect("a burn rate");
    assert!(
        (35.0..65.0).contains(&first_burn),
        "first failing burn {first_burn}, expected about 50"
    );
    assert_eq!(worst.max, 14.4);
    assert_eq!(first_failure.limit, Some(2));
    assert!(
        worst
            .error_query
            .as_deref()
            .unwrap_or_default()
            .contains(&env.namespace),
        "the resolved PromQL: {worst:?}"
    );
    let history = &status.history[0];
    assert_eq!(
        history.failure_detected_at.as_ref().map(|t| t.0),
        Some(first_failure.at.0),
        "time to restore counts from the first failing run"
    );

    // `waymark postmortem` drafts it from the real object.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["postmortem", name, "-n", &env.namespace, "-o", "json"])
        .env("KUBECONFIG", crate::support::kubeconfig_path())
        .output()
        .expect("waymark postmortem runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let draft: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(draft["outcome"], "RolledBack");
    assert_eq!(draft["revision"], canary_revision.as_str());
    assert_eq!(draft["roadmap"]["item"], "E2E-2");
    assert_eq!(draft["impact"]["maxCanaryWeight"], 20);
    assert!(
        draft["detection"]["firstFailingRunAt"].is_string(),
        "detection times: {}",
        draft["detection"]
    );
}

/// A replica-split canary at 25% of 4 replicas, seen where clients see it: of the 4 Ready
/// endpoints of Service `checkout`, 1 is a canary pod. The canary's pod lost while new pods are
/// held unready takes its share to 0 (3 Ready endpoints, all stable) until the replacement is
/// Ready; promoted, the 4 Ready endpoints are stable pods of the canary's revision. Pods start
/// slowly here (0.3-1.5 s each), so every rollout passes through the Deployment controller's
/// in-between states.
pub async fn a_replica_split_canary_at_25_percent_is_one_of_four_ready_endpoints(env: Env) {
    let name = "checkout";
    env.set_pod_start_delay(
        std::time::Duration::from_millis(300)..std::time::Duration::from_millis(1_500),
    );
    let steps = json!([{"setWeight": 25}, {"pause": {}}]);
    create_release(&env, &replica_split_release(name, 4, steps)).await;
    wait_for_phase(&env, name, Phase::Healthy, Some("StableAvailable")).await;
    let first = wait_for_endpoints(&env, name, 4, 0).await;
    let addresses: std::collections::BTreeSet<&String> =
        first.iter().map(|endpoint| &endpoint.address).collect();
    assert_eq!(addresses.len(), 4, "each pod its own address: {first:?}");
    // Only the Service clients call: no Service per role in a replica split.
    let service_version = waymark_services_of(&env, name).await;

    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    let status = env.status(name).await;
    assert_eq!(status.canary_weight, Some(25), "{:?}", status.message);
    let canary_revision = status.canary_revision.clone().expect("a canary");
    let split = wait_for_endpoints(&env, name, 3, 1).await;
    let canary = split
        .iter()
        .find(|endpoint| endpoint.role == "canary")
        .expect("the canary endpoint");
    assert_eq!(canary.revision, canary_revision);

    // The canary's pod is lost, and its replacement does not become Ready yet: the canary's
    // share is 0 and clients reach only stable pods.
    env.set_pods_become_ready(false);
    let dropped = env.drop_pods(&format!("{LABEL_ROLE}=canary")).await;
    assert_eq!(
        dropped,
        std::slice::from_ref(&canary.pod),
        "the canary's one pod"
    );
    wait_for_status(&env, name, "the canary's share at 0 without its pod", |s| {
        s.canary_weight == Some(0)
    })
    .await;
    wait_for_endpoints(&env, name, 3, 0).await;
    env.set_pods_become_ready(true);
    wait_for_status(&env, name, "the canary's share back at 25%", |s| {
        s.canary_weight == Some(25) && s.phase == Some(Phase::Paused)
    })
    .await;
    let back = wait_for_endpoints(&env, name, 3, 1).await;
    assert!(
        back.iter().all(|endpoint| endpoint.pod != canary.pod),
        "a new canary pod: {back:?}"
    );

    request(&env, name, ManualAction::Promote, "promote-split").await;
    wait_for_status(&env, name, "the promotion", |s| {
        s.phase == Some(Phase::Healthy) && s.stable_revision.as_deref() == Some(&canary_revision)
    })
    .await;
    let promoted = wait_for_endpoints(&env, name, 4, 0).await;
    assert!(
        promoted
            .iter()
            .all(|endpoint| endpoint.revision == canary_revision),
        "all stable pods run the promoted revision: {promoted:?}"
    );
    assert_eq!(
        waymark_services_of(&env, name).await,
        service_version,
        "a new template and roadmap item reach the pods, not the Service: it is not written"
    );
}

/// The one Service Waymark owns for replica-split Release `name` (asserted to be Service
/// `name`, the only one labelled with the release), and its resourceVersion.
async fn waymark_services_of(env: &Env, name: &str) -> String {
    let owned = env
        .services()
        .list(&kube::api::ListParams::default().labels(&format!("{LABEL_RELEASE}={name}")))
        .await
        .expect("list Waymark's Services");
    let names: Vec<String> = owned
        .items
        .iter()
        .map(|service| service.name_any())
        .collect();
    assert_eq!(names, [name], "Waymark's Services of {name}");
    owned.items[0]
        .metadata
        .resource_version
        .clone()
        .expect("a resourceVersion")
}
