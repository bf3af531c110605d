//! Deleting a Release mid-canary, as `kubectl delete` or an Argo CD prune does, with each
//! propagation policy: the route is given back to the stable before the Release goes, so the
//! canary's share never goes to a Service that no longer exists. And a settled Release carries
//! no finalizer: it is deleted at once, with no controller running.
//!
//! The suite's kube-controller-manager runs the garbage collector, so the cascades behave as in
//! a real cluster: background deletes the children after the Release, foreground before it,
//! orphan leaves them without an owner.

use gateway_api::apis::experimental::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::fixtures::*;
use crate::support::{Env, eventually};
use waymark::api::{ManualAction, Phase, ROUTE_FINALIZER};

const NAME: &str = "checkout";

/// `(name, weight)` of every backendRef of every rule, as stored (an unset weight reads 1).
fn backend_refs(route: &HttpRoute) -> Vec<Vec<(String, i32)>> {
    route
        .spec
        .rules
        .iter()
        .flatten()
        .map(|rule| {
            rule.backend_refs
                .iter()
                .flatten()
                .map(|backend| (backend.name.clone(), backend.weight.unwrap_or(1)))
                .collect()
        })
        .collect()
}

/// The route as the service owner wrote it ([`create_route`]), as the API server stores it.
fn as_the_owner_wrote_it() -> Vec<Vec<(String, i32)>> {
    vec![
        vec![("checkout-stable".to_string(), 1)],
        vec![("static-assets".to_string(), 7)],
    ]
}

/// The Services named with weight > 0 in `route` that do not exist.
async fn missing_backends(env: &Env, route: &HttpRoute) -> Vec<String> {
    let mut missing = Vec::new();
    for (name, weight) in backend_refs(route).into_iter().flatten() {
        if weight > 0
            && env
                .services()
                .get_opt(&name)
                .await
                .unwrap_or_else(|error| panic!("cannot read Service {name}: {error}"))
                .is_none()
        {
            missing.push(name);
        }
    }
    missing
}

fn has_route_finalizer(finalizers: &[String]) -> bool {
    finalizers.iter().any(|f| f == ROUTE_FINALIZER)
}

/// A canary at 20% of HTTPRoute `checkout`, whose other rule sends to the owner's own Service
/// `static-assets`; the Release holds the finalizer.
async fn canary_at_20_percent(env: &Env) {
    let static_assets: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "static-assets"},
        "spec": {"selector": {"app": "static-assets"}, "ports": [{"port": 8080}]}
    }))
    .expect("the static-assets Service deserializes");
    env.services()
        .create(&PostParams::default(), &static_assets)
        .await
        .expect("the owner's static-assets Service");
    healthy_first_release(env, NAME, json!([{"setWeight": 20}, {"pause": {}}])).await;
    let settled = env.releases().get(NAME).await.expect("the Release");
    assert!(
        !has_route_finalizer(settled.finalizers()),
        "a settled Release carries no finalizer: {:?}",
        settled.finalizers()
    );
    ship(env, NAME, &image(2), "E2E-2").await;
    wait_for_weight(env, NAME, NAME, 20).await;
    let held = env.releases().get(NAME).await.expect("the Release");
    assert!(
        has_route_finalizer(held.finalizers()),
        "the route carries canary weight: the finalizer guards the Release: {:?}",
        held.finalizers()
    );
}

/// Delete the Release at 20% with `params`, wait until it is gone, and check the route at that
/// moment: given back already (the finalizer goes only after the route is written), all traffic
/// on the stable backendRef. Returns the route.
async fn delete_at_20_percent(env: &Env, params: &DeleteParams, cascade: &str) -> HttpRoute {
    canary_at_20_percent(env).await;
    delete_release(env, params, cascade).await
}

