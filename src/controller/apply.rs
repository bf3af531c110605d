//! Carrying out the rollout core's actions, in order, with no write where the watch cache shows
//! the object already as wanted, and never on an object this Release does not own.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use gateway_api::apis::experimental::grpcroutes::GrpcRoute;
use gateway_api::apis::experimental::httproutes::HttpRoute;

use crate::api::{ANNOTATION_ADOPT, FIELD_MANAGER, Release, Role, RouteKind, SessionPersistence};
use crate::rollout::{Action, Audience, EventNote, Severity};
use crate::traffic::cohort::strip_additions;
use crate::traffic::features::session_persistence_plan;
use crate::traffic::gateway::Backends;
use crate::traffic::grpc;
use crate::traffic::route::WeightedRoute;

use super::children::{self, additions_apply, grpc_additions_apply, restore_apply, weight_apply};
use super::context::Context;
use super::error::Error;
use super::logs;

/// Whether `meta` names `release` as its controller (by uid).
pub fn owned_by(meta: &ObjectMeta, release: &Release) -> bool {
    let uid = release.metadata.uid.as_deref();
    meta.owner_references.iter().flatten().any(|owner| {
        owner.controller == Some(true) && owner.kind == "Release" && Some(owner.uid.as_str()) == uid
    })
}

/// Whether the object's owner allows Waymark to take it over (`waymark.dev/adopt: "true"`).
pub fn adoptable(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|annotations| annotations.get(ANNOTATION_ADOPT))
        .is_some_and(|value| value == "true")
}

fn not_owned(object: String, release: &Release) -> Error {
    Error::Refused {
        message: format!(
            "exists and is not owned by Release {}; Waymark leaves it alone. Delete or rename \
             it, or annotate it {ANNOTATION_ADOPT}=\"true\" to let Waymark take it over",
            release.name_any()
        ),
        object,
        reason: "NotOwned",
    }
}

/// Apply `actions` in order, stopping at the first that fails: a later action may rely on an
/// earlier one (a rollback scales the canary down only after its weight is 0).
pub async fn apply_actions(
    ctx: &Context,
    release: &Release,
    actions: &[Action],
) -> Result<(), Error> {
    let namespace = release
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = release.name_any();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    for action in actions {
        match action {
            Action::ApplyServices => {
                // The Services do not depend on one another: written together, one round trip
                // instead of three; every write is seen through before the first error counts.
                let wanted = children::services(release)?;
                let (services, namespace) = (&services, &namespace);
                let written = futures::future::join_all(wanted.iter().map(|service| async move {
                    let cached = ctx.stores.service(namespace, &service.name_any());
                    apply_child(release, services, service, cached.as_deref(), |live| {
                        children::service_up_to_date(live, service)
                    })
                    .await
                    .map(drop)
                }))
                .await;
                written.into_iter().collect::<Result<Vec<()>, _>>()?;
                delete_unwanted_services(ctx, release, services, namespace).await?;
            }
            Action::ApplyStable { revision, replicas }
            | Action::ApplyCanary { revision, replicas } => {
                let role = match action {
                    Action::ApplyStable { .. } => Role::Stable,
                    _ => Role::Canary,
                };
                let deployment = children::deployment(release, role, revision, *replicas)?;
                let cached = ctx.stores.deployment(&namespace, &deployment.name_any());
                let written = apply_child(
                    release,
                    &deployments,
                    &deployment,
                    cached.as_deref(),
                    |live| children::deployment_up_to_date(live, &deployment),
                )
                .await?;
                if let Some(written) = written {
                    let name = deployment.name_any();
                    ctx.stores.wrote_deployment(&namespace, &name, written);
                }
            }
            Action::ScaleStable { replicas } => {
                scale(
                    ctx,
                    release,
                    &deployments,
                    &Role::Stable.child_name(&name),
                    *replicas,
                )
                .await?;
            }
            Action::ScaleCanary { replicas } => {
                scale(
                    ctx,
                    release,
                    &deployments,
                    &Role::Canary.child_name(&name),
                    *replicas,
                )
                .await?;
            }
            Action::DeleteCanary => delete_canary(ctx, release, &deployments).await?,
            Action::ScaleReferenced { name, replicas } => {
                super::workload::scale_referenced(ctx, release, name, *replicas).await?;
            }
            Action::SetWeight { canary_weight } => {
                set_weight(ctx, release, &namespace, *canary_weight).await?;
            }
            Action::SetRouteAdditions { additions } => match release.spec.traffic.route() {
                None => {}
                Some((RouteKind::Http, route_name)) => {
                    let route = ctx.stores.route(&namespace, route_name);
                    let written = edit_route(ctx, &namespace, route_name, route, |route| {
                        additions_apply(route, &name, additions)
                    })
                    .await?;
                    if let Some(written) = written {
                        ctx.stores.wrote_route(written);
                    }
                }
                Some((RouteKind::Grpc, route_name)) => {
                    let route = ctx.stores.grpc_route(&namespace, route_name);
                    let written = edit_route(ctx, &namespace, route_name, route, |route| {
                        grpc_additions_apply(route, &name, additions)
                    })
                    .await?;
                    if let Some(written) = written {
                        ctx.stores.wrote_grpc_route(written);
                    }
                }
            },
            Action::Event(note) => publish(ctx, release, note).await,
        }
    }
    Ok(())
}

