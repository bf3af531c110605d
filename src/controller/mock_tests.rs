//! Mock-API tests of the shell: every API call the controller makes for a hand-made
//! [`Decision`], asserted by method, path, query and body.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::fixtures::ReleaseBuilder;
use super::metrics::Metrics;
use super::reconcile::{Context, apply_actions, reconcile_release, write_status};
use crate::api::{ManualAction, ManualRequest, Phase, ReleaseStatus};
use crate::rollout::{Action, Decision, EventNote, Severity};
use crate::traffic::Router;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

const SSA: &str = "&force=true&fieldManager=waymark";
const ROUTE_PATH: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/shop/deployments";
const SERVICES: &str = "/api/v1/namespaces/shop/services";
const STATUS_PATH: &str = "/apis/waymark.dev/v1alpha1/namespaces/shop/releases/checkout/status";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

/// What the API server should see, in order.
enum Scenario {
    /// Services stable and canary, then the stable Deployment, an event, the status.
    FirstRelease,
    /// The canary Deployment at the new revision, then the status.
    CanaryCreated,
    /// Read the route, write it with stable 90 / canary 10, then the status.
    SetWeight,
    /// Read the route, write canary weight 0, then scale the canary to 0, event, status.
    RollbackWeightFirst,
    /// The route write gets a 409; read again and write again, then the status.
    RouteConflictRetried,
    /// An invalid spec: a Warning event naming the field, then the status.
    InvalidSpecReported,
    /// A reconcile of a new Release: reads the world (nothing there yet), then does what
    /// [`Scenario::FirstRelease`] does for the template's real revision.
    FirstReleaseReconciled(String),
    /// A reconcile of a settled Release: reads the world and writes nothing.
    SettledReadsOnly(Value, Value, Value),
    /// No call at all.
    RadioSilence,
}

struct ApiServerVerifier(Handle);

fn test_context() -> (Arc<Context>, ApiServerVerifier) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let reporter = Reporter {
        controller: "waymark".into(),
        instance: None,
    };
    let ctx = Context {
        client: client.clone(),
        recorder: Recorder::new(client, reporter),
        metrics: Arc::new(Metrics::default()),
    };
    (Arc::new(ctx), ApiServerVerifier(handle))
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

fn conflict() -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the object has been modified", "reason": "Conflict", "code": 409
    })
}

fn not_found() -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "not found", "reason": "NotFound", "code": 404
    })
}