/// Delete the Release (at 20%) with `params`: [`delete_at_20_percent`] after the canary.
async fn delete_release(env: &Env, params: &DeleteParams, cascade: &str) -> HttpRoute {
    let asked = tokio::time::Instant::now();
    env.releases()
        .delete(NAME, params)
        .await
        .unwrap_or_else(|error| panic!("cannot delete the Release ({cascade}): {error}"));
    eventually(
        &format!("Waymark to let the Release deleted with {cascade} propagation go"),
        || async {
            match env.releases().get_opt(NAME).await {
                Ok(Some(release)) if has_route_finalizer(release.finalizers()) => {
                    Err(format!("finalizers {:?}", release.finalizers()))
                }
                Ok(_) => Ok(()),
                Err(error) => Err(error.to_string()),
            }
        },
    )
    .await;
    let let_go = asked.elapsed();
    eventually(
        &format!(
            "the Release deleted with {cascade} propagation to be gone (the garbage collector of \
             the suite's kube-controller-manager runs the cascade)"
        ),
        || async {
            match env.releases().get_opt(NAME).await {
                Ok(None) => Ok(()),
                Ok(Some(release)) => Err(format!(
                    "still there, finalizers {:?}",
                    release.finalizers()
                )),
                Err(error) => Err(error.to_string()),
            }
        },
    )
    .await;
    let took = asked.elapsed();
    let route = env
        .routes()
        .get(NAME)
        .await
        .expect("the route outlives the Release");
    eprintln!(
        "deleted at 20% ({cascade}): finalizer removed after {:.1}s, Release gone after {:.1}s; \
         route backendRefs (name, weight) per rule: {:?}",
        let_go.as_secs_f64(),
        took.as_secs_f64(),
        backend_refs(&route)
    );
    assert_eq!(
        backend_refs(&route),
        as_the_owner_wrote_it(),
        "when the Release is gone, its route is as the owner wrote it: no backendRef to \
         checkout-canary, all of the rule's traffic on checkout-stable ({cascade})"
    );
    route
}

/// Default propagation (background, as `kubectl delete` and an Argo CD prune): the garbage
/// collector deletes the Services after the Release. The route was given back first.
pub async fn deleted_mid_canary_the_route_is_given_back_before_the_release_goes(env: Env) {
    delete_at_20_percent(&env, &DeleteParams::default(), "background").await;
    eventually("the garbage collector to delete the Services", || async {
        let left = services_left(&env).await;
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still there: {left:?}"))
        }
    })
    .await;
    let route = env.routes().get(NAME).await.expect("the route");
    assert_eq!(backend_refs(&route), as_the_owner_wrote_it());
    // The one backendRef left without its Service is the one the user deleted with the Release:
    // the owner's route names it and nothing else could serve that rule.
    assert_eq!(
        missing_backends(&env, &route).await,
        ["checkout-stable"],
        "only the Release's own stable, deleted with it, is missing"
    );
}

/// `kubectl delete --cascade=orphan`: the children stay, without an owner, and the route sends
/// everything to the stable Service, which still exists.
pub async fn deleted_mid_canary_with_cascade_orphan_the_route_sends_all_to_the_orphaned_stable(
    env: Env,
) {
    let route = delete_at_20_percent(&env, &DeleteParams::orphan(), "orphan").await;
    assert!(
        missing_backends(&env, &route).await.is_empty(),
        "every backendRef with weight > 0 names a Service that exists: {:?}",
        backend_refs(&route)
    );
    // Wait for the garbage collector's orphaning, then look again: nothing changed the route.
    eventually("the children without an owner", || async {
        let services = env.services().list(&Default::default()).await;
        let owned: Vec<String> = services
            .map_err(|error| error.to_string())?
            .items
            .into_iter()
            .filter(|service| !service.owner_references().is_empty())
            .map(|service| service.name_any())
            .collect();
        if owned.is_empty() {
            Ok(())
        } else {
            Err(format!("still owned: {owned:?}"))
        }
    })
    .await;
    let route = env.routes().get(NAME).await.expect("the route");
    assert_eq!(backend_refs(&route), as_the_owner_wrote_it());
    assert!(missing_backends(&env, &route).await.is_empty());
}

