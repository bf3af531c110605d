//! Gateway API: the weights of the HTTPRoute or GRPCRoute named in `spec.traffic.gatewayAPI`.
//!
//! Waymark edits only the backendRefs to `<name>-stable` and `<name>-canary` in the rules that
//! already send traffic to `<name>-stable`; every other rule and backendRef is the route
//! owner's. Reading the weight ([`canary_weight`], [`route_state`]) and editing it
//! ([`set_route_weights`], [`restore_route`]) are pure functions over the route; the
//! controller reads the route from its watch cache and writes the edit by server-side apply
//! under its own field manager (the apply bodies are built with the other children, in
//! `controller::children`).

use kube::ResourceExt;

use super::route::{BackendRef, WeightedRoute};
use crate::api::{Role, RouteKind, SessionPersistence};

/// The HTTPRoute as the rollout core sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteState {
    /// The route exists and sends `canary_weight` percent to the canary.
    Ready {
        /// Percent of the route's traffic on `<name>-canary`.
        canary_weight: i32,
    },
    /// The route is missing or unusable; the text names the route and the Service.
    Unusable {
        /// What is wrong, naming the route and the Service.
        message: String,
    },
}

/// The Services a route edit concerns.
#[derive(Clone, Debug, PartialEq)]
pub struct Backends {
    /// The Release's name (Waymark's cohort rules are named `waymark-<name>-…`).
    pub release: String,
    /// `<name>-stable`.
    pub stable: String,
    /// `<name>-canary`.
    pub canary: String,
}

impl Backends {
    /// The stable and canary Services of a Release named `release`.
    pub fn of(release: &str) -> Backends {
        Backends {
            release: release.to_string(),
            stable: Role::Stable.child_name(release),
            canary: Role::Canary.child_name(release),
        }
    }
}

/// Whether `backend` points at Service `service` in the route's own namespace.
fn refers_to(backend: &impl BackendRef, service: &str, route_namespace: &str) -> bool {
    let core_group = backend.group().is_none_or(str::is_empty);
    let is_service = backend.kind().is_none_or(|kind| kind == "Service");
    let same_namespace = backend
        .namespace()
        .is_none_or(|namespace| namespace == route_namespace);
    backend.name() == service && core_group && is_service && same_namespace
}

/// The message for a route without a backendRef to the stable Service.
pub fn no_stable_backend_message<R: WeightedRoute>(route: &R, backends: &Backends) -> String {
    format!(
        "{} {}/{} has no backendRef to Service {}",
        R::KIND.kind(),
        route.namespace().unwrap_or_default(),
        route.name_any(),
        backends.stable
    )
}

/// The message for a route that does not exist.
pub fn missing_route_message(
    kind: RouteKind,
    namespace: &str,
    route: &str,
    backends: &Backends,
) -> String {
    format!(
        "{} {namespace}/{route} ({}) not found; it must exist with a backendRef to Service {}",
        kind.kind(),
        kind.field(),
        backends.stable
    )
}

/// The indices of the rules with a backendRef to the stable Service: the rules Waymark edits.
pub fn stable_rules<R: WeightedRoute>(route: &R, backends: &Backends) -> Vec<usize> {
    let namespace = route.namespace().unwrap_or_default();
    (0..route.rule_count())
        .filter(|&rule| {
            route
                .rule_backends(rule)
                .unwrap_or_default()
                .iter()
                .any(|backend| refers_to(backend, &backends.stable, &namespace))
        })
        .collect()
}

/// The canary's percentage of traffic in the first rule that sends traffic to the stable
/// Service, or the unusable-route message when no rule does.
///
/// Weights are proportional (an absent weight counts as 1), so the percentage is
/// `canary / (stable + canary)`, rounded; a rule whose two weights are both 0 sends the canary
/// nothing.
pub fn canary_weight<R: WeightedRoute>(route: &R, backends: &Backends) -> Result<i32, String> {
    let namespace = route.namespace().unwrap_or_default();
    for rule in 0..route.rule_count() {
        let refs = route.rule_backends(rule).unwrap_or_default();
        let weight_of = |service: &str| {
            refs.iter()
                .find(|backend| refers_to(*backend, service, &namespace))
                .map(|backend| i64::from(backend.weight().unwrap_or(1)))
        };
        let Some(stable) = weight_of(&backends.stable) else {
            continue;
        };
        let canary = weight_of(&backends.canary).unwrap_or(0);
        let total = stable + canary;
        if total <= 0 {
            return Ok(0);
        }
        let percent = (canary * 100 + total / 2) / total;
        return Ok(i32::try_from(percent).unwrap_or(0));
    }
    Err(no_stable_backend_message(route, backends))
}