fn route(resource_version: &str, backend_refs: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "checkout", "namespace": "shop", "resourceVersion": resource_version},
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
        assert_eq!(request.method(), method, "method of the call to {uri}");
        assert_eq!(request.uri().to_string(), uri);
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (body, send)
    }

    /// The next request must be a GET of `path`, answered 404 Not Found.
    async fn expect_missing(&mut self, path: &str) {
        let (_, send) = self.expect(Method::GET, path).await;
        respond(send, 404, &not_found());
    }

    /// The next request must be a GET of `path`, answered with `object`.
    async fn expect_get(&mut self, path: &str, object: Value) {
        let (_, send) = self.expect(Method::GET, path).await;
        respond(send, 200, &object);
    }

    /// The next request must be an apply/patch/put that we answer by echoing its body.
    async fn expect_echo(&mut self, method: Method, uri: &str) -> Value {
        let (body, send) = self.expect(method, uri).await;
        respond(send, 200, &body);
        body
    }

    async fn expect_event(&mut self, reason: &str, kind: &str) -> Value {
        let (body, send) = self.expect(Method::POST, &format!("{EVENTS_PATH}?")).await;
        assert_eq!(body["reason"], reason);
        assert_eq!(body["type"], kind);
        assert!(
            body["note"].as_str().unwrap().contains("PAY-142"),
            "every event names the roadmap item: {body}"
        );
        assert_eq!(body["regarding"]["kind"], "Release");
        respond(send, 201, &body);
        body
    }

    async fn expect_status(&mut self) -> Value {
        let (body, send) = self
            .expect(Method::PATCH, &format!("{STATUS_PATH}?{SSA}"))
            .await;
        assert_eq!(body["apiVersion"], "waymark.dev/v1alpha1");
        assert_eq!(body["kind"], "Release");
        assert!(
            body["status"].get("request").is_none(),
            "the CLI owns status.request: {body}"
        );
        let mut release = serde_json::to_value(ReleaseBuilder::new("checkout").build()).unwrap();
        release["status"] = body["status"].clone();
        respond(send, 200, &release);
        body["status"].clone()
    }

    async fn expect_route_get(&mut self, resource_version: &str, backend_refs: Value) {
        let (_, send) = self.expect(Method::GET, ROUTE_PATH).await;
        respond(send, 200, &route(resource_version, backend_refs));
    }

    async fn expect_route_put(&mut self) -> (Value, Responder) {
        self.expect(Method::PUT, &format!("{ROUTE_PATH}?&fieldManager=waymark"))
            .await
    }

    fn run(mut self, scenario: Scenario) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            match scenario {
                Scenario::FirstRelease => self.first_release("5d8b9c0000").await,
                Scenario::FirstReleaseReconciled(revision) => {
                    self.expect_missing(&format!("{DEPLOYMENTS}/checkout-stable"))
                        .await;
                    self.expect_missing(&format!("{DEPLOYMENTS}/checkout-canary"))
                        .await;
                    // The first missing Service settles `services_ready`.
                    self.expect_missing(&format!("{SERVICES}/checkout-stable"))
                        .await;
                    self.expect_route_get(
                        "1",
                        json!([{"name": "checkout-stable", "port": 80, "weight": 1}]),
                    )
                    .await;
                    self.first_release(&revision).await;
                }
                Scenario::SettledReadsOnly(stable, stable_service, canary_service) => {
                    self.expect_get(&format!("{DEPLOYMENTS}/checkout-stable"), stable)
                        .await;
                    self.expect_missing(&format!("{DEPLOYMENTS}/checkout-canary"))
                        .await;
                    self.expect_get(&format!("{SERVICES}/checkout-stable"), stable_service)
                        .await;
                    self.expect_get(&format!("{SERVICES}/checkout-canary"), canary_service)
                        .await;
                    self.expect_route_get(
                        "1",
                        json!([{"name": "checkout-stable", "port": 80, "weight": 1}]),
                    )
                    .await;
                }
                Scenario::CanaryCreated => self.canary_created().await,
                Scenario::SetWeight => self.set_weight().await,
                Scenario::RollbackWeightFirst => self.rollback_weight_first().await,
                Scenario::RouteConflictRetried => self.route_conflict_retried().await,
                Scenario::InvalidSpecReported => self.invalid_spec_reported().await,
                Scenario::RadioSilence => {}
            }
            // Nothing may follow the scenario: once the client is dropped, the channel ends.
            if let Some((request, _)) = self.0.next_request().await {
                panic!(
                    "unexpected API call after the scenario: {} {}",
                    request.method(),
                    request.uri()
                );
            }
        })
    }

    async fn first_release(&mut self, revision: &str) {
        for role in ["stable", "canary"] {
            let service = self
                .expect_echo(Method::PATCH, &format!("{SERVICES}/checkout-{role}?{SSA}"))
                .await;
            assert_eq!(service["kind"], "Service");
            assert_eq!(
                service["spec"]["selector"],
                json!({"waymark.dev/release": "checkout", "waymark.dev/role": role})
            );
            assert_eq!(service["spec"]["ports"][0]["port"], 8080);
            assert_eq!(
                service["metadata"]["ownerReferences"][0]["controller"],
                true
            );
        }
        let deployment = self
            .expect_echo(
                Method::PATCH,
                &format!("{DEPLOYMENTS}/checkout-stable?{SSA}"),
            )
            .await;
        assert_eq!(deployment["kind"], "Deployment");
        assert_eq!(deployment["spec"]["replicas"], 4);
        assert_eq!(
            deployment["metadata"]["labels"]["waymark.dev/revision"],
            revision
        );
        assert_eq!(
            deployment["spec"]["template"]["metadata"]["labels"]["waymark.dev/role"],
            "stable"
        );
        assert_eq!(
            deployment["metadata"]["ownerReferences"][0]["kind"],
            "Release"
        );
        self.expect_event("StableCreated", "Normal").await;
        let status = self.expect_status().await;
        assert_eq!(status["phase"], "Healthy");
        assert_eq!(status["stableRevision"], revision);
    }

    async fn canary_created(&mut self) {
        let deployment = self
            .expect_echo(
                Method::PATCH,
                &format!("{DEPLOYMENTS}/checkout-canary?{SSA}"),
            )
            .await;
        assert_eq!(deployment["spec"]["replicas"], 1);
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            "shop/checkout:2.0.0"
        );
        assert_eq!(
            deployment["spec"]["selector"]["matchLabels"]["waymark.dev/role"],
            "canary"
        );
        let status = self.expect_status().await;
        assert_eq!(status["canaryRevision"], "6f9c7d0000");
    }

    async fn set_weight(&mut self) {
        self.expect_route_get("7", json!([{"name": "checkout-stable", "port": 80}]))
            .await;
        let (body, send) = self.expect_route_put().await;
        assert_eq!(body["metadata"]["resourceVersion"], "7", "optimistic write");
        assert_eq!(
            weights(&body),
            [
                ("checkout-stable".to_string(), Some(90)),
                ("checkout-canary".to_string(), Some(10)),
            ]
        );
        assert_eq!(body["spec"]["rules"][0]["backendRefs"][1]["port"], 80);
        assert_eq!(
            body["spec"]["rules"][1],
            route("7", json!(null))["spec"]["rules"][1],
            "the other rule is untouched"
        );
        assert_eq!(body["spec"]["parentRefs"], json!([{"name": "public"}]));
        respond(send, 200, &body);
        let status = self.expect_status().await;
        assert_eq!(status["canaryWeight"], 10);
    }

    async fn rollback_weight_first(&mut self) {
        self.expect_route_get(
            "8",
            json!([
                {"name": "checkout-stable", "port": 80, "weight": 50},
                {"name": "checkout-canary", "port": 80, "weight": 50}
            ]),
        )
        .await;
        let (body, send) = self.expect_route_put().await;
        assert_eq!(
            weights(&body),
            [
                ("checkout-stable".to_string(), Some(100)),
                ("checkout-canary".to_string(), Some(0)),
            ]
        );
        respond(send, 200, &body);
        let scale = self
            .expect_echo(
                Method::PATCH,
                &format!("{DEPLOYMENTS}/checkout-canary?&fieldManager=waymark"),
            )
            .await;
        assert_eq!(scale, json!({"spec": {"replicas": 0}}), "replicas only");
        self.expect_event("CanaryRolledBack", "Warning").await;
        let status = self.expect_status().await;
        assert_eq!(status["phase"], "RolledBack");
    }

    async fn route_conflict_retried(&mut self) {
        self.expect_route_get("1", json!([{"name": "checkout-stable", "port": 80}]))
            .await;
        let (_, send) = self.expect_route_put().await;
        respond(send, 409, &conflict());
        self.expect_route_get(
            "2",
            json!([{"name": "checkout-stable", "port": 80, "weight": 3}]),
        )
        .await;
        let (body, send) = self.expect_route_put().await;
        assert_eq!(
            body["metadata"]["resourceVersion"], "2",
            "the retry writes over the fresh copy"
        );
        assert_eq!(
            weights(&body),
            [
                ("checkout-stable".to_string(), Some(50)),
                ("checkout-canary".to_string(), Some(50)),
            ]
        );
        respond(send, 200, &body);
    }

    async fn invalid_spec_reported(&mut self) {
        let event = self.expect_event("InvalidSpec", "Warning").await;
        assert!(event["note"].as_str().unwrap().contains("spec.selector"));
        let status = self.expect_status().await;
        assert_eq!(status["phase"], "Degraded");
        assert_eq!(status["conditions"][0]["type"], "SpecValid");
        assert_eq!(status["conditions"][0]["status"], "False");
    }
}

