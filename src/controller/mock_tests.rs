//! Mock-API tests of the shell: every API call a reconcile makes, asserted by method, path,
//! query and body, in order. The world is read from watch caches the tests fill by hand, so
//! the only calls are writes (and the GET of a name someone else holds).

use std::sync::Arc;
use std::time::Duration;

use gateway_api::apis::experimental::httproutes::HttpRoute;
use http::{Method, Request, Response};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::{Value, json};

use super::cached::{CachedDeployment, CachedService};
use super::children;
use super::context::{Context, Stores};
use super::error::Error;
use super::metrics::Metrics;
use super::reconcile::{reconcile, reconcile_release};
use crate::api::{Release, ReleaseStatus, Role, template_revision};
use crate::fixtures::{ReleaseBuilder, V1, V2, at, set_weight, template};
use crate::rollout::{self, Observed, RouteState};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

const SSA: &str = "&force=true&fieldManager=waymark";
/// The query of a plain patch by Waymark's field manager.
const FIELD_MANAGER_QUERY: &str = "&fieldManager=waymark";
const CREATE: &str = "?&fieldManager=waymark";
const ROUTE_PATH: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/shop/deployments";
const SERVICES: &str = "/api/v1/namespaces/shop/services";
const STATUS_PATH: &str = "/apis/waymark.dev/v1alpha1/namespaces/shop/releases/checkout/status";
const RELEASE_PATCH: &str =
    "/apis/waymark.dev/v1alpha1/namespaces/shop/releases/checkout?&fieldManager=waymark";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

/// The watch caches, filled by hand.
struct World {
    deployments: Writer<CachedDeployment>,
    services: Writer<CachedService>,
    routes: Writer<HttpRoute>,
    grpc_routes: Writer<gateway_api::apis::experimental::grpcroutes::GrpcRoute>,
}

impl World {
    /// Put `deployment` into the cache as the watch would deliver it: narrowed.
    fn deployment(&mut self, deployment: Deployment) {
        self.deployments
            .apply_watcher_event(&watcher::Event::Apply(deployment.into()));
    }

    /// Put `service` into the cache as the watch would deliver it: narrowed.
    fn service(&mut self, service: Service) {
        self.services
            .apply_watcher_event(&watcher::Event::Apply(service.into()));
    }

    fn route(&mut self, route: Value) {
        let route: HttpRoute = serde_json::from_value(route).unwrap();
        self.routes
            .apply_watcher_event(&watcher::Event::Apply(route));
    }

    fn grpc_route(&mut self, route: Value) {
        let route = serde_json::from_value(route).unwrap();
        self.grpc_routes
            .apply_watcher_event(&watcher::Event::Apply(route));
    }

    /// The children a settled `release` has: both Services, and the stable Deployment of
    /// `image` with every pod available.
    fn settled(&mut self, release: &Release, image: &str) {
        for service in children::services(release).unwrap() {
            self.service(service);
        }
        self.deployment(available(release, Role::Stable, image, 4));
    }
}

/// A child Deployment as the API server would return it, every pod available.
fn available(release: &Release, role: Role, image: &str, replicas: i32) -> Deployment {
    let revision = template_revision(&template(image));
    let mut deployment = children::deployment(release, role, &revision, replicas).unwrap();
    deployment.metadata.generation = Some(1);
    deployment.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(replicas),
        updated_replicas: Some(replicas),
        ready_replicas: Some(replicas),
        available_replicas: Some(replicas),
        ..Default::default()
    });
    deployment
}

/// The mock API server's side: the requests come in order, and each is checked and answered.
/// `.1` is the status the API server holds at each resourceVersion the scenario answered, the
/// base the controller's JSON patches apply to.
struct ApiServerVerifier(Handle, std::collections::HashMap<String, Value>);

fn test_context() -> (Arc<Context>, World, ApiServerVerifier) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let reporter = Reporter {
        controller: "waymark".into(),
        instance: None,
    };
    let (deployments, deployment_writer) = reflector::store();
    let (services, service_writer) = reflector::store();
    let (routes, route_writer) = reflector::store();
    let (grpc_routes, grpc_route_writer) = reflector::store();
    let ctx = Context::new(
        client.clone(),
        super::events::EventRecorder::new(client, reporter),
        Arc::new(Metrics::default()),
        Stores::new(deployments, services, routes, grpc_routes),
    );
    let world = World {
        deployments: deployment_writer,
        services: service_writer,
        routes: route_writer,
        grpc_routes: grpc_route_writer,
    };
    (
        Arc::new(ctx),
        world,
        ApiServerVerifier(handle, Default::default()),
    )
}

fn respond(send: Responder, code: u16, body: &Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(bytes))
            .unwrap(),
    );
}

fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    })
}

fn route(backend_refs: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "checkout", "namespace": "shop", "resourceVersion": "7"},
        "spec": {
            "parentRefs": [{"name": "public"}],
            "rules": [
                {"backendRefs": backend_refs},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                 "backendRefs": [{"name": "assets", "port": 80}]}
            ]
        }
    })
}

fn weights(route: &Value) -> Vec<(String, Option<i64>)> {
    route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|backend| {
            (
                backend["name"].as_str().unwrap().to_string(),
                backend["weight"].as_i64(),
            )
        })
        .collect()
}

impl ApiServerVerifier {
    /// The next request: asserts method and URI (path and query), returns its JSON body.
    async fn expect(&mut self, method: Method, uri: &str) -> (Value, Responder) {
        let (request, send) = self
            .0
            .next_request()
            .await
            .unwrap_or_else(|| panic!("expected {method} {uri}, but no further API call came"));
        assert_eq!(
            (request.method(), request.uri().to_string()),
            (&method, uri.to_string()),
            "expected {method} {uri}"
        );
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (body, send)
    }

    /// The next request must be `method uri`; answered by echoing its body.
    async fn expect_echo(&mut self, method: Method, uri: &str) -> Value {
        let (body, send) = self.expect(method, uri).await;
        respond(send, 200, &body);
        body
    }

    async fn expect_event(&mut self, reason: &str, kind: &str) -> Value {
        let (body, send) = self.expect(Method::POST, &format!("{EVENTS_PATH}?")).await;
        assert_eq!(
            (body["reason"].as_str(), body["type"].as_str()),
            (Some(reason), Some(kind)),
            "{body}"
        );
        assert!(
            body["note"].as_str().unwrap().contains("PAY-142"),
            "every event names the roadmap item: {body}"
        );
        assert_eq!(body["regarding"]["kind"], "Release");
        respond(send, 201, &body);
        body
    }

    /// The API server holding `release` (its status at its resourceVersion): the controller's
    /// status patches based on it apply to its status.
    fn holding(mut self, release: &Release) -> Self {
        if let (Some(version), Some(status)) = (
            release.metadata.resource_version.clone(),
            release.status.as_ref(),
        ) {
            self.1
                .insert(version, serde_json::to_value(status).unwrap());
        }
        self
    }

    /// The status write: a JSON patch whose first operation tests the resourceVersion the
    /// decision was made on, never touching `status.request` (the CLI's). Applied to the status
    /// held at that version (none unless [`Self::holding`] or an earlier write said so);
    /// answered with a new resourceVersion (`based_on` + "1"); returns the whole new status.
    async fn expect_status(&mut self, based_on: &str) -> Value {
        let (body, send) = self
            .expect(
                Method::PATCH,
                &format!("{STATUS_PATH}?{FIELD_MANAGER_QUERY}"),
            )
            .await;
        let operations = body.as_array().expect("a JSON patch");
        assert_eq!(
            operations.first(),
            Some(&json!({"op": "test", "path": "/metadata/resourceVersion", "value": based_on})),
            "a precondition first: never written over a newer Release"
        );
        assert!(
            operations.iter().all(|operation| !operation["path"]
                .as_str()
                .unwrap()
                .starts_with("/status/request")
                && operation["value"].get("request").is_none()),
            "the CLI owns status.request: {body}"
        );
        let mut object = json!({"metadata": {"resourceVersion": based_on}});
        if let Some(status) = self.1.get(based_on) {
            object["status"] = status.clone();
        }
        let patch: json_patch::Patch = serde_json::from_value(body.clone()).unwrap();
        json_patch::patch(&mut object, &patch)
            .unwrap_or_else(|error| panic!("the patch {body} does not apply: {error}"));
        let new_version = format!("{based_on}1");
        self.1.insert(new_version.clone(), object["status"].clone());
        let mut release = serde_json::to_value(ReleaseBuilder::gateway().build()).unwrap();
        release["metadata"]["resourceVersion"] = json!(new_version);
        release["status"] = object["status"].clone();
        respond(send, 200, &release);
        object["status"].clone()
    }

    /// The finalizer patch: a merge patch of `metadata.finalizers` alone, with the
    /// resourceVersion it was based on as a precondition. Answered with `answer_version`.
    async fn expect_finalizers(
        &mut self,
        based_on: &str,
        finalizers: &[&str],
        answer_version: &str,
    ) {
        let (body, send) = self.expect(Method::PATCH, RELEASE_PATCH).await;
        assert_eq!(
            body,
            json!({"metadata": {"resourceVersion": based_on, "finalizers": finalizers}}),
            "only the finalizers, never over a newer Release"
        );
        let mut release = serde_json::to_value(ReleaseBuilder::gateway().build()).unwrap();
        release["metadata"]["resourceVersion"] = json!(answer_version);
        release["metadata"]["finalizers"] = json!(finalizers);
        respond(send, 200, &release);
    }

