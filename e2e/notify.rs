//! Notifications on a real API server: a ConfigMap of targets whose URLs are in a Secret, a
//! local HTTP receiver standing in for the webhook, the Slack channel and the CloudEvents
//! sink, one canary promoted and one rolled back by a real Prometheus.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use crate::canary::judged_by;
use crate::fixtures::*;
use crate::support::{Env, eventually};
use waymark::api::{ManualAction, Phase};

/// One request the receiver accepted.
#[derive(Clone, Debug)]
struct Received {
    target: String,
    content_type: String,
    body: Value,
}

/// A local receiver: `POST /hook/{target}` is recorded; a target listed in `refuse` answers
/// 500 that many times first (and those are counted, not recorded).
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    attempts: Arc<Mutex<HashMap<String, u32>>>,
    refuse: Arc<Mutex<HashMap<String, u32>>>,
}

impl Receiver {
    async fn start(self) -> SocketAddr {
        let app = axum::Router::new()
            .route("/hook/{target}", axum::routing::post(receive))
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    fn attempts(&self, target: &str) -> u32 {
        self.attempts
            .lock()
            .expect("lock")
            .get(target)
            .copied()
            .unwrap_or(0)
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    Path(target): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    *receiver
        .attempts
        .lock()
        .expect("lock")
        .entry(target.clone())
        .or_default() += 1;
    if let Some(left) = receiver.refuse.lock().expect("lock").get_mut(&target)
        && *left > 0
    {
        *left -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    eprintln!(
        "notification to {target} ({content_type}):\n{}",
        serde_json::to_string_pretty(&body).unwrap_or_default()
    );
    receiver.received.lock().expect("lock").push(Received {
        target,
        content_type,
        body,
    });
    StatusCode::OK
}

/// What one received notification is about: `(target, release, transition)`, read from each
/// payload the way its receiver would.
fn about(received: &Received) -> (String, String, String) {
    let body = &received.body;
    let (release, transition) = match received.target.as_str() {
        "webhook" => (
            body["release"].as_str().unwrap_or_default().to_string(),
            body["transition"].as_str().unwrap_or_default().to_string(),
        ),
        "events" => (
            body["source"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            body["type"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("dev.waymark.release.")
                .to_string(),
        ),
        // Slack's text: "<item> <title>: canary <rev> <what> in <ns>/<release> | ..."
        _ => {
            let text = body["text"].as_str().unwrap_or_default();
            let head = text.split(" | ").next().unwrap_or_default();
            let release = head.rsplit('/').next().unwrap_or_default().to_string();
            let transition = if head.contains(" promoted in ") {
                "promoted"
            } else if head.contains(" rolled back in ") {
                "rolled-back"
            } else {
                "other"
            };
            (release, transition.to_string())
        }
    };
    (received.target.clone(), release, transition)
}

pub async fn notifications_arrive_once_per_configured_transition_and_a_failing_target_is_retried(
    env: Env,
) {
    let (ok, bad) = ("shop-ok", "shop-bad");
    // The rolled-back canary fails 5% of its requests: a burn of 50 against 14.4.
    let Some((_metrics, prometheus)) = prometheus_judging(&env, bad, 0.05).await else {
        return;
    };
    let receiver = Receiver::default();
    // The team's channel answers 500 twice before it takes the message.
    receiver
        .refuse
        .lock()
        .expect("lock")
        .insert("team".into(), 2);
    let addr = receiver.clone().start().await;

    // As config/rbac/notifications_reader_role.yaml says: bound where the ConfigMap lives.
    bind_controller_role(&env, "waymark-notifications-reader").await;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hooks"},
        "stringData": {
            "webhook": format!("http://{addr}/hook/webhook"),
            "team": format!("http://{addr}/hook/team"),
            "events": format!("http://{addr}/hook/events"),
        }
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the Secret of URLs");
    let config = r#"
targets:
- name: everything
  type: webhook
  urlFrom: {secretKeyRef: {name: hooks, key: webhook}}
  transitions: [canary-started, paused, analysis-failing, rolled-back, promoted]
- name: team-checkout
  type: slack
  blocks: true
  default: false
  urlFrom: {secretKeyRef: {name: hooks, key: team}}
  transitions: [rolled-back, promoted]
- name: audit
  type: cloudevents
  urlFrom: {secretKeyRef: {name: hooks, key: events}}
  transitions: [rolled-back]
  releases: {selector: {matchLabels: {audited: "yes"}}}
"#;
    let configmap: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "waymark-notifications"},
        "data": {"notifications.yaml": config}
    }))
    .expect("a ConfigMap");
    Api::<ConfigMap>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &configmap)
        .await
        .expect("create the notification configuration");
    env.notify_with(&format!("{}/waymark-notifications", env.namespace))
        .await;

