//! Gateway API: the cohorts and mirrors of a Release's HTTPRoute, as pure edits of the route.
//!
//! Beside the weights ([`super::gateway`]), Waymark adds two kinds of parts to the user's route,
//! each recognisable as its own so that taking them away leaves the user's rules exactly as they
//! were:
//!
//! - **A rule per cohort**, named `waymark-<release>-<cohort>`, appended after the user's rules.
//!   Its matches are the path and method matches of every rule that sends traffic to
//!   `<release>-stable` (the default `PathPrefix /` where a rule has none), each with the
//!   cohort's headers and query parameters added; it sends everything to `<release>-canary`.
//!   Gateway API prefers the rule whose match has more header matches, so the cohort's requests
//!   take this rule and the others keep the user's. Gateway API has no cookie match: a cookie is
//!   written as a `RegularExpression` match on the `Cookie` header, anchored so that the cookie's
//!   name and value are a whole `name=value` pair between `;` separators ([`cookie_regex`]).
//! - **A `RequestMirror` filter** with `percent`, sending a copy to `<release>-canary`: on every
//!   rule that sends traffic to the stable, or, for a mirror with its own `match`, on a rule of
//!   its own named `waymark-<release>-<mirror>` that copies the matches as a cohort does and
//!   serves its requests like the stable's rule (same backendRefs and weights).
//!
//! `spec.rules` is an atomic list in the Gateway API CRD: whoever applies it owns all of it. So
//! Waymark's server-side apply always carries the whole list (the user's rules as read, plus its
//! own parts); another field manager applying the route's Git version takes the rules back and
//! Waymark's parts vanish, the watch sees it and the next reconcile adds them again, within
//! seconds. Everything here is a function of the route and the wanted parts: no I/O.

use gateway_api::apis::experimental::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesFilters,
    HttpRouteRulesFiltersRequestMirror, HttpRouteRulesFiltersRequestMirrorBackendRef,
    HttpRouteRulesFiltersType, HttpRouteRulesMatches, HttpRouteRulesMatchesHeaders,
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPath, HttpRouteRulesMatchesPathType,
    HttpRouteRulesMatchesQueryParams, HttpRouteRulesMatchesQueryParamsType,
};
use kube::ResourceExt;

use super::gateway::{Backends, no_stable_backend_message, restore_route};
use crate::api::{MatchType, RouteAdditions, RouteMatch};

/// The Gateway API feature a GatewayClass lists when its Gateways mirror requests.
pub const FEATURE_MIRROR: &str = "HTTPRouteRequestMirror";
/// The Gateway API feature a GatewayClass lists when its Gateways mirror a percentage.
pub const FEATURE_PERCENTAGE_MIRROR: &str = "HTTPRouteRequestPercentageMirror";

/// The name of the rule Waymark writes for cohort (or matched mirror) `name` of `release`.
pub fn rule_name(release: &str, name: &str) -> String {
    format!("waymark-{release}-{name}")
}

/// Whether `rule` is one Waymark wrote for `release`: named `waymark-<release>-…` and sending
/// traffic (or a mirror) to the release's canary. The second half keeps Release `a` from taking
/// Release `a-b`'s rules for its own.
fn is_waymark_rule(rule: &HttpRouteRules, release: &str, backends: &Backends) -> bool {
    let named = rule
        .name
        .as_deref()
        .is_some_and(|name| name.starts_with(&format!("waymark-{release}-")));
    let to_canary = rule
        .backend_refs
        .iter()
        .flatten()
        .any(|backend| backend.name == backends.canary)
        || rule
            .filters
            .iter()
            .flatten()
            .any(|filter| is_waymark_mirror(filter, backends));
    named && to_canary
}

/// Whether `filter` is a mirror Waymark added: a `RequestMirror` to the canary Service.
fn is_waymark_mirror(filter: &HttpRouteRulesFilters, backends: &Backends) -> bool {
    filter.r#type == HttpRouteRulesFiltersType::RequestMirror
        && filter.request_mirror.as_ref().is_some_and(|mirror| {
            let backend = &mirror.backend_ref;
            backend.name == backends.canary
                && backend.group.as_deref().is_none_or(str::is_empty)
                && backend.kind.as_deref().is_none_or(|kind| kind == "Service")
                && backend.namespace.is_none()
        })
}