    /// Nothing may follow: once every client is dropped, the channel ends.
    async fn expect_nothing_more(&mut self) {
        if let Some((request, _)) = self.0.next_request().await {
            panic!(
                "unexpected API call: {} {}",
                request.method(),
                request.uri()
            );
        }
    }
}

/// Run `script` as the API server while `reconcile` runs, then check nothing else was asked.
async fn scenario<F, Fut>(verifier: ApiServerVerifier, script: F) -> tokio::task::JoinHandle<()>
where
    F: FnOnce(ApiServerVerifier) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ApiServerVerifier> + Send,
{
    tokio::spawn(async move {
        let mut verifier = script(verifier).await;
        verifier.expect_nothing_more().await;
    })
}

/// Wait for the scenario to finish (it ends when every client is gone: drop ours first).
async fn finish(server: tokio::task::JoinHandle<()>, ctx: Arc<Context>) {
    drop(ctx);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the scenario finished in time")
        .expect("the scenario's assertions held");
}

/// A Release on V1 whose stored status is what the core decides for its settled world.
fn settled_release(world: &mut World, now: Timestamp) -> Release {
    let release = ReleaseBuilder::gateway().build();
    world.settled(&release, V1);
    world.route(route(json!([{"name": "checkout-stable", "port": 8080}])));
    let observed = Observed {
        stable: Some(super::observe::workload_state(
            &available(&release, Role::Stable, V1, 4).into(),
        )),
        canary: None,
        services_ready: true,
        route: Some(RouteState::Ready { canary_weight: 0 }),
        route_object: None,
        grpc_route_object: None,
        analysis: None,
        credentials: Default::default(),
        last_apply: Default::default(),
        workload: Default::default(),
        held_workload: Default::default(),
        gateway_features: None,
        outcome_answers: Vec::new(),
    };
    let settled = rollout::decide(&release, &observed, now);
    assert!(
        settled
            .actions
            .iter()
            .all(|a| matches!(a, rollout::Action::Event(_))),
        "{:?}",
        settled.actions
    );
    ReleaseBuilder::gateway().status(settled.status).build()
}

/// The settled Release of [`settled_release`] given the template of `V2` and one
/// `setWeight 10` step: the next reconcile starts a canary.
fn new_template_release(world: &mut World) -> Release {
    let settled = settled_release(world, at(0));
    let mut release = ReleaseBuilder::gateway()
        .image(V2)
        .status(settled.status.clone().unwrap())
        .build();
    release.spec.steps = vec![set_weight(10)];
    release
}

