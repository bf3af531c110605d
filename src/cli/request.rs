//! Manual actions (`promote`, `abort`, `retry`): whether the release accepts them now (the rule
//! in [`crate::rollout::manual`], the same one the controller applies), and the request written
//! to the Release's status subresource for the controller to act on.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{ManualAction, ManualRequest, Release};
use crate::rollout::manual;

/// Why a manual action is refused before anything is written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot {verb} {namespace}/{name}: {why}; {instead}")]
pub struct Refusal {
    /// The command, as typed (`promote`, `abort`, `retry`).
    pub verb: &'static str,
    /// The Release's namespace.
    pub namespace: String,
    /// The Release's name.
    pub name: String,
    /// What is in the way, in words.
    pub why: String,
    /// What to do instead.
    pub instead: String,
}

/// The command a person types for `action`.
pub fn verb(action: ManualAction) -> &'static str {
    action.verb()
}

/// Build the request for `action` on `release`, or refuse what the controller would not act
/// on, saying why and what to do instead.
pub fn build_request(
    release: &Release,
    action: ManualAction,
    now: Timestamp,
    requested_by: Option<String>,
) -> Result<ManualRequest, Refusal> {
    let accepted = manual::judge(release, action).map_err(|refused| Refusal {
        verb: verb(action),
        namespace: release.metadata.namespace.clone().unwrap_or_default(),
        name: release.metadata.name.clone().unwrap_or_default(),
        why: refused.why,
        instead: refused.instead,
    })?;
    let id = format!("{}-{}", now.as_nanosecond(), std::process::id());
    Ok(accepted.request(id, Time(now), requested_by))
}

/// The merge patch for the status subresource that carries `request`.
///
/// Only `status.request` is sent: the controller owns every other status field. A merge patch
/// keeps the fields it does not name, so every field of the request is named (an absent one
/// as null): an older request's `step` or `revision` must not survive into this one.
pub fn request_patch(request: &ManualRequest) -> serde_json::Value {
    let mut fields = serde_json::json!({
        "id": null, "action": null, "revision": null, "stage": null, "step": null,
        "requestedAt": null, "requestedBy": null,
    });
    if let (Some(fields), Ok(serde_json::Value::Object(set))) =
        (fields.as_object_mut(), serde_json::to_value(request))
    {
        fields.extend(set);
    }
    serde_json::json!({ "status": { "request": fields } })
}

/// What the person is told once the request is written: what the controller will do.
pub fn confirmation(release: &Release, request: &ManualRequest) -> String {
    let name = release.metadata.name.as_deref().unwrap_or_default();
    let item = &release.spec.roadmap.item;
    let target = request
        .revision
        .as_deref()
        .map(|revision| format!(" (revision {revision})"))
        .unwrap_or_default();
    let what = manual::judge(release, request.action)
        .map(|accepted| format!(": {}", accepted.what))
        .unwrap_or_default();
    format!(
        "{} requested for release {name}{target}, roadmap item {item}{what}; the controller acts on its next reconcile",
        verb(request.action)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Phase, ReleaseStage};
    use crate::cli::fixtures::{canary_release, healthy_release, release_in};

    fn now() -> Timestamp {
        "2026-11-21T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn promote_at_a_pause_targets_the_canary_and_records_where_it_stood() {
        let release = canary_release(Phase::Paused, 3);
        let canary = release.status.as_ref().unwrap().canary_revision.clone();
        let request = build_request(&release, ManualAction::Promote, now(), None).unwrap();
        assert_eq!(request.action, ManualAction::Promote);
        assert_eq!(request.revision, canary);
        assert_eq!(request.stage, Some(ReleaseStage::Canary));
        assert_eq!(request.step, Some(3));
        assert_eq!(request.requested_at, Time(now()));
    }

    #[test]
    fn a_refusal_names_the_release_says_why_and_what_to_do_instead() {
        let refusal =
            build_request(&healthy_release(), ManualAction::PromoteFull, now(), None).unwrap_err();
        assert_eq!(refusal.verb, "promote --full");
        assert_eq!(
            refusal.to_string(),
            format!(
                "cannot promote --full shop/checkout: no canary is in progress: stable {} runs the spec's template; to ship a new revision change spec.template; its canary can then be promoted",
                crate::api::template_revision(&healthy_release().spec.template)
            )
        );
    }

    #[test]
    fn abort_during_a_promotion_is_refused_with_how_to_go_back() {
        let mut release = canary_release(Phase::Progressing, 4);
        let status = release.status.as_mut().unwrap();
        status.stable_revision = status.canary_revision.clone();
        let refusal = build_request(&release, ManualAction::Abort, now(), None).unwrap_err();
        assert!(refusal.why.contains("is being promoted"), "{refusal}");
        assert!(
            refusal
                .instead
                .contains("apply the previous template as a new revision"),
            "{refusal}"
        );
    }

    #[test]
    fn a_release_never_reconciled_is_refused_with_that_reason() {
        let mut release = release_in(Phase::Healthy, None);
        release.status = None;
        let refusal = build_request(&release, ManualAction::Promote, now(), None).unwrap_err();
        assert!(
            refusal.why.contains("has not reconciled it yet"),
            "{}",
            refusal.why
        );
        assert!(
            refusal.instead.contains("`waymark status checkout`"),
            "{}",
            refusal.instead
        );
    }

    #[test]
    fn the_patch_carries_only_the_request_and_clears_what_it_does_not_set() {
        let request = build_request(
            &canary_release(Phase::Paused, 3),
            ManualAction::Abort,
            now(),
            None,
        )
        .unwrap();
        let mut bare = request.clone();
        bare.step = None;
        bare.stage = None;
        let patch = request_patch(&bare);
        let status = patch["status"].as_object().unwrap();
        assert_eq!(status.keys().collect::<Vec<_>>(), ["request"]);
        assert_eq!(status["request"]["action"], "Abort");
        assert_eq!(
            status["request"]["revision"],
            request.revision.clone().unwrap()
        );
        assert_eq!(status["request"]["requestedAt"], "2026-11-21T12:00:00Z");
        // A merge patch keeps what it does not name: an earlier request's step must go.
        assert_eq!(status["request"]["step"], serde_json::Value::Null);
        assert_eq!(status["request"]["stage"], serde_json::Value::Null);
        assert_eq!(status["request"]["requestedBy"], serde_json::Value::Null);
        let full = request_patch(&request);
        assert_eq!(full["status"]["request"]["stage"], "Canary");
        assert_eq!(full["status"]["request"]["step"], 3);
    }

    #[test]
    fn the_confirmation_says_what_the_controller_will_do() {
        let release = canary_release(Phase::Paused, 3);
        let request = build_request(&release, ManualAction::Promote, now(), None).unwrap();
        let text = confirmation(&release, &request);
        assert!(
            text.contains("step 4/4 of canary")
                && text.contains("ends; it is promoted once an analysis passes"),
            "{text}"
        );
    }

    #[test]
    fn two_requests_get_different_ids() {
        let release = canary_release(Phase::Paused, 3);
        let first = build_request(&release, ManualAction::Promote, now(), None).unwrap();
        let later = now()
            .checked_add(k8s_openapi::jiff::SignedDuration::from_nanos(1))
            .unwrap();
        let second = build_request(&release, ManualAction::Promote, later, None).unwrap();
        assert_ne!(first.id, second.id);
    }
}
