//! Writing the Release status: only when it says something new, and never over a newer
//! Release.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use crate::api::{FIELD_MANAGER, Release, ReleaseStatus};

use super::context::Context;
use super::error::Error;
use super::status_patch;

/// What a status write did.
#[derive(Clone, Debug, PartialEq)]
pub enum Written {
    /// Nothing new to say: no request was made.
    Unchanged,
    /// Written; the Release's new resourceVersion.
    Yes {
        /// `metadata.resourceVersion` after the write.
        resource_version: Option<String>,
    },
}

/// Why a status write did not happen.
#[derive(Debug)]
pub enum WriteError {
    /// The Release changed since the copy the decision was made on: decide again.
    Conflict,
    /// Any other failure.
    Failed(Error),
}

/// Write `new` as `release`'s status by a JSON patch of what changed, unless it says nothing
/// new.
///
/// The patch first tests the Release's resourceVersion, so the API server refuses it when the
/// copy the decision was made on is stale: a decision never lands over a newer status, a
/// manual request written meanwhile or a changed spec. `analysis_ran` forces the write even
/// if only `analysis.lastRunAt` moved: the core decides when the next run is due from it.
pub async fn write(
    ctx: &Context,
    release: &Release,
    new: &ReleaseStatus,
    analysis_ran: bool,
) -> Result<Written, WriteError> {
    let old = release.status.as_ref();
    let namespace = release.namespace().unwrap_or_default();
    let name = release.name_any();
    // What changed, after a test of the resourceVersion the decision was made on: the API
    // server refuses the whole patch when the Release moved since (see `status_patch`).
    let changes = if analysis_ran || status_changed(old, new) {
        status_patch::operations(old, new)
    } else {
        Vec::new()
    };
    if changes.is_empty() {
        // Nothing to write, but the gauges still show it: after a restart or a new leader's
        // first look, a settled Release's phase would otherwise be missing until it changes.
        // A revision already in the stored history is not counted again.
        ctx.metrics.observe_release(&namespace, &name, old, new);
        return Ok(Written::Unchanged);
    }
    let mut operations = Vec::with_capacity(changes.len() + 1);
    if let Some(version) = release.metadata.resource_version.as_deref() {
        operations.push(serde_json::json!({
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": version,
        }));
    }
    operations.extend(changes);
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(operations))
        .map_err(|source| {
            WriteError::Failed(Error::Serialize {
                what: "the status patch",
                source,
            })
        })?;
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), &namespace);
    match api
        .patch_status(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(written) => {
            ctx.wrote_status(
                &ObjectRef::from_obj(release),
                release.metadata.resource_version.clone(),
            );
            ctx.metrics.observe_release(&namespace, &name, old, new);
            Ok(Written::Yes {
                resource_version: written.metadata.resource_version,
            })
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Err(WriteError::Conflict),
        // The resourceVersion test failed: the Release changed since the decision.
        Err(kube::Error::Api(status)) if patch_not_applicable(&status) => Err(WriteError::Conflict),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(WriteError::Conflict),
        Err(error) => Err(WriteError::Failed(error.into())),
    }
}

/// Whether the API server refused the JSON patch because it did not apply to the stored
/// Release: its resourceVersion test failed (the Release changed since the decision). The API
/// server (v1.33) answers a failed `test`, like any operation on a path the object lacks, with
/// a bare 422 that names no field; a status the schema refuses is a 422 naming the field.
pub fn patch_not_applicable(status: &kube::core::Status) -> bool {
    status.code == 422
        && status.message == PATCH_NOT_APPLICABLE
        && status
            .details
            .as_ref()
            .is_none_or(|details| details.causes.is_empty())
}

/// The API server's words for a JSON patch that does not apply to the stored object.
const PATCH_NOT_APPLICABLE: &str = "the server rejected our request due to an error in our request";

/// The status with what does not count as a change blanked out: bookkeeping timestamps
/// (`analysis.lastRunAt`, conditions' `lastTransitionTime`) and `request`, which the CLI owns.
fn comparable(status: &ReleaseStatus) -> ReleaseStatus {
    let mut status = status.clone();
    status.request = None;
    if let Some(analysis) = status.analysis.as_mut() {
        analysis.last_run_at = None;
    }
    for condition in &mut status.conditions {
        condition.last_transition_time = Time(Timestamp::UNIX_EPOCH);
    }
    status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    status
}

/// Whether writing `new` over `old` would change anything a reader cares about.
pub fn status_changed(old: Option<&ReleaseStatus>, new: &ReleaseStatus) -> bool {
    let old = old.cloned().unwrap_or_default();
    comparable(&old) != comparable(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AnalysisStatus, ManualAction, ManualRequest, Phase, Verdict};
    use crate::rollout::conditions::{self, Truth};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn healthy() -> ReleaseStatus {
        let mut status = ReleaseStatus {
            phase: Some(Phase::Healthy),
            message: Some("stable abc serves 100%".into()),
            observed_generation: Some(1),
            analysis: Some(AnalysisStatus {
                verdict: Verdict::Passing,
                last_run_at: Some(Time(at(100))),
                ..Default::default()
            }),
            ..ReleaseStatus::default()
        };
        conditions::set_condition(
            &mut status.conditions,
            "Available",
            Truth::True,
            "StableAvailable",
            String::new(),
            Some(1),
            at(100),
        );
        status
    }

    #[test]
    fn a_bare_422_is_a_stale_release_and_a_422_naming_a_field_is_not() {
        // As the API server sends them.
        let answer = |message: &str, causes: usize| -> kube::core::Status {
            let causes: Vec<_> = (0..causes)
                .map(|_| serde_json::json!({"reason": "FieldValueNotSupported", "field": "status.phase"}))
                .collect();
            serde_json::from_value(serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid",
                "code": 422, "message": message, "details": {"causes": causes},
            }))
            .expect("a Status")
        };
        assert!(patch_not_applicable(&answer(PATCH_NOT_APPLICABLE, 0)));
        assert!(!patch_not_applicable(&answer(PATCH_NOT_APPLICABLE, 1)));
        assert!(!patch_not_applicable(&answer(
            "Release.waymark.dev \"checkout\" is invalid: status.phase: Unsupported value",
            1
        )));
    }

    #[test]
    fn a_status_differing_only_in_timestamps_is_unchanged() {
        let old = healthy();
        let mut new = old.clone();
        new.analysis.as_mut().unwrap().last_run_at = Some(Time(at(200)));
        new.conditions[0].last_transition_time = Time(at(200));
        assert!(!status_changed(Some(&old), &new));
    }

    #[test]
    fn a_status_differing_in_the_cli_request_only_is_unchanged() {
        let mut old = healthy();
        old.request = Some(ManualRequest {
            id: "r1".into(),
            action: ManualAction::Promote,
            revision: None,
            stage: None,
            step: None,
            requested_at: Time(at(1)),
            requested_by: None,
        });
        assert!(!status_changed(Some(&old), &healthy()));
    }

    #[test]
    fn a_phase_weight_or_condition_change_is_a_change() {
        let old = healthy();
        let mut new = old.clone();
        new.canary_weight = Some(10);
        assert!(status_changed(Some(&old), &new));

        let mut new = old.clone();
        new.conditions[0].status = "False".into();
        assert!(status_changed(Some(&old), &new));

        assert!(status_changed(None, &old));
        assert!(!status_changed(None, &ReleaseStatus::default()));
    }
}
