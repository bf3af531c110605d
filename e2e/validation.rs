//! Mistakes found before a canary runs, on a real API server: a query that is not PromQL is
//! `SpecValid=False` naming the field before any canary Deployment exists, and a Prometheus
//! Secret that does not exist is a condition naming it on a settled Release, cleared once the
//! Secret is created.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::fixtures::*;
use crate::support::{E2E_MANAGER, Env, Versions, eventually, eventually_within};
use waymark::api::{Phase, Release, ReleaseStatus};

/// An analysis no canary of these walks reaches Prometheus with: nothing listens there, and no
/// run is due while the Release is settled.
fn analysis(check_query: &str) -> Value {
    json!({
        "interval": "30s",
        "prometheus": {"address": "http://127.0.0.1:9"},
        "slo": {
            "objective": 99.9,
            "errorQuery": "sum(rate(http_requests_total{service=\"{{service}}\",code=~\"5..\"}[{{window}}]))",
            "totalQuery": "sum(rate(http_requests_total{service=\"{{service}}\"}[{{window}}]))",
            "burnRates": [{"long": "5m", "short": "1m", "max": 14.4}]
        },
        "checks": [{"name": "p99-latency", "query": check_query, "max": 0.25}]
    })
}

const P99: &str = "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{service=\"{{service}}\"}[{{window}}])))";

/// A Release routed by HTTPRoute `name`, with `analysis`, created and awaited Healthy.
async fn healthy_with_analysis(env: &Env, name: &str, analysis: Value) {
    let mut manifest = serde_json::to_value(release(name, name, json!([{"setWeight": 50}])))
        .expect("the Release as JSON");
    manifest["spec"]["analysis"] = analysis;
    let manifest: Release = serde_json::from_value(manifest).expect("a Release");
    create_route(env, name, name).await;
    create_release(env, &manifest).await;
    wait_for_phase(env, name, Phase::Healthy, Some("StableAvailable")).await;
}

/// The condition `type_` of `status`, as (status, reason, message, observedGeneration).
fn condition(status: &ReleaseStatus, type_: &str) -> Option<(String, String, String, Option<i64>)> {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
                c.observed_generation,
            )
        })
}

