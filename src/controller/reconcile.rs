//! One reconcile: read the world into [`Observed`], call [`rollout::decide`], apply the
//! actions in order, write the status once (and not at all when nothing changed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};

use crate::analysis::{self, AnalysisRun, Credentials};
use crate::api::{FIELD_MANAGER, LABEL_REVISION, Release, ReleaseStatus, Role, SecretKeyRef};
use crate::rollout::{
    self, Action, Decision, EventNote, Observed, RouteState, Severity, WorkloadState,
};
use crate::traffic::{Router, TrafficError, TrafficRouter};

use super::children;
use super::error::Error;
use super::metrics::Metrics;
use super::status::{self, CONDITION_SPEC_VALID, CONDITION_TRAFFIC_ROUTED, REASON_ROUTE_UNUSABLE};

/// How soon to look again at a Release whose route is unusable: HTTPRoutes are not watched,
/// so a fixed route is noticed on this schedule.
pub const ROUTE_RECHECK: Duration = Duration::from_secs(30);
/// How soon to retry after a failed reconcile.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(15);
/// The shortest requeue: a due time already past must not spin the loop.
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);

/// What every reconcile shares: one client, one event recorder for the process, the metrics.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The process-wide event recorder (a new one would forget the event series it bumps).
    pub recorder: Recorder,
    /// The controller's metrics.
    pub metrics: Arc<Metrics>,
}

/// The reconciler the kube-runtime `Controller` calls for each Release.
pub async fn reconcile(release: Arc<Release>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = reconcile_release(&release, &ctx, Timestamp::now()).await;
    ctx.metrics.observe_reconcile(started.elapsed());
    result
}

/// What the `Controller` does after a failed reconcile: count it and retry soon.
pub fn error_policy(release: Arc<Release>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.count_error(error.metric_label());
    tracing::warn!(
        namespace = release.namespace().unwrap_or_default(),
        release = release.name_any(),
        kind = error.metric_label(),
        %error,
        "reconcile failed"
    );
    Requeue::requeue(ERROR_REQUEUE)
}

/// One reconcile of `release` at `now`.
pub async fn reconcile_release(
    release: &Release,
    ctx: &Context,
    now: Timestamp,
) -> Result<Requeue, Error> {
    let namespace = release
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let old = release.status.as_ref();

    if let Err(error) = status::validate_spec(release) {
        let Error::InvalidSpec { .. } = error else {
            return Err(error);
        };
        let new = status::invalid_spec_status(release, &error, now);
        if status::status_changed(old, &new) {
            let note = warning(release, "InvalidSpec", &error.to_string());
            publish(ctx, release, &note).await;
        }
        write_status(ctx, release, new, false).await?;
        // Only a spec change can fix this, and spec changes trigger a reconcile.
        return Ok(Requeue::await_change());
    }

    let router = Router::for_release(ctx.client.clone(), release);
    let observed = observe(ctx, release, &namespace, &router, now).await?;
    let decision = rollout::decide(release, &observed, now);
    tracing::debug!(release = release.name_any(), %namespace, ?decision, "decided");

    match apply_actions(ctx, release, &router, &decision.actions).await {
        Ok(()) => {}
        Err(Error::Traffic(TrafficError::Unusable { message })) => {
            // The route broke between our read and our write: record that, keep the old
            // status otherwise (the decision assumed the write would land), look again later.
            let mut new = old.cloned().unwrap_or_default();
            route_unusable(release, &mut new, &message, now);
            let note = warning(release, REASON_ROUTE_UNUSABLE, &message);
            publish(ctx, release, &note).await;
            write_status(ctx, release, new, false).await?;
            return Ok(Requeue::requeue(ROUTE_RECHECK));
        }
        Err(error) => return Err(error),
    }

    let new = finish_status(ctx, release, &observed, &decision, now).await;
    write_status(ctx, release, new, observed.analysis.is_some()).await?;
    Ok(requeue_for(&decision, &observed))
}

/// When to look again: exactly when the core says the next thing is due, sooner when the
/// route is unusable (routes are not watched), otherwise on the next change.
pub fn requeue_for(decision: &Decision, observed: &Observed) -> Requeue {
    let route_unusable = matches!(observed.route, Some(RouteState::Unusable { .. }));
    match decision.requeue_after {
        Some(after) if route_unusable => Requeue::requeue(after.clamp(MIN_REQUEUE, ROUTE_RECHECK)),
        Some(after) => Requeue::requeue(after.max(MIN_REQUEUE)),
        None if route_unusable => Requeue::requeue(ROUTE_RECHECK),
        None => Requeue::await_change(),
    }
}

