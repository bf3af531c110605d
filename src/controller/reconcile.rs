//! One reconcile: read the world from the watch caches into [`Observed`], call
//! [`rollout::decide`], write the status (the intent) first, then apply the actions in order.
//!
//! Writing the status before acting is what makes a transition restart-safe: a controller
//! stopped between two actions leaves a status that already says where the Release is going,
//! and the next decision finishes the way there from the children as they are.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use crate::analysis::AnalysisRun;
use crate::analysis::judge::error_run;
use crate::api::{LABEL_REVISION, Release, ReleaseStatus, Role, SecretKeyRef};
use crate::rollout::deletion::{self, FinalizerChange};
use crate::rollout::{
    self, CredentialsCheck, Decision, EventNote, Observed, RouteState, Severity, WorkloadState,
};
use crate::traffic::gateway::{Backends, route_state};

use super::apply::{self, owned_by};
use super::children;
use super::context::Context;
use super::credentials;
use super::error::Error;
use super::finalizer::{self, Patched};
use super::prometheus::{self, Credentials};
use super::status::{self, Written};

/// How soon to look again at a Release whose cached copy has not caught up with our own last
/// status write (the watch event is on its way).
pub const STALE_RETRY: Duration = Duration::from_millis(200);
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

/// Read the world for one Release from the watch caches (no API reads), and run an analysis
/// when one is due.
pub async fn observe(ctx: &Context, release: &Release, now: Timestamp) -> Result<Observed, Error> {
    let namespace = release
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = release.name_any();
    // A child someone else owns is not ours to read as the stable or canary: the core then
    // asks for it, and applying it reports whose it is.
    let child = |role: Role| {
        ctx.stores
            .deployment(&namespace, &role.child_name(&name))
            .filter(|deployment| owned_by(deployment.meta(), release))
            .map(|deployment| workload_state(&deployment))
    };
    // Without resolvable ports (an invalid spec, which the core reports) nothing is ready.
    let services_ready = children::services(release).is_ok_and(|wanted| {
        wanted.iter().all(|wanted| {
            ctx.stores
                .service(&namespace, &wanted.name_any())
                .is_some_and(|live| {
                    owned_by(live.meta(), release) && children::service_up_to_date(&live, wanted)
                })
        })
    });
    let route = route_of(ctx, release, &namespace);
    let analysis = if rollout::analysis_due(release, now) {
        Some(run_analysis(ctx, release, &namespace, now).await?)
    } else {
        None
    };
    Ok(Observed {
        stable: child(Role::Stable),
        canary: child(Role::Canary),
        services_ready,
        route,
        analysis,
        credentials: check_credentials(ctx, release, &namespace).await,
    })
}

/// The Release's HTTPRoute as the core sees it, from the watch cache (`None` in replica-split
/// mode).
pub fn route_of(ctx: &Context, release: &Release, namespace: &str) -> Option<RouteState> {
    release.spec.traffic.gateway_api.as_ref().map(|gateway| {
        let cached = ctx.stores.route(namespace, &gateway.http_route);
        if cached.is_none() && ctx.http_routes_missing() {
            // Not "no such route": the cluster has no HTTPRoutes at all.
            return RouteState::Unusable {
                message: format!(
                    "HTTPRoute {namespace}/{} (spec.traffic.gatewayAPI.httpRoute) cannot be read: {}",
                    gateway.http_route,
                    super::watch::Watched::HttpRoutes.missing_hint()
                ),
            };
        }
        route_state(
            cached.as_deref(),
            namespace,
            &gateway.http_route,
            &Backends::of(&release.name_any()),
        )
    })
}

/// Whether the Secrets named in `spec.analysis.prometheus` exist with their keys: the last
/// answer while it holds (see [`super::credentials`]), otherwise read now with the analysis
/// run's own reads, so that the condition says what a run would.
pub async fn check_credentials(
    ctx: &Context,
    release: &Release,
    namespace: &str,
) -> CredentialsCheck {
    if !credentials::names_a_secret(release) {
        return CredentialsCheck::Unknown;
    }
    if let Some(found) = ctx.credential_checks.fresh(release, Instant::now()) {
        return found;
    }
    let found = match credentials(ctx, release, namespace).await {
        Ok(_) => CredentialsCheck::Found,
        Err(error @ Error::Secret { .. }) => CredentialsCheck::Missing(error.to_string()),
        Err(error) => {
            // The API server did not answer: the condition keeps what it said, and the next
            // reconcile asks again.
            tracing::warn!(
                namespace,
                release = release.name_any(),
                %error,
                "cannot read the Prometheus Secrets"
            );
            CredentialsCheck::Unknown
        }
    };
    ctx.credential_checks
        .record(release, Instant::now(), found.clone());
    found
}

/// One analysis run with the credentials named in the spec, recorded as run at `now`.
///
/// A missing Secret or key is the user's to fix: like an unreachable Prometheus it becomes an
/// `Error` run, shown in the status with the field named and counted towards `errorLimit`,
/// instead of a reconcile error that only the controller's log would show.
pub async fn run_analysis(
    ctx: &Context,
    release: &Release,
    namespace: &str,
    now: Timestamp,
) -> Result<AnalysisRun, Error> {
    // A closed semaphore cannot happen (it is never closed); run unbounded if it ever did.
    let _slot = ctx.analysis_slots.acquire().await.ok();
    let read = credentials(ctx, release, namespace).await;
    // What the run found of the Secrets is the freshest answer for the condition too.
    let found = match &read {
        Ok(_) => CredentialsCheck::Found,
        Err(error @ Error::Secret { .. }) => CredentialsCheck::Missing(error.to_string()),
        Err(_) => CredentialsCheck::Unknown,
    };
    if credentials::names_a_secret(release) {
        ctx.credential_checks.record(release, Instant::now(), found);
    }
    match read {
        Ok(credentials) => Ok(prometheus::run(release, &credentials, &ctx.prometheus, now).await),
        Err(error @ Error::Secret { .. }) => Ok(error_run(
            error.to_string(),
            release
                .status
                .as_ref()
                .and_then(|status| status.canary_revision.clone()),
            now,
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
        settled: observed_generation >= generation,
    }
}

/// The bearer token and CA bundle named in `spec.analysis.prometheus`, read with `get` from
/// the Release's namespace (Secrets are not watched: the controller may only `get` them).
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
                key: key.key.clone(),
                field,
                problem: "the token is not UTF-8 text: store the bearer token as text".into(),
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
        key: key.key.clone(),
        field,
        problem,
    };
    let secret = match secrets.get(&key.name).await {
        Ok(secret) => secret,
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            return Err(problem(format!(
                "not found: create it in namespace {namespace} with the key {}, or name an \
                 existing Secret in {field}",
                key.key
            )));
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
    let mut data = secret.data.unwrap_or_default();
    data.remove(&key.key).map(|bytes| bytes.0).ok_or_else(|| {
        // The names of its keys (never their values) point at a typo.
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        let has = if keys.is_empty() {
            "it has no keys".to_string()
        } else {
            format!("its keys are {}", keys.join(", "))
        };
        problem(format!(
            "the Secret has no key {} ({has}): add it, or name the right key in {field}.key",
            key.key
        ))
    })
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
