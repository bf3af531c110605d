//! What a notification says and the three payloads it is sent as: pure functions of the
//! Release as read, the status decided, the core's note and the time.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::{Release, ReleaseStatus, TimelineEntry, TimelineKind, template_revision};
use crate::rollout::EventNote;

use super::config::TargetKind;
use super::transition::Transition;

/// One notification, as the generic webhook receives it (and the CloudEvents `data`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The deduplication key: the same transition of the same revision of the same Release
    /// is one message, however often a reconcile says it (see [`dedup_key`]).
    pub id: String,
    /// `canary-started`, `paused`, `analysis-failing`, `rolled-back`, `promoted` or
    /// `outcome-measured`.
    pub transition: String,
    /// The Release's namespace.
    pub namespace: String,
    /// The Release's name.
    pub release: String,
    /// The roadmap item the release delivers.
    pub roadmap: RoadmapSummary,
    /// The revision (template hash) the transition is about.
    pub revision: String,
    /// The canary's step as `n/total` (the step it ended at, for a rollback or promotion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Percent of traffic on the canary (when it ended, for a rollback or promotion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// The core's reason, e.g. `CanaryRolledBack`.
    pub reason: String,
    /// The core's note: the same words as the Kubernetes Event, with the numbers behind a
    /// verdict (burn rate, window, limit, requests).
    pub summary: String,
    /// The latest analysis of the revision: its verdict and burn against the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSummary>,
    /// The latest manual action on this canary, and who asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<Requested>,
    /// Commands that show more.
    pub commands: Vec<String>,
    /// When the controller decided the transition (RFC 3339).
    pub time: String,
    /// The whole message in one line, as chat shows it.
    pub text: String,
}

/// The roadmap item, as messages name it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoadmapSummary {
    /// `spec.roadmap.item`.
    pub item: String,
    /// `spec.roadmap.title`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `spec.roadmap.url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `spec.roadmap.horizon`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub horizon: Option<String>,
    /// `spec.roadmap.kind`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// The verdict and burn of the latest analysis.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSummary {
    /// Passing, Failing, Inconclusive or Error.
    pub verdict: String,
    /// The worst burn against its limit, e.g. `50x/14.4x`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burn: Option<String>,
    /// Failing runs in a row.
    pub consecutive_failures: i32,
}

/// A person's request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Requested {
    /// The command: `promote`, `promote --full`, `abort`, `retry`.
    pub action: String,
    /// The user as the API server authenticated them, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The key a message is deduplicated by: the Release (its uid, so that a Release deleted and
/// created again under the same name is news again), the revision and the transition. A
/// pause is keyed by its step too: a canary may pause for `waymark promote` at several steps.
pub fn dedup_key(
    release: &Release,
    revision: &str,
    transition: Transition,
    step: Option<&str>,
) -> String {
    let object = release.metadata.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            release.namespace().unwrap_or_default(),
            release.name_any()
        )
    });
    match (transition, step) {
        (Transition::Paused, Some(step)) => format!(
            "{object}/{revision}/{}/step-{}",
            transition.as_str(),
            step.replace('/', "-of-")
        ),
        _ => format!("{object}/{revision}/{}", transition.as_str()),
    }
}

