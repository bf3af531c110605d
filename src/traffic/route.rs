//! The two route kinds Waymark edits, behind one small trait: an HTTPRoute and a GRPCRoute both
//! hold rules of backendRefs with weights, and Waymark's edits (weights, giving the route back,
//! session persistence) only need that much. [`super::gateway`] is written once against
//! [`WeightedRoute`]; rules that differ by kind (an HTTP header match against a GRPC one) are
//! built by kind-specific functions such as [`super::grpc::cohort_rule`].
//!
//! Both kinds are read as their experimental-channel types: a cluster with the experimental CRDs
//! stores fields (retries, session persistence) that the standard types would drop when Waymark
//! writes the rules back.

use gateway_api::apis::experimental::grpcroutes::{GrpcRoute, GrpcRouteRulesBackendRefs};
use gateway_api::apis::experimental::httproutes::{HttpRoute, HttpRouteRulesBackendRefs};
use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{RouteKind, SessionPersistence};

/// A backendRef of a route rule, whatever the route's kind.
pub trait BackendRef {
    /// The referent's name.
    fn name(&self) -> &str;
    /// The referent's API group (`None` or empty: the core group).
    fn group(&self) -> Option<&str>;
    /// The referent's kind (`None`: Service).
    fn kind(&self) -> Option<&str>;
    /// The referent's namespace (`None`: the route's).
    fn namespace(&self) -> Option<&str>;
    /// The proportion of the rule's requests it gets (`None`: 1).
    fn weight(&self) -> Option<i32>;
    /// Set its weight.
    fn set_weight(&mut self, weight: Option<i32>);
    /// A backendRef to Service `name` in the same group, kind, namespace and port as this one,
    /// with `weight` and without filters (the owner's backend filters stay the owner's choice
    /// for their own backend: a copied RequestMirror would mirror the same request twice).
    fn sibling(&self, name: &str, weight: i32) -> Self;
}

/// A route whose rules Waymark edits: an HTTPRoute or a GRPCRoute.
pub trait WeightedRoute:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + Serialize
    + DeserializeOwned
{
    /// The backendRef type of its rules.
    type Backend: BackendRef;
    /// Which kind it is.
    const KIND: RouteKind;
    /// How many rules it has.
    fn rule_count(&self) -> usize;
    /// The backendRefs of rule `rule`, if it has any.
    fn rule_backends(&self, rule: usize) -> Option<&[Self::Backend]>;
    /// The backendRefs of rule `rule`, to edit.
    fn rule_backends_mut(&mut self, rule: usize) -> Option<&mut Vec<Self::Backend>>;
    /// The session persistence of rule `rule`, in Waymark's terms (the same shape).
    fn rule_session_persistence(&self, rule: usize) -> Option<SessionPersistence>;
    /// Set (or with `None` remove) the session persistence of rule `rule`.
    fn set_rule_session_persistence(&mut self, rule: usize, value: Option<&SessionPersistence>);
    /// The Gateways among its parentRefs, as (namespace, name): a parentRef of the default
    /// group and kind (`gateway.networking.k8s.io`, `Gateway`), its namespace defaulting to the
    /// route's. Other parents (a Service, for a mesh) have no GatewayClass.
    fn parent_gateways(&self) -> Vec<(String, String)>;
}

/// A parentRef as (group, kind, namespace, name), to [`gateway_parent`].
type ParentRef<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a str);

/// The Gateway a parentRef names, as (namespace, name), if it names one.
fn gateway_parent(
    (group, kind, namespace, name): ParentRef,
    route_namespace: &str,
) -> Option<(String, String)> {
    let gateway_group = group.is_none_or(|group| group == "gateway.networking.k8s.io");
    let gateway_kind = kind.is_none_or(|kind| kind == "Gateway");
    (gateway_group && gateway_kind).then(|| {
        (
            namespace.unwrap_or(route_namespace).to_string(),
            name.to_string(),
        )
    })
}

/// Convert between Waymark's `SessionPersistence` and a Gateway API type of the same shape.
/// The JSON is the same by construction (`session_persistence_converts_both_ways` checks it), so
/// a failure cannot happen; it would read as "none".
fn convert<From: Serialize, To: DeserializeOwned>(value: &From) -> Option<To> {
    serde_json::to_value(value)
        .ok()
        .and_then(|json| serde_json::from_value(json).ok())
}

macro_rules! backend_ref {
    ($type:ty) => {
        impl BackendRef for $type {
            fn name(&self) -> &str {
                &self.name
            }
            fn group(&self) -> Option<&str> {
                self.group.as_deref()
            }
            fn kind(&self) -> Option<&str> {
                self.kind.as_deref()
            }
            fn namespace(&self) -> Option<&str> {
                self.namespace.as_deref()
            }
            fn weight(&self) -> Option<i32> {
                self.weight
            }
            fn set_weight(&mut self, weight: Option<i32>) {
                self.weight = weight;
            }
            fn sibling(&self, name: &str, weight: i32) -> Self {
                Self {
                    name: name.to_string(),
                    group: self.group.clone(),
                    kind: self.kind.clone(),
                    namespace: self.namespace.clone(),
                    port: self.port,
                    weight: Some(weight),
                    filters: None,
                }
            }
        }
    };
}