    // One canary that waits for `waymark promote`, named by the team's channel; one judged by
    // Prometheus, audited, naming a target the configuration lacks.
    let mut promoted = release(ok, ok, json!([{"setWeight": 50}, {"pause": {}}]));
    promoted.spec.roadmap.title = Some("One-click checkout".into());
    promoted.spec.roadmap.url = Some("https://tracker.example/E2E-2".into());
    promoted.spec.roadmap.notify = vec!["team-checkout".into()];
    let mut failing = judged_by(
        release(
            bad,
            bad,
            json!([{"setWeight": 20}, {"pause": {"duration": "10m"}}]),
        ),
        prometheus.address(),
    );
    failing.metadata.labels = Some([("audited".to_string(), "yes".to_string())].into());
    failing.spec.roadmap.notify = vec!["team-missing".into()];
    for release in [&promoted, &failing] {
        let name = release.metadata.name.as_deref().unwrap_or_default();
        create_route(&env, name, name).await;
        create_release(&env, release).await;
    }
    for name in [ok, bad] {
        wait_for_phase(&env, name, Phase::Healthy, Some("StableAvailable")).await;
    }

    ship(&env, ok, &image(2), "E2E-2").await;
    ship(&env, bad, &image(2), "E2E-3").await;
    wait_for_phase(&env, ok, Phase::Paused, Some("CanaryPauseStep")).await;
    request(&env, ok, ManualAction::Promote, "promote-1").await;
    let ok_revision = wait_for_status(&env, ok, "the canary promoted", |status| {
        status.phase == Some(Phase::Healthy)
            && status
                .history
                .first()
                .is_some_and(|entry| entry.outcome == waymark::api::Outcome::Promoted)
    })
    .await
    .history[0]
        .revision
        .clone();
    wait_for_phase(&env, bad, Phase::RolledBack, None).await;

    let expected = |received: &[Received]| {
        let mut told: Vec<(String, String, String)> = received.iter().map(about).collect();
        told.sort();
        told
    };
    let mut wanted: Vec<(String, String, String)> = [
        ("webhook", ok, "canary-started"),
        ("webhook", ok, "paused"),
        ("webhook", ok, "promoted"),
        ("webhook", bad, "canary-started"),
        ("webhook", bad, "analysis-failing"),
        ("webhook", bad, "rolled-back"),
        ("team", ok, "promoted"),
        ("events", bad, "rolled-back"),
    ]
    .iter()
    .map(|(t, r, x)| (t.to_string(), r.to_string(), x.to_string()))
    .collect();
    wanted.sort();
    eventually("every configured notification to arrive", || async {
        let told = expected(&receiver.received());
        if told.len() >= wanted.len() {
            Ok(())
        } else {
            Err(format!("{} of {}: {told:?}", told.len(), wanted.len()))
        }
    })
    .await;
    // Proof that the controller looked at both Releases again since: nothing more was sent.
    env.await_fresh_reconcile(ok).await;
    env.await_fresh_reconcile(bad).await;
    let received = receiver.received();
    assert_eq!(
        expected(&received),
        wanted,
        "exactly the configured transitions, once each"
    );
    assert_eq!(
        receiver.attempts("team"),
        3,
        "the team's channel answered 500 twice, then took it"
    );

