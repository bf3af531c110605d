//! Status bookkeeping of the shell: spec checks the schema cannot make, conditions the shell
//! owns (`SpecValid`, `TrafficRouted` when the route is unusable), and the comparison that
//! skips a status write when nothing changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::{Phase, Release, ReleaseStatus};
pub use crate::rollout::conditions::{Truth, set_condition};

use super::children;
use super::error::Error;

/// Condition type: the spec passed the checks the schema cannot make.
pub const CONDITION_SPEC_VALID: &str = "SpecValid";
/// Condition type: the router can carry the split (the rollout core's name for it).
pub use crate::rollout::conditions::TRAFFIC_ROUTED as CONDITION_TRAFFIC_ROUTED;
/// Reason of `SpecValid=False` and of the Degraded phase it causes.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Reason of `TrafficRouted=False`.
pub const REASON_ROUTE_UNUSABLE: &str = "TrafficRouteUnusable";

/// Check what the schema cannot: the selector matches the template's labels, the Service
/// ports can be resolved and the analysis query templates resolve. The error names the field.
pub fn validate_spec(release: &Release) -> Result<(), Error> {
    let template_labels = release
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default();
    if !selector_matches(&release.spec.selector, &template_labels) {
        return Err(Error::InvalidSpec {
            field: "spec.selector".into(),
            message: "spec.selector does not match the labels of spec.template.metadata.labels"
                .into(),
        });
    }
    children::service_ports(release)?;
    if let Some(analysis) = &release.spec.analysis {
        crate::analysis::validate_queries(analysis).map_err(|error| Error::InvalidSpec {
            field: error.field.clone(),
            message: error.error.to_string(),
        })?;
    }
    Ok(())
}