#[tokio::test]
async fn a_first_release_writes_its_intent_then_creates_services_and_the_stable() {
    let (ctx, mut world, verifier) = test_context();
    world.route(route(json!([{"name": "checkout-stable", "port": 8080}])));
    let release = ReleaseBuilder::gateway().build();
    let revision = template_revision(&release.spec.template);
    let server = scenario(verifier, move |mut api| async move {
        let status = api.expect_status("100").await;
        assert_eq!(status["phase"], "Progressing", "nothing is available yet");
        assert_eq!(status["stableRevision"], revision.as_str());
        for role in ["stable", "canary"] {
            let service = api
                .expect_echo(Method::POST, &format!("{SERVICES}{CREATE}"))
                .await;
            assert_eq!(service["metadata"]["name"], format!("checkout-{role}"));
            assert_eq!(
                service["spec"]["selector"],
                json!({"waymark.dev/release": "checkout", "waymark.dev/role": role})
            );
            assert_eq!(
                service["metadata"]["ownerReferences"][0]["controller"],
                true
            );
        }
        let deployment = api
            .expect_echo(Method::POST, &format!("{DEPLOYMENTS}{CREATE}"))
            .await;
        assert_eq!(deployment["metadata"]["name"], "checkout-stable");
        assert_eq!(deployment["spec"]["replicas"], 4);
        assert_eq!(
            deployment["metadata"]["labels"]["waymark.dev/revision"],
            revision.as_str()
        );
        assert!(deployment["metadata"]["annotations"]["waymark.dev/spec-hash"].is_string());
        api.expect_event("StableCreated", "Normal").await;
        api
    })
    .await;
    let requeue = reconcile_release(&release, &ctx, at(0)).await.unwrap();
    assert_ne!(
        requeue,
        Requeue::await_change(),
        "it looks again while acting"
    );
    drop(world);
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_settled_release_makes_no_api_call_at_all() {
    let (ctx, mut world, verifier) = test_context();
    let release = settled_release(&mut world, at(0));
    let server = scenario(verifier, |api| async move { api }).await;
    let requeue = reconcile_release(&release, &ctx, at(3_600)).await.unwrap();
    assert_eq!(requeue, Requeue::await_change());
    finish(server, ctx).await;
}

/// A new process (a restart, a new leader) writes nothing for a settled Release, yet exports
/// its phase at once, and does not count its last promotion again.
#[tokio::test]
async fn a_settled_releases_phase_is_exported_by_a_new_process_without_a_write() {
    let (ctx, mut world, verifier) = test_context();
    let mut release = settled_release(&mut world, at(0));
    // Promoted before the restart: in the stored history.
    let status = release.status.as_mut().expect("a settled status");
    status.history.insert(
        0,
        serde_json::from_value(json!({
            "revision": "5d8b9c",
            "roadmapItem": status.roadmap_item.clone().unwrap_or_default(),
            "outcome": "Promoted",
            "startedAt": "2026-11-21T11:50:00Z",
            "finishedAt": "2026-11-21T12:00:00Z",
            "reason": "Promoted",
        }))
        .expect("a history entry"),
    );
    let server = scenario(verifier, |api| async move { api }).await;
    let before = ctx.metrics.encode().unwrap();
    assert!(!before.contains("waymark_release_phase{"), "{before}");
    reconcile_release(&release, &ctx, at(3_600)).await.unwrap();
    let after = ctx.metrics.encode().unwrap();
    let healthy = format!(
        r#"waymark_release_phase{{namespace="{}",release="{}",roadmap_item="#,
        kube::ResourceExt::namespace(&release).unwrap_or_default(),
        kube::ResourceExt::name_any(&release)
    );
    let line = after
        .lines()
        .find(|line| line.starts_with(&healthy) && line.contains(r#"phase="Healthy""#))
        .unwrap_or_else(|| panic!("no Healthy phase series in {after}"));
    assert!(line.ends_with(" 1"), "{line}");
    assert!(
        !after.contains("waymark_releases_finished_total{"),
        "the stored history is not counted again: {after}"
    );
    finish(server, ctx).await;
}

/// A replica-split Release on V1, settled: its stored status is what the core decides for the
/// world `world` holds after [`World::settled`].
fn settled_replica_split_release(world: &mut World) -> Release {
    let release = ReleaseBuilder::replica_split().build();
    world.settled(&release, V1);
    let observed = Observed {
        stable: Some(super::observe::workload_state(
            &available(&release, Role::Stable, V1, 4).into(),
        )),
        services_ready: true,
        ..Observed::default()
    };
    let settled = rollout::decide(&release, &observed, at(0));
    ReleaseBuilder::replica_split()
        .status(settled.status)
        .build()
}

#[tokio::test]
async fn a_replica_split_release_deletes_the_role_services_an_older_version_made_and_nothing_else()
{
    let (ctx, mut world, verifier) = test_context();
    let release = settled_replica_split_release(&mut world);
    // What an older Waymark left: a Service per role, owned by this Release.
    world.service(children::service(&release, Some(Role::Stable)).unwrap());
    world.service(children::service(&release, Some(Role::Canary)).unwrap());
    let server = scenario(verifier, |mut api| async move {
        for role in ["stable", "canary"] {
            let (_, send) = api
                .expect(Method::DELETE, &format!("{SERVICES}/checkout-{role}?"))
                .await;
            respond(send, 200, &json!({"kind": "Status", "status": "Success"}));
        }
        api
    })
    .await;
    reconcile_release(&release, &ctx, at(60)).await.unwrap();
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_replica_split_release_leaves_a_role_named_service_it_does_not_own_alone() {
    let (ctx, mut world, verifier) = test_context();
    let release = settled_replica_split_release(&mut world);
    let mut someone_elses = children::service(&release, Some(Role::Canary)).unwrap();
    someone_elses.metadata.owner_references = None;
    world.service(someone_elses);
    let server = scenario(verifier, |api| async move { api }).await;
    let requeue = reconcile_release(&release, &ctx, at(60)).await.unwrap();
    assert_eq!(requeue, Requeue::await_change());
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_new_template_writes_the_canary_intent_then_creates_the_canary() {
    let (ctx, mut world, verifier) = test_context();
    let release = new_template_release(&mut world);
    let canary = template_revision(&template(V2));
    let server = scenario(verifier.holding(&release), move |mut api| async move {
        let status = api.expect_status("100").await;
        assert_eq!(status["canaryRevision"], canary.as_str());
        let deployment = api
            .expect_echo(Method::POST, &format!("{DEPLOYMENTS}{CREATE}"))
            .await;
        assert_eq!(deployment["metadata"]["name"], "checkout-canary");
        assert_eq!(deployment["spec"]["replicas"], 1);
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            V2
        );
        assert_eq!(
            deployment["spec"]["selector"]["matchLabels"]["waymark.dev/role"],
            "canary"
        );
        api.expect_event("CanaryStarted", "Normal").await;
        api
    })
    .await;
    reconcile_release(&release, &ctx, at(10)).await.unwrap();
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_canary_the_watch_has_not_delivered_yet_is_read_from_its_create_not_created_again() {
    let (ctx, mut world, verifier) = test_context();
    let mut release = new_template_release(&mut world);
    let (written, status) = tokio::sync::oneshot::channel();
    let server = scenario(verifier.holding(&release), move |mut api| async move {
        let _ = written.send(api.expect_status("100").await);
        let deployment = api
            .expect_echo(Method::POST, &format!("{DEPLOYMENTS}{CREATE}"))
            .await;
        assert_eq!(deployment["metadata"]["name"], "checkout-canary");
        api.expect_event("CanaryStarted", "Normal").await;
        // The second reconcile: no create (it would answer 409), no status write (nothing
        // changed: the canary's pod is not available yet), nothing at all.
        api
    })
    .await;
    reconcile_release(&release, &ctx, at(10)).await.unwrap();
    release.status = Some(serde_json::from_value(status.await.unwrap()).unwrap());
    assert!(
        ctx.stores
            .deployments
            .get(&ObjectRef::new("checkout-canary").within("shop"))
            .is_none(),
        "the watch cache has not seen the canary"
    );
    reconcile_release(&release, &ctx, at(11)).await.unwrap();
    drop(world);
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_set_weight_step_adds_the_finalizer_then_applies_only_the_routes_rules() {
    let (ctx, mut world, verifier) = test_context();
    let mut release = new_template_release(&mut world);
    // The canary is up and available: the step moves traffic.
    world.deployment(available(&release, Role::Canary, V2, 1));
    let start = rollout::decide(
        &release,
        &Observed {
            stable: Some(super::observe::workload_state(
                &available(&release, Role::Stable, V1, 4).into(),
            )),
            canary: None,
            services_ready: true,
            route: Some(RouteState::Ready { canary_weight: 0 }),
            route_object: None,
            grpc_route_object: None,
            analysis: None,
            credentials: Default::default(),
            last_apply: Default::default(),
            workload: Default::default(),
            held_workload: Default::default(),
            gateway_features: None,
            outcome_answers: Vec::new(),
        },
        at(10),
    );
    release.status = Some(start.status);
    let server = scenario(verifier.holding(&release), |mut api| async move {
        let status = api.expect_status("100").await;
        assert_eq!(status["reason"], "StepSetWeight");
        // The finalizer after the intent and before the first weight the canary gets.
        api.expect_finalizers("1001", &[crate::api::ROUTE_FINALIZER], "1002")
            .await;
        let body = api
            .expect_echo(Method::PATCH, &format!("{ROUTE_PATH}?{SSA}"))
            .await;
        assert_eq!(
            body["spec"].as_object().unwrap().keys().collect::<Vec<_>>(),
            ["rules"],
            "only the rules are Waymark's: parentRefs stay the owner's"
        );
        assert!(body["metadata"].get("resourceVersion").is_none());
        assert_eq!(
            weights(&body),
            [
                ("checkout-stable".to_string(), Some(90)),
                ("checkout-canary".to_string(), Some(10)),
            ]
        );
        assert_eq!(
            body["spec"]["rules"][1]["backendRefs"][0]["name"], "assets",
            "the other rule is kept"
        );
        api
    })
    .await;
    reconcile_release(&release, &ctx, at(20)).await.unwrap();
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_grpc_route_step_asks_the_gateway_class_then_applies_weights_with_session_persistence() {
    let (ctx, mut world, verifier) = test_context();
    let mut release = new_template_release(&mut world);
    release.spec.traffic.gateway_api = Some(crate::api::GatewayApiTraffic {
        session_persistence: Some(crate::api::SessionPersistence {
            session_name: Some("cart".into()),
            ..Default::default()
        }),
        ..crate::api::GatewayApiTraffic::grpc("checkout")
    });
    world.grpc_route(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": "checkout", "namespace": "shop", "resourceVersion": "7"},
        "spec": {
            "parentRefs": [{"name": "public"}],
            "rules": [
                {"matches": [{"method": {"service": "shop.Checkout"}}],
                 "backendRefs": [{"name": "checkout-stable", "port": 8080}]},
                {"backendRefs": [{"name": "legacy", "port": 8080}]}
            ]
        }
    }));
    world.deployment(available(&release, Role::Canary, V2, 1));
    let start = rollout::decide(
        &release,
        &Observed {
            stable: Some(super::observe::workload_state(
                &available(&release, Role::Stable, V1, 4).into(),
            )),
            services_ready: true,
            route: Some(RouteState::Ready { canary_weight: 0 }),
            ..Default::default()
        },
        at(10),
    );
    release.status = Some(start.status);
    let server = scenario(verifier.holding(&release), |mut api| async move {
        // The route's parent Gateway, then its class: read by name, once for the reconcile.
        let (_, send) = api
            .expect(
                Method::GET,
                "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/public",
            )
            .await;
        respond(
            send,
            200,
            &json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "public", "namespace": "shop"},
                "spec": {"gatewayClassName": "edge",
                         "listeners": [{"name": "grpc", "port": 443, "protocol": "HTTPS"}]}
            }),
        );
        let (_, send) = api
            .expect(
                Method::GET,
                "/apis/gateway.networking.k8s.io/v1/gatewayclasses/edge",
            )
            .await;
        respond(
            send,
            200,
            &json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                "metadata": {"name": "edge"},
                "spec": {"controllerName": "example.com/edge"},
                "status": {"supportedFeatures": [
                    {"name": "CookieSessionPersistence"}, {"name": "GRPCRoute"}]}
            }),
        );
        let status = api.expect_status("100").await;
        assert_eq!(status["reason"], "StepSetWeight");
        let condition = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "SessionPersistence")
            .cloned()
            .unwrap_or_default();
        assert_eq!(condition["status"], "True", "{status}");
        api.expect_finalizers("1001", &[crate::api::ROUTE_FINALIZER], "1002")
            .await;
        let body = api
            .expect_echo(
                Method::PATCH,
                &format!(
                    "/apis/gateway.networking.k8s.io/v1/namespaces/shop/grpcroutes/checkout?{SSA}"
                ),
            )
            .await;
        assert_eq!(body["kind"], "GRPCRoute");
        assert_eq!(
            body["spec"].as_object().unwrap().keys().collect::<Vec<_>>(),
            ["rules"]
        );
        assert_eq!(
            weights(&body),
            [
                ("checkout-stable".to_string(), Some(90)),
                ("checkout-canary".to_string(), Some(10)),
            ]
        );
        assert_eq!(
            body["spec"]["rules"][0]["sessionPersistence"],
            json!({"sessionName": "cart"})
        );
        assert_eq!(
            body["spec"]["rules"][1],
            json!({"backendRefs": [{"name": "legacy", "port": 8080}]}),
            "the owner's other rule: untouched, no session persistence"
        );
        api
    })
    .await;
    reconcile_release(&release, &ctx, at(20)).await.unwrap();
    finish(server, ctx).await;
}

