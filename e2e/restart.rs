//! The controller stopped and started again at every kind of moment of a canary: it resumes at
//! the same step, and the route's weights never go back or flap.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::fixtures::*;
use crate::support::{Env, Versions, eventually};
use waymark::api::{ManualAction, Outcome, Phase};

/// Restarts after a `setWeight`, during a timed pause, in an indefinite pause and during the
/// promotion; the walk ends promoted, through 20% then 40%, with no weight going back.
pub async fn restarts_during_a_canary_resume_where_it_stood(env: Env) {
    let name = "checkout";
    let steps = json!([
        {"setWeight": 20},
        {"pause": {"duration": "8s"}},
        {"setWeight": 40},
        {"pause": {}}
    ]);
    healthy_first_release(&env, name, steps).await;
    let route = Versions::record(env.routes(), name).await;
    ship(&env, name, &image(2), "E2E-2").await;

    // Right after a setWeight step.
    wait_for_weight(&env, name, name, 20).await;
    env.restart_controller().await;
    // In the timed pause.
    let paused = wait_for_status(&env, name, "the timed pause", |s| s.pause_until.is_some()).await;
    env.restart_controller().await;
    // The pause is 8 s: the new controller's first reconcile comes well within it.
    env.await_first_reconcile().await;
    let resumed = env.status(name).await;
    assert_eq!(
        resumed.current_step, paused.current_step,
        "the same step after a restart"
    );
    assert_eq!(
        resumed.pause_until, paused.pause_until,
        "the same pause, not a new one"
    );
    // In the indefinite pause.
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    let held = env.releases().get(name).await.expect("the Release");
    assert_eq!(argo_health(&held).0, "Suspended");
    env.restart_controller().await;
    // Only what the new controller decided counts: wait until it has looked.
    env.await_first_reconcile().await;
    let still = env.status(name).await;
    assert_eq!(
        still.phase,
        Some(Phase::Paused),
        "a restart does not promote"
    );
    assert_eq!(still.canary_weight, Some(40));

    // During the promotion: the stable's new pods do not become available until released.
    env.set_pods_become_ready(false);
    request(&env, name, ManualAction::Promote, "go-1").await;
    wait_for_status(&env, name, "the promotion", |s| {
        s.reason.as_deref() == Some("Promoting")
    })
    .await;
    env.restart_controller().await;
    env.set_pods_become_ready(true);
    wait_for_phase(&env, name, Phase::Healthy, Some("StableAvailable")).await;

    let status = env.status(name).await;
    let promoted: Vec<_> = status
        .history
        .iter()
        .filter(|entry| entry.roadmap_item == "E2E-2")
        .collect();
    assert_eq!(promoted.len(), 1, "promoted once: {:?}", status.history);
    assert_eq!(promoted[0].outcome, Outcome::Promoted);
    let weights: Vec<i32> = route
        .seen()
        .iter()
        .map(|r| canary_percent(r, name))
        .collect();
    assert_no_flap(&weights, "a canary with four restarts");
    assert!(
        weights.contains(&20) && weights.contains(&40),
        "{weights:?}"
    );
}

