//! The checks on a Release that its schema cannot make. Each failure names the field; the core
//! turns it into `SpecValid=False` and phase Degraded instead of acting on a spec it cannot
//! carry out.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::{Release, RouteKind};

/// Longest Release name: its children are named `<name>-canary` and `<name>-stable`, and a
/// Service name is at most 63 characters.
pub const MAX_NAME_LENGTH: usize = 63 - "-canary".len();

/// A spec the controller cannot act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The offending field, e.g. `spec.selector`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl SpecError {
    fn new(field: &str, message: impl Into<String>) -> SpecError {
        SpecError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Check what the schema cannot: the name fits the children's names (the schema checks it too,
/// for Releases stored before it did), the selector is one a Deployment accepts and matches the
/// template's labels, the Service ports can be resolved, there is a step (the schema checks it
/// too, for Releases stored before it did), the checks have distinct names (likewise) and the
/// analysis queries resolve and parse as PromQL, and so does the roadmap outcome's query.
pub fn spec(release: &Release) -> Result<(), SpecError> {
    let name = release.metadata.name.as_deref().unwrap_or_default();
    if !is_child_name_prefix(name) {
        return Err(SpecError::new(
            "metadata.name",
            format!(
                "Release name {name:?} cannot name its Services ({name}-stable, {name}-canary): \
                 use at most {MAX_NAME_LENGTH} characters of a-z, 0-9 and '-', starting with a \
                 letter and ending with a letter or digit"
            ),
        ));
    }
    selector(&release.spec.selector)?;
    let template_labels = release
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default();
    for (key, value) in &template_labels {
        label(key, value).map_err(|problem| {
            SpecError::new("spec.template.metadata.labels", format!("{key}: {problem}"))
        })?;
    }
    if !selector_matches(&release.spec.selector, &template_labels) {
        return Err(SpecError::new(
            "spec.selector",
            "spec.selector does not match the labels of spec.template.metadata.labels",
        ));
    }
    if release.spec.service_ports().is_none() {
        return Err(SpecError::new(
            "spec.service",
            "spec.service must be set when the template's first container declares no port",
        ));
    }
    if release.spec.steps.is_empty() {
        return Err(SpecError::new("spec.steps", crate::api::STEPS_EMPTY));
    }
    route_steps(release)?;
    if let Some(analysis) = &release.spec.analysis {
        for (index, check) in analysis.checks.iter().enumerate() {
            if let Some(first) = analysis.checks[..index]
                .iter()
                .position(|earlier| earlier.name == check.name)
            {
                return Err(SpecError::new(
                    &format!("spec.analysis.checks[{index}].name"),
                    format!(
                        "{:?} is also the name of spec.analysis.checks[{first}]: each check \
                         needs its own name, which the status and the CLI show its result under",
                        check.name
                    ),
                ));
            }
        }
        crate::analysis::validate_queries(analysis)
            .map_err(|error| SpecError::new(&error.field, error.error.to_string()))?;
    }
    roadmap(release)?;
    Ok(())
}

/// The roadmap's windows are within bounds (the schema cannot read days, so it checks only
/// their form) and the outcome's query resolves and parses; the outcome needs a Prometheus to
/// ask, `spec.analysis.prometheus`.
fn roadmap(release: &Release) -> Result<(), SpecError> {
    use crate::api::outcome::{OUTCOME_WINDOW_MAX, OUTCOME_WINDOW_MIN};
    let roadmap = &release.spec.roadmap;
    let within = |field: &str, window: crate::api::Duration| {
        if window < OUTCOME_WINDOW_MIN || window > OUTCOME_WINDOW_MAX {
            Err(SpecError::new(
                field,
                format!("{window} is out of bounds: write a window from 10s to 90d, e.g. 7d"),
            ))
        } else {
            Ok(())
        }
    };
    within("spec.roadmap.reworkWindow", roadmap.rework_window)?;
    let Some(outcome) = &roadmap.outcome else {
        return Ok(());
    };
    within("spec.roadmap.outcome.baseline", outcome.baseline)?;
    within("spec.roadmap.outcome.after", outcome.after)?;
    if release.spec.analysis.is_none() {
        return Err(SpecError::new(
            "spec.roadmap.outcome",
            "the outcome is measured with the Prometheus of spec.analysis.prometheus, and \
             spec.analysis is not set: add spec.analysis, or remove spec.roadmap.outcome",
        ));
    }
    crate::analysis::roadmap_outcome::validate_query(outcome)
        .map_err(|error| SpecError::new(&error.field, error.error.to_string()))
}

/// Check the `setHeaderRoute` and `setMirrorRoute` steps before the canary starts: they need a
/// Gateway API route; a cohort or mirror removed must have been added by an earlier step; a
/// cohort and a mirror with a match may not share a name (their rules would); every regular
/// expression must compile (RE2 syntax, as gateways read it: Rust's `regex` accepts the same
/// language); and a mirror may not be active at weight 100, where every request is the
/// canary's already and the copy would go to the canary twice.
fn route_steps(release: &Release) -> Result<(), SpecError> {
    let steps = &release.spec.steps;
    let mut active = crate::api::RouteAdditions::default();
    for (index, step) in steps.iter().enumerate() {
        let field = |what: &str| format!("spec.steps[{index}].{what}");
        let router = release.spec.traffic.route().map(|(kind, _)| kind);
        if step.is_route_step() && router.is_none() {
            return Err(SpecError::new(
                &format!("spec.steps[{index}]"),
                "setHeaderRoute and setMirrorRoute need spec.traffic.gatewayAPI.httpRoute or \
                 grpcRoute (a route to add the rules to); a replica split has no router to \
                 route a cohort",
            ));
        }
        if router == Some(RouteKind::Grpc) {
            // A GRPCRoute matches headers only, and Gateway API mirrors on HTTPRoutes only.
            if step.set_mirror_route.is_some() {
                return Err(SpecError::new(
                    &field("setMirrorRoute"),
                    crate::traffic::grpc::GRPC_MIRROR_MESSAGE,
                ));
            }
            let query_params = step
                .set_header_route
                .as_ref()
                .and_then(|cohort| cohort.route_match.as_ref())
                .is_some_and(|route_match| !route_match.query_params.is_empty());
            if query_params {
                return Err(SpecError::new(
                    &field("setHeaderRoute.match.queryParams"),
                    crate::traffic::grpc::GRPC_QUERY_PARAMS_MESSAGE,
                ));
            }
        }
        if let Some(cohort) = &step.set_header_route {
            let field = field("setHeaderRoute");
            match &cohort.route_match {
                None if !active.cohorts.iter().any(|c| c.name == cohort.name) => {
                    return Err(SpecError::new(
                        &format!("{field}.name"),
                        format!(
                            "cohort {:?} is removed (no match) but no earlier step adds it: add \
                             it first with a setHeaderRoute that has a match, or fix the name",
                            cohort.name
                        ),
                    ));
                }
                None => {}
                Some(route_match) => {
                    route_match_regexes(route_match, &format!("{field}.match"))?;
                    if active
                        .mirrors
                        .iter()
                        .any(|m| m.name == cohort.name && m.route_match.is_some())
                    {
                        return Err(shared_name(&field, &cohort.name));
                    }
                }
            }
        }
        if let Some(mirror) = &step.set_mirror_route {
            let field = field("setMirrorRoute");
            if mirror.percent.is_none() && !active.mirrors.iter().any(|m| m.name == mirror.name) {
                return Err(SpecError::new(
                    &format!("{field}.name"),
                    format!(
                        "mirror {:?} is removed (no percent) but no earlier step adds it: add it \
                         first with a setMirrorRoute that has a percent, or fix the name",
                        mirror.name
                    ),
                ));
            }
            if let Some(route_match) = &mirror.route_match {
                route_match_regexes(route_match, &format!("{field}.match"))?;
                if active.cohorts.iter().any(|c| c.name == mirror.name) {
                    return Err(shared_name(&field, &mirror.name));
                }
            }
        }
        active.apply_step(step);
        if step.set_weight == Some(100) && !active.mirrors.is_empty() {
            return Err(SpecError::new(
                &field("setWeight"),
                "a mirror is active at weight 100: every request already goes to the canary, so \
                 the mirror would copy the canary's requests to itself; remove the mirror \
                 (setMirrorRoute without percent) in an earlier step",
            ));
        }
    }
    Ok(())
}

/// The error for a cohort and a matched mirror named alike: both would be the rule
/// `waymark-<release>-<name>`.
fn shared_name(field: &str, name: &str) -> SpecError {
    SpecError::new(
        &format!("{field}.name"),
        format!(
            "{name:?} is already the name of an active cohort or matched mirror: both would be \
             the route rule waymark-<release>-{name}; give each its own name"
        ),
    )
}

/// Check that each `RegularExpression` value of `route_match` compiles.
fn route_match_regexes(route_match: &crate::api::RouteMatch, field: &str) -> Result<(), SpecError> {
    let lists = [
        ("headers", &route_match.headers),
        ("cookies", &route_match.cookies),
        ("queryParams", &route_match.query_params),
    ];
    for (list, values) in lists {
        for (index, value) in values.iter().enumerate() {
            if value.match_type != crate::api::MatchType::RegularExpression {
                continue;
            }
            if let Err(error) = regex::Regex::new(&value.value) {
                return Err(SpecError::new(
                    &format!("{field}.{list}[{index}].value"),
                    format!(
                        "{:?} is not a valid regular expression (RE2 syntax): {}; fix it, or use \
                         type: Exact",
                        value.value,
                        error.to_string().lines().last().unwrap_or_default().trim()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Check what the API server would refuse in the child Deployments' selector, which can never
/// change afterwards: label syntax, operators and their values, and Waymark's own keys.
fn selector(selector: &LabelSelector) -> Result<(), SpecError> {
    const FIELD: &str = "spec.selector";
    for (key, value) in selector.match_labels.iter().flatten() {
        label(key, value).map_err(|problem| {
            SpecError::new(&format!("{FIELD}.matchLabels"), format!("{key}: {problem}"))
        })?;
        reserved(key, &format!("{FIELD}.matchLabels"))?;
    }
    for (index, expression) in selector.match_expressions.iter().flatten().enumerate() {
        let field = format!("{FIELD}.matchExpressions[{index}]");
        let values = expression.values.as_deref().unwrap_or_default();
        label_key(&expression.key)
            .map_err(|problem| SpecError::new(&format!("{field}.key"), problem))?;
        reserved(&expression.key, &format!("{field}.key"))?;
        match expression.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(SpecError::new(
                    &format!("{field}.values"),
                    format!("operator {} needs at least one value", expression.operator),
                ));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(SpecError::new(
                    &format!("{field}.values"),
                    format!("operator {} takes no values", expression.operator),
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(SpecError::new(
                    &format!("{field}.operator"),
                    format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                ));
            }
        }
        for value in values {
            label_value(value)
                .map_err(|problem| SpecError::new(&format!("{field}.values"), problem))?;
        }
    }
    Ok(())
}

/// Waymark selects its children by its own labels; a selector on them would fight it.
fn reserved(key: &str, field: &str) -> Result<(), SpecError> {
    if key.starts_with("waymark.dev/") {
        return Err(SpecError::new(
            field,
            format!(
                "{key}: labels under waymark.dev/ are set by Waymark; select your pods by your own labels"
            ),
        ));
    }
    Ok(())
}

/// A label as Kubernetes accepts it: a qualified-name key and a value of at most 63 characters.
fn label(key: &str, value: &str) -> Result<(), String> {
    label_key(key)?;
    label_value(value)
}

/// `[prefix/]name`: a DNS subdomain prefix of at most 253 characters, and a name of 1-63
/// alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric.
fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let subdomain = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                let bytes = part.as_bytes();
                !part.is_empty()
                    && bytes[0].is_ascii_alphanumeric()
                    && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            });
        if !subdomain {
            return Err(format!(
                "label key {key:?}: the prefix before '/' must be a lowercase DNS subdomain"
            ));
        }
    }
    if name.is_empty() || !label_name(name) {
        return Err(format!(
            "label key {key:?}: the name must be 1-63 characters of a-z, A-Z, 0-9, '-', '_' and \
             '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Empty, or 1-63 alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric.
fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "label value {value:?} must be at most 63 characters of a-z, A-Z, 0-9, '-', '_' and \
             '.', starting and ending with a letter or digit"
        ))
    }
}

fn label_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    !text.is_empty()
        && text.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `name-canary` and `name-stable` are valid Service names (RFC 1035 labels).
fn is_child_name_prefix(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= MAX_NAME_LENGTH
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Whether `selector` selects an object with `labels` (matchLabels and matchExpressions).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions_match = selector.match_expressions.iter().flatten().all(|expr| {
        let value = labels.get(&expr.key);
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" => value.is_some_and(|value| values.contains(value)),
            "NotIn" => value.is_none_or(|value| !values.contains(value)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::fixtures::ReleaseBuilder;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn a_valid_spec_passes() {
        assert_eq!(spec(&ReleaseBuilder::gateway().build()), Ok(()));
    }

    #[test]
    fn a_selector_not_matching_the_template_names_the_field() {
        let mut release = ReleaseBuilder::gateway().build();
        release
            .spec
            .selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert("app".into(), "payments".into());
        let error = spec(&release).unwrap_err();
        assert_eq!(error.field, "spec.selector");
        assert!(error.to_string().starts_with("spec.selector:"), "{error}");
    }

    #[test]
    fn a_name_too_long_or_not_a_service_name_names_metadata_name() {
        for name in [
            "a".repeat(MAX_NAME_LENGTH + 1),
            "1checkout".to_string(),
            "check.out".to_string(),
            "checkout-".to_string(),
            String::new(),
        ] {
            let mut release = ReleaseBuilder::gateway().build();
            release.metadata.name = Some(name.clone());
            let error = spec(&release).unwrap_err();
            assert_eq!(error.field, "metadata.name", "{name:?}");
            assert!(error.message.contains("-canary"), "{error}");
        }
        let mut release = ReleaseBuilder::gateway().build();
        release.metadata.name = Some("a".repeat(MAX_NAME_LENGTH));
        assert_eq!(spec(&release), Ok(()), "the longest name that fits");
    }

    fn with_selector(selector: LabelSelector, labels: &[(&str, &str)]) -> Release {
        let mut release = ReleaseBuilder::gateway().build();
        release.spec.selector = selector;
        release
            .spec
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels = Some(
            labels
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        );
        release
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: operator.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
        }
    }

    fn match_labels(labels: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(key, value)| (key.to_string(), value.to_string()))
                    .collect(),
            ),
            match_expressions: None,
        }
    }

    #[test]
    fn a_selector_a_deployment_would_refuse_names_the_field() {
        let cases = [
            (
                with_selector(
                    match_labels(&[("app", "check out")]),
                    &[("app", "check out")],
                ),
                "spec.selector.matchLabels",
                "label value",
            ),
            (
                with_selector(
                    match_labels(&[("-app", "checkout")]),
                    &[("-app", "checkout")],
                ),
                "spec.selector.matchLabels",
                "label key",
            ),
            (
                with_selector(
                    match_labels(&[("Example.com/app", "checkout")]),
                    &[("Example.com/app", "checkout")],
                ),
                "spec.selector.matchLabels",
                "prefix",
            ),
            (
                with_selector(
                    match_labels(&[("app", "checkout"), ("waymark.dev/role", "stable")]),
                    &[("app", "checkout"), ("waymark.dev/role", "stable")],
                ),
                "spec.selector.matchLabels",
                "set by Waymark",
            ),
            (
                with_selector(
                    expression("app", "Bogus", &["checkout"]),
                    &[("app", "checkout")],
                ),
                "spec.selector.matchExpressions[0].operator",
                "In, NotIn, Exists, DoesNotExist",
            ),
            (
                with_selector(expression("app", "In", &[]), &[("app", "checkout")]),
                "spec.selector.matchExpressions[0].values",
                "at least one value",
            ),
            (
                with_selector(expression("app", "Exists", &["x"]), &[("app", "checkout")]),
                "spec.selector.matchExpressions[0].values",
                "takes no values",
            ),
            (
                with_selector(
                    expression("waymark.dev/release", "Exists", &[]),
                    &[("app", "checkout")],
                ),
                "spec.selector.matchExpressions[0].key",
                "set by Waymark",
            ),
            (
                with_selector(
                    match_labels(&[("app", "checkout")]),
                    &[("app", "checkout"), ("tier", "front end")],
                ),
                "spec.template.metadata.labels",
                "tier",
            ),
        ];
        for (release, field, words) in cases {
            let error = spec(&release).unwrap_err();
            assert_eq!(error.field, field, "{error}");
            assert!(error.message.contains(words), "{error}");
        }
    }

    #[test]
    fn selectors_a_deployment_accepts_pass() {
        for (selector, labels) in [
            (
                match_labels(&[("example.com/app", "checkout"), ("tier", "")]),
                vec![("example.com/app", "checkout"), ("tier", "")],
            ),
            (
                expression("app", "In", &["checkout", "shop"]),
                vec![("app", "checkout")],
            ),
            (
                expression("canary", "DoesNotExist", &[]),
                vec![("app", "x")],
            ),
            (
                match_labels(&[("a.b_c-D", &"v".repeat(63))]),
                vec![("a.b_c-D", &*"v".repeat(63))],
            ),
        ] {
            let release = with_selector(selector, &labels);
            assert_eq!(spec(&release), Ok(()), "{:?}", release.spec.selector);
        }
    }

    #[test]
    fn no_service_and_no_container_port_names_spec_service() {
        let mut release = ReleaseBuilder::gateway().build();
        release.spec.service = None;
        for container in &mut release.spec.template.spec.as_mut().unwrap().containers {
            container.ports = None;
        }
        assert_eq!(spec(&release).unwrap_err().field, "spec.service");
    }

    #[test]
    fn an_unknown_query_placeholder_names_the_query_field() {
        let mut release = ReleaseBuilder::gateway().analysis().build();
        if let Some(analysis) = release.spec.analysis.as_mut() {
            analysis.slo.total_query = "sum(rate(requests{svc=\"{{servce}}\"}[{{window}}]))".into();
        }
        let error = spec(&release).unwrap_err();
        assert_eq!(error.field, "spec.analysis.slo.totalQuery");
        assert!(error.message.contains("servce"), "{error}");
    }

    #[test]
    fn no_steps_names_spec_steps_and_says_what_to_write() {
        let mut release = ReleaseBuilder::gateway().build();
        release.spec.steps.clear();
        let error = spec(&release).unwrap_err();
        assert_eq!(error.field, "spec.steps");
        assert!(
            error
                .to_string()
                .starts_with("spec.steps: spec.steps must list at least one step: without one"),
            "{error}"
        );
        assert!(error.message.contains("setWeight"), "{error}");
    }

    #[test]
    fn route_steps_the_schema_cannot_check_name_the_field_before_the_canary_starts() {
        use crate::api::{MatchType, ValueMatch};
        use crate::fixtures::{
            header_route, mirror_route, pause_until_promoted, remove_cohort, remove_mirror,
            set_weight,
        };
        let regex_cohort = |value: &str| {
            let mut step = header_route("beta", "x-canary", "true");
            let route = step.set_header_route.as_mut().unwrap();
            route.route_match.as_mut().unwrap().cookies = vec![ValueMatch {
                name: "group".into(),
                value: value.into(),
                match_type: MatchType::RegularExpression,
            }];
            step
        };
        let mut matched_mirror = mirror_route("beta", 10);
        matched_mirror
            .set_mirror_route
            .as_mut()
            .unwrap()
            .route_match = header_route("x", "x-a", "1")
            .set_header_route
            .unwrap()
            .route_match;
        // (steps, gateway, the field named, or None when valid)
        let cases = [
            (
                vec![
                    header_route("beta", "x-canary", "true"),
                    remove_cohort("beta"),
                ],
                true,
                None,
            ),
            (
                vec![
                    remove_cohort("beta"),
                    header_route("beta", "x-canary", "true"),
                ],
                true,
                Some("spec.steps[0].setHeaderRoute.name"),
            ),
            (
                vec![header_route("beta", "x", "1"), remove_cohort("staff")],
                true,
                Some("spec.steps[1].setHeaderRoute.name"),
            ),
            (
                vec![mirror_route("shadow", 20), remove_mirror("shadow")],
                true,
                None,
            ),
            (
                vec![set_weight(10), remove_mirror("shadow")],
                true,
                Some("spec.steps[1].setMirrorRoute.name"),
            ),
            (
                vec![regex_cohort("(beta|staff)"), pause_until_promoted()],
                true,
                None,
            ),
            (
                vec![set_weight(5), regex_cohort("(beta")],
                true,
                Some("spec.steps[1].setHeaderRoute.match.cookies[0].value"),
            ),
            (
                vec![header_route("beta", "x", "1")],
                false,
                Some("spec.steps[0]"),
            ),
            (
                vec![mirror_route("shadow", 20), set_weight(100)],
                true,
                Some("spec.steps[1].setWeight"),
            ),
            (
                vec![
                    mirror_route("shadow", 20),
                    remove_mirror("shadow"),
                    set_weight(100),
                ],
                true,
                None,
            ),
            (
                vec![header_route("beta", "x", "1"), matched_mirror.clone()],
                true,
                Some("spec.steps[1].setMirrorRoute.name"),
            ),
        ];
        for (steps, gateway, field) in cases {
            let builder = if gateway {
                ReleaseBuilder::gateway()
            } else {
                ReleaseBuilder::replica_split()
            };
            let release = builder.steps(steps.clone()).build();
            let result = spec(&release);
            assert_eq!(
                result.as_ref().err().map(|error| error.field.as_str()),
                field,
                "{steps:?}: {result:?}"
            );
        }
        // A GRPCRoute: header and cookie cohorts, but no query parameters and no mirror.
        let mut query_cohort = header_route("beta", "x-canary", "true");
        query_cohort
            .set_header_route
            .as_mut()
            .unwrap()
            .route_match
            .as_mut()
            .unwrap()
            .query_params = vec![ValueMatch {
            name: "canary".into(),
            value: "1".into(),
            match_type: MatchType::Exact,
        }];
        let grpc_cases = [
            (
                vec![regex_cohort("(beta|staff)"), remove_cohort("beta")],
                None,
            ),
            (
                vec![set_weight(5), query_cohort],
                Some("spec.steps[1].setHeaderRoute.match.queryParams"),
            ),
            (
                vec![mirror_route("shadow", 20)],
                Some("spec.steps[0].setMirrorRoute"),
            ),
        ];
        for (steps, field) in grpc_cases {
            let mut release = ReleaseBuilder::gateway().steps(steps.clone()).build();
            let gateway = release.spec.traffic.gateway_api.as_mut().unwrap();
            gateway.grpc_route = gateway.http_route.take();
            let result = spec(&release);
            assert_eq!(
                result.as_ref().err().map(|error| error.field.as_str()),
                field,
                "GRPCRoute {steps:?}: {result:?}"
            );
        }
        let error = spec(
            &ReleaseBuilder::gateway()
                .steps(vec![regex_cohort("[a-")])
                .build(),
        )
        .unwrap_err();
        assert!(error.message.contains("RE2"), "{error}");
        assert!(error.message.contains("type: Exact"), "{error}");
    }

    fn check(name: &str, query: &str) -> crate::api::Check {
        crate::api::Check {
            name: name.into(),
            query: query.into(),
            max: Some(1.0),
            min: None,
        }
    }

    #[test]
    fn a_check_named_twice_names_the_second_one() {
        let mut release = ReleaseBuilder::gateway().analysis().build();
        release.spec.analysis.as_mut().unwrap().checks =
            vec![check("p99", "a"), check("errors", "b"), check("p99", "c")];
        let error = spec(&release).unwrap_err();
        assert_eq!(error.field, "spec.analysis.checks[2].name");
        assert!(
            error.message.starts_with(
                "\"p99\" is also the name of spec.analysis.checks[0]: each check needs its own name"
            ),
            "{error}"
        );
        release.spec.analysis.as_mut().unwrap().checks[2].name = "p95".into();
        assert_eq!(spec(&release), Ok(()));
    }

    #[test]
    fn a_query_that_is_not_promql_names_its_field_and_the_parsers_words() {
        let mut release = ReleaseBuilder::gateway().analysis().build();
        release.spec.analysis.as_mut().unwrap().checks = vec![
            check("ok", "sum(rate(x[{{window}}]))"),
            check("typo", r#"sum(rate(x{service="{{service}}"}[{{window}}])"#),
        ];
        let error = spec(&release).unwrap_err();
        assert_eq!(error.field, "spec.analysis.checks[1].query");
        assert!(
            error.to_string().starts_with(
                "spec.analysis.checks[1].query: not valid PromQL: unclosed left parenthesis"
            ),
            "{error}"
        );

        let mut release = ReleaseBuilder::gateway().analysis().build();
        release.spec.analysis.as_mut().unwrap().slo.error_query = "sum(rate(errors))".into();
        let error = spec(&release).unwrap_err();
        assert_eq!(error.field, "spec.analysis.slo.errorQuery");
        assert!(
            error
                .message
                .contains("expected type matrix in call to function 'rate', got vector"),
            "{error}"
        );
    }

    #[test]
    fn selector_expressions_are_evaluated() {
        let labels = BTreeMap::from([("tier".to_string(), "web".to_string())]);
        let selector = |operator: &str, values: &[&str]| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: operator.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
        };
        assert!(selector_matches(&selector("In", &["web", "api"]), &labels));
        assert!(!selector_matches(&selector("NotIn", &["web"]), &labels));
        assert!(selector_matches(&selector("Exists", &[]), &labels));
        assert!(!selector_matches(&selector("DoesNotExist", &[]), &labels));
        assert!(!selector_matches(&selector("Bogus", &[]), &labels));
    }
}
