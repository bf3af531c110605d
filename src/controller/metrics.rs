//! Prometheus metrics of the controller, served on `/metrics`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{HistoryEntry, Outcome, Phase, ReleaseStatus};

/// Labels identifying one Release and the roadmap item it delivers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReleaseLabels {
    /// The Release's namespace.
    pub namespace: String,
    /// The Release's name.
    pub release: String,
    /// The roadmap item in progress (or live).
    pub roadmap_item: String,
}

/// [`ReleaseLabels`] plus the phase, for the one-hot phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// The Release's namespace.
    pub namespace: String,
    /// The Release's name.
    pub release: String,
    /// The roadmap item in progress (or live).
    pub roadmap_item: String,
    /// One of the phases.
    pub phase: String,
}

/// [`ReleaseLabels`] plus the item's roadmap horizon and kind and how a revision's release
/// ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The Release's namespace.
    pub namespace: String,
    /// The Release's name.
    pub release: String,
    /// The roadmap item the finished revision delivered.
    pub roadmap_item: String,
    /// `now`, `next`, `later`, or empty when the spec set none.
    pub horizon: String,
    /// `feature`, `debt`, `platform`, `security`, `experiment`, or empty when the spec set
    /// none.
    pub kind: String,
    /// `promoted`, `rolled_back`, `aborted` or `superseded`.
    pub outcome: String,
}

/// [`ReleaseLabels`] plus the role and window of one burn-rate figure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BurnLabels {
    /// The Release's namespace.
    pub namespace: String,
    /// The Release's name.
    pub release: String,
    /// The roadmap item in progress (or live).
    pub roadmap_item: String,
    /// `canary` or `stable`.
    pub role: String,
    /// The window, e.g. `5m`.
    pub window: String,
}

/// [`OutcomeLabels`] without the outcome, for the time-to-restore histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestoreLabels {
    /// The Release's namespace.
    pub namespace: String,
    /// The Release's name.
    pub release: String,
    /// The roadmap item the finished revision delivered.
    pub roadmap_item: String,
    /// `now`, `next`, `later`, or empty.
    pub horizon: String,
    /// `feature`, `debt`, `platform`, `security`, `experiment`, or empty.
    pub kind: String,
}

/// Label of the reconcile error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// [`super::Error::metric_label`].
    pub kind: String,
}

const PHASES: [Phase; 5] = [
    Phase::Healthy,
    Phase::Progressing,
    Phase::Paused,
    Phase::RolledBack,
    Phase::Degraded,
];

