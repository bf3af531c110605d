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

use crate::api::{ROUTE_FINALIZER, Release, WORKLOAD_FINALIZER};
use crate::rollout::deletion::{self, FinalizerChange};
use crate::rollout::{self, Decision, LastApply};

use super::apply;
use super::cached::CachedRelease;
use super::context::{Context, STALE_RETRY};
use super::error::Error;
use super::finalizer::{self, Patched};
use super::lanes::Lane;
use super::logs;
use super::notify;
use super::observe::observe;
use super::status::{self, Written};
use super::workload;

/// The shortest requeue: a due time already past must not spin the loop.
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);

/// The reconciler the kube-runtime `Controller` calls for each Release: it waits for a slot
/// in the Release's lane ([`Lane::of`]: urgent when an analysis is due), then decodes the
/// newest version of the Release the cache holds, and reconciles it.
pub async fn reconcile_cached(
    cached: Arc<CachedRelease>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    // `Lane::of` decodes the Release and drops it before the wait; it is decoded again after:
    // thousands of waiting reconciles each holding a decoded Release (about 11 KB against
    // 2.5 KB cached) would undo the compact cache, and the newest version may differ anyway.
    let lane = Lane::of(&cached, Timestamp::now());
    let lanes = ctx.clone();
    let _slot = lanes.lanes.enter(lane).await;
    // The wait may have been long: work on what the cache holds now.
    let Some(cached) = ctx.newest(&cached) else {
        return Ok(Requeue::await_change());
    };
    let release = cached
        .release()
        .map_err(|source| Error::CachedRelease { source })?;
    // Boxed: a reconcile future is large, and at 10,000 Releases thousands wait for a slot at
    // once; each holds a pointer to it only once it runs.
    Box::pin(reconcile(Arc::new(release), ctx)).await
}

/// [`error_policy`] for a Release the cache keeps compact. One that cannot be decoded (a bug)
/// is retried with the same back-off as any failing Release.
pub fn error_policy_cached(
    cached: Arc<CachedRelease>,
    error: &Error,
    ctx: Arc<Context>,
) -> Requeue {
    match cached.release() {
        Ok(release) => error_policy(Arc::new(release), error, ctx),
        Err(decode) => {
            ctx.metrics.count_error(error.metric_label());
            let key = ObjectRef::from_obj(&*cached).into_kind_unchecked(());
            tracing::error!(release = %key, %error, %decode, "reconcile failed");
            Requeue::requeue(ctx.failed(&key))
        }
    }
}

/// Reconcile one Release.
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
/// exponentially while it keeps failing. A refusal no decision has seen yet is decided on again
/// at once, so that the status and an event say so; its retries back off from there.
pub fn error_policy(release: Arc<Release>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.count_error(error.metric_label());
    let key = ObjectRef::from_obj(&*release);
    let unseen = ctx.refusal_unseen(&key);
    let wait = if unseen {
        STALE_RETRY
    } else {
        ctx.failed(&key)
    };
    let subject = logs::Subject::of(&release);
    // One warn line per refused write: a refusal no decision has seen yet is told by the
    // Warning Event the next decision makes of it (in its words, logged where it is
    // published); a refusal met again is told here. Other failures (the API server
    // unreachable, a conflict) are told here too.
    let told_by_an_event = error.as_refusal().is_some() && unseen;
    if told_by_an_event {
        tracing::debug!(
            namespace = %subject.namespace,
            release = %subject.release,
            revision = %subject.revision,
            roadmap_item = %subject.roadmap_item,
            retry_in = ?wait,
            %error,
            "write refused (told by its Event)"
        );
    } else if let Some(refusal) = error.as_refusal() {
        tracing::warn!(
            namespace = %subject.namespace,
            release = %subject.release,
            revision = %subject.revision,
            roadmap_item = %subject.roadmap_item,
            object = %refusal.object,
            reason = %refusal.reason,
            retry_in = ?wait,
            "write refused: {}: {}",
            refusal.object,
            refusal.message
        );
    } else {
        tracing::warn!(
            namespace = %subject.namespace,
            release = %subject.release,
            revision = %subject.revision,
            roadmap_item = %subject.roadmap_item,
            kind = error.metric_label(),
            retry_in = ?wait,
            "reconcile failed: {error}"
        );
    }
    Requeue::requeue(wait)
}