/// The message telling `transition` of `release` (as the reconcile read it), with `decided`
/// the status of the same decision and `note` the core's words for it.
pub fn build(
    release: &Release,
    decided: &ReleaseStatus,
    transition: Transition,
    note: &EventNote,
    now: Timestamp,
) -> Message {
    let empty = ReleaseStatus::default();
    let before = release.status.as_ref().unwrap_or(&empty);
    // A rollback or promotion clears the canary from the status: what it reached is in the
    // status as read, what it ended as in the newest history entry.
    let (canary_at, finished) = if transition.ends_the_canary() {
        (before, decided.history.first())
    } else {
        (decided, None)
    };
    let revision = match transition {
        Transition::RolledBack | Transition::Promoted => finished
            .map(|entry| entry.revision.clone())
            .or_else(|| before.canary_revision.clone()),
        Transition::OutcomeMeasured => decided.stable_revision.clone(),
        _ => decided
            .canary_revision
            .clone()
            .or_else(|| before.canary_revision.clone()),
    }
    .unwrap_or_else(|| template_revision(&release.spec.template));
    let step = canary_at.step_progress.clone();
    let weight = canary_at.canary_weight;
    // The decision's own run first (the one that rolled back counts its last failure).
    let analysis = [decided, before]
        .into_iter()
        .filter_map(|status| status.analysis.as_ref())
        .find(|analysis| analysis.revision.as_deref().is_none_or(|r| r == revision))
        .map(|analysis| AnalysisSummary {
            verdict: analysis.verdict.to_string(),
            burn: analysis.burn.clone(),
            consecutive_failures: analysis.consecutive_failures,
        });
    let timeline: &[TimelineEntry] = match finished {
        Some(entry) => &entry.timeline,
        None => &decided.timeline,
    };
    let requested = timeline
        .iter()
        .rev()
        .find(|entry| entry.kind == TimelineKind::Request)
        .and_then(|entry| {
            entry.action.map(|action| Requested {
                action: action.verb().to_string(),
                by: entry.by.clone(),
            })
        });
    let namespace = release.namespace().unwrap_or_default();
    let name = release.name_any();
    let roadmap = &release.spec.roadmap;
    let roadmap = RoadmapSummary {
        item: roadmap.item.clone(),
        title: roadmap.title.clone(),
        url: roadmap.url.clone(),
        horizon: roadmap.horizon.map(|h| h.as_str().to_string()),
        kind: roadmap.kind.map(|k| k.as_str().to_string()),
    };
    let commands = vec![
        format!("waymark status {name} -n {namespace}"),
        format!("waymark postmortem {name} -n {namespace}"),
    ];
    let mut message = Message {
        id: dedup_key(release, &revision, transition, step.as_deref()),
        transition: transition.as_str().to_string(),
        namespace,
        release: name,
        roadmap,
        revision,
        step,
        weight,
        reason: note.reason.clone(),
        summary: note.note.clone(),
        analysis,
        requested,
        commands,
        time: now.to_string(),
        text: String::new(),
    };
    message.text = text(&message);
    message
}

/// What happened, in a few words: `canary 6f9c7d rolled back`.
fn headline(message: &Message) -> String {
    let revision = &message.revision;
    match message.transition.parse::<Transition>() {
        Ok(Transition::CanaryStarted) => format!("canary {revision} started"),
        Ok(Transition::Paused) => format!("canary {revision} paused, waiting for promote"),
        Ok(Transition::AnalysisFailing) => format!("canary {revision} failing its analysis"),
        Ok(Transition::RolledBack) => format!("canary {revision} rolled back"),
        Ok(Transition::Promoted) => format!("canary {revision} promoted"),
        Ok(Transition::OutcomeMeasured) => format!("outcome of {revision} measured"),
        Err(_) => format!("{} {revision}", message.transition),
    }
}

/// The item as a person reads it: `PAY-142 One-click checkout`.
fn item_title(roadmap: &RoadmapSummary) -> String {
    match &roadmap.title {
        Some(title) => format!("{} {title}", roadmap.item),
        None => roadmap.item.clone(),
    }
}

/// Where the canary stood: `step 1/2, 20% of traffic`.
fn position(message: &Message) -> Option<String> {
    match (&message.step, message.weight) {
        (Some(step), Some(weight)) => Some(format!("step {step}, {weight}% of traffic")),
        (Some(step), None) => Some(format!("step {step}")),
        (None, Some(weight)) => Some(format!("{weight}% of traffic")),
        (None, None) => None,
    }
}

