//! Standard `metav1.Condition`s on the Release status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition type: the stable serves traffic with every pod available.
pub const AVAILABLE: &str = "Available";
/// Condition type: a canary is moving through its steps.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: the latest analysis of the canary passes.
pub const ANALYSIS_HEALTHY: &str = "AnalysisHealthy";
/// Condition type: the spec passed the checks the schema cannot make.
pub const SPEC_VALID: &str = "SpecValid";
/// Condition type: the API server accepted the controller's last writes (from
/// [`super::LastApply`]; it names the object and quotes the API server when a write was
/// refused).
pub const APPLIED: &str = "Applied";
/// Condition type: the router can carry the split (Gateway API mode only).
pub const TRAFFIC_ROUTED: &str = "TrafficRouted";
/// Condition type: the Secrets named in `spec.analysis.prometheus` exist with their keys (only
/// when the spec names one).
pub const PROMETHEUS_CREDENTIALS: &str = "PrometheusCredentials";
/// Condition type: what became of `spec.traffic.gatewayAPI.sessionPersistence` (only when the
/// spec asks for it): written, refused by the GatewayClass, or support unknown.
pub const SESSION_PERSISTENCE: &str = "SessionPersistence";

/// Condition status values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
pub enum Truth {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

/// Set (or add) the condition `type_`. `lastTransitionTime` moves only when the status
/// changes, so readers can tell how long a condition has held.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Truth,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status: &'static str = status.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = Time(now);
                existing.status = status.to_string();
            }
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            last_transition_time: Time(now),
            message,
            observed_generation: generation,
            reason: reason.to_string(),
            status: status.to_string(),
            type_: type_.to_string(),
        }),
    }
}

/// Remove the condition `type_` (e.g. `TrafficRouted` in replica mode, where there is no router).
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_last_transition_time_while_the_status_holds() {
        let first: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let later: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            AVAILABLE,
            Truth::True,
            "A",
            "one".into(),
            Some(1),
            first,
        );
        set_condition(
            &mut conditions,
            AVAILABLE,
            Truth::True,
            "B",
            "two".into(),
            Some(2),
            later,
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, Time(first));
        assert_eq!(conditions[0].message, "two");
        assert_eq!(conditions[0].observed_generation, Some(2));
        set_condition(
            &mut conditions,
            AVAILABLE,
            Truth::False,
            "C",
            "three".into(),
            Some(2),
            later,
        );
        assert_eq!(conditions[0].last_transition_time, Time(later));
        assert_eq!(conditions[0].status, "False");
    }

    #[test]
    fn condition_statuses_are_spelled_as_kubernetes_spells_them() {
        let spelled: Vec<&str> = [Truth::True, Truth::False, Truth::Unknown]
            .into_iter()
            .map(Into::into)
            .collect();
        assert_eq!(spelled, ["True", "False", "Unknown"]);
    }
}
