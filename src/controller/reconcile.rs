//! One reconcile: read the world from the watch caches into [`Observed`], call
//! [`rollout::decide`], write the status (the intent) first, then apply the actions in order.
//!
//! Writing the status before acting is what makes a transition restart-safe: a controller
//! stopped between two actions leaves a status that already says where the Release is going,
//! and the next decision finishes the way there from the children as they are.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::ObjectRef;

use crate::api::{Release, ReleaseStatus};
use crate::rollout::deletion::{self, FinalizerChange};
use crate::rollout::{self, Decision, EventNote, Severity};

use super::apply;
use super::context::{Context, STALE_RETRY};
use super::error::Error;
use super::finalizer::{self, Patched};
use super::observe::observe;
use super::status::{self, Written};

/// The shortest requeue: a due time already past must not spin the loop.
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);

/// The reconciler the kube-runtime `Controller` calls for each Release.
pub async fn reconcile(release: Arc<Release>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let key = ObjectRef::from_obj(&*release);
    if ctx.is_stale(&key, &release) {
        return Ok(Requeue::requeue(STALE_RETRY));
    }
    let started = Instant::now();
    let result = reconcile_release(&release, &ctx, Timestamp::now()).await;
    ctx.metrics.observe_reconcile(started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

/// What the `Controller` does after a failed reconcile: count it and retry, backing off
/// exponentially while it keeps failing.
pub fn error_policy(release: Arc<Release>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.count_error(error.metric_label());
    let wait = ctx.failed(&ObjectRef::from_obj(&*release));
    tracing::warn!(
        namespace = release.namespace().unwrap_or_default(),
        release = release.name_any(),
        kind = error.metric_label(),
        retry_in = ?wait,
        %error,
        "reconcile failed"
    );
    Requeue::requeue(wait)
}

/// One reconcile of `release` at `now`.
pub async fn reconcile_release(
    release: &Release,
    ctx: &Context,
    now: Timestamp,
) -> Result<Requeue, Error> {
    if deletion::is_deleting(release) {
        return finalizer::finish_deletion(ctx, release).await;
    }
    let observed = observe(ctx, release, now).await?;
    let decision = rollout::decide(release, &observed, now);
    let guard = deletion::finalizer_change(release, observed.route.as_ref(), &decision.actions);
    tracing::debug!(release = release.name_any(), ?decision, ?guard, "decided");

    // The intent first: a stale copy of the Release (someone wrote it since) is refused here,
    // before anything is done on its behalf.
    let written =
        match status::write(ctx, release, &decision.status, observed.analysis.is_some()).await {
            Ok(written) => written,
            Err(status::WriteError::Conflict) => return Ok(Requeue::requeue(STALE_RETRY)),
            Err(status::WriteError::Failed(error)) => return Err(error),
        };
    // The Release as the API server now has it, for a second write in this reconcile.
    let mut current = release.clone();
    if let Written::Yes { resource_version } = written {
        current.metadata.resource_version = resource_version;
        current.status = Some(decision.status.clone());
    }
    let generation = release.metadata.generation;
    // The finalizer before any action: the route never carries canary weight unguarded.
    if guard == Some(FinalizerChange::Add) {
        match finalizer::change(ctx, &current, FinalizerChange::Add).await {
            Ok(Patched::Yes { resource_version }) => {
                current.metadata.resource_version = resource_version;
            }
            Ok(Patched::Conflict | Patched::Gone) => return Ok(Requeue::requeue(STALE_RETRY)),
            Err(error) => return refused(ctx, release, &current, &decision, error, now).await,
        }
    }
    match apply::apply_actions(ctx, release, &decision.actions).await {
        Ok(()) => {
            // The finalizer after every action: the route carries no canary weight now.
            if guard == Some(FinalizerChange::Remove) {
                match finalizer::change(ctx, &current, FinalizerChange::Remove).await {
                    Ok(Patched::Yes { resource_version }) => {
                        current.metadata.resource_version = resource_version;
                    }
                    Ok(Patched::Conflict | Patched::Gone) => {}
                    Err(error) => {
                        return refused(ctx, release, &current, &decision, error, now).await;
                    }
                }
            }
            // Writes accepted again after a refusal: say so.
            let mut recovered = decision.status.clone();
            if status::set_applied(&mut recovered, None, generation, now) {
                write_again(ctx, &current, &recovered).await?;
            }
            Ok(requeue_for(&decision))
        }
        Err(error) => refused(ctx, release, &current, &decision, error, now).await,
    }
}

/// A failed write of this reconcile: a refusal (the user's to fix) goes into the status as
/// `Applied=False` with a Warning event, once; every error fails the reconcile, to be retried.
async fn refused(
    ctx: &Context,
    release: &Release,
    current: &Release,
    decision: &Decision,
    error: Error,
    now: Timestamp,
) -> Result<Requeue, Error> {
    if let Error::Refused { reason, .. } = &error {
        let mut refused = decision.status.clone();
        if status::set_applied(&mut refused, Some(&error), release.metadata.generation, now) {
            let note = EventNote {
                severity: Severity::Warning,
                reason: (*reason).to_string(),
                note: format!("{}: {error}", release.spec.roadmap.item),
            };
            apply::publish(ctx, release, &note).await;
            write_again(ctx, current, &refused).await?;
        }
    }
    Err(error)
}

/// A second status write in the same reconcile, over `current` (the Release as the first
/// write left it).
async fn write_again(
    ctx: &Context,
    current: &Release,
    status: &ReleaseStatus,
) -> Result<(), Error> {
    match status::write(ctx, current, status, false).await {
        Ok(_) | Err(status::WriteError::Conflict) => Ok(()),
        Err(status::WriteError::Failed(error)) => Err(error),
    }
}

/// When to look again: exactly when the core says the next thing is due, otherwise on the next
/// change (the caches watch every child and route).
pub fn requeue_for(decision: &Decision) -> Requeue {
    match decision.requeue_after {
        Some(after) => Requeue::requeue(after.max(MIN_REQUEUE)),
        None => Requeue::await_change(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(requeue_after: Option<Duration>) -> Decision {
        Decision {
            actions: vec![],
            status: ReleaseStatus::default(),
            requeue_after,
        }
    }

    #[test]
    fn requeues_exactly_when_the_core_says_the_next_thing_is_due() {
        assert_eq!(
            requeue_for(&decision(Some(Duration::from_secs(42)))),
            Requeue::requeue(Duration::from_secs(42))
        );
        assert_eq!(requeue_for(&decision(None)), Requeue::await_change());
    }

    #[test]
    fn a_due_time_in_the_past_does_not_spin() {
        assert_eq!(
            requeue_for(&decision(Some(Duration::ZERO))),
            Requeue::requeue(MIN_REQUEUE)
        );
    }
}
