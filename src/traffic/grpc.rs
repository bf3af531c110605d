//! GRPCRoute rules Waymark adds of its own: a header cohort sent to the canary.
//!
//! The cohort steps (`setHeaderRoute`) add to the route, per active cohort, one rule named
//! `waymark-<release>-<cohort>` that Waymark alone owns. On a GRPCRoute such a rule matches gRPC
//! headers (Gateway API's `GRPCHeaderMatch`: `Exact` or `RegularExpression`) on top of the
//! method matches of the rule it routes for, and sends all of its requests to `<name>-canary`.
//! This module builds that rule from plain values; which cohorts are active is the steps'.

use gateway_api::apis::experimental::grpcroutes::{
    GrpcRoute, GrpcRouteRules, GrpcRouteRulesMatches, GrpcRouteRulesMatchesHeaders,
    GrpcRouteRulesMatchesHeadersType, GrpcRouteRulesMatchesMethodType,
};

use super::cohort::cookie_regex;
use super::gateway::{Backends, no_stable_backend_message};
use super::route::BackendRef;
use crate::api::{MatchType, RouteAdditions};

/// How a cohort's header value is matched, as Gateway API defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderMatchType {
    /// The header's value equals the value.
    Exact,
    /// The header's value matches the value as a regular expression (RE2 in most gateways).
    RegularExpression,
}

/// The name of the rule Waymark adds for `cohort` of `release`: `waymark-<release>-<cohort>`
/// (Gateway API rule names are unique within a route, so the release's name keeps two Releases
/// on one route apart).
pub fn cohort_rule_name(release: &str, cohort: &str) -> String {
    format!("waymark-{release}-{cohort}")
}

/// The GRPCRoute rule `rule_name` that sends the requests carrying every header of `headers`
/// (name, value, how it matches) to the canary, and only those of them that `routed` (the
/// user's rule it routes for) would take: each of `routed`'s matches is kept with its method
/// match and its own headers, and the cohort's headers are added to it (a header of the same
/// name, compared without case as gRPC metadata is, is replaced: Gateway API considers only
/// the first match of a name). A rule without matches matches every request, so it becomes one
/// match of the cohort's headers alone.
///
/// Its only backendRef is `<name>-canary`, on the port (and group, kind, namespace) of
/// `routed`'s backendRef to `<name>-stable`, or without a port when `routed` has none. Filters,
/// timeouts and session persistence of `routed` are not copied: the cohort rule routes, the
/// owner's rule shapes.
pub fn cohort_rule(
    rule_name: &str,
    headers: &[(String, String, HeaderMatchType)],
    routed: &GrpcRouteRules,
    backends: &Backends,
) -> GrpcRouteRules {
    let cohort_headers: Vec<GrpcRouteRulesMatchesHeaders> = headers
        .iter()
        .map(|(name, value, match_type)| GrpcRouteRulesMatchesHeaders {
            name: name.clone(),
            value: value.clone(),
            r#type: Some(match match_type {
                HeaderMatchType::Exact => GrpcRouteRulesMatchesHeadersType::Exact,
                HeaderMatchType::RegularExpression => {
                    GrpcRouteRulesMatchesHeadersType::RegularExpression
                }
            }),
        })
        .collect();
    let routed_matches = routed
        .matches
        .clone()
        .filter(|matches| !matches.is_empty())
        .unwrap_or_else(|| vec![GrpcRouteRulesMatches::default()]);
    let matches = routed_matches
        .into_iter()
        .map(|mut routed_match| {
            let mut merged: Vec<GrpcRouteRulesMatchesHeaders> = routed_match
                .headers
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter(|own| {
                    !cohort_headers
                        .iter()
                        .any(|cohort| cohort.name.eq_ignore_ascii_case(&own.name))
                })
                .collect();
            merged.extend(cohort_headers.iter().cloned());
            routed_match.headers = (!merged.is_empty()).then_some(merged);
            routed_match
        })
        .collect();
    let stable = routed
        .backend_refs
        .iter()
        .flatten()
        .find(|backend| backend.name() == backends.stable);
    let canary = match stable {
        Some(stable) => {
            let mut canary = stable.sibling(&backends.canary, 1);
            // The only backend: all of the rule's requests, whatever a weight would say.
            canary.set_weight(None);
            canary
        }
        None => gateway_api::apis::experimental::grpcroutes::GrpcRouteRulesBackendRefs {
            name: backends.canary.clone(),
            ..Default::default()
        },
    };
    GrpcRouteRules {
        name: Some(rule_name.to_string()),
        matches: Some(matches),
        backend_refs: Some(vec![canary]),
        ..GrpcRouteRules::default()
    }
}

