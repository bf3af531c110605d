//! GRPCRoute and GatewayClass features on a real API server.
//!
//! The shared Gateway API fixtures hold the standard HTTPRoute, Gateway, GatewayClass and
//! ReferenceGrant CRDs only: the GRPCRoute walk runs on a control plane of its own, first
//! without the GRPCRoute CRD (the Release is told, naming the field, and `/readyz` names the
//! CRD), then with the CRD generated from the gateway-api crate's own type, where a canary moves
//! the GRPCRoute's weights as it would an HTTPRoute's and a deletion mid-canary gives the route
//! back as its owner wrote it; a header cohort (`setHeaderRoute`) becomes a named rule of gRPC
//! header matches that promotion and deletion take away with the weights.

use gateway_api::apis::experimental::grpcroutes::GrpcRoute;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};

use crate::fixtures::*;
use crate::prepare::install_crd;
use crate::support::{E2E_MANAGER, Env, eventually};
use waymark::api::{Phase, Release};

const NAME: &str = "checkout";
type Crd =
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
const GRPC_CRD: &str = "grpcroutes.gateway.networking.k8s.io";

/// A Release routed by the GRPCRoute `route`.
fn grpc_release(name: &str, route: &str, steps: Value) -> Release {
    let mut release = release(name, route, steps);
    release.spec.traffic = serde_json::from_value(json!({"gatewayAPI": {"grpcRoute": route}}))
        .unwrap_or_else(|error| panic!("the GRPCRoute traffic does not deserialize: {error}"));
    release
}

/// The GRPCRoute's rules as its owner writes them: one rule for the service's methods to
/// `<release>-stable`, one of their own that Waymark must never touch.
fn owner_rules(release: &str) -> Value {
    json!([
        {"matches": [{"method": {"service": "shop.Checkout"}}],
         "backendRefs": [{"name": format!("{release}-stable"), "port": 80}]},
        {"matches": [{"method": {"service": "shop.Legacy"}}],
         "backendRefs": [{"name": "legacy", "port": 8080, "weight": 7}]}
    ])
}

async fn create_grpc_route(env: &Env, name: &str, release: &str) {
    let route: GrpcRoute = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "e2e-gateway"}], "rules": owner_rules(release)}
    }))
    .unwrap_or_else(|error| panic!("the test GRPCRoute does not deserialize: {error}"));
    env.grpc_routes()
        .create(&PostParams::default(), &route)
        .await
        .unwrap_or_else(|error| panic!("cannot create GRPCRoute {name}: {error}"));
}

/// The route's rules as stored, as JSON.
async fn stored_rules(env: &Env, name: &str) -> Result<Value, String> {
    let route = env
        .grpc_routes()
        .get(name)
        .await
        .map_err(|error| format!("cannot read GRPCRoute {name}: {error}"))?;
    Ok(serde_json::to_value(&route.spec.rules).unwrap_or_default())
}

/// Wait until the GRPCRoute's first rule sends `canary_weight` percent to the canary, checking
/// every time that the owner's other rule is untouched.
async fn wait_for_grpc_weight(env: &Env, canary_weight: i32) {
    eventually(
        &format!("GRPCRoute {NAME} to send {canary_weight}% to the canary"),
        || async {
            let rules = stored_rules(env, NAME).await?;
            assert_eq!(
                rules[1],
                owner_rules(NAME)[1],
                "the owner's other rule was changed"
            );
            assert_eq!(
                rules[0]["matches"],
                owner_rules(NAME)[0]["matches"],
                "the routed rule's matches were changed"
            );
            let weight = |service: &str| {
                rules[0]["backendRefs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|backend| backend["name"] == service)
                    .map(|backend| backend["weight"].as_i64().unwrap_or(1))
            };
            let stable = weight("checkout-stable").ok_or("no stable backendRef")?;
            let canary = weight("checkout-canary").unwrap_or(0);
            if stable == i64::from(100 - canary_weight) && canary == i64::from(canary_weight) {
                Ok(())
            } else {
                Err(format!("stable weight {stable}, canary weight {canary}"))
            }
        },
    )
    .await;
}

/// Wait until the GRPCRoute carries the cohort step's rule after the owner's two: named
/// `waymark-checkout-beta`, the routed rule's method match with the gRPC header match added,
/// all of it to the canary.
async fn wait_for_grpc_cohort(env: &Env) {
    eventually(
        "GRPCRoute checkout to carry the cohort rule waymark-checkout-beta",
        || async {
            let rules = stored_rules(env, NAME).await?;
            let expected = json!({
                "name": "waymark-checkout-beta",
                "matches": [{"method": {"service": "shop.Checkout"},
                             "headers": [{"name": "x-canary", "value": "true", "type": "Exact"}]}],
                "backendRefs": [{"name": "checkout-canary", "port": 80}]
            });
            (rules[2] == expected && rules.as_array().map(Vec::len) == Some(3))
                .then_some(())
                .ok_or(format!("rules {rules}"))
        },
    )
    .await;
}

/// The condition `type_` of Release `name` once it holds `status` with a message containing
/// `words`.
async fn wait_for_condition(env: &Env, type_: &str, status: &str, words: &str) -> String {
    eventually(
        &format!("condition {type_}={status} saying {words:?}"),
        || async {
            let conditions = env.status(NAME).await.conditions;
            conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == status && c.message.contains(words))
                .map(|c| c.message.clone())
                .ok_or_else(|| format!("conditions {conditions:?}"))
        },
    )
    .await
}