#[tokio::test]
async fn an_abort_is_recorded_first_then_weight_zero_then_the_canary_scaled_down() {
    let (ctx, mut world, verifier) = test_context();
    let settled = settled_release(&mut world, at(0));
    let mut release = ReleaseBuilder::gateway()
        .image(V2)
        .status(settled.status.clone().unwrap())
        .build();
    release.spec.steps = vec![set_weight(50), crate::fixtures::pause_until_promoted()];
    let mut status = release.status.clone().unwrap();
    status.canary_revision = Some(template_revision(&template(V2)));
    status.current_step = Some(1);
    status.steps_started_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(5)));
    status.request = Some(crate::api::ManualRequest {
        id: "stop-1".into(),
        action: crate::api::ManualAction::Abort,
        revision: None,
        stage: None,
        step: None,
        requested_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(30)),
        requested_by: Some("sre@example.com".into()),
    });
    release.status = Some(status);
    // A canary with traffic holds the finalizer; taking the traffic away keeps it this time.
    release.metadata.finalizers = Some(vec![crate::api::ROUTE_FINALIZER.into()]);
    world.deployment(available(&release, Role::Canary, V2, 2));
    world.route(route(json!([
        {"name": "checkout-stable", "port": 8080, "weight": 50},
        {"name": "checkout-canary", "port": 8080, "weight": 50}
    ])));
    let server = scenario(verifier.holding(&release), |mut api| async move {
        let status = api.expect_status("100").await;
        assert_eq!(
            status["phase"], "RolledBack",
            "the intent is written before any action"
        );
        assert_eq!(status["handledRequest"], "stop-1");
        let body = api
            .expect_echo(Method::PATCH, &format!("{ROUTE_PATH}?{SSA}"))
            .await;
        assert_eq!(
            weights(&body),
            [
                // Weight 0 gives the route back: Waymark's backendRef goes.
                ("checkout-stable".to_string(), None),
            ]
        );
        let scale = api
            .expect_echo(
                Method::PATCH,
                &format!("{DEPLOYMENTS}/checkout-canary?&fieldManager=waymark"),
            )
            .await;
        assert_eq!(scale, json!({"spec": {"replicas": 0}}), "replicas only");
        api.expect_event("CanaryAborted", "Warning").await;
        api
    })
    .await;
    reconcile_release(&release, &ctx, at(31)).await.unwrap();
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_stale_release_is_not_acted_on_when_its_status_write_is_refused() {
    let (ctx, world, verifier) = test_context();
    let release = ReleaseBuilder::gateway().build();
    let server = scenario(verifier, |mut api| async move {
        let (_, send) = api
            .expect(
                Method::PATCH,
                &format!("{STATUS_PATH}?{FIELD_MANAGER_QUERY}"),
            )
            .await;
        respond(
            send,
            409,
            &failure(409, "Conflict", "the object has been modified"),
        );
        api
    })
    .await;
    let requeue = reconcile_release(&release, &ctx, at(0)).await.unwrap();
    assert_eq!(requeue, Requeue::requeue(super::context::STALE_RETRY));
    drop(world);
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_cached_release_older_than_our_own_write_waits_for_the_cache() {
    let (ctx, world, verifier) = test_context();
    let release = Arc::new(ReleaseBuilder::gateway().build());
    ctx.wrote_status(
        &ObjectRef::from_obj(release.as_ref()),
        release.meta().resource_version.clone(),
    );
    let server = scenario(verifier, |api| async move { api }).await;
    let requeue = reconcile(release, ctx.clone()).await.unwrap();
    assert_eq!(requeue, Requeue::requeue(super::context::STALE_RETRY));
    drop(world);
    finish(server, ctx).await;
}

/// The Release as the API server has it after a status write the scenario answered: the
/// written status, at the resourceVersion the answer gave.
fn after_write(release: &Release, status: Value, resource_version: &str) -> Release {
    let mut release = release.clone();
    release.status = Some(serde_json::from_value(status).unwrap());
    release.metadata.resource_version = Some(resource_version.into());
    release
}

fn applied_condition(status: &Value) -> Value {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Applied")
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_service_someone_else_owns_is_left_alone_and_named_in_the_status() {
    let (ctx, world, verifier) = test_context();
    let release = ReleaseBuilder::gateway().build();
    let (written, mut statuses) = tokio::sync::mpsc::unbounded_channel();
    let server = scenario(verifier, |mut api| async move {
        // Helm's Service, not Waymark's: no owner, no adopt annotation.
        let helms = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "checkout-stable", "namespace": "shop", "labels": {"app.kubernetes.io/managed-by": "Helm"}},
            "spec": {"selector": {"app": "checkout"}, "ports": [{"port": 80}]}
        });
        for reconcile in 1..=2 {
            let status = api.expect_status(if reconcile == 1 { "100" } else { "1001" }).await;
            if reconcile == 2 {
                // The refusal of the first reconcile, in the one write of the second, with an
                // event before the writes are tried again.
                assert_eq!(status["phase"], "Degraded");
                assert_eq!(status["reason"], "NotOwned");
                let applied = applied_condition(&status);
                assert_eq!(applied["status"], "False");
                assert!(applied["message"].as_str().unwrap().contains("waymark.dev/adopt"), "{applied}");
                let event = api.expect_event("NotOwned", "Warning").await;
                assert!(event["note"].as_str().unwrap().contains("Service shop/checkout-stable"), "{event}");
            } else {
                assert_eq!(applied_condition(&status), Value::Null);
            }
            written.send(status).unwrap();
            // The Services are created together: both creates come before the ownership check.
            for _ in 0..2 {
                let (body, send) = api.expect(Method::POST, &format!("{SERVICES}{CREATE}")).await;
                if body["metadata"]["name"] == "checkout-stable" {
                    respond(send, 409, &failure(409, "AlreadyExists", "services \"checkout-stable\" already exists"));
                } else {
                    respond(send, 201, &body);
                }
            }
            let (_, send) = api.expect(Method::GET, &format!("{SERVICES}/checkout-stable")).await;
            respond(send, 200, &helms);
        }
        api
    })
    .await;
    let error = reconcile_release(&release, &ctx, at(0)).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Refused {
                reason: "NotOwned",
                ..
            }
        ),
        "{error}"
    );
    let release = after_write(&release, statuses.recv().await.unwrap(), "1001");
    let error = reconcile_release(&release, &ctx, at(0)).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Refused {
                reason: "NotOwned",
                ..
            }
        ),
        "{error}"
    );
    drop(world);
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_quota_refusal_is_in_the_status_and_an_event_quoting_the_api_server() {
    let (log, _guard) = super::logs::Captured::start(super::logs::LogFormat::Json);
    let (ctx, mut world, verifier) = test_context();
    let release = ReleaseBuilder::gateway().build();
    for service in children::services(&release).unwrap() {
        world.service(service);
    }
    world.route(route(json!([{"name": "checkout-stable", "port": 8080}])));
    let quota = "deployments.apps \"checkout-stable\" is forbidden: exceeded quota: compute, requested: pods=4, used: pods=8, limited: pods=10";
    let create = format!("{DEPLOYMENTS}{CREATE}");
    let (written, mut statuses) = tokio::sync::mpsc::unbounded_channel();
    let server = scenario(verifier.holding(&release), move |mut api| async move {
        // 1: the intent, then the refused create; no second status write.
        let status = api.expect_status("100").await;
        assert_eq!(applied_condition(&status), Value::Null);
        written.send(status).unwrap();
        let (_, send) = api.expect(Method::POST, &create).await;
        respond(send, 403, &failure(403, "Forbidden", quota));
        // 2: the refusal in the one status write, an event quoting the API server before the
        // create is tried again (and refused again).
        let status = api.expect_status("1001").await;
        assert_eq!(status["phase"], "Degraded");
        assert_eq!(status["reason"], "QuotaExceeded");
        let message = status["message"].as_str().unwrap();
        assert!(
            message.starts_with("Deployment shop/checkout-stable: deployments.apps"),
            "{message}"
        );
        assert_eq!(applied_condition(&status)["status"], "False");
        written.send(status).unwrap();
        let event = api.expect_event("QuotaExceeded", "Warning").await;
        assert!(event["note"].as_str().unwrap().contains("exceeded quota"));
        let (_, send) = api.expect(Method::POST, &create).await;
        respond(send, 403, &failure(403, "Forbidden", quota));
        // 3: the same refusal says nothing new: no status write, no event; the create goes
        // through now.
        let (body, send) = api.expect(Method::POST, &create).await;
        respond(send, 201, &body);
        // 4: accepted again, in one write.
        let status = api.expect_status("10011").await;
        let applied = applied_condition(&status);
        assert_eq!(
            (&applied["status"], &applied["reason"]),
            (&json!("True"), &json!("Applied"))
        );
        assert_eq!(status["phase"], "Progressing", "{status}");
        api
    })
    .await;
    let error = reconcile_release(&release, &ctx, at(0)).await.unwrap_err();
    assert_eq!(error.metric_label(), "refused_quota");
    let retry = super::reconcile::error_policy(Arc::new(release.clone()), &error, ctx.clone());
    assert_eq!(
        retry,
        Requeue::requeue(super::context::STALE_RETRY),
        "a refusal no decision has seen is decided on again at once"
    );

    let release = after_write(&release, statuses.recv().await.unwrap(), "1001");
    let release = {
        let error = reconcile_release(&release, &ctx, at(1)).await.unwrap_err();
        let retry = super::reconcile::error_policy(Arc::new(release.clone()), &error, ctx.clone());
        assert_eq!(
            retry,
            Requeue::requeue(super::context::ERROR_BACKOFF_START),
            "once shown, the refusal is retried backing off"
        );
        after_write(&release, statuses.recv().await.unwrap(), "10011")
    };
    let requeue = reconcile_release(&release, &ctx, at(2)).await.unwrap();
    assert_eq!(
        requeue,
        Requeue::requeue(rollout::CONVERGE_POLL),
        "the status still says refused: looked at again soon"
    );
    reconcile_release(&release, &ctx, at(3)).await.unwrap();
    drop(world);
    finish(server, ctx).await;

    // One warn line per refused write, in the API server's words: the first told by the
    // Warning Event the next decision makes of it, the second (seen before) by the retry.
    let lines = log.json();
    let (told, unfielded) = levels_and_messages(&lines);
    assert_eq!(
        unfielded,
        Vec::<String>::new(),
        "every line names its Release"
    );
    assert_eq!(
        told,
        [
            format!("WARN PAY-142: Deployment shop/checkout-stable: {quota}"),
            format!("WARN write refused: Deployment shop/checkout-stable: {quota}"),
        ]
    );
    assert_eq!(
        (
            &lines[0]["reason"],
            &lines[1]["reason"],
            &lines[1]["object"]
        ),
        (
            &json!("QuotaExceeded"),
            &json!("QuotaExceeded"),
            &json!("Deployment shop/checkout-stable")
        )
    );
}