/// Whether `rule` is a cohort rule Waymark wrote for `release`: named `waymark-<release>-…` and
/// sending its requests to the release's canary (the second half keeps Release `a` from taking
/// Release `a-b`'s rules for its own).
fn is_waymark_rule(rule: &GrpcRouteRules, release: &str, backends: &Backends) -> bool {
    rule.name
        .as_deref()
        .is_some_and(|name| name.starts_with(&format!("waymark-{release}-")))
        && rule
            .backend_refs
            .iter()
            .flatten()
            .any(|backend| backend.name == backends.canary)
}

/// Whether `route` carries a cohort rule Waymark added for `release`.
pub fn carries_additions(route: &GrpcRoute, release: &str) -> bool {
    let backends = Backends::of(release);
    route
        .spec
        .rules
        .iter()
        .flatten()
        .any(|rule| is_waymark_rule(rule, release, &backends))
}

/// Take every cohort rule Waymark added for `release` out of `route`; the user's rules are
/// untouched (Waymark appends its own after them). Returns whether the route changed.
pub fn strip_additions(route: &mut GrpcRoute, release: &str) -> bool {
    let backends = Backends::of(release);
    let Some(rules) = route.spec.rules.as_mut() else {
        return false;
    };
    let count = rules.len();
    rules.retain(|rule| !is_waymark_rule(rule, release, &backends));
    rules.len() != count
}

/// Make `route` carry exactly the cohorts of `additions` for `release`: the cohort rules of
/// another moment are taken out, one rule per wanted cohort appended ([`cohort_rule`], routing
/// for every rule that sends traffic to the stable: their method matches together). A cohort's
/// headers are gRPC header matches; a cookie is a `RegularExpression` match on the `cookie`
/// header ([`cookie_regex`]). Query parameters and mirrors have no meaning on a GRPCRoute (the
/// spec check refuses them): they are refused here too, naming the field. Returns whether the
/// route changed, or why it cannot carry them.
pub fn set_additions(
    route: &mut GrpcRoute,
    release: &str,
    additions: &RouteAdditions,
) -> Result<bool, String> {
    if !additions.mirrors.is_empty() {
        return Err(GRPC_MIRROR_MESSAGE.into());
    }
    if additions
        .cohorts
        .iter()
        .any(|cohort| !cohort.route_match.query_params.is_empty())
    {
        return Err(GRPC_QUERY_PARAMS_MESSAGE.into());
    }
    let backends = Backends::of(release);
    let before = route.spec.rules.clone();
    strip_additions(route, release);
    let rules = route.spec.rules.get_or_insert_with(Vec::new);
    let stable_rules: Vec<&GrpcRouteRules> = rules
        .iter()
        .filter(|rule| {
            rule.backend_refs
                .iter()
                .flatten()
                .any(|backend| backend.name == backends.stable)
        })
        .collect();
    let Some(first) = stable_rules.first() else {
        route.spec.rules = before;
        return Err(no_stable_backend_message(route, &backends));
    };
    // One rule routing for all the stable's rules: their matches ORed, or every request when
    // one of them has no matches.
    let every_request = stable_rules
        .iter()
        .any(|rule| rule.matches.as_deref().is_none_or(<[_]>::is_empty));
    let routed = GrpcRouteRules {
        matches: (!every_request).then(|| {
            stable_rules
                .iter()
                .flat_map(|rule| rule.matches.iter().flatten().cloned())
                .collect()
        }),
        backend_refs: first.backend_refs.clone(),
        ..GrpcRouteRules::default()
    };
    let added: Vec<GrpcRouteRules> = additions
        .cohorts
        .iter()
        .map(|cohort| {
            let headers: Vec<(String, String, HeaderMatchType)> = cohort
                .route_match
                .headers
                .iter()
                .map(|header| {
                    (
                        header.name.clone(),
                        header.value.clone(),
                        header_match_type(header.match_type),
                    )
                })
                .chain(cohort.route_match.cookies.iter().map(|cookie| {
                    (
                        "cookie".to_string(),
                        cookie_regex(&cookie.name, &cookie.value, cookie.match_type),
                        HeaderMatchType::RegularExpression,
                    )
                }))
                .collect();
            cohort_rule(
                &cohort_rule_name(release, &cohort.name),
                &headers,
                &routed,
                &backends,
            )
        })
        .collect();
    rules.extend(added);
    // The API server stores Gateway API's defaults (a backendRef's group, kind and weight, a
    // match's type): a route read back differs from the one built only by them, and is already
    // as wanted then. It is given back as read, so that nothing is written.
    if with_defaults(route.spec.rules.as_deref()) == with_defaults(before.as_deref()) {
        route.spec.rules = before;
        return Ok(false);
    }
    Ok(true)
}

