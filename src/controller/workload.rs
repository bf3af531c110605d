//! The Deployment a Release's `spec.workloadRef` names: read by name, scaled by its
//! `spec.replicas` only.
//!
//! It carries no Waymark label, so the child-Deployment watch (filtered by that label, with
//! templates) does not see it. What tells the controller it changed is a metadata-only watch of
//! Deployments (see `super::run_controller`): no templates cached, one long-lived request, and
//! a change (a template edit, a re-applied `replicas`, pods becoming available) reconciles the
//! Releases naming it at once. The reconcile then reads the one Deployment with a GET: the
//! template is not in the metadata, and caching every Deployment of the cluster in full for
//! the few referenced would cost far more than one GET per reconcile of a referencing Release.
//! Polling instead would cost a GET every few seconds per Release and leave a re-applied
//! `replicas` running for that long. The other Releases naming the same Deployment are listed
//! only until this one has taken it over (its `status.workload`).

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

use crate::api::{FIELD_MANAGER, Release};
use crate::rollout::workload::{OtherReferrer, ReferencedDeployment, WorkloadLookup};

use super::children;
use super::context::Context;
use super::error::Error;

/// Read the Deployment `spec.workloadRef` names (and who else names it) for the core.
pub async fn read(ctx: &Context, release: &Release) -> Result<WorkloadLookup, Error> {
    let recorded = release
        .status
        .as_ref()
        .and_then(|status| status.workload.as_ref())
        .map(|workload| workload.name.as_str());
    // Without a reference, the recorded one is read until it has been given back.
    let Some(wanted) = release
        .spec
        .workload_ref
        .as_ref()
        .map(|reference| reference.name.as_str())
        .or(recorded)
    else {
        return Ok(WorkloadLookup::NotReferenced);
    };
    let namespace = release
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(deployment) = deployments.get_opt(wanted).await? else {
        return Ok(WorkloadLookup::Missing);
    };
    let other_referrers = if recorded == Some(wanted) || release.spec.workload_ref.is_none() {
        Vec::new()
    } else {
        let releases: Api<Release> = Api::namespaced(ctx.client.clone(), &namespace);
        releases
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|other| other.name_any() != release.name_any())
            .filter(|other| {
                other
                    .spec
                    .workload_ref
                    .as_ref()
                    .is_some_and(|theirs| theirs.name == wanted)
            })
            .map(|other| OtherReferrer {
                claimed: other
                    .status
                    .as_ref()
                    .and_then(|status| status.workload.as_ref())
                    .is_some_and(|workload| workload.name == wanted),
                name: other.name_any(),
            })
            .collect()
    };
    Ok(found(deployment, other_referrers))
}

/// Read the Deployment `status.workload` records as held, to give it back: on delete, and
/// when `spec.workloadRef` now names another one (`NotReferenced` when nothing is held, or
/// when the held one is still the one referenced and [`read`] has it).
pub async fn read_held(ctx: &Context, release: &Release) -> Result<WorkloadLookup, Error> {
    let Some(held) = release
        .status
        .as_ref()
        .and_then(|status| status.workload.as_ref())
        .map(|workload| workload.name.as_str())
    else {
        return Ok(WorkloadLookup::NotReferenced);
    };
    let namespace = release
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    Ok(match deployments.get_opt(held).await? {
        Some(deployment) => found(deployment, Vec::new()),
        None => WorkloadLookup::Missing,
    })
}

/// Whether `spec.workloadRef` names another Deployment than the one `status.workload` holds.
pub fn reference_moved(release: &Release) -> bool {
    let held = release
        .status
        .as_ref()
        .and_then(|status| status.workload.as_ref());
    matches!((&release.spec.workload_ref, held),
        (Some(reference), Some(held)) if reference.name != held.name)
}

fn found(deployment: Deployment, other_referrers: Vec<OtherReferrer>) -> WorkloadLookup {
    let spec = deployment.spec.unwrap_or_default();
    WorkloadLookup::Found(Box::new(ReferencedDeployment {
        template: spec.template,
        replicas: spec.replicas.unwrap_or(1),
        available_replicas: deployment
            .status
            .and_then(|status| status.available_replicas)
            .unwrap_or(0),
        other_referrers,
    }))
}

/// Set `spec.replicas` of the referenced Deployment, and nothing else, under Waymark's field
/// manager (a merge patch of that one field: its template stays its owner's).
pub async fn scale_referenced(
    ctx: &Context,
    release: &Release,
    name: &str,
    replicas: i32,
) -> Result<(), Error> {
    let namespace = release.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    deployments
        .patch(
            name,
            &params,
            &Patch::Merge(&children::scale_patch(replicas)),
        )
        .await
        .map_err(|error| {
            Error::refusal(format!("Deployment {namespace}/{name}"), &error)
                .unwrap_or_else(|| error.into())
        })?;
    Ok(())
}