/// Apply `desired` unless the cache shows it as wanted already; create it when the cache has
/// nothing by that name, and refuse to touch an object someone else owns. The cache may keep a
/// narrower type than the one written (`C`, e.g. [`super::cached::CachedDeployment`]). Returns the object
/// as the API server answered a write, `None` when nothing was written.
async fn apply_child<K, C>(
    release: &Release,
    api: &Api<K>,
    desired: &K,
    cached: Option<&C>,
    up_to_date: impl Fn(&C) -> bool,
) -> Result<Option<K>, Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
    C: Resource,
{
    let name = desired.name_any();
    let object = describe::<K>(release, &name);
    let refused =
        |error: kube::Error| Error::refusal(object.clone(), &error).unwrap_or_else(|| error.into());
    match cached {
        Some(live) if owned_by(live.meta(), release) && up_to_date(live) => return Ok(None),
        Some(live) if !owned_by(live.meta(), release) && !adoptable(live.meta()) => {
            return Err(not_owned(object, release));
        }
        Some(_) => {}
        None => {
            // Not in the cache: new, or someone else's (the cache holds only objects with
            // Waymark's label). A create cannot take over an existing object; an apply could.
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            match api.create(&params, desired).await {
                Ok(created) => return Ok(Some(created)),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let live = api.get(&name).await.map_err(refused)?;
                    if !owned_by(live.meta(), release) && !adoptable(live.meta()) {
                        return Err(not_owned(object, release));
                    }
                }
                Err(error) => return Err(refused(error)),
            }
        }
    }
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(desired),
        )
        .await
        .map_err(refused)?;
    Ok(Some(applied))
}

async fn scale(
    ctx: &Context,
    release: &Release,
    deployments: &Api<Deployment>,
    name: &str,
    replicas: i32,
) -> Result<(), Error> {
    let namespace = release.namespace().unwrap_or_default();
    let cached = ctx.stores.deployment(&namespace, name);
    if let Some(live) = cached.as_deref() {
        if !owned_by(live.meta(), release) {
            return Err(not_owned(describe::<Deployment>(release, name), release));
        }
        if live.spec.as_ref().and_then(|spec| spec.replicas) == Some(replicas) {
            return Ok(());
        }
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let scaled = deployments
        .patch(
            name,
            &params,
            &Patch::Merge(&children::scale_patch(replicas)),
        )
        .await
        .map_err(|error| {
            Error::refusal(describe::<Deployment>(release, name), &error)
                .unwrap_or_else(|| error.into())
        })?;
    ctx.stores.wrote_deployment(&namespace, name, scaled);
    Ok(())
}

async fn delete_canary(
    ctx: &Context,
    release: &Release,
    deployments: &Api<Deployment>,
) -> Result<(), Error> {
    let namespace = release.namespace().unwrap_or_default();
    let name = Role::Canary.child_name(&release.name_any());
    let Some(live) = ctx.stores.deployment(&namespace, &name) else {
        return Ok(());
    };
    if !owned_by(live.meta(), release) {
        return Err(not_owned(describe::<Deployment>(release, &name), release));
    }
    match deployments.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => {
            return Err(
                Error::refusal(describe::<Deployment>(release, &name), &error)
                    .unwrap_or_else(|| error.into()),
            );
        }
    }
    ctx.stores.deleted_deployment(live);
    Ok(())
}