/// Set the stable weight to `100 - canary_weight` and the canary weight to `canary_weight` in
/// every rule with a backendRef to the stable Service, adding the canary backendRef right
/// after the stable one (same port) where it is missing.
///
/// A canary weight of 0 gives the route back as its owner wrote it instead ([`restore_route`]:
/// Waymark's backendRef goes, the stable's weight is unset), which sends the stable all of the
/// traffic just the same: so a promotion, a rollback or an abort leaves the route as it was
/// before the canary, not with a backendRef of weight 0 to a Service whose pods are gone.
///
/// Returns whether the route changed, or the unusable-route message when no rule refers to
/// the stable Service. Other rules and backendRefs are left exactly as they are.
pub fn set_route_weights<R: WeightedRoute>(
    route: &mut R,
    backends: &Backends,
    canary_weight: i32,
) -> Result<bool, String> {
    let canary_weight = canary_weight.clamp(0, 100);
    if canary_weight == 0 {
        return restore_route(route, backends, None);
    }
    let stable_weight = 100 - canary_weight;
    let namespace = route.namespace().unwrap_or_default();
    let mut found_stable = false;
    let mut changed = false;

    for rule in 0..route.rule_count() {
        let Some(refs) = route.rule_backends_mut(rule) else {
            continue;
        };
        let Some(stable_index) = refs
            .iter()
            .position(|backend| refers_to(backend, &backends.stable, &namespace))
        else {
            continue;
        };
        found_stable = true;

        let stable = &mut refs[stable_index];
        if stable.weight() != Some(stable_weight) {
            stable.set_weight(Some(stable_weight));
            changed = true;
        }

        match refs
            .iter_mut()
            .find(|backend| refers_to(*backend, &backends.canary, &namespace))
        {
            Some(canary) => {
                if canary.weight() != Some(canary_weight) {
                    canary.set_weight(Some(canary_weight));
                    changed = true;
                }
            }
            None => {
                let canary = refs[stable_index].sibling(&backends.canary, canary_weight);
                refs.insert(stable_index + 1, canary);
                changed = true;
            }
        }
    }

    if found_stable {
        Ok(changed)
    } else {
        Err(no_stable_backend_message(route, backends))
    }
}

/// The route as the rollout core sees it: its canary weight, or why it cannot be used.
pub fn route_state<R: WeightedRoute>(
    route: Option<&R>,
    namespace: &str,
    route_name: &str,
    backends: &Backends,
) -> RouteState {
    match route {
        None => RouteState::Unusable {
            message: missing_route_message(R::KIND, namespace, route_name, backends),
        },
        Some(route) => match canary_weight(route, backends) {
            Ok(canary_weight) => RouteState::Ready { canary_weight },
            Err(message) => RouteState::Unusable { message },
        },
    }
}

