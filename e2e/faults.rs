//! Faults of the control plane itself, each on a control plane of the walk's own: the API
//! server stopped mid-canary and started again, the Release CRD deleted and installed again.

use std::time::{Duration, SystemTime};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::DeleteParams;
use serde_json::json;

use crate::fixtures::*;
use crate::prepare::install_crd;
use crate::support::{E2E_MANAGER, Env, eventually, eventually_within};
use waymark::api::Phase;

/// How long the API server stays down: as long as a control-plane upgrade takes, and long
/// enough for a growing watch backoff to leave a controller idle for long after.
const OUTAGE: Duration = Duration::from_secs(20);
/// How soon after the API server answers again (or the step falls due, if later) the next
/// step must have happened.
const ACT_WITHIN: Duration = Duration::from_secs(5);

/// The API server stops during a timed pause whose end falls in the outage, and starts again
/// on the same port and etcd: the next step follows within [`ACT_WITHIN`] of its return,
/// `/readyz` says not ready while the watches are down, and the restarts are counted.
pub async fn an_api_server_restart_mid_canary_is_acted_on_within_seconds(env: Env) {
    let name = "checkout";
    let steps = json!([
        {"setWeight": 20},
        {"pause": {"duration": "10s"}},
        {"setWeight": 50},
        {"pause": {}}
    ]);
    healthy_first_release(&env, name, steps).await;
    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_weight(&env, name, name, 20).await;
    let paused = wait_for_status(&env, name, "the timed pause", |s| s.pause_until.is_some()).await;
    let pause_ends = paused.pause_until.expect("a pause end").0;
    assert_eq!(env.readyz().await.0, 200, "ready before the outage");

    env.stop_api_server().await;
    let stopped_at = SystemTime::now();
    // Longer than the watch retry cap: the controller says it is not ready, and why.
    let (code, text) = eventually_within(
        OUTAGE,
        "/readyz to say not ready while the API server is down",
        || async {
            match env.readyz().await {
                (503, text) => Ok((503, text)),
                (code, text) => Err(format!("{code}: {text}")),
            }
        },
    )
    .await;
    assert_eq!(code, 503);
    assert!(
        text.contains("watch has been down for"),
        "the reason names the watch: {text}"
    );
    // Watch for the next step from now on, so that its moment is known even if it came while
    // kube-apiserver was still starting.
    let next_step = {
        let env = env.clone();
        tokio::spawn(async move {
            eventually_within(
                OUTAGE + Duration::from_secs(60),
                "HTTPRoute checkout to send 50% to the canary after the API server is back",
                || async {
                    match route_weights(&env, name, name).await? {
                        (_, Some(50)) => Ok(SystemTime::now()),
                        other => Err(format!("(stable, canary) weights {other:?}")),
                    }
                },
            )
            .await
        })
    };
    let left = OUTAGE.saturating_sub(stopped_at.elapsed().unwrap_or_default());
    // The outage itself: nothing to wait for, the walk plays the upgrade's duration.
    tokio::time::sleep(left).await;
    let (restarted_at, answered_at) = env.start_api_server().await;
    assert!(
        SystemTime::from(pause_ends) < restarted_at,
        "the pause ended during the outage"
    );
    let acted_at = next_step.await.expect("the next step is seen");
    let since = |moment: SystemTime| match acted_at.duration_since(moment) {
        Ok(after) => format!("{:.1}s after", after.as_secs_f64()),
        Err(before) => format!("{:.1}s before", before.duration().as_secs_f64()),
    };
    eprintln!(
        "e2e: the API server was down {:.1}s; the next step came {} kube-apiserver started again \
         and {} it answered /readyz",
        restarted_at
            .duration_since(stopped_at)
            .unwrap_or_default()
            .as_secs_f64(),
        since(restarted_at),
        since(answered_at),
    );
    let due = answered_at.max(SystemTime::from(pause_ends));
    let delay = acted_at.duration_since(due).unwrap_or_default();
    assert!(
        delay <= ACT_WITHIN,
        "the next step came {delay:?} after the API server answered again (at most {ACT_WITHIN:?})"
    );

    eventually("/readyz to say ready again", || async {
        match env.readyz().await {
            (200, _) => Ok(()),
            (code, text) => Err(format!("{code}: {text}")),
        }
    })
    .await;
    let metrics = env.controller_http("/metrics").await.1;
    for resource in ["releases", "deployments", "services", "httproutes"] {
        let restarts = metric_value(
            &metrics,
            &format!("waymark_watch_restarts_total{{resource=\"{resource}\"}}"),
        );
        assert!(
            restarts >= 1.0,
            "the {resource} watch restarts are counted: {restarts}"
        );
    }
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
}

/// The Release CRD deleted under a running controller: `/readyz` says not ready and names the
/// CRD and how to install it; installed again, the controller is ready and releases again.
pub async fn a_removed_release_crd_is_named_and_its_return_brings_the_controller_back(env: Env) {
    healthy_first_release(&env, "checkout", json!([{"setWeight": 50}])).await;
    assert_eq!(env.readyz().await.0, 200);

    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let crd_name = "releases.waymark.dev";
    crds.delete(crd_name, &DeleteParams::default())
        .await
        .unwrap_or_else(|error| panic!("cannot delete the CRD: {error}"));
    eventually("the Release CRD to be gone", || async {
        match crds.get_opt(crd_name).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    let text = eventually("/readyz to name the missing CRD", || async {
        match env.readyz().await {
            (503, text) if text.contains(crd_name) => Ok(text),
            (code, text) => Err(format!("{code}: {text}")),
        }
    })
    .await;
    assert!(
        text.contains("kubectl apply --server-side -f crds/"),
        "says how to install it: {text}"
    );

    install_crd(&env.client, &waymark::api::crd::release_crd(), E2E_MANAGER)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    eventually("/readyz to say ready once the CRD is back", || async {
        match env.readyz().await {
            (200, _) => Ok(()),
            (code, text) => Err(format!("{code}: {text}")),
        }
    })
    .await;
    // The Releases went with their CRD; a new one is released as before.
    healthy_first_release(&env, "cart", json!([{"setWeight": 50}])).await;
}

/// The value of the sample `series` (name and labels exactly) in a Prometheus text scrape.
fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}