/// The API server's refusal of a create in namespace `shop` while it is being deleted (its
/// NamespaceLifecycle admission), for Service `name`.
fn terminating(name: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("services \"{name}\" is forbidden: unable to create new content in namespace shop because it is being terminated"),
        "reason": "Forbidden", "code": 403,
        "details": {"name": name, "kind": "services", "causes": [{
            "reason": "NamespaceTerminating",
            "message": "namespace shop is being terminated",
            "field": "metadata.namespace"
        }]}
    })
}

/// The namespace controller has deleted a settled Release's Services, and the API server
/// refuses to create them again: the namespace is being deleted. Not the user's to fix: no
/// status write (no Degraded, no Applied=False), no Warning Event, no failed reconcile (so no
/// warn line and no error metric), and no retry until something changes.
#[tokio::test]
async fn services_refused_in_a_terminating_namespace_are_let_go_quietly() {
    let (ctx, mut world, verifier) = test_context();
    let release = settled_release(&mut world, at(0));
    for service in children::services(&release).unwrap() {
        world
            .services
            .apply_watcher_event(&watcher::Event::Delete(service.into()));
    }
    let create = format!("{SERVICES}{CREATE}");
    let server = scenario(verifier, move |mut api| async move {
        // Each reconcile tries both Services (written together) once, and that is all.
        for _ in 0..2 {
            let mut names = Vec::new();
            for _ in 0..2 {
                let (body, send) = api.expect(Method::POST, &create).await;
                let name = body["metadata"]["name"].as_str().unwrap().to_string();
                respond(send, 403, &terminating(&name));
                names.push(name);
            }
            names.sort();
            assert_eq!(names, ["checkout-canary", "checkout-stable"]);
        }
        api
    })
    .await;
    for second in [10, 20] {
        let requeue = reconcile_release(&release, &ctx, at(second))
            .await
            .expect("a namespace going away is no failed reconcile");
        assert_eq!(requeue, Requeue::await_change(), "no retry");
    }
    drop(world);
    finish(server, ctx).await;
}

#[tokio::test]
async fn an_invalid_selector_degrades_the_release_without_failing_the_reconcile() {
    let (ctx, world, verifier) = test_context();
    let release = ReleaseBuilder::gateway()
        .selector_label("app", "payments")
        .build();
    let server = scenario(verifier.holding(&release), |mut api| async move {
        let status = api.expect_status("100").await;
        assert_eq!(status["phase"], "Degraded");
        let condition = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "SpecValid")
            .unwrap()
            .clone();
        assert_eq!(condition["status"], "False");
        let event = api.expect_event("InvalidSpec", "Warning").await;
        assert!(event["note"].as_str().unwrap().contains("spec.selector"));
        api
    })
    .await;
    let requeue = reconcile_release(&release, &ctx, at(0)).await.unwrap();
    assert_eq!(requeue, Requeue::await_change());
    drop(world);
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_missing_token_secret_is_an_error_run_naming_the_field() {
    let (ctx, world, mut verifier) = test_context();
    let mut release = ReleaseBuilder::gateway()
        .status(ReleaseStatus {
            canary_revision: Some("6f9c7d0000".into()),
            ..ReleaseStatus::default()
        })
        .build();
    release.spec.analysis = Some(
        serde_json::from_value(json!({
            "prometheus": {
                "address": "http://127.0.0.1:9",
                "bearerTokenSecret": {"name": "prometheus-token", "key": "token"}
            },
            "slo": {"objective": 99.9, "errorQuery": "e", "totalQuery": "t",
                    "burnRates": [{"long": "5m", "short": "1m", "max": 14.4}]}
        }))
        .unwrap(),
    );
    let api = tokio::spawn(async move {
        let (_, send) = verifier
            .expect(
                Method::GET,
                "/api/v1/namespaces/shop/secrets/prometheus-token",
            )
            .await;
        respond(send, 404, &failure(404, "NotFound", "not found"));
        verifier
    });
    let run = super::observe::run_analysis(&ctx, &release, "shop", at(0))
        .await
        .unwrap();
    assert_eq!(run.verdict, crate::api::Verdict::Error);
    assert_eq!(run.revision.as_deref(), Some("6f9c7d0000"));
    for named in [
        "spec.analysis.prometheus.bearerTokenSecret",
        "shop/prometheus-token",
        "not found",
    ] {
        assert!(run.summary.contains(named), "{named} in {:?}", run.summary);
    }
    let mut verifier = api.await.unwrap();
    drop(ctx);
    drop(world);
    assert!(
        verifier.0.next_request().await.is_none(),
        "no query is sent without the token"
    );
}

#[tokio::test]
async fn a_forbidden_token_secret_is_an_error_run_saying_which_role_to_bind() {
    let (ctx, world, mut server) = test_context();
    let mut release = ReleaseBuilder::gateway()
        .status(ReleaseStatus {
            canary_revision: Some("6f9c7d0000".into()),
            ..ReleaseStatus::default()
        })
        .build();
    release.spec.analysis = Some(
        serde_json::from_value(json!({
            "prometheus": {
                "address": "http://127.0.0.1:9",
                "bearerTokenSecret": {"name": "prometheus-token", "key": "token"}
            },
            "slo": {"objective": 99.9, "errorQuery": "e", "totalQuery": "t",
                    "burnRates": [{"long": "5m", "short": "1m", "max": 14.4}]}
        }))
        .unwrap(),
    );
    let api = tokio::spawn(async move {
        let (_, send) = server
            .expect(
                Method::GET,
                "/api/v1/namespaces/shop/secrets/prometheus-token",
            )
            .await;
        let forbidden = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "secrets \"prometheus-token\" is forbidden: User \"system:serviceaccount:waymark-system:waymark-controller\" cannot get resource \"secrets\" in API group \"\" in the namespace \"shop\"",
            "reason": "Forbidden", "code": 403
        });
        respond(send, 403, &forbidden);
        server
    });
    let run = super::observe::run_analysis(&ctx, &release, "shop", at(0))
        .await
        .expect("a refused Secret is the user's to fix, not a failed reconcile");
    assert_eq!(run.verdict, crate::api::Verdict::Error);
    for named in [
        "spec.analysis.prometheus.bearerTokenSecret",
        "shop/prometheus-token",
        "waymark-secret-reader",
        "cannot get resource",
    ] {
        assert!(run.summary.contains(named), "{named} in {:?}", run.summary);
    }
    let mut server = api.await.unwrap();
    drop(ctx);
    drop(world);
    assert!(server.0.next_request().await.is_none());
}

/// The Release of [`settled_release`] mid-canary at 20% (the route says so), deleted with
/// `finalizers`, the route cached with its uid and resourceVersion.
fn deleted_at_20_percent(world: &mut World, finalizers: &[&str]) -> Release {
    let mut release = settled_release(world, at(0));
    release.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(60)));
    release.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    let mut cached = route(json!([
        {"name": "checkout-stable", "port": 8080, "weight": 80},
        {"name": "checkout-canary", "port": 8080, "weight": 20}
    ]));
    cached["metadata"]["uid"] = json!("5e0c-route");
    world.route(cached);
    release
}