/// Run the shell half against the verifier and wait for the scenario to finish.
async fn finish(server: tokio::task::JoinHandle<()>, ctx: Arc<Context>) {
    // The scenario ends when every client is gone: drop ours.
    drop(ctx);
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("the scenario finished in time")
        .expect("the scenario's assertions held");
}

fn note(severity: Severity, reason: &str) -> Action {
    Action::Event(EventNote {
        severity,
        reason: reason.into(),
        note: format!("PAY-142: {reason}"),
    })
}

fn decision(actions: Vec<Action>, status: ReleaseStatus) -> Decision {
    Decision {
        actions,
        status,
        requeue_after: None,
    }
}

async fn apply(ctx: &Context, release: &crate::api::Release, decision: &Decision) {
    let router = Router::for_release(ctx.client.clone(), release);
    apply_actions(ctx, release, &router, &decision.actions)
        .await
        .unwrap();
    write_status(ctx, release, decision.status.clone(), false)
        .await
        .unwrap();
}

#[tokio::test]
async fn first_release_applies_services_then_the_stable_deployment() {
    let (ctx, verifier) = test_context();
    let server = verifier.run(Scenario::FirstRelease);
    let release = ReleaseBuilder::new("checkout").build();
    let decision = decision(
        vec![
            Action::ApplyServices,
            Action::ApplyStable {
                revision: "5d8b9c0000".into(),
                replicas: 4,
            },
            note(Severity::Normal, "StableCreated"),
        ],
        ReleaseStatus {
            phase: Some(Phase::Healthy),
            stable_revision: Some("5d8b9c0000".into()),
            ..ReleaseStatus::default()
        },
    );
    apply(&ctx, &release, &decision).await;
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_new_template_applies_the_canary_with_the_new_image() {
    let (ctx, verifier) = test_context();
    let server = verifier.run(Scenario::CanaryCreated);
    let old = ReleaseStatus {
        phase: Some(Phase::Healthy),
        stable_revision: Some("5d8b9c0000".into()),
        ..ReleaseStatus::default()
    };
    let release = ReleaseBuilder::new("checkout")
        .image("shop/checkout:2.0.0")
        .status(old.clone())
        .build();
    let new = ReleaseStatus {
        phase: Some(Phase::Progressing),
        canary_revision: Some("6f9c7d0000".into()),
        ..old
    };
    let decision = decision(
        vec![Action::ApplyCanary {
            revision: "6f9c7d0000".into(),
            replicas: 1,
        }],
        new,
    );
    apply(&ctx, &release, &decision).await;
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_set_weight_step_writes_exactly_the_stable_and_canary_weights() {
    let (ctx, verifier) = test_context();
    let server = verifier.run(Scenario::SetWeight);
    let release = ReleaseBuilder::new("checkout").build();
    let decision = decision(
        vec![Action::SetWeight { canary_weight: 10 }],
        ReleaseStatus {
            phase: Some(Phase::Progressing),
            canary_weight: Some(10),
            ..ReleaseStatus::default()
        },
    );
    apply(&ctx, &release, &decision).await;
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_rollback_sets_weight_zero_before_scaling_the_canary_down() {
    let (ctx, verifier) = test_context();
    let server = verifier.run(Scenario::RollbackWeightFirst);
    let release = ReleaseBuilder::new("checkout").build();
    let decision = decision(
        vec![
            Action::SetWeight { canary_weight: 0 },
            Action::ScaleCanary { replicas: 0 },
            note(Severity::Warning, "CanaryRolledBack"),
        ],
        ReleaseStatus {
            phase: Some(Phase::RolledBack),
            canary_weight: Some(0),
            ..ReleaseStatus::default()
        },
    );
    apply(&ctx, &release, &decision).await;
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_conflicting_route_write_is_retried_on_a_fresh_copy() {
    let (ctx, verifier) = test_context();
    let server = verifier.run(Scenario::RouteConflictRetried);
    let release = ReleaseBuilder::new("checkout").build();
    let router = Router::for_release(ctx.client.clone(), &release);
    apply_actions(
        &ctx,
        &release,
        &router,
        &[Action::SetWeight { canary_weight: 50 }],
    )
    .await
    .unwrap();
    drop(router);
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_no_op_reconcile_makes_no_write() {
    let (ctx, verifier) = test_context();
    let server = verifier.run(Scenario::RadioSilence);
    let mut status = ReleaseStatus {
        phase: Some(Phase::Healthy),
        stable_revision: Some("5d8b9c0000".into()),
        ..ReleaseStatus::default()
    };
    super::status::set_condition(
        &mut status.conditions,
        "Available",
        super::status::Truth::True,
        "StableAvailable",
        String::new(),
        Some(1),
        Timestamp::from_second(100).unwrap(),
    );
    // The CLI's request sits in the stored status; the core's status leaves it out.
    let mut stored = status.clone();
    stored.request = Some(ManualRequest {
        id: "r1".into(),
        action: ManualAction::Promote,
        revision: None,
        requested_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(50).unwrap(),
        ),
        requested_by: None,
    });
    let release = ReleaseBuilder::new("checkout").status(stored).build();
    // The core restamps the condition; only the timestamp differs.
    let mut new = status;
    new.conditions[0].last_transition_time =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::from_second(900).unwrap());
    let router = Router::for_release(ctx.client.clone(), &release);
    apply_actions(&ctx, &release, &router, &[]).await.unwrap();
    let wrote = write_status(&ctx, &release, new, false).await.unwrap();
    assert!(!wrote);
    drop(router);
    finish(server, ctx).await;
}

#[tokio::test]
async fn an_invalid_selector_degrades_the_release_without_failing_the_reconcile() {
    let (ctx, verifier) = test_context();
    let server = verifier.run(Scenario::InvalidSpecReported);
    let release = ReleaseBuilder::new("checkout")
        .selector_label("app", "payments")
        .build();
    let requeue = reconcile_release(&release, &ctx, Timestamp::from_second(1_000).unwrap())
        .await
        .unwrap();
    assert_eq!(requeue, kube::runtime::controller::Action::await_change());
    assert_eq!(release.name_any(), "checkout");
    finish(server, ctx).await;
}

#[tokio::test]
async fn an_invalid_spec_already_reported_is_not_reported_again() {
    let (ctx, verifier) = test_context();
    let server = verifier.run(Scenario::RadioSilence);
    let release = ReleaseBuilder::new("checkout")
        .selector_label("app", "payments")
        .build();
    let error = super::status::validate_spec(&release).unwrap_err();
    let reported =
        super::status::invalid_spec_status(&release, &error, Timestamp::from_second(1).unwrap());
    let release = ReleaseBuilder::new("checkout")
        .selector_label("app", "payments")
        .status(reported)
        .build();
    reconcile_release(&release, &ctx, Timestamp::from_second(2_000).unwrap())
        .await
        .unwrap();
    finish(server, ctx).await;
}

// ----- through `reconcile_release`, with the real rollout core -----

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap()
}

#[tokio::test]
async fn reconciling_a_new_release_reads_the_world_then_creates_the_stable() {
    let (ctx, verifier) = test_context();
    let release = ReleaseBuilder::new("checkout").build();
    let revision = crate::api::template_revision(&release.spec.template);
    let server = verifier.run(Scenario::FirstReleaseReconciled(revision));
    reconcile_release(&release, &ctx, at(1_000)).await.unwrap();
    finish(server, ctx).await;
}

#[tokio::test]
async fn reconciling_a_settled_release_writes_nothing() {
    use super::children;
    use crate::api::Role;
    use crate::rollout::{Observed, RouteState};

    let (ctx, verifier) = test_context();
    let release = ReleaseBuilder::new("checkout").build();
    let revision = crate::api::template_revision(&release.spec.template);
    let mut stable = children::deployment(&release, Role::Stable, &revision, 4).unwrap();
    stable.metadata.generation = Some(1);
    stable.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(4),
        updated_replicas: Some(4),
        ready_replicas: Some(4),
        available_replicas: Some(4),
        ..Default::default()
    });
    let now = at(2_000);

    // What the core concludes from this world; stored, it must lead to no write at all.
    let observed = Observed {
        stable: Some(super::reconcile::workload_state(&stable)),
        canary: None,
        services_ready: true,
        route: Some(RouteState::Ready { canary_weight: 0 }),
        analysis: None,
    };
    let settled = crate::rollout::decide(&release, &observed, now);
    assert!(
        !settled
            .actions
            .iter()
            .any(|a| matches!(a, Action::ApplyStable { .. })),
        "the world already matches: {:?}",
        settled.actions
    );
    let mut stored = settled.status.clone();
    super::status::set_condition(
        &mut stored.conditions,
        super::status::CONDITION_SPEC_VALID,
        super::status::Truth::True,
        "SpecValid",
        String::new(),
        Some(1),
        now,
    );
    let release = ReleaseBuilder::new("checkout").status(stored).build();

    let server = verifier.run(Scenario::SettledReadsOnly(
        serde_json::to_value(&stable).unwrap(),
        serde_json::to_value(children::service(&release, Some(Role::Stable)).unwrap()).unwrap(),
        serde_json::to_value(children::service(&release, Some(Role::Canary)).unwrap()).unwrap(),
    ));
    reconcile_release(&release, &ctx, now).await.unwrap();
    finish(server, ctx).await;
}

#[tokio::test]
async fn a_missing_token_secret_is_an_error_run_naming_the_field() {
    let (ctx, mut server) = test_context();
    let mut release = ReleaseBuilder::new("checkout")
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
        server
            .expect_missing("/api/v1/namespaces/shop/secrets/prometheus-token")
            .await;
        server
    });
    let run = super::reconcile::run_analysis(&ctx, &release, "shop")
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
    let mut server = api.await.unwrap();
    drop(ctx);
    assert!(
        server.0.next_request().await.is_none(),
        "no query is sent without the token"
    );
}

#[tokio::test]
async fn a_forbidden_token_secret_is_an_error_run_saying_which_role_to_bind() {
    let (ctx, mut server) = test_context();
    let mut release = ReleaseBuilder::new("checkout")
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
    let run = super::reconcile::run_analysis(&ctx, &release, "shop")
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
    assert!(server.0.next_request().await.is_none());
}