pub async fn a_grpc_route_canary_moves_its_weights_and_a_deletion_gives_the_route_back(env: Env) {
    // 1. No GRPCRoute CRD (this control plane is the walk's own): the Release is told, naming
    //    the field, and /readyz names the CRD while a Release needs it.
    let crds: Api<Crd> = Api::all(env.client.clone());
    assert!(
        crds.get_opt(GRPC_CRD).await.unwrap().is_none(),
        "a control plane of the walk's own has no GRPCRoute CRD"
    );
    let steps = json!([
        {"setHeaderRoute": {"name": "beta",
                            "match": {"headers": [{"name": "x-canary", "value": "true"}]}}},
        {"setWeight": 10},
        {"pause": {"duration": "3s"}},
        {"setWeight": 50},
        {"pause": {"duration": "3s"}}
    ]);
    create_release(&env, &grpc_release(NAME, NAME, steps)).await;
    let message = wait_for_condition(
        &env,
        "TrafficRouted",
        "False",
        "spec.traffic.gatewayAPI.grpcRoute",
    )
    .await;
    assert!(message.contains("GRPCRoute"), "{message}");
    eventually("/readyz to name the missing GRPCRoute CRD", || async {
        let (code, text) = env.readyz().await;
        if code == 503 && text.contains(GRPC_CRD) && text.contains("names a GRPCRoute") {
            Ok(())
        } else {
            Err(format!("{code}: {text}"))
        }
    })
    .await;

    // 2. The CRD, generated from the gateway-api crate's own type, and the owner's route: the
    //    watch comes back by itself and the first release settles.
    //    The group is a protected one (*.k8s.io): the API server wants its approval annotation,
    //    taken from the installed HTTPRoute CRD of the same project.
    let approval = "api-approved.kubernetes.io";
    let http_crd = crds
        .get("httproutes.gateway.networking.k8s.io")
        .await
        .unwrap();
    let mut grpc_crd = gateway_api::apis::standard::grpcroutes::GrpcRoute::crd();
    grpc_crd.metadata.annotations = Some(
        [(
            approval.to_string(),
            http_crd.annotations()[approval].clone(),
        )]
        .into(),
    );
    install_crd(&env.client, &grpc_crd, E2E_MANAGER)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    create_grpc_route(&env, NAME, NAME).await;
    wait_for_phase(&env, NAME, Phase::Healthy, Some("StableAvailable")).await;
    wait_for_condition(&env, "TrafficRouted", "True", "").await;
    eventually("/readyz ready with the CRD installed", || async {
        let (code, text) = env.readyz().await;
        (code == 200).then_some(()).ok_or(format!("{code}: {text}"))
    })
    .await;
    assert_eq!(
        stored_rules(&env, NAME).await.unwrap(),
        owner_rules(NAME),
        "a first release leaves the route as written"
    );

    // 3. A new version: 10%, then 50%, then promotion gives the route back as the owner
    //    wrote it (all traffic on the stable, Waymark's backendRef gone).
    ship(&env, NAME, &image(2), "E2E-2").await;
    wait_for_grpc_weight(&env, 10).await;
    wait_for_grpc_cohort(&env).await;
    wait_for_grpc_weight(&env, 50).await;
    wait_for_phase(&env, NAME, Phase::Healthy, Some("StableAvailable")).await;
    eventually(
        "promotion to give the GRPCRoute back as written",
        || async {
            let rules = stored_rules(&env, NAME).await?;
            (rules == owner_rules(NAME))
                .then_some(())
                .ok_or(format!("rules {rules}"))
        },
    )
    .await;
    let status = env.status(NAME).await;
    assert_eq!(
        status.history.first().map(|h| h.roadmap_item.as_str()),
        Some("E2E-2")
    );

    // 4. Another version, deleted at 10%: the finalizer gives the route back exactly as the
    //    owner wrote it before the Release goes.
    ship(&env, NAME, &image(1), "E2E-3").await;
    wait_for_grpc_weight(&env, 10).await;
    wait_for_grpc_cohort(&env).await;
    env.releases()
        .delete(NAME, &DeleteParams::default())
        .await
        .expect("delete the Release");
    wait_until_release_gone(&env, NAME).await;
    assert_eq!(
        stored_rules(&env, NAME).await.unwrap(),
        owner_rules(NAME),
        "the route is given back as its owner wrote it"
    );
    let route = env.grpc_routes().get(NAME).await.unwrap();
    assert_eq!(
        serde_json::to_value(&route.spec.parent_refs).unwrap(),
        json!([{"name": "e2e-gateway"}]),
        "parentRefs are the owner's"
    );
}

