//! The checks on a Release that its schema cannot make. Each failure names the field; the core
//! turns it into `SpecValid=False` and phase Degraded instead of acting on a spec it cannot
//! carry out.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::Release;

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

/// Check what the schema cannot: the name fits the children's names, the selector matches the
/// template's labels, the Service ports can be resolved and the analysis query templates
/// resolve.
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
    let template_labels = release
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default();
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
    if let Some(analysis) = &release.spec.analysis {
        crate::analysis::validate_queries(analysis)
            .map_err(|error| SpecError::new(&error.field, error.error.to_string()))?;
    }
    Ok(())
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
    use crate::api::{Analysis, BurnRate, Duration, PrometheusSource, Slo};
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
        let mut release = ReleaseBuilder::gateway().build();
        release.spec.analysis = Some(Analysis {
            interval: Duration::from_secs(30),
            prometheus: PrometheusSource {
                address: "http://prometheus:9090".into(),
                timeout: Duration::from_secs(10),
                bearer_token_secret: None,
                ca_secret: None,
            },
            slo: Slo {
                objective: 99.9,
                error_query: "sum(rate(errors{ns=\"{{namespace}}\"}[{{window}}]))".into(),
                total_query: "sum(rate(requests{svc=\"{{servce}}\"}[{{window}}]))".into(),
                burn_rates: vec![BurnRate {
                    long: Duration::from_secs(300),
                    short: Duration::from_secs(60),
                    max: 14.4,
                }],
                min_requests: 100,
                budget: None,
            },
            checks: vec![],
            failure_limit: 2,
            inconclusive_limit: 6,
            error_limit: 4,
        });
        let error = spec(&release).unwrap_err();
        assert_eq!(error.field, "spec.analysis.slo.totalQuery");
        assert!(error.message.contains("servce"), "{error}");
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
