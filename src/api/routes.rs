//! The route steps of `spec.steps` (`setHeaderRoute`, `setMirrorRoute`) and what of them is
//! active, as `status.traffic` records it.
//!
//! A cohort (`setHeaderRoute`) sends the requests that match it, all of them, to the canary; a
//! mirror (`setMirrorRoute`) sends a copy of a share of the requests to the canary and drops its
//! answers. Both are written into the route (a cohort into an HTTPRoute or a GRPCRoute, a
//! mirror into an HTTPRoute) as parts Waymark recognises as its own (rules named
//! `waymark-<release>-<name>`, `RequestMirror` filters to `<release>-canary`), see
//! [`crate::traffic::cohort`] and [`crate::traffic::grpc`].

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The pattern of a header, cookie or query parameter name: an HTTP token, as Gateway API's
/// own schema has it for header and query parameter names.
pub const TOKEN_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$";

/// The pattern of a cohort or mirror name: a DNS label, so that the rule name
/// `waymark-<release>-<name>` (at most 8 + 56 + 1 + 63 = 128 characters) is always a valid
/// Gateway API rule name (a DNS subdomain of at most 253).
pub const ROUTE_NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// `setHeaderRoute`: route a cohort (requests matching `match`) to the canary, or, without
/// `match`, stop routing the cohort added by an earlier step under the same `name`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRoute {
    /// The cohort's name, a DNS label of at most 63 characters (e.g. `beta-testers`); the
    /// route rule Waymark writes for it is named `waymark-<release>-<name>`. Required.
    #[schemars(length(min = 1, max = 63), pattern("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// The requests of the cohort: every header, cookie and query parameter listed must
    /// match. Leave it out to remove the cohort an earlier step added.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub route_match: Option<RouteMatch>,
}

/// `setMirrorRoute`: copy `percent` of the requests (those matching `match`, or all the
/// requests the route sends to the stable) to the canary, whose answers are dropped; without
/// `percent`, stop the mirror an earlier step added under the same `name`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.match) || has(self.percent)").message("spec.steps[].setMirrorRoute.match needs percent: a mirror without percent removes the mirror an earlier step added"))]
pub struct MirrorRoute {
    /// The mirror's name, a DNS label of at most 63 characters; with `match`, the route rule
    /// Waymark writes for it is named `waymark-<release>-<name>`. Required.
    #[schemars(length(min = 1, max = 63), pattern("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// The percent of requests copied to the canary, from 0 to 100. Leave it out to remove
    /// the mirror an earlier step added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<i32>,

    /// Mirror only the requests matching this (in a rule of its own); without it, the rules
    /// that send traffic to the stable mirror their requests.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub route_match: Option<RouteMatch>,
}

/// Which requests a cohort or mirror takes: all of the listed headers, cookies and query
/// parameters must match (and the path and method of the user's rule the request came by).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.headers) ? size(self.headers) : 0) + (has(self.cookies) ? size(self.cookies) : 0) + (has(self.queryParams) ? size(self.queryParams) : 0) > 0").message("spec.steps[]: a match must list at least one of headers, cookies or queryParams; leave match out to remove the cohort"))]
pub struct RouteMatch {
    /// HTTP headers that must match, up to 16.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    #[schemars(length(max = 16))]
    pub headers: Vec<ValueMatch>,

    /// Cookies that must match, up to 16. Gateway API has no cookie match: Waymark writes each
    /// as a `RegularExpression` match on the `Cookie` header that anchors the cookie's name and
    /// value between `;` separators.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    #[schemars(length(max = 16))]
    pub cookies: Vec<ValueMatch>,

    /// Query parameters that must match, up to 16.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    #[schemars(length(max = 16))]
    pub query_params: Vec<ValueMatch>,
}

/// One header, cookie or query parameter and the value it must have.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ValueMatch {
    /// The name, an HTTP token (letters, digits and ``!#$%&'*+-.^_`|~``) of 1 to 256
    /// characters, as Gateway API requires. Header names match without regard to case.
    #[schemars(
        length(min = 1, max = 256),
        pattern(r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$")
    )]
    pub name: String,

    /// The value: the exact text, or with `type: RegularExpression` an RE2 regular expression
    /// (checked before the canary starts). 1 to 1024 characters.
    #[schemars(length(min = 1, max = 1024))]
    pub value: String,

    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub match_type: MatchType,
}

/// How a value is compared.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MatchType {
    /// The value must be exactly this text.
    #[default]
    Exact,
    /// The value must match this regular expression (RE2 syntax, which gateways implement).
    RegularExpression,
}

/// The cohorts and mirrors active on a Release's route (`status.traffic`): what Waymark means
/// the route to carry besides the weights, recorded before it is written, so that a controller
/// restarted at any moment knows what to finish or take away.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteAdditions {
    /// The cohorts routed to the canary, in the order their steps added them (at most one
    /// per step, so at most 64; the bound also keeps the API server's cost estimate of the
    /// match's rule within its budget).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub cohorts: Vec<ActiveCohort>,
    /// The mirrors copying requests to the canary, in the order their steps added them (at
    /// most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub mirrors: Vec<ActiveMirror>,
}

/// A cohort routed to the canary.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ActiveCohort {
    /// The cohort's name (its rule is `waymark-<release>-<name>`).
    pub name: String,
    /// The requests it takes.
    #[serde(rename = "match")]
    pub route_match: RouteMatch,
}

/// A mirror copying requests to the canary.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ActiveMirror {
    /// The mirror's name.
    pub name: String,
    /// The percent of requests copied.
    pub percent: i32,
    /// Only the requests matching this, in a rule of its own; all the stable's when unset.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub route_match: Option<RouteMatch>,
}

impl RouteAdditions {
    /// Whether nothing is active.
    pub fn is_empty(&self) -> bool {
        self.cohorts.is_empty() && self.mirrors.is_empty()
    }

    /// One line for people: `cohorts beta-testers; mirrors shadow 20%`, or `none`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.cohorts.is_empty() {
            let names: Vec<&str> = self.cohorts.iter().map(|c| c.name.as_str()).collect();
            parts.push(format!("cohorts {}", names.join(", ")));
        }
        if !self.mirrors.is_empty() {
            let mirrors: Vec<String> = self
                .mirrors
                .iter()
                .map(|m| format!("{} {}%", m.name, m.percent))
                .collect();
            parts.push(format!("mirrors {}", mirrors.join(", ")));
        }
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{header_route, mirror_route, remove_cohort, remove_mirror, set_weight};

    #[test]
    fn steps_add_replace_and_remove_cohorts_and_mirrors_by_name() {
        let steps = [
            header_route("beta", "x-canary", "true"),
            set_weight(10),
            mirror_route("shadow", 20),
            header_route("staff", "x-staff", "1"),
            remove_cohort("beta"),
            mirror_route("shadow", 50),
        ];
        let additions = RouteAdditions::after_steps(&steps);
        let cohorts: Vec<&str> = additions.cohorts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(cohorts, ["staff"]);
        assert_eq!(additions.mirrors.len(), 1);
        assert_eq!(additions.mirrors[0].percent, 50);
        assert_eq!(additions.describe(), "cohorts staff; mirrors shadow 50%");
        let cleared = RouteAdditions::after_steps(
            &[
                steps.as_slice(),
                &[remove_cohort("staff"), remove_mirror("shadow")],
            ]
            .concat(),
        );
        assert!(cleared.is_empty());
        assert_eq!(cleared.describe(), "none");
    }
}