pub async fn an_invalid_query_is_spec_valid_false_before_any_canary_deployment(env: Env) {
    let name = "checkout";
    healthy_with_analysis(&env, name, analysis(P99)).await;
    let canary_name = format!("{name}-canary");
    let canary = Versions::<Deployment>::record(env.deployments(), &canary_name).await;

    // A new image with a check whose query is not PromQL (`rate` of an instant vector). The
    // API server stores it: a schema cannot parse PromQL.
    let invalid = "rate(http_request_duration_seconds{service=\"{{service}}\"})";
    let patch = json!({"spec": {
        "roadmap": {"item": "E2E-2"},
        "template": {"spec": {"containers": [container(&image(2))]}},
        "analysis": {"checks": [{"name": "p99-latency", "query": invalid, "max": 0.25}]}
    }});
    let patched = env
        .releases()
        .patch(
            name,
            &PatchParams {
                field_manager: Some(E2E_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .expect("the API server stores a query it cannot judge");
    let generation = patched.metadata.generation;

    let status = eventually(
        "SpecValid=False for the new generation, naming the check's query",
        || async {
            let status = env.status(name).await;
            match condition(&status, "SpecValid") {
                Some((truth, _, message, seen)) if truth == "False" && seen == generation => {
                    Ok((status, message))
                }
                other => Err(format!("SpecValid {other:?}, generation {generation:?}")),
            }
        },
    )
    .await;
    let (status, message) = status;
    assert_eq!(
        message,
        "spec.analysis.checks[0].query: not valid PromQL: expected type matrix in call to \
         function 'rate', got vector (read with its placeholders filled in, {{window}} as 5m); \
         fix the query"
    );
    assert_eq!(status.phase, Some(Phase::Degraded));
    assert_eq!(status.reason.as_deref(), Some("InvalidSpec"));
    assert_eq!(status.canary_revision, None, "no canary was started");
    // The decision for this generation is made (the condition says so): no canary Deployment
    // ever appeared, not even for a moment.
    assert!(
        canary.seen().is_empty(),
        "a canary Deployment appeared: {:?}",
        canary.seen()
    );
    assert!(
        env.deployments()
            .get_opt(&canary_name)
            .await
            .expect("read the canary")
            .is_none()
    );
    let (_, canary_weight) = route_weights(&env, name, name).await.expect("the route");
    assert_eq!(canary_weight.unwrap_or(0), 0, "no traffic to a canary");

    // Fixed: the canary starts.
    let patch = json!({"spec": {"analysis": {"checks": [
        {"name": "p99-latency", "query": P99, "max": 0.25}
    ]}}});
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
        .expect("the fixed query");
    eventually("the canary Deployment once the query is fixed", || async {
        match env.deployments().get_opt(&canary_name).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!(
                "no canary; status {:?}",
                env.status(name).await.message
            )),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    let status = env.status(name).await;
    assert_eq!(
        condition(&status, "SpecValid").map(|c| c.0).as_deref(),
        Some("True")
    );
}

pub async fn a_missing_prometheus_secret_is_named_until_it_is_created(env: Env) {
    let name = "checkout";
    // As config/rbac/secret_reader_role.yaml says: the controller may read Secrets here.
    bind_controller_role(&env, "waymark-secret-reader").await;

    let mut with_token = analysis(P99);
    with_token["prometheus"]["bearerTokenSecret"] =
        json!({"name": "prometheus-token", "key": "token"});
    healthy_with_analysis(&env, name, with_token).await;
    let expected = format!(
        "Secret {ns}/prometheus-token, key token (named in \
         spec.analysis.prometheus.bearerTokenSecret): not found: create it in namespace {ns} \
         with the key token, or name an existing Secret in \
         spec.analysis.prometheus.bearerTokenSecret",
        ns = env.namespace
    );
    // On the settled Release, before any canary: the condition names the Secret, the key and
    // the field. The stable still serves.
    let status = eventually(
        "PrometheusCredentials=False on the settled Release",
        || async {
            let status = env.status(name).await;
            match condition(&status, "PrometheusCredentials") {
                Some((truth, ..)) if truth == "False" => Ok(status),
                other => Err(format!("PrometheusCredentials {other:?}")),
            }
        },
    )
    .await;
    let (_, reason, message, _) = condition(&status, "PrometheusCredentials").unwrap_or_default();
    assert_eq!(reason, "PrometheusSecretMissing");
    assert_eq!(message, expected);
    assert_eq!(status.phase, Some(Phase::Healthy));

    // A new image waits for the Secret instead of starting a canary it could not judge.
    let canary_name = format!("{name}-canary");
    let canary = Versions::<Deployment>::record(env.deployments(), &canary_name).await;
    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_phase(&env, name, Phase::Degraded, Some("PrometheusSecretMissing")).await;
    let status = env.status(name).await;
    assert_eq!(status.canary_revision, None);
    let message = status.message.clone().unwrap_or_default();
    assert!(message.contains(&expected), "{message}");
    assert!(
        canary.seen().is_empty(),
        "a canary Deployment appeared: {:?}",
        canary.seen()
    );

    // Created: the condition clears within the controller's recheck (30 s), with no change to
    // the Release, and the canary starts.
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "prometheus-token"},
        "stringData": {"token": "s3cr3t"}
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the Secret");
    let created = Instant::now();
    eventually_within(
        Duration::from_secs(60),
        "PrometheusCredentials=True once the Secret exists",
        || async {
            let status = env.status(name).await;
            match condition(&status, "PrometheusCredentials") {
                Some((truth, ..)) if truth == "True" => Ok(()),
                other => Err(format!("PrometheusCredentials {other:?}")),
            }
        },
    )
    .await;
    let cleared = created.elapsed();
    eprintln!(
        "PrometheusCredentials cleared {:.1}s after the Secret was created",
        cleared.as_secs_f64()
    );
    assert!(
        cleared <= Duration::from_secs(45),
        "cleared only after {cleared:?}"
    );
    eventually("the canary Deployment once the Secret exists", || async {
        match env.deployments().get_opt(&canary_name).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!(
                "no canary; status {:?}",
                env.status(name).await.message
            )),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
}