#[tokio::test]
async fn a_release_deleted_at_20_percent_gives_the_route_back_then_removes_only_its_finalizer() {
    let (ctx, mut world, verifier) = test_context();
    // `kubectl delete --cascade=orphan`: the garbage collector's finalizer is there too.
    let release = deleted_at_20_percent(&mut world, &["orphan", crate::api::ROUTE_FINALIZER]);
    let server = scenario(verifier, |mut api| async move {
        let body = api
            .expect_echo(Method::PATCH, &format!("{ROUTE_PATH}?{SSA}"))
            .await;
        assert_eq!(
            (
                &body["metadata"]["uid"],
                &body["metadata"]["resourceVersion"]
            ),
            (&json!("5e0c-route"), &json!("7")),
            "preconditions: never re-create a deleted route, never overwrite a newer one"
        );
        assert_eq!(
            weights(&body),
            [("checkout-stable".to_string(), None)],
            "the route as its owner wrote it: all traffic on the stable"
        );
        assert_eq!(body["spec"]["rules"][1]["backendRefs"][0]["name"], "assets");
        let event = api.expect_event("RouteRestored", "Normal").await;
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("20% on the canary"),
            "{event}"
        );
        api.expect_finalizers("100", &["orphan"], "101").await;
        // No status write, no child created or scaled for a Release that goes.
        api
    })
    .await;
    let requeue = reconcile_release(&release, &ctx, at(61)).await.unwrap();
    assert_eq!(requeue, Requeue::await_change());
    drop(world);
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_deleted_release_whose_route_api_is_gone_lets_go_with_a_warning_quoting_the_api_server() {
    let (ctx, mut world, verifier) = test_context();
    let release = deleted_at_20_percent(&mut world, &[crate::api::ROUTE_FINALIZER]);
    let server = scenario(verifier, |mut api| async move {
        let (_, send) = api
            .expect(Method::PATCH, &format!("{ROUTE_PATH}?{SSA}"))
            .await;
        respond(
            send,
            404,
            &failure(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
        let event = api.expect_event("RouteLeftAsIs", "Warning").await;
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("could not find the requested resource"),
            "{event}"
        );
        api.expect_finalizers("100", &[], "101").await;
        api
    })
    .await;
    reconcile_release(&release, &ctx, at(61)).await.unwrap();
    drop(world);
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_deleted_release_whose_route_was_deleted_lets_go_at_once() {
    let (ctx, world, verifier) = test_context();
    let mut release = ReleaseBuilder::gateway().build();
    release.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(60)));
    release.metadata.finalizers = Some(vec![crate::api::ROUTE_FINALIZER.into()]);
    let server = scenario(verifier, |mut api| async move {
        let event = api.expect_event("RouteLeftAsIs", "Warning").await;
        assert!(
            event["note"].as_str().unwrap().contains("not found"),
            "{event}"
        );
        api.expect_finalizers("100", &[], "101").await;
        api
    })
    .await;
    reconcile_release(&release, &ctx, at(61)).await.unwrap();
    drop(world);
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_deleted_release_keeps_its_finalizer_while_the_cached_route_is_older_than_the_live_one() {
    let (ctx, mut world, verifier) = test_context();
    let release = deleted_at_20_percent(&mut world, &[crate::api::ROUTE_FINALIZER]);
    let server = scenario(verifier, |mut api| async move {
        let (_, send) = api
            .expect(Method::PATCH, &format!("{ROUTE_PATH}?{SSA}"))
            .await;
        respond(
            send,
            409,
            &failure(409, "Conflict", "the object has been modified"),
        );
        api
    })
    .await;
    let requeue = reconcile_release(&release, &ctx, at(61)).await.unwrap();
    assert_eq!(requeue, Requeue::requeue(super::context::STALE_RETRY));
    drop(world);
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_settled_release_deleted_is_not_touched_at_all() {
    let (ctx, world, verifier) = test_context();
    // Settled in a world whose children are gone since: foreground deletion has the garbage
    // collector delete them first. None is created again.
    let mut release = settled_release(&mut test_context().1, at(0));
    release.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(60)));
    release.metadata.finalizers = Some(vec!["foregroundDeletion".into()]);
    drop(world);
    let server = scenario(verifier, |api| async move { api }).await;
    let requeue = reconcile_release(&release, &ctx, at(61)).await.unwrap();
    assert_eq!(requeue, Requeue::await_change());
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_settled_release_that_still_holds_the_finalizer_lets_it_go() {
    let (ctx, mut world, verifier) = test_context();
    let mut release = settled_release(&mut world, at(0));
    release.metadata.finalizers = Some(vec![
        "example.com/backup".into(),
        crate::api::ROUTE_FINALIZER.into(),
    ]);
    let server = scenario(verifier, |mut api| async move {
        // The status says nothing new: no status write, only the finalizer.
        api.expect_finalizers("100", &["example.com/backup"], "101")
            .await;
        api
    })
    .await;
    reconcile_release(&release, &ctx, at(3_600)).await.unwrap();
    drop(world);
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_missing_gateway_api_crd_is_named_instead_of_a_missing_route() {
    let (ctx, _world, _api) = test_context();
    let release = ReleaseBuilder::gateway().build();
    let namespace = release.metadata.namespace.clone().unwrap();
    let health = Arc::new(crate::controller::Health::new(false));
    let ctx = Arc::into_inner(ctx)
        .expect("one context")
        .with_health(health.clone());
    let missing_route = super::observe::route_of(&ctx, &release, &namespace);
    let Some(crate::rollout::RouteState::Unusable { message }) = missing_route else {
        panic!("{missing_route:?}");
    };
    assert!(
        !message.contains("httproutes.gateway.networking.k8s.io"),
        "{message}"
    );

    health.watch_failed(
        crate::controller::watched::Watched::HttpRoutes,
        std::time::Instant::now(),
        true,
        "404",
    );
    let no_crd = super::observe::route_of(&ctx, &release, &namespace);
    let Some(crate::rollout::RouteState::Unusable { message }) = no_crd else {
        panic!("{no_crd:?}");
    };
    assert!(
        message.starts_with(&format!(
            "HTTPRoute {namespace}/checkout (spec.traffic.gatewayAPI.httpRoute) cannot be read: the Gateway API CustomResourceDefinition httproutes.gateway.networking.k8s.io is not installed"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_token_secret_is_read_once_per_generation_and_named_in_a_condition() {
    let (ctx, mut world, verifier) = test_context();
    let settled = settled_release(&mut world, at(0));
    let mut release = ReleaseBuilder::gateway()
        .bearer_token_secret("prometheus-token", "token")
        .status(settled.status.clone().unwrap())
        .build();
    const SECRET_PATH: &str = "/api/v1/namespaces/shop/secrets/prometheus-token";
    let (written, first_status) = tokio::sync::oneshot::channel();
    let server = scenario(verifier.holding(&release), move |mut api| async move {
        // Seen for the first time: the Secret is read once, and the condition names it.
        let (_, send) = api.expect(Method::GET, SECRET_PATH).await;
        respond(
            send,
            404,
            &failure(404, "NotFound", "secrets \"prometheus-token\" not found"),
        );
        let status = api.expect_status("100").await;
        let _ = written.send(status);
        // The same generation again, at once: no read, no write, nothing.
        // A new generation: read again. Created meanwhile, so the condition turns True.
        let (_, send) = api.expect(Method::GET, SECRET_PATH).await;
        respond(
            send,
            200,
            &json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "prometheus-token", "namespace": "shop"},
                "data": {"token": "czNjcjN0"}
            }),
        );
        let status = api.expect_status("1001").await;
        let condition = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "PrometheusCredentials")
            .cloned()
            .unwrap();
        assert_eq!(condition["status"], "True", "{condition}");
        api
    })
    .await;

    let requeue = reconcile_release(&release, &ctx, at(10)).await.unwrap();
    assert_eq!(
        requeue,
        Requeue::requeue(rollout::CREDENTIALS_RECHECK),
        "looked at again while the Secret is missing"
    );
    let status = first_status.await.unwrap();
    let condition = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PrometheusCredentials")
        .cloned()
        .unwrap();
    assert_eq!(condition["status"], "False", "{condition}");
    assert_eq!(condition["reason"], "PrometheusSecretMissing");
    assert_eq!(
        condition["message"],
        "Secret shop/prometheus-token, key token (named in \
         spec.analysis.prometheus.bearerTokenSecret): not found: create it in namespace shop \
         with the key token, or name an existing Secret in \
         spec.analysis.prometheus.bearerTokenSecret"
    );
    assert_eq!(status["phase"], "Healthy", "the stable still serves");

    release.status = Some(serde_json::from_value(status).unwrap());
    release.metadata.resource_version = Some("1001".into());
    reconcile_release(&release, &ctx, at(11)).await.unwrap();
    release.metadata.generation = Some(8);
    let requeue = reconcile_release(&release, &ctx, at(12)).await.unwrap();
    assert_eq!(requeue, Requeue::await_change());
    drop(world);
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_token_secret_without_its_key_names_the_keys_it_has() {
    let (ctx, world, mut server) = test_context();
    let release = ReleaseBuilder::gateway()
        .bearer_token_secret("prometheus-token", "token")
        .build();
    let api = tokio::spawn(async move {
        let (_, send) = server
            .expect(
                Method::GET,
                "/api/v1/namespaces/shop/secrets/prometheus-token",
            )
            .await;
        respond(
            send,
            200,
            &json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "prometheus-token", "namespace": "shop"},
                "data": {"tokn": "czNjcjN0", "ca.crt": "eA=="}
            }),
        );
        server
    });
    let found = super::observe::check_credentials(&ctx, &release, "shop").await;
    assert_eq!(
        found,
        rollout::CredentialsCheck::Missing(
            "Secret shop/prometheus-token, key token (named in \
             spec.analysis.prometheus.bearerTokenSecret): the Secret has no key token (its keys \
             are ca.crt, tokn): add it, or name the right key in \
             spec.analysis.prometheus.bearerTokenSecret.key"
                .into()
        )
    );
    // Remembered: asked again only after the recheck interval.
    assert_eq!(
        super::observe::check_credentials(&ctx, &release, "shop").await,
        found
    );
    let mut server = api.await.unwrap();
    drop(ctx);
    drop(world);
    assert!(server.0.next_request().await.is_none(), "one read only");
}