    // The payloads, as each receiver reads them.
    let webhook_promoted = received
        .iter()
        .find(|r| about(r) == ("webhook".into(), ok.into(), "promoted".into()))
        .expect("the webhook's promotion");
    assert_eq!(webhook_promoted.content_type, "application/json");
    let body = &webhook_promoted.body;
    assert_eq!(body["revision"], ok_revision.as_str());
    assert_eq!(body["roadmap"]["item"], "E2E-2");
    assert_eq!(body["roadmap"]["title"], "One-click checkout");
    assert_eq!(body["roadmap"]["url"], "https://tracker.example/E2E-2");
    assert_eq!(body["requested"]["action"], "promote");
    assert_eq!(body["requested"]["by"], "e2e");
    assert_eq!(
        body["commands"],
        json!([
            format!("waymark status {ok} -n {}", env.namespace),
            format!("waymark postmortem {ok} -n {}", env.namespace)
        ])
    );
    let failing_note = received
        .iter()
        .find(|r| about(r) == ("webhook".into(), bad.into(), "analysis-failing".into()))
        .expect("the webhook's failing analysis");
    let summary = failing_note.body["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("Failing") && summary.contains("limit 14.4x"),
        "the numbers behind the verdict: {summary}"
    );
    // Step 1 (20%) reached: the canary is judged in its timed pause, step 2/2.
    assert_eq!(failing_note.body["step"], "2/2");
    assert_eq!(failing_note.body["weight"], 20);
    let slack = received
        .iter()
        .find(|r| r.target == "team")
        .expect("the team's message");
    assert!(
        slack.body["blocks"].is_array(),
        "blocks: true: {}",
        slack.body
    );
    let event = received
        .iter()
        .find(|r| r.target == "events")
        .expect("the CloudEvent");
    assert_eq!(event.content_type, "application/cloudevents+json");
    assert_eq!(event.body["specversion"], "1.0");
    assert_eq!(event.body["type"], "dev.waymark.release.rolled-back");
    assert_eq!(event.body["subject"], "E2E-3");
    assert!(
        event.body["id"]
            .as_str()
            .is_some_and(|id| id.ends_with("/rolled-back")),
        "{}",
        event.body["id"]
    );

    // The named target's delivery shows on its Release; a name the configuration lacks, too.
    let condition = wait_for_condition(&env, ok, "NotificationsDelivered", "Delivered").await;
    assert_eq!(condition.status, "True", "{condition:?}");
    assert!(
        condition.message.contains("team-checkout"),
        "{}",
        condition.message
    );
    let condition = wait_for_condition(
        &env,
        bad,
        "NotificationsDelivered",
        "NotificationTargetUnknown",
    )
    .await;
    assert_eq!(condition.status, "False", "{condition:?}");
    assert!(
        condition.message.contains("team-missing")
            && condition.message.contains("waymark-notifications"),
        "{}",
        condition.message
    );

    // An edit of the ConfigMap applies without a restart: the missing target added, the
    // condition's stale words go.
    let edited = format!(
        "{config}- name: team-missing\n  type: webhook\n  default: false\n  urlFrom: {{secretKeyRef: {{name: hooks, key: webhook}}}}\n"
    );
    Api::<ConfigMap>::namespaced(env.client.clone(), &env.namespace)
        .patch(
            "waymark-notifications",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"data": {"notifications.yaml": edited}})),
        )
        .await
        .expect("edit the notification configuration");
    let condition =
        wait_for_condition(&env, bad, "NotificationsDelivered", "AwaitingDelivery").await;
    assert_eq!(condition.status, "Unknown", "{condition:?}");

    let (_, metrics) = env.controller_http("/metrics").await;
    for line in [
        r#"waymark_notifications_sent_total{target="team-checkout",transition="promoted"} 1"#,
        r#"waymark_notifications_sent_total{target="everything",transition="rolled-back"} 1"#,
        r#"waymark_notifications_sent_total{target="audit",transition="rolled-back"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    // No message was given up (the counters start at 0 for every configured target).
    for target in ["everything", "team-checkout", "audit"] {
        let line = format!(r#"waymark_notification_failures_total{{target="{target}"}} 0"#);
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
}