/// Delete the Services of this Release that [`children::services`] no longer wants (the role
/// Services an older version made in replica-split mode): owned ones only, once each (the
/// cache drops them when the watch reports them gone; a second delete meanwhile is a 404).
async fn delete_unwanted_services(
    ctx: &Context,
    release: &Release,
    services: &Api<Service>,
    namespace: &str,
) -> Result<(), Error> {
    for name in children::unwanted_service_names(release) {
        let Some(live) = ctx.stores.service(namespace, &name) else {
            continue;
        };
        if !owned_by(live.meta(), release) {
            continue;
        }
        match services.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                return Err(Error::refusal(describe::<Service>(release, &name), &error)
                    .unwrap_or_else(|| error.into()));
            }
        }
    }
    Ok(())
}

/// Give the route `canary_weight` by server-side apply of its rules under Waymark's field
/// manager (forced: the rules are an atomic list, and another manager applying the route's
/// Git version must not keep the canary's traffic away; the Argo CD `ignoreDifferences` in
/// `config/argocd/` keeps Argo CD from fighting back). Session persistence goes with the
/// weights only where the route's GatewayClass lists it
/// ([`crate::traffic::features::session_persistence_plan`]), so an apply never carries a field
/// the route's CRD would prune. The route as written is remembered (see [`edit_route`]).
async fn set_weight(
    ctx: &Context,
    release: &Release,
    namespace: &str,
    canary_weight: i32,
) -> Result<(), Error> {
    let Some(gateway) = release.spec.traffic.gateway_api.as_ref() else {
        return Ok(());
    };
    match gateway.route() {
        None => Ok(()),
        Some((RouteKind::Http, name)) => {
            let route = ctx.stores.route(namespace, name);
            if let Some(written) =
                set_route_weight(ctx, release, namespace, name, route, canary_weight).await?
            {
                ctx.stores.wrote_route(written);
            }
            Ok(())
        }
        Some((RouteKind::Grpc, name)) => {
            let route = ctx.stores.grpc_route(namespace, name);
            if let Some(written) =
                set_route_weight(ctx, release, namespace, name, route, canary_weight).await?
            {
                ctx.stores.wrote_grpc_route(written);
            }
            Ok(())
        }
    }
}

/// [`set_weight`] on the cached route `namespace/route_name` of kind `R`: the route as the API
/// server answered the write, `None` when nothing was written.
async fn set_route_weight<R: WeightedRoute>(
    ctx: &Context,
    release: &Release,
    namespace: &str,
    route_name: &str,
    cached: Option<Arc<R>>,
    canary_weight: i32,
) -> Result<Option<R>, Error> {
    let Some(route) = cached else {
        // Gone since the decision: the next reconcile (the watch sees the deletion) reports it.
        return Ok(None);
    };
    let asked = release
        .spec
        .traffic
        .gateway_api
        .as_ref()
        .and_then(|gateway| gateway.session_persistence.as_ref());
    let features = match asked {
        Some(_) => {
            ctx.gateway_features
                .of_route(&ctx.client, route.as_ref())
                .await
        }
        None => None,
    };
    let plan = session_persistence_plan(asked, R::KIND, features.as_deref());
    let backends = Backends::of(&release.name_any());
    edit_route(ctx, namespace, route_name, Some(route), |route| {
        weight_apply(route, &backends, canary_weight, plan.to_write())
    })
    .await
}

/// Write an edit of the cached route `namespace/route_name` (`body`: the apply body from the
/// route as last read, `None` when it needs none) by server-side apply of its rules under
/// Waymark's field manager (forced, as [`set_weight`]: another manager applying the route's
/// Git version must not keep the cohorts or mirrors away). Returns the route as written, for
/// the caller to remember, so that the next edit (in this reconcile or the next, before the
/// watch shows this one) starts from it instead of undoing it; `None` when nothing was written.
async fn edit_route<R: WeightedRoute>(
    ctx: &Context,
    namespace: &str,
    route_name: &str,
    cached: Option<Arc<R>>,
    body: impl FnOnce(&R) -> Result<Option<serde_json::Value>, String>,
) -> Result<Option<R>, Error> {
    let object = format!("{} {namespace}/{route_name}", R::KIND.kind());
    let Some(route) = cached else {
        // Gone since the decision: the next reconcile (the watch sees the deletion) reports it.
        return Ok(None);
    };
    let body = body(&route).map_err(|message| Error::Refused {
        object: object.clone(),
        reason: "Rejected",
        message,
    })?;
    let Some(body) = body else {
        return Ok(None);
    };
    let routes: Api<R> = Api::namespaced(ctx.client.clone(), namespace);
    let written = routes
        .patch(
            route_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|error| Error::refusal(object.clone(), &error).unwrap_or_else(|| error.into()))?;
    Ok(Some(written))
}

