//! Reading the world for one Release: its children and route from the watch caches (no API
//! reads), the Prometheus Secrets it names, and an analysis run when one is due, into the
//! [`Observed`] the rollout core decides on.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use crate::analysis::AnalysisRun;
use crate::analysis::judge::error_run;
use crate::api::{LABEL_REVISION, Release, Role, RouteKind, SecretKeyRef};
use crate::rollout::{self, CredentialsCheck, Observed, RouteState, WorkloadState};
use crate::traffic::gateway::{Backends, route_state};
use crate::traffic::route::WeightedRoute;

use super::apply::owned_by;
use super::cached::CachedDeployment;
use super::children;
use super::context::Context;
use super::credentials;
use super::error::Error;
use super::prometheus::{self, Credentials};
use super::watched::Watched;

/// Read the world for one Release from the watch caches (no API reads), and run an analysis
/// and the roadmap outcome measurements when they are due.
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
    let services_ready = services_ready(ctx, release, &namespace);
    let route = route_of(ctx, release, &namespace);
    let analysis = if rollout::analysis_due(release, now) {
        Some(run_analysis(ctx, release, &namespace, now).await?)
    } else {
        None
    };
    let due = rollout::outcome::measurements_due(release, now);
    let outcome_answers = if due.is_empty() {
        Vec::new()
    } else {
        let read = credentials(ctx, release, &namespace).await;
        let credentials = read.as_ref().map_err(ToString::to_string);
        prometheus::measure_outcomes(release, credentials, &ctx.prometheus, &due).await
    };
    Ok(Observed {
        stable: child(Role::Stable),
        canary: child(Role::Canary),
        services_ready,
        route,
        route_object: route_object_of(ctx, release, &namespace),
        grpc_route_object: grpc_route_object_of(ctx, release, &namespace),
        analysis,
        credentials: check_credentials(ctx, release, &namespace).await,
        last_apply: ctx.last_apply(&ObjectRef::from_obj(release)),
        // Read by the reconcile, which needs it before this (see `super::workload`).
        workload: rollout::workload::WorkloadLookup::NotReferenced,
        held_workload: rollout::workload::WorkloadLookup::NotReferenced,
        gateway_features: gateway_features(ctx, release, &namespace).await,
        outcome_answers,
    })
}

/// Whether the cache shows every Service the Release wants as wanted, and none of its own that
/// it no longer wants (a role Service an older version made in replica-split mode): only then
/// is there nothing to write. Without resolvable ports (an invalid spec, which the core
/// reports) nothing is ready.
fn services_ready(ctx: &Context, release: &Release, namespace: &str) -> bool {
    let Ok(wanted) = children::services(release) else {
        return false;
    };
    let all_wanted = wanted.iter().all(|wanted| {
        ctx.stores
            .service(namespace, &wanted.name_any())
            .is_some_and(|live| {
                owned_by(live.meta(), release) && children::service_up_to_date(&live, wanted)
            })
    });
    let none_unwanted = children::unwanted_service_names(release)
        .iter()
        .all(|name| {
            ctx.stores
                .service(namespace, name)
                .is_none_or(|live| !owned_by(live.meta(), release))
        });
    all_wanted && none_unwanted
}

/// The Release's route (HTTPRoute or GRPCRoute) as the core sees it, from the watch cache
/// (`None` in replica-split mode).
pub fn route_of(ctx: &Context, release: &Release, namespace: &str) -> Option<RouteState> {
    let gateway = release.spec.traffic.gateway_api.as_ref()?;
    let backends = Backends::of(&release.name_any());
    Some(match gateway.route() {
        // The schema refuses this; a Release stored before it did is told what to set.
        None => RouteState::Unusable {
            message: "spec.traffic.gatewayAPI names no route: set httpRoute or grpcRoute".into(),
        },
        Some((RouteKind::Http, name)) => cached_route_state(
            ctx,
            ctx.stores.route(namespace, name),
            Watched::HttpRoutes,
            namespace,
            name,
            &backends,
        ),
        Some((RouteKind::Grpc, name)) => cached_route_state(
            ctx,
            ctx.stores.grpc_route(namespace, name),
            Watched::GrpcRoutes,
            namespace,
            name,
            &backends,
        ),
    })
}