/// A GatewayClass (cluster-scoped, named after the walk's namespace) reporting `features`, and
/// Gateway `e2e-gateway` of that class in the walk's namespace.
async fn gateway_of_class_with(env: &Env, features: &[&str]) -> String {
    let class_name = format!("{}-class", env.namespace);
    let classes: Api<gateway_api::apis::standard::gatewayclasses::GatewayClass> =
        Api::all(env.client.clone());
    let class = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": class_name},
        "spec": {"controllerName": "waymark.dev/e2e"}
    }))
    .unwrap();
    classes
        .create(&PostParams::default(), &class)
        .await
        .unwrap_or_else(|error| panic!("cannot create GatewayClass {class_name}: {error}"));
    // What a Gateway implementation reports, on the status subresource.
    let supported: Vec<Value> = features.iter().map(|name| json!({"name": name})).collect();
    classes
        .patch_status(
            &class_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"supportedFeatures": supported}})),
        )
        .await
        .unwrap_or_else(|error| panic!("cannot report the class's features: {error}"));
    let gateways: Api<gateway_api::apis::standard::gateways::Gateway> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let gateway = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "e2e-gateway"},
        "spec": {"gatewayClassName": class_name,
                 "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}
    }))
    .unwrap();
    gateways
        .create(&PostParams::default(), &gateway)
        .await
        .unwrap_or_else(|error| panic!("cannot create Gateway e2e-gateway: {error}"));
    class_name
}

pub async fn a_gateway_class_without_session_persistence_refuses_it_naming_the_field(env: Env) {
    let class_name =
        gateway_of_class_with(&env, &["Gateway", "HTTPRoute", "HTTPRouteRequestMirror"]).await;
    create_route(&env, NAME, NAME).await;
    let mut release = release(NAME, NAME, json!([{"setWeight": 10}, {"pause": {}}]));
    release.spec.traffic = serde_json::from_value(json!({"gatewayAPI": {
        "httpRoute": NAME,
        "sessionPersistence": {"sessionName": "cart", "type": "Cookie", "idleTimeout": "10m"}
    }}))
    .unwrap();
    create_release(&env, &release).await;
    let message = wait_for_condition(
        &env,
        "SessionPersistence",
        "False",
        "spec.traffic.gatewayAPI.sessionPersistence",
    )
    .await;
    assert!(message.contains("HTTPRouteSessionPersistence"), "{message}");
    // The release is not held by it: the first release settles, and a canary gets its weight
    // without Waymark ever writing the field the class does not support.
    wait_for_phase(&env, NAME, Phase::Healthy, Some("StableAvailable")).await;
    ship(&env, NAME, &image(2), "E2E-2").await;
    wait_for_weight(&env, NAME, NAME, 10).await;
    let route = env.routes().get(NAME).await.unwrap();
    let written = serde_json::to_value(&route.spec.rules).unwrap();
    assert!(
        !written.to_string().contains("sessionPersistence"),
        "no session persistence written: {written}"
    );
    // An HTTPRoute user on a cluster without the GRPCRoute CRD (the suite's shared one): ready.
    let crds: Api<Crd> = Api::all(env.client.clone());
    if crds.get_opt(GRPC_CRD).await.unwrap().is_none() {
        let (code, text) = env.readyz().await;
        assert_eq!(code, 200, "{text}");
    }
    // Cluster-scoped: the namespace's deletion does not take it.
    let classes: Api<gateway_api::apis::standard::gatewayclasses::GatewayClass> =
        Api::all(env.client.clone());
    let _ = classes.delete(&class_name, &DeleteParams::default()).await;
}