/// Whether `selector` selects an object with `labels` (matchLabels and matchExpressions).
pub fn selector_matches(selector: &LabelSelector, labels: &children::Labels) -> bool {
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

/// The status for a spec the shell rejected: the old status, phase Degraded, and
/// `SpecValid=False` naming the field.
pub fn invalid_spec_status(release: &Release, error: &Error, now: Timestamp) -> ReleaseStatus {
    let mut status = release.status.clone().unwrap_or_default();
    let generation = release.metadata.generation;
    let message = error.to_string();
    status.observed_generation = generation;
    status.phase = Some(Phase::Degraded);
    status.reason = Some(REASON_INVALID_SPEC.into());
    status.message = Some(message.clone());
    status.roadmap_item = Some(release.spec.roadmap.item.clone());
    set_condition(
        &mut status.conditions,
        CONDITION_SPEC_VALID,
        Truth::False,
        REASON_INVALID_SPEC,
        message,
        generation,
        now,
    );
    status
}

/// Keep `lastTransitionTime` of every condition whose status did not change since `old`, so
/// the time says when the condition last flipped even if the core stamps every condition.
pub fn carry_transition_times(old: Option<&ReleaseStatus>, new: &mut ReleaseStatus) {
    let Some(old) = old else {
        return;
    };
    for condition in &mut new.conditions {
        if let Some(previous) = old
            .conditions
            .iter()
            .find(|c| c.type_ == condition.type_ && c.status == condition.status)
        {
            condition.last_transition_time = previous.last_transition_time.clone();
        }
    }
}

/// The status with what does not count as a change blanked out: bookkeeping timestamps
/// (`analysis.lastRunAt`, conditions' `lastTransitionTime`) and `request`, which the CLI owns.
fn comparable(status: &ReleaseStatus) -> ReleaseStatus {
    let mut status = status.clone();
    status.request = None;
    if let Some(analysis) = status.analysis.as_mut() {
        analysis.last_run_at = None;
    }
    for condition in &mut status.conditions {
        condition.last_transition_time = Time(Timestamp::UNIX_EPOCH);
    }
    status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    status
}

/// Whether writing `new` over `old` would change anything a reader cares about.
pub fn status_changed(old: Option<&ReleaseStatus>, new: &ReleaseStatus) -> bool {
    let old = old.cloned().unwrap_or_default();
    comparable(&old) != comparable(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AnalysisStatus, ManualAction, ManualRequest, Verdict};
    use crate::controller::fixtures::ReleaseBuilder;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn healthy() -> ReleaseStatus {
        let mut status = ReleaseStatus {
            phase: Some(Phase::Healthy),
            observed_generation: Some(1),
            analysis: Some(AnalysisStatus {
                verdict: Verdict::Passing,
                last_run_at: Some(Time(at(100))),
                revision: None,
                summary: None,
                burn: None,
                canary: None,
                stable: None,
                comparison: vec![],
                checks: vec![],
                consecutive_failures: 0,
                consecutive_inconclusive: 0,
                consecutive_errors: 0,
                failing_since: None,
                error_budget_remaining: None,
            }),
            ..ReleaseStatus::default()
        };
        set_condition(
            &mut status.conditions,
            "Available",
            Truth::True,
            "StableAvailable",
            String::new(),
            Some(1),
            at(100),
        );
        status
    }

    #[test]
    fn a_status_differing_only_in_timestamps_is_unchanged() {
        let old = healthy();
        let mut new = old.clone();
        new.analysis.as_mut().unwrap().last_run_at = Some(Time(at(200)));
        new.conditions[0].last_transition_time = Time(at(200));
        assert!(!status_changed(Some(&old), &new));
    }

    #[test]
    fn a_status_differing_in_the_cli_request_only_is_unchanged() {
        let mut old = healthy();
        old.request = Some(ManualRequest {
            id: "r1".into(),
            action: ManualAction::Promote,
            revision: None,
            requested_at: Time(at(1)),
            requested_by: None,
        });
        assert!(!status_changed(Some(&old), &healthy()));
    }

    #[test]
    fn a_phase_weight_or_condition_change_is_a_change() {
        let old = healthy();
        let mut new = old.clone();
        new.canary_weight = Some(10);
        assert!(status_changed(Some(&old), &new));

        let mut new = old.clone();
        new.conditions[0].status = "False".into();
        assert!(status_changed(Some(&old), &new));

        assert!(status_changed(None, &old));
        assert!(!status_changed(None, &ReleaseStatus::default()));
    }

    #[test]
    fn carry_transition_times_keeps_old_times_for_unchanged_conditions() {
        let old = healthy();
        let mut new = old.clone();
        new.conditions[0].last_transition_time = Time(at(500));
        carry_transition_times(Some(&old), &mut new);
        assert_eq!(new.conditions[0].last_transition_time, Time(at(100)));
    }

    #[test]
    fn a_selector_not_matching_the_template_is_invalid_and_names_the_field() {
        let release = ReleaseBuilder::new("checkout")
            .selector_label("app", "payments")
            .build();
        let error = validate_spec(&release).unwrap_err();
        assert!(error.to_string().starts_with("spec.selector:"), "{error}");

        let status = invalid_spec_status(&release, &error, at(5));
        assert_eq!(status.phase, Some(Phase::Degraded));
        let condition = &status.conditions[0];
        assert_eq!(condition.type_, CONDITION_SPEC_VALID);
        assert_eq!(condition.status, "False");
        assert!(condition.message.contains("spec.selector"));
    }

    #[test]
    fn an_unknown_query_placeholder_is_invalid_and_names_the_query_field() {
        use crate::api::{Analysis, BurnRate, Duration, PrometheusSource, Slo};
        let mut release = ReleaseBuilder::new("checkout").build();
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
        let error = validate_spec(&release).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("spec.analysis.slo.totalQuery:"),
            "{message}"
        );
        assert!(message.contains("servce"), "{message}");
    }

    #[test]
    fn a_valid_spec_passes() {
        assert!(validate_spec(&ReleaseBuilder::new("checkout").build()).is_ok());
    }

    #[test]
    fn selector_expressions_are_evaluated() {
        let labels = children::Labels::from([("tier".to_string(), "web".to_string())]);
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
    }
}