/// The cached route `namespace/name` as the core sees it; a route missing because its CRD is
/// (the watch of `watched` answered 404) says so, naming the spec field.
fn cached_route_state<R: WeightedRoute>(
    ctx: &Context,
    cached: Option<Arc<R>>,
    watched: Watched,
    namespace: &str,
    name: &str,
    backends: &Backends,
) -> RouteState {
    if cached.is_none() && ctx.routes_missing(watched) {
        // Not "no such route": the cluster has no routes of this kind at all.
        return RouteState::Unusable {
            message: format!(
                "{} {namespace}/{name} ({}) cannot be read: {}",
                R::KIND.kind(),
                R::KIND.field(),
                watched.missing_hint()
            ),
        };
    }
    route_state(cached.as_deref(), namespace, name, backends)
}

/// The features of the Release's route's GatewayClass, looked up only while the spec asks for
/// session persistence or has a mirror step (see [`super::gateway_features`]); `None` otherwise, or when unknown.
pub async fn gateway_features(
    ctx: &Context,
    release: &Release,
    namespace: &str,
) -> Option<Vec<String>> {
    let gateway = release.spec.traffic.gateway_api.as_ref()?;
    let mirrors = release
        .spec
        .steps
        .iter()
        .any(|step| step.set_mirror_route.is_some());
    if gateway.session_persistence.is_none() && !mirrors {
        return None;
    }
    match gateway.route()? {
        (RouteKind::Http, name) => {
            let route = ctx.stores.route(namespace, name)?;
            ctx.gateway_features
                .of_route(&ctx.client, route.as_ref())
                .await
        }
        (RouteKind::Grpc, name) => {
            let route = ctx.stores.grpc_route(namespace, name)?;
            ctx.gateway_features
                .of_route(&ctx.client, route.as_ref())
                .await
        }
    }
}

/// The Release's HTTPRoute itself, from the watch cache (or our newer write of it), for the
/// cohorts and mirrors it carries; `None` in replica-split mode or when it is not there.
pub fn route_object_of(
    ctx: &Context,
    release: &Release,
    namespace: &str,
) -> Option<gateway_api::apis::experimental::httproutes::HttpRoute> {
    let gateway = release.spec.traffic.gateway_api.as_ref()?;
    ctx.stores
        .route(namespace, gateway.http_route.as_deref()?)
        .map(|route| (*route).clone())
}

/// The Release's GRPCRoute itself, from the watch cache (or our newer write of it), for the
/// cohorts it carries; `None` unless `spec.traffic.gatewayAPI.grpcRoute` names a route there.
pub fn grpc_route_object_of(
    ctx: &Context,
    release: &Release,
    namespace: &str,
) -> Option<gateway_api::apis::experimental::grpcroutes::GrpcRoute> {
    match release.spec.traffic.route()? {
        (RouteKind::Grpc, name) => ctx
            .stores
            .grpc_route(namespace, name)
            .map(|route| (*route).clone()),
        (RouteKind::Http, _) => None,
    }
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
            let subject = super::logs::Subject::of(release);
            tracing::warn!(
                namespace = %subject.namespace,
                release = %subject.release,
                revision = %subject.revision,
                roadmap_item = %subject.roadmap_item,
                "cannot read the Prometheus Secrets: {error}"
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
pub fn workload_state(deployment: &CachedDeployment) -> WorkloadState {
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

    #[test]
    fn a_deployment_is_available_only_when_observed_updated_and_available() {
        use k8s_openapi::api::apps::v1::Deployment;
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
        let state = workload_state(&deployment(2, 2, 3, 3).into());
        assert!(state.available);
        assert_eq!(state.revision.as_deref(), Some("abc"));
        assert_eq!(state.replicas, 3);
        assert!(
            !workload_state(&deployment(3, 2, 3, 3).into()).available,
            "stale"
        );
        assert!(
            !workload_state(&deployment(2, 2, 2, 3).into()).available,
            "rolling"
        );
        assert!(
            !workload_state(&deployment(2, 2, 3, 2).into()).available,
            "unready"
        );
    }
}
