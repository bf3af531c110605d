//! Manual actions (`promote`, `abort`, `retry`): which phases allow them, and the request
//! written to the Release's status subresource for the controller to act on.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{ManualAction, ManualRequest, Phase, Release};

/// Why a manual action is refused before anything is written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot {verb} {namespace}/{name}: {why}")]
pub struct Refusal {
    /// The command, as typed (`promote`, `abort`, `retry`).
    pub verb: &'static str,
    /// The Release's namespace.
    pub namespace: String,
    /// The Release's name.
    pub name: String,
    /// What is in the way, in words.
    pub why: String,
}

/// The command a person types for `action`.
pub fn verb(action: ManualAction) -> &'static str {
    match action {
        ManualAction::Promote => "promote",
        ManualAction::PromoteFull => "promote --full",
        ManualAction::Abort => "abort",
        ManualAction::Retry => "retry",
    }
}

/// Build the request for `action` on `release`, or refuse when the phase does not allow it:
/// promote only while Progressing or Paused, abort only while a canary exists, retry only
/// after RolledBack.
pub fn build_request(
    release: &Release,
    action: ManualAction,
    now: Timestamp,
    requested_by: Option<String>,
) -> Result<ManualRequest, Refusal> {
    let status = release.status.clone().unwrap_or_default();
    let phase = status.phase;
    let refuse = |why: String| Refusal {
        verb: verb(action),
        namespace: release.metadata.namespace.clone().unwrap_or_default(),
        name: release.metadata.name.clone().unwrap_or_default(),
        why,
    };
    let phase_name = phase.map_or("not yet reconciled".to_string(), |p| format!("phase {p}"));
    let revision = match action {
        ManualAction::Promote | ManualAction::PromoteFull => {
            if !matches!(phase, Some(Phase::Progressing | Phase::Paused)) {
                return Err(refuse(format!(
                    "promote works while Progressing or Paused; the release is in {phase_name}"
                )));
            }
            status.canary_revision.clone()
        }
        ManualAction::Abort => {
            let Some(canary) = status.canary_revision.clone() else {
                return Err(refuse(format!(
                    "there is no canary to abort ({phase_name})"
                )));
            };
            if matches!(phase, Some(Phase::RolledBack)) {
                return Err(refuse(format!("canary {canary} is already rolled back")));
            }
            Some(canary)
        }
        ManualAction::Retry => {
            if phase != Some(Phase::RolledBack) {
                return Err(refuse(format!(
                    "retry works after a rollback; the release is in {phase_name}"
                )));
            }
            status
                .rolled_back_revision
                .clone()
                .or(status.canary_revision.clone())
        }
    };
    Ok(ManualRequest {
        id: format!("{}-{}", now.as_nanosecond(), std::process::id()),
        action,
        revision,
        requested_at: Time(now),
        requested_by,
    })
}

/// The merge patch for the status subresource that carries `request`.
///
/// Only `status.request` is sent: the controller owns every other status field.
pub fn request_patch(request: &ManualRequest) -> serde_json::Value {
    serde_json::json!({ "status": { "request": request } })
}

/// What the person is told once the request is written.
pub fn confirmation(release: &Release, request: &ManualRequest) -> String {
    let name = release.metadata.name.as_deref().unwrap_or_default();
    let item = &release.spec.roadmap.item;
    let target = request
        .revision
        .as_deref()
        .map(|revision| format!(" (revision {revision})"))
        .unwrap_or_default();
    format!(
        "{} requested for release {name}{target}, roadmap item {item}; the controller acts on its next reconcile",
        verb(request.action)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::release_in;

    fn now() -> Timestamp {
        "2026-11-21T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn promote_is_allowed_while_progressing_or_paused_and_targets_the_canary() {
        for phase in [Phase::Progressing, Phase::Paused] {
            let release = release_in(phase, Some("6f9c7d"));
            let request = build_request(&release, ManualAction::Promote, now(), None).unwrap();
            assert_eq!(request.action, ManualAction::Promote);
            assert_eq!(request.revision.as_deref(), Some("6f9c7d"));
            assert_eq!(request.requested_at, Time(now()));
        }
    }

    #[test]
    fn promote_is_refused_when_healthy_or_rolled_back() {
        for phase in [Phase::Healthy, Phase::RolledBack, Phase::Degraded] {
            let release = release_in(phase, None);
            let refusal =
                build_request(&release, ManualAction::PromoteFull, now(), None).unwrap_err();
            assert_eq!(refusal.verb, "promote --full");
            let text = refusal.to_string();
            assert!(text.contains("shop/checkout"), "{text}");
            assert!(text.contains(phase.as_str()), "{text}");
        }
    }

    #[test]
    fn abort_needs_a_live_canary() {
        let refusal = build_request(
            &release_in(Phase::Healthy, None),
            ManualAction::Abort,
            now(),
            None,
        );
        assert!(refusal.unwrap_err().why.contains("no canary"));
        let refusal = build_request(
            &release_in(Phase::RolledBack, Some("6f9c7d")),
            ManualAction::Abort,
            now(),
            None,
        );
        assert!(refusal.unwrap_err().why.contains("already rolled back"));
        let request = build_request(
            &release_in(Phase::Paused, Some("6f9c7d")),
            ManualAction::Abort,
            now(),
            Some("alice".into()),
        )
        .unwrap();
        assert_eq!(request.revision.as_deref(), Some("6f9c7d"));
        assert_eq!(request.requested_by.as_deref(), Some("alice"));
    }

    #[test]
    fn retry_only_after_a_rollback_and_targets_the_rolled_back_revision() {
        let refusal = build_request(
            &release_in(Phase::Progressing, Some("6f9c7d")),
            ManualAction::Retry,
            now(),
            None,
        );
        assert!(refusal.unwrap_err().why.contains("Progressing"));
        let mut release = release_in(Phase::RolledBack, None);
        release.status.as_mut().unwrap().rolled_back_revision = Some("6f9c7d".into());
        let request = build_request(&release, ManualAction::Retry, now(), None).unwrap();
        assert_eq!(request.revision.as_deref(), Some("6f9c7d"));
    }

    #[test]
    fn a_release_never_reconciled_is_refused_with_that_reason() {
        let mut release = release_in(Phase::Healthy, None);
        release.status = None;
        let refusal = build_request(&release, ManualAction::Promote, now(), None).unwrap_err();
        assert!(
            refusal.why.contains("not yet reconciled"),
            "{}",
            refusal.why
        );
    }

    #[test]
    fn the_patch_carries_only_the_request() {
        let request = build_request(
            &release_in(Phase::Paused, Some("6f9c7d")),
            ManualAction::Promote,
            now(),
            None,
        )
        .unwrap();
        let patch = request_patch(&request);
        let status = patch["status"].as_object().unwrap();
        assert_eq!(status.keys().collect::<Vec<_>>(), ["request"]);
        assert_eq!(status["request"]["action"], "Promote");
        assert_eq!(status["request"]["revision"], "6f9c7d");
        assert_eq!(status["request"]["requestedAt"], "2026-11-21T12:00:00Z");
    }

    #[test]
    fn two_requests_get_different_ids() {
        let release = release_in(Phase::Paused, Some("6f9c7d"));
        let first = build_request(&release, ManualAction::Promote, now(), None).unwrap();
        let later = now()
            .checked_add(k8s_openapi::jiff::SignedDuration::from_nanos(1))
            .unwrap();
        let second = build_request(&release, ManualAction::Promote, later, None).unwrap();
        assert_ne!(first.id, second.id);
    }
}