/// The one-line text of a message, as chat shows it.
pub fn text(message: &Message) -> String {
    let mut parts = vec![format!(
        "{}: {} in {}/{}",
        item_title(&message.roadmap),
        headline(message),
        message.namespace,
        message.release
    )];
    if let Some(position) = position(message) {
        parts.push(position);
    }
    parts.push(message.summary.clone());
    if let Some(requested) = &message.requested {
        parts.push(match &requested.by {
            Some(by) => format!("`waymark {}` requested by {by}", requested.action),
            None => format!("`waymark {}` requested", requested.action),
        });
    }
    if let Some(url) = &message.roadmap.url {
        parts.push(url.clone());
    }
    parts.push(
        message
            .commands
            .iter()
            .map(|command| format!("`{command}`"))
            .collect::<Vec<_>>()
            .join(" · "),
    );
    parts.join(" | ")
}

/// A request body and its content type.
#[derive(Clone, Debug, PartialEq)]
pub struct Payload {
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The JSON body.
    pub body: Value,
}

/// The CloudEvents `source` of a Release: its API path, unique in the cluster.
pub fn cloudevents_source(message: &Message) -> String {
    format!(
        "/apis/waymark.dev/v1alpha1/namespaces/{}/releases/{}",
        message.namespace, message.release
    )
}

/// The body a target of `kind` receives for `message` (`blocks`: Slack Block Kit too).
pub fn payload(kind: TargetKind, message: &Message, blocks: bool) -> Payload {
    match kind {
        TargetKind::Webhook => Payload {
            content_type: "application/json",
            body: serde_json::to_value(message).unwrap_or(Value::Null),
        },
        TargetKind::Slack => {
            let mut body = json!({ "text": message.text });
            if blocks {
                body["blocks"] = slack_blocks(message);
            }
            Payload {
                content_type: "application/json",
                body,
            }
        }
        TargetKind::CloudEvents => Payload {
            content_type: "application/cloudevents+json",
            body: json!({
                "specversion": "1.0",
                "type": format!("dev.waymark.release.{}", message.transition),
                "source": cloudevents_source(message),
                "id": message.id,
                "subject": message.roadmap.item,
                "time": message.time,
                "datacontenttype": "application/json",
                "data": serde_json::to_value(message).unwrap_or(Value::Null),
            }),
        },
    }
}

