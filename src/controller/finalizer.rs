//! Carrying out the core's finalizer decisions ([`crate::rollout::deletion`]): adding and removing
//! `waymark.dev/route`, and the steps of a deletion.
//!
//! The finalizers are written by a JSON merge patch of `metadata.finalizers` that carries the
//! Release's resourceVersion: the list written is the cached list with ours added or taken out,
//! and the API server refuses it (409) if anyone changed the Release since, so another
//! controller's finalizer (or the garbage collector's `orphan` and `foregroundDeletion`) is never
//! overwritten.

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use crate::api::{FIELD_MANAGER, ROUTE_FINALIZER, Release, WORKLOAD_FINALIZER};
use crate::rollout::deletion::{self, DeletionStep, FinalizerChange};
use crate::rollout::workload::{self, GiveBack};

use super::apply::{self, RouteGivenBack};
use super::context::Context;
use super::context::STALE_RETRY;
use super::error::Error;
use super::observe::route_of;

/// How often a deleted Release looks again at the Deployment it gives back, until its pods
/// are available.
const GIVE_BACK_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// What a finalizer patch did.
#[derive(Clone, Debug, PartialEq)]
pub enum Patched {
    /// Written; the Release's new resourceVersion.
    Yes {
        /// `metadata.resourceVersion` after the write.
        resource_version: Option<String>,
    },
    /// The Release changed since the cached copy: decide again on the newer one.
    Conflict,
    /// The Release is gone.
    Gone,
}

/// The finalizers of `release` after `change`, in their order, ours last when added.
#[cfg(test)]
fn finalizers_after(release: &Release, change: FinalizerChange) -> Vec<String> {
    named_finalizers_after(release, ROUTE_FINALIZER, change)
}

/// The finalizers of `release` after `change` of `ours`, in their order, ours last when added.
fn named_finalizers_after(release: &Release, ours: &str, change: FinalizerChange) -> Vec<String> {
    let mut finalizers: Vec<String> = release
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|finalizer| *finalizer != ours)
        .cloned()
        .collect();
    if change == FinalizerChange::Add {
        finalizers.push(ours.to_string());
    }
    finalizers
}

/// Add or remove `waymark.dev/route` on `release` (as last read: its resourceVersion is the
/// precondition).
pub async fn change(
    ctx: &Context,
    release: &Release,
    change: FinalizerChange,
) -> Result<Patched, Error> {
    change_named(ctx, release, ROUTE_FINALIZER, change).await
}

/// Add or remove the finalizer `ours` on `release` (as last read: its resourceVersion is the
/// precondition).
pub async fn change_named(
    ctx: &Context,
    release: &Release,
    ours: &str,
    change: FinalizerChange,
) -> Result<Patched, Error> {
    let namespace = release.namespace().unwrap_or_default();
    let name = release.name_any();
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": release.metadata.resource_version,
            "finalizers": named_finalizers_after(release, ours, change),
        }
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), &namespace);
    match api.patch(&name, &params, &Patch::Merge(&patch)).await {
        Ok(written) => {
            // Until the cache shows this write, the cached Release is older than it.
            ctx.wrote_status(
                &ObjectRef::from_obj(release),
                release.metadata.resource_version.clone(),
            );
            Ok(Patched::Yes {
                resource_version: written.metadata.resource_version,
            })
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Patched::Conflict),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Patched::Gone),
        Err(error) => Err(
            Error::refusal(format!("Release {namespace}/{name}"), &error)
                .unwrap_or_else(|| error.into()),
        ),
    }
}