/// Why a mirror step cannot go on a GRPCRoute (spec check and route edit say the same).
pub const GRPC_MIRROR_MESSAGE: &str = "spec.steps[].setMirrorRoute needs \
     spec.traffic.gatewayAPI.httpRoute: Gateway API has no request mirroring on a GRPCRoute; \
     remove the step or route through an HTTPRoute";

/// Why a cohort's query parameters cannot go on a GRPCRoute.
pub const GRPC_QUERY_PARAMS_MESSAGE: &str = "spec.steps[].setHeaderRoute.match.queryParams \
     cannot be matched on a GRPCRoute (gRPC requests have no query string): match headers or \
     cookies instead";

/// The Gateway API match type of a spec's `MatchType`.
fn header_match_type(match_type: MatchType) -> HeaderMatchType {
    match match_type {
        MatchType::Exact => HeaderMatchType::Exact,
        MatchType::RegularExpression => HeaderMatchType::RegularExpression,
    }
}

/// `rules` with Gateway API's defaults filled in where they are unset, as the API server
/// stores them: for comparing a route built here with one read back.
fn with_defaults(rules: Option<&[GrpcRouteRules]>) -> Vec<GrpcRouteRules> {
    let mut rules = rules.unwrap_or_default().to_vec();
    for rule in &mut rules {
        for backend in rule.backend_refs.iter_mut().flatten() {
            backend.group.get_or_insert_with(String::new);
            backend.kind.get_or_insert_with(|| "Service".into());
            backend.weight.get_or_insert(1);
        }
        for route_match in rule.matches.iter_mut().flatten() {
            if let Some(method) = route_match.method.as_mut() {
                method
                    .r#type
                    .get_or_insert(GrpcRouteRulesMatchesMethodType::Exact);
            }
            for header in route_match.headers.iter_mut().flatten() {
                header
                    .r#type
                    .get_or_insert(GrpcRouteRulesMatchesHeadersType::Exact);
            }
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(value: serde_json::Value) -> GrpcRouteRules {
        serde_json::from_value(value).unwrap()
    }

    fn header(
        name: &str,
        value: &str,
        match_type: HeaderMatchType,
    ) -> (String, String, HeaderMatchType) {
        (name.into(), value.into(), match_type)
    }

    #[test]
    fn a_cohort_rule_keeps_the_routed_method_matches_adds_the_headers_and_sends_all_to_the_canary()
    {
        // (the user's rule, the cohort's headers, the rule Waymark adds)
        let cases = [
            (
                json!({"matches": [{"method": {"service": "shop.Cart", "method": "Add"}}],
                       "backendRefs": [{"name": "checkout-stable", "port": 9090, "weight": 90},
                                       {"name": "checkout-canary", "port": 9090, "weight": 10}],
                       "filters": [{"type": "RequestHeaderModifier",
                                    "requestHeaderModifier": {"set": [{"name": "x", "value": "y"}]}}]}),
                vec![header("x-canary", "true", HeaderMatchType::Exact)],
                json!({"name": "waymark-checkout-beta",
                       "matches": [{"method": {"service": "shop.Cart", "method": "Add"},
                                    "headers": [{"name": "x-canary", "value": "true", "type": "Exact"}]}],
                       "backendRefs": [{"name": "checkout-canary", "port": 9090}]}),
            ),
            (
                // No matches: every request, so the cohort's headers alone.
                json!({"backendRefs": [{"name": "checkout-stable", "port": 9090}]}),
                vec![
                    header("x-canary", "true", HeaderMatchType::Exact),
                    header("x-user", "^beta-.*$", HeaderMatchType::RegularExpression),
                ],
                json!({"name": "waymark-checkout-beta",
                       "matches": [{"headers": [
                           {"name": "x-canary", "value": "true", "type": "Exact"},
                           {"name": "x-user", "value": "^beta-.*$", "type": "RegularExpression"}]}],
                       "backendRefs": [{"name": "checkout-canary", "port": 9090}]}),
            ),
            (
                // Two matches (ORed) stay two; the user's own header of the same name (any case)
                // gives way, another one stays.
                json!({"matches": [
                           {"method": {"service": "shop.Cart"},
                            "headers": [{"name": "X-Canary", "value": "no"}, {"name": "tenant", "value": "eu"}]},
                           {"method": {"service": "shop.Orders"}}],
                       "backendRefs": [{"name": "checkout-stable", "port": 9090}]}),
                vec![header("x-canary", "true", HeaderMatchType::Exact)],
                json!({"name": "waymark-checkout-beta",
                       "matches": [
                           {"method": {"service": "shop.Cart"},
                            "headers": [{"name": "tenant", "value": "eu"},
                                        {"name": "x-canary", "value": "true", "type": "Exact"}]},
                           {"method": {"service": "shop.Orders"},
                            "headers": [{"name": "x-canary", "value": "true", "type": "Exact"}]}],
                       "backendRefs": [{"name": "checkout-canary", "port": 9090}]}),
            ),
        ];
        for (routed, headers, expected) in cases {
            let built = cohort_rule(
                &cohort_rule_name("checkout", "beta"),
                &headers,
                &rule(routed.clone()),
                &Backends::of("checkout"),
            );
            assert_eq!(serde_json::to_value(&built).unwrap(), expected, "{routed}");
        }
    }

    #[test]
    fn the_user_rule_is_not_changed_by_building_a_cohort_rule() {
        let routed = rule(json!({"matches": [{"method": {"service": "shop.Cart"}}],
                                 "backendRefs": [{"name": "checkout-stable", "port": 9090}]}));
        let before = routed.clone();
        let _ = cohort_rule(
            "waymark-checkout-beta",
            &[header("x-canary", "true", HeaderMatchType::Exact)],
            &routed,
            &Backends::of("checkout"),
        );
        assert_eq!(routed, before);
    }
}

#[cfg(test)]
mod additions_tests {
    use super::*;
    use crate::api::{ActiveCohort, ActiveMirror, RouteMatch, ValueMatch};
    use serde_json::json;

    const RELEASE: &str = "checkout";

    fn grpc_route(rules: serde_json::Value) -> GrpcRoute {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GRPCRoute",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"parentRefs": [{"name": "public"}], "rules": rules}
        }))
        .unwrap()
    }

    /// A user's route of several rules: two to the stable (one weighted with the canary), one
    /// to another Service, one of another Release's cohorts.
    fn users_route() -> GrpcRoute {
        grpc_route(json!([
            {"matches": [{"method": {"service": "shop.Cart", "method": "Add"}}],
             "backendRefs": [{"name": "checkout-stable", "port": 9090, "weight": 80},
                             {"name": "checkout-canary", "port": 9090, "weight": 20}]},
            {"matches": [{"method": {"service": "shop.Orders"}}],
             "backendRefs": [{"name": "checkout-stable", "port": 9090}]},
            {"matches": [{"method": {"service": "shop.Search"}}],
             "backendRefs": [{"name": "search", "port": 9090}]},
            {"name": "waymark-checkout-b-beta",
             "backendRefs": [{"name": "checkout-b-canary", "port": 9090}]}
        ]))
    }

    fn cohort(name: &str, route_match: RouteMatch) -> ActiveCohort {
        ActiveCohort {
            name: name.into(),
            route_match,
        }
    }

    fn exact(name: &str, value: &str) -> ValueMatch {
        ValueMatch {
            name: name.into(),
            value: value.into(),
            match_type: MatchType::Exact,
        }
    }

    fn headers(list: Vec<ValueMatch>) -> RouteMatch {
        RouteMatch {
            headers: list,
            ..RouteMatch::default()
        }
    }

    fn rules(route: &GrpcRoute) -> serde_json::Value {
        serde_json::to_value(&route.spec.rules).unwrap()
    }

    #[test]
    fn cohorts_become_named_grpc_header_rules_and_come_off_leaving_the_users_rules_byte_identical()
    {
        let original = users_route();
        let beta = cohort("beta", headers(vec![exact("x-canary", "true")]));
        let staff = cohort(
            "staff",
            RouteMatch {
                cookies: vec![exact("team", "ops")],
                ..RouteMatch::default()
            },
        );
        // (cohorts wanted, the rules Waymark appends after the user's four)
        let cases = [
            (vec![], json!([])),
            (
                vec![beta.clone()],
                json!([{"name": "waymark-checkout-beta",
                        "matches": [
                            {"method": {"service": "shop.Cart", "method": "Add"},
                             "headers": [{"name": "x-canary", "value": "true", "type": "Exact"}]},
                            {"method": {"service": "shop.Orders"},
                             "headers": [{"name": "x-canary", "value": "true", "type": "Exact"}]}],
                        "backendRefs": [{"name": "checkout-canary", "port": 9090}]}]),
            ),
            (
                vec![beta.clone(), staff.clone()],
                json!([
                    {"name": "waymark-checkout-beta",
                     "matches": [
                         {"method": {"service": "shop.Cart", "method": "Add"},
                          "headers": [{"name": "x-canary", "value": "true", "type": "Exact"}]},
                         {"method": {"service": "shop.Orders"},
                          "headers": [{"name": "x-canary", "value": "true", "type": "Exact"}]}],
                     "backendRefs": [{"name": "checkout-canary", "port": 9090}]},
                    {"name": "waymark-checkout-staff",
                     "matches": [
                         {"method": {"service": "shop.Cart", "method": "Add"},
                          "headers": [{"name": "cookie",
                                       "value": cookie_regex("team", "ops", MatchType::Exact),
                                       "type": "RegularExpression"}]},
                         {"method": {"service": "shop.Orders"},
                          "headers": [{"name": "cookie",
                                       "value": cookie_regex("team", "ops", MatchType::Exact),
                                       "type": "RegularExpression"}]}],
                     "backendRefs": [{"name": "checkout-canary", "port": 9090}]}
                ]),
            ),
        ];
        for (cohorts, appended) in cases {
            let additions = RouteAdditions {
                cohorts,
                mirrors: vec![],
            };
            let mut route = original.clone();
            let changed = set_additions(&mut route, RELEASE, &additions).unwrap();
            assert_eq!(changed, !additions.cohorts.is_empty(), "{appended}");
            let mut expected = rules(&original);
            expected
                .as_array_mut()
                .unwrap()
                .extend(appended.as_array().unwrap().iter().cloned());
            assert_eq!(rules(&route), expected);
            assert_eq!(
                carries_additions(&route, RELEASE),
                !additions.cohorts.is_empty()
            );
            // Another Release's rule is not this one's.
            assert!(!carries_additions(&original, RELEASE));
            // Writing the same again changes nothing; taking one away keeps the other.
            assert_eq!(set_additions(&mut route, RELEASE, &additions), Ok(false));
            let mut fewer = additions.clone();
            if fewer.cohorts.len() == 2 {
                fewer.cohorts.remove(0);
                let mut one_less = route.clone();
                assert_eq!(set_additions(&mut one_less, RELEASE, &fewer), Ok(true));
                let names: Vec<_> = one_less
                    .spec
                    .rules
                    .iter()
                    .flatten()
                    .filter_map(|rule| rule.name.clone())
                    .collect();
                assert_eq!(names, ["waymark-checkout-b-beta", "waymark-checkout-staff"]);
            }
            // Both ways back give the user's rules byte for byte.
            let mut removed = route.clone();
            set_additions(&mut removed, RELEASE, &RouteAdditions::default()).unwrap();
            assert_eq!(
                serde_json::to_string(&removed.spec.rules).unwrap(),
                serde_json::to_string(&original.spec.rules).unwrap()
            );
            strip_additions(&mut route, RELEASE);
            assert_eq!(route, original);
        }
    }

    #[test]
    fn a_grpc_route_read_back_with_the_api_servers_defaults_is_already_as_wanted() {
        let additions = RouteAdditions {
            cohorts: vec![cohort("beta", headers(vec![exact("x-canary", "true")]))],
            mirrors: vec![],
        };
        let mut written = users_route();
        set_additions(&mut written, RELEASE, &additions).unwrap();
        // What the API server stores: every default filled in.
        let mut stored = rules(&written);
        for rule in stored.as_array_mut().unwrap() {
            for backend in rule["backendRefs"].as_array_mut().unwrap() {
                backend["group"] = "".into();
                backend["kind"] = "Service".into();
                backend["weight"] = backend.get("weight").cloned().unwrap_or(1.into());
            }
            for route_match in rule
                .get_mut("matches")
                .and_then(|m| m.as_array_mut())
                .into_iter()
                .flatten()
            {
                if let Some(method) = route_match.get_mut("method") {
                    method["type"] = "Exact".into();
                }
            }
        }
        let mut read_back = written.clone();
        read_back.spec.rules = serde_json::from_value(stored).unwrap();
        let as_read = read_back.clone();
        assert_eq!(
            set_additions(&mut read_back, RELEASE, &additions),
            Ok(false)
        );
        assert_eq!(read_back, as_read, "left as read");
        assert_eq!(
            set_additions(&mut read_back, RELEASE, &RouteAdditions::default()),
            Ok(true)
        );
    }

    #[test]
    fn mirrors_query_parameters_and_a_route_without_the_stable_are_refused_naming_the_field() {
        let query = RouteAdditions {
            cohorts: vec![cohort(
                "beta",
                RouteMatch {
                    query_params: vec![exact("canary", "1")],
                    ..RouteMatch::default()
                },
            )],
            mirrors: vec![],
        };
        let mirror = RouteAdditions {
            cohorts: vec![],
            mirrors: vec![ActiveMirror {
                name: "shadow".into(),
                percent: 20,
                route_match: None,
            }],
        };
        let beta = RouteAdditions {
            cohorts: vec![cohort("beta", headers(vec![exact("x-canary", "true")]))],
            mirrors: vec![],
        };
        let no_stable = grpc_route(json!([{"backendRefs": [{"name": "search"}]}]));
        let cases = [
            (users_route(), query, "queryParams"),
            (users_route(), mirror, "setMirrorRoute"),
            (no_stable, beta, "checkout-stable"),
        ];
        for (route, additions, field) in cases {
            let mut edited = route.clone();
            let refused = set_additions(&mut edited, RELEASE, &additions).unwrap_err();
            assert!(refused.contains(field), "{refused}");
            assert_eq!(edited, route, "left alone");
        }
    }
}