/// Slack Block Kit: a header line linking the item, the note, and the commands.
fn slack_blocks(message: &Message) -> Value {
    let title = item_title(&message.roadmap);
    let item = match &message.roadmap.url {
        Some(url) => format!("<{url}|{title}>"),
        None => title,
    };
    let mut lines = vec![format!(
        "*{item}*: {} in `{}/{}`",
        headline(message),
        message.namespace,
        message.release
    )];
    if let Some(position) = position(message) {
        lines.push(position);
    }
    lines.push(message.summary.clone());
    if let Some(requested) = &message.requested {
        lines.push(format!(
            "`waymark {}` requested by {}",
            requested.action,
            requested.by.as_deref().unwrap_or("an unknown user")
        ));
    }
    let commands = message
        .commands
        .iter()
        .map(|command| format!("`{command}`"))
        .collect::<Vec<_>>()
        .join("  ");
    json!([
        {"type": "section", "text": {"type": "mrkdwn", "text": lines.join("\n")}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": commands}]},
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        AnalysisStatus, HistoryEntry, Horizon, ManualAction, Outcome, RoadmapKind, Verdict,
    };
    use crate::fixtures::ReleaseBuilder;
    use crate::rollout::{Audience, NoteKind, Severity};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn now() -> Timestamp {
        "2026-12-06T14:00:00Z".parse().unwrap()
    }

    fn note(reason: &str, text: &str) -> EventNote {
        EventNote {
            severity: Severity::Warning,
            reason: reason.into(),
            note: text.into(),
            audience: Audience::EventAndLog,
            kind: NoteKind::StateChange,
        }
    }

    /// `shop/checkout` (uid `u-1`) mid-canary of `6f9c7d` at step 1/2 with 20%, failing.
    fn canary() -> Release {
        let mut release = ReleaseBuilder::gateway().build();
        release.metadata.uid = Some("u-1".into());
        release.spec.roadmap.title = Some("One-click checkout".into());
        release.spec.roadmap.url = Some("https://tracker.example/PAY-142".into());
        release.spec.roadmap.horizon = Some(Horizon::Now);
        release.spec.roadmap.kind = Some(RoadmapKind::Feature);
        release.status = Some(ReleaseStatus {
            canary_revision: Some("6f9c7d".into()),
            stable_revision: Some("5d8b9c".into()),
            step_progress: Some("1/2".into()),
            canary_weight: Some(20),
            analysis: Some(AnalysisStatus {
                verdict: Verdict::Failing,
                revision: Some("6f9c7d".into()),
                burn: Some("50x/14.4x".into()),
                consecutive_failures: 2,
                ..Default::default()
            }),
            ..Default::default()
        });
        release
    }

    /// The status after the rollback: the canary cleared, the history entry with an abort.
    fn rolled_back() -> ReleaseStatus {
        ReleaseStatus {
            stable_revision: Some("5d8b9c".into()),
            rolled_back_revision: Some("6f9c7d".into()),
            history: vec![HistoryEntry {
                revision: "6f9c7d".into(),
                roadmap_item: "PAY-142".into(),
                outcome: Outcome::Aborted,
                started_at: None,
                finished_at: Time(now()),
                failure_detected_at: None,
                reason: "Aborted".into(),
                message: None,
                horizon: None,
                kind: None,
                roadmap_outcome: None,
                rework: false,
                timeline: vec![crate::rollout::timeline::request(
                    Time(now()),
                    ManualAction::Abort,
                    Some("alice@example.com".into()),
                )],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_rollback_names_item_revision_step_numbers_requester_and_commands() {
        let message = build(
            &canary(),
            &rolled_back(),
            Transition::RolledBack,
            &note(
                "CanaryAborted",
                "PAY-142 (now, feature): canary 6f9c7d aborted: burn 50x over 20s (limit 14.4x)",
            ),
            now(),
        );
        assert_eq!(message.id, "u-1/6f9c7d/rolled-back");
        assert_eq!(message.revision, "6f9c7d");
        assert_eq!(message.step.as_deref(), Some("1/2"));
        assert_eq!(message.weight, Some(20));
        assert_eq!(
            message.requested,
            Some(Requested {
                action: "abort".into(),
                by: Some("alice@example.com".into())
            })
        );
        assert_eq!(
            message.text,
            "PAY-142 One-click checkout: canary 6f9c7d rolled back in shop/checkout | step 1/2, \
             20% of traffic | PAY-142 (now, feature): canary 6f9c7d aborted: burn 50x over 20s \
             (limit 14.4x) | `waymark abort` requested by alice@example.com | \
             https://tracker.example/PAY-142 | `waymark status checkout -n shop` · \
             `waymark postmortem checkout -n shop`"
        );
    }

    #[test]
    fn the_webhook_gets_every_field_as_json() {
        let message = build(
            &canary(),
            &rolled_back(),
            Transition::RolledBack,
            &note("CanaryRolledBack", "PAY-142: canary 6f9c7d rolled back"),
            now(),
        );
        let payload = payload(TargetKind::Webhook, &message, false);
        assert_eq!(payload.content_type, "application/json");
        let body = payload.body;
        assert_eq!(body["transition"], "rolled-back");
        assert_eq!(body["roadmap"]["item"], "PAY-142");
        assert_eq!(body["roadmap"]["title"], "One-click checkout");
        assert_eq!(body["roadmap"]["url"], "https://tracker.example/PAY-142");
        assert_eq!(body["roadmap"]["horizon"], "now");
        assert_eq!(body["analysis"]["verdict"], "Failing");
        assert_eq!(body["analysis"]["burn"], "50x/14.4x");
        assert_eq!(body["analysis"]["consecutiveFailures"], 2);
        assert_eq!(body["requested"]["by"], "alice@example.com");
        assert_eq!(body["commands"][0], "waymark status checkout -n shop");
        assert_eq!(body["commands"][1], "waymark postmortem checkout -n shop");
        assert_eq!(body["time"], "2026-12-06T14:00:00Z");
        assert_eq!(body["text"], message.text);
    }

    /// The message of the canary's analysis turning Failing.
    fn failing() -> Message {
        build(
            &canary(),
            &canary().status.unwrap(),
            Transition::AnalysisFailing,
            &note(
                "VerdictChanged",
                "PAY-142: analysis of canary 6f9c7d: Failing",
            ),
            now(),
        )
    }

    #[test]
    fn slack_gets_text_and_blocks_only_when_asked() {
        let message = failing();
        let plain = payload(TargetKind::Slack, &message, false).body;
        assert_eq!(plain, json!({"text": message.text}));
        let rich = payload(TargetKind::Slack, &message, true).body;
        assert_eq!(rich["text"], message.text);
        let section = rich["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(
            section.starts_with(
                "*<https://tracker.example/PAY-142|PAY-142 One-click checkout>*: canary 6f9c7d \
                 failing its analysis in `shop/checkout`"
            ),
            "{section}"
        );
        assert_eq!(rich["blocks"][1]["type"], "context");
    }

    #[test]
    fn cloudevents_are_structured_with_the_dedup_key_as_id() {
        let message = failing();
        let payload = payload(TargetKind::CloudEvents, &message, false);
        assert_eq!(payload.content_type, "application/cloudevents+json");
        let body = payload.body;
        assert_eq!(body["specversion"], "1.0");
        assert_eq!(body["type"], "dev.waymark.release.analysis-failing");
        assert_eq!(
            body["source"],
            "/apis/waymark.dev/v1alpha1/namespaces/shop/releases/checkout"
        );
        assert_eq!(body["id"], "u-1/6f9c7d/analysis-failing");
        assert_eq!(body["subject"], "PAY-142");
        assert_eq!(body["time"], "2026-12-06T14:00:00Z");
        assert_eq!(body["datacontenttype"], "application/json");
        assert_eq!(body["data"]["revision"], "6f9c7d");
        assert_eq!(body["data"]["step"], "1/2");
    }

    #[test]
    fn the_revision_is_the_one_the_transition_is_about() {
        let release = canary();
        let started = ReleaseStatus {
            canary_revision: Some("7a7a7a".into()),
            ..Default::default()
        };
        let start = note("CanaryStarted", "PAY-142: canary 7a7a7a started");
        let cases = [
            (Transition::CanaryStarted, started.clone(), "7a7a7a"),
            (Transition::RolledBack, rolled_back(), "6f9c7d"),
            (Transition::OutcomeMeasured, rolled_back(), "5d8b9c"),
        ];
        for (transition, decided, revision) in cases {
            let message = build(&release, &decided, transition, &start, now());
            assert_eq!(message.revision, revision, "{transition}");
        }
    }

    #[test]
    fn each_pause_step_is_news_but_a_repeated_transition_is_not() {
        let release = canary();
        let paused = |step| dedup_key(&release, "6f9c7d", Transition::Paused, Some(step));
        assert_ne!(paused("2/4"), paused("4/4"));
        assert_eq!(paused("2/4"), "u-1/6f9c7d/paused/step-2-of-4");
        assert_eq!(
            dedup_key(&release, "6f9c7d", Transition::Promoted, Some("4/4")),
            "u-1/6f9c7d/promoted"
        );
        let mut unnamed = release.clone();
        unnamed.metadata.uid = None;
        assert_eq!(
            dedup_key(&unnamed, "6f9c7d", Transition::Promoted, None),
            "shop/checkout/6f9c7d/promoted"
        );
    }
}