/// Reconcile a Release the API server is deleting: carry out [`deletion::deletion_steps`] (give
/// the route back, then remove the finalizer), and nothing else: no child is created or changed
/// on behalf of a Release that is going, and no analysis runs.
pub async fn finish_deletion(ctx: &Context, release: &Release) -> Result<Requeue, Error> {
    let namespace = release
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    // The Deployment `spec.workloadRef` named serves again before anything else goes.
    if workload::holds_finalizer(release) {
        // The one `status.workload` holds: `spec.workloadRef` may name another by now.
        let lookup = super::workload::read_held(ctx, release).await?;
        match workload::give_back(release, &lookup) {
            GiveBack::Scale { name, replicas } => {
                super::workload::scale_referenced(ctx, release, &name, replicas).await?;
                return Ok(Requeue::requeue(GIVE_BACK_POLL));
            }
            GiveBack::Wait => return Ok(Requeue::requeue(GIVE_BACK_POLL)),
            GiveBack::Done => {
                match change_named(ctx, release, WORKLOAD_FINALIZER, FinalizerChange::Remove)
                    .await?
                {
                    Patched::Yes { .. } | Patched::Gone => {}
                    Patched::Conflict => return Ok(Requeue::requeue(STALE_RETRY)),
                }
                // The route's steps run on the Release as it now is (next reconcile).
                if deletion::holds_route_finalizer(release) {
                    return Ok(Requeue::requeue(STALE_RETRY));
                }
                return Ok(Requeue::await_change());
            }
        }
    }
    let route = route_of(ctx, release, &namespace);
    for step in deletion::deletion_steps(release, route.as_ref()) {
        match step {
            DeletionStep::RestoreRoute { done } => {
                match apply::give_route_back(ctx, release, &namespace).await {
                    Ok(RouteGivenBack::Done) => apply::publish(ctx, release, &done).await,
                    Ok(RouteGivenBack::Gone(why)) => {
                        // Logged by publish, in the Event's words.
                        apply::publish(ctx, release, &deletion::route_gone(release, &why)).await;
                    }
                    Ok(RouteGivenBack::Stale) => return Ok(Requeue::requeue(STALE_RETRY)),
                    Err(error) => {
                        if let Error::Refused { reason, .. } = &error {
                            let note = crate::rollout::EventNote {
                                severity: crate::rollout::Severity::Warning,
                                reason: (*reason).to_string(),
                                note: format!(
                                    "{}: the deleted Release waits for its route: {error}; to \
                                     delete it without giving the route back, remove the \
                                     finalizer {ROUTE_FINALIZER} by hand (see the README)",
                                    release.spec.roadmap.item
                                ),
                                audience: crate::rollout::Audience::EventAndLog,
                                kind: crate::rollout::NoteKind::RefusedWrite,
                            };
                            apply::publish(ctx, release, &note).await;
                        }
                        return Err(error);
                    }
                }
            }
            DeletionStep::Event(note) => apply::publish(ctx, release, &note).await,
            DeletionStep::RemoveFinalizer => {
                match change(ctx, release, FinalizerChange::Remove).await? {
                    Patched::Yes { .. } | Patched::Gone => {
                        let subject = super::logs::Subject::of(release);
                        tracing::info!(
                            namespace = %subject.namespace,
                            release = %subject.release,
                            revision = %subject.revision,
                            roadmap_item = %subject.roadmap_item,
                            "deleted Release: finalizer {ROUTE_FINALIZER} removed"
                        );
                    }
                    Patched::Conflict => return Ok(Requeue::requeue(STALE_RETRY)),
                }
            }
        }
    }
    Ok(Requeue::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ReleaseBuilder;

    #[test]
    fn only_our_finalizer_is_added_or_taken_out_and_the_others_keep_their_order() {
        let mut release = ReleaseBuilder::gateway().build();
        release.metadata.finalizers = Some(vec!["orphan".into(), "example.com/backup".into()]);
        assert_eq!(
            finalizers_after(&release, FinalizerChange::Add),
            ["orphan", "example.com/backup", ROUTE_FINALIZER]
        );
        release.metadata.finalizers = Some(vec![
            "orphan".into(),
            ROUTE_FINALIZER.into(),
            "foregroundDeletion".into(),
        ]);
        assert_eq!(
            finalizers_after(&release, FinalizerChange::Remove),
            ["orphan", "foregroundDeletion"]
        );
        release.metadata.finalizers = Some(vec![ROUTE_FINALIZER.into()]);
        assert!(finalizers_after(&release, FinalizerChange::Remove).is_empty());
        assert_eq!(
            finalizers_after(&release, FinalizerChange::Add),
            [ROUTE_FINALIZER],
            "never twice"
        );
    }
}
