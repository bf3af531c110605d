//! GRPCRoute rules Waymark adds of its own: a header cohort sent to the canary.
//!
//! The cohort steps (`setHeaderRoute`) add to the route, per active cohort, one rule named
//! `waymark-<release>-<cohort>` that Waymark alone owns. On a GRPCRoute such a rule matches gRPC
//! headers (Gateway API's `GRPCHeaderMatch`: `Exact` or `RegularExpression`) on top of the
//! method matches of the rule it routes for, and sends all of its requests to `<name>-canary`.
//! This module builds that rule from plain values; which cohorts are active is the steps'.

use gateway_api::apis::experimental::grpcroutes::{
    GrpcRouteRules, GrpcRouteRulesMatches, GrpcRouteRulesMatchesHeaders,
    GrpcRouteRulesMatchesHeadersType,
};

use super::gateway::Backends;
use super::route::BackendRef;

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