/// `kubectl delete --cascade=foreground`: the garbage collector deletes the children before the
/// Release, so the stable Service may be gone before Waymark gives the route back; it is given
/// back all the same, and the finalizer goes.
pub async fn deleted_mid_canary_with_cascade_foreground_the_route_is_given_back(env: Env) {
    // The garbage collector waits for a dependent only when its owner reference says
    // blockOwnerDeletion; a Service has EndpointSlices of its own, so without it the Release
    // can be gone while its Services are still being deleted.
    canary_at_20_percent(&env).await;
    for (kind, name, owners) in [
        (
            "Deployment",
            "checkout-stable",
            env.deployments()
                .get("checkout-stable")
                .await
                .map(|d| d.metadata.owner_references),
        ),
        (
            "Deployment",
            "checkout-canary",
            env.deployments()
                .get("checkout-canary")
                .await
                .map(|d| d.metadata.owner_references),
        ),
        (
            "Service",
            "checkout-stable",
            env.services()
                .get("checkout-stable")
                .await
                .map(|s| s.metadata.owner_references),
        ),
        (
            "Service",
            "checkout-canary",
            env.services()
                .get("checkout-canary")
                .await
                .map(|s| s.metadata.owner_references),
        ),
    ] {
        let owners = owners.unwrap_or_else(|error| panic!("cannot read {kind} {name}: {error}"));
        let to_release = owners
            .iter()
            .flatten()
            .find(|owner| owner.kind == "Release")
            .unwrap_or_else(|| panic!("{kind} {name} has no owner reference to the Release"));
        assert_eq!(
            to_release.block_owner_deletion,
            Some(true),
            "{kind} {name}: metadata.ownerReferences[kind=Release].blockOwnerDeletion must be \
             true, or a foreground deletion of the Release does not wait for it"
        );
    }
    let route = delete_release(&env, &DeleteParams::foreground(), "foreground").await;
    assert!(
        services_left(&env).await.is_empty(),
        "foreground: the Services went before the Release"
    );
    assert_eq!(
        missing_backends(&env, &route).await,
        ["checkout-stable"],
        "only the Release's own stable, deleted with it, is missing"
    );
}

/// The route deleted mid-canary, then the Release: nothing to give back, and the Release is not
/// held for it. The finalizer goes with a Warning event saying why.
pub async fn deleted_mid_canary_after_its_route_the_release_is_not_held(env: Env) {
    canary_at_20_percent(&env).await;
    env.routes()
        .delete(NAME, &DeleteParams::default())
        .await
        .expect("delete the route");
    eventually("the route to be gone", || async {
        match env.routes().get_opt(NAME).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    env.releases()
        .delete(NAME, &DeleteParams::default())
        .await
        .expect("delete the Release");
    wait_until_release_gone(&env, NAME).await;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let note = eventually("the RouteLeftAsIs event", || async {
        let events = events
            .list(&Default::default())
            .await
            .map_err(|error| error.to_string())?;
        events
            .items
            .into_iter()
            .find(|event| event.reason.as_deref() == Some("RouteLeftAsIs"))
            .and_then(|event| event.note)
            .ok_or_else(|| "no RouteLeftAsIs event yet".to_string())
    })
    .await;
    assert!(
        note.contains("not found") && note.contains(ROUTE_FINALIZER),
        "says why the route was left and that the finalizer went: {note}"
    );
}

/// A settled Release (a canary that went through, promoted) has no finalizer left, and with no
/// controller running it is deleted at once.
pub async fn a_settled_release_has_no_finalizer_and_is_deleted_at_once(env: Env) {
    canary_at_20_percent(&env).await;
    wait_for_phase(&env, NAME, Phase::Paused, Some("CanaryPauseStep")).await;
    request(&env, NAME, ManualAction::Promote, "e2e-promote-1").await;
    wait_for_phase(&env, NAME, Phase::Healthy, Some("StableAvailable")).await;
    wait_for_weight(&env, NAME, NAME, 0).await;
    eventually(
        "the finalizer to go once the route carries no canary weight",
        || async {
            let release = env
                .releases()
                .get(NAME)
                .await
                .map_err(|error| error.to_string())?;
            if has_route_finalizer(release.finalizers()) {
                Err(format!("finalizers {:?}", release.finalizers()))
            } else {
                Ok(())
            }
        },
    )
    .await;
    // Uninstalled: nothing is left to let the Release go.
    env.stop_controller().await;
    let deleted = env
        .releases()
        .delete(NAME, &DeleteParams::default())
        .await
        .expect("delete the settled Release");
    assert!(
        deleted.is_right(),
        "a settled Release is deleted at once, without a controller: {:?}",
        deleted.left().map(|release| release.finalizers().to_vec())
    );
    assert!(
        env.releases().get_opt(NAME).await.expect("read").is_none(),
        "gone"
    );
}

/// Waymark's Services still in the namespace.
async fn services_left(env: &Env) -> Vec<String> {
    let services: Api<Service> = env.services();
    let mut left = Vec::new();
    for name in ["checkout-stable", "checkout-canary"] {
        if services
            .get_opt(name)
            .await
            .unwrap_or_else(|error| panic!("cannot read Service {name}: {error}"))
            .is_some()
        {
            left.push(name.to_string());
        }
    }
    left
}