/// The decision's status plus what the shell owns: `SpecValid=True` (the spec passed the
/// shell's checks) and, when the router found the route unusable and the core said nothing
/// about it, `TrafficRouted=False` with a Warning event.
async fn finish_status(
    ctx: &Context,
    release: &Release,
    observed: &Observed,
    decision: &Decision,
    now: Timestamp,
) -> ReleaseStatus {
    let mut new = decision.status.clone();
    status::set_condition(
        &mut new.conditions,
        CONDITION_SPEC_VALID,
        status::Truth::True,
        "SpecValid",
        String::new(),
        release.metadata.generation,
        now,
    );
    if let Some(RouteState::Unusable { message }) = &observed.route {
        let core_reported = new
            .conditions
            .iter()
            .any(|c| c.type_ == CONDITION_TRAFFIC_ROUTED && c.status == "False");
        if !core_reported {
            route_unusable(release, &mut new, message, now);
        }
        let already_known = release.status.as_ref().is_some_and(|old| {
            old.conditions.iter().any(|c| {
                c.type_ == CONDITION_TRAFFIC_ROUTED && c.status == "False" && &c.message == message
            })
        });
        let core_warned = decision.actions.iter().any(
            |action| matches!(action, Action::Event(note) if note.severity == Severity::Warning),
        );
        if !already_known && !core_warned {
            publish(
                ctx,
                release,
                &warning(release, REASON_ROUTE_UNUSABLE, message),
            )
            .await;
        }
    }
    new
}

fn route_unusable(release: &Release, status: &mut ReleaseStatus, message: &str, now: Timestamp) {
    status::set_condition(
        &mut status.conditions,
        CONDITION_TRAFFIC_ROUTED,
        status::Truth::False,
        REASON_ROUTE_UNUSABLE,
        message.to_string(),
        release.metadata.generation,
        now,
    );
}

fn warning(release: &Release, reason: &str, message: &str) -> EventNote {
    EventNote {
        severity: Severity::Warning,
        reason: reason.into(),
        note: format!("{}: {message}", release.spec.roadmap.item),
    }
}

/// Read the world for one Release.
pub async fn observe(
    ctx: &Context,
    release: &Release,
    namespace: &str,
    router: &Router,
    now: Timestamp,
) -> Result<Observed, Error> {
    let name = release.name_any();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let stable = deployments
        .get_opt(&Role::Stable.child_name(&name))
        .await?
        .map(|deployment| workload_state(&deployment));
    let canary = deployments
        .get_opt(&Role::Canary.child_name(&name))
        .await?
        .map(|deployment| workload_state(&deployment));

    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let mut services_ready = true;
    for wanted in children::services(release)? {
        let existing = services.get_opt(&wanted.name_any()).await?;
        if !existing.is_some_and(|existing| children::service_matches(&existing, &wanted)) {
            services_ready = false;
            break;
        }
    }

    let route = router.observe(release).await?;

    let analysis = if rollout::analysis_due(release, now) {
        Some(run_analysis(ctx, release, namespace).await?)
    } else {
        None
    };

    Ok(Observed {
        stable,
        canary,
        services_ready,
        route,
        analysis,
    })
}

/// One analysis run with the credentials named in the spec.
///
/// A missing Secret or key is the user's to fix: like an unreachable Prometheus it becomes an
/// `Error` run, shown in the status with the field named and counted towards `errorLimit`,
/// instead of a reconcile error that only the controller's log would show.
pub async fn run_analysis(
    ctx: &Context,
    release: &Release,
    namespace: &str,
) -> Result<AnalysisRun, Error> {
    match credentials(ctx, release, namespace).await {
        Ok(credentials) => Ok(analysis::run(release, &credentials).await),
        Err(error @ Error::Secret { .. }) => Ok(analysis::judge::error_run(
            error.to_string(),
            release
                .status
                .as_ref()
                .and_then(|status| status.canary_revision.clone()),
            Timestamp::now(),
        )),
        Err(error) => Err(error),
    }
}