/// Give `route` back as its owner wrote it before Waymark touched it, for a Release that goes:
/// in every rule with a backendRef to the stable Service, the backendRef to the canary Service
/// (the one Waymark adds) is removed and the stable's weight is unset, which Gateway API reads
/// as its default, 1. So all of the Release's traffic is on the stable backendRef, and the
/// rules are what a route naming the stable alone holds. A session persistence equal to
/// `written` (what Waymark passed through from the spec) is removed from those rules too; one
/// the owner wrote differently is the owner's and stays.
///
/// Waymark does not record the weight the owner gave the stable before its first edit: unset is
/// what a route that names the stable alone (as Waymark asks for) means, whatever number it had.
/// Other backendRefs and rules are left exactly as they are. Returns whether the route changed,
/// or the unusable-route message when no rule refers to the stable Service.
pub fn restore_route<R: WeightedRoute>(
    route: &mut R,
    backends: &Backends,
    written: Option<&SessionPersistence>,
) -> Result<bool, String> {
    let namespace = route.namespace().unwrap_or_default();
    let mut found_stable = false;
    let mut changed = false;
    for rule in 0..route.rule_count() {
        let Some(refs) = route.rule_backends_mut(rule) else {
            continue;
        };
        let Some(stable) = refs
            .iter_mut()
            .find(|backend| refers_to(*backend, &backends.stable, &namespace))
        else {
            continue;
        };
        found_stable = true;
        if stable.weight().is_some_and(|weight| weight != 1) {
            stable.set_weight(None);
            changed = true;
        }
        let before = refs.len();
        refs.retain(|backend| !refers_to(backend, &backends.canary, &namespace));
        changed |= refs.len() != before;
        if written.is_some() && route.rule_session_persistence(rule).as_ref() == written {
            route.set_rule_session_persistence(rule, None);
            changed = true;
        }
    }
    if found_stable {
        Ok(changed)
    } else {
        Err(no_stable_backend_message(route, backends))
    }
}