/// A fake API server for [`the_simulator_predicts_the_children_the_shell_writes`]: it answers
/// every write the shell makes (creates, server-side applies, scale patches, deletes, route
/// applies, events) the way Kubernetes does, with every pod of a Deployment available at once
/// (as the simulator assumes unless pods are slow), and puts each object into the watch caches
/// as the watches would deliver it. Unlike the scripted scenarios it asserts no order: the
/// comparison is of the world the writes leave.
async fn serve_as_kubernetes(mut handle: Handle, mut world: World) {
    let mut deployments: std::collections::BTreeMap<String, Deployment> = Default::default();
    let mut services: std::collections::BTreeMap<String, Service> = Default::default();
    let mut events: std::collections::BTreeMap<String, Value> = Default::default();
    let mut route_rules = json!([{"backendRefs": [{"name": "checkout-stable", "port": 8080}]}]);
    let mut versions = 1000;
    while let Some((request, send)) = handle.next_request().await {
        versions += 1;
        let method = request.method().clone();
        let uri = request.uri().clone();
        let (path, query) = (
            uri.path().to_string(),
            uri.query().unwrap_or("").to_string(),
        );
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        if !path.starts_with("/apis/events.k8s.io/") && method != Method::DELETE {
            assert!(
                query.contains("fieldManager=waymark"),
                "{method} {uri}: every write under Waymark's field manager"
            );
        }
        let name = path.rsplit('/').next().unwrap_or_default().to_string();
        // A Deployment as the Deployment controller leaves it once every pod is available.
        let roll_out = |deployment: &mut Deployment, generation: i64, version: i32| {
            let replicas = deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1);
            deployment.metadata.generation = Some(generation);
            deployment.metadata.resource_version = Some(version.to_string());
            deployment.status = Some(DeploymentStatus {
                observed_generation: Some(generation),
                replicas: Some(replicas),
                updated_replicas: Some(replicas),
                ready_replicas: Some(replicas),
                available_replicas: Some(replicas),
                ..Default::default()
            });
        };
        let answer = match (method.clone(), path.as_str()) {
            (Method::POST, DEPLOYMENTS) => {
                let mut created: Deployment = serde_json::from_value(body).unwrap();
                created.metadata.uid = Some(format!("uid-{versions}"));
                roll_out(&mut created, 1, versions);
                deployments.insert(created.metadata.name.clone().unwrap(), created.clone());
                world.deployment(created.clone());
                (201, serde_json::to_value(created).unwrap())
            }
            (Method::PATCH, p) if p.starts_with(&format!("{DEPLOYMENTS}/")) => {
                match deployments.get(&name).cloned() {
                    None => (404, failure(404, "NotFound", "deployments.apps not found")),
                    Some(mut live) => {
                        if content_type.starts_with("application/apply-patch") {
                            let applied: Deployment = serde_json::from_value(body).unwrap();
                            live.metadata.labels = applied.metadata.labels;
                            live.metadata.annotations = applied.metadata.annotations;
                            live.spec = applied.spec;
                        } else {
                            let replicas = body["spec"]["replicas"].as_i64().unwrap();
                            live.spec.get_or_insert_with(Default::default).replicas =
                                Some(i32::try_from(replicas).unwrap());
                        }
                        let generation = live.metadata.generation.unwrap_or(1) + 1;
                        roll_out(&mut live, generation, versions);
                        deployments.insert(name.clone(), live.clone());
                        world.deployment(live.clone());
                        (200, serde_json::to_value(live).unwrap())
                    }
                }
            }
            (Method::DELETE, p) if p.starts_with(&format!("{DEPLOYMENTS}/")) => {
                match deployments.remove(&name) {
                    None => (404, failure(404, "NotFound", "deployments.apps not found")),
                    Some(gone) => {
                        world
                            .deployments
                            .apply_watcher_event(&watcher::Event::Delete(gone.clone().into()));
                        (200, serde_json::to_value(gone).unwrap())
                    }
                }
            }
            (Method::POST, SERVICES) => {
                let mut created: Service = serde_json::from_value(body).unwrap();
                created.metadata.uid = Some(format!("uid-{versions}"));
                services.insert(created.metadata.name.clone().unwrap(), created.clone());
                world.service(created.clone());
                (201, serde_json::to_value(created).unwrap())
            }
            (Method::PATCH, p) if p.starts_with(&format!("{SERVICES}/")) => {
                let mut applied: Service = serde_json::from_value(body).unwrap();
                applied.metadata.uid = services.get(&name).and_then(|s| s.metadata.uid.clone());
                services.insert(name.clone(), applied.clone());
                world.service(applied.clone());
                (200, serde_json::to_value(applied).unwrap())
            }
            (Method::PATCH, ROUTE_PATH) => {
                route_rules = body["spec"]["rules"].clone();
                let mut live = route(json!([]));
                live["spec"]["rules"] = route_rules.clone();
                world.route(live.clone());
                (200, live)
            }
            (Method::POST, EVENTS_PATH) => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or("event")
                    .to_string();
                events.insert(name, body.clone());
                (201, body)
            }
            (Method::PATCH, p) if p.starts_with(&format!("{EVENTS_PATH}/")) => {
                (200, events.get(&name).cloned().unwrap_or(body))
            }
            _ => panic!("unexpected API call: {method} {uri}"),
        };
        respond(send, answer.0, &answer.1);
    }
}