/// A child Deployment as the rollout core sees it.
pub fn workload_state(deployment: &Deployment) -> WorkloadState {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let observed_generation = status.observed_generation.unwrap_or(0);
    let available_replicas = status.available_replicas.unwrap_or(0);
    let updated_replicas = status.updated_replicas.unwrap_or(0);
    WorkloadState {
        revision: deployment.labels().get(LABEL_REVISION).cloned(),
        replicas,
        available_replicas,
        updated_replicas,
        available: observed_generation >= generation
            && updated_replicas == replicas
            && available_replicas == replicas,
    }
}

/// The bearer token and CA bundle named in `spec.analysis.prometheus`, read with `get` from
/// the Release's namespace.
async fn credentials(
    ctx: &Context,
    release: &Release,
    namespace: &str,
) -> Result<Credentials, Error> {
    let Some(prometheus) = release.spec.analysis.as_ref().map(|a| &a.prometheus) else {
        return Ok(Credentials::default());
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let bearer_token = match &prometheus.bearer_token_secret {
        Some(key) => {
            let field = "spec.analysis.prometheus.bearerTokenSecret";
            let bytes = secret_value(&secrets, namespace, key, field).await?;
            let token = String::from_utf8(bytes).map_err(|_| Error::Secret {
                namespace: namespace.into(),
                name: key.name.clone(),
                field,
                problem: format!("key {} is not UTF-8 text", key.key),
            })?;
            Some(token.trim().to_string())
        }
        None => None,
    };
    let ca_pem = match &prometheus.ca_secret {
        Some(key) => Some(
            secret_value(
                &secrets,
                namespace,
                key,
                "spec.analysis.prometheus.caSecret",
            )
            .await?,
        ),
        None => None,
    };
    Ok(Credentials {
        bearer_token,
        ca_pem,
    })
}

async fn secret_value(
    secrets: &Api<Secret>,
    namespace: &str,
    key: &SecretKeyRef,
    field: &'static str,
) -> Result<Vec<u8>, Error> {
    let problem = |problem: String| Error::Secret {
        namespace: namespace.into(),
        name: key.name.clone(),
        field,
        problem,
    };
    let secret = match secrets.get(&key.name).await {
        Ok(secret) => secret,
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            return Err(problem("not found".into()));
        }
        // Secrets are granted per namespace (config/rbac/secret_reader_role.yaml): a namespace
        // left out is the user's to fix, so say how instead of failing the reconcile unseen.
        Err(kube::Error::Api(status)) if status.is_forbidden() => {
            return Err(problem(format!(
                "the controller may not get Secrets in namespace {namespace}: bind the \
                 ClusterRole waymark-secret-reader there (Helm: rbac.secretNamespaces) ({})",
                status.message
            )));
        }
        Err(error) => return Err(error.into()),
    };
    secret
        .data
        .and_then(|mut data| data.remove(&key.key))
        .map(|bytes| bytes.0)
        .ok_or_else(|| problem(format!("has no key {}", key.key)))
}

/// Apply a decision's actions in order, stopping at the first that fails: a later action may
/// rely on an earlier one (a rollback scales the canary down only after its weight is 0).
pub async fn apply_actions(
    ctx: &Context,
    release: &Release,
    router: &impl TrafficRouter,
    actions: &[Action],
) -> Result<(), Error> {
    let namespace = release
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = release.name_any();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let merge = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let stable_name = Role::Stable.child_name(&name);
    let canary_name = Role::Canary.child_name(&name);

    for action in actions {
        match action {
            Action::ApplyServices => {
                for service in children::services(release)? {
                    services
                        .patch(&service.name_any(), &apply, &Patch::Apply(&service))
                        .await?;
                }
            }
            Action::ApplyStable { revision, replicas } => {
                let deployment = children::deployment(release, Role::Stable, revision, *replicas)?;
                deployments
                    .patch(&stable_name, &apply, &Patch::Apply(&deployment))
                    .await?;
            }
            Action::ApplyCanary { revision, replicas } => {
                let deployment = children::deployment(release, Role::Canary, revision, *replicas)?;
                deployments
                    .patch(&canary_name, &apply, &Patch::Apply(&deployment))
                    .await?;
            }
            Action::ScaleStable { replicas } => {
                let patch = children::scale_patch(*replicas);
                deployments
                    .patch(&stable_name, &merge, &Patch::Merge(&patch))
                    .await?;
            }
            Action::ScaleCanary { replicas } => {
                let patch = children::scale_patch(*replicas);
                deployments
                    .patch(&canary_name, &merge, &Patch::Merge(&patch))
                    .await?;
            }
            Action::DeleteCanary => {
                match deployments
                    .delete(&canary_name, &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.is_not_found() => {}
                    Err(error) => return Err(error.into()),
                }
            }
            Action::SetWeight { canary_weight } => {
                router.set_weight(release, *canary_weight).await?;
            }
            Action::Event(note) => publish(ctx, release, note).await,
        }
    }
    Ok(())
}

