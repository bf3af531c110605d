//! Missing data never counts as passing, on a real API server judged by a real Prometheus: a
//! canary whose queries match no series keeps its first step's weight and says why, pauses at
//! `inconclusiveLimit` saying what ends the pause, and goes on by itself once data comes.

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

use crate::canary::judged_by;
use crate::fixtures::*;
use crate::support::{Env, Versions};
use waymark::api::{Phase, Release};

/// Canary weights of every route version seen so far.
fn weights(route: &Versions<gateway_api::apis::experimental::httproutes::HttpRoute>) -> Vec<i32> {
    route
        .seen()
        .iter()
        .map(|version| canary_percent(version, "checkout"))
        .collect()
}

pub async fn a_canary_without_data_gets_no_more_than_its_first_step(env: Env) {
    let name = "checkout";
    let Some((metrics, prometheus)) = prometheus_scraping().await else {
        return;
    };
    // The stable serves and is measured; the canary's series do not exist yet, so every query
    // about the canary matches no series.
    metrics.set_traffic(&env.namespace, "checkout-stable", 50.0, 0.0);
    // Short pauses and a 5s analysis interval (judged_by: inconclusiveLimit 6): the walk sees
    // both pauses' ends and well over six intervals at 10%.
    let steps = json!([
        {"setWeight": 10},
        {"pause": {"duration": "5s"}},
        {"setWeight": 30},
        {"pause": {"duration": "5s"}},
        {"setWeight": 60},
        {"setWeight": 90}
    ]);
    create_route(&env, name, name).await;
    create_release(
        &env,
        &judged_by(release(name, name, steps), prometheus.address()),
    )
    .await;
    wait_for_phase(&env, name, Phase::Healthy, Some("StableAvailable")).await;

    let route = Versions::record(env.routes(), name).await;
    let canary_deployment: Versions<Deployment> =
        Versions::record(env.deployments(), "checkout-canary").await;
    let releases: Versions<Release> = Versions::record(env.releases(), name).await;
    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_weight(&env, name, name, 10).await;
    let canary = env.status(name).await.canary_revision.expect("a canary");

    // Six runs without data (30 s after the first step, past both pauses' ends): the pause.
    let paused = wait_for_status(&env, name, "the inconclusiveLimit pause", |s| {
        s.phase == Some(Phase::Paused) && s.reason.as_deref() == Some("AnalysisInconclusive")
    })
    .await;
    // More runs, still without data: the counter runs past the limit, the message does not.
    let later = wait_for_status(&env, name, "two runs past inconclusiveLimit", |s| {
        s.analysis
            .as_ref()
            .is_some_and(|a| a.consecutive_inconclusive >= 8)
    })
    .await;

    let seen = weights(&route);
    let most = seen.iter().copied().max().unwrap_or_default();
    eprintln!(
        "a_canary_without_data_gets_no_more_than_its_first_step: highest canary weight {most}% \
         over {} analyses without data ({} route versions: {seen:?})",
        later
            .analysis
            .as_ref()
            .map_or(0, |a| a.consecutive_inconclusive),
        seen.len()
    );
    assert_eq!(
        most, 10,
        "the canary never gets more than its first step: {seen:?}"
    );
    let pods: Vec<i32> = canary_deployment
        .seen()
        .iter()
        .filter_map(|d| d.spec.as_ref().and_then(|spec| spec.replicas))
        .collect();
    assert_eq!(
        pods.iter().copied().max(),
        Some(1),
        "no pods for a step it waits at: {pods:?}"
    );

    // Before the limit, the canary was held at 10% saying why.
    let messages: Vec<String> = releases
        .seen()
        .iter()
        .filter_map(|r| r.status.as_ref())
        .filter(|s| s.phase == Some(Phase::Progressing))
        .filter_map(|s| s.message.clone())
        .collect();
    let held = format!(
        "step 2/6: held at 10% on canary {canary}: latest analysis Inconclusive: canary total query returned no data over 20s; pause 5s ended at "
    );
    assert!(
        messages.iter().any(|m| m.starts_with(&held)
            && m.ends_with(
                "the next step needs a passing analysis (or `waymark promote checkout`)"
            )),
        "no status said why the canary was held: {messages:#?}"
    );
    let pause_message = paused.message.clone().unwrap_or_default();
    assert_eq!(
        pause_message,
        format!(
            "step 2/6: held at 10% on canary {canary}: inconclusiveLimit 6 reached (the last 6 analyses were inconclusive); canary total query returned no data over 20s; resumes by itself at the next passing analysis, or `waymark promote checkout` finishes step 2/6 without one"
        )
    );
    assert_eq!(later.message, paused.message, "no count past the limit");

    // Data comes: the next passing run ends the pause by itself, and the canary goes on
    // through its steps to promotion.
    metrics.set_traffic(&env.namespace, "checkout-canary", 50.0, 0.0);
    wait_for_weight(&env, name, name, 30).await;
    wait_for_status(&env, name, "the promotion", |s| {
        s.phase == Some(Phase::Healthy) && s.stable_revision.as_deref() == Some(canary.as_str())
    })
    .await;
    assert_no_flap(&weights(&route), "a canary held, then released by data");
}