/// The simulator the rollout tests use ([`crate::rollout::fixtures::Sim`]) gives each action a
/// meaning of its own; here the same decisions also go through the real shell
/// (`apply_actions`, then `observe` over the caches the writes filled), and after every
/// decision both must see the same world: the same Deployments (revision, replicas,
/// availability), Services and route weight.
#[tokio::test]
async fn the_simulator_predicts_the_children_the_shell_writes() {
    use crate::api::ManualAction;
    use crate::rollout::fixtures::Sim;

    enum Move {
        Wait(i64),
        Ship(&'static str),
        Ask(ManualAction),
    }
    let walks: [(&str, ReleaseBuilder, Vec<Move>); 2] = [
        (
            "gateway: first release, a canary promoted, its Deployment removed",
            ReleaseBuilder::gateway(),
            vec![
                Move::Ship(V2),
                Move::Wait(121),
                Move::Ask(ManualAction::Promote),
                Move::Wait(31),
            ],
        ),
        (
            "replica split: a canary aborted, a new one promoted at once",
            ReleaseBuilder::replica_split(),
            vec![
                Move::Ship(V2),
                Move::Wait(10),
                Move::Ask(ManualAction::Abort),
                Move::Ship(crate::fixtures::V3),
                Move::Wait(121),
                Move::Ask(ManualAction::PromoteFull),
                Move::Wait(31),
            ],
        ),
    ];
    for (walk, builder, moves) in walks {
        let (ctx, mut world, ApiServerVerifier(handle, _)) = test_context();
        let release = builder.build();
        if release.spec.traffic.gateway_api.is_some() {
            world.route(route(json!([{"name": "checkout-stable", "port": 8080}])));
        }
        let server = tokio::spawn(serve_as_kubernetes(handle, world));

        let mut sim = Sim::new(release);
        let mut decisions = 0;
        let mut requests = 0;
        for next in std::iter::once(None).chain(moves.into_iter().map(Some)) {
            match next {
                None => {}
                Some(Move::Wait(seconds)) => {
                    sim.now += k8s_openapi::jiff::SignedDuration::from_secs(seconds)
                }
                Some(Move::Ship(image)) => sim.release.spec.template = template(image),
                Some(Move::Ask(action)) => {
                    requests += 1;
                    sim.request(&format!("r{requests}"), action);
                }
            }
            // Decide until only events are asked for, each decision through both.
            for _ in 0..10 {
                let decision = sim.tick(0);
                decisions += 1;
                super::apply::apply_actions(&ctx, &sim.release, &decision.actions)
                    .await
                    .unwrap_or_else(|error| {
                        panic!("{walk}: the shell refused {decision:?}: {error}")
                    });
                let seen = super::observe::observe(&ctx, &sim.release, sim.now)
                    .await
                    .unwrap();
                // The route itself is the simulator's stand-in (its rules differ from the
                // world's); what the core reads of it, the cohorts and mirrors, must agree.
                let without_route = |observed: &Observed| Observed {
                    route_object: None,
                    grpc_route_object: None,
                    ..observed.clone()
                };
                assert_eq!(
                    without_route(&seen),
                    without_route(&sim.observed),
                    "{walk}: after {:?} the shell's world (left) is not the simulator's (right)",
                    decision.actions
                );
                assert_eq!(
                    seen.route_carries_additions("checkout"),
                    sim.observed.route_carries_additions("checkout"),
                    "{walk}: cohorts and mirrors"
                );
                if decision
                    .actions
                    .iter()
                    .all(|a| matches!(a, rollout::Action::Event(_)))
                {
                    break;
                }
            }
        }
        let status = sim.status();
        assert_eq!(
            (status.phase, status.canary_revision.as_deref()),
            (Some(crate::api::Phase::Healthy), None),
            "{walk}: the walk ends settled"
        );
        assert!(decisions > 10, "{walk}: {decisions} decisions");
        drop(ctx);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the fake API server stops")
            .expect("its assertions held");
    }
}

/// Walks one Release through the real shell (`apply_actions` against [`serve_as_kubernetes`])
/// with the decisions of the simulator, capturing the controller's log as `--log-format json`
/// writes it. `moves` run after the Release is settled on `V1`; only their lines are returned.
async fn log_of_walk(builder: ReleaseBuilder, moves: Vec<LogMove>) -> Vec<Value> {
    use super::logs::{Captured, LogFormat};
    use crate::rollout::fixtures::Sim;

    let (ctx, mut world, ApiServerVerifier(handle, _)) = test_context();
    let release = builder.build();
    if release.spec.traffic.gateway_api.is_some() {
        world.route(route(json!([{"name": "checkout-stable", "port": 8080}])));
    }
    let server = tokio::spawn(serve_as_kubernetes(handle, world));
    let mut sim = Sim::new(release);
    let mut captured = None;
    for next in std::iter::once(None).chain(moves.into_iter().map(Some)) {
        match next {
            None => {}
            Some(LogMove::Wait(seconds)) => {
                sim.now += k8s_openapi::jiff::SignedDuration::from_secs(seconds)
            }
            Some(LogMove::Ship(image)) => {
                // From here on the log is captured: the canary's lines only.
                captured = Some(Captured::start(LogFormat::Json));
                sim.release.spec.template = template(image);
            }
            Some(LogMove::Ask(action)) => sim.request("r1", action),
            Some(LogMove::Analysis(verdict)) => {
                let image = crate::fixtures::V2;
                sim.observed.analysis =
                    Some(crate::rollout::fixtures::run(image, verdict, sim.now));
            }
        }
        for _ in 0..10 {
            // The shell applies a decision's actions on the Release as it read it (the status
            // before the decision), as `reconcile_release` does.
            let read = sim.release.clone();
            let decision = sim.tick(0);
            super::apply::apply_actions(&ctx, &read, &decision.actions)
                .await
                .unwrap_or_else(|error| panic!("the shell refused {decision:?}: {error}"));
            if decision
                .actions
                .iter()
                .all(|a| matches!(a, rollout::Action::Event(_)))
            {
                break;
            }
        }
    }
    let (buffer, guard) = captured.expect("the walk ships a new image");
    drop(guard);

    drop(ctx);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the fake API server stops")
        .expect("its assertions held");
    buffer.json()
}

/// What happens between two looks at a walked Release.
enum LogMove {
    Wait(i64),
    Ship(&'static str),
    Analysis(crate::api::Verdict),
    Ask(crate::api::ManualAction),
}

/// `LEVEL message` of each line, and the lines without one of the four fields.
fn levels_and_messages(lines: &[Value]) -> (Vec<String>, Vec<String>) {
    let told = lines
        .iter()
        .map(|line| {
            format!(
                "{} {}",
                line["level"].as_str().unwrap_or("?"),
                line["message"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let unfielded = lines
        .iter()
        .filter(|line| {
            ["namespace", "release", "revision", "roadmap_item"]
                .iter()
                .any(|key| !line[*key].is_string())
        })
        .map(Value::to_string)
        .collect();
    (told, unfielded)
}

#[tokio::test]
async fn one_two_step_canary_is_told_in_the_log_line_by_line_with_its_four_fields() {
    use crate::api::Verdict;
    use crate::fixtures::{V2, pause_for, revision_of};

    let lines = log_of_walk(
        ReleaseBuilder::gateway()
            .steps(vec![set_weight(20), pause_for(60)])
            .analysis(),
        vec![
            LogMove::Ship(V2),
            LogMove::Wait(30),
            LogMove::Analysis(Verdict::Passing),
            LogMove::Wait(31),
            LogMove::Wait(31),
        ],
    )
    .await;
    let (told, unfielded) = levels_and_messages(&lines);
    assert_eq!(
        unfielded,
        Vec::<String>::new(),
        "every line names its Release"
    );
    let (v1, v2) = (revision_of(crate::fixtures::V1), revision_of(V2));
    assert!(
        lines.iter().all(|line| line["namespace"] == "shop"
            && line["release"] == "checkout"
            && line["roadmap_item"] == "PAY-142"
            && line["revision"] == v2.as_str()),
        "{lines:#?}"
    );
    assert_eq!(
        told,
        [
            format!("INFO PAY-142: canary {v2} started against stable {v1}, 2 steps"),
            format!("INFO PAY-142: step 1/2: 20% of traffic on canary {v2}"),
            format!(
                "INFO PAY-142: step 2/2: 20% on canary {v2}, paused for 1m until 2026-03-01T12:01:00Z"
            ),
            format!(
                "INFO PAY-142: analysis of canary {v2}: Passing (first run), burn 0.8x over 5m \
                 (limit 14.4x), error budget 73% left; canary burns 0.8x of 14.4x over 5m and 1m \
                 (4,812 requests)"
            ),
            format!("INFO PAY-142: canary {v2} promoting: stable takes its template"),
            format!("INFO PAY-142: canary {v2} promoted"),
        ]
    );
    let reasons: Vec<&str> = lines
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "CanaryStarted",
            "StepCompleted",
            "StepPaused",
            "VerdictChanged",
            "PromotionStarted",
            "CanaryPromoted"
        ]
    );
}

#[tokio::test]
async fn a_canary_held_then_rolled_back_is_told_with_the_failing_query_and_whose_word() {
    use crate::api::{ManualAction, Verdict};
    use crate::fixtures::{V2, pause_for};

    let lines = log_of_walk(
        ReleaseBuilder::gateway()
            .steps(vec![set_weight(20), pause_for(60), set_weight(50)])
            .analysis(),
        vec![
            LogMove::Ship(V2),
            LogMove::Wait(30),
            LogMove::Analysis(Verdict::Inconclusive),
            LogMove::Wait(31),
            LogMove::Analysis(Verdict::Failing),
            LogMove::Ask(ManualAction::Promote),
            LogMove::Wait(30),
            LogMove::Analysis(Verdict::Failing),
        ],
    )
    .await;
    let (told, unfielded) = levels_and_messages(&lines);
    assert_eq!(
        unfielded,
        Vec::<String>::new(),
        "every line names its Release"
    );
    let (v1, v2) = (
        crate::fixtures::revision_of(crate::fixtures::V1),
        crate::fixtures::revision_of(V2),
    );
    let burns =
        |burn: &str| format!("canary burns {burn}x of 14.4x over 5m and 1m (4,812 requests)");
    let (low, high) = (burns("0.8"), burns("21.3"));
    assert_eq!(
        told,
        [
            format!("INFO PAY-142: canary {v2} started against stable {v1}, 3 steps"),
            format!("INFO PAY-142: step 1/3: 20% of traffic on canary {v2}"),
            format!(
                "INFO PAY-142: step 2/3: 20% on canary {v2}, paused for 1m until 2026-03-01T12:01:00Z"
            ),
            format!(
                "INFO PAY-142: analysis of canary {v2}: Inconclusive (first run), burn 0.8x over \
                 5m (limit 14.4x), error budget 73% left; {low}"
            ),
            format!(
                "INFO PAY-142: step 2/3: held at 20% on canary {v2}: latest analysis \
                 Inconclusive: {low}; pause 1m ended at 2026-03-01T12:01:00Z; the next step \
                 needs a passing analysis (or `waymark promote checkout`)"
            ),
            format!(
                "INFO PAY-142: analysis of canary {v2}: Failing (was Inconclusive), burn 21.3x \
                 over 5m (limit 14.4x), error budget 73% left; {high}"
            ),
            format!(
                "INFO PAY-142: promote request r1 by sre@example.com: canary {v2} step 2/3 finished"
            ),
            format!(
                "INFO PAY-142: step 3/3: held at 20% on canary {v2}: latest analysis Failing: \
                 {high}; moving to 50% needs a passing analysis (or `waymark promote checkout`)"
            ),
            format!(
                "INFO PAY-142: canary {v2} rolled back: 2 failing analyses in a row (failureLimit \
                 2): {high}; window 5m: burn 21.3x above limit 14.4x (query \
                 sum(rate(http_requests_total{{code=~\"5..\"}}[5m])))"
            ),
        ]
    );
}

/// A reconcile waiting for its lane's slot holds its shared cached Release and the context,
/// not the state of the reconcile it will run: at 10,000 Releases thousands wait at once.
#[tokio::test]
async fn a_reconcile_waiting_for_its_slot_holds_a_small_future() {
    let (ctx, _world, _verifier) = test_context();
    let release = ReleaseBuilder::gateway().build();
    let cached = Arc::new(super::cached::CachedRelease::try_from(release.clone()).unwrap());
    let waiting = super::reconcile::reconcile_cached(cached, ctx.clone());
    let running = reconcile(Arc::new(release), ctx);
    let (waiting, running) = (size_of_val(&waiting), size_of_val(&running));
    assert!(
        waiting <= 512,
        "a waiting reconcile is {waiting} bytes (a running one {running})"
    );
    assert!(running > waiting, "{running} against {waiting}");
}

/// A reconcile that waited for its slot works on the newest version of its Release in the
/// cache, and on nothing once the Release is gone from it.
#[tokio::test]
async fn a_reconcile_that_waited_reads_the_newest_release() {
    use super::cached::CachedRelease;
    let (ctx, _world, _verifier) = test_context();
    let mut release = ReleaseBuilder::gateway().build();
    release.metadata.resource_version = Some("1".into());
    let older = Arc::new(CachedRelease::try_from(release.clone()).unwrap());
    // Without a cache (tests passing the Release in) it is the Release given.
    assert_eq!(
        ctx.newest(&older).unwrap().metadata.resource_version,
        Some("1".into())
    );

    let (releases, mut writer) = reflector::store::<CachedRelease>();
    let ctx = Arc::try_unwrap(ctx)
        .unwrap_or_else(|_| panic!("the context is not shared yet"))
        .with_releases(releases);
    release.metadata.resource_version = Some("2".into());
    let newer = CachedRelease::try_from(release).unwrap();
    writer.apply_watcher_event(&watcher::Event::Apply(newer.clone()));
    assert_eq!(
        ctx.newest(&older).unwrap().metadata.resource_version,
        Some("2".into())
    );
    writer.apply_watcher_event(&watcher::Event::Delete(newer));
    assert!(
        ctx.newest(&older).is_none(),
        "deleted: nothing to reconcile"
    );
}