/// Publish an Event on the Release. A failed publish is logged, not fatal: events are for
/// people, and retrying the whole reconcile for one would repeat the actions' API calls.
pub async fn publish(ctx: &Context, release: &Release, note: &EventNote) {
    let event = Event {
        type_: match note.severity {
            Severity::Normal => EventType::Normal,
            Severity::Warning => EventType::Warning,
        },
        reason: note.reason.clone(),
        note: Some(truncate(&note.note, 1024)),
        action: note.reason.clone(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &release.object_ref(&())).await {
        tracing::warn!(release = release.name_any(), reason = %note.reason, %error, "cannot publish event");
    }
}

fn truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Write `new` to the status subresource by server-side apply, unless it says nothing new.
///
/// `analysis_ran` forces the write even if only `analysis.lastRunAt` moved: the core decides
/// whether the next run is due from that time, so skipping it would rerun the analysis on
/// every reconcile.
pub async fn write_status(
    ctx: &Context,
    release: &Release,
    mut new: ReleaseStatus,
    analysis_ran: bool,
) -> Result<bool, Error> {
    let old = release.status.as_ref();
    status::carry_transition_times(old, &mut new);
    // `request` belongs to the CLI (field manager `waymark-cli`): never send it.
    new.request = None;
    let namespace = release.namespace().unwrap_or_default();
    let name = release.name_any();
    ctx.metrics.observe_release(&namespace, &name, old, &new);
    if !analysis_ran && !status::status_changed(old, &new) {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": "waymark.dev/v1alpha1",
        "kind": "Release",
        "status": new,
    });
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), &namespace);
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
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

    fn observed(route: Option<RouteState>) -> Observed {
        Observed {
            route,
            ..Observed::default()
        }
    }

    #[test]
    fn requeues_exactly_when_the_core_says_the_next_thing_is_due() {
        let ready = observed(Some(RouteState::Ready { canary_weight: 10 }));
        assert_eq!(
            requeue_for(&decision(Some(Duration::from_secs(42))), &ready),
            Requeue::requeue(Duration::from_secs(42))
        );
        assert_eq!(
            requeue_for(&decision(None), &ready),
            Requeue::await_change()
        );
    }

    #[test]
    fn a_due_time_in_the_past_does_not_spin() {
        assert_eq!(
            requeue_for(&decision(Some(Duration::ZERO)), &observed(None)),
            Requeue::requeue(MIN_REQUEUE)
        );
    }

    #[test]
    fn an_unusable_route_is_looked_at_again_because_routes_are_not_watched() {
        let unusable = observed(Some(RouteState::Unusable {
            message: "HTTPRoute shop/checkout not found".into(),
        }));
        assert_eq!(
            requeue_for(&decision(None), &unusable),
            Requeue::requeue(ROUTE_RECHECK)
        );
        assert_eq!(
            requeue_for(&decision(Some(Duration::from_secs(600))), &unusable),
            Requeue::requeue(ROUTE_RECHECK)
        );
    }

    #[test]
    fn a_deployment_is_available_only_when_observed_updated_and_available() {
        use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
        let deployment = |generation, observed, updated, available| Deployment {
            metadata: kube::api::ObjectMeta {
                generation: Some(generation),
                labels: Some([(LABEL_REVISION.to_string(), "abc".to_string())].into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                ..Default::default()
            }),
        };
        let state = workload_state(&deployment(2, 2, 3, 3));
        assert!(state.available);
        assert_eq!(state.revision.as_deref(), Some("abc"));
        assert_eq!(state.replicas, 3);
        assert!(!workload_state(&deployment(3, 2, 3, 3)).available, "stale");
        assert!(
            !workload_state(&deployment(2, 2, 2, 3)).available,
            "rolling"
        );
        assert!(
            !workload_state(&deployment(2, 2, 3, 2)).available,
            "unready"
        );
    }
}