/// Whether `route` carries anything Waymark added for `release` (a cohort rule, a mirror).
pub fn carries_additions(route: &HttpRoute, release: &str) -> bool {
    let backends = Backends::of(release);
    route.spec.rules.iter().flatten().any(|rule| {
        is_waymark_rule(rule, release, &backends)
            || rule
                .filters
                .iter()
                .flatten()
                .any(|filter| is_waymark_mirror(filter, &backends))
    })
}

/// Take every part Waymark added for `release` out of `route`: its named rules and its mirror
/// filters. The user's rules come back as they were before Waymark's first edit. Returns
/// whether the route changed.
pub fn strip_additions(route: &mut HttpRoute, release: &str) -> bool {
    let backends = Backends::of(release);
    let Some(rules) = route.spec.rules.as_mut() else {
        return false;
    };
    let before = rules.clone();
    rules.retain(|rule| !is_waymark_rule(rule, release, &backends));
    for rule in rules.iter_mut() {
        if let Some(filters) = rule.filters.as_mut() {
            let count = filters.len();
            filters.retain(|filter| !is_waymark_mirror(filter, &backends));
            // A filter list Waymark created holds nothing of the user's: it goes whole.
            if filters.is_empty() && count > 0 {
                rule.filters = None;
            }
        }
    }
    *rules != before
}

/// Give `route` back as its owner wrote it: every cohort rule and mirror of the Release taken
/// out ([`strip_additions`]; first, since a matched mirror's own rule names the stable too),
/// then its weights ([`restore_route`]). Returns whether the route changed, or the
/// unusable-route message when no rule sends traffic to the stable.
pub fn restore_all(route: &mut HttpRoute, backends: &Backends) -> Result<bool, String> {
    let before = route.spec.rules.clone();
    let stripped = strip_additions(route, &backends.release);
    match restore_route(route, backends, None) {
        Ok(changed) => Ok(stripped || changed),
        Err(message) => {
            route.spec.rules = before;
            Err(message)
        }
    }
}