backend_ref!(HttpRouteRulesBackendRefs);
backend_ref!(GrpcRouteRulesBackendRefs);

macro_rules! weighted_route {
    ($route:ty, $backend:ty, $kind:expr) => {
        impl WeightedRoute for $route {
            type Backend = $backend;
            const KIND: RouteKind = $kind;
            fn rule_count(&self) -> usize {
                self.spec.rules.as_ref().map_or(0, Vec::len)
            }
            fn rule_backends(&self, rule: usize) -> Option<&[$backend]> {
                self.spec.rules.as_ref()?.get(rule)?.backend_refs.as_deref()
            }
            fn rule_backends_mut(&mut self, rule: usize) -> Option<&mut Vec<$backend>> {
                self.spec
                    .rules
                    .as_mut()?
                    .get_mut(rule)?
                    .backend_refs
                    .as_mut()
            }
            fn rule_session_persistence(&self, rule: usize) -> Option<SessionPersistence> {
                let rule = self.spec.rules.as_ref()?.get(rule)?;
                convert(rule.session_persistence.as_ref()?)
            }
            fn set_rule_session_persistence(
                &mut self,
                rule: usize,
                value: Option<&SessionPersistence>,
            ) {
                if let Some(rule) = self
                    .spec
                    .rules
                    .as_mut()
                    .and_then(|rules| rules.get_mut(rule))
                {
                    rule.session_persistence = value.and_then(convert);
                }
            }
            fn parent_gateways(&self) -> Vec<(String, String)> {
                let route_namespace = self.metadata.namespace.clone().unwrap_or_default();
                self.spec
                    .parent_refs
                    .iter()
                    .flatten()
                    .filter_map(|parent| {
                        gateway_parent(
                            (
                                parent.group.as_deref(),
                                parent.kind.as_deref(),
                                parent.namespace.as_deref(),
                                &parent.name,
                            ),
                            &route_namespace,
                        )
                    })
                    .collect()
            }
        }
    };
}

weighted_route!(HttpRoute, HttpRouteRulesBackendRefs, RouteKind::Http);
weighted_route!(GrpcRoute, GrpcRouteRulesBackendRefs, RouteKind::Grpc);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        SessionCookieConfig, SessionCookieLifetime, SessionPersistence, SessionPersistenceType,
    };

    fn full() -> SessionPersistence {
        SessionPersistence {
            session_name: Some("cart".into()),
            type_: Some(SessionPersistenceType::Cookie),
            absolute_timeout: Some("1h".into()),
            idle_timeout: Some("10m".into()),
            cookie_config: Some(SessionCookieConfig {
                lifetime_type: Some(SessionCookieLifetime::Permanent),
            }),
        }
    }

    #[test]
    fn parent_gateways_are_the_parent_refs_of_gateway_kind_in_the_routes_namespace_by_default() {
        let route: GrpcRoute = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {"parentRefs": [
                {"name": "public"},
                {"name": "edge", "namespace": "infra", "sectionName": "grpc"},
                {"name": "checkout", "group": "", "kind": "Service"},
                {"name": "explicit", "group": "gateway.networking.k8s.io", "kind": "Gateway"}
            ]}
        }))
        .unwrap();
        assert_eq!(
            route.parent_gateways(),
            [
                ("shop".to_string(), "public".to_string()),
                ("infra".to_string(), "edge".to_string()),
                ("shop".to_string(), "explicit".to_string()),
            ]
        );
    }

    #[test]
    fn session_persistence_converts_both_ways_on_both_route_kinds() {
        let mut http: HttpRoute = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "r"}, "spec": {"rules": [{}]}}),
        )
        .unwrap();
        http.set_rule_session_persistence(0, Some(&full()));
        assert_eq!(http.rule_session_persistence(0), Some(full()));
        let written = serde_json::to_value(&http).unwrap();
        assert_eq!(
            written["spec"]["rules"][0]["sessionPersistence"],
            serde_json::json!({"sessionName": "cart", "type": "Cookie", "absoluteTimeout": "1h",
                "idleTimeout": "10m", "cookieConfig": {"lifetimeType": "Permanent"}})
        );
        let mut grpc: GrpcRoute = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "r"}, "spec": {"rules": [{}]}}),
        )
        .unwrap();
        grpc.set_rule_session_persistence(0, Some(&full()));
        assert_eq!(grpc.rule_session_persistence(0), Some(full()));
        grpc.set_rule_session_persistence(0, None);
        assert_eq!(grpc.rule_session_persistence(0), None);
    }
}