/// What giving a deleted Release's route back did.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteGivenBack {
    /// The route holds no backendRef of Waymark's now (written, or already so).
    Done,
    /// The route, or the Gateway API itself, is gone: nothing to give back. The text says which,
    /// in the API server's words.
    Gone(String),
    /// The cached route is older than the live one: read it again and retry.
    Stale,
}

/// Write the route of a deleted Release back as its owner wrote it
/// ([`crate::traffic::cohort::restore_all`]), by server-side apply under Waymark's field
/// manager with the cached route's uid and resourceVersion as preconditions.
pub async fn give_route_back(
    ctx: &Context,
    release: &Release,
    namespace: &str,
) -> Result<RouteGivenBack, Error> {
    let Some(gateway) = release.spec.traffic.gateway_api.as_ref() else {
        return Ok(RouteGivenBack::Done);
    };
    // What Waymark passed through (the spec's value), taken out with its weights.
    let written = gateway.session_persistence.as_ref();
    match gateway.route() {
        None => Ok(RouteGivenBack::Done),
        Some((RouteKind::Http, name)) => {
            let route = ctx.stores.route(namespace, name);
            let release_name = release.name_any();
            let strip = |route: &mut HttpRoute| strip_additions(route, &release_name);
            give_back(ctx, release, namespace, name, route, written, strip).await
        }
        Some((RouteKind::Grpc, name)) => {
            let route = ctx.stores.grpc_route(namespace, name);
            let release_name = release.name_any();
            let strip = |route: &mut GrpcRoute| grpc::strip_additions(route, &release_name);
            give_back(ctx, release, namespace, name, route, written, strip).await
        }
    }
}

/// [`give_route_back`] for the cached route `namespace/route_name` of kind `R`.
async fn give_back<R: WeightedRoute>(
    ctx: &Context,
    release: &Release,
    namespace: &str,
    route_name: &str,
    cached: Option<Arc<R>>,
    written: Option<&SessionPersistence>,
    strip_additions: impl FnOnce(&mut R) -> bool,
) -> Result<RouteGivenBack, Error> {
    let object = format!("{} {namespace}/{route_name}", R::KIND.kind());
    let Some(route) = cached else {
        return Ok(RouteGivenBack::Gone(format!("{object} not found")));
    };
    let body = restore_apply(
        route.as_ref(),
        &Backends::of(&release.name_any()),
        written,
        strip_additions,
    )
    .map_err(|message| Error::Refused {
        object: object.clone(),
        reason: "Rejected",
        message,
    })?;
    let Some(body) = body else {
        return Ok(RouteGivenBack::Done);
    };
    let routes: Api<R> = Api::namespaced(ctx.client.clone(), namespace);
    match routes
        .patch(
            route_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => Ok(RouteGivenBack::Done),
        // The route is gone, or its API is (the Gateway API CRD deleted).
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(RouteGivenBack::Gone(format!(
            "{object}: {}",
            status.message
        ))),
        // A newer route than the cache's, or none left of that uid: the watch tells which.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(RouteGivenBack::Stale),
        Err(error) => Err(Error::refusal(object, &error).unwrap_or_else(|| error.into())),
    }
}

/// `Deployment shop/checkout-canary`.
fn describe<K: Resource<DynamicType = impl Default>>(release: &Release, name: &str) -> String {
    format!(
        "{} {}/{name}",
        K::kind(&Default::default()),
        release.namespace().unwrap_or_default()
    )
}