/// Make `route` carry exactly `additions` for `release` (and nothing else of Waymark's but the
/// weights): the cohorts and mirrors of another moment are taken out, the wanted ones written
/// (see the module documentation). Returns whether the route changed, or the unusable-route
/// message when no rule sends traffic to the stable.
pub fn set_additions(
    route: &mut HttpRoute,
    release: &str,
    additions: &RouteAdditions,
) -> Result<bool, String> {
    let backends = Backends::of(release);
    let before = route.spec.rules.clone();
    strip_additions(route, release);
    let namespace = route.namespace().unwrap_or_default();
    let rules = route.spec.rules.get_or_insert_with(Vec::new);
    let stable_rules: Vec<usize> = rules
        .iter()
        .enumerate()
        .filter(|(_, rule)| stable_backend(rule, &backends, &namespace).is_some())
        .map(|(index, _)| index)
        .collect();
    let Some(&first) = stable_rules.first() else {
        route.spec.rules = before;
        return Err(no_stable_backend_message(route, &backends));
    };
    let port = stable_backend(&rules[first], &backends, &namespace).and_then(|b| b.port);
    let user_matches: Vec<HttpRouteRulesMatches> = stable_rules
        .iter()
        .flat_map(|&index| path_and_method_matches(&rules[index]))
        .collect();

    let mut added = Vec::new();
    for mirror in &additions.mirrors {
        let filter = mirror_filter(&backends, port, mirror.percent);
        match &mirror.route_match {
            None => {
                for &index in &stable_rules {
                    rules[index]
                        .filters
                        .get_or_insert_with(Vec::new)
                        .push(filter.clone());
                }
            }
            Some(route_match) => added.push(HttpRouteRules {
                name: Some(rule_name(release, &mirror.name)),
                matches: Some(with_match(&user_matches, route_match)),
                filters: Some(vec![filter]),
                backend_refs: rules[first].backend_refs.clone(),
                ..HttpRouteRules::default()
            }),
        }
    }
    for cohort in &additions.cohorts {
        added.push(HttpRouteRules {
            name: Some(rule_name(release, &cohort.name)),
            matches: Some(with_match(&user_matches, &cohort.route_match)),
            backend_refs: Some(vec![HttpRouteRulesBackendRefs {
                name: backends.canary.clone(),
                port,
                ..HttpRouteRulesBackendRefs::default()
            }]),
            ..HttpRouteRules::default()
        });
    }
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

/// `rules` with Gateway API's defaults filled in where they are unset, as the API server
/// stores them: for comparing a route built here with one read back.
fn with_defaults(rules: Option<&[HttpRouteRules]>) -> Vec<HttpRouteRules> {
    let mut rules = rules.unwrap_or_default().to_vec();
    for rule in &mut rules {
        for backend in rule.backend_refs.iter_mut().flatten() {
            backend.group.get_or_insert_with(String::new);
            backend.kind.get_or_insert_with(|| "Service".into());
            backend.weight.get_or_insert(1);
        }
        for filter in rule.filters.iter_mut().flatten() {
            if let Some(mirror) = filter.request_mirror.as_mut() {
                mirror.backend_ref.group.get_or_insert_with(String::new);
                mirror
                    .backend_ref
                    .kind
                    .get_or_insert_with(|| "Service".into());
            }
        }
        let matches = rule.matches.get_or_insert_with(Vec::new);
        if matches.is_empty() {
            matches.extend(path_and_method_matches(&HttpRouteRules::default()));
        }
        for route_match in matches.iter_mut() {
            let path = route_match
                .path
                .get_or_insert_with(HttpRouteRulesMatchesPath::default);
            path.r#type
                .get_or_insert(HttpRouteRulesMatchesPathType::PathPrefix);
            path.value.get_or_insert_with(|| "/".into());
            for header in route_match.headers.iter_mut().flatten() {
                header
                    .r#type
                    .get_or_insert(HttpRouteRulesMatchesHeadersType::Exact);
            }
            for param in route_match.query_params.iter_mut().flatten() {
                param
                    .r#type
                    .get_or_insert(HttpRouteRulesMatchesQueryParamsType::Exact);
            }
        }
    }
    rules
}

/// The backendRef of `rule` to the stable Service, if it has one.
fn stable_backend<'r>(
    rule: &'r HttpRouteRules,
    backends: &Backends,
    namespace: &str,
) -> Option<&'r HttpRouteRulesBackendRefs> {
    rule.backend_refs.iter().flatten().find(|backend| {
        backend.name == backends.stable
            && backend.group.as_deref().is_none_or(str::is_empty)
            && backend.kind.as_deref().is_none_or(|kind| kind == "Service")
            && backend
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == namespace)
    })
}

/// The path and method of each of `rule`'s matches (the Gateway API default, `PathPrefix /`,
/// for a rule without matches); the rule's own headers and query parameters stay too, so that
/// the cohort's requests are a subset of the rule's.
fn path_and_method_matches(rule: &HttpRouteRules) -> Vec<HttpRouteRulesMatches> {
    match rule.matches.as_deref() {
        Some(matches) if !matches.is_empty() => matches.to_vec(),
        _ => vec![HttpRouteRulesMatches {
            path: Some(HttpRouteRulesMatchesPath {
                r#type: Some(HttpRouteRulesMatchesPathType::PathPrefix),
                value: Some("/".into()),
            }),
            ..HttpRouteRulesMatches::default()
        }],
    }
}

