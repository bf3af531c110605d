//! What the route's Gateway can do, from its GatewayClass's `status.supportedFeatures`, as plain
//! data: the controller looks the class up (route parentRefs → Gateway → GatewayClass) and hands
//! the names to the core, which decides with the functions here.

use crate::api::{RouteKind, SessionPersistence};

/// The spec field session persistence is written in, as conditions and messages name it.
pub const SESSION_PERSISTENCE_FIELD: &str = "spec.traffic.gatewayAPI.sessionPersistence";

/// The feature names under which a GatewayClass reports session persistence for a route kind.
/// Gateway API's conformance suite has named it for HTTPRoutes (`HTTPRouteSessionPersistence`)
/// and, for both route kinds, by mechanism (`CookieSessionPersistence`); any of them counts.
pub fn session_persistence_features(kind: RouteKind) -> &'static [&'static str] {
    match kind {
        RouteKind::Http => &["HTTPRouteSessionPersistence", "CookieSessionPersistence"],
        RouteKind::Grpc => &["CookieSessionPersistence"],
    }
}

/// Whether the GatewayClass supports the feature `name`: `None` when the class reports no
/// features at all (support unknown), else whether it lists the name.
pub fn supports(features: Option<&[String]>, name: &str) -> Option<bool> {
    features.map(|features| features.iter().any(|feature| feature == name))
}

/// Whether the GatewayClass supports any of `names` (one feature known by several names).
pub fn supports_any(features: Option<&[String]>, names: &[&str]) -> Option<bool> {
    features.map(|features| {
        names
            .iter()
            .any(|name| supports(Some(features), name) == Some(true))
    })
}

/// The features of a route with several parent Gateways: only what every class supports (a
/// request may reach any of them); unknown as soon as one class reports nothing. No parents at
/// all is unknown too.
pub fn common_features(per_parent: Vec<Option<Vec<String>>>) -> Option<Vec<String>> {
    let mut parents = per_parent.into_iter();
    let mut common = parents.next()??;
    for features in parents {
        let features = features?;
        common.retain(|feature| features.contains(feature));
    }
    common.sort();
    common.dedup();
    Some(common)
}

/// What becomes of `spec.traffic.gatewayAPI.sessionPersistence` on a route of `kind` whose
/// GatewayClass reports `features`.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionPersistencePlan {
    /// The spec asks for none: nothing to write, nothing to say.
    NotAsked,
    /// The class lists the feature: written on the rules Waymark edits.
    Write(SessionPersistence),
    /// The class lists features, but not this one: refused, and the message names the field.
    Unsupported(String),
    /// The class lists no features: support is unknown, so it is not written (a route CRD
    /// without the field would prune it from every write, and Waymark's apply would fight the
    /// API server forever); the message says so.
    Unknown(String),
}

/// Decide what becomes of the spec's session persistence (see [`SessionPersistencePlan`]).
pub fn session_persistence_plan(
    asked: Option<&SessionPersistence>,
    kind: RouteKind,
    features: Option<&[String]>,
) -> SessionPersistencePlan {
    let Some(asked) = asked else {
        return SessionPersistencePlan::NotAsked;
    };
    let names = session_persistence_features(kind);
    match supports_any(features, names) {
        Some(true) => SessionPersistencePlan::Write(asked.clone()),
        Some(false) => SessionPersistencePlan::Unsupported(format!(
            "{SESSION_PERSISTENCE_FIELD} is not supported by the {} GatewayClass: its \
             status.supportedFeatures lists none of {}; remove the field or use a Gateway whose \
             class supports it",
            kind.kind(),
            names.join(", ")
        )),
        None => SessionPersistencePlan::Unknown(format!(
            "{SESSION_PERSISTENCE_FIELD} is not written: support is unknown, because the \
             GatewayClass of the {}'s Gateway reports no status.supportedFeatures (or it cannot \
             be read); Waymark writes it once the class lists {}",
            kind.kind(),
            names.join(" or ")
        )),
    }
}

impl SessionPersistencePlan {
    /// The session persistence to write on the rules Waymark edits, if any.
    pub fn to_write(&self) -> Option<&SessionPersistence> {
        match self {
            SessionPersistencePlan::Write(value) => Some(value),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn supports_is_unknown_without_features_and_exact_with_them() {
        let listed = names(&["GRPCRoute", "HTTPRoute", "HTTPRouteRequestMirror"]);
        let cases = [
            ("HTTPRouteRequestMirror", Some(true)),
            ("GRPCRoute", Some(true)),
            ("HTTPRouteSessionPersistence", Some(false)),
            // Names are compared exactly, as Gateway API spells them.
            ("httproute", Some(false)),
        ];
        for (name, expected) in cases {
            assert_eq!(supports(Some(&listed), name), expected, "{name}");
            assert_eq!(supports(None, name), None, "{name}: not reported");
        }
        assert_eq!(supports(Some(&[]), "HTTPRoute"), Some(false));
    }

    #[test]
    fn several_parents_support_only_what_all_of_them_list() {
        let cases = [
            (vec![], None),
            (vec![None], None),
            (vec![Some(names(&["B", "A"]))], Some(names(&["A", "B"]))),
            (
                vec![Some(names(&["A", "B"])), Some(names(&["B", "C"]))],
                Some(names(&["B"])),
            ),
            (vec![Some(names(&["A"])), None], None),
        ];
        for (parents, expected) in cases {
            assert_eq!(common_features(parents.clone()), expected, "{parents:?}");
        }
    }

    #[test]
    fn session_persistence_is_written_only_where_the_class_lists_it() {
        let asked = SessionPersistence {
            session_name: Some("cart".into()),
            ..SessionPersistence::default()
        };
        let with = names(&["HTTPRoute", "HTTPRouteSessionPersistence"]);
        let cookie = names(&["GRPCRoute", "CookieSessionPersistence"]);
        let without = names(&["HTTPRoute", "HTTPRouteRequestMirror"]);
        assert_eq!(
            session_persistence_plan(None, RouteKind::Http, Some(&with)),
            SessionPersistencePlan::NotAsked
        );
        assert_eq!(
            session_persistence_plan(Some(&asked), RouteKind::Http, Some(&with)),
            SessionPersistencePlan::Write(asked.clone())
        );
        assert_eq!(
            session_persistence_plan(Some(&asked), RouteKind::Grpc, Some(&cookie)),
            SessionPersistencePlan::Write(asked.clone())
        );
        // The HTTPRoute feature says nothing of GRPCRoutes.
        assert!(matches!(
            session_persistence_plan(Some(&asked), RouteKind::Grpc, Some(&with)),
            SessionPersistencePlan::Unsupported(_)
        ));
        let SessionPersistencePlan::Unsupported(message) =
            session_persistence_plan(Some(&asked), RouteKind::Http, Some(&without))
        else {
            panic!("refused");
        };
        assert!(message.contains(SESSION_PERSISTENCE_FIELD), "{message}");
        let unknown = session_persistence_plan(Some(&asked), RouteKind::Http, None);
        assert_eq!(unknown.to_write(), None);
        let SessionPersistencePlan::Unknown(message) = unknown else {
            panic!("unknown");
        };
        assert!(message.contains("support is unknown"), "{message}");
        assert!(message.contains(SESSION_PERSISTENCE_FIELD), "{message}");
    }
}
