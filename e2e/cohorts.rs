//! Cohorts and mirrors on a real API server with the Gateway API v1.6.1 CRDs: a cohort, a
//! mirror and weights walk to promotion and every rule and filter Waymark added goes; another
//! field manager's apply of the route's Git version mid-canary gets Waymark's named rules back
//! within seconds; a controller stopped mid-canary and started again leaves nothing behind when
//! the canary is aborted; a Release deleted with only a cohort on the route (weight 0) is held
//! by its finalizer until the route is exactly as its owner wrote it; and a match Gateway API or
//! Waymark cannot carry is refused by the API server or named in `SpecValid` before any canary
//! Deployment exists.
//!
//! Each stage's `spec.rules` is printed as `kubectl get httproute -o yaml` shows it.

use std::time::Duration;

use gateway_api::apis::experimental::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::fixtures::*;
use crate::support::{Env, eventually, eventually_within};
use waymark::api::{ManualAction, Phase};
use waymark::traffic::cohort::{carries_additions, restore_all};
use waymark::traffic::gateway::Backends;

/// A cohort (a header and a cookie), a mirror of 20%, 30% by weight, then a pause.
fn cohort_mirror_weight_steps() -> Value {
    json!([
        {"setHeaderRoute": {"name": "beta", "match": {
            "headers": [{"name": "x-canary", "value": "true"}],
            "cookies": [{"name": "group", "value": "beta"}]
        }}},
        {"setMirrorRoute": {"name": "shadow", "percent": 20}},
        {"setWeight": 30},
        {"pause": {}}
    ])
}

/// The route's rules as the API server has them.
async fn rules(env: &Env, name: &str) -> Value {
    let route = env.routes().get(name).await.expect("the HTTPRoute");
    serde_json::to_value(&route.spec.rules).expect("rules as JSON")
}

/// Print the route's rules at `stage` as `kubectl get httproute -o yaml` shows them.
async fn print_rules(env: &Env, name: &str, stage: &str) {
    let rules = json!({"rules": rules(env, name).await});
    let yaml = serde_saphyr::to_string(&rules).unwrap_or_else(|error| format!("{error}"));
    println!("--- HTTPRoute {name} spec, {stage}:\n{yaml}");
}

/// Wait until the route's rules satisfy `check` (which says what it saw otherwise).
async fn wait_for_rules<F>(env: &Env, name: &str, what: &str, check: F) -> Value
where
    F: Fn(&Value) -> Result<(), String>,
{
    eventually(what, || async {
        let rules = rules(env, name).await;
        check(&rules).map(|()| rules.clone())
    })
    .await
}

/// Wait until the route holds the rules of `original` (by name) and no mirror: no cohort or
/// mirror of Waymark's left. Returns the rules.
async fn wait_for_no_cohort_or_mirror(env: &Env, name: &str, original: &Value) -> Value {
    wait_for_rules(env, name, "no cohort or mirror left", |rules| {
        if rule_names(rules) == rule_names(original) && mirrors_on_first_rule(rules).is_empty() {
            Ok(())
        } else {
            Err(format!("{rules}"))
        }
    })
    .await
}

fn rule_names(rules: &Value) -> Vec<String> {
    rules
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|rule| rule["name"].as_str().map(str::to_string))
        .collect()
}