/// Each of `user_matches` with `route_match`'s headers, cookies and query parameters added.
fn with_match(
    user_matches: &[HttpRouteRulesMatches],
    route_match: &RouteMatch,
) -> Vec<HttpRouteRulesMatches> {
    let headers = route_match
        .headers
        .iter()
        .map(|header| HttpRouteRulesMatchesHeaders {
            name: header.name.clone(),
            value: header.value.clone(),
            r#type: Some(match header.match_type {
                MatchType::Exact => HttpRouteRulesMatchesHeadersType::Exact,
                MatchType::RegularExpression => HttpRouteRulesMatchesHeadersType::RegularExpression,
            }),
        })
        .chain(
            route_match
                .cookies
                .iter()
                .map(|cookie| HttpRouteRulesMatchesHeaders {
                    name: "Cookie".into(),
                    value: cookie_regex(&cookie.name, &cookie.value, cookie.match_type),
                    r#type: Some(HttpRouteRulesMatchesHeadersType::RegularExpression),
                }),
        );
    let headers: Vec<_> = headers.collect();
    let params: Vec<_> = route_match
        .query_params
        .iter()
        .map(|param| HttpRouteRulesMatchesQueryParams {
            name: param.name.clone(),
            value: param.value.clone(),
            r#type: Some(match param.match_type {
                MatchType::Exact => HttpRouteRulesMatchesQueryParamsType::Exact,
                MatchType::RegularExpression => {
                    HttpRouteRulesMatchesQueryParamsType::RegularExpression
                }
            }),
        })
        .collect();
    user_matches
        .iter()
        .map(|user| {
            let mut combined = user.clone();
            if !headers.is_empty() {
                combined
                    .headers
                    .get_or_insert_with(Vec::new)
                    .extend(headers.iter().cloned());
            }
            if !params.is_empty() {
                combined
                    .query_params
                    .get_or_insert_with(Vec::new)
                    .extend(params.iter().cloned());
            }
            combined
        })
        .collect()
}

/// The `RequestMirror` filter sending `percent` of a rule's requests to the canary.
fn mirror_filter(backends: &Backends, port: Option<i32>, percent: i32) -> HttpRouteRulesFilters {
    HttpRouteRulesFilters {
        r#type: HttpRouteRulesFiltersType::RequestMirror,
        request_mirror: Some(HttpRouteRulesFiltersRequestMirror {
            backend_ref: HttpRouteRulesFiltersRequestMirrorBackendRef {
                name: backends.canary.clone(),
                port,
                ..HttpRouteRulesFiltersRequestMirrorBackendRef::default()
            },
            percent: Some(percent),
            fraction: None,
        }),
        ..HttpRouteRulesFilters::default()
    }
}

/// The regular expression, on the whole `Cookie` header, that holds when cookie `name` has the
/// value `value` (exactly, or matching the regular expression `value`): the pair starts the
/// header or follows a `;`, and ends it or is followed by a `;`. Anchored at both ends, so it
/// means the same to gateways that match the whole value (Envoy) and to those that search in it.
/// A regular expression for the value should not match `;` (e.g. `[^;]*`), or it may reach into
/// the next cookie.
pub fn cookie_regex(name: &str, value: &str, match_type: MatchType) -> String {
    let value = match match_type {
        MatchType::Exact => escape_regex(value),
        MatchType::RegularExpression => format!("(?:{value})"),
    };
    format!(
        "^(?:.*;[ \\t]*)?{}={value}(?:[ \\t]*;.*)?$",
        escape_regex(name)
    )
}