/// The controller's metrics and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconcile_duration: Histogram,
    reconcile_errors: Family<ErrorLabels, Counter>,
    phase: Family<PhaseLabels, Gauge>,
    canary_weight: Family<ReleaseLabels, Gauge>,
    releases_finished: Family<OutcomeLabels, Counter>,
    burn_rate: Family<BurnLabels, Gauge<f64, AtomicU64>>,
    release_duration: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    time_to_restore: Family<RestoreLabels, Histogram, fn() -> Histogram>,
    /// The burn-rate series last set per (namespace, name), removed before the next update so
    /// a window that is gone (or a new roadmap item) leaves no stale series.
    burn_series: Mutex<HashMap<(String, String), Vec<BurnLabels>>>,
    /// The labels last used per (namespace, name), so a new roadmap item replaces the old
    /// series instead of leaving a stale one behind.
    current: Mutex<HashMap<(String, String), ReleaseLabels>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("waymark");
        let reconcile_duration = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let phase = Family::<PhaseLabels, Gauge>::default();
        let canary_weight = Family::<ReleaseLabels, Gauge>::default();
        let releases_finished = Family::<OutcomeLabels, Counter>::default();
        let burn_rate = Family::<BurnLabels, Gauge<f64, AtomicU64>>::default();
        // From one minute to about two days: how long a revision took from canary to outcome.
        let release_duration: Family<OutcomeLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(60.0, 2.0, 12)));
        // From five seconds to about three hours: first failing analysis to traffic on stable.
        let time_to_restore: Family<RestoreLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(5.0, 2.0, 12)));
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile of a Release takes",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "release_phase",
            "1 for the phase each Release is in, 0 for the others",
            phase.clone(),
        );
        registry.register(
            "release_canary_weight",
            "Percent of traffic on each Release's canary",
            canary_weight.clone(),
        );
        registry.register(
            "releases_finished",
            "Revisions whose release ended, by outcome and roadmap item",
            releases_finished.clone(),
        );
        registry.register(
            "release_burn_rate",
            "Error-budget burn rate of the latest analysis, per role and window",
            burn_rate.clone(),
        );
        registry.register(
            "release_duration_seconds",
            "Time from a revision's canary start to its outcome, by outcome and roadmap item",
            release_duration.clone(),
        );
        registry.register(
            "time_to_restore_seconds",
            "Time from a canary's first failing analysis to its traffic back on the stable",
            time_to_restore.clone(),
        );
        Metrics {
            registry,
            reconcile_duration,
            reconcile_errors,
            phase,
            canary_weight,
            releases_finished,
            burn_rate,
            release_duration,
            time_to_restore,
            burn_series: Mutex::new(HashMap::new()),
            current: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    /// Record how long one reconcile took.
    pub fn observe_reconcile(&self, elapsed: Duration) {
        self.reconcile_duration.observe(elapsed.as_secs_f64());
    }

    /// Count a failed reconcile by kind.
    pub fn count_error(&self, kind: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { kind: kind.into() })
            .inc();
    }

    /// Update a Release's phase and weight gauges from the status just written (or kept), and
    /// count a revision whose release ended since `old`.
    pub fn observe_release(
        &self,
        namespace: &str,
        release: &str,
        old: Option<&ReleaseStatus>,
        new: &ReleaseStatus,
    ) {
        let labels = ReleaseLabels {
            namespace: namespace.into(),
            release: release.into(),
            roadmap_item: new.roadmap_item.clone().unwrap_or_default(),
        };
        let key = (namespace.to_string(), release.to_string());
        if let Ok(mut current) = self.current.lock() {
            if let Some(previous) = current.insert(key, labels.clone())
                && previous != labels
            {
                self.canary_weight.remove(&previous);
                for phase in PHASES {
                    self.phase.remove(&phase_labels(&previous, phase));
                }
            }
        }
        self.canary_weight
            .get_or_create(&labels)
            .set(i64::from(new.canary_weight.unwrap_or(0)));
        for phase in PHASES {
            let value = i64::from(new.phase == Some(phase));
            self.phase
                .get_or_create(&phase_labels(&labels, phase))
                .set(value);
        }

        self.observe_burn_rates(&labels, new);

        let newest = |status: Option<&ReleaseStatus>| {
            status.and_then(|status| status.history.first().cloned())
        };
        if let Some(finished) = newest(Some(new))
            && newest(old).as_ref() != Some(&finished)
        {
            self.record_finished(namespace, release, &finished);
        }
    }

    fn observe_burn_rates(&self, labels: &ReleaseLabels, status: &ReleaseStatus) {
        let mut series = Vec::new();
        if let Some(analysis) = &status.analysis {
            for (role, result) in [("canary", &analysis.canary), ("stable", &analysis.stable)] {
                for window in result.iter().flat_map(|result| result.windows.iter()) {
                    let Some(burn_rate) = window.burn_rate else {
                        continue;
                    };
                    let burn_labels = BurnLabels {
                        namespace: labels.namespace.clone(),
                        release: labels.release.clone(),
                        roadmap_item: labels.roadmap_item.clone(),
                        role: role.into(),
                        window: window.window.clone(),
                    };
                    series.push((burn_labels, burn_rate));
                }
            }
        }
        let key = (labels.namespace.clone(), labels.release.clone());
        if let Ok(mut current) = self.burn_series.lock() {
            for stale in current.remove(&key).unwrap_or_default() {
                self.burn_rate.remove(&stale);
            }
            for (burn_labels, burn_rate) in &series {
                self.burn_rate.get_or_create(burn_labels).set(*burn_rate);
            }
            current.insert(key, series.into_iter().map(|(labels, _)| labels).collect());
        }
    }

    /// Count a finished revision and observe its delivery times (the DORA figures per item).
    fn record_finished(&self, namespace: &str, release: &str, finished: &HistoryEntry) {
        let horizon = finished.horizon.map_or("", |h| h.as_str()).to_string();
        let kind = finished.kind.map_or("", |k| k.as_str()).to_string();
        let labels = OutcomeLabels {
            namespace: namespace.into(),
            release: release.into(),
            roadmap_item: finished.roadmap_item.clone(),
            horizon: horizon.clone(),
            kind: kind.clone(),
            outcome: finished.outcome.metric_label().into(),
        };
        self.releases_finished.get_or_create(&labels).inc();
        let seconds_until_finished = |from: &Time| {
            finished
                .finished_at
                .0
                .duration_since(from.0)
                .as_secs_f64()
                .max(0.0)
        };
        if let Some(started_at) = &finished.started_at {
            self.release_duration
                .get_or_create(&labels)
                .observe(seconds_until_finished(started_at));
        }
        if let Some(detected_at) = &finished.failure_detected_at
            && matches!(finished.outcome, Outcome::RolledBack | Outcome::Aborted)
        {
            self.time_to_restore
                .get_or_create(&RestoreLabels {
                    namespace: namespace.into(),
                    release: release.into(),
                    roadmap_item: finished.roadmap_item.clone(),
                    horizon,
                    kind,
                })
                .observe(seconds_until_finished(detected_at));
        }
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

fn phase_labels(labels: &ReleaseLabels, phase: Phase) -> PhaseLabels {
    PhaseLabels {
        namespace: labels.namespace.clone(),
        release: labels.release.clone(),
        roadmap_item: labels.roadmap_item.clone(),
        phase: phase.as_str().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_gauges_carry_namespace_release_and_roadmap_item() {
        let metrics = Metrics::default();
        let status = ReleaseStatus {
            phase: Some(Phase::Progressing),
            canary_weight: Some(50),
            roadmap_item: Some("PAY-142".into()),
            ..ReleaseStatus::default()
        };
        metrics.observe_release("shop", "checkout", None, &status);
        metrics.count_error("kube");
        metrics.observe_reconcile(Duration::from_millis(20));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"waymark_release_canary_weight{namespace="shop",release="checkout",roadmap_item="PAY-142"} 50"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"waymark_release_phase{namespace="shop",release="checkout",roadmap_item="PAY-142",phase="Progressing"} 1"#
        ));
        assert!(text.contains(r#"waymark_reconcile_errors_total{kind="kube"} 1"#));
        assert!(text.contains("waymark_reconcile_duration_seconds_count 1"));
    }

    #[test]
    fn burn_rates_are_exported_per_role_and_window_and_replaced_on_update() {
        use crate::api::{AnalysisStatus, RoleAnalysis, Verdict, WindowResult};
        let window = |name: &str, burn_rate: Option<f64>| WindowResult {
            window: name.into(),
            error_ratio: None,
            requests: None,
            burn_rate,
            max: 14.4,
            note: None,
            error_query: String::new(),
            total_query: String::new(),
        };
        let analysis = |windows: Vec<WindowResult>| AnalysisStatus {
            verdict: Verdict::Passing,
            last_run_at: None,
            revision: None,
            summary: None,
            burn: None,
            canary: Some(RoleAnalysis {
                verdict: Verdict::Passing,
                service: "checkout-canary".into(),
                windows,
            }),
            stable: None,
            comparison: vec![],
            checks: vec![],
            consecutive_failures: 0,
            consecutive_inconclusive: 0,
            consecutive_errors: 0,
            failing_since: None,
            error_budget_remaining: None,
        };
        let metrics = Metrics::default();
        let mut status = ReleaseStatus {
            roadmap_item: Some("PAY-142".into()),
            analysis: Some(analysis(vec![window("5m", Some(0.8)), window("1m", None)])),
            ..ReleaseStatus::default()
        };
        metrics.observe_release("shop", "checkout", None, &status);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"waymark_release_burn_rate{namespace="shop",release="checkout",roadmap_item="PAY-142",role="canary",window="5m"} 0.8"#
            ),
            "{text}"
        );
        assert!(
            !text.contains(r#"window="1m""#),
            "no figure, no series: {text}"
        );

        status.analysis = Some(analysis(vec![window("1m", Some(21.3))]));
        metrics.observe_release("shop", "checkout", None, &status);
        let text = metrics.encode().unwrap();
        assert!(
            !text.contains(r#"window="5m""#),
            "stale window removed: {text}"
        );
        assert!(
            text.contains(r#"role="canary",window="1m"} 21.3"#),
            "{text}"
        );
    }

    #[test]
    fn a_finished_rollback_records_duration_and_time_to_restore_once() {
        use crate::api::HistoryEntry;
        let time = |text: &str| Time(text.parse().unwrap());
        let rolled_back = HistoryEntry {
            revision: "6f9c7d".into(),
            roadmap_item: "PAY-142".into(),
            outcome: Outcome::RolledBack,
            started_at: Some(time("2026-11-21T12:00:00Z")),
            finished_at: time("2026-11-21T12:10:00Z"),
            failure_detected_at: Some(time("2026-11-21T12:09:00Z")),
            reason: "AnalysisFailing".into(),
            message: None,
            horizon: Some(crate::api::Horizon::Now),
            kind: None,
            timeline: Vec::new(),
        };
        let status = ReleaseStatus {
            roadmap_item: Some("PAY-142".into()),
            history: vec![rolled_back],
            ..ReleaseStatus::default()
        };
        let metrics = Metrics::default();
        metrics.observe_release("shop", "checkout", None, &status);
        // The same status again (a later reconcile) must not count the revision twice.
        metrics.observe_release("shop", "checkout", Some(&status), &status);
        let text = metrics.encode().unwrap();
        let labels =
            r#"namespace="shop",release="checkout",roadmap_item="PAY-142",horizon="now",kind="""#;
        for expected in [
            format!(r#"waymark_releases_finished_total{{{labels},outcome="rolled_back"}} 1"#),
            format!(
                r#"waymark_release_duration_seconds_sum{{{labels},outcome="rolled_back"}} 600.0"#
            ),
            format!(
                r#"waymark_release_duration_seconds_count{{{labels},outcome="rolled_back"}} 1"#
            ),
            format!(r#"waymark_time_to_restore_seconds_sum{{{labels}}} 60.0"#),
            format!(r#"waymark_time_to_restore_seconds_count{{{labels}}} 1"#),
        ] {
            assert!(text.contains(&expected), "{expected} missing from {text}");
        }
    }

    #[test]
    fn a_new_roadmap_item_replaces_the_old_series() {
        let metrics = Metrics::default();
        let mut status = ReleaseStatus {
            roadmap_item: Some("PAY-1".into()),
            ..ReleaseStatus::default()
        };
        metrics.observe_release("shop", "checkout", None, &status);
        status.roadmap_item = Some("PAY-2".into());
        metrics.observe_release("shop", "checkout", None, &status);
        let text = metrics.encode().unwrap();
        assert!(!text.contains("PAY-1"), "{text}");
        assert!(text.contains("PAY-2"));
    }
}