fn mirrors_on_first_rule(rules: &Value) -> Vec<Value> {
    rules[0]["filters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|filter| filter["type"] == "RequestMirror")
        .cloned()
        .collect()
}

/// The live route given back as its owner wrote it, as Waymark's restore does; what must equal
/// the original for the route to hold nothing else of Waymark's.
fn without_waymark(route: &HttpRoute, release: &str) -> Value {
    let mut route = route.clone();
    restore_all(&mut route, &Backends::of(release)).expect("the route names the stable");
    // Restored, the stable's weight is unset, which the API server stores as its default, 1.
    for rule in route.spec.rules.iter_mut().flatten() {
        for backend in rule.backend_refs.iter_mut().flatten() {
            backend.weight.get_or_insert(1);
        }
    }
    serde_json::to_value(&route.spec.rules).expect("rules as JSON")
}

pub async fn a_cohort_a_mirror_and_weights_walk_to_promotion_and_leave_the_users_rules(env: Env) {
    let name = "checkout";
    healthy_first_release(&env, name, cohort_mirror_weight_steps()).await;
    let original = rules(&env, name).await;
    print_rules(&env, name, "as the user wrote it").await;
    ship(&env, name, &image(2), "E2E-2").await;

    // The cohort: a rule of its own, named, to the canary, before any weight moves.
    let with_cohort = wait_for_rules(&env, name, "the cohort rule", |rules| {
        if rule_names(rules).contains(&"waymark-checkout-beta".to_string()) {
            Ok(())
        } else {
            Err(format!("{rules}"))
        }
    })
    .await;
    print_rules(&env, name, "after setHeaderRoute beta").await;
    let cohort = with_cohort
        .as_array()
        .unwrap()
        .iter()
        .find(|rule| rule["name"] == "waymark-checkout-beta")
        .cloned()
        .unwrap();
    assert_eq!(cohort["backendRefs"][0]["name"], "checkout-canary");
    let headers = &cohort["matches"][0]["headers"];
    assert_eq!(headers[0]["name"], "x-canary");
    assert_eq!(headers[1]["name"], "Cookie");
    assert_eq!(headers[1]["type"], "RegularExpression");

    // The mirror, then the weight, then the pause.
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    wait_for_weight(&env, name, name, 30).await;
    let paused = rules(&env, name).await;
    print_rules(
        &env,
        name,
        "after setMirrorRoute shadow 20% and setWeight 30, paused",
    )
    .await;
    let mirrors = mirrors_on_first_rule(&paused);
    assert_eq!(mirrors.len(), 1, "{paused}");
    assert_eq!(
        mirrors[0]["requestMirror"]["backendRef"]["name"],
        "checkout-canary"
    );
    assert_eq!(mirrors[0]["requestMirror"]["percent"], 20);
    let status = env.status(name).await;
    assert_eq!(
        status.traffic.describe(),
        "cohorts beta; mirrors shadow 20%",
        "status.traffic"
    );

    // Another field manager applies the route's Git version: Waymark's parts come back.
    let git_version = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "e2e-gateway"}], "rules": original}
    });
    let applied_at = tokio::time::Instant::now();
    env.routes()
        .patch(
            name,
            &PatchParams::apply("argocd-controller").force(),
            &Patch::Apply(&git_version),
        )
        .await
        .expect("the second field manager applies the route");
    eventually_within(
        Duration::from_secs(10),
        "Waymark's cohort rule and mirror back",
        || async {
            let rules = rules(&env, name).await;
            let back = rule_names(&rules).contains(&"waymark-checkout-beta".to_string())
                && mirrors_on_first_rule(&rules).len() == 1;
            if back {
                Ok(())
            } else {
                Err(format!("{rules}"))
            }
        },
    )
    .await;
    let took = applied_at.elapsed();
    println!("Waymark's rules were back {took:?} after the second manager's apply");
    assert!(took < Duration::from_secs(5), "back after {took:?}");
    wait_for_weight(&env, name, name, 30).await;

    // A restart mid-canary changes nothing.
    env.restart_controller().await;
    env.await_first_reconcile().await;
    assert_eq!(rule_names(&rules(&env, name).await), rule_names(&paused));

    request(&env, name, ManualAction::Promote, "promote-1").await;
    wait_for_phase(&env, name, Phase::Healthy, None).await;
    let promoted = wait_for_no_cohort_or_mirror(&env, name, &original).await;
    print_rules(&env, name, "after promotion").await;
    let live = env.routes().get(name).await.expect("the HTTPRoute");
    assert!(!carries_additions(&live, name), "{promoted}");
    assert!(env.status(name).await.traffic.is_empty());
    // The user's rules as written; only the weight pair of the stable and canary backendRefs
    // (stable 100, canary 0) stays until the Release is deleted, as without cohorts.
    assert_eq!(without_waymark(&live, name), original, "{promoted}");
    assert_eq!(promoted[1], original[1], "the other rule byte-identical");
}