/// Write `session_persistence` on every rule with a backendRef to the stable Service (the rules
/// Waymark edits), where it differs. Returns whether the route changed. `None` writes nothing:
/// what the owner put there stays.
pub fn set_session_persistence<R: WeightedRoute>(
    route: &mut R,
    backends: &Backends,
    session_persistence: Option<&SessionPersistence>,
) -> bool {
    let Some(wanted) = session_persistence else {
        return false;
    };
    let mut changed = false;
    for rule in stable_rules(route, backends) {
        if route.rule_session_persistence(rule).as_ref() != Some(wanted) {
            route.set_rule_session_persistence(rule, Some(wanted));
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{http_route as route, route_backend as backend};
    use gateway_api::apis::experimental::httproutes::HttpRoute;

    fn refs(route: &HttpRoute, rule: usize) -> Vec<(String, Option<i32>)> {
        route.spec.rules.as_ref().unwrap()[rule]
            .backend_refs
            .as_ref()
            .unwrap()
            .iter()
            .map(|backend| (backend.name.clone(), backend.weight))
            .collect()
    }

    fn backends() -> Backends {
        Backends::of("checkout")
    }

    #[test]
    fn adds_the_canary_backend_next_to_the_stable_with_the_same_port() {
        let mut route = route(vec![vec![
            backend("other", Some(5)),
            backend("checkout-stable", None),
        ]]);
        let changed = set_route_weights(&mut route, &backends(), 10).unwrap();
        assert!(changed);
        assert_eq!(
            refs(&route, 0),
            [
                ("other".into(), Some(5)),
                ("checkout-stable".into(), Some(90)),
                ("checkout-canary".into(), Some(10)),
            ]
        );
        let canary = &route.spec.rules.as_ref().unwrap()[0]
            .backend_refs
            .as_ref()
            .unwrap()[2];
        assert_eq!(canary.port, Some(80));
    }

    #[test]
    fn sets_existing_weights_and_reports_no_change_when_already_set() {
        let mut route = route(vec![vec![
            backend("checkout-stable", Some(90)),
            backend("checkout-canary", Some(10)),
        ]]);
        assert!(set_route_weights(&mut route, &backends(), 50).unwrap());
        assert_eq!(
            refs(&route, 0),
            [
                ("checkout-stable".into(), Some(50)),
                ("checkout-canary".into(), Some(50)),
            ]
        );
        assert!(!set_route_weights(&mut route, &backends(), 50).unwrap());
    }

    #[test]
    fn leaves_rules_without_the_stable_backend_alone() {
        let mut route = route(vec![
            vec![backend("checkout-stable", Some(100))],
            vec![backend("static-assets", Some(3))],
        ]);
        set_route_weights(&mut route, &backends(), 100).unwrap();
        assert_eq!(
            refs(&route, 0),
            [
                ("checkout-stable".into(), Some(0)),
                ("checkout-canary".into(), Some(100)),
            ]
        );
        assert_eq!(refs(&route, 1), [("static-assets".into(), Some(3))]);
    }

    #[test]
    fn a_weight_of_zero_gives_the_route_back_as_the_owner_wrote_it() {
        let written = vec![
            vec![backend("legacy", Some(5)), backend("checkout-stable", None)],
            vec![backend("static-assets", Some(3))],
        ];
        let mut route = route(written.clone());
        assert!(set_route_weights(&mut route, &backends(), 50).unwrap());
        assert!(set_route_weights(&mut route, &backends(), 0).unwrap());
        assert_eq!(
            refs(&route, 0),
            [("legacy".into(), Some(5)), ("checkout-stable".into(), None)]
        );
        assert_eq!(refs(&route, 1), [("static-assets".into(), Some(3))]);
        assert_eq!(canary_weight(&route, &backends()), Ok(0));
        assert!(
            !set_route_weights(&mut route, &backends(), 0).unwrap(),
            "nothing more to write"
        );
    }

    #[test]
    fn experimental_channel_fields_survive_a_weight_edit() {
        // A route as a cluster with the experimental channel stores it: retries, session
        // persistence and timeouts must come back unchanged after Waymark writes weights.
        let stored = serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "checkout", "namespace": "shop", "resourceVersion": "7"},
            "spec": {
                "parentRefs": [{"name": "public"}],
                "rules": [{
                    "backendRefs": [{"name": "checkout-stable", "port": 80}],
                    "retry": {"codes": [502, 503], "attempts": 3, "backoff": "100ms"},
                    "sessionPersistence": {"sessionName": "cart", "type": "Cookie"},
                    "timeouts": {"request": "10s"}
                }]
            }
        });
        let mut route: HttpRoute = serde_json::from_value(stored.clone()).unwrap();
        assert!(set_route_weights(&mut route, &Backends::of("checkout"), 25).unwrap());
        let written = serde_json::to_value(&route).unwrap();
        let rule = &written["spec"]["rules"][0];
        for field in ["retry", "sessionPersistence", "timeouts"] {
            assert_eq!(rule[field], stored["spec"]["rules"][0][field], "{field}");
        }
        assert_eq!(rule["backendRefs"][0]["weight"], 75);
        assert_eq!(rule["backendRefs"][1]["name"], "checkout-canary");
        assert_eq!(rule["backendRefs"][1]["weight"], 25);
    }

    #[test]
    fn edits_every_rule_that_sends_to_the_stable() {
        let mut route = route(vec![
            vec![backend("checkout-stable", None)],
            vec![backend("checkout-stable", None)],
        ]);
        set_route_weights(&mut route, &backends(), 25).unwrap();
        for rule in 0..2 {
            assert_eq!(
                refs(&route, rule),
                [
                    ("checkout-stable".into(), Some(75)),
                    ("checkout-canary".into(), Some(25)),
                ]
            );
        }
    }

    #[test]
    fn a_route_without_the_stable_backend_is_unusable_and_names_route_and_service() {
        let mut route = route(vec![vec![backend("checkout", None)]]);
        let message = set_route_weights(&mut route, &backends(), 10).unwrap_err();
        assert_eq!(
            message,
            "HTTPRoute shop/checkout has no backendRef to Service checkout-stable"
        );
        assert_eq!(canary_weight(&route, &backends()).unwrap_err(), message);
        assert_eq!(refs(&route, 0), [("checkout".into(), None)], "untouched");
    }

    #[test]
    fn a_route_without_rules_is_unusable() {
        let mut route = route(vec![]);
        route.spec.rules = None;
        assert!(set_route_weights(&mut route, &backends(), 10).is_err());
    }

    #[test]
    fn backends_of_another_kind_or_namespace_are_not_the_stable_service() {
        let mut other_namespace = backend("checkout-stable", None);
        other_namespace.namespace = Some("elsewhere".into());
        let mut other_kind = backend("checkout-stable", None);
        other_kind.kind = Some("ServiceImport".into());
        other_kind.group = Some("multicluster.x-k8s.io".into());
        let mut route = route(vec![vec![other_namespace, other_kind]]);
        assert!(set_route_weights(&mut route, &backends(), 10).is_err());
    }

    #[test]
    fn reads_the_canary_weight_as_a_percentage_of_the_two_weights() {
        let cases = [
            (vec![backend("checkout-stable", None)], 0),
            (
                vec![
                    backend("checkout-stable", Some(90)),
                    backend("checkout-canary", Some(10)),
                ],
                10,
            ),
            (
                vec![
                    backend("checkout-stable", Some(1)),
                    backend("checkout-canary", Some(1)),
                ],
                50,
            ),
            (
                vec![
                    backend("checkout-stable", Some(0)),
                    backend("checkout-canary", Some(0)),
                ],
                0,
            ),
            (
                vec![
                    backend("other", Some(1000)),
                    backend("checkout-stable", Some(0)),
                    backend("checkout-canary", Some(7)),
                ],
                100,
            ),
        ];
        for (refs, expected) in cases {
            let route = route(vec![refs]);
            assert_eq!(canary_weight(&route, &backends()), Ok(expected));
        }
    }

    #[test]
    fn a_missing_route_is_unusable_and_names_the_field() {
        let state = route_state::<HttpRoute>(None, "shop", "checkout", &backends());
        let RouteState::Unusable { message } = state else {
            panic!("{state:?}");
        };
        assert!(
            message.contains("spec.traffic.gatewayAPI.httpRoute"),
            "{message}"
        );
        assert!(message.contains("shop/checkout"), "{message}");
    }

    #[test]
    fn restoring_takes_out_waymarks_backend_and_leaves_the_stable_with_all_the_traffic() {
        // (rule as it is, rule as the owner wrote it, changed)
        let cases = [
            (
                vec![
                    backend("checkout-stable", Some(80)),
                    backend("checkout-canary", Some(20)),
                ],
                vec![("checkout-stable".to_string(), None)],
                true,
            ),
            (
                vec![
                    backend("checkout-stable", Some(100)),
                    backend("checkout-canary", Some(0)),
                ],
                vec![("checkout-stable".to_string(), None)],
                true,
            ),
            (
                // A canary at 100%: the stable had weight 0.
                vec![
                    backend("checkout-stable", Some(0)),
                    backend("checkout-canary", Some(100)),
                ],
                vec![("checkout-stable".to_string(), None)],
                true,
            ),
            (
                // The owner's own backends in the rule stay as they are, in their place.
                vec![
                    backend("legacy", Some(5)),
                    backend("checkout-stable", Some(70)),
                    backend("checkout-canary", Some(30)),
                ],
                vec![
                    ("legacy".to_string(), Some(5)),
                    ("checkout-stable".to_string(), None),
                ],
                true,
            ),
            (
                // As the API server stores an unset weight: nothing to write.
                vec![backend("checkout-stable", Some(1))],
                vec![("checkout-stable".to_string(), Some(1))],
                false,
            ),
            (
                vec![backend("checkout-stable", None)],
                vec![("checkout-stable".to_string(), None)],
                false,
            ),
        ];
        for (rule, restored, changed) in cases {
            let mut route = route(vec![rule.clone(), vec![backend("static-assets", Some(7))]]);
            assert_eq!(
                restore_route(&mut route, &backends(), None),
                Ok(changed),
                "{rule:?}"
            );
            assert_eq!(refs(&route, 0), restored, "{rule:?}");
            assert_eq!(
                refs(&route, 1),
                [("static-assets".into(), Some(7))],
                "other rules untouched"
            );
        }
    }

    #[test]
    fn restoring_a_route_without_the_stable_backend_is_refused_naming_route_and_service() {
        let mut route = route(vec![vec![backend("checkout-canary", Some(20))]]);
        assert_eq!(
            restore_route(&mut route, &backends(), None),
            Err("HTTPRoute shop/checkout has no backendRef to Service checkout-stable".into())
        );
        assert_eq!(refs(&route, 0), [("checkout-canary".into(), Some(20))]);
    }
}