/// `text` with the characters RE2 (and Rust's `regex`) treat as special escaped.
fn escape_regex(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if "\\.+*?()|[]{}^$".contains(character) {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// The warning for a Release with a mirror whose route's GatewayClass does not list mirroring
/// among its `status.supportedFeatures` (`supported`: the feature names; `None` when the
/// implementation does not report them, which says nothing, so no warning).
pub fn mirror_support_warning(supported: Option<&[String]>) -> Option<String> {
    let supported = supported?;
    let lacks = |feature: &str| !supported.iter().any(|name| name == feature);
    let missing: Vec<&str> = [FEATURE_MIRROR, FEATURE_PERCENTAGE_MIRROR]
        .into_iter()
        .filter(|feature| lacks(feature))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the route's GatewayClass does not list {} in status.supportedFeatures: the Gateway may \
             ignore spec.steps[].setMirrorRoute, and the canary then gets no mirrored requests",
            missing.join(" and ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ActiveCohort, ActiveMirror, ValueMatch};
    use crate::fixtures::{http_route, route_backend as backend};
    use crate::traffic::gateway::set_route_weights;

    const RELEASE: &str = "checkout";

    /// A user's route with several rules: two to the stable (one with a path and method, one
    /// with the owner's own filter), one to something else.
    fn users_route() -> HttpRoute {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {
                "parentRefs": [{"name": "public"}],
                "rules": [
                    {
                        "name": "api",
                        "matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST"}],
                        "backendRefs": [{"name": "checkout-stable", "port": 80}]
                    },
                    {
                        "matches": [{"path": {"type": "Exact", "value": "/cart"}}],
                        "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-shop", "value": "1"}]}}],
                        "backendRefs": [{"name": "checkout-stable", "port": 80}],
                        "timeouts": {"request": "10s"}
                    },
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                        "backendRefs": [{"name": "assets", "port": 8080}]
                    }
                ]
            }
        }))
        .unwrap()
    }

    fn cohort(name: &str, header: &str, value: &str) -> ActiveCohort {
        ActiveCohort {
            name: name.into(),
            route_match: RouteMatch {
                headers: vec![ValueMatch {
                    name: header.into(),
                    value: value.into(),
                    match_type: MatchType::Exact,
                }],
                ..RouteMatch::default()
            },
        }
    }

    fn mirror(name: &str, percent: i32, route_match: Option<RouteMatch>) -> ActiveMirror {
        ActiveMirror {
            name: name.into(),
            percent,
            route_match,
        }
    }

    fn rules(route: &HttpRoute) -> serde_json::Value {
        serde_json::to_value(&route.spec.rules).unwrap()
    }

    #[test]
    fn a_cohort_rule_is_named_copies_the_stable_rules_paths_and_sends_all_to_the_canary() {
        let mut route = users_route();
        let additions = RouteAdditions {
            cohorts: vec![cohort("beta-testers", "x-canary", "true")],
            mirrors: vec![],
        };
        assert_eq!(set_additions(&mut route, RELEASE, &additions), Ok(true));
        let written = rules(&route);
        assert_eq!(written.as_array().unwrap().len(), 4);
        assert_eq!(
            written[3],
            serde_json::json!({
                "name": "waymark-checkout-beta-testers",
                "matches": [
                    {"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST",
                     "headers": [{"name": "x-canary", "value": "true", "type": "Exact"}]},
                    {"path": {"type": "Exact", "value": "/cart"},
                     "headers": [{"name": "x-canary", "value": "true", "type": "Exact"}]}
                ],
                "backendRefs": [{"name": "checkout-canary", "port": 80}]
            })
        );
        assert_eq!(
            written.as_array().unwrap()[..3],
            rules(&users_route()).as_array().unwrap()[..],
            "the user's rules untouched"
        );
        assert!(carries_additions(&route, RELEASE));
        assert!(!carries_additions(&route, "checkout-v2"));
        assert_eq!(
            set_additions(&mut route, RELEASE, &additions),
            Ok(false),
            "already so"
        );
    }

    #[test]
    fn a_route_read_back_with_the_api_servers_defaults_is_already_as_wanted() {
        // What the API server stores for a route Waymark wrote a cohort and a mirror to: every
        // default filled in. Writing it again would loop: nothing is to be written.
        let additions = RouteAdditions {
            cohorts: vec![cohort("beta", "x-canary", "true")],
            mirrors: vec![mirror("shadow", 20, None)],
        };
        let mut written = http_route(vec![vec![backend("checkout-stable", None)]]);
        set_additions(&mut written, RELEASE, &additions).unwrap();
        let mut stored = rules(&written);
        for rule in stored.as_array_mut().unwrap() {
            for backend in rule["backendRefs"].as_array_mut().unwrap() {
                backend["group"] = "".into();
                backend["kind"] = "Service".into();
                backend["weight"] = backend.get("weight").cloned().unwrap_or(1.into());
            }
            if rule.get("matches").is_none() {
                rule["matches"] =
                    serde_json::json!([{"path": {"type": "PathPrefix", "value": "/"}}]);
            }
            if let Some(filters) = rule.get_mut("filters") {
                filters[0]["requestMirror"]["backendRef"]["group"] = "".into();
                filters[0]["requestMirror"]["backendRef"]["kind"] = "Service".into();
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
        let fewer = RouteAdditions {
            cohorts: vec![],
            mirrors: additions.mirrors.clone(),
        };
        assert_eq!(set_additions(&mut read_back, RELEASE, &fewer), Ok(true));
    }

    #[test]
    fn a_mirror_goes_on_every_stable_rule_or_on_a_rule_of_its_own_with_a_match() {
        let mut route = users_route();
        let additions = RouteAdditions {
            cohorts: vec![],
            mirrors: vec![mirror("shadow", 20, None)],
        };
        set_additions(&mut route, RELEASE, &additions).unwrap();
        let written = rules(&route);
        let mirror_filter = serde_json::json!({
            "type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": "checkout-canary", "port": 80}, "percent": 20}
        });
        assert_eq!(written[0]["filters"], serde_json::json!([mirror_filter]));
        assert_eq!(written[1]["filters"][1], mirror_filter);
        assert_eq!(written[1]["filters"][0]["type"], "RequestHeaderModifier");
        assert_eq!(
            written[2].get("filters"),
            None,
            "not on the other backend's rule"
        );

        let mut matched = users_route();
        let only_beta = cohort("x", "x-beta", "1").route_match;
        let additions = RouteAdditions {
            cohorts: vec![],
            mirrors: vec![mirror("shadow", 50, Some(only_beta))],
        };
        set_additions(&mut matched, RELEASE, &additions).unwrap();
        let written = rules(&matched);
        assert_eq!(written[3]["name"], "waymark-checkout-shadow");
        assert_eq!(written[3]["filters"][0]["requestMirror"]["percent"], 50);
        assert_eq!(written[3]["backendRefs"], written[0]["backendRefs"]);
        assert_eq!(written[0].get("filters"), None);
    }

    #[test]
    fn cohort_mirror_and_weights_together_come_off_leaving_the_users_rules_byte_identical() {
        // Every combination of cohorts, mirrors and weights, added in either order, then taken
        // away by the restore a promotion, rollback or deletion does.
        let original = users_route();
        let original_json = serde_json::to_string(&original.spec).unwrap();
        let cohorts = [
            vec![],
            vec![cohort("beta", "x-canary", "true")],
            vec![
                cohort("beta", "x-canary", "true"),
                cohort("staff", "x-staff", "1"),
            ],
        ];
        let mirrors = [
            vec![],
            vec![mirror("shadow", 20, None)],
            vec![
                mirror("shadow", 20, None),
                mirror("orders", 5, Some(cohort("o", "x-orders", "1").route_match)),
            ],
        ];
        for cohorts in &cohorts {
            for mirrors in &mirrors {
                for weight in [None, Some(0), Some(30), Some(100)] {
                    for weights_first in [false, true] {
                        let additions = RouteAdditions {
                            cohorts: cohorts.clone(),
                            mirrors: mirrors.clone(),
                        };
                        let mut route = original.clone();
                        let backends = Backends::of(RELEASE);
                        if let (Some(weight), true) = (weight, weights_first) {
                            set_route_weights(&mut route, &backends, weight).unwrap();
                        }
                        set_additions(&mut route, RELEASE, &additions).unwrap();
                        if let (Some(weight), false) = (weight, weights_first) {
                            set_route_weights(&mut route, &backends, weight).unwrap();
                        }
                        let case = format!("{additions:?} weight {weight:?}");
                        assert_eq!(
                            carries_additions(&route, RELEASE),
                            !additions.is_empty(),
                            "{case}"
                        );
                        if let Some(weight) = weight {
                            assert_eq!(
                                super::super::gateway::canary_weight(&route, &backends),
                                Ok(weight),
                                "the weight reads through Waymark's rules: {case}"
                            );
                        }
                        // Removing a cohort or mirror alone leaves the rest.
                        let mut fewer = route.clone();
                        set_additions(&mut fewer, RELEASE, &RouteAdditions::default()).unwrap();
                        assert!(!carries_additions(&fewer, RELEASE), "{case}");

                        restore_all(&mut route, &backends).unwrap();
                        assert_eq!(
                            serde_json::to_string(&route.spec).unwrap(),
                            original_json,
                            "{case}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn removing_one_cohort_keeps_the_others_and_another_releases_rules() {
        let mut route = users_route();
        let both = RouteAdditions {
            cohorts: vec![
                cohort("beta", "x-canary", "true"),
                cohort("staff", "x-staff", "1"),
            ],
            mirrors: vec![],
        };
        set_additions(&mut route, RELEASE, &both).unwrap();
        // Another Release whose name starts with this one's shares the route.
        let foreign = HttpRouteRules {
            name: Some("waymark-checkout-v2-beta".into()),
            backend_refs: Some(vec![backend("checkout-v2-canary", None)]),
            ..HttpRouteRules::default()
        };
        route.spec.rules.as_mut().unwrap().push(foreign.clone());
        let staff_only = RouteAdditions {
            cohorts: vec![cohort("staff", "x-staff", "1")],
            mirrors: vec![],
        };
        assert_eq!(set_additions(&mut route, RELEASE, &staff_only), Ok(true));
        let names: Vec<Option<String>> = route
            .spec
            .rules
            .iter()
            .flatten()
            .map(|rule| rule.name.clone())
            .collect();
        assert_eq!(
            names,
            [
                Some("api".into()),
                None,
                None,
                Some("waymark-checkout-v2-beta".into()),
                Some("waymark-checkout-staff".into())
            ]
        );
        assert!(strip_additions(&mut route, RELEASE));
        assert_eq!(route.spec.rules.as_ref().unwrap()[3], foreign);
    }

    #[test]
    fn a_route_without_rules_gets_the_gateway_default_path_and_one_without_the_stable_is_refused() {
        let mut route = http_route(vec![vec![backend("checkout-stable", None)]]);
        let additions = RouteAdditions {
            cohorts: vec![cohort("beta", "x-canary", "true")],
            mirrors: vec![],
        };
        set_additions(&mut route, RELEASE, &additions).unwrap();
        let written = rules(&route);
        assert_eq!(
            written[1]["matches"][0]["path"],
            serde_json::json!({"type": "PathPrefix", "value": "/"})
        );
        let mut other = http_route(vec![vec![backend("assets", None)]]);
        let untouched = other.clone();
        assert_eq!(
            set_additions(&mut other, RELEASE, &additions),
            Err("HTTPRoute shop/checkout has no backendRef to Service checkout-stable".into())
        );
        assert_eq!(other, untouched);
    }

    #[test]
    fn a_cookie_is_a_whole_name_value_pair_of_the_cookie_header() {
        // (cookie value in the spec, type, Cookie header, matches)
        let cases = [
            ("yes", MatchType::Exact, "beta=yes", true),
            ("yes", MatchType::Exact, "a=1; beta=yes; c=2", true),
            ("yes", MatchType::Exact, "a=1;beta=yes", true),
            ("yes", MatchType::Exact, "xbeta=yes", false),
            ("yes", MatchType::Exact, "beta=yesno", false),
            ("yes", MatchType::Exact, "beta=no; other=yes", false),
            ("y.s", MatchType::Exact, "beta=yes", false),
            (
                "y[a-z]s",
                MatchType::RegularExpression,
                "a=1; beta=yes",
                true,
            ),
            ("y[a-z]s", MatchType::RegularExpression, "beta=y1s", false),
        ];
        for (value, match_type, header, matches) in cases {
            let pattern = cookie_regex("beta", value, match_type);
            let regex = regex::Regex::new(&pattern).unwrap();
            assert_eq!(regex.is_match(header), matches, "{pattern} on {header}");
        }
        assert_eq!(
            cookie_regex("a.b", "1", MatchType::Exact),
            r"^(?:.*;[ \t]*)?a\.b=1(?:[ \t]*;.*)?$"
        );
    }

    #[test]
    fn mirroring_is_warned_about_only_when_the_gateway_class_says_it_lacks_it() {
        let listed = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(mirror_support_warning(None), None);
        let both = listed(&[FEATURE_MIRROR, FEATURE_PERCENTAGE_MIRROR, "HTTPRoute"]);
        assert_eq!(mirror_support_warning(Some(&both)), None);
        let plain = listed(&[FEATURE_MIRROR]);
        let warning = mirror_support_warning(Some(&plain)).unwrap();
        assert!(warning.contains(FEATURE_PERCENTAGE_MIRROR), "{warning}");
        assert!(warning.contains("setMirrorRoute"), "{warning}");
        let warning = mirror_support_warning(Some(&[])).unwrap();
        assert!(warning.contains(FEATURE_MIRROR), "{warning}");
    }
}