/// Restarts while the analysis is failing (below failureLimit) and right after the rollback is
/// recorded: the failing runs keep counting across the restart, the rollback finishes (weight
/// 0, canary scaled down) and is recorded once.
pub async fn restarts_while_failing_and_during_a_rollback_finish_the_rollback(env: Env) {
    let name = "checkout";
    let Some((_metrics, prometheus)) = prometheus_judging(&env, name, 0.05).await else {
        return;
    };
    create_route(&env, name, name).await;
    let mut release = crate::canary::judged_by(
        release(
            name,
            name,
            json!([{"setWeight": 30}, {"pause": {"duration": "10m"}}]),
        ),
        prometheus.address(),
    );
    if let Some(analysis) = release.spec.analysis.as_mut() {
        analysis.failure_limit = 3;
    }
    create_release(&env, &release).await;
    wait_for_phase(&env, name, Phase::Healthy, Some("StableAvailable")).await;
    let route = Versions::record(env.routes(), name).await;
    ship(&env, name, &image(2), "E2E-2").await;

    wait_for_status(&env, name, "a first failing run", |s| {
        s.analysis
            .as_ref()
            .is_some_and(|a| a.consecutive_failures == 1)
    })
    .await;
    env.restart_controller().await;
    // Stop the moment the rollback is recorded, before (or while) its actions run.
    let rolled_back = Versions::record(env.releases(), name).await;
    eventually("the rollback in the status", || async {
        let seen = rolled_back.seen();
        if seen
            .iter()
            .any(|r| r.status.as_ref().and_then(|s| s.phase) == Some(Phase::RolledBack))
        {
            Ok(())
        } else {
            Err(format!("{} versions, none RolledBack", seen.len()))
        }
    })
    .await;
    env.restart_controller().await;

    wait_for_weight(&env, name, name, 0).await;
    eventually("the canary scaled down", || async {
        let canary = env
            .deployments()
            .get("checkout-canary")
            .await
            .map_err(|e| e.to_string())?;
        match canary.spec.and_then(|spec| spec.replicas) {
            Some(0) => Ok(()),
            other => Err(format!("canary replicas {other:?}")),
        }
    })
    .await;
    let status = env.status(name).await;
    assert_eq!(status.phase, Some(Phase::RolledBack));
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.contains("3 failing analyses in a row"),
        "the failing runs kept counting across the restart: {message}"
    );
    let rollbacks = status
        .history
        .iter()
        .filter(|e| e.outcome == Outcome::RolledBack)
        .count();
    assert_eq!(rollbacks, 1, "recorded once: {:?}", status.history);
    let health = argo_health(&env.releases().get(name).await.expect("the Release"));
    assert_eq!(health.0, "Degraded");
    assert!(health.1.contains("AnalysisFailing"), "{}", health.1);
    let weights: Vec<i32> = route
        .seen()
        .iter()
        .map(|r| canary_percent(r, name))
        .collect();
    assert_no_flap(&weights, "a failing canary with two restarts");
}

/// A second field manager applies the route's Git version (only the stable backend, as Argo CD
/// self-heal would) while the canary holds at 60%: the weights come back at once, and nothing
/// else happens (no promotion, no rollback).
pub async fn a_route_reapplied_from_git_gets_its_weights_back(env: Env) {
    let name = "checkout";
    healthy_first_release(&env, name, json!([{"setWeight": 60}, {"pause": {}}])).await;
    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    wait_for_weight(&env, name, name, 60).await;
    let history_before = env.status(name).await.history.len();

    let git_version = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "e2e-gateway"}],
            "rules": [
                {"backendRefs": [{"name": "checkout-stable", "port": 80}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                 "backendRefs": [{"name": "static-assets", "port": 8080, "weight": 7}]}
            ]
        }
    });
    let route = Versions::record(env.routes(), name).await;
    let applied_at = tokio::time::Instant::now();
    env.routes()
        .patch(
            name,
            &PatchParams::apply("argocd-controller").force(),
            &Patch::Apply(&git_version),
        )
        .await
        .expect("the second field manager applies the route");
    wait_for_weight(&env, name, name, 60).await;
    let took = applied_at.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the weights came back after {took:?}"
    );
    let weights: Vec<i32> = route
        .seen()
        .iter()
        .map(|r| canary_percent(r, name))
        .collect();
    let changes = weights.windows(2).filter(|pair| pair[0] != pair[1]).count();
    assert!(changes <= 2, "back once: {weights:?}");
    let status = env.status(name).await;
    assert_eq!(status.phase, Some(Phase::Paused), "{:?}", status.message);
    assert_eq!(
        status.history.len(),
        history_before,
        "no promotion or rollback"
    );
    // Waymark's field manager owns the rules now (what the Argo CD ignoreDifferences names).
    let live = env.routes().get(name).await.expect("the route");
    let managers: Vec<String> = live
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0.to_string().contains("f:rules"))
        })
        .filter_map(|entry| entry.manager.clone())
        .collect();
    assert_eq!(managers, ["waymark"], "who owns spec.rules");
}