/// One reconcile of `release` at `now`: one status write at most (the intent, with what the
/// last apply met), then the actions.
pub async fn reconcile_release(
    release: &Release,
    ctx: &Context,
    now: Timestamp,
) -> Result<Requeue, Error> {
    if deletion::is_deleting(release) {
        return finalizer::finish_deletion(ctx, release).await;
    }
    // With `spec.workloadRef` the Release is acted on with the referenced Deployment's template
    // (observed, analysed and applied as if it were `spec.template`).
    let lookup = workload::read(ctx, release).await?;
    let resolved = rollout::workload::resolve(release, &lookup).ok().flatten();
    let acting_on = resolved.as_ref().unwrap_or(release);
    let mut observed = observe(ctx, acting_on, now).await?;
    observed.workload = lookup;
    if workload::reference_moved(release) {
        observed.held_workload = workload::read_held(ctx, release).await?;
    }
    let mut decision = rollout::decide(release, &observed, now);
    // What the notifier knows of this Release's named targets (`spec.roadmap.notify`), in the
    // one status write; unchanged words change nothing (the quiet rule).
    match &ctx.notifier {
        Some(notifier) => notifier.set_condition(release, &mut decision.status, now),
        None => notify::set_condition_unconfigured(release, &mut decision.status, now),
    }
    let guard = deletion::finalizer_change(
        release,
        observed.route.as_ref(),
        observed.route_carries_additions(&release.name_any()),
        &decision.actions,
    );
    let workload_guard = rollout::workload::finalizer_change(release, &decision.status);
    tracing::debug!(
        namespace = release.namespace().unwrap_or_default(),
        release = release.name_any(),
        ?decision,
        ?guard,
        "decided"
    );

    // The intent first: a stale copy of the Release (someone wrote it since) is refused here,
    // before anything is done on its behalf.
    let written =
        match status::write(ctx, release, &decision.status, observed.analysis.is_some()).await {
            Ok(written) => written,
            Err(status::WriteError::Conflict) => return Ok(Requeue::requeue(STALE_RETRY)),
            Err(status::WriteError::Failed(error)) => return Err(error),
        };
    // The status holds the transitions now: tell them (queued; the reconcile never waits).
    if let Some(notifier) = &ctx.notifier {
        notifier.tell(release, &decision, now);
    }
    // The Release as the API server now has it, for the finalizer patches' precondition.
    let mut current = acting_on.clone();
    if let Written::Yes { resource_version } = written {
        current.metadata.resource_version = resource_version;
    }
    let key = ObjectRef::from_obj(release);
    match act(ctx, &mut current, &decision, guard, workload_guard).await {
        Ok(Acted::Done) => {
            ctx.record_apply(&key, LastApply::Accepted);
            Ok(requeue_for(&decision))
        }
        Ok(Acted::Stale) => Ok(Requeue::requeue(STALE_RETRY)),
        // The namespace takes the Release with it: no condition, no Event, no retry.
        Err(error @ Error::NamespaceTerminating { .. }) => {
            tracing::debug!(
                namespace = release.namespace().unwrap_or_default(),
                release = release.name_any(),
                %error,
                "namespace is being deleted: nothing more is created for this release"
            );
            Ok(Requeue::await_change())
        }
        Err(error) => {
            // The user's to fix: the next decision says so in the status and an event.
            if let Some(refusal) = error.as_refusal() {
                ctx.record_apply(&key, LastApply::Refused(refusal));
            }
            Err(error)
        }
    }
}

/// How applying a decision ended, short of an error.
enum Acted {
    /// Every action and finalizer change went through.
    Done,
    /// The Release changed before the finalizer could be added: decide again.
    Stale,
}

/// The finalizer before any action (the route never carries canary weight unguarded), the
/// actions in order, then the finalizer's removal (the route carries no canary weight now).
async fn act(
    ctx: &Context,
    current: &mut Release,
    decision: &Decision,
    guard: Option<FinalizerChange>,
    workload_guard: Option<FinalizerChange>,
) -> Result<Acted, Error> {
    if guard == Some(FinalizerChange::Add)
        && !patch_finalizer(ctx, current, ROUTE_FINALIZER, FinalizerChange::Add).await?
    {
        return Ok(Acted::Stale);
    }
    // Before the referenced Deployment is scaled down: a deletion then gives it back first.
    if workload_guard == Some(FinalizerChange::Add)
        && !patch_finalizer(ctx, current, WORKLOAD_FINALIZER, FinalizerChange::Add).await?
    {
        return Ok(Acted::Stale);
    }
    apply::apply_actions(ctx, current, &decision.actions).await?;
    if guard == Some(FinalizerChange::Remove) {
        patch_finalizer(ctx, current, ROUTE_FINALIZER, FinalizerChange::Remove).await?;
    }
    if workload_guard == Some(FinalizerChange::Remove) {
        patch_finalizer(ctx, current, WORKLOAD_FINALIZER, FinalizerChange::Remove).await?;
    }
    Ok(Acted::Done)
}

/// Add or remove the finalizer `ours` and keep `current` as the API server now has it (its
/// resourceVersion and finalizers), so that a second finalizer patch in the same reconcile
/// neither conflicts nor undoes the first. False when the Release changed or went meanwhile.
async fn patch_finalizer(
    ctx: &Context,
    current: &mut Release,
    ours: &str,
    change: FinalizerChange,
) -> Result<bool, Error> {
    match finalizer::change_named(ctx, current, ours, change).await? {
        Patched::Yes { resource_version } => {
            current.metadata.resource_version = resource_version;
            let finalizers = current.metadata.finalizers.get_or_insert_with(Vec::new);
            finalizers.retain(|finalizer| finalizer != ours);
            if change == FinalizerChange::Add {
                finalizers.push(ours.to_string());
            }
            Ok(true)
        }
        Patched::Conflict | Patched::Gone => Ok(false),
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
    use crate::api::ReleaseStatus;

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