/// Tell a note of the rollout core: a line in the log ([`logs::tell`]) and, unless the note is
/// for the log only, an Event on the Release with the same words. A failed publish is logged,
/// not fatal: events are for people, and retrying the whole reconcile for one would repeat the
/// actions' API calls.
///
/// The recorder folds an event into an earlier one with the same reason and action (it bumps
/// the series count and keeps the first note). The action carries a hash of the note, so the
/// same thing said again (a refusal retried) is counted on one Event, while each step, each
/// canary and each outcome gets an Event of its own with its own words.
pub async fn publish(ctx: &Context, release: &Release, note: &EventNote) {
    logs::tell(release, note);
    if note.audience == Audience::LogOnly {
        return;
    }
    let text = truncate(&note.note, 1024);
    let event = Event {
        type_: match note.severity {
            Severity::Normal => EventType::Normal,
            Severity::Warning => EventType::Warning,
        },
        reason: note.reason.clone(),
        action: format!("{}-{:08x}", note.reason, fnv32(&text)),
        note: Some(text),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &release.object_ref(&())).await {
        let subject = logs::Subject::of(release);
        // Its namespace is being deleted: the Event would go with it anyway.
        if super::error::namespace_terminating(&error) {
            tracing::debug!(
                namespace = %subject.namespace,
                release = %subject.release,
                reason = %note.reason,
                %error,
                "event not published: the namespace is being deleted"
            );
            return;
        }
        tracing::warn!(
            namespace = %subject.namespace,
            release = %subject.release,
            revision = %subject.revision,
            roadmap_item = %subject.roadmap_item,
            reason = %note.reason,
            %error,
            "cannot publish the {} Event: {error}",
            note.reason
        );
    }
}

/// FNV-1a, 32 bits: a short, stable tag for an event's words.
fn fnv32(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ReleaseBuilder;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta(owner_uid: Option<&str>, adopt: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            owner_references: owner_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "waymark.dev/v1alpha1".into(),
                    kind: "Release".into(),
                    name: "checkout".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            annotations: adopt
                .map(|value| [(ANNOTATION_ADOPT.to_string(), value.to_string())].into()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn an_object_is_ours_only_with_a_controller_reference_to_this_releases_uid() {
        let release = ReleaseBuilder::gateway().build();
        let uid = release.metadata.uid.clone().unwrap();
        assert!(owned_by(&meta(Some(&uid), None), &release));
        assert!(
            !owned_by(&meta(Some("another-uid"), None), &release),
            "a namesake Release"
        );
        assert!(!owned_by(&meta(None, None), &release));
    }

    #[test]
    fn only_the_explicit_annotation_allows_adoption() {
        assert!(adoptable(&meta(None, Some("true"))));
        assert!(!adoptable(&meta(None, Some("yes"))));
        assert!(!adoptable(&meta(None, None)));
    }

    #[test]
    fn a_refusal_names_the_object_and_quotes_the_api_server() {
        let refusal = |code: u16, message: &str| {
            let error = kube::Error::Api(
                kube::core::Status::failure(message, "Forbidden")
                    .with_code(code)
                    .boxed(),
            );
            Error::refusal("Deployment shop/checkout-canary".into(), &error)
        };
        let quota = refusal(
            403,
            "deployments.apps \"checkout-canary\" is forbidden: exceeded quota: pods, requested: pods=2, used: pods=10, limited: pods=10",
        )
        .unwrap();
        assert!(matches!(
            quota,
            Error::Refused {
                reason: "QuotaExceeded",
                ..
            }
        ));
        assert!(
            quota
                .to_string()
                .starts_with("Deployment shop/checkout-canary: ")
        );
        assert!(quota.to_string().contains("exceeded quota"));
        let webhook = refusal(
            400,
            "admission webhook \"policy.example.com\" denied the request: no latest tags",
        )
        .unwrap();
        assert!(matches!(
            webhook,
            Error::Refused {
                reason: "AdmissionDenied",
                ..
            }
        ));
        assert!(matches!(
            refusal(422, "spec.template: Invalid value").unwrap(),
            Error::Refused {
                reason: "Invalid",
                ..
            }
        ));
        assert!(matches!(
            refusal(403, "cannot patch deployments").unwrap(),
            Error::Refused {
                reason: "Forbidden",
                ..
            }
        ));
        assert!(
            refusal(503, "etcd leader changed").is_none(),
            "a server hiccup is retried, not the user's to fix"
        );
    }
}