pub async fn a_controller_stopped_mid_canary_and_an_abort_leave_no_cohort_or_mirror(env: Env) {
    let name = "checkout";
    healthy_first_release(&env, name, cohort_mirror_weight_steps()).await;
    let original = rules(&env, name).await;
    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    let live = env.routes().get(name).await.expect("the HTTPRoute");
    assert!(carries_additions(&live, name));

    // Stopped; the abort is written while no controller runs; a new one takes it up.
    env.stop_controller().await;
    request(&env, name, ManualAction::Abort, "abort-1").await;
    env.start_controller().await;
    wait_for_phase(&env, name, Phase::RolledBack, None).await;
    wait_for_no_cohort_or_mirror(&env, name, &original).await;
    print_rules(&env, name, "after the abort").await;
    let live = env.routes().get(name).await.expect("the HTTPRoute");
    assert_eq!(without_waymark(&live, name), original);
    assert!(env.status(name).await.traffic.is_empty());
}

pub async fn an_invalid_cohort_match_is_refused_or_named_before_the_canary(env: Env) {
    // A header name Gateway API refuses: the API server refuses the Release, naming the field.
    let mut refused = release(
        "spaced",
        "spaced",
        json!([{"setHeaderRoute": {"name": "beta", "match": {
            "headers": [{"name": "x canary", "value": "true"}]
        }}}]),
    );
    refused.metadata.name = Some("spaced".into());
    let error = env
        .releases()
        .create(&PostParams::default(), &refused)
        .await
        .expect_err("a header name with a space is refused");
    let said = error.to_string();
    println!("the API server says: {said}");
    assert!(
        said.contains("spec.steps[0].setHeaderRoute.match.headers[0].name"),
        "{said}"
    );
    // A removal without an addition, and two route steps in one: refused by the schema too.
    let both = release(
        "both",
        "both",
        json!([{"setWeight": 10, "setHeaderRoute": {"name": "beta"}}]),
    );
    let said = env
        .releases()
        .create(&PostParams::default(), &both)
        .await
        .expect_err("two kinds in one step are refused")
        .to_string();
    assert!(said.contains("exactly one of setWeight"), "{said}");

    // A regular expression RE2 cannot read: stored, then SpecValid=False naming the field
    // before a canary Deployment exists.
    let name = "checkout";
    healthy_first_release(&env, name, json!([{"setWeight": 10}])).await;
    let patch = json!({"spec": {
        "roadmap": {"item": "E2E-2"},
        "template": {"spec": {"containers": [container(&image(2))]}},
        "steps": [{"setHeaderRoute": {"name": "beta", "match": {
            "cookies": [{"name": "group", "value": "(beta", "type": "RegularExpression"}]
        }}}, {"pause": {}}]
    }});
    env.releases()
        .patch(
            name,
            &PatchParams {
                field_manager: Some(crate::support::E2E_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .expect("the API server stores it: a schema cannot parse a regular expression");
    let status = wait_for_status(&env, name, "SpecValid=False", |status| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "SpecValid" && c.status == "False")
    })
    .await;
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "SpecValid")
        .cloned()
        .unwrap();
    println!("SpecValid: {}", condition.message);
    assert!(
        condition
            .message
            .contains("spec.steps[0].setHeaderRoute.match.cookies[0].value"),
        "{}",
        condition.message
    );
    let canary: kube::Api<Deployment> = env.deployments();
    assert!(
        canary
            .get_opt("checkout-canary")
            .await
            .expect("read")
            .is_none(),
        "no canary Deployment"
    );
    let live = env.routes().get(name).await.expect("the HTTPRoute");
    assert!(!carries_additions(&live, name));
}

pub async fn a_release_deleted_with_a_cohort_at_weight_0_gives_the_route_back_first(env: Env) {
    let name = "checkout";
    let steps = json!([
        {"setHeaderRoute": {"name": "beta", "match": {
            "queryParams": [{"name": "canary", "value": "1"}]
        }}},
        {"pause": {}}
    ]);
    healthy_first_release(&env, name, steps).await;
    let original = rules(&env, name).await;
    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    print_rules(&env, name, "a cohort by query parameter, weight 0").await;
    let release = env.releases().get(name).await.expect("the Release");
    assert!(
        release
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == waymark::api::ROUTE_FINALIZER),
        "the finalizer holds a Release whose route carries only a cohort"
    );
    env.releases()
        .delete(name, &Default::default())
        .await
        .expect("the Release is deleted");
    wait_until_release_gone(&env, name).await;
    let after = rules(&env, name).await;
    print_rules(&env, name, "after the Release was deleted").await;
    assert_eq!(after, original, "the route exactly as its owner wrote it");
}
